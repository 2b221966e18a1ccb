//! Built-in kinds served at more than one group/version from one stored form, as upstream:
//! HorizontalPodAutoscaler is stored at autoscaling/v2 and served at v1 and v2 (v1's
//! `targetCPUUtilizationPercentage` is v2's CPU utilization metric; what v1 cannot say travels in
//! upstream's round-trip annotations `autoscaling.alpha.kubernetes.io/{metrics,current-metrics,
//! conditions,behavior}`), and events.k8s.io/v1 Event is a view of the stored core/v1 Event
//! (`regarding`/`note`/`deprecated*` for `involvedObject`/`message`/`source`/...). Objects are
//! converted to their storage form before every write ([`storage_form`]) and to the requested
//! version on every read, list and watch ([`served_form`], which also does a custom kind's).

use serde_json::{json, Map, Value};

use crate::resources::Resource;

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

/// Is this kind stored in another form than it is served at?
pub fn converted(r: &Resource) -> bool {
    !r.custom && matches!((r.group, r.version, r.kind), ("autoscaling", "v1", "HorizontalPodAutoscaler") | ("events.k8s.io", "v1", "Event"))
}

/// A field selector of a converted kind in the stored form's field names (upstream's field label
/// conversion of events.k8s.io: `regarding.*` is `involvedObject.*`).
pub fn field_selector(r: &Resource, s: &str) -> String {
    if r.custom || !(r.group == "events.k8s.io" && r.kind == "Event") {
        return s.to_string();
    }
    s.split(',').map(|part| part.trim().strip_prefix("regarding.").map_or_else(|| part.to_string(), |rest| format!("involvedObject.{rest}"))).collect::<Vec<_>>().join(",")
}

/// The object as served at `r`'s version.
pub fn served_form(r: &Resource, obj: &mut Value) {
    if r.custom {
        crate::crd::served_form(r, obj);
        return;
    }
    if converted(r) {
        served_form_at(obj, &r.api_version());
    }
}

/// A stored object as served at `api_version` (unchanged if it is not a converted kind).
pub fn served_form_at(obj: &mut Value, api_version: &str) {
    let stored = obj["apiVersion"].as_str().unwrap_or("").to_string();
    match (api_version, obj["kind"].as_str().unwrap_or(""), stored.as_str()) {
        ("autoscaling/v1", "HorizontalPodAutoscaler", "autoscaling/v2") => hpa_to_v1(obj),
        ("events.k8s.io/v1", "Event", "v1") => event_to_events_v1(obj),
        _ => {}
    }
}

/// The object in its storage form (a write at another version than the stored one).
pub fn storage_form(obj: &mut Value) {
    match (obj["apiVersion"].as_str().unwrap_or(""), obj["kind"].as_str().unwrap_or("")) {
        ("autoscaling/v1", "HorizontalPodAutoscaler") => hpa_to_v2(obj),
        ("events.k8s.io/v1", "Event") => event_to_core(obj),
        _ => {}
    }
}

fn annotations(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"]["annotations"].is_object() {
        obj["metadata"]["annotations"] = json!({});
    }
    obj["metadata"]["annotations"].as_object_mut().expect("an object was just put there")
}

fn take_annotation(obj: &mut Value, key: &str) -> Option<Value> {
    let m = obj["metadata"]["annotations"].as_object_mut()?;
    let v = m.remove(key)?;
    if m.is_empty() {
        if let Some(meta) = obj["metadata"].as_object_mut() {
            meta.remove("annotations");
        }
    }
    serde_json::from_str(v.as_str()?).ok()
}

fn set(out: &mut Value, key: &str, v: &Value) {
    if !v.is_null() {
        out[key] = v.clone();
    }
}

