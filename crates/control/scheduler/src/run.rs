//! The scheduler's I/O: watches feeding the cache and the queue, the scheduling loop, bindings
//! (many in flight while the next pod is scheduled), pod conditions, preemption's deletions,
//! and events. Talks only to the API server, with typed objects, as kube-scheduler does.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Binding, Namespace, Node, ObjectReference, Pod, PodCondition, PodStatus, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::{Notify, Semaphore};

use crate::cache::{is_bound, Cache, NodeChange};
use strata_client::events::{EventType, Recorder};
use crate::info::PodInfo;
use crate::labels::Selector;
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
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    client: kube::Client,
    config: Config,
    events: Recorder,
    bindings: Arc<Semaphore>,
    /// PodDisruptionBudgets, which preemption spares when it can.
    pdbs: kube::runtime::reflector::Store<PodDisruptionBudget>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; the state is still the best we have.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Run until the watches end (never, in practice) or `stop` resolves.
pub async fn run(client: kube::Client, config: Config, stop: impl std::future::Future<Output = ()>) {
    let events = Recorder::new(client.clone(), &config.scheduler_name);
    let bindings = Arc::new(Semaphore::new(config.max_bindings_in_flight.max(1)));
    let (pdbs, pdb_writer) = kube::runtime::reflector::store();
    let pdb_stream = kube::runtime::reflector::reflector(pdb_writer, watcher::watcher(Api::<PodDisruptionBudget>::all(client.clone()), watcher::Config::default())).default_backoff();
    let shared = Arc::new(Shared {
        state: Mutex::new(State { cache: Cache::default(), queue: Queue::default(), search: Search::default(), nodes_synced: false, pods_synced: false }),
        wake: Notify::new(),
        client,
        config,
        events,
        bindings,
        pdbs,
    });
    // Aborted when this future ends or is dropped (a leader that lost its lease stops at once).
    let _tasks = AbortOnDrop(vec![
        tokio::spawn(watch_nodes(shared.clone())),
        tokio::spawn(watch_pods(shared.clone())),
        tokio::spawn(watch_namespaces(shared.clone())),
        tokio::spawn(watch_selectors(shared.clone())),
        tokio::spawn(flush_periodically(shared.clone())),
        tokio::spawn(pdb_stream.for_each(|_| futures_util::future::ready(()))),
    ]);
    tokio::select! {
        _ = schedule_loop(shared.clone()) => {}
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

async fn flush_periodically(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        shared.lock().queue.flush_unschedulable(Instant::now());
        shared.wake.notify_one();
    }
}

/// Follow a watcher, calling `apply`/`delete` for objects and reconciling after each
/// (re)list: objects not listed again are deleted.
async fn follow<K, A, D, R>(api: Api<K>, cfg: watcher::Config, mut apply: A, mut delete: D, mut relisted: R)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    A: FnMut(K),
    D: FnMut(K),
    R: FnMut(&HashSet<String>),
{
    let mut stream = std::pin::pin!(watcher::watcher(api, cfg).default_backoff());
    let mut listing: HashSet<String> = HashSet::new();
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(o)) => {
                if let Some(uid) = o.meta().uid.clone() {
                    listing.insert(uid);
                }
                apply(o);
            }
            Ok(Event::InitDone) => relisted(&listing),
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
            let mut st = s1.lock();
            let change = st.cache.set_node(node);
            let ev = match change {
                NodeChange::Added => ClusterEvent::NodeAdded,
                NodeChange::Scheduling => ClusterEvent::NodeChanged,
                NodeChange::Other => return,
            };
            st.queue.move_on(ev, Instant::now());
            drop(st);
            s1.wake.notify_one();
        },
        move |node: Node| {
            s2.lock().cache.remove_node(node.metadata.name.as_deref().unwrap_or(""));
        },
        move |listed: &HashSet<String>| {
            let mut st = s3.lock();
            let gone: Vec<String> = st.cache.nodes.iter().filter(|n| n.node.as_ref().is_some_and(|o| !o.metadata.uid.as_ref().is_some_and(|u| listed.contains(u)))).map(|n| n.name.clone()).collect();
            for n in gone {
                st.cache.remove_node(&n);
            }
            st.nodes_synced = true;
            drop(st);
            s3.wake.notify_one();
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
            let mut st = s3.lock();
            let mut gone: Vec<String> = st.cache.bound_uids().into_iter().filter(|u| !listed.contains(u)).collect();
            gone.extend(st.queue.uids().into_iter().filter(|u| !listed.contains(u)));
            for uid in gone {
                st.queue.remove(&uid);
                st.cache.remove_pod(&uid);
            }
            st.pods_synced = true;
            drop(st);
            s3.wake.notify_one();
        },
    )
    .await
}

fn on_pod(shared: &Shared, pod: Pod) {
    let ours = pod.spec.as_ref().and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler") == shared.config.scheduler_name;
    let bound = is_bound(&pod);
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let info = Arc::new(PodInfo::new(Arc::new(pod)));
    let now = Instant::now();
    let mut st = shared.lock();
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
        drop(st);
        shared.wake.notify_one();
    }
}

