//! The Deployment controller (upstream's `deployment` controller): one ReplicaSet per pod
//! template (`<deployment>-<pod-template-hash>`), RollingUpdate within maxSurge/maxUnavailable
//! and Recreate, proportional scaling during a rollout, revisions
//! (`deployment.kubernetes.io/revision`, `revision-history` when an old template comes back),
//! `revisionHistoryLimit`, pause, `progressDeadlineSeconds`, and the status and conditions
//! (`Available`, `Progressing`) that `kubectl rollout status` reads. Rollback is kubectl's own
//! (it copies an old ReplicaSet's template into the Deployment); restart is a template
//! annotation: both are just a new template here.
//!
//! Every step is decided from the cached state and written with the resourceVersion it was
//! decided on, so a stale decision fails (409) and is made again from the newer state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::Controller;
use kube::ResourceExt;
use serde_json::json;

use strata_client::events::EventType;
use crate::owners::OwnerIndex;
use crate::replicaset::{controller_of, controller_ref, labels_of, selects};
use crate::rollout;
use crate::{Clients, Context, Error};

pub const IDENTITY: &str = "deployment-controller";
pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Deployment annotations not copied to its ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

pub struct State {
    /// The ReplicaSets, by namespace and controller.
    replicasets: OwnerIndex<ReplicaSet>,
}

pub async fn run(clients: Clients) -> Result<(), Error> {
    let (replicasets, rs_stream) = OwnerIndex::watch(Api::<ReplicaSet>::all(clients.root.clone()));
    let ctx = Context::new(clients.clone(), IDENTITY, State { replicasets });
    Controller::new(Api::<Deployment>::all(clients.root.clone()), crate::watch_config())
        .owns_stream(rs_stream)
        .run(reconcile, error_policy, ctx)
        .for_each(crate::log_failures(IDENTITY))
        .await;
    Ok(())
}

fn error_policy(d: Arc<Deployment>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(deployment = %crate::key(d.as_ref()), error = %e, "deployment controller");
    Action::requeue(Duration::from_secs(2))
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).cloned()
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// A template without the pod-template-hash label (to compare a ReplicaSet's with the
/// Deployment's).
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    if t.metadata.as_ref().is_some_and(|m| m.labels.as_ref().is_some_and(|l| l.is_empty())) {
        if let Some(m) = t.metadata.as_mut() {
            m.labels = None;
        }
    }
    t
}

/// What one reconcile works with.
struct Sync<'a> {
    ctx: &'a Context<State>,
    d: Deployment,
    ns: String,
    rs_api: Api<ReplicaSet>,
    /// The ReplicaSets this Deployment controls (claimed this pass).
    all: Vec<ReplicaSet>,
    /// Progressing condition to set this pass (type, status, reason, message), if any.
    progress_note: Option<(String, String, String)>,
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = d.namespace().unwrap_or_default();
    let Some(spec) = d.spec.as_ref() else { return Ok(Action::await_change()) };
    if !crate::synced(ctx.state.replicasets.store()) {
        return Ok(crate::not_synced());
    }
    if ctx.refuses_selecting_all(d.as_ref(), "deployment", &spec.selector) {
        return Ok(Action::await_change());
    }
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.writer.clone(), &ns);
    let mut s = Sync { ctx: &ctx, d: (*d).clone(), ns, rs_api, all: Vec::new(), progress_note: None };
    s.claim().await?;
    let paused = spec.paused.unwrap_or(false);
    let action = if paused || s.is_scaling_event() {
        s.sync(paused).await?
    } else if spec.strategy.as_ref().and_then(|st| st.type_.as_deref()) == Some("Recreate") {
        s.recreate().await?
    } else {
        s.rolling().await?
    };
    Ok(action)
}

