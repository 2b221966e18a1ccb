//! PodTopologySpread: `DoNotSchedule` constraints filter (skew = matching pods in the node's
//! domain + the pod itself − the least-loaded domain, at most `maxSkew`), `ScheduleAnyway`
//! constraints score (fewer matching pods is better, weighted by log(domains + 2)); a pod
//! without constraints gets the system defaults (hostname maxSkew 3, zone maxSkew 5, both
//! ScheduleAnyway) over the pods of its Services, ReplicaSet or StatefulSet.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{node::required_affinity_matches, node::tolerates, Rejection};
use crate::cache::Cache;
use crate::info::{NodeInfo, PodInfo};
use crate::labels::Selector;

pub const HOSTNAME: &str = "kubernetes.io/hostname";
pub const ZONE: &str = "topology.kubernetes.io/zone";
const NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";

#[derive(Clone, Debug)]
pub struct Constraint {
    pub max_skew: i64,
    pub key: String,
    pub hard: bool,
    pub selector: Selector,
    pub min_domains: Option<i64>,
    pub honor_affinity: bool,
    pub honor_taints: bool,
}

impl Constraint {
    fn includes(&self, pod: &PodInfo, node: &NodeInfo) -> bool {
        if self.honor_affinity && !required_affinity_matches(pod, node) {
            return false;
        }
        if self.honor_taints {
            for taint in &node.taints {
                if (taint.effect == "NoSchedule" || taint.effect == "NoExecute") && !pod.tolerations.iter().any(|t| tolerates(t, taint)) {
                    return false;
                }
            }
        }
        true
    }

    /// Whether [`Constraint::includes`] holds for every node, whatever its labels and taints
    /// (no taint policy; no node selector or required node affinity to honour): then the
    /// cache's [`crate::cache::SpreadCounts`] are this constraint's counts.
    fn includes_every_node(&self, pod: &PodInfo) -> bool {
        if self.honor_taints {
            return false;
        }
        !self.honor_affinity
            || pod.spec().is_none_or(|s| {
                s.node_selector.as_ref().is_none_or(|m| m.is_empty())
                    && s.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref()).is_none()
            })
    }
}

/// The pod's own constraints (`hard`: DoNotSchedule ones, else ScheduleAnyway ones), or the
/// system defaults when it has none; and whether they are the defaults.
pub fn constraints(cache: &Cache, pod: &PodInfo, hard: bool) -> (Vec<Constraint>, bool) {
    let own = pod.spec().and_then(|s| s.topology_spread_constraints.as_ref()).filter(|c| !c.is_empty());
    let Some(own) = own else {
        if hard {
            return (Vec::new(), true);
        }
        let sel = cache.default_selector(pod);
        if sel.is_empty() {
            return (Vec::new(), true);
        }
        let c = |key: &str, skew| Constraint { max_skew: skew, key: key.into(), hard: false, selector: sel.clone(), min_domains: None, honor_affinity: true, honor_taints: false };
        return (vec![c(HOSTNAME, 3), c(ZONE, 5)], true);
    };
    let out = own
        .iter()
        .filter(|c| (c.when_unsatisfiable == "DoNotSchedule") == hard)
        .map(|c| {
            let mut selector = c.label_selector.as_ref().map_or_else(Selector::nothing, Selector::parse);
            for k in c.match_label_keys.iter().flatten() {
                if let Some(v) = pod.labels.get(k) {
                    selector.add_equals(k, v);
                }
            }
            Constraint {
                max_skew: c.max_skew as i64,
                key: c.topology_key.clone(),
                hard,
                selector,
                min_domains: c.min_domains.map(|m| m as i64),
                honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
                honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
            }
        })
        .collect();
    (out, false)
}

/// Whether a placed pod counts for a constraint selecting `sel` in namespace `ns`.
pub(crate) fn counts_for(p: &PodInfo, sel: &Selector, ns: &str) -> bool {
    !p.terminating && p.namespace == ns && sel.matches(&p.labels)
}

/// Whether the node has every constraint's key, by [`crate::info::Topology`] ids (`None`: no
/// node has the key).
fn has_all_key_ids(node: &NodeInfo, keys: &[Option<u32>]) -> bool {
    keys.iter().all(|k| k.is_some_and(|k| node.label_id(k).is_some()))
}

