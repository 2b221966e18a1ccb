//! The pod garbage collector (kube-controller-manager's `podgc`): every 20 s it force-deletes
//! (grace 0, the pod's uid as precondition)
//! - terminated pods (phase Succeeded or Failed) above `--terminated-pod-gc-threshold` (12500 by
//!   default; 0 turns this off), evicted ones first, then the oldest;
//! - terminating pods bound to a node that is not Ready and has the
//!   `node.kubernetes.io/out-of-service` taint;
//! - pods bound to a node that no longer exists: missing from the cache for 40 s (the
//!   quarantine, so a node being created is not taken for gone) and then confirmed missing by a
//!   GET, with a `DisruptionTarget` condition (`DeletionByPodGC`);
//! - terminating pods that were never scheduled.
//!
//! A pod that is not yet terminal is first marked Failed (a server-side apply of `pods/status`
//! by the field manager `PodGC`), since no kubelet will ever do it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use strata_client::lean;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt};
use kube::ResourceExt;

use crate::informer::Shared;
use crate::{Clients, Error};

pub const IDENTITY: &str = "pod-garbage-collector";
/// How often the collector looks (upstream's `gcCheckPeriod`).
const CHECK_PERIOD: Duration = Duration::from_secs(20);
/// How long a node must be missing before its pods are taken for orphans (upstream's
/// `quarantineTime`).
const QUARANTINE: Duration = Duration::from_secs(40);
const FIELD_MANAGER: &str = "PodGC";
const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// kube-controller-manager's `--terminated-pod-gc-threshold`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Terminated pods kept before the oldest are deleted; 0 or less: never.
    pub terminated_pod_threshold: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { terminated_pod_threshold: 12500 }
    }
}

/// Why a pod is collected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Terminated,
    OutOfService,
    Orphaned,
    UnscheduledTerminating,
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn node_name(p: &Pod) -> &str {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

fn terminated(p: &Pod) -> bool {
    !matches!(phase(p), "Pending" | "Running" | "Unknown" | "")
}

fn evicted(p: &Pod) -> bool {
    phase(p) == "Failed" && p.status.as_ref().and_then(|s| s.reason.as_deref()) == Some("Evicted")
}

fn node_ready(n: &Node) -> bool {
    n.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The terminated pods over `threshold`: evicted first, then by creation time (name breaks
/// ties), as upstream's `byEvictionAndCreationTimestamp`.
pub fn terminated_over_threshold(pods: &[Arc<Pod>], threshold: i64) -> Vec<Arc<Pod>> {
    if threshold <= 0 {
        return Vec::new();
    }
    let mut done: Vec<Arc<Pod>> = pods.iter().filter(|p| terminated(p)).cloned().collect();
    let excess = done.len().saturating_sub(usize::try_from(threshold).unwrap_or(usize::MAX));
    if excess == 0 {
        return Vec::new();
    }
    done.sort_by(|a, b| {
        evicted(b).cmp(&evicted(a)).then_with(|| a.metadata.creation_timestamp.as_ref().map(|t| t.0).cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))).then_with(|| a.name_any().cmp(&b.name_any()))
    });
    done.truncate(excess);
    done
}

/// One pass's decisions from the caches, given the nodes confirmed gone: every pod to collect
/// with why, each once (the first reason in upstream's order).
pub fn collect(pods: &[Arc<Pod>], nodes: &HashMap<String, Arc<Node>>, threshold: i64, gone: &BTreeSet<String>) -> Vec<(Arc<Pod>, Reason)> {
    let mut out: Vec<(Arc<Pod>, Reason)> = terminated_over_threshold(pods, threshold).into_iter().map(|p| (p, Reason::Terminated)).collect();
    let push = |out: &mut Vec<(Arc<Pod>, Reason)>, p: &Arc<Pod>, r: Reason| {
        if !out.iter().any(|(q, _)| q.metadata.uid == p.metadata.uid) {
            out.push((p.clone(), r));
        }
    };
    for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some()) {
        let out_of_service = nodes.get(node_name(p)).is_some_and(|n| !node_ready(n) && n.spec.as_ref().and_then(|s| s.taints.as_ref()).into_iter().flatten().any(|t| t.key == OUT_OF_SERVICE_TAINT));
        if out_of_service {
            push(&mut out, p, Reason::OutOfService);
        }
    }
    for p in pods.iter().filter(|p| gone.contains(node_name(p))) {
        push(&mut out, p, Reason::Orphaned);
    }
    for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some() && node_name(p).is_empty()) {
        push(&mut out, p, Reason::UnscheduledTerminating);
    }
    out
}

