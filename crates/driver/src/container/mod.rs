//! The container driver: OCI images run by an OCI runtime, each under its own supervisor.
//!
//! On-disk layout under the strata root:
//! ```text
//! containers/<id>/record.json    what was asked for and what was set up (see `Record`)
//! containers/<id>/bundle/        config.json + rootfs/ (the overlay mount point)
//! containers/<id>/upper, work    the overlay's writable layer
//! containers/<id>/ctr.log        output, CRI log format; exit.json once it has exited
//! names/<name>                   the id owning a name (created with O_EXCL: names are unique)
//! run/<runtime>/                 the OCI runtime's own state
//! ```
//! Everything the driver knows is in these files, so any process (a later CLI, a restarted
//! agent) that opens the same root sees the same containers.

pub(crate) mod config;
mod events;
mod exec;
mod pod;
pub(crate) mod rootfs;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use strata_image::ImageStore;
use strata_oci::network::{self, BridgeNetwork};
use strata_supervise::ports::{PortForward, Protocol};
use strata_oci::attach::AttachClient;
use strata_oci::shim::{self, ShimConfig};
use strata_oci::spec::{self, Limits, NetNs, SpecInput};
use strata_oci::runtime::Launch;
use strata_oci::{cgroups, procs, OciRuntime};
use strata_supervise::{logs, util};

use crate::registry::{now, random_id, IntentInfo, Op, Registry};
use crate::{
    workload_log, AttachInput, Attachment, Capabilities, CreateRequest, Driver, Error, ExecRequest, ExecResult, ExitStatus,
    LogOptions, LogRecord, NetworkMode, OutputChunk, ProcessInfo, Stats, Status, WorkloadState,
};

pub use config::{resolve_user, ImageDefaults};

/// The supervisor's own record of its pid and the container's (see `ShimConfig::state_file`).
const SHIM_STATE: &str = "shim.state";
/// The command name of runc's init until it executes the container's program (`runc create`
/// done, `start` not yet).
const RUNTIME_INIT_COMM: &[u8] = b"runc:[2:INIT]";

/// What the driver persists per container.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    name: String,
    request: CreateRequest,
    image_id: String,
    args: Vec<String>,
    created_at: String,
    started_at: Option<String>,
    runtime: String,
    cgroups_path: String,
    stop_signal: i32,
    netns: Option<PathBuf>,
    ip: Option<IpAddr>,
    init_pid: Option<i32>,
    init_start: Option<u64>,
    shim_pid: Option<i32>,
    shim_start: Option<u64>,
    paused: bool,
    /// Set for a container created in a pod sandbox (see `pod.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<pod::PodPart>,
}

/// The container driver over one strata root. A clone is another handle on the same root
/// (and the same events feed).
#[derive(Clone)]
pub struct ContainerDriver {
    registry: Registry,
    /// Pod sandboxes (see `pod.rs`).
    sandboxes: Registry,
    /// Subscribers of the pod events feed (see `events.rs`).
    events: events::SharedHub,
    images: Arc<ImageStore>,
    runtime: OciRuntime,
    exe: PathBuf,
}

