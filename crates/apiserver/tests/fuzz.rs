//! Property tests of the request path: arbitrary bodies, content types, paths and queries sent to the
//! real handler (in-process, on the embedded store) never panic and never get a 5xx, and every
//! refusal is a Kubernetes `Status`.

use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Value};

use ferrovirt_apiserver::rest::Objects;
use ferrovirt_apiserver::server::{handle, Server};
use ferrovirt_store::redb_store::RedbStore;

const TOKEN: &str = "fuzz-token";

fn server() -> (Arc<Server>, tempfile::TempDir, tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let store = Arc::new(RedbStore::open(&dir.path().join("s.redb")).unwrap());
    let objects = Objects::new(store);
    rt.block_on(ferrovirt_apiserver::gc::ensure_default_namespaces(&objects)).unwrap();
    (Arc::new(Server::new(objects, TOKEN, "127.0.0.1:0")), dir, rt)
}

async fn send(server: &Arc<Server>, method: &str, uri: &str, ct: &str, body: Vec<u8>) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("Authorization", format!("Bearer {TOKEN}"))
        .header("Content-Type", ct)
        .body(Body::from(body))
        .unwrap();
    let resp = handle(server.clone(), req).await;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn vm() -> Value {
    json!({"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": "base"},
        "spec": {"runStrategy": "Halted", "template": {"spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}}}}})
}

/// JSON values shaped like (broken) VM manifests: the real keys with random values mixed in.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9./_-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        let keys = prop_oneof![
            Just("metadata".to_string()), Just("spec".to_string()), Just("name".to_string()),
            Just("template".to_string()), Just("domain".to_string()), Just("volumes".to_string()),
            Just("running".to_string()), Just("runStrategy".to_string()), Just("labels".to_string()),
            "[a-z]{1,6}".prop_map(|s| s),
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..5).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn check(status: u16, body: &Value) -> Result<(), TestCaseError> {
    prop_assert!(status < 500, "server error {status}: {body}");
    if status >= 400 {
        prop_assert_eq!(&body["kind"], "Status", "refusals are Status objects: {}", body);
        prop_assert_eq!(body["code"].as_u64(), Some(status as u64));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_break_create_or_patch(body in prop::collection::vec(any::<u8>(), 0..512),
                                                   ct in prop::sample::select(vec![
                                                       "application/json", "application/yaml", "application/merge-patch+json",
                                                       "application/json-patch+json", "application/strategic-merge-patch+json",
                                                       "application/apply-patch+yaml", "text/plain"])) {
        let (server, _dir, rt) = SERVER.with(|s| s.clone());
        let _ = &_dir;
        rt.block_on(async {
            let (s, b) = send(&server, "POST", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines", ct, body.clone()).await;
            check(s, &b)?;
            let (s, b) = send(&server, "PATCH", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/base?fieldManager=f", ct, body.clone()).await;
            check(s, &b)?;
            let (s, b) = send(&server, "PATCH", "/api/v1/namespaces/default", ct, body).await;
            check(s, &b)
        })?;
    }

    #[test]
    fn structured_garbage_never_breaks_admission(v in json_value(), mut_spec in json_value()) {
        let (server, _dir, rt) = SERVER.with(|s| s.clone());
        rt.block_on(async {
            let mut doc = vm();
            doc["metadata"]["name"] = json!("fz");
            doc["spec"]["template"]["spec"]["domain"] = v.clone();
            let (s, b) = send(&server, "POST", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines", "application/json", doc.to_string().into_bytes()).await;
            check(s, &b)?;
            if s == 201 {
                send(&server, "DELETE", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/fz", "application/json", vec![]).await;
            }
            let patch = json!({"spec": mut_spec});
            let (s, b) = send(&server, "PATCH", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines/base", "application/merge-patch+json", patch.to_string().into_bytes()).await;
            check(s, &b)?;
            let (s, b) = send(&server, "POST", "/api/v1/nodes", "application/json", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": v}).to_string().into_bytes()).await;
            check(s, &b)
        })?;
    }

    #[test]
    fn arbitrary_paths_and_queries_are_4xx_at_worst(path in "/(api|apis)(/[a-zA-Z0-9.%_-]{0,12}){0,6}",
                                                    query in "[a-zA-Z=&,!()% .-]{0,40}") {
        let (server, _dir, rt) = SERVER.with(|s| s.clone());
        rt.block_on(async {
            let uri = format!("{path}?{}", query.replace(' ', "%20").replace('%', "%25"));
            if let Ok(uri) = uri.parse::<http::Uri>() {
                let (s, b) = send(&server, "GET", &uri.to_string(), "application/json", vec![]).await;
                check(s, &b)?;
            }
            Ok::<(), TestCaseError>(())
        })?;
    }
}

thread_local! {
    static SERVER: (Arc<Server>, Arc<tempfile::TempDir>, Arc<tokio::runtime::Runtime>) = {
        let (server, dir, rt) = server();
        let rt = Arc::new(rt);
        rt.block_on(async {
            let (s, b) = send(&server, "POST", "/apis/kubevirt.io/v1/namespaces/default/virtualmachines", "application/json", vm().to_string().into_bytes()).await;
            assert_eq!(s, 201, "{b}");
        });
        (server, Arc::new(dir), rt)
    };
}
