//! The API server driven by kube-rs, as controllers and users will drive it, on both stores.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::{json, Value};

use common::{code, eventually, raw, raw_with_accept, vm_manifest, Backend, Harness};
use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use k8s_openapi::api::core::v1::{Event as CoreEvent, Node, Pod};
use k8s_openapi::api::events::v1::Event as EventV1;

fn vm(name: &str) -> VirtualMachine {
    serde_json::from_value(vm_manifest(name)).expect("fixture decodes")
}

async fn typed_crud(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    let created = vms.create(&PostParams::default(), &vm("vm1")).await.unwrap();
    let uid = created.metadata.uid.clone().expect("uid set");
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.creation_timestamp.is_some());
    assert_eq!(code(&vms.create(&PostParams::default(), &vm("vm1")).await.unwrap_err()), 409);

    let got = vms.get("vm1").await.unwrap();
    assert_eq!(got.metadata.uid.as_deref(), Some(uid.as_str()));
    assert_eq!(vms.list(&ListParams::default()).await.unwrap().items.len(), 1);

    // Update: a spec change bumps the generation; the status cannot change through the main resource.
    let mut next = got.clone();
    next.metadata.labels.get_or_insert_with(Default::default).insert("tier".into(), "gold".into());
    next.spec.run_strategy = Some(ferrovirt_api::kubevirt::RunStrategy::Always);
    let updated = vms.replace("vm1", &PostParams::default(), &next).await.unwrap();
    assert_eq!(updated.metadata.generation, Some(2));
    assert_ne!(updated.metadata.resource_version, got.metadata.resource_version);

    // Status subresource.
    let st = vms
        .patch_status("vm1", &PatchParams::default(), &Patch::Merge(json!({"status": {"printableStatus": "Stopped", "ready": false}})))
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().unwrap().ready, Some(false));
    assert_eq!(st.metadata.generation, Some(2), "status writes leave the generation alone");
    let patched = vms
        .patch("vm1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"tier": "silver"}}, "status": {"ready": true}})))
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["tier"], "silver");
    assert_eq!(patched.status.unwrap().ready, Some(false), "main resource must not change status");

    vms.delete("vm1", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(&vms.get("vm1").await.unwrap_err()), 404);
    h.stop().await;
}
on_both_stores!(typed_crud);

async fn stale_resource_version_conflicts(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    vms.create(&PostParams::default(), &vm("vm1")).await.unwrap();
    let old = vms.get("vm1").await.unwrap();
    let mut a = old.clone();
    a.metadata.labels.get_or_insert_with(Default::default).insert("a".into(), "1".into());
    vms.replace("vm1", &PostParams::default(), &a).await.unwrap();
    let mut b2 = old.clone();
    b2.metadata.labels.get_or_insert_with(Default::default).insert("b".into(), "1".into());
    let err = vms.replace("vm1", &PostParams::default(), &b2).await.unwrap_err();
    assert_eq!(code(&err), 409);
    if let kube::Error::Api(s) = &err {
        assert_eq!(s.reason, "Conflict");
        assert!(s.message.contains("the object has been modified"), "{}", s.message);
    }
    // The first write is intact.
    let now = vms.get("vm1").await.unwrap();
    assert_eq!(now.metadata.labels.unwrap().get("a").map(String::as_str), Some("1"));
    h.stop().await;
}
on_both_stores!(stale_resource_version_conflicts);

async fn watcher_survives_watch_restarts(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    vms.create(&PostParams::default(), &vm("before")).await.unwrap();
    // The server closes each watch after one second, so the watcher re-watches several times.
    let cfg = watcher::Config::default().timeout(1);
    let mut stream = watcher(vms.clone(), cfg).boxed();
    let writer = {
        let vms = vms.clone();
        tokio::spawn(async move {
            for i in 0..8 {
                tokio::time::sleep(Duration::from_millis(400)).await;
                vms.create(&PostParams::default(), &vm(&format!("vm{i}"))).await.unwrap();
            }
        })
    };
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 9 {
        let ev = tokio::time::timeout_at(deadline, stream.try_next()).await.expect("watcher delivered every object in time");
        match ev.unwrap().unwrap() {
            watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                seen.insert(o.metadata.name.unwrap());
            }
            _ => {}
        }
    }
    writer.await.unwrap();
    assert!(seen.contains("before") && seen.contains("vm7"));
    h.stop().await;
}
on_both_stores!(watcher_survives_watch_restarts);

