//! KubeVirt's VMI subresources, carried out by the node agent that runs the VMI:
//!
//! ```text
//!  PUT  .../virtualmachineinstances/N/pause | unpause | softreboot   -> 200 once the launcher did it
//!  GET  .../virtualmachineinstances/N/console | vnc   websocket, subprotocol plain.kubevirt.io,
//!                                                     binary frames of raw bytes both ways
//!  GET  .../virtualmachineinstances/N/portforward/PORT[/tcp]   websocket to the guest's TCP port
//!  GET  .../virtualmachineinstances/N/guestosinfo     409 unless a guest agent is connected
//! ```
//!
//! The VMI names its node (`status.nodeName`) and its launcher Pod (`status.activePods`); the Node
//! names its endpoint (see [`crate::node_proxy`]).

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use http::{header, HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::{Message, Role};
use tokio_tungstenite::WebSocketStream;

use crate::error::{ApiError, ApiResult};
use crate::kinds;
use crate::node_proxy::{node_target, NodeDialer};
use crate::request::Target;
use crate::rest::Objects;

/// The websocket subprotocol of KubeVirt's console and VNC streams.
pub const PLAIN_PROTOCOL: &str = "plain.kubevirt.io";

/// What a VMI subresource asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmiAction {
    Pause,
    Unpause,
    SoftReboot,
    Console,
    Vnc,
    /// A stream to the guest's TCP port.
    PortForward(u16),
    GuestOsInfo,
}

impl VmiAction {
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(rest) = name.strip_prefix("portforward/") {
            let (port, protocol) = rest.split_once('/').unwrap_or((rest, "tcp"));
            return match (port.parse::<u16>(), protocol) {
                (Ok(p), "tcp") if p > 0 => Some(VmiAction::PortForward(p)),
                _ => None,
            };
        }
        Some(match name {
            "pause" => VmiAction::Pause,
            "unpause" => VmiAction::Unpause,
            "softreboot" => VmiAction::SoftReboot,
            "console" => VmiAction::Console,
            "vnc" => VmiAction::Vnc,
            "guestosinfo" => VmiAction::GuestOsInfo,
            _ => return None,
        })
    }

    fn method(self) -> Method {
        match self {
            VmiAction::Pause | VmiAction::Unpause | VmiAction::SoftReboot => Method::PUT,
            VmiAction::Console | VmiAction::Vnc | VmiAction::PortForward(_) | VmiAction::GuestOsInfo => Method::GET,
        }
    }

    /// The node endpoint's path for this action on a launcher Pod.
    fn node_path(self, pod_uid: &str) -> String {
        let a = match self {
            VmiAction::Pause => "pause",
            VmiAction::Unpause => "unpause",
            VmiAction::SoftReboot => "softreboot",
            VmiAction::Console => "console",
            VmiAction::Vnc => "vnc",
            VmiAction::GuestOsInfo => "guestosinfo",
            VmiAction::PortForward(port) => return format!("/v1/pods/{pod_uid}/portforward/{port}"),
        };
        format!("/v1/pods/{pod_uid}/{a}")
    }
}

/// Where a VMI runs, as its status says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub node: String,
    pub pod_uid: String,
}

fn condition_true(vmi: &Value, kind: &str) -> bool {
    vmi.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| cs.iter().any(|c| c.get("type").and_then(Value::as_str) == Some(kind) && c.get("status").and_then(Value::as_str) == Some("True")))
}

