//! The node agent's endpoint: what the API server asks of a running VM (pause, unpause, soft
//! reboot) and the byte streams it relays (serial console, VNC).
//!
//! ```text
//!  API server ──TLS (client cert from the cluster CA)──▶ node endpoint ──▶ pods/<uid>/control.sock
//!                                                                     └──▶ pods/<uid>/console.sock, vnc.sock
//! ```
//!
//! - The endpoint serves TLS with a certificate it makes for itself at start; the Node object
//!   carries its SHA-256 fingerprint (annotation [`FINGERPRINT_ANNOTATION`]) and its port
//!   (`status.daemonEndpoints.kubeletEndpoint.Port`), so the API server pins exactly this
//!   certificate. Only someone who can write the Node can redirect the API server.
//! - The caller must present a client certificate signed by the cluster CA (the one in the node's
//!   kubeconfig) for client authentication: the API server makes one for itself at start.
//! - Paths name a launcher Pod by UID, and only folders under this node's `pods/` answer:
//!
//! ```text
//!  PUT /v1/pods/<uid>/pause | unpause | softreboot     -> 200 {"message": ...} or an error
//!  GET /v1/pods/<uid>/console | vnc  (Upgrade: ferrovirt-stream)  -> 101, then raw bytes both ways
//!  GET /v1/pods/<uid>/portforward/<port>  (Upgrade)  -> 101, then the guest's TCP port
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use ferrovirt_launcher::spec::{ControlReply, ControlRequest, LauncherPhase, CONSOLE_SOCKET, VNC_SOCKET};

use crate::local;

pub use ferrovirt_api::wellknown::{ENDPOINT_FINGERPRINT_ANNOTATION as FINGERPRINT_ANNOTATION, ENDPOINT_STREAM_PROTOCOL as STREAM_PROTOCOL};

/// How the endpoint listens and whom it trusts.
#[derive(Clone)]
pub struct EndpointSettings {
    /// Where to listen (port 0 picks a free one).
    pub listen: SocketAddr,
    /// CA certificates (DER) whose client certificates may call.
    pub client_ca: Vec<Vec<u8>>,
}

impl std::fmt::Debug for EndpointSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointSettings").field("listen", &self.listen).finish_non_exhaustive()
    }
}

/// What the Node publishes about its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub port: u16,
    /// Hex SHA-256 of the serving certificate (DER).
    pub fingerprint: String,
}

/// Hex SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der).iter().map(|b| format!("{b:02x}")).collect()
}

/// A bound endpoint, not serving yet.
pub struct Endpoint {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    pods_dir: PathBuf,
    pub published: Published,
}

/// Why the endpoint cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("making the endpoint's certificate failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("the endpoint's TLS configuration: {0}")]
    Tls(String),
}

impl Endpoint {
    /// Make a certificate, bind the port and build the TLS configuration.
    pub async fn bind(settings: &EndpointSettings, pods_dir: PathBuf, names: &[String]) -> Result<Endpoint, EndpointError> {
        let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        sans.extend(names.iter().cloned());
        sans.push(settings.listen.ip().to_string());
        sans.sort();
        sans.dedup();
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(sans)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "ferrovirt-node-endpoint");
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        let fingerprint = fingerprint(&cert_der);

        let mut roots = rustls::RootCertStore::empty();
        for der in &settings.client_ca {
            roots.add(CertificateDer::from(der.clone())).map_err(|e| EndpointError::Tls(format!("client CA: {e}")))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| EndpointError::Tls(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EndpointError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![cert_der], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
            .map_err(|e| EndpointError::Tls(e.to_string()))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];

        let listener =
            TcpListener::bind(settings.listen).await.map_err(|source| EndpointError::Listen { addr: settings.listen, source })?;
        let port = listener.local_addr().map_err(|source| EndpointError::Listen { addr: settings.listen, source })?.port();
        Ok(Endpoint {
            listener,
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            pods_dir,
            published: Published { port, fingerprint },
        })
    }

