//! PriorityClass (scheduling.k8s.io/v1) and upstream's Priority admission plugin: the two
//! built-in classes (`system-node-critical`, `system-cluster-critical`) exist from the first
//! start, a class's value and preemption policy never change, at most one class is the global
//! default, and a pod gets `spec.priority` (and `preemptionPolicy`) from its
//! `priorityClassName`, or from the global default class, or 0.

use serde_json::{json, Value};
use strata_store::Store;

use crate::resources::Resource;
use crate::status::{ApiError, Cause};

/// The largest value a user-defined class may have (`HighestUserDefinablePriority`).
pub const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;
const SYSTEM_PREFIX: &str = "system-";

/// (name, value, description) of the built-in classes.
pub const SYSTEM_CLASSES: &[(&str, i64, &str)] = &[
    ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
];

fn resource() -> Option<&'static Resource> {
    crate::resources::find("scheduling.k8s.io", "v1", "priorityclasses")
}

fn forbidden(field: &str, detail: String) -> Cause {
    Cause::forbidden(field, &detail)
}

/// Defaulting and create validation (upstream's `ValidatePriorityClass`).
pub fn validate(obj: &mut Value, causes: &mut Vec<Cause>) {
    if obj["value"].is_null() {
        obj["value"] = json!(0);
    }
    if obj["preemptionPolicy"].is_null() {
        obj["preemptionPolicy"] = json!("PreemptLowerPriority");
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let Some(value) = obj["value"].as_i64() else {
        causes.push(Cause { reason: "FieldValueInvalid", field: "value".into(), message: format!("Invalid value: {}: must be an integer", obj["value"]) });
        return;
    };
    let global = obj["globalDefault"].as_bool().unwrap_or(false);
    if name.starts_with(SYSTEM_PREFIX) {
        let why = match SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name) {
            None => Some(format!("{name} is not a known system priority class")),
            Some((n, v, _)) if *v != value => Some(format!("value of {n} PriorityClass must be {v}")),
            Some((n, _, _)) if global => Some(format!("globalDefault of {n} PriorityClass must be false")),
            Some(_) => None,
        };
        if let Some(why) = why {
            causes.push(forbidden("metadata.name", format!("priority class names with '{SYSTEM_PREFIX}' prefix are reserved for system use only. error: {why}")));
        }
    } else if value > HIGHEST_USER_DEFINABLE {
        causes.push(forbidden("value", format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}")));
    }
    match obj["preemptionPolicy"].as_str() {
        Some("PreemptLowerPriority" | "Never") => {}
        _ => causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "preemptionPolicy".into(),
            message: format!("Unsupported value: {}: supported values: \"Never\", \"PreemptLowerPriority\"", obj["preemptionPolicy"]),
        }),
    }
}

/// Update rules: value and preemption policy are immutable.
pub fn check_update(r: &Resource, new: &Value, old: &Value) -> Result<(), ApiError> {
    if r.kind != "PriorityClass" {
        return Ok(());
    }
    let mut causes = Vec::new();
    let value = if new["value"].is_null() { &json!(0) } else { &new["value"] };
    if *value != old["value"] {
        causes.push(forbidden("value", "may not be changed in an update.".into()));
    }
    let policy = if new["preemptionPolicy"].is_null() { &old["preemptionPolicy"] } else { &new["preemptionPolicy"] };
    if *policy != old["preemptionPolicy"] {
        causes.push(Cause { reason: "FieldValueInvalid", field: "preemptionPolicy".into(), message: format!("Invalid value: {policy}: field is immutable") });
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r, crate::object::name_of(new), causes))
    }
}

/// The global default class (the smallest value among those marked, as upstream). Every pod
/// created asks, so a class is decoded whole only when it is marked.
async fn default_class(store: &dyn Store) -> Result<Option<Value>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Marked {
        #[serde(rename = "globalDefault", default)]
        global_default: Option<bool>,
    }
    let Some(r) = resource() else { return Ok(None) };
    let page = store.list(&r.key_prefix(), None, 0).await?;
    let marked = page.items.iter().filter(|kv| serde_json::from_slice::<Marked>(&kv.value).is_ok_and(|m| m.global_default == Some(true)));
    let mut all: Vec<Value> = marked.filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
    all.sort_by_key(|c| c["value"].as_i64().unwrap_or(0));
    Ok(all.into_iter().next())
}

