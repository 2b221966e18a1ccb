//! The VM driver: QEMU virtual machines (strata-vm) behind the [`Driver`] interface.
//!
//! On-disk layout under the strata root:
//! ```text
//! vms/<id>/record.json       what was asked for and what was set up (see `Record`)
//! vms/<id>/supervisor.json   the supervisor's config (QEMU binary and command line)
//! vms/<id>/state.qcow2       an empty qcow2 disk that holds `savevm` snapshots
//! vms/<id>/console.log       the serial console, CRI log format, rotated
//! vms/<id>/qemu.log          QEMU's own diagnostics; supervisor.log the supervisor's
//! vms/<id>/{qmp,serial,console}.sock   while QEMU runs; exit.json once it has exited
//! vm-names/<name>            the id owning a name (created with O_EXCL: names are unique)
//! vm-accel.json              the cached acceleration verdict (see strata_vm::accel)
//! ```
//! QEMU is a child of its supervisor (`strata __vmlog`), which is nobody's child: both
//! outlive the process that created them. Any later process finds the VM from these files,
//! checks QEMU by pid *and* start time, and reconnects to its QMP socket (re-adoption); it
//! never starts a second QEMU for a VM whose QEMU is alive.
//!
//! `create` launches QEMU with its vCPUs stopped (`-S`); `start` runs them (`cont`), or
//! relaunches QEMU for a VM that has exited.

mod container_disk;
pub use container_disk::{container_disk, DISK_DIR};

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

use strata_oci::network::{self, tap, BridgeNetwork, Lease};
use strata_supervise::logs;
use strata_supervise::ports::{PortForward, Protocol};
use strata_vm::accel::{self, Accel};
use strata_vm::qemu::{self, Forward, Machine, NetBackend, Nic};
use strata_vm::qmp::{Qmp, QmpError};
use strata_vm::seed;
use strata_vm::supervisor::{self, SpawnError};
use strata_vm::{process_alive, process_start_time, wait_pid_exit};

use crate::registry::{self, now, random_id, IntentInfo, Op, Registry};
use crate::{
    Capabilities, CreateRequest, Driver, Error, ExecRequest, ExecResult, ExitStatus, LogOptions, LogRecord,
    NetworkMode, Stats, Status, VmSpec, WorkloadState,
};

/// The argument that makes the `strata` binary run as a VM supervisor.
pub use strata_vm::supervisor::SUPERVISOR_ARG;
pub use strata_vm::qga::GuestInfo;

/// Run as a VM supervisor (the binary's hidden `__vmlog` mode). Never returns.
pub fn run_supervisor(config: &Path) -> ! {
    strata_vm::supervisor::main(config)
}

const DEFAULT_MEMORY_MIB: u64 = 256;
/// Size of the snapshot disk. qcow2 allocates lazily: it costs what the snapshots hold.
const STATE_DISK_MIB: u64 = 64;
/// How long a QMP answer may take.
const QMP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long QEMU may take to build the machine before `create` gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The supervisor's own record of its pid and QEMU's (see `supervisor::Config::state_file`).
const SUPERVISOR_STATE: &str = "supervisor.state";

/// What the driver persists per VM.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Record {
    id: String,
    name: String,
    request: CreateRequest,
    machine: Machine,
    accel_reason: String,
    created_at: String,
    started_at: Option<String>,
    qemu_pid: Option<i32>,
    qemu_start: Option<u64>,
    supervisor_pid: Option<i32>,
    supervisor_start: Option<u64>,
    /// The guest's address on the bridge network (bridge networking only).
    #[serde(default)]
    lease: Option<Lease>,
}

/// VM facts beyond [`WorkloadState`] (for `strata vm list`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmDetails {
    /// `kvm` or `tcg`.
    pub accelerator: String,
    /// Why that accelerator.
    pub accelerator_reason: String,
    /// QEMU's run state (`running`, `paused`, `prelaunch`, ...) when it answered on QMP.
    pub qemu_status: Option<String>,
    pub memory_mib: u64,
    /// What the guest has now, after the balloon (while QEMU runs).
    pub memory_actual_mib: Option<u64>,
    pub cpus: u32,
    /// `user`, `bridge` or `none`.
    pub network: String,
    /// The VM's NIC address, where strata knows it.
    pub mac: Option<String>,
}

/// The VM driver over one strata root.
pub struct VmDriver {
    root: PathBuf,
    registry: Registry,
    exe: PathBuf,
}

impl VmDriver {
    /// Open the driver over `root`; `exe` is the supervisor binary (the `strata` executable).
    pub fn open(root: &Path, exe: PathBuf) -> Result<Self, Error> {
        let registry = Registry::open(root, "vms", "vm-names", "VM")?;
        registry.sweep_trash();
        let driver = Self { root: root.to_path_buf(), registry, exe };
        driver.recover();
        Ok(driver)
    }

    /// Whether VMs on this host run under KVM (`true`) or emulation, and why: the verdict of
    /// the real probe (`strata_vm::accel`), cached per host boot; the first call may boot a
    /// probe guest (seconds).
    pub fn kvm(&self) -> (bool, String) {
        match qemu::qemu_binary() {
            Ok(q) => {
                let d = accel::decide(&q, None, &self.root.join("vm-accel.json"));
                (d.accel == Accel::Kvm, d.reason)
            }
            Err(e) => (false, e),
        }
    }

