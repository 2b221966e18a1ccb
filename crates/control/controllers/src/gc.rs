//! Garbage collection by ownerReferences (upstream's `garbagecollector`).
//!
//! A graph of every object of every listable, watchable, deletable kind the API server
//! discovers (one watch per kind, objects decoded as their metadata only: [`Meta`]; the pods
//! come from the controllers' shared pod watch instead, which every pod change already passes
//! through): uid -> owners, dependents, deletion state. Whenever an object, its owners or its
//! dependents change, and every 30 s for everything, it is checked:
//! - an object none of whose owners exists any more (an owner is gone only when the API server
//!   says so, not because this cache lags) is deleted (background);
//! - an object with a live owner too loses only its references to the gone ones;
//! - an owner deleted with `propagationPolicy=Foreground` (deletionTimestamp and the
//!   `foregroundDeletion` finalizer, set by the API server) has its dependents collected as
//!   above (it counts as gone for them; one with dependents of its own goes in the foreground
//!   too), and loses the finalizer once no dependent blocking it is left — then the API server
//!   removes it; a dependent deleted so whose own dependents include one already waiting first
//!   has its references made non-blocking (upstream's circle breaker: owners that own each
//!   other do not wait forever);
//! - an owner deleted with `propagationPolicy=Orphan` (the `orphan` finalizer) has its
//!   references removed from its dependents, then loses the finalizer.
//!
//! Kinds are discovered again every 30 s, and at once (at most every 2 s) when an owner of an
//! unknown kind is met, so custom kinds defined after the start are collected (and own) too,
//! as upstream's monitors follow discovery.
//!
//! The graph only says which objects to look at: an object is deleted, or loses references,
//! on its live state (read again, as upstream's `attemptToDeleteItem`: the watch of its kind
//! may not have brought a reference added since), and every write carries the uid and
//! resourceVersion it decided on, so a decision made on a stale view is a 409 and is made again
//! when the change arrives.
//!
//! Namespace deletion is not here: the API server owns it.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use serde_json::json;

