//! VM-isolated pods: [`MicroVmRuntime`], a [`PodRuntime`] whose sandboxes are microVMs (the
//! Clear Containers / Kata idea, with strata's parts).
//!
//! A sandbox is first made exactly as a container sandbox is, by a [`ContainerDriver`] over
//! `<root>/microvm` (network namespace on the node bridge, IP lease, hostname, `/etc` files, pod
//! cgroup, host ports, records, names, intents): that code is reused, not copied. Then a microVM
//! boots in that network namespace: QEMU `microvm` (KVM when the probe says it works, else TCG)
//! with the node's guest kernel and our initramfs (the static `strata-guest` as `/init`), a tap
//! tied to the pod's `eth0` by tc `mirred` redirects both ways (the pod address moves from `eth0`
//! to the guest's NIC, which takes `eth0`'s MAC), a virtio-9p share and the agent's
//! virtio-serial port. Containers are guest-agent requests; their rootfs is the image's overlay
//! mounted on the host under the share; their output comes back over the port and is written
//! into the same CRI log files as container pods'.
//!
//! On-disk layout:
//! ```text
//! <root>/microvm/                    the inner ContainerDriver's root (sandboxes/, sandbox-names/, ...)
//! <root>/microvm/vms/<sandbox>/      vm.json, qemu.pid, qemu.log, agent.sock, serial.sock, qmp.sock
//! <root>/microvm/vms/<sandbox>/share/etc/{hostname,hosts,resolv.conf}      seen by the guest at /run/strata/shared
//! <root>/microvm/vms/<sandbox>/share/<container>/rootfs                    the image overlay (upper/work in ctr/<container>)
//! <root>/microvm/pod-containers/<container>.json                          container records
//! <root>/microvm/initramfs-<release>.cpio                                 built once per kernel and agent
//! ```
//!
//! QEMU runs daemonized (nobody's child), so VMs outlive the process that started them; a new
//! driver connects again to each VM's agent socket (a guest that wrote while nobody listened
//! was blocked, not dropped). Only one process per root may hold a VM's channel.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_image::ImageStore;
use strata_oci::network;
use strata_supervise::logs::{LogWriter, Stream as LogStreamKind};
use strata_vm::accel;
use strata_vm::agent::protocol::{self, BindMount, GuestMessage, NetworkConfig, Request, Response, Stream};
use strata_vm::agent::{self as agent, AgentClient};
use strata_vm::initramfs::{self, GuestKernel};
use strata_vm::qemu::{self, GuestDevices, Machine, NetBackend, Nic};

use crate::container::{config, rootfs};
use crate::pod::{
    labels, ContainerConfig, ContainerFilter, ContainerResourceSpec, ContainerState, ContainerStatus, ExecSession, ExecSessionRequest, ExecSyncResult, MountSource, NamespaceMode,
    PodEvent, PodEventKind, PodRuntime, PodSandboxConfig, PodSandboxStatus, SandboxFilter, SandboxState,
};
use crate::registry::{now, random_id};
use crate::{Attachment, ContainerDriver, Error, ExitStatus, LogOptions, LogRecord};

/// What the node gives VM-isolated pods.
#[derive(Clone, Debug)]
pub struct MicroVmConfig {
    /// A guest kernel tree (`--vm-kernel`, see [`GuestKernel::open`]).
    pub kernel: PathBuf,
    /// The static guest agent (`strata-guest`).
    pub guest_agent: PathBuf,
    /// Guest memory of a pod without requests or limits, and the floor added to a pod's memory
    /// (the guest kernel, the agent, page cache).
    pub memory_mib: u64,
    /// vCPUs of a pod without cpu requests or limits, and the least any pod gets.
    pub cpus: u32,
    /// Under TCG, the size of QEMU's translation-block cache (`-accel tcg,tb-size=N`, MiB);
    /// `None`: QEMU's default (1 GiB on 64-bit hosts, filled as the guest runs new code).
    pub tcg_tb_size_mib: Option<u32>,
}

impl MicroVmConfig {
    pub fn new(kernel: PathBuf, guest_agent: PathBuf) -> MicroVmConfig {
        MicroVmConfig { kernel, guest_agent, memory_mib: 256, cpus: 1, tcg_tb_size_mib: Some(DEFAULT_TB_SIZE_MIB) }
    }
}

/// A pod's guest: the floor plus the pod's memory (its limit, else its request), and vCPUs for
/// its cpu (its limit, else its request, rounded up), at least the floor and at most the host's.
fn guest_size(config: &MicroVmConfig, r: Option<&ContainerResourceSpec>, host_cpus: u32) -> (u64, u32) {
    let mem = r.and_then(|r| r.memory_limit_bytes.or(r.memory_request_bytes)).map(|b| b.div_ceil(1 << 20)).unwrap_or(0);
    let cpu = r.and_then(|r| r.cpu_limit_millis.or(r.cpu_request_millis)).map(|m| m.div_ceil(1000)).unwrap_or(0);
    let cpus = u32::try_from(cpu).unwrap_or(u32::MAX).max(config.cpus).min(host_cpus.max(config.cpus));
    (config.memory_mib + mem, cpus)
}

/// The host's online CPUs.
fn host_cpus() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// The translation cache of a pod's QEMU under TCG: an idle pod's guest fills all of it, and
/// QEMU's own memory (outside guest RAM) follows it MiB for MiB (one QEMU by hand, RSS: 86 MiB at
/// 32, 68 at 16, 59 at 8). At 8 the guest's boot flushes the cache about 12 times (3 at 16) and
/// reaches its agent as fast within this machine's noise (3 alternating pairs by hand: 29.2, 17.8,
/// 17.1 s at 8 against 33.9, 15.2, 13.7 s at 16); at 16 a node's only VM-isolated pod held 68-69
/// MiB outside its guest's RAM as RSS, above the 64 MiB goal (docs/benchmarks.md, VM-isolated
/// pods). A workload that runs much new code in the guest may want more (`--vm-tb-size`).
pub const DEFAULT_TB_SIZE_MIB: u32 = 8;

/// `-machine M,accel=tcg,...` as `-machine M,...` and `-accel tcg,tb-size=N` (QEMU refuses the
/// two spellings together; the translation cache's size is an option of `-accel` only).
fn with_tb_size(args: &mut Vec<String>, mib: u32) {
    if let Some(i) = args.iter().position(|a| a == "-machine") {
        if let Some(m) = args.get_mut(i + 1) {
            *m = m.split(',').filter(|p| *p != "accel=tcg").collect::<Vec<_>>().join(",");
        }
    }
    args.extend(["-accel".to_string(), format!("tcg,tb-size={mib}")]);
}

/// How long a guest may take from QEMU's start to its agent's first answer (TCG on a busy host).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// An agent request that does nothing slow.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The guest's NIC in the pod's network namespace, tied to the pod's `eth0`.
const TAP: &str = "tap0";
const LOG_MAX_SIZE: u64 = 10 << 20;
/// Streams' names start so; container ids are hex digits only.
const STREAM_PREFIX: &str = "x-";
/// An exec terminal's size until the client sends its own.
const DEFAULT_TTY_SIZE: (u16, u16) = (24, 80);
const LOG_MAX_FILES: usize = 5;

/// A VM as recorded (`vms/<sandbox>/vm.json`), from the moment its QEMU runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct VmRecord {
    qemu_pid: i32,
    qemu_start: u64,
    accel: String,
    address: String,
    gateway: Option<String>,
    /// Still booting: the guest has not yet answered `hello` and taken its network. A sandbox
    /// whose VM stays so once its booting process is gone (an agent killed mid-boot) is
    /// NotReady, and its QEMU is stopped with it. Absent in records of booted VMs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    booting: bool,
}

