//! Admission: decoding, defaulting and validation of `kubevirt.io/v1` objects, as KubeVirt's
//! virt-api webhooks do it, as pure functions.
//!
//! The API server runs, for each create or update:
//!
//! ```text
//! JSON body ──decode──▶ typed object ──default_*──▶ defaulted ──validate_*──▶ Vec<FieldError>
//!     │                                                              │
//!     └── FieldError (unknown/mistyped field, with its path) ────────┴──▶ status::invalid(...) → 422
//! ```
//!
//! Every error carries the full field path (`spec.template.spec.domain.devices.disks[0].name`)
//! and a Kubernetes `StatusCause` reason. Features that KubeVirt has and ferrovirt does not run
//! yet are refused by name with `FieldValueNotSupported`; nothing is silently ignored.

mod defaults;
mod meta;
mod migration;
mod replicaset;
mod vm;
mod vmi;

pub use defaults::{
    default_vm, default_vmi, default_vmi_spec, default_vmirs, firmware_uuid_for_name,
};
pub use meta::{
    dns1123_label_errors, dns1123_subdomain_errors, label_value_errors, qualified_name_errors,
    validate_labels, validate_object_meta, NameRule,
};
pub use migration::{validate_migration, validate_migration_update};
pub use replicaset::validate_vmirs;
pub use vm::validate_vm;
pub use vmi::{validate_vmi, validate_vmi_spec, validate_vmi_update, CLOUD_INIT_DATA_MAX_BYTES};

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The kind of a field error; each maps to a Kubernetes `StatusCause` reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldErrorKind {
    /// A required field is missing or empty.
    Required,
    /// The value is malformed or inconsistent with other fields.
    Invalid,
    /// The value (or the field itself) is not supported.
    NotSupported,
    /// The value repeats one that must be unique.
    Duplicate,
    /// The field may not be set (or changed) here.
    Forbidden,
    /// The value is too long.
    TooLong,
}

impl FieldErrorKind {
    /// The Kubernetes `StatusCause.reason` for this kind.
    pub fn cause_type(self) -> &'static str {
        match self {
            Self::Required => "FieldValueRequired",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
        }
    }

    /// The phrase Kubernetes prints before the detail, e.g. `Invalid value`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Required => "Required value",
            Self::Invalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Duplicate => "Duplicate value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
        }
    }
}

/// One problem with one field of an object.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {label}: {message}", label = kind.label())]
pub struct FieldError {
    /// Path of the field, e.g. `spec.template.spec.domain.devices.disks[0].name`.
    pub path: String,
    /// What kind of problem it is.
    pub kind: FieldErrorKind,
    /// What is wrong, for people.
    pub message: String,
}

impl FieldError {
    /// A new error at `path`.
    pub fn new(path: impl fmt::Display, kind: FieldErrorKind, message: impl Into<String>) -> Self {
        FieldError {
            path: path.to_string(),
            kind,
            message: message.into(),
        }
    }

    /// A missing required field.
    pub fn required(path: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Required, message)
    }

    /// A malformed or inconsistent value.
    pub fn invalid(path: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Invalid, message)
    }

    /// An unsupported value or field.
    pub fn not_supported(path: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::NotSupported, message)
    }

    /// A KubeVirt feature ferrovirt does not run yet, refused by name.
    pub fn not_supported_yet(path: impl fmt::Display, feature: &str) -> Self {
        Self::new(
            path,
            FieldErrorKind::NotSupported,
            format!("{feature} is not supported by ferrovirt yet"),
        )
    }

    /// A value that must be unique but is not.
    pub fn duplicate(path: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Duplicate, message)
    }

    /// A field that may not be set or changed.
    pub fn forbidden(path: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::Forbidden, message)
    }

    /// A value that is too long.
    pub fn too_long(path: impl fmt::Display, message: impl Into<String>) -> Self {
        Self::new(path, FieldErrorKind::TooLong, message)
    }

    /// The Kubernetes `StatusCause.reason`, e.g. `FieldValueInvalid`.
    pub fn cause_type(&self) -> &'static str {
        self.kind.cause_type()
    }
}

/// A field path under construction: `spec` → `spec.volumes` → `spec.volumes[0]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldPath(String);

impl FieldPath {
    /// A path starting at `root` (may itself be dotted, e.g. `spec.template.spec`).
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_string())
    }

    /// The path of field `name` below this one.
    pub fn child(&self, name: &str) -> Self {
        if self.0.is_empty() {
            FieldPath(name.to_string())
        } else {
            FieldPath(format!("{}.{name}", self.0))
        }
    }

    /// The path of element `index` of this list.
    pub fn index(&self, index: usize) -> Self {
        FieldPath(format!("{}[{index}]", self.0))
    }

    /// The path of entry `key` of this map.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{key}]", self.0))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fields KubeVirt defines that ferrovirt does not model, by (parent field, field). An unknown
