//! The per-VM supervisor (`strata __vmlog CONFIG`), the VM counterpart of the container shim.
//!
//! [`spawn`] starts it and returns once QEMU answers on its QMP socket. The supervisor forks
//! and `setsid`s (so it is nobody's child and outlives the CLI), launches QEMU as its own child
//! in the VM directory, and waits for QEMU to be ready (QMP greeting) or to fail (then QEMU's
//! last diagnostic line is reported and nothing keeps running). It is then the one client of
//! QEMU's serial socket: every byte the guest writes goes into a rotated CRI-format log and to
//! every client attached to [`CONSOLE_SOCKET`](crate::qemu::CONSOLE_SOCKET); what clients write
//! goes to the guest. When QEMU exits (the serial socket closes) it reaps QEMU and records the
//! exit status in the exit file, written atomically.
//!
//! A guest kernel that panics ends QEMU as a power-off would (it reboots under `-no-reboot`, or
//! pvpanic's default action shuts QEMU down), so the supervisor watches for it ([`PanicWatch`]):
//! the console's `Kernel panic - not syncing` line, and QMP's `GUEST_PANICKED` on a monitor of
//! its own ([`EVENTS_SOCKET`]) for guests with the pvpanic driver. The exit record then carries
//! `guest_panic`. A kernel that stays halted after its panic (`panic=0`: the console's
//! `---[ end Kernel panic` line, or a pvpanic report) is dead for good: QEMU is told to quit.
//!
//! It is one thread around `poll(2)`, so its memory is a few MiB whatever the guest does.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_supervise::logs::{LogWriter, Stream, MAX_LINE};
use strata_supervise::{daemon, exit, ports};

use crate::qemu::{CONSOLE_SOCKET, EVENTS_SOCKET, QMP_SOCKET, SERIAL_SOCKET};
use crate::qmp::Qmp;

/// The argument that makes the `strata` binary run [`main`].
pub const SUPERVISOR_ARG: &str = "__vmlog";
/// A console line without a newline is logged (as a partial record) after this much quiet,
/// so prompts show up in the log.
const PARTIAL_FLUSH: Duration = Duration::from_millis(300);

/// Everything the supervisor needs, written by the driver into the VM directory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// The VM directory: QEMU's working directory, where the sockets live.
    pub dir: PathBuf,
    pub qemu: PathBuf,
    pub args: Vec<String>,
    /// QEMU's own stdout/stderr.
    pub qemu_log: PathBuf,
    pub console_log: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: usize,
    pub exit_file: PathBuf,
    /// How long QEMU may take to answer on QMP.
    pub ready_timeout: Duration,
    /// Host ports proxied to the guest's address (bridge networking; user-mode networking
    /// forwards inside QEMU instead).
    #[serde(default)]
    pub ports: Vec<ports::PortForward>,
    /// Where the supervisor records its pid at once and QEMU's once QEMU is ready
    /// ([`strata_supervise::util::SupervisorState`]); empty: not written.
    #[serde(default)]
    pub state_file: PathBuf,
    /// Take over a running QEMU whose supervisor died, instead of launching one: reconnect to
    /// its serial socket (QEMU listens again once the old supervisor's connection is gone),
    /// serve the console and the ports again, and record its end. QEMU is not this
    /// supervisor's child, so how it ended is not known: the exit is recorded with
    /// `supervisor_lost`.
    #[serde(default)]
    pub adopt: Option<Adopt>,
}

/// The running QEMU a replacement supervisor takes over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopt {
    pub qemu_pid: i32,
    pub qemu_start: u64,
}

/// How QEMU ended (the record every supervisor writes).
pub use strata_supervise::exit::ExitRecord as Exit;

/// The running VM, as reported by the supervisor.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub qemu_pid: i32,
    pub supervisor_pid: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot start the VM supervisor: {0}")]
    Spawn(#[source] std::io::Error),
    /// QEMU refused to start; the message is QEMU's.
    #[error("{0}")]
    Qemu(String),
    #[error("the VM supervisor exited without reporting (see {0})")]
    Silent(PathBuf),
}

/// Start the supervisor for `config` (a [`Config`] file); returns when QEMU is ready.
/// `exe` is the `strata` binary; `log` receives the supervisor's own diagnostics.
pub fn spawn(exe: &Path, config: &Path, log: &Path) -> Result<Started, SpawnError> {
    use strata_supervise::util::SupervisorReport;
    match strata_supervise::util::spawn_supervisor(exe, SUPERVISOR_ARG, config, log).map_err(SpawnError::Spawn)? {
        SupervisorReport::Ready { child_pid, supervisor_pid } => Ok(Started { qemu_pid: child_pid, supervisor_pid }),
        SupervisorReport::Failed(err) => Err(SpawnError::Qemu(err)),
        SupervisorReport::Silent => Err(SpawnError::Silent(log.to_path_buf())),
    }
}

