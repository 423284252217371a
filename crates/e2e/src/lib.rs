//! The harness of ferrovirt's end-to-end tests: real processes, started on 127.0.0.1 and stopped by
//! their PID, never by name.
//!
//! * [`ferrovirt_binary`]: the `ferrovirt` binary of this workspace, built on first use.
//! * [`ApiServerProcess`]: one `ferrovirt apiserver` process on a free loopback port.
//! * [`Kubectl`]: a kubectl binary pointed at a kubeconfig, run as a user types it;
//!   [`BackgroundKubectl`] for the long-running ones (`kubectl get -w`).
//! * [`kubectl_1_20`], [`kubectl_on_path`]: the kubectl binaries the scenarios run with.
//! * [`component::Component`]: one `ferrovirt <component>` process.
//! * [`netns::NetNs`]: a network namespace a test cuts a node off with (loopback relays inside).
//! * [`up::UpProcess`]: `ferrovirt up` with one node; [`up::ByteStream`]: the console and VNC websockets.
//!
//! An API server process goes through these states; dropping the handle kills it (SIGKILL by PID)
//! and reaps it, whatever state it is in:
//!
//! ```text
//!   start() ──ready line on stdout──▶ serving ──kill9()──▶ dead
//!                                        ▲                   │
//!                                        └─────restart()─────┘
//! ```
//!
//! # How the `ferrovirt` binary is found
//!
//! A binary-only package cannot be a dependency, and `CARGO_BIN_EXE_<name>` exists only for the
//! package's own binaries. So the first call of [`ferrovirt_binary`] in a test process runs
//! `cargo build -p ferrovirt --bin ferrovirt` for the workspace, into the target directory and
//! with the profile of the running test binary (found from its own path,
//! `<target>/<profile>/deps/<test>`), and returns `<target>/<profile>/ferrovirt`. The build is
//! a no-op when the binary is up to date, and guarantees that the tests never run a stale server.
//! `FERROVIRT_BIN=/path/to/ferrovirt` skips the build and uses that binary instead.
//!
//! # Running
//!
//! ```text
//! scripts/install-test-deps.sh        # once: etcd, protoc, qemu-utils, kubectl 1.20 in .tools/
//! cargo test -p ferrovirt-e2e         # everything, about half a minute once built
//! cargo test -p ferrovirt-e2e --test kubectl vm_watch::kubectl_1_20
//! cargo test -p ferrovirt-e2e --test crash etcd_store::
//! ```

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};

pub mod component;
pub mod netns;
pub mod up;

/// How long an API server may take from spawn to its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long one kubectl command may take before it is killed.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// The start of the line `ferrovirt apiserver` prints on stdout once it serves.
const READY_PREFIX: &str = "ferrovirt apiserver ready at ";

/// The workspace root (the folder with the workspace `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.join("../.."))
}

