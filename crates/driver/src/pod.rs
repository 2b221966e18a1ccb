//! The pod-shaped driver interface: [`PodRuntime`], in the shape of CRI's `RuntimeService`
//! (a CRI v1 gRPC server can be put on top of it one call per method), with plain types and no
//! Kubernetes dependency.
//!
//! A *sandbox* ([`PodRuntime::run_pod_sandbox`]) is what a pod shares: its network namespace
//! and IP (on the node bridge, through CNI), its hostname, `/etc/hosts` and `resolv.conf`, its
//! IPC namespace (and, with [`NamespaceMode::Pod`] for pid, its PID namespace), its cgroup
//! parent (by QoS class) and its host port mappings. *Containers* are created in a sandbox
//! ([`PodRuntime::create_container`]) and join all of that; each is one *attempt* of a pod
//! container: a container that exited is not started again, the caller creates the next
//! attempt (`metadata.attempt + 1`) in the same sandbox and removes the old one when it no
//! longer needs its log. The pod keeps its IP all along.
//!
//! Everything is persisted under the driver's root: a driver opened by a new process (the
//! agent after a `kill -9`) finds the same sandboxes and containers under the same ids, with
//! their processes still running. Ids are 64 hex digits, as for every workload.
//!
//! Typical use by a node agent:
//! ```text
//! let sb = rt.run_pod_sandbox(&PodSandboxConfig { metadata, hostname, .. })?;   // IP in pod_sandbox_status(sb).ip
//! let c = rt.create_container(&sb, &ContainerConfig { metadata: {name, attempt: 0}, image, .. })?;
//! rt.start_container(&c)?;
//! let events = rt.subscribe()?;                 // Started / Exited{exit} / OomKilled, no polling
//! rt.exec_sync(&c, &["cat", "/tmp/ready"], Some(Duration::from_secs(1)))?;  // probes
//! rt.container_logs(&c, &LogOptions { follow: true, .. }, &mut |rec| send(rec))?;
//! rt.stop_container(&c, grace)?; rt.remove_container(&c)?;
//! rt.stop_pod_sandbox(&sb)?; rt.remove_pod_sandbox(&sb)?;   // nothing left: netns, lease, mounts, cgroups, files
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Attachment, Error, ExitStatus, LogOptions, LogRecord};

/// A pod's identity (CRI `PodSandboxMetadata`). The driver refuses a second *ready* sandbox
/// with the same `uid` and `attempt` (or, without a uid, namespace, name and attempt).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSandboxMetadata {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    #[serde(default)]
    pub attempt: u32,
}

/// Where a pod's namespace of one kind comes from (CRI `NamespaceMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// One per pod, shared by its containers (the default for network, IPC and UTS).
    #[default]
    Pod,
    /// One per container (the default for PID: Kubernetes' `shareProcessNamespace: false`).
    Container,
    /// The node's (`hostNetwork`, `hostIPC`, `hostPID`).
    Node,
}

/// The namespaces of a pod (CRI `NamespaceOption`). Defaults: network, IPC and UTS per pod,
/// PID per container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodNamespaces {
    /// `Pod` or `Node` (a network namespace per container is not offered).
    pub network: NamespaceMode,
    /// `Pod` or `Node`.
    pub ipc: NamespaceMode,
    /// `Pod` (`shareProcessNamespace: true`), `Container` or `Node`.
    pub pid: NamespaceMode,
}

impl Default for PodNamespaces {
    fn default() -> Self {
        PodNamespaces { network: NamespaceMode::Pod, ipc: NamespaceMode::Pod, pid: NamespaceMode::Container }
    }
}

/// DNS settings written to the pod's `/etc/resolv.conf` (CRI `DNSConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

/// A pod's Kubernetes QoS class, which picks its cgroup parent
/// (`/strata-pods/<class>/pod<sandbox id>`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    #[default]
    BestEffort,
}