async fn compacted_resource_version_gets_410_and_a_relist(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    let nsapi: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(h.client.clone());
    nsapi
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap())
        .await
        .unwrap();
    vms.create(&PostParams::default(), &vm("vm1")).await.unwrap();
    let old_rv = vms.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();

    // The runtime watcher sees vm1, then is left unpolled while history moves on elsewhere.
    let mut stream = watcher(vms.clone(), watcher::Config::default().timeout(1)).boxed();
    let mut inits = 0;
    loop {
        match stream.try_next().await.unwrap().unwrap() {
            watcher::Event::Init => inits += 1,
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    let others: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "other");
    for i in 0..5 {
        others.create(&PostParams::default(), &vm(&format!("o{i}"))).await.unwrap();
    }
    let rev = h.server.store.current_revision().await.unwrap();
    h.server.store.compact(rev).await.unwrap();

    // A raw watch from before the compaction gets HTTP 200 and one ERROR event with a 410 Status.
    let mut raw_watch = vms.watch(&WatchParams::default().timeout(5), &old_rv).await.unwrap().boxed();
    match raw_watch.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }

    // The runtime watcher's next watch starts at a compacted revision: it must relist (a second Init).
    // kube-rs reports the 410 once as an error item, then relists on the next poll.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut saw_410 = false;
    while inits < 2 {
        let ev = tokio::time::timeout_at(deadline, stream.next()).await.expect("watcher relisted in time");
        match ev.expect("watcher stream goes on") {
            Ok(watcher::Event::Init) => inits += 1,
            Ok(_) => {}
            Err(watcher::Error::WatchError(s)) if s.code == 410 => saw_410 = true,
            Err(e) => panic!("unexpected watcher error {e:?}"),
        }
    }
    assert!(saw_410, "the relist was caused by the 410");
    h.stop().await;
}
on_both_stores!(compacted_resource_version_gets_410_and_a_relist);

async fn json_patch_is_atomic(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    vms.create(&PostParams::default(), &vm("vm1")).await.unwrap();
    let failing: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/metadata/labels/app", "value": "changed"},
        {"op": "test", "path": "/spec/runStrategy", "value": "Always"}
    ]))
    .unwrap();
    let err = vms.patch("vm1", &PatchParams::default(), &Patch::<()>::Json(failing)).await.unwrap_err();
    assert_eq!(code(&err), 422);
    assert_eq!(vms.get("vm1").await.unwrap().metadata.labels.unwrap()["app"], "demo", "nothing applied");
    let ok: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/runStrategy", "value": "Halted"},
        {"op": "add", "path": "/metadata/finalizers", "value": ["ferrovirt.io/test"]}
    ]))
    .unwrap();
    let p = vms.patch("vm1", &PatchParams::default(), &Patch::<()>::Json(ok)).await.unwrap();
    assert_eq!(p.metadata.finalizers.unwrap(), vec!["ferrovirt.io/test".to_string()]);
    h.stop().await;
}
on_both_stores!(json_patch_is_atomic);

