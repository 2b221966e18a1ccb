//! PersistentVolumes, PersistentVolumeClaims and StorageClasses as kube-apiserver defaults,
//! validates and admits them: PV and claim defaults (reclaim policy, volume mode, phase
//! Pending), a PV's one volume source, a class's provisioner, allowedTopologies and immutable
//! fields, the DefaultStorageClass admission plugin (a claim that names no class gets the default one),
//! and strata's built-in default class `strata-local` (provisioner `strata.dev/local`:
//! hostPath directories under the server's data dir, made by the controllers' volume binder),
//! created at every start when missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};
use strata_store::Store;

use crate::resources::Resource;
use crate::status::{ApiError, Cause};

/// The annotation that marks the default class.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// strata's built-in class and its provisioner.
pub const LOCAL_CLASS: &str = "strata-local";
pub const LOCAL_PROVISIONER: &str = "strata.dev/local";

fn required(field: &str, detail: &str) -> Cause {
    let message = if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
    Cause { reason: "FieldValueRequired", field: field.into(), message }
}

const SOURCES: &[&str] = &[
    "gcePersistentDisk", "awsElasticBlockStore", "hostPath", "glusterfs", "nfs", "rbd", "iscsi", "cinder", "cephfs", "fc", "flocker", "flexVolume", "azureFile",
    "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO", "local", "storageos", "csi",
];
const ACCESS_MODES: &[&str] = &["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"];

fn access_modes(modes: &Value, field: &str, causes: &mut Vec<Cause>) {
    match modes.as_array() {
        Some(m) if !m.is_empty() => {
            for v in m {
                if !v.as_str().is_some_and(|v| ACCESS_MODES.contains(&v)) {
                    causes.push(Cause { reason: "FieldValueNotSupported", field: field.into(), message: format!("Unsupported value: {v}: supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\"") });
                }
            }
        }
        _ => causes.push(required(field, "")),
    }
}

/// A PersistentVolume (upstream's `ValidatePersistentVolume` for the fields strata uses).
pub fn validate_pv(obj: &mut Value, causes: &mut Vec<Cause>) {
    let spec = &mut obj["spec"];
    if spec["persistentVolumeReclaimPolicy"].is_null() {
        spec["persistentVolumeReclaimPolicy"] = json!("Retain");
    }
    if spec["volumeMode"].is_null() {
        spec["volumeMode"] = json!("Filesystem");
    }
    if spec["capacity"]["storage"].is_null() {
        causes.push(required("spec.capacity", ""));
    }
    access_modes(&spec["accessModes"], "spec.accessModes", causes);
    let given: Vec<&str> = SOURCES.iter().copied().filter(|s| !spec[*s].is_null()).collect();
    match given.len() {
        0 => causes.push(required("spec", "must specify a volume type")),
        1 => {}
        _ => causes.push(Cause { reason: "FieldValueForbidden", field: "spec".into(), message: "Forbidden: may not specify more than 1 volume type".into() }),
    }
    for src in ["hostPath", "local"] {
        if spec[src].is_object() && spec[src]["path"].as_str().unwrap_or("").is_empty() {
            causes.push(required(&format!("spec.{src}.path"), ""));
        }
    }
    if !spec["local"].is_null() && spec["nodeAffinity"].is_null() {
        causes.push(required("spec.nodeAffinity", "Local volume requires node affinity"));
    }
    if let Some(p) = spec["persistentVolumeReclaimPolicy"].as_str() {
        if !matches!(p, "Retain" | "Delete" | "Recycle") {
            causes.push(Cause { reason: "FieldValueNotSupported", field: "spec.persistentVolumeReclaimPolicy".into(), message: format!("Unsupported value: \"{p}\": supported values: \"Delete\", \"Recycle\", \"Retain\"") });
        }
    }
    if obj["status"]["phase"].is_null() {
        obj["status"]["phase"] = json!("Pending");
    }
}

/// A PersistentVolumeClaim's defaults (and the access modes it must name).
pub fn validate_pvc(obj: &mut Value, causes: &mut Vec<Cause>) {
    let spec = &mut obj["spec"];
    if spec["volumeMode"].is_null() {
        spec["volumeMode"] = json!("Filesystem");
    }
    access_modes(&spec["accessModes"], "spec.accessModes", causes);
    if spec["resources"]["requests"]["storage"].is_null() {
        causes.push(required("spec.resources[storage]", ""));
    }
    if obj["status"]["phase"].is_null() {
        obj["status"]["phase"] = json!("Pending");
    }
}

