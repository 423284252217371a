//! The generic object operations: get, list, create, update, patch, delete, deletecollection, for
//! every kind, on top of a [`Store`]. Everything Kubernetes-specific about writes happens here:
//! system metadata, optimistic concurrency, the status subresource, generation, finalizers and
//! graceful deletion.
//!
//! ```text
//!  request ─► decode ─► (patch: apply to current) ─► prepare (system fields) ─► admission
//!         ─► store CAS write (retry on conflict unless the client pinned a resourceVersion)
//!         ─► finalize (deleting + no finalizers left => remove) ─► response
//! ```

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Value};

use ferrovirt_machinery::patch::{self, PatchType};
use ferrovirt_machinery::selector::{FieldSelector, LabelSelector};
use ferrovirt_store::{KeyValue, ListOptions, Precondition, Store, StoreError};

use crate::admission::Operation;
use crate::error::{ApiError, ApiResult, Cause, Subject};
use crate::kinds::{self, Kind, StatusOnCreate};
use crate::object::{self, meta_mut};
use crate::request::{Query, Target};

/// How many times a write is retried on a conflict the client did not ask for.
const MAX_RETRIES: usize = 16;

/// The object layer shared by all requests.
#[derive(Clone)]
pub struct Objects {
    pub store: Arc<dyn Store>,
}

/// Propagation of a delete to dependents (ownerReferences).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// What a DELETE asked for.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Option<Propagation>,
    pub grace_period: Option<i64>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// From the query string and an optional `DeleteOptions` body.
    pub fn parse(query: &Query, body: Option<&Value>) -> ApiResult<Self> {
        let mut o = DeleteOptions { dry_run: query.dry_run(), ..Default::default() };
        let prop = |s: &str| match s {
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            "Orphan" => Ok(Propagation::Orphan),
            other => Err(ApiError::BadRequest(format!(
                "propagationPolicy {other:?} is not one of Background, Foreground, Orphan"
            ))),
        };
        if let Some(p) = query.get("propagationPolicy") {
            o.propagation = Some(prop(p)?);
        }
        if query.flag("orphanDependents") {
            o.propagation = Some(Propagation::Orphan);
        }
        o.grace_period = query.int("gracePeriodSeconds")?;
        if let Some(b) = body {
            if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation = Some(prop(p)?);
            }
            if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                o.propagation = Some(Propagation::Orphan);
            }
            if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
                o.grace_period = Some(g);
            }
            if let Some(pre) = b.get("preconditions") {
                o.uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
                o.resource_version = pre.get("resourceVersion").and_then(Value::as_str).map(str::to_string);
            }
            if b.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All")) {
                o.dry_run = true;
            }
        }
        if o.grace_period.is_some_and(|g| g < 0) {
            return Err(ApiError::BadRequest("gracePeriodSeconds must not be negative".into()));
        }
        Ok(o)
    }
}

/// Label and field selectors of a list or watch.
#[derive(Debug, Default)]
pub struct Selectors {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
}

impl Selectors {
    pub fn parse(kind: &Kind, query: &Query) -> ApiResult<Self> {
        let labels = query
            .get("labelSelector")
            .map(LabelSelector::parse)
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))?;
        let fields = query
            .get("fieldSelector")
            .map(FieldSelector::parse)
            .transpose()
            .map_err(|e| ApiError::BadRequest(format!("invalid field selector: {e}")))?;
        if let Some(f) = &fields {
            for field in f.fields() {
                if !kind.is_selectable(field) {
                    return Err(ApiError::BadRequest(format!(
                        "field label not supported: {field} (for {})",
                        kind.plural
                    )));
                }
            }
        }
        Ok(Selectors { labels, fields })
    }

    pub fn matches(&self, kind: &Kind, obj: &Value) -> bool {
        if let Some(l) = &self.labels {
            if !l.matches(&object::labels(obj)) {
                return false;
            }
        }
        if let Some(f) = &self.fields {
            if !f.matches(&|field: &str| kind.field_value(obj, field)) {
                return false;
            }
        }
        true
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }
}

