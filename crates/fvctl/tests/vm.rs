//! fvctl against real VMs: `ferrovirt up` (API server, controller, scheduler, node agent), the
//! test guest pushed with `fvctl image push` to a registry on loopback, QEMU (TCG here: 10-40 s a
//! boot). Needs scripts/build-guest.sh and docker-registry (scripts/install-test-deps.sh).
//!
//! - `lifecycle_with_wait`: image push, create vm --apply, start/restart/stop with --wait, force stop.
//! - `console_pause_and_terminal`: the console through a pipe (`echo 'uname -a' | fvctl console`)
//!   and on a terminal (tmux: Ctrl-] leaves, stty settings restored), pause/unpause with --wait,
//!   soft-reboot, guestosinfo. Needs the server's console, pause/unpause and softreboot subresources.

mod common;

use std::time::{Duration, Instant};

use common::{guest_dir, Fvctl, Tmux};
use ferrovirt_disks::testing::RegistryProcess;
use ferrovirt_e2e::up::UpProcess;
use serde_json::Value;

/// How long a guest may take from start to Running (TCG on 2 busy cores).
const BOOT: &str = "300s";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Registry, the guest pushed by `fvctl image push`, `ferrovirt up`, and a Halted VM `vm1`.
struct World {
    _registry: RegistryProcess,
    up: UpProcess,
    fv: Fvctl,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let disk = guest_dir().join("disk.qcow2");
    assert!(
        disk.is_file(),
        "the test guest is not built: run scripts/build-guest.sh"
    );
    let registry =
        RegistryProcess::start().expect("docker-registry (scripts/install-test-deps.sh)");
    let image = registry.image("ferrovirt/guest:latest");
    let dir = tempfile::tempdir().unwrap();

    // `fvctl image push` needs no cluster; the layer carries the kernel and initrd under /boot/ too.
    let nobody = Fvctl::new(dir.path().join("no-kubeconfig"));
    let pushed = nobody.ok(&[
        "image",
        "push",
        disk.to_str().unwrap(),
        &image,
        "--kernel",
        guest_dir().join("vmlinuz").to_str().unwrap(),
        "--initrd",
        guest_dir().join("initrd.gz").to_str().unwrap(),
    ]);
    assert!(pushed.starts_with(&format!("{image}@sha256:")), "{pushed}");
    // Pushing again finds the layer in place.
    let again = nobody.run(&[
        "image",
        "push",
        disk.to_str().unwrap(),
        &image,
        "--kernel",
        guest_dir().join("vmlinuz").to_str().unwrap(),
        "--initrd",
        guest_dir().join("initrd.gz").to_str().unwrap(),
    ]);
    assert!(
        again.status.success() && again.stderr.contains("already in the registry"),
        "{}",
        again.describe()
    );
    assert_eq!(again.stdout, pushed);

    let up = common::up(&dir.path().join("up"));
    let fv = Fvctl::new(up.kubeconfig());
    // The guest serves a TCP echo on 7777 and an SSH banner on 22 (busybox nc) for port-forward
    // and ssh.
    let script = dir.path().join("services.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nnc -ll -p 7777 -e /bin/cat &\nprintf '#!/bin/sh\\necho SSH-2.0-ferrovirt-test-guest\\nsleep 5\\n' > /tmp/banner\nchmod +x /tmp/banner\nnc -ll -p 22 -e /tmp/banner &\n",
    )
    .unwrap();
    let created = fv.ok(&[
        "create",
        "vm",
        "--name",
        "vm1",
        "--image",
        &image,
        "--memory",
        "128Mi",
        "--run-strategy",
        "Halted",
        "--cloud-init-script",
        script.to_str().unwrap(),
        "--apply",
    ]);
    assert_eq!(created, "virtualmachine.kubevirt.io/vm1 created\n");
    World {
        _registry: registry,
        up,
        fv,
        _dir: dir,
    }
}

