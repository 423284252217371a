//! The API server's way to a node agent's endpoint (see `ferrovirt_node::endpoint`): TLS pinned
//! to the certificate fingerprint the Node publishes, a client certificate from the cluster CA,
//! HTTP/1.1, and `Upgrade` for byte streams.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;

use crate::error::{ApiError, ApiResult};
use crate::pki::{Bootstrap, PkiError};

pub use ferrovirt_api::wellknown::{ENDPOINT_FINGERPRINT_ANNOTATION as FINGERPRINT_ANNOTATION, ENDPOINT_STREAM_PROTOCOL as STREAM_PROTOCOL};
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Where a node's endpoint is and which certificate it must show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    pub node: String,
    pub addr: SocketAddr,
    pub fingerprint: String,
}

/// Read a Node's endpoint from its object (pure).
pub fn node_target(node: &Value) -> Result<NodeTarget, String> {
    let name = node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0 && *p <= u16::MAX as u64)
        .ok_or_else(|| format!("node {name} publishes no endpoint (status.daemonEndpoints.kubeletEndpoint.Port)"))?;
    let ip: IpAddr = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .find_map(|a| a.get("address").and_then(Value::as_str).and_then(|s| s.parse().ok()))
        .ok_or_else(|| format!("node {name} has no InternalIP address"))?;
    let fingerprint = node
        .pointer(&format!("/metadata/annotations/{}", FINGERPRINT_ANNOTATION.replace('/', "~1")))
        .and_then(Value::as_str)
        .filter(|f| f.len() == 64 && f.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("node {name} publishes no endpoint certificate fingerprint ({FINGERPRINT_ANNOTATION})"))?
        .to_ascii_lowercase();
    Ok(NodeTarget { node: name, addr: SocketAddr::new(ip, port as u16), fingerprint })
}

/// Accepts exactly one certificate, by fingerprint; signatures are still checked.
#[derive(Debug)]
struct Pinned {
    fingerprint: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: String = Sha256::digest(end_entity.as_ref()).iter().map(|b| format!("{b:02x}")).collect();
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!("the node's certificate {seen} is not the one its Node object names")))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens connections to node endpoints with the API server's client certificate.
pub struct NodeDialer {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl std::fmt::Debug for NodeDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeDialer { .. }")
    }
}

fn unreachable(target: &NodeTarget, what: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("node {} cannot be reached at {}: {what}", target.node, target.addr))
}

impl NodeDialer {
    /// A dialer with a fresh client certificate signed by the cluster CA.
    pub fn new(bootstrap: &Bootstrap) -> Result<Self, PkiError> {
        let (cert_pem, key_pem) = bootstrap.client_cert("ferrovirt:apiserver")?;
        let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| PkiError::Tls(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .ok_or_else(|| PkiError::Tls("no private key".into()))?;
        Ok(NodeDialer { chain, key, provider: Arc::new(rustls::crypto::ring::default_provider()) })
    }

    async fn connect(&self, target: &NodeTarget) -> ApiResult<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { fingerprint: target.fingerprint.clone(), provider: self.provider.clone() }))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| ApiError::Internal(format!("the API server's client certificate: {e}")))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target.addr))
            .await
            .map_err(|_| unreachable(target, "connection timed out"))?
            .map_err(|e| unreachable(target, e))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(target.addr.ip().into()), tcp)
            .await
            .map_err(|e| unreachable(target, e))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| unreachable(target, e))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(send)
    }

    /// `PUT path` on the node; an error answer becomes the matching API error.
    pub async fn call(&self, target: &NodeTarget, path: &str) -> ApiResult<()> {
        let exchange = async {
            let mut send = self.connect(target).await?;
            let req = Request::builder()
                .method(Method::PUT)
                .uri(path)
                .header(http::header::HOST, target.addr.to_string())
                .body(Empty::new())
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let resp = send.send_request(req).await.map_err(|e| unreachable(target, e))?;
            let code = resp.status();
            let body = resp.into_body().collect().await.map_err(|e| unreachable(target, e))?.to_bytes();
            if code.is_success() {
                return Ok(());
            }
            Err(node_error(code, &body))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange).await.map_err(|_| unreachable(target, "the node did not answer in time"))?
    }

    /// Open a byte stream (`GET path` with `Upgrade`).
    pub async fn stream(&self, target: &NodeTarget, path: &str) -> ApiResult<hyper::upgrade::Upgraded> {
        let mut send = self.connect(target).await?;
        let req = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(http::header::HOST, target.addr.to_string())
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, STREAM_PROTOCOL)
            .body(Empty::new())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut resp = tokio::time::timeout(CALL_TIMEOUT, send.send_request(req))
            .await
            .map_err(|_| unreachable(target, "the node did not answer in time"))?
            .map_err(|e| unreachable(target, e))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let code = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            return Err(node_error(code, &body));
        }
        hyper::upgrade::on(&mut resp).await.map_err(|e| unreachable(target, e))
    }
}

/// The API error for a node's error answer (pure).
pub fn node_error(code: StatusCode, body: &[u8]) -> ApiError {
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    match code {
        StatusCode::CONFLICT => ApiError::Conflict(Default::default(), message),
        StatusCode::NOT_FOUND => ApiError::Unavailable(format!("the node does not run this VM: {message}")),
        StatusCode::BAD_REQUEST => ApiError::BadRequest(message),
        _ => ApiError::Unavailable(format!("the node answered {code}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node() -> Value {
        json!({
            "metadata": {"name": "n1", "annotations": {FINGERPRINT_ANNOTATION: "AB".repeat(32)}},
            "status": {
                "addresses": [{"type": "Hostname", "address": "host"}, {"type": "InternalIP", "address": "10.0.0.7"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            }
        })
    }

    #[test]
    fn target_from_node() {
        let t = node_target(&node()).unwrap();
        assert_eq!(t.addr, "10.0.0.7:10250".parse().unwrap());
        assert_eq!(t.fingerprint, "ab".repeat(32));
        assert_eq!(t.node, "n1");
    }

    #[test]
    fn incomplete_nodes_are_named() {
        let mut n = node();
        n["status"]["daemonEndpoints"] = json!({});
        assert!(node_target(&n).unwrap_err().contains("no endpoint"));
        let mut n = node();
        n["metadata"]["annotations"][FINGERPRINT_ANNOTATION] = json!("zz");
        assert!(node_target(&n).unwrap_err().contains("fingerprint"));
        let mut n = node();
        n["status"]["addresses"] = json!([]);
        assert!(node_target(&n).unwrap_err().contains("InternalIP"));
    }

    #[test]
    fn node_errors_map_to_api_errors() {
        assert!(matches!(node_error(StatusCode::CONFLICT, br#"{"message":"VMI is not paused"}"#), ApiError::Conflict(_, m) if m == "VMI is not paused"));
        assert!(matches!(node_error(StatusCode::BAD_GATEWAY, b"x"), ApiError::Unavailable(_)));
    }
}
