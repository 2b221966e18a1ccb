//! A pod's quality-of-service class, set in `status.qosClass` when the pod is created, as
//! kube-apiserver's pod strategy does (`qos.GetPodQOS`): the node agent later reports the same.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::Quantity;

/// Only CPU and memory decide the class.
const COMPUTE: [&str; 2] = ["cpu", "memory"];

/// `Guaranteed` when every container (init ones too) limits CPU and memory and requests what it
/// limits (a missing request is defaulted to the limit), `BestEffort` when none asks for or limits
/// CPU or memory, else `Burstable`.
pub fn class(pod: &Value) -> &'static str {
    let spec = &pod["spec"];
    let containers = ["initContainers", "containers"].into_iter().flat_map(|k| spec[k].as_array().into_iter().flatten());
    let (mut requests, mut limits): (BTreeMap<&str, i128>, BTreeMap<&str, i128>) = Default::default();
    let mut guaranteed = true;
    for c in containers {
        let res = &c["resources"];
        let positive = |kind: &str, name: &str| Quantity::of(&res[kind][name]).map(|q| q.milli).filter(|m| *m > 0);
        let mut limited = 0;
        for name in COMPUTE {
            let limit = positive("limits", name);
            // Defaulting gives a container without a request its limit as the request.
            let request = positive("requests", name).or(if res["requests"].get(name).is_none() { limit } else { None });
            if let Some(r) = request {
                *requests.entry(name).or_default() += r;
            }
            if let Some(l) = limit {
                *limits.entry(name).or_default() += l;
                limited += 1;
            }
        }
        if limited < COMPUTE.len() {
            guaranteed = false;
        }
    }
    if requests.is_empty() && limits.is_empty() {
        return "BestEffort";
    }
    if guaranteed && requests.len() == limits.len() && requests.iter().all(|(k, r)| limits.get(k) == Some(r)) {
        return "Guaranteed";
    }
    "Burstable"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: Value) -> Value {
        json!({ "spec": { "containers": containers } })
    }

    #[test]
    fn classes_as_upstream() {
        assert_eq!(class(&pod(json!([{ "name": "a" }]))), "BestEffort");
        assert_eq!(class(&pod(json!([{ "name": "a", "resources": { "requests": { "ephemeral-storage": "1Gi" } } }]))), "BestEffort", "only cpu and memory count");
        let full = json!({ "limits": { "cpu": "100m", "memory": "64Mi" } });
        assert_eq!(class(&pod(json!([{ "name": "a", "resources": full }]))), "Guaranteed", "requests default to limits");
        let same = json!({ "limits": { "cpu": "0.1", "memory": "64Mi" }, "requests": { "cpu": "100m", "memory": "67108864" } });
        assert_eq!(class(&pod(json!([{ "name": "a", "resources": same }]))), "Guaranteed");
        let less = json!({ "limits": { "cpu": "200m", "memory": "64Mi" }, "requests": { "cpu": "100m", "memory": "64Mi" } });
        assert_eq!(class(&pod(json!([{ "name": "a", "resources": less }]))), "Burstable");
        assert_eq!(class(&pod(json!([{ "name": "a", "resources": { "requests": { "cpu": "100m" } } }]))), "Burstable");
        // One container without limits makes the pod Burstable.
        assert_eq!(class(&pod(json!([{ "name": "a", "resources": full }, { "name": "b" }]))), "Burstable");
        let mut p = pod(json!([{ "name": "a", "resources": full }]));
        p["spec"]["initContainers"] = json!([{ "name": "i", "resources": { "requests": { "memory": "1Mi" } } }]);
        assert_eq!(class(&p), "Burstable", "init containers count");
    }
}
