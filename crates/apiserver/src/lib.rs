//! ferrovirt's API server: a Kubernetes-compatible REST API for VirtualMachines and the core kinds
//! around them, on an embedded store or on etcd.
//!
//! * [`kinds`]: what is served; [`request`]: paths and query options; [`rest`]: the generic object
//!   operations; [`watch`]: watch streams; [`table`]: server-side printing; [`discovery`]: discovery
//!   and OpenAPI; [`admission`]: defaulting and validation per kind; [`gc`]: garbage collection and
//!   namespaces; [`pki`]: CA, token and kubeconfig; [`server`]: HTTP, TLS and start-up;
//!   [`vm_actions`], [`vmi_actions`]: KubeVirt's subresources, the latter through [`node_proxy`] to the
//!   node agent that runs the VMI; [`eviction`]: the Eviction subresource of pods (`kubectl drain`).

pub mod admission;
pub mod discovery;
pub mod error;
pub mod eviction;
pub mod gc;
pub mod kinds;
pub mod node_proxy;
pub mod object;
pub mod pki;
pub mod request;
pub mod rest;
pub mod scale;
pub mod server;
pub mod table;
pub mod vm_actions;
pub mod vmi_actions;
pub mod watch;

pub use server::{start, Config, Running};
