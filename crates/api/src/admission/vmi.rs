//! Validation of VMI specs (also used for VM and replica set templates) and of VMI updates.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine;

use super::defaults::guest_memory;
use super::meta::{
    dns1123_label_errors, dns1123_subdomain_errors, qualified_name_errors, validate_labels,
    NameRule,
};
use super::{first_duplicate, validate_object_meta, FieldError, FieldPath};
use crate::kubevirt::{
    CloudInitSource, Cpu, DomainSpec, Firmware, Interface, VirtualMachineInstance,
    VirtualMachineInstanceSpec, Volume,
};
use crate::quantity::{compare_quantities, parse_quantity_bytes, parse_quantity_millis};

/// Largest inline cloud-init user or network data ferrovirt accepts, after base64 decoding.
/// (KubeVirt itself allows 2 KiB inline and asks for a Secret beyond that.)
pub const CLOUD_INIT_DATA_MAX_BYTES: usize = 16 * 1024;

const DISK_BUSES: &[&str] = &["virtio", "sata", "scsi", "usb"];
const CDROM_BUSES: &[&str] = &["sata", "scsi", "usb"];
const NIC_MODELS: &[&str] = &[
    "virtio", "e1000", "e1000e", "igb", "ne2k_pci", "pcnet", "rtl8139",
];
const PULL_POLICIES: &[&str] = &["Always", "Never", "IfNotPresent"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const MAX_STR_LEN: usize = 256;

/// Validates a VMI: its metadata and, on create, its spec; on update, that the spec did not change.
pub fn validate_vmi(
    new: &VirtualMachineInstance,
    old: Option<&VirtualMachineInstance>,
) -> Vec<FieldError> {
    let mut errs = validate_object_meta(&new.metadata, true, NameRule::Dns1123Subdomain);
    match old {
        None => errs.extend(validate_vmi_spec(&new.spec, "spec")),
        Some(old) => errs.extend(validate_vmi_update(new, old)),
    }
    errs
}

/// A VMI's spec is fixed once it exists (KubeVirt lets only its own components change it, for
/// hotplug, which ferrovirt does not do). The error, at path `spec`, names the changed fields.
pub fn validate_vmi_update(
    new: &VirtualMachineInstance,
    old: &VirtualMachineInstance,
) -> Vec<FieldError> {
    if new.spec == old.spec {
        return Vec::new();
    }
    let changed = match (
        serde_json::to_value(&new.spec),
        serde_json::to_value(&old.spec),
    ) {
        (Ok(serde_json::Value::Object(n)), Ok(serde_json::Value::Object(o))) => {
            let mut keys: Vec<String> = n
                .keys()
                .chain(o.keys())
                .filter(|k| n.get(*k) != o.get(*k))
                .map(|k| format!("spec.{k}"))
                .collect();
            keys.sort();
            keys.dedup();
            keys
        }
        _ => Vec::new(),
    };
    let what = if changed.is_empty() {
        "the spec".to_string()
    } else {
        changed.join(", ")
    };
    vec![FieldError::forbidden(
        "spec",
        format!("{what} may not be changed once the VirtualMachineInstance exists; change the VirtualMachine and restart it"),
    )]
}

/// Validates a VMI spec at `path_prefix` (e.g. `spec` or `spec.template.spec`).
pub fn validate_vmi_spec(spec: &VirtualMachineInstanceSpec, path_prefix: &str) -> Vec<FieldError> {
    let p = FieldPath::new(path_prefix);
    let mut errs = Vec::new();
    let domain = &spec.domain;
    let d = p.child("domain");

    validate_resources(domain, &d, &mut errs);
    validate_memory(spec, &d, &mut errs);
    if let Some(cpu) = &domain.cpu {
        validate_cpu(cpu, &d.child("cpu"), &mut errs);
    }
    if let Some(machine) = &domain.machine {
        let t = &machine.type_;
        if !(t == "q35" || t.starts_with("pc-q35-")) {
            errs.push(FieldError::not_supported(
                d.child("machine").child("type"),
                format!("{t:?}: supported machine types are \"q35\" and \"pc-q35-*\""),
            ));
        }
    }
    if let Some(firmware) = &domain.firmware {
        validate_firmware(firmware, domain, &d.child("firmware"), &mut errs);
    }
    validate_features_and_clock(domain, &d, &mut errs);
    if let Some(policy) = &domain.io_threads_policy {
        let path = d.child("ioThreadsPolicy");
        match policy.as_str() {
            "shared" | "auto" => {}
            "supplementalPool" => errs.push(FieldError::not_supported_yet(
                path,
                "ioThreadsPolicy supplementalPool",
            )),
            other => errs.push(FieldError::not_supported(
                path,
                format!("{other:?}: supported values are \"shared\", \"auto\""),
            )),
        }
    }

    validate_volumes(spec, &p, &mut errs);
    let mut boot_orders: HashMap<u32, FieldPath> = HashMap::new();
    validate_disks(spec, &p, &mut boot_orders, &mut errs);
    validate_networks(spec, &p, &mut boot_orders, &mut errs);
    validate_other_devices(domain, &d.child("devices"), &mut errs);
    validate_scheduling_and_dns(spec, &p, &mut errs);

    if let Some(secs) = spec.termination_grace_period_seconds {
        if secs < 0 {
            errs.push(FieldError::invalid(
                p.child("terminationGracePeriodSeconds"),
                format!("{secs}: must be greater than or equal to 0"),
            ));
        }
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(value) = value {
            let problems = if field == "hostname" {
                dns1123_label_errors(value)
            } else {
                dns1123_subdomain_errors(value)
            };
            for problem in problems {
                errs.push(FieldError::invalid(
                    p.child(field),
                    format!("{value:?}: {problem}"),
                ));
            }
        }
    }
    if let Some(arch) = &spec.architecture {
        if arch != "amd64" {
            errs.push(FieldError::not_supported(
                p.child("architecture"),
                format!("{arch:?}: ferrovirt runs \"amd64\" guests only"),
            ));
        }
    }
    if spec.liveness_probe.is_some() {
        errs.push(FieldError::not_supported_yet(
            p.child("livenessProbe"),
            "livenessProbe",
        ));
    }
    if spec.readiness_probe.is_some() {
        errs.push(FieldError::not_supported_yet(
            p.child("readinessProbe"),
            "readinessProbe",
        ));
    }
    if spec.access_credentials.is_some() {
        errs.push(FieldError::not_supported_yet(
            p.child("accessCredentials"),
            "accessCredentials",
        ));
    }
    errs
}

fn validate_resources(domain: &DomainSpec, d: &FieldPath, errs: &mut Vec<FieldError>) {
    let r = d.child("resources");
    for (list_name, list) in [
        ("requests", &domain.resources.requests),
        ("limits", &domain.resources.limits),
    ] {
        for (key, q) in list.iter().flatten() {
            let path = r.child(list_name).key(key);
            let parsed = match key.as_str() {
                "memory" => parse_quantity_bytes(&q.0),
                "cpu" => parse_quantity_millis(&q.0),
                _ => {
                    errs.push(FieldError::not_supported(
                        path,
                        format!("{key:?}: only \"cpu\" and \"memory\" resources are supported"),
                    ));
                    continue;
                }
            };
            match parsed {
                Err(e) => errs.push(FieldError::invalid(path, format!("{:?}: {e}", q.0))),
                Ok(0) if key == "memory" => errs.push(FieldError::invalid(
                    path,
                    format!("{:?}: must be greater than 0", q.0),
                )),
                Ok(_) => {}
            }
        }
    }
    for key in ["memory", "cpu"] {
        if let (Some(req), Some(lim)) = (domain.resources.request(key), domain.resources.limit(key))
        {
            if compare_quantities(&req.0, &lim.0) == Ok(Ordering::Greater) {
                errs.push(FieldError::invalid(
                    r.child("requests").key(key),
                    format!(
                        "{:?}: must be less than or equal to the {key} limit {:?}",
                        req.0, lim.0
                    ),
                ));
            }
        }
    }
}

fn validate_memory(spec: &VirtualMachineInstanceSpec, d: &FieldPath, errs: &mut Vec<FieldError>) {
    let domain = &spec.domain;
    let m = d.child("memory");
    if guest_memory(spec).is_none() {
        errs.push(FieldError::required(
            d.child("resources").child("requests").key("memory"),
            "guest memory is required: set domain.memory.guest or domain.resources.requests.memory",
        ));
    }
    let Some(memory) = &domain.memory else {
        return;
    };
    if let Some(guest) = &memory.guest {
        match parse_quantity_bytes(&guest.0) {
            Err(e) => errs.push(FieldError::invalid(
                m.child("guest"),
                format!("{:?}: {e}", guest.0),
            )),
            Ok(0) => errs.push(FieldError::invalid(
                m.child("guest"),
                format!("{:?}: must be greater than 0", guest.0),
            )),
            Ok(_) => {
                if let Some(limit) = domain.resources.limit("memory") {
                    if compare_quantities(&guest.0, &limit.0) == Ok(Ordering::Greater) {
                        errs.push(FieldError::invalid(
                            m.child("guest"),
                            format!(
                                "{:?}: must not exceed the memory limit {:?}",
                                guest.0, limit.0
                            ),
                        ));
                    }
                }
            }
        }
    }
    if memory.max_guest.is_some() {
        errs.push(FieldError::not_supported_yet(
            m.child("maxGuest"),
            "memory hotplug (maxGuest)",
        ));
    }
    if memory.hugepages.is_some() {
        errs.push(FieldError::not_supported_yet(
            m.child("hugepages"),
            "hugepages",
        ));
    }
}

fn validate_cpu(cpu: &Cpu, c: &FieldPath, errs: &mut Vec<FieldError>) {
    for (name, value) in [
        ("cores", cpu.cores),
        ("sockets", cpu.sockets),
        ("threads", cpu.threads),
    ] {
        if value == Some(0) {
            errs.push(FieldError::invalid(
                c.child(name),
                "0: must be greater than 0",
            ));
        }
    }
    if cpu.max_sockets.is_some() {
        errs.push(FieldError::not_supported_yet(
            c.child("maxSockets"),
            "CPU hotplug (maxSockets)",
        ));
    }
    if cpu.dedicated_cpu_placement == Some(true) {
        errs.push(FieldError::not_supported_yet(
            c.child("dedicatedCpuPlacement"),
            "dedicatedCpuPlacement",
        ));
    }
    if cpu.isolate_emulator_thread == Some(true) {
        errs.push(FieldError::not_supported_yet(
            c.child("isolateEmulatorThread"),
            "isolateEmulatorThread",
        ));
    }
    if cpu.model.as_deref() == Some("") {
        errs.push(FieldError::invalid(
            c.child("model"),
            "\"\": must not be empty when set",
        ));
    }
    for (i, feature) in cpu.features.iter().flatten().enumerate() {
        let f = c.child("features").index(i);
        if feature.name.is_empty() {
            errs.push(FieldError::required(
                f.child("name"),
                "CPU feature name is required",
            ));
        }
        if let Some(policy) = &feature.policy {
            if !["force", "require", "optional", "disable", "forbid"].contains(&policy.as_str()) {
                errs.push(FieldError::not_supported(
                    f.child("policy"),
                    format!("{policy:?}: supported values are \"force\", \"require\", \"optional\", \"disable\", \"forbid\""),
                ));
            }
        }
    }
}

fn validate_firmware(
    firmware: &Firmware,
    domain: &DomainSpec,
    f: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    if let Some(uuid) = &firmware.uuid {
        if uuid::Uuid::parse_str(uuid).is_err() {
            errs.push(FieldError::invalid(
                f.child("uuid"),
                format!("{uuid:?}: must be a UUID"),
            ));
        }
    }
    if let Some(serial) = &firmware.serial {
        if serial.len() > MAX_STR_LEN || !serial.bytes().all(is_serial_char) {
            errs.push(FieldError::invalid(
                f.child("serial"),
                format!("{serial:?}: must be at most {MAX_STR_LEN} characters of [A-Za-z0-9_.+-]"),
            ));
        }
    }
    if let Some(bootloader) = &firmware.bootloader {
        let b = f.child("bootloader");
        if bootloader.bios.is_some() && bootloader.efi.is_some() {
            errs.push(FieldError::invalid(
                &b,
                "bios and efi are mutually exclusive",
            ));
        }
        if let Some(efi) = &bootloader.efi {
            let smm = domain
                .features
                .as_ref()
                .and_then(|x| x.smm.as_ref())
                .is_some_and(|s| s.is_enabled());
            if efi.secure_boot != Some(false) && !smm {
                errs.push(FieldError::invalid(
                    b.child("efi").child("secureBoot"),
                    "EFI Secure Boot (the default) requires SMM: set domain.features.smm.enabled to true, or \
                     efi.secureBoot to false",
                ));
            }
        }
    }
    if let Some(kb) = &firmware.kernel_boot {
        let k = f.child("kernelBoot");
        match &kb.container {
            None => {
                if kb.kernel_args.is_some() {
                    errs.push(FieldError::invalid(
                        k.child("kernelArgs"),
                        "kernelArgs can only be set together with kernelBoot.container",
                    ));
                }
            }
            Some(container) => {
                let c = k.child("container");
                if container.image.trim().is_empty() {
                    errs.push(FieldError::required(
                        c.child("image"),
                        "the kernel boot container image is required",
                    ));
                }
                if container.kernel_path.is_none() && container.initrd_path.is_none() {
                    errs.push(FieldError::required(
                        &c,
                        "at least one of kernelPath and initrdPath is required",
                    ));
                } else if container.kernel_path.is_none() {
                    errs.push(FieldError::required(
                        c.child("kernelPath"),
                        "an initrd boots only with a kernel: set kernelPath (QEMU cannot load an initrd alone)",
                    ));
                }
                for (name, path) in [
                    ("kernelPath", &container.kernel_path),
                    ("initrdPath", &container.initrd_path),
                ] {
                    if let Some(path) = path {
                        if !is_clean_absolute(path) {
                            errs.push(FieldError::invalid(
                                c.child(name),
                                format!("{path:?}: must be an absolute path without '..'"),
                            ));
                        }
                    }
                }
                check_pull_policy(
                    container.image_pull_policy.as_deref(),
                    &c.child("imagePullPolicy"),
                    errs,
                );
            }
        }
    }
}

fn validate_features_and_clock(domain: &DomainSpec, d: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some(features) = &domain.features {
        let f = d.child("features");
        if features
            .hyperv_passthrough
            .as_ref()
            .is_some_and(|s| s.is_enabled())
            && features.hyperv.is_some()
        {
            errs.push(FieldError::invalid(
                f.child("hypervPassthrough"),
                "hypervPassthrough and hyperv are mutually exclusive",
            ));
        }
        if let Some(hyperv) = &features.hyperv {
            let h = f.child("hyperv");
            if let Some(spin) = &hyperv.spinlocks {
                if let Some(retries) = spin.retries {
                    if retries < 4096 {
                        errs.push(FieldError::invalid(
                            h.child("spinlocks").child("spinlocks"),
                            format!("{retries}: must be at least 4096"),
                        ));
                    }
                }
            }
            if let Some(vendor) = hyperv.vendorid.as_ref().and_then(|v| v.vendor_id.as_ref()) {
                if vendor.len() > 12 {
                    errs.push(FieldError::too_long(
                        h.child("vendorid").child("vendorid"),
                        format!("{vendor:?}: may not be longer than 12 characters"),
                    ));
                }
            }
        }
    }
    if let Some(clock) = &domain.clock {
        let c = d.child("clock");
        if clock.utc.is_some() && clock.timezone.is_some() {
            errs.push(FieldError::invalid(
                &c,
                "utc and timezone are mutually exclusive",
            ));
        }
        if clock.timezone.as_deref() == Some("") {
            errs.push(FieldError::invalid(
                c.child("timezone"),
                "\"\": must not be empty when set",
            ));
        }
        if let Some(timer) = &clock.timer {
            let t = c.child("timer");
            let checks: [(&str, Option<&String>, &[&str]); 3] = [
                (
                    "hpet",
                    timer.hpet.as_ref().and_then(|x| x.tick_policy.as_ref()),
                    &["delay", "catchup", "merge", "discard"],
                ),
                (
                    "pit",
                    timer.pit.as_ref().and_then(|x| x.tick_policy.as_ref()),
                    &["delay", "catchup", "discard"],
                ),
                (
                    "rtc",
                    timer.rtc.as_ref().and_then(|x| x.tick_policy.as_ref()),
                    &["delay", "catchup"],
                ),
            ];
            for (name, policy, allowed) in checks {
                if let Some(policy) = policy {
                    check_one_of(policy, allowed, &t.child(name).child("tickPolicy"), errs);
                }
            }
            if let Some(track) = timer.rtc.as_ref().and_then(|x| x.track.as_ref()) {
                check_one_of(
                    track,
                    &["guest", "wall"],
                    &t.child("rtc").child("track"),
                    errs,
                );
            }
        }
    }
}

fn check_one_of(value: &str, allowed: &[&str], path: &FieldPath, errs: &mut Vec<FieldError>) {
    if !allowed.contains(&value) {
        let list: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        errs.push(FieldError::not_supported(
            path,
            format!("{value:?}: supported values are {}", list.join(", ")),
        ));
    }
}

fn check_pull_policy(policy: Option<&str>, path: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some(policy) = policy {
        check_one_of(policy, PULL_POLICIES, path, errs);
    }
}

fn is_serial_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-')
}