/// A continue token: where the next page starts and at which revision the list is read.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: i64,
    start: String,
}

fn encode_continue(c: &Continue) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

fn decode_continue(s: &str) -> ApiResult<Continue> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| ApiError::BadRequest("continue key is not valid: it was not returned by this server".into()))
}

/// A list's outcome before it is rendered as a List or a Table.
pub struct ListResult {
    pub items: Vec<Value>,
    pub revision: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

pub fn subject(kind: &Kind, name: &str) -> Subject {
    Subject { plural: kind.plural.into(), group: kind.group.into(), kind: kind.kind.into(), name: name.into() }
}

/// Parse a client-supplied resourceVersion.
pub fn parse_rv(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .ok_or_else(|| ApiError::BadRequest(format!("invalid resource version: {rv:?}")))
}

impl Objects {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Objects { store }
    }

    /// Stored bytes -> served object with its resourceVersion.
    pub fn decode_kv(kind: &Kind, kv: &KeyValue) -> ApiResult<Value> {
        let obj: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::Internal(format!("stored object {} is corrupt: {e}", kv.key)))?;
        let mut obj = object::from_storage(kind, obj);
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        Ok(obj)
    }

    fn encode(kind: &Kind, obj: &Value) -> ApiResult<Bytes> {
        let mut stored = object::to_storage(kind, obj.clone());
        meta_mut(&mut stored).remove("resourceVersion");
        serde_json::to_vec(&stored).map(Bytes::from).map_err(|e| ApiError::Internal(e.to_string()))
    }

    fn key(t: &Target, name: &str) -> String {
        t.kind.key(t.namespace.as_deref(), name)
    }

    pub async fn get(&self, t: &Target, name: &str) -> ApiResult<Value> {
        let s = subject(t.kind, name);
        let kv = self
            .store
            .get(&Self::key(t, name))
            .await
            .map_err(|e| ApiError::from_store(e, &s))?
            .ok_or(ApiError::NotFound(s))?;
        Self::decode_kv(t.kind, &kv)
    }

    async fn get_kv(&self, t: &Target, name: &str) -> ApiResult<KeyValue> {
        let s = subject(t.kind, name);
        self.store
            .get(&Self::key(t, name))
            .await
            .map_err(|e| ApiError::from_store(e, &s))?
            .ok_or(ApiError::NotFound(s))
    }

    /// LIST with Kubernetes' resourceVersion, limit and continue semantics.
    pub async fn list(&self, t: &Target, query: &Query, sel: &Selectors) -> ApiResult<ListResult> {
        let limit = query.int("limit")?.unwrap_or(0).max(0) as usize;
        let prefix = t.kind.prefix_in(t.namespace.as_deref());
        let (mut at, mut start_after) = (None, None);
        if let Some(token) = query.get("continue") {
            let c = decode_continue(token)?;
            at = Some(c.rv);
            start_after = Some(c.start);
        } else if let Some(rv) = query.get("resourceVersion") {
            let rv = parse_rv(rv)?;
            let current = self.store.current_revision().await?;
            if query.get("resourceVersionMatch") == Some("Exact") {
                at = Some(rv);
            } else if rv > current {
                return Err(ApiError::Timeout(format!("Too large resource version: {rv}, current: {current}")));
            }
        }
        let mut items = Vec::new();
        let mut revision = at;
        let mut last_key = None;
        let mut more;
        loop {
            let want = if limit == 0 { 0 } else { (limit - items.len()).max(1) };
            let page = self
                .store
                .list(&prefix, ListOptions { start_after: start_after.clone(), limit: want, at: revision })
                .await
                .map_err(|e| match e {
                    StoreError::Compacted { .. } if query.get("continue").is_some() => ApiError::Gone(
                        "The provided continue parameter is too old to display a consistent list result. \
                         You can start a new list without the continue parameter."
                            .into(),
                    ),
                    other => ApiError::from(other),
                })?;
            revision = Some(page.revision);
            for kv in &page.items {
                last_key = Some(kv.key.clone());
                let obj = Self::decode_kv(t.kind, kv)?;
                if sel.matches(t.kind, &obj) {
                    items.push(obj);
                }
                if limit > 0 && items.len() >= limit {
                    break;
                }
            }
            let stopped_early = limit > 0 && items.len() >= limit && last_key.as_ref() != page.items.last().map(|k| &k.key);
            more = page.more || stopped_early;
            if !more || limit == 0 || items.len() >= limit {
                break;
            }
            start_after = last_key.clone();
        }
        let revision = revision.unwrap_or(0);
        let continue_token = if more {
            last_key.map(|start| encode_continue(&Continue { rv: revision, start }))
        } else {
            None
        };
        Ok(ListResult { items, revision, continue_token, remaining: None })
    }

    /// CREATE.
    pub async fn create(&self, t: &Target, mut obj: Value, query: &Query) -> ApiResult<Value> {
        let kind = t.kind;
        check_type(kind, &obj)?;
        // Namespace: from the path; a different one in the body is an error.
        if kind.namespaced {
            let ns = t.namespace.clone().ok_or_else(|| {
                ApiError::BadRequest(format!("{} must be created in a namespace", kind.plural))
            })?;
            match object::meta_str(&obj, "namespace") {
                Some(body_ns) if body_ns != ns => {
                    return Err(ApiError::BadRequest(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ))
                }
                _ => {}
            }
            meta_mut(&mut obj).insert("namespace".into(), json!(ns));
            self.check_namespace_open(&ns).await?;
        } else {
            meta_mut(&mut obj).remove("namespace");
        }
        // Name: given, or generated from generateName.
        if object::name(&obj).is_none() {
            match object::meta_str(&obj, "generateName").map(str::to_string) {
                Some(base) => {
                    let suffix = random_suffix();
                    meta_mut(&mut obj).insert("name".into(), json!(format!("{base}{suffix}")));
                }
                None => {
                    return Err(ApiError::Invalid(
                        subject(kind, ""),
                        vec![Cause {
                            reason: "FieldValueRequired".into(),
                            message: "Required value: name or generateName is required".into(),
                            field: "metadata.name".into(),
                        }],
                    ))
                }
            }
        }
        let name = object::name(&obj).unwrap_or_default().to_string();
        {
            let m = meta_mut(&mut obj);
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
            m.insert("generation".into(), json!(1));
            for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"] {
                m.remove(f);
            }
        }
        if kind.status_on_create == StatusOnCreate::Drop {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
        object::set_type(&mut obj, kind);
        let mut obj = kind.admission.admit(kind, obj, None, Operation::Create).map_err(|c| invalid(kind, &name, c))?;
        object::set_type(&mut obj, kind);
        if query.dry_run() {
            return Ok(obj);
        }
        let kv = self
            .store
            .create(&Self::key(t, &name), Self::encode(kind, &obj)?)
            .await
            .map_err(|e| ApiError::from_store(e, &subject(kind, &name)))?;
        Self::decode_kv(kind, &kv)
    }

    async fn check_namespace_open(&self, ns: &str) -> ApiResult<()> {
        let nskind = kinds::find("", "v1", "namespaces").expect("namespaces are served");
        let kv = self.store.get(&nskind.key(None, ns)).await?;
        let Some(kv) = kv else {
            return Err(ApiError::NotFound(subject(nskind, ns)));
        };
        let obj = Self::decode_kv(nskind, &kv)?;
        if object::is_deleting(&obj) {
            return Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            )));
        }
        Ok(())
    }

    /// Read-modify-write with optimistic concurrency. `mutate` gets the current object and returns
    /// the desired one (or an error, e.g. a conflict with a resourceVersion the client pinned).
    /// Retries internally when someone else wrote in between.
    pub async fn guaranteed_update<F>(&self, t: &Target, name: &str, dry_run: bool, mut mutate: F) -> ApiResult<Value>
    where
        F: FnMut(&Value) -> ApiResult<Value> + Send,
    {
        let kind = t.kind;
        let sub = t.subresource.as_deref();
        for _ in 0..MAX_RETRIES {
            let kv = self.get_kv(t, name).await?;
            let current = Self::decode_kv(kind, &kv)?;
            let desired = mutate(&current)?;
            let prepared = prepare_update(kind, &current, desired, sub)?;
            let mut next = if prepared == current {
                prepared
            } else {
                kind.admission
                    .admit(kind, prepared, Some(&current), Operation::Update)
                    .map_err(|c| invalid(kind, name, c))?
            };
            object::set_type(&mut next, kind);
            // Nothing changed once defaults are applied: Kubernetes answers with the current object
            // and writes nothing (so `kubectl apply` can say "unchanged").
            if next == current {
                return Ok(current);
            }
            bump_generation(&current, &mut next);
            if dry_run {
                return Ok(next);
            }
            // An object being deleted whose last finalizer was removed goes away now, unless it is
            // in a graceful deletion (a Pod waiting for its node agent): as in Kubernetes, only a
            // zero deletion grace period lets an update complete the deletion.
            let graceful = object::meta(&next).get("deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) > 0;
            if object::is_deleting(&next) && object::pending_finalizers(&next).is_empty() && !graceful {
                match self.store.delete(&kv.key, Precondition::ModRevision(kv.mod_revision)).await {
                    Ok((_, rev)) => {
                        meta_mut(&mut next).insert("resourceVersion".into(), json!(rev.to_string()));
                        return Ok(next);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, &subject(kind, name))),
                }
            }
            match self.store.update(&kv.key, Self::encode(kind, &next)?, kv.mod_revision).await {
                Ok(kv) => return Self::decode_kv(kind, &kv),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, &subject(kind, name))),
            }
        }
        Err(ApiError::Conflict(subject(kind, name), "too many concurrent writers; try again".into()))
    }

    /// UPDATE (PUT) of the main resource or the status subresource.
    pub async fn update(&self, t: &Target, name: &str, obj: Value, query: &Query) -> ApiResult<Value> {
        check_type(t.kind, &obj)?;
        if let Some(body_name) = object::name(&obj) {
            if body_name != name {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
        }
        if let (Some(ns), Some(body_ns)) = (&t.namespace, object::meta_str(&obj, "namespace")) {
            if body_ns != ns {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
        }
        let pinned = object::meta_str(&obj, "resourceVersion").map(parse_rv).transpose()?;
        let kind = t.kind;
        self.guaranteed_update(t, name, query.dry_run(), |current| {
            if let Some(rv) = pinned {
                if Some(rv.to_string().as_str()) != object::meta_str(current, "resourceVersion") {
                    return Err(conflict(kind, name));
                }
            }
            Ok(obj.clone())
        })
        .await
    }

    /// PATCH in any of the four patch types.
    pub async fn patch(&self, t: &Target, name: &str, content_type: &str, body: &[u8], query: &Query) -> ApiResult<Value> {
        let kind = t.kind;
        let ptype = PatchType::from_content_type(content_type).ok_or_else(|| {
            ApiError::UnsupportedMediaType(
                "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
                    .into(),
            )
        })?;
        if body.is_empty() {
            return Err(ApiError::BadRequest("the patch body is empty".into()));
        }
        let schema = match ptype {
            PatchType::StrategicMerge => Some(kind.strategic.and_then(patch::core_schema).ok_or_else(|| {
                ApiError::UnsupportedMediaType(format!(
                    "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml \
                     (strategic merge patch is not supported for {}; use --type=merge)",
                    kind.plural
                ))
            })?),
            _ => None,
        };
        if ptype == PatchType::Apply {
            return self.apply(t, name, body, query).await;
        }
        // A resourceVersion inside the patch pins the write (no retry on conflict).
        let pinned = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|p| p.pointer("/metadata/resourceVersion").and_then(Value::as_str).map(str::to_string));
        self.guaranteed_update(t, name, query.dry_run(), |current| {
            let patched = patch::apply_patch(current, ptype, body, schema).map_err(|e| patch_error(kind, name, e))?;
            if let Some(rv) = &pinned {
                if Some(rv.as_str()) != object::meta_str(current, "resourceVersion") {
                    return Err(conflict(kind, name));
                }
            }
            Ok(patched)
        })
        .await
    }

    /// Server-side apply, simplified: creates the object if absent, otherwise merges the applied
    /// configuration into it (fields the configuration names are set; others are kept).
    async fn apply(&self, t: &Target, name: &str, body: &[u8], query: &Query) -> ApiResult<Value> {
        if query.get("fieldManager").is_none() {
            return Err(ApiError::BadRequest("fieldManager is required for apply requests".into()));
        }
        let applied = object::decode_body(Some("application/yaml"), body)?;
        match self.get_kv(t, name).await {
            Err(ApiError::NotFound(_)) => {
                let mut obj = applied;
                meta_mut(&mut obj).insert("name".into(), json!(name));
                self.create(t, obj, query).await
            }
            Err(e) => Err(e),
            Ok(_) => {
                let merge = serde_json::to_vec(&applied).map_err(|e| ApiError::Internal(e.to_string()))?;
                let kind = t.kind;
                self.guaranteed_update(t, name, query.dry_run(), |current| {
                    patch::apply_merge_patch(current, &merge).map_err(|e| patch_error(kind, name, e))
                })
                .await
            }
        }
    }

    /// DELETE of one object. Returns the object as it was when deleted (or as it now is, with a
    /// deletionTimestamp, if finalizers or dependents hold it).
    pub async fn delete(&self, t: &Target, name: &str, opts: &DeleteOptions) -> ApiResult<Value> {
        let kind = t.kind;
        for _ in 0..MAX_RETRIES {
            let kv = self.get_kv(t, name).await?;
            let current = Self::decode_kv(kind, &kv)?;
            if let Some(uid) = &opts.uid {
                if Some(uid.as_str()) != object::uid(&current) {
                    return Err(ApiError::Conflict(
                        subject(kind, name),
                        format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {}", object::uid(&current).unwrap_or("")),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if Some(rv.as_str()) != object::meta_str(&current, "resourceVersion") {
                    return Err(ApiError::Conflict(
                        subject(kind, name),
                        format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            object::meta_str(&current, "resourceVersion").unwrap_or("")
                        ),
                    ));
                }
            }
            let mut fins = object::finalizers(&current);
            match opts.propagation {
                Some(Propagation::Foreground) if !fins.iter().any(|f| f == "foregroundDeletion") => {
                    fins.push("foregroundDeletion".into())
                }
                Some(Propagation::Orphan) if !fins.iter().any(|f| f == "orphan") => fins.push("orphan".into()),
                _ => {}
            }
            let graceful = kind.graceful_delete
                && opts.grace_period != Some(0)
                && current.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
            let held = !object::pending_finalizers(&current).is_empty();
            if fins.is_empty() && !held && !graceful {
                if opts.dry_run {
                    return Ok(current);
                }
                match self.store.delete(&kv.key, Precondition::ModRevision(kv.mod_revision)).await {
                    Ok((_, rev)) => {
                        let mut gone = current;
                        meta_mut(&mut gone).insert("resourceVersion".into(), json!(rev.to_string()));
                        return Ok(gone);
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(e, &subject(kind, name))),
                }
            }
            // Deletion waits: on finalizers, on dependents (foreground), or on the node agent.
            let mut next = current.clone();
            object::set_finalizers(&mut next, &fins);
            let m = meta_mut(&mut next);
            if !m.get("deletionTimestamp").is_some_and(|v| !v.is_null()) {
                m.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
                let grace = opts.grace_period.or_else(|| {
                    current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64)
                });
                m.insert("deletionGracePeriodSeconds".into(), json!(if graceful { grace.unwrap_or(30) } else { 0 }));
            } else if graceful && opts.grace_period.is_some() {
                m.insert("deletionGracePeriodSeconds".into(), json!(opts.grace_period));
            }
            if kind.kind == "Namespace" {
                next["status"] = json!({ "phase": "Terminating" });
            }
            if next == current {
                return Ok(current);
            }
            if opts.dry_run {
                return Ok(next);
            }
            match self.store.update(&kv.key, Self::encode(kind, &next)?, kv.mod_revision).await {
                Ok(kv) => return Self::decode_kv(kind, &kv),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, &subject(kind, name))),
            }
        }
        Err(ApiError::Conflict(subject(kind, name), "too many concurrent writers; try again".into()))
    }

    /// DELETE on a collection: every object the selectors match.
    pub async fn delete_collection(&self, t: &Target, query: &Query, opts: &DeleteOptions) -> ApiResult<Vec<Value>> {
        let sel = Selectors::parse(t.kind, query)?;
        let listed = self.list(t, &Query::default(), &sel).await?;
        let mut out = Vec::new();
        for obj in listed.items {
            let name = object::name(&obj).unwrap_or_default().to_string();
            let ns = object::meta_str(&obj, "namespace").map(str::to_string);
            let target = Target { kind: t.kind, namespace: ns, name: Some(name.clone()), subresource: None };
            match self.delete(&target, &name, opts).await {
                Ok(o) => out.push(o),
                Err(ApiError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

fn conflict(kind: &Kind, name: &str) -> ApiError {
    ApiError::Conflict(
        subject(kind, name),
        "the object has been modified; please apply your changes to the latest version and try again".into(),
    )
}

fn invalid(kind: &Kind, name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid(subject(kind, name), causes)
}

fn patch_error(kind: &Kind, name: &str, e: patch::PatchError) -> ApiError {
    use patch::PatchError as P;
    match e {
        // Kubernetes answers 422 when a well-formed patch cannot be applied to this object.
        P::OperationFailed { .. } | P::TestFailed { .. } => ApiError::Invalid(
            subject(kind, name),
            vec![Cause { reason: "FieldValueInvalid".into(), message: e.to_string(), field: String::new() }],
        ),
        P::StrategicMergeUnsupported | P::UnsupportedPatchType(_) => ApiError::UnsupportedMediaType(format!(
            "application/json-patch+json, application/merge-patch+json ({e})"
        )),
        other => ApiError::BadRequest(format!("the patch could not be applied to {} {name:?}: {other}", kind.kind)),
    }
}

fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Refuse a body whose apiVersion/kind name another kind.
pub fn check_type(kind: &Kind, obj: &Value) -> ApiResult<()> {
    if let Some(av) = obj.get("apiVersion").and_then(Value::as_str) {
        if av != kind.api_version() {
            return Err(ApiError::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version ({})",
                kind.api_version()
            )));
        }
    }
    if let Some(k) = obj.get("kind").and_then(Value::as_str) {
        if k != kind.kind {
            return Err(ApiError::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) for {}",
                kind.kind, kind.plural
            )));
        }
    }
    Ok(())
}

