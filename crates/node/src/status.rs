//! What the Pod's and the VMI's status say, given what the launcher reports. Pure: each builder
//! takes the current status and returns the new one, or `None` when nothing would change.
//!
//! ```text
//!  launcher phase   Pod phase / Ready     VMI phase   VMI conditions
//!  (started, none)  Running   / False     (as is)
//!  Preparing        Running   / False     (as is)     Ready=False(Preparing)
//!  Running          Running   / True      Running     Ready=True
//!  Paused           Running   / True      Running     Ready=False(Paused), Paused=True
//!  Stopping         Running   / False     Running     Ready=False(Stopping)
//!  Succeeded        Succeeded / False     Succeeded   Ready=False(<reason>)
//!  Failed           Failed    / False     Failed      Ready=False(<reason>), status.reason
//!  kvm = false                                        SoftwareEmulation=True
//! ```
//!
//! A VMI never moves backwards: once Succeeded or Failed its status is left alone, and so is a
//! Pod's once it is Succeeded or Failed.

use ferrovirt_api::kubevirt::{
    vmi_condition, Condition, ConditionStatus, PhaseTransitionTimestamp, VirtualMachineInstancePhase as Phase,
    VirtualMachineInstanceNetworkInterface, VirtualMachineInstanceSpec, VirtualMachineInstanceStatus,
};
use ferrovirt_launcher::spec::{LauncherPhase, LauncherState};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus, HostIP, PodCondition, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};

/// The name of the launcher Pod's one container.
pub const COMPUTE_CONTAINER: &str = "compute";
/// Reason of the `SoftwareEmulation` condition.
pub const SOFTWARE_EMULATION_REASON: &str = "SoftwareEmulation";
/// Where the VMI's interface addresses come from (QEMU's own view of the NIC).
pub const INFO_SOURCE_DOMAIN: &str = "domain";

/// The VMI phase a launcher phase stands for; `None` leaves the phase as it is.
pub fn vmi_phase(phase: LauncherPhase) -> Option<Phase> {
    match phase {
        LauncherPhase::Preparing => None,
        LauncherPhase::Running | LauncherPhase::Paused | LauncherPhase::Stopping => Some(Phase::Running),
        LauncherPhase::Succeeded => Some(Phase::Succeeded),
        LauncherPhase::Failed => Some(Phase::Failed),
    }
}

/// The name of the VMI's (first) interface, as its status should carry it.
pub fn interface_name(spec: &VirtualMachineInstanceSpec) -> String {
    spec.domain
        .devices
        .interfaces
        .as_deref()
        .and_then(|i| i.first())
        .map(|i| i.name.clone())
        .or_else(|| spec.networks().first().map(|n| n.name.clone()))
        .unwrap_or_else(|| "default".into())
}

/// The VMI status after the launcher reported `state`, or `None` if nothing changes.
pub fn vmi_status(
    current: &VirtualMachineInstanceStatus,
    spec: &VirtualMachineInstanceSpec,
    state: &LauncherState,
    node_name: &str,
    launcher_image: Option<&str>,
    now: Timestamp,
) -> Option<VirtualMachineInstanceStatus> {
    if current.phase.is_some_and(Phase::is_final) {
        return None;
    }
    let mut next = current.clone();
    next.node_name = Some(node_name.to_string());
    if let Some(image) = launcher_image {
        next.launcher_container_image_version = Some(image.to_string());
    }
    if let Some(phase) = vmi_phase(state.phase) {
        if current.phase != Some(phase) {
            next.phase = Some(phase);
            next.phase_transition_timestamps.get_or_insert_with(Vec::new).push(PhaseTransitionTimestamp {
                phase,
                phase_transition_timestamp: Time(now),
            });
        }
    }
    if state.phase == LauncherPhase::Failed {
        next.reason = Some(state.reason.clone());
    }

    let mut conditions = next.conditions.take().unwrap_or_default();
    let (ready, reason, message) = match state.phase {
        LauncherPhase::Running => (true, None, None),
        LauncherPhase::Preparing => (false, Some("Preparing"), Some("the launcher is preparing disks and starting QEMU")),
        LauncherPhase::Paused => (false, Some("Paused"), Some("the VM is paused")),
        LauncherPhase::Stopping => (false, Some("Stopping"), Some("the VM is shutting down")),
        LauncherPhase::Succeeded | LauncherPhase::Failed => (false, Some(state.reason.as_str()), Some(state.message.as_str())),
    };
    upsert(&mut conditions, vmi_condition::READY, ready, reason, message, now);
    if state.phase == LauncherPhase::Paused {
        upsert(&mut conditions, vmi_condition::PAUSED, true, Some("PausedByUser"), Some("the VM was paused"), now);
    } else {
        conditions.retain(|c| c.type_ != vmi_condition::PAUSED);
    }
    if state.kvm {
        conditions.retain(|c| c.type_ != vmi_condition::SOFTWARE_EMULATION);
    } else {
        upsert(
            &mut conditions,
            vmi_condition::SOFTWARE_EMULATION,
            true,
            Some(SOFTWARE_EMULATION_REASON),
            Some("QEMU runs this VM without hardware acceleration (TCG): KVM is not usable on this node"),
            now,
        );
    }
    next.conditions = Some(conditions);

    if state.ip.is_some() || state.mac.is_some() {
        let name = interface_name(spec);
        let mut interfaces = next.interfaces.take().unwrap_or_default();
        let iface = match interfaces.iter_mut().position(|i| i.name.as_deref() == Some(name.as_str())) {
            Some(at) => &mut interfaces[at],
            None => {
                interfaces.push(VirtualMachineInstanceNetworkInterface { name: Some(name), ..Default::default() });
                interfaces.last_mut().expect("just pushed")
            }
        };
        iface.ip_address = state.ip.clone();
        iface.ip_addresses = state.ip.clone().map(|ip| vec![ip]);
        iface.mac = state.mac.clone();
        iface.info_source = Some(INFO_SOURCE_DOMAIN.into());
        next.interfaces = Some(interfaces);
    }

    (next != *current).then_some(next)
}

