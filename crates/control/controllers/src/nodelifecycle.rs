//! The node lifecycle controller (upstream's `nodelifecycle` and `tainteviction` controllers,
//! both writing as `node-controller`).
//!
//! - Health: every `monitor_period` each Node is checked for a sign of life — its Ready
//!   condition's `lastHeartbeatTime` changed, or its Lease `kube-node-lease/<node>` renewed —
//!   and one silent for `monitor_grace_period` (40 s; `startup_grace_period`, 60 s, for a node
//!   that never posted Ready) gets its Ready, MemoryPressure, DiskPressure and PIDPressure
//!   conditions set to Unknown (`NodeStatusUnknown`, "Kubelet stopped posting node status.").
//!   The clock is this process's: a node first seen (a restart) gets a whole grace period.
//! - Taints: a node whose Ready is False gets `node.kubernetes.io/not-ready`, Unknown
//!   `node.kubernetes.io/unreachable`, as NoSchedule (at once, with the other condition taints
//!   and `node.kubernetes.io/unschedulable` for a cordoned node) and as NoExecute (with
//!   `timeAdded`, rate-limited per zone: `eviction_rate` nodes a second, the secondary rate or
//!   none in a zone where more than `unhealthy_zone_threshold` of the nodes are not ready, and
//!   no NoExecute taints at all when every node of the cluster is not ready — upstream's
//!   disruption modes). A node Ready again loses them.
//! - Pods on a node that stops being Ready get their Ready condition False (an event
//!   `NodeNotReady`); on an Unknown node this is level-triggered (no kubelet fights it).
//! - Taint eviction: a pod on a node with NoExecute taints it does not tolerate is deleted at
//!   once; one it tolerates for `tolerationSeconds` is deleted that long after the earliest
//!   of those taints' `timeAdded` (the API server gives every pod 300 s tolerations of
//!   not-ready and unreachable); before the delete it gets the `DisruptionTarget` condition
//!   (`DeletionByTaintManager`), and an event `TaintManagerEviction`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use strata_client::lean;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use strata_client::events::EventType;
use strata_client::ratelimit::TokenBucket;

use crate::informer::Shared;
use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "node-controller";
/// The component name of the taint eviction's events (it writes as `node-controller`, as upstream).
pub const TAINT_EVICTION: &str = "taint-eviction-controller";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const ZONE: &str = "topology.kubernetes.io/zone";
const REGION: &str = "topology.kubernetes.io/region";
const EXCLUDE_DISRUPTION: &str = "node.kubernetes.io/exclude-disruption";

/// kube-controller-manager's node lifecycle settings (its flags of the same names).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--node-monitor-grace-period`: silence after which a node is Unknown.
    pub monitor_grace_period: Duration,
    /// `--node-startup-grace-period`: the same for a node that never posted Ready.
    pub startup_grace_period: Duration,
    /// `--node-monitor-period`: how often nodes are checked.
    pub monitor_period: Duration,
    /// `--node-eviction-rate`: nodes a second that get NoExecute taints, per zone.
    pub eviction_rate: f64,
    /// `--secondary-node-eviction-rate`: the rate in an unhealthy zone of a large cluster.
    pub secondary_eviction_rate: f64,
    /// `--large-cluster-size-threshold`: a smaller cluster's unhealthy zone gets no NoExecute taints.
    pub large_cluster_threshold: usize,
    /// `--unhealthy-zone-threshold`: the share of not-ready nodes that makes a zone unhealthy.
    pub unhealthy_zone_threshold: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            monitor_grace_period: Duration::from_secs(40),
            startup_grace_period: Duration::from_secs(60),
            monitor_period: Duration::from_secs(5),
            eviction_rate: 0.1,
            secondary_eviction_rate: 0.01,
            large_cluster_threshold: 50,
            unhealthy_zone_threshold: 0.55,
        }
    }
}

/// What the monitor last saw of a node.
struct Health {
    /// The last sign of life (by this process's clock).
    probe: Instant,
    ready_heartbeat: Option<Time>,
    lease_renew: Option<DateTime<Utc>>,
    /// Ready's status at the previous pass.
    ready: Option<String>,
}

/// Upstream's NoExecute tainting limiter of a zone: a token bucket of one, its rate set by the
/// zone's state (a new rate starts a new bucket; rate 0 never gives a token).
struct Bucket(TokenBucket);

impl Bucket {
    fn new(rate: f64) -> Self {
        let b = TokenBucket::new(rate, 1.0, Instant::now());
        Bucket(if rate <= 0.0 { b.empty() } else { b })
    }

