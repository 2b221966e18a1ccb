//! DaemonSets, StatefulSets and what they stand on (ControllerRevisions, PersistentVolumes,
//! StorageClasses, claim binding) end to end: a real `strata server` with its scheduler and
//! controllers in process, driven by the real `kubectl`. Nodes are *simulated* (Node objects
//! the test registers, named `sim-*`, running nothing): a thread of the test acts as their
//! kubelets, marking pods bound to them Running and Ready through `pods/status` and confirming
//! the deletion of their pods (grace 0) as a kubelet does.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::eventually;
use common::server::{ApiServer, Backend, Options};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(90);

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

#[test]
fn controller_revisions_are_served_validated_and_printed() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "namespace", "cr1"]);
    let rev = |name: &str, data: &str, revision: i64| {
        format!(
            "apiVersion: apps/v1\nkind: ControllerRevision\nmetadata:\n  name: {name}\n  namespace: cr1\n  labels: {{app: web}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: DaemonSet, name: web, uid: 0b6a2f8e-0000-4000-8000-000000000001, controller: true}}]\n{data}revision: {revision}\n"
        )
    };
    s.ok_stdin(&["create", "-f", "-"], Some(&rev("web-1", "data: {spec: {template: {metadata: {labels: {app: web}}}}}\n", 1)));
    s.ok_stdin(&["create", "-f", "-"], Some(&rev("web-2", "data: {spec: {template: {metadata: {labels: {app: web, v: \"2\"}}}}}\n", 2)));
    // `kubectl get` prints upstream's columns: the controller as kind.group/name.
    let out = s.ok(&["get", "controllerrevisions", "-n", "cr1"]);
    let lines: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["NAME", "CONTROLLER", "REVISION", "AGE"], "{out}");
    assert_eq!(&lines[1][..3], ["web-1", "daemonset.apps/web", "1"], "{out}");
    assert_eq!(&lines[2][..3], ["web-2", "daemonset.apps/web", "2"], "{out}");
    let got = s.get_json("/apis/apps/v1/namespaces/cr1/controllerrevisions/web-2");
    assert_eq!(got["data"]["spec"]["template"]["metadata"]["labels"]["v"], "2");
    assert_eq!(got["revision"], 2);
    // Label selectors (what `kubectl rollout history` lists by).
    assert_eq!(s.ok(&["get", "controllerrevisions", "-n", "cr1", "-l", "app=web", "-o", "name"]).lines().count(), 2);
    // The OpenAPI schema (`kubectl explain`).
    let explain = s.ok(&["explain", "controllerrevision.revision"]);
    assert!(explain.contains("revision") && explain.contains("integer"), "{explain}");

    // Bad input, as upstream refuses it.
    let err = s.fails(&["create", "-f", "-"], Some(&rev("no-data", "", 1)));
    assert!(err.contains("data: Required value: data is mandatory"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&rev("negative", "data: {a: 1}\n", -1)));
    assert!(err.contains("revision: Invalid value: -1: must be greater than or equal to 0"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&rev("not-object", "data: [1, 2]\n", 1)));
    assert!(err.contains("data must be a valid JSON object"), "{err}");
    // Data is a snapshot: never changed; labels and the revision number may be.
    let err = s.fails(&["patch", "controllerrevision", "web-1", "-n", "cr1", "--type=merge", "-p", r#"{"data":{"spec":{"x":1}}}"#], None);
    assert!(err.contains("data: Invalid value") && err.contains("field is immutable"), "{err}");
    s.ok(&["patch", "controllerrevision", "web-1", "-n", "cr1", "--type=merge", "-p", r#"{"revision":3,"metadata":{"labels":{"x":"y"}}}"#]);
    assert_eq!(s.get_json("/apis/apps/v1/namespaces/cr1/controllerrevisions/web-1")["revision"], 3);
    s.ok(&["delete", "controllerrevision", "web-1", "web-2", "-n", "cr1"]);
    assert!(s.items("/apis/apps/v1/namespaces/cr1/controllerrevisions").is_empty());
}

fn server() -> ApiServer {
    ApiServer::start_opts(Backend::Embedded, Options { scheduler: true, controllers: true, ..Options::default() })
}

/// Register a simulated node (a Node object with capacity and a Ready condition, running nothing).
fn sim_node(s: &ApiServer, name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) {
    let mut l = format!("kubernetes.io/hostname: {name}");
    for (k, v) in labels {
        l.push_str(&format!(", {k}: \"{v}\""));
    }
    let t: Vec<String> = taints.iter().map(|(k, e)| format!("{{key: {k}, effect: {e}}}")).collect();
    let yaml = format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{l}}}}}\nspec: {{taints: [{}]}}\nstatus:\n  capacity: {{cpu: \"8\", memory: 16Gi, pods: \"110\"}}\n  allocatable: {{cpu: \"8\", memory: 16Gi, pods: \"110\"}}\n  conditions: [{{type: Ready, status: \"True\"}}]\n",
        t.join(", ")
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&yaml));
}

