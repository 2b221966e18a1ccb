//! The scheduling framework: filter plugins in upstream's order, score plugins with upstream's
//! weights and normalizations, the search over nodes (round-robin start, stop after enough
//! feasible nodes as `percentageOfNodesToScore` does) and the `FitError` message that
//! `kubectl describe` shows. Pure functions of the [`Cache`] and the pod.

pub mod fit;
pub mod interpod;
pub mod node;
pub mod spread;
pub mod volume;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;

use crate::cache::Cache;
use crate::info::{NodeInfo, PodInfo};
use crate::resources::Resources;

/// Why one node cannot take the pod: the first filter plugin that refused, its reasons, and
/// whether removing pods could ever change that (`unresolvable`: no).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    pub plugin: &'static str,
    pub unresolvable: bool,
    pub reasons: Reasons,
}

/// A rejection's reasons. Most filters refuse with one fixed reason, and a pod's search can
/// refuse thousands of nodes, so the first reason is a `Cow` (no allocation for a fixed one)
/// and only further ones are owned.
#[derive(Clone, Debug, PartialEq)]
pub struct Reasons {
    first: Cow<'static, str>,
    rest: Vec<String>,
}

impl Reasons {
    pub fn one(reason: impl Into<Cow<'static, str>>) -> Reasons {
        Reasons { first: reason.into(), rest: Vec::new() }
    }

    /// `None` for no reasons.
    pub fn from_vec(mut all: Vec<String>) -> Option<Reasons> {
        if all.is_empty() {
            return None;
        }
        let first = all.remove(0);
        Some(Reasons { first: first.into(), rest: all })
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.first.as_ref()).chain(self.rest.iter().map(String::as_str))
    }
}

impl Rejection {
    pub fn unresolvable(plugin: &'static str, reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection { plugin, unresolvable: true, reasons: Reasons::one(reason) }
    }
    pub fn unschedulable(plugin: &'static str, reason: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection { plugin, unresolvable: false, reasons: Reasons::one(reason) }
    }
}

/// Everything computed once per pod before the nodes are filtered.
pub struct Cycle<'a> {
    pub cache: &'a Cache,
    pub pod: &'a PodInfo,
    pub interpod: interpod::PreFilter,
    pub spread: spread::PreFilter,
    /// Requests (and count) of pods nominated to each node with at least this pod's priority.
    pub nominated: HashMap<String, (Resources, i64)>,
    /// VolumeBinding's Filter, for a pod whose claims tie it to nodes (`None`: nothing to check).
    pub volumes: Option<&'a volume::VolumeCheck>,
}

impl<'a> Cycle<'a> {
    pub fn new(cache: &'a Cache, pod: &'a PodInfo) -> Cycle<'a> {
        let mut nominated: HashMap<String, (Resources, i64)> = HashMap::new();
        for (uid, (node, p)) in &cache.nominated {
            if *uid != pod.uid && p.priority >= pod.priority {
                let e = nominated.entry(node.clone()).or_default();
                e.0.add(&p.requests);
                e.1 += 1;
            }
        }
        Cycle { cache, pod, interpod: interpod::prefilter(cache, pod), spread: spread::prefilter(cache, pod), nominated, volumes: None }
    }

    /// Run the filters in upstream's order; the first refusal wins.
    pub fn filter(&self, n: &NodeInfo) -> Result<(), Rejection> {
        let pod = self.pod;
        node::unschedulable(pod, n)?;
        node::node_name(pod, n)?;
        node::taints(pod, n)?;
        node::affinity(pod, n)?;
        node::ports(pod, n)?;
        fit::filter(pod, n, self.nominated.get(&n.name))?;
        if let Some(v) = self.volumes {
            v.filter(n)?;
        }
        spread::filter(&self.spread, pod, n)?;
        interpod::filter(&self.interpod, self.cache, pod, n)?;
        Ok(())
    }
}