/// A file of `crates/e2e/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// The `ferrovirt` binary, built once per test process (see the crate docs).
pub fn ferrovirt_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| build_workspace_binary("ferrovirt", "FERROVIRT_BIN").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Build the binary `name` of the package of the same name for the running test's target directory
/// and profile, unless `override_var` names one.
fn build_workspace_binary(name: &str, override_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os(override_var) {
        let bin = PathBuf::from(bin);
        ensure!(
            is_executable(&bin),
            "{override_var}={} is not an executable file",
            bin.display()
        );
        return Ok(bin);
    }
    // Test binaries live in <target>/<profile>/deps, other binaries (the benchmark) in <target>/<profile>.
    let exe = std::env::current_exe().context("cannot find the running binary")?;
    let folder = exe.parent().context("the running binary has no parent folder")?;
    let profile_dir = if folder.file_name() == Some(OsStr::new("deps")) {
        folder.parent().context("deps folder has no parent")?
    } else {
        folder
    };
    let target_dir = profile_dir
        .parent()
        .context("profile folder has no parent")?;
    let profile = match profile_dir.file_name().and_then(OsStr::to_str) {
        Some("debug") => "dev",
        Some(other) => other,
        None => bail!(
            "cannot tell the cargo profile from {}",
            profile_dir.display()
        ),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    // `cargo test` runs tests with the test package's CARGO_PKG_*, CARGO_MANIFEST_DIR, ... set.
    // Build scripts such as ring's rerun when those change, so passing them on would rebuild
    // half the dependency tree here and again at the next ordinary cargo command.
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if is_package_env(name) {
            command.env_remove(name);
        }
    }
    let output = command
        .args([
            "build",
            "--quiet",
            "-p",
            name,
            "--bin",
            name,
            "--profile",
            profile,
        ])
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", Path::new(&cargo).display()))?;
    ensure!(
        output.status.success(),
        "`cargo build -p {name} --bin {name} --profile {profile}` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let bin = profile_dir.join(name);
    ensure!(
        is_executable(&bin),
        "cargo built {name}, but {} is missing",
        bin.display()
    );
    Ok(bin)
}

/// Whether `name` is an environment variable cargo sets for one package's build or run (as
/// opposed to configuration such as `CARGO_HOME` or `CARGO_TARGET_DIR`).
fn is_package_env(name: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_CRATE_",
        "CARGO_BIN_",
        "CARGO_CFG_",
    ];
    const NAMES: &[&str] = &[
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p)) || NAMES.contains(&name)
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A free TCP port on 127.0.0.1 (free when this returns; another process may take it later).
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One `ferrovirt apiserver` process serving HTTPS on 127.0.0.1.
///
/// Its stderr (the server's log) goes to `<data dir>/apiserver.log`, appended across restarts;
/// start-up failures quote the end of it, and so does a handle dropped while a test panics.
/// Dropping the handle kills the process by PID.
pub struct ApiServerProcess {
    bin: PathBuf,
    data_dir: PathBuf,
    etcd: Vec<String>,
    extra_args: Vec<String>,
    port: u16,
    url: String,
    kubeconfig: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
}

impl ApiServerProcess {
    /// Start an API server on `data_dir` (created if missing), on the embedded store or, with
    /// `etcd` endpoints, on etcd, and wait until it prints its ready line.
    pub fn start(data_dir: impl Into<PathBuf>, etcd: Option<Vec<String>>) -> anyhow::Result<Self> {
        Self::start_with_args(data_dir, etcd, &[])
    }

    /// [`Self::start`] with extra command-line arguments for `ferrovirt apiserver`.
    pub fn start_with_args(
        data_dir: impl Into<PathBuf>,
        etcd: Option<Vec<String>>,
        extra_args: &[&str],
    ) -> anyhow::Result<Self> {
        let bin = ferrovirt_binary()?;
        let data_dir = data_dir.into();
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let mut last_error = None;
        // The port is free when chosen but may be taken before the server binds it: try another.
        for _ in 0..3 {
            let port = free_port().context("cannot find a free port on 127.0.0.1")?;
            let mut server = ApiServerProcess {
                bin: bin.clone(),
                data_dir: data_dir.clone(),
                etcd: etcd.clone().unwrap_or_default(),
                extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
                port,
                url: format!("https://127.0.0.1:{port}"),
                kubeconfig: data_dir.join("kubeconfig"),
                log_path: data_dir.join("apiserver.log"),
                child: None,
            };
            match server.spawn_and_wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) if is_address_in_use(&e) => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("the API server did not start")))
    }

    /// `https://127.0.0.1:<port>`, as the server announced it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port the server listens on (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin kubeconfig the server wrote.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The server's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file the server's stderr goes to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Kill the process with SIGKILL (by PID) and reap it: a crash, nothing is flushed or closed.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill the process if it runs, then start it again on the same data directory, store and
    /// port, and wait until it is ready.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        // The port was ours a moment ago; if the kernel still holds it, wait a little.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn_and_wait_ready() {
                Err(e) if is_address_in_use(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                result => return result,
            }
        }
    }

    /// A kube-rs configuration from the server's kubeconfig.
    pub async fn kube_config(&self) -> anyhow::Result<kube::Config> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("cannot read {}", self.kubeconfig.display()))?;
        kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .with_context(|| format!("cannot use {}", self.kubeconfig.display()))
    }

    /// A kube-rs client from the server's kubeconfig.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.kube_config().await?)?)
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(
            &std::fs::read_to_string(&self.log_path).unwrap_or_default(),
            lines,
        )
    }

    fn spawn_and_wait_ready(&mut self) -> anyhow::Result<()> {
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("cannot open {}", self.log_path.display()))?;
        let log_start = log.seek(SeekFrom::End(0))?;
        writeln!(
            log,
            "==== e2e harness: starting the API server on port {} ====",
            self.port
        )?;

        let mut command = Command::new(&self.bin);
        command
            .arg("apiserver")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port));
        if !self.etcd.is_empty() {
            command.arg("--etcd").arg(self.etcd.join(","));
        }
        command
            .args(&self.extra_args)
            // The log goes to a file: no terminal colours in it.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .context("the server's stdout is not piped")?;
        self.child = Some(child);
        let lines = read_lines(stdout);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some((url, kubeconfig)) = parse_ready_line(&line) {
                        self.url = url;
                        self.kubeconfig = kubeconfig;
                        return Ok(());
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // stdout closed: the process is exiting; try_wait below reports it.
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
            }
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => bail!("the API server process is gone"),
            };
            if let Some(status) = exited {
                self.child = None;
                bail!(
                    "the API server exited with {status} before it was ready; its log:\n{}",
                    self.log_since(log_start)
                );
            }
            if Instant::now() > deadline {
                self.kill9();
                bail!(
                    "the API server printed no ready line within {READY_TIMEOUT:?}; its log:\n{}",
                    self.log_since(log_start)
                );
            }
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            if file.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = file.read_to_string(&mut text);
            }
        }
        tail(&text, 40)
    }
}

