//! What the scheduler knows about one pod and one node, computed once from the typed objects
//! when they arrive (requests, parsed affinity terms, tolerations, ports), so that scheduling
//! a pod never re-parses anything.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint, Toleration};

use crate::labels::{Labels, Selector};
use crate::resources::{pod_requests, Resources};

/// A term's selector, namespaces, namespace selector and topology key.
pub type TermKey = (Selector, BTreeSet<String>, Option<Selector>, String);

/// A pod affinity or anti-affinity term, parsed.
#[derive(Clone, Debug)]
pub struct AffinityTerm {
    pub selector: Selector,
    /// Namespaces whose pods the term considers (the pod's own when the term names none and
    /// has no namespace selector).
    pub namespaces: BTreeSet<String>,
    /// `None`: no selector (matches no namespace); `Some(empty)`: every namespace.
    pub namespace_selector: Option<Selector>,
    pub topology_key: String,
    pub weight: i64,
}

impl AffinityTerm {
    fn parse(t: &PodAffinityTerm, own_ns: &str, weight: i32, own_labels: &Labels) -> AffinityTerm {
        // A nil label selector matches nothing.
        let mut selector = t.label_selector.as_ref().map_or_else(Selector::nothing, Selector::parse);
        for k in t.match_label_keys.iter().flatten() {
            if let Some(v) = own_labels.get(k) {
                selector.add_equals(k, v);
            }
        }
        let mut namespaces: BTreeSet<String> = t.namespaces.iter().flatten().cloned().collect();
        let namespace_selector = t.namespace_selector.as_ref().map(Selector::parse);
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.insert(own_ns.to_string());
        }
        AffinityTerm { selector, namespaces, namespace_selector, topology_key: t.topology_key.clone(), weight: weight as i64 }
    }

    /// What makes two terms the same term (for grouping placed pods' terms).
    pub fn key(&self) -> TermKey {
        (self.selector.clone(), self.namespaces.clone(), self.namespace_selector.clone(), self.topology_key.clone())
    }

    /// Whether `pod` (in a namespace labelled `ns_labels`) is one of the pods this term means.
    pub fn matches(&self, pod: &PodInfo, ns_labels: &Labels) -> bool {
        let ns_ok = self.namespaces.contains(&pod.namespace) || self.namespace_selector.as_ref().is_some_and(|s| s.matches(ns_labels));
        ns_ok && self.selector.matches(&pod.labels)
    }
}

/// A host port a container asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Two uses of one port conflict when protocol and port are equal and either address is
    /// the wildcard or both are the same.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        let wild = |ip: &str| ip.is_empty() || ip == "0.0.0.0" || ip == "::";
        self.port == o.port && self.protocol == o.protocol && (wild(&self.ip) || wild(&o.ip) || self.ip == o.ip)
    }
}

