//! Validation of `VirtualMachineInstanceMigration` objects.

use super::meta::{dns1123_subdomain_errors, validate_labels, NameRule};
use super::{validate_object_meta, FieldError, FieldPath};
use crate::kubevirt::VirtualMachineInstanceMigration;

/// Validates a migration on create (`old` is `None`) or update (the spec is then immutable).
pub fn validate_migration(
    new: &VirtualMachineInstanceMigration,
    old: Option<&VirtualMachineInstanceMigration>,
) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, NameRule::Dns1123Subdomain);
    if let Some(old) = old {
        errs.extend(validate_migration_update(new, old));
        return errs;
    }
    let s = FieldPath::new("spec");
    let spec = &new.spec;
    if spec.vmi_name.is_empty() {
        errs.push(FieldError::required(
            s.child("vmiName"),
            "the name of the VMI to migrate is required",
        ));
    } else {
        for problem in dns1123_subdomain_errors(&spec.vmi_name) {
            errs.push(FieldError::invalid(
                s.child("vmiName"),
                format!("{:?}: {problem}", spec.vmi_name),
            ));
        }
    }
    if let Some(selector) = &spec.added_node_selector {
        errs.extend(validate_labels(selector, &s.child("addedNodeSelector")));
    }
    if let Some(priority) = &spec.priority {
        if !["system-critical", "user-triggered", "system-maintenance"].contains(&priority.as_str())
        {
            errs.push(FieldError::not_supported(
                s.child("priority"),
                format!("{priority:?}: supported values are \"system-critical\", \"user-triggered\", \"system-maintenance\""),
            ));
        }
    }
    errs
}

/// A migration's spec cannot change after creation (KubeVirt's rule too).
pub fn validate_migration_update(
    new: &VirtualMachineInstanceMigration,
    old: &VirtualMachineInstanceMigration,
) -> Vec<FieldError> {
    if new.spec == old.spec {
        Vec::new()
    } else {
        vec![FieldError::forbidden(
            "spec",
            "the spec of a VirtualMachineInstanceMigration may not be changed; create a new migration",
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{decode, FieldErrorKind};
    use serde_json::json;

    fn migration(spec: serde_json::Value) -> VirtualMachineInstanceMigration {
        decode(json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": "migration-job", "namespace": "default"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn valid_migration() {
        assert_eq!(
            validate_migration(&migration(json!({"vmiName": "vmi-fedora"})), None),
            vec![]
        );
    }

    #[test]
    fn vmi_name_required() {
        let errs = validate_migration(&migration(json!({})), None);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            ("spec.vmiName", FieldErrorKind::Required)
        );
        let errs = validate_migration(&migration(json!({"vmiName": "Not Valid"})), None);
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            ("spec.vmiName", FieldErrorKind::Invalid)
        );
    }

    #[test]
    fn priority_and_selector() {
        let errs = validate_migration(
            &migration(json!({"vmiName": "a", "priority": "urgent"})),
            None,
        );
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            ("spec.priority", FieldErrorKind::NotSupported)
        );
        let errs = validate_migration(
            &migration(json!({"vmiName": "a", "addedNodeSelector": {"bad key": "x"}})),
            None,
        );
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            ("spec.addedNodeSelector", FieldErrorKind::Invalid)
        );
    }

    #[test]
    fn spec_is_immutable() {
        let old = migration(json!({"vmiName": "a"}));
        let mut new = old.clone();
        new.status = Some(Default::default());
        assert_eq!(validate_migration(&new, Some(&old)), vec![]);
        new.spec.vmi_name = "b".into();
        let errs = validate_migration(&new, Some(&old));
        assert_eq!(errs.len(), 1);
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            ("spec", FieldErrorKind::Forbidden)
        );
    }

    #[test]
    fn unmodelled_kubevirt_fields_are_named() {
        let err = decode::<VirtualMachineInstanceMigration>(
            json!({"spec": {"vmiName": "a", "sendTo": {}}}),
        )
        .unwrap_err();
        assert_eq!(
            (err.path.as_str(), err.kind),
            ("spec.sendTo", FieldErrorKind::NotSupported)
        );
    }
}
