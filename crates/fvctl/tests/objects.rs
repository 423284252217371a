//! fvctl's object commands against a real `ferrovirt apiserver` process (no controller, no
//! QEMU: fast): apply is idempotent, `-o yaml` goes back through apply, get/describe/delete/edit,
//! selectors and namespaces, errors and exit codes, `create vm`, completion and help.

mod common;

use std::time::Duration;

use common::{vm_yaml, Fvctl};
use ferrovirt_e2e::ApiServerProcess;
use serde_json::Value;

const IMAGE: &str = "127.0.0.1:5000/guest:latest";

fn server() -> (tempfile::TempDir, ApiServerProcess, Fvctl) {
    let dir = tempfile::tempdir().unwrap();
    let server = ApiServerProcess::start(dir.path().join("server"), None)
        .expect("ferrovirt apiserver starts");
    let fv = Fvctl::new(server.kubeconfig());
    (dir, server, fv)
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

#[test]
fn apply_twice_is_unchanged_and_get_yaml_round_trips() {
    let (_dir, _server, fv) = server();
    let manifest = vm_yaml(&fv, "vm1", IMAGE);
    assert_eq!(
        fv.ok_stdin(&["apply", "-f", "-"], &manifest),
        "virtualmachine.kubevirt.io/vm1 created\n"
    );
    assert_eq!(
        fv.ok_stdin(&["apply", "-f", "-"], &manifest),
        "virtualmachine.kubevirt.io/vm1 unchanged\n"
    );

    // A change is configured, and then unchanged again.
    let bigger = manifest.replace("memory: 128Mi", "memory: 192Mi");
    assert_ne!(bigger, manifest);
    assert_eq!(
        fv.ok_stdin(&["apply", "-f", "-"], &bigger),
        "virtualmachine.kubevirt.io/vm1 configured\n"
    );
    assert_eq!(
        fv.ok_stdin(&["apply", "-f", "-"], &bigger),
        "virtualmachine.kubevirt.io/vm1 unchanged\n"
    );
    let live = json(&fv.ok(&["get", "vm", "vm1", "-o", "json"]));
    assert_eq!(
        live["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"],
        "192Mi"
    );

    // `get -o yaml` (status, uid, resourceVersion, defaults and all) applies back: the spec stays
    // as it is, and a second apply of the same output is unchanged.
    let yaml = fv.ok(&["get", "vm", "vm1", "-o", "yaml"]);
    assert!(
        yaml.contains("resourceVersion:") && yaml.contains("uid:"),
        "{yaml}"
    );
    let out = fv.ok_stdin(&["apply", "-f", "-"], &yaml);
    assert!(
        out == "virtualmachine.kubevirt.io/vm1 configured\n"
            || out == "virtualmachine.kubevirt.io/vm1 unchanged\n",
        "{out}"
    );
    assert_eq!(
        fv.ok_stdin(&["apply", "-f", "-"], &yaml),
        "virtualmachine.kubevirt.io/vm1 unchanged\n"
    );
    let after = json(&fv.ok(&["get", "vm", "vm1", "-o", "json"]));
    assert_eq!(after["spec"], live["spec"]);

    // A field the last apply set and the manifest drops is removed.
    let labelled = bigger.replacen(
        "metadata:\n  name: vm1\n",
        "metadata:\n  name: vm1\n  labels:\n    app: web\n",
        1,
    );
    assert_eq!(
        fv.ok_stdin(&["apply", "-f", "-"], &labelled),
        "virtualmachine.kubevirt.io/vm1 configured\n"
    );
    assert_eq!(
        json(&fv.ok(&["get", "vm", "vm1", "-o", "json"]))["metadata"]["labels"]["app"],
        "web"
    );
    assert_eq!(
        fv.ok_stdin(&["apply", "-f", "-"], &bigger),
        "virtualmachine.kubevirt.io/vm1 configured\n"
    );
    assert!(
        json(&fv.ok(&["get", "vm", "vm1", "-o", "json"]))["metadata"]
            .get("labels")
            .is_none_or(|l| l.get("app").is_none())
    );

    // Several documents and a folder.
    let dir = tempfile::tempdir().unwrap();
    let two = format!(
        "{}---\n{}",
        vm_yaml(&fv, "vm2", IMAGE),
        vm_yaml(&fv, "vm3", IMAGE)
    );
    std::fs::write(dir.path().join("two.yaml"), &two).unwrap();
    assert_eq!(
        fv.ok(&["apply", "-f", dir.path().to_str().unwrap()]),
        "virtualmachine.kubevirt.io/vm2 created\nvirtualmachine.kubevirt.io/vm3 created\n"
    );
    // kubectl reads what fvctl applied as its own last-applied configuration.
    let vm2 = json(&fv.ok(&["get", "vm", "vm2", "-o", "json"]));
    assert!(
        vm2["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    // A dry run stores nothing.
    let vm4 = vm_yaml(&fv, "vm4", IMAGE);
    assert_eq!(
        fv.ok_stdin(&["apply", "--dry-run", "-f", "-"], &vm4),
        "virtualmachine.kubevirt.io/vm4 created (dry run)\n"
    );
    fv.fails(&["get", "vm", "vm4"], 3);
}

#[test]
fn get_formats_selectors_and_namespaces() {
    let (_dir, _server, fv) = server();
    fv.ok_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n",
    );
    let web = vm_yaml(&fv, "web1", IMAGE).replacen(
        "metadata:\n  name: web1\n",
        "metadata:\n  name: web1\n  labels:\n    app: web\n",
        1,
    );
    fv.ok_stdin(&["apply", "-f", "-"], &web);
    fv.ok_stdin(&["apply", "-f", "-"], &vm_yaml(&fv, "db1", IMAGE));
    fv.ok_stdin(
        &["apply", "-n", "prod", "-f", "-"],
        &vm_yaml(&fv, "other", IMAGE),
    );

    // The table kubectl shows (server-side printing): NAME AGE STATUS READY.
    let table = fv.ok(&["get", "vms"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["NAME", "AGE", "STATUS", "READY"],
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[1].starts_with("db1 ") && lines[2].starts_with("web1 "),
        "{table}"
    );
    assert_eq!(fv.ok(&["get", "vms", "--no-headers"]).lines().count(), 2);

    // Names in every spelling.
    for word in [
        "vm",
        "vms",
        "virtualmachine",
        "virtualmachines",
        "virtualmachines.kubevirt.io",
    ] {
        assert_eq!(
            fv.ok(&["get", word, "web1", "-o", "name"]),
            "virtualmachine.kubevirt.io/web1\n",
            "{word}"
        );
    }
    assert_eq!(
        fv.ok(&["get", "vm/web1", "vm/db1", "-o", "name"]),
        "virtualmachine.kubevirt.io/web1\nvirtualmachine.kubevirt.io/db1\n"
    );

    // -l, -n, -A.
    assert_eq!(
        fv.ok(&["get", "vms", "-l", "app=web", "-o", "name"]),
        "virtualmachine.kubevirt.io/web1\n"
    );
    assert_eq!(
        fv.ok(&["get", "vms", "-l", "app!=web", "-o", "name"]),
        "virtualmachine.kubevirt.io/db1\n"
    );
    assert_eq!(
        fv.ok(&["get", "vms", "-n", "prod", "-o", "name"]),
        "virtualmachine.kubevirt.io/other\n"
    );
    let all = fv.ok(&["get", "vms", "-A"]);
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("prod ") && l.contains(" other ")),
        "{all}"
    );
    assert_eq!(all.lines().count(), 4, "{all}");

    // JSON and YAML: one object as itself, several as a List with apiVersion/kind on each item.
    let one = json(&fv.ok(&["get", "vm", "web1", "-o", "json"]));
    assert_eq!(
        (one["kind"].as_str(), one["metadata"]["name"].as_str()),
        (Some("VirtualMachine"), Some("web1"))
    );
    let list = json(&fv.ok(&["get", "vms", "-A", "-o", "json"]));
    assert_eq!(list["kind"], "List");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert!(items
        .iter()
        .all(|i| i["apiVersion"] == "kubevirt.io/v1" && i["kind"] == "VirtualMachine"));
    let yaml: Value = serde_yaml_ng::from_str(&fv.ok(&["get", "vms", "-o", "yaml"])).unwrap();
    assert_eq!(yaml["items"].as_array().unwrap().len(), 2);

    // Other kinds, and nothing found.
    let nodes = fv.run(&["get", "nodes"]);
    assert!(nodes.status.success(), "{}", nodes.describe());
    let vmis = fv.run(&["get", "vmis", "-o", "wide"]);
    assert!(
        vmis.status.success() && vmis.stdout.is_empty(),
        "{}",
        vmis.describe()
    );
    assert_eq!(vmis.stderr, "No resources found in default namespace.\n");
    let ns = fv.ok(&["get", "namespaces"]);
    assert!(ns.lines().any(|l| l.starts_with("prod ")), "{ns}");
    fv.ok(&["get", "pods"]);
    fv.ok(&["get", "events", "-A"]);
    fv.ok(&["get", "vmirs"]);

    // Several types at once.
    let both = fv.ok(&["get", "vms,vmis", "-o", "name"]);
    assert_eq!(
        both,
        "virtualmachine.kubevirt.io/db1\nvirtualmachine.kubevirt.io/web1\n"
    );
}

#[test]
fn watch_prints_changes() {
    let (_dir, _server, fv) = server();
    fv.ok_stdin(&["apply", "-f", "-"], &vm_yaml(&fv, "vm1", IMAGE));
    let mut table = fv.spawn(&["get", "vms", "-w"]);
    table.wait_for_line(Duration::from_secs(20), |l| l.starts_with("NAME"));
    table.wait_for_line(Duration::from_secs(20), |l| l.starts_with("vm1 "));
    let mut one = fv.spawn(&["get", "vm", "vm2", "-w", "-o", "name"]);
    fv.ok_stdin(&["apply", "-f", "-"], &vm_yaml(&fv, "vm2", IMAGE));
    table.wait_for_line(Duration::from_secs(20), |l| l.starts_with("vm2 "));
    one.wait_for_line(Duration::from_secs(20), |l| {
        l == "virtualmachine.kubevirt.io/vm2"
    });
    fv.ok(&["delete", "vm", "vm1"]);
    table.wait_for_line(Duration::from_secs(20), |l| l.starts_with("vm1 "));
    assert!(
        !one.seen().iter().any(|l| l.contains("vm1")),
        "{:?}",
        one.seen()
    );
}

#[test]
fn describe_delete_and_edit() {
    let (dir, _server, mut fv) = server();
    fv.ok_stdin(&["apply", "-f", "-"], &vm_yaml(&fv, "vm1", IMAGE));
    let text = fv.ok(&["describe", "vm", "vm1"]);
    for needle in [
        "Name:         vm1",
        "Namespace:    default",
        "Kind:         VirtualMachine",
        "Run Strategy:  Always",
        "Image:  127.0.0.1:5000/guest:latest",
        "Events:",
    ] {
        assert!(text.contains(needle), "{needle:?} in:\n{text}");
    }
    let missing = fv.fails(&["describe", "vm", "nope"], 3);
    assert_eq!(
        missing.stderr,
        "error: virtualmachine \"nope\" not found in namespace \"default\"; see `fvctl get vms`\n"
    );

    // edit: $EDITOR changes the YAML, the object is updated; an unchanged save cancels.
    let editor = dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/memory: 128Mi/memory: 160Mi/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    fv.env("EDITOR", editor.to_str().unwrap());
    assert_eq!(
        fv.ok(&["edit", "vm", "vm1"]),
        "virtualmachine.kubevirt.io/vm1 edited\n"
    );
    let live = json(&fv.ok(&["get", "vm", "vm1", "-o", "json"]));
    assert_eq!(
        live["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"],
        "160Mi"
    );
    assert_eq!(
        fv.ok(&["edit", "vm", "vm1"]),
        "Edit cancelled, no changes made.\n"
    );

    // An edit the server refuses reopens the editor with the causes on top; saving it unchanged
    // again gives up with the server's message.
    let bad_editor = dir.path().join("bad-editor.sh");
    std::fs::write(
        &bad_editor,
        format!(
            "#!/bin/sh\ncp \"$1\" {log}.$(ls {log}.* 2>/dev/null | wc -l)\nsed -i 's/runStrategy: Always/runStrategy: Sometimes/' \"$1\"\n",
            log = dir.path().join("seen").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &bad_editor,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fv.env("EDITOR", bad_editor.to_str().unwrap());
    let refused = fv.fails(&["edit", "vm/vm1"], 1);
    assert!(
        refused.stderr.contains("Sometimes"),
        "{}",
        refused.describe()
    );
    let reopened = std::fs::read_to_string(dir.path().join("seen.1")).unwrap();
    assert!(
        reopened
            .lines()
            .any(|l| l.starts_with("# ") && l.contains("Sometimes")),
        "{reopened}"
    );

    // delete: by name, by label, from a manifest; missing objects.
    fv.ok_stdin(
        &["apply", "-f", "-"],
        &vm_yaml(&fv, "vm2", IMAGE).replacen(
            "name: vm2\n",
            "name: vm2\n  labels:\n    app: web\n",
            1,
        ),
    );
    let vm3 = vm_yaml(&fv, "vm3", IMAGE);
    fv.ok_stdin(&["apply", "-f", "-"], &vm3);
    assert_eq!(
        fv.ok(&["delete", "vm", "vm1", "--wait"]),
        "virtualmachine.kubevirt.io \"vm1\" deleted\n"
    );
    fv.fails(&["get", "vm", "vm1"], 3);
    assert_eq!(
        fv.ok(&["delete", "vms", "-l", "app=web"]),
        "virtualmachine.kubevirt.io \"vm2\" deleted\n"
    );
    assert_eq!(
        fv.ok_stdin(&["delete", "-f", "-"], &vm3),
        "virtualmachine.kubevirt.io \"vm3\" deleted\n"
    );
    let gone = fv.fails(&["delete", "vm", "vm3"], 3);
    assert_eq!(
        gone.stderr,
        "error: virtualmachine \"vm3\" not found in namespace \"default\"; see `fvctl get vms`\n"
    );
    fv.ok(&["delete", "vm", "vm3", "--ignore-not-found"]);
    fv.fails(&["delete", "vms"], 2);
    assert_eq!(fv.ok(&["get", "vms", "-o", "name"]), "");
}

#[test]
fn errors_say_what_to_do_and_exit_codes_are_documented() {
    let (dir, server, fv) = server();
    // Not found (3), with the hint.
    let r = fv.fails(&["get", "vm", "x"], 3);
    assert_eq!(
        r.stderr,
        "error: virtualmachine \"x\" not found in namespace \"default\"; see `fvctl get vms`\n"
    );
    let r = fv.fails(&["get", "vmi", "x", "-n", "kube-system"], 3);
    assert_eq!(r.stderr, "error: virtualmachineinstance \"x\" not found in namespace \"kube-system\"; see `fvctl get vmis -n kube-system`\n");
    fv.fails(&["start", "x"], 3);
    fv.fails(&["stop", "x"], 3);

    // Usage (2): unknown types, bad flags, incomplete manifests, clap's own errors.
    let r = fv.fails(&["get", "vmz"], 2);
    assert!(
        r.stderr.contains("doesn't have a resource type \"vmz\"") && r.stderr.contains("vms, vmis"),
        "{}",
        r.describe()
    );
    fv.fails(&["get"], 2);
    fv.fails(&["stop", "x", "--force"], 2);
    fv.fails(&["start", "x", "--wait", "--timeout", "soon"], 2);
    let r = fv.run_with(
        &["apply", "-f", "-"],
        Some(b"kind: VirtualMachine\nmetadata: {name: a}\n"),
        common::COMMAND_TIMEOUT,
    );
    assert_eq!(
        (r.code(), r.stderr.as_str()),
        (2, "error: <stdin>: apiVersion is missing\n")
    );
    fv.fails(&["apply", "-f", "/nonexistent.yaml"], 2);

    // A refused manifest (1): the server's message and each field cause on its own line.
    let bad = vm_yaml(&fv, "badname", IMAGE)
        .replace("name: badname\n", "name: Bad_Name\n")
        .replace(
            "runStrategy: Always",
            "runStrategy: Always\n  running: true",
        );
    let r = fv.run_with(
        &["apply", "-f", "-"],
        Some(bad.as_bytes()),
        common::COMMAND_TIMEOUT,
    );
    assert_eq!(r.code(), 1, "{}", r.describe());
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert_eq!(
        lines[0], "error: VirtualMachine.kubevirt.io \"Bad_Name\" is invalid:",
        "{}",
        r.stderr
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  - metadata.name: Invalid value: \"Bad_Name\"")),
        "{}",
        r.stderr
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  - spec.running: ")),
        "{}",
        r.stderr
    );
    let unknown =
        vm_yaml(&fv, "vm9", IMAGE).replace("        cpu:\n", "        bogus: 1\n        cpu:\n");
    let r = fv.run_with(
        &["create", "-f", "-"],
        Some(unknown.as_bytes()),
        common::COMMAND_TIMEOUT,
    );
    assert_eq!(r.code(), 1, "{}", r.describe());
    assert!(
        r.stderr.contains("  - spec.template.spec.domain.bogus: "),
        "{}",
        r.stderr
    );
    // No debug dumps or backtraces anywhere.
    assert!(
        !r.stderr.contains("Error {")
            && !r.stderr.contains("backtrace")
            && !r.stderr.contains("panicked"),
        "{}",
        r.stderr
    );

    // A wait that runs out (4): no controller here, so the VM never runs.
    fv.ok_stdin(
        &["apply", "-f", "-"],
        &vm_yaml(&fv, "vm1", IMAGE).replace("runStrategy: Always", "runStrategy: Halted"),
    );
    let r = fv.fails(&["start", "vm1", "--wait", "--timeout", "2s"], 4);
    assert!(
        r.stdout.contains("VM vm1 was scheduled to start"),
        "{}",
        r.describe()
    );
    assert!(
        r.stderr.contains(
            "error: timed out after 2s waiting for VM \"vm1\" to be Running; last seen: "
        ),
        "{}",
        r.describe()
    );

    // No server (5): a kubeconfig pointing at a closed port, and no kubeconfig at all.
    let text = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let closed = ferrovirt_e2e::free_port().unwrap();
    let moved = regex_replace_port(&text, closed);
    let kc = dir.path().join("closed.kubeconfig");
    std::fs::write(&kc, moved).unwrap();
    let r = Fvctl::new(&kc).fails(&["get", "vms"], 5);
    assert!(
        r.stderr
            .starts_with("error: cannot reach the API server at https://127.0.0.1:"),
        "{}",
        r.describe()
    );
    let r = Fvctl::new(dir.path().join("missing.kubeconfig")).fails(&["get", "vms"], 5);
    assert!(
        r.stderr.contains("cannot read kubeconfig"),
        "{}",
        r.describe()
    );

    // --help documents the exit codes.
    let help = fv.ok(&["--help"]);
    for code in [
        "0  success",
        "2  usage error",
        "3  not found",
        "4  timeout",
        "5  no API server",
    ] {
        assert!(help.contains(code), "{code:?} in:\n{help}");
    }
}

fn regex_replace_port(kubeconfig: &str, port: u16) -> String {
    kubeconfig
        .lines()
        .map(|l| match l.find("https://127.0.0.1:") {
            Some(i) => format!("{}https://127.0.0.1:{port}", &l[..i]),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn create_vm_prints_a_manifest_the_server_accepts() {
    let (dir, _server, fv) = server();
    let script = dir.path().join("init.sh");
    std::fs::write(&script, "#!/bin/sh\necho hello from cloud-init\n").unwrap();
    let manifest = fv.ok(&[
        "create",
        "vm",
        "--name",
        "vm1",
        "--image",
        IMAGE,
        "--memory",
        "256Mi",
        "--cpus",
        "2",
        "--cloud-init-script",
        script.to_str().unwrap(),
        "--run-strategy",
        "Manual",
    ]);
    let v: Value = serde_yaml_ng::from_str(&manifest).unwrap();
    assert_eq!(v["kind"], "VirtualMachine");
    assert_eq!(v["spec"]["runStrategy"], "Manual");
    let t = &v["spec"]["template"]["spec"];
    assert_eq!(t["domain"]["cpu"]["cores"], 2);
    assert_eq!(
        t["volumes"][1]["cloudInitNoCloud"]["userData"],
        "#!/bin/sh\necho hello from cloud-init\n"
    );
    assert!(
        manifest.contains("userData: |\n"),
        "multi-line scripts stay readable:\n{manifest}"
    );
    assert_eq!(
        fv.ok_stdin(&["create", "-f", "-"], &manifest),
        "virtualmachine.kubevirt.io/vm1 created\n"
    );
    let again = fv.run_with(
        &["create", "-f", "-"],
        Some(manifest.as_bytes()),
        common::COMMAND_TIMEOUT,
    );
    assert_eq!(again.code(), 1, "{}", again.describe());
    assert!(
        again.stderr.contains("already exists"),
        "{}",
        again.describe()
    );
    let live = json(&fv.ok(&["get", "vm", "vm1", "-o", "json"]));
    assert_eq!(
        live["spec"]["template"]["spec"]["domain"]["resources"]["requests"]["memory"],
        "256Mi"
    );

    // --apply applies it, and again is unchanged.
    let args = ["create", "vm", "--name", "vm2", "--image", IMAGE, "--apply"];
    assert_eq!(fv.ok(&args), "virtualmachine.kubevirt.io/vm2 created\n");
    assert_eq!(fv.ok(&args), "virtualmachine.kubevirt.io/vm2 unchanged\n");
    // Without --name a valid name is made up.
    let generated: Value =
        serde_yaml_ng::from_str(&fv.ok(&["create", "vm", "--image", IMAGE])).unwrap();
    assert!(generated["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("vm-"));
    // Bad flags are named.
    let r = fv.fails(
        &[
            "create", "vm", "--name", "x", "--image", IMAGE, "--memory", "lots",
        ],
        2,
    );
    assert!(
        r.stderr.starts_with("error: --memory \"lots\""),
        "{}",
        r.describe()
    );
}

#[test]
fn completion_version_and_cluster_info() {
    let (_dir, server, fv) = server();
    for shell in ["bash", "zsh", "fish"] {
        let script = fv.ok(&["completion", shell]);
        assert!(
            script.contains("fvctl")
                && script.contains("console")
                && script.contains("soft-reboot"),
            "{shell}:\n{script}"
        );
    }
    let bash = fv.ok(&["completion", "bash"]);
    assert!(bash.contains("complete -F"), "{bash}");
    let version = fv.ok(&["version"]);
    assert!(
        version.starts_with(&format!(
            "Client Version: v{}\nServer Version: v1.",
            env!("CARGO_PKG_VERSION")
        )),
        "{version}"
    );
    assert_eq!(
        Fvctl::new("/nonexistent").ok(&["version", "--client"]),
        format!("Client Version: v{}\n", env!("CARGO_PKG_VERSION"))
    );
    let info = fv.ok(&["cluster-info"]);
    assert!(
        info.starts_with(&format!(
            "ferrovirt API server is running at {}\n",
            server.url()
        )),
        "{info}"
    );
    assert!(info.contains("Nodes ready: 0/0"), "{info}");
    // Every subcommand has help.
    for cmd in [
        "get",
        "describe",
        "apply",
        "create",
        "delete",
        "edit",
        "start",
        "stop",
        "restart",
        "pause",
        "unpause",
        "soft-reboot",
        "console",
        "guestosinfo",
        "image",
        "cluster-info",
        "version",
        "completion",
    ] {
        let help = fv.ok(&[cmd, "--help"]);
        assert!(help.contains("Usage: fvctl"), "{cmd}:\n{help}");
    }
    fv.ok(&["create", "vm", "--help"]);
    fv.ok(&["image", "push", "--help"]);
}