fn upsert(conditions: &mut Vec<Condition>, type_: &str, status: bool, reason: Option<&str>, message: Option<&str>, now: Timestamp) {
    let status = if status { ConditionStatus::True } else { ConditionStatus::False };
    let reason = reason.map(str::to_string);
    let message = message.map(str::to_string);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.status = status;
                c.last_transition_time = Some(Time(now));
            }
            c.reason = reason;
            c.message = message;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            last_probe_time: None,
            last_transition_time: Some(Time(now)),
            reason,
            message,
        }),
    }
}

/// A JSON merge patch that turns the VMI's status from `current` into `next`, pinned to the
/// resourceVersion the decision was made on (a conflict means: read again and decide again).
pub fn vmi_status_patch(resource_version: &str, current: &VirtualMachineInstanceStatus, next: &VirtualMachineInstanceStatus) -> Value {
    let mut status = match serde_json::to_value(next) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    if let Ok(Value::Object(old)) = serde_json::to_value(current) {
        for key in old.keys() {
            status.entry(key.clone()).or_insert(Value::Null);
        }
    }
    json!({ "metadata": { "resourceVersion": resource_version }, "status": status })
}

/// The Pod phase a launcher state stands for (a started launcher is a running container).
pub fn pod_phase(state: Option<&LauncherState>) -> &'static str {
    match state.map(|s| s.phase) {
        Some(LauncherPhase::Succeeded) => "Succeeded",
        Some(LauncherPhase::Failed) => "Failed",
        _ => "Running",
    }
}