/// The names of nodes that pods are bound to but the cache lacks, put in (or kept in)
/// `quarantine` from `now`; nodes back in the cache leave it. Returns those missing for at least
/// [`QUARANTINE`].
pub fn quarantined(pods: &[Arc<Pod>], nodes: &HashMap<String, Arc<Node>>, quarantine: &mut HashMap<String, Instant>, now: Instant) -> BTreeSet<String> {
    let missing: BTreeSet<String> = pods.iter().map(|p| node_name(p)).filter(|n| !n.is_empty() && !nodes.contains_key(*n)).map(str::to_string).collect();
    quarantine.retain(|n, _| missing.contains(n));
    for n in &missing {
        quarantine.entry(n.clone()).or_insert(now);
    }
    quarantine.iter().filter(|(_, since)| now.duration_since(**since) >= QUARANTINE).map(|(n, _)| n.clone()).collect()
}

pub async fn run(clients: Clients, settings: Settings, shared_pods: Shared<Pod>) -> Result<(), Error> {
    let root = clients.root.clone();
    let pods = shared_pods.store().clone();
    let (nodes, node_writer) = reflector::store::<Node>();
    let node_stream = reflector::reflector(node_writer, lean::watcher(Api::<Node>::all(root), crate::watch_config())).default_backoff().touched_objects().for_each(crate::log_watch_failures(IDENTITY, "Node"));
    let writer = clients.writer(IDENTITY);
    let gc = async move {
        let mut quarantine = HashMap::new();
        let mut tick = tokio::time::interval(CHECK_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !crate::synced(&pods) || !crate::synced(&nodes) {
                continue;
            }
            pass(&writer, &pods, &nodes, &settings, &mut quarantine).await;
        }
    };
    tokio::select! {
        _ = node_stream => {}
        _ = gc => {}
    }
    Ok(())
}

async fn pass(writer: &kube::Client, pods: &Store<Pod>, nodes: &Store<Node>, settings: &Settings, quarantine: &mut HashMap<String, Instant>) {
    let all = pods.state();
    let by_name: HashMap<String, Arc<Node>> = nodes.state().into_iter().map(|n| (n.name_any(), n)).collect();
    // A node missing for the quarantine is confirmed gone by the API server itself.
    let mut gone = BTreeSet::new();
    let node_api: Api<Node> = Api::all(writer.clone());
    for n in quarantined(&all, &by_name, quarantine, Instant::now()) {
        match node_api.get_opt(&n).await {
            Ok(None) => {
                gone.insert(n);
            }
            Ok(Some(_)) => {}
            Err(e) => tracing::warn!(node = %n, error = %e, "pod GC: checking whether a node exists"),
        }
    }
    for (pod, reason) in collect(&all, &by_name, settings.terminated_pod_threshold, &gone) {
        match delete(writer, &pod, reason).await {
            Ok(()) => tracing::info!(pod = %crate::key(pod.as_ref()), ?reason, "pod GC: force-deleted"),
            Err(e) => tracing::warn!(pod = %crate::key(pod.as_ref()), ?reason, error = %e, "pod GC: deleting"),
        }
    }
}

