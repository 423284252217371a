//! The serial console: guest output to a rotating log and to any number of attached clients,
//! client input to the guest.
//!
//! ```text
//!                       ┌──────────── Console task ─────────────┐
//!   QEMU serial chardev │  read ──▶ RotatingLog ──▶ serial.log, serial.log.1, ... serial.log.<keep-1>
//!   (serial.sock) ◀────▶│   │                                   │
//!                       │   └──▶ broadcast ──▶ client task ──▶ client 1 ┐
//!                       │                 └──▶ client task ──▶ client 2 ├ console.sock
//!                       │  writer task ◀── mpsc ◀── client input ◀──────┘
//!                       └───────────────────────────────────────┘
//! ```
//!
//! - The log keeps going whether or not anyone is attached, and never grows past
//!   `max_bytes * keep` bytes: when `serial.log` would pass `max_bytes`, the files shift up by one
//!   (`serial.log` becomes `serial.log.1`, ...) and the oldest is dropped.
//! - A client sees output from the moment it attaches. A client that reads too slowly to keep up
//!   with [`CLIENT_BUFFER`] chunks skips what it missed rather than slowing the guest down.
//! - What clients write goes to the guest, interleaved chunk by chunk if several type at once.
//!   A separate task writes to the chardev, so a guest that stops reading its UART never stalls
//!   the output side.
//! - When QEMU closes the chardev (it exited), clients are disconnected, `console.sock` is
//!   removed and [`Console::wait`] returns.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Output chunks kept for each client before it starts missing output.
pub const CLIENT_BUFFER: usize = 1024;
/// The log's file name in the VM folder.
pub const LOG_FILE: &str = "serial.log";
/// The clients' socket's file name in the VM folder.
pub const CONSOLE_SOCKET: &str = "console.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot connect to the serial chardev {path}: {source}; is QEMU running for this VM?")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen for console clients on {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the serial log {path}: {source}; check the disk holding the VM folder")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the serial chardev {path} failed: {source}")]
    Chardev {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the console task for {path} ended abnormally: {detail}")]
    Task { path: PathBuf, detail: String },
}

/// Size-based rotation of the serial log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// Largest size of one file.
    pub max_bytes: u64,
    /// Files kept, the live one included (`serial.log` .. `serial.log.<keep-1>`); at least 1.
    pub keep: usize,
}

