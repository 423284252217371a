//! ferrovirt's benchmark commands. Each measures one performance figure end to end, through the
//! same paths users and components take, and prints a table. They are commands, not timed tests:
//! figures depend on the machine, so nothing here passes or fails on a number.
//!
//! * [`api`]: the API server on both stores (creates/s, list latency, watch fan-out), next to raw
//!   etcd and the `Store` trait called directly.
//! * [`vms`]: real VMs through `ferrovirt up` (create to VMI Running, to first console byte, to a
//!   booted guest), next to plain QEMU with the launcher's own arguments, and each process's RSS.
//! * [`scale`]: control-plane scale: many VMIs on many nodes from create to Running, on both
//!   stores, with the memory and CPU of each control-plane process. Its nodes are played by
//!   [`sim_hypervisor`], a simulated hypervisor that exists only for this benchmark.

pub mod api;
pub mod load;
pub mod machine;
pub mod manifest;
pub mod raw_etcd;
pub mod report;
pub mod scale;
pub mod sim_hypervisor;
pub mod stats;
pub mod vms;
