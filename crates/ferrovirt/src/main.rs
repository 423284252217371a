//! `ferrovirt`: the server side of ferrovirt, one subcommand per component.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ferrovirt", version, about = "Run virtual machines as Kubernetes-style API objects")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Kubernetes-compatible API (embedded store by default, etcd with --etcd).
    Apiserver(ApiserverArgs),
    /// Run one VM from a launcher Pod's folder (started by the node agent).
    Launcher(LauncherArgs),
    /// Run the controllers: VirtualMachine -> VirtualMachineInstance -> launcher Pod, and node
    /// lifecycle (NotReady nodes, their VMIs failed once the node has fenced them).
    Controller(ControllerArgs),
    /// Bind launcher Pods to Nodes.
    Scheduler(SchedulerArgs),
    /// Run a node: register it, run one launcher per VM placed on it.
    Node(NodeArgs),
    /// Everything on this machine in one command: API server (embedded store), controller,
    /// scheduler and one node.
    Up(UpArgs),
}

#[derive(Parser)]
struct NodeOptions {
    /// Registries (host or host:port) pulled over plain HTTP although not on loopback.
    #[arg(long = "insecure-registry")]
    insecure_registries: Vec<String>,
    /// Folders hostDisk volumes may use.
    #[arg(long = "allow-host-disk-dir")]
    allowed_host_disk_dirs: Vec<PathBuf>,
    /// Hardware acceleration: auto (probe whether KVM really runs a guest), on, off.
    #[arg(long, default_value = "auto", value_parser = ["auto", "on", "off"])]
    kvm: String,
    /// QEMU binary.
    #[arg(long, default_value = "qemu-system-x86_64")]
    qemu: PathBuf,
    /// Port of the endpoint the API server reaches for pause, console and VNC (0: a free port;
    /// the Node publishes it).
    #[arg(long, default_value_t = 0)]
    endpoint_port: u16,
    /// Kill every guest of this node when its Lease could not be renewed for this long, so that a
    /// node cut off from the control plane never runs a VM restarted elsewhere (0: never).
    #[arg(long, default_value_t = 40)]
    fence_after_seconds: u64,
}

#[derive(Parser)]
struct NodeArgs {
    /// This node's name.
    #[arg(long)]
    name: String,
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// This node's own folder (launcher folders, image cache).
    #[arg(long)]
    data_dir: PathBuf,
    /// The address other machines reach this node on.
    #[arg(long, default_value = "127.0.0.1")]
    address: String,
    #[command(flatten)]
    node: NodeOptions,
}

#[derive(Parser)]
struct UpArgs {
    /// Folder for everything (default: $XDG_DATA_HOME/ferrovirt or ~/.local/share/ferrovirt).
    #[arg(long, env = "FERROVIRT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// API address; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Keep objects in etcd instead of the embedded store.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// The local node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    #[command(flatten)]
    node: NodeOptions,
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("ferrovirt")
}

fn node_config(name: String, kube: kube::Config, data_dir: PathBuf, address: String, o: NodeOptions) -> anyhow::Result<ferrovirt_node::NodeConfig> {
    let launcher = ferrovirt_node::launch::LauncherCommand::current_exe()?;
    let ip: std::net::IpAddr =
        address.parse().map_err(|_| anyhow::anyhow!("--address {address:?} is not an IP address the node endpoint can listen on"))?;
    // Callers of the endpoint must show a client certificate from the cluster's CA, the one the
    // kubeconfig trusts.
    let client_ca = kube.root_cert.clone().unwrap_or_default();
    anyhow::ensure!(!client_ca.is_empty(), "the kubeconfig names no certificate authority; the node endpoint needs the cluster's CA");
    let client = kube::Client::try_from(kube)?;
    let mut c = ferrovirt_node::NodeConfig::new(name, client, data_dir, launcher);
    c.endpoint = Some(ferrovirt_node::endpoint::EndpointSettings { listen: SocketAddr::new(ip, o.endpoint_port), client_ca });
    c.fence_after = (o.fence_after_seconds > 0).then(|| Duration::from_secs(o.fence_after_seconds));
    c.address = address;
    c.qemu_binary = o.qemu;
    c.insecure_registries = o.insecure_registries;
    c.allowed_host_disk_dirs = o.allowed_host_disk_dirs;
    c.kvm = match o.kvm.as_str() {
        "on" => Some(true),
        "off" => Some(false),
        _ => None,
    };
    Ok(c)
}

