//! The Node authorizer and NodeRestriction admission (upstream's, simplified): what a node's
//! own credentials (`system:node:NAME` in `system:nodes`) may do.
//!
//! - Secrets, ConfigMaps and PersistentVolumeClaims: read (get, or list/watch naming one object)
//!   only those referenced by a pod bound to the node (volumes, projected sources, env and
//!   envFrom, image pull secrets); ServiceAccounts: only `token` for the service accounts of
//!   its pods.
//! - Pods: get those bound to it; list/watch only with the field selector
//!   `spec.nodeName=NAME` (what kubelet asks); create (mirror pods bound to it), delete, update
//!   status and evict only pods bound to it (admission).
//! - Nodes: get/list/watch its own Node only (by name or `metadata.name=NAME`); create, update
//!   and patch it and its status (admission: only its own name).
//! - Leases: get/create/update/patch/delete its own in `kube-node-lease`.
//! - Everything else: the static rules of upstream's `system:node` ClusterRole (events, CSRs,
//!   services, token and access reviews, ...), taken from the bootstrap policy.
//!
//! A request none of these allow falls through to RBAC, as upstream's "no opinion".
//!
//! Which object a pod references is a graph kept from the watch cache ([`Graph`], a
//! [`crate::watchcache::Observer`] of every pod): no scan per request. The graph is only as
//! current as the cache, which trails the store (by a lot on a loaded server), and a node acts
//! on what it has already seen, so an honest node's request is never refused from a stale
//! view: a request about one pod (get, delete, status, eviction) that the graph does not
//! allow is decided by the pod in the store; any other graph denial is checked again once the
//! cache has reached the store's revision as of the request, waiting for as long as the cache
//! keeps applying changes ([`WatchCache::catch_up`]).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use serde_json::Value;

use strata_store::Store;

use crate::auth::User;
use crate::rbac::{Attributes, PolicyRule, Target};
use crate::watchcache::{Observer, WatchCache};

pub const NODES_GROUP: &str = "system:nodes";
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
const PODS: &str = "/registry/core/pods/";
/// A graph denial waits for the cache to reach the store's revision while the cache keeps
/// applying changes; it gives up when the cache has not moved for this long (not loaded, or
/// reloading after losing the store) ...
const CATCH_UP_STALL: Duration = Duration::from_secs(10);
/// ... or after this long in all.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// The node a user is, if it is a node (`system:node:NAME` in `system:nodes`).
pub fn identity(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (user.groups.iter().any(|g| g == NODES_GROUP) && !name.is_empty()).then_some(name)
}

/// Kinds of objects a pod references.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ref {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

/// What one pod says: its node and (kind, namespace, name) of every object it references.
#[derive(Clone, Debug, Default, PartialEq)]
struct PodRefs {
    node: String,
    refs: Vec<(Ref, String)>,
}

fn pod_refs(pod: &Value) -> Option<PodRefs> {
    let spec = &pod["spec"];
    let node = spec["nodeName"].as_str().filter(|n| !n.is_empty())?.to_string();
    let mut refs = Vec::new();
    let mut add = |kind: Ref, name: &Value| {
        if let Some(n) = name.as_str().filter(|n| !n.is_empty()) {
            if !refs.iter().any(|(k, have)| *k == kind && have == n) {
                refs.push((kind, n.to_string()));
            }
        }
    };
    let pod_name = pod["metadata"]["name"].as_str().unwrap_or("");
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(Ref::Secret, &v["secret"]["secretName"]);
        add(Ref::ConfigMap, &v["configMap"]["name"]);
        add(Ref::Claim, &v["persistentVolumeClaim"]["claimName"]);
        add(Ref::Secret, &v["csi"]["nodePublishSecretRef"]["name"]);
        for s in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(Ref::Secret, &s["secret"]["name"]);
            add(Ref::ConfigMap, &s["configMap"]["name"]);
        }
        if v["ephemeral"].is_object() {
            // A generic ephemeral volume's claim is named <pod>-<volume>.
            add(Ref::Claim, &Value::String(format!("{pod_name}-{}", v["name"].as_str().unwrap_or(""))));
        }
    }
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array().into_iter().flatten() {
            for e in c["env"].as_array().into_iter().flatten() {
                add(Ref::Secret, &e["valueFrom"]["secretKeyRef"]["name"]);
                add(Ref::ConfigMap, &e["valueFrom"]["configMapKeyRef"]["name"]);
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                add(Ref::Secret, &e["secretRef"]["name"]);
                add(Ref::ConfigMap, &e["configMapRef"]["name"]);
            }
        }
    }
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add(Ref::Secret, &s["name"]);
    }
    add(Ref::ServiceAccount, &spec["serviceAccountName"]);
    Some(PodRefs { node, refs })
}

