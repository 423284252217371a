//! The Eviction subresource of Pods, which `kubectl drain` uses:
//! `POST /api/v1/namespaces/NS/pods/NAME/eviction` with a `policy/v1` (or `policy/v1beta1`)
//! Eviction body. Without PodDisruptionBudgets (ferrovirt has none) Kubernetes deletes the pod;
//! a launcher pod is treated the way KubeVirt's eviction webhook and evictionStrategy ask:
//!
//! ```text
//!  pod ─┬─ being deleted already ─────────────────────────► nothing (a shorter grace period is applied)  201
//!       ├─ not a launcher, or its VMI is gone, ended or ──► delete the pod (graceful, deleteOptions)       201
//!       │  being deleted
//!       └─ launcher pod of a live VMI, by the VMI's spec.evictionStrategy:
//!            None, unset, LiveMigrateIfPossible ─────────► [VM RerunOnFailure: queue a Start request]
//!              (nothing is migratable yet)                  delete the VMI (uid precondition), delete the pod  201
//!            LiveMigrate ────────────────────────────────► refuse: no live migration yet                  429
//!            External ───────────────────────────────────► status.evacuationNodeName = node, refuse        429
//! ```
//!
//! Deleting the VMI (not only the pod) makes the stop a graceful one rather than a failure: the
//! controller and the node agent power the guest off within its grace period, and then the VM
//! controller starts a new VMI for a VM with runStrategy Always (or RerunOnFailure, through the
//! queued Start), which the scheduler places on another node because `drain` cordoned this one.
//! A VMI of a replica set is deleted too, and the set creates a replacement. Manual, Once and
//! Halted VMs stay stopped, as with KubeVirt's `None`.
//!
//! A 429 (TooManyRequests) is what a PodDisruptionBudget or KubeVirt's webhook answers when a pod
//! may not go yet; `kubectl drain` retries it every 5 s until its `--timeout`.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::kinds::{self, Kind};
use crate::object;
use crate::request::{Query, Target};
use crate::rest::{subject, DeleteOptions, Objects};

/// The API group of Eviction.
pub const POLICY_GROUP: &str = "policy";
/// The version of the policy group that discovery advertises (kubectl uses it for the body).
pub const POLICY_VERSION: &str = "v1";
/// Eviction versions accepted in a request body.
const ACCEPTED_VERSIONS: [&str; 2] = ["policy/v1", "policy/v1beta1"];

/// kube-rs (5.0) spells `deleteOptions` this way in the Eviction it sends; Kubernetes drops the
/// unknown field (and with it the options), ferrovirt reads it as what kube-rs means.
const KUBE_RS_DELETE_OPTIONS: &str = "delete_options";

/// Label and value every launcher pod carries.
const LAUNCHER_LABEL: (&str, &str) = ("kubevirt.io", "virt-launcher");
const KUBEVIRT_GROUP: &str = "kubevirt.io";

/// `(namespace, pod name)` when `path` is `/api/v1/namespaces/NS/pods/NAME/eviction` (or the same
/// under `/apis/policy/v1`, which the policy group's resource list names).
pub fn route(path: &str) -> Option<(&str, &str)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", POLICY_GROUP, POLICY_VERSION, rest @ ..] => rest,
        _ => return None,
    };
    match rest {
        ["namespaces", ns, "pods", name, "eviction"] if !ns.is_empty() && !name.is_empty() => Some((ns, name)),
        _ => None,
    }
}

/// The `pods/eviction` entry of the core/v1 resource list; `kubectl drain` looks for exactly this
/// (name, kind Eviction, a group and a version) before it evicts instead of deleting.
pub fn discovery_entry() -> Value {
    json!({
        "name": "pods/eviction", "singularName": "", "namespaced": true,
        "group": POLICY_GROUP, "version": POLICY_VERSION, "kind": "Eviction", "verbs": ["create"],
    })
}

