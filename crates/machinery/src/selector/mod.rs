//! Label and field selectors, as `?labelSelector=` and `?fieldSelector=` carry them.
//!
//! **Label selectors** ([`LabelSelector`]) are comma-separated requirements, all of which must
//! hold (logical AND):
//!
//! | syntax              | matches when                                        |
//! |---------------------|-----------------------------------------------------|
//! | `k=v`, `k==v`       | label `k` exists and equals `v`                     |
//! | `k!=v`              | label `k` is absent or differs from `v`             |
//! | `k in (a,b)`        | label `k` exists and is `a` or `b`                  |
//! | `k notin (a,b)`     | label `k` is absent or is neither `a` nor `b`       |
//! | `k`                 | label `k` exists                                    |
//! | `!k`                | label `k` is absent                                 |
//! | `k>3`, `k<3`        | label `k` is an integer greater / less than 3       |
//!
//! Whitespace between tokens is ignored. Keys are Kubernetes qualified names (`prefix/name`, the
//! prefix a DNS subdomain, the name at most 63 characters of `[A-Za-z0-9._-]` starting and ending
//! alphanumeric); values are empty or follow the name rule. The empty selector matches every
//! object. The object form (`{matchLabels, matchExpressions}`, as in a replica set's
//! `spec.selector`) converts with [`LabelSelector::from_k8s`].
//!
//! **Field selectors** ([`FieldSelector`]) are comma-separated `field=value`, `field==value` and
//! `field!=value` terms, all of which must hold. Inside a value `\,`, `\=` and `\\` stand for
//! `,`, `=` and `\`. Which fields a resource supports is the API server's business:
//! [`FieldSelector::check_supported`] refuses the others with `field label not supported: X`.

mod field;
mod label;

pub use field::{escape_value as escape_field_value, FieldOperator, FieldSelector, FieldTerm};
pub use label::{LabelSelector, Operator, Requirement};

/// Why a selector was refused. Every variant is a client error (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SelectorError {
    /// The label selector string does not parse.
    #[error("unable to parse label selector {selector:?}: {reason}")]
    LabelSyntax {
        /// The whole selector.
        selector: String,
        /// What is wrong, and where.
        reason: String,
    },
    /// A label key is not a valid qualified name.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A label value is not valid.
    #[error("invalid label value {value:?} for key {key:?}: {reason}")]
    InvalidValue {
        /// The key the value belongs to.
        key: String,
        /// The value.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// A `LabelSelector` object (`matchLabels`/`matchExpressions`) is malformed.
    #[error("invalid label selector object: {reason}")]
    InvalidObject {
        /// What is wrong.
        reason: String,
    },
    /// The field selector string does not parse.
    #[error("invalid field selector {selector:?}: {reason}")]
    FieldSyntax {
        /// The whole selector.
        selector: String,
        /// What is wrong.
        reason: String,
    },
    /// The field selector names a field the resource cannot be selected by.
    #[error("field label not supported: {field}")]
    UnsupportedField {
        /// The field.
        field: String,
    },
}
