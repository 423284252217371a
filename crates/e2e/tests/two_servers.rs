//! Two `ferrovirt apiserver` processes on one etcd: each sees the other's writes and watches, with
//! one cluster identity, so the same kubeconfig (token and CA) works against both.

use std::time::Duration;

use ferrovirt_e2e::{fixture, kubectl_1_20, ApiServerProcess, Kubectl};
use ferrovirt_store::testing::EtcdProcess;

#[test]
fn two_api_server_processes_share_one_etcd() {
    let etcd = EtcdProcess::start().expect("etcd must be installed (scripts/install-test-deps.sh)");
    let (da, db) = (tempfile_dir(), tempfile_dir());
    let a = ApiServerProcess::start(da.path(), Some(etcd.endpoints())).expect("first API server");
    let b = ApiServerProcess::start(db.path(), Some(etcd.endpoints())).expect("second API server");
    let bin = kubectl_1_20().expect("kubectl 1.20 (scripts/fetch-kubectl-1.20.sh)");
    let ka = Kubectl::new(&bin, a.kubeconfig()).unwrap();
    let kb = Kubectl::new(&bin, b.kubeconfig()).unwrap();

    // The second server's own kubeconfig names itself but holds the same CA and token.
    let ca = |p: &std::path::Path| std::fs::read_to_string(p.join("ca.crt")).unwrap();
    assert_eq!(ca(da.path()), ca(db.path()), "one CA for the cluster");

    // A watch on B sees what is applied through A.
    let mut watch = kb.spawn(&["get", "vms", "-w", "--no-headers"]);
    std::thread::sleep(Duration::from_millis(500));
    let vm = fixture("vm.yaml");
    ka.ok(&["apply", "-f", vm.to_str().unwrap()]);
    watch
        .wait_for_line(Duration::from_secs(20), |l| l.starts_with("testvm"))
        .expect("B's watch shows the VM created through A");
    let out = kb.ok(&["get", "vm", "testvm", "-o", "jsonpath={.metadata.uid}"]);
    let uid_a = ka.ok(&["get", "vm", "testvm", "-o", "jsonpath={.metadata.uid}"]);
    assert_eq!(out.trim(), uid_a.trim());

    // A write through B is seen by A, and a delete through B is seen by A.
    kb.ok(&["label", "vm", "testvm", "written-by=b"]);
    let label = ka.ok(&["get", "vm", "testvm", "-o", "jsonpath={.metadata.labels.written-by}"]);
    assert_eq!(label.trim(), "b");
    kb.ok(&["delete", "vm", "testvm"]);
    let gone = ka.fails(&["get", "vm", "testvm"]);
    assert!(gone.contains("NotFound") || gone.contains("not found"), "{gone}");
}

fn tempfile_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}
