//! `--wait`: watch a VM and its instance until they reach a goal, showing their state as it
//! changes (a spinner on a terminal, one line per change otherwise), or give up at the timeout.
//!
//! ```text
//!   watch VM  (fieldSelector metadata.name=N) ──┐
//!                                               ├─▶ (vm, vmi) ─▶ check(goal) ─▶ Done | Pending(state) | Failed
//!   watch VMI (fieldSelector metadata.name=N) ──┘                     │
//!                                                        reporter: spinner / lines
//! ```
//!
//! [`check`] and [`state_text`] are pure; [`wait_for`] runs the watches.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::api::{ListQuery, Rest};
use crate::duration::format_duration;
use crate::errors::{Error, Result};
use crate::resources::{self, ResourceKind};

/// What a wait waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    /// The VM says Running and its instance runs.
    Running,
    /// The VM has no running instance and says Stopped.
    Stopped,
    /// An instance other than `old_uid` runs.
    Restarted { old_uid: Option<String> },
    /// The instance has the Paused condition.
    Paused,
    /// The instance runs without the Paused condition.
    Unpaused,
}

impl Goal {
    /// `Running`, `Stopped`, ... as messages say it.
    pub fn describe(&self) -> &'static str {
        match self {
            Goal::Running => "Running",
            Goal::Stopped => "Stopped",
            Goal::Restarted { .. } => "running again",
            Goal::Paused => "Paused",
            Goal::Unpaused => "running unpaused",
        }
    }
}

/// The result of checking a goal against what is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Done,
    Pending,
    /// The goal cannot be reached any more (the VM was deleted).
    Failed(String),
}

fn printable(vm: &Value) -> &str {
    vm.pointer("/status/printableStatus")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn phase(vmi: &Value) -> &str {
    vmi.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn condition<'a>(obj: &'a Value, ty: &str) -> Option<&'a str> {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        .and_then(|c| c.get("status").and_then(Value::as_str))
}

fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

fn uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/uid").and_then(Value::as_str)
}

/// Whether the goal is reached. `vm_expected`: the goal is about a VM (not a bare VMI).
pub fn check(goal: &Goal, vm_expected: bool, vm: Option<&Value>, vmi: Option<&Value>) -> Check {
    if vm_expected && vm.is_none() {
        return Check::Failed("the VirtualMachine was deleted".into());
    }
    let running = |i: &Value| phase(i) == "Running" && !is_deleting(i);
    let paused = |i: &Value| condition(i, "Paused") == Some("True");
    let done = match goal {
        Goal::Running => vmi.is_some_and(running) && vm.is_none_or(|v| printable(v) == "Running"),
        Goal::Stopped => {
            let vmi_done = vmi.is_none_or(|i| matches!(phase(i), "Succeeded" | "Failed"));
            vmi_done && vm.is_none_or(|v| matches!(printable(v), "Stopped" | ""))
        }
        Goal::Restarted { old_uid } => {
            vmi.is_some_and(|i| running(i) && uid(i) != old_uid.as_deref())
                && vm.is_none_or(|v| printable(v) == "Running")
        }
        Goal::Paused => vmi.is_some_and(paused),
        Goal::Unpaused => {
            vmi.is_some_and(|i| running(i) && !paused(i))
                && vm.is_none_or(|v| printable(v) != "Paused")
        }
    };
    if done {
        return Check::Done;
    }
    if !vm_expected && vmi.is_none() && matches!(goal, Goal::Paused | Goal::Unpaused) {
        return Check::Failed("the VirtualMachineInstance is gone".into());
    }
    Check::Pending
}

/// How the VM and its instance are doing, in a few words: `Starting (instance Scheduled)`,
/// `Running (instance Running, paused)`, `Stopped (no instance)`.
pub fn state_text(vm: Option<&Value>, vmi: Option<&Value>) -> String {
    let mut parts = Vec::new();
    if let Some(vm) = vm {
        let p = printable(vm);
        parts.push(if p.is_empty() {
            "no status yet".to_string()
        } else {
            p.to_string()
        });
    }
    let instance = match vmi {
        None => "no instance".to_string(),
        Some(i) => {
            let mut t = format!(
                "instance {}",
                if phase(i).is_empty() {
                    "Pending"
                } else {
                    phase(i)
                }
            );
            if condition(i, "Paused") == Some("True") {
                t.push_str(", paused");
            }
            if is_deleting(i) {
                t.push_str(", shutting down");
            }
            t
        }
    };
    if parts.is_empty() {
        instance
    } else {
        format!("{} ({instance})", parts.join(""))
    }
}

/// Shows the state as it changes: a spinner on a terminal (stderr), lines otherwise.
pub struct Reporter {
    name: String,
    spinner: Option<indicatif::ProgressBar>,
    last: String,
}

