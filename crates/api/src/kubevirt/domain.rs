//! `spec.domain`: the virtual hardware of a VMI (KubeVirt's `schema.go`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

/// The virtual hardware of a VMI.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DomainSpec {
    /// Compute resources (`requests`/`limits` of `memory` and `cpu`).
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,
    /// CPU topology and model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    /// Guest memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    /// QEMU machine type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<Machine>,
    /// Firmware (UUID, serial, bootloader, kernel boot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
    /// Guest clock and timers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clock: Option<Clock>,
    /// Platform features (ACPI, APIC, SMM, Hyper-V, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    /// Disks, interfaces and other devices.
    pub devices: Devices,
    /// Whether disks share IOThreads: `shared`, `auto` or `supplementalPool`.
    #[serde(rename = "ioThreadsPolicy", skip_serializing_if = "Option::is_none")]
    pub io_threads_policy: Option<String>,
}

/// Compute resources of the guest. Valid keys are `memory` and `cpu`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    /// Initial resources of the VMI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<BTreeMap<String, Quantity>>,
    /// Maximum resources of the VMI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
    /// Leave the per-VM overhead out of the scheduler's request (only in the memory limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overcommit_guest_overhead: Option<bool>,
}

impl ResourceRequirements {
    /// True when nothing is set (serialized as absent).
    pub fn is_empty(&self) -> bool {
        self.requests.is_none() && self.limits.is_none() && self.overcommit_guest_overhead.is_none()
    }

    /// The request for `name` (`"memory"` or `"cpu"`), if any.
    pub fn request(&self, name: &str) -> Option<&Quantity> {
        self.requests.as_ref().and_then(|m| m.get(name))
    }

    /// The limit for `name` (`"memory"` or `"cpu"`), if any.
    pub fn limit(&self, name: &str) -> Option<&Quantity> {
        self.limits.as_ref().and_then(|m| m.get(name))
    }
}

/// CPU topology and model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cpu {
    /// Cores per socket (>= 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Sockets (>= 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sockets: Option<u32>,
    /// Upper bound of sockets for CPU hotplug.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sockets: Option<u32>,
    /// Threads per core (>= 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads: Option<u32>,
    /// CPU model, e.g. `host-model`, `host-passthrough` or a named QEMU model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// CPU feature flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<CpuFeature>>,
    /// Pin vCPUs to dedicated host CPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedicated_cpu_placement: Option<bool>,
    /// Give the emulator thread its own dedicated host CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolate_emulator_thread: Option<bool>,
}

impl Cpu {
    /// Number of vCPUs: sockets × cores × threads, each defaulting to 1.
    pub fn vcpus(&self) -> u64 {
        u64::from(self.sockets.unwrap_or(1).max(1))
            .saturating_mul(u64::from(self.cores.unwrap_or(1).max(1)))
            .saturating_mul(u64::from(self.threads.unwrap_or(1).max(1)))
    }
}

/// A CPU feature flag and its policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CpuFeature {
    /// Feature name, e.g. `pcid`.
    pub name: String,
    /// `force`, `require` (default), `optional`, `disable` or `forbid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// Guest memory settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Memory {
    /// Back guest memory with huge pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<Hugepages>,
    /// Memory visible to the guest; defaults to `resources.requests.memory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest: Option<Quantity>,
    /// Upper bound of guest memory for memory hotplug.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_guest: Option<Quantity>,
}

/// Huge pages backing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hugepages {
    /// Page size, `2Mi` or `1Gi` on x86_64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_size: Option<String>,
}

/// QEMU machine type.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Machine {
    /// Machine type, e.g. `q35`.
    #[serde(rename = "type", default)]
    pub type_: String,
}

/// Firmware settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Firmware {
    /// SMBIOS system UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// BIOS or EFI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootloader: Option<Bootloader>,
    /// SMBIOS system serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Boot a kernel and initrd directly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_boot: Option<KernelBoot>,
}

/// Bootloader: exactly one of BIOS (the default) or EFI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bootloader {
    /// Legacy BIOS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bios: Option<Bios>,
    /// UEFI (OVMF).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub efi: Option<Efi>,
}

/// Legacy BIOS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bios {
    /// Send BIOS output to the serial console.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_serial: Option<bool>,
}

