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
    /// Run the controllers: VirtualMachine -> VirtualMachineInstance -> launcher Pod.
    Controller(ClientArgs),
    /// Bind launcher Pods to Nodes.
    Scheduler(ClientArgs),
}

#[derive(Parser)]
struct ClientArgs {
    /// Kubeconfig of the API server to work against.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_from(kubeconfig: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(config)?)
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
            let client = client_from(&a.kubeconfig).await?;
            tokio::select! {
                r = ferrovirt_controller::run(client, Default::default()) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
        Command::Scheduler(a) => {
            let client = client_from(&a.kubeconfig).await?;
            tokio::select! {
                r = ferrovirt_scheduler::run(client, Default::default()) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
    }
}
