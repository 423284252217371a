//! Starting a launcher: its `spec.json` (built purely from the Pod, the VMI and its Secrets) and
//! the process itself, started detached so that it outlives the node agent.
//!
//! ```text
//!  node agent ──posix_spawn(SETSID)──► <program> <args..> --dir <data>/pods/<uid>
//!       │                                 stdin /dev/null, stdout+stderr >> launcher.log
//!       ├─ writes launcher.pid at once (the launcher writes the same pid again)
//!       └─ a thread waits for the child, so an exited launcher never lingers as a zombie
//! ```
//!
//! `posix_spawn` with `POSIX_SPAWN_SETSID` puts the launcher in a session of its own without any
//! `unsafe` code: a terminal's Ctrl-C or hang-up, and the node agent's own death (even SIGKILL),
//! leave it and its guest running.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ferrovirt_api::kubevirt::VirtualMachineInstance;
use ferrovirt_api::quantity::{parse_quantity_bytes, parse_quantity_millis};
use ferrovirt_launcher::spec::{LaunchSpec, LOG_FILE, PID_FILE};
use k8s_openapi::api::core::v1::{Pod, Secret};
use nix::spawn::{posix_spawnp, PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::SigSet;

use crate::status::COMPUTE_CONTAINER;

/// How to start a launcher: a program and its leading arguments; `--dir <pod folder>` follows.
/// For the real one: the `ferrovirt` executable and `["launcher"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LauncherCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl LauncherCommand {
    /// `ferrovirt launcher` from the running executable.
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(LauncherCommand { program: std::env::current_exe()?, args: vec!["launcher".into()] })
    }

    /// The whole command line for the launcher of `dir`.
    pub fn argv(&self, dir: &Path) -> Vec<OsString> {
        let mut argv = vec![self.program.clone().into_os_string()];
        argv.extend(self.args.iter().cloned());
        argv.push("--dir".into());
        argv.push(dir.as_os_str().to_owned());
        argv
    }
}

/// The node's part of every [`LaunchSpec`].
#[derive(Debug, Clone, PartialEq)]
pub struct LaunchSettings {
    pub kvm: bool,
    pub qemu_binary: PathBuf,
    pub cache_dir: PathBuf,
    pub insecure_registries: Vec<String>,
    pub allowed_host_disk_dirs: Vec<PathBuf>,
    pub cgroup_root: PathBuf,
}

/// Memory (bytes) and CPU (millicores) caps for the VM's cgroup from the Pod's `compute` container.
/// Memory: its limit, or else its request (guest memory plus overhead: the node's memory is handed out
/// by requests). CPU: its limit only — as in Kubernetes, a CPU request is a share, not a cap; capping
/// a 100m request at a tenth of a CPU made guests boot ten times slower.
pub fn compute_limits(pod: &Pod) -> (Option<u64>, Option<u64>) {
    let Some(resources) = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == COMPUTE_CONTAINER))
        .and_then(|c| c.resources.as_ref())
    else {
        return (None, None);
    };
    let pick = |key: &str| {
        resources
            .limits
            .as_ref()
            .and_then(|l| l.get(key))
            .or_else(|| resources.requests.as_ref().and_then(|r| r.get(key)))
            .map(|q| q.0.clone())
    };
    let memory = pick("memory").and_then(|q| parse_quantity_bytes(&q).ok());
    let cpu = resources
        .limits
        .as_ref()
        .and_then(|l| l.get("cpu"))
        .and_then(|q| parse_quantity_millis(&q.0).ok());
    (memory, cpu)
}

/// The names of the Secrets a VMI refers to (cloud-init user and network data, registry pull
/// secrets).
pub fn referenced_secrets(vmi: &VirtualMachineInstance) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for volume in vmi.spec.volumes() {
        for source in [&volume.cloud_init_no_cloud, &volume.cloud_init_config_drive].into_iter().flatten() {
            for reference in [&source.user_data_secret_ref, &source.network_data_secret_ref].into_iter().flatten() {
                names.extend(reference.name.clone());
            }
        }
        if let Some(disk) = &volume.container_disk {
            names.extend(disk.image_pull_secret.clone());
        }
    }
    let kernel = vmi.spec.domain.firmware.as_ref().and_then(|f| f.kernel_boot.as_ref()).and_then(|k| k.container.as_ref());
    names.extend(kernel.and_then(|c| c.image_pull_secret.clone()));
    names
}

