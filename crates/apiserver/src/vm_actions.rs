//! KubeVirt's VM subresources: `PUT /apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachines/N/
//! {start,stop,restart}`, with virtctl's meaning:
//!
//! ```text
//!             start                      stop                         restart
//!  Always     409 if running             runStrategy Halted           stateChangeRequests [Stop(uid), Start]
//!  Halted     runStrategy Always         409 not running              409 not running
//!  Manual,    stateChangeRequests        stateChangeRequests          stateChangeRequests
//!  RerunOn-   [Start]                    [Stop(uid)]                  [Stop(uid), Start]
//!  Failure
//!  Once       400 (no manual start)      runStrategy Halted           stateChangeRequests [Stop(uid), Start]
//! ```
//!
//! (`spec.running: true|false` is the old spelling of Always|Halted and is kept.) A change of
//! strategy is a spec write; a state change request is a status write the controller acts on.

use serde_json::{json, Value};

use ferrovirt_api::kubevirt::{RunStrategy, VirtualMachine};

use crate::error::{ApiError, ApiResult};
use crate::kinds;
use crate::request::Target;
use crate::rest::Objects;

/// Carry out a VM action through the API's own write path (admission, concurrency, watches).
pub async fn handle(objects: &Objects, ns: &str, name: &str, action: &str, opts: &Value) -> ApiResult<()> {
    let action = VmAction::parse(action, opts).map_err(ApiError::BadRequest)?;
    let vm_kind = kinds::find("kubevirt.io", "v1", "virtualmachines").expect("served");
    let vmi_kind = kinds::find("kubevirt.io", "v1", "virtualmachineinstances").expect("served");
    let target = |kind, sub: Option<&str>| Target {
        kind,
        namespace: Some(ns.to_string()),
        name: Some(name.to_string()),
        subresource: sub.map(str::to_string),
    };
    let current = objects.get(&target(vm_kind, None), name).await?;
    let vm: VirtualMachine = serde_json::from_value(current)
        .map_err(|e| ApiError::Internal(format!("stored VirtualMachine {ns}/{name} does not decode: {e}")))?;
    let vmi = match objects.get(&target(vmi_kind, None), name).await {
        Ok(vmi) if !crate::object::is_deleting(&vmi) => crate::object::uid(&vmi).map(|uid| Vmi {
            uid: uid.to_string(),
            finished: matches!(vmi.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")),
        }),
        Ok(_) | Err(ApiError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let dry_run = opts.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All"));
    let change = decide(&vm, vmi.as_ref(), action).map_err(|r| match r {
        Refusal::Conflict(m) => ApiError::Conflict(crate::rest::subject(vm_kind, name), m),
        Refusal::BadRequest(m) => ApiError::BadRequest(m),
    })?;
    match change {
        VmChange::Spec(patch) => {
            objects
                .guaranteed_update(&target(vm_kind, None), name, dry_run, |cur| {
                    let mut next = cur.clone();
                    if let (Some(spec), Some(p)) = (next.get_mut("spec").and_then(Value::as_object_mut), patch.as_object()) {
                        for (k, v) in p {
                            spec.insert(k.clone(), v.clone());
                        }
                    }
                    Ok(next)
                })
                .await?;
        }
        VmChange::StateChange(requests) => {
            objects
                .guaranteed_update(&target(vm_kind, Some("status")), name, dry_run, |cur| {
                    let mut next = cur.clone();
                    if !next.get("status").is_some_and(Value::is_object) {
                        next["status"] = json!({});
                    }
                    let list = next["status"].as_object_mut().expect("object").entry("stateChangeRequests").or_insert(json!([]));
                    if let Some(a) = list.as_array_mut() {
                        a.extend(requests.iter().cloned());
                    }
                    Ok(next)
                })
                .await?;
        }
    }
    Ok(())
}

/// What a subresource asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmAction {
    Start { paused: bool },
    Stop,
    Restart,
}

impl VmAction {
    pub fn parse(name: &str, body: &Value) -> Result<Self, String> {
        let known: &[&str] = match name {
            "start" => &["paused", "dryRun", "kind", "apiVersion"],
            "stop" | "restart" => &["gracePeriod", "dryRun", "kind", "apiVersion"],
            other => return Err(format!("unknown virtual machine action {other:?}")),
        };
        if let Some(m) = body.as_object() {
            if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(format!("{name} options: unknown field {k:?}"));
            }
            if m.get("paused").and_then(Value::as_bool) == Some(true) {
                return Err("start options: starting paused is not supported by ferrovirt yet".into());
            }
            if m.get("gracePeriod").is_some_and(|g| !g.is_null()) {
                return Err(format!(
                    "{name} options: gracePeriod is not supported by ferrovirt yet; the VMI's terminationGracePeriodSeconds applies"
                ));
            }
        }
        Ok(match name {
            "start" => VmAction::Start { paused: body.get("paused").and_then(Value::as_bool).unwrap_or(false) },
            "stop" => VmAction::Stop,
            _ => VmAction::Restart,
        })
    }
}

/// The write an action needs.
#[derive(Debug, Clone, PartialEq)]
pub enum VmChange {
    /// Merge this into `spec` (runStrategy or running).
    Spec(Value),
    /// Append these to `status.stateChangeRequests`.
    StateChange(Vec<Value>),
}

/// Why an action cannot be done now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 409: the VM is not in a state where this makes sense.
    Conflict(String),
    /// 400: the VM's strategy does not allow it.
    BadRequest(String),
}

