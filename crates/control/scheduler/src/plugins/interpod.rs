//! InterPodAffinity: required pod affinity and anti-affinity of the incoming pod, the
//! required anti-affinity of pods already placed, and the preferred terms of both sides for
//! scoring (upstream's `interpodaffinity` plugin: counts per topology pair, computed once per
//! pod, then a map lookup per node).

use std::collections::HashMap;

use super::Rejection;
use crate::cache::Cache;
use crate::info::{AffinityTerm, NodeInfo, PodInfo};
use crate::labels::{self, Labels};

/// Pod counts per topology pair, by [`crate::info::Topology`] ids: per key id, a count per
/// value id. The filter asks once per node, so a lookup is an id scan and an index, with no
/// label string compared or hashed.
#[derive(Default, Debug)]
struct Counts {
    by_key: Vec<(u32, Vec<i64>)>,
    /// Pairs whose count is not zero.
    nonzero: usize,
}

impl Counts {
    fn get(&self, key: u32, value: u32) -> i64 {
        self.by_key.iter().find(|(k, _)| *k == key).and_then(|(_, values)| values.get(value as usize)).copied().unwrap_or(0)
    }

    /// No pair has a count.
    fn is_empty(&self) -> bool {
        self.nonzero == 0
    }

    fn add(&mut self, key: u32, value: u32, by: i64) {
        if by == 0 {
            return;
        }
        let i = match self.by_key.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                self.by_key.push((key, Vec::new()));
                self.by_key.len() - 1
            }
        };
        let values = &mut self.by_key[i].1;
        if values.len() <= value as usize {
            values.resize(value as usize + 1, 0);
        }
        let n = &mut values[value as usize];
        let was_zero = *n == 0;
        *n += by;
        match (was_zero, *n == 0) {
            (true, false) => self.nonzero += 1,
            (false, true) => self.nonzero -= 1,
            _ => {}
        }
    }

    /// Whether the node is in a pair with a count above zero, under any key.
    fn any_positive(&self, node: &NodeInfo) -> bool {
        self.by_key.iter().any(|(k, values)| node.label_id(*k).and_then(|v| values.get(v as usize)).is_some_and(|n| *n > 0))
    }
}

/// Counts over the whole cluster computed before filtering, and the key ids of the pod's
/// required terms (computed once per pod, not per node).
#[derive(Default, Debug)]
pub struct PreFilter {
    /// Existing pods whose required anti-affinity matches the incoming pod, per topology pair.
    existing_anti: Counts,
    /// Existing pods matching all the incoming pod's required affinity terms.
    affinity: Counts,
    /// Existing pods matching one of the incoming pod's required anti-affinity terms.
    anti: Counts,
    /// The topology key ids of the pod's required affinity and anti-affinity terms (`None`: no
    /// node has that key).
    affinity_keys: Vec<Option<u32>>,
    anti_keys: Vec<Option<u32>>,
}

fn ns_labels<'a>(cache: &'a Cache, ns: &str) -> &'a Labels {
    cache.namespaces.get(ns).unwrap_or_else(|| labels::empty())
}

fn bump(m: &mut Counts, cache: &Cache, node: &NodeInfo, key: &str, by: i64) {
    if let Some((k, v)) = cache.topology.key(key).and_then(|k| Some((k, node.label_id(k)?))) {
        m.add(k, v, by);
    }
}

fn matches_all(terms: &[AffinityTerm], pod: &PodInfo, ns: &Labels) -> bool {
    terms.iter().all(|t| t.matches(pod, ns))
}