impl Reporter {
    /// A spinner if stderr is a terminal, plain lines otherwise.
    pub fn new(name: &str) -> Reporter {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let pb = indicatif::ProgressBar::new_spinner();
            let style =
                indicatif::ProgressStyle::with_template("{spinner:.cyan} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            pb.set_style(style);
            pb.enable_steady_tick(Duration::from_millis(100));
            pb
        });
        Reporter {
            name: name.to_string(),
            spinner,
            last: String::new(),
        }
    }

    /// Shows `state` if it is new.
    pub fn update(&mut self, state: &str) {
        if state == self.last {
            return;
        }
        self.last = state.to_string();
        match &self.spinner {
            Some(pb) => pb.set_message(format!("{}: {state}", self.name)),
            None => eprintln!("{}: {state}", self.name),
        }
    }

    /// Removes the spinner.
    pub fn finish(&self) {
        if let Some(pb) = &self.spinner {
            pb.finish_and_clear();
        }
    }
}

/// What a watch task saw.
enum Seen {
    Vm(Option<Value>),
    Vmi(Option<Value>),
}

/// Watches `kind`/`name` and sends every state (None when it does not exist), forever.
async fn watch_one(
    rest: Rest,
    kind: &'static ResourceKind,
    ns: String,
    name: String,
    tx: mpsc::Sender<Seen>,
    is_vm: bool,
) {
    let wrap = |v: Option<Value>| if is_vm { Seen::Vm(v) } else { Seen::Vmi(v) };
    let field = format!("metadata.name={name}");
    loop {
        // List (the current state and a resourceVersion), then watch from there.
        let query = ListQuery {
            field_selector: Some(field.clone()),
            ..Default::default()
        };
        let list = match rest.list(kind, Some(&ns), &query).await {
            Ok(l) => l,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let current = list
            .get("items")
            .and_then(Value::as_array)
            .and_then(|a| a.first().cloned());
        if tx.send(wrap(current)).await.is_err() {
            return;
        }
        let mut rv = list
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
        loop {
            let q = ListQuery {
                field_selector: Some(field.clone()),
                resource_version: rv.clone(),
                timeout_seconds: Some(240),
                ..Default::default()
            };
            let Ok(mut events) = rest.watch(kind, Some(&ns), &q, false).await else {
                break;
            };
            let mut relist = false;
            while let Some(event) = events.next().await {
                let Ok(event) = event else { break };
                let ty = event.get("type").and_then(Value::as_str).unwrap_or("");
                let obj = event.get("object").cloned().unwrap_or(Value::Null);
                if let Some(v) = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                {
                    rv = Some(v.to_string());
                }
                let seen = match ty {
                    "ADDED" | "MODIFIED" => Some(obj),
                    "DELETED" => None,
                    "ERROR" => {
                        relist = true;
                        break;
                    }
                    _ => continue,
                };
                if tx.send(wrap(seen)).await.is_err() {
                    return;
                }
            }
            if relist {
                break;
            }
        }
    }
}

/// Waits until the VM `name` (or, with `vm_expected` false, the instance `name`) reaches `goal`,
/// for at most `timeout`. Returns the last state seen.
pub async fn wait_for(
    rest: &Rest,
    ns: &str,
    name: &str,
    goal: &Goal,
    vm_expected: bool,
    timeout: Duration,
) -> Result<String> {
    let vm_kind = resources::find("vm").expect("known kind");
    let vmi_kind = resources::find("vmi").expect("known kind");
    let (tx, mut rx) = mpsc::channel(64);
    let mut tasks = vec![tokio::spawn(watch_one(
        rest.clone(),
        vmi_kind,
        ns.to_string(),
        name.to_string(),
        tx.clone(),
        false,
    ))];
    if vm_expected {
        tasks.push(tokio::spawn(watch_one(
            rest.clone(),
            vm_kind,
            ns.to_string(),
            name.to_string(),
            tx,
            true,
        )));
    } else {
        drop(tx);
    }
    let what = if vm_expected { "VM" } else { "VMI" };
    let mut reporter = Reporter::new(&format!("{what} {name}"));
    let deadline = Instant::now() + timeout;
    let (mut vm, mut vmi): (Option<Value>, Option<Value>) = (None, None);
    let (mut have_vm, mut have_vmi) = (!vm_expected, false);
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(s)) => s,
            Ok(None) => break Err(Error::Failed(format!("lost the watch on {what} {name}"))),
            Err(_) => {
                let state = state_text(vm.as_ref(), vmi.as_ref());
                break Err(Error::Timeout(format!(
                    "timed out after {} waiting for {what} {name:?} to be {}; last seen: {state}",
                    format_duration(timeout),
                    goal.describe()
                )));
            }
        };
        match seen {
            Seen::Vm(v) => {
                vm = v;
                have_vm = true;
            }
            Seen::Vmi(v) => {
                vmi = v;
                have_vmi = true;
            }
        }
        if !(have_vm && have_vmi) {
            continue;
        }
        let state = state_text(vm.as_ref(), vmi.as_ref());
        reporter.update(&state);
        match check(goal, vm_expected, vm.as_ref(), vmi.as_ref()) {
            Check::Done => break Ok(state),
            Check::Pending => {}
            Check::Failed(why) => {
                break Err(Error::Failed(format!(
                    "{what} {name:?} cannot become {}: {why}",
                    goal.describe()
                )))
            }
        }
    };
    reporter.finish();
    for t in tasks {
        t.abort();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(status: &str) -> Value {
        json!({"metadata": {"name": "vm1"}, "status": {"printableStatus": status}})
    }

    fn vmi(uid: &str, phase: &str, paused: bool) -> Value {
        let mut v = json!({"metadata": {"name": "vm1", "uid": uid}, "status": {"phase": phase, "conditions": []}});
        if paused {
            v["status"]["conditions"] = json!([{"type": "Paused", "status": "True"}]);
        }
        v
    }

    #[test]
    fn running_needs_both_to_say_so() {
        let g = Goal::Running;
        assert_eq!(
            check(
                &g,
                true,
                Some(&vm("Starting")),
                Some(&vmi("a", "Scheduled", false))
            ),
            Check::Pending
        );
        assert_eq!(
            check(
                &g,
                true,
                Some(&vm("Starting")),
                Some(&vmi("a", "Running", false))
            ),
            Check::Pending
        );
        assert_eq!(
            check(
                &g,
                true,
                Some(&vm("Running")),
                Some(&vmi("a", "Running", false))
            ),
            Check::Done
        );
        assert_eq!(check(&g, true, Some(&vm("Stopped")), None), Check::Pending);
        assert!(matches!(check(&g, true, None, None), Check::Failed(_)));
    }

    #[test]
    fn stopped_means_no_live_instance() {
        let g = Goal::Stopped;
        assert_eq!(
            check(
                &g,
                true,
                Some(&vm("Stopping")),
                Some(&vmi("a", "Running", false))
            ),
            Check::Pending
        );
        assert_eq!(
            check(
                &g,
                true,
                Some(&vm("Stopped")),
                Some(&vmi("a", "Succeeded", false))
            ),
            Check::Done
        );
        assert_eq!(check(&g, true, Some(&vm("Stopped")), None), Check::Done);
        assert_eq!(check(&g, true, Some(&vm("Stopping")), None), Check::Pending);
    }

    #[test]
    fn restarted_needs_a_new_instance() {
        let g = Goal::Restarted {
            old_uid: Some("a".into()),
        };
        assert_eq!(
            check(
                &g,
                true,
                Some(&vm("Running")),
                Some(&vmi("a", "Running", false))
            ),
            Check::Pending
        );
        assert_eq!(
            check(
                &g,
                true,
                Some(&vm("Starting")),
                Some(&vmi("b", "Scheduling", false))
            ),
            Check::Pending
        );
        assert_eq!(
            check(
                &g,
                true,
                Some(&vm("Starting")),
                Some(&vmi("b", "Running", false))
            ),
            Check::Pending
        );
        assert_eq!(
            check(
                &g,
                true,
                Some(&vm("Running")),
                Some(&vmi("b", "Running", false))
            ),
            Check::Done
        );
    }

    #[test]
    fn pause_and_unpause_follow_the_condition() {
        assert_eq!(
            check(
                &Goal::Paused,
                true,
                Some(&vm("Running")),
                Some(&vmi("a", "Running", false))
            ),
            Check::Pending
        );
        assert_eq!(
            check(
                &Goal::Paused,
                true,
                Some(&vm("Paused")),
                Some(&vmi("a", "Running", true))
            ),
            Check::Done
        );
        assert_eq!(
            check(
                &Goal::Unpaused,
                true,
                Some(&vm("Paused")),
                Some(&vmi("a", "Running", true))
            ),
            Check::Pending
        );
        assert_eq!(
            check(
                &Goal::Unpaused,
                false,
                None,
                Some(&vmi("a", "Running", false))
            ),
            Check::Done
        );
        assert_eq!(
            check(
                &Goal::Unpaused,
                true,
                Some(&vm("Paused")),
                Some(&vmi("a", "Running", false))
            ),
            Check::Pending
        );
        assert_eq!(
            check(
                &Goal::Unpaused,
                true,
                Some(&vm("Running")),
                Some(&vmi("a", "Running", false))
            ),
            Check::Done
        );
        assert!(matches!(
            check(&Goal::Paused, false, None, None),
            Check::Failed(_)
        ));
    }

    #[test]
    fn states_read_well() {
        assert_eq!(
            state_text(Some(&vm("Starting")), Some(&vmi("a", "Scheduled", false))),
            "Starting (instance Scheduled)"
        );
        assert_eq!(
            state_text(Some(&vm("Paused")), Some(&vmi("a", "Running", true))),
            "Paused (instance Running, paused)"
        );
        assert_eq!(
            state_text(Some(&json!({"metadata": {}})), None),
            "no status yet (no instance)"
        );
        assert_eq!(
            state_text(None, Some(&vmi("a", "", false))),
            "instance Pending"
        );
    }
}
