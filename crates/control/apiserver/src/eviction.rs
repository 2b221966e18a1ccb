//! `pods/eviction` (policy/v1 and v1beta1 `Eviction`): delete a pod unless that would violate
//! its PodDisruptionBudget, as upstream's eviction REST storage does. A pod that is finished,
//! Pending or already terminating is deleted without looking at budgets. Otherwise the one
//! budget selecting the pod (more than one is a 500) must allow a disruption: its status must
//! be current (`observedGeneration`), and `disruptionsAllowed` above 0 — the eviction takes
//! one (the budget's status is written with the pod in `disruptedPods`, carrying the
//! resourceVersion it was read at, so two evictions never spend the same disruption), then
//! deletes the pod (gracefully, with the request's `deleteOptions`) after marking it with the
//! `DisruptionTarget` condition. No disruption left is 429 TooManyRequests "Cannot evict pod
//! as it would violate the pod's disruption budget.", which `kubectl drain` retries. An
//! unready pod may go without spending a disruption when the budget is otherwise met (or its
//! `unhealthyPodEvictionPolicy` is `AlwaysAllow`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::{Api, RequestInfo};
use crate::object::{self, name_of};
use crate::status::{self, ApiError};

/// Most pods a budget's `disruptedPods` may hold (upstream's `MaxDisruptedPodSize`).
const MAX_DISRUPTED_PODS: usize = 2000;
const MESSAGE: &str = "Cannot evict pod as it would violate the pod's disruption budget.";

fn too_many(cause: String, retry_after: u64) -> ApiError {
    let mut e = ApiError::new(429, "TooManyRequests", MESSAGE);
    let mut d = json!({ "causes": [{ "reason": "DisruptionBudget", "message": cause }] });
    if retry_after > 0 {
        d["retryAfterSeconds"] = json!(retry_after);
    }
    e.details = Some(d);
    e
}

fn still_processing(pdb: &str) -> ApiError {
    too_many(format!("The disruption budget {pdb} is still being processed by the server."), 10)
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Does a budget's selector select these labels? policy/v1: an empty selector selects every
/// pod of the namespace, a missing one none.
pub fn pdb_selects(selector: &Value, labels: &Value) -> bool {
    if !selector.is_object() {
        return false;
    }
    let empty = selector["matchLabels"].as_object().is_none_or(|m| m.is_empty()) && selector["matchExpressions"].as_array().is_none_or(|m| m.is_empty());
    empty || crate::validate::selector_matches(selector, labels)
}

/// Upstream's `canIgnorePDB`: finished, Pending or already terminating.
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed" | "Pending")) || pod["metadata"]["deletionTimestamp"].is_string()
}

enum Verdict {
    /// Delete (carrying the pod's resourceVersion as a precondition when asked).
    Delete { enforce_rv: bool },
    Refuse(ApiError),
    /// A 500 Status answered as a result, not an error (upstream's shape).
    Failure(Value),
}

