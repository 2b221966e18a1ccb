//! Upstream's DefaultTolerationSeconds admission plugin: a pod created or updated without a
//! toleration of the `node.kubernetes.io/not-ready` or `node.kubernetes.io/unreachable`
//! NoExecute taints gets one (`operator: Exists`, `tolerationSeconds` 300 unless the server is
//! told otherwise), so the node lifecycle controller's taints evict it only after that long.

use serde_json::{json, Value};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

/// kube-apiserver's `--default-not-ready-toleration-seconds` and
/// `--default-unreachable-toleration-seconds`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Defaults {
    pub not_ready_seconds: i64,
    pub unreachable_seconds: i64,
}

impl Default for Defaults {
    fn default() -> Self {
        Defaults { not_ready_seconds: 300, unreachable_seconds: 300 }
    }
}

/// Does one of these tolerations cover the NoExecute taint `key` (as upstream checks: the key
/// equal or empty, the effect NoExecute or empty)?
fn tolerated(tolerations: &[Value], key: &str) -> bool {
    tolerations.iter().any(|t| {
        let k = t["key"].as_str().unwrap_or("");
        let e = t["effect"].as_str().unwrap_or("");
        (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
    })
}

/// Add the missing default tolerations to a pod.
pub fn admit_pod(pod: &mut Value, d: Defaults) {
    let have = pod["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
    let mut add = Vec::new();
    for (key, seconds) in [(NOT_READY, d.not_ready_seconds), (UNREACHABLE, d.unreachable_seconds)] {
        if !tolerated(&have, key) {
            add.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
    if add.is_empty() || !pod["spec"].is_object() {
        return;
    }
    let mut all = have;
    all.extend(add);
    pod["spec"]["tolerations"] = Value::Array(all);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(p: &Value) -> Vec<(String, Option<i64>)> {
        p["spec"]["tolerations"].as_array().into_iter().flatten().map(|t| (t["key"].as_str().unwrap_or("").to_string(), t["tolerationSeconds"].as_i64())).collect()
    }

    #[test]
    fn adds_what_is_missing_and_keeps_what_is_given() {
        let d = Defaults { not_ready_seconds: 300, unreachable_seconds: 7 };
        let mut p = json!({"spec": {"containers": []}});
        admit_pod(&mut p, d);
        assert_eq!(keys(&p), [(NOT_READY.to_string(), Some(300)), (UNREACHABLE.to_string(), Some(7))]);
        assert_eq!(p["spec"]["tolerations"][0], json!({"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        // Admitting again changes nothing (an update of an admitted pod).
        let again = p.clone();
        admit_pod(&mut p, d);
        assert_eq!(p, again);
        // A pod's own toleration of one taint is kept; only the other is added.
        let mut p = json!({"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]}});
        admit_pod(&mut p, d);
        assert_eq!(keys(&p), [(UNREACHABLE.to_string(), Some(2)), (NOT_READY.to_string(), Some(300))]);
        // Tolerating everything (empty key, empty effect) needs nothing added; neither does a
        // NoSchedule-only toleration count.
        let mut p = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        admit_pod(&mut p, d);
        assert_eq!(keys(&p).len(), 1);
        let mut p = json!({"spec": {"tolerations": [{"key": NOT_READY, "operator": "Exists", "effect": "NoSchedule"}]}});
        admit_pod(&mut p, d);
        assert_eq!(keys(&p).len(), 3);
    }
}
