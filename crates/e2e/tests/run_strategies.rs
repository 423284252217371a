//! KubeVirt's run strategies with real guests: what happens when the guest shuts itself down (the
//! test types `poweroff` on its serial console) and when QEMU crashes (the test kills it with
//! SIGKILL), one VM per case, all in one `ferrovirt up`:
//!
//! | case            | strategy       | the guest ...          | expected                                           |
//! |-----------------|----------------|------------------------|----------------------------------------------------|
//! | always          | Always         | powers off from inside | VMI Succeeded, a new VMI (other uid) runs          |
//! | rerun-shutdown  | RerunOnFailure | powers off from inside | VMI Succeeded, nothing new for 20 s, VM Stopped    |
//! | once            | Once           | powers off from inside | VMI Succeeded, nothing new for 20 s, VM Stopped    |
//! | manual          | Manual         | powers off from inside | as above; then `start` brings a new VMI up (nothing starts on create: `start` boots it first) |
//! | rerun-crash     | RerunOnFailure | QEMU is killed (-9)    | VMI Failed, a new VMI (other uid) runs             |
//!
//! The cases run concurrently, but at most two guests boot at a time (2 cores, TCG): a case takes a
//! boot slot before anything that makes a guest boot and gives it back once the boot marker shows.
//! A watch records every VMI change, so a VMI that is Succeeded or Failed only for a moment before
//! the controller replaces it is still seen.

mod real_vm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use tokio::sync::Semaphore;

use ferrovirt_api::kubevirt::{VirtualMachine, VirtualMachineInstance};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_e2e::up::UpProcess;
use ferrovirt_launcher::spec::LauncherPhase;
use k8s_openapi::api::core::v1::Pod;

use real_vm::*;

const NODE: &str = "node1";
/// How long a VM that should stay down is watched for a new VMI.
const STAYS_DOWN: Duration = Duration::from_secs(20);

/// What every case shares.
struct Cluster {
    client: kube::Client,
    vms: Api<VirtualMachine>,
    vmis: Api<VirtualMachineInstance>,
    pods: Api<Pod>,
    pods_dir: PathBuf,
    log_path: PathBuf,
    image: String,
    history: VmiHistory,
    /// At most two guests boot at once.
    boot_slots: Semaphore,
}

impl Cluster {
    /// The end of `ferrovirt up`'s log and what the watch saw of `vm`'s VMIs.
    fn logs(&self, vm: &str) -> String {
        format!(
            "--- VMIs of {vm} seen on the watch ---\n{}\n--- ferrovirt up log (last 60 lines) ---\n{}",
            self.history.describe(vm),
            file_tail(&self.log_path, 60)
        )
    }

    /// Create VM `name` with `strategy` and wait until its guest has booted: (VMI uid, pod folder).
    async fn create_and_boot(&self, name: &str, strategy: &str) -> (String, PathBuf) {
        let _slot = self.boot_slots.acquire().await.unwrap();
        self.vms.create(&PostParams::default(), &vm_manifest(name, &self.image, strategy)).await.unwrap();
        self.next_boot(name, None).await
    }

