//! The data the driver interface speaks: requests, states, exit statuses, stats.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Everything needed to create a workload.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CreateRequest {
    /// Unique name; generated when absent.
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub resources: Resources,
    pub network: NetworkMode,
    pub ports: Vec<PortMapping>,
    /// What runs; a driver refuses workloads of another kind.
    pub workload: Workload,
    /// Remove the workload once it has exited (`run --rm`).
    #[serde(default)]
    pub auto_remove: bool,
}

/// The kind-specific part of a [`CreateRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// An OCI image run as a container.
    Container(ContainerSpec),
    /// A full virtual machine.
    Vm(VmSpec),
}

impl Default for Workload {
    fn default() -> Self {
        Workload::Container(ContainerSpec::default())
    }
}

impl Workload {
    pub fn kind(&self) -> &'static str {
        match self {
            Workload::Container(_) => "container",
            Workload::Vm(_) => "vm",
        }
    }
}

/// A virtual machine: boot from a kernel (+ initrd) or from a disk image. Memory and CPUs come
/// from [`Resources`] (defaults 256 MiB, 1 CPU).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct VmSpec {
    pub kernel: Option<std::path::PathBuf>,
    pub initrd: Option<std::path::PathBuf>,
    /// Kernel command line.
    pub append: Option<String>,
    /// A base disk image (qcow2 or raw); the VM writes to its own overlay, never to the base.
    pub disk: Option<std::path::PathBuf>,
    /// cloud-init user-data file, served as a NoCloud seed.
    pub cloud_init: Option<std::path::PathBuf>,
    /// Virtual size of the VM's disk (at least the base image's); default: the base's.
    #[serde(default)]
    pub disk_size_bytes: Option<u64>,
    /// cloud-init network-config file for the seed, instead of the one the driver writes with
    /// the VM's bridge address.
    #[serde(default)]
    pub network_config: Option<std::path::PathBuf>,
}

/// What runs: an OCI image and how to run it. Unset fields come from the image config,
/// merged as Docker does.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference or id; must already be in the image store.
    pub image: String,
    /// Replaces the image's entrypoint (and then also drops the image's cmd).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's cmd when non-empty.
    pub command: Vec<String>,
    /// `KEY=VALUE`, overriding the image's values for the same keys.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, resolved in the image's /etc/passwd.
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub privileged: bool,
    pub read_only: bool,
    /// Keep stdin open for [`crate::Driver::attach`] (`-i`).
    #[serde(default)]
    pub stdin: bool,
    /// Give the process a terminal (`-t`).
    #[serde(default)]
    pub tty: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    /// CPUs, possibly fractional (`0.5`).
    pub cpus: Option<f64>,
    pub pids: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Own network namespace on the node bridge (the default).
    #[default]
    Bridge,
    /// The host's network namespace.
    Host,
    /// Own network namespace with loopback only (a VM: no NIC).
    None,
    /// VMs only: QEMU's user-mode network (no privileges; ports forwarded by QEMU).
    User,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
            NetworkMode::User => "user",
        }
    }
}

/// `-p [ip:]host_port:container_port[/tcp]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Paused,
    Exited,
    /// The supervisor is gone and the outcome could not be recorded.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Exited => "exited",
            Status::Unknown => "unknown",
        }
    }
}

/// How a workload ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// As a shell reports it: the exit code, or 128 + the signal number.
    pub code: i32,
    /// The signal that killed it (not set for a program that exited with a code above 128).
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: String,
    /// Why it ended, in one word (see [`ExitReason`]).
    #[serde(default)]
    pub reason: ExitReason,
    /// The signal's name (`SIGKILL`), with `signal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_name: Option<String>,
    /// What the reason alone does not say (a guest's panic line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl ExitStatus {
    /// An exit as the supervisor recorded it; the reason follows from the facts (an OOM kill
    /// before a signal before the code).
    pub fn new(code: i32, signal: Option<i32>, oom_killed: bool, finished_at: String) -> ExitStatus {
        let reason = match (oom_killed, signal, code) {
            (true, _, _) => ExitReason::OomKilled,
            (false, Some(_), _) => ExitReason::Signaled,
            (false, None, 0) => ExitReason::Completed,
            (false, None, _) => ExitReason::Error,
        };
        let signal_name = signal.and_then(|s| nix::sys::signal::Signal::try_from(s).ok()).map(|s| s.as_str().to_string());
        ExitStatus { code, signal, oom_killed, finished_at, reason, signal_name, message: None }
    }

    /// A pod container's terminated reason and message as Kubernetes words them (`OOMKilled`,
    /// `Completed`, `Error` with the signal).
    pub fn pod_reason(&self) -> (String, Option<String>) {
        match self.reason {
            ExitReason::OomKilled => ("OOMKilled".into(), None),
            ExitReason::Completed => ("Completed".into(), None),
            ExitReason::Error => ("Error".into(), None),
            ExitReason::Signaled => ("Error".into(), self.signal_name.clone()),
            ExitReason::SupervisorLost => ("Error".into(), Some("its supervisor died; the container was stopped".into())),
            ExitReason::GuestPanicked => ("GuestPanicked".into(), self.message.clone()),
        }
    }

    /// What `ps` shows in parentheses: the code, and the signal or the reason when it says
    /// more than the code (`137, SIGKILL`; `137, OOMKilled`).
    pub fn summary(&self) -> String {
        match (&self.reason, &self.signal_name) {
            (ExitReason::OomKilled | ExitReason::SupervisorLost | ExitReason::GuestPanicked, _) => format!("{}, {}", self.code, self.reason.as_str()),
            (_, Some(sig)) => format!("{}, {sig}", self.code),
            _ => self.code.to_string(),
        }
    }
}

