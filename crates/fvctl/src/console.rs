//! `fvctl console`: the guest's serial console over KubeVirt's console websocket
//! (`.../virtualmachineinstances/N/console`, subprotocol `plain.kubevirt.io`, binary frames with
//! raw bytes both ways).
//!
//! Two ways to use it:
//!
//! ```text
//!   stdin is a terminal:  raw mode ── keys ──▶ guest ── output ──▶ stdout;  Ctrl-] leaves,
//!                         the terminal settings are restored (also on SIGTERM/SIGHUP, panics)
//!   stdin is a pipe:      stdin ──▶ guest until EOF; output ──▶ stdout until the guest has been
//!                         quiet for --quiet after EOF, or --timeout, or the server closes
//! ```
//!
//! stdin is read on a plain thread (a blocking read cannot be cancelled; the thread simply ends
//! with the process), and the bytes reach the websocket loop over a channel.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::api::subresource_path;
use crate::cli::ConsoleArgs;
use crate::errors::{Error, Result};
use crate::resources;
use crate::Ctx;

/// Ctrl-]: leaves the console.
pub const ESCAPE: u8 = 0x1d;

/// The part of `input` to send before the escape byte, and whether the escape was typed.
pub fn split_escape(input: &[u8]) -> (&[u8], bool) {
    match input.iter().position(|b| *b == ESCAPE) {
        Some(i) => (&input[..i], true),
        None => (input, false),
    }
}

/// The terminal in raw mode for as long as this lives; its settings are put back on drop.
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    /// Switches stdin's terminal to raw mode.
    pub fn enter() -> Result<RawTerminal> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| Error::io("cannot read the terminal settings", e.into()))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| Error::io("cannot put the terminal in raw mode", e.into()))?;
        Ok(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Reads stdin on a thread; each chunk goes to the channel, which closes at EOF.
fn stdin_reader() -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
    });
    rx
}

/// `fvctl console`.
pub async fn console(ctx: &Ctx, args: &ConsoleArgs) -> Result<()> {
    let path = subresource_path(
        "virtualmachineinstances",
        &ctx.namespace,
        &args.name,
        "console",
    );
    let ws = match ctx.rest.websocket(&path, "plain.kubevirt.io").await {
        Ok(ws) => ws,
        Err(Error::Api(f)) if f.is_not_found() => {
            let vmi = resources::find("vmi").expect("known kind");
            let vm = resources::find("vm").expect("known kind");
            let ns = Some(ctx.namespace.as_str());
            if ctx.rest.get_opt(vmi, ns, &args.name).await?.is_some() {
                return Err(Error::Failed(format!(
                    "the server has no console for VMI {:?}: {}",
                    args.name, f.message
                )));
            }
            if ctx.rest.get_opt(vm, ns, &args.name).await?.is_some() {
                return Err(Error::Failed(format!(
                    "virtualmachine {:?} is not running (it has no instance); start it with `fvctl start {}`",
                    args.name, args.name
                )));
            }
            return Err(Error::NotFound {
                kind: vm,
                name: args.name.clone(),
                namespace: Some(ctx.namespace.clone()),
            });
        }
        Err(e) => return Err(e),
    };
    if std::io::stdin().is_terminal() {
        interactive(ws, &args.name, args.timeout).await
    } else {
        piped(ws, args.timeout, args.quiet).await
    }
}

type Socket = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

fn write_out(bytes: &[u8]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("cannot write to stdout", e))
}

fn payload(msg: Message) -> Option<Vec<u8>> {
    match msg {
        Message::Binary(b) => Some(b.to_vec()),
        Message::Text(t) => Some(t.as_bytes().to_vec()),
        _ => None,
    }
}

/// How an interactive session ended.
enum End {
    Escape,
    Closed,
    Signal,
    Timeout,
    Error(Error),
}

async fn interactive(ws: Socket, name: &str, timeout: Option<Duration>) -> Result<()> {
    eprint!("Successfully connected to {name} console. The escape sequence is ^]\r\n");
    let (mut sink, mut stream) = ws.split();
    let mut keys = stdin_reader();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("cannot watch for SIGTERM", e))?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| Error::io("cannot watch for SIGHUP", e))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let raw = RawTerminal::enter()?;
    let end = loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            key = keys.recv() => match key {
                Some(bytes) => {
                    let (send, escaped) = split_escape(&bytes);
                    if !send.is_empty() {
                        if let Err(e) = sink.send(Message::binary(send.to_vec())).await {
                            break End::Error(Error::Failed(format!("the console connection broke: {e}")));
                        }
                    }
                    if escaped {
                        break End::Escape;
                    }
                }
                // stdin closed (the terminal went away).
                None => break End::Closed,
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Close(_))) | None => break End::Closed,
                Some(Ok(m)) => {
                    if let Some(bytes) = payload(m) {
                        if let Err(e) = write_out(&bytes) {
                            break End::Error(e);
                        }
                    }
                }
                Some(Err(e)) => break End::Error(Error::Failed(format!("the console connection broke: {e}"))),
            },
            _ = term.recv() => break End::Signal,
            _ = hup.recv() => break End::Signal,
            _ = until_deadline => break End::Timeout,
        }
    };
    drop(raw);
    let _ = sink.send(Message::Close(None)).await;
    eprintln!();
    match end {
        End::Escape | End::Signal | End::Timeout => Ok(()),
        End::Closed => {
            eprintln!("The console connection was closed by the server.");
            Ok(())
        }
        End::Error(e) => Err(e),
    }
}

async fn piped(ws: Socket, timeout: Option<Duration>, quiet: Duration) -> Result<()> {
    let (mut sink, mut stream) = ws.split();
    let mut input = stdin_reader();
    let mut input_open = true;
    let deadline = timeout.map(|t| Instant::now() + t);
    // Once stdin has ended: leave when the guest has said nothing for `quiet`.
    let mut quiet_until: Option<Instant> = None;
    loop {
        let wake = match (deadline, quiet_until) {
            (Some(d), Some(q)) => Some(d.min(q)),
            (d, q) => d.or(q),
        };
        let sleeper = async {
            match wake {
                Some(w) => tokio::time::sleep_until(w).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = input.recv(), if input_open => match chunk {
                Some(bytes) => {
                    sink.send(Message::binary(bytes)).await.map_err(|e| Error::Failed(format!("the console connection broke: {e}")))?;
                }
                None => {
                    input_open = false;
                    quiet_until = Some(Instant::now() + quiet);
                }
            },
            msg = stream.next() => match msg {
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(m)) => {
                    if let Some(bytes) = payload(m) {
                        write_out(&bytes)?;
                        if !input_open {
                            quiet_until = Some(Instant::now() + quiet);
                        }
                    }
                }
                Some(Err(e)) => return Err(Error::Failed(format!("the console connection broke: {e}"))),
            },
            _ = sleeper => break,
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_escape_ends_input() {
        assert_eq!(split_escape(b"ls\r"), (&b"ls\r"[..], false));
        assert_eq!(split_escape(b"ab\x1dcd"), (&b"ab"[..], true));
        assert_eq!(split_escape(b"\x1d"), (&b""[..], true));
    }
}
