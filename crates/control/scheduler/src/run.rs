//! The scheduler's I/O: watches feeding the cache and the queue, the scheduling loop, bindings
//! (many in flight while the next pod is scheduled), pod conditions, preemption's deletions,
//! and events. Talks only to the API server, with typed objects, as kube-scheduler does.
//!
//! The cache and the queue belong to one thread of their own, the scheduling thread: the watch
//! tasks decode objects on the async runtime and send each change to it as a closure, which it
//! applies between two pods. Scheduling a pod is CPU work over the whole cache; done on the
//! runtime (behind a lock the watch tasks also took) it held the runtime's workers for seconds
//! under a backlog, and the Lease renewals waiting for a worker missed their deadline.
//! **Invariant:** nothing on the async runtime waits for the scheduling thread.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod, PodCondition, PodStatus, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::runtime::reflector::{ObjectRef, Store};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::Semaphore;

use crate::cache::{is_bound, Cache, NodeChange};
use strata_client::events::{EventType, Recorder};
use crate::info::PodInfo;
use crate::labels::Selector;
use crate::plugins::volume::{claim_ref, Choice, VolumeCheck, SELECTED_NODE};
use crate::plugins::{self, Search};
use crate::preemption;
use crate::queue::{ClusterEvent, Queue};
use crate::Config;

struct State {
    cache: Cache,
    queue: Queue,
    search: Search,
    nodes_synced: bool,
    pods_synced: bool,
    slot_waits: SlotWaits,
}

/// How long the scheduling thread waited for a binding slot (all `max_bindings_in_flight`
/// bindings unanswered): reported at most every 10 s, so a run shows whether the bindings in
/// flight bound its rate.
struct SlotWaits {
    limit: usize,
    waits: u32,
    waited: Duration,
    since: Instant,
}

impl SlotWaits {
    fn note(&mut self, waited: Duration) {
        self.waits += 1;
        self.waited += waited;
        if self.since.elapsed() >= Duration::from_secs(10) {
            tracing::info!(waits = self.waits, waited_ms = self.waited.as_millis() as u64, over_ms = self.since.elapsed().as_millis() as u64, limit = self.limit, "waited for a binding slot (bindings in flight at the limit)");
            *self = SlotWaits { limit: self.limit, waits: 0, waited: Duration::ZERO, since: Instant::now() };
        }
    }
}

/// A change to the scheduler's state, applied on the scheduling thread.
type Change = Box<dyn FnOnce(&mut State) + Send>;

/// Most changes applied between two pods (a flood of watch events cannot hold scheduling off).
const CHANGES_PER_POD: usize = 4096;
/// How often pods unschedulable for too long are tried again.
const FLUSH_EVERY: Duration = Duration::from_secs(30);

struct Shared {
    changes: mpsc::Sender<Change>,
    /// Set when the scheduler stops (leadership lost): the scheduling thread ends.
    stopped: AtomicBool,
    runtime: tokio::runtime::Handle,
    client: kube::Client,
    config: Config,
    events: Recorder,
    bindings: Arc<Semaphore>,
    /// PodDisruptionBudgets, which preemption spares when it can.
    pdbs: kube::runtime::reflector::Store<PodDisruptionBudget>,
    /// PersistentVolumeClaims and StorageClasses: a pod waits until its claims are bound.
    claims: Store<PersistentVolumeClaim>,
    classes: Store<StorageClass>,
    /// PersistentVolumes: where a claim that waits for its first consumer can be had.
    volumes: Store<PersistentVolume>,
    /// Volumes promised to claims by bindings in flight (upstream's assumed volumes): volume
    /// name -> claim uid, until the binding has written the volume's claimRef.
    assumed_volumes: std::sync::Mutex<HashMap<String, String>>,
}

impl Shared {
    /// Queue a change for the scheduling thread (which wakes for it).
    fn change(&self, f: impl FnOnce(&mut State) + Send + 'static) {
        // Fails only once the scheduling thread has ended (the scheduler is stopping).
        let _ = self.changes.send(Box::new(f));
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.change(|_| {});
    }
}