/// The parts of a pod [`pod_refs`] reads, decoded from its JSON without the rest (a pod's
/// JSON is decoded for the graph at every change of a bound pod).
mod lean {
    use serde::Deserialize;

    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub(super) struct Pod {
        pub metadata: Meta,
        pub spec: Spec,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub(super) struct Meta {
        pub name: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct Spec {
        pub node_name: Option<String>,
        pub service_account_name: Option<String>,
        pub volumes: Option<Vec<Volume>>,
        pub init_containers: Option<Vec<Container>>,
        pub containers: Option<Vec<Container>>,
        pub ephemeral_containers: Option<Vec<Container>>,
        pub image_pull_secrets: Option<Vec<Named>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub(super) struct Named {
        pub name: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct Volume {
        pub name: Option<String>,
        pub secret: Option<SecretVolume>,
        pub config_map: Option<Named>,
        pub persistent_volume_claim: Option<ClaimVolume>,
        pub csi: Option<Csi>,
        pub projected: Option<Projected>,
        pub ephemeral: Option<serde_json::Map<String, serde_json::Value>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct SecretVolume {
        pub secret_name: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct ClaimVolume {
        pub claim_name: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct Csi {
        pub node_publish_secret_ref: Option<Named>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default)]
    pub(super) struct Projected {
        pub sources: Option<Vec<Source>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct Source {
        pub secret: Option<Named>,
        pub config_map: Option<Named>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct Container {
        pub env: Option<Vec<Env>>,
        pub env_from: Option<Vec<EnvFrom>>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct Env {
        pub value_from: Option<EnvSource>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct EnvSource {
        pub secret_key_ref: Option<Named>,
        pub config_map_key_ref: Option<Named>,
    }

    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    pub(super) struct EnvFrom {
        pub secret_ref: Option<Named>,
        pub config_map_ref: Option<Named>,
    }
}

/// [`pod_refs`] of a pod's JSON; a pod whose fields are not of the types it reads (never one
/// the API server wrote) is decoded whole.
fn pod_refs_json(json: &[u8]) -> Option<PodRefs> {
    let Ok(pod) = serde_json::from_slice::<lean::Pod>(json) else {
        return serde_json::from_slice::<Value>(json).ok().as_ref().and_then(pod_refs);
    };
    let spec = pod.spec;
    let node = spec.node_name.filter(|n| !n.is_empty())?;
    let mut refs: Vec<(Ref, String)> = Vec::new();
    let mut add = |kind: Ref, name: Option<&str>| {
        if let Some(n) = name.filter(|n| !n.is_empty()) {
            if !refs.iter().any(|(k, have)| *k == kind && have == n) {
                refs.push((kind, n.to_string()));
            }
        }
    };
    fn named(n: &Option<lean::Named>) -> Option<&str> {
        n.as_ref().and_then(|n| n.name.as_deref())
    }
    let pod_name = pod.metadata.name.unwrap_or_default();
    for v in spec.volumes.iter().flatten() {
        add(Ref::Secret, v.secret.as_ref().and_then(|s| s.secret_name.as_deref()));
        add(Ref::ConfigMap, named(&v.config_map));
        add(Ref::Claim, v.persistent_volume_claim.as_ref().and_then(|c| c.claim_name.as_deref()));
        add(Ref::Secret, v.csi.as_ref().and_then(|c| named(&c.node_publish_secret_ref)));
        for s in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            add(Ref::Secret, named(&s.secret));
            add(Ref::ConfigMap, named(&s.config_map));
        }
        if v.ephemeral.is_some() {
            add(Ref::Claim, Some(&format!("{pod_name}-{}", v.name.as_deref().unwrap_or(""))));
        }
    }
    for list in [&spec.init_containers, &spec.containers, &spec.ephemeral_containers] {
        for c in list.iter().flatten() {
            for e in c.env.iter().flatten() {
                add(Ref::Secret, e.value_from.as_ref().and_then(|f| named(&f.secret_key_ref)));
                add(Ref::ConfigMap, e.value_from.as_ref().and_then(|f| named(&f.config_map_key_ref)));
            }
            for e in c.env_from.iter().flatten() {
                add(Ref::Secret, named(&e.secret_ref));
                add(Ref::ConfigMap, named(&e.config_map_ref));
            }
        }
    }
    for s in spec.image_pull_secrets.iter().flatten() {
        add(Ref::Secret, s.name.as_deref());
    }
    add(Ref::ServiceAccount, spec.service_account_name.as_deref());
    Some(PodRefs { node, refs })
}

#[derive(Default)]
struct GraphState {
    /// Bound pods by "ns/name".
    pods: HashMap<String, PodRefs>,
    /// How many bound pods of a node reference (kind, "ns/name").
    uses: HashMap<(String, Ref, String), usize>,
}

impl GraphState {
    fn remove(&mut self, pod: &str) {
        let Some(old) = self.pods.remove(pod) else { return };
        let ns = pod.split('/').next().unwrap_or("");
        for (kind, name) in old.refs {
            let k = (old.node.clone(), kind, format!("{ns}/{name}"));
            if let Some(n) = self.uses.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.uses.remove(&k);
                }
            }
        }
    }

    fn insert(&mut self, pod: String, refs: PodRefs) {
        let ns = pod.split('/').next().unwrap_or("").to_string();
        for (kind, name) in &refs.refs {
            *self.uses.entry((refs.node.clone(), *kind, format!("{ns}/{name}"))).or_default() += 1;
        }
        self.pods.insert(pod, refs);
    }

    fn set(&mut self, key: &str, refs: Option<PodRefs>) {
        let Some(pod) = key.strip_prefix(PODS) else { return };
        if self.pods.get(pod) == refs.as_ref() {
            return;
        }
        self.remove(pod);
        if let Some(r) = refs {
            self.insert(pod.to_string(), r);
        }
    }
}

/// Which node each pod is bound to and which objects it references.
#[derive(Default)]
pub struct Graph {
    state: RwLock<GraphState>,
}

impl Graph {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, GraphState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, GraphState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The node pod `ns/name` is bound to.
    pub fn pod_node(&self, ns: &str, name: &str) -> Option<String> {
        self.read().pods.get(&format!("{ns}/{name}")).map(|p| p.node.clone())
    }

    /// Does a pod bound to `node` reference `kind` `ns/name`?
    pub fn uses(&self, node: &str, kind: Ref, ns: &str, name: &str) -> bool {
        self.read().uses.contains_key(&(node.to_string(), kind, format!("{ns}/{name}")))
    }
}

impl Observer for Graph {
    fn prefix(&self) -> &str {
        PODS
    }

    fn reset(&self, objects: &mut dyn Iterator<Item = (&str, &[u8])>) {
        let mut fresh = GraphState::default();
        for (key, value) in objects {
            if key.starts_with(PODS) {
                fresh.set(key, pod_refs_json(value));
            }
        }
        *self.write() = fresh;
    }

    fn changed(&self, key: &str, object: Option<&crate::watchcache::Object>) {
        // Only a bound pod references anything here: an unbound one is not decoded.
        let bound = object.filter(|o| o.attr("spec.nodeName").as_str().is_some_and(|n| !n.is_empty()));
        let refs = bound.and_then(|o| pod_refs_json(&o.json));
        self.write().set(key, refs);
    }
}

/// What the node authorizer says about one request.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allow,
    /// No opinion: RBAC decides (with upstream's policy, a node gets nothing more there).
    NoOpinion,
    /// No opinion because the graph knows no path (worth asking again once it is current).
    NoPath,
}

/// The requirements `field=value` of a field selector.
fn field_equals<'a>(selector: &'a str, field: &str) -> Option<&'a str> {
    selector.split(',').find_map(|req| {
        let (k, v) = req.split_once("==").or_else(|| req.split_once('=')).filter(|(k, _)| !k.ends_with('!'))?;
        (k.trim() == field).then_some(v.trim())
    })
}

/// The Node authorizer.
pub struct NodeAuthorizer {
    pub graph: Arc<Graph>,
    pub cache: Arc<WatchCache>,
    /// The store the cache follows: the truth about one pod when the graph has not seen it yet.
    pub store: Arc<dyn Store>,
}

impl std::fmt::Debug for NodeAuthorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeAuthorizer")
    }
}

/// The static rules of upstream's `system:node` ClusterRole.
fn node_rules() -> &'static [PolicyRule] {
    static RULES: OnceLock<Vec<PolicyRule>> = OnceLock::new();
    RULES.get_or_init(|| crate::policy::cluster_role_rules("system:node"))
}

impl NodeAuthorizer {
    /// Does the node authorizer allow `a` for `user`? A request it does not allow is left to
    /// RBAC.
    pub async fn allows(&self, user: &User, a: &Attributes) -> bool {
        let Some(node) = identity(user) else { return false };
        match self.decide(node, a) {
            Decision::Allow => true,
            Decision::NoOpinion => false,
            Decision::NoPath => {
                if let Target::Resource { group, resource, subresource, namespace, name } = &a.kind {
                    if group.is_empty() && resource == "pods" && subresource.is_empty() && a.verb == "get" {
                        return matches!(self.stored_pod_node(namespace, name).await, Ok(Some(n)) if n == node);
                    }
                }
                self.cache.catch_up(CATCH_UP_STALL, CATCH_UP_LIMIT).await && self.decide(node, a) == Decision::Allow
            }
        }
    }

