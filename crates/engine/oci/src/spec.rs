//! Building a bundle's `config.json` (an OCI runtime [`Spec`]) from what a user asked for.
//!
//! The defaults are the secure ones Docker ships: its default capability set, a default
//! seccomp profile, masked and read-only `/proc` paths, `no_new_privs`, private pid, ipc, uts,
//! mount and network namespaces. `privileged` opts out of all of them at once.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder,
    PosixRlimitType, ProcessBuilder, RootBuilder, Spec, UserBuilder,
};

use crate::seccomp;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// How the container's network namespace is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetNs {
    /// Share the host's network namespace.
    Host,
    /// A fresh namespace with only loopback, created by the runtime.
    New,
    /// Join a namespace prepared beforehand (bind-mounted at this path).
    Path(PathBuf),
}

/// Resource limits, already validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory limit in bytes; swap is limited to the same value so the limit is real.
    pub memory_bytes: Option<i64>,
    /// CPU quota in microseconds per 100 ms period (`--cpus 0.5` = 50_000).
    pub cpu_quota_us: Option<i64>,
    /// Maximum number of processes.
    pub pids: Option<i64>,
}

/// CPU period used with [`Limits::cpu_quota_us`], as Docker does.
pub const CPU_PERIOD_US: u64 = 100_000;

/// Everything needed to write one container's `config.json`; image defaults already merged.
#[derive(Clone, Debug)]
pub struct SpecInput {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub privileged: bool,
    pub read_only_rootfs: bool,
    /// Give the process a terminal (the runtime hands its master to the supervisor).
    pub terminal: bool,
    pub netns: NetNs,
    pub limits: Limits,
    /// cgroup path relative to the hierarchy roots, e.g. `/strata/<id>`.
    pub cgroups_path: String,
    /// Host files bind-mounted read-only or read-write at a container path
    /// (e.g. generated `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`).
    pub bind_files: Vec<(PathBuf, PathBuf)>,
    /// What pod containers add (shared namespaces, volumes, security context); the default is
    /// a plain container's settings.
    pub extra: SpecExtra,
}

/// How a container gets one of its namespaces (pid, ipc, uts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Namespace {
    /// A new one of its own.
    #[default]
    New,
    /// The host's.
    Host,
    /// Join an existing one (a bind-mounted namespace file or `/proc/PID/ns/...`).
    Path(PathBuf),
}

/// Mount propagation of a bind mount (Kubernetes' `mountPropagation`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    /// `rprivate`: nothing propagates (Kubernetes `None`).
    #[default]
    Private,
    /// `rslave`: host mounts below the source appear in the container (`HostToContainer`).
    HostToContainer,
    /// `rshared`: both ways (`Bidirectional`; privileged containers only in Kubernetes).
    Bidirectional,
}

/// One extra mount in the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountSpec {
    Bind { source: PathBuf, destination: PathBuf, readonly: bool, propagation: Propagation },
    Tmpfs { destination: PathBuf, size_bytes: Option<u64>, readonly: bool },
}

/// Which seccomp filter the container runs under.
#[derive(Clone, Debug, Default)]
pub enum Seccomp {
    /// strata's default profile (see [`crate::seccomp`]); none for privileged containers.
    #[default]
    Default,
    /// No filter.
    Unconfined,
    /// A profile given in the OCI `linux.seccomp` format.
    Profile(Box<oci_spec::runtime::LinuxSeccomp>),
}

/// The settings beyond a plain container's (see [`SpecInput::extra`]).
#[derive(Clone, Debug, Default)]
pub struct SpecExtra {
    pub pid_ns: Namespace,
    pub ipc_ns: Namespace,
    pub uts_ns: Namespace,
    pub mounts: Vec<MountSpec>,
    /// Capabilities added to and then dropped from the default set (or the full set when
    /// `privileged`); `drop_all` empties it before `cap_add` is applied.
    pub cap_add: Vec<Capability>,
    pub cap_drop: Vec<Capability>,
    pub cap_drop_all: bool,
    /// `no_new_privs`; `None`: set unless privileged.
    pub no_new_privileges: Option<bool>,
    pub seccomp: Seccomp,
    /// cgroup `cpu.shares` (cgroup v1 units, 2..262144).
    pub cpu_shares: Option<u64>,
    /// Period for [`Limits::cpu_quota_us`]; default [`CPU_PERIOD_US`].
    pub cpu_period_us: Option<u64>,
    pub oom_score_adj: Option<i32>,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// Sysctls the runtime sets in the container's namespaces (`linux.sysctl`).
    pub sysctls: std::collections::BTreeMap<String, String>,
}