/// Stops the scheduling thread when `run` ends or is dropped.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Run until the watches end (never, in practice) or `stop` resolves.
pub async fn run(client: kube::Client, config: Config, stop: impl std::future::Future<Output = ()>) {
    let events = Recorder::new(client.clone(), &config.scheduler_name, config.event_rate);
    let bindings = Arc::new(Semaphore::new(config.max_bindings_in_flight.max(1)));
    let (pdbs, pdb_writer) = kube::runtime::reflector::store();
    let pdb_stream = kube::runtime::reflector::reflector(pdb_writer, strata_client::lean::watcher(Api::<PodDisruptionBudget>::all(client.clone()), watcher::Config::default())).default_backoff();
    let (claims, claim_writer) = kube::runtime::reflector::store();
    let claim_stream = kube::runtime::reflector::reflector(claim_writer, strata_client::lean::watcher(Api::<PersistentVolumeClaim>::all(client.clone()), watcher::Config::default())).default_backoff();
    let (classes, class_writer) = kube::runtime::reflector::store();
    let class_stream = kube::runtime::reflector::reflector(class_writer, strata_client::lean::watcher(Api::<StorageClass>::all(client.clone()), watcher::Config::default())).default_backoff();
    let (volumes, volume_writer) = kube::runtime::reflector::store();
    let volume_stream = kube::runtime::reflector::reflector(volume_writer, strata_client::lean::watcher(Api::<PersistentVolume>::all(client.clone()), watcher::Config::default())).default_backoff();
    let (changes, rx) = mpsc::channel();
    let shared = Arc::new(Shared {
        changes,
        stopped: AtomicBool::new(false),
        runtime: tokio::runtime::Handle::current(),
        client,
        config,
        events,
        bindings,
        pdbs,
        claims,
        classes,
        volumes,
        assumed_volumes: Default::default(),
    });

    // Aborted when this future ends or is dropped (a leader that lost its lease stops at once).
    let _tasks = AbortOnDrop(vec![
        tokio::spawn(watch_nodes(shared.clone())),
        tokio::spawn(watch_pods(shared.clone())),
        tokio::spawn(watch_namespaces(shared.clone())),
        tokio::spawn(watch_selectors(shared.clone())),
        tokio::spawn(pdb_stream.for_each(|_| futures_util::future::ready(()))),
        tokio::spawn(claim_stream.for_each(claims_moved(shared.clone()))),
        tokio::spawn(class_stream.for_each(claims_moved(shared.clone()))),
        tokio::spawn(volume_stream.for_each(claims_moved(shared.clone()))),
    ]);
    let _stop = StopOnDrop(shared.clone());
    // The scheduling thread reports its end (a panic included) by dropping `done`.
    let (done, ended) = tokio::sync::oneshot::channel::<()>();
    let thread_shared = shared.clone();
    let started = std::thread::Builder::new().name("scheduler".into()).spawn(move || {
        let _done = done;
        schedule_thread(&thread_shared, &rx);
    });
    if let Err(e) = started {
        tracing::error!(error = %e, "starting the scheduling thread");
        return;
    }
    tokio::select! {
        _ = ended => tracing::error!("the scheduling thread ended"),
        _ = stop => {}
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Follow a watcher, calling `apply`/`delete` for objects and reconciling after each
/// (re)list: objects not listed again are deleted.
async fn follow<K, A, D, R>(api: Api<K>, cfg: watcher::Config, mut apply: A, mut delete: D, mut relisted: R)
where
    K: k8s_openapi::Resource + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    A: FnMut(K),
    D: FnMut(K),
    R: FnMut(&HashSet<String>),
{
    let mut stream = std::pin::pin!(strata_client::lean::watcher(api, cfg).default_backoff());
    let mut listing: HashSet<String> = HashSet::new();
    let mut listed_since = Instant::now();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => {
                listing.clear();
                listed_since = Instant::now();
            }
            Ok(Event::InitApply(o)) => {
                if let Some(uid) = o.meta().uid.clone() {
                    listing.insert(uid);
                }
                apply(o);
            }
            Ok(Event::InitDone) => {
                let kind = <K as k8s_openapi::Resource>::KIND;
                tracing::info!(kind, objects = listing.len(), ms = listed_since.elapsed().as_millis() as u64, "listed");
                relisted(&listing);
            }
            Ok(Event::Apply(o)) => apply(o),
            Ok(Event::Delete(o)) => delete(o),
            Err(e) => tracing::warn!(error = %e, "scheduler watch"),
        }
    }
}

