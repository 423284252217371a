//! Every failure of a request, and the one place where it becomes a Kubernetes `Status`.

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Value};

use ferrovirt_store::StoreError;

/// A field-level cause carried by a `Status` (422 Invalid and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// Which object an error is about, for the `details` of the `Status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// e.g. `virtualmachines`
    pub plural: String,
    /// e.g. `kubevirt.io`; empty for the core group
    pub group: String,
    /// e.g. `VirtualMachine` (used in Invalid messages)
    pub kind: String,
    pub name: String,
}

impl Subject {
    /// `virtualmachines.kubevirt.io` or `pods`, as Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{} \"{}\" not found", .0.qualified(), .0.name)]
    NotFound(Subject),
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{} \"{}\" already exists", .0.qualified(), .0.name)]
    AlreadyExists(Subject),
    #[error("Operation cannot be fulfilled on {} \"{}\": {}", .0.qualified(), .0.name, .1)]
    Conflict(Subject, String),
    #[error("{}", invalid_message(.0, .1))]
    Invalid(Subject, Vec<Cause>),
    #[error("{0}")]
    Gone(String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    #[error("only the following media types are accepted: {0}")]
    NotAcceptable(String),
    #[error("the request body is too large: limit is {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    #[error("Internal error occurred: {0}")]
    Internal(String),
}

fn invalid_message(subject: &Subject, causes: &[Cause]) -> String {
    let kind = if subject.group.is_empty() {
        subject.kind.clone()
    } else {
        format!("{}.{}", subject.kind, subject.group)
    };
    let details: Vec<String> = causes
        .iter()
        .map(|c| if c.field.is_empty() { c.message.clone() } else { format!("{}: {}", c.field, c.message) })
        .collect();
    match details.len() {
        0 => format!("{kind} \"{}\" is invalid", subject.name),
        1 => format!("{kind} \"{}\" is invalid: {}", subject.name, details[0]),
        _ => format!("{kind} \"{}\" is invalid: [{}]", subject.name, details.join(", ")),
    }
}

impl ApiError {
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists(_) | ApiError::Conflict(..) => StatusCode::CONFLICT,
            ApiError::Invalid(..) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::NotFound(_) | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists(_) => "AlreadyExists",
            ApiError::Conflict(..) => "Conflict",
            ApiError::Invalid(..) => "Invalid",
            ApiError::Gone(_) => "Expired",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::TooLarge { .. } => "RequestEntityTooLarge",
            ApiError::Unavailable(_) => "ServiceUnavailable",
            ApiError::Timeout(_) => "Timeout",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The `Status` object Kubernetes clients expect.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        let subject = match self {
            ApiError::NotFound(s) | ApiError::AlreadyExists(s) | ApiError::Conflict(s, _) => Some((s, &[][..])),
            ApiError::Invalid(s, causes) => Some((s, causes.as_slice())),
            _ => None,
        };
        if let Some((s, causes)) = subject {
            let mut details = json!({ "name": s.name, "kind": s.plural });
            if !s.group.is_empty() {
                details["group"] = json!(s.group);
            }
            if matches!(self, ApiError::Invalid(..)) {
                details["kind"] = json!(s.kind);
            }
            if !causes.is_empty() {
                details["causes"] = Value::Array(
                    causes
                        .iter()
                        .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                        .collect(),
                );
            }
            status["details"] = details;
        }
        status
    }

    /// Map a storage failure about `subject` to the API's answer.
    pub fn from_store(err: StoreError, subject: &Subject) -> ApiError {
        match err {
            StoreError::AlreadyExists { .. } => ApiError::AlreadyExists(subject.clone()),
            StoreError::NotFound { .. } => ApiError::NotFound(subject.clone()),
            StoreError::Conflict { .. } => ApiError::Conflict(
                subject.clone(),
                "the object has been modified; please apply your changes to the latest version and try again".into(),
            ),
            StoreError::Compacted { requested, compacted } => {
                ApiError::Gone(format!("too old resource version: {requested} ({compacted})"))
            }
            StoreError::FutureRevision { requested, current } => ApiError::Timeout(format!(
                "Too large resource version: {requested}, current: {current}"
            )),
            // "storage unavailable: etcd has no quorum or cannot be reached (...): <cause>": nothing
            // was changed, the client may try again.
            err @ StoreError::Unavailable(_) => ApiError::Unavailable(err.to_string()),
            // A write whose fate is unknown: 504, as Kubernetes answers a storage timeout, so the
            // client reads before it writes again (a create tried again gets 409 if it was made).
            err @ StoreError::OutcomeUnknown(_) => ApiError::Timeout(err.to_string()),
            StoreError::Internal(msg) => ApiError::Internal(msg),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::from_store(err, &Subject::default())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.code().is_server_error() {
            tracing::warn!(error = %self, "request failed");
        }
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        (self.code(), [(http::header::CONTENT_TYPE, "application/json")], body).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_names_each_field() {
        let s = Subject { plural: "virtualmachines".into(), group: "kubevirt.io".into(), kind: "VirtualMachine".into(), name: "vm1".into() };
        let err = ApiError::Invalid(
            s,
            vec![
                Cause { reason: "FieldValueInvalid".into(), message: "Invalid value: x".into(), field: "spec.running".into() },
                Cause { reason: "FieldValueRequired".into(), message: "Required value".into(), field: "spec.template".into() },
            ],
        );
        let st = err.to_status();
        assert_eq!(st["code"], 422);
        assert_eq!(st["reason"], "Invalid");
        assert_eq!(st["details"]["causes"][1]["field"], "spec.template");
        assert_eq!(
            st["message"],
            "VirtualMachine.kubevirt.io \"vm1\" is invalid: [spec.running: Invalid value: x, spec.template: Required value]"
        );
    }

    #[test]
    fn storage_failures_become_503_or_504_with_the_cause() {
        let s = Subject { plural: "virtualmachines".into(), group: "kubevirt.io".into(), name: "vm1".into(), ..Default::default() };
        let cause = "etcd has no quorum or cannot be reached (http://127.0.0.1:1, http://127.0.0.1:2): etcdserver: no leader (create /registry/x, for 5.0s)";
        let st = ApiError::from_store(StoreError::Unavailable(cause.into()), &s).to_status();
        assert_eq!((st["code"].as_u64(), st["reason"].as_str()), (Some(503), Some("ServiceUnavailable")));
        assert_eq!(st["message"], format!("storage unavailable: {cause}"));
        let st = ApiError::from_store(StoreError::OutcomeUnknown(cause.into()), &s).to_status();
        assert_eq!((st["code"].as_u64(), st["reason"].as_str()), (Some(504), Some("Timeout")));
        assert_eq!(st["message"], format!("storage unavailable, the write may or may not have been applied: {cause}"));
    }

    #[test]
    fn not_found_message_matches_kubernetes() {
        let s = Subject { plural: "pods".into(), name: "p".into(), ..Default::default() };
        assert_eq!(ApiError::NotFound(s).to_string(), "pods \"p\" not found");
    }
}
