//! Pod sandboxes and the containers in them: the container driver's [`PodRuntime`].
//!
//! On-disk layout under the strata root, beside `containers/`:
//! ```text
//! sandboxes/<id>/record.json     the config and what was set up (`SandboxRecord`)
//! sandboxes/<id>/{hostname,hosts,resolv.conf}   bind-mounted into every container of the pod
//! sandboxes/<id>/logs/<name>/<attempt>.log      container logs (unless a log directory is given)
//! sandbox-names/<name>           the id owning a pod's name (`k8s_POD_<name>_<ns>_<uid>_<attempt>`)
//! /run/strata/netns/<id>         the pod's network namespace (CNI bridge, IP lease named by <id>)
//! /run/strata/ns/<id>.{ipc,uts}  its pinned IPC and UTS namespaces
//! cgroup /strata-pods/<qos>/pod<id>/<container id>
//! ```
//! A pod container is an ordinary container record (`containers/<id>`) with a `pod` part
//! naming its sandbox: it is supervised, listed, stopped and removed like any container, and
//! joins the sandbox's namespaces instead of making its own. Sandboxes have no process: their
//! namespaces are pinned by bind mounts, so nothing needs re-adopting after a restart but the
//! records.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_oci::network::{self, BridgeNetwork};
use strata_oci::spec::{MountSpec, Namespace, Propagation, Seccomp, SpecExtra};
use std::net::SocketAddr;
use strata_oci::{cgroups, infra, ns};
use strata_supervise::ports::{PortForward, Protocol};
use strata_supervise::util;

use super::{config, ContainerDriver, Record};
use crate::pod::{
    labels, ContainerConfig, ContainerFilter, PodEvent, PodEventKind, ContainerState, ContainerStatus, ExecSyncResult, MountPropagation, MountSource,
    NamespaceMode, PodRuntime, PodSandboxConfig, PodSandboxStatus, SandboxFilter, SandboxState, SeccompProfile,
};
use crate::registry::{now, random_id, IntentInfo, Op};
use crate::{
    Attachment, ContainerSpec, CreateRequest, Driver, Error, ExecRequest, ExitStatus, LogOptions, LogRecord, NetworkMode, PortMapping,
    Resources, Status, Workload,
};

/// The top of the pod cgroups (beside `/strata`, which holds plain containers).
pub const POD_CGROUP_ROOT: &str = "/strata-pods";

/// What a pod container's record adds (see `Record::pod`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PodPart {
    pub sandbox_id: String,
    pub config: ContainerConfig,
    /// Absolute path of this attempt's log file.
    pub log_path: PathBuf,
    /// The pod cgroup; the container's is `<cgroup_parent>/<id>`.
    pub cgroup_parent: String,
    /// The sandbox's host ports (for `ps`).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

impl PodPart {
    pub fn host_ports(&self) -> Vec<PortMapping> {
        self.ports.clone()
    }

    /// `runAsGroup` and `supplementalGroups` over what the image's user database gave.
    pub fn adjust_process(&self, p: &mut config::Process) {
        let s = &self.config.security;
        if let Some(g) = s.run_as_group {
            p.gid = g;
        }
        for g in &s.supplemental_groups {
            if !p.additional_gids.contains(g) && *g != p.gid {
                p.additional_gids.push(*g);
            }
        }
    }

    /// The spec settings of a container in sandbox `sb`.
    pub fn spec_extra(&self, sb: &SandboxRecord) -> Result<SpecExtra, Error> {
        let c = &self.config;
        let s = &c.security;
        let mut x = SpecExtra {
            pid_ns: match sb.config.namespaces.pid {
                NamespaceMode::Node => Namespace::Host,
                NamespaceMode::Container => Namespace::New,
                NamespaceMode::Pod => match sb.pid_init.filter(|(p, s)| util::process_alive(*p, *s)) {
                    Some((pid, _)) => Namespace::Path(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
                    None => {
                        return Err(Error::FailedPrecondition(format!(
                            "the PID namespace of pod sandbox {} is gone (its init died)",
                            sb.id
                        )))
                    }
                },
            },
            ipc_ns: sb.ipc_ns.clone().map_or(Namespace::Host, Namespace::Path),
            uts_ns: sb.uts_ns.clone().map_or(Namespace::Host, Namespace::Path),
            no_new_privileges: s.no_new_privs,
            cpu_shares: c.resources.cpu_shares,
            cpu_period_us: c.resources.cpu_period_us,
            oom_score_adj: c.resources.oom_score_adj,
            annotations: c.annotations.clone(),
            sysctls: sb.config.sysctls.clone(),
            ..Default::default()
        };
        for m in &c.mounts {
            if !m.container_path.is_absolute() {
                return Err(Error::InvalidArgument(format!("mount path {} is not absolute", m.container_path.display())));
            }
            x.mounts.push(match &m.source {
                MountSource::Bind { host_path, .. } | MountSource::PodMemory { host_path, .. } => {
                    let propagation = match &m.source {
                        MountSource::Bind { propagation, .. } => *propagation,
                        _ => MountPropagation::None,
                    };
                    if !host_path.is_absolute() || std::fs::symlink_metadata(host_path).is_err() {
                        return Err(Error::InvalidArgument(format!(
                            "mount source {} for {} does not exist (or is not an absolute path)",
                            host_path.display(),
                            m.container_path.display()
                        )));
                    }
                    MountSpec::Bind {
                        source: host_path.clone(),
                        destination: m.container_path.clone(),
                        readonly: m.readonly,
                        propagation: match propagation {
                            MountPropagation::None => Propagation::Private,
                            MountPropagation::HostToContainer => Propagation::HostToContainer,
                            MountPropagation::Bidirectional => Propagation::Bidirectional,
                        },
                    }
                }
                MountSource::Tmpfs { size_bytes } => {
                    MountSpec::Tmpfs { destination: m.container_path.clone(), size_bytes: *size_bytes, readonly: m.readonly }
                }
            });
        }
        let all = |list: &[String]| list.iter().any(|c| c.eq_ignore_ascii_case("ALL"));
        x.cap_drop_all = all(&s.capabilities_drop);
        x.cap_add = if all(&s.capabilities_add) { every_capability() } else { parse_capabilities(&s.capabilities_add)? };
        x.cap_drop = parse_capabilities(&s.capabilities_drop)?;
        x.seccomp = match &s.seccomp {
            SeccompProfile::RuntimeDefault => Seccomp::Default,
            SeccompProfile::Unconfined => Seccomp::Unconfined,
            SeccompProfile::Localhost(path) => {
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::InvalidArgument(format!("cannot read seccomp profile {}: {e}", path.display()))
                })?;
                let profile: oci_spec::runtime::LinuxSeccomp = serde_json::from_slice(&bytes)
                    .map_err(|e| Error::InvalidArgument(format!("seccomp profile {} is not valid: {e}", path.display())))?;
                Seccomp::Profile(Box::new(profile))
            }
        };
        Ok(x)
    }
}

