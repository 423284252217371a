//! `fvctl describe`: an object as indented `Title Case:  value` lines (as kubectl describes kinds
//! it has no special printer for), then its events. Pure: values in, text out.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::output::{age, Table};

/// The description of `obj` with `events` (those whose involvedObject is `obj`).
pub fn render(obj: &Value, events: &[Value], now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let meta = obj
        .get("metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let s = |k: &str| {
        meta.get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };

    let mut head: Vec<(String, String)> = vec![("Name".into(), s("name"))];
    if meta.contains_key("namespace") {
        head.push(("Namespace".into(), s("namespace")));
    }
    let width = ["Annotations", "API Version"]
        .iter()
        .map(|k| k.len())
        .max()
        .unwrap_or(0)
        + 3;
    for (k, v) in &head {
        out.push_str(&format!("{:<width$}{v}\n", format!("{k}:")));
    }
    out.push_str(&key_values("Labels", meta.get("labels"), width, false));
    out.push_str(&key_values(
        "Annotations",
        meta.get("annotations"),
        width,
        true,
    ));
    for (k, field) in [("API Version", "apiVersion"), ("Kind", "kind")] {
        if let Some(v) = obj.get(field).and_then(Value::as_str) {
            out.push_str(&format!("{:<width$}{v}\n", format!("{k}:")));
        }
    }
    let mut rest_meta = meta.clone();
    for k in [
        "name",
        "namespace",
        "labels",
        "annotations",
        "managedFields",
    ] {
        rest_meta.remove(k);
    }
    if !rest_meta.is_empty() {
        out.push_str("Metadata:\n");
        render_map(&rest_meta, 1, &mut out);
    }
    if let Some(map) = obj.as_object() {
        for (k, v) in map {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            render_entry(k, v, 0, &mut out);
        }
    }
    out.push_str(&render_events(events, now));
    out
}

/// `Labels:       a=b` with more pairs on following lines, `<none>` when empty.
fn key_values(title: &str, map: Option<&Value>, width: usize, truncate: bool) -> String {
    let pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = v
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string());
                    let v = if truncate && v.chars().count() > 60 {
                        format!("{}...", v.chars().take(57).collect::<String>())
                    } else {
                        v
                    };
                    format!("{k}={v}")
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = String::new();
    let label = format!("{title}:");
    if pairs.is_empty() {
        out.push_str(&format!("{label:<width$}<none>\n"));
    }
    for (i, p) in pairs.iter().enumerate() {
        let l = if i == 0 { label.as_str() } else { "" };
        out.push_str(&format!("{l:<width$}{p}\n"));
    }
    out
}