/// Errors building a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid runtime spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
}

/// Build the runtime spec for a bundle whose root filesystem is `rootfs` (relative to the bundle).
pub fn build(input: &SpecInput, rootfs: &Path) -> Result<Spec, SpecError> {
    let x = &input.extra;
    let mut caps: Vec<Capability> = if input.privileged {
        all_capabilities()
    } else if x.cap_drop_all {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    if !input.privileged {
        for c in &x.cap_add {
            if !caps.contains(c) {
                caps.push(*c);
            }
        }
        caps.retain(|c| !x.cap_drop.contains(c));
    }
    let cap_set: oci_spec::runtime::Capabilities = caps.iter().copied().collect();
    // A non-root process starts with empty effective/permitted sets, as with Docker:
    // it can only gain capabilities through file capabilities within the bounding set.
    let (effective, permitted) = if input.uid == 0 {
        (cap_set.clone(), cap_set.clone())
    } else {
        (Default::default(), Default::default())
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(cap_set)
        .effective(effective)
        .permitted(permitted)
        .inheritable(oci_spec::runtime::Capabilities::default())
        .ambient(oci_spec::runtime::Capabilities::default())
        .build()?;

    let mut user = UserBuilder::default().uid(input.uid).gid(input.gid);
    if !input.additional_gids.is_empty() {
        user = user.additional_gids(input.additional_gids.clone());
    }
    let process = ProcessBuilder::default()
        .terminal(input.terminal)
        .args(input.args.clone())
        .env(input.env.clone())
        .cwd(input.cwd.clone())
        .user(user.build()?)
        .capabilities(capabilities)
        .no_new_privileges(x.no_new_privileges.unwrap_or(!input.privileged))
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(1024u64)
            .hard(1024u64)
            .build()?])
        .build()?;
    let mut process = process;
    process.set_oom_score_adj(x.oom_score_adj);

    let mut namespaces: Vec<LinuxNamespace> = Vec::new();
    for (typ, how) in [(LinuxNamespaceType::Pid, &x.pid_ns), (LinuxNamespaceType::Ipc, &x.ipc_ns), (LinuxNamespaceType::Uts, &x.uts_ns)] {
        match how {
            Namespace::New => namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?),
            Namespace::Host => {}
            Namespace::Path(p) => namespaces.push(LinuxNamespaceBuilder::default().typ(typ).path(p.clone()).build()?),
        }
    }
    namespaces.push(LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Mount).build()?);
    match &input.netns {
        NetNs::Host => {}
        NetNs::New => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        ),
        NetNs::Path(path) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()?,
        ),
    }

    let mut resources = LinuxResourcesBuilder::default();
    if let Some(bytes) = input.limits.memory_bytes {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(bytes).swap(bytes).build()?);
    }
    if input.limits.cpu_quota_us.is_some() || x.cpu_shares.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(quota) = input.limits.cpu_quota_us {
            cpu = cpu.quota(quota).period(x.cpu_period_us.unwrap_or(CPU_PERIOD_US));
        }
        if let Some(shares) = x.cpu_shares {
            cpu = cpu.shares(shares);
        }
        resources = resources.cpu(cpu.build()?);
    }
    if let Some(pids) = input.limits.pids {
        resources = resources.pids(LinuxPidsBuilder::default().limit(pids).build()?);
    }
    // Deny every device node by default; runc adds its own allow-list for the standard ones
    // (null, zero, full, random, urandom, tty, ptmx, pts). Privileged containers get all.
    resources = resources.devices(vec![LinuxDeviceCgroupBuilder::default()
        .allow(input.privileged)
        .access("rwm")
        .build()?]);

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .cgroups_path(PathBuf::from(&input.cgroups_path));
    if !x.sysctls.is_empty() {
        linux = linux.sysctl(x.sysctls.clone().into_iter().collect::<std::collections::HashMap<_, _>>());
    }
    if input.privileged {
        linux = linux.masked_paths(Vec::<String>::new()).readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(MASKED_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .readonly_paths(READONLY_PATHS.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        match &x.seccomp {
            Seccomp::Default => linux = linux.seccomp(seccomp::default_profile()?),
            Seccomp::Unconfined => {}
            Seccomp::Profile(p) => linux = linux.seccomp((**p).clone()),
        }
    }
    // A mount that receives (or sends) mounts needs the root's propagation to allow it.
    let propagations = x.mounts.iter().filter_map(|m| match m {
        MountSpec::Bind { propagation, .. } => Some(*propagation),
        MountSpec::Tmpfs { .. } => None,
    });
    match propagations.max_by_key(|p| *p as u8) {
        Some(Propagation::Bidirectional) => linux = linux.rootfs_propagation("rshared"),
        Some(Propagation::HostToContainer) => linux = linux.rootfs_propagation("rslave"),
        _ => {}
    }

    let mut spec = Spec::default();
    spec.set_process(Some(process));
    // A joined or the host's UTS namespace keeps its own hostname.
    spec.set_hostname((x.uts_ns == Namespace::New).then(|| input.hostname.clone()));
    if !x.annotations.is_empty() {
        spec.set_annotations(Some(x.annotations.clone().into_iter().collect()));
    }
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs.to_path_buf())
            .readonly(input.read_only_rootfs)
            .build()?,
    ));
    spec.set_mounts(Some(mounts(input)?));
    spec.set_linux(Some(linux.build()?));
    Ok(spec)
}

