//! Server-side printing: `Accept: application/json;as=Table;g=meta.k8s.io;v=v1` turns a list (or one
//! object, or each watch event) into a `meta.k8s.io/v1` Table with the columns kubectl shows.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Which column set a kind prints with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    VirtualMachine,
    VirtualMachineInstance,
    ReplicaSet,
    Migration,
    Namespace,
    Node,
    Pod,
    Service,
    Event,
    Lease,
    Secret,
}

struct Col {
    name: &'static str,
    ty: &'static str,
    priority: u8,
    description: &'static str,
}

const fn col(name: &'static str, ty: &'static str, priority: u8, description: &'static str) -> Col {
    Col { name, ty, priority, description }
}

impl Columns {
    fn defs(self) -> Vec<Col> {
        let name = col("Name", "string", 0, "Name must be unique within a namespace.");
        let age = col("Age", "date", 0, "Time since the object was created.");
        match self {
            Columns::VirtualMachine => vec![
                name,
                age,
                col("Status", "string", 0, "Human readable status of the VirtualMachine."),
                col("Ready", "string", 0, "Whether the VirtualMachine's instance is ready."),
            ],
            Columns::VirtualMachineInstance => vec![
                name,
                age,
                col("Phase", "string", 0, "Phase of the instance."),
                col("IP", "string", 0, "First IP address of the instance."),
                col("NodeName", "string", 0, "Node the instance runs on."),
                col("Ready", "string", 0, "Ready condition of the instance."),
                col("Live-Migratable", "string", 1, "LiveMigratable condition of the instance."),
                col("Paused", "string", 1, "Paused condition of the instance."),
            ],
            Columns::ReplicaSet => vec![
                name,
                col("Desired", "integer", 0, "Number of desired instances."),
                col("Current", "integer", 0, "Number of managed instances."),
                col("Ready", "integer", 0, "Number of ready instances."),
                age,
            ],
            Columns::Migration => vec![
                name,
                col("Phase", "string", 0, "Phase of the migration."),
                col("VMI", "string", 0, "Name of the instance migrated."),
                age,
            ],
            Columns::Namespace => vec![name, col("Status", "string", 0, "The phase of the namespace."), age],
            Columns::Node => vec![
                name,
                col("Status", "string", 0, "The status of the node."),
                col("Roles", "string", 0, "The roles of the node."),
                age,
                col("Version", "string", 0, "Version of the node agent."),
                col("Internal-IP", "string", 1, "The node's internal address."),
                col("External-IP", "string", 1, "The node's external address."),
                col("OS-Image", "string", 1, "The node's operating system image."),
                col("Kernel-Version", "string", 1, "The node's kernel version."),
                col("Container-Runtime", "string", 1, "The node's runtime."),
            ],
            Columns::Pod => vec![
                name,
                col("Ready", "string", 0, "Ready containers out of all containers."),
                col("Status", "string", 0, "The aggregate status of the containers."),
                col("Restarts", "string", 0, "Number of container restarts."),
                age,
                col("IP", "string", 1, "IP address of the pod."),
                col("Node", "string", 1, "Node the pod is bound to."),
                col("Nominated Node", "string", 1, "Node nominated for the pod."),
                col("Readiness Gates", "string", 1, "Readiness gates of the pod."),
            ],
            Columns::Service => vec![
                name,
                col("Type", "string", 0, "The type of the service."),
                col("Cluster-IP", "string", 0, "The cluster address of the service."),
                col("External-IP", "string", 0, "The external addresses of the service."),
                col("Port(s)", "string", 0, "The ports of the service."),
                age,
                col("Selector", "string", 1, "The selector of the service."),
            ],
            Columns::Event => vec![
                col("Last Seen", "string", 0, "Time since the event was last seen."),
                col("Type", "string", 0, "Type of the event."),
                col("Reason", "string", 0, "Reason of the event."),
                col("Object", "string", 0, "Object the event is about."),
                col("Message", "string", 0, "Message of the event."),
                name,
            ],
            Columns::Lease => vec![name, col("Holder", "string", 0, "Holder of the lease."), age],
            Columns::Secret => vec![
                name,
                col("Type", "string", 0, "Type of the secret."),
                col("Data", "string", 0, "Number of keys."),
                age,
            ],
        }
    }