/// Stop every VM a node runs: ACPI power button, wait for the guests, kill what does not stop.
async fn stop_local_vms(node_dir: &std::path::Path, grace: Duration) {
    use ferrovirt_node::local;
    let pods = node_dir.join("pods");
    let Ok(entries) = std::fs::read_dir(&pods) else { return };
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut running = Vec::new();
    for e in entries.flatten() {
        let dir = e.path();
        if let Some(pid) = local::launcher_pid(&dir).filter(|p| local::launcher_of_dir_alive(*p, &dir)) {
            let _ = local::request_stop(&dir, pid, grace.as_secs(), now).await;
            running.push((dir, pid));
        }
    }
    if running.is_empty() {
        return;
    }
    eprintln!("stopping {} VM(s)...", running.len());
    let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline && running.iter().any(|(d, p)| local::launcher_of_dir_alive(*p, d)) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (dir, pid) in running {
        if local::launcher_of_dir_alive(pid, &dir) {
            local::kill_launcher(&dir, pid);
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        .unwrap_or_else(|| "node1".into())
}

#[derive(Parser)]
struct ElectionArgs {
    /// Elect one active replica through a Lease in kube-system (several may run; one works).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long a leader's Lease lasts without renewal before a standby takes over.
    #[arg(long, default_value_t = 15)]
    leader_elect_lease_duration_seconds: u64,
    /// How long the leader keeps working without renewing.
    #[arg(long, default_value_t = 10)]
    leader_elect_renew_deadline_seconds: u64,
    /// Pause between election attempts.
    #[arg(long, default_value_t = 2)]
    leader_elect_retry_period_seconds: u64,
}

#[derive(Parser)]
struct ControllerArgs {
    /// Kubeconfig of the API server to work against.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    #[command(flatten)]
    election: ElectionArgs,
    /// A node whose Lease is not renewed for this long goes NotReady.
    #[arg(long, default_value_t = 40)]
    node_grace_seconds: u64,
    /// After NotReady, how much longer before the node's VMIs fail (and run elsewhere).
    #[arg(long, default_value_t = 20)]
    vmi_failure_grace_seconds: u64,
}

#[derive(Parser)]
struct SchedulerArgs {
    /// Kubeconfig of the API server to work against.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    #[command(flatten)]
    election: ElectionArgs,
}

type Lost = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Run `work` while holding the Lease `name` (or right away without election), until Ctrl-C;
/// give the Lease up on the way out.
async fn elected<F, Fut>(client: kube::Client, name: &str, args: &ElectionArgs, work: F) -> anyhow::Result<()>
where
    F: FnMut(Lost) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    use ferrovirt_controller::leader;
    let mut work = work;
    if !args.leader_elect {
        return tokio::select! {
            r = work(Box::pin(std::future::pending())) => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        };
    }
    let mut e = leader::Election::new(name, leader::Election::default_identity());
    e.lease_duration = Duration::from_secs(args.leader_elect_lease_duration_seconds.max(1));
    e.renew_deadline = Duration::from_secs(args.leader_elect_renew_deadline_seconds.max(1)).min(e.lease_duration);
    e.retry_period = Duration::from_secs(args.leader_elect_retry_period_seconds.max(1));
    let r = tokio::select! {
        r = leader::run(client.clone(), e.clone(), work) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    leader::release(client, &e).await;
    r
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_from(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    Ok(kube::Client::try_from(kube_config(kubeconfig).await?)?)
}

pub async fn kube_config(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", kubeconfig.display()))?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
}

#[derive(Parser)]
struct LauncherArgs {
    /// The launcher Pod's folder, holding spec.json.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Parser)]
struct ApiserverArgs {
    /// Folder for the embedded database, the CA certificate and the kubeconfig.
    #[arg(long, env = "FERROVIRT_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to serve HTTPS on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// etcd endpoints (comma-separated URLs); without it the embedded store is used.
    #[arg(long, value_delimiter = ',')]
    etcd: Vec<String>,
    /// Key prefix in etcd, so several clusters can share one etcd.
    #[arg(long, default_value = "")]
    etcd_prefix: String,
    /// Extra host names or addresses for the serving certificate.
    #[arg(long, value_delimiter = ',')]
    advertise: Vec<String>,
    /// Seconds between compactions of old history.
    #[arg(long, default_value_t = 300)]
    compaction_interval: u64,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,hyper=warn,h2=warn,tonic=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Apiserver(a) => {
            let mut config = ferrovirt_apiserver::Config::new(a.data_dir, a.listen);
            config.etcd = a.etcd;
            config.etcd_prefix = a.etcd_prefix;
            config.advertise = a.advertise;
            config.compaction_interval = Duration::from_secs(a.compaction_interval.max(1));
            let running = ferrovirt_apiserver::start(config).await?;
            // One line on stdout that scripts and tests can wait for.
            println!("ferrovirt apiserver ready at {} (kubeconfig: {})", running.url, running.kubeconfig.display());
            tokio::signal::ctrl_c().await?;
            running.stop().await;
            Ok(())
        }
        Command::Launcher(a) => ferrovirt_launcher::process::run(&a.dir).await,
        Command::Controller(a) => {
            use futures::FutureExt;
            let client = client_from(&a.kubeconfig).await?;
            let thresholds = ferrovirt_controller::node_lifecycle::Thresholds {
                grace: Duration::from_secs(a.node_grace_seconds.max(1)),
                failure_grace: Duration::from_secs(a.vmi_failure_grace_seconds),
                ..Default::default()
            };
            elected(client.clone(), "ferrovirt-controller", &a.election, |lost| {
                let lost = lost.shared();
                let client = client.clone();
                async move {
                    tokio::try_join!(
                        ferrovirt_controller::run_until(client.clone(), Default::default(), lost.clone()),
                        ferrovirt_controller::node_lifecycle::run_until(client, thresholds, lost),
                    )
                    .map(drop)
                }
            })
            .await
        }
        Command::Node(a) => {
            let kube = kube_config(&a.kubeconfig).await?;
            let data_dir = a.data_dir.clone();
            let config = node_config(a.name, kube, a.data_dir, a.address, a.node)?;
            tokio::select! {
                r = ferrovirt_node::run(config) => r,
                _ = tokio::signal::ctrl_c() => {
                    // A node agent that stops leaves its guests running (it picks them up again);
                    // `ferrovirt up` is the one that stops its VMs on Ctrl-C.
                    let _ = data_dir;
                    Ok(())
                }
            }
        }
        Command::Up(a) => {
            let data_dir = a.data_dir.unwrap_or_else(default_data_dir);
            let mut config = ferrovirt_apiserver::Config::new(data_dir.join("control-plane"), a.listen);
            config.etcd = a.etcd.clone();
            let running = ferrovirt_apiserver::start(config).await?;
            let client = client_from(&running.kubeconfig).await?;
            let name = a.node_name.unwrap_or_else(host_name);
            let node_dir = data_dir.join("nodes").join(&name);
            let node = node_config(name.clone(), kube_config(&running.kubeconfig).await?, node_dir.clone(), "127.0.0.1".into(), a.node)?;
            let mut tasks = tokio::task::JoinSet::new();
            tasks.spawn(ferrovirt_controller::run(client.clone(), Default::default()));
            tasks.spawn(ferrovirt_controller::node_lifecycle::run_until(client.clone(), Default::default(), std::future::pending()));
            tasks.spawn(ferrovirt_scheduler::run(client.clone(), Default::default()));
            tasks.spawn(ferrovirt_node::run(node));
            println!(
                "ferrovirt is up: API {} ({} store), node {name}\nkubeconfig: {}\n  export KUBECONFIG={}\n  kubectl apply -f examples/vm.yaml",
                running.url,
                if a.etcd.is_empty() { "embedded" } else { "etcd" },
                running.kubeconfig.display(),
                running.kubeconfig.display(),
            );
            let outcome = tokio::select! {
                r = tasks.join_next() => match r {
                    Some(Ok(Err(e))) => Err(e),
                    Some(Err(e)) => Err(anyhow::anyhow!("a component stopped: {e}")),
                    _ => Err(anyhow::anyhow!("a component stopped")),
                },
                _ = tokio::signal::ctrl_c() => Ok(()),
            };
            // Ctrl-C (or a failure): stop the node agent first so it starts nothing new, then the VMs.
            tasks.shutdown().await;
            stop_local_vms(&node_dir, Duration::from_secs(30)).await;
            running.stop().await;
            outcome
        }
        Command::Scheduler(a) => {
            let client = client_from(&a.kubeconfig).await?;
            elected(client.clone(), "ferrovirt-scheduler", &a.election, |lost| {
                ferrovirt_scheduler::run_until(client.clone(), Default::default(), lost)
            })
            .await
        }
    }
}
