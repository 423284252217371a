//! ferrovirt's controllers: from a `VirtualMachine` to a `VirtualMachineInstance` to a launcher
//! `Pod`, as KubeVirt's virt-controller does.
//!
//! ```text
//!   VirtualMachine ──[vm::reconcile_vm]──► VirtualMachineInstance ──[vmi::reconcile_vmi]──► Pod
//!     runStrategy, start/stop requests       finalizer, phases up to       virt-launcher-<vmi>-xxxxx
//!     status: printableStatus, ready,        Scheduled, Ready condition,   requests = guest + overhead
//!     conditions, startFailure backoff       memoryOverhead                (scheduler binds it)
//! ```
//!
//! The decisions are pure functions of (desired, observed, now) returning actions: [`vm`],
//! [`vmi`], with [`launcher_pod`] and [`overhead`] for the pod itself. [`run`] is the thin loop
//! that watches the API server, calls them and carries the actions out ([`queue`] is its work
//! queue). The node agent takes over from the Scheduled phase; see [`vmi`] for the split.

#![warn(missing_docs)]

pub mod conditions;
pub mod event;
pub mod launcher_pod;
pub mod leader;
pub mod node_lifecycle;
pub mod overhead;
pub mod patch;
pub mod queue;
pub mod replicaset;
mod runtime;
pub mod vm;
pub mod vmi;

pub use launcher_pod::LauncherSettings;
pub use replicaset::{reconcile_replicaset, RsAction};
pub use runtime::{run, run_until, ActionError, ObjectKey, Options};
pub use vm::{reconcile_vm, StartBackoff, VmAction};
pub use vmi::{reconcile_vmi, transition, VmiAction};