/// A v2 MetricSpec as autoscaling/v1's (what the metrics annotation holds).
fn metric_to_v1(m: &Value) -> Value {
    let ty = m["type"].as_str().unwrap_or("");
    let mut out = json!({"type": ty});
    match ty {
        "Object" => {
            let o = &m["object"];
            let mut v = json!({"target": o["describedObject"], "metricName": o["metric"]["name"]});
            set(&mut v, "targetValue", &o["target"]["value"]);
            set(&mut v, "averageValue", &o["target"]["averageValue"]);
            set(&mut v, "selector", &o["metric"]["selector"]);
            out["object"] = v;
        }
        "Pods" => {
            let p = &m["pods"];
            let mut v = json!({"metricName": p["metric"]["name"], "targetAverageValue": p["target"]["averageValue"]});
            set(&mut v, "selector", &p["metric"]["selector"]);
            out["pods"] = v;
        }
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" { "resource" } else { "containerResource" };
            let r = &m[key];
            let mut v = json!({"name": r["name"]});
            set(&mut v, "targetAverageUtilization", &r["target"]["averageUtilization"]);
            set(&mut v, "targetAverageValue", &r["target"]["averageValue"]);
            set(&mut v, "container", &r["container"]);
            out[key] = v;
        }
        "External" => {
            let e = &m["external"];
            let mut v = json!({"metricName": e["metric"]["name"]});
            set(&mut v, "metricSelector", &e["metric"]["selector"]);
            set(&mut v, "targetValue", &e["target"]["value"]);
            set(&mut v, "targetAverageValue", &e["target"]["averageValue"]);
            out["external"] = v;
        }
        _ => {}
    }
    out
}

/// An autoscaling/v1 MetricSpec (from the annotation) as v2's.
fn metric_to_v2(m: &Value) -> Value {
    let ty = m["type"].as_str().unwrap_or("");
    let target = |value: &Value, average: &Value, utilization: &Value| {
        let mut t = json!({});
        if !utilization.is_null() {
            t["type"] = json!("Utilization");
            t["averageUtilization"] = utilization.clone();
        } else if !average.is_null() {
            t["type"] = json!("AverageValue");
            t["averageValue"] = average.clone();
        } else {
            t["type"] = json!("Value");
            t["value"] = value.clone();
        }
        t
    };
    let metric = |name: &Value, selector: &Value| {
        let mut v = json!({"name": name});
        set(&mut v, "selector", selector);
        v
    };
    let mut out = json!({"type": ty});
    match ty {
        "Object" => {
            let o = &m["object"];
            out["object"] = json!({"describedObject": o["target"], "metric": metric(&o["metricName"], &o["selector"]), "target": target(&o["targetValue"], &o["averageValue"], &Value::Null)});
        }
        "Pods" => {
            let p = &m["pods"];
            out["pods"] = json!({"metric": metric(&p["metricName"], &p["selector"]), "target": target(&Value::Null, &p["targetAverageValue"], &Value::Null)});
        }
        "Resource" | "ContainerResource" => {
            let key = if ty == "Resource" { "resource" } else { "containerResource" };
            let r = &m[key];
            let mut v = json!({"name": r["name"], "target": target(&Value::Null, &r["targetAverageValue"], &r["targetAverageUtilization"])});
            set(&mut v, "container", &r["container"]);
            out[key] = v;
        }
        "External" => {
            let e = &m["external"];
            out["external"] = json!({"metric": metric(&e["metricName"], &e["metricSelector"]), "target": target(&e["targetValue"], &e["targetAverageValue"], &Value::Null)});
        }
        _ => {}
    }
    out
}

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource" && m["resource"]["name"] == "cpu" && !m["resource"]["target"]["averageUtilization"].is_null()
}