    /// Finish or roll back every create and remove whose process died half-way: a create
    /// whose supervisor reported QEMU ready is finished (QEMU and the supervisor adopted into
    /// the record), any other is rolled back (QEMU, supervisor, tap, lease, overlay, name); a
    /// remove is finished.
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
        let state_file = dir.join(SUPERVISOR_STATE);
        let mut state = strata_supervise::util::read_supervisor_state(&state_file);
        if dir.join("supervisor.json").exists() {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while state.is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                state = strata_supervise::util::read_supervisor_state(&state_file);
            }
            // QEMU builds the machine in about a second; the supervisor reports it or fails.
            let deadline = std::time::Instant::now() + READY_TIMEOUT;
            while let Some((p, t)) =
                state.as_ref().filter(|s| s.child_pid.is_none() && s.supervisor_alive()).and_then(|s| s.supervisor())
            {
                if std::time::Instant::now() >= deadline {
                    break;
                }
                wait_pid_exit(p, t, Some(Duration::from_millis(50)));
                state = strata_supervise::util::read_supervisor_state(&state_file);
            }
        }
        match (record, state) {
            (Some(mut r), Some(s)) if s.child_pid.is_some() => {
                tracing::info!(vm = %id, "finishing a create whose QEMU is up");
                r.qemu_pid = s.child_pid;
                r.qemu_start = s.child_start;
                r.supervisor_pid = Some(s.supervisor_pid);
                r.supervisor_start = s.supervisor_start;
                self.save(&r)
            }
            (mut record, state) => {
                tracing::info!(vm = %id, "rolling back a half-done create");
                if let Some(s) = state {
                    if let (Some(r), Some((p, t))) = (record.as_mut(), s.child()) {
                        // So that cleanup kills QEMU too.
                        r.qemu_pid = Some(p);
                        r.qemu_start = Some(t);
                    }
                    if s.supervisor_alive() {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.supervisor_pid), nix::sys::signal::Signal::SIGKILL);
                    }
                    if let Some((p, t)) = s.child() {
                        if process_alive(p, t) {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                            wait_pid_exit(p, t, Some(Duration::from_secs(10)));
                        }
                    }
                }
                self.cleanup(id, Some(&info.name), record.as_ref())
            }
        }
    }

    /// The network a VM gets unless told otherwise: a tap on the node bridge where strata may
    /// create one (root, CNI plugins installed), else QEMU's user-mode network.
    pub fn default_network() -> NetworkMode {
        if nix::unistd::geteuid().is_root() && BridgeNetwork::discover().is_ok() {
            NetworkMode::Bridge
        } else {
            NetworkMode::User
        }
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.registry.dir.join(id)
    }

    fn load(&self, id: &str) -> Result<Record, Error> {
        self.registry.load(id)
    }

    fn save(&self, r: &Record) -> Result<(), Error> {
        self.registry.save(&r.id, r, true)
    }

    /// The base disk images of every VM on node root `root` (a containerDisk's is a file in the
    /// image store, which image removal and garbage collection must keep), read from the records
    /// without opening the driver (which would sweep and recover another process's work).
    pub fn disks_in_use(root: &Path) -> Result<Vec<PathBuf>, Error> {
        let registry = Registry::open(root, "vms", "vm-names", "VM")?;
        Ok(registry.load_all::<Record>()?.into_iter().filter_map(|r| match r.request.workload {
            crate::Workload::Vm(v) => v.disk,
            _ => None,
        }).collect())
    }

    /// Newest first.
    fn records(&self) -> Result<Vec<Record>, Error> {
        let mut out: Vec<Record> = self.registry.load_all()?;
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(out)
    }

    fn exit_record(&self, id: &str) -> Option<ExitStatus> {
        supervisor::read_exit(&self.dir(id).join("exit.json")).map(|e| {
            let mut x = ExitStatus::new(e.code, e.signal, false, e.finished_at);
            if e.supervisor_lost {
                x.reason = crate::ExitReason::SupervisorLost;
            }
            // A panic says more than the code (QEMU exits 0 after the guest's reboot).
            if let Some(p) = e.guest_panic {
                x.reason = crate::ExitReason::GuestPanicked;
                x.message = Some(p);
            }
            x
        })
    }

    fn qemu_alive(r: &Record) -> bool {
        matches!((r.qemu_pid, r.qemu_start), (Some(p), Some(s)) if process_alive(p, s))
    }

    fn supervisor_alive(r: &Record) -> bool {
        matches!((r.supervisor_pid, r.supervisor_start), (Some(p), Some(s)) if process_alive(p, s))
    }

    /// Load a VM's record, replacing its supervisor first if QEMU runs without one.
    fn load_live(&self, id: &str) -> Result<Record, Error> {
        let mut r = self.load(id)?;
        self.ensure_supervisor(&mut r);
        Ok(r)
    }

    /// A VM whose QEMU runs but whose supervisor died (killed, crashed) gets a new supervisor
    /// that takes QEMU over: the console, its log and the published ports work again. One
    /// process does it at a time (a lock in the VM directory); failures are logged and retried
    /// at the next look.
    fn ensure_supervisor(&self, r: &mut Record) {
        if r.supervisor_pid.is_none() || Self::supervisor_alive(r) || !Self::qemu_alive(r) {
            return;
        }
        let dir = self.dir(&r.id);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("supervisor.lock"))
            .ok()
            .and_then(|f| nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).ok());
        if lock.is_none() {
            return;
        }
        // Someone else may have replaced it while we waited for the lock.
        if let Ok(now) = self.load(&r.id) {
            *r = now;
        }
        let (Some(qemu_pid), Some(qemu_start)) = (r.qemu_pid, r.qemu_start) else { return };
        if Self::supervisor_alive(r) || !process_alive(qemu_pid, qemu_start) {
            return;
        }
        tracing::warn!(vm = %r.id, "the VM's supervisor is gone; starting a new one");
        let path = dir.join("supervisor.json");
        let config = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<supervisor::Config>(&b).ok())
            .map(|mut c| {
                c.adopt = Some(supervisor::Adopt { qemu_pid, qemu_start });
                c.state_file = dir.join(SUPERVISOR_STATE);
                c
            });
        let Some(config) = config else {
            tracing::warn!(vm = %r.id, "no readable supervisor.json: cannot replace the supervisor");
            return;
        };
        let written = serde_json::to_vec_pretty(&config)
            .map_err(|e| e.to_string())
            .and_then(|json| strata_supervise::util::replace_file(&path, &json, false).map_err(|e| e.to_string()));
        if let Err(e) = written {
            tracing::warn!(vm = %r.id, error = %e, "cannot write the replacement supervisor's config");
            return;
        }
        match supervisor::spawn(&self.exe, &path, &dir.join("supervisor.log")) {
            Ok(started) => {
                r.supervisor_pid = Some(started.supervisor_pid);
                r.supervisor_start = process_start_time(started.supervisor_pid);
                if let Err(e) = self.save(r) {
                    tracing::warn!(vm = %r.id, error = %e, "recording the replacement supervisor");
                }
            }
            Err(e) => tracing::warn!(vm = %r.id, error = %e, "cannot start a replacement supervisor"),
        }
    }

    fn qmp(&self, id: &str) -> Result<Qmp, Error> {
        Qmp::connect(&self.dir(id).join(qemu::QMP_SOCKET), QMP_TIMEOUT).map_err(qmp_error)
    }

    /// QEMU's run state over QMP, if it answers quickly (another client may hold the socket).
    fn qemu_status(&self, r: &Record) -> Option<String> {
        if !Self::qemu_alive(r) {
            return None;
        }
        let mut q = Qmp::connect(&self.dir(&r.id).join(qemu::QMP_SOCKET), Duration::from_secs(1)).ok()?;
        q.query_status().ok().map(|s| s.status)
    }

    fn status_of(&self, r: &Record, qemu_status: Option<&str>) -> Status {
        if Self::qemu_alive(r) {
            return match qemu_status {
                Some("prelaunch") => Status::Created,
                Some("paused" | "suspended") => Status::Paused,
                Some(_) => Status::Running,
                None if r.started_at.is_some() => Status::Running,
                None => Status::Created,
            };
        }
        if self.exit_record(&r.id).is_some() {
            return Status::Exited;
        }
        if Self::supervisor_alive(r) {
            // QEMU is gone and the supervisor is about to record how.
            return Status::Running;
        }
        if r.qemu_pid.is_none() {
            return Status::Created;
        }
        // QEMU and its supervisor are both gone and nobody recorded how QEMU ended: say so.
        let exit = supervisor::Exit { supervisor_lost: true, ..supervisor::Exit::now(255, None) };
        let recorded = strata_supervise::exit::write(&self.dir(&r.id).join("exit.json"), None, &exit).is_ok();
        if recorded {
            Status::Exited
        } else {
            Status::Unknown
        }
    }

    fn to_state(&self, r: &Record, qemu_status: Option<&str>) -> WorkloadState {
        let status = self.status_of(r, qemu_status);
        let spec = vm_spec(&r.request).ok();
        WorkloadState {
            id: r.id.clone(),
            name: r.name.clone(),
            kind: "vm".into(),
            image: spec
                .and_then(|s| s.disk.as_ref().or(s.kernel.as_ref()))
                .map(|k| k.display().to_string())
                .unwrap_or_default(),
            image_id: String::new(),
            command: vec![r.machine.append.clone()],
            status,
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
            exit: if status == Status::Exited { self.exit_record(&r.id) } else { None },
            pid: if matches!(status, Status::Running | Status::Paused | Status::Created) { r.qemu_pid } else { None },
            ip: r.lease.map(|l| l.address.into()),
            ports: match r.machine.net.as_ref().map(|n| &n.backend) {
                Some(NetBackend::User { forwards }) => forwards
                    .iter()
                    .map(|f| crate::PortMapping {
                        host_ip: f.host_ip,
                        host_port: f.host_port,
                        container_port: f.guest_port,
                    })
                    .collect(),
                Some(NetBackend::Tap { .. }) => r.request.ports.clone(),
                None => Vec::new(),
            },
            labels: r.request.labels.clone(),
        }
    }

    /// The state plus VM-only facts, over one QMP connection.
    pub fn details(&self, id: &str) -> Result<(WorkloadState, VmDetails), Error> {
        let r = self.load_live(id)?;
        let mut qmp = if Self::qemu_alive(&r) {
            Qmp::connect(&self.dir(&r.id).join(qemu::QMP_SOCKET), Duration::from_secs(1)).ok()
        } else {
            None
        };
        let qs = qmp.as_mut().and_then(|q| q.query_status().ok()).map(|s| s.status);
        let actual = qmp.as_mut().and_then(|q| q.query_balloon().ok());
        let details = VmDetails {
            accelerator: r.machine.accel.as_str().to_string(),
            accelerator_reason: r.accel_reason.clone(),
            qemu_status: qs.clone(),
            memory_mib: r.machine.memory_mib,
            memory_actual_mib: actual.map(|b| b >> 20),
            cpus: r.machine.cpus,
            network: match r.machine.net.as_ref().map(|n| &n.backend) {
                None => NetworkMode::None,
                Some(NetBackend::User { .. }) => NetworkMode::User,
                Some(NetBackend::Tap { .. }) => NetworkMode::Bridge,
            }
            .as_str()
            .to_string(),
            mac: r.machine.net.as_ref().map(|n| n.mac.clone()),
        };
        Ok((self.to_state(&r, qs.as_deref()), details))
    }

    /// What the guest's QEMU guest agent says of it (OS, hostname, interfaces), each answer within
    /// `timeout`. A guest that runs no agent is [`Error::Unavailable`] after `timeout`.
    pub fn guest_info(&self, id: &str, timeout: Duration) -> Result<strata_vm::qga::GuestInfo, Error> {
        let r = self.running(id, "ask the guest agent of")?;
        strata_vm::qga::query(&self.dir(id).join(strata_vm::qga::QGA_SOCKET), timeout).map_err(|e| {
            let mut msg = format!("VM {}: {e}", r.name);
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            Error::Unavailable(msg)
        })
    }

    /// The VM's serial console as a byte stream (what the guest writes, and what it reads).
    pub fn console(&self, id: &str) -> Result<UnixStream, Error> {
        let r = self.running(id, "attach to")?;
        strata_vm::connect_unix(&self.dir(id).join(qemu::CONSOLE_SOCKET))
            .map_err(Error::io(format!("connecting to the console of {}", r.name)))
    }

    /// Resize a running guest's memory with the balloon: between 32 MiB and the memory the VM
    /// was created with. The guest's balloon driver does the work, so this returns at once;
    /// [`VmDriver::details`] shows the memory the guest has.
    pub fn set_memory(&self, id: &str, bytes: u64) -> Result<(), Error> {
        let r = self.running(id, "resize the memory of")?;
        let max = r.machine.memory_mib << 20;
        if bytes < 32 << 20 || bytes > max {
            return Err(Error::InvalidArgument(format!(
                "memory of VM {} can be set between 32 MiB and {} MiB (its size), not {} MiB",
                r.name,
                r.machine.memory_mib,
                bytes >> 20
            )));
        }
        self.qmp(id)?.balloon(bytes).map_err(qmp_error)
    }

    /// Save the running VM (devices and memory) as snapshot `tag`.
    pub fn snapshot(&self, id: &str, tag: &str) -> Result<(), Error> {
        let r = self.running(id, "snapshot")?;
        let mut q = self.qmp(id)?;
        q.savevm(tag).map_err(|e| Error::FailedPrecondition(format!("snapshot {tag} of {}: {}", r.name, e)))
    }

    /// Return the running VM to snapshot `tag`. A failed restore leaves the VM as it was.
    pub fn restore(&self, id: &str, tag: &str) -> Result<(), Error> {
        let r = self.running(id, "restore")?;
        let mut q = self.qmp(id)?;
        let was_running = q.query_status().map(|s| s.running).unwrap_or(true);
        let result = q.loadvm(tag);
        // loadvm stops the vCPUs and, on failure, leaves them stopped.
        if result.is_err() && was_running {
            let _ = q.cont();
        }
        result.map_err(|e| match &e {
            QmpError::Command { desc, .. } if desc.contains("does not exist") => {
                Error::NotFound(format!("snapshot {tag} of VM {}", r.name))
            }
            _ => Error::FailedPrecondition(format!("restore {tag} of {}: {e}", r.name)),
        })
    }

    /// Names of the VM's snapshots.
    pub fn snapshots(&self, id: &str) -> Result<Vec<String>, Error> {
        self.running(id, "list snapshots of")?;
        let out = self.qmp(id)?.human("info snapshots").map_err(qmp_error)?;
        // Rows: ID TAG VM-SIZE DATE TIME VM-CLOCK [ICOUNT], after two header lines.
        Ok(out.lines().skip(2).filter_map(|l| l.split_whitespace().nth(1).map(str::to_string)).collect())
    }

    fn running(&self, id: &str, verb: &str) -> Result<Record, Error> {
        let r = self.load_live(id)?;
        match self.status_of(&r, None) {
            Status::Running | Status::Paused | Status::Created if Self::qemu_alive(&r) => Ok(r),
            s => Err(Error::FailedPrecondition(format!("cannot {verb} VM {}: it is {}", r.name, s.as_str()))),
        }
    }

    fn reserve_name(&self, name: &str, id: &str) -> Result<(), Error> {
        validate_name(name)?;
        self.registry.reserve(name, id)
    }

    /// Launch QEMU (vCPUs stopped) under a new supervisor and record its pids.
    fn launch(&self, r: &mut Record, qemu_bin: &Path) -> Result<(), Error> {
        let dir = self.dir(&r.id);
        let _ = std::fs::remove_file(dir.join("exit.json"));
        // The tap is made at the first launch, and again if it is gone (removed by hand, or the
        // host rebooted).
        if let (Some(Nic { backend: NetBackend::Tap { ifname }, .. }), Some(lease)) = (&r.machine.net, r.lease) {
            if !tap::exists(ifname) {
                tap::ensure_bridge(network::BRIDGE, lease.gateway, lease.prefix)
                    .and_then(|()| tap::create(ifname, network::BRIDGE))
                    .map_err(|e| Error::FailedPrecondition(format!("bridge networking for VM {}: {e}", r.name)))?;
            }
        }
        let mut machine = r.machine.clone();
        machine.start_paused = true;
        let config = supervisor::Config {
            dir: dir.clone(),
            qemu: qemu_bin.to_path_buf(),
            args: qemu::args(&machine),
            qemu_log: dir.join("qemu.log"),
            console_log: dir.join("console.log"),
            log_max_size: logs::DEFAULT_MAX_SIZE,
            log_max_files: logs::DEFAULT_MAX_FILES,
            exit_file: dir.join("exit.json"),
            ready_timeout: READY_TIMEOUT,
            state_file: dir.join(SUPERVISOR_STATE),
            adopt: None,
            ports: match r.lease {
                Some(lease) => r
                    .request
                    .ports
                    .iter()
                    .map(|p| PortForward {
                        host: SocketAddr::new(p.host_ip.unwrap_or(network::ANY_V4), p.host_port),
                        container: SocketAddr::new(lease.address.into(), p.container_port),
                        protocol: Protocol::Tcp,
                    })
                    .collect(),
                None => Vec::new(),
            },
        };
        let path = dir.join("supervisor.json");
        let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let _ = std::fs::remove_file(dir.join(SUPERVISOR_STATE));
        std::fs::write(&path, json).map_err(Error::io("writing supervisor.json"))?;
        let started = supervisor::spawn(&self.exe, &path, &dir.join("supervisor.log")).map_err(|e| match e {
            SpawnError::Qemu(msg) => Error::FailedPrecondition(format!("QEMU failed to start VM {}: {msg}", r.name)),
            other => Error::Internal(other.to_string()),
        })?;
        r.qemu_pid = Some(started.qemu_pid);
        r.qemu_start = process_start_time(started.qemu_pid);
        r.supervisor_pid = Some(started.supervisor_pid);
        r.supervisor_start = process_start_time(started.supervisor_pid);
        r.started_at = None;
        self.save(r)
    }

    /// Create the VM's files (overlay or snapshot disk, cloud-init seed), then launch QEMU.
    fn create_inner(&self, r: &mut Record, setup: &Setup) -> Result<(), Error> {
        let dir = self.dir(&r.id);
        match setup.base {
            Some((base, info)) => {
                let overlay = dir.join("disk.qcow2");
                qemu::create_overlay(setup.qemu_img, &overlay, base, &info.format, setup.disk_size)
                    .map_err(Error::FailedPrecondition)?;
                r.machine.disk = Some(overlay);
            }
            None => {
                let disk = dir.join("state.qcow2");
                qemu::create_qcow2(setup.qemu_img, &disk, STATE_DISK_MIB).map_err(Error::FailedPrecondition)?;
                r.machine.state_disk = Some(disk);
            }
        }
        let mut network_config = None;
        if let Some(Nic { mac, backend: NetBackend::Tap { .. } }) = &r.machine.net {
            // The address now (the seed carries it); the tap when QEMU is launched.
            let net = BridgeNetwork::discover().map_err(|e| Error::FailedPrecondition(e.to_string()))?;
            let lease = net.lease(&r.id).map_err(|e| Error::FailedPrecondition(e.to_string()))?;
            r.lease = Some(lease);
            self.save(r)?;
            network_config = Some(network_config_v2(mac, &lease));
        }
        if let Some(own) = setup.network_config {
            network_config = Some(String::from_utf8_lossy(own).into_owned());
        }
        // The seed carries the user's user-data and, on the bridge, the guest's address (there
        // is no DHCP server on the node bridge).
        if setup.user_data.is_some() || network_config.is_some() {
            let path = dir.join("seed.img");
            let meta = seed::meta_data(&r.id, &r.name);
            let user_data = setup.user_data.unwrap_or(b"#cloud-config\n");
            seed::write(&path, &seed::Seed { user_data, meta_data: &meta, network_config: network_config.as_deref() })
                .map_err(|e| Error::Internal(e.to_string()))?;
            r.machine.seed = Some(path);
        }
        self.save(r)?;
        self.launch(r, setup.qemu)
    }

    /// Remove every trace of a VM. Idempotent: each step checks what exists, and works without
    /// a record (an interrupted create may not have written one): the tap is named by the id,
    /// the lease is held under the id, the supervisor and QEMU are in the supervisor's state
    /// file. The record goes last: if the tap or the lease cannot be removed, the VM stays
    /// listed and `rm -f` can be retried.
    fn cleanup(&self, id: &str, name: Option<&str>, r: Option<&Record>) -> Result<(), Error> {
        let dir = self.dir(id);
        let state = strata_supervise::util::read_supervisor_state(&dir.join(SUPERVISOR_STATE));
        let qemu = r.and_then(|r| r.qemu_pid.zip(r.qemu_start)).or_else(|| state.as_ref().and_then(|s| s.child()));
        let supervisor = r
            .and_then(|r| r.supervisor_pid.zip(r.supervisor_start))
            .or_else(|| state.as_ref().and_then(|s| s.supervisor()));
        if let Some((p, s)) = qemu {
            if process_alive(p, s) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                wait_pid_exit(p, s, Some(Duration::from_secs(10)));
            }
        }
        if let Some((p, s)) = supervisor {
            if !wait_pid_exit(p, s, Some(Duration::from_secs(3))) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
                wait_pid_exit(p, s, Some(Duration::from_secs(3)));
            }
        }
        let mut result = Ok(());
        let what = r.map(|r| r.name.as_str()).or(name).unwrap_or(id);
        // Without a record the VM may have had a tap and a lease: both are named by the id.
        let bridged = r.map_or(true, |r| matches!(&r.machine.net, Some(Nic { backend: NetBackend::Tap { .. }, .. })));
        if bridged {
            let ifname = tap_name(id);
            if let Err(e) = remove_tap(&ifname) {
                result = Err(Error::Internal(format!("removing tap {ifname} of VM {what}: {e}")));
            }
            if let Err(e) = BridgeNetwork::discover().and_then(|n| n.release(id)) {
                result = Err(Error::Internal(format!("releasing the address of VM {what}: {e}")));
            }
        }
        result?;
        // A VM's disk overlay can be large: its files are deleted in the background.
        self.registry.discard(id).map_err(|e| Error::Io { context: format!("removing {}", dir.display()), source: e })?;
        if let Some(name) = r.map(|r| r.name.as_str()).or(name) {
            self.registry.release(name, id);
        }
        Ok(())
    }

    /// Remove a VM under a remove intent (an interrupted removal is finished by the next
    /// process that opens the driver).
    fn remove(&self, id: &str, r: &Record) -> Result<(), Error> {
        let intent = self.registry.begin(Op::Remove, id, &r.name)?;
        let result = self.cleanup(id, Some(&r.name), Some(r));
        if result.is_ok() {
            intent.finish();
        }
        result
    }
}

