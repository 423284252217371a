//! Kubernetes label selector matching (`matchLabels` and `matchExpressions`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` satisfy `selector`. All `matchLabels` and all `matchExpressions` must hold;
/// an empty selector matches everything, and an unknown operator matches nothing.
pub fn label_selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|expr| {
        let values = expr.values.as_deref().unwrap_or_default();
        let value = labels.get(&expr.key);
        match expr.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["front", "edge"]),
                expr("env", "NotIn", &["prod"]),
                expr("team", "Exists", &[]),
                expr("legacy", "DoesNotExist", &[]),
            ]),
        };
        assert!(label_selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "edge"), ("team", "a")])
        ));
        assert!(!label_selector_matches(
            &sel,
            &labels(&[("app", "db"), ("tier", "edge"), ("team", "a")])
        ));
        assert!(!label_selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "back"), ("team", "a")])
        ));
        assert!(!label_selector_matches(
            &sel,
            &labels(&[
                ("app", "web"),
                ("tier", "edge"),
                ("team", "a"),
                ("env", "prod")
            ])
        ));
        assert!(!label_selector_matches(
            &sel,
            &labels(&[("app", "web"), ("tier", "edge")])
        ));
        assert!(!label_selector_matches(
            &sel,
            &labels(&[
                ("app", "web"),
                ("tier", "edge"),
                ("team", "a"),
                ("legacy", "")
            ])
        ));
        assert!(label_selector_matches(
            &LabelSelector::default(),
            &labels(&[])
        ));
        let bad = LabelSelector {
            match_expressions: Some(vec![expr("a", "Near", &[])]),
            ..Default::default()
        };
        assert!(!label_selector_matches(&bad, &labels(&[("a", "b")])));
    }
}
