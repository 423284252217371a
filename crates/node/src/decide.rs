//! What the node agent does about one pod folder: a pure decision from the Pod (as the API server
//! has it, or `None` once it is gone) and what is on this node (the folder, the launcher process,
//! the launcher's `state.json`). The executor in [`crate::agent`] carries the actions out, in order,
//! each idempotent; the agent asks again every poll, so "wait" is simply "no action".
//!
//! ```text
//!  launcher Pod bound here
//!   ├─ no launcher ever started, no state ───────► WriteSpec, StartLauncher
//!   ├─ launcher alive ───────────────────────────► ReportStatus(state)
//!   ├─ final state (launcher exits by itself) ───► ReportStatus(final)
//!   ├─ launcher gone without a final state ──────► RecordFinalState(Failed), ReportStatus(Failed)
//!   └─ deletionTimestamp
//!       ├─ launcher alive ──► RequestStop{grace} ··· (grace + margin later) KillLauncher
//!       └─ launcher gone ───► ReportStatus(final), RemoveFolder, DeletePod (grace 0)
//!  no Pod, folder left over
//!       ├─ launcher alive ──► RequestStop{grace} ··· KillLauncher
//!       └─ launcher gone ───► RemoveFolder
//! ```
//!
//! Two launchers must never run one VM (two QEMUs writing one disk): a launcher is started only
//! when the folder has neither a `launcher.pid` nor a `state.json`.

use ferrovirt_launcher::spec::{LauncherPhase, LauncherState};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// Label (and value) that marks a launcher Pod.
pub const LAUNCHER_LABEL: (&str, &str) = ("kubevirt.io", "virt-launcher");
/// Annotation holding the name of the Pod's VMI.
pub const DOMAIN_ANNOTATION: &str = "kubevirt.io/domain";
/// Label holding the UID of the Pod's VMI.
pub const CREATED_BY_LABEL: &str = "kubevirt.io/created-by";
/// Grace period when neither the Pod nor the VMI names one.
pub const DEFAULT_GRACE_SECONDS: u64 = 30;
/// How long after the grace period a launcher that has not exited is killed. The launcher kills
/// QEMU itself when the grace period ends; this covers its own clean-up.
pub const KILL_MARGIN_SECONDS: u64 = 10;

/// The launcher process of a pod folder, as `launcher.pid` and `/proc` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LauncherProcess {
    /// No `launcher.pid`: no launcher was ever started for this folder.
    #[default]
    NeverStarted,
    /// `launcher.pid` names a live launcher of this folder.
    Alive { pid: u32 },
    /// `launcher.pid` names a process that is gone (or is no longer a launcher of this folder).
    Exited { pid: u32 },
}

/// What is on this node for one pod.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LocalState {
    pub dir_exists: bool,
    pub spec_written: bool,
    pub launcher: LauncherProcess,
    pub state: Option<LauncherState>,
    /// When the agent asked the launcher to stop (kept in the folder, so it survives a restart).
    pub stop_requested_at: Option<Timestamp>,
    /// The VMI's `terminationGracePeriodSeconds`, from `spec.json` (for folders without a Pod).
    pub grace_seconds: Option<u64>,
}

/// One step for the executor.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAction {
    /// Create the folder and write `spec.json` (the VMI, its Secrets, the Pod's limits).
    WriteSpec,
    /// Start the launcher, detached in its own session.
    StartLauncher,
    /// Write the Pod's and the VMI's status. `None`: the launcher runs but reported nothing yet.
    ReportStatus(Option<LauncherState>),
    /// The launcher is gone without saying how it ended: write this final state for it (and
    /// kill a QEMU it may have left behind).
    RecordFinalState(LauncherState),
    /// Ask the launcher to stop the guest (ACPI, then a kill after `grace_seconds`).
    RequestStop { grace_seconds: u64 },
    /// The launcher outlived its grace period: SIGKILL it.
    KillLauncher { pid: u32 },
    /// Remove the pod folder (killing a leftover QEMU of it first).
    RemoveFolder,
    /// Delete the Pod with grace period 0: the node is done with it.
    DeletePod,
}

