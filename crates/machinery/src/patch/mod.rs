//! PATCH bodies, as the Kubernetes API server applies them.
//!
//! The request's `Content-Type` picks the format ([`PatchType::from_content_type`]):
//!
//! | content type                              | format                 | function                         |
//! |-------------------------------------------|------------------------|----------------------------------|
//! | `application/json-patch+json`             | RFC 6902 JSON patch    | [`apply_json_patch`]             |
//! | `application/merge-patch+json`            | RFC 7386 merge patch   | [`apply_merge_patch`]            |
//! | `application/strategic-merge-patch+json`  | strategic merge patch  | [`apply_strategic_merge_patch`]  |
//! | `application/apply-patch+yaml`            | server-side apply      | not applied here                 |
//!
//! - **JSON patch** is a list of operations (`add`, `remove`, `replace`, `move`, `copy`, `test`)
//!   applied in order. It is atomic: when any operation fails (a `test` that does not match, a
//!   path that does not exist) the whole patch fails and the document is left as it was. The
//!   error names the index and path of the failing operation. kube-rs' finalizer helper relies
//!   on this.
//! - **JSON merge patch** is an object: its keys overwrite the document's, objects merge
//!   recursively, `null` deletes a key, and every other value (lists included) replaces.
//! - **Strategic merge patch** is a merge patch that knows, per field, how lists merge: see
//!   [`apply_strategic_merge_patch`] and [`MergeSchema`]. Only kinds with a schema accept it;
//!   Kubernetes answers 415 Unsupported Media Type for custom resources, and so should we
//!   ([`core_schema`] returns `None`, [`apply_patch`] returns
//!   [`PatchError::StrategicMergeUnsupported`]).
//!
//! Every function takes the stored object by reference and returns the patched copy; the input
//! is never modified, so a failed patch cannot leave a half-applied object behind.

mod schema;
mod strategic;

use serde_json::{Map, Value};

pub use schema::{core_schema, FieldStrategy, MergeSchema};
pub use strategic::apply_strategic_merge_patch;