/// `/proc` and `/sys` paths hidden from unprivileged containers (runc/Docker defaults).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// `/proc` paths mounted read-only in unprivileged containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mounts(input: &SpecInput) -> Result<Vec<Mount>, SpecError> {
    let m = |dest: &str, typ: &str, src: &str, opts: &[&str]| {
        MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .source(src)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
    };
    let sys_mode = if input.privileged { "rw" } else { "ro" };
    let mut mounts = vec![
        m("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        m("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"])?,
        m(
            "/dev/pts",
            "devpts",
            "devpts",
            &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        )?,
        m("/dev/shm", "tmpfs", "shm", &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"])?,
        m("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"])?,
        m("/sys", "sysfs", "sysfs", &["nosuid", "noexec", "nodev", sys_mode])?,
        m("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"])?,
    ];
    let x = &input.extra;
    for (host, dest) in &input.bind_files {
        // A volume mounted at the same place wins (as a pod's own /etc/hosts does).
        if x.mounts.iter().any(|m| m.destination() == dest) {
            continue;
        }
        mounts.push(
            MountBuilder::default()
                .destination(dest.clone())
                .typ("bind")
                .source(host.clone())
                .options(vec!["rbind".to_string(), "rprivate".to_string()])
                .build()?,
        );
    }
    for m in &x.mounts {
        mounts.push(match m {
            MountSpec::Bind { source, destination, readonly, propagation } => {
                let mut opts = vec!["rbind".to_string()];
                opts.push(
                    match propagation {
                        Propagation::Private => "rprivate",
                        Propagation::HostToContainer => "rslave",
                        Propagation::Bidirectional => "rshared",
                    }
                    .to_string(),
                );
                if *readonly {
                    opts.push("ro".into());
                }
                MountBuilder::default().destination(destination.clone()).typ("bind").source(source.clone()).options(opts).build()?
            }
            MountSpec::Tmpfs { destination, size_bytes, readonly } => {
                let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into(), "mode=1777".into()];
                if let Some(size) = size_bytes {
                    opts.push(format!("size={size}"));
                }
                if *readonly {
                    opts.push("ro".into());
                }
                MountBuilder::default().destination(destination.clone()).typ("tmpfs").source("tmpfs").options(opts).build()?
            }
        });
    }
    Ok(mounts)
}

impl MountSpec {
    pub fn destination(&self) -> &Path {
        match self {
            MountSpec::Bind { destination, .. } | MountSpec::Tmpfs { destination, .. } => destination,
        }
    }
}

/// Every capability in kernel numbering order (`capability.h`), so index = number.
const CAPABILITIES_BY_NUMBER: &[Capability] = {
    use Capability::*;
    &[
        Chown, DacOverride, DacReadSearch, Fowner, Fsetid, Kill, Setgid, Setuid, Setpcap,
        LinuxImmutable, NetBindService, NetBroadcast, NetAdmin, NetRaw, IpcLock, IpcOwner,
        SysModule, SysRawio, SysChroot, SysPtrace, SysPacct, SysAdmin, SysBoot, SysNice,
        SysResource, SysTime, SysTtyConfig, Mknod, Lease, AuditWrite, AuditControl, Setfcap,
        MacOverride, MacAdmin, Syslog, WakeAlarm, BlockSuspend, AuditRead, Perfmon, Bpf,
        CheckpointRestore,
    ]
};

