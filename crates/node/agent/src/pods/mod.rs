//! Pod sync: the pods bound to this node (a watch with `spec.nodeName=<node>` feeding a
//! reflector) run through the driver's `PodRuntime`, one worker per pod uid (kubelet's pod
//! workers), each reconciling level-triggered from the pod and what the driver shows, on every
//! change of the pod and every second: sandbox, volumes, init containers in order, containers
//! with restart back-off; status written through `pods/status` only when it changed. A pod that
//! is gone from the API server (or a sandbox of a pod the API server never heard of, found after
//! a restart) has its containers stopped and everything removed. Everything the agent needs is
//! in the API server or the driver, so the agent can be killed at any point and continues.

pub mod dns;
pub mod http_probe;
pub mod probes;
pub mod spec;
pub mod status;
pub mod sysctls;
mod vm;
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Container, ObjectReference, Pod, PodStatus, Secret, Service};
use k8s_openapi::chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use strata_driver::pod::{
    labels, ContainerConfig, ContainerFilter, ContainerMetadata, ContainerState as DState, ContainerStatus as DStatus, Mount, MountPropagation, MountSource,
    NamespaceMode, PodNamespaces, PodRuntime, PodSandboxConfig, PodSandboxMetadata, QosClass, SandboxFilter, SandboxState, SeccompProfile, SecurityContext,
};
use tokio::sync::Notify;

use crate::Shared;
use status::Observed;

/// Restart back-off, as kubelet's: 10 s doubling to 5 minutes, forgotten after 10 minutes of
/// running.
const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How soon a failed container start is tried again.
const WORKER_BACKOFF: Duration = Duration::from_secs(10);
/// How often a pod with something pending (a container waiting, backing off or not yet
/// started, probes to run) is reconciled without a change (kubelet's relist is 1 s).
const RESYNC: Duration = Duration::from_secs(1);
/// How often a settled pod is reconciled without a change: its containers' starts and exits
/// come as driver events, its spec changes through the watch.
const RESYNC_SETTLED: Duration = Duration::from_secs(10);
/// Whether the driver's container events reach the workers (else every pod resyncs at RESYNC).
static DRIVER_EVENTS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// How often the sandboxes and VMs on the node are listed to find those whose pod is gone.
const ORPHAN_SWEEP: Duration = Duration::from_secs(30);
/// How much of a failed container's log is its termination message under
/// FallbackToLogsOnError (kubelet's MaxContainerTerminationMessageLogLines and -Length).
const FALLBACK_LOG_LINES: usize = 80;
const FALLBACK_LOG_BYTES: usize = 2048;
/// Longest a postStart hook may take (kubelet gives exec hooks no limit; an HTTP one its
/// client's).
const POST_START_LIMIT: Duration = Duration::from_secs(120);
/// How long a container start waits for the first list of the cluster's Services.
const SERVICES_WAIT: Duration = Duration::from_secs(10);
/// How often referenced ConfigMaps and Secrets are read again.
const REFS_REFRESH: Duration = Duration::from_secs(10);
/// A pod's cleanup (stopping and removing everything, then the final delete of its object)
/// that failed is tried again after this, doubling up to [`CLEANUP_RETRY_MAX`]: never given up.
const CLEANUP_RETRY: Duration = Duration::from_secs(1);
const CLEANUP_RETRY_MAX: Duration = Duration::from_secs(30);
/// A terminated pod's worker stays (doing nothing) until the watch shows the pod gone, at most
/// this long, so that a watch behind the API server does not start its cleanup again.
const TERMINATED_LINGER: Duration = Duration::from_secs(300);

type Workers = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

/// Which pod (uid) each sandbox belongs to, as learnt from the driver's events (one record read
/// per sandbox). Pruned to the sandboxes that still exist at every sweep of the node's
/// sandboxes, so nothing stays for a deleted pod.
#[derive(Default)]
struct SandboxOwners(HashMap<String, String>);

impl SandboxOwners {
    fn get(&self, sandbox: &str) -> Option<String> {
        self.0.get(sandbox).cloned()
    }

    fn insert(&mut self, sandbox: String, uid: String) {
        self.0.insert(sandbox, uid);
    }

    /// Forget every sandbox but `existing`.
    fn retain(&mut self, existing: &std::collections::HashSet<&str>) {
        self.0.retain(|sandbox, _| existing.contains(sandbox.as_str()));
        self.0.shrink_to_fit();
    }
}

fn uid_of(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// The worker of pod `uid`, started if there is none: its wake-up.
fn ensure_worker(shared: &Arc<Shared>, workers: &Workers, reader: &Store<Pod>, uid: &str) -> Option<Arc<Notify>> {
    let mut w = workers.lock().ok()?;
    if let Some(n) = w.get(uid) {
        return Some(n.clone());
    }
    let notify = Arc::new(Notify::new());
    w.insert(uid.to_string(), notify.clone());
    tokio::spawn(worker(shared.clone(), uid.to_string(), reader.clone(), notify.clone(), workers.clone()));
    Some(notify)
}

/// The cluster's Services in a reflector (kubelet's service informer), published in
/// `Shared::services` once the first list is complete.
async fn watch_services(shared: Arc<Shared>) {
    let api: Api<Service> = Api::all(shared.client.clone());
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, strata_client::lean::watcher(api, watcher::Config::default())).default_backoff().touched_objects();
    let publish = {
        let shared = shared.clone();
        async move {
            if reader.wait_until_ready().await.is_ok() {
                let _ = shared.services.set(reader);
            }
        }
    };
    let drain = async move {
        futures_util::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(error = %e, "watching services");
            }
        }
    };
    tokio::join!(publish, drain);
}

