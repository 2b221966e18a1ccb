//! PodTopologySpread: `DoNotSchedule` constraints filter (skew = matching pods in the node's
//! domain + the pod itself − the least-loaded domain, at most `maxSkew`), `ScheduleAnyway`
//! constraints score (fewer matching pods is better, weighted by log(domains + 2)); a pod
//! without constraints gets the system defaults (hostname maxSkew 3, zone maxSkew 5, both
//! ScheduleAnyway) over the pods of its Services, ReplicaSet or StatefulSet.

use std::collections::{BTreeSet, HashMap, HashSet};

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
fn counts_for(p: &PodInfo, sel: &Selector, ns: &str) -> bool {
    !p.terminating && p.namespace == ns && sel.matches(&p.labels)
}

fn count_matching(node: &NodeInfo, sel: &Selector, ns: &str) -> i64 {
    node.pods.iter().filter(|p| counts_for(p, sel, ns)).count() as i64
}

fn has_all_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| node.labels.contains_key(&c.key))
}

#[derive(Default, Debug)]
pub struct PreFilter {
    constraints: Vec<Constraint>,
    /// Per constraint: matching pods per domain value.
    counts: Vec<HashMap<String, i64>>,
    /// Per constraint: the global minimum the skew is measured from (computed once per pod,
    /// not per node).
    mins: Vec<i64>,
}

/// The fewest matching pods in an eligible domain; 0 while fewer domains than `minDomains`.
fn min_of(c: &Constraint, counts: &HashMap<String, i64>) -> i64 {
    if c.min_domains.is_some_and(|m| (counts.len() as i64) < m) {
        return 0;
    }
    counts.values().copied().min().unwrap_or(0)
}

pub fn prefilter(cache: &Cache, pod: &PodInfo) -> PreFilter {
    let (cs, _) = constraints(cache, pod, true);
    if cs.is_empty() {
        return PreFilter::default();
    }
    // One topology key and no node excluded: the domains and their counts are the cache's,
    // kept up to date by placements (no scan of the nodes or of the matching pods).
    if cs.iter().all(|c| c.key == cs[0].key && c.includes_every_node(pod)) {
        let counts: Vec<HashMap<String, i64>> = cs
            .iter()
            .map(|c| cache.spread_counts(&pod.namespace, &c.selector, &c.key, |sc| sc.domains.keys().map(|v| (v.clone(), sc.pods.get(v).copied().unwrap_or(0))).collect::<HashMap<String, i64>>()))
            .collect();
        let mins = cs.iter().zip(&counts).map(|(c, n)| min_of(c, n)).collect();
        return PreFilter { constraints: cs, counts, mins };
    }
    // Every eligible domain, with no pods yet (an empty domain is the minimum)...
    let mut counts: Vec<HashMap<String, i64>> = vec![HashMap::new(); cs.len()];
    for node in &cache.nodes {
        if node.node.is_none() || !has_all_keys(node, &cs) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            let v = &node.labels[&c.key];
            if !counts[i].contains_key(v) && c.includes(pod, node) {
                counts[i].insert(v.clone(), 0);
            }
        }
    }
    // ...then the matching pods, found through the cache's label index.
    let own_ns = BTreeSet::from([pod.namespace.clone()]);
    for (i, c) in cs.iter().enumerate() {
        for (node, p) in cache.candidates(Some(&own_ns), &c.selector) {
            if node.node.is_some() && has_all_keys(node, &cs) && counts_for(p, &c.selector, &pod.namespace) && c.includes(pod, node) {
                *counts[i].entry(node.labels[&c.key].clone()).or_default() += 1;
            }
        }
    }
    let mins = cs.iter().zip(&counts).map(|(c, n)| min_of(c, n)).collect();
    PreFilter { constraints: cs, counts, mins }
}

impl PreFilter {
    /// Account for `existing` appearing on (`delta` 1) or leaving (−1) `node`.
    pub fn update(&mut self, pod: &PodInfo, existing: &PodInfo, node: &NodeInfo, delta: i64) {
        if self.constraints.is_empty() || !has_all_keys(node, &self.constraints) || existing.terminating || existing.namespace != pod.namespace {
            return;
        }
        for (i, c) in self.constraints.iter().enumerate() {
            if c.includes(pod, node) && c.selector.matches(&existing.labels) {
                *self.counts[i].entry(node.labels[&c.key].clone()).or_default() += delta;
                self.mins[i] = min_of(c, &self.counts[i]);
            }
        }
    }
}