    /// Serve until the future is dropped.
    pub async fn serve(self) -> &'static str {
        info!(port = self.published.port, "node endpoint listening");
        let pods_dir = Arc::new(self.pods_dir);
        loop {
            let (tcp, peer) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "node endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (tls, pods_dir) = (self.tls.clone(), pods_dir.clone());
            tokio::spawn(async move {
                let stream = match tls.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        debug!(%peer, error = %e, "node endpoint: TLS handshake refused");
                        return;
                    }
                };
                let svc = hyper::service::service_fn(move |req| {
                    let pods_dir = pods_dir.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&pods_dir, req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .with_upgrades();
                if let Err(e) = conn.await {
                    debug!(%peer, error = %e, "node endpoint: connection ended");
                }
            });
        }
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(code: StatusCode, message: impl Into<String>) -> Reply {
    let body = serde_json::to_vec(&serde_json::json!({ "message": message.into() })).unwrap_or_default();
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("static response parts")
}

/// What a path asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Control { uid: String, request: ControlRequest },
    Stream { uid: String, socket: &'static str },
    /// A stream to the guest's TCP port.
    Forward { uid: String, port: u16 },
}

/// Parse a method and path into a call (pure).
pub fn parse(method: &Method, path: &str) -> Result<Call, (StatusCode, String)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let ["v1", "pods", uid, "portforward", port] = segs.as_slice() {
        if !local::is_uid(uid) {
            return Err((StatusCode::BAD_REQUEST, format!("{uid:?} is not a pod UID")));
        }
        let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or((StatusCode::BAD_REQUEST, format!("{port:?} is not a TCP port")))?;
        if *method != Method::GET {
            return Err((StatusCode::METHOD_NOT_ALLOWED, "portforward takes GET".into()));
        }
        return Ok(Call::Forward { uid: uid.to_string(), port });
    }
    let ["v1", "pods", uid, action] = segs.as_slice() else {
        return Err((StatusCode::NOT_FOUND, format!("no such endpoint path {path:?}")));
    };
    if !local::is_uid(uid) {
        return Err((StatusCode::BAD_REQUEST, format!("{uid:?} is not a pod UID")));
    }
    let uid = uid.to_string();
    let (want, call) = match *action {
        "pause" => (Method::PUT, Call::Control { uid, request: ControlRequest::Pause }),
        "unpause" => (Method::PUT, Call::Control { uid, request: ControlRequest::Unpause }),
        "softreboot" => (Method::PUT, Call::Control { uid, request: ControlRequest::SoftReboot }),
        "console" => (Method::GET, Call::Stream { uid, socket: CONSOLE_SOCKET }),
        "vnc" => (Method::GET, Call::Stream { uid, socket: VNC_SOCKET }),
        other => return Err((StatusCode::NOT_FOUND, format!("unknown action {other:?}"))),
    };
    if *method != want {
        return Err((StatusCode::METHOD_NOT_ALLOWED, format!("{action} takes {want}")));
    }
    Ok(call)
}

/// Whether a control request makes sense in the launcher's phase; the refusal says why (pure).
pub fn control_allowed(request: &ControlRequest, phase: Option<LauncherPhase>) -> Result<(), String> {
    match (request, phase) {
        (_, None) => Err("the VM has no launcher state yet".into()),
        (ControlRequest::Pause, Some(LauncherPhase::Running)) => Ok(()),
        (ControlRequest::Pause, Some(LauncherPhase::Paused)) => Err("VMI is already paused".into()),
        (ControlRequest::Unpause, Some(LauncherPhase::Paused)) => Ok(()),
        (ControlRequest::Unpause, Some(LauncherPhase::Running)) => Err("VMI is not paused".into()),
        (ControlRequest::SoftReboot, Some(LauncherPhase::Running)) => Ok(()),
        (ControlRequest::SoftReboot, Some(LauncherPhase::Paused)) => Err("VMI is paused".into()),
        (_, Some(p)) => Err(format!("VMI is not running (the launcher is {p:?})")),
    }
}

async fn handle(pods_dir: &Path, req: Request<Incoming>) -> Reply {
    let call = match parse(req.method(), req.uri().path()) {
        Ok(c) => c,
        Err((code, message)) => return reply(code, message),
    };
    match call {
        Call::Control { uid, request } => {
            let dir = pods_dir.join(&uid);
            if !dir.is_dir() {
                return reply(StatusCode::NOT_FOUND, format!("pod {uid} does not run on this node"));
            }
            let phase = ferrovirt_launcher::spec::read_state(&dir).map(|s| s.phase);
            if let Err(why) = control_allowed(&request, phase) {
                return reply(StatusCode::CONFLICT, why);
            }
            match local::control(&dir, &request).await {
                Ok(ControlReply { ok: true, .. }) => reply(StatusCode::OK, "done"),
                Ok(ControlReply { error, .. }) => {
                    reply(StatusCode::CONFLICT, error.unwrap_or_else(|| "the launcher refused the request".into()))
                }
                Err(e) => reply(StatusCode::BAD_GATEWAY, format!("the launcher did not answer: {e}")),
            }
        }
        Call::Stream { uid, socket } => {
            let dir = pods_dir.join(&uid);
            let wants = wants_upgrade(&req);
            if let Err(r) = wants {
                return r;
            }
            let path = dir.join(socket);
            // Connect before answering 101, so a missing socket is an error the caller can report.
            match tokio::net::UnixStream::connect(&path).await {
                Ok(unix) => upgrade_and_splice(req, unix),
                Err(e) if !dir.is_dir() => reply(StatusCode::NOT_FOUND, format!("no VM runs here for this pod: {e}")),
                Err(e) => reply(StatusCode::CONFLICT, format!("the VM's {socket} is not open (is the VM running?): {e}")),
            }
        }
        Call::Forward { uid, port } => {
            if let Err(r) = wants_upgrade(&req) {
                return r;
            }
            let dir = pods_dir.join(&uid);
            if !dir.is_dir() {
                return reply(StatusCode::NOT_FOUND, format!("pod {uid} does not run on this node"));
            }
            let host_port = match local::control(&dir, &ControlRequest::Forward { guest_port: port }).await {
                Ok(ControlReply { ok: true, port: Some(p), .. }) => p,
                Ok(ControlReply { error, .. }) => return reply(StatusCode::CONFLICT, error.unwrap_or_else(|| "the launcher refused the port forward".into())),
                Err(e) => return reply(StatusCode::BAD_GATEWAY, format!("the launcher did not answer: {e}")),
            };
            match tokio::net::TcpStream::connect(("127.0.0.1", host_port)).await {
                Ok(tcp) => upgrade_and_splice(req, tcp),
                Err(e) => reply(StatusCode::BAD_GATEWAY, format!("cannot reach the guest's port {port}: {e}")),
            }
        }
    }
}