/// Whether `pod` is a launcher Pod.
pub fn is_launcher_pod(pod: &Pod) -> bool {
    pod.metadata.labels.as_ref().and_then(|l| l.get(LAUNCHER_LABEL.0)).map(String::as_str) == Some(LAUNCHER_LABEL.1)
}

/// The grace period for stopping a deleted Pod's launcher.
pub fn pod_grace_seconds(pod: &Pod) -> u64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .map(|g| g.max(0) as u64)
        .unwrap_or(DEFAULT_GRACE_SECONDS)
}

/// The decision for one pod folder. Pure.
pub fn decide(pod: Option<&Pod>, local: &LocalState, now: Timestamp) -> Vec<NodeAction> {
    use NodeAction::*;
    let Some(pod) = pod else {
        // A folder that no Pod on this node owns any more.
        return match local.launcher {
            LauncherProcess::Alive { pid } => {
                stop_or_kill(local, pid, local.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS), now)
            }
            _ if local.dir_exists => vec![RemoveFolder],
            _ => vec![],
        };
    };
    if !is_launcher_pod(pod) {
        return vec![];
    }

    if pod.metadata.deletion_timestamp.is_some() {
        return match local.launcher {
            LauncherProcess::Alive { pid } => {
                let mut actions = stop_or_kill(local, pid, pod_grace_seconds(pod), now);
                if let Some(state) = &local.state {
                    actions.insert(0, ReportStatus(Some(state.clone())));
                }
                actions
            }
            LauncherProcess::Exited { .. } | LauncherProcess::NeverStarted => {
                let mut actions = Vec::new();
                if let Some(state) = &local.state {
                    let last = if state.phase.is_final() {
                        state.clone()
                    } else if local.stop_requested_at.is_some() {
                        ended(state, LauncherPhase::Succeeded, "StopRequested", "the guest was stopped because its pod was deleted", now)
                    } else {
                        exited_without_final_state(state, now)
                    };
                    actions.push(ReportStatus(Some(last)));
                }
                if local.dir_exists {
                    actions.push(RemoveFolder);
                }
                actions.push(DeletePod);
                actions
            }
        };
    }

    let pod_terminal = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    if pod_terminal {
        // Reported already; the folder stays (logs) until the Pod is deleted.
        return vec![];
    }

    match (local.launcher, &local.state) {
        (LauncherProcess::Alive { .. }, state) => vec![ReportStatus(state.clone())],
        (_, Some(state)) if state.phase.is_final() => vec![ReportStatus(Some(state.clone()))],
        (LauncherProcess::Exited { .. }, Some(state)) => {
            let failed = exited_without_final_state(state, now);
            vec![RecordFinalState(failed.clone()), ReportStatus(Some(failed))]
        }
        (LauncherProcess::Exited { pid }, None) => {
            let failed = LauncherState {
                phase: LauncherPhase::Failed,
                reason: "LauncherExited".into(),
                message: format!("the launcher (pid {pid}) exited before it reported any state; see launcher.log"),
                qemu_pid: None,
                kvm: false,
                since: now.to_string(),
                mac: None,
                ip: None,
            };
            vec![RecordFinalState(failed.clone()), ReportStatus(Some(failed))]
        }
        (LauncherProcess::NeverStarted, Some(state)) => {
            // A state without a pid file: a launcher may still run somewhere we cannot see.
            // Starting another one could run the VM twice, so the VM is failed instead.
            let failed = ended(
                state,
                LauncherPhase::Failed,
                "LauncherLost",
                "state.json exists but launcher.pid does not; the launcher cannot be found",
                now,
            );
            vec![RecordFinalState(failed.clone()), ReportStatus(Some(failed))]
        }
        (LauncherProcess::NeverStarted, None) if local.spec_written => vec![StartLauncher],
        (LauncherProcess::NeverStarted, None) => vec![WriteSpec, StartLauncher],
    }
}

fn stop_or_kill(local: &LocalState, pid: u32, grace_seconds: u64, now: Timestamp) -> Vec<NodeAction> {
    match local.stop_requested_at {
        None => vec![NodeAction::RequestStop { grace_seconds }],
        Some(at) if now.as_second() >= at.as_second() + (grace_seconds + KILL_MARGIN_SECONDS) as i64 => {
            vec![NodeAction::KillLauncher { pid }]
        }
        Some(_) => vec![],
    }
}

