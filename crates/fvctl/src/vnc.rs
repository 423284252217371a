//! `fvctl vnc`: a VM's screen over KubeVirt's VNC websocket (`.../virtualmachineinstances/N/vnc`,
//! `plain.kubevirt.io`, raw RFB bytes), either as a local TCP port a VNC viewer connects to, or as
//! one screenshot saved as PNG.
//!
//! ```text
//!   viewer ─TCP─▶ 127.0.0.1:PORT ─▶ (one websocket per connection) ─▶ the VM's VNC server
//!   --screenshot: websocket ─▶ RFB handshake (no auth) ─▶ 32-bit true colour, Raw ─▶ one full update ─▶ PNG
//! ```
//!
//! The RFB client ([`screenshot`]) and the PNG encoder ([`png`]) work on any byte stream and are
//! tested against an in-memory server.

use std::io::Write;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio_tungstenite::tungstenite::Message;

use crate::api::subresource_path;
use crate::errors::{Error, Result};
use crate::resources;
use crate::Ctx;

/// What `fvctl vnc` was asked for.
#[derive(Debug, Clone, clap::Args)]
pub struct VncArgs {
    /// The VM's name.
    pub name: String,
    /// Local port for the VNC viewer (0: any free port).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub address: String,
    /// Save one screenshot to this PNG file instead of listening.
    #[arg(long, value_name = "FILE.png")]
    pub screenshot: Option<std::path::PathBuf>,
    /// How long a screenshot may take.
    #[arg(long, value_parser = crate::duration::parse_duration, default_value = "30s", value_name = "DURATION")]
    pub timeout: Duration,
}

type Socket = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// The websocket as a byte stream: messages in become bytes to read, bytes written become binary
/// messages. A task carries the bytes until either side ends.
/// A websocket of raw bytes as a local byte stream (a task relays between them).
pub(crate) fn as_stream(ws: Socket) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut read_half, mut write_half) = tokio::io::split(theirs);
        let mut buf = vec![0u8; 1 << 15];
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if write_half.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Text(t))) => {
                        if write_half.write_all(t.as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                n = read_half.read(&mut buf) => match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::binary(buf[..n].to_vec())).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
        let _ = sink.send(Message::Close(None)).await;
        let _ = write_half.shutdown().await;
    });
    ours
}

async fn open(ctx: &Ctx, name: &str) -> Result<DuplexStream> {
    let path = subresource_path("virtualmachineinstances", &ctx.namespace, name, "vnc");
    match ctx.rest.websocket(&path, "plain.kubevirt.io").await {
        Ok(ws) => Ok(as_stream(ws)),
        Err(Error::Api(f)) if f.is_not_found() => {
            let vmi = resources::find("vmi").expect("known kind");
            if ctx
                .rest
                .get_opt(vmi, Some(&ctx.namespace), name)
                .await?
                .is_some()
            {
                return Err(Error::Failed(format!(
                    "the server has no VNC for VMI {name:?}: {}",
                    f.message
                )));
            }
            Err(Error::Failed(format!("VM {name:?} is not running (it has no instance); start it with `fvctl start {name}`")))
        }
        Err(e) => Err(e),
    }
}

