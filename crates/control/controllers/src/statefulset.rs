//! The StatefulSet controller (upstream's `statefulset` controller, 1.32): pods with stable
//! identities `<set>-<ordinal>` (ordinals from `spec.ordinals.start`), each with the labels
//! `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`, hostname = its name
//! and subdomain = `serviceName`, and per-pod claims `<template>-<set>-<ordinal>` made from
//! `volumeClaimTemplates` before the pod and kept when it goes (unless
//! `persistentVolumeClaimRetentionPolicy` says Delete: the claim is then owned by the set, or by
//! the pod being scaled away, and the garbage collector removes it).
//!
//! OrderedReady creates one pod at a time in ordinal order, each only once the one before is
//! Running and Ready (and available after minReadySeconds), and removes from the highest
//! ordinal down, one at a time; Parallel creates and removes all at once. Templates are
//! ControllerRevisions ([`crate::history`]); a pod carries its revision's name in
//! `controller-revision-hash`. RollingUpdate replaces pods from the highest ordinal down to
//! `partition`, one at a time, each after the previous is healthy; OnDelete only creates
//! replacements at the update revision. Status (replicas, ready, available, current, updated,
//! currentRevision, updateRevision, observedGeneration) is what `kubectl rollout status sts`
//! reads. Names are stable, so a create repeated from a stale cache is a harmless 409.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use strata_client::lean;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

use crate::history::{self, HASH_LABEL};
use crate::owners::OwnerIndex;
use crate::replicaset::{controller_of, controller_ref, is_available, labels_of, ready_since, selects};
use crate::informer::Shared;
use crate::{Clients, Context, Error};
use strata_client::events::EventType;

pub const IDENTITY: &str = "statefulset-controller";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct State {
    /// The pods, by namespace and controller.
    pods: OwnerIndex<Pod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
}

pub async fn run(clients: Clients, shared_pods: Shared<Pod>) -> Result<(), Error> {
    let root = clients.root.clone();
    let (pods, pod_stream) = (shared_pods.owners().clone(), shared_pods.subscribe());
    let (revisions, rw) = reflector::store::<ControllerRevision>();
    let rev_stream = reflector::reflector(rw, lean::watcher(Api::<ControllerRevision>::all(root.clone()), crate::watch_config())).default_backoff().touched_objects();
    let (claims, cw) = reflector::store::<PersistentVolumeClaim>();
    let claim_stream = reflector::reflector(cw, lean::watcher(Api::<PersistentVolumeClaim>::all(root.clone()), crate::watch_config())).default_backoff().touched_objects();
    let ctx = Context::new(clients.clone(), IDENTITY, State { pods, revisions, claims });
    let claim_drain = claim_stream.for_each(crate::log_watch_failures(IDENTITY, "PersistentVolumeClaim"));
    let controller = Controller::new(Api::<StatefulSet>::all(root), crate::watch_config())
        .owns_shared_stream(pod_stream)
        .owns_stream(rev_stream)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY));
    futures_util::future::join(controller, claim_drain).await;
    Ok(())
}

fn error_policy(set: Arc<StatefulSet>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(statefulset = %crate::key(set.as_ref()), error = %e, "statefulset controller");
    Action::requeue(Duration::from_secs(2))
}

/// The ordinal of a pod of `set` (its name is `<set>-<ordinal>`), if it is one.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let n = pod.strip_prefix(set)?.strip_prefix('-')?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn running_and_ready(p: &Pod) -> bool {
    phase(p) == "Running" && ready_since(p).is_some()
}

fn healthy(p: &Pod, min_ready: i32, now: chrono::DateTime<chrono::Utc>) -> bool {
    running_and_ready(p) && !terminating(p) && is_available(p, min_ready, now)
}

fn revision_of(p: &Pod) -> &str {
    p.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).map(String::as_str).unwrap_or("")
}