fn is_clean_absolute(path: &str) -> bool {
    path.starts_with('/') && !path.split('/').any(|c| c == "..")
}

/// `DDDD:BB:SS.F` in hex.
fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, len: usize| p.len() == len && p.bytes().all(|b| b.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [domain, bus, rest] => match rest.split_once('.') {
            Some((slot, func)) => hex(domain, 4) && hex(bus, 2) && hex(slot, 2) && hex(func, 1),
            None => false,
        },
        _ => false,
    }
}

fn is_mac_address(s: &str) -> bool {
    let sep = if s.contains('-') { '-' } else { ':' };
    let parts: Vec<&str> = s.split(sep).collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Parses `addr/prefix`.
fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max).then_some((addr, prefix))
}

fn validate_volumes(spec: &VirtualMachineInstanceSpec, p: &FieldPath, errs: &mut Vec<FieldError>) {
    let volumes = spec.volumes();
    let v = p.child("volumes");
    let disk_names: Vec<&str> = spec
        .domain
        .devices
        .disks()
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    let mut cloud_init_seen: Option<usize> = None;
    for (i, volume) in volumes.iter().enumerate() {
        let vi = v.index(i);
        for problem in dns1123_label_errors(&volume.name) {
            errs.push(FieldError::invalid(
                vi.child("name"),
                format!("{:?}: {problem}", volume.name),
            ));
        }
        if let Some(j) = first_duplicate(volumes, i, |x| x.name.clone()) {
            errs.push(FieldError::duplicate(
                vi.child("name"),
                format!("{:?}: {} has the same name", volume.name, v.index(j)),
            ));
        } else if !disk_names.contains(&volume.name.as_str()) {
            errs.push(FieldError::invalid(
                vi.child("name"),
                format!(
                    "{:?}: no disk uses this volume; add a disk with the same name",
                    volume.name
                ),
            ));
        }
        let kinds = volume.source_kinds();
        match kinds.len() {
            0 => errs.push(FieldError::required(
                &vi,
                "exactly one volume source is required, e.g. containerDisk, cloudInitNoCloud, emptyDisk or hostDisk",
            )),
            1 => {}
            _ => errs.push(FieldError::invalid(
                &vi,
                format!("exactly one volume source may be set, found {}", kinds.join(", ")),
            )),
        }
        for kind in &kinds {
            if !matches!(
                *kind,
                "containerDisk" | "cloudInitNoCloud" | "emptyDisk" | "hostDisk"
            ) {
                errs.push(FieldError::not_supported_yet(
                    vi.child(kind),
                    &format!("volume source {kind}"),
                ));
            }
        }
        validate_volume_source(volume, &vi, errs);
        if volume.cloud_init_no_cloud.is_some() {
            if let Some(j) = cloud_init_seen {
                errs.push(FieldError::duplicate(
                    vi.child("cloudInitNoCloud"),
                    format!(
                        "only one cloudInitNoCloud volume is allowed; {} has one already",
                        v.index(j)
                    ),
                ));
            } else {
                cloud_init_seen = Some(i);
            }
        }
    }
}

fn validate_volume_source(volume: &Volume, vi: &FieldPath, errs: &mut Vec<FieldError>) {
    if let Some(cd) = &volume.container_disk {
        let c = vi.child("containerDisk");
        if cd.image.trim().is_empty() {
            errs.push(FieldError::required(
                c.child("image"),
                "a containerDisk needs an image",
            ));
        } else if cd.image.chars().any(char::is_whitespace) {
            errs.push(FieldError::invalid(
                c.child("image"),
                format!("{:?}: must not contain whitespace", cd.image),
            ));
        }
        if let Some(path) = &cd.path {
            if !is_clean_absolute(path) {
                errs.push(FieldError::invalid(
                    c.child("path"),
                    format!("{path:?}: must be an absolute path without '..'"),
                ));
            }
        }
        check_pull_policy(
            cd.image_pull_policy.as_deref(),
            &c.child("imagePullPolicy"),
            errs,
        );
    }
    if let Some(ci) = &volume.cloud_init_no_cloud {
        validate_cloud_init(ci, &vi.child("cloudInitNoCloud"), errs);
    }
    if let Some(empty) = &volume.empty_disk {
        let c = vi.child("emptyDisk").child("capacity");
        match &empty.capacity {
            None => errs.push(FieldError::required(
                c,
                "an emptyDisk needs a capacity, e.g. \"2Gi\"",
            )),
            Some(q) => match parse_quantity_bytes(&q.0) {
                Err(e) => errs.push(FieldError::invalid(c, format!("{:?}: {e}", q.0))),
                Ok(0) => errs.push(FieldError::invalid(
                    c,
                    format!("{:?}: must be greater than 0", q.0),
                )),
                Ok(_) => {}
            },
        }
    }
    if let Some(hd) = &volume.host_disk {
        let h = vi.child("hostDisk");
        if hd.path.is_empty() {
            errs.push(FieldError::required(
                h.child("path"),
                "a hostDisk needs a path",
            ));
        } else if !is_clean_absolute(&hd.path) {
            errs.push(FieldError::invalid(
                h.child("path"),
                format!("{:?}: must be an absolute path without '..'", hd.path),
            ));
        }
        match (&hd.type_, &hd.capacity) {
            (crate::kubevirt::HostDiskType::DiskOrCreate, None) => errs.push(FieldError::required(
                h.child("capacity"),
                "a hostDisk of type DiskOrCreate needs a capacity",
            )),
            (crate::kubevirt::HostDiskType::Disk, Some(_)) => errs.push(FieldError::invalid(
                h.child("capacity"),
                "capacity can only be set with type DiskOrCreate",
            )),
            (_, Some(q)) => match parse_quantity_bytes(&q.0) {
                Err(e) => errs.push(FieldError::invalid(
                    h.child("capacity"),
                    format!("{:?}: {e}", q.0),
                )),
                Ok(0) => errs.push(FieldError::invalid(
                    h.child("capacity"),
                    format!("{:?}: must be greater than 0", q.0),
                )),
                Ok(_) => {}
            },
            _ => {}
        }
    }
}

/// One of the inline/base64/secret forms of cloud-init data.
struct DataForms<'a> {
    label: &'a str,
    inline: (&'a str, Option<&'a String>),
    base64: (&'a str, Option<&'a String>),
    secret: (&'a str, bool),
}