async fn watch_nodes(shared: Arc<Shared>) {
    let api: Api<Node> = Api::all(shared.client.clone());
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    follow(
        api,
        watcher::Config::default(),
        move |node: Node| {
            s1.change(move |st| {
                let ev = match st.cache.set_node(node) {
                    NodeChange::Added => ClusterEvent::NodeAdded,
                    NodeChange::Scheduling => ClusterEvent::NodeChanged,
                    NodeChange::Other => return,
                };
                st.queue.move_on(ev, Instant::now());
            })
        },
        move |node: Node| {
            s2.change(move |st| st.cache.remove_node(node.metadata.name.as_deref().unwrap_or("")));
        },
        move |listed: &HashSet<String>| {
            let listed = listed.clone();
            s3.change(move |st| {
                let gone: Vec<String> = st.cache.nodes.iter().filter(|n| n.node.as_ref().is_some_and(|o| !o.metadata.uid.as_ref().is_some_and(|u| listed.contains(u)))).map(|n| n.name.clone()).collect();
                for n in gone {
                    st.cache.remove_node(&n);
                }
                st.nodes_synced = true;
            })
        },
    )
    .await
}

async fn watch_pods(shared: Arc<Shared>) {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
    let (s1, s2, s3) = (shared.clone(), shared.clone(), shared.clone());
    follow(
        api,
        cfg,
        move |pod: Pod| on_pod(&s1, pod),
        move |pod: Pod| on_pod_deleted(&s2, pod.metadata.uid.as_deref().unwrap_or("")),
        move |listed: &HashSet<String>| {
            let listed = listed.clone();
            s3.change(move |st| {
                let mut gone: Vec<String> = st.cache.bound_uids().into_iter().filter(|u| !listed.contains(u)).collect();
                gone.extend(st.queue.uids().into_iter().filter(|u| !listed.contains(u)));
                for uid in gone {
                    st.queue.remove(&uid);
                    st.cache.remove_pod(&uid);
                }
                st.pods_synced = true;
            })
        },
    )
    .await
}

fn on_pod(shared: &Shared, pod: Pod) {
    let ours = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler") == shared.config.scheduler_name;
    let bound = is_bound(&pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    // Decoded here, on the runtime; only the bookkeeping runs on the scheduling thread.
    let info = Arc::new(PodInfo::new(Arc::new(pod)));
    shared.change(move |st| pod_changed(st, info, ours, bound, terminating));
}

fn pod_changed(st: &mut State, info: Arc<PodInfo>, ours: bool, bound: bool, terminating: bool) {
    let now = Instant::now();
    if bound {
        st.queue.remove(&info.uid);
        let was_assumed = st.cache.is_assumed(&info.uid);
        let new = st.cache.add_pod(info);
        if new || was_assumed {
            st.queue.move_on(ClusterEvent::PodPlaced, now);
        }
    } else if st.cache.has_pod(&info.uid) {
        // Assumed: this is an older version than the binding we sent.
        if terminating {
            st.cache.remove_pod(&info.uid);
        }
    } else if !ours || terminating {
        st.queue.remove(&info.uid);
    } else {
        if let Some(n) = info.pod.status.as_ref().and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty()) {
            st.cache.nominated.insert(info.uid.clone(), (n, info.clone()));
        } else {
            st.cache.nominated.remove(&info.uid);
        }
        st.queue.add(info, now);
    }
}