    /// The node pod `ns/name` is bound to, read from the store (`None`: no such pod, or not
    /// bound).
    async fn stored_pod_node(&self, ns: &str, name: &str) -> Result<Option<String>, strata_store::Error> {
        if ns.is_empty() || name.is_empty() {
            return Ok(None);
        }
        let Some(kv) = self.store.get(&format!("{PODS}{ns}/{name}")).await? else { return Ok(None) };
        let pod: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        Ok(pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).map(str::to_string))
    }

    fn decide(&self, node: &str, a: &Attributes) -> Decision {
        let Target::Resource { group, resource, subresource, namespace, name } = &a.kind else {
            return self.static_rules(a);
        };
        let (verb, sub) = (a.verb.as_str(), subresource.as_str());
        let selected_name = || if name.is_empty() { field_equals(&a.field_selector, "metadata.name").unwrap_or("").to_string() } else { name.clone() };
        let path = |kind: Ref, ns: &str, name: &str| if !name.is_empty() && self.graph.uses(node, kind, ns, name) { Decision::Allow } else { Decision::NoPath };
        match (group.as_str(), resource.as_str()) {
            ("", "secrets") | ("", "configmaps") => {
                if !matches!(verb, "get" | "list" | "watch") || !sub.is_empty() || namespace.is_empty() {
                    return Decision::NoOpinion;
                }
                let kind = if resource == "secrets" { Ref::Secret } else { Ref::ConfigMap };
                path(kind, namespace, &selected_name())
            }
            ("", "persistentvolumeclaims") => match (verb, sub) {
                ("get", "") => path(Ref::Claim, namespace, name),
                _ => Decision::NoOpinion,
            },
            ("", "serviceaccounts") => match (verb, sub) {
                ("create", "token") => path(Ref::ServiceAccount, namespace, name),
                _ => Decision::NoOpinion,
            },
            ("coordination.k8s.io", "leases") => {
                let ok = matches!(verb, "get" | "create" | "update" | "patch" | "delete") && sub.is_empty() && namespace == LEASE_NAMESPACE && (verb == "create" || name == node);
                if ok { Decision::Allow } else { Decision::NoOpinion }
            }
            ("", "nodes") => match (sub, verb) {
                ("", "create" | "update" | "patch") | ("status", "update" | "patch") => Decision::Allow,
                ("", "get" | "list" | "watch") if selected_name() == node => Decision::Allow,
                _ => Decision::NoOpinion,
            },
            ("", "pods") => match (sub, verb) {
                ("", "get") => match self.graph.pod_node(namespace, name) {
                    Some(n) if n == node => Decision::Allow,
                    _ => Decision::NoPath,
                },
                ("", "list" | "watch") if field_equals(&a.field_selector, "spec.nodeName") == Some(node) => Decision::Allow,
                ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => Decision::Allow,
                _ => Decision::NoOpinion,
            },
            _ => self.static_rules(a),
        }
    }