/// `NET_ADMIN` or `CAP_NET_ADMIN` to the capability; `ALL` is handled by the caller.
fn parse_capabilities(names: &[String]) -> Result<Vec<oci_spec::runtime::Capability>, Error> {
    names
        .iter()
        .filter(|n| !n.eq_ignore_ascii_case("ALL"))
        .map(|n| {
            let upper = n.to_ascii_uppercase();
            let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
            serde_json::from_value(serde_json::Value::String(full)).map_err(|_| Error::InvalidArgument(format!("unknown capability {n:?}")))
        })
        .collect()
}

fn every_capability() -> Vec<oci_spec::runtime::Capability> {
    strata_oci::spec::DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .chain(
            [
                "CAP_DAC_READ_SEARCH", "CAP_LINUX_IMMUTABLE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
                "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
                "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_LEASE", "CAP_AUDIT_CONTROL", "CAP_MAC_OVERRIDE",
                "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
                "CAP_CHECKPOINT_RESTORE",
            ]
            .iter()
            .filter_map(|n| serde_json::from_value(serde_json::Value::String(n.to_string())).ok()),
        )
        .collect()
}

/// What the driver persists per sandbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub config: PodSandboxConfig,
    pub created_at: String,
    pub hostname: String,
    /// The pod's network namespace (`None`: the node's).
    pub netns: Option<PathBuf>,
    pub ip: Option<IpAddr>,
    /// Pinned namespaces (`None`: the node's).
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    pub cgroup_parent: String,
    pub log_directory: PathBuf,
    /// The log directory is the sandbox's own (inside its directory).
    pub own_log_directory: bool,
    pub stopped: bool,
    /// The pod supervisor (host ports, PID namespace init), when the pod needs one.
    #[serde(default)]
    pub supervisor: Option<(i32, u64)>,
    /// The init of the pod's PID namespace (`namespaces.pid == Pod`).
    #[serde(default)]
    pub pid_init: Option<(i32, u64)>,
}

/// Why a sandbox that was not stopped no longer works (as a pause container that died makes a
/// CRI sandbox NotReady): its supervisor or its PID namespace's init is gone (the host ports are
/// no longer served, the namespace is gone), or its network namespace's pin was removed.
/// `None` when it is whole.
fn sandbox_broken(sb: &SandboxRecord) -> Option<String> {
    if sb.supervisor.is_some_and(|(pid, start)| !util::process_alive(pid, start)) {
        return Some("its supervisor exited".into());
    }
    if sb.pid_init.is_some_and(|(pid, start)| !util::process_alive(pid, start)) {
        return Some("the init of its PID namespace exited".into());
    }
    match &sb.netns {
        Some(path) if std::fs::symlink_metadata(path).is_err() => Some(format!("its network namespace {} is gone", path.display())),
        _ => None,
    }
}

/// The pod supervisor's files in the sandbox directory.
const POD_CONFIG: &str = "pod.json";
const POD_STATE: &str = "pod.state";
const POD_LOG: &str = "pod.log";

