//! fvctl's errors and the exit codes scripts can rely on.
//!
//! Every failure of a command is one [`Error`]; `main` prints it with `Display` (never `Debug`) and
//! exits with [`Error::exit_code`]:
//!
//! | code | meaning                                                                  |
//! |------|--------------------------------------------------------------------------|
//! | 0    | success                                                                  |
//! | 1    | the request failed: refused by the server, a conflict, an I/O error      |
//! | 2    | usage: bad arguments, unknown resource type, unreadable manifest         |
//! | 3    | not found: the named object does not exist                               |
//! | 4    | timeout: `--wait`/`--timeout` ran out before the goal was reached        |
//! | 5    | no API server: kubeconfig missing or invalid, server unreachable, 401/403 |

use std::fmt;

use kube::core::Status;

use crate::resources::ResourceKind;

/// The exit codes, as documented in `fvctl --help`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The request failed.
    pub const FAILED: u8 = 1;
    /// Bad usage (clap uses 2 as well).
    pub const USAGE: u8 = 2;
    /// The object does not exist.
    pub const NOT_FOUND: u8 = 3;
    /// A wait timed out.
    pub const TIMEOUT: u8 = 4;
    /// The API server cannot be reached or refuses our credentials.
    pub const UNREACHABLE: u8 = 5;
}

/// The text of `fvctl --help` that documents the exit codes.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the request failed (refused by the server, conflict, I/O error)
  2  usage error (bad arguments, unknown resource type, unreadable manifest)
  3  not found (the named object does not exist)
  4  timeout (--wait or --timeout ran out)
  5  no API server (kubeconfig missing or invalid, server unreachable, credentials refused)";

/// A failed request as the API server explained it (its `Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    /// HTTP status code.
    pub code: u16,
    /// `Status.reason` (`NotFound`, `Invalid`, `AlreadyExists`, ...).
    pub reason: String,
    /// `Status.message`.
    pub message: String,
    /// `(field, message)` of each `Status.details.causes` entry.
    pub causes: Vec<(String, String)>,
}

impl ApiFailure {
    /// From a response body that should be a `Status`; anything else becomes the message.
    pub fn from_body(code: u16, body: &[u8]) -> ApiFailure {
        match serde_json::from_slice::<Status>(body) {
            Ok(status) if status.code != 0 || !status.message.is_empty() => {
                ApiFailure::from_status(code, status)
            }
            _ => {
                let text = String::from_utf8_lossy(body).trim().to_string();
                let message = if text.is_empty() {
                    http::StatusCode::from_u16(code)
                        .ok()
                        .and_then(|c| c.canonical_reason())
                        .unwrap_or("request failed")
                        .to_string()
                } else {
                    text
                };
                ApiFailure {
                    code,
                    reason: String::new(),
                    message,
                    causes: Vec::new(),
                }
            }
        }
    }

    /// From a decoded `Status`.
    pub fn from_status(code: u16, status: Status) -> ApiFailure {
        let causes = status
            .details
            .map(|d| d.causes.into_iter().map(|c| (c.field, c.message)).collect())
            .unwrap_or_default();
        ApiFailure {
            code: if status.code != 0 { status.code } else { code },
            reason: status.reason,
            message: status.message,
            causes,
        }
    }

    /// Whether the server said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }

    /// Whether the server said the object already exists (or was changed meanwhile).
    pub fn is_conflict(&self) -> bool {
        self.code == 409
    }
}

impl fmt::Display for ApiFailure {
    /// The server's message, then each field cause on its own line (`  - field: message`). A
    /// Kubernetes `X "n" is invalid: [a, b]` message is cut to its head, as the causes say the rest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.causes.is_empty() {
            return write!(f, "{}", self.message);
        }
        const INVALID: &str = " is invalid: ";
        match self.message.find(INVALID) {
            Some(i) => write!(f, "{} is invalid:", &self.message[..i])?,
            None => write!(f, "{}", self.message)?,
        }
        for (field, message) in &self.causes {
            if field.is_empty() {
                write!(f, "\n  - {message}")?;
            } else {
                write!(f, "\n  - {field}: {message}")?;
            }
        }
        Ok(())
    }
}

/// What went wrong, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments or input (exit 2).
    #[error("{0}")]
    Usage(String),

    /// A resource type fvctl does not know (exit 2).
    #[error("the server doesn't have a resource type {word:?}; try one of: {known}")]
    UnknownResource { word: String, known: String },

    /// The named object does not exist (exit 3).
    #[error("{}", not_found_message(.kind, .name, .namespace.as_deref()))]
    NotFound {
        kind: &'static ResourceKind,
        name: String,
        namespace: Option<String>,
    },

    /// The API server refused a request (exit 1, 3 for a 404, 5 for 401/403).
    #[error("{0}")]
    Api(ApiFailure),

    /// The API server cannot be reached or the kubeconfig is unusable (exit 5).
    #[error("{0}")]
    Unreachable(String),

    /// A wait ran out of time (exit 4).
    #[error("{0}")]
    Timeout(String),

    /// A local file could not be read or written (exit 1, or 2 when it is the user's input).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    /// Anything else that failed (exit 1).
    #[error("{0}")]
    Failed(String),

    /// Errors already printed (one per object of several); only the exit code is left.
    #[error("")]
    Reported(u8),
}