/// `fvctl vnc`.
pub async fn vnc(ctx: &Ctx, args: &VncArgs) -> Result<()> {
    if let Some(file) = &args.screenshot {
        let stream = open(ctx, &args.name).await?;
        let shot = tokio::time::timeout(args.timeout, screenshot(stream))
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "no screen from VM {:?} within {}",
                    args.name,
                    crate::duration::format_duration(args.timeout)
                ))
            })??;
        let data = png(shot.width, shot.height, &shot.rgb);
        std::fs::write(file, data)
            .map_err(|e| Error::io(format!("cannot write {}", file.display()), e))?;
        println!(
            "{} ({}x{}, {:?})",
            file.display(),
            shot.width,
            shot.height,
            shot.name
        );
        return Ok(());
    }
    // Check that there is a screen before listening.
    drop(open(ctx, &args.name).await?);
    let listener = tokio::net::TcpListener::bind((args.address.as_str(), args.port))
        .await
        .map_err(|e| {
            Error::io(
                format!("cannot listen on {}:{}", args.address, args.port),
                e,
            )
        })?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("cannot read the local address", e))?;
    println!(
        "VNC of {} on {local}: connect a viewer (e.g. `vncviewer {}::{}`); Ctrl-C ends",
        args.name,
        local.ip(),
        local.port()
    );
    let _ = std::io::stdout().flush();
    loop {
        let (mut tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted.map_err(|e| Error::io("cannot accept a connection", e))?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        eprintln!("viewer connected from {peer}");
        let mut remote = match open(ctx, &args.name).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                continue;
            }
        };
        tokio::spawn(async move {
            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut remote).await;
        });
    }
}

/// One screen: size, desktop name and RGB pixels (3 bytes each, row by row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    pub width: u16,
    pub height: u16,
    pub name: String,
    pub rgb: Vec<u8>,
}

fn rfb_error(what: impl std::fmt::Display) -> Error {
    Error::Failed(format!("VNC: {what}"))
}

async fn read_exact<S: AsyncRead + Unpin>(s: &mut S, n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf)
        .await
        .map_err(|e| rfb_error(format!("the connection ended early ({e})")))?;
    Ok(buf)
}

async fn read_u8<S: AsyncRead + Unpin>(s: &mut S) -> Result<u8> {
    Ok(read_exact(s, 1).await?[0])
}

async fn read_u16<S: AsyncRead + Unpin>(s: &mut S) -> Result<u16> {
    let b = read_exact(s, 2).await?;
    Ok(u16::from_be_bytes([b[0], b[1]]))
}

async fn read_u32<S: AsyncRead + Unpin>(s: &mut S) -> Result<u32> {
    let b = read_exact(s, 4).await?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

async fn read_reason<S: AsyncRead + Unpin>(s: &mut S) -> String {
    match read_u32(s).await {
        Ok(n) if n < 1 << 16 => read_exact(s, n as usize)
            .await
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default(),
        _ => String::new(),
    }
}

async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: Vec<u8>) -> Result<()> {
    s.write_all(&bytes)
        .await
        .map_err(|e| rfb_error(format!("cannot write ({e})")))
}