/// Remove a tap. A tap still attached to a QEMU that is dying cannot be opened (`EBUSY`) until
/// that QEMU is reaped, which takes as long as its parent takes (a QEMU whose supervisor was
/// killed belongs to the host's init): after `tap::remove`'s short retry the device is deleted
/// over rtnetlink instead (`ip link delete`), which works while it is attached.
fn remove_tap(ifname: &str) -> std::io::Result<()> {
    match tap::remove(ifname) {
        Err(e) if e.kind() == std::io::ErrorKind::ResourceBusy => {}
        other => return other,
    }
    tracing::info!(tap = ifname, "the tap is still attached to an exiting QEMU; deleting the link");
    let out = std::process::Command::new("ip")
        .args(["link", "delete", "dev", ifname])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while tap::exists(ifname) {
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::other(format!(
                "tap {ifname} is busy and `ip link delete` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The VM's tap device: `stv` and 12 hex digits of its id (interface names hold 15 bytes).
fn tap_name(id: &str) -> String {
    format!("stv{}", &id[..12.min(id.len())])
}

/// cloud-init network-config (version 2): a static address on the NIC with this MAC.
fn network_config_v2(mac: &str, lease: &Lease) -> String {
    format!(
        "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"{mac}\"\n    set-name: eth0\n    addresses: [{}/{}]\n    gateway4: {}\n",
        lease.address, lease.prefix, lease.gateway
    )
}

/// What `create` prepared before the VM's directory exists.
struct Setup<'a> {
    qemu: &'a Path,
    qemu_img: &'a Path,
    base: Option<&'a (PathBuf, qemu::ImageInfo)>,
    user_data: Option<&'a [u8]>,
    /// The caller's network-config (else the driver's, with the bridge address).
    network_config: Option<&'a [u8]>,
    disk_size: Option<u64>,
}

/// Read a cloud-init user-data file (any format cloud-init knows; only its size is checked).
fn read_user_data(path: &Path) -> Result<Vec<u8>, Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::InvalidArgument(format!("cloud-init user-data {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Error::InvalidArgument(format!("cloud-init user-data {}: not a regular file", path.display())));
    }
    if meta.len() > seed::MAX_USER_DATA as u64 {
        return Err(Error::InvalidArgument(format!(
            "cloud-init user-data {}: {} bytes, at most {} accepted",
            path.display(),
            meta.len(),
            seed::MAX_USER_DATA
        )));
    }
    std::fs::read(path).map_err(|e| Error::InvalidArgument(format!("cloud-init user-data {}: {e}", path.display())))
}

/// Port mappings as QEMU host forwards; each host port must be free now (QEMU would fail
/// later with a vaguer message).
fn forwards(ports: &[crate::PortMapping]) -> Result<Vec<Forward>, Error> {
    ports
        .iter()
        .map(|p| {
            let ip = p.host_ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
            std::net::TcpListener::bind((ip, p.host_port)).map_err(|e| {
                Error::InvalidArgument(format!("host port {ip}:{} cannot be published: {e}", p.host_port))
            })?;
            Ok(Forward { host_ip: p.host_ip, host_port: p.host_port, guest_port: p.container_port })
        })
        .collect()
}

fn qmp_error(e: QmpError) -> Error {
    match e {
        QmpError::Command { desc, .. } => Error::FailedPrecondition(desc),
        QmpError::Timeout(_) => Error::Timeout("QEMU to answer on QMP".into()),
        other => Error::Internal(other.to_string()),
    }
}

fn vm_spec(req: &CreateRequest) -> Result<&VmSpec, Error> {
    match &req.workload {
        crate::Workload::Vm(v) => Ok(v),
        other => Err(Error::InvalidArgument(format!("the VM driver cannot run a {} workload", other.kind()))),
    }
}

/// VM names also name QEMU processes (`-name`): at most 64 characters.
fn validate_name(name: &str) -> Result<(), Error> {
    if name.len() > 64 {
        return Err(Error::InvalidArgument(format!("invalid VM name {name:?}: at most 64 characters")));
    }
    registry::validate_name(name, "VM")
}

/// A file the VM boots from: it must exist now (QEMU reads it at launch), as an absolute path
/// (QEMU runs in the VM directory).
fn boot_file(what: &str, p: &Path) -> Result<PathBuf, Error> {
    let abs = std::fs::canonicalize(p).map_err(|e| Error::InvalidArgument(format!("{what} {}: {e}", p.display())))?;
    if !abs.is_file() {
        return Err(Error::InvalidArgument(format!("{what} {}: not a regular file", p.display())));
    }
    Ok(abs)
}

/// A raw disk image (qemu-img's verdict for any file it recognises no format in) boots through
/// SeaBIOS only with a boot sector: the `55 AA` signature at byte 510, as the firmware checks.
/// Without one it is no disk image (a text file, a truncated download): refused now, rather
/// than a guest that never writes to its console.
fn bios_bootable(path: &Path) -> Result<(), Error> {
    use std::io::Read;
    let mut sector = [0u8; 512];
    let read = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut sector));
    let ok = match read {
        Ok(()) => sector[510..] == [0x55, 0xaa],
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => return Err(Error::InvalidArgument(format!("disk image {}: {e}", path.display()))),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "disk image {}: not a bootable disk image: a raw image without a boot sector (no 55 AA signature at byte 510)",
            path.display()
        )))
    }
}