/// Watch this node's pods and keep a worker per pod (and per orphaned sandbox). Forever.
///
/// A worker wakes when the watch changes its pod, when the driver reports one of its
/// containers started or exited (`PodRuntime::subscribe`), and every [`RESYNC`]. A pod seen
/// by the watch gets its worker at once; the sweep (every 1 s for the watched pods, every
/// [`ORPHAN_SWEEP`] for the node's sandboxes and VMs) also finds sandboxes whose pod is gone. Workers only start once the first list is complete: a worker that does not find
/// its pod stops the pod's containers.
pub(crate) async fn run(shared: Arc<Shared>) {
    tokio::spawn(watch_services(shared.clone()));
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", shared.config.node_name));
    let (reader, writer) = reflector::store();
    let workers: Workers = Arc::default();
    let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = reflector::reflector(writer, strata_client::lean::watcher(api, config)).default_backoff().touched_objects();
    let events = {
        let (workers, reader, shared, synced) = (workers.clone(), reader.clone(), shared.clone(), synced.clone());
        async move {
            futures_util::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                match item {
                    Ok(pod) => {
                        let uid = uid_of(&pod);
                        let n = if synced.load(std::sync::atomic::Ordering::Acquire) && !uid.is_empty() {
                            ensure_worker(&shared, &workers, &reader, &uid)
                        } else {
                            workers.lock().ok().and_then(|w| w.get(&uid).cloned())
                        };
                        if let Some(n) = n {
                            n.notify_one();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "watching this node's pods"),
                }
            }
        }
    };
    // The driver's container events wake the pod's worker (its sandbox's pod-uid label).
    let owners: Arc<Mutex<SandboxOwners>> = Arc::default();
    let driver_events = {
        let (workers, shared, owners) = (workers.clone(), shared.clone(), owners.clone());
        async move {
            let feed = match shared.driver.subscribe() {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "no container events from the driver; pods are resynced every second only");
                    return;
                }
            };
            DRIVER_EVENTS.store(true, std::sync::atomic::Ordering::Release);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let reader = std::thread::Builder::new().name("agent-pod-events".into()).spawn(move || {
                while let Ok(ev) = feed.recv() {
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
                DRIVER_EVENTS.store(false, std::sync::atomic::Ordering::Release);
            });
            if let Err(e) = reader {
                tracing::warn!(error = %e, "starting the container event reader");
                return;
            }
            while let Some(ev) = rx.recv().await {
                let known = owners.lock().ok().and_then(|o| o.get(&ev.sandbox_id));
                let uid = match known {
                    Some(u) => u,
                    None => {
                        let driver = shared.driver.clone();
                        let id = ev.sandbox_id.clone();
                        let found = blocking(move || driver.list_pod_sandboxes(&SandboxFilter { id: Some(id), ..Default::default() })).await;
                        let Some(uid) = found.and_then(Result::ok).and_then(|v| v.into_iter().next()).and_then(|s| s.labels.get(labels::POD_UID).cloned()) else { continue };
                        if let Ok(mut o) = owners.lock() {
                            o.insert(ev.sandbox_id.clone(), uid.clone());
                        }
                        uid
                    }
                };
                if let Some(n) = workers.lock().ok().and_then(|w| w.get(&uid).cloned()) {
                    n.notify_one();
                }
            }
        }
    };
    let sweep = async {
        if reader.wait_until_ready().await.is_err() {
            return;
        }
        synced.store(true, std::sync::atomic::Ordering::Release);
        let mut last_orphans: Option<Instant> = None;
        loop {
            let mut uids: Vec<String> = reader.state().iter().map(|p| uid_of(p)).filter(|u| !u.is_empty()).collect();
            // Sandboxes and VMs whose pod is gone: at start (pods deleted while the agent was
            // down) and every ORPHAN_SWEEP after (a worker that could not finish its cleanup
            // ended); reading every record each second would cost O(pods) a second.
            if last_orphans.is_none_or(|t| t.elapsed() >= ORPHAN_SWEEP) {
                last_orphans = Some(Instant::now());
                let driver = shared.driver.clone();
                if let Some(Ok(sbs)) = blocking(move || driver.list_pod_sandboxes(&SandboxFilter::default())).await {
                    if let Ok(mut o) = owners.lock() {
                        o.retain(&sbs.iter().map(|s| s.id.as_str()).collect());
                    }
                    uids.extend(sbs.into_iter().filter_map(|s| s.labels.get(labels::POD_UID).cloned()));
                }
                if let Some(vms) = shared.vms.get().cloned() {
                    if let Some(found) = blocking(move || vm::pod_uids(&vms)).await {
                        uids.extend(found);
                    }
                }
            }
            for uid in uids {
                if ensure_worker(&shared, &workers, &reader, &uid).is_none() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::join!(events, driver_events, sweep);
}

/// What a worker remembers between syncs (all of it can be lost: it is re-derived).
#[derive(Default)]
struct PodState {
    waiting: HashMap<String, (String, String)>,
    backoff: HashMap<String, Duration>,
    image_backoff: HashMap<String, (Instant, Duration)>,
    refs: Option<(volumes::Refs, Instant)>,
    volumes: BTreeMap<String, PathBuf>,
    last_status: Option<PodStatus>,
    events: HashMap<(String, String), Instant>,
    /// The pod as last seen (its spec holds the preStop hooks when it is gone).
    last_pod: Option<Arc<Pod>>,
    rejected: bool,
    last_write: Option<Instant>,
    /// A container whose last start failed (config, create or run error) is tried again from
    /// this moment (kubelet's pod worker back-off: 10 s).
    retry_at: HashMap<String, Instant>,
    probes: HashMap<(String, probes::Kind), probes::State>,
    /// The pod's ready sandbox once known: later syncs read its record only, not every
    /// sandbox on the node.
    sandbox_id: Option<String>,
    /// The pod's containers (of `sandbox_id`) once listed: later syncs read their records only.
    /// Forgotten when a container is created.
    container_ids: Option<(String, Vec<String>)>,
    /// The latest attempt of each container in the pod's earlier sandboxes (one that died):
    /// the next attempt's number follows it, and it is the last state until then.
    carried: Vec<DStatus>,
    /// The node's allocatable resources (for resourceFieldRef), read every REFS_REFRESH.
    allocatable: Option<(BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>, Instant)>,
    /// A launcher pod's VM: its accelerator and why (asked once).
    accelerator: Option<(String, String)>,
    /// Projected ServiceAccount tokens by [`volumes::token_key`].
    tokens: HashMap<String, CachedToken>,
    /// A launcher pod's VM: whether it wrote to its serial console by the boot timeout (`None`
    /// until it has, or until the timeout has run out).
    console_output: Option<bool>,
    /// A launcher pod's VM: what its QEMU guest agent last said, and the next question.
    guest_agent: vm::GuestAgentPoll,
    /// The pod's cleanup failed: how long the worker waited before trying again.
    cleanup_retry: Option<Duration>,
    /// Every sandbox of the pod, once known: those a list of the node's sandboxes found (the
    /// worker's first sandbox) and each made since. Termination reads only their records;
    /// `None` (not known) lists the node's sandboxes by the pod's uid label.
    sandboxes: Option<Vec<String>>,
}

/// A projected ServiceAccount token and when the next one is asked for: at 80% of its lifetime
/// or after 24 hours (kubelet's token manager); the old one serves until it expires if asking fails.
struct CachedToken {
    token: String,
    refresh_at: Instant,
    expires_at: Instant,
}

/// When a token living `ttl` from now should be replaced.
fn token_refresh_after(ttl: Duration) -> Duration {
    ttl.mul_f64(0.8).min(Duration::from_secs(24 * 3600))
}

/// The tokens of the pod's projected `serviceAccountToken` sources (kubelet's): each a
/// TokenRequest for the pod's ServiceAccount bound to the pod (name and uid), for the source's
/// audience (the API server's by default) and `expirationSeconds` (3600 by default), kept in
/// `cache` until [`token_refresh_after`].
async fn fetch_tokens(shared: &Shared, pod: &Pod, cache: &mut HashMap<String, CachedToken>, out: &mut HashMap<String, Result<String, String>>) {
    use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let sa_name = pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(shared.client.clone(), ns);
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        for (i, src) in v.projected.iter().flat_map(|p| p.sources.iter().flatten()).enumerate() {
            let Some(t) = &src.service_account_token else { continue };
            let key = volumes::token_key(&v.name, i);
            let now = Instant::now();
            if let Some(c) = cache.get(&key).filter(|c| now < c.refresh_at) {
                out.insert(key, Ok(c.token.clone()));
                continue;
            }
            let bound = BoundObjectReference { api_version: Some("v1".into()), kind: Some("Pod".into()), name: pod.metadata.name.clone(), uid: pod.metadata.uid.clone() };
            let spec = TokenRequestSpec {
                audiences: t.audience.iter().filter(|a| !a.is_empty()).cloned().collect(),
                expiration_seconds: Some(t.expiration_seconds.unwrap_or(3600)),
                bound_object_ref: Some(bound),
            };
            let req = TokenRequest { spec, ..Default::default() };
            match api.create_token_request(&sa_name, &kube::api::PostParams::default(), &req).await {
                Ok(tr) => {
                    let Some(status) = tr.status else {
                        out.insert(key, Err("failed to fetch token: the TokenRequest has no status".into()));
                        continue;
                    };
                    let ttl = (status.expiration_timestamp.0 - Utc::now()).to_std().unwrap_or_default();
                    cache.insert(key.clone(), CachedToken { token: status.token.clone(), refresh_at: now + token_refresh_after(ttl), expires_at: now + ttl });
                    out.insert(key, Ok(status.token));
                }
                Err(e) => match cache.get(&key).filter(|c| now < c.expires_at) {
                    Some(c) => {
                        tracing::warn!(pod = %uid_of(pod), error = %e, "renewing a service account token; the current one serves until it expires");
                        out.insert(key, Ok(c.token.clone()));
                    }
                    None => {
                        out.insert(key, Err(format!("failed to fetch token: {e}")));
                    }
                },
            }
        }
    }
}

async fn worker(shared: Arc<Shared>, uid: String, reader: Store<Pod>, notify: Arc<Notify>, workers: Workers) {
    let mut st = PodState::default();
    loop {
        // By name once known (a lookup), else by uid (a scan of the node's pods).
        let known = st.last_pod.as_ref().map(|p| reflector::ObjectRef::<Pod>::new(p.metadata.name.as_deref().unwrap_or("")).within(p.metadata.namespace.as_deref().unwrap_or("")));
        let pod = match known {
            Some(r) => reader.get(&r).filter(|p| uid_of(p) == uid),
            None => reader.state().into_iter().find(|p| uid_of(p) == uid),
        };
        match pod {
            Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
                if vm::is_launcher(&pod) {
                    vm::sync(&shared, &pod, &mut st).await;
                } else {
                    sync_pod(&shared, &pod, &mut st).await;
                }
                st.last_pod = Some(pod);
            }
            _ => {
                let last = pod.clone().or(st.last_pod.take());
                let done = match terminate(&shared, &uid, last.as_deref(), st.sandboxes.as_deref(), pod.is_some()).await {
                    Ok(()) => match &pod {
                        Some(pod) => final_delete(&shared, pod, &uid).await,
                        None => Ok(()),
                    },
                    Err(e) => Err(e),
                };
                st.last_pod = last;
                match done {
                    Ok(()) => {
                        if let Some(pod) = &pod {
                            linger(&reader, pod, &notify).await;
                        }
                        if let Some(r) = shared.events.get() {
                            r.forget(&uid);
                        }
                        if let Ok(mut w) = workers.lock() {
                            w.remove(&uid);
                        }
                        return;
                    }
                    Err(e) => {
                        let delay = st.cleanup_retry.map_or(CLEANUP_RETRY, |d| (d * 2).min(CLEANUP_RETRY_MAX));
                        st.cleanup_retry = Some(delay);
                        tracing::warn!(pod = %uid, error = %e, retry_in = ?delay, "finishing a pod; trying again");
                        tokio::select! {
                            _ = notify.notified() => {}
                            _ = tokio::time::sleep(delay) => {}
                        }
                        continue;
                    }
                }
            }
        }
        let resync = if settled(st.last_pod.as_deref(), &st) { RESYNC_SETTLED } else { RESYNC };
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(resync) => {}
        }
    }
}

/// The last step of a pod deleted with a grace period, once everything of it is stopped and
/// removed: its object goes (kubelet's final delete, grace 0, for this uid only). Gone already
/// (404) or replaced by a new pod of the same name (409) is done as well.
async fn final_delete(shared: &Shared, pod: &Pod, uid: &str) -> Result<(), String> {
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let dp = kube::api::DeleteParams { grace_period_seconds: Some(0), preconditions: Some(kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None }), ..Default::default() };
    match api.delete(pod.metadata.name.as_deref().unwrap_or(""), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(format!("deleting the terminated pod: {e}")),
    }
}

/// Wait (at most [`TERMINATED_LINGER`]) until the watch no longer shows `pod`, whose object
/// has been deleted: until then the sweep would take it for a pod to terminate.
async fn linger(reader: &Store<Pod>, pod: &Pod, notify: &Notify) {
    let deadline = tokio::time::Instant::now() + TERMINATED_LINGER;
    let key = reflector::ObjectRef::<Pod>::new(pod.metadata.name.as_deref().unwrap_or("")).within(pod.metadata.namespace.as_deref().unwrap_or(""));
    let uid = uid_of(pod);
    while reader.get(&key).is_some_and(|p| uid_of(&p) == uid) {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Nothing for the worker to do until an event: every container running (as last written),
/// none waiting or backing off, no probes, and the driver's events arriving.
fn settled(pod: Option<&Pod>, st: &PodState) -> bool {
    let Some(pod) = pod else { return false };
    // A launcher pod's VM ends without a container event: its worker keeps looking every second.
    if vm::is_launcher(pod) {
        return false;
    }
    if !DRIVER_EVENTS.load(std::sync::atomic::Ordering::Acquire) || !st.waiting.is_empty() || !st.retry_at.is_empty() || !st.image_backoff.is_empty() {
        return false;
    }
    let probes = spec::all_containers(pod).iter().any(|c| c.liveness_probe.is_some() || c.readiness_probe.is_some() || c.startup_probe.is_some());
    let running = st.last_status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running") && s.container_statuses.iter().flatten().all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
    });
    !probes && running
}

