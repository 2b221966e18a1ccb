//! The Job controller (upstream's `job` controller): runs pods until `completions` succeed
//! (`parallelism` at a time; `Indexed` mode gives each pod its completion index), fails the Job
//! after `backoffLimit` failed pods or `activeDeadlineSeconds`, honours `suspend`, and reports
//! active/ready/succeeded/failed, startTime/completionTime, `completedIndexes` and the
//! `Complete`/`Failed` conditions `kubectl wait --for=condition=complete` reads. As upstream
//! since 1.31 those come only once no pod of the Job runs or terminates: the decision is recorded
//! first as `SuccessCriteriaMet` or `FailureTarget` (same reason) and the remaining pods deleted.
//! A Job whose `spec.managedBy` names another controller is left to it.
//!
//! Pods are counted with the job tracking finalizer (`batch.kubernetes.io/job-tracking`), as
//! upstream counts them: a finished pod's uid goes into `status.uncountedTerminatedPods` first,
//! then its finalizer is removed, then it moves into the counters — each step a separate write,
//! so a controller killed between any two counts every pod exactly once, and a deleted pod is
//! never lost from the counts.
//!
//! A `podFailurePolicy` decides about each failed pod by its first matching rule (exit codes of
//! its containers, In/NotIn and optionally one container; or its conditions, e.g.
//! `DisruptionTarget`): FailJob fails the Job (`FailureTarget` then `Failed`, reason
//! `PodFailurePolicy`, upstream's message), Ignore neither counts the pod as failed nor toward
//! `backoffLimit` (a replacement is made), Count is the default; with a policy only pods in the
//! Failed phase count as failed. A `successPolicy` (Indexed Jobs) completes the Job once one of its
//! rules holds for the succeeded indexes (`SuccessCriteriaMet` then `Complete`, reason
//! `SuccessPolicy`); the remaining pods are deleted. Not done: backoffLimitPerIndex and the
//! FailIndex action (`ttl.rs` does ttlSecondsAfterFinished).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, PodFailurePolicy, SuccessPolicy, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::Controller;
use kube::ResourceExt;
use serde_json::json;
use strata_client::events::EventType;

use crate::expectations::Expectations;
use crate::owners::OwnerIndex;
use crate::replicaset::{controller_of, controller_ref, labels_of, random_name, ready_since, selects};
use crate::informer::Shared;
use crate::{Clients, Context, Error};

/// `spec.managedBy` of the Jobs this controller reconciles (unset means the same).
const JOB_CONTROLLER_NAME: &str = "kubernetes.io/job-controller";

pub const IDENTITY: &str = "job-controller";
pub const TRACKING: &str = "batch.kubernetes.io/job-tracking";
pub const INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Counted failures of a pod's index before it (backoffLimitPerIndex).
pub const INDEX_FAILURES: &str = "batch.kubernetes.io/job-index-failure-count";
/// Failures of a pod's index before it that a pod failure policy ignored.
pub const INDEX_IGNORED_FAILURES: &str = "batch.kubernetes.io/job-index-ignored-failure-count";

pub struct State {
    /// The pods, by namespace and controller.
    pods: OwnerIndex<Pod>,
    expectations: Expectations,
    /// Per Job (`ns/name`): failures counted since its last success and when the latest
    /// happened (upstream's in-memory `backoffStore`; a restart forgets it, as upstream's).
    backoff: std::sync::Mutex<std::collections::HashMap<String, Backoff>>,
}

/// The first delay before a failed pod's replacement, doubled per further failure
/// (upstream's `DefaultJobPodFailureBackOff`)...
pub const POD_FAILURE_BACKOFF: Duration = Duration::from_secs(10);
/// ... up to this (`MaxJobPodFailureBackOff` of k8s.io/kubernetes v1.32; its documentation says
/// six minutes, its code ten).
pub const MAX_POD_FAILURE_BACKOFF: Duration = Duration::from_secs(600);

/// Failures since the last success and the time of the latest (upstream's `backoffRecord`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Backoff {
    pub failures: u32,
    pub last_failure: Option<chrono::DateTime<chrono::Utc>>,
}

impl Backoff {
    /// The record after newly counted pods (upstream's `newBackoffRecord`): failures add up; a
    /// success resets the count to the failures that finished after it.
    pub fn counted(&self, succeeded: &[chrono::DateTime<chrono::Utc>], failed: &[chrono::DateTime<chrono::Utc>]) -> Backoff {
        let mut failed = failed.to_vec();
        failed.sort();
        let Some(last_success) = succeeded.iter().max() else {
            return match failed.last() {
                Some(t) => Backoff { failures: self.failures + failed.len() as u32, last_failure: Some(*t) },
                None => self.clone(),
            };
        };
        let after: Vec<_> = failed.into_iter().filter(|t| t > last_success).collect();
        Backoff { failures: after.len() as u32, last_failure: after.last().copied() }
    }

    /// How long a new pod must still wait at `now`: 10 s after the latest failure, doubled per
    /// earlier failure since the last success, at most [`MAX_POD_FAILURE_BACKOFF`].
    pub fn remaining(&self, now: chrono::DateTime<chrono::Utc>) -> Duration {
        let Some(last) = self.last_failure.filter(|_| self.failures > 0) else { return Duration::ZERO };
        let mut delay = POD_FAILURE_BACKOFF;
        for _ in 1..self.failures {
            delay *= 2;
            if delay >= MAX_POD_FAILURE_BACKOFF {
                delay = MAX_POD_FAILURE_BACKOFF;
                break;
            }
        }
        let elapsed = (now - last).to_std().unwrap_or(Duration::ZERO);
        delay.saturating_sub(elapsed)
    }
}

