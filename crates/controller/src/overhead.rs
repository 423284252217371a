//! ferrovirt's per-VM memory overhead: what a VM costs on its node beyond the guest's own memory.
//!
//! The launcher pod requests `guest memory + memory_overhead(spec)`, and the figure is shown in
//! `VirtualMachineInstance.status.memory.memoryOverhead`.
//!
//! ```text
//!   overhead = LAUNCHER_PROCESS                       ferrovirt's launcher (one Rust process)
//!            + QEMU_BASE                              QEMU itself: binary, libraries, heap, devices
//!            + TCG_TRANSLATION_CACHE                  TCG's translated code
//!            + guest memory / 512                     page tables for the guest's memory
//!            + PER_VCPU × vCPUs
//!            + PER_DEVICE × (disks + interfaces)      block caches, network buffers
//!            + PER_IOTHREAD × IOThreads
//!            + VIDEO                                  a small VGA card for VNC, unless
//!                                                     `autoattachGraphicsDevice: false`
//!   rounded up to a whole MiB
//! ```
//!
//! # How the constants were measured
//!
//! QEMU 7.2 from Debian 12 (the version ferrovirt runs), on the 2-core development machine, booting
//! ferrovirt's test guest (Debian kernel, busybox initramfs, a qcow2 disk on virtio-blk with
//! `snapshot=on`, one virtio-net NIC on user networking, `-nodefaults -vga none`, q35) to its shell.
//! "QEMU's own RSS" is the sum of `Rss` over every mapping in `/proc/PID/smaps` except the guest RAM
//! mapping (the anonymous mapping whose size equals `-m`), read after the guest reached its shell:
//!
//! | accelerator, `-m`, vCPUs            | QEMU's own RSS | of which TCG code buffer |
//! |-------------------------------------|---------------:|-------------------------:|
//! | KVM, 128 MiB, 1                      |       46.1 MiB |                        - |
//! | KVM, 128 MiB, 4                      |       46.6 MiB |                        - |
//! | TCG (default `tb-size`), 128 MiB, 1  |      119.5 MiB |                   60 MiB |
//! | TCG, 512 MiB, 1                      |      119.7 MiB |                          |
//! | TCG, 128 MiB, 4                      |      126.2 MiB |                          |
//! | TCG, 1 GiB, 2                        |      122.4 MiB |                          |
//! | TCG `tb-size=32`, 128 MiB, 1         |       85.5 MiB |                          |
//!
//! So: QEMU's base is about 46 MiB; TCG adds its translated-code buffer (QEMU reserves 1 GiB and
//! fills it on demand: 60 MiB after a boot to a shell); each vCPU adds about 2 MiB under TCG and
//! almost nothing under KVM. The guest's size changes QEMU's own RSS very little under TCG, but
//! KVM's shadow/EPT page tables are kernel memory charged to the VM's cgroup, hence guest/512
//! (the same rule KubeVirt uses).
//!
//! The TCG allowance is charged to every VM: the controller cannot know which accelerator the node
//! will use, and on the machines ferrovirt is developed on KVM does not run a nested guest.
//!
//! The launcher bounds TCG's buffer to the same 64 MiB (`-accel tcg,tb-size=64`): with QEMU's default
//! 1 GiB reservation a guest that reboots kept filling it and the cgroup's OOM killer took QEMU.
//!
//! The launcher itself (release build, a VM with a containerDisk, cloud-init and a NIC, booted):
//! 28-30 MiB RSS, so 32 MiB. The VGA card and its VNC server (`vgamem_mb=16`): 4.5 MiB measured,
//! 6.5 MiB with a viewer attached, and the guest may touch all 16 MiB of video memory: 16 MiB.
//!
//! KubeVirt charges about 290 MiB for a 1 vCPU, 1 GiB VM (libvirt, virtlogd, a Go launcher, video);
//! ferrovirt charges 170 MiB for the same VM with one disk, one NIC and VNC.

use ferrovirt_api::kubevirt::VirtualMachineInstanceSpec;
use ferrovirt_api::quantity::parse_quantity_bytes;

const MIB: u64 = 1 << 20;