impl Driver for VmDriver {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            kind: "vm".into(),
            isolation: "vm".into(),
            exec: false,
            pause: true,
            stats: true,
            port_publishing: true,
            network_modes: vec![NetworkMode::Bridge, NetworkMode::User, NetworkMode::None],
        }
    }

    fn create(&self, req: &CreateRequest) -> Result<String, Error> {
        // Everything that can be checked without side effects is checked first: a bad request
        // leaves no file, name or process behind.
        let spec = vm_spec(req)?;
        let kernel = spec.kernel.as_deref().map(|k| boot_file("kernel", k)).transpose()?;
        let base = spec.disk.as_deref().map(|d| boot_file("disk image", d)).transpose()?;
        if kernel.is_none() && base.is_none() {
            return Err(Error::InvalidArgument("a VM needs a kernel (--kernel) or a disk image (--disk)".into()));
        }
        if kernel.is_none() && (spec.initrd.is_some() || spec.append.is_some()) {
            return Err(Error::InvalidArgument("an initrd or a kernel command line needs a kernel (--kernel)".into()));
        }
        let initrd = spec.initrd.as_deref().map(|p| boot_file("initrd", p)).transpose()?;
        let user_data = spec.cloud_init.as_deref().map(read_user_data).transpose()?;
        let network_config = spec.network_config.as_deref().map(read_user_data).transpose()?;
        let qemu_bin = qemu::qemu_binary().map_err(Error::FailedPrecondition)?;
        let qemu_img = qemu::qemu_img_binary().map_err(Error::FailedPrecondition)?;
        let base = match base {
            Some(path) => {
                let info = qemu::image_info(&qemu_img, &path)
                    .map_err(|e| Error::InvalidArgument(format!("disk image {}: {e}", path.display())))?;
                if info.format == "raw" {
                    bios_bootable(&path)?;
                }
                if let Some(size) = spec.disk_size_bytes {
                    if size < info.virtual_size {
                        return Err(Error::InvalidArgument(format!(
                            "disk size {size} bytes is smaller than the image {} ({} bytes); disks only grow",
                            path.display(),
                            info.virtual_size
                        )));
                    }
                }
                Some((path, info))
            }
            None if spec.disk_size_bytes.is_some() => {
                return Err(Error::InvalidArgument("a disk size needs a disk image (--disk)".into()));
            }
            None => None,
        };
        let backend = match req.network {
            NetworkMode::None if !req.ports.is_empty() => {
                return Err(Error::InvalidArgument("ports cannot be published without a network".into()));
            }
            NetworkMode::None => None,
            NetworkMode::User => Some(NetBackend::User { forwards: forwards(&req.ports)? }),
            NetworkMode::Bridge => {
                BridgeNetwork::discover().map_err(|e| Error::FailedPrecondition(e.to_string()))?;
                forwards(&req.ports)?;
                Some(NetBackend::Tap { ifname: String::new() })
            }
            NetworkMode::Host => {
                return Err(Error::InvalidArgument("a VM cannot share the host's network; use user or none".into()));
            }
        };
        let memory_mib = req.resources.memory_bytes.map(|b| b.div_ceil(1 << 20)).unwrap_or(DEFAULT_MEMORY_MIB);
        if memory_mib < 32 {
            return Err(Error::InvalidArgument(format!("a VM needs at least 32 MiB of memory, not {memory_mib} MiB")));
        }
        let cpus = req.resources.cpus.map(|c| c.ceil().max(1.0) as u32).unwrap_or(1);

        let id = random_id();
        let name = req.name.clone().unwrap_or_else(|| id[..12].to_string());
        let backend = backend.map(|b| match b {
            NetBackend::Tap { .. } => NetBackend::Tap { ifname: tap_name(&id) },
            other => other,
        });
        validate_name(&name)?;
        // Before any side effect: if this process dies half-way, whoever opens the driver next
        // finishes or rolls back this VM.
        let intent = self.registry.begin(Op::Create, &id, &name)?;
        if let Err(e) = self.reserve_name(&name, &id) {
            intent.finish();
            return Err(e);
        }
        let dir = self.dir(&id);
        if let Err(e) = std::fs::create_dir(&dir) {
            self.registry.release(&name, &id);
            intent.finish();
            return Err(Error::Io { context: format!("creating {}", dir.display()), source: e });
        }
        let decision = accel::decide(&qemu_bin, kernel.as_deref(), &self.root.join("vm-accel.json"));
        let mut record = Record {
            id: id.clone(),
            name: name.clone(),
            request: req.clone(),
            machine: Machine {
                name,
                accel: decision.accel,
                memory_mib,
                cpus,
                kernel,
                initrd,
                append: spec.append.clone().unwrap_or_else(|| qemu::DEFAULT_APPEND.to_string()),
                disk: None,
                seed: None,
                net: backend.map(|backend| Nic { mac: qemu::mac_for(&id), backend }),
                state_disk: None,
                start_paused: true,
                // Only root can give QEMU another user; others run it as themselves.
                run_as: nix::unistd::geteuid().is_root().then(|| qemu::runas_id(&id)),
                guest: None,
            },
            accel_reason: decision.reason,
            created_at: now(),
            started_at: None,
            qemu_pid: None,
            qemu_start: None,
            supervisor_pid: None,
            supervisor_start: None,
            lease: None,
        };
        let setup = Setup {
            qemu: &qemu_bin,
            qemu_img: &qemu_img,
            base: base.as_ref(),
            user_data: user_data.as_deref(),
            network_config: network_config.as_deref(),
            disk_size: spec.disk_size_bytes,
        };
        let result = self.save(&record).and_then(|()| self.create_inner(&mut record, &setup));
        match result {
            Ok(()) => {
                intent.finish();
                if record.machine.accel == Accel::Tcg {
                    tracing::warn!(
                        "KVM is not usable ({}); VM {} runs with TCG software emulation, which is much slower",
                        record.accel_reason,
                        record.name
                    );
                }
                Ok(id)
            }
            Err(e) => {
                match self.cleanup(&id, Some(&record.name), Some(&record)) {
                    Ok(()) => intent.finish(),
                    // The intent stays: the next process to open the driver retries.
                    Err(ce) => tracing::warn!(vm = %id, error = %ce, "cleanup after failed create"),
                }
                Err(e)
            }
        }
    }

    fn start(&self, id: &str) -> Result<(), Error> {
        let mut r = self.load(id)?;
        match self.status_of(&r, self.qemu_status(&r).as_deref()) {
            Status::Created => {}
            Status::Exited | Status::Unknown => {
                let qemu_bin = qemu::qemu_binary().map_err(Error::FailedPrecondition)?;
                self.launch(&mut r, &qemu_bin)?;
            }
            s => return Err(Error::FailedPrecondition(format!("cannot start VM {}: it is {}", r.name, s.as_str()))),
        }
        self.qmp(id)?.cont().map_err(qmp_error)?;
        r.started_at = Some(now());
        self.save(&r)
    }

    fn stop(&self, id: &str, timeout: Duration) -> Result<ExitStatus, Error> {
        let r = self.load(id)?;
        if !Self::qemu_alive(&r) {
            return self.wait(id, Some(Duration::from_secs(5)));
        }
        let (Some(pid), Some(start)) = (r.qemu_pid, r.qemu_start) else {
            return self.wait(id, Some(Duration::from_secs(5)));
        };
        let graceful = (|| -> Result<bool, QmpError> {
            let mut q = Qmp::connect(&self.dir(id).join(qemu::QMP_SOCKET), QMP_TIMEOUT)?;
            let st = q.query_status()?;
            if st.status == "prelaunch" {
                // Never booted: nothing to shut down gracefully.
                return Ok(false);
            }
            if !st.running {
                // A paused guest cannot see the power button.
                q.cont()?;
            }
            q.system_powerdown()?;
            Ok(true)
        })();
        let exited = match graceful {
            Ok(true) => wait_pid_exit(pid, start, Some(timeout)),
            Ok(false) => false,
            Err(e) => {
                tracing::debug!(vm = id, error = %e, "powerdown not delivered");
                false
            }
        };
        if !exited {
            let quit = self.qmp(id).and_then(|mut q| q.quit().map_err(qmp_error));
            if quit.is_err() || !wait_pid_exit(pid, start, Some(Duration::from_secs(10))) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        self.wait(id, Some(Duration::from_secs(30)))
    }

    fn kill(&self, id: &str, signal: i32) -> Result<(), Error> {
        let r = self.running(id, "kill")?;
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        let pid = r.qemu_pid.ok_or_else(|| Error::Internal("running VM without a pid".into()))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .map_err(|e| Error::Internal(format!("signalling QEMU of {}: {e}", r.name)))
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), Error> {
        self.recover();
        let r = self.load(id)?;
        if Self::qemu_alive(&r) && !force {
            return Err(Error::FailedPrecondition(format!(
                "cannot remove VM {}: it is running; stop it first or force the removal",
                r.name
            )));
        }
        self.remove(id, &r)
    }

    fn state(&self, id: &str) -> Result<WorkloadState, Error> {
        let r = self.load_live(id)?;
        let qs = self.qemu_status(&r);
        Ok(self.to_state(&r, qs.as_deref()))
    }

    fn list(&self) -> Result<Vec<WorkloadState>, Error> {
        self.recover();
        Ok(self
            .records()?
            .iter_mut()
            .map(|r| {
                self.ensure_supervisor(r);
                let qs = self.qemu_status(r);
                self.to_state(r, qs.as_deref())
            })
            .collect())
    }

    fn resolve(&self, name_or_id: &str) -> Result<String, Error> {
        self.registry.resolve(name_or_id)
    }

    fn wait(&self, id: &str, timeout: Option<Duration>) -> Result<ExitStatus, Error> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let left = || deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        loop {
            let r = self.load(id)?;
            if !Self::qemu_alive(&r) {
                if let Some(exit) = self.exit_record(id) {
                    return Ok(exit);
                }
            }
            if left().is_some_and(|l| l.is_zero()) {
                return Err(Error::Timeout(format!("VM {} to exit", r.name)));
            }
            let slice = left().map_or(Duration::from_millis(200), |l| l.min(Duration::from_millis(200)));
            match ((r.qemu_pid, r.qemu_start), (r.supervisor_pid, r.supervisor_start)) {
                ((Some(p), Some(s)), _) if process_alive(p, s) => {
                    wait_pid_exit(p, s, left());
                }
                (_, (Some(p), Some(s))) if process_alive(p, s) => {
                    wait_pid_exit(p, s, Some(slice));
                }
                _ => {
                    if let Some(exit) = self.exit_record(id) {
                        return Ok(exit);
                    }
                    return Err(Error::FailedPrecondition(format!(
                        "the supervisor of VM {} is gone; its exit status was lost",
                        r.name
                    )));
                }
            }
        }
    }

    fn logs(&self, id: &str, opts: &LogOptions, sink: &mut dyn FnMut(&LogRecord) -> bool) -> Result<(), Error> {
        let r = self.load(id)?;
        let path = self.dir(id).join("console.log");
        if !path.exists() {
            return Ok(());
        }
        let supervisor = r.supervisor_pid.zip(r.supervisor_start);
        crate::workload_log::read(&path, supervisor, opts, &format!("the console log of {}", r.name), sink)
    }

    fn exec(&self, id: &str, _req: &ExecRequest) -> Result<ExecResult, Error> {
        Err(Error::Unsupported(format!("exec in VM {id}: use the console")))
    }

    /// QEMU's own usage: CPU time, resident memory (against the guest's size as the limit) and
    /// threads.
    fn stats(&self, id: &str) -> Result<Stats, Error> {
        let r = self.running(id, "read stats of")?;
        let gone = || Error::FailedPrecondition(format!("the QEMU of VM {} is gone", r.name));
        let pid = r.qemu_pid.ok_or_else(gone)?;
        let p = strata_oci::procs::read(pid).ok_or_else(gone)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| gone())?;
        let field = |k: &str| {
            status.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        };
        Ok(Stats {
            memory_bytes: field("VmRSS:").unwrap_or(0) * 1024,
            memory_limit_bytes: Some(r.machine.memory_mib << 20),
            cpu_usage_ns: u64::try_from(p.cpu_time.as_nanos()).unwrap_or(u64::MAX),
            pids: field("Threads:").unwrap_or(1),
        })
    }

    fn pause(&self, id: &str) -> Result<(), Error> {
        let r = self.running(id, "pause")?;
        let mut q = self.qmp(id)?;
        let st = q.query_status().map_err(qmp_error)?;
        if st.status != "running" {
            return Err(Error::FailedPrecondition(format!("cannot pause VM {}: it is {}", r.name, st.status)));
        }
        q.stop().map_err(qmp_error)
    }

    fn resume(&self, id: &str) -> Result<(), Error> {
        let r = self.running(id, "resume")?;
        let mut q = self.qmp(id)?;
        let st = q.query_status().map_err(qmp_error)?;
        if st.status != "paused" {
            return Err(Error::FailedPrecondition(format!("cannot resume VM {}: it is {}", r.name, st.status)));
        }
        q.cont().map_err(qmp_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("demo-1.a_b").is_ok());
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_requests_leave_nothing_behind() {
        let root = tempfile::tempdir().expect("tmp");
        let d = VmDriver::open(root.path(), PathBuf::from("/nonexistent/strata")).expect("open");
        let req = |kernel: &str| CreateRequest {
            name: Some("x".into()),
            workload: crate::Workload::Vm(VmSpec { kernel: Some(kernel.into()), ..Default::default() }),
            ..Default::default()
        };
        let err = d.create(&req("/nonexistent/vmlinuz")).expect_err("missing kernel");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains("/nonexistent/vmlinuz"), "{err}");
        let err = d.create(&CreateRequest::default()).expect_err("a container request");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert_eq!(std::fs::read_dir(root.path().join("vms")).expect("ls").count(), 0);
        assert_eq!(std::fs::read_dir(root.path().join("vm-names")).expect("ls").count(), 0);
        assert!(matches!(d.resolve("nope"), Err(Error::NotFound(_))));
    }
}

