//! The kill -9 durability test, shared by both stores: a child process (this test binary again)
//! writes keys from several tasks at once and prints each acknowledged key; the parent kills it
//! with SIGKILL mid-flight and checks that every acknowledged key is stored.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrovirt_store::Store;

/// Environment variable that turns the child test into a writer; its value is the store to open.
pub const CHILD_ENV: &str = "FERROVIRT_STORE_DURABILITY_CHILD";

const TASKS: usize = 8;

pub fn value_for(key: &str) -> Bytes {
    Bytes::from(format!("value of {key}").repeat(20))
}

/// The child's work: write forever from [`TASKS`] tasks, printing `ACK <key>` after each write is
/// acknowledged. Only a kill stops it.
pub async fn write_until_killed(store: Arc<dyn Store>, prefix: &str) {
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let store = store.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("{prefix}t{t}/{i:06}");
                    if let Err(e) = store.create(&key, value_for(&key)).await {
                        // The store went away (a test may kill etcd): stop, acking nothing more.
                        eprintln!("writer child: {key}: {e}");
                        return;
                    }
                    println!("ACK {key}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer task");
    }
}

/// A running writer child.
pub struct Writer {
    child: std::process::Child,
    acks: mpsc::Receiver<String>,
    pub acked: Vec<String>,
}

impl Writer {
    /// Re-run this test binary, only the test `child_test`, with [`CHILD_ENV`] set to `target`.
    pub fn spawn(child_test: &str, target: &str) -> Writer {
        let exe = std::env::current_exe().expect("test binary path");
        let mut child = Command::new(exe)
            .args([child_test, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, target)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the writer child");
        let stdout = child.stdout.take().expect("child stdout");
        let (send, acks) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(key) = line.strip_prefix("ACK ") {
                    if send.send(key.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        Writer {
            child,
            acks,
            acked: Vec::new(),
        }
    }

    /// Wait until the child has acknowledged at least `n` writes in all.
    pub fn wait_for_acks(&mut self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.acked.len() < n {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the writer child exited ({status}) after {} acks",
                    self.acked.len()
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "only {} acks after 120s", self.acked.len());
            if let Ok(key) = self.acks.recv_timeout(left.min(Duration::from_millis(200))) {
                self.acked.push(key);
            }
        }
    }

    /// SIGKILL the child (by PID), reap it, and collect the acks it printed before dying.
    pub fn kill(mut self) -> Vec<String> {
        // It may have stopped on its own already (its store went away).
        let _ = self.child.kill();
        self.child.wait().expect("reap the writer child");
        // The reader thread sees end of file now; drain what it still has.
        while let Ok(key) = self.acks.recv_timeout(Duration::from_secs(2)) {
            self.acked.push(key);
        }
        std::mem::take(&mut self.acked)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every acknowledged key is stored with its value.
pub async fn check_acked(store: &dyn Store, acked: &[String]) {
    assert!(!acked.is_empty());
    for key in acked {
        let found = store.get(key).await.expect("read back");
        let found = found.unwrap_or_else(|| panic!("acknowledged key {key} is lost"));
        assert_eq!(found.value, value_for(key), "value of {key}");
    }
}
