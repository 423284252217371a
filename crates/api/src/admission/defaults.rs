//! Defaulting: what KubeVirt's mutating webhook and API defaults fill in, done once at
//! admission so that every later reader sees explicit values.
//!
//! All functions are idempotent: defaulting a defaulted object changes nothing. Call them
//! after the API server has generated `metadata.name` from `generateName`, since the
//! firmware UUID is derived from the name.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::kubevirt::{
    CdromTarget, Cpu, DiskTarget, Empty, FeatureApic, FeatureHyperv, FeatureState, Features,
    Firmware, Interface, LunTarget, Machine, Memory, Network, PodNetwork, Timer, VirtualMachine,
    VirtualMachineInstance, VirtualMachineInstanceReplicaSet, VirtualMachineInstanceSpec,
    WatchdogAction,
};
use crate::quantity::parse_quantity_millis;

/// Grace period between the ACPI power-down request and a forced stop (KubeVirt's default).
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// Machine type when none is given.
pub const DEFAULT_MACHINE_TYPE: &str = "q35";
/// Name of the network and interface added when a VMI declares none.
pub const DEFAULT_NETWORK_NAME: &str = "default";

/// KubeVirt's namespace for name-derived firmware UUIDs (`CalculateLegacyUUID`).
const FIRMWARE_UUID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6a1a24a1_4061_4607_8bf4_a3963d0c5895);

/// The SMBIOS UUID KubeVirt derives from a VM name (a UUIDv5), stable across restarts.
pub fn firmware_uuid_for_name(name: &str) -> String {
    uuid::Uuid::new_v5(&FIRMWARE_UUID_NAMESPACE, name.as_bytes()).to_string()
}

fn set_firmware_uuid(spec: &mut VirtualMachineInstanceSpec, name: Option<&str>) {
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return;
    };
    let firmware = spec.domain.firmware.get_or_insert_with(Firmware::default);
    if firmware.uuid.as_deref().unwrap_or_default().is_empty() {
        firmware.uuid = Some(firmware_uuid_for_name(name));
    }
}

/// Defaults a VM the way KubeVirt's VM mutator does: only the machine type and a firmware UUID
/// derived from the VM name (so every VMI of the VM has the same SMBIOS identity). The rest of
/// the template is defaulted when its VMI is admitted ([`default_vmi`]): defaults stored inside
/// list items of the VM would make every client-side `kubectl apply` see a difference, because a
/// JSON merge patch replaces lists whole.
pub fn default_vm(vm: &mut VirtualMachine) {
    let domain = &mut vm.spec.template.spec.domain;
    match &mut domain.machine {
        Some(machine) if !machine.type_.is_empty() => {}
        slot => *slot = Some(Machine { type_: DEFAULT_MACHINE_TYPE.to_string() }),
    }
    set_firmware_uuid(&mut vm.spec.template.spec, vm.metadata.name.as_deref());
}

/// Defaults a VMI: its spec (see [`default_vmi_spec`]) and, if unset, a firmware UUID derived
/// from the VMI name.
pub fn default_vmi(vmi: &mut VirtualMachineInstance) {
    default_vmi_spec(&mut vmi.spec);
    set_firmware_uuid(&mut vmi.spec, vmi.metadata.name.as_deref());
}

/// Defaults a replica set: one replica and a defaulted template spec.
pub fn default_vmirs(rs: &mut VirtualMachineInstanceReplicaSet) {
    if rs.spec.replicas.is_none() {
        rs.spec.replicas = Some(1);
    }
    if let Some(template) = &mut rs.spec.template {
        default_vmi_spec(&mut template.spec);
    }
}