/// A container in a microVM (`pod-containers/<id>.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CtrRecord {
    id: String,
    sandbox_id: String,
    config: ContainerConfig,
    image_ref: String,
    log_path: PathBuf,
    own_log: bool,
    created_at: String,
    started_at: Option<String>,
    state: ContainerState,
    pid: Option<i32>,
    exit: Option<ExitStatus>,
    labels: BTreeMap<String, String>,
    /// Host bind mounts made under the share for its volumes.
    volumes: Vec<PathBuf>,
}

/// One VM's agent connection and what it feeds.
struct Conn {
    client: AgentClient,
}

/// Where a stream's output goes (see `exec_session`, `port_forward`).
enum Sink {
    /// A streaming exec: pipes to the caller's session, and its exit code.
    Exec { out: std::fs::File, err: Option<std::fs::File>, exit: mpsc::Sender<i32> },
    /// A port-forward connection: the host end of a loopback pair.
    Conn { tcp: std::net::TcpStream },
}

struct StreamSink {
    sandbox: String,
    sink: Sink,
}

struct Shared {
    root: PathBuf,
    logs: Mutex<HashMap<String, LogWriter>>,
    /// Live streams by name (names are not container ids: `x-` and 16 hex digits).
    streams: Mutex<HashMap<String, Arc<StreamSink>>>,
    subscribers: Mutex<Vec<mpsc::Sender<PodEvent>>>,
    records: Mutex<()>,
    /// Attached clients' output feeds by container id (`attach_container`), ended by the exit.
    attached: Mutex<HashMap<String, Vec<mpsc::SyncSender<crate::OutputChunk>>>>,
}

impl Shared {
    fn record_path(&self, id: &str) -> PathBuf {
        self.root.join("pod-containers").join(format!("{id}.json"))
    }

    fn load(&self, id: &str) -> Result<CtrRecord, Error> {
        if id.is_empty() || id.contains('/') {
            return Err(Error::NotFound(format!("container {id:?}")));
        }
        let bytes = std::fs::read(self.record_path(id)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(format!("container {id}")),
            _ => Error::Io { context: format!("reading container {id}"), source: e },
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("container record {id}: {e}")))
    }

    fn save(&self, r: &CtrRecord) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(r).map_err(|e| Error::Internal(e.to_string()))?;
        strata_supervise::util::write_atomic(&self.record_path(&r.id), &bytes).map_err(Error::io(format!("saving container {}", r.id)))
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut CtrRecord)) -> Result<CtrRecord, Error> {
        let _g = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut r = self.load(id)?;
        f(&mut r);
        self.save(&r)?;
        Ok(r)
    }

    fn all(&self) -> Vec<CtrRecord> {
        let mut v: Vec<CtrRecord> = std::fs::read_dir(self.root.join("pod-containers"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(String::from))
            .filter_map(|id| self.load(&id).ok())
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        v
    }

    fn publish(&self, container_id: &str, sandbox_id: &str, kind: PodEventKind) {
        let ev = PodEvent { container_id: container_id.into(), sandbox_id: sandbox_id.into(), kind, time: now() };
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).retain(|s| s.send(ev.clone()).is_ok());
    }

    fn stream(&self, id: &str) -> Option<Arc<StreamSink>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Forget the streams of `sandbox` (its channel closed): their callers see an end.
    fn drop_streams(&self, sandbox: &str) {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, s| s.sandbox != sandbox);
    }

    /// What a VM's agent sends unasked: output into the CRI logs (or a stream's sink), exits
    /// into the records (or to a stream's caller).
    fn on_guest(&self, msg: GuestMessage) {
        use std::io::Write;
        match msg {
            GuestMessage::Output { id, stream, data } if id.starts_with(STREAM_PREFIX) => {
                let Some(s) = self.stream(&id) else { return };
                // A pipe the caller reads (or a loopback socket): blocks only while it does not.
                let written = match (&s.sink, stream) {
                    (Sink::Exec { err: Some(err), .. }, Stream::Stderr) => (&*err).write_all(&data),
                    (Sink::Exec { out, .. }, _) => (&*out).write_all(&data),
                    (Sink::Conn { tcp }, _) => (&*tcp).write_all(&data),
                };
                if let Err(e) = written {
                    tracing::debug!(stream = %id, error = %e, "stream output");
                }
            }
            GuestMessage::Exited { id, code, signal, .. } if id.starts_with(STREAM_PREFIX) => {
                let Some(s) = self.streams.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) else { return };
                match &s.sink {
                    Sink::Exec { exit, .. } => {
                        let _ = exit.send(code.unwrap_or_else(|| 128 + signal.unwrap_or(0)));
                    }
                    Sink::Conn { tcp } => {
                        let _ = tcp.shutdown(std::net::Shutdown::Write);
                    }
                }
            }
            GuestMessage::Output { id, stream, data } => {
                if let Some(feeds) = self.attached.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&id) {
                    let s = match stream {
                        Stream::Stdout => crate::LogStream::Stdout,
                        Stream::Stderr => crate::LogStream::Stderr,
                    };
                    // A client ATTACH_BACKLOG chunks behind is dropped rather than stalling the VM's output.
                    feeds.retain(|f| f.try_send(crate::OutputChunk { stream: s, data: data.clone() }).is_ok());
                }
                let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
                if !logs.contains_key(&id) {
                    let Ok(r) = self.load(&id) else { return };
                    match LogWriter::open(&r.log_path, LOG_MAX_SIZE, LOG_MAX_FILES) {
                        Ok(w) => {
                            logs.insert(id.clone(), w);
                        }
                        Err(e) => {
                            tracing::warn!(container = %id, error = %e, "cannot open the container's log");
                            return;
                        }
                    }
                }
                let Some(w) = logs.get_mut(&id) else { return };
                let kind = match stream {
                    Stream::Stdout => LogStreamKind::Stdout,
                    Stream::Stderr => LogStreamKind::Stderr,
                };
                // One record per line, a trailing piece without a newline as a partial one.
                for line in data.split_inclusive(|b| *b == b'\n') {
                    let (content, partial) = match line.strip_suffix(b"\n") {
                        Some(c) => (c, false),
                        None => (line, true),
                    };
                    if let Err(e) = w.write_record(kind, partial, content) {
                        tracing::warn!(container = %id, error = %e, "writing the container's log");
                    }
                }
            }
            GuestMessage::Exited { id, code, signal, oom_killed } => {
                self.logs.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                let code = code.unwrap_or_else(|| 128 + signal.unwrap_or(0));
                let exit = ExitStatus::new(code, signal, oom_killed, now());
                let updated = self.update(&id, |r| {
                    r.state = ContainerState::Exited;
                    r.exit = Some(exit.clone());
                });
                // After the record says Exited: an attach checks that under this lock.
                self.attached.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                match updated {
                    Ok(r) => self.publish(&id, &r.sandbox_id, PodEventKind::Exited(exit)),
                    Err(e) => tracing::debug!(container = %id, error = %e, "exit of an unknown container"),
                }
            }
            GuestMessage::Reply { .. } => {}
        }
    }
}

/// The microVM pod runtime (see the module documentation).
pub struct MicroVmRuntime {
    sandboxes: ContainerDriver,
    images: Arc<ImageStore>,
    kernel: GuestKernel,
    initramfs: PathBuf,
    config: MicroVmConfig,
    shared: Arc<Shared>,
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    /// Sandboxes whose VM this process is booting (Ready to callers meanwhile).
    booting: Mutex<std::collections::HashSet<String>>,
}

