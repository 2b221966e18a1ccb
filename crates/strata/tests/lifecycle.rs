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

fn pods(s: &ApiServer, ns: &str) -> Vec<Value> {
    s.get_json(&format!("/api/v1/namespaces/{ns}/pods"))["items"].as_array().cloned().unwrap_or_default()
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
    let n = s.get_json(&format!("/api/v1/nodes/{node}"));
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
            let n = s.get_json("/api/v1/nodes/sim-lc-a");
            let r = condition(&n, "Ready");
            r["status"] == "Unknown" && r["reason"] == "NodeStatusUnknown" && r["message"] == "Kubelet stopped posting node status."
        }),
        "{}",
        s.get_json("/api/v1/nodes/sim-lc-a")["status"]
    );
    assert!(eventually(LONG, || has_taint(&s, "sim-lc-a", "node.kubernetes.io/unreachable", "NoSchedule") && has_taint(&s, "sim-lc-a", "node.kubernetes.io/unreachable", "NoExecute")), "{:?}", taints(&s, "sim-lc-a"));
    let n = s.get_json("/api/v1/nodes/sim-lc-a");
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
    assert_eq!(condition(&s.get_json("/api/v1/nodes/sim-lc-a"), "Ready")["status"], "True");
    assert!(eventually(LONG, || pods(&s, "lc").len() == 3), "{:?}", pods(&s, "lc").iter().map(name).collect::<Vec<_>>());
    assert!(pods(&s, "lc").iter().all(|p| node_of(p) == "sim-lc-b"));
    drop(c);
}

fn pdb_status(s: &ApiServer, ns: &str, name: &str) -> Value {
    s.get_json(&format!("/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets/{name}"))["status"].clone()
}

/// Node `from` holds the 3 pods of deployment `web` (a budget of minAvailable 2 covers them);
/// `kubectl drain` with the given kubectl evicts them one disruption at a time (retrying on
/// 429) and they end up on `to`.
fn drain_respecting_the_budget(s: &ApiServer, kubectl: &str, ns: &str, from: &str, to: &str) {
    let out = s.kubectl_bin(kubectl, &["drain", from, "--ignore-daemonsets", "--timeout=120s"], None);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "drain with {kubectl}: {stdout}{stderr}");
    assert!(stdout.contains(&format!("node/{from} cordoned")) && stdout.contains(&format!("node/{from} drained")), "{stdout}");
    assert!(stdout.contains(&format!("evicting pod {ns}/web-")), "{stdout}");
    // --ignore-daemonsets: the DaemonSet's pod stays on the node.
    assert!(stderr.contains("ignoring DaemonSet-managed Pods: dr-ds/agent-"), "{stderr}");
    assert!(pods(s, "dr-ds").iter().any(|p| node_of(p) == from && p["metadata"]["deletionTimestamp"].is_null()), "{:?}", pods(s, "dr-ds").iter().map(|p| (name(p), node_of(p).to_string())).collect::<Vec<_>>());
    // The budget allowed one disruption at a time: the others were refused and retried.
    assert!(stderr.contains("Cannot evict pod as it would violate the pod's disruption budget.") && stderr.contains("will retry after 5s"), "{stderr}");
    let ps = pods(s, ns);
    assert!(eventually(LONG, || { let ps = pods(s, ns); ps.len() == 3 && ps.iter().all(|p| node_of(p) == to && p["status"]["phase"] == "Running") }), "{:?}", ps.iter().map(|p| (name(p), node_of(p).to_string())).collect::<Vec<_>>());
    assert_eq!(s.get_json(&format!("/api/v1/nodes/{from}"))["spec"]["unschedulable"], true);
    assert!(has_taint(s, from, "node.kubernetes.io/unschedulable", "NoSchedule"), "{:?}", taints(s, from));
}