/// The Pod status after the launcher reported `state` (`None`: started, nothing reported yet), or
/// `None` if nothing changes.
pub fn pod_status(
    current: Option<&PodStatus>,
    image: &str,
    state: Option<&LauncherState>,
    launcher_pid: Option<u32>,
    host_ip: &str,
    now: Timestamp,
) -> Option<PodStatus> {
    let current = current.cloned().unwrap_or_default();
    if matches!(current.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut next = current.clone();
    let phase = pod_phase(state);
    let ready = state.is_some_and(|s| matches!(s.phase, LauncherPhase::Running | LauncherPhase::Paused));
    next.phase = Some(phase.to_string());
    let start = next.start_time.clone().unwrap_or(Time(now));
    next.start_time = Some(start.clone());
    next.host_ip = Some(host_ip.to_string());
    next.host_ips = Some(vec![HostIP { ip: host_ip.to_string() }]);

    let mut conditions = next.conditions.take().unwrap_or_default();
    for (type_, status) in [("PodScheduled", true), ("Initialized", true), ("ContainersReady", ready), ("Ready", ready)] {
        let status = if status { "True" } else { "False" };
        match conditions.iter_mut().find(|c| c.type_ == type_) {
            Some(c) if c.status == status => {}
            Some(c) => {
                c.status = status.to_string();
                c.last_transition_time = Some(Time(now));
            }
            None => conditions.push(PodCondition {
                type_: type_.to_string(),
                status: status.to_string(),
                last_transition_time: Some(Time(now)),
                ..Default::default()
            }),
        }
    }
    next.conditions = Some(conditions);

    let old = current
        .container_statuses
        .as_deref()
        .and_then(|cs| cs.iter().find(|c| c.name == COMPUTE_CONTAINER))
        .cloned();
    let container_id = launcher_pid
        .map(|pid| format!("ferrovirt://{pid}"))
        .or_else(|| old.as_ref().and_then(|c| c.container_id.clone()));
    let container_state = match state.filter(|s| s.phase.is_final()) {
        None => ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(start.clone()) }),
            ..Default::default()
        },
        Some(s) => {
            let finished_at = old
                .as_ref()
                .and_then(|c| c.state.as_ref())
                .and_then(|st| st.terminated.as_ref())
                .and_then(|t| t.finished_at.clone())
                .unwrap_or(Time(now));
            let succeeded = s.phase == LauncherPhase::Succeeded;
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    container_id: container_id.clone(),
                    exit_code: if succeeded { 0 } else { 1 },
                    finished_at: Some(finished_at),
                    message: Some(s.message.clone()),
                    reason: Some(if succeeded { "Completed" } else { "Error" }.to_string()),
                    signal: None,
                    started_at: Some(start.clone()),
                }),
                ..Default::default()
            }
        }
    };
    let compute = ContainerStatus {
        name: COMPUTE_CONTAINER.to_string(),
        image: image.to_string(),
        image_id: String::new(),
        container_id,
        ready,
        restart_count: 0,
        started: Some(phase == "Running"),
        state: Some(container_state),
        ..Default::default()
    };
    let mut statuses: Vec<ContainerStatus> =
        current.container_statuses.clone().unwrap_or_default().into_iter().filter(|c| c.name != COMPUTE_CONTAINER).collect();
    statuses.insert(0, compute);
    next.container_statuses = Some(statuses);

    (next != current).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_api::kubevirt::VirtualMachineInstance;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn state(phase: LauncherPhase, kvm: bool) -> LauncherState {
        LauncherState {
            phase,
            reason: if phase == LauncherPhase::Failed { "QemuCrashed".into() } else { "GuestShutdown".into() },
            message: "qemu exited with signal 9".into(),
            qemu_pid: Some(9),
            kvm,
            since: "2026-01-01T00:00:00Z".into(),
            mac: Some("52:54:00:12:34:56".into()),
            ip: Some("10.0.2.15".into()),
        }
    }

    fn spec() -> VirtualMachineInstanceSpec {
        let vmi: VirtualMachineInstance = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"domain": {"devices": {"interfaces": [{"name": "default", "masquerade": {}}]}},
                     "networks": [{"name": "default", "pod": {}}]},
        }))
        .unwrap();
        vmi.spec
    }

    fn scheduled() -> VirtualMachineInstanceStatus {
        VirtualMachineInstanceStatus { phase: Some(Phase::Scheduled), node_name: Some("n1".into()), ..Default::default() }
    }

    #[test]
    fn running_under_tcg_says_so() {
        let s = vmi_status(&scheduled(), &spec(), &state(LauncherPhase::Running, false), "n1", Some("img"), t("2026-01-01T00:00:05Z"))
            .expect("a change");
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.node_name.as_deref(), Some("n1"));
        assert_eq!(s.condition("Ready").map(|c| c.status), Some(ConditionStatus::True));
        let emu = s.condition("SoftwareEmulation").expect("SoftwareEmulation");
        assert_eq!((emu.status, emu.reason.as_deref()), (ConditionStatus::True, Some("SoftwareEmulation")));
        let times = s.phase_transition_timestamps.as_deref().unwrap();
        assert_eq!(times.last().map(|p| p.phase), Some(Phase::Running));
        let iface = &s.interfaces.as_deref().unwrap()[0];
        assert_eq!(iface.name.as_deref(), Some("default"));
        assert_eq!(iface.ip_address.as_deref(), Some("10.0.2.15"));
        assert_eq!(iface.ip_addresses.as_deref(), Some(&["10.0.2.15".to_string()][..]));
        assert_eq!(iface.mac.as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(s.launcher_container_image_version.as_deref(), Some("img"));

        // The same report again changes nothing (no second timestamp, same transition times).
        assert_eq!(vmi_status(&s, &spec(), &state(LauncherPhase::Running, false), "n1", Some("img"), t("2026-01-01T00:01:00Z")), None);
        // Under KVM the condition goes.
        let kvm = vmi_status(&s, &spec(), &state(LauncherPhase::Running, true), "n1", Some("img"), t("2026-01-01T00:01:00Z")).unwrap();
        assert!(kvm.condition("SoftwareEmulation").is_none());
    }

    #[test]
    fn pause_and_unpause() {
        let now = t("2026-01-01T00:00:05Z");
        let running = vmi_status(&scheduled(), &spec(), &state(LauncherPhase::Running, true), "n1", None, now).unwrap();
        let paused = vmi_status(&running, &spec(), &state(LauncherPhase::Paused, true), "n1", None, t("2026-01-01T00:00:09Z")).unwrap();
        assert_eq!(paused.phase, Some(Phase::Running));
        assert_eq!(paused.condition("Paused").map(|c| c.status), Some(ConditionStatus::True));
        let ready = paused.condition("Ready").unwrap();
        assert_eq!((ready.status, ready.last_transition_time.as_ref().map(|t| t.0)), (ConditionStatus::False, Some(t("2026-01-01T00:00:09Z"))));
        let again = vmi_status(&paused, &spec(), &state(LauncherPhase::Running, true), "n1", None, t("2026-01-01T00:00:12Z")).unwrap();
        assert!(again.condition("Paused").is_none());
        assert_eq!(again.condition("Ready").map(|c| c.status), Some(ConditionStatus::True));
        assert_eq!(again.phase_transition_timestamps.as_deref().map(<[_]>::len), Some(1));
    }

    #[test]
    fn final_phases_carry_the_reason_and_never_move_back() {
        let now = t("2026-01-01T00:00:05Z");
        let failed = vmi_status(&scheduled(), &spec(), &state(LauncherPhase::Failed, true), "n1", None, now).unwrap();
        assert_eq!(failed.phase, Some(Phase::Failed));
        assert_eq!(failed.reason.as_deref(), Some("QemuCrashed"));
        let ready = failed.condition("Ready").unwrap();
        assert_eq!(ready.message.as_deref(), Some("qemu exited with signal 9"));
        for phase in [LauncherPhase::Running, LauncherPhase::Succeeded, LauncherPhase::Preparing] {
            assert_eq!(vmi_status(&failed, &spec(), &state(phase, true), "n1", None, now), None);
        }
        let succeeded = vmi_status(&scheduled(), &spec(), &state(LauncherPhase::Succeeded, true), "n1", None, now).unwrap();
        assert_eq!((succeeded.phase, succeeded.reason), (Some(Phase::Succeeded), None));
    }

    #[test]
    fn preparing_keeps_the_phase() {
        let s = vmi_status(&scheduled(), &spec(), &state(LauncherPhase::Preparing, false), "n1", None, t("2026-01-01T00:00:05Z")).unwrap();
        assert_eq!(s.phase, Some(Phase::Scheduled));
        assert_eq!(s.condition("Ready").map(|c| c.status), Some(ConditionStatus::False));
    }

    #[test]
    fn the_patch_pins_the_version_and_clears_what_went() {
        let mut old = scheduled();
        old.reason = Some("x".into());
        let next = VirtualMachineInstanceStatus { phase: Some(Phase::Running), ..Default::default() };
        let p = vmi_status_patch("17", &old, &next);
        assert_eq!(p["metadata"]["resourceVersion"], "17");
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["status"]["reason"], Value::Null);
        assert!(p["status"].as_object().unwrap().contains_key("nodeName"));
    }

    #[test]
    fn pod_runs_then_terminates_and_stays_terminated() {
        let now = t("2026-01-01T00:00:05Z");
        let started = pod_status(None, "img", None, Some(42), "10.0.0.1", now).unwrap();
        assert_eq!(started.phase.as_deref(), Some("Running"));
        let c = &started.container_statuses.as_deref().unwrap()[0];
        assert_eq!((c.name.as_str(), c.ready, c.container_id.as_deref()), ("compute", false, Some("ferrovirt://42")));
        assert!(c.state.as_ref().unwrap().running.is_some());

        let running = pod_status(Some(&started), "img", Some(&state(LauncherPhase::Running, false)), Some(42), "10.0.0.1", now).unwrap();
        let ready = running.conditions.as_deref().unwrap().iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(pod_status(Some(&running), "img", Some(&state(LauncherPhase::Running, false)), Some(42), "10.0.0.1", t("2026-01-01T00:09:00Z")), None);

        let done = pod_status(Some(&running), "img", Some(&state(LauncherPhase::Succeeded, false)), None, "10.0.0.1", now).unwrap();
        assert_eq!(done.phase.as_deref(), Some("Succeeded"));
        let term = done.container_statuses.as_deref().unwrap()[0].state.clone().unwrap().terminated.unwrap();
        assert_eq!((term.exit_code, term.reason.as_deref()), (0, Some("Completed")));
        assert_eq!(done.container_statuses.as_deref().unwrap()[0].container_id.as_deref(), Some("ferrovirt://42"));
        assert_eq!(pod_status(Some(&done), "img", Some(&state(LauncherPhase::Running, false)), Some(42), "10.0.0.1", now), None);

        let failed = pod_status(Some(&running), "img", Some(&state(LauncherPhase::Failed, false)), None, "10.0.0.1", now).unwrap();
        let term = failed.container_statuses.as_deref().unwrap()[0].state.clone().unwrap().terminated.unwrap();
        assert_eq!((failed.phase.as_deref(), term.exit_code), (Some("Failed"), 1));
    }
}
