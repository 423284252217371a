//! `fvctl`: the ferrovirt command line. What virtctl and the everyday half of kubectl do, in one
//! tool. It reaches the API only through a kubeconfig and the public API (kube-rs), like any
//! other client.
//!
//! ```text
//!   main ─▶ cli::Cli (clap) ─▶ run ─▶ objects (get, describe, apply, create, delete, edit)
//!                                  ├▶ vm (start, stop, restart, pause, soft-reboot, guestosinfo, create vm)
//!                                  ├▶ console, vnc, port-forward, ssh (websockets)       ├▶ image (push, ls)
//!                                  ├▶ node (cordon, uncordon, drain)
//!                                  └▶ cluster (cluster-info, version, completion)
//!   all API calls ─▶ api::Rest (kube::Client + JSON) ─▶ errors::Error (exit codes 0-5)
//! ```
//!
//! Pure logic lives apart from I/O and is unit-tested: resource names ([`resources`]), manifests
//! ([`manifest`]), apply decisions ([`apply`]), output ([`output`], [`describe`]), wait goals
//! ([`wait`]), VM manifests ([`vm_manifest`]), durations ([`duration`]), layers ([`image`]), what
//! drain evicts ([`node`]).

pub mod api;
pub mod apply;
pub mod cli;
pub mod cluster;
pub mod console;
pub mod describe;
pub mod duration;
pub mod errors;
pub mod image;
pub mod manifest;
pub mod node;
pub mod objects;
pub mod output;
pub mod portforward;
pub mod resources;
pub mod vm;
pub mod vm_manifest;
pub mod vnc;
pub mod wait;

use api::{ConnectOptions, Rest};
use cli::{Cli, Command, CreateWhat, ImageCommand};
use errors::Result;

/// What every command that talks to the API server needs.
pub struct Ctx {
    pub rest: Rest,
    /// `-n`, else the kubeconfig context's namespace, else `default`.
    pub namespace: String,
    /// Whether `-n` was given (an explicit namespace must match the manifests').
    pub explicit_namespace: bool,
}

impl Ctx {
    /// Reads the kubeconfig; nothing is sent yet.
    pub async fn new(cli: &Cli) -> Result<Ctx> {
        let opts = ConnectOptions {
            kubeconfig: cli.global.kubeconfig.clone(),
            context: cli.global.context.clone(),
        };
        let rest = Rest::connect(&opts).await?;
        let (namespace, explicit_namespace) = match &cli.global.namespace {
            Some(ns) => (ns.clone(), true),
            None => (rest.default_namespace.clone(), false),
        };
        Ok(Ctx {
            rest,
            namespace,
            explicit_namespace,
        })
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<()> {
    // Commands that need no API server.
    match &cli.command {
        Command::Completion(args) => {
            cluster::completion(args);
            return Ok(());
        }
        Command::Version(args) if args.client => return cluster::version(None, args).await,
        Command::Create(args) => {
            if let Some(CreateWhat::Vm(vm)) = &args.what {
                if !vm.apply {
                    return vm::create_vm(None, vm).await;
                }
            }
        }
        Command::Image(ImageCommand::Push(args)) => return image::push(args).await,
        _ => {}
    }
    let ctx = Ctx::new(&cli).await?;
    match &cli.command {
        Command::Get(a) => objects::get(&ctx, a).await,
        Command::Describe(a) => objects::describe(&ctx, a).await,
        Command::Apply(a) => objects::apply(&ctx, a).await,
        Command::Create(a) => match &a.what {
            Some(CreateWhat::Vm(vm)) => vm::create_vm(Some(&ctx), vm).await,
            None => objects::create(&ctx, a).await,
        },
        Command::Delete(a) => objects::delete(&ctx, a).await,
        Command::Edit(a) => objects::edit(&ctx, a).await,
        Command::Start(a) => vm::start(&ctx, a).await,
        Command::Stop(a) => vm::stop(&ctx, a).await,
        Command::Restart(a) => vm::restart(&ctx, a).await,
        Command::Pause(a) => vm::pause(&ctx, a, true).await,
        Command::Unpause(a) => vm::pause(&ctx, a, false).await,
        Command::SoftReboot(a) => vm::soft_reboot(&ctx, &a.name).await,
        Command::Console(a) => console::console(&ctx, a).await,
        Command::Guestosinfo(a) => vm::guestosinfo(&ctx, &a.name).await,
        Command::Vnc(a) => vnc::vnc(&ctx, a).await,
        Command::PortForward(a) => portforward::port_forward(&ctx, a).await,
        Command::Ssh(a) => portforward::ssh(&ctx, &cli.global, a).await,
        Command::Cordon(a) => node::cordon(&ctx, a, true).await,
        Command::Uncordon(a) => node::cordon(&ctx, a, false).await,
        Command::Drain(a) => node::drain(&ctx, a).await,
        Command::Image(ImageCommand::Ls(a)) => image::ls(&ctx, a).await,
        Command::Image(ImageCommand::Push(_)) | Command::Completion(_) => Ok(()),
        Command::ClusterInfo => cluster::cluster_info(&ctx).await,
        Command::Version(a) => cluster::version(Some(&ctx), a).await,
    }
}
