//! The scheduler's picture of the cluster, fed only by watches: nodes with the pods on them
//! (bound, or assumed: placed by this scheduler while the binding is in flight), namespaces'
//! labels (for affinity terms' namespace selectors), and the selectors of Services,
//! ReplicaSets and StatefulSets (for the default topology spreading), and the topology
//! spreading counts of the selectors scheduling has asked about. Scheduling a pod reads only
//! this; nothing here does I/O.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::info::{AffinityTerm, NodeInfo, PodInfo, TermKey, Topology};
use crate::labels::{Labels, Selector};

/// Where a pod known to the cache is.
#[derive(Debug)]
struct Placed {
    node: String,
    /// Placed by this scheduler, not yet seen bound through the watch.
    assumed: bool,
    info: Arc<PodInfo>,
}

/// One distinct required anti-affinity term of placed pods, and how many pods on each node
/// carry it.
#[derive(Debug)]
pub struct AntiTerm {
    pub term: AffinityTerm,
    pub nodes: HashMap<String, i64>,
}

/// Placed pods of one namespace that one selector matches, counted per value of one node label
/// (PodTopologySpread's counts, for its filter and its score). Built the first time scheduling
/// asks for them, then kept up to date by every placement, so a pod of a 10,000-pod ReplicaSet
/// reads its domains' counts instead of matching the other 9,999 pods.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SpreadCounts {
    /// Matching pods (not terminating) on nodes with a Node object, per value of the label.
    pub pods: HashMap<String, i64>,
    /// Matching pods on nodes with a Node object and without the label.
    pub unlabeled: i64,
    /// Nodes with a Node object, per value of the label: the domains.
    pub domains: HashMap<String, i64>,
}

/// Most (selector, label) counts kept; past it they are all dropped and rebuilt on demand.
const MAX_SPREAD_COUNTS: usize = 1024;

