//! The API server as fvctl talks to it: a kube-rs [`kube::Client`] from the kubeconfig (which
//! handles TLS, the bearer token and the base URL) and plain REST calls on top of it that return
//! JSON values, so that any kind, Tables (`Accept: ...;as=Table`), every patch type, watch streams
//! and KubeVirt's subresources and websockets go through one place, and every failure becomes an
//! [`Error`] built from the server's `Status`.
//!
//! ```text
//!   kubeconfig ─▶ kube::Config ─▶ kube::Client ─▶ Rest::call(method, path, body) ─▶ JSON | Error::Api(Status)
//!                                             └─▶ Rest::websocket(path, "plain.kubevirt.io") ─▶ WebSocketStream
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use kube::client::Body;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use crate::errors::{ApiFailure, Error, Result};
use crate::resources::{self, encode_query, ResourceKind};

/// How long connecting to the API server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The `Accept` header asking for server-side printing, as kubectl sends it.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

/// Where the kubeconfig comes from and which of its contexts to use.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `--kubeconfig` or `$KUBECONFIG` (a `:`-separated list is merged, as kubectl does).
    pub kubeconfig: Option<String>,
    /// `--context`.
    pub context: Option<String>,
}

/// The default kubeconfig of `ferrovirt up` (`$XDG_DATA_HOME/ferrovirt/control-plane/kubeconfig`,
/// `~/.local/share/...` without XDG_DATA_HOME), used when there is no `$KUBECONFIG` and no
/// `~/.kube/config`.
pub fn ferrovirt_up_kubeconfig() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("ferrovirt/control-plane/kubeconfig"))
}

/// The kubeconfig files to read, in order: the explicit list, else `~/.kube/config`, else the
/// one `ferrovirt up` writes.
pub fn kubeconfig_files(explicit: Option<&str>) -> Vec<PathBuf> {
    if let Some(list) = explicit.filter(|s| !s.is_empty()) {
        return list
            .split(':')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
    }
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
    [home, ferrovirt_up_kubeconfig()]
        .into_iter()
        .flatten()
        .filter(|p| p.is_file())
        .take(1)
        .collect()
}

/// The API server, reached through a kubeconfig.
#[derive(Clone)]
pub struct Rest {
    client: kube::Client,
    /// The same, without kube-rs's retries of 429/503/504 (which back off for minutes), for
    /// requests whose refusals the command shows and retries itself (evictions).
    client_once: kube::Client,
    /// The server's URL, from the kubeconfig.
    pub cluster_url: String,
    /// The namespace of the kubeconfig's context (`default` if it names none).
    pub default_namespace: String,
}

impl Rest {
    /// Reads the kubeconfig and builds a client. Nothing is sent yet.
    pub async fn connect(opts: &ConnectOptions) -> Result<Rest> {
        let files = kubeconfig_files(opts.kubeconfig.as_deref());
        if files.is_empty() {
            return Err(Error::Unreachable(
                "no kubeconfig: pass --kubeconfig FILE, set KUBECONFIG, or start a cluster with `ferrovirt up` \
                 (it prints the path of its kubeconfig)"
                    .into(),
            ));
        }
        let mut merged: Option<Kubeconfig> = None;
        for file in &files {
            let kc = Kubeconfig::read_from(file).map_err(|e| {
                Error::Unreachable(format!(
                    "cannot read kubeconfig {}: {}",
                    file.display(),
                    chain(&e)
                ))
            })?;
            merged = Some(match merged {
                None => kc,
                Some(m) => m.merge(kc).map_err(|e| {
                    Error::Unreachable(format!("cannot merge kubeconfig {}: {e}", file.display()))
                })?,
            });
        }
        let kc = merged.expect("at least one kubeconfig file");
        let options = KubeConfigOptions {
            context: opts.context.clone(),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| {
                Error::Unreachable(format!(
                    "cannot use kubeconfig {}: {}",
                    display_files(&files),
                    chain(&e)
                ))
            })?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let cluster_url = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let default_namespace = config.default_namespace.clone();
        let mut once_config = config.clone();
        once_config.default_retry = false;
        let build = |config: kube::Config| {
            kube::Client::try_from(config).map_err(|e| {
                Error::Unreachable(format!(
                    "cannot build a client for {cluster_url}: {}",
                    chain(&e)
                ))
            })
        };
        let client = build(config)?;
        let client_once = build(once_config)?;
        Ok(Rest {
            client,
            client_once,
            cluster_url,
            default_namespace,
        })
    }

