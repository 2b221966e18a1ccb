//! The DaemonSet controller (upstream's `daemon` controller, 1.32): one pod per eligible node.
//! A node is eligible when the template's nodeName, nodeSelector and required node affinity
//! match it and its NoSchedule/NoExecute taints are tolerated (with the tolerations every
//! daemon pod gets: not-ready and unreachable NoExecute, disk-, memory- and pid-pressure and
//! unschedulable NoSchedule); a pod keeps running on a node it no longer fits only while it
//! tolerates the node's NoExecute taints. Pods are named `<ds>-<5 characters>` and pinned to
//! their node by a required node affinity on `metadata.name` (`matchFields`), which the
//! scheduler honours, as upstream. Failed pods are deleted (with a per-node back-off) and
//! replaced, succeeded ones deleted.
//!
//! Templates are recorded as ControllerRevisions ([`crate::history`]); pods carry the
//! current revision's `controller-revision-hash`. RollingUpdate replaces out-of-date pods
//! within maxUnavailable (delete first) or maxSurge (new pod first, the old one deleted once
//! the new one is available); OnDelete replaces only pods deleted by someone else. Status
//! (desired/current/ready/updated/available/unavailable/misscheduled, observedGeneration)
//! goes through `daemonsets/status`, which `kubectl rollout status ds` reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use strata_client::lean;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, Controller, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use strata_scheduler::labels::node_selector_matches;
use strata_scheduler::plugins::node::tolerates;

use crate::expectations::Expectations;
use crate::history::{self, HASH_LABEL};
use crate::owners::OwnerIndex;
use crate::replicaset::{controller_of, controller_ref, is_available, labels_of, random_name, ready_since, selects};
use crate::informer::Shared;
use crate::{Clients, Context, Error};
use strata_client::events::EventType;

pub const IDENTITY: &str = "daemon-set-controller";
const BURST: usize = 250;
/// The failed-pod back-off (upstream's: 1 s doubling to 15 minutes).
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(900);

pub struct State {
    /// The pods, by namespace and controller.
    pods: OwnerIndex<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Expectations,
    /// `<ds key>/<node>` -> (last failed-pod deletion, current delay).
    backoff: Mutex<HashMap<String, (Instant, Duration)>>,
}

pub async fn run(clients: Clients, shared_pods: Shared<Pod>) -> Result<(), Error> {
    let root = clients.root.clone();
    let (pods, pod_stream) = (shared_pods.owners().clone(), shared_pods.subscribe());
    let (revisions, rw) = reflector::store::<ControllerRevision>();
    let mut rev_events = RevisionTrigger::default();
    let rev_stream = reflector::reflector(rw, lean::watcher(Api::<ControllerRevision>::all(root.clone()), crate::watch_config()))
        .default_backoff()
        .filter_map(move |ev| futures_util::future::ready(ev.map(|ev| rev_events.fire(ev)).transpose()));
    let (nodes, nw) = reflector::store::<Node>();
    // Every DaemonSet is looked at again when a node comes, goes, or changes what decides
    // eligibility (labels, taints, unschedulable), as upstream's node handlers do.
    let mut seen: HashMap<String, String> = HashMap::new();
    let node_trigger = reflector::reflector(nw, lean::watcher(Api::<Node>::all(root.clone()), crate::watch_config())).default_backoff().filter_map(move |ev| {
        let fire = match ev {
            Ok(watcher::Event::Apply(n)) | Ok(watcher::Event::InitApply(n)) => {
                let sig = serde_json::to_string(&(&n.metadata.labels, n.spec.as_ref().map(|s| (&s.taints, s.unschedulable)))).unwrap_or_default();
                (seen.insert(n.name_any(), sig.clone()) != Some(sig)).then_some(n)
            }
            Ok(watcher::Event::Delete(n)) => {
                seen.remove(&n.name_any());
                Some(n)
            }
            // The trigger names a node (the runtime records it as the reason): any will do.
            Ok(watcher::Event::InitDone) => Some(Node { metadata: ObjectMeta { name: Some("(initial list)".into()), ..Default::default() }, ..Default::default() }),
            _ => None,
        };
        futures_util::future::ready(fire.map(Ok::<Node, watcher::Error>))
    });
    let ctx = Context::new(clients.clone(), IDENTITY, State { pods, nodes, revisions, expectations: Expectations::default(), backoff: Mutex::new(HashMap::new()) });
    let controller = Controller::new(Api::<DaemonSet>::all(root), crate::watch_config());
    let daemonsets = controller.store();
    controller
        .owns_shared_stream(pod_stream)
        .owns_stream(rev_stream)
        .watches_stream(node_trigger, move |_: Node| daemonsets.state().iter().map(|d| ObjectRef::from_obj(d.as_ref())).collect::<Vec<_>>())
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY))
        .await;
    Ok(())
}

