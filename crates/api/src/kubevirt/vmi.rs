//! `VirtualMachineInstance`: one running (or about to run) virtual machine.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ExecAction, HTTPGetAction, PodDNSConfig, TCPSocketAction, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

use super::{kubevirt_resource, ConditionStatus, Cpu, DomainSpec, Empty, Machine, Network, Volume};

/// A virtual machine instance: the running counterpart of a `VirtualMachine`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VirtualMachineInstance {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// What to run.
    pub spec: VirtualMachineInstanceSpec,
    /// What is running, reported by the controller and the node agent.
    pub status: Option<VirtualMachineInstanceStatus>,
}

kubevirt_resource!(
    VirtualMachineInstance,
    VirtualMachineInstanceSpec,
    VirtualMachineInstanceStatus,
    "VirtualMachineInstance",
    "virtualmachineinstances"
);

/// How the VMI is evicted when its node is drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EvictionStrategy {
    /// No action; the run strategy decides what happens.
    None,
    /// Live-migrate instead of shutting down.
    LiveMigrate,
    /// Live-migrate if the VMI is migratable, otherwise as `None`.
    LiveMigrateIfPossible,
    /// Block eviction and set `status.evacuationNodeName`.
    External,
}

/// How the VMI starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StartStrategy {
    /// Start with the vCPUs paused.
    Paused,
}

/// The desired state of a VMI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineInstanceSpec {
    /// Priority class of the launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// The virtual hardware.
    pub domain: DomainSpec,
    /// Node labels the VMI's node must have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Affinity rules for the launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Scheduler of the launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Tolerations of the launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// What happens on node drain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eviction_strategy: Option<EvictionStrategy>,
    /// `Paused` to start with the vCPUs stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_strategy: Option<StartStrategy>,
    /// Seconds between the ACPI power-down request and a forced stop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Volumes that back the disks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<Volume>>,
    /// Liveness probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// Readiness probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Guest hostname (defaults to the VMI name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// DNS subdomain of the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    /// Networks the interfaces connect to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<Vec<Network>>,
    /// `ClusterFirst`, `ClusterFirstWithHostNet`, `Default` or `None`.
    #[serde(rename = "dnsPolicy", skip_serializing_if = "Option::is_none")]
    pub dns_policy: Option<String>,
    /// DNS settings merged with the policy's.
    #[serde(rename = "dnsConfig", skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<PodDNSConfig>,
    /// SSH keys and passwords injected into the guest (kept opaque; refused by admission).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_credentials: Option<Vec<serde_json::Value>>,
    /// Guest architecture; ferrovirt runs `amd64` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
}

impl VirtualMachineInstanceSpec {
    /// The volumes, or an empty slice.
    pub fn volumes(&self) -> &[Volume] {
        self.volumes.as_deref().unwrap_or_default()
    }

    /// The networks, or an empty slice.
    pub fn networks(&self) -> &[Network] {
        self.networks.as_deref().unwrap_or_default()
    }
}

/// A health check of the guest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Probe {
    /// Run a command through the guest agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    /// Ping the guest agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_agent_ping: Option<Empty>,
    /// HTTP GET against the guest.
    #[serde(rename = "httpGet", skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HTTPGetAction>,
    /// TCP connect to the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TCPSocketAction>,
    /// Seconds before the first probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    /// Probe timeout in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    /// Seconds between probes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    /// Successes needed after a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    /// Failures needed after a success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
}

/// The phase of a VMI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VirtualMachineInstancePhase {
    /// Accepted, nothing created yet.
    Pending,
    /// The launcher pod exists but is not placed yet.
    Scheduling,
    /// The launcher pod runs; the node agent takes over.
    Scheduled,
    /// The guest runs.
    Running,
    /// The guest stopped voluntarily.
    Succeeded,
    /// The guest crashed, vanished or was deleted before it started.
    Failed,
    /// The host cannot be reached.
    Unknown,
}