/// Check that `action` can be done on `vmi` now and find where it runs (pure). The refusal is
/// KubeVirt's wording.
pub fn check(vmi: &Value, action: VmiAction) -> Result<Placement, String> {
    if crate::object::is_deleting(vmi) {
        return Err("VMI is being deleted".into());
    }
    let phase = vmi.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
    if phase != "Running" {
        return Err(match action {
            VmiAction::Console | VmiAction::Vnc | VmiAction::PortForward(_) => {
                format!("Unable to connect to VM because phase is {phase} instead of Running")
            }
            _ => "VMI is not running".into(),
        });
    }
    let paused = condition_true(vmi, "Paused");
    match action {
        VmiAction::Pause if paused => return Err("VMI is already paused".into()),
        VmiAction::Unpause if !paused => return Err("VMI is not paused".into()),
        VmiAction::SoftReboot if paused => return Err("VMI is paused".into()),
        VmiAction::GuestOsInfo if !condition_true(vmi, "AgentConnected") => {
            return Err("VMI does not have guest agent connected".into())
        }
        _ => {}
    }
    let node = vmi.pointer("/status/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or("VMI is not on a node yet")?;
    let pod_uid = vmi
        .pointer("/status/activePods")
        .and_then(Value::as_object)
        .and_then(|pods| pods.iter().find(|(_, n)| n.as_str() == Some(node)).map(|(uid, _)| uid.clone()))
        .ok_or_else(|| format!("VMI has no launcher Pod on node {node}"))?;
    Ok(Placement { node: node.to_string(), pod_uid })
}

/// Serve one VMI subresource request.
pub async fn handle(
    objects: &Objects,
    dialer: Option<&Arc<NodeDialer>>,
    ns: &str,
    name: &str,
    action: &str,
    req: Request<Body>,
) -> ApiResult<Response> {
    let action = VmiAction::parse(action).ok_or_else(|| {
        if action.starts_with("portforward/") {
            ApiError::BadRequest(format!("{action:?}: expected portforward/<port 1-65535>[/tcp] (only TCP is forwarded)"))
        } else {
            ApiError::NoRoute
        }
    })?;
    if req.method() != action.method() {
        return Err(ApiError::MethodNotAllowed);
    }
    let vmi_kind = kinds::find("kubevirt.io", "v1", "virtualmachineinstances").expect("served");
    let node_kind = kinds::find("", "v1", "nodes").expect("served");
    let subject = crate::rest::subject(vmi_kind, name);
    let target = Target { kind: vmi_kind, namespace: Some(ns.to_string()), name: Some(name.to_string()), subresource: None };
    let vmi = objects.get(&target, name).await?;
    let placement = check(&vmi, action).map_err(|m| ApiError::Conflict(subject.clone(), m))?;
    let ws = match action {
        VmiAction::Console | VmiAction::Vnc | VmiAction::PortForward(_) => Some(websocket_handshake(req.headers())?),
        _ => None,
    };
    let dialer = dialer.ok_or_else(|| ApiError::Unavailable("this API server cannot reach node agents".into()))?;
    let node_target_ = Target { kind: node_kind, namespace: None, name: Some(placement.node.clone()), subresource: None };
    let node = objects.get(&node_target_, &placement.node).await?;
    let to_node = node_target(&node).map_err(ApiError::Unavailable)?;
    let path = action.node_path(&placement.pod_uid);
    let with_subject = |e: ApiError| match e {
        ApiError::Conflict(_, m) => ApiError::Conflict(subject.clone(), m),
        other => other,
    };
    match ws {
        None => {
            dialer.call(&to_node, &path).await.map_err(with_subject)?;
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        Some(hs) => {
            let upstream = dialer.stream(&to_node, &path).await.map_err(with_subject)?;
            tokio::spawn(async move {
                match hyper::upgrade::on(req).await {
                    Ok(client) => {
                        let ws = WebSocketStream::from_raw_socket(TokioIo::new(client), Role::Server, None).await;
                        relay(ws, TokioIo::new(upstream)).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                }
            });
            let mut resp = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(header::SEC_WEBSOCKET_ACCEPT, hs.accept);
            if let Some(p) = hs.protocol {
                resp = resp.header(header::SEC_WEBSOCKET_PROTOCOL, p);
            }
            resp.body(Body::empty()).map_err(|e| ApiError::Internal(e.to_string()))
        }
    }
}

/// The server's half of a websocket handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    pub accept: String,
    /// The subprotocol chosen (`plain.kubevirt.io`), if the client offered any.
    pub protocol: Option<&'static str>,
}

/// Check a websocket upgrade request (pure).
pub fn websocket_handshake(headers: &HeaderMap) -> ApiResult<Handshake> {
    let has = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has(header::UPGRADE, "websocket") || !has(header::CONNECTION, "upgrade") {
        return Err(ApiError::BadRequest(format!(
            "this subresource is a websocket (subprotocol {PLAIN_PROTOCOL}); the request did not ask to upgrade"
        )));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::BadRequest("websocket request without Sec-WebSocket-Key".into()))?;
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let protocol = if offered.is_empty() {
        None
    } else if offered.contains(&PLAIN_PROTOCOL) {
        Some(PLAIN_PROTOCOL)
    } else {
        return Err(ApiError::BadRequest(format!("unsupported websocket subprotocols {offered:?}; this stream speaks {PLAIN_PROTOCOL}")));
    };
    Ok(Handshake { accept: tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()), protocol })
}

/// Relay bytes between a websocket and a node stream until either side ends.
async fn relay<S, U>(ws: WebSocketStream<S>, upstream: U)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ws_tx, mut ws_rx) = ws.split();
    let (mut up_rx, mut up_tx) = tokio::io::split(upstream);
    let inbound = async {
        while let Some(msg) = ws_rx.next().await {
            let data = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Text(t)) => t.as_bytes().to_vec().into(),
                Ok(Message::Close(c)) => {
                    tracing::debug!(?c, "stream: client close");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "stream: client error");
                    break;
                }
                Ok(_) => continue,
            };
            if up_tx.write_all(&data).await.is_err() {
                break;
            }
        }
        let _ = up_tx.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match up_rx.read(&mut buf).await {
                Ok(0) => {
                    tracing::debug!("stream: node EOF");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "stream: node read error");
                    break;
                }
                Ok(n) => {
                    if let Err(e) = ws_tx.send(Message::Binary(buf[..n].to_vec().into())).await {
                        tracing::debug!(error = %e, "stream: client write error");
                        return;
                    }
                }
            }
        }
        let _ = ws_tx.send(Message::Close(None)).await;
    };
    // Either side ending ends the session.
    tokio::select! {
        _ = inbound => tracing::debug!("stream: the client side ended"),
        _ = outbound => tracing::debug!("stream: the node side ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn running() -> Value {
        json!({
            "metadata": {"name": "vm1", "namespace": "default", "uid": "u"},
            "status": {"phase": "Running", "nodeName": "n1", "activePods": {"old-pod": "n0", "pod-1": "n1"}, "conditions": []}
        })
    }

    #[test]
    fn actions_parse() {
        assert_eq!(VmiAction::parse("portforward/22"), Some(VmiAction::PortForward(22)));
        assert_eq!(VmiAction::parse("portforward/8080/tcp"), Some(VmiAction::PortForward(8080)));
        assert_eq!(VmiAction::parse("portforward/53/udp"), None);
        assert_eq!(VmiAction::parse("portforward/0"), None);
        assert_eq!(VmiAction::parse("pause"), Some(VmiAction::Pause));
        assert_eq!(VmiAction::parse("reset"), None);
        assert_eq!(VmiAction::PortForward(22).node_path("u"), "/v1/pods/u/portforward/22");
    }

    #[test]
    fn running_vmi_is_found_on_its_node() {
        assert_eq!(check(&running(), VmiAction::Pause), Ok(Placement { node: "n1".into(), pod_uid: "pod-1".into() }));
        assert!(check(&running(), VmiAction::Console).is_ok());
    }

    #[test]
    fn refusals_use_kubevirt_wording() {
        let mut v = running();
        v["status"]["phase"] = json!("Scheduled");
        assert_eq!(check(&v, VmiAction::Pause).unwrap_err(), "VMI is not running");
        assert_eq!(check(&v, VmiAction::Console).unwrap_err(), "Unable to connect to VM because phase is Scheduled instead of Running");
        assert_eq!(check(&running(), VmiAction::Unpause).unwrap_err(), "VMI is not paused");
        assert_eq!(check(&running(), VmiAction::GuestOsInfo).unwrap_err(), "VMI does not have guest agent connected");
        let mut p = running();
        p["status"]["conditions"] = json!([{"type": "Paused", "status": "True"}]);
        assert_eq!(check(&p, VmiAction::Pause).unwrap_err(), "VMI is already paused");
        assert_eq!(check(&p, VmiAction::SoftReboot).unwrap_err(), "VMI is paused");
        assert!(check(&p, VmiAction::Unpause).is_ok());
        let mut d = running();
        d["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        assert_eq!(check(&d, VmiAction::Pause).unwrap_err(), "VMI is being deleted");
        let mut n = running();
        n["status"]["activePods"] = json!({"pod-0": "n0"});
        assert!(check(&n, VmiAction::Pause).unwrap_err().contains("no launcher Pod"));
    }

    #[test]
    fn websocket_handshake_picks_plain() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, "base64.binary.k8s.io, plain.kubevirt.io".parse().unwrap());
        let hs = websocket_handshake(&h).unwrap();
        // RFC 6455's example key and answer.
        assert_eq!(hs.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(hs.protocol, Some(PLAIN_PROTOCOL));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, "v4.channel.k8s.io".parse().unwrap());
        assert!(websocket_handshake(&h).is_err());
        h.remove(header::SEC_WEBSOCKET_PROTOCOL);
        assert_eq!(websocket_handshake(&h).unwrap().protocol, None);
        h.remove(header::UPGRADE);
        assert!(websocket_handshake(&h).is_err());
    }
}
