//! Preemption (upstream's DefaultPreemption PostFilter): when no node fits a pod, find nodes
//! where evicting pods of lower priority would make it fit, keep as many of those pods as
//! still allow it (those whose eviction would violate a PodDisruptionBudget first, then the
//! rest, each highest priority first), and pick the node whose victims matter least (fewest
//! budget violations first). Pure: the caller deletes the victims and nominates the node.

use std::sync::Arc;

use k8s_openapi::api::policy::v1::PodDisruptionBudget;

use crate::cache::Cache;
use crate::info::PodInfo;
use crate::labels::Selector;
use crate::plugins::{histogram, Cycle, FitError};

#[derive(Debug)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<Arc<PodInfo>>,
    /// Pods of lower priority nominated to the same node, whose nomination is cleared.
    pub cleared_nominations: Vec<Arc<PodInfo>>,
}

/// When the pod started; a pod not started yet (assumed, or bound but not running) counts as
/// starting now, as upstream's `GetPodStartTime`, i.e. later than every started pod.
fn start_time(p: &PodInfo) -> Option<k8s_openapi::chrono::DateTime<k8s_openapi::chrono::Utc>> {
    p.pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0)
}

/// Orders start times with "not started" (None) last.
fn started_before(a: Option<k8s_openapi::chrono::DateTime<k8s_openapi::chrono::Utc>>, b: Option<k8s_openapi::chrono::DateTime<k8s_openapi::chrono::Utc>>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(&b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// Upstream's `PodEligibleToPreemptOthers`: the reason a pod may not preempt, if any.
fn not_eligible(cache: &Cache, pod: &PodInfo) -> Option<String> {
    let spec = pod.spec()?;
    if spec.preemption_policy.as_deref() == Some("Never") {
        return Some("not eligible due to preemptionPolicy=Never.".into());
    }
    let nominated = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty())?;
    let node = cache.node(nominated)?;
    if node.pods.iter().any(|p| p.terminating && p.priority < pod.priority) {
        return Some("not eligible due to a terminating pod on the nominated node.".into());
    }
    None
}

/// Upstream's `filterPodsWithPDBViolation`: `pods` (in order) split into those whose eviction
/// would violate a budget and the others. Each budget of the pod's namespace whose selector
/// (not empty: an empty one matches nothing) matches the pod spends one of its
/// `disruptionsAllowed`, unless the pod is already among its `disruptedPods`; a pod that takes
/// one below zero is violating.
pub fn split_by_budgets(pods: Vec<Arc<PodInfo>>, pdbs: &[Arc<PodDisruptionBudget>]) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let selectors: Vec<Option<Selector>> = pdbs.iter().map(|b| b.spec.as_ref().and_then(|s| s.selector.as_ref()).map(Selector::parse).filter(|s| !s.is_empty())).collect();
    let mut allowed: Vec<i32> = pdbs.iter().map(|b| b.status.as_ref().map_or(0, |s| s.disruptions_allowed)).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for p in pods {
        let mut violates = false;
        for (i, b) in pdbs.iter().enumerate() {
            if b.metadata.namespace.as_deref() != Some(p.namespace.as_str()) {
                continue;
            }
            let Some(sel) = &selectors[i] else { continue };
            if !sel.matches(&p.labels) {
                continue;
            }
            if b.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()).is_some_and(|d| d.contains_key(&p.name)) {
                continue;
            }
            allowed[i] -= 1;
            if allowed[i] < 0 {
                violates = true;
            }
        }
        if violates {
            violating.push(p);
        } else {
            fine.push(p);
        }
    }
    (violating, fine)
}