/// UEFI settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Efi {
    /// Secure Boot (defaults to true; requires SMM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secure_boot: Option<bool>,
    /// Keep the EFI NVRAM across reboots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent: Option<bool>,
}

/// Direct kernel boot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelBoot {
    /// Kernel command line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_args: Option<String>,
    /// The container image holding the kernel and initrd.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<KernelBootContainer>,
}

/// Container image holding a kernel and initrd.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelBootContainer {
    /// Image reference.
    pub image: String,
    /// Registry pull secret name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// `Always`, `Never` or `IfNotPresent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Absolute path of the kernel inside the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_path: Option<String>,
    /// Absolute path of the initrd inside the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
}

/// Guest clock: offset (UTC or a timezone) and timers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Clock {
    /// Guest clock in UTC, optionally offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub utc: Option<ClockOffsetUtc>,
    /// Guest clock in this timezone (TZ name, e.g. `Europe/Berlin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Timers attached to the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timer: Option<Timer>,
}

/// UTC clock with an optional offset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClockOffsetUtc {
    /// Offset from UTC in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset_seconds: Option<i64>,
}

/// Guest timers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timer {
    /// High Precision Event Timer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hpet: Option<TickTimer>,
    /// KVM paravirtual clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kvm: Option<PresentTimer>,
    /// Programmable Interval Timer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pit: Option<TickTimer>,
    /// Real Time Clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtc: Option<RtcTimer>,
    /// Hyper-V clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyperv: Option<PresentTimer>,
}

/// A timer that can only be present or absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PresentTimer {
    /// False keeps the machine type from adding the timer (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A timer with a tick policy (HPET, PIT).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TickTimer {
    /// What to do with missed ticks: `delay`, `catchup`, `merge` or `discard`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_policy: Option<String>,
    /// False keeps the machine type from adding the timer (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// Real Time Clock settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RtcTimer {
    /// `delay` or `catchup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tick_policy: Option<String>,
    /// False keeps the machine type from adding the timer (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
    /// Track `guest` or `wall` time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<String>,
}

/// A feature that is on or off (`{enabled}`, defaulting to on when present).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeatureState {
    /// Whether the feature is enabled (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl FeatureState {
    /// Enabled unless explicitly `enabled: false`.
    pub fn is_enabled(&self) -> bool {
        self.enabled != Some(false)
    }
}

/// Platform features of the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Features {
    /// ACPI (on by default; needed for a graceful power-down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acpi: Option<FeatureState>,
    /// APIC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apic: Option<FeatureApic>,
    /// Pass all supported Hyper-V enlightenments through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyperv_passthrough: Option<FeatureState>,
    /// Individual Hyper-V enlightenments.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hyperv: Option<FeatureHyperv>,
    /// System Management Mode (required by EFI Secure Boot).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smm: Option<FeatureState>,
    /// How KVM presents itself to the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kvm: Option<FeatureKvm>,
    /// Paravirtual spinlocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pvspinlock: Option<FeatureState>,
}

/// APIC settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeatureApic {
    /// Whether the feature is enabled (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// End-of-interrupt notification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_of_interrupt: Option<bool>,
}

/// KVM visibility.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeatureKvm {
    /// Hide KVM from MSR-based discovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
}

/// Hyper-V enlightenments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeatureHyperv {
    /// Relaxed timing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relaxed: Option<FeatureState>,
    /// Virtual APIC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vapic: Option<FeatureState>,
    /// Spinlock retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spinlocks: Option<FeatureSpinlocks>,
    /// Virtual processor index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpindex: Option<FeatureState>,
    /// Runtime accounting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<FeatureState>,
    /// Synthetic interrupt controller.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synic: Option<FeatureState>,
    /// SynIC timers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synictimer: Option<SyNicTimer>,
    /// Hyper-V reset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset: Option<FeatureState>,
    /// Hypervisor vendor id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vendorid: Option<FeatureVendorId>,
    /// TSC frequency MSRs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequencies: Option<FeatureState>,
    /// TSC reenlightenment notifications.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reenlightenment: Option<FeatureState>,
    /// Paravirtual TLB flush.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlbflush: Option<TlbFlush>,
    /// Paravirtual IPIs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipi: Option<FeatureState>,
    /// Enlightened VMCS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evmcs: Option<FeatureState>,
}