/// The kubelets of the simulated nodes (`sim-*`) of one namespace: pods bound to them become
/// Running and Ready (through `pods/status`); pods marked for deletion are confirmed deleted
/// (grace 0), as a kubelet does once it has stopped them. Records every pod name it saw Ready,
/// in order.
struct SimKubelets {
    stop: Arc<AtomicBool>,
    ready_order: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimKubelets {
    fn start(s: &ApiServer, ns: &str) -> SimKubelets {
        Self::start_with(s, ns, |_| true)
    }

    /// `make_ready(pod name)` decides whether a Running pod is reported Ready now.
    fn start_with(s: &ApiServer, ns: &str, make_ready: impl Fn(&str) -> bool + Send + 'static) -> SimKubelets {
        let stop = Arc::new(AtomicBool::new(false));
        let ready_order = Arc::new(Mutex::new(Vec::new()));
        let (ns, data, port) = (ns.to_string(), s.data_dir().to_path_buf(), s.port);
        let (stop2, order2) = (stop.clone(), ready_order.clone());
        let thread = std::thread::spawn(move || {
            let curl = |method: &str, path: &str, body: Option<&str>| -> (u16, String) {
                let pki = data.join("pki");
                let mut c = std::process::Command::new("curl");
                c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--cacert"]).arg(pki.join("ca.crt"));
                c.arg("--cert").arg(pki.join("admin.crt")).arg("--key").arg(pki.join("admin.key"));
                if let Some(b) = body {
                    let ct = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
                    c.args(["-H", &format!("Content-Type: {ct}"), "--data-binary", b]);
                }
                let out = c.arg(format!("https://127.0.0.1:{port}{path}")).stdin(std::process::Stdio::null()).output().expect("curl");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
                (code.trim().parse().unwrap_or(0), body.to_string())
            };
            let mut beat = std::time::Instant::now() - Duration::from_secs(60);
            while !stop2.load(Ordering::SeqCst) {
                // Heartbeats, so the node lifecycle controller keeps the simulated nodes Ready.
                if beat.elapsed() > Duration::from_secs(5) {
                    beat = std::time::Instant::now();
                    let (_, body) = curl("GET", "/api/v1/nodes", None);
                    let nodes: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    for n in nodes["items"].as_array().cloned().unwrap_or_default().iter().filter(|n| name(n).starts_with("sim-")) {
                        let body = json!({ "status": { "conditions": [{ "type": "Ready", "status": "True", "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now }] } }).to_string();
                        curl("PATCH", &format!("/api/v1/nodes/{}/status", name(n)), Some(&body));
                    }
                }
                let (_, body) = curl("GET", &format!("/api/v1/namespaces/{ns}/pods"), None);
                let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                for p in list["items"].as_array().cloned().unwrap_or_default() {
                    let node = p["spec"]["nodeName"].as_str().unwrap_or("");
                    if !node.starts_with("sim-") {
                        continue;
                    }
                    let pname = name(&p);
                    if !p["metadata"]["deletionTimestamp"].is_null() {
                        curl("DELETE", &format!("/api/v1/namespaces/{ns}/pods/{pname}"), Some(r#"{"gracePeriodSeconds":0}"#));
                        continue;
                    }
                    let is_ready = p["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                    if p["status"]["phase"] == "Running" && (is_ready || !make_ready(&pname)) {
                        continue;
                    }
                    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    let ready = if make_ready(&pname) { "True" } else { "False" };
                    let body = json!({ "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": ready, "lastTransitionTime": now }] } }).to_string();
                    let (code, _) = curl("PATCH", &format!("/api/v1/namespaces/{ns}/pods/{pname}/status"), Some(&body));
                    if code == 200 && ready == "True" {
                        order2.lock().expect("order").push(pname);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        SimKubelets { stop, ready_order, thread: Some(thread) }
    }

    fn ready_order(&self) -> Vec<String> {
        self.ready_order.lock().expect("order").clone()
    }
}

impl Drop for SimKubelets {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Live (not terminating) pods of a namespace.
fn live_pods(s: &ApiServer, ns: &str) -> Vec<Value> {
    s.items(&format!("/api/v1/namespaces/{ns}/pods")).into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect()
}

/// Wait until the live pods' nodes are exactly `nodes` (one pod each); the pods.
fn wait_daemon_pods(s: &ApiServer, ns: &str, nodes: &[&str]) -> Vec<Value> {
    let mut want: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
    want.sort();
    let mut last = Vec::new();
    let ok = eventually(LONG, || {
        last = live_pods(s, ns);
        let mut have: Vec<String> = last.iter().map(|p| p["spec"]["nodeName"].as_str().unwrap_or("<unbound>").to_string()).collect();
        have.sort();
        have == want
    });
    let seen: Vec<(String, String)> = last.iter().map(|p| (name(p), p["spec"]["nodeName"].as_str().unwrap_or("<unbound>").to_string())).collect();
    assert!(ok, "expected one pod on each of {want:?}, have {seen:?}");
    last
}

fn daemonset_yaml(ns: &str, image: &str, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: agent}}}}\n{strategy}  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      nodeSelector: {{role: worker}}\n      containers: [{{name: c, image: \"{image}\"}}]\n"
    )
}

#[test]
fn daemonset_runs_one_pod_per_eligible_node_and_follows_nodes() {
    let s = server();
    s.ok(&["create", "namespace", "ds1"]);
    sim_node(&s, "sim-a", &[("role", "worker")], &[]);
    sim_node(&s, "sim-b", &[("role", "worker")], &[("node.kubernetes.io/unschedulable", "NoSchedule")]);
    sim_node(&s, "sim-tainted", &[("role", "worker")], &[("dedicated", "NoSchedule")]);
    sim_node(&s, "sim-other", &[("role", "db")], &[]);
    let _kubelets = SimKubelets::start(&s, "ds1");
    s.ok_stdin(&["apply", "-f", "-"], Some(&daemonset_yaml("ds1", "registry.invalid/agent:v1", "")));
    // One pod on each worker the template fits: not on the tainted node, nor on the db node;
    // the cordoned node (unschedulable taint) is tolerated, as upstream's daemon tolerations say.
    let pods = wait_daemon_pods(&s, "ds1", &["sim-a", "sim-b"]);
    let ds = s.get_json("/apis/apps/v1/namespaces/ds1/daemonsets/agent");
    let revs = s.items("/apis/apps/v1/namespaces/ds1/controllerrevisions");
    assert_eq!(revs.len(), 1, "one ControllerRevision: {revs:?}");
    let hash = revs[0]["metadata"]["labels"]["controller-revision-hash"].as_str().expect("hash label").to_string();
    assert_eq!(name(&revs[0]), format!("agent-{hash}"));
    assert_eq!(revs[0]["revision"], 1);
    assert_eq!(revs[0]["data"]["spec"]["template"]["$patch"], "replace");
    for p in &pods {
        let node = p["spec"]["nodeName"].as_str().unwrap_or("");
        assert!(name(p).starts_with("agent-"), "{}", name(p));
        assert_eq!(p["metadata"]["labels"]["controller-revision-hash"], hash.as_str());
        let owner = &p["metadata"]["ownerReferences"][0];
        assert_eq!((owner["kind"].as_str(), owner["uid"].clone(), owner["controller"].clone()), (Some("DaemonSet"), ds["metadata"]["uid"].clone(), json!(true)));
        // Pinned to its node by a required node affinity on metadata.name, bound by the scheduler.
        let term = &p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"][0];
        assert_eq!((term["key"].as_str(), term["operator"].as_str(), term["values"].clone()), (Some("metadata.name"), Some("In"), json!([node])));
        let tols: Vec<(String, String)> = p["spec"]["tolerations"].as_array().cloned().unwrap_or_default().iter().map(|t| (t["key"].as_str().unwrap_or("").to_string(), t["effect"].as_str().unwrap_or("").to_string())).collect();
        for (k, e) in [("not-ready", "NoExecute"), ("unreachable", "NoExecute"), ("disk-pressure", "NoSchedule"), ("memory-pressure", "NoSchedule"), ("pid-pressure", "NoSchedule"), ("unschedulable", "NoSchedule")] {
            assert!(tols.contains(&(format!("node.kubernetes.io/{k}"), e.to_string())), "toleration {k}:{e} in {tols:?}");
        }
    }
    // Status as `kubectl get ds` and `kubectl rollout status` read it.
    let out = s.ok(&["rollout", "status", "ds/agent", "-n", "ds1", "--timeout=80s"]);
    assert!(out.contains("daemon set \"agent\" successfully rolled out"), "{out}");
    let row: Vec<String> = s.ok(&["get", "ds", "agent", "-n", "ds1", "--no-headers"]).split_whitespace().map(str::to_string).collect();
    assert_eq!(&row[1..6], ["2", "2", "2", "2", "2"], "DESIRED CURRENT READY UP-TO-DATE AVAILABLE: {row:?}");
    let st = s.get_json("/apis/apps/v1/namespaces/ds1/daemonsets/agent")["status"].clone();
    assert_eq!((st["numberMisscheduled"].clone(), st["observedGeneration"].clone(), st["numberUnavailable"].clone()), (json!(0), json!(1), json!(0)), "{st}");

    // A new eligible node gets a pod.
    sim_node(&s, "sim-new", &[("role", "worker")], &[]);
    wait_daemon_pods(&s, "ds1", &["sim-a", "sim-b", "sim-new"]);
    // A node that stops matching the selector loses its pod.
    s.ok(&["label", "node", "sim-a", "role=db", "--overwrite"]);
    wait_daemon_pods(&s, "ds1", &["sim-b", "sim-new"]);
    // An untolerated NoExecute taint evicts it too.
    s.ok(&["taint", "node", "sim-b", "evict=now:NoExecute"]);
    wait_daemon_pods(&s, "ds1", &["sim-new"]);
    // A deleted node's pod goes.
    s.ok(&["delete", "node", "sim-new"]);
    wait_daemon_pods(&s, "ds1", &[]);
    // And the tolerated node comes back into the set when its label does.
    s.ok(&["label", "node", "sim-a", "role=worker", "--overwrite"]);
    wait_daemon_pods(&s, "ds1", &["sim-a"]);
    assert!(eventually(LONG, || s.get_json("/apis/apps/v1/namespaces/ds1/daemonsets/agent")["status"]["desiredNumberScheduled"] == 1));
    // A deleted pod is replaced on its node.
    let victim = name(&live_pods(&s, "ds1")[0]);
    s.ok(&["delete", "pod", &victim, "-n", "ds1", "--wait=false"]);
    let now = wait_daemon_pods(&s, "ds1", &["sim-a"]);
    assert_ne!(name(&now[0]), victim);
    let events = s.ok(&["get", "events", "-n", "ds1"]);
    assert!(events.contains("SuccessfulCreate") && events.contains("SuccessfulDelete"), "{events}");
}

#[test]
fn daemonset_rolling_update_history_undo_and_on_delete() {
    let s = server();
    s.ok(&["create", "namespace", "ds2"]);
    for n in ["sim-r1", "sim-r2", "sim-r3"] {
        sim_node(&s, n, &[("role", "worker")], &[]);
    }
    let kubelets = SimKubelets::start(&s, "ds2");
    let strategy = "  updateStrategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 0, maxSurge: 1}}\n";
    s.ok_stdin(&["apply", "-f", "-"], Some(&daemonset_yaml("ds2", "registry.invalid/agent:v1", strategy)));
    wait_daemon_pods(&s, "ds2", &["sim-r1", "sim-r2", "sim-r3"]);
    s.ok(&["rollout", "status", "ds/agent", "-n", "ds2", "--timeout=80s"]);
    let first: Vec<String> = live_pods(&s, "ds2").iter().map(name).collect();
    // A new template rolls out with maxSurge 1: a new pod beside the old one, the old one
    // deleted once the new one is available.
    s.ok(&["set", "image", "ds/agent", "c=registry.invalid/agent:v2", "-n", "ds2"]);
    let out = s.ok(&["rollout", "status", "ds/agent", "-n", "ds2", "--timeout=80s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = wait_daemon_pods(&s, "ds2", &["sim-r1", "sim-r2", "sim-r3"]);
    assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "registry.invalid/agent:v2" && !first.contains(&name(p))), "{pods:?}");
    assert!(kubelets.ready_order().len() >= 6, "each replacement was made ready: {:?}", kubelets.ready_order());
    let revs = s.items("/apis/apps/v1/namespaces/ds2/controllerrevisions");
    assert_eq!(revs.len(), 2, "{revs:?}");
    let history = s.ok(&["rollout", "history", "ds/agent", "-n", "ds2"]);
    let lines: Vec<&str> = history.lines().filter(|l| l.starts_with(char::is_numeric)).collect();
    assert_eq!(lines.len(), 2, "{history}");
    let r1 = s.ok(&["rollout", "history", "ds/agent", "-n", "ds2", "--revision=1"]);
    assert!(r1.contains("registry.invalid/agent:v1"), "{r1}");
    // Undo: back to v1 as revision 3.
    let undo = s.ok(&["rollout", "undo", "ds/agent", "-n", "ds2"]);
    assert!(undo.contains("rolled back"), "{undo}");
    s.ok(&["rollout", "status", "ds/agent", "-n", "ds2", "--timeout=80s"]);
    let pods = wait_daemon_pods(&s, "ds2", &["sim-r1", "sim-r2", "sim-r3"]);
    assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "registry.invalid/agent:v1"), "{pods:?}");
    assert!(eventually(LONG, || {
        let revs = s.items("/apis/apps/v1/namespaces/ds2/controllerrevisions");
        revs.len() == 2 && revs.iter().any(|r| r["revision"] == 3 && r["data"]["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.invalid/agent:v1")
    }), "{:?}", s.items("/apis/apps/v1/namespaces/ds2/controllerrevisions"));

    // OnDelete: a new template changes no pod until one is deleted.
    s.ok(&["patch", "ds", "agent", "-n", "ds2", "--type=merge", "-p", r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#]);
    s.ok(&["set", "image", "ds/agent", "c=registry.invalid/agent:v3", "-n", "ds2"]);
    assert!(eventually(LONG, || s.get_json("/apis/apps/v1/namespaces/ds2/daemonsets/agent")["status"]["observedGeneration"] == s.get_json("/apis/apps/v1/namespaces/ds2/daemonsets/agent")["metadata"]["generation"]));
    std::thread::sleep(Duration::from_secs(3));
    let pods = live_pods(&s, "ds2");
    assert!(pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "registry.invalid/agent:v1"), "OnDelete leaves pods alone: {pods:?}");
    assert_eq!(s.get_json("/apis/apps/v1/namespaces/ds2/daemonsets/agent")["status"]["updatedNumberScheduled"], 0);
    let victim = pods.iter().find(|p| p["spec"]["nodeName"] == "sim-r2").map(name).expect("pod on sim-r2");
    s.ok(&["delete", "pod", &victim, "-n", "ds2", "--wait=false"]);
    assert!(eventually(LONG, || live_pods(&s, "ds2").iter().any(|p| p["spec"]["nodeName"] == "sim-r2" && p["spec"]["containers"][0]["image"] == "registry.invalid/agent:v3")));
    let pods = wait_daemon_pods(&s, "ds2", &["sim-r1", "sim-r2", "sim-r3"]);
    assert_eq!(pods.iter().filter(|p| p["spec"]["containers"][0]["image"] == "registry.invalid/agent:v1").count(), 2, "{pods:?}");
    // Deleting the DaemonSet takes its pods and revisions (garbage collection).
    s.ok(&["delete", "ds", "agent", "-n", "ds2"]);
    assert!(eventually(LONG, || live_pods(&s, "ds2").is_empty() && s.items("/apis/apps/v1/namespaces/ds2/controllerrevisions").is_empty()));
}

fn statefulset_yaml(ns: &str, replicas: i32, policy: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  serviceName: nginx\n  replicas: {replicas}\n  podManagementPolicy: {policy}\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: c, image: \"{image}\", volumeMounts: [{{name: www, mountPath: /data}}]}}]\n  volumeClaimTemplates:\n  - metadata: {{name: www}}\n    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Mi}}}}}}\n"
    )
}

fn pod_names(s: &ApiServer, ns: &str) -> Vec<String> {
    let mut n: Vec<String> = live_pods(s, ns).iter().map(name).collect();
    n.sort();
    n
}

fn wait_names(s: &ApiServer, ns: &str, want: &[&str]) {
    let mut last = Vec::new();
    assert!(eventually(LONG, || {
        last = pod_names(s, ns);
        last == want
    }), "expected pods {want:?}, have {last:?}");
}

#[test]
fn statefulset_ordered_stable_names_claims_and_scale_down_in_reverse() {
    let s = server();
    s.ok(&["create", "namespace", "st1"]);
    sim_node(&s, "sim-s1", &[], &[]);
    // web-1 is held not Ready until the test releases it: web-2 must not be created before.
    let release = Arc::new(AtomicBool::new(false));
    let r2 = release.clone();
    let kubelets = SimKubelets::start_with(&s, "st1", move |pod| pod != "web-1" || r2.load(Ordering::SeqCst));
    s.ok_stdin(&["apply", "-f", "-"], Some(&statefulset_yaml("st1", 3, "OrderedReady", "registry.invalid/web:v1")));
    // While web-1 is not Ready there are exactly web-0 and web-1.
    assert!(eventually(LONG, || pod_names(&s, "st1") == ["web-0", "web-1"] && s.get_json("/api/v1/namespaces/st1/pods/web-1")["status"]["phase"] == "Running"), "{:?}", pod_names(&s, "st1"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pod_names(&s, "st1"), ["web-0", "web-1"], "web-2 waits for web-1 to be Ready");
    assert_eq!(s.get_json("/apis/apps/v1/namespaces/st1/statefulsets/web")["status"]["readyReplicas"], 1);
    release.store(true, Ordering::SeqCst);
    wait_names(&s, "st1", &["web-0", "web-1", "web-2"]);
    let out = s.ok(&["rollout", "status", "sts/web", "-n", "st1", "--timeout=80s"]);
    assert!(out.contains("partitioned roll out complete") || out.contains("rolling update complete"), "{out}");
    // Ready in ordinal order.
    let order: Vec<String> = kubelets.ready_order().into_iter().filter(|n| n.starts_with("web-")).collect();
    assert_eq!(&order[..3], ["web-0", "web-1", "web-2"], "{order:?}");
    let set = s.get_json("/apis/apps/v1/namespaces/st1/statefulsets/web");
    for (i, p) in live_pods(&s, "st1").iter().enumerate() {
        let n = format!("web-{i}");
        let p = live_pods(&s, "st1").into_iter().find(|x| name(x) == n).unwrap_or_else(|| p.clone());
        assert_eq!(p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], n.as_str());
        assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], i.to_string().as_str());
        assert_eq!((p["spec"]["hostname"].as_str(), p["spec"]["subdomain"].as_str()), (Some(n.as_str()), Some("nginx")));
        assert_eq!(p["metadata"]["labels"]["controller-revision-hash"], set["status"]["updateRevision"]);
        let claim = p["spec"]["volumes"].as_array().and_then(|v| v.iter().find(|v| v["name"] == "www")).map(|v| v["persistentVolumeClaim"]["claimName"].clone());
        assert_eq!(claim, Some(json!(format!("www-web-{i}"))));
        assert_eq!(p["metadata"]["ownerReferences"][0]["uid"], set["metadata"]["uid"]);
    }
    // A claim per pod, made before it, labelled with the selector.
    let claims: Vec<String> = s.items("/api/v1/namespaces/st1/persistentvolumeclaims").iter().map(name).collect();
    assert_eq!(claims, ["www-web-0", "www-web-1", "www-web-2"]);
    assert_eq!(s.get_json("/api/v1/namespaces/st1/persistentvolumeclaims/www-web-1")["metadata"]["labels"]["app"], "web");
    // The default class provisions a volume for each, and they are bound.
    assert!(eventually(LONG, || (0..3).all(|i| phase_of(&s, &format!("/api/v1/namespaces/st1/persistentvolumeclaims/www-web-{i}")) == "Bound")), "{}", s.ok(&["get", "pvc,pv", "-A"]));
    let row: Vec<String> = s.ok(&["get", "sts", "web", "-n", "st1", "--no-headers"]).split_whitespace().map(str::to_string).collect();
    assert_eq!(row[1], "3/3", "{row:?}");

    // A deleted pod comes back under the same name.
    let uid = s.get_json("/api/v1/namespaces/st1/pods/web-1")["metadata"]["uid"].clone();
    s.ok(&["delete", "pod", "web-1", "-n", "st1", "--wait=false"]);
    assert!(eventually(LONG, || {
        let p = s.get_json("/api/v1/namespaces/st1/pods/web-1");
        !p.is_null() && p["metadata"]["uid"] != uid && p["metadata"]["deletionTimestamp"].is_null()
    }), "web-1 was not recreated");
    // Scale down: the highest ordinal goes first, one at a time; claims stay.
    s.ok(&["scale", "sts/web", "--replicas=1", "-n", "st1"]);
    let mut seen: Vec<Vec<String>> = Vec::new();
    assert!(eventually(LONG, || {
        let n = pod_names(&s, "st1");
        if seen.last() != Some(&n) {
            seen.push(n.clone());
        }
        n == ["web-0"]
    }), "{seen:?}");
    assert!(seen.iter().all(|n| n.as_slice() != ["web-0", "web-2"]), "web-1 never went before web-2: {seen:?}");
    let claims: Vec<String> = s.items("/api/v1/namespaces/st1/persistentvolumeclaims").iter().map(name).collect();
    assert_eq!(claims, ["www-web-0", "www-web-1", "www-web-2"], "claims are kept on scale-down");
    // Scaling up again reuses the names (and the claims).
    s.ok(&["scale", "sts/web", "--replicas=2", "-n", "st1"]);
    wait_names(&s, "st1", &["web-0", "web-1"]);
    assert_eq!(s.items("/api/v1/namespaces/st1/persistentvolumeclaims").len(), 3);
}

#[test]
fn statefulset_parallel_partitioned_rolling_update_and_on_delete() {
    let s = server();
    s.ok(&["create", "namespace", "st2"]);
    sim_node(&s, "sim-s2", &[], &[]);
    let _kubelets = SimKubelets::start(&s, "st2");
    s.ok_stdin(&["apply", "-f", "-"], Some(&statefulset_yaml("st2", 3, "Parallel", "registry.invalid/web:v1")));
    wait_names(&s, "st2", &["web-0", "web-1", "web-2"]);
    s.ok(&["rollout", "status", "sts/web", "-n", "st2", "--timeout=80s"]);
    let image = |n: &str| s.get_json(&format!("/api/v1/namespaces/st2/pods/{n}"))["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string();
    // Partition 2: only web-2 is updated.
    s.ok(&["patch", "sts", "web", "-n", "st2", "--type=merge", "-p", r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#]);
    s.ok(&["set", "image", "sts/web", "c=registry.invalid/web:v2", "-n", "st2"]);
    assert!(eventually(LONG, || image("web-2") == "registry.invalid/web:v2"), "web-2 was not updated");
    let out = s.ok(&["rollout", "status", "sts/web", "-n", "st2", "--timeout=80s"]);
    assert!(out.contains("partitioned roll out complete: 1 new pods have been updated"), "{out}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((image("web-0"), image("web-1")), ("registry.invalid/web:v1".to_string(), "registry.invalid/web:v1".to_string()), "below the partition nothing changes");
    let st = s.get_json("/apis/apps/v1/namespaces/st2/statefulsets/web")["status"].clone();
    assert_ne!(st["currentRevision"], st["updateRevision"], "{st}");
    assert_eq!(st["updatedReplicas"], 1, "{st}");
    // Partition 0: the rest roll, highest first; the update revision becomes current.
    s.ok(&["patch", "sts", "web", "-n", "st2", "--type=merge", "-p", r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#]);
    s.ok(&["rollout", "status", "sts/web", "-n", "st2", "--timeout=80s"]);
    assert!(eventually(LONG, || (0..3).all(|i| image(&format!("web-{i}")) == "registry.invalid/web:v2")));
    assert!(eventually(LONG, || {
        let st = s.get_json("/apis/apps/v1/namespaces/st2/statefulsets/web")["status"].clone();
        st["currentRevision"] == st["updateRevision"] && st["currentReplicas"] == 3
    }), "{}", s.get_json("/apis/apps/v1/namespaces/st2/statefulsets/web")["status"]);
    let history = s.ok(&["rollout", "history", "sts/web", "-n", "st2"]);
    assert_eq!(history.lines().filter(|l| l.starts_with(char::is_numeric)).count(), 2, "{history}");
    // OnDelete: nothing changes until a pod is deleted; its replacement has the new template.
    s.ok(&["patch", "sts", "web", "-n", "st2", "--type=merge", "-p", r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#]);
    s.ok(&["set", "image", "sts/web", "c=registry.invalid/web:v3", "-n", "st2"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!((0..3).all(|i| image(&format!("web-{i}")) == "registry.invalid/web:v2"));
    s.ok(&["delete", "pod", "web-0", "-n", "st2", "--wait=false"]);
    assert!(eventually(LONG, || image("web-0") == "registry.invalid/web:v3"));
    assert_eq!(image("web-2"), "registry.invalid/web:v2");
    // Parallel scale-down removes every extra pod at once; claims stay.
    s.ok(&["scale", "sts/web", "--replicas=0", "-n", "st2"]);
    wait_names(&s, "st2", &[]);
    assert_eq!(s.items("/api/v1/namespaces/st2/persistentvolumeclaims").len(), 3);
}

fn phase_of(s: &ApiServer, path: &str) -> String {
    s.get_json(path)["status"]["phase"].as_str().unwrap_or("").to_string()
}

#[test]
fn claims_bind_to_fitting_volumes_and_the_default_class_provisions() {
    let s = ApiServer::start_opts(Backend::Embedded, Options { controllers: true, ..Options::default() });
    s.ok(&["create", "namespace", "vol1"]);
    // The built-in default class.
    let sc = s.ok(&["get", "storageclass", "--no-headers"]);
    let row: Vec<&str> = sc.split_whitespace().collect();
    assert_eq!(&row[..6], ["strata-local", "(default)", "strata.dev/local", "Delete", "Immediate", "false"], "{sc}");
    let class = s.get_json("/apis/storage.k8s.io/v1/storageclasses/strata-local");
    let base = class["parameters"]["path"].as_str().expect("path parameter").to_string();
    assert_eq!(std::path::Path::new(&base), s.data_dir().join("volumes"));
    // Bad input, as upstream refuses it.
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: bad}\nspec: {accessModes: [ReadWriteOnce]}\n"));
    assert!(err.contains("spec.capacity: Required value") && err.contains("must specify a volume type"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: bad}\n"));
    assert!(err.contains("provisioner: Required value"), "{err}");

    // Two manual volumes; a claim takes the smallest that fits.
    for (n, size) in [("pv-small", "1Gi"), ("pv-big", "5Gi")] {
        s.ok_stdin(&["create", "-f", "-"], Some(&format!("apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {n}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  hostPath: {{path: /var/tmp/strata-test-{n}}}\n")));
    }
    assert!(eventually(LONG, || phase_of(&s, "/api/v1/persistentvolumes/pv-small") == "Available"));
    let claim = |n: &str, size: &str, class: Option<&str>| {
        let class = class.map(|c| format!("  storageClassName: \"{c}\"\n")).unwrap_or_default();
        format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {n}, namespace: vol1}}\nspec:\n  accessModes: [ReadWriteOnce]\n{class}  resources: {{requests: {{storage: {size}}}}}\n")
    };
    s.ok_stdin(&["create", "-f", "-"], Some(&claim("claim-a", "500Mi", Some(""))));
    assert!(eventually(LONG, || phase_of(&s, "/api/v1/namespaces/vol1/persistentvolumeclaims/claim-a") == "Bound"), "{}", s.ok(&["describe", "pvc", "claim-a", "-n", "vol1"]));
    let pvc = s.get_json("/api/v1/namespaces/vol1/persistentvolumeclaims/claim-a");
    assert_eq!((pvc["spec"]["volumeName"].as_str(), pvc["status"]["capacity"]["storage"].as_str()), (Some("pv-small"), Some("1Gi")));
    let pv = s.get_json("/api/v1/persistentvolumes/pv-small");
    assert_eq!((pv["status"]["phase"].as_str(), pv["spec"]["claimRef"]["name"].as_str(), pv["spec"]["claimRef"]["uid"].clone()), (Some("Bound"), Some("claim-a"), pvc["metadata"]["uid"].clone()));
    let row: Vec<String> = s.ok(&["get", "pvc", "claim-a", "-n", "vol1", "--no-headers"]).split_whitespace().map(str::to_string).collect();
    assert_eq!(&row[..4], ["claim-a", "Bound", "pv-small", "1Gi"], "{row:?}");
    let row: Vec<String> = s.ok(&["get", "pv", "pv-small", "--no-headers"]).split_whitespace().map(str::to_string).collect();
    assert_eq!(&row[..6], ["pv-small", "1Gi", "RWO", "Retain", "Bound", "vol1/claim-a"], "{row:?}");
    // Nothing fits and no class: Pending, with upstream's event.
    s.ok_stdin(&["create", "-f", "-"], Some(&claim("claim-huge", "50Gi", Some(""))));
    assert!(eventually(LONG, || s.ok(&["get", "events", "-n", "vol1"]).contains("no persistent volumes available for this claim and no storage class is set")));
    assert_eq!(phase_of(&s, "/api/v1/namespaces/vol1/persistentvolumeclaims/claim-huge"), "Pending");
    assert_eq!(phase_of(&s, "/api/v1/persistentvolumes/pv-big"), "Available", "too small for it, left alone");

    // No class named: the default class is filled in and a volume provisioned for the claim.
    s.ok_stdin(&["create", "-f", "-"], Some(&claim("claim-c", "64Mi", None)));
    let c = s.get_json("/api/v1/namespaces/vol1/persistentvolumeclaims/claim-c");
    assert_eq!(c["spec"]["storageClassName"], "strata-local", "DefaultStorageClass admission");
    assert!(eventually(LONG, || phase_of(&s, "/api/v1/namespaces/vol1/persistentvolumeclaims/claim-c") == "Bound"), "{}", s.ok(&["describe", "pvc", "claim-c", "-n", "vol1"]));
    let pv_name = format!("pvc-{}", c["metadata"]["uid"].as_str().unwrap_or(""));
    let pv = s.get_json(&format!("/api/v1/persistentvolumes/{pv_name}"));
    assert_eq!(pv["spec"]["hostPath"]["path"].as_str().map(std::path::PathBuf::from), Some(std::path::Path::new(&base).join(&pv_name)));
    assert_eq!((pv["spec"]["hostPath"]["type"].as_str(), pv["spec"]["persistentVolumeReclaimPolicy"].as_str(), pv["spec"]["storageClassName"].as_str()), (Some("DirectoryOrCreate"), Some("Delete"), Some("strata-local")));
    assert_eq!(pv["status"]["phase"], "Bound");
    assert!(s.ok(&["get", "events", "-n", "vol1"]).contains(&format!("Successfully provisioned volume {pv_name}")));
    // Deleting claims: a Delete volume goes, a Retain one is Released.
    s.ok(&["delete", "pvc", "claim-c", "claim-a", "-n", "vol1"]);
    assert!(eventually(LONG, || s.get_json(&format!("/api/v1/persistentvolumes/{pv_name}")).is_null()), "the provisioned volume was not deleted");
    assert!(eventually(LONG, || phase_of(&s, "/api/v1/persistentvolumes/pv-small") == "Released"));
}

/// A local volume of `size` on one node (PV nodeAffinity on its hostname), of `class`.
fn local_pv(name: &str, size: &str, class: &str, node: &str) -> String {
    format!("apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {name}}}\nspec:\n  capacity: {{storage: {size}}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: {class}\n  hostPath: {{path: /var/tmp/strata-test-{name}}}\n  nodeAffinity: {{required: {{nodeSelectorTerms: [{{matchExpressions: [{{key: kubernetes.io/hostname, operator: In, values: [{node}]}}]}}]}}}}\n")
}

/// The node a PersistentVolume's required node affinity names (kubernetes.io/hostname In [x]).
fn pv_node(pv: &Value) -> String {
    pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0].as_str().unwrap_or("").to_string()
}

/// WaitForFirstConsumer (upstream's delayed binding): claims of such a class are bound only for a
/// placed pod — to a local volume of the node the scheduler chose, nodes without one that fits
/// filtered out (VolumeBinding Filter), the volume chosen before the pod is bound — and with a
/// provisioning class the claim gets `volume.kubernetes.io/selected-node` and a volume made for
/// that node. A claim no node's volumes can hold keeps its pod Pending with upstream's reason,
/// until a volume that fits appears.
#[test]
fn wait_for_first_consumer_claims_bind_to_volumes_on_their_pods_node() {
    let s = server();
    s.ok(&["create", "namespace", "wffc"]);
    for n in ["sim-w1", "sim-w2", "sim-w3"] {
        sim_node(&s, n, &[], &[]);
    }
    let _kubelets = SimKubelets::start(&s, "wffc");
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: local-wait}\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n"));
    // One volume on each of two nodes; the third node's is too small for the claims.
    for (pv, size, node) in [("local-w1", "1Gi", "sim-w1"), ("local-w2", "1Gi", "sim-w2"), ("local-w3", "10Mi", "sim-w3")] {
        s.ok_stdin(&["create", "-f", "-"], Some(&local_pv(pv, size, "local-wait", node)));
    }
    let set = |name: &str, replicas: i32, size: &str| format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}, namespace: wffc}}\nspec:\n  serviceName: {name}\n  replicas: {replicas}\n  podManagementPolicy: Parallel\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: c, image: registry.invalid/db:v1, volumeMounts: [{{name: data, mountPath: /data}}]}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec: {{accessModes: [ReadWriteOnce], storageClassName: local-wait, resources: {{requests: {{storage: {size}}}}}}}\n"
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&set("db", 2, "100Mi")));
    let claim = |s: &ApiServer, n: &str| s.get_json(&format!("/api/v1/namespaces/wffc/persistentvolumeclaims/{n}"));
    let pod = |s: &ApiServer, n: &str| s.get_json(&format!("/api/v1/namespaces/wffc/pods/{n}"));
    for i in 0..2 {
        let (c, p) = (format!("data-db-{i}"), format!("db-{i}"));
        assert!(
            eventually(LONG, || claim(&s, &c)["status"]["phase"] == "Bound" && pod(&s, &p)["spec"]["nodeName"].is_string()),
            "{c} not bound or {p} not placed: {} {}",
            s.ok(&["describe", "pvc", &c, "-n", "wffc"]),
            s.ok(&["describe", "pod", &p, "-n", "wffc"])
        );
        let volume = claim(&s, &c)["spec"]["volumeName"].as_str().unwrap_or("").to_string();
        let pv = s.get_json(&format!("/api/v1/persistentvolumes/{volume}"));
        let node = pod(&s, &p)["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        assert_eq!(pv_node(&pv), node, "{c} is bound to {volume}, a volume of another node than {p}'s");
        assert_eq!((pv["spec"]["claimRef"]["name"].as_str(), pv["status"]["phase"].as_str()), (Some(c.as_str()), Some("Bound")));
    }
    let mut nodes: Vec<String> = (0..2).map(|i| pod(&s, &format!("db-{i}"))["spec"]["nodeName"].as_str().unwrap_or("").to_string()).collect();
    nodes.sort();
    assert_eq!(nodes, ["sim-w1", "sim-w2"], "one pod per node with a volume that fits");
    assert_eq!(phase_of(&s, "/api/v1/persistentvolumes/local-w3"), "Available", "too small: left alone");

    // No node has a volume that fits: Pending with upstream's reason, the claim waiting.
    s.ok_stdin(&["create", "-f", "-"], Some(&set("big", 1, "5Gi")));
    let want = "0/3 nodes are available: 3 node(s) didn't find available persistent volumes to bind. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    assert!(eventually(LONG, || s.ok(&["describe", "pod", "big-0", "-n", "wffc"]).contains(want)), "{}", s.ok(&["describe", "pod", "big-0", "-n", "wffc"]));
    assert!(eventually(LONG, || s.ok(&["describe", "pvc", "data-big-0", "-n", "wffc"]).contains("waiting for first consumer to be created before binding")), "{}", s.ok(&["describe", "pvc", "data-big-0", "-n", "wffc"]));
    assert_eq!((claim(&s, "data-big-0")["status"]["phase"].as_str(), pod(&s, "big-0")["spec"]["nodeName"].as_str()), (Some("Pending"), None));
    // A volume that fits appears on the third node: the pod goes there, its claim binds to it.
    s.ok_stdin(&["create", "-f", "-"], Some(&local_pv("local-w3-big", "8Gi", "local-wait", "sim-w3")));
    assert!(eventually(LONG, || claim(&s, "data-big-0")["spec"]["volumeName"] == "local-w3-big" && pod(&s, "big-0")["spec"]["nodeName"] == "sim-w3"), "{} {}", s.ok(&["describe", "pod", "big-0", "-n", "wffc"]), s.ok(&["describe", "pvc", "data-big-0", "-n", "wffc"]));

    // A provisioning class: the claim names the chosen node, the volume made for it is that node's.
    let base = s.data_dir().join("wffc-volumes");
    s.ok_stdin(&["create", "-f", "-"], Some(&format!("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: local-made}}\nprovisioner: strata.dev/local\nparameters: {{path: {}}}\nvolumeBindingMode: WaitForFirstConsumer\n", base.display())));
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: scratch, namespace: wffc}\nspec: {accessModes: [ReadWriteOnce], storageClassName: local-made, resources: {requests: {storage: 64Mi}}}\n"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(claim(&s, "scratch")["status"]["phase"], "Pending", "no consumer yet: not provisioned");
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: Pod\nmetadata: {name: user, namespace: wffc}\nspec:\n  nodeSelector: {kubernetes.io/hostname: sim-w2}\n  containers: [{name: c, image: registry.invalid/db:v1}]\n  volumes: [{name: v, persistentVolumeClaim: {claimName: scratch}}]\n"));
    assert!(eventually(LONG, || claim(&s, "scratch")["status"]["phase"] == "Bound" && pod(&s, "user")["spec"]["nodeName"] == "sim-w2"), "{} {}", s.ok(&["describe", "pvc", "scratch", "-n", "wffc"]), s.ok(&["describe", "pod", "user", "-n", "wffc"]));
    let c = claim(&s, "scratch");
    assert_eq!(c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"], "sim-w2", "{c}");
    let pv = s.get_json(&format!("/api/v1/persistentvolumes/{}", c["spec"]["volumeName"].as_str().unwrap_or("")));
    assert_eq!((pv_node(&pv), pv["spec"]["hostPath"]["path"].as_str().map(std::path::PathBuf::from)), ("sim-w2".to_string(), Some(base.join(format!("pvc-{}", c["metadata"]["uid"].as_str().unwrap_or(""))))));

    // A class's allowedTopologies: it provisions only there. A pod held to another node stays
    // Pending (its claim cannot be had there); one free to move goes where the class allows.
    let zoned = |name: &str, mode: &str| format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {name}}}\nprovisioner: strata.dev/local\nparameters: {{path: {}}}\nvolumeBindingMode: {mode}\nallowedTopologies:\n- matchLabelExpressions: [{{key: kubernetes.io/hostname, values: [sim-w3]}}]\n",
        base.display()
    );
    let claim_of = |name: &str, class: &str| format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}, namespace: wffc}}\nspec: {{accessModes: [ReadWriteOnce], storageClassName: {class}, resources: {{requests: {{storage: 64Mi}}}}}}\n");
    let user = |name: &str, claim: &str, selector: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: wffc}}\nspec:\n  nodeSelector: {{{selector}}}\n  containers: [{{name: c, image: registry.invalid/db:v1}}]\n  volumes: [{{name: v, persistentVolumeClaim: {{claimName: {claim}}}}}]\n");
    s.ok_stdin(&["create", "-f", "-"], Some(&zoned("local-w3-only", "WaitForFirstConsumer")));
    s.ok_stdin(&["create", "-f", "-"], Some(&claim_of("held", "local-w3-only")));
    s.ok_stdin(&["create", "-f", "-"], Some(&user("held-user", "held", "kubernetes.io/hostname: sim-w1")));
    let want = "0/3 nodes are available: 1 node(s) didn't find available persistent volumes to bind, 2 node(s) didn't match Pod's node affinity/selector.";
    assert!(eventually(LONG, || s.ok(&["describe", "pod", "held-user", "-n", "wffc"]).contains(want)), "{}", s.ok(&["describe", "pod", "held-user", "-n", "wffc"]));
    assert_eq!((claim(&s, "held")["status"]["phase"].as_str(), pod(&s, "held-user")["spec"]["nodeName"].as_str()), (Some("Pending"), None));
    s.ok_stdin(&["create", "-f", "-"], Some(&claim_of("free", "local-w3-only")));
    s.ok_stdin(&["create", "-f", "-"], Some(&user("free-user", "free", "")));
    assert!(eventually(LONG, || claim(&s, "free")["status"]["phase"] == "Bound" && pod(&s, "free-user")["spec"]["nodeName"] == "sim-w3"), "{} {}", s.ok(&["describe", "pvc", "free", "-n", "wffc"]), s.ok(&["describe", "pod", "free-user", "-n", "wffc"]));
    let pv = s.get_json(&format!("/api/v1/persistentvolumes/{}", claim(&s, "free")["spec"]["volumeName"].as_str().unwrap_or("")));
    assert_eq!(pv_node(&pv), "sim-w3");
    // Immediate binding with allowedTopologies: the volume is made at once, for those nodes.
    s.ok_stdin(&["create", "-f", "-"], Some(&zoned("local-w3-now", "Immediate")));
    s.ok_stdin(&["create", "-f", "-"], Some(&claim_of("now", "local-w3-now")));
    assert!(eventually(LONG, || claim(&s, "now")["status"]["phase"] == "Bound"), "{}", s.ok(&["describe", "pvc", "now", "-n", "wffc"]));
    let pv = s.get_json(&format!("/api/v1/persistentvolumes/{}", claim(&s, "now")["spec"]["volumeName"].as_str().unwrap_or("")));
    assert_eq!(pv_node(&pv), "sim-w3", "{pv}");
}

