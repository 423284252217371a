use serde_json::json;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(s: &str) -> LabelSelector {
    LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

#[test]
fn every_operator_parses_and_matches() {
    let l = labels(&[("app", "web"), ("tier", "front"), ("replicas", "3")]);
    for (selector, expected) in [
        ("", true),
        ("   ", true),
        ("app=web", true),
        ("app==web", true),
        ("app=db", false),
        ("app!=db", true),
        ("app!=web", false),
        ("missing!=x", true),
        ("app in (web,db)", true),
        ("app in (db)", false),
        ("missing in (x)", false),
        ("app notin (db,cache)", true),
        ("app notin (web)", false),
        ("missing notin (x)", true),
        ("app", true),
        ("missing", false),
        ("!missing", true),
        ("!app", false),
        ("replicas>2", true),
        ("replicas>3", false),
        ("replicas<4", true),
        ("app>1", false),
        ("missing<100", false),
        ("app=web,tier=front", true),
        ("app=web,tier=back", false),
        ("  app = web ,  tier in ( front , back ) , !gone ", true),
    ] {
        assert_eq!(sel(selector).matches(&l), expected, "{selector:?}");
    }
}

#[test]
fn empty_values() {
    let s = sel("a=");
    assert!(s.matches(&labels(&[("a", "")])));
    assert!(!s.matches(&labels(&[("a", "x")])));
    assert!(!s.matches(&labels(&[])));
    let s = sel("a in (x,)");
    assert!(s.matches(&labels(&[("a", "")])));
    assert_eq!(s.to_string(), "a in (,x)");
    // `()` is the set of the empty value, as in Kubernetes.
    assert_eq!(sel("a in ()"), sel("a in (,)"));
    assert!(sel("a notin ()").matches(&labels(&[("a", "x")])));
    assert!(!sel("a notin ()").matches(&labels(&[("a", "")])));
    let s = sel("a=,b");
    assert_eq!(s.to_string(), "a=,b");
}

#[test]
fn display_is_canonical() {
    assert_eq!(
        sel("z in (c,a,b,a), a==1, !m, k, n notin (y,x), g!=h, p>5").to_string(),
        "a=1,g!=h,k,!m,n notin (x,y),p>5,z in (a,b,c)"
    );
    assert_eq!(sel("").to_string(), "");
}

#[test]
fn qualified_keys() {
    let s = sel("kubevirt.io/domain=vm1,app.kubernetes.io/name in (x)");
    assert!(s.matches(&labels(&[
        ("kubevirt.io/domain", "vm1"),
        ("app.kubernetes.io/name", "x")
    ])));
    assert!(
        LabelSelector::parse("Kubevirt.io/x=y").is_err(),
        "prefix must be lowercase"
    );
    assert!(LabelSelector::parse("a/b/c=y").is_err());
    assert!(LabelSelector::parse("/b=y").is_err());
    assert!(LabelSelector::parse("a/=y").is_err());
    assert!(LabelSelector::parse(&format!("{}=y", "k".repeat(64))).is_err());
    assert!(LabelSelector::parse(&format!("{}=y", "k".repeat(63))).is_ok());
    assert!(LabelSelector::parse(&format!("{}/k=y", "p".repeat(254))).is_err());
}

#[test]
fn errors_name_the_bad_part() {
    let err = LabelSelector::parse("app=we$b").unwrap_err();
    assert_eq!(
        err,
        SelectorError::InvalidValue {
            key: "app".into(),
            value: "we$b".into(),
            reason: NAME_RULE.into()
        }
    );
    let err = LabelSelector::parse("-app=web").unwrap_err();
    assert!(
        err.to_string().starts_with("invalid label key \"-app\""),
        "{err}"
    );

    let err = LabelSelector::parse(&format!("a={}", "v".repeat(64))).unwrap_err();
    assert!(
        err.to_string().contains("no more than 63 characters"),
        "{err}"
    );

    let err = LabelSelector::parse("app in web").unwrap_err();
    assert!(err.to_string().contains("expected '('"), "{err}");

    let err = LabelSelector::parse("app in (a b)").unwrap_err();
    assert!(err.to_string().contains("expected ',' or ')'"), "{err}");

    let err = LabelSelector::parse("app web").unwrap_err();
    assert!(err.to_string().contains("after key \"app\""), "{err}");

    let err = LabelSelector::parse("a=b c").unwrap_err();
    assert!(err.to_string().contains("after requirement a=b"), "{err}");

    let err = LabelSelector::parse(",a").unwrap_err();
    assert!(
        err.to_string().contains("found ',', expected a label key"),
        "{err}"
    );

    let err = LabelSelector::parse("a,").unwrap_err();
    assert!(
        err.to_string().contains("found the end of the selector"),
        "{err}"
    );

    let err = LabelSelector::parse("a>b").unwrap_err();
    assert!(err.to_string().contains("must be an integer"), "{err}");

    let err = LabelSelector::parse("a=(b)").unwrap_err();
    assert!(err.to_string().contains("expected a value"), "{err}");

    assert!(LabelSelector::parse("!").is_err());
    assert!(LabelSelector::parse("!a=b").is_err());
    assert!(LabelSelector::parse("a in (b").is_err());
}

#[test]
fn keywords_as_keys_and_values() {
    let s = sel("in=notin,notin in (in)");
    assert!(s.matches(&labels(&[("in", "notin"), ("notin", "in")])));
    assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s);
}