/// Hyper-V spinlock settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeatureSpinlocks {
    /// Whether the feature is enabled (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Retry count (>= 4096; defaults to 4096).
    #[serde(rename = "spinlocks", skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// SynIC timer settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyNicTimer {
    /// Whether the feature is enabled (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Direct mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct: Option<FeatureState>,
}

/// Hyper-V vendor id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeatureVendorId {
    /// Whether the feature is enabled (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Vendor id, up to twelve characters.
    #[serde(rename = "vendorid", skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<String>,
}

/// Hyper-V TLB flush settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlbFlush {
    /// Whether the feature is enabled (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Direct flush.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct: Option<FeatureState>,
    /// Extended (partial) flush.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extended: Option<FeatureState>,
}

/// The guest's devices.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Devices {
    /// Use transitional (virtio 0.9) devices for old guests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub use_virtio_transitional: Option<bool>,
    /// Disable disk hotplug.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disable_hotplug: Option<bool>,
    /// Disks, CD-ROMs and LUNs; each names a volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disks: Option<Vec<Disk>>,
    /// A watchdog device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watchdog: Option<Watchdog>,
    /// Network interfaces; each names a network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<Interface>>,
    /// Input devices (tablets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<Input>>,
    /// Attach the default pod network interface when none is given (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoattach_pod_interface: Option<bool>,
    /// Attach a graphics device, needed for VNC (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoattach_graphics_device: Option<bool>,
    /// Attach the serial console (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoattach_serial_console: Option<bool>,
    /// Log the serial console to a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_serial_console: Option<bool>,
    /// Attach a memory balloon (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoattach_mem_balloon: Option<bool>,
    /// Attach an input device (defaults to false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoattach_input_device: Option<bool>,
    /// Attach a VSOCK device (defaults to false).
    #[serde(rename = "autoattachVSOCK", skip_serializing_if = "Option::is_none")]
    pub autoattach_vsock: Option<bool>,
    /// Attach a virtio RNG fed from the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rng: Option<Rng>,
    /// Multi-queue virtio block devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_multi_queue: Option<bool>,
    /// Multi-queue virtio network devices.
    #[serde(
        rename = "networkInterfaceMultiqueue",
        skip_serializing_if = "Option::is_none"
    )]
    pub network_interface_multi_queue: Option<bool>,
    /// Downward metrics virtio-serial device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downward_metrics: Option<Empty>,
}

impl Devices {
    /// The disks, or an empty slice.
    pub fn disks(&self) -> &[Disk] {
        self.disks.as_deref().unwrap_or_default()
    }

    /// The interfaces, or an empty slice.
    pub fn interfaces(&self) -> &[Interface] {
        self.interfaces.as_deref().unwrap_or_default()
    }
}

/// An empty object (`{}`), used for presence-only settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Random number generator device (`{}`).
pub type Rng = Empty;

/// A disk attached to the guest, backed by the volume of the same name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Disk {
    /// Device name; also the name of the backing volume.
    pub name: String,
    /// Attach as a disk (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskTarget>,
    /// Attach as a LUN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lun: Option<LunTarget>,
    /// Attach as a CD-ROM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cdrom: Option<CdromTarget>,
    /// Boot order (> 0, unique among disks and interfaces; lower boots first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    /// Disk serial number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Give this disk its own IOThread.
    #[serde(rename = "dedicatedIOThread", skip_serializing_if = "Option::is_none")]
    pub dedicated_io_thread: Option<bool>,
    /// Host cache mode: `none`, `writethrough` or `writeback`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    /// QEMU I/O mode: `native` or `threads`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io: Option<String>,
    /// Tag passed to the guest via config-drive metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Block sizes presented to the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_size: Option<BlockSize>,
    /// Allow several VMs to write the disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shareable: Option<bool>,
    /// On I/O error: `stop`, `ignore`, `report` or `enospace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_policy: Option<String>,
    /// Changed block tracking.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_block_tracking: Option<bool>,
}

/// Disk device settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiskTarget {
    /// `virtio`, `sata`, `scsi` or `usb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// Read-only disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    /// Guest PCI address, e.g. `0000:81:01.0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
}

