//! The per-container supervisor (strata's equivalent of containerd's runc shim).
//!
//! [`spawn`] starts `strata __shim CONFIG` and returns once the container is *created*. The
//! shim daemonizes (forks, `setsid`), makes itself a child subreaper, runs
//! `<runtime> create` with pipes as the container's stdout and stderr, and reports the init
//! pid on a ready pipe. It then copies the pipes into the log file, serves published ports,
//! reaps the container's init when it exits, and records the exit status in `exit.json`
//! (written atomically). Its attach socket (see [`crate::attach`]) takes input for the
//! container and streams its output to attached clients. Because the shim is not a child of
//! the CLI or agent that created it, the container outlives them; whoever comes next finds its
//! state on disk.

use std::fs::File;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::attach::{self, Followers, Tee};
use crate::runtime::{last_error_line, Launch, OciRuntime};
use strata_supervise::logs::{self, LogWriter, Stream};
use strata_supervise::ports::{self, PortForward};
use strata_supervise::{daemon, exit, util};

/// The argument that makes the `strata` binary run [`main`].
pub const SHIM_ARG: &str = "__shim";

/// Everything the shim needs, written by the driver next to the bundle.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShimConfig {
    pub id: String,
    pub bundle: PathBuf,
    pub runtime_binary: PathBuf,
    pub runtime_name: String,
    pub runtime_root: PathBuf,
    /// Where the runtime's own JSON log goes (its errors for `create`).
    pub runtime_log: PathBuf,
    pub pid_file: PathBuf,
    pub log_path: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: usize,
    pub exit_file: PathBuf,
    /// Published ports, proxied to the container while it runs.
    pub ports: Vec<PortForward>,
    /// cgroup path (as in the spec) used to tell an OOM kill from another SIGKILL.
    pub cgroups_path: String,
    /// How the runtime is asked to start the container.
    #[serde(default)]
    pub launch: Launch,
    /// Keep the container's stdin open, fed through the attach socket.
    #[serde(default)]
    pub stdin: bool,
    /// The container has a terminal; the runtime sends its master over `console_socket`.
    #[serde(default)]
    pub tty: bool,
    /// Where the runtime sends the terminal master (short path: unix socket names are limited).
    #[serde(default)]
    pub console_socket: PathBuf,
    /// Where clients send input and terminal resizes and follow the output (see
    /// [`crate::attach`]); always served.
    #[serde(default)]
    pub attach_socket: PathBuf,
    /// Where the shim records its own pid as soon as it runs, and the container's init once it
    /// is created ([`util::SupervisorState`]), so that a driver that died before hearing the report can
    /// still find both. Empty: not written.
    #[serde(default)]
    pub state_file: PathBuf,
}

fn write_state(config: &ShimConfig, init_pid: Option<i32>) {
    if !config.state_file.as_os_str().is_empty() {
        util::write_supervisor_state(&config.state_file, init_pid);
    }
}

/// How the container's init process ended (one record type for every supervisor).
pub use strata_supervise::exit::ExitRecord;

/// The created container, as reported by the shim.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub init_pid: i32,
    pub shim_pid: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("cannot start container supervisor: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("{0}")]
    Create(String),
    #[error("container supervisor exited without reporting (see {0})")]
    Silent(PathBuf),
}

/// Start the supervisor for a prepared bundle; returns when the container is created.
/// `exe` is the `strata` binary; `config` the shim config file; `shim_log` receives the
/// supervisor's own diagnostics.
pub fn spawn(exe: &Path, config: &Path, shim_log: &Path) -> Result<Started, ShimError> {
    match util::spawn_supervisor(exe, SHIM_ARG, config, shim_log).map_err(ShimError::Spawn)? {
        util::SupervisorReport::Ready { child_pid, supervisor_pid } => Ok(Started { init_pid: child_pid, shim_pid: supervisor_pid }),
        util::SupervisorReport::Failed(err) => Err(ShimError::Create(err)),
        util::SupervisorReport::Silent => Err(ShimError::Silent(shim_log.to_path_buf())),
    }
}

