//! The Eviction subresource of pods through an in-process API server, driven by kube-rs
//! (`Api::<Pod>::evict`, policy/v1) and raw requests (policy/v1beta1, errors), on both stores:
//! discovery advertises it the way `kubectl drain` looks for it; evicting a launcher pod deletes
//! its VMI and the pod gracefully (queuing a Start for RerunOnFailure); evictionStrategy
//! LiveMigrate and External answer 429; preconditions, dry runs and bad bodies.

mod common;

use kube::api::{Api, DeleteParams, EvictParams, PostParams, Preconditions};
use serde_json::{json, Value};

use common::{code, raw, vm_manifest, Backend, Harness};
use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use k8s_openapi::api::core::v1::Pod;

fn owner_ref(kind: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": kind, "name": name, "uid": uid, "controller": true, "blockOwnerDeletion": true})
}

fn vmi_for(name: &str, owner: Option<Value>, eviction_strategy: Option<&str>) -> VirtualMachineInstance {
    let mut spec = vm_manifest(name)["spec"]["template"]["spec"].clone();
    if let Some(s) = eviction_strategy {
        spec["evictionStrategy"] = json!(s);
    }
    let owners: Vec<Value> = owner.into_iter().collect();
    serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "ownerReferences": owners}, "spec": spec}))
    .unwrap()
}

/// A launcher pod of VMI `vmi` (uid), bound to n1, with a 30 s grace period.
fn launcher_for(name: &str, vmi: &str, vmi_uid: &str) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"kubevirt.io": "virt-launcher"},
            "ownerReferences": [owner_ref("VirtualMachineInstance", vmi, vmi_uid)]},
        "spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "compute", "image": "ferrovirt/launcher"}]}}))
    .unwrap()
}

fn eviction_path(pod: &str) -> String {
    format!("/api/v1/namespaces/default/pods/{pod}/eviction")
}

async fn discovery_advertises_eviction(b: Backend) {
    let h = Harness::start(b).await;
    let (s, core) = raw(&h.client, "GET", "/api/v1", "application/json", vec![]).await;
    assert_eq!(s, 200);
    let entry = core["resources"].as_array().unwrap().iter().find(|r| r["name"] == "pods/eviction").expect("pods/eviction listed").clone();
    assert_eq!((entry["kind"].as_str(), entry["group"].as_str(), entry["version"].as_str()), (Some("Eviction"), Some("policy"), Some("v1")));
    let (_, groups) = raw(&h.client, "GET", "/apis", "application/json", vec![]).await;
    let policy = groups["groups"].as_array().unwrap().iter().find(|g| g["name"] == "policy").expect("policy group listed").clone();
    assert_eq!(policy["preferredVersion"]["groupVersion"], "policy/v1");
    let (s, list) = raw(&h.client, "GET", "/apis/policy/v1", "application/json", vec![]).await;
    assert_eq!((s, list["groupVersion"].as_str()), (200, Some("policy/v1")));
    assert_eq!(list["resources"][0]["name"], "pods/eviction", "not empty: newer clients fail discovery on an empty list");
    h.stop().await;
}
on_both_stores!(discovery_advertises_eviction);

async fn launcher_pods_stop_their_vmi(b: Backend) {
    let h = Harness::start(b).await;
    let pp = PostParams::default();
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");

    // A RerunOnFailure VM, its VMI (held by the controller's finalizer) and its launcher pod on n1.
    let mut vm: VirtualMachine = serde_json::from_value(vm_manifest("vm1")).unwrap();
    vm.spec.run_strategy = Some(ferrovirt_api::kubevirt::RunStrategy::RerunOnFailure);
    let vm = vms.create(&pp, &vm).await.unwrap();
    let mut vmi = vmi_for("vm1", Some(owner_ref("VirtualMachine", "vm1", vm.metadata.uid.as_deref().unwrap())), None);
    vmi.metadata.finalizers = Some(vec!["kubevirt.io/foregroundDeleteVirtualMachine".into()]);
    let vmi = vmis.create(&pp, &vmi).await.unwrap();
    let vmi_uid = vmi.metadata.uid.clone().unwrap();
    let pod = pods.create(&pp, &launcher_for("virt-launcher-vm1-abcde", "vm1", &vmi_uid)).await.unwrap();

    // A dry run changes nothing.
    let status = pods.evict("virt-launcher-vm1-abcde", &EvictParams { post_options: PostParams { dry_run: true, ..Default::default() }, ..Default::default() }).await.unwrap();
    assert_eq!(status.status, Some(kube::core::response::StatusSummary::Success));
    assert!(pods.get("virt-launcher-vm1-abcde").await.unwrap().metadata.deletion_timestamp.is_none());
    assert!(vmis.get("vm1").await.unwrap().metadata.deletion_timestamp.is_none());

    // A precondition on another uid is a conflict and changes nothing.
    let wrong = EvictParams {
        delete_options: Some(DeleteParams { preconditions: Some(Preconditions { uid: Some("not-it".into()), resource_version: None }), ..Default::default() }),
        ..Default::default()
    };
    let e = pods.evict("virt-launcher-vm1-abcde", &wrong).await.unwrap_err();
    assert_eq!(code(&e), 409, "{e}");
    assert!(vmis.get("vm1").await.unwrap().metadata.deletion_timestamp.is_none());

    // The eviction (policy/v1, through kube-rs): 201 Success; the VMI is being deleted, the pod
    // waits for its node agent with the Eviction's grace period, the VM has a Start queued.
    let evict = EvictParams {
        delete_options: Some(DeleteParams {
            grace_period_seconds: Some(7),
            preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let status = pods.evict("virt-launcher-vm1-abcde", &evict).await.unwrap();
    assert_eq!(status.status, Some(kube::core::response::StatusSummary::Success));
    let vmi_now = vmis.get("vm1").await.unwrap();
    assert!(vmi_now.metadata.deletion_timestamp.is_some(), "the VMI is being deleted");
    let pod_now = pods.get("virt-launcher-vm1-abcde").await.unwrap();
    assert!(pod_now.metadata.deletion_timestamp.is_some());
    assert_eq!(pod_now.metadata.deletion_grace_period_seconds, Some(7));
    let requests = vms.get("vm1").await.unwrap().status.unwrap().state_change_requests.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(serde_json::to_value(&requests[0]).unwrap()["action"], "Start");

    // Evicting a pod that is going already succeeds and queues nothing more (policy/v1beta1, raw).
    let body = json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "virt-launcher-vm1-abcde", "namespace": "default"}});
    let (s, st) = raw(&h.client, "POST", &eviction_path("virt-launcher-vm1-abcde"), "application/json", serde_json::to_vec(&body).unwrap()).await;
    assert_eq!((s, st["status"].as_str()), (201, Some("Success")), "{st}");
    assert_eq!(vms.get("vm1").await.unwrap().status.unwrap().state_change_requests.unwrap().len(), 1);

    // A VMI with no VM (or a replica set's) is deleted too; an Always VM gets no Start request.
    let lone = vmis.create(&pp, &vmi_for("lone", None, None)).await.unwrap();
    pods.create(&pp, &launcher_for("virt-launcher-lone-xyz", "lone", lone.metadata.uid.as_deref().unwrap())).await.unwrap();
    pods.evict("virt-launcher-lone-xyz", &EvictParams::default()).await.unwrap();
    assert!(vmis.get_opt("lone").await.unwrap().is_none(), "a VMI without finalizers goes at once");
    let p = pods.get("virt-launcher-lone-xyz").await.unwrap();
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30), "the pod's own grace period without deleteOptions");
    h.stop().await;
}
on_both_stores!(launcher_pods_stop_their_vmi);

