//! The PersistentVolume binder (upstream's `persistentvolume` controller, `persistent-volume-binder`
//! identity) with a local provisioner. A claim binds to an available volume that fits (same
//! storageClassName, volumeMode, every access mode asked for, capacity at least the request;
//! the smallest such, a volume pre-bound to the claim first): the volume's `claimRef` is set,
//! then the claim's `volumeName`, then both get phase Bound (the claim with the volume's capacity
//! and access modes), each write carrying the resourceVersion it was decided on. A claim whose
//! class has the provisioner `strata.dev/local` and finds no volume gets one made for it:
//! `pvc-<claim uid>`, a hostPath `DirectoryOrCreate` under the class's `parameters.path`
//! (the server's data dir for the built-in `strata-local` class), pre-bound to the claim, with
//! the class's reclaim policy. A volume whose claim is gone (a live read says so) is Released, and
//! deleted when its reclaim policy is Delete (the directory on the node is left in place).
//!
//! A claim of a WaitForFirstConsumer class is not bound here until a pod needs it (upstream's
//! delayed binding): the scheduler picks a volume on the pod's node and writes its claimRef (the
//! claim then binds to that pre-bound volume only), or marks the claim with
//! `volume.kubernetes.io/selected-node` for provisioning — the local provisioner then makes the
//! volume for that node (a required node affinity on its `kubernetes.io/hostname`). Until then
//! the claim waits, with upstream's `WaitForFirstConsumer` event.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimStatus, PersistentVolumeSpec, PersistentVolumeStatus,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use strata_client::lean;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt};
use kube::ResourceExt;

use crate::{Clients, Context, Error};
use strata_client::events::EventType;
use strata_scheduler::plugins::volume::{claim_ref, class_of_claim, fits, is_for, SELECTED_NODE};

pub const IDENTITY: &str = "persistent-volume-binder";
pub const LOCAL_PROVISIONER: &str = "strata.dev/local";
const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

pub struct State {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
}

pub async fn run(clients: Clients) -> Result<(), Error> {
    let root = clients.root.clone();
    let (claims, cw) = reflector::store::<PersistentVolumeClaim>();
    let (volumes, vw) = reflector::store::<PersistentVolume>();
    let (classes, sw) = reflector::store::<StorageClass>();
    let claim_stream = reflector::reflector(cw, lean::watcher(Api::<PersistentVolumeClaim>::all(root.clone()), crate::watch_config())).default_backoff().touched_objects();
    let volume_stream = reflector::reflector(vw, lean::watcher(Api::<PersistentVolume>::all(root.clone()), crate::watch_config())).default_backoff().touched_objects();
    let class_stream = reflector::reflector(sw, lean::watcher(Api::<StorageClass>::all(root.clone()), crate::watch_config())).default_backoff().touched_objects();
    let ctx = Context::new(clients.clone(), IDENTITY, State { claims: claims.clone(), volumes: volumes.clone(), classes });
    // Claims: reconciled on their own changes and on any volume's (a volume freed or made).
    let claim_store = claims.clone();
    let claims_loop = Controller::for_stream(claim_stream, claims)
        .watches_stream(volume_stream, move |_: PersistentVolume| claim_store.state().iter().map(|c| ObjectRef::from_obj(c.as_ref())).collect::<Vec<_>>())
        .run(reconcile_claim, error_policy, ctx.clone())
        .for_each(crate::log_failures(IDENTITY));
    // Volumes: reconciled on their own changes and their claims' (a second claim watch: the
    // first feeds the claims' loop, which never sees a claim once it is gone).
    let claim_events = lean::watcher(Api::<PersistentVolumeClaim>::all(root.clone()), crate::watch_config()).default_backoff().touched_objects();
    let volumes_loop = Controller::new(Api::<PersistentVolume>::all(root.clone()), crate::watch_config())
        .watches_stream(claim_events, |c: PersistentVolumeClaim| c.spec.and_then(|s| s.volume_name).filter(|n| !n.is_empty()).map(|n| ObjectRef::<PersistentVolume>::new(&n)))
        .run(reconcile_volume, error_policy, ctx.clone())
        .for_each(crate::log_failures(IDENTITY));
    let classes_loop = class_stream.for_each(crate::log_watch_failures(IDENTITY, "StorageClass"));
    futures_util::future::join3(claims_loop, volumes_loop, classes_loop).await;
    Ok(())
}

