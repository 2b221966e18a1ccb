//! The ReplicaSet and ReplicationController controllers (upstream's `replicaset` controller,
//! whose ReplicationController one is the same code over the older kind): one implementation,
//! generic over [`Replicated`]. Keeps `spec.replicas` active pods matching the selector, named `<replicaset>-<5 random characters>` with the template's
//! labels and a controller ownerReference, adopts matching orphans and releases pods that stopped
//! matching, and reports replicas/fullyLabeledReplicas/readyReplicas/availableReplicas/
//! observedGeneration through the kind's status subresource.
//!
//! Creates and deletes are recorded as expectations ([`crate::expectations`]) before they are
//! sent; while any is unobserved in the pod cache the ReplicaSet is not resized again, so a
//! slow watch never creates extra pods. A process killed between a create and its
//! observation starts with an empty cache and no expectations: the relist shows the pod.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController, ReplicationControllerCondition, ReplicationControllerStatus};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::Controller;
use kube::{Resource, ResourceExt};
use serde_json::json;

use strata_client::events::EventType;
use crate::expectations::Expectations;
use crate::informer::Shared;
use crate::owners::OwnerIndex;
use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "replicaset-controller";
pub const RC_IDENTITY: &str = "replication-controller";
/// Most pods created or deleted in one pass (upstream's `BurstReplicas`).
const BURST: usize = 500;

pub struct State {
    /// The pods, by namespace and controller (a reconcile reads its own and the orphans).
    pods: OwnerIndex<Pod>,
    expectations: Expectations,
    slow_start: SlowStart,
}

/// Where each ReplicaSet's next pass of creates starts its slow start.
///
/// Upstream's controller starts every pass at one pod and doubles on success, so a template
/// admission refuses costs one failed create, not [`BURST`]. A ReplicaSet scaling by more
/// than [`BURST`] makes a pass per 500 pods, each starting again at 1: nine round trips through
/// the API server per 500 pods, most of them a handful of pods with the machine idle between.
/// Here a pass that created every pod it meant to lets the next one start where it ended
/// (at most half a burst, so a pass still has two rounds, and a failure costs no more creates
/// than upstream's last batch of a pass can); a failed create starts the next pass at 1 again,
/// and a ReplicaSet with all its replicas is forgotten, as is one whose last pass ended
/// [`SLOW_START_KEPT`] ago (a ReplicaSet deleted while it scaled up is never reconciled again).
#[derive(Default)]
struct SlowStart(std::sync::Mutex<std::collections::HashMap<String, (usize, std::time::Instant)>>);

/// How long a pass's end is remembered for the next.
const SLOW_START_KEPT: Duration = Duration::from_secs(600);

impl SlowStart {
    /// The first batch of a pass.
    fn first(&self, key: &str) -> usize {
        self.0.lock().ok().and_then(|m| m.get(key).filter(|(_, at)| at.elapsed() < SLOW_START_KEPT).map(|(n, _)| *n)).unwrap_or(1)
    }

    /// A pass ended: `Some(n)` its every create succeeded, `n` the largest batch; `None` one failed.
    fn ended(&self, key: &str, largest: Option<usize>) {
        let Ok(mut m) = self.0.lock() else { return };
        m.retain(|_, (_, at)| at.elapsed() < SLOW_START_KEPT);
        match largest {
            Some(n) => m.insert(key.to_string(), (n.clamp(1, BURST / 2), std::time::Instant::now())),
            None => m.remove(key),
        };
    }

    fn forget(&self, key: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(key);
        }
    }
}

/// A kind that keeps N replicas of a pod template: ReplicaSet (apps/v1) and
/// ReplicationController (v1). Status is handled in ReplicaSet's form.
pub trait Replicated:
    Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + std::fmt::Debug + k8s_openapi::serde::de::DeserializeOwned + k8s_openapi::serde::Serialize + Send + Sync + 'static
{
    /// The controller identity that writes for this kind.
    const IDENTITY: &'static str;
    fn has_spec(&self) -> bool;
    fn replicas(&self) -> i32;
    fn selector(&self) -> LabelSelector;
    fn template(&self) -> Option<PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    fn replica_status(&self) -> ReplicaSetStatus;
    fn set_replica_status(&mut self, st: ReplicaSetStatus);
}

