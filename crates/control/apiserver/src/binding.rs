//! `pods/binding`'s change to a stored pod: `spec.nodeName` set and the `PodScheduled`
//! condition made true, as upstream's binding storage does (`setPodNodeAndMetadata` and the
//! condition update of `assignPod`), refused when the pod is bound already or being deleted.
//!
//! [`assign`] does it on the stored JSON without decoding the pod into a `Value` tree (only the
//! small `status` is decoded), for the scheduler's hot path; [`assign_value`] on a `Value`,
//! for what the raw path does not take. Both give the same bytes (tested).

use serde::Deserialize;
use serde_json::{json, Value};

use crate::rawjson;

/// What a binding does to a pod.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The pod to store: bound to the node.
    Bound(Vec<u8>),
    /// Refused: the pod is bound to this node already.
    Assigned(String),
    /// Refused: the pod is being deleted.
    Deleting,
    /// Refused: the binding names another uid than the pod's.
    OtherUid,
}

/// Bind the stored pod `json` to `node` (`uid`: the binding's `metadata.uid`, if any), at
/// `now` (the condition's transition time). `None`: not a shape this path takes (the caller
/// decodes the pod and uses [`assign_value`]).
pub fn assign(json: &[u8], node: &str, uid: Option<&str>, now: &str) -> Option<Outcome> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta<'a> {
        // `null` is `None`, as `Value::is_null` sees it.
        deletion_timestamp: Option<serde::de::IgnoredAny>,
        #[serde(borrow)]
        uid: Option<std::borrow::Cow<'a, str>>,
        // Never stored; present, the object takes the `Value` path (which leaves them out).
        resource_version: Option<serde::de::IgnoredAny>,
        self_link: Option<serde::de::IgnoredAny>,
    }
    let mut top = rawjson::members_of_slice(json)?;
    let meta: Meta = serde_json::from_str(rawjson::get(&top, "metadata")?.get()).ok()?;
    if meta.resource_version.is_some() || meta.self_link.is_some() {
        return None;
    }
    let mut spec = rawjson::members(rawjson::get(&top, "spec")?.get())?;
    if let Some(current) = rawjson::get(&spec, "nodeName") {
        match serde_json::from_str::<Value>(current.get()).ok()? {
            Value::String(n) if !n.is_empty() => return Some(Outcome::Assigned(n)),
            _ => {}
        }
    }
    if meta.deletion_timestamp.is_some() {
        return Some(Outcome::Deleting);
    }
    if uid.is_some_and(|u| meta.uid.as_deref() != Some(u)) {
        return Some(Outcome::OtherUid);
    }
    let mut status = match rawjson::get(&top, "status") {
        Some(s) => serde_json::from_str::<Value>(s.get()).ok()?,
        None => Value::Null,
    };
    if !(status.is_object() || status.is_null()) {
        return None;
    }
    set_pod_scheduled(&mut status, now);
    rawjson::set(&mut spec, "nodeName", node)?;
    let spec = rawjson::to_raw(&spec)?;
    top.insert(rawjson::Key::of("spec"), std::borrow::Cow::Owned(spec));
    rawjson::set(&mut top, "status", &status)?;
    let bytes = rawjson::to_vec(&top)?;
    // Too large: the `Value` path gives the error.
    (bytes.len() <= crate::object::MAX_STORED).then_some(Outcome::Bound(bytes))
}

/// [`assign`] on a decoded pod (stored form); `Bound` holds [`crate::object::storable`]'s
/// bytes.
pub fn assign_value(mut pod: Value, node: &str, uid: Option<&str>, now: &str) -> Result<Outcome, crate::status::ApiError> {
    if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
        return Ok(Outcome::Assigned(current.to_string()));
    }
    if !pod["metadata"]["deletionTimestamp"].is_null() {
        return Ok(Outcome::Deleting);
    }
    if uid.is_some_and(|u| pod["metadata"]["uid"].as_str() != Some(u)) {
        return Ok(Outcome::OtherUid);
    }
    pod["spec"]["nodeName"] = json!(node);
    if !(pod["status"].is_object() || pod["status"].is_null()) {
        pod["status"] = json!({});
    }
    set_pod_scheduled(&mut pod["status"], now);
    Ok(Outcome::Bound(crate::object::storable(&pod)?))
}