/// Defaults a VMI spec:
///
/// - machine type `q35`;
/// - CPU topology: unset counts become 1; with no topology at all, the vCPU count comes from
///   `resources.limits.cpu` (or `requests.cpu`), rounded up, as sockets;
/// - memory: `requests.memory` from `memory.guest` (or `limits.memory`), and `memory.guest`
///   from `requests.memory`;
/// - disks without a target become `disk`; buses default to `virtio` (disk), `sata` (cdrom) and
///   `scsi` (lun); CD-ROMs are read-only with a closed tray;
/// - with no interfaces and no networks (and `autoattachPodInterface` not false), a pod network
///   and a masquerade interface, both named `default`; interfaces without a binding get
///   masquerade, and model `virtio`;
/// - present features and timers are enabled unless said otherwise; Hyper-V spinlocks retry 4096
///   times; a watchdog is an i6300esb that resets; inputs are USB tablets;
/// - `terminationGracePeriodSeconds` 30.
pub fn default_vmi_spec(spec: &mut VirtualMachineInstanceSpec) {
    let domain = &mut spec.domain;

    match &mut domain.machine {
        Some(machine) if !machine.type_.is_empty() => {}
        slot => {
            *slot = Some(Machine {
                type_: DEFAULT_MACHINE_TYPE.to_string(),
            })
        }
    }

    // CPU topology.
    let cpu = domain.cpu.get_or_insert_with(Cpu::default);
    if cpu.cores.is_none() && cpu.sockets.is_none() && cpu.threads.is_none() {
        let from_resources = domain
            .resources
            .limit("cpu")
            .or_else(|| domain.resources.request("cpu"))
            .and_then(|q| parse_quantity_millis(&q.0).ok())
            .map(|millis| millis.div_ceil(1000).max(1))
            .and_then(|n| u32::try_from(n).ok());
        cpu.sockets = Some(from_resources.unwrap_or(1));
    }
    cpu.sockets.get_or_insert(1);
    cpu.cores.get_or_insert(1);
    cpu.threads.get_or_insert(1);

    // Memory: request and guest fill each other in.
    let guest = domain.memory.as_ref().and_then(|m| m.guest.clone());
    if domain.resources.request("memory").is_none() {
        if let Some(q) = guest
            .clone()
            .or_else(|| domain.resources.limit("memory").cloned())
        {
            domain
                .resources
                .requests
                .get_or_insert_with(Default::default)
                .insert("memory".to_string(), q);
        }
    }
    if guest.is_none() {
        if let Some(q) = domain.resources.request("memory").cloned() {
            domain.memory.get_or_insert_with(Memory::default).guest = Some(q);
        }
    }

    // Disks.
    for disk in domain.devices.disks.iter_mut().flatten() {
        if disk.disk.is_none() && disk.cdrom.is_none() && disk.lun.is_none() {
            disk.disk = Some(DiskTarget::default());
        }
        if let Some(target) = &mut disk.disk {
            target.bus.get_or_insert_with(|| "virtio".to_string());
        }
        if let Some(CdromTarget {
            bus,
            readonly,
            tray,
        }) = &mut disk.cdrom
        {
            bus.get_or_insert_with(|| "sata".to_string());
            readonly.get_or_insert(true);
            tray.get_or_insert_with(|| "closed".to_string());
        }
        if let Some(LunTarget { bus, .. }) = &mut disk.lun {
            bus.get_or_insert_with(|| "scsi".to_string());
        }
    }

    // Interfaces and networks.
    let no_interfaces = domain.devices.interfaces().is_empty();
    let no_networks = spec.networks.as_deref().unwrap_or_default().is_empty();
    if no_interfaces && no_networks && domain.devices.autoattach_pod_interface != Some(false) {
        domain.devices.interfaces = Some(vec![Interface {
            name: DEFAULT_NETWORK_NAME.to_string(),
            masquerade: Some(Empty {}),
            ..Default::default()
        }]);
        spec.networks = Some(vec![Network {
            name: DEFAULT_NETWORK_NAME.to_string(),
            pod: Some(PodNetwork::default()),
            multus: None,
        }]);
    }
    for iface in domain.devices.interfaces.iter_mut().flatten() {
        if iface.binding_methods().is_empty() {
            iface.masquerade = Some(Empty {});
        }
        iface.model.get_or_insert_with(|| "virtio".to_string());
    }

    // Features.
    if let Some(features) = &mut domain.features {
        default_features(features);
    }

    // Timers.
    if let Some(Timer {
        hpet,
        kvm,
        pit,
        rtc,
        hyperv,
    }) = domain.clock.as_mut().and_then(|c| c.timer.as_mut())
    {
        if let Some(t) = hpet {
            t.present.get_or_insert(true);
        }
        if let Some(t) = kvm {
            t.present.get_or_insert(true);
        }
        if let Some(t) = pit {
            t.present.get_or_insert(true);
        }
        if let Some(t) = rtc {
            t.present.get_or_insert(true);
        }
        if let Some(t) = hyperv {
            t.present.get_or_insert(true);
        }
    }

    // Watchdog and inputs.
    if let Some(watchdog) = &mut domain.devices.watchdog {
        if watchdog.i6300esb.is_none() && watchdog.diag288.is_none() {
            watchdog.i6300esb = Some(WatchdogAction::default());
        }
        for action in [&mut watchdog.i6300esb, &mut watchdog.diag288]
            .into_iter()
            .flatten()
        {
            action.action.get_or_insert_with(|| "reset".to_string());
        }
    }
    for input in domain.devices.inputs.iter_mut().flatten() {
        input.bus.get_or_insert_with(|| "usb".to_string());
        input.type_.get_or_insert_with(|| "tablet".to_string());
    }

    spec.termination_grace_period_seconds
        .get_or_insert(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS);
}

