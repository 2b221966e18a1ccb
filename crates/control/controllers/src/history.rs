//! ControllerRevisions (apps/v1) as the DaemonSet and StatefulSet controllers keep them
//! (upstream's `controller/history` and the DaemonSet's `constructHistory`): one revision per
//! distinct template, named `<owner>-<hash>`, labelled `controller-revision-hash: <hash>`,
//! holding the patch that restores the template (`{"spec": {"template": {..., "$patch":
//! "replace"}}}`, which `kubectl rollout undo` applies as a strategic merge patch), owned by
//! the workload with a controller ownerReference. The current revision is the one whose data
//! equals the workload's patch now; its number is raised above every older one when an old
//! template comes back.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use crate::replicaset::{controller_of, controller_ref, selects};
use crate::Error;

/// The label a revision and the pods made from it carry (`apps.ControllerRevisionHashLabelKey`).
pub const HASH_LABEL: &str = "controller-revision-hash";

/// The revision data of a template: the patch that puts it back, with the template as Go's
/// `encoding/json` writes a typed `PodTemplateSpec` ([`go_form`]): upstream's DaemonSet `Match`
/// (which the e2e suite calls) compares a revision's data byte for byte with that.
pub fn patch_of(template: &Value) -> Value {
    let mut t = go_form(template);
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({ "spec": { "template": t } })
}

/// `template` with the fields Go always writes for the typed object added where missing (Go's
/// `omitempty` never omits a struct): `metadata.creationTimestamp: null` and each container's
/// `resources: {}`. Keys are written sorted (serde_json's map), as Go writes a map.
pub fn go_form(template: &Value) -> Value {
    let mut t = template.clone();
    let Some(o) = t.as_object_mut() else { return t };
    let meta = o.entry("metadata").or_insert_with(|| json!({}));
    if let Some(m) = meta.as_object_mut() {
        m.entry("creationTimestamp").or_insert(Value::Null);
    }
    let spec = o.entry("spec").or_insert_with(|| json!({}));
    if let Some(sp) = spec.as_object_mut() {
        sp.entry("containers").or_insert(Value::Null);
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            for c in sp.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
                if let Some(c) = c.as_object_mut() {
                    c.entry("resources").or_insert_with(|| json!({}));
                }
            }
        }
    }
    t
}

/// A revision's data as [`patch_of`] writes it now (revisions written before the template took
/// Go's form compare equal to the current data of the same template).
fn normalized(data: &Value) -> Value {
    let mut d = data.clone();
    if let Some(t) = d.get("spec").and_then(|s| s.get("template")) {
        d["spec"]["template"] = go_form(t);
    }
    d
}

pub fn revision_hash(r: &ControllerRevision) -> String {
    r.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)).cloned().unwrap_or_else(|| r.name_any())
}