/// `virtualmachine "x" not found in namespace "default"; see `fvctl get vms``
fn not_found_message(kind: &ResourceKind, name: &str, namespace: Option<&str>) -> String {
    let place = match namespace {
        Some(ns) if kind.namespaced => format!(" in namespace {ns:?}"),
        _ => String::new(),
    };
    let ns_flag = match namespace {
        Some(ns) if kind.namespaced && ns != "default" => format!(" -n {ns}"),
        _ => String::new(),
    };
    format!(
        "{} {name:?} not found{place}; see `fvctl get {}{ns_flag}`",
        kind.singular_display(),
        kind.list_word()
    )
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::UnknownResource { .. } => exit::USAGE,
            Error::NotFound { .. } => exit::NOT_FOUND,
            Error::Api(f) if f.code == 404 => exit::NOT_FOUND,
            Error::Api(f) if f.code == 401 || f.code == 403 => exit::UNREACHABLE,
            Error::Api(_) | Error::Io { .. } | Error::Failed(_) => exit::FAILED,
            Error::Unreachable(_) => exit::UNREACHABLE,
            Error::Timeout(_) => exit::TIMEOUT,
            Error::Reported(code) => *code,
        }
    }

    /// An I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Turns a 404 from the server into [`Error::NotFound`] for the object asked for.
    pub fn for_object(
        self,
        kind: &'static ResourceKind,
        name: &str,
        namespace: Option<&str>,
    ) -> Error {
        match self {
            Error::Api(f) if f.is_not_found() => Error::NotFound {
                kind,
                name: name.to_string(),
                namespace: if kind.namespaced {
                    namespace.map(str::to_string)
                } else {
                    None
                },
            },
            other => other,
        }
    }
}

/// fvctl's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    #[test]
    fn a_missing_vm_says_where_and_what_to_run() {
        let e = Error::NotFound {
            kind: resources::find("vm").unwrap(),
            name: "x".into(),
            namespace: Some("default".into()),
        };
        assert_eq!(
            e.to_string(),
            "virtualmachine \"x\" not found in namespace \"default\"; see `fvctl get vms`"
        );
        assert_eq!(e.exit_code(), 3);
        let e = Error::NotFound {
            kind: resources::find("vmi").unwrap(),
            name: "y".into(),
            namespace: Some("prod".into()),
        };
        assert_eq!(
            e.to_string(),
            "virtualmachineinstance \"y\" not found in namespace \"prod\"; see `fvctl get vmis -n prod`"
        );
        let e = Error::NotFound {
            kind: resources::find("node").unwrap(),
            name: "n9".into(),
            namespace: None,
        };
        assert_eq!(
            e.to_string(),
            "node \"n9\" not found; see `fvctl get nodes`"
        );
    }

    #[test]
    fn field_causes_are_listed_once() {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422, "reason": "Invalid",
            "message": "VirtualMachine.kubevirt.io \"vm1\" is invalid",
            "details": {"causes": [
                {"reason": "FieldValueRequired", "message": "Required value: a name", "field": "spec.template.spec.volumes[0].name"},
                {"reason": "FieldValueInvalid", "message": "Invalid value: \"x\"", "field": "metadata.name"}
            ]}
        });
        let f = ApiFailure::from_body(422, body.to_string().as_bytes());
        assert_eq!(
            f.to_string(),
            "VirtualMachine.kubevirt.io \"vm1\" is invalid\n  - spec.template.spec.volumes[0].name: Required value: a name\n  - metadata.name: Invalid value: \"x\""
        );
        assert_eq!(Error::Api(f).exit_code(), 1);
    }

    #[test]
    fn kubernetes_invalid_messages_list_each_cause() {
        let body = serde_json::json!({
            "kind": "Status", "code": 422, "reason": "Invalid",
            "message": "VirtualMachine.kubevirt.io \"B\" is invalid: [metadata.name: Invalid value: \"B\", spec.running: Invalid value: true]",
            "details": {"causes": [
                {"message": "Invalid value: \"B\"", "field": "metadata.name"},
                {"message": "Invalid value: true", "field": "spec.running"}
            ]}
        });
        let f = ApiFailure::from_body(422, body.to_string().as_bytes());
        assert_eq!(
            f.to_string(),
            "VirtualMachine.kubevirt.io \"B\" is invalid:\n  - metadata.name: Invalid value: \"B\"\n  - spec.running: Invalid value: true"
        );
    }

    #[test]
    fn non_status_bodies_become_the_message() {
        let f = ApiFailure::from_body(502, b"bad gateway\n");
        assert_eq!(f.message, "bad gateway");
        let f = ApiFailure::from_body(503, b"");
        assert_eq!(f.message, "Service Unavailable");
    }

    #[test]
    fn exit_codes_are_distinct() {
        let codes = [
            Error::Usage("x".into()).exit_code(),
            Error::Failed("x".into()).exit_code(),
            Error::Timeout("x".into()).exit_code(),
            Error::Unreachable("x".into()).exit_code(),
            Error::Api(ApiFailure {
                code: 404,
                reason: "NotFound".into(),
                message: "m".into(),
                causes: vec![],
            })
            .exit_code(),
        ];
        assert_eq!(codes, [2, 1, 4, 5, 3]);
    }
}