/// Per-pod state of the filter, as upstream's preFilterState: for each DoNotSchedule
/// constraint its key's id, the matching pods of each eligible domain indexed by the domain's
/// value id, the minimum the skew is measured from, and whether the pod matches its own
/// selector — so that filtering a node is an id lookup and a comparison.
#[derive(Default, Debug)]
pub struct PreFilter {
    constraints: Vec<Constraint>,
    /// Per constraint: the topology key's id (`None`: no node has ever had the key).
    keys: Vec<Option<u32>>,
    /// Per constraint: matching pods per value id; `None`: not an eligible domain.
    counts: Vec<Vec<Option<i64>>>,
    /// Per constraint: the global minimum the skew is measured from (computed once per pod,
    /// not per node).
    mins: Vec<i64>,
    /// Per constraint: 1 when the pod matches the constraint's selector itself, else 0.
    own: Vec<i64>,
}

/// The fewest matching pods in an eligible domain; 0 while fewer domains than `minDomains`.
fn min_of(c: &Constraint, counts: &[Option<i64>]) -> i64 {
    if c.min_domains.is_some_and(|m| (counts.iter().flatten().count() as i64) < m) {
        return 0;
    }
    counts.iter().flatten().copied().min().unwrap_or(0)
}

/// `counts[value]`, growing the vector as needed (a value that got an id after the pod's
/// cycle began).
fn slot(counts: &mut Vec<Option<i64>>, value: u32) -> &mut Option<i64> {
    let v = value as usize;
    if counts.len() <= v {
        counts.resize(v + 1, None);
    }
    &mut counts[v]
}

pub fn prefilter(cache: &Cache, pod: &PodInfo) -> PreFilter {
    let (cs, _) = constraints(cache, pod, true);
    if cs.is_empty() {
        return PreFilter::default();
    }
    let topo = &cache.topology;
    let keys: Vec<Option<u32>> = cs.iter().map(|c| topo.key(&c.key)).collect();
    let own = cs.iter().map(|c| i64::from(c.selector.matches(&pod.labels))).collect();
    let mut counts: Vec<Vec<Option<i64>>> = keys.iter().map(|k| vec![None; k.map_or(0, |k| topo.num_values(k))]).collect();
    // One topology key and no node excluded: the domains and their counts are the cache's,
    // kept up to date by placements (no scan of the nodes or of the matching pods).
    if cs.iter().all(|c| c.key == cs[0].key && c.includes_every_node(pod)) {
        for (i, c) in cs.iter().enumerate() {
            let Some(k) = keys[i] else { continue };
            cache.spread_counts(&pod.namespace, &c.selector, &c.key, |sc| {
                for v in sc.domains.keys() {
                    if let Some(id) = topo.value(k, v) {
                        *slot(&mut counts[i], id) = Some(sc.pods.get(v).copied().unwrap_or(0));
                    }
                }
            });
        }
        let mins = cs.iter().zip(&counts).map(|(c, n)| min_of(c, n)).collect();
        return PreFilter { constraints: cs, keys, counts, mins, own };
    }
    // Every eligible domain, with no pods yet (an empty domain is the minimum)...
    for node in &cache.nodes {
        if node.node.is_none() || !has_all_key_ids(node, &keys) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            let Some(v) = keys[i].and_then(|k| node.label_id(k)) else { continue };
            let e = slot(&mut counts[i], v);
            if e.is_none() && c.includes(pod, node) {
                *e = Some(0);
            }
        }
    }
    // ...then the matching pods, found through the cache's label index.
    let own_ns = BTreeSet::from([pod.namespace.clone()]);
    for (i, c) in cs.iter().enumerate() {
        for (node, p) in cache.candidates(Some(&own_ns), &c.selector) {
            if node.node.is_some() && has_all_key_ids(node, &keys) && counts_for(p, &c.selector, &pod.namespace) && c.includes(pod, node) {
                if let Some(v) = keys[i].and_then(|k| node.label_id(k)) {
                    *slot(&mut counts[i], v).get_or_insert(0) += 1;
                }
            }
        }
    }
    let mins = cs.iter().zip(&counts).map(|(c, n)| min_of(c, n)).collect();
    PreFilter { constraints: cs, keys, counts, mins, own }
}

