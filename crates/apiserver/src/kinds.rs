//! The kinds the server serves. A kind is data: where it lives in the API, how it is admitted, how it
//! prints as a table and which fields can be selected. The REST layer has one code path for all of them.

use serde_json::Value;

use crate::admission::Admission;
use crate::table::Columns;

/// What happens to `status` when an object is created through the main resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOnCreate {
    Keep,
    Drop,
}

/// One served kind.
#[derive(Debug)]
pub struct Kind {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub namespaced: bool,
    /// Whether `/status` is a separate subresource (main writes then cannot change status).
    pub status_subresource: bool,
    pub status_on_create: StatusOnCreate,
    /// Storage shared with another kind (events.k8s.io/v1 Event is stored as core/v1 Event).
    pub stored_as: Option<(&'static str, &'static str)>,
    pub admission: Admission,
    pub columns: Columns,
    /// Fields usable in `fieldSelector` beyond metadata.name and metadata.namespace.
    pub selectable: &'static [&'static str],
    /// Name of the strategic merge schema; `None` refuses strategic merge patches (as for CRDs).
    pub strategic: Option<&'static str>,
    /// Deletion waits for the node agent (Pods bound to a node).
    pub graceful_delete: bool,
    /// `scale` subresource: path of the replica count in spec and status.
    pub scale: bool,
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The storage key prefix for all objects of this kind, ending with `/`.
    pub fn prefix(&self) -> String {
        let (group, plural) = self.stored_as.unwrap_or((self.group, self.plural));
        let group = if group.is_empty() { "core" } else { group };
        format!("/registry/{group}/{plural}/")
    }

    /// The key prefix for one namespace (or all objects of a cluster-scoped kind).
    pub fn prefix_in(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.prefix_in(namespace))
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }

    /// Read the value of a selectable field from an object.
    pub fn field_value(&self, obj: &Value, field: &str) -> Option<String> {
        let path: Vec<&str> = field.split('.').collect();
        let mut cur = obj;
        for p in &path {
            cur = cur.get(p)?;
        }
        Some(match cur {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            other => other.to_string(),
        })
    }

    pub fn is_selectable(&self, field: &str) -> bool {
        field == "metadata.name"
            || (field == "metadata.namespace" && self.namespaced)
            || self.selectable.contains(&field)
    }
}

/// Every kind the server serves.
pub fn all() -> &'static [Kind] {
    &KINDS
}

/// Look a kind up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// The group/version pairs served, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS.iter() {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

const KUBEVIRT: &str = "kubevirt.io";

