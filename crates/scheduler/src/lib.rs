//! ferrovirt's scheduler: binds launcher pods (`spec.schedulerName: ferrovirt-scheduler`) to a
//! Ready, schedulable node with room for them.
//!
//! [`fit`] holds the decision as pure functions ([`fit::schedule`]); [`run`] is the loop that
//! watches nodes and pods, calls it, and writes the binding or the reason there is none.

#![warn(missing_docs)]

pub mod fit;
mod runtime;

pub use fit::{schedule, NodeName, Reason, Unschedulable};
pub use runtime::{run, run_until, Options};
