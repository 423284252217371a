//! The `scale` subresource (`autoscaling/v1` Scale) of kinds with replicas, so that
//! `kubectl scale vmirs X --replicas N` works.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, Method, StatusCode};
use serde_json::{json, Value};

use ferrovirt_machinery::patch::{self, PatchType};

use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::request::{Query, Target};
use crate::rest::Objects;

/// The Scale view of an object with `spec.replicas`.
pub fn to_scale(obj: &Value) -> Value {
    let m = object::meta(obj);
    let selector = obj
        .pointer("/status/labelSelector")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            obj.pointer("/spec/selector/matchLabels")
                .and_then(Value::as_object)
                .map(|l| l.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
                .unwrap_or_default()
        });
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": { "replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
        "status": { "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector },
    })
}

fn replicas_of(scale: &Value) -> ApiResult<i64> {
    let r = scale
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .ok_or_else(|| ApiError::BadRequest("spec.replicas of the Scale must be an integer".into()))?;
    if r < 0 {
        return Err(ApiError::BadRequest(format!("spec.replicas must be >= 0, got {r}")));
    }
    Ok(r)
}

pub async fn handle(
    objects: &Objects,
    t: &Target,
    method: &Method,
    content_type: Option<&str>,
    body: Bytes,
    query: &Query,
) -> ApiResult<Response> {
    let name = t.name.clone().ok_or(ApiError::NoRoute)?;
    let main = Target { subresource: None, ..t.clone() };
    let ok = |v: Value| (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(&v).unwrap_or_default()).into_response();
    let desired: Option<(i64, Option<String>)> = match *method {
        Method::GET => return Ok(ok(to_scale(&objects.get(&main, &name).await?))),
        Method::PUT => {
            let s = object::decode_body(content_type, &body)?;
            Some((replicas_of(&s)?, object::meta_str(&s, "resourceVersion").map(str::to_string)))
        }
        Method::PATCH => {
            let ct = content_type.unwrap_or("").split(';').next().unwrap_or("").trim();
            let current = to_scale(&objects.get(&main, &name).await?);
            let patched = match PatchType::from_content_type(ct) {
                Some(PatchType::Json) => patch::apply_json_patch(&current, &body),
                Some(PatchType::Merge) | Some(PatchType::StrategicMerge) => patch::apply_merge_patch(&current, &body),
                _ => return Err(ApiError::UnsupportedMediaType("application/json-patch+json, application/merge-patch+json".into())),
            }
            .map_err(|e| ApiError::BadRequest(format!("the patch could not be applied to the scale of {name:?}: {e}")))?;
            Some((replicas_of(&patched)?, None))
        }
        _ => return Err(ApiError::MethodNotAllowed),
    };
    let (replicas, pinned) = desired.expect("set above");
    let kind = t.kind;
    let updated = objects
        .guaranteed_update(&main, &name, query.dry_run(), |cur| {
            if let Some(rv) = &pinned {
                if Some(rv.as_str()) != object::meta_str(cur, "resourceVersion") {
                    return Err(ApiError::Conflict(crate::rest::subject(kind, &name), "the object has been modified; please apply your changes to the latest version and try again".into()));
                }
            }
            let mut next = cur.clone();
            next["spec"]["replicas"] = json!(replicas);
            Ok(next)
        })
        .await?;
    Ok(ok(to_scale(&updated)))
}