/// Read an exit file written by the supervisor.
pub fn read_exit(path: &Path) -> Option<Exit> {
    exit::read(path)
}

/// The supervisor process. Never returns.
pub fn main(config_path: &Path) -> ! {
    daemon::main(NAME, config_path, false, |config: Config| {
        std::env::set_current_dir(&config.dir).map_err(|e| format!("entering {}: {e}", config.dir.display()))?;
        if !config.state_file.as_os_str().is_empty() {
            strata_supervise::util::write_supervisor_state(&config.state_file, None);
        }
        run(&config)
    })
}

/// How the supervisor signs its diagnostics.
const NAME: &str = "strata vm supervisor";

fn run(config: &Config) -> Result<(), String> {
    // Ports first: a port in use fails the start cleanly, before QEMU exists.
    let listeners = ports::bind_ports(&config.ports).map_err(|e| e.to_string())?;
    if let Some(adopt) = config.adopt {
        return run_adopted(config, adopt, listeners);
    }
    let qemu_log =
        File::create(&config.qemu_log).map_err(|e| format!("creating {}: {e}", config.qemu_log.display()))?;
    let qemu_log2 = qemu_log.try_clone().map_err(|e| e.to_string())?;
    for s in [QMP_SOCKET, SERIAL_SOCKET, CONSOLE_SOCKET, EVENTS_SOCKET] {
        let _ = std::fs::remove_file(s);
    }
    let mut child = Command::new(&config.qemu)
        .args(&config.args)
        .current_dir(&config.dir)
        .stdin(Stdio::null())
        .stdout(qemu_log)
        .stderr(qemu_log2)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", config.qemu.display()))?;
    let qemu_pid = child.id() as i32;
    let serial = match wait_ready(config, &mut child) {
        Ok(s) => s,
        Err(msg) => {
            let _ = child.kill();
            let _ = child.wait();
            for s in [QMP_SOCKET, SERIAL_SOCKET, EVENTS_SOCKET] {
                let _ = std::fs::remove_file(s);
            }
            return Err(msg);
        }
    };
    // Space for the exit record is taken now: if the disk fills, how QEMU ended is still recorded.
    let reserve = exit::reserve(&config.exit_file);
    let panic = serve_console(config, serial, qemu_pid, listeners)?;
    let status = child.wait().map_err(|e| format!("waiting for QEMU: {e}"))?;
    use std::os::unix::process::ExitStatusExt;
    let (code, signal) = match (status.code(), status.signal()) {
        (Some(c), _) => (c, None),
        (None, Some(s)) => (128 + s, Some(s)),
        _ => (255, None),
    };
    finish(config, reserve, Exit { guest_panic: panic.report(), ..Exit::now(code, signal) })
}