/// No node can take the pod.
#[derive(Clone, Debug, Default)]
pub struct FitError {
    pub num_nodes: usize,
    /// Per refusing node, why.
    pub statuses: Vec<(String, Rejection)>,
    /// What preemption said (`preemption: ...`).
    pub post_filter: Option<String>,
    /// A refusal before any node was looked at: the plugin and why (`pod has unbound immediate
    /// PersistentVolumeClaims`).
    pub pre_filter: Option<(&'static str, String)>,
}

pub const NO_NODES: &str = "no nodes available to schedule pods";

/// The plugin that holds a pod until its claims are there and bound.
pub const VOLUME_BINDING: &str = "VolumeBinding";

/// Upstream's VolumeBinding PreFilter: why the pod cannot be placed yet, if so — a claim that
/// does not exist (`persistentvolumeclaim "x" not found`), or one not bound to a volume whose
/// class does not wait for the first consumer (`pod has unbound immediate PersistentVolumeClaims`).
/// Claims that wait for their first consumer are the Filter's ([`volume::VolumeCheck`]).
/// `claim(name)` is the claim in the pod's namespace; `waits(class)`: the class binds on the first
/// consumer.
pub fn claims_not_ready(pod: &PodInfo, claim: impl Fn(&str) -> Option<Arc<PersistentVolumeClaim>>, waits: impl Fn(&str) -> bool) -> Option<String> {
    let mut unbound = false;
    for name in &pod.claims {
        let Some(c) = claim(name) else {
            return Some(format!("persistentvolumeclaim \"{name}\" not found"));
        };
        let spec = c.spec.as_ref();
        if spec.and_then(|s| s.volume_name.as_deref()).is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let class = spec.and_then(|s| s.storage_class_name.as_deref()).unwrap_or("");
        if class.is_empty() || !waits(class) {
            unbound = true;
        }
    }
    unbound.then(|| "pod has unbound immediate PersistentVolumeClaims".to_string())
}

impl FitError {
    /// `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {k: v}.`
    /// and the preemption verdict, as upstream's `FitError.Error()`.
    pub fn message(&self) -> String {
        if self.num_nodes == 0 {
            return NO_NODES.to_string();
        }
        let mut msg = format!("0/{} nodes are available:", self.num_nodes);
        if let Some((_, why)) = &self.pre_filter {
            msg.push_str(&format!(" {why}."));
        }
        let hist = histogram(self.statuses.iter().flat_map(|(_, r)| r.reasons.iter().map(str::to_string)));
        if !hist.is_empty() {
            msg.push_str(&format!(" {}.", hist.join(", ")));
        }
        if let Some(p) = &self.post_filter {
            msg.push_str(&format!(" {p}."));
        }
        msg
    }

    /// The plugins that refused some node (what could make it fit decides re-queueing).
    pub fn plugins(&self) -> Vec<&'static str> {
        let mut p: Vec<&'static str> = self.statuses.iter().map(|(_, r)| r.plugin).chain(self.pre_filter.iter().map(|(p, _)| *p)).collect();
        p.sort();
        p.dedup();
        p
    }
}

/// `"N reason"` strings sorted as strings (upstream sorts them so).
pub fn histogram(reasons: impl Iterator<Item = String>) -> Vec<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons {
        *counts.entry(r).or_default() += 1;
    }
    let mut out: Vec<String> = counts.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
    out.sort();
    out
}

/// The search position carried from pod to pod, and the tie-breaking random state.
#[derive(Debug)]
pub struct Search {
    pub next_start: usize,
    rng: u64,
}

impl Default for Search {
    fn default() -> Self {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0x9E37_79B9_7F4A_7C15);
        Search { next_start: 0, rng: seed | 1 }
    }
}