fn pod_dir(shared: &Shared, uid: &str) -> PathBuf {
    shared.config.root_dir.join("pods").join(uid)
}

/// Stop every container of the pod `uid` as kubelet does: for each running container at once,
/// its preStop hook, then the stop signal and SIGKILL when the grace period (the deletion's,
/// else the pod's, at least 2 s) has run out; then remove its sandboxes and volumes. `pod` is the
/// last known pod (none after a restart that found only the sandbox); `known` the pod's
/// sandboxes when the worker knows them all (else every sandbox on the node is read to find
/// them: with many pods deleted at once that is O(pods²) records read). `report`: the pod's object
/// is still there, and gets its terminal status once the containers have stopped. Err: something
/// could not be listed, stopped, reported or removed (the caller tries again).
async fn terminate(shared: &Arc<Shared>, uid: &str, pod: Option<&Pod>, known: Option<&[String]>, report: bool) -> Result<(), String> {
    let grace = pod
        .and_then(|p| p.metadata.deletion_grace_period_seconds.or(p.spec.as_ref().and_then(|s| s.termination_grace_period_seconds)))
        .unwrap_or(30)
        .max(2) as u64;
    let grace = Duration::from_secs(grace);
    if vm::terminate(shared, uid, pod, grace).await > 0 {
        tracing::info!(pod = %uid, "virtual machine powered off and removed");
    }
    let driver = shared.driver.clone();
    let uid_owned = uid.to_string();
    let known = known.map(<[String]>::to_vec);
    let listed = blocking(move || {
        let mut filter = SandboxFilter::default();
        filter.labels.insert(labels::POD_UID.to_string(), uid_owned);
        let sandboxes = match known {
            Some(ids) => {
                let mut found = Vec::new();
                for id in ids {
                    found.extend(driver.list_pod_sandboxes(&SandboxFilter { id: Some(id), ..filter.clone() })?);
                }
                found
            }
            None => driver.list_pod_sandboxes(&filter)?,
        };
        let mut running = Vec::new();
        for sb in &sandboxes {
            let cs = driver.list_containers(&ContainerFilter { sandbox_id: Some(sb.id.clone()), ..Default::default() })?;
            running.extend(cs.into_iter().filter(|c| c.state == DState::Running));
        }
        Ok::<_, strata_driver::Error>((sandboxes, running))
    })
    .await;
    let (sandboxes, running) = match listed {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Err(format!("listing the pod's containers to stop them: {e}")),
        None => return Err("listing the pod's containers to stop them: the task failed".into()),
    };
    let stops = running.into_iter().map(|d| {
        let shared = shared.clone();
        let spec_container = pod.and_then(|p| spec::all_containers(p).into_iter().find(|c| c.name == d.metadata.name).cloned());
        let pod_ip = sandboxes.iter().find(|s| s.id == d.sandbox_id).and_then(|s| pod_ip(&shared, s));
        async move {
            let deadline = Instant::now() + grace;
            if let (Some(p), Some(c)) = (pod, spec_container.as_ref()) {
                if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
                    if let Err(why) = probes::hook(&shared, hook, &d.id, c, pod_ip, grace).await {
                        post_event(&shared, p, Some(&c.name), true, "FailedPreStopHook", format!("PreStopHook failed: {why}")).await;
                    }
                }
                post_event(&shared, p, Some(&c.name), false, "Killing", format!("Stopping container {}", c.name)).await;
            }
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(2));
            let driver = shared.driver.clone();
            let _ = blocking(move || driver.stop_container(&d.id, left)).await;
        }
    });
    futures_util::future::join_all(stops).await;
    if let Some(p) = pod.filter(|p| report && !vm::is_launcher(p)) {
        write_terminal_status(shared, p, uid, &sandboxes, None).await?;
    }
    let driver = shared.driver.clone();
    let dir = pod_dir(shared, uid);
    let ids: Vec<String> = sandboxes.iter().map(|s| s.id.clone()).collect();
    let done = blocking(move || {
        // Every sandbox is tried, whatever happened to the one before.
        let mut failed = Vec::new();
        for id in &ids {
            if let Err(e) = driver.stop_pod_sandbox(id).and_then(|()| driver.remove_pod_sandbox(id)) {
                failed.push(format!("sandbox {id}: {e}"));
            }
        }
        if failed.is_empty() {
            if let Err(e) = volumes::remove_pod_dir(&dir) {
                failed.push(e);
            }
        }
        if failed.is_empty() {
            Ok(ids.len())
        } else {
            Err(failed.join("; "))
        }
    })
    .await;
    match done {
        Some(Ok(n)) => {
            if n > 0 {
                tracing::info!(pod = %uid, "pod stopped and removed");
            }
            Ok(())
        }
        Some(Err(e)) => Err(format!("removing the pod: {e}")),
        None => Err("removing the pod: the task failed".into()),
    }
}

/// The pod's IP: its sandbox's, or on the node's network the node's (as kubelet reports it).
fn pod_ip(shared: &Shared, sandbox: &strata_driver::pod::PodSandboxStatus) -> Option<std::net::IpAddr> {
    match sandbox.namespaces.network {
        NamespaceMode::Node => Some(shared.node_ip),
        _ => sandbox.ip,
    }
}

/// Record an Event about this node (as kubelet's about its node reference).
async fn post_node_event(shared: &Shared, reason: &str, message: String) {
    use strata_client::events::EventType;
    let node = &shared.config.node_name;
    let object = ObjectReference { kind: Some("Node".into()), name: Some(node.clone()), uid: Some(node.clone()), ..Default::default() };
    if let Some(r) = shared.events.get() {
        r.publish_ref(object, EventType::Warning, reason, message);
    }
}

fn container_ref(pod: &Pod, container: Option<&str>) -> ObjectReference {
    let field_path = container.map(|c| {
        let init = pod.spec.as_ref().is_some_and(|s| s.init_containers.iter().flatten().any(|i| i.name == c));
        format!("spec.{}{{{c}}}", if init { "initContainers" } else { "containers" })
    });
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

/// Record an Event about the pod (or one of its containers), as kubelet does; the same event
/// again within a minute is not repeated.
async fn event(shared: &Shared, st: &mut PodState, pod: &Pod, container: Option<&str>, warning: bool, reason: &str, message: String) {
    let key = (reason.to_string(), message.clone());
    if st.events.get(&key).is_some_and(|t| t.elapsed() < Duration::from_secs(60)) {
        return;
    }
    st.events.insert(key, Instant::now());
    post_event(shared, pod, container, warning, reason, message).await
}

async fn post_event(shared: &Shared, pod: &Pod, container: Option<&str>, warning: bool, reason: &str, message: String) {
    use strata_client::events::EventType;
    if let Some(r) = shared.events.get() {
        r.publish_ref(container_ref(pod, container), if warning { EventType::Warning } else { EventType::Normal }, reason, message);
    }
}

/// Names of the ConfigMaps and Secrets the pod's volumes and environments use.
fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let (mut cms, mut secrets) = (Vec::new(), Vec::new());
    let Some(s) = pod.spec.as_ref() else { return (cms, secrets) };
    for v in s.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.push(c.name.clone());
        }
        if let Some(sec) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(sec);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                cms.push(c.name.clone());
            }
            if let Some(sec) = &src.secret {
                secrets.push(sec.name.clone());
            }
        }
    }
    for r in s.image_pull_secrets.iter().flatten() {
        secrets.push(r.name.clone());
    }
    for c in spec::all_containers(pod) {
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                cms.push(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                secrets.push(r.name.clone());
            }
        }
        for e in c.env.iter().flatten() {
            if let Some(r) = e.value_from.as_ref().and_then(|v| v.config_map_key_ref.as_ref()) {
                cms.push(r.name.clone());
            }
            if let Some(r) = e.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref()) {
                secrets.push(r.name.clone());
            }
        }
    }
    cms.sort();
    cms.dedup();
    secrets.sort();
    secrets.dedup();
    (cms, secrets)
}

async fn fetch_refs(shared: &Shared, pod: &Pod) -> Result<volumes::Refs, kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let (cms, secrets) = referenced(pod);
    let mut refs = volumes::Refs::default();
    let cm_api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), ns);
    for n in cms {
        refs.configmaps.insert(n.clone(), cm_api.get_opt(&n).await?);
    }
    let s_api: Api<Secret> = Api::namespaced(shared.client.clone(), ns);
    for n in secrets {
        refs.secrets.insert(n.clone(), s_api.get_opt(&n).await?);
    }
    // Claims and the volumes they are bound to (the node may get both for its pods' claims).
    let claim_api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(shared.client.clone(), ns);
    let pv_api: Api<k8s_openapi::api::core::v1::PersistentVolume> = Api::all(shared.client.clone());
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let Some(c) = &v.persistent_volume_claim else { continue };
        let claim = claim_api.get_opt(&c.claim_name).await?;
        let entry = match claim {
            Some(claim) => {
                let pv = match claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|n| !n.is_empty()) {
                    Some(n) => pv_api.get_opt(&n).await?,
                    None => None,
                };
                Some((claim, pv))
            }
            None => None,
        };
        refs.claims.insert(c.claim_name.clone(), entry);
    }
    Ok(refs)
}