fn on_pod_deleted(shared: &Shared, uid: &str) {
    let mut st = shared.lock();
    st.queue.remove(uid);
    st.cache.nominated.remove(uid);
    if st.cache.has_pod(uid) {
        st.cache.remove_pod(uid);
        st.queue.move_on(ClusterEvent::PodDeleted, Instant::now());
        drop(st);
        shared.wake.notify_one();
    }
}

async fn watch_namespaces(shared: Arc<Shared>) {
    let api: Api<Namespace> = Api::all(shared.client.clone());
    let (s1, s2) = (shared.clone(), shared.clone());
    follow(
        api,
        watcher::Config::default(),
        move |ns: Namespace| {
            let name = ns.metadata.name.clone().unwrap_or_default();
            s1.lock().cache.namespaces.insert(name, ns.metadata.labels.unwrap_or_default());
        },
        move |ns: Namespace| {
            s2.lock().cache.namespaces.remove(ns.metadata.name.as_deref().unwrap_or(""));
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
            let sel = s.spec.and_then(|sp| sp.selector).unwrap_or_default();
            s1.lock().cache.services.insert(key(&s.metadata), sel);
        },
        move |s: Service| {
            s2.lock().cache.services.remove(&key(&s.metadata));
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
            s3.lock().cache.workloads.insert(("ReplicaSet", ns, name), sel);
        },
        move |r: ReplicaSet| {
            let (ns, name) = key(&r.metadata);
            s4.lock().cache.workloads.remove(&("ReplicaSet", ns, name));
        },
        |_| {},
    );
    let statefulsets = follow(
        Api::<StatefulSet>::all(shared.client.clone()),
        watcher::Config::default(),
        move |r: StatefulSet| {
            let (ns, name) = key(&r.metadata);
            let sel = r.spec.map(|s| Selector::parse(&s.selector)).unwrap_or_default();
            s5.lock().cache.workloads.insert(("StatefulSet", ns, name), sel);
        },
        move |r: StatefulSet| {
            let (ns, name) = key(&r.metadata);
            s6.lock().cache.workloads.remove(&("StatefulSet", ns, name));
        },
        |_| {},
    );
    tokio::join!(services, replicasets, statefulsets);
}

async fn schedule_loop(shared: Arc<Shared>) {
    loop {
        let (popped, next_backoff) = {
            let mut st = shared.lock();
            if !(st.nodes_synced && st.pods_synced) {
                (None, None)
            } else {
                let p = st.queue.pop(Instant::now());
                (p, st.queue.next_backoff())
            }
        };
        let Some(pod) = popped else {
            let wait = next_backoff.map_or(Duration::from_secs(1), |t| t.saturating_duration_since(Instant::now()).min(Duration::from_secs(1)));
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(5))) => {}
            }
            continue;
        };
        schedule_one(&shared, pod).await;
    }
}

async fn schedule_one(shared: &Arc<Shared>, pod: Arc<PodInfo>) {
    let now = Instant::now();
    let placed = {
        let mut guard = shared.lock();
        if !guard.queue.contains(&pod.uid) {
            return;
        }
        let st = &mut *guard;
        match plugins::schedule(&st.cache, &pod, &mut st.search) {
            Ok(d) => {
                tracing::debug!(pod = %pod.key(), node = %d.node, evaluated = d.evaluated, feasible = d.feasible, "scheduled");
                st.cache.assume(&pod, &d.node);
                st.queue.done(&pod.uid);
                Some(d.node)
            }
            Err(mut fit) => {
                let plugins = fit.plugins();
                let mut preempted = None;
                if fit.num_nodes > 0 {
                    match preemption::preempt(&st.cache, &pod, &fit, &shared.pdbs.state()) {
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
                let pod = pod.clone();
                tokio::spawn(async move { report_failure(&shared2, pod, fit.message(), preempted).await });
                None
            }
        }
    };
    let Some(node) = placed else { return };
    // Take a binding slot before the next pod, so at most N bindings are in flight.
    let Ok(permit) = shared.bindings.clone().acquire_owned().await else { return };
    let shared2 = shared.clone();
    tokio::spawn(async move {
        bind(&shared2, pod, node).await;
        drop(permit);
    });
}

async fn bind(shared: &Shared, pod: Arc<PodInfo>, node: String) {
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
            shared.lock().cache.remove_pod(&pod.uid);
        }
        Err(e) => {
            tracing::warn!(pod = %pod.key(), error = %e, "binding failed; retrying after backoff");
            {
                let mut st = shared.lock();
                st.cache.remove_pod(&pod.uid);
                st.queue.retry(pod.clone(), Instant::now());
            }
            shared.events.publish(&*pod.pod, EventType::Warning, "FailedScheduling", format!("Binding rejected: {e}"));
        }
    }
}

/// Tell the pod why it did not fit (event, PodScheduled=False condition, nominated node) and
/// carry out a preemption.
async fn report_failure(shared: &Shared, pod: Arc<PodInfo>, message: String, preempted: Option<preemption::Preemption>) {
    tracing::debug!(pod = %pod.key(), %message, "unschedulable");
    shared.events.publish(&*pod.pod, EventType::Warning, "FailedScheduling", message.clone());
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &pod.namespace);
    let nominated = preempted.as_ref().map(|p| p.node.clone());
    if let Some(p) = &preempted {
        for v in &p.victims {
            let vapi: Api<Pod> = Api::namespaced(shared.client.clone(), &v.namespace);
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