#[test]
fn from_k8s_object_form() {
    let s = LabelSelector::from_k8s(&json!({
        "matchLabels": {"kubevirt.io/vmReplicaSet": "rs1"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "env", "operator": "NotIn", "values": ["prod"]},
            {"key": "gpu", "operator": "Exists"},
            {"key": "old", "operator": "DoesNotExist", "values": []}
        ]
    }))
    .unwrap();
    assert_eq!(
        s.to_string(),
        "env notin (prod),gpu,kubevirt.io/vmReplicaSet=rs1,!old,tier in (a,b)"
    );
    assert!(s.matches(&labels(&[
        ("kubevirt.io/vmReplicaSet", "rs1"),
        ("tier", "a"),
        ("gpu", "")
    ])));
    assert!(!s.matches(&labels(&[
        ("kubevirt.io/vmReplicaSet", "rs1"),
        ("tier", "a")
    ])));

    assert!(LabelSelector::from_k8s(&json!({})).unwrap().is_empty());
    assert!(LabelSelector::from_k8s(&json!({"matchLabels": null}))
        .unwrap()
        .is_empty());
}

#[test]
fn from_k8s_refuses_malformed_objects() {
    for (object, fragment) in [
        (json!(null), "expected an object"),
        (json!({"matchLabel": {}}), "unknown field \"matchLabel\""),
        (
            json!({"matchLabels": {"a": 1}}),
            "matchLabels.a must be a string",
        ),
        (json!({"matchLabels": []}), "matchLabels must be an object"),
        (
            json!({"matchExpressions": {}}),
            "matchExpressions must be a list",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            "matchExpressions[0]: operator \"Gt\"",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            "values set can't be empty",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            "must be empty",
        ),
        (
            json!({"matchExpressions": [{"operator": "Exists"}]}),
            "key must be a string",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": [1]}]}),
            "values must be strings",
        ),
        (
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["x"], "extra": 1}]}),
            "unknown field \"extra\"",
        ),
        (
            json!({"matchLabels": {"bad key": "x"}}),
            "invalid label key \"bad key\"",
        ),
    ] {
        let err = LabelSelector::from_k8s(&object).unwrap_err();
        assert!(err.to_string().contains(fragment), "{object}: {err}");
    }
}

#[test]
fn from_labels_selects_supersets() {
    let s = LabelSelector::from_labels(&labels(&[("a", "1"), ("b", "2")])).unwrap();
    assert!(s.matches(&labels(&[("a", "1"), ("b", "2"), ("c", "3")])));
    assert!(!s.matches(&labels(&[("a", "1")])));
    assert_eq!(s.to_string(), "a=1,b=2");
    assert!(LabelSelector::from_labels(&labels(&[("a", "x y")])).is_err());
}

#[test]
fn requirement_accessors() {
    let s = sel("tier in (b,a)");
    let r = &s.requirements()[0];
    assert_eq!(r.key(), "tier");
    assert_eq!(r.operator(), Operator::In);
    assert_eq!(r.values().collect::<Vec<_>>(), ["a", "b"]);
    assert!(LabelSelector::everything().matches(&labels(&[])));
    assert_eq!("a=b".parse::<LabelSelector>().unwrap(), sel("a==b"));
}