/// A container's environment (envFrom, then env with valueFrom and `$(VAR)` expansion, which
/// falls back to the services' variables `services`; then those of `services` the container does
/// not set), or kubelet's CreateContainerConfigError message.
fn environment(
    pod: &Pod,
    c: &Container,
    refs: &volumes::Refs,
    facts: &spec::PodFacts,
    allocatable: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    services: &[(String, String)],
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(n, _)| *n != k);
        env.push((k, v));
    };
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match refs.configmaps.get(&r.name).cloned().flatten() {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), v.clone());
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => return Err(format!("configmap \"{}\" not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match refs.secrets.get(&r.name).cloned().flatten() {
                Some(s) => {
                    for (k, v) in s.data.iter().flatten() {
                        set(&mut env, format!("{prefix}{k}"), String::from_utf8_lossy(&v.0).into_owned());
                    }
                }
                None if r.optional.unwrap_or(false) => {}
                None => return Err(format!("secret \"{}\" not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => {
                let known = env.clone();
                let find = |list: &[(String, String)], n: &str| list.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
                spec::expand(e.value.as_deref().unwrap_or(""), &|n| find(&known, n).or_else(|| find(services, n)))
            }
            Some(vf) => {
                if let Some(r) = &vf.config_map_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match refs.configmaps.get(&r.name).cloned().flatten() {
                        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => return Err(format!("couldn't find key {} in ConfigMap {ns}/{}", r.key, r.name)),
                        },
                        None if optional => continue,
                        None => return Err(format!("configmap \"{}\" not found", r.name)),
                    }
                } else if let Some(r) = &vf.secret_key_ref {
                    let optional = r.optional.unwrap_or(false);
                    match refs.secrets.get(&r.name).cloned().flatten() {
                        Some(s) => match s.data.as_ref().and_then(|d| d.get(&r.key)) {
                            Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                            None if optional => continue,
                            None => return Err(format!("couldn't find key {} in Secret {ns}/{}", r.key, r.name)),
                        },
                        None if optional => continue,
                        None => return Err(format!("secret \"{}\" not found", r.name)),
                    }
                } else if let Some(f) = &vf.field_ref {
                    spec::field_ref(f, facts)?
                } else if let Some(r) = &vf.resource_field_ref {
                    spec::resource_field_ref(r, pod, Some(c), allocatable)?
                } else {
                    return Err(format!("env {:?}: unsupported valueFrom", e.name));
                }
            }
        };
        set(&mut env, e.name.clone(), value);
    }
    for (k, v) in services {
        if !env.iter().any(|(n, _)| n == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    Ok(env)
}

fn security(pod: &Pod, c: &Container, root: &std::path::Path) -> SecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let mut groups: Vec<u32> = psc.supplemental_groups.iter().flatten().map(|g| *g as u32).collect();
    if let Some(g) = psc.fs_group {
        groups.push(g as u32);
    }
    let seccomp = sc.seccomp_profile.or(psc.seccomp_profile).map(|p| match p.type_.as_str() {
        "Unconfined" => SeccompProfile::Unconfined,
        "Localhost" => SeccompProfile::Localhost(root.join("seccomp").join(p.localhost_profile.unwrap_or_default())),
        _ => SeccompProfile::RuntimeDefault,
    });
    SecurityContext {
        capabilities_add: sc.capabilities.as_ref().and_then(|c| c.add.clone()).unwrap_or_default(),
        capabilities_drop: sc.capabilities.as_ref().and_then(|c| c.drop.clone()).unwrap_or_default(),
        privileged: sc.privileged.unwrap_or(false),
        run_as_user: sc.run_as_user.or(psc.run_as_user).map(|u| u as u32),
        run_as_username: None,
        run_as_group: sc.run_as_group.or(psc.run_as_group).map(|g| g as u32),
        supplemental_groups: groups,
        readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
        // kubelet's AddNoNewPrivileges: only an explicit `allowPrivilegeEscalation: false` sets
        // no_new_privs (unset allows a setuid program of the image to take effect), not the
        // driver's secure default.
        no_new_privs: Some(sc.allow_privilege_escalation == Some(false)),
        seccomp: seccomp.unwrap_or_default(),
    }
}

/// Pull the container's image as its pull policy says. Errors are kubelet's waiting reasons.
async fn ensure_image(shared: &Arc<Shared>, st: &mut PodState, pod: &Pod, c: &Container) -> Result<(), (String, String)> {
    let image = c.image.clone().unwrap_or_default();
    if image.is_empty() {
        return Err(("InvalidImageName".into(), "the container has no image".into()));
    }
    let latest = !image.contains('@') && image.rsplit('/').next().is_some_and(|last| !last.contains(':') || last.ends_with(":latest"));
    let policy = c.image_pull_policy.clone().unwrap_or_else(|| if latest { "Always".into() } else { "IfNotPresent".into() });
    let images = shared.driver.images().clone();
    let present = {
        let (images, image) = (images.clone(), image.clone());
        blocking(move || images.get(&image).is_ok()).await.unwrap_or(false)
    };
    let name = c.name.as_str();
    if policy == "Never" {
        if present {
            return Ok(());
        }
        let msg = format!("Container image \"{image}\" is not present with pull policy of Never");
        event(shared, st, pod, Some(name), true, "ErrImageNeverPull", msg.clone()).await;
        return Err(("ErrImageNeverPull".into(), msg));
    }
    if present && policy != "Always" {
        event(shared, st, pod, Some(name), false, "Pulled", format!("Container image \"{image}\" already present on machine")).await;
        return Ok(());
    }
    if let Some((until, _)) = st.image_backoff.get(&image) {
        if Instant::now() < *until {
            return Err(("ImagePullBackOff".into(), format!("Back-off pulling image \"{image}\"")));
        }
    }
    event(shared, st, pod, Some(name), false, "Pulling", format!("Pulling image \"{image}\"")).await;
    let started = Instant::now();
    let refs = st.refs.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
    let credentials = spec::pull_credentials(pod, &refs.secrets, &image);
    let pulled = {
        let image = image.clone();
        blocking(move || pull_with(&images, &image, credentials).map(drop)).await
    };
    match pulled {
        Some(Ok(())) => {
            st.image_backoff.remove(&image);
            event(shared, st, pod, Some(name), false, "Pulled", format!("Successfully pulled image \"{image}\" in {:.3}s", started.elapsed().as_secs_f64())).await;
            Ok(())
        }
        other => {
            let why = match other {
                Some(Err(e)) => e.to_string(),
                _ => "the pull was interrupted".into(),
            };
            let delay = st.image_backoff.get(&image).map(|(_, d)| (*d * 2).min(BACKOFF_MAX)).unwrap_or(BACKOFF_INITIAL);
            st.image_backoff.insert(image.clone(), (Instant::now() + delay, delay));
            let msg = format!("Failed to pull image \"{image}\": {why}");
            event(shared, st, pod, Some(name), true, "Failed", msg.clone()).await;
            event(shared, st, pod, Some(name), true, "Failed", "Error: ErrImagePull".into()).await;
            Err(("ErrImagePull".into(), msg))
        }
    }
}

/// Pull `image` with each matching imagePullSecrets credential in turn, as kubelet; none:
/// anonymously. The last failure when every one fails.
pub(crate) fn pull_with(images: &strata_driver::images::ImageStore, image: &str, credentials: Vec<(String, String)>) -> Result<strata_driver::images::Image, strata_driver::images::Error> {
    let mut tries: Vec<Option<(String, String)>> = credentials.into_iter().map(Some).collect();
    if tries.is_empty() {
        tries.push(None);
    }
    let mut last = None;
    for cred in tries {
        let opts = strata_driver::images::PullOptions { username: cred.as_ref().map(|c| c.0.clone()), password: cred.map(|c| c.1), ..Default::default() };
        match images.pull(image, &opts, &strata_driver::images::NoProgress) {
            Ok(found) => return Ok(found),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("at least one try"))
}

/// Everything one container attempt needs from the pod around it.
struct Ctx<'a> {
    pod: &'a Pod,
    sandbox_id: String,
    facts: spec::PodFacts<'a>,
    allocatable: BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

/// Create and start attempt `attempt` of container `c`. Errors are waiting reasons.
async fn start_attempt(shared: &Arc<Shared>, st: &mut PodState, cx: &Ctx<'_>, c: &Container, attempt: u32) -> Result<(), (String, String)> {
    let pod = cx.pod;
    let refs = st.refs.as_ref().map(|(r, _)| r.clone()).unwrap_or_default();
    // Not before the services have been read once: a container must not start without the
    // API server's KUBERNETES_SERVICE_HOST (in-cluster clients need it), as kubelet refuses.
    // (Right after the agent starts, its pods' first syncs wait a moment for the first list.)
    let deadline = Instant::now() + SERVICES_WAIT;
    while shared.services.get().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(services) = shared.services.get() else {
        return Err(("CreateContainerConfigError".into(), "services have not yet been read at least once, cannot construct envvars".into()));
    };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
    let service_env = spec::service_env(services.state().iter().map(|s| s.as_ref()), ns, links);
    let env = match environment(pod, c, &refs, &cx.facts, &cx.allocatable, &service_env) {
        Ok(e) => e,
        Err(m) => {
            event(shared, st, pod, Some(&c.name), true, "Failed", format!("Error: {m}")).await;
            return Err(("CreateContainerConfigError".into(), m));
        }
    };
    ensure_image(shared, st, pod, c).await?;
    // runAsNonRoot against the user the image runs as (kubelet checks it before creating).
    let image_user = {
        let (images, image) = (shared.driver.images().clone(), c.image.clone().unwrap_or_default());
        blocking(move || images.get(&image).ok().and_then(|i| i.config.config().as_ref().and_then(|cfg| cfg.user().clone()))).await.flatten().unwrap_or_default()
    };
    if let Err(m) = spec::verify_run_as_non_root(pod, c, &image_user) {
        event(shared, st, pod, Some(&c.name), true, "Failed", format!("Error: {m}")).await;
        return Err(("CreateContainerConfigError".into(), m));
    }
    let lookup = |n: &str| env.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let command: Vec<String> = c.command.iter().flatten().map(|s| spec::expand(s, &lookup)).collect();
    let args: Vec<String> = c.args.iter().flatten().map(|s| spec::expand(s, &lookup)).collect();
    let mut mounts = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let Some(host) = st.volumes.get(&vm.name) else {
            let m = format!("volume {:?} not found", vm.name);
            return Err(("CreateContainerConfigError".into(), m));
        };
        let mut host = host.clone();
        let sub_path = match spec::sub_path(vm, &lookup) {
            Ok(s) => s,
            Err(m) => {
                event(shared, st, pod, Some(&c.name), true, "Failed", format!("Error: {m}")).await;
                return Err(("CreateContainerConfigError".into(), m));
            }
        };
        if let Some(sub) = sub_path.as_deref() {
            host = host.join(sub);
            if !host.exists() {
                let _ = std::fs::create_dir_all(&host);
            }
        }
        let propagation = match vm.mount_propagation.as_deref() {
            Some("HostToContainer") => MountPropagation::HostToContainer,
            Some("Bidirectional") => MountPropagation::Bidirectional,
            _ => MountPropagation::None,
        };
        let source = match volumes::memory_volume(pod, &vm.name) {
            // One tmpfs for the pod: the runtime decides where it lives (a microVM keeps it in its guest).
            Some(size_bytes) => {
                MountSource::PodMemory { volume: vm.name.clone(), host_path: host, sub_path, size_bytes }
            }
            None => MountSource::Bind { host_path: host, propagation },
        };
        mounts.push(Mount { container_path: vm.mount_path.clone().into(), source, readonly: vm.read_only.unwrap_or(false) });
    }
    // The termination message file (kubelet bind-mounts one per attempt).
    let uid = uid_of(pod);
    let msg_file = termination_file(shared, &uid, &c.name, attempt);
    if let Some(parent) = msg_file.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    // World-writable, as kubelet makes it: a container running as any user writes its message.
    let writable = std::fs::write(&msg_file, b"").and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&msg_file, std::fs::Permissions::from_mode(0o666))
    });
    if writable.is_ok() {
        let path = c.termination_message_path.clone().unwrap_or_else(|| "/dev/termination-log".into());
        mounts.push(Mount { container_path: path.into(), source: MountSource::Bind { host_path: msg_file, propagation: MountPropagation::None }, readonly: false });
    }
    let config = ContainerConfig {
        metadata: ContainerMetadata { name: c.name.clone(), attempt },
        image: c.image.clone().unwrap_or_default(),
        command,
        args,
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        envs: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        mounts,
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        resources: spec::container_resources(c),
        security: security(pod, c, &shared.config.root_dir),
        ..Default::default()
    };
    let driver = shared.driver.clone();
    let sandbox = cx.sandbox_id.clone();
    let created = blocking(move || driver.create_container(&sandbox, &config)).await;
    // The next listing reads the sandbox's containers afresh (this one among them).
    st.container_ids = None;
    let id = match created {
        Some(Ok(id)) => id,
        other => {
            let m = match other {
                Some(Err(e)) => e.to_string(),
                _ => "interrupted".into(),
            };
            event(shared, st, pod, Some(&c.name), true, "Failed", format!("Error: {m}")).await;
            return Err(("CreateContainerError".into(), m));
        }
    };
    event(shared, st, pod, Some(&c.name), false, "Created", format!("Created container: {}", c.name)).await;
    let driver = shared.driver.clone();
    let started = {
        let id = id.clone();
        blocking(move || driver.start_container(&id)).await
    };
    match started {
        Some(Ok(())) => {
            event(shared, st, pod, Some(&c.name), false, "Started", format!("Started container {}", c.name)).await;
            // The postStart hook, before anything else of the pod goes on (kubelet runs it in
            // the sync that started the container); a failed one kills the container, which
            // then restarts as its policy says (its status: the killed attempt).
            if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
                let pod_ip = cx.facts.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
                if let Err(why) = probes::hook(shared, hook, &id, c, pod_ip, POST_START_LIMIT).await {
                    let m = format!("PostStartHook failed: {why}");
                    event(shared, st, pod, Some(&c.name), true, "FailedPostStartHook", m).await;
                    let grace = Duration::from_secs(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30).max(1) as u64);
                    let driver = shared.driver.clone();
                    let _ = blocking(move || driver.stop_container(&id, grace)).await;
                }
            }
            Ok(())
        }
        other => {
            let m = match other {
                Some(Err(e)) => e.to_string(),
                _ => "interrupted".into(),
            };
            event(shared, st, pod, Some(&c.name), true, "Failed", format!("Error: {m}")).await;
            Err(("RunContainerError".into(), m))
        }
    }
}

