//! Node registration and heartbeat.
//!
//! ```text
//!  start ─► create or update the Node (capacity, allocatable, labels, accel, Ready)
//!        └► every RENEW: renew the Lease kube-node-lease/<node>   (liveness, cheap)
//!           every STATUS: refresh the Node's Ready heartbeat       (what kubectl shows)
//! ```
//!
//! The node-lifecycle controller (a later issue) reads the Lease to decide a node is gone.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

use ferrovirt_api::wellknown::FENCE_ANNOTATION;

use crate::endpoint::{Published, FINGERPRINT_ANNOTATION};
use crate::host::HostInfo;

/// How long a Lease is valid without renewal.
pub const LEASE_SECONDS: i32 = 40;
/// How often the Lease is renewed.
pub const RENEW: Duration = Duration::from_secs(10);
/// How often the Node's Ready condition heartbeat is refreshed.
pub const STATUS: Duration = Duration::from_secs(60);

/// Whether guests run with hardware acceleration on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accel {
    pub kvm: bool,
    /// Why (what the probe saw).
    pub reason: String,
}

/// The version this node agent reports (as `kubeletVersion`).
pub fn agent_version() -> String {
    format!("ferrovirt-{}", env!("CARGO_PKG_VERSION"))
}

/// The Node object this agent registers (pure).
/// What a node tells about itself beyond the host: where it is reached and when it fences.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Advertised {
    /// The InternalIP.
    pub address: String,
    /// The node endpoint, if it serves one.
    pub endpoint: Option<Published>,
    /// After how long without a Lease renewal the agent kills its guests.
    pub fence_after: Option<Duration>,
}

impl Advertised {
    /// Just an address (no endpoint, no fencing).
    pub fn address(address: &str) -> Advertised {
        Advertised { address: address.into(), ..Default::default() }
    }
}

pub fn node_object(name: &str, host: &HostInfo, accel: &Accel, adv: &Advertised, now: &str) -> Value {
    let address = adv.address.as_str();
    let mut capacity = json!(host.capacity());
    let mut allocatable = json!(host.allocatable());
    if accel.kvm {
        capacity["devices.kubevirt.io/kvm"] = json!("1k");
        allocatable["devices.kubevirt.io/kvm"] = json!("1k");
    }
    let mut annotations = json!({ "ferrovirt.io/accel-probe": accel.reason });
    let mut daemon_endpoints = json!({});
    if let Some(f) = adv.fence_after {
        annotations[FENCE_ANNOTATION] = json!(f.as_secs().to_string());
    }
    if let Some(e) = &adv.endpoint {
        annotations[FINGERPRINT_ANNOTATION] = json!(e.fingerprint);
        daemon_endpoints = json!({ "kubeletEndpoint": { "Port": e.port } });
    }
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH },
                "kubevirt.io/schedulable": "true",
                "ferrovirt.io/accel": if accel.kvm { "kvm" } else { "tcg" },
            },
            "annotations": annotations,
        },
        "spec": {},
        "status": {
            "capacity": capacity,
            "allocatable": allocatable,
            "conditions": [ready_condition(now)],
            "daemonEndpoints": daemon_endpoints,
            "addresses": [
                { "type": "InternalIP", "address": address },
                { "type": "Hostname", "address": host.hostname },
            ],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": host.kernel_version,
                "osImage": host.os_image,
                "containerRuntimeVersion": "ferrovirt-launcher",
                "kubeletVersion": agent_version(),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH },
            },
        },
    })
}

fn ready_condition(now: &str) -> Value {
    json!({
        "type": "Ready", "status": "True", "reason": "NodeAgentReady",
        "message": "ferrovirt node agent is posting ready status",
        "lastHeartbeatTime": now, "lastTransitionTime": now,
    })
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Create the Node, or bring an existing one up to date (labels merge; spec such as a cordon stays).
pub async fn register(client: &Client, name: &str, host: &HostInfo, accel: &Accel, adv: &Advertised) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let desired = node_object(name, host, accel, adv, &now());
    match nodes.get_opt(name).await? {
        None => {
            let node: Node = serde_json::from_value(desired)?;
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Box::pin(register(client, name, host, accel, adv)).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(_) => {
            let meta = json!({ "metadata": { "labels": desired["metadata"]["labels"], "annotations": desired["metadata"]["annotations"] } });
            nodes.patch(name, &PatchParams::default(), &Patch::Merge(meta)).await?;
            let status = json!({ "status": desired["status"] });
            nodes.patch_status(name, &PatchParams::default(), &Patch::Strategic(status)).await?;
        }
    }
    Ok(())
}

/// `status.images` for the containerDisks cached on this node, as the kubelet lists its images:
/// the reference and `reference@digest` as names, the disk's size (pure).
pub fn images_status(cached: &[ferrovirt_disks::container_disk::CachedImage]) -> Value {
    let mut images: Vec<Value> = cached
        .iter()
        .map(|c| {
            let repo = c.reference.rsplit_once(':').filter(|(r, tag)| !tag.contains('/') && !r.is_empty()).map_or(c.reference.as_str(), |(r, _)| r);
            json!({ "names": [format!("{repo}@{}", c.digest), c.reference], "sizeBytes": c.size })
        })
        .collect();
    images.sort_by(|a, b| a["names"][1].as_str().cmp(&b["names"][1].as_str()));
    json!(images)
}

/// Write `status.images` if it differs from `last`; returns what is now there.
pub async fn report_images(client: &Client, name: &str, cache_dir: &std::path::Path, last: Option<Value>) -> anyhow::Result<Value> {
    let cached = ferrovirt_disks::container_disk::list_cached(cache_dir)?;
    let images = images_status(&cached);
    if last.as_ref() != Some(&images) {
        let nodes: Api<Node> = Api::all(client.clone());
        nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": {"images": images}}))).await?;
    }
    Ok(images)
}

/// Refresh the Ready heartbeat on the Node.
pub async fn heartbeat(client: &Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let t = now();
    let current = nodes.get(name).await?;
    let was_ready = current
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "True");
    let transition = was_ready.and_then(|c| c.last_transition_time).map(|t| t.0.to_string()).unwrap_or_else(|| t.clone());
    let mut cond = ready_condition(&t);
    cond["lastTransitionTime"] = json!(transition);
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(json!({"status": {"conditions": [cond]}})))
        .await?;
    Ok(())
}