    /// Sends one request; a transport failure is [`Error::Unreachable`]. Returns the status and body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Bytes)> {
        let response = self
            .send_streaming(method, path, accept, content_type, body)
            .await?;
        let status = response.status();
        let bytes = response.into_body().collect_bytes().await.map_err(|e| {
            Error::Unreachable(format!(
                "the API server at {} broke off the answer: {}",
                self.cluster_url,
                chain(&e)
            ))
        })?;
        Ok((status, bytes))
    }

    async fn send_streaming(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<http::Response<Body>> {
        let mut request = Request::builder().method(method).uri(path);
        request = request.header(header::ACCEPT, accept.unwrap_or("application/json"));
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let request = request
            .body(Body::from(body))
            .map_err(|e| Error::Usage(format!("cannot build a request for {path}: {e}")))?;
        self.client
            .send(request)
            .await
            .map_err(|e| self.unreachable(&e))
    }

    fn unreachable(&self, e: &kube::Error) -> Error {
        Error::Unreachable(format!(
            "cannot reach the API server at {}: {}",
            self.cluster_url,
            chain(e)
        ))
    }

    /// One request whose answer is JSON; a non-2xx answer is [`Error::Api`] with the server's Status.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let bytes = match body {
            Some(b) => serde_json::to_vec(b)
                .map_err(|e| Error::Failed(format!("cannot encode the request: {e}")))?,
            None => Vec::new(),
        };
        let ct = content_type.or(body.map(|_| "application/json"));
        self.call_raw(method, path, None, ct, bytes).await
    }

    /// [`Self::call`] with raw bytes and an `Accept` header.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        accept: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Value> {
        let (status, bytes) = self.send(method, path, accept, content_type, body).await?;
        if !status.is_success() {
            return Err(Error::Api(ApiFailure::from_body(status.as_u16(), &bytes)));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Failed(format!(
                "the API server answered {path} with something that is not JSON: {e}"
            ))
        })
    }

    /// GET one object.
    pub async fn get(
        &self,
        kind: &'static ResourceKind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value> {
        self.call(Method::GET, &kind.path(ns, Some(name)), None, None)
            .await
            .map_err(|e| e.for_object(kind, name, ns))
    }

    /// GET one object, `None` if it does not exist.
    pub async fn get_opt(
        &self,
        kind: &'static ResourceKind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        match self
            .call(Method::GET, &kind.path(ns, Some(name)), None, None)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(Error::Api(f)) if f.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// LIST (all pages) in `ns`, or in every namespace with `None`.
    pub async fn list(
        &self,
        kind: &'static ResourceKind,
        ns: Option<&str>,
        query: &ListQuery,
    ) -> Result<Value> {
        let mut items = Vec::new();
        let mut continue_token: Option<String> = None;
        loop {
            let mut q = query.clone();
            q.limit = Some(500);
            q.continue_token = continue_token.clone();
            let path = format!("{}{}", kind.path(ns, None), q.to_query());
            let mut page = self.call(Method::GET, &path, None, None).await?;
            if let Some(Value::Array(page_items)) = page.get_mut("items").map(Value::take) {
                items.extend(page_items);
            }
            continue_token = page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            if continue_token.is_none() {
                let rv = page
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(Value::Null);
                for item in &mut items {
                    set_type_meta(item, kind);
                }
                return Ok(serde_json::json!({
                    "apiVersion": kind.api_version(),
                    "kind": format!("{}List", kind.kind),
                    "metadata": {"resourceVersion": rv},
                    "items": items,
                }));
            }
        }
    }

    /// A `meta.k8s.io/v1` Table of one object or of the collection, printed by the server.
    pub async fn table(
        &self,
        kind: &'static ResourceKind,
        ns: Option<&str>,
        name: Option<&str>,
        query: &ListQuery,
    ) -> Result<Value> {
        let path = format!(
            "{}{}",
            kind.path(ns, name),
            if name.is_some() {
                String::new()
            } else {
                query.to_query()
            }
        );
        self.call_raw(Method::GET, &path, Some(TABLE_ACCEPT), None, Vec::new())
            .await
            .map_err(|e| match name {
                Some(n) => e.for_object(kind, n, ns),
                None => e,
            })
    }

    /// POST a new object.
    pub async fn create(
        &self,
        kind: &'static ResourceKind,
        ns: Option<&str>,
        obj: &Value,
        dry_run: bool,
    ) -> Result<Value> {
        let path = format!(
            "{}{}",
            kind.path(ns, None),
            if dry_run { "?dryRun=All" } else { "" }
        );
        self.call(Method::POST, &path, None, Some(obj)).await
    }

    /// PUT a whole object (an update pinned to its resourceVersion).
    pub async fn replace(
        &self,
        kind: &'static ResourceKind,
        ns: Option<&str>,
        name: &str,
        obj: &Value,
    ) -> Result<Value> {
        self.call(Method::PUT, &kind.path(ns, Some(name)), None, Some(obj))
            .await
            .map_err(|e| e.for_object(kind, name, ns))
    }

    /// PATCH with the given patch content type.
    pub async fn patch(
        &self,
        kind: &'static ResourceKind,
        ns: Option<&str>,
        name: &str,
        content_type: &str,
        patch: &Value,
        dry_run: bool,
    ) -> Result<Value> {
        let path = format!(
            "{}{}",
            kind.path(ns, Some(name)),
            if dry_run { "?dryRun=All" } else { "" }
        );
        self.call(Method::PATCH, &path, Some(content_type), Some(patch))
            .await
            .map_err(|e| e.for_object(kind, name, ns))
    }

    /// DELETE one object, with an optional grace period.
    pub async fn delete(
        &self,
        kind: &'static ResourceKind,
        ns: Option<&str>,
        name: &str,
        grace_period: Option<i64>,
    ) -> Result<Value> {
        let mut body = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"});
        if let Some(g) = grace_period {
            body["gracePeriodSeconds"] = g.into();
        }
        self.call(
            Method::DELETE,
            &kind.path(ns, Some(name)),
            None,
            Some(&body),
        )
        .await
        .map_err(|e| e.for_object(kind, name, ns))
    }

    /// A watch: each line of the response is one event (`{"type": ..., "object": ...}`). With
    /// `table`, objects arrive as one-row Tables.
    pub async fn watch(
        &self,
        kind: &'static ResourceKind,
        ns: Option<&str>,
        query: &ListQuery,
        table: bool,
    ) -> Result<impl Stream<Item = Result<Value>> + Unpin + use<>> {
        let mut q = query.clone();
        q.watch = true;
        q.allow_bookmarks = true;
        let path = format!("{}{}", kind.path(ns, None), q.to_query());
        let accept = if table {
            TABLE_ACCEPT
        } else {
            "application/json"
        };
        let response = self
            .send_streaming(Method::GET, &path, Some(accept), None, Vec::new())
            .await?;
        let status = response.status();
        if !status.is_success() {
            let bytes = response
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            return Err(Error::Api(ApiFailure::from_body(status.as_u16(), &bytes)));
        }
        let url = self.cluster_url.clone();
        let data = response
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        let reader = tokio_util_lines(data);
        Ok(Box::pin(reader.map(move |line| {
            let line =
                line.map_err(|e| Error::Unreachable(format!("the watch on {url} broke off: {e}")))?;
            serde_json::from_str::<Value>(&line)
                .map_err(|e| Error::Failed(format!("a watch event is not JSON: {e}")))
        })))
    }

    /// `PUT` on a KubeVirt subresource (`virtualmachines/N/start`, `virtualmachineinstances/N/pause`).
    pub async fn subresource_put(
        &self,
        plural: &str,
        ns: &str,
        name: &str,
        action: &str,
        body: &Value,
    ) -> Result<()> {
        let path = subresource_path(plural, ns, name, action);
        self.call(Method::PUT, &path, None, Some(body))
            .await
            .map(|_| ())
    }

    /// `GET` on a KubeVirt subresource (`virtualmachineinstances/N/guestosinfo`).
    pub async fn subresource_get(
        &self,
        plural: &str,
        ns: &str,
        name: &str,
        action: &str,
    ) -> Result<Value> {
        self.call(
            Method::GET,
            &subresource_path(plural, ns, name, action),
            None,
            None,
        )
        .await
    }

    /// Opens a websocket on `path` with one subprotocol (`plain.kubevirt.io` for the console and
    /// VNC). kube's own `Client::connect` only speaks the k8s channel subprotocols, so the upgrade
    /// is done here, on the same authenticated client.
    pub async fn websocket(
        &self,
        path: &str,
        subprotocol: &str,
    ) -> Result<WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>> {
        let key = tokio_tungstenite::tungstenite::handshake::client::generate_key();
        let request = Request::builder()
            .method(Method::GET)
            .uri(path)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, &key)
            .header(header::SEC_WEBSOCKET_PROTOCOL, subprotocol)
            .body(Body::from(Vec::new()))
            .map_err(|e| Error::Usage(format!("cannot build a request for {path}: {e}")))?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            let bytes = response
                .into_body()
                .collect_bytes()
                .await
                .unwrap_or_default();
            return Err(Error::Api(ApiFailure::from_body(status.as_u16(), &bytes)));
        }
        let upgraded = hyper::upgrade::on(response).await.map_err(|e| {
            Error::Unreachable(format!(
                "the websocket upgrade on {path} failed: {}",
                chain(&e)
            ))
        })?;
        Ok(WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await)
    }

    /// `POST` a JSON body and return the JSON answer, without kube-rs's retries: a 429 comes
    /// back at once as [`Error::Api`] (the Eviction subresource answers 429 while a pod may not
    /// go yet).
    pub async fn post_once(&self, path: &str, body: &Value) -> Result<Value> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| Error::Failed(format!("cannot encode the request: {e}")))?;
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::ACCEPT, "application/json")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(bytes))
            .map_err(|e| Error::Usage(format!("cannot build a request for {path}: {e}")))?;
        let response = self
            .client_once
            .send(request)
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let bytes = response.into_body().collect_bytes().await.map_err(|e| {
            Error::Unreachable(format!(
                "the API server at {} broke off the answer: {}",
                self.cluster_url,
                chain(&e)
            ))
        })?;
        if !status.is_success() {
            return Err(Error::Api(ApiFailure::from_body(status.as_u16(), &bytes)));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// `/version`.
    pub async fn version(&self) -> Result<Value> {
        self.call(Method::GET, "/version", None, None).await
    }

    /// The kind of a manifest: from fvctl's table, else from the server's discovery documents.
    pub async fn discover(&self, api_version: &str, kind: &str) -> Result<&'static ResourceKind> {
        if let Some(k) = resources::by_api_version_kind(api_version, kind) {
            return Ok(k);
        }
        let path = if api_version.contains('/') {
            format!("/apis/{api_version}")
        } else {
            format!("/api/{api_version}")
        };
        let list = match self.call(Method::GET, &path, None, None).await {
            Ok(l) => l,
            Err(Error::Api(f)) if f.is_not_found() => {
                return Err(Error::Usage(format!(
                    "the server does not serve apiVersion {api_version:?} (kind {kind})"
                )))
            }
            Err(e) => return Err(e),
        };
        let found = list
            .get("resources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| {
                r.get("kind").and_then(Value::as_str) == Some(kind)
                    && !r
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("/")
                        .contains('/')
            });
        let Some(r) = found else {
            return Err(Error::Usage(format!(
                "the server does not serve kind {kind:?} in {api_version}"
            )));
        };
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.to_string()),
        };
        let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
        let plural = r
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let singular = r
            .get("singularName")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        // A discovered kind lives as long as the process, like the built-in ones.
        Ok(Box::leak(Box::new(ResourceKind {
            group: leak(group),
            version: leak(version),
            kind: leak(kind.to_string()),
            plural: leak(plural),
            singular: leak(singular),
            short_names: &[],
            namespaced: r.get("namespaced").and_then(Value::as_bool).unwrap_or(true),
        })))
    }

    /// The underlying kube-rs client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }
}