/// Checks one kind of cloud-init data; returns how many sources are set.
fn check_cloud_init_data(forms: DataForms<'_>, c: &FieldPath, errs: &mut Vec<FieldError>) -> usize {
    let mut count = 0;
    if let (name, Some(data)) = forms.inline {
        if !data.is_empty() {
            count += 1;
            if data.len() > CLOUD_INIT_DATA_MAX_BYTES {
                errs.push(FieldError::too_long(
                    c.child(name),
                    format!(
                        "{} is {} bytes; inline data may not be longer than {CLOUD_INIT_DATA_MAX_BYTES} bytes, use a Secret",
                        forms.label,
                        data.len()
                    ),
                ));
            }
        }
    }
    if let (name, Some(data)) = forms.base64 {
        if !data.is_empty() {
            count += 1;
            match base64::engine::general_purpose::STANDARD.decode(data.trim()) {
                Err(e) => errs.push(FieldError::invalid(c.child(name), format!("not valid base64: {e}"))),
                Ok(bytes) if bytes.len() > CLOUD_INIT_DATA_MAX_BYTES => errs.push(FieldError::too_long(
                    c.child(name),
                    format!(
                        "{} is {} bytes decoded; inline data may not be longer than {CLOUD_INIT_DATA_MAX_BYTES} bytes, use a Secret",
                        forms.label,
                        bytes.len()
                    ),
                )),
                Ok(_) => {}
            }
        }
    }
    if forms.secret.1 {
        count += 1;
    }
    if count > 1 {
        errs.push(FieldError::invalid(
            c,
            format!(
                "only one of {}, {} and {} may be set",
                forms.inline.0, forms.base64.0, forms.secret.0
            ),
        ));
    }
    count
}

fn validate_cloud_init(ci: &CloudInitSource, c: &FieldPath, errs: &mut Vec<FieldError>) {
    let has_name = |r: &Option<crate::kubevirt::LocalObjectReference>| {
        r.as_ref()
            .is_some_and(|r| !r.name.as_deref().unwrap_or_default().is_empty())
    };
    for (field, r) in [
        ("secretRef", &ci.user_data_secret_ref),
        ("networkDataSecretRef", &ci.network_data_secret_ref),
    ] {
        if r.is_some() && !has_name(r) {
            errs.push(FieldError::required(
                c.child(field).child("name"),
                "the Secret name is required",
            ));
        }
    }
    let user = check_cloud_init_data(
        DataForms {
            label: "user data",
            inline: ("userData", ci.user_data.as_ref()),
            base64: ("userDataBase64", ci.user_data_base64.as_ref()),
            secret: ("secretRef", has_name(&ci.user_data_secret_ref)),
        },
        c,
        errs,
    );
    let network = check_cloud_init_data(
        DataForms {
            label: "network data",
            inline: ("networkData", ci.network_data.as_ref()),
            base64: ("networkDataBase64", ci.network_data_base64.as_ref()),
            secret: (
                "networkDataSecretRef",
                has_name(&ci.network_data_secret_ref),
            ),
        },
        c,
        errs,
    );
    if user == 0 && network == 0 {
        errs.push(FieldError::required(
            c,
            "cloud-init data is required: set one of userData, userDataBase64 or secretRef (and optionally network data)",
        ));
    }
}

fn validate_disks(
    spec: &VirtualMachineInstanceSpec,
    p: &FieldPath,
    boot_orders: &mut HashMap<u32, FieldPath>,
    errs: &mut Vec<FieldError>,
) {
    let disks = spec.domain.devices.disks();
    let ds = p.child("domain").child("devices").child("disks");
    let volume_names: Vec<&str> = spec.volumes().iter().map(|v| v.name.as_str()).collect();
    for (i, disk) in disks.iter().enumerate() {
        let di = ds.index(i);
        for problem in dns1123_label_errors(&disk.name) {
            errs.push(FieldError::invalid(
                di.child("name"),
                format!("{:?}: {problem}", disk.name),
            ));
        }
        if let Some(j) = first_duplicate(disks, i, |x| x.name.clone()) {
            errs.push(FieldError::duplicate(
                di.child("name"),
                format!(
                    "{:?}: {} has the same name; each volume can back one disk only",
                    disk.name,
                    ds.index(j)
                ),
            ));
        }
        if !volume_names.contains(&disk.name.as_str()) {
            errs.push(FieldError::invalid(
                di.child("name"),
                format!(
                    "{:?}: no volume has this name; every disk needs a volume of the same name",
                    disk.name
                ),
            ));
        }
        let targets = [
            disk.disk.is_some(),
            disk.cdrom.is_some(),
            disk.lun.is_some(),
        ];
        if targets.iter().filter(|t| **t).count() > 1 {
            errs.push(FieldError::invalid(
                &di,
                "only one of disk, cdrom and lun may be set",
            ));
        }
        if disk.lun.is_some() {
            errs.push(FieldError::not_supported_yet(di.child("lun"), "lun"));
        }
        if let Some(target) = &disk.disk {
            let t = di.child("disk");
            if let Some(bus) = &target.bus {
                check_bus(bus, DISK_BUSES, &t.child("bus"), errs);
                if bus == "sata" && target.readonly == Some(true) {
                    errs.push(FieldError::invalid(
                        t.child("readonly"),
                        "sata hard disks cannot be read-only",
                    ));
                }
            }
            if let Some(pci) = &target.pci_address {
                if target.bus.as_deref().unwrap_or("virtio") != "virtio" {
                    errs.push(FieldError::invalid(
                        t.child("pciAddress"),
                        "a PCI address needs bus virtio",
                    ));
                }
                if !is_pci_address(pci) {
                    errs.push(FieldError::invalid(
                        t.child("pciAddress"),
                        format!("{pci:?}: expected a PCI address like 0000:81:01.0"),
                    ));
                }
            }
        }
        if let Some(target) = &disk.cdrom {
            let t = di.child("cdrom");
            if let Some(bus) = &target.bus {
                if bus == "virtio" {
                    errs.push(FieldError::invalid(
                        t.child("bus"),
                        "\"virtio\": a CD-ROM cannot use bus virtio",
                    ));
                } else {
                    check_bus(bus, CDROM_BUSES, &t.child("bus"), errs);
                }
            }
            if let Some(tray) = &target.tray {
                check_one_of(tray, &["open", "closed"], &t.child("tray"), errs);
            }
        }
        check_boot_order(disk.boot_order, &di.child("bootOrder"), boot_orders, errs);
        if let Some(serial) = &disk.serial {
            if serial.len() > MAX_STR_LEN || !serial.bytes().all(is_serial_char) {
                errs.push(FieldError::invalid(
                    di.child("serial"),
                    format!(
                        "{serial:?}: must be at most {MAX_STR_LEN} characters of [A-Za-z0-9_.+-]"
                    ),
                ));
            }
        }
        if let Some(cache) = &disk.cache {
            check_one_of(
                cache,
                &["none", "writethrough", "writeback"],
                &di.child("cache"),
                errs,
            );
        }
        if let Some(io) = &disk.io {
            check_one_of(io, &["native", "threads"], &di.child("io"), errs);
        }
        if let Some(policy) = &disk.error_policy {
            check_one_of(
                policy,
                &["stop", "ignore", "report", "enospace"],
                &di.child("errorPolicy"),
                errs,
            );
        }
        let bus = disk
            .disk
            .as_ref()
            .and_then(|t| t.bus.as_deref())
            .or_else(|| disk.cdrom.as_ref().and_then(|t| t.bus.as_deref()))
            .unwrap_or("virtio");
        if disk.dedicated_io_thread == Some(true) && (bus != "virtio" || disk.cdrom.is_some()) {
            errs.push(FieldError::not_supported(
                di.child("dedicatedIOThread"),
                format!("IOThreads are not supported for disks on bus {bus}"),
            ));
        }
        if disk.changed_block_tracking == Some(true) {
            errs.push(FieldError::not_supported_yet(
                di.child("changedBlockTracking"),
                "changedBlockTracking",
            ));
        }
        if let Some(bs) = &disk.block_size {
            let b = di.child("blockSize");
            if bs.custom.is_some() && bs.match_volume.as_ref().is_some_and(|m| m.is_enabled()) {
                errs.push(FieldError::invalid(
                    &b,
                    "custom and matchVolume are mutually exclusive",
                ));
            }
            if let Some(custom) = &bs.custom {
                for (name, size) in [
                    ("logical", custom.logical),
                    ("physical", custom.physical),
                    ("discardGranularity", custom.discard_granularity),
                ] {
                    if let Some(size) = size {
                        if !(512..=2 * 1024 * 1024).contains(&size) || !size.is_power_of_two() {
                            errs.push(FieldError::invalid(
                                b.child("custom").child(name),
                                format!("{size}: must be a power of 2 between 512 and 2097152"),
                            ));
                        }
                    }
                }
            }
        }
    }
}

fn check_bus(bus: &str, allowed: &[&str], path: &FieldPath, errs: &mut Vec<FieldError>) {
    if bus == "ide" {
        errs.push(FieldError::not_supported(
            path,
            "\"ide\": the IDE bus is not supported",
        ));
    } else {
        check_one_of(bus, allowed, path, errs);
    }
}

fn check_boot_order(
    order: Option<u32>,
    path: &FieldPath,
    seen: &mut HashMap<u32, FieldPath>,
    errs: &mut Vec<FieldError>,
) {
    let Some(order) = order else { return };
    if order == 0 {
        errs.push(FieldError::invalid(path, "0: must be greater than 0"));
        return;
    }
    match seen.get(&order) {
        Some(first) => errs.push(FieldError::duplicate(
            path,
            format!("{order}: {first} has the same boot order"),
        )),
        None => {
            seen.insert(order, path.clone());
        }
    }
}

fn validate_networks(
    spec: &VirtualMachineInstanceSpec,
    p: &FieldPath,
    boot_orders: &mut HashMap<u32, FieldPath>,
    errs: &mut Vec<FieldError>,
) {
    let networks = spec.networks();
    let interfaces = spec.domain.devices.interfaces();
    let n = p.child("networks");
    let is = p.child("domain").child("devices").child("interfaces");
    let mut pod_network: Option<usize> = None;

    for (i, net) in networks.iter().enumerate() {
        let ni = n.index(i);
        for problem in dns1123_label_errors(&net.name) {
            errs.push(FieldError::invalid(
                ni.child("name"),
                format!("{:?}: {problem}", net.name),
            ));
        }
        if let Some(j) = first_duplicate(networks, i, |x| x.name.clone()) {
            errs.push(FieldError::duplicate(
                ni.child("name"),
                format!("{:?}: {} has the same name", net.name, n.index(j)),
            ));
        } else if !interfaces.iter().any(|iface| iface.name == net.name) {
            errs.push(FieldError::invalid(
                ni.child("name"),
                format!(
                    "{:?}: no interface uses this network; add an interface with the same name",
                    net.name
                ),
            ));
        }
        match (&net.pod, &net.multus) {
            (None, None) => errs.push(FieldError::required(
                &ni,
                "exactly one network source is required: pod or multus",
            )),
            (Some(_), Some(_)) => errs.push(FieldError::invalid(
                &ni,
                "only one of pod and multus may be set",
            )),
            _ => {}
        }
        if net.multus.is_some() {
            errs.push(FieldError::not_supported_yet(
                ni.child("multus"),
                "network source multus",
            ));
        }
        if let Some(pod) = &net.pod {
            match pod_network {
                Some(j) => errs.push(FieldError::duplicate(
                    ni.child("pod"),
                    format!(
                        "only one pod network is allowed; {} is one already",
                        n.index(j)
                    ),
                )),
                None => pod_network = Some(i),
            }
            if let Some(cidr) = &pod.vm_network_cidr {
                let ok = matches!(parse_cidr(cidr), Some((IpAddr::V4(_), prefix)) if prefix <= 30);
                if !ok {
                    errs.push(FieldError::invalid(
                        ni.child("pod").child("vmNetworkCIDR"),
                        format!("{cidr:?}: expected an IPv4 CIDR with a prefix of at most /30, e.g. 10.0.2.0/24"),
                    ));
                }
            }
            if let Some(cidr) = &pod.vm_ipv6_network_cidr {
                let ok = matches!(parse_cidr(cidr), Some((IpAddr::V6(_), prefix)) if prefix <= 126);
                if !ok {
                    errs.push(FieldError::invalid(
                        ni.child("pod").child("vmIPv6NetworkCIDR"),
                        format!("{cidr:?}: expected an IPv6 CIDR with a prefix of at most /126, e.g. fd10:0:2::/120"),
                    ));
                }
            }
        }
    }

    let mut acpi_indexes: HashMap<i64, FieldPath> = HashMap::new();
    for (i, iface) in interfaces.iter().enumerate() {
        let ii = is.index(i);
        validate_interface(iface, &ii, errs);
        if let Some(j) = first_duplicate(interfaces, i, |x| x.name.clone()) {
            errs.push(FieldError::duplicate(
                ii.child("name"),
                format!("{:?}: {} has the same name", iface.name, is.index(j)),
            ));
        }
        match networks.iter().find(|net| net.name == iface.name) {
            None => errs.push(FieldError::invalid(
                ii.child("name"),
                format!("{:?}: no network has this name; every interface needs a network of the same name", iface.name),
            )),
            Some(net) => {
                if iface.masquerade.is_some() && net.pod.is_none() && net.multus.is_some() {
                    errs.push(FieldError::invalid(ii.child("masquerade"), "masquerade works on the pod network only"));
                }
            }
        }
        if let Some(mac) = &iface.mac_address {
            if let Some(j) = first_duplicate(interfaces, i, |x| {
                x.mac_address
                    .as_ref()
                    .map(|m| m.to_lowercase().replace('-', ":"))
            }) {
                errs.push(FieldError::duplicate(
                    ii.child("macAddress"),
                    format!("{mac:?}: {} has the same MAC address", is.index(j)),
                ));
            }
        }
        check_boot_order(iface.boot_order, &ii.child("bootOrder"), boot_orders, errs);
        if let Some(index) = iface.acpi_index {
            let path = ii.child("acpiIndex");
            if !(1..=16383).contains(&index) {
                errs.push(FieldError::invalid(
                    &path,
                    format!("{index}: must be between 1 and 16383"),
                ));
            } else if let Some(first) = acpi_indexes.get(&index) {
                errs.push(FieldError::duplicate(
                    &path,
                    format!("{index}: {first} has the same ACPI index"),
                ));
            } else {
                acpi_indexes.insert(index, path);
            }
        }
    }
}

