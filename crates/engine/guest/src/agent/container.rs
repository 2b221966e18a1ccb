//! Containers inside the guest: each main process starts in new mount, PID, UTS and IPC
//! namespaces, rooted at its rootfs (bind-mounted, moved onto `/` and `chroot`ed into, as
//! `switch_root` does: `pivot_root` does not work from an initramfs), with `/proc` of its own,
//! the guest's `/dev`, a read-only `/sys` and the spec's bind mounts. An exec joins those
//! namespaces and that root. Processes are started with a bare `fork` + `execve` (no
//! `std::process::Command`: it would `waitpid` a child whose exec failed, racing the reaper);
//! everything the child needs is prepared before the fork, and a failure in the child comes
//! back as (step, errno) over a close-on-exec pipe.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use super::reaper::{Exit, Reaper};
use super::{note, Outbox};
use crate::protocol::{ContainerSpec, ExecRequest, ExecResult, GuestMessage, Resources, Stream, MAX_EXEC_OUTPUT};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where the guest's cgroup v2 hierarchy is mounted (by init, with the cpu, memory and pids
/// controllers enabled for its children).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The cgroup v2 root when one is mounted at [`CGROUP_ROOT`] (in the VM; not on a hybrid host).
fn cgroup_root() -> Option<PathBuf> {
    let path = cstr(CGROUP_ROOT).ok()?;
    // SAFETY: statfs(2) into a zeroed local struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a valid pointer.
    let ok = unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0;
    (ok && st.f_type == libc::CGROUP2_SUPER_MAGIC).then(|| PathBuf::from(CGROUP_ROOT))
}

/// Make container `id`'s cgroup with `r`'s limits; its `cgroup.procs`.
fn make_cgroup(root: &Path, id: &str, r: &Resources) -> Result<PathBuf, String> {
    let dir = root.join(id);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cgroup {}: {e}", dir.display())),
    }
    let write = |file: &str, value: String| std::fs::write(dir.join(file), &value).map_err(|e| format!("cgroup {file} = {value}: {e}"));
    if let Some(m) = r.memory_max_bytes {
        write("memory.max", m.to_string())?;
    }
    if let Some(q) = r.cpu_quota_us {
        write("cpu.max", format!("{q} {}", r.cpu_period_us.unwrap_or(100_000)))?;
    }
    if let Some(s) = r.cpu_shares {
        // runc's conversion of cgroup v1 shares (2..262144) to a v2 weight (1..10000).
        let s = s.clamp(2, 262_144);
        write("cpu.weight", (1 + ((s - 2) * 9999) / 262_142).to_string())?;
    }
    if let Some(p) = r.pids_max {
        write("pids.max", p.to_string())?;
    }
    Ok(dir.join("cgroup.procs"))
}

/// Whether the OOM killer killed something in the cgroup of `procs` (`memory.events`).
fn oom_killed(procs: &Path) -> bool {
    let events = procs.with_file_name("memory.events");
    std::fs::read_to_string(events)
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse::<u64>().ok()))
        .is_some_and(|n| n > 0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Created,
    Running { pid: i32 },
    Exited(Exit),
}

struct Entry {
    spec: ContainerSpec,
    /// Its cgroup's `cgroup.procs` (made at start when the guest has cgroup v2).
    cgroup: Mutex<Option<PathBuf>>,
    state: Mutex<State>,
    cond: Condvar,
}

impl Entry {
    fn state(&self) -> State {
        *self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until the container is no longer running (or `timeout` runs out).
    fn wait_exited(&self, timeout: Duration) -> bool {
        let guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .cond
            .wait_timeout_while(guard, timeout, |s| matches!(s, State::Running { .. }))
            .unwrap_or_else(|e| e.into_inner());
        !matches!(*guard, State::Running { .. })
    }
}

struct Inner {
    table: Mutex<HashMap<String, Arc<Entry>>>,
    reaper: Arc<Reaper>,
    tx: Outbox,
    cgroups: Option<PathBuf>,
}

/// The agent's containers (cheap to clone: shared).
#[derive(Clone)]
pub(crate) struct Containers(Arc<Inner>);

impl Containers {
    pub fn new(reaper: Arc<Reaper>, tx: Outbox) -> Containers {
        Containers(Arc::new(Inner { table: Mutex::new(HashMap::new()), reaper, tx, cgroups: cgroup_root() }))
    }

    fn get(&self, id: &str) -> Result<Arc<Entry>, String> {
        self.0.table.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned().ok_or_else(|| format!("no container {id:?}"))
    }

