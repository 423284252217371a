//! Real-world KubeVirt manifests: they decode, keep every field, default and validate cleanly,
//! or are refused with the field that ferrovirt does not support.

use ferrovirt_api::admission::{
    decode, default_vm, default_vmi, default_vmirs, validate_migration, validate_vm, validate_vmi,
    validate_vmirs, FieldErrorKind,
};
use ferrovirt_api::kubevirt::{HostDiskType, RunStrategy};
use ferrovirt_api::{
    status, VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceMigration,
    VirtualMachineInstanceReplicaSet,
};
use proptest::prelude::*;
use serde_json::{json, Value};

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut value: Value = serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    // The API server sets the namespace from the request path before admission.
    value["metadata"]["namespace"] = json!("default");
    value
}

/// Decoding and re-encoding keeps the manifest as written: nothing is dropped.
fn assert_lossless<T: serde::Serialize + serde::de::DeserializeOwned>(value: &Value) -> T {
    let typed: T = decode(value.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&serde_json::to_value(&typed).unwrap(), value);
    typed
}

#[test]
fn vm_cirros_decodes_defaults_and_validates() {
    let value = fixture("vm-cirros.yaml");
    let mut vm: VirtualMachine = assert_lossless(&value);
    assert_eq!(vm.run_strategy(), Some(RunStrategy::Halted));
    default_vm(&mut vm);
    assert_eq!(validate_vm(&vm, None), vec![]);

    let spec = &vm.spec.template.spec;
    assert_eq!(
        spec.domain.machine.as_ref().unwrap().type_,
        "q35",
        "an empty machine type is defaulted"
    );
    assert!(
        spec.domain.devices.interfaces().is_empty(),
        "the VM's template keeps its lists as written (client-side apply compares them whole)"
    );
    // The VMI made from the template gets the full defaults.
    let mut vmi = VirtualMachineInstance {
        metadata: vm.metadata.clone(),
        spec: spec.clone(),
        status: None,
    };
    default_vmi(&mut vmi);
    assert_eq!(validate_vmi(&vmi, None), vec![]);
    assert_eq!(
        vmi.spec.domain.devices.interfaces().len(),
        1,
        "the default pod interface is added"
    );
    assert!(vmi.spec.domain.devices.interfaces()[0].masquerade.is_some());
    assert_eq!(vmi.spec.networks()[0].name, "default");
    assert_eq!(
        spec.termination_grace_period_seconds,
        Some(0),
        "an explicit 0 is kept"
    );
    assert_eq!(
        spec.domain.firmware.as_ref().unwrap().uuid.as_deref(),
        Some(ferrovirt_api::admission::firmware_uuid_for_name("vm-cirros").as_str())
    );

    // Defaulting is idempotent, and the defaulted object survives a JSON round trip.
    let once = vm.clone();
    default_vm(&mut vm);
    assert_eq!(vm, once);
    let back: VirtualMachine = decode(serde_json::to_value(&vm).unwrap()).unwrap();
    assert_eq!(back, vm);
}

#[test]
fn testvm_decodes_defaults_and_validates() {
    let value = fixture("testvm.yaml");
    let mut vm: VirtualMachine = assert_lossless(&value);
    assert_eq!(vm.run_strategy(), Some(RunStrategy::Halted));
    default_vm(&mut vm);
    assert_eq!(validate_vm(&vm, None), vec![]);
    let mut vmi = VirtualMachineInstance {
        metadata: vm.metadata.clone(),
        spec: vm.spec.template.spec.clone(),
        status: None,
    };
    default_vmi(&mut vmi);
    let memory = vmi
        .spec
        .domain
        .memory
        .as_ref()
        .unwrap()
        .guest
        .as_ref()
        .unwrap();
    assert_eq!(memory.0, "64M");
}

#[test]
fn vmi_fedora_decodes_defaults_and_validates() {
    let value = fixture("vmi-fedora.yaml");
    let mut vmi: VirtualMachineInstance = assert_lossless(&value);
    default_vmi(&mut vmi);
    assert_eq!(validate_vmi(&vmi, None), vec![]);
    let cpu = vmi.spec.domain.cpu.as_ref().unwrap();
    assert_eq!(
        (cpu.sockets, cpu.cores, cpu.threads),
        (Some(1), Some(2), Some(1))
    );
    assert_eq!(cpu.vcpus(), 2);
    let features = vmi.spec.domain.features.as_ref().unwrap();
    assert_eq!(features.acpi.as_ref().unwrap().enabled, Some(true));
    assert!(vmi.spec.volumes().iter().any(|v| v.empty_disk.is_some()));
    assert!(vmi.spec.volumes().iter().all(|v| v
        .host_disk
        .as_ref()
        .is_none_or(|h| h.type_ == HostDiskType::Disk)));
}

#[test]
fn vmirs_and_migration_validate() {
    let mut rs: VirtualMachineInstanceReplicaSet = assert_lossless(&fixture("vmirs-cirros.yaml"));
    default_vmirs(&mut rs);
    assert_eq!(validate_vmirs(&rs, None), vec![]);
    assert_eq!(rs.spec.replicas, Some(3));

    let migration: VirtualMachineInstanceMigration = assert_lossless(&fixture("migration.yaml"));
    assert_eq!(validate_migration(&migration, None), vec![]);
}