pub async fn run(clients: Clients, shared_pods: Shared<Pod>) -> Result<(), Error> {
    let pod_stream = shared_pods.subscribe();
    let ctx = Context::new(clients.clone(), IDENTITY, State { pods: shared_pods.owners().clone(), expectations: Expectations::default(), backoff: Default::default() });
    let controller = Controller::new(Api::<Job>::all(clients.root.clone()), crate::watch_config());
    let jobs = controller.store();
    // A pod wakes its Job; an orphan wakes every Job of its namespace that selects it (to adopt it).
    let selecting = jobs.clone();
    let controller = controller.watches_shared_stream(pod_stream, move |p: Arc<Pod>| jobs_of_pod(&selecting, &p));
    // Pods whose Job is gone keep their tracking finalizer until someone removes it: this loop.
    let orphans = release_orphans(ctx.clone(), jobs);
    let main = controller.run(reconcile, error_policy, ctx).for_each(crate::log_failures(IDENTITY));
    tokio::select! {
        _ = main => {}
        _ = orphans => {}
    }
    Ok(())
}

fn jobs_of_pod(jobs: &Store<Job>, p: &Pod) -> Vec<ObjectRef<Job>> {
    let ns = p.namespace().unwrap_or_default();
    match controller_of(&p.metadata) {
        Some(o) if o.kind == "Job" => vec![ObjectRef::new(&o.name).within(&ns)],
        Some(_) => Vec::new(),
        None => {
            let labels = labels_of(&p.metadata);
            jobs.state()
                .iter()
                .filter(|j| j.namespace().as_deref() == Some(ns.as_str()) && j.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|sel| selects(sel, labels)))
                .map(|j| ObjectRef::from_obj(j.as_ref()))
                .collect()
        }
    }
}

async fn release_orphans(ctx: Arc<Context<State>>, jobs: Store<Job>) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !crate::synced(ctx.state.pods.store()) || !crate::synced(&jobs) {
            continue;
        }
        // Back-off records of Jobs that are gone.
        let live: std::collections::HashSet<String> = jobs.state().iter().map(|j| crate::key(j.as_ref())).collect();
        if let Ok(mut b) = ctx.state.backoff.lock() {
            b.retain(|k, _| live.contains(k));
        }
        // Once per pass, not once per pod: the uids of the Jobs not being deleted.
        let live_uids: std::collections::HashSet<String> = jobs.state().iter().filter(|j| j.metadata.deletion_timestamp.is_none()).filter_map(|j| j.metadata.uid.clone()).collect();
        for p in ctx.state.pods.store().state() {
            if !has_tracking(&p) {
                continue;
            }
            let Some(owner) = controller_of(&p.metadata).filter(|o| o.kind == "Job") else { continue };
            if live_uids.contains(&owner.uid) {
                continue;
            }
            // Gone from the cache: make sure it is gone from the server too (as the job
            // controller: the watching identity may list and watch Jobs, not get them).
            let api: Api<Job> = Api::namespaced(ctx.writer.clone(), &p.namespace().unwrap_or_default());
            match api.get_opt(&owner.name).await {
                Ok(Some(j)) if j.metadata.uid.as_deref() == Some(owner.uid.as_str()) && j.metadata.deletion_timestamp.is_none() => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pod = %crate::key(p.as_ref()), error = %e, "job controller: reading the job of a pod");
                    continue;
                }
            }
            let _ = remove_tracking(&ctx, &p).await;
        }
    }
}

/// The Job's pods (upstream's `ClaimPods` with the tracking finalizer): owned pods its selector
/// still matches; matching orphans not being deleted are adopted (controller reference and
/// tracking finalizer added, once a live read shows the Job is not being deleted); owned pods
/// that stopped matching are released (reference and finalizer removed). Each write carries the
/// pod's resourceVersion.
async fn claim(ctx: &Context<State>, job: &Job, ns: &str) -> Result<Vec<Arc<Pod>>, Error> {
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let selector = job.spec.as_ref().and_then(|s| s.selector.clone()).unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.writer.clone(), ns);
    let deleting = job.metadata.deletion_timestamp.is_some();
    let mut can_adopt: Option<bool> = None;
    let mut owned = Vec::new();
    // This Job's pods and the namespace's orphans (pods controlled by others are never claimed).
    let (mine, orphans) = ctx.state.pods.owned_and_orphans(ns, &uid);
    for p in mine.into_iter().chain(orphans) {
        let matches = selects(&selector, labels_of(&p.metadata));
        let finalizers: Vec<String> = p.metadata.finalizers.clone().unwrap_or_default();
        match controller_of(&p.metadata) {
            Some(c) if c.uid == uid => {
                if matches || deleting {
                    owned.push(p);
                    continue;
                }
                let refs: Vec<&OwnerReference> = p.metadata.owner_references.iter().flatten().filter(|o| o.uid != uid).collect();
                let keep: Vec<&String> = finalizers.iter().filter(|f| *f != TRACKING).collect();
                let patch = json!({ "metadata": { "ownerReferences": refs, "finalizers": keep, "resourceVersion": p.metadata.resource_version } });
                ignore_gone(api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)?;
            }
            None if matches && !deleting && p.metadata.deletion_timestamp.is_none() => {
                if can_adopt.is_none() {
                    // A Job deleted meanwhile adopts nothing (upstream's RecheckDeletionTimestamp).
                    let jobs: Api<Job> = Api::namespaced(ctx.writer.clone(), ns);
                    let fresh = jobs.get_opt(&job.name_any()).await?;
                    can_adopt = Some(fresh.is_some_and(|j| j.metadata.uid.as_deref() == Some(uid.as_str()) && j.metadata.deletion_timestamp.is_none()));
                }
                if can_adopt != Some(true) {
                    continue;
                }
                let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(job));
                let mut fins = finalizers.clone();
                if !fins.iter().any(|f| f == TRACKING) {
                    fins.push(TRACKING.into());
                }
                let patch = json!({ "metadata": { "ownerReferences": refs, "finalizers": fins, "resourceVersion": p.metadata.resource_version } });
                if let Some(adopted) = ignore_gone(api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)? {
                    owned.push(Arc::new(adopted));
                }
            }
            _ => {}
        }
    }
    Ok(owned)
}