impl PreFilter {
    /// Account for `existing` appearing on (`delta` 1) or leaving (−1) `node`.
    pub fn update(&mut self, pod: &PodInfo, existing: &PodInfo, node: &NodeInfo, delta: i64) {
        if self.constraints.is_empty() || !has_all_key_ids(node, &self.keys) || existing.terminating || existing.namespace != pod.namespace {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            let Some(v) = self.keys[i].and_then(|k| node.label_id(k)) else { continue };
            if c.includes(pod, node) && c.selector.matches(&existing.labels) {
                *slot(&mut self.counts[i], v).get_or_insert(0) += delta;
                self.mins[i] = min_of(c, &self.counts[i]);
            }
        }
    }
}

const MISSING_LABEL: &str = "node(s) didn't match pod topology spread constraints (missing required label)";

/// `pod` is the pod the [`PreFilter`] was made for (whether it matches its own selectors was
/// decided there).
pub fn filter(s: &PreFilter, _pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    for (i, c) in s.constraints.iter().enumerate() {
        let Some(v) = s.keys[i].and_then(|k| node.label_id(k)) else {
            return Err(Rejection::unresolvable("PodTopologySpread", MISSING_LABEL));
        };
        let count = s.counts[i].get(v as usize).copied().flatten().unwrap_or(0);
        if count + s.own[i] - s.mins[i] > c.max_skew {
            return Err(Rejection::unschedulable("PodTopologySpread", NOT_MATCH));
        }
    }
    Ok(())
}

/// Per-pod state of the score (upstream's preScoreState): matching pods per topology value id,
/// shared by the constraints with one key, as upstream's pair counts; a hostname constraint
/// counts the node's own matching pods (per node, as upstream, not per hostname value).
#[derive(Debug)]
pub struct PreScore {
    constraints: Vec<Constraint>,
    /// Per constraint: the key's id (`None`: no node has it).
    keys: Vec<Option<u32>>,
    /// Per constraint: the index in `counts` of its key's counts (the first constraint with
    /// that key).
    group: Vec<usize>,
    /// Per constraint index that is a group (others empty): matching pods per value id, and
    /// at `num_values` those on nodes without the key.
    counts: Vec<Vec<i64>>,
    /// Per hostname constraint: its matching pods per node slot ([`Cache::host_counts`]), so
    /// that scoring a node is an index instead of a match of each of the node's pods (the
    /// default spreading of a 10,000-replica ReplicaSet's pods spent half the scheduler's CPU
    /// matching). `None` for the other constraints.
    host_counts: Vec<Option<Arc<Vec<i64>>>>,
    /// Nodes without every constraint's key are ignored (the pod's own constraints).
    require_all: bool,
    weights: Vec<f64>,
}