/// Takes one screenshot over an RFB stream (versions 3.3 to 3.8, no authentication).
pub async fn screenshot<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> Result<Screen> {
    let version = read_exact(&mut s, 12).await?;
    let text = String::from_utf8_lossy(&version).to_string();
    let minor: u32 = text
        .strip_prefix("RFB 003.")
        .and_then(|r| r.trim_end().parse().ok())
        .ok_or_else(|| rfb_error(format!("not an RFB server (it said {text:?})")))?;
    let minor = if minor >= 8 {
        8
    } else if minor == 7 {
        7
    } else {
        3
    };
    send(&mut s, format!("RFB 003.00{minor}\n").into_bytes()).await?;
    if minor == 3 {
        match read_u32(&mut s).await? {
            1 => {}
            0 => {
                return Err(rfb_error(format!(
                    "the server refused the connection: {}",
                    read_reason(&mut s).await
                )))
            }
            other => {
                return Err(rfb_error(format!(
                    "the server wants authentication (security type {other})"
                )))
            }
        }
    } else {
        let count = read_u8(&mut s).await?;
        if count == 0 {
            return Err(rfb_error(format!(
                "the server refused the connection: {}",
                read_reason(&mut s).await
            )));
        }
        let types = read_exact(&mut s, count as usize).await?;
        if !types.contains(&1) {
            return Err(rfb_error(format!("the server wants authentication (security types {types:?}; fvctl speaks only None)")));
        }
        send(&mut s, vec![1]).await?;
        if minor == 8 && read_u32(&mut s).await? != 0 {
            return Err(rfb_error(format!(
                "security handshake failed: {}",
                read_reason(&mut s).await
            )));
        }
    }
    // ClientInit (shared) and ServerInit.
    send(&mut s, vec![1]).await?;
    let width = read_u16(&mut s).await?;
    let height = read_u16(&mut s).await?;
    let _server_format = read_exact(&mut s, 16).await?;
    let name_len = read_u32(&mut s).await?;
    if name_len > 1 << 16 {
        return Err(rfb_error("the desktop name is implausibly long"));
    }
    let name = String::from_utf8_lossy(&read_exact(&mut s, name_len as usize).await?).into_owned();
    if width == 0 || height == 0 {
        return Err(rfb_error("the screen is empty (0 pixels)"));
    }
    // SetPixelFormat: 32 bits, depth 24, little endian, true colour, 8 bits each, R<<16 G<<8 B.
    let mut msg = vec![
        0, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0, 0, 0, 0,
    ];
    // SetEncodings: Raw only.
    msg.extend_from_slice(&[2, 0, 0, 1, 0, 0, 0, 0]);
    // FramebufferUpdateRequest for the whole screen, not incremental.
    msg.extend_from_slice(&[3, 0, 0, 0, 0, 0]);
    msg.extend_from_slice(&width.to_be_bytes());
    msg.extend_from_slice(&height.to_be_bytes());
    send(&mut s, msg).await?;
    let (w, h) = (width as usize, height as usize);
    let mut rgb = vec![0u8; w * h * 3];
    loop {
        match read_u8(&mut s).await? {
            0 => {
                let _pad = read_u8(&mut s).await?;
                let rects = read_u16(&mut s).await?;
                for _ in 0..rects {
                    let (x, y) = (
                        read_u16(&mut s).await? as usize,
                        read_u16(&mut s).await? as usize,
                    );
                    let (rw, rh) = (
                        read_u16(&mut s).await? as usize,
                        read_u16(&mut s).await? as usize,
                    );
                    let encoding = read_u32(&mut s).await? as i32;
                    if encoding != 0 {
                        return Err(rfb_error(format!(
                            "the server sent encoding {encoding}, not Raw"
                        )));
                    }
                    let pixels = read_exact(&mut s, rw * rh * 4).await?;
                    for row in 0..rh {
                        for col in 0..rw {
                            let (px, py) = (x + col, y + row);
                            if px >= w || py >= h {
                                continue;
                            }
                            let p = &pixels[(row * rw + col) * 4..][..4];
                            let out = &mut rgb[(py * w + px) * 3..][..3];
                            // Little endian R<<16 | G<<8 | B: bytes B, G, R, unused.
                            out.copy_from_slice(&[p[2], p[1], p[0]]);
                        }
                    }
                }
                return Ok(Screen {
                    width,
                    height,
                    name,
                    rgb,
                });
            }
            1 => {
                let _pad = read_u8(&mut s).await?;
                let _first = read_u16(&mut s).await?;
                let count = read_u16(&mut s).await?;
                read_exact(&mut s, count as usize * 6).await?;
            }
            2 => {}
            3 => {
                read_exact(&mut s, 3).await?;
                let n = read_u32(&mut s).await?;
                read_exact(&mut s, n as usize).await?;
            }
            other => return Err(rfb_error(format!("unexpected server message type {other}"))),
        }
    }
}

