//! `fvctl port-forward` and `fvctl ssh`: a guest's TCP ports through the API server
//! (`.../virtualmachineinstances/NAME/portforward/PORT/tcp`, a `plain.kubevirt.io` websocket),
//! as virtctl does it.
//!
//! ```text
//!  local client ──TCP──▶ fvctl (127.0.0.1:LOCAL) ══websocket══▶ API server ─▶ node ─▶ guest:REMOTE
//!  ssh ──ProxyCommand: fvctl port-forward --stdio NAME 22══▶ ... ─▶ guest:22
//! ```

use tokio::io::AsyncWriteExt;

use crate::api::subresource_path;
use crate::errors::{Error, Result};
use crate::Ctx;

/// `[vm/|vmi/]NAME`: the VMI's name (a VM's instance has the VM's name).
pub fn target_name(target: &str) -> Result<&str> {
    let name = match target.split_once('/') {
        Some(("vm" | "vms" | "vmi" | "vmis" | "virtualmachine" | "virtualmachineinstance", name)) => name,
        Some((kind, _)) => return Err(Error::Usage(format!("cannot forward ports of a {kind:?}; name a vm or vmi, e.g. vm/NAME"))),
        None => target,
    };
    if name.is_empty() {
        return Err(Error::Usage(format!("{target:?} names no VM")));
    }
    Ok(name)
}

/// `[LOCAL:]REMOTE` -> (local, remote); a missing local port is the remote one (pure).
pub fn parse_ports(spec: &str) -> Result<(u16, u16)> {
    let port = |s: &str| {
        s.parse::<u16>().map_err(|_| Error::Usage(format!("{s:?} in {spec:?} is not a port (0-65535)")))
    };
    let (local, remote) = match spec.split_once(':') {
        Some((l, r)) => (if l.is_empty() { 0 } else { port(l)? }, port(r)?),
        None => {
            let p = port(spec)?;
            (p, p)
        }
    };
    if remote == 0 {
        return Err(Error::Usage(format!("{spec:?}: the guest port cannot be 0")));
    }
    Ok((local, remote))
}

#[derive(Debug, Clone, clap::Args)]
pub struct PortForwardArgs {
    /// The VM: NAME, vm/NAME or vmi/NAME.
    pub target: String,
    /// Ports as [LOCAL:]REMOTE (LOCAL 0 or empty: any free port).
    #[arg(required = true)]
    pub ports: Vec<String>,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// Connect standard input and output to the one REMOTE port instead of listening (for ssh's
    /// ProxyCommand).
    #[arg(long)]
    pub stdio: bool,
}

async fn open(ctx: &Ctx, name: &str, port: u16) -> Result<tokio::io::DuplexStream> {
    let path = subresource_path("virtualmachineinstances", &ctx.namespace, name, &format!("portforward/{port}/tcp"));
    match ctx.rest.websocket(&path, "plain.kubevirt.io").await {
        Ok(ws) => Ok(crate::vnc::as_stream(ws)),
        Err(Error::Api(f)) if f.is_not_found() => Err(Error::Failed(format!(
            "VM {name:?} is not running (it has no instance); start it with `fvctl start {name}`"
        ))),
        Err(e) => Err(e),
    }
}