/// Try to make room for `pod`, with the cluster's PodDisruptionBudgets. `Err` is the
/// `preemption: ...` message for the FitError.
pub fn preempt(cache: &Cache, pod: &PodInfo, fit: &FitError, pdbs: &[Arc<PodDisruptionBudget>]) -> Result<Preemption, String> {
    if let Some(why) = not_eligible(cache, pod) {
        return Err(format!("preemption: {why}"));
    }
    let mut cycle = Cycle::new(cache, pod);
    let mut reasons: Vec<String> = Vec::new();
    let mut candidates: Vec<(String, Vec<Arc<PodInfo>>, usize)> = Vec::new();
    for (name, rejection) in &fit.statuses {
        if rejection.unresolvable {
            reasons.push("Preemption is not helpful for scheduling".into());
            continue;
        }
        let Some(node) = cache.node(name) else { continue };
        let mut trial = node.clone();
        let mut lower: Vec<Arc<PodInfo>> = node.pods.iter().filter(|p| p.priority < pod.priority).cloned().collect();
        if lower.is_empty() {
            reasons.push("No preemption victims found for incoming pod".into());
            continue;
        }
        for v in &lower {
            trial.remove_pod(&v.uid);
            cycle.interpod.update(cache, pod, v, node, -1);
            cycle.spread.update(pod, v, node, -1);
        }
        if let Err(r) = cycle.filter(&trial) {
            reasons.extend(r.reasons.iter().map(str::to_string));
            for v in &lower {
                cycle.interpod.update(cache, pod, v, node, 1);
                cycle.spread.update(pod, v, node, 1);
            }
            continue;
        }
        // Reprieve the most important pods first: higher priority, then earlier start; those
        // a budget protects before the others.
        lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| started_before(start_time(a), start_time(b))));
        let (violating, fine) = split_by_budgets(lower, pdbs);
        let mut victims = Vec::new();
        let mut violations = 0;
        for (protected, group) in [(true, violating), (false, fine)] {
            for v in group {
                trial.add_pod(v.clone());
                cycle.interpod.update(cache, pod, &v, node, 1);
                cycle.spread.update(pod, &v, node, 1);
                if cycle.filter(&trial).is_err() {
                    trial.remove_pod(&v.uid);
                    cycle.interpod.update(cache, pod, &v, node, -1);
                    cycle.spread.update(pod, &v, node, -1);
                    victims.push(v);
                    violations += usize::from(protected);
                }
            }
        }
        // Restore the what-if state for the next node.
        for v in &victims {
            cycle.interpod.update(cache, pod, v, node, 1);
            cycle.spread.update(pod, v, node, 1);
        }
        candidates.push((name.clone(), victims, violations));
    }
    // The node whose victims matter least: fewest budget violations, lowest highest priority,
    // lowest priority sum, fewest victims, then (upstream's last criterion) the latest earliest
    // start among its highest-priority victims, so long-running pods are spared; the first
    // such node in the filter's order on a full tie.
    let key = |v: &[Arc<PodInfo>], violations: usize| {
        let highest = v.iter().map(|p| p.priority).max().unwrap_or(i32::MIN);
        let sum: i64 = v.iter().map(|p| p.priority as i64 + i32::MAX as i64 + 1).sum();
        (violations, highest, sum, v.len())
    };
    let earliest_of_highest = |v: &[Arc<PodInfo>]| {
        let highest = v.iter().map(|p| p.priority).max();
        v.iter().filter(|p| Some(p.priority) == highest).map(|p| start_time(p)).min_by(|a, b| started_before(*a, *b)).flatten()
    };
    let mut best: Option<(String, Vec<Arc<PodInfo>>, usize)> = None;
    for c in candidates {
        let better = match &best {
            None => true,
            Some(b) => match key(&c.1, c.2).cmp(&key(&b.1, b.2)) {
                std::cmp::Ordering::Less => true,
                std::cmp::Ordering::Greater => false,
                std::cmp::Ordering::Equal => started_before(earliest_of_highest(&c.1), earliest_of_highest(&b.1)) == std::cmp::Ordering::Greater,
            },
        };
        if better {
            best = Some(c);
        }
    }
    let Some((node, victims, _)) = best else {
        let n = fit.num_nodes;
        return Err(format!("preemption: 0/{n} nodes are available: {}.", histogram(reasons.into_iter()).join(", ")));
    };
    let cleared_nominations = cache.nominated.values().filter(|(n, p)| *n == node && p.priority < pod.priority && p.uid != pod.uid).map(|(_, p)| p.clone()).collect();
    Ok(Preemption { node, victims, cleared_nominations })
}
