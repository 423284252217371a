//! The HTTP side: TLS, bearer-token authentication, routing and content negotiation, and the
//! start-up of a whole API server (store, identity, kubeconfig, default namespaces, background tasks).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tracing::Instrument;

use ferrovirt_store::etcd_store::EtcdStore;
use ferrovirt_store::redb_store::RedbStore;
use ferrovirt_store::Store;

use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::kinds;
use crate::object::{self, MAX_BODY};
use crate::pki::{self, Bootstrap};
use crate::request::{parse_path, Query, Route, Target};
use crate::rest::{DeleteOptions, Objects, Selectors};
use crate::table;
use crate::watch::{self, Render};

/// How an API server is started.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the embedded database, the CA certificate and the kubeconfig live.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// etcd endpoints; empty means the embedded store.
    pub etcd: Vec<String>,
    /// Key prefix in etcd (several clusters may share one etcd).
    pub etcd_prefix: String,
    /// Extra names or addresses for the serving certificate.
    pub advertise: Vec<String>,
    /// How often old history is compacted away.
    pub compaction_interval: Duration,
}

impl Config {
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Config {
            data_dir: data_dir.into(),
            listen,
            etcd: Vec::new(),
            etcd_prefix: String::new(),
            advertise: Vec::new(),
            compaction_interval: Duration::from_secs(300),
        }
    }
}

/// Shared state of a serving API server.
pub struct Server {
    pub objects: Objects,
    token: String,
    address: String,
    /// How VMI subresources reach node agents (none: they answer 503).
    nodes: Option<Arc<crate::node_proxy::NodeDialer>>,
}

impl Server {
    /// The request handler's state: objects on a store, the admin token, the advertised address.
    pub fn new(objects: Objects, token: impl Into<String>, address: impl Into<String>) -> Self {
        Server { objects, token: token.into(), address: address.into(), nodes: None }
    }
}

/// A started API server.
pub struct Running {
    pub addr: SocketAddr,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub store: Arc<dyn Store>,
    pub bootstrap: Bootstrap,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stop serving and the background tasks.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
            let _ = t.await;
        }
    }

    /// Wait until the server stops (it only stops through [`Running::stop`] or an error).
    pub async fn wait(&mut self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Open the store the configuration names.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    if config.etcd.is_empty() {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", config.data_dir.display()))?;
        let path = config.data_dir.join("store.redb");
        let store = RedbStore::open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open the embedded store {}: {e}", path.display()))?;
        Ok(Arc::new(store))
    } else {
        let store = EtcdStore::connect(&config.etcd, &config.etcd_prefix)
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach etcd at {}: {e}", config.etcd.join(",")))?;
        Ok(Arc::new(store))
    }
}

/// Start an API server: it serves until [`Running::stop`].
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let store = open_store(&config).await?;
    start_with_store(config, store).await
}

pub async fn start_with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Running> {
    std::fs::create_dir_all(&config.data_dir)?;
    let bootstrap = Bootstrap::load_or_create(&store).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let (cert, key) = bootstrap.serving_cert(addr, &config.advertise)?;
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(pki::server_config(&cert, &key)?));
    let host = if addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { addr.ip().to_string() };
    let url = if addr.is_ipv6() { format!("https://[{host}]:{}", addr.port()) } else { format!("https://{host}:{}", addr.port()) };
    let kubeconfig = config.data_dir.join("kubeconfig");
    pki::write_private(&kubeconfig, &bootstrap.kubeconfig(&url))?;
    pki::write_private(&config.data_dir.join("ca.crt"), &bootstrap.ca_cert_pem)?;

    let objects = Objects::new(store.clone());
    crate::gc::ensure_default_namespaces(&objects).await?;
    let server = Arc::new(Server {
        objects: objects.clone(),
        token: bootstrap.admin_token.clone(),
        address: format!("{host}:{}", addr.port()),
        nodes: Some(Arc::new(crate::node_proxy::NodeDialer::new(&bootstrap)?)),
    });
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(serve(listener, tls, server, rx.clone())));
    tasks.push(tokio::spawn(crate::gc::run(objects.clone())));
    tasks.push(tokio::spawn(crate::gc::compact_periodically(store.clone(), config.compaction_interval)));
    tracing::info!(%url, kubeconfig = %kubeconfig.display(), store = if config.etcd.is_empty() { "embedded" } else { "etcd" }, "API server listening");
    Ok(Running { addr, url, kubeconfig, store, bootstrap, shutdown, tasks })
}

