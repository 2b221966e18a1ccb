//! The controllers: each a level-triggered reconcile loop fed by watches (ServiceAccount,
//! garbage collection, ReplicaSet, Deployment, Job, TTL, node lifecycle, pod GC, DaemonSet, StatefulSet, volume binder, CronJob, Endpoints, EndpointSlice, root-CA publisher), idempotent and safe to kill at any line. Only
//! talks to the API server (through `strata-client`), as kube-controller-manager does: watches
//! with the manager's own identity (`system:kube-controller-manager`: list and watch on
//! everything), writes with each controller's identity (the ServiceAccount user names that
//! upstream's `system:controller:*` ClusterRoles are bound to), status through status
//! subresources, ownerReferences with `controller: true` and `blockOwnerDeletion`, Events.
//!
//! [`run`] stands for leadership of the Lease `kube-system/kube-controller-manager` and runs
//! every controller while it leads; each controller runs in its own task and is restarted
//! after a pause if it fails or panics, so one never stops the others or the server.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod gc;
pub mod history;
pub mod informer;
pub mod job;
pub mod mirroring;
pub mod nodelifecycle;
pub mod owners;
pub mod podgc;
pub mod replicaset;
pub mod rollout;
pub mod rootca;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttl;
pub mod volume;
pub mod virtualmachine;

pub use strata_client::leader;

/// The Lease the controller managers elect their leader with (upstream's name, so an upstream
/// kube-controller-manager and strata's never both act on one cluster).
pub const LEASE_NAMESPACE: &str = "kube-system";
pub const LEASE_NAME: &str = "kube-controller-manager";

/// The manager's own user (watches, leader election), bound by the bootstrap policy to
/// `system:kube-controller-manager`.
pub const MANAGER_USER: &str = "system:kube-controller-manager";

/// Every controller, by the ServiceAccount (in kube-system) whose identity it writes with.
pub const CONTROLLERS: &[&str] = &[
    serviceaccount::IDENTITY,
    gc::IDENTITY,
    replicaset::IDENTITY,
    replicaset::RC_IDENTITY,
    deployment::IDENTITY,
    job::IDENTITY,
    ttl::IDENTITY,
    nodelifecycle::IDENTITY,
    podgc::IDENTITY,
    daemonset::IDENTITY,
    statefulset::IDENTITY,
    volume::IDENTITY,
    disruption::IDENTITY,
    cronjob::IDENTITY,
    virtualmachine::IDENTITY,
    endpoints::IDENTITY,
    endpoints::SLICE_IDENTITY,
    mirroring::IDENTITY,
    rootca::IDENTITY,
];

