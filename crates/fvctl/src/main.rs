//! `fvctl`: the ferrovirt command line. It reaches the API only through a kubeconfig and the public
//! API, like any other client.

use clap::{Parser, Subcommand};
use kube::api::ListParams;
use kube::{Api, Client};

use ferrovirt_api::kubevirt::VirtualMachine;

#[derive(Parser)]
#[command(name = "fvctl", version, about = "Drive ferrovirt virtual machines")]
struct Cli {
    /// Kubeconfig to use (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, global = true, env = "KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Namespace to act in.
    #[arg(short = 'n', long, global = true, default_value = "default")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the client's and the server's versions.
    Version,
    /// List virtual machines.
    Get {
        /// What to list: vms
        resource: String,
    },
}

async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("cannot read kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Command::Version => {
            println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
            let v = client(&cli).await?.apiserver_version().await?;
            println!("Server Version: {}", v.git_version);
        }
        Command::Get { resource } => match resource.as_str() {
            "vm" | "vms" | "virtualmachines" => {
                let api: Api<VirtualMachine> = Api::namespaced(client(&cli).await?, &cli.namespace);
                let vms = api.list(&ListParams::default()).await?;
                println!("{:<30} {:<16}", "NAME", "STATUS");
                for vm in vms {
                    let status = vm.status.as_ref().and_then(|s| s.printable_status.as_ref()).map(|p| format!("{p:?}")).unwrap_or_default();
                    println!("{:<30} {:<16}", vm.metadata.name.unwrap_or_default(), status);
                }
            }
            other => anyhow::bail!("fvctl get: unknown resource {other:?}; try `fvctl get vms`"),
        },
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