/// Which ControllerRevision events wake the owning DaemonSet (upstream's history handlers): an
/// update or a deletion, not the creation of a revision it already owns — so a revision someone
/// creates with the current template's data (the ControllerRevision conformance spec's) stays
/// until the DaemonSet's next sync deduplicates it, as upstream.
#[derive(Default)]
struct RevisionTrigger {
    /// resourceVersion by uid of every revision seen.
    seen: HashMap<String, String>,
}

impl RevisionTrigger {
    fn fire(&mut self, ev: watcher::Event<ControllerRevision>) -> Option<ControllerRevision> {
        match ev {
            watcher::Event::InitApply(r) => {
                self.seen.insert(r.metadata.uid.clone().unwrap_or_default(), r.resource_version().unwrap_or_default());
                None
            }
            watcher::Event::Apply(r) => {
                let before = self.seen.insert(r.metadata.uid.clone().unwrap_or_default(), r.resource_version().unwrap_or_default());
                match before {
                    None if controller_of(&r.metadata).is_some() => None,
                    Some(rv) if Some(rv.as_str()) == r.metadata.resource_version.as_deref() => None,
                    _ => Some(r),
                }
            }
            watcher::Event::Delete(r) => {
                self.seen.remove(r.metadata.uid.as_deref().unwrap_or_default());
                Some(r)
            }
            watcher::Event::Init | watcher::Event::InitDone => None,
        }
    }
}

fn error_policy(ds: Arc<DaemonSet>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(daemonset = %crate::key(ds.as_ref()), error = %e, "daemonset controller");
    Action::requeue(Duration::from_secs(2))
}

/// The tolerations every daemon pod gets (upstream's `AddOrUpdateDaemonPodTolerations`).
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut add = |key: &str, effect: &str| {
        let t = Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), ..Default::default() };
        let tols = spec.tolerations.get_or_insert_with(Vec::new);
        // Replaces a toleration of the same key and effect (upstream's AddOrUpdateTolerationInPodSpec).
        tols.retain(|x| !(x.key.as_deref() == Some(key) && x.effect.as_deref() == Some(effect)));
        tols.push(t);
    };
    add("node.kubernetes.io/not-ready", "NoExecute");
    add("node.kubernetes.io/unreachable", "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if spec.host_network == Some(true) {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
}

/// (should run, should continue running) of the DaemonSet's pod on `node`
/// (upstream's `NodeShouldRunDaemonPod`).
pub fn should_run(ds: &DaemonSet, node: &Node) -> (bool, bool) {
    let mut spec = ds.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap_or_default();
    let node_name = node.name_any();
    if spec.node_name.as_deref().is_some_and(|n| !n.is_empty() && n != node_name) {
        return (false, false);
    }
    add_daemon_tolerations(&mut spec);
    let labels = node.metadata.labels.clone().unwrap_or_default();
    if spec.node_selector.as_ref().is_some_and(|sel| sel.iter().any(|(k, v)| labels.get(k) != Some(v))) {
        return (false, false);
    }
    let required = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    if required.is_some_and(|r| !node_selector_matches(r, &node_name, &labels)) {
        return (false, false);
    }
    let taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let tols = spec.tolerations.unwrap_or_default();
    let untolerated = |effects: &[&str]| taints.iter().any(|t| effects.contains(&t.effect.as_str()) && !tols.iter().any(|x| tolerates(x, t)));
    if untolerated(&["NoSchedule", "NoExecute"]) {
        return (false, !untolerated(&["NoExecute"]));
    }
    (true, true)
}

/// The node a daemon pod is for: its nodeName, else the `metadata.name` of its required node
/// affinity (upstream's `GetTargetNodeName`).
pub fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find(|e| e.key == "metadata.name" && e.operator == "In").and_then(|e| match e.values.as_deref() {
        Some([one]) => Some(one.clone()),
        _ => None,
    })
}

/// Pin a pod to one node: its required node affinity becomes `metadata.name In [node]`
/// (upstream's `ReplaceDaemonSetPodNodeNameNodeAffinity`).
pub fn pin_to_node(spec: &mut PodSpec, node: &str) {
    let term = NodeSelectorTerm { match_fields: Some(vec![NodeSelectorRequirement { key: "metadata.name".into(), operator: "In".into(), values: Some(vec![node.into()]) }]), match_expressions: None };
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector { node_selector_terms: vec![term] });
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn is_ready(p: &Pod) -> bool {
    ready_since(p).is_some()
}

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).map(String::as_str)
}

