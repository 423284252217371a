//! Validation of `VirtualMachineInstanceReplicaSet` objects.

use super::meta::{qualified_name_errors, validate_labels, NameRule};
use super::vmi::validate_template_labels;
use super::{validate_object_meta, validate_vmi_spec, FieldError, FieldPath};
use crate::kubevirt::VirtualMachineInstanceReplicaSet;
use crate::selector::label_selector_matches;

/// Validates a replica set on create or update: replicas >= 0, a non-empty valid selector
/// that matches the template's labels, and a valid template.
pub fn validate_vmirs(
    new: &VirtualMachineInstanceReplicaSet,
    _old: Option<&VirtualMachineInstanceReplicaSet>,
) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, NameRule::Dns1123Subdomain);
    let spec = &new.spec;
    let s = FieldPath::new("spec");
    if let Some(replicas) = spec.replicas {
        if replicas < 0 {
            errs.push(FieldError::invalid(
                s.child("replicas"),
                format!("{replicas}: must be greater than or equal to 0"),
            ));
        }
    }
    let sel = s.child("selector");
    let errors_before_selector = errs.len();
    match &spec.selector {
        None => errs.push(FieldError::required(&sel, "a selector is required")),
        Some(selector) => {
            let labels_empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty());
            let exprs = selector.match_expressions.as_deref().unwrap_or_default();
            if labels_empty && exprs.is_empty() {
                errs.push(FieldError::invalid(
                    &sel,
                    "an empty selector would select every VMI; set matchLabels",
                ));
            }
            if let Some(labels) = &selector.match_labels {
                errs.extend(validate_labels(labels, &sel.child("matchLabels")));
            }
            for (i, expr) in exprs.iter().enumerate() {
                let e = sel.child("matchExpressions").index(i);
                for problem in qualified_name_errors(&expr.key) {
                    errs.push(FieldError::invalid(
                        e.child("key"),
                        format!("{:?}: {problem}", expr.key),
                    ));
                }
                let values = expr.values.as_deref().unwrap_or_default();
                match expr.operator.as_str() {
                    "In" | "NotIn" if values.is_empty() => errs.push(FieldError::required(
                        e.child("values"),
                        "values are required when the operator is In or NotIn",
                    )),
                    "Exists" | "DoesNotExist" if !values.is_empty() => errs.push(FieldError::forbidden(
                        e.child("values"),
                        "values must be empty when the operator is Exists or DoesNotExist",
                    )),
                    "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                    other => errs.push(FieldError::not_supported(
                        e.child("operator"),
                        format!("{other:?}: supported values are \"In\", \"NotIn\", \"Exists\", \"DoesNotExist\""),
                    )),
                }
            }
        }
    }
    let t = s.child("template");
    match &spec.template {
        None => errs.push(FieldError::required(&t, "a template is required")),
        Some(template) => {
            let labels = template.metadata.as_ref().and_then(|m| m.labels.as_ref());
            let lpath = t.child("metadata").child("labels");
            errs.extend(validate_template_labels(labels, &lpath));
            // Only compare a selector that is itself valid, so one mistake gives one error.
            let selector_valid = errs.len() == errors_before_selector;
            if let Some(selector) = spec.selector.as_ref().filter(|_| selector_valid) {
                let empty = Default::default();
                if !label_selector_matches(selector, labels.unwrap_or(&empty)) {
                    errs.push(FieldError::invalid(
                        &lpath,
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            errs.extend(validate_vmi_spec(&template.spec, t.child("spec").as_str()));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{decode, default_vmirs, FieldErrorKind};
    use serde_json::{json, Value};

    fn rs_json() -> Value {
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceReplicaSet",
            "metadata": {"name": "testreplicaset", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"myvmi": "myvmi"}},
                "template": {
                    "metadata": {"name": "test", "labels": {"myvmi": "myvmi"}},
                    "spec": {
                        "domain": {
                            "resources": {"requests": {"memory": "64M"}},
                            "devices": {"disks": [{"name": "containerdisk", "disk": {}}]}
                        },
                        "volumes": [{"name": "containerdisk", "containerDisk": {"image": "kubevirt/cirros-container-disk-demo:latest"}}]
                    }
                }
            }
        })
    }

    fn errors(patch: impl FnOnce(&mut Value)) -> Vec<FieldError> {
        let mut v = rs_json();
        patch(&mut v);
        let mut rs: VirtualMachineInstanceReplicaSet = decode(v).expect("test replica set decodes");
        default_vmirs(&mut rs);
        validate_vmirs(&rs, None)
    }

    #[track_caller]
    fn only(errs: &[FieldError], path: &str, kind: FieldErrorKind) {
        assert_eq!(errs.len(), 1, "expected one error at {path}, got {errs:#?}");
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            (path, kind),
            "{errs:#?}"
        );
    }

    #[test]
    fn valid_replica_set() {
        assert_eq!(errors(|_| {}), vec![]);
        assert_eq!(errors(|v| v["spec"]["replicas"] = json!(0)), vec![]);
    }

    #[test]
    fn replicas_not_negative() {
        only(
            &errors(|v| v["spec"]["replicas"] = json!(-1)),
            "spec.replicas",
            FieldErrorKind::Invalid,
        );
    }

    #[test]
    fn selector_required_and_non_empty() {
        only(
            &errors(|v| {
                v["spec"].as_object_mut().unwrap().remove("selector");
            }),
            "spec.selector",
            FieldErrorKind::Required,
        );
        only(
            &errors(|v| v["spec"]["selector"] = json!({})),
            "spec.selector",
            FieldErrorKind::Invalid,
        );
    }

    #[test]
    fn selector_must_match_template_labels() {
        only(
            &errors(|v| v["spec"]["selector"]["matchLabels"]["myvmi"] = json!("other")),
            "spec.template.metadata.labels",
            FieldErrorKind::Invalid,
        );
        assert_eq!(
            errors(
                |v| v["spec"]["selector"] = json!({"matchExpressions": [{"key": "myvmi", "operator": "In", "values": ["myvmi"]}]})
            ),
            vec![]
        );
    }

    #[test]
    fn selector_expressions() {
        only(
            &errors(|v| {
                v["spec"]["selector"]["matchExpressions"] =
                    json!([{"key": "myvmi", "operator": "Near"}])
            }),
            "spec.selector.matchExpressions[0].operator",
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| {
            v["spec"]["selector"]["matchExpressions"] = json!([{"key": "myvmi", "operator": "In"}])
        });
        assert!(errs
            .iter()
            .any(|e| e.path == "spec.selector.matchExpressions[0].values"
                && e.kind == FieldErrorKind::Required));
    }

    #[test]
    fn template_required_and_validated() {
        only(
            &errors(|v| {
                v["spec"].as_object_mut().unwrap().remove("template");
            }),
            "spec.template",
            FieldErrorKind::Required,
        );
        only(
            &errors(|v| {
                v["spec"]["template"]["spec"]["volumes"][0]["containerDisk"]["image"] = json!("")
            }),
            "spec.template.spec.volumes[0].containerDisk.image",
            FieldErrorKind::Required,
        );
    }
}