/// One pod, as the scheduler sees it.
#[derive(Clone, Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub node_name: String,
    pub priority: i32,
    pub requests: Resources,
    /// Requests with the scoring defaults for containers that request nothing.
    pub non_zero: Resources,
    pub ports: Vec<HostPort>,
    pub tolerations: Vec<Toleration>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<AffinityTerm>,
    pub preferred_anti_affinity: Vec<AffinityTerm>,
    pub terminating: bool,
    /// The PersistentVolumeClaims the pod mounts (a generic ephemeral volume's is
    /// `<pod>-<volume>`).
    pub claims: Vec<String>,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        // Read in place (no copy of the spec: this runs for every pod the watch brings and
        // every assumed placement).
        let no_spec;
        let spec = match &pod.spec {
            Some(s) => s,
            None => {
                no_spec = k8s_openapi::api::core::v1::PodSpec::default();
                &no_spec
            }
        };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let mut ports = Vec::new();
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    ports.push(HostPort { ip: p.host_ip.clone().unwrap_or_default(), protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()), port: hp });
                }
            }
        }
        let (mut ra, mut raa, mut pa, mut paa) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        if let Some(aff) = &spec.affinity {
            if let Some(a) = &aff.pod_affinity {
                ra = a.required_during_scheduling_ignored_during_execution.iter().flatten().map(|t| AffinityTerm::parse(t, &namespace, 1, &labels)).collect();
                pa = a.preferred_during_scheduling_ignored_during_execution.iter().flatten().map(|w| AffinityTerm::parse(&w.pod_affinity_term, &namespace, w.weight, &labels)).collect();
            }
            if let Some(a) = &aff.pod_anti_affinity {
                raa = a.required_during_scheduling_ignored_during_execution.iter().flatten().map(|t| AffinityTerm::parse(t, &namespace, 1, &labels)).collect();
                paa = a.preferred_during_scheduling_ignored_during_execution.iter().flatten().map(|w| AffinityTerm::parse(&w.pod_affinity_term, &namespace, w.weight, &labels)).collect();
            }
        }
        let pod_name = pod.metadata.name.as_deref().unwrap_or("");
        let claims = spec
            .volumes
            .iter()
            .flatten()
            .filter_map(|v| match (&v.persistent_volume_claim, &v.ephemeral) {
                (Some(c), _) => Some(c.claim_name.clone()),
                (None, Some(_)) => Some(format!("{pod_name}-{}", v.name)),
                (None, None) => None,
            })
            .collect();
        PodInfo {
            claims,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            node_name: spec.node_name.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            requests: pod_requests(&spec, false),
            non_zero: pod_requests(&spec, true),
            ports,
            tolerations: spec.tolerations.clone().unwrap_or_default(),
            required_affinity: ra,
            required_anti_affinity: raa,
            preferred_affinity: pa,
            preferred_anti_affinity: paa,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            namespace,
            labels,
            pod,
        }
    }

    /// The same pod placed on `node` (an assumed pod: bound as far as the scheduler is
    /// concerned before the API server has said so). Shares the pod object, whose
    /// `spec.nodeName` stays unset: the scheduler reads a placed pod's node from `node_name`
    /// only (cloning and re-reading the whole object here was a per-pod cost on the
    /// scheduling thread).
    pub fn on_node(&self, node: &str) -> PodInfo {
        PodInfo { node_name: node.to_string(), ..self.clone() }
    }

    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether, placed, this pod's terms score other pods (required or preferred affinity,
    /// preferred anti-affinity; a required anti-affinity term only filters).
    pub fn scores_others(&self) -> bool {
        !(self.required_affinity.is_empty() && self.preferred_affinity.is_empty() && self.preferred_anti_affinity.is_empty())
    }

    pub fn spec(&self) -> Option<&k8s_openapi::api::core::v1::PodSpec> {
        self.pod.spec.as_ref()
    }
}

/// Node label keys and values as small numbers, so that the topology plugins look a node's
/// domain up with an integer comparison and index their per-domain counts by it, instead of
/// comparing and hashing label strings for each of thousands of nodes per pod. Ids are handed
/// out as nodes arrive and never reused; values are numbered per key from 0.
#[derive(Default, Debug)]
pub struct Topology {
    keys: HashMap<String, u32>,
    /// Per key id: value -> id.
    values: Vec<HashMap<String, u32>>,
}

impl Topology {
    /// The id of a label key some node has had, if any.
    pub fn key(&self, key: &str) -> Option<u32> {
        self.keys.get(key).copied()
    }

    /// The id of a value of key `key` some node has had, if any.
    pub fn value(&self, key: u32, value: &str) -> Option<u32> {
        self.values.get(key as usize).and_then(|m| m.get(value)).copied()
    }

    /// How many values of key `key` have ids (every id is below this).
    pub fn num_values(&self, key: u32) -> usize {
        self.values.get(key as usize).map_or(0, HashMap::len)
    }

