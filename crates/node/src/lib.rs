//! ferrovirt's node agent (`ferrovirt node`): registers the Node and keeps its Lease, runs one
//! launcher per launcher Pod bound to it, writes VMI status, and cleans up what no Pod owns.

pub mod host;
pub mod register;
