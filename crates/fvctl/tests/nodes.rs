//! `fvctl cordon`, `uncordon` and `drain` against a real `ferrovirt apiserver` process, with no
//! controller, node agent or QEMU (fast): the objects a node would have (a Node, VMIs, their
//! launcher pods bound to it) are written by the test, and `drain --grace-period 0` removes a
//! pod at once, as if its node agent had stopped the guest. The whole path with real guests on
//! three nodes is in crates/e2e/tests/drain.rs.

mod common;

use std::time::{Duration, Instant};

use common::Fvctl;
use ferrovirt_e2e::ApiServerProcess;
use serde_json::{json, Value};

fn server() -> (tempfile::TempDir, ApiServerProcess, Fvctl) {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServerProcess::start(dir.path().join("server"), None)
        .expect("ferrovirt apiserver starts");
    let fv = Fvctl::new(server.kubeconfig());
    (dir, server, fv)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn create(fv: &Fvctl, obj: &Value) -> Value {
    fv.ok_stdin(&["create", "-f", "-"], &obj.to_string());
    let kind = obj["kind"].as_str().unwrap().to_lowercase();
    let name = obj["metadata"]["name"].as_str().unwrap();
    json(&fv.ok(&["get", &kind, name, "-o", "json"]))
}

fn vmi(name: &str, eviction_strategy: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "metadata": {"name": name},
        "spec": {
            "domain": {"devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                       "resources": {"requests": {"memory": "128Mi"}}},
            "volumes": [{"name": "root", "containerDisk": {"image": "127.0.0.1:5000/guest:latest"}}]
        }
    });
    if let Some(s) = eviction_strategy {
        v["spec"]["evictionStrategy"] = json!(s);
    }
    v
}

/// A launcher pod of `vmi` bound to `node`.
fn launcher(name: &str, vmi: &Value, node: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"kubevirt.io": "virt-launcher"},
            "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
                "name": vmi["metadata"]["name"], "uid": vmi["metadata"]["uid"], "controller": true}]},
        "spec": {"nodeName": node, "containers": [{"name": "compute", "image": "ferrovirt/launcher"}]}
    })
}

fn exists(fv: &Fvctl, kind: &str, name: &str) -> bool {
    let r = fv.run(&["get", kind, name, "-o", "name"]);
    match r.code() {
        0 => true,
        3 => false,
        _ => panic!("{}", r.describe()),
    }
}

#[test]
fn cordon_and_uncordon_say_what_they_did() {
    let (_dir, _server, fv) = server();
    create(
        &fv,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    );
    assert_eq!(fv.ok(&["cordon", "n1"]), "node/n1 cordoned\n");
    assert_eq!(
        json(&fv.ok(&["get", "node", "n1", "-o", "json"]))["spec"]["unschedulable"],
        true
    );
    assert_eq!(fv.ok(&["cordon", "n1"]), "node/n1 already cordoned\n");
    assert_eq!(fv.ok(&["uncordon", "n1"]), "node/n1 uncordoned\n");
    let node = json(&fv.ok(&["get", "node", "n1", "-o", "json"]));
    assert!(node["spec"].get("unschedulable").is_none_or(|u| u == false), "{node}");
    assert_eq!(fv.ok(&["uncordon", "n1"]), "node/n1 already uncordoned\n");

    // A node that does not exist: exit 3, and the message says what to run.
    let r = fv.fails(&["drain", "nope"], 3);
    assert!(r.stderr.contains("node \"nope\" not found"), "{}", r.describe());
    fv.fails(&["cordon", "nope"], 3);
}

#[test]
fn drain_evicts_launcher_pods_and_waits_until_they_are_gone() {
    let (_dir, _server, fv) = server();
    create(
        &fv,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    );
    let vm1 = create(&fv, &vmi("vm1", None));
    create(&fv, &launcher("virt-launcher-vm1-abcde", &vm1, "n1"));
    let web = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "nginx"}]}});
    create(&fv, &web);

    let started = Instant::now();
    let r = fv.run(&["drain", "n1", "--grace-period", "0", "--timeout", "30s"]);
    assert_eq!(r.code(), 0, "{}", r.describe());
    assert_eq!(
        r.stdout,
        "node/n1 cordoned\n\
         evicting pod default/virt-launcher-vm1-abcde (VMI vm1)\n\
         pod default/virt-launcher-vm1-abcde (VMI vm1) evicted\n\
         node/n1 drained\n",
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("leaving pod default/web alone: it runs no VM"),
        "{}",
        r.describe()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!exists(&fv, "pod", "virt-launcher-vm1-abcde"));
    assert!(
        !exists(&fv, "vmi", "vm1"),
        "the VMI was stopped (deleted), not only its pod"
    );
    assert!(exists(&fv, "pod", "web"));
    assert_eq!(
        json(&fv.ok(&["get", "node", "n1", "-o", "json"]))["spec"]["unschedulable"],
        true
    );

    // Again: already cordoned, nothing to evict.
    assert_eq!(
        fv.ok(&["drain", "n1"]),
        "node/n1 already cordoned\nnode/n1 drained\n"
    );
}

#[test]
fn a_refused_eviction_is_retried_until_the_timeout_and_says_why() {
    let (_dir, _server, fv) = server();
    create(
        &fv,
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    );
    let lm = create(&fv, &vmi("lm", Some("LiveMigrate")));
    create(&fv, &launcher("virt-launcher-lm-xyz", &lm, "n1"));
    let started = Instant::now();
    let r = fv.fails(
        &["drain", "n1", "--grace-period", "0", "--timeout", "7s"],
        4,
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(7) && took < Duration::from_secs(20),
        "{took:?}"
    );
    // The refusal is shown once (it is tried again every 5 s), and again in the final error.
    assert_eq!(
        r.stderr
            .matches("cannot evict pod default/virt-launcher-lm-xyz (VMI lm) yet (trying again every 5s)")
            .count(),
        1,
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains("cannot live-migrate yet"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr
            .contains("timed out after 7s draining node n1: 1 of 1 VMs still stopping: default/lm"),
        "{}",
        r.describe()
    );
    assert!(exists(&fv, "pod", "virt-launcher-lm-xyz"));
    assert!(exists(&fv, "vmi", "lm"));
}
