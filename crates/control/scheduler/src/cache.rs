//! The scheduler's picture of the cluster, fed only by watches: nodes with the pods on them
//! (bound, or assumed: placed by this scheduler while the binding is in flight), namespaces'
//! labels (for affinity terms' namespace selectors), and the selectors of Services,
//! ReplicaSets and StatefulSets (for the default topology spreading). Scheduling a pod reads
//! only this; nothing here does I/O.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::info::{NodeInfo, PodInfo};
use crate::labels::{Labels, Selector};

/// Where a pod known to the cache is.
#[derive(Debug)]
struct Placed {
    node: String,
    /// Placed by this scheduler, not yet seen bound through the watch.
    assumed: bool,
}

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
}

impl Cache {
    fn slot(&mut self, name: &str) -> &mut NodeInfo {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.nodes.push(NodeInfo { name: name.to_string(), ..Default::default() });
                self.index.insert(name.to_string(), self.nodes.len() - 1);
                self.nodes.len() - 1
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
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.index.insert(moved, i);
        }
    }

    /// A node added or changed; what changed that could make a pod fit (see
    /// [`NodeChange`]).
    pub fn set_node(&mut self, node: Node) -> NodeChange {
        let name = node.metadata.name.clone().unwrap_or_default();
        let slot = self.slot(&name);
        let was_real = slot.node.is_some();
        let before = (slot.labels.clone(), slot.allocatable.clone(), slot.taints.clone(), slot.unschedulable);
        slot.set_node(Arc::new(node));
        let after = (&slot.labels, &slot.allocatable, &slot.taints, slot.unschedulable);
        if !was_real {
            self.real_nodes += 1;
            return NodeChange::Added;
        }
        if before.0 != *after.0 || before.1 != *after.1 || before.2 != *after.2 || before.3 != after.3 {
            NodeChange::Scheduling
        } else {
            NodeChange::Other
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(&i) = self.index.get(name) {
            if self.nodes[i].node.take().is_some() {
                self.real_nodes -= 1;
            }
        }
        self.drop_slot_if_empty(name);
    }

    /// Names of nodes that have a Node object.
    pub fn node_names(&self) -> Vec<String> {
        self.nodes.iter().filter(|n| n.node.is_some()).map(|n| n.name.clone()).collect()
    }

    /// A bound pod seen through the watch (confirms an assumed one). Returns whether it was
    /// new to the cache.
    pub fn add_pod(&mut self, pod: Arc<PodInfo>) -> bool {
        let uid = pod.uid.clone();
        let node = pod.node_name.clone();
        let new = match self.pods.get(&uid) {
            Some(p) => {
                let old_node = p.node.clone();
                self.slot(&old_node).remove_pod(&uid);
                self.drop_slot_if_empty(&old_node);
                false
            }
            None => true,
        };
        self.nominated.remove(&uid);
        self.slot(&node).add_pod(pod);
        self.pods.insert(uid, Placed { node, assumed: false });
        new
    }

    /// Count `pod` on `node` before its binding is confirmed.
    pub fn assume(&mut self, pod: &PodInfo, node: &str) {
        let placed = Arc::new(pod.on_node(node));
        self.nominated.remove(&pod.uid);
        self.slot(node).add_pod(placed);
        self.pods.insert(pod.uid.clone(), Placed { node: node.to_string(), assumed: true });
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
        if let Some(p) = self.pods.remove(uid) {
            self.slot(&p.node).remove_pod(uid);
            self.drop_slot_if_empty(&p.node);
        }
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