async fn finalizers_hold_deletion(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    let mut v = vm("held");
    v.metadata.finalizers = Some(vec!["ferrovirt.io/hold".into()]);
    vms.create(&PostParams::default(), &v).await.unwrap();
    vms.delete("held", &DeleteParams::default()).await.unwrap();
    let still = vms.get("held").await.unwrap();
    assert!(still.metadata.deletion_timestamp.is_some());
    // No new finalizers while deleting.
    let err = vms
        .patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": ["ferrovirt.io/hold", "x.io/new"]}})))
        .await
        .unwrap_err();
    assert_eq!(code(&err), 422);
    vms.patch("held", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
    assert_eq!(code(&vms.get("held").await.unwrap_err()), 404);
    h.stop().await;
}
on_both_stores!(finalizers_hold_deletion);

fn owner_ref(kind: &str, name: &str, uid: &str) -> Value {
    json!({"apiVersion": if kind == "Pod" { "v1" } else { "kubevirt.io/v1" }, "kind": kind, "name": name, "uid": uid,
           "controller": true, "blockOwnerDeletion": true})
}

fn vmi_for(name: &str, owner: Value) -> VirtualMachineInstance {
    let spec = vm_manifest(name)["spec"]["template"]["spec"].clone();
    serde_json::from_value(json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
        "metadata": {"name": name, "ownerReferences": [owner]}, "spec": spec}))
    .unwrap()
}

fn pod_for(name: &str, owner: Value) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": {"containers": [{"name": "compute", "image": "ferrovirt/launcher"}]}}))
    .unwrap()
}

