//! The node endpoint and the API server's dialer against each other: only the cluster's API server
//! gets in (client certificate from the cluster CA), the API server talks only to the certificate
//! the Node names (pinned fingerprint), control requests reach the launcher's `control.sock`, and
//! streams relay bytes both ways. The launcher here is a stand-in serving the folder's sockets.

use std::path::Path;

use ferrovirt_apiserver::error::ApiError;
use ferrovirt_apiserver::node_proxy::{NodeDialer, NodeTarget};
use ferrovirt_launcher::spec::{LauncherPhase, LauncherState, CONSOLE_SOCKET, CONTROL_SOCKET, STATE_FILE};
use ferrovirt_node::endpoint::{Endpoint, EndpointSettings};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

const POD: &str = "6f1c1e7a-3d2b-4a59-8f0e-2b7c9d1e4a55";

fn ca_der(pem: &str) -> Vec<u8> {
    rustls_pemfile::certs(&mut pem.as_bytes()).next().unwrap().unwrap().to_vec()
}

/// A stand-in launcher: answers `ok` on control.sock and sends every command line to `seen`;
/// console.sock echoes.
fn fake_launcher(dir: &Path, phase: LauncherPhase) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    std::fs::create_dir_all(dir).unwrap();
    let state = LauncherState {
        phase,
        reason: "Running".into(),
        message: String::new(),
        qemu_pid: None,
        kvm: false,
        since: "2026-01-01T00:00:00Z".into(),
        mac: None,
        ip: None,
    };
    std::fs::write(dir.join(STATE_FILE), serde_json::to_vec(&state).unwrap()).unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let control = UnixListener::bind(dir.join(CONTROL_SOCKET)).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = control.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                BufReader::new(r).read_line(&mut line).await.unwrap();
                let _ = tx.send(line.trim().to_string());
                w.write_all(b"{\"ok\":true}\n").await.unwrap();
            });
        }
    });
    let console = UnixListener::bind(dir.join(CONSOLE_SOCKET)).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = console.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_cluster_api_server_gets_in_and_requests_reach_the_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let server = ferrovirt_apiserver::start(ferrovirt_apiserver::Config::new(dir.path().join("cp"), "127.0.0.1:0".parse().unwrap())).await.unwrap();
    let other = ferrovirt_apiserver::start(ferrovirt_apiserver::Config::new(dir.path().join("other"), "127.0.0.1:0".parse().unwrap())).await.unwrap();

    let pods = dir.path().join("pods");
    let mut seen = fake_launcher(&pods.join(POD), LauncherPhase::Running);
    let settings = EndpointSettings { listen: "127.0.0.1:0".parse().unwrap(), client_ca: vec![ca_der(&server.bootstrap.ca_cert_pem)] };
    let endpoint = Endpoint::bind(&settings, pods.clone(), &[]).await.unwrap();
    let target = NodeTarget {
        node: "n1".into(),
        addr: format!("127.0.0.1:{}", endpoint.published.port).parse().unwrap(),
        fingerprint: endpoint.published.fingerprint.clone(),
    };
    let serving = tokio::spawn(endpoint.serve());

    // The cluster's API server: the request reaches the launcher.
    let dialer = NodeDialer::new(&server.bootstrap).unwrap();
    dialer.call(&target, &format!("/v1/pods/{POD}/pause")).await.unwrap();
    assert_eq!(seen.recv().await.unwrap(), r#"{"command":"pause"}"#);

    // The state says Running: unpause is refused with KubeVirt's words, nothing reaches the launcher.
    match dialer.call(&target, &format!("/v1/pods/{POD}/unpause")).await {
        Err(ApiError::Conflict(_, m)) => assert_eq!(m, "VMI is not paused"),
        other => panic!("unpause of a running VM: {other:?}"),
    }
    // A pod that does not run here, and a path that is not a pod.
    assert!(matches!(dialer.call(&target, "/v1/pods/0b3c6a52-2d0c-4f31-9a3e-0f6f2b8b1c11/pause").await, Err(ApiError::Unavailable(m)) if m.contains("does not run")));
    assert!(matches!(dialer.call(&target, "/v1/pods/..%2F..%2Fetc/pause").await, Err(ApiError::BadRequest(_))));

    // A stream: bytes go to console.sock and come back.
    let stream = dialer.stream(&target, &format!("/v1/pods/{POD}/console")).await.unwrap();
    let mut io = hyper_util::rt::TokioIo::new(stream);
    io.write_all(b"hello console").await.unwrap();
    let mut buf = [0u8; 13];
    io.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello console");

    // Another cluster's API server (another CA) is refused at the TLS handshake.
    let stranger = NodeDialer::new(&other.bootstrap).unwrap();
    assert!(matches!(stranger.call(&target, &format!("/v1/pods/{POD}/pause")).await, Err(ApiError::Unavailable(_))));
    // The right API server refuses a node whose certificate is not the one the Node names.
    let wrong = NodeTarget { fingerprint: "00".repeat(32), ..target.clone() };
    match dialer.call(&wrong, &format!("/v1/pods/{POD}/pause")).await {
        Err(ApiError::Unavailable(m)) => assert!(m.contains("not the one its Node object names"), "{m}"),
        other => panic!("a node with another certificate: {other:?}"),
    }
    // Neither of the refused calls reached the launcher.
    assert!(seen.try_recv().is_err());

    serving.abort();
    server.stop().await;
    other.stop().await;
}