impl ContainerDriver {
    /// [`crate::PodRuntime::health`]: the record directories open and the OCI runtime and the
    /// supervisor are executable files. Nothing is read or recovered (unlike `Driver::list`).
    pub fn runtime_health(&self) -> Result<(), Error> {
        for dir in [&self.registry.dir, &self.sandboxes.dir] {
            std::fs::read_dir(dir).map_err(Error::io(format!("reading {}", dir.display())))?;
        }
        for bin in [self.runtime.binary(), self.exe.as_path()] {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(bin).map_err(Error::io(format!("reading {}", bin.display())))?;
            if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                return Err(Error::FailedPrecondition(format!("{} is not an executable file", bin.display())));
            }
        }
        Ok(())
    }

    /// Open the driver over `root`, using the OCI runtime `runtime` (`runc`, `crun`, `youki` or
    /// a path) and `exe` as the supervisor binary (the `strata` executable).
    pub fn open(root: &Path, runtime: &str, images: Arc<ImageStore>, exe: PathBuf) -> Result<Self, Error> {
        let registry = Registry::open(root, "containers", "names", "container")?;
        let sandboxes = Registry::open(root, "sandboxes", "sandbox-names", "sandbox")?;
        let name = Path::new(runtime).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let runtime = OciRuntime::new(runtime, root.join("run").join(name))?;
        registry.sweep_trash();
        let driver = Self { registry, sandboxes, events: Default::default(), images, runtime, exe };
        driver.recover();
        driver.recover_sandboxes();
        Ok(driver)
    }

    /// Finish or roll back every create and remove whose process died half-way (see
    /// `registry`): a create whose supervisor reported the container up is finished (its
    /// processes adopted into the record), any other is rolled back; a remove is finished.
    /// Cheap when there is nothing to do (one directory read).
    pub fn recover(&self) {
        self.registry.recover_orphans(&mut |info| match info.op {
            Op::Create => self.recover_create(info),
            Op::Remove => {
                let record = self.load(&info.id).ok();
                self.cleanup(&info.id, Some(&info.name), record.as_ref())
            }
        });
    }

    fn recover_create(&self, info: &IntentInfo) -> Result<(), Error> {
        let id = &info.id;
        let dir = self.dir(id);
        let record: Option<Record> = self.load(id).ok();
        let state_file = dir.join(SHIM_STATE);
        let mut state = util::read_supervisor_state(&state_file);
        if dir.join("shim.json").exists() {
            // The supervisor may have been started: give it the time to say so (it writes its
            // pid at once, the container's once the runtime has created it).
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while state.is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                state = util::read_supervisor_state(&state_file);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while let Some((p, t)) = state.as_ref().filter(|s| s.child_pid.is_none() && s.supervisor_alive()).and_then(|s| s.supervisor()) {
                if std::time::Instant::now() >= deadline {
                    break;
                }
                util::wait_pid_exit(p, t, Some(Duration::from_millis(50)));
                state = util::read_supervisor_state(&state_file);
            }
        }
        match (record, state) {
            (Some(mut r), Some(s)) if s.child_pid.is_some() => {
                tracing::info!(container = %id, "finishing a create whose container is up");
                r.init_pid = s.child_pid;
                r.init_start = s.child_start;
                r.shim_pid = Some(s.supervisor_pid);
                r.shim_start = s.supervisor_start;
                self.save(&r)
            }
            (record, state) => {
                tracing::info!(container = %id, "rolling back a half-done create");
                if let Some(s) = state.filter(|s| s.supervisor_alive()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.supervisor_pid), nix::sys::signal::Signal::SIGKILL);
                }
                self.cleanup(id, Some(&info.name), record.as_ref())
            }
        }
    }

    pub fn images(&self) -> &Arc<ImageStore> {
        &self.images
    }

    /// Ids of images used by any container (for `rmi` and garbage collection).
    pub fn image_ids_in_use(&self) -> Result<HashSet<String>, Error> {
        Ok(self.records()?.into_iter().map(|r| r.image_id).collect())
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.registry.dir.join(id)
    }

    fn load(&self, id: &str) -> Result<Record, Error> {
        self.registry.load(id)
    }

    fn save(&self, r: &Record) -> Result<(), Error> {
        // Not fsync'd: a record only matters while the host is up (containers do not survive a
        // reboot), and a process crash cannot tear a rename.
        self.registry.save(&r.id, r, false)
    }

    /// Newest first.
    fn records(&self) -> Result<Vec<Record>, Error> {
        let mut out: Vec<Record> = self.registry.load_all()?;
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(out)
    }

    fn exit_record(&self, id: &str) -> Option<ExitStatus> {
        shim::read_exit(&self.dir(id).join("exit.json"))
            .map(|e| {
                let mut x = ExitStatus::new(e.code, e.signal, e.oom_killed, e.finished_at);
                if e.supervisor_lost {
                    x.reason = crate::ExitReason::SupervisorLost;
                }
                x
            })
    }

    fn status(&self, r: &Record) -> Status {
        if self.exit_record(&r.id).is_some() {
            return Status::Exited;
        }
        let init_alive = matches!((r.init_pid, r.init_start), (Some(p), Some(s)) if util::process_alive(p, s));
        let shim_alive = matches!((r.shim_pid, r.shim_start), (Some(p), Some(s)) if util::process_alive(p, s));
        if init_alive && !shim_alive && r.shim_pid.is_some() && self.settle_lost_supervisor(r) {
            return Status::Exited;
        }
        if init_alive {
            // The facts, not what the record says was asked: until it is started, the
            // container's init is still the runtime's, waiting to exec the program.
            // A start just asked for is taken at its word for a moment (runc's init executes
            // the program right after `start` returns); one that never reached the runtime (its
            // caller died) shows as what it is.
            let start_pending = r.started_at.as_deref().is_some_and(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .is_ok_and(|t| chrono::Utc::now().signed_duration_since(t) < chrono::Duration::seconds(5))
            });
            let waiting = if r.runtime == "runc" {
                !start_pending
                    && r.init_pid.is_some_and(|p| {
                        std::fs::read(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with(RUNTIME_INIT_COMM))
                    })
            } else {
                r.started_at.is_none()
            };
            return match (waiting, r.paused) {
                (true, _) => Status::Created,
                (false, true) => Status::Paused,
                (false, false) => Status::Running,
            };
        }
        match r.init_pid {
            // init is gone and the supervisor is about to record how: still running for us.
            _ if shim_alive => Status::Running,
            None => Status::Created,
            Some(_) if self.settle_lost_supervisor(r) => Status::Exited,
            Some(_) => Status::Unknown,
        }
    }

    /// A container whose supervisor died (killed, crashed) has nobody to copy its output, serve
    /// its ports or record its exit: stop what is left of it and record the exit with the
    /// reason, so that it reads as exited and can be started again under a new supervisor (what
    /// containerd does when a shim dies). True once the exit is recorded.
    fn settle_lost_supervisor(&self, r: &Record) -> bool {
        let exit_file = self.dir(&r.id).join("exit.json");
        // The supervisor may have recorded the exit just before it went.
        if shim::read_exit(&exit_file).is_some() {
            return true;
        }
        let init = r.init_pid.zip(r.init_start);
        let killed = init.is_some_and(|(p, s)| util::process_alive(p, s));
        tracing::warn!(container = %r.id, running = killed, "the container's supervisor is gone; stopping the container");
        if let Some((p, s)) = init.filter(|_| killed) {
            if r.paused {
                let _ = self.runtime.resume(&r.id);
            }
            let _ = self.runtime.kill(&r.id, "KILL", true);
            if !util::wait_pid_exit(p, s, Some(Duration::from_secs(10))) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                if !util::wait_pid_exit(p, s, Some(Duration::from_secs(5))) {
                    return false;
                }
            }
        }
        for what in ["console", "attach"] {
            let _ = std::fs::remove_file(socket_path(&r.id, what));
        }
        let record = shim::ExitRecord {
            supervisor_lost: true,
            ..shim::ExitRecord::now(if killed { 128 + libc::SIGKILL } else { 255 }, killed.then_some(libc::SIGKILL))
        };
        match strata_supervise::exit::write(&exit_file, None, &record) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(container = %r.id, error = %e, "cannot record the exit of a container whose supervisor is gone");
                false
            }
        }
    }

    fn to_state(&self, r: &Record) -> WorkloadState {
        let status = self.status(r);
        WorkloadState {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: "container".into(),
            image: container_spec(&r.request).map(|c| c.image.clone()).unwrap_or_default(),
            image_id: r.image_id.clone(),
            command: r.args.clone(),
            status,
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
            exit: self.exit_record(&r.id),
            pid: if matches!(status, Status::Running | Status::Paused | Status::Created) { r.init_pid } else { None },
            ip: r.ip,
            ports: r.pod.as_ref().map(|p| p.host_ports()).unwrap_or_else(|| r.request.ports.clone()),
            labels: r.request.labels.clone(),
        }
    }

    fn create_inner(&self, id: &str, req: &CreateRequest, record: &mut Record, start: bool) -> Result<(), Error> {
        let dir = self.dir(id);
        let spec = container_spec(req)?;
        let image = self.images.get(&spec.image)?;
        record.image_id = image.id.clone();
        let defaults = ImageDefaults::from_config(&image.config);
        record.stop_signal = defaults
            .stop_signal
            .as_deref()
            .map(crate::parse_signal)
            .transpose()?
            .unwrap_or(libc::SIGTERM);
        self.save(record)?;

        let layers = self.images.layers(&image)?;
        tracing::debug!(container = id, "layers ready");
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        for d in [&dir.join("upper"), &dir.join("work"), &rootfs] {
            std::fs::create_dir_all(d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        rootfs::mount_overlay(&layers, &dir.join("upper"), &dir.join("work"), &rootfs, req.auto_remove)?;
        tracing::debug!(container = id, "rootfs mounted");

        let sandbox = match &record.pod {
            Some(p) => Some(self.ready_sandbox(&p.sandbox_id)?),
            None => None,
        };
        let hostname = match &sandbox {
            Some(sb) => sb.hostname.clone(),
            None => spec.hostname.clone().unwrap_or_else(|| id[..12].to_string()),
        };
        let mut process = config::resolve(&defaults, spec, &hostname, &rootfs)?;
        if let Some(p) = &record.pod {
            p.adjust_process(&mut process);
        }
        rootfs::ensure_dir(&rootfs, &process.cwd, process.uid, process.gid)?;
        record.args = process.args.clone();

        let netns = match req.network {
            _ if sandbox.is_some() => {
                let sb = sandbox.as_ref().ok_or_else(|| Error::Internal("sandbox vanished".into()))?;
                record.ip = sb.ip;
                match &sb.netns {
                    Some(path) => NetNs::Path(path.clone()),
                    None => NetNs::Host,
                }
            }
            NetworkMode::Host => NetNs::Host,
            NetworkMode::None | NetworkMode::User => NetNs::New,
            NetworkMode::Bridge => {
                let net = BridgeNetwork::discover()?;
                let path = Path::new(network::NETNS_DIR).join(id);
                record.netns = Some(path.clone());
                self.save(record)?;
                network::create_netns(&path)?;
                record.ip = Some(net.add(id, &path)?);
                self.save(record)?;
                NetNs::Path(path)
            }
        };
        let ports = req
            .ports
            .iter()
            .map(|p| {
                let host = SocketAddr::new(p.host_ip.unwrap_or(network::ANY_V4), p.host_port);
                let container_ip = match req.network {
                    NetworkMode::Bridge => record.ip.unwrap_or(network::ANY_V4),
                    _ => network::ANY_V4,
                };
                PortForward { host, container: SocketAddr::new(container_ip, p.container_port), protocol: Protocol::Tcp }
            })
            .collect::<Vec<_>>();

        let input = SpecInput {
            args: process.args,
            env: process.env,
            cwd: process.cwd,
            uid: process.uid,
            gid: process.gid,
            additional_gids: process.additional_gids,
            hostname: hostname.clone(),
            privileged: spec.privileged,
            terminal: spec.tty,
            read_only_rootfs: spec.read_only,
            netns,
            limits: Limits {
                memory_bytes: req.resources.memory_bytes.map(|b| b as i64),
                cpu_quota_us: match &record.pod {
                    Some(p) => p.config.resources.cpu_quota_us,
                    None => req.resources.cpus.map(|c| (c * spec::CPU_PERIOD_US as f64).round() as i64),
                },
                pids: req.resources.pids.map(i64::from),
            },
            cgroups_path: record.cgroups_path.clone(),
            bind_files: match &sandbox {
                Some(sb) => self.sandbox_etc_files(sb),
                None => rootfs::etc_files(&dir, &hostname, record.ip)?,
            },
            extra: match (&record.pod, &sandbox) {
                (Some(p), Some(sb)) => p.spec_extra(sb)?,
                _ => Default::default(),
            },
        };
        let spec = spec::build(&input, Path::new("rootfs")).map_err(|e| Error::Internal(e.to_string()))?;
        let spec_json = serde_json::to_vec_pretty(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(bundle.join("config.json"), spec_json).map_err(Error::io("writing config.json"))?;

        let shim_config = ShimConfig {
            id: id.to_string(),
            bundle,
            runtime_binary: self.runtime.binary().to_path_buf(),
            runtime_name: self.runtime.name().to_string(),
            runtime_root: self.runtime.state_root().to_path_buf(),
            runtime_log: dir.join("runtime.log"),
            pid_file: dir.join("init.pid"),
            log_path: self.log_path(record),
            log_max_size: logs::DEFAULT_MAX_SIZE,
            log_max_files: logs::DEFAULT_MAX_FILES,
            exit_file: dir.join("exit.json"),
            ports,
            cgroups_path: record.cgroups_path.clone(),
            // A terminal needs the runtime's console socket, which only create/run -d use.
            launch: match (start, req.auto_remove && !container_spec(req)?.tty) {
                (false, _) => Launch::Create,
                (true, false) => Launch::RunDetached,
                // With a memory limit the cgroup must outlive the container for its OOM kill to
                // be read (an extra runtime call, paid only by containers likely to be killed).
                (true, true) if req.resources.memory_bytes.is_some() => Launch::RunForegroundKeep,
                (true, true) => Launch::RunForeground,
            },
            stdin: container_spec(req)?.stdin,
            tty: container_spec(req)?.tty,
            console_socket: socket_path(id, "console"),
            attach_socket: socket_path(id, "attach"),
            state_file: dir.join(SHIM_STATE),
        };
        if start {
            record.started_at = Some(now());
        }
        tracing::debug!(container = id, "bundle written");
        self.launch(record, &shim_config)
    }

    /// Where a container's output is logged: `ctr.log` in its directory, or a pod container's
    /// own log path.
    fn log_path(&self, r: &Record) -> PathBuf {
        match &r.pod {
            Some(p) => p.log_path.clone(),
            None => self.dir(&r.id).join("ctr.log"),
        }
    }

    /// Write the supervisor's config and start it; returns once the container is created (or
    /// running, as `config.launch` says), with the new processes in the record.
    fn launch(&self, record: &mut Record, config: &ShimConfig) -> Result<(), Error> {
        let dir = self.dir(&record.id);
        if let Some(parent) = config.log_path.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        // Private (0700) whatever the umask: the attach socket takes the container's input.
        strata_image::private_dir(Path::new(network::SOCKET_DIR))?;
        let shim_path = dir.join("shim.json");
        let json = serde_json::to_vec_pretty(config).map_err(|e| Error::Internal(e.to_string()))?;
        // What was set up so far (address, command, start) is on disk before the supervisor
        // exists, so that a recovery after a crash here has the whole record.
        self.save(record)?;
        std::fs::write(&shim_path, json).map_err(Error::io("writing shim.json"))?;
        let started = shim::spawn(&self.exe, &shim_path, &dir.join("shim.log")).map_err(|e| match e {
            shim::ShimError::Create(msg) => Error::FailedPrecondition(format!("cannot create container: {msg}")),
            other => Error::Internal(other.to_string()),
        })?;
        tracing::debug!(container = %record.id, init = started.init_pid, "supervisor reports the container up");
        record.init_pid = Some(started.init_pid);
        record.init_start = util::process_start_time(started.init_pid);
        record.shim_pid = Some(started.shim_pid);
        record.shim_start = util::process_start_time(started.shim_pid);
        self.save(record)
    }

    /// Start an exited container again under a new supervisor: same id, rootfs, network and
    /// log (appended to). The old exit record is kept aside until the new start succeeds.
    fn relaunch(&self, r: &Record) -> Result<(), Error> {
        refuse_auto_remove(r)?;
        let dir = self.dir(&r.id);
        let exit_file = dir.join("exit.json");
        let runtime_deleted = shim::read_exit(&exit_file).is_some_and(|e| e.runtime_deleted);
        // The old supervisor still holds the published ports until it is gone.
        if let (Some(p), Some(s)) = (r.shim_pid, r.shim_start) {
            reap_supervisor(p, s);
        }
        if !runtime_deleted {
            self.runtime.delete(&r.id, true)?;
        }
        let shim_path = dir.join("shim.json");
        let bytes = std::fs::read(&shim_path).map_err(Error::io(format!("reading {}", shim_path.display())))?;
        let mut config: ShimConfig =
            serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("corrupt {}: {e}", shim_path.display())))?;
        config.launch = Launch::RunDetached;
        config.state_file = dir.join(SHIM_STATE);
        let _ = std::fs::remove_file(&config.pid_file);
        let previous = dir.join("exit.json.previous");
        std::fs::rename(&exit_file, &previous).map_err(Error::io(format!("moving {}", exit_file.display())))?;
        let mut next = r.clone();
        next.started_at = Some(now());
        next.paused = false;
        match self.launch(&mut next, &config) {
            Ok(()) => {
                let _ = std::fs::remove_file(&previous);
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::rename(&previous, &exit_file);
                Err(e)
            }
        }
    }

    /// Remove every trace of a container. Idempotent, and tolerant of half-created ones: each
    /// step checks what exists, and works without a record (an interrupted create may not have
    /// written one): the supervisor is then found through its state file and the network
    /// namespace by its path. The order matters: runtime (processes, cgroups), supervisor,
    /// mounts, network, files, name.
    fn cleanup(&self, id: &str, name: Option<&str>, record: Option<&Record>) -> Result<(), Error> {
        let dir = self.dir(id);
        let mut errors: Vec<Error> = Vec::new();
        let note = |errors: &mut Vec<Error>, r: Result<(), Error>| {
            if let Err(e) = r {
                tracing::warn!(container = id, error = %e, "cleanup step failed");
                errors.push(e);
            }
        };
        // A runtime that ran in the foreground deleted its own state when the container exited.
        let runtime_deleted = shim::read_exit(&dir.join("exit.json")).is_some_and(|e| e.runtime_deleted);
        if !runtime_deleted {
            note(&mut errors, self.runtime.delete(id, true).map_err(Error::from));
        }
        let supervisor = record
            .and_then(|r| r.shim_pid.zip(r.shim_start))
            .or_else(|| util::read_supervisor_state(&dir.join(SHIM_STATE)).and_then(|s| s.supervisor()));
        if let Some((p, s)) = supervisor {
            reap_supervisor(p, s);
        }
        note(&mut errors, rootfs::unmount(&dir.join("bundle/rootfs")));
        for what in ["console", "attach"] {
            let _ = std::fs::remove_file(socket_path(id, what));
        }
        let default_netns = Path::new(network::NETNS_DIR).join(id);
        let netns = record.and_then(|r| r.netns.clone()).or_else(|| default_netns.exists().then_some(default_netns));
        if let Some(netns) = netns {
            if let Ok(net) = BridgeNetwork::discover() {
                note(&mut errors, net.del(id, &netns).map_err(Error::from));
            }
            note(&mut errors, network::remove_netns(&netns).map_err(Error::from));
        }
        if errors.is_empty() {
            if let Err(e) = self.registry.discard(id) {
                note(&mut errors, Err(Error::Io { context: format!("removing {}", dir.display()), source: e }));
            }
        }
        if let Some(name) = record.map(|r| r.name.as_str()).or(name) {
            if errors.is_empty() {
                self.registry.release(name, id);
            }
        }
        errors.into_iter().next().map_or(Ok(()), Err)
    }

    /// Remove a container (already stopped, or to be killed by the runtime's delete) under a
    /// remove intent, so that an interrupted removal is finished by the next process.
    fn remove(&self, id: &str, record: &Record) -> Result<(), Error> {
        let intent = self.registry.begin(Op::Remove, id, &record.name)?;
        let result = self.cleanup(id, Some(&record.name), Some(record));
        if result.is_ok() {
            intent.finish();
        }
        result
    }

    /// Create a container, and with `start` also start it (one runtime invocation).
    fn create_with(&self, req: &CreateRequest, start: bool) -> Result<String, Error> {
        self.create_full(req, start, None)
    }

    /// Create a container; `pod` places it in a sandbox (its cgroup under the pod's).
    fn create_full(&self, req: &CreateRequest, start: bool, pod: Option<pod::PodPart>) -> Result<String, Error> {
        if !req.ports.is_empty() && req.network != NetworkMode::Bridge {
            return Err(Error::InvalidArgument("ports can only be published on the bridge network".into()));
        }
        if req.network == NetworkMode::User {
            return Err(Error::InvalidArgument("user-mode networking is for VMs; containers use bridge, host or none".into()));
        }
        for e in &container_spec(req)?.env {
            config::set_env(&mut Vec::new(), e.clone())?;
        }
        let id = random_id();
        let name = req.name.clone().unwrap_or_else(|| id[..12].to_string());
        crate::registry::validate_name(&name, "container")?;
        // Before any side effect: if this process dies half-way, whoever opens the driver next
        // finishes or rolls back this container.
        let intent = self.registry.begin(Op::Create, &id, &name)?;
        if let Err(e) = self.registry.reserve(&name, &id) {
            intent.finish();
            return Err(e);
        }
        let dir = self.dir(&id);
        if let Err(e) = std::fs::create_dir(&dir) {
            self.registry.release(&name, &id);
            intent.finish();
            return Err(Error::Io { context: format!("creating {}", dir.display()), source: e });
        }
        let mut record = Record {
            id: id.clone(),
            name,
            request: req.clone(),
            image_id: String::new(),
            args: Vec::new(),
            created_at: now(),
            started_at: None,
            runtime: self.runtime.name().to_string(),
            cgroups_path: match &pod {
                Some(p) => format!("{}/{id}", p.cgroup_parent),
                None => format!("/strata/{id}"),
            },
            stop_signal: libc::SIGTERM,
            netns: None,
            ip: None,
            init_pid: None,
            init_start: None,
            shim_pid: None,
            shim_start: None,
            paused: false,
            pod,
        };
        match self.create_inner(&id, req, &mut record, start) {
            Ok(()) => {
                intent.finish();
                Ok(id)
            }
            Err(e) => {
                match self.cleanup(&id, Some(&record.name), Some(&record)) {
                    Ok(()) => intent.finish(),
                    // The intent stays: the next process to open the driver retries.
                    Err(ce) => tracing::warn!(container = %id, error = %ce, "cleanup after failed create"),
                }
                Err(e)
            }
        }
    }

    /// The OCI process file for `runc exec` of `req` in container `r`: the container's own
    /// process (env, user, capabilities, seccomp...) with the command, environment, directory,
    /// user and terminal of the request.
    fn exec_process_file(&self, r: &Record, req: &ExecRequest) -> Result<tempfile::NamedTempFile, Error> {
        if req.command.is_empty() {
            return Err(Error::InvalidArgument("no command given to exec".into()));
        }
        let dir = self.dir(&r.id);
        let spec = oci_spec::runtime::Spec::load(dir.join("bundle/config.json"))
            .map_err(|e| Error::Internal(format!("reading config.json of {}: {e}", r.name)))?;
        let mut process = spec.process().clone().ok_or_else(|| Error::Internal("config.json without process".into()))?;
        let mut env = process.env().clone().unwrap_or_default();
        for e in &req.env {
            config::set_env(&mut env, e.clone())?;
        }
        process.set_env(Some(env));
        process.set_args(Some(req.command.clone()));
        process.set_terminal(Some(req.tty));
        if let Some(cwd) = &req.workdir {
            process.set_cwd(cwd.into());
        }
        if let Some(user) = &req.user {
            let u = resolve_user(user, &dir.join("bundle/rootfs"))?;
            let mut ou = process.user().clone();
            ou.set_uid(u.uid);
            ou.set_gid(u.gid);
            ou.set_additional_gids(if u.groups.is_empty() { None } else { Some(u.groups) });
            process.set_user(ou);
        }
        let file = tempfile::Builder::new()
            .prefix("exec-")
            .suffix(".json")
            .tempfile_in(&dir)
            .map_err(Error::io("creating exec process file"))?;
        serde_json::to_writer(file.as_file(), &process).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(file)
    }

    fn running_record(&self, id: &str, verb: &str) -> Result<Record, Error> {
        let r = self.load(id)?;
        match self.status(&r) {
            Status::Running | Status::Paused => Ok(r),
            s => Err(Error::FailedPrecondition(format!("cannot {verb} container {}: it is {}", r.name, s.as_str()))),
        }
    }
}