/// autoscaling/v2 -> v1.
fn hpa_to_v1(obj: &mut Value) {
    obj["apiVersion"] = json!("autoscaling/v1");
    for k in [METRICS, CURRENT_METRICS, CONDITIONS, BEHAVIOR] {
        if let Some(m) = obj["metadata"]["annotations"].as_object_mut() {
            m.remove(k);
        }
    }
    let spec = obj["spec"].take();
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let mut v1 = json!({"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]});
    set(&mut v1, "minReplicas", &spec["minReplicas"]);
    if let Some(cpu) = metrics.iter().find(|m| is_cpu_utilization(m)) {
        v1["targetCPUUtilizationPercentage"] = cpu["resource"]["target"]["averageUtilization"].clone();
    }
    let others: Vec<Value> = metrics.iter().filter(|m| !is_cpu_utilization(m)).map(metric_to_v1).collect();
    if !others.is_empty() {
        annotations(obj).insert(METRICS.into(), json!(Value::Array(others).to_string()));
    }
    if !spec["behavior"].is_null() {
        annotations(obj).insert(BEHAVIOR.into(), json!(spec["behavior"].to_string()));
    }
    obj["spec"] = v1;
    let status = obj["status"].take();
    if status.is_object() {
        let mut v1 = json!({"currentReplicas": status["currentReplicas"].as_i64().unwrap_or(0), "desiredReplicas": status["desiredReplicas"]});
        set(&mut v1, "observedGeneration", &status["observedGeneration"]);
        set(&mut v1, "lastScaleTime", &status["lastScaleTime"]);
        let current = status["currentMetrics"].as_array().cloned().unwrap_or_default();
        if let Some(cpu) = current.iter().find(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu") {
            set(&mut v1, "currentCPUUtilizationPercentage", &cpu["resource"]["current"]["averageUtilization"]);
        }
        if !current.is_empty() {
            annotations(obj).insert(CURRENT_METRICS.into(), json!(Value::Array(current).to_string()));
        }
        if status["conditions"].as_array().is_some_and(|c| !c.is_empty()) {
            annotations(obj).insert(CONDITIONS.into(), json!(status["conditions"].to_string()));
        }
        obj["status"] = v1;
    }
}

/// autoscaling/v1 -> v2 (the round-trip annotations back into fields).
fn hpa_to_v2(obj: &mut Value) {
    obj["apiVersion"] = json!("autoscaling/v2");
    let spec = obj["spec"].take();
    let mut v2 = json!({"scaleTargetRef": spec["scaleTargetRef"], "maxReplicas": spec["maxReplicas"]});
    set(&mut v2, "minReplicas", &spec["minReplicas"]);
    let mut metrics = Vec::new();
    if let Some(p) = spec["targetCPUUtilizationPercentage"].as_i64() {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": p}}}));
    }
    if let Some(Value::Array(others)) = take_annotation(obj, METRICS) {
        metrics.extend(others.iter().map(metric_to_v2));
    }
    if !metrics.is_empty() {
        v2["metrics"] = Value::Array(metrics);
    }
    if let Some(b) = take_annotation(obj, BEHAVIOR) {
        v2["behavior"] = b;
    }
    obj["spec"] = v2;
    let current = take_annotation(obj, CURRENT_METRICS);
    let conditions = take_annotation(obj, CONDITIONS);
    let status = obj["status"].take();
    if status.is_object() {
        let mut v2 = json!({"desiredReplicas": status["desiredReplicas"]});
        set(&mut v2, "currentReplicas", &status["currentReplicas"]);
        set(&mut v2, "observedGeneration", &status["observedGeneration"]);
        set(&mut v2, "lastScaleTime", &status["lastScaleTime"]);
        match current {
            Some(c) => v2["currentMetrics"] = c,
            None => {
                if let Some(p) = status["currentCPUUtilizationPercentage"].as_i64() {
                    v2["currentMetrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": p}}}]);
                }
            }
        }
        if let Some(c) = conditions {
            v2["conditions"] = c;
        }
        obj["status"] = v2;
    }
}

/// Move `from` of `src` to `to` of `dst` when present.
fn mv(src: &mut Value, from: &str, dst: &mut Value, to: &str) {
    if let Some(v) = src.as_object_mut().and_then(|m| m.remove(from)) {
        if !v.is_null() {
            dst[to] = v;
        }
    }
}