#[test]
fn kubectl_drain_evicts_through_the_budget_and_uncordon_undoes_it() {
    let s = ApiServer::start_opts(Backend::Embedded, Options { controllers: true, scheduler: true, ..Options::default() });
    let a = SimNode::start(&s, "sim-dr-a");
    s.ok(&["create", "namespace", "dr"]);
    s.ok(&["create", "deployment", "web", "--image", IMG, "--replicas=3", "-n", "dr"]);
    assert!(eventually(LONG, || pods(&s, "dr").iter().filter(|p| node_of(p) == "sim-dr-a" && p["status"]["phase"] == "Running").count() == 3));
    let b = SimNode::start(&s, "sim-dr-b");
    // A DaemonSet (another namespace) has a pod on each node; drain leaves those alone.
    s.ok(&["create", "namespace", "dr-ds"]);
    let ds = format!(
        r#"{{"apiVersion":"apps/v1","kind":"DaemonSet","metadata":{{"name":"agent","namespace":"dr-ds"}},
        "spec":{{"selector":{{"matchLabels":{{"app":"agent"}}}},"template":{{"metadata":{{"labels":{{"app":"agent"}}}},"spec":{{"containers":[{{"name":"c","image":"{IMG}"}}]}}}}}}}}"#
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&ds));
    assert!(eventually(LONG, || { let ps = pods(&s, "dr-ds"); ps.len() == 2 && ps.iter().all(|p| p["status"]["phase"] == "Running") && ps.iter().any(|p| node_of(p) == "sim-dr-b") }), "{:?}", pods(&s, "dr-ds").iter().map(|p| (name(p), node_of(p).to_string())).collect::<Vec<_>>());
    s.ok(&["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=2", "-n", "dr"]);
    // The disruption controller's status, as kubectl shows it.
    assert!(eventually(LONG, || {
        let st = pdb_status(&s, "dr", "web");
        st["currentHealthy"] == 3 && st["desiredHealthy"] == 2 && st["expectedPods"] == 3 && st["disruptionsAllowed"] == 1 && st["observedGeneration"] == 1
    }), "{}", pdb_status(&s, "dr", "web"));
    let st = pdb_status(&s, "dr", "web");
    let cond = &st["conditions"][0];
    assert_eq!((cond["type"].as_str(), cond["status"].as_str(), cond["reason"].as_str()), (Some("DisruptionAllowed"), Some("True"), Some("SufficientPods")), "{st}");
    let row = s.ok(&["get", "pdb", "web", "-n", "dr"]);
    let header: Vec<&str> = row.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"], "{row}");
    assert_eq!(row.lines().nth(1).unwrap_or("").split_whitespace().take(4).collect::<Vec<_>>(), ["web", "2", "N/A", "1"], "{row}");

    // The eviction API itself: one disruption is spent (201), the next is refused (429). Both
    // nodes are cordoned meanwhile, so no replacement can become ready and give one back.
    s.ok(&["cordon", "sim-dr-a"]);
    s.ok(&["cordon", "sim-dr-b"]);
    let victims: Vec<String> = pods(&s, "dr").iter().map(name).collect();
    let evict = |pod: &str| {
        let body = serde_json::json!({ "apiVersion": "policy/v1", "kind": "Eviction", "metadata": { "name": pod, "namespace": "dr" } }).to_string();
        s.curl("POST", &format!("/api/v1/namespaces/dr/pods/{pod}/eviction"), Auth::Admin, Some("application/json"), Some(body.as_bytes()))
    };
    let (code, body) = evict(&victims[0]);
    assert_eq!(code, 201, "{body}");
    let (code, body) = evict(&victims[1]);
    assert_eq!(code, 429, "{body}: budget {} pods {:?}", pdb_status(&s, "dr", "web"), pods(&s, "dr").iter().map(|p| (name(p), p["metadata"]["deletionTimestamp"].clone(), p["status"]["conditions"].clone())).collect::<Vec<_>>());
    let st: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    assert_eq!((st["reason"].as_str(), st["message"].as_str()), (Some("TooManyRequests"), Some("Cannot evict pod as it would violate the pod's disruption budget.")), "{body}");
    assert_eq!(st["details"]["causes"][0]["reason"], "DisruptionBudget", "{body}");
    assert!(st["details"]["causes"][0]["message"].as_str().unwrap_or("").starts_with("The disruption budget web needs 2 healthy pods and has "), "{body}");
    // The evicted pod was deleted gracefully (its node confirmed); its replacement waits for a
    // node, then runs on a and gives the disruption back.
    assert!(eventually(LONG, || pods(&s, "dr").iter().all(|p| name(p) != victims[0])));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pdb_status(&s, "dr", "web")["disruptionsAllowed"], 0, "{}", pdb_status(&s, "dr", "web"));
    s.ok(&["uncordon", "sim-dr-a"]);
    assert!(eventually(LONG, || { let ps = pods(&s, "dr"); ps.len() == 3 && ps.iter().all(|p| node_of(p) == "sim-dr-a" && p["status"]["phase"] == "Running") }));
    s.ok(&["uncordon", "sim-dr-b"]);
    assert!(eventually(LONG, || !has_taint(&s, "sim-dr-b", "node.kubernetes.io/unschedulable", "NoSchedule")));
    assert!(eventually(LONG, || pdb_status(&s, "dr", "web")["disruptionsAllowed"] == 1));

    // kubectl 1.33 drains a onto b; kubectl 1.27 drains b back onto a.
    drain_respecting_the_budget(&s, &common::server::kubectl_of("1.33"), "dr", "sim-dr-a", "sim-dr-b");
    s.ok(&["uncordon", "sim-dr-a"]);
    assert!(eventually(LONG, || pdb_status(&s, "dr", "web")["disruptionsAllowed"] == 1));
    drain_respecting_the_budget(&s, &common::server::kubectl_of("1.27"), "dr", "sim-dr-b", "sim-dr-a");
    s.ok(&["uncordon", "sim-dr-b"]);
    assert_ne!(s.get_json("/api/v1/nodes/sim-dr-b")["spec"]["unschedulable"], true);
    drop((a, b));
}
