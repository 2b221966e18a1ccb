//! Reading a container's cgroup: its processes, resource usage and whether the OOM killer
//! struck.
//!
//! The runtime creates and removes cgroups; strata only reads them. Both layouts are handled:
//! cgroup v1 (and hybrid, as on Debian hosts with systemd's legacy mode), where each controller
//! has its own hierarchy under `/sys/fs/cgroup/<controller>`, and the unified v2 hierarchy.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// Is `/sys/fs/cgroup` a pure cgroup v2 mount?
pub fn is_unified() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

fn v1(controller: &str, cgroup: &str) -> PathBuf {
    Path::new(ROOT).join(controller).join(cgroup.trim_start_matches('/'))
}

fn v2(cgroup: &str) -> PathBuf {
    Path::new(ROOT).join(cgroup.trim_start_matches('/'))
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn keyed(p: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(p).ok()?;
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Did the kernel's OOM killer kill a process in this cgroup?
pub fn oom_killed(cgroup: &str) -> bool {
    let count = if is_unified() {
        keyed(&v2(cgroup).join("memory.events"), "oom_kill")
    } else {
        keyed(&v1("memory", cgroup).join("memory.oom_control"), "oom_kill")
    };
    count.unwrap_or(0) > 0
}

/// The processes (thread-group ids) in a container's cgroup, in no particular order; empty
/// once the cgroup is gone.
pub fn pids(cgroup: &str) -> Vec<i32> {
    let dirs = if is_unified() { vec![v2(cgroup)] } else { vec![v1("pids", cgroup), v1("memory", cgroup)] };
    let Some(text) = dirs.iter().find_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok()) else { return vec![] };
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// Resource usage of a container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_ns: u64,
    pub pids: u64,
}

/// Current usage, or `None` if the cgroup is gone.
pub fn usage(cgroup: &str) -> Option<Usage> {
    if is_unified() {
        let dir = v2(cgroup);
        if !dir.exists() {
            return None;
        }
        let limit = std::fs::read_to_string(dir.join("memory.max")).ok().and_then(|s| s.trim().parse().ok());
        Some(Usage {
            memory_bytes: read_u64(&dir.join("memory.current")).unwrap_or(0),
            memory_limit_bytes: limit,
            cpu_usage_ns: keyed(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) * 1000,
            pids: read_u64(&dir.join("pids.current")).unwrap_or(0),
        })
    } else {
        let mem = v1("memory", cgroup);
        if !mem.exists() {
            return None;
        }
        // The v1 "unlimited" value is a huge page-aligned number.
        let limit = read_u64(&mem.join("memory.limit_in_bytes")).filter(|l| *l < (1u64 << 62));
        Some(Usage {
            memory_bytes: read_u64(&mem.join("memory.usage_in_bytes")).unwrap_or(0),
            memory_limit_bytes: limit,
            cpu_usage_ns: read_u64(&v1("cpuacct", cgroup).join("cpuacct.usage")).unwrap_or(0),
            pids: read_u64(&v1("pids", cgroup).join("pids.current")).unwrap_or(0),
        })
    }
}

/// Every cgroup directory a container with this path could have (for leak checks).
pub fn all_dirs(cgroup: &str) -> Vec<PathBuf> {
    if is_unified() {
        return vec![v2(cgroup)];
    }
    let Ok(entries) = std::fs::read_dir(ROOT) else { return vec![] };
    entries
        .flatten()
        .map(|e| e.path().join(cgroup.trim_start_matches('/')))
        .collect()
}
