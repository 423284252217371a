//! The node commands, with kubectl's names and meaning: `cordon`, `uncordon` and `drain`.
//!
//! ```text
//!  drain N ─▶ cordon N (spec.unschedulable: true) ─▶ pods with spec.nodeName=N, launcher pods only
//!          ─▶ POST pods/P/eviction for each (uid precondition)   201: its VMI stops gracefully
//!               429 (evictionStrategy LiveMigrate, External): show why once, try again every 5 s
//!          ─▶ wait until each pod is gone, showing how many are left ─▶ "node/N drained"
//! ```
//!
//! The API server turns the eviction of a launcher pod into a graceful stop of its VMI; a VM with
//! runStrategy Always (or RerunOnFailure) starts again elsewhere, because its node is cordoned.
//! Pods that run no VM are left alone (and named).

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::ListQuery;
use crate::cli::{DrainArgs, NodeArg};
use crate::duration::format_duration;
use crate::errors::{Error, Result};
use crate::resources::{self, encode_segment, ResourceKind};
use crate::wait::Reporter;
use crate::Ctx;

/// How often a refused eviction (429) is tried again, as kubectl drain does.
pub const EVICTION_RETRY: Duration = Duration::from_secs(5);
/// How often drain looks whether the evicted pods are gone.
const POLL: Duration = Duration::from_millis(500);

fn node_kind() -> &'static ResourceKind {
    resources::find("node").expect("known kind")
}

fn pod_kind() -> &'static ResourceKind {
    resources::find("pod").expect("known kind")
}

/// A pod to evict, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// The VMI it runs (its controller reference).
    pub vmi: Option<String>,
}

impl PodRef {
    /// `default/virt-launcher-vm1-abcde (VMI vm1)`
    pub fn describe(&self) -> String {
        match &self.vmi {
            Some(vmi) => format!("{}/{} (VMI {vmi})", self.namespace, self.name),
            None => format!("{}/{}", self.namespace, self.name),
        }
    }
}

/// The strategic merge patch of `cordon` (`true`) and `uncordon` (`false`), as kubectl sends it.
pub fn cordon_patch(unschedulable: bool) -> Value {
    if unschedulable {
        json!({"spec": {"unschedulable": true}})
    } else {
        json!({"spec": {"unschedulable": null}})
    }
}

/// Whether a Node is cordoned.
pub fn is_cordoned(node: &Value) -> bool {
    node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true)
}

/// The pods of a node that drain evicts (launcher pods: label `kubevirt.io=virt-launcher`), and
/// the names (`ns/name`) of the others, which it leaves alone.
pub fn select_pods(pods: &[Value]) -> (Vec<PodRef>, Vec<String>) {
    let mut evict = Vec::new();
    let mut others = Vec::new();
    for p in pods {
        let text = |ptr: &str| {
            p.pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let (namespace, name) = (text("/metadata/namespace"), text("/metadata/name"));
        let launcher = p
            .pointer("/metadata/labels/kubevirt.io")
            .and_then(Value::as_str)
            == Some("virt-launcher");
        if !launcher {
            others.push(format!("{namespace}/{name}"));
            continue;
        }
        let vmi = p
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|r| {
                r.get("controller").and_then(Value::as_bool) == Some(true)
                    && r.get("kind").and_then(Value::as_str) == Some("VirtualMachineInstance")
            })
            .and_then(|r| r.get("name").and_then(Value::as_str))
            .map(str::to_string);
        evict.push(PodRef {
            namespace,
            name,
            uid: text("/metadata/uid"),
            vmi,
        });
    }
    (evict, others)
}

/// The Eviction for `pod` (policy/v1): only this pod (its uid), with `grace` seconds if given.
pub fn eviction_body(pod: &PodRef, grace: Option<i64>) -> Value {
    let mut options = json!({"preconditions": {"uid": pod.uid}});
    if let Some(g) = grace {
        options["gracePeriodSeconds"] = json!(g);
    }
    json!({
        "apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": options,
    })
}

/// The REST path of a pod's eviction.
pub fn eviction_path(pod: &PodRef) -> String {
    format!(
        "/api/v1/namespaces/{}/pods/{}/eviction",
        encode_segment(&pod.namespace),
        encode_segment(&pod.name)
    )
}