async fn cascading_deletion(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(h.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let pp = PostParams::default();
    for (policy, name) in [("Background", "bg"), ("Foreground", "fg"), ("Orphan", "or")] {
        let v = vms.create(&pp, &vm(name)).await.unwrap();
        let vmi = vmis.create(&pp, &vmi_for(name, owner_ref("VirtualMachine", name, v.metadata.uid.as_deref().unwrap()))).await.unwrap();
        pods.create(&pp, &pod_for(&format!("virt-launcher-{name}"), owner_ref("VirtualMachineInstance", name, vmi.metadata.uid.as_deref().unwrap())))
            .await
            .unwrap();
        let dp = match policy {
            "Background" => DeleteParams::background(),
            "Foreground" => DeleteParams::foreground(),
            _ => DeleteParams::orphan(),
        };
        vms.delete(name, &dp).await.unwrap();
        let launcher = format!("virt-launcher-{name}");
        match policy {
            "Orphan" => {
                eventually(10, "orphaned owner to go", || async { vms.get_opt(name).await.unwrap().is_none() }).await;
                let vmi = vmis.get(name).await.expect("orphaned VMI stays");
                assert!(vmi.metadata.owner_references.unwrap_or_default().is_empty(), "its owner reference is removed");
                assert!(pods.get_opt(&launcher).await.unwrap().is_some());
            }
            _ => {
                eventually(10, &format!("{policy} deletion to reach the pod"), || async {
                    vms.get_opt(name).await.unwrap().is_none()
                        && vmis.get_opt(name).await.unwrap().is_none()
                        && pods.get_opt(&launcher).await.unwrap().is_none()
                })
                .await;
            }
        }
    }
    h.stop().await;
}
on_both_stores!(cascading_deletion);

async fn selectors_and_paging(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    for i in 0..7 {
        let mut v = vm(&format!("vm{i}"));
        v.metadata.labels.get_or_insert_with(Default::default).insert("parity".into(), if i % 2 == 0 { "even" } else { "odd" }.into());
        vms.create(&PostParams::default(), &v).await.unwrap();
    }
    let even = vms.list(&ListParams::default().labels("parity=even")).await.unwrap();
    assert_eq!(even.items.len(), 4);
    let not_even = vms.list(&ListParams::default().labels("parity!=even,app in (demo)")).await.unwrap();
    assert_eq!(not_even.items.len(), 3);
    let one = vms.list(&ListParams::default().fields("metadata.name=vm3")).await.unwrap();
    assert_eq!(one.items.len(), 1);
    // Paging with limit/continue sees every object exactly once, filtered too.
    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(3);
    loop {
        let page = vms.list(&lp).await.unwrap();
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().map(|v| v.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = ListParams::default().limit(3).continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(names.len(), 7);
    let mut odd_pages = Vec::new();
    let mut lp = ListParams::default().limit(2).labels("parity=odd");
    loop {
        let page = vms.list(&lp).await.unwrap();
        odd_pages.extend(page.items.iter().map(|v| v.metadata.name.clone().unwrap()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = ListParams::default().limit(2).labels("parity=odd").continue_token(&c),
            _ => break,
        }
    }
    assert_eq!(odd_pages, ["vm1", "vm3", "vm5"]);
    // Pods by node and phase.
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let mut p = pod_for("bound", json!({"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": "x"}));
    p.metadata.owner_references = None;
    p.spec.as_mut().unwrap().node_name = Some("n1".into());
    pods.create(&PostParams::default(), &p).await.unwrap();
    let mut q = p.clone();
    q.metadata.name = Some("unbound".into());
    q.spec.as_mut().unwrap().node_name = None;
    pods.create(&PostParams::default(), &q).await.unwrap();
    assert_eq!(pods.list(&ListParams::default().fields("spec.nodeName=n1")).await.unwrap().items.len(), 1);
    assert_eq!(pods.list(&ListParams::default().fields("spec.nodeName=")).await.unwrap().items.len(), 1);
    assert_eq!(pods.list(&ListParams::default().fields("status.phase=Pending")).await.unwrap().items.len(), 2);
    // Bad selectors are 400s that say what is wrong.
    let e = vms.list(&ListParams::default().labels("a in (")).await.unwrap_err();
    assert_eq!(code(&e), 400);
    let e = vms.list(&ListParams::default().fields("spec.nope=1")).await.unwrap_err();
    assert_eq!(code(&e), 400);
    if let kube::Error::Api(s) = e {
        assert!(s.message.contains("field label not supported"), "{}", s.message);
    }
    h.stop().await;
}
on_both_stores!(selectors_and_paging);

async fn tables_have_kubevirts_columns(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    vms.create(&PostParams::default(), &vm("vm1")).await.unwrap();
    let accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
    let (status, t) = raw_with_accept(&h.client, "GET", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines", "application/json", accept, vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(cols, ["Name", "Age", "Status", "Ready"]);
    assert_eq!(t["rows"][0]["cells"][0], "vm1");
    assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "vm1");
    let (_, t) = raw_with_accept(&h.client, "GET", "/api/v1/nodes", "application/json", accept, vec![]).await;
    let cols: Vec<&str> = t["columnDefinitions"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(&cols[..5], ["Name", "Status", "Roles", "Age", "Version"]);
    h.stop().await;
}
on_both_stores!(tables_have_kubevirts_columns);

async fn bad_input_gets_clear_4xx(b: Backend) {
    let h = Harness::start(b).await;
    let c = &h.client;
    let path = "/apis/kubevirt.io/v1/namespaces/default/virtualmachines";
    let check = |(status, body): (u16, Value), want: u16, needle: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["kind"], "Status", "{body}");
        let msg = body["message"].as_str().unwrap_or("");
        assert!(msg.contains(needle), "message {msg:?} should mention {needle:?}");
    };
    check(raw(c, "POST", path, "application/json", b"{\"apiVersion\": ".to_vec()).await, 400, "not valid JSON");
    check(raw(c, "POST", path, "application/yaml", b"a: [1, 2\n".to_vec()).await, 400, "not valid YAML");
    check(raw(c, "POST", path, "application/json", b"[1,2,3]".to_vec()).await, 400, "must be a JSON or YAML object");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}});
    check(raw(c, "POST", path, "application/json", pod.to_string().into_bytes()).await, 400, "does not match the expected API version");
    let huge = vec![b' '; 4 * 1024 * 1024];
    check(raw(c, "POST", path, "application/json", huge).await, 413, "too large");
    check(raw(c, "GET", &format!("{path}?labelSelector=a%20in%20(x"), "application/json", vec![]).await, 400, "");
    check(raw(c, "GET", &format!("{path}?limit=abc"), "application/json", vec![]).await, 400, "limit");
    check(raw(c, "GET", &format!("{path}?continue=garbage"), "application/json", vec![]).await, 400, "continue");

    let mut unknown = vm_manifest("u1");
    unknown["spec"]["template"]["spec"]["domain"]["bogusField"] = json!(1);
    let (status, body) = raw(c, "POST", path, "application/json", unknown.to_string().into_bytes()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "spec.template.spec.domain.bogusField", "{body}");

    let mut unsupported = vm_manifest("u2");
    unsupported["spec"]["dataVolumeTemplates"] = json!([{"metadata": {"name": "dv"}, "spec": {}}]);
    let (status, body) = raw(c, "POST", path, "application/json", unsupported.to_string().into_bytes()).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["message"].as_str().unwrap().contains("dataVolumeTemplates"), "{body}");

    let mut both = vm_manifest("u3");
    both["spec"]["running"] = json!(true);
    let (status, body) = raw(c, "POST", path, "application/json", both.to_string().into_bytes()).await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["details"]["causes"].as_array().unwrap().iter().map(|c| c["field"].as_str().unwrap()).collect();
    assert!(fields.iter().any(|f| f.starts_with("spec.running") || f.starts_with("spec.runStrategy")), "{body}");

    let mut bad_disk = vm_manifest("u4");
    bad_disk["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["name"] = json!("nosuchvolume");
    let (status, body) = raw(c, "POST", path, "application/json", bad_disk.to_string().into_bytes()).await;
    assert_eq!(status, 422, "{body}");

    let mut bad_name = vm_manifest("Not_A_Label");
    bad_name["metadata"]["name"] = json!("Not_A_Label");
    let (status, body) = raw(c, "POST", path, "application/json", bad_name.to_string().into_bytes()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name", "{body}");

    check(raw(c, "POST", "/apis/kubevirt.io/v1/namespaces/nope/virtualmachines", "application/json", vm_manifest("x").to_string().into_bytes()).await, 404, "namespaces \"nope\" not found");
    check(raw(c, "GET", "/apis/kubevirt.io/v1/namespaces/default/nosuchthings", "application/json", vec![]).await, 404, "could not find");
    h.server.store.current_revision().await.unwrap();
    let vms: Api<VirtualMachine> = Api::namespaced(c.clone(), "default");
    vms.create(&PostParams::default(), &vm("ok")).await.unwrap();
    check(raw(c, "PATCH", &format!("{path}/ok"), "application/strategic-merge-patch+json", b"{}".to_vec()).await, 415, "strategic merge patch is not supported");
    check(raw(c, "PATCH", &format!("{path}/ok"), "application/merge-patch+json", b"{oops".to_vec()).await, 400, "");
    check(raw(c, "PATCH", &format!("{path}/ok"), "application/json-patch+json", b"[{\"op\":\"nope\"}]".to_vec()).await, 400, "");
    // Nothing stored was harmed by any of it.
    assert_eq!(vms.list(&ListParams::default()).await.unwrap().items.len(), 1);

    // Without a token, or with a wrong one: 401, and discovery stays closed too.
    for token in [None, Some("wrong")] {
        let kc = kube::config::Kubeconfig::read_from(&h.server.kubeconfig).unwrap();
        let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap();
        cfg.auth_info.token = token.map(|t| t.to_string().into());
        let anon = kube::Client::try_from(cfg).unwrap();
        check(raw(&anon, "GET", "/api/v1/namespaces", "application/json", vec![]).await, 401, "Unauthorized");
        check(raw(&anon, "GET", "/apis", "application/json", vec![]).await, 401, "Unauthorized");
    }
    h.stop().await;
}
on_both_stores!(bad_input_gets_clear_4xx);

async fn strategic_merge_on_nodes(b: Backend) {
    let h = Harness::start(b).await;
    let nodes: Api<Node> = Api::all(h.client.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {"a": "1"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]}}))
    .unwrap();
    nodes.create(&PostParams::default(), &n).await.unwrap();
    let p = nodes.patch("n1", &PatchParams::default(), &Patch::Strategic(json!({"spec": {"unschedulable": true}}))).await.unwrap();
    assert_eq!(p.spec.unwrap().unschedulable, Some(true));
    let s = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Strategic(json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}})))
        .await
        .unwrap();
    let conds = s.status.unwrap().conditions.unwrap();
    assert_eq!(conds.len(), 2, "conditions merge by type");
    assert_eq!(conds.iter().find(|c| c.type_ == "Ready").unwrap().status, "False");
    h.stop().await;
}
on_both_stores!(strategic_merge_on_nodes);