fn exited_without_final_state(state: &LauncherState, now: Timestamp) -> LauncherState {
    ended(
        state,
        LauncherPhase::Failed,
        "LauncherExited",
        &format!("the launcher exited while the VM was {:?}; see launcher.log", state.phase),
        now,
    )
}

fn ended(state: &LauncherState, phase: LauncherPhase, reason: &str, message: &str, now: Timestamp) -> LauncherState {
    LauncherState {
        phase,
        reason: reason.into(),
        message: message.into(),
        since: now.to_string(),
        ..state.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().unwrap()
    }

    fn pod(launcher: bool, deleting: bool, phase: Option<&str>) -> Pod {
        let mut labels = json!({});
        if launcher {
            labels["kubevirt.io"] = json!("virt-launcher");
        }
        let mut p = json!({
            "metadata": {"name": "virt-launcher-a-x", "namespace": "ns", "uid": "u1", "labels": labels},
            "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 20, "containers": [{"name": "compute"}]},
        });
        if deleting {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:09:00Z");
            p["metadata"]["deletionGracePeriodSeconds"] = json!(5);
        }
        if let Some(phase) = phase {
            p["status"] = json!({"phase": phase});
        }
        serde_json::from_value(p).unwrap()
    }

    fn state(phase: LauncherPhase) -> LauncherState {
        LauncherState {
            phase,
            reason: "r".into(),
            message: "m".into(),
            qemu_pid: Some(7),
            kvm: false,
            since: "2026-01-01T00:00:00Z".into(),
            mac: None,
            ip: None,
        }
    }

    const PHASES: [LauncherPhase; 6] = [
        LauncherPhase::Preparing,
        LauncherPhase::Running,
        LauncherPhase::Paused,
        LauncherPhase::Stopping,
        LauncherPhase::Succeeded,
        LauncherPhase::Failed,
    ];

    /// Every combination of what the agent can see.
    fn all_locals() -> Vec<LocalState> {
        let mut out = Vec::new();
        let stops: [Option<Timestamp>; 3] =
            [None, Some("2026-01-01T00:09:58Z".parse().unwrap()), Some("2026-01-01T00:00:00Z".parse().unwrap())];
        let states = std::iter::once(None).chain(PHASES.iter().map(|p| Some(state(*p))));
        for st in states {
            for launcher in [LauncherProcess::NeverStarted, LauncherProcess::Alive { pid: 42 }, LauncherProcess::Exited { pid: 42 }] {
                for stop in stops {
                    for (dir_exists, spec_written) in [(false, false), (true, false), (true, true)] {
                        if !dir_exists && (launcher != LauncherProcess::NeverStarted || st.is_some() || stop.is_some()) {
                            continue;
                        }
                        out.push(LocalState {
                            dir_exists,
                            spec_written,
                            launcher,
                            state: st.clone(),
                            stop_requested_at: stop,
                            grace_seconds: Some(3),
                        });
                    }
                }
            }
        }
        out
    }

    fn all_pods() -> Vec<Option<Pod>> {
        let mut pods = vec![None];
        for launcher in [true, false] {
            for deleting in [true, false] {
                for phase in [None, Some("Pending"), Some("Running"), Some("Succeeded"), Some("Failed")] {
                    pods.push(Some(pod(launcher, deleting, phase)));
                }
            }
        }
        pods
    }

    #[test]
    fn invariants_hold_for_every_combination() {
        for p in all_pods() {
            for l in all_locals() {
                let actions = decide(p.as_ref(), &l, now());
                let ctx = format!("pod {:?} local {l:?} -> {actions:?}", p.as_ref().map(|p| (&p.metadata, &p.status)));
                let has = |f: &dyn Fn(&NodeAction) -> bool| actions.iter().any(f);
                let pos = |f: &dyn Fn(&NodeAction) -> bool| actions.iter().position(f);
                let alive = matches!(l.launcher, LauncherProcess::Alive { .. });

                // Never a second launcher, never a launcher over an existing state.
                if has(&|a| *a == NodeAction::StartLauncher) {
                    assert_eq!(l.launcher, LauncherProcess::NeverStarted, "{ctx}");
                    assert!(l.state.is_none(), "{ctx}");
                    let p = p.as_ref().expect("a pod");
                    assert!(is_launcher_pod(p) && p.metadata.deletion_timestamp.is_none(), "{ctx}");
                    assert_eq!(has(&|a| *a == NodeAction::WriteSpec), !l.spec_written, "{ctx}");
                }
                // The folder of a live launcher stays; the Pod goes only after its folder.
                if has(&|a| *a == NodeAction::RemoveFolder) {
                    assert!(!alive && l.dir_exists, "{ctx}");
                }
                if has(&|a| *a == NodeAction::DeletePod) {
                    let p = p.as_ref().expect("a pod");
                    assert!(p.metadata.deletion_timestamp.is_some() && !alive, "{ctx}");
                    assert_eq!(pos(&|a| *a == NodeAction::DeletePod), Some(actions.len() - 1), "{ctx}");
                    assert_eq!(has(&|a| *a == NodeAction::RemoveFolder), l.dir_exists, "{ctx}");
                }
                // Stops and kills only for a live launcher that should no longer run, kills only
                // after the grace period, and never both at once.
                let stop = has(&|a| matches!(a, NodeAction::RequestStop { .. }));
                let kill = has(&|a| matches!(a, NodeAction::KillLauncher { .. }));
                if stop || kill {
                    assert!(alive, "{ctx}");
                    assert!(p.as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some()), "{ctx}");
                    assert!(!(stop && kill), "{ctx}");
                }
                if stop {
                    assert!(l.stop_requested_at.is_none(), "{ctx}");
                }
                if kill {
                    let at = l.stop_requested_at.expect("asked first");
                    assert!(now().as_second() - at.as_second() >= KILL_MARGIN_SECONDS as i64, "{ctx}");
                    assert!(has(&|a| *a == NodeAction::KillLauncher { pid: 42 }), "{ctx}");
                }
                // Nothing at all for Pods that are not launchers.
                if p.as_ref().is_some_and(|p| !is_launcher_pod(p)) {
                    assert!(actions.is_empty(), "{ctx}");
                }
                // Folders without a Pod are only stopped and removed.
                if p.is_none() {
                    assert!(actions.iter().all(|a| matches!(
                        a,
                        NodeAction::RequestStop { .. } | NodeAction::KillLauncher { .. } | NodeAction::RemoveFolder
                    )), "{ctx}");
                }
                // A reported or recorded state never goes from final to not final.
                for a in &actions {
                    if let NodeAction::ReportStatus(Some(s)) | NodeAction::RecordFinalState(s) = a {
                        if l.state.as_ref().is_some_and(|old| old.phase.is_final()) {
                            assert_eq!(Some(s), l.state.as_ref(), "{ctx}");
                        }
                    }
                    if let NodeAction::RecordFinalState(s) = a {
                        assert!(s.phase.is_final() && !alive, "{ctx}");
                        assert!(l.state.as_ref().is_none_or(|old| !old.phase.is_final()), "{ctx}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_new_pod_gets_a_spec_and_a_launcher() {
        let p = pod(true, false, Some("Pending"));
        assert_eq!(decide(Some(&p), &LocalState::default(), now()), [NodeAction::WriteSpec, NodeAction::StartLauncher]);
        let written = LocalState { dir_exists: true, spec_written: true, ..Default::default() };
        assert_eq!(decide(Some(&p), &written, now()), [NodeAction::StartLauncher]);
    }

    #[test]
    fn a_running_launcher_is_adopted_not_restarted() {
        let p = pod(true, false, Some("Running"));
        let local = LocalState {
            dir_exists: true,
            spec_written: true,
            launcher: LauncherProcess::Alive { pid: 42 },
            state: Some(state(LauncherPhase::Running)),
            ..Default::default()
        };
        assert_eq!(decide(Some(&p), &local, now()), [NodeAction::ReportStatus(Some(state(LauncherPhase::Running)))]);
        let starting = LocalState { state: None, ..local };
        assert_eq!(decide(Some(&p), &starting, now()), [NodeAction::ReportStatus(None)]);
    }

    #[test]
    fn a_launcher_that_dies_fails_the_vm() {
        let p = pod(true, false, Some("Running"));
        let local = LocalState {
            dir_exists: true,
            spec_written: true,
            launcher: LauncherProcess::Exited { pid: 42 },
            state: Some(state(LauncherPhase::Running)),
            ..Default::default()
        };
        let actions = decide(Some(&p), &local, now());
        let [NodeAction::RecordFinalState(s), NodeAction::ReportStatus(Some(r))] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!((s.phase, s.reason.as_str()), (LauncherPhase::Failed, "LauncherExited"));
        assert_eq!(s, r);
        assert_eq!(s.qemu_pid, Some(7), "the QEMU to clean up is remembered");
    }

    #[test]
    fn a_final_state_is_reported_once_and_then_left_alone() {
        let local = LocalState {
            dir_exists: true,
            spec_written: true,
            launcher: LauncherProcess::Exited { pid: 42 },
            state: Some(state(LauncherPhase::Succeeded)),
            ..Default::default()
        };
        let running = pod(true, false, Some("Running"));
        assert_eq!(decide(Some(&running), &local, now()), [NodeAction::ReportStatus(Some(state(LauncherPhase::Succeeded)))]);
        let done = pod(true, false, Some("Succeeded"));
        assert!(decide(Some(&done), &local, now()).is_empty());
    }

    #[test]
    fn a_deleted_pod_is_stopped_then_killed_then_cleaned_up() {
        let p = pod(true, true, Some("Running"));
        let mut local = LocalState {
            dir_exists: true,
            spec_written: true,
            launcher: LauncherProcess::Alive { pid: 42 },
            state: Some(state(LauncherPhase::Running)),
            ..Default::default()
        };
        let running = NodeAction::ReportStatus(Some(state(LauncherPhase::Running)));
        assert_eq!(decide(Some(&p), &local, now()), [running.clone(), NodeAction::RequestStop { grace_seconds: 5 }]);
        // Within grace + margin (5 + 10 s): wait.
        local.stop_requested_at = Some("2026-01-01T00:09:46Z".parse().unwrap());
        assert_eq!(decide(Some(&p), &local, now()), std::slice::from_ref(&running));
        local.stop_requested_at = Some("2026-01-01T00:09:45Z".parse().unwrap());
        assert_eq!(decide(Some(&p), &local, now()), [running, NodeAction::KillLauncher { pid: 42 }]);
        // Gone after the stop: the VM ended because it was asked to.
        local.launcher = LauncherProcess::Exited { pid: 42 };
        let actions = decide(Some(&p), &local, now());
        let [NodeAction::ReportStatus(Some(s)), NodeAction::RemoveFolder, NodeAction::DeletePod] = actions.as_slice() else {
            panic!("{actions:?}")
        };
        assert_eq!((s.phase, s.reason.as_str()), (LauncherPhase::Succeeded, "StopRequested"));
        // A Pod deleted before anything ran here.
        assert_eq!(decide(Some(&p), &LocalState::default(), now()), [NodeAction::DeletePod]);
    }

    #[test]
    fn leftover_folders_are_stopped_and_removed() {
        let mut local = LocalState {
            dir_exists: true,
            launcher: LauncherProcess::Alive { pid: 42 },
            grace_seconds: Some(3),
            ..Default::default()
        };
        assert_eq!(decide(None, &local, now()), [NodeAction::RequestStop { grace_seconds: 3 }]);
        local.launcher = LauncherProcess::Exited { pid: 42 };
        assert_eq!(decide(None, &local, now()), [NodeAction::RemoveFolder]);
        assert!(decide(None, &LocalState::default(), now()).is_empty());
    }

    #[test]
    fn grace_comes_from_the_deletion_then_the_pod_spec() {
        assert_eq!(pod_grace_seconds(&pod(true, true, None)), 5);
        assert_eq!(pod_grace_seconds(&pod(true, false, None)), 20);
        assert_eq!(pod_grace_seconds(&Pod::default()), DEFAULT_GRACE_SECONDS);
    }
}