/// ferrovirt's launcher process (Rust, tokio, QMP and console relays): measured 28-30 MiB.
pub const LAUNCHER_PROCESS_BYTES: u64 = 32 * MIB;
/// The VGA card behind VNC (`vgamem_mb=16`) and QEMU's VNC server.
pub const VIDEO_BYTES: u64 = 16 * MIB;
/// QEMU itself without guest RAM and without TCG's code buffer: measured 46.1 MiB under KVM
/// (see the module documentation), rounded up.
pub const QEMU_BASE_BYTES: u64 = 48 * MIB;
/// TCG's translated-code buffer: measured 60 MiB after a boot to a shell, rounded up.
pub const TCG_TRANSLATION_CACHE_BYTES: u64 = 64 * MIB;
/// Per vCPU: measured about 2.2 MiB per extra vCPU under TCG (TLBs, thread), rounded up with room
/// for the thread's stack.
pub const PER_VCPU_BYTES: u64 = 4 * MIB;
/// Guest memory is divided by this for the page tables that map it (KubeVirt's rule).
pub const PAGE_TABLE_DIVISOR: u64 = 512;
/// Per disk and per network interface: qcow2 L2 and refcount caches (1.25 MiB by default), request
/// buffers, network queues. Charged on top of the measured base, which already had one of each.
pub const PER_DEVICE_BYTES: u64 = 2 * MIB;
/// Per IOThread (a thread and its AioContext).
pub const PER_IOTHREAD_BYTES: u64 = MIB;

/// The guest memory the VM is sized for: `resources.requests.memory`, else `memory.guest`, else
/// `resources.limits.memory`; 0 when none parses (admission refuses such VMs).
pub fn guest_memory_bytes(spec: &VirtualMachineInstanceSpec) -> u64 {
    let domain = &spec.domain;
    domain
        .resources
        .request("memory")
        .or_else(|| domain.memory.as_ref().and_then(|m| m.guest.as_ref()))
        .or_else(|| domain.resources.limit("memory"))
        .and_then(|q| parse_quantity_bytes(&q.0).ok())
        .unwrap_or(0)
}

/// The number of vCPUs: sockets × cores × threads (each defaulting to 1).
pub fn vcpus(spec: &VirtualMachineInstanceSpec) -> u64 {
    spec.domain.cpu.as_ref().map_or(1, |cpu| cpu.vcpus())
}

/// IOThreads QEMU will run: one shared thread when `ioThreadsPolicy` is set, plus one per disk
/// with `dedicatedIOThread: true`.
fn iothreads(spec: &VirtualMachineInstanceSpec) -> u64 {
    let disks = spec.domain.devices.disks();
    let dedicated = disks.iter().filter(|d| d.dedicated_io_thread == Some(true)).count() as u64;
    let shared = u64::from(spec.domain.io_threads_policy.is_some());
    dedicated + shared
}

/// Whether the VM gets a graphics device (KubeVirt's default: yes).
fn graphics(spec: &VirtualMachineInstanceSpec) -> bool {
    spec.domain.devices.autoattach_graphics_device != Some(false)
}