async fn events_are_one_store_two_versions(b: Backend) {
    let h = Harness::start(b).await;
    let v1: Api<EventV1> = Api::namespaced(h.client.clone(), "default");
    let ev: EventV1 = serde_json::from_value(json!({"metadata": {"name": "vm1.1"}, "regarding": {"kind": "VirtualMachine", "name": "vm1", "namespace": "default"},
        "note": "Started the virtual machine", "reason": "Started", "type": "Normal", "action": "Start",
        "reportingController": "ferrovirt.io/controller", "reportingInstance": "controller-1", "eventTime": "2026-01-01T00:00:00.000000Z"}))
    .unwrap();
    v1.create(&PostParams::default(), &ev).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(h.client.clone(), "default");
    let list = core
        .list(&ListParams::default().fields("involvedObject.name=vm1,involvedObject.kind=VirtualMachine"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].message.as_deref(), Some("Started the virtual machine"));
    h.stop().await;
}
on_both_stores!(events_are_one_store_two_versions);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_servers_on_one_etcd_share_writes_and_watches() {
    let h = Harness::start(Backend::Etcd).await;
    let dir2 = tempfile::tempdir().unwrap();
    let second = h.second_server(dir2.path()).await;
    let client2 = common::client_for(&second).await;
    assert_eq!(second.bootstrap.admin_token, h.server.bootstrap.admin_token, "one cluster identity");
    let a: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    let b: Api<VirtualMachine> = Api::namespaced(client2, "default");
    let mut watch = b.watch(&WatchParams::default().timeout(20), "0").await.unwrap().boxed();
    a.create(&PostParams::default(), &vm("cross")).await.unwrap();
    assert_eq!(b.get("cross").await.unwrap().metadata.name.as_deref(), Some("cross"));
    loop {
        match tokio::time::timeout(Duration::from_secs(10), watch.try_next()).await.expect("event in time").unwrap() {
            Some(WatchEvent::Added(v)) if v.metadata.name.as_deref() == Some("cross") => break,
            Some(_) => {}
            None => panic!("watch ended early"),
        }
    }
    second.stop().await;
    h.stop().await;
}

