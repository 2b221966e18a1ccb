//! RuntimeClass (node.k8s.io/v1) and upstream's RuntimeClass admission plugin.
//!
//! A class names the node's handler (a DNS label, immutable), an optional fixed pod overhead
//! and optional scheduling constraints. A pod created with `runtimeClassName` gets the class's
//! overhead as `spec.overhead` (a different overhead it states itself is refused), the class's
//! node selector merged into its own (a contradicting key is refused) and the class's
//! tolerations merged with its own (redundant ones dropped, as upstream's `MergeTolerations`);
//! a pod naming a class that does not exist is refused, and so is a pod stating an overhead
//! without a class that defines one.

use serde_json::{json, Map, Value};
use strata_store::Store;

use crate::quantity::Quantity;
use crate::resources::Resource;
use crate::status::{ApiError, Cause};

fn resource() -> Option<&'static Resource> {
    crate::resources::find("node.k8s.io", "v1", "runtimeclasses")
}

/// Standard container resource names (`IsStandardContainerResourceName`): what a resource
/// name without a domain may be in a container's (or a class's overhead) resource list.
fn standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

/// A resource name (`validateResourceName` and its callers): a qualified name, and one without a
/// domain must be `standard` (else `why`).
pub fn resource_name(field: &str, name: &str, standard: fn(&str) -> bool, why: &str, causes: &mut Vec<Cause>) {
    let errs = crate::object::label_key_errors(name);
    if !errs.is_empty() {
        for e in errs {
            causes.push(Cause::invalid(field, &json!(name), &e));
        }
    } else if !name.contains('/') && !standard(name) {
        causes.push(Cause::invalid(field, &json!(name), why));
    }
}

/// A container resource list (`ValidateContainerResourceRequirements` on one list): names
/// standard or fully qualified, quantities non-negative, whole numbers for integer resources.
pub fn validate_resource_list(list: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(m) = list.as_object() else {
        if !list.is_null() {
            causes.push(Cause::invalid(path, list, "must be a map of resource names to quantities"));
        }
        return;
    };
    for (name, v) in m {
        let field = format!("{path}[{name}]");
        resource_name(&field, name, standard_container_resource, "must be a standard resource for containers", causes);
        match Quantity::of(v) {
            None => causes.push(Cause::invalid(&field, v, crate::quantity::SYNTAX)),
            Some(q) if q.milli < 0 => causes.push(Cause::invalid(&field, &json!(v.as_str().map_or_else(|| q.to_string(), str::to_string)), "must be greater than or equal to 0")),
            Some(q) if name.contains('/') && !name.starts_with("kubernetes.io/") && q.milli % 1000 != 0 => {
                causes.push(Cause::invalid(&field, v, "must be an integer"));
            }
            Some(_) => {}
        }
    }
}

/// Node selector labels (`ValidateLabels`).
fn validate_labels(m: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(m) = m.as_object() else { return };
    for (k, v) in m {
        for e in crate::object::label_key_errors(k) {
            causes.push(Cause::invalid(path, &json!(k), &e));
        }
        let v = v.as_str().unwrap_or("");
        for e in crate::object::label_value_errors(v) {
            causes.push(Cause::invalid(path, &json!(v), &e));
        }
    }
}