/// Containers removed when they exit (`--rm`) are not started again: whoever removes them
/// would remove the new run.
fn refuse_auto_remove(r: &Record) -> Result<(), Error> {
    if r.request.auto_remove {
        return Err(Error::FailedPrecondition(format!(
            "cannot start container {} again: it is removed when it exits (--rm)",
            r.name
        )));
    }
    Ok(())
}

/// Wait a little for a container's supervisor to finish (it exits right after recording the
/// exit), then kill it.
fn reap_supervisor(pid: i32, start: u64) {
    if !util::wait_pid_exit(pid, start, Some(Duration::from_secs(3))) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}

struct ShimAttach(AttachClient);

impl AttachInput for ShimAttach {
    fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.0.input(data)
    }
    fn resize(&mut self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.0.resize(rows, cols)
    }
    fn close_input(&mut self) -> std::io::Result<()> {
        self.0.close_input()
    }
}

/// Unix socket paths are limited to 108 bytes, so sockets live under a short directory.
fn socket_path(id: &str, what: &str) -> PathBuf {
    Path::new(network::SOCKET_DIR).join(format!("{}.{what}", &id[..32.min(id.len())]))
}

/// The container part of a request; other workload kinds are not for this driver.
fn container_spec(req: &CreateRequest) -> Result<&crate::ContainerSpec, Error> {
    match &req.workload {
        crate::Workload::Container(c) => Ok(c),
        other => Err(Error::InvalidArgument(format!("the container driver cannot run a {} workload", other.kind()))),
    }
}