fn validate_interface(iface: &Interface, ii: &FieldPath, errs: &mut Vec<FieldError>) {
    for problem in dns1123_label_errors(&iface.name) {
        errs.push(FieldError::invalid(
            ii.child("name"),
            format!("{:?}: {problem}", iface.name),
        ));
    }
    let methods = iface.binding_methods();
    match methods.len() {
        0 => errs.push(FieldError::required(
            ii,
            "a binding method is required, e.g. masquerade: {}",
        )),
        1 => {}
        _ => errs.push(FieldError::invalid(
            ii,
            format!(
                "only one binding method may be set, found {}",
                methods.join(", ")
            ),
        )),
    }
    for method in methods {
        match method {
            "masquerade" => {}
            "slirp" | "macvtap" | "passt" => errs.push(FieldError::not_supported(
                ii.child(method),
                format!(
                    "interface binding {method} was removed in KubeVirt v1.3 and is not supported"
                ),
            )),
            other => errs.push(FieldError::not_supported_yet(
                ii.child(other),
                &format!("interface binding {other}"),
            )),
        }
    }
    if let Some(model) = &iface.model {
        check_one_of(model, NIC_MODELS, &ii.child("model"), errs);
    }
    if let Some(mac) = &iface.mac_address {
        if !is_mac_address(mac) {
            errs.push(FieldError::invalid(
                ii.child("macAddress"),
                format!("{mac:?}: expected a MAC address like de:ad:00:00:be:af"),
            ));
        }
    }
    if let Some(pci) = &iface.pci_address {
        if !is_pci_address(pci) {
            errs.push(FieldError::invalid(
                ii.child("pciAddress"),
                format!("{pci:?}: expected a PCI address like 0000:81:01.0"),
            ));
        }
    }
    if let Some(state) = &iface.state {
        match state.as_str() {
            "up" | "down" => {}
            "absent" => errs.push(FieldError::not_supported_yet(
                ii.child("state"),
                "interface hot-unplug (state absent)",
            )),
            other => check_one_of(other, &["up", "down"], &ii.child("state"), errs),
        }
    }
    let ports = iface.ports.as_deref().unwrap_or_default();
    for (k, port) in ports.iter().enumerate() {
        let pk = ii.child("ports").index(k);
        if !(1..=65535).contains(&port.port) {
            errs.push(FieldError::invalid(
                pk.child("port"),
                format!("{}: must be between 1 and 65535", port.port),
            ));
        }
        if let Some(protocol) = &port.protocol {
            check_one_of(protocol, &["TCP", "UDP"], &pk.child("protocol"), errs);
        }
        if let Some(name) = &port.name {
            let valid = !name.is_empty()
                && name.len() <= 15
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && name.bytes().any(|b| b.is_ascii_lowercase())
                && !name.starts_with('-')
                && !name.ends_with('-')
                && !name.contains("--");
            if !valid {
                errs.push(FieldError::invalid(
                    pk.child("name"),
                    format!("{name:?}: must be an IANA service name (at most 15 lowercase letters, digits and '-', with a letter)"),
                ));
            } else if let Some(j) = first_duplicate(ports, k, |x| x.name.clone()) {
                errs.push(FieldError::duplicate(
                    pk.child("name"),
                    format!("{name:?}: ports[{j}] has the same name"),
                ));
            }
        }
    }
    if let Some(dhcp) = &iface.dhcp_options {
        let dp = ii.child("dhcpOptions");
        for (k, server) in dhcp.ntp_servers.iter().flatten().enumerate() {
            if server.parse::<Ipv4Addr>().is_err() {
                errs.push(FieldError::invalid(
                    dp.child("ntpServers").index(k),
                    format!("{server:?}: must be an IPv4 address"),
                ));
            }
        }
        let options = dhcp.private_options.as_deref().unwrap_or_default();
        for (k, option) in options.iter().enumerate() {
            let ok = dp.child("privateOptions").index(k).child("option");
            if !(224..=254).contains(&option.option) {
                errs.push(FieldError::invalid(
                    &ok,
                    format!("{}: must be between 224 and 254", option.option),
                ));
            } else if first_duplicate(options, k, |x| x.option).is_some() {
                errs.push(FieldError::duplicate(
                    &ok,
                    format!("{}: set more than once", option.option),
                ));
            }
        }
    }
}

fn validate_other_devices(domain: &DomainSpec, dv: &FieldPath, errs: &mut Vec<FieldError>) {
    let devices = &domain.devices;
    if devices.downward_metrics.is_some() {
        errs.push(FieldError::not_supported_yet(
            dv.child("downwardMetrics"),
            "downwardMetrics",
        ));
    }
    if devices.autoattach_vsock == Some(true) {
        errs.push(FieldError::not_supported_yet(
            dv.child("autoattachVSOCK"),
            "autoattachVSOCK",
        ));
    }
    if let Some(watchdog) = &devices.watchdog {
        let w = dv.child("watchdog");
        if watchdog.name.is_empty() {
            errs.push(FieldError::required(
                w.child("name"),
                "the watchdog needs a name",
            ));
        }
        if watchdog.diag288.is_some() {
            errs.push(FieldError::not_supported(
                w.child("diag288"),
                "diag288 is an s390x watchdog; use i6300esb",
            ));
        }
        if watchdog.i6300esb.is_some() && watchdog.diag288.is_some() {
            errs.push(FieldError::invalid(
                &w,
                "only one of i6300esb and diag288 may be set",
            ));
        }
        for (name, action) in [
            ("i6300esb", &watchdog.i6300esb),
            ("diag288", &watchdog.diag288),
        ] {
            if let Some(action) = action.as_ref().and_then(|a| a.action.as_ref()) {
                check_one_of(
                    action,
                    &["poweroff", "reset", "shutdown"],
                    &w.child(name).child("action"),
                    errs,
                );
            }
        }
    }
    for (i, input) in devices.inputs.iter().flatten().enumerate() {
        let ip = dv.child("inputs").index(i);
        if input.name.is_empty() {
            errs.push(FieldError::required(
                ip.child("name"),
                "the input device needs a name",
            ));
        }
        if let Some(bus) = &input.bus {
            check_one_of(bus, &["usb", "virtio"], &ip.child("bus"), errs);
        }
        if let Some(t) = &input.type_ {
            check_one_of(t, &["tablet"], &ip.child("type"), errs);
        }
    }
}

fn validate_scheduling_and_dns(
    spec: &VirtualMachineInstanceSpec,
    p: &FieldPath,
    errs: &mut Vec<FieldError>,
) {
    if let Some(selector) = &spec.node_selector {
        errs.extend(validate_labels(selector, &p.child("nodeSelector")));
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let tp = p.child("tolerations").index(i);
        let key = t.key.as_deref().unwrap_or_default();
        let operator = t.operator.as_deref().unwrap_or("Equal");
        if !key.is_empty() {
            for problem in qualified_name_errors(key) {
                errs.push(FieldError::invalid(
                    tp.child("key"),
                    format!("{key:?}: {problem}"),
                ));
            }
        }
        match operator {
            "Equal" | "" => {
                if key.is_empty() {
                    errs.push(FieldError::invalid(
                        tp.child("operator"),
                        "operator must be Exists when the key is empty",
                    ));
                }
            }
            "Exists" => {
                if !t.value.as_deref().unwrap_or_default().is_empty() {
                    errs.push(FieldError::invalid(
                        tp.child("value"),
                        "value must be empty when operator is Exists",
                    ));
                }
            }
            other => check_one_of(other, &["Equal", "Exists"], &tp.child("operator"), errs),
        }
        if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty()) {
            check_one_of(
                effect,
                &["NoSchedule", "PreferNoSchedule", "NoExecute"],
                &tp.child("effect"),
                errs,
            );
        }
        if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
            errs.push(FieldError::invalid(
                tp.child("tolerationSeconds"),
                "tolerationSeconds can only be set with effect NoExecute",
            ));
        }
    }

    let policy = spec.dns_policy.as_deref();
    if let Some(policy) = policy {
        check_one_of(policy, DNS_POLICIES, &p.child("dnsPolicy"), errs);
    }
    let dc = p.child("dnsConfig");
    let nameservers = spec
        .dns_config
        .as_ref()
        .and_then(|c| c.nameservers.as_deref())
        .unwrap_or_default();
    if policy == Some("None") && nameservers.is_empty() {
        errs.push(FieldError::required(
            dc.child("nameservers"),
            "at least one nameserver is required when dnsPolicy is None",
        ));
    }
    if let Some(config) = &spec.dns_config {
        if nameservers.len() > 3 {
            errs.push(FieldError::invalid(
                dc.child("nameservers"),
                "must not have more than 3 nameservers",
            ));
        }
        for (i, ns) in nameservers.iter().enumerate() {
            if ns.parse::<IpAddr>().is_err() && ns.parse::<Ipv6Addr>().is_err() {
                errs.push(FieldError::invalid(
                    dc.child("nameservers").index(i),
                    format!("{ns:?}: must be an IP address"),
                ));
            }
        }
        let searches = config.searches.as_deref().unwrap_or_default();
        if searches.len() > 32 {
            errs.push(FieldError::invalid(
                dc.child("searches"),
                "must not have more than 32 search paths",
            ));
        }
        if searches.join(" ").len() > 2048 {
            errs.push(FieldError::invalid(
                dc.child("searches"),
                "must not have more than 2048 characters in total",
            ));
        }
        for (i, search) in searches.iter().enumerate() {
            let trimmed = search.strip_suffix('.').unwrap_or(search);
            for problem in dns1123_subdomain_errors(trimmed) {
                errs.push(FieldError::invalid(
                    dc.child("searches").index(i),
                    format!("{search:?}: {problem}"),
                ));
            }
        }
        for (i, option) in config.options.iter().flatten().enumerate() {
            if option.name.as_deref().unwrap_or_default().is_empty() {
                errs.push(FieldError::required(
                    dc.child("options").index(i).child("name"),
                    "option name is required",
                ));
            }
        }
    }
}

