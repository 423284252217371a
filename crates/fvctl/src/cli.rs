//! The command line, as clap derive types. Every command and flag carries its help text here; the
//! commands themselves live in their own modules.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::duration::parse_duration;
use crate::errors::EXIT_CODES_HELP;
use crate::output::Format;

const AFTER_HELP: &str = "\
Examples:
  fvctl create vm --name vm1 --image 127.0.0.1:5000/guest:latest > vm1.yaml
  fvctl apply -f vm1.yaml
  fvctl get vms
  fvctl start vm1 --wait
  fvctl console vm1                      (Ctrl-] leaves)
  echo 'uname -a' | fvctl console vm1
  fvctl stop vm1 --wait

The kubeconfig is --kubeconfig, else $KUBECONFIG, else ~/.kube/config, else the one `ferrovirt up`
writes ($XDG_DATA_HOME/ferrovirt/control-plane/kubeconfig).
";

/// fvctl: run and manage ferrovirt virtual machines.
///
/// What virtctl and the everyday half of kubectl do, in one tool: objects (get, describe, apply,
/// create, delete, edit), VM lifecycle (start, stop, restart, pause, soft-reboot), the serial
/// console, containerDisk images and the cluster itself.
#[derive(Debug, Parser)]
#[command(name = "fvctl", version, propagate_version = true, after_help = format!("{AFTER_HELP}\n{EXIT_CODES_HELP}"))]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Kubeconfig file(s) to use, `:`-separated.
    #[arg(
        long,
        global = true,
        env = "KUBECONFIG",
        value_name = "FILE",
        hide_env_values = true
    )]
    pub kubeconfig: Option<String>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace to act in (default: the context's, else "default").
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // ---- objects ----
    /// List objects: vms, vmis, vmirs, nodes, pods, events, ...
    #[command(
        after_help = "Examples:\n  fvctl get vms\n  fvctl get vmis -A -o wide\n  fvctl get vm vm1 -o yaml > vm1.yaml\n  fvctl get vms -l app=web -w\n  fvctl get vm/vm1 vmi/vm1"
    )]
    Get(GetArgs),
    /// Show an object in detail, with its recent events.
    #[command(after_help = "Examples:\n  fvctl describe vm vm1\n  fvctl describe vmis -l app=web")]
    Describe(DescribeArgs),
    /// Create or update objects from manifests, idempotently.
    ///
    /// Prints `<kind>/<name> created|configured|unchanged` for each object. Fields that a previous
    /// apply set and the manifest no longer has are removed; fields others set are kept.
    #[command(
        after_help = "Examples:\n  fvctl apply -f vm1.yaml\n  fvctl get vm vm1 -o yaml | fvctl apply -f -\n  fvctl apply -f manifests/"
    )]
    Apply(ApplyArgs),
    /// Create objects from manifests, or a VM manifest from a few flags (`create vm`).
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        after_help = "Examples:\n  fvctl create -f vm1.yaml\n  fvctl create vm --name vm1 --image 127.0.0.1:5000/guest:latest --memory 256Mi --apply"
    )]
    Create(CreateArgs),
    /// Delete objects by type and name, by label, or as listed in manifests.
    #[command(
        after_help = "Examples:\n  fvctl delete vm vm1\n  fvctl delete vmis -l app=web\n  fvctl delete -f vm1.yaml --wait"
    )]
    Delete(DeleteArgs),
    /// Edit an object in $EDITOR (YAML) and update it.
    ///
    /// Saving unchanged (or empty) cancels; a refused edit reopens the editor with the server's
    /// message at the top.
    Edit(EditArgs),

    // ---- VMs ----
    /// Start a VM (its run strategy decides how: Halted becomes Always).
    Start(StartArgs),
    /// Stop a VM: the guest is asked to power off, then stopped after its grace period.
    Stop(StopArgs),
    /// Restart a VM: its instance is replaced by a new one.
    Restart(WaitArgs),
    /// Pause a VM's instance (its vCPUs stop; memory stays).
    #[command(after_help = "Examples:\n  fvctl pause vm vm1 --wait\n  fvctl pause vmi vm1")]
    Pause(PauseArgs),
    /// Unpause a paused VM's instance.
    Unpause(PauseArgs),
    /// Ask the guest to reboot (ACPI), without a new instance.
    #[command(name = "soft-reboot")]
    SoftReboot(NameArg),
    /// Attach to a VM's serial console.
    ///
    /// On a terminal the console is raw (keys go to the guest as typed); Ctrl-] leaves and
    /// restores the terminal. Through a pipe, stdin is sent to the guest and its output printed
    /// until --timeout, or until stdin has ended and the guest has been quiet for --quiet.
    #[command(
        after_help = "Examples:\n  fvctl console vm1\n  echo 'uname -a' | fvctl console vm1\n  fvctl console vm1 --timeout 30s < commands.txt"
    )]
    Console(ConsoleArgs),
    /// What the guest agent says about the guest OS (needs an agent in the guest).
    Guestosinfo(NameArg),
    /// A VM's screen: a local VNC port for a viewer, or a screenshot to PNG.
    #[command(
        after_help = "Examples:\n  fvctl vnc vm1 --port 5901          (then: vncviewer 127.0.0.1::5901)\n  fvctl vnc vm1 --screenshot vm1.png"
    )]
    Vnc(crate::vnc::VncArgs),
    /// Forward local ports to a VM's TCP ports (through the API server).
    #[command(
        name = "port-forward",
        after_help = "Examples:\n  fvctl port-forward vm1 8080:80        (then: curl 127.0.0.1:8080)\n  fvctl port-forward vm/vm1 :22\n  ssh -o ProxyCommand='fvctl port-forward --stdio vm1 22' root@vm1"
    )]
    PortForward(crate::portforward::PortForwardArgs),
    /// SSH into a VM through a port forward (runs ssh with a ProxyCommand).
    #[command(after_help = "Examples:\n  fvctl ssh root@vm1\n  fvctl ssh -i ~/.ssh/id_ed25519 fedora@vm/vm1 -c 'uname -a'\n  fvctl ssh root@vm1 -- -v -o StrictHostKeyChecking=no")]
    Ssh(crate::portforward::SshArgs),

    // ---- images ----
    /// containerDisk images: push a disk to a registry, list what nodes have cached.
    #[command(subcommand)]
    Image(ImageCommand),

    // ---- nodes ----
    /// Mark a node unschedulable: no new VM is placed on it; running ones stay.
    Cordon(NodeArg),
    /// Mark a node schedulable again.
    Uncordon(NodeArg),
    /// Cordon a node and move its VMs away, then wait until they are gone from it.
    ///
    /// Each VM's launcher pod is evicted: its instance is stopped gracefully (ACPI power-off,
    /// then the grace period), and a VM with runStrategy Always or RerunOnFailure starts again on
    /// another node; a replica set replaces its instance. An instance with evictionStrategy
    /// LiveMigrate (not supported yet) or External is refused by the server; drain says why and
    /// tries again every 5 s until --timeout. Pods that run no VM are left alone.
    #[command(
        after_help = "Examples:\n  fvctl drain n1\n  fvctl drain n1 --grace-period 10 --timeout 2m\n  fvctl uncordon n1"
    )]
    Drain(DrainArgs),

    // ---- cluster ----
    /// The API server's address, version and how many nodes are ready.
    #[command(name = "cluster-info")]
    ClusterInfo,
    /// Print the client's version and the server's.
    Version(VersionArgs),
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  source <(fvctl completion bash)\n  fvctl completion zsh > \"${fpath[1]}/_fvctl\"\n  fvctl completion fish > ~/.config/fish/completions/fvctl.fish"
    )]
    Completion(CompletionArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ListFlags {
    /// Label selector (`app=web`, `tier in (a,b)`, `!legacy`).
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Field selector (`status.phase=Running`).
    #[arg(long = "field-selector", value_name = "SELECTOR")]
    pub field_selector: Option<String>,
    /// Act in every namespace.
    #[arg(short = 'A', long = "all-namespaces")]
    pub all_namespaces: bool,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// TYPE [NAME...] or TYPE/NAME...; types: vms, vmis, vmirs, vmims, nodes, pods, events, namespaces, ...
    #[arg(required = true, value_name = "TYPE [NAME...]")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub list: ListFlags,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
    /// After listing, keep printing changes.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Print no header line (table formats).
    #[arg(long)]
    pub no_headers: bool,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// TYPE [NAME...] or TYPE/NAME...
    #[arg(required = true, value_name = "TYPE [NAME...]")]
    pub args: Vec<String>,
    #[command(flatten)]
    pub list: ListFlags,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Manifest file, folder, or `-` for stdin (repeatable).
    #[arg(short = 'f', long = "filename", required = true, value_name = "FILE")]
    pub files: Vec<String>,
    /// Ask the server to check everything but store nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Manifest file, folder, or `-` for stdin (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<String>,
    /// Ask the server to check everything but store nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(subcommand)]
    pub what: Option<CreateWhat>,
}

#[derive(Debug, Subcommand)]
pub enum CreateWhat {
    /// Print a VirtualMachine manifest (containerDisk, cloud-init, pod network), or apply it.
    #[command(
        after_help = "Examples:\n  fvctl create vm --name vm1 --image 127.0.0.1:5000/guest:latest\n  fvctl create vm --name vm1 --image REF --cloud-init-script init.sh --memory 512Mi --cpus 2 --apply"
    )]
    Vm(CreateVmArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CreateVmArgs {
    /// The VM's name (default: vm-<random>).
    #[arg(long)]
    pub name: Option<String>,
    /// containerDisk image to boot (`registry/repository:tag`).
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// Guest memory.
    #[arg(long, default_value = "256Mi", value_name = "QUANTITY")]
    pub memory: String,
    /// Virtual CPUs (cores).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub cpus: u32,
    /// A script (`#!/bin/sh ...`) or cloud-config the guest runs at first boot (cloud-init NoCloud).
    #[arg(long, value_name = "FILE")]
    pub cloud_init_script: Option<PathBuf>,
    /// Run strategy: Always, RerunOnFailure, Manual, Halted, Once.
    #[arg(long, default_value = "Always", value_name = "STRATEGY",
          value_parser = ["Always", "RerunOnFailure", "Manual", "Halted", "Once"])]
    pub run_strategy: String,
    /// Seconds the guest gets to power off when stopped.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub termination_grace_period: i64,
    /// Apply the manifest instead of printing it.
    #[arg(long)]
    pub apply: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// TYPE [NAME...] or TYPE/NAME...
    #[arg(value_name = "TYPE [NAME...]")]
    pub args: Vec<String>,
    /// Delete what these manifests name.
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub files: Vec<String>,
    /// Label selector.
    #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// Delete every object of the type (in the namespace).
    #[arg(long)]
    pub all: bool,
    /// A missing object is not an error.
    #[arg(long)]
    pub ignore_not_found: bool,
    /// Seconds the object gets to end (pods; 0 removes at once).
    #[arg(long, value_name = "SECONDS")]
    pub grace_period: Option<i64>,
    /// Wait until the objects are gone.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 30s, 5m).
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// TYPE NAME or TYPE/NAME.
    #[arg(required = true, value_name = "TYPE NAME")]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct NameArg {
    /// The VM's name.
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct WaitFlags {
    /// Wait until the VM has reached the state, showing it as it changes.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (e.g. 90s, 5m, 1h); then exit code 4.
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// The VM's name.
    pub name: String,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// The VM's name.
    pub name: String,
    /// Start the instance paused (not supported by ferrovirt yet: refused by the server).
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Clone, Args)]
pub struct StopArgs {
    /// The VM's name.
    pub name: String,
    /// Seconds the guest gets to power off; with --force (as in virtctl). 0 removes the launcher
    /// pod from the API at once, and the node kills the guest.
    #[arg(long, value_name = "SECONDS", requires = "force")]
    pub grace_period: Option<i64>,
    /// Stop with --grace-period instead of the VM's terminationGracePeriodSeconds.
    #[arg(long, requires = "grace_period")]
    pub force: bool,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Clone, Args)]