fn termination_file(shared: &Shared, uid: &str, name: &str, attempt: u32) -> PathBuf {
    pod_dir(shared, uid).join("containers").join(name).join(attempt.to_string())
}

/// An exited attempt's termination message: its termination message file (at most 4096
/// bytes); when that is empty, the container failed and its policy is FallbackToLogsOnError, the
/// end of its log (kubelet: the last 80 lines, at most 2048 bytes).
fn read_message(shared: &Shared, uid: &str, c: &Container, d: &DStatus) -> Option<String> {
    let bytes = std::fs::read(termination_file(shared, uid, &d.metadata.name, d.metadata.attempt)).unwrap_or_default();
    let fallback = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError") && d.exit_code.unwrap_or(0) != 0;
    if bytes.is_empty() && fallback {
        let mut log = Vec::new();
        let opts = strata_driver::LogOptions { tail: Some(FALLBACK_LOG_LINES), ..Default::default() };
        let read = shared.driver.container_logs(&d.id, &opts, &mut |r| {
            log.extend_from_slice(&r.content);
            if !r.partial {
                log.push(b'\n');
            }
            true
        });
        if read.is_err() || log.is_empty() {
            return None;
        }
        let tail = &log[log.len().saturating_sub(FALLBACK_LOG_BYTES)..];
        return Some(String::from_utf8_lossy(tail).into_owned());
    }
    let cut = &bytes[..bytes.len().min(4096)];
    Some(String::from_utf8_lossy(cut).into_owned())
}

/// How long ago an RFC 3339 time was.
fn since(t: &Option<String>) -> Option<Duration> {
    let t = k8s_openapi::chrono::DateTime::parse_from_rfc3339(t.as_deref()?).ok()?;
    (Utc::now() - t.with_timezone(&Utc)).to_std().ok()
}

/// One container's next step: start (first or next attempt), wait in back-off, or nothing.
/// Returns whether the container is done for the purpose of init ordering (exited 0).
async fn reconcile_container(shared: &Arc<Shared>, st: &mut PodState, cx: &Ctx<'_>, c: &Container, attempts: &[DStatus], policy: &str, init: bool) -> bool {
    let latest = attempts.last();
    let pod = cx.pod;
    let next = match latest {
        None => Some(0),
        Some(d) if d.state == DState::Running || d.state == DState::Created => {
            st.waiting.remove(&c.name);
            if d.state == DState::Created {
                // Created but never started (the agent died in between): start it now.
                let driver = shared.driver.clone();
                let id = d.id.clone();
                let _ = blocking(move || driver.start_container(&id)).await;
            }
            None
        }
        Some(d) => {
            let code = d.exit_code.unwrap_or(0);
            // Init containers restart on failure unless the pod's policy is Never.
            let restart = if init { code != 0 && policy != "Never" } else { spec::should_restart(policy, code) };
            if !restart {
                st.waiting.remove(&c.name);
                return code == 0;
            }
            let ran = match (since(&d.started_at), since(&d.finished_at)) {
                (Some(s), Some(f)) => s.saturating_sub(f),
                _ => Duration::ZERO,
            };
            if ran >= BACKOFF_RESET {
                st.backoff.remove(&c.name);
            }
            match st.backoff.get(&c.name) {
                Some(delay) if since(&d.finished_at).is_some_and(|f| f < *delay) => {
                    let msg = format!("back-off {}s restarting failed container={} pod={}_{}({})", delay.as_secs(), c.name, pod.metadata.name.as_deref().unwrap_or(""), pod.metadata.namespace.as_deref().unwrap_or(""), uid_of(pod));
                    if st.waiting.get(&c.name).map(|(r, _)| r.as_str()) != Some("CrashLoopBackOff") {
                        event(shared, st, pod, Some(&c.name), true, "BackOff", "Back-off restarting failed container".into()).await;
                    }
                    st.waiting.insert(c.name.clone(), ("CrashLoopBackOff".into(), msg));
                    return false;
                }
                Some(delay) => {
                    let d2 = (*delay * 2).min(BACKOFF_MAX);
                    st.backoff.insert(c.name.clone(), d2);
                }
                None => {
                    st.backoff.insert(c.name.clone(), BACKOFF_INITIAL);
                }
            }
            Some(d.metadata.attempt + 1)
        }
    };
    let Some(attempt) = next else { return false };
    if st.waiting.contains_key(&c.name) && st.retry_at.get(&c.name).is_some_and(|t| Instant::now() < *t) {
        return false;
    }
    match start_attempt(shared, st, cx, c, attempt).await {
        Ok(()) => {
            st.waiting.remove(&c.name);
            st.retry_at.remove(&c.name);
            // Keep the latest exited attempt (for `logs --previous`), remove older ones.
            let old: Vec<String> = attempts.iter().filter(|a| a.metadata.attempt + 1 < attempt).map(|a| a.id.clone()).collect();
            if !old.is_empty() {
                let driver = shared.driver.clone();
                let _ = blocking(move || old.iter().try_for_each(|id| driver.remove_container(id))).await;
            }
        }
        Err(w) => {
            if !matches!(w.0.as_str(), "ErrImagePull" | "ImagePullBackOff") {
                st.retry_at.insert(c.name.clone(), Instant::now() + WORKER_BACKOFF);
            }
            st.waiting.insert(c.name.clone(), w);
        }
    }
    false
}

