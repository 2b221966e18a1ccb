//! Garbage collection by ownerReferences (upstream's `garbagecollector`).
//!
//! A graph of every object of every listable, watchable, deletable kind the API server
//! discovers (one watch per kind, objects as `DynamicObject`s of which only the typed metadata
//! is read): uid -> owners, dependents, deletion state. Whenever an object, its owners or its
//! dependents change, and every 30 s for everything, it is checked:
//! - an object none of whose owners exists any more (an owner is gone only when the API server
//!   says so, not because this cache lags) is deleted (background);
//! - an object with a live owner too loses only its references to the gone ones;
//! - an owner deleted with `propagationPolicy=Foreground` (deletionTimestamp and the
//!   `foregroundDeletion` finalizer, set by the API server) has its dependents deleted (those
//!   with `blockOwnerDeletion` in the foreground too), and loses the finalizer once no
//!   dependent blocking it is left — then the API server removes it; a dependent deleted so
//!   whose own dependents include one already waiting first has its references made
//!   non-blocking (upstream's circle breaker: owners that own each other do not wait forever);
//! - an owner deleted with `propagationPolicy=Orphan` (the `orphan` finalizer) has its
//!   references removed from its dependents, then loses the finalizer.
//!
//! Kinds are discovered again every 30 s, and at once (at most every 2 s) when an owner of an
//! unknown kind is met, so custom kinds defined after the start are collected (and own) too,
//! as upstream's monitors follow discovery.
//!
//! Namespace deletion is not here: the API server owns it.
//! Every write carries the uid (deletes) or resourceVersion (patches) it decided on, so a
//! decision made on a stale view fails instead of hitting a different object.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::watcher;
use serde_json::json;

use strata_client::events::EventType;
use crate::{Clients, Error};

pub const IDENTITY: &str = "generic-garbage-collector";
pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// Kinds not collected (as upstream's ignored resources: events are never owned in practice
/// and only add load).
const IGNORED: &[(&str, &str)] = &[("", "events"), ("events.k8s.io", "events")];

struct Kind {
    ar: ApiResource,
    namespaced: bool,
}

/// One object as the graph knows it.
#[derive(Clone, Debug)]
struct Node {
    kind: usize,
    namespace: Option<String>,
    name: String,
    resource_version: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, Node>,
    /// owner uid -> dependent uids (whether or not the owner is known).
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    fn upsert(&mut self, uid: String, node: Node, dirty: &mut BTreeSet<String>) {
        if let Some(old) = self.nodes.get(&uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(&uid);
                }
            }
        }
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
            dirty.insert(o.uid.clone());
        }
        if let Some(deps) = self.dependents.get(&uid) {
            dirty.extend(deps.iter().cloned());
        }
        dirty.insert(uid.clone());
        self.nodes.insert(uid, node);
    }

    fn remove(&mut self, uid: &str, dirty: &mut BTreeSet<String>) {
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
                // An owner waiting for its dependents may be done now.
                dirty.insert(o.uid.clone());
            }
        }
        // Its dependents are orphans now.
        if let Some(deps) = self.dependents.get(uid) {
            dirty.extend(deps.iter().cloned());
        }
    }
}

fn node_of(kind: usize, obj: &DynamicObject) -> Option<(String, Node)> {
    let m = &obj.metadata;
    let uid = m.uid.clone()?;
    Some((
        uid,
        Node {
            kind,
            namespace: m.namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
            resource_version: m.resource_version.clone().unwrap_or_default(),
            owners: m.owner_references.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
        },
    ))
}

/// Every collectable kind the API server serves now.
async fn discover(client: &kube::Client) -> Result<Vec<Kind>, Error> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut kinds: Vec<Kind> = Vec::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !collectable(&ar, &caps) {
                continue;
            }
            kinds.push(Kind { namespaced: caps.scope == Scope::Namespaced, ar });
        }
    }
    Ok(kinds)
}

type Events = futures_util::stream::BoxStream<'static, (usize, Result<watcher::Event<DynamicObject>, watcher::Error>)>;

fn watch_kind(client: &kube::Client, i: usize, k: &Kind) -> Events {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &k.ar);
    kube::runtime::WatchStreamExt::default_backoff(watcher(api, crate::watch_config())).map(move |e| (i, e)).boxed()
}

