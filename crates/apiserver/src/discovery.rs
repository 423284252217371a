//! Discovery: `/version`, `/api`, `/apis`, the resource list of each group version, and the OpenAPI v2
//! document kubectl asks for (as JSON, or as the gnostic protobuf that kubectl 1.20 requests).
//!
//! The OpenAPI document lists no definitions: kubectl validates only the kinds it finds there, and the
//! server itself refuses unknown and bad fields for every kind it serves.

use prost::Message;
use serde_json::{json, Value};

use crate::kinds::{self, Kind};

/// The Kubernetes version this server speaks.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0-ferrovirt.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "none (ferrovirt is written in Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }],
    })
}

pub fn api_groups() -> Value {
    let mut groups: Vec<Value> = Vec::new();
    for (group, version) in kinds::group_versions() {
        if group.is_empty() {
            continue;
        }
        let gv = json!({ "groupVersion": format!("{group}/{version}"), "version": version });
        groups.push(json!({ "name": group, "versions": [gv.clone()], "preferredVersion": gv }));
    }
    let gv = json!({ "groupVersion": "subresources.kubevirt.io/v1", "version": "v1" });
    groups.push(json!({ "name": "subresources.kubevirt.io", "versions": [gv.clone()], "preferredVersion": gv }));
    // Eviction (a subresource of pods); kubectl drain before 1.22 only evicts if the group is listed.
    let (group, version) = (crate::eviction::POLICY_GROUP, crate::eviction::POLICY_VERSION);
    let gv = json!({ "groupVersion": format!("{group}/{version}"), "version": version });
    groups.push(json!({ "name": group, "versions": [gv.clone()], "preferredVersion": gv }));
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// The resource list of `subresources.kubevirt.io/v1` (the VM actions served today).
pub fn kubevirt_subresource_list() -> Value {
    let vm = ["start", "stop", "restart"].iter().map(|a| {
        json!({ "name": format!("virtualmachines/{a}"), "singularName": "", "namespaced": true, "kind": "VirtualMachine", "verbs": ["update"] })
    });
    let vmi = [("pause", "update"), ("unpause", "update"), ("softreboot", "update"), ("console", "get"), ("vnc", "get"), ("portforward", "get"), ("guestosinfo", "get")]
        .iter()
        .map(|(a, verb)| {
            json!({ "name": format!("virtualmachineinstances/{a}"), "singularName": "", "namespaced": true, "kind": "VirtualMachineInstance", "verbs": [verb] })
        });
    let resources: Vec<Value> = vm.chain(vmi).collect();
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "subresources.kubevirt.io/v1", "resources": resources })
}

fn resource(k: &Kind) -> Value {
    let mut r = json!({
        "name": k.plural,
        "singularName": k.singular,
        "namespaced": k.namespaced,
        "kind": k.kind,
        "verbs": k.verbs(),
    });
    if !k.short_names.is_empty() && k.stored_as.is_none() {
        r["shortNames"] = json!(k.short_names);
    }
    if !k.categories.is_empty() {
        r["categories"] = json!(k.categories);
    }
    r
}

pub fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for k in kinds::all().iter().filter(|k| k.group == group && k.version == version) {
        resources.push(resource(k));
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if k.group.is_empty() && k.kind == "Pod" {
            resources.push(crate::eviction::discovery_entry());
        }
        if k.scale {
            resources.push(json!({
                "name": format!("{}/scale", k.plural), "singularName": "", "namespaced": k.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources })
}

pub fn openapi_v2_json() -> Value {
    json!({
        "swagger": "2.0",
        "info": { "title": "ferrovirt", "version": format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0") },
        "paths": {},
        "definitions": {},
    })
}

/// The subset of gnostic's `openapi.v2.Document` message this server fills in.
#[derive(Clone, PartialEq, Message)]
struct Document {
    #[prost(string, tag = "1")]
    swagger: String,
    #[prost(message, optional, tag = "2")]
    info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    paths: Option<Empty>,
    #[prost(message, optional, tag = "9")]
    definitions: Option<Empty>,
}

#[derive(Clone, PartialEq, Message)]
struct Info {
    #[prost(string, tag = "1")]
    title: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Empty {}

/// The OpenAPI v2 document as `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    Document {
        swagger: "2.0".into(),
        info: Some(Info { title: "ferrovirt".into(), version: format!("v{KUBE_MAJOR}.{KUBE_MINOR}.0") }),
        paths: Some(Empty {}),
        definitions: Some(Empty {}),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protobuf_document_decodes_back() {
        let bytes = openapi_v2_protobuf();
        let doc = Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(doc.swagger, "2.0");
        assert_eq!(doc.info.unwrap().title, "ferrovirt");
        // swagger field: tag 1, wire type 2, then "2.0"
        assert_eq!(&bytes[..5], &[0x0a, 3, b'2', b'.', b'0']);
    }

    #[test]
    fn kubevirt_group_lists_status_subresources() {
        let list = resource_list("kubevirt.io", "v1");
        let names: Vec<&str> = list["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert!(names.contains(&"virtualmachines"));
        assert!(names.contains(&"virtualmachines/status"));
        assert!(names.contains(&"virtualmachineinstancereplicasets/scale"));
        let groups = api_groups();
        assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "kubevirt.io"));
    }

    #[test]
    fn pods_have_the_eviction_subresource_in_the_policy_group() {
        let core = resource_list("", "v1");
        let eviction = core["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods/eviction").expect("pods/eviction");
        assert_eq!((eviction["kind"].as_str(), eviction["group"].as_str()), (Some("Eviction"), Some("policy")));
        let groups = api_groups();
        let policy = groups["groups"].as_array().unwrap().iter().find(|g| g["name"] == "policy").expect("policy group");
        assert_eq!(policy["preferredVersion"]["groupVersion"], "policy/v1");
    }
}