/// The pod's `PodScheduled` condition true (its transition time kept if it was true already).
fn set_pod_scheduled(status: &mut Value, now: &str) {
    let conds = &mut status["conditions"];
    if !conds.is_array() {
        *conds = json!([]);
    }
    let Some(list) = conds.as_array_mut() else { return };
    let fresh = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    match list.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(c) => {
            let mut fresh = fresh;
            if c["status"] == "True" {
                fresh["lastTransitionTime"] = c["lastTransitionTime"].clone();
            }
            *c = fresh;
        }
        None => list.push(fresh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-12-01T10:00:00Z";

    /// A pod as strata stores it.
    fn stored(pod: Value) -> Vec<u8> {
        crate::object::storable(&pod).expect("storable")
    }

    fn both(json: &[u8], uid: Option<&str>) -> (Option<Outcome>, Outcome) {
        let raw = assign(json, "node-1", uid, NOW);
        let value = assign_value(serde_json::from_slice(json).expect("json"), "node-1", uid, NOW).expect("value path");
        (raw, value)
    }

    fn base() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default", "uid": "u-1", "labels": {"app": "w\u{e9}b", "q\"uote": "a\\b"},
                         "annotations": {"n": "1.5e3"}, "creationTimestamp": "2026-12-01T09:00:00Z"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "100m"}}}],
                     "priority": 0, "terminationGracePeriodSeconds": 30, "x": 1.25, "big": 12345678901234567890u64},
            "status": {"phase": "Pending", "qosClass": "Burstable"}
        })
    }

    #[test]
    fn the_raw_path_writes_what_the_value_path_writes() {
        let mut cases = vec![base()];
        // No status at all; status null; conditions that are not a list.
        let mut p = base();
        p.as_object_mut().map(|o| o.remove("status"));
        cases.push(p);
        let mut p = base();
        p["status"] = Value::Null;
        cases.push(p);
        let mut p = base();
        p["status"]["conditions"] = json!("odd");
        cases.push(p);
        // An unschedulable condition becomes true with a new transition time; a true one
        // keeps its time; other conditions stay as they are.
        let mut p = base();
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
        cases.push(p);
        let mut p = base();
        p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]);
        cases.push(p);
        // An empty node name may be bound; a null deletion timestamp is no deletion.
        let mut p = base();
        p["spec"]["nodeName"] = json!("");
        p["metadata"]["deletionTimestamp"] = Value::Null;
        cases.push(p);
        for pod in cases {
            let json = stored(pod.clone());
            let (raw, value) = both(&json, Some("u-1"));
            let Some(Outcome::Bound(raw)) = raw else { panic!("raw path refused {pod}: {raw:?}") };
            let Outcome::Bound(value) = value else { panic!("value path refused {pod}: {value:?}") };
            assert_eq!(String::from_utf8_lossy(&raw), String::from_utf8_lossy(&value), "{pod}");
            let bound: Value = serde_json::from_slice(&raw).expect("json");
            assert_eq!(bound["spec"]["nodeName"], "node-1");
            let scheduled: Vec<_> = bound["status"]["conditions"].as_array().expect("conditions").iter().filter(|c| c["type"] == "PodScheduled").collect();
            assert_eq!(scheduled.len(), 1, "{bound}");
            assert_eq!(scheduled[0]["status"], "True");
        }
        // The transition time of a condition that was true already is kept.
        let mut p = base();
        p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]);
        let Some(Outcome::Bound(raw)) = assign(&stored(p), "node-1", None, NOW) else { panic!("refused") };
        let bound: Value = serde_json::from_slice(&raw).expect("json");
        assert_eq!(bound["status"]["conditions"][0]["lastTransitionTime"], "2025-01-01T00:00:00Z");
    }

    #[test]
    fn both_paths_refuse_alike() {
        let mut bound = base();
        bound["spec"]["nodeName"] = json!("node-0");
        let mut deleting = base();
        deleting["metadata"]["deletionTimestamp"] = json!("2026-12-01T09:30:00Z");
        let mut both_ways = deleting.clone();
        both_ways["spec"]["nodeName"] = json!("node-0");
        for (pod, uid, want) in [
            (bound, None, Outcome::Assigned("node-0".into())),
            (deleting, None, Outcome::Deleting),
            // Bound and being deleted: "already assigned", as the checks go in that order.
            (both_ways, None, Outcome::Assigned("node-0".into())),
            (base(), Some("u-2"), Outcome::OtherUid),
        ] {
            let json = stored(pod.clone());
            let (raw, value) = both(&json, uid);
            assert_eq!(raw.as_ref(), Some(&want), "{pod}");
            assert_eq!(value, want, "{pod}");
        }
        // A pod with no uid and a binding with one: another uid.
        let mut p = base();
        p["metadata"].as_object_mut().map(|m| m.remove("uid"));
        assert_eq!(both(&stored(p), Some("u-1")).0, Some(Outcome::OtherUid));
    }

    #[test]
    fn shapes_the_raw_path_does_not_take_go_to_the_value_path() {
        let odd = [
            // Not an object, no metadata, no spec, a spec or status of the wrong type.
            json!([1, 2]),
            json!({"kind": "Pod", "spec": {}}),
            json!({"kind": "Pod", "metadata": {"name": "p"}}),
            json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": "x"}),
            json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {}, "status": "x"}),
            // A uid that is not a string; a node name that is not one.
            json!({"kind": "Pod", "metadata": {"name": "p", "uid": 5}, "spec": {}}),
        ];
        for pod in odd {
            let json = serde_json::to_vec(&pod).expect("json");
            assert_eq!(assign(&json, "node-1", None, NOW), None, "{pod}");
        }
        // A metadata with a resourceVersion (never stored): the value path leaves it out.
        let json = br#"{"metadata":{"name":"p","resourceVersion":"5"},"spec":{}}"#;
        assert_eq!(assign(json, "node-1", None, NOW), None);
        let Outcome::Bound(v) = assign_value(serde_json::from_slice(json).expect("json"), "node-1", None, NOW).expect("value") else { panic!() };
        assert!(!String::from_utf8_lossy(&v).contains("resourceVersion"));
        // A status that is not an object is replaced on the value path, not a panic.
        let json = br#"{"metadata":{"name":"p"},"spec":{},"status":"x"}"#;
        let Outcome::Bound(v) = assign_value(serde_json::from_slice(json).expect("json"), "node-1", None, NOW).expect("value") else { panic!() };
        assert_eq!(serde_json::from_slice::<Value>(&v).expect("json")["status"]["conditions"][0]["type"], "PodScheduled");
        // Input written by others: escapes, spacing and a repeated key read as a `Value` reads
        // them (the members not changed keep their spelling: the same JSON, other bytes).
        let json = br#"{ "metadata" : {"name":"p", "uid":"u\u002d1"}, "spec": {"nodeName": "", "nodeName": null, "a\u0062": 1}, "status": {} }"#;
        let (Some(Outcome::Bound(raw)), Outcome::Bound(value)) = both(json, Some("u-1")) else { panic!("refused") };
        let decoded = |b: &[u8]| serde_json::from_slice::<Value>(b).expect("json");
        assert_eq!(decoded(&raw), decoded(&value));
    }
}