impl QosClass {
    /// The class Kubernetes gives a pod from its containers' `(requests, limits)` of cpu and
    /// memory (`v1qos.GetPodQOS`): every container with cpu and memory limits equal to its
    /// requests (a missing request defaults to the limit) is Guaranteed; none with any request
    /// or limit is BestEffort; anything else is Burstable.
    pub fn of(containers: &[ContainerResourceSpec]) -> QosClass {
        let any = containers.iter().any(|c| {
            c.cpu_request_millis.is_some() || c.cpu_limit_millis.is_some() || c.memory_request_bytes.is_some() || c.memory_limit_bytes.is_some()
        });
        if !any {
            return QosClass::BestEffort;
        }
        let guaranteed = containers.iter().all(|c| match (c.cpu_limit_millis, c.memory_limit_bytes) {
            (Some(cl), Some(ml)) => c.cpu_request_millis.unwrap_or(cl) == cl && c.memory_request_bytes.unwrap_or(ml) == ml,
            _ => false,
        });
        if guaranteed {
            QosClass::Guaranteed
        } else {
            QosClass::Burstable
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }

    /// The cgroup directory name of the class.
    pub fn cgroup_name(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::BestEffort => "besteffort",
        }
    }
}

/// A container's cpu and memory requests and limits, for [`QosClass::of`] and the pod cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerResourceSpec {
    pub cpu_request_millis: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
    pub memory_request_bytes: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
}

impl ContainerResourceSpec {
    /// A pod's requests and limits from its app containers' and init containers' (kubelet's
    /// effective pod resources): per field the larger of the app containers' sum and the largest
    /// init container's; a limit only when every container of that kind has one.
    pub fn of_pod(app: &[ContainerResourceSpec], init: &[ContainerResourceSpec]) -> ContainerResourceSpec {
        let field = |f: fn(&ContainerResourceSpec) -> Option<u64>, limit: bool| {
            let all = || app.iter().chain(init);
            if all().all(|c| f(c).is_none()) || (limit && all().any(|c| f(c).is_none())) {
                return None;
            }
            let sum: u64 = app.iter().filter_map(f).sum();
            Some(sum.max(init.iter().filter_map(f).max().unwrap_or(0)))
        };
        ContainerResourceSpec {
            cpu_request_millis: field(|c| c.cpu_request_millis, false),
            cpu_limit_millis: field(|c| c.cpu_limit_millis, true),
            memory_request_bytes: field(|c| c.memory_request_bytes, false),
            memory_limit_bytes: field(|c| c.memory_limit_bytes, true),
        }
    }
}

/// A host port forwarded to the pod (Kubernetes `hostPort`, CRI `PortMapping`), TCP or UDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPortMapping {
    pub container_port: u16,
    pub host_port: u16,
    /// Default: every address (0.0.0.0).
    #[serde(default)]
    pub host_ip: Option<IpAddr>,
    /// Default: TCP (as a sandbox recorded before UDP was forwarded reads).
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// A host port's protocol (SCTP is not forwarded).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PortProtocol {
    #[default]
    Tcp,
    Udp,
}

/// Everything needed to create a pod sandbox (CRI `PodSandboxConfig`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PodSandboxConfig {
    pub metadata: PodSandboxMetadata,
    /// The pod's hostname (in its own UTS namespace; at most 64 characters, a FQDN may have
    /// dots); default: the pod's name, cut to 63. Ignored on the node's network (the node's).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Directory of the containers' log files ([`ContainerConfig::log_path`] is relative to it);
    /// default: a directory inside the sandbox's own, removed with it. A directory given here is
    /// the caller's: it is created if missing and never removed.
    #[serde(default)]
    pub log_directory: Option<PathBuf>,
    /// `/etc/resolv.conf` of the pod; default: the node's.
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    /// Extra `/etc/hosts` entries (Kubernetes `hostAliases`): an address and its names.
    #[serde(default)]
    pub host_aliases: Vec<(IpAddr, Vec<String>)>,
    /// The names on the pod's own line of `/etc/hosts` (after its IP); default: its hostname.
    /// Kubernetes puts a pod's FQDN (`<hostname>.<subdomain>.<namespace>.svc.<domain>`) first.
    /// A pod on the node's network has the node's `/etc/hosts` (then `host_aliases`) instead.
    #[serde(default)]
    pub hosts_names: Vec<String>,
    /// Namespaced sysctls set in the pod's namespaces (`securityContext.sysctls`): name (dotted,
    /// `net.ipv4.ip_local_port_range`) to value. The caller decides which are allowed.
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default)]
    pub port_mappings: Vec<HostPortMapping>,
    #[serde(default)]
    pub namespaces: PodNamespaces,
    #[serde(default)]
    pub qos_class: QosClass,
    /// Pod-level limits written on the pod cgroup (the sum of the containers' limits when
    /// every container has one, as kubelet does); `None`: unlimited.
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
    /// Pod-level `cpu.shares` (kubelet: the sum of the cpu requests, in shares); `None`: the
    /// class default (2 for BestEffort).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Which runtime runs the sandbox (CRI's `runtime_handler`, what a RuntimeClass's `handler`
    /// names): `None` or empty for the node's default; see [`crate::PodRuntimes`].
    #[serde(default)]
    pub runtime_handler: Option<String>,
    /// The pod's cpu and memory requests and limits as a whole ([`ContainerResourceSpec::of_pod`]);
    /// a VM-isolated pod's guest is sized from them.
    #[serde(default)]
    pub resources: Option<ContainerResourceSpec>,
}