pub async fn run(clients: Clients) -> Result<(), Error> {
    let kinds = discover(&clients.root).await?;
    let writer = clients.writer(IDENTITY);
    let recorder = strata_client::events::Recorder::new(writer.clone(), IDENTITY);
    let mut streams = futures_util::stream::SelectAll::new();
    for (i, k) in kinds.iter().enumerate() {
        streams.push(watch_kind(&clients.root, i, k));
    }
    let mut gc = Collector { kinds, writer, recorder, graph: Graph::default(), relisting: HashMap::new(), undiscovered: AtomicBool::new(false) };
    let mut discovered_at = tokio::time::Instant::now();
    let mut rediscover = tokio::time::interval(Duration::from_millis(500));
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            ev = streams.next() => {
                let Some((kind, ev)) = ev else { return Ok(()) };
                match ev {
                    Ok(ev) => gc.observe(kind, ev, &mut dirty),
                    Err(e) => tracing::debug!(kind = %gc.kinds[kind].ar.plural, error = %e, "garbage collector watch"),
                }
            }
            _ = resync.tick() => {
                gc.undiscovered.store(true, Ordering::Relaxed);
                dirty.extend(gc.graph.nodes.iter().filter(|(_, n)| !n.owners.is_empty() || n.deleting).map(|(u, _)| u.clone()));
            }
            _ = rediscover.tick(), if gc.undiscovered.load(Ordering::Relaxed) && discovered_at.elapsed() >= Duration::from_secs(2) => {
                // New kinds (custom ones defined since): watch them too.
                gc.undiscovered.store(false, Ordering::Relaxed);
                discovered_at = tokio::time::Instant::now();
                match discover(&clients.root).await {
                    Ok(found) => {
                        for k in found {
                            if !gc.kinds.iter().any(|x| x.ar.group == k.ar.group && x.ar.version == k.ar.version && x.ar.plural == k.ar.plural) {
                                tracing::info!(group = %k.ar.group, version = %k.ar.version, plural = %k.ar.plural, "garbage collector: watching a new kind");
                                streams.push(watch_kind(&clients.root, gc.kinds.len(), &k));
                                gc.kinds.push(k);
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "garbage collector discovery"),
                }
                // Objects whose owners were of unknown kinds are looked at again.
                dirty.extend(gc.graph.nodes.iter().filter(|(_, n)| !n.owners.is_empty()).map(|(u, _)| u.clone()));
            }
            _ = tick.tick(), if !dirty.is_empty() => {
                let batch = std::mem::take(&mut dirty);
                for uid in batch {
                    if let Err(e) = gc.attempt(&uid).await {
                        tracing::debug!(uid = %uid, error = %e, "garbage collector");
                    }
                }
            }
        }
    }
}

fn collectable(ar: &ApiResource, caps: &ApiCapabilities) -> bool {
    [verbs::LIST, verbs::WATCH, verbs::DELETE].iter().all(|v| caps.supports_operation(v)) && !IGNORED.contains(&(ar.group.as_str(), ar.plural.as_str()))
}

struct Collector {
    kinds: Vec<Kind>,
    writer: kube::Client,
    recorder: strata_client::events::Recorder,
    graph: Graph,
    /// Uids seen during a relist of a kind, to drop the ones that vanished meanwhile.
    relisting: HashMap<usize, HashSet<String>>,
    /// An owner of an unknown kind was met (or the periodic resync came): discover again.
    undiscovered: AtomicBool,
}

/// How an owner reference stands.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// Exists and is not waiting for its dependents.
    Solid,
    /// Exists, deleted in the foreground: waiting for its dependents.
    Waiting,
    /// Gone (the API server says so).
    Dangling,
    /// Its kind is unknown or the reference is invalid: left alone.
    Unknown,
}

impl Collector {
    fn observe(&mut self, kind: usize, ev: watcher::Event<DynamicObject>, dirty: &mut BTreeSet<String>) {
        match ev {
            watcher::Event::Apply(o) => {
                if let Some((uid, n)) = node_of(kind, &o) {
                    self.graph.upsert(uid, n, dirty);
                }
            }
            watcher::Event::Delete(o) => {
                if let Some(uid) = o.metadata.uid.as_deref() {
                    self.graph.remove(uid, dirty);
                }
            }
            watcher::Event::Init => {
                self.relisting.insert(kind, HashSet::new());
            }
            watcher::Event::InitApply(o) => {
                if let Some((uid, n)) = node_of(kind, &o) {
                    self.relisting.entry(kind).or_default().insert(uid.clone());
                    self.graph.upsert(uid, n, dirty);
                }
            }
            watcher::Event::InitDone => {
                let seen = self.relisting.remove(&kind).unwrap_or_default();
                let gone: Vec<String> = self.graph.nodes.iter().filter(|(u, n)| n.kind == kind && !seen.contains(*u)).map(|(u, _)| u.clone()).collect();
                for uid in gone {
                    self.graph.remove(&uid, dirty);
                }
            }
        }
    }