/// A Secret's values, key -> base64 of the bytes (`data` and `stringData` both).
pub fn secret_values(secret: &Secret) -> BTreeMap<String, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut values: BTreeMap<String, String> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), b64.encode(&v.0)))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        values.insert(k.clone(), b64.encode(v.as_bytes()));
    }
    values
}

/// The launcher's `spec.json` for `pod`. Pure.
pub fn launch_spec(
    pod: &Pod,
    vmi: &VirtualMachineInstance,
    secrets: BTreeMap<String, BTreeMap<String, String>>,
    settings: &LaunchSettings,
) -> Result<LaunchSpec, serde_json::Error> {
    let (memory_limit_bytes, cpu_limit_millis) = compute_limits(pod);
    Ok(LaunchSpec {
        pod_namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        pod_name: pod.metadata.name.clone().unwrap_or_default(),
        pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        vmi: serde_json::to_value(vmi)?,
        kvm: settings.kvm,
        qemu_binary: settings.qemu_binary.clone(),
        cache_dir: settings.cache_dir.clone(),
        insecure_registries: settings.insecure_registries.clone(),
        allowed_host_disk_dirs: settings.allowed_host_disk_dirs.clone(),
        secrets,
        cgroup_root: settings.cgroup_root.clone(),
        memory_limit_bytes,
        cpu_limit_millis,
    })
}

/// Why a launcher could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("argument or environment of the launcher holds a NUL byte")]
    Nul(#[from] std::ffi::NulError),
    #[error("cannot start the launcher {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot write {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Start the launcher for `dir` in a session of its own; returns its pid (also written to
/// `launcher.pid`).
pub fn spawn_detached(command: &LauncherCommand, dir: &Path) -> Result<u32, SpawnError> {
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| SpawnError::Open { path: log_path.clone(), source })?;
    let null = std::fs::File::open("/dev/null").map_err(|source| SpawnError::Open { path: "/dev/null".into(), source })?;

    let spawn_err = |source| SpawnError::Spawn { program: command.program.clone(), source };
    let mut actions = PosixSpawnFileActions::init().map_err(spawn_err)?;
    actions.add_dup2(null.as_raw_fd(), 0).map_err(spawn_err)?;
    actions.add_dup2(log.as_raw_fd(), 1).map_err(spawn_err)?;
    actions.add_dup2(log.as_raw_fd(), 2).map_err(spawn_err)?;
    let mut attr = PosixSpawnAttr::init().map_err(spawn_err)?;
    // Default dispositions (the agent ignores SIGPIPE, as every Rust program does) and an empty mask.
    attr.set_sigdefault(&SigSet::all()).map_err(spawn_err)?;
    attr.set_sigmask(&SigSet::empty()).map_err(spawn_err)?;
    let setsid = PosixSpawnFlags::from_bits_retain(libc::c_int::from(libc::POSIX_SPAWN_SETSID));
    attr.set_flags(PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | setsid)
        .map_err(spawn_err)?;

    let argv = command
        .argv(dir)
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let env = std::env::vars_os()
        .map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let program = CString::new(command.program.as_os_str().as_bytes())?;
    let pid = posix_spawnp(&program, &actions, &attr, &argv, &env).map_err(spawn_err)?;
    drop((log, null));

    // Reap the child whenever it exits; nothing else in the agent waits for it.
    std::thread::Builder::new()
        .name(format!("reap-launcher-{pid}"))
        .spawn(move || {
            let _ = nix::sys::wait::waitpid(pid, None);
        })
        .map_err(|source| SpawnError::PidFile { path: dir.join(PID_FILE), source })?;

    let pid = pid.as_raw() as u32;
    write_pid_file(dir, pid)?;
    wait_for_command_line(pid);
    Ok(pid)
}