/// CRI `PodSandboxState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    /// Its namespaces and network are set up: containers can be created in it.
    Ready,
    /// Stopped ([`PodRuntime::stop_pod_sandbox`]): network released, containers stopped.
    NotReady,
}

/// A sandbox as seen now (CRI `PodSandboxStatus` plus the config's labels).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodSandboxStatus {
    pub id: String,
    pub metadata: PodSandboxMetadata,
    pub state: SandboxState,
    /// RFC 3339.
    pub created_at: String,
    /// The pod's IP on the node bridge (`None` for host network or once stopped).
    pub ip: Option<IpAddr>,
    pub hostname: String,
    pub namespaces: PodNamespaces,
    pub qos_class: QosClass,
    /// The pod cgroup (relative to the cgroup roots), e.g. `/strata-pods/burstable/pod<id>`.
    pub cgroup_parent: String,
    pub log_directory: PathBuf,
    pub port_mappings: Vec<HostPortMapping>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A filter for [`PodRuntime::list_pod_sandboxes`] (CRI `PodSandboxFilter`); empty: all.
#[derive(Clone, Debug, Default)]
pub struct SandboxFilter {
    pub id: Option<String>,
    pub state: Option<SandboxState>,
    /// Every pair must be among the sandbox's labels.
    pub labels: BTreeMap<String, String>,
}

/// A container's identity in its pod (CRI `ContainerMetadata`): the pod spec's container name
/// and which attempt this is (0 first, +1 per restart).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMetadata {
    pub name: String,
    #[serde(default)]
    pub attempt: u32,
}

/// Mount propagation (Kubernetes `mountPropagation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountPropagation {
    /// Nothing propagates (`rprivate`).
    #[default]
    None,
    /// Mounts made on the host below the source show up in the container (`rslave`).
    HostToContainer,
    /// Both ways (`rshared`).
    Bidirectional,
}

/// What is mounted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountSource {
    /// A host file or directory (emptyDir, hostPath, configMap... prepared by the caller).
    Bind { host_path: PathBuf, #[serde(default)] propagation: MountPropagation },
    /// A fresh tmpfs of its own (size-limited if given).
    Tmpfs { #[serde(default)] size_bytes: Option<u64> },
    /// A pod's memory-backed emptyDir (`medium: Memory`): one tmpfs per pod and volume, shared by
    /// the pod's containers and kept for the pod's life. `host_path` is the tmpfs the node
    /// prepared (`sub_path` joined), which container pods bind-mount; a VM-isolated pod keeps the
    /// volume in its guest's memory instead (a tmpfs in the guest, counted in the guest's memory
    /// as the pod's own use is), as Kata does.
    PodMemory {
        volume: String,
        host_path: PathBuf,
        #[serde(default)]
        sub_path: Option<String>,
        #[serde(default)]
        size_bytes: Option<u64>,
    },
}

/// One mount in a container (CRI `Mount`, plus tmpfs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path in the container.
    pub container_path: PathBuf,
    pub source: MountSource,
    #[serde(default)]
    pub readonly: bool,
}

/// Which seccomp filter a container runs under (Kubernetes `seccompProfile.type`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SeccompProfile {
    /// strata's default profile (as containerd's `runtime/default`).
    #[default]
    RuntimeDefault,
    Unconfined,
    /// A profile file on the node, in the OCI/Docker seccomp JSON format (`defaultAction`,
    /// `syscalls`, ...).
    Localhost(PathBuf),
}

