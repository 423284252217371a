//! Pure, I/O-free Kubernetes API machinery for the ferrovirt API server.
//!
//! - [`patch`]: PATCH bodies: RFC 6902 JSON patch, RFC 7386 JSON merge patch and Kubernetes
//!   strategic merge patch, with the per-kind merge schemas of the core kinds.
//! - [`selector`]: label selectors (string syntax and the `LabelSelector` object form) and field
//!   selectors, as `?labelSelector=` and `?fieldSelector=` carry them.
//!
//! Nothing here touches a socket, a file or a clock; every function is deterministic and never
//! panics on client input.

pub mod patch;
pub mod selector;

pub use patch::{
    apply_json_patch, apply_merge_patch, apply_patch, apply_strategic_merge_patch, core_schema,
    parse_patch_body, FieldStrategy, MergeSchema, PatchError, PatchType,
};
pub use selector::{FieldSelector, LabelSelector, SelectorError};