async fn serve(listener: TcpListener, tls: tokio_rustls::TlsAcceptor, server: Arc<Server>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let stream = match tls.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let server = server.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(server, req.map(Body::new)).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let _ = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(stream), svc).await;
        });
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Serve one request.
pub async fn handle(server: Arc<Server>, req: Request<Body>) -> Response {
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
    async move {
        match route(&server, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }
    .instrument(span)
    .await
}

fn authorized(server: &Server, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), server.token.as_bytes()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Past this much, an oversized upload is cut off instead of drained.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

async fn read_body(mut body: Body) -> ApiResult<Bytes> {
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading the request body failed: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= MAX_BODY {
                buf.extend_from_slice(&data);
            } else if total > DRAIN_LIMIT {
                break;
            }
        }
    }
    // An oversized body is read to its end (up to a bound) so the client sees the 413, not a reset.
    if total > MAX_BODY {
        return Err(ApiError::TooLarge { limit: MAX_BODY });
    }
    Ok(buf.freeze())
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| part.contains("as=Table") && part.contains("application/json"))
}

fn check_accept(headers: &HeaderMap) -> ApiResult<()> {
    let accepts: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.split(';').next().unwrap_or("").trim().to_string())
        .collect();
    if accepts.is_empty()
        || accepts.iter().any(|a| matches!(a.as_str(), "" | "*/*" | "application/json" | "application/*" | "application/json-seq"))
    {
        Ok(())
    } else {
        Err(ApiError::NotAcceptable("application/json".into()))
    }
}

/// `/readyz` (and the older `/healthz`): 200 while the store answers a quorum read, 503 when it
/// does not. As in Kubernetes, a caller without the token learns which check failed but not why.
async fn readiness(server: &Server, headers: &HeaderMap) -> Response {
    match server.objects.store.current_revision().await {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            let why = if authorized(server, headers) { e.to_string() } else { "reason withheld".into() };
            let body = format!("[+]ping ok\n[-]storage failed: {why}\nreadyz check failed\n");
            (StatusCode::SERVICE_UNAVAILABLE, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
        }
    }
}

async fn route(server: &Arc<Server>, req: Request<Body>) -> ApiResult<Response> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        // Alive as long as it serves: a store without quorum is no reason to restart the server.
        "/livez" => return Ok((StatusCode::OK, "ok").into_response()),
        "/healthz" | "/readyz" => return Ok(readiness(server, req.headers()).await),
        "/version" | "/version/" => return Ok(json_response(StatusCode::OK, &discovery::version())),
        _ => {}
    }
    if !authorized(server, req.headers()) {
        return Err(ApiError::Unauthorized);
    }
    match path.trim_end_matches('/') {
        "/api" => return Ok(json_response(StatusCode::OK, &discovery::api_versions(&server.address))),
        "/apis" => return Ok(json_response(StatusCode::OK, &discovery::api_groups())),
        "/openapi/v2" => {
            let proto = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("protobuf"));
            return Ok(if proto {
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")],
                    discovery::openapi_v2_protobuf(),
                )
                    .into_response()
            } else {
                json_response(StatusCode::OK, &discovery::openapi_v2_json())
            });
        }
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/apis/subresources.kubevirt.io/v1") {
        return kubevirt_subresource(server, rest, req).await;
    }
    if path.trim_end_matches('/') == format!("/apis/{}/{}", crate::eviction::POLICY_GROUP, crate::eviction::POLICY_VERSION) {
        return Ok(json_response(StatusCode::OK, &crate::eviction::policy_resource_list()));
    }
    if let Some((ns, name)) = crate::eviction::route(&path) {
        let (parts, body) = req.into_parts();
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let query = Query::parse(parts.uri.query());
        return crate::eviction::handle(&server.objects, ns, name, &parts.method, content_type, read_body(body).await?, &query).await;
    }
    match parse_path(&path)? {
        Route::ResourceList { group, version } => Ok(json_response(StatusCode::OK, &discovery::resource_list(&group, &version))),
        Route::Resource(target) => resource(server, target, req).await,
    }
}

