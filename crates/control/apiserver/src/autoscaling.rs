//! HorizontalPodAutoscaler (autoscaling/v2, also served at v1 through [`crate::convert`]):
//! upstream's defaults and validation, applied to the v2 form whatever version a request uses,
//! and the TARGETS column of the Table as kube-apiserver prints it. Stored and served only:
//! strata has no metrics pipeline and runs no autoscaler yet.

use serde_json::{json, Value};

use crate::status::Cause;

/// Defaults and validation of an HPA in whatever version the request has; the object keeps
/// its version.
pub fn validate(obj: &mut Value, causes: &mut Vec<Cause>) {
    let v1 = obj["apiVersion"] == "autoscaling/v1";
    if v1 {
        crate::convert::storage_form(obj);
    }
    default_v2(obj);
    validate_v2(obj, causes);
    if v1 {
        crate::convert::served_form_at(obj, "autoscaling/v1");
    }
}

/// `SetDefaults_HorizontalPodAutoscaler` (v2) and its behavior defaults.
fn default_v2(obj: &mut Value) {
    let spec = &mut obj["spec"];
    if spec["minReplicas"].is_null() {
        spec["minReplicas"] = json!(1);
    }
    if spec["metrics"].as_array().is_none_or(Vec::is_empty) {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]);
    }
    if spec["behavior"].is_object() {
        for (dir, window, policies) in [
            ("scaleUp", 0, json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}])),
            ("scaleDown", 300, json!([{"type": "Percent", "value": 100, "periodSeconds": 15}])),
        ] {
            let rules = &mut spec["behavior"][dir];
            if rules["stabilizationWindowSeconds"].is_null() {
                rules["stabilizationWindowSeconds"] = json!(window);
            }
            if rules["selectPolicy"].is_null() {
                rules["selectPolicy"] = json!("Max");
            }
            if rules["policies"].as_array().is_none_or(Vec::is_empty) {
                rules["policies"] = policies;
            }
        }
    }
}

fn validate_target(t: &Value, at: &str, causes: &mut Vec<Cause>) {
    match t["type"].as_str() {
        None => causes.push(Cause::required(&format!("{at}.type"), "")),
        Some("Utilization") => match t["averageUtilization"].as_i64() {
            None => causes.push(Cause { reason: "FieldValueRequired", field: format!("{at}.averageUtilization"), message: "Required value: must set either a target raw value or a target utilization".into() }),
            Some(u) if u <= 0 => causes.push(Cause::invalid(&format!("{at}.averageUtilization"), &json!(u), "must be greater than 0")),
            Some(_) => {}
        },
        Some("Value") => {
            if t["value"].is_null() {
                causes.push(Cause { reason: "FieldValueRequired", field: format!("{at}.value"), message: "Required value: must set either a target value or averageValue".into() });
            }
        }
        Some("AverageValue") => {
            if t["averageValue"].is_null() {
                causes.push(Cause { reason: "FieldValueRequired", field: format!("{at}.averageValue"), message: "Required value: must set either a target value or averageValue".into() });
            }
        }
        Some(other) => causes.push(Cause::not_supported(&format!("{at}.type"), &json!(other), &["AverageValue", "Utilization", "Value"])),
    }
    for f in ["value", "averageValue"] {
        if let Some(q) = crate::quantity::Quantity::of(&t[f]) {
            if q.milli <= 0 {
                causes.push(Cause::invalid(&format!("{at}.{f}"), &t[f], "must be positive"));
            }
        }
    }
}

