//! Admission: per-kind defaulting and validation before anything is stored.
//!
//! KubeVirt kinds go through `ferrovirt_api::admission` (what KubeVirt's virt-api does). Core kinds
//! are decoded into their k8s-openapi types, so a wrong type anywhere is refused with its path, and
//! any field the type does not know is refused by name rather than dropped.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use ferrovirt_api::admission::{self as api, FieldError, NameRule};
use ferrovirt_api::kubevirt::{
    VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceMigration, VirtualMachineInstanceReplicaSet,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Namespace, Node, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::error::Cause;
use crate::kinds::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
}

/// Which admission a kind gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    VirtualMachine,
    VirtualMachineInstance,
    ReplicaSet,
    Migration,
    Namespace,
    Node,
    Pod,
    Service,
    CoreEvent,
    EventsV1,
    Lease,
    Secret,
}

fn causes(errors: Vec<FieldError>) -> Vec<Cause> {
    errors
        .into_iter()
        .map(|e| {
            // Kubernetes' phrasing: "Invalid value: <detail>", "Required value: <detail>", ...
            let label = e.kind.label();
            let message = if e.message.starts_with(label) { e.message.clone() } else { format!("{label}: {}", e.message) };
            Cause { reason: e.cause_type().to_string(), message, field: e.path.clone() }
        })
        .collect()
}

fn encode<T: Serialize>(v: &T) -> Result<Value, Vec<Cause>> {
    serde_json::to_value(v).map_err(|e| vec![Cause { reason: "FieldValueInvalid".into(), message: e.to_string(), field: String::new() }])
}