    fn set_rate(&mut self, rate: f64) {
        if (self.0.rate() - rate).abs() > f64::EPSILON {
            *self = Bucket::new(rate);
        }
    }

    fn take(&mut self) -> bool {
        self.0.take(Instant::now())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    Partial,
    Full,
}

#[derive(Default)]
struct Tainter {
    /// Per zone: nodes waiting for their NoExecute taint, in order.
    queues: BTreeMap<String, Vec<String>>,
    buckets: HashMap<String, Bucket>,
}

pub struct State {
    settings: Settings,
    nodes: Store<Node>,
    pods: Store<Pod>,
    leases: Store<Lease>,
    health: Mutex<HashMap<String, Health>>,
    tainter: Mutex<Tainter>,
    /// When the taint eviction first saw a pod under NoExecute taints without `timeAdded`.
    first_seen: Mutex<HashMap<String, DateTime<Utc>>>,
    /// Events of the taint eviction (its own component name).
    eviction_recorder: strata_client::events::Recorder,
}

pub async fn run(clients: Clients, settings: Settings, shared_pods: Shared<Pod>) -> Result<(), Error> {
    let root = clients.root.clone();
    let (leases, writer) = reflector::store::<Lease>();
    let lease_stream = reflector::reflector(writer, lean::watcher(Api::<Lease>::namespaced(root.clone(), LEASE_NAMESPACE), crate::watch_config())).default_backoff().touched_objects();
    // One watch of the nodes, read by the taint controller, the eviction's node trigger and the
    // pod filter below: all three see a node's change in the same order (see `under_no_execute`).
    let shared_nodes: Shared<Node> = Shared::new();
    let node_watch = shared_nodes.run(Api::<Node>::all(root.clone()));
    let node_controller = Controller::for_shared_stream(shared_nodes.subscribe(), shared_nodes.store().clone());
    let nodes = node_controller.store();
    let pod_stream = under_no_execute(nodes.clone(), shared_pods.subscribe());
    let pod_controller = Controller::for_shared_stream(pod_stream, shared_pods.store().clone());
    let pods = pod_controller.store();
    let writer = clients.writer(IDENTITY);
    let state = State {
        settings,
        nodes,
        pods: pods.clone(),
        leases,
        health: Mutex::new(HashMap::new()),
        tainter: Mutex::new(Tainter::default()),
        first_seen: Mutex::new(HashMap::new()),
        eviction_recorder: strata_client::events::Recorder::with_correlator(writer, TAINT_EVICTION),
    };
    let ctx = Context::new(clients, IDENTITY, state);
    // A node's change reconsiders every pod bound to it.
    let pods_of = pods.clone();
    let eviction = pod_controller
        .watches_shared_stream(shared_nodes.subscribe(), move |node: Arc<Node>| {
            let name = node.name_any();
            pods_of.state().into_iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())).map(|p| ObjectRef::from_obj(p.as_ref())).collect::<Vec<_>>()
        })
        .run(evict, eviction_error, ctx.clone())
        .for_each(crate::log_failures(IDENTITY));
    let no_schedule = node_controller.run(no_schedule_taints, node_error, ctx.clone()).for_each(crate::log_failures(IDENTITY));
    let leases = lease_stream.for_each(crate::log_watch_failures(IDENTITY, "Lease"));
    let monitor = monitor_loop(ctx);
    tokio::select! {
        _ = node_watch => {}
        _ = eviction => {}
        _ = no_schedule => {}
        _ = leases => {}
        _ = monitor => {}
    }
    Ok(())
}

/// The pod changes the taint eviction acts on: those of pods bound to a node with a NoExecute
/// taint (and all of them until the nodes are listed). A pod on an untainted node needs nothing
/// (its reconcile only returns), and in a rollout every pod change would otherwise pass through
/// the controller's queue. The node trigger covers the rest: a node tainted later sends every pod
/// on it. No change is missed between the two: the node cache is written before its subscribers
/// hear of the change, so either this filter sees the taint, or the node trigger runs after the
/// pod was in the pod cache and sends it.
fn under_no_execute(nodes: Store<Node>, pods: impl futures_util::Stream<Item = Arc<Pod>>) -> impl futures_util::Stream<Item = Arc<Pod>> {
    pods.filter(move |p| {
        let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        let wanted = node.is_some_and(|n| {
            !crate::synced(&nodes) || nodes.get(&ObjectRef::new(n)).is_some_and(|node| node.spec.as_ref().and_then(|s| s.taints.as_ref()).is_some_and(|ts| ts.iter().any(|t| t.effect == "NoExecute")))
        });
        futures_util::future::ready(wanted)
    })
}