/// Admission of a created or updated PriorityClass: only one global default.
pub async fn admit_class(store: &dyn Store, r: &Resource, obj: &Value) -> Result<(), ApiError> {
    if obj["globalDefault"].as_bool() != Some(true) {
        return Ok(());
    }
    let name = crate::object::name_of(obj);
    if let Some(d) = default_class(store).await? {
        let other = crate::object::name_of(&d);
        if other != name {
            return Err(ApiError::forbidden(r, name, &format!("PriorityClass {other} is already marked as default. Only one default can exist")));
        }
    }
    Ok(())
}

/// Admission of a created pod: `spec.priority` and `spec.preemptionPolicy` from its class.
pub async fn admit_pod(store: &dyn Store, r: &Resource, pod: &mut Value) -> Result<(), ApiError> {
    let name = crate::object::name_of(pod).to_string();
    let class_name = pod["spec"]["priorityClassName"].as_str().unwrap_or("").to_string();
    let (priority, policy) = if class_name.is_empty() {
        match default_class(store).await? {
            Some(d) => {
                pod["spec"]["priorityClassName"] = d["metadata"]["name"].clone();
                (d["value"].as_i64().unwrap_or(0), d["preemptionPolicy"].as_str().map(str::to_string))
            }
            None => (0, Some("PreemptLowerPriority".to_string())),
        }
    } else {
        let key = resource().map(|pc| pc.key(None, &class_name)).unwrap_or_default();
        let Some(kv) = store.get(&key).await? else {
            return Err(ApiError::forbidden(r, &name, &format!("no PriorityClass with name {class_name} was found")));
        };
        let pc: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(format!("decoding PriorityClass {class_name}: {e}")))?;
        (pc["value"].as_i64().unwrap_or(0), pc["preemptionPolicy"].as_str().map(str::to_string))
    };
    if let Some(given) = pod["spec"]["priority"].as_i64() {
        if given != priority {
            return Err(ApiError::forbidden(
                r,
                &name,
                &format!("the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"),
            ));
        }
    }
    pod["spec"]["priority"] = json!(priority);
    if let Some(policy) = policy {
        if let Some(given) = pod["spec"]["preemptionPolicy"].as_str() {
            if given != policy {
                return Err(ApiError::forbidden(
                    r,
                    &name,
                    &format!("the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"),
                ));
            }
        }
        pod["spec"]["preemptionPolicy"] = json!(policy);
    }
    Ok(())
}

/// On a pod update, the priority set at creation stays (upstream's admission on update).
pub fn keep_pod_priority(new: &mut Value, old: &Value) {
    for f in ["priority", "preemptionPolicy"] {
        if new["spec"][f].is_null() && !old["spec"][f].is_null() {
            new["spec"][f] = old["spec"][f].clone();
        }
    }
}

/// Create the built-in classes that are missing (at every start, as kube-apiserver's
/// post-start hook does).
pub async fn ensure_system_classes(store: &dyn Store) -> Result<(), strata_store::Error> {
    let Some(r) = resource() else { return Ok(()) };
    for (name, value, description) in SYSTEM_CLASSES {
        let key = r.key(None, name);
        if store.get(&key).await?.is_some() {
            continue;
        }
        let obj = json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name, "uid": crate::object::uuid(), "creationTimestamp": crate::object::now()},
            "value": value,
            "description": description,
            "preemptionPolicy": "PreemptLowerPriority",
        });
        match store.create(&key, crate::object::for_storage(&obj)).await {
            Ok(_) | Err(strata_store::Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(mut obj: Value) -> Vec<String> {
        let mut causes = Vec::new();
        validate(&mut obj, &mut causes);
        causes.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn classes_are_validated_as_upstream() {
        assert!(check(json!({"metadata": {"name": "high"}, "value": 1000})).is_empty());
        assert_eq!(check(json!({"metadata": {"name": "huge"}, "value": 1_000_000_001})), ["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]);
        assert_eq!(
            check(json!({"metadata": {"name": "system-mine"}, "value": 1})),
            ["metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class"]
        );
        assert!(check(json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000})).is_empty());
        let mut o = json!({"metadata": {"name": "p"}, "value": 5});
        validate(&mut o, &mut Vec::new());
        assert_eq!(o["preemptionPolicy"], "PreemptLowerPriority");
        let r = resource().expect("served");
        let old = json!({"metadata": {"name": "p"}, "value": 5, "preemptionPolicy": "Never"});
        assert!(check_update(r, &json!({"metadata": {"name": "p"}, "value": 6, "preemptionPolicy": "Never"}), &old).is_err());
        assert!(check_update(r, &json!({"metadata": {"name": "p"}, "value": 5, "description": "d"}), &old).is_ok());
    }
}