/// `ValidateHorizontalPodAutoscaler` on the v2 form.
fn validate_v2(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    for f in ["kind", "name"] {
        let v = spec["scaleTargetRef"][f].as_str().unwrap_or("");
        if v.is_empty() {
            causes.push(Cause::required(&format!("spec.scaleTargetRef.{f}"), ""));
        } else {
            for e in crate::object::path_segment_errors(v) {
                causes.push(Cause::invalid(&format!("spec.scaleTargetRef.{f}"), &json!(v), &e));
            }
        }
    }
    let min = spec["minReplicas"].as_i64().unwrap_or(1);
    let max = spec["maxReplicas"].as_i64().unwrap_or(0);
    if min < 1 {
        causes.push(Cause::invalid("spec.minReplicas", &json!(min), "must be greater than or equal to 1"));
    }
    if max < 1 {
        causes.push(Cause::invalid("spec.maxReplicas", &json!(max), "must be greater than 0"));
    }
    if max < min {
        causes.push(Cause::invalid("spec.maxReplicas", &json!(max), "must be greater than or equal to `minReplicas`"));
    }
    for (i, m) in spec["metrics"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.metrics[{i}]");
        match m["type"].as_str().unwrap_or("") {
            "Resource" | "ContainerResource" => {
                let key = if m["type"] == "Resource" { "resource" } else { "containerResource" };
                if m[key].is_null() {
                    causes.push(Cause { reason: "FieldValueRequired", field: format!("{at}.{key}"), message: format!("Required value: must populate information for the given metric source (only allowed when type is {})", m["type"].as_str().unwrap_or("")) });
                    continue;
                }
                if m[key]["name"].as_str().unwrap_or("").is_empty() {
                    causes.push(Cause::required(&format!("{at}.{key}.name"), ""));
                }
                if key == "containerResource" && m[key]["container"].as_str().unwrap_or("").is_empty() {
                    causes.push(Cause::required(&format!("{at}.{key}.container"), ""));
                }
                validate_target(&m[key]["target"], &format!("{at}.{key}.target"), causes);
            }
            "Pods" | "Object" | "External" => {
                let key = m["type"].as_str().unwrap_or("").to_lowercase();
                if m[key.as_str()].is_null() {
                    causes.push(Cause { reason: "FieldValueRequired", field: format!("{at}.{key}"), message: format!("Required value: must populate information for the given metric source (only allowed when type is {})", m["type"].as_str().unwrap_or("")) });
                    continue;
                }
                if m[key.as_str()]["metric"]["name"].as_str().unwrap_or("").is_empty() {
                    causes.push(Cause::required(&format!("{at}.{key}.metric.name"), ""));
                }
                validate_target(&m[key.as_str()]["target"], &format!("{at}.{key}.target"), causes);
            }
            "" => causes.push(Cause { reason: "FieldValueRequired", field: format!("{at}.type"), message: "Required value: must specify a metric source type".into() }),
            other => causes.push(Cause::not_supported(&format!("{at}.type"), &json!(other), &["ContainerResource", "External", "Object", "Pods", "Resource"])),
        }
    }
    for dir in ["scaleUp", "scaleDown"] {
        let rules = &spec["behavior"][dir];
        let at = format!("spec.behavior.{dir}");
        if let Some(w) = rules["stabilizationWindowSeconds"].as_i64() {
            if !(0..=3600).contains(&w) {
                causes.push(Cause::invalid(&format!("{at}.stabilizationWindowSeconds"), &json!(w), "must be less than or equal to 3600"));
            }
        }
        if let Some(p) = rules["selectPolicy"].as_str() {
            if !matches!(p, "Max" | "Min" | "Disabled") {
                causes.push(Cause::not_supported(&format!("{at}.selectPolicy"), &json!(p), &["Disabled", "Max", "Min"]));
            }
        }
        for (i, p) in rules["policies"].as_array().into_iter().flatten().enumerate() {
            let pat = format!("{at}.policies[{i}]");
            if !matches!(p["type"].as_str(), Some("Pods" | "Percent")) {
                causes.push(Cause::not_supported(&format!("{pat}.type"), &p["type"], &["Percent", "Pods"]));
            }
            if p["value"].as_i64().unwrap_or(0) <= 0 {
                causes.push(Cause::invalid(&format!("{pat}.value"), &p["value"], "must be greater than zero"));
            }
            let period = p["periodSeconds"].as_i64().unwrap_or(0);
            if !(1..=1800).contains(&period) {
                causes.push(Cause::invalid(&format!("{pat}.periodSeconds"), &json!(period), "must be greater than zero and less than or equal to 1800"));
            }
        }
    }
}

/// The TARGETS cell (`formatHPAMetrics`) of a v2 HPA.
pub fn targets(obj: &Value) -> String {
    let specs = obj["spec"]["metrics"].as_array().cloned().unwrap_or_default();
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = obj["status"]["currentMetrics"].as_array().cloned().unwrap_or_default();
    let q = |v: &Value| crate::quantity::Quantity::of(v).map_or_else(|| v.as_str().unwrap_or("").to_string(), |q| q.to_string());
    let mut list = Vec::new();
    for (i, m) in specs.iter().enumerate() {
        let st = statuses.get(i).cloned().unwrap_or(Value::Null);
        let unknown = || "<unknown>".to_string();
        let cell = match m["type"].as_str().unwrap_or("") {
            "External" | "Object" => {
                let key = if m["type"] == "External" { "external" } else { "object" };
                let t = &m[key]["target"];
                if !t["averageValue"].is_null() {
                    let cur = st[key]["current"]["averageValue"].as_str().map_or_else(unknown, |_| q(&st[key]["current"]["averageValue"]));
                    format!("{cur}/{} (avg)", q(&t["averageValue"]))
                } else {
                    let cur = if st[key].is_null() { unknown() } else { q(&st[key]["current"]["value"]) };
                    format!("{cur}/{}", q(&t["value"]))
                }
            }
            "Pods" => {
                let cur = if st["pods"].is_null() { unknown() } else { q(&st["pods"]["current"]["averageValue"]) };
                format!("{cur}/{}", q(&m["pods"]["target"]["averageValue"]))
            }
            "Resource" | "ContainerResource" => {
                let key = if m["type"] == "Resource" { "resource" } else { "containerResource" };
                let r = &m[key];
                let name = r["name"].as_str().unwrap_or("");
                if !r["target"]["averageValue"].is_null() {
                    let cur = if st[key].is_null() { unknown() } else { q(&st[key]["current"]["averageValue"]) };
                    format!("{name}: {cur}/{}", q(&r["target"]["averageValue"]))
                } else {
                    let cur = st[key]["current"]["averageUtilization"].as_i64().map_or_else(unknown, |u| format!("{u}%"));
                    let target = r["target"]["averageUtilization"].as_i64().map_or_else(|| "<auto>".to_string(), |u| format!("{u}%"));
                    format!("{name}: {cur}/{target}")
                }
            }
            _ => "<unknown type>".into(),
        };
        list.push(cell);
    }
    if list.len() > 2 {
        let more = list.len() - 2;
        list.truncate(2);
        return format!("{} + {more} more...", list.join(", "));
    }
    list.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validation_and_targets() {
        let mut hpa = json!({"apiVersion": "autoscaling/v2", "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3}});
        let mut c = Vec::new();
        validate(&mut hpa, &mut c);
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(targets(&hpa), "cpu: <unknown>/80%");
        let mut v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 4, "maxReplicas": 2}});
        let mut c = Vec::new();
        validate(&mut v1, &mut c);
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 80);
        assert_eq!(c[0].message, "Invalid value: 2: must be greater than or equal to `minReplicas`");
    }
}