impl Replicated for ReplicaSet {
    const IDENTITY: &'static str = IDENTITY;
    fn has_spec(&self) -> bool {
        self.spec.is_some()
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selector(&self) -> LabelSelector {
        self.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default()
    }
    fn template(&self) -> Option<PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.clone())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn replica_status(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }
    fn set_replica_status(&mut self, st: ReplicaSetStatus) {
        self.status = Some(st);
    }
}

/// A ReplicationController's selector is a plain map (defaulted by the API server to the
/// template's labels); everything else maps one to one onto a ReplicaSet's fields.
impl Replicated for ReplicationController {
    const IDENTITY: &'static str = RC_IDENTITY;
    fn has_spec(&self) -> bool {
        self.spec.is_some()
    }
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn selector(&self) -> LabelSelector {
        LabelSelector { match_labels: self.spec.as_ref().and_then(|s| s.selector.clone()), match_expressions: None }
    }
    fn template(&self) -> Option<PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.clone())
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0)
    }
    fn replica_status(&self) -> ReplicaSetStatus {
        let st = self.status.clone().unwrap_or_default();
        ReplicaSetStatus {
            replicas: st.replicas,
            fully_labeled_replicas: st.fully_labeled_replicas,
            ready_replicas: st.ready_replicas,
            available_replicas: st.available_replicas,
            observed_generation: st.observed_generation,
            conditions: st.conditions.map(|cs| {
                cs.into_iter().map(|c| ReplicaSetCondition { type_: c.type_, status: c.status, reason: c.reason, message: c.message, last_transition_time: c.last_transition_time }).collect()
            }),
        }
    }
    fn set_replica_status(&mut self, st: ReplicaSetStatus) {
        self.status = Some(ReplicationControllerStatus {
            replicas: st.replicas,
            fully_labeled_replicas: st.fully_labeled_replicas,
            ready_replicas: st.ready_replicas,
            available_replicas: st.available_replicas,
            observed_generation: st.observed_generation,
            conditions: st.conditions.map(|cs| {
                cs.into_iter()
                    .map(|c| ReplicationControllerCondition { type_: c.type_, status: c.status, reason: c.reason, message: c.message, last_transition_time: c.last_transition_time })
                    .collect()
            }),
        });
    }
}

/// The ReplicaSet controller.
pub async fn run(clients: Clients, pods: Shared<Pod>) -> Result<(), Error> {
    run_kind::<ReplicaSet>(clients, pods).await
}

/// The controller of one [`Replicated`] kind.
pub async fn run_kind<K: Replicated>(clients: Clients, pods: Shared<Pod>) -> Result<(), Error> {
    let pod_stream = what_a_replica_set_reads(pods.store().clone(), pods.subscribe());
    let ctx = Context::new(clients.clone(), K::IDENTITY, State { pods: pods.owners().clone(), expectations: Expectations::default(), slow_start: SlowStart::default() });
    Controller::new(Api::<K>::all(clients.root.clone()), crate::watch_config())
        .owns_shared_stream(pod_stream)
        .run(reconcile::<K>, error_policy::<K>, ctx)
        .for_each(crate::log_failures(K::IDENTITY))
        .await;
    Ok(())
}

/// What of a pod a ReplicaSet's reconcile reads (claim, status, expectations): its identity,
/// labels, controller, deletion, phase and Ready condition. A pod change that leaves these
/// alone (its binding to a node, most of its status) cannot change what the reconcile does.
fn fingerprint(p: &Pod) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let m = &p.metadata;
    m.uid.hash(&mut h);
    m.labels.hash(&mut h);
    for o in m.owner_references.iter().flatten() {
        (&o.uid, o.controller).hash(&mut h);
    }
    m.deletion_timestamp.as_ref().map(|t| t.0.timestamp_micros()).hash(&mut h);
    let status = p.status.as_ref();
    status.and_then(|s| s.phase.as_deref()).hash(&mut h);
    let ready = status.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    ready.map(|c| (c.status.as_str(), c.last_transition_time.as_ref().map(|t| t.0.timestamp_micros()))).hash(&mut h);
    h.finish()
}