async fn sync_pod(shared: &Arc<Shared>, pod: &Pod, st: &mut PodState) {
    let uid = uid_of(pod);
    let Some(spec_) = pod.spec.as_ref() else { return };
    let terminal = matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"));
    if terminal || st.rejected {
        // Nothing runs for a finished pod; its record stays until it is deleted.
        let driver = shared.driver.clone();
        let uid2 = uid.clone();
        let _ = blocking(move || {
            let mut f = SandboxFilter { state: Some(SandboxState::Ready), ..Default::default() };
            f.labels.insert(labels::POD_UID.to_string(), uid2);
            for sb in driver.list_pod_sandboxes(&f)? {
                driver.stop_pod_sandbox(&sb.id)?;
            }
            Ok::<(), strata_driver::Error>(())
        })
        .await;
        return;
    }
    if deadline_exceeded(pod, Utc::now()) {
        // kubelet's active deadline: the pod's containers stopped, the pod Failed for good.
        event(shared, st, pod, None, true, "DeadlineExceeded", DEADLINE_MESSAGE.into()).await;
        let grace = Duration::from_secs(spec_.termination_grace_period_seconds.unwrap_or(30).max(1) as u64);
        let (driver, uid2) = (shared.driver.clone(), uid.clone());
        let stopped = blocking(move || {
            let mut f = SandboxFilter::default();
            f.labels.insert(labels::POD_UID.to_string(), uid2);
            let sandboxes = driver.list_pod_sandboxes(&f)?;
            for sb in &sandboxes {
                for c in driver.list_containers(&ContainerFilter { sandbox_id: Some(sb.id.clone()), ..Default::default() })? {
                    if c.state == DState::Running {
                        driver.stop_container(&c.id, grace)?;
                    }
                }
            }
            Ok::<_, strata_driver::Error>(sandboxes)
        })
        .await;
        match stopped {
            Some(Ok(sandboxes)) => {
                if let Err(e) = write_terminal_status(shared, pod, &uid, &sandboxes, Some(("DeadlineExceeded", DEADLINE_MESSAGE))).await {
                    tracing::warn!(pod = %uid, error = %e, "reporting the exceeded active deadline");
                }
            }
            Some(Err(e)) => tracing::warn!(pod = %uid, error = %e, "stopping a pod past its active deadline"),
            None => {}
        }
        return;
    }
    let host_ip = shared.node_ip.to_string();
    let qos = QosClass::of(&spec::all_containers(pod).iter().map(|c| spec::resource_spec(c)).collect::<Vec<_>>());
    let known = match st.sandbox_id.clone() {
        Some(id) => {
            let driver = shared.driver.clone();
            let found = blocking(move || driver.list_pod_sandboxes(&SandboxFilter { id: Some(id), ..Default::default() })).await;
            found.and_then(Result::ok).and_then(|v| v.into_iter().find(|s| s.state == SandboxState::Ready))
        }
        None => None,
    };
    let sandbox = match known {
        Some(s) => s,
        None => match find_or_create_sandbox(shared, st, pod, &uid, qos).await {
            Some(s) => s,
            None => return,
        },
    };
    st.sandbox_id = Some(sandbox.id.clone());
    sync_in_sandbox(shared, st, pod, &uid, spec_, sandbox, host_ip, qos).await;
}

/// The pod's ready sandbox from a list of all (the node's pod count decides admission), or a
/// new one. None when the pod is rejected or the sandbox could not be made (status and events
/// say why).
async fn find_or_create_sandbox(shared: &Arc<Shared>, st: &mut PodState, pod: &Pod, uid: &str, qos: QosClass) -> Option<strata_driver::pod::PodSandboxStatus> {
    let uid = uid.to_string();
    let spec_ = pod.spec.as_ref()?;
    let driver = shared.driver.clone();
    let (uid2, max_pods) = (uid.clone(), shared.config.max_pods as usize);
    let wanted_ports = spec::host_ports(pod);
    let sandboxes = blocking(move || {
        let all = driver.list_pod_sandboxes(&SandboxFilter::default())?;
        let others: Vec<_> = all.iter().filter(|s| s.state == SandboxState::Ready && s.labels.get(labels::POD_UID) != Some(&uid2)).collect();
        let ports_taken = others.iter().any(|s| s.port_mappings.iter().any(|m| wanted_ports.iter().any(|w| spec::host_ports_conflict(w, m))));
        let full = others.len() >= max_pods;
        let mine: Vec<_> = all.into_iter().filter(|s| s.labels.get(labels::POD_UID) == Some(&uid2)).collect();
        Ok::<_, strata_driver::Error>((mine, full, ports_taken))
    })
    .await;
    let Some(Ok((mine, full, ports_taken))) = sandboxes else { return None };
    st.sandboxes = Some(mine.iter().map(|s| s.id.clone()).collect());
    let current = mine.iter().rev().find(|s| s.state == SandboxState::Ready).cloned();
    // The pod's other sandboxes: stopped (a sandbox that died, its supervisor or network gone,
    // still has running containers that nothing can reach), and their containers' latest
    // attempts carried over, so the next attempts count on (restartCount) as kubelet's do.
    let earlier: Vec<String> = mine.iter().filter(|s| Some(&s.id) != current.as_ref().map(|c| &c.id)).map(|s| s.id.clone()).collect();
    st.carried.clear();
    if !earlier.is_empty() {
        let driver = shared.driver.clone();
        let stopped = blocking(move || {
            let mut found = Vec::new();
            for id in &earlier {
                driver.stop_pod_sandbox(id)?;
                found.extend(driver.list_containers(&ContainerFilter { sandbox_id: Some(id.clone()), ..Default::default() })?);
            }
            Ok::<_, strata_driver::Error>(found)
        })
        .await;
        match stopped {
            Some(Ok(found)) => st.carried = latest_attempts(found),
            Some(Err(e)) => {
                tracing::warn!(pod = %uid, error = %e, "stopping the pod's earlier sandboxes");
                return None;
            }
            None => return None,
        }
    }
    let policy = spec_.restart_policy.as_deref().unwrap_or("Always");
    let sandbox = match current {
        Some(s) => s,
        None if !mine.is_empty() && !new_sandbox_wanted(policy, &spec_.containers, &st.carried) => {
            // Nothing would run in a new one (kubelet's computePodActions): the status comes from
            // the containers of the last.
            mine.last()?.clone()
        }
        None => {
            if !mine.is_empty() {
                event(shared, st, pod, None, false, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.".into()).await;
            }
            if mine.is_empty() && full {
                // Admission, as kubelet's: the pod is rejected for good.
                reject(shared, st, pod, qos, "OutOfpods", format!("Node didn't have enough resource: pods, requested: 1, used: {max_pods}, capacity: {max_pods}")).await;
                return None;
            }
            if mine.is_empty() && ports_taken {
                // kubelet's NodePorts predicate: a host port another pod of the node holds.
                reject(shared, st, pod, qos, "NodePorts", "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports".into()).await;
                return None;
            }
            // The sysctl allowlist's admission.
            let sysctls = match shared.sysctls.as_ref().map_err(Clone::clone).and_then(|a| a.admit(pod)) {
                Ok(s) => s,
                Err(msg) => {
                    reject(shared, st, pod, qos, sysctls::FORBIDDEN_REASON, msg).await;
                    return None;
                }
            };
            // The pod's RuntimeClass picks the runtime (VM isolation, ...): nothing else here differs.
            let runtime_handler = match runtime_handler(shared, spec_).await {
                Ok(h) => h,
                Err(m) => {
                    event(shared, st, pod, None, true, "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {m}")).await;
                    return None;
                }
            };
            let (config, dns_events) = match sandbox_config(shared, pod, runtime_handler, mine.len() as u32, qos, sysctls).await {
                Ok(c) => c,
                Err(m) => {
                    event(shared, st, pod, None, true, "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {m}")).await;
                    return None;
                }
            };
            for (reason, message) in dns_events {
                if reason == "MissingClusterDNS" {
                    // kubelet tells it about the node too.
                    let msg = message.split_once(". ").map_or(message.as_str(), |(_, m)| m).to_string();
                    post_node_event(shared, reason, msg).await;
                }
                event(shared, st, pod, None, true, reason, message).await;
            }
            let driver = shared.driver.clone();
            let created = blocking(move || driver.run_pod_sandbox(&config).and_then(|id| driver.pod_sandbox_status(&id))).await;
            match created {
                Some(Ok(s)) => {
                    if let Some(ids) = st.sandboxes.as_mut() {
                        ids.push(s.id.clone());
                    }
                    s
                }
                other => {
                    // A sandbox may exist without its id here: find them by label from now on.
                    st.sandboxes = None;
                    let m = match other {
                        Some(Err(e)) => e.to_string(),
                        _ => "interrupted".into(),
                    };
                    event(shared, st, pod, None, true, "FailedCreatePodSandBox", format!("Failed to create pod sandbox: {m}")).await;
                    return None;
                }
            }
        }
    };
    Some(sandbox)
}

/// The sandbox of `pod` (kubelet's generatePodSandboxConfig): its identity, hostname and
/// `/etc/hosts` names, DNS (with the events forming it records), host namespaces, host ports,
/// admitted sysctls, QoS class and resources. An error is why the pod cannot have one.
async fn sandbox_config(
    shared: &Arc<Shared>,
    pod: &Pod,
    runtime_handler: Option<String>,
    attempt: u32,
    qos: QosClass,
    sysctls: BTreeMap<String, String>,
) -> Result<(PodSandboxConfig, Vec<(&'static str, String)>), String> {
    let uid = uid_of(pod);
    let spec_ = pod.spec.as_ref().ok_or("the pod has no spec")?;
    let host_network = spec_.host_network.unwrap_or(false);
    let (hostname, hosts_names) = dns::hostname(pod, &shared.config.cluster_domain)?;
    let resolv = tokio::fs::read_to_string(&shared.config.resolv_conf).await.unwrap_or_else(|e| {
        tracing::warn!(path = %shared.config.resolv_conf.display(), error = %e, "reading the node's resolver configuration");
        String::new()
    });
    let node_dns = dns::NodeDns { cluster_dns: shared.config.cluster_dns.clone(), cluster_domain: shared.config.cluster_domain.clone(), host: dns::parse_resolv_conf(&resolv) };
    let pod_dns = dns::pod_dns(pod, &node_dns);
    let node_or_pod = |host: Option<bool>| if host.unwrap_or(false) { NamespaceMode::Node } else { NamespaceMode::Pod };
    let namespaces = PodNamespaces {
        network: node_or_pod(spec_.host_network),
        ipc: node_or_pod(spec_.host_ipc),
        pid: match (spec_.host_pid, spec_.share_process_namespace) {
            (Some(true), _) => NamespaceMode::Node,
            (_, Some(true)) => NamespaceMode::Pod,
            _ => NamespaceMode::Container,
        },
    };
    let config = PodSandboxConfig {
        runtime_handler,
        metadata: PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            uid: uid.clone(),
            attempt,
        },
        hostname: Some(hostname),
        hosts_names,
        host_aliases: dns::host_aliases(pod)?,
        dns: Some(pod_dns.config),
        namespaces,
        sysctls,
        qos_class: qos,
        // On the node's network a container's port is the node's: nothing to map.
        port_mappings: if host_network { Vec::new() } else { spec::host_ports(pod) },
                resources: Some(spec::pod_resources(pod)),
                labels: [
                    (labels::POD_UID.to_string(), uid.clone()),
                    (labels::POD_NAME.to_string(), pod.metadata.name.clone().unwrap_or_default()),
                    (labels::POD_NAMESPACE.to_string(), pod.metadata.namespace.clone().unwrap_or_default()),
                ]
                .into_iter()
                .collect(),
        ..Default::default()
    };
    Ok((config, pod_dns.events))
}