/// `2 of 3 VMs still stopping: default/vm1, default/vm2` (the pod name when it runs no VMI).
pub fn progress(total: usize, waiting: &[&PodRef]) -> String {
    let names: Vec<String> = waiting
        .iter()
        .map(|p| format!("{}/{}", p.namespace, p.vmi.as_deref().unwrap_or(&p.name)))
        .collect();
    format!(
        "{} of {total} VMs still stopping: {}",
        waiting.len(),
        names.join(", ")
    )
}

/// `fvctl cordon` (`true`) and `fvctl uncordon` (`false`).
pub async fn cordon(ctx: &Ctx, args: &NodeArg, unschedulable: bool) -> Result<()> {
    set_unschedulable(ctx, &args.node, unschedulable).await
}

async fn set_unschedulable(ctx: &Ctx, node: &str, unschedulable: bool) -> Result<()> {
    let kind = node_kind();
    let current = ctx.rest.get(kind, None, node).await?;
    let word = if unschedulable {
        "cordoned"
    } else {
        "uncordoned"
    };
    if is_cordoned(&current) == unschedulable {
        println!("node/{node} already {word}");
        return Ok(());
    }
    ctx.rest
        .patch(
            kind,
            None,
            node,
            "application/strategic-merge-patch+json",
            &cordon_patch(unschedulable),
            false,
        )
        .await?;
    println!("node/{node} {word}");
    Ok(())
}

/// What happened to one eviction request.
enum Evicted {
    Accepted,
    Gone,
    Refused(String),
}

async fn evict(ctx: &Ctx, pod: &PodRef, grace: Option<i64>) -> Result<Evicted> {
    match ctx
        .rest
        .post_once(&eviction_path(pod), &eviction_body(pod, grace))
        .await
    {
        Ok(_) => Ok(Evicted::Accepted),
        Err(Error::Api(f)) if f.is_not_found() => Ok(Evicted::Gone),
        // Another pod under that name now (uid precondition): ours is gone.
        Err(Error::Api(f)) if f.is_conflict() && f.message.contains("Precondition failed") => {
            Ok(Evicted::Gone)
        }
        Err(Error::Api(f)) if f.code == 429 => Ok(Evicted::Refused(f.message)),
        Err(Error::Api(f)) => Err(Error::Failed(format!(
            "cannot evict pod {}: {f}",
            pod.describe()
        ))),
        Err(e) => Err(e),
    }
}

/// Whether the pod is gone (or another pod has its name).
async fn gone(ctx: &Ctx, pod: &PodRef) -> Result<bool> {
    let live = ctx
        .rest
        .get_opt(pod_kind(), Some(&pod.namespace), &pod.name)
        .await?;
    Ok(live.is_none_or(|l| {
        l.pointer("/metadata/uid").and_then(Value::as_str) != Some(pod.uid.as_str())
    }))
}