impl Drop for ApiServerProcess {
    fn drop(&mut self) {
        self.kill9();
        // A failing test drops its server while unwinding: show what the server said.
        if std::thread::panicking() {
            eprintln!(
                "--- the API server's log ({}), last lines ---\n{}",
                self.log_path.display(),
                self.log_tail(40)
            );
        }
    }
}

fn is_address_in_use(error: &anyhow::Error) -> bool {
    let text = format!("{error:#}").to_lowercase();
    text.contains("address already in use") || text.contains("addrinuse")
}

/// `(url, kubeconfig)` from `ferrovirt apiserver ready at URL (kubeconfig: PATH)`.
fn parse_ready_line(line: &str) -> Option<(String, PathBuf)> {
    let rest = line.trim().strip_prefix(READY_PREFIX)?;
    let (url, rest) = rest.split_once(" (kubeconfig: ")?;
    let kubeconfig = rest.strip_suffix(')')?;
    Some((url.to_owned(), PathBuf::from(kubeconfig)))
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Reads `source` line by line on a thread, to the end, sending each line. The thread keeps
/// reading after the receiver is gone, so the writer never blocks on a full pipe.
fn read_lines(source: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    rx
}

/// Reads `source` to the end on a thread.
fn read_all(mut source: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = source.read_to_end(&mut buf);
        buf
    })
}

/// Where Debian's kubectl 1.20 is unpacked by `scripts/fetch-kubectl-1.20.sh`.
pub fn kubectl_1_20_path() -> PathBuf {
    repo_root().join(".tools/kubectl-1.20/usr/bin/kubectl")
}

/// kubectl 1.20, or an error that says how to get it.
pub fn kubectl_1_20() -> anyhow::Result<PathBuf> {
    let path = kubectl_1_20_path();
    ensure!(
        is_executable(&path),
        "kubectl 1.20 is missing at {}: run scripts/fetch-kubectl-1.20.sh (or scripts/install-test-deps.sh)",
        path.display()
    );
    Ok(path)
}

/// The first executable `kubectl` on `PATH`, if any.
pub fn kubectl_on_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("kubectl"))
        .find(|candidate| is_executable(candidate))
}

/// A kubectl binary pointed at one kubeconfig, with a discovery cache of its own (so runs against
/// different servers, or with different kubectl versions, never share cached discovery).
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache_dir: tempfile::TempDir,
}

