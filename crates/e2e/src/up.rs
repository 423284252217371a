//! `ferrovirt up` as a child process, and a websocket client for KubeVirt's streaming subresources
//! (serial console, VNC) as `virtctl` speaks them.
//!
//! Dropping an [`UpProcess`] sends SIGINT (ferrovirt up stops its VMs), waits, sends SIGKILL, and
//! then kills by PID every launcher and QEMU still recorded in its pod folders.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::ferrovirt_binary;

/// A running `ferrovirt up` with one node.
pub struct UpProcess {
    child: Child,
    data_dir: PathBuf,
    node: String,
    kubeconfig: PathBuf,
}

impl UpProcess {
    /// Start `ferrovirt up --data-dir DIR --node-name NODE` on a free loopback port and wait for
    /// its kubeconfig line. Its log goes to `DIR/up.log`.
    pub fn start(data_dir: &Path, node: &str) -> anyhow::Result<UpProcess> {
        let log = std::fs::File::create(data_dir.join("up.log"))?;
        let mut child = Command::new(ferrovirt_binary()?)
            .args(["up", "--listen", "127.0.0.1:0", "--node-name", node, "--data-dir"])
            .arg(data_dir)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start ferrovirt up")?;
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut up = UpProcess { child, data_dir: data_dir.to_path_buf(), node: node.to_string(), kubeconfig: PathBuf::new() };
        let mut line = String::new();
        while out.read_line(&mut line).unwrap_or(0) > 0 {
            if let Some(p) = line.trim().strip_prefix("kubeconfig: ") {
                up.kubeconfig = PathBuf::from(p);
                break;
            }
            line.clear();
        }
        // Keep reading its stdout so that it never writes into a closed pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        if up.kubeconfig.as_os_str().is_empty() {
            bail!("ferrovirt up printed no kubeconfig line; its log:\n{}", up.log_tail(40));
        }
        Ok(up)
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The node's launcher folders: `DIR/nodes/NODE/pods`.
    pub fn pods_dir(&self) -> PathBuf {
        self.data_dir.join("nodes").join(&self.node).join("pods")
    }

    pub async fn kube_config(&self) -> anyhow::Result<kube::Config> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
    }

    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.kube_config().await?)?)
    }

    /// Poll `f` every 250 ms until it gives `Some`, for at most `secs`; on timeout panic naming
    /// `what` and quoting the end of its log.
    pub async fn eventually<T, F, Fut>(&self, secs: u64, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {secs}s waiting for {what}\n--- ferrovirt up log ---\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.data_dir.join("up.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for UpProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        kill_pod_processes(&self.pods_dir());
    }
}

/// Kill (SIGKILL, by PID) every process whose command line names one of the pod folders under
/// `pods_dir`: launchers and QEMUs a test must not leave behind.
pub fn kill_pod_processes(pods_dir: &Path) {
    let dirs: Vec<String> = std::fs::read_dir(pods_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.path().to_str().map(str::to_string))
        .collect();
    if dirs.is_empty() {
        return;
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if dirs.iter().any(|d| cmdline.contains(d.as_str())) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// A websocket on one of KubeVirt's streaming subresources, speaking `plain.kubevirt.io`.
pub struct ByteStream {
    ws: WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>,
    /// What came in and was not read yet.
    pending: Vec<u8>,
}

impl ByteStream {
    /// Open `/apis/subresources.kubevirt.io/v1/namespaces/NS/virtualmachineinstances/NAME/<what>`
    /// with the kubeconfig's server, CA and bearer token.
    pub async fn open(config: &kube::Config, ns: &str, name: &str, what: &str) -> anyhow::Result<ByteStream> {
        let url = config.cluster_url.clone();
        let host = url.host().ok_or_else(|| anyhow!("the kubeconfig's server {url} has no host"))?.to_string();
        let port = url.port_u16().unwrap_or(443);
        let mut roots = rustls::RootCertStore::empty();
        for der in config.root_cert.clone().unwrap_or_default() {
            roots.add(rustls::pki_types::CertificateDer::from(der))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        let server_name = rustls::pki_types::ServerName::try_from(host.clone())?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(server_name, tcp).await?;
        let path = format!("wss://{host}:{port}/apis/subresources.kubevirt.io/v1/namespaces/{ns}/virtualmachineinstances/{name}/{what}");
        let mut req = path.into_client_request()?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", "plain.kubevirt.io".parse()?);
        if let Some(token) = kubeconfig_token(config) {
            req.headers_mut().insert("Authorization", format!("Bearer {token}").parse()?);
        }
        let (ws, resp) = tokio_tungstenite::client_async(req, stream).await.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                let body = r.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                anyhow!("the server refused the websocket: {} {body}", r.status())
            }
            other => anyhow!(other),
        })?;
        let proto = resp.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if proto != "plain.kubevirt.io" {
            bail!("the server chose subprotocol {proto:?}, not plain.kubevirt.io");
        }
        Ok(ByteStream { ws, pending: Vec::new() })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        Ok(self.ws.send(Message::Binary(bytes.to_vec().into())).await?)
    }

    /// Read until the bytes received contain `needle` (returns everything read up to and including
    /// it), or fail after `timeout` showing what came.
    pub async fn read_until(&mut self, needle: &[u8], timeout: Duration) -> anyhow::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(at) = self.pending.windows(needle.len()).position(|w| w == needle) {
                let rest = self.pending.split_off(at + needle.len());
                return Ok(std::mem::replace(&mut self.pending, rest));
            }
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => bail!(
                    "no {:?} within {timeout:?}; received: {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&self.pending)
                ),
                Ok(None) | Ok(Some(Ok(Message::Close(_)))) => {
                    bail!("the stream closed; received: {:?}", String::from_utf8_lossy(&self.pending))
                }
                Ok(Some(Err(e))) => bail!("the stream failed: {e}"),
                Ok(Some(Ok(Message::Binary(b)))) => self.pending.extend_from_slice(&b),
                Ok(Some(Ok(_))) => {}
            }
        }
    }

    /// Read whatever arrives within `window`.
    pub async fn read_for(&mut self, window: Duration) -> anyhow::Result<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + window;
        while let Ok(next) = tokio::time::timeout_at(deadline, self.ws.next()).await {
            match next {
                Some(Ok(Message::Binary(b))) => self.pending.extend_from_slice(&b),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(e)) => bail!("the stream failed: {e}"),
                Some(Ok(_)) => {}
            }
        }
        Ok(std::mem::take(&mut self.pending))
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

fn kubeconfig_token(config: &kube::Config) -> Option<String> {
    use secrecy::ExposeSecret;
    config.auth_info.token.as_ref().map(|t| t.expose_secret().to_string())
}
