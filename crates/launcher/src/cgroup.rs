//! The VM's cgroup: memory, CPU and pid limits for the launcher and its QEMU, on cgroup v1 or v2.
//!
//! ```text
//!   v2 (one tree)                               v1 (one tree per controller)
//!   /sys/fs/cgroup/                             /sys/fs/cgroup/memory/ferrovirt/<uid>/memory.limit_in_bytes
//!     cgroup.subtree_control  += memory cpu pids /sys/fs/cgroup/cpu/ferrovirt/<uid>/cpu.cfs_quota_us, cpu.shares
//!     ferrovirt/                                /sys/fs/cgroup/cpuacct/ferrovirt/<uid>/      (accounting only)
//!       cgroup.subtree_control += ...           /sys/fs/cgroup/pids/ferrovirt/<uid>/pids.max
//!       <uid>/ memory.max cpu.max cpu.weight pids.max
//! ```
//!
//! The work is split in two: [`plan`] is a pure function from a [`Layout`] (which version, which
//! hierarchies), a name and [`CgroupLimits`] to a list of [`Step`]s (make a folder, write a file);
//! [`VmCgroup::create`] detects the layout, carries the steps out, and removes the folders it made
//! if a step fails. `cpu` and `cpuacct` mounted together (`cpu,cpuacct`, with `cpu` and `cpuacct`
//! as symlinks to it) count as one hierarchy.
//!
//! CPU: `cpu_millis` is both a hard cap (CFS quota: millis/1000 of a 100 ms period) and a weight
//! (v1 shares = millis*1024/1000, as the kubelet computes them; v2 weight converted from shares
//! with the kubelet's formula).
//!
//! The functions here do blocking file I/O; call them from `spawn_blocking` in async code.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The usual mount point of the cgroup filesystem.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";
/// The CFS period used for CPU caps.
pub const CFS_PERIOD_US: u64 = 100_000;
/// How long [`VmCgroup::remove`] waits for killed processes to leave.
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup filesystem found at {root}: expected {root}/cgroup.controllers (v2) or {root}/memory (v1); mount cgroups or pass the right root")]
    NotMounted { root: PathBuf },
    #[error("cannot read {path} to find the cgroup version: {source}")]
    Detect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup name {name:?} is invalid: use a relative path like ferrovirt/<pod-uid> of letters, digits, '-', '_' and '.'")]
    InvalidName { name: String },
    #[error("cgroup {name}: the {controller} controller is not available at {root}; it is needed to enforce the requested limit")]
    ControllerMissing {
        name: String,
        controller: &'static str,
        root: PathBuf,
    },
    #[error("cgroup {name}: cannot create {path}: {source}")]
    Create {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {name}: cannot write {value:?} to {path}: {source}")]
    Write {
        name: String,
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {name}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {name}: cannot kill process {pid}: {source}")]
    Kill {
        name: String,
        pid: u32,
        #[source]
        source: Errno,
    },
    #[error("cgroup {name} still holds processes {pids:?}; stop them first or remove with kill")]
    Busy { name: String, pids: Vec<u32> },
    #[error("cgroup {name}: cannot remove {path}: {source}")]
    Remove {
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup {name} does not exist under {root}")]
    NotFound { name: String, root: PathBuf },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Limits for one VM; `None` leaves a resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    pub memory_bytes: Option<u64>,
    /// CPU in thousandths of a CPU (Kubernetes millicores).
    pub cpu_millis: Option<u64>,
    pub pids: Option<u64>,
}

/// One v1 hierarchy: its folder and the controllers mounted there (among the ones we use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub dir: PathBuf,
    pub controllers: Vec<&'static str>,
}

/// What the cgroup filesystem looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    V1 {
        root: PathBuf,
        hierarchies: Vec<V1Hierarchy>,
    },
    /// `available`: the controllers listed in the root's `cgroup.controllers`.
    V2 {
        root: PathBuf,
        available: BTreeSet<String>,
    },
}

/// The v1 controllers ferrovirt uses, in the order their folders are made.
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