/// (core/v1 field, events.k8s.io/v1 field) of an Event; `count` is `deprecatedCount` (apart:
/// a zero count is not written).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("metadata", "metadata"),
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("related", "related"),
    ("eventTime", "eventTime"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("series", "series"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
];

/// core/v1 Event -> events.k8s.io/v1 (upstream's `Convert_core_Event_To_v1_Event`).
fn event_to_events_v1(obj: &mut Value) {
    let mut core = obj.take();
    let mut out = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event"});
    for (from, to) in EVENT_FIELDS {
        mv(&mut core, from, &mut out, to);
    }
    if let Some(n) = core["count"].as_i64().filter(|n| *n != 0) {
        out["deprecatedCount"] = json!(n);
    }
    // Go writes eventTime even when zero (a MicroTime value: null).
    if out["eventTime"].is_null() {
        out["eventTime"] = Value::Null;
    }
    *obj = out;
}

/// events.k8s.io/v1 Event -> core/v1 (upstream's `Convert_v1_Event_To_core_Event`).
fn event_to_core(obj: &mut Value) {
    let mut ev = obj.take();
    let mut out = json!({"apiVersion": "v1", "kind": "Event"});
    for (to, from) in EVENT_FIELDS {
        mv(&mut ev, from, &mut out, to);
    }
    mv(&mut ev, "deprecatedCount", &mut out, "count");
    if out["involvedObject"].is_null() {
        out["involvedObject"] = json!({});
    }
    *obj = out;
}

/// Validation of an Event written through events.k8s.io/v1 (upstream's `ValidateEventCreate`
/// for that API, on the core form, so fields carry core names: `message`, `reportingController`).
pub fn validate_events_v1(obj: &Value, causes: &mut Vec<crate::status::Cause>) {
    use crate::status::Cause;
    let mut core = obj.clone();
    event_to_core(&mut core);
    let req = |f: &str| Cause { reason: "FieldValueRequired", field: f.into(), message: "Required value".into() };
    let inv = |f: &str, why: String| Cause { reason: "FieldValueInvalid", field: f.into(), message: format!("Invalid value: \"\": {why}") };
    let s = |f: &str| core[f].as_str().unwrap_or("").to_string();
    let ns = core["metadata"]["namespace"].as_str().unwrap_or("");
    if core["eventTime"].is_null() {
        causes.push(req("eventTime"));
    } else {
        let involved_ns = core["involvedObject"]["namespace"].as_str().unwrap_or("");
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            causes.push(Cause { reason: "FieldValueInvalid", field: "involvedObject.namespace".into(), message: "Invalid value: \"\": does not match event.namespace".into() });
        }
        for (f, limit) in [("reportingComponent", 0), ("reportingInstance", 128), ("action", 128), ("reason", 128), ("message", 1024)] {
            let v = s(f);
            let field = if f == "reportingComponent" { "reportingController" } else { f };
            if v.is_empty() && f != "message" {
                causes.push(req(field));
            }
            if limit > 0 && v.len() > limit {
                causes.push(inv(field, format!("can have at most {limit} characters")));
            }
        }
        let rc = s("reportingComponent");
        if !rc.is_empty() {
            for e in crate::object::label_key_errors(&rc) {
                causes.push(Cause { reason: "FieldValueInvalid", field: "reportingController".into(), message: format!("Invalid value: {}: {e}", json!(rc)) });
            }
        }
    }
    if let Some(series) = core["series"].as_object() {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            causes.push(inv("series.count", "should be at least 2".into()));
        }
        if series.get("lastObservedTime").is_none_or(Value::is_null) {
            causes.push(req("series.lastObservedTime"));
        }
    }
    let ty = s("type");
    if ty != "Normal" && ty != "Warning" {
        causes.push(inv("type", format!("has invalid value: {ty}")));
    }
    for f in ["firstTimestamp", "lastTimestamp", "count", "source"] {
        let set = match &core[f] {
            Value::Null => false,
            Value::Number(n) => n.as_i64() != Some(0),
            Value::Object(m) => m.values().any(|v| v.as_str().is_some_and(|s| !s.is_empty())),
            _ => true,
        };
        if set {
            causes.push(inv(f, "needs to be unset".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_round_trips_between_v1_and_v2() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"}, "minReplicas": 1, "maxReplicas": 5,
                     "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}},
                                 {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 30}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 2, "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let mut v1 = v2.clone();
        hpa_to_v1(&mut v1);
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
        assert!(v1["spec"]["metrics"].is_null());
        let metrics: Value = serde_json::from_str(v1["metadata"]["annotations"][METRICS].as_str().expect("metrics")).expect("json");
        assert_eq!(metrics, json!([{"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}}]));
        let mut back = v1.clone();
        hpa_to_v2(&mut back);
        assert_eq!(back, v2);
    }

    #[test]
    fn events_view_round_trips() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"}, "involvedObject": {"kind": "Pod", "name": "p"},
            "reason": "Started", "message": "started", "type": "Normal", "source": {"component": "kubelet"}, "count": 3, "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z"});
        let mut view = core.clone();
        event_to_events_v1(&mut view);
        assert_eq!(view["regarding"]["name"], "p");
        assert_eq!(view["note"], "started");
        assert_eq!(view["deprecatedCount"], 3);
        assert_eq!(view["deprecatedSource"]["component"], "kubelet");
        let mut back = view.clone();
        event_to_core(&mut back);
        assert_eq!(back, core);
    }
}