/// Why a workload ended (the words Kubernetes uses for containers where it has one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitReason {
    /// Exit code 0.
    #[default]
    Completed,
    /// Another exit code.
    Error,
    /// Killed by a signal (see `signal`).
    Signaled,
    /// Killed by the kernel's OOM killer (at its memory limit).
    #[serde(rename = "OOMKilled")]
    OomKilled,
    /// Its supervisor died, so how it ended could not be recorded; the driver stopped what was
    /// left of it (see ARCHITECTURE.md, "Survival").
    SupervisorLost,
    /// A VM's guest kernel panicked (`message` says how it was seen), whatever QEMU's exit code
    /// (KubeVirt's Warning event `GuestPanicked`).
    GuestPanicked,
}

impl ExitReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ExitReason::Completed => "Completed",
            ExitReason::Error => "Error",
            ExitReason::Signaled => "Signaled",
            ExitReason::OomKilled => "OOMKilled",
            ExitReason::SupervisorLost => "SupervisorLost",
            ExitReason::GuestPanicked => "GuestPanicked",
        }
    }
}

/// A workload as seen now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkloadState {
    pub id: String,
    pub name: String,
    /// `container` (later `microvm`, `vm`).
    pub kind: String,
    pub image: String,
    pub image_id: String,
    pub command: Vec<String>,
    pub status: Status,
    pub created_at: String,
    pub started_at: Option<String>,
    pub exit: Option<ExitStatus>,
    pub pid: Option<i32>,
    pub ip: Option<IpAddr>,
    pub ports: Vec<PortMapping>,
    pub labels: BTreeMap<String, String>,
}

/// Which records [`crate::Driver::logs`] and [`crate::PodRuntime::container_logs`] give.
#[derive(Clone, Debug, Default)]
pub struct LogOptions {
    /// Keep giving new records until the workload has exited (or `cancel` is set, or the sink
    /// returns false).
    pub follow: bool,
    /// Only the last N records written so far (those at or after `since`).
    pub tail: Option<usize>,
    /// Only records written at or after this time (RFC 3339; `kubectl logs --since`).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Stop after the records' content (plus a newline each) reached this many bytes; the
    /// record that crosses it is cut, as `kubectl logs --limit-bytes` does.
    pub limit_bytes: Option<u64>,
    /// Set from another thread to end a following read within ~20 ms even when no output
    /// comes (a client that went away).
    pub cancel: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// One line (or a piece of a long line, `partial`) of workload output.
#[derive(Clone, Debug)]
pub struct LogRecord {
    pub time: String,
    pub stream: LogStream,
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Input to a running workload: its stdin (or terminal) and the terminal's size.
pub trait AttachInput: Send {
    fn input(&mut self, data: &[u8]) -> std::io::Result<()>;
    fn resize(&mut self, rows: u16, cols: u16) -> std::io::Result<()>;
    /// End of input (EOF on stdin; the EOF character on a terminal).
    fn close_input(&mut self) -> std::io::Result<()>;
}

/// A connection to a workload's main process (see [`crate::Driver::attach_session`]).
pub struct Attachment {
    /// The workload has a terminal: its output is the terminal's and its input is keystrokes.
    pub tty: bool,
    /// The workload reads stdin (created with `stdin`), so input is worth sending.
    pub stdin: bool,
    /// Input and terminal resizes; `None` for a workload created with neither stdin nor a
    /// terminal.
    pub input: Option<Box<dyn AttachInput>>,
    /// The output from the moment of attaching, in the order it was produced, until the
    /// workload exits.
    pub output: Box<dyn Iterator<Item = std::io::Result<OutputChunk>> + Send>,
}

/// A piece of a workload's output, as it was read (not split into lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: LogStream,
    pub data: Vec<u8>,
}

/// One process of a workload (`top`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessInfo {
    /// Pid inside the workload.
    pub pid: i32,
    /// The parent's pid inside the workload; 0 for a parent outside it.
    pub ppid: i32,
    pub host_pid: i32,
    /// The user's name in the workload's own user database, else the uid.
    pub user: String,
    /// Controlling terminal (`pts/0`).
    pub tty: Option<String>,
    /// User plus system CPU time.
    pub cpu_time: std::time::Duration,
    /// Time since the process started.
    pub elapsed: std::time::Duration,
    pub command: String,
}

/// Run another process in a workload.
#[derive(Clone, Debug, Default)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// Added to (and overriding) the workload's environment.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// Capture stdout and stderr instead of inheriting the caller's stdio.
    pub capture: bool,
    /// Connect the caller's stdin (otherwise the process reads from /dev/null).
    pub interactive: bool,
    /// Allocate a terminal for the process (the caller's stdin must be a terminal).
    pub tty: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ExecResult {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Stats {
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_ns: u64,
    pub pids: u64,
}

/// What a driver supports.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Capabilities {
    pub kind: String,
    /// How workloads are isolated: `namespaces`, `microvm`, `vm`.
    pub isolation: String,
    pub exec: bool,
    pub pause: bool,
    pub stats: bool,
    pub port_publishing: bool,
    pub network_modes: Vec<NetworkMode>,
}