/// The kernel fills in `/proc/<pid>/cmdline` a moment after `posix_spawn` returns. Until then a
/// fresh launcher would look like a dead one, so wait (briefly) until it is visible, or the
/// process has already ended.
fn wait_for_command_line(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        match std::fs::read(format!("/proc/{pid}/cmdline")) {
            Ok(cmdline) if !cmdline.is_empty() => return,
            Err(_) => return,
            Ok(_) => {}
        }
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
            .unwrap_or(true);
        if zombie {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Write `launcher.pid` through a temporary file of the agent's own (the launcher writes the same
/// file through `launcher.tmp`; the two never collide).
fn write_pid_file(dir: &Path, pid: u32) -> Result<(), SpawnError> {
    let path = dir.join(PID_FILE);
    let tmp = dir.join("launcher.pid.agent");
    std::fs::write(&tmp, format!("{pid}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| SpawnError::PidFile { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(resources: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "virt-launcher-a-x", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [{"name": "sidecar", "resources": {"limits": {"memory": "1Gi"}}},
                                    {"name": "compute", "image": "img", "resources": resources}]},
        }))
        .unwrap()
    }

    #[test]
    fn limits_come_from_the_compute_container_limits_then_requests() {
        let p = pod(json!({"requests": {"memory": "300Mi", "cpu": "500m"}, "limits": {"memory": "400Mi"}}));
        assert_eq!(compute_limits(&p), (Some(400 << 20), None), "a CPU request is not a cap");
        assert_eq!(compute_limits(&pod(json!({"requests": {"memory": "300Mi"}}))), (Some(300 << 20), None));
        assert_eq!(compute_limits(&pod(json!({"limits": {"cpu": "2"}}))), (None, Some(2000)));
        assert_eq!(compute_limits(&pod(json!({}))), (None, None));
    }

    #[test]
    fn secrets_referenced_by_cloud_init_are_found_and_encoded() {
        let vmi: VirtualMachineInstance = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"domain": {"devices": {}}, "volumes": [
                {"name": "c", "containerDisk": {"image": "r/i", "imagePullSecret": "pull"}},
                {"name": "ci", "cloudInitNoCloud": {"secretRef": {"name": "ud"}, "networkDataSecretRef": {"name": "nd"}}},
                {"name": "cd", "cloudInitConfigDrive": {"userData": "inline"}},
            ]},
        }))
        .unwrap();
        assert_eq!(referenced_secrets(&vmi).into_iter().collect::<Vec<_>>(), ["nd", "pull", "ud"]);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "ud"}, "data": {"userdata": "I2Nsb3VkLWNvbmZpZw=="}, "stringData": {"extra": "hi"},
        }))
        .unwrap();
        let values = secret_values(&secret);
        assert_eq!(values["userdata"], "I2Nsb3VkLWNvbmZpZw==");
        assert_eq!(values["extra"], "aGk=");
    }

    #[test]
    fn the_spec_carries_the_pod_and_the_node() {
        let settings = LaunchSettings {
            kvm: false,
            qemu_binary: "qemu-system-x86_64".into(),
            cache_dir: "/d/images".into(),
            insecure_registries: vec!["127.0.0.1:5000".into()],
            allowed_host_disk_dirs: vec![],
            cgroup_root: "/sys/fs/cgroup".into(),
        };
        let vmi: VirtualMachineInstance =
            serde_json::from_value(json!({"metadata": {"name": "a"}, "spec": {"domain": {"devices": {}}}})).unwrap();
        let spec = launch_spec(&pod(json!({"limits": {"memory": "1Gi", "cpu": "1"}})), &vmi, BTreeMap::new(), &settings).unwrap();
        assert_eq!((spec.pod_namespace.as_str(), spec.pod_name.as_str(), spec.pod_uid.as_str()), ("ns", "virt-launcher-a-x", "u1"));
        assert_eq!((spec.memory_limit_bytes, spec.cpu_limit_millis), (Some(1 << 30), Some(1000)));
        assert_eq!(spec.vmi["kind"], "VirtualMachineInstance");
        assert!(!spec.kvm);
        assert_eq!(spec.cache_dir, PathBuf::from("/d/images"));
    }

    #[test]
    fn argv_ends_with_the_folder() {
        let c = LauncherCommand { program: "/usr/bin/ferrovirt".into(), args: vec!["launcher".into()] };
        let argv = c.argv(Path::new("/data/pods/u1"));
        assert_eq!(argv, ["/usr/bin/ferrovirt", "launcher", "--dir", "/data/pods/u1"].map(OsString::from));
    }
}