/// `fvctl drain`.
pub async fn drain(ctx: &Ctx, args: &DrainArgs) -> Result<()> {
    let node = args.node.as_str();
    set_unschedulable(ctx, node, true).await?;
    let query = ListQuery {
        field_selector: Some(format!("spec.nodeName={node}")),
        ..Default::default()
    };
    let list = ctx.rest.list(pod_kind(), None, &query).await?;
    let items = list
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let (pods, others) = select_pods(&items);
    for other in &others {
        eprintln!("leaving pod {other} alone: it runs no VM");
    }
    let total = pods.len();
    let deadline = Instant::now() + args.timeout;
    // Not yet accepted (with the last refusal), and accepted but not yet gone.
    let mut to_evict: Vec<(PodRef, Option<String>)> = pods.into_iter().map(|p| (p, None)).collect();
    let mut stopping: Vec<PodRef> = Vec::new();
    let mut next_try = Instant::now();
    let mut reporter = Reporter::new(&format!("node/{node}"));
    loop {
        if Instant::now() >= next_try && !to_evict.is_empty() {
            let mut refused = Vec::new();
            for (pod, last) in std::mem::take(&mut to_evict) {
                match evict(ctx, &pod, args.grace_period).await? {
                    Evicted::Accepted => {
                        println!("evicting pod {}", pod.describe());
                        stopping.push(pod);
                    }
                    Evicted::Gone => println!("pod {} is gone", pod.describe()),
                    Evicted::Refused(message) => {
                        if last.as_deref() != Some(message.as_str()) {
                            eprintln!(
                                "cannot evict pod {} yet (trying again every {}): {message}",
                                pod.describe(),
                                format_duration(EVICTION_RETRY)
                            );
                        }
                        refused.push((pod, Some(message)));
                    }
                }
            }
            to_evict = refused;
            next_try = Instant::now() + EVICTION_RETRY;
        }
        let mut still = Vec::new();
        for pod in std::mem::take(&mut stopping) {
            if gone(ctx, &pod).await? {
                println!("pod {} evicted", pod.describe());
            } else {
                still.push(pod);
            }
        }
        stopping = still;
        if to_evict.is_empty() && stopping.is_empty() {
            break;
        }
        let waiting: Vec<&PodRef> = to_evict
            .iter()
            .map(|(p, _)| p)
            .chain(stopping.iter())
            .collect();
        reporter.update(&progress(total, &waiting));
        if Instant::now() >= deadline {
            reporter.finish();
            let refusals: Vec<String> = to_evict
                .iter()
                .filter_map(|(p, m)| m.as_ref().map(|m| format!("\n  {}: {m}", p.describe())))
                .collect();
            return Err(Error::Timeout(format!(
                "timed out after {} draining node {node}: {}{}",
                format_duration(args.timeout),
                progress(total, &waiting),
                refusals.concat()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
    reporter.finish();
    println!("node/{node} drained");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, launcher: bool, vmi: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")}});
        if launcher {
            p["metadata"]["labels"] = json!({"kubevirt.io": "virt-launcher"});
        }
        if let Some(v) = vmi {
            p["metadata"]["ownerReferences"] = json!([{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance", "name": v, "uid": "u", "controller": true}]);
        }
        p
    }

    #[test]
    fn drain_evicts_launcher_pods_and_names_the_others() {
        let (evict, others) = select_pods(&[
            pod("virt-launcher-vm1-a", true, Some("vm1")),
            pod("web", false, None),
            pod("virt-launcher-x", true, None),
        ]);
        assert_eq!(
            evict,
            [
                PodRef {
                    namespace: "default".into(),
                    name: "virt-launcher-vm1-a".into(),
                    uid: "uid-virt-launcher-vm1-a".into(),
                    vmi: Some("vm1".into())
                },
                PodRef {
                    namespace: "default".into(),
                    name: "virt-launcher-x".into(),
                    uid: "uid-virt-launcher-x".into(),
                    vmi: None
                },
            ]
        );
        assert_eq!(others, ["default/web"]);
        assert_eq!(evict[0].describe(), "default/virt-launcher-vm1-a (VMI vm1)");
    }

    #[test]
    fn eviction_bodies_pin_the_pod_and_carry_the_grace_period() {
        let p = PodRef {
            namespace: "ns 1".into(),
            name: "p".into(),
            uid: "u1".into(),
            vmi: None,
        };
        let b = eviction_body(&p, Some(0));
        assert_eq!(b["apiVersion"], "policy/v1");
        assert_eq!(
            b["deleteOptions"],
            json!({"preconditions": {"uid": "u1"}, "gracePeriodSeconds": 0})
        );
        assert!(eviction_body(&p, None)["deleteOptions"]
            .get("gracePeriodSeconds")
            .is_none());
        assert_eq!(
            eviction_path(&p),
            "/api/v1/namespaces/ns%201/pods/p/eviction"
        );
    }

    #[test]
    fn cordon_patches_are_kubectls() {
        assert_eq!(cordon_patch(true), json!({"spec": {"unschedulable": true}}));
        assert_eq!(
            cordon_patch(false),
            json!({"spec": {"unschedulable": null}})
        );
        assert!(is_cordoned(&json!({"spec": {"unschedulable": true}})));
        assert!(!is_cordoned(&json!({"spec": {}})));
    }

    #[test]
    fn progress_names_the_vms_left() {
        let a = PodRef {
            namespace: "default".into(),
            name: "virt-launcher-a-x".into(),
            uid: "1".into(),
            vmi: Some("a".into()),
        };
        let b = PodRef {
            namespace: "default".into(),
            name: "other".into(),
            uid: "2".into(),
            vmi: None,
        };
        assert_eq!(
            progress(3, &[&a, &b]),
            "2 of 3 VMs still stopping: default/a, default/other"
        );
    }
}