fn error_policy<K: kube::Resource<DynamicType = ()>>(obj: Arc<K>, e: &Error, _: Arc<Context<State>>) -> Action {
    tracing::warn!(object = %obj.meta().name.clone().unwrap_or_default(), error = %e, "volume binder");
    Action::requeue(Duration::from_secs(2))
}

/// Bytes of a quantity (0 when unparseable).
fn bytes(q: Option<&Quantity>) -> i128 {
    q.and_then(|q| strata_client::quantity::parse_milli(&q.0)).unwrap_or(0)
}

/// The volume for an unbound claim: one pre-bound to it, else the smallest free one that fits.
pub fn find_volume(volumes: &[Arc<PersistentVolume>], c: &PersistentVolumeClaim) -> Option<Arc<PersistentVolume>> {
    let live = volumes.iter().filter(|v| v.metadata.deletion_timestamp.is_none());
    if let Some(v) = live.clone().find(|v| is_for(v, c) && fits(v, c)) {
        return Some(v.clone());
    }
    live.filter(|v| v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()) && fits(v, c))
        .min_by_key(|v| bytes(v.spec.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage"))))
        .cloned()
}

fn conflict(e: kube::Error, what: &str) -> Error {
    match e {
        kube::Error::Api(ref r) if r.code == 409 || r.code == 404 => Error::Invalid(format!("{what} changed; retrying")),
        e => e.into(),
    }
}

async fn reconcile_claim(c: Arc<PersistentVolumeClaim>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    let st = &ctx.state;
    if !crate::synced(&st.claims) || !crate::synced(&st.volumes) || !crate::synced(&st.classes) {
        return Ok(crate::not_synced());
    }
    if c.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = c.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.writer.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(ctx.writer.clone());
    let volumes = st.volumes.state();
    let volume_name = c.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|n| !n.is_empty());
    let class_name = class_of_claim(&c);
    let class = st.classes.state().into_iter().find(|k| !class_name.is_empty() && k.metadata.name.as_deref() == Some(class_name.as_str()));
    // Delayed binding: only the volume the scheduler chose (pre-bound to the claim), or one made
    // for the node it selected.
    let waits = class.as_ref().is_some_and(|k| k.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
    let selected = c.metadata.annotations.as_ref().and_then(|a| a.get(SELECTED_NODE)).cloned();
    let volume = match &volume_name {
        Some(n) => volumes.iter().find(|v| v.metadata.name.as_deref() == Some(n.as_str())).cloned(),
        None if waits => volumes.iter().find(|v| v.metadata.deletion_timestamp.is_none() && is_for(v, &c) && fits(v, &c)).cloned(),
        None => find_volume(&volumes, &c),
    };
    let Some(volume) = volume else {
        if volume_name.is_some() {
            // Bound to a volume that no longer exists.
            return set_claim_phase(&ctx, &claims, &c, None).await;
        }
        if waits && selected.is_none() {
            ctx.recorder.publish(c.as_ref(), EventType::Normal, "WaitForFirstConsumer", "waiting for first consumer to be created before binding");
            return Ok(Action::await_change());
        }
        match class {
            Some(k) if k.provisioner == LOCAL_PROVISIONER => provision(&ctx, &pvs, &c, &k, selected.as_deref()).await?,
            Some(k) => ctx.recorder.publish(c.as_ref(), EventType::Normal, "ExternalProvisioning", format!("Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator.", k.provisioner)),
            None if class_name.is_empty() => ctx.recorder.publish(c.as_ref(), EventType::Normal, "FailedBinding", "no persistent volumes available for this claim and no storage class is set"),
            None => ctx.recorder.publish(c.as_ref(), EventType::Warning, "ProvisioningFailed", format!("storageclass.storage.k8s.io \"{class_name}\" not found")),
        }
        return Ok(Action::requeue(Duration::from_secs(15)));
    };
    // 1. The volume points at the claim.
    let vname = volume.name_any();
    if !is_for(&volume, &c) || volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.as_ref()).is_none_or(|u| u.is_empty()) {
        if volume.spec.as_ref().is_some_and(|s| s.claim_ref.is_some()) && !is_for(&volume, &c) {
            // Its volumeName names a volume bound elsewhere: leave it (upstream reports it).
            ctx.recorder.publish(c.as_ref(), EventType::Warning, "FailedBinding", format!("volume \"{vname}\" already bound to a different claim."));
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
        let mut v = (*volume).clone();
        if let Some(s) = v.spec.as_mut() {
            s.claim_ref = Some(claim_ref(&c));
        }
        v.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        pvs.replace(&vname, &PostParams::default(), &v).await.map_err(|e| conflict(e, "volume"))?;
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    // 2. The volume is Bound.
    if volume.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
        let mut v = (*volume).clone();
        v.status = Some(PersistentVolumeStatus { phase: Some("Bound".into()), last_phase_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(chrono::Utc::now())), ..Default::default() });
        let body = serde_json::to_vec(&v).map_err(|e| Error::Invalid(e.to_string()))?;
        pvs.replace_status(&vname, &PostParams::default(), body).await.map_err(|e| conflict(e, "volume"))?;
    }
    // 3. The claim names the volume.
    if volume_name.as_deref() != Some(vname.as_str()) || c.metadata.annotations.as_ref().and_then(|a| a.get(BIND_COMPLETED)).is_none() {
        let mut new = (*c).clone();
        if let Some(s) = new.spec.as_mut() {
            s.volume_name = Some(vname.clone());
        }
        let a = new.metadata.annotations.get_or_insert_with(BTreeMap::new);
        a.insert(BIND_COMPLETED.into(), "yes".into());
        if volume_name.is_none() {
            a.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        }
        claims.replace(&c.name_any(), &PostParams::default(), &new).await.map_err(|e| conflict(e, "claim"))?;
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    // 4. The claim is Bound, with the volume's size and modes.
    set_claim_phase(&ctx, &claims, &c, Some(&volume)).await
}

async fn set_claim_phase(ctx: &Context<State>, claims: &Api<PersistentVolumeClaim>, c: &PersistentVolumeClaim, volume: Option<&PersistentVolume>) -> Result<Action, Error> {
    let want = match volume {
        Some(v) => PersistentVolumeClaimStatus {
            phase: Some("Bound".into()),
            access_modes: v.spec.as_ref().and_then(|s| s.access_modes.clone()),
            capacity: v.spec.as_ref().and_then(|s| s.capacity.clone()),
            ..c.status.clone().unwrap_or_default()
        },
        None => PersistentVolumeClaimStatus { phase: Some("Lost".into()), ..c.status.clone().unwrap_or_default() },
    };
    let old = c.status.clone().unwrap_or_default();
    if (old.phase.as_ref(), old.capacity.as_ref(), old.access_modes.as_ref()) != (want.phase.as_ref(), want.capacity.as_ref(), want.access_modes.as_ref()) {
        if volume.is_none() {
            ctx.recorder.publish(c, EventType::Warning, "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!");
        }
        let mut new = c.clone();
        new.status = Some(want);
        let body = serde_json::to_vec(&new).map_err(|e| Error::Invalid(e.to_string()))?;
        claims.replace_status(&c.name_any(), &PostParams::default(), body).await.map_err(|e| conflict(e, "claim"))?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Make a hostPath volume for the claim under the class's `parameters.path`, pre-bound to it;
/// for a claim the scheduler selected a node for, that node's (required node affinity on its
/// `kubernetes.io/hostname` label, its name if it has none); otherwise on the nodes the class's
/// `allowedTopologies` name.
async fn provision(ctx: &Context<State>, pvs: &Api<PersistentVolume>, c: &PersistentVolumeClaim, class: &StorageClass, node: Option<&str>) -> Result<(), Error> {
    let uid = c.metadata.uid.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let Some(base) = class.parameters.as_ref().and_then(|p| p.get("path")).filter(|p| p.starts_with('/')) else {
        ctx.recorder.publish(c, EventType::Warning, "ProvisioningFailed", format!("storage class {:?} has no absolute parameters.path for provisioner {LOCAL_PROVISIONER}", class.name_any()));
        return Ok(());
    };
    let node_affinity = match node {
        Some(n) => {
            // The binder may list nodes, not get them (upstream's role).
            let nodes: Api<Node> = Api::all(ctx.writer.clone());
            let found = nodes.list(&kube::api::ListParams::default().fields(&format!("metadata.name={n}"))).await?;
            let host = found.items.first().and_then(|node| node.labels().get("kubernetes.io/hostname").cloned()).unwrap_or_else(|| n.to_string());
            let term = NodeSelectorTerm { match_expressions: Some(vec![NodeSelectorRequirement { key: "kubernetes.io/hostname".into(), operator: "In".into(), values: Some(vec![host]) }]), match_fields: None };
            Some(VolumeNodeAffinity { required: Some(NodeSelector { node_selector_terms: vec![term] }) })
        }
        // No node chosen (an Immediate class): the class's allowedTopologies, if any, are where
        // the volume may be used.
        None => class.allowed_topologies.as_ref().filter(|t| !t.is_empty()).map(|terms| {
            let term = |t: &k8s_openapi::api::core::v1::TopologySelectorTerm| NodeSelectorTerm {
                match_expressions: Some(t.match_label_expressions.iter().flatten().map(|e| NodeSelectorRequirement { key: e.key.clone(), operator: "In".into(), values: Some(e.values.clone()) }).collect()),
                match_fields: None,
            };
            VolumeNodeAffinity { required: Some(NodeSelector { node_selector_terms: terms.iter().map(term).collect() }) }
        }),
    };
    let spec = c.spec.clone().unwrap_or_default();
    let size = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).cloned().unwrap_or_else(|| Quantity("1Gi".into()));
    let pv = PersistentVolume {
        metadata: ObjectMeta { name: Some(name.clone()), annotations: Some([(PROVISIONED_BY.to_string(), LOCAL_PROVISIONER.to_string())].into()), ..Default::default() },
        spec: Some(PersistentVolumeSpec {
            capacity: Some([("storage".to_string(), size)].into()),
            access_modes: spec.access_modes.clone(),
            claim_ref: Some(claim_ref(c)),
            persistent_volume_reclaim_policy: Some(class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into())),
            storage_class_name: Some(class.name_any()),
            volume_mode: spec.volume_mode.clone(),
            host_path: Some(HostPathVolumeSource { path: format!("{}/{name}", base.trim_end_matches('/')), type_: Some("DirectoryOrCreate".into()) }),
            node_affinity,
            ..Default::default()
        }),
        status: None,
    };
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => ctx.recorder.publish(c, EventType::Normal, "ProvisioningSucceeded", format!("Successfully provisioned volume {name}")),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => {
            ctx.recorder.publish(c, EventType::Warning, "ProvisioningFailed", format!("failed to provision volume: {}", crate::api_message(&e)));
            return Err(e.into());
        }
    }
    Ok(())
}