fn enable(state: &mut Option<FeatureState>) {
    if let Some(state) = state {
        state.enabled.get_or_insert(true);
    }
}

fn default_features(features: &mut Features) {
    enable(&mut features.acpi);
    enable(&mut features.smm);
    enable(&mut features.pvspinlock);
    enable(&mut features.hyperv_passthrough);
    if let Some(FeatureApic { enabled, .. }) = &mut features.apic {
        enabled.get_or_insert(true);
    }
    if let Some(hyperv) = &mut features.hyperv {
        default_hyperv(hyperv);
    }
}

fn default_hyperv(h: &mut FeatureHyperv) {
    for state in [
        &mut h.relaxed,
        &mut h.vapic,
        &mut h.vpindex,
        &mut h.runtime,
        &mut h.synic,
        &mut h.reset,
        &mut h.frequencies,
        &mut h.reenlightenment,
        &mut h.ipi,
        &mut h.evmcs,
    ] {
        enable(state);
    }
    if let Some(spinlocks) = &mut h.spinlocks {
        let enabled = *spinlocks.enabled.get_or_insert(true);
        if enabled {
            spinlocks.retries.get_or_insert(4096);
        }
    }
    if let Some(timer) = &mut h.synictimer {
        timer.enabled.get_or_insert(true);
        enable(&mut timer.direct);
    }
    if let Some(vendor) = &mut h.vendorid {
        vendor.enabled.get_or_insert(true);
    }
    if let Some(tlb) = &mut h.tlbflush {
        tlb.enabled.get_or_insert(true);
        enable(&mut tlb.direct);
        enable(&mut tlb.extended);
    }
}