#[test]
fn statefulset_pod_on_the_real_agent_keeps_its_volume_across_restarts() {
    let registry = strata_testkit::Registry::start();
    registry.push(&strata_testkit::busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    let env = vec![("STRATA_VM_ACCEL".to_string(), "tcg".to_string()), ("STRATA_UNPACK_RESERVE".to_string(), "512MiB".to_string())];
    let s = ApiServer::start_opts(Backend::Embedded, Options { agent: true, scheduler: true, controllers: true, env, extra: vec!["--node-name".into(), "node-vol".into()], ..Options::default() });
    s.ok(&["create", "namespace", "stv"]);
    let yaml = format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db, namespace: stv}}\nspec:\n  serviceName: db\n  replicas: 1\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      tolerations: [{{key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}}]\n      containers:\n      - name: c\n        image: \"{image}\"\n        command: [sh, -c, 'cat /data/log 2>/dev/null; echo run-$(hostname) >> /data/log; echo started; sleep 3600']\n        volumeMounts: [{{name: data, mountPath: /data}}]\n  volumeClaimTemplates:\n  - metadata: {{name: data}}\n    spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 16Mi}}}}}}\n"
    );
    // (The shared test disk may be past the 10% DiskPressure line; the pod tolerates that.)
    s.ok_stdin(&["apply", "-f", "-"], Some(&yaml));
    let running = |uid: &Value| {
        eventually(Duration::from_secs(120), || {
            let p = s.get_json("/api/v1/namespaces/stv/pods/db-0");
            p["status"]["phase"] == "Running" && (uid.is_null() || p["metadata"]["uid"] != *uid) && s.kubectl(&["logs", "db-0", "-n", "stv"]).stdout.windows(7).any(|w| w == b"started")
        })
    };
    assert!(running(&Value::Null), "db-0 never ran: {}\n{}", s.ok(&["describe", "pod", "db-0", "-n", "stv"]), s.ok(&["get", "events", "-n", "stv"]));
    // The claim is bound to a provisioned hostPath volume under the server's data dir, and the
    // container wrote into it.
    let claim = s.get_json("/api/v1/namespaces/stv/persistentvolumeclaims/data-db-0");
    assert_eq!(claim["status"]["phase"], "Bound");
    let pv = s.get_json(&format!("/api/v1/persistentvolumes/{}", claim["spec"]["volumeName"].as_str().unwrap_or("")));
    let dir = std::path::PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().expect("hostPath"));
    assert!(dir.starts_with(s.data_dir().join("volumes")), "{dir:?}");
    assert_eq!(std::fs::read_to_string(dir.join("log")).unwrap_or_default(), "run-db-0\n");
    // A new db-0 gets the same claim and finds what the old one wrote.
    let uid = s.get_json("/api/v1/namespaces/stv/pods/db-0")["metadata"]["uid"].clone();
    s.ok(&["delete", "pod", "db-0", "-n", "stv"]);
    assert!(running(&uid), "db-0 was not recreated: {}", s.ok(&["get", "events", "-n", "stv"]));
    let logs = s.ok(&["logs", "db-0", "-n", "stv"]);
    assert!(logs.starts_with("run-db-0\n"), "{logs}");
    assert_eq!(std::fs::read_to_string(dir.join("log")).unwrap_or_default(), "run-db-0\nrun-db-0\n");
    s.ok(&["delete", "sts", "db", "-n", "stv"]);
    assert!(eventually(LONG, || live_pods(&s, "stv").is_empty() && s.items("/api/v1/namespaces/stv/pods").is_empty()));
}