/// Tolerations (`ValidateTolerations`), with the messages and paths upstream gives.
pub fn validate_tolerations(list: &Value, path: &str, causes: &mut Vec<Cause>) {
    let Some(list) = list.as_array() else { return };
    for (i, t) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let key = t["key"].as_str().unwrap_or("");
        let op = t["operator"].as_str().unwrap_or("");
        let value = t["value"].as_str().unwrap_or("");
        let effect = t["effect"].as_str().unwrap_or("");
        if !key.is_empty() {
            for e in crate::object::label_key_errors(key) {
                causes.push(Cause::invalid(&format!("{at}.key"), &json!(key), &e));
            }
        }
        if key.is_empty() && op != "Exists" {
            causes.push(Cause::invalid(&format!("{at}.operator"), &json!(op), "operator must be Exists when `key` is empty, which means \"match all values and all keys\""));
        }
        if !t["tolerationSeconds"].is_null() && effect != "NoExecute" {
            causes.push(Cause::invalid(&format!("{at}.effect"), &json!(effect), "effect must be 'NoExecute' when `tolerationSeconds` is set"));
        }
        match op {
            "Equal" | "" => {
                let errs = crate::object::label_value_errors(value);
                if !errs.is_empty() {
                    causes.push(Cause::invalid(&format!("{at}.operator"), &json!(value), &errs.join(";")));
                }
            }
            "Exists" if !value.is_empty() => causes.push(Cause::invalid(&format!("{at}.operator"), &json!(value), "value must be empty when `operator` is 'Exists'")),
            "Exists" => {}
            other => causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{at}.operator"),
                message: format!("Unsupported value: {}: supported values: \"Equal\", \"Exists\"", json!(other)),
            }),
        }
        if !effect.is_empty() && !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{at}.effect"),
                message: format!("Unsupported value: {}: supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"", json!(effect)),
            });
        }
    }
}

/// Create and update validation (`ValidateRuntimeClass`).
pub fn validate(obj: &mut Value, causes: &mut Vec<Cause>) {
    let handler = obj["handler"].as_str().unwrap_or("");
    for e in crate::object::dns_label_errors(handler) {
        causes.push(Cause::invalid("handler", &json!(handler), &e));
    }
    if !obj["overhead"].is_null() {
        validate_resource_list(&obj["overhead"]["podFixed"], "overhead.podFixed", causes);
    }
    if !obj["scheduling"].is_null() {
        validate_labels(&obj["scheduling"]["nodeSelector"], "scheduling.nodeSelector", causes);
        let tolerations = &obj["scheduling"]["tolerations"];
        validate_tolerations(tolerations, "scheduling.tolerations", causes);
        let mut seen: Vec<(&Value, &Value, &Value, &Value)> = Vec::new();
        for (i, t) in tolerations.as_array().into_iter().flatten().enumerate() {
            let k = (&t["key"], &t["operator"], &t["value"], &t["effect"]);
            if seen.contains(&k) {
                causes.push(Cause { reason: "FieldValueDuplicate", field: format!("scheduling.tolerations[{i}]"), message: format!("Duplicate value: {t}") });
            }
            seen.push(k);
        }
    }
}

/// What an update may not change (`ValidateRuntimeClassUpdate`): the handler.
pub fn validate_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    if new["handler"] != old["handler"] {
        causes.push(Cause::invalid("handler", &new["handler"], "field is immutable"));
    }
}

/// Is `ss` a superset of `t` (upstream's `isSuperset`): every taint `t` tolerates, `ss` does.
fn superset(ss: &Value, t: &Value) -> bool {
    if ss == t {
        return true;
    }
    let s = |v: &Value, f: &str| v[f].as_str().unwrap_or("").to_string();
    if s(t, "key") != s(ss, "key") && (!s(ss, "key").is_empty() || s(ss, "operator") != "Exists") {
        return false;
    }
    if s(t, "effect") != s(ss, "effect") && !s(ss, "effect").is_empty() {
        return false;
    }
    if s(ss, "effect") == "NoExecute" {
        if let Some(limit) = ss["tolerationSeconds"].as_i64() {
            if t["tolerationSeconds"].as_i64().is_none_or(|secs| secs > limit) {
                return false;
            }
        }
    }
    match s(ss, "operator").as_str() {
        "Equal" | "" => s(t, "operator") == "Equal" && s(t, "value") == s(ss, "value"),
        "Exists" => true,
        _ => false,
    }
}