/// A container's security settings (CRI `LinuxContainerSecurityContext`). The default is the
/// secure one: the default capability set, `no_new_privs`, the default seccomp profile, the
/// image's user.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityContext {
    /// Capability names, with or without `CAP_` (`NET_ADMIN`); `ALL` in `drop` empties the
    /// default set first, `ALL` in `add` grants every capability.
    #[serde(default)]
    pub capabilities_add: Vec<String>,
    #[serde(default)]
    pub capabilities_drop: Vec<String>,
    #[serde(default)]
    pub privileged: bool,
    /// The uid to run as (`runAsUser`); default: the image's user.
    #[serde(default)]
    pub run_as_user: Option<u32>,
    /// A user name of the image to run as (when `run_as_user` is not set).
    #[serde(default)]
    pub run_as_username: Option<String>,
    /// The primary gid (`runAsGroup`); default: the user's in the image, else 0.
    #[serde(default)]
    pub run_as_group: Option<u32>,
    /// Added to the user's groups (`supplementalGroups`, `fsGroup`).
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// `allowPrivilegeEscalation: false` sets `no_new_privs`; `None`: set unless privileged
    /// (Kubernetes' default is to allow; strata's secure default is not to).
    #[serde(default)]
    pub no_new_privs: Option<bool>,
    #[serde(default)]
    pub seccomp: SeccompProfile,
}

/// A container's resources (CRI `LinuxContainerResources`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerResources {
    /// cgroup `cpu.shares` (kubelet: requests in millicpu * 1024 / 1000, at least 2).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per `cpu_period_us` (kubelet: limit millicpu * 100).
    pub cpu_quota_us: Option<i64>,
    /// Default 100000.
    pub cpu_period_us: Option<u64>,
    pub memory_limit_bytes: Option<u64>,
    pub pids_limit: Option<u32>,
    pub oom_score_adj: Option<i32>,
}

/// Everything needed to create a container in a sandbox (CRI `ContainerConfig`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub metadata: ContainerMetadata,
    /// Image reference or id; must already be in the image store.
    pub image: String,
    /// Kubernetes `command`: replaces the image's entrypoint (and then drops its cmd).
    #[serde(default)]
    pub command: Vec<String>,
    /// Kubernetes `args`: replaces the image's cmd.
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `KEY=VALUE`, over the image's environment.
    #[serde(default)]
    pub envs: Vec<String>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Also written to the OCI spec's annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// The log file, relative to the sandbox's log directory; default
    /// `<name>/<attempt>.log` (kubelet's layout), so each attempt has its own file.
    #[serde(default)]
    pub log_path: Option<PathBuf>,
    /// Keep stdin open (attach).
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin after the first attach ends (Kubernetes `stdinOnce`; recorded, not yet
    /// enforced).
    #[serde(default)]
    pub stdin_once: bool,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub resources: ContainerResources,
    #[serde(default)]
    pub security: SecurityContext,
}

/// CRI `ContainerState`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    Unknown,
}

/// A pod container as seen now (CRI `ContainerStatus`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub id: String,
    pub sandbox_id: String,
    pub metadata: ContainerMetadata,
    pub state: ContainerState,
    /// RFC 3339 times.
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// With `Exited`.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// With `Exited`: `Completed` (code 0), `OOMKilled` or `Error` (Kubernetes' words).
    pub reason: Option<String>,
    /// More about the reason (`SIGKILL`, "its supervisor died").
    pub message: Option<String>,
    /// The image as asked for, and the image id (`sha256:...`, what `imageID` shows).
    pub image: String,
    pub image_ref: String,
    /// Host pid of the container's main process while it exists.
    pub pid: Option<i32>,
    pub log_path: PathBuf,
    /// The full exit as recorded (for callers that want the details).
    pub exit: Option<ExitStatus>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// A filter for [`PodRuntime::list_containers`] (CRI `ContainerFilter`); empty: all pod
/// containers.
#[derive(Clone, Debug, Default)]
pub struct ContainerFilter {
    pub id: Option<String>,
    pub sandbox_id: Option<String>,
    pub state: Option<ContainerState>,
    pub labels: BTreeMap<String, String>,
}

/// What [`PodRuntime::exec_sync`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecSyncResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_code: i32,
}

/// A streaming exec (`kubectl exec [-i] [-t]`), see [`PodRuntime::exec_session`].
#[derive(Clone, Debug, Default)]
pub struct ExecSessionRequest {
    pub command: Vec<String>,
    /// Give the process a terminal: its output (stdout and stderr together) is read from
    /// `stdout`, input is keystrokes, and [`ExecSession::resize`] works.
    pub tty: bool,
    /// Connect input (without it the process reads end-of-file at once; a terminal always has
    /// input).
    pub stdin: bool,
    /// The terminal's initial size (rows, columns).
    pub size: Option<(u16, u16)>,
}