fn wants_upgrade(req: &Request<Incoming>) -> Result<(), Reply> {
    let asked = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(STREAM_PROTOCOL));
    if asked {
        Ok(())
    } else {
        Err(reply(StatusCode::BAD_REQUEST, format!("this endpoint needs `Upgrade: {STREAM_PROTOCOL}`")))
    }
}

/// Answer 101 and relay bytes between the upgraded connection and `io` until either side ends.
fn upgrade_and_splice<S>(req: Request<Incoming>, mut io: S) -> Reply
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                let mut up = hyper_util::rt::TokioIo::new(upgraded);
                let r = tokio::io::copy_bidirectional(&mut up, &mut io).await;
                debug!(?r, "stream ended");
            }
            Err(e) => debug!(error = %e, "upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::UPGRADE, STREAM_PROTOCOL)
        .body(Full::new(Bytes::new()))
        .expect("static response parts")
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0b3c6a52-2d0c-4f31-9a3e-0f6f2b8b1c11";

    #[test]
    fn paths() {
        assert_eq!(
            parse(&Method::PUT, &format!("/v1/pods/{UID}/pause")),
            Ok(Call::Control { uid: UID.into(), request: ControlRequest::Pause })
        );
        assert_eq!(parse(&Method::GET, &format!("/v1/pods/{UID}/console")), Ok(Call::Stream { uid: UID.into(), socket: CONSOLE_SOCKET }));
        assert_eq!(parse(&Method::GET, &format!("/v1/pods/{UID}/pause")).unwrap_err().0, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(parse(&Method::PUT, "/v1/pods/../pause").unwrap_err().0, StatusCode::BAD_REQUEST);
        assert_eq!(parse(&Method::PUT, &format!("/v1/pods/{UID}/reset")).unwrap_err().0, StatusCode::NOT_FOUND);
        assert_eq!(parse(&Method::PUT, "/v1/other").unwrap_err().0, StatusCode::NOT_FOUND);
        assert_eq!(parse(&Method::GET, &format!("/v1/pods/{UID}/portforward/22")), Ok(Call::Forward { uid: UID.into(), port: 22 }));
        assert_eq!(parse(&Method::GET, &format!("/v1/pods/{UID}/portforward/0")).unwrap_err().0, StatusCode::BAD_REQUEST);
        assert_eq!(parse(&Method::GET, &format!("/v1/pods/{UID}/portforward/99999")).unwrap_err().0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn control_needs_the_right_phase() {
        use LauncherPhase::*;
        assert!(control_allowed(&ControlRequest::Pause, Some(Running)).is_ok());
        assert_eq!(control_allowed(&ControlRequest::Pause, Some(Paused)).unwrap_err(), "VMI is already paused");
        assert!(control_allowed(&ControlRequest::Unpause, Some(Paused)).is_ok());
        assert_eq!(control_allowed(&ControlRequest::Unpause, Some(Running)).unwrap_err(), "VMI is not paused");
        assert_eq!(control_allowed(&ControlRequest::SoftReboot, Some(Paused)).unwrap_err(), "VMI is paused");
        assert!(control_allowed(&ControlRequest::Pause, Some(Stopping)).unwrap_err().contains("not running"));
        assert!(control_allowed(&ControlRequest::Pause, None).is_err());
    }

    #[test]
    fn fingerprint_is_hex_sha256() {
        assert_eq!(fingerprint(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
