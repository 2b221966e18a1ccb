//! Ephemeral containers: the `pods/ephemeralcontainers` subresource (what `kubectl debug` and
//! client-go's `UpdateEphemeralContainers` write), as upstream's ephemeral-containers strategy
//! and `ValidatePodEphemeralContainersUpdate`: a write there changes nothing of the pod but
//! `spec.ephemeralContainers`, which may only grow (an ephemeral container is never changed or
//! removed); the pod itself never sets or changes them (not on create, not on update).

use serde_json::{json, Value};

use crate::status::Cause;

const FIELD: &str = "spec.ephemeralContainers";

/// Fields an ephemeral container may not have (upstream's `validateEphemeralContainers`:
/// ephemeral containers get no resources, ports, probes or lifecycle of their own).
const FORBIDDEN: [&str; 7] = ["ports", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "resources", "restartPolicy"];

fn list(pod: &Value) -> Vec<Value> {
    pod["spec"]["ephemeralContainers"].as_array().cloned().unwrap_or_default()
}

/// A create: a new pod has no ephemeral containers.
pub fn check_create(pod: &Value, causes: &mut Vec<Cause>) {
    if !list(pod).is_empty() {
        causes.push(Cause { reason: "FieldValueForbidden", field: FIELD.into(), message: "Forbidden: cannot be set on create".into() });
    }
}

/// An update of the pod itself keeps the ephemeral containers it has (they change only through
/// the subresource).
pub fn keep_on_update(new: &mut Value, old: &Value) {
    match old["spec"].get("ephemeralContainers") {
        Some(v) => new["spec"]["ephemeralContainers"] = v.clone(),
        None => {
            if let Some(spec) = new["spec"].as_object_mut() {
                spec.remove("ephemeralContainers");
            }
        }
    }
}