impl VirtualMachineInstancePhase {
    /// `Succeeded` or `Failed`: the VMI will not run again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Well-known VMI condition types.
pub mod vmi_condition {
    /// The guest runs and the VMI can serve.
    pub const READY: &str = "Ready";
    /// The guest is paused.
    pub const PAUSED: &str = "Paused";
    /// The QEMU guest agent is connected.
    pub const AGENT_CONNECTED: &str = "AgentConnected";
    /// The VMI can be live-migrated.
    pub const LIVE_MIGRATABLE: &str = "LiveMigratable";
    /// The guest runs without hardware acceleration (TCG).
    pub const SOFTWARE_EMULATION: &str = "SoftwareEmulation";
    /// The domain failed to synchronize.
    pub const SYNCHRONIZED: &str = "Synchronized";
}

/// A condition of a VMI, VM, replica set or migration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Last time the condition was probed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// Last time the status changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    /// Machine-readable reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The observed state of a VMI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineInstanceStatus {
    /// Node the VMI runs on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// CamelCase reason for the current state, e.g. `NodeUnresponsive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Conditions (`Ready`, `Paused`, `AgentConnected`, `LiveMigratable`, `SoftwareEmulation`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Lifecycle phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<VirtualMachineInstancePhase>,
    /// When each phase was entered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase_transition_timestamps: Option<Vec<PhaseTransitionTimestamp>>,
    /// Network interfaces seen in the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<VirtualMachineInstanceNetworkInterface>>,
    /// Guest OS information from the guest agent.
    #[serde(rename = "guestOSInfo", skip_serializing_if = "Option::is_none")]
    pub guest_os_info: Option<GuestOsInfo>,
    /// State of the current or last live migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_state: Option<MigrationState>,
    /// `LiveMigration` or `BlockMigration`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_method: Option<String>,
    /// Migration transport, `Unix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_transport: Option<String>,
    /// QoS class of the launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<String>,
    /// Launcher version that runs the VMI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launcher_container_image_version: Option<String>,
    /// Node to evacuate, set on eviction with the `External` strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evacuation_node_name: Option<String>,
    /// Launcher pod UID → node name (two entries during a migration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_pods: Option<BTreeMap<String, String>>,
    /// Status of each volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_status: Option<Vec<VolumeStatus>>,
    /// vCPU topology in use.
    #[serde(rename = "currentCPUTopology", skip_serializing_if = "Option::is_none")]
    pub current_cpu_topology: Option<CpuTopology>,
    /// Guest memory figures, and ferrovirt's computed per-VM overhead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStatus>,
    /// Machine type QEMU actually runs (aliases resolved).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    /// SELinux context of the launcher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selinux_context: Option<String>,
    /// User the launcher runs as.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_user: Option<u64>,
}

impl VirtualMachineInstanceStatus {
    /// The condition of type `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|c| c.type_ == type_)
    }
}

/// When a phase was entered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseTransitionTimestamp<P = VirtualMachineInstancePhase> {
    /// The phase.
    pub phase: P,
    /// When it was entered.
    pub phase_transition_timestamp: Time,
}

/// A network interface as seen in the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineInstanceNetworkInterface {
    /// Name of the interface in the spec (and of its network).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Primary IP address (the first of `ipAddresses`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// All IP addresses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip_addresses: Option<Vec<String>>,
    /// MAC address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Interface name inside the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface_name: Option<String>,
    /// Interface name inside the pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_interface_name: Option<String>,
    /// Where the data comes from: `domain`, `guest-agent`, `multus-status`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info_source: Option<String>,
    /// Number of queues.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_count: Option<i32>,
    /// `up` or `down`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_state: Option<String>,
}

/// Guest OS information from the guest agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuestOsInfo {
    /// OS name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kernel release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_release: Option<String>,
    /// OS version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Pretty name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
    /// Version id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// Kernel version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_version: Option<String>,
    /// Machine (architecture).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// OS id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// State of a live migration, on the VMI and on the migration object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MigrationState {
    /// When the migration started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_timestamp: Option<Time>,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_timestamp: Option<Time>,
    /// When the target saw the domain active.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_node_domain_ready_timestamp: Option<Time>,
    /// The target saw the domain start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_node_domain_detected: Option<bool>,
    /// Address of the target node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_node_address: Option<String>,
    /// Ports opened for the migration on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_direct_migration_node_ports: Option<BTreeMap<String, i64>>,
    /// Target node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    /// Target launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_pod: Option<String>,
    /// Source node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_node: Option<String>,
    /// Source launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_pod: Option<String>,
    /// The migration completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<bool>,
    /// The migration failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<bool>,
    /// An abort was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_requested: Option<bool>,
    /// `Succeeded`, `Failed` or `Aborting`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_status: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// UID of the migration object.
    #[serde(rename = "migrationUid", skip_serializing_if = "Option::is_none")]
    pub migration_uid: Option<String>,
    /// `PreCopy`, `PostCopy` or `Paused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Memory overhead of the target launcher pod.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_memory_overhead: Option<Quantity>,
}

/// Status of one volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeStatus {
    /// Volume name.
    pub name: String,
    /// Guest device, e.g. `vda`.
    #[serde(default)]
    pub target: String,
    /// Phase, e.g. `Ready`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Reason for the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Message about the phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Size of the volume in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
}

/// A vCPU topology.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuTopology {
    /// Cores per socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Sockets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Threads per core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
}

impl From<&Cpu> for CpuTopology {
    fn from(cpu: &Cpu) -> Self {
        CpuTopology {
            cores: cpu.cores,
            sockets: cpu.sockets,
            threads: cpu.threads,
        }
    }
}

/// Guest memory figures.
///
/// `memoryOverhead` is where ferrovirt reports the per-VM overhead it computed and added to
/// the launcher pod's memory request (the same field KubeVirt uses for its own estimate).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemoryStatus {
    /// Memory the guest booted with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_at_boot: Option<Quantity>,
    /// Memory the guest has now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_current: Option<Quantity>,
    /// Memory requested through hotplug.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_requested: Option<Quantity>,
    /// ferrovirt's computed per-VM overhead (launcher, QEMU, page tables), added to the pod request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_overhead: Option<Quantity>,
}
