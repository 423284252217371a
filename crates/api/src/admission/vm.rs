//! Validation of `VirtualMachine` objects.

use super::meta::NameRule;
use super::vmi::validate_template_labels;
use super::{validate_object_meta, validate_vmi_spec, FieldError, FieldPath};
use crate::kubevirt::VirtualMachine;

/// Validates a VM on create (`old` is `None`) or update. KubeVirt lets a VM's spec change at
/// any time (a running VMI keeps its old spec until restarted), so both cases check the same.
pub fn validate_vm(new: &VirtualMachine, _old: Option<&VirtualMachine>) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, NameRule::Dns1123Label);
    let spec = &new.spec;
    let s = FieldPath::new("spec");
    if let (Some(running), Some(strategy)) = (spec.running, spec.run_strategy) {
        errs.push(FieldError::invalid(
            s.child("running"),
            format!(
                "{running}: running and runStrategy ({strategy:?}) are mutually exclusive; remove running \
                 (deprecated) and keep runStrategy"
            ),
        ));
    }
    if spec.instancetype.is_some() {
        errs.push(FieldError::not_supported_yet(s.child("instancetype"), "instancetype"));
    }
    if spec.preference.is_some() {
        errs.push(FieldError::not_supported_yet(s.child("preference"), "preference"));
    }
    if spec.data_volume_templates.is_some() {
        errs.push(FieldError::not_supported_yet(s.child("dataVolumeTemplates"), "dataVolumeTemplates"));
    }
    let t = s.child("template");
    errs.extend(validate_template_labels(
        spec.template.metadata.as_ref().and_then(|m| m.labels.as_ref()),
        &t.child("metadata").child("labels"),
    ));
    errs.extend(validate_vmi_spec(&spec.template.spec, t.child("spec").as_str()));
    errs
}