impl Search {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// How many feasible nodes to find before scoring (upstream's adaptive
/// `percentageOfNodesToScore`: all below 100 nodes, else 50% − nodes/125, at least 5% and 100).
pub fn nodes_to_find(all: usize) -> usize {
    if all < 100 {
        return all;
    }
    let pct = (50 - (all / 125) as i64).max(5) as usize;
    (all * pct / 100).max(100)
}

/// A placement.
#[derive(Debug, Clone)]
pub struct Decision {
    pub node: String,
    /// Nodes filtered and found feasible (for logs).
    pub evaluated: usize,
    pub feasible: usize,
}

/// Choose a node for `pod`, or say why none fits.
pub fn schedule(cache: &Cache, pod: &PodInfo, search: &mut Search) -> Result<Decision, FitError> {
    schedule_with(cache, pod, search, None)
}

/// [`schedule`], with VolumeBinding's Filter for a pod whose claims tie it to nodes.
pub fn schedule_with(cache: &Cache, pod: &PodInfo, search: &mut Search, volumes: Option<&volume::VolumeCheck>) -> Result<Decision, FitError> {
    let total = cache.num_nodes();
    if total == 0 {
        return Err(FitError::default());
    }
    let mut cycle = Cycle::new(cache, pod);
    cycle.volumes = volumes;
    // A node this pod was nominated to by preemption is tried first.
    if let Some(nominated) = pod.pod.status.as_ref().and_then(|s| s.nominated_node_name.as_deref()).filter(|n| !n.is_empty()) {
        if let Some(n) = cache.node(nominated).filter(|n| n.node.is_some()) {
            if cycle.filter(n).is_ok() {
                return Ok(Decision { node: n.name.clone(), evaluated: 1, feasible: 1 });
            }
        }
    }
    let want = nodes_to_find(total);
    let slots = cache.nodes.len();
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    // Refused nodes by slot: their names are only copied when no node fits (the error).
    let mut statuses: Vec<(usize, Rejection)> = Vec::new();
    let mut processed = 0;
    for i in 0..slots {
        let slot = (search.next_start + i) % slots;
        let n = &cache.nodes[slot];
        processed += 1;
        if n.node.is_none() {
            continue;
        }
        match cycle.filter(n) {
            Ok(()) => {
                feasible.push(n);
                if feasible.len() >= want {
                    break;
                }
            }
            Err(r) => statuses.push((slot, r)),
        }
    }
    search.next_start = (search.next_start + processed) % slots.max(1);
    let evaluated = feasible.len() + statuses.len();
    if feasible.is_empty() {
        let statuses = statuses.into_iter().map(|(slot, r)| (cache.nodes[slot].name.clone(), r)).collect();
        return Err(FitError { num_nodes: total, statuses, post_filter: None, pre_filter: None });
    }
    if feasible.len() == 1 {
        return Ok(Decision { node: feasible[0].name.clone(), evaluated, feasible: 1 });
    }
    let totals = score(cache, pod, &feasible);
    // Highest total; ties broken uniformly at random (reservoir sampling, as upstream).
    let mut best = 0;
    let mut ties = 0u64;
    for (i, s) in totals.iter().enumerate() {
        if *s > totals[best] {
            best = i;
            ties = 1;
        } else if *s == totals[best] {
            ties += 1;
            if search.next() % ties == 0 {
                best = i;
            }
        }
    }
    Ok(Decision { node: feasible[best].name.clone(), evaluated, feasible: feasible.len() })
}

/// Upstream's default score weights.
pub const WEIGHT_FIT: i64 = 1;
pub const WEIGHT_BALANCED: i64 = 1;
pub const WEIGHT_INTERPOD: i64 = 2;
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
pub const WEIGHT_SPREAD: i64 = 2;
pub const WEIGHT_TAINT: i64 = 3;

/// Normalize to 0..=100 by the maximum (upstream's `DefaultNormalizeScore`).
fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    for s in scores.iter_mut() {
        if max == 0 {
            *s = if reverse { fit::MAX_SCORE } else { *s };
            continue;
        }
        let v = fit::MAX_SCORE * *s / max;
        *s = if reverse { fit::MAX_SCORE - v } else { v };
    }
}

/// The weighted, normalized total of every score plugin for each feasible node.
pub fn score(cache: &Cache, pod: &PodInfo, feasible: &[&NodeInfo]) -> Vec<i64> {
    let mut total = vec![0i64; feasible.len()];
    for (i, n) in feasible.iter().enumerate() {
        total[i] += WEIGHT_FIT * fit::least_allocated(pod, n);
        total[i] += WEIGHT_BALANCED * fit::balanced(pod, n).unwrap_or(0);
    }
    let mut taint: Vec<i64> = feasible.iter().map(|n| node::taints_score(pod, n)).collect();
    default_normalize(&mut taint, true);
    let mut aff: Vec<i64> = feasible.iter().map(|n| node::affinity_score(pod, n)).collect();
    default_normalize(&mut aff, false);
    for i in 0..feasible.len() {
        total[i] += WEIGHT_TAINT * taint[i] + WEIGHT_NODE_AFFINITY * aff[i];
    }
    if let Some(s) = interpod::prescore(cache, pod) {
        let mut v: Vec<i64> = feasible.iter().map(|n| interpod::score(&s, n)).collect();
        interpod::normalize(&mut v);
        for i in 0..feasible.len() {
            total[i] += WEIGHT_INTERPOD * v[i];
        }
    }
    if let Some(s) = spread::prescore(cache, pod, feasible) {
        let mut raw: Vec<Option<i64>> = feasible.iter().map(|n| spread::score(&s, n)).collect();
        let v = spread::normalize(&mut raw);
        for i in 0..feasible.len() {
            total[i] += WEIGHT_SPREAD * v[i];
        }
    }
    total
}

#[cfg(test)]
mod tests;