/// An RGB image (8 bits a channel) as PNG.
pub fn png(width: u16, height: u16, rgb: &[u8]) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&u32::from(width).to_be_bytes());
    ihdr.extend_from_slice(&u32::from(height).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    let row = width as usize * 3;
    let mut raw = Vec::with_capacity((row + 1) * height as usize);
    for line in rgb.chunks(row).take(height as usize) {
        raw.push(0);
        raw.extend_from_slice(line);
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = z.write_all(&raw);
    let compressed = z.finish().unwrap_or_default();
    chunk(&mut out, b"IDAT", &compressed);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A 3x2 RFB 3.8 server with no authentication, answering one update in two rectangles.
    async fn fake_server(mut s: DuplexStream) -> Vec<u8> {
        s.write_all(b"RFB 003.008\n").await.unwrap();
        let mut v = [0u8; 12];
        s.read_exact(&mut v).await.unwrap();
        assert_eq!(&v, b"RFB 003.008\n");
        s.write_all(&[2, 2, 1]).await.unwrap(); // VNC auth or None
        let mut choice = [0u8; 1];
        s.read_exact(&mut choice).await.unwrap();
        assert_eq!(choice, [1]);
        s.write_all(&0u32.to_be_bytes()).await.unwrap();
        let mut shared = [0u8; 1];
        s.read_exact(&mut shared).await.unwrap();
        let mut init = vec![0, 3, 0, 2];
        init.extend_from_slice(&[0u8; 16]);
        init.extend_from_slice(&4u32.to_be_bytes());
        init.extend_from_slice(b"QEMU");
        s.write_all(&init).await.unwrap();
        let mut client = vec![0u8; 20 + 8 + 10];
        s.read_exact(&mut client).await.unwrap();
        // A bell first, then the update: row 0 (3x1) red, green, blue; row 1 (3x1) white.
        let mut update = vec![2, 0, 0, 0, 2];
        update.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 0, 0, 0, 0]);
        update.extend_from_slice(&[0, 0, 255, 0, 0, 255, 0, 0, 255, 0, 0, 0]);
        update.extend_from_slice(&[0, 0, 0, 1, 0, 3, 0, 1, 0, 0, 0, 0]);
        update.extend_from_slice(&[255; 12]);
        s.write_all(&update).await.unwrap();
        client
    }

    #[tokio::test]
    async fn a_screenshot_is_one_full_update() {
        let (a, b) = tokio::io::duplex(4096);
        let server = tokio::spawn(fake_server(b));
        let shot = screenshot(a).await.unwrap();
        let client = server.await.unwrap();
        assert_eq!(
            &client[..8],
            &[0, 0, 0, 0, 32, 24, 0, 1],
            "SetPixelFormat 32/24 true colour"
        );
        assert_eq!(
            &client[20..28],
            &[2, 0, 0, 1, 0, 0, 0, 0],
            "SetEncodings Raw"
        );
        assert_eq!(
            &client[28..],
            &[3, 0, 0, 0, 0, 0, 0, 3, 0, 2],
            "a full, non-incremental update"
        );
        assert_eq!(
            (shot.width, shot.height, shot.name.as_str()),
            (3, 2, "QEMU")
        );
        assert_eq!(
            shot.rgb,
            [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255]
        );
    }

    #[tokio::test]
    async fn authentication_is_refused_clearly() {
        let (a, mut b) = tokio::io::duplex(4096);
        tokio::spawn(async move {
            b.write_all(b"RFB 003.008\n").await.unwrap();
            let mut v = [0u8; 12];
            b.read_exact(&mut v).await.unwrap();
            b.write_all(&[1, 2]).await.unwrap();
            let mut rest = Vec::new();
            let _ = b.read_to_end(&mut rest).await;
        });
        let e = screenshot(a).await.unwrap_err();
        assert!(e.to_string().contains("wants authentication"), "{e}");
    }

    #[test]
    fn png_is_valid() {
        let rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        let data = png(2, 2, &rgb);
        assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(&data[12..16], b"IHDR");
        assert_eq!(u32::from_be_bytes(data[16..20].try_into().unwrap()), 2);
        // IHDR's CRC is the well-known CRC-32 of its type and data.
        let mut crc = flate2::Crc::new();
        crc.update(&data[12..29]);
        assert_eq!(
            u32::from_be_bytes(data[29..33].try_into().unwrap()),
            crc.sum()
        );
        // The pixels come back out of IDAT.
        let idat_len = u32::from_be_bytes(data[33..37].try_into().unwrap()) as usize;
        assert_eq!(&data[37..41], b"IDAT");
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&data[41..41 + idat_len])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(raw, [0, 255, 0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255]);
        assert!(data.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]));
    }
}