/// The VM's current VMI, as far as the actions care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vmi {
    pub uid: String,
    /// It has ended (Succeeded or Failed) but still exists.
    pub finished: bool,
}

/// Decide the change for `action` on `vm`, given its current VMI (pure).
pub fn decide(vm: &VirtualMachine, vmi: Option<&Vmi>, action: VmAction) -> Result<VmChange, Refusal> {
    let running = vmi.filter(|v| !v.finished).map(|v| v.uid.as_str());
    let finished = vmi.filter(|v| v.finished).map(|v| v.uid.as_str());
    let vmi_uid = running;
    let legacy = vm.spec.running.is_some();
    let strategy = vm.run_strategy().unwrap_or(RunStrategy::Halted);
    let set = |s: RunStrategy| {
        VmChange::Spec(if legacy {
            json!({ "running": s == RunStrategy::Always })
        } else {
            json!({ "runStrategy": s })
        })
    };
    let pending = vm.status.as_ref().and_then(|s| s.state_change_requests.as_ref()).is_some_and(|r| !r.is_empty());
    let start = |paused: bool| {
        let mut r = json!({ "action": "Start" });
        if paused {
            r["data"] = json!({ "paused": "true" });
        }
        r
    };
    let stop = |uid: &str| json!({ "action": "Stop", "uid": uid });
    match (action, strategy) {
        (VmAction::Start { .. }, RunStrategy::Always) if vmi_uid.is_some() => Err(Refusal::Conflict("VM is already running".into())),
        (VmAction::Start { paused }, RunStrategy::Always) => Ok(VmChange::StateChange(vec![start(paused)])),
        (VmAction::Start { .. }, RunStrategy::Halted) => Ok(set(RunStrategy::Always)),
        (VmAction::Start { .. }, RunStrategy::Once) => {
            Err(Refusal::BadRequest("runStrategy Once does not support manual start requests".into()))
        }
        (VmAction::Start { paused }, RunStrategy::Manual | RunStrategy::RerunOnFailure) => {
            if vmi_uid.is_some() {
                return Err(Refusal::Conflict("VM is already running".into()));
            }
            if pending {
                return Err(Refusal::Conflict("another start or stop request is still being carried out".into()));
            }
            // An ended VMI (the guest shut itself down) is replaced: stop it, then start anew.
            match finished {
                Some(uid) => Ok(VmChange::StateChange(vec![stop(uid), start(paused)])),
                None => Ok(VmChange::StateChange(vec![start(paused)])),
            }
        }
        (VmAction::Stop, RunStrategy::Halted) => Err(Refusal::Conflict("VM is not running".into())),
        (VmAction::Stop, RunStrategy::Always | RunStrategy::Once) => Ok(set(RunStrategy::Halted)),
        (VmAction::Stop, RunStrategy::Manual | RunStrategy::RerunOnFailure) => match vmi_uid {
            None => Err(Refusal::Conflict("VM is not running".into())),
            Some(uid) => Ok(VmChange::StateChange(vec![stop(uid)])),
        },
        (VmAction::Restart, RunStrategy::Halted) => Err(Refusal::Conflict("VM is not running".into())),
        (VmAction::Restart, _) => match vmi_uid.or(finished) {
            None => Err(Refusal::Conflict("VM is not running".into())),
            Some(uid) => Ok(VmChange::StateChange(vec![stop(uid), start(false)])),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(strategy: Option<&str>, running: Option<bool>) -> VirtualMachine {
        let mut spec = json!({"template": {"spec": {"domain": {"devices": {}}}}});
        if let Some(s) = strategy {
            spec["runStrategy"] = json!(s);
        }
        if let Some(r) = running {
            spec["running"] = json!(r);
        }
        serde_json::from_value(json!({"metadata": {"name": "v"}, "spec": spec})).unwrap()
    }

    fn running() -> Vmi {
        Vmi { uid: "u".into(), finished: false }
    }

    #[test]
    fn a_finished_vmi_is_replaced_on_start() {
        let done = Vmi { uid: "old".into(), finished: true };
        for s in ["Manual", "RerunOnFailure"] {
            assert_eq!(
                decide(&vm(Some(s), None), Some(&done), VmAction::Start { paused: false }),
                Ok(VmChange::StateChange(vec![json!({"action": "Stop", "uid": "old"}), json!({"action": "Start"})]))
            );
            assert!(matches!(decide(&vm(Some(s), None), Some(&done), VmAction::Stop), Err(Refusal::Conflict(_))));
        }
    }

    #[test]
    fn virtctl_semantics() {
        use VmAction::*;
        let start = Start { paused: false };
        assert_eq!(decide(&vm(Some("Halted"), None), None, start), Ok(VmChange::Spec(json!({"runStrategy": "Always"}))));
        assert_eq!(decide(&vm(Some("Always"), None), Some(&running()), Stop), Ok(VmChange::Spec(json!({"runStrategy": "Halted"}))));
        assert!(matches!(decide(&vm(Some("Always"), None), Some(&running()), start), Err(Refusal::Conflict(_))));
        assert!(matches!(decide(&vm(Some("Halted"), None), None, Stop), Err(Refusal::Conflict(_))));
        assert!(matches!(decide(&vm(Some("Halted"), None), None, Restart), Err(Refusal::Conflict(_))));
        assert_eq!(
            decide(&vm(Some("Always"), None), Some(&running()), Restart),
            Ok(VmChange::StateChange(vec![json!({"action": "Stop", "uid": "u"}), json!({"action": "Start"})]))
        );
        for s in ["Manual", "RerunOnFailure"] {
            assert_eq!(decide(&vm(Some(s), None), None, start), Ok(VmChange::StateChange(vec![json!({"action": "Start"})])));
            assert_eq!(decide(&vm(Some(s), None), Some(&running()), Stop), Ok(VmChange::StateChange(vec![json!({"action": "Stop", "uid": "u"})])));
            assert!(matches!(decide(&vm(Some(s), None), None, Stop), Err(Refusal::Conflict(_))));
        }
        assert!(matches!(decide(&vm(Some("Once"), None), None, start), Err(Refusal::BadRequest(_))));
        assert_eq!(decide(&vm(Some("Once"), None), Some(&running()), Stop), Ok(VmChange::Spec(json!({"runStrategy": "Halted"}))));
    }

    #[test]
    fn the_old_running_field_is_kept() {
        assert_eq!(decide(&vm(None, Some(false)), None, VmAction::Start { paused: false }), Ok(VmChange::Spec(json!({"running": true}))));
        assert_eq!(decide(&vm(None, Some(true)), Some(&running()), VmAction::Stop), Ok(VmChange::Spec(json!({"running": false}))));
    }

    #[test]
    fn options_are_checked() {
        assert!(VmAction::parse("stop", &json!({"gracePeriod": 0})).is_err());
        assert!(VmAction::parse("start", &json!({"bogus": 1})).is_err());
        assert!(VmAction::parse("start", &json!({"paused": true})).is_err());
        assert_eq!(VmAction::parse("start", &json!({"paused": false})), Ok(VmAction::Start { paused: false }));
        assert!(VmAction::parse("migrate", &json!({})).is_err());
    }
}