#[derive(Default, Debug)]
pub struct Cache {
    /// Every node (with a Node object or not), in a stable order for round-robin search.
    pub nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    /// Nodes with a Node object.
    real_nodes: usize,
    pods: HashMap<String, Placed>,
    pub namespaces: HashMap<String, Labels>,
    /// Service selectors by namespace.
    pub services: HashMap<(String, String), Labels>,
    /// ReplicaSet and StatefulSet selectors by (kind, namespace, name).
    pub workloads: HashMap<(&'static str, String, String), Selector>,
    /// Pods nominated to a node by preemption: (node, pod) by uid.
    pub nominated: HashMap<String, (String, Arc<PodInfo>)>,
    /// Placed pods' uids by namespace, label key and value: the pods a selector with an
    /// equality requirement can match, found without scanning the cluster.
    by_label: HashMap<String, HashMap<String, HashMap<String, HashSet<String>>>>,
    /// Placed pods' required anti-affinity terms, each distinct term once: an incoming pod is
    /// matched against each term once, not against every pod that carries it.
    anti_terms: HashMap<TermKey, AntiTerm>,
    /// [`SpreadCounts`] by namespace, then (selector, node label key). Behind a lock because
    /// scheduling reads the cache by shared reference; only the scheduling thread takes it.
    spread: Mutex<HashMap<String, HashMap<(Selector, String), SpreadCounts>>>,
    /// Matching pods (not terminating) per node slot, on nodes with a Node object, by
    /// namespace then selector: a hostname spreading domain's count is an index, not a scan
    /// of the node's pods. Built when first asked for, kept up to date after (as `spread`).
    /// Shared with the scoring of the pod being placed (no copy per pod); changed in place once
    /// that is done.
    host: Mutex<HashMap<String, HashMap<Selector, Arc<Vec<i64>>>>>,
    /// Node label keys and values as ids (each node's in [`NodeInfo::label_ids`]).
    pub topology: Topology,
    /// Placed pods whose terms score other pods ([`PodInfo::scores_others`]): while there are
    /// none, a pod without preferred terms skips InterPodAffinity's scoring walk.
    scoring_pods: usize,
}

impl Cache {
    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                let slot = self.nodes.len();
                self.nodes.push(NodeInfo { name: name.to_string(), slot, ..Default::default() });
                self.index.insert(name.to_string(), slot);
                slot
            }
        };
        &mut self.nodes[i]
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|i| &self.nodes[*i])
    }

    /// Nodes with a Node object.
    pub fn num_nodes(&self) -> usize {
        self.real_nodes
    }

    fn drop_slot_if_empty(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else { return };
        if self.nodes[i].node.is_some() || !self.nodes[i].pods.is_empty() {
            return;
        }
        self.index.remove(name);
        self.nodes.swap_remove(i);
        let last = self.nodes.len();
        // The last node moves into slot `i`: so do its per-slot counts (slot `i` held none).
        for per_slot in self.host.get_mut().unwrap_or_else(|e| e.into_inner()).values_mut().flat_map(HashMap::values_mut) {
            let per_slot = Arc::make_mut(per_slot);
            let moved = per_slot.get(last).copied().unwrap_or(0);
            if let Some(c) = per_slot.get_mut(i) {
                *c = moved;
            }
            per_slot.truncate(last);
        }
        if i < self.nodes.len() {
            self.nodes[i].slot = i;
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    /// A node added or changed; what changed that could make a pod fit (see
    /// [`NodeChange`]).
    pub fn set_node(&mut self, node: Node) -> NodeChange {
        let name = node.metadata.name.clone().unwrap_or_default();
        let label_ids = self.topology.intern(node.metadata.labels.as_ref().unwrap_or_else(|| crate::labels::empty()));
        let slot = self.slot(&name);
        slot.label_ids = label_ids;
        let was_real = slot.node.is_some();
        let before = (slot.labels.clone(), slot.allocatable.clone(), slot.taints.clone(), slot.unschedulable);
        slot.set_node(Arc::new(node));
        let relabelled = before.0 != slot.labels;
        let changed = relabelled || before.1 != slot.allocatable || before.2 != slot.taints || before.3 != slot.unschedulable;
        if !was_real || relabelled {
            // New domains, or pods counted under other values: count again when asked.
            self.forget_derived_counts();
        }
        if !was_real {
            self.real_nodes += 1;
            return NodeChange::Added;
        }
        if changed {
            NodeChange::Scheduling
        } else {
            NodeChange::Other
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(&i) = self.index.get(name) {
            if self.nodes[i].node.take().is_some() {
                self.real_nodes -= 1;
                self.forget_derived_counts();
            }
        }
        self.drop_slot_if_empty(name);
    }

    /// Names of nodes that have a Node object.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.node.is_some()).map(|n| n.name.clone()).collect()
    }

    /// Record (`delta` 1) or forget (−1) a placed pod in the label and anti-affinity indexes.
    fn index(&mut self, pod: &Arc<PodInfo>, node: &str, delta: i64) {
        if pod.scores_others() {
            self.scoring_pods = self.scoring_pods.wrapping_add_signed(delta as isize);
        }
        let keys = self.by_label.entry(pod.namespace.clone()).or_default();
        for (k, v) in &pod.labels {
            if delta > 0 {
                keys.entry(k.clone()).or_default().entry(v.clone()).or_default().insert(pod.uid.clone());
            } else if let Some(values) = keys.get_mut(k) {
                if let Some(uids) = values.get_mut(v) {
                    uids.remove(&pod.uid);
                    if uids.is_empty() {
                        values.remove(v);
                    }
                }
                if values.is_empty() {
                    keys.remove(k);
                }
            }
        }
        if keys.is_empty() {
            self.by_label.remove(&pod.namespace);
        }
        let host = self.host.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(groups) = host.get_mut(&pod.namespace).filter(|_| !pod.terminating) {
            if let Some(&slot) = self.index.get(node).filter(|&&i| self.nodes[i].node.is_some()) {
                for (sel, per_slot) in groups.iter_mut() {
                    if sel.matches(&pod.labels) {
                        let per_slot = Arc::make_mut(per_slot);
                        if per_slot.len() <= slot {
                            per_slot.resize(slot + 1, 0);
                        }
                        per_slot[slot] += delta;
                    }
                }
            }
        }
        let spread = self.spread.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(groups) = spread.get_mut(&pod.namespace).filter(|_| !pod.terminating) {
            if let Some(n) = self.index.get(node).map(|&i| &self.nodes[i]).filter(|n| n.node.is_some()) {
                for ((sel, key), counts) in groups.iter_mut() {
                    if !sel.matches(&pod.labels) {
                        continue;
                    }
                    let Some(v) = n.labels.get(key) else {
                        counts.unlabeled += delta;
                        continue;
                    };
                    match counts.pods.get_mut(v).map(|c| {
                        *c += delta;
                        *c
                    }) {
                        Some(0) => {
                            counts.pods.remove(v);
                        }
                        Some(_) => {}
                        None => {
                            counts.pods.insert(v.clone(), delta);
                        }
                    }
                }
            }
        }
        for t in &pod.required_anti_affinity {
            let key = t.key();
            let group = self.anti_terms.entry(key.clone()).or_insert_with(|| AntiTerm { term: t.clone(), nodes: HashMap::new() });
            let n = group.nodes.entry(node.to_string()).or_default();
            *n += delta;
            if *n <= 0 {
                group.nodes.remove(node);
            }
            if group.nodes.is_empty() {
                self.anti_terms.remove(&key);
            }
        }
    }

    /// Take a placed pod out of its node and the indexes.
    fn unplace(&mut self, uid: &str) -> Option<Placed> {
        let p = self.pods.remove(uid)?;
        self.index(&p.info, &p.node, -1);
        self.slot(&p.node).remove_pod(uid);
        self.drop_slot_if_empty(&p.node);
        Some(p)
    }

    fn place(&mut self, pod: Arc<PodInfo>, node: &str, assumed: bool) {
        self.index(&pod, node, 1);
        self.slot(node).add_pod(pod.clone());
        self.pods.insert(pod.uid.clone(), Placed { node: node.to_string(), assumed, info: pod });
    }

    /// A bound pod seen through the watch (confirms an assumed one). Returns whether it was
    /// new to the cache.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) -> bool {
        let new = self.unplace(&pod.uid).is_none();
        self.nominated.remove(&pod.uid);
        let node = pod.node_name.clone();
        self.place(pod, &node, false);
        new
    }

    /// Count `pod` on `node` before its binding is confirmed.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        let placed = Arc::new(pod.on_node(node));
        self.unplace(&pod.uid);
        self.nominated.remove(&pod.uid);
        self.place(placed, node, true);
    }

    /// How many placed pods have terms that score other pods.
    pub fn scoring_pods(&self) -> usize {
        self.scoring_pods
    }

    /// Each distinct required anti-affinity term of the placed pods, with the nodes that hold
    /// pods carrying it.
    pub fn anti_terms(&self) -> impl Iterator<Item = &AntiTerm> {
        self.anti_terms.values()
    }

    /// Placed pods that a term or constraint selecting `sel` in `namespaces` (`None`: any
    /// namespace) may mean, with their nodes (nodes without a Node object included): those
    /// holding the labels of one of `sel`'s equality requirements when it has one, else all.
    /// A superset: the caller still matches each pod.
    pub fn candidates<'a>(&'a self, namespaces: Option<&BTreeSet<String>>, sel: &Selector) -> Vec<(&'a NodeInfo, &'a Arc<PodInfo>)> {
        let (Some(namespaces), Some((key, values))) = (namespaces, sel.narrowing()) else {
            return self.nodes.iter().flat_map(|n| n.pods.iter().map(move |p| (n, p))).collect();
        };
        let mut out = Vec::new();
        for ns in namespaces {
            let Some(by_value) = self.by_label.get(ns).and_then(|keys| keys.get(key)) else { continue };
            for v in values {
                for uid in by_value.get(v).into_iter().flatten() {
                    if let Some(p) = self.pods.get(uid) {
                        if let Some(n) = self.node(&p.node) {
                            out.push((n, &p.info));
                        }
                    }
                }
            }
        }
        out
    }

    /// How many pods [`Cache::candidates`] would return when it narrows by a label (without
    /// collecting them); `None` when it would return every placed pod.
    pub fn candidates_len(&self, namespaces: &BTreeSet<String>, sel: &Selector) -> Option<usize> {
        let (key, values) = sel.narrowing()?;
        let by_value = |ns: &String| self.by_label.get(ns).and_then(|keys| keys.get(key));
        Some(namespaces.iter().filter_map(by_value).map(|m| values.iter().filter_map(|v| m.get(v)).map(HashSet::len).sum::<usize>()).sum())
    }

    /// `f` of the [`SpreadCounts`] of the placed pods in `ns` that `sel` matches, over node
    /// label `key`: counted from the label index the first time, kept up to date after.
    pub fn spread_counts<R>(&self, ns: &str, sel: &Selector, key: &str, f: impl FnOnce(&SpreadCounts) -> R) -> R {
        let mut groups = self.spread.lock().unwrap_or_else(|e| e.into_inner());
        let k = (sel.clone(), key.to_string());
        if let Some(c) = groups.get(ns).and_then(|m| m.get(&k)) {
            return f(c);
        }
        if groups.values().map(HashMap::len).sum::<usize>() >= MAX_SPREAD_COUNTS {
            groups.clear();
        }
        let counts = self.count_spread(ns, sel, key);
        let out = f(&counts);
        groups.entry(ns.to_string()).or_default().insert(k, counts);
        out
    }

    /// The matching pods in `ns` (not terminating) of `sel` on each node with a Node object,
    /// by node slot ([`NodeInfo::slot`]; a slot past the end has none): counted from the label
    /// index the first time, kept up to date after.
    pub fn host_counts(&self, ns: &str, sel: &Selector) -> Arc<Vec<i64>> {
        let mut groups = self.host.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = groups.get(ns).and_then(|m| m.get(sel)) {
            return c.clone();
        }
        if groups.values().map(HashMap::len).sum::<usize>() >= MAX_SPREAD_COUNTS {
            groups.clear();
        }
        let counts = Arc::new(self.count_host(ns, sel));
        groups.entry(ns.to_string()).or_default().insert(sel.clone(), counts.clone());
        counts
    }

    /// Drop the spreading and per-slot counts (nodes added, removed or relabelled): they are
    /// counted again when next asked for.
    fn forget_derived_counts(&mut self) {
        self.spread.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
        self.host.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// [`Cache::host_counts`] counted from scratch.
    fn count_host(&self, ns: &str, sel: &Selector) -> Vec<i64> {
        let mut per_slot = vec![0; self.nodes.len()];
        let nss = BTreeSet::from([ns.to_string()]);
        for (n, p) in self.candidates(Some(&nss), sel) {
            if n.node.is_some() && crate::plugins::spread::counts_for(p, sel, ns) {
                per_slot[n.slot] += 1;
            }
        }
        per_slot
    }

    /// [`SpreadCounts`] counted from scratch.
    fn count_spread(&self, ns: &str, sel: &Selector, key: &str) -> SpreadCounts {
        let mut c = SpreadCounts::default();
        for n in self.nodes.iter().filter(|n| n.node.is_some()) {
            if let Some(v) = n.labels.get(key) {
                *c.domains.entry(v.clone()).or_default() += 1;
            }
        }
        let nss = BTreeSet::from([ns.to_string()]);
        for (n, p) in self.candidates(Some(&nss), sel) {
            if n.node.is_some() && crate::plugins::spread::counts_for(p, sel, ns) {
                match n.labels.get(key) {
                    Some(v) => *c.pods.entry(v.clone()).or_default() += 1,
                    None => c.unlabeled += 1,
                }
            }
        }
        c
    }

    /// Whether this uid is assumed (placed, binding in flight or not yet seen).
    pub fn is_assumed(&self, uid: &str) -> bool {
        self.pods.get(uid).is_some_and(|p| p.assumed)
    }

    /// Whether the cache counts this pod on a node (assumed or bound).
    pub fn has_pod(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Undo [`Cache::assume`] (the binding failed), or forget a deleted pod.
    pub fn remove_pod(&mut self, uid: &str) {
        self.nominated.remove(uid);
        self.unplace(uid);
    }

    /// Uids of all pods in the cache that are not assumed (for relist reconciliation).
    pub fn bound_uids(&self) -> Vec<String> {
        self.pods.iter().filter(|(_, p)| !p.assumed).map(|(u, _)| u.clone()).collect()
    }

    /// The selector of pods a pod's default spreading counts (upstream's `DefaultSelector`):
    /// the selectors of the Services selecting it, and of the ReplicaSet or StatefulSet that
    /// controls it. Empty: no default spreading.
    pub fn default_selector(&self, pod: &PodInfo) -> Selector {
        let mut sel = Selector::default();
        let mut merged = Labels::new();
        for ((ns, _), s) in &self.services {
            if *ns == pod.namespace && !s.is_empty() && Selector::from_map(s).matches(&pod.labels) {
                merged.extend(s.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        sel.extend(&Selector::from_map(&merged));
        for o in pod.pod.metadata.owner_references.iter().flatten() {
            if o.controller != Some(true) {
                continue;
            }
            let kind = match (o.api_version.as_str(), o.kind.as_str()) {
                ("apps/v1", "ReplicaSet") => "ReplicaSet",
                ("apps/v1", "StatefulSet") => "StatefulSet",
                _ => continue,
            };
            if let Some(s) = self.workloads.get(&(kind, pod.namespace.clone(), o.name.clone())) {
                sel.extend(s);
            }
        }
        sel
    }
}

/// What a node event changed, for re-queueing unschedulable pods.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum NodeChange {
    Added,
    /// Labels, allocatable, taints or `unschedulable` changed.
    Scheduling,
    /// Only status the scheduler does not read (heartbeats, conditions).
    Other,
}

/// Whether a pod from the watch is bound (has a node).
pub fn is_bound(pod: &Pod) -> bool {
    pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::info::PodInfo;

    fn node(name: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.uid = Some(format!("uid-{name}"));
        n.metadata.labels = Some([("kubernetes.io/hostname".to_string(), name.to_string())].into());
        n
    }

    fn pod(name: &str, ns: &str, group: &str, anti: bool) -> Arc<PodInfo> {
        let anti = if anti {
            format!(
                ", affinity: {{podAntiAffinity: {{requiredDuringSchedulingIgnoredDuringExecution: [{{labelSelector: {{matchLabels: {{group: {group}}}}}, topologyKey: kubernetes.io/hostname}}]}}}}"
            )
        } else {
            String::new()
        };
        let yaml = format!("metadata: {{name: {name}, namespace: {ns}, uid: uid-{name}, labels: {{group: {group}, app: web}}}}\nspec: {{containers: [{{name: c, image: i}}]{anti}}}");
        Arc::new(PodInfo::new(Arc::new(serde_yaml_ng::from_str(&yaml).expect("pod"))))
    }

    /// The indexes against a scan of every node's pods.
    fn check(c: &Cache) {
        let selectors = [
            ("default", Selector::from_map(&[("group".to_string(), "g1".to_string())].into())),
            ("default", Selector::from_map(&[("app".to_string(), "web".to_string())].into())),
            ("other", Selector::from_map(&[("group".to_string(), "g1".to_string())].into())),
            ("default", Selector::default()),
        ];
        for (ns, sel) in &selectors {
            let nss = BTreeSet::from([ns.to_string()]);
            let mut got: Vec<(String, String)> =
                c.candidates(Some(&nss), sel).into_iter().filter(|(_, p)| p.namespace == *ns && sel.matches(&p.labels)).map(|(n, p)| (n.name.clone(), p.uid.clone())).collect();
            let mut want: Vec<(String, String)> =
                c.nodes.iter().flat_map(|n| n.pods.iter().filter(|p| p.namespace == *ns && sel.matches(&p.labels)).map(move |p| (n.name.clone(), p.uid.clone()))).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{ns} {sel:?}");
        }
        let mut want: HashMap<TermKey, HashMap<String, i64>> = HashMap::new();
        for n in &c.nodes {
            for p in &n.pods {
                for t in &p.required_anti_affinity {
                    *want.entry(t.key()).or_default().entry(n.name.clone()).or_default() += 1;
                }
            }
        }
        let got: HashMap<TermKey, HashMap<String, i64>> = c.anti_terms().map(|g| (g.term.key(), g.nodes.clone())).collect();
        assert_eq!(got, want);
        // The spread counts kept up to date since they were first asked for, against counting
        // again (the first call of a pass builds them; later passes read the kept ones).
        for (ns, sel) in &selectors {
            for key in ["kubernetes.io/hostname", "zone"] {
                let kept = c.spread_counts(ns, sel, key, SpreadCounts::clone);
                assert_eq!(kept, c.count_spread(ns, sel, key), "{ns} {sel:?} {key}");
            }
            // The per-slot counts against each node's pods (slots past the end hold none).
            let kept = c.host_counts(ns, sel);
            let want: Vec<i64> = c
                .nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    assert_eq!(n.slot, i, "{}'s slot", n.name);
                    if n.node.is_none() {
                        return 0;
                    }
                    n.pods.iter().filter(|p| !p.terminating && p.namespace == *ns && sel.matches(&p.labels)).count() as i64
                })
                .collect();
            let got: Vec<i64> = (0..c.nodes.len()).map(|i| kept.get(i).copied().unwrap_or(0)).collect();
            assert_eq!(got, want, "per slot: {ns} {sel:?}");
            assert!(kept.iter().skip(c.nodes.len()).all(|n| *n == 0), "past the end: {kept:?}");
        }
    }

    #[test]
    fn label_and_anti_affinity_indexes_follow_placements() {
        let mut c = Cache::default();
        for i in 0..4 {
            c.set_node(node(&format!("n{i}")));
        }
        check(&c);
        // Assumed, then seen bound (on another node than assumed, with other labels).
        let a = pod("a", "default", "g1", true);
        c.assume(&a, "n0");
        check(&c);
        assert_eq!(c.anti_terms().count(), 1);
        c.add_pod(Arc::new(pod("a", "default", "g2", true).on_node("n1")));
        check(&c);
        assert!(c.candidates(Some(&BTreeSet::from(["default".to_string()])), &Selector::from_map(&[("group".to_string(), "g1".to_string())].into())).is_empty());
        for (i, (ns, g, anti)) in [("default", "g1", true), ("default", "g1", false), ("other", "g1", true), ("default", "g2", true)].iter().enumerate() {
            c.add_pod(Arc::new(pod(&format!("p{i}"), ns, g, *anti).on_node(&format!("n{}", i % 4))));
            check(&c);
        }
        // A pod on a node with no Node object yet, then the node removed with pods left.
        c.add_pod(Arc::new(pod("q", "default", "g1", true).on_node("ghost")));
        check(&c);
        // Nodes labelled with a zone (counts per zone move), the ghost node registered.
        for (i, zone) in [(1, "z1"), (2, "z1"), (3, "z2")] {
            let mut n = node(&format!("n{i}"));
            n.metadata.labels.get_or_insert_with(Default::default).insert("zone".into(), zone.into());
            c.set_node(n);
            check(&c);
        }
        c.set_node(node("ghost"));
        check(&c);
        c.add_pod(Arc::new(pod("r", "default", "g1", false).on_node("n3")));
        check(&c);
        c.remove_pod("uid-r");
        check(&c);
        c.remove_node("n0");
        check(&c);
        for uid in ["uid-a", "uid-p0", "uid-p2", "uid-q", "uid-p1", "uid-p3", "uid-missing"] {
            c.remove_pod(uid);
            check(&c);
        }
        assert_eq!(c.anti_terms().count(), 0);
        assert!(c.by_label.is_empty());
    }
}
