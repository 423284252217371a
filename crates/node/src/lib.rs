//! ferrovirt's node agent (`ferrovirt node`): registers the Node and keeps its Lease, runs one
//! launcher per launcher Pod bound to it, writes VMI status, and cleans up what no Pod owns.
//!
//! - [`register`]: the Node object, its Lease and heartbeat; [`host`]: what the host offers.
//! - [`decide`]: the pure decision for one pod folder ([`decide::decide`]).
//! - [`status`]: the Pod and VMI status the launcher's state stands for (pure).
//! - [`launch`]: `spec.json` and the detached launcher process; [`local`]: a pod folder and the
//!   processes of it.
//! - [`endpoint`]: what the API server asks of a running VM (pause, console, ...).
//! - [`agent`]: the loop that watches, decides and executes ([`run`]).

pub mod agent;
pub mod decide;
pub mod endpoint;
pub mod host;
pub mod launch;
pub mod local;
pub mod queue;
pub mod register;
pub mod status;

pub use agent::{run, ActionError, NodeConfig};
pub use decide::{decide, LauncherProcess, LocalState, NodeAction};
pub use launch::{LaunchSettings, LauncherCommand};
