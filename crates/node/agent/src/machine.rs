//! Readings of the real machine the agent runs on: what it has (CPUs, memory, the data
//! directory's filesystem), what it is (kernel, OS image, machine and boot ids, addresses) and
//! how loaded it is (available memory, disk and process ids), as kubelet reads them through
//! cadvisor. Parsers are separate from the file reads so they are unit-tested.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

/// What the machine holds, in bytes and counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub cpus: u32,
    pub memory_bytes: u64,
    /// Size of the filesystem holding the data directory.
    pub ephemeral_storage_bytes: u64,
}

/// How much is free now (for the pressure conditions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Usage {
    pub memory_available_bytes: u64,
    pub disk_available_bytes: u64,
    pub disk_total_bytes: u64,
    pub inodes_free: u64,
    pub inodes_total: u64,
    /// Process ids in use (threads included) and the kernel's limit.
    pub pids_used: u64,
    pub pid_max: u64,
}

/// Facts about the machine for `status.nodeInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Info {
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub system_uuid: String,
    /// Kubernetes' name for the architecture (`amd64`, `arm64`).
    pub architecture: String,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The host name, lower case (as kubelet names its node).
pub fn hostname() -> String {
    let h = read("/proc/sys/kernel/hostname").trim().to_ascii_lowercase();
    if h.is_empty() {
        "localhost".into()
    } else {
        h
    }
}

/// Kubernetes' (Go's) name for this machine's architecture.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

pub fn info() -> Info {
    Info {
        kernel_version: read("/proc/sys/kernel/osrelease").trim().to_string(),
        os_image: os_image(&read("/etc/os-release")),
        machine_id: read("/etc/machine-id").trim().to_string(),
        boot_id: read("/proc/sys/kernel/random/boot_id").trim().to_string(),
        system_uuid: read("/sys/class/dmi/id/product_uuid").trim().to_string(),
        architecture: go_arch().to_string(),
    }
}

/// `PRETTY_NAME` of an os-release file (kubelet's OS image), unquoted; "Linux" without one.
pub fn os_image(os_release: &str) -> String {
    for line in os_release.lines() {
        if let Some(v) = line.strip_prefix("PRETTY_NAME=") {
            let v = v.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\''))).unwrap_or(v);
            return v.to_string();
        }
    }
    "Linux".into()
}

/// The number of CPUs in a kernel cpu list (`0-3,8,10-11`).
pub fn count_cpu_list(list: &str) -> u32 {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    n += b.saturating_sub(a) + 1;
                }
            }
            None => {
                if part.trim().parse::<u32>().is_ok() {
                    n += 1;
                }
            }
        }
    }
    n
}

/// A `/proc/meminfo` field in bytes.
pub fn meminfo_field(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

// statvfs fields are u64 here but narrower on 32-bit targets.
#[allow(clippy::useless_conversion)]
pub fn capacity(data_dir: &Path) -> Capacity {
    let cpus = match count_cpu_list(&read("/sys/devices/system/cpu/online")) {
        0 => std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        n => n,
    };
    let memory_bytes = meminfo_field(&read("/proc/meminfo"), "MemTotal").unwrap_or(0);
    let ephemeral_storage_bytes = nix::sys::statvfs::statvfs(data_dir).map(|s| u64::from(s.blocks()) * u64::from(s.fragment_size())).unwrap_or(0);
    Capacity { cpus, memory_bytes, ephemeral_storage_bytes }
}

#[allow(clippy::useless_conversion)]
pub fn usage(data_dir: &Path) -> Usage {
    let meminfo = read("/proc/meminfo");
    let memory_available_bytes = meminfo_field(&meminfo, "MemAvailable").or_else(|| meminfo_field(&meminfo, "MemFree")).unwrap_or(0);
    let (disk_available_bytes, disk_total_bytes, inodes_free, inodes_total) = match nix::sys::statvfs::statvfs(data_dir) {
        Ok(s) => {
            let f = u64::from(s.fragment_size());
            (u64::from(s.blocks_available()) * f, u64::from(s.blocks()) * f, u64::from(s.files_available()), u64::from(s.files()))
        }
        Err(_) => (0, 0, 0, 0),
    };
    Usage {
        memory_available_bytes,
        disk_available_bytes,
        disk_total_bytes,
        inodes_free,
        inodes_total,
        pids_used: loadavg_entities(&read("/proc/loadavg")).unwrap_or(0),
        pid_max: read("/proc/sys/kernel/pid_max").trim().parse().unwrap_or(32768),
    }
}

/// The number of scheduling entities (processes and threads: each holds a pid) from
/// `/proc/loadavg` (`0.20 0.18 0.12 1/80 11206`).
pub fn loadavg_entities(loadavg: &str) -> Option<u64> {
    loadavg.split_whitespace().nth(3)?.split_once('/')?.1.parse().ok()
}

/// The name of the interface the default IPv4 route leaves through, from `/proc/net/route`.
pub fn default_route_interface(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Destination 00000000 with mask 00000000 is the default route.
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
    })
}

/// The node's InternalIP when none is configured: the IPv4 address of the default route's
/// interface (what kubelet falls back to when the host name does not resolve), else the first
/// non-loopback IPv4 address, else loopback.
pub fn internal_ip() -> IpAddr {
    let dev = default_route_interface(&read("/proc/net/route"));
    let mut first: Option<Ipv4Addr> = None;
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let Some(v4) = a.address.as_ref().and_then(|s| s.as_sockaddr_in()).map(|s| s.ip()) else { continue };
            if v4.is_loopback() {
                continue;
            }
            if dev.as_deref() == Some(a.interface_name.as_str()) {
                return IpAddr::V4(v4);
            }
            first.get_or_insert(v4);
        }
    }
    IpAddr::V4(first.unwrap_or(Ipv4Addr::LOCALHOST))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(os_image("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"), "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(os_image("PRETTY_NAME=Alpine\n"), "Alpine");
        assert_eq!(os_image(""), "Linux");
        assert_eq!(count_cpu_list("0-1\n"), 2);
        assert_eq!(count_cpu_list("0-3,8,10-11"), 7);
        assert_eq!(count_cpu_list(""), 0);
        assert_eq!(meminfo_field("MemTotal:       24576000 kB\nMemFree: 10 kB\n", "MemTotal"), Some(24576000 * 1024));
        assert_eq!(meminfo_field("MemTotalX: 5 kB\n", "MemTotal"), None);
        assert_eq!(loadavg_entities("0.20 0.18 0.12 1/80 11206\n"), Some(80));
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     strata0\t0000590A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
                     eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(default_route_interface(route).as_deref(), Some("eth0"));
    }
}
