//! The cgroup module against this machine's real cgroup filesystem (v1 here, v2 on most hosts):
//! create a VM cgroup, move a child into it, check the limits and membership, kill the child by
//! PID, remove the cgroup.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};

use ferrovirt_launcher::cgroup::{Layout, DEFAULT_ROOT};
use ferrovirt_launcher::{CgroupLimits, CgroupVersion, VmCgroup};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Kills the child by its PID and reaps it, whatever happens in the test.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(
            Command::new("sleep")
                .arg("300")
                .spawn()
                .expect("spawn sleep"),
        )
    }
    fn pid(&self) -> u32 {
        self.0.id()
    }
    fn kill(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Removes the test's parent folder in every hierarchy (it is ours alone).
fn remove_parent(root: &Path, parent: &str) {
    let layout = Layout::detect(root).unwrap();
    for dir in layout.leaf_dirs(parent) {
        let _ = fs::remove_dir(dir);
    }
}

#[test]
fn real_cgroup_holds_a_process_with_limits() {
    let root = Path::new(DEFAULT_ROOT);
    let parent = unique("ferrovirt-test");
    let name = format!("{parent}/vm");
    let limits = CgroupLimits {
        memory_bytes: Some(256 << 20),
        cpu_millis: Some(500),
        pids: Some(100),
    };
    let cg = VmCgroup::create(root, &name, &limits).expect("create cgroup (needs root)");
    let result = std::panic::catch_unwind(|| {
        let mut child = Sleeper::start();
        cg.add_pid(child.pid()).unwrap();
        assert_eq!(cg.pids().unwrap(), [child.pid()]);

        // The kernel itself reports the membership and the limits.
        let own = fs::read_to_string(format!("/proc/{}/cgroup", child.pid())).unwrap();
        assert!(own.contains(&format!("/{name}")), "{own}");
        match cg.version() {
            CgroupVersion::V1 => {
                let mem = cg
                    .dirs()
                    .iter()
                    .find(|d| d.starts_with(root.join("memory")))
                    .unwrap();
                assert_eq!(
                    fs::read_to_string(mem.join("memory.limit_in_bytes"))
                        .unwrap()
                        .trim(),
                    "268435456"
                );
                let procs = fs::read_to_string(mem.join("cgroup.procs")).unwrap();
                assert_eq!(procs.trim(), child.pid().to_string());
                let cpu = cg
                    .dirs()
                    .iter()
                    .find(|d| d.starts_with(root.join("cpu")))
                    .unwrap();
                assert_eq!(
                    fs::read_to_string(cpu.join("cpu.cfs_quota_us"))
                        .unwrap()
                        .trim(),
                    "50000"
                );
                let pids = cg
                    .dirs()
                    .iter()
                    .find(|d| d.starts_with(root.join("pids")))
                    .unwrap();
                assert_eq!(
                    fs::read_to_string(pids.join("pids.max")).unwrap().trim(),
                    "100"
                );
            }
            CgroupVersion::V2 => {
                let dir = &cg.dirs()[0];
                assert_eq!(
                    fs::read_to_string(dir.join("memory.max")).unwrap().trim(),
                    "268435456"
                );
                assert_eq!(
                    fs::read_to_string(dir.join("cpu.max")).unwrap().trim(),
                    "50000 100000"
                );
                assert_eq!(
                    fs::read_to_string(dir.join("cgroup.procs")).unwrap().trim(),
                    child.pid().to_string()
                );
            }
        }

        // Not removable while the process is in it.
        assert!(cg.remove(false).is_err());
        child.kill();
        assert_eq!(cg.pids().unwrap(), Vec::<u32>::new());
        cg.remove(false).unwrap();
        assert!(cg.dirs().iter().all(|d| !d.exists()));
    });
    let _ = cg.remove(true);
    remove_parent(root, &parent);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn remove_with_kill_ends_what_is_left() {
    let root = Path::new(DEFAULT_ROOT);
    let parent = unique("ferrovirt-test");
    let name = format!("{parent}/vm");
    let cg = VmCgroup::create(
        root,
        &name,
        &CgroupLimits {
            memory_bytes: Some(128 << 20),
            ..Default::default()
        },
    )
    .expect("create cgroup (needs root)");
    let child = Sleeper::start();
    let pid = child.pid();
    cg.add_pid(pid).unwrap();
    // Reap the child in the background as a launcher's runtime would.
    let reaper = std::thread::spawn(move || {
        let mut child = child;
        let status = child.0.wait().unwrap();
        drop(child);
        status
    });
    cg.remove(true).unwrap();
    let status = reaper.join().unwrap();
    assert!(!status.success(), "sleep should have been killed: {status}");
    assert!(cg.dirs().iter().all(|d| !d.exists()));
    remove_parent(root, &parent);
}

/// On a hybrid v1 host the v2 tree at /sys/fs/cgroup/unified has no controllers; a limit-free
/// cgroup there still exercises the v2 code path on a real kernel.
#[test]
fn real_v2_tree_when_present() {
    let root = Path::new("/sys/fs/cgroup/unified");
    let root = if root.join("cgroup.controllers").is_file() {
        root
    } else if Path::new(DEFAULT_ROOT).join("cgroup.controllers").is_file() {
        Path::new(DEFAULT_ROOT)
    } else {
        eprintln!("no cgroup v2 tree on this host; skipped");
        return;
    };
    let parent = unique("ferrovirt-test");
    let name = format!("{parent}/vm");
    let cg = VmCgroup::create(root, &name, &CgroupLimits::default()).unwrap();
    assert_eq!(cg.version(), CgroupVersion::V2);
    let mut child = Sleeper::start();
    cg.add_pid(child.pid()).unwrap();
    assert_eq!(cg.pids().unwrap(), [child.pid()]);
    child.kill();
    cg.remove(false).unwrap();
    let _ = fs::remove_dir(root.join(&parent));
    assert!(!root.join(&parent).exists());
}
