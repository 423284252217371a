//! `ferrovirt-bench`: benchmark commands that print a table. See the library's modules.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ferrovirt_bench::api::{self, Params};
use ferrovirt_bench::scale::{self, control_plane::StoreKind};
use ferrovirt_bench::vms;

#[derive(Parser)]
#[command(
    name = "ferrovirt-bench",
    about = "ferrovirt benchmarks: each command measures and prints a table"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// API server on the embedded store and on etcd: creates/s, list latency, watch fan-out,
    /// next to raw etcd puts.
    Api(ApiArgs),
    /// Real VMs through `ferrovirt up`: create -> VMI Running, -> first console byte, -> booted
    /// guest (p50/p95/max), next to plain QEMU with the launcher's own arguments, and each
    /// process's RSS.
    Vms(VmsArgs),
    /// Control-plane scale: VMIs on simulated nodes (a SIMULATED hypervisor that runs no VM)
    /// from create to Running, p50/p90/p99, spread over nodes, and the memory and CPU of
    /// apiserver, controller, scheduler and etcd, on the embedded store and on etcd.
    Scale(ScaleArgs),
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StoreChoice {
    Embedded,
    Etcd,
    Both,
}

#[derive(Args)]
struct ScaleArgs {
    /// VirtualMachineInstances to create.
    #[arg(long, default_value_t = 1000)]
    vmis: usize,
    /// Simulated nodes (sim-node-00, ...).
    #[arg(long, default_value_t = 20)]
    nodes: usize,
    /// Store(s) the API server runs on.
    #[arg(long, value_enum, default_value = "both")]
    store: StoreChoice,
    /// Creates per second, e.g. 50 or 50/s [default: as fast as the API answers, --concurrency
    /// at a time].
    #[arg(long, value_parser = scale::parse_rate)]
    rate: Option<f64>,
    /// Creates (and deletes) in flight when no --rate is given.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Memory each VMI requests.
    #[arg(long, default_value = "64Mi")]
    memory: String,
    /// Seconds every VMI may take to be Running.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// Keep the data folders with the control plane's logs.
    #[arg(long)]
    keep_logs: bool,
}

#[derive(Args)]
struct VmsArgs {
    /// VMs to create.
    #[arg(long, default_value_t = 5)]
    count: usize,
    /// Milliseconds from one VM's create to the next one's.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// Guest memory (resources.requests.memory).
    #[arg(long, default_value = "128Mi")]
    memory: String,
    /// resources.requests.cpu of each VM [default: none, the controller's default applies].
    #[arg(long)]
    cpu_request: Option<String>,
    /// resources.limits.cpu of each VM [default: none, the controller's default applies].
    #[arg(long)]
    cpu_limit: Option<String>,
    /// Seconds the VMs (and again the plain QEMUs) may take to show their cloud-init marker.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
}

#[derive(Args)]
struct ApiArgs {
    /// A small smoke run (200 VMs, 20 watchers); other flags still override.
    #[arg(long)]
    quick: bool,
    /// VMs to create and list [default: 2000].
    #[arg(long)]
    objects: Option<usize>,
    /// Concurrent creating clients [default: 16].
    #[arg(long)]
    concurrency: Option<usize>,
    /// Concurrent watchers [default: 100].
    #[arg(long)]
    watchers: Option<usize>,
    /// Measured updates the watchers must see [default: 50].
    #[arg(long)]
    updates: Option<usize>,
    /// Milliseconds from one update to the next [default: 20].
    #[arg(long)]
    update_interval_ms: Option<u64>,
    /// Repetitions of each list [default: 20].
    #[arg(long)]
    list_reps: Option<usize>,
    /// limit of the paged lists [default: 500].
    #[arg(long)]
    page_size: Option<u32>,
}

impl ApiArgs {
    fn params(&self) -> Params {
        let base = if self.quick {
            Params::quick()
        } else {
            Params::full()
        };
        Params {
            objects: self.objects.unwrap_or(base.objects),
            concurrency: self.concurrency.unwrap_or(base.concurrency),
            watchers: self.watchers.unwrap_or(base.watchers),
            updates: self.updates.unwrap_or(base.updates),
            update_interval: self
                .update_interval_ms
                .map_or(base.update_interval, Duration::from_millis),
            list_reps: self.list_reps.unwrap_or(base.list_reps),
            page_size: self.page_size.unwrap_or(base.page_size),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Vms(args) => {
            let params = vms::Params {
                count: args.count,
                interval: Duration::from_millis(args.interval_ms),
                memory: args.memory,
                cpu: vms::CpuResources {
                    request: args.cpu_request,
                    limit: args.cpu_limit,
                },
                timeout: Duration::from_secs(args.timeout_secs),
            };
            // On Ctrl-C the benchmark future is dropped: `ferrovirt up` gets SIGINT and leftovers
            // are killed by PID, plain QEMUs are killed, the registry is killed, temp dirs go.
            tokio::select! {
                result = vms::run(&params) => result,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted: stopping and cleaning up");
                    Ok(())
                }
            }
        }
        Command::Scale(args) => {
            let params = scale::Params {
                vmis: args.vmis,
                nodes: args.nodes,
                stores: match args.store {
                    StoreChoice::Embedded => vec![StoreKind::Embedded],
                    StoreChoice::Etcd => vec![StoreKind::Etcd],
                    StoreChoice::Both => vec![StoreKind::Embedded, StoreKind::Etcd],
                },
                rate: args.rate,
                concurrency: args.concurrency,
                memory: args.memory,
                timeout: Duration::from_secs(args.timeout_secs),
                keep: args.keep_logs,
            };
            // On Ctrl-C the benchmark future is dropped: every process is killed by PID (the
            // handles' drop), etcd too, and temp dirs are removed.
            tokio::select! {
                result = scale::run(&params) => result,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted: stopping and cleaning up");
                    Ok(())
                }
            }
        }
        Command::Api(args) => {
            let params = args.params();
            // On Ctrl-C the benchmark future is dropped: etcd is killed and temp dirs are removed.
            tokio::select! {
                result = api::run(&params) => result,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted: stopping and cleaning up");
                    Ok(())
                }
            }
        }
    }
}