/// A StorageClass (upstream's `ValidateStorageClass`, defaults from `SetDefaults_StorageClass`).
pub fn validate_sc(obj: &mut Value, causes: &mut Vec<Cause>) {
    if obj["provisioner"].as_str().unwrap_or("").is_empty() {
        causes.push(required("provisioner", ""));
    }
    if obj["reclaimPolicy"].is_null() {
        obj["reclaimPolicy"] = json!("Delete");
    }
    if obj["volumeBindingMode"].is_null() {
        obj["volumeBindingMode"] = json!("Immediate");
    }
    if let Some(p) = obj["reclaimPolicy"].as_str() {
        if !matches!(p, "Retain" | "Delete") {
            causes.push(Cause { reason: "FieldValueNotSupported", field: "reclaimPolicy".into(), message: format!("Unsupported value: \"{p}\": supported values: \"Delete\", \"Retain\"") });
        }
    }
    if let Some(m) = obj["volumeBindingMode"].as_str() {
        if !matches!(m, "Immediate" | "WaitForFirstConsumer") {
            causes.push(Cause { reason: "FieldValueNotSupported", field: "volumeBindingMode".into(), message: format!("Unsupported value: \"{m}\": supported values: \"Immediate\", \"WaitForFirstConsumer\"") });
        }
    }
    allowed_topologies(&obj["allowedTopologies"], causes);
}

/// A class's `allowedTopologies` (upstream's `validateAllowedTopologies`): each expression needs
/// values, without duplicates, and a label key; a key appears once per term; no two terms are
/// the same.
fn allowed_topologies(terms: &Value, causes: &mut Vec<Cause>) {
    let mut seen: Vec<BTreeMap<&str, BTreeSet<&str>>> = Vec::new();
    for (i, term) in terms.as_array().into_iter().flatten().enumerate() {
        let mut exprs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (j, e) in term["matchLabelExpressions"].as_array().into_iter().flatten().enumerate() {
            let at = format!("allowedTopologies[{i}].matchLabelExpressions[{j}]");
            let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if values.is_empty() {
                causes.push(Cause::required(&format!("{at}.values"), ""));
            }
            let mut set = BTreeSet::new();
            for (k, v) in values.iter().enumerate() {
                if !set.insert(*v) {
                    causes.push(Cause::duplicate(&format!("{at}.values[{k}]"), &json!(v)));
                }
            }
            let key = e["key"].as_str().unwrap_or("");
            for why in crate::object::label_key_errors(key) {
                causes.push(Cause::invalid(&format!("{at}.key"), &json!(key), &why));
            }
            if exprs.insert(key, set).is_some() {
                causes.push(Cause::duplicate(&format!("{at}.key"), &json!(key)));
            }
        }
        if seen.contains(&exprs) {
            causes.push(Cause::duplicate(&format!("allowedTopologies[{i}].matchLabelExpressions"), &json!("")));
        }
        seen.push(exprs);
    }
}

/// What an update of a StorageClass may not change (`ValidateStorageClassUpdate`).
pub fn check_update(r: &Resource, new: &Value, old: &Value) -> Result<(), ApiError> {
    if r.kind != "StorageClass" {
        return Ok(());
    }
    let mut causes = Vec::new();
    let norm = |v: &Value| if v.as_object().is_some_and(|m| m.is_empty()) { Value::Null } else { v.clone() };
    if norm(&new["parameters"]) != norm(&old["parameters"]) {
        causes.push(Cause { reason: "FieldValueForbidden", field: "parameters".into(), message: "Forbidden: updates to parameters are forbidden.".into() });
    }
    for (f, what) in [("provisioner", "provisioner"), ("reclaimPolicy", "reclaimPolicy"), ("volumeBindingMode", "volumeBindingMode")] {
        if new[f] != old[f] {
            causes.push(Cause { reason: "FieldValueForbidden", field: f.into(), message: format!("Forbidden: updates to {what} are forbidden.") });
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r, crate::object::name_of(new), causes))
    }
}

fn class_resource() -> Option<&'static Resource> {
    crate::resources::find("storage.k8s.io", "v1", "storageclasses")
}

