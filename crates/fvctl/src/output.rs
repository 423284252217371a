//! How objects are printed: server-side Tables laid out as kubectl does (`-o table|wide`), `-o name`,
//! `-o json`, `-o yaml`. All pure: values in, text out.

use serde_json::{json, Value};

use crate::errors::{Error, Result};
use crate::resources::ResourceKind;

/// `-o` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns, as kubectl prints them (the default).
    Table,
    /// Columns with the extra ones (IP, node, ...).
    Wide,
    /// The objects as JSON (a `List` for several).
    Json,
    /// The objects as YAML (a `List` for several); `fvctl apply -f` takes it back.
    Yaml,
    /// `kind.group/name`, one per line.
    Name,
}

/// A table ready to print: upper-case headers and string cells.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Which columns of a server Table to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    /// All columns (`-o wide`), not only priority 0.
    pub wide: bool,
    /// A NAMESPACE column first (`-A`).
    pub namespace: bool,
}

impl Table {
    /// From a `meta.k8s.io/v1` Table (as the server prints it).
    pub fn from_server(table: &Value, columns: Columns) -> Result<Table> {
        let defs = table
            .get("columnDefinitions")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::Failed("the server's table has no columnDefinitions".into()))?;
        let keep: Vec<usize> = defs
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                columns.wide || d.get("priority").and_then(Value::as_i64).unwrap_or(0) == 0
            })
            .map(|(i, _)| i)
            .collect();
        let mut headers: Vec<String> = keep
            .iter()
            .map(|&i| {
                defs[i]
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_uppercase()
            })
            .collect();
        if columns.namespace {
            headers.insert(0, "NAMESPACE".into());
        }
        let mut rows = Vec::new();
        for row in table
            .get("rows")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let cells = row
                .get("cells")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let mut out: Vec<String> = keep
                .iter()
                .map(|&i| cell_text(cells.get(i).unwrap_or(&Value::Null)))
                .collect();
            if columns.namespace {
                let ns = row
                    .pointer("/object/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                out.insert(0, ns.to_string());
            }
            rows.push(out);
        }
        Ok(Table { headers, rows })
    }

    /// NAME and AGE computed here, for objects the server printed no table for.
    pub fn name_age(
        objects: &[Value],
        namespace: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Table {
        let mut headers = vec!["NAME".to_string(), "AGE".to_string()];
        if namespace {
            headers.insert(0, "NAMESPACE".into());
        }
        let rows = objects
            .iter()
            .map(|o| {
                let mut row = vec![
                    o.pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    age(
                        o.pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str),
                        now,
                    ),
                ];
                if namespace {
                    row.insert(
                        0,
                        o.pointer("/metadata/namespace")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    );
                }
                row
            })
            .collect();
        Table { headers, rows }
    }

    /// The rows of `other` (same columns) after these.
    pub fn extend(&mut self, other: Table) {
        if self.headers.is_empty() {
            self.headers = other.headers;
        }
        self.rows.extend(other.rows);
    }

    /// Column widths: the widest cell (or header) of each column.
    pub fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if i < w.len() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
        }
        w
    }

    /// The header line and the rows, columns three spaces apart, as kubectl's tabwriter does.
    pub fn render(&self, headers: bool) -> String {
        let widths = self.widths();
        let mut out = String::new();
        if headers {
            out.push_str(&render_row(&self.headers, &widths));
        }
        for row in &self.rows {
            out.push_str(&render_row(row, &widths));
        }
        out
    }
}

/// One line of a table with the given widths (the last column unpadded).
pub fn render_row(cells: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, c) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            line.push_str(c);
        } else {
            let w = widths.get(i).copied().unwrap_or(0);
            line.push_str(c);
            line.push_str(&" ".repeat(w.saturating_sub(c.chars().count()) + 3));
        }
    }
    let mut line = line.trim_end().to_string();
    line.push('\n');
    line
}