/// field on this list is reported as "not supported by ferrovirt yet" rather than "unknown".
const KUBEVIRT_FIELDS_NOT_MODELLED: &[(&str, &str)] = &[
    ("spec", "topologySpreadConstraints"),
    ("spec", "resourceClaims"),
    ("spec", "utilityVolumes"),
    ("spec", "serviceAccountName"),
    ("spec", "updateVolumesStrategy"),
    ("spec", "sendTo"),
    ("spec", "receive"),
    ("domain", "launchSecurity"),
    ("domain", "ioThreads"),
    ("domain", "chassis"),
    ("domain", "rebootPolicy"),
    ("cpu", "numa"),
    ("cpu", "realtime"),
    ("devices", "gpus"),
    ("devices", "hostDevices"),
    ("devices", "filesystems"),
    ("devices", "panicDevices"),
    ("devices", "sound"),
    ("devices", "tpm"),
    ("devices", "video"),
    ("devices", "clientPassthrough"),
    ("firmware", "acpi"),
];

/// Renders a serde path as a Kubernetes field path (`a.b[0].c`).
fn render_path(path: &serde_path_to_error::Path) -> FieldPath {
    let mut out = FieldPath::default();
    for segment in path.iter() {
        out = match segment {
            serde_path_to_error::Segment::Seq { index } => out.index(*index),
            serde_path_to_error::Segment::Map { key } => out.child(key),
            serde_path_to_error::Segment::Enum { variant } => out.child(variant),
            serde_path_to_error::Segment::Unknown => out,
        };
    }
    out
}

/// The name between the first pair of backticks in `message`.
fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

/// The last field name of `path`, without list indexes.
fn last_field(path: &FieldPath) -> &str {
    let s = path.as_str();
    let last = s.rsplit('.').next().unwrap_or(s);
    last.split('[').next().unwrap_or(last)
}

/// Turns a serde error at `path` into a field error with the right kind and path.
fn classify(path: FieldPath, message: String) -> FieldError {
    if message.starts_with("unknown field `") {
        let name = backticked(&message).unwrap_or_default().to_string();
        let parent_is_field = last_field(&path) == name && !name.is_empty();
        let (parent, full) = if parent_is_field {
            let s = path.as_str();
            let parent_str = s.strip_suffix(&name).unwrap_or(s).trim_end_matches('.');
            (FieldPath::new(parent_str), path.clone())
        } else {
            (path.clone(), path.child(&name))
        };
        let known = KUBEVIRT_FIELDS_NOT_MODELLED
            .iter()
            .any(|(p, f)| *f == name && last_field(&parent) == *p);
        return if known {
            FieldError::not_supported_yet(full, &name)
        } else {
            FieldError::not_supported(full, format!("unknown field `{name}`"))
        };
    }
    if message.starts_with("missing field `") {
        let name = backticked(&message).unwrap_or_default();
        return FieldError::required(path.child(name), format!("missing field `{name}`"));
    }
    if message.starts_with("unknown variant `") {
        return FieldError::not_supported(path, message);
    }
    FieldError::invalid(path, message)
}

/// Decodes a JSON object into `T`, reporting the first unknown, missing or mistyped field
/// with its full path, e.g. `spec.template.spec.domain.foo` / "unknown field `foo`".
///
/// KubeVirt's own structs refuse unknown fields while decoding. The Kubernetes types embedded
/// in them (`metadata`, `affinity`, `tolerations`, ...) skip unknown fields instead, so the
/// decoded object is encoded again and any non-empty input field that did not survive is
/// reported the same way: nothing is dropped silently.
pub fn decode<T: DeserializeOwned + Serialize>(value: serde_json::Value) -> Result<T, FieldError> {
    let typed: T = serde_path_to_error::deserialize(&value).map_err(|err| {
        let path = render_path(err.path());
        classify(path, err.into_inner().to_string())
    })?;
    let back = serde_json::to_value(&typed).map_err(|e| FieldError::invalid("", e.to_string()))?;
    if let Some(path) = first_dropped(&value, &back, &FieldPath::default()) {
        let name = last_field(&path).to_string();
        return Err(FieldError::not_supported(
            path,
            format!("unknown field `{name}`"),
        ));
    }
    Ok(typed)
}

