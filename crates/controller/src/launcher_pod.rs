//! The launcher Pod of a VMI, built from the VMI alone.
//!
//! ```text
//!   VirtualMachineInstance "vm1" (uid U)
//!     └─ Pod virt-launcher-vm1-xxxxx          generateName, ownerReference → VMI (controller)
//!          labels       kubevirt.io=virt-launcher, kubevirt.io/created-by=U, vm.kubevirt.io/name=vm1
//!          annotations  kubevirt.io/domain=vm1
//!          container    compute (launcher image)
//!            requests   memory = guest + overhead, cpu = requests.cpu or 100m per vCPU
//!            limits     only what the VMI limits (plus the overhead for memory)
//!          placement    nodeSelector, affinity, tolerations, schedulerName
//! ```

use std::collections::BTreeMap;

use ferrovirt_api::kubevirt::VirtualMachineInstance;
use ferrovirt_api::quantity::{
    format_bytes, format_millis, parse_quantity_bytes, parse_quantity_millis, QuantityError,
};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::Resource as _;

use crate::overhead::{guest_memory_bytes, memory_overhead, vcpus};

/// Label on every launcher pod: `kubevirt.io: virt-launcher`.
pub const APP_LABEL: &str = "kubevirt.io";
/// Value of [`APP_LABEL`] on launcher pods.
pub const APP_LABEL_VALUE: &str = "virt-launcher";
/// Label holding the UID of the VMI the pod runs.
pub const CREATED_BY_LABEL: &str = "kubevirt.io/created-by";
/// Label holding the name of the VMI the pod runs.
pub const VM_NAME_LABEL: &str = "vm.kubevirt.io/name";
/// Annotation holding the domain (VMI) name.
pub const DOMAIN_ANNOTATION: &str = "kubevirt.io/domain";
/// Name of the launcher container.
pub const COMPUTE_CONTAINER: &str = "compute";
/// CPU requested per vCPU when the VMI requests none: KubeVirt's default (a CPU allocation ratio
/// of 10), in millicores.
pub const DEFAULT_CPU_MILLIS_PER_VCPU: u64 = 100;
/// Grace period when the VMI gives none (KubeVirt's default).
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;

/// What every launcher pod shares, from the controller's options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LauncherSettings {
    /// Image of the `compute` container.
    pub image: String,
    /// Scheduler of launcher pods whose VMI names none.
    pub scheduler_name: String,
}

impl Default for LauncherSettings {
    fn default() -> Self {
        LauncherSettings { image: "ferrovirt/launcher".into(), scheduler_name: "ferrovirt-scheduler".into() }
    }
}

/// Why no launcher pod can be built for a VMI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LauncherPodError {
    /// The VMI lacks a name, namespace or uid (it was not read from the API server).
    #[error("VirtualMachineInstance has no {0}; only stored objects get a launcher pod")]
    MissingMetadata(&'static str),
    /// A resource quantity does not parse (admission should have refused it).
    #[error("VirtualMachineInstance {vmi}: {field} is not a valid quantity: {source}")]
    Quantity {
        /// namespace/name of the VMI.
        vmi: String,
        /// Path of the field.
        field: &'static str,
        /// The parse error.
        #[source]
        source: QuantityError,
    },
}

/// The `generateName` prefix of a VMI's launcher pods.
pub fn generate_name(vmi_name: &str) -> String {
    format!("virt-launcher-{vmi_name}-")
}

/// The controller ownerReference pointing at `vmi`.
pub fn owner_reference(vmi: &VirtualMachineInstance) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: VirtualMachineInstance::API_VERSION.to_string(),
        kind: VirtualMachineInstance::KIND.to_string(),
        name: vmi.metadata.name.clone()?,
        uid: vmi.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The pod's container resources for `vmi`.
