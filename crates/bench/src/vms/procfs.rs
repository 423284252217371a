//! What the benchmark reads from `/proc`: resident memory, liveness, command lines. Processes are
//! always named by PID, and a PID is only trusted after its command line says it is ours.

/// `VmRSS` of a `/proc/<pid>/status` text, in KiB.
pub fn vm_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// A `kB` field (`VmRSS`, `VmHWM`, ...) of a `/proc/<pid>/status` text, in KiB.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` (resident now) and `VmHWM` (the peak resident size so far) of `pid`, in KiB.
pub fn rss_and_peak_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some((status_kib(&status, "VmRSS")?, status_kib(&status, "VmHWM")?))
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`: 100 on every Linux ABI this
/// runs on).
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of a `/proc/<pid>/stat` text.
pub fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold anything, up to the last ')'): state is
    // field 3, utime field 14, stime field 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: u64 = rest.get(11)?.parse().ok()?;
    let stime: u64 = rest.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// User + system CPU seconds `pid` has used so far (its threads included, its children not).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| stat_cpu_seconds(&s))
}

/// Resident memory of `pid` in KiB (`None` once it is gone; a zombie has none).
pub fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| vm_rss_kib(&s))
}

/// Whether a `/proc/<pid>/stat` text is of a zombie (dead, not yet reaped).
pub fn stat_is_zombie(stat: &str) -> bool {
    // The command name (in parentheses) may hold anything; the state follows the last ')'.
    stat.rsplit(')')
        .next()
        .is_some_and(|rest| rest.trim_start().starts_with('Z'))
}

/// Whether `pid` is a live process (not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !stat_is_zombie(&s))
}

/// The command line of `pid`, NUL-separated as the kernel gives it.
pub fn cmdline(pid: u32) -> Option<Vec<u8>> {
    std::fs::read(format!("/proc/{pid}/cmdline")).ok()
}

/// Whether the raw `cmdline` contains `needle` (e.g. a pod folder).
pub fn cmdline_contains(cmdline: &[u8], needle: &str) -> bool {
    !needle.is_empty()
        && cmdline
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
}

/// Whether `pid` is alive and its command line names `needle`: a PID read from a file is only
/// signalled after this check, so a recycled PID of some other process is never hit.
pub fn alive_and_names(pid: u32, needle: &str) -> bool {
    alive(pid) && cmdline(pid).is_some_and(|c| cmdline_contains(&c, needle))
}

/// The first `model name` of `/proc/cpuinfo`, or "unknown CPU".
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| crate::machine::cpu_model(&t))
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmrss() {
        let status =
            "Name:\tqemu-system-x86\nVmPeak:\t  999 kB\nVmRSS:\t  123456 kB\nRssAnon:\t 1 kB\n";
        assert_eq!(vm_rss_kib(status), Some(123_456));
        // Kernel threads and zombies have no VmRSS line.
        assert_eq!(vm_rss_kib("Name:\tkthreadd\nState:\tS\n"), None);
    }

    #[test]
    fn reads_peak_and_cpu_time() {
        let status = "Name:\tetcd\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(2048));
        assert_eq!(status_kib(status, "VmRSS"), Some(1024));
        assert_eq!(status_kib(status, "VmPeak"), None);
        let stat = "42 (odd ) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100";
        assert_eq!(stat_cpu_seconds(stat), Some(3.0));
        let me = std::process::id();
        assert!(rss_and_peak_kib(me).is_some_and(|(rss, peak)| peak >= rss && rss > 0));
        assert!(cpu_seconds(me).is_some());
    }

    #[test]
    fn zombies_are_told_apart_even_with_odd_names() {
        assert!(stat_is_zombie("42 (qemu) Z 1 42 42"));
        assert!(!stat_is_zombie("42 (a) Z (b) S 1 42"));
        assert!(!stat_is_zombie("42 (ferrovirt) S 1 42 42"));
    }

    #[test]
    fn this_process_is_alive_and_has_rss() {
        let me = std::process::id();
        assert!(alive(me));
        assert!(rss_kib(me).is_some_and(|k| k > 0));
        assert!(!alive(u32::MAX));
        assert_eq!(rss_kib(u32::MAX), None);
    }

    #[test]
    fn cmdline_search() {
        let c = b"qemu\0-pidfile\0/tmp/x/pods/uid1/qemu.pid\0";
        assert!(cmdline_contains(c, "/tmp/x/pods/uid1"));
        assert!(!cmdline_contains(c, "/tmp/x/pods/uid2"));
        assert!(!cmdline_contains(c, ""));
        assert!(!alive_and_names(u32::MAX, "x"));
    }
}