/// A write to a pod that is gone (404) or changed meanwhile (409) is skipped: the next pass
/// decides again from the newer state.
fn ignore_gone<T>(r: Result<T, kube::Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn error_policy(job: Arc<Job>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(job = %crate::key(job.as_ref()), error = %e, "job controller");
    Action::requeue(Duration::from_secs(2))
}

fn has_tracking(p: &Pod) -> bool {
    p.metadata.finalizers.iter().flatten().any(|f| f == TRACKING)
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn finished(p: &Pod) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

/// Whether a terminating pod is replaced only once it has failed (upstream's
/// `onlyReplaceFailedPods`): podReplacementPolicy Failed, the only one a pod failure policy allows.
fn only_replace_failed(spec: &JobSpec) -> bool {
    spec.pod_replacement_policy.as_deref() == Some("Failed") || spec.pod_failure_policy.is_some()
}

/// A pod deleted before it finished counts as failed (upstream, once its finalizer is held),
/// unless only failed pods are replaced: then only the Failed phase counts (upstream's
/// `isPodFailed`).
fn failed(p: &Pod, spec: &JobSpec) -> bool {
    phase(p) == "Failed" || (!only_replace_failed(spec) && p.metadata.deletion_timestamp.is_some() && phase(p) != "Succeeded")
}

/// What a pod failure policy says of a failed pod (upstream's `matchPodFailurePolicy`): the
/// FailJob message, whether the failure counts (toward `backoffLimit` and `status.failed`), and
/// the action of the first rule that matches (FailIndex: the pod's index fails at once, with
/// backoffLimitPerIndex).
pub fn match_failure_policy(policy: Option<&PodFailurePolicy>, pod: &Pod) -> (Option<String>, bool, Option<&'static str>) {
    let Some(policy) = policy else { return (None, true, None) };
    let ns = pod.metadata.namespace.as_deref().unwrap_or("");
    let name = pod.metadata.name.as_deref().unwrap_or("");
    let status = pod.status.clone().unwrap_or_default();
    for (index, rule) in policy.rules.iter().enumerate() {
        let matched: Option<String> = if let Some(req) = &rule.on_exit_codes {
            // Regular containers first, then init containers; only non-zero exits.
            status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten()).find_map(|cs| {
                let t = cs.state.as_ref()?.terminated.as_ref()?;
                let named = req.container_name.as_ref().is_none_or(|n| *n == cs.name);
                let hit = match req.operator.as_str() {
                    "In" => req.values.contains(&t.exit_code),
                    "NotIn" => !req.values.contains(&t.exit_code),
                    _ => false,
                };
                (named && t.exit_code != 0 && hit).then(|| format!("Container {} for pod {ns}/{name} failed with exit code {} matching FailJob rule at index {index}", cs.name, t.exit_code))
            })
        } else if let Some(patterns) = &rule.on_pod_conditions {
            status.conditions.iter().flatten().find(|c| patterns.iter().any(|p| p.type_ == c.type_ && p.status == c.status)).map(|c| format!("Pod {ns}/{name} has condition {} matching FailJob rule at index {index}", c.type_))
        } else {
            None
        };
        let Some(message) = matched else { continue };
        match rule.action.as_str() {
            "Ignore" => return (None, false, Some("Ignore")),
            "Count" => return (None, true, Some("Count")),
            "FailJob" => return (Some(message), true, Some("FailJob")),
            "FailIndex" => return (None, true, Some("FailIndex")),
            _ => {}
        }
    }
    (None, true, None)
}

/// The message of a SuccessCriteriaMet condition when one of the rules of a success policy
/// holds for `succeeded` indexes of an Indexed Job (upstream's `matchSuccessPolicy`).
pub fn match_success_policy(policy: Option<&SuccessPolicy>, completions: i32, succeeded: &BTreeSet<i32>) -> Option<String> {
    let policy = policy?;
    if succeeded.is_empty() {
        return None;
    }
    for (index, rule) in policy.rules.iter().enumerate() {
        let matched = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(s), count) => {
                let required: BTreeSet<i32> = parse_indexes(s).into_iter().filter(|i| *i < completions).collect();
                if required.is_empty() {
                    continue;
                }
                let contains = required.intersection(succeeded).count();
                contains == required.len() || count.is_some_and(|c| contains >= c.max(0) as usize)
            }
            (None, Some(c)) => succeeded.len() >= c.max(0) as usize,
            (None, None) => false,
        };
        if matched {
            return Some(format!("Matched rules at index {index}"));
        }
    }
    None
}

fn index_of(p: &Pod) -> Option<i32> {
    p.metadata.annotations.as_ref()?.get(INDEX)?.parse().ok()
}

/// A pod's count annotation (`INDEX_FAILURES`, `INDEX_IGNORED_FAILURES`); 0 when missing or not a
/// count, as upstream.
fn annotation_count(p: &Pod, key: &str) -> i32 {
    p.metadata.annotations.as_ref().and_then(|a| a.get(key)).and_then(|v| v.parse::<i32>().ok()).filter(|n| *n >= 0).unwrap_or(0)
}