/// Pods in VMs (VM-isolated pods) are for a later issue: every pod call is `Unsupported`, so
/// an agent can hold a `dyn PodRuntime` for any driver.
impl crate::PodRuntime for VmDriver {
    fn health(&self) -> Result<(), Error> {
        Err(unsupported("pod sandboxes"))
    }
    fn run_pod_sandbox(&self, _: &crate::pod::PodSandboxConfig) -> Result<String, Error> {
        Err(unsupported("pod sandboxes"))
    }
    fn stop_pod_sandbox(&self, _: &str) -> Result<(), Error> {
        Err(unsupported("pod sandboxes"))
    }
    fn remove_pod_sandbox(&self, _: &str) -> Result<(), Error> {
        Err(unsupported("pod sandboxes"))
    }
    fn pod_sandbox_status(&self, _: &str) -> Result<crate::pod::PodSandboxStatus, Error> {
        Err(unsupported("pod sandboxes"))
    }
    fn list_pod_sandboxes(&self, _: &crate::pod::SandboxFilter) -> Result<Vec<crate::pod::PodSandboxStatus>, Error> {
        Err(unsupported("pod sandboxes"))
    }
    fn create_container(&self, _: &str, _: &crate::pod::ContainerConfig) -> Result<String, Error> {
        Err(unsupported("pod containers"))
    }
    fn start_container(&self, _: &str) -> Result<(), Error> {
        Err(unsupported("pod containers"))
    }
    fn stop_container(&self, _: &str, _: Duration) -> Result<(), Error> {
        Err(unsupported("pod containers"))
    }
    fn remove_container(&self, _: &str) -> Result<(), Error> {
        Err(unsupported("pod containers"))
    }
    fn container_status(&self, _: &str) -> Result<crate::pod::ContainerStatus, Error> {
        Err(unsupported("pod containers"))
    }
    fn list_containers(&self, _: &crate::pod::ContainerFilter) -> Result<Vec<crate::pod::ContainerStatus>, Error> {
        Err(unsupported("pod containers"))
    }
    fn exec_sync(&self, _: &str, _: &[String], _: Option<Duration>) -> Result<crate::pod::ExecSyncResult, Error> {
        Err(unsupported("pod containers"))
    }
    fn exec_session(&self, _: &str, _: &crate::pod::ExecSessionRequest) -> Result<crate::pod::ExecSession, Error> {
        Err(unsupported("pod containers"))
    }
    fn container_logs(&self, _: &str, _: &LogOptions, _: &mut dyn FnMut(&LogRecord) -> bool) -> Result<(), Error> {
        Err(unsupported("pod containers"))
    }
    fn attach_container(&self, _: &str) -> Result<crate::Attachment, Error> {
        Err(unsupported("pod containers"))
    }
    fn subscribe(&self) -> Result<std::sync::mpsc::Receiver<crate::pod::PodEvent>, Error> {
        Err(unsupported("pod events"))
    }
    fn port_forward(&self, _sandbox_id: &str, _port: u16) -> Result<std::net::TcpStream, Error> {
        Err(unsupported("port forwarding"))
    }
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported(format!("{what} on the VM driver (VM-isolated pods are not implemented yet)"))
}