/// Supervise a QEMU that another (dead) supervisor launched.
fn run_adopted(config: &Config, adopt: Adopt, listeners: Vec<ports::Bound>) -> Result<(), String> {
    let Adopt { qemu_pid, qemu_start } = adopt;
    if !crate::process_alive(qemu_pid, qemu_start) {
        return Err("QEMU is no longer running".into());
    }
    let reserve = exit::reserve(&config.exit_file);
    // QEMU accepts the next client once it has seen the old one's connection close.
    let deadline = Instant::now() + Duration::from_secs(10);
    let serial = loop {
        match UnixStream::connect(SERIAL_SOCKET) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => return Err(format!("reconnecting to the serial console: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let _ = std::fs::remove_file(CONSOLE_SOCKET);
    let panic = serve_console(config, serial, qemu_pid, listeners)?;
    crate::wait_pid_exit(qemu_pid, qemu_start, None);
    // Not QEMU's parent: its exit status is unknown (a panic seen since the adoption is not).
    finish(config, reserve, Exit { supervisor_lost: true, guest_panic: panic.report(), ..Exit::now(255, None) })
}

/// From the moment QEMU is ready until its console closes: the console socket, the console
/// log, the state file and the ready report, published ports, then the relay. Returns what it
/// saw of a guest panic.
fn serve_console(config: &Config, serial: UnixStream, qemu_pid: i32, listeners: Vec<ports::Bound>) -> Result<PanicWatch, String> {
    let listener = UnixListener::bind(CONSOLE_SOCKET).map_err(|e| format!("binding {CONSOLE_SOCKET}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let writer = LogWriter::open(&config.console_log, config.log_max_size, config.log_max_files)
        .map_err(|e| format!("opening {}: {e}", config.console_log.display()))?;
    if !config.state_file.as_os_str().is_empty() {
        strata_supervise::util::write_supervisor_state(&config.state_file, Some(qemu_pid));
    }
    // The event monitor is optional: QEMUs started before it existed have none.
    let events = if Path::new(EVENTS_SOCKET).exists() {
        match UnixStream::connect(EVENTS_SOCKET).map_err(crate::qmp::QmpError::from).and_then(|s| Qmp::handshake(s, Duration::from_secs(5))) {
            Ok(q) => Some(q.into_event_stream()),
            Err(e) => {
                strata_supervise::note!("{NAME}: QMP event monitor: {e}");
                None
            }
        }
    } else {
        None
    };
    daemon::ready(qemu_pid);
    ports::serve_ports(listeners);
    let mut panic = PanicWatch::default();
    if let Err(e) = relay(serial, &listener, writer, events, &mut panic, qemu_pid) {
        strata_supervise::note!("{NAME}: console: {e}");
    }
    drop(listener);
    let _ = std::fs::remove_file(CONSOLE_SOCKET);
    Ok(panic)
}

/// QEMU has ended: remove its sockets and record the exit.
fn finish(config: &Config, reserve: Option<PathBuf>, record: Exit) -> Result<(), String> {
    for s in [QMP_SOCKET, SERIAL_SOCKET, EVENTS_SOCKET] {
        let _ = std::fs::remove_file(s);
    }
    exit::write(&config.exit_file, reserve.as_ref(), &record).map_err(|e| format!("writing exit record: {e}"))
}

/// Wait until QEMU greets on QMP (the machine is built: kernel loaded, devices up), then
/// connect to its serial socket. If QEMU exits first, its last diagnostic is the error.
fn wait_ready(config: &Config, child: &mut Child) -> Result<UnixStream, String> {
    let deadline = Instant::now() + config.ready_timeout;
    let failed = || {
        let text = std::fs::read_to_string(&config.qemu_log).unwrap_or_default();
        crate::qemu::last_line(&text)
    };
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return Err(failed());
        }
        if Path::new(QMP_SOCKET).exists() {
            if let Ok(stream) = UnixStream::connect(QMP_SOCKET) {
                match Qmp::handshake(stream, Duration::from_secs(2)) {
                    Ok(_) => break,
                    Err(_) => {
                        if let Ok(Some(_)) = child.try_wait() {
                            return Err(failed());
                        }
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("QEMU did not answer on QMP within {:?}", config.ready_timeout));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    UnixStream::connect(SERIAL_SOCKET).map_err(|e| format!("connecting to the serial console: {e}"))
}

/// The kernel's first panic line (`panic()` prints it before anything else).
const PANIC_HEADER: &str = "Kernel panic - not syncing";
/// What `panic()` prints last when the kernel stays halted (no `panic=N` reboot).
const PANIC_END: &str = "---[ end Kernel panic - not syncing";
/// The longest panic report kept (it travels in the exit record and up to the API).
const PANIC_REPORT_MAX: usize = 512;

/// What the supervisor saw of a guest kernel panic: the console's panic line, and the pvpanic
/// device's report (QMP `GUEST_PANICKED`).
#[derive(Debug, Default)]
pub struct PanicWatch {
    console: Option<String>,
    reported: Option<String>,
    halted: bool,
}

impl PanicWatch {
    /// One complete console line. True (once) when the guest's kernel is now known to stay
    /// halted: QEMU should be told to quit.
    pub fn console_line(&mut self, line: &[u8]) -> bool {
        let text = String::from_utf8_lossy(line);
        if let Some(i) = text.find(PANIC_END) {
            if self.console.is_none() {
                let said = text[i..].trim_start_matches("---[ end ").trim_end().trim_end_matches("]---").trim_end();
                self.console = Some(clip(said));
            }
            return self.halt();
        }
        if self.console.is_none() {
            if let Some(i) = text.find(PANIC_HEADER) {
                self.console = Some(clip(text[i..].trim_end()));
            }
        }
        false
    }

    /// One message of the QMP event monitor. True (once) on `GUEST_PANICKED`: the guest stopped
    /// for good (QEMU's panic action may keep it, paused).
    pub fn qmp_message(&mut self, message: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(message) else { return false };
        if v["event"] != "GUEST_PANICKED" {
            return false;
        }
        let action = v["data"]["action"].as_str().unwrap_or("unknown");
        self.reported.get_or_insert_with(|| format!("the guest reported a kernel panic through its pvpanic device (QEMU's panic action: {action})"));
        self.halt()
    }

    fn halt(&mut self) -> bool {
        !std::mem::replace(&mut self.halted, true)
    }

    /// For the exit record: the console's panic line (it says why), else the pvpanic report.
    pub fn report(&self) -> Option<String> {
        self.console.clone().or_else(|| self.reported.clone())
    }
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(PANIC_REPORT_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// The guest's kernel panicked and stays halted: QEMU is told to end (SIGTERM: QEMU exits
/// cleanly), as libvirt's `on_crash=destroy`.
fn quit_panicked(qemu_pid: i32) {
    strata_supervise::note!("{NAME}: the guest kernel panicked and stays halted; stopping QEMU");
    // SAFETY: kill(2) with a pid this supervisor serves (its console is still open, so the
    // process has not been reaped and the pid not reused) and a valid signal.
    unsafe {
        libc::kill(qemu_pid, libc::SIGTERM);
    }
}

/// Copy the serial console into the log and to attached clients, and clients' input to the
/// guest, until QEMU closes the serial socket; watch the console and QMP's events (`events`:
/// the event monitor and the bytes already read from it) for a guest panic.
fn relay(
    mut serial: UnixStream,
    listener: &UnixListener,
    mut log: LogWriter,
    mut events: Option<(UnixStream, Vec<u8>)>,
    panic: &mut PanicWatch,
    qemu_pid: i32,
) -> std::io::Result<()> {
    let mut clients: Vec<UnixStream> = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    // The current console line for the panic watch: unlike `line`, not cut by partial flushes.
    let mut scan: Vec<u8> = Vec::new();
    let mut last_byte = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    if let Some((_, pending)) = events.as_mut() {
        let had = std::mem::take(pending);
        if event_lines(pending, &had, panic) {
            quit_panicked(qemu_pid);
        }
    }
    loop {
        let mut fds = vec![
            libc::pollfd { fd: serial.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        fds.extend(clients.iter().map(|c| libc::pollfd { fd: c.as_raw_fd(), events: libc::POLLIN, revents: 0 }));
        if let Some((e, _)) = &events {
            fds.push(libc::pollfd { fd: e.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        }
        let timeout = if line.is_empty() { -1 } else { PARTIAL_FLUSH.as_millis() as i32 };
        // SAFETY: fds is a valid array of pollfd of the given length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if !line.is_empty() && last_byte.elapsed() >= PARTIAL_FLUSH {
            log.write_record(Stream::Stdout, true, &line)?;
            line.clear();
        }
        // The event monitor (last), then clients, while `fds[2..]` still lines up with `clients`.
        if events.is_some() && fds.last().is_some_and(|f| f.revents != 0) {
            let n = match events.as_mut().map(|(e, _)| e.read(&mut buf)) {
                Some(Ok(n)) => n,
                Some(Err(e)) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => continue,
                _ => 0,
            };
            if n == 0 {
                // QEMU is going away (or the monitor broke): the console says the rest.
                events = None;
            } else if let Some((_, pending)) = events.as_mut() {
                if event_lines(pending, &buf[..n], panic) {
                    quit_panicked(qemu_pid);
                }
            }
        }
        let mut dead = vec![false; clients.len()];
        for (i, pfd) in fds[2..2 + clients.len()].iter().enumerate() {
            if pfd.revents == 0 {
                continue;
            }
            match clients[i].read(&mut buf) {
                Ok(0) | Err(_) => dead[i] = true,
                Ok(n) => serial.write_all(&buf[..n])?,
            }
        }
        if fds[0].revents != 0 {
            let n = loop {
                match serial.read(&mut buf) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => break 0,
                }
            };
            if n == 0 {
                if !line.is_empty() {
                    log.write_record(Stream::Stdout, true, &line)?;
                }
                return Ok(());
            }
            last_byte = Instant::now();
            for (i, c) in clients.iter_mut().enumerate() {
                if !dead[i] && c.write_all(&buf[..n]).is_err() {
                    dead[i] = true;
                }
            }
            let mut halted = false;
            for &b in &buf[..n] {
                match b {
                    b'\n' => {
                        log.write_record(Stream::Stdout, false, &line)?;
                        line.clear();
                        halted |= panic.console_line(&scan);
                        scan.clear();
                    }
                    b'\r' => {}
                    _ => {
                        line.push(b);
                        if line.len() >= MAX_LINE {
                            log.write_record(Stream::Stdout, true, &line)?;
                            line.clear();
                        }
                        if scan.len() < MAX_LINE {
                            scan.push(b);
                        }
                    }
                }
            }
            if halted {
                quit_panicked(qemu_pid);
            }
        }
        let gone: Vec<usize> = dead.iter().enumerate().filter(|(_, d)| **d).map(|(i, _)| i).collect();
        for i in gone.into_iter().rev() {
            clients.remove(i);
        }
        if fds[1].revents != 0 {
            while let Ok((c, _)) = listener.accept() {
                let _ = c.set_nonblocking(false);
                // A client that stops reading is dropped rather than stalling the guest.
                let _ = c.set_write_timeout(Some(Duration::from_secs(2)));
                clients.push(c);
            }
        }
    }
}

/// Add `bytes` of the event monitor to `pending` and look at each complete message (QMP sends
/// one JSON object per line). True when one reported a panic.
fn event_lines(pending: &mut Vec<u8>, bytes: &[u8], panic: &mut PanicWatch) -> bool {
    pending.extend_from_slice(bytes);
    let mut halted = false;
    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
        let message: Vec<u8> = pending.drain(..=i).collect();
        halted |= panic.qmp_message(&message);
    }
    // A monitor that never ends a line is not QMP: do not keep growing.
    if pending.len() > 1 << 20 {
        pending.clear();
    }
    halted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_console_panic_line_is_the_report_and_its_end_marker_halts() {
        let mut w = PanicWatch::default();
        assert!(!w.console_line(b"[    0.000000] Linux version 6.1.0-57-amd64"));
        assert!(!w.console_line(b"echo Kernel panic is a phrase too, without the rest"));
        assert_eq!(w.report(), None);
        // panic=-1: the header, then a reboot (QEMU exits under -no-reboot); nothing to stop.
        assert!(!w.console_line(b"[    3.672818] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"));
        assert_eq!(w.report().as_deref(), Some("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"));
        // A second panic line does not replace the first.
        assert!(!w.console_line(b"Kernel panic - not syncing: Attempted to kill init!"));
        // panic=0: the end marker; the kernel stays halted: stop QEMU, once.
        assert!(w.console_line(b"[    3.700000] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0) ]---"));
        assert!(!w.console_line(b"---[ end Kernel panic - not syncing: again ]---"));
        assert_eq!(w.report().as_deref(), Some("Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)"));
        // Only the end marker seen (the console was attached late): it is the report.
        let mut w = PanicWatch::default();
        assert!(w.console_line(b"---[ end Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100 ]---"));
        assert_eq!(w.report().as_deref(), Some("Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"));
        // Long lines are clipped on a character boundary.
        let mut w = PanicWatch::default();
        let long = format!("Kernel panic - not syncing: {}", "é".repeat(400));
        w.console_line(long.as_bytes());
        let r = w.report().unwrap_or_default();
        assert!(r.len() <= PANIC_REPORT_MAX && r.starts_with(PANIC_HEADER), "{r}");
    }

    #[test]
    fn a_pvpanic_event_is_a_panic_whatever_the_console_says() {
        let mut w = PanicWatch::default();
        let mut pending = Vec::new();
        // Split across reads, with other events around it.
        assert!(!event_lines(&mut pending, b"{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n{\"event\": \"GUEST_PAN", &mut w));
        assert!(event_lines(&mut pending, b"ICKED\", \"data\": {\"action\": \"poweroff\"}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 3}}\r\n", &mut w));
        assert_eq!(w.report().as_deref(), Some("the guest reported a kernel panic through its pvpanic device (QEMU's panic action: poweroff)"));
        assert!(pending.is_empty());
        // The console's line, when there is one, says more.
        assert!(!w.console_line(b"Kernel panic - not syncing: sysrq triggered crash"));
        assert_eq!(w.report().as_deref(), Some("Kernel panic - not syncing: sysrq triggered crash"));
        assert!(!event_lines(&mut pending, b"{\"event\": \"GUEST_PANICKED\", \"data\": {\"action\": \"pause\"}}\n", &mut w), "stopped once");
        assert!(!PanicWatch::default().qmp_message(b"not json"));
    }
}