async fn namespace_deletion_takes_its_contents(b: Backend) {
    let h = Harness::start(b).await;
    let nsapi: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(h.client.clone());
    let ns = nsapi
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap())
        .await
        .unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "scratch");
    vms.create(&PostParams::default(), &vm("inside")).await.unwrap();
    let deleting = nsapi.delete("scratch", &DeleteParams::default()).await.unwrap();
    let obj = deleting.left().expect("namespace deletion is not immediate");
    assert_eq!(obj.status.unwrap().phase.as_deref(), Some("Terminating"));
    // No new content while terminating (unless it is already gone).
    if let Err(e) = vms.create(&PostParams::default(), &vm("late")).await {
        assert!(matches!(code(&e), 403 | 404), "{e:?}");
    }
    eventually(10, "namespace and its VM to go", || async {
        nsapi.get_opt("scratch").await.unwrap().is_none()
    })
    .await;
    let all: Api<VirtualMachine> = Api::all(h.client.clone());
    assert!(all.list(&ListParams::default()).await.unwrap().items.iter().all(|v| v.metadata.namespace.as_deref() != Some("scratch")));
    h.stop().await;
}
on_both_stores!(namespace_deletion_takes_its_contents);

async fn bound_pods_are_deleted_gracefully(b: Backend) {
    let h = Harness::start(b).await;
    let pods: Api<Pod> = Api::namespaced(h.client.clone(), "default");
    let mut p = pod_for("launcher", json!({"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": "x"}));
    p.metadata.owner_references = None;
    p.spec.as_mut().unwrap().node_name = Some("n1".into());
    p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(45);
    pods.create(&PostParams::default(), &p).await.unwrap();
    // A pod on a node waits for its node agent: deletionTimestamp and the grace period are set.
    pods.delete("launcher", &DeleteParams::default()).await.unwrap();
    let pending = pods.get("launcher").await.unwrap();
    assert!(pending.metadata.deletion_timestamp.is_some());
    assert_eq!(pending.metadata.deletion_grace_period_seconds, Some(45));
    // Status writes while the node agent stops the guest do not complete the deletion.
    pods.patch_status("launcher", &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Running"}}))).await.unwrap();
    pods.patch("launcher", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}}))).await.unwrap();
    assert!(pods.get_opt("launcher").await.unwrap().is_some(), "still waiting for its node agent");
    // The node agent confirms with a zero grace period.
    pods.delete("launcher", &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    assert!(pods.get_opt("launcher").await.unwrap().is_none());
    h.stop().await;
}
on_both_stores!(bound_pods_are_deleted_gracefully);