fn on_pod_deleted(shared: &Shared, uid: &str) {
    let uid = uid.to_string();
    shared.change(move |st| {
        st.queue.remove(&uid);
        st.cache.nominated.remove(&uid);
        if st.cache.has_pod(&uid) {
            st.cache.remove_pod(&uid);
            st.queue.move_on(ClusterEvent::PodDeleted, Instant::now());
        }
    });
}

async fn watch_namespaces(shared: Arc<Shared>) {
    let api: Api<Namespace> = Api::all(shared.client.clone());
    let (s1, s2) = (shared.clone(), shared.clone());
    follow(
        api,
        watcher::Config::default(),
        move |ns: Namespace| {
            let name = ns.metadata.name.clone().unwrap_or_default();
            let labels = ns.metadata.labels.unwrap_or_default();
            s1.change(move |st| {
                st.cache.namespaces.insert(name, labels);
            })
        },
        move |ns: Namespace| {
            let name = ns.metadata.name.unwrap_or_default();
            s2.change(move |st| {
                st.cache.namespaces.remove(&name);
            })
        },
        |_| {},
    )
    .await
}

/// Services, ReplicaSets and StatefulSets: only their selectors (for default spreading).
async fn watch_selectors(shared: Arc<Shared>) {
    let key = |m: &ObjectMeta| (m.namespace.clone().unwrap_or_default(), m.name.clone().unwrap_or_default());
    let (s1, s2) = (shared.clone(), shared.clone());
    let services = follow(
        Api::<Service>::all(shared.client.clone()),
        watcher::Config::default(),
        move |s: Service| {
            let k = key(&s.metadata);
            let sel = s.spec.and_then(|sp| sp.selector).unwrap_or_default();
            s1.change(move |st| {
                st.cache.services.insert(k, sel);
            })
        },
        move |s: Service| {
            let k = key(&s.metadata);
            s2.change(move |st| {
                st.cache.services.remove(&k);
            })
        },
        |_| {},
    );
    let (s3, s4, s5, s6) = (shared.clone(), shared.clone(), shared.clone(), shared.clone());
    let replicasets = follow(
        Api::<ReplicaSet>::all(shared.client.clone()),
        watcher::Config::default(),
        move |r: ReplicaSet| {
            let (ns, name) = key(&r.metadata);
            let sel = r.spec.map(|s| Selector::parse(&s.selector)).unwrap_or_default();
            s3.change(move |st| {
                st.cache.workloads.insert(("ReplicaSet", ns, name), sel);
            })
        },
        move |r: ReplicaSet| {
            let (ns, name) = key(&r.metadata);
            s4.change(move |st| {
                st.cache.workloads.remove(&("ReplicaSet", ns, name));
            })
        },
        |_| {},
    );
    let statefulsets = follow(
        Api::<StatefulSet>::all(shared.client.clone()),
        watcher::Config::default(),
        move |r: StatefulSet| {
            let (ns, name) = key(&r.metadata);
            let sel = r.spec.map(|s| Selector::parse(&s.selector)).unwrap_or_default();
            s5.change(move |st| {
                st.cache.workloads.insert(("StatefulSet", ns, name), sel);
            })
        },
        move |r: StatefulSet| {
            let (ns, name) = key(&r.metadata);
            s6.change(move |st| {
                st.cache.workloads.remove(&("StatefulSet", ns, name));
            })
        },
        |_| {},
    );
    tokio::join!(services, replicasets, statefulsets);
}

