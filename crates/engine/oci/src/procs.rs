//! The processes of a container as `top` shows them: its cgroup says which processes are
//! inside, `/proc` says what each one is.

use std::time::Duration;

/// One process, as read from `/proc/PID`.
#[derive(Clone, Debug, PartialEq)]
pub struct Process {
    /// Pid on the host.
    pub pid: i32,
    /// Pid in the process's own (innermost) pid namespace.
    pub ns_pid: i32,
    /// Host pid of the parent.
    pub ppid: i32,
    /// Effective uid.
    pub uid: u32,
    /// Controlling terminal (`pts/0`), if any.
    pub tty: Option<String>,
    /// User plus system CPU time.
    pub cpu_time: Duration,
    /// Time since the process started.
    pub elapsed: Duration,
    /// The command line, or `[name]` for a process without one (a zombie).
    pub command: String,
}

/// The processes in `cgroup` (as in the runtime spec), by host pid; those that exit while being
/// read are left out.
pub fn in_cgroup(cgroup: &str) -> Vec<Process> {
    let mut pids = crate::cgroups::pids(cgroup);
    pids.sort_unstable();
    pids.into_iter().filter_map(read).collect()
}

/// Read one process, or `None` if it is gone.
pub fn read(pid: i32) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
    let uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
    parse(pid, &stat, &status, &cmdline, Duration::from_secs_f64(uptime), clock_ticks())
}

/// Clock ticks per second, the unit of `/proc/PID/stat` times.
fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

fn parse(pid: i32, stat: &str, status: &str, cmdline: &[u8], uptime: Duration, ticks: u64) -> Option<Process> {
    // The name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    // Fields 3.. of proc(5): state, ppid, pgrp, session, tty_nr, ... utime (14), stime (15),
    // ... starttime (22).
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ticks_to = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / ticks.max(1));
    let status_field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(str::split_whitespace);
    let args: Vec<String> =
        cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    Some(Process {
        pid,
        ns_pid: status_field("NSpid:").and_then(|f| f.last()?.parse().ok()).unwrap_or(pid),
        ppid: field(4)? as i32,
        uid: status_field("Uid:").and_then(|mut f| f.nth(1)?.parse().ok())?,
        tty: tty_name(field(7)?),
        cpu_time: ticks_to(field(14)? + field(15)?),
        elapsed: uptime.saturating_sub(ticks_to(field(22)?)),
        command: if args.is_empty() { format!("[{name}]") } else { args.join(" ") },
    })
}

/// The name of a terminal from its device number (`tty_nr` in `/proc/PID/stat`).
fn tty_name(dev: u64) -> Option<String> {
    let major = (dev >> 8) & 0xfff;
    let minor = (dev & 0xff) | ((dev >> 12) & 0xfff00);
    match major {
        0 => None,
        136..=143 => Some(format!("pts/{}", (major - 136) * 256 + minor)),
        4 if minor < 64 => Some(format!("tty{minor}")),
        4 => Some(format!("ttyS{}", minor - 64)),
        _ => Some(format!("{major}:{minor}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        // A name with a space and a parenthesis, on pts/3, 150 + 50 ticks of CPU, started at
        // tick 1000 (10 s after boot at 100 ticks/s).
        let stat = "42 (my (odd) name) S 7 42 42 34819 42 0 0 0 0 0 150 50 0 0 20 0 1 0 1000 0 0";
        let status = "Name:\tx\nUid:\t0\t1000\t1000\t1000\nNSpid:\t42\t3\n";
        let p = parse(42, stat, status, b"sleep\x00100\x00", Duration::from_secs(25), 100).expect("parsed");
        assert_eq!(
            p,
            Process {
                pid: 42,
                ns_pid: 3,
                ppid: 7,
                uid: 1000,
                tty: Some("pts/3".into()),
                cpu_time: Duration::from_secs(2),
                elapsed: Duration::from_secs(15),
                command: "sleep 100".into(),
            }
        );
        let zombie = parse(9, "9 (gone) Z 1 9 9 0 9 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0", "Uid:\t0\t0\t0\t0\n", b"", Duration::from_secs(1), 100)
            .expect("parsed");
        assert_eq!((zombie.command.as_str(), zombie.tty, zombie.ns_pid), ("[gone]", None, 9));
        assert_eq!(parse(1, "garbage", "", b"", Duration::ZERO, 100), None);
    }

    #[test]
    fn terminal_names() {
        assert_eq!(tty_name(0), None);
        assert_eq!(tty_name(136 << 8), Some("pts/0".into()));
        assert_eq!(tty_name((137 << 8) | 5), Some("pts/261".into()));
        assert_eq!(tty_name((4 << 8) | 1), Some("tty1".into()));
        assert_eq!(tty_name((4 << 8) | 65), Some("ttyS1".into()));
    }

    #[test]
    fn reads_this_process() {
        let me = read(std::process::id() as i32).expect("our own /proc entry");
        assert_eq!(me.pid, std::process::id() as i32);
        assert_eq!(me.uid, nix::unistd::geteuid().as_raw());
        assert!(!me.command.is_empty());
    }
}