#[test]
fn datavolume_vm_is_refused_with_named_fields() {
    let mut vm: VirtualMachine = assert_lossless(&fixture("vm-datavolume.yaml"));
    default_vm(&mut vm);
    let errors = validate_vm(&vm, None);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "spec.dataVolumeTemplates",
            "spec.template.spec.volumes[0].dataVolume"
        ],
        "{errors:#?}"
    );
    assert!(errors
        .iter()
        .all(|e| e.kind == FieldErrorKind::NotSupported));

    let status = status::invalid::<VirtualMachine>("vm-alpine-datavolume", &errors);
    let v = serde_json::to_value(&status).unwrap();
    assert_eq!(v["code"], 422);
    assert_eq!(
        v["details"]["causes"][0]["field"],
        "spec.dataVolumeTemplates"
    );
    assert_eq!(
        v["details"]["causes"][1]["reason"],
        "FieldValueNotSupported"
    );
    assert_eq!(
        v["message"],
        "VirtualMachine.kubevirt.io \"vm-alpine-datavolume\" is invalid: spec.dataVolumeTemplates: Unsupported \
         value: dataVolumeTemplates is not supported by ferrovirt yet; spec.template.spec.volumes[0].dataVolume: \
         Unsupported value: volume source dataVolume is not supported by ferrovirt yet"
    );
}

#[test]
fn kube_rs_style_object_without_type_meta_decodes() {
    let mut value = fixture("vm-cirros.yaml");
    let object = value.as_object_mut().unwrap();
    object.remove("apiVersion");
    object.remove("kind");
    let vm: VirtualMachine = decode(value).unwrap();
    let out = serde_json::to_value(&vm).unwrap();
    assert_eq!(out["apiVersion"], "kubevirt.io/v1");
    assert_eq!(out["kind"], "VirtualMachine");
}

/// Every JSON pointer to a value inside `v`.
fn pointers(v: &Value, prefix: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{prefix}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{prefix}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn arb_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (-1i64..3).prop_map(|n| json!(n)),
        "[a-zA-Z0-9./:_ -]{0,10}".prop_map(Value::String),
        prop::sample::select(vec![
            "",
            "0",
            "-1Gi",
            "1e400",
            "0.5",
            "virtio",
            "ide",
            "q35",
            "Disk",
            "DiskOrCreate",
            "masquerade"
        ])
        .prop_map(|s| Value::String(s.to_string())),
        Just(json!({})),
        Just(json!([])),
        Just(json!({"name": "x"})),
    ]
}

fn fixtures() -> Vec<(&'static str, Value)> {
    [
        "vm-cirros.yaml",
        "testvm.yaml",
        "vmi-fedora.yaml",
        "vmirs-cirros.yaml",
        "migration.yaml",
        "vm-datavolume.yaml",
    ]
    .into_iter()
    .map(|name| (name, fixture(name)))
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Mutating any field of a real manifest never makes decoding, defaulting or validation
    /// panic, and defaulting stays idempotent.
    #[test]
    fn mutated_manifests_never_panic(which in 0usize..6, picks in prop::collection::vec((any::<prop::sample::Index>(), arb_leaf(), any::<bool>()), 1..4)) {
        let (_, mut value) = fixtures().swap_remove(which);
        for (index, leaf, delete) in picks {
            let mut all = Vec::new();
            pointers(&value, String::new(), &mut all);
            if all.is_empty() {
                break;
            }
            let pointer = all[index.index(all.len())].clone();
            let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", &pointer));
            let last = last.replace("~1", "/").replace("~0", "~");
            match value.pointer_mut(parent) {
                Some(Value::Object(map)) if delete => { map.remove(&last); }
                Some(Value::Array(items)) if delete => {
                    if let Ok(i) = last.parse::<usize>() {
                        if i < items.len() { items.remove(i); }
                    }
                }
                _ => {
                    if let Some(slot) = value.pointer_mut(&pointer) { *slot = leaf; }
                }
            }
        }
        if let Ok(mut vm) = decode::<VirtualMachine>(value.clone()) {
            default_vm(&mut vm);
            let once = vm.clone();
            default_vm(&mut vm);
            prop_assert_eq!(&vm, &once);
            let errors = validate_vm(&vm, None);
            let _ = status::invalid::<VirtualMachine>("x", &errors);
        }
        if let Ok(mut vmi) = decode::<VirtualMachineInstance>(value.clone()) {
            default_vmi(&mut vmi);
            let once = vmi.clone();
            default_vmi(&mut vmi);
            prop_assert_eq!(&vmi, &once);
            let _ = validate_vmi(&vmi, None);
        }
        if let Ok(mut rs) = decode::<VirtualMachineInstanceReplicaSet>(value.clone()) {
            default_vmirs(&mut rs);
            let _ = validate_vmirs(&rs, None);
        }
        if let Ok(m) = decode::<VirtualMachineInstanceMigration>(value) {
            let _ = validate_migration(&m, None);
        }
    }
}