/// Whether a failed pod fails its index for good (upstream's `isIndexFailed`): a FailIndex rule
/// matched, or the failure counts and its index had already failed `backoffLimitPerIndex` times.
fn fails_index(p: &Pod, spec: &JobSpec, limit: i32) -> bool {
    if !failed(p, spec) {
        return false;
    }
    let counted = match match_failure_policy(spec.pod_failure_policy.as_ref(), p) {
        (_, _, Some("FailIndex")) => return true,
        (_, counted, _) => counted,
    };
    counted && annotation_count(p, INDEX_FAILURES) >= limit
}

/// The failure counts a new pod for `index` carries (upstream's `getNewIndexFailureCounts`):
/// those of the index's latest failed pod, plus its own failure as counted or ignored.
fn index_failure_counts(pods: &[Arc<Pod>], spec: &JobSpec, index: i32) -> (i32, i32) {
    let latest = pods
        .iter()
        .filter(|p| index_of(p) == Some(index) && failed(p, spec))
        .max_by_key(|p| (annotation_count(p, INDEX_FAILURES) + annotation_count(p, INDEX_IGNORED_FAILURES), finished_at(p)));
    let Some(p) = latest else { return (0, 0) };
    let (counted, ignored) = (annotation_count(p, INDEX_FAILURES), annotation_count(p, INDEX_IGNORED_FAILURES));
    if match_failure_policy(spec.pod_failure_policy.as_ref(), p).1 {
        (counted + 1, ignored)
    } else {
        (counted, ignored + 1)
    }
}

/// When a pod's last container finished (its failure time, for picking the latest failure).
fn finished_at(p: &Pod) -> Option<chrono::DateTime<chrono::Utc>> {
    let st = p.status.as_ref()?;
    st.container_statuses.iter().flatten().filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0)).max()
}

async fn remove_tracking(ctx: &Context<State>, p: &Pod) -> Result<(), Error> {
    let keep: Vec<&String> = p.metadata.finalizers.iter().flatten().filter(|f| *f != TRACKING).collect();
    let f = if keep.is_empty() { json!(null) } else { json!(keep) };
    let patch = json!({ "metadata": { "finalizers": f, "resourceVersion": p.metadata.resource_version } });
    let api: Api<Pod> = Api::namespaced(ctx.writer.clone(), &p.namespace().unwrap_or_default());
    match api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `1,3-5` as upstream writes completedIndexes.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let v: Vec<i32> = set.iter().copied().collect();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        // Upstream writes two neighbours as a list, three or more as a range.
        out.push(match end - start {
            0 => start.to_string(),
            1 => format!("{start},{end}"),
            _ => format!("{start}-{end}"),
        });
        i += 1;
    }
    out.join(",")
}

pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    set.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    set.insert(a);
                }
            }
        }
    }
    set
}

fn condition_true(st: &JobStatus, type_: &str) -> bool {
    st.conditions.iter().flatten().any(|c| c.type_ == type_ && c.status == "True")
}

fn set_condition(st: &mut JobStatus, type_: &str, status: &str, reason: &str, message: &str) {
    let now = Time(chrono::Utc::now());
    let conds = st.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Some(now.clone());
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_probe_time = Some(now);
        return;
    }
    conds.push(JobCondition { type_: type_.into(), status: status.into(), reason: Some(reason.into()), message: Some(message.into()), last_probe_time: Some(now.clone()), last_transition_time: Some(now) });
}