/// The name reserved for a pod sandbox: one ready sandbox per pod attempt.
fn sandbox_name(m: &crate::pod::PodSandboxMetadata) -> String {
    let long = format!("k8s_POD_{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt);
    if long.len() <= 128 {
        return long;
    }
    format!("k8s_POD_{}_{}", m.uid.chars().take(64).collect::<String>(), m.attempt)
}

/// The pod's hostname: asked for, else the pod's name (a label of at most 63 characters). The
/// kernel takes 64 (a pod's FQDN may be that long).
fn pod_hostname(c: &PodSandboxConfig) -> Result<String, Error> {
    let h = c.hostname.clone().unwrap_or_else(|| c.metadata.name.chars().take(63).collect());
    let h = h.trim_end_matches(['-', '.']).to_string();
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
        && h.starts_with(|ch: char| ch.is_ascii_alphanumeric());
    if !ok {
        return Err(Error::InvalidArgument(format!("invalid pod hostname {h:?}: at most 64 letters, digits, '-' or '.'")));
    }
    Ok(h)
}

fn resolv_conf(dns: Option<&crate::pod::DnsConfig>) -> String {
    let Some(d) = dns else {
        return std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    };
    let mut out = String::new();
    if !d.searches.is_empty() {
        out.push_str(&format!("search {}\n", d.searches.join(" ")));
    }
    for s in &d.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !d.options.is_empty() {
        out.push_str(&format!("options {}\n", d.options.join(" ")));
    }
    out
}

/// The pod's `/etc/hosts`, as kubelet writes it: localhost entries and the pod's own line (its
/// IP and `hosts_names`, else its hostname), or on the node's network the node's file; then
/// the host aliases.
fn hosts_file(sb: &SandboxRecord) -> String {
    let mut hosts = match sb.config.namespaces.network {
        NamespaceMode::Node => format!("# Kubernetes-managed hosts file (host network).\n{}", std::fs::read_to_string("/etc/hosts").unwrap_or_default()),
        _ => {
            let mut h = String::from(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
            );
            let names = if sb.config.hosts_names.is_empty() { sb.hostname.clone() } else { sb.config.hosts_names.join("\t") };
            if let Some(ip) = sb.ip {
                h.push_str(&format!("{ip}\t{names}\n"));
            }
            h
        }
    };
    if !sb.config.host_aliases.is_empty() {
        hosts.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in &sb.config.host_aliases {
            hosts.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    hosts
}

/// A dotted sysctl name whose `/proc/sys` path stays there: non-empty words of letters, digits,
/// `_` and `-`, separated by `.` (a `/` inside a word stands for a `.` in the path, as in
/// `net.ipv4.conf.eth0/100.forwarding`).
fn valid_sysctl_name(name: &str) -> bool {
    name.split('.').all(|seg| {
        !seg.is_empty()
            && seg.split('/').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    })
}

/// Is `filter` a subset of `labels`?
fn labels_match(filter: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    filter.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl ContainerDriver {
    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.sandboxes.dir.join(id)
    }

    fn load_sandbox(&self, id: &str) -> Result<SandboxRecord, Error> {
        self.sandboxes.load(id).map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!("pod sandbox {id}")),
            e => e,
        })
    }

    fn save_sandbox(&self, r: &SandboxRecord) -> Result<(), Error> {
        self.sandboxes.save(&r.id, r, false)
    }

    /// The sandbox `id`, which must be ready for new containers.
    pub(crate) fn ready_sandbox(&self, id: &str) -> Result<SandboxRecord, Error> {
        let sb = self.load_sandbox(id)?;
        if sb.stopped {
            return Err(Error::FailedPrecondition(format!("pod sandbox {id} is stopped: no container can be created in it")));
        }
        if let Some(why) = sandbox_broken(&sb) {
            return Err(Error::FailedPrecondition(format!("pod sandbox {id} is not ready ({why}): no container can be created in it")));
        }
        Ok(sb)
    }

    /// The pod's `/etc` files for a container: (host file, container path).
    pub(crate) fn sandbox_etc_files(&self, sb: &SandboxRecord) -> Vec<(PathBuf, PathBuf)> {
        let dir = self.sandbox_dir(&sb.id);
        ["hostname", "hosts", "resolv.conf"].iter().map(|n| (dir.join(n), PathBuf::from("/etc").join(n))).collect()
    }

    /// Finish or roll back sandbox creates and removes whose process died half-way.
    pub(crate) fn recover_sandboxes(&self) {
        self.sandboxes.recover_orphans(&mut |info: &IntentInfo| {
            let record = self.load_sandbox(&info.id).ok();
            if info.op == Op::Remove {
                self.remove_sandbox_containers(&info.id)?;
            }
            self.cleanup_sandbox(&info.id, Some(&info.name), record.as_ref())
        });
    }

    /// The containers of sandbox `sandbox_id`, newest first, found by the names
    /// `create_container` gives them (`k8s_<name>_<attempt>_<first 12 of the sandbox id>`): one
    /// read of the names directory and the records of the matching names only, not every record
    /// on the node (stopping and removing each of N pods would read N² records).
    fn sandbox_containers(&self, sandbox_id: &str) -> Result<Vec<Record>, Error> {
        let suffix = format!("_{}", sandbox_id.get(..12).unwrap_or(sandbox_id));
        let names = &self.registry.names;
        let entries = std::fs::read_dir(names).map_err(Error::io(format!("reading {}", names.display())))?;
        let mut out: Vec<Record> = entries
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with("k8s_") && n.ends_with(&suffix)))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|id| self.load(id.trim()).ok())
            .filter(|r| r.pod.as_ref().is_some_and(|p| p.sandbox_id == sandbox_id))
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at));
        Ok(out)
    }

    fn remove_sandbox_containers(&self, sandbox_id: &str) -> Result<(), Error> {
        for r in self.sandbox_containers(sandbox_id)? {
            match self.remove_container(&r.id) {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Release the sandbox's network: IP lease, interfaces and namespace. Idempotent; works
    /// without a record (the namespace and lease are named by the id).
    fn release_sandbox_network(&self, id: &str, record: Option<&SandboxRecord>) -> Result<(), Error> {
        let default_netns = Path::new(network::NETNS_DIR).join(id);
        let netns = record.and_then(|r| r.netns.clone()).or_else(|| default_netns.exists().then_some(default_netns));
        if let Some(netns) = netns {
            BridgeNetwork::discover()?.del(id, &netns)?;
            network::remove_netns(&netns)?;
        }
        Ok(())
    }

    /// Remove every trace of a sandbox but its containers (removed first by the caller).
    /// Idempotent; tolerant of a half-created sandbox and of a missing record.
    fn cleanup_sandbox(&self, id: &str, name: Option<&str>, record: Option<&SandboxRecord>) -> Result<(), Error> {
        let mut first: Option<Error> = None;
        let note = |first: &mut Option<Error>, r: Result<(), Error>| {
            if let Err(e) = r {
                tracing::warn!(sandbox = id, error = %e, "sandbox cleanup step failed");
                first.get_or_insert(e);
            }
        };
        self.stop_pod_supervisor(id, record);
        note(&mut first, self.release_sandbox_network(id, record));
        for kind in [ns::Kind::Ipc, ns::Kind::Uts] {
            let path = ns::pin_path(id, kind);
            note(&mut first, ns::unpin(&path).map_err(Error::io(format!("unpinning {}", path.display()))));
        }
        let parents: Vec<String> = match record {
            Some(r) => vec![r.cgroup_parent.clone()],
            None => ["guaranteed", "burstable", "besteffort"].iter().map(|q| format!("{POD_CGROUP_ROOT}/{q}/pod{id}")).collect(),
        };
        for p in parents {
            note(&mut first, cgroups::remove(&p).map_err(Error::io(format!("removing cgroup {p}"))));
        }
        if first.is_none() {
            if let Err(e) = self.sandboxes.discard(id) {
                note(&mut first, Err(Error::Io { context: format!("removing sandbox {id}"), source: e }));
            }
        }
        if let (Some(name), None) = (record.map(|r| r.name.as_str()).or(name), &first) {
            self.sandboxes.release(name, id);
        }
        first.map_or(Ok(()), Err)
    }

    fn sandbox_setup(&self, sb: &mut SandboxRecord) -> Result<(), Error> {
        let dir = self.sandbox_dir(&sb.id);
        if sb.config.namespaces.network == NamespaceMode::Pod {
            let net = BridgeNetwork::discover()?;
            let path = Path::new(network::NETNS_DIR).join(&sb.id);
            sb.netns = Some(path.clone());
            self.save_sandbox(sb)?;
            network::create_netns(&path)?;
            sb.ip = Some(net.add(&sb.id, &path)?);
            self.save_sandbox(sb)?;
        }
        let mut pins = vec![(ns::Kind::Uts, Some(sb.hostname.as_str()))];
        if sb.config.namespaces.ipc == NamespaceMode::Pod {
            pins.push((ns::Kind::Ipc, None));
        }
        if sb.config.namespaces.network == NamespaceMode::Node {
            // A pod on the node's network has the node's hostname too (as in Kubernetes).
            pins.retain(|(k, _)| *k != ns::Kind::Uts);
        }
        for (kind, hostname) in pins {
            let path = ns::pin_path(&sb.id, kind);
            match kind {
                ns::Kind::Ipc => sb.ipc_ns = Some(path.clone()),
                ns::Kind::Uts => sb.uts_ns = Some(path.clone()),
            }
            self.save_sandbox(sb)?;
            ns::pin(&path, kind, hostname).map_err(Error::io(format!("pod sandbox {}", sb.id)))?;
        }
        if sb.uts_ns.is_none() {
            sb.hostname = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| sb.hostname.clone());
        }
        self.start_pod_supervisor(sb)?;
        let hosts = hosts_file(sb);
        for (name, content) in [("hostname", format!("{}\n", sb.hostname)), ("hosts", hosts), ("resolv.conf", resolv_conf(sb.config.dns.as_ref()))] {
            let path = dir.join(name);
            std::fs::write(&path, content).map_err(Error::io(format!("writing {}", path.display())))?;
        }
        std::fs::create_dir_all(&sb.log_directory).map_err(Error::io(format!("creating {}", sb.log_directory.display())))?;
        cgroups::create(&sb.cgroup_parent, sb.config.memory_limit_bytes, Some(self::pod_cpu_shares(&sb.config)))
            .map_err(Error::io(format!("creating pod cgroup {}", sb.cgroup_parent)))?;
        self.save_sandbox(sb)
    }

    /// Start the pod supervisor when the pod has host ports or one PID namespace; its
    /// processes go into the record.
    fn start_pod_supervisor(&self, sb: &mut SandboxRecord) -> Result<(), Error> {
        let forwards: Vec<PortForward> = match (sb.ip, sb.config.namespaces.network) {
            (Some(ip), NamespaceMode::Pod) => sb
                .config
                .port_mappings
                .iter()
                .map(|p| PortForward {
                    host: SocketAddr::new(p.host_ip.unwrap_or(network::ANY_V4), p.host_port),
                    container: SocketAddr::new(ip, p.container_port),
                    protocol: match p.protocol {
                        crate::pod::PortProtocol::Tcp => Protocol::Tcp,
                        crate::pod::PortProtocol::Udp => Protocol::Udp,
                    },
                })
                .collect(),
            // On the node's network a host port is the container's own: nothing to forward.
            _ => Vec::new(),
        };
        let pid_namespace = sb.config.namespaces.pid == NamespaceMode::Pod;
        if forwards.is_empty() && !pid_namespace {
            return Ok(());
        }
        let dir = self.sandbox_dir(&sb.id);
        let config = infra::PodConfig { ports: forwards, pid_namespace, state_file: dir.join(POD_STATE) };
        let json = serde_json::to_vec_pretty(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let path = dir.join(POD_CONFIG);
        std::fs::write(&path, json).map_err(Error::io(format!("writing {}", path.display())))?;
        match util::spawn_supervisor(&self.exe, infra::POD_ARG, &path, &dir.join(POD_LOG)).map_err(Error::io("starting the pod supervisor"))? {
            util::SupervisorReport::Ready { child_pid, supervisor_pid } => {
                sb.supervisor = util::process_start_time(supervisor_pid).map(|s| (supervisor_pid, s));
                if pid_namespace {
                    sb.pid_init = util::process_start_time(child_pid).map(|s| (child_pid, s));
                }
                self.save_sandbox(sb)
            }
            util::SupervisorReport::Failed(msg) => Err(Error::FailedPrecondition(format!("cannot start pod sandbox: {msg}"))),
            util::SupervisorReport::Silent => {
                Err(Error::Internal(format!("the pod supervisor exited without reporting (see {})", dir.join(POD_LOG).display())))
            }
        }
    }

    /// Kill the pod supervisor and its PID namespace's init (which takes every process in that
    /// namespace with it), found in the record or, for a half-created sandbox, its state file.
    fn stop_pod_supervisor(&self, id: &str, record: Option<&SandboxRecord>) {
        let state = util::read_supervisor_state(&self.sandbox_dir(id).join(POD_STATE));
        let init = record.and_then(|r| r.pid_init).or_else(|| state.as_ref().and_then(|s| s.child()));
        let sup = record.and_then(|r| r.supervisor).or_else(|| state.as_ref().and_then(|s| s.supervisor()));
        for (pid, start) in [init, sup].into_iter().flatten() {
            if util::process_alive(pid, start) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                util::wait_pid_exit(pid, start, Some(Duration::from_secs(10)));
            }
        }
    }

    fn sandbox_status(&self, sb: &SandboxRecord) -> PodSandboxStatus {
        let ready = !sb.stopped && sandbox_broken(sb).is_none();
        PodSandboxStatus {
            id: sb.id.clone(),
            metadata: sb.config.metadata.clone(),
            state: if ready { SandboxState::Ready } else { SandboxState::NotReady },
            created_at: sb.created_at.clone(),
            ip: if ready { sb.ip } else { None },
            hostname: sb.hostname.clone(),
            namespaces: sb.config.namespaces,
            qos_class: sb.config.qos_class,
            cgroup_parent: sb.cgroup_parent.clone(),
            log_directory: sb.log_directory.clone(),
            port_mappings: sb.config.port_mappings.clone(),
            labels: sb.config.labels.clone(),
            annotations: sb.config.annotations.clone(),
        }
    }

    /// A pod container's status from its record.
    pub(super) fn pod_container_status(&self, r: &Record) -> Option<ContainerStatus> {
        let p = r.pod.as_ref()?;
        let st = self.to_state(r);
        let state = match st.status {
            Status::Created => ContainerState::Created,
            Status::Running | Status::Paused => ContainerState::Running,
            Status::Exited => ContainerState::Exited,
            Status::Unknown => ContainerState::Unknown,
        };
        let exit = st.exit.clone().filter(|_| state == ContainerState::Exited);
        let (reason, message) = match exit.as_ref().map(ExitStatus::pod_reason) {
            None => (None, None),
            Some((r, m)) => (Some(r), m),
        };
        Some(ContainerStatus {
            id: r.id.clone(),
            sandbox_id: p.sandbox_id.clone(),
            metadata: p.config.metadata.clone(),
            state,
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone().filter(|_| state != ContainerState::Created),
            finished_at: exit.as_ref().map(|e| e.finished_at.clone()),
            exit_code: exit.as_ref().map(|e| e.code),
            signal: exit.as_ref().and_then(|e| e.signal),
            reason,
            message,
            image: p.config.image.clone(),
            image_ref: r.image_id.clone(),
            pid: st.pid,
            log_path: p.log_path.clone(),
            exit,
            labels: r.request.labels.clone(),
            annotations: p.config.annotations.clone(),
        })
    }

    fn pod_record(&self, id: &str) -> Result<Record, Error> {
        let r = self.load(id)?;
        if r.pod.is_none() {
            return Err(Error::NotFound(format!("{id} (a container, but not in a pod sandbox)")));
        }
        Ok(r)
    }
}

/// kubelet's pod `cpu.shares`: what the config says, else 2 (the minimum, BestEffort's).
fn pod_cpu_shares(c: &PodSandboxConfig) -> u64 {
    c.cpu_shares.unwrap_or(2).max(2)
}

/// Read a pipe to its end into a buffer shared with the caller (who may stop waiting early).
fn drain(mut r: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let h = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    if let Ok(mut v) = b.lock() {
                        v.extend_from_slice(&chunk[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    (buf, h)
}

impl PodRuntime for ContainerDriver {
    fn health(&self) -> Result<(), Error> {
        self.runtime_health()
    }

    fn run_pod_sandbox(&self, config: &PodSandboxConfig) -> Result<String, Error> {
        let ns = config.namespaces;
        if ns.network == NamespaceMode::Container || ns.ipc == NamespaceMode::Container {
            return Err(Error::InvalidArgument("a pod's network and IPC namespaces are the pod's or the node's".into()));
        }
        if ns.network == NamespaceMode::Node && config.port_mappings.iter().any(|p| p.host_port != p.container_port) {
            return Err(Error::InvalidArgument("a pod on the node's network has its host ports as its container ports".into()));
        }
        if config.port_mappings.iter().any(|p| p.host_port == 0 || p.container_port == 0) {
            return Err(Error::InvalidArgument("host and container ports must be 1-65535".into()));
        }
        if config.metadata.name.is_empty() {
            return Err(Error::InvalidArgument("a pod sandbox needs a name".into()));
        }
        if let Some(bad) = config.sysctls.keys().find(|k| !valid_sysctl_name(k)) {
            return Err(Error::InvalidArgument(format!("invalid sysctl name {bad:?}")));
        }
        let hostname = pod_hostname(config)?;
        let name = sandbox_name(&config.metadata);
        crate::registry::validate_name(&name, "sandbox")?;
        let id = random_id();
        let intent = self.sandboxes.begin(Op::Create, &id, &name)?;
        if let Err(e) = self.sandboxes.reserve(&name, &id) {
            intent.finish();
            return Err(e);
        }
        let dir = self.sandbox_dir(&id);
        if let Err(e) = std::fs::create_dir(&dir) {
            self.sandboxes.release(&name, &id);
            intent.finish();
            return Err(Error::Io { context: format!("creating {}", dir.display()), source: e });
        }
        let (log_directory, own_log_directory) = match &config.log_directory {
            Some(d) => (d.clone(), false),
            None => (dir.join("logs"), true),
        };
        let mut sb = SandboxRecord {
            id: id.clone(),
            name,
            config: config.clone(),
            created_at: now(),
            hostname,
            netns: None,
            ip: None,
            ipc_ns: None,
            uts_ns: None,
            cgroup_parent: format!("{POD_CGROUP_ROOT}/{}/pod{id}", config.qos_class.cgroup_name()),
            log_directory,
            own_log_directory,
            stopped: false,
            supervisor: None,
            pid_init: None,
        };
        let result = self.save_sandbox(&sb).and_then(|()| self.sandbox_setup(&mut sb));
        match result {
            Ok(()) => {
                intent.finish();
                tracing::debug!(sandbox = %id, ip = ?sb.ip, "pod sandbox ready");
                Ok(id)
            }
            Err(e) => {
                match self.cleanup_sandbox(&id, Some(&sb.name), Some(&sb)) {
                    Ok(()) => intent.finish(),
                    Err(ce) => tracing::warn!(sandbox = %id, error = %ce, "cleanup after a failed sandbox create"),
                }
                Err(e)
            }
        }
    }

    fn stop_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let mut sb = self.load_sandbox(id)?;
        for r in self.sandbox_containers(id)? {
            match self.stop(&r.id, Duration::ZERO) {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(Error::FailedPrecondition(_)) if self.load(&r.id).is_ok_and(|r| self.status(&r) != Status::Running) => {}
                Err(e) => return Err(e),
            }
        }
        if sb.stopped {
            return Ok(());
        }
        self.stop_pod_supervisor(id, Some(&sb));
        self.release_sandbox_network(id, Some(&sb))?;
        sb.stopped = true;
        sb.netns = None;
        sb.supervisor = None;
        sb.pid_init = None;
        self.save_sandbox(&sb)
    }

    fn remove_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let sb = match self.load_sandbox(id) {
            Ok(sb) => sb,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let intent = self.sandboxes.begin(Op::Remove, id, &sb.name)?;
        self.remove_sandbox_containers(id)?;
        self.cleanup_sandbox(id, Some(&sb.name), Some(&sb))?;
        intent.finish();
        Ok(())
    }

    fn pod_sandbox_status(&self, id: &str) -> Result<PodSandboxStatus, Error> {
        Ok(self.sandbox_status(&self.load_sandbox(id)?))
    }

    fn list_pod_sandboxes(&self, filter: &SandboxFilter) -> Result<Vec<PodSandboxStatus>, Error> {
        let mut all: Vec<SandboxRecord> = match &filter.id {
            Some(id) => self.load_sandbox(id).into_iter().collect(),
            None => self.sandboxes.load_all()?,
        };
        all.sort_by(|a, b| a.created_at.cmp(&b.created_at));
        Ok(all
            .iter()
            .map(|sb| self.sandbox_status(sb))
            .filter(|s| filter.state.is_none_or(|st| st == s.state) && labels_match(&filter.labels, &s.labels))
            .collect())
    }

    fn create_container(&self, sandbox_id: &str, c: &ContainerConfig) -> Result<String, Error> {
        let sb = self.ready_sandbox(sandbox_id)?;
        if c.metadata.name.is_empty() {
            return Err(Error::InvalidArgument("a pod container needs a name".into()));
        }
        if c.log_path.as_ref().is_some_and(|p| p.is_absolute() || p.components().any(|c| c == std::path::Component::ParentDir)) {
            return Err(Error::InvalidArgument("a container's log path is relative to the sandbox's log directory, without '..'".into()));
        }
        let rel = c.log_path.clone().unwrap_or_else(|| PathBuf::from(&c.metadata.name).join(format!("{}.log", c.metadata.attempt)));
        let log_path = sb.log_directory.join(rel);
        let mut labels = c.labels.clone();
        let m = &sb.config.metadata;
        for (k, v) in [
            (labels::POD_NAME, &m.name),
            (labels::POD_NAMESPACE, &m.namespace),
            (labels::POD_UID, &m.uid),
            (labels::CONTAINER_NAME, &c.metadata.name),
            (labels::SANDBOX_ID, &sb.id),
        ] {
            labels.entry(k.to_string()).or_insert_with(|| v.clone());
        }
        let s = &c.security;
        let user = match (s.run_as_user, &s.run_as_username, s.run_as_group) {
            (Some(u), _, Some(g)) => Some(format!("{u}:{g}")),
            (Some(u), _, None) => Some(u.to_string()),
            (None, Some(n), Some(g)) => Some(format!("{n}:{g}")),
            (None, Some(n), None) => Some(n.clone()),
            (None, None, _) => None,
        };
        let req = CreateRequest {
            name: Some(format!("k8s_{}_{}_{}", c.metadata.name, c.metadata.attempt, &sb.id[..12])),
            labels,
            resources: Resources { memory_bytes: c.resources.memory_limit_bytes, cpus: None, pids: c.resources.pids_limit },
            network: NetworkMode::Bridge,
            ports: Vec::new(),
            workload: Workload::Container(ContainerSpec {
                image: c.image.clone(),
                entrypoint: (!c.command.is_empty()).then(|| c.command.clone()),
                command: c.args.clone(),
                env: c.envs.clone(),
                workdir: c.working_dir.clone(),
                user,
                hostname: None,
                privileged: s.privileged,
                read_only: s.readonly_rootfs,
                stdin: c.stdin,
                tty: c.tty,
            }),
            auto_remove: false,
        };
        let pod = super::pod::PodPart {
            sandbox_id: sb.id.clone(),
            config: c.clone(),
            log_path,
            cgroup_parent: sb.cgroup_parent.clone(),
            ports: sb
                .config
                .port_mappings
                .iter()
                // A container's published ports are TCP ones (`strata ps`, `strata port`); the
                // sandbox's status has every mapping, UDP ones too.
                .filter(|p| p.protocol == crate::pod::PortProtocol::Tcp)
                .map(|p| PortMapping { host_ip: p.host_ip, host_port: p.host_port, container_port: p.container_port })
                .collect(),
        };
        let id = self.create_full(&req, false, Some(pod))?;
        self.events.publish(PodEvent { container_id: id.clone(), sandbox_id: sb.id.clone(), kind: PodEventKind::Created, time: now() });
        self.events.poke(&id);
        Ok(id)
    }

    fn start_container(&self, id: &str) -> Result<(), Error> {
        self.pod_record(id)?;
        self.start(id)
    }

    fn stop_container(&self, id: &str, timeout: Duration) -> Result<(), Error> {
        self.pod_record(id)?;
        self.stop(id, timeout).map(drop)
    }

    fn remove_container(&self, id: &str) -> Result<(), Error> {
        let r = match self.pod_record(id) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.delete(id, true) {
            Ok(()) | Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if let Some(p) = &r.pod {
            self.events.publish(PodEvent { container_id: id.to_string(), sandbox_id: p.sandbox_id.clone(), kind: PodEventKind::Removed, time: now() });
            self.events.poke(id);
            let own = self.load_sandbox(&p.sandbox_id).is_ok_and(|sb| sb.own_log_directory);
            if own {
                for i in 0..=16 {
                    let mut f = p.log_path.clone().into_os_string();
                    if i > 0 {
                        f.push(format!(".{i}"));
                    }
                    let _ = std::fs::remove_file(PathBuf::from(f));
                }
            }
        }
        Ok(())
    }

    fn container_status(&self, id: &str) -> Result<ContainerStatus, Error> {
        let r = self.pod_record(id)?;
        self.pod_container_status(&r).ok_or_else(|| Error::NotFound(id.to_string()))
    }

    fn list_containers(&self, filter: &ContainerFilter) -> Result<Vec<ContainerStatus>, Error> {
        let mut records: Vec<Record> = match (&filter.id, &filter.sandbox_id) {
            (Some(id), _) => self.load(id).into_iter().collect(),
            (None, Some(sandbox)) => self.sandbox_containers(sandbox)?,
            (None, None) => self.records()?,
        };
        records.reverse();
        Ok(records
            .iter()
            .filter(|r| r.pod.as_ref().is_some_and(|p| filter.sandbox_id.as_ref().is_none_or(|s| *s == p.sandbox_id)))
            .filter_map(|r| self.pod_container_status(r))
            .filter(|s| filter.state.is_none_or(|st| st == s.state) && labels_match(&filter.labels, &s.labels))
            .collect())
    }

    fn exec_sync(&self, id: &str, cmd: &[String], timeout: Option<Duration>) -> Result<ExecSyncResult, Error> {
        let r = self.running_record(id, "exec in")?;
        let req = ExecRequest { command: cmd.to_vec(), capture: true, ..Default::default() };
        let file = self.exec_process_file(&r, &req)?;
        let pid_file = file.path().with_extension("pid");
        let mut command = self.runtime.exec_command_with_pid_file(id, file.path(), Some(&pid_file));
        command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        let mut child = command.spawn().map_err(Error::io(format!("running {} exec", self.runtime.name())))?;
        let (out, out_h) = drain(child.stdout.take().ok_or_else(|| Error::Internal("exec without stdout".into()))?);
        let (err, err_h) = drain(child.stderr.take().ok_or_else(|| Error::Internal("exec without stderr".into()))?);
        let deadline = timeout.map(|t| Instant::now() + t);
        let pid = child.id() as i32;
        let exited = match util::process_start_time(pid) {
            Some(start) => util::wait_pid_exit(pid, start, timeout),
            None => true,
        };
        let result = if exited {
            let status = child.wait().map_err(Error::io("waiting for exec"))?;
            use std::os::unix::process::ExitStatusExt;
            Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        } else {
            // The runtime cannot forward SIGKILL: kill the process itself, then the runtime.
            if let Some(p) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Timeout(format!(
                "{:?} in container {} to finish ({:?})",
                cmd,
                r.name,
                timeout.unwrap_or_default()
            )))
        };
        let _ = std::fs::remove_file(&pid_file);
        // Output still held open by processes the command left behind is not waited for long.
        let until = deadline.map_or(Instant::now() + Duration::from_secs(2), |d| d.max(Instant::now() + Duration::from_millis(200)));
        for h in [out_h, err_h] {
            while !h.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let take = |b: &Arc<Mutex<Vec<u8>>>| b.lock().map(|v| v.clone()).unwrap_or_default();
        Ok(ExecSyncResult { stdout: take(&out), stderr: take(&err), exit_code: result? })
    }

    fn exec_session(&self, id: &str, req: &crate::pod::ExecSessionRequest) -> Result<crate::pod::ExecSession, Error> {
        self.pod_record(id)?;
        self.start_exec_session(id, req)
    }

    fn container_logs(&self, id: &str, opts: &LogOptions, sink: &mut dyn FnMut(&LogRecord) -> bool) -> Result<(), Error> {
        self.pod_record(id)?;
        self.logs(id, opts, sink)
    }

    fn attach_container(&self, id: &str) -> Result<Attachment, Error> {
        self.pod_record(id)?;
        self.attach_session(id)
    }

    fn subscribe(&self) -> Result<std::sync::mpsc::Receiver<PodEvent>, Error> {
        self.subscribe_events()
    }

    fn port_forward(&self, sandbox_id: &str, port: u16) -> Result<std::net::TcpStream, Error> {
        let sb = self.ready_sandbox(sandbox_id)?;
        let target = SocketAddr::from(([127, 0, 0, 1], port));
        let dial = move || -> Result<std::net::TcpStream, Error> {
            // A socket stays in the namespace it was made in: this thread enters the pod's
            // (a thread of its own, which ends right after), connects, and hands it back.
            if let Some(netns) = &sb.netns {
                let f = std::fs::File::open(netns).map_err(Error::io(format!("opening {}", netns.display())))?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::Io { context: format!("entering {}", netns.display()), source: e.into() })?;
            }
            std::net::TcpStream::connect_timeout(&target, Duration::from_secs(10))
                .map_err(|e| Error::Io { context: format!("dial tcp {target} in pod sandbox {}", sb.id), source: e })
        };
        std::thread::Builder::new()
            .name("strata-port-forward".into())
            .spawn(dial)
            .map_err(Error::io("starting a port-forward dialer"))?
            .join()
            .map_err(|_| Error::Internal("the port-forward dialer panicked".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_stay_under_proc_sys() {
        for ok in ["net.ipv4.ip_local_port_range", "kernel.shm_rmid_forced", "net.ipv4.conf.eth0/100.forwarding", "net.core.somaxconn"] {
            assert!(valid_sysctl_name(ok), "{ok}");
        }
        for bad in ["", "net..ipv4", ".net", "net.", "net./", "net.a//b", "net/../..", "../etc", "net.ipv4/..", "kernel.core pattern", "net.ipv4.x\n"] {
            assert!(!valid_sysctl_name(bad), "{bad:?}");
        }
    }

    fn record(network: NamespaceMode, ip: Option<IpAddr>, names: &[&str], aliases: Vec<(IpAddr, Vec<String>)>) -> SandboxRecord {
        let config = PodSandboxConfig {
            namespaces: crate::pod::PodNamespaces { network, ..Default::default() },
            hosts_names: names.iter().map(|s| s.to_string()).collect(),
            host_aliases: aliases,
            ..Default::default()
        };
        SandboxRecord {
            id: "x".into(),
            name: "x".into(),
            config,
            created_at: String::new(),
            hostname: "web-0".into(),
            netns: None,
            ip,
            ipc_ns: None,
            uts_ns: None,
            cgroup_parent: String::new(),
            log_directory: PathBuf::new(),
            own_log_directory: true,
            stopped: false,
            supervisor: None,
            pid_init: None,
        }
    }

    #[test]
    fn hosts_files_as_kubelet_writes_them() {
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        let localhost = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n";
        assert_eq!(hosts_file(&record(NamespaceMode::Pod, Some(ip), &[], vec![])), format!("{localhost}10.1.2.3\tweb-0\n"));
        let aliases = vec![("192.0.2.1".parse().expect("ip"), vec!["a".to_string(), "b".to_string()])];
        assert_eq!(
            hosts_file(&record(NamespaceMode::Pod, Some(ip), &["web-0.sub.ns.svc.cluster.local", "web-0"], aliases.clone())),
            format!("{localhost}10.1.2.3\tweb-0.sub.ns.svc.cluster.local\tweb-0\n\n# Entries added by HostAliases.\n192.0.2.1\ta\tb\n")
        );
        let node = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        assert_eq!(
            hosts_file(&record(NamespaceMode::Node, None, &[], aliases)),
            format!("# Kubernetes-managed hosts file (host network).\n{node}\n# Entries added by HostAliases.\n192.0.2.1\ta\tb\n")
        );
    }
}