/// `/apis/subresources.kubevirt.io/v1/namespaces/NS/PLURAL/NAME/ACTION`
pub fn subresource_path(plural: &str, ns: &str, name: &str, action: &str) -> String {
    format!(
        "/apis/{}/v1/namespaces/{}/{plural}/{}/{action}",
        ferrovirt_api::SUBRESOURCES_GROUP,
        resources::encode_segment(ns),
        resources::encode_segment(name)
    )
}

/// Splits a byte stream into lines.
fn tokio_util_lines(
    data: impl Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static,
) -> impl Stream<Item = std::io::Result<String>> + Unpin + Send {
    Box::pin(futures::stream::unfold(
        (data, Vec::<u8>::new(), false),
        |(mut data, mut buf, mut done)| async move {
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    let text = String::from_utf8_lossy(&line).trim().to_string();
                    if text.is_empty() {
                        continue;
                    }
                    return Some((Ok(text), (data, buf, done)));
                }
                if done {
                    let rest = String::from_utf8_lossy(&buf).trim().to_string();
                    buf.clear();
                    return if rest.is_empty() {
                        None
                    } else {
                        Some((Ok(rest), (data, buf, done)))
                    };
                }
                match data.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(e), (data, buf, true))),
                    None => done = true,
                }
            }
        },
    ))
}

