//! The Node object: registration, the heartbeat Lease and node status, as kubelet keeps them.
//!
//! Registration creates the Node (or, when it exists, brings its labels up to date). The Lease
//! `kube-node-lease/<node>` is renewed every `lease_renew_interval` (10 s), the cheap heartbeat
//! the node lifecycle controller watches. Node status is computed every
//! `status_update_frequency` (10 s) from real readings and written only when it changed (heartbeat
//! times aside) or when `status_report_frequency` (5 minutes) passed since the last write.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::chrono::Utc;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;


use crate::{machine, Error, Shared};

/// The kubelet version strata's agent reports (the API version it implements).
pub const KUBELET_VERSION: &str = "v1.32.0";
/// The namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The label saying whether VMs on this node run under KVM (`true`) or emulation (`false`).
pub const KVM_LABEL: &str = "strata.dev/kvm";

/// kubelet's default hard eviction thresholds, which allocatable leaves out and the pressure
/// conditions compare against: `memory.available<100Mi`, `nodefs.available<10%`,
/// `nodefs.inodesFree<5%`.
const EVICTION_MEMORY_BYTES: u64 = 100 * 1024 * 1024;
const EVICTION_DISK_PERCENT: u64 = 10;
const EVICTION_INODES_PERCENT: u64 = 5;
/// PIDPressure when fewer than this share of pid_max is free.
const EVICTION_PIDS_PERCENT: u64 = 10;

/// The labels this node carries (kubelet's well-known ones plus strata's KVM label when known).
pub fn labels(node_name: &str, kvm: Option<bool>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    let os = std::env::consts::OS.to_string();
    let arch = machine::go_arch().to_string();
    l.insert("kubernetes.io/hostname".into(), node_name.to_string());
    l.insert("kubernetes.io/os".into(), os.clone());
    l.insert("kubernetes.io/arch".into(), arch.clone());
    l.insert("beta.kubernetes.io/os".into(), os);
    l.insert("beta.kubernetes.io/arch".into(), arch);
    if let Some(k) = kvm {
        l.insert(KVM_LABEL.into(), k.to_string());
    }
    l
}

fn kib(bytes: u64) -> Quantity {
    Quantity(format!("{}Ki", bytes / 1024))
}

/// The node's capacity: CPUs, memory, the data dir's file system, `max_pods`.
fn capacity(config: &crate::Config, c: &machine::Capacity) -> BTreeMap<String, Quantity> {
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(c.cpus.to_string()));
    capacity.insert("memory".to_string(), kib(c.memory_bytes));
    capacity.insert("ephemeral-storage".to_string(), kib(c.ephemeral_storage_bytes));
    capacity.insert("pods".to_string(), Quantity(config.max_pods.to_string()));
    capacity
}

/// What pods may use: the capacity less the hard eviction thresholds (the node's
/// `status.allocatable`, and what a `resourceFieldRef` without a limit reads).
pub fn allocatable(config: &crate::Config, c: &machine::Capacity) -> BTreeMap<String, Quantity> {
    let mut allocatable = capacity(config, c);
    allocatable.insert("memory".to_string(), kib(c.memory_bytes.saturating_sub(EVICTION_MEMORY_BYTES)));
    let storage = c.ephemeral_storage_bytes;
    allocatable.insert("ephemeral-storage".to_string(), Quantity((storage - storage * EVICTION_DISK_PERCENT / 100).to_string()));
    allocatable
}

/// The readings a status is computed from (so the computation is pure and tested).
#[derive(Clone, Debug)]
pub struct Readings {
    pub capacity: machine::Capacity,
    pub usage: machine::Usage,
    pub info: machine::Info,
    /// Why the runtime is not usable, if it is not.
    pub runtime_error: Option<String>,
}

fn condition(kind: &str, on: bool, reasons: (&str, &str), messages: (&str, &str)) -> NodeCondition {
    NodeCondition {
        type_: kind.to_string(),
        status: if on { "True" } else { "False" }.to_string(),
        reason: Some(if on { reasons.0 } else { reasons.1 }.to_string()),
        message: Some(if on { messages.0 } else { messages.1 }.to_string()),
        last_heartbeat_time: None,
        last_transition_time: None,
    }
}