#[test]
fn statefulset_claim_retention_policy_delete_removes_claims_with_their_pods_and_set() {
    let s = server();
    s.ok(&["create", "namespace", "st3"]);
    sim_node(&s, "sim-s3", &[], &[]);
    let _kubelets = SimKubelets::start(&s, "st3");
    let yaml = statefulset_yaml("st3", 3, "Parallel", "registry.invalid/web:v1").replace("  volumeClaimTemplates:\n", "  persistentVolumeClaimRetentionPolicy: {whenScaled: Delete, whenDeleted: Delete}\n  volumeClaimTemplates:\n");
    s.ok_stdin(&["apply", "-f", "-"], Some(&yaml));
    wait_names(&s, "st3", &["web-0", "web-1", "web-2"]);
    let claims = || -> Vec<String> { s.items("/api/v1/namespaces/st3/persistentvolumeclaims").iter().filter(|c| c["metadata"]["deletionTimestamp"].is_null()).map(name).collect() };
    assert!(eventually(LONG, || claims() == ["www-web-0", "www-web-1", "www-web-2"]), "{:?}", claims());
    // whenDeleted: Delete makes the set an owner of each claim.
    let set_uid = s.get_json("/apis/apps/v1/namespaces/st3/statefulsets/web")["metadata"]["uid"].clone();
    let owner = &s.get_json("/api/v1/namespaces/st3/persistentvolumeclaims/www-web-0")["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["uid"].clone()), (Some("StatefulSet"), set_uid));
    // whenScaled: Delete: the claims of pods scaled away go with them.
    s.ok(&["scale", "sts/web", "--replicas=1", "-n", "st3"]);
    wait_names(&s, "st3", &["web-0"]);
    assert!(eventually(LONG, || claims() == ["www-web-0"]), "{:?}", claims());
    // Deleting the set takes the remaining claim too.
    s.ok(&["delete", "sts", "web", "-n", "st3"]);
    assert!(eventually(LONG, || claims().is_empty() && live_pods(&s, "st3").is_empty()), "{:?}", claims());
}