/// ferrovirt's memory overhead for a VM, in bytes (a whole number of MiB). See the module
/// documentation for the formula and how each constant was measured.
pub fn memory_overhead(spec: &VirtualMachineInstanceSpec) -> u64 {
    let devices = spec.domain.devices.disks().len() as u64 + spec.domain.devices.interfaces().len() as u64;
    let bytes = LAUNCHER_PROCESS_BYTES
        .saturating_add(QEMU_BASE_BYTES)
        .saturating_add(TCG_TRANSLATION_CACHE_BYTES)
        .saturating_add(guest_memory_bytes(spec) / PAGE_TABLE_DIVISOR)
        .saturating_add(PER_VCPU_BYTES.saturating_mul(vcpus(spec)))
        .saturating_add(PER_DEVICE_BYTES.saturating_mul(devices))
        .saturating_add(PER_IOTHREAD_BYTES.saturating_mul(iothreads(spec)))
        .saturating_add(if graphics(spec) { VIDEO_BYTES } else { 0 });
    bytes.div_ceil(MIB).saturating_mul(MIB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovirt_api::kubevirt::{Cpu, Disk, Interface};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use proptest::prelude::*;

    fn spec(memory: &str, sockets: u32, disks: usize, nics: usize) -> VirtualMachineInstanceSpec {
        let mut s = VirtualMachineInstanceSpec::default();
        s.domain.resources.requests = Some([("memory".to_string(), Quantity(memory.to_string()))].into());
        s.domain.cpu = Some(Cpu { sockets: Some(sockets), ..Default::default() });
        s.domain.devices.disks =
            Some((0..disks).map(|i| Disk { name: format!("d{i}"), ..Default::default() }).collect());
        s.domain.devices.interfaces =
            Some((0..nics).map(|i| Interface { name: format!("n{i}"), ..Default::default() }).collect());
        s
    }

    #[test]
    fn one_vcpu_one_gib_one_disk_one_nic() {
        // 32 + 48 + 64 + 1024/512 + 4 + 2×2 + 16 = 170 MiB
        assert_eq!(memory_overhead(&spec("1Gi", 1, 1, 1)), 170 * MIB);
        // Without devices: 166 MiB; without graphics either: 150 MiB.
        assert_eq!(memory_overhead(&spec("1Gi", 1, 0, 0)), 166 * MIB);
        let mut headless = spec("1Gi", 1, 0, 0);
        headless.domain.devices.autoattach_graphics_device = Some(false);
        assert_eq!(memory_overhead(&headless), 150 * MIB);
    }

    #[test]
    fn grows_with_guest_memory_vcpus_and_devices() {
        let base = memory_overhead(&spec("1Gi", 1, 1, 1));
        assert_eq!(memory_overhead(&spec("2Gi", 1, 1, 1)), base + 2 * MIB);
        assert_eq!(memory_overhead(&spec("1Gi", 4, 1, 1)), base + 12 * MIB);
        assert_eq!(memory_overhead(&spec("1Gi", 1, 3, 1)), base + 4 * MIB);
    }

    #[test]
    fn rounds_up_to_whole_mib() {
        // 100Mi / 512 = 200 KiB of page tables: rounded up to one MiB.
        let o = memory_overhead(&spec("100Mi", 1, 0, 0));
        assert_eq!(o % MIB, 0);
        assert_eq!(o, 165 * MIB);
    }

    #[test]
    fn guest_memory_falls_back_to_guest_then_limit() {
        let mut s = VirtualMachineInstanceSpec::default();
        assert_eq!(guest_memory_bytes(&s), 0);
        s.domain.resources.limits = Some([("memory".to_string(), Quantity("2Gi".into()))].into());
        assert_eq!(guest_memory_bytes(&s), 2 << 30);
        s.domain.memory =
            Some(ferrovirt_api::kubevirt::Memory { guest: Some(Quantity("1Gi".into())), ..Default::default() });
        assert_eq!(guest_memory_bytes(&s), 1 << 30);
        s.domain.resources.requests = Some([("memory".to_string(), Quantity("512Mi".into()))].into());
        assert_eq!(guest_memory_bytes(&s), 512 << 20);
    }

    #[test]
    fn iothreads_are_charged() {
        let mut s = spec("1Gi", 1, 2, 0);
        let without = memory_overhead(&s);
        s.domain.io_threads_policy = Some("shared".into());
        if let Some(d) = s.domain.devices.disks.as_mut() {
            d[0].dedicated_io_thread = Some(true);
        }
        assert_eq!(memory_overhead(&s), without + 2 * MIB);
    }

    proptest! {
        #[test]
        fn overhead_is_whole_mib_monotonic_and_above_the_fixed_part(
            mib in 1u64..(1 << 20), sockets in 1u32..64, disks in 0usize..8, nics in 0usize..8,
        ) {
            let s = spec(&format!("{mib}Mi"), sockets, disks, nics);
            let o = memory_overhead(&s);
            prop_assert_eq!(o % MIB, 0);
            prop_assert!(o >= LAUNCHER_PROCESS_BYTES + QEMU_BASE_BYTES + TCG_TRANSLATION_CACHE_BYTES);
            let bigger_guest = memory_overhead(&spec(&format!("{}Mi", mib + 512), sockets, disks, nics));
            let more_vcpus = memory_overhead(&spec(&format!("{mib}Mi"), sockets + 1, disks, nics));
            prop_assert!(bigger_guest >= o);
            prop_assert!(more_vcpus > o);
        }
    }
}
