//! `VirtualMachine`: a VM that exists whether or not it runs, and its run strategy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

use super::{kubevirt_resource, Condition, VirtualMachineInstanceSpec};

/// A virtual machine: a template for VMIs plus a run strategy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VirtualMachine {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// The desired state.
    pub spec: VirtualMachineSpec,
    /// The observed state, written by the controller.
    pub status: Option<VirtualMachineStatus>,
}

kubevirt_resource!(
    VirtualMachine,
    VirtualMachineSpec,
    VirtualMachineStatus,
    "VirtualMachine",
    "virtualmachines"
);

impl VirtualMachine {
    /// The effective run strategy: `running: true` is `Always`, `running: false` or nothing is
    /// `Halted`. `None` when both `running` and `runStrategy` are set (admission refuses that).
    pub fn run_strategy(&self) -> Option<RunStrategy> {
        match (self.spec.running, self.spec.run_strategy) {
            (Some(_), Some(_)) => None,
            (Some(true), None) => Some(RunStrategy::Always),
            (Some(false), None) | (None, None) => Some(RunStrategy::Halted),
            (None, Some(strategy)) => Some(strategy),
        }
    }
}

/// When the controller starts and restarts the VM's instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RunStrategy {
    /// Always keep a VMI running; a new one whenever it ends (= `running: true`).
    Always,
    /// Restart after a failure; a guest-initiated shutdown stays down.
    RerunOnFailure,
    /// Only the start/stop/restart subresources act.
    Manual,
    /// No VMI runs (= `running: false`).
    Halted,
    /// Run once, never restart.
    Once,
}

/// The desired state of a VM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineSpec {
    /// Deprecated on/off switch; exclusive with `runStrategy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub running: Option<bool>,
    /// When the VM runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<RunStrategy>,
    /// Instance type reference (not supported by ferrovirt yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instancetype: Option<InstancetypeMatcher>,
    /// Preference reference (not supported by ferrovirt yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preference: Option<PreferenceMatcher>,
    /// The VMI to create.
    pub template: VirtualMachineInstanceTemplateSpec,
    /// DataVolumes owned by the VM (not supported by ferrovirt yet).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_volume_templates: Option<Vec<DataVolumeTemplateSpec>>,
}

/// Metadata and spec of the VMIs a VM or replica set creates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineInstanceTemplateSpec {
    /// Labels and annotations copied to the VMI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    /// The VMI spec.
    pub spec: VirtualMachineInstanceSpec,
}

/// Reference to an instance type or preference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstancetypeMatcher {
    /// Name of the referenced object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kind of the referenced object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// ControllerRevision holding the copy in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    /// Volume to infer the reference from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infer_from_volume: Option<String>,
    /// `Reject` or `Ignore` when inference fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub infer_from_volume_failure_policy: Option<String>,
}

/// Reference to a preference; the same shape as [`InstancetypeMatcher`].
pub type PreferenceMatcher = InstancetypeMatcher;

/// A CDI DataVolume template; the spec is kept opaque.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataVolumeTemplateSpec {
    /// Ignored type metadata kept for compatibility.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Ignored type metadata kept for compatibility.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// DataVolume metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<ObjectMeta>,
    /// CDI DataVolume spec (opaque).
    #[serde(default)]
    pub spec: serde_json::Value,
    /// Unused placeholder kept for compatibility.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// The high-level status printed by `kubectl get vms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PrintableStatus {
    /// Stopped and not expected to start.
    Stopped,
    /// Resources (e.g. DataVolumes) are being provisioned.
    Provisioning,
    /// Being prepared to run.
    Starting,
    /// Running.
    Running,
    /// Paused.
    Paused,
    /// Being stopped.
    Stopping,
    /// Being deleted.
    Terminating,
    /// Crashing repeatedly; waiting before the next try.
    CrashLoopBackOff,
    /// Being migrated.
    Migrating,
    /// State cannot be obtained.
    Unknown,
    /// The launcher pod cannot be scheduled.
    ErrorUnschedulable,
    /// A containerDisk image cannot be pulled.
    ErrImagePull,
    /// Backing off after image pull errors.
    ImagePullBackOff,
    /// A referenced PVC does not exist.
    ErrorPvcNotFound,
    /// A DataVolume reported an error.
    DataVolumeError,
    /// PVCs are not bound yet.
    WaitingForVolumeBinding,
}

/// Well-known VM condition types.
pub mod vm_condition {
    /// The VMI could not be created or was lost.
    pub const FAILURE: &str = "Failure";
    /// Copied from the VMI's `Ready`.
    pub const READY: &str = "Ready";
    /// The VMI is paused.
    pub const PAUSED: &str = "Paused";
    /// A spec change needs a restart to take effect.
    pub const RESTART_REQUIRED: &str = "RestartRequired";
}

/// The observed state of a VM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineStatus {
    /// Name of the snapshot in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_in_progress: Option<String>,
    /// Name of the restore in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restore_in_progress: Option<String>,
    /// A VMI exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<bool>,
    /// The VMI runs and is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// High-level status for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub printable_status: Option<PrintableStatus>,
    /// Conditions (`Ready`, `Paused`, `Failure`, `RestartRequired`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// Pending start/stop requests from the subresources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_change_requests: Option<Vec<StateChangeRequest>>,
    /// Snapshot support of each volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_snapshot_statuses: Option<Vec<VolumeSnapshotStatus>>,
    /// Consecutive start failures, for crash-loop backoff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_failure: Option<StartFailure>,
    /// Generation of the VM the running VMI was created from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Generation the VMI should have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_generation: Option<i64>,
    /// The last run strategy the controller acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<RunStrategy>,
}

impl VirtualMachineStatus {
    /// The condition of type `type_`, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .find(|c| c.type_ == type_)
    }
}

/// A start or stop request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateChangeAction {
    /// Start a VMI.
    Start,
    /// Stop the VMI.
    Stop,
}

/// A pending state change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateChangeRequest {
    /// `Start` or `Stop`.
    pub action: StateChangeAction,
    /// Extra data, e.g. `paused: "true"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<std::collections::BTreeMap<String, String>>,
    /// UID of the VMI the request applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Snapshot support of a volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSnapshotStatus {
    /// Volume name.
    pub name: String,
    /// Whether the volume can be snapshotted.
    pub enabled: bool,
    /// Why not, if not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Consecutive start failures of a VM.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartFailure {
    /// Retries so far (ferrovirt's own counter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    /// Failures in a row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_fail_count: Option<i64>,
    /// UID of the last VMI that failed.
    #[serde(rename = "lastFailedVMIUID", skip_serializing_if = "Option::is_none")]
    pub last_failed_vmi_uid: Option<String>,
    /// No new VMI before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_timestamp: Option<Time>,
}
