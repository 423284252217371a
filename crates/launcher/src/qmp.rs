//! An async QMP client: JSON lines over QEMU's monitor socket, driven by one task that owns it.
//!
//! ```text
//!   Qmp handles (cloneable) ──Request{command, args, reply}──▶ actor task ──{"execute":..,"id":7}──▶ QEMU
//!        ▲                                                      │  ▲
//!        └────────────── oneshot reply, matched by id ◀─────────┘  │ values, in socket order
//!   broadcast::Receiver<QmpEvent> ◀── events ───────────────── reader task ◀── replies and events
//! ```
//!
//! QEMU greets first (`{"QMP": {"version": ...}}`); [`Qmp::connect`] reads the greeting, then sends
//! `qmp_capabilities`, after which commands are accepted. Every command carries a fresh numeric
//! `id`; QEMU echoes it in the reply, so replies go back to the right caller even when events
//! (`STOP`, `SHUTDOWN`, ...) arrive between a command and its reply. Events go to every
//! subscriber through a broadcast channel of [`EVENT_BUFFER`] entries; a subscriber that falls
//! further behind than that gets `RecvError::Lagged` and misses the oldest ones.
//!
//! When QEMU closes the socket (it exited, or `quit`), every waiting command fails with
//! [`QmpError::Disconnected`], the event channel closes, and [`Qmp::closed`] resolves.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

/// Events kept for subscribers that have not read them yet.
pub const EVENT_BUFFER: usize = 256;
/// Longest QMP message accepted; a longer one ends the connection.
pub const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to the QMP socket {path}: {source}; is QEMU running for this VM?")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("QMP socket {path} did not accept a connection within {timeout:?} (last error: {source}); QEMU may have failed to start, see its log")]
    ConnectTimeout {
        path: PathBuf,
        timeout: Duration,
        #[source]
        source: io::Error,
    },
    #[error("QMP socket {path}: bad greeting from QEMU: {detail}")]
    Greeting { path: PathBuf, detail: String },
    #[error("QMP command {command} on {path} failed: {class}: {desc}")]
    Command {
        path: PathBuf,
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP connection {path} closed before {command} got a reply (QEMU exited or closed the monitor)")]
    Disconnected { path: PathBuf, command: String },
    #[error("QMP command {command} on {path}: unexpected reply {reply}")]
    UnexpectedReply {
        path: PathBuf,
        command: String,
        reply: String,
    },
}

/// An asynchronous event from QEMU.
#[derive(Debug, Clone, PartialEq)]
pub enum QmpEvent {
    /// QEMU is shutting down; `guest` is true when the guest asked for it (ACPI power-off,
    /// reboot with `-no-reboot`), false when the host did (`quit`, a signal).
    Shutdown {
        guest: bool,
        reason: String,
    },
    /// `system_powerdown` reached the guest's ACPI power button.
    Powerdown,
    Reset,
    Stop,
    Resume,
    GuestPanicked,
    /// Any other event: its name and `data` (`null` when absent).
    Other(String, Value),
}

impl QmpEvent {
    /// Decodes an event from its wire name and `data` member.
    pub fn from_wire(name: &str, data: Value) -> QmpEvent {
        match name {
            "SHUTDOWN" => QmpEvent::Shutdown {
                guest: data.get("guest").and_then(Value::as_bool).unwrap_or(false),
                reason: data
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            },
            "POWERDOWN" => QmpEvent::Powerdown,
            "RESET" => QmpEvent::Reset,
            "STOP" => QmpEvent::Stop,
            "RESUME" => QmpEvent::Resume,
            "GUEST_PANICKED" => QmpEvent::GuestPanicked,
            _ => QmpEvent::Other(name.to_owned(), data),
        }
    }
}

/// QEMU's version, from the greeting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct QemuVersion {
    pub major: u32,
    pub minor: u32,
    pub micro: u32,
    pub package: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QmpGreeting {
    pub version: QemuVersion,
    pub capabilities: Vec<String>,
}

/// The answer to `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RunStatus {
    pub running: bool,
    /// QEMU's run state: `running`, `paused`, `prelaunch`, `shutdown`, `guest-panicked`, ...
    pub status: String,
}

/// The answer to `query-kvm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct KvmInfo {
    pub enabled: bool,
    pub present: bool,
}

