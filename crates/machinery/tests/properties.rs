//! Property tests: patches and selectors on open-ended input.

use std::collections::BTreeMap;

use ferrovirt_machinery::patch::{
    apply_json_patch, apply_merge_patch, apply_patch, apply_strategic_merge_patch, core_schema,
    MergeSchema, PatchError, PatchType,
};
use ferrovirt_machinery::selector::{FieldSelector, LabelSelector, Operator, Requirement};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..4).prop_map(|n| json!(n)),
        "[a-c]{0,2}".prop_map(Value::String),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "c", "d", "e"]).prop_map(str::to_owned)
}

/// Any JSON value with small keys, lists included.
fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// JSON without lists anywhere.
fn json_without_lists() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 32, 4, |inner| {
        prop::collection::vec((key(), inner), 0..4)
            .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>()))
    })
}

fn object(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop::collection::vec((key(), value), 0..5)
        .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>()))
}

fn json_patch_ops() -> impl Strategy<Value = Vec<Value>> {
    let path = prop::sample::select(vec![
        "", "/a", "/b", "/a/b", "/a/0", "/a/1", "/a/-", "/b/c", "/c/0/a", "/d", "/a/b/c", "/x~1y",
    ]);
    let op = (
        prop::sample::select(vec!["add", "remove", "replace", "move", "copy", "test"]),
        path.clone(),
        path,
        json_value(),
    )
        .prop_map(|(op, path, from, value)| match op {
            "remove" => json!({"op": op, "path": path}),
            "move" | "copy" => json!({"op": op, "path": path, "from": from}),
            _ => json!({"op": op, "path": path, "value": value}),
        });
    prop::collection::vec(op, 0..6)
}

/// Keeps the first element of each name, as a well-formed keyed list has.
fn unique_names(list: Vec<Value>) -> Vec<Value> {
    let mut seen = Vec::new();
    list.into_iter()
        .filter(|v| {
            let fresh = !seen.contains(&v["name"]);
            seen.push(v["name"].clone());
            fresh
        })
        .collect()
}

/// Pod-shaped documents and patches, with few distinct names so that merge keys collide
/// between the document and the patch (each list's names are unique, in random order).
fn pod_like() -> impl Strategy<Value = Value> {
    let name = prop::sample::select(vec!["x", "y", "z"]);
    let env = prop::collection::vec(
        (name.clone(), "[a-c]{0,2}").prop_map(|(n, v)| json!({"name": n, "value": v})),
        0..4,
    )
    .prop_map(unique_names);
    let container = (
        name.clone(),
        "[a-c]{1,2}",
        env,
        prop::collection::vec("[a-c]", 0..3),
    )
        .prop_map(
            |(n, image, env, args)| json!({"name": n, "image": image, "env": env, "args": args}),
        );
    (
        prop::collection::vec(container, 0..4).prop_map(unique_names),
        prop::collection::vec(name, 0..4),
        prop::collection::btree_map("[a-c]", "[a-c]{0,2}", 0..3),
        prop::collection::vec(prop::sample::select(vec!["k1", "k2"]), 0..3),
    )
        .prop_map(|(containers, finalizers, labels, tolerations)| {
            let tolerations: Vec<Value> = tolerations.iter().map(|k| json!({"key": k})).collect();
            json!({
                "metadata": {"finalizers": finalizers, "labels": labels},
                "spec": {"containers": containers, "tolerations": tolerations}
            })
        })
}