/// The user name of a controller's identity (`system:serviceaccount:kube-system:NAME`).
pub fn user_of(identity: &str) -> String {
    format!("system:serviceaccount:kube-system:{identity}")
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Api(#[from] kube::Error),
    #[error("watch: {0}")]
    Watch(#[from] kube::runtime::watcher::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The API clients the controllers use.
#[derive(Clone)]
pub struct Clients {
    /// Watches and leader election.
    pub root: kube::Client,
    /// Writes, per controller identity; a controller missing here writes with `root`.
    pub per_controller: HashMap<String, kube::Client>,
}

impl Clients {
    /// One identity for everything (a kubeconfig given to `strata controllers`).
    pub fn single(client: kube::Client) -> Self {
        Clients { root: client, per_controller: HashMap::new() }
    }

    pub fn writer(&self, identity: &str) -> kube::Client {
        self.per_controller.get(identity).cloned().unwrap_or_else(|| self.root.clone())
    }
}

/// How the manager runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// This candidate's identity in the Lease.
    pub identity: String,
    pub timing: leader::Timing,
    pub settings: Settings,
}

impl Default for Config {
    fn default() -> Self {
        Config { identity: leader::default_identity(), timing: leader::Timing::default(), settings: Settings::default() }
    }
}

/// The controllers' own settings (kube-controller-manager's flags).
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub node_lifecycle: nodelifecycle::Settings,
    pub pod_gc: podgc::Settings,
    /// The cluster's CA bundle (PEM) the root-CA publisher puts in every namespace
    /// (kube-controller-manager's `--root-ca-file`).
    pub root_ca: Option<String>,
}

/// Stand for leadership and run every controller while leading, until `stop` resolves; a
/// leader stops every controller and then releases its Lease.
pub async fn run(clients: Clients, config: Config, stop: impl std::future::Future<Output = ()>) {
    let elector = leader::LeaderElector::new(clients.root.clone(), LEASE_NAMESPACE, LEASE_NAME, &config.identity, config.timing.clone());
    elector.run(|| run_controllers(clients.clone(), config.settings.clone()), stop).await
}

/// The watches the controllers share (one each, as kube-controller-manager's informers): the
/// pods, which most controllers read and which change the most.
#[derive(Clone, Default)]
pub struct Informers {
    pub pods: informer::Shared<k8s_openapi::api::core::v1::Pod>,
}

/// Every controller, each in its own task, restarted after a pause when it fails or panics,
/// and the shared watches they read, each in its own task restarted the same way (over the same
/// cache: it relists). Dropping the future (leadership lost) aborts them all.
pub async fn run_controllers(clients: Clients, settings: Settings) {
    let mut tasks = tokio::task::JoinSet::new();
    let informers = Informers::default();
    {
        let pods = informers.pods.clone();
        let api = kube::Api::<k8s_openapi::api::core::v1::Pod>::all(clients.root.clone());
        tasks.spawn(restarting("shared pod watch", move || {
            let (pods, api) = (pods.clone(), api.clone());
            async move {
                pods.run(api).await;
                Ok(())
            }
        }));
    }
    for name in CONTROLLERS {
        let clients = clients.clone();
        let settings = settings.clone();
        let informers = informers.clone();
        tasks.spawn(restarting(name, move || {
            let c = clients.clone();
            let settings = settings.clone();
            let pods = informers.pods.clone();
            async move {
                match *name {
                    serviceaccount::IDENTITY => serviceaccount::run(c).await,
                    gc::IDENTITY => gc::run(c, pods).await,
                    replicaset::IDENTITY => replicaset::run(c, pods).await,
                    replicaset::RC_IDENTITY => replicaset::run_kind::<k8s_openapi::api::core::v1::ReplicationController>(c, pods).await,
                    deployment::IDENTITY => deployment::run(c).await,
                    job::IDENTITY => job::run(c, pods).await,
                    ttl::IDENTITY => ttl::run(c).await,
                    nodelifecycle::IDENTITY => nodelifecycle::run(c, settings.node_lifecycle, pods).await,
                    podgc::IDENTITY => podgc::run(c, settings.pod_gc, pods).await,
                    daemonset::IDENTITY => daemonset::run(c, pods).await,
                    statefulset::IDENTITY => statefulset::run(c, pods).await,
                    volume::IDENTITY => volume::run(c).await,
                    disruption::IDENTITY => disruption::run(c, pods).await,
                    cronjob::IDENTITY => cronjob::run(c).await,
                    virtualmachine::IDENTITY => virtualmachine::run(c).await,
                    endpoints::IDENTITY => endpoints::run(c, pods).await,
                    endpoints::SLICE_IDENTITY => endpoints::run_slices(c, pods).await,
                    mirroring::IDENTITY => mirroring::run(c).await,
                    rootca::IDENTITY => rootca::run(c, settings.root_ca).await,
                    _ => Ok(()),
                }
            }
        }));
    }
    while tasks.join_next().await.is_some() {}
}

/// Run `make()`'s future in its own task for ever: after it returns, fails or panics, log it,
/// pause, and run a new one.
async fn restarting<F, Fut>(name: &'static str, make: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send + 'static,
{
    loop {
        let one = tokio::spawn(make());
        let abort = one.abort_handle();
        let _guard = AbortOnDrop(abort);
        match one.await {
            Ok(Ok(())) => tracing::warn!(controller = name, "controller stopped; restarting"),
            Ok(Err(e)) => tracing::error!(controller = name, error = %e, "controller failed; restarting"),
            Err(e) => tracing::error!(controller = name, error = %e, "controller panicked; restarting"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What the API server said of a failed request, as upstream's controllers put it in Events and
/// conditions: its Status message (`pods "x" is forbidden: exceeded quota: ...`), not the
/// client's wrapping of it; other errors as they print.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// `namespace/name` of an object, for logs.
pub fn key<K: kube::ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Shared state a reconcile gets.
pub struct Context<S> {
    pub clients: Clients,
    pub writer: kube::Client,
    pub recorder: strata_client::events::Recorder,
    pub state: S,
}

impl<S> Context<S> {
    pub fn new(clients: Clients, identity: &str, state: S) -> Arc<Self> {
        let writer = clients.writer(identity);
        Arc::new(Context { recorder: strata_client::events::Recorder::with_correlator(writer.clone(), identity), clients, writer, state })
    }
}

/// Has this store had its first complete list? A controller acts on nothing before its caches
/// are synced (as upstream's `WaitForCacheSync`): an empty cache would look like missing pods.
pub(crate) fn synced<K: kube::runtime::reflector::Lookup + Clone + 'static>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    matches!(futures_util::FutureExt::now_or_never(store.wait_until_ready()), Some(Ok(())))
}

impl<S> Context<S> {
    /// Whether `selector` of workload `owner` (a `kind` such as "daemon set", in upstream's
    /// words) selects every pod, which upstream refuses to act on; if so, says so in an event.
    pub(crate) fn refuses_selecting_all<K: kube::Resource<DynamicType = ()>>(&self, owner: &K, kind: &str, selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> bool {
        let all = selector.match_labels.as_ref().is_none_or(|m| m.is_empty()) && selector.match_expressions.as_ref().is_none_or(|m| m.is_empty());
        if all {
            let msg = format!("This {kind} is selecting all pods. A non-empty selector is required.");
            self.recorder.publish(owner, strata_client::events::EventType::Warning, "SelectingAll", msg);
        }
        all
    }
}

/// Requeue soon: a cache is not synced yet.
pub(crate) fn not_synced() -> kube::runtime::controller::Action {
    kube::runtime::controller::Action::requeue(Duration::from_millis(300))
}

/// A watcher config that relists with the default backoff (what every controller uses).
pub(crate) fn watch_config() -> kube::runtime::watcher::Config {
    kube::runtime::watcher::Config::default()
}

/// For a controller's `run(...)` stream: reconcile failures were logged by its error policy;
/// a failed watch (a list refused, a stream cut) is logged here, as kube-controller-manager's
/// reflectors log theirs, and kube-runtime retries it with backoff. Without this a watch that
/// keeps failing would leave its controller waiting for a cache that never syncs, silently.
pub(crate) fn log_failures<T, R, Q: std::fmt::Display>(controller: &'static str) -> impl FnMut(Result<T, kube::runtime::controller::Error<R, Q>>) -> futures_util::future::Ready<()> {
    use kube::runtime::controller::Error as E;
    move |outcome| {
        match outcome {
            Err(E::QueueError(e)) => tracing::warn!(controller, error = %e, "watch failed; retrying"),
            Err(E::RunnerError(e)) => tracing::warn!(controller, error = %e, "controller runner"),
            _ => {}
        }
        futures_util::future::ready(())
    }
}

/// For a watch stream a controller drains itself (a reflector feeding its cache): failures
/// logged as [`log_failures`] does.
pub(crate) fn log_watch_failures<T>(controller: &'static str, kind: &'static str) -> impl FnMut(Result<T, kube::runtime::watcher::Error>) -> futures_util::future::Ready<()> {
    move |item| {
        if let Err(e) = item {
            tracing::warn!(controller, kind, error = %e, "watch failed; retrying");
        }
        futures_util::future::ready(())
    }
}
