//! ferrovirt's benchmark commands. Each measures one performance figure end to end, through the
//! same paths users and components take, and prints a table. They are commands, not timed tests:
//! figures depend on the machine, so nothing here passes or fails on a number.
//!
//! * [`api`]: the API server on both stores (creates/s, list latency, watch fan-out), next to raw
//!   etcd and the `Store` trait called directly.

pub mod api;
pub mod load;
pub mod machine;
pub mod manifest;
pub mod raw_etcd;
pub mod report;
pub mod stats;