async fn write_status(ctx: &Context<State>, job: &Job, st: JobStatus) -> Result<Job, Error> {
    let mut j = job.clone();
    j.status = Some(st);
    let api: Api<Job> = Api::namespaced(ctx.writer.clone(), &job.namespace().unwrap_or_default());
    let body = serde_json::to_vec(&j).map_err(|e| Error::Invalid(e.to_string()))?;
    match api.replace_status(&job.name_any(), &PostParams::default(), body).await {
        Ok(j) => Ok(j),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Invalid("job changed; retrying".into())),
        Err(e) => Err(e.into()),
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    if !crate::synced(ctx.state.pods.store()) {
        return Ok(crate::not_synced());
    }
    let ns = job.namespace().unwrap_or_default();
    let key = crate::key(job.as_ref());
    let Some(spec) = job.spec.as_ref() else { return Ok(Action::await_change()) };
    // Another controller's Job (upstream's JobManagedBy): neither its pods nor its status.
    if spec.managed_by.as_deref().is_some_and(|m| m != JOB_CONTROLLER_NAME) {
        return Ok(Action::await_change());
    }
    let mut job = (*job).clone();
    let pods = claim(&ctx, &job, &ns).await?;
    let mut st = job.status.clone().unwrap_or_default();
    let done = condition_true(&st, "Complete") || condition_true(&st, "Failed");
    // Decided but not yet final (upstream since 1.31): FailureTarget or SuccessCriteriaMet is
    // set at once, Failed or Complete only when no pod of the Job is left running or terminating.
    let decided = !done && (condition_true(&st, "FailureTarget") || condition_true(&st, "SuccessCriteriaMet"));

    // Counting, step 1: finished pods still holding the finalizer become "uncounted".
    let mut uncounted = st.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut u_succ: BTreeSet<String> = uncounted.succeeded.clone().unwrap_or_default().into_iter().collect();
    let mut u_fail: BTreeSet<String> = uncounted.failed.clone().unwrap_or_default().into_iter().collect();
    let mut added = false;
    // When the pods counted in this pass finished (for the back-off record).
    let (mut new_succ, mut new_fail) = (Vec::new(), Vec::new());
    // Pods the controller itself deleted (the Job finished or was suspended) are not failures.
    let count_deleted = !done && !decided && !spec.suspend.unwrap_or(false);
    for p in &pods {
        let puid = p.metadata.uid.clone().unwrap_or_default();
        if !has_tracking(p) || u_succ.contains(&puid) || u_fail.contains(&puid) {
            continue;
        }
        if !count_deleted && !finished(p) && p.metadata.deletion_timestamp.is_some() {
            remove_tracking(&ctx, p).await?;
            continue;
        }
        if phase(p) == "Succeeded" {
            u_succ.insert(puid);
            new_succ.push(finished_at(p).unwrap_or_else(chrono::Utc::now));
            added = true;
        } else if failed(p, spec) && (finished(p) || p.metadata.deletion_timestamp.is_some()) {
            if match_failure_policy(spec.pod_failure_policy.as_ref(), p).1 {
                u_fail.insert(puid);
                new_fail.push(finished_at(p).unwrap_or_else(chrono::Utc::now));
                added = true;
            } else {
                // Ignored by the pod failure policy: not a failure; its replacement comes.
                remove_tracking(&ctx, p).await?;
            }
        }
    }
    // backoffLimitPerIndex: indexes whose failures ran out, recorded with the uncounted pods
    // (before their finalizers go, so a crash cannot lose them).
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let per_index = spec.backoff_limit_per_index.filter(|_| indexed);
    let completions_n = spec.completions.unwrap_or(1);
    let mut failed_idx: BTreeSet<i32> = parse_indexes(st.failed_indexes.as_deref().unwrap_or(""));
    if let Some(limit) = per_index {
        let before = failed_idx.len();
        failed_idx.extend(pods.iter().filter(|p| has_tracking(p) && fails_index(p, spec, limit)).filter_map(|p| index_of(p)).filter(|i| *i < completions_n));
        if failed_idx.len() != before || st.failed_indexes.is_none() {
            st.failed_indexes = Some(format_indexes(&failed_idx));
            added = true;
        }
    }
    if added {
        uncounted.succeeded = Some(u_succ.iter().cloned().collect());
        uncounted.failed = Some(u_fail.iter().cloned().collect());
        st.uncounted_terminated_pods = Some(uncounted.clone());
        job = write_status(&ctx, &job, st.clone()).await?;
        st = job.status.clone().unwrap_or_default();
        // Recorded once the pods are (each is newly counted in one pass only).
        if let Ok(mut b) = ctx.state.backoff.lock() {
            let record = b.entry(key.clone()).or_default();
            *record = record.counted(&new_succ, &new_fail);
        }
    }
    // Step 2: their finalizers go.
    for p in &pods {
        let puid = p.metadata.uid.clone().unwrap_or_default();
        if has_tracking(p) && (u_succ.contains(&puid) || u_fail.contains(&puid)) {
            remove_tracking(&ctx, p).await?;
        }
    }
    // Step 3: uncounted pods whose finalizer is gone (or that are gone) enter the counters.
    let still_tracked = |puid: &str| pods.iter().any(|p| p.metadata.uid.as_deref() == Some(puid) && has_tracking(p));
    let mut completed: BTreeSet<i32> = parse_indexes(st.completed_indexes.as_deref().unwrap_or(""));
    let mut moved = false;
    for puid in u_succ.clone() {
        if !still_tracked(&puid) {
            u_succ.remove(&puid);
            st.succeeded = Some(st.succeeded.unwrap_or(0) + 1);
            if let Some(i) = pods.iter().find(|p| p.metadata.uid.as_deref() == Some(puid.as_str())).and_then(|p| index_of(p)) {
                completed.insert(i);
            }
            moved = true;
        }
    }
    for puid in u_fail.clone() {
        if !still_tracked(&puid) {
            u_fail.remove(&puid);
            st.failed = Some(st.failed.unwrap_or(0) + 1);
            moved = true;
        }
    }
    if indexed {
        // An index counts once, whatever number of pods succeeded for it.
        let completions = spec.completions.unwrap_or(1);
        completed.retain(|i| *i < completions);
        st.succeeded = Some(completed.len() as i32);
    }
    st.uncounted_terminated_pods = Some(UncountedTerminatedPods { succeeded: Some(u_succ.iter().cloned().collect()), failed: Some(u_fail.iter().cloned().collect()) });
    if indexed {
        st.completed_indexes = Some(format_indexes(&completed));
    }

    let active: Vec<Arc<Pod>> = pods.iter().filter(|p| !finished(p) && p.metadata.deletion_timestamp.is_none()).cloned().collect();
    let now = chrono::Utc::now();
    if st.start_time.is_none() && !spec.suspend.unwrap_or(false) {
        st.start_time = Some(Time(now));
    }
    let succeeded = st.succeeded.unwrap_or(0);
    // Failures being counted count already (else a replacement would be created for them).
    let failed_n = st.failed.unwrap_or(0) + u_fail.len() as i32;
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let mut requeue: Option<Duration> = None;
    let mut delete_active = false;
    if !done && !decided {
        let deadline_hit = spec.active_deadline_seconds.zip(st.start_time.as_ref()).is_some_and(|(d, t)| t.0 + chrono::Duration::seconds(d) <= now);
        let fail_job = if spec.pod_failure_policy.is_some() { pods.iter().filter(|p| failed(p, spec)).find_map(|p| match_failure_policy(spec.pod_failure_policy.as_ref(), p).0) } else { None };
        let success = if indexed { match_success_policy(spec.success_policy.as_ref(), completions.unwrap_or(0), &completed) } else { None };
        if let Some(message) = fail_job {
            set_condition(&mut st, "FailureTarget", "True", "PodFailurePolicy", &message);
            ctx.recorder.publish(&job, EventType::Warning, "PodFailurePolicy", message);
            delete_active = true;
        } else if failed_n > spec.backoff_limit.unwrap_or(6) || past_backoff_limit_on_failure(spec, &pods) {
            set_condition(&mut st, "FailureTarget", "True", "BackoffLimitExceeded", "Job has reached the specified backoff limit");
            ctx.recorder.publish(&job, EventType::Warning, "BackoffLimitExceeded", "Job has reached the specified backoff limit");
            delete_active = true;
        } else if deadline_hit {
            set_condition(&mut st, "FailureTarget", "True", "DeadlineExceeded", "Job was active longer than specified deadline");
            ctx.recorder.publish(&job, EventType::Warning, "DeadlineExceeded", "Job was active longer than specified deadline");
            delete_active = true;
        } else if let Some((reason, message)) = per_index.and(indexes_verdict(spec, &failed_idx, &completed)) {
            set_condition(&mut st, "FailureTarget", "True", reason, message);
            ctx.recorder.publish(&job, EventType::Warning, reason, message);
            delete_active = true;
        } else if let Some(message) = success {
            set_condition(&mut st, "SuccessCriteriaMet", "True", "SuccessPolicy", &message);
            ctx.recorder.publish(&job, EventType::Normal, "Completed", "Job completed");
            delete_active = true;
        } else if completions.is_some_and(|c| succeeded >= c) || (completions.is_none() && succeeded > 0 && active.is_empty()) {
            set_condition(&mut st, "SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods");
            ctx.recorder.publish(&job, EventType::Normal, "Completed", "Job completed");
            delete_active = true;
        } else if let Some(d) = spec.active_deadline_seconds {
            if let Some(t) = st.start_time.as_ref() {
                requeue = (t.0 + chrono::Duration::seconds(d) - now).to_std().ok();
            }
        }
    }
    let finished_now = ["Complete", "Failed", "FailureTarget", "SuccessCriteriaMet"].iter().any(|t| condition_true(&st, t));
    let suspended = spec.suspend.unwrap_or(false);
    let pods_api: Api<Pod> = Api::namespaced(ctx.writer.clone(), &ns);
    // Expectations are checked against the same snapshot the counts come from (`pods`, read
    // once by `claim`), not the live cache: a pod created by an earlier pass that arrives after
    // the snapshot is in neither, so its expectation stays unmet and nothing is made for it (the
    // ReplicaSet checks the live cache, and so must check before it reads its pods).
    let names: std::collections::HashSet<&str> = pods.iter().filter_map(|p| p.metadata.name.as_deref()).collect();
    let in_cache = |n: &str| names.contains(n);
    if finished_now || suspended || delete_active {
        for p in &active {
            let dp = DeleteParams { preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }), ..Default::default() };
            match pods_api.delete(&p.name_any(), &dp).await {
                Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404 | 409, .. })) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if suspended && !finished_now {
            set_condition(&mut st, "Suspended", "True", "JobSuspended", "Job suspended");
        }
    } else if ctx.state.expectations.satisfied(&key, in_cache) && job.metadata.deletion_timestamp.is_none() {
        // A Job being deleted makes and removes no pods (upstream's manageJob is skipped): while
        // the garbage collector orphans its pods, they would look missing.
        if st.conditions.iter().flatten().any(|c| c.type_ == "Suspended" && c.status == "True") {
            set_condition(&mut st, "Suspended", "False", "JobResumed", "Job resumed");
        }
        // How many should run now.
        // Indexes done or about to be counted (a succeeded pod still being counted).
        let succeeded_idx: BTreeSet<i32> = completed.iter().copied().chain(pods.iter().filter(|p| phase(p) == "Succeeded").filter_map(|p| index_of(p))).collect();
        let want = match completions {
            Some(c) if indexed => parallelism.min(c - succeeded_idx.len() as i32 - failed_idx.difference(&succeeded_idx).count() as i32).max(0),
            Some(c) => parallelism.min(c - succeeded - u_succ.len() as i32).max(0),
            None => if succeeded > 0 { 0 } else { parallelism },
        } as usize;
        // With podReplacementPolicy Failed a terminating pod is replaced only once it has failed.
        let terminating = if only_replace_failed(spec) { pods.iter().filter(|p| !finished(p) && p.metadata.deletion_timestamp.is_some()).count() } else { 0 };
        // A replacement after failures waits out the back-off (upstream's pod failure back-off).
        let wait = ctx.state.backoff.lock().ok().and_then(|b| b.get(&key).map(|r| r.remaining(now))).unwrap_or(Duration::ZERO);
        if active.len() + terminating < want && !wait.is_zero() {
            requeue = Some(requeue.map_or(wait, |r| r.min(wait)) + Duration::from_millis(100));
        } else if active.len() + terminating < want {
            let mut indexes: Vec<Option<i32>> = Vec::new();
            if indexed {
                let c = completions.unwrap_or(1);
                let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).chain(pods.iter().filter(|p| terminating > 0 && !finished(p) && p.metadata.deletion_timestamp.is_some()).filter_map(|p| index_of(p))).collect();
                for i in 0..c {
                    if indexes.len() + active.len() + terminating >= want {
                        break;
                    }
                    if !succeeded_idx.contains(&i) && !running.contains(&i) && !failed_idx.contains(&i) {
                        indexes.push(Some(i));
                    }
                }
            } else {
                indexes = vec![None; want - active.len() - terminating];
            }
            for idx in indexes {
                let mut pod = pod_for(&job, idx);
                if let (Some(i), Some(_)) = (idx, per_index) {
                    let (counted, ignored) = index_failure_counts(&pods, spec, i);
                    let a = pod.metadata.annotations.get_or_insert_with(Default::default);
                    a.insert(INDEX_FAILURES.into(), counted.to_string());
                    if ignored > 0 {
                        a.insert(INDEX_IGNORED_FAILURES.into(), ignored.to_string());
                    }
                }
                let pname = pod.metadata.name.clone().unwrap_or_default();
                ctx.state.expectations.expect_create(&key, &pname);
                match strata_client::create_unread(&ctx.writer, &ns, &pod).await {
                    Ok(_) => ctx.recorder.publish(&job, EventType::Normal, "SuccessfulCreate", format!("Created pod: {pname}")),
                    Err(e) => {
                        ctx.state.expectations.failed(&key, &pname);
                        ctx.recorder.publish(&job, EventType::Warning, "FailedCreate", format!("Error creating: {}", crate::api_message(&e)));
                        return Err(e.into());
                    }
                }
            }
        } else if active.len() > want {
            let mut extra = active.clone();
            extra.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)));
            for p in extra.iter().take(active.len() - want) {
                ctx.state.expectations.expect_delete(&key, &p.name_any());
                let dp = DeleteParams { preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }), ..Default::default() };
                match pods_api.delete(&p.name_any(), &dp).await {
                    Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404 | 409, .. })) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    // The final condition once every pod has finished or is gone (those deleted above in this
    // pass are still running here: a later pass, woken by their updates, finishes the Job).
    if !done && finished_now && pods.iter().all(|p| finished(p)) {
        for (interim, last) in [("FailureTarget", "Failed"), ("SuccessCriteriaMet", "Complete")] {
            let Some(c) = st.conditions.iter().flatten().find(|c| c.type_ == interim && c.status == "True").cloned() else { continue };
            set_condition(&mut st, last, "True", c.reason.as_deref().unwrap_or(""), c.message.as_deref().unwrap_or(""));
            if last == "Complete" {
                st.completion_time = Some(Time(now));
            }
            break;
        }
    }
    st.active = Some(if finished_now { 0 } else { active.len() as i32 });
    st.ready = Some(active.iter().filter(|p| ready_since(p).is_some()).count() as i32);
    st.terminating = Some(pods.iter().filter(|p| !finished(p) && p.metadata.deletion_timestamp.is_some()).count() as i32);
    st.succeeded = Some(st.succeeded.unwrap_or(0));
    st.failed = Some(st.failed.unwrap_or(0));
    if moved || job.status.as_ref() != Some(&st) {
        write_status(&ctx, &job, st).await?;
    }
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(300))))
}

