//! LimitRange (core/v1) and upstream's LimitRanger admission plugin.
//!
//! A LimitRange item of type `Container` is defaulted as upstream (`default` falls back to
//! `max`, `defaultRequest` to `default`, then to `min`). A created pod's containers without a
//! request or limit get the namespace's defaults (recorded in the `kubernetes.io/limit-ranger`
//! annotation), then every container (type `Container`), the pod's sums (type `Pod`) and a
//! created claim's storage request (type `PersistentVolumeClaim`) must lie within `min`/`max`
//! and `maxLimitRequestRatio`; a violation is 403 with upstream's message (several: `[a, b]`).
//! Pod updates are not limited (upstream: containers cannot change).

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_store::Store;

use crate::quantity::Quantity;
use crate::resources::Resource;
use crate::status::{ApiError, Cause};

/// The annotation that records what the plugin set.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn q_json(v: &Value) -> Value {
    match v {
        Value::String(_) => v.clone(),
        other => Quantity::of(other).map_or_else(|| other.clone(), |q| json!(q.to_string())),
    }
}

/// `SetDefaults_LimitRangeItem` for every item of type Container.
pub fn default(obj: &mut Value) {
    let Some(items) = obj["spec"]["limits"].as_array_mut() else { return };
    for item in items {
        if item["type"] != "Container" {
            continue;
        }
        for (from, to) in [("max", "default"), ("default", "defaultRequest"), ("min", "defaultRequest")] {
            let src = item[from].as_object().cloned().unwrap_or_default();
            if !item[to].is_object() {
                item[to] = json!({});
            }
            for (k, v) in src {
                if item[to].get(&k).is_none() {
                    item[to][k.as_str()] = v;
                }
            }
        }
    }
}

/// Is overcommit (request below limit) allowed for this resource (`IsOvercommitAllowed`)?
fn overcommit_allowed(name: &str) -> bool {
    !name.starts_with("hugepages-") && (!name.contains('/') || name.contains("kubernetes.io/"))
}

/// Validation as upstream's `ValidateLimitRange`.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let mut seen: Vec<&str> = Vec::new();
    for (i, item) in obj["spec"]["limits"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.limits[{i}]");
        let ty = item["type"].as_str().unwrap_or("");
        for e in crate::object::label_key_errors(ty) {
            causes.push(Cause::invalid(&format!("{at}.type"), &json!(ty), &e));
        }
        if seen.contains(&ty) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("{at}.type"), message: format!("Duplicate value: {}", json!(ty)) });
        }
        seen.push(ty);
        let list = |f: &str| -> BTreeMap<String, Quantity> {
            item[f].as_object().into_iter().flatten().filter_map(|(k, v)| Quantity::of(v).map(|q| (k.clone(), q))).collect()
        };
        let mut fields = vec!["max", "min"];
        if ty == "Pod" {
            for f in ["default", "defaultRequest"] {
                if item[f].as_object().is_some_and(|m| !m.is_empty()) {
                    causes.push(Cause { reason: "FieldValueForbidden", field: format!("{at}.{f}"), message: "Forbidden: may not be specified when `type` is 'Pod'".into() });
                }
            }
        } else {
            fields.extend(["default", "defaultRequest"]);
        }
        fields.push("maxLimitRequestRatio");
        let mut keys: Vec<String> = Vec::new();
        for f in &fields {
            for (k, v) in item[*f].as_object().into_iter().flatten() {
                let field = format!("{at}.{f}[{k}]");
                validate_resource_name(ty, k, &field, causes);
                if Quantity::of(v).is_none() {
                    causes.push(Cause::invalid(&field, v, crate::quantity::SYNTAX));
                }
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        if ty == "PersistentVolumeClaim" && item["min"]["storage"].is_null() && item["max"]["storage"].is_null() {
            causes.push(Cause { reason: "FieldValueRequired", field: format!("{at}.limits"), message: "Required value: either minimum or maximum storage value is required, but neither was provided".into() });
        }
        let (min, max, def, req, ratio) = (list("min"), list("max"), if ty == "Pod" { BTreeMap::new() } else { list("default") }, if ty == "Pod" { BTreeMap::new() } else { list("defaultRequest") }, list("maxLimitRequestRatio"));
        for k in &keys {
            let (mn, mx, d, dr, r) = (min.get(k), max.get(k), def.get(k), req.get(k), ratio.get(k));
            let f = |name: &str| format!("{at}.{name}[{k}]");
            let qs = |q: &Quantity| json!(q.to_string());
            // (smaller, its name, larger, its name, the field reported, whether the smaller's
            // value is the one shown): upstream's order, messages and reported values.
            let orders = [
                (mn, "min", mx, "max", "min", true),
                (mn, "min", dr, "default request", "defaultRequest", false),
                (dr, "default request", mx, "max", "defaultRequest", true),
                (dr, "default request", d, "default limit", "defaultRequest", true),
                (mn, "min", d, "default", "default", true),
                (d, "default", mx, "max", "default", false),
            ];
            for (lo, lo_name, hi, hi_name, field, show_lo) in orders {
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    if lo.milli > hi.milli {
                        let shown = if show_lo { lo } else { hi };
                        causes.push(Cause::invalid(&f(field), &qs(shown), &format!("{lo_name} value {lo} is greater than {hi_name} value {hi}")));
                    }
                }
            }
            if let Some(r) = r {
                if r.milli < 1000 {
                    causes.push(Cause::invalid(&f("maxLimitRequestRatio"), &qs(r), &format!("ratio {r} is less than 1")));
                }
                if let (Some(mn), Some(mx)) = (mn, mx) {
                    let limit = mx.milli as f64 / mn.milli as f64;
                    if (r.milli as f64 / 1000.0) > limit {
                        causes.push(Cause::invalid(&f("maxLimitRequestRatio"), &qs(r), &format!("ratio {r} is greater than max/min = {limit:.6}")));
                    }
                }
            }
            if let (Some(d), Some(dr)) = (d, dr) {
                if !overcommit_allowed(k) && d.milli != dr.milli {
                    causes.push(Cause::invalid(&f("defaultRequest"), &qs(dr), &format!("default value {d} must equal to defaultRequest value {dr} in {k}")));
                }
            }
        }
    }
}