    fn static_rules(&self, a: &Attributes) -> Decision {
        if node_rules().iter().any(|r| crate::rbac::rule_allows(r, a)) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }

    /// NodeRestriction admission: a write the authorizer let through for node `node` must be
    /// about the node itself or pods bound to it. `obj` is the body of a create. Err is why not.
    #[allow(clippy::too_many_arguments)]
    pub async fn admit(&self, node: &str, verb: &str, resource: &str, subresource: &str, namespace: &str, name: &str, obj: Option<&Value>) -> Result<(), String> {
        let body_name = obj.and_then(|o| o["metadata"]["name"].as_str()).unwrap_or("");
        match (resource, subresource, verb) {
            ("nodes", "", "create") if body_name != node => Err(format!("node {node:?} is not allowed to modify node {body_name:?}")),
            ("nodes", _, "update" | "patch" | "delete") if name != node => Err(format!("node {node:?} is not allowed to modify node {name:?}")),
            ("leases", "", "create") if body_name != node => Err("can only access node lease with the same name as the requesting node".to_string()),
            ("pods", "", "create") => {
                let o = obj.unwrap_or(&Value::Null);
                if o["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_null() {
                    return Err(format!("pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"));
                }
                if o["spec"]["nodeName"].as_str() != Some(node) {
                    return Err(format!("node {node:?} can only create pods with spec.nodeName set to itself"));
                }
                Ok(())
            }
            ("pods", "" | "status" | "eviction", "delete" | "update" | "patch" | "create") => {
                // The pod as stored, not as the graph last saw it: a node deletes and writes the
                // status of pods it has seen, which the cache may not have applied yet (and a
                // pod of the same name may have replaced one the graph still holds).
                let bound = self.stored_pod_node(namespace, name).await.map_err(|e| format!("reading the pod: {e}"))?;
                match bound {
                    Some(n) if n == node => Ok(()),
                    _ => Err(format!("node {node:?} can only {} pods with spec.nodeName set to itself", if subresource == "status" { "update status of" } else if verb == "delete" { "delete" } else { "evict" })),
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_lean_decoding_finds_what_the_tree_finds() {
        let pods = [
            json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "a", "serviceAccountName": "sa",
                "volumes": [{"name": "v", "secret": {"secretName": "s1"}}, {"name": "c", "configMap": {"name": "c1"}}, {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}},
                            {"name": "k", "persistentVolumeClaim": {"claimName": "k1"}}, {"name": "d", "csi": {"driver": "x", "nodePublishSecretRef": {"name": "s4"}}},
                            {"name": "pr", "projected": {"sources": [{"secret": {"name": "s2"}}, {"configMap": {"name": "c3"}}, {"serviceAccountToken": {"path": "t"}}]}}],
                "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s5"}}]}],
                "containers": [{"name": "x", "image": "busybox", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}}, {"name": "F", "value": "1"},
                                {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "c1", "key": "k"}}}], "envFrom": [{"configMapRef": {"name": "c2"}}]}],
                "ephemeralContainers": [{"name": "dbg", "env": [{"name": "H", "valueFrom": {"secretKeyRef": {"name": "s6", "key": "k"}}}]}],
                "imagePullSecrets": [{"name": "pull"}, {"name": "s1"}]}, "status": {"phase": "Running"}}),
            json!({"metadata": {"name": "unbound"}, "spec": {"volumes": [{"name": "v", "secret": {"secretName": "s1"}}]}}),
            json!({"metadata": {"name": "empty-node"}, "spec": {"nodeName": ""}}),
            json!({"metadata": {"name": "bare"}, "spec": {"nodeName": "n"}}),
            json!({"metadata": {"name": "nulls"}, "spec": {"nodeName": "n", "volumes": null, "serviceAccountName": null}}),
            // Not the types the lean decoding reads: decoded whole.
            json!({"metadata": {"name": "odd"}, "spec": {"nodeName": "n", "serviceAccountName": 7, "volumes": [{"name": "v", "secret": {"secretName": "s1"}}]}}),
        ];
        for pod in &pods {
            let json = serde_json::to_vec(pod).expect("json");
            assert_eq!(pod_refs_json(&json), pod_refs(pod), "{pod}");
        }
        assert_eq!(pod_refs(&pods[0]).map(|r| r.refs.len()), Some(13));
    }

    #[test]
    fn the_graph_follows_pods() {
        let g = Graph::default();
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": "a", "serviceAccountName": "sa",
            "volumes": [{"name": "v", "secret": {"secretName": "s1"}}, {"name": "c", "configMap": {"name": "c1"}}, {"name": "e", "ephemeral": {}},
                        {"name": "pr", "projected": {"sources": [{"secret": {"name": "s2"}}]}}],
            "containers": [{"name": "x", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "k"}}}], "envFrom": [{"configMapRef": {"name": "c2"}}]}],
            "imagePullSecrets": [{"name": "pull"}]}});
        g.changed("/registry/core/pods/ns/p", Some(&crate::watchcache::Object::new(&pod, 1)));
        for s in ["s1", "s2", "s3", "pull"] {
            assert!(g.uses("a", Ref::Secret, "ns", s), "{s}");
            assert!(!g.uses("b", Ref::Secret, "ns", s), "{s}");
            assert!(!g.uses("a", Ref::Secret, "other", s), "{s}");
        }
        assert!(g.uses("a", Ref::ConfigMap, "ns", "c1") && g.uses("a", Ref::ConfigMap, "ns", "c2"));
        assert!(g.uses("a", Ref::Claim, "ns", "p-e"));
        assert!(g.uses("a", Ref::ServiceAccount, "ns", "sa"));
        assert_eq!(g.pod_node("ns", "p").as_deref(), Some("a"));
        // Two pods sharing a secret: it stays reachable until both are gone.
        let other = json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": {"nodeName": "a", "volumes": [{"name": "v", "secret": {"secretName": "s1"}}]}});
        g.changed("/registry/core/pods/ns/q", Some(&crate::watchcache::Object::new(&other, 1)));
        g.changed("/registry/core/pods/ns/p", None);
        assert!(g.uses("a", Ref::Secret, "ns", "s1") && !g.uses("a", Ref::Secret, "ns", "s2"));
        // Rebound (a new pod of the same name on another node).
        let moved = json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": {"nodeName": "b", "volumes": [{"name": "v", "secret": {"secretName": "s1"}}]}});
        g.changed("/registry/core/pods/ns/q", Some(&crate::watchcache::Object::new(&moved, 1)));
        assert!(!g.uses("a", Ref::Secret, "ns", "s1") && g.uses("b", Ref::Secret, "ns", "s1"));
        // Unbound pods give nothing.
        let pending = json!({"metadata": {"name": "r", "namespace": "ns"}, "spec": {"volumes": [{"name": "v", "secret": {"secretName": "s9"}}]}});
        g.changed("/registry/core/pods/ns/r", Some(&crate::watchcache::Object::new(&pending, 1)));
        assert!(g.pod_node("ns", "r").is_none());
        g.reset(&mut std::iter::empty());
        assert!(!g.uses("b", Ref::Secret, "ns", "s1"));
        // A reload gives the graph the cache's objects as JSON; other kinds are not pods.
        let json = moved.to_string();
        g.reset(&mut [("/registry/core/pods/ns/q", json.as_bytes()), ("/registry/core/secrets/ns/q", json.as_bytes())].into_iter());
        assert!(g.uses("b", Ref::Secret, "ns", "s1") && g.pod_node("ns", "q").as_deref() == Some("b"));
    }

    #[test]
    fn identities_and_selectors() {
        assert_eq!(identity(&User::new("system:node:a", &["system:nodes"])), Some("a"));
        assert_eq!(identity(&User::new("system:node:a", &[])), None);
        assert_eq!(identity(&User::new("alice", &["system:nodes"])), None);
        assert_eq!(field_equals("spec.nodeName=a", "spec.nodeName"), Some("a"));
        assert_eq!(field_equals("metadata.namespace=x,spec.nodeName==a", "spec.nodeName"), Some("a"));
        assert_eq!(field_equals("spec.nodeName!=a", "spec.nodeName"), None);
        assert!(!node_rules().is_empty(), "system:node's rules come from the bootstrap policy");
    }
}