pub fn filter(s: &PreFilter, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    for (i, c) in s.constraints.iter().enumerate() {
        let Some(v) = node.labels.get(&c.key) else {
            return Err(Rejection::unresolvable("PodTopologySpread", format!("{NOT_MATCH} (missing required label)")));
        };
        let own = i64::from(c.selector.matches(&pod.labels));
        let skew = s.counts[i].get(v).copied().unwrap_or(0) + own - s.mins[i];
        if skew > c.max_skew {
            return Err(Rejection::unschedulable("PodTopologySpread", NOT_MATCH));
        }
    }
    Ok(())
}

#[derive(Debug)]
pub struct PreScore {
    constraints: Vec<Constraint>,
    ignored: HashSet<String>,
    /// Matching pods per topology key, then value (shared by constraints with one key, as
    /// upstream's pair counts); looked up by `&str`, so scoring a node allocates nothing.
    pair_counts: HashMap<String, HashMap<String, i64>>,
    weights: Vec<f64>,
}

pub fn prescore(cache: &Cache, pod: &PodInfo, feasible: &[&NodeInfo]) -> Option<PreScore> {
    let (cs, defaulted) = constraints(cache, pod, false);
    if cs.is_empty() {
        return None;
    }
    let require_all = !defaulted;
    let mut ignored = HashSet::new();
    let mut pair_counts: HashMap<String, HashMap<String, i64>> = cs.iter().filter(|c| c.key != HOSTNAME).map(|c| (c.key.clone(), HashMap::new())).collect();
    let mut sizes = vec![0usize; cs.len()];
    for n in feasible {
        if require_all && !has_all_keys(n, &cs) {
            ignored.insert(n.name.clone());
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if c.key == HOSTNAME {
                continue;
            }
            let v = n.labels.get(&c.key).map_or("", String::as_str);
            if let Some(values) = pair_counts.get_mut(&c.key).filter(|m| !m.contains_key(v)) {
                values.insert(v.to_string(), 0);
                sizes[i] += 1;
            }
        }
    }
    for (i, c) in cs.iter().enumerate() {
        if c.key == HOSTNAME {
            sizes[i] = feasible.len() - ignored.len();
        }
    }
    let weights = sizes.iter().map(|s| ((s + 2) as f64).ln()).collect();
    // The matching pods, found through the cache's label index (hostname domains are counted
    // per node when scoring).
    let own_ns = BTreeSet::from([pod.namespace.clone()]);
    for c in cs.iter().filter(|c| c.key != HOSTNAME) {
        // No node excluded (and, when all keys are required, this constraint's key is the
        // only one): the cache's counts per value are the ones the scan below would make.
        if c.includes_every_node(pod) && (!require_all || cs.iter().all(|o| o.key == c.key)) {
            if let Some(values) = pair_counts.get_mut(&c.key) {
                cache.spread_counts(&pod.namespace, &c.selector, &c.key, |sc| {
                    for (v, n) in values.iter_mut() {
                        *n += sc.pods.get(v).copied().unwrap_or(0) + if v.is_empty() && !require_all { sc.unlabeled } else { 0 };
                    }
                });
            }
            continue;
        }
        for (node, p) in cache.candidates(Some(&own_ns), &c.selector) {
            if node.node.is_none() || (require_all && !has_all_keys(node, &cs)) || !counts_for(p, &c.selector, &pod.namespace) || !c.includes(pod, node) {
                continue;
            }
            let v = node.labels.get(&c.key).map_or("", String::as_str);
            if let Some(n) = pair_counts.get_mut(&c.key).and_then(|m| m.get_mut(v)) {
                *n += 1;
            }
        }
    }
    Some(PreScore { constraints: cs, ignored, pair_counts, weights })
}

/// The node's raw score (more matching pods in its domains: higher, i.e. worse), or `None`
/// for an ignored node.
pub fn score(s: &PreScore, pod: &PodInfo, node: &NodeInfo) -> Option<i64> {
    if s.ignored.contains(&node.name) {
        return None;
    }
    let mut score = 0.0;
    for (i, c) in s.constraints.iter().enumerate() {
        if let Some(v) = node.labels.get(&c.key) {
            let cnt = if c.key == HOSTNAME { count_matching(node, &c.selector, &pod.namespace) } else { s.pair_counts.get(&c.key).and_then(|m| m.get(v)).copied().unwrap_or(0) };
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