/// Upstream's pastBackoffLimitOnFailure: with restartPolicy OnFailure a failing container
/// restarts in place, and the restarts of the pods still pending or running count toward
/// backoffLimit (any restart at all with a limit of 0).
fn past_backoff_limit_on_failure(spec: &JobSpec, pods: &[Arc<Pod>]) -> bool {
    if spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) != Some("OnFailure") {
        return false;
    }
    let restarts: i32 = pods
        .iter()
        .filter(|p| matches!(phase(p), "Pending" | "Running"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| s.init_container_statuses.iter().flatten().chain(s.container_statuses.iter().flatten()))
        .map(|c| c.restart_count)
        .sum();
    match spec.backoff_limit.unwrap_or(6) {
        0 => restarts > 0,
        limit => restarts >= limit,
    }
}

/// How failed indexes end a Job with backoffLimitPerIndex (upstream's order): more than
/// `maxFailedIndexes`, or every index finished with some failed; the reason and message.
fn indexes_verdict(spec: &JobSpec, failed: &BTreeSet<i32>, succeeded: &BTreeSet<i32>) -> Option<(&'static str, &'static str)> {
    if spec.max_failed_indexes.is_some_and(|m| failed.len() > m.max(0) as usize) {
        return Some(("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes"));
    }
    let finished = failed.union(succeeded).count();
    (!failed.is_empty() && finished >= spec.completions.unwrap_or(1).max(0) as usize).then_some(("FailedIndexes", "Job has failed indexes"))
}