/// Kubernetes caps a JSON patch at this many operations (`maxJSONPatchOperations`).
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The patch formats the Kubernetes API accepts, one per `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PatchType {
    /// RFC 6902 JSON patch, `application/json-patch+json`.
    Json,
    /// RFC 7386 JSON merge patch, `application/merge-patch+json`.
    Merge,
    /// Kubernetes strategic merge patch, `application/strategic-merge-patch+json`.
    StrategicMerge,
    /// Server-side apply, `application/apply-patch+yaml`.
    Apply,
}

impl PatchType {
    /// Every patch type, in the order Kubernetes lists them in a 415 response.
    pub const ALL: [PatchType; 4] = [
        PatchType::Json,
        PatchType::Merge,
        PatchType::StrategicMerge,
        PatchType::Apply,
    ];

    /// The patch type of a request's `Content-Type` header value. Parameters such as
    /// `; charset=utf-8` and letter case are ignored. `None` for anything else.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        Self::ALL
            .into_iter()
            .find(|t| t.content_type().eq_ignore_ascii_case(media_type))
    }

    /// The media type that names this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

impl std::fmt::Display for PatchType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.content_type())
    }
}

/// Why a patch could not be applied. Every variant is the client's fault (HTTP 400 or 422),
/// except [`PatchError::StrategicMergeUnsupported`] and [`PatchError::UnsupportedPatchType`]
/// (HTTP 415).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The body is not JSON.
    #[error("malformed patch body: {source}")]
    MalformedBody {
        /// Line of the first error, from 1.
        line: usize,
        /// Column of the first error, from 1.
        column: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The body is JSON of the wrong shape (an array where an object belongs, ...).
    #[error("{patch_type} patch must be a JSON {expected}, found {found}")]
    WrongShape {
        /// The patch format.
        patch_type: PatchType,
        /// What the format requires.
        expected: &'static str,
        /// What the body holds.
        found: &'static str,
    },
    /// A JSON patch operation is not a well-formed RFC 6902 operation.
    #[error("json patch operation {index} is invalid: {reason}")]
    InvalidOperation {
        /// Index of the operation in the patch, from 0.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A JSON patch has more operations than [`MAX_JSON_PATCH_OPERATIONS`].
    #[error("json patch has {count} operations, more than the limit of {limit}")]
    TooManyOperations {
        /// Operations in the patch.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A JSON patch operation could not be applied; nothing was changed.
    #[error("json patch operation {index} ({op}) failed at path {path:?}: {reason}")]
    OperationFailed {
        /// Index of the operation in the patch, from 0.
        index: usize,
        /// The operation's name (`add`, `remove`, ...).
        op: &'static str,
        /// The operation's `path`.
        path: String,
        /// Why it failed.
        reason: String,
    },
    /// A JSON patch `test` operation found a different value; nothing was changed.
    #[error(
        "json patch operation {index} (test) failed: the value at path {path:?} is not the expected value"
    )]
    TestFailed {
        /// Index of the operation in the patch, from 0.
        index: usize,
        /// The operation's `path`.
        path: String,
    },
    /// A strategic merge patch uses a `$`-key that is not a known directive, or `$patch` with
    /// a value other than `replace`, `delete` or `merge`.
    #[error("unknown strategic merge patch directive {directive} at {path}")]
    UnknownDirective {
        /// Where in the patch, as `spec.containers[0]`.
        path: String,
        /// The directive as written (`$foo`, or `$patch: foo`).
        directive: String,
    },
    /// An element of a list that merges by key lacks the key.
    #[error("strategic merge patch element at {path} has no merge key {key:?}")]
    MissingMergeKey {
        /// Where in the patch, as `spec.containers[1]`.
        path: String,
        /// The merge key of the list.
        key: String,
    },
    /// A strategic merge patch is malformed in some other way.
    #[error("invalid strategic merge patch at {path}: {reason}")]
    InvalidStrategicPatch {
        /// Where in the patch.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The resource has no merge schema (a custom resource): strategic merge patch is refused,
    /// as Kubernetes does, with 415.
    #[error(
        "strategic merge patch is not supported for this resource; use a JSON merge patch \
         (application/merge-patch+json) or a JSON patch (application/json-patch+json)"
    )]
    StrategicMergeUnsupported,
    /// The patch type is not applied by this crate (server-side apply).
    #[error("patch type {0} is not supported")]
    UnsupportedPatchType(PatchType),
}

/// Parses a patch body as JSON, reporting the parser's line and column when it is not.
pub fn parse_patch_body(body: &[u8]) -> Result<Value, PatchError> {
    serde_json::from_slice(body).map_err(|source| PatchError::MalformedBody {
        line: source.line(),
        column: source.column(),
        source,
    })
}

/// Applies `body`, a patch of `patch_type`, to `doc`, the stored object.
///
/// `schema` is the merge schema of the object's kind ([`core_schema`]); without one, a strategic
/// merge patch fails with [`PatchError::StrategicMergeUnsupported`]. Server-side apply fails with
/// [`PatchError::UnsupportedPatchType`].
pub fn apply_patch(
    doc: &Value,
    patch_type: PatchType,
    body: &[u8],
    schema: Option<&MergeSchema>,
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => apply_json_patch(doc, body),
        PatchType::Merge => apply_merge_patch(doc, body),
        PatchType::StrategicMerge => {
            let schema = schema.ok_or(PatchError::StrategicMergeUnsupported)?;
            let patch = parse_patch_body(body)?;
            apply_strategic_merge_patch(doc, &patch, schema)
        }
        PatchType::Apply => Err(PatchError::UnsupportedPatchType(PatchType::Apply)),
    }
}

/// Applies an RFC 6902 JSON patch to `doc` and returns the result.
///
/// Atomic: on any failure `doc` is untouched and the error names the failing operation's index
/// and path ([`PatchError::TestFailed`], [`PatchError::OperationFailed`]).
pub fn apply_json_patch(doc: &Value, patch_body: &[u8]) -> Result<Value, PatchError> {
    let operations = parse_json_patch(patch_body)?;
    // Work on a copy: the caller's document is never touched, so a failure half-way through
    // leaves nothing to undo.
    let mut patched = doc.clone();
    json_patch::patch_unsafe(&mut patched, &operations)
        .map_err(|e| operation_error(&operations, e))?;
    Ok(patched)
}

fn parse_json_patch(body: &[u8]) -> Result<Vec<json_patch::PatchOperation>, PatchError> {
    let items = match parse_patch_body(body)? {
        Value::Array(items) => items,
        other => {
            return Err(PatchError::WrongShape {
                patch_type: PatchType::Json,
                expected: "array of operations",
                found: json_kind(&other),
            })
        }
    };
    if items.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            count: items.len(),
            limit: MAX_JSON_PATCH_OPERATIONS,
        });
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            if !item.is_object() {
                return Err(PatchError::InvalidOperation {
                    index,
                    reason: format!(
                        "an operation must be a JSON object, found {}",
                        json_kind(&item)
                    ),
                });
            }
            serde_json::from_value(item).map_err(|e| PatchError::InvalidOperation {
                index,
                reason: e.to_string(),
            })
        })
        .collect()
}

fn operation_error(
    operations: &[json_patch::PatchOperation],
    error: json_patch::PatchError,
) -> PatchError {
    use json_patch::{PatchErrorKind, PatchOperation};
    let index = error.operation;
    let path = error.path.to_string();
    let (op, from) = match operations.get(index) {
        Some(PatchOperation::Add(_)) => ("add", None),
        Some(PatchOperation::Remove(_)) => ("remove", None),
        Some(PatchOperation::Replace(_)) => ("replace", None),
        Some(PatchOperation::Move(m)) => ("move", Some(m.from.to_string())),
        Some(PatchOperation::Copy(c)) => ("copy", Some(c.from.to_string())),
        Some(PatchOperation::Test(_)) => ("test", None),
        None => ("unknown", None),
    };
    let reason = match error.kind {
        PatchErrorKind::TestFailed => return PatchError::TestFailed { index, path },
        PatchErrorKind::InvalidPointer => match op {
            "add" => "the parent of the path does not exist, or the array index is out of range"
                .to_owned(),
            "copy" | "move" => {
                "the target's parent does not exist, or the array index is out of range".to_owned()
            }
            _ => "the path does not exist".to_owned(),
        },
        PatchErrorKind::InvalidFromPointer => {
            format!(
                "the \"from\" path {:?} does not exist",
                from.unwrap_or_default()
            )
        }
        PatchErrorKind::CannotMoveInsideItself => {
            "a value cannot be moved into one of its own children".to_owned()
        }
        other => other.to_string(),
    };
    PatchError::OperationFailed {
        index,
        op,
        path,
        reason,
    }
}

/// Applies an RFC 7386 JSON merge patch to `doc` and returns the result.
///
/// The patch must be a JSON object (a resource is an object; a scalar or list patch would
/// replace it wholesale, which the API server never wants). Keys keep their order; new keys go
/// to the end.
pub fn apply_merge_patch(doc: &Value, patch_body: &[u8]) -> Result<Value, PatchError> {
    let patch = parse_patch_body(patch_body)?;
    let Value::Object(patch) = &patch else {
        return Err(PatchError::WrongShape {
            patch_type: PatchType::Merge,
            expected: "object",
            found: json_kind(&patch),
        });
    };
    let mut patched = match doc {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    merge_into(&mut patched, patch);
    Ok(Value::Object(patched))
}

/// RFC 7386 on maps. Deletion uses `shift_remove` so the remaining keys keep their order.
fn merge_into(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.shift_remove(key);
            }
            Value::Object(sub_patch) => match target.get_mut(key) {
                Some(Value::Object(sub_target)) => merge_into(sub_target, sub_patch),
                _ => {
                    let mut fresh = Map::new();
                    merge_into(&mut fresh, sub_patch);
                    target.insert(key.clone(), Value::Object(fresh));
                }
            },
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// A short name for the JSON type of `value`, for error messages.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