    fn cells(self, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let name = json!(s(obj.pointer("/metadata/name")));
        let age = json!(age_of(obj.pointer("/metadata/creationTimestamp"), now));
        match self {
            Columns::VirtualMachine => vec![
                name,
                age,
                json!(s(obj.pointer("/status/printableStatus"))),
                json!(condition(obj, "Ready")),
            ],
            Columns::VirtualMachineInstance => vec![
                name,
                age,
                json!(s(obj.pointer("/status/phase"))),
                json!(s(obj.pointer("/status/interfaces/0/ipAddress"))),
                json!(s(obj.pointer("/status/nodeName"))),
                json!(condition(obj, "Ready")),
                json!(condition(obj, "LiveMigratable")),
                json!(condition(obj, "Paused")),
            ],
            Columns::ReplicaSet => vec![
                name,
                obj.pointer("/spec/replicas").cloned().unwrap_or(json!(1)),
                obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
                obj.pointer("/status/readyReplicas").cloned().unwrap_or(json!(0)),
                age,
            ],
            Columns::Migration => {
                vec![name, json!(s(obj.pointer("/status/phase"))), json!(s(obj.pointer("/spec/vmiName"))), age]
            }
            Columns::Namespace => vec![name, json!(s(obj.pointer("/status/phase"))), age],
            Columns::Node => node_cells(obj, name, age),
            Columns::Pod => pod_cells(obj, name, age),
            Columns::Service => service_cells(obj, name, age),
            Columns::Event => {
                let last = obj
                    .pointer("/lastTimestamp")
                    .filter(|v| !v.is_null())
                    .or_else(|| obj.pointer("/eventTime"))
                    .or_else(|| obj.pointer("/metadata/creationTimestamp"));
                let kind = s(obj.pointer("/involvedObject/kind")).to_lowercase();
                vec![
                    json!(age_of(last, now)),
                    json!(s(obj.pointer("/type"))),
                    json!(s(obj.pointer("/reason"))),
                    json!(format!("{kind}/{}", s(obj.pointer("/involvedObject/name")))),
                    json!(s(obj.pointer("/message"))),
                    name,
                ]
            }
            Columns::Lease => vec![name, json!(s(obj.pointer("/spec/holderIdentity"))), age],
            Columns::Secret => vec![
                name,
                json!(s(obj.pointer("/type"))),
                json!(obj.get("data").and_then(Value::as_object).map_or(0, |m| m.len())),
                age,
            ],
        }
    }
}

fn condition(obj: &Value, ty: &str) -> String {
    obj.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(ty)))
        .and_then(|c| c.get("status").and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

fn node_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let mut status = match condition(obj, "Ready").as_str() {
        "True" => "Ready".to_string(),
        "" => "Unknown".to_string(),
        _ => "NotReady".to_string(),
    };
    if obj.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        status.push_str(",SchedulingDisabled");
    }
    let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
    let mut roles: Vec<String> = labels
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    roles.sort();
    let roles = if roles.is_empty() { "<none>".to_string() } else { roles.join(",") };
    let address = |ty: &str| {
        obj.pointer("/status/addresses")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| x.get("type").and_then(Value::as_str) == Some(ty)))
            .and_then(|x| x.get("address").and_then(Value::as_str))
            .unwrap_or("<none>")
            .to_string()
    };
    let info = |f: &str| {
        obj.pointer(&format!("/status/nodeInfo/{f}")).and_then(Value::as_str).unwrap_or("<unknown>").to_string()
    };
    vec![
        name,
        json!(status),
        json!(roles),
        age,
        json!(info("kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

fn pod_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let containers = obj.pointer("/spec/containers").and_then(Value::as_array).map_or(0, |c| c.len());
    let statuses = obj.pointer("/status/containerStatuses").and_then(Value::as_array).cloned().unwrap_or_default();
    let ready = statuses.iter().filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true)).count();
    let restarts: i64 = statuses.iter().filter_map(|c| c.get("restartCount").and_then(Value::as_i64)).sum();
    let mut status = obj
        .pointer("/status/reason")
        .and_then(Value::as_str)
        .or_else(|| obj.pointer("/status/phase").and_then(Value::as_str))
        .unwrap_or("Pending")
        .to_string();
    if obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        status = "Terminating".into();
    }
    let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or("<none>").to_string();
    vec![
        name,
        json!(format!("{ready}/{containers}")),
        json!(status),
        json!(restarts.to_string()),
        age,
        json!(s("/status/podIP")),
        json!(s("/spec/nodeName")),
        json!(s("/status/nominatedNodeName")),
        json!("<none>"),
    ]
}