/// LUN device settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LunTarget {
    /// `virtio`, `sata` or `scsi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// Read-only LUN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    /// SCSI persistent reservation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation: Option<bool>,
}

/// CD-ROM device settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CdromTarget {
    /// `sata`, `scsi` or `usb` (not `virtio`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// Read-only (defaults to true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    /// `open` or `closed` (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tray: Option<String>,
}

/// Block sizes of a disk: custom sizes or those of the volume.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BlockSize {
    /// Explicit sizes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomBlockSize>,
    /// Use the block sizes of the backing volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_volume: Option<FeatureState>,
}

/// Explicit block sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomBlockSize {
    /// Logical block size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logical: Option<u32>,
    /// Physical block size in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub physical: Option<u32>,
    /// Discard granularity in bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discard_granularity: Option<u32>,
}

/// A watchdog device; exactly one model.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Watchdog {
    /// Device name.
    pub name: String,
    /// Intel 6300ESB watchdog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub i6300esb: Option<WatchdogAction>,
    /// s390x diag288 watchdog.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diag288: Option<WatchdogAction>,
}

/// What a watchdog does when it fires.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchdogAction {
    /// `poweroff`, `reset` (the default) or `shutdown`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// An input device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Input {
    /// `usb` (the default) or `virtio`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
    /// `tablet` (the default).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Device name.
    pub name: String,
}

/// A network interface of the guest, connected to the network of the same name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Interface {
    /// Interface name; also the name of its network.
    pub name: String,
    /// NIC model: `virtio` (the default), `e1000`, `e1000e`, `igb`, `ne2k_pci`, `pcnet`, `rtl8139`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Bridge binding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<Empty>,
    /// Removed slirp binding (refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slirp: Option<Empty>,
    /// Masquerade (NAT) binding: the one ferrovirt implements.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masquerade: Option<Empty>,
    /// SR-IOV binding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sriov: Option<Empty>,
    /// Removed macvtap binding (refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub macvtap: Option<Empty>,
    /// Removed passt binding (refused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passt: Option<Empty>,
    /// passt binding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passt_binding: Option<Empty>,
    /// Binding plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binding: Option<PluginBinding>,
    /// Ports forwarded to the guest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<Port>>,
    /// MAC address, e.g. `de:ad:00:00:be:af`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// Boot order (> 0, unique among disks and interfaces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
    /// Guest PCI address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_address: Option<String>,
    /// Extra DHCP options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dhcp_options: Option<DhcpOptions>,
    /// Tag passed to the guest via config-drive metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// ACPI index for stable device naming (1..=16383).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acpi_index: Option<i64>,
    /// Requested link state: `up`, `down` or `absent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl Interface {
    /// The names of the binding methods set on this interface, in field order.
    pub fn binding_methods(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        let candidates: [(&'static str, bool); 8] = [
            ("bridge", self.bridge.is_some()),
            ("slirp", self.slirp.is_some()),
            ("masquerade", self.masquerade.is_some()),
            ("sriov", self.sriov.is_some()),
            ("macvtap", self.macvtap.is_some()),
            ("passt", self.passt.is_some()),
            ("passtBinding", self.passt_binding.is_some()),
            ("binding", self.binding.is_some()),
        ];
        for (name, present) in candidates {
            if present {
                set.push(name);
            }
        }
        set
    }
}

/// A binding plugin reference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginBinding {
    /// Plugin name as registered in the KubeVirt CR.
    pub name: String,
}

/// A port forwarded to the guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Port {
    /// Port name (IANA service name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP` (the default) or `UDP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Port number, 1..=65535.
    pub port: i32,
}

/// Extra DHCP options for an interface.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DhcpOptions {
    /// DHCP option 67.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boot_file_name: Option<String>,
    /// DHCP option 66.
    #[serde(rename = "tftpServerName", skip_serializing_if = "Option::is_none")]
    pub tftp_server_name: Option<String>,
    /// DHCP option 42.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ntp_servers: Option<Vec<String>>,
    /// Private options 224..=254.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_options: Option<Vec<DhcpPrivateOption>>,
}

/// A private DHCP option.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DhcpPrivateOption {
    /// Option number, 224..=254.
    pub option: i32,
    /// Option value.
    pub value: String,
}