/// The pod changes that wake a ReplicaSet: a pod seen for the first time, changed in what its
/// reconcile reads ([`fingerprint`]), or gone from the cache (a deletion, which expectations
/// wait for). A bound pod's binding alone wakes nothing (in a rollout, half of the pod events),
/// where each wake is a reconcile over all of the ReplicaSet's pods.
fn what_a_replica_set_reads(store: kube::runtime::reflector::Store<Pod>, pods: impl futures_util::Stream<Item = Arc<Pod>>) -> impl futures_util::Stream<Item = Arc<Pod>> {
    let mut seen: std::collections::HashMap<(String, String), u64> = std::collections::HashMap::new();
    pods.filter_map(move |p| {
        let key = (p.metadata.namespace.clone().unwrap_or_default(), p.metadata.name.clone().unwrap_or_default());
        let cached = store.get(&kube::runtime::reflector::ObjectRef::new(&key.1).within(&key.0)).is_some();
        let wake = if cached {
            let print = fingerprint(&p);
            seen.insert(key, print) != Some(print)
        } else {
            seen.remove(&key);
            true
        };
        futures_util::future::ready(wake.then_some(p))
    })
}

fn error_policy<K: Replicated>(rs: Arc<K>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(object = %crate::key(rs.as_ref()), controller = K::IDENTITY, error = %e, "replica controller");
    Action::requeue(Duration::from_secs(2))
}