/// `/apis/policy/v1`, for discovery: the group exists for Eviction, a subresource of pods (there
/// are no PodDisruptionBudgets). The list must not be empty: newer clients report a group
/// version without resources as a discovery failure (`kubectl api-resources` exits 1).
pub fn policy_resource_list() -> Value {
    json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{POLICY_GROUP}/{POLICY_VERSION}"),
        "resources": [{ "name": "pods/eviction", "singularName": "", "namespaced": true, "kind": "Eviction", "verbs": ["create"] }],
    })
}

/// The object a decision acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// What an eviction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The pod is going already; nothing more to do.
    Nothing,
    /// Delete the pod with the Eviction's delete options.
    DeletePod,
    /// Stop the VMI the pod runs: queue a Start on the VM (`start_vm`, RerunOnFailure), delete the
    /// VMI (only that uid), then delete the pod.
    StopVmi { vmi: ObjectRef, start_vm: Option<String> },
    /// evictionStrategy External: set the VMI's `status.evacuationNodeName` to `node`, answer 429.
    Evacuate { vmi: ObjectRef, node: String, message: String },
    /// Answer 429 TooManyRequests with this message.
    Refuse(String),
}

/// The controller ownerReference of `obj` to a kubevirt.io object of `kind`: (name, uid).
fn controller_of(obj: &Value, kind: &str) -> Option<ObjectRef> {
    object::meta(obj).get("ownerReferences")?.as_array()?.iter().find_map(|r| {
        let is = r.get("controller").and_then(Value::as_bool) == Some(true)
            && r.get("kind").and_then(Value::as_str) == Some(kind)
            && r.get("apiVersion").and_then(Value::as_str).is_some_and(|v| v.split('/').next() == Some(KUBEVIRT_GROUP));
        is.then(|| ObjectRef {
            name: r.get("name").and_then(Value::as_str).unwrap_or_default().to_string(),
            uid: r.get("uid").and_then(Value::as_str).unwrap_or_default().to_string(),
        })
    })
}

/// The VMI a launcher pod runs (name, uid), if `pod` is one.
pub fn launcher_vmi(pod: &Value) -> Option<ObjectRef> {
    let labelled = object::labels(pod).get(LAUNCHER_LABEL.0).map(String::as_str) == Some(LAUNCHER_LABEL.1);
    labelled.then(|| controller_of(pod, "VirtualMachineInstance")).flatten()
}

/// The VM that controls a VMI (name, uid), if any.
pub fn owning_vm(vmi: &Value) -> Option<ObjectRef> {
    controller_of(vmi, "VirtualMachine")
}

/// The VM's run strategy as written (`spec.running` is the old spelling of Always/Halted).
fn run_strategy(vm: &Value) -> Option<&str> {
    match (vm.pointer("/spec/runStrategy").and_then(Value::as_str), vm.pointer("/spec/running").and_then(Value::as_bool)) {
        (Some(s), None) => Some(s),
        (None, Some(true)) => Some("Always"),
        (None, Some(false) | None) => Some("Halted"),
        (Some(_), Some(_)) => None,
    }
}

fn key(obj: &Value) -> String {
    format!("{}/{}", object::meta_str(obj, "namespace").unwrap_or_default(), object::name(obj).unwrap_or_default())
}

/// The Eviction's preconditions against the pod, with Kubernetes' messages (409).
fn check_preconditions(pod: &Value, opts: &DeleteOptions) -> ApiResult<()> {
    let pods = pods_kind();
    let name = object::name(pod).unwrap_or_default();
    if let Some(uid) = &opts.uid {
        if Some(uid.as_str()) != object::uid(pod) {
            return Err(ApiError::Conflict(
                subject(pods, name),
                format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", object::uid(pod).unwrap_or("")),
            ));
        }
    }
    if let Some(rv) = &opts.resource_version {
        let current = object::meta_str(pod, "resourceVersion").unwrap_or("");
        if rv != current {
            return Err(ApiError::Conflict(
                subject(pods, name),
                format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {current}"),
            ));
        }
    }
    Ok(())
}