    pub fn create(&self, id: &str, spec: ContainerSpec) -> Result<(), String> {
        if id.is_empty() || id.len() > 128 || id.contains('/') {
            return Err(format!("invalid container id {id:?}"));
        }
        if spec.argv.is_empty() || spec.argv[0].is_empty() {
            return Err("no command to run".into());
        }
        if !spec.resources.is_empty() && self.0.cgroups.is_none() {
            return Err(format!("resource limits need cgroup v2 at {CGROUP_ROOT}, which this guest does not have"));
        }
        let rootfs = Path::new(&spec.rootfs);
        if !rootfs.is_absolute() || !rootfs.is_dir() {
            return Err(format!("rootfs {:?} is not a directory", spec.rootfs));
        }
        for m in &spec.mounts {
            container_path(rootfs, &m.destination)?;
            if !Path::new(&m.source).exists() {
                return Err(format!("mount source {:?} does not exist", m.source));
            }
        }
        let mut table = self.0.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.contains_key(id) {
            return Err(format!("container {id:?} already exists"));
        }
        // Mount points: made now, in the parent, so the child only mounts.
        for dir in ["proc", "dev", "sys"] {
            mkdir_p(&rootfs.join(dir))?;
        }
        for m in &spec.mounts {
            let target = container_path(rootfs, &m.destination)?;
            if Path::new(&m.source).is_dir() {
                mkdir_p(&target)?;
            } else if !target.exists() {
                if let Some(parent) = target.parent() {
                    mkdir_p(parent)?;
                }
                std::fs::File::create(&target).map_err(|e| format!("mount point {}: {e}", target.display()))?;
            }
        }
        table.insert(id.to_string(), Arc::new(Entry { spec, cgroup: Mutex::new(None), state: Mutex::new(State::Created), cond: Condvar::new() }));
        Ok(())
    }

    /// Start a created container's main process: its pid and the host-facing end of its input
    /// (the write end of its stdin pipe, or its terminal's master), if it has one.
    pub fn start(&self, id: &str) -> Result<(i32, MainInput), String> {
        let entry = self.get(id)?;
        let mut state = entry.state.lock().unwrap_or_else(|e| e.into_inner());
        if *state != State::Created {
            return Err(format!("container {id:?} was already started"));
        }
        let mut launch = Launch::new_container(&entry.spec)?;
        let cgroup = match &self.0.cgroups {
            Some(root) => Some(make_cgroup(root, id, &entry.spec.resources)?),
            None => None,
        };
        launch.cgroup_procs = cgroup.as_ref().map(|p| cstr(p.as_os_str().as_encoded_bytes())).transpose()?;
        *entry.cgroup.lock().unwrap_or_else(|e| e.into_inner()) = cgroup.clone();
        let stdio = match (entry.spec.tty, entry.spec.stdin) {
            (true, _) => Stdio::Tty { rows: 24, cols: 80 },
            (false, true) => Stdio::Pipes { stdin: true },
            (false, false) => Stdio::Capture,
        };
        let child = launch.spawn(&self.0.reaper, None, stdio)?;
        *state = State::Running { pid: child.pid };
        drop(state);
        let pid = child.pid;
        let dup = |f: &OwnedFd| f.try_clone().map_err(|e| format!("dup: {e}"));
        let (input, out, err) = match &child.master {
            Some(m) => match (dup(m), dup(m)) {
                (Ok(i), Ok(o)) => (Some(i), Some(o), None),
                (Err(e), _) | (_, Err(e)) => {
                    // SAFETY: kill(2) of our own child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return Err(e);
                }
            },
            None => (child.stdin, child.stdout, child.stderr),
        };
        let main_input = MainInput { input, master: child.master };
        let (inner, id2, entry2) = (self.0.clone(), id.to_string(), entry.clone());
        let monitor = std::thread::Builder::new().name("monitor".into()).spawn(move || {
            let readers = [forward(out, &id2, Stream::Stdout, &inner.tx), forward(err, &id2, Stream::Stderr, &inner.tx)];
            let exit = inner.reaper.wait(pid, None).unwrap_or(Exit::Signal(libc::SIGKILL));
            // Every byte of output before the exit (the PID namespace is gone, so are its writers).
            for r in readers.into_iter().flatten() {
                let _ = r.join();
            }
            *entry2.state.lock().unwrap_or_else(|e| e.into_inner()) = State::Exited(exit);
            entry2.cond.notify_all();
            let (code, signal) = match exit {
                Exit::Code(c) => (Some(c), None),
                Exit::Signal(s) => (None, Some(s)),
            };
            let oom_killed = cgroup.as_deref().is_some_and(oom_killed);
            let _ = inner.tx.send(GuestMessage::Exited { id: id2, code, signal, oom_killed });
        });
        if let Err(e) = monitor {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err(format!("monitor thread: {e}"));
        }
        Ok((pid, main_input))
    }