    fn api(&self, kind: usize, namespace: Option<&str>) -> Api<DynamicObject> {
        let k = &self.kinds[kind];
        match (k.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.writer.clone(), ns, &k.ar),
            _ => Api::all_with(self.writer.clone(), &k.ar),
        }
    }

    /// The watched kind of an owner reference: its version, else the same kind at the version
    /// discovery prefers (an object is one object whatever version names it).
    fn kind_of(&self, api_version: &str, kind: &str) -> Option<usize> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        self.kinds
            .iter()
            .position(|k| k.ar.group == group && k.ar.version == version && k.ar.kind == kind)
            .or_else(|| self.kinds.iter().position(|k| k.ar.group == group && k.ar.kind == kind))
    }

    async fn attempt(&mut self, uid: &str) -> Result<(), Error> {
        let Some(node) = self.graph.nodes.get(uid).cloned() else { return Ok(()) };
        if node.deleting {
            if node.finalizers.iter().any(|f| f == ORPHAN) {
                return self.orphan_dependents(uid, &node).await;
            }
            if node.finalizers.iter().any(|f| f == FOREGROUND) {
                return self.delete_dependents(uid, &node).await;
            }
            return Ok(());
        }
        if node.owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut waiting = Vec::new();
        let mut dangling = Vec::new();
        for o in &node.owners {
            match self.owner_state(&node, o).await? {
                Owner::Solid => solid.push(o.clone()),
                Owner::Waiting => waiting.push(o.clone()),
                Owner::Dangling => dangling.push(o.clone()),
                Owner::Unknown => solid.push(o.clone()),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // Keep the object for its live owners; forget the others.
            let drop: HashSet<&str> = dangling.iter().chain(waiting.iter()).map(|o| o.uid.as_str()).collect();
            let keep: Vec<&OwnerReference> = node.owners.iter().filter(|o| !drop.contains(o.uid.as_str())).collect();
            let patch = json!({ "metadata": { "ownerReferences": keep, "resourceVersion": node.resource_version } });
            self.api(node.kind, node.namespace.as_deref()).patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).or_else(ignore_gone_or_conflict)?;
            return Ok(());
        }
        // No live owner: the object goes. In the foreground when an owner waits for it and
        // it has dependents of its own (they must go first).
        let blocks_waiting = waiting.iter().any(|o| o.block_owner_deletion == Some(true));
        let has_dependents = self.graph.dependents.get(uid).is_some_and(|d| !d.is_empty());
        if !waiting.is_empty() && has_dependents {
            self.unblock_if_circular(uid, &node).await?;
        }
        let policy = if blocks_waiting && has_dependents { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
        tracing::info!(kind = %self.kinds[node.kind].ar.kind, namespace = ?node.namespace, name = %node.name, ?policy, "garbage collecting an object whose owners are gone");
        self.delete(uid, &node, policy).await
    }

    async fn delete(&self, uid: &str, node: &Node, policy: PropagationPolicy) -> Result<(), Error> {
        let dp = DeleteParams { propagation_policy: Some(policy), preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }), ..Default::default() };
        self.api(node.kind, node.namespace.as_deref()).delete(&node.name, &dp).await.map(|_| ()).or_else(ignore_gone_or_conflict)
    }

    /// Where an owner stands: from the graph when it is there, else from the API server (a
    /// dependent may be seen before its owner; only the server can say an owner is gone).
    async fn owner_state(&self, node: &Node, o: &OwnerReference) -> Result<Owner, Error> {
        if let Some(owner) = self.graph.nodes.get(&o.uid) {
            if owner.deleting && owner.finalizers.iter().any(|f| f == FOREGROUND) {
                return Ok(Owner::Waiting);
            }
            return Ok(Owner::Solid);
        }
        let Some(kind) = self.kind_of(&o.api_version, &o.kind) else {
            self.undiscovered.store(true, Ordering::Relaxed);
            self.warn(node, "OwnerRefInvalid", &format!("owner {} {} of unknown kind {}; left alone", o.api_version, o.name, o.kind)).await;
            return Ok(Owner::Unknown);
        };
        let owner_ns = if self.kinds[kind].namespaced { node.namespace.as_deref() } else { None };
        if self.kinds[kind].namespaced && owner_ns.is_none() {
            self.warn(node, "OwnerRefInvalidNamespace", &format!("a cluster-scoped object cannot be owned by the namespaced {} {}", o.kind, o.name)).await;
            return Ok(Owner::Unknown);
        }
        match self.api(kind, owner_ns).get_opt(&o.name).await? {
            Some(live) if live.metadata.uid.as_deref() == Some(o.uid.as_str()) => {
                let deleting = live.metadata.deletion_timestamp.is_some() && live.metadata.finalizers.iter().flatten().any(|f| f == FOREGROUND);
                Ok(if deleting { Owner::Waiting } else { Owner::Solid })
            }
            _ => Ok(Owner::Dangling),
        }
    }

    async fn warn(&self, node: &Node, reason: &str, message: &str) {
        let k = &self.kinds[node.kind];
        let r = ObjectReference {
            api_version: Some(k.ar.api_version.clone()),
            kind: Some(k.ar.kind.clone()),
            name: Some(node.name.clone()),
            namespace: node.namespace.clone(),
            ..Default::default()
        };
        self.recorder.publish_ref(r, EventType::Warning, reason, message.to_string())
    }

    /// `orphan`: take this owner's references off its dependents, then the finalizer.
    async fn orphan_dependents(&self, uid: &str, node: &Node) -> Result<(), Error> {
        let deps: Vec<String> = self.graph.dependents.get(uid).map(|d| d.iter().cloned().collect()).unwrap_or_default();
        for d in deps {
            let Some(dep) = self.graph.nodes.get(&d) else { continue };
            let keep: Vec<&OwnerReference> = dep.owners.iter().filter(|o| o.uid != uid).collect();
            let refs = if keep.is_empty() { json!(null) } else { json!(keep) };
            let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": dep.resource_version } });
            self.api(dep.kind, dep.namespace.as_deref()).patch(&dep.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).or_else(ignore_gone_or_conflict)?;
        }
        // Only once every dependent has been seen without the reference (the patches above
        // come back through the watch and make this owner dirty again).
        if self.graph.dependents.get(uid).is_some_and(|d| !d.is_empty()) {
            return Ok(());
        }
        self.remove_finalizer(node, ORPHAN).await
    }

    /// `foregroundDeletion`: delete the dependents; drop the finalizer when none blocks.
    async fn delete_dependents(&self, uid: &str, node: &Node) -> Result<(), Error> {
        let deps: Vec<(String, Node)> = self.graph.dependents.get(uid).map(|d| d.iter().filter_map(|u| self.graph.nodes.get(u).map(|n| (u.clone(), n.clone()))).collect()).unwrap_or_default();
        let mut blocking = 0;
        for (duid, dep) in deps {
            let blocks = dep.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if dep.deleting {
                continue;
            }
            // A dependent with other live owners only loses this reference (handled when it
            // is attempted: its owner is Waiting); one owned by this owner alone goes.
            if dep.owners.len() > 1 {
                continue;
            }
            let policy = if blocks { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
            if blocks {
                self.unblock_if_circular(&duid, &dep).await?;
            }
            self.delete(&duid, &dep, policy).await?;
        }
        if blocking > 0 {
            return Ok(());
        }
        self.remove_finalizer(node, FOREGROUND).await
    }

    /// Upstream's cycle breaker: an object about to be deleted in the foreground for an owner
    /// that waits, one of whose own dependents already waits for its dependents, could close a
    /// circle of owners waiting on each other; its references are made non-blocking first (as
    /// upstream, this has false positives: the owners then only stop waiting for it).
    async fn unblock_if_circular(&self, uid: &str, node: &Node) -> Result<(), Error> {
        let circular = self
            .graph
            .dependents
            .get(uid)
            .is_some_and(|d| d.iter().filter_map(|u| self.graph.nodes.get(u)).any(|n| n.deleting && n.finalizers.iter().any(|f| f == FOREGROUND)));
        if !circular || !node.owners.iter().any(|o| o.block_owner_deletion == Some(true)) {
            return Ok(());
        }
        let refs: Vec<OwnerReference> =
            node.owners.iter().map(|o| OwnerReference { block_owner_deletion: o.block_owner_deletion.map(|_| false), ..o.clone() }).collect();
        tracing::info!(kind = %self.kinds[node.kind].ar.kind, namespace = ?node.namespace, name = %node.name, "owners and a dependent wait for dependents: making the owner references non-blocking to break a possible circle");
        let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": node.resource_version } });
        self.api(node.kind, node.namespace.as_deref()).patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).or_else(ignore_gone_or_conflict)
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), Error> {
        let keep: Vec<&String> = node.finalizers.iter().filter(|f| *f != finalizer).collect();
        let f = if keep.is_empty() { json!(null) } else { json!(keep) };
        let patch = json!({ "metadata": { "finalizers": f, "resourceVersion": node.resource_version } });
        self.api(node.kind, node.namespace.as_deref()).patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).or_else(ignore_gone_or_conflict)
    }
}

/// A 404 (already gone) or 409 (changed since we looked: the watch brings the new state and
/// the object is attempted again) is not a failure.
fn ignore_gone_or_conflict(e: kube::Error) -> Result<(), Error> {
    match e {
        kube::Error::Api(ref s) if s.code == 404 || s.code == 409 => Ok(()),
        e => Err(e.into()),
    }
}