impl Default for LogRotation {
    fn default() -> Self {
        LogRotation {
            max_bytes: 1 << 20,
            keep: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// QEMU's serial chardev socket (QEMU listens).
    pub chardev_socket: PathBuf,
    pub log_path: PathBuf,
    /// Where clients connect.
    pub listen_socket: PathBuf,
    pub rotation: LogRotation,
    /// How long to keep retrying while the chardev socket does not exist or refuses.
    pub connect_timeout: Duration,
}

impl ConsoleConfig {
    /// The usual layout: `serial.log` and `console.sock` in the VM folder.
    pub fn in_vm_dir(vm_dir: &Path, chardev_socket: PathBuf) -> ConsoleConfig {
        ConsoleConfig {
            chardev_socket,
            log_path: vm_dir.join(LOG_FILE),
            listen_socket: vm_dir.join(CONSOLE_SOCKET),
            rotation: LogRotation::default(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// The rotated file name for generation `n` (`serial.log.1`); 0 is the live file.
pub fn rotated_path(path: &Path, n: usize) -> PathBuf {
    if n == 0 {
        return path.to_owned();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// How to cut `len` new bytes given `size` bytes already in the live file: the lengths of the
/// pieces, each to be written after a rotation except possibly the first. Pure.
pub fn split_for_rotation(size: u64, max_bytes: u64, len: usize) -> Vec<usize> {
    let max = max_bytes.max(1);
    let mut pieces = Vec::new();
    let mut room = max.saturating_sub(size);
    let mut left = len as u64;
    if room == 0 {
        room = max; // the caller rotates first
    }
    while left > 0 {
        let piece = left.min(room);
        pieces.push(piece as usize);
        left -= piece;
        room = max;
    }
    pieces
}

/// A log file that rotates by size. Blocking I/O; writes are small and local.
#[derive(Debug)]
pub struct RotatingLog {
    path: PathBuf,
    rotation: LogRotation,
    file: File,
    size: u64,
}

impl RotatingLog {
    /// Opens (appending to) the live file.
    pub fn open(path: &Path, rotation: LogRotation) -> io::Result<RotatingLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_owned(),
            rotation,
            file,
            size,
        })
    }

    pub fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        let max = self.rotation.max_bytes.max(1);
        for piece in split_for_rotation(self.size, max, data.len()) {
            if self.size >= max {
                self.rotate()?;
            }
            self.file.write_all(&data[..piece])?;
            self.size += piece as u64;
            data = &data[piece..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.rotation.keep.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        // The oldest generation falls off; then each moves up one.
        match fs::remove_file(rotated_path(&self.path, keep - 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for n in (1..keep - 1).rev() {
            match fs::rename(rotated_path(&self.path, n), rotated_path(&self.path, n + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        fs::rename(&self.path, rotated_path(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// A running console. Dropping it stops the console.
#[derive(Debug)]
pub struct Console {
    task: Option<JoinHandle<Result<(), ConsoleError>>>,
    stop: Option<oneshot::Sender<()>>,
    path: PathBuf,
}

impl Console {
    /// Connects to the chardev (retrying up to `connect_timeout` while QEMU starts), opens the
    /// log and starts listening for clients.
    pub async fn start(cfg: ConsoleConfig) -> Result<Console, ConsoleError> {
        let chardev = connect_with_retry(&cfg.chardev_socket, cfg.connect_timeout).await?;
        let log =
            RotatingLog::open(&cfg.log_path, cfg.rotation).map_err(|source| ConsoleError::Log {
                path: cfg.log_path.clone(),
                source,
            })?;
        match fs::remove_file(&cfg.listen_socket) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ConsoleError::Bind {
                    path: cfg.listen_socket.clone(),
                    source,
                })
            }
        }
        let listener =
            UnixListener::bind(&cfg.listen_socket).map_err(|source| ConsoleError::Bind {
                path: cfg.listen_socket.clone(),
                source,
            })?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let path = cfg.chardev_socket.clone();
        let task = tokio::spawn(run(cfg, chardev, log, listener, stop_rx));
        Ok(Console {
            task: Some(task),
            stop: Some(stop_tx),
            path,
        })
    }

    /// Waits until QEMU closes the chardev (or the console fails).
    pub async fn wait(mut self) -> Result<(), ConsoleError> {
        self.join().await
    }

    /// Stops copying, disconnects clients and removes the clients' socket.
    pub async fn stop(mut self) -> Result<(), ConsoleError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join().await
    }

    async fn join(&mut self) -> Result<(), ConsoleError> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(e) => Err(ConsoleError::Task {
                path: self.path.clone(),
                detail: e.to_string(),
            }),
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn connect_with_retry(path: &Path, timeout: Duration) -> Result<UnixStream, ConsoleError> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path).await {
            Ok(stream) => return Ok(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(source) => {
                return Err(ConsoleError::Connect {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

/// Removes the clients' socket when the console ends, however it ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

async fn run(
    cfg: ConsoleConfig,
    chardev: UnixStream,
    mut log: RotatingLog,
    listener: UnixListener,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), ConsoleError> {
    let _socket_file = SocketFile(cfg.listen_socket.clone());
    let (mut chardev_read, chardev_write) = chardev.into_split();
    let (output, _) = broadcast::channel::<Bytes>(CLIENT_BUFFER);
    let (input_tx, input_rx) = mpsc::channel::<Bytes>(64);
    let writer = tokio::spawn(write_input(
        chardev_write,
        input_rx,
        cfg.chardev_socket.clone(),
    ));
    let mut clients: Vec<JoinHandle<()>> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];

    let result = loop {
        tokio::select! {
            read = chardev_read.read(&mut buf) => match read {
                Ok(0) => break Ok(()),
                // QEMU closing with console input still unread resets the connection.
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break Ok(()),
                Ok(n) => {
                    if let Err(source) = log.write(&buf[..n]) {
                        break Err(ConsoleError::Log { path: cfg.log_path.clone(), source });
                    }
                    // No client attached is fine.
                    let _ = output.send(Bytes::copy_from_slice(&buf[..n]));
                }
                Err(source) => break Err(ConsoleError::Chardev { path: cfg.chardev_socket.clone(), source }),
            },
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Subscribe here, before the client's task runs, so its output starts now.
                    let rx = output.subscribe();
                    clients.retain(|c| !c.is_finished());
                    clients.push(tokio::spawn(serve_client(stream, rx, input_tx.clone())));
                }
                Err(e) => tracing::warn!(console = %cfg.listen_socket.display(), error = %e, "accepting a console client failed"),
            },
            _ = &mut stop => break Ok(()),
        }
    };
    writer.abort();
    for client in clients {
        client.abort();
    }
    result
}

async fn write_input(
    mut chardev: tokio::net::unix::OwnedWriteHalf,
    mut input: mpsc::Receiver<Bytes>,
    path: PathBuf,
) {
    while let Some(chunk) = input.recv().await {
        if let Err(e) = chardev.write_all(&chunk).await {
            tracing::warn!(chardev = %path.display(), error = %e, "writing console input failed");
            return;
        }
    }
}

async fn serve_client(
    stream: UnixStream,
    mut output: broadcast::Receiver<Bytes>,
    input: mpsc::Sender<Bytes>,
) {
    let (mut read, mut write) = stream.into_split();
    let mut buf = vec![0u8; 4096];
    loop {
        tokio::select! {
            chunk = output.recv() => match chunk {
                Ok(chunk) => {
                    if write.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "slow console client skipped output");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            read = read.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if input.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn split_pieces() {
        assert_eq!(split_for_rotation(0, 10, 25), [10, 10, 5]);
        assert_eq!(split_for_rotation(7, 10, 5), [3, 2]);
        assert_eq!(split_for_rotation(10, 10, 4), [4]);
        assert_eq!(split_for_rotation(3, 10, 0), Vec::<usize>::new());
    }

    #[test]
    fn rotated_names() {
        assert_eq!(
            rotated_path(Path::new("/vm/serial.log"), 0),
            Path::new("/vm/serial.log")
        );
        assert_eq!(
            rotated_path(Path::new("/vm/serial.log"), 2),
            Path::new("/vm/serial.log.2")
        );
    }

    fn read(path: PathBuf) -> String {
        fs::read_to_string(path).unwrap_or_else(|_| "<missing>".into())
    }

    #[test]
    fn log_rotates_and_keeps_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut log = RotatingLog::open(
            &path,
            LogRotation {
                max_bytes: 10,
                keep: 3,
            },
        )
        .unwrap();
        log.write(b"0123456789abcdefghij").unwrap(); // two full files
        log.write(b"ABCDE").unwrap();
        log.write(b"FGHIJKLMNO").unwrap();
        assert_eq!(read(path.clone()), "KLMNO");
        assert_eq!(read(rotated_path(&path, 1)), "ABCDEFGHIJ");
        assert_eq!(read(rotated_path(&path, 2)), "abcdefghij");
        assert!(!rotated_path(&path, 3).exists(), "only 3 files are kept");
        // Reopening appends and keeps counting the live file's size.
        drop(log);
        let mut log = RotatingLog::open(
            &path,
            LogRotation {
                max_bytes: 10,
                keep: 3,
            },
        )
        .unwrap();
        log.write(b"pqrstu").unwrap();
        assert_eq!(read(path.clone()), "u");
        assert_eq!(read(rotated_path(&path, 1)), "KLMNOpqrst");
    }

    #[test]
    fn keep_one_truncates_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut log = RotatingLog::open(
            &path,
            LogRotation {
                max_bytes: 4,
                keep: 1,
            },
        )
        .unwrap();
        log.write(b"abcdefghij").unwrap();
        assert_eq!(read(path.clone()), "ij");
        assert!(!rotated_path(&path, 1).exists());
    }

    /// A fake QEMU serial chardev: a listening socket the console connects to.
    struct Fixture {
        _dir: tempfile::TempDir,
        cfg: ConsoleConfig,
        listener: UnixListener,
    }

    fn fixture(rotation: LogRotation) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let chardev = dir.path().join("serial.sock");
        let listener = UnixListener::bind(&chardev).unwrap();
        let mut cfg = ConsoleConfig::in_vm_dir(dir.path(), chardev);
        cfg.rotation = rotation;
        Fixture {
            _dir: dir,
            cfg,
            listener,
        }
    }

    async fn read_exactly(stream: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        buf
    }

    /// Attaches a client and proves the console has registered it (its input got through).
    async fn attach(cfg: &ConsoleConfig, guest: &mut UnixStream, tag: &[u8]) -> UnixStream {
        let mut client = UnixStream::connect(&cfg.listen_socket).await.unwrap();
        client.write_all(tag).await.unwrap();
        assert_eq!(read_exactly(guest, tag.len()).await, tag);
        client
    }

    async fn wait_for_log(path: &Path, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while read(path.to_owned()) != want {
            assert!(
                Instant::now() < deadline,
                "log is {:?}, want {want:?}",
                read(path.to_owned())
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn fans_out_to_clients_forwards_input_and_logs() {
        let f = fixture(LogRotation::default());
        let console = Console::start(f.cfg.clone()).await.unwrap();
        let (mut guest, _) = f.listener.accept().await.unwrap();

        // Output before anyone attaches goes to the log only.
        guest.write_all(b"early boot\n").await.unwrap();
        wait_for_log(&f.cfg.log_path, "early boot\n").await;

        let mut a = attach(&f.cfg, &mut guest, b"a-typed\n").await;
        guest.write_all(b"to a\n").await.unwrap();
        assert_eq!(read_exactly(&mut a, 5).await, b"to a\n");

        let mut b = attach(&f.cfg, &mut guest, b"b-typed\n").await;
        guest.write_all(b"to both\n").await.unwrap();
        assert_eq!(read_exactly(&mut a, 8).await, b"to both\n");
        assert_eq!(
            read_exactly(&mut b, 8).await,
            b"to both\n",
            "b starts at its attach time"
        );

        // A client leaves; the other and the log carry on.
        drop(a);
        guest.write_all(b"after a left\n").await.unwrap();
        assert_eq!(read_exactly(&mut b, 13).await, b"after a left\n");
        drop(b);
        guest.write_all(b"nobody\n").await.unwrap();
        wait_for_log(
            &f.cfg.log_path,
            "early boot\nto a\nto both\nafter a left\nnobody\n",
        )
        .await;

        // QEMU exits: the console ends and removes its socket.
        drop(guest);
        tokio::time::timeout(Duration::from_secs(10), console.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(!f.cfg.listen_socket.exists());
    }

    #[tokio::test]
    async fn rotation_while_running() {
        let f = fixture(LogRotation {
            max_bytes: 100,
            keep: 3,
        });
        let console = Console::start(f.cfg.clone()).await.unwrap();
        let (mut guest, _) = f.listener.accept().await.unwrap();
        let mut client = attach(&f.cfg, &mut guest, b"x").await;
        let data: Vec<u8> = (0..350u32).map(|i| b'a' + (i % 26) as u8).collect();
        guest.write_all(&data).await.unwrap();
        // The client gets everything; the log keeps the last 250 bytes in three files.
        assert_eq!(read_exactly(&mut client, 350).await, data);
        let text = String::from_utf8(data).unwrap();
        wait_for_log(&f.cfg.log_path, &text[300..]).await;
        assert_eq!(read(rotated_path(&f.cfg.log_path, 1)), text[200..300]);
        assert_eq!(read(rotated_path(&f.cfg.log_path, 2)), text[100..200]);
        assert!(!rotated_path(&f.cfg.log_path, 3).exists());
        console.stop().await.unwrap();
        assert!(!f.cfg.listen_socket.exists());
        // The client sees the end of the console.
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn missing_chardev_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ConsoleConfig::in_vm_dir(dir.path(), dir.path().join("nothing.sock"));
        cfg.connect_timeout = Duration::from_millis(100);
        let err = Console::start(cfg).await.unwrap_err();
        assert!(matches!(err, ConsoleError::Connect { .. }));
        assert!(err.to_string().contains("nothing.sock"), "{err}");
    }
}