/// The first field of `input` (not null and not an empty object or list) missing from `output`.
fn first_dropped(
    input: &serde_json::Value,
    output: &serde_json::Value,
    path: &FieldPath,
) -> Option<FieldPath> {
    use serde_json::Value;
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => i.iter().find_map(|(key, value)| {
            let child = path.child(key);
            match o.get(key) {
                Some(out) => first_dropped(value, out, &child),
                None => {
                    let empty = match value {
                        Value::Null => true,
                        Value::Object(m) => m.is_empty(),
                        Value::Array(a) => a.is_empty(),
                        _ => false,
                    };
                    (!empty).then_some(child)
                }
            }
        }),
        (Value::Array(i), Value::Array(o)) => i
            .iter()
            .zip(o)
            .enumerate()
            .find_map(|(n, (iv, ov))| first_dropped(iv, ov, &path.index(n))),
        _ => None,
    }
}

/// The index of the first element of `items` with the same key as element `index`, if any
/// earlier one exists.
fn first_duplicate<T, K: PartialEq>(
    items: &[T],
    index: usize,
    key: impl Fn(&T) -> K,
) -> Option<usize> {
    let target = key(items.get(index)?);
    items[..index].iter().position(|other| key(other) == target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubevirt::{VirtualMachine, VirtualMachineInstance};
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn vm_with_domain(domain: Value) -> Value {
        json!({
            "apiVersion": "kubevirt.io/v1",
            "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "default"},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": domain}}}
        })
    }

    #[test]
    fn cause_types() {
        let cases = [
            (FieldErrorKind::Required, "FieldValueRequired"),
            (FieldErrorKind::Invalid, "FieldValueInvalid"),
            (FieldErrorKind::NotSupported, "FieldValueNotSupported"),
            (FieldErrorKind::Duplicate, "FieldValueDuplicate"),
            (FieldErrorKind::Forbidden, "FieldValueForbidden"),
            (FieldErrorKind::TooLong, "FieldValueTooLong"),
        ];
        for (kind, reason) in cases {
            assert_eq!(FieldError::new("x", kind, "m").cause_type(), reason);
        }
    }

    #[test]
    fn display_is_kubernetes_style() {
        let e = FieldError::invalid("spec.running", "true: exclusive with runStrategy");
        assert_eq!(
            e.to_string(),
            "spec.running: Invalid value: true: exclusive with runStrategy"
        );
    }

    #[test]
    fn field_path_building() {
        let p = FieldPath::new("spec.template.spec")
            .child("volumes")
            .index(2)
            .child("name");
        assert_eq!(p.as_str(), "spec.template.spec.volumes[2].name");
        assert_eq!(FieldPath::default().child("spec").as_str(), "spec");
        assert_eq!(
            FieldPath::new("spec")
                .child("requests")
                .key("memory")
                .as_str(),
            "spec.requests[memory]"
        );
    }

    #[test]
    fn unknown_field_has_full_path() {
        let err =
            decode::<VirtualMachine>(vm_with_domain(json!({"devices": {}, "foo": 1}))).unwrap_err();
        assert_eq!(err.path, "spec.template.spec.domain.foo");
        assert_eq!(err.message, "unknown field `foo`");
        assert_eq!(err.kind, FieldErrorKind::NotSupported);
    }

    #[test]
    fn unknown_field_in_list_element() {
        let domain = json!({"devices": {"disks": [{"name": "a"}, {"name": "b", "bogus": true}]}});
        let err = decode::<VirtualMachine>(vm_with_domain(domain)).unwrap_err();
        assert_eq!(err.path, "spec.template.spec.domain.devices.disks[1].bogus");
    }

    #[test]
    fn unknown_top_level_field() {
        let mut v = vm_with_domain(json!({"devices": {}}));
        v["extra"] = json!(1);
        let err = decode::<VirtualMachine>(v).unwrap_err();
        assert_eq!(err.path, "extra");
    }

    #[test]
    fn kubevirt_field_not_modelled_is_named() {
        let err =
            decode::<VirtualMachine>(vm_with_domain(json!({"devices": {"gpus": []}}))).unwrap_err();
        assert_eq!(err.path, "spec.template.spec.domain.devices.gpus");
        assert_eq!(err.kind, FieldErrorKind::NotSupported);
        assert_eq!(err.message, "gpus is not supported by ferrovirt yet");
    }

    #[test]
    fn mistyped_field() {
        let err = decode::<VirtualMachine>(vm_with_domain(
            json!({"devices": {}, "cpu": {"cores": "two"}}),
        ))
        .unwrap_err();
        assert_eq!(err.path, "spec.template.spec.domain.cpu.cores");
        assert_eq!(err.kind, FieldErrorKind::Invalid);
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn missing_required_field() {
        let err = decode::<VirtualMachine>(vm_with_domain(json!({}))).unwrap_err();
        assert_eq!(err.path, "spec.template.spec.domain.devices");
        assert_eq!(err.kind, FieldErrorKind::Required);
        let err = decode::<VirtualMachineInstance>(json!({"metadata": {"name": "a"}})).unwrap_err();
        assert_eq!(err.path, "spec");
        assert_eq!(err.kind, FieldErrorKind::Required);
    }

    #[test]
    fn unknown_enum_value() {
        let mut v = vm_with_domain(json!({"devices": {}}));
        v["spec"]["runStrategy"] = json!("Sometimes");
        let err = decode::<VirtualMachine>(v).unwrap_err();
        assert_eq!(err.path, "spec.runStrategy");
        assert_eq!(err.kind, FieldErrorKind::NotSupported);
        assert!(
            err.message.contains("Sometimes") && err.message.contains("RerunOnFailure"),
            "{}",
            err.message
        );
    }

    #[test]
    fn unknown_fields_inside_kubernetes_types_are_refused() {
        let mut v = vm_with_domain(json!({"devices": {}}));
        v["metadata"]["labelz"] = json!({"a": "b"});
        let err = decode::<VirtualMachine>(v).unwrap_err();
        assert_eq!(
            (err.path.as_str(), err.kind),
            ("metadata.labelz", FieldErrorKind::NotSupported)
        );
        assert_eq!(err.message, "unknown field `labelz`");

        let mut v = vm_with_domain(json!({"devices": {}}));
        v["spec"]["template"]["spec"]["tolerations"] =
            json!([{"key": "a", "operator": "Exists"}, {"key": "b", "tolerationSecs": 5}]);
        let err = decode::<VirtualMachine>(v).unwrap_err();
        assert_eq!(err.path, "spec.template.spec.tolerations[1].tolerationSecs");

        // Nulls and empty objects are not "dropped fields".
        let mut v = vm_with_domain(json!({"devices": {}, "resources": {}}));
        v["metadata"]["creationTimestamp"] = Value::Null;
        v["status"] = json!({});
        assert!(decode::<VirtualMachine>(v).is_ok());
    }

    #[test]
    fn wrong_kind_is_reported_at_kind() {
        let mut v = vm_with_domain(json!({"devices": {}}));
        v["kind"] = json!("VirtualMachineInstance");
        let err = decode::<VirtualMachine>(v).unwrap_err();
        assert_eq!(err.path, "kind");
        assert_eq!(err.kind, FieldErrorKind::Invalid);
    }

    /// Arbitrary JSON, biased towards real field names so decoding goes deep.
    fn arb_json() -> impl Strategy<Value = Value> {
        let names = prop::sample::select(vec![
            "apiVersion",
            "kind",
            "metadata",
            "name",
            "namespace",
            "labels",
            "spec",
            "status",
            "template",
            "running",
            "runStrategy",
            "domain",
            "devices",
            "disks",
            "disk",
            "bus",
            "interfaces",
            "masquerade",
            "volumes",
            "containerDisk",
            "image",
            "cloudInitNoCloud",
            "userData",
            "networks",
            "pod",
            "resources",
            "requests",
            "memory",
            "cpu",
            "cores",
            "guest",
            "hostDisk",
            "path",
            "type",
            "capacity",
            "emptyDisk",
            "bootOrder",
            "firmware",
            "uuid",
            "replicas",
            "selector",
            "matchLabels",
            "vmiName",
            "phase",
        ]);
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            "[a-zA-Z0-9./-]{0,12}".prop_map(Value::String),
            prop::sample::select(vec![
                "Always",
                "kubevirt.io/v1",
                "VirtualMachine",
                "virtio",
                "1Gi",
                "64Mi",
                "Disk",
                "DiskOrCreate"
            ])
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(6, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((names.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn decode_never_panics(v in arb_json()) {
            if let Ok(mut vm) = decode::<VirtualMachine>(v.clone()) {
                default_vm(&mut vm);
                let _ = validate_vm(&vm, None);
                let _ = validate_vm(&vm, Some(&vm));
            }
            if let Ok(mut vmi) = decode::<VirtualMachineInstance>(v.clone()) {
                default_vmi(&mut vmi);
                let _ = validate_vmi(&vmi, None);
                let _ = validate_vmi_update(&vmi, &vmi);
            }
            if let Ok(mut rs) = decode::<crate::kubevirt::VirtualMachineInstanceReplicaSet>(v.clone()) {
                default_vmirs(&mut rs);
                let _ = validate_vmirs(&rs, None);
            }
            if let Ok(m) = decode::<crate::kubevirt::VirtualMachineInstanceMigration>(v) {
                let _ = validate_migration(&m, None);
                let _ = validate_migration(&m, Some(&m));
            }
        }
    }
}