/// `runStrategy` → `Run Strategy`, `ipAddress` → `IP Address`, `nodeName` → `Node Name`.
pub fn title(key: &str) -> String {
    // Map keys that are not field names (label keys, UIDs) stay as they are.
    let is_field = key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && key.chars().all(|c| c.is_ascii_alphanumeric());
    if !is_field {
        return key.to_string();
    }
    let mut words: Vec<String> = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = key.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        let prev_lower = i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
        if c.is_uppercase() && !cur.is_empty() && (prev_lower || next_lower) {
            words.push(std::mem::take(&mut cur));
        }
        if c == '_' || c == '-' || c == ' ' {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            continue;
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
        .into_iter()
        .map(|w| match w.to_ascii_lowercase().as_str() {
            "ip" | "ips" | "uid" | "uuid" | "cpu" | "api" | "url" | "id" | "vmi" | "vm" | "qmp"
            | "vnc" | "dns" | "mac" => w.to_uppercase(),
            _ => {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some("<nil>".into()),
        Value::Object(m) if m.is_empty() => Some(String::new()),
        Value::Array(a) if a.is_empty() => Some("<empty>".into()),
        _ => None,
    }
}

fn render_entry(key: &str, v: &Value, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push_str(&format!("{indent}{}:\n", title(key)));
            render_map(m, depth + 1, out);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push_str(&format!("{indent}{}:\n", title(key)));
            render_list(a, depth + 1, out);
        }
        other => {
            let text = scalar(other).unwrap_or_default();
            let line = format!("{indent}{}:  {}", title(key), multiline(&text, depth + 1));
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

fn render_map(m: &Map<String, Value>, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    // Scalars first, aligned; then the nested maps and lists.
    let scalars: Vec<(&String, String)> = m
        .iter()
        .filter_map(|(k, v)| scalar(v).map(|s| (k, s)))
        .collect();
    let width = scalars
        .iter()
        .map(|(k, _)| title(k).chars().count() + 1)
        .max()
        .unwrap_or(0)
        + 2;
    for (k, s) in &scalars {
        let line = format!(
            "{indent}{:<width$}{}",
            format!("{}:", title(k)),
            multiline(s, depth + 1)
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    for (k, v) in m {
        if scalar(v).is_none() {
            render_entry(k, v, depth, out);
        }
    }
}

fn render_list(a: &[Value], depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    for item in a {
        match item {
            Value::Object(m) if !m.is_empty() => {
                let mut sub = String::new();
                render_map(m, depth + 1, &mut sub);
                // The first line of the item carries the dash.
                let inner = "  ".repeat(depth + 1);
                let mut lines = sub.lines();
                if let Some(first) = lines.next() {
                    out.push_str(&format!(
                        "{indent}- {}\n",
                        first.strip_prefix(&inner).unwrap_or(first)
                    ));
                }
                for l in lines {
                    out.push_str(l);
                    out.push('\n');
                }
            }
            other => {
                let text = scalar(other).unwrap_or_else(|| other.to_string());
                out.push_str(&format!("{indent}- {}\n", multiline(&text, depth + 1)));
            }
        }
    }
}

/// Multi-line values (cloud-init scripts) continue indented under their key.
fn multiline(s: &str, depth: usize) -> String {
    if !s.contains('\n') {
        return s.to_string();
    }
    let indent = "  ".repeat(depth + 1);
    let body: Vec<String> = s
        .trim_end_matches('\n')
        .lines()
        .map(|l| format!("{indent}{l}"))
        .collect();
    format!("|\n{}", body.join("\n"))
}

/// The `Events:` section.
pub fn render_events(events: &[Value], now: DateTime<Utc>) -> String {
    if events.is_empty() {
        return "Events:  <none>\n".into();
    }
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| event_time(e).map(str::to_string).unwrap_or_default());
    let mut table = Table {
        headers: ["Type", "Reason", "Age", "From", "Message"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rows: vec![["----", "------", "----", "----", "-------"]
            .iter()
            .map(|s| s.to_string())
            .collect()],
    };
    for e in sorted {
        let s = |p: &str| {
            e.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let from = [
            s("/source/component"),
            s("/reportingComponent"),
            s("/reportingController"),
        ]
        .into_iter()
        .find(|f| !f.is_empty())
        .unwrap_or_default();
        let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
        let when = age(event_time(e), now);
        let age_text = if count > 1 {
            format!("{when} (x{count})")
        } else {
            when
        };
        table.rows.push(vec![
            s("/type"),
            s("/reason"),
            age_text,
            from,
            s("/message").replace('\n', " "),
        ]);
    }
    let mut out = String::from("Events:\n");
    for line in table.render(true).lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn event_time(e: &Value) -> Option<&str> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/firstTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| {
        e.pointer(p)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn titles() {
        assert_eq!(title("runStrategy"), "Run Strategy");
        assert_eq!(title("ipAddress"), "IP Address");
        assert_eq!(
            title("terminationGracePeriodSeconds"),
            "Termination Grace Period Seconds"
        );
        assert_eq!(title("uid"), "UID");
        assert_eq!(title("cloudInitNoCloud"), "Cloud Init No Cloud");
        assert_eq!(title("kubevirt.io/domain"), "kubevirt.io/domain");
        assert_eq!(
            title("827de414-5e81-4d46-adf5-d737cd98e3df"),
            "827de414-5e81-4d46-adf5-d737cd98e3df"
        );
    }

    #[test]
    fn a_vm_reads_well() {
        let vm = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "vm1", "namespace": "default", "labels": {"app": "web", "tier": "a"}, "uid": "u-1"},
            "spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"devices": {"disks": [
                {"name": "containerdisk", "disk": {"bus": "virtio"}}
            ]}}, "volumes": [{"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#!/bin/sh\necho hi\n"}}]}}},
            "status": {"printableStatus": "Running", "ready": true}
        });
        let events = [
            json!({"type": "Normal", "reason": "SuccessfulCreate", "message": "Started the virtual machine",
            "source": {"component": "virtualmachine-controller"}, "lastTimestamp": "2024-01-01T00:05:00Z"}),
        ];
        let text = render(&vm, &events, now());
        let expected = "\
Name:         vm1
Namespace:    default
Labels:       app=web
              tier=a
Annotations:  <none>
API Version:  kubevirt.io/v1
Kind:         VirtualMachine
Metadata:
  UID:  u-1
Spec:
  Run Strategy:  Always
  Template:
    Spec:
      Domain:
        Devices:
          Disks:
            - Name:  containerdisk
              Disk:
                Bus:  virtio
      Volumes:
        - Name:  cloudinitdisk
          Cloud Init No Cloud:
            User Data:  |
                #!/bin/sh
                echo hi
Status:
  Printable Status:  Running
  Ready:             true
Events:
  Type     Reason             Age    From                        Message
  ----     ------             ----   ----                        -------
  Normal   SuccessfulCreate   5m     virtualmachine-controller   Started the virtual machine
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn no_events() {
        assert_eq!(render_events(&[], now()), "Events:  <none>\n");
    }
}