/// What evicting `pod` does, given the VMI its controller reference names (`vmi`, as stored
/// under that name, any uid) and the VM that controls that VMI (`vm`). Pure.
pub fn decide(pod: &Value, vmi: Option<&Value>, vm: Option<&Value>, opts: &DeleteOptions) -> ApiResult<Decision> {
    check_preconditions(pod, opts)?;
    if object::is_deleting(pod) {
        // Deleting again only shortens the grace period, as in Kubernetes.
        let current = object::meta(pod).get("deletionGracePeriodSeconds").and_then(Value::as_i64);
        return Ok(match (opts.grace_period, current) {
            (Some(asked), Some(now)) if asked < now => Decision::DeletePod,
            _ => Decision::Nothing,
        });
    }
    let Some(owner) = launcher_vmi(pod) else { return Ok(Decision::DeletePod) };
    // The VMI named by the reference, if it is still that VMI, alive, and not on its way out.
    let live = vmi.filter(|v| {
        object::uid(v) == Some(owner.uid.as_str())
            && !object::is_deleting(v)
            && !matches!(v.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
    });
    let Some(vmi) = live else { return Ok(Decision::DeletePod) };
    let vmi_ref = ObjectRef { name: owner.name.clone(), uid: owner.uid.clone() };
    let pod_key = key(pod);
    match vmi.pointer("/spec/evictionStrategy").and_then(Value::as_str) {
        None | Some("None") | Some("LiveMigrateIfPossible") => {}
        Some("LiveMigrate") => {
            return Ok(Decision::Refuse(format!(
                "Cannot evict pod {pod_key}: its VirtualMachineInstance {} has evictionStrategy LiveMigrate, and ferrovirt \
                 cannot live-migrate yet. Stop the VM (fvctl stop), or give it evictionStrategy None (stop and start \
                 elsewhere) or LiveMigrateIfPossible",
                key(vmi)
            )))
        }
        Some("External") => {
            let node = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .or_else(|| vmi.pointer("/status/nodeName").and_then(Value::as_str))
                .unwrap_or_default()
                .to_string();
            let message = format!(
                "Eviction triggered evacuation of VMI {} (evictionStrategy External): status.evacuationNodeName is {node:?}; \
                 pod {pod_key} goes once the VMI is stopped",
                key(vmi)
            );
            return Ok(Decision::Evacuate { vmi: vmi_ref, node, message });
        }
        Some(other) => {
            return Err(ApiError::Internal(format!("VirtualMachineInstance {} has an unknown evictionStrategy {other:?}", key(vmi))))
        }
    }
    let vm_ref = owning_vm(vmi);
    let start_vm = match (vm_ref, vm) {
        (Some(r), Some(vm)) if object::uid(vm) == Some(r.uid.as_str()) && run_strategy(vm) == Some("RerunOnFailure") => Some(r.name),
        _ => None,
    };
    Ok(Decision::StopVmi { vmi: vmi_ref, start_vm })
}

/// The options of an Eviction body (`deleteOptions`), after checking that it is one for `name`.
pub fn parse_body(ns: &str, name: &str, body: &Value, query: &Query) -> ApiResult<DeleteOptions> {
    let obj = body.as_object().ok_or_else(|| ApiError::BadRequest("the Eviction must be an object".into()))?;
    if let Some(extra) = obj.keys().find(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "deleteOptions" | KUBE_RS_DELETE_OPTIONS)) {
        return Err(ApiError::BadRequest(format!("unknown field {extra:?} in the Eviction (known: apiVersion, kind, metadata, deleteOptions)")));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str).filter(|k| !k.is_empty()) {
        if kind != "Eviction" {
            return Err(ApiError::BadRequest(format!("the body of an eviction must be an Eviction, not a {kind}")));
        }
    }
    if let Some(v) = obj.get("apiVersion").and_then(Value::as_str).filter(|v| !v.is_empty()) {
        if !ACCEPTED_VERSIONS.contains(&v) {
            return Err(ApiError::BadRequest(format!("Eviction apiVersion {v:?} is not served; use policy/v1 (or policy/v1beta1)")));
        }
    }
    if let Some(n) = object::meta_str(body, "name") {
        if n != name {
            return Err(ApiError::BadRequest(format!("name in URL does not match name in Eviction object ({name:?} and {n:?})")));
        }
    }
    if let Some(n) = object::meta_str(body, "namespace") {
        if n != ns {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
    }
    let delete = match (obj.get("deleteOptions").filter(|d| !d.is_null()), obj.get(KUBE_RS_DELETE_OPTIONS).filter(|d| !d.is_null())) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(format!("give deleteOptions or {KUBE_RS_DELETE_OPTIONS}, not both")));
        }
        (d, alias) => d.or(alias),
    };
    if delete.is_some_and(|d| !d.is_object()) {
        return Err(ApiError::BadRequest("deleteOptions of the Eviction must be an object".into()));
    }
    DeleteOptions::parse(query, delete)
}