impl Layout {
    /// Finds out which cgroup version is mounted at `root`, and for v1 which controller
    /// hierarchies exist there.
    pub fn detect(root: &Path) -> Result<Layout, CgroupError> {
        let controllers = root.join("cgroup.controllers");
        if controllers.is_file() {
            let text = fs::read_to_string(&controllers).map_err(|source| CgroupError::Detect {
                path: controllers.clone(),
                source,
            })?;
            let available = text.split_whitespace().map(str::to_owned).collect();
            return Ok(Layout::V2 {
                root: root.to_owned(),
                available,
            });
        }
        let mut hierarchies: Vec<(PathBuf, V1Hierarchy)> = Vec::new();
        for controller in V1_CONTROLLERS {
            let dir = root.join(controller);
            let Ok(real) = fs::canonicalize(&dir) else {
                continue;
            };
            if !real.is_dir() {
                continue;
            }
            match hierarchies.iter_mut().find(|(r, _)| *r == real) {
                Some((_, h)) => h.controllers.push(controller),
                None => hierarchies.push((
                    real,
                    V1Hierarchy {
                        dir,
                        controllers: vec![controller],
                    },
                )),
            }
        }
        if hierarchies.is_empty() {
            return Err(CgroupError::NotMounted {
                root: root.to_owned(),
            });
        }
        Ok(Layout::V1 {
            root: root.to_owned(),
            hierarchies: hierarchies.into_iter().map(|(_, h)| h).collect(),
        })
    }

