//! ferrovirt's API types and admission, free of I/O.
//!
//! - [`kubevirt`]: the `kubevirt.io/v1` kinds (`VirtualMachine`, `VirtualMachineInstance`,
//!   `VirtualMachineInstanceReplicaSet`, `VirtualMachineInstanceMigration`) with KubeVirt's
//!   field names; kube-rs' `Api<K>` works with them unchanged.
//! - [`admission`]: what KubeVirt's virt-api does: strict decoding with field paths,
//!   defaulting, and validation returning [`admission::FieldError`]s.
//! - [`status`]: Kubernetes `Status` objects (422 `Invalid` with causes) for refused requests.
//! - [`quantity`]: exact parsing of Kubernetes quantities (`"256Mi"`, `"500m"`).
//! - [`selector`]: label selector matching.
//! - [`wellknown`]: annotations ferrovirt's components agree on.
//!
//! ferrovirt reports the per-VM memory overhead it computes in
//! `VirtualMachineInstance.status.memory.memoryOverhead` ([`kubevirt::MemoryStatus`]).

#![warn(missing_docs)]

pub mod admission;
pub mod kubevirt;
pub mod quantity;
pub mod selector;
pub mod status;
pub mod wellknown;

/// The k8s-openapi crate these types are built on, for callers that need the same version.
pub use k8s_openapi;

pub use admission::{decode, FieldError, FieldErrorKind};
pub use kubevirt::{
    VirtualMachine, VirtualMachineInstance, VirtualMachineInstanceMigration,
    VirtualMachineInstanceReplicaSet,
};

/// The API group of the KubeVirt kinds.
pub const GROUP: &str = "kubevirt.io";
/// The API version of the KubeVirt kinds.
pub const VERSION: &str = "v1";
/// `group/version`, as written in `apiVersion`.
pub const API_VERSION: &str = "kubevirt.io/v1";
/// The group of KubeVirt's subresources (start, stop, console, ...).
pub const SUBRESOURCES_GROUP: &str = "subresources.kubevirt.io";