fn vmi_uid(fv: &Fvctl) -> String {
    json(&fv.ok(&["get", "vmi", "vm1", "-o", "json"]))["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn lifecycle_with_wait() {
    let w = world();
    let fv = &w.fv;

    // start --wait: the state as it changes (plain lines, not a terminal), then Running.
    let r = fv.run_with(
        &["start", "vm1", "--wait", "--timeout", BOOT],
        None,
        Duration::from_secs(400),
    );
    assert!(
        r.status.success(),
        "{}\n{}",
        r.describe(),
        w.up.log_tail(60)
    );
    assert_eq!(
        r.stdout.lines().next(),
        Some("VM vm1 was scheduled to start")
    );
    assert!(
        r.stdout
            .contains("\nVM vm1 is Running: Running (instance Running)\n"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.lines().all(|l| l.starts_with("VM vm1: ")),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.lines().count() >= 2,
        "the changes are shown: {}",
        r.describe()
    );
    let table = fv.ok(&["get", "vmis"]);
    assert!(
        table.lines().nth(1).is_some_and(|l| l.starts_with("vm1 ")
            && l.contains(" Running ")
            && l.contains("node1")),
        "{table}"
    );
    let first = vmi_uid(fv);

    // restart --wait: a new instance runs.
    let r = fv.run_with(
        &["restart", "vm1", "--wait", "--timeout", BOOT],
        None,
        Duration::from_secs(400),
    );
    assert!(
        r.status.success(),
        "{}\n{}",
        r.describe(),
        w.up.log_tail(60)
    );
    assert!(
        r.stdout.contains("VM vm1 is running again"),
        "{}",
        r.describe()
    );
    let second = vmi_uid(fv);
    assert_ne!(first, second);

    // stop --wait: the instance goes, the VM says Stopped.
    let r = fv.run_with(
        &["stop", "vm1", "--wait", "--timeout", "120s"],
        None,
        Duration::from_secs(200),
    );
    assert!(
        r.status.success(),
        "{}\n{}",
        r.describe(),
        w.up.log_tail(60)
    );
    assert!(r.stdout.contains("VM vm1 is Stopped"), "{}", r.describe());
    fv.fails(&["get", "vmi", "vm1"], 3);
    let vm = json(&fv.ok(&["get", "vm", "vm1", "-o", "json"]));
    assert_eq!(vm["spec"]["runStrategy"], "Halted");
    assert_eq!(vm["status"]["printableStatus"], "Stopped");

    // A stopped VM has no console.
    let r = fv.fails(&["console", "vm1", "--timeout", "5s"], 1);
    assert!(
        r.stderr.contains("is not running") && r.stderr.contains("fvctl start vm1"),
        "{}",
        r.describe()
    );

    // stop --force --grace-period 0: the launcher Pod is removed at once, the VM stops.
    let r = fv.run_with(
        &["start", "vm1", "--wait", "--timeout", BOOT],
        None,
        Duration::from_secs(400),
    );
    assert!(
        r.status.success(),
        "{}\n{}",
        r.describe(),
        w.up.log_tail(80)
    );
    let started = Instant::now();
    let r = fv.run_with(
        &[
            "stop",
            "vm1",
            "--force",
            "--grace-period",
            "0",
            "--wait",
            "--timeout",
            "120s",
        ],
        None,
        Duration::from_secs(200),
    );
    assert!(
        r.status.success(),
        "{}\n{}",
        r.describe(),
        w.up.log_tail(60)
    );
    assert!(r.stdout.contains("VM vm1 is Stopped"), "{}", r.describe());
    eprintln!("forced stop took {:?}", started.elapsed());
    assert_eq!(fv.ok(&["get", "pods", "-o", "name"]), "");

    // The node reports what it has cached (once the node agent fills Node status.images).
    let images = fv.run(&["image", "ls"]);
    assert!(images.status.success(), "{}", images.describe());
    let node = json(&fv.ok(&["get", "node", "node1", "-o", "json"]));
    if node["status"]["images"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        assert!(
            images.stdout.contains("ferrovirt/guest"),
            "{}",
            images.describe()
        );
    } else {
        eprintln!(
            "node1 reports no status.images yet; `fvctl image ls` said: {}",
            images.stderr.trim()
        );
    }
}

#[test]
fn console_pause_and_terminal() {
    let w = world();
    let fv = &w.fv;
    let r = fv.run_with(
        &["start", "vm1", "--wait", "--timeout", BOOT],
        None,
        Duration::from_secs(400),
    );
    assert!(
        r.status.success(),
        "{}\n{}",
        r.describe(),
        w.up.log_tail(80)
    );

    // Through a pipe: the command goes in, the guest's kernel line comes out. The guest may still be
    // booting when the VMI runs: ask until its shell answers.
    let kernel = std::fs::read_to_string(guest_dir().join("kernel-version"))
        .unwrap()
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut transcript = String::new();
    loop {
        let r = fv.run_with(
            &["console", "vm1", "--timeout", "60s", "--quiet", "3s"],
            Some(b"uname -a\n"),
            Duration::from_secs(90),
        );
        assert!(
            r.status.success(),
            "{}\n{}",
            r.describe(),
            w.up.log_tail(60)
        );
        if r.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("Linux ") && l.contains(&kernel))
        {
            break;
        }
        transcript.push_str(&r.stdout);
        assert!(
            Instant::now() < deadline,
            "no `Linux ... {kernel}` line from `uname -a` on the console; it said:\n{transcript}"
        );
        std::thread::sleep(Duration::from_secs(3));
    }

    // pause/unpause with --wait, and the Paused condition on the VMI.
    let r = fv.run_with(
        &["pause", "vm", "vm1", "--wait", "--timeout", "60s"],
        None,
        Duration::from_secs(90),
    );
    assert!(r.status.success(), "{}", r.describe());
    assert!(r.stdout.contains("VM vm1 is Paused"), "{}", r.describe());
    let vmi = json(&fv.ok(&["get", "vmi", "vm1", "-o", "json"]));
    let paused = vmi["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Paused" && c["status"] == "True");
    assert!(paused, "{vmi}");
    let r = fv.run_with(
        &["unpause", "vmi", "vm1", "--wait", "--timeout", "60s"],
        None,
        Duration::from_secs(90),
    );
    assert!(r.status.success(), "{}", r.describe());
    assert!(
        r.stdout.contains("VMI vm1 is running unpaused"),
        "{}",
        r.describe()
    );

    // port-forward: a local port reaches the guest's echo server on 7777.
    let port = ferrovirt_e2e::free_port().unwrap();
    let mut forward = fv.spawn(&["port-forward", "vm/vm1", &format!("{port}:7777")]);
    forward.wait_for_line(Duration::from_secs(30), |l| l.contains(&format!("127.0.0.1:{port} -> 7777")));
    for round in 0..2 {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let line = format!("hello through port-forward {round}\n");
        std::io::Write::write_all(&mut tcp, line.as_bytes()).unwrap();
        let mut back = vec![0u8; line.len()];
        std::io::Read::read_exact(&mut tcp, &mut back).unwrap();
        assert_eq!(String::from_utf8_lossy(&back), line);
    }
    drop(forward);

    // ssh: the ProxyCommand path reaches the guest's port 22 (the guest's "sshd" only sends a banner,
    // so ssh fails after reading it; ssh -v shows what it read).
    let r = fv.run_with(&["ssh", "root@vm/vm1", "--", "-v", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"], None, Duration::from_secs(60));
    assert!(r.stderr.contains("remote software version ferrovirt-test-guest"), "{}", r.describe());
    assert!(!r.status.success(), "{}", r.describe());

    // The guest has no agent: guestosinfo says so.
    let r = fv.fails(&["guestosinfo", "vm1"], 1);
    assert!(r.stderr.contains("agent"), "{}", r.describe());

    // On a terminal: raw mode, keys reach the guest, Ctrl-] leaves, the terminal is as before.
    if !Tmux::available() {
        panic!("tmux is needed for the terminal checks (apt-get install tmux)");
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("session.sh");
    let mut env = String::new();
    for (k, v) in [
        ("KUBECONFIG", fv.kubeconfig().to_str().unwrap()),
        ("HOME", dir.path().to_str().unwrap()),
        ("NO_COLOR", "1"),
    ] {
        env.push_str(&format!("export {k}='{v}'\n"));
    }
    std::fs::write(
        &script,
        format!(
            "{env}d='{d}'\nstty -g > \"$d/before\"\n'{bin}' console vm1\necho \"exit=$?\" > \"$d/exit\"\nstty -g > \"$d/after\"\necho DONE\nsleep 600\n",
            d = dir.path().display(),
            bin = common::fvctl_bin().display()
        ),
    )
    .unwrap();
    let tmux = Tmux::start(&format!("sh {}", script.display()));
    tmux.wait_for(Duration::from_secs(30), "The escape sequence is ^]");
    tmux.send_keys(&["-l", "uname -a"]);
    tmux.send_keys(&["Enter"]);
    let screen = tmux.wait_for(Duration::from_secs(60), &kernel);
    assert!(
        screen
            .lines()
            .any(|l| l.contains("Linux ") && l.contains(&kernel)),
        "{screen}"
    );
    tmux.send_keys(&["C-]"]);
    tmux.wait_for(Duration::from_secs(20), "DONE");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    assert_eq!(read("exit").trim(), "exit=0");
    assert!(!read("before").trim().is_empty());
    assert_eq!(
        read("before"),
        read("after"),
        "the terminal settings are restored"
    );
    drop(tmux);

    // vnc: a screenshot (the VGA console's text, so not one colour), and a local port that speaks RFB.
    let shot = dir.path().join("vm1.png");
    let out = fv.ok(&["vnc", "vm1", "--screenshot", shot.to_str().unwrap()]);
    assert!(out.starts_with(&format!("{} (", shot.display())), "{out}");
    let (width, height, pixels) = decode_png(&std::fs::read(&shot).unwrap());
    assert!(width >= 320 && height >= 200, "{width}x{height}");
    assert!(
        pixels.chunks(3).any(|p| p != &pixels[..3]),
        "the screen shows something"
    );
    let port = ferrovirt_e2e::free_port().unwrap();
    let mut proxy = fv.spawn(&["vnc", "vm1", "--port", &port.to_string()]);
    proxy.wait_for_line(Duration::from_secs(30), |l| {
        l.contains(&format!("127.0.0.1:{port}"))
    });
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut hello = [0u8; 12];
    std::io::Read::read_exact(&mut tcp, &mut hello).unwrap();
    assert!(hello.starts_with(b"RFB 003."), "{hello:?}");
    drop(tcp);
    drop(proxy);

    // soft-reboot: the guest reboots in place (same instance).
    let uid = vmi_uid(fv);
    let r = fv.run(&["soft-reboot", "vm1"]);
    assert!(r.status.success(), "{}", r.describe());
    assert_eq!(vmi_uid(fv), uid);
}

/// Width, height and RGB pixels of a PNG as fvctl writes it (8-bit RGB, filter 0 on every row).
fn decode_png(data: &[u8]) -> (u32, u32, Vec<u8>) {
    assert_eq!(&data[..8], b"\x89PNG\r\n\x1a\n");
    let (mut at, mut width, mut height, mut idat) = (8, 0, 0, Vec::new());
    while at + 8 <= data.len() {
        let len = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        let kind = &data[at + 4..at + 8];
        let body = &data[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(body[..4].try_into().unwrap());
                height = u32::from_be_bytes(body[4..8].try_into().unwrap());
                assert_eq!(&body[8..10], &[8, 2], "8-bit RGB");
            }
            b"IDAT" => idat.extend_from_slice(body),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&idat[..]), &mut raw).unwrap();
    let row = width as usize * 3 + 1;
    assert_eq!(raw.len(), row * height as usize);
    let pixels = raw.chunks(row).flat_map(|r| r[1..].to_vec()).collect();
    (width, height, pixels)
}