    /// Wait until a VMI named `name` other than `old_uid` runs and its guest has booted.
    async fn next_boot(&self, name: &str, old_uid: Option<&str>) -> (String, PathBuf) {
        let logs = || self.logs(name);
        let t = Instant::now();
        let (uid, dir) = running_vmi(&self.vmis, &self.pods, &self.pods_dir, NODE, name, old_uid, &logs).await;
        let running = t.elapsed();
        console_shows(&dir, BOOT_MARKER, BOOT_SECS, &logs).await;
        eprintln!(
            "{name}: VMI {uid} Running after {:.1}s, guest booted after {:.1}s",
            running.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
        (uid, dir)
    }

    /// Power the guest in `dir` off from inside and check the launcher saw a guest shutdown.
    async fn poweroff(&self, name: &str, dir: &Path) {
        let logs = || self.logs(name);
        let qemu = qemu_pid(dir);
        let state = poweroff_from_inside(dir, 120, &logs).await;
        if let Some(state) = state {
            assert_eq!(
                (state.phase, state.reason.as_str()),
                (LauncherPhase::Succeeded, "GuestShutdown"),
                "{name}: the launcher saw the guest shut itself down: {state:?}"
            );
        }
        eventually(60, &format!("{name}: QEMU {qemu} to exit"), &logs, || async { (!alive(qemu)).then_some(()) }).await;
    }

    /// Wait until the watch has seen VMI `uid` in `phase`.
    async fn saw_phase(&self, name: &str, uid: &str, phase: &str) {
        let logs = || self.logs(name);
        eventually(60, &format!("{name}: VMI {uid} to be seen {phase}"), &logs, || async {
            self.history.saw_phase(uid, phase).then_some(())
        })
        .await;
    }

    /// Wait until VM `name` says `status`.
    async fn vm_says(&self, name: &str, status: &str) {
        let logs = || self.logs(name);
        eventually(60, &format!("VM {name} to say {status}"), &logs, || async {
            let vm = self.vms.get(name).await.ok()?;
            (printable_status(&vm) == status).then_some(())
        })
        .await;
    }

    /// For [`STAYS_DOWN`]: no VMI other than `uid` appears for `name`, the one there is (if any) is
    /// `uid` in a final phase, and the VM says Stopped.
    async fn stays_down(&self, name: &str, uid: &str) {
        let until = tokio::time::Instant::now() + STAYS_DOWN;
        while tokio::time::Instant::now() < until {
            let uids = self.history.uids(name);
            assert_eq!(uids, vec![uid.to_string()], "{name}: no new VMI after the guest shut down\n{}", self.logs(name));
            if let Some(vmi) = self.vmis.get_opt(name).await.unwrap() {
                assert_eq!(vmi.metadata.uid.as_deref(), Some(uid), "{name}: no new VMI\n{}", self.logs(name));
                assert_eq!(phase_of(&vmi), "Succeeded", "{name}: the VMI stays Succeeded\n{}", self.logs(name));
            }
            let vm = self.vms.get(name).await.unwrap();
            assert_eq!(printable_status(&vm), "Stopped", "{name}: the VM stays Stopped\n{}", self.logs(name));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Always: a guest-initiated shutdown is followed by a new VMI.
async fn always(c: Arc<Cluster>) {
    let name = "always";
    let (uid1, dir1) = c.create_and_boot(name, "Always").await;
    let slot = c.boot_slots.acquire().await.unwrap();
    c.poweroff(name, &dir1).await;
    let (uid2, dir2) = c.next_boot(name, Some(&uid1)).await;
    drop(slot);
    assert_ne!(dir1, dir2, "the new VMI has a new launcher Pod");
    c.saw_phase(name, &uid1, "Succeeded").await;
    assert!(!c.history.saw_phase(&uid1, "Failed"), "a guest shutdown is no failure\n{}", c.logs(name));
    assert_eq!(c.history.uids(name), vec![uid1, uid2], "exactly one new VMI\n{}", c.logs(name));
    c.vm_says(name, "Running").await;
}

/// RerunOnFailure: a guest-initiated shutdown stays down.
async fn rerun_on_failure_shutdown(c: Arc<Cluster>) {
    let name = "rerun-shutdown";
    let (uid1, dir1) = c.create_and_boot(name, "RerunOnFailure").await;
    c.poweroff(name, &dir1).await;
    c.saw_phase(name, &uid1, "Succeeded").await;
    c.vm_says(name, "Stopped").await;
    c.stays_down(name, &uid1).await;
    assert!(!c.history.saw_phase(&uid1, "Failed"), "a guest shutdown is no failure\n{}", c.logs(name));
}

/// Once: a guest-initiated shutdown stays down.
async fn once(c: Arc<Cluster>) {
    let name = "once";
    let (uid1, dir1) = c.create_and_boot(name, "Once").await;
    c.poweroff(name, &dir1).await;
    c.saw_phase(name, &uid1, "Succeeded").await;
    c.vm_says(name, "Stopped").await;
    c.stays_down(name, &uid1).await;
}

/// Manual: a guest-initiated shutdown stays down; the start subresource brings the VM back.
async fn manual(c: Arc<Cluster>) {
    let name = "manual";
    let logs = || c.logs(name);
    c.vms.create(&PostParams::default(), &vm_manifest(name, &c.image, "Manual")).await.unwrap();
    // Manual: the system starts nothing by itself, not even on creation.
    c.vm_says(name, "Stopped").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.history.uids(name), Vec::<String>::new(), "a new Manual VM does not start by itself\n{}", logs());
    let (uid1, dir1) = {
        let _slot = c.boot_slots.acquire().await.unwrap();
        let (code, body) = vm_subresource(&c.client, name, "start").await;
        assert!(code.is_success(), "start of the new Manual VM {name}: {code} {body}\n{}", logs());
        c.next_boot(name, None).await
    };
    c.poweroff(name, &dir1).await;
    c.saw_phase(name, &uid1, "Succeeded").await;
    c.vm_says(name, "Stopped").await;
    c.stays_down(name, &uid1).await;

    let slot = c.boot_slots.acquire().await.unwrap();
    let (code, body) = vm_subresource(&c.client, name, "start").await;
    assert!(code.is_success(), "start of the stopped Manual VM {name}: {code} {body}\n{}", c.logs(name));
    let (uid2, _dir2) = c.next_boot(name, Some(&uid1)).await;
    drop(slot);
    assert_eq!(c.history.uids(name), vec![uid1, uid2], "exactly one new VMI\n{}", logs());
    c.vm_says(name, "Running").await;
    let vm = c.vms.get(name).await.unwrap();
    assert_eq!(
        vm.spec.run_strategy.map(|s| format!("{s:?}")).as_deref(),
        Some("Manual"),
        "start keeps the Manual strategy"
    );
}

/// RerunOnFailure: a crash of QEMU is followed by a new VMI.
async fn rerun_on_failure_crash(c: Arc<Cluster>) {
    let name = "rerun-crash";
    let (uid1, dir1) = c.create_and_boot(name, "RerunOnFailure").await;
    let qemu = qemu_pid(&dir1);
    let cmd = cmdline(qemu);
    assert!(cmd.contains(dir1.to_str().unwrap()), "pid {qemu} from state.json is this VM's QEMU: {cmd:?}");
    assert!(cmd.contains("qemu"), "pid {qemu} from state.json is a QEMU: {cmd:?}");
    let slot = c.boot_slots.acquire().await.unwrap();
    kill9(qemu);
    let (uid2, dir2) = c.next_boot(name, Some(&uid1)).await;
    drop(slot);
    assert_ne!(dir1, dir2, "the new VMI has a new launcher Pod");
    c.saw_phase(name, &uid1, "Failed").await;
    assert!(!c.history.saw_phase(&uid1, "Succeeded"), "a crash is no success\n{}", c.logs(name));
    assert_eq!(c.history.uids(name), vec![uid1, uid2], "exactly one new VMI\n{}", c.logs(name));
    c.vm_says(name, "Running").await;
    let vm = c.vms.get(name).await.unwrap();
    assert_eq!(vm.spec.run_strategy.map(|s| format!("{s:?}")).as_deref(), Some("RerunOnFailure"));
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_shutdown_and_crash_under_each_run_strategy() {
    let started = Instant::now();
    let registry = RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    let image = push_guest(&registry).await;
    let tmp = tempfile::tempdir().unwrap();
    let up = UpProcess::start(tmp.path(), NODE).unwrap();
    let client = up.client().await.unwrap();
    let vmis: Api<VirtualMachineInstance> = Api::namespaced(client.clone(), "default");
    let cluster = Arc::new(Cluster {
        vms: Api::namespaced(client.clone(), "default"),
        pods: Api::namespaced(client.clone(), "default"),
        history: VmiHistory::start(vmis.clone()),
        vmis,
        client,
        pods_dir: up.pods_dir(),
        log_path: tmp.path().join("up.log"),
        image,
        boot_slots: Semaphore::new(2),
    });

    type Case = fn(Arc<Cluster>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;
    let cases: [(&str, Case); 5] = [
        ("Always: guest shutdown -> new VMI", |c| Box::pin(always(c))),
        ("RerunOnFailure: QEMU crash -> new VMI", |c| Box::pin(rerun_on_failure_crash(c))),
        ("RerunOnFailure: guest shutdown -> stays down", |c| Box::pin(rerun_on_failure_shutdown(c))),
        ("Once: guest shutdown -> stays down", |c| Box::pin(once(c))),
        ("Manual: guest shutdown -> stays down, start -> new VMI", |c| Box::pin(manual(c))),
    ];
    let mut running = Vec::new();
    for (what, case) in cases {
        let c = Arc::clone(&cluster);
        running.push((
            what,
            tokio::spawn(async move {
                let t = Instant::now();
                case(c).await;
                t.elapsed()
            }),
        ));
    }
    let mut failures = Vec::new();
    for (what, task) in running {
        match task.await {
            Ok(took) => eprintln!("ok      {what} ({:.1}s)", took.as_secs_f64()),
            Err(e) => {
                eprintln!("FAILED  {what}");
                failures.push(format!("=== {what} ===\n{}", panic_text(e)));
            }
        }
    }
    drop(cluster);
    drop(up);
    let left = processes_of(tmp.path());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    eprintln!("run strategies: {:.1}s in all", started.elapsed().as_secs_f64());
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n\n"));
}