    /// The ids of one node's labels, sorted by key id.
    pub fn intern(&mut self, labels: &Labels) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = labels
            .iter()
            .map(|(k, v)| {
                let next = self.keys.len() as u32;
                let key = *self.keys.entry(k.clone()).or_insert(next);
                if key as usize == self.values.len() {
                    self.values.push(HashMap::new());
                }
                let values = &mut self.values[key as usize];
                let next = values.len() as u32;
                (key, *values.entry(v.clone()).or_insert(next))
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// One node and the pods on it (bound or assumed).
#[derive(Debug, Default, Clone)]
pub struct NodeInfo {
    pub name: String,
    /// This node's index in [`crate::cache::Cache::nodes`] (kept by the cache).
    pub slot: usize,
    /// `None` while only pods naming this node have been seen.
    pub node: Option<Arc<Node>>,
    pub labels: Labels,
    /// `labels` as [`Topology`] ids (key, value), sorted by key id; set by the cache.
    pub label_ids: Vec<(u32, u32)>,
    pub allocatable: Resources,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub pods: Vec<Arc<PodInfo>>,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub used_ports: Vec<HostPort>,
    /// Pods on the node whose terms score other pods / with required anti-affinity.
    pub with_affinity: usize,
    pub with_required_anti_affinity: usize,
}

impl NodeInfo {
    /// The id of this node's value of the label with key id `key` (see [`Topology`]).
    pub fn label_id(&self, key: u32) -> Option<u32> {
        // A node has a handful of labels: a scan beats a search.
        self.label_ids.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    pub fn set_node(&mut self, node: Arc<Node>) {
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let status = node.status.clone().unwrap_or_default();
        // A node that reports no allocatable uses its capacity (as kubelet reports both).
        let list = status.allocatable.or(status.capacity).unwrap_or_default();
        self.allocatable = Resources::from_list(&list);
        let spec = node.spec.clone().unwrap_or_default();
        self.taints = spec.taints.unwrap_or_default();
        self.unschedulable = spec.unschedulable.unwrap_or(false);
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.node = Some(node);
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_requested.add(&p.non_zero);
        self.used_ports.extend(p.ports.iter().cloned());
        if p.scores_others() {
            self.with_affinity += 1;
        }
        if !p.required_anti_affinity.is_empty() {
            self.with_required_anti_affinity += 1;
        }
        self.pods.push(p);
    }

    /// Remove the pod with this uid; whether it was there.
    pub fn remove_pod(&mut self, uid: &str) -> bool {
        let Some(i) = self.pods.iter().position(|p| p.uid == uid) else { return false };
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_requested.sub(&p.non_zero);
        for hp in &p.ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if p.scores_others() {
            self.with_affinity -= 1;
        }
        if !p.required_anti_affinity.is_empty() {
            self.with_required_anti_affinity -= 1;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn topology_ids_are_stable_per_key_and_value() {
        let mut t = Topology::default();
        let a = t.intern(&labels(&[("zone", "a"), ("host", "n1")]));
        let b = t.intern(&labels(&[("host", "n2"), ("zone", "a"), ("rack", "")]));
        let (zone, host, rack) = (t.key("zone").expect("zone"), t.key("host").expect("host"), t.key("rack").expect("rack"));
        assert_eq!(t.key("other"), None);
        // Sorted by key id; one value id per distinct value of a key, numbered from 0.
        assert!(a.windows(2).all(|w| w[0].0 < w[1].0) && b.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!((t.value(zone, "a"), t.value(host, "n1"), t.value(host, "n2"), t.value(rack, ""), t.value(zone, "b")), (Some(0), Some(0), Some(1), Some(0), None));
        assert_eq!((t.num_values(zone), t.num_values(host), t.num_values(rack)), (1, 2, 1));
        let node = NodeInfo { label_ids: b, ..Default::default() };
        assert_eq!((node.label_id(zone), node.label_id(host), node.label_id(rack)), (Some(0), Some(1), Some(0)));
        let node = NodeInfo { label_ids: a, ..Default::default() };
        assert_eq!(node.label_id(rack), None);
    }
}