/// The node's status from `readings`. Condition times come from `previous` when a condition
/// keeps its status (its transition time is kept); `now` is the heartbeat.
/// `node_ip` is the InternalIP ([`crate::Shared::node_ip`]).
pub fn status(config: &crate::Config, node_ip: std::net::IpAddr, r: &Readings, previous: Option<&NodeStatus>, now: Time) -> NodeStatus {
    let capacity = capacity(config, &r.capacity);
    let allocatable = allocatable(config, &r.capacity);

    let u = &r.usage;
    let memory_pressure = u.memory_available_bytes < EVICTION_MEMORY_BYTES;
    let disk_pressure = (u.disk_total_bytes > 0 && u.disk_available_bytes * 100 < u.disk_total_bytes * EVICTION_DISK_PERCENT)
        || (u.inodes_total > 0 && u.inodes_free * 100 < u.inodes_total * EVICTION_INODES_PERCENT);
    let pid_pressure = u.pid_max > 0 && u.pid_max.saturating_sub(u.pids_used) * 100 < u.pid_max * EVICTION_PIDS_PERCENT;
    let mut conditions = vec![
        condition(
            "MemoryPressure",
            memory_pressure,
            ("KubeletHasInsufficientMemory", "KubeletHasSufficientMemory"),
            ("kubelet has insufficient memory available", "kubelet has sufficient memory available"),
        ),
        condition(
            "DiskPressure",
            disk_pressure,
            ("KubeletHasDiskPressure", "KubeletHasNoDiskPressure"),
            ("kubelet has disk pressure", "kubelet has no disk pressure"),
        ),
        condition(
            "PIDPressure",
            pid_pressure,
            ("KubeletHasInsufficientPID", "KubeletHasSufficientPID"),
            ("kubelet has insufficient PID available", "kubelet has sufficient PID available"),
        ),
    ];
    let mut ready = condition("Ready", r.runtime_error.is_none(), ("KubeletReady", "KubeletNotReady"), ("kubelet is posting ready status", ""));
    if let Some(e) = &r.runtime_error {
        ready.message = Some(format!("container runtime is down: {e}"));
    }
    conditions.push(ready);
    for c in &mut conditions {
        c.last_heartbeat_time = Some(now.clone());
        let before = previous.and_then(|p| p.conditions.as_ref()).and_then(|cs| cs.iter().find(|p| p.type_ == c.type_));
        c.last_transition_time = match before {
            Some(p) if p.status == c.status => p.last_transition_time.clone().or_else(|| Some(now.clone())),
            _ => Some(now.clone()),
        };
    }

    let mut addresses = vec![NodeAddress { type_: "InternalIP".into(), address: node_ip.to_string() }];
    addresses.push(NodeAddress { type_: "Hostname".into(), address: config.node_name.clone() });
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(addresses),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(config.kubelet_port) }) }),
        node_info: Some(NodeSystemInfo {
            architecture: r.info.architecture.clone(),
            boot_id: r.info.boot_id.clone(),
            container_runtime_version: format!("strata://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: r.info.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: r.info.machine_id.clone(),
            operating_system: std::env::consts::OS.to_string(),
            os_image: r.info.os_image.clone(),
            system_uuid: r.info.system_uuid.clone(),
        }),
        ..NodeStatus::default()
    }
}

/// Does the API server's status show a condition other than we would report (another writer
/// changed it, e.g. to Unknown)? An unreadable status (`None`) is not a difference.
pub fn conditions_differ(server: Option<&NodeStatus>, ours: &NodeStatus) -> bool {
    let Some(server) = server else { return false };
    let theirs = server.conditions.as_deref().unwrap_or_default();
    ours.conditions.iter().flatten().any(|c| theirs.iter().find(|t| t.type_ == c.type_).is_none_or(|t| t.status != c.status))
}