pub struct NodeArg {
    /// The node's name.
    pub node: String,
}

#[derive(Debug, Clone, Args)]
pub struct DrainArgs {
    /// The node's name.
    pub node: String,
    /// Seconds each guest gets to power off (default: each VM's terminationGracePeriodSeconds;
    /// 0 stops them at once).
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(i64).range(0..))]
    pub grace_period: Option<i64>,
    /// Give up after this long (e.g. 90s, 5m); then exit code 4. The node stays cordoned.
    #[arg(long, value_parser = parse_duration, default_value = "5m", value_name = "DURATION")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VmOrVmi {
    /// The VM's instance.
    Vm,
    /// The instance itself.
    Vmi,
}

#[derive(Debug, Clone, Args)]
pub struct PauseArgs {
    /// `vm` or `vmi` (either way the instance of that name is paused).
    #[arg(value_enum)]
    pub what: VmOrVmi,
    /// The name.
    pub name: String,
    #[command(flatten)]
    pub wait: WaitFlags,
}

#[derive(Debug, Clone, Args)]
pub struct ConsoleArgs {
    /// The VM's name.
    pub name: String,
    /// Leave after this long (e.g. 30s; default: no limit).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<Duration>,
    /// Through a pipe: after stdin ends, leave once the guest has said nothing for this long.
    #[arg(long, value_parser = parse_duration, default_value = "3s", value_name = "DURATION")]
    pub quiet: Duration,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Wrap a disk image (raw or qcow2) as a containerDisk and push it to a registry.
    ///
    /// The image has one layer holding the disk under /disk/ (and --kernel, --initrd under
    /// /boot/). Registries on loopback (127.0.0.1, localhost, ::1) are spoken to over plain HTTP,
    /// others over HTTPS unless --insecure.
    #[command(
        after_help = "Examples:\n  fvctl image push disk.qcow2 127.0.0.1:5000/guest:latest\n  fvctl image push out/ registry.example:5000/guest:v2 --kernel out/vmlinuz --initrd out/initrd.gz"
    )]
    Push(ImagePushArgs),
    /// List the containerDisk images the nodes have cached (from each Node's status.images).
    Ls(ImageLsArgs),
}

