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
    match &spec.selector {
        None => errs.push(FieldError::required(&sel, "a selector is required")),
        Some(selector) => {
            let labels_empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty());
            let exprs = selector.match_expressions.as_deref().unwrap_or_default();
            if labels_empty && exprs.is_empty() {
                errs.push(FieldError::invalid(&sel, "an empty selector would select every VMI; set matchLabels"));
            }
            if let Some(labels) = &selector.match_labels {
                errs.extend(validate_labels(labels, &sel.child("matchLabels")));
            }
            for (i, expr) in exprs.iter().enumerate() {
                let e = sel.child("matchExpressions").index(i);
                for problem in qualified_name_errors(&expr.key) {
                    errs.push(FieldError::invalid(e.child("key"), format!("{:?}: {problem}", expr.key)));
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
            if let Some(selector) = &spec.selector {
                let empty = Default::default();
                if !label_selector_matches(selector, labels.unwrap_or(&empty)) {
                    errs.push(FieldError::invalid(&lpath, "`selector` does not match template `labels`"));
                }
            }
            errs.extend(validate_vmi_spec(&template.spec, t.child("spec").as_str()));
        }
    }
    errs
}