/// Does a LabelSelector select these labels? An empty selector selects nothing (a
/// ReplicaSet's selector is never empty after validation).
pub fn selects(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let ml = sel.match_labels.as_ref();
    let me = sel.match_expressions.as_ref();
    if ml.is_none_or(|m| m.is_empty()) && me.is_none_or(|m| m.is_empty()) {
        return false;
    }
    let labels_ok = ml.is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let exprs_ok = me.is_none_or(|es| {
        es.iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
            let v = labels.get(&e.key);
            match e.operator.as_str() {
                "In" => v.is_some_and(|v| values.contains(v)),
                "NotIn" => v.is_none_or(|v| !values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
    });
    labels_ok && exprs_ok
}

/// An object's labels (none: the empty map), borrowed.
pub fn labels_of(meta: &ObjectMeta) -> &BTreeMap<String, String> {
    static EMPTY: BTreeMap<String, String> = BTreeMap::new();
    meta.labels.as_ref().unwrap_or(&EMPTY)
}

pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().flatten().find(|o| o.controller == Some(true))
}

/// The controller ownerReference for objects `owner` creates.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn is_active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod became Ready, if it is.
pub fn ready_since(p: &Pod) -> Option<Option<chrono::DateTime<chrono::Utc>>> {
    let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready")?;
    (c.status == "True").then(|| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn is_available(p: &Pod, min_ready: i32, now: chrono::DateTime<chrono::Utc>) -> bool {
    match ready_since(p) {
        None => false,
        Some(_) if min_ready <= 0 => true,
        Some(None) => false,
        Some(Some(t)) => t + chrono::Duration::seconds(i64::from(min_ready)) <= now,
    }
}

/// Upstream's deletion ranking: unscheduled before scheduled, Pending before Unknown before
/// Running, not ready before ready, ready more recently before longer, more restarts first,
/// newer before older. The pods to delete come first.
pub fn deletion_order(pods: &mut [Arc<Pod>]) {
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let restarts = |p: &Pod| p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map(|cs| cs.iter().map(|c| c.restart_count).sum::<i32>()).unwrap_or(0);
    pods.sort_by(|a, b| {
        let assigned = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| !n.is_empty());
        let ready = |p: &Pod| ready_since(p).is_some();
        let since = |p: &Pod| ready_since(p).flatten();
        let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        assigned(a)
            .cmp(&assigned(b))
            .then(phase_rank(a).cmp(&phase_rank(b)))
            .then(ready(a).cmp(&ready(b)))
            .then(since(b).cmp(&since(a)))
            .then(restarts(b).cmp(&restarts(a)))
            .then(created(b).cmp(&created(a)))
    });
}

/// `<base>-<5 random characters>` (base cut as upstream cuts a generateName prefix).
pub fn random_name(base: &str) -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut prefix = format!("{base}-");
    if prefix.len() > 58 {
        prefix.truncate(58);
    }
    let suffix: String = (0..5).map(|_| ALPHA[rand::random::<usize>() % ALPHA.len()] as char).collect();
    format!("{prefix}{suffix}")
}

async fn reconcile<K: Replicated>(rs: Arc<K>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let key = format!("{ns}/{name}");
    let uid = rs.meta().uid.clone().unwrap_or_default();
    if !rs.has_spec() {
        return Ok(Action::await_change());
    }
    let selector = rs.selector();
    if !crate::synced(ctx.state.pods.store()) {
        return Ok(crate::not_synced());
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.writer.clone(), &ns);
    // Expectations first, then the pods (upstream's order): checked after the snapshot, a pod
    // created by an earlier reconcile and observed in between would be in neither, and be
    // made again (seen: 10,024 pods created for 10,000 replicas under load, 24 deleted after).
    let in_cache = |n: &str| ctx.state.pods.contains(&ns, n);
    let sync = rs.meta().deletion_timestamp.is_none() && ctx.state.expectations.satisfied(&key, in_cache);
    // Only this ReplicaSet's pods and the namespace's orphans: pods controlled by others are
    // never claimed, so a reconcile costs O(own pods), not O(pods in the namespace).
    let (mine, orphans) = ctx.state.pods.owned_and_orphans(&ns, &uid);

    // Claim: adopt matching orphans, release owned pods that stopped matching. (`mine` are
    // the pods whose controller is this uid, `orphans` those with no controller: the index
    // files them so.)
    let mut owned: Vec<Arc<Pod>> = Vec::with_capacity(mine.len());
    for p in mine {
        if selects(&selector, labels_of(&p.metadata)) {
            owned.push(p);
        } else if rs.meta().deletion_timestamp.is_none() {
            let keep: Vec<&OwnerReference> = p.metadata.owner_references.iter().flatten().filter(|o| o.uid != uid).collect();
            let patch = json!({ "metadata": { "ownerReferences": keep, "resourceVersion": p.metadata.resource_version } });
            ignore_gone(pods_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)?;
        }
    }
    for p in orphans {
        if selects(&selector, labels_of(&p.metadata)) && is_active(&p) && rs.meta().deletion_timestamp.is_none() {
            let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
            refs.push(controller_ref(rs.as_ref()));
            let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": p.metadata.resource_version } });
            if ignore_gone(pods_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)? {
                owned.push(p);
            }
        }
    }
    let mut active: Vec<Arc<Pod>> = owned.iter().filter(|p| is_active(p)).cloned().collect();

    let mut failure: Option<(String, String)> = None;
    if sync {
        let want = rs.replicas().max(0) as usize;
        if active.len() >= want {
            ctx.state.slow_start.forget(&key);
        }
        if active.len() < want {
            let n = (want - active.len()).min(BURST);
            let created = create_pods(&ctx, rs.as_ref(), &key, n, ctx.state.slow_start.first(&key)).await;
            ctx.state.slow_start.ended(&key, created.as_ref().ok().copied());
            if let Err(e) = created {
                let message = crate::api_message(&e);
                ctx.recorder.publish(rs.as_ref(), EventType::Warning, "FailedCreate", format!("Error creating: {message}"));
                failure = Some(("FailedCreate".into(), message));
            }
        } else if active.len() > want {
            let n = (active.len() - want).min(BURST);
            deletion_order(&mut active);
            for p in active.iter().take(n) {
                let pname = p.name_any();
                ctx.state.expectations.expect_delete(&key, &pname);
                let dp = DeleteParams { preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }), ..Default::default() };
                match pods_api.delete(&pname, &dp).await {
                    Ok(_) => ctx.recorder.publish(rs.as_ref(), EventType::Normal, "SuccessfulDelete", format!("Deleted pod: {pname}")),
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        ctx.state.expectations.failed(&key, &pname);
                        let message = crate::api_message(&e);
                        ctx.recorder.publish(rs.as_ref(), EventType::Warning, "FailedDelete", format!("Error deleting: {message}"));
                        failure = Some(("FailedDelete".into(), message));
                        break;
                    }
                }
            }
        }
    }

    // Status from what the cache shows now (the next event brings the pods just created).
    let now = chrono::Utc::now();
    let min_ready = rs.min_ready_seconds();
    let template_labels = rs.template().and_then(|t| t.metadata).and_then(|m| m.labels).unwrap_or_default();
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
    let fully = active.iter().filter(|p| {
        let l = labels_of(&p.metadata);
        template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
    });
    let ready = active.iter().filter(|p| ready_since(p).is_some()).count() as i32;
    let available = active.iter().filter(|p| is_available(p, min_ready, now)).count() as i32;
    let old = rs.replica_status();
    let mut conditions: Vec<ReplicaSetCondition> = old.conditions.clone().unwrap_or_default().into_iter().filter(|c| c.type_ != "ReplicaFailure").collect();
    if let Some((reason, message)) = &failure {
        conditions.push(ReplicaSetCondition { type_: "ReplicaFailure".into(), status: "True".into(), reason: Some(reason.clone()), message: Some(message.clone()), last_transition_time: Some(Time(now)) });
    }
    let status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(fully.count() as i32),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        observed_generation: rs.meta().generation,
        conditions: if conditions.is_empty() { None } else { Some(conditions) },
    };
    if !same_status(&old, &status) {
        let mut new = (*rs).clone();
        new.set_replica_status(status);
        let api: Api<K> = Api::namespaced(ctx.writer.clone(), &ns);
        match api.replace_status(&name, &PostParams::default(), serde_json::to_vec(&new).map_err(|e| Error::Invalid(e.to_string()))?).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => return Ok(Action::requeue(Duration::from_millis(200))),
            Err(e) => return Err(e.into()),
        }
    }
    // Pods becoming available after minReadySeconds need a later look.
    if min_ready > 0 && (ready > available) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if failure.is_some() {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn same_status(a: &ReplicaSetStatus, b: &ReplicaSetStatus) -> bool {
    let strip = |c: &Option<Vec<ReplicaSetCondition>>| c.iter().flatten().map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone())).collect::<Vec<_>>();
    a.replicas == b.replicas
        && a.fully_labeled_replicas.unwrap_or(0) == b.fully_labeled_replicas.unwrap_or(0)
        && a.ready_replicas.unwrap_or(0) == b.ready_replicas.unwrap_or(0)
        && a.available_replicas.unwrap_or(0) == b.available_replicas.unwrap_or(0)
        && a.observed_generation == b.observed_generation
        && strip(&a.conditions) == strip(&b.conditions)
}