static KINDS: [Kind; 12] = [
    Kind {
        group: KUBEVIRT,
        version: "v1",
        kind: "VirtualMachine",
        plural: "virtualmachines",
        singular: "virtualmachine",
        short_names: &["vm", "vms"],
        categories: &["all"],
        namespaced: true,
        status_subresource: true,
        status_on_create: StatusOnCreate::Drop,
        stored_as: None,
        admission: Admission::VirtualMachine,
        columns: Columns::VirtualMachine,
        selectable: &["status.printableStatus"],
        strategic: None,
        graceful_delete: false,
        scale: false,
    },
    Kind {
        group: KUBEVIRT,
        version: "v1",
        kind: "VirtualMachineInstance",
        plural: "virtualmachineinstances",
        singular: "virtualmachineinstance",
        short_names: &["vmi", "vmis"],
        categories: &["all"],
        namespaced: true,
        status_subresource: false,
        status_on_create: StatusOnCreate::Keep,
        stored_as: None,
        admission: Admission::VirtualMachineInstance,
        columns: Columns::VirtualMachineInstance,
        selectable: &["status.phase", "status.nodeName"],
        strategic: None,
        graceful_delete: false,
        scale: false,
    },
    Kind {
        group: KUBEVIRT,
        version: "v1",
        kind: "VirtualMachineInstanceReplicaSet",
        plural: "virtualmachineinstancereplicasets",
        singular: "virtualmachineinstancereplicaset",
        short_names: &["vmirs", "vmirss"],
        categories: &["all"],
        namespaced: true,
        status_subresource: true,
        status_on_create: StatusOnCreate::Drop,
        stored_as: None,
        admission: Admission::ReplicaSet,
        columns: Columns::ReplicaSet,
        selectable: &[],
        strategic: None,
        graceful_delete: false,
        scale: true,
    },
    Kind {
        group: KUBEVIRT,
        version: "v1",
        kind: "VirtualMachineInstanceMigration",
        plural: "virtualmachineinstancemigrations",
        singular: "virtualmachineinstancemigration",
        short_names: &["vmim", "vmims"],
        categories: &["all"],
        namespaced: true,
        status_subresource: true,
        status_on_create: StatusOnCreate::Drop,
        stored_as: None,
        admission: Admission::Migration,
        columns: Columns::Migration,
        selectable: &["status.phase", "spec.vmiName"],
        strategic: None,
        graceful_delete: false,
        scale: false,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        categories: &[],
        namespaced: false,
        status_subresource: true,
        status_on_create: StatusOnCreate::Drop,
        stored_as: None,
        admission: Admission::Namespace,
        columns: Columns::Namespace,
        selectable: &["status.phase"],
        strategic: Some("Namespace"),
        graceful_delete: false,
        scale: false,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        categories: &[],
        namespaced: false,
        status_subresource: true,
        status_on_create: StatusOnCreate::Keep,
        stored_as: None,
        admission: Admission::Node,
        columns: Columns::Node,
        selectable: &["spec.unschedulable"],
        strategic: Some("Node"),
        graceful_delete: false,
        scale: false,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        categories: &["all"],
        namespaced: true,
        status_subresource: true,
        status_on_create: StatusOnCreate::Drop,
        stored_as: None,
        admission: Admission::Pod,
        columns: Columns::Pod,
        selectable: &["spec.nodeName", "status.phase", "spec.schedulerName", "spec.restartPolicy", "status.podIP"],
        strategic: Some("Pod"),
        graceful_delete: true,
        scale: false,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        categories: &["all"],
        namespaced: true,
        status_subresource: true,
        status_on_create: StatusOnCreate::Drop,
        stored_as: None,
        admission: Admission::Service,
        columns: Columns::Service,
        selectable: &["spec.clusterIP", "spec.type"],
        strategic: Some("Service"),
        graceful_delete: false,
        scale: false,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        status_subresource: false,
        status_on_create: StatusOnCreate::Keep,
        stored_as: None,
        admission: Admission::CoreEvent,
        columns: Columns::Event,
        selectable: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        strategic: Some("Event"),
        graceful_delete: false,
        scale: false,
    },
    Kind {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        categories: &[],
        namespaced: true,
        status_subresource: false,
        status_on_create: StatusOnCreate::Keep,
        stored_as: Some(("", "events")),
        admission: Admission::EventsV1,
        columns: Columns::Event,
        selectable: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "reason",
            "type",
        ],
        strategic: None,
        graceful_delete: false,
        scale: false,
    },
    Kind {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status_subresource: false,
        status_on_create: StatusOnCreate::Keep,
        stored_as: None,
        admission: Admission::Lease,
        columns: Columns::Lease,
        selectable: &[],
        strategic: Some("Lease"),
        graceful_delete: false,
        scale: false,
    },
    Kind {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        categories: &[],
        namespaced: true,
        status_subresource: false,
        status_on_create: StatusOnCreate::Keep,
        stored_as: None,
        admission: Admission::Secret,
        columns: Columns::Secret,
        selectable: &["type"],
        strategic: Some("Secret"),
        graceful_delete: false,
        scale: false,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_do_not_collide_across_namespaces() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("a"), "x"), "/registry/core/pods/a/x");
        assert!(!pods.key(Some("ab"), "x").starts_with(&pods.prefix_in(Some("a"))));
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(ev.prefix(), "/registry/core/events/");
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(None, "n1"), "/registry/core/nodes/n1");
    }

    #[test]
    fn every_kind_is_unique() {
        for (i, a) in KINDS.iter().enumerate() {
            for b in &KINDS[i + 1..] {
                assert!(!(a.group == b.group && a.version == b.version && a.plural == b.plural));
            }
        }
    }
}