pub fn prefilter(cache: &Cache, pod: &PodInfo) -> PreFilter {
    let key_ids = |terms: &[AffinityTerm]| terms.iter().map(|t| cache.topology.key(&t.topology_key)).collect();
    let mut s = PreFilter { affinity_keys: key_ids(&pod.required_affinity), anti_keys: key_ids(&pod.required_anti_affinity), ..Default::default() };
    let own_ns = ns_labels(cache, &pod.namespace);
    // Each distinct term once (the cache groups placed pods' terms), then its nodes.
    for group in cache.anti_terms() {
        if !group.term.matches(pod, own_ns) {
            continue;
        }
        for (name, count) in &group.nodes {
            if let Some(node) = cache.node(name).filter(|n| n.node.is_some()) {
                bump(&mut s.existing_anti, cache, node, &group.term.topology_key, *count);
            }
        }
    }
    // Only the pods a term can select (looked up by one of its labels), not every pod.
    let candidates = |t: &AffinityTerm| cache.candidates(t.namespace_selector.is_none().then_some(&t.namespaces), &t.selector);
    if let Some(first) = pod.required_affinity.first() {
        for (node, existing) in candidates(first) {
            if node.node.is_some() && matches_all(&pod.required_affinity, existing, ns_labels(cache, &existing.namespace)) {
                for t in &pod.required_affinity {
                    bump(&mut s.affinity, cache, node, &t.topology_key, 1);
                }
            }
        }
    }
    for t in &pod.required_anti_affinity {
        for (node, existing) in candidates(t) {
            if node.node.is_some() && t.matches(existing, ns_labels(cache, &existing.namespace)) {
                bump(&mut s.anti, cache, node, &t.topology_key, 1);
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
                bump(&mut self.existing_anti, cache, node, &t.topology_key, delta);
            }
        }
        if !pod.required_affinity.is_empty() && matches_all(&pod.required_affinity, existing, ens) {
            for t in &pod.required_affinity {
                bump(&mut self.affinity, cache, node, &t.topology_key, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if t.matches(existing, ens) {
                bump(&mut self.anti, cache, node, &t.topology_key, delta);
            }
        }
    }
}

pub fn filter(s: &PreFilter, cache: &Cache, pod: &PodInfo, node: &NodeInfo) -> Result<(), Rejection> {
    // Required affinity: every term's topology must be on the node and hold a matching pod,
    // unless no pod anywhere matches and the pod matches its own terms (the first of a group).
    if !pod.required_affinity.is_empty() {
        let mut exist = true;
        for k in &s.affinity_keys {
            match k.and_then(|k| Some((k, node.label_id(k)?))) {
                Some((k, v)) => {
                    if s.affinity.get(k, v) <= 0 {
                        exist = false;
                    }
                }
                None => return Err(Rejection::unresolvable("InterPodAffinity", "node(s) didn't match pod affinity rules")),
            }
        }
        let first_of_group = || s.affinity.is_empty() && matches_all(&pod.required_affinity, pod, ns_labels(cache, &pod.namespace));
        if !exist && !first_of_group() {
            return Err(Rejection::unresolvable("InterPodAffinity", "node(s) didn't match pod affinity rules"));
        }
    }
    if !s.anti.is_empty() {
        for k in s.anti_keys.iter().flatten() {
            if node.label_id(*k).is_some_and(|v| s.anti.get(*k, v) > 0) {
                return Err(Rejection::unschedulable("InterPodAffinity", "node(s) didn't match pod anti-affinity rules"));
            }
        }
    }
    // The few topology keys placed pods' terms use, each looked up on the node.
    if !s.existing_anti.is_empty() && s.existing_anti.any_positive(node) {
        return Err(Rejection::unschedulable("InterPodAffinity", "node(s) didn't satisfy existing pods anti-affinity rules"));
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
    if !has_constraints && cache.scoring_pods() == 0 {
        // Nothing placed has terms that score others: the walk below would find nothing.
        return None;
    }
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
    fn counts_track_nonzero_pairs() {
        // Keys 0 (zone) and 1 (host); values by id.
        let mut c = Counts::default();
        c.add(0, 0, 2);
        c.add(0, 1, 1);
        c.add(1, 3, 1);
        assert_eq!((c.get(0, 0), c.get(0, 1), c.get(1, 3), c.get(1, 2), c.get(1, 9), c.get(2, 0)), (2, 1, 1, 0, 0, 0));
        assert_eq!(c.nonzero, 3);
        c.add(0, 0, -2);
        c.add(1, 3, -1);
        c.add(0, 2, 0);
        assert_eq!((c.get(0, 0), c.get(0, 1), c.nonzero), (0, 1, 1));
        assert!(!c.is_empty());
        c.add(0, 1, -1);
        assert!(c.is_empty());
        // A pair can go below zero (a what-if removal) and back.
        c.add(1, 0, -1);
        assert!(!c.is_empty());
        c.add(1, 0, 1);
        assert!(c.is_empty());
    }
}
