//! `fvctl apply -f`: declarative, idempotent updates, as kubectl's client-side apply does them.
//!
//! ```text
//!   manifest ─strip server fields─▶ modified (+ last-applied annotation = modified)
//!   live object absent ───────────▶ POST modified                              "created"
//!   live object present ──────────▶ patch = three_way(last-applied, modified, live)
//!        patch empty ─────────────▶ nothing sent                               "unchanged"
//!        patch sent (merge patch) ─▶ resourceVersion moved? "configured" : "unchanged"
//! ```
//!
//! The three-way merge sets what the manifest says where the live object differs, and removes
//! fields that the previous apply set and this manifest no longer has; fields that others set
//! (the server's defaults, the controller's) are left alone. The last-applied configuration is kept
//! in kubectl's annotation, so `kubectl apply` and `fvctl apply` share it. The server writes
//! nothing for a patch that changes nothing, which is how a patch of a field that the server
//! normalises back still reads "unchanged".

use serde_json::{Map, Value};

use crate::api::Rest;
use crate::errors::{Error, Result};
use crate::manifest::{self, Manifest, LAST_APPLIED};
use crate::resources::ResourceKind;

/// What apply does with one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The object does not exist: create it as given.
    Create(Value),
    /// The object exists and differs: send this JSON merge patch.
    Patch(Value),
    /// The object exists and already is as the manifest says.
    Unchanged,
}

/// The manifest as apply sends it: server fields stripped, the last-applied annotation set to the
/// manifest itself.
pub fn modified(desired: &Value) -> Value {
    let clean = manifest::strip_server_fields(desired);
    let text = serde_json::to_string(&clean).unwrap_or_default();
    let mut out = clean;
    if let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(LAST_APPLIED.into(), Value::String(text));
        }
    }
    out
}

/// The decision for `desired` given the live object (if any). Pure.
pub fn decide(desired: &Value, live: Option<&Value>) -> Decision {
    let modified = modified(desired);
    let Some(live) = live else {
        return Decision::Create(modified);
    };
    let original: Option<Value> = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok());
    let patch = three_way(original.as_ref(), &modified, live);
    if patch.as_object().is_some_and(Map::is_empty) {
        Decision::Unchanged
    } else {
        Decision::Patch(patch)
    }
}

/// A JSON merge patch that turns `current` into what `modified` says, deleting what `original`
/// (the previous apply) had and `modified` no longer has. Lists are replaced whole, as merge
/// patches do.
pub fn three_way(original: Option<&Value>, modified: &Value, current: &Value) -> Value {
    Value::Object(diff(
        original.and_then(Value::as_object),
        modified.as_object().unwrap_or(&Map::new()),
        current.as_object(),
    ))
}

fn diff(
    original: Option<&Map<String, Value>>,
    modified: &Map<String, Value>,
    current: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut patch = Map::new();
    for (key, want) in modified {
        let have = current.and_then(|c| c.get(key));
        let before = original.and_then(|o| o.get(key)).and_then(Value::as_object);
        match (want, have) {
            // An explicit null in the manifest removes the field.
            (Value::Null, Some(h)) if !h.is_null() => {
                patch.insert(key.clone(), Value::Null);
            }
            (Value::Null, _) => {}
            (Value::Object(w), Some(Value::Object(h))) => {
                let sub = diff(before, w, Some(h));
                if !sub.is_empty() {
                    patch.insert(key.clone(), Value::Object(sub));
                }
            }
            _ if Some(want) != have => {
                patch.insert(key.clone(), want.clone());
            }
            _ => {}
        }
    }
    if let Some(original) = original {
        for key in original.keys() {
            if !modified.contains_key(key)
                && current.is_some_and(|c| c.get(key).is_some_and(|v| !v.is_null()))
            {
                patch.insert(key.clone(), Value::Null);
            }
        }
    }
    patch
}