struct Request {
    command: String,
    arguments: Option<Value>,
    reply: oneshot::Sender<Result<Value, QmpError>>,
}

/// A handle to one QEMU's QMP connection. Clones share the connection.
#[derive(Debug)]
pub struct Qmp {
    requests: mpsc::Sender<Request>,
    events: broadcast::Receiver<QmpEvent>,
    greeting: Arc<QmpGreeting>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

impl Clone for Qmp {
    fn clone(&self) -> Self {
        Qmp {
            requests: self.requests.clone(),
            events: self.events.resubscribe(),
            greeting: self.greeting.clone(),
            path: self.path.clone(),
        }
    }
}

impl Qmp {
    /// Connects to QEMU's QMP socket and negotiates capabilities. The receiver returned sees
    /// every event QEMU sends after the greeting.
    pub async fn connect(path: &Path) -> Result<(Qmp, broadcast::Receiver<QmpEvent>), QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| QmpError::Connect {
                path: path.to_owned(),
                source,
            })?;
        Qmp::handshake(stream, path).await
    }

    /// Like [`Qmp::connect`], retrying while the socket does not exist or refuses connections
    /// (QEMU is still starting), for up to `timeout`.
    pub async fn connect_with_retry(
        path: &Path,
        timeout: Duration,
    ) -> Result<(Qmp, broadcast::Receiver<QmpEvent>), QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            match UnixStream::connect(path).await {
                Ok(stream) => return Qmp::handshake(stream, path).await,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(source) if Instant::now() >= deadline => {
                    return Err(QmpError::ConnectTimeout {
                        path: path.to_owned(),
                        timeout,
                        source,
                    })
                }
                Err(source) => {
                    return Err(QmpError::Connect {
                        path: path.to_owned(),
                        source,
                    })
                }
            }
        }
    }

    /// Speaks QMP over an already connected stream (tests, or a socket passed in).
    pub async fn handshake(
        stream: UnixStream,
        path: &Path,
    ) -> Result<(Qmp, broadcast::Receiver<QmpEvent>), QmpError> {
        let (read, write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let greeting = match read_message(&mut reader).await {
            Ok(Some(value)) => parse_greeting(&value).ok_or_else(|| QmpError::Greeting {
                path: path.to_owned(),
                detail: format!("not a QMP greeting: {value}"),
            })?,
            Ok(None) => {
                return Err(QmpError::Greeting {
                    path: path.to_owned(),
                    detail: "connection closed before the greeting".into(),
                })
            }
            Err(e) => {
                return Err(QmpError::Greeting {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })
            }
        };

        let (requests_tx, requests_rx) = mpsc::channel(64);
        let (events_tx, events_rx) = broadcast::channel(EVENT_BUFFER);
        let (incoming_tx, incoming_rx) = mpsc::channel(64);
        let path = Arc::new(path.to_owned());
        let reader_task = tokio::spawn(read_messages(reader, incoming_tx, path.clone()));
        tokio::spawn(
            Actor {
                path: path.clone(),
                writer: write,
                events: events_tx,
                pending: HashMap::new(),
                next_id: 0,
            }
            .run(requests_rx, incoming_rx, reader_task),
        );
        let qmp = Qmp {
            requests: requests_tx,
            events: events_rx.resubscribe(),
            greeting: Arc::new(greeting),
            path,
        };
        qmp.execute("qmp_capabilities", None).await?;
        Ok((qmp, events_rx))
    }

    /// A new event receiver; it sees events sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.resubscribe()
    }

    pub fn greeting(&self) -> &QmpGreeting {
        &self.greeting
    }

    pub fn socket_path(&self) -> &Path {
        &self.path
    }

    /// Resolves when the connection has ended (QEMU closed it, or it failed).
    pub async fn closed(&self) {
        self.requests.closed().await;
    }

    /// Runs `command` with optional `arguments` (a JSON object) and returns its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let disconnected = || QmpError::Disconnected {
            path: (*self.path).clone(),
            command: command.to_owned(),
        };
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request {
                command: command.to_owned(),
                arguments,
                reply,
            })
            .await
            .map_err(|_| disconnected())?;
        rx.await.map_err(|_| disconnected())?
    }

    async fn execute_typed<T: for<'de> Deserialize<'de>>(
        &self,
        command: &str,
    ) -> Result<T, QmpError> {
        let value = self.execute(command, None).await?;
        serde_json::from_value(value.clone()).map_err(|_| QmpError::UnexpectedReply {
            path: (*self.path).clone(),
            command: command.to_owned(),
            reply: value.to_string(),
        })
    }

    async fn execute_unit(&self, command: &str) -> Result<(), QmpError> {
        self.execute(command, None).await.map(drop)
    }

    pub async fn query_status(&self) -> Result<RunStatus, QmpError> {
        self.execute_typed("query-status").await
    }

    /// Pauses the vCPUs (a STOP event follows).
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.execute_unit("stop").await
    }

    /// Resumes the vCPUs (a RESUME event follows).
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.execute_unit("cont").await
    }

    /// Presses the ACPI power button; returns at once, and the guest may ignore it.
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute_unit("system_powerdown").await
    }

    pub async fn system_reset(&self) -> Result<(), QmpError> {
        self.execute_unit("system_reset").await
    }

    /// Ends QEMU at once. QEMU may close the socket before its reply arrives; that counts as done.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute_unit("quit").await {
            Err(QmpError::Disconnected { .. }) => Ok(()),
            other => other,
        }
    }

    pub async fn query_kvm(&self) -> Result<KvmInfo, QmpError> {
        self.execute_typed("query-kvm").await
    }
}

