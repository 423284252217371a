//! Objects as JSON: decoding request bodies, metadata accessors, and the events.k8s.io/v1 <-> core/v1
//! Event conversion (both are served from one storage).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::kinds::Kind;

/// Largest request body accepted (Kubernetes' limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Decode a request body as JSON or YAML according to its content type.
pub fn decode_body(content_type: Option<&str>, body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Err(ApiError::BadRequest("the request body is empty".into()));
    }
    let ct = content_type.unwrap_or("application/json").split(';').next().unwrap_or("").trim();
    let value: Value = match ct {
        "application/yaml" | "application/x-yaml" | "text/yaml" | "application/apply-patch+yaml" => {
            serde_yaml_ng::from_slice(body).map_err(|e| ApiError::BadRequest(format!("the body is not valid YAML: {e}")))?
        }
        "application/json" | "" | "*/*" => serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?,
        "application/vnd.kubernetes.protobuf" => {
            return Err(ApiError::UnsupportedMediaType("application/json, application/yaml".into()))
        }
        other => return Err(ApiError::UnsupportedMediaType(format!("application/json, application/yaml (got {other})"))),
    };
    if !value.is_object() {
        return Err(ApiError::BadRequest("the body must be a JSON or YAML object".into()));
    }
    Ok(value)
}

pub fn meta(obj: &Value) -> &Value {
    obj.get("metadata").unwrap_or(&Value::Null)
}

pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj).get(field).and_then(Value::as_str).filter(|s| !s.is_empty())
}

pub fn name(obj: &Value) -> Option<&str> {
    meta_str(obj, "name")
}

pub fn uid(obj: &Value) -> Option<&str> {
    meta_str(obj, "uid")
}

pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    meta(obj)
        .get("labels")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub fn set_finalizers(obj: &mut Value, fins: &[String]) {
    let m = meta_mut(obj);
    if fins.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(fins));
    }
}

/// Finalizers that hold an object being deleted: `metadata.finalizers`, and for a Namespace also
/// `spec.finalizers` (the namespace controller's "kubernetes").
pub fn pending_finalizers(obj: &Value) -> Vec<String> {
    let mut f = finalizers(obj);
    if obj.get("kind").and_then(Value::as_str) == Some("Namespace") {
        if let Some(spec) = obj.pointer("/spec/finalizers").and_then(Value::as_array) {
            f.extend(spec.iter().filter_map(|v| v.as_str().map(str::to_string)));
        }
    }
    f
}

pub fn is_deleting(obj: &Value) -> bool {
    meta(obj).get("deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// Owner UIDs from `metadata.ownerReferences`.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    meta(obj)
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default()
}

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Fill `apiVersion` and `kind` for the kind an object is served as.
pub fn set_type(obj: &mut Value, kind: &Kind) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(kind.api_version()));
        m.insert("kind".into(), json!(kind.kind));
    }
}

/// Stored form -> served form (events.k8s.io/v1 is derived from core/v1 Event).
pub fn from_storage(kind: &Kind, mut obj: Value) -> Value {
    if kind.group == "events.k8s.io" {
        obj = event_core_to_v1(obj);
    }
    set_type(&mut obj, kind);
    obj
}

/// Served form -> stored form.
pub fn to_storage(kind: &Kind, obj: Value) -> Value {
    if kind.group == "events.k8s.io" {
        let mut core = event_v1_to_core(obj);
        core["apiVersion"] = json!("v1");
        core["kind"] = json!("Event");
        core
    } else {
        obj
    }
}

/// (events.k8s.io/v1 field, core/v1 field) pairs that carry the same meaning.
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn rename_fields(obj: Value, from_v1: bool) -> Value {
    let Value::Object(src) = obj else { return obj };
    let mut out = Map::new();
    for (k, v) in src {
        let renamed = EVENT_FIELDS
            .iter()
            .find(|(v1, core)| if from_v1 { v1 == &k } else { core == &k })
            .map(|(v1, core)| if from_v1 { core.to_string() } else { v1.to_string() });
        match (k.as_str(), renamed) {
            ("metadata" | "apiVersion" | "kind", _) => {
                out.insert(k, v);
            }
            (_, Some(new)) => {
                out.insert(new, v);
            }
            // Fields of one version with no counterpart in the other are dropped by the conversion.
            (_, None) => {}
        }
    }
    Value::Object(out)
}

pub fn event_v1_to_core(obj: Value) -> Value {
    rename_fields(obj, true)
}

pub fn event_core_to_v1(obj: Value) -> Value {
    rename_fields(obj, false)
}

/// Whether two objects differ in anything but metadata and status (what bumps `generation`).
pub fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
            m.remove("apiVersion");
            m.remove("kind");
        }
        v
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_between_versions() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "VirtualMachine", "name": "vm1"}, "note": "Started", "reason": "Started",
            "type": "Normal", "reportingController": "ferrovirt", "eventTime": "2020-01-01T00:00:00.000000Z"});
        let core = event_v1_to_core(v1.clone());
        assert_eq!(core["involvedObject"]["name"], "vm1");
        assert_eq!(core["message"], "Started");
        assert_eq!(core["reportingComponent"], "ferrovirt");
        let back = event_core_to_v1(core);
        assert_eq!(back["regarding"], v1["regarding"]);
        assert_eq!(back["note"], "Started");
    }

    #[test]
    fn bodies_decode_or_say_why() {
        assert!(decode_body(Some("application/json"), b"{\"a\":1}").is_ok());
        assert!(decode_body(Some("application/yaml"), b"a: 1\n").is_ok());
        let e = decode_body(Some("application/json"), b"{not json").unwrap_err();
        assert!(matches!(e, ApiError::BadRequest(ref m) if m.contains("not valid JSON")));
        assert!(matches!(decode_body(None, b"[1,2]"), Err(ApiError::BadRequest(_))));
        assert!(matches!(decode_body(Some("text/plain"), b"x"), Err(ApiError::UnsupportedMediaType(_))));
        assert!(matches!(decode_body(None, b""), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn generation_follows_spec_only() {
        let a = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"p": 1}});
        let mut b = a.clone();
        b["status"]["p"] = json!(2);
        b["metadata"]["labels"]["a"] = json!("2");
        assert!(!spec_changed(&a, &b));
        b["spec"]["x"] = json!(2);
        assert!(spec_changed(&a, &b));
    }
}