/// `subresources.kubevirt.io/v1`: discovery, the VM actions and the VMI actions.
async fn kubevirt_subresource(server: &Arc<Server>, rest: &str, req: Request<Body>) -> ApiResult<Response> {
    let segs: Vec<&str> = rest.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [] => Ok(json_response(StatusCode::OK, &discovery::kubevirt_subresource_list())),
        ["namespaces", ns, "virtualmachines", name, action] => {
            if req.method() != Method::PUT {
                return Err(ApiError::MethodNotAllowed);
            }
            let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
            let body = read_body(req.into_body()).await?;
            let opts = if body.is_empty() { json!({}) } else { object::decode_body(content_type.as_deref(), &body)? };
            crate::vm_actions::handle(&server.objects, ns, name, action, &opts).await?;
            Ok((StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        ["namespaces", ns, "virtualmachineinstances", name, action @ ..] if !action.is_empty() => {
            crate::vmi_actions::handle(&server.objects, server.nodes.as_ref(), ns, name, &action.join("/"), req).await
        }
        _ => Err(ApiError::NoRoute),
    }
}

fn list_object(kind: &kinds::Kind, items: Vec<Value>, meta: Value) -> Value {
    json!({
        "kind": format!("{}List", kind.kind),
        "apiVersion": kind.api_version(),
        "metadata": meta,
        "items": items,
    })
}

async fn resource(server: &Arc<Server>, t: Target, req: Request<Body>) -> ApiResult<Response> {
    let (parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query());
    let objects = &server.objects;
    let kind = t.kind;
    let table = wants_table(&parts.headers);
    if !table && parts.method == Method::GET {
        check_accept(&parts.headers)?;
    }
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let include_object = query.get("includeObject") != Some("None");
    if t.subresource.as_deref() == Some("scale") {
        return crate::scale::handle(objects, &t, &parts.method, content_type.as_deref(), read_body(body).await?, &query).await;
    }
    match (&parts.method, t.name.clone()) {
        (&Method::GET, Some(name)) => {
            let obj = objects.get(&t, &name).await?;
            if table {
                let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""));
                return Ok(json_response(StatusCode::OK, &table::table(kind.columns, &[obj], json!({"resourceVersion": rv}), include_object)));
            }
            Ok(json_response(StatusCode::OK, &obj))
        }
        (&Method::GET, None) => {
            let sel = Selectors::parse(kind, &query)?;
            if query.flag("watch") {
                let how = if table { Render::Table(kind.columns) } else { Render::Object };
                let stream = watch::watch(objects.clone(), t, query, sel, how)?;
                return Ok((
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-cache, private")],
                    Body::from_stream(stream),
                )
                    .into_response());
            }
            let list = objects.list(&t, &query, &sel).await?;
            let mut meta = json!({ "resourceVersion": list.revision.to_string() });
            if let Some(c) = &list.continue_token {
                meta["continue"] = json!(c);
            }
            if let Some(r) = list.remaining {
                meta["remainingItemCount"] = json!(r);
            }
            if table {
                return Ok(json_response(StatusCode::OK, &table::table(kind.columns, &list.items, meta, include_object)));
            }
            Ok(json_response(StatusCode::OK, &list_object(kind, list.items, meta)))
        }
        (&Method::POST, None) => {
            let obj = object::decode_body(content_type.as_deref(), &read_body(body).await?)?;
            let created = objects.create(&t, obj, &query).await?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (&Method::PUT, Some(name)) => {
            let obj = object::decode_body(content_type.as_deref(), &read_body(body).await?)?;
            let updated = objects.update(&t, &name, obj, &query).await?;
            Ok(json_response(StatusCode::OK, &updated))
        }
        (&Method::PATCH, Some(name)) => {
            let ct = content_type.unwrap_or_default();
            let body = read_body(body).await?;
            let patched = objects.patch(&t, &name, ct.split(';').next().unwrap_or("").trim(), &body, &query).await?;
            Ok(json_response(StatusCode::OK, &patched))
        }
        (&Method::DELETE, name) => {
            let body = read_body(body).await?;
            let opts_body = if body.is_empty() { None } else { Some(object::decode_body(content_type.as_deref(), &body)?) };
            let opts = DeleteOptions::parse(&query, opts_body.as_ref())?;
            if t.subresource.is_some() {
                return Err(ApiError::MethodNotAllowed);
            }
            match name {
                Some(name) => Ok(json_response(StatusCode::OK, &objects.delete(&t, &name, &opts).await?)),
                None => {
                    let deleted = objects.delete_collection(&t, &query, &opts).await?;
                    let rv = objects.store.current_revision().await?;
                    Ok(json_response(StatusCode::OK, &list_object(kind, deleted, json!({"resourceVersion": rv.to_string()}))))
                }
            }
        }
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Read the admin kubeconfig written into a data directory.
pub fn kubeconfig_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kubeconfig")
}
