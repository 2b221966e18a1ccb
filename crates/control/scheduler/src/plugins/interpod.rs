//! InterPodAffinity: required pod affinity and anti-affinity of the incoming pod, the
//! required anti-affinity of pods already placed, and the preferred terms of both sides for
//! scoring (upstream's `interpodaffinity` plugin: counts per topology pair, computed once per
//! pod, then a map lookup per node).

use std::collections::HashMap;

use super::Rejection;
use crate::cache::Cache;
use crate::info::{AffinityTerm, NodeInfo, PodInfo};
use crate::labels::{self, Labels};

/// Pod counts per topology pair (key, then value), looked up by `&str` without building a
/// pair: the filter asks once per node, so a lookup must not allocate. Pairs at zero are removed.
#[derive(Default, Debug)]
struct Counts(HashMap<String, HashMap<String, i64>>);

impl Counts {
    fn get(&self, key: &str, value: &str) -> i64 {
        self.0.get(key).and_then(|m| m.get(value)).copied().unwrap_or(0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn add(&mut self, key: &str, value: &str, by: i64) {
        if by == 0 {
            return;
        }
        if !self.0.contains_key(key) {
            self.0.insert(key.to_string(), HashMap::new());
        }
        let Some(values) = self.0.get_mut(key) else { return };
        let n = match values.get_mut(value) {
            Some(n) => {
                *n += by;
                *n
            }
            None => {
                values.insert(value.to_string(), by);
                by
            }
        };
        if n == 0 {
            values.remove(value);
            if values.is_empty() {
                self.0.remove(key);
            }
        }
    }
}

/// Counts over the whole cluster computed before filtering.
#[derive(Default, Debug)]
pub struct PreFilter {
    /// Existing pods whose required anti-affinity matches the incoming pod, per topology pair.
    existing_anti: Counts,
    /// Existing pods matching all the incoming pod's required affinity terms.
    affinity: Counts,
    /// Existing pods matching one of the incoming pod's required anti-affinity terms.
    anti: Counts,
}

fn ns_labels<'a>(cache: &'a Cache, ns: &str) -> &'a Labels {
    cache.namespaces.get(ns).unwrap_or_else(|| labels::empty())
}

fn bump(m: &mut Counts, node: &NodeInfo, key: &str, by: i64) {
    if let Some(v) = node.labels.get(key) {
        m.add(key, v, by);
    }
}

fn matches_all(terms: &[AffinityTerm], pod: &PodInfo, ns: &Labels) -> bool {
    terms.iter().all(|t| t.matches(pod, ns))
}

pub fn prefilter(cache: &Cache, pod: &PodInfo) -> PreFilter {
    let mut s = PreFilter::default();
    let own_ns = ns_labels(cache, &pod.namespace);
    // Each distinct term once (the cache groups placed pods' terms), then its nodes.
    for group in cache.anti_terms() {
        if !group.term.matches(pod, own_ns) {
            continue;
        }
        for (name, count) in &group.nodes {
            if let Some(node) = cache.node(name).filter(|n| n.node.is_some()) {
                bump(&mut s.existing_anti, node, &group.term.topology_key, *count);
            }
        }
    }
    // Only the pods a term can select (looked up by one of its labels), not every pod.
    let candidates = |t: &AffinityTerm| cache.candidates(t.namespace_selector.is_none().then_some(&t.namespaces), &t.selector);
    if let Some(first) = pod.required_affinity.first() {
        for (node, existing) in candidates(first) {
            if node.node.is_some() && matches_all(&pod.required_affinity, existing, ns_labels(cache, &existing.namespace)) {
                for t in &pod.required_affinity {
                    bump(&mut s.affinity, node, &t.topology_key, 1);
                }
            }
        }
    }
    for t in &pod.required_anti_affinity {
        for (node, existing) in candidates(t) {
            if node.node.is_some() && t.matches(existing, ns_labels(cache, &existing.namespace)) {
                bump(&mut s.anti, node, &t.topology_key, 1);
            }
        }
    }
    s
}

