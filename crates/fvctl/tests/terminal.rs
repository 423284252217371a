//! fvctl on a terminal (a tmux pane): `--wait` shows a spinner with the state while it waits and
//! clears it at the end; off a terminal the same wait prints plain lines. Against a plain API
//! server (no controller), so the VM never starts and the wait runs into its timeout.

mod common;

use std::time::Duration;

use common::{vm_yaml, Fvctl, Tmux};
use ferrovirt_e2e::ApiServerProcess;

const SPINNER: &[char] = &['⠁', '⠂', '⠄', '⡀', '⢀', '⠠', '⠐', '⠈'];

#[test]
fn wait_shows_a_spinner_on_a_terminal_and_lines_elsewhere() {
    assert!(
        Tmux::available(),
        "tmux is needed for the terminal checks (apt-get install tmux)"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServerProcess::start(dir.path().join("server"), None)
        .expect("ferrovirt apiserver starts");
    let fv = Fvctl::new(server.kubeconfig());
    fv.ok_stdin(
        &["apply", "-f", "-"],
        &vm_yaml(&fv, "vm1", "127.0.0.1:5000/guest:latest")
            .replace("runStrategy: Always", "runStrategy: Halted"),
    );

    let script = dir.path().join("session.sh");
    std::fs::write(
        &script,
        format!(
            "export KUBECONFIG='{kc}' HOME='{home}'\n'{bin}' start vm1 --wait --timeout 6s\necho \"exit=$?\"\nsleep 600\n",
            kc = server.kubeconfig().display(),
            home = dir.path().display(),
            bin = common::fvctl_bin().display()
        ),
    )
    .unwrap();
    let tmux = Tmux::start(&format!("sh {}", script.display()));
    let screen = tmux.wait_for(Duration::from_secs(20), "VM vm1: ");
    let line = screen
        .lines()
        .find(|l| l.contains("VM vm1: "))
        .unwrap()
        .to_string();
    assert!(
        line.starts_with(SPINNER),
        "a spinner leads the state line: {line:?}"
    );
    assert!(
        line.contains("VM vm1: no status yet (no instance)") && line.ends_with(']'),
        "{line:?}"
    );
    // The spinner turns.
    let mut frames = std::collections::BTreeSet::new();
    for _ in 0..20 {
        if let Some(l) = tmux.capture().lines().find(|l| l.contains("VM vm1: ")) {
            frames.extend(l.chars().next());
        }
        std::thread::sleep(Duration::from_millis(60));
    }
    assert!(frames.len() >= 2, "the spinner moves: {frames:?}");
    // At the timeout the spinner is gone and the error is there, with exit code 4.
    let screen = tmux.wait_for(Duration::from_secs(30), "exit=");
    assert!(screen.contains("exit=4"), "{screen}");
    assert!(
        screen.contains("error: timed out after 6s waiting for VM \"vm1\" to be Running"),
        "{screen}"
    );
    assert!(
        !screen.lines().any(|l| l.starts_with(SPINNER)),
        "the spinner is cleared:\n{screen}"
    );
    drop(tmux);

    // Not a terminal: one plain line per state, no spinner characters.
    let r = fv.fails(&["start", "vm1", "--wait", "--timeout", "2s"], 4);
    assert!(
        r.stderr
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("VM vm1: ")),
        "{}",
        r.describe()
    );
    assert!(!r.stderr.contains(SPINNER), "{}", r.describe());
}