fn pods_kind() -> &'static Kind {
    kinds::find("", "v1", "pods").expect("pods are served")
}

fn target(kind: &'static Kind, ns: &str, name: &str) -> Target {
    Target { kind, namespace: Some(ns.to_string()), name: Some(name.to_string()), subresource: None }
}

/// The answer a refused eviction gets: a Status with 429 TooManyRequests, as a disruption budget
/// or KubeVirt's eviction webhook answers.
fn too_many_requests(message: &str) -> Response {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "TooManyRequests", "code": 429,
    });
    (StatusCode::TOO_MANY_REQUESTS, [(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(&status).unwrap_or_default())
        .into_response()
}

fn success() -> Response {
    let status = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201 });
    (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(&status).unwrap_or_default())
        .into_response()
}

/// Serve `POST .../pods/NAME/eviction`.
pub async fn handle(
    objects: &Objects,
    ns: &str,
    name: &str,
    method: &Method,
    content_type: Option<&str>,
    body: Bytes,
    query: &Query,
) -> ApiResult<Response> {
    if *method != Method::POST {
        return Err(ApiError::MethodNotAllowed);
    }
    let eviction = object::decode_body(content_type, &body)?;
    let opts = parse_body(ns, name, &eviction, query)?;
    let pods = pods_kind();
    let vmis = kinds::find(KUBEVIRT_GROUP, "v1", "virtualmachineinstances").expect("served");
    let vms = kinds::find(KUBEVIRT_GROUP, "v1", "virtualmachines").expect("served");
    let pod = objects.get(&target(pods, ns, name), name).await?;
    let vmi = match launcher_vmi(&pod) {
        Some(r) => get_opt(objects, vmis, ns, &r.name).await?,
        None => None,
    };
    let vm = match vmi.as_ref().and_then(owning_vm) {
        Some(r) => get_opt(objects, vms, ns, &r.name).await?,
        None => None,
    };
    let decision = decide(&pod, vmi.as_ref(), vm.as_ref(), &opts)?;
    tracing::info!(pod = %format!("{ns}/{name}"), ?decision, dry_run = opts.dry_run, "eviction");
    match decision {
        Decision::Refuse(message) => return Ok(too_many_requests(&message)),
        Decision::Evacuate { vmi, node, message } => {
            if !opts.dry_run {
                objects
                    .guaranteed_update(&target(vmis, ns, &vmi.name), &vmi.name, false, |cur| {
                        if object::uid(cur) != Some(vmi.uid.as_str()) {
                            return Err(ApiError::Conflict(subject(vmis, &vmi.name), "the VirtualMachineInstance was replaced meanwhile".into()));
                        }
                        let mut next = cur.clone();
                        if !next.get("status").is_some_and(Value::is_object) {
                            next["status"] = json!({});
                        }
                        next["status"]["evacuationNodeName"] = json!(node);
                        Ok(next)
                    })
                    .await?;
            }
            return Ok(too_many_requests(&message));
        }
        Decision::Nothing => {}
        _ if opts.dry_run => {}
        Decision::DeletePod => delete_pod(objects, ns, name, &opts).await?,
        Decision::StopVmi { vmi, start_vm } => {
            if let Some(vm) = start_vm {
                queue_start(objects, vms, ns, &vm).await?;
            }
            let only_this = DeleteOptions { uid: Some(vmi.uid.clone()), ..Default::default() };
            match objects.delete(&target(vmis, ns, &vmi.name), &vmi.name, &only_this).await {
                // Gone or replaced meanwhile: the pod still goes.
                Ok(_) | Err(ApiError::NotFound(_)) | Err(ApiError::Conflict(..)) => {}
                Err(e) => return Err(e),
            }
            delete_pod(objects, ns, name, &opts).await?;
        }
    }
    Ok(success())
}

