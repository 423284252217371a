//! kubectl against a `ferrovirt apiserver` process, typed as a user types it.
//!
//! Every scenario runs twice, as two tests: `<scenario>::kubectl_1_20` with Debian's kubectl 1.20
//! (`.tools/kubectl-1.20/usr/bin/kubectl`; missing = failure, run `scripts/fetch-kubectl-1.20.sh`)
//! and `<scenario>::kubectl_on_path` with the kubectl on `PATH` (skipped, saying so, when there
//! is none). Each test starts its own API server on the embedded store in a temporary folder.
//! Client-side validation stays on (kubectl's default), so `apply` and `create` also exercise the
//! server's OpenAPI document.
//!
//! The tests are plain `#[test]`s: they only run processes and wait for them, nothing is async.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use ferrovirt_e2e::{
    fixture, json_subset, kubectl_1_20, kubectl_on_path, ApiServerProcess, Kubectl,
};
use serde_json::Value;

/// How long a `kubectl get -w` may take to print an expected line.
const WATCH_TIMEOUT: Duration = Duration::from_secs(30);

/// Which kubectl a test runs.
#[derive(Clone, Copy)]
enum Which {
    V1_20,
    OnPath,
}

/// Start a fresh API server and run `scenario` with the chosen kubectl against it.
fn run(which: Which, scenario: fn(&Kubectl)) {
    let bin = match which {
        Which::V1_20 => kubectl_1_20().unwrap_or_else(|e| panic!("{e:#}")),
        Which::OnPath => match kubectl_on_path() {
            Some(bin) => bin,
            None => {
                println!("skipped: there is no kubectl on PATH");
                return;
            }
        },
    };
    println!("kubectl: {}", bin.display());
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = ApiServerProcess::start(dir.path().join("data"), None)
        .unwrap_or_else(|e| panic!("cannot start the API server: {e:#}"));
    let kubectl = Kubectl::new(bin, server.kubeconfig()).expect("kubectl");
    scenario(&kubectl);
    drop(server);
}

/// One test per kubectl for each scenario, in a module named after the scenario.
macro_rules! with_both_kubectls {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn kubectl_1_20() {
                super::run(super::Which::V1_20, super::$scenario);
            }

            #[test]
            fn kubectl_on_path() {
                super::run(super::Which::OnPath, super::$scenario);
            }
        }
    )*};
}

with_both_kubectls!(
    vm_apply_get_describe,
    vm_reapply_is_unchanged,
    vm_reapply_changed_is_configured,
    vm_patch_label_annotate,
    vm_delete,
    vm_watch,
    node_unschedulable_patch_and_cordon,
    service_strategic_merge_patch,
    errors_name_the_problem,
);

// ---------------------------------------------------------------------------------------------
// Scenarios