fn service_cells(obj: &Value, name: Value, age: Value) -> Vec<Value> {
    let s = |p: &str, d: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or(d).to_string();
    let ports: Vec<String> = obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    format!(
                        "{}/{}",
                        p.get("port").and_then(Value::as_i64).unwrap_or(0),
                        p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let selector: Vec<String> = obj
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect())
        .unwrap_or_default();
    vec![
        name,
        json!(s("/spec/type", "ClusterIP")),
        json!(s("/spec/clusterIP", "<none>")),
        json!("<none>"),
        json!(if ports.is_empty() { "<none>".to_string() } else { ports.join(",") }),
        age,
        json!(if selector.is_empty() { "<none>".to_string() } else { selector.join(",") }),
    ]
}

/// Kubernetes' short human durations: 45s, 5m10s, 3h, 2d4h, 400d.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    if secs < 120 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        let s = secs % 60;
        return if s == 0 { format!("{mins}m") } else { format!("{mins}m{s}s") };
    }
    if mins < 180 {
        return format!("{mins}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = mins % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if days < 8 {
        let h = hours % 24;
        return if h == 0 { format!("{days}d") } else { format!("{days}d{h}h") };
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    format!("{}y", days / 365)
}

fn age_of(ts: Option<&Value>, now: DateTime<Utc>) -> String {
    ts.and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| human_duration((now - t.with_timezone(&Utc)).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// The metadata part of an object, as `PartialObjectMetadata` (what a Table row carries).
fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// Build a Table from objects.
pub fn table(columns: Columns, objects: &[Value], list_meta: Value, include_object: bool) -> Value {
    let now = Utc::now();
    let defs: Vec<Value> = columns
        .defs()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": if c.name == "Name" { "name" } else { "" },
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({ "cells": columns.cells(o, now) });
            if include_object {
                row["object"] = partial_metadata(o);
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(125), "2m5s");
        assert_eq!(human_duration(600), "10m");
        assert_eq!(human_duration(3 * 3600 + 60), "3h1m");
        assert_eq!(human_duration(30 * 3600), "30h");
        assert_eq!(human_duration(3 * 86400), "3d");
        assert_eq!(human_duration(100 * 86400), "100d");
    }

    #[test]
    fn vm_columns_are_kubevirts() {
        let vm = json!({"metadata": {"name": "vm1", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "status": {"printableStatus": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        let t = table(Columns::VirtualMachine, &[vm], json!({}), true);
        let names: Vec<&str> = t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["Name", "Age", "Status", "Ready"]);
        assert_eq!(t["rows"][0]["cells"][2], "Running");
        assert_eq!(t["rows"][0]["cells"][3], "True");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "vm1");
    }

    #[test]
    fn cordoned_node_says_so() {
        let n = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let t = table(Columns::Node, &[n], json!({}), false);
        assert_eq!(t["rows"][0]["cells"][1], "Ready,SchedulingDisabled");
    }
}