/// Oldest first; among equals, the one further along (Running before Pending) first
/// (upstream's `podByCreationTimestampAndPhase`).
fn by_age(pods: &mut [Arc<Pod>]) {
    let rank = |p: &Pod| match phase(p) {
        "Running" => 0,
        "Pending" => 1,
        _ => 2,
    };
    pods.sort_by(|a, b| {
        let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b)).then(rank(a).cmp(&rank(b))).then(a.name_any().cmp(&b.name_any()))
    });
}

/// maxSurge and maxUnavailable of a RollingUpdate DaemonSet for `desired` nodes; both zero
/// means one unavailable (upstream's `updatedDesiredNodeCounts`). OnDelete: (0, 0).
pub fn surge_and_unavailable(ds: &DaemonSet, desired: i32) -> Result<(i32, i32), String> {
    let Some(st) = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()) else { return Ok((0, 0)) };
    if st.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return Ok((0, 0));
    }
    let ru = st.rolling_update.as_ref();
    let surge = match ru.and_then(|r| r.max_surge.as_ref()) {
        Some(v) => crate::rollout::scaled_value(Some(v), desired, true, "0")?,
        None => 0,
    };
    let mut unavailable = match ru.and_then(|r| r.max_unavailable.as_ref()) {
        Some(v) => crate::rollout::scaled_value(Some(v), desired, true, "1")?,
        None => 0,
    };
    if desired > 0 && surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    Ok((surge, unavailable))
}

fn allows_surge(ds: &DaemonSet) -> bool {
    surge_and_unavailable(ds, 1).is_ok_and(|(s, _)| s > 0)
}

fn rolling(ds: &DaemonSet) -> bool {
    ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate"
}

/// What one pass decided: nodes to create a pod on, pods to delete (by name).
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<String>,
    pub delete: Vec<String>,
}

/// Upstream's `podsShouldBeOnNode` for every node, plus pods for nodes that are gone. Pure.
/// `failed_ok(node)` says whether a failed pod on the node may be deleted now (back-off).
pub fn manage(ds: &DaemonSet, nodes: &[Arc<Node>], by_node: &BTreeMap<String, Vec<Arc<Pod>>>, hash: &str, now: chrono::DateTime<chrono::Utc>, mut failed_ok: impl FnMut(&str) -> bool) -> (Plan, Vec<(String, String)>) {
    let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let mut plan = Plan::default();
    let mut events = Vec::new();
    for node in nodes {
        let name = node.name_any();
        let (run, keep) = should_run(ds, node);
        let pods = by_node.get(&name);
        match (run, keep, pods) {
            (true, _, None) => plan.create.push(name),
            (_, true, Some(pods)) => {
                let mut running: Vec<Arc<Pod>> = Vec::new();
                for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
                    match phase(p) {
                        "Failed" => {
                            if failed_ok(&name) {
                                events.push(("FailedDaemonPod".to_string(), format!("Found failed daemon pod {}/{} on node {name}, will try to kill it", p.namespace().unwrap_or_default(), p.name_any())));
                                plan.delete.push(p.name_any());
                            }
                        }
                        "Succeeded" => {
                            events.push(("SucceededDaemonPod".to_string(), format!("Found succeeded daemon pod {}/{} on node {name}, will try to delete it", p.namespace().unwrap_or_default(), p.name_any())));
                            plan.delete.push(p.name_any());
                        }
                        _ => running.push(p.clone()),
                    }
                }
                by_age(&mut running);
                if !allows_surge(ds) {
                    // Extra pods go, the oldest stays; a node left with none gets a new pod
                    // once the deletions are observed (next pass), as upstream.
                    plan.delete.extend(running.iter().skip(1).map(|p| p.name_any()));
                    continue;
                }
                if running.len() <= 1 {
                    if running.is_empty() && run {
                        plan.create.push(name);
                    }
                    continue;
                }
                let (mut oldest_new, mut oldest_old): (Option<Arc<Pod>>, Option<Arc<Pod>>) = (None, None);
                for p in &running {
                    let slot = if hash_of(p) == Some(hash) { &mut oldest_new } else { &mut oldest_old };
                    if slot.is_none() {
                        *slot = Some(p.clone());
                    } else {
                        plan.delete.push(p.name_any());
                    }
                }
                if let (Some(new), Some(old)) = (oldest_new, oldest_old) {
                    if !is_ready(&old) || is_available(&new, min_ready, now) {
                        plan.delete.push(old.name_any());
                    }
                }
            }
            (_, false, Some(pods)) => plan.delete.extend(pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| p.name_any())),
            _ => {}
        }
    }
    (plan, events)
}