/// The supervisor process. Never returns.
pub fn main(config_path: &Path) -> ! {
    daemon::main(NAME, config_path, true, |config: ShimConfig| {
        write_state(&config, None);
        run(&config)
    })
}

/// How the shim signs its diagnostics.
const NAME: &str = "strata shim";

fn run(config: &ShimConfig) -> Result<(), String> {
    // Bind published ports before creating anything so a busy port fails the create.
    let listeners = ports::bind_ports(&config.ports).map_err(|e| e.to_string())?;

    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let runtime = OciRuntime::new(&config.runtime_binary.to_string_lossy(), &config.runtime_root)
        .map_err(|e| e.to_string())?;
    let console = if config.tty {
        let _ = std::fs::remove_file(&config.console_socket);
        Some(UnixListener::bind(&config.console_socket).map_err(|e| format!("console socket {}: {e}", config.console_socket.display()))?)
    } else {
        None
    };
    let attach = if !config.attach_socket.as_os_str().is_empty() {
        let _ = std::fs::remove_file(&config.attach_socket);
        Some(UnixListener::bind(&config.attach_socket).map_err(|e| format!("attach socket {}: {e}", config.attach_socket.display()))?)
    } else {
        None
    };
    let mut create = runtime.create_command(
        &config.id,
        &config.bundle,
        &config.pid_file,
        &config.runtime_log,
        config.launch,
        console.as_ref().map(|_| config.console_socket.as_path()),
    );
    // Interactive without a terminal: the container reads a pipe the attach socket feeds.
    let stdin_writer = if config.stdin && !config.tty {
        let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        create.stdin(Stdio::from(in_r));
        Some(File::from(in_w))
    } else {
        create.stdin(Stdio::null());
        None
    };
    // The container writes to the pipes through descriptors opened read-write: a pipe with a
    // reader never raises SIGPIPE, so if this supervisor dies the container's writes block once
    // the pipe is full instead of killing it (the driver then stops it and records why).
    drop((out_w, err_w));
    create.stdout(Stdio::from(reopen_read_write(&out_r)?)).stderr(Stdio::from(reopen_read_write(&err_r)?));
    let mut child = create.spawn().map_err(|e| format!("cannot run {}: {e}", config.runtime_name))?;
    drop(create); // close our copies of the pipe ends the runtime holds
    let runtime_failed = || {
        let log = std::fs::read_to_string(&config.runtime_log).unwrap_or_default();
        let errors: String = log.lines().filter(|l| l.contains("\"error\"")).collect::<Vec<_>>().join("\n");
        last_error_line(if errors.is_empty() { &log } else { &errors })
    };
    let read_pid = || -> Option<i32> { std::fs::read_to_string(&config.pid_file).ok()?.trim().parse().ok() };
    let runtime_pid = child.id() as i32;
    let init_pid: i32 = if config.launch.foreground() {
        // The runtime stays in the foreground: the container is running once the pid file
        // exists (written atomically); if the runtime exits first without one, it failed.
        loop {
            if let Some(pid) = read_pid() {
                break pid;
            }
            match child.try_wait() {
                Ok(Some(_)) => return Err(read_pid().map_or_else(runtime_failed, |_| "container exited at once".into())),
                Ok(None) => std::thread::sleep(Duration::from_micros(200)),
                Err(e) => return Err(format!("waiting for {} run: {e}", config.runtime_name)),
            }
        }
    } else {
        let status = child.wait().map_err(|e| format!("waiting for {} create: {e}", config.runtime_name))?;
        if !status.success() {
            return Err(runtime_failed());
        }
        read_pid().ok_or_else(|| "the runtime wrote no pid file".to_string())?
    };

    // The runtime connected and sent the terminal master before `create`/`run -d` returned.
    let master = match &console {
        Some(listener) => {
            let (conn, _) = listener.accept().map_err(|e| format!("console socket: {e}"))?;
            Some(receive_fd(&conn)?)
        }
        None => None,
    };

    // Space for the exit record is taken now: if the container fills the disk, its exit status
    // is still recorded.
    let reserve = exit::reserve(&config.exit_file);
    let writer = LogWriter::open(&config.log_path, config.log_max_size, config.log_max_files)
        .map_err(|e| format!("opening log {}: {e}", config.log_path.display()))?;
    let writer = Arc::new(Mutex::new(writer));
    let followers = Arc::new(Followers::default());
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut sources: Vec<(File, Stream, bool)> = vec![(File::from(out_r), Stream::Stdout, false), (File::from(err_r), Stream::Stderr, false)];
    let mut input: Option<File> = stdin_writer;
    if let Some(m) = &master {
        let read_side = m.try_clone().map_err(|e| format!("terminal: {e}"))?;
        sources.push((read_side, Stream::Stdout, true));
        input = Some(m.try_clone().map_err(|e| format!("terminal: {e}"))?);
    }
    let expected = sources.len();
    for (file, stream, immediate) in sources {
        let writer = writer.clone();
        let done = done_tx.clone();
        let tee = Tee { inner: file, stream, followers: followers.clone() };
        std::thread::spawn(move || {
            let _ = logs::copy_stream(tee, stream, writer, immediate);
            let _ = done.send(());
        });
    }
    drop(done_tx);
    if let Some(listener) = attach {
        attach::serve(listener, input, master, config.tty, followers.clone());
    }
    ports::serve_ports(listeners);

    write_state(config, Some(init_pid));
    daemon::ready(init_pid);

    // In the foreground launch the runtime is init's parent and reports its exit status as its
    // own (128 + signal for a killed process) after deleting the container.
    let foreground = config.launch.foreground();
    let status = reap_until(if foreground { runtime_pid } else { init_pid });
    // Give the log copiers a moment to drain what init wrote last; processes that escaped
    // the pid namespace could hold the pipes open forever, so do not wait longer.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    for _ in 0..expected {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let (code, signal) = match status {
        Some(nix::sys::wait::WaitStatus::Exited(_, code)) if foreground && code > 128 => (code, Some(code - 128)),
        Some(nix::sys::wait::WaitStatus::Exited(_, code)) => (code, None),
        Some(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => (128 + sig as i32, Some(sig as i32)),
        _ => (255, None),
    };
    let record = ExitRecord {
        oom_killed: signal == Some(libc::SIGKILL) && crate::cgroups::oom_killed(&config.cgroups_path),
        runtime_deleted: config.launch == Launch::RunForeground,
        ..ExitRecord::now(code, signal)
    };
    let written = exit::write(&config.exit_file, reserve.as_ref(), &record).map_err(|e| format!("writing exit record: {e}"));
    // Attached clients see the end of the output once the exit status can be read.
    followers.close();
    written
}

/// A second descriptor for the pipe `end`, open for reading and writing (Linux lets a pipe be
/// reopened through `/proc/self/fd` like a FIFO).
fn reopen_read_write(end: &std::os::fd::OwnedFd) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", end.as_raw_fd()))
        .map_err(|e| format!("reopening the output pipe: {e}"))
}

/// Receive one file descriptor (SCM_RIGHTS) on a unix stream, as runc's `--console-socket`
/// sends the terminal master.
fn receive_fd(conn: &UnixStream) -> Result<File, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(conn.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .map_err(|e| format!("receiving the terminal: {e}"))?;
    for c in msg.cmsgs().map_err(|e| format!("receiving the terminal: {e}"))? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { File::from_raw_fd(*fd) });
            }
        }
    }
    Err("the runtime sent no terminal".into())
}

/// Reap children (the runtime's leftovers and re-parented orphans) until `init` exits.
fn reap_until(init: i32) -> Option<nix::sys::wait::WaitStatus> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(None, None) {
            Ok(s @ (WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _))) if pid.as_raw() == init => {
                return Some(s)
            }
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

/// Read a container's exit record, if it has exited.
pub fn read_exit(path: &Path) -> Option<ExitRecord> {
    exit::read(path)
}