fn parse_greeting(value: &Value) -> Option<QmpGreeting> {
    let qmp = value.get("QMP")?;
    let version = qmp.get("version")?;
    let mut qemu: QemuVersion = serde_json::from_value(json!({
        "major": version.pointer("/qemu/major")?,
        "minor": version.pointer("/qemu/minor")?,
        "micro": version.pointer("/qemu/micro")?,
        "package": version.get("package").cloned().unwrap_or(json!("")),
    }))
    .ok()?;
    qemu.package = qemu.package.trim().to_owned();
    let capabilities = qmp
        .get("capabilities")?
        .as_array()?
        .iter()
        .filter_map(|c| c.as_str().map(str::to_owned))
        .collect();
    Some(QmpGreeting {
        version: qemu,
        capabilities,
    })
}

/// Reads one JSON line; `Ok(None)` at end of stream.
async fn read_message(reader: &mut BufReader<OwnedReadHalf>) -> io::Result<Option<Value>> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut *reader)
            .take(MAX_MESSAGE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        if buf.len() > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("QMP message longer than {MAX_MESSAGE} bytes"),
            ));
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        return serde_json::from_slice(&buf).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("QMP message is not JSON: {e}"),
            )
        });
    }
}

async fn read_messages(
    mut reader: BufReader<OwnedReadHalf>,
    tx: mpsc::Sender<Value>,
    path: Arc<PathBuf>,
) {
    loop {
        match read_message(&mut reader).await {
            Ok(Some(value)) => {
                if tx.send(value).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(qmp = %path.display(), error = %e, "dropping the QMP connection");
                return;
            }
        }
    }
}

struct Pending {
    command: String,
    reply: oneshot::Sender<Result<Value, QmpError>>,
}

struct Actor {
    path: Arc<PathBuf>,
    writer: OwnedWriteHalf,
    events: broadcast::Sender<QmpEvent>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
}

