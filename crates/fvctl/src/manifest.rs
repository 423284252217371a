//! Manifests as users hand them over: files, folders or stdin (`-f -`), YAML with several
//! documents or JSON, `kind: List` expanded into its items; and the server-owned fields stripped so
//! that `fvctl get -o yaml` output goes back in through `apply` and `create`.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::errors::{Error, Result};

/// The annotation that holds the configuration last applied (kubectl's name, so both tools see
/// the same history).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Metadata fields the server owns; they are dropped from manifests before create and apply.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// One object from a manifest, with where it came from (for messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// `vm.yaml`, `vm.yaml (document 2)`, `<stdin>`.
    pub source: String,
    pub object: Value,
}

impl Manifest {
    pub fn api_version(&self) -> &str {
        self.object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn kind(&self) -> &str {
        self.object
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn name(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
    }

    pub fn namespace(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
    }
}

/// Reads every `-f` argument: a file, a folder (its `.yaml`, `.yml` and `.json` files, sorted), or
/// `-` for stdin.
pub fn read_all(sources: &[String]) -> Result<Vec<Manifest>> {
    if sources.is_empty() {
        return Err(Error::Usage(
            "give the manifest with -f FILE (or -f - for stdin)".into(),
        ));
    }
    let mut out = Vec::new();
    for source in sources {
        if source == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| Error::io("cannot read the manifest from stdin", e))?;
            out.extend(parse("<stdin>", &text)?);
            continue;
        }
        let path = Path::new(source);
        if path.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| Error::io(format!("cannot read folder {source}"), e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && matches!(
                            p.extension().and_then(|e| e.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                })
                .collect();
            files.sort();
            for f in files {
                out.extend(read_file(&f)?);
            }
        } else {
            out.extend(read_file(path)?);
        }
    }
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "no objects in {}",
            sources.join(", ")
        )));
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<Vec<Manifest>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Usage(format!("cannot read {}: {e}", path.display())))?;
    parse(&path.display().to_string(), &text)
}

/// Parses YAML (several `---` documents) or JSON; `List`s are expanded; empty documents skipped.
/// Each object must have `apiVersion`, `kind` and `metadata.name` (or `generateName`).
pub fn parse(source: &str, text: &str) -> Result<Vec<Manifest>> {
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(doc)
            .map_err(|e| Error::Usage(format!("{source}: not valid YAML or JSON: {e}")))?;
        docs.push((i + 1, value));
    }
    let several = docs.len() > 1;
    let mut out = Vec::new();
    for (n, value) in docs {
        let where_ = if several {
            format!("{source} (document {n})")
        } else {
            source.to_string()
        };
        match value {
            Value::Null => continue,
            Value::Object(_) => {}
            _ => {
                return Err(Error::Usage(format!(
                    "{where_}: a manifest must be a mapping with apiVersion, kind and metadata"
                )))
            }
        }
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind == "List"
            || (kind.ends_with("List") && value.get("items").is_some_and(Value::is_array))
        {
            for (j, item) in value
                .get("items")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                out.push(check(Manifest {
                    source: format!("{where_} item {}", j + 1),
                    object: item.clone(),
                })?);
            }
            continue;
        }
        out.push(check(Manifest {
            source: where_,
            object: value,
        })?);
    }
    Ok(out)
}

fn check(m: Manifest) -> Result<Manifest> {
    if m.api_version().is_empty() {
        return Err(Error::Usage(format!("{}: apiVersion is missing", m.source)));
    }
    if m.kind().is_empty() {
        return Err(Error::Usage(format!("{}: kind is missing", m.source)));
    }
    let generate = m
        .object
        .pointer("/metadata/generateName")
        .and_then(Value::as_str)
        .is_some_and(|g| !g.is_empty());
    if m.name().is_none() && !generate {
        return Err(Error::Usage(format!(
            "{}: metadata.name is missing",
            m.source
        )));
    }
    Ok(m)
}

