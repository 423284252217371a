//! Helpers for tests, of this crate and of others (cargo feature `testing`): a real etcd, or a
//! cluster of them, on 127.0.0.1 with free ports and throw-away data directories.
//!
//! Every process started here is killed by its PID (SIGKILL) when its handle is dropped; a test
//! kills one member with [`EtcdProcess::kill`] (by PID) and brings it back on the same data
//! directory with [`EtcdProcess::restart`] or [`EtcdProcess::start_again`].
//! The binary is `/usr/bin/etcd` (Debian's `etcd-server`), or `$FERROVIRT_ETCD` if set. A missing
//! binary is an error, not a skip: the tests that need etcd fail and say what to install.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! let etcd = ferrovirt_store::testing::EtcdProcess::start()?;
//! let endpoints = etcd.endpoints(); // ["http://127.0.0.1:<port>"]
//! # Ok(()) }
//! ```
//!
//! etcd runs with progress notifications every second (so idle watchers get
//! [`crate::WatchEvent::Progress`]) and with requests of up to 10 MiB (so values of 1.5 MiB fit).

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// The etcd binary tests run.
pub fn etcd_binary() -> PathBuf {
    std::env::var_os("FERROVIRT_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/bin/etcd".into())
}

/// How long a member may take to become healthy.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One etcd member process. Dropping it kills the process and deletes its data.
pub struct EtcdProcess {
    name: String,
    client_port: u16,
    peer_port: u16,
    initial_cluster: String,
    data_dir: TempDir,
    child: Option<Child>,
}

impl EtcdProcess {
    /// Start a single-member etcd and wait until it is healthy.
    pub fn start() -> io::Result<Self> {
        let [client_port, peer_port] = free_ports::<2>()?;
        let name = "etcd0".to_owned();
        let initial_cluster = format!("{name}=http://127.0.0.1:{peer_port}");
        let mut member = EtcdProcess::new(name, client_port, peer_port, initial_cluster)?;
        member.spawn()?;
        member.wait_healthy()?;
        Ok(member)
    }