/// Refuse the pod for good, as kubelet's rejectPod: a Warning event, and the status Failed with
/// the reason and "Pod was rejected: <message>".
async fn reject(shared: &Arc<Shared>, st: &mut PodState, pod: &Pod, qos: QosClass, reason: &str, message: String) {
    st.rejected = true;
    event(shared, st, pod, None, true, reason, message.clone()).await;
    let status = PodStatus {
        phase: Some("Failed".into()),
        reason: Some(reason.into()),
        message: Some(format!("Pod was rejected: {message}")),
        qos_class: Some(qos.as_str().into()),
        ..Default::default()
    };
    write_status(shared, st, pod, status).await;
}

/// The latest attempt of each container among `found`.
fn latest_attempts(found: Vec<DStatus>) -> Vec<DStatus> {
    let mut latest: BTreeMap<String, DStatus> = BTreeMap::new();
    for d in found {
        if latest.get(&d.metadata.name).is_none_or(|l| l.metadata.attempt < d.metadata.attempt) {
            latest.insert(d.metadata.name.clone(), d);
        }
    }
    latest.into_values().collect()
}

/// Whether a pod whose sandbox is gone gets a new one (kubelet's computePodActions): not with
/// restartPolicy Never once containers ran, nor with OnFailure when every container succeeded.
fn new_sandbox_wanted(policy: &str, containers: &[Container], carried: &[DStatus]) -> bool {
    if carried.is_empty() {
        return true;
    }
    match policy {
        "Never" => false,
        "OnFailure" => containers.iter().any(|c| !carried.iter().any(|d| d.metadata.name == c.name && d.state == DState::Exited && d.exit_code == Some(0))),
        _ => true,
    }
}

/// The containers of the pod's current sandbox with the attempts carried over from its earlier
/// sandbox, where one is still the latest or the one before it.
fn with_carried(list: &mut Vec<DStatus>, carried: &[DStatus]) {
    for c in carried {
        if !list.iter().any(|d| d.id == c.id || (d.metadata.name == c.metadata.name && d.metadata.attempt > c.metadata.attempt + 1)) {
            list.push(c.clone());
        }
    }
    list.sort_by_key(|c| c.metadata.attempt);
}

/// The handler of the pod's RuntimeClass (`None` without one), as kubelet resolves it.
async fn runtime_handler(shared: &Arc<Shared>, spec: &k8s_openapi::api::core::v1::PodSpec) -> Result<Option<String>, String> {
    let Some(name) = spec.runtime_class_name.as_deref().filter(|n| !n.is_empty()) else { return Ok(None) };
    let api: Api<k8s_openapi::api::node::v1::RuntimeClass> = Api::all(shared.client.clone());
    match api.get_opt(name).await {
        Ok(Some(rc)) => Ok(Some(rc.handler)),
        Ok(None) => Err(format!("RuntimeClass {name:?} not found")),
        Err(e) => Err(format!("reading RuntimeClass {name:?}: {e}")),
    }
}

/// This pod's containers in `sandbox_id`: the records of those already known, or (the first
/// time, and after a container was created) every container of the sandbox.
async fn pod_containers(shared: &Arc<Shared>, st: &mut PodState, sandbox_id: &str) -> Option<Vec<DStatus>> {
    let driver = shared.driver.clone();
    let sid = sandbox_id.to_string();
    let known = st.container_ids.clone().filter(|(s, _)| s == sandbox_id).map(|(_, ids)| ids);
    let list = blocking(move || match known {
        Some(ids) => {
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(driver.list_containers(&ContainerFilter { id: Some(id), sandbox_id: Some(sid.clone()), ..Default::default() })?);
            }
            Ok::<_, strata_driver::Error>(out)
        }
        None => driver.list_containers(&ContainerFilter { sandbox_id: Some(sid), ..Default::default() }),
    })
    .await?
    .ok()?;
    st.container_ids = Some((sandbox_id.to_string(), list.iter().map(|c| c.id.clone()).collect()));
    Some(list)
}

/// The rest of a sync, once the pod has its sandbox: volumes, containers, probes, status.
#[allow(clippy::too_many_arguments)]
async fn sync_in_sandbox(shared: &Arc<Shared>, st: &mut PodState, pod: &Pod, uid: &str, spec_: &k8s_openapi::api::core::v1::PodSpec, sandbox: strata_driver::pod::PodSandboxStatus, host_ip: String, qos: QosClass) {
    let uid = uid.to_string();
    let pod_ip_addr = pod_ip(shared, &sandbox);
    let pod_ip = pod_ip_addr.map(|i| i.to_string());
    let allocatable = match &st.allocatable {
        Some((a, at)) if at.elapsed() < REFS_REFRESH => a.clone(),
        _ => {
            // Only the capacity: a whole node status would list every interface (for the
            // node's address), one veth per pod, from every pod's sync.
            let root = shared.config.root_dir.clone();
            let Some(cap) = blocking(move || crate::machine::capacity(&root)).await else { return };
            let a = crate::node::allocatable(&shared.config, &cap);
            st.allocatable = Some((a.clone(), Instant::now()));
            a
        }
    };
    let facts = spec::PodFacts { pod, pod_ip: pod_ip.clone(), host_ip: host_ip.clone() };

    // ConfigMaps and Secrets, then volumes (again every REFS_REFRESH, so updates reach files).
    if st.refs.as_ref().is_none_or(|(_, at)| at.elapsed() >= REFS_REFRESH) {
        match fetch_refs(shared, pod).await {
            Ok(mut r) => {
                fetch_tokens(shared, pod, &mut st.tokens, &mut r.tokens).await;
                let dir = pod_dir(shared, &uid);
                let (pod2, r2) = (pod.clone(), r.clone());
                let (pip, hip, alloc) = (pod_ip.clone(), host_ip.clone(), allocatable.clone());
                let prepared = blocking(move || {
                    let facts = spec::PodFacts { pod: &pod2, pod_ip: pip, host_ip: hip };
                    volumes::prepare(&dir, &pod2, &r2, &facts, &alloc)
                })
                .await;
                match prepared {
                    Some(Ok(v)) => {
                        st.volumes = v;
                        st.refs = Some((r, Instant::now()));
                    }
                    Some(Err(e)) => {
                        event(shared, st, pod, None, true, "FailedMount", e.to_string()).await;
                        if st.refs.is_none() {
                            st.refs = Some((r, Instant::now()));
                            st.volumes.clear();
                        }
                    }
                    None => {}
                }
            }
            Err(e) => tracing::warn!(pod = %uid, error = %e, "reading the pod's ConfigMaps and Secrets"),
        }
    }

    let Some(mut containers) = pod_containers(shared, st, &sandbox.id).await else { return };
    with_carried(&mut containers, &st.carried);
    let attempts = |name: &str| -> Vec<DStatus> { containers.iter().filter(|c| c.metadata.name == name).cloned().collect() };
    let policy = spec_.restart_policy.clone().unwrap_or_else(|| "Always".into());
    let cx = Ctx { pod, sandbox_id: sandbox.id.clone(), facts, allocatable };
    let volumes_ready = st.refs.is_some() && spec_.volumes.iter().flatten().all(|v| st.volumes.contains_key(&v.name));
    if volumes_ready {
        let mut initialized = true;
        for ic in spec_.init_containers.iter().flatten() {
            if !reconcile_container(shared, st, &cx, ic, &attempts(&ic.name), &policy, true).await {
                initialized = false;
                break;
            }
        }
        if initialized {
            for c in &spec_.containers {
                reconcile_container(shared, st, &cx, c, &attempts(&c.name), &policy, false).await;
            }
            // Ephemeral containers (added through pods/ephemeralcontainers) run once each in
            // the pod's sandbox, never restarted.
            for c in &spec::ephemeral_containers(pod) {
                reconcile_container(shared, st, &cx, c, &attempts(&c.name), "Never", false).await;
            }
        }
    } else {
        for c in spec_.containers.iter().chain(spec_.init_containers.iter().flatten()) {
            st.waiting.entry(c.name.clone()).or_insert_with(|| ("ContainerCreating".into(), String::new()));
        }
    }

    // Probes of the running containers (startup first; liveness and readiness once started).
    for c in &spec_.containers {
        let Some(d) = attempts(&c.name).last().cloned().filter(|d| d.state == DState::Running) else { continue };
        let running_for = since(&d.started_at).unwrap_or_default();
        for kind in [probes::Kind::Startup, probes::Kind::Liveness, probes::Kind::Readiness] {
            let Some(probe) = kind.of(c) else { continue };
            let started = c.startup_probe.is_none() || st.probes.get(&(c.name.clone(), probes::Kind::Startup)).is_some_and(|s| s.container_id == d.id && s.ok == Some(true));
            if kind != probes::Kind::Startup && !started {
                continue;
            }
            let state = st.probes.entry((c.name.clone(), kind)).or_default();
            if state.container_id != d.id {
                *state = probes::State { container_id: d.id.clone(), ..Default::default() };
            }
            if (kind == probes::Kind::Startup && state.ok == Some(true)) || !state.due(probe, running_for) {
                continue;
            }
            state.last = Some(Instant::now());
            let result = probes::run(shared, probe, &d.id, c, pod_ip_addr).await;
            let Some(state) = st.probes.get_mut(&(c.name.clone(), kind)) else { continue };
            let verdict = state.record(probe, result.is_ok());
            match &result {
                Err(why) => event(shared, st, pod, Some(&c.name), true, "Unhealthy", format!("{} probe failed: {why}", kind.name())).await,
                Ok(Some(warning)) => event(shared, st, pod, Some(&c.name), true, "ProbeWarning", format!("{} probe warning: {warning}", kind.name())).await,
                Ok(None) => {}
            }
            if verdict == Some(false) && kind != probes::Kind::Readiness {
                let what = if kind == probes::Kind::Liveness { "liveness" } else { "startup" };
                event(shared, st, pod, Some(&c.name), false, "Killing", format!("Container {} failed {what} probe, will be restarted", c.name)).await;
                let grace = probe.termination_grace_period_seconds.or(spec_.termination_grace_period_seconds).unwrap_or(30).max(1) as u64;
                let driver = shared.driver.clone();
                let id = d.id.clone();
                let _ = blocking(move || driver.stop_container(&id, Duration::from_secs(grace))).await;
                st.probes.retain(|(n, _), _| n != &c.name);
                break;
            }
        }
    }

    // Status from what the driver shows now.
    let Some(mut now) = pod_containers(shared, st, &sandbox.id).await else { return };
    with_carried(&mut now, &st.carried);
    let mut observed = observe(shared, &uid, pod, &now, &st.waiting);
    for c in spec::all_containers(pod) {
        let Some(o) = observed.get_mut(&c.name) else { continue };
        if let Some(d) = o.latest.as_ref().filter(|d| d.state == DState::Running) {
            let verdict = |kind| st.probes.get(&(c.name.clone(), kind)).filter(|s: &&probes::State| s.container_id == d.id).and_then(|s| s.ok);
            let started = c.startup_probe.is_none() || verdict(probes::Kind::Startup) == Some(true);
            o.started = Some(started);
            o.ready = Some(started && (c.readiness_probe.is_none() || verdict(probes::Kind::Readiness) == Some(true)));
        }
    }
    let status = status::pod_status(&status::Inputs {
        pod,
        pod_ip,
        host_ip,
        sandbox_ready: sandbox.state == SandboxState::Ready,
        containers: &observed,
        qos_class: qos.as_str(),
        now: status::now(),
    });
    let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    write_status(shared, st, pod, status).await;
    if finished {
        // Release the pod's IP and cgroups once nothing will run again.
        let driver = shared.driver.clone();
        let sid = sandbox.id.clone();
        let _ = blocking(move || driver.stop_pod_sandbox(&sid)).await;
    }
}