/// Carry the system-owned fields of `current` into `desired`, apply the status subresource rule and
/// the generation rule. Pure.
pub fn prepare_update(kind: &Kind, current: &Value, mut desired: Value, sub: Option<&str>) -> ApiResult<Value> {
    if !desired.is_object() {
        return Err(ApiError::BadRequest("the object must be a JSON object".into()));
    }
    match sub {
        Some("status") => {
            // Only status changes through /status.
            let mut next = current.clone();
            match desired.get("status") {
                Some(s) => next["status"] = s.clone(),
                None => {
                    if let Some(m) = next.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            return Ok(next);
        }
        None if kind.status_subresource => match current.get("status") {
            Some(s) => desired["status"] = s.clone(),
            None => {
                if let Some(m) = desired.as_object_mut() {
                    m.remove("status");
                }
            }
        },
        _ => {}
    }
    let cur_meta = object::meta(current).clone();
    let deleting = object::is_deleting(current);
    if deleting {
        let old: Vec<String> = object::finalizers(current);
        let added: Vec<String> = object::finalizers(&desired).into_iter().filter(|f| !old.contains(f)).collect();
        if !added.is_empty() {
            return Err(ApiError::Invalid(
                subject(kind, object::name(current).unwrap_or("")),
                vec![Cause {
                    reason: "FieldValueForbidden".into(),
                    message: format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
                    field: "metadata.finalizers".into(),
                }],
            ));
        }
    }
    let m = meta_mut(&mut desired);
    for f in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match cur_meta.get(f) {
            Some(v) => {
                m.insert(f.into(), v.clone());
            }
            None => {
                m.remove(f);
            }
        }
    }
    m.insert("resourceVersion".into(), cur_meta.get("resourceVersion").cloned().unwrap_or(Value::Null));
    m.remove("managedFields");
    m.remove("selfLink");
    object::set_type(&mut desired, kind);
    Ok(desired)
}

/// A change of anything but metadata and status increments `metadata.generation`.
pub fn bump_generation(current: &Value, next: &mut Value) {
    if object::spec_changed(current, next) {
        let gen = object::meta(current).get("generation").and_then(Value::as_i64).unwrap_or(1);
        meta_mut(next).insert("generation".into(), json!(gen + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_kind() -> &'static Kind {
        kinds::find("kubevirt.io", "v1", "virtualmachines").unwrap()
    }

    #[test]
    fn status_cannot_change_through_the_main_resource() {
        let cur = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "uid": "u", "generation": 1, "resourceVersion": "5"},
            "spec": {"x": 1}, "status": {"ready": true}});
        let mut want = cur.clone();
        want["status"]["ready"] = json!(false);
        want["metadata"]["uid"] = json!("forged");
        let out = prepare_update(vm_kind(), &cur, want, None).unwrap();
        assert_eq!(out["status"]["ready"], true);
        assert_eq!(out["metadata"]["uid"], "u");
        assert_eq!(out, cur);
    }

    #[test]
    fn status_subresource_changes_only_status() {
        let cur = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "generation": 1}, "spec": {"x": 1}});
        let want = json!({"metadata": {"name": "a"}, "spec": {"x": 2}, "status": {"ready": true}});
        let out = prepare_update(vm_kind(), &cur, want, Some("status")).unwrap();
        assert_eq!(out["spec"]["x"], 1);
        assert_eq!(out["status"]["ready"], true);
        assert_eq!(out["metadata"]["generation"], 1);
    }

    #[test]
    fn generation_bumps_on_spec_change() {
        let cur = json!({"metadata": {"name": "a", "generation": 3}, "spec": {"x": 1}});
        let mut out = prepare_update(vm_kind(), &cur, json!({"metadata": {"name": "a"}, "spec": {"x": 2}}), None).unwrap();
        assert_eq!(out["metadata"]["generation"], 3, "not before admission has had its say");
        bump_generation(&cur, &mut out);
        assert_eq!(out["metadata"]["generation"], 4);
        let mut same = cur.clone();
        bump_generation(&cur, &mut same);
        assert_eq!(same["metadata"]["generation"], 3);
    }

    #[test]
    fn no_new_finalizers_while_deleting() {
        let cur = json!({"metadata": {"name": "a", "deletionTimestamp": "2020-01-01T00:00:00Z", "finalizers": ["a"]}});
        let want = json!({"metadata": {"name": "a", "finalizers": ["a", "b"]}});
        assert!(matches!(prepare_update(vm_kind(), &cur, want, None), Err(ApiError::Invalid(..))));
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let c = Continue { rv: 42, start: "/registry/x/y".into() };
        assert_eq!(decode_continue(&encode_continue(&c)).unwrap(), c);
        assert!(matches!(decode_continue("!!!"), Err(ApiError::BadRequest(_))));
    }

    #[test]
    fn wrong_kind_in_body_is_refused() {
        let e = check_type(vm_kind(), &json!({"apiVersion": "v1", "kind": "Pod"})).unwrap_err();
        assert!(e.to_string().contains("does not match the expected API version"));
    }
}
