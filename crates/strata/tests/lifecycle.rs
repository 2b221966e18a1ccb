//! Node lifecycle and disruptions end to end: a real `strata server` (API server, scheduler and
//! controllers in process), real `kubectl`, and simulated nodes ([`common::simnode`]: Node
//! objects whose Lease and status a thread of the test keeps fresh, running nothing).

mod common;

use std::time::Duration;

use common::eventually;
use common::server::{ApiServer, Auth, Backend, Options};
use common::simnode::SimNode;
use serde_json::Value;

const IMG: &str = "registry.invalid/web:v1";
const LONG: Duration = Duration::from_secs(90);

fn get_json(s: &ApiServer, path: &str) -> Value {
    let (code, body) = s.curl("GET", path, Auth::Admin, None, None);
    assert!(code == 200 || code == 404, "GET {path}: {code} {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn pods(s: &ApiServer, ns: &str) -> Vec<Value> {
    get_json(s, &format!("/api/v1/namespaces/{ns}/pods"))["items"].as_array().cloned().unwrap_or_default()
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn node_of(p: &Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or("")
}

fn condition(v: &Value, kind: &str) -> Value {
    v["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == kind).cloned()).unwrap_or(Value::Null)
}

fn taints(s: &ApiServer, node: &str) -> Vec<(String, String)> {
    let n = get_json(s, &format!("/api/v1/nodes/{node}"));
    n["spec"]["taints"].as_array().into_iter().flatten().map(|t| (t["key"].as_str().unwrap_or("").to_string(), t["effect"].as_str().unwrap_or("").to_string())).collect()
}

fn has_taint(s: &ApiServer, node: &str, key: &str, effect: &str) -> bool {
    taints(s, node).iter().any(|(k, e)| k == key && e == effect)
}

#[test]
fn a_node_that_stops_heartbeating_has_its_pods_evicted_and_recreated_on_another_node() {
    // A short grace period and unreachable toleration, so the test takes seconds, not minutes.
    let opts = Options {
        controllers: true,
        scheduler: true,
        extra: ["--node-monitor-grace-period=3s", "--node-monitor-period=500ms", "--default-unreachable-toleration-seconds=4"].map(String::from).to_vec(),
        ..Options::default()
    };
    let s = ApiServer::start_opts(Backend::Embedded, opts);
    let a = SimNode::start(&s, "sim-lc-a");
    s.ok(&["create", "namespace", "lc"]);
    s.ok(&["create", "deployment", "web", "--image", IMG, "--replicas=3", "-n", "lc"]);
    let running_on = |node: &str| pods(&s, "lc").into_iter().filter(|p| node_of(p) == node && p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running").count();
    assert!(eventually(LONG, || running_on("sim-lc-a") == 3), "{:?}", pods(&s, "lc").iter().map(|p| (name(p), node_of(p).to_string(), p["status"]["phase"].clone())).collect::<Vec<_>>());
    // The API server gave every pod the default tolerations (DefaultTolerationSeconds).
    let before = pods(&s, "lc");
    for p in &before {
        let tol = p["spec"]["tolerations"].as_array().cloned().unwrap_or_default();
        let secs = |key: &str| tol.iter().find(|t| t["key"] == key && t["effect"] == "NoExecute" && t["operator"] == "Exists").map(|t| t["tolerationSeconds"].clone());
        assert_eq!(secs("node.kubernetes.io/not-ready"), Some(Value::from(300)), "{tol:?}");
        assert_eq!(secs("node.kubernetes.io/unreachable"), Some(Value::from(4)), "{tol:?}");
    }
    // A healthy node: no taints from the lifecycle controller.
    std::thread::sleep(Duration::from_secs(4));
    assert!(taints(&s, "sim-lc-a").is_empty(), "{:?}", taints(&s, "sim-lc-a"));
    let _b = SimNode::start(&s, "sim-lc-b");

    // Node a goes silent.
    a.pause();
    assert!(
        eventually(LONG, || {
            let n = get_json(&s, "/api/v1/nodes/sim-lc-a");
            let r = condition(&n, "Ready");
            r["status"] == "Unknown" && r["reason"] == "NodeStatusUnknown" && r["message"] == "Kubelet stopped posting node status."
        }),
        "{}",
        get_json(&s, "/api/v1/nodes/sim-lc-a")["status"]
    );
    assert!(eventually(LONG, || has_taint(&s, "sim-lc-a", "node.kubernetes.io/unreachable", "NoSchedule") && has_taint(&s, "sim-lc-a", "node.kubernetes.io/unreachable", "NoExecute")), "{:?}", taints(&s, "sim-lc-a"));
    let n = get_json(&s, "/api/v1/nodes/sim-lc-a");
    let ne = n["spec"]["taints"].as_array().and_then(|t| t.iter().find(|t| t["effect"] == "NoExecute").cloned()).expect("NoExecute taint");
    assert!(ne["timeAdded"].is_string(), "{ne}");
    for kind in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert_eq!(condition(&n, kind)["status"], "Unknown", "{kind}: {}", n["status"]);
    }
    // Its pods: Ready False, then (after their 4 s toleration) deleted — they stay Terminating,
    // as nobody on the node confirms — and replaced on node b.
    assert!(
        eventually(LONG, || {
            let now = pods(&s, "lc");
            before.iter().all(|old| {
                now.iter().find(|p| name(p) == name(old)).is_some_and(|p| {
                    !p["metadata"]["deletionTimestamp"].is_null() && condition(p, "Ready")["status"] == "False" && condition(p, "DisruptionTarget")["reason"] == "DeletionByTaintManager"
                })
            })
        }),
        "{:?}",
        pods(&s, "lc").iter().map(|p| (name(p), p["metadata"]["deletionTimestamp"].clone(), p["status"]["conditions"].clone())).collect::<Vec<_>>()
    );
    assert!(eventually(LONG, || running_on("sim-lc-b") == 3), "{:?}", pods(&s, "lc").iter().map(|p| (name(p), node_of(p).to_string())).collect::<Vec<_>>());
    assert_eq!(running_on("sim-lc-a"), 0);
    assert!(eventually(LONG, || s.ok(&["get", "events", "-n", "lc", "--field-selector", "reason=TaintManagerEviction"]).contains(&format!("Marking for deletion Pod lc/{}", name(&before[0])))));
    assert!(eventually(LONG, || s.ok(&["get", "deploy", "web", "-n", "lc", "--no-headers"]).split_whitespace().nth(1) == Some("3/3")));

    // A node reporting NotReady (alive, unhealthy) gets the not-ready taints.
    let c = SimNode::start(&s, "sim-lc-c");
    c.set_ready(false);
    assert!(eventually(LONG, || has_taint(&s, "sim-lc-c", "node.kubernetes.io/not-ready", "NoSchedule") && has_taint(&s, "sim-lc-c", "node.kubernetes.io/not-ready", "NoExecute")), "{:?}", taints(&s, "sim-lc-c"));

    // Node a comes back: its taints go, and the pods it had are finally gone.
    a.resume();
    assert!(eventually(LONG, || taints(&s, "sim-lc-a").is_empty()), "{:?}", taints(&s, "sim-lc-a"));
    assert_eq!(condition(&get_json(&s, "/api/v1/nodes/sim-lc-a"), "Ready")["status"], "True");
    assert!(eventually(LONG, || pods(&s, "lc").len() == 3), "{:?}", pods(&s, "lc").iter().map(name).collect::<Vec<_>>());
    assert!(pods(&s, "lc").iter().all(|p| node_of(p) == "sim-lc-b"));
    drop(c);
}