/// A VM from a KubeVirt-style manifest: `apply`, then `get` as a table, YAML and JSON, `describe`.
fn vm_apply_get_describe(k: &Kubectl) {
    let (vm_file, manifest) = vm_fixture();
    // --validate=true is kubectl's default; said explicitly, as the OpenAPI document is needed.
    let out = k.ok(&["apply", "--validate=true", "-f", vm_file]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm created");

    // kubectl get vms: the server's table with KubeVirt's printer columns.
    let out = k.ok(&["get", "vms"]);
    let table = Table::parse(&out);
    assert_eq!(
        table.header,
        ["NAME", "AGE", "STATUS", "READY"],
        "kubectl get vms:\n{out}"
    );
    let row = table
        .row("testvm")
        .unwrap_or_else(|| panic!("no testvm row in:\n{out}"));
    assert!(
        is_age(&row["AGE"]),
        "AGE {:?} is not an age, in:\n{out}",
        row["AGE"]
    );
    assert_eq!(table.rows.len(), 1, "{out}");

    // The same through the full resource name and a label selector.
    let out = k.ok(&[
        "get",
        "virtualmachines.kubevirt.io",
        "-l",
        "kubevirt.io/vm=testvm",
    ]);
    assert!(Table::parse(&out).row("testvm").is_some(), "{out}");
    let out = k.run(&["get", "vms", "-l", "kubevirt.io/vm=other"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_contains(&text, "No resources found");

    // VMs are in the `all` category, as KubeVirt declares them.
    let out = k.ok(&["get", "all"]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm");

    // kubectl get vm testvm -o yaml: everything the manifest says, plus the server's metadata.
    let out = k.ok(&["get", "vm", "testvm", "-o", "yaml"]);
    let vm: Value =
        serde_yaml_ng::from_str(&out).unwrap_or_else(|e| panic!("not YAML ({e}):\n{out}"));
    let expected: Value = serde_yaml_ng::from_str(&manifest).expect("fixture is YAML");
    if let Err(difference) = json_subset(&expected, &vm) {
        panic!("the VM differs from its manifest: {difference}\n{out}");
    }
    for field in ["uid", "resourceVersion", "creationTimestamp"] {
        let value = vm["metadata"][field].as_str().unwrap_or_default();
        assert!(!value.is_empty(), "metadata.{field} is empty in:\n{out}");
    }
    assert_eq!(vm["metadata"]["namespace"], "default", "{out}");
    assert_eq!(vm["metadata"]["generation"], 1, "{out}");
    let last_applied = vm["metadata"]["annotations"]
        ["kubectl.kubernetes.io/last-applied-configuration"]
        .as_str()
        .unwrap_or_else(|| panic!("no last-applied-configuration annotation in:\n{out}"));
    assert_contains(last_applied, "\"runStrategy\":\"Halted\"");

    // The same object as JSON.
    let out = k.ok(&["get", "vm", "testvm", "-o", "json"]);
    let as_json: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    assert_eq!(as_json["metadata"]["uid"], vm["metadata"]["uid"]);

    let out = k.ok(&["describe", "vm", "testvm"]);
    for needle in [
        "Name:",
        "testvm",
        "Namespace:",
        "default",
        "API Version:",
        "kubevirt.io/v1",
        "Kind:",
        "VirtualMachine",
        "Run Strategy:",
        "Halted",
        "cirros-container-disk-demo",
        "Events:",
    ] {
        assert_contains(&out, needle);
    }
}

/// `kubectl apply` of the manifest it was created from changes nothing: kubectl says
/// `unchanged`, and neither the generation nor the resourceVersion moves.
fn vm_reapply_is_unchanged(k: &Kubectl) {
    let (vm_file, _) = vm_fixture();
    k.ok(&["apply", "-f", vm_file]);
    let before = jsonpath(
        k,
        "vm",
        "testvm",
        "{.metadata.generation} {.metadata.resourceVersion}",
    );

    let out = k.ok(&["apply", "-f", vm_file]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm unchanged");
    assert_eq!(
        jsonpath(
            k,
            "vm",
            "testvm",
            "{.metadata.generation} {.metadata.resourceVersion}"
        ),
        before,
        "generation and resourceVersion moved"
    );
}

/// `kubectl apply` of a changed manifest configures the VM, and the three-way merge removes
/// what the manifest no longer names.
fn vm_reapply_changed_is_configured(k: &Kubectl) {
    let (vm_file, manifest) = vm_fixture();
    k.ok(&["apply", "-f", vm_file]);

    // One more label: configured, and the label is there. (Whether the same manifest again is
    // `unchanged` is vm_reapply_is_unchanged's question.)
    let changed = manifest.replacen(
        "    kubevirt.io/vm: testvm\n",
        "    kubevirt.io/vm: testvm\n    env: e2e\n",
        1,
    );
    assert_ne!(
        changed, manifest,
        "the fixture's metadata.labels changed shape"
    );
    let out = k.ok_stdin(&["apply", "-f", "-"], &changed);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm configured");
    assert_eq!(jsonpath(k, "vm", "testvm", "{.metadata.labels.env}"), "e2e");

    // Back to the original file: the label it no longer names is removed, the others stay.
    let out = k.ok(&["apply", "-f", vm_file]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm configured");
    assert_eq!(jsonpath(k, "vm", "testvm", "{.metadata.labels.env}"), "");
    assert_eq!(
        jsonpath(k, "vm", "testvm", "{.metadata.labels.kubevirt\\.io/vm}"),
        "testvm"
    );

    // A changed spec: configured, and the spec changed.
    let running = manifest.replacen("runStrategy: Halted", "runStrategy: Always", 1);
    let out = k.ok_stdin(&["apply", "-f", "-"], &running);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm configured");
    assert_eq!(jsonpath(k, "vm", "testvm", "{.spec.runStrategy}"), "Always");
}

/// `kubectl patch` with a JSON merge patch and a JSON patch, `label` and `annotate`.
fn vm_patch_label_annotate(k: &Kubectl) {
    let (vm_file, _) = vm_fixture();
    k.ok(&["apply", "-f", vm_file]);

    let out = k.ok(&[
        "patch",
        "vm",
        "testvm",
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Always"}}"#,
    ]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm patched");
    assert_eq!(jsonpath(k, "vm", "testvm", "{.spec.runStrategy}"), "Always");
    assert_eq!(jsonpath(k, "vm", "testvm", "{.metadata.generation}"), "2");

    let out = k.ok(&[
        "patch",
        "vm",
        "testvm",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/runStrategy","value":"Halted"}]"#,
    ]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm patched");
    assert_eq!(jsonpath(k, "vm", "testvm", "{.spec.runStrategy}"), "Halted");

    // A merge patch that would make the VM invalid is refused, naming the field.
    let out = k.fails(&[
        "patch",
        "vm",
        "testvm",
        "--type=merge",
        "-p",
        r#"{"spec":{"running":true}}"#,
    ]);
    assert_contains(&out, "spec.running");
    assert_eq!(jsonpath(k, "vm", "testvm", "{.spec.running}"), "");

    let out = k.ok(&["label", "vm", "testvm", "tier=gold"]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm labeled");
    let out = k.ok(&["annotate", "vm", "testvm", "note=hello"]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm annotated");
    assert_eq!(
        jsonpath(k, "vm", "testvm", "{.metadata.labels.tier}"),
        "gold"
    );
    assert_eq!(
        jsonpath(k, "vm", "testvm", "{.metadata.annotations.note}"),
        "hello"
    );
    // kubectl 1.20 says "labeled" when it removes a label, later versions "unlabeled".
    let out = k.ok(&["label", "vm", "testvm", "tier-"]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm");
    assert_eq!(jsonpath(k, "vm", "testvm", "{.metadata.labels.tier}"), "");
}

/// `kubectl delete` by name and through the file; the VM is gone afterwards.
fn vm_delete(k: &Kubectl) {
    let (vm_file, _) = vm_fixture();
    k.ok(&["apply", "-f", vm_file]);

    // kubectl delete waits until the object is gone (a list and a watch on its name).
    let out = k.ok(&["delete", "vm", "testvm"]);
    assert_contains(&out, "virtualmachine.kubevirt.io \"testvm\" deleted");
    let out = k.fails(&["get", "vm", "testvm"]);
    assert_contains(&out, "(NotFound)");

    // Created again from the file (a new object), deleted through the file.
    let out = k.ok(&["apply", "-f", vm_file]);
    assert_contains(&out, "virtualmachine.kubevirt.io/testvm created");
    let out = k.ok(&["delete", "-f", vm_file]);
    assert_contains(&out, "virtualmachine.kubevirt.io \"testvm\" deleted");
    let out = k.run(&["get", "vms"]);
    assert!(out.status.success(), "{out:?}");
    assert_contains(&String::from_utf8_lossy(&out.stderr), "No resources found");
}

/// `kubectl get -w` sees the current state, then each change, until it is killed.
fn vm_watch(k: &Kubectl) {
    let (vm_file, manifest) = vm_fixture();
    k.ok(&["apply", "-f", vm_file]);

    // One object by name: its current row first, then a row per change.
    let mut watch = k.spawn(&["get", "vm", "testvm", "-w"]);
    watch
        .wait_for_line(WATCH_TIMEOUT, |l| first_cell(l) == "testvm")
        .unwrap_or_else(|e| panic!("{e:#}"));
    k.ok(&["label", "vm", "testvm", "watched=yes"]);
    watch
        .wait_for_line(WATCH_TIMEOUT, |l| first_cell(l) == "testvm")
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        watch.is_running(),
        "kubectl get -w ended on its own; stderr: {}",
        watch.stderr()
    );
    let pid = watch.pid();
    watch
        .kill()
        .unwrap_or_else(|e| panic!("cannot kill kubectl {pid}: {e}"));

    // The whole list, with the event types: a new VM is ADDED, a deleted one DELETED.
    let mut watch = k.spawn(&["get", "vms", "-w", "--output-watch-events"]);
    watch
        .wait_for_line(WATCH_TIMEOUT, |l| {
            cells(l).starts_with(&["ADDED", "testvm"])
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let second = manifest.replace("testvm", "testvm2");
    k.ok_stdin(&["apply", "-f", "-"], &second);
    watch
        .wait_for_line(WATCH_TIMEOUT, |l| {
            cells(l).starts_with(&["ADDED", "testvm2"])
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    k.ok(&[
        "patch",
        "vm",
        "testvm2",
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Always"}}"#,
    ]);
    watch
        .wait_for_line(WATCH_TIMEOUT, |l| {
            cells(l).starts_with(&["MODIFIED", "testvm2"])
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    k.ok(&["delete", "vm", "testvm2"]);
    watch
        .wait_for_line(WATCH_TIMEOUT, |l| {
            cells(l).starts_with(&["DELETED", "testvm2"])
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        watch.is_running(),
        "kubectl get -w ended on its own; stderr: {}",
        watch.stderr()
    );
    drop(watch);
}

/// A Node from a manifest, made unschedulable with a strategic merge patch, and with
/// `kubectl cordon` / `uncordon`.
fn node_unschedulable_patch_and_cordon(k: &Kubectl) {
    let out = k.ok(&[
        "apply",
        "--validate=true",
        "-f",
        path_str(&fixture("node.yaml")),
    ]);
    assert_contains(&out, "node/n1 created");

    let status = |k: &Kubectl| -> String {
        let out = k.ok(&["get", "nodes"]);
        let table = Table::parse(&out);
        assert_eq!(
            table.header.first().map(String::as_str),
            Some("NAME"),
            "{out}"
        );
        assert!(
            table.header.iter().any(|h| h == "STATUS"),
            "no STATUS column in:\n{out}"
        );
        let row = table
            .row("n1")
            .unwrap_or_else(|| panic!("no n1 row in:\n{out}"));
        row["STATUS"].clone()
    };
    assert!(
        !status(k).contains("SchedulingDisabled"),
        "a new node is schedulable"
    );

    // kubectl patch's default type is a strategic merge patch.
    let out = k.ok(&[
        "patch",
        "node",
        "n1",
        "-p",
        r#"{"spec":{"unschedulable":true}}"#,
    ]);
    assert_contains(&out, "node/n1 patched");
    assert!(
        status(k).contains("SchedulingDisabled"),
        "STATUS after unschedulable=true: {}",
        status(k)
    );
    assert_eq!(jsonpath(k, "node", "n1", "{.spec.unschedulable}"), "true");

    // null removes the field (strategic merge semantics).
    let out = k.ok(&[
        "patch",
        "node",
        "n1",
        "-p",
        r#"{"spec":{"unschedulable":null}}"#,
    ]);
    assert_contains(&out, "node/n1 patched");
    assert!(
        !status(k).contains("SchedulingDisabled"),
        "STATUS after unschedulable=null: {}",
        status(k)
    );
    assert_eq!(jsonpath(k, "node", "n1", "{.spec.unschedulable}"), "");

    let out = k.ok(&["cordon", "n1"]);
    assert_contains(&out, "node/n1 cordoned");
    assert!(
        status(k).contains("SchedulingDisabled"),
        "STATUS after cordon: {}",
        status(k)
    );
    let out = k.ok(&["uncordon", "n1"]);
    assert_contains(&out, "node/n1 uncordoned");
    assert!(
        !status(k).contains("SchedulingDisabled"),
        "STATUS after uncordon: {}",
        status(k)
    );

    // Labels on a core kind, and the node's object as YAML.
    let out = k.ok(&["label", "node", "n1", "ferrovirt.io/zone=a"]);
    assert_contains(&out, "node/n1 labeled");
    let out = k.ok(&["get", "node", "n1", "-o", "yaml"]);
    let node: Value =
        serde_yaml_ng::from_str(&out).unwrap_or_else(|e| panic!("not YAML ({e}):\n{out}"));
    assert_eq!(node["kind"], "Node", "{out}");
    assert_eq!(node["apiVersion"], "v1", "{out}");
    assert_eq!(
        node["metadata"]["labels"]["ferrovirt.io/zone"], "a",
        "{out}"
    );
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"], "n1",
        "{out}"
    );
}

/// Strategic merge on a core kind merges lists by their key, from `kubectl patch` and from
/// `kubectl apply`.
fn service_strategic_merge_patch(k: &Kubectl) {
    let service_yaml = fixture("service.yaml");
    let manifest = std::fs::read_to_string(&service_yaml).expect("fixture service.yaml");
    let out = k.ok(&["apply", "-f", path_str(&service_yaml)]);
    assert_contains(&out, "service/web created");

    // spec.ports merges by `port`: the patch adds 443 and keeps 80.
    let out = k.ok(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"ports":[{"name":"https","port":443,"targetPort":8443}]}}"#,
    ]);
    assert_contains(&out, "service/web patched");
    assert_eq!(
        ports(k),
        [(80, "http".to_owned()), (443, "https".to_owned())]
    );

    // A strategic patch that names an existing key changes that entry only.
    k.ok(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"ports":[{"port":80,"targetPort":9090}]}}"#,
    ]);
    assert_eq!(
        jsonpath(
            k,
            "service",
            "web",
            "{.spec.ports[?(@.port==80)].targetPort}"
        ),
        "9090"
    );
    assert_eq!(ports(k).len(), 2);

    // `$patch: delete` removes one entry of a merged list.
    k.ok(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"ports":[{"port":443,"$patch":"delete"}]}}"#,
    ]);
    assert_eq!(ports(k), [(80, "http".to_owned())]);

    // kubectl apply of the file with one more port: configured, the new port merged in.
    let with_metrics =
        format!("{manifest}    - name: metrics\n      port: 9100\n      targetPort: 9100\n");
    let out = k.ok_stdin(&["apply", "-f", "-"], &with_metrics);
    assert_contains(&out, "service/web configured");
    let names: Vec<String> = ports(k).into_iter().map(|(_, name)| name).collect();
    assert!(
        names.contains(&"metrics".to_owned()) && names.contains(&"http".to_owned()),
        "ports {names:?}"
    );

    let out = k.ok(&["delete", "service", "web"]);
    assert_contains(&out, "service \"web\" deleted");
}

/// Errors come back as kubectl prints Kubernetes errors, naming what is wrong.
fn errors_name_the_problem(k: &Kubectl) {
    let out = k.fails(&["get", "vm", "nosuch"]);
    assert_contains(&out, "(NotFound)");
    assert_contains(&out, "virtualmachines.kubevirt.io \"nosuch\" not found");

    let out = k.fails(&["delete", "vm", "nosuch"]);
    assert_contains(&out, "(NotFound)");

    // running and runStrategy together: refused, naming the field; nothing stored.
    let invalid = fixture("vm-invalid-running-and-runstrategy.yaml");
    let out = k.fails(&["apply", "-f", path_str(&invalid)]);
    assert_contains(&out, "spec.running");
    assert_contains(&out, "is invalid");
    let out = k.fails(&["get", "vm", "badvm"]);
    assert_contains(&out, "(NotFound)");

    // A field ferrovirt does not know: refused, naming it (never silently dropped).
    let (vm_file, manifest) = vm_fixture();
    let unknown = manifest
        .replace("name: testvm\n", "name: oddvm\n")
        .replacen("      domain:\n", "      domain:\n        fooBar: 1\n", 1);
    assert!(
        unknown.contains("fooBar"),
        "the fixture's domain changed shape"
    );
    let out = k.fails_stdin(&["apply", "-f", "-"], &unknown);
    assert_contains(&out, "fooBar");
    let out = k.fails(&["get", "vm", "oddvm"]);
    assert_contains(&out, "(NotFound)");

    // A KubeVirt field ferrovirt does not run yet: refused, naming it.
    let sound = manifest
        .replace("name: testvm\n", "name: soundvm\n")
        .replacen(
            "        devices:\n",
            "        devices:\n          sound:\n            name: audio\n",
            1,
        );
    let out = k.fails_stdin(&["apply", "-f", "-"], &sound);
    assert_contains(&out, "sound");

    // Creating what exists already.
    k.ok(&["create", "-f", vm_file]);
    let out = k.fails(&["create", "-f", vm_file]);
    assert_contains(&out, "(AlreadyExists)");
    assert_contains(&out, "\"testvm\" already exists");
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The VM fixture's path and text.
fn vm_fixture() -> (&'static str, String) {
    static PATH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let path = PATH.get_or_init(|| fixture("vm.yaml"));
    let manifest = std::fs::read_to_string(path).expect("fixture vm.yaml");
    (path_str(path), manifest)
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("fixture paths are UTF-8")
}

#[track_caller]
fn assert_contains(haystack: &str, needle: &str) {
    assert!(
        haystack.contains(needle),
        "expected {needle:?} in:\n{haystack}"
    );
}

/// `kubectl get KIND NAME -o jsonpath=TEMPLATE`.
#[track_caller]
fn jsonpath(k: &Kubectl, kind: &str, name: &str, template: &str) -> String {
    k.ok(&["get", kind, name, "-o", &format!("jsonpath={template}")])
        .trim()
        .to_owned()
}

/// The service `web`'s ports as (port, name), sorted by port.
fn ports(k: &Kubectl) -> Vec<(i64, String)> {
    let out = k.ok(&["get", "service", "web", "-o", "json"]);
    let service: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"));
    let mut ports: Vec<(i64, String)> = service["spec"]["ports"]
        .as_array()
        .unwrap_or_else(|| panic!("no spec.ports in:\n{out}"))
        .iter()
        .map(|p| {
            (
                p["port"].as_i64().unwrap_or(-1),
                p["name"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    ports.sort();
    ports
}

fn cells(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

fn first_cell(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or_default()
}

/// `3s`, `5m`, `2d3h`, `<unknown>` is not.
fn is_age(cell: &str) -> bool {
    cell.chars().next().is_some_and(|c| c.is_ascii_digit())
        && cell
            .chars()
            .all(|c| c.is_ascii_digit() || "smhdy".contains(c))
}

/// kubectl's column output, cut at the header's column starts (so empty cells stay empty).
struct Table {
    header: Vec<String>,
    rows: Vec<HashMap<String, String>>,
}

impl Table {
    fn parse(text: &str) -> Table {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header_line = lines.next().unwrap_or_default();
        let mut starts = Vec::new();
        let mut header = Vec::new();
        let mut previous_blank = true;
        for (i, c) in header_line.char_indices() {
            if !c.is_whitespace() && previous_blank {
                starts.push(i);
            }
            previous_blank = c.is_whitespace();
        }
        for (n, start) in starts.iter().enumerate() {
            let end = starts.get(n + 1).copied().unwrap_or(header_line.len());
            header.push(header_line[*start..end].trim().to_owned());
        }
        let rows = lines
            .map(|line| {
                header
                    .iter()
                    .enumerate()
                    .map(|(n, name)| {
                        let start = starts[n].min(line.len());
                        let end = starts
                            .get(n + 1)
                            .copied()
                            .unwrap_or(line.len())
                            .min(line.len());
                        let cell = line.get(start..end).unwrap_or_default().trim().to_owned();
                        (name.clone(), cell)
                    })
                    .collect()
            })
            .collect();
        Table { header, rows }
    }

    fn row(&self, name: &str) -> Option<&HashMap<String, String>> {
        self.rows
            .iter()
            .find(|r| r.get("NAME").map(String::as_str) == Some(name))
    }
}

#[test]
fn table_keeps_empty_cells_empty() {
    let table = Table::parse("NAME     AGE   STATUS    READY\ntestvm   5s              False\n");
    assert_eq!(table.header, ["NAME", "AGE", "STATUS", "READY"]);
    let row = table.row("testvm").expect("row");
    assert_eq!(row["AGE"], "5s");
    assert_eq!(row["STATUS"], "");
    assert_eq!(row["READY"], "False");
}