/// The claim name of a template for an ordinal (upstream's `getPersistentVolumeClaimName`).
pub fn claim_name(set: &str, template: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The pod of `ordinal` from `template` (upstream's `newStatefulSetPod` + `setPodRevision`).
pub fn new_pod(set: &StatefulSet, template: &PodTemplateSpec, ordinal: i32, revision: &str) -> Pod {
    let set_name = set.name_any();
    let name = format!("{set_name}-{ordinal}");
    let tm = template.metadata.clone().unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    labels.insert(HASH_LABEL.into(), revision.into());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    if let Some(svc) = set.spec.as_ref().and_then(|s| s.service_name.clone()).filter(|s| !s.is_empty()) {
        spec.subdomain = Some(svc);
    }
    // Each claim template becomes a volume of the pod's own claim (replacing a volume of the
    // same name in the template), as upstream's `updateStorage`.
    let templates = set.spec.as_ref().and_then(|s| s.volume_claim_templates.clone()).unwrap_or_default();
    if !templates.is_empty() {
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        for t in &templates {
            let tname = t.name_any();
            volumes.retain(|v| v.name != tname);
            volumes.push(Volume { name: tname.clone(), persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim_name(&set_name, &tname, ordinal), read_only: None }), ..Default::default() });
        }
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.namespace(),
            labels: Some(labels),
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![controller_ref(set)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The claims of an ordinal (upstream's `getPersistentVolumeClaims`): each template's, named
/// for the ordinal, labelled with the template's labels and the set's selector labels.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let spec = set.spec.as_ref();
    let selector = spec.and_then(|s| s.selector.match_labels.clone()).unwrap_or_default();
    spec.and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| {
            let mut c = t.clone();
            c.metadata.name = Some(claim_name(&set.name_any(), &t.name_any(), ordinal));
            c.metadata.namespace = set.namespace();
            let labels = c.metadata.labels.get_or_insert_with(BTreeMap::new);
            labels.extend(selector.clone());
            c.metadata.uid = None;
            c.metadata.resource_version = None;
            c.metadata.creation_timestamp = None;
            c.status = None;
            c
        })
        .collect()
}

fn retention(set: &StatefulSet) -> (String, String) {
    let p = set.spec.as_ref().and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    (p.and_then(|p| p.when_deleted.clone()).unwrap_or_else(|| "Retain".into()), p.and_then(|p| p.when_scaled.clone()).unwrap_or_else(|| "Retain".into()))
}

/// A non-controlling ownerReference (the claims' owners under a Delete retention policy).
fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference { api_version: api_version.into(), kind: kind.into(), name: meta.name.clone().unwrap_or_default(), uid: meta.uid.clone().unwrap_or_default(), controller: None, block_owner_deletion: Some(true) }
}

/// One reconcile's working state.
struct Pass<'a> {
    ctx: &'a Context<State>,
    set: &'a StatefulSet,
    pods_api: Api<Pod>,
    min_ready: i32,
    now: chrono::DateTime<chrono::Utc>,
}