/// `validateLimitRangeResourceName`: a container or pod limit names a standard compute
/// resource (or a qualified extended one); other types any qualified name.
fn validate_resource_name(ty: &str, name: &str, field: &str, causes: &mut Vec<Cause>) {
    let errs = crate::object::label_key_errors(name);
    if !errs.is_empty() {
        for e in errs {
            causes.push(Cause::invalid(field, &json!(name), &e));
        }
        return;
    }
    if matches!(ty, "Pod" | "Container") && !name.contains('/') && !matches!(name, "cpu" | "memory" | "ephemeral-storage") && !name.starts_with("hugepages-") {
        causes.push(Cause::invalid(field, &json!(name), "must be a standard limit type or fully qualified"));
    }
}

/// A resource list as quantities.
fn resources(v: &Value) -> BTreeMap<String, Quantity> {
    v.as_object().into_iter().flatten().filter_map(|(k, q)| Quantity::of(q).map(|q| (k.clone(), q))).collect()
}

fn add_into(sum: &mut BTreeMap<String, Quantity>, more: &BTreeMap<String, Quantity>) {
    for (k, q) in more {
        let cur = sum.get(k).copied();
        sum.insert(k.clone(), cur.map_or(*q, |c| c + *q));
    }
}

fn max_into(acc: &mut BTreeMap<String, Quantity>, more: &BTreeMap<String, Quantity>) {
    for (k, q) in more {
        if acc.get(k).is_none_or(|c| q.milli > c.milli) {
            acc.insert(k.clone(), *q);
        }
    }
}

/// A pod's effective requests or limits (`field`): its containers' sum, sidecars
/// (restartable init containers) added, the largest init container step as a floor
/// (upstream's `PodRequests`/`PodLimits`), plus the overhead when asked (quota counts it).
pub fn pod_total(pod: &Value, field: &str, overhead: bool) -> BTreeMap<String, Quantity> {
    let mut total = BTreeMap::new();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        add_into(&mut total, &resources(&c["resources"][field]));
    }
    let mut sidecars = BTreeMap::new();
    let mut init_max = BTreeMap::new();
    for c in pod["spec"]["initContainers"].as_array().into_iter().flatten() {
        let own = resources(&c["resources"][field]);
        let step = if c["restartPolicy"] == "Always" {
            add_into(&mut total, &own);
            add_into(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut t = own;
            add_into(&mut t, &sidecars);
            t
        };
        max_into(&mut init_max, &step);
    }
    max_into(&mut total, &init_max);
    if overhead {
        add_into(&mut total, &resources(&pod["spec"]["overhead"]));
    }
    total
}

fn min_constraint(ty: &str, name: &str, enforced: Quantity, req: &BTreeMap<String, Quantity>, lim: &BTreeMap<String, Quantity>) -> Option<String> {
    let Some(r) = req.get(name) else { return Some(format!("minimum {name} usage per {ty} is {enforced}.  No request is specified")) };
    if r.milli < enforced.milli {
        return Some(format!("minimum {name} usage per {ty} is {enforced}, but request is {r}"));
    }
    match lim.get(name) {
        Some(l) if l.milli < enforced.milli => Some(format!("minimum {name} usage per {ty} is {enforced}, but limit is {l}")),
        _ => None,
    }
}