/// Label maps that must be valid wherever they appear in a template.
pub(crate) fn validate_template_labels(
    labels: Option<&BTreeMap<String, String>>,
    path: &FieldPath,
) -> Vec<FieldError> {
    labels.map(|l| validate_labels(l, path)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::{decode, FieldErrorKind};
    use serde_json::{json, Value};

    /// A valid, fully explicit VMI spec in the style of KubeVirt's `testvm`.
    fn base() -> Value {
        json!({
            "domain": {
                "resources": {"requests": {"memory": "64Mi"}},
                "devices": {
                    "disks": [
                        {"name": "containerdisk", "disk": {"bus": "virtio"}},
                        {"name": "cloudinitdisk", "disk": {"bus": "virtio"}}
                    ],
                    "interfaces": [{"name": "default", "masquerade": {}}]
                }
            },
            "networks": [{"name": "default", "pod": {}}],
            "volumes": [
                {"name": "containerdisk", "containerDisk": {"image": "quay.io/kubevirt/cirros-container-disk-demo"}},
                {"name": "cloudinitdisk", "cloudInitNoCloud": {"userData": "#cloud-config\npassword: cirros\n"}}
            ]
        })
    }

    fn errors(patch: impl FnOnce(&mut Value)) -> Vec<FieldError> {
        let mut v = base();
        patch(&mut v);
        let spec: VirtualMachineInstanceSpec = decode(v).expect("test spec decodes");
        validate_vmi_spec(&spec, "spec")
    }

    /// Asserts that `errs` is exactly one error at `path` of `kind`, and returns its message.
    #[track_caller]
    fn only(errs: &[FieldError], path: &str, kind: FieldErrorKind) -> String {
        assert_eq!(errs.len(), 1, "expected one error at {path}, got {errs:#?}");
        assert_eq!(
            (errs[0].path.as_str(), errs[0].kind),
            (path, kind),
            "{errs:#?}"
        );
        errs[0].message.clone()
    }

    #[track_caller]
    fn has(errs: &[FieldError], path: &str, kind: FieldErrorKind) {
        assert!(
            errs.iter().any(|e| e.path == path && e.kind == kind),
            "no {kind:?} at {path} in {errs:#?}"
        );
    }

    fn volume(v: &mut Value, source: Value) {
        v["volumes"].as_array_mut().unwrap().push(source);
        let name = v["volumes"].as_array().unwrap().last().unwrap()["name"].clone();
        v["domain"]["devices"]["disks"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": name}));
    }

    #[test]
    fn base_is_valid() {
        assert_eq!(errors(|_| {}), vec![]);
    }

    #[test]
    fn base_is_valid_after_defaulting() {
        let mut spec: VirtualMachineInstanceSpec = decode(base()).unwrap();
        crate::admission::default_vmi_spec(&mut spec);
        assert_eq!(validate_vmi_spec(&spec, "spec.template.spec"), vec![]);
    }

    #[test]
    fn memory_is_required() {
        let errs = errors(|v| v["domain"]["resources"] = json!({}));
        let msg = only(
            &errs,
            "spec.domain.resources.requests[memory]",
            FieldErrorKind::Required,
        );
        assert!(msg.contains("domain.memory.guest"), "{msg}");
    }

    #[test]
    fn guest_memory_alone_is_enough() {
        assert_eq!(
            errors(|v| {
                v["domain"]["resources"] = json!({});
                v["domain"]["memory"] = json!({"guest": "1Gi"});
            }),
            vec![]
        );
    }

    #[test]
    fn memory_must_be_a_positive_quantity() {
        let errs = errors(|v| v["domain"]["resources"]["requests"]["memory"] = json!("lots"));
        only(
            &errs,
            "spec.domain.resources.requests[memory]",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| v["domain"]["resources"]["requests"]["memory"] = json!("0"));
        let msg = only(
            &errs,
            "spec.domain.resources.requests[memory]",
            FieldErrorKind::Invalid,
        );
        assert!(msg.contains("greater than 0"));
        let errs = errors(|v| v["domain"]["memory"] = json!({"guest": "-1Gi"}));
        only(&errs, "spec.domain.memory.guest", FieldErrorKind::Invalid);
    }

    #[test]
    fn requests_may_not_exceed_limits() {
        let errs = errors(|v| v["domain"]["resources"]["limits"] = json!({"memory": "32Mi"}));
        only(
            &errs,
            "spec.domain.resources.requests[memory]",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["domain"]["resources"]["requests"]["cpu"] = json!("2");
            v["domain"]["resources"]["limits"] = json!({"cpu": "1500m"});
        });
        only(
            &errs,
            "spec.domain.resources.requests[cpu]",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["domain"]["resources"]["limits"] = json!({"memory": "64Mi"});
            v["domain"]["memory"] = json!({"guest": "128Mi"});
        });
        only(&errs, "spec.domain.memory.guest", FieldErrorKind::Invalid);
    }

    #[test]
    fn only_cpu_and_memory_resources() {
        let errs = errors(|v| v["domain"]["resources"]["limits"] = json!({"nvidia.com/gpu": "1"}));
        only(
            &errs,
            "spec.domain.resources.limits[nvidia.com/gpu]",
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| v["domain"]["resources"]["requests"]["cpu"] = json!("1x"));
        only(
            &errs,
            "spec.domain.resources.requests[cpu]",
            FieldErrorKind::Invalid,
        );
    }

    #[test]
    fn cpu_counts_must_be_positive() {
        for field in ["cores", "sockets", "threads"] {
            let errs = errors(|v| v["domain"]["cpu"] = json!({field: 0}));
            only(
                &errs,
                &format!("spec.domain.cpu.{field}"),
                FieldErrorKind::Invalid,
            );
        }
        assert_eq!(
            errors(|v| v["domain"]["cpu"] = json!({"cores": 2, "sockets": 1, "threads": 1})),
            vec![]
        );
    }

    #[test]
    fn cpu_features_and_model() {
        let errs = errors(|v| {
            v["domain"]["cpu"] = json!({"features": [{"name": "pcid", "policy": "maybe"}]})
        });
        only(
            &errs,
            "spec.domain.cpu.features[0].policy",
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| v["domain"]["cpu"] = json!({"model": ""}));
        only(&errs, "spec.domain.cpu.model", FieldErrorKind::Invalid);
    }

    #[test]
    fn unsupported_cpu_and_memory_features() {
        let cases = [
            (
                json!({"cpu": {"dedicatedCpuPlacement": true}}),
                "spec.domain.cpu.dedicatedCpuPlacement",
            ),
            (
                json!({"cpu": {"isolateEmulatorThread": true}}),
                "spec.domain.cpu.isolateEmulatorThread",
            ),
            (
                json!({"cpu": {"maxSockets": 4}}),
                "spec.domain.cpu.maxSockets",
            ),
            (
                json!({"memory": {"guest": "64Mi", "hugepages": {"pageSize": "2Mi"}}}),
                "spec.domain.memory.hugepages",
            ),
            (
                json!({"memory": {"guest": "64Mi", "maxGuest": "1Gi"}}),
                "spec.domain.memory.maxGuest",
            ),
        ];
        for (patch, path) in cases {
            let errs = errors(|v| {
                for (k, val) in patch.as_object().unwrap() {
                    v["domain"][k] = val.clone();
                }
            });
            let msg = only(&errs, path, FieldErrorKind::NotSupported);
            assert!(msg.ends_with("is not supported by ferrovirt yet"), "{msg}");
        }
    }

    #[test]
    fn machine_type() {
        assert_eq!(
            errors(|v| v["domain"]["machine"] = json!({"type": "pc-q35-7.2"})),
            vec![]
        );
        let errs = errors(|v| v["domain"]["machine"] = json!({"type": "pc"}));
        only(
            &errs,
            "spec.domain.machine.type",
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| v["domain"]["machine"] = json!({"type": "microvm"}));
        only(
            &errs,
            "spec.domain.machine.type",
            FieldErrorKind::NotSupported,
        );
    }

    #[test]
    fn firmware() {
        let errs = errors(|v| v["domain"]["firmware"] = json!({"uuid": "not-a-uuid"}));
        only(&errs, "spec.domain.firmware.uuid", FieldErrorKind::Invalid);
        let errs = errors(|v| v["domain"]["firmware"] = json!({"serial": "has space"}));
        only(
            &errs,
            "spec.domain.firmware.serial",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["domain"]["firmware"] =
                json!({"bootloader": {"bios": {}, "efi": {"secureBoot": false}}})
        });
        only(
            &errs,
            "spec.domain.firmware.bootloader",
            FieldErrorKind::Invalid,
        );
    }

    #[test]
    fn secure_boot_needs_smm() {
        let errs = errors(|v| v["domain"]["firmware"] = json!({"bootloader": {"efi": {}}}));
        only(
            &errs,
            "spec.domain.firmware.bootloader.efi.secureBoot",
            FieldErrorKind::Invalid,
        );
        assert_eq!(
            errors(|v| {
                v["domain"]["firmware"] = json!({"bootloader": {"efi": {}}});
                v["domain"]["features"] = json!({"smm": {}});
            }),
            vec![]
        );
        assert_eq!(
            errors(
                |v| v["domain"]["firmware"] = json!({"bootloader": {"efi": {"secureBoot": false}}})
            ),
            vec![]
        );
    }

    #[test]
    fn kernel_boot() {
        let errs = errors(|v| {
            v["domain"]["firmware"] = json!({"kernelBoot": {"kernelArgs": "console=ttyS0"}})
        });
        only(
            &errs,
            "spec.domain.firmware.kernelBoot.kernelArgs",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["domain"]["firmware"] = json!({"kernelBoot": {"container": {"image": "k"}}})
        });
        only(
            &errs,
            "spec.domain.firmware.kernelBoot.container",
            FieldErrorKind::Required,
        );
        let errs = errors(|v| {
            v["domain"]["firmware"] =
                json!({"kernelBoot": {"container": {"image": "k", "kernelPath": "boot/vmlinuz"}}})
        });
        only(
            &errs,
            "spec.domain.firmware.kernelBoot.container.kernelPath",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["domain"]["firmware"] = json!({"kernelBoot": {"container": {"image": " ", "kernelPath": "/vmlinuz"}}})
        });
        only(
            &errs,
            "spec.domain.firmware.kernelBoot.container.image",
            FieldErrorKind::Required,
        );
        let errs = errors(|v| {
            v["domain"]["firmware"] = json!({"kernelBoot": {"container": {"image": "k", "initrdPath": "/initrd"}}})
        });
        only(
            &errs,
            "spec.domain.firmware.kernelBoot.container.kernelPath",
            FieldErrorKind::Required,
        );
    }

    #[test]
    fn features_and_clock() {
        let errs = errors(|v| {
            v["domain"]["features"] = json!({"hyperv": {"spinlocks": {"spinlocks": 100}}})
        });
        only(
            &errs,
            "spec.domain.features.hyperv.spinlocks.spinlocks",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["domain"]["features"] = json!({"hyperv": {"vendorid": {"vendorid": "0123456789abc"}}})
        });
        only(
            &errs,
            "spec.domain.features.hyperv.vendorid.vendorid",
            FieldErrorKind::TooLong,
        );
        let errs =
            errors(|v| v["domain"]["features"] = json!({"hypervPassthrough": {}, "hyperv": {}}));
        only(
            &errs,
            "spec.domain.features.hypervPassthrough",
            FieldErrorKind::Invalid,
        );
        let errs =
            errors(|v| v["domain"]["clock"] = json!({"utc": {}, "timezone": "Europe/Berlin"}));
        only(&errs, "spec.domain.clock", FieldErrorKind::Invalid);
        let errs =
            errors(|v| v["domain"]["clock"] = json!({"timer": {"rtc": {"tickPolicy": "merge"}}}));
        only(
            &errs,
            "spec.domain.clock.timer.rtc.tickPolicy",
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| v["domain"]["clock"] = json!({"timer": {"rtc": {"track": "moon"}}}));
        only(
            &errs,
            "spec.domain.clock.timer.rtc.track",
            FieldErrorKind::NotSupported,
        );
        assert_eq!(
            errors(|v| v["domain"]["features"] =
                json!({"acpi": {}, "apic": {}, "smm": {"enabled": true}})),
            vec![]
        );
    }

    #[test]
    fn io_threads_policy() {
        assert_eq!(
            errors(|v| v["domain"]["ioThreadsPolicy"] = json!("shared")),
            vec![]
        );
        let errs = errors(|v| v["domain"]["ioThreadsPolicy"] = json!("supplementalPool"));
        only(
            &errs,
            "spec.domain.ioThreadsPolicy",
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| v["domain"]["ioThreadsPolicy"] = json!("lots"));
        only(
            &errs,
            "spec.domain.ioThreadsPolicy",
            FieldErrorKind::NotSupported,
        );
    }

    #[test]
    fn disk_must_name_an_existing_volume() {
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "data"}))
        });
        let msg = only(
            &errs,
            "spec.domain.devices.disks[2].name",
            FieldErrorKind::Invalid,
        );
        assert!(msg.contains("no volume"), "{msg}");
    }

    #[test]
    fn volume_must_be_used_by_a_disk() {
        let errs = errors(|v| {
            v["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "scratch", "emptyDisk": {"capacity": "1Gi"}}))
        });
        only(&errs, "spec.volumes[2].name", FieldErrorKind::Invalid);
    }

    #[test]
    fn each_volume_backs_one_disk() {
        let errs = errors(|v| v["domain"]["devices"]["disks"][1]["name"] = json!("containerdisk"));
        // The second disk repeats the first's name (so one volume would back two disks), and
        // the cloud-init volume is left without a disk.
        has(
            &errs,
            "spec.domain.devices.disks[1].name",
            FieldErrorKind::Duplicate,
        );
        has(&errs, "spec.volumes[1].name", FieldErrorKind::Invalid);
        assert_eq!(errs.len(), 2, "{errs:#?}");
    }

    #[test]
    fn volume_names_are_unique() {
        let errs = errors(|v| v["volumes"][1]["name"] = json!("containerdisk"));
        has(&errs, "spec.volumes[1].name", FieldErrorKind::Duplicate);
        has(
            &errs,
            "spec.domain.devices.disks[1].name",
            FieldErrorKind::Invalid,
        );
    }

    #[test]
    fn names_are_dns_labels() {
        let errs = errors(|v| {
            v["volumes"][0]["name"] = json!("Root_Disk");
            v["domain"]["devices"]["disks"][0]["name"] = json!("Root_Disk");
        });
        has(&errs, "spec.volumes[0].name", FieldErrorKind::Invalid);
        has(
            &errs,
            "spec.domain.devices.disks[0].name",
            FieldErrorKind::Invalid,
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        let errs = errors(|v| {
            v["networks"][0]["name"] = json!("Default");
            v["domain"]["devices"]["interfaces"][0]["name"] = json!("Default");
        });
        has(&errs, "spec.networks[0].name", FieldErrorKind::Invalid);
        has(
            &errs,
            "spec.domain.devices.interfaces[0].name",
            FieldErrorKind::Invalid,
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
    }

    #[test]
    fn volume_needs_exactly_one_source() {
        let errs = errors(|v| v["volumes"][0] = json!({"name": "containerdisk"}));
        only(&errs, "spec.volumes[0]", FieldErrorKind::Required);
        let errs = errors(|v| v["volumes"][0]["emptyDisk"] = json!({"capacity": "1Gi"}));
        let msg = only(&errs, "spec.volumes[0]", FieldErrorKind::Invalid);
        assert!(msg.contains("containerDisk, emptyDisk"), "{msg}");
    }

    #[test]
    fn unsupported_volume_sources_are_refused_by_name() {
        let sources = [
            ("persistentVolumeClaim", json!({"claimName": "pvc"})),
            ("dataVolume", json!({"name": "dv"})),
            (
                "ephemeral",
                json!({"persistentVolumeClaim": {"claimName": "pvc"}}),
            ),
            ("configMap", json!({"name": "cm"})),
            ("secret", json!({"secretName": "s"})),
            ("serviceAccount", json!({"serviceAccountName": "default"})),
            ("downwardAPI", json!({"fields": []})),
            ("downwardMetrics", json!({})),
            ("sysprep", json!({"secret": {"name": "s"}})),
            ("memoryDump", json!({"claimName": "pvc"})),
            ("cloudInitConfigDrive", json!({"userData": "#cloud-config"})),
        ];
        for (kind, source) in sources {
            let errs = errors(|v| volume(v, json!({"name": "extra", kind: source})));
            let msg = only(
                &errs,
                &format!("spec.volumes[2].{kind}"),
                FieldErrorKind::NotSupported,
            );
            assert_eq!(
                msg,
                format!("volume source {kind} is not supported by ferrovirt yet")
            );
        }
    }

    #[test]
    fn container_disk() {
        let errs = errors(|v| v["volumes"][0]["containerDisk"]["image"] = json!(""));
        only(
            &errs,
            "spec.volumes[0].containerDisk.image",
            FieldErrorKind::Required,
        );
        let errs =
            errors(|v| v["volumes"][0]["containerDisk"]["imagePullPolicy"] = json!("Sometimes"));
        only(
            &errs,
            "spec.volumes[0].containerDisk.imagePullPolicy",
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| v["volumes"][0]["containerDisk"]["path"] = json!("disk/../../etc"));
        only(
            &errs,
            "spec.volumes[0].containerDisk.path",
            FieldErrorKind::Invalid,
        );
        let decode_err = decode::<VirtualMachineInstanceSpec>({
            let mut v = base();
            v["volumes"][0]["containerDisk"] = json!({});
            v
        })
        .unwrap_err();
        assert_eq!(decode_err.path, "volumes[0].containerDisk.image");
        assert_eq!(decode_err.kind, FieldErrorKind::Required);
    }

    #[test]
    fn cloud_init_user_data_sources() {
        let c = "spec.volumes[1].cloudInitNoCloud";
        let errs =
            errors(|v| v["volumes"][1]["cloudInitNoCloud"]["userDataBase64"] = json!("SGkuXG4="));
        only(&errs, c, FieldErrorKind::Invalid);
        let errs = errors(|v| v["volumes"][1]["cloudInitNoCloud"] = json!({}));
        only(&errs, c, FieldErrorKind::Required);
        assert_eq!(
            errors(|v| v["volumes"][1]["cloudInitNoCloud"] = json!({"secretRef": {"name": "ud"}})),
            vec![]
        );
        assert_eq!(
            errors(|v| v["volumes"][1]["cloudInitNoCloud"] = json!({"userDataBase64": "SGkuXG4="})),
            vec![]
        );
        assert_eq!(
            errors(|v| v["volumes"][1]["cloudInitNoCloud"] = json!({"networkData": "version: 2\n"})),
            vec![],
            "network data alone is accepted, as in KubeVirt"
        );
        let errs = errors(|v| v["volumes"][1]["cloudInitNoCloud"] = json!({"secretRef": {}}));
        has(
            &errs,
            "spec.volumes[1].cloudInitNoCloud.secretRef.name",
            FieldErrorKind::Required,
        );
        let errs = errors(|v| {
            v["volumes"][1]["cloudInitNoCloud"]["networkData"] = json!("version: 2");
            v["volumes"][1]["cloudInitNoCloud"]["networkDataBase64"] = json!("dmVyc2lvbjogMg==");
        });
        only(&errs, c, FieldErrorKind::Invalid);
    }

    #[test]
    fn cloud_init_base64_and_size() {
        let errs = errors(|v| {
            v["volumes"][1]["cloudInitNoCloud"] = json!({"userDataBase64": "not base64!"})
        });
        only(
            &errs,
            "spec.volumes[1].cloudInitNoCloud.userDataBase64",
            FieldErrorKind::Invalid,
        );
        let errs =
            errors(|v| v["volumes"][1]["cloudInitNoCloud"] = json!({"networkDataBase64": "%%%"}));
        only(
            &errs,
            "spec.volumes[1].cloudInitNoCloud.networkDataBase64",
            FieldErrorKind::Invalid,
        );
        let max = "x".repeat(CLOUD_INIT_DATA_MAX_BYTES);
        assert_eq!(
            errors(|v| v["volumes"][1]["cloudInitNoCloud"]["userData"] = json!(max)),
            vec![]
        );
        let errs =
            errors(|v| v["volumes"][1]["cloudInitNoCloud"]["userData"] = json!(format!("{max}x")));
        only(
            &errs,
            "spec.volumes[1].cloudInitNoCloud.userData",
            FieldErrorKind::TooLong,
        );
        let big =
            base64::engine::general_purpose::STANDARD
                .encode(vec![b'a'; CLOUD_INIT_DATA_MAX_BYTES + 1]);
        let errs = errors(|v| v["volumes"][1]["cloudInitNoCloud"] = json!({"userDataBase64": big}));
        only(
            &errs,
            "spec.volumes[1].cloudInitNoCloud.userDataBase64",
            FieldErrorKind::TooLong,
        );
    }

    #[test]
    fn one_cloud_init_volume() {
        let errs = errors(|v| {
            volume(
                v,
                json!({"name": "ci2", "cloudInitNoCloud": {"userData": "#cloud-config"}}),
            )
        });
        only(
            &errs,
            "spec.volumes[2].cloudInitNoCloud",
            FieldErrorKind::Duplicate,
        );
    }

    #[test]
    fn empty_disk() {
        assert_eq!(
            errors(|v| volume(
                v,
                json!({"name": "scratch", "emptyDisk": {"capacity": "2Gi"}})
            )),
            vec![]
        );
        let errs = errors(|v| volume(v, json!({"name": "scratch", "emptyDisk": {}})));
        only(
            &errs,
            "spec.volumes[2].emptyDisk.capacity",
            FieldErrorKind::Required,
        );
        let errs = errors(|v| {
            volume(
                v,
                json!({"name": "scratch", "emptyDisk": {"capacity": "2GB"}}),
            )
        });
        only(
            &errs,
            "spec.volumes[2].emptyDisk.capacity",
            FieldErrorKind::Invalid,
        );
    }

    #[test]
    fn host_disk() {
        assert_eq!(
            errors(|v| volume(
                v,
                json!({"name": "hd", "hostDisk": {"path": "/var/lib/d.img", "type": "DiskOrCreate", "capacity": "1Gi"}})
            )),
            vec![]
        );
        assert_eq!(
            errors(|v| volume(
                v,
                json!({"name": "hd", "hostDisk": {"path": "/d.img", "type": "Disk"}})
            )),
            vec![]
        );
        let errs = errors(|v| {
            volume(
                v,
                json!({"name": "hd", "hostDisk": {"path": "d.img", "type": "Disk"}}),
            )
        });
        only(
            &errs,
            "spec.volumes[2].hostDisk.path",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            volume(
                v,
                json!({"name": "hd", "hostDisk": {"path": "/d.img", "type": "DiskOrCreate"}}),
            )
        });
        only(
            &errs,
            "spec.volumes[2].hostDisk.capacity",
            FieldErrorKind::Required,
        );
        let errs = errors(|v| {
            volume(
                v,
                json!({"name": "hd", "hostDisk": {"path": "/d.img", "type": "Disk", "capacity": "1Gi"}}),
            )
        });
        only(
            &errs,
            "spec.volumes[2].hostDisk.capacity",
            FieldErrorKind::Invalid,
        );
        let mut bad_type = base();
        volume(
            &mut bad_type,
            json!({"name": "hd", "hostDisk": {"path": "/d.img", "type": "Directory"}}),
        );
        let err = decode::<VirtualMachineInstanceSpec>(bad_type).unwrap_err();
        assert_eq!(
            (err.path.as_str(), err.kind),
            ("volumes[2].hostDisk.type", FieldErrorKind::NotSupported)
        );
    }

    #[test]
    fn disk_targets_and_buses() {
        let d = "spec.domain.devices.disks[0]";
        let errs = errors(|v| v["domain"]["devices"]["disks"][0]["cdrom"] = json!({}));
        only(&errs, d, FieldErrorKind::Invalid);
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"][0] = json!({"name": "containerdisk", "lun": {}})
        });
        only(&errs, &format!("{d}.lun"), FieldErrorKind::NotSupported);
        let errs = errors(|v| v["domain"]["devices"]["disks"][0]["disk"]["bus"] = json!("ide"));
        only(
            &errs,
            &format!("{d}.disk.bus"),
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| v["domain"]["devices"]["disks"][0]["disk"]["bus"] = json!("floppy"));
        only(
            &errs,
            &format!("{d}.disk.bus"),
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"][0] =
                json!({"name": "containerdisk", "cdrom": {"bus": "virtio"}})
        });
        only(&errs, &format!("{d}.cdrom.bus"), FieldErrorKind::Invalid);
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"][0] =
                json!({"name": "containerdisk", "cdrom": {"tray": "ajar"}})
        });
        only(
            &errs,
            &format!("{d}.cdrom.tray"),
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"][0]["disk"] = json!({"bus": "sata", "readonly": true})
        });
        only(
            &errs,
            &format!("{d}.disk.readonly"),
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"][0]["disk"] =
                json!({"bus": "sata", "pciAddress": "0000:81:01.0"})
        });
        only(
            &errs,
            &format!("{d}.disk.pciAddress"),
            FieldErrorKind::Invalid,
        );
        let errs =
            errors(|v| v["domain"]["devices"]["disks"][0]["disk"]["pciAddress"] = json!("81:01.0"));
        only(
            &errs,
            &format!("{d}.disk.pciAddress"),
            FieldErrorKind::Invalid,
        );
        assert_eq!(
            errors(
                |v| v["domain"]["devices"]["disks"][0]["disk"]["pciAddress"] =
                    json!("0000:81:01.0")
            ),
            vec![]
        );
    }

    #[test]
    fn disk_options() {
        let d = "spec.domain.devices.disks[0]";
        let cases = [
            (
                "cache",
                json!("unsafe"),
                "cache",
                FieldErrorKind::NotSupported,
            ),
            ("io", json!("io_uring"), "io", FieldErrorKind::NotSupported),
            (
                "errorPolicy",
                json!("explode"),
                "errorPolicy",
                FieldErrorKind::NotSupported,
            ),
            (
                "serial",
                json!("bad serial"),
                "serial",
                FieldErrorKind::Invalid,
            ),
            (
                "changedBlockTracking",
                json!(true),
                "changedBlockTracking",
                FieldErrorKind::NotSupported,
            ),
            (
                "blockSize",
                json!({"custom": {"logical": 1000}}),
                "blockSize.custom.logical",
                FieldErrorKind::Invalid,
            ),
        ];
        for (field, value, path, kind) in cases {
            let errs = errors(|v| v["domain"]["devices"]["disks"][0][field] = value);
            only(&errs, &format!("{d}.{path}"), kind);
        }
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"][0] =
                json!({"name": "containerdisk", "disk": {"bus": "sata"}, "dedicatedIOThread": true})
        });
        only(
            &errs,
            &format!("{d}.dedicatedIOThread"),
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"][0]["blockSize"] =
                json!({"custom": {"logical": 512}, "matchVolume": {}})
        });
        only(&errs, &format!("{d}.blockSize"), FieldErrorKind::Invalid);
    }

    #[test]
    fn boot_order() {
        let errs = errors(|v| v["domain"]["devices"]["disks"][0]["bootOrder"] = json!(0));
        only(
            &errs,
            "spec.domain.devices.disks[0].bootOrder",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"][0]["bootOrder"] = json!(1);
            v["domain"]["devices"]["disks"][1]["bootOrder"] = json!(1);
        });
        only(
            &errs,
            "spec.domain.devices.disks[1].bootOrder",
            FieldErrorKind::Duplicate,
        );
        let errs = errors(|v| {
            v["domain"]["devices"]["disks"][0]["bootOrder"] = json!(1);
            v["domain"]["devices"]["interfaces"][0]["bootOrder"] = json!(1);
        });
        only(
            &errs,
            "spec.domain.devices.interfaces[0].bootOrder",
            FieldErrorKind::Duplicate,
        );
        assert_eq!(
            errors(|v| {
                v["domain"]["devices"]["disks"][0]["bootOrder"] = json!(1);
                v["domain"]["devices"]["interfaces"][0]["bootOrder"] = json!(2);
            }),
            vec![]
        );
    }

    #[test]
    fn interfaces_and_networks_pair_up() {
        let errs = errors(|v| v["domain"]["devices"]["interfaces"][0]["name"] = json!("other"));
        has(
            &errs,
            "spec.domain.devices.interfaces[0].name",
            FieldErrorKind::Invalid,
        );
        has(&errs, "spec.networks[0].name", FieldErrorKind::Invalid);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        let errs = errors(|v| v["domain"]["devices"]["interfaces"] = json!([]));
        only(&errs, "spec.networks[0].name", FieldErrorKind::Invalid);
        let errs = errors(|v| {
            v["domain"]["devices"]["interfaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "default", "masquerade": {}}))
        });
        only(
            &errs,
            "spec.domain.devices.interfaces[1].name",
            FieldErrorKind::Duplicate,
        );
        let errs = errors(|v| {
            v["networks"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "default", "pod": {}}))
        });
        has(&errs, "spec.networks[1].name", FieldErrorKind::Duplicate);
    }

    #[test]
    fn one_pod_network() {
        let errs = errors(|v| {
            v["networks"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "second", "pod": {}}));
            v["domain"]["devices"]["interfaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "second", "masquerade": {}}));
        });
        only(&errs, "spec.networks[1].pod", FieldErrorKind::Duplicate);
    }

    #[test]
    fn network_sources() {
        let errs = errors(|v| v["networks"][0] = json!({"name": "default"}));
        only(&errs, "spec.networks[0]", FieldErrorKind::Required);
        let errs = errors(|v| {
            v["networks"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "blue", "multus": {"networkName": "blue-net"}}));
            v["domain"]["devices"]["interfaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "blue", "bridge": {}}));
        });
        has(
            &errs,
            "spec.networks[1].multus",
            FieldErrorKind::NotSupported,
        );
        has(
            &errs,
            "spec.domain.devices.interfaces[1].bridge",
            FieldErrorKind::NotSupported,
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        let errs = errors(|v| v["networks"][0]["pod"] = json!({"vmNetworkCIDR": "10.0.2.0/31"}));
        only(
            &errs,
            "spec.networks[0].pod.vmNetworkCIDR",
            FieldErrorKind::Invalid,
        );
        let errs =
            errors(|v| v["networks"][0]["pod"] = json!({"vmIPv6NetworkCIDR": "10.0.2.0/24"}));
        only(
            &errs,
            "spec.networks[0].pod.vmIPv6NetworkCIDR",
            FieldErrorKind::Invalid,
        );
        assert_eq!(
            errors(
                |v| v["networks"][0]["pod"] = json!({"vmNetworkCIDR": "10.11.12.0/24", "vmIPv6NetworkCIDR": "fd10:0:2::/120"})
            ),
            vec![]
        );
    }

    #[test]
    fn interface_bindings() {
        let i = "spec.domain.devices.interfaces[0]";
        for binding in ["bridge", "sriov", "passtBinding"] {
            let errs = errors(|v| {
                v["domain"]["devices"]["interfaces"][0] = json!({"name": "default", binding: {}})
            });
            let msg = only(
                &errs,
                &format!("{i}.{binding}"),
                FieldErrorKind::NotSupported,
            );
            assert_eq!(
                msg,
                format!("interface binding {binding} is not supported by ferrovirt yet")
            );
        }
        let errs = errors(|v| {
            v["domain"]["devices"]["interfaces"][0] =
                json!({"name": "default", "binding": {"name": "passt"}})
        });
        only(&errs, &format!("{i}.binding"), FieldErrorKind::NotSupported);
        for removed in ["slirp", "macvtap", "passt"] {
            let errs = errors(|v| {
                v["domain"]["devices"]["interfaces"][0] = json!({"name": "default", removed: {}})
            });
            let msg = only(
                &errs,
                &format!("{i}.{removed}"),
                FieldErrorKind::NotSupported,
            );
            assert!(msg.contains("removed"), "{msg}");
        }
        let errs = errors(|v| v["domain"]["devices"]["interfaces"][0] = json!({"name": "default"}));
        only(&errs, i, FieldErrorKind::Required);
        let errs = errors(|v| v["domain"]["devices"]["interfaces"][0]["bridge"] = json!({}));
        has(&errs, i, FieldErrorKind::Invalid);
        has(&errs, &format!("{i}.bridge"), FieldErrorKind::NotSupported);
    }

    #[test]
    fn interface_details() {
        let i = "spec.domain.devices.interfaces[0]";
        let cases = [
            (
                "model",
                json!("e1001"),
                "model",
                FieldErrorKind::NotSupported,
            ),
            (
                "macAddress",
                json!("de:ad:be:ef"),
                "macAddress",
                FieldErrorKind::Invalid,
            ),
            (
                "pciAddress",
                json!("zz"),
                "pciAddress",
                FieldErrorKind::Invalid,
            ),
            (
                "ports",
                json!([{"port": 0}]),
                "ports[0].port",
                FieldErrorKind::Invalid,
            ),
            (
                "ports",
                json!([{"port": 80, "protocol": "SCTP"}]),
                "ports[0].protocol",
                FieldErrorKind::NotSupported,
            ),
            (
                "ports",
                json!([{"port": 80, "name": "HTTP"}]),
                "ports[0].name",
                FieldErrorKind::Invalid,
            ),
            (
                "ports",
                json!([{"port": 80, "name": "http"}, {"port": 81, "name": "http"}]),
                "ports[1].name",
                FieldErrorKind::Duplicate,
            ),
            ("acpiIndex", json!(0), "acpiIndex", FieldErrorKind::Invalid),
            (
                "state",
                json!("absent"),
                "state",
                FieldErrorKind::NotSupported,
            ),
            (
                "state",
                json!("sideways"),
                "state",
                FieldErrorKind::NotSupported,
            ),
            (
                "dhcpOptions",
                json!({"privateOptions": [{"option": 12, "value": "x"}]}),
                "dhcpOptions.privateOptions[0].option",
                FieldErrorKind::Invalid,
            ),
            (
                "dhcpOptions",
                json!({"ntpServers": ["ntp.example"]}),
                "dhcpOptions.ntpServers[0]",
                FieldErrorKind::Invalid,
            ),
        ];
        for (field, value, path, kind) in cases {
            let errs = errors(|v| v["domain"]["devices"]["interfaces"][0][field] = value);
            only(&errs, &format!("{i}.{path}"), kind);
        }
        assert_eq!(
            errors(|v| {
                let iface = &mut v["domain"]["devices"]["interfaces"][0];
                iface["model"] = json!("e1000e");
                iface["macAddress"] = json!("DE-AD-00-00-BE-AF");
                iface["ports"] =
                    json!([{"name": "ssh", "port": 22}, {"port": 53, "protocol": "UDP"}]);
                iface["state"] = json!("up");
            }),
            vec![]
        );
    }

    #[test]
    fn duplicate_mac_addresses() {
        let errs = errors(|v| {
            v["networks"] = json!([{"name": "default", "pod": {}}, {"name": "b", "pod": {}}]);
            v["domain"]["devices"]["interfaces"] = json!([
                {"name": "default", "masquerade": {}, "macAddress": "de:ad:00:00:be:af"},
                {"name": "b", "masquerade": {}, "macAddress": "DE-AD-00-00-BE-AF"}
            ]);
        });
        has(
            &errs,
            "spec.domain.devices.interfaces[1].macAddress",
            FieldErrorKind::Duplicate,
        );
    }

    #[test]
    fn other_devices() {
        let dv = "spec.domain.devices";
        let errs = errors(|v| v["domain"]["devices"]["downwardMetrics"] = json!({}));
        only(
            &errs,
            &format!("{dv}.downwardMetrics"),
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| v["domain"]["devices"]["autoattachVSOCK"] = json!(true));
        only(
            &errs,
            &format!("{dv}.autoattachVSOCK"),
            FieldErrorKind::NotSupported,
        );
        let errs =
            errors(|v| v["domain"]["devices"]["watchdog"] = json!({"name": "w", "diag288": {}}));
        only(
            &errs,
            &format!("{dv}.watchdog.diag288"),
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| {
            v["domain"]["devices"]["watchdog"] =
                json!({"name": "w", "i6300esb": {"action": "explode"}})
        });
        only(
            &errs,
            &format!("{dv}.watchdog.i6300esb.action"),
            FieldErrorKind::NotSupported,
        );
        let errs = errors(|v| {
            v["domain"]["devices"]["inputs"] = json!([{"name": "k", "type": "keyboard"}])
        });
        only(
            &errs,
            &format!("{dv}.inputs[0].type"),
            FieldErrorKind::NotSupported,
        );
        assert_eq!(
            errors(|v| {
                v["domain"]["devices"]["rng"] = json!({});
                v["domain"]["devices"]["autoattachSerialConsole"] = json!(true);
                v["domain"]["devices"]["inputs"] =
                    json!([{"name": "tablet", "bus": "usb", "type": "tablet"}]);
                v["domain"]["devices"]["watchdog"] =
                    json!({"name": "w", "i6300esb": {"action": "poweroff"}});
            }),
            vec![]
        );
    }

    #[test]
    fn lifecycle_and_identity_fields() {
        let errs = errors(|v| v["terminationGracePeriodSeconds"] = json!(-1));
        only(
            &errs,
            "spec.terminationGracePeriodSeconds",
            FieldErrorKind::Invalid,
        );
        assert_eq!(
            errors(|v| v["terminationGracePeriodSeconds"] = json!(0)),
            vec![]
        );
        let errs = errors(|v| v["hostname"] = json!("my_host"));
        only(&errs, "spec.hostname", FieldErrorKind::Invalid);
        let errs = errors(|v| v["subdomain"] = json!("-bad"));
        only(&errs, "spec.subdomain", FieldErrorKind::Invalid);
        let errs = errors(|v| v["architecture"] = json!("arm64"));
        only(&errs, "spec.architecture", FieldErrorKind::NotSupported);
        assert_eq!(errors(|v| v["architecture"] = json!("amd64")), vec![]);
    }

    #[test]
    fn probes_and_access_credentials_are_refused() {
        for field in ["livenessProbe", "readinessProbe"] {
            let errs =
                errors(|v| v[field] = json!({"tcpSocket": {"port": 22}, "initialDelaySeconds": 5}));
            let msg = only(
                &errs,
                &format!("spec.{field}"),
                FieldErrorKind::NotSupported,
            );
            assert_eq!(msg, format!("{field} is not supported by ferrovirt yet"));
        }
        let errs = errors(
            |v| v["accessCredentials"] = json!([{"sshPublicKey": {"source": {"secret": {"secretName": "k"}}, "propagationMethod": {"noCloud": {}}}}]),
        );
        only(
            &errs,
            "spec.accessCredentials",
            FieldErrorKind::NotSupported,
        );
    }

    #[test]
    fn scheduling_fields() {
        let errs = errors(|v| v["nodeSelector"] = json!({"bad key": "x"}));
        only(&errs, "spec.nodeSelector", FieldErrorKind::Invalid);
        let errs = errors(|v| {
            v["tolerations"] = json!([{"key": "k", "operator": "Exists", "value": "v"}])
        });
        only(&errs, "spec.tolerations[0].value", FieldErrorKind::Invalid);
        let errs = errors(|v| v["tolerations"] = json!([{"operator": "Equal", "value": "v"}]));
        only(
            &errs,
            "spec.tolerations[0].operator",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["tolerations"] = json!([{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5}])
        });
        only(
            &errs,
            "spec.tolerations[0].tolerationSeconds",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| v["tolerations"] = json!([{"key": "k", "effect": "Sometimes"}]));
        only(
            &errs,
            "spec.tolerations[0].effect",
            FieldErrorKind::NotSupported,
        );
        assert_eq!(
            errors(|v| {
                v["nodeSelector"] = json!({"kubernetes.io/hostname": "n1"});
                v["tolerations"] = json!([{"operator": "Exists"}, {"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 30}]);
                v["evictionStrategy"] = json!("LiveMigrate");
                v["startStrategy"] = json!("Paused");
            }),
            vec![]
        );
    }

    #[test]
    fn dns() {
        let errs = errors(|v| v["dnsPolicy"] = json!("Sometimes"));
        only(&errs, "spec.dnsPolicy", FieldErrorKind::NotSupported);
        let errs = errors(|v| v["dnsPolicy"] = json!("None"));
        only(
            &errs,
            "spec.dnsConfig.nameservers",
            FieldErrorKind::Required,
        );
        let errs = errors(|v| v["dnsConfig"] = json!({"nameservers": ["one.one.one.one"]}));
        only(
            &errs,
            "spec.dnsConfig.nameservers[0]",
            FieldErrorKind::Invalid,
        );
        let errs = errors(|v| {
            v["dnsConfig"] = json!({"nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9", "::1"]})
        });
        only(&errs, "spec.dnsConfig.nameservers", FieldErrorKind::Invalid);
        let errs = errors(|v| v["dnsConfig"] = json!({"searches": ["Bad_Domain"]}));
        only(&errs, "spec.dnsConfig.searches[0]", FieldErrorKind::Invalid);
        assert_eq!(
            errors(|v| {
                v["dnsPolicy"] = json!("None");
                v["dnsConfig"] = json!({"nameservers": ["10.0.0.10", "fd00::10"], "searches": ["svc.cluster.local."], "options": [{"name": "ndots", "value": "2"}]});
            }),
            vec![]
        );
    }

    #[test]
    fn remaining_refusals_have_exact_paths() {
        type Patch = fn(&mut Value);
        let cases: Vec<(Patch, &str, FieldErrorKind)> = vec![
            (
                |v| v["domain"]["devices"]["watchdog"] = json!({"name": "", "i6300esb": {}}),
                "spec.domain.devices.watchdog.name",
                FieldErrorKind::Required,
            ),
            (
                |v| v["domain"]["devices"]["inputs"] = json!([{"name": "t", "bus": "ps2"}]),
                "spec.domain.devices.inputs[0].bus",
                FieldErrorKind::NotSupported,
            ),
            (
                |v| v["domain"]["devices"]["inputs"] = json!([{"name": ""}]),
                "spec.domain.devices.inputs[0].name",
                FieldErrorKind::Required,
            ),
            (
                |v| v["domain"]["cpu"] = json!({"features": [{"name": ""}]}),
                "spec.domain.cpu.features[0].name",
                FieldErrorKind::Required,
            ),
            (
                |v| v["domain"]["clock"] = json!({"timezone": ""}),
                "spec.domain.clock.timezone",
                FieldErrorKind::Invalid,
            ),
            (
                |v| v["domain"]["clock"] = json!({"timer": {"hpet": {"tickPolicy": "skip"}}}),
                "spec.domain.clock.timer.hpet.tickPolicy",
                FieldErrorKind::NotSupported,
            ),
            (
                |v| v["domain"]["clock"] = json!({"timer": {"pit": {"tickPolicy": "merge"}}}),
                "spec.domain.clock.timer.pit.tickPolicy",
                FieldErrorKind::NotSupported,
            ),
            (
                |v| v["domain"]["firmware"] = json!({"kernelBoot": {"container": {"image": "k", "kernelPath": "/k", "imagePullPolicy": "Often"}}}),
                "spec.domain.firmware.kernelBoot.container.imagePullPolicy",
                FieldErrorKind::NotSupported,
            ),
            (
                |v| v["domain"]["devices"]["interfaces"][0]["dhcpOptions"] = json!({"privateOptions": [{"option": 240, "value": "a"}, {"option": 240, "value": "b"}]}),
                "spec.domain.devices.interfaces[0].dhcpOptions.privateOptions[1].option",
                FieldErrorKind::Duplicate,
            ),
            (
                |v| v["tolerations"] = json!([{"key": "bad key", "operator": "Exists"}]),
                "spec.tolerations[0].key",
                FieldErrorKind::Invalid,
            ),
            (
                |v| v["tolerations"] = json!([{"key": "k", "operator": "Maybe"}]),
                "spec.tolerations[0].operator",
                FieldErrorKind::NotSupported,
            ),
            (
                |v| v["dnsConfig"] = json!({"options": [{"value": "1"}]}),
                "spec.dnsConfig.options[0].name",
                FieldErrorKind::Required,
            ),
            (
                |v| v["dnsConfig"] = json!({"searches": (0..33).map(|i| format!("s{i}.example")).collect::<Vec<_>>()}),
                "spec.dnsConfig.searches",
                FieldErrorKind::Invalid,
            ),
            (
                |v| {
                    v["domain"]["features"] =
                        json!({"hypervPassthrough": {}, "hyperv": {"relaxed": {}}})
                },
                "spec.domain.features.hypervPassthrough",
                FieldErrorKind::Invalid,
            ),
            (
                |v| {
                    v["volumes"][1]["cloudInitNoCloud"] =
                        json!({"networkDataSecretRef": {}, "userData": "x"})
                },
                "spec.volumes[1].cloudInitNoCloud.networkDataSecretRef.name",
                FieldErrorKind::Required,
            ),
            (
                |v| v["volumes"][1]["cloudInitNoCloud"] = json!({"userData": "x", "networkData": "y".repeat(CLOUD_INIT_DATA_MAX_BYTES + 1)}),
                "spec.volumes[1].cloudInitNoCloud.networkData",
                FieldErrorKind::TooLong,
            ),
        ];
        for (patch, path, kind) in cases {
            let errs = errors(patch);
            only(&errs, path, kind);
        }
        // Two interfaces need two networks; the second pod network is refused as well.
        let errs = errors(|v| {
            v["networks"] = json!([{"name": "default", "pod": {}}, {"name": "b", "pod": {}}]);
            v["domain"]["devices"]["interfaces"] = json!([
                {"name": "default", "masquerade": {}, "acpiIndex": 3},
                {"name": "b", "masquerade": {}, "acpiIndex": 3}
            ]);
        });
        has(
            &errs,
            "spec.domain.devices.interfaces[1].acpiIndex",
            FieldErrorKind::Duplicate,
        );
    }

    fn vmi(spec: Value) -> VirtualMachineInstance {
        decode(json!({"metadata": {"name": "vmi1", "namespace": "default"}, "spec": spec})).unwrap()
    }

    #[test]
    fn vmi_create_checks_meta_and_spec() {
        assert_eq!(validate_vmi(&vmi(base()), None), vec![]);
        let mut bad = vmi(base());
        bad.metadata.name = Some("Bad".into());
        bad.spec.termination_grace_period_seconds = Some(-5);
        let errs = validate_vmi(&bad, None);
        has(&errs, "metadata.name", FieldErrorKind::Invalid);
        has(
            &errs,
            "spec.terminationGracePeriodSeconds",
            FieldErrorKind::Invalid,
        );
    }

    #[test]
    fn vmi_spec_is_immutable() {
        let old = vmi(base());
        let mut new = old.clone();
        new.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        new.status = Some(Default::default());
        assert_eq!(validate_vmi(&new, Some(&old)), vec![]);
        new.spec.domain.resources.requests = Some(
            [(
                "memory".to_string(),
                k8s_openapi::apimachinery::pkg::api::resource::Quantity("128Mi".into()),
            )]
            .into(),
        );
        new.spec.hostname = Some("h".into());
        let errs = validate_vmi(&new, Some(&old));
        let msg = only(&errs, "spec", FieldErrorKind::Forbidden);
        assert!(
            msg.starts_with("spec.domain, spec.hostname may not be changed"),
            "{msg}"
        );
        assert_eq!(validate_vmi_update(&new, &old).len(), 1);
    }
}