    pub fn signal(&self, id: &str, signal: i32) -> Result<(), String> {
        let entry = self.get(id)?;
        match entry.state() {
            State::Created => Err(format!("container {id:?} is not started")),
            State::Exited(_) => Ok(()),
            State::Running { pid } => {
                // SAFETY: kill(2); a process that is already gone is fine (ESRCH).
                if unsafe { libc::kill(pid, signal) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        return Err(format!("signal {signal}: {e}"));
                    }
                }
                Ok(())
            }
        }
    }

    pub fn remove(&self, id: &str) -> Result<(), String> {
        let entry = self.get(id)?;
        if let State::Running { pid } = entry.state() {
            // SAFETY: kill(2).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            if !entry.wait_exited(Duration::from_secs(10)) {
                return Err(format!("container {id:?} did not die"));
            }
        }
        self.0.table.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        if let Some(procs) = entry.cgroup.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if let Some(dir) = procs.parent() {
                // Empty once its PID namespace is gone (its execs die with the container's init).
                let _ = std::fs::remove_dir(dir);
            }
        }
        Ok(())
    }

    pub fn kill_all(&self) {
        let entries: Vec<_> = self.0.table.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        for e in &entries {
            if let State::Running { pid } = e.state() {
                // SAFETY: kill(2).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        for e in &entries {
            e.wait_exited(Duration::from_secs(5));
        }
    }

    /// Start `req` in the namespaces and root of its running container, with `stdio`.
    pub fn exec_child(&self, req: &ExecRequest, stdio: Stdio) -> Result<Child, String> {
        let entry = self.get(&req.id)?;
        let State::Running { pid } = entry.state() else {
            return Err(format!("container {:?} is not running", req.id));
        };
        self.spawn_exec(&entry, pid, req, stdio)
    }

    fn spawn_exec(&self, entry: &Entry, pid: i32, req: &ExecRequest, stdio: Stdio) -> Result<Child, String> {
        if req.argv.is_empty() || req.argv[0].is_empty() {
            return Err("no command to run".into());
        }
        let mut launch = Launch::exec(&entry.spec, pid, req)?;
        let cgroup = entry.cgroup.lock().unwrap_or_else(|e| e.into_inner()).clone();
        launch.cgroup_procs = cgroup.map(|p| cstr(p.into_os_string().into_encoded_bytes())).transpose()?;
        let ns = JoinFds::open(pid)?;
        launch.spawn(&self.0.reaper, Some(&ns), stdio)
    }

    pub fn reaper(&self) -> &Reaper {
        &self.0.reaper
    }

    pub fn exec(&self, req: &ExecRequest) -> Result<ExecResult, String> {
        let entry = self.get(&req.id)?;
        let State::Running { pid } = entry.state() else {
            return Err(format!("container {:?} is not running", req.id));
        };
        let child = self.spawn_exec(&entry, pid, req, Stdio::Capture)?;
        // Each reader with a copy of its pipe's read end, to see whether it has output left.
        let collect = |f: Option<OwnedFd>| {
            let fd = f?;
            let watched = fd.try_clone().ok()?;
            std::thread::Builder::new().name("exec-out".into()).spawn(move || read_capped(fd)).ok().map(|h| (watched, h))
        };
        let (out, err) = (collect(child.stdout), collect(child.stderr));
        let timeout = req.timeout_ms.map(Duration::from_millis);
        let (exit, timed_out) = match self.0.reaper.wait(child.pid, timeout) {
            Some(exit) => (exit, false),
            None => {
                // SAFETY: kill(2) of our own child.
                unsafe { libc::kill(child.pid, libc::SIGKILL) };
                (self.0.reaper.wait(child.pid, None).unwrap_or(Exit::Signal(libc::SIGKILL)), true)
            }
        };
        // A background process of the command may hold its output open: not waited for long.
        wait_for_output(&[&out, &err].into_iter().flatten().map(|(fd, h)| (fd, h)).collect::<Vec<_>>());
        // A reader still running (its output held open) is left to end with it; its output is lost.
        let take = |r: Option<(OwnedFd, std::thread::JoinHandle<Vec<u8>>)>| r.filter(|(_, h)| h.is_finished()).and_then(|(_, h)| h.join().ok()).unwrap_or_default();
        Ok(ExecResult {
            stdout: take(out),
            stderr: take(err),
            exit_code: exit.as_code(),
            timed_out,
        })
    }
}