/// The scheduling thread: owns the cache and the queue, applies the changes the watches and
/// bindings send, and schedules one pod at a time.
fn schedule_thread(shared: &Arc<Shared>, changes: &mpsc::Receiver<Change>) {
    let slot_waits = SlotWaits { limit: shared.config.max_bindings_in_flight, waits: 0, waited: Duration::ZERO, since: Instant::now() };
    let mut st = State { cache: Cache::default(), queue: Queue::default(), search: Search::default(), nodes_synced: false, pods_synced: false, slot_waits };
    let mut last_flush = Instant::now();
    let mut announced = false;
    while !shared.stopped.load(Ordering::SeqCst) {
        for _ in 0..CHANGES_PER_POD {
            match changes.try_recv() {
                Ok(change) => change(&mut st),
                Err(_) => break,
            }
        }
        let now = Instant::now();
        if now.duration_since(last_flush) >= FLUSH_EVERY {
            st.queue.flush_unschedulable(now);
            last_flush = now;
        }
        let synced = st.nodes_synced && st.pods_synced;
        if synced && !announced {
            announced = true;
            tracing::info!(nodes = st.cache.nodes.len(), "caches synced; scheduling");
        }
        let popped = if synced { st.queue.pop(now) } else { None };
        if let Some(pod) = popped {
            schedule_one(shared, &mut st, pod);
            continue;
        }
        let wait = st.queue.next_backoff().map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now).min(Duration::from_secs(1)));
        match changes.recv_timeout(wait.max(Duration::from_millis(5))) {
            Ok(change) => change(&mut st),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn schedule_one(shared: &Arc<Shared>, st: &mut State, pod: Arc<PodInfo>) {
    let now = Instant::now();
    if !st.queue.contains(&pod.uid) {
        return;
    }
    if let Some(why) = claims_not_ready(shared, &pod) {
        let n = st.cache.num_nodes();
        let fit = plugins::FitError {
            num_nodes: n,
            pre_filter: Some((plugins::VOLUME_BINDING, why)),
            post_filter: (n > 0).then(|| format!("preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling")),
            ..Default::default()
        };
        st.queue.unschedulable(&pod.uid, fit.plugins(), now);
        let shared2 = shared.clone();
        shared.runtime.spawn(async move { report_failure(&shared2, pod, fit.message(), None).await });
        return;
    }
    let volumes = volume_check(shared, &pod);
    let node = match plugins::schedule_with(&st.cache, &pod, &mut st.search, volumes.as_ref()) {
        Ok(d) => {
            tracing::debug!(pod = %pod.key(), node = %d.node, evaluated = d.evaluated, feasible = d.feasible, "scheduled");
            st.cache.assume(&pod, &d.node);
            st.queue.done(&pod.uid);
            d.node
        }
        Err(mut fit) => {
            let plugins = fit.plugins();
            let mut preempted = None;
            if fit.num_nodes > 0 {
                let with_volumes;
                let seen = match &volumes {
                    Some(v) => {
                        with_volumes = volume_refusals(&st.cache, v, &fit);
                        &with_volumes
                    }
                    None => &fit,
                };
                match preemption::preempt(&st.cache, &pod, seen, &shared.pdbs.state()) {
                    Ok(p) => {
                        st.cache.nominated.insert(pod.uid.clone(), (p.node.clone(), pod.clone()));
                        for c in &p.cleared_nominations {
                            st.cache.nominated.remove(&c.uid);
                        }
                        preempted = Some(p);
                    }
                    Err(msg) => fit.post_filter = Some(msg),
                }
            }
            st.queue.unschedulable(&pod.uid, plugins, now);
            let shared2 = shared.clone();
            shared.runtime.spawn(async move { report_failure(&shared2, pod, fit.message(), preempted).await });
            return;
        }
    };
    // Take a binding slot before the next pod, so at most N bindings are in flight (waiting in
    // slices, to notice a stop; a free slot is taken without entering the runtime).
    let permit = match shared.bindings.clone().try_acquire_owned() {
        Ok(permit) => permit,
        Err(_) => {
            let waited = Instant::now();
            let permit = loop {
                if shared.stopped.load(Ordering::SeqCst) {
                    return;
                }
                // The timer is made inside the future: this thread is not in the runtime's context.
                let acquire = async { tokio::time::timeout(Duration::from_secs(1), shared.bindings.clone().acquire_owned()).await };
                match shared.runtime.block_on(acquire) {
                    Ok(Ok(permit)) => break permit,
                    Ok(Err(_)) => return,
                    Err(_) => continue,
                }
            };
            st.slot_waits.note(waited.elapsed());
            permit
        }
    };
    // VolumeBinding's Reserve: what binding the pod does for its waiting claims on this node.
    let choices = match &volumes {
        Some(v) if v.binds() => st.cache.node(&node).and_then(|n| v.choose(n)).unwrap_or_default(),
        _ => Vec::new(),
    };
    if let Ok(mut assumed) = shared.assumed_volumes.lock() {
        for (claim, choice) in &choices {
            if let Choice::Volume(v) = choice {
                assumed.insert(v.metadata.name.clone().unwrap_or_default(), claim.metadata.uid.clone().unwrap_or_default());
            }
        }
    }
    let shared2 = shared.clone();
    shared.runtime.spawn(async move {
        bind(&shared2, pod, node, choices).await;
        drop(permit);
    });
}

/// Upstream's default bind timeout: how long a binding waits for the pod's claims to be bound.
const VOLUME_BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// The VolumeBinding check of a pod with claims (`None`: none depends on the node).
fn volume_check(shared: &Shared, pod: &PodInfo) -> Option<VolumeCheck> {
    if pod.claims.is_empty() {
        return None;
    }
    let claims: Vec<Arc<PersistentVolumeClaim>> = pod.claims.iter().filter_map(|n| shared.claims.get(&ObjectRef::new(n).within(&pod.namespace))).collect();
    let assumed = shared.assumed_volumes.lock().map(|a| a.clone()).unwrap_or_default();
    let taken = |v: &str, c: &PersistentVolumeClaim| assumed.get(v).is_some_and(|uid| Some(uid) != c.metadata.uid.as_ref());
    VolumeCheck::new(&claims, |n| shared.volumes.get(&ObjectRef::new(n)), &shared.volumes.state(), |k| shared.classes.get(&ObjectRef::new(k)), taken)
}

/// The refusals preemption sees: a node refused for something else whose volumes cannot hold
/// the pod's claims either is refused by VolumeBinding (unresolvable: no victim helps there).
fn volume_refusals(cache: &Cache, v: &VolumeCheck, fit: &plugins::FitError) -> plugins::FitError {
    let mut seen = fit.clone();
    for (name, r) in seen.statuses.iter_mut().filter(|(_, r)| !r.unresolvable) {
        if let Some(Err(refused)) = cache.node(name).map(|n| v.filter(n)) {
            *r = refused;
        }
    }
    seen
}

/// VolumeBinding's PreBind: each waiting claim bound to the volume chosen for it (the volume's
/// claimRef; the binder finishes the binding) or marked for provisioning on the node; then wait
/// until the binder has bound every one.
async fn bind_volumes(shared: &Shared, pod: &PodInfo, node: &str, choices: &[(Arc<PersistentVolumeClaim>, Choice)]) -> Result<(), String> {
    let pvs: Api<PersistentVolume> = Api::all(shared.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), &pod.namespace);
    for (claim, choice) in choices {
        let cname = claim.metadata.name.clone().unwrap_or_default();
        match choice {
            Choice::Volume(v) => {
                let vname = v.metadata.name.clone().unwrap_or_default();
                if v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.as_ref()).is_some_and(|u| Some(u) == claim.metadata.uid.as_ref()) {
                    continue;
                }
                let mut v = (**v).clone();
                if let Some(s) = v.spec.as_mut() {
                    s.claim_ref = Some(claim_ref(claim));
                }
                v.metadata.annotations.get_or_insert_with(Default::default).insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
                // With the resourceVersion it was chosen on: a volume taken meanwhile is a conflict.
                pvs.replace(&vname, &PostParams::default(), &v).await.map_err(|e| format!("binding volumes: volume {vname} for claim {cname}: {e}"))?;
            }
            Choice::Provision => {
                if claim.metadata.annotations.as_ref().and_then(|a| a.get(SELECTED_NODE)).is_some_and(|n| n == node) {
                    continue;
                }
                let patch = serde_json::json!({ "metadata": { "annotations": { SELECTED_NODE: node } } });
                claims.patch(&cname, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(|e| format!("binding volumes: selecting node {node} for claim {cname}: {e}"))?;
            }
        }
    }
    let deadline = Instant::now() + VOLUME_BIND_TIMEOUT;
    loop {
        let bound = choices.iter().all(|(c, _)| {
            shared.claims.get(&ObjectRef::from_obj(c.as_ref())).is_some_and(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound") && c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).is_some_and(|n| !n.is_empty()))
        });
        if bound {
            return Ok(());
        }
        if shared.stopped.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return Err("binding volumes: timed out waiting for the claims to be bound".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn bind(shared: &Shared, pod: Arc<PodInfo>, node: String, volumes: Vec<(Arc<PersistentVolumeClaim>, Choice)>) {
    if !volumes.is_empty() {
        let result = bind_volumes(shared, &pod, &node, &volumes).await;
        // Written (or failed): the volumes' own state speaks for them from here.
        if let Ok(mut assumed) = shared.assumed_volumes.lock() {
            for (_, choice) in &volumes {
                if let Choice::Volume(v) = choice {
                    assumed.remove(v.metadata.name.as_deref().unwrap_or(""));
                }
            }
        }
        if let Err(why) = result {
            tracing::warn!(pod = %pod.key(), error = %why, "volume binding failed; retrying after backoff");
            shared.events.publish(&*pod.pod, EventType::Warning, "FailedScheduling", format!("running PreBind plugin \"VolumeBinding\": {why}"));
            let (retry, now) = (pod.clone(), Instant::now());
            shared.change(move |st| {
                st.cache.remove_pod(&retry.uid);
                st.queue.retry(retry, now);
            });
            return;
        }
    }
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &pod.namespace);
    let binding = Binding {
        metadata: ObjectMeta { name: Some(pod.name.clone()), namespace: Some(pod.namespace.clone()), uid: Some(pod.uid.clone()), ..Default::default() },
        target: ObjectReference { api_version: Some("v1".into()), kind: Some("Node".into()), name: Some(node.clone()), ..Default::default() },
    };
    let body = match serde_json::to_vec(&binding) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "encoding a binding");
            return;
        }
    };
    let result: Result<k8s_openapi::apimachinery::pkg::apis::meta::v1::Status, kube::Error> = api.create_subresource("binding", &pod.name, &PostParams::default(), body).await;
    match result {
        Ok(_) => {
            shared.events.publish(&*pod.pod, EventType::Normal, "Scheduled", format!("Successfully assigned {}/{} to {node}", pod.namespace, pod.name));
        }
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
            // Deleted, or bound by someone else: the watch brings the truth.
            tracing::debug!(pod = %pod.key(), error = %e.message, "binding not applied");
            let uid = pod.uid.clone();
            shared.change(move |st| st.cache.remove_pod(&uid));
        }
        Err(e) => {
            tracing::warn!(pod = %pod.key(), error = %e, "binding failed; retrying after backoff");
            let (retry, now) = (pod.clone(), Instant::now());
            shared.change(move |st| {
                st.cache.remove_pod(&retry.uid);
                st.queue.retry(retry, now);
            });
            shared.events.publish(&*pod.pod, EventType::Warning, "FailedScheduling", format!("Binding rejected: {e}"));
        }
    }
}