impl MicroVmRuntime {
    /// Open the runtime over `<root>/microvm`, building the initramfs if needed. `exe` is the
    /// `strata` binary (the sandboxes' supervisors).
    pub fn open(root: &Path, images: Arc<ImageStore>, exe: PathBuf, config: MicroVmConfig) -> Result<MicroVmRuntime, Error> {
        let kernel = GuestKernel::open(&config.kernel).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let root = root.join("microvm");
        for d in [root.join("vms"), root.join("pod-containers")] {
            std::fs::create_dir_all(&d).map_err(Error::io(format!("creating {}", d.display())))?;
        }
        let sandboxes = ContainerDriver::open(&root, "runc", images.clone(), exe)?;
        let agent_meta = std::fs::metadata(&config.guest_agent).map_err(Error::io(format!("guest agent {}", config.guest_agent.display())))?;
        let stamp = agent_meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_secs()).unwrap_or(0);
        let initramfs = root.join(format!("initramfs-{}-{}-{stamp}-{}.cpio", kernel.release, agent_meta.len(), initramfs::modules_stamp()));
        if !initramfs.exists() {
            initramfs::build(&kernel, &config.guest_agent, &initramfs).map_err(|e| Error::FailedPrecondition(format!("building the microVM initramfs: {e}")))?;
        }
        let shared = Arc::new(Shared { root, logs: Mutex::new(HashMap::new()), streams: Mutex::new(HashMap::new()), subscribers: Mutex::new(Vec::new()), records: Mutex::new(()), attached: Mutex::new(HashMap::new()) });
        let rt = MicroVmRuntime { sandboxes, images, kernel, initramfs, config, shared, conns: Mutex::new(HashMap::new()), booting: Mutex::new(Default::default()) };
        // Take the channels of the VMs already running (a restarted agent): their output and
        // exits, held back by the guests meanwhile, come in from now on.
        for s in rt.list_pod_sandboxes(&SandboxFilter::default())? {
            if s.state == SandboxState::Ready {
                if let Err(e) = rt.conn(&s.id) {
                    tracing::warn!(sandbox = %s.id, error = %e, "cannot reach the microVM of a pod sandbox");
                }
            }
        }
        Ok(rt)
    }

    /// The images of the VM-isolated pods' containers on node root `root` (their rootfs are
    /// overlays of the images' layers), read from the records without opening the runtime.
    pub fn image_ids_in_use(root: &Path) -> std::collections::HashSet<String> {
        let dir = root.join("microvm").join("pod-containers");
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|b| serde_json::from_slice::<CtrRecord>(&b).ok())
            .map(|r| r.image_ref)
            .collect()
    }

    /// The guest kernel's release (`uname -r` in every VM-isolated pod).
    pub fn kernel_release(&self) -> &str {
        &self.kernel.release
    }

    fn vm_dir(&self, sandbox: &str) -> PathBuf {
        self.shared.root.join("vms").join(sandbox)
    }

    fn vm_record(&self, sandbox: &str) -> Option<VmRecord> {
        std::fs::read(self.vm_dir(sandbox).join("vm.json")).ok().and_then(|b| serde_json::from_slice(&b).ok())
    }

    fn save_vm_record(&self, sandbox: &str, vm: &VmRecord) -> Result<(), Error> {
        let bytes = serde_json::to_vec_pretty(vm).map_err(|e| Error::Internal(e.to_string()))?;
        strata_supervise::util::write_atomic(&self.vm_dir(sandbox).join("vm.json"), &bytes).map_err(Error::io("saving vm.json"))
    }

    /// The sandbox as the inner driver sees it, NotReady when its VM is not up: never booted,
    /// left booting by a process that is gone, or its QEMU dead. (The agent then stops it and
    /// makes a new one, as for a container sandbox whose supervisor died.)
    fn with_vm_state(&self, mut s: PodSandboxStatus) -> PodSandboxStatus {
        if s.state == SandboxState::Ready && !self.booting.lock().unwrap_or_else(|e| e.into_inner()).contains(&s.id) {
            let up = self.vm_record(&s.id).is_some_and(|vm| !vm.booting && strata_supervise::util::process_alive(vm.qemu_pid, vm.qemu_start));
            if !up {
                s.state = SandboxState::NotReady;
            }
        }
        s
    }

    /// QEMU of a sandbox from its pid file alone (it is written before `vm.json`): the process
    /// only if it still runs in the VM's directory, so a reused pid is never taken for it.
    fn qemu_from_pid_file(&self, sandbox: &str) -> Option<(i32, u64)> {
        let dir = self.vm_dir(sandbox);
        let pid = std::fs::read_to_string(dir.join("qemu.pid")).ok()?.trim().parse::<i32>().ok()?;
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        if cwd != dir {
            return None;
        }
        Some((pid, strata_supervise::util::process_start_time(pid)?))
    }

    /// The agent connection of sandbox `id`'s VM (made on first use, also by a new process).
    fn conn(&self, sandbox: &str) -> Result<Arc<Conn>, Error> {
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = conns.get(sandbox) {
            return Ok(c.clone());
        }
        let vm = self.vm_record(sandbox).filter(|vm| !vm.booting).ok_or_else(|| Error::FailedPrecondition(format!("pod sandbox {sandbox} has no running microVM")))?;
        if !strata_supervise::util::process_alive(vm.qemu_pid, vm.qemu_start) {
            return Err(Error::FailedPrecondition(format!("the microVM of pod sandbox {sandbox} is gone")));
        }
        let c = Arc::new(self.connect(sandbox, Duration::from_secs(10))?);
        conns.insert(sandbox.to_string(), c.clone());
        Ok(c)
    }

    fn connect(&self, sandbox: &str, timeout: Duration) -> Result<Conn, Error> {
        let (tx, rx) = mpsc::channel::<GuestMessage>();
        let (shared, sb) = (self.shared.clone(), sandbox.to_string());
        std::thread::Builder::new()
            .name("microvm-events".into())
            .spawn(move || {
                for m in rx {
                    shared.on_guest(m);
                }
                shared.drop_streams(&sb);
            })
            .map_err(Error::io("starting a microVM event thread"))?;
        let client = AgentClient::connect(&self.vm_dir(sandbox).join(qemu::AGENT_SOCKET), timeout, Some(tx)).map_err(agent_error)?;
        Ok(Conn { client })
    }

    /// Boot the VM of a sandbox just set up by the inner driver.
    fn boot(&self, id: &str, status: &PodSandboxStatus, resources: Option<&ContainerResourceSpec>) -> Result<(), Error> {
        let (memory_mib, cpus) = guest_size(&self.config, resources, host_cpus());
        let dir = self.vm_dir(id);
        let share = dir.join("share");
        std::fs::create_dir_all(share.join("etc")).map_err(Error::io(format!("creating {}", share.display())))?;
        let sb_dir = self.shared.root.join("sandboxes").join(id);
        for f in ["hostname", "hosts", "resolv.conf"] {
            std::fs::copy(sb_dir.join(f), share.join("etc").join(f)).map_err(Error::io(format!("copying the pod's {f}")))?;
        }
        let netns = Path::new(network::NETNS_DIR).join(id);
        let net = tie_tap(&netns)?;
        let qemu_bin = qemu::qemu_binary().map_err(Error::FailedPrecondition)?;
        let decision = accel::decide(&qemu_bin, Some(&self.kernel.vmlinuz), &self.shared.root.join("vm-accel.json"));
        if decision.accel == accel::Accel::Tcg {
            tracing::warn!(sandbox = id, reason = %decision.reason, "VM-isolated pod runs under TCG (software emulation)");
        }
        let m = Machine {
            name: format!("strata-pod-{}", &id[..12.min(id.len())]),
            accel: decision.accel,
            memory_mib,
            cpus,
            kernel: Some(self.kernel.vmlinuz.clone()),
            initrd: Some(self.initramfs.clone()),
            append: format!("{} quiet", qemu::DEFAULT_APPEND),
            disk: None,
            seed: None,
            net: Some(Nic { mac: net.mac.clone(), backend: NetBackend::Tap { ifname: TAP.into() } }),
            state_disk: None,
            start_paused: false,
            run_as: None,
            guest: Some(GuestDevices { share: Some(share.clone()) }),
        };
        let log = std::fs::File::create(dir.join("qemu.log")).map_err(Error::io("creating qemu.log"))?;
        let netns_file = std::fs::File::open(&netns).map_err(Error::io(format!("opening {}", netns.display())))?;
        // Nobody's child (`setsid -f`), so it outlives this process and leaves no zombie here.
        // Not `-daemonize`: its fork comes after `-sandbox spawn=deny` is in force.
        let mut cmd = Command::new("setsid");
        let mut args = qemu::args(&m);
        if let (accel::Accel::Tcg, Some(mib)) = (decision.accel, self.config.tcg_tb_size_mib) {
            with_tb_size(&mut args, mib);
        }
        cmd.arg("-f").arg(&qemu_bin).args(args).args(["-pidfile", "qemu.pid"]).current_dir(&dir).stdin(Stdio::null()).stdout(Stdio::null());
        cmd.stderr(log);
        // SAFETY: setns(2) in the forked child before exec: QEMU opens the tap in the pod's namespace.
        unsafe {
            cmd.pre_exec(move || nix::sched::setns(&netns_file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from));
        }
        let exited = cmd.status().map_err(Error::io("starting QEMU (setsid)"))?;
        let failed = |why: &str| {
            let text = std::fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
            Error::FailedPrecondition(format!("QEMU failed to start the microVM ({why}): {}", qemu::last_line(&text)))
        };
        if !exited.success() {
            return Err(failed("setsid failed"));
        }
        // QEMU writes its pid file early and makes the agent socket once its devices exist.
        let deadline = Instant::now() + Duration::from_secs(30);
        let (pid, start) = loop {
            let pid = std::fs::read_to_string(dir.join("qemu.pid")).ok().and_then(|s| s.trim().parse::<i32>().ok());
            if let Some(pid) = pid {
                match strata_supervise::util::process_start_time(pid) {
                    Some(start) if dir.join(qemu::AGENT_SOCKET).exists() => break (pid, start),
                    Some(_) => {}
                    None => return Err(failed("it exited")),
                }
            }
            if Instant::now() > deadline {
                if let Some(pid) = pid {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                return Err(failed("no agent socket after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let address = format!("{}/{}", status.ip.map(|i| i.to_string()).unwrap_or_default(), net.prefix);
        let mut vm = VmRecord { qemu_pid: pid, qemu_start: start, accel: decision.accel.as_str().into(), address: address.clone(), gateway: net.gateway.clone(), booting: true };
        self.save_vm_record(id, &vm)?;
        let conn = self.connect(id, Duration::from_secs(30))?;
        match conn.client.call(Request::Hello, BOOT_TIMEOUT).map_err(agent_error)? {
            Response::Hello { kernel_release, .. } => tracing::debug!(sandbox = id, %kernel_release, "microVM agent up"),
            other => return Err(Error::Internal(format!("guest agent answered hello with {other:?}"))),
        }
        let cfg = NetworkConfig { interface: None, address, gateway: net.gateway, hostname: Some(status.hostname.clone()) };
        conn.client.call_ok(Request::Network(cfg), CALL_TIMEOUT).map_err(agent_error)?;
        vm.booting = false;
        self.save_vm_record(id, &vm)?;
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).insert(id.to_string(), Arc::new(conn));
        Ok(())
    }

    /// Power the VM off (the agent first, QEMU killed if it lingers) and forget its connection.
    /// A VM whose boot was cut short (no `vm.json` yet, or no agent connection) is found by its
    /// pid file and killed.
    fn power_off(&self, id: &str) {
        let conn = self.conns.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
        let qemu = self.vm_record(id).map(|vm| (vm.qemu_pid, vm.qemu_start)).or_else(|| self.qemu_from_pid_file(id));
        let Some((pid, start)) = qemu else { return };
        let alive = strata_supervise::util::process_alive(pid, start);
        let graceful = match &conn {
            Some(c) if alive => c.client.call_ok(Request::PowerOff, Duration::from_secs(10)).is_ok(),
            _ => false,
        };
        drop(conn);
        if !alive || !graceful || !strata_supervise::util::wait_pid_exit(pid, start, Some(Duration::from_secs(10))) {
            if strata_supervise::util::process_alive(pid, start) {
                tracing::debug!(sandbox = id, pid, "killing the microVM's QEMU");
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            strata_supervise::util::wait_pid_exit(pid, start, Some(Duration::from_secs(10)));
        }
    }

    /// Unmount and delete a container's host side (rootfs overlay, volume binds, dirs, record).
    fn discard_container(&self, r: &CtrRecord) -> Result<(), Error> {
        let dir = self.vm_dir(&r.sandbox_id);
        for v in &r.volumes {
            rootfs::unmount(v)?;
        }
        let rootfs_dir = dir.join("share").join(&r.id).join("rootfs");
        rootfs::unmount(&rootfs_dir)?;
        for d in [dir.join("share").join(&r.id), dir.join("ctr").join(&r.id)] {
            match std::fs::remove_dir_all(&d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::Io { context: format!("removing {}", d.display()), source: e }),
            }
        }
        self.shared.logs.lock().unwrap_or_else(|e| e.into_inner()).remove(&r.id);
        if r.own_log {
            let _ = std::fs::remove_file(&r.log_path);
        }
        match std::fs::remove_file(self.shared.record_path(&r.id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Io { context: format!("removing container record {}", r.id), source: e }),
        }
    }

    fn status_of(&self, r: &CtrRecord) -> ContainerStatus {
        let exit = r.exit.clone().filter(|_| r.state == ContainerState::Exited);
        ContainerStatus {
            id: r.id.clone(),
            sandbox_id: r.sandbox_id.clone(),
            metadata: r.config.metadata.clone(),
            state: r.state,
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
            finished_at: exit.as_ref().map(|e| e.finished_at.clone()),
            exit_code: exit.as_ref().map(|e| e.code),
            signal: exit.as_ref().and_then(|e| e.signal),
            reason: exit.as_ref().map(|e| e.pod_reason().0),
            message: exit.as_ref().and_then(|e| e.pod_reason().1),
            image: r.config.image.clone(),
            image_ref: r.image_ref.clone(),
            // The process lives in the guest: no host pid.
            pid: None,
            log_path: r.log_path.clone(),
            exit,
            labels: r.labels.clone(),
            annotations: r.config.annotations.clone(),
        }
    }

    fn wait_exited(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.shared.load(id) {
                Ok(r) if r.state == ContainerState::Running => {}
                _ => return true,
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A streaming exec in the guest (see `exec_session`).
struct StreamExec {
    conn: Arc<Conn>,
    stream: String,
    rx: mpsc::Receiver<i32>,
    code: Option<i32>,
}

impl crate::pod::ExecProcess for StreamExec {
    fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.conn.client.call_ok(Request::Resize { stream: self.stream.clone(), rows, cols }, CALL_TIMEOUT).map_err(std::io::Error::other)
    }

    fn wait(&mut self) -> std::io::Result<i32> {
        if let Some(c) = self.code {
            return Ok(c);
        }
        let c = self.rx.recv().map_err(|_| std::io::Error::other("the microVM's agent channel closed before the exec ended"))?;
        self.code = Some(c);
        Ok(c)
    }

    fn try_wait(&mut self) -> std::io::Result<Option<i32>> {
        if self.code.is_none() {
            self.code = self.rx.try_recv().ok();
        }
        Ok(self.code)
    }

    fn kill(&mut self) {
        if let Err(e) = self.conn.client.call_ok(Request::Cancel { stream: self.stream.clone() }, CALL_TIMEOUT) {
            tracing::debug!(stream = %self.stream, error = %e, "cancelling an exec");
        }
    }

    /// No host process carries it.
    fn pid(&self) -> u32 {
        0
    }
}

/// How many output chunks an attached client may fall behind before it is dropped.
const ATTACH_BACKLOG: usize = 1024;

/// Input of an attached client to a container's main process: the guest agent's `Input`,
/// `Resize` and `CloseInput` named by the container's id.
struct VmAttachInput {
    conn: Arc<Conn>,
    id: String,
    tty: bool,
    /// Kubernetes' `stdinOnce`: the first client's end of input closes the container's stdin;
    /// otherwise it stays open for the next attach.
    stdin_once: bool,
}

impl crate::AttachInput for VmAttachInput {
    fn input(&mut self, data: &[u8]) -> std::io::Result<()> {
        let req = Request::Input { stream: self.id.clone(), data: data.to_vec() };
        self.conn.client.call_ok(req, CALL_TIMEOUT).map_err(|e| std::io::Error::other(e.to_string()))
    }
    fn resize(&mut self, rows: u16, cols: u16) -> std::io::Result<()> {
        if !self.tty {
            return Ok(());
        }
        self.conn.client.call_ok(Request::Resize { stream: self.id.clone(), rows, cols }, CALL_TIMEOUT).map_err(|e| std::io::Error::other(e.to_string()))
    }
    fn close_input(&mut self) -> std::io::Result<()> {
        if !self.stdin_once {
            return Ok(());
        }
        if self.tty {
            // The terminal's end of file: its master stays open for the output.
            return self.input(b"\x04");
        }
        self.conn.client.call_ok(Request::CloseInput { stream: self.id.clone() }, CALL_TIMEOUT).map_err(|e| std::io::Error::other(e.to_string()))
    }
}

/// Send what `from` gives as `stream`'s input, chunk by chunk (each answered before the next),
/// then its end; a thread of its own.
fn pump_input(conn: Arc<Conn>, stream: String, mut from: impl std::io::Read + Send + 'static) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("microvm-input".into())
        .spawn(move || {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Err(e) = conn.client.call_ok(Request::Input { stream: stream.clone(), data: buf[..n].to_vec() }, CALL_TIMEOUT) {
                            tracing::debug!(stream = %stream, error = %e, "stream input");
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        let _ = conn.client.call_ok(Request::Cancel { stream: stream.clone() }, CALL_TIMEOUT);
                        return;
                    }
                }
            }
            if let Err(e) = conn.client.call_ok(Request::CloseInput { stream: stream.clone() }, CALL_TIMEOUT) {
                tracing::debug!(stream = %stream, error = %e, "closing stream input");
            }
        })
        .map(drop)
        .map_err(Error::io("starting a stream input thread"))
}

/// Two connected TCP sockets on 127.0.0.1 (the port-forward interface hands out a `TcpStream`):
/// the listener lives only for this call, and a connection from anyone but our own socket is
/// dropped.
fn loopback_pair() -> Result<(std::net::TcpStream, std::net::TcpStream), Error> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Error::io("port-forward listener"))?;
    let addr = listener.local_addr().map_err(Error::io("port-forward listener"))?;
    let outer = std::net::TcpStream::connect(addr).map_err(Error::io("port-forward connect"))?;
    let mine = outer.local_addr().map_err(Error::io("port-forward connect"))?;
    loop {
        let (inner, peer) = listener.accept().map_err(Error::io("port-forward accept"))?;
        if peer == mine {
            return Ok((outer, inner));
        }
    }
}

/// A container's limits as the guest's cgroup v2 takes them.
fn guest_resources(r: &crate::pod::ContainerResources) -> protocol::Resources {
    protocol::Resources {
        memory_max_bytes: r.memory_limit_bytes,
        cpu_quota_us: r.cpu_quota_us.and_then(|q| u64::try_from(q).ok()).filter(|q| *q > 0),
        cpu_period_us: r.cpu_period_us,
        cpu_shares: r.cpu_shares,
        pids_max: r.pids_limit.map(u64::from),
    }
}

fn agent_error(e: agent::Error) -> Error {
    match e {
        agent::Error::Agent(m) => Error::FailedPrecondition(m),
        agent::Error::Timeout { .. } => Error::Timeout(e.to_string()),
        e => Error::Internal(e.to_string()),
    }
}

/// What the pod's `eth0` had, now the guest's.
struct PodNet {
    mac: String,
    prefix: u8,
    gateway: Option<String>,
}

/// Run `ip`/`tc` in the network namespace at `netns`.
fn in_netns(netns: &Path, args: &[&str]) -> Result<String, Error> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("running {}", args.join(" "))))?;
    if !out.status.success() {
        return Err(Error::FailedPrecondition(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Make a tap in the pod's namespace and tie it to `eth0` both ways (tc `mirred` redirects), and
/// take `eth0`'s address off it: the guest's NIC, with `eth0`'s MAC, is the pod's interface.
fn tie_tap(netns: &Path) -> Result<PodNet, Error> {
    let addr = in_netns(netns, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"])?;
    let prefix = addr
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split_once('/'))
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| Error::Internal(format!("no IPv4 address on the pod's eth0: {addr}")))?;
    let route = in_netns(netns, &["ip", "-4", "route", "show", "default"])?;
    let gateway = route.split_whitespace().skip_while(|w| *w != "via").nth(1).map(String::from);
    let link = in_netns(netns, &["ip", "-o", "link", "show", "dev", "eth0"])?;
    let mac = link.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).map(String::from).ok_or_else(|| Error::Internal(format!("no MAC on eth0: {link}")))?;
    in_netns(netns, &["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])?;
    in_netns(netns, &["ip", "link", "set", TAP, "up"])?;
    in_netns(netns, &["ip", "addr", "flush", "dev", "eth0"])?;
    for (from, to) in [("eth0", TAP), (TAP, "eth0")] {
        in_netns(netns, &["tc", "qdisc", "add", "dev", from, "ingress"])?;
        in_netns(netns, &["tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to])?;
    }
    Ok(PodNet { mac, prefix, gateway })
}

impl PodRuntime for MicroVmRuntime {
    /// The sandboxes' container driver, QEMU, the guest kernel and the initramfs.
    fn health(&self) -> Result<(), Error> {
        self.sandboxes.runtime_health()?;
        qemu::qemu_binary().map_err(Error::FailedPrecondition)?;
        for f in [&self.kernel.vmlinuz, &self.initramfs] {
            std::fs::metadata(f).map_err(Error::io(format!("reading {}", f.display())))?;
        }
        Ok(())
    }

    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, Error> {
        if config.namespaces.network != NamespaceMode::Pod {
            return Err(Error::InvalidArgument("a VM-isolated pod cannot use the node's network".into()));
        }
        if config.namespaces.ipc == NamespaceMode::Node || config.namespaces.pid == NamespaceMode::Node {
            return Err(Error::InvalidArgument("a VM-isolated pod cannot share the node's IPC or PID namespace".into()));
        }
        let id = self.sandboxes.run_pod_sandbox(config)?;
        self.booting.lock().unwrap_or_else(|e| e.into_inner()).insert(id.clone());
        let result = self.sandboxes.pod_sandbox_status(&id).and_then(|st| self.boot(&id, &st, config.resources.as_ref()));
        self.booting.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        if let Err(e) = result {
            self.power_off(&id);
            let _ = std::fs::remove_dir_all(self.vm_dir(&id));
            if let Err(ce) = self.sandboxes.remove_pod_sandbox(&id) {
                tracing::warn!(sandbox = %id, error = %ce, "cleanup after a failed microVM sandbox");
            }
            return Err(e);
        }
        Ok(id)
    }

    fn stop_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        self.sandboxes.pod_sandbox_status(id)?;
        self.power_off(id);
        for r in self.shared.all().into_iter().filter(|r| r.sandbox_id == id && r.state == ContainerState::Running) {
            let exit = ExitStatus::new(128 + libc::SIGKILL, Some(libc::SIGKILL), false, now());
            let _ = self.shared.update(&r.id, |r| {
                r.state = ContainerState::Exited;
                r.exit = Some(exit.clone());
            });
            self.shared.publish(&r.id, id, PodEventKind::Exited(exit));
        }
        let _ = std::fs::remove_file(self.vm_dir(id).join("vm.json"));
        self.sandboxes.stop_pod_sandbox(id)
    }

    fn remove_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        match self.sandboxes.pod_sandbox_status(id) {
            Ok(_) => {}
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        self.power_off(id);
        for r in self.shared.all().into_iter().filter(|r| r.sandbox_id == id) {
            self.discard_container(&r)?;
            self.shared.publish(&r.id, id, PodEventKind::Removed);
        }
        match std::fs::remove_dir_all(self.vm_dir(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::Io { context: format!("removing the microVM of {id}"), source: e }),
        }
        self.sandboxes.remove_pod_sandbox(id)
    }

    fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, Error> {
        self.sandboxes.pod_sandbox_status(id).map(|s| self.with_vm_state(s))
    }

    fn list_pod_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<PodSandboxStatus>, Error> {
        // The state filter applies to the VM's state, not the inner sandbox's.
        let inner = SandboxFilter { state: None, ..filter.clone() };
        Ok(self.sandboxes.list_pod_sandboxes(&inner)?.into_iter().map(|s| self.with_vm_state(s)).filter(|s| filter.state.is_none_or(|st| st == s.state)).collect())
    }

    fn create_container(&self, sandbox_id: &str, c: &ContainerConfig) -> Result<String, Error> {
        let sb = self.sandboxes.pod_sandbox_status(sandbox_id)?;
        if sb.state != SandboxState::Ready {
            return Err(Error::FailedPrecondition(format!("pod sandbox {sandbox_id} is stopped: no container can be created in it")));
        }
        if c.metadata.name.is_empty() {
            return Err(Error::InvalidArgument("a pod container needs a name".into()));
        }
        if c.log_path.as_ref().is_some_and(|p| p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir)) {
            return Err(Error::InvalidArgument("a container's log path is relative to the sandbox's log directory, without '..'".into()));
        }
        let all = self.shared.all();
        if all.iter().any(|r| r.sandbox_id == sandbox_id && r.config.metadata == c.metadata) {
            return Err(Error::AlreadyExists(format!("container {} attempt {} in pod sandbox {sandbox_id}", c.metadata.name, c.metadata.attempt)));
        }
        let conn = self.conn(sandbox_id)?;
        let image = self.images.get(&c.image)?;
        let defaults = config::ImageDefaults::from_config(&image.config);
        let layers = self.images.layers(&image)?;
        let id = random_id();
        let dir = self.vm_dir(sandbox_id);
        let ctr = dir.join("ctr").join(&id);
        let rootfs_dir = dir.join("share").join(&id).join("rootfs");
        let rel = c.log_path.clone().unwrap_or_else(|| PathBuf::from(&c.metadata.name).join(format!("{}.log", c.metadata.attempt)));
        let own_log = sb.log_directory.starts_with(self.shared.root.join("sandboxes"));
        let mut labels = c.labels.clone();
        let m = &sb.metadata;
        for (k, v) in [
            (labels::POD_NAME, &m.name),
            (labels::POD_NAMESPACE, &m.namespace),
            (labels::POD_UID, &m.uid),
            (labels::CONTAINER_NAME, &c.metadata.name),
            (labels::SANDBOX_ID, &sb.id),
        ] {
            labels.entry(k.to_string()).or_insert_with(|| v.clone());
        }
        let mut record = CtrRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.to_string(),
            config: c.clone(),
            image_ref: image.id.clone(),
            log_path: sb.log_directory.join(rel),
            own_log,
            created_at: now(),
            started_at: None,
            state: ContainerState::Created,
            pid: None,
            exit: None,
            labels,
            volumes: Vec::new(),
        };
        let prepared = (|| -> Result<protocol::ContainerSpec, Error> {
            for d in [ctr.join("upper"), ctr.join("work"), rootfs_dir.clone()] {
                std::fs::create_dir_all(&d).map_err(Error::io(format!("creating {}", d.display())))?;
            }
            self.shared.save(&record)?;
            rootfs::mount_overlay(&layers, &ctr.join("upper"), &ctr.join("work"), &rootfs_dir, false)?;
            let s = &c.security;
            let user = match (s.run_as_user, &s.run_as_username) {
                (Some(u), _) => Some(u.to_string()),
                (None, Some(n)) => Some(n.clone()),
                (None, None) => None,
            };
            let spec = crate::ContainerSpec {
                image: c.image.clone(),
                entrypoint: (!c.command.is_empty()).then(|| c.command.clone()),
                command: c.args.clone(),
                env: c.envs.clone(),
                workdir: c.working_dir.clone(),
                user,
                hostname: None,
                privileged: s.privileged,
                read_only: s.readonly_rootfs,
                stdin: false,
                tty: false,
            };
            let mut p = config::resolve(&defaults, &spec, &sb.hostname, &rootfs_dir)?;
            if let Some(g) = s.run_as_group {
                p.gid = g;
            }
            for g in &s.supplemental_groups {
                if !p.additional_gids.contains(g) && *g != p.gid {
                    p.additional_gids.push(*g);
                }
            }
            rootfs::ensure_dir(&rootfs_dir, &p.cwd, p.uid, p.gid)?;
            let guest = |host: &Path| -> String {
                let rel = host.strip_prefix(dir.join("share")).unwrap_or(host);
                format!("{}/{}", protocol::SHARE_MOUNT, rel.display())
            };
            let mut mounts: Vec<BindMount> = ["hostname", "hosts", "resolv.conf"]
                .iter()
                .map(|f| BindMount { source: guest(&dir.join("share/etc").join(f)), destination: format!("/etc/{f}"), readonly: false })
                .collect();
            for (n, mnt) in c.mounts.iter().enumerate() {
                let host_path = match &mnt.source {
                    MountSource::Bind { host_path, .. } => host_path,
                    MountSource::PodMemory { volume, sub_path, size_bytes, .. } => {
                        // In the guest's memory, not the host's tmpfs over 9p.
                        let req = Request::Volume { name: volume.clone(), size_bytes: *size_bytes, sub_path: sub_path.clone() };
                        conn.client.call_ok(req, CALL_TIMEOUT).map_err(agent_error)?;
                        let mut source = format!("{}/{volume}", protocol::VOLUMES_DIR);
                        if let Some(sub) = sub_path {
                            source = format!("{source}/{sub}");
                        }
                        mounts.push(BindMount { source, destination: mnt.container_path.display().to_string(), readonly: mnt.readonly });
                        continue;
                    }
                    MountSource::Tmpfs { .. } => return Err(Error::Unsupported("tmpfs mounts of one container in VM-isolated pods".into())),
                };
                let target = dir.join("share").join(&id).join(format!("vol{n}"));
                if host_path.is_dir() {
                    std::fs::create_dir_all(&target).map_err(Error::io(format!("creating {}", target.display())))?;
                } else {
                    std::fs::write(&target, b"").map_err(Error::io(format!("creating {}", target.display())))?;
                }
                nix::mount::mount(Some(host_path.as_path()), &target, None::<&str>, nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC, None::<&str>)
                    .map_err(|e| Error::InvalidArgument(format!("volume {}: {e}", host_path.display())))?;
                record.volumes.push(target.clone());
                self.shared.save(&record)?;
                mounts.push(BindMount { source: guest(&target), destination: mnt.container_path.display().to_string(), readonly: mnt.readonly });
            }
            Ok(protocol::ContainerSpec {
                rootfs: guest(&rootfs_dir),
                argv: p.args,
                env: p.env,
                cwd: Some(p.cwd),
                uid: p.uid,
                gid: p.gid,
                additional_gids: p.additional_gids,
                hostname: Some(sb.hostname.clone()),
                mounts,
                resources: guest_resources(&c.resources),
                stdin: c.stdin,
                tty: c.tty,
            })
        })();
        let result = prepared.and_then(|spec| {
            if let Some(parent) = record.log_path.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io(format!("creating {}", parent.display())))?;
            }
            std::fs::OpenOptions::new().create(true).append(true).open(&record.log_path).map_err(Error::io("creating the container's log"))?;
            conn.client.call_ok(Request::Create { id: id.clone(), spec }, CALL_TIMEOUT).map_err(agent_error)
        });
        if let Err(e) = result {
            if let Err(ce) = self.discard_container(&record) {
                tracing::warn!(container = %id, error = %ce, "cleanup after a failed create");
            }
            return Err(e);
        }
        self.shared.publish(&id, sandbox_id, PodEventKind::Created);
        Ok(id)
    }

    fn start_container(&self, id: &str) -> Result<(), Error> {
        let r = self.shared.load(id)?;
        if r.state != ContainerState::Created {
            return Err(Error::FailedPrecondition(format!("container {id} was already started; create the next attempt")));
        }
        let conn = self.conn(&r.sandbox_id)?;
        // Running before the request: the exit may come back before the answer does.
        let _g = self.shared.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut r2 = r.clone();
        r2.state = ContainerState::Running;
        r2.started_at = Some(now());
        self.shared.save(&r2)?;
        drop(_g);
        match conn.client.call(Request::Start { id: id.into() }, CALL_TIMEOUT) {
            Ok(Response::Started { pid }) => {
                let _ = self.shared.update(id, |r| r.pid = Some(pid));
                self.shared.publish(id, &r.sandbox_id, PodEventKind::Started);
                Ok(())
            }
            Ok(other) => Err(Error::Internal(format!("guest agent answered start with {other:?}"))),
            Err(e) => {
                let exit = ExitStatus::new(128, None, false, now());
                let _ = self.shared.update(id, |r| {
                    r.state = ContainerState::Exited;
                    r.exit = Some(exit);
                });
                Err(agent_error(e))
            }
        }
    }

    fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        let r = self.shared.load(id)?;
        if r.state != ContainerState::Running {
            return Ok(());
        }
        let conn = self.conn(&r.sandbox_id)?;
        conn.client.call_ok(Request::Signal { id: id.into(), signal: libc::SIGTERM }, CALL_TIMEOUT).map_err(agent_error)?;
        if !self.wait_exited(id, timeout) {
            conn.client.call_ok(Request::Signal { id: id.into(), signal: libc::SIGKILL }, CALL_TIMEOUT).map_err(agent_error)?;
            if !self.wait_exited(id, Duration::from_secs(30)) {
                return Err(Error::Timeout(format!("container {id} to die")));
            }
        }
        Ok(())
    }

    fn remove_container(&self, id: &str) -> Result<(), Error> {
        let r = match self.shared.load(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Ok(conn) = self.conn(&r.sandbox_id) {
            match conn.client.call_ok(Request::Remove { id: id.into() }, CALL_TIMEOUT) {
                Ok(()) | Err(agent::Error::Agent(_)) => {}
                Err(e) => return Err(agent_error(e)),
            }
            self.wait_exited(id, Duration::from_secs(10));
        }
        self.discard_container(&r)?;
        self.shared.publish(id, &r.sandbox_id, PodEventKind::Removed);
        Ok(())
    }

    fn container_status(&self, id: &str) -> Result<ContainerStatus, Error> {
        Ok(self.status_of(&self.shared.load(id)?))
    }

    fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>, Error> {
        Ok(self
            .shared
            .all()
            .iter()
            .filter(|r| filter.id.as_ref().is_none_or(|i| *i == r.id) && filter.sandbox_id.as_ref().is_none_or(|s| *s == r.sandbox_id))
            .map(|r| self.status_of(r))
            .filter(|s| filter.state.is_none_or(|st| st == s.state) && filter.labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .collect())
    }

    fn exec_sync(&self, id: &str, cmd: &[String], timeout: Option<Duration>) -> Result<ExecSyncResult, Error> {
        let r = self.shared.load(id)?;
        if r.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!("container {id} is not running")));
        }
        let conn = self.conn(&r.sandbox_id)?;
        let req = protocol::ExecRequest { id: id.into(), argv: cmd.to_vec(), env: None, timeout_ms: timeout.map(|t| t.as_millis() as u64) };
        let wait = timeout.unwrap_or(Duration::from_secs(3600)) + CALL_TIMEOUT;
        match conn.client.call(Request::Exec(req), wait).map_err(agent_error)? {
            Response::Exec(x) if x.timed_out => Err(Error::Timeout(format!("{cmd:?} in container {id} to finish ({:?})", timeout.unwrap_or_default()))),
            Response::Exec(x) => Ok(ExecSyncResult { stdout: x.stdout, stderr: x.stderr, exit_code: x.exit_code }),
            other => Err(Error::Internal(format!("guest agent answered exec with {other:?}"))),
        }
    }

    /// A streaming exec in the guest (`Request::ExecStream`): output comes back as the agent
    /// sends it into pipes the session reads, input goes out chunk by chunk from a pipe the
    /// session writes, resizes and kills are agent requests, the exit code is the agent's
    /// `Exited` for the stream.
    fn exec_session(&self, id: &str, req: &ExecSessionRequest) -> Result<ExecSession, Error> {
        let r = self.shared.load(id)?;
        if r.state != ContainerState::Running {
            return Err(Error::FailedPrecondition(format!("container {id} is not running")));
        }
        let conn = self.conn(&r.sandbox_id)?;
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map(|(r, w)| (std::fs::File::from(r), std::fs::File::from(w)))
                .map_err(|e| Error::Io { context: "exec pipes".into(), source: e.into() })
        };
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = if req.tty { (None, None) } else { pipe().map(|(r, w)| (Some(r), Some(w)))? };
        let input = if req.stdin || req.tty { Some(pipe()?) } else { None };
        let (exit_tx, exit_rx) = mpsc::channel();
        let stream = format!("{STREAM_PREFIX}{}", &random_id()[..16]);
        let sink = StreamSink { sandbox: r.sandbox_id.clone(), sink: Sink::Exec { out: out_w, err: err_w, exit: exit_tx } };
        // Registered first: output may come before the answer.
        self.shared.streams.lock().unwrap_or_else(|e| e.into_inner()).insert(stream.clone(), Arc::new(sink));
        let exec = protocol::ExecRequest { id: id.into(), argv: req.command.clone(), env: None, timeout_ms: None };
        let tty = req.tty.then(|| req.size.unwrap_or(DEFAULT_TTY_SIZE));
        let started = conn.client.call(Request::ExecStream { stream: stream.clone(), exec, tty, stdin: req.stdin || req.tty }, CALL_TIMEOUT);
        match started {
            Ok(Response::Started { .. }) => {}
            other => {
                self.shared.streams.lock().unwrap_or_else(|e| e.into_inner()).remove(&stream);
                return Err(match other {
                    Err(e) => agent_error(e),
                    Ok(r) => Error::Internal(format!("guest agent answered exec with {r:?}")),
                });
            }
        }
        let stdin = match input {
            Some((in_r, in_w)) => {
                pump_input(conn.clone(), stream.clone(), in_r)?;
                Some(in_w)
            }
            None => None,
        };
        Ok(ExecSession { stdin, stdout: Some(out_r), stderr: err_r, tty: req.tty, inner: Box::new(StreamExec { conn, stream, rx: exit_rx, code: None }) })
    }

    fn container_logs(&self, id: &str, opts: &LogOptions, sink: &mut dyn FnMut(&LogRecord) -> bool) -> Result<(), Error> {
        let r = self.shared.load(id)?;
        let shared = self.shared.clone();
        let cid = r.id.clone();
        // Following ends once the container has exited (its output comes before its exit).
        let done = move |d: Duration| {
            let deadline = Instant::now() + d;
            loop {
                if !matches!(shared.load(&cid).map(|r| r.state), Ok(ContainerState::Running | ContainerState::Created)) {
                    return true;
                }
                if Instant::now() >= deadline {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        crate::workload_log::read_until(&r.log_path, &done, opts, &format!("logs of {id}"), sink)
    }

    fn attach_container(&self, id: &str) -> Result<Attachment, Error> {
        let r = self.shared.load(id)?;
        let conn = self.conn(&r.sandbox_id)?;
        let rx = {
            let mut attached = self.shared.attached.lock().unwrap_or_else(|e| e.into_inner());
            // Checked under the lock the exit takes: an exit after this point ends the feed.
            if self.shared.load(id)?.state != ContainerState::Running {
                return Err(Error::FailedPrecondition(format!("container {id} is not running")));
            }
            let (tx, rx) = mpsc::sync_channel(ATTACH_BACKLOG);
            attached.entry(id.to_string()).or_default().push(tx);
            rx
        };
        let (stdin, tty) = (r.config.stdin, r.config.tty);
        let input: Option<Box<dyn crate::AttachInput>> =
            (stdin || tty).then(|| Box::new(VmAttachInput { conn, id: id.to_string(), tty, stdin_once: r.config.stdin_once }) as Box<dyn crate::AttachInput>);
        Ok(Attachment { tty, stdin, input, output: Box::new(rx.into_iter().map(Ok)) })
    }

    /// The pod's loopback is the guest's: the agent connects to `127.0.0.1:port` in the guest
    /// (`Request::Connect`) and the bytes travel over its channel. The caller gets one end of a
    /// loopback socket pair made here, the other end is pumped to and from the agent.
    fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<std::net::TcpStream, Error> {
        let conn = self.conn(sandbox_id)?;
        let (outer, inner) = loopback_pair()?;
        let stream = format!("{STREAM_PREFIX}{}", &random_id()[..16]);
        let tcp = inner.try_clone().map_err(Error::io("port-forward socket"))?;
        let sink = StreamSink { sandbox: sandbox_id.to_string(), sink: Sink::Conn { tcp } };
        self.shared.streams.lock().unwrap_or_else(|e| e.into_inner()).insert(stream.clone(), Arc::new(sink));
        if let Err(e) = conn.client.call_ok(Request::Connect { stream: stream.clone(), port }, CALL_TIMEOUT) {
            self.shared.streams.lock().unwrap_or_else(|e| e.into_inner()).remove(&stream);
            return Err(agent_error(e));
        }
        pump_input(conn, stream, inner)?;
        Ok(outer)
    }

    fn subscribe(&self) -> Result<mpsc::Receiver<PodEvent>, Error> {
        let (tx, rx) = mpsc::channel();
        self.shared.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_is_sized_from_the_pod_with_a_floor() {
        let cfg = MicroVmConfig::new(PathBuf::new(), PathBuf::new());
        let r = |cpu_req, cpu_lim, mem_req, mem_lim| ContainerResourceSpec { cpu_request_millis: cpu_req, cpu_limit_millis: cpu_lim, memory_request_bytes: mem_req, memory_limit_bytes: mem_lim };
        assert_eq!(guest_size(&cfg, None, 8), (256, 1));
        assert_eq!(guest_size(&cfg, Some(&r(None, None, None, None)), 8), (256, 1));
        // Limits first, rounded up.
        assert_eq!(guest_size(&cfg, Some(&r(Some(500), Some(1500), Some(64 << 20), Some((300 << 20) + 1))), 8), (256 + 301, 2));
        // Requests without limits.
        assert_eq!(guest_size(&cfg, Some(&r(Some(2500), None, Some(100 << 20), None)), 8), (356, 3));
        // Never more vCPUs than the host has, never fewer than the floor.
        assert_eq!(guest_size(&cfg, Some(&r(None, Some(16_000), None, None)), 2), (256, 2));
        assert_eq!(guest_size(&cfg, Some(&r(Some(100), None, None, None)), 2), (256, 1));
    }

    #[test]
    fn a_vm_record_says_booting_until_the_guest_is_up() {
        let mut vm = VmRecord { qemu_pid: 7, qemu_start: 9, accel: "tcg".into(), address: "10.0.0.2/24".into(), gateway: None, booting: true };
        let text = serde_json::to_string(&vm).expect("json");
        assert!(text.contains("\"booting\":true"), "{text}");
        vm.booting = false;
        let text = serde_json::to_string(&vm).expect("json");
        assert!(!text.contains("booting"), "{text}");
        // A record written before the field existed is a booted VM's.
        let old: VmRecord = serde_json::from_str(r#"{"qemu_pid":7,"qemu_start":9,"accel":"tcg","address":"10.0.0.2/24","gateway":null}"#).expect("old record");
        assert!(!old.booting);
    }

    #[test]
    fn the_translation_cache_size_moves_tcg_to_accel() {
        let mut a: Vec<String> = ["-name", "p", "-machine", "microvm,accel=tcg,acpi=on", "-m", "256M"].iter().map(|s| s.to_string()).collect();
        with_tb_size(&mut a, 32);
        assert_eq!(a, ["-name", "p", "-machine", "microvm,acpi=on", "-m", "256M", "-accel", "tcg,tb-size=32"]);
    }
}