/// The guest memory after defaulting: `memory.guest`, else `requests.memory`.
pub(crate) fn guest_memory(spec: &VirtualMachineInstanceSpec) -> Option<&Quantity> {
    spec.domain
        .memory
        .as_ref()
        .and_then(|m| m.guest.as_ref())
        .or_else(|| spec.domain.resources.request("memory"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubevirt::{Bootloader, Disk, Efi, FeatureSpinlocks, Input, PresentTimer, Watchdog};
    use std::collections::BTreeMap;

    fn spec_with_memory(q: &str) -> VirtualMachineInstanceSpec {
        let mut spec = VirtualMachineInstanceSpec::default();
        spec.domain.resources.requests = Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(q.to_string()),
        )]));
        spec
    }

    #[test]
    fn firmware_uuid_matches_kubevirt() {
        // uuid.NewSHA1(6a1a24a1-4061-4607-8bf4-a3963d0c5895, "testvm"), as computed by RFC 4122 v5.
        let u = firmware_uuid_for_name("testvm");
        assert_eq!(u, "5a9fc181-957e-5c32-9e5a-2de5e9673531");
        assert_ne!(u, firmware_uuid_for_name("testvm2"));
        let parsed = uuid::Uuid::parse_str(&u).unwrap();
        assert_eq!(parsed.get_version_num(), 5);
    }

    #[test]
    fn basic_defaults() {
        let mut spec = spec_with_memory("64Mi");
        spec.domain.devices.disks = Some(vec![
            Disk {
                name: "root".into(),
                ..Default::default()
            },
            Disk {
                name: "iso".into(),
                cdrom: Some(CdromTarget::default()),
                ..Default::default()
            },
            Disk {
                name: "lun".into(),
                lun: Some(LunTarget::default()),
                ..Default::default()
            },
        ]);
        default_vmi_spec(&mut spec);
        let d = &spec.domain;
        assert_eq!(d.machine.as_ref().unwrap().type_, "q35");
        let cpu = d.cpu.as_ref().unwrap();
        assert_eq!(
            (cpu.sockets, cpu.cores, cpu.threads),
            (Some(1), Some(1), Some(1))
        );
        assert_eq!(
            d.memory.as_ref().unwrap().guest,
            Some(Quantity("64Mi".into()))
        );
        let disks = d.devices.disks();
        assert_eq!(
            disks[0].disk.as_ref().unwrap().bus.as_deref(),
            Some("virtio")
        );
        let cd = disks[1].cdrom.as_ref().unwrap();
        assert_eq!(
            (cd.bus.as_deref(), cd.readonly, cd.tray.as_deref()),
            (Some("sata"), Some(true), Some("closed"))
        );
        assert_eq!(disks[2].lun.as_ref().unwrap().bus.as_deref(), Some("scsi"));
        let ifaces = d.devices.interfaces();
        assert_eq!(ifaces.len(), 1);
        assert_eq!(ifaces[0].name, "default");
        assert!(ifaces[0].masquerade.is_some());
        assert_eq!(ifaces[0].model.as_deref(), Some("virtio"));
        assert_eq!(spec.networks().len(), 1);
        assert!(spec.networks()[0].pod.is_some());
        assert_eq!(spec.termination_grace_period_seconds, Some(30));
    }

    #[test]
    fn cpu_topology_from_resources() {
        let mut spec = spec_with_memory("1Gi");
        spec.domain.resources.limits = Some(BTreeMap::from([(
            "cpu".to_string(),
            Quantity("2500m".into()),
        )]));
        default_vmi_spec(&mut spec);
        let cpu = spec.domain.cpu.unwrap();
        assert_eq!(
            (cpu.sockets, cpu.cores, cpu.threads),
            (Some(3), Some(1), Some(1))
        );

        let mut spec = spec_with_memory("1Gi");
        spec.domain.cpu = Some(Cpu {
            cores: Some(4),
            ..Default::default()
        });
        default_vmi_spec(&mut spec);
        let cpu = spec.domain.cpu.unwrap();
        assert_eq!(
            (cpu.sockets, cpu.cores, cpu.threads),
            (Some(1), Some(4), Some(1))
        );
    }

    #[test]
    fn memory_request_from_guest_or_limit() {
        let mut spec = VirtualMachineInstanceSpec::default();
        spec.domain.memory = Some(Memory {
            guest: Some(Quantity("128Mi".into())),
            ..Default::default()
        });
        default_vmi_spec(&mut spec);
        assert_eq!(
            spec.domain.resources.request("memory"),
            Some(&Quantity("128Mi".into()))
        );

        let mut spec = VirtualMachineInstanceSpec::default();
        spec.domain.resources.limits = Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity("256Mi".into()),
        )]));
        default_vmi_spec(&mut spec);
        assert_eq!(
            spec.domain.resources.request("memory"),
            Some(&Quantity("256Mi".into()))
        );
        assert_eq!(guest_memory(&spec), Some(&Quantity("256Mi".into())));
    }

    #[test]
    fn no_default_interface_when_autoattach_is_false_or_networks_given() {
        let mut spec = spec_with_memory("64Mi");
        spec.domain.devices.autoattach_pod_interface = Some(false);
        default_vmi_spec(&mut spec);
        assert!(spec.domain.devices.interfaces.is_none());
        assert!(spec.networks.is_none());

        let mut spec = spec_with_memory("64Mi");
        spec.networks = Some(vec![Network {
            name: "n1".into(),
            pod: Some(PodNetwork::default()),
            multus: None,
        }]);
        spec.domain.devices.interfaces = Some(vec![Interface {
            name: "n1".into(),
            ..Default::default()
        }]);
        default_vmi_spec(&mut spec);
        assert_eq!(spec.domain.devices.interfaces().len(), 1);
        assert!(spec.domain.devices.interfaces()[0].masquerade.is_some());
    }

    #[test]
    fn features_timers_watchdog_inputs() {
        let mut spec = spec_with_memory("64Mi");
        spec.domain.features = Some(Features {
            acpi: Some(FeatureState::default()),
            smm: Some(FeatureState {
                enabled: Some(false),
            }),
            hyperv: Some(FeatureHyperv {
                spinlocks: Some(FeatureSpinlocks::default()),
                ..Default::default()
            }),
            ..Default::default()
        });
        spec.domain.clock = Some(crate::kubevirt::Clock {
            timer: Some(Timer {
                kvm: Some(PresentTimer::default()),
                ..Default::default()
            }),
            ..Default::default()
        });
        spec.domain.devices.watchdog = Some(Watchdog {
            name: "w".into(),
            ..Default::default()
        });
        spec.domain.devices.inputs = Some(vec![Input {
            name: "tablet".into(),
            ..Default::default()
        }]);
        spec.domain.firmware = Some(Firmware {
            bootloader: Some(Bootloader {
                efi: Some(Efi::default()),
                bios: None,
            }),
            ..Default::default()
        });
        default_vmi_spec(&mut spec);
        let f = spec.domain.features.as_ref().unwrap();
        assert_eq!(
            f.acpi,
            Some(FeatureState {
                enabled: Some(true)
            })
        );
        assert_eq!(
            f.smm,
            Some(FeatureState {
                enabled: Some(false)
            })
        );
        let spin = f.hyperv.as_ref().unwrap().spinlocks.as_ref().unwrap();
        assert_eq!((spin.enabled, spin.retries), (Some(true), Some(4096)));
        let timer = spec.domain.clock.as_ref().unwrap().timer.as_ref().unwrap();
        assert_eq!(timer.kvm.as_ref().unwrap().present, Some(true));
        let wd = spec.domain.devices.watchdog.as_ref().unwrap();
        assert_eq!(
            wd.i6300esb.as_ref().unwrap().action.as_deref(),
            Some("reset")
        );
        let input = &spec.domain.devices.inputs.as_ref().unwrap()[0];
        assert_eq!(
            (input.bus.as_deref(), input.type_.as_deref()),
            (Some("usb"), Some("tablet"))
        );
    }

    #[test]
    fn vm_and_vmi_get_name_derived_uuid_once() {
        let mut vm = VirtualMachine::default();
        vm.metadata.name = Some("testvm".into());
        default_vm(&mut vm);
        let uuid = vm
            .spec
            .template
            .spec
            .domain
            .firmware
            .as_ref()
            .unwrap()
            .uuid
            .clone();
        assert_eq!(uuid, Some(firmware_uuid_for_name("testvm")));
        let once = vm.clone();
        default_vm(&mut vm);
        assert_eq!(vm, once, "defaulting is idempotent");

        let mut vmi = VirtualMachineInstance::default();
        vmi.spec.domain.firmware = Some(Firmware {
            uuid: Some("keep-me".into()),
            ..Default::default()
        });
        vmi.metadata.name = Some("x".into());
        default_vmi(&mut vmi);
        assert_eq!(
            vmi.spec.domain.firmware.unwrap().uuid.as_deref(),
            Some("keep-me")
        );

        let mut unnamed = VirtualMachineInstance::default();
        default_vmi(&mut unnamed);
        assert!(unnamed.spec.domain.firmware.is_none());
    }

    #[test]
    fn replicaset_defaults() {
        let mut rs = VirtualMachineInstanceReplicaSet::default();
        rs.spec.template = Some(Default::default());
        default_vmirs(&mut rs);
        assert_eq!(rs.spec.replicas, Some(1));
        assert_eq!(
            rs.spec
                .template
                .unwrap()
                .spec
                .termination_grace_period_seconds,
            Some(30)
        );
    }
}