/// A pod of the Job from its template: tracking finalizer, controller reference, and for
/// Indexed Jobs the completion index (annotation, label, `JOB_COMPLETION_INDEX`, hostname).
fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let name = match index {
        Some(i) => {
            labels.insert(INDEX.into(), i.to_string());
            annotations.insert(INDEX.into(), i.to_string());
            spec.hostname = Some(format!("{}-{i}", job.name_any()));
            for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
                c.env.get_or_insert_with(Vec::new).push(EnvVar { name: "JOB_COMPLETION_INDEX".into(), value: Some(i.to_string()), value_from: None });
            }
            random_name(&format!("{}-{i}", job.name_any()))
        }
        None => random_name(&job.name_any()),
    };
    let mut finalizers = tm.finalizers.unwrap_or_default();
    finalizers.push(TRACKING.into());
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: if annotations.is_empty() { None } else { Some(annotations) },
            finalizers: Some(finalizers),
            owner_references: Some(vec![controller_ref(job)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_pod(exits: &[(&str, i32)], init_exits: &[(&str, i32)], conditions: &[(&str, &str)]) -> Pod {
        use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, PodCondition, PodStatus};
        let cs = |v: &[(&str, i32)]| -> Vec<ContainerStatus> {
            v.iter()
                .map(|(n, code)| ContainerStatus {
                    name: n.to_string(),
                    state: Some(ContainerState { terminated: Some(ContainerStateTerminated { exit_code: *code, ..Default::default() }), ..Default::default() }),
                    ..Default::default()
                })
                .collect()
        };
        Pod {
            metadata: ObjectMeta { name: Some("p".into()), namespace: Some("ns".into()), ..Default::default() },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Failed".into()),
                container_statuses: Some(cs(exits)),
                init_container_statuses: Some(cs(init_exits)),
                conditions: Some(conditions.iter().map(|(t, st)| PodCondition { type_: t.to_string(), status: st.to_string(), ..Default::default() }).collect()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn pod_failure_policy_rules_match_in_order() {
        use k8s_openapi::api::batch::v1::{PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule};
        let exit = |action: &str, container: Option<&str>, op: &str, values: &[i32]| PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement { container_name: container.map(str::to_string), operator: op.into(), values: values.to_vec() }),
            on_pod_conditions: None,
        };
        let cond = |action: &str, t: &str| PodFailurePolicyRule {
            action: action.into(),
            on_exit_codes: None,
            on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern { type_: t.into(), status: "True".into() }]),
        };
        let policy = PodFailurePolicy { rules: vec![cond("Ignore", "DisruptionTarget"), exit("FailJob", Some("main"), "In", &[42]), exit("Count", None, "NotIn", &[0, 1])] };
        let p = Some(&policy);
        assert_eq!(match_failure_policy(p, &failed_pod(&[("main", 42)], &[], &[])), (Some("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1".into()), true, Some("FailJob")));
        assert_eq!(match_failure_policy(p, &failed_pod(&[("main", 42)], &[], &[("DisruptionTarget", "True")])), (None, false, Some("Ignore")), "the first matching rule decides");
        assert_eq!(match_failure_policy(p, &failed_pod(&[("main", 42)], &[], &[("DisruptionTarget", "False")])).2, Some("FailJob"), "status must match");
        assert_eq!(match_failure_policy(p, &failed_pod(&[("side", 42)], &[], &[])), (None, true, Some("Count")), "another container: the NotIn rule");
        assert_eq!(match_failure_policy(p, &failed_pod(&[("side", 1)], &[], &[])), (None, true, None), "no rule: counted");
        assert_eq!(match_failure_policy(p, &failed_pod(&[("main", 0)], &[("init", 7)], &[])).2, Some("Count"), "init containers too; exit 0 never matches");
        let fail_on_condition = PodFailurePolicy { rules: vec![cond("FailJob", "DisruptionTarget")] };
        assert_eq!(match_failure_policy(Some(&fail_on_condition), &failed_pod(&[], &[], &[("DisruptionTarget", "True")])).0.as_deref(), Some("Pod ns/p has condition DisruptionTarget matching FailJob rule at index 0"));
        assert_eq!(match_failure_policy(None, &failed_pod(&[("main", 42)], &[], &[])), (None, true, None));
    }

    #[test]
    fn success_policy_rules() {
        use k8s_openapi::api::batch::v1::SuccessPolicyRule;
        let rule = |idx: Option<&str>, count: Option<i32>| SuccessPolicyRule { succeeded_indexes: idx.map(str::to_string), succeeded_count: count };
        let policy = SuccessPolicy { rules: vec![rule(Some("0,2-3"), Some(2)), rule(None, Some(4)), rule(Some("1"), None)] };
        let set = |v: &[i32]| v.iter().copied().collect::<BTreeSet<i32>>();
        let m = |s: &[i32]| match_success_policy(Some(&policy), 5, &set(s));
        assert_eq!(m(&[]), None);
        assert_eq!(m(&[0]), None, "one of 0,2-3: not two");
        assert_eq!(m(&[0, 3]).as_deref(), Some("Matched rules at index 0"));
        assert_eq!(m(&[1]).as_deref(), Some("Matched rules at index 2"));
        assert_eq!(m(&[0, 4]), None);
        let all = SuccessPolicy { rules: vec![rule(Some("0-1"), None)] };
        assert_eq!(match_success_policy(Some(&all), 5, &set(&[0])), None, "every index of the rule without a count");
        assert_eq!(match_success_policy(Some(&all), 5, &set(&[0, 1])).as_deref(), Some("Matched rules at index 0"));
        assert_eq!(match_success_policy(None, 5, &set(&[0, 1])), None);
    }

    #[test]
    fn pod_failure_backoff_doubles_from_ten_seconds_and_a_success_resets_it() {
        let t0 = chrono::Utc::now();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let none = Backoff::default();
        assert_eq!(none.remaining(t0), Duration::ZERO);
        let one = none.counted(&[], &[at(0)]);
        assert_eq!(one, Backoff { failures: 1, last_failure: Some(at(0)) });
        assert_eq!(one.remaining(at(4)), Duration::from_secs(6));
        assert_eq!(one.remaining(at(11)), Duration::ZERO);
        let two = one.counted(&[], &[at(20)]);
        assert_eq!(two.remaining(at(20)), Duration::from_secs(20));
        let many = Backoff { failures: 12, last_failure: Some(at(0)) };
        assert_eq!(many.remaining(at(0)), MAX_POD_FAILURE_BACKOFF, "capped");
        // A success resets the count to the failures that finished after it.
        assert_eq!(two.counted(&[at(30)], &[]), Backoff { failures: 0, last_failure: None });
        assert_eq!(two.counted(&[at(30)], &[at(25), at(40)]), Backoff { failures: 1, last_failure: Some(at(40)) });
        assert_eq!(two.counted(&[], &[]), two);
    }

    #[test]
    fn completed_indexes_round_trip() {
        let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&s), "0-2,4,6,7", "two neighbours are not a range (upstream's orderedIntervals.String)");
        assert_eq!(parse_indexes("0-2,4,6-7"), s);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }
}