/// A process running in a container with its stdio as plain files: read and write them from
/// threads, or register them with an async reactor (they are pipes or a terminal; set them
/// non-blocking first). Dropping the session does not stop the process; [`ExecSession::kill`]
/// does.
pub struct ExecSession {
    /// Input; drop it to send end of input (on a terminal, write the EOF character `^D`).
    pub stdin: Option<std::fs::File>,
    /// Output (with a terminal: everything the process writes; a read error `EIO` there means
    /// the terminal closed, i.e. the end of output).
    pub stdout: Option<std::fs::File>,
    /// Error output (`None` with a terminal).
    pub stderr: Option<std::fs::File>,
    pub tty: bool,
    pub(crate) inner: Box<dyn ExecProcess>,
}

/// What a driver keeps of a running exec (behind [`ExecSession`]).
pub(crate) trait ExecProcess: Send {
    fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()>;
    fn wait(&mut self) -> std::io::Result<i32>;
    fn try_wait(&mut self) -> std::io::Result<Option<i32>>;
    fn kill(&mut self);
    fn pid(&self) -> u32;
}

impl ExecSession {
    /// Set the terminal's size (no-op error without a terminal).
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        self.inner.resize(rows, cols)
    }

    /// Block until the process exits; its exit code (128 + signal when killed).
    pub fn wait(&mut self) -> std::io::Result<i32> {
        self.inner.wait()
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<i32>> {
        self.inner.try_wait()
    }

    /// Kill the process (SIGKILL) and the runtime process carrying it.
    pub fn kill(&mut self) {
        self.inner.kill()
    }

    /// The host pid of the local process that ends when the exec ends (for a pidfd).
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession").field("tty", &self.tty).field("pid", &self.pid()).finish()
    }
}

/// Something that happened to a pod container (CRI's container events).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEvent {
    pub container_id: String,
    pub sandbox_id: String,
    pub kind: PodEventKind,
    /// When the driver noticed it (RFC 3339); an exit's own time is in its `ExitStatus`.
    pub time: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodEventKind {
    /// Created by this driver (`create_container`).
    Created,
    /// Its process runs.
    Started,
    /// It ended: code, signal, and why (`reason` is `OOMKilled` for an OOM kill, with
    /// `oom_killed` set).
    Exited(ExitStatus),
    /// Removed by this driver (`remove_container`, or with its sandbox).
    Removed,
}

/// Labels the driver puts on every pod container (as kubelet does over CRI), so that `strata
/// ps` and other readers can tell which pod a container belongs to.
pub mod labels {
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    pub const SANDBOX_ID: &str = "io.strata.sandbox.id";
}

/// The pod runtime: sandboxes and the containers in them (see the module documentation).
/// Every method is safe to call from several threads and processes at once.
pub trait PodRuntime: Send + Sync {
    /// Create and start a sandbox: namespaces, IP, `/etc` files, pod cgroup, host ports. On
    /// error nothing is left behind. Returns the sandbox id.
    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, Error>;
    /// Kill every container of the sandbox and release its network (IP lease, host ports); the
    /// sandbox stays listed as `NotReady` until removed. Idempotent.
    fn stop_pod_sandbox(&self, id: &str) -> Result<(), Error>;
    /// Remove the sandbox, its containers (killed if running) and everything they own.
    /// Removing a sandbox that does not exist is not an error (CRI).
    fn remove_pod_sandbox(&self, id: &str) -> Result<(), Error>;
    fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, Error>;
    /// Sandboxes, oldest first. Reads only: nothing is changed by listing.
    fn list_pod_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<PodSandboxStatus>, Error>;