fn max_constraint(ty: &str, name: &str, enforced: Quantity, req: &BTreeMap<String, Quantity>, lim: &BTreeMap<String, Quantity>) -> Option<String> {
    let Some(l) = lim.get(name) else { return Some(format!("maximum {name} usage per {ty} is {enforced}.  No limit is specified")) };
    if l.milli > enforced.milli {
        return Some(format!("maximum {name} usage per {ty} is {enforced}, but limit is {l}"));
    }
    match req.get(name) {
        Some(r) if r.milli > enforced.milli => Some(format!("maximum {name} usage per {ty} is {enforced}, but request is {r}")),
        _ => None,
    }
}

fn max_request_constraint(ty: &str, name: &str, enforced: Quantity, req: &BTreeMap<String, Quantity>) -> Option<String> {
    match req.get(name) {
        None => Some(format!("maximum {name} usage per {ty} is {enforced}.  No request is specified")),
        Some(r) if r.milli > enforced.milli => Some(format!("maximum {name} usage per {ty} is {enforced}, but request is {r}")),
        Some(_) => None,
    }
}

fn ratio_constraint(ty: &str, name: &str, enforced: Quantity, req: &BTreeMap<String, Quantity>, lim: &BTreeMap<String, Quantity>) -> Option<String> {
    let r = req.get(name).map_or(0, |q| q.milli);
    let l = lim.get(name).map_or(0, |q| q.milli);
    if r == 0 {
        return Some(format!("{name} max limit to request ratio per {ty} is {enforced}, but no request is specified or request is 0"));
    }
    if l == 0 {
        return Some(format!("{name} max limit to request ratio per {ty} is {enforced}, but no limit is specified or limit is 0"));
    }
    let observed = l as f64 / r as f64;
    if observed * 1000.0 > enforced.milli as f64 {
        return Some(format!("{name} max limit to request ratio per {ty} is {enforced}, but provided ratio is {observed:.6}"));
    }
    None
}

/// The bounds of one item checked against one set of requests and limits.
fn check_item(item: &Value, ty: &str, req: &BTreeMap<String, Quantity>, lim: &BTreeMap<String, Quantity>, errs: &mut Vec<String>) {
    for (k, v) in resources(&item["min"]) {
        errs.extend(min_constraint(ty, &k, v, req, lim));
    }
    for (k, v) in resources(&item["max"]) {
        errs.extend(max_constraint(ty, &k, v, req, lim));
    }
    for (k, v) in resources(&item["maxLimitRequestRatio"]) {
        errs.extend(ratio_constraint(ty, &k, v, req, lim));
    }
}

/// Apply one LimitRange's container defaults to a pod; the names of what was set, for the
/// annotation (`mergePodResourceRequirements`).
fn merge_defaults(lr: &Value, pod: &mut Value, notes: &mut Vec<String>) {
    let mut def = serde_json::Map::new();
    let mut def_req = serde_json::Map::new();
    for item in lr["spec"]["limits"].as_array().into_iter().flatten().filter(|i| i["type"] == "Container") {
        def.extend(item["default"].as_object().cloned().unwrap_or_default());
        def_req.extend(item["defaultRequest"].as_object().cloned().unwrap_or_default());
    }
    for (list, prefix) in [("containers", "container"), ("initContainers", "init container")] {
        let Some(cs) = pod["spec"][list].as_array_mut() else { continue };
        for c in cs {
            let mut set_req: Vec<String> = Vec::new();
            let mut set_lim: Vec<String> = Vec::new();
            for (k, v) in &def {
                if c["resources"]["limits"].get(k).is_none() {
                    c["resources"]["limits"][k.as_str()] = q_json(v);
                    set_lim.push(k.clone());
                }
            }
            for (k, v) in &def_req {
                if c["resources"]["requests"].get(k).is_none() {
                    c["resources"]["requests"][k.as_str()] = q_json(v);
                    set_req.push(k.clone());
                }
            }
            let cname = c["name"].as_str().unwrap_or("").to_string();
            set_req.sort();
            set_lim.sort();
            if !set_req.is_empty() {
                notes.push(format!("{} request for {prefix} {cname}", set_req.join(", ")));
            }
            if !set_lim.is_empty() {
                notes.push(format!("{} limit for {prefix} {cname}", set_lim.join(", ")));
            }
        }
    }
}