    fn new(
        name: String,
        client_port: u16,
        peer_port: u16,
        initial_cluster: String,
    ) -> io::Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("ferrovirt-etcd-")
            .tempdir()?;
        Ok(EtcdProcess {
            name,
            client_port,
            peer_port,
            initial_cluster,
            data_dir,
            child: None,
        })
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// [`Self::endpoint`] as a list, the shape store constructors take.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The member's data directory (deleted on drop).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Kill the process (SIGKILL, by PID) and reap it. The data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kill the process, then start it again on the same data directory and ports, and wait
    /// until it is healthy (for a cluster member: until the cluster has a leader again).
    pub fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.spawn()?;
        self.wait_healthy()
    }

    /// Start the killed process again on the same data directory and ports, without waiting
    /// (members of a cluster without quorum only become healthy together: start them all, then
    /// [`Self::wait_until_healthy`]). Does nothing if it runs.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.kill();
        self.spawn()
    }

    /// Wait until the member says it is healthy (it has a leader and serves), up to 30 s.
    pub fn wait_until_healthy(&mut self) -> io::Result<()> {
        self.wait_healthy()
    }

    /// Whether etcd's `/health` says the member is healthy now (for a cluster member: it has a
    /// leader).
    pub fn is_healthy(&self) -> bool {
        health(self.client_port)
    }

    /// `(this member's id, its leader's id)` from etcd's status, if it answers; the leader id is
    /// 0 while it knows no leader.
    pub fn raft_status(&self) -> Option<(u64, u64)> {
        let body = http_post(self.client_port, "/v3/maintenance/status", "{}").ok()?;
        let member = json_number(&body, "member_id")?;
        let leader = json_number(&body, "leader").unwrap_or(0);
        Some((member, leader))
    }

    fn log_path(&self) -> PathBuf {
        self.data_dir.path().join("etcd.log")
    }

    fn spawn(&mut self) -> io::Result<()> {
        let binary = etcd_binary();
        if !binary.exists() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "etcd binary {} not found: install Debian's etcd-server package \
                     (apt-get install etcd-server) or set FERROVIRT_ETCD",
                    binary.display()
                ),
            ));
        }
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let client_url = self.endpoint();
        let peer_url = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&binary)
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.data_dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args([
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "ferrovirt-test",
            ])
            .args(["--experimental-watch-progress-notify-interval", "1s"])
            .args(["--max-request-bytes", "10485760"])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot start {}: {e}", binary.display()))
            })?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_healthy(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    return Err(self.start_error(&format!("etcd exited with {status}")));
                }
            }
            if health(self.client_port) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.start_error(&format!("etcd not healthy after {START_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_error(&self, what: &str) -> io::Error {
        let mut log = String::new();
        if let Ok(mut file) = File::open(self.log_path()) {
            let _ = file.read_to_string(&mut log);
        }
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!(
            "{what} (member {}); last log lines:\n{}",
            self.name,
            tail.join("\n")
        ))
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Several etcd members forming one cluster. Dropping it kills every member.
pub struct EtcdCluster {
    members: Vec<EtcdProcess>,
}

impl EtcdCluster {
    /// Start `size` members and wait until every one is healthy (the cluster has a leader).
    pub fn start(size: usize) -> io::Result<Self> {
        let ports = free_port_list(size * 2)?;
        let names: Vec<String> = (0..size).map(|i| format!("etcd{i}")).collect();
        let initial_cluster = names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name}=http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::with_capacity(size);
        for (i, name) in names.into_iter().enumerate() {
            members.push(EtcdProcess::new(
                name,
                ports[2 * i],
                ports[2 * i + 1],
                initial_cluster.clone(),
            )?);
        }
        // Members wait for each other at first start: start them all, then wait.
        for member in &mut members {
            member.spawn()?;
        }
        for member in &mut members {
            member.wait_healthy()?;
        }
        Ok(EtcdCluster { members })
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdProcess::endpoint).collect()
    }

    /// The members, to kill or restart one.
    pub fn members(&mut self) -> &mut [EtcdProcess] {
        &mut self.members
    }

    /// The index of the member that is the leader, as the running members see it, if they
    /// agree on one.
    pub fn leader(&mut self) -> Option<usize> {
        let statuses: Vec<(usize, u64, u64)> = self
            .members
            .iter_mut()
            .enumerate()
            .filter_map(|(i, m)| {
                if !m.is_running() {
                    return None;
                }
                m.raft_status().map(|(id, leader)| (i, id, leader))
            })
            .collect();
        let leader = statuses.first()?.2;
        if leader == 0 || statuses.iter().any(|s| s.2 != leader) {
            return None;
        }
        statuses.iter().find(|s| s.1 == leader).map(|s| s.0)
    }

    /// Wait until the members agree on a leader, up to 30 s; its index.
    pub fn wait_for_leader(&mut self) -> io::Result<usize> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!(
                    "the etcd members agree on no leader after {START_TIMEOUT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether etcd's `/health` on this client port says it is healthy.
fn health(client_port: u16) -> bool {
    let check = || -> io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], client_port)),
            Duration::from_millis(500),
        )?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response.contains("\"health\":\"true\""))
    };
    check().unwrap_or(false)
}

/// The body of `POST path` with a JSON body on 127.0.0.1 (etcd's JSON gateway).
fn http_post(port: u16, path: &str, body: &str) -> io::Result<String> {
    let mut stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200") =>
        {
            Ok(body.to_owned())
        }
        _ => Err(io::Error::other(format!("{path} answered: {response}"))),
    }
}

/// The value of `"field":"123"` (etcd's gateway writes 64-bit numbers as strings) or
/// `"field":123` in a JSON text.
fn json_number(json: &str, field: &str) -> Option<u64> {
    let at = json.find(&format!("\"{field}\":"))? + field.len() + 3;
    let digits: String = json[at..]
        .trim_start_matches('"')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `N` distinct free TCP ports on 127.0.0.1.
fn free_ports<const N: usize>() -> io::Result<[u16; N]> {
    let list = free_port_list(N)?;
    Ok(std::array::from_fn(|i| list[i]))
}

fn free_port_list(n: usize) -> io::Result<Vec<u16>> {
    // Hold every listener until all are chosen, so the ports differ.
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::json_number;

    #[test]
    fn numbers_are_read_from_etcds_status() {
        let status = r#"{"header":{"cluster_id":"17237436991929493444","member_id":"9372538179322589801","revision":"12","raft_term":"3"},"version":"3.4.23","leader":"10501334649042878790","raftIndex":"20"}"#;
        assert_eq!(json_number(status, "member_id"), Some(9372538179322589801));
        assert_eq!(json_number(status, "leader"), Some(10501334649042878790));
        assert_eq!(json_number(r#"{"leader":0}"#, "leader"), Some(0));
        assert_eq!(json_number(status, "missing"), None);
    }
}