/// Renew (or take) this node's Lease in `kube-node-lease`.
pub async fn renew_lease(client: &Client, name: &str) -> anyhow::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let renew = MicroTime(k8s_openapi::jiff::Timestamp::now());
    match leases.get_opt(name).await? {
        None => {
            let lease: Lease = serde_json::from_value(json!({
                "metadata": { "name": name, "namespace": "kube-node-lease" },
                "spec": { "holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew },
            }))?;
            leases.create(&PostParams::default(), &lease).await?;
        }
        Some(_) => {
            let patch = json!({ "spec": { "holderIdentity": name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": renew } });
            leases.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        }
    }
    Ok(())
}

/// Keep the Lease and the Node heartbeat fresh until the task is dropped, renewing every `every`
/// and recording each successful renewal in `renewed`.
pub async fn keep_alive(client: Client, name: String, every: Duration, renewed: std::sync::Arc<std::sync::Mutex<std::time::Instant>>) {
    let mut renew = tokio::time::interval(every);
    let mut status = tokio::time::interval(STATUS);
    loop {
        tokio::select! {
            _ = renew.tick() => {
                match tokio::time::timeout(every, renew_lease(&client, &name)).await {
                    Ok(Ok(())) => *renewed.lock().unwrap_or_else(|e| e.into_inner()) = std::time::Instant::now(),
                    Ok(Err(e)) => tracing::warn!(node = %name, error = %e, "lease renewal failed"),
                    Err(_) => tracing::warn!(node = %name, "lease renewal timed out"),
                }
            }
            _ = status.tick() => {
                if let Err(e) = heartbeat(&client, &name).await {
                    tracing::warn!(node = %name, error = %e, "node heartbeat failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_says_what_acceleration_it_has() {
        let host = HostInfo { memory_bytes: 8 << 30, cpus: 2, kernel_version: "6.1".into(), os_image: "Debian".into(), hostname: "h".into() };
        let tcg = node_object("n1", &host, &Accel { kvm: false, reason: "probe timed out".into() }, &Advertised::address("127.0.0.1"), "2026-01-01T00:00:00Z");
        assert_eq!(tcg["metadata"]["labels"]["ferrovirt.io/accel"], "tcg");
        assert!(tcg["status"]["capacity"].get("devices.kubevirt.io/kvm").is_none());
        let kvm = node_object("n1", &host, &Accel { kvm: true, reason: "ok".into() }, &Advertised::address("127.0.0.1"), "2026-01-01T00:00:00Z");
        assert_eq!(kvm["status"]["allocatable"]["devices.kubevirt.io/kvm"], "1k");
        let node: Node = serde_json::from_value(kvm).expect("a valid Node");
        assert_eq!(node.status.unwrap().node_info.unwrap().kubelet_version, agent_version());
    }

    #[test]
    fn node_publishes_endpoint_fencing_and_images() {
        let host = HostInfo { memory_bytes: 8 << 30, cpus: 2, kernel_version: "6.1".into(), os_image: "Debian".into(), hostname: "h".into() };
        let adv = Advertised {
            address: "10.0.0.2".into(),
            endpoint: Some(Published { port: 4321, fingerprint: "ab".repeat(32) }),
            fence_after: Some(Duration::from_secs(40)),
        };
        let n = node_object("n1", &host, &Accel { kvm: false, reason: "x".into() }, &adv, "2026-01-01T00:00:00Z");
        assert_eq!(n["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], 4321);
        assert_eq!(n["metadata"]["annotations"][FENCE_ANNOTATION], "40");
        assert_eq!(n["metadata"]["annotations"][FINGERPRINT_ANNOTATION], "ab".repeat(32));

        let image = |reference: &str, digest: &str, size: u64| ferrovirt_disks::container_disk::CachedImage {
            reference: reference.into(),
            digest: digest.into(),
            image_path: None,
            format: ferrovirt_disks::DiskFormat::Qcow2,
            size,
            pulled_at: chrono::Utc::now(),
            path: "/x".into(),
        };
        let images = images_status(&[image("127.0.0.1:5000/guest:latest", "sha256:aa", 10), image("127.0.0.1:5000/a", "sha256:bb", 5)]);
        assert_eq!(
            images,
            json!([
                {"names": ["127.0.0.1:5000/a@sha256:bb", "127.0.0.1:5000/a"], "sizeBytes": 5},
                {"names": ["127.0.0.1:5000/guest@sha256:aa", "127.0.0.1:5000/guest:latest"], "sizeBytes": 10},
            ])
        );
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": {"images": images}})).expect("valid images");
        assert_eq!(node.status.unwrap().images.unwrap().len(), 2);
    }
}