async fn ranges(store: &dyn Store, namespace: &str) -> Result<Vec<Value>, ApiError> {
    let Some(r) = crate::resources::find("", "v1", "limitranges") else { return Ok(Vec::new()) };
    let page = store.list(&r.list_prefix(Some(namespace)), None, 0).await?;
    Ok(page.items.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
}

/// LimitRanger admission of a created pod or claim (mutation by every range, then each
/// range's validation, as upstream's mutating and validating phases).
pub async fn admit(store: &dyn Store, r: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    if !matches!(r.builtin(), "Pod" | "PersistentVolumeClaim") {
        return Ok(());
    }
    let namespace = obj["metadata"]["namespace"].as_str().unwrap_or("").to_string();
    let all = ranges(store, &namespace).await?;
    if all.is_empty() {
        return Ok(());
    }
    let name = crate::object::name_of(obj).to_string();
    if r.builtin() == "Pod" {
        // Each range's defaults, in turn (an annotation per range, the last one kept, as upstream).
        for lr in &all {
            let mut notes = Vec::new();
            merge_defaults(lr, obj, &mut notes);
            if !notes.is_empty() {
                obj["metadata"]["annotations"][ANNOTATION] = json!(format!("LimitRanger plugin set: {}", notes.join("; ")));
            }
        }
        // Empty resource maps the merge may have left behind are not what Go writes.
        for list in ["containers", "initContainers"] {
            for c in obj["spec"][list].as_array_mut().into_iter().flatten() {
                for f in ["limits", "requests"] {
                    if c["resources"][f].as_object().is_some_and(|m| m.is_empty()) {
                        if let Some(res) = c["resources"].as_object_mut() {
                            res.remove(f);
                        }
                    }
                }
            }
        }
    }
    for lr in &all {
        let mut errs = Vec::new();
        for item in lr["spec"]["limits"].as_array().into_iter().flatten() {
            match (r.builtin(), item["type"].as_str().unwrap_or("")) {
                ("Pod", "Container") => {
                    for list in ["containers", "initContainers"] {
                        for c in obj["spec"][list].as_array().into_iter().flatten() {
                            check_item(item, "Container", &resources(&c["resources"]["requests"]), &resources(&c["resources"]["limits"]), &mut errs);
                        }
                    }
                }
                ("Pod", "Pod") => check_item(item, "Pod", &pod_total(obj, "requests", false), &pod_total(obj, "limits", false), &mut errs),
                ("PersistentVolumeClaim", "PersistentVolumeClaim") => {
                    let req = resources(&obj["spec"]["resources"]["requests"]);
                    for (k, v) in resources(&item["min"]) {
                        errs.extend(min_constraint("PersistentVolumeClaim", &k, v, &req, &BTreeMap::new()));
                    }
                    for (k, v) in resources(&item["max"]) {
                        errs.extend(max_request_constraint("PersistentVolumeClaim", &k, v, &req));
                    }
                }
                _ => {}
            }
        }
        match errs.len() {
            0 => {}
            1 => return Err(ApiError::forbidden(r, &name, &errs[0])),
            _ => return Err(ApiError::forbidden(r, &name, &format!("[{}]", errs.join(", ")))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_items_are_defaulted_as_upstream() {
        let mut lr = json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}, "default": {"memory": "64Mi"}}, {"type": "Pod", "max": {"cpu": "4"}}]}});
        default(&mut lr);
        let c = &lr["spec"]["limits"][0];
        assert_eq!(c["default"], json!({"cpu": "2", "memory": "64Mi"}));
        assert_eq!(c["defaultRequest"], json!({"cpu": "2", "memory": "64Mi"}));
        assert!(lr["spec"]["limits"][1]["default"].is_null());
    }

    #[test]
    fn pod_totals_count_sidecars_and_the_largest_init_step() {
        let pod = json!({"spec": {
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "2"}}},
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
            ],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "500m"}}}, {"name": "b", "resources": {"requests": {"cpu": "250m"}}}],
            "overhead": {"cpu": "50m"},
        }});
        assert_eq!(pod_total(&pod, "requests", false)["cpu"].to_string(), "2");
        assert_eq!(pod_total(&pod, "requests", true)["cpu"].to_string(), "2050m");
    }

    #[test]
    fn bounds_messages_are_upstreams() {
        let q = |s: &str| Quantity::parse(s).expect("quantity");
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), q(v))]);
        assert_eq!(max_constraint("Container", "cpu", q("1"), &BTreeMap::new(), &one("cpu", "2")).as_deref(), Some("maximum cpu usage per Container is 1, but limit is 2"));
        assert_eq!(min_constraint("Container", "cpu", q("50m"), &BTreeMap::new(), &BTreeMap::new()).as_deref(), Some("minimum cpu usage per Container is 50m.  No request is specified"));
        assert_eq!(
            ratio_constraint("Container", "cpu", q("10"), &one("cpu", "50m"), &one("cpu", "1")).as_deref(),
            Some("cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000")
        );
        assert!(ratio_constraint("Container", "cpu", q("10"), &one("cpu", "100m"), &one("cpu", "1")).is_none());
    }
}
