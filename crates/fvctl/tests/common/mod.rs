//! What fvctl's integration tests share: the fvctl binary run as a user types it (with a
//! kubeconfig and nothing of the user's environment), in the foreground with a time limit or in
//! the background line by line; `ferrovirt up` as a child process; the test guest in a loopback
//! registry; tmux sessions for terminal behaviour. Every process a test starts is stopped by its
//! PID when its handle is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long one fvctl command may take unless a test says otherwise.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The fvctl binary of this build.
pub fn fvctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fvctl"))
}

/// fvctl pointed at one kubeconfig, with HOME and XDG_DATA_HOME in a folder of its own so that no
/// user configuration leaks in.
pub struct Fvctl {
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// The result of one fvctl run.
#[derive(Debug)]
pub struct Run {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code (-1 when killed by a signal).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Everything the command printed, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

impl Fvctl {
    pub fn new(kubeconfig: impl Into<PathBuf>) -> Fvctl {
        Fvctl {
            kubeconfig: kubeconfig.into(),
            home: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for every run (e.g. EDITOR).
    pub fn env(&mut self, key: &str, value: &str) {
        self.env.push((key.into(), value.into()));
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The command, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(fvctl_bin());
        c.args(args)
            .env_remove("KUBECONFIG")
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.home.path())
            .env("XDG_DATA_HOME", self.home.path().join("data"))
            .env("NO_COLOR", "1")
            .env_remove("RUST_BACKTRACE");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs to the end (killed after `timeout`), with `stdin` piped in when given.
    pub fn run_with(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Run {
        let command = format!("fvctl {}", args.join(" "));
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
            .unwrap_or_else(|e| panic!("cannot start {command}: {e}"));
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let input = input.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let out = read_all(child.stdout.take().unwrap());
        let err = read_all(child.stderr.take().unwrap());
        let deadline = Instant::now() + timeout;
        let status = loop {
            match child.try_wait().unwrap() {
                Some(s) => break s,
                None if Instant::now() > deadline => {
                    let _ = child.kill();
                    break child.wait().unwrap();
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        Run {
            command,
            status,
            stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, None, COMMAND_TIMEOUT)
    }

    /// Runs and expects success; returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert!(r.status.success(), "expected success: {}", r.describe());
        r.stdout
    }

    /// [`Self::ok`] with stdin.
    #[track_caller]
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        let r = self.run_with(args, Some(stdin.as_bytes()), COMMAND_TIMEOUT);
        assert!(r.status.success(), "expected success: {}", r.describe());
        r.stdout
    }

    /// Runs and expects exit code `code`; returns the run.
    #[track_caller]
    pub fn fails(&self, args: &[&str], code: i32) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.code(),
            code,
            "expected exit code {code}: {}",
            r.describe()
        );
        r
    }

    /// Starts fvctl in the background, reading its stdout line by line.
    pub fn spawn(&self, args: &[&str]) -> Background {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = read_lines(child.stdout.take().unwrap());
        let stderr = read_all(child.stderr.take().unwrap());
        Background {
            command: format!("fvctl {}", args.join(" ")),
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }
}

/// fvctl running in the background. Dropping it kills it (SIGKILL, by PID).
pub struct Background {
    command: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Background {
    /// Waits for a stdout line matching `matches`; lines passed on the way are kept.
    #[track_caller]
    pub fn wait_for_line(&mut self, timeout: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stderr = self.stderr.take().map(|h| {
                        String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
                    });
                    panic!(
                        "`{}`: no matching line ({e:?}); stdout so far:\n{}\nstderr:\n{}",
                        self.command,
                        self.seen.join("\n"),
                        stderr.unwrap_or_default()
                    );
                }
            }
        }
    }

    pub fn seen(&self) -> &[String] {
        &self.seen
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_all(mut source: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = source.read_to_end(&mut buf);
        buf
    })
}

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

/// Polls `f` every 250 ms until it gives `Some`, for at most `timeout`.
#[track_caller]
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `fvctl create vm` manifest text for `name` (no cloud-init), optionally with labels.
pub fn vm_yaml(fv: &Fvctl, name: &str, image: &str) -> String {
    fv.ok(&[
        "create", "vm", "--name", name, "--image", image, "--memory", "128Mi",
    ])
}

/// A tmux server of its own (socket in a temporary folder), killed by PID on drop.
pub struct Tmux {
    dir: tempfile::TempDir,
    socket: PathBuf,
    server_pid: Option<u32>,
}

impl Tmux {
    /// Whether tmux is installed.
    pub fn available() -> bool {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Starts a detached session running `shell_command` in a 200x50 terminal.
    pub fn start(shell_command: &str) -> Tmux {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("tmux.sock");
        let mut t = Tmux {
            dir,
            socket,
            server_pid: None,
        };
        let out = t.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            "t",
            shell_command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pid = t.tmux(&["display-message", "-p", "-t", "t", "#{pid}"]);
        t.server_pid = String::from_utf8_lossy(&pid.stdout).trim().parse().ok();
        assert!(
            t.server_pid.is_some(),
            "tmux server pid: {}",
            String::from_utf8_lossy(&pid.stderr)
        );
        t
    }

    /// A folder that lives as long as the session (for files the pane writes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap()
    }

    /// The visible text of the pane.
    pub fn capture(&self) -> String {
        String::from_utf8_lossy(&self.tmux(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    /// Sends keys (tmux key names such as `C-]`, `Enter`, or literal text with `-l`).
    pub fn send_keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        let out = self.tmux(&args);
        assert!(
            out.status.success(),
            "tmux send-keys: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until the pane shows `needle`; returns the pane text.
    #[track_caller]
    pub fn wait_for(&self, timeout: Duration, needle: &str) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.capture();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {needle:?}; it shows:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        if let Some(pid) = self.server_pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The test guest's files (scripts/build-guest.sh builds them).
pub fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest")
}

/// `ferrovirt up` with one node (`node1`) on 127.0.0.1, from the e2e harness; its data folder is
/// created first. Dropping it stops its VMs and kills (by PID) whatever is left.
pub fn up(data_dir: &Path) -> ferrovirt_e2e::up::UpProcess {
    std::fs::create_dir_all(data_dir).unwrap();
    ferrovirt_e2e::up::UpProcess::start(data_dir, "node1").expect("ferrovirt up starts")
}