/// `dest` (absolute, no `..`) under `rootfs`.
fn container_path(rootfs: &Path, dest: &str) -> Result<PathBuf, String> {
    let p = Path::new(dest);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("mount destination {dest:?} must be an absolute path without '..'"));
    }
    Ok(rootfs.join(p.strip_prefix("/").unwrap_or(p)))
}

fn mkdir_p(p: &Path) -> Result<(), String> {
    std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

fn cstr(s: impl Into<Vec<u8>>) -> Result<CString, String> {
    CString::new(s).map_err(|_| "a string with a NUL byte".to_string())
}

/// How long a command's output is waited for after the command ended, while a background
/// process of it holds the output open and writes nothing.
pub(crate) const OUTPUT_GRACE: Duration = Duration::from_secs(1);
/// The most a reader that has output left to read (or its end) is waited for: a loaded guest
/// may not run the reader's thread for a while.
const OUTPUT_WAIT_MAX: Duration = Duration::from_secs(30);

/// Wait, after a command ended, until the readers of its output (each with a copy of its pipe's
/// read end) have finished. Past [`OUTPUT_GRACE`] only while a running reader's pipe still holds
/// bytes or its end (every writer closed) that the reader has not got to yet, as on a loaded
/// guest whose reader threads wait their turn; a pipe empty and still open is held by a
/// background process of the command, which is not waited for.
pub(crate) fn wait_for_output<T>(readers: &[(&OwnedFd, &std::thread::JoinHandle<T>)]) {
    let start = std::time::Instant::now();
    loop {
        let running: Vec<&OwnedFd> = readers.iter().filter(|(_, h)| !h.is_finished()).map(|(fd, _)| *fd).collect();
        if running.is_empty() {
            return;
        }
        let unread = running.iter().any(|fd| {
            let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll(2) of one valid descriptor, without waiting.
            let n = unsafe { libc::poll(&mut p, 1, 0) };
            n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP) != 0
        });
        let waited = start.elapsed();
        if waited >= OUTPUT_WAIT_MAX || (!unread && waited >= OUTPUT_GRACE) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_capped(fd: OwnedFd) -> Vec<u8> {
    let mut f = std::fs::File::from(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => {
                let room = MAX_EXEC_OUTPUT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return out,
        }
    }
}

/// Forward a container's output pipe to the host, chunk by chunk.
pub(crate) fn forward(fd: Option<OwnedFd>, id: &str, stream: Stream, tx: &Outbox) -> Option<std::thread::JoinHandle<()>> {
    let fd = fd?;
    let (id, tx) = (id.to_string(), tx.clone());
    std::thread::Builder::new()
        .name("output".into())
        .spawn(move || {
            let mut f = std::fs::File::from(fd);
            let mut buf = vec![0u8; 32768];
            loop {
                match f.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        if tx.send(GuestMessage::Output { id: id.clone(), stream, data: buf[..n].to_vec() }).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // A terminal's master once its last slave closed: the end of output.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => return,
                    Err(e) => {
                        note!("reading the output of {id}: {e}");
                        return;
                    }
                }
            }
        })
        .map_err(|e| note!("output thread: {e}"))
        .ok()
}

/// The namespaces and root of a running container, opened before an exec forks.
struct JoinFds {
    pid: OwnedFd,
    ipc: OwnedFd,
    uts: OwnedFd,
    mnt: OwnedFd,
    root: OwnedFd,
}

impl JoinFds {
    fn open(pid: i32) -> Result<JoinFds, String> {
        let open = |rel: &str, flags: i32| -> Result<OwnedFd, String> {
            let path = cstr(format!("/proc/{pid}/{rel}"))?;
            // SAFETY: open(2) of a NUL-terminated path; the fd is owned below.
            let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
            if fd < 0 {
                return Err(format!("open /proc/{pid}/{rel}: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: a fresh fd nobody else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Ok(JoinFds {
            pid: open("ns/pid", libc::O_RDONLY)?,
            ipc: open("ns/ipc", libc::O_RDONLY)?,
            uts: open("ns/uts", libc::O_RDONLY)?,
            mnt: open("ns/mnt", libc::O_RDONLY)?,
            root: open("root", libc::O_RDONLY | libc::O_DIRECTORY)?,
        })
    }
}

/// A container's fresh namespaces and mounts (for its main process).
struct NewRoot {
    rootfs: CString,
    proc_dir: CString,
    dev_dir: CString,
    sys_dir: CString,
    /// Device nodes of the guest bound into the container's own `/dev` (source, target).
    dev_nodes: Vec<(CString, CString)>,
    dev_shm: CString,
    /// The guest's `/dev/pts` (exec terminals) and its mount point in the container's `/dev`.
    dev_pts: (CString, CString),
    /// (link target, link path) in the container's `/dev`.
    dev_links: Vec<(CString, CString)>,
    /// (source, target, read-only, source is a directory)
    mounts: Vec<(CString, CString, bool, bool)>,
    hostname: Option<CString>,
}

/// Everything a child needs, prepared before the fork.
struct Launch {
    new_root: Option<NewRoot>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    /// The program paths to try in order (the `PATH` search, done in the child after chroot).
    candidates: Vec<CString>,
    cwd: CString,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    /// The `cgroup.procs` the child moves itself into first.
    cgroup_procs: Option<CString>,
}

/// The input side of a container's main process started with stdin or a terminal.
pub(crate) struct MainInput {
    /// Where its input goes: its stdin pipe, or (a dup of) its terminal's master.
    pub input: Option<OwnedFd>,
    /// Its terminal's master (resizes).
    pub master: Option<OwnedFd>,
}

/// A started process and the host-facing ends of its stdio.
pub(crate) struct Child {
    pub pid: i32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The write end of its stdin ([`Stdio::Stream`] with `stdin`).
    pub stdin: Option<OwnedFd>,
    /// The master of its terminal (with a terminal: input, output and resizes).
    pub master: Option<OwnedFd>,
}

/// How a started process's stdio is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stdio {
    /// Input `/dev/null`, output and error output to pipes.
    Capture,
    /// As `Capture`, with a pipe as input when `stdin`.
    Pipes { stdin: bool },
    /// A new terminal of this size (rows, columns) as input, output and controlling terminal.
    Tty { rows: u16, cols: u16 },
}

/// Steps a child reports a failure at.
const STEPS: [&str; 13] = [
    "unshare", "make / private", "bind the rootfs", "mount /proc", "bind /dev", "mount /sys", "bind mount", "enter the rootfs",
    "sethostname", "join the namespaces", "set user and groups", "exec", "join the cgroup",
];

impl Launch {
    fn common(spec: &ContainerSpec, argv: &[String], env: &[String]) -> Result<Launch, String> {
        let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or(DEFAULT_PATH);
        let prog = &argv[0];
        let candidates = if prog.contains('/') {
            vec![cstr(prog.as_str())?]
        } else {
            path.split(':').filter(|d| !d.is_empty()).map(|d| cstr(format!("{}/{prog}", d.trim_end_matches('/')))).collect::<Result<_, _>>()?
        };
        let mut groups = vec![spec.gid];
        groups.extend(spec.additional_gids.iter().copied());
        groups.dedup();
        Ok(Launch {
            new_root: None,
            argv: argv.iter().map(|a| cstr(a.as_str())).collect::<Result<_, _>>()?,
            envp: env.iter().map(|a| cstr(a.as_str())).collect::<Result<_, _>>()?,
            candidates,
            cwd: cstr(spec.cwd.clone().filter(|c| !c.is_empty()).unwrap_or_else(|| "/".into()))?,
            uid: spec.uid,
            gid: spec.gid,
            groups,
            cgroup_procs: None,
        })
    }

    fn new_container(spec: &ContainerSpec) -> Result<Launch, String> {
        let mut l = Launch::common(spec, &spec.argv, &spec.env)?;
        let rootfs = Path::new(&spec.rootfs);
        let c = |p: PathBuf| cstr(p.into_os_string().into_encoded_bytes());
        l.new_root = Some(NewRoot {
            rootfs: cstr(spec.rootfs.as_str())?,
            proc_dir: c(rootfs.join("proc"))?,
            dev_dir: c(rootfs.join("dev"))?,
            sys_dir: c(rootfs.join("sys"))?,
            dev_nodes: ["null", "zero", "full", "random", "urandom", "tty"]
                .iter()
                .map(|n| Ok((cstr(format!("/dev/{n}"))?, c(rootfs.join("dev").join(n))?)))
                .collect::<Result<_, String>>()?,
            dev_shm: c(rootfs.join("dev/shm"))?,
            dev_pts: (cstr("/dev/pts")?, c(rootfs.join("dev/pts"))?),
            dev_links: [("/proc/self/fd", "fd"), ("/proc/self/fd/0", "stdin"), ("/proc/self/fd/1", "stdout"), ("/proc/self/fd/2", "stderr"), ("pts/ptmx", "ptmx")]
                .iter()
                .map(|(t, n)| Ok((cstr(*t)?, c(rootfs.join("dev").join(n))?)))
                .collect::<Result<_, String>>()?,
            mounts: spec
                .mounts
                .iter()
                .map(|m| Ok((cstr(m.source.as_str())?, c(container_path(rootfs, &m.destination)?)?, m.readonly, Path::new(&m.source).is_dir())))
                .collect::<Result<_, String>>()?,
            hostname: spec.hostname.as_deref().map(cstr).transpose()?,
        });
        Ok(l)
    }

    fn exec(spec: &ContainerSpec, _pid: i32, req: &ExecRequest) -> Result<Launch, String> {
        Launch::common(spec, &req.argv, req.env.as_deref().unwrap_or(&spec.env))
    }

    /// Fork and exec on a thread of its own: the new PID namespace (or the container's, for
    /// `join`) is entered by that thread, for its children only.
    fn spawn(&self, reaper: &Reaper, join: Option<&JoinFds>, stdio: Stdio) -> Result<Child, String> {
        std::thread::scope(|s| {
            s.spawn(|| {
                let pidns = match join {
                    // SAFETY: setns(2) on this thread only, with an open namespace fd.
                    Some(j) => unsafe { libc::setns(j.pid.as_raw_fd(), libc::CLONE_NEWPID) },
                    // SAFETY: unshare(2) of the PID namespace for this thread's children.
                    None => unsafe { libc::unshare(libc::CLONE_NEWPID) },
                };
                if pidns != 0 {
                    return Err(format!("entering a PID namespace: {}", std::io::Error::last_os_error()));
                }
                self.fork(reaper, join, stdio)
            })
            .join()
            .unwrap_or_else(|_| Err("the spawning thread panicked".into()))
        })
    }

    fn fork(&self, reaper: &Reaper, join: Option<&JoinFds>, stdio: Stdio) -> Result<Child, String> {
        let (status_r, status_w) = pipe()?;
        let devnull = c"/dev/null";
        // SAFETY: open(2) of a constant path.
        let null = unsafe { libc::open(devnull.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if null < 0 {
            return Err(format!("open /dev/null: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: a fresh fd.
        let null = unsafe { OwnedFd::from_raw_fd(null) };
        // (the child's 0, 1, 2; what the parent keeps: stdin, stdout, stderr, master)
        #[allow(clippy::type_complexity)]
        let (child_fds, mut kept): ([OwnedFd; 3], (Option<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>, Option<OwnedFd>)) = match stdio {
            Stdio::Capture | Stdio::Pipes { .. } => {
                let (out_r, out_w) = pipe()?;
                let (err_r, err_w) = pipe()?;
                let (in_child, in_kept) = match stdio {
                    Stdio::Pipes { stdin: true } => {
                        let (r, w) = pipe()?;
                        (r, Some(w))
                    }
                    _ => (null.try_clone().map_err(|e| format!("dup: {e}"))?, None),
                };
                ([in_child, out_w, err_w], (in_kept, Some(out_r), Some(err_r), None))
            }
            Stdio::Tty { rows, cols } => {
                let (master, slave) = openpty(rows, cols)?;
                let dup = |f: &OwnedFd| f.try_clone().map_err(|e| format!("dup: {e}"));
                ([dup(&slave)?, dup(&slave)?, slave], (None, None, None, Some(master)))
            }
        };
        let ctty = matches!(stdio, Stdio::Tty { .. });
        let argv: Vec<*const libc::c_char> = self.argv.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        let envp: Vec<*const libc::c_char> = self.envp.iter().map(|a| a.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
        // SAFETY: fork(2); the child only makes system calls on data prepared above and then
        // execs or _exits (no allocation, no locks).
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            let [a, b, c] = &child_fds;
            self.child([a.as_raw_fd(), b.as_raw_fd(), c.as_raw_fd()], ctty, status_w.as_raw_fd(), join, &argv, &envp)
        }
        drop((child_fds, status_w, null));
        let mut report = [0u8; 8];
        let mut f = std::fs::File::from(status_r);
        let n = read_full(&mut f, &mut report);
        if n == 0 {
            return Ok(Child { pid, stdin: kept.0.take(), stdout: kept.1.take(), stderr: kept.2.take(), master: kept.3.take() });
        }
        reaper.wait(pid, Some(Duration::from_secs(10)));
        let step = i32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        let what = STEPS.get(step as usize).copied().unwrap_or("start");
        let err = std::io::Error::from_raw_os_error(errno);
        if what == "exec" && errno == libc::ENOENT {
            return Err(format!("executable {:?} not found in the container", self.argv[0].to_string_lossy()));
        }
        Err(format!("{what}: {err}"))
    }

    /// The child's side: never returns.
    #[allow(clippy::too_many_arguments)]
    fn child(&self, stdio: [RawFd; 3], ctty: bool, status: RawFd, join: Option<&JoinFds>, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> ! {
        // SAFETY: runs in the forked child only: system calls on memory prepared before the fork,
        // then exec or _exit.
        unsafe {
            let fail = |step: usize| -> ! {
                let errno = *libc::__errno_location();
                let mut report = [0u8; 8];
                report[..4].copy_from_slice(&(step as i32).to_ne_bytes());
                report[4..].copy_from_slice(&errno.to_ne_bytes());
                libc::write(status, report.as_ptr().cast(), 8);
                libc::_exit(127)
            };
            let null_ptr = std::ptr::null::<libc::c_char>();
            // A terminal is the controlling one of a session of its own (as a login's).
            if ctty && libc::setsid() < 0 {
                fail(0);
            }
            if libc::dup2(stdio[0], 0) < 0 || libc::dup2(stdio[1], 1) < 0 || libc::dup2(stdio[2], 2) < 0 {
                fail(0);
            }
            if ctty && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                fail(0);
            }
            // Into the container's cgroup before anything else runs (its limits count from here).
            if let Some(p) = &self.cgroup_procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, c"0".as_ptr().cast(), 1) != 1 {
                    fail(12);
                }
                libc::close(fd);
            }
            if let Some(r) = &self.new_root {
                if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) != 0 {
                    fail(0);
                }
                if libc::mount(null_ptr, c"/".as_ptr(), null_ptr, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()) != 0 {
                    fail(1);
                }
                if libc::mount(r.rootfs.as_ptr(), r.rootfs.as_ptr(), null_ptr, libc::MS_BIND | libc::MS_REC, std::ptr::null()) != 0 {
                    fail(2);
                }
                let nosuid = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                if libc::mount(c"proc".as_ptr(), r.proc_dir.as_ptr(), c"proc".as_ptr(), nosuid, std::ptr::null()) != 0 {
                    fail(3);
                }
                // A /dev of its own (as runc's): a tmpfs with the usual nodes bound from the guest's,
                // /dev/shm and the fd links; mounts below /dev (termination-log) land in it.
                if libc::mount(c"tmpfs".as_ptr(), r.dev_dir.as_ptr(), c"tmpfs".as_ptr(), libc::MS_NOSUID, c"mode=755,size=65536k".as_ptr().cast()) != 0 {
                    fail(4);
                }
                for (src, target) in &r.dev_nodes {
                    let fd = libc::open(target.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o666);
                    if fd < 0 {
                        fail(4);
                    }
                    libc::close(fd);
                    if libc::mount(src.as_ptr(), target.as_ptr(), null_ptr, libc::MS_BIND, std::ptr::null()) != 0 {
                        fail(4);
                    }
                }
                if libc::mkdir(r.dev_shm.as_ptr(), 0o1777) != 0
                    || libc::mount(c"shm".as_ptr(), r.dev_shm.as_ptr(), c"tmpfs".as_ptr(), nosuid, c"mode=1777,size=65536k".as_ptr().cast()) != 0
                {
                    fail(4);
                }
                for (target, link) in &r.dev_links {
                    libc::symlink(target.as_ptr(), link.as_ptr());
                }
                // Best effort: a guest without devpts runs containers, only without terminals.
                if libc::mkdir(r.dev_pts.1.as_ptr(), 0o755) == 0 {
                    libc::mount(r.dev_pts.0.as_ptr(), r.dev_pts.1.as_ptr(), null_ptr, libc::MS_BIND, std::ptr::null());
                }
                if libc::mount(c"sysfs".as_ptr(), r.sys_dir.as_ptr(), c"sysfs".as_ptr(), nosuid | libc::MS_RDONLY, std::ptr::null()) != 0 {
                    fail(5);
                }
                for (src, target, ro, is_dir) in &r.mounts {
                    // The mount point may be on a tmpfs made above (/dev): make it there.
                    if *is_dir {
                        libc::mkdir(target.as_ptr(), 0o755);
                    } else {
                        let fd = libc::open(target.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
                        if fd >= 0 {
                            libc::close(fd);
                        }
                    }
                    if libc::mount(src.as_ptr(), target.as_ptr(), null_ptr, libc::MS_BIND | libc::MS_REC, std::ptr::null()) != 0 {
                        fail(6);
                    }
                    if *ro && libc::mount(null_ptr, target.as_ptr(), null_ptr, libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY, std::ptr::null()) != 0 {
                        fail(6);
                    }
                }
                if libc::chdir(r.rootfs.as_ptr()) != 0
                    || libc::mount(c".".as_ptr(), c"/".as_ptr(), null_ptr, libc::MS_MOVE, std::ptr::null()) != 0
                    || libc::chroot(c".".as_ptr()) != 0
                    || libc::chdir(c"/".as_ptr()) != 0
                {
                    fail(7);
                }
                if let Some(h) = &r.hostname {
                    if libc::sethostname(h.as_ptr(), h.as_bytes().len()) != 0 {
                        fail(8);
                    }
                }
            }
            if let Some(j) = join {
                if libc::setns(j.ipc.as_raw_fd(), libc::CLONE_NEWIPC) != 0
                    || libc::setns(j.uts.as_raw_fd(), libc::CLONE_NEWUTS) != 0
                    || libc::setns(j.mnt.as_raw_fd(), libc::CLONE_NEWNS) != 0
                    || libc::fchdir(j.root.as_raw_fd()) != 0
                    || libc::chroot(c".".as_ptr()) != 0
                {
                    fail(9);
                }
            }
            if libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0 || libc::setgid(self.gid) != 0 || libc::setuid(self.uid) != 0 {
                fail(10);
            }
            if libc::chdir(self.cwd.as_ptr()) != 0 {
                fail(7);
            }
            // Rust ignores SIGPIPE in the agent; an ignored signal stays ignored across exec.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            // The PATH search (as execvp, but with the container's PATH and in its root).
            let mut last = libc::ENOENT;
            for c in &self.candidates {
                libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
                let e = *libc::__errno_location();
                if e != libc::ENOENT && e != libc::ENOTDIR {
                    last = e;
                }
            }
            *libc::__errno_location() = last;
            fail(11)
        }
    }
}

/// A new terminal (master, slave) of `rows` x `cols`, both close-on-exec.
fn openpty(rows: u16, cols: u16) -> Result<(OwnedFd, OwnedFd), String> {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty(3) into two local ints, no name buffer, no termios, a valid winsize.
    if unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) } != 0 {
        return Err(format!("openpty: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: two fresh fds owned from here.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: fcntl(2) on an open fd.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((master, slave))
}

/// Set the size of the terminal whose master is `master`.
pub(crate) fn resize(master: &OwnedFd, rows: u16, cols: u16) -> Result<(), String> {
    let size = libc::winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ with a pointer to a valid winsize.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } != 0 {
        return Err(format!("resize: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) into a two-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: two fresh fds.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Instant;

    /// A reader that has not got to its output yet is waited for past the grace (a loaded guest
    /// may not run it for a while: seen as an exec's output lost under CI load); a pipe held
    /// open and empty by a background process is waited for only the grace.
    #[test]
    fn output_is_waited_for_while_unread_and_a_background_holder_only_the_grace() {
        // The writer wrote and closed; the reader starts late, past the grace.
        let (r, w) = pipe().expect("pipe");
        std::fs::File::from(w).write_all(b"sleep\n").expect("write");
        let watched = r.try_clone().expect("dup");
        let late = std::thread::spawn(move || {
            std::thread::sleep(OUTPUT_GRACE + Duration::from_millis(500));
            read_capped(r)
        });
        let start = Instant::now();
        wait_for_output(&[(&watched, &late)]);
        assert!(late.is_finished(), "returned after {:?} with the output unread", start.elapsed());
        assert_eq!(late.join().expect("reader"), b"sleep\n");

        // A background process holds the pipe open and writes nothing: the grace, then on.
        let (r, w) = pipe().expect("pipe");
        let watched = r.try_clone().expect("dup");
        let held = std::thread::spawn(move || read_capped(r));
        let start = Instant::now();
        wait_for_output(&[(&watched, &held)]);
        let waited = start.elapsed();
        assert!(waited >= OUTPUT_GRACE && waited < OUTPUT_GRACE * 3, "waited {waited:?}");
        assert!(!held.is_finished());
        drop(w);
        assert_eq!(held.join().expect("reader"), b"");

        // Everything read at once: no wait.
        let (r, w) = pipe().expect("pipe");
        drop(w);
        let watched = r.try_clone().expect("dup");
        let quick = std::thread::spawn(move || read_capped(r));
        let start = Instant::now();
        wait_for_output(&[(&watched, &quick)]);
        assert!(start.elapsed() < OUTPUT_GRACE, "waited {:?}", start.elapsed());
    }
}
