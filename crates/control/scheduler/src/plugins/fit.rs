//! NodeResourcesFit (requests against allocatable, pod count) and its LeastAllocated score,
//! and NodeResourcesBalancedAllocation, as upstream computes them.

use super::{Reasons, Rejection};
use crate::info::{NodeInfo, PodInfo};
use crate::resources::Resources;

pub const MAX_SCORE: i64 = 100;

/// `extra`: requests of pods nominated to this node with at least the pod's priority (they
/// count as if already there), and how many.
pub fn filter(pod: &PodInfo, node: &NodeInfo, extra: Option<&(Resources, i64)>) -> Result<(), Rejection> {
    let mut reasons = Vec::new();
    let mut requested = node.requested.clone();
    let mut count = node.pods.len() as i64;
    if let Some((r, n)) = extra {
        requested.add(r);
        count += n;
    }
    if count + 1 > node.allocatable.pods {
        reasons.push("Too many pods".to_string());
    }
    let want = &pod.requests;
    if !want.is_zero() {
        let alloc = &node.allocatable;
        if want.milli_cpu > 0 && want.milli_cpu > alloc.milli_cpu - requested.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if want.memory > 0 && want.memory > alloc.memory - requested.memory {
            reasons.push("Insufficient memory".into());
        }
        if want.ephemeral_storage > 0 && want.ephemeral_storage > alloc.ephemeral_storage - requested.ephemeral_storage {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, v) in &want.scalar {
            if *v > 0 && *v > alloc.scalar.get(name).copied().unwrap_or(0) - requested.scalar.get(name).copied().unwrap_or(0) {
                reasons.push(format!("Insufficient {name}"));
            }
        }
    }
    match Reasons::from_vec(reasons) {
        None => Ok(()),
        Some(reasons) => Err(Rejection { plugin: "NodeResourcesFit", unresolvable: false, reasons }),
    }
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_SCORE / capacity
}

/// LeastAllocated over cpu and memory (weight 1 each), with the scoring defaults for
/// containers that request nothing.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let alloc = &node.allocatable;
    let mut score = 0;
    let mut weights = 0;
    for (a, r) in [(alloc.milli_cpu, node.non_zero_requested.milli_cpu + pod.non_zero.milli_cpu), (alloc.memory, node.non_zero_requested.memory + pod.non_zero.memory)] {
        if a == 0 {
            continue;
        }
        score += least_requested(r, a);
        weights += 1;
    }
    if weights == 0 {
        0
    } else {
        score / weights
    }
}

/// BalancedAllocation: 100 × (1 − the standard deviation of the cpu and memory fractions the
/// node would have requested). `None` for a pod that requests nothing (upstream skips it).
pub fn balanced(pod: &PodInfo, node: &NodeInfo) -> Option<i64> {
    if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
        return None;
    }
    let alloc = &node.allocatable;
    let mut fractions = Vec::with_capacity(2);
    for (a, r) in [(alloc.milli_cpu, node.requested.milli_cpu + pod.requests.milli_cpu), (alloc.memory, node.requested.memory + pod.requests.memory)] {
        if a == 0 {
            continue;
        }
        fractions.push((r as f64 / a as f64).min(1.0));
    }
    let std = match fractions.as_slice() {
        [a, b] => ((a - b) / 2.0).abs(),
        _ => 0.0,
    };
    Some(((1.0 - std) * MAX_SCORE as f64) as i64)
}