/// "All" capabilities for a privileged container: every capability in strata's own bounding
/// set (as Docker grants the daemon's), since a runtime cannot grant more than it has.
fn all_capabilities() -> Vec<Capability> {
    let bounding = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    });
    CAPABILITIES_BY_NUMBER
        .iter()
        .enumerate()
        .filter(|(n, _)| bounding.is_none_or(|b| b & (1u64 << n) != 0))
        .map(|(_, c)| *c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SpecInput {
        SpecInput {
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            hostname: "h".into(),
            privileged: false,
            read_only_rootfs: false,
            terminal: false,
            netns: NetNs::New,
            limits: Limits { memory_bytes: Some(64 << 20), cpu_quota_us: Some(50_000), pids: Some(100) },
            cgroups_path: "/strata/x".into(),
            bind_files: vec![],
            extra: SpecExtra::default(),
        }
    }

    #[test]
    fn default_spec_is_locked_down() {
        let spec = build(&input(), Path::new("rootfs")).expect("spec");
        let json = serde_json::to_value(&spec).expect("json");
        let bounding = json["process"]["capabilities"]["bounding"].as_array().expect("caps");
        assert_eq!(bounding.len(), DEFAULT_CAPABILITIES.len());
        assert!(!bounding.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert_eq!(json["process"]["noNewPrivileges"], true);
        assert!(json["linux"]["seccomp"]["syscalls"].as_array().is_some_and(|s| !s.is_empty()));
        assert!(json["linux"]["readonlyPaths"]
            .as_array()
            .expect("ro paths")
            .iter()
            .any(|p| p == "/proc/sysrq-trigger"));
        assert_eq!(json["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["pids"]["limit"], 100);
    }

    #[test]
    fn privileged_opts_out() {
        let mut i = input();
        i.privileged = true;
        let json = serde_json::to_value(build(&i, Path::new("rootfs")).expect("spec")).expect("json");
        assert!(json["process"]["capabilities"]["bounding"]
            .as_array()
            .expect("caps")
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN"));
        assert!(json["linux"].get("seccomp").is_none_or(|s| s.is_null()));
        assert_eq!(json["process"]["noNewPrivileges"], false);
    }

    #[test]
    fn pod_extras_join_namespaces_mount_volumes_and_adjust_capabilities() {
        let mut i = input();
        i.extra = SpecExtra {
            ipc_ns: Namespace::Path("/run/strata/ns/x.ipc".into()),
            uts_ns: Namespace::Path("/run/strata/ns/x.uts".into()),
            pid_ns: Namespace::Host,
            mounts: vec![
                MountSpec::Bind { source: "/srv/v".into(), destination: "/data".into(), readonly: true, propagation: Propagation::HostToContainer },
                MountSpec::Tmpfs { destination: "/etc/hosts".into(), size_bytes: Some(4096), readonly: false },
            ],
            cap_drop_all: true,
            cap_add: vec![Capability::NetBindService],
            cpu_shares: Some(256),
            ..Default::default()
        };
        i.bind_files = vec![("/sb/hosts".into(), "/etc/hosts".into()), ("/sb/resolv.conf".into(), "/etc/resolv.conf".into())];
        let json = serde_json::to_value(build(&i, Path::new("rootfs")).expect("spec")).expect("json");
        let ns = json["linux"]["namespaces"].as_array().expect("namespaces");
        assert!(ns.iter().any(|n| n["type"] == "ipc" && n["path"] == "/run/strata/ns/x.ipc"));
        assert!(!ns.iter().any(|n| n["type"] == "pid"), "the host's PID namespace: none listed");
        assert!(json.get("hostname").is_none_or(|h| h.is_null()), "a joined UTS namespace keeps its hostname");
        assert_eq!(json["linux"]["rootfsPropagation"], "rslave");
        let mounts = json["mounts"].as_array().expect("mounts");
        let data = mounts.iter().find(|m| m["destination"] == "/data").expect("/data");
        assert_eq!(data["options"], serde_json::json!(["rbind", "rslave", "ro"]));
        let hosts: Vec<_> = mounts.iter().filter(|m| m["destination"] == "/etc/hosts").collect();
        assert_eq!(hosts.len(), 1, "a volume at /etc/hosts replaces the pod's file");
        assert_eq!(hosts[0]["type"], "tmpfs");
        assert!(mounts.iter().any(|m| m["destination"] == "/etc/resolv.conf"));
        assert_eq!(json["process"]["capabilities"]["bounding"], serde_json::json!(["CAP_NET_BIND_SERVICE"]));
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 256);
    }

    #[test]
    fn non_root_user_has_no_effective_caps() {
        let mut i = input();
        i.uid = 1000;
        let json = serde_json::to_value(build(&i, Path::new("rootfs")).expect("spec")).expect("json");
        let eff = &json["process"]["capabilities"]["effective"];
        assert!(eff.is_null() || eff.as_array().is_some_and(|a| a.is_empty()));
    }
}
