//! VolumeBinding's per-node part (upstream's Filter, and the choice its Reserve makes) for a pod
//! whose claims tie it to nodes: a claim bound to a volume with a node affinity (a local volume)
//! holds the pod to that volume's nodes; an unbound claim of a WaitForFirstConsumer class needs,
//! on the node, a free volume that fits it (class, mode, access modes, size) and whose node
//! affinity admits the node, or a class that provisions (any provisioner but
//! `kubernetes.io/no-provisioner`; for the node the claim's `volume.kubernetes.io/selected-node`
//! names, if it names one; and only on nodes the class's `allowedTopologies` admit). Pure:
//! made once per pod from the watched claims, volumes and classes ([`VolumeCheck::new`]), then
//! asked per node; pods without such claims get `None` and cost the node loop nothing. The
//! binder (`strata-controllers` volume.rs) shares [`fits`] and [`is_for`].

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Rejection, VOLUME_BINDING};
use crate::info::NodeInfo;
use crate::labels::{node_selector_matches, topology_allows};

/// The annotation the scheduler puts on a claim to have it provisioned for a node.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner of classes whose volumes are only ever made by hand (local volumes).
pub const NO_PROVISIONER: &str = "kubernetes.io/no-provisioner";
/// Upstream's reasons (`ErrReasonBindConflict`, `ErrReasonNodeConflict`, `ErrReasonPVNotExist`).
pub const BIND_CONFLICT: &str = "node(s) didn't find available persistent volumes to bind";
pub const NODE_CONFLICT: &str = "node(s) didn't match PersistentVolume's node affinity";
pub const PV_NOT_EXIST: &str = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)";

/// Bytes of a quantity (0 when unparseable).
fn bytes(q: Option<&Quantity>) -> i128 {
    q.and_then(|q| strata_client::quantity::parse_milli(&q.0)).unwrap_or(0)
}

fn requested(c: &PersistentVolumeClaim) -> i128 {
    bytes(c.spec.as_ref().and_then(|s| s.resources.as_ref()).and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")))
}

fn capacity(v: &PersistentVolume) -> i128 {
    bytes(v.spec.as_ref().and_then(|s| s.capacity.as_ref()).and_then(|c| c.get("storage")))
}

pub fn class_of_claim(c: &PersistentVolumeClaim) -> String {
    c.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default()
}

/// Is `v` pre-bound to `c` (its claimRef names the claim, without a uid or with the claim's)?
pub fn is_for(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else { return false };
    r.namespace == c.metadata.namespace && r.name == c.metadata.name && r.uid.as_ref().is_none_or(|u| u.is_empty() || Some(u) == c.metadata.uid.as_ref())
}

/// A volume's `claimRef` to `c` (its uid and resourceVersion: the claim binding is decided on).
pub fn claim_ref(c: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.metadata.namespace.clone(),
        name: c.metadata.name.clone(),
        uid: c.metadata.uid.clone(),
        resource_version: c.metadata.resource_version.clone(),
        field_path: None,
    }
}

/// Does `v` satisfy `c` (class, mode, access modes, size)? Pure.
pub fn fits(v: &PersistentVolume, c: &PersistentVolumeClaim) -> bool {
    let (Some(vs), Some(cs)) = (v.spec.as_ref(), c.spec.as_ref()) else { return false };
    if vs.storage_class_name.clone().unwrap_or_default() != class_of_claim(c) {
        return false;
    }
    if vs.volume_mode.as_deref().unwrap_or("Filesystem") != cs.volume_mode.as_deref().unwrap_or("Filesystem") {
        return false;
    }
    let have = vs.access_modes.clone().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return false;
    }
    capacity(v) >= requested(c)
}

/// Does the volume's node affinity (none: every node) admit the node?
pub fn admits(v: &PersistentVolume, n: &NodeInfo) -> bool {
    v.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()).is_none_or(|sel| node_selector_matches(sel, &n.name, &n.labels))
}

/// What the pod's binding does for one unbound claim on the chosen node.
#[derive(Clone, Debug)]
pub enum Choice {
    /// Bind it to this volume (the scheduler sets the volume's claimRef; the binder finishes).
    Volume(Arc<PersistentVolume>),
    /// Have it provisioned for the node (`volume.kubernetes.io/selected-node`).
    Provision,
}