/// The revisions a workload controls, after adopting matching orphans and releasing its own
/// that stopped matching (upstream's `ClaimControllerRevisions`). Sorted by revision.
pub async fn claim<K>(store: &Store<ControllerRevision>, api: &Api<ControllerRevision>, owner: &K, selector: &LabelSelector) -> Result<Vec<ControllerRevision>, Error>
where
    K: Resource<DynamicType = ()>,
{
    let ns = owner.meta().namespace.clone().unwrap_or_default();
    let uid = owner.meta().uid.clone().unwrap_or_default();
    let deleting = owner.meta().deletion_timestamp.is_some();
    let mut out = Vec::new();
    let in_ns: Vec<Arc<ControllerRevision>> = store.state().into_iter().filter(|r| r.namespace().as_deref() == Some(ns.as_str())).collect();
    for r in in_ns {
        let labels = r.metadata.labels.clone().unwrap_or_default();
        let matches = selects(selector, &labels);
        match controller_of(&r.metadata) {
            Some(c) if c.uid == uid => {
                if matches {
                    out.push((*r).clone());
                } else if !deleting {
                    let keep: Vec<&OwnerReference> = r.metadata.owner_references.iter().flatten().filter(|o| o.uid != uid).collect();
                    let patch = json!({ "metadata": { "ownerReferences": keep, "resourceVersion": r.metadata.resource_version } });
                    gone_ok(api.patch(&r.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)?;
                }
            }
            None if matches && !deleting && r.metadata.deletion_timestamp.is_none() => {
                let mut refs = r.metadata.owner_references.clone().unwrap_or_default();
                refs.push(controller_ref(owner));
                let patch = json!({ "metadata": { "ownerReferences": refs, "resourceVersion": r.metadata.resource_version } });
                if let Some(new) = gone_ok(api.patch(&r.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await)? {
                    out.push(new);
                }
            }
            _ => {}
        }
    }
    out.sort_by_key(|r| r.revision);
    Ok(out)
}

/// What [`current`] found or made.
pub struct History {
    pub current: ControllerRevision,
    /// Every other revision, oldest first.
    pub old: Vec<ControllerRevision>,
}

/// Why a revision could not be made: a revision of that name with other data exists (the
/// caller raises its collisionCount and tries again).
pub enum Outcome {
    Ok(History),
    Collision,
}

/// [`claim`] the revisions of a workload whose pods come from `template`, then find or make
/// the [`current`] one for it.
pub async fn resolve<K>(store: &Store<ControllerRevision>, api: &Api<ControllerRevision>, owner: &K, selector: &LabelSelector, template: &PodTemplateSpec, collision_count: Option<i32>) -> Result<Outcome, Error>
where
    K: Resource<DynamicType = ()>,
{
    let claimed = claim(store, api, owner, selector).await?;
    let value = serde_json::to_value(template).map_err(|e| Error::Invalid(e.to_string()))?;
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
    current(api, owner, claimed, &value, &labels, collision_count).await
}

/// Find the revision matching `template` among `claimed`, or create it (`<owner>-<hash>`);
/// raise its number above the old ones'. Extra revisions matching the template (left by a
/// crash) are deleted but for the newest.
pub async fn current<K>(api: &Api<ControllerRevision>, owner: &K, claimed: Vec<ControllerRevision>, template: &Value, labels: &BTreeMap<String, String>, collision_count: Option<i32>) -> Result<Outcome, Error>
where
    K: Resource<DynamicType = ()>,
{
    let want = patch_of(template);
    let (mut matching, old): (Vec<ControllerRevision>, Vec<ControllerRevision>) = claimed.into_iter().partition(|r| r.data.as_ref().map(|d| normalized(&d.0)).as_ref() == Some(&want));
    let next = old.iter().map(|r| r.revision).max().unwrap_or(0) + 1;
    matching.sort_by_key(|r| r.revision);
    let cur = match matching.pop() {
        Some(cur) => {
            for dup in &matching {
                let dp = DeleteParams { preconditions: Some(Preconditions { uid: dup.metadata.uid.clone(), resource_version: None }), ..Default::default() };
                gone_ok(api.delete(&dup.name_any(), &dp).await.map(|_| ()))?;
            }
            if cur.revision < next {
                let mut up = cur.clone();
                up.revision = next;
                match api.replace(&cur.name_any(), &PostParams::default(), &up).await {
                    Ok(r) => r,
                    Err(kube::Error::Api(e)) if e.code == 409 => return Err(Error::Invalid(format!("revision {} changed; retrying", cur.name_any()))),
                    Err(e) => return Err(e.into()),
                }
            } else {
                cur
            }
        }
        None => {
            let hash = crate::rollout::template_hash(&serde_json::to_string(template).map_err(|e| Error::Invalid(e.to_string()))?, collision_count);
            let name = format!("{}-{hash}", owner.meta().name.clone().unwrap_or_default());
            let mut l = labels.clone();
            l.insert(HASH_LABEL.into(), hash);
            let rev = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: owner.meta().namespace.clone(),
                    labels: Some(l),
                    annotations: owner.meta().annotations.clone().map(|a| a.into_iter().filter(|(k, _)| k != "kubectl.kubernetes.io/last-applied-configuration").collect()),
                    owner_references: Some(vec![controller_ref(owner)]),
                    ..Default::default()
                },
                data: Some(RawExtension(want.clone())),
                revision: next,
            };
            match api.create(&PostParams::default(), &rev).await {
                Ok(r) => r,
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let existing = api.get_opt(&name).await?;
                    let ours = existing.as_ref().is_some_and(|x| controller_of(&x.metadata).is_some_and(|c| Some(&c.uid) == owner.meta().uid.as_ref()));
                    match existing {
                        Some(x) if x.data.as_ref().map(|d| normalized(&d.0)).as_ref() == Some(&want) && ours => return Err(Error::Invalid(format!("revision {name} not in the cache yet"))),
                        _ => return Ok(Outcome::Collision),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    Ok(Outcome::Ok(History { current: cur, old }))
}

/// Delete the oldest revisions beyond `limit` whose hash no live pod carries.
pub async fn cleanup(api: &Api<ControllerRevision>, old: &[ControllerRevision], limit: i32, live_hashes: &[String]) -> Result<(), Error> {
    let mut kill = old.len() as i64 - i64::from(limit.max(0));
    for r in old {
        if kill <= 0 {
            break;
        }
        if live_hashes.contains(&revision_hash(r)) {
            continue;
        }
        let dp = DeleteParams { preconditions: Some(Preconditions { uid: r.metadata.uid.clone(), resource_version: None }), ..Default::default() };
        gone_ok(api.delete(&r.name_any(), &dp).await.map(|_| ()))?;
        kill -= 1;
    }
    Ok(())
}

fn gone_ok<T>(r: Result<T, kube::Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_data_replaces_the_template() {
        let t = json!({ "metadata": { "labels": { "app": "a" } }, "spec": { "containers": [] } });
        let p = patch_of(&t);
        assert_eq!(p["spec"]["template"]["$patch"], "replace");
        assert_eq!(p["spec"]["template"]["metadata"]["labels"]["app"], "a");
        assert_eq!(p, patch_of(&t), "the same template gives the same data");
    }

    /// The bytes Go's json.Marshal gives for the patch upstream's DaemonSet `getPatch` makes of
    /// the same typed template (a struct is never omitted; map keys sorted).
    #[test]
    fn revision_data_is_what_go_writes_for_the_typed_template() {
        let t = json!({ "metadata": { "labels": { "app": "a" } }, "spec": { "containers": [{ "name": "c", "image": "i", "ports": [{ "containerPort": 9376, "protocol": "TCP" }] }], "initContainers": [{ "name": "i", "image": "i", "resources": { "limits": { "cpu": "1" } } }] } });
        let bytes = serde_json::to_string(&patch_of(&t)).expect("json");
        assert_eq!(
            bytes,
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"creationTimestamp":null,"labels":{"app":"a"}},"spec":{"containers":[{"image":"i","name":"c","ports":[{"containerPort":9376,"protocol":"TCP"}],"resources":{}}],"initContainers":[{"image":"i","name":"i","resources":{"limits":{"cpu":"1"}}}]}}}}"#
        );
        // Data written before (without Go's fields) is the same revision.
        let mut old = json!({ "spec": { "template": t.clone() } });
        old["spec"]["template"]["$patch"] = json!("replace");
        assert_eq!(normalized(&old), patch_of(&t));
    }
}