async fn vm_start_stop_restart_subresources(b: Backend) {
    let h = Harness::start(b).await;
    let vms: Api<VirtualMachine> = Api::namespaced(h.client.clone(), "default");
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(h.client.clone(), "default");
    vms.create(&PostParams::default(), &vm("vm1")).await.unwrap();
    let sub = |action: &str| format!("/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/{action}");
    // Halted: start sets Always; stop of a halted VM is a conflict.
    let (s, b) = raw(&h.client, "PUT", &sub("stop"), "application/json", b"{}".to_vec()).await;
    assert_eq!(s, 409, "{b}");
    assert!(b["message"].as_str().unwrap().contains("not running"), "{b}");
    let (s, b) = raw(&h.client, "PUT", &sub("start"), "application/json", vec![]).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(vms.get("vm1").await.unwrap().spec.run_strategy, Some(ferrovirt_api::kubevirt::RunStrategy::Always));
    // With its VMI running, start is a conflict and restart asks the controller to stop and start.
    let v = vms.get("vm1").await.unwrap();
    let vmi = vmis.create(&PostParams::default(), &vmi_for("vm1", owner_ref("VirtualMachine", "vm1", v.metadata.uid.as_deref().unwrap()))).await.unwrap();
    let (s, _) = raw(&h.client, "PUT", &sub("start"), "application/json", vec![]).await;
    assert_eq!(s, 409);
    let (s, b) = raw(&h.client, "PUT", &sub("restart"), "application/json", vec![]).await;
    assert_eq!(s, 202, "{b}");
    let reqs = vms.get("vm1").await.unwrap().status.unwrap().state_change_requests.unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].uid.as_deref(), vmi.metadata.uid.as_deref());
    let (s, _) = raw(&h.client, "PUT", &sub("stop"), "application/json", vec![]).await;
    assert_eq!(s, 202);
    assert_eq!(vms.get("vm1").await.unwrap().spec.run_strategy, Some(ferrovirt_api::kubevirt::RunStrategy::Halted));
    // Unsupported options are refused by name; unknown actions and VMs are 404/400.
    let (s, b) = raw(&h.client, "PUT", &sub("stop"), "application/json", br#"{"gracePeriod": 0}"#.to_vec()).await;
    assert_eq!(s, 400, "{b}");
    let (s, _) = raw(&h.client, "PUT", "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/nope/start", "application/json", vec![]).await;
    assert_eq!(s, 404);
    let (s, b) = raw(&h.client, "GET", "/apis/subresources.kubevirt.io/v1", "application/json", vec![]).await;
    assert_eq!(s, 200);
    assert!(b["resources"].as_array().unwrap().iter().any(|r| r["name"] == "virtualmachines/restart"));
    h.stop().await;
}
on_both_stores!(vm_start_stop_restart_subresources);
