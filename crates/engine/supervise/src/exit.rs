//! How a supervised workload ended: the exit record its supervisor writes, atomically, into
//! space reserved while the disk had room (so a full disk does not lose how it ended).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the workload's main process (container init, QEMU) ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code as a shell reports it: the code, or 128 + signal number.
    pub code: i32,
    pub signal: Option<i32>,
    /// Killed by the kernel's OOM killer in its memory cgroup (containers).
    #[serde(default)]
    pub oom_killed: bool,
    /// RFC 3339.
    pub finished_at: String,
    /// The runtime already deleted its record and cgroups (a container's foreground launch).
    #[serde(default)]
    pub runtime_deleted: bool,
    /// The supervisor that wrote this is not the workload's parent, or not the one that started
    /// it: it died and a container was stopped by the driver (code 137 if it was killed then,
    /// 255 if it was already gone), or a VM was adopted by a replacement supervisor (code 255:
    /// how QEMU ended is not known).
    #[serde(default)]
    pub supervisor_lost: bool,
    /// The guest's kernel panicked (VMs): what said so — the console's `Kernel panic - not
    /// syncing` line, or QEMU's `GUEST_PANICKED` event from the pvpanic device. QEMU then exits
    /// as after a power-off (the kernel reboots under `-no-reboot`, or pvpanic's shutdown
    /// action), so the exit code alone does not tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_panic: Option<String>,
}

impl ExitRecord {
    /// A record finished now.
    pub fn now(code: i32, signal: Option<i32>) -> Self {
        ExitRecord {
            code,
            signal,
            oom_killed: false,
            finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            runtime_deleted: false,
            supervisor_lost: false,
            guest_panic: None,
        }
    }
}

/// Read an exit record, if the workload has exited.
pub fn read(path: &Path) -> Option<ExitRecord> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The bytes kept for the exit record (a record is about 150).
const RESERVE: usize = 4096;

/// Room for the exit record at `exit_file`: a file of [`RESERVE`] bytes next to it, allocated
/// while there is space (call it when the workload starts). `None` (with a note in the
/// supervisor's log) if even that fails.
pub fn reserve(exit_file: &Path) -> Option<PathBuf> {
    let path = reserve_path(exit_file);
    let made = std::fs::File::create(&path).and_then(|mut f| f.write_all(&[b' '; RESERVE]));
    match made {
        Ok(()) => Some(path),
        Err(e) => {
            crate::note!("strata supervisor: reserving space for the exit record: {e}");
            let _ = std::fs::remove_file(&path);
            None
        }
    }
}

fn reserve_path(exit_file: &Path) -> PathBuf {
    let name = exit_file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    exit_file.with_file_name(format!(".{name}.reserve"))
}

/// Write `record` atomically: into the reserved file, overwriting blocks it already has (which
/// needs no free space) and then renamed into place; without a reservation, through a new
/// temporary file. Not fsync'd: it is read while the host is up; a power loss ends the
/// workload anyway.
pub fn write(exit_file: &Path, reserve: Option<&PathBuf>, record: &ExitRecord) -> std::io::Result<()> {
    let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    if let Some(path) = reserve.filter(|_| json.len() <= RESERVE) {
        let written = std::fs::OpenOptions::new().write(true).open(path).and_then(|mut f| {
            f.write_all(&json)?;
            f.set_len(json.len() as u64)
        });
        if written.is_ok() && std::fs::rename(path, exit_file).is_ok() {
            return Ok(());
        }
        let _ = std::fs::remove_file(path);
    }
    crate::util::replace_file(exit_file, &json, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_record_round_trips_and_leaves_no_reservation() {
        let dir = tempfile::tempdir().expect("tmp");
        let exit_file = dir.path().join("exit.json");
        let r = reserve(&exit_file).expect("reserve");
        assert!(r.exists());
        let rec = ExitRecord { oom_killed: true, ..ExitRecord::now(137, Some(9)) };
        write(&exit_file, Some(&r), &rec).expect("write");
        assert_eq!(read(&exit_file), Some(rec));
        assert!(!r.exists(), "the reservation became the record");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }

    #[test]
    fn a_record_without_the_container_fields_reads() {
        // What the VM supervisor wrote before the records were one type.
        let old = br#"{"code":0,"signal":null,"finished_at":"2026-01-01T00:00:00Z","supervisor_lost":false}"#;
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("exit.json");
        std::fs::write(&p, old).expect("write");
        let rec = read(&p).expect("read");
        assert_eq!((rec.code, rec.oom_killed, rec.runtime_deleted), (0, false, false));
    }
}