/// A write of the subresource: `new` becomes the stored pod `old` with the request's ephemeral
/// containers (defaulted) and the request's resourceVersion; causes say what is refused.
pub fn prepare(new: &mut Value, old: &Value) -> Vec<Cause> {
    let mut wanted = list(new);
    let rv = new["metadata"]["resourceVersion"].clone();
    let managed = new["metadata"].get("managedFields").cloned();
    let mut causes = Vec::new();
    let before = list(old);
    for (i, c) in wanted.iter_mut().enumerate() {
        crate::validate::container_defaults(c);
        let at = format!("{FIELD}[{i}]");
        let name = c["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(Cause { reason: "FieldValueRequired", field: format!("{at}.name"), message: "Required value".into() });
        }
        if c["image"].as_str().unwrap_or("").is_empty() {
            causes.push(Cause { reason: "FieldValueRequired", field: format!("{at}.image"), message: "Required value".into() });
        }
        for f in FORBIDDEN {
            // (`resources: {}`, as kubectl debug sends it, is none.)
            let empty = |v: &Value| v.is_null() || v.as_object().is_some_and(|o| o.values().all(|x| x.is_null() || x.as_object().is_some_and(|m| m.is_empty()))) || v.as_array().is_some_and(Vec::is_empty);
            if c.get(f).is_some_and(|v| !empty(v)) {
                causes.push(Cause { reason: "FieldValueForbidden", field: format!("{at}.{f}"), message: "Forbidden: cannot be set for an Ephemeral Container".into() });
            }
        }
        if let Some(target) = c["targetContainerName"].as_str().filter(|t| !t.is_empty()) {
            let known = ["containers", "initContainers"].iter().flat_map(|k| old["spec"][*k].as_array().into_iter().flatten()).any(|o| o["name"] == target);
            if !known {
                causes.push(Cause {
                    reason: "FieldValueNotFound",
                    field: format!("{at}.targetContainerName"),
                    message: format!("Not found: {:?}", target),
                });
            }
        }
        let clash = ["containers", "initContainers"].iter().flat_map(|k| old["spec"][*k].as_array().into_iter().flatten()).any(|o| o["name"] == name);
        let again = new["spec"]["ephemeralContainers"].as_array().into_iter().flatten().take(i).any(|o| o["name"] == name);
        if !name.is_empty() && (clash || again) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("{at}.name"), message: format!("Duplicate value: {name:?}") });
        }
    }
    // Existing ones may be neither changed nor removed.
    for b in &before {
        let name = b["name"].as_str().unwrap_or("");
        match wanted.iter().find(|w| w["name"] == name) {
            None => causes.push(Cause { reason: "FieldValueForbidden", field: FIELD.into(), message: format!("Forbidden: existing ephemeral containers {name:?} may not be removed") }),
            Some(w) if w != b => {
                causes.push(Cause { reason: "FieldValueForbidden", field: FIELD.into(), message: format!("Forbidden: existing ephemeral containers {name:?} may not be changed") })
            }
            Some(_) => {}
        }
    }
    *new = old.clone();
    new["spec"]["ephemeralContainers"] = json!(wanted);
    new["metadata"]["resourceVersion"] = rv;
    if let Some(m) = new["metadata"].as_object_mut() {
        match managed {
            Some(v) => m.insert("managedFields".into(), v),
            None => m.remove("managedFields"),
        };
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ephemeral: Value) -> Value {
        json!({"metadata": {"name": "p", "resourceVersion": "5", "labels": {"a": "b"}},
               "spec": {"containers": [{"name": "main", "image": "img"}], "ephemeralContainers": ephemeral},
               "status": {"phase": "Running"}})
    }

    #[test]
    fn only_ephemeral_containers_change_and_only_by_growing() {
        let old = pod(json!([]));
        // The request's other changes (a label, the image of a container) are dropped.
        let mut new = pod(json!([{"name": "debugger", "image": "busybox:1"}]));
        new["metadata"]["labels"]["a"] = json!("changed");
        new["spec"]["containers"][0]["image"] = json!("other");
        new["metadata"]["resourceVersion"] = json!("5");
        assert!(prepare(&mut new, &old).is_empty());
        assert_eq!(new["metadata"]["labels"]["a"], "b");
        assert_eq!(new["spec"]["containers"][0]["image"], "img");
        assert_eq!(new["spec"]["ephemeralContainers"][0]["terminationMessagePolicy"], "File");
        assert_eq!(new["spec"]["ephemeralContainers"][0]["imagePullPolicy"], "IfNotPresent");
        let stored = new.clone();

        // Changing or removing an existing one is refused; a duplicate name too.
        let mut changed = stored.clone();
        changed["spec"]["ephemeralContainers"][0]["image"] = json!("busybox:2");
        let causes = prepare(&mut changed, &stored);
        assert!(causes.iter().any(|c| c.message.contains("\"debugger\" may not be changed")), "{causes:?}");
        let mut removed = stored.clone();
        removed["spec"]["ephemeralContainers"] = json!([]);
        let causes = prepare(&mut removed, &stored);
        assert!(causes.iter().any(|c| c.message.contains("may not be removed")), "{causes:?}");
        let mut dup = stored.clone();
        dup["spec"]["ephemeralContainers"].as_array_mut().expect("list").push(json!({"name": "main", "image": "x"}));
        let causes = prepare(&mut dup, &stored);
        assert_eq!(causes.iter().map(|c| (c.reason, c.field.as_str())).collect::<Vec<_>>(), vec![("FieldValueDuplicate", "spec.ephemeralContainers[1].name")]);
        // kubectl debug sends `resources: {}`: that is none.
        let mut empty = stored.clone();
        empty["spec"]["ephemeralContainers"].as_array_mut().expect("list").push(json!({"name": "d3", "image": "x", "resources": {}}));
        assert!(prepare(&mut empty, &stored).is_empty());
        let mut probe = stored.clone();
        probe["spec"]["ephemeralContainers"].as_array_mut().expect("list").push(json!({"name": "d2", "image": "x", "ports": [{"containerPort": 80}]}));
        let causes = prepare(&mut probe, &stored);
        assert_eq!(causes.iter().map(|c| c.field.as_str()).collect::<Vec<_>>(), vec!["spec.ephemeralContainers[1].ports"]);
    }

    #[test]
    fn pods_never_set_them_themselves() {
        let mut causes = Vec::new();
        check_create(&pod(json!([{"name": "d", "image": "x"}])), &mut causes);
        assert_eq!(causes.len(), 1);
        let old = pod(json!([{"name": "d", "image": "x"}]));
        let mut new = pod(json!([]));
        keep_on_update(&mut new, &old);
        assert_eq!(new["spec"]["ephemeralContainers"], old["spec"]["ephemeralContainers"]);
    }
}
