//! `VirtualMachineInstanceMigration`: a request to live-migrate one VMI.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::{kubevirt_resource, Condition, MigrationState, PhaseTransitionTimestamp};

/// A live migration of one VMI to another node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VirtualMachineInstanceMigration {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// Which VMI to migrate.
    pub spec: VirtualMachineInstanceMigrationSpec,
    /// Progress of the migration.
    pub status: Option<VirtualMachineInstanceMigrationStatus>,
}

kubevirt_resource!(
    VirtualMachineInstanceMigration,
    VirtualMachineInstanceMigrationSpec,
    VirtualMachineInstanceMigrationStatus,
    "VirtualMachineInstanceMigration",
    "virtualmachineinstancemigrations"
);

/// Which VMI to migrate, and where it may go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineInstanceMigrationSpec {
    /// Name of the VMI, in the migration's namespace (required).
    #[serde(default)]
    pub vmi_name: String,
    /// Extra node labels the target must have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub added_node_selector: Option<BTreeMap<String, String>>,
    /// `system-critical`, `user-triggered` or `system-maintenance`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// Phase of a migration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MigrationPhase {
    /// Accepted.
    Pending,
    /// The target pod is being scheduled.
    Scheduling,
    /// The target pod runs.
    Scheduled,
    /// The target is being prepared.
    PreparingTarget,
    /// The target is ready to receive.
    TargetReady,
    /// Memory is being transferred.
    Running,
    /// The VMI runs on the target.
    Succeeded,
    /// The migration failed; the VMI stays on the source.
    Failed,
}

impl MigrationPhase {
    /// `Succeeded` or `Failed`.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

/// Progress of a migration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineInstanceMigrationStatus {
    /// Current phase.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<MigrationPhase>,
    /// Conditions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// When each phase was entered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase_transition_timestamps: Option<Vec<PhaseTransitionTimestamp<MigrationPhase>>>,
    /// Migration details, as on the VMI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_state: Option<MigrationState>,
}