/// Ok(true) when the write happened, Ok(false) when the object is gone or changed meanwhile.
fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<bool, Error> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Create `n` pods in slow-start batches (`first`, twice that, ...), stopping at the first
/// error; returns the largest batch.
async fn create_pods<K: Replicated>(ctx: &Context<State>, rs: &K, key: &str, n: usize, first: usize) -> Result<usize, kube::Error> {
    let ns = rs.namespace().unwrap_or_default();
    let template = rs.template().unwrap_or_default();
    let mut largest = 0;
    for size in batch_sizes(n, first) {
        largest = largest.max(size);
        let mut futs = Vec::new();
        for _ in 0..size {
            let pod = pod_from_template(rs, &template);
            let pname = pod.metadata.name.clone().unwrap_or_default();
            ctx.state.expectations.expect_create(key, &pname);
            let (client, ns) = (ctx.writer.clone(), ns.clone());
            futs.push(async move { (pname.clone(), strata_client::create_unread(&client, &ns, &pod).await) });
        }
        let results = futures_util::future::join_all(futs).await;
        let mut first_err = None;
        for (pname, r) in results {
            match r {
                Ok(_) => ctx.recorder.publish(rs, EventType::Normal, "SuccessfulCreate", format!("Created pod: {pname}")),
                Err(e) => {
                    // Never coming: stop waiting for it.
                    ctx.state.expectations.failed(key, &pname);
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    Ok(largest)
}

/// The slow start's batches for `n` pods: `first`, then doubling, the last one what is left.
/// (A window that starts a create whenever one ends, growing by one per success, was measured
/// instead: no faster, and more server CPU per pod — the store commits a trickle of creates a
/// few at a time where a batch arrives together; docs/benchmarks.md, session 22.)
fn batch_sizes(n: usize, first: usize) -> impl Iterator<Item = usize> {
    let mut left = n;
    let mut batch = first.max(1);
    std::iter::from_fn(move || {
        let size = batch.min(left);
        left -= size;
        batch = batch.saturating_mul(2);
        (size > 0).then_some(size)
    })
}

fn pod_from_template<K: Replicated>(rs: &K, template: &PodTemplateSpec) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            name: Some(random_name(&rs.name_any())),
            namespace: rs.namespace(),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref(rs)]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use kube::runtime::watcher;

    /// A ReplicaSet scaled from 0 to 1,200: the first pass slow-starts at 1 as upstream's does,
    /// the passes after it where the one before ended; a failed create starts over at 1.
    #[test]
    fn a_pass_starts_where_the_last_successful_one_ended() {
        let sizes = |n, first| batch_sizes(n, first).collect::<Vec<_>>();
        assert_eq!(sizes(500, 1), [1, 2, 4, 8, 16, 32, 64, 128, 245]);
        assert_eq!(sizes(3, 1), [1, 2]);
        assert_eq!(sizes(0, 1), Vec::<usize>::new());
        let s = SlowStart::default();
        let key = "ns/web";
        assert_eq!(s.first(key), 1);
        s.ended(key, sizes(500, s.first(key)).into_iter().max());
        assert_eq!(sizes(500, s.first(key)), [245, 255], "the second pass: two rounds, not nine");
        s.ended(key, sizes(500, s.first(key)).into_iter().max());
        assert_eq!(sizes(200, s.first(key)), [200], "capped at half a burst");
        s.ended(key, None);
        assert_eq!(s.first(key), 1, "a failed create: the next pass slow-starts again");
        s.ended(key, Some(64));
        s.forget(key);
        assert_eq!(s.first(key), 1, "a ReplicaSet with all its replicas is forgotten");
        assert_eq!(s.first("ns/other"), 1, "per ReplicaSet");
        // A pass that ended long ago (its ReplicaSet deleted meanwhile) is let go by the next
        // pass of any ReplicaSet.
        let long_ago = std::time::Instant::now().checked_sub(SLOW_START_KEPT + Duration::from_secs(1));
        if let (Some(at), Ok(mut m)) = (long_ago, s.0.lock()) {
            m.insert("ns/deleted".into(), (100, at));
        }
        assert_eq!(s.first("ns/deleted"), 1, "too old to go by");
        s.ended(key, Some(8));
        assert_eq!(s.0.lock().map(|m| m.len()).ok(), Some(1), "only {key}'s is kept");
    }

    fn pod(name: &str, node: Option<&str>, labels: &[(&str, &str)]) -> Pod {
        let mut p = Pod::default();
        p.metadata.namespace = Some("ns".into());
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(format!("uid-{name}"));
        p.metadata.labels = Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        p.spec = Some(k8s_openapi::api::core::v1::PodSpec { node_name: node.map(str::to_string), ..Default::default() });
        p
    }

    #[test]
    fn a_binding_alone_does_not_wake_the_replica_set_but_labels_readiness_and_deletions_do() {
        let (store, mut writer) = kube::runtime::reflector::store::<Pod>();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Arc<Pod>>();
        let mut wakes = Box::pin(what_a_replica_set_reads(store, futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) })));
        let mut send = |ev: watcher::Event<Pod>, p: Pod| {
            writer.apply_watcher_event(&ev);
            tx.send(Arc::new(p)).expect("send");
            wakes.next().now_or_never().flatten().is_some()
        };
        let created = pod("a", None, &[("app", "x")]);
        assert!(send(watcher::Event::Apply(created.clone()), created), "a new pod wakes it");
        let bound = pod("a", Some("node-1"), &[("app", "x")]);
        assert!(!send(watcher::Event::Apply(bound.clone()), bound), "its binding does not");
        let relabelled = pod("a", Some("node-1"), &[("app", "y")]);
        assert!(send(watcher::Event::Apply(relabelled.clone()), relabelled.clone()), "a label change does");
        let mut ready = relabelled.clone();
        ready.status = Some(k8s_openapi::api::core::v1::PodStatus {
            conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() }]),
            ..Default::default()
        });
        assert!(send(watcher::Event::Apply(ready.clone()), ready.clone()), "readiness does");
        assert!(send(watcher::Event::Delete(ready.clone()), ready.clone()), "the deletion (same object, gone from the cache) does");
        assert!(send(watcher::Event::Apply(ready.clone()), ready), "and a pod of that name seen again afterwards does");
    }
}
