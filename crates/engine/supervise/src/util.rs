//! The spawn-and-report protocol, supervisor state files, process identity across pid reuse,
//! atomic file replacement.

use std::io::Write;

/// `eprintln!` for supervisors, whose stderr is a log file that may be on a full disk:
/// a failed write is ignored instead of panicking.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
use std::path::Path;
use std::time::{Duration, Instant};

/// Write `data` to `path` atomically: a temp file in the same directory, fsync, rename.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    replace_file(path, data, true)
}

/// Replace `path` with `data` through a temp file and a rename, so readers see the old or the
/// new content, never a mix; `durable` also fsyncs before the rename (needed only for what
/// must survive a power loss, not a process crash).
pub fn replace_file(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The start time of a process (field 22 of `/proc/PID/stat`, in clock ticks since boot),
/// which together with the pid identifies it across pid reuse.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Is the process `pid` that started at `start_time` still alive (and not a zombie)?
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(close) = stat.rfind(')') else { return false };
    let mut fields = stat[close + 2..].split_whitespace();
    let state = fields.next().unwrap_or("");
    let started = fields.nth(18).and_then(|s| s.parse::<u64>().ok());
    state != "Z" && state != "X" && started == Some(start_time)
}

/// Wait until `pid` exits or `timeout` passes; true if it exited. Uses a pidfd, so the process
/// need not be our child; falls back to polling on kernels without `pidfd_open`.
pub fn wait_pid_exit(pid: i32, start_time: u64, timeout: Option<Duration>) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd >= 0 {
        // SAFETY: fd was just returned to us and is closed below.
        let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        if !process_alive(pid, start_time) {
            return true;
        }
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return !process_alive(pid, start_time);
                    }
                    left.as_millis().min(i32::MAX as u128) as i32
                }
            };
            let mut pfd = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&owned), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, ms) };
            if n > 0 {
                return true;
            }
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
    }
    loop {
        if !process_alive(pid, start_time) {
            return true;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a supervisor (container shim, VM supervisor) records about itself on disk: its own pid
/// as soon as it runs, and its child's (container init, QEMU) once that is up. A driver that
/// died before hearing the supervisor's report finds both here.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SupervisorState {
    pub supervisor_pid: i32,
    pub supervisor_start: Option<u64>,
    /// Set once the supervised process is up.
    pub child_pid: Option<i32>,
    pub child_start: Option<u64>,
}

impl SupervisorState {
    pub fn supervisor(&self) -> Option<(i32, u64)> {
        self.supervisor_start.map(|s| (self.supervisor_pid, s))
    }

    pub fn supervisor_alive(&self) -> bool {
        self.supervisor().is_some_and(|(p, s)| process_alive(p, s))
    }

    pub fn child(&self) -> Option<(i32, u64)> {
        self.child_pid.zip(self.child_start)
    }
}

/// Record this process as the supervisor (and `child`, once up) in `path`, atomically. A
/// failure is reported on stderr (the supervisor's log) and is otherwise harmless.
pub fn write_supervisor_state(path: &Path, child: Option<i32>) {
    let me = std::process::id() as i32;
    let state = SupervisorState {
        supervisor_pid: me,
        supervisor_start: process_start_time(me),
        child_pid: child,
        child_start: child.and_then(process_start_time),
    };
    if let Ok(json) = serde_json::to_vec(&state) {
        if let Err(e) = replace_file(path, &json, false) {
            crate::note!("strata supervisor: writing {}: {e}", path.display());
        }
    }
}

pub fn read_supervisor_state(path: &Path) -> Option<SupervisorState> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The descriptor a supervisor reports readiness on (see [`spawn_supervisor`]).
pub const READY_FD: i32 = 3;

/// What a supervisor wrote on its ready pipe before closing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SupervisorReport {
    /// `ok CHILD SUPERVISOR`: the supervised process (container init, QEMU) and the supervisor.
    Ready { child_pid: i32, supervisor_pid: i32 },
    /// `error MESSAGE`: it could not start what it supervises.
    Failed(String),
    /// Nothing readable: it died before reporting (its log says why).
    Silent,
}

impl SupervisorReport {
    fn parse(msg: &str) -> Self {
        if let Some(rest) = msg.strip_prefix("ok ") {
            let mut it = rest.split_whitespace().map(str::parse::<i32>);
            if let (Some(Ok(child_pid)), Some(Ok(supervisor_pid))) = (it.next(), it.next()) {
                return SupervisorReport::Ready { child_pid, supervisor_pid };
            }
        }
        match msg.strip_prefix("error ") {
            Some(err) => SupervisorReport::Failed(err.to_string()),
            None => SupervisorReport::Silent,
        }
    }
}

/// Start `exe MODE CONFIG`, a supervisor that daemonizes (forks, the first process exits),
/// with stdout and stderr to `log` and the write end of a ready pipe as [`READY_FD`]. Returns
/// what the daemon reported before closing its end (`ok CHILD SUPERVISOR` or `error ...`).
pub fn spawn_supervisor(exe: &Path, mode: &str, config: &Path, log: &Path) -> std::io::Result<SupervisorReport> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let log = std::fs::File::create(log)?;
    let ready_w_raw = ready_w.as_raw_fd();
    let mut cmd = std::process::Command::new(exe);
    cmd.arg(mode)
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env_remove("RUST_LOG");
    // SAFETY: only async-signal-safe calls (dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(ready_w_raw, READY_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(ready_w);
    // The first process only forks the daemon and exits; reap it so it is no zombie.
    let _ = child.wait();
    let mut msg = String::new();
    std::fs::File::from(ready_r).read_to_string(&mut msg)?;
    Ok(SupervisorReport::parse(msg.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_reports() {
        assert_eq!(SupervisorReport::parse("ok 12 34"), SupervisorReport::Ready { child_pid: 12, supervisor_pid: 34 });
        assert_eq!(SupervisorReport::parse("error no such file"), SupervisorReport::Failed("no such file".into()));
        assert_eq!(SupervisorReport::parse("ok x"), SupervisorReport::Silent);
        assert_eq!(SupervisorReport::parse(""), SupervisorReport::Silent);
    }

    #[test]
    fn liveness_and_wait() {
        let mut child = std::process::Command::new("sleep").arg("0.2").spawn().expect("sleep");
        let pid = child.id() as i32;
        let st = process_start_time(pid).expect("start time");
        assert!(process_alive(pid, st));
        assert!(!process_alive(pid, st + 1), "a different start time is a different process");
        assert!(!wait_pid_exit(pid, st, Some(Duration::from_millis(20))));
        let waiter = std::thread::spawn(move || wait_pid_exit(pid, st, Some(Duration::from_secs(5))));
        child.wait().expect("wait");
        assert!(waiter.join().expect("join"));
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").expect("w1");
        write_atomic(&p, b"two").expect("w2");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1, "no temp file left");
    }
}