pub fn resources(vmi: &VirtualMachineInstance) -> Result<ResourceRequirements, LauncherPodError> {
    let key = format!(
        "{}/{}",
        vmi.metadata.namespace.as_deref().unwrap_or_default(),
        vmi.metadata.name.as_deref().unwrap_or_default()
    );
    let spec = &vmi.spec;
    let domain = &spec.domain;
    let bad = |field: &'static str| {
        let vmi = key.clone();
        move |source| LauncherPodError::Quantity { vmi, field, source }
    };
    let overhead = memory_overhead(spec);
    let guest = guest_memory_bytes(spec);
    let vcpus = vcpus(spec);
    let dedicated = domain.cpu.as_ref().is_some_and(|c| c.dedicated_cpu_placement == Some(true));
    let overcommit_overhead = domain.resources.overcommit_guest_overhead == Some(true);
    let hugepages = domain.memory.as_ref().and_then(|m| m.hugepages.as_ref()).and_then(|h| h.page_size.clone());

    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();

    // Memory: the guest plus ferrovirt's overhead. With huge pages the guest comes from the
    // hugepages-<size> resource and only the overhead is ordinary memory.
    let memory_request = match &hugepages {
        Some(size) => {
            let q = Quantity(format_bytes(guest));
            requests.insert(format!("hugepages-{size}"), q.clone());
            limits.insert(format!("hugepages-{size}"), q);
            overhead
        }
        None if overcommit_overhead => guest,
        None => guest.saturating_add(overhead),
    };
    requests.insert("memory".to_string(), Quantity(format_bytes(memory_request)));
    if let Some(limit) = domain.resources.limit("memory") {
        let limit = parse_quantity_bytes(&limit.0).map_err(bad("spec.domain.resources.limits.memory"))?;
        let limit = if hugepages.is_some() { overhead } else { limit.saturating_add(overhead) };
        limits.insert("memory".to_string(), Quantity(format_bytes(limit)));
    }

    // CPU.
    let cpu_request = if dedicated {
        vcpus.saturating_mul(1000)
    } else {
        match domain.resources.request("cpu") {
            Some(q) => parse_quantity_millis(&q.0).map_err(bad("spec.domain.resources.requests.cpu"))?,
            None => vcpus.saturating_mul(DEFAULT_CPU_MILLIS_PER_VCPU),
        }
    };
    requests.insert("cpu".to_string(), Quantity(format_millis(cpu_request)));
    if dedicated {
        // Dedicated CPUs need the Guaranteed QoS class: limits equal to requests.
        limits.insert("cpu".to_string(), Quantity(format_millis(cpu_request)));
        limits.entry("memory".to_string()).or_insert_with(|| Quantity(format_bytes(memory_request)));
    } else if let Some(limit) = domain.resources.limit("cpu") {
        let millis = parse_quantity_millis(&limit.0).map_err(bad("spec.domain.resources.limits.cpu"))?;
        limits.insert("cpu".to_string(), Quantity(format_millis(millis)));
    }

    Ok(ResourceRequirements {
        requests: Some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..Default::default()
    })
}