impl Kubectl {
    /// A kubectl `bin` using `kubeconfig`.
    pub fn new(bin: impl Into<PathBuf>, kubeconfig: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let cache_dir = tempfile::Builder::new()
            .prefix("ferrovirt-kubectl-cache-")
            .tempdir()
            .context("cannot create a kubectl cache folder")?;
        Ok(Kubectl {
            bin: bin.into(),
            kubeconfig: kubeconfig.into(),
            cache_dir,
        })
    }

    /// The kubectl binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `kubectl --kubeconfig K --cache-dir C ARGS...`, not started. `KUBECONFIG` is removed from
    /// its environment so the user's configuration never leaks in.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache_dir.path())
            .args(args)
            .env_remove("KUBECONFIG");
        command
    }

    /// Run `kubectl ARGS...` to its end (killed after a minute) and return what it did.
    /// Panics if kubectl cannot be started at all.
    #[track_caller]
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_inner(args, None)
    }

    /// [`Self::run`] with `stdin` as kubectl's standard input (for `-f -`).
    #[track_caller]
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.run_inner(args, Some(stdin))
    }

    /// Run `kubectl ARGS...`; panic with its output unless it succeeds; return its stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_success(&self.display(args), &output)
    }

    /// [`Self::ok`] with `stdin` as kubectl's standard input.
    #[track_caller]
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run_stdin(args, stdin);
        assert_success(&self.display(args), &output)
    }

    /// Run `kubectl ARGS...`; panic with its output if it succeeds; return its stdout and stderr
    /// together (kubectl prints errors on stderr).
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert_failure(&self.display(args), &output)
    }

    /// [`Self::fails`] with `stdin` as kubectl's standard input.
    #[track_caller]
    pub fn fails_stdin(&self, args: &[&str], stdin: &str) -> String {
        let output = self.run_stdin(args, stdin);
        assert_failure(&self.display(args), &output)
    }

    /// Start `kubectl ARGS...` in the background (e.g. `get -w`), reading its output line by line.
    /// Dropping the handle kills it by PID.
    #[track_caller]
    pub fn spawn(&self, args: &[&str]) -> BackgroundKubectl {
        let display = self.display(args);
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {display}: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr_text);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut text) = sink.lock() {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });
        BackgroundKubectl {
            display,
            child,
            lines: read_lines(stdout),
            seen: Vec::new(),
            stderr: stderr_text,
        }
    }

    /// How a command is shown in failure messages.
    pub fn display(&self, args: &[&str]) -> String {
        format!("{} {}", self.bin.display(), args.join(" "))
    }

    #[track_caller]
    fn run_inner(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let display = self.display(args);
        let mut child = self
            .command(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {display}: {e}"));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let input = input.to_owned();
            // Dropping the pipe at the end of the thread closes kubectl's stdin.
            std::thread::spawn(move || {
                let _ = pipe.write_all(input.as_bytes());
            });
        }
        let stdout = read_all(child.stdout.take().expect("stdout is piped"));
        let stderr = read_all(child.stderr.take().expect("stderr is piped"));
        let deadline = Instant::now() + KUBECTL_TIMEOUT;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    timed_out = true;
                    break child
                        .wait()
                        .unwrap_or_else(|e| panic!("cannot reap {display}: {e}"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("cannot wait for {display}: {e}"),
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let mut stderr = stderr.join().unwrap_or_default();
        if timed_out {
            stderr.extend_from_slice(
                format!("\n[e2e harness: killed after {KUBECTL_TIMEOUT:?}]\n").as_bytes(),
            );
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

/// A command's result, for failure messages.
pub fn describe_output(command: &str, output: &Output) -> String {
    format!(
        "`{command}` {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Panics with the command's output unless it succeeded; returns its stdout.
#[track_caller]
pub fn assert_success(command: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "expected success: {}",
        describe_output(command, output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Panics with the command's output if it succeeded; returns its stdout and stderr together.
#[track_caller]
pub fn assert_failure(command: &str, output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected failure: {}",
        describe_output(command, output)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A kubectl running in the background; its stdout is read line by line as it comes.
/// Dropping it kills the process by PID.
pub struct BackgroundKubectl {
    display: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl BackgroundKubectl {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait up to `timeout` for a new stdout line matching `matches`, and return it. Lines read
    /// on the way are kept (see [`Self::lines_seen`]) and never matched again.
    pub fn wait_for_line(
        &mut self,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return Ok(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(RecvTimeoutError::Timeout) => bail!(
                    "`{}`: no matching line within {timeout:?}; {}",
                    self.display,
                    self.report()
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    bail!(
                        "`{}` ended ({status:?}) before printing a matching line; {}",
                        self.display,
                        self.report()
                    )
                }
            }
        }
    }

    /// Every stdout line read so far.
    pub fn lines_seen(&self) -> &[String] {
        &self.seen
    }

    /// What the process printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kill the process (SIGKILL, by PID) and reap it.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait()
    }

    fn report(&self) -> String {
        format!(
            "stdout so far:\n{}\nstderr so far:\n{}",
            self.seen.join("\n"),
            self.stderr()
        )
    }
}

impl Drop for BackgroundKubectl {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Whether every value of `expected` is in `actual` at the same place: objects may have more
/// keys, lists must have the same length, scalars must be equal. `Err` names the first difference.
pub fn json_subset(expected: &serde_json::Value, actual: &serde_json::Value) -> Result<(), String> {
    fn walk(
        expected: &serde_json::Value,
        actual: &serde_json::Value,
        path: &str,
    ) -> Result<(), String> {
        use serde_json::Value;
        match (expected, actual) {
            (Value::Object(e), Value::Object(a)) => {
                for (key, value) in e {
                    let path = format!("{path}.{key}");
                    let actual = a.get(key).ok_or_else(|| format!("{path} is missing"))?;
                    walk(value, actual, &path)?;
                }
                Ok(())
            }
            (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
                for (i, (e, a)) in e.iter().zip(a).enumerate() {
                    walk(e, a, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            _ if expected == actual => Ok(()),
            _ => Err(format!("{path}: expected {expected}, found {actual}")),
        }
    }
    walk(expected, actual, "")
}

/// The `fvctl` binary, built once per test process like [`ferrovirt_binary`] (same target folder
/// and profile); `FVCTL_BIN=/path/to/fvctl` skips the build.
pub fn fvctl_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| build_workspace_binary("fvctl", "FVCTL_BIN").map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_gives_url_and_kubeconfig() {
        let parsed = parse_ready_line(
            "ferrovirt apiserver ready at https://127.0.0.1:4321 (kubeconfig: /tmp/x y/kubeconfig)\n",
        );
        assert_eq!(
            parsed,
            Some((
                "https://127.0.0.1:4321".to_owned(),
                PathBuf::from("/tmp/x y/kubeconfig")
            ))
        );
        assert_eq!(parse_ready_line("INFO something else"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn json_subset_allows_more_keys_but_not_other_values() {
        let expected = serde_json::json!({"a": {"b": [1, {"c": "x"}]}});
        assert_eq!(
            json_subset(
                &expected,
                &serde_json::json!({"a": {"b": [1, {"c": "x", "d": 2}]}, "e": 3})
            ),
            Ok(())
        );
        assert_eq!(
            json_subset(&expected, &serde_json::json!({"a": {"b": [1, {"c": "y"}]}})),
            Err(r#".a.b[1].c: expected "x", found "y""#.to_owned())
        );
        assert!(json_subset(&expected, &serde_json::json!({"a": {"b": [1]}})).is_err());
    }

    #[test]
    fn package_env_is_told_from_configuration() {
        for name in [
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO_CRATE_NAME",
            "OUT_DIR",
        ] {
            assert!(is_package_env(name), "{name}");
        }
        for name in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "PATH",
        ] {
            assert!(!is_package_env(name), "{name}");
        }
    }

    #[test]
    fn address_in_use_is_recognised() {
        assert!(is_address_in_use(&anyhow!(
            "bind: Address already in use (os error 98)"
        )));
        assert!(!is_address_in_use(&anyhow!("permission denied")));
    }
}