/// Paths present (and not empty) in `input` that `output` lost: fields the type does not know.
pub fn dropped_fields(input: &Value, output: &Value, path: &str, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match o.get(k) {
                    Some(ov) => dropped_fields(v, ov, &p, out),
                    None => {
                        let empty = v.is_null()
                            || v.as_object().is_some_and(|m| m.is_empty())
                            || v.as_array().is_some_and(|a| a.is_empty());
                        if !empty {
                            out.push(p);
                        }
                    }
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                dropped_fields(iv, ov, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Decode a core object into its typed form; refuse unknown fields by name.
fn typed<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<T, Vec<Cause>> {
    let typed: T = api::decode(obj.clone()).map_err(|e| causes(vec![e]))?;
    let back = encode(&typed)?;
    let mut unknown = Vec::new();
    dropped_fields(obj, &back, "", &mut unknown);
    if !unknown.is_empty() {
        return Err(unknown
            .into_iter()
            .map(|p| {
                let field = p.rsplit('.').next().unwrap_or(&p).to_string();
                Cause { reason: "FieldValueNotSupported".into(), message: format!("unknown field \"{field}\""), field: p }
            })
            .collect());
    }
    Ok(typed)
}

fn meta_errors(meta: &ObjectMeta, kind: &Kind, rule: NameRule) -> Vec<FieldError> {
    api::validate_object_meta(meta, kind.namespaced, rule)
}

fn check(errors: Vec<FieldError>) -> Result<(), Vec<Cause>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(causes(errors))
    }
}

fn required(path: &str, what: &str) -> FieldError {
    FieldError { path: path.into(), kind: api::FieldErrorKind::Required, message: what.to_string() }
}

impl Admission {
    /// Default and validate `obj`; returns the object to store or the causes of the refusal.
    pub fn admit(&self, kind: &Kind, obj: Value, old: Option<&Value>, op: Operation) -> Result<Value, Vec<Cause>> {
        match self {
            Admission::VirtualMachine => {
                let mut vm: VirtualMachine = api::decode(obj).map_err(|e| causes(vec![e]))?;
                let old: Option<VirtualMachine> = old.and_then(|o| serde_json::from_value(o.clone()).ok());
                // Defaulting is idempotent; running it on updates too keeps a PUT of the original
                // manifest from dropping defaults (such as the firmware UUID derived from the name).
                api::default_vm(&mut vm);
                check(api::validate_vm(&vm, old.as_ref()))?;
                encode(&vm)
            }
            Admission::VirtualMachineInstance => {
                let mut vmi: VirtualMachineInstance = api::decode(obj).map_err(|e| causes(vec![e]))?;
                let old: Option<VirtualMachineInstance> = old.and_then(|o| serde_json::from_value(o.clone()).ok());
                api::default_vmi(&mut vmi);
                check(api::validate_vmi(&vmi, old.as_ref()))?;
                encode(&vmi)
            }
            Admission::ReplicaSet => {
                let mut rs: VirtualMachineInstanceReplicaSet = api::decode(obj).map_err(|e| causes(vec![e]))?;
                let old: Option<VirtualMachineInstanceReplicaSet> = old.and_then(|o| serde_json::from_value(o.clone()).ok());
                api::default_vmirs(&mut rs);
                check(api::validate_vmirs(&rs, old.as_ref()))?;
                encode(&rs)
            }
            Admission::Migration => {
                let m: VirtualMachineInstanceMigration = api::decode(obj).map_err(|e| causes(vec![e]))?;
                let old: Option<VirtualMachineInstanceMigration> = old.and_then(|o| serde_json::from_value(o.clone()).ok());
                check(api::validate_migration(&m, old.as_ref()))?;
                encode(&m)
            }
            Admission::Namespace => {
                let mut ns: Namespace = typed(&obj)?;
                check(meta_errors(&ns.metadata, kind, NameRule::Dns1123Label))?;
                if op == Operation::Create {
                    let spec = ns.spec.get_or_insert_with(Default::default);
                    if spec.finalizers.is_none() {
                        spec.finalizers = Some(vec!["kubernetes".into()]);
                    }
                    ns.status = Some(k8s_openapi::api::core::v1::NamespaceStatus { phase: Some("Active".into()), ..Default::default() });
                }
                let mut v = encode(&ns)?;
                if let Some(m) = v.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
                    m.entry("kubernetes.io/metadata.name").or_insert(json!(ns.metadata.name));
                } else {
                    v["metadata"]["labels"] = json!({ "kubernetes.io/metadata.name": ns.metadata.name });
                }
                Ok(v)
            }
            Admission::Node => {
                let node: Node = typed(&obj)?;
                check(meta_errors(&node.metadata, kind, NameRule::Dns1123Subdomain))?;
                encode(&node)
            }
            Admission::Pod => {
                let mut pod: Pod = typed(&obj)?;
                let mut errs = meta_errors(&pod.metadata, kind, NameRule::Dns1123Subdomain);
                match &pod.spec {
                    None => errs.push(required("spec", "a pod needs a spec")),
                    Some(spec) => {
                        if spec.containers.is_empty() {
                            errs.push(required("spec.containers", "a pod needs at least one container"));
                        }
                        for (i, c) in spec.containers.iter().enumerate() {
                            if c.name.is_empty() {
                                errs.push(required(&format!("spec.containers[{i}].name"), "every container needs a name"));
                            }
                        }
                    }
                }
                if let (Operation::Update, Some(old)) = (op, old) {
                    // A pod's node binding is set once.
                    let before = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
                    let after = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("");
                    if !before.is_empty() && before != after {
                        errs.push(FieldError {
                            path: "spec.nodeName".into(),
                            kind: api::FieldErrorKind::Forbidden,
                            message: "the node of a bound pod cannot change".into(),
                        });
                    }
                }
                check(errs)?;
                if op == Operation::Create && pod.status.is_none() {
                    pod.status = Some(k8s_openapi::api::core::v1::PodStatus { phase: Some("Pending".into()), ..Default::default() });
                }
                encode(&pod)
            }
            Admission::Service => {
                let svc: Service = typed(&obj)?;
                check(meta_errors(&svc.metadata, kind, NameRule::Dns1123Label))?;
                encode(&svc)
            }
            Admission::CoreEvent => {
                let ev: CoreEvent = typed(&obj)?;
                check(meta_errors(&ev.metadata, kind, NameRule::Dns1123Subdomain))?;
                encode(&ev)
            }
            Admission::EventsV1 => {
                let ev: EventV1 = typed(&obj)?;
                let mut errs = meta_errors(&ev.metadata, kind, NameRule::Dns1123Subdomain);
                if ev.regarding.is_none() {
                    errs.push(required("regarding", "an event must say what it is about"));
                }
                check(errs)?;
                encode(&ev)
            }
            Admission::Lease => {
                let l: Lease = typed(&obj)?;
                check(meta_errors(&l.metadata, kind, NameRule::Dns1123Subdomain))?;
                encode(&l)
            }
            Admission::Secret => {
                let s: Secret = typed(&obj)?;
                check(meta_errors(&s.metadata, kind, NameRule::Dns1123Subdomain))?;
                encode(&s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds;

    #[test]
    fn unknown_core_fields_are_refused_by_path() {
        let nodes = kinds::find("", "v1", "nodes").unwrap();
        let obj = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"unschedulable": true, "bogus": 1}});
        let err = Admission::Node.admit(nodes, obj, None, Operation::Create).unwrap_err();
        assert_eq!(err[0].field, "spec.bogus");
        assert!(err[0].message.contains("bogus"));
    }

    #[test]
    fn wrong_types_are_refused_with_their_path() {
        let nodes = kinds::find("", "v1", "nodes").unwrap();
        let obj = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "spec": {"unschedulable": "yes"}});
        let err = Admission::Node.admit(nodes, obj, None, Operation::Create).unwrap_err();
        assert_eq!(err[0].field, "spec.unschedulable");
    }

    #[test]
    fn namespaces_get_the_kubernetes_finalizer_and_phase() {
        let ns = kinds::find("", "v1", "namespaces").unwrap();
        let out = Admission::Namespace
            .admit(ns, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}), None, Operation::Create)
            .unwrap();
        assert_eq!(out["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(out["status"]["phase"], "Active");
        assert_eq!(out["metadata"]["labels"]["kubernetes.io/metadata.name"], "a");
    }

    #[test]
    fn pods_need_containers() {
        let pods = kinds::find("", "v1", "pods").unwrap();
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": {"containers": []}});
        let err = Admission::Pod.admit(pods, obj, None, Operation::Create).unwrap_err();
        assert_eq!(err[0].field, "spec.containers");
    }
}
