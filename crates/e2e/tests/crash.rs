//! Crash safety of the `ferrovirt apiserver` process, on the embedded store and on a real etcd.
//!
//! Several tasks write VirtualMachines concurrently through kube-rs, recording each write the
//! server acknowledged. The server is then killed with SIGKILL, either right after the last
//! acknowledgement or while writes are still in flight, and started again on the same data
//! directory (or the same etcd). Then:
//!
//! * every acknowledged create is there, with the uid, resourceVersion and spec it was
//!   acknowledged with; every acknowledged label update is there;
//! * a write that was in flight is either there, whole, or absent; nothing else is there;
//! * every object decodes, listed page by page and read one by one;
//! * the server takes new writes, at resourceVersions above every acknowledged one.
//!
//! ```text
//!   tasks ──create/patch──▶ apiserver ──▶ store        acked: BTreeMap<name, what the server said>
//!                               ▲
//!   test ──kill -9 (by PID)─────┘ ──restart──▶ list + get ──▶ compare with acked
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovirt_e2e::{json_subset, ApiServerProcess};
use ferrovirt_store::testing::EtcdProcess;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

/// Concurrent writers.
const TASKS: usize = 8;
/// VMs created in the "right after the last acknowledgement" scenario.
const VMS: usize = 200;
/// Label update rounds (each one patches every VM) in that scenario.
const UPDATE_ROUNDS: u64 = 2;
/// In the "mid-burst" scenario: names the writers may create, and acknowledged creates after
/// which the server is killed.
const BURST_NAMES: usize = 400;
const KILL_AFTER_CREATES: usize = 120;
/// In the "mid-burst" scenario: acknowledged label updates after which the server is killed.
const KILL_AFTER_UPDATES: usize = 150;
/// The longest a burst may run before the test gives up on reaching its kill point.
const BURST_TIMEOUT: Duration = Duration::from_secs(60);

const LABEL_GENERATION: &str = "e2e.ferrovirt.io/generation";

#[derive(Clone, Copy, Debug)]
enum Backend {
    Embedded,
    Etcd,
}

