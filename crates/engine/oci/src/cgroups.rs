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

/// Create the cgroup `cgroup` (a pod's, parent of its containers' cgroups) with an optional
/// memory limit and `cpu.shares` (cgroup v1 units; on v2 converted to `cpu.weight`). Only the
/// controllers that get a value are created here; the runtime creates the rest of a
/// container's path. Idempotent.
pub fn create(cgroup: &str, memory_limit_bytes: Option<u64>, cpu_shares: Option<u64>) -> std::io::Result<()> {
    let write = |dir: &Path, file: &str, value: String| -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(file), value).map_err(|e| std::io::Error::new(e.kind(), format!("writing {}: {e}", dir.join(file).display())))
    };
    if is_unified() {
        let dir = v2(cgroup);
        // Each ancestor hands the controllers down to its children.
        let mut path = PathBuf::from(ROOT);
        for part in cgroup.trim_start_matches('/').split('/').filter(|p| !p.is_empty()) {
            let _ = std::fs::write(path.join("cgroup.subtree_control"), "+memory +cpu +pids");
            path.push(part);
            std::fs::create_dir_all(&path)?;
        }
        if let Some(m) = memory_limit_bytes {
            write(&dir, "memory.max", m.to_string())?;
        }
        if let Some(s) = cpu_shares {
            // runc's conversion of shares (2..262144) to weight (1..10000).
            let weight = 1 + ((s.clamp(2, 262_144) - 2) * 9999) / 262_142;
            write(&dir, "cpu.weight", weight.to_string())?;
        }
        return Ok(());
    }
    if let Some(m) = memory_limit_bytes {
        write(&v1("memory", cgroup), "memory.limit_in_bytes", m.to_string())?;
    }
    if let Some(s) = cpu_shares {
        write(&v1("cpu", cgroup), "cpu.shares", s.to_string())?;
    }
    Ok(())
}

/// Remove the (empty) cgroup `cgroup` from every hierarchy, children first; absent is fine.
pub fn remove(cgroup: &str) -> std::io::Result<()> {
    fn rmdir_tree(dir: &Path) -> std::io::Result<()> {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path())?;
                }
            }
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(std::io::Error::new(e.kind(), format!("removing {}: {e}", dir.display()))),
        }
    }
    let mut first = None;
    for dir in all_dirs(cgroup) {
        // Controllers mounted together appear twice (cpu and cpuacct link to cpu,cpuacct).
        if std::fs::symlink_metadata(dir.parent().unwrap_or(&dir)).is_err() {
            continue;
        }
        if let Err(e) = rmdir_tree(&dir) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}