/// What the status is computed from for each container of the pod: its latest and previous
/// attempts in `attempts` (sorted by attempt) with their termination messages, and why it waits.
fn observe(shared: &Shared, uid: &str, pod: &Pod, attempts: &[DStatus], waiting: &HashMap<String, (String, String)>) -> HashMap<String, Observed> {
    let mut observed = HashMap::new();
    let ephemeral = spec::ephemeral_containers(pod);
    for c in spec::all_containers(pod).into_iter().chain(ephemeral.iter()) {
        let a: Vec<&DStatus> = attempts.iter().filter(|d| d.metadata.name == c.name).collect();
        let latest = a.last().map(|d| (*d).clone());
        let previous = if a.len() >= 2 { Some(a[a.len() - 2].clone()) } else { None };
        let o = Observed {
            message: latest.as_ref().filter(|d| d.state == DState::Exited).and_then(|d| read_message(shared, uid, c, d)),
            previous_message: previous.as_ref().and_then(|d| read_message(shared, uid, c, d)),
            latest,
            previous,
            waiting: waiting.get(&c.name).cloned(),
            ready: None,
            started: None,
        };
        observed.insert(c.name.clone(), o);
    }
    observed
}

/// A deleted pod's last status, once its containers have stopped and before its sandboxes,
/// their container records and its object go (kubelet's terminal phase, v1.27+, which the Job
/// controller's pod failure policy and pod replacement wait for): the terminal phase and each
/// container's exit, from every sandbox of the pod. A pod already Succeeded or Failed keeps the
/// status it has; a pod gone already (404) is done.
/// kubelet's message for a pod past its `activeDeadlineSeconds`.
const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Whether the pod has run longer than its `activeDeadlineSeconds` (from its status' startTime).
fn deadline_exceeded(pod: &Pod, now: k8s_openapi::chrono::DateTime<Utc>) -> bool {
    let Some(deadline) = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds) else { return false };
    let Some(start) = pod.status.as_ref().and_then(|s| s.start_time.as_ref()) else { return false };
    now.signed_duration_since(start.0).num_seconds() >= deadline
}

/// `failed`: a (reason, message) that makes the pod Failed whatever its containers did
/// (kubelet's active deadline).
async fn write_terminal_status(shared: &Arc<Shared>, pod: &Pod, uid: &str, sandboxes: &[strata_driver::pod::PodSandboxStatus], failed: Option<(&str, &str)>) -> Result<(), String> {
    if matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")) {
        return Ok(());
    }
    let driver = shared.driver.clone();
    let ids: Vec<String> = sandboxes.iter().map(|s| s.id.clone()).collect();
    let listed = blocking(move || {
        let mut all = Vec::new();
        for id in ids {
            all.extend(driver.list_containers(&ContainerFilter { sandbox_id: Some(id), ..Default::default() })?);
        }
        Ok::<_, strata_driver::Error>(all)
    })
    .await;
    let mut attempts = match listed {
        Some(Ok(l)) => l,
        Some(Err(e)) => return Err(format!("listing the pod's containers for its last status: {e}")),
        None => return Err("listing the pod's containers for its last status: the task failed".into()),
    };
    attempts.sort_by_key(|c| c.metadata.attempt);
    let observed = observe(shared, uid, pod, &attempts, &HashMap::new());
    let qos = QosClass::of(&spec::all_containers(pod).iter().map(|c| spec::resource_spec(c)).collect::<Vec<_>>());
    let mut status = status::terminal_status(&status::Inputs {
        pod,
        pod_ip: pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
        host_ip: shared.node_ip.to_string(),
        sandbox_ready: false,
        containers: &observed,
        qos_class: qos.as_str(),
        now: status::now(),
    });
    if let Some((reason, message)) = failed {
        status.phase = Some("Failed".into());
        status.reason = Some(reason.into());
        status.message = Some(message.into());
    }
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let patch = serde_json::json!({ "status": &status });
    match api.patch_status(pod.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(format!("writing the terminated pod's status: {e}")),
    }
}

/// Write the status through `pods/status` when it differs from what the API server has (and
/// was not just written: the watch may lag behind).
async fn write_status(shared: &Arc<Shared>, st: &mut PodState, pod: &Pod, status: PodStatus) {
    if pod.status.as_ref() == Some(&status) {
        st.last_status = Some(status);
        return;
    }
    if st.last_status.as_ref() == Some(&status) && st.last_write.is_some_and(|t| t.elapsed() < Duration::from_secs(3)) {
        return;
    }
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let patch = serde_json::json!({ "status": &status });
    match api.patch_status(pod.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {
            st.last_status = Some(status);
            st.last_write = Some(Instant::now());
        }
        Err(e) => tracing::warn!(pod = %uid_of(pod), error = %e, "writing pod status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_owners_forget_sandboxes_that_are_gone() {
        let mut o = SandboxOwners::default();
        for (sb, uid) in [("s1", "u1"), ("s2", "u1"), ("s3", "u2")] {
            o.insert(sb.into(), uid.into());
        }
        assert_eq!(o.get("s2").as_deref(), Some("u1"));
        o.retain(&["s3"].into_iter().collect());
        assert_eq!((o.get("s1"), o.get("s2"), o.get("s3").as_deref()), (None, None, Some("u2")));
        assert_eq!(o.0.len(), 1);
        o.retain(&Default::default());
        assert!(o.0.is_empty(), "nothing stays once the node has no sandboxes");
    }

    fn exited(id: &str, name: &str, attempt: u32, code: i32) -> DStatus {
        serde_json::from_value(serde_json::json!({
            "id": id, "sandbox_id": "old", "metadata": {"name": name, "attempt": attempt}, "state": "exited",
            "created_at": "", "started_at": null, "finished_at": null, "exit_code": code, "signal": null, "reason": null,
            "message": null, "image": "", "image_ref": "", "pid": null, "log_path": "", "exit": null, "labels": {}, "annotations": {}
        }))
        .expect("status")
    }

    #[test]
    fn a_new_sandbox_only_when_something_would_run_in_it() {
        let containers: Vec<Container> = vec![Container { name: "a".into(), ..Default::default() }, Container { name: "b".into(), ..Default::default() }];
        let killed = vec![exited("1", "a", 0, 137), exited("2", "b", 3, 0)];
        let done = vec![exited("1", "a", 0, 0), exited("2", "b", 3, 0)];
        assert!(new_sandbox_wanted("Never", &containers, &[]), "a first sandbox");
        assert!(!new_sandbox_wanted("Never", &containers, &killed));
        assert!(new_sandbox_wanted("OnFailure", &containers, &killed));
        assert!(!new_sandbox_wanted("OnFailure", &containers, &done));
        assert!(new_sandbox_wanted("Always", &containers, &done));
    }

    #[test]
    fn carried_attempts_come_before_the_new_sandbox_ones() {
        let carried = vec![exited("old-a", "a", 2, 137), exited("old-b", "b", 0, 137)];
        let mut list = vec![exited("new-a", "a", 3, 1)];
        with_carried(&mut list, &carried);
        let ids: Vec<&str> = list.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["old-b", "old-a", "new-a"]);
        // Two attempts later the carried one is no longer the previous: left out.
        let mut list = vec![exited("new-a3", "a", 3, 1), exited("new-a4", "a", 4, 1)];
        with_carried(&mut list, &carried[..1]);
        assert_eq!(list.len(), 2);
        // latest_attempts keeps one per container, the highest.
        let l = latest_attempts(vec![exited("x", "a", 1, 0), exited("y", "a", 2, 0), exited("z", "b", 0, 0)]);
        assert_eq!(l.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["y", "z"]);
    }
}