/// `fvctl port-forward`.
pub async fn port_forward(ctx: &Ctx, args: &PortForwardArgs) -> Result<()> {
    let name = target_name(&args.target)?.to_string();
    let ports = args.ports.iter().map(|p| parse_ports(p)).collect::<Result<Vec<_>>>()?;
    if args.stdio {
        let [(_, remote)] = ports.as_slice() else {
            return Err(Error::Usage("--stdio forwards exactly one port".into()));
        };
        let stream = open(ctx, &name, *remote).await?;
        let (mut from_guest, mut to_guest) = tokio::io::split(stream);
        let (mut stdin, mut stdout) = (tokio::io::stdin(), tokio::io::stdout());
        // Either side ending ends the session: ssh closing its end, or the guest closing the port.
        tokio::select! {
            _ = tokio::io::copy(&mut stdin, &mut to_guest) => {}
            _ = tokio::io::copy(&mut from_guest, &mut stdout) => {}
        }
        let _ = stdout.flush().await;
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (local, remote) in ports {
        let listener = tokio::net::TcpListener::bind((args.address.as_str(), local))
            .await
            .map_err(|e| Error::io(format!("cannot listen on {}:{local}", args.address), e))?;
        let addr = listener.local_addr().map_err(|e| Error::io("local address", e))?;
        println!("Forwarding from {addr} -> {remote}");
        let (rest, ns, name) = (ctx.rest.clone(), ctx.namespace.clone(), name.clone());
        tasks.spawn(async move {
            loop {
                let Ok((mut tcp, peer)) = listener.accept().await else { return };
                let path = subresource_path("virtualmachineinstances", &ns, &name, &format!("portforward/{remote}/tcp"));
                let rest = rest.clone();
                tokio::spawn(async move {
                    match rest.websocket(&path, "plain.kubevirt.io").await {
                        Ok(ws) => {
                            let mut stream = crate::vnc::as_stream(ws);
                            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                        }
                        Err(e) => eprintln!("error: forwarding {peer} to port {remote}: {e}"),
                    }
                });
            }
        });
    }
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = tasks.join_next() => Err(Error::Failed("a port forward stopped listening".into())),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SshArgs {
    /// [USER@]NAME, NAME as vm/NAME, vmi/NAME or NAME.
    pub target: String,
    /// The guest's SSH port.
    #[arg(short = 'p', long, default_value_t = 22)]
    pub port: u16,
    /// Identity file (private key) for ssh.
    #[arg(short = 'i', long, value_name = "FILE")]
    pub identity_file: Option<std::path::PathBuf>,
    /// The ssh program to run.
    #[arg(long, default_value = "ssh")]
    pub ssh: String,
    /// A command to run in the guest instead of a login shell.
    #[arg(short = 'c', long)]
    pub command: Option<String>,
    /// Options for ssh itself, after `--` (e.g. `-- -v -o StrictHostKeyChecking=no`).
    #[arg(last = true)]
    pub ssh_args: Vec<String>,
}

/// The ssh command line `fvctl ssh` runs (pure): ssh with a ProxyCommand of this fvctl.
pub fn ssh_command(fvctl: &str, global: &[String], namespace: &str, args: &SshArgs) -> Result<Vec<String>> {
    let (user, target) = match args.target.rsplit_once('@') {
        Some((u, t)) => (Some(u), t),
        None => (None, args.target.as_str()),
    };
    let name = target_name(target)?;
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut proxy = vec![quote(fvctl)];
    proxy.extend(global.iter().map(|g| quote(g)));
    proxy.extend(["-n".into(), quote(namespace), "port-forward".into(), "--stdio".into(), quote(&format!("vmi/{name}")), args.port.to_string()]);
    let mut cmd = vec![args.ssh.clone(), "-o".into(), format!("ProxyCommand={}", proxy.join(" "))];
    // The guest's host key is per VM and new on every fresh disk: check it against a known_hosts
    // entry named after the VM, not after the proxy's address.
    cmd.extend(["-o".into(), format!("HostKeyAlias=vmi.{name}.{namespace}")]);
    if let Some(i) = &args.identity_file {
        cmd.extend(["-i".into(), i.display().to_string()]);
    }
    let host = match user {
        Some(u) => format!("{u}@vmi.{name}.{namespace}"),
        None => format!("vmi.{name}.{namespace}"),
    };
    cmd.extend(args.ssh_args.iter().cloned());
    cmd.push(host);
    cmd.extend(args.command.clone());
    Ok(cmd)
}

/// `fvctl ssh`: becomes ssh (exec) with `fvctl port-forward --stdio` as its ProxyCommand.
pub async fn ssh(ctx: &Ctx, global: &crate::cli::Global, args: &SshArgs) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("cannot find the fvctl executable", e))?;
    let mut passthrough = Vec::new();
    if let Some(k) = &global.kubeconfig {
        passthrough.extend(["--kubeconfig".to_string(), k.clone()]);
    }
    if let Some(c) = &global.context {
        passthrough.extend(["--context".to_string(), c.clone()]);
    }
    let cmd = ssh_command(&exe.display().to_string(), &passthrough, &ctx.namespace, args)?;
    // ssh takes this process's place: its exit status is fvctl's, and a signal reaches ssh itself.
    use std::os::unix::process::CommandExt;
    let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    Err(Error::io(format!("cannot run {}", cmd[0]), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_ports() {
        assert_eq!(target_name("vm/a").unwrap(), "a");
        assert_eq!(target_name("vmi/a").unwrap(), "a");
        assert_eq!(target_name("a").unwrap(), "a");
        assert!(target_name("pod/a").is_err());
        assert!(target_name("vm/").is_err());
        assert_eq!(parse_ports("8080").unwrap(), (8080, 8080));
        assert_eq!(parse_ports("5000:80").unwrap(), (5000, 80));
        assert_eq!(parse_ports(":80").unwrap(), (0, 80));
        assert!(parse_ports("80:0").is_err());
        assert!(parse_ports("x").is_err());
        assert!(parse_ports("70000").is_err());
    }

    #[test]
    fn ssh_goes_through_port_forward() {
        let args = SshArgs {
            target: "root@vm/web".into(),
            port: 2222,
            identity_file: Some("/k/id".into()),
            ssh: "ssh".into(),
            command: Some("uname -a".into()),
            ssh_args: vec!["-v".into(), "-o".into(), "BatchMode=yes".into()],
        };
        let cmd = ssh_command("/bin/fvctl", &["--kubeconfig".into(), "/k/it's".into()], "prod", &args).unwrap();
        assert_eq!(
            cmd,
            [
                "ssh",
                "-o",
                r"ProxyCommand='/bin/fvctl' '--kubeconfig' '/k/it'\''s' -n 'prod' port-forward --stdio 'vmi/web' 2222",
                "-o",
                "HostKeyAlias=vmi.web.prod",
                "-i",
                "/k/id",
                "-v",
                "-o",
                "BatchMode=yes",
                "root@vmi.web.prod",
                "uname -a",
            ]
        );
    }
}
