//! Shared harness: an in-process API server on the embedded store or on a real etcd, and a kube-rs
//! client built from the kubeconfig it writes.

#![allow(dead_code)]

use std::time::Duration;

use http_body_util::BodyExt;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use serde_json::{json, Value};

use ferrovirt_apiserver::{Config, Running};
use ferrovirt_store::testing::EtcdProcess;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
}

pub struct Harness {
    pub server: Running,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub etcd: Option<EtcdProcess>,
}

impl Harness {
    pub async fn start(backend: Backend) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let etcd = match backend {
            Backend::Embedded => None,
            Backend::Etcd => Some(EtcdProcess::start().expect("etcd must be installed (Debian package etcd-server)")),
        };
        let server = start_server(dir.path(), etcd.as_ref()).await;
        let client = client_for(&server).await;
        Harness { server, client, dir, etcd }
    }

    /// A second API server on the same etcd, with its own data directory.
    pub async fn second_server(&self, dir: &std::path::Path) -> Running {
        start_server(dir, self.etcd.as_ref()).await
    }

    pub async fn stop(self) {
        self.server.stop().await;
    }
}

pub async fn start_server(dir: &std::path::Path, etcd: Option<&EtcdProcess>) -> Running {
    let mut config = Config::new(dir, "127.0.0.1:0".parse().unwrap());
    if let Some(e) = etcd {
        config.etcd = e.endpoints();
    }
    ferrovirt_apiserver::start(config).await.expect("API server starts")
}

pub async fn client_for(server: &Running) -> Client {
    let kc = Kubeconfig::read_from(&server.kubeconfig).expect("kubeconfig readable");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.expect("kubeconfig valid");
    Client::try_from(config).expect("client")
}

/// A raw request through the authenticated client: (HTTP status, parsed body).
pub async fn raw(client: &Client, method: &str, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    raw_with_accept(client, method, path, content_type, "application/json", body).await
}

pub async fn raw_with_accept(client: &Client, method: &str, path: &str, content_type: &str, accept: &str, body: Vec<u8>) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("Content-Type", content_type)
        .header("Accept", accept)
        .body(kube::client::Body::from(body))
        .unwrap();
    let resp = client.send(req).await.expect("request sent");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({ "raw": String::from_utf8_lossy(&bytes) }));
    (status, v)
}

/// The HTTP code of a kube-rs API error.
pub fn code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A KubeVirt-style VM manifest (containerDisk + cloudInitNoCloud), like KubeVirt's examples.
pub fn vm_manifest(name: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": { "name": name, "labels": { "app": "demo" } },
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": { "labels": { "kubevirt.io/vm": name } },
                "spec": {
                    "domain": {
                        "devices": {
                            "disks": [
                                { "name": "containerdisk", "disk": { "bus": "virtio" } },
                                { "name": "cloudinitdisk", "disk": { "bus": "virtio" } }
                            ],
                            "interfaces": [ { "name": "default", "masquerade": {} } ]
                        },
                        "resources": { "requests": { "memory": "128Mi" } }
                    },
                    "networks": [ { "name": "default", "pod": {} } ],
                    "volumes": [
                        { "name": "containerdisk", "containerDisk": { "image": "127.0.0.1:5000/guest:latest" } },
                        { "name": "cloudinitdisk", "cloudInitNoCloud": { "userData": "#!/bin/sh\necho hello from cloud-init\n" } }
                    ]
                }
            }
        }
    })
}

/// Poll `f` until it returns true or `secs` pass.
pub async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Run a test body against both stores.
#[macro_export]
macro_rules! on_both_stores {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name($crate::common::Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name($crate::common::Backend::Etcd).await
            }
        }
    };
}