/// `apiVersion` and `kind` on a list item (lists carry them once, for the list).
pub fn set_type_meta(obj: &mut Value, kind: &ResourceKind) {
    if let Some(map) = obj.as_object_mut() {
        if !map.contains_key("apiVersion") || !map.contains_key("kind") {
            let mut typed = serde_json::Map::new();
            typed.insert("apiVersion".into(), kind.api_version().into());
            typed.insert("kind".into(), kind.kind.into());
            for (k, v) in std::mem::take(map) {
                if k != "apiVersion" && k != "kind" {
                    typed.insert(k, v);
                }
            }
            *map = typed;
        }
    }
}

/// The query of a list or watch.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub resource_version: Option<String>,
    pub timeout_seconds: Option<u32>,
    pub limit: Option<u32>,
    pub continue_token: Option<String>,
    pub watch: bool,
    pub allow_bookmarks: bool,
}

impl ListQuery {
    /// `?labelSelector=...&...`, or `""` when nothing is set.
    pub fn to_query(&self) -> String {
        let mut parts = Vec::new();
        if let Some(l) = &self.label_selector {
            parts.push(format!("labelSelector={}", encode_query(l)));
        }
        if let Some(f) = &self.field_selector {
            parts.push(format!("fieldSelector={}", encode_query(f)));
        }
        if let Some(rv) = &self.resource_version {
            parts.push(format!("resourceVersion={}", encode_query(rv)));
        }
        if let Some(l) = self.limit {
            parts.push(format!("limit={l}"));
        }
        if let Some(c) = &self.continue_token {
            parts.push(format!("continue={}", encode_query(c)));
        }
        if self.watch {
            parts.push("watch=true".into());
        }
        if self.allow_bookmarks {
            parts.push("allowWatchBookmarks=true".into());
        }
        if let Some(t) = self.timeout_seconds {
            parts.push(format!("timeoutSeconds={t}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

/// An error and its sources, `: `-joined, without repeats (kube nests the same text).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

fn display_files(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|p| Path::new(p).display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_encoded() {
        let q = ListQuery {
            label_selector: Some("app in (a,b),tier=web".into()),
            watch: true,
            ..Default::default()
        };
        assert_eq!(
            q.to_query(),
            "?labelSelector=app%20in%20%28a%2Cb%29%2Ctier%3Dweb&watch=true"
        );
        assert_eq!(ListQuery::default().to_query(), "");
    }

    #[test]
    fn subresource_paths_are_kubevirts() {
        assert_eq!(
            subresource_path("virtualmachines", "default", "vm1", "start"),
            "/apis/subresources.kubevirt.io/v1/namespaces/default/virtualmachines/vm1/start"
        );
    }

    #[test]
    fn list_items_get_their_type() {
        let mut item = serde_json::json!({"metadata": {"name": "a"}});
        set_type_meta(&mut item, resources::find("vm").unwrap());
        assert_eq!(
            serde_json::to_string(&item).unwrap(),
            r#"{"apiVersion":"kubevirt.io/v1","kind":"VirtualMachine","metadata":{"name":"a"}}"#
        );
    }

    #[test]
    fn explicit_kubeconfig_lists_are_split() {
        assert_eq!(
            kubeconfig_files(Some("/a:/b")),
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }

    #[tokio::test]
    async fn lines_are_split_across_chunks() {
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"{\"a\":1}\n{\"b\"")),
            Ok(Bytes::from_static(b":2}\n\n")),
            Ok(Bytes::from_static(b"{\"c\":3}")),
        ];
        let lines: Vec<String> = tokio_util_lines(futures::stream::iter(chunks))
            .map(|l| l.unwrap())
            .collect()
            .await;
        assert_eq!(lines, [r#"{"a":1}"#, r#"{"b":2}"#, r#"{"c":3}"#]);
    }
}