/// The launcher pod for `vmi` (to be created with `generateName`).
pub fn launcher_pod(vmi: &VirtualMachineInstance, settings: &LauncherSettings) -> Result<Pod, LauncherPodError> {
    let name = vmi.metadata.name.clone().ok_or(LauncherPodError::MissingMetadata("name"))?;
    let namespace = vmi.metadata.namespace.clone().ok_or(LauncherPodError::MissingMetadata("namespace"))?;
    let uid = vmi.metadata.uid.clone().ok_or(LauncherPodError::MissingMetadata("uid"))?;
    let owner = owner_reference(vmi).ok_or(LauncherPodError::MissingMetadata("uid"))?;
    let spec = &vmi.spec;

    let mut labels: BTreeMap<String, String> = vmi.metadata.labels.clone().unwrap_or_default();
    labels.insert(APP_LABEL.to_string(), APP_LABEL_VALUE.to_string());
    labels.insert(CREATED_BY_LABEL.to_string(), uid);
    labels.insert(VM_NAME_LABEL.to_string(), name.clone());
    let annotations = BTreeMap::from([(DOMAIN_ANNOTATION.to_string(), name.clone())]);

    let container = Container {
        name: COMPUTE_CONTAINER.to_string(),
        image: Some(settings.image.clone()),
        resources: Some(resources(vmi)?),
        ..Default::default()
    };
    let scheduler =
        spec.scheduler_name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| settings.scheduler_name.clone());

    Ok(Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name(&name)),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            node_selector: spec.node_selector.clone().filter(|m| !m.is_empty()),
            affinity: spec.affinity.clone(),
            tolerations: spec.tolerations.clone().filter(|t| !t.is_empty()),
            priority_class_name: spec.priority_class_name.clone(),
            termination_grace_period_seconds: Some(
                spec.termination_grace_period_seconds.unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS),
            ),
            scheduler_name: Some(scheduler),
            restart_policy: Some("Never".to_string()),
            hostname: spec.hostname.clone(),
            subdomain: spec.subdomain.clone(),
            dns_policy: spec.dns_policy.clone(),
            dns_config: spec.dns_config.clone(),
            ..Default::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_api::kubevirt::{Cpu, Hugepages, Memory};
    use k8s_openapi::api::core::v1::Toleration;

    fn vmi(memory: &str) -> VirtualMachineInstance {
        let mut v = VirtualMachineInstance::default();
        v.metadata.name = Some("vm1".into());
        v.metadata.namespace = Some("ns".into());
        v.metadata.uid = Some("uid-1".into());
        v.metadata.labels = Some([("app".to_string(), "demo".to_string())].into());
        v.spec.domain.resources.requests = Some([("memory".to_string(), Quantity(memory.into()))].into());
        v.spec.domain.cpu = Some(Cpu { sockets: Some(2), cores: Some(1), threads: Some(1), ..Default::default() });
        v
    }

    fn q(r: &Option<BTreeMap<String, Quantity>>, k: &str) -> Option<String> {
        r.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    }

    #[test]
    fn pod_has_owner_labels_annotation_and_placement() {
        let mut v = vmi("1Gi");
        v.spec.node_selector = Some([("zone".to_string(), "a".to_string())].into());
        v.spec.tolerations =
            Some(vec![Toleration { key: Some("k".into()), operator: Some("Exists".into()), ..Default::default() }]);
        v.spec.termination_grace_period_seconds = Some(45);
        let pod = launcher_pod(&v, &LauncherSettings::default()).unwrap();
        let m = &pod.metadata;
        assert_eq!(m.generate_name.as_deref(), Some("virt-launcher-vm1-"));
        assert_eq!(m.name, None);
        assert_eq!(m.namespace.as_deref(), Some("ns"));
        let labels = m.labels.as_ref().unwrap();
        assert_eq!(labels["kubevirt.io"], "virt-launcher");
        assert_eq!(labels["kubevirt.io/created-by"], "uid-1");
        assert_eq!(labels["vm.kubevirt.io/name"], "vm1");
        assert_eq!(labels["app"], "demo");
        assert_eq!(m.annotations.as_ref().unwrap()["kubevirt.io/domain"], "vm1");
        let owner = &m.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("VirtualMachineInstance", "vm1", "uid-1")
        );
        assert_eq!(owner.api_version, "kubevirt.io/v1");
        assert_eq!((owner.controller, owner.block_owner_deletion), (Some(true), Some(true)));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.containers[0].name, "compute");
        assert_eq!(spec.containers[0].image.as_deref(), Some("ferrovirt/launcher"));
        assert_eq!(spec.scheduler_name.as_deref(), Some("ferrovirt-scheduler"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.termination_grace_period_seconds, Some(45));
        assert_eq!(spec.node_selector.unwrap()["zone"], "a");
        assert_eq!(spec.tolerations.unwrap().len(), 1);
    }

    #[test]
    fn requests_are_guest_plus_overhead_and_100m_per_vcpu() {
        let v = vmi("1Gi");
        let r = resources(&v).unwrap();
        let overhead = memory_overhead(&v.spec);
        assert_eq!(q(&r.requests, "memory"), Some(format_bytes((1 << 30) + overhead)));
        assert_eq!(q(&r.requests, "cpu").as_deref(), Some("200m"));
        assert_eq!(r.limits, None);
        let pod = launcher_pod(&v, &LauncherSettings::default()).unwrap();
        assert_eq!(pod.spec.unwrap().termination_grace_period_seconds, Some(30));
    }

    #[test]
    fn explicit_cpu_request_and_limits_are_kept() {
        let mut v = vmi("512Mi");
        v.spec.domain.resources.requests.as_mut().unwrap().insert("cpu".into(), Quantity("1500m".into()));
        v.spec.domain.resources.limits =
            Some([("cpu".to_string(), Quantity("2".into())), ("memory".to_string(), Quantity("1Gi".into()))].into());
        let r = resources(&v).unwrap();
        let overhead = memory_overhead(&v.spec);
        assert_eq!(q(&r.requests, "cpu").as_deref(), Some("1500m"));
        assert_eq!(q(&r.limits, "cpu").as_deref(), Some("2"));
        assert_eq!(q(&r.limits, "memory"), Some(format_bytes((1 << 30) + overhead)));
    }

    #[test]
    fn overcommitted_overhead_stays_out_of_the_request() {
        let mut v = vmi("1Gi");
        v.spec.domain.resources.overcommit_guest_overhead = Some(true);
        let r = resources(&v).unwrap();
        assert_eq!(q(&r.requests, "memory").as_deref(), Some("1Gi"));
    }

    #[test]
    fn dedicated_cpus_get_guaranteed_resources() {
        let mut v = vmi("1Gi");
        v.spec.domain.cpu.as_mut().unwrap().dedicated_cpu_placement = Some(true);
        let r = resources(&v).unwrap();
        assert_eq!(q(&r.requests, "cpu").as_deref(), Some("2"));
        assert_eq!(q(&r.limits, "cpu").as_deref(), Some("2"));
        assert_eq!(q(&r.limits, "memory"), q(&r.requests, "memory"));
    }

    #[test]
    fn hugepages_back_the_guest() {
        let mut v = vmi("1Gi");
        v.spec.domain.memory =
            Some(Memory { hugepages: Some(Hugepages { page_size: Some("2Mi".into()) }), ..Default::default() });
        let r = resources(&v).unwrap();
        assert_eq!(q(&r.requests, "hugepages-2Mi").as_deref(), Some("1Gi"));
        assert_eq!(q(&r.requests, "memory"), Some(format_bytes(memory_overhead(&v.spec))));
    }

    #[test]
    fn vmi_scheduler_name_wins_and_metadata_is_required() {
        let mut v = vmi("1Gi");
        v.spec.scheduler_name = Some("other".into());
        assert_eq!(
            launcher_pod(&v, &LauncherSettings::default()).unwrap().spec.unwrap().scheduler_name.as_deref(),
            Some("other")
        );
        v.metadata.uid = None;
        assert_eq!(launcher_pod(&v, &LauncherSettings::default()), Err(LauncherPodError::MissingMetadata("uid")));
        let mut bad = vmi("1Gi");
        bad.spec.domain.resources.limits = Some([("cpu".to_string(), Quantity("lots".into()))].into());
        assert!(matches!(
            resources(&bad),
            Err(LauncherPodError::Quantity { field: "spec.domain.resources.limits.cpu", .. })
        ));
    }
}