mod embedded_store {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn acknowledged_writes_survive_kill9_right_after_the_last_ack() {
        kill_after_the_last_ack(Backend::Embedded).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn acknowledged_writes_survive_kill9_in_the_middle_of_a_burst() {
        kill_in_the_middle_of_a_burst(Backend::Embedded).await;
    }
}

mod etcd_store {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn acknowledged_writes_survive_kill9_right_after_the_last_ack() {
        kill_after_the_last_ack(Backend::Etcd).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn acknowledged_writes_survive_kill9_in_the_middle_of_a_burst() {
        kill_in_the_middle_of_a_burst(Backend::Etcd).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// Every write is acknowledged, then the server is killed at once.
async fn kill_after_the_last_ack(backend: Backend) {
    let mut cluster = Cluster::start(backend);
    let api = cluster.vms().await;

    let names: Vec<String> = (0..VMS).map(|i| format!("vm-{i:04}")).collect();
    let burst = create_burst(&api, names.clone(), Arc::new(AtomicUsize::new(0))).await;
    assert!(
        burst.in_flight.is_empty(),
        "creates failed while the server was up: {:?}\nserver log:\n{}",
        burst.errors,
        cluster.server.log_tail(30)
    );
    assert_eq!(burst.acked.len(), VMS);
    cluster.kill9_and_restart();

    let api = cluster.vms().await;
    let present = check_creates(&api, &burst).await;
    assert_eq!(
        present.len(),
        VMS,
        "objects after restart: {:?}",
        present.keys().collect::<Vec<_>>()
    );

    let targets: BTreeMap<String, Acked> = burst.acked.clone();
    let updates = update_burst(&api, &targets, UPDATE_ROUNDS, Arc::new(AtomicUsize::new(0))).await;
    let failed: Vec<&UpdateState> = updates.values().filter(|u| u.in_flight.is_some()).collect();
    assert!(
        failed.is_empty(),
        "updates failed while the server was up: {failed:?}"
    );
    cluster.kill9_and_restart();

    let api = cluster.vms().await;
    let present = check_updates(&api, &updates).await;
    for (name, object) in &present {
        assert_eq!(
            generation_label(object),
            UPDATE_ROUNDS,
            "{name}: the last acknowledged update is lost"
        );
    }
    let highest = highest_acked_revision(&burst, &updates);
    check_new_writes(&api, highest).await;
}

/// The server is killed while writes are in flight.
async fn kill_in_the_middle_of_a_burst(backend: Backend) {
    let mut cluster = Cluster::start(backend);
    let api = cluster.vms().await;

    // Creates: kill once enough are acknowledged, while the writers keep going.
    let names: Vec<String> = (0..BURST_NAMES).map(|i| format!("burst-{i:04}")).collect();
    let acks = Arc::new(AtomicUsize::new(0));
    let creating = tokio::spawn(create_burst_owned(api.clone(), names, Arc::clone(&acks)));
    wait_for_acks(&acks, KILL_AFTER_CREATES, &creating, "creates").await;
    cluster.kill9();
    let burst = creating.await.expect("the create tasks panicked");
    assert!(
        !burst.in_flight.is_empty(),
        "every create finished before the kill: the burst was too short to test writes in flight"
    );
    cluster.restart();

    let api = cluster.vms().await;
    let present = check_creates(&api, &burst).await;
    println!(
        "{backend:?}: {} creates acknowledged, {} in flight at the kill, {} of those stored",
        burst.acked.len(),
        burst.in_flight.len(),
        present.len() - burst.acked.len()
    );

    // Label updates on everything that is there: kill in the middle again.
    let targets: BTreeMap<String, Acked> = present
        .iter()
        .map(|(name, object)| (name.clone(), Acked::from_object(object)))
        .collect();
    let acks = Arc::new(AtomicUsize::new(0));
    let updating = tokio::spawn(update_burst_owned(
        api.clone(),
        targets,
        1_000,
        Arc::clone(&acks),
    ));
    wait_for_acks(&acks, KILL_AFTER_UPDATES, &updating, "updates").await;
    cluster.kill9();
    let updates = updating.await.expect("the update tasks panicked");
    let interrupted = updates.values().filter(|u| u.in_flight.is_some()).count();
    assert!(interrupted > 0, "no update was in flight at the kill");
    cluster.restart();

    let api = cluster.vms().await;
    let present = check_updates(&api, &updates).await;
    let applied = updates
        .iter()
        .filter(|(name, u)| {
            u.in_flight.is_some() && u.in_flight == Some(generation_label(&present[*name]))
        })
        .count();
    println!(
        "{backend:?}: {} label updates acknowledged, {interrupted} in flight at the kill, {applied} of those stored",
        acks.load(Ordering::SeqCst)
    );
    let highest = highest_acked_revision(&burst, &updates);
    check_new_writes(&api, highest).await;
}

// ---------------------------------------------------------------------------------------------
// The cluster: an API server, on its own etcd or on the embedded store

struct Cluster {
    // Dropped in this order: the server first, then etcd, then the folder.
    server: ApiServerProcess,
    _etcd: Option<EtcdProcess>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(backend: Backend) -> Cluster {
        tokio::task::block_in_place(|| {
            let dir = tempfile::tempdir().expect("temporary folder");
            let etcd = match backend {
                Backend::Embedded => None,
                Backend::Etcd => {
                    Some(EtcdProcess::start().unwrap_or_else(|e| panic!("cannot start etcd: {e}")))
                }
            };
            let server = ApiServerProcess::start(
                dir.path().join("data"),
                etcd.as_ref().map(EtcdProcess::endpoints),
            )
            .unwrap_or_else(|e| panic!("cannot start the API server on {backend:?}: {e:#}"));
            Cluster {
                server,
                _etcd: etcd,
                _dir: dir,
            }
        })
    }

    fn kill9(&mut self) {
        let pid = self.server.pid();
        tokio::task::block_in_place(|| self.server.kill9());
        assert!(
            !self.server.is_running(),
            "the API server (pid {pid:?}) still runs after kill -9"
        );
    }

    fn restart(&mut self) {
        tokio::task::block_in_place(|| self.server.restart())
            .unwrap_or_else(|e| panic!("the API server does not start again after kill -9: {e:#}"));
    }

    fn kill9_and_restart(&mut self) {
        self.kill9();
        self.restart();
    }

    /// VirtualMachines in `default`, through a fresh client (no connection of the killed server
    /// is reused). kube-rs' retries are off, so every error is reported as it happened.
    async fn vms(&self) -> Api<DynamicObject> {
        let mut config = self
            .server
            .kube_config()
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        config.default_retry = false;
        config.connect_timeout = Some(Duration::from_secs(5));
        config.read_timeout = Some(Duration::from_secs(20));
        let client = kube::Client::try_from(config).expect("kube client");
        Api::namespaced_with(client, "default", &vm_resource())
    }
}

fn vm_resource() -> ApiResource {
    ApiResource {
        group: "kubevirt.io".into(),
        version: "v1".into(),
        api_version: "kubevirt.io/v1".into(),
        kind: "VirtualMachine".into(),
        plural: "virtualmachines".into(),
    }
}

/// The VM a writer creates under `name`: a small KubeVirt-style VM, halted.
fn vm_manifest(name: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "labels": {"e2e.ferrovirt.io/name": name}},
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": {"labels": {"kubevirt.io/domain": name}},
                "spec": {
                    "domain": {
                        "devices": {"disks": [{"name": "containerdisk", "disk": {"bus": "virtio"}}]},
                        "resources": {"requests": {"memory": "64M"}}
                    },
                    "volumes": [{
                        "name": "containerdisk",
                        "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}
                    }]
                }
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Writers

/// What the server acknowledged for one object.
#[derive(Clone, Debug)]
struct Acked {
    uid: String,
    resource_version: u64,
    spec: Value,
}

impl Acked {
    fn from_object(object: &DynamicObject) -> Acked {
        Acked {
            uid: object.metadata.uid.clone().unwrap_or_default(),
            resource_version: revision(object),
            spec: object.data["spec"].clone(),
        }
    }
}

/// The outcome of a burst of creates.
#[derive(Debug, Default)]
struct CreateBurst {
    /// Acknowledged creates.
    acked: BTreeMap<String, Acked>,
    /// Creates sent without an answer (they may or may not have been stored).
    in_flight: BTreeSet<String>,
    /// The errors that ended writers.
    errors: Vec<String>,
}

async fn create_burst_owned(
    api: Api<DynamicObject>,
    names: Vec<String>,
    acks: Arc<AtomicUsize>,
) -> CreateBurst {
    create_burst(&api, names, acks).await
}

/// Create `names` from [`TASKS`] concurrent writers (writer `t` creates names `t`, `t + TASKS`, ...).
/// A writer stops at its first error. `acks` counts acknowledged creates as they come.
async fn create_burst(
    api: &Api<DynamicObject>,
    names: Vec<String>,
    acks: Arc<AtomicUsize>,
) -> CreateBurst {
    let mut writers = Vec::new();
    for t in 0..TASKS {
        let api = api.clone();
        let acks = Arc::clone(&acks);
        let mine: Vec<String> = names.iter().skip(t).step_by(TASKS).cloned().collect();
        writers.push(tokio::spawn(async move {
            let mut burst = CreateBurst::default();
            for name in mine {
                let object: DynamicObject =
                    serde_json::from_value(vm_manifest(&name)).expect("manifest");
                match api.create(&PostParams::default(), &object).await {
                    Ok(created) => {
                        assert_eq!(created.metadata.name.as_deref(), Some(name.as_str()));
                        burst.acked.insert(name, Acked::from_object(&created));
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        burst.errors.push(format!("create {name}: {e}"));
                        burst.in_flight.insert(name);
                        break;
                    }
                }
            }
            burst
        }));
    }
    let mut all = CreateBurst::default();
    for writer in writers {
        let burst = writer.await.expect("a create task panicked");
        all.acked.extend(burst.acked);
        all.in_flight.extend(burst.in_flight);
        all.errors.extend(burst.errors);
    }
    all
}

/// One object's label updates.
#[derive(Clone, Debug)]
struct UpdateState {
    uid: String,
    /// The last acknowledged generation label (0: never updated) and its resourceVersion.
    acked: u64,
    acked_revision: u64,
    /// The generation of an update sent without an answer.
    in_flight: Option<u64>,
}

async fn update_burst_owned(
    api: Api<DynamicObject>,
    targets: BTreeMap<String, Acked>,
    rounds: u64,
    acks: Arc<AtomicUsize>,
) -> BTreeMap<String, UpdateState> {
    update_burst(&api, &targets, rounds, acks).await
}

/// Set the generation label of every target to 1, 2, ... `rounds` with JSON merge patches, from
/// [`TASKS`] writers each owning a share of the targets (so an object's updates are ordered).
/// A writer stops at its first error.
async fn update_burst(
    api: &Api<DynamicObject>,
    targets: &BTreeMap<String, Acked>,
    rounds: u64,
    acks: Arc<AtomicUsize>,
) -> BTreeMap<String, UpdateState> {
    let all: Vec<(String, Acked)> = targets
        .iter()
        .map(|(n, a)| (n.clone(), a.clone()))
        .collect();
    let mut writers = Vec::new();
    for t in 0..TASKS {
        let api = api.clone();
        let acks = Arc::clone(&acks);
        let mine: Vec<(String, Acked)> = all.iter().skip(t).step_by(TASKS).cloned().collect();
        writers.push(tokio::spawn(async move {
            let mut states: BTreeMap<String, UpdateState> = mine
                .iter()
                .map(|(name, acked)| {
                    let state = UpdateState {
                        uid: acked.uid.clone(),
                        acked: 0,
                        acked_revision: acked.resource_version,
                        in_flight: None,
                    };
                    (name.clone(), state)
                })
                .collect();
            'rounds: for generation in 1..=rounds {
                for (name, _) in &mine {
                    let state = states.get_mut(name).expect("own target");
                    state.in_flight = Some(generation);
                    let patch =
                        json!({"metadata": {"labels": {LABEL_GENERATION: generation.to_string()}}});
                    match api
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(patched) => {
                            assert_eq!(
                                generation_label(&patched),
                                generation,
                                "{name}: the patch response"
                            );
                            state.acked = generation;
                            state.acked_revision = revision(&patched);
                            state.in_flight = None;
                            acks.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => break 'rounds,
                    }
                }
            }
            states
        }));
    }
    let mut states = BTreeMap::new();
    for writer in writers {
        states.extend(writer.await.expect("an update task panicked"));
    }
    states
}

/// Wait until `acks` reaches `target`; fail if the writers end first or it takes too long.
async fn wait_for_acks<T>(
    acks: &AtomicUsize,
    target: usize,
    writers: &tokio::task::JoinHandle<T>,
    what: &str,
) {
    let deadline = Instant::now() + BURST_TIMEOUT;
    while acks.load(Ordering::SeqCst) < target {
        assert!(
            !writers.is_finished(),
            "the {what} ended after {} acknowledgements, before the kill point {target}",
            acks.load(Ordering::SeqCst)
        );
        assert!(
            Instant::now() < deadline,
            "only {} {what} acknowledged within {BURST_TIMEOUT:?}",
            acks.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Checks after a restart

/// Every VM, listed in small pages (so the continue token is used too), and each read again by
/// name. Panics if any fails to list, read or decode.
async fn list_all(api: &Api<DynamicObject>) -> BTreeMap<String, DynamicObject> {
    let mut objects = BTreeMap::new();
    let mut params = ListParams::default().limit(37);
    loop {
        let page = api
            .list(&params)
            .await
            .unwrap_or_else(|e| panic!("listing VMs after the restart: {e}"));
        let list_revision = page.metadata.resource_version.clone().unwrap_or_default();
        assert!(
            !list_revision.is_empty(),
            "a list without metadata.resourceVersion"
        );
        for object in page.items {
            let name = object
                .metadata
                .name
                .clone()
                .expect("a listed VM without a name");
            assert!(
                objects.insert(name.clone(), object).is_none(),
                "{name} listed twice"
            );
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = ListParams::default().limit(37).continue_token(&token),
            None => break,
        }
    }
    for (name, listed) in &objects {
        let read = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading {name} after the restart: {e}"));
        assert_eq!(
            read.metadata.uid, listed.metadata.uid,
            "{name}: get and list disagree"
        );
        assert_eq!(
            read.metadata.resource_version, listed.metadata.resource_version,
            "{name}: get and list disagree"
        );
        let types = read
            .types
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no apiVersion/kind"));
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("kubevirt.io/v1", "VirtualMachine")
        );
        assert!(
            read.data["spec"].is_object(),
            "{name} has no spec: {:?}",
            read.data
        );
    }
    objects
}

/// Every acknowledged create is there as acknowledged; every other object is a create that was
/// in flight, stored whole. Returns what is there.
async fn check_creates(
    api: &Api<DynamicObject>,
    burst: &CreateBurst,
) -> BTreeMap<String, DynamicObject> {
    let present = list_all(api).await;
    for (name, acked) in &burst.acked {
        let object = present.get(name).unwrap_or_else(|| {
            panic!(
                "{name} was acknowledged (resourceVersion {}) but is gone after kill -9",
                acked.resource_version
            )
        });
        assert_eq!(
            object.metadata.uid.as_deref(),
            Some(acked.uid.as_str()),
            "{name}: another uid"
        );
        assert_eq!(
            revision(object),
            acked.resource_version,
            "{name}: another resourceVersion"
        );
        assert_eq!(
            object.data["spec"], acked.spec,
            "{name}: the spec differs from the acknowledged one"
        );
    }
    for (name, object) in &present {
        if burst.acked.contains_key(name) {
            continue;
        }
        assert!(
            burst.in_flight.contains(name),
            "{name} is stored but was never sent"
        );
        let sent = vm_manifest(name);
        if let Err(difference) = json_subset(&sent["spec"], &object.data["spec"]) {
            panic!("{name} (in flight at the kill) is stored, but not as sent: {difference}");
        }
        assert_eq!(
            object
                .labels()
                .get("e2e.ferrovirt.io/name")
                .map(String::as_str),
            Some(name.as_str())
        );
    }
    present
}

/// Every object is there with its uid, and its generation label is the last acknowledged one,
/// or the one in flight at the kill. Returns what is there.
async fn check_updates(
    api: &Api<DynamicObject>,
    updates: &BTreeMap<String, UpdateState>,
) -> BTreeMap<String, DynamicObject> {
    let present = list_all(api).await;
    assert_eq!(
        present.keys().collect::<BTreeSet<_>>(),
        updates.keys().collect::<BTreeSet<_>>(),
        "label updates changed which objects exist"
    );
    for (name, state) in updates {
        let object = &present[name];
        assert_eq!(
            object.metadata.uid.as_deref(),
            Some(state.uid.as_str()),
            "{name}: another uid"
        );
        let stored = generation_label(object);
        assert!(
            stored == state.acked || Some(stored) == state.in_flight,
            "{name}: generation label {stored} after kill -9; acknowledged {}, in flight {:?}",
            state.acked,
            state.in_flight
        );
        assert!(
            revision(object) >= state.acked_revision,
            "{name}: resourceVersion {} went below the acknowledged {}",
            revision(object),
            state.acked_revision
        );
    }
    present
}

/// After the restart the server takes writes, at resourceVersions above every acknowledged one.
async fn check_new_writes(api: &Api<DynamicObject>, highest_acked: u64) {
    let object: DynamicObject =
        serde_json::from_value(vm_manifest("after-restart")).expect("manifest");
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create after the restart: {e}"));
    assert!(
        revision(&created) > highest_acked,
        "resourceVersion {} after the restart is not above the highest acknowledged {highest_acked}",
        revision(&created)
    );
    let read = api
        .get("after-restart")
        .await
        .unwrap_or_else(|e| panic!("get after the restart: {e}"));
    assert_eq!(read.metadata.uid, created.metadata.uid);
}

fn highest_acked_revision(burst: &CreateBurst, updates: &BTreeMap<String, UpdateState>) -> u64 {
    let creates = burst.acked.values().map(|a| a.resource_version);
    let updates = updates.values().map(|u| u.acked_revision);
    creates.chain(updates).max().unwrap_or(0)
}

/// An object's resourceVersion as the store revision it is.
fn revision(object: &DynamicObject) -> u64 {
    let rv = object
        .metadata
        .resource_version
        .as_deref()
        .unwrap_or_default();
    rv.parse().unwrap_or_else(|_| {
        panic!(
            "resourceVersion {rv:?} of {:?} is not a revision",
            object.metadata.name
        )
    })
}

/// The generation label (0 when absent).
fn generation_label(object: &DynamicObject) -> u64 {
    match object.labels().get(LABEL_GENERATION) {
        None => 0,
        Some(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{LABEL_GENERATION}={value:?} is not a number")),
    }
}