/// The object without what the server owns: `status`, server metadata and the last-applied
/// annotation. `get -o yaml` output stripped this way is what the user wrote plus defaults.
pub fn strip_server_fields(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(map) = o.as_object_mut() {
        map.remove("status");
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in SERVER_METADATA {
                meta.remove(*f);
            }
            let empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
                Some(a) => {
                    a.remove(LAST_APPLIED);
                    a.is_empty()
                }
                None => false,
            };
            if empty {
                meta.remove("annotations");
            }
        }
    }
    o
}

/// Sets the namespace of a namespaced object: its own, or `namespace`. An explicit `-n` that
/// contradicts the manifest is an error, as in kubectl.
pub fn namespace_for(m: &Manifest, namespace: &str, explicit: bool) -> Result<String> {
    match m.namespace() {
        Some(own) if explicit && own != namespace => Err(Error::Usage(format!(
            "{}: the namespace of the object ({own}) does not match --namespace={namespace}; pass -n {own} or remove one of them",
            m.source
        ))),
        Some(own) => Ok(own.to_string()),
        None => Ok(namespace.to_string()),
    }
}

/// Sets `metadata.namespace`.
pub fn set_namespace(obj: &mut Value, namespace: &str) {
    if let Some(map) = obj.as_object_mut() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("namespace".into(), namespace.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn several_documents_and_lists() {
        let text = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\n# nothing\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- {apiVersion: kubevirt.io/v1, kind: VirtualMachine, metadata: {name: b}}\n\
                    - {apiVersion: kubevirt.io/v1, kind: VirtualMachine, metadata: {name: c}}\n";
        let ms = parse("f.yaml", text).unwrap();
        assert_eq!(
            ms.iter().map(|m| m.name().unwrap()).collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(ms[0].source, "f.yaml (document 1)");
        assert_eq!(ms[2].source, "f.yaml (document 3) item 2");
    }

    #[test]
    fn json_is_yaml_too() {
        let ms = parse(
            "f.json",
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a"}}"#,
        )
        .unwrap();
        assert_eq!(ms[0].kind(), "Pod");
    }

    #[test]
    fn incomplete_manifests_are_usage_errors() {
        let e = parse("f.yaml", "kind: Pod\nmetadata: {name: a}\n").unwrap_err();
        assert_eq!(e.to_string(), "f.yaml: apiVersion is missing");
        assert_eq!(e.exit_code(), 2);
        assert!(parse("f.yaml", "apiVersion: v1\nkind: Pod\n")
            .unwrap_err()
            .to_string()
            .contains("metadata.name"));
        assert!(parse("f.yaml", "- a\n- b\n").is_err());
        assert!(parse("f.yaml", "a: [")
            .unwrap_err()
            .to_string()
            .starts_with("f.yaml: not valid YAML"));
    }

    #[test]
    fn server_fields_are_stripped() {
        let live = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "default", "uid": "u", "resourceVersion": "5", "generation": 2,
                         "creationTimestamp": "t", "labels": {"x": "y"},
                         "annotations": {LAST_APPLIED: "{}"}},
            "spec": {"runStrategy": "Always"},
            "status": {"printableStatus": "Running"}
        });
        assert_eq!(
            strip_server_fields(&live),
            json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                   "metadata": {"name": "a", "namespace": "default", "labels": {"x": "y"}},
                   "spec": {"runStrategy": "Always"}})
        );
    }

    #[test]
    fn namespaces_from_manifest_or_flag() {
        let m = |ns: Option<&str>| Manifest {
            source: "f".into(),
            object: json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "namespace": ns}}),
        };
        assert_eq!(
            namespace_for(&m(None), "default", false).unwrap(),
            "default"
        );
        assert_eq!(
            namespace_for(&m(Some("prod")), "default", false).unwrap(),
            "prod"
        );
        assert_eq!(
            namespace_for(&m(Some("prod")), "prod", true).unwrap(),
            "prod"
        );
        assert!(namespace_for(&m(Some("prod")), "dev", true).is_err());
    }
}