/// What happened to one object, as printed: `created`, `configured`, `unchanged`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// Applies one manifest object; returns the kind, name and outcome.
pub async fn apply_one(
    rest: &Rest,
    m: &Manifest,
    namespace: &str,
    explicit_namespace: bool,
    dry_run: bool,
) -> Result<(&'static ResourceKind, String, Outcome)> {
    let kind = rest.discover(m.api_version(), m.kind()).await?;
    let name = m
        .name()
        .ok_or_else(|| {
            Error::Usage(format!(
                "{}: apply needs metadata.name (generateName is for create)",
                m.source
            ))
        })?
        .to_string();
    let mut desired = m.object.clone();
    let ns = if kind.namespaced {
        let ns = manifest::namespace_for(m, namespace, explicit_namespace)?;
        manifest::set_namespace(&mut desired, &ns);
        Some(ns)
    } else {
        None
    };
    // A conflict means someone wrote between our read and our patch: read again and retry.
    for _ in 0..5 {
        let live = rest.get_opt(kind, ns.as_deref(), &name).await?;
        match decide(&desired, live.as_ref()) {
            Decision::Unchanged => return Ok((kind, name, Outcome::Unchanged)),
            Decision::Create(obj) => match rest.create(kind, ns.as_deref(), &obj, dry_run).await {
                Ok(_) => return Ok((kind, name, Outcome::Created)),
                Err(Error::Api(f)) if f.is_conflict() => continue,
                Err(e) => return Err(e),
            },
            Decision::Patch(patch) => {
                let live = live.unwrap_or_default();
                let mut pinned = patch.clone();
                // Pin the patch to what the three-way merge was computed against.
                if let (Some(rv), Some(p)) = (
                    live.pointer("/metadata/resourceVersion").cloned(),
                    pinned.as_object_mut(),
                ) {
                    let meta = p
                        .entry("metadata")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(meta) = meta.as_object_mut() {
                        meta.insert("resourceVersion".into(), rv);
                    }
                }
                match rest
                    .patch(
                        kind,
                        ns.as_deref(),
                        &name,
                        "application/merge-patch+json",
                        &pinned,
                        dry_run,
                    )
                    .await
                {
                    Ok(after) => {
                        let before_rv = live.pointer("/metadata/resourceVersion");
                        let after_rv = after.pointer("/metadata/resourceVersion");
                        let changed = if dry_run {
                            after != live
                        } else {
                            before_rv != after_rv
                        };
                        let outcome = if changed {
                            Outcome::Configured
                        } else {
                            Outcome::Unchanged
                        };
                        return Ok((kind, name, outcome));
                    }
                    Err(Error::Api(f)) if f.is_conflict() => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Err(Error::Failed(format!(
        "{} {name:?} kept changing while being applied; try again",
        kind.qualified_singular()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm(strategy: &str, memory: &str) -> Value {
        json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "default", "labels": {"app": "a"}},
            "spec": {"runStrategy": strategy, "template": {"spec": {"domain": {"resources": {"requests": {"memory": memory}}}}}}
        })
    }

    /// What the server would hold after creating `m`: the manifest plus server fields and defaults.
    fn live_from(m: &Value) -> Value {
        let mut live = m.clone();
        live["metadata"]["uid"] = json!("u1");
        live["metadata"]["resourceVersion"] = json!("7");
        live["metadata"]["creationTimestamp"] = json!("2024-01-01T00:00:00Z");
        live["spec"]["template"]["spec"]["domain"]["machine"] = json!({"type": "q35"});
        live["status"] = json!({"printableStatus": "Stopped"});
        live
    }

    fn apply_patch(target: &Value, patch: &Value) -> Value {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                let mut out = t.clone();
                for (k, v) in p {
                    if v.is_null() {
                        out.remove(k);
                    } else {
                        let merged = apply_patch(out.get(k).unwrap_or(&Value::Null), v);
                        out.insert(k.clone(), merged);
                    }
                }
                Value::Object(out)
            }
            (_, p) => p.clone(),
        }
    }

    #[test]
    fn absent_objects_are_created_with_the_annotation() {
        let Decision::Create(obj) = decide(&vm("Always", "128Mi"), None) else {
            panic!()
        };
        let annotation = obj["metadata"]["annotations"][LAST_APPLIED]
            .as_str()
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(annotation).unwrap(),
            vm("Always", "128Mi")
        );
    }

    #[test]
    fn applying_the_same_manifest_twice_is_unchanged() {
        let Decision::Create(created) = decide(&vm("Always", "128Mi"), None) else {
            panic!()
        };
        let live = live_from(&created);
        assert_eq!(
            decide(&vm("Always", "128Mi"), Some(&live)),
            Decision::Unchanged
        );
    }

    #[test]
    fn get_output_applies_back_without_fighting_defaults() {
        let Decision::Create(created) = decide(&vm("Always", "128Mi"), None) else {
            panic!()
        };
        let live = live_from(&created);
        // `fvctl get vm vm1 -o yaml` → apply: the defaults it shows are kept, status ignored; only
        // the annotation (now recording the fuller manifest) changes.
        let Decision::Patch(p) = decide(&live, Some(&live)) else {
            panic!()
        };
        assert_eq!(
            p.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["metadata"]
        );
        let after = apply_patch(&live, &p);
        assert_eq!(after["spec"], live["spec"]);
        // ... and applying it once more is unchanged.
        assert_eq!(decide(&live, Some(&after)), Decision::Unchanged);
    }

    #[test]
    fn changes_are_patched_and_dropped_fields_removed() {
        let Decision::Create(created) = decide(&vm("Always", "128Mi"), None) else {
            panic!()
        };
        let live = live_from(&created);
        let mut next = vm("Halted", "256Mi");
        next["metadata"].as_object_mut().unwrap().remove("labels");
        let Decision::Patch(p) = decide(&next, Some(&live)) else {
            panic!()
        };
        assert_eq!(p["spec"]["runStrategy"], "Halted");
        assert_eq!(
            p["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"],
            "256Mi"
        );
        assert_eq!(p["metadata"]["labels"], Value::Null);
        assert!(
            p["metadata"].get("labels").is_some(),
            "labels are removed with null: {p}"
        );
        // The server's default (machine) is not touched.
        assert!(p["spec"]["template"]["spec"]["domain"]
            .get("machine")
            .is_none());
        let after = apply_patch(&live, &p);
        assert_eq!(
            after["spec"]["template"]["spec"]["domain"]["machine"]["type"],
            "q35"
        );
        assert!(after["metadata"].get("labels").is_none());
        assert_eq!(decide(&next, Some(&after)), Decision::Unchanged);
    }

    #[test]
    fn fields_set_by_others_are_kept() {
        // No last-applied annotation (created with `create -f`): nothing is removed.
        let mut live = live_from(&vm("Always", "128Mi"));
        live["metadata"]["labels"]["extra"] = json!("x");
        let Decision::Patch(p) = decide(&vm("Always", "128Mi"), Some(&live)) else {
            panic!()
        };
        assert_eq!(
            p.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["metadata"]
        );
        assert!(p["metadata"].get("labels").is_none());
    }

    #[test]
    fn lists_are_replaced_whole() {
        let original = json!({"spec": {"l": [1, 2]}});
        let modified = json!({"spec": {"l": [1]}});
        let current = json!({"spec": {"l": [1, 2], "x": 1}});
        assert_eq!(
            three_way(Some(&original), &modified, &current),
            json!({"spec": {"l": [1]}})
        );
        assert_eq!(three_way(Some(&original), &original, &current), json!({}));
    }
}