fn eviction_error(pod: Arc<Pod>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(pod = %crate::key(pod.as_ref()), error = %e, "taint eviction");
    Action::requeue(Duration::from_secs(2))
}

fn node_error(node: Arc<Node>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(node = %node.name_any(), error = %e, "node lifecycle controller");
    Action::requeue(Duration::from_secs(2))
}

pub fn condition<'a>(node: &'a Node, kind: &str) -> Option<&'a NodeCondition> {
    node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

/// The conditions of a node silent past its grace period: Ready, MemoryPressure, DiskPressure
/// and PIDPressure Unknown (added as never updated when missing), as upstream. `None`: no change.
pub fn unknown_conditions(node: &Node, now: &Time) -> Option<Vec<NodeCondition>> {
    let mut conds = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let mut changed = false;
    for kind in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        match conds.iter_mut().find(|c| c.type_ == kind) {
            Some(c) if c.status != "Unknown" => {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some("Kubelet stopped posting node status.".into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            Some(_) => {}
            None => {
                conds.push(NodeCondition {
                    type_: kind.into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_heartbeat_time: node.metadata.creation_timestamp.clone(),
                    last_transition_time: Some(now.clone()),
                });
                changed = true;
            }
        }
    }
    changed.then_some(conds)
}

/// The NoSchedule taints a node's conditions and `unschedulable` call for (upstream's
/// `nodeConditionToTaintKeyStatusMap`).
pub fn condition_taints(node: &Node) -> Vec<Taint> {
    const MAP: &[(&str, &str, &str)] = &[
        ("Ready", "False", NOT_READY),
        ("Ready", "Unknown", UNREACHABLE),
        ("MemoryPressure", "True", "node.kubernetes.io/memory-pressure"),
        ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
        ("NetworkUnavailable", "True", "node.kubernetes.io/network-unavailable"),
        ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    ];
    let mut out = Vec::new();
    for c in node.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten() {
        if let Some((_, _, key)) = MAP.iter().find(|(t, s, _)| *t == c.type_ && *s == c.status) {
            out.push(Taint { key: (*key).into(), effect: "NoSchedule".into(), ..Default::default() });
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        out.push(Taint { key: UNSCHEDULABLE.into(), effect: "NoSchedule".into(), ..Default::default() });
    }
    out
}

/// Is this one of the NoSchedule taints [`condition_taints`] manages?
fn managed_no_schedule(t: &Taint) -> bool {
    t.effect == "NoSchedule"
        && matches!(
            t.key.as_str(),
            NOT_READY | UNREACHABLE | UNSCHEDULABLE | "node.kubernetes.io/memory-pressure" | "node.kubernetes.io/disk-pressure" | "node.kubernetes.io/network-unavailable" | "node.kubernetes.io/pid-pressure"
        )
}

/// The node's taints with the managed NoSchedule ones replaced by `want`; `None`: no change.
pub fn with_no_schedule(existing: &[Taint], want: &[Taint]) -> Option<Vec<Taint>> {
    let have: Vec<&Taint> = existing.iter().filter(|t| managed_no_schedule(t)).collect();
    let same = have.len() == want.len() && want.iter().all(|w| have.iter().any(|h| h.key == w.key));
    if same {
        return None;
    }
    let mut out: Vec<Taint> = existing.iter().filter(|t| !managed_no_schedule(t)).cloned().collect();
    out.extend(want.iter().cloned());
    Some(out)
}

/// The node's taints with NoExecute `add` (stamped `now`) and without the NoExecute `remove`
/// keys; `None`: no change.
pub fn swap_no_execute(existing: &[Taint], add: Option<&str>, remove: &[&str], now: &Time) -> Option<Vec<Taint>> {
    let is = |t: &Taint, k: &str| t.effect == "NoExecute" && t.key == k;
    let adding = add.filter(|k| !existing.iter().any(|t| is(t, k)));
    let removing = existing.iter().any(|t| remove.iter().any(|k| is(t, k)));
    if adding.is_none() && !removing {
        return None;
    }
    let mut out: Vec<Taint> = existing.iter().filter(|t| !remove.iter().any(|k| is(t, k))).cloned().collect();
    if let Some(k) = adding {
        out.push(Taint { key: k.into(), effect: "NoExecute".into(), time_added: Some(now.clone()), value: None });
    }
    Some(out)
}

/// Does the toleration tolerate the taint (upstream's `ToleratesTaint`)?
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

/// What the taint eviction does with a pod under these NoExecute taints.
#[derive(Debug, PartialEq, Eq)]
pub enum Eviction {
    /// A taint is not tolerated, or a toleration's seconds are 0 or less.
    Now,
    /// Every taint is tolerated, the shortest for this long.
    After(Duration),
    /// Every taint is tolerated forever.
    Never,
}

pub fn eviction(tolerations: &[Toleration], taints: &[Taint]) -> Eviction {
    let mut min: Option<i64> = None;
    for taint in taints {
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if used.is_empty() {
            return Eviction::Now;
        }
        for t in used {
            if let Some(s) = t.toleration_seconds {
                min = Some(min.map_or(s, |m| m.min(s)));
            }
        }
    }
    match min {
        None => Eviction::Never,
        Some(s) if s <= 0 => Eviction::Now,
        Some(s) => Eviction::After(Duration::from_secs(s as u64)),
    }
}

/// Upstream's `ComputeZoneState` over the Ready statuses of a zone's nodes.
pub fn zone_state(ready: &[&str], threshold: f64) -> ZoneState {
    let not_ready = ready.iter().filter(|s| **s != "True").count();
    let ready_n = ready.len() - not_ready;
    if ready_n == 0 && not_ready > 0 {
        ZoneState::Full
    } else if not_ready > 2 && not_ready as f64 / ready.len() as f64 >= threshold {
        ZoneState::Partial
    } else {
        ZoneState::Normal
    }
}

fn zone_of(node: &Node) -> String {
    let l = node.labels();
    format!("{}:\u{0}:{}", l.get(REGION).map(String::as_str).unwrap_or(""), l.get(ZONE).map(String::as_str).unwrap_or(""))
}

fn ready_status(node: &Node) -> String {
    condition(node, "Ready").map(|c| c.status.clone()).unwrap_or_else(|| "Unknown".into())
}

fn no_execute(node: &Node) -> Vec<Taint> {
    node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default().into_iter().filter(|t| t.effect == "NoExecute").collect()
}

/// Write a node's taints, carrying the resourceVersion they were decided on (a stale decision
/// is a 409, decided again at the next pass). Ok(false): changed or gone meanwhile.
async fn write_taints(ctx: &Context<State>, node: &Node, taints: Vec<Taint>) -> Result<bool, Error> {
    let api: Api<Node> = Api::all(ctx.writer.clone());
    let patch = json!({ "metadata": { "resourceVersion": node.metadata.resource_version }, "spec": { "taints": taints } });
    match api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The NoSchedule taints of a node, from its conditions and `unschedulable`, at every change.
async fn no_schedule_taints(node: Arc<Node>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    let existing = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    if let Some(taints) = with_no_schedule(&existing, &condition_taints(&node)) {
        if !write_taints(&ctx, &node, taints).await? {
            return Ok(Action::requeue(Duration::from_millis(300)));
        }
    }
    Ok(Action::await_change())
}

async fn monitor_loop(ctx: Arc<Context<State>>) {
    loop {
        tokio::time::sleep(ctx.state.settings.monitor_period).await;
        if !crate::synced(&ctx.state.nodes) || !crate::synced(&ctx.state.pods) || !crate::synced(&ctx.state.leases) {
            continue;
        }
        if let Err(e) = monitor(&ctx).await {
            tracing::warn!(error = %e, "monitoring node health");
        }
    }
}

/// One pass over every node: health, Unknown conditions, NoExecute taints, pods not ready.
async fn monitor(ctx: &Context<State>) -> Result<(), Error> {
    let s = &ctx.state.settings;
    let nodes = ctx.state.nodes.state();
    let mut pods_by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in ctx.state.pods.state() {
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) {
            pods_by_node.entry(n).or_default().push(p);
        }
    }
    let now = Instant::now();
    let wall = Utc::now();
    if let Ok(mut h) = ctx.state.health.lock() {
        // A set, not a scan of every node per entry: that was O(nodes²) name copies every
        // monitor period (seconds of a core at 15,000 nodes, on the server's runtime).
        let names: std::collections::HashSet<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
        h.retain(|name, _| names.contains(name.as_str()));
    }
    // Per zone: the Ready statuses (zones' health) and nodes to taint NoExecute.
    let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut candidates: Vec<(String, Arc<Node>)> = Vec::new();
    for node in &nodes {
        let name = node.name_any();
        let ready = condition(node, "Ready");
        let lease_renew = ctx.state.leases.get(&ObjectRef::new(&name).within(LEASE_NAMESPACE)).and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        let (silent, previous) = {
            let Ok(mut all) = ctx.state.health.lock() else { continue };
            let h = all.entry(name.clone()).or_insert_with(|| {
                // Never posted Ready: counted from the node's creation (a restart of this
                // process gives a whole grace period to the others).
                let probe = match (ready, &node.metadata.creation_timestamp) {
                    (None, Some(t)) => now.checked_sub((wall - t.0).to_std().unwrap_or_default()).unwrap_or(now),
                    _ => now,
                };
                Health { probe, ready_heartbeat: ready.and_then(|c| c.last_heartbeat_time.clone()), lease_renew, ready: None }
            });
            let heartbeat = ready.and_then(|c| c.last_heartbeat_time.clone());
            if heartbeat != h.ready_heartbeat {
                h.ready_heartbeat = heartbeat;
                h.probe = now;
            }
            if lease_renew.is_some() && lease_renew > h.lease_renew {
                h.lease_renew = lease_renew;
                h.probe = now;
            }
            let grace = if ready.is_some() { s.monitor_grace_period } else { s.startup_grace_period };
            (now.duration_since(h.probe) > grace, h.ready.clone())
        };
        let mut current = node.clone();
        if silent {
            if let Some(conds) = unknown_conditions(node, &Time(wall)) {
                let mut new = (**node).clone();
                if let Some(st) = new.status.as_mut() {
                    st.conditions = Some(conds);
                } else {
                    new.status = Some(k8s_openapi::api::core::v1::NodeStatus { conditions: Some(conds), ..Default::default() });
                }
                let api: Api<Node> = Api::all(ctx.writer.clone());
                let body = serde_json::to_vec(&new).map_err(|e| Error::Invalid(e.to_string()))?;
                match api.replace_status(&name, &PostParams::default(), body).await {
                    Ok(n) => {
                        tracing::info!(node = %name, "node stopped posting status: Ready is Unknown");
                        current = Arc::new(n);
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let status = ready_status(&current);
        if let Ok(mut all) = ctx.state.health.lock() {
            if let Some(h) = all.get_mut(&name) {
                h.ready = Some(status.clone());
            }
        }
        if !current.labels().contains_key(EXCLUDE_DISRUPTION) {
            zones.entry(zone_of(&current)).or_default().push(status.clone());
        }
        let pods = pods_by_node.get(&name).cloned().unwrap_or_default();
        let became_not_ready = previous.as_deref() == Some("True") && status != "True";
        if became_not_ready {
            ctx.recorder.publish(current.as_ref(), EventType::Normal, "NodeNotReady", format!("Node {name} status is now: NodeNotReady"));
        }
        if became_not_ready || status == "Unknown" {
            mark_pods_not_ready(ctx, &pods).await?;
        }
        match status.as_str() {
            "True" => {
                if let Some(t) = swap_no_execute(&no_execute_all(&current), None, &[NOT_READY, UNREACHABLE], &Time(wall)) {
                    if write_taints(ctx, &current, t).await? {
                        tracing::info!(node = %name, "node is ready again: NoExecute taints removed");
                    }
                }
                if let Ok(mut t) = ctx.state.tainter.lock() {
                    for q in t.queues.values_mut() {
                        q.retain(|n| *n != name);
                    }
                }
            }
            other => {
                let (want, opposite) = if other == "False" { (NOT_READY, UNREACHABLE) } else { (UNREACHABLE, NOT_READY) };
                let taints = no_execute(&current);
                if taints.iter().any(|t| t.key == opposite) {
                    // Already tainted the other way: swap at once, as upstream.
                    if let Some(t) = swap_no_execute(&no_execute_all(&current), Some(want), &[opposite], &Time(wall)) {
                        write_taints(ctx, &current, t).await?;
                    }
                } else if !taints.iter().any(|t| t.key == want) {
                    candidates.push((zone_of(&current), current.clone()));
                }
            }
        }
    }

    // Disruption modes: every zone fully disrupted stops all NoExecute tainting (and takes the
    // taints away); otherwise each zone's rate follows its state.
    let states: BTreeMap<String, ZoneState> = zones.iter().map(|(z, r)| (z.clone(), zone_state(&r.iter().map(String::as_str).collect::<Vec<_>>(), s.unhealthy_zone_threshold))).collect();
    let all_full = !states.is_empty() && states.values().all(|z| *z == ZoneState::Full);
    if all_full {
        if let Ok(mut t) = ctx.state.tainter.lock() {
            t.queues.clear();
        }
        for node in &nodes {
            if let Some(t) = swap_no_execute(&no_execute_all(node), None, &[NOT_READY, UNREACHABLE], &Time(wall)) {
                write_taints(ctx, node, t).await?;
            }
        }
        return Ok(());
    }
    let due: Vec<String> = {
        let Ok(mut t) = ctx.state.tainter.lock() else { return Ok(()) };
        for (zone, node) in &candidates {
            let q = t.queues.entry(zone.clone()).or_default();
            let name = node.name_any();
            if !q.contains(&name) {
                q.push(name);
            }
        }
        let mut due = Vec::new();
        let zones_now: Vec<String> = t.queues.keys().cloned().collect();
        for zone in zones_now {
            let size = zones.get(&zone).map_or(0, Vec::len);
            let rate = match states.get(&zone).copied().unwrap_or(ZoneState::Normal) {
                ZoneState::Normal | ZoneState::Full => s.eviction_rate,
                ZoneState::Partial if size > s.large_cluster_threshold => s.secondary_eviction_rate,
                ZoneState::Partial => 0.0,
            };
            let tainter = &mut *t;
            let bucket = tainter.buckets.entry(zone.clone()).or_insert_with(|| Bucket::new(rate));
            bucket.set_rate(rate);
            let q = tainter.queues.entry(zone.clone()).or_default();
            while !q.is_empty() && bucket.take() {
                due.push(q.remove(0));
            }
        }
        due
    };
    for name in due {
        let Some(node) = ctx.state.nodes.get(&ObjectRef::new(&name)) else { continue };
        let (want, opposite) = match ready_status(&node).as_str() {
            "False" => (NOT_READY, UNREACHABLE),
            "True" => continue,
            _ => (UNREACHABLE, NOT_READY),
        };
        if let Some(t) = swap_no_execute(&no_execute_all(&node), Some(want), &[opposite], &Time(wall)) {
            if write_taints(ctx, &node, t).await? {
                tracing::info!(node = %name, taint = want, "node tainted NoExecute");
            }
        }
    }
    Ok(())
}

/// All of a node's taints (the swap keeps the ones it does not manage).
fn no_execute_all(node: &Node) -> Vec<Taint> {
    node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default()
}

/// Ready False on these pods (upstream's `MarkPodsNotReady`), each written with the
/// resourceVersion it was read at.
async fn mark_pods_not_ready(ctx: &Context<State>, pods: &[Arc<Pod>]) -> Result<(), Error> {
    let now = Time(Utc::now());
    for p in pods {
        let Some(conds) = p.status.as_ref().and_then(|s| s.conditions.clone()) else { continue };
        if !conds.iter().any(|c| c.type_ == "Ready" && c.status == "True") {
            continue;
        }
        let mut new = (**p).clone();
        if let Some(st) = new.status.as_mut() {
            st.conditions = Some(
                conds
                    .into_iter()
                    .map(|mut c| {
                        if c.type_ == "Ready" {
                            c.status = "False".into();
                            c.last_transition_time = Some(now.clone());
                        }
                        c
                    })
                    .collect(),
            );
        }
        let api: Api<Pod> = Api::namespaced(ctx.writer.clone(), &p.namespace().unwrap_or_default());
        let body = serde_json::to_vec(&new).map_err(|e| Error::Invalid(e.to_string()))?;
        match api.replace_status(&p.name_any(), &PostParams::default(), body).await {
            Ok(_) => ctx.recorder.publish(p.as_ref(), EventType::Warning, "NodeNotReady", "Node is not ready"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The taint eviction of one pod.
async fn evict(pod: Arc<Pod>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let forget = |ctx: &Context<State>| {
        if let Ok(mut m) = ctx.state.first_seen.lock() {
            m.remove(&uid);
        }
    };
    let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) else { return Ok(Action::await_change()) };
    if pod.metadata.deletion_timestamp.is_some() {
        forget(&ctx);
        return Ok(Action::await_change());
    }
    if !crate::synced(&ctx.state.nodes) {
        return Ok(crate::not_synced());
    }
    let Some(node) = ctx.state.nodes.get(&ObjectRef::new(&node_name)) else { return Ok(Action::await_change()) };
    let taints = no_execute(&node);
    if taints.is_empty() {
        forget(&ctx);
        return Ok(Action::await_change());
    }
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let now = Utc::now();
    match eviction(&tolerations, &taints) {
        Eviction::Never => {
            forget(&ctx);
            return Ok(Action::await_change());
        }
        Eviction::After(d) => {
            // From the earliest taint's timeAdded (restart-safe), else from when first seen.
            let added = taints.iter().filter_map(|t| t.time_added.as_ref().map(|t| t.0)).min();
            let since = match added {
                Some(t) => t,
                None => ctx.state.first_seen.lock().map(|mut m| *m.entry(uid.clone()).or_insert(now)).unwrap_or(now),
            };
            let at = since + chrono::Duration::from_std(d).unwrap_or_default();
            if now < at {
                return Ok(Action::requeue((at - now).to_std().unwrap_or(Duration::from_secs(1)) + Duration::from_millis(50)));
            }
        }
        Eviction::Now => {}
    }
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    ctx.state.eviction_recorder.publish(pod.as_ref(), EventType::Normal, "TaintManagerEviction", format!("Marking for deletion Pod {ns}/{name}"));
    let api: Api<Pod> = Api::namespaced(ctx.writer.clone(), &ns);
    let has_target = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "DisruptionTarget" && c.status == "True"));
    if !has_target {
        let cond = PodCondition {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
            reason: Some("DeletionByTaintManager".into()),
            message: Some("Taint manager: deleting due to NoExecute taint".into()),
            last_transition_time: Some(Time(now)),
            last_probe_time: None,
        };
        let patch = json!({ "metadata": { "uid": uid }, "status": { "conditions": [cond] } });
        match api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    let dp = DeleteParams { preconditions: Some(Preconditions { uid: Some(uid.clone()), resource_version: None }), ..Default::default() };
    match api.delete(&name, &dp).await {
        Ok(_) => tracing::info!(pod = %format!("{ns}/{name}"), node = %node_name, "evicted by NoExecute taints"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    forget(&ctx);
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus};

    fn node(conds: &[(&str, &str)], taints: &[(&str, &str)], unschedulable: bool) -> Node {
        Node {
            spec: Some(NodeSpec {
                taints: Some(taints.iter().map(|(k, e)| Taint { key: (*k).into(), effect: (*e).into(), ..Default::default() }).collect()),
                unschedulable: Some(unschedulable),
                ..Default::default()
            }),
            status: Some(NodeStatus { conditions: Some(conds.iter().map(|(t, s)| NodeCondition { type_: (*t).into(), status: (*s).into(), ..Default::default() }).collect()), ..Default::default() }),
            ..Default::default()
        }
    }

    fn tol(key: &str, effect: &str, seconds: Option<i64>) -> Toleration {
        Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), toleration_seconds: seconds, value: None }
    }

    /// Only pods on a node with a NoExecute taint reach the eviction (every bound pod until the
    /// nodes are listed); a node tainted after its pod passed by is the node trigger's.
    #[test]
    fn the_eviction_hears_only_of_pods_on_no_execute_nodes() {
        use futures_util::FutureExt;
        let (store, mut writer) = reflector::store::<Node>();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Pod>>();
        let mut passed = Box::pin(under_no_execute(store, futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) })));
        let mut send = |node: Option<&str>| {
            let mut p = Pod::default();
            p.metadata.name = Some("p".into());
            p.spec = Some(k8s_openapi::api::core::v1::PodSpec { node_name: node.map(str::to_string), ..Default::default() });
            tx.send(Arc::new(p)).expect("send");
            passed.next().now_or_never().flatten().is_some()
        };
        let named = |name: &str, n: Node| Node { metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some(name.into()), ..Default::default() }, ..n };
        assert!(send(Some("quiet")), "nodes not listed yet: every bound pod");
        assert!(!send(None), "an unbound pod never");
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Init);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(named("quiet", node(&[], &[(NOT_READY, "NoSchedule")], false))));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitApply(named("down", node(&[], &[(UNREACHABLE, "NoExecute")], false))));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::InitDone);
        assert!(!send(Some("quiet")), "a node without NoExecute taints: nothing to do");
        assert!(send(Some("down")), "a NoExecute node's pod");
        assert!(!send(Some("unknown")), "a node not in the cache");
    }

    #[test]
    fn silent_nodes_become_unknown_as_upstream() {
        let now = Time(Utc::now());
        let n = node(&[("Ready", "True"), ("MemoryPressure", "False")], &[], false);
        let c = unknown_conditions(&n, &now).expect("changed");
        let ready = c.iter().find(|c| c.type_ == "Ready").expect("ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_deref(), ready.message.as_deref()), ("Unknown", Some("NodeStatusUnknown"), Some("Kubelet stopped posting node status.")));
        let disk = c.iter().find(|c| c.type_ == "DiskPressure").expect("added");
        assert_eq!((disk.status.as_str(), disk.reason.as_deref()), ("Unknown", Some("NodeStatusNeverUpdated")));
        assert_eq!(c.len(), 4, "NetworkUnavailable is left alone: {c:?}");
        let mut again = n.clone();
        again.status.as_mut().expect("status").conditions = Some(c);
        assert!(unknown_conditions(&again, &now).is_none(), "already Unknown: no write");
    }

    #[test]
    fn no_schedule_taints_follow_conditions_and_cordon() {
        let keys = |n: &Node| condition_taints(n).into_iter().map(|t| t.key).collect::<Vec<_>>();
        assert_eq!(keys(&node(&[("Ready", "Unknown")], &[], false)), [UNREACHABLE]);
        assert_eq!(keys(&node(&[("Ready", "False"), ("DiskPressure", "True")], &[], true)), [NOT_READY, "node.kubernetes.io/disk-pressure", UNSCHEDULABLE]);
        assert!(keys(&node(&[("Ready", "True"), ("DiskPressure", "False")], &[], false)).is_empty());
        // A user's taint stays; a stale managed one goes; NoExecute ones are not touched here.
        let existing = node(&[], &[("dedicated", "NoSchedule"), (NOT_READY, "NoSchedule"), (UNREACHABLE, "NoExecute")], false).spec.and_then(|s| s.taints).unwrap_or_default();
        let want = vec![Taint { key: UNREACHABLE.into(), effect: "NoSchedule".into(), ..Default::default() }];
        let out = with_no_schedule(&existing, &want).expect("changed");
        let got: Vec<(String, String)> = out.iter().map(|t| (t.key.clone(), t.effect.clone())).collect();
        assert_eq!(got, [("dedicated".into(), "NoSchedule".into()), (UNREACHABLE.into(), "NoExecute".into()), (UNREACHABLE.into(), "NoSchedule".into())]);
        assert!(with_no_schedule(&out, &want).is_none());
    }

    #[test]
    fn no_execute_taints_swap_and_carry_time_added() {
        let now = Time(Utc::now());
        let out = swap_no_execute(&[], Some(UNREACHABLE), &[NOT_READY], &now).expect("added");
        assert_eq!((out[0].key.as_str(), out[0].effect.as_str(), out[0].time_added.clone()), (UNREACHABLE, "NoExecute", Some(now.clone())));
        assert!(swap_no_execute(&out, Some(UNREACHABLE), &[NOT_READY], &now).is_none(), "already there");
        let swapped = swap_no_execute(&out, Some(NOT_READY), &[UNREACHABLE], &now).expect("swapped");
        assert_eq!(swapped.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), [NOT_READY]);
        assert_eq!(swap_no_execute(&swapped, None, &[NOT_READY, UNREACHABLE], &now), Some(vec![]));
    }

    #[test]
    fn eviction_follows_tolerations_as_upstream() {
        let t = |k: &str| Taint { key: k.into(), effect: "NoExecute".into(), ..Default::default() };
        // The API server's defaults: 300 s for both.
        let defaults = [tol(NOT_READY, "NoExecute", Some(300)), tol(UNREACHABLE, "NoExecute", Some(300))];
        assert_eq!(eviction(&defaults, &[t(UNREACHABLE)]), Eviction::After(Duration::from_secs(300)));
        assert_eq!(eviction(&[tol(UNREACHABLE, "NoExecute", Some(300)), tol("", "", Some(20))], &[t(UNREACHABLE)]), Eviction::After(Duration::from_secs(20)), "the shortest of the matching ones");
        assert_eq!(eviction(&defaults, &[t(UNREACHABLE), t("other")]), Eviction::Now, "one taint not tolerated");
        assert_eq!(eviction(&[tol(UNREACHABLE, "", None)], &[t(UNREACHABLE)]), Eviction::Never);
        assert_eq!(eviction(&[tol(UNREACHABLE, "NoExecute", Some(0))], &[t(UNREACHABLE)]), Eviction::Now);
        assert_eq!(eviction(&[tol(UNREACHABLE, "NoSchedule", None)], &[t(UNREACHABLE)]), Eviction::Now, "effect must match");
        let eq = Toleration { key: Some("k".into()), operator: Some("Equal".into()), value: Some("v".into()), effect: None, toleration_seconds: None };
        assert!(tolerates(&eq, &Taint { key: "k".into(), value: Some("v".into()), effect: "NoExecute".into(), time_added: None }));
        assert!(!tolerates(&eq, &Taint { key: "k".into(), value: Some("w".into()), effect: "NoExecute".into(), time_added: None }));
    }

    #[test]
    fn zone_states_and_the_rate_limiter() {
        assert_eq!(zone_state(&["True", "Unknown"], 0.55), ZoneState::Normal);
        assert_eq!(zone_state(&["Unknown", "False"], 0.55), ZoneState::Full);
        assert_eq!(zone_state(&["True", "Unknown", "Unknown", "False"], 0.55), ZoneState::Partial);
        assert_eq!(zone_state(&["True", "True", "Unknown", "Unknown", "False", "True", "True"], 0.55), ZoneState::Normal);
        let mut b = Bucket::new(0.1);
        assert!(b.take(), "a burst of one");
        assert!(!b.take(), "then one every 10 s");
        b.set_rate(0.0);
        assert!(!b.take());
    }
}