use strata_client::events::EventType;
use crate::informer::Shared;
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
        // A change the collector does not read (a pod's binding, its status): nothing to look at
        // again, as upstream's graph builder only acts on changed references or a new deletion
        // state. (The 30 s resync looks at everything owned anyway.)
        if let Some(old) = self.nodes.get_mut(&uid) {
            if old.kind == node.kind && old.owners == node.owners && old.deleting == node.deleting && old.finalizers == node.finalizers {
                *old = node;
                return;
            }
        }
        // Its dependents only care whether it exists and whether it is being deleted (how).
        let mut transition = true;
        if let Some(old) = self.nodes.get(&uid) {
            transition = old.deleting != node.deleting || old.finalizers != node.finalizers;
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
        if transition {
            if let Some(deps) = self.dependents.get(&uid) {
                dirty.extend(deps.iter().cloned());
            }
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

/// A watched object of any kind as the graph reads it: its metadata. The rest of each object is
/// skipped while decoding, not built into a `serde_json::Value` as a `DynamicObject`'s would be
/// (every pod change passes through here), and so are its managedFields
/// ([`strata_client::lean`]), which a `PartialObjectMetadata` watch would still carry.
#[derive(Clone, Debug, k8s_openapi::serde::Deserialize)]
#[serde(crate = "k8s_openapi::serde")]
pub struct Meta {
    #[serde(default, deserialize_with = "strata_client::lean::meta")]
    pub metadata: ObjectMeta,
}

impl kube::Resource for Meta {
    type DynamicType = ApiResource;
    type Scope = kube::core::DynamicResourceScope;

    fn kind(dt: &ApiResource) -> Cow<'_, str> {
        dt.kind.as_str().into()
    }
    fn group(dt: &ApiResource) -> Cow<'_, str> {
        dt.group.as_str().into()
    }
    fn version(dt: &ApiResource) -> Cow<'_, str> {
        dt.version.as_str().into()
    }
    fn api_version(dt: &ApiResource) -> Cow<'_, str> {
        dt.api_version.as_str().into()
    }
    fn plural(dt: &ApiResource) -> Cow<'_, str> {
        dt.plural.as_str().into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn node_of(kind: usize, obj: &Meta) -> Option<(String, Node)> {
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

type Events = futures_util::stream::BoxStream<'static, (usize, Result<watcher::Event<Meta>, watcher::Error>)>;

fn watch_kind(client: &kube::Client, i: usize, k: &Kind, pods: &Shared<Pod>) -> Events {
    if (k.ar.group.as_str(), k.ar.version.as_str(), k.ar.plural.as_str()) == ("", "v1", "pods") {
        return from_shared(i, pods);
    }
    let api: Api<Meta> = Api::all_with(client.clone(), &k.ar);
    kube::runtime::WatchStreamExt::default_backoff(watcher(api, crate::watch_config())).map(move |e| (i, e)).boxed()
}

/// The pods as the graph reads them, from the shared pod watch: each pod it passes on is, by
/// the time it is read here, either still in the cache under the same uid (an `Apply` of its
/// metadata as the cache holds it now) or not (a `Delete` of that uid; a pod of the same name
/// made since comes next). The shared watch hands a new subscriber the whole cache, and after
/// a relist every pod of the new list and every pod it no longer holds, so no Init/InitDone is
/// needed to drop pods deleted while a watch was down.
fn from_shared(i: usize, pods: &Shared<Pod>) -> Events {
    let store = pods.store().clone();
    pods.subscribe()
        .map(move |p| {
            let m = &p.metadata;
            let current = store.get(&ObjectRef::new(m.name.as_deref().unwrap_or_default()).within(m.namespace.as_deref().unwrap_or_default()));
            let ev = match current.filter(|c| c.metadata.uid == m.uid) {
                Some(c) => watcher::Event::Apply(Meta { metadata: c.metadata.clone() }),
                None => watcher::Event::Delete(Meta { metadata: m.clone() }),
            };
            (i, Ok(ev))
        })
        .boxed()
}

pub async fn run(clients: Clients, pods: Shared<Pod>) -> Result<(), Error> {
    let kinds = discover(&clients.root).await?;
    let writer = clients.writer(IDENTITY);
    let recorder = strata_client::events::Recorder::with_correlator(writer.clone(), IDENTITY);
    let mut streams = futures_util::stream::SelectAll::new();
    for (i, k) in kinds.iter().enumerate() {
        streams.push(watch_kind(&clients.root, i, k, &pods));
    }
    let mut gc = Collector { kinds, writer, recorder, graph: Graph::default(), relisting: HashMap::new(), undiscovered: AtomicBool::new(false) };
    let mut discovered_at = tokio::time::Instant::now();
    let mut rediscover = tokio::time::interval(Duration::from_millis(500));
    let mut dirty: BTreeSet<String> = BTreeSet::new();
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    // Objects whose attempt failed (not a 404 or 409: those come back through the watch).
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut retry = tokio::time::interval(Duration::from_secs(2));
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
                                streams.push(watch_kind(&clients.root, gc.kinds.len(), &k, &pods));
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
                        failed.insert(uid);
                    }
                }
            }
            _ = retry.tick(), if !failed.is_empty() => {
                dirty.append(&mut failed);
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
    fn observe(&mut self, kind: usize, ev: watcher::Event<Meta>, dirty: &mut BTreeSet<String>) {
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
                return self.finish_foreground(uid, &node).await;
            }
            return Ok(());
        }
        // Nothing to do while every owner stands in the cache (no request made); anything else
        // is decided on the live object.
        let standing = |o: &OwnerReference| self.graph.nodes.get(&o.uid).is_some_and(|n| !waits_for_dependents(n));
        if node.owners.iter().all(standing) {
            return Ok(());
        }
        self.collect(uid, &node).await
    }

    /// Upstream's `attemptToDeleteItem`: the object is read again and its live ownerReferences
    /// decide (the cache may not have seen a reference added since), and every write carries
    /// the uid and resourceVersion of that read, so a change made meanwhile is a 409 and the
    /// object is looked at again when its watch event comes.
    async fn collect(&self, uid: &str, node: &Node) -> Result<(), Error> {
        let api = self.api(node.kind, node.namespace.as_deref());
        let live = match api.get_opt(&node.name).await? {
            Some(live) if live.metadata.uid.as_deref() == Some(uid) => live,
            // Gone, or another object of that name now: its watch event is on its way.
            _ => return Ok(()),
        };
        if live.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        let owners = live.metadata.owner_references.clone().unwrap_or_default();
        let resource_version = live.metadata.resource_version.clone().unwrap_or_default();
        if owners.is_empty() {
            return Ok(());
        }
        let mut solid = Vec::new();
        let mut waiting = Vec::new();
        let mut dangling = Vec::new();
        for o in &owners {
            match self.owner_state(node, o).await? {
                Owner::Solid | Owner::Unknown => solid.push(o),
                Owner::Waiting => waiting.push(o),
                Owner::Dangling => dangling.push(o),
            }
        }
        if !solid.is_empty() {
            if dangling.is_empty() && waiting.is_empty() {
                return Ok(());
            }
            // Keep the object for its live owners; forget the others.
            let drop: HashSet<&str> = dangling.iter().chain(waiting.iter()).map(|o| o.uid.as_str()).collect();
            let keep: Vec<&OwnerReference> = owners.iter().filter(|o| !drop.contains(o.uid.as_str())).collect();
            tracing::info!(kind = %self.kinds[node.kind].ar.kind, namespace = ?node.namespace, name = %node.name, dropped = drop.len(), "garbage collector: removing references to owners that are gone or being deleted");
            let patch = json!({ "metadata": { "ownerReferences": keep, "resourceVersion": resource_version } });
            return api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).or_else(ignore_gone_or_conflict);
        }
        // No live owner: the object goes. In the foreground when an owner waits for it and it
        // has dependents of its own (they must go first), as upstream.
        let has_dependents = self.graph.dependents.get(uid).is_some_and(|d| !d.is_empty());
        let finalizers = live.metadata.finalizers.clone().unwrap_or_default();
        let (policy, resource_version) = if !waiting.is_empty() && has_dependents {
            (PropagationPolicy::Foreground, self.unblock_if_circular(uid, node, &owners, resource_version).await?)
        } else if finalizers.iter().any(|f| f == ORPHAN) {
            (PropagationPolicy::Orphan, Some(resource_version))
        } else if finalizers.iter().any(|f| f == FOREGROUND) {
            (PropagationPolicy::Foreground, Some(resource_version))
        } else {
            (PropagationPolicy::Background, Some(resource_version))
        };
        // The circle breaker's patch met a change: decide again on the next event.
        let Some(resource_version) = resource_version else { return Ok(()) };
        tracing::info!(kind = %self.kinds[node.kind].ar.kind, namespace = ?node.namespace, name = %node.name, ?policy, "garbage collecting an object whose owners are gone");
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: Some(resource_version) }),
            ..Default::default()
        };
        api.delete(&node.name, &dp).await.map(|_| ()).or_else(ignore_gone_or_conflict)
    }

    /// Where an owner stands: from the graph when it is there, else from the API server (a
    /// dependent may be seen before its owner; only the server can say an owner is gone).
    async fn owner_state(&self, node: &Node, o: &OwnerReference) -> Result<Owner, Error> {
        if let Some(owner) = self.graph.nodes.get(&o.uid) {
            return Ok(if waits_for_dependents(owner) { Owner::Waiting } else { Owner::Solid });
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

    /// `foregroundDeletion`: the dependents are collected (each made dirty when this owner began
    /// to wait, and again by its own changes); the finalizer goes once no dependent blocks.
    async fn finish_foreground(&self, uid: &str, node: &Node) -> Result<(), Error> {
        let blocking = self
            .graph
            .dependents
            .get(uid)
            .is_some_and(|d| d.iter().filter_map(|u| self.graph.nodes.get(u)).any(|n| n.owners.iter().any(|o| o.uid == uid && o.block_owner_deletion == Some(true))));
        if blocking {
            return Ok(());
        }
        self.remove_finalizer(node, FOREGROUND).await
    }

    /// Upstream's cycle breaker: an object about to be deleted in the foreground for an owner
    /// that waits, one of whose own dependents already waits for its dependents, could close a
    /// circle of owners waiting on each other; its references are made non-blocking first (as
    /// upstream, this has false positives: the owners then only stop waiting for it). Returns
    /// the resourceVersion to delete it at, None when the patch met a change.
    async fn unblock_if_circular(&self, uid: &str, node: &Node, owners: &[OwnerReference], resource_version: String) -> Result<Option<String>, Error> {
        let circular = self.graph.dependents.get(uid).is_some_and(|d| d.iter().filter_map(|u| self.graph.nodes.get(u)).any(waits_for_dependents));
        if !circular || !owners.iter().any(|o| o.block_owner_deletion == Some(true)) {
            return Ok(Some(resource_version));
        }
        let refs: Vec<OwnerReference> = owners.iter().map(|o| OwnerReference { block_owner_deletion: o.block_owner_deletion.map(|_| false), ..o.clone() }).collect();
        tracing::info!(kind = %self.kinds[node.kind].ar.kind, namespace = ?node.namespace, name = %node.name, "owners and a dependent wait for dependents: making the owner references non-blocking to break a possible circle");
        let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": resource_version } });
        match self.api(node.kind, node.namespace.as_deref()).patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(o) => Ok(o.metadata.resource_version),
            Err(e) => ignore_gone_or_conflict(e).map(|_| None),
        }
    }

    async fn remove_finalizer(&self, node: &Node, finalizer: &str) -> Result<(), Error> {
        let keep: Vec<&String> = node.finalizers.iter().filter(|f| *f != finalizer).collect();
        let f = if keep.is_empty() { json!(null) } else { json!(keep) };
        let patch = json!({ "metadata": { "finalizers": f, "resourceVersion": node.resource_version } });
        self.api(node.kind, node.namespace.as_deref()).patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch)).await.map(|_| ()).or_else(ignore_gone_or_conflict)
    }
}