pub fn prescore(cache: &Cache, pod: &PodInfo, feasible: &[&NodeInfo]) -> Option<PreScore> {
    let (cs, defaulted) = constraints(cache, pod, false);
    if cs.is_empty() {
        return None;
    }
    let topo = &cache.topology;
    let require_all = !defaulted;
    let keys: Vec<Option<u32>> = cs.iter().map(|c| topo.key(&c.key)).collect();
    let hostname: Vec<bool> = cs.iter().map(|c| c.key == HOSTNAME).collect();
    let group: Vec<usize> = cs.iter().map(|c| cs.iter().position(|o| o.key == c.key).unwrap_or(0)).collect();
    // The slot of a node's domain for a key: its value's id; a node without the key counts
    // under the empty value (as upstream's pair with value ""), or a slot past every id.
    let empty: Vec<Option<u32>> = keys.iter().map(|k| k.and_then(|k| topo.value(k, ""))).collect();
    let width = |i: usize| keys[i].map_or(0, |k| topo.num_values(k)) + 1;
    let domain = |i: usize, n: &NodeInfo| -> usize { keys[i].and_then(|k| n.label_id(k)).or(empty[i]).map_or(width(i) - 1, |v| v as usize) };
    let mut counts: Vec<Vec<i64>> = (0..cs.len()).map(|i| if group[i] == i && !hostname[i] { vec![0; width(i)] } else { Vec::new() }).collect();
    // Domains among the feasible nodes, per key (shared by its constraints: a second
    // constraint with the same key counts no new domain, as upstream's topoSize).
    let mut seen: Vec<Vec<bool>> = (0..cs.len()).map(|i| if group[i] == i && !hostname[i] { vec![false; width(i)] } else { Vec::new() }).collect();
    let mut sizes = vec![0usize; cs.len()];
    let mut scored = 0;
    for n in feasible {
        if require_all && !has_all_key_ids(n, &keys) {
            continue;
        }
        scored += 1;
        for i in 0..cs.len() {
            if hostname[i] {
                continue;
            }
            let d = domain(i, n);
            if let Some(s) = seen[group[i]].get_mut(d).filter(|s| !**s) {
                *s = true;
                sizes[i] += 1;
            }
        }
    }
    for i in 0..cs.len() {
        if hostname[i] {
            sizes[i] = scored;
        }
    }
    let weights = sizes.iter().map(|s| ((s + 2) as f64).ln()).collect();
    // The matching pods, found through the cache's label index (hostname domains are counted
    // per node when scoring).
    let own_ns = BTreeSet::from([pod.namespace.clone()]);
    for (i, c) in cs.iter().enumerate() {
        if hostname[i] {
            continue;
        }
        let g = group[i];
        // No node excluded (and, when all keys are required, this constraint's key is the
        // only one): the cache's counts per value are the ones the scan below would make.
        if c.includes_every_node(pod) && (!require_all || cs.iter().all(|o| o.key == c.key)) {
            let Some(k) = keys[i] else { continue };
            cache.spread_counts(&pod.namespace, &c.selector, &c.key, |sc| {
                for (v, n) in &sc.pods {
                    if let Some(id) = topo.value(k, v) {
                        counts[g][id as usize] += n;
                    }
                }
                if !require_all {
                    if let Some(e) = empty[i] {
                        counts[g][e as usize] += sc.unlabeled;
                    }
                }
            });
            continue;
        }
        for (node, p) in cache.candidates(Some(&own_ns), &c.selector) {
            if node.node.is_none() || (require_all && !has_all_key_ids(node, &keys)) || !counts_for(p, &c.selector, &pod.namespace) || !c.includes(pod, node) {
                continue;
            }
            counts[g][domain(i, node)] += 1;
        }
    }
    // Hostname domains: each node's own matching pods, from the cache's counts per node slot
    // (kept up to date by placements), copied once per pod.
    let host_counts = cs.iter().zip(&hostname).map(|(c, host)| host.then(|| cache.host_counts(&pod.namespace, &c.selector))).collect();
    Some(PreScore { constraints: cs, keys, group, counts, host_counts, require_all, weights })
}

/// The node's raw score (more matching pods in its domains: higher, i.e. worse), or `None`
/// for an ignored node.
pub fn score(s: &PreScore, node: &NodeInfo) -> Option<i64> {
    if s.require_all && !has_all_key_ids(node, &s.keys) {
        return None;
    }
    let mut score = 0.0;
    for (i, c) in s.constraints.iter().enumerate() {
        if let Some(v) = s.keys[i].and_then(|k| node.label_id(k)) {
            let cnt = match &s.host_counts[i] {
                Some(per_slot) => per_slot.get(node.slot).copied().unwrap_or(0),
                None => s.counts[s.group[i]].get(v as usize).copied().unwrap_or(0),
            };
            score += cnt as f64 * s.weights[i] + (c.max_skew - 1) as f64;
        }
    }
    Some(score.round() as i64)
}

/// Upstream's normalization: 100 × (max + min − s) / max; ignored nodes 0; all 100 when the
/// maximum is 0.
pub fn normalize(scores: &mut [Option<i64>]) -> Vec<i64> {
    let present: Vec<i64> = scores.iter().flatten().copied().collect();
    let min = present.iter().copied().min().unwrap_or(0);
    let max = present.iter().copied().max().unwrap_or(0);
    scores
        .iter()
        .map(|s| match s {
            None => 0,
            Some(_) if max == 0 => super::fit::MAX_SCORE,
            Some(s) => super::fit::MAX_SCORE * (max + min - s) / max,
        })
        .collect()
}