async fn get_opt(objects: &Objects, kind: &'static Kind, ns: &str, name: &str) -> ApiResult<Option<Value>> {
    match objects.get(&target(kind, ns, name), name).await {
        Ok(v) => Ok(Some(v)),
        Err(ApiError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn delete_pod(objects: &Objects, ns: &str, name: &str, opts: &DeleteOptions) -> ApiResult<()> {
    match objects.delete(&target(pods_kind(), ns, name), name, opts).await {
        // Gone meanwhile (its VMI's controller was faster): evicted all the same.
        Ok(_) | Err(ApiError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Add a Start request to the VM's `status.stateChangeRequests` unless one is queued already.
async fn queue_start(objects: &Objects, vms: &'static Kind, ns: &str, vm: &str) -> ApiResult<()> {
    let t = Target { subresource: Some("status".into()), ..target(vms, ns, vm) };
    objects
        .guaranteed_update(&t, vm, false, |cur| {
            let mut next = cur.clone();
            if !next.get("status").is_some_and(Value::is_object) {
                next["status"] = json!({});
            }
            let list = next["status"].as_object_mut().expect("object").entry("stateChangeRequests").or_insert(json!([]));
            if let Some(a) = list.as_array_mut() {
                if !a.iter().any(|r| r.get("action").and_then(Value::as_str) == Some("Start")) {
                    a.push(json!({"action": "Start"}));
                }
            }
            Ok(next)
        })
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launcher(vmi_uid: &str) -> Value {
        json!({
            "metadata": {"name": "virt-launcher-vm1-abcde", "namespace": "default", "uid": "pod-uid", "resourceVersion": "7",
                "labels": {"kubevirt.io": "virt-launcher"},
                "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": "vm1", "uid": vmi_uid, "controller": true}]},
            "spec": {"nodeName": "n1"},
        })
    }

    fn vmi(uid: &str, owner_vm: Option<&str>) -> Value {
        let mut v = json!({"metadata": {"name": "vm1", "namespace": "default", "uid": uid}, "spec": {}, "status": {"phase": "Running", "nodeName": "n1"}});
        if let Some(vm_uid) = owner_vm {
            v["metadata"]["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "name": "vm1", "uid": vm_uid, "controller": true}]);
        }
        v
    }

    fn vm(uid: &str, strategy: &str) -> Value {
        json!({"metadata": {"name": "vm1", "uid": uid}, "spec": {"runStrategy": strategy}})
    }

    fn none() -> DeleteOptions {
        DeleteOptions::default()
    }

    fn stop(start_vm: Option<&str>) -> Decision {
        Decision::StopVmi { vmi: ObjectRef { name: "vm1".into(), uid: "vmi-uid".into() }, start_vm: start_vm.map(str::to_string) }
    }

    #[test]
    fn paths_are_recognised() {
        assert_eq!(route("/api/v1/namespaces/default/pods/p1/eviction"), Some(("default", "p1")));
        assert_eq!(route("/api/v1/namespaces/default/pods/p1/eviction/"), Some(("default", "p1")));
        assert_eq!(route("/api/v1/namespaces/default/pods/p1"), None);
        assert_eq!(route("/api/v1/namespaces/default/pods/p1/status"), None);
        assert_eq!(route("/apis/policy/v1/namespaces/default/pods/p1/eviction"), Some(("default", "p1")));
        assert_eq!(route("/apis/kubevirt.io/v1/namespaces/default/pods/p1/eviction"), None);
        assert_eq!(route("/apis/policy/v1/namespaces/default/pods/p1"), None);
    }

    #[test]
    fn a_plain_pod_is_deleted() {
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u"}, "spec": {"nodeName": "n1"}});
        assert_eq!(decide(&pod, None, None, &none()).unwrap(), Decision::DeletePod);
        // The launcher label alone does not make a launcher pod; the VMI controller reference does.
        let mut labelled = pod.clone();
        labelled["metadata"]["labels"] = json!({"kubevirt.io": "virt-launcher"});
        assert_eq!(decide(&labelled, None, None, &none()).unwrap(), Decision::DeletePod);
        let mut owned = launcher("vmi-uid");
        owned["metadata"]["labels"] = json!({});
        assert_eq!(decide(&owned, Some(&vmi("vmi-uid", None)), None, &none()).unwrap(), Decision::DeletePod);
    }

    #[test]
    fn a_launcher_pod_stops_its_vmi_and_rerun_on_failure_queues_a_start() {
        let pod = launcher("vmi-uid");
        // A VMI alone, of a replica set, or of a VM: it is deleted (the set or VM replaces it).
        assert_eq!(decide(&pod, Some(&vmi("vmi-uid", None)), None, &none()).unwrap(), stop(None));
        for (strategy, start) in [("Always", None), ("RerunOnFailure", Some("vm1")), ("Manual", None), ("Once", None), ("Halted", None)] {
            let got = decide(&pod, Some(&vmi("vmi-uid", Some("vm-uid"))), Some(&vm("vm-uid", strategy)), &none()).unwrap();
            assert_eq!(got, stop(start), "{strategy}");
        }
        // `running: true` is Always; a VM with another uid (replaced) is not asked to start.
        let running = json!({"metadata": {"name": "vm1", "uid": "vm-uid"}, "spec": {"running": true}});
        assert_eq!(run_strategy(&running), Some("Always"));
        let got = decide(&pod, Some(&vmi("vmi-uid", Some("vm-uid"))), Some(&vm("other", "RerunOnFailure")), &none()).unwrap();
        assert_eq!(got, stop(None));
    }

    #[test]
    fn a_vmi_that_is_gone_ended_replaced_or_stopping_leaves_only_the_pod() {
        let pod = launcher("vmi-uid");
        assert_eq!(decide(&pod, None, None, &none()).unwrap(), Decision::DeletePod);
        assert_eq!(decide(&pod, Some(&vmi("new-uid", None)), None, &none()).unwrap(), Decision::DeletePod);
        for phase in ["Succeeded", "Failed"] {
            let mut v = vmi("vmi-uid", None);
            v["status"]["phase"] = json!(phase);
            assert_eq!(decide(&pod, Some(&v), None, &none()).unwrap(), Decision::DeletePod, "{phase}");
        }
        let mut v = vmi("vmi-uid", None);
        v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(decide(&pod, Some(&v), None, &none()).unwrap(), Decision::DeletePod);
    }

    #[test]
    fn eviction_strategies() {
        let pod = launcher("vmi-uid");
        let with = |s: &str| {
            let mut v = vmi("vmi-uid", None);
            v["spec"]["evictionStrategy"] = json!(s);
            decide(&pod, Some(&v), None, &none()).unwrap()
        };
        assert_eq!(with("None"), stop(None));
        assert_eq!(with("LiveMigrateIfPossible"), stop(None), "nothing is migratable yet: as None");
        let Decision::Refuse(m) = with("LiveMigrate") else { panic!("LiveMigrate is refused") };
        assert!(m.contains("cannot live-migrate yet") && m.contains("default/virt-launcher-vm1-abcde"), "{m}");
        let Decision::Evacuate { vmi, node, message } = with("External") else { panic!("External evacuates") };
        assert_eq!((vmi.uid.as_str(), node.as_str()), ("vmi-uid", "n1"));
        assert!(message.contains("evacuation"), "{message}");
    }

    #[test]
    fn a_pod_being_deleted_is_only_hurried() {
        let mut pod = launcher("vmi-uid");
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        let v = vmi("vmi-uid", None);
        assert_eq!(decide(&pod, Some(&v), None, &none()).unwrap(), Decision::Nothing);
        let grace = |g| DeleteOptions { grace_period: Some(g), ..Default::default() };
        assert_eq!(decide(&pod, Some(&v), None, &grace(30)).unwrap(), Decision::Nothing);
        assert_eq!(decide(&pod, Some(&v), None, &grace(5)).unwrap(), Decision::DeletePod);
    }

    #[test]
    fn preconditions_are_checked_against_the_pod() {
        let pod = launcher("vmi-uid");
        let v = vmi("vmi-uid", None);
        let uid = |u: &str| DeleteOptions { uid: Some(u.into()), ..Default::default() };
        assert_eq!(decide(&pod, Some(&v), None, &uid("pod-uid")).unwrap(), stop(None));
        let e = decide(&pod, Some(&v), None, &uid("other")).unwrap_err();
        assert!(matches!(e, ApiError::Conflict(..)) && e.to_string().contains("Precondition failed: UID in precondition: other"), "{e}");
        let rv = |r: &str| DeleteOptions { resource_version: Some(r.into()), ..Default::default() };
        assert!(decide(&pod, Some(&v), None, &rv("7")).is_ok());
        assert!(matches!(decide(&pod, Some(&v), None, &rv("6")), Err(ApiError::Conflict(..))));
    }

    #[test]
    fn bodies_of_both_versions_are_read() {
        let q = Query::default();
        for v in ["policy/v1", "policy/v1beta1"] {
            let body = json!({"apiVersion": v, "kind": "Eviction", "metadata": {"name": "p1", "namespace": "default"},
                "deleteOptions": {"gracePeriodSeconds": 5, "preconditions": {"uid": "u"}}});
            let o = parse_body("default", "p1", &body, &q).unwrap();
            assert_eq!((o.grace_period, o.uid.as_deref()), (Some(5), Some("u")), "{v}");
        }
        let bare = parse_body("default", "p1", &json!({"metadata": {"name": "p1"}}), &q).unwrap();
        assert_eq!(bare.grace_period, None);
        let dry = parse_body("default", "p1", &json!({"deleteOptions": {"dryRun": ["All"]}}), &q).unwrap();
        assert!(dry.dry_run);
        // What kube-rs sends.
        let kube_rs = json!({"delete_options": {"gracePeriodSeconds": 3}, "metadata": {"name": "p1"}});
        assert_eq!(parse_body("default", "p1", &kube_rs, &q).unwrap().grace_period, Some(3));
        let none = json!({"delete_options": null, "metadata": {"name": "p1"}});
        assert_eq!(parse_body("default", "p1", &none, &q).unwrap().grace_period, None);
        for (body, says) in [
            (json!({"metadata": {"name": "p2"}}), "does not match name"),
            (json!({"metadata": {"namespace": "other"}}), "namespace"),
            (json!({"apiVersion": "policy/v2"}), "not served"),
            (json!({"kind": "Pod"}), "not a Pod"),
            (json!({"spec": {}}), "unknown field \"spec\""),
            (json!({"deleteOptions": {"gracePeriodSeconds": -1}}), "negative"),
            (json!({"deleteOptions": {}, "delete_options": {}}), "not both"),
        ] {
            let e = parse_body("default", "p1", &body, &q).unwrap_err();
            assert!(matches!(e, ApiError::BadRequest(_)) && e.to_string().contains(says), "{body}: {e}");
        }
    }

    #[test]
    fn discovery_names_what_kubectl_drain_looks_for() {
        let e = discovery_entry();
        assert_eq!((e["name"].as_str(), e["kind"].as_str(), e["group"].as_str(), e["version"].as_str()), (Some("pods/eviction"), Some("Eviction"), Some("policy"), Some("v1")));
        let policy = policy_resource_list();
        assert_eq!(policy["groupVersion"], "policy/v1");
        assert!(!policy["resources"].as_array().unwrap().is_empty(), "an empty group version breaks discovery");
    }
}