impl Sync<'_> {
    fn spec(&self) -> &k8s_openapi::api::apps::v1::DeploymentSpec {
        static EMPTY: std::sync::OnceLock<k8s_openapi::api::apps::v1::DeploymentSpec> = std::sync::OnceLock::new();
        self.d.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }

    fn desired(&self) -> i32 {
        self.spec().replicas.unwrap_or(1)
    }

    fn uid(&self) -> String {
        self.d.metadata.uid.clone().unwrap_or_default()
    }

    fn fenceposts(&self) -> (i32, i32) {
        let ru = self.spec().strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
        if self.spec().strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
            return (0, 0);
        }
        rollout::fenceposts(ru.and_then(|r| r.max_surge.as_ref()), ru.and_then(|r| r.max_unavailable.as_ref()), self.desired()).unwrap_or((0, 1))
    }

    /// Adopt matching orphan ReplicaSets, release owned ones that stopped matching.
    async fn claim(&mut self) -> Result<(), Error> {
        let uid = self.uid();
        let selector = self.spec().selector.clone();
        // This Deployment's ReplicaSets and the namespace's orphans (others' are never claimed).
        let (mine, orphans) = self.ctx.state.replicasets.owned_and_orphans(&self.ns, &uid);
        for rs in mine.into_iter().chain(orphans) {
            let matches = selects(&selector, labels_of(&rs.metadata));
            match controller_of(&rs.metadata) {
                Some(c) if c.uid == uid => {
                    if matches {
                        self.all.push((*rs).clone());
                    } else {
                        let keep: Vec<&OwnerReference> = rs.metadata.owner_references.iter().flatten().filter(|o| o.uid != uid).collect();
                        let patch = json!({ "metadata": { "ownerReferences": keep, "resourceVersion": rs.metadata.resource_version } });
                        ok_unless_gone(self.rs_api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)?;
                    }
                }
                None if matches && rs.metadata.deletion_timestamp.is_none() => {
                    let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(controller_ref(&self.d));
                    let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": rs.metadata.resource_version } });
                    if let Some(r) = ok_unless_gone(self.rs_api.patch(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)? {
                        self.all.push(r);
                    }
                }
                _ => {}
            }
        }
        // Oldest first (creation time, then name), as upstream sorts.
        self.all.sort_by(|a, b| a.metadata.creation_timestamp.as_ref().map(|t| t.0).cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0)).then(a.name_any().cmp(&b.name_any())));
        Ok(())
    }

    fn template(&self) -> PodTemplateSpec {
        self.spec().template.clone()
    }

    /// The ReplicaSet whose template is the Deployment's (the oldest if several).
    fn new_rs(&self) -> Option<ReplicaSet> {
        let want = without_hash(&self.template());
        self.all.iter().find(|rs| rs.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| without_hash(t) == want)).cloned()
    }

    fn old_rss(&self, new: Option<&ReplicaSet>) -> Vec<ReplicaSet> {
        let new_uid = new.and_then(|n| n.metadata.uid.clone());
        self.all.iter().filter(|rs| rs.metadata.uid != new_uid || new_uid.is_none()).cloned().collect()
    }

    fn is_scaling_event(&self) -> bool {
        let desired = self.desired().to_string();
        self.all.iter().filter(|rs| replicas(rs) > 0).any(|rs| annotation(&rs.metadata, DESIRED_REPLICAS).is_some_and(|v| v != desired))
    }

    /// The annotations a ReplicaSet of this Deployment carries for `revision`; true if they
    /// change `rs`. The desired/max replicas annotations are written only with a size (`sized`:
    /// at creation and by [`Sync::scale_rs`], as upstream's `SetReplicasAnnotations`): they
    /// record the Deployment size a ReplicaSet's replicas were set for, which proportional
    /// scaling reads, so the new ReplicaSet's revision update must not move them ahead.
    fn set_rs_annotations(&self, rs: &mut ReplicaSet, new_revision: Option<i64>, sized: bool) -> bool {
        let before = rs.metadata.annotations.clone();
        let a = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
        for (k, v) in self.d.metadata.annotations.iter().flatten() {
            if !NOT_COPIED.contains(&k.as_str()) {
                a.insert(k.clone(), v.clone());
            }
        }
        if let Some(new_revision) = new_revision {
            let old: i64 = a.get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0);
            if old < new_revision {
                if old > 0 {
                    let hist = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
                    let hist = if hist.is_empty() { old.to_string() } else { format!("{hist},{old}") };
                    a.insert(REVISION_HISTORY.into(), hist);
                }
                a.insert(REVISION.into(), new_revision.to_string());
            }
        }
        if sized {
            let (surge, _) = self.fenceposts();
            a.insert(DESIRED_REPLICAS.into(), self.desired().to_string());
            a.insert(MAX_REPLICAS.into(), (self.desired() + surge).to_string());
        }
        rs.metadata.annotations != before
    }

    /// The new ReplicaSet, created when `create` and missing; its revision brought up to
    /// one above every old one.
    async fn get_new_rs(&mut self, create: bool) -> Result<Option<ReplicaSet>, Error> {
        let existing = self.new_rs();
        let old = self.old_rss(existing.as_ref());
        let max_old = old.iter().map(revision).max().unwrap_or(0);
        if let Some(rs) = existing {
            let new_revision = if revision(&rs) <= max_old { max_old + 1 } else { revision(&rs) };
            let mut updated = rs.clone();
            let changed = self.set_rs_annotations(&mut updated, Some(new_revision), false);
            let min_ready = self.spec().min_ready_seconds;
            let mr_changed = updated.spec.as_ref().and_then(|s| s.min_ready_seconds) != min_ready;
            if mr_changed {
                if let Some(s) = updated.spec.as_mut() {
                    s.min_ready_seconds = min_ready;
                }
            }
            let rs = if changed || mr_changed {
                match self.rs_api.replace(&rs.name_any(), &PostParams::default(), &updated).await {
                    Ok(r) => r,
                    Err(kube::Error::Api(e)) if e.code == 409 => return Err(Error::Invalid(format!("replica set {} changed; retrying", rs.name_any()))),
                    Err(e) => return Err(e.into()),
                }
            } else {
                rs
            };
            self.replace_in_all(&rs);
            self.set_deployment_revision(revision(&rs)).await?;
            if !self.has_progressing() {
                self.progress_note = Some(("True".into(), "FoundNewReplicaSet".into(), format!("Found new replica set \"{}\"", rs.name_any())));
            }
            return Ok(Some(rs));
        }
        if !create {
            return Ok(None);
        }
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let template = self.template();
        let hash = rollout::template_hash(&serde_json::to_string(&template).map_err(|e| Error::Invalid(e.to_string()))?, collision);
        let mut t = template.clone();
        t.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let mut selector = self.spec().selector.clone();
        selector.match_labels.get_or_insert_with(BTreeMap::new).insert(HASH_LABEL.into(), hash.clone());
        let labels = t.metadata.as_ref().and_then(|m| m.labels.clone());
        let name = format!("{}-{hash}", self.d.name_any());
        // Start at the size the surge allows now.
        let (surge, _) = self.fenceposts();
        let all_replicas: i32 = self.all.iter().map(replicas).sum();
        let is_recreate = self.spec().strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        let size = if is_recreate { self.desired() } else { rollout::new_rs_replicas(self.desired(), surge, all_replicas, 0) };
        let mut rs = ReplicaSet {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(self.ns.clone()), labels, owner_references: Some(vec![controller_ref(&self.d)]), ..Default::default() },
            spec: Some(ReplicaSetSpec { replicas: Some(size), min_ready_seconds: self.spec().min_ready_seconds, selector, template: Some(t) }),
            status: None,
        };
        self.set_rs_annotations(&mut rs, Some(max_old + 1), true);
        match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                self.ctx.recorder.publish(&self.d, EventType::Normal, "ScalingReplicaSet", format!("Scaled up replica set {name} from 0 to {size}"));
                self.all.push(created.clone());
                self.set_deployment_revision(max_old + 1).await?;
                self.progress_note = Some(("True".into(), "NewReplicaSetCreated".into(), format!("Created new replica set \"{name}\"")));
                Ok(Some(created))
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Ours from a pass whose watch event has not arrived yet, or a hash collision.
                let existing = self.rs_api.get_opt(&name).await?;
                if let Some(ex) = existing {
                    let ours = controller_of(&ex.metadata).is_some_and(|c| c.uid == self.uid());
                    let same = ex.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| without_hash(t) == without_hash(&template));
                    if ours && same {
                        return Err(Error::Invalid(format!("replica set {name} not in the cache yet")));
                    }
                }
                let mut st = self.d.status.clone().unwrap_or_default();
                st.collision_count = Some(collision.unwrap_or(0) + 1);
                self.write_status(st).await?;
                Err(Error::Invalid(format!("hash collision for replica set {name}; collisionCount raised")))
            }
            Err(e) => {
                let message = format!("Failed to create new replica set \"{name}\": {}", crate::api_message(&e));
                self.ctx.recorder.publish(&self.d, EventType::Warning, "FailedCreate", message.clone());
                let mut st = self.d.status.clone().unwrap_or_default();
                set_condition(&mut st, "ReplicaFailure", "True", "FailedRSCreate", &message);
                self.write_status(st).await?;
                Err(e.into())
            }
        }
    }

    fn has_progressing(&self) -> bool {
        self.d.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Progressing"))
    }

    fn replace_in_all(&mut self, rs: &ReplicaSet) {
        if let Some(slot) = self.all.iter_mut().find(|r| r.metadata.uid == rs.metadata.uid) {
            *slot = rs.clone();
        }
    }

    async fn set_deployment_revision(&mut self, rev: i64) -> Result<(), Error> {
        if annotation(&self.d.metadata, REVISION).as_deref() == Some(rev.to_string().as_str()) {
            return Ok(());
        }
        let mut d = self.d.clone();
        d.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(REVISION.into(), rev.to_string());
        let api: Api<Deployment> = Api::namespaced(self.ctx.writer.clone(), &self.ns);
        match api.replace(&d.name_any(), &PostParams::default(), &d).await {
            Ok(new) => {
                self.d = new;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Invalid("deployment changed; retrying".into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Set a ReplicaSet's size (and its desired/max annotations); true if it changed.
    async fn scale_rs(&mut self, rs: &ReplicaSet, size: i32) -> Result<bool, Error> {
        let mut new = rs.clone();
        let annotations_changed = self.set_rs_annotations(&mut new, None, true);
        let from = replicas(rs);
        if from == size && !annotations_changed {
            return Ok(false);
        }
        if let Some(s) = new.spec.as_mut() {
            s.replicas = Some(size);
        }
        let updated = match self.rs_api.replace(&rs.name_any(), &PostParams::default(), &new).await {
            Ok(r) => r,
            Err(kube::Error::Api(e)) if e.code == 409 => return Err(Error::Invalid(format!("replica set {} changed; retrying", rs.name_any()))),
            Err(e) => return Err(e.into()),
        };
        if from != size {
            let dir = if size > from { "up" } else { "down" };
            self.ctx.recorder.publish(&self.d, EventType::Normal, "ScalingReplicaSet", format!("Scaled {dir} replica set {} from {from} to {size}", rs.name_any()));
        }
        self.replace_in_all(&updated);
        Ok(from != size)
    }

    /// Paused or scaled: size the ReplicaSets, no new template rolled out.
    async fn sync(&mut self, paused: bool) -> Result<Action, Error> {
        let new = self.get_new_rs(false).await?;
        self.scale(new.as_ref()).await?;
        if paused {
            self.cleanup(new.as_ref()).await?;
        }
        self.sync_status(new.as_ref(), paused).await
    }

    /// Upstream's `scale`: one active ReplicaSet takes the whole size; otherwise the
    /// difference is spread over them in proportion to their sizes.
    async fn scale(&mut self, new: Option<&ReplicaSet>) -> Result<(), Error> {
        let desired = self.desired();
        let active: Vec<ReplicaSet> = self.all.iter().filter(|r| replicas(r) > 0).cloned().collect();
        let single = match active.len() {
            0 => new.cloned().or_else(|| self.all.iter().max_by_key(|r| revision(r)).cloned()),
            1 => Some(active[0].clone()),
            _ => None,
        };
        if let Some(rs) = single {
            self.scale_rs(&rs, desired).await?;
            return Ok(());
        }
        if let Some(n) = new {
            let saturated = replicas(n) == desired && annotation(&n.metadata, DESIRED_REPLICAS).as_deref() == Some(desired.to_string().as_str()) && available(n) == desired;
            if saturated {
                for rs in self.old_rss(Some(n)) {
                    if replicas(&rs) > 0 {
                        self.scale_rs(&rs, 0).await?;
                    }
                }
                return Ok(());
            }
        }
        let (surge, _) = self.fenceposts();
        let allowed = if desired > 0 { desired + surge } else { 0 };
        let current: i32 = self.all.iter().map(replicas).sum();
        let to_add = allowed - current;
        if to_add == 0 {
            return Ok(());
        }
        let mut rss: Vec<ReplicaSet> = active.clone();
        // Larger first; newer first when growing, older first when shrinking.
        rss.sort_by(|a, b| {
            let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let by_time = if to_add > 0 { t(b).cmp(&t(a)) } else { t(a).cmp(&t(b)) };
            replicas(b).cmp(&replicas(a)).then(by_time)
        });
        let annotated_total = self.d.status.as_ref().map(|s| s.replicas.unwrap_or(0)).unwrap_or(0);
        let mut added = 0;
        let mut sizes: Vec<i32> = Vec::new();
        for rs in &rss {
            let max: i32 = annotation(&rs.metadata, MAX_REPLICAS).and_then(|v| v.parse().ok()).unwrap_or(annotated_total);
            let proportion = if replicas(rs) == 0 || to_add == added {
                0
            } else if desired == 0 {
                -replicas(rs)
            } else if max <= 0 {
                0
            } else {
                let new_size = (f64::from(replicas(rs)) * f64::from(desired + surge) / f64::from(max)).round() as i32;
                let fraction = new_size - replicas(rs);
                let left = to_add - added;
                if to_add > 0 { fraction.min(left) } else { fraction.max(left) }
            };
            added += proportion;
            sizes.push(replicas(rs) + proportion);
        }
        if let Some(first) = sizes.first_mut() {
            *first = (*first + to_add - added).max(0);
        }
        for (rs, size) in rss.iter().zip(sizes) {
            self.scale_rs(rs, size.max(0)).await?;
        }
        Ok(())
    }

    async fn rolling(&mut self) -> Result<Action, Error> {
        let Some(new) = self.get_new_rs(true).await? else { return self.sync_status(None, false).await };
        let desired = self.desired();
        let (surge, unavailable) = self.fenceposts();
        // Grow (or trim) the new ReplicaSet.
        let all_replicas: i32 = self.all.iter().map(replicas).sum();
        let target = if replicas(&new) > desired { desired } else { rollout::new_rs_replicas(desired, surge, all_replicas, replicas(&new)) };
        if target != replicas(&new) {
            self.scale_rs(&new, target).await?;
            return self.sync_status(Some(&new), false).await;
        }
        // Shrink the old ones as far as availability allows.
        let old = self.old_rss(Some(&new));
        let old_total: i32 = old.iter().map(replicas).sum();
        if old_total > 0 {
            let all_total: i32 = self.all.iter().map(replicas).sum();
            let mut budget = rollout::max_scaled_down(desired, unavailable, all_total, replicas(&new), available(&new));
            let mut scaled = false;
            if budget > 0 {
                // First the old pods that are not available anyway.
                for rs in &old {
                    if budget <= 0 {
                        break;
                    }
                    let unhealthy = replicas(rs) - available(rs);
                    if replicas(rs) == 0 || unhealthy <= 0 {
                        continue;
                    }
                    let down = unhealthy.min(budget);
                    budget -= down;
                    scaled |= self.scale_rs(rs, replicas(rs) - down).await?;
                }
                // Then available ones, keeping the minimum available.
                let all_available: i32 = self.all.iter().map(available).sum();
                let mut more = rollout::available_scale_down(desired, unavailable, all_available);
                let old = self.old_rss(Some(&new));
                for rs in &old {
                    if more <= 0 {
                        break;
                    }
                    if replicas(rs) == 0 {
                        continue;
                    }
                    let down = replicas(rs).min(more);
                    more -= down;
                    scaled |= self.scale_rs(rs, replicas(rs) - down).await?;
                }
            }
            if scaled {
                return self.sync_status(Some(&new), false).await;
            }
        }
        let new = self.all.iter().find(|r| r.metadata.uid == new.metadata.uid).cloned().unwrap_or(new);
        if self.complete(&new) {
            self.cleanup(Some(&new)).await?;
        }
        self.sync_status(Some(&new), false).await
    }

    async fn recreate(&mut self) -> Result<Action, Error> {
        let new = self.get_new_rs(false).await?;
        let mut scaled = false;
        for rs in self.old_rss(new.as_ref()) {
            if replicas(&rs) > 0 {
                scaled |= self.scale_rs(&rs, 0).await?;
            }
        }
        if scaled {
            return self.sync_status(new.as_ref(), false).await;
        }
        // Wait until the old pods are gone.
        let old_running = self.old_rss(new.as_ref()).iter().any(|r| r.status.as_ref().is_some_and(|s| s.replicas > 0));
        if old_running {
            return self.sync_status(new.as_ref(), false).await;
        }
        let new = match new {
            Some(n) => n,
            None => match self.get_new_rs(true).await? {
                Some(n) => n,
                None => return self.sync_status(None, false).await,
            },
        };
        let desired = self.desired();
        if replicas(&new) != desired {
            self.scale_rs(&new, desired).await?;
        }
        let new = self.all.iter().find(|r| r.metadata.uid == new.metadata.uid).cloned().unwrap_or(new);
        if self.complete(&new) {
            self.cleanup(Some(&new)).await?;
        }
        self.sync_status(Some(&new), false).await
    }

    /// Every replica updated and available, no old pod left (upstream's `DeploymentComplete`).
    fn complete(&self, new: &ReplicaSet) -> bool {
        let desired = self.desired();
        let st = self.status_for(Some(new));
        st.updated_replicas.unwrap_or(0) == desired && st.replicas.unwrap_or(0) == desired && st.available_replicas.unwrap_or(0) == desired
    }

    /// Delete old, empty ReplicaSets beyond `revisionHistoryLimit` (oldest revision first).
    async fn cleanup(&mut self, new: Option<&ReplicaSet>) -> Result<(), Error> {
        let limit = self.spec().revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut old: Vec<ReplicaSet> = self
            .old_rss(new)
            .into_iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .filter(|r| replicas(r) == 0 && r.status.as_ref().is_none_or(|s| s.replicas == 0) && r.status.as_ref().and_then(|s| s.observed_generation) >= r.metadata.generation)
            .collect();
        if old.len() <= limit {
            return Ok(());
        }
        old.sort_by_key(revision);
        let n = old.len() - limit;
        for rs in old.iter().take(n) {
            let dp = kube::api::DeleteParams { preconditions: Some(kube::api::Preconditions { uid: rs.metadata.uid.clone(), resource_version: rs.metadata.resource_version.clone() }), ..Default::default() };
            match self.rs_api.delete(&rs.name_any(), &dp).await {
                Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404 | 409, .. })) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn status_for(&self, new: Option<&ReplicaSet>) -> DeploymentStatus {
        let sum = |f: &dyn Fn(&ReplicaSet) -> i32| self.all.iter().map(f).sum::<i32>();
        let total = sum(&|r| r.status.as_ref().map(|s| s.replicas).unwrap_or(0));
        let ready = sum(&|r| r.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0));
        let avail = sum(&available);
        let updated = new.and_then(|n| self.all.iter().find(|r| r.metadata.uid == n.metadata.uid).or(Some(n))).and_then(|n| n.status.as_ref()).map(|s| s.replicas).unwrap_or(0);
        let old = self.d.status.clone().unwrap_or_default();
        DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(total),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(avail),
            unavailable_replicas: Some((self.desired() - avail).max(0)),
            collision_count: old.collision_count,
            conditions: old.conditions,
        }
    }

    /// Work out status and conditions and write them; requeue for the progress deadline.
    async fn sync_status(&mut self, new: Option<&ReplicaSet>, paused: bool) -> Result<Action, Error> {
        let mut st = self.status_for(new);
        let desired = self.desired();
        let (_, unavailable) = self.fenceposts();
        let avail = st.available_replicas.unwrap_or(0);
        if avail >= desired - unavailable {
            set_condition(&mut st, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.");
        } else {
            set_condition(&mut st, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.");
        }
        let mut requeue = None;
        let deadline = self.spec().progress_deadline_seconds;
        let old_status = self.d.status.clone().unwrap_or_default();
        let cond = |s: &DeploymentStatus| s.conditions.iter().flatten().find(|c| c.type_ == "Progressing").cloned();
        if paused {
            if cond(&st).is_none_or(|c| c.reason.as_deref() != Some("DeploymentPaused")) {
                set_condition(&mut st, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused");
            }
        } else if let Some(deadline) = deadline {
            let new_name = new.map(|n| n.name_any()).unwrap_or_default();
            if cond(&st).is_some_and(|c| c.reason.as_deref() == Some("DeploymentPaused")) {
                set_condition(&mut st, "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed");
            }
            if let Some((status, reason, message)) = self.progress_note.take() {
                set_condition(&mut st, "Progressing", &status, &reason, &message);
            }
            let complete = new.is_some_and(|n| {
                st.updated_replicas.unwrap_or(0) == desired && st.replicas.unwrap_or(0) == desired && avail == desired && n.metadata.uid.is_some()
            });
            let progressing = st.updated_replicas.unwrap_or(0) > old_status.updated_replicas.unwrap_or(0)
                || st.replicas.unwrap_or(0) < old_status.replicas.unwrap_or(0)
                || st.ready_replicas.unwrap_or(0) > old_status.ready_replicas.unwrap_or(0)
                || avail > old_status.available_replicas.unwrap_or(0);
            if complete {
                set_condition(&mut st, "Progressing", "True", "NewReplicaSetAvailable", &format!("ReplicaSet \"{new_name}\" has successfully progressed."));
            } else if progressing {
                set_condition(&mut st, "Progressing", "True", "ReplicaSetUpdated", &format!("ReplicaSet \"{new_name}\" is progressing."));
            } else if let Some(c) = cond(&st) {
                let since = c.last_update_time.as_ref().map(|t| t.0).unwrap_or_else(chrono::Utc::now);
                let until = since + chrono::Duration::seconds(i64::from(deadline));
                let now = chrono::Utc::now();
                if c.reason.as_deref() != Some("NewReplicaSetAvailable") && c.reason.as_deref() != Some("ProgressDeadlineExceeded") {
                    if now >= until {
                        set_condition(&mut st, "Progressing", "False", "ProgressDeadlineExceeded", &format!("ReplicaSet \"{new_name}\" has timed out progressing."));
                        self.ctx.recorder.publish(&self.d, EventType::Warning, "ProgressDeadlineExceeded", format!("Deployment \"{}\" has timed out progressing.", self.d.name_any()));
                    } else {
                        requeue = Some((until - now).to_std().unwrap_or(Duration::from_secs(1)) + Duration::from_millis(100));
                    }
                }
            }
        }
        // A ReplicaSet's creation failure shows on the Deployment too.
        let failure = self.all.iter().filter_map(|r| r.status.as_ref()).flat_map(|s| s.conditions.iter().flatten()).find(|c| c.type_ == "ReplicaFailure" && c.status == "True").cloned();
        match failure {
            Some(f) => set_condition(&mut st, "ReplicaFailure", "True", f.reason.as_deref().unwrap_or("FailedCreate"), f.message.as_deref().unwrap_or("")),
            None => {
                if let Some(c) = st.conditions.as_mut() {
                    c.retain(|c| !(c.type_ == "ReplicaFailure" && c.reason.as_deref() == Some("FailedCreate")));
                }
            }
        }
        if !same_status(&old_status, &st) {
            self.write_status(st).await?;
        }
        Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(300))))
    }

    async fn write_status(&mut self, st: DeploymentStatus) -> Result<(), Error> {
        let mut d = self.d.clone();
        d.status = Some(st);
        let api: Api<Deployment> = Api::namespaced(self.ctx.writer.clone(), &self.ns);
        let body = serde_json::to_vec(&d).map_err(|e| Error::Invalid(e.to_string()))?;
        match api.replace_status(&d.name_any(), &PostParams::default(), body).await {
            Ok(new) => {
                self.d = new;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::Invalid("deployment changed; retrying".into())),
            Err(e) => Err(e.into()),
        }
    }
}

fn same_status(a: &DeploymentStatus, b: &DeploymentStatus) -> bool {
    a == b
}

/// Upstream's `SetDeploymentCondition`: a condition of the same status and reason is left
/// alone but for Progressing's lastUpdateTime; a changed status moves lastTransitionTime.
fn set_condition(st: &mut DeploymentStatus, type_: &str, status: &str, reason: &str, message: &str) {
    let now = Time(chrono::Utc::now());
    let conds = st.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status == status && c.reason.as_deref() == Some(reason) {
            if type_ == "Progressing" && reason == "ReplicaSetUpdated" {
                c.last_update_time = Some(now);
                c.message = Some(message.into());
            }
            return;
        }
        let transition = if c.status == status { c.last_transition_time.clone() } else { Some(now.clone()) };
        *c = DeploymentCondition { type_: type_.into(), status: status.into(), reason: Some(reason.into()), message: Some(message.into()), last_update_time: Some(now), last_transition_time: transition };
        return;
    }
    conds.push(DeploymentCondition { type_: type_.into(), status: status.into(), reason: Some(reason.into()), message: Some(message.into()), last_update_time: Some(now.clone()), last_transition_time: Some(now) });
}

fn ok_unless_gone<T>(r: Result<T, kube::Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}