/// Mark a pod that is not terminal Failed (with a DisruptionTarget condition for an orphan),
/// then delete it with grace 0.
async fn delete(writer: &kube::Client, pod: &Pod, reason: Reason) -> Result<(), Error> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(writer.clone(), &ns);
    if !terminated(pod) {
        let mut status = serde_json::json!({ "phase": "Failed" });
        if reason == Reason::Orphaned {
            status["conditions"] = serde_json::json!([{
                "type": "DisruptionTarget",
                "status": "True",
                "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists",
                "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }]);
        }
        let apply = serde_json::json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "namespace": ns }, "status": status });
        match api.patch_status(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&apply)).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let dp = DeleteParams { grace_period_seconds: Some(0), preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }), ..Default::default() };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, created: i64, node: &str, phase: &str, reason: Option<&str>, deleting: bool) -> Arc<Pod> {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"), "creationTimestamp": chrono::DateTime::from_timestamp(created, 0).expect("time").to_rfc3339()},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "reason": reason},
        });
        if deleting {
            v["metadata"]["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
        }
        Arc::new(serde_json::from_value(v).expect("pod"))
    }

    fn node(name: &str, ready: bool, taint: Option<&str>) -> (String, Arc<Node>) {
        let v = serde_json::json!({
            "metadata": {"name": name},
            "spec": {"taints": taint.map(|t| vec![serde_json::json!({"key": t, "effect": "NoExecute"})]).unwrap_or_default()},
            "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
        });
        (name.to_string(), Arc::new(serde_json::from_value(v).expect("node")))
    }

    fn names(v: &[(Arc<Pod>, Reason)]) -> Vec<(String, Reason)> {
        v.iter().map(|(p, r)| (p.name_any(), *r)).collect()
    }

    #[test]
    fn terminated_pods_over_the_threshold_evicted_then_oldest() {
        let pods = vec![
            pod("b", 10, "n", "Succeeded", None, false),
            pod("a", 10, "n", "Failed", None, false),
            pod("c", 5, "n", "Succeeded", None, false),
            pod("d", 30, "n", "Failed", Some("Evicted"), false),
            pod("e", 1, "n", "Running", None, false),
        ];
        let nodes: HashMap<_, _> = [node("n", true, None)].into_iter().collect();
        let got = names(&collect(&pods, &nodes, 2, &BTreeSet::new()));
        assert_eq!(got, [("d".to_string(), Reason::Terminated), ("c".to_string(), Reason::Terminated)]);
        assert!(collect(&pods, &nodes, 4, &BTreeSet::new()).is_empty());
        assert!(collect(&pods, &nodes, 0, &BTreeSet::new()).is_empty(), "0 turns it off");
    }

    #[test]
    fn orphans_out_of_service_and_unscheduled_terminating() {
        let pods = vec![
            pod("orphan", 1, "gone", "Running", None, false),
            pod("oos", 1, "broken", "Running", None, true),
            pod("oos-not-deleting", 1, "broken", "Running", None, false),
            pod("not-ready-only", 1, "sick", "Running", None, true),
            pod("unscheduled", 1, "", "Pending", None, true),
            pod("pending", 1, "", "Pending", None, false),
            pod("fine", 1, "n", "Running", None, true),
        ];
        let nodes: HashMap<_, _> = [node("n", true, None), node("broken", false, Some(OUT_OF_SERVICE_TAINT)), node("sick", false, None)].into_iter().collect();
        let gone: BTreeSet<String> = ["gone".to_string()].into_iter().collect();
        let got = names(&collect(&pods, &nodes, 12500, &gone));
        assert_eq!(got, [("oos".to_string(), Reason::OutOfService), ("orphan".to_string(), Reason::Orphaned), ("unscheduled".to_string(), Reason::UnscheduledTerminating)]);
    }

    #[test]
    fn a_missing_node_is_quarantined_first() {
        let pods = vec![pod("p", 1, "gone", "Running", None, false), pod("q", 1, "n", "Running", None, false)];
        let nodes: HashMap<_, _> = [node("n", true, None)].into_iter().collect();
        let mut q = HashMap::new();
        let t0 = Instant::now();
        assert!(quarantined(&pods, &nodes, &mut q, t0).is_empty());
        assert!(quarantined(&pods, &nodes, &mut q, t0 + Duration::from_secs(39)).is_empty());
        assert_eq!(quarantined(&pods, &nodes, &mut q, t0 + QUARANTINE).into_iter().collect::<Vec<_>>(), ["gone"]);
        // The node shows up: out of quarantine.
        let back: HashMap<_, _> = [node("n", true, None), node("gone", true, None)].into_iter().collect();
        assert!(quarantined(&pods, &back, &mut q, t0 + QUARANTINE).is_empty());
        assert!(q.is_empty());
    }
}