async fn reconcile_volume(v: Arc<PersistentVolume>, ctx: Arc<Context<State>>) -> Result<Action, Error> {
    let st = &ctx.state;
    if !crate::synced(&st.claims) || !crate::synced(&st.volumes) {
        return Ok(crate::not_synced());
    }
    if v.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.writer.clone());
    let phase = v.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    let set_phase = |phase: &str| {
        let mut new = (*v).clone();
        new.status = Some(PersistentVolumeStatus { phase: Some(phase.into()), last_phase_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(chrono::Utc::now())), ..Default::default() });
        new
    };
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
        if phase != "Available" {
            let body = serde_json::to_vec(&set_phase("Available")).map_err(|e| Error::Invalid(e.to_string()))?;
            pvs.replace_status(&v.name_any(), &PostParams::default(), body).await.map_err(|e| conflict(e, "volume"))?;
        }
        return Ok(Action::await_change());
    };
    let (ns, name) = (r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default());
    let uid = r.uid.clone().unwrap_or_default();
    if uid.is_empty() {
        return Ok(Action::await_change()); // pre-bound by name: the claim's pass binds it
    }
    // A live read decides whether the claim is still there: the claims' cache is fed by another
    // watch than the one that triggers this pass (a claim's deletion), so it may still hold it.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.writer.clone(), &ns);
    if claims.get_opt(&name).await?.is_some_and(|c| c.metadata.uid.as_deref() == Some(uid.as_str())) {
        return Ok(Action::requeue(Duration::from_secs(300)));
    }
    if v.spec.as_ref().and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some("Delete") {
        let dp = DeleteParams { preconditions: Some(Preconditions { uid: v.metadata.uid.clone(), resource_version: None }), ..Default::default() };
        match pvs.delete(&v.name_any(), &dp).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404 | 409, .. })) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(Action::await_change());
    }
    if phase != "Released" {
        let body = serde_json::to_vec(&set_phase("Released")).map_err(|e| Error::Invalid(e.to_string()))?;
        pvs.replace_status(&v.name_any(), &PostParams::default(), body).await.map_err(|e| conflict(e, "volume"))?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaimSpec, VolumeResourceRequirements};

    fn pv(name: &str, size: &str, class: &str, modes: &[&str]) -> Arc<PersistentVolume> {
        Arc::new(PersistentVolume {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(PersistentVolumeSpec {
                capacity: Some([("storage".to_string(), Quantity(size.into()))].into()),
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                storage_class_name: Some(class.into()),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn pvc(size: &str, class: Option<&str>, modes: &[&str]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta { name: Some("c".into()), namespace: Some("ns".into()), uid: Some("u1".into()), ..Default::default() },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(modes.iter().map(|m| m.to_string()).collect()),
                storage_class_name: class.map(str::to_string),
                resources: Some(VolumeResourceRequirements { requests: Some([("storage".to_string(), Quantity(size.into()))].into()), limits: None }),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn the_smallest_fitting_volume_is_chosen() {
        let vols = vec![pv("big", "10Gi", "", &["ReadWriteOnce"]), pv("small", "2Gi", "", &["ReadWriteOnce", "ReadOnlyMany"]), pv("tiny", "500Mi", "", &["ReadWriteOnce"]), pv("fast", "2Gi", "ssd", &["ReadWriteOnce"])];
        assert_eq!(find_volume(&vols, &pvc("1Gi", Some(""), &["ReadWriteOnce"])).map(|v| v.name_any()), Some("small".into()));
        assert_eq!(find_volume(&vols, &pvc("1Gi", None, &["ReadWriteOnce"])).map(|v| v.name_any()), Some("small".into()), "no class is the empty class");
        assert_eq!(find_volume(&vols, &pvc("1Gi", Some("ssd"), &["ReadWriteOnce"])).map(|v| v.name_any()), Some("fast".into()));
        assert_eq!(find_volume(&vols, &pvc("20Gi", Some(""), &["ReadWriteOnce"])).map(|v| v.name_any()), None);
        assert_eq!(find_volume(&vols, &pvc("1Gi", Some(""), &["ReadWriteMany"])).map(|v| v.name_any()), None);
        // A volume bound to another claim is not free; one pre-bound to this claim wins.
        let mut taken = (*vols[1]).clone();
        taken.spec.as_mut().map(|s| s.claim_ref = Some(ObjectReference { namespace: Some("ns".into()), name: Some("other".into()), ..Default::default() }));
        let mut mine = (*vols[0]).clone();
        mine.spec.as_mut().map(|s| s.claim_ref = Some(ObjectReference { namespace: Some("ns".into()), name: Some("c".into()), ..Default::default() }));
        let vols = vec![Arc::new(taken), Arc::new(mine), vols[2].clone()];
        assert_eq!(find_volume(&vols, &pvc("100Mi", Some(""), &["ReadWriteOnce"])).map(|v| v.name_any()), Some("big".into()));
    }
}