/// DefaultStorageClass admission: a claim with no `storageClassName` at all (not "") gets the
/// default class (the newest of several, as upstream).
pub async fn admit_pvc(store: &dyn Store, pvc: &mut Value) -> Result<(), ApiError> {
    if !pvc["spec"]["storageClassName"].is_null() {
        return Ok(());
    }
    let Some(r) = class_resource() else { return Ok(()) };
    let page = store.list(&r.key_prefix(), None, 0).await?;
    let mut defaults: Vec<Value> = page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|c| c["metadata"]["annotations"][DEFAULT_CLASS_ANNOTATION] == "true")
        .collect();
    defaults.sort_by(|a, b| {
        let t = |c: &Value| c["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string();
        t(b).cmp(&t(a)).then(crate::object::name_of(a).cmp(crate::object::name_of(b)))
    });
    if let Some(d) = defaults.first() {
        pvc["spec"]["storageClassName"] = d["metadata"]["name"].clone();
    }
    Ok(())
}

/// Create strata's default class when missing (at every start): hostPath volumes under `dir`.
pub async fn ensure_local_class(store: &dyn Store, dir: &Path) -> Result<(), strata_store::Error> {
    let Some(r) = class_resource() else { return Ok(()) };
    let key = r.key(None, LOCAL_CLASS);
    if store.get(&key).await?.is_some() {
        return Ok(());
    }
    let obj = json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": LOCAL_CLASS,
            "uid": crate::object::uuid(),
            "creationTimestamp": crate::object::now(),
            "annotations": { DEFAULT_CLASS_ANNOTATION: "true" },
        },
        "provisioner": LOCAL_PROVISIONER,
        "parameters": { "path": dir.to_string_lossy() },
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    });
    match store.create(&key, crate::object::for_storage(&obj)).await {
        Ok(_) | Err(strata_store::Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: fn(&mut Value, &mut Vec<Cause>), mut obj: Value) -> (Value, Vec<String>) {
        let mut causes = Vec::new();
        f(&mut obj, &mut causes);
        (obj, causes.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect())
    }

    #[test]
    fn volumes_and_classes_are_defaulted_and_validated_as_upstream() {
        let (pv, errs) = check(validate_pv, json!({"metadata": {"name": "a"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/x"}}}));
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!((pv["spec"]["persistentVolumeReclaimPolicy"].as_str(), pv["spec"]["volumeMode"].as_str(), pv["status"]["phase"].as_str()), (Some("Retain"), Some("Filesystem"), Some("Pending")));
        let (_, errs) = check(validate_pv, json!({"metadata": {"name": "a"}, "spec": {"accessModes": ["ReadWriteOnce"]}}));
        assert_eq!(errs, ["spec.capacity: Required value", "spec: Required value: must specify a volume type"]);
        let (_, errs) = check(validate_pv, json!({"metadata": {"name": "a"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["Sometimes"], "hostPath": {"path": "/x"}, "nfs": {"server": "s", "path": "/"}}}));
        assert_eq!(errs.len(), 2, "{errs:?}");
        let (sc, errs) = check(validate_sc, json!({"metadata": {"name": "s"}, "provisioner": "p"}));
        assert!(errs.is_empty());
        assert_eq!((sc["reclaimPolicy"].as_str(), sc["volumeBindingMode"].as_str()), (Some("Delete"), Some("Immediate")));
        let (_, errs) = check(validate_sc, json!({"metadata": {"name": "s"}}));
        assert_eq!(errs, ["provisioner: Required value"]);
        // allowedTopologies as upstream validates them.
        let zoned = |terms: Value| check(validate_sc, json!({"metadata": {"name": "s"}, "provisioner": "p", "allowedTopologies": terms})).1;
        assert!(zoned(json!([{"matchLabelExpressions": [{"key": "topology.kubernetes.io/zone", "values": ["a", "b"]}]}])).is_empty());
        assert_eq!(
            zoned(json!([{"matchLabelExpressions": [{"key": "zone", "values": []}, {"key": "Bad Key!", "values": ["a", "a"]}, {"key": "zone", "values": ["x"]}]}])),
            [
                "allowedTopologies[0].matchLabelExpressions[0].values: Required value",
                "allowedTopologies[0].matchLabelExpressions[1].values[1]: Duplicate value: \"a\"",
                "allowedTopologies[0].matchLabelExpressions[1].key: Invalid value: \"Bad Key!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
                "allowedTopologies[0].matchLabelExpressions[2].key: Duplicate value: \"zone\"",
            ]
        );
        let term = json!({"matchLabelExpressions": [{"key": "zone", "values": ["a"]}]});
        assert_eq!(zoned(json!([term.clone(), term])), ["allowedTopologies[1].matchLabelExpressions: Duplicate value: \"\""]);
        let r = class_resource().expect("served");
        assert!(check_update(r, &json!({"metadata": {"name": "s"}, "provisioner": "q"}), &sc).is_err());
    }
}