/// Upstream's `rollingUpdate`: which out-of-date pods go and which nodes get a new pod now.
/// `by_node` holds every node that should run a pod (possibly with no pods). Pure.
pub fn rolling_update(ds: &DaemonSet, nodes: &HashMap<String, Arc<Node>>, by_node: &BTreeMap<String, Vec<Arc<Pod>>>, hash: &str, desired: i32, now: chrono::DateTime<chrono::Utc>) -> Result<Plan, String> {
    let (max_surge, max_unavailable) = surge_and_unavailable(ds, desired)?;
    let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let available = |p: &Pod| is_available(p, min_ready, now);
    // (new, old) of a node, or None with more than one of either (left to `manage`).
    let split = |pods: &[Arc<Pod>]| -> Option<(Option<Arc<Pod>>, Option<Arc<Pod>>)> {
        let (mut new, mut old) = (None, None);
        for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let slot = if hash_of(p) == Some(hash) { &mut new } else { &mut old };
            if slot.is_some() {
                return None;
            }
            *slot = Some(p.clone());
        }
        Some((new, old))
    };
    let mut plan = Plan::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut allowed = Vec::new();
        let mut candidates = Vec::new();
        for pods in by_node.values() {
            let Some((new, old)) = split(pods) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(&new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(&old) {
                        allowed.push(old.name_any());
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(old.name_any());
                    }
                }
            }
        }
        let remaining = (max_unavailable - unavailable).max(0) as usize;
        plan.delete = allowed;
        plan.delete.extend(candidates.into_iter().take(remaining));
        return Ok(plan);
    }
    let mut surge = 0;
    let mut available_count = 0;
    let mut allowed_new = Vec::new();
    let mut candidate_new = Vec::new();
    let mut should_not_run = Vec::new();
    for (node, pods) in by_node {
        let Some((new, old)) = split(pods) else {
            surge += 1;
            continue;
        };
        if let Some(p) = old.as_ref().or(new.as_ref()) {
            if available(p) {
                available_count += 1;
            }
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                let runs = nodes.get(node).is_some_and(|n| should_run(ds, n).0);
                if !available(&old) {
                    if !runs {
                        plan.delete.push(old.name_any());
                    } else {
                        allowed_new.push(node.clone());
                    }
                } else if !runs {
                    should_not_run.push(old.name_any());
                } else if surge < max_surge {
                    candidate_new.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if !available(&new) {
                    surge += 1;
                } else {
                    plan.delete.push(old.name_any());
                }
            }
        }
    }
    let deletable = (available_count - desired).max(0) as usize;
    plan.delete.extend(should_not_run.into_iter().take(deletable));
    let remaining = (max_surge - surge).max(0) as usize;
    plan.create = allowed_new;
    plan.create.extend(candidate_new.into_iter().take(remaining));
    Ok(plan)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    let st = &ctx.state;
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(spec) = ds.spec.as_ref() else { return Ok(Action::await_change()) };
    if !crate::synced(st.pods.store()) || !crate::synced(&st.nodes) || !crate::synced(&st.revisions) {
        return Ok(crate::not_synced());
    }
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let key = format!("{ns}/{name}");
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    if ctx.refuses_selecting_all(ds.as_ref(), "daemon set", &spec.selector) {
        return Ok(Action::await_change());
    }
    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.writer.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.writer.clone(), &ns);

    // Revisions: the current one for this template.
    let collision = ds.status.as_ref().and_then(|s| s.collision_count);
    let hist = match history::resolve(&st.revisions, &rev_api, ds.as_ref(), &spec.selector, &spec.template, collision).await? {
        history::Outcome::Ok(h) => h,
        history::Outcome::Collision => {
            let mut new = (*ds).clone();
            let status = new.status.get_or_insert_with(Default::default);
            status.collision_count = Some(collision.unwrap_or(0) + 1);
            write_status(&ctx, &new).await?;
            return Err(Error::Invalid(format!("hash collision for daemon set {key}; collisionCount raised")));
        }
    };
    let hash = history::revision_hash(&hist.current);

    // Expectations first, then the pods (as upstream): a pod created earlier and observed
    // between a snapshot and a later check would be counted by neither and made again.
    let in_cache = |n: &str| st.pods.contains(&ns, n);
    let sync = st.expectations.satisfied(&key, in_cache);
    // Pods: claim, then group by the node each is for.
    // This DaemonSet's pods and the namespace's orphans (others' are never claimed).
    let (mine, orphans) = st.pods.owned_and_orphans(&ns, &uid);
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for p in mine.iter().chain(&orphans) {
        let matches = selects(&spec.selector, labels_of(&p.metadata));
        match controller_of(&p.metadata) {
            Some(c) if c.uid == uid => {
                if matches {
                    owned.push(p.clone());
                } else {
                    let keep: Vec<&OwnerReference> = p.metadata.owner_references.iter().flatten().filter(|o| o.uid != uid).collect();
                    let patch = json!({ "metadata": { "ownerReferences": keep, "resourceVersion": p.metadata.resource_version } });
                    gone_ok(pods_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)?;
                }
            }
            None if matches && p.metadata.deletion_timestamp.is_none() => {
                let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(ds.as_ref()));
                let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": p.metadata.resource_version } });
                if gone_ok(pods_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)? {
                    owned.push(p.clone());
                }
            }
            _ => {}
        }
    }
    let nodes: Vec<Arc<Node>> = st.nodes.state();
    let node_map: HashMap<String, Arc<Node>> = nodes.iter().map(|n| (n.name_any(), n.clone())).collect();
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    for p in &owned {
        let terminal = matches!(phase(p), "Succeeded" | "Failed");
        if terminal && p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if let Some(n) = target_node(p) {
            by_node.entry(n).or_default().push(p.clone());
        }
    }

    let now = chrono::Utc::now();
    let mut failure = None;
    if sync {
        let (mut plan, events) = manage(&ds, &nodes, &by_node, &hash, now, |node| backoff_ok(st, &key, node));
        for (reason, message) in events {
            let t = if reason == "FailedDaemonPod" { EventType::Warning } else { EventType::Normal };
            ctx.recorder.publish(ds.as_ref(), t, &reason, message);
        }
        // Pods for nodes that are gone (upstream leaves bound ones to the pod GC, which strata
        // does not run: they go here, at once, as PodGC force-deletes pods of deleted nodes).
        let mut orphaned = Vec::new();
        for (node, pods) in &by_node {
            if !node_map.contains_key(node) {
                for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none() || p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()) {
                    orphaned.push((p.clone(), node.clone()));
                }
            }
        }
        let mut force = Vec::new();
        for (p, node) in orphaned {
            let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| !n.is_empty());
            if !bound {
                plan.delete.push(p.name_any());
            } else if node_gone(&ctx, &node).await? {
                force.push(p.name_any());
            }
        }
        if plan.create.is_empty() && plan.delete.is_empty() && force.is_empty() && rolling(&ds) {
            // Nothing to add or remove: roll out the template.
            let mut eligible: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
            let mut desired = 0;
            for n in &nodes {
                if should_run(&ds, n).0 {
                    desired += 1;
                    eligible.insert(n.name_any(), by_node.get(&n.name_any()).cloned().unwrap_or_default());
                } else if let Some(pods) = by_node.get(&n.name_any()) {
                    eligible.insert(n.name_any(), pods.clone());
                }
            }
            match rolling_update(&ds, &node_map, &eligible, &hash, desired, now) {
                Ok(p) => plan = p,
                Err(e) => ctx.recorder.publish(ds.as_ref(), EventType::Warning, "InvalidUpdateStrategy", format!("invalid update strategy: {e}")),
            }
        }
        if let Err(e) = sync_nodes(&ctx, &ds, &key, &plan, &force, &hash).await {
            failure = Some(e);
        }
        let live: Vec<String> = owned.iter().filter_map(|p| hash_of(p).map(str::to_string)).collect();
        history::cleanup(&rev_api, &hist.old, spec.revision_history_limit.unwrap_or(10), &live).await?;
    }

    // Status from the cache as it is now.
    let mut desired = 0;
    let (mut current, mut misscheduled, mut ready, mut updated, mut available) = (0, 0, 0, 0, 0);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    for n in &nodes {
        let (run, _) = should_run(&ds, n);
        let mut pods: Vec<Arc<Pod>> = by_node.get(&n.name_any()).cloned().unwrap_or_default();
        if run {
            desired += 1;
            if pods.is_empty() {
                continue;
            }
            current += 1;
            by_age(&mut pods);
            let p = &pods[0];
            if is_ready(p) {
                ready += 1;
                if is_available(p, min_ready, now) {
                    available += 1;
                }
            }
            if hash_of(p) == Some(hash.as_str()) {
                updated += 1;
            }
        } else if !pods.is_empty() {
            misscheduled += 1;
        }
    }
    let old = ds.status.clone().unwrap_or_default();
    let status = DaemonSetStatus {
        current_number_scheduled: current,
        desired_number_scheduled: desired,
        number_misscheduled: misscheduled,
        number_ready: ready,
        updated_number_scheduled: Some(updated),
        number_available: Some(available),
        number_unavailable: Some(desired - available),
        observed_generation: ds.metadata.generation,
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
    };
    if status != old {
        let mut new = (*ds).clone();
        new.status = Some(status);
        write_status(&ctx, &new).await?;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if min_ready > 0 && ready != available {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// May a failed pod on `node` be deleted now? Records the deletion and doubles the delay.
fn backoff_ok(st: &State, key: &str, node: &str) -> bool {
    let Ok(mut m) = st.backoff.lock() else { return true };
    let k = format!("{key}/{node}");
    let now = Instant::now();
    match m.get(&k) {
        Some((at, delay)) if now.duration_since(*at) < *delay => false,
        Some((at, delay)) => {
            // Reset after a long quiet period, as upstream's back-off GC does.
            let next = if now.duration_since(*at) > 2 * BACKOFF_MAX { BACKOFF_START } else { (*delay * 2).min(BACKOFF_MAX) };
            m.insert(k, (now, next));
            true
        }
        None => {
            m.insert(k, (now, BACKOFF_START));
            true
        }
    }
}

/// Is the node really gone (a live read, not the cache)?
async fn node_gone(ctx: &Context<State>, node: &str) -> Result<bool, Error> {
    let api: Api<Node> = Api::all(ctx.writer.clone());
    let list = api.list_metadata(&ListParams::default().fields(&format!("metadata.name={node}"))).await?;
    Ok(list.items.is_empty())
}

async fn write_status(ctx: &Context<State>, ds: &DaemonSet) -> Result<(), Error> {
    let api: Api<DaemonSet> = Api::namespaced(ctx.writer.clone(), &ds.namespace().unwrap_or_default());
    let body = serde_json::to_vec(ds).map_err(|e| Error::Invalid(e.to_string()))?;
    match api.replace_status(&ds.name_any(), &PostParams::default(), body).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Err(Error::Invalid("daemon set changed; retrying".into())),
        Err(e) => Err(e.into()),
    }
}

/// Carry out a plan: create pods (slow-start batches) and delete pods, recording expectations.
async fn sync_nodes(ctx: &Context<State>, ds: &DaemonSet, key: &str, plan: &Plan, force: &[String], hash: &str) -> Result<(), Error> {
    let st = &ctx.state;
    let ns = ds.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.writer.clone(), &ns);
    let mut template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let spec = template.spec.get_or_insert_with(Default::default);
    add_daemon_tolerations(spec);
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.into());
    let mut first_err: Option<Error> = None;
    let create: Vec<&String> = plan.create.iter().take(BURST).collect();
    let mut batch = 1;
    let mut pos = 0;
    while pos < create.len() {
        let end = (pos + batch).min(create.len());
        let mut futs = Vec::new();
        for node in &create[pos..end] {
            let tm = template.metadata.clone().unwrap_or_default();
            let mut spec = template.spec.clone().unwrap_or_default();
            pin_to_node(&mut spec, node);
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(random_name(&ds.name_any())),
                    namespace: Some(ns.clone()),
                    labels: tm.labels,
                    annotations: tm.annotations,
                    finalizers: tm.finalizers,
                    owner_references: Some(vec![controller_ref(ds)]),
                    ..Default::default()
                },
                spec: Some(spec),
                status: None,
            };
            let pname = pod.name_any();
            st.expectations.expect_create(key, &pname);
            let (client, ns) = (ctx.writer.clone(), ns.clone());
            futs.push(async move { (pname, strata_client::create_unread(&client, &ns, &pod).await) });
        }
        let mut failed = false;
        for (pname, r) in futures_util::future::join_all(futs).await {
            match r {
                Ok(_) => ctx.recorder.publish(ds, EventType::Normal, "SuccessfulCreate", format!("Created pod: {pname}")),
                Err(e) => {
                    st.expectations.failed(key, &pname);
                    ctx.recorder.publish(ds, EventType::Warning, "FailedCreate", format!("Error creating: {}", crate::api_message(&e)));
                    failed = true;
                    first_err.get_or_insert(e.into());
                }
            }
        }
        if failed {
            break;
        }
        pos = end;
        batch *= 2;
    }
    let deletes = plan.delete.iter().map(|n| (n, false)).chain(force.iter().map(|n| (n, true))).take(BURST);
    for (pname, force) in deletes {
        let uid = st.pods.store().get(&ObjectRef::new(pname).within(&ns)).and_then(|p| p.metadata.uid.clone());
        st.expectations.expect_delete(key, pname);
        let dp = DeleteParams { preconditions: Some(Preconditions { uid, resource_version: None }), grace_period_seconds: force.then_some(0), ..Default::default() };
        match api.delete(pname, &dp).await {
            Ok(_) => ctx.recorder.publish(ds, EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {pname}")),
            Err(kube::Error::Api(e)) if e.code == 404 => st.expectations.failed(key, pname),
            Err(e) => {
                st.expectations.failed(key, pname);
                ctx.recorder.publish(ds, EventType::Warning, "FailedDelete", format!("Error deleting: {}", crate::api_message(&e)));
                first_err.get_or_insert(e.into());
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn gone_ok<T>(r: Result<T, kube::Error>) -> Result<bool, Error> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_owned_revision_wakes_its_daemonset_when_it_changes_or_goes_not_when_it_comes() {
        use super::{watcher::Event, ControllerRevision, RevisionTrigger};
        let rev = |uid: &str, rv: &str, owned: bool| -> ControllerRevision {
            let refs = if owned { serde_json::json!([{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "d", "uid": "ds", "controller": true}]) } else { serde_json::json!([]) };
            serde_json::from_value(serde_json::json!({"metadata": {"name": uid, "uid": uid, "resourceVersion": rv, "ownerReferences": refs}, "revision": 1})).expect("revision")
        };
        let mut t = RevisionTrigger::default();
        assert!(t.fire(Event::InitApply(rev("a", "1", true))).is_none(), "the initial list");
        assert!(t.fire(Event::Apply(rev("b", "2", true))).is_none(), "an owned revision created");
        assert!(t.fire(Event::Apply(rev("b", "2", true))).is_none(), "the same version again");
        assert!(t.fire(Event::Apply(rev("b", "3", true))).is_some(), "an owned revision updated");
        assert!(t.fire(Event::Apply(rev("a", "4", true))).is_some(), "a listed revision updated");
        assert!(t.fire(Event::Apply(rev("c", "5", false))).is_some(), "an orphan created");
        assert!(t.fire(Event::Delete(rev("b", "3", true))).is_some(), "an owned revision deleted");
        assert!(t.fire(Event::Apply(rev("b", "6", true))).is_none(), "created again after its deletion");
    }

    use super::*;
    use k8s_openapi::api::apps::v1::{DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
    use k8s_openapi::api::core::v1::{NodeSpec, PodCondition, PodStatus, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()), ..Default::default() },
            spec: Some(NodeSpec { taints: Some(taints.iter().map(|(k, e)| Taint { key: k.to_string(), effect: e.to_string(), ..Default::default() }).collect()), ..Default::default() }),
            status: None,
        })
    }

    fn ds(spec: PodSpec, strategy: Option<DaemonSetUpdateStrategy>) -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta { name: Some("d".into()), namespace: Some("ns".into()), ..Default::default() },
            spec: Some(DaemonSetSpec {
                selector: LabelSelector { match_labels: Some([("app".to_string(), "d".to_string())].into()), ..Default::default() },
                template: PodTemplateSpec { metadata: None, spec: Some(spec) },
                update_strategy: strategy,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
        let mut spec = PodSpec::default();
        pin_to_node(&mut spec, node);
        Arc::new(Pod {
            metadata: ObjectMeta { name: Some(name.into()), labels: Some([(HASH_LABEL.to_string(), hash.to_string())].into()), ..Default::default() },
            spec: Some(spec),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition { type_: "Ready".into(), status: if ready { "True" } else { "False" }.into(), last_transition_time: Some(Time(chrono::Utc::now() - chrono::Duration::seconds(60))), ..Default::default() }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn eligibility_follows_selectors_affinity_and_taints() {
        let plain = ds(PodSpec::default(), None);
        assert_eq!(should_run(&plain, &node("a", &[], &[])), (true, true));
        // Taints the daemon tolerations cover do not keep it off.
        assert_eq!(should_run(&plain, &node("a", &[], &[("node.kubernetes.io/unschedulable", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoExecute")])), (true, true));
        // An untolerated NoSchedule taint: not placed, but an existing pod may stay.
        assert_eq!(should_run(&plain, &node("a", &[], &[("dedicated", "NoSchedule")])), (false, true));
        // An untolerated NoExecute taint: neither.
        assert_eq!(should_run(&plain, &node("a", &[], &[("dedicated", "NoExecute")])), (false, false));
        let tolerant = ds(PodSpec { tolerations: Some(vec![Toleration { key: Some("dedicated".into()), operator: Some("Exists".into()), ..Default::default() }]), ..Default::default() }, None);
        assert_eq!(should_run(&tolerant, &node("a", &[], &[("dedicated", "NoExecute")])), (true, true));
        let selective = ds(PodSpec { node_selector: Some([("disk".to_string(), "ssd".to_string())].into()), ..Default::default() }, None);
        assert_eq!(should_run(&selective, &node("a", &[], &[])), (false, false));
        assert_eq!(should_run(&selective, &node("a", &[("disk", "ssd")], &[])), (true, true));
        let named = ds(PodSpec { node_name: Some("b".into()), ..Default::default() }, None);
        assert_eq!(should_run(&named, &node("a", &[], &[])), (false, false));
        let mut aff = PodSpec::default();
        pin_to_node(&mut aff, "b");
        let pinned = ds(aff, None);
        assert_eq!(should_run(&pinned, &node("a", &[], &[])), (false, false));
        assert_eq!(should_run(&pinned, &node("b", &[], &[])), (true, true));
    }

    #[test]
    fn daemon_tolerations_are_upstreams() {
        let mut spec = PodSpec { tolerations: Some(vec![Toleration { key: Some("node.kubernetes.io/not-ready".into()), operator: Some("Exists".into()), effect: Some("NoExecute".into()), toleration_seconds: Some(5), value: None }]), ..Default::default() };
        add_daemon_tolerations(&mut spec);
        let t = spec.tolerations.unwrap_or_default();
        assert_eq!(t.len(), 6, "{t:?}");
        assert!(t.iter().all(|t| t.operator.as_deref() == Some("Exists") && t.toleration_seconds.is_none()), "replaced, not duplicated: {t:?}");
        let keys: Vec<(&str, &str)> = t.iter().map(|t| (t.key.as_deref().unwrap_or(""), t.effect.as_deref().unwrap_or(""))).collect();
        for want in [("node.kubernetes.io/unreachable", "NoExecute"), ("node.kubernetes.io/disk-pressure", "NoSchedule"), ("node.kubernetes.io/memory-pressure", "NoSchedule"), ("node.kubernetes.io/pid-pressure", "NoSchedule"), ("node.kubernetes.io/unschedulable", "NoSchedule")] {
            assert!(keys.contains(&want), "{want:?} in {keys:?}");
        }
    }

    #[test]
    fn manage_creates_on_new_nodes_and_removes_extras_and_misfits() {
        let d = ds(PodSpec::default(), None);
        let nodes = vec![node("a", &[], &[]), node("b", &[], &[]), node("c", &[], &[("x", "NoExecute")])];
        let mut by_node = BTreeMap::new();
        by_node.insert("b".to_string(), vec![pod("b1", "b", "h", true), pod("b2", "b", "h", true)]);
        by_node.insert("c".to_string(), vec![pod("c1", "c", "h", true)]);
        let (plan, _) = manage(&d, &nodes, &by_node, "h", chrono::Utc::now(), |_| true);
        assert_eq!(plan.create, vec!["a".to_string()]);
        assert_eq!(plan.delete.len(), 2, "{plan:?}");
        assert!(plan.delete.contains(&"c1".to_string()));
        assert!(plan.delete.iter().any(|n| n == "b1" || n == "b2"));
    }

    #[test]
    fn rolling_update_respects_max_unavailable_and_max_surge() {
        let strategy = |unavail: i32, surge: i32| Some(DaemonSetUpdateStrategy { type_: Some("RollingUpdate".into()), rolling_update: Some(RollingUpdateDaemonSet { max_unavailable: Some(IntOrString::Int(unavail)), max_surge: Some(IntOrString::Int(surge)) }) });
        let nodes: HashMap<String, Arc<Node>> = ["a", "b", "c"].iter().map(|n| (n.to_string(), node(n, &[], &[]))).collect();
        let mut by_node = BTreeMap::new();
        for n in ["a", "b", "c"] {
            by_node.insert(n.to_string(), vec![pod(&format!("{n}-old"), n, "old", true)]);
        }
        let now = chrono::Utc::now();
        // maxUnavailable 1: one old pod goes at a time.
        let plan = rolling_update(&ds(PodSpec::default(), strategy(1, 0)), &nodes, &by_node, "new", 3, now).expect("plan");
        assert_eq!((plan.delete.len(), plan.create.len()), (1, 0), "{plan:?}");
        // A new pod not yet available on one node: nothing more goes.
        by_node.insert("a".to_string(), vec![pod("a-new", "a", "new", false)]);
        let plan = rolling_update(&ds(PodSpec::default(), strategy(1, 0)), &nodes, &by_node, "new", 3, now).expect("plan");
        assert_eq!(plan, Plan::default());
        // maxSurge 1: a new pod beside an old one first, the old one deleted once it is available.
        let mut by_node = BTreeMap::new();
        for n in ["a", "b", "c"] {
            by_node.insert(n.to_string(), vec![pod(&format!("{n}-old"), n, "old", true)]);
        }
        let plan = rolling_update(&ds(PodSpec::default(), strategy(0, 1)), &nodes, &by_node, "new", 3, now).expect("plan");
        assert_eq!((plan.create.len(), plan.delete.len()), (1, 0), "{plan:?}");
        by_node.get_mut("a").expect("a").push(pod("a-new", "a", "new", true));
        let plan = rolling_update(&ds(PodSpec::default(), strategy(0, 1)), &nodes, &by_node, "new", 3, now).expect("plan");
        assert_eq!(plan.delete, vec!["a-old".to_string()]);
        assert_eq!(plan.create.len(), 1, "the next node surges: {plan:?}");
    }
}