    pub fn version(&self) -> CgroupVersion {
        match self {
            Layout::V1 { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// The VM's folders (one per v1 hierarchy, one on v2).
    pub fn leaf_dirs(&self, name: &str) -> Vec<PathBuf> {
        match self {
            Layout::V1 { hierarchies, .. } => {
                hierarchies.iter().map(|h| h.dir.join(name)).collect()
            }
            Layout::V2 { root, .. } => vec![root.join(name)],
        }
    }
}

/// One thing to do to the cgroup filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create a folder (it may already exist, unless `leaf`).
    Mkdir {
        path: PathBuf,
        leaf: bool,
    },
    Write {
        path: PathBuf,
        value: String,
    },
}

/// Checks a cgroup name: relative, at least one component, no `.`/`..`, plain characters.
pub fn validate_name(name: &str) -> Result<(), CgroupError> {
    let invalid = || CgroupError::InvalidName {
        name: name.to_owned(),
    };
    let path = Path::new(name);
    if name.is_empty() || name.ends_with('/') || name.contains("//") {
        return Err(invalid());
    }
    for component in path.components() {
        let Component::Normal(part) = component else {
            return Err(invalid());
        };
        let part = part.to_str().ok_or_else(invalid)?;
        let plain = part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain || part.starts_with('.') || part.starts_with("cgroup.") {
            return Err(invalid());
        }
    }
    Ok(())
}

/// v1 `cpu.shares` for `millis`, as the kubelet computes it (at least 2).
pub fn cpu_shares(millis: u64) -> u64 {
    (millis.saturating_mul(1024) / 1000).max(2)
}

/// v2 `cpu.weight` for `millis`: the kubelet's conversion of shares (2..=262144) to 1..=10000.
pub fn cpu_weight(millis: u64) -> u64 {
    let shares = cpu_shares(millis).min(262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// CFS quota in microseconds per [`CFS_PERIOD_US`] for `millis` (at least the kernel's 1 ms).
pub fn cfs_quota_us(millis: u64) -> u64 {
    (millis.saturating_mul(CFS_PERIOD_US) / 1000).max(1000)
}

fn controllers_needed(limits: &CgroupLimits) -> Vec<&'static str> {
    let mut out = Vec::new();
    if limits.memory_bytes.is_some() {
        out.push("memory");
    }
    if limits.cpu_millis.is_some() {
        out.push("cpu");
    }
    if limits.pids.is_some() {
        out.push("pids");
    }
    out
}

/// The steps that create cgroup `name` with `limits` on `layout`. Pure.
pub fn plan(layout: &Layout, name: &str, limits: &CgroupLimits) -> Result<Vec<Step>, CgroupError> {
    validate_name(name)?;
    let needed = controllers_needed(limits);
    let components: Vec<&str> = name.split('/').collect();
    let mkdirs = |base: &Path, steps: &mut Vec<Step>| {
        let mut dir = base.to_owned();
        for (i, part) in components.iter().enumerate() {
            dir.push(part);
            steps.push(Step::Mkdir {
                path: dir.clone(),
                leaf: i + 1 == components.len(),
            });
        }
    };
    let write = |path: PathBuf, value: String| Step::Write { path, value };
    let mut steps = Vec::new();
    match layout {
        Layout::V1 { root, hierarchies } => {
            for controller in &needed {
                if !hierarchies
                    .iter()
                    .any(|h| h.controllers.contains(controller))
                {
                    return Err(CgroupError::ControllerMissing {
                        name: name.to_owned(),
                        controller,
                        root: root.clone(),
                    });
                }
            }
            for h in hierarchies {
                mkdirs(&h.dir, &mut steps);
                let leaf = h.dir.join(name);
                for controller in &h.controllers {
                    match *controller {
                        "memory" => {
                            if let Some(bytes) = limits.memory_bytes {
                                steps.push(write(
                                    leaf.join("memory.limit_in_bytes"),
                                    bytes.to_string(),
                                ));
                            }
                        }
                        "cpu" => {
                            if let Some(millis) = limits.cpu_millis {
                                steps.push(write(
                                    leaf.join("cpu.cfs_period_us"),
                                    CFS_PERIOD_US.to_string(),
                                ));
                                steps.push(write(
                                    leaf.join("cpu.cfs_quota_us"),
                                    cfs_quota_us(millis).to_string(),
                                ));
                                steps.push(write(
                                    leaf.join("cpu.shares"),
                                    cpu_shares(millis).to_string(),
                                ));
                            }
                        }
                        "pids" => {
                            if let Some(max) = limits.pids {
                                steps.push(write(leaf.join("pids.max"), max.to_string()));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        Layout::V2 { root, available } => {
            for controller in &needed {
                if !available.contains(*controller) {
                    return Err(CgroupError::ControllerMissing {
                        name: name.to_owned(),
                        controller,
                        root: root.clone(),
                    });
                }
            }
            // Each ancestor must hand the controllers down to its children.
            let enable: Vec<String> = needed.iter().map(|c| format!("+{c}")).collect();
            let mut dir = root.clone();
            for (i, part) in components.iter().enumerate() {
                if !enable.is_empty() {
                    steps.push(write(dir.join("cgroup.subtree_control"), enable.join(" ")));
                }
                dir.push(part);
                steps.push(Step::Mkdir {
                    path: dir.clone(),
                    leaf: i + 1 == components.len(),
                });
            }
            if let Some(bytes) = limits.memory_bytes {
                steps.push(write(dir.join("memory.max"), bytes.to_string()));
            }
            if let Some(millis) = limits.cpu_millis {
                steps.push(write(
                    dir.join("cpu.max"),
                    format!("{} {CFS_PERIOD_US}", cfs_quota_us(millis)),
                ));
                steps.push(write(
                    dir.join("cpu.weight"),
                    cpu_weight(millis).to_string(),
                ));
            }
            if let Some(max) = limits.pids {
                steps.push(write(dir.join("pids.max"), max.to_string()));
            }
        }
    }
    Ok(steps)
}

/// Parses a `cgroup.procs` file: one pid per line.
pub fn parse_procs(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// One VM's cgroup (its folder in each hierarchy).
#[derive(Debug, Clone)]
pub struct VmCgroup {
    name: String,
    version: CgroupVersion,
    dirs: Vec<PathBuf>,
}

impl VmCgroup {
    /// Creates cgroup `name` (for instance `ferrovirt/<pod-uid>`) under `root` (normally
    /// [`DEFAULT_ROOT`]) with `limits`. Fails if the VM's folder already exists; on failure,
    /// removes the folders it made.
    pub fn create(root: &Path, name: &str, limits: &CgroupLimits) -> Result<VmCgroup, CgroupError> {
        let layout = Layout::detect(root)?;
        let steps = plan(&layout, name, limits)?;
        let mut made: Vec<PathBuf> = Vec::new();
        let result = (|| {
            for step in &steps {
                match step {
                    Step::Mkdir { path, leaf } => match fs::create_dir(path) {
                        Ok(()) => made.push(path.clone()),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && !leaf => {}
                        Err(source) => {
                            return Err(CgroupError::Create {
                                name: name.to_owned(),
                                path: path.clone(),
                                source,
                            })
                        }
                    },
                    Step::Write { path, value } => {
                        fs::write(path, value).map_err(|source| CgroupError::Write {
                            name: name.to_owned(),
                            path: path.clone(),
                            value: value.clone(),
                            source,
                        })?
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            for dir in made.iter().rev() {
                if let Err(undo) = fs::remove_dir(dir) {
                    tracing::warn!(cgroup = name, path = %dir.display(), error = %undo, "cannot undo cgroup folder");
                }
            }
            return Err(e);
        }
        Ok(VmCgroup {
            name: name.to_owned(),
            version: layout.version(),
            dirs: layout.leaf_dirs(name),
        })
    }

    /// Finds an existing cgroup (after a restart of the node agent).
    pub fn open(root: &Path, name: &str) -> Result<VmCgroup, CgroupError> {
        validate_name(name)?;
        let layout = Layout::detect(root)?;
        let dirs: Vec<PathBuf> = layout
            .leaf_dirs(name)
            .into_iter()
            .filter(|d| d.is_dir())
            .collect();
        if dirs.is_empty() {
            return Err(CgroupError::NotFound {
                name: name.to_owned(),
                root: root.to_owned(),
            });
        }
        Ok(VmCgroup {
            name: name.to_owned(),
            version: layout.version(),
            dirs,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The VM's folder in each hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Moves process `pid` (with all its threads) into the cgroup.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            fs::write(&path, pid.to_string()).map_err(|source| CgroupError::Write {
                name: self.name.clone(),
                path,
                value: pid.to_string(),
                source,
            })?;
        }
        Ok(())
    }

    /// The processes in the cgroup (in any of its hierarchies), sorted.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut all = BTreeSet::new();
        for dir in &self.dirs {
            let path = dir.join("cgroup.procs");
            match fs::read_to_string(&path) {
                Ok(text) => all.extend(parse_procs(&text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::Read {
                        name: self.name.clone(),
                        path,
                        source,
                    })
                }
            }
        }
        Ok(all.into_iter().collect())
    }

    /// Removes the cgroup's folders. With `kill`, first sends SIGKILL to every process in it and
    /// waits up to [`REMOVE_TIMEOUT`] for them to be gone (they must be reaped by their parent);
    /// without, fails with [`CgroupError::Busy`] if any is left. Parent folders (`ferrovirt/`)
    /// are shared with other VMs and stay.
    pub fn remove(&self, kill_remaining: bool) -> Result<(), CgroupError> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                break;
            }
            if !kill_remaining || Instant::now() >= deadline {
                return Err(CgroupError::Busy {
                    name: self.name.clone(),
                    pids,
                });
            }
            for pid in pids {
                let Ok(raw) = i32::try_from(pid) else {
                    continue;
                };
                match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(source) => {
                        return Err(CgroupError::Kill {
                            name: self.name.clone(),
                            pid,
                            source,
                        })
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for dir in &self.dirs {
            match fs::remove_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CgroupError::Remove {
                        name: self.name.clone(),
                        path: dir.clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> CgroupLimits {
        CgroupLimits {
            memory_bytes: Some(1 << 30),
            cpu_millis: Some(1500),
            pids: Some(512),
        }
    }

    fn write(path: PathBuf, value: &str) -> Step {
        Step::Write {
            path,
            value: value.to_owned(),
        }
    }

    fn mkdir(path: PathBuf, leaf: bool) -> Step {
        Step::Mkdir { path, leaf }
    }

    #[test]
    fn names_are_checked() {
        for good in [
            "ferrovirt/0d5c6a1e-1b2c-4d5e-8f90-123456789abc",
            "vm",
            "a.b/c_d",
        ] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            "/abs",
            "a/../b",
            "./a",
            "a//b",
            "a/",
            "a b",
            "a/.hidden",
            "cgroup.procs",
            "a\nb",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_conversions_match_the_kubelet() {
        assert_eq!(cpu_shares(1000), 1024);
        assert_eq!(cpu_shares(1), 2);
        assert_eq!(cpu_weight(1000), 39);
        assert_eq!(cpu_weight(1), 1);
        assert_eq!(cpu_weight(u64::MAX), 10000);
        assert_eq!(cfs_quota_us(1500), 150_000);
        assert_eq!(cfs_quota_us(1), 1000);
    }

    #[test]
    fn v1_plan_with_cpu_and_cpuacct_comounted() {
        let r = PathBuf::from("/cg");
        let layout = Layout::V1 {
            root: r.clone(),
            hierarchies: vec![
                V1Hierarchy {
                    dir: r.join("memory"),
                    controllers: vec!["memory"],
                },
                V1Hierarchy {
                    dir: r.join("cpu"),
                    controllers: vec!["cpu", "cpuacct"],
                },
                V1Hierarchy {
                    dir: r.join("pids"),
                    controllers: vec!["pids"],
                },
            ],
        };
        let steps = plan(&layout, "ferrovirt/uid1", &limits()).unwrap();
        assert_eq!(
            steps,
            vec![
                mkdir(r.join("memory/ferrovirt"), false),
                mkdir(r.join("memory/ferrovirt/uid1"), true),
                write(
                    r.join("memory/ferrovirt/uid1/memory.limit_in_bytes"),
                    "1073741824"
                ),
                mkdir(r.join("cpu/ferrovirt"), false),
                mkdir(r.join("cpu/ferrovirt/uid1"), true),
                write(r.join("cpu/ferrovirt/uid1/cpu.cfs_period_us"), "100000"),
                write(r.join("cpu/ferrovirt/uid1/cpu.cfs_quota_us"), "150000"),
                write(r.join("cpu/ferrovirt/uid1/cpu.shares"), "1536"),
                mkdir(r.join("pids/ferrovirt"), false),
                mkdir(r.join("pids/ferrovirt/uid1"), true),
                write(r.join("pids/ferrovirt/uid1/pids.max"), "512"),
            ]
        );
        assert_eq!(layout.leaf_dirs("ferrovirt/uid1").len(), 3);
    }

    #[test]
    fn v2_plan_enables_controllers_down_the_tree() {
        let r = PathBuf::from("/cg");
        let layout = Layout::V2 {
            root: r.clone(),
            available: ["cpuset", "cpu", "io", "memory", "pids"]
                .map(String::from)
                .into(),
        };
        let steps = plan(&layout, "ferrovirt/uid1", &limits()).unwrap();
        assert_eq!(
            steps,
            vec![
                write(r.join("cgroup.subtree_control"), "+memory +cpu +pids"),
                mkdir(r.join("ferrovirt"), false),
                write(
                    r.join("ferrovirt/cgroup.subtree_control"),
                    "+memory +cpu +pids"
                ),
                mkdir(r.join("ferrovirt/uid1"), true),
                write(r.join("ferrovirt/uid1/memory.max"), "1073741824"),
                write(r.join("ferrovirt/uid1/cpu.max"), "150000 100000"),
                write(r.join("ferrovirt/uid1/cpu.weight"), "59"),
                write(r.join("ferrovirt/uid1/pids.max"), "512"),
            ]
        );
        // No limits: no controllers needed, nothing enabled.
        let steps = plan(&layout, "vm", &CgroupLimits::default()).unwrap();
        assert_eq!(steps, vec![mkdir(r.join("vm"), true)]);
    }

    #[test]
    fn missing_controllers_are_reported() {
        let layout = Layout::V2 {
            root: "/cg".into(),
            available: ["cpu".to_owned()].into(),
        };
        let err = plan(&layout, "vm", &limits()).unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::ControllerMissing {
                    controller: "memory",
                    ..
                }
            ),
            "{err}"
        );
        let layout = Layout::V1 {
            root: "/cg".into(),
            hierarchies: vec![V1Hierarchy {
                dir: "/cg/memory".into(),
                controllers: vec!["memory"],
            }],
        };
        let err = plan(&layout, "vm", &limits()).unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::ControllerMissing {
                    controller: "cpu",
                    ..
                }
            ),
            "{err}"
        );
    }

    /// A fake v1 root: one folder per controller, `cpuacct` a symlink to a `cpu,cpuacct` mount.
    fn fake_v1() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for c in ["memory", "pids", "cpu,cpuacct", "devices"] {
            fs::create_dir(dir.path().join(c)).unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", dir.path().join("cpu")).unwrap();
        std::os::unix::fs::symlink("cpu,cpuacct", dir.path().join("cpuacct")).unwrap();
        dir
    }

    #[test]
    fn detects_v1_with_comounted_cpu() {
        let root = fake_v1();
        let layout = Layout::detect(root.path()).unwrap();
        let Layout::V1 { hierarchies, .. } = &layout else {
            panic!("{layout:?}")
        };
        let summary: Vec<(String, Vec<&str>)> = hierarchies
            .iter()
            .map(|h| {
                (
                    h.dir.file_name().unwrap().to_str().unwrap().to_owned(),
                    h.controllers.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("memory".into(), vec!["memory"]),
                ("cpu".into(), vec!["cpu", "cpuacct"]),
                ("pids".into(), vec!["pids"])
            ]
        );
    }

    #[test]
    fn detects_v2_and_nothing() {
        let root = tempfile::tempdir().unwrap();
        assert!(matches!(
            Layout::detect(root.path()),
            Err(CgroupError::NotMounted { .. })
        ));
        fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let layout = Layout::detect(root.path()).unwrap();
        assert_eq!(layout.version(), CgroupVersion::V2);
        let Layout::V2 { available, .. } = layout else {
            unreachable!()
        };
        assert!(available.contains("memory"));
    }

    #[test]
    fn create_on_fake_v1_writes_the_limits() {
        let root = fake_v1();
        let cg = VmCgroup::create(root.path(), "ferrovirt/uid1", &limits()).unwrap();
        assert_eq!(cg.version(), CgroupVersion::V1);
        assert_eq!(cg.dirs().len(), 3);
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(
            read("memory/ferrovirt/uid1/memory.limit_in_bytes"),
            "1073741824"
        );
        assert_eq!(
            read("cpu,cpuacct/ferrovirt/uid1/cpu.cfs_quota_us"),
            "150000"
        );
        assert_eq!(read("cpu,cpuacct/ferrovirt/uid1/cpu.shares"), "1536");
        assert_eq!(read("pids/ferrovirt/uid1/pids.max"), "512");
        assert!(!root.path().join("devices/ferrovirt").exists());
        cg.add_pid(4242).unwrap();
        assert_eq!(cg.pids().unwrap(), [4242]);
        assert_eq!(read("memory/ferrovirt/uid1/cgroup.procs"), "4242");
        // The same VM cannot be created twice; a second VM can.
        assert!(matches!(
            VmCgroup::create(root.path(), "ferrovirt/uid1", &limits()),
            Err(CgroupError::Create { .. })
        ));
        VmCgroup::create(root.path(), "ferrovirt/uid2", &limits()).unwrap();
        let opened = VmCgroup::open(root.path(), "ferrovirt/uid1").unwrap();
        assert_eq!(opened.dirs(), cg.dirs());
        assert!(matches!(
            VmCgroup::open(root.path(), "ferrovirt/nope"),
            Err(CgroupError::NotFound { .. })
        ));
    }

    #[test]
    fn create_on_fake_v2_writes_the_limits() {
        let root = tempfile::tempdir().unwrap();
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids",
        )
        .unwrap();
        let cg = VmCgroup::create(root.path(), "ferrovirt/uid1", &limits()).unwrap();
        assert_eq!(cg.version(), CgroupVersion::V2);
        let read = |p: &str| fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+memory +cpu +pids");
        assert_eq!(
            read("ferrovirt/cgroup.subtree_control"),
            "+memory +cpu +pids"
        );
        assert_eq!(read("ferrovirt/uid1/memory.max"), "1073741824");
        assert_eq!(read("ferrovirt/uid1/cpu.max"), "150000 100000");
        assert_eq!(read("ferrovirt/uid1/pids.max"), "512");
        assert_eq!(cg.dirs(), [root.path().join("ferrovirt/uid1")]);
    }

    #[test]
    fn failed_create_removes_what_it_made() {
        let root = fake_v1();
        // A file where the pids hierarchy's folder should go makes the third mkdir fail.
        fs::create_dir(root.path().join("pids/ferrovirt")).unwrap();
        fs::write(root.path().join("pids/ferrovirt/uid1"), "in the way").unwrap();
        let err = VmCgroup::create(root.path(), "ferrovirt/uid1", &limits()).unwrap_err();
        assert!(matches!(err, CgroupError::Create { .. }), "{err}");
        assert!(err.to_string().contains("ferrovirt/uid1"));
        // memory/ferrovirt/uid1 and cpu/ferrovirt/uid1 would have been made; their files block
        // rmdir on a fake root, so check the intent through a limit-free create instead.
        let root = fake_v1();
        fs::create_dir(root.path().join("pids/ferrovirt")).unwrap();
        fs::write(root.path().join("pids/ferrovirt/uid1"), "in the way").unwrap();
        VmCgroup::create(root.path(), "ferrovirt/uid1", &CgroupLimits::default()).unwrap_err();
        assert!(!root.path().join("memory/ferrovirt").exists());
        assert!(!root.path().join("cpu,cpuacct/ferrovirt").exists());
    }

    #[test]
    fn procs_parse() {
        assert_eq!(parse_procs("1\n22\n\n333\n"), [1, 22, 333]);
    }
}
