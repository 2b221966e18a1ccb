//! The per-node filters and scores that look at one node and the pod only: NodeUnschedulable,
//! NodeName, TaintToleration, NodeAffinity (nodeSelector and required/preferred node
//! affinity), NodePorts.
//!
//! `strata.dev/kvm`: a pod (or the pod of a VM) that needs KVM says so with the node selector
//! `strata.dev/kvm: "true"`; nodes whose KVM probe succeeds carry that label, so NodeAffinity
//! alone keeps such pods off nodes without it (reason "node(s) didn't match Pod's node
//! affinity/selector", as for any selector).

use k8s_openapi::api::core::v1::{Taint, Toleration};

use super::Rejection;
use crate::info::{NodeInfo, PodInfo};
use crate::labels;

pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Upstream's `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect.as_deref().is_some_and(|e| !e.is_empty() && e != taint.effect) {
        return false;
    }
    if t.key.as_deref().is_some_and(|k| !k.is_empty() && k != taint.key) {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

pub fn unschedulable(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    if !node.unschedulable {
        return Ok(());
    }
    let taint = Taint { key: UNSCHEDULABLE_TAINT.into(), effect: "NoSchedule".into(), ..Default::default() };
    if pod.tolerations.iter().any(|t| tolerates(t, &taint)) {
        return Ok(());
    }
    Err(Rejection::unresolvable("NodeUnschedulable", "node(s) were unschedulable"))
}

pub fn node_name(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    let wanted = pod.spec().and_then(|s| s.node_name.as_deref()).unwrap_or("");
    if wanted.is_empty() || wanted == node.name {
        return Ok(());
    }
    Err(Rejection::unresolvable("NodeName", "node(s) didn't match the requested node name"))
}

pub fn taints(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    for taint in &node.taints {
        if taint.effect != "NoSchedule" && taint.effect != "NoExecute" {
            continue;
        }
        if !pod.tolerations.iter().any(|t| tolerates(t, taint)) {
            let value = taint.value.as_deref().unwrap_or("");
            return Err(Rejection::unresolvable("TaintToleration", format!("node(s) had untolerated taint {{{}: {value}}}", taint.key)));
        }
    }
    Ok(())
}

/// The number of `PreferNoSchedule` taints the pod does not tolerate (lower is better).
pub fn taints_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let tols: Vec<&Toleration> = pod.tolerations.iter().filter(|t| t.effect.as_deref().is_none_or(|e| e.is_empty() || e == "PreferNoSchedule")).collect();
    node.taints.iter().filter(|taint| taint.effect == "PreferNoSchedule" && !tols.iter().any(|t| tolerates(t, taint))).count() as i64
}

/// nodeSelector and required node affinity (upstream's `GetRequiredNodeAffinity(pod).Match`).
pub fn required_affinity_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    let Some(spec) = pod.spec() else { return true };
    if let Some(sel) = &spec.node_selector {
        if sel.iter().any(|(k, v)| node.labels.get(k) != Some(v)) {
            return false;
        }
    }
    if let Some(req) = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref()) {
        return labels::node_selector_matches(req, &node.name, &node.labels);
    }
    true
}

pub fn affinity(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    if required_affinity_matches(pod, node) {
        return Ok(());
    }
    Err(Rejection::unresolvable("NodeAffinity", "node(s) didn't match Pod's node affinity/selector"))
}

/// The summed weights of the preferred node affinity terms the node matches.
pub fn affinity_score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let Some(prefs) = pod.spec().and_then(|s| s.affinity.as_ref()).and_then(|a| a.node_affinity.as_ref()).and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref()) else {
        return 0;
    };
    prefs.iter().filter(|p| p.weight != 0 && labels::term_matches(&p.preference, &node.name, &node.labels)).map(|p| p.weight as i64).sum()
}

pub fn ports(pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    if pod.ports.iter().any(|p| node.used_ports.iter().any(|u| u.conflicts(p))) {
        return Err(Rejection::unschedulable("NodePorts", "node(s) didn't have free ports for the requested pod ports"));
    }
    Ok(())
}