/// Objects made of strategic-merge-patch vocabulary: directive keys, schema field names and
/// directive values, to shake out panics.
fn smp_noise() -> impl Strategy<Value = Value> {
    let word = prop::sample::select(vec![
        "$patch",
        "$retainKeys",
        "$setElementOrder/containers",
        "$setElementOrder/finalizers",
        "$deleteFromPrimitiveList/finalizers",
        "$deleteFromPrimitiveList/containers",
        "$bogus",
        "spec",
        "metadata",
        "containers",
        "finalizers",
        "tolerations",
        "name",
        "env",
    ])
    .prop_map(str::to_owned);
    let leaf = prop_oneof![
        scalar(),
        prop::sample::select(vec!["delete", "replace", "merge", "x", "name"])
            .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(5, 48, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((word.clone(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn to_body(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn label_key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]([a-z0-9._-]{0,6}[a-z0-9])?",
        "[a-z]{1,3}(\\.[a-z]{1,3}){0,2}/[A-Za-z0-9]([A-Za-z0-9._-]{0,4}[A-Za-z0-9])?",
        Just("in".to_owned()),
        Just("notin".to_owned()),
    ]
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "",
        "[A-Za-z0-9]([A-Za-z0-9._-]{0,6}[A-Za-z0-9])?",
        Just("in".to_owned())
    ]
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let operator = prop::sample::select(vec![
        Operator::Equals,
        Operator::NotEquals,
        Operator::In,
        Operator::NotIn,
        Operator::Exists,
        Operator::DoesNotExist,
        Operator::GreaterThan,
        Operator::LessThan,
    ]);
    (
        label_key(),
        operator,
        prop::collection::vec(label_value(), 1..4),
        -100i64..100,
    )
        .prop_map(|(key, operator, values, number)| {
            let values = match operator {
                Operator::Equals | Operator::NotEquals => values[..1].to_vec(),
                Operator::In | Operator::NotIn => values,
                Operator::Exists | Operator::DoesNotExist => Vec::new(),
                Operator::GreaterThan | Operator::LessThan => vec![number.to_string()],
            };
            Requirement::new(&key, operator, values).expect("generated requirement is valid")
        })
}

fn selector_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-c !=(),<>in ot/.\\\\0-9-]{0,24}",
        "[a-c]{1,2}(( ?(=|==|!=) ?[a-c0-9]{0,2})|( (in|notin) \\([a-c,]{0,5}\\)))?(,[a-c]{1,2}(=[a-c]{0,2})?){0,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn json_patch_is_atomic_and_sequential(doc in json_value(), ops in json_patch_ops()) {
        let before = doc.clone();
        let result = apply_json_patch(&doc, &to_body(&Value::Array(ops.clone())));
        prop_assert_eq!(&doc, &before);

        // Apply the operations one at a time: the whole patch must agree with that.
        let mut step = doc.clone();
        let mut failed_at = None;
        for (i, op) in ops.iter().enumerate() {
            match apply_json_patch(&step, &to_body(&json!([op]))) {
                Ok(next) => step = next,
                Err(_) => {
                    failed_at = Some(i);
                    break;
                }
            }
        }
        match (result, failed_at) {
            (Ok(patched), None) => prop_assert_eq!(patched, step),
            (Err(PatchError::TestFailed { index, .. }), Some(i))
            | (Err(PatchError::OperationFailed { index, .. }), Some(i)) => prop_assert_eq!(index, i),
            (result, failed_at) => {
                prop_assert!(false, "whole patch {:?} but one by one failed at {:?}", result, failed_at)
            }
        }
    }

    #[test]
    fn merge_patch_is_idempotent(doc in object(json_value()), patch in object(json_value())) {
        let body = to_body(&patch);
        let once = apply_merge_patch(&doc, &body).unwrap();
        let twice = apply_merge_patch(&once, &body).unwrap();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn merge_patch_agrees_with_json_patch_crate(doc in object(json_value()), patch in object(json_value())) {
        let ours = apply_merge_patch(&doc, &to_body(&patch)).unwrap();
        let mut theirs = doc.clone();
        json_patch::merge(&mut theirs, &patch);
        prop_assert_eq!(ours, theirs);
    }

    #[test]
    fn strategic_merge_with_empty_patch_is_identity(doc in object(json_value()), pod in pod_like()) {
        for schema in [core_schema("Pod").unwrap(), core_schema("Node").unwrap(), &MergeSchema::new()] {
            prop_assert_eq!(apply_strategic_merge_patch(&doc, &json!({}), schema).unwrap(), doc.clone());
            prop_assert_eq!(apply_strategic_merge_patch(&pod, &json!({}), schema).unwrap(), pod.clone());
        }
    }

    #[test]
    fn strategic_merge_without_lists_equals_merge_patch(
        doc in object(json_without_lists()),
        patch in object(json_without_lists()),
    ) {
        let merge = apply_merge_patch(&doc, &to_body(&patch)).unwrap();
        for schema in [core_schema("Pod").unwrap(), &MergeSchema::new()] {
            let strategic = apply_strategic_merge_patch(&doc, &patch, schema).unwrap();
            prop_assert_eq!(&strategic, &merge);
        }
    }

    #[test]
    fn strategic_merge_of_pods_is_idempotent(doc in pod_like(), patch in pod_like()) {
        let schema = core_schema("Pod").unwrap();
        let once = apply_strategic_merge_patch(&doc, &patch, schema).unwrap();
        let twice = apply_strategic_merge_patch(&once, &patch, schema).unwrap();
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn strategic_merge_keeps_every_container_once(doc in pod_like(), patch in pod_like()) {
        let schema = core_schema("Pod").unwrap();
        let out = apply_strategic_merge_patch(&doc, &patch, schema).unwrap();
        let names = |v: &Value| -> Vec<String> {
            v["spec"]["containers"].as_array().unwrap().iter()
                .map(|c| c["name"].as_str().unwrap().to_owned()).collect()
        };
        let mut expected: Vec<String> = names(&doc);
        for n in names(&patch) {
            if !expected.contains(&n) { expected.push(n); }
        }
        let mut got = names(&out);
        // Stored duplicates survive; otherwise every name appears once.
        got.sort();
        got.dedup();
        expected.sort();
        expected.dedup();
        prop_assert_eq!(got, expected);
        // Tolerations have no merge key: replaced.
        prop_assert_eq!(&out["spec"]["tolerations"], &patch["spec"]["tolerations"]);
    }

    #[test]
    fn strategic_merge_never_panics_on_directive_noise(doc in pod_like(), patch in smp_noise()) {
        let _ = apply_strategic_merge_patch(&doc, &patch, core_schema("Pod").unwrap());
        let _ = apply_strategic_merge_patch(&patch, &doc, core_schema("Pod").unwrap());
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..64), doc in json_value()) {
        let _ = apply_json_patch(&doc, &body);
        let _ = apply_merge_patch(&doc, &body);
        for t in PatchType::ALL {
            let _ = apply_patch(&doc, t, &body, core_schema("Pod"));
        }
    }

    #[test]
    fn arbitrary_json_bodies_never_panic(doc in json_value(), patch in json_value()) {
        let body = to_body(&patch);
        let _ = apply_json_patch(&doc, &body);
        let _ = apply_merge_patch(&doc, &body);
        let _ = apply_strategic_merge_patch(&doc, &patch, core_schema("Pod").unwrap());
    }

    #[test]
    fn selectors_never_panic(text in selector_text()) {
        let _ = LabelSelector::parse(&text);
        let _ = FieldSelector::parse(&text);
    }

    #[test]
    fn parsed_label_selectors_round_trip(text in selector_text()) {
        if let Ok(selector) = LabelSelector::parse(&text) {
            let shown = selector.to_string();
            let reparsed = LabelSelector::parse(&shown);
            prop_assert_eq!(reparsed.as_ref(), Ok(&selector), "{:?} showed as {:?}", text, shown);
        }
    }

    #[test]
    fn built_label_selectors_round_trip(requirements in prop::collection::vec(requirement(), 0..5)) {
        let selector = LabelSelector::from_requirements(requirements);
        let shown = selector.to_string();
        prop_assert_eq!(LabelSelector::parse(&shown), Ok(selector.clone()), "showed as {:?}", shown);
    }

    #[test]
    fn label_selector_matching_is_the_conjunction(
        requirements in prop::collection::vec(requirement(), 0..4),
        labels in prop::collection::btree_map(label_key(), label_value(), 0..4),
    ) {
        let selector = LabelSelector::from_requirements(requirements.clone());
        let each = requirements.iter().all(|r| r.matches(&labels));
        prop_assert_eq!(selector.matches(&labels), each);
    }

    #[test]
    fn parsed_field_selectors_round_trip(text in selector_text()) {
        if let Ok(selector) = FieldSelector::parse(&text) {
            let shown = selector.to_string();
            prop_assert_eq!(FieldSelector::parse(&shown), Ok(selector), "{:?} showed as {:?}", text, shown);
        }
    }

    #[test]
    fn field_selector_values_escape_round_trip(value in any::<String>(), negate in any::<bool>()) {
        let op = if negate { "!=" } else { "=" };
        let text = format!("metadata.name{op}{}", ferrovirt_machinery::selector::escape_field_value(&value));
        let selector = FieldSelector::parse(&text).unwrap();
        prop_assert_eq!(&selector.terms()[0].value, &value);
        let fields = BTreeMap::from([("metadata.name".to_owned(), value.clone())]);
        prop_assert_eq!(selector.matches_fields(&fields), !negate);
    }
}