    /// Create a container in a ready sandbox (image unpacked, process created, not started).
    /// The name `metadata.name` + `attempt` is unique within the sandbox (`AlreadyExists`).
    fn create_container(&self, sandbox_id: &str, config: &ContainerConfig) -> Result<String, Error>;
    /// Start a created container. An exited container is not started again: create the next
    /// attempt.
    fn start_container(&self, id: &str) -> Result<(), Error>;
    /// Send the stop signal (the image's, else SIGTERM), SIGKILL after `timeout`. Stopping an
    /// exited container is not an error.
    fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), Error>;
    /// Remove a container (killed if running) and its files; its log file goes too when it is
    /// in the sandbox's own log directory, and stays in a caller's `log_directory`.
    fn remove_container(&self, id: &str) -> Result<(), Error>;
    fn container_status(&self, id: &str) -> Result<ContainerStatus, Error>;
    /// Pod containers, oldest first. Reads only.
    fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>, Error>;
    /// Whether the runtime can run pods (CRI `Status`, RuntimeReady); Err says why not. Cheap
    /// checks only, whatever the number of pods: no record is read (the node agent asks every
    /// 10 s for its Ready condition).
    fn health(&self) -> Result<(), Error>;

    /// Run `cmd` in a running container and collect its output (probes). `timeout`: kill it
    /// and answer `Error::Timeout` when it runs longer.
    fn exec_sync(&self, id: &str, cmd: &[String], timeout: Option<Duration>) -> Result<ExecSyncResult, Error>;
    /// Start `req.command` in a running container with its stdio handed to the caller
    /// (`kubectl exec -i -t`); see [`ExecSession`].
    fn exec_session(&self, id: &str, req: &ExecSessionRequest) -> Result<ExecSession, Error>;
    /// The container's output (`kubectl logs`): `opts` selects (tail, since, limit) and
    /// follows; see [`LogOptions`].
    fn container_logs(&self, id: &str, opts: &LogOptions, sink: &mut dyn FnMut(&LogRecord) -> bool) -> Result<(), Error>;
    /// Attach to a running container's main process (`kubectl attach`).
    fn attach_container(&self, id: &str) -> Result<Attachment, Error>;

    /// A TCP connection to `port` on the loopback of the sandbox's network namespace (CRI's
    /// `PortForward`, what `kubectl port-forward` reaches: a server listening on the pod's
    /// 127.0.0.1 only is reached too).
    fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<std::net::TcpStream, Error>;

    /// The events of pod containers from now on, so that a caller need not poll: `Started`
    /// and `Exited` (with the exit code, signal and OOM kill, as soon as the supervisor has
    /// recorded it) for every pod container on this root, whoever started it; `Created` and
    /// `Removed` for what this driver handle did. Subscribe first, then list, to miss nothing.
    /// The feed ends for a receiver when it is dropped. A blocking receiver: read it on a thread
    /// of its own (e.g. `spawn_blocking`, forwarding into an async channel).
    fn subscribe(&self) -> Result<std::sync::mpsc::Receiver<PodEvent>, Error>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos_classes_as_kubernetes_gives_them() {
        let c = |cr, cl, mr, ml| ContainerResourceSpec { cpu_request_millis: cr, cpu_limit_millis: cl, memory_request_bytes: mr, memory_limit_bytes: ml };
        assert_eq!(QosClass::of(&[]), QosClass::BestEffort);
        assert_eq!(QosClass::of(&[c(None, None, None, None)]), QosClass::BestEffort);
        // Limits only: requests default to them.
        assert_eq!(QosClass::of(&[c(None, Some(500), None, Some(64))]), QosClass::Guaranteed);
        assert_eq!(QosClass::of(&[c(Some(500), Some(500), Some(64), Some(64)), c(None, Some(100), None, Some(8))]), QosClass::Guaranteed);
        assert_eq!(QosClass::of(&[c(Some(100), Some(500), Some(64), Some(64))]), QosClass::Burstable);
        assert_eq!(QosClass::of(&[c(Some(500), Some(500), Some(64), Some(64)), c(None, None, None, None)]), QosClass::Burstable);
        assert_eq!(QosClass::of(&[c(None, None, Some(64), None)]), QosClass::Burstable);
    }

    #[test]
    fn pod_resources_as_kubelet_sums_them() {
        let c = |cr, cl, mr, ml| ContainerResourceSpec { cpu_request_millis: cr, cpu_limit_millis: cl, memory_request_bytes: mr, memory_limit_bytes: ml };
        let none = c(None, None, None, None);
        assert_eq!(ContainerResourceSpec::of_pod(&[none, none], &[]), none);
        // Requests add up (a missing one counts 0); a limit needs every app container to have one.
        let app = [c(Some(500), Some(1000), Some(64), Some(64)), c(Some(250), None, None, Some(32))];
        assert_eq!(ContainerResourceSpec::of_pod(&app, &[]), c(Some(750), None, Some(64), Some(96)));
        // A larger init container wins, field by field.
        let init = [c(Some(2000), Some(2000), Some(16), Some(16))];
        assert_eq!(ContainerResourceSpec::of_pod(&app, &init), c(Some(2000), None, Some(64), Some(96)));
        let app = [c(Some(500), Some(1000), Some(64), Some(64))];
        assert_eq!(ContainerResourceSpec::of_pod(&app, &init), c(Some(2000), Some(2000), Some(64), Some(64)));
    }
}