impl Actor {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut incoming: mpsc::Receiver<Value>,
        reader_task: tokio::task::JoinHandle<()>,
    ) {
        loop {
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => {
                        if !self.send(request).await {
                            break;
                        }
                    }
                    // Every handle is gone: nobody can send or wait any more.
                    None => break,
                },
                message = incoming.recv() => match message {
                    Some(message) => self.dispatch(message),
                    None => break,
                },
            }
        }
        reader_task.abort();
        requests.close();
        while let Ok(request) = requests.try_recv() {
            let _ = request.reply.send(Err(self.disconnected(request.command)));
        }
        for (_, pending) in std::mem::take(&mut self.pending) {
            let _ = pending.reply.send(Err(self.disconnected(pending.command)));
        }
        tracing::debug!(qmp = %self.path.display(), "QMP connection ended");
    }

    fn disconnected(&self, command: String) -> QmpError {
        QmpError::Disconnected {
            path: (*self.path).clone(),
            command,
        }
    }

    /// Writes one command; false if the socket is broken.
    async fn send(&mut self, request: Request) -> bool {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "execute": request.command, "id": id });
        if let Some(arguments) = request.arguments {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string();
        line.push('\n');
        match self.writer.write_all(line.as_bytes()).await {
            Ok(()) => {
                self.pending.insert(
                    id,
                    Pending {
                        command: request.command,
                        reply: request.reply,
                    },
                );
                true
            }
            Err(e) => {
                tracing::warn!(qmp = %self.path.display(), error = %e, "cannot write to QMP");
                let _ = request.reply.send(Err(self.disconnected(request.command)));
                false
            }
        }
    }

    fn dispatch(&mut self, message: Value) {
        if let Some(name) = message.get("event").and_then(Value::as_str) {
            let data = message.get("data").cloned().unwrap_or(Value::Null);
            let event = QmpEvent::from_wire(name, data);
            tracing::debug!(qmp = %self.path.display(), ?event, "QMP event");
            // No subscriber is not an error.
            let _ = self.events.send(event);
            return;
        }
        let Some(id) = message.get("id").and_then(Value::as_u64) else {
            tracing::warn!(qmp = %self.path.display(), %message, "QMP message with no id and no event; ignored");
            return;
        };
        let Some(pending) = self.pending.remove(&id) else {
            tracing::warn!(qmp = %self.path.display(), id, "QMP reply for an unknown id; ignored");
            return;
        };
        let result = if let Some(value) = message.get("return") {
            Ok(value.clone())
        } else if let Some(error) = message.get("error") {
            Err(QmpError::Command {
                path: (*self.path).clone(),
                command: pending.command,
                class: error
                    .get("class")
                    .and_then(Value::as_str)
                    .unwrap_or("Unknown")
                    .to_owned(),
                desc: error
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
        } else {
            Err(QmpError::UnexpectedReply {
                path: (*self.path).clone(),
                command: pending.command,
                reply: message.to_string(),
            })
        };
        // The caller may have given up waiting; that is fine.
        let _ = pending.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7"}, "capabilities": ["oob"]}}"#;

    /// A fake QEMU: reads a command line, returns it parsed.
    struct FakeQemu {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    }

    impl FakeQemu {
        async fn accept(listener: &UnixListener) -> FakeQemu {
            let (stream, _) = listener.accept().await.unwrap();
            let (r, w) = stream.into_split();
            let mut fake = FakeQemu {
                reader: BufReader::new(r),
                writer: w,
            };
            fake.send(GREETING).await;
            let caps = fake.recv().await;
            assert_eq!(caps["execute"], "qmp_capabilities");
            let id = caps["id"].clone();
            fake.send(&json!({"return": {}, "id": id}).to_string())
                .await;
            fake
        }

        async fn recv(&mut self) -> Value {
            let mut line = String::new();
            self.reader.read_line(&mut line).await.unwrap();
            serde_json::from_str(&line).unwrap()
        }

        async fn send(&mut self, line: &str) {
            self.writer
                .write_all(format!("{line}\r\n").as_bytes())
                .await
                .unwrap();
        }
    }

    fn listener() -> (tempfile::TempDir, PathBuf, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        (dir, path, listener)
    }

    #[tokio::test]
    async fn replies_match_ids_across_interleaved_events() {
        let (_dir, path, listener) = listener();
        let server = tokio::spawn(async move {
            let mut qemu = FakeQemu::accept(&listener).await;
            let a = qemu.recv().await;
            let b = qemu.recv().await;
            assert_eq!(a["execute"], "query-status");
            assert_eq!(b["execute"], "query-kvm");
            assert_ne!(a["id"], b["id"]);
            // Out of order, with events in between.
            qemu.send(r#"{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}"#)
                .await;
            qemu.send(
                &json!({"return": {"enabled": false, "present": true}, "id": b["id"]}).to_string(),
            )
            .await;
            qemu.send(r#"{"event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}, "timestamp": {"seconds": 1, "microseconds": 3}}"#).await;
            qemu.send(&json!({"return": {"running": false, "singlestep": false, "status": "paused"}, "id": a["id"]}).to_string()).await;
            let c = qemu.recv().await;
            assert_eq!(c["execute"], "human-monitor-command");
            assert_eq!(c["arguments"]["command-line"], "info version");
            qemu.send(&json!({"error": {"class": "CommandNotFound", "desc": "no such thing"}, "id": c["id"]}).to_string()).await;
            qemu
        });

        let (qmp, mut events) = Qmp::connect(&path).await.unwrap();
        assert_eq!(qmp.greeting().version.major, 7);
        assert_eq!(qmp.greeting().version.package, "Debian 1:7.2+dfsg-7");
        let (status, kvm) = tokio::join!(qmp.query_status(), async {
            // Make sure query-status is written first.
            tokio::task::yield_now().await;
            qmp.query_kvm().await
        });
        assert_eq!(
            status.unwrap(),
            RunStatus {
                running: false,
                status: "paused".into()
            }
        );
        assert_eq!(
            kvm.unwrap(),
            KvmInfo {
                enabled: false,
                present: true
            }
        );
        assert_eq!(events.recv().await.unwrap(), QmpEvent::Stop);
        assert_eq!(
            events.recv().await.unwrap(),
            QmpEvent::Shutdown {
                guest: true,
                reason: "guest-shutdown".into()
            }
        );
        let err = qmp
            .execute(
                "human-monitor-command",
                Some(json!({"command-line": "info version"})),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, QmpError::Command { class, desc, .. } if class == "CommandNotFound" && desc == "no such thing")
        );
        assert!(err.to_string().contains("human-monitor-command"));
        drop(server.await.unwrap());
    }

    #[tokio::test]
    async fn disconnect_fails_waiting_commands_and_closes_events() {
        let (_dir, path, listener) = listener();
        let server = tokio::spawn(async move {
            let mut qemu = FakeQemu::accept(&listener).await;
            let quit = qemu.recv().await;
            assert_eq!(quit["execute"], "stop");
            // Close without replying.
        });
        let (qmp, mut events) = Qmp::connect(&path).await.unwrap();
        let err = qmp.stop().await.unwrap_err();
        assert!(
            matches!(err, QmpError::Disconnected { ref command, .. } if command == "stop"),
            "{err}"
        );
        server.await.unwrap();
        assert!(matches!(
            events.recv().await,
            Err(broadcast::error::RecvError::Closed)
        ));
        tokio::time::timeout(Duration::from_secs(5), qmp.closed())
            .await
            .unwrap();
        assert!(matches!(
            qmp.cont().await,
            Err(QmpError::Disconnected { .. })
        ));
    }

    #[tokio::test]
    async fn quit_tolerates_the_socket_closing_first() {
        let (_dir, path, listener) = listener();
        let server = tokio::spawn(async move {
            let mut qemu = FakeQemu::accept(&listener).await;
            assert_eq!(qemu.recv().await["execute"], "quit");
        });
        let (qmp, _events) = Qmp::connect(&path).await.unwrap();
        qmp.quit().await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn bad_greeting_is_refused() {
        let (_dir, path, listener) = listener();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.write_all(b"{\"hello\": 1}\n").await.unwrap();
        });
        let err = Qmp::connect(&path).await.unwrap_err();
        assert!(matches!(err, QmpError::Greeting { .. }), "{err}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn connect_with_retry_waits_for_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("late.sock");
        let p = path.clone();
        let server = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let listener = UnixListener::bind(&p).unwrap();
            FakeQemu::accept(&listener).await
        });
        let (qmp, _) = Qmp::connect_with_retry(&path, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(qmp.greeting().capabilities, ["oob"]);
        drop(server.await.unwrap());

        let missing = dir.path().join("never.sock");
        let err = Qmp::connect_with_retry(&missing, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::ConnectTimeout { .. }), "{err}");
    }

    #[test]
    fn events_decode() {
        assert_eq!(
            QmpEvent::from_wire(
                "SHUTDOWN",
                json!({"guest": false, "reason": "host-qmp-quit"})
            ),
            QmpEvent::Shutdown {
                guest: false,
                reason: "host-qmp-quit".into()
            }
        );
        assert_eq!(
            QmpEvent::from_wire("RESET", json!({"guest": true})),
            QmpEvent::Reset
        );
        assert_eq!(
            QmpEvent::from_wire("GUEST_PANICKED", json!({})),
            QmpEvent::GuestPanicked
        );
        assert_eq!(
            QmpEvent::from_wire("BLOCK_JOB_READY", json!({"device": "d"})),
            QmpEvent::Other("BLOCK_JOB_READY".into(), json!({"device": "d"}))
        );
    }
}