impl PreFilter {
    /// Account for `existing` appearing on (`delta` 1) or leaving (−1) `node` (preemption's
    /// what-if).
    pub fn update(&mut self, cache: &Cache, pod: &PodInfo, existing: &PodInfo, node: &NodeInfo, delta: i64) {
        let own_ns = ns_labels(cache, &pod.namespace);
        let ens = ns_labels(cache, &existing.namespace);
        for t in &existing.required_anti_affinity {
            if t.matches(pod, own_ns) {
                bump(&mut self.existing_anti, node, &t.topology_key, delta);
            }
        }
        if !pod.required_affinity.is_empty() && matches_all(&pod.required_affinity, existing, ens) {
            for t in &pod.required_affinity {
                bump(&mut self.affinity, node, &t.topology_key, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if t.matches(existing, ens) {
                bump(&mut self.anti, node, &t.topology_key, delta);
            }
        }
    }
}

pub fn filter(s: &PreFilter, cache: &Cache, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    // Required affinity: every term's topology must be on the node and hold a matching pod,
    // unless no pod anywhere matches and the pod matches its own terms (the first of a group).
    let mut exist = true;
    for t in &pod.required_affinity {
        match node.labels.get(&t.topology_key) {
            Some(v) => {
                if s.affinity.get(&t.topology_key, v) <= 0 {
                    exist = false;
                }
            }
            None => return Err(Rejection::unresolvable("InterPodAffinity", "node(s) didn't match pod affinity rules")),
        }
    }
    let first_of_group = s.affinity.is_empty() && matches_all(&pod.required_affinity, pod, ns_labels(cache, &pod.namespace));
    if !exist && !first_of_group {
        return Err(Rejection::unresolvable("InterPodAffinity", "node(s) didn't match pod affinity rules"));
    }
    if !s.anti.is_empty() {
        for t in &pod.required_anti_affinity {
            if let Some(v) = node.labels.get(&t.topology_key) {
                if s.anti.get(&t.topology_key, v) > 0 {
                    return Err(Rejection::unschedulable("InterPodAffinity", "node(s) didn't match pod anti-affinity rules"));
                }
            }
        }
    }
    if !s.existing_anti.is_empty() {
        // The few topology keys placed pods' terms use, each looked up on the node.
        for (k, values) in &s.existing_anti.0 {
            if node.labels.get(k).and_then(|v| values.get(v)).is_some_and(|n| *n > 0) {
                return Err(Rejection::unschedulable("InterPodAffinity", "node(s) didn't satisfy existing pods anti-affinity rules"));
            }
        }
    }
    Ok(())
}

/// Scores per topology key and value, from both sides' preferred terms and existing pods'
/// required affinity (weight 1, upstream's `hardPodAffinityWeight`).
#[derive(Default, Debug)]
pub struct PreScore {
    scores: HashMap<String, HashMap<String, i64>>,
}

fn process(m: &mut PreScore, t: &AffinityTerm, weight: i64, target: &PodInfo, target_ns: &Labels, node: &NodeInfo) {
    if t.matches(target, target_ns) {
        if let Some(v) = node.labels.get(&t.topology_key) {
            *m.scores.entry(t.topology_key.clone()).or_default().entry(v.clone()).or_default() += weight;
        }
    }
}

pub fn prescore(cache: &Cache, pod: &PodInfo) -> Option<PreScore> {
    let has_constraints = !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
    let mut s = PreScore::default();
    let own_ns = ns_labels(cache, &pod.namespace);
    let mut any = false;
    for node in &cache.nodes {
        if node.node.is_none() || node.labels.is_empty() || (!has_constraints && node.with_affinity == 0) {
            continue;
        }
        for existing in &node.pods {
            if !has_constraints && !existing.scores_others() {
                continue;
            }
            any = true;
            let ens = ns_labels(cache, &existing.namespace);
            for t in &pod.preferred_affinity {
                process(&mut s, t, t.weight, existing, ens, node);
            }
            for t in &pod.preferred_anti_affinity {
                process(&mut s, t, -t.weight, existing, ens, node);
            }
            for t in &existing.required_affinity {
                process(&mut s, t, 1, pod, own_ns, node);
            }
            for t in &existing.preferred_affinity {
                process(&mut s, t, t.weight, pod, own_ns, node);
            }
            for t in &existing.preferred_anti_affinity {
                process(&mut s, t, -t.weight, pod, own_ns, node);
            }
        }
    }
    any.then_some(s)
}

pub fn score(s: &PreScore, node: &NodeInfo) -> i64 {
    s.scores.iter().filter_map(|(k, values)| node.labels.get(k).and_then(|v| values.get(v))).sum()
}

/// Min-max normalization to 0..=100 (upstream's `NormalizeScore` of this plugin).
pub fn normalize(scores: &mut [i64]) {
    let (Some(&min), Some(&max)) = (scores.iter().min(), scores.iter().max()) else { return };
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 { (super::fit::MAX_SCORE as f64 * ((*s - min) as f64 / diff as f64)) as i64 } else { 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn counts_drop_pairs_at_zero() {
        let mut c = Counts::default();
        c.add("zone", "a", 2);
        c.add("zone", "b", 1);
        c.add("host", "n1", 1);
        assert_eq!((c.get("zone", "a"), c.get("zone", "b"), c.get("host", "n1"), c.get("host", "n2"), c.get("rack", "a")), (2, 1, 1, 0, 0));
        c.add("zone", "a", -2);
        c.add("host", "n1", -1);
        c.add("zone", "c", 0);
        assert_eq!((c.get("zone", "a"), c.get("zone", "b")), (0, 1));
        assert!(!c.0["zone"].contains_key("a") && !c.0["zone"].contains_key("c") && !c.0.contains_key("host"));
        c.add("zone", "b", -1);
        assert!(c.is_empty());
    }
}