/// A client that returns a 429 at once (kube-rs's default one retries it 15 times, backing off
/// for minutes).
async fn client_without_retries(h: &Harness) -> kube::Client {
    let kc = kube::config::Kubeconfig::read_from(&h.server.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

async fn strategies_that_refuse_answer_429(b: Backend) {
    let h = Harness::start(b).await;
    let pp = PostParams::default();
    let client = client_without_retries(&h).await;
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, strategy) in [("lm", "LiveMigrate"), ("ext", "External")] {
        let vmi = vmis.create(&pp, &vmi_for(name, None, Some(strategy))).await.unwrap();
        pods.create(&pp, &launcher_for(&format!("virt-launcher-{name}"), name, vmi.metadata.uid.as_deref().unwrap())).await.unwrap();
        let (s, st) = raw(&client, "POST", &eviction_path(&format!("virt-launcher-{name}")), "application/json", b"{\"apiVersion\":\"policy/v1\",\"kind\":\"Eviction\"}".to_vec()).await;
        assert_eq!((s, st["reason"].as_str(), st["code"].as_i64()), (429, Some("TooManyRequests"), Some(429)), "{strategy}: {st}");
        // kube-rs reads it as an API error with code 429, as kubectl drain does (and retries).
        let e = pods.evict(&format!("virt-launcher-{name}"), &EvictParams::default()).await.unwrap_err();
        assert_eq!(code(&e), 429);
        assert!(pods.get(&format!("virt-launcher-{name}")).await.unwrap().metadata.deletion_timestamp.is_none(), "{strategy}: the pod stays");
        assert!(vmis.get(name).await.unwrap().metadata.deletion_timestamp.is_none(), "{strategy}: the VMI stays");
        let message = st["message"].as_str().unwrap();
        match strategy {
            "LiveMigrate" => assert!(message.contains("cannot live-migrate yet"), "{message}"),
            _ => {
                assert!(message.contains("evacuation"), "{message}");
                let v = vmis.get(name).await.unwrap();
                assert_eq!(v.status.unwrap().evacuation_node_name.as_deref(), Some("n1"));
            }
        }
    }
    h.stop().await;
}
on_both_stores!(strategies_that_refuse_answer_429);

async fn plain_pods_and_errors(b: Backend) {
    let h = Harness::start(b).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    // A pod that is not a launcher (and on no node) is simply deleted.
    let plain: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &plain).await.unwrap();
    pods.evict("web", &EvictParams::default()).await.unwrap();
    assert!(pods.get_opt("web").await.unwrap().is_none());

    // A missing pod is 404; another method 405; a body for another pod or of another kind 400.
    assert_eq!(code(&pods.evict("nope", &EvictParams::default()).await.unwrap_err()), 404);
    let (s, _) = raw(&h.client, "GET", &eviction_path("web"), "application/json", vec![]).await;
    assert_eq!(s, 405);
    pods.create(&PostParams::default(), &plain).await.unwrap();
    for (body, says) in [
        (json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "other"}}), "does not match"),
        (json!({"apiVersion": "v1", "kind": "Pod"}), "must be an Eviction"),
        (json!({"kind": "Eviction", "deleteOptions": {"gracePeriodSeconds": -3}}), "negative"),
    ] {
        let (s, st) = raw(&h.client, "POST", &eviction_path("web"), "application/json", serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(s, 400, "{body}: {st}");
        assert!(st["message"].as_str().unwrap().contains(says), "{body}: {st}");
    }
    assert!(pods.get_opt("web").await.unwrap().is_some(), "refused evictions delete nothing");
    h.stop().await;
}
on_both_stores!(plain_pods_and_errors);