/// Deleted in the foreground: waiting for its dependents to go.
fn waits_for_dependents(n: &Node) -> bool {
    n.deleting && n.finalizers.iter().any(|f| f == FOREGROUND)
}

/// A 404 (already gone) or 409 (changed since we looked: the watch brings the new state and
/// the object is attempted again) is not a failure.
fn ignore_gone_or_conflict(e: kube::Error) -> Result<(), Error> {
    match e {
        kube::Error::Api(ref s) if s.code == 404 || s.code == 409 => Ok(()),
        e => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    fn pod(name: &str, uid: &str, owner: Option<&str>) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("ns".into());
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(uid.into());
        p.metadata.owner_references = owner.map(|o| vec![OwnerReference { uid: o.into(), controller: Some(true), ..Default::default() }]);
        p
    }

    /// What the graph was sent so far: `+uid owner` for an Apply, `-uid` for a Delete.
    fn drain(s: &mut Events) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(Some((kind, ev))) = s.next().now_or_never() {
            assert_eq!(kind, 7, "events carry the kind's index");
            out.push(match ev {
                Ok(watcher::Event::Apply(m)) => format!("+{} {}", m.metadata.uid.unwrap_or_default(), m.metadata.owner_references.unwrap_or_default().first().map(|o| o.uid.clone()).unwrap_or_default()),
                Ok(watcher::Event::Delete(m)) => format!("-{}", m.metadata.uid.unwrap_or_default()),
                other => format!("unexpected {other:?}"),
            });
        }
        out
    }

    fn graph_node(rv: &str, owner: Option<&str>, deleting: bool) -> Node {
        Node {
            kind: 0,
            namespace: Some("ns".into()),
            name: "p".into(),
            resource_version: rv.into(),
            owners: owner.map(|o| OwnerReference { uid: o.into(), ..Default::default() }).into_iter().collect(),
            deleting,
            finalizers: Vec::new(),
        }
    }

    /// Only what the collector reads wakes it: a new object, changed references, a deletion
    /// begun; a status change or a binding only updates the graph's resourceVersion.
    #[test]
    fn a_change_of_what_the_collector_does_not_read_marks_nothing() {
        let mut g = Graph::default();
        let mut dirty = BTreeSet::new();
        g.upsert("u".into(), graph_node("1", Some("rs"), false), &mut dirty);
        assert_eq!(dirty.iter().map(String::as_str).collect::<Vec<_>>(), ["rs", "u"], "new: it and its owner");
        dirty.clear();
        g.upsert("u".into(), graph_node("2", Some("rs"), false), &mut dirty);
        assert!(dirty.is_empty(), "bound or status: nothing");
        assert_eq!(g.nodes.get("u").map(|n| n.resource_version.as_str()), Some("2"), "the graph follows");
        g.upsert("u".into(), graph_node("3", Some("rs2"), false), &mut dirty);
        assert_eq!(dirty.iter().map(String::as_str).collect::<Vec<_>>(), ["rs2", "u"], "adopted by another owner");
        assert!(g.dependents.get("rs").is_none_or(|d| d.is_empty()), "the old owner's dependents follow");
        dirty.clear();
        g.upsert("child".into(), graph_node("4", Some("u"), false), &mut dirty);
        dirty.clear();
        g.upsert("u".into(), graph_node("5", Some("rs2"), true), &mut dirty);
        assert!(dirty.contains("child") && dirty.contains("u"), "a deletion begun: its dependents too, {dirty:?}");
    }

    /// The pods reach the graph from the shared watch: as the cache holds them when read, a pod
    /// gone (or replaced by one of the same name) as the deletion of its uid, and the whole cache
    /// to a collector (re)started after the first list.
    #[test]
    fn pods_come_from_the_shared_watch_as_the_cache_holds_them() {
        let shared: Shared<Pod> = Shared::new();
        let mut events = from_shared(7, &shared);
        shared.apply(watcher::Event::Init);
        shared.apply(watcher::Event::InitApply(pod("a", "u1", Some("rs1"))));
        shared.apply(watcher::Event::InitDone);
        assert_eq!(drain(&mut events), ["+u1 rs1"]);

        // Two changes before the collector reads either: both read as the newest.
        shared.apply(watcher::Event::Apply(pod("a", "u1", Some("rs2"))));
        shared.apply(watcher::Event::Apply(pod("a", "u1", None)));
        assert_eq!(drain(&mut events), ["+u1 ", "+u1 "]);

        // Deleted, then made again under the same name: the old uid goes, the new one comes.
        shared.apply(watcher::Event::Delete(pod("a", "u1", None)));
        shared.apply(watcher::Event::Apply(pod("a", "u2", Some("rs1"))));
        assert_eq!(drain(&mut events), ["-u1", "+u2 rs1"]);

        // A relist that no longer holds a pod (deleted while the watch was down).
        shared.apply(watcher::Event::Init);
        shared.apply(watcher::Event::InitApply(pod("b", "u3", None)));
        shared.apply(watcher::Event::InitDone);
        let mut got = drain(&mut events);
        got.sort();
        assert_eq!(got, ["+u3 ", "-u2"]);

        // A collector started again is handed the whole cache.
        assert_eq!(drain(&mut from_shared(7, &shared)), ["+u3 "]);
    }
}
