//! The object every benchmark writes: a KubeVirt-style `VirtualMachine` with a container disk and a
//! cloud-init NoCloud disk, shaped like the VMs in KubeVirt's examples.

use anyhow::Context;
use ferrovirt_api::kubevirt::VirtualMachine;
use serde_json::{json, Value};

/// The namespace benchmarks write into (the API server creates it at start).
pub const NAMESPACE: &str = "default";

/// Name of the `index`-th benchmark VM; zero-padded so store order is creation order.
pub fn vm_name(index: usize) -> String {
    format!("bench-vm-{index:06}")
}

/// The VM manifest as a user would post it.
pub fn vm_manifest(name: &str) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "labels": { "kubevirt.io/vm": name, "app": "ferrovirt-bench" }
        },
        "spec": {
            "runStrategy": "Halted",
            "template": {
                "metadata": { "labels": { "kubevirt.io/vm": name } },
                "spec": {
                    "domain": {
                        "cpu": { "cores": 1 },
                        "devices": {
                            "disks": [
                                { "name": "containerdisk", "disk": { "bus": "virtio" } },
                                { "name": "cloudinitdisk", "disk": { "bus": "virtio" } }
                            ],
                            "interfaces": [ { "name": "default", "masquerade": {} } ]
                        },
                        "resources": { "requests": { "memory": "128Mi" } }
                    },
                    "networks": [ { "name": "default", "pod": {} } ],
                    "terminationGracePeriodSeconds": 0,
                    "volumes": [
                        {
                            "name": "containerdisk",
                            "containerDisk": { "image": "registry.local:5000/kubevirt/cirros-container-disk-demo:latest" }
                        },
                        {
                            "name": "cloudinitdisk",
                            "cloudInitNoCloud": {
                                "userData": "#!/bin/sh\n\necho 'printed from cloud-init userdata'\n"
                            }
                        }
                    ]
                }
            }
        }
    })
}

/// The typed VM for `name`, built from [`vm_manifest`].
pub fn vm(name: &str) -> anyhow::Result<VirtualMachine> {
    serde_json::from_value(vm_manifest(name))
        .with_context(|| format!("the benchmark manifest for {name} is not a valid VirtualMachine"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_a_virtual_machine_with_both_volumes() {
        let vm = vm(&vm_name(7)).unwrap();
        assert_eq!(vm.metadata.name.as_deref(), Some("bench-vm-000007"));
        let text = serde_json::to_string(&vm).unwrap();
        assert!(text.contains("containerDisk"), "{text}");
        assert!(text.contains("cloudInitNoCloud"), "{text}");
    }

    #[test]
    fn names_sort_in_creation_order() {
        assert!(vm_name(9) < vm_name(10));
        assert!(vm_name(999) < vm_name(1000));
    }
}
