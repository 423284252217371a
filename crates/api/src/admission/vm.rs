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
        errs.push(FieldError::not_supported_yet(
            s.child("instancetype"),
            "instancetype",
        ));
    }
    if spec.preference.is_some() {
        errs.push(FieldError::not_supported_yet(
            s.child("preference"),
            "preference",
        ));
    }
    if spec.data_volume_templates.is_some() {
        errs.push(FieldError::not_supported_yet(
            s.child("dataVolumeTemplates"),
            "dataVolumeTemplates",
        ));
    }
    let t = s.child("template");
    errs.extend(validate_template_labels(
        spec.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref()),
        &t.child("metadata").child("labels"),
    ));
    errs.extend(validate_vmi_spec(
        &spec.template.spec,
        t.child("spec").as_str(),
    ));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{decode, FieldErrorKind};
    use crate::kubevirt::RunStrategy;
    use serde_json::{json, Value};

    fn vm_json() -> Value {
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "default"},
            "spec": {
                "runStrategy": "Always",
                "template": {
                    "metadata": {"labels": {"kubevirt.io/vm": "vm1"}},
                    "spec": {
                        "domain": {
                            "resources": {"requests": {"memory": "64Mi"}},
                            "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}
                        },
                        "volumes": [{"name": "root", "containerDisk": {"image": "registry.local/cirros:latest"}}]
                    }
                }
            }
        })
    }

    fn errors(patch: impl FnOnce(&mut Value)) -> Vec<FieldError> {
        let mut v = vm_json();
        patch(&mut v);
        let mut vm: VirtualMachine = decode(v).expect("test VM decodes");
        crate::admission::default_vm(&mut vm);
        validate_vm(&vm, None)
    }

    #[track_caller]
    fn only(errs: &[FieldError], path: &str, kind: FieldErrorKind) -> String {
        assert_eq!(errs.len(), 1, "expected one error at {path}, got {errs:#?}");
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            (path, kind),
            "{errs:#?}"
        );
        errs[0].message.clone()
    }

    #[test]
    fn valid_vm() {
        assert_eq!(errors(|_| {}), vec![]);
        assert_eq!(
            errors(|v| v["spec"]
                .as_object_mut()
                .unwrap()
                .remove("runStrategy")
                .map(drop)
                .unwrap_or(())),
            vec![]
        );
    }

    #[test]
    fn running_and_run_strategy_are_exclusive() {
        let errs = errors(|v| v["spec"]["running"] = json!(true));
        let msg = only(&errs, "spec.running", FieldErrorKind::Invalid);
        assert!(msg.starts_with("true: running and runStrategy"), "{msg}");
        assert_eq!(
            errors(|v| {
                v["spec"].as_object_mut().unwrap().remove("runStrategy");
                v["spec"]["running"] = json!(false);
            }),
            vec![]
        );
    }

    #[test]
    fn run_strategy_helper() {
        let mut vm = VirtualMachine::default();
        assert_eq!(vm.run_strategy(), Some(RunStrategy::Halted));
        vm.spec.running = Some(true);
        assert_eq!(vm.run_strategy(), Some(RunStrategy::Always));
        vm.spec.running = Some(false);
        assert_eq!(vm.run_strategy(), Some(RunStrategy::Halted));
        vm.spec.run_strategy = Some(RunStrategy::Manual);
        assert_eq!(vm.run_strategy(), None);
        vm.spec.running = None;
        assert_eq!(vm.run_strategy(), Some(RunStrategy::Manual));
    }

    #[test]
    fn name_is_a_dns_label() {
        let errs = errors(|v| v["metadata"]["name"] = json!("vm.example"));
        only(&errs, "metadata.name", FieldErrorKind::Invalid);
    }

    #[test]
    fn unsupported_vm_features_are_named() {
        let cases = [
            ("instancetype", json!({"name": "u1.small"})),
            ("preference", json!({"name": "fedora"})),
            (
                "dataVolumeTemplates",
                json!([{"metadata": {"name": "dv"}, "spec": {"source": {"blank": {}}, "storage": {}}}]),
            ),
        ];
        for (field, value) in cases {
            let errs = errors(|v| v["spec"][field] = value);
            let msg = only(
                &errs,
                &format!("spec.{field}"),
                FieldErrorKind::NotSupported,
            );
            assert_eq!(msg, format!("{field} is not supported by ferrovirt yet"));
        }
    }

    #[test]
    fn template_is_validated_under_its_path() {
        let errs = errors(|v| v["spec"]["template"]["spec"]["domain"]["resources"] = json!({}));
        only(
            &errs,
            "spec.template.spec.domain.resources.requests[memory]",
            FieldErrorKind::Required,
        );
        let errs = errors(|v| {
            v["spec"]["template"]["metadata"]["labels"] = json!({"kubevirt.io/vm": "bad value!"})
        });
        only(
            &errs,
            "spec.template.metadata.labels[kubevirt.io/vm]",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] =
                json!({"claimName": "x"})
        });
        assert!(
            errs.iter()
                .any(|e| e.path == "spec.template.spec.volumes[0].persistentVolumeClaim"),
            "{errs:#?}"
        );
    }

    #[test]
    fn update_allows_spec_changes() {
        let vm: VirtualMachine = decode(vm_json()).unwrap();
        let mut new = vm.clone();
        new.spec.run_strategy = Some(RunStrategy::Halted);
        new.spec.template.spec.domain.resources.requests = Some(
            [(
                "memory".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("1Gi".into()),
            )]
            .into(),
        );
        assert_eq!(validate_vm(&new, Some(&vm)), vec![]);
    }
}