/// `MergeTolerations`: both lists, each toleration dropped when another covers it.
pub fn merge_tolerations(first: &[Value], second: &[Value]) -> Vec<Value> {
    let all: Vec<&Value> = first.iter().chain(second).collect();
    let mut merged: Vec<Value> = Vec::new();
    'next: for (i, t) in all.iter().enumerate() {
        if merged.iter().any(|m| superset(m, t)) {
            continue;
        }
        if all[i + 1..].iter().any(|t2| t2 != t && superset(t2, t)) {
            continue 'next;
        }
        merged.push((*t).clone());
    }
    merged
}

/// Two resource lists hold the same quantities (apimachinery's semantic equality).
fn same_resources(a: &Value, b: &Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else { return a.as_object().is_none_or(Map::is_empty) && b.as_object().is_none_or(Map::is_empty) };
    a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| Quantity::of(v).map(|q| q.milli) == Quantity::of(w).map(|q| q.milli)))
}

/// RuntimeClass admission of a created pod (mutation, then upstream's validation step).
pub async fn admit_pod(store: &dyn Store, r: &Resource, pod: &mut Value) -> Result<(), ApiError> {
    let name = crate::object::name_of(pod).to_string();
    let forbidden = |why: String| ApiError::forbidden(r, &name, &why);
    let class = match pod["spec"]["runtimeClassName"].as_str() {
        None => None,
        Some(class_name) => {
            let key = resource().map(|rc| rc.key(None, class_name)).unwrap_or_default();
            let Some(kv) = store.get(&key).await? else {
                return Err(forbidden(format!("pod rejected: RuntimeClass {class_name:?} not found")));
            };
            Some(serde_json::from_slice::<Value>(&kv.value).map_err(|e| ApiError::internal(format!("decoding RuntimeClass {class_name}: {e}")))?)
        }
    };
    let overhead = class.as_ref().map(|c| &c["overhead"]).filter(|o| !o.is_null());
    match overhead {
        Some(o) => {
            let fixed = if o["podFixed"].is_null() { json!({}) } else { o["podFixed"].clone() };
            let given = &pod["spec"]["overhead"];
            if given.as_object().is_some_and(|m| !m.is_empty()) && !same_resources(&fixed, given) {
                return Err(forbidden("pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead".into()));
            }
            if o["podFixed"].is_null() {
                if let Some(spec) = pod["spec"].as_object_mut() {
                    spec.remove("overhead");
                }
            } else {
                pod["spec"]["overhead"] = fixed;
            }
        }
        None if !pod["spec"]["overhead"].is_null() => {
            return Err(forbidden("pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead".into()));
        }
        None => {}
    }
    let Some(scheduling) = class.as_ref().map(|c| &c["scheduling"]).filter(|s| !s.is_null()) else { return Ok(()) };
    if let Some(selector) = scheduling["nodeSelector"].as_object() {
        if pod["spec"]["nodeSelector"].is_null() {
            pod["spec"]["nodeSelector"] = json!(selector);
        } else {
            for (k, v) in selector {
                let mine = &pod["spec"]["nodeSelector"][k.as_str()];
                if !mine.is_null() && mine != v {
                    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
                    return Err(forbidden(format!("conflict: runtimeClass.scheduling.nodeSelector[{k}] = {}; pod.spec.nodeSelector[{k}] = {}", s(v), s(mine))));
                }
                pod["spec"]["nodeSelector"][k.as_str()] = v.clone();
            }
        }
    }
    let theirs = scheduling["tolerations"].as_array().cloned().unwrap_or_default();
    if !theirs.is_empty() {
        let mine = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
        pod["spec"]["tolerations"] = Value::Array(merge_tolerations(&mine, &theirs));
    }
    Ok(())
}

/// The class of VM-isolated pods, present from the first start: handler `strata-vm` (the node
/// runtime `strata_driver::MicroVmRuntime`), overhead measured by crates/strata/benches/vmpods.rs
/// with an optimized strata on TCG with an 8 MiB translation cache and free page reporting
/// (docs/benchmarks.md, "VM-isolated pods", runs F and F2): an idle pod's QEMU PSS 159.2 MiB
/// (43.2 outside the guest's RAM, 116.0 of guest RAM resident) plus the agent's 1.8 MiB, rounded
/// up; QEMU's CPU with the guest idle under 5 millicores, so no CPU overhead. Tests compare with
/// this constant, not a copy of it.
pub const VM_CLASS: &str = "strata-vm";
pub const VM_CLASS_OVERHEAD_MEMORY: &str = "161Mi";

