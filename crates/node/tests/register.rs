//! The node agent registers its Node and Lease against a real API server, and keeps a cordon.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use ferrovirt_node::host::HostInfo;
use ferrovirt_node::register::{self, Accel};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_node_and_lease_and_keeps_a_cordon() {
    let dir = tempfile::tempdir().unwrap();
    let server = ferrovirt_apiserver::start(ferrovirt_apiserver::Config::new(dir.path(), "127.0.0.1:0".parse().unwrap())).await.unwrap();
    let kc = Kubeconfig::read_from(&server.kubeconfig).unwrap();
    let client = kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap()).unwrap();
    let host = HostInfo::read();
    let accel = Accel { kvm: false, reason: "test".into() };
    register::register(&client, "n1", &host, &accel, &register::Advertised::address("127.0.0.1")).await.unwrap();
    register::renew_lease(&client, "n1").await.unwrap();

    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get("n1").await.unwrap();
    let status = node.status.clone().unwrap();
    assert_eq!(status.conditions.unwrap()[0].status, "True");
    assert!(status.allocatable.unwrap().contains_key("memory"));
    assert_eq!(node.metadata.labels.unwrap()["ferrovirt.io/accel"], "tcg");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    assert_eq!(leases.get("n1").await.unwrap().spec.unwrap().holder_identity.as_deref(), Some("n1"));

    // A cordon set by an operator survives the agent registering again (a restart).
    nodes.patch("n1", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"unschedulable": true}}))).await.unwrap();
    register::register(&client, "n1", &host, &accel, &register::Advertised::address("127.0.0.1")).await.unwrap();
    register::heartbeat(&client, "n1").await.unwrap();
    register::renew_lease(&client, "n1").await.unwrap();
    let node = nodes.get("n1").await.unwrap();
    assert_eq!(node.spec.unwrap().unschedulable, Some(true));
    assert_eq!(node.status.unwrap().conditions.unwrap().len(), 1, "conditions merge by type");
    server.stop().await;
}