impl Driver for ContainerDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: "container".into(),
            isolation: "namespaces".into(),
            exec: true,
            pause: true,
            stats: true,
            port_publishing: true,
            network_modes: vec![NetworkMode::Bridge, NetworkMode::Host, NetworkMode::None],
        }
    }

    fn create(&self, req: &CreateRequest) -> Result<String, Error> {
        self.create_with(req, false)
    }

    fn run(&self, req: &CreateRequest) -> Result<String, Error> {
        self.create_with(req, true)
    }

    fn start(&self, id: &str) -> Result<(), Error> {
        let mut r = self.load(id)?;
        match self.status(&r) {
            Status::Created => {}
            Status::Exited if r.pod.is_some() => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot start container {} again: it is a pod container; create its next attempt",
                    r.name
                )))
            }
            Status::Exited => return self.relaunch(&r),
            s => return Err(Error::FailedPrecondition(format!("cannot start container {}: it is {}", r.name, s.as_str()))),
        }
        // Record the start first: once runc start returns the process may already be gone.
        r.started_at = Some(now());
        self.save(&r)?;
        if let Err(e) = self.runtime.start(id) {
            r.started_at = None;
            let _ = self.save(&r);
            return Err(e.into());
        }
        self.events.poke(id);
        Ok(())
    }

    fn stop(&self, id: &str, timeout: Duration) -> Result<ExitStatus, Error> {
        let r = self.load(id)?;
        if let Some(exit) = self.exit_record(id) {
            return Ok(exit);
        }
        if r.paused {
            let _ = self.runtime.resume(id);
        }
        let signal = if self.status(&r) == Status::Created { libc::SIGKILL } else { r.stop_signal };
        if let Err(e) = self.runtime.kill(id, &signal.to_string(), false) {
            tracing::debug!(container = id, error = %e, "stop signal not delivered");
        }
        match self.wait(id, Some(timeout)) {
            Ok(exit) => Ok(exit),
            Err(Error::Timeout(_)) => {
                let _ = self.runtime.kill(id, "KILL", true);
                self.wait(id, Some(Duration::from_secs(30)))
            }
            Err(e) => Err(e),
        }
    }

    fn restart(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        // Checked before stopping, so that a refused restart leaves the container running.
        refuse_auto_remove(&self.load(id)?)?;
        self.stop(id, timeout)?;
        self.start(id)
    }

    fn kill(&self, id: &str, signal: i32) -> Result<(), Error> {
        let r = self.running_record(id, "kill")?;
        if r.paused && signal == libc::SIGKILL {
            self.runtime.kill(id, &signal.to_string(), false)?;
            return self.resume(id);
        }
        Ok(self.runtime.kill(id, &signal.to_string(), false)?)
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), Error> {
        self.recover();
        let r = self.load(id)?;
        let alive = |p: Option<i32>, s: Option<u64>| matches!((p, s), (Some(p), Some(s)) if util::process_alive(p, s));
        match self.status(&r) {
            Status::Running | Status::Paused if !force => {
                return Err(Error::FailedPrecondition(format!(
                    "cannot remove container {}: it is running; stop it first or force the removal",
                    r.name
                )))
            }
            Status::Running | Status::Paused | Status::Created => {
                let _ = self.runtime.kill(id, "KILL", true);
                if r.paused {
                    let _ = self.runtime.resume(id);
                }
                // Only a process that exists is waited for (a container whose create never got
                // as far as a process has nothing to wait for).
                if alive(r.shim_pid, r.shim_start) || alive(r.init_pid, r.init_start) {
                    let _ = self.wait(id, Some(Duration::from_secs(10)));
                }
            }
            Status::Exited | Status::Unknown => {}
        }
        self.remove(id, &r)
    }

    fn state(&self, id: &str) -> Result<WorkloadState, Error> {
        Ok(self.to_state(&self.load(id)?))
    }

    fn list(&self) -> Result<Vec<WorkloadState>, Error> {
        self.recover();
        let mut out = Vec::new();
        for r in self.records()? {
            let state = self.to_state(&r);
            // Exited containers created with auto-remove whose remover is gone (`run -d --rm`,
            // or a killed CLI) are removed by whoever lists next.
            if r.request.auto_remove && state.status == Status::Exited && self.remove(&r.id, &r).is_ok() {
                continue;
            }
            out.push(state);
        }
        Ok(out)
    }

    fn resolve(&self, name_or_id: &str) -> Result<String, Error> {
        self.registry.resolve(name_or_id)
    }

    fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<ExitStatus, Error> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let left = || deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        loop {
            if let Some(exit) = self.exit_record(id) {
                return Ok(exit);
            }
            let r = self.load(id)?;
            if left().is_some_and(|l| l.is_zero()) {
                return Err(Error::Timeout(format!("container {} to exit", r.name)));
            }
            match (r.shim_pid, r.shim_start) {
                (Some(p), Some(s)) if util::process_alive(p, s) => {
                    util::wait_pid_exit(p, s, left());
                }
                _ => {
                    if let (Some(p), Some(s)) = (r.init_pid, r.init_start) {
                        if util::process_alive(p, s) {
                            util::wait_pid_exit(p, s, left().map(|l| l.min(Duration::from_millis(200))));
                            continue;
                        }
                    }
                    if let Some(exit) = self.exit_record(id) {
                        return Ok(exit);
                    }
                    if r.init_pid.is_none() {
                        if !self.registry.busy(id) {
                            return Err(Error::FailedPrecondition(format!("container {} was never started", r.name)));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    if self.settle_lost_supervisor(&r) {
                        continue;
                    }
                    return Err(Error::FailedPrecondition(format!(
                        "the supervisor of container {} is gone; its exit status was lost",
                        r.name
                    )));
                }
            }
        }
    }

    fn logs(&self, id: &str, opts: &LogOptions, sink: &mut dyn FnMut(&LogRecord) -> bool) -> Result<(), Error> {
        let r = self.load(id)?;
        let path = self.log_path(&r);
        // The supervisor writes exit.json and then exits: its exit is the end of the log.
        let supervisor = r.shim_pid.zip(r.shim_start);
        workload_log::read(&path, supervisor, opts, &format!("logs of {}", r.name), sink)
    }

    fn exec(&self, id: &str, req: &ExecRequest) -> Result<ExecResult, Error> {
        let r = self.running_record(id, "exec in")?;
        if req.tty && req.capture {
            return Err(Error::InvalidArgument("a terminal cannot be captured".into()));
        }
        let file = self.exec_process_file(&r, req)?;
        let mut cmd = self.runtime.exec_command(id, file.path());
        let out = if req.capture {
            cmd.stdin(std::process::Stdio::null());
            cmd.output().map_err(Error::io(format!("running {} exec", self.runtime.name())))?
        } else {
            if !req.interactive {
                cmd.stdin(std::process::Stdio::null());
            }
            let status = cmd.status().map_err(Error::io(format!("running {} exec", self.runtime.name())))?;
            std::process::Output { status, stdout: Vec::new(), stderr: Vec::new() }
        };
        use std::os::unix::process::ExitStatusExt;
        let code = out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        Ok(ExecResult { code, stdout: out.stdout, stderr: out.stderr })
    }

    fn stats(&self, id: &str) -> Result<Stats, Error> {
        let r = self.running_record(id, "read stats of")?;
        let u = cgroups::usage(&r.cgroups_path)
            .ok_or_else(|| Error::FailedPrecondition(format!("container {} has no cgroup", r.name)))?;
        Ok(Stats {
            memory_bytes: u.memory_bytes,
            memory_limit_bytes: u.memory_limit_bytes,
            cpu_usage_ns: u.cpu_usage_ns,
            pids: u.pids,
        })
    }

    fn attach(&self, id: &str) -> Result<Box<dyn AttachInput>, Error> {
        let r = self.load(id)?;
        let spec = container_spec(&r.request)?;
        if !spec.stdin && !spec.tty {
            return Err(Error::FailedPrecondition(format!("container {} was created without -i or -t: it has no input to attach to", r.name)));
        }
        let client = AttachClient::connect(&socket_path(id, "attach"))
            .map_err(Error::io(format!("attaching to container {}", r.name)))?;
        Ok(Box::new(ShimAttach(client)))
    }

    fn attach_session(&self, id: &str) -> Result<Attachment, Error> {
        let r = self.running_record(id, "attach to")?;
        let spec = container_spec(&r.request)?;
        // Follow first: once the supervisor has acknowledged, no output of our input is missed.
        let output = AttachClient::connect(&socket_path(id, "attach")).and_then(AttachClient::follow).map_err(|source| {
            // It may have exited since we looked.
            match self.load(id).map(|now| self.status(&now)) {
                Ok(Status::Running | Status::Paused) => Error::Io { context: format!("attaching to container {}", r.name), source },
                Ok(s) => Error::FailedPrecondition(format!("cannot attach to container {}: it is {}", r.name, s.as_str())),
                Err(e) => e,
            }
        })?;
        let input = if spec.stdin || spec.tty { Some(self.attach(id)?) } else { None };
        Ok(Attachment {
            tty: spec.tty,
            stdin: spec.stdin,
            input,
            output: Box::new(output.map(|chunk| chunk.map(|(stream, data)| OutputChunk { stream: workload_log::stream(stream), data }))),
        })
    }

    fn processes(&self, id: &str) -> Result<Vec<ProcessInfo>, Error> {
        let r = self.running_record(id, "list the processes of")?;
        let rootfs = self.dir(id).join("bundle/rootfs");
        let procs = procs::in_cgroup(&r.cgroups_path);
        let in_container: HashMap<i32, i32> = procs.iter().map(|p| (p.pid, p.ns_pid)).collect();
        Ok(procs
            .into_iter()
            .map(|p| ProcessInfo {
                pid: p.ns_pid,
                ppid: in_container.get(&p.ppid).copied().unwrap_or(0),
                host_pid: p.pid,
                user: config::user_name(p.uid, &rootfs).unwrap_or_else(|| p.uid.to_string()),
                tty: p.tty,
                cpu_time: p.cpu_time,
                elapsed: p.elapsed,
                command: p.command,
            })
            .collect())
    }

    fn pause(&self, id: &str) -> Result<(), Error> {
        let mut r = self.running_record(id, "pause")?;
        self.runtime.pause(id)?;
        r.paused = true;
        self.save(&r)
    }

    fn resume(&self, id: &str) -> Result<(), Error> {
        let mut r = self.load(id)?;
        self.runtime.resume(id)?;
        r.paused = false;
        self.save(&r)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The health call notices a driver that cannot work (its records unreadable, its
    /// supervisor not executable) without reading a record.
    #[test]
    fn health_fails_without_the_records_or_an_executable_supervisor() {
        let dir = tempfile::Builder::new().prefix("strata-health-").tempdir_in("/var/tmp").expect("tempdir");
        let images = Arc::new(ImageStore::open(dir.path().join("images")).expect("image store"));
        let exe = dir.path().join("strata");
        std::fs::copy("/bin/true", &exe).expect("a supervisor binary");
        let root = dir.path().join("root");
        let d = ContainerDriver::open(&root, "runc", images, exe.clone()).expect("driver");
        d.runtime_health().expect("a fresh driver is healthy");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = d.runtime_health().expect_err("the supervisor is not executable");
        assert!(e.to_string().contains("is not an executable file"), "{e}");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        d.runtime_health().expect("healthy again");
        std::fs::remove_dir_all(root.join("sandboxes")).expect("removing the sandbox records");
        let e = d.runtime_health().expect_err("the sandbox records are gone");
        assert!(e.to_string().contains("sandboxes"), "{e}");
    }
}