/// Two statuses equal but for their heartbeat times: nothing worth writing.
pub fn same_but_heartbeat(a: &NodeStatus, b: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// Read everything a status needs (blocking: files and the driver).
fn read_machine(shared: &Shared) -> Readings {
    let runtime_error = strata_driver::pod::PodRuntime::health(&*shared.driver).err().map(|e| e.to_string());
    Readings {
        capacity: machine::capacity(&shared.config.root_dir),
        usage: machine::usage(&shared.config.root_dir),
        info: machine::info(),
        runtime_error,
    }
}

async fn readings(shared: &Arc<Shared>) -> Result<Readings, Error> {
    let s = shared.clone();
    tokio::task::spawn_blocking(move || read_machine(&s)).await.map_err(|e| Error::Internal(format!("reading the machine: {e}")))
}

/// Create this node's Node object, or update the labels of an existing one. Returns the Node
/// as stored (its uid owns the Lease).
pub(crate) async fn register(shared: &Arc<Shared>) -> Result<Node, Error> {
    let kvm = shared.kvm.get().copied();
    let api: Api<Node> = Api::all(shared.client.clone());
    let name = &shared.config.node_name;
    let node = Node {
        metadata: ObjectMeta { name: Some(name.clone()), labels: Some(labels(name, kvm)), ..ObjectMeta::default() },
        ..Node::default()
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(n) => {
            tracing::info!(node = %name, "registered the node");
            Ok(n)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Already registered (a restart): keep what others set, bring our labels up to date.
            let patch = Node { metadata: ObjectMeta { labels: node.metadata.labels.clone(), ..ObjectMeta::default() }, ..Node::default() };
            let n = api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
            tracing::info!(node = %name, "the node was registered before; labels brought up to date");
            Ok(n)
        }
        Err(e) => Err(e.into()),
    }
}

/// Set the KVM label once the (possibly slow) probe has answered.
pub(crate) async fn label_kvm(shared: &Arc<Shared>, kvm: bool) -> Result<(), Error> {
    let api: Api<Node> = Api::all(shared.client.clone());
    let mut l = BTreeMap::new();
    l.insert(KVM_LABEL.to_string(), kvm.to_string());
    let patch = Node { metadata: ObjectMeta { labels: Some(l), ..ObjectMeta::default() }, ..Node::default() };
    api.patch(&shared.config.node_name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

/// Keep node status current, forever. Register again if the Node disappears.
pub(crate) async fn status_loop(shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(shared.client.clone());
    let name = shared.config.node_name.clone();
    let mut last: Option<(NodeStatus, Instant)> = None;
    loop {
        match readings(&shared).await {
            Ok(r) => {
                let st = status(&shared.config, shared.node_ip, &r, last.as_ref().map(|(s, _)| s), Time(Utc::now()));
                // What the API server holds counts too (kubelet compares with the Node it reads):
                // the node lifecycle controller sets the conditions Unknown when it stops hearing
                // from us (a partition), and nothing else would put them back for 5 minutes.
                let server = api.get_opt(&name).await.ok().flatten().and_then(|n| n.status);
                let due = match &last {
                    None => true,
                    Some((prev, at)) => !same_but_heartbeat(prev, &st) || at.elapsed() >= shared.config.status_report_frequency || conditions_differ(server.as_ref(), &st),
                };
                if due {
                    let patch = Node { status: Some(st.clone()), ..Node::default() };
                    match api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                        Ok(_) => last = Some((st, Instant::now())),
                        Err(kube::Error::Api(e)) if e.code == 404 => {
                            tracing::warn!(node = %name, "the Node is gone; registering again");
                            if let Err(e) = register(&shared).await {
                                tracing::warn!(node = %name, error = %e, "registering the node");
                            }
                            last = None;
                            continue_after(Duration::from_secs(1)).await;
                            continue;
                        }
                        Err(e) => tracing::warn!(node = %name, error = %e, "updating node status"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the machine"),
        }
        continue_after(shared.config.status_update_frequency).await;
    }
}

async fn continue_after(d: Duration) {
    tokio::time::sleep(d).await
}

/// Renew the node's Lease every `lease_renew_interval`, creating it (owned by the Node) when
/// missing; forever.
pub(crate) async fn lease_loop(shared: Arc<Shared>, node: Node) {
    let api: Api<Lease> = Api::namespaced(shared.client.clone(), LEASE_NAMESPACE);
    let name = shared.config.node_name.clone();
    let duration = i32::try_from(shared.config.lease_duration.as_secs()).unwrap_or(40);
    let mut cached: Option<Lease> = None;
    loop {
        let now = MicroTime(Utc::now());
        let result = match cached.take() {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                spec.renew_time = Some(now);
                spec.holder_identity = Some(name.clone());
                spec.lease_duration_seconds = Some(duration);
                api.replace(&name, &PostParams::default(), &lease).await
            }
            None => match api.get_opt(&name).await {
                Ok(Some(mut lease)) => {
                    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                    spec.renew_time = Some(now);
                    spec.holder_identity = Some(name.clone());
                    spec.lease_duration_seconds = Some(duration);
                    api.replace(&name, &PostParams::default(), &lease).await
                }
                Ok(None) => {
                    let owner = node.metadata.uid.clone().map(|uid| OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.clone(),
                        uid,
                        ..OwnerReference::default()
                    });
                    let lease = Lease {
                        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(LEASE_NAMESPACE.into()), owner_references: owner.map(|o| vec![o]), ..ObjectMeta::default() },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(name.clone()),
                            lease_duration_seconds: Some(duration),
                            renew_time: Some(now),
                            ..LeaseSpec::default()
                        }),
                    };
                    api.create(&PostParams::default(), &lease).await
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(l) => {
                cached = Some(l);
                continue_after(shared.config.lease_renew_interval).await;
            }
            Err(e) => {
                // A conflict or a lost connection: read the Lease again soon.
                tracing::warn!(node = %name, error = %e, "renewing the node lease");
                continue_after(Duration::from_millis(500).min(shared.config.lease_renew_interval)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readings() -> Readings {
        Readings {
            capacity: machine::Capacity { cpus: 2, memory_bytes: 4 << 30, ephemeral_storage_bytes: 100 << 30 },
            usage: machine::Usage {
                memory_available_bytes: 2 << 30,
                disk_available_bytes: 50 << 30,
                disk_total_bytes: 100 << 30,
                inodes_free: 1000,
                inodes_total: 2000,
                pids_used: 100,
                pid_max: 32768,
            },
            info: machine::Info { kernel_version: "6.1.0".into(), os_image: "Debian".into(), architecture: "amd64".into(), ..Default::default() },
            runtime_error: None,
        }
    }

    fn cond<'a>(s: &'a NodeStatus, t: &str) -> &'a NodeCondition {
        s.conditions.as_ref().and_then(|c| c.iter().find(|c| c.type_ == t)).expect("condition")
    }

    #[test]
    fn status_from_readings() {
        let config = crate::Config::new("n1", "/tmp".into());
        let ip = "10.0.0.5".parse().expect("ip");
        let t0 = Time(Utc::now());
        let s = status(&config, ip, &readings(), None, t0.clone());
        let cap = s.capacity.as_ref().expect("capacity");
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        let alloc = s.allocatable.as_ref().expect("allocatable");
        assert_eq!(alloc["memory"].0, format!("{}Ki", 4194304 - 102400));
        assert_eq!(alloc["ephemeral-storage"].0, ((100u64 << 30) / 10 * 9).to_string());
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "MemoryPressure").reason.as_deref(), Some("KubeletHasSufficientMemory"));
        assert_eq!(s.addresses.as_ref().expect("addresses")[0].address, "10.0.0.5");
        assert_eq!(s.node_info.as_ref().expect("info").container_runtime_version, format!("strata://{}", env!("CARGO_PKG_VERSION")));

        // A later heartbeat with nothing changed: same but heartbeat, transition times kept.
        let t1 = Time(t0.0 + k8s_openapi::chrono::Duration::seconds(10));
        let s2 = status(&config, ip, &readings(), Some(&s), t1.clone());
        assert!(same_but_heartbeat(&s, &s2));
        // The API server's copy set Unknown by the node lifecycle controller is a difference.
        assert!(!conditions_differ(Some(&s), &s2));
        assert!(!conditions_differ(None, &s2));
        let mut unknown = s.clone();
        for c in unknown.conditions.iter_mut().flatten().filter(|c| c.type_ == "Ready") {
            c.status = "Unknown".into();
        }
        assert!(conditions_differ(Some(&unknown), &s2));
        assert_eq!(cond(&s2, "Ready").last_heartbeat_time, Some(t1.clone()));
        assert_eq!(cond(&s2, "Ready").last_transition_time, Some(t0.clone()));

        // Memory runs low and the runtime breaks: both conditions flip, with new transition times.
        let mut r = readings();
        r.usage.memory_available_bytes = 50 << 20;
        r.runtime_error = Some("runc not found".into());
        let s3 = status(&config, ip, &r, Some(&s2), t1.clone());
        assert!(!same_but_heartbeat(&s2, &s3));
        assert_eq!(cond(&s3, "MemoryPressure").status, "True");
        assert_eq!(cond(&s3, "Ready").status, "False");
        assert_eq!(cond(&s3, "Ready").last_transition_time, Some(t1));
        assert_eq!(cond(&s3, "DiskPressure").last_transition_time, Some(t0));

        let mut r = readings();
        r.usage.disk_available_bytes = 5 << 30;
        r.usage.pids_used = 32000;
        let s4 = status(&config, ip, &r, None, Time(Utc::now()));
        assert_eq!(cond(&s4, "DiskPressure").status, "True");
        assert_eq!(cond(&s4, "PIDPressure").status, "True");
    }
}