impl Api {
    /// `POST .../pods/NAME/eviction`.
    pub(crate) async fn evict(&self, info: &RequestInfo, eviction: Value, dry_run: bool) -> Result<Response, ApiError> {
        let name = info.name.clone().unwrap_or_default();
        if !eviction.is_object() || !matches!(eviction["kind"].as_str(), Some("Eviction") | None) {
            return Err(ApiError::bad_request(format!("not a Eviction object: {}", eviction["kind"])));
        }
        if name_of(&eviction) != name {
            return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
        }
        let mut opts = eviction["deleteOptions"].clone();
        if !opts.is_object() {
            opts = json!({});
        }
        let dry_run = dry_run || opts["dryRun"].as_array().is_some_and(|d| d.iter().any(|v| v == "All"));
        let given_rv = opts["preconditions"]["resourceVersion"].as_str().map(str::to_string);
        let pod_info = RequestInfo { subresource: None, ..info.clone() };
        for _ in 0..5 {
            let (pod, rev) = self.load(&pod_info).await?;
            let verdict = if can_ignore_budget(&pod) {
                let finished = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) || pod["metadata"]["deletionTimestamp"].is_string();
                Verdict::Delete { enforce_rv: !finished }
            } else {
                self.check_budget(&pod, dry_run).await?
            };
            match verdict {
                Verdict::Refuse(e) => return Err(e),
                Verdict::Failure(v) => return Ok((StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "application/json")], v.to_string()).into_response()),
                Verdict::Delete { enforce_rv } => {
                    let mut opts = opts.clone();
                    if enforce_rv && given_rv.is_none() {
                        opts["preconditions"]["resourceVersion"] = json!(rev.to_string());
                    }
                    match self.mark_and_delete(&pod_info, &opts, dry_run).await {
                        Ok(()) => return Ok((StatusCode::CREATED, [("content-type", "application/json")], status::success(None).to_string()).into_response()),
                        // The pod changed since it was judged: judge it again (unless the
                        // client asked for its own resourceVersion).
                        Err(e) if e.code == 409 && given_rv.is_none() => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Err(ApiError::new(504, "Timeout", format!("couldn't evict pod {name:?} due to conflicts")))
    }

    /// The budget check (and the spending of one disruption) for a pod that must respect it.
    async fn check_budget(&self, pod: &Value, dry_run: bool) -> Result<Verdict, ApiError> {
        let Some(r) = crate::resources::find("policy", "v1", "poddisruptionbudgets") else { return Ok(Verdict::Delete { enforce_rv: true }) };
        let ns = pod["metadata"]["namespace"].as_str().unwrap_or("").to_string();
        let pod_name = name_of(pod).to_string();
        for _ in 0..5 {
            let page = self.store.list(&r.list_prefix(Some(&ns)), None, 0).await?;
            let mut budgets: Vec<(Value, u64)> = Vec::new();
            for kv in page.items {
                let v: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(format!("decoding a PodDisruptionBudget: {e}")))?;
                if pdb_selects(&v["spec"]["selector"], &pod["metadata"]["labels"]) {
                    budgets.push((v, kv.mod_revision));
                }
            }
            if budgets.len() > 1 {
                let mut st = status::success(None);
                st["status"] = json!("Failure");
                st["message"] = json!("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.");
                st["code"] = json!(500);
                return Ok(Verdict::Failure(st));
            }
            let Some((mut pdb, pdb_rev)) = budgets.pop() else { return Ok(Verdict::Delete { enforce_rv: true }) };
            let pdb_name = name_of(&pdb).to_string();
            let st = &pdb["status"];
            let (current, desired) = (st["currentHealthy"].as_i64().unwrap_or(0), st["desiredHealthy"].as_i64().unwrap_or(0));
            if !is_ready(pod) {
                let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
                if always || (current >= desired && desired > 0) {
                    // An unready pod does not count: deleting it disrupts nothing.
                    return Ok(Verdict::Delete { enforce_rv: true });
                }
            }
            if st["observedGeneration"].as_i64().unwrap_or(0) < pdb["metadata"]["generation"].as_i64().unwrap_or(0) {
                return Ok(Verdict::Refuse(still_processing(&pdb_name)));
            }
            let allowed = st["disruptionsAllowed"].as_i64().unwrap_or(0);
            if allowed < 0 {
                return Ok(Verdict::Refuse(ApiError::forbidden(r, &pdb_name, "pdb disruptions allowed is negative")));
            }
            if pdb["status"]["disruptedPods"].as_object().is_some_and(|m| m.len() > MAX_DISRUPTED_PODS) {
                return Ok(Verdict::Refuse(ApiError::forbidden(r, &pdb_name, "DisruptedPods map too big - too many evictions not confirmed by PDB controller")));
            }
            if allowed == 0 {
                return Ok(Verdict::Refuse(too_many(format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"), 0)));
            }
            pdb["status"]["disruptionsAllowed"] = json!(allowed - 1);
            if allowed - 1 == 0 {
                set_disruption_allowed_false(&mut pdb);
            }
            if dry_run {
                return Ok(Verdict::Delete { enforce_rv: true });
            }
            if !pdb["status"]["disruptedPods"].is_object() {
                pdb["status"]["disruptedPods"] = json!({});
            }
            pdb["status"]["disruptedPods"][&pod_name] = json!(object::now());
            let key = r.key(Some(&ns), &pdb_name);
            match self.store.update(&key, object::storable(&pdb)?, pdb_rev).await {
                Ok(_) => return Ok(Verdict::Delete { enforce_rv: true }),
                Err(strata_store::Error::Conflict { .. }) => continue,
                Err(strata_store::Error::NotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::new(504, "Timeout", "couldn't update PodDisruptionBudget due to conflicts"))
    }

    /// Mark the pod `DisruptionTarget` (EvictionByEvictionAPI) and delete it with `opts`.
    async fn mark_and_delete(&self, pod_info: &RequestInfo, opts: &Value, dry_run: bool) -> Result<(), ApiError> {
        let (mut pod, rev) = self.load(pod_info).await?;
        let r = pod_info.resource;
        let name = name_of(&pod).to_string();
        if let Some(want) = opts["preconditions"]["uid"].as_str() {
            if pod["metadata"]["uid"].as_str() != Some(want) {
                return Err(ApiError::conflict(r, &name));
            }
        }
        if let Some(want) = opts["preconditions"]["resourceVersion"].as_str() {
            if want != rev.to_string() {
                return Err(ApiError::conflict(r, &name));
            }
        }
        let mut opts = opts.clone();
        let terminal = matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
        let marked = pod["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "DisruptionTarget" && c["status"] == "True"));
        if !terminal && !marked && !dry_run {
            let cond = json!({ "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI", "message": "Eviction API: evicting", "lastProbeTime": null, "lastTransitionTime": object::now() });
            match pod["status"]["conditions"].as_array_mut() {
                Some(c) => c.push(cond),
                None => pod["status"]["conditions"] = json!([cond]),
            }
            let key = r.key(pod_info.namespace.as_deref(), &name);
            let new_rev = match self.store.update(&key, object::storable(&pod)?, rev).await {
                Ok(n) => n,
                Err(strata_store::Error::Conflict { .. }) => return Err(ApiError::conflict(r, &name)),
                Err(strata_store::Error::NotFound(_)) => return Err(ApiError::not_found(r, &name)),
                Err(e) => return Err(e.into()),
            };
            if opts["preconditions"]["resourceVersion"].is_string() {
                opts["preconditions"]["resourceVersion"] = json!(new_rev.to_string());
            }
        }
        self.delete(pod_info, &opts, dry_run).await.map(|_| ())
    }
}

/// Upstream's `UpdateDisruptionAllowedCondition` when no disruption is left.
pub fn set_disruption_allowed_false(pdb: &mut Value) {
    let generation = pdb["metadata"]["generation"].clone();
    let mut conds: Vec<Value> = pdb["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let now = object::now();
    match conds.iter_mut().find(|c| c["type"] == "DisruptionAllowed") {
        Some(c) => {
            if c["status"] != "False" {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!("False");
            c["reason"] = json!("InsufficientPods");
            c["message"] = json!("");
            c["observedGeneration"] = generation;
        }
        None => conds.push(json!({ "type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": "", "observedGeneration": generation, "lastTransitionTime": now })),
    }
    pdb["status"]["conditions"] = Value::Array(conds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_selectors_as_policy_v1() {
        let labels = json!({"app": "web"});
        assert!(pdb_selects(&json!({}), &labels), "empty selects all");
        assert!(!pdb_selects(&Value::Null, &labels), "missing selects none");
        assert!(pdb_selects(&json!({"matchLabels": {"app": "web"}}), &labels));
        assert!(!pdb_selects(&json!({"matchLabels": {"app": "db"}}), &labels));
        let mut pdb = json!({"metadata": {"generation": 2}, "status": {"conditions": [{"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods"}]}});
        set_disruption_allowed_false(&mut pdb);
        assert_eq!(pdb["status"]["conditions"][0]["reason"], "InsufficientPods");
        assert_eq!(pdb["status"]["conditions"][0]["status"], "False");
    }
}