#[derive(Debug, Args)]
pub struct ImagePushArgs {
    /// The disk image file, or a folder with exactly one .img/.qcow2/.raw file.
    #[arg(value_name = "FILE|DIR")]
    pub source: PathBuf,
    /// Where to push it: `registry[:port]/repository[:tag]`.
    #[arg(value_name = "REF")]
    pub reference: String,
    /// A kernel to put under /boot/ as well.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// An initrd to put under /boot/ as well.
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<PathBuf>,
    /// Speak plain HTTP to this registry even though it is not on loopback.
    #[arg(long)]
    pub insecure: bool,
    /// Registry user name (with $FVCTL_REGISTRY_PASSWORD); anonymous without.
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImageLsArgs {
    /// Output format: table, json or yaml.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Format,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only the client's version (no server needed).
    #[arg(long)]
    pub client: bool,
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_vm_and_create_f_both_parse() {
        let c = Cli::try_parse_from(["fvctl", "create", "-f", "x.yaml"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Create(CreateArgs { what: None, .. })
        ));
        let c = Cli::try_parse_from(["fvctl", "create", "vm", "--name", "a", "--image", "r/i:t"])
            .unwrap();
        let Command::Create(CreateArgs {
            what: Some(CreateWhat::Vm(v)),
            ..
        }) = c.command
        else {
            panic!()
        };
        assert_eq!(
            (v.name.as_deref(), v.memory.as_str(), v.cpus),
            (Some("a"), "256Mi", 1)
        );
        assert!(Cli::try_parse_from(["fvctl", "create"]).is_err());
    }

    #[test]
    fn stop_force_and_grace_period_go_together() {
        assert!(Cli::try_parse_from(["fvctl", "stop", "vm1", "--force"]).is_err());
        assert!(Cli::try_parse_from(["fvctl", "stop", "vm1", "--grace-period", "0"]).is_err());
        assert!(
            Cli::try_parse_from(["fvctl", "stop", "vm1", "--force", "--grace-period", "0"]).is_ok()
        );
    }

    #[test]
    fn drain_takes_a_grace_period_and_a_timeout() {
        let args = ["fvctl", "drain", "n1", "--grace-period", "0", "--timeout", "90s"];
        let Command::Drain(d) = Cli::try_parse_from(args).unwrap().command else {
            panic!()
        };
        assert_eq!(
            (d.node.as_str(), d.grace_period, d.timeout),
            ("n1", Some(0), Duration::from_secs(90))
        );
        let Command::Drain(d) = Cli::try_parse_from(["fvctl", "drain", "n1"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!(
            (d.grace_period, d.timeout),
            (None, Duration::from_secs(300))
        );
        assert!(Cli::try_parse_from(["fvctl", "drain", "n1", "--grace-period", "-1"]).is_err());
        assert!(Cli::try_parse_from(["fvctl", "drain"]).is_err());
        let cordon = Cli::try_parse_from(["fvctl", "cordon", "n1"]).unwrap();
        assert!(matches!(cordon.command, Command::Cordon(_)));
        let uncordon = Cli::try_parse_from(["fvctl", "uncordon", "n1"]).unwrap();
        assert!(matches!(uncordon.command, Command::Uncordon(_)));
    }

    #[test]
    fn global_flags_go_anywhere() {
        let c = Cli::try_parse_from([
            "fvctl", "get", "vms", "-n", "prod", "-o", "wide", "-l", "a=b",
        ])
        .unwrap();
        assert_eq!(c.global.namespace.as_deref(), Some("prod"));
        let c =
            Cli::try_parse_from(["fvctl", "start", "vm1", "--wait", "--timeout", "90s"]).unwrap();
        let Command::Start(s) = c.command else {
            panic!()
        };
        assert!(s.wait.wait);
        assert_eq!(s.wait.timeout, Duration::from_secs(90));
    }
}
