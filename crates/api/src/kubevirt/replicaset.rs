//! `VirtualMachineInstanceReplicaSet`: keep N identical VMIs running.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::{Deserialize, Serialize};

use super::{kubevirt_resource, Condition, VirtualMachineInstanceTemplateSpec};

/// Keeps a number of VMIs from one template running.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VirtualMachineInstanceReplicaSet {
    /// Standard object metadata.
    pub metadata: ObjectMeta,
    /// The desired state.
    pub spec: VirtualMachineInstanceReplicaSetSpec,
    /// The observed state.
    pub status: Option<VirtualMachineInstanceReplicaSetStatus>,
}

kubevirt_resource!(
    VirtualMachineInstanceReplicaSet,
    VirtualMachineInstanceReplicaSetSpec,
    VirtualMachineInstanceReplicaSetStatus,
    "VirtualMachineInstanceReplicaSet",
    "virtualmachineinstancereplicasets"
);

/// The desired state of a replica set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineInstanceReplicaSetSpec {
    /// Number of VMIs (defaults to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Selects the VMIs this replica set owns; must match the template's labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The VMIs to create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<VirtualMachineInstanceTemplateSpec>,
    /// Stop creating and deleting VMIs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

/// Well-known replica set condition types.
pub mod replicaset_condition {
    /// A VMI could not be created or deleted.
    pub const REPLICA_FAILURE: &str = "ReplicaFailure";
    /// The replica set is paused.
    pub const REPLICA_PAUSED: &str = "ReplicaPaused";
}

/// The observed state of a replica set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachineInstanceReplicaSetStatus {
    /// VMIs matching the selector that are not final.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Of those, the ready ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Conditions (`ReplicaFailure`, `ReplicaPaused`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// The selector in string form, for the scale subresource.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<String>,
}