impl Pass<'_> {
    fn event(&self, t: EventType, reason: &str, msg: String) {
        self.ctx.recorder.publish(self.set, t, reason, msg);
    }

    /// Create the claims of an ordinal that do not exist yet.
    async fn create_claims(&self, ordinal: i32) -> Result<(), Error> {
        let ns = self.set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.writer.clone(), &ns);
        let (when_deleted, _) = retention(self.set);
        let pod_name = format!("{}-{ordinal}", self.set.name_any());
        for mut c in claims_for(self.set, ordinal) {
            let cname = c.name_any();
            let cached = self.ctx.state.claims.state().into_iter().any(|x| x.namespace().as_deref() == Some(ns.as_str()) && x.metadata.name.as_deref() == Some(cname.as_str()));
            if cached {
                continue;
            }
            if when_deleted == "Delete" {
                c.metadata.owner_references = Some(vec![owner_ref("apps/v1", "StatefulSet", &self.set.metadata)]);
            }
            match api.create(&PostParams::default(), &c).await {
                Ok(_) => self.event(EventType::Normal, "SuccessfulCreate", format!("create Claim {cname} Pod {pod_name} in StatefulSet {} success", self.set.name_any())),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => {
                    self.event(EventType::Warning, "FailedCreate", format!("create Claim {cname} for Pod {pod_name} in StatefulSet {} failed error: {}", self.set.name_any(), crate::api_message(&e)));
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    async fn create_pod(&self, pod: &Pod, ordinal: i32) -> Result<(), Error> {
        self.create_claims(ordinal).await?;
        let pname = pod.name_any();
        match self.pods_api.create(&PostParams::default(), pod).await {
            Ok(_) => {
                self.event(EventType::Normal, "SuccessfulCreate", format!("create Pod {pname} in StatefulSet {} successful", self.set.name_any()));
                Ok(())
            }
            // Made by an earlier pass whose watch event has not arrived yet.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => {
                self.event(EventType::Warning, "FailedCreate", format!("create Pod {pname} in StatefulSet {} failed error: {}", self.set.name_any(), crate::api_message(&e)));
                Err(e.into())
            }
        }
    }

    async fn delete_pod(&self, p: &Pod) -> Result<(), Error> {
        let pname = p.name_any();
        let dp = DeleteParams { preconditions: Some(Preconditions { uid: p.metadata.uid.clone(), resource_version: None }), ..Default::default() };
        match self.pods_api.delete(&pname, &dp).await {
            Ok(_) => {
                self.event(EventType::Normal, "SuccessfulDelete", format!("delete Pod {pname} in StatefulSet {} successful", self.set.name_any()));
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => {
                self.event(EventType::Warning, "FailedDelete", format!("delete Pod {pname} in StatefulSet {} failed error: {}", self.set.name_any(), crate::api_message(&e)));
                Err(e.into())
            }
        }
    }

    /// Under `whenScaled: Delete`, a pod scaled away owns its claims, so they go with it.
    async fn claims_follow_pod(&self, p: &Pod, ordinal: i32) -> Result<(), Error> {
        if retention(self.set).1 != "Delete" {
            return Ok(());
        }
        let ns = self.set.namespace().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.ctx.writer.clone(), &ns);
        for c in claims_for(self.set, ordinal) {
            let Some(cur) = self.ctx.state.claims.state().into_iter().find(|x| x.namespace().as_deref() == Some(ns.as_str()) && x.metadata.name == c.metadata.name) else { continue };
            let refs = cur.metadata.owner_references.clone().unwrap_or_default();
            if refs.iter().any(|r| Some(&r.uid) == p.metadata.uid.as_ref()) {
                continue;
            }
            let mut new_refs: Vec<OwnerReference> = refs.into_iter().filter(|r| r.kind != "StatefulSet").collect();
            new_refs.push(owner_ref("v1", "Pod", &p.metadata));
            // An update (upstream's role grants the controller update on claims, not patch),
            // carrying the cached resourceVersion. A conflict (the cache was behind the claim)
            // fails this sync before the pod is deleted, as upstream's does: deleted first, the
            // pod would leave its claim behind for good.
            let mut new = (*cur).clone();
            new.metadata.owner_references = Some(new_refs);
            match api.replace(&cur.name_any(), &PostParams::default(), &new).await {
                Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    let st = &ctx.state;
    let Some(spec) = set.spec.as_ref() else { return Ok(Action::await_change()) };
    if !crate::synced(st.pods.store()) || !crate::synced(&st.revisions) || !crate::synced(&st.claims) {
        return Ok(crate::not_synced());
    }
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    if ctx.refuses_selecting_all(set.as_ref(), "statefulset", &spec.selector) {
        return Ok(Action::await_change());
    }
    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.writer.clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced(ctx.writer.clone(), &ns);

    // Revisions: the update revision is the template's; the current one is the status's.
    let collision = set.status.as_ref().and_then(|s| s.collision_count);
    let hist = match history::resolve(&st.revisions, &rev_api, set.as_ref(), &spec.selector, &spec.template, collision).await? {
        history::Outcome::Ok(h) => h,
        history::Outcome::Collision => {
            let mut new = (*set).clone();
            new.status.get_or_insert_with(Default::default).collision_count = Some(collision.unwrap_or(0) + 1);
            write_status(&ctx, &new).await?;
            return Err(Error::Invalid(format!("hash collision for statefulset {ns}/{name}; collisionCount raised")));
        }
    };
    let update = hist.current.clone();
    let status_current = set.status.as_ref().and_then(|s| s.current_revision.clone()).unwrap_or_default();
    let current = hist.old.iter().find(|r| r.name_any() == status_current).cloned().unwrap_or_else(|| update.clone());
    let current_template: PodTemplateSpec = current
        .data
        .as_ref()
        .and_then(|d| d.0["spec"]["template"].as_object().cloned())
        .map(|mut t| {
            t.remove("$patch");
            t
        })
        .and_then(|t| serde_json::from_value(serde_json::Value::Object(t)).ok())
        .unwrap_or_else(|| spec.template.clone());

    // Pods: claim members (`<set>-<ordinal>` matching the selector).
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    // This set's pods and the namespace's orphans (others' are never claimed).
    let (mine, orphans) = st.pods.owned_and_orphans(&ns, &uid);
    for p in mine.into_iter().chain(orphans) {
        let member = selects(&spec.selector, labels_of(&p.metadata)) && ordinal_of(&name, &p.name_any()).is_some();
        match controller_of(&p.metadata) {
            Some(c) if c.uid == uid => {
                if member {
                    owned.push(p.clone());
                } else {
                    let keep: Vec<&OwnerReference> = p.metadata.owner_references.iter().flatten().filter(|o| o.uid != uid).collect();
                    let patch = json!({ "metadata": { "ownerReferences": keep, "resourceVersion": p.metadata.resource_version } });
                    match pods_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                        Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404 | 409, .. })) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            None if member && !terminating(&p) => {
                let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(set.as_ref()));
                let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": p.metadata.resource_version } });
                match pods_api.patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => owned.push(p.clone()),
                    Err(kube::Error::Api(kube::core::ErrorResponse { code: 404 | 409, .. })) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {}
        }
    }

    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let end = start + replicas; // exclusive
    let mut slots: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    let mut condemned: Vec<Arc<Pod>> = Vec::new();
    for p in &owned {
        let Some(o) = ordinal_of(&name, &p.name_any()) else { continue };
        if o >= start && o < end {
            slots.insert(o, p.clone());
        } else {
            condemned.push(p.clone());
        }
    }
    // Highest ordinal first.
    condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(&name, &p.name_any()).unwrap_or(0)));
    let rolling = spec.update_strategy.as_ref().and_then(|s| s.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    let partition = spec.update_strategy.as_ref().and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0);
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let pass = Pass { ctx: &ctx, set: set.as_ref(), pods_api, min_ready: spec.min_ready_seconds.unwrap_or(0), now: chrono::Utc::now() };
    let is_healthy = |p: &Pod| healthy(p, pass.min_ready, pass.now);
    let first_unhealthy: Option<String> = (start..end)
        .filter_map(|o| match slots.get(&o) {
            Some(p) if is_healthy(p) => None,
            Some(p) => Some(p.name_any()),
            None => Some(format!("{name}-{o}")),
        })
        .chain(condemned.iter().rev().filter(|p| !is_healthy(p)).map(|p| p.name_any()))
        .next();

    let done = 'work: {
        // Replicas, lowest ordinal first.
        for o in start..end {
            match slots.get(&o) {
                Some(p) if matches!(phase(p), "Failed" | "Succeeded") => {
                    if !terminating(p) {
                        pass.delete_pod(p).await?;
                    }
                    break 'work false;
                }
                Some(p) => {
                    if phase(p) == "Pending" || phase(p).is_empty() {
                        pass.create_claims(o).await?;
                    }
                    if monotonic && (terminating(p) || !is_healthy(p)) {
                        break 'work false;
                    }
                }
                None => {
                    // Below the partition a new pod gets the current revision, as upstream.
                    let use_current = rolling && o < start + partition;
                    let pod = if use_current { new_pod(&set, &current_template, o, &current.name_any()) } else { new_pod(&set, &spec.template, o, &update.name_any()) };
                    pass.create_pod(&pod, o).await?;
                    if monotonic {
                        break 'work false;
                    }
                }
            }
        }
        // Pods beyond the replicas, highest ordinal first.
        for p in &condemned {
            if terminating(p) {
                if monotonic {
                    break 'work false;
                }
                continue;
            }
            if monotonic && !is_healthy(p) && first_unhealthy.as_deref() != Some(p.name_any().as_str()) {
                break 'work false;
            }
            if let Some(o) = ordinal_of(&name, &p.name_any()) {
                pass.claims_follow_pod(p, o).await?;
            }
            pass.delete_pod(p).await?;
            if monotonic {
                break 'work false;
            }
        }
        true
    };
    if done && rolling {
        // From the highest ordinal down to the partition: one out-of-date pod at a time.
        for o in (start + partition.max(0)..end).rev() {
            let Some(p) = slots.get(&o) else { break };
            if revision_of(p) != update.name_any() && !terminating(p) {
                pass.delete_pod(p).await?;
                break;
            }
            if !is_healthy(p) {
                break;
            }
        }
    }

    // Status from the cache (the next event brings what this pass did).
    let counted: Vec<&Arc<Pod>> = slots.values().chain(condemned.iter()).collect();
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas: counted.len() as i32,
        ready_replicas: Some(counted.iter().filter(|p| running_and_ready(p)).count() as i32),
        available_replicas: Some(counted.iter().filter(|p| running_and_ready(p) && is_available(p, pass.min_ready, pass.now)).count() as i32),
        current_replicas: Some(counted.iter().filter(|p| !terminating(p) && revision_of(p) == current.name_any()).count() as i32),
        updated_replicas: Some(counted.iter().filter(|p| !terminating(p) && revision_of(p) == update.name_any()).count() as i32),
        current_revision: Some(current.name_any()),
        update_revision: Some(update.name_any()),
        collision_count: Some(collision.unwrap_or(0)),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    // A finished rolling update makes the update revision current (`completeRollingUpdate`).
    if rolling && status.updated_replicas == Some(status.replicas) && status.ready_replicas == Some(status.replicas) && status.replicas == replicas {
        status.current_revision = status.update_revision.clone();
        status.current_replicas = status.updated_replicas;
    }
    let old = set.status.clone().unwrap_or_default();
    if status != old {
        let mut new = (*set).clone();
        new.status = Some(status.clone());
        write_status(&ctx, &new).await?;
    }
    // History beyond the limit, keeping the current and update revisions and those pods use.
    let mut live: Vec<String> = owned.iter().map(|p| revision_of(p).to_string()).collect();
    live.extend([status.current_revision.clone().unwrap_or_default(), update.name_any()]);
    let live_hashes: Vec<String> = hist.old.iter().filter(|r| live.contains(&r.name_any())).map(history::revision_hash).collect();
    history::cleanup(&rev_api, &hist.old, spec.revision_history_limit.unwrap_or(10), &live_hashes).await?;
    if pass.min_ready > 0 && status.ready_replicas != status.available_replicas {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn write_status(ctx: &Context<State>, set: &StatefulSet) -> Result<(), Error> {
    let api: Api<StatefulSet> = Api::namespaced(ctx.writer.clone(), &set.namespace().unwrap_or_default());
    let body = serde_json::to_vec(set).map_err(|e| Error::Invalid(e.to_string()))?;
    match api.replace_status(&set.name_any(), &PostParams::default(), body).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Err(Error::Invalid("statefulset changed; retrying".into())),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    #[test]
    fn ordinals_are_parsed_strictly() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webx-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web-1", "web-1-2"), Some(2));
    }

    #[test]
    fn pods_get_identity_and_their_own_claims() {
        let claim = PersistentVolumeClaim { metadata: ObjectMeta { name: Some("www".into()), labels: Some([("tier".to_string(), "db".to_string())].into()), ..Default::default() }, ..Default::default() };
        let set = StatefulSet {
            metadata: ObjectMeta { name: Some("web".into()), namespace: Some("ns".into()), uid: Some("u".into()), ..Default::default() },
            spec: Some(StatefulSetSpec {
                service_name: Some("nginx".into()),
                selector: LabelSelector { match_labels: Some([("app".to_string(), "web".to_string())].into()), ..Default::default() },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some([("app".to_string(), "web".to_string())].into()), ..Default::default() }),
                    spec: Some(PodSpec { volumes: Some(vec![Volume { name: "www".into(), ..Default::default() }]), ..Default::default() }),
                },
                volume_claim_templates: Some(vec![claim]),
                ..Default::default()
            }),
            status: None,
        };
        let tmpl = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let p = new_pod(&set, &tmpl, 2, "web-abc");
        let l = p.metadata.labels.clone().unwrap_or_default();
        assert_eq!(p.name_any(), "web-2");
        assert_eq!((l[POD_NAME_LABEL].as_str(), l[POD_INDEX_LABEL].as_str(), l[HASH_LABEL].as_str(), l["app"].as_str()), ("web-2", "2", "web-abc", "web"));
        let spec = p.spec.clone().unwrap_or_default();
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("web-2"), Some("nginx")));
        let vols = spec.volumes.unwrap_or_default();
        assert_eq!(vols.len(), 1, "the template's volume of the same name is replaced: {vols:?}");
        assert_eq!(vols[0].persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()), Some("www-web-2"));
        let claims = claims_for(&set, 2);
        assert_eq!(claims[0].name_any(), "www-web-2");
        let cl = claims[0].metadata.labels.clone().unwrap_or_default();
        assert_eq!((cl["tier"].as_str(), cl["app"].as_str()), ("db", "web"));
    }
}