/// Create the built-in `strata-vm` RuntimeClass unless it exists (a changed one is kept).
pub async fn ensure_default_classes(store: &dyn Store) -> Result<(), strata_store::Error> {
    let Some(r) = resource() else { return Ok(()) };
    let key = r.key(None, VM_CLASS);
    if store.get(&key).await?.is_some() {
        return Ok(());
    }
    let obj = json!({
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": VM_CLASS, "uid": crate::object::uuid(), "creationTimestamp": crate::object::now()},
        "handler": VM_CLASS,
        "overhead": {"podFixed": {"memory": VM_CLASS_OVERHEAD_MEMORY}},
    });
    match store.create(&key, crate::object::for_storage(&obj)).await {
        Ok(_) | Err(strata_store::Error::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "field: message" of every cause validating `obj` gives.
    fn check(obj: Value) -> Vec<String> {
        let (mut obj, mut found) = (obj, Vec::new());
        validate(&mut obj, &mut found);
        found.iter().map(|c| c.field.clone() + ": " + &c.message).collect()
    }

    #[test]
    fn classes_are_validated_as_upstream() {
        assert!(check(json!({"metadata": {"name": "a"}, "handler": "runc", "overhead": {"podFixed": {"cpu": "100m", "memory": "64Mi"}}})).is_empty());
        assert_eq!(check(json!({"handler": "Runc"}))[0], "handler: Invalid value: \"Runc\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')");
        assert_eq!(check(json!({}))[0].split(": a lowercase").next(), Some("handler: Invalid value: \"\""));
        assert_eq!(check(json!({"handler": "x", "overhead": {"podFixed": {"gpu": "1"}}})), ["overhead.podFixed[gpu]: Invalid value: \"gpu\": must be a standard resource for containers"]);
        assert_eq!(check(json!({"handler": "x", "overhead": {"podFixed": {"example.com/dev": "500m"}}})), ["overhead.podFixed[example.com/dev]: Invalid value: \"500m\": must be an integer"]);
        let dup = json!({"handler": "x", "scheduling": {"tolerations": [{"key": "a", "operator": "Exists"}, {"key": "a", "operator": "Exists"}]}});
        assert_eq!(check(dup)[0], "scheduling.tolerations[1]: Duplicate value: {\"key\":\"a\",\"operator\":\"Exists\"}");
        let mut causes = Vec::new();
        validate_update(&json!({"handler": "b"}), &json!({"handler": "a"}), &mut causes);
        assert_eq!(causes[0].message, "Invalid value: \"b\": field is immutable");
    }

    #[test]
    fn tolerations_merge_without_redundancy() {
        let any = json!({"operator": "Exists"});
        let a = json!({"key": "a", "operator": "Equal", "value": "1", "effect": "NoSchedule"});
        let a_all = json!({"key": "a", "operator": "Exists"});
        let b = json!({"key": "b", "operator": "Exists", "effect": "NoSchedule"});
        assert_eq!(merge_tolerations(&[a.clone()], &[b.clone()]), vec![a.clone(), b.clone()]);
        assert_eq!(merge_tolerations(&[a.clone()], &[a_all.clone()]), vec![a_all.clone()]);
        assert_eq!(merge_tolerations(&[a.clone(), b.clone()], &[any.clone()]), vec![any.clone()]);
        assert_eq!(merge_tolerations(&[a.clone()], &[a.clone()]), vec![a.clone()]);
        let short = json!({"key": "n", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10});
        let long = json!({"key": "n", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300});
        assert_eq!(merge_tolerations(&[short.clone()], &[long.clone()]), vec![long]);
    }
}