#[derive(Debug)]
struct Unbound {
    claim: Arc<PersistentVolumeClaim>,
    /// Volumes that could take it, pre-bound to it first, then the smallest.
    candidates: Vec<Arc<PersistentVolume>>,
    /// Its class provisions, for any node (`None`) or only the one it already selected.
    provisions: Option<Option<String>>,
    /// Its class (whose `allowedTopologies` say where it may provision).
    class: Arc<StorageClass>,
}

/// The per-node volume check of one pod.
#[derive(Debug, Default)]
pub struct VolumeCheck {
    /// Volumes of bound claims that have a node affinity.
    bound: Vec<Arc<PersistentVolume>>,
    /// A claim is bound to a volume that does not exist.
    missing: bool,
    /// Unbound claims of WaitForFirstConsumer classes, smallest request first.
    unbound: Vec<Unbound>,
}

impl VolumeCheck {
    /// The check for a pod whose claims (`claims`, those that exist) passed the PreFilter, or
    /// `None` when no claim depends on the node. `volume(name)`: a volume by name; `volumes`:
    /// all of them; `class(name)`: a StorageClass; `taken(volume, claim)`: the volume is
    /// promised to another claim by a binding in flight.
    pub fn new(
        claims: &[Arc<PersistentVolumeClaim>],
        volume: impl Fn(&str) -> Option<Arc<PersistentVolume>>,
        volumes: &[Arc<PersistentVolume>],
        class: impl Fn(&str) -> Option<Arc<StorageClass>>,
        taken: impl Fn(&str, &PersistentVolumeClaim) -> bool,
    ) -> Option<VolumeCheck> {
        let mut check = VolumeCheck::default();
        for c in claims {
            if let Some(name) = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|n| !n.is_empty()) {
                match volume(name) {
                    None => check.missing = true,
                    Some(v) if v.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()).is_some() => check.bound.push(v),
                    Some(_) => {}
                }
                continue;
            }
            let Some(k) = class(&class_of_claim(c)).filter(|k| k.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")) else { continue };
            let mut candidates: Vec<Arc<PersistentVolume>> = volumes
                .iter()
                .filter(|v| v.metadata.deletion_timestamp.is_none() && fits(v, c))
                .filter(|v| is_for(v, c) || (v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()) && !taken(v.metadata.name.as_deref().unwrap_or(""), c)))
                .cloned()
                .collect();
            candidates.sort_by_key(|v| (!is_for(v, c), capacity(v), v.metadata.name.clone()));
            let selected = c.metadata.annotations.as_ref().and_then(|a| a.get(SELECTED_NODE)).cloned();
            let provisions = (k.provisioner != NO_PROVISIONER).then_some(selected);
            check.unbound.push(Unbound { claim: c.clone(), candidates, provisions, class: k });
        }
        check.unbound.sort_by_key(|u| requested(&u.claim));
        (check.missing || !check.bound.is_empty() || !check.unbound.is_empty()).then_some(check)
    }

    /// Upstream's Filter: can the pod's claims be had on this node?
    pub fn filter(&self, n: &NodeInfo) -> Result<(), Rejection> {
        if self.missing {
            return Err(Rejection::unresolvable(VOLUME_BINDING, PV_NOT_EXIST));
        }
        if self.bound.iter().any(|v| !admits(v, n)) {
            return Err(Rejection::unresolvable(VOLUME_BINDING, NODE_CONFLICT));
        }
        if self.choose(n).is_none() {
            return Err(Rejection::unresolvable(VOLUME_BINDING, BIND_CONFLICT));
        }
        Ok(())
    }

    /// For each unbound claim, what binding the pod to `n` does (no volume taken twice), or
    /// `None` if some claim can be had there neither way.
    pub fn choose(&self, n: &NodeInfo) -> Option<Vec<(Arc<PersistentVolumeClaim>, Choice)>> {
        let mut used: HashSet<&str> = HashSet::new();
        let mut out = Vec::with_capacity(self.unbound.len());
        for u in &self.unbound {
            let free = u.candidates.iter().find(|v| admits(v, n) && !used.contains(v.metadata.name.as_deref().unwrap_or("")));
            let choice = match (free, &u.provisions) {
                (Some(v), _) => {
                    used.insert(v.metadata.name.as_deref().unwrap_or(""));
                    Choice::Volume(v.clone())
                }
                (None, Some(selected)) if selected.as_ref().is_none_or(|s| *s == n.name) && topology_allows(u.class.allowed_topologies.as_deref().unwrap_or_default(), &n.labels) => Choice::Provision,
                _ => return None,
            };
            out.push((u.claim.clone(), choice));
        }
        Some(out)
    }

    /// Whether binding the pod has volume work to do (unbound claims).
    pub fn binds(&self) -> bool {
        !self.unbound.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeSpec, TopologySelectorLabelRequirement, TopologySelectorTerm, VolumeNodeAffinity, VolumeResourceRequirements};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str) -> NodeInfo {
        let mut n = NodeInfo::default();
        let labels = [("kubernetes.io/hostname".to_string(), name.to_string())].into();
        n.set_node(Arc::new(Node { metadata: ObjectMeta { name: Some(name.into()), labels: Some(labels), ..Default::default() }, ..Default::default() }));
        n
    }

    fn pv(name: &str, size: &str, on: Option<&str>) -> Arc<PersistentVolume> {
        let affinity = on.map(|n| VolumeNodeAffinity {
            required: Some(NodeSelector { node_selector_terms: vec![NodeSelectorTerm { match_expressions: Some(vec![NodeSelectorRequirement { key: "kubernetes.io/hostname".into(), operator: "In".into(), values: Some(vec![n.into()]) }]), match_fields: None }] }),
        });
        Arc::new(PersistentVolume {
            metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
            spec: Some(PersistentVolumeSpec { capacity: Some([("storage".to_string(), Quantity(size.into()))].into()), access_modes: Some(vec!["ReadWriteOnce".into()]), storage_class_name: Some("local".into()), node_affinity: affinity, ..Default::default() }),
            status: None,
        })
    }

    fn pvc(name: &str, size: &str, volume: Option<&str>) -> Arc<PersistentVolumeClaim> {
        Arc::new(PersistentVolumeClaim {
            metadata: ObjectMeta { name: Some(name.into()), namespace: Some("ns".into()), uid: Some(format!("uid-{name}")), ..Default::default() },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: Some("local".into()),
                volume_name: volume.map(str::to_string),
                resources: Some(VolumeResourceRequirements { requests: Some([("storage".to_string(), Quantity(size.into()))].into()), limits: None }),
                ..Default::default()
            }),
            status: None,
        })
    }

    fn class(provisioner: &str, mode: &str) -> Arc<StorageClass> {
        Arc::new(StorageClass { metadata: ObjectMeta { name: Some("local".into()), ..Default::default() }, provisioner: provisioner.into(), volume_binding_mode: Some(mode.into()), ..Default::default() })
    }

    fn check(claims: &[Arc<PersistentVolumeClaim>], volumes: &[Arc<PersistentVolume>], k: Arc<StorageClass>, taken: &[&str]) -> Option<VolumeCheck> {
        let by_name = |n: &str| volumes.iter().find(|v| v.metadata.name.as_deref() == Some(n)).cloned();
        VolumeCheck::new(claims, by_name, volumes, |_| Some(k.clone()), |v, _| taken.contains(&v))
    }

    fn feasible(c: &VolumeCheck) -> Vec<&'static str> {
        ["n1", "n2", "n3"].into_iter().filter(|n| c.filter(&node(n)).is_ok()).collect()
    }

    #[test]
    fn unbound_waiting_claims_need_a_fitting_volume_on_the_node_or_a_provisioner() {
        let vols = vec![pv("small-n1", "100Mi", Some("n1")), pv("big-n1", "2Gi", Some("n1")), pv("big-n2", "2Gi", Some("n2")), pv("anywhere", "10Mi", None)];
        let wait = class(NO_PROVISIONER, "WaitForFirstConsumer");
        // Nothing depends on the node: an Immediate class, or claims bound to volumes without affinity.
        assert!(check(&[pvc("a", "1Gi", None)], &vols, class(NO_PROVISIONER, "Immediate"), &[]).is_none());
        assert!(check(&[pvc("a", "1Gi", Some("anywhere"))], &vols, wait.clone(), &[]).is_none());
        // 1Gi fits only the big volumes: nodes n1 and n2; the smallest that fits is chosen.
        let c = check(&[pvc("a", "1Gi", None)], &vols, wait.clone(), &[]).expect("check");
        assert_eq!(feasible(&c), ["n1", "n2"]);
        assert_eq!(c.filter(&node("n3")), Err(Rejection::unresolvable(VOLUME_BINDING, BIND_CONFLICT)));
        let c = check(&[pvc("a", "50Mi", None)], &vols, wait.clone(), &[]).expect("check");
        let chosen = c.choose(&node("n1")).expect("fits on n1");
        assert!(matches!(&chosen[0].1, Choice::Volume(v) if v.metadata.name.as_deref() == Some("small-n1")), "{chosen:?}");
        // Two claims on one node need two volumes; one promised elsewhere is not free.
        let two = [pvc("a", "1Gi", None), pvc("b", "1Gi", None)];
        assert_eq!(feasible(&check(&two, &vols, wait.clone(), &[]).expect("check")), Vec::<&str>::new());
        assert_eq!(feasible(&check(&[pvc("a", "1Gi", None)], &vols, wait.clone(), &["big-n1"]).expect("check")), ["n2"]);
        // A volume pre-bound to the claim wins over a smaller free one.
        let mut pre = (*pv("pre-n2", "5Gi", Some("n2"))).clone();
        pre.spec.as_mut().expect("spec").claim_ref = Some(ObjectReference { namespace: Some("ns".into()), name: Some("a".into()), ..Default::default() });
        let vols2 = [vols.clone(), vec![Arc::new(pre)]].concat();
        let chosen = check(&[pvc("a", "1Gi", None)], &vols2, wait.clone(), &[]).expect("check").choose(&node("n2")).expect("n2");
        assert!(matches!(&chosen[0].1, Choice::Volume(v) if v.metadata.name.as_deref() == Some("pre-n2")), "{chosen:?}");
        // A provisioning class: every node, or only the one the claim selected already.
        let made = class("strata.dev/local", "WaitForFirstConsumer");
        let c = check(&[pvc("a", "9Gi", None)], &vols, made.clone(), &[]).expect("check");
        assert_eq!(feasible(&c), ["n1", "n2", "n3"]);
        assert!(matches!(c.choose(&node("n3")).expect("n3")[0].1, Choice::Provision));
        let mut sel = (*pvc("a", "9Gi", None)).clone();
        sel.metadata.annotations = Some([(SELECTED_NODE.to_string(), "n3".to_string())].into());
        assert_eq!(feasible(&check(&[Arc::new(sel)], &vols, made.clone(), &[]).expect("check")), ["n3"]);
        // Its allowedTopologies keep provisioning to the nodes they name (a free volume elsewhere
        // still fits: 50Mi takes small-n1 on n1).
        let mut zoned = (*made).clone();
        zoned.allowed_topologies = Some(vec![TopologySelectorTerm {
            match_label_expressions: Some(vec![TopologySelectorLabelRequirement { key: "kubernetes.io/hostname".into(), values: vec!["n2".into(), "n3".into()] }]),
        }]);
        let zoned = Arc::new(zoned);
        assert_eq!(feasible(&check(&[pvc("a", "9Gi", None)], &vols, zoned.clone(), &[]).expect("check")), ["n2", "n3"]);
        assert_eq!(check(&[pvc("a", "9Gi", None)], &vols, zoned.clone(), &[]).expect("check").filter(&node("n1")), Err(Rejection::unresolvable(VOLUME_BINDING, BIND_CONFLICT)));
        assert_eq!(feasible(&check(&[pvc("a", "50Mi", None)], &vols, zoned, &[]).expect("check")), ["n1", "n2", "n3"]);
    }

    #[test]
    fn bound_claims_hold_the_pod_to_their_volumes_nodes() {
        let vols = vec![pv("local-n2", "1Gi", Some("n2"))];
        let wait = class(NO_PROVISIONER, "WaitForFirstConsumer");
        let c = check(&[pvc("a", "1Gi", Some("local-n2"))], &vols, wait.clone(), &[]).expect("check");
        assert_eq!(feasible(&c), ["n2"]);
        assert_eq!(c.filter(&node("n1")), Err(Rejection::unresolvable(VOLUME_BINDING, NODE_CONFLICT)));
        assert!(!c.binds(), "nothing to bind");
        let c = check(&[pvc("a", "1Gi", Some("gone"))], &vols, wait, &[]).expect("check");
        assert_eq!(c.filter(&node("n2")), Err(Rejection::unresolvable(VOLUME_BINDING, PV_NOT_EXIST)));
    }
}
