//! What a node is made of: memory, CPUs, kernel and OS, read from `/proc` and `/etc`, and what it
//! offers to VMs once the node agent keeps some back for itself.

use std::collections::BTreeMap;

/// Facts about the host a node agent runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub memory_bytes: u64,
    pub cpus: u32,
    pub kernel_version: String,
    pub os_image: String,
    pub hostname: String,
}

/// Memory a node keeps back for the host and the node agent.
pub const RESERVED_MEMORY: u64 = 512 * 1024 * 1024;
/// Launcher pods a node will run at most.
pub const MAX_PODS: u32 = 110;

/// `MemTotal` from the contents of `/proc/meminfo`, in bytes.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
}

/// `PRETTY_NAME` from the contents of `/etc/os-release`.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
}

impl HostInfo {
    pub fn read() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        HostInfo {
            memory_bytes: parse_meminfo_total(&read("/proc/meminfo")).unwrap_or(0),
            cpus: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
            kernel_version: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os_image: parse_os_release(&read("/etc/os-release")).unwrap_or_else(|| "Linux".into()),
            hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        }
    }

    /// Capacity as Kubernetes quantities.
    pub fn capacity(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("cpu".to_string(), self.cpus.to_string()),
            ("memory".to_string(), format!("{}Ki", self.memory_bytes / 1024)),
            ("pods".to_string(), MAX_PODS.to_string()),
        ])
    }

    /// What VMs may use: capacity less what the host keeps back.
    pub fn allocatable(&self) -> BTreeMap<String, String> {
        let mem = self.memory_bytes.saturating_sub(RESERVED_MEMORY);
        BTreeMap::from([
            ("cpu".to_string(), self.cpus.to_string()),
            ("memory".to_string(), format!("{}Ki", mem / 1024)),
            ("pods".to_string(), MAX_PODS.to_string()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_os_release_parse() {
        assert_eq!(parse_meminfo_total("MemTotal:       24570012 kB\nMemFree: 1 kB\n"), Some(24570012 * 1024));
        assert_eq!(parse_meminfo_total("nothing"), None);
        assert_eq!(parse_os_release("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n").as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
    }

    #[test]
    fn allocatable_keeps_memory_back() {
        let h = HostInfo { memory_bytes: 4 << 30, cpus: 2, kernel_version: "6".into(), os_image: "x".into(), hostname: "h".into() };
        assert_eq!(h.capacity()["memory"], "4194304Ki");
        assert_eq!(h.allocatable()["memory"], format!("{}Ki", ((4u64 << 30) - RESERVED_MEMORY) / 1024));
        assert_eq!(h.allocatable()["cpu"], "2");
    }

    #[test]
    fn this_host_reads() {
        let h = HostInfo::read();
        assert!(h.memory_bytes > 0 && h.cpus > 0);
    }
}