fn cell_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Kubernetes' short ages: 45s, 5m10s, 3h, 2d4h, 400d.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{mins}m")
        } else {
            format!("{mins}m{s}s")
        };
    }
    if mins < 180 {
        return format!("{mins}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = mins % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if days < 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    format!("{}y", days / 365)
}

/// The age of an RFC 3339 timestamp, `<unknown>` without one.
pub fn age(ts: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    ts.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_duration((now - t.with_timezone(&chrono::Utc)).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// What output shows of an object: everything but `metadata.managedFields` (as kubectl without
/// `--show-managed-fields`).
pub fn for_output(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(meta) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    o
}

/// Several objects as one `List`, as kubectl prints them; one object as itself.
pub fn as_list_or_single(objects: Vec<Value>, single: bool) -> Value {
    if single && objects.len() == 1 {
        return objects.into_iter().next().unwrap_or(Value::Null);
    }
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": objects,
        "metadata": {"resourceVersion": ""},
    })
}

/// JSON, pretty, with a final newline.
pub fn to_json(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// YAML (block style, keys in the server's order).
pub fn to_yaml(v: &Value) -> String {
    let s = serde_yaml_ng::to_string(v).unwrap_or_default();
    if s.ends_with('\n') {
        s
    } else {
        format!("{s}\n")
    }
}

/// `virtualmachine.kubevirt.io/vm1`
pub fn name_line(kind: &ResourceKind, obj: &Value) -> String {
    kind.name_of(
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(""),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    fn vm_table() -> Value {
        json!({
            "kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "columnDefinitions": [
                {"name": "Name", "type": "string", "priority": 0},
                {"name": "Age", "type": "date", "priority": 0},
                {"name": "Phase", "type": "string", "priority": 0},
                {"name": "Live-Migratable", "type": "string", "priority": 1}
            ],
            "rows": [
                {"cells": ["vm1", "5m", "Running", "False"], "object": {"metadata": {"name": "vm1", "namespace": "default"}}},
                {"cells": ["a-longer-name", "10s", "Scheduling", null], "object": {"metadata": {"name": "a-longer-name", "namespace": "prod"}}}
            ]
        })
    }

    #[test]
    fn tables_line_up_like_kubectl() {
        let t = Table::from_server(
            &vm_table(),
            Columns {
                wide: false,
                namespace: false,
            },
        )
        .unwrap();
        assert_eq!(
            t.render(true),
            "NAME            AGE   PHASE\n\
             vm1             5m    Running\n\
             a-longer-name   10s   Scheduling\n"
        );
        assert_eq!(t.render(false).lines().count(), 2);
    }

    #[test]
    fn wide_and_all_namespaces_add_columns() {
        let t = Table::from_server(
            &vm_table(),
            Columns {
                wide: true,
                namespace: true,
            },
        )
        .unwrap();
        assert_eq!(
            t.headers,
            ["NAMESPACE", "NAME", "AGE", "PHASE", "LIVE-MIGRATABLE"]
        );
        assert_eq!(
            t.rows[1],
            ["prod", "a-longer-name", "10s", "Scheduling", "<none>"]
        );
    }

    #[test]
    fn name_and_age_when_the_server_prints_no_table() {
        let now = chrono::DateTime::parse_from_rfc3339("2024-01-01T01:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let objs = [
            json!({"metadata": {"name": "x", "namespace": "n", "creationTimestamp": "2024-01-01T00:00:00Z"}}),
        ];
        let t = Table::name_age(&objs, true, now);
        assert_eq!(
            t.render(true),
            "NAMESPACE   NAME   AGE\nn           x      60m\n"
        );
    }

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn lists_and_single_objects() {
        let one =
            json!({"kind": "VirtualMachine", "metadata": {"name": "a", "managedFields": [{}]}});
        assert_eq!(as_list_or_single(vec![one.clone()], true), one);
        let l = as_list_or_single(vec![one.clone(), one.clone()], true);
        assert_eq!(l["kind"], "List");
        assert_eq!(l["items"].as_array().unwrap().len(), 2);
        assert!(for_output(&one)["metadata"].get("managedFields").is_none());
        assert_eq!(
            name_line(resources::find("vm").unwrap(), &one),
            "virtualmachine.kubevirt.io/a"
        );
    }

    #[test]
    fn yaml_keeps_the_servers_key_order() {
        let v = json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "a"}});
        assert_eq!(
            to_yaml(&v),
            "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: a\n"
        );
    }
}
