//! ComponentStatus (`kubectl get componentstatuses`, deprecated upstream since v1.19 and still
//! served): the health of the control plane's parts, computed on each read, never stored.
//!
//! kube-apiserver probes the scheduler's and the controller manager's `/healthz` on this host
//! and the etcd servers. strata's scheduler and controller manager run in this server or
//! anywhere else (`strata scheduler`, `strata controllers`, or upstream's), so what tells they
//! work is what they do to stay in charge: the Lease they elect their leader with
//! (`kube-system/kube-scheduler`, `kube-system/kube-controller-manager`), held and renewed within
//! its duration. `etcd-0` is the store (embedded or etcd), healthy when it answers, as the
//! `etcd` health check.

use serde_json::{json, Value};
use strata_store::Store;

/// The components, by name, in the order they are listed (upstream sorts by name).
const NAMES: &[&str] = &["controller-manager", "etcd-0", "scheduler"];

/// What upstream warns of every request for them.
pub const DEPRECATION: &str = "v1 ComponentStatus is deprecated in v1.19+";

/// The ComponentStatus of `name`, None when there is no such component.
pub async fn status(store: &dyn Store, name: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Value> {
    let health = match name {
        "scheduler" => lease_health(store, "kube-scheduler", "scheduler", now).await,
        "controller-manager" => lease_health(store, "kube-controller-manager", "controller manager", now).await,
        "etcd-0" => store.revision().await.map(|_| ()).map_err(|e| e.to_string()),
        _ => return None,
    };
    let (status, message, error) = match health {
        Ok(()) => ("True", "ok".to_string(), String::new()),
        Err(e) => ("False", String::new(), e),
    };
    let mut condition = json!({ "type": "Healthy", "status": status });
    if !message.is_empty() {
        condition["message"] = json!(message);
    }
    if !error.is_empty() {
        condition["error"] = json!(error);
    }
    Some(json!({
        "kind": "ComponentStatus",
        "apiVersion": "v1",
        "metadata": { "name": name },
        "conditions": [condition],
    }))
}

/// Every component's status, by name.
pub async fn statuses(store: &dyn Store, now: chrono::DateTime<chrono::Utc>) -> Vec<Value> {
    let mut out = Vec::new();
    for name in NAMES {
        if let Some(s) = status(store, name, now).await {
            out.push(s);
        }
    }
    out
}

/// Healthy when Lease `kube-system/<lease>` has a holder that renewed it within its duration.
async fn lease_health(store: &dyn Store, lease: &str, what: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
    let r = crate::resources::find("coordination.k8s.io", "v1", "leases").ok_or("leases are not served")?;
    let kv = store.get(&r.key(Some("kube-system"), lease)).await.map_err(|e| e.to_string())?;
    let Some(kv) = kv else {
        return Err(format!("no {what} has held the kube-system/{lease} Lease"));
    };
    let l: Value = serde_json::from_slice(&kv.value).map_err(|e| format!("the kube-system/{lease} Lease: {e}"))?;
    judge_lease(&l, lease, what, now)
}

fn judge_lease(l: &Value, lease: &str, what: &str, now: chrono::DateTime<chrono::Utc>) -> Result<(), String> {
    let spec = &l["spec"];
    let holder = spec["holderIdentity"].as_str().unwrap_or("");
    if holder.is_empty() {
        return Err(format!("no {what} holds the kube-system/{lease} Lease"));
    }
    let duration = spec["leaseDurationSeconds"].as_i64().unwrap_or(15);
    let renewed = spec["renewTime"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&chrono::Utc));
    match renewed {
        Some(t) if now.signed_duration_since(t).num_milliseconds() <= duration * 1000 => Ok(()),
        Some(t) => Err(format!("{holder} last renewed the kube-system/{lease} Lease {}s ago (its duration is {duration}s)", now.signed_duration_since(t).num_seconds())),
        None => Err(format!("the kube-system/{lease} Lease held by {holder} has no renewTime")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_renewed_within_its_duration_is_healthy() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:20Z").unwrap().with_timezone(&chrono::Utc);
        let lease = |holder: &str, renewed: &str| json!({ "spec": { "holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": renewed } });
        assert_eq!(judge_lease(&lease("a_1", "2026-12-04T10:00:10.000000Z"), "kube-scheduler", "scheduler", now), Ok(()));
        assert_eq!(
            judge_lease(&lease("a_1", "2026-12-04T10:00:00.000000Z"), "kube-scheduler", "scheduler", now),
            Err("a_1 last renewed the kube-system/kube-scheduler Lease 20s ago (its duration is 15s)".to_string())
        );
        // Released (client-go's ReleaseOnCancel empties the holder).
        assert_eq!(judge_lease(&lease("", "2026-12-04T10:00:19.000000Z"), "kube-scheduler", "scheduler", now), Err("no scheduler holds the kube-system/kube-scheduler Lease".to_string()));
    }
}