/// Tell the pod why it did not fit (event, PodScheduled=False condition, nominated node) and
/// carry out a preemption.
/// A claim or class that comes or changes may let pods waiting for their claims go.
fn claims_moved<K>(shared: Arc<Shared>) -> impl FnMut(Result<Event<K>, watcher::Error>) -> futures_util::future::Ready<()> {
    move |ev| {
        if matches!(ev, Ok(Event::Apply(_) | Event::InitDone | Event::Delete(_))) {
            shared.change(|st| st.queue.move_on(ClusterEvent::ClaimChanged, Instant::now()));
        }
        futures_util::future::ready(())
    }
}

/// Why the pod's claims hold it (see [`plugins::claims_not_ready`]), from the watched claims
/// and classes.
fn claims_not_ready(shared: &Shared, pod: &PodInfo) -> Option<String> {
    if pod.claims.is_empty() {
        return None;
    }
    let claim = |name: &str| shared.claims.get(&ObjectRef::new(name).within(&pod.namespace));
    let waits = |class: &str| shared.classes.get(&ObjectRef::new(class)).is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
    plugins::claims_not_ready(pod, claim, waits)
}

async fn report_failure(shared: &Shared, pod: Arc<PodInfo>, message: String, preempted: Option<preemption::Preemption>) {
    tracing::debug!(pod = %pod.key(), %message, "unschedulable");
    shared.events.publish(&*pod.pod, EventType::Warning, "FailedScheduling", message.clone());
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &pod.namespace);
    let nominated = preempted.as_ref().map(|p| p.node.clone());
    if let Some(p) = &preempted {
        for v in &p.victims {
            let vapi: Api<Pod> = Api::namespaced(shared.client.clone(), &v.namespace);
            // Upstream's PrepareCandidate: the victim is marked DisruptionTarget
            // (PreemptionByScheduler) before its deletion, so a Job's pod failure policy can tell.
            let marked = v.pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "DisruptionTarget" && c.status == "True"));
            if !marked {
                let mark = serde_json::json!({
                    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": v.name, "namespace": v.namespace},
                    "status": {"conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                        "message": format!("{}: preempting to accommodate a higher priority pod", shared.config.scheduler_name),
                        "lastTransitionTime": Time(k8s_openapi::chrono::Utc::now())}]},
                });
                if let Err(e) = vapi.patch_status(&v.name, &PatchParams::apply("kube-scheduler").force(), &Patch::Apply(&mark)).await {
                    tracing::warn!(victim = %v.key(), error = %e, "marking a preemption victim");
                    continue;
                }
            }
            let dp = DeleteParams { preconditions: Some(Preconditions { uid: Some(v.uid.clone()), resource_version: None }), ..Default::default() };
            match vapi.delete(&v.name, &dp).await {
                Ok(_) => shared.events.publish(&*v.pod, EventType::Normal, "Preempted", format!("Preempted by pod {} on node {}", pod.uid, p.node)),
                Err(e) => tracing::warn!(victim = %v.key(), error = %e, "deleting a preemption victim"),
            }
        }
        for c in &p.cleared_nominations {
            let capi: Api<Pod> = Api::namespaced(shared.client.clone(), &c.namespace);
            let patch = serde_json::json!({"status": {"nominatedNodeName": null}});
            if let Err(e) = capi.patch_status(&c.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                tracing::debug!(pod = %c.key(), error = %e, "clearing a nomination");
            }
        }
    }
    let current = pod.pod.status.as_ref();
    let same_condition = current.and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
        cs.iter().any(|c| c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable") && c.message.as_deref() == Some(message.as_str()))
    });
    let current_nominated = current.and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty());
    if same_condition && (nominated.is_none() || nominated == current_nominated) {
        return;
    }
    let status = PodStatus {
        conditions: Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(message),
            last_transition_time: Some(Time(k8s_openapi::chrono::Utc::now())),
            ..Default::default()
        }]),
        nominated_node_name: nominated,
        ..Default::default()
    };
    let patch = Pod { status: Some(status), ..Default::default() };
    if let Err(e) = api.patch_status(&pod.name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
        tracing::debug!(pod = %pod.key(), error = %e, "updating the PodScheduled condition");
    }
}
