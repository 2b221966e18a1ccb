//! The controllers end to end: a real `strata server` (its controllers in process, or `strata
//! controllers` as a separate process) driven by the real `kubectl`. No node agent runs here:
//! a *simulated node* (a thread of the test) marks pods Running and Ready through `pods/status`
//! the way a kubelet would, so that rollouts can progress.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::eventually;
use common::server::{ApiServer, Auth, Backend, Options};
use serde_json::{json, Value};

const IMG: &str = "registry.invalid/web:v1";
const IMG2: &str = "registry.invalid/web:v2";
const LONG: Duration = Duration::from_secs(90);

fn server(backend: Backend) -> ApiServer {
    ApiServer::start_opts(backend, Options { controllers: true, ..Options::default() })
}

fn pods(s: &ApiServer, ns: &str) -> Vec<Value> {
    s.items(&format!("/api/v1/namespaces/{ns}/pods"))
}

fn replicasets(s: &ApiServer, ns: &str) -> Vec<Value> {
    s.items(&format!("/apis/apps/v1/namespaces/{ns}/replicasets"))
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn controller_ref(v: &Value) -> Option<Value> {
    v["metadata"]["ownerReferences"].as_array()?.iter().find(|o| o["controller"] == true).cloned()
}

/// A simulated node: marks every pod of `ns` Running and Ready (through `pods/status`, as a
/// kubelet reports) until dropped. Counts the most pods it ever saw at once.
struct SimulatedNode {
    stop: Arc<AtomicBool>,
    max_pods: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimulatedNode {
    fn start(s: &ApiServer, ns: &str) -> SimulatedNode {
        Self::start_as(s, ns, "Running")
    }

    /// Like [`SimulatedNode::start`], but every pod ends in `phase` (Running and Ready,
    /// Succeeded or Failed, as its containers would).
    fn start_as(s: &ApiServer, ns: &str, phase: &'static str) -> SimulatedNode {
        let stop = Arc::new(AtomicBool::new(false));
        let max_pods = Arc::new(AtomicUsize::new(0));
        let (url_ns, data, port) = (ns.to_string(), s.data_dir().to_path_buf(), s.port);
        let (stop2, max2) = (stop.clone(), max_pods.clone());
        let thread = std::thread::spawn(move || {
            let curl = |method: &str, path: &str, body: Option<&str>| -> (u16, String) {
                let pki = data.join("pki");
                let mut c = Command::new("curl");
                c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, "--cacert"]).arg(pki.join("ca.crt"));
                c.arg("--cert").arg(pki.join("admin.crt")).arg("--key").arg(pki.join("admin.key"));
                if let Some(b) = body {
                    c.args(["-H", "Content-Type: application/merge-patch+json", "--data-binary", b]);
                }
                let out = c.arg(format!("https://127.0.0.1:{port}{path}")).stdin(Stdio::null()).output().expect("curl");
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
                (code.trim().parse().unwrap_or(0), body.to_string())
            };
            while !stop2.load(Ordering::SeqCst) {
                let (_, body) = curl("GET", &format!("/api/v1/namespaces/{url_ns}/pods"), None);
                let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let all = list["items"].as_array().cloned().unwrap_or_default();
                max2.fetch_max(all.len(), Ordering::SeqCst);
                for p in all {
                    if p["status"]["phase"] == phase || !p["metadata"]["deletionTimestamp"].is_null() {
                        continue;
                    }
                    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    let ready = if phase == "Running" { "True" } else { "False" };
                    let body = json!({ "status": { "phase": phase, "conditions": [{ "type": "Ready", "status": ready, "lastTransitionTime": now }] } }).to_string();
                    curl("PATCH", &format!("/api/v1/namespaces/{url_ns}/pods/{}/status", name(&p)), Some(&body));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        SimulatedNode { stop, max_pods, thread: Some(thread) }
    }

    fn max_pods(&self) -> usize {
        self.max_pods.load(Ordering::SeqCst)
    }
}

impl Drop for SimulatedNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn wait_pods(s: &ApiServer, ns: &str, n: usize) -> Vec<Value> {
    let mut last = Vec::new();
    let ok = eventually(LONG, || {
        last = pods(s, ns).into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
        last.len() == n
    });
    assert!(ok, "expected {n} pods in {ns}, have {}: {:?}", last.len(), last.iter().map(name).collect::<Vec<_>>());
    last
}

#[test]
fn deployment_makes_one_replicaset_and_its_pods_and_scales() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "d1"]);
    // The ServiceAccount controller gives every namespace its `default`.
    assert!(eventually(LONG, || s.get_json("/api/v1/namespaces/d1/serviceaccounts/default")["metadata"]["name"] == "default"), "no default ServiceAccount in d1");
    s.ok(&["create", "deployment", "web", "--image", IMG, "--replicas=3", "-n", "d1"]);
    let ps = wait_pods(&s, "d1", 3);
    let rss = replicasets(&s, "d1");
    assert_eq!(rss.len(), 1, "one ReplicaSet: {rss:?}");
    let rs = &rss[0];
    let deploy = s.get_json("/apis/apps/v1/namespaces/d1/deployments/web");
    let hash = rs["metadata"]["labels"]["pod-template-hash"].as_str().expect("pod-template-hash label").to_string();
    assert_eq!(name(rs), format!("web-{hash}"));
    let owner = controller_ref(rs).expect("controller ref on the ReplicaSet");
    assert_eq!((owner["kind"].as_str(), owner["name"].as_str(), owner["uid"].clone()), (Some("Deployment"), Some("web"), deploy["metadata"]["uid"].clone()));
    assert_eq!(owner["blockOwnerDeletion"], true);
    assert_eq!(rs["spec"]["selector"]["matchLabels"]["pod-template-hash"], hash.as_str());
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    // The template has a PodSpec's defaults as kube-apiserver gives them (not a Pod's own
    // enableServiceLinks), and the ReplicaSet the same template.
    let template = &deploy["spec"]["template"]["spec"];
    assert_eq!((template["securityContext"].clone(), template["containers"][0]["terminationMessagePolicy"].as_str(), template["restartPolicy"].as_str()), (json!({}), Some("File"), Some("Always")), "{template}");
    assert!(template["enableServiceLinks"].is_null(), "{template}");
    assert_eq!(&rs["spec"]["template"]["spec"], template);
    for p in &ps {
        let n = name(p);
        let suffix = n.strip_prefix(&format!("{}-", name(rs))).unwrap_or_else(|| panic!("pod {n} not named after its ReplicaSet"));
        assert!(suffix.len() == 5 && suffix.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)), "pod name {n}");
        assert_eq!(p["metadata"]["labels"]["app"], "web");
        assert_eq!(p["metadata"]["labels"]["pod-template-hash"], hash.as_str());
        let o = controller_ref(p).expect("controller ref on the pod");
        assert_eq!((o["kind"].as_str(), o["uid"].clone(), o["blockOwnerDeletion"].clone()), (Some("ReplicaSet"), rs["metadata"]["uid"].clone(), json!(true)));
        assert_eq!(p["spec"]["containers"][0]["image"], IMG);
    }
    // Events as kube-controller-manager records them.
    assert!(eventually(LONG, || {
        let ev = s.ok(&["get", "events", "-n", "d1"]);
        ev.contains("SuccessfulCreate") && ev.contains(&format!("Created pod: {}", name(&ps[0]))) && ev.contains("ScalingReplicaSet")
    }), "{}", s.ok(&["get", "events", "-n", "d1"]));
    // Status as `kubectl get rs` shows it, with a simulated node reporting the pods ready.
    let node = SimulatedNode::start(&s, "d1");
    assert!(
        eventually(LONG, || {
            let rs = s.get_json(&format!("/apis/apps/v1/namespaces/d1/replicasets/{}", name(rs)));
            let st = &rs["status"];
            st["replicas"] == 3 && st["readyReplicas"] == 3 && st["availableReplicas"] == 3 && st["fullyLabeledReplicas"] == 3 && st["observedGeneration"] == rs["metadata"]["generation"]
        }),
        "ReplicaSet status never reached 3 ready: {}",
        s.get_json(&format!("/apis/apps/v1/namespaces/d1/replicasets/{}", name(rs)))["status"]
    );
    assert!(eventually(LONG, || s.ok(&["get", "deploy", "web", "-n", "d1", "--no-headers"]).split_whitespace().nth(1) == Some("3/3")));

    // Scale up and down through the scale subresource (kubectl scale).
    s.ok(&["scale", "deploy/web", "--replicas=5", "-n", "d1"]);
    wait_pods(&s, "d1", 5);
    s.ok(&["scale", "deploy/web", "--replicas=2", "-n", "d1"]);
    wait_pods(&s, "d1", 2);
    assert_eq!(replicasets(&s, "d1").len(), 1, "scaling makes no new ReplicaSet");
    // A ReplicaSet scaled on its own too.
    s.ok(&["scale", "rs", &name(rs), "--replicas=4", "-n", "d1"]);
    // ... is brought back by its Deployment (it owns the size).
    assert!(eventually(LONG, || s.get_json(&format!("/apis/apps/v1/namespaces/d1/replicasets/{}", name(rs)))["spec"]["replicas"] == 2));
    wait_pods(&s, "d1", 2);
    // A deleted pod is replaced.
    let victim = name(&pods(&s, "d1")[0]);
    s.ok(&["delete", "pod", &victim, "-n", "d1", "--wait=false"]);
    let now = wait_pods(&s, "d1", 2);
    assert!(now.iter().all(|p| name(p) != victim), "the deleted pod is gone and a new one took its place");
    drop(node);
}

#[test]
fn rolling_update_rollout_status_history_and_undo() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "d2"]);
    let _node = SimulatedNode::start(&s, "d2");
    s.ok(&["create", "deployment", "web", "--image", IMG, "--replicas=3", "-n", "d2"]);
    s.ok(&["rollout", "status", "deploy/web", "-n", "d2", "--timeout=90s"]);
    s.ok(&["annotate", "deploy/web", "kubernetes.io/change-cause=to v2", "-n", "d2"]);
    s.ok(&["set", "image", "deploy/web", &format!("web={IMG2}"), "-n", "d2"]);
    let out = s.ok(&["rollout", "status", "deploy/web", "-n", "d2", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rss = replicasets(&s, "d2");
    assert_eq!(rss.len(), 2, "{rss:?}");
    let by_rev = |rev: &str| rss.iter().find(|r| r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == rev).cloned().unwrap_or_else(|| panic!("no revision {rev}"));
    assert_eq!(by_rev("1")["spec"]["replicas"], 0);
    assert_eq!(by_rev("2")["spec"]["replicas"], 3);
    assert_eq!(by_rev("2")["metadata"]["annotations"]["kubernetes.io/change-cause"], "to v2");
    let ps = wait_pods(&s, "d2", 3);
    assert!(ps.iter().all(|p| p["spec"]["containers"][0]["image"] == IMG2));
    let d = s.get_json("/apis/apps/v1/namespaces/d2/deployments/web");
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "2");
    let conds = d["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let progressing = conds.iter().find(|c| c["type"] == "Progressing").expect("Progressing condition");
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    assert!(conds.iter().any(|c| c["type"] == "Available" && c["status"] == "True"));

    let hist = s.ok(&["rollout", "history", "deploy/web", "-n", "d2"]);
    let revs: Vec<&str> = hist.lines().filter_map(|l| l.split_whitespace().next()).filter(|w| w.parse::<u32>().is_ok()).collect();
    assert_eq!(revs, ["1", "2"], "{hist}");
    assert!(hist.contains("to v2"), "{hist}");
    let r1 = s.ok(&["rollout", "history", "deploy/web", "-n", "d2", "--revision=1"]);
    assert!(r1.contains(IMG), "{r1}");

    // Undo: kubectl copies revision 1's template back; that ReplicaSet becomes revision 3.
    s.ok(&["rollout", "undo", "deploy/web", "-n", "d2"]);
    s.ok(&["rollout", "status", "deploy/web", "-n", "d2", "--timeout=90s"]);
    assert!(eventually(LONG, || {
        let rss = replicasets(&s, "d2");
        rss.len() == 2
            && rss.iter().any(|r| r["spec"]["template"]["spec"]["containers"][0]["image"] == IMG && r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3" && r["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1" && r["spec"]["replicas"] == 3)
    }), "{:?}", replicasets(&s, "d2"));
    assert!(eventually(LONG, || { let ps = wait_pods(&s, "d2", 3); ps.iter().all(|p| p["spec"]["containers"][0]["image"] == IMG) }));

    // Pause: a template change does not roll out until resumed.
    s.ok(&["rollout", "pause", "deploy/web", "-n", "d2"]);
    s.ok(&["set", "image", "deploy/web", "web=registry.invalid/web:v3", "-n", "d2"]);
    assert!(eventually(LONG, || s.get_json("/apis/apps/v1/namespaces/d2/deployments/web")["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["reason"] == "DeploymentPaused"))));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(replicasets(&s, "d2").len(), 2, "paused: no new ReplicaSet");
    s.ok(&["rollout", "resume", "deploy/web", "-n", "d2"]);
    s.ok(&["rollout", "status", "deploy/web", "-n", "d2", "--timeout=90s"]);
    assert_eq!(replicasets(&s, "d2").len(), 3);
    // Restart: a template annotation, so a new ReplicaSet and new pods.
    s.ok(&["rollout", "restart", "deploy/web", "-n", "d2"]);
    s.ok(&["rollout", "status", "deploy/web", "-n", "d2", "--timeout=90s"]);
    assert!(eventually(LONG, || replicasets(&s, "d2").iter().any(|r| r["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string() && r["spec"]["replicas"] == 3)));
}

#[test]
fn recreate_strategy_and_history_limit() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "d3"]);
    let _node = SimulatedNode::start(&s, "d3");
    let manifest = format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"rc","namespace":"d3"}},
        "spec":{{"replicas":2,"revisionHistoryLimit":1,"strategy":{{"type":"Recreate"}},"selector":{{"matchLabels":{{"app":"rc"}}}},
        "template":{{"metadata":{{"labels":{{"app":"rc"}}}},"spec":{{"containers":[{{"name":"c","image":"{IMG}"}}]}}}}}}}}"#
    );
    s.ok_stdin(&["apply", "-f", "-"], Some(&manifest));
    s.ok(&["rollout", "status", "deploy/rc", "-n", "d3", "--timeout=90s"]);
    for img in [IMG2, "registry.invalid/web:v3"] {
        s.ok(&["set", "image", "deploy/rc", &format!("c={img}"), "-n", "d3"]);
        s.ok(&["rollout", "status", "deploy/rc", "-n", "d3", "--timeout=90s"]);
    }
    // Recreate never runs old and new pods together (at most 2 pods ever).
    assert!(wait_pods(&s, "d3", 2).iter().all(|p| p["spec"]["containers"][0]["image"] == "registry.invalid/web:v3"));
    // revisionHistoryLimit 1: the current ReplicaSet and one old one.
    assert!(eventually(LONG, || replicasets(&s, "d3").len() == 2), "{:?}", replicasets(&s, "d3").iter().map(name).collect::<Vec<_>>());
}

#[test]
fn deleting_a_deployment_cascades_background_foreground_and_orphan() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "d4"]);
    for n in ["bg", "fg", "or"] {
        s.ok(&["create", "deployment", n, "--image", IMG, "--replicas=2", "-n", "d4"]);
    }
    wait_pods(&s, "d4", 6);
    let owned_by = |rs_prefix: &str| pods(&s, "d4").into_iter().filter(|p| name(p).starts_with(rs_prefix)).count();

    s.ok(&["delete", "deploy", "bg", "-n", "d4", "--cascade=background"]);
    assert!(eventually(LONG, || replicasets(&s, "d4").iter().all(|r| !name(r).starts_with("bg-")) && owned_by("bg-") == 0), "background: ReplicaSet and pods collected");

    // Foreground: kubectl waits until the Deployment is gone, which is after its dependents.
    s.ok(&["delete", "deploy", "fg", "-n", "d4", "--cascade=foreground", "--timeout=90s"]);
    assert!(s.get_json("/apis/apps/v1/namespaces/d4/deployments/fg").is_null());
    assert!(eventually(LONG, || replicasets(&s, "d4").iter().all(|r| !name(r).starts_with("fg-")) && owned_by("fg-") == 0), "foreground: dependents gone");

    s.ok(&["delete", "deploy", "or", "-n", "d4", "--cascade=orphan", "--timeout=90s"]);
    assert!(s.get_json("/apis/apps/v1/namespaces/d4/deployments/or").is_null());
    let rs = replicasets(&s, "d4").into_iter().find(|r| name(r).starts_with("or-")).expect("orphan: the ReplicaSet stays");
    assert!(eventually(LONG, || s.get_json(&format!("/apis/apps/v1/namespaces/d4/replicasets/{}", name(&rs)))["metadata"]["ownerReferences"].is_null()), "orphan: no owner reference left");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(owned_by("or-"), 2, "orphan: the pods stay, still owned by the ReplicaSet");

    // A dependent whose owner never existed is collected; one with a live second owner only
    // loses the dangling reference.
    let cm = s.ok(&["create", "configmap", "owner", "-n", "d4", "-o", "jsonpath={.metadata.uid}"]);
    let dep = |n: &str, refs: Value| json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":n,"namespace":"d4","ownerReferences":refs}}).to_string();
    let gone = json!({"apiVersion":"v1","kind":"ConfigMap","name":"ghost","uid":"00000000-0000-0000-0000-000000000001"});
    let live = json!({"apiVersion":"v1","kind":"ConfigMap","name":"owner","uid":cm});
    s.ok_stdin(&["create", "-f", "-"], Some(&dep("lonely", json!([gone]))));
    s.ok_stdin(&["create", "-f", "-"], Some(&dep("shared", json!([gone, live]))));
    assert!(eventually(LONG, || s.get_json("/api/v1/namespaces/d4/configmaps/lonely").is_null()), "dangling-only dependent collected");
    assert!(eventually(LONG, || s.get_json("/api/v1/namespaces/d4/configmaps/shared")["metadata"]["ownerReferences"].as_array().is_some_and(|r| r.len() == 1 && r[0]["name"] == "owner")));
    // An owner of a kind the server does not serve: a Warning Event, the object left alone, and
    // the collector goes on with the rest.
    let alien = json!({"apiVersion":"example.com/v1","kind":"Widget","name":"w","uid":"00000000-0000-0000-0000-000000000002"});
    s.ok_stdin(&["create", "-f", "-"], Some(&dep("alien", json!([alien]))));
    assert!(eventually(LONG, || s.ok(&["get", "events", "-n", "d4", "--field-selector", "involvedObject.name=alien"]).contains("OwnerRefInvalid")), "{}", s.ok(&["get", "events", "-n", "d4"]));
    assert!(!s.get_json("/api/v1/namespaces/d4/configmaps/alien").is_null(), "left alone");
    // Deleting the owner in the foreground takes the dependent with it.
    s.ok(&["delete", "configmap", "owner", "-n", "d4", "--cascade=foreground", "--timeout=90s"]);
    assert!(eventually(LONG, || s.get_json("/api/v1/namespaces/d4/configmaps/shared").is_null()));
}

#[test]
fn workload_selectors_are_validated() {
    let s = ApiServer::start(Backend::Embedded);
    let mismatched = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"bad","namespace":"default"},
        "spec":{"selector":{"matchLabels":{"app":"a"}},"template":{"metadata":{"labels":{"app":"b"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}}"#;
    let err = s.fails(&["create", "-f", "-"], Some(mismatched));
    assert!(err.contains("`selector` does not match template `labels`"), "{err}");
    s.ok(&["create", "deployment", "sel", "--image", IMG]);
    let err = s.fails(&["patch", "deploy", "sel", "--type=merge", "-p", r#"{"spec":{"selector":{"matchLabels":{"app":"sel","x":"y"}},"template":{"metadata":{"labels":{"app":"sel","x":"y"}}}}}"#], None);
    assert!(err.contains("spec.selector") && err.contains("field is immutable"), "{err}");
}

/// What an update may not change in a Job and a StatefulSet, as kube-apiserver's
/// `ValidateJobUpdate` and `ValidateStatefulSetUpdate` refuse it; what they let through still goes.
#[test]
fn job_and_statefulset_updates_keep_their_immutable_fields() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "job", "imm", "--image", IMG, "--", "true"]);
    let before = s.get_json("/apis/batch/v1/namespaces/default/jobs/imm");
    for (patch, want) in [
        (r#"{"spec":{"completions":3}}"#, "spec.completions: Invalid value: 3: field is immutable"),
        (r#"{"spec":{"completionMode":"Indexed"}}"#, "spec.completionMode: Invalid value: \"Indexed\": field is immutable"),
        (r#"{"spec":{"template":{"spec":{"containers":[{"name":"imm","image":"registry.invalid/other"}]}}}}"#, "spec.template: Invalid value: "),
        (r#"{"spec":{"podFailurePolicy":{"rules":[{"action":"Ignore","onPodConditions":[{"type":"DisruptionTarget"}]}]},"template":{"spec":{"restartPolicy":"Never"}}}}"#, "spec.podFailurePolicy: Invalid value: "),
    ] {
        let err = s.fails(&["patch", "job", "imm", "--type=merge", "-p", patch], None);
        assert!(err.contains(want) && err.contains("field is immutable"), "{patch}: {err}");
    }
    // A selector that no longer matches the template's labels, and a changed one that still does.
    let err = s.fails(&["patch", "job", "imm", "--type=merge", "-p", r#"{"spec":{"selector":{"matchLabels":{"x":"y"}}}}"#], None);
    assert!(err.contains("spec.template.metadata.labels: Invalid value: ") && err.contains("`selector` does not match template `labels`"), "{err}");
    let err = s.fails(&["patch", "job", "imm", "--type=merge", "-p", r#"{"spec":{"selector":{"matchLabels":{"job-name":"imm"}}}}"#], None);
    assert!(err.contains("spec.selector: Invalid value: ") && err.contains("field is immutable"), "{err}");
    let after = s.get_json("/apis/batch/v1/namespaces/default/jobs/imm");
    assert_eq!((&after["spec"]["template"], &after["spec"]["completions"], &after["spec"]["selector"]), (&before["spec"]["template"], &before["spec"]["completions"], &before["spec"]["selector"]));
    // What may change: parallelism, activeDeadlineSeconds, suspend, ttlSecondsAfterFinished.
    s.ok(&["patch", "job", "imm", "--type=merge", "-p", r#"{"spec":{"parallelism":2,"activeDeadlineSeconds":600,"ttlSecondsAfterFinished":60}}"#]);
    // A suspended Job that never started may change where its pods go (nodeSelector, tolerations,
    // node affinity, template labels and annotations, scheduling gates), not what they run.
    let suspended = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"held","namespace":"default"},
        "spec":{"suspend":true,"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"registry.invalid/web:v1"}]}}}}"#;
    s.ok_stdin(&["create", "-f", "-"], Some(suspended));
    s.ok(&["patch", "job", "held", "--type=merge", "-p", r#"{"spec":{"template":{"metadata":{"labels":{"queue":"a"}},"spec":{"nodeSelector":{"zone":"b"},"tolerations":[{"key":"k","operator":"Exists"}]}}}}"#]);
    let held = s.get_json("/apis/batch/v1/namespaces/default/jobs/held");
    assert_eq!(held["spec"]["template"]["spec"]["nodeSelector"]["zone"], "b", "{held}");
    let err = s.fails(&["patch", "job", "held", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"registry.invalid/other"}]"#], None);
    assert!(err.contains("spec.template: Invalid value: ") && err.contains("field is immutable"), "{err}");
    // An Indexed Job's completions change only in tandem with parallelism (elastic Indexed Jobs).
    let indexed = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"elastic","namespace":"default"},
        "spec":{"suspend":true,"completionMode":"Indexed","completions":3,"parallelism":3,"template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"registry.invalid/web:v1"}]}}}}"#;
    s.ok_stdin(&["create", "-f", "-"], Some(indexed));
    let err = s.fails(&["patch", "job", "elastic", "--type=merge", "-p", r#"{"spec":{"completions":5}}"#], None);
    assert!(err.contains("spec.completions: Invalid value: 5: can only be modified in tandem with spec.parallelism"), "{err}");
    s.ok(&["patch", "job", "elastic", "--type=merge", "-p", r#"{"spec":{"completions":5,"parallelism":5}}"#]);
    // A manual selector must still select the template's labels.
    let manual = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"manual","namespace":"default"},
        "spec":{"manualSelector":true,"selector":{"matchLabels":{"app":"a"}},"template":{"metadata":{"labels":{"app":"b"}},"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"registry.invalid/web:v1"}]}}}}"#;
    let err = s.fails(&["create", "-f", "-"], Some(manual));
    assert!(err.contains("spec.template.metadata.labels: Invalid value: ") && err.contains("`selector` does not match template `labels`"), "{err}");
    assert!(s.get_json("/apis/batch/v1/namespaces/default/jobs/manual").is_null(), "nothing left behind");

    // StatefulSet: only replicas, ordinals, template, updateStrategy, revisionHistoryLimit,
    // persistentVolumeClaimRetentionPolicy and minReadySeconds may change.
    let sts = r#"{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"db","namespace":"default"},
        "spec":{"serviceName":"db","replicas":0,"selector":{"matchLabels":{"app":"db"}},"template":{"metadata":{"labels":{"app":"db"}},"spec":{"containers":[{"name":"c","image":"registry.invalid/web:v1"}]}},
        "volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"1Gi"}}}}]}}"#;
    s.ok_stdin(&["create", "-f", "-"], Some(sts));
    let forbidden = "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";
    for patch in [
        r#"{"spec":{"serviceName":"other"}}"#,
        r#"{"spec":{"podManagementPolicy":"Parallel"}}"#,
        r#"{"spec":{"volumeClaimTemplates":[{"metadata":{"name":"data"},"spec":{"accessModes":["ReadWriteOnce"],"resources":{"requests":{"storage":"2Gi"}}}}]}}"#,
    ] {
        let err = s.fails(&["patch", "statefulset", "db", "--type=merge", "-p", patch], None);
        assert!(err.contains(forbidden), "{patch}: {err}");
    }
    s.ok(&["patch", "statefulset", "db", "--type=merge", "-p", r#"{"spec":{"replicas":0,"minReadySeconds":5,"revisionHistoryLimit":3,"updateStrategy":{"type":"OnDelete"},"template":{"spec":{"containers":[{"name":"c","image":"registry.invalid/web:v2"}]}}}}"#]);
    let db = s.get_json("/apis/apps/v1/namespaces/default/statefulsets/db");
    assert_eq!((db["spec"]["serviceName"].as_str(), db["spec"]["minReadySeconds"].as_i64()), (Some("db"), Some(5)), "{db}");
}

/// A ReplicaSet whose pods a quota refuses: a FailedCreate Event and a ReplicaFailure condition
/// (copied to its Deployment) carrying the API server's own message, as upstream's controllers
/// write them, and the controllers go on with the rest.
/// The controllers' events go through client-go's event correlator, as kube-controller-manager's
/// do: a ReplicaSet creating 40 pods writes nine `Created pod: NAME` Events, then one combined
/// Event whose count grows with each creation until the spam filter's 25 tokens are spent.
#[test]
fn a_replicasets_many_creations_are_combined_into_one_event_and_rate_limited() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "ev"]);
    s.ok(&["create", "deployment", "web", "--image", IMG, "--replicas=40", "-n", "ev"]);
    wait_pods(&s, "ev", 40);
    let rs = name(&replicasets(&s, "ev")[0]);
    let about_rs = || -> Vec<Value> {
        s.items("/api/v1/namespaces/ev/events").into_iter().filter(|e| e["involvedObject"]["name"] == rs.as_str() && e["reason"] == "SuccessfulCreate").collect()
    };
    let combined = |es: &[Value]| es.iter().find(|e| e["message"].as_str().is_some_and(|m| m.starts_with("(combined from similar events): Created pod: web-"))).cloned();
    assert!(eventually(LONG, || combined(&about_rs()).is_some_and(|e| e["count"] == 16)), "{:#?}", about_rs());
    // Nothing more is written about it: the bucket is empty for five minutes.
    std::thread::sleep(Duration::from_secs(3));
    let es = about_rs();
    let single: Vec<&Value> = es.iter().filter(|e| e["message"].as_str().is_some_and(|m| m.starts_with("Created pod: "))).collect();
    assert_eq!(single.len(), 9, "{es:#?}");
    assert!(single.iter().all(|e| e["count"] == 1 && e["source"]["component"] == "replicaset-controller"), "{es:#?}");
    assert_eq!(es.len(), 10, "{es:#?}");
    assert_eq!(combined(&es).map(|e| e["count"].clone()), Some(json!(16)));
    assert!(s.ok(&["describe", "rs", &rs, "-n", "ev"]).contains("(combined from similar events): Created pod: "));
}

#[test]
fn pods_a_quota_refuses_are_reported_with_the_servers_message_and_the_rest_goes_on() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "capped"]);
    s.ok(&["create", "quota", "pods", "-n", "capped", "--hard=pods=1"]);
    s.ok(&["create", "deployment", "web", "-n", "capped", "--image", IMG, "--replicas=3"]);
    s.ok(&["create", "deployment", "free", "--image", IMG, "--replicas=2"]);
    let refused = |m: &str| m.starts_with("pods \"web-") && m.contains("\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=1, limited: pods=1") && !m.contains("ErrorResponse") && !m.contains("ApiError");
    let failure = |v: &Value| v["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "ReplicaFailure").cloned().unwrap_or(Value::Null);
    assert!(
        eventually(LONG, || replicasets(&s, "capped").first().map(failure).is_some_and(|c| c["reason"] == "FailedCreate" && c["message"].as_str().is_some_and(refused))),
        "{:#?}",
        replicasets(&s, "capped").first().map(failure)
    );
    assert!(
        eventually(LONG, || failure(&s.get_json("/apis/apps/v1/namespaces/capped/deployments/web"))["message"].as_str().is_some_and(refused)),
        "{}",
        failure(&s.get_json("/apis/apps/v1/namespaces/capped/deployments/web"))
    );
    let events = s.items("/api/v1/namespaces/capped/events");
    let created: Vec<&str> = events.iter().filter(|e| e["reason"] == "FailedCreate").filter_map(|e| e["message"].as_str()).collect();
    // Each refusal names another generated pod, so after ten of them kube-controller-manager's
    // event correlator combines them into one Event (as it does upstream).
    let refusal = |m: &str| m.strip_prefix("(combined from similar events): ").unwrap_or(m).strip_prefix("Error creating: ").is_some_and(refused);
    assert!(!created.is_empty() && created.iter().all(|m| refusal(m)), "{created:#?}");
    assert_eq!(pods(&s, "capped").len(), 1);
    assert!(eventually(LONG, || pods(&s, "default").len() == 2), "the other Deployment goes on: {:?}", pods(&s, "default").iter().map(name).collect::<Vec<_>>());
}

/// A Deployment whose pods never become available (no node here) passes its
/// progressDeadlineSeconds: Progressing=False/ProgressDeadlineExceeded, and `kubectl rollout
/// status` fails saying so; paused, the condition is Unknown/DeploymentPaused and the deadline
/// does not run.
#[test]
fn a_rollout_without_progress_exceeds_its_deadline_and_a_paused_one_does_not() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "deployment", "stuck", "--image", IMG, "--replicas=2"]);
    s.ok(&["patch", "deploy", "stuck", "--type=merge", "-p", r#"{"spec":{"progressDeadlineSeconds":3}}"#]);
    let progressing = |d: &str| {
        let v = s.get_json(&format!("/apis/apps/v1/namespaces/default/deployments/{d}"));
        let c = v["status"]["conditions"].as_array().into_iter().flatten().find(|c| c["type"] == "Progressing").cloned().unwrap_or(Value::Null);
        (c["status"].as_str().unwrap_or("").to_string(), c["reason"].as_str().unwrap_or("").to_string(), c["message"].as_str().unwrap_or("").to_string())
    };
    assert!(eventually(LONG, || progressing("stuck").1 == "ProgressDeadlineExceeded"), "{:?}", progressing("stuck"));
    let (status, _, message) = progressing("stuck");
    assert_eq!(status, "False");
    assert!(message.starts_with("ReplicaSet \"stuck-") && message.ends_with("\" has timed out progressing."), "{message}");
    let out = s.kubectl(&["rollout", "status", "deploy/stuck", "--timeout=30s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("error: deployment \"stuck\" exceeded its progress deadline"), "{err}");

    s.ok(&["create", "deployment", "held", "--image", IMG, "--replicas=1"]);
    s.ok(&["rollout", "pause", "deploy/held"]);
    s.ok(&["patch", "deploy", "held", "--type=merge", "-p", r#"{"spec":{"progressDeadlineSeconds":2}}"#]);
    assert!(eventually(LONG, || progressing("held").1 == "DeploymentPaused"), "{:?}", progressing("held"));
    assert_eq!(progressing("held"), ("Unknown".to_string(), "DeploymentPaused".to_string(), "Deployment is paused".to_string()));
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(progressing("held").1, "DeploymentPaused", "the deadline does not run while paused");
    s.ok(&["rollout", "resume", "deploy/held"]);
    assert!(eventually(LONG, || progressing("held").1 == "DeploymentResumed" || progressing("held").1 == "ProgressDeadlineExceeded"), "{:?}", progressing("held"));
}

fn controllers_process(s: &ApiServer, identity: &str, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log");
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["controllers", "--kubeconfig"])
        .arg(s.kubeconfig())
        .args(["--identity", identity])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("strata controllers")
}

#[test]
fn controllers_killed_mid_rollout_finish_it_without_extra_pods() {
    // The controllers run as their own process here, so they can be killed alone.
    let s = ApiServer::start(Backend::Embedded);
    let log = s.dir.path().join("controllers.log");
    let mut c = controllers_process(&s, "kcm-1", &log);
    s.ok(&["create", "namespace", "d5"]);
    let node = SimulatedNode::start(&s, "d5");
    s.ok(&["create", "deployment", "web", "--image", IMG, "--replicas=4", "-n", "d5"]);
    s.ok(&["rollout", "status", "deploy/web", "-n", "d5", "--timeout=90s"]);
    s.ok(&["set", "image", "deploy/web", &format!("web={IMG2}"), "-n", "d5"]);
    // Kill the manager as soon as the rollout has begun (a new ReplicaSet exists).
    assert!(eventually(LONG, || replicasets(&s, "d5").len() == 2));
    let _ = c.kill();
    let _ = c.wait();
    // A new manager (same identity: it takes its Lease back at once) finishes the rollout.
    let mut c = controllers_process(&s, "kcm-1", &log);
    let out = s.ok(&["rollout", "status", "deploy/web", "-n", "d5", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let ps = wait_pods(&s, "d5", 4);
    assert!(ps.iter().all(|p| p["spec"]["containers"][0]["image"] == IMG2));
    // 4 replicas, maxSurge 25% = 1: never more than 5 pods at once.
    assert!(node.max_pods() <= 5, "at most replicas + maxSurge pods at any time, saw {}", node.max_pods());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(wait_pods(&s, "d5", 4).len(), 4, "no extra pods afterwards");
    let _ = c.kill();
    let _ = c.wait();
}

/// `strata scheduler` and `strata controllers` on another machine reach the API server named by
/// `--server` (kube-controller-manager's and kube-scheduler's `--master`), with the CA and
/// credentials of a kubeconfig whose own address is not the server's; a bad address is refused.
#[test]
fn remote_scheduler_and_controllers_reach_the_server_given_by_server() {
    let s = ApiServer::start(Backend::Embedded);
    let stale = s.dir.path().join("stale-kubeconfig");
    let text = std::fs::read_to_string(s.kubeconfig()).expect("kubeconfig");
    assert!(text.contains(&s.url()), "the kubeconfig names {}", s.url());
    std::fs::write(&stale, text.replace(&s.url(), "https://127.0.0.1:9")).expect("write");
    let bin = env!("CARGO_BIN_EXE_strata");
    for (cmd, flag) in [("controllers", "--server"), ("scheduler", "--master")] {
        let out = Command::new(bin).args([cmd, "--kubeconfig"]).arg(&stale).args([flag, "ftp://127.0.0.1:1/x"]).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("invalid server address \"ftp://127.0.0.1:1/x\""), "{cmd}: {err}");
    }
    let spawn = |cmd: &str, flag: &str| {
        let log = std::fs::File::create(s.dir.path().join(format!("{cmd}.log"))).expect("log");
        let child = Command::new(bin).args([cmd, "--kubeconfig"]).arg(&stale).args([flag, &s.url()]).stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log).spawn().expect("spawn");
        common::Killed(child)
    };
    let _c = spawn("controllers", "--server");
    let _sched = spawn("scheduler", "--master");
    let _node = common::simnode::SimNode::start(&s, "sim-remote");
    s.ok(&["create", "namespace", "remote"]);
    s.ok(&["create", "deployment", "web", "--image", IMG, "--replicas=2", "-n", "remote"]);
    let out = s.ok(&["rollout", "status", "deploy/web", "-n", "remote", "--timeout=90s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let ps = wait_pods(&s, "remote", 2);
    assert!(ps.iter().all(|p| p["spec"]["nodeName"] == "sim-remote"), "bound by the remote scheduler: {ps:?}");
}

fn lease_holder(s: &ApiServer) -> (String, i64) {
    let l = s.get_json("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager");
    (l["spec"]["holderIdentity"].as_str().unwrap_or("").to_string(), l["spec"]["leaseTransitions"].as_i64().unwrap_or(-1))
}

#[test]
fn two_servers_on_one_etcd_elect_one_leader_and_a_killed_leader_is_replaced() {
    // Two servers on one etcd, each running its controllers (identity `<host>_<port>_<random>`).
    let a = server(Backend::Etcd);
    let ep = a.etcd_endpoint().expect("etcd").to_string();
    let b = ApiServer::start_opts(Backend::Etcd, Options { controllers: true, etcd_endpoint: Some(ep), ..Options::default() });
    assert!(eventually(LONG, || !lease_holder(&a).0.is_empty()), "nobody took the lease");
    let (first, transitions) = lease_holder(&a);
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-controller-manager";
    let lease = a.get_json(lease_path);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    assert!(lease["spec"]["acquireTime"].is_string() && lease["spec"]["renewTime"].is_string());
    // Only the leader acts: exactly the replicas asked for, never two sets.
    a.ok(&["create", "deployment", "one", "--image", IMG, "--replicas=3"]);
    wait_pods(&a, "default", 3);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(wait_pods(&b, "default", 3).len(), 3);
    assert_eq!(replicasets(&b, "default").len(), 1);
    // The holder keeps renewing, and nobody else takes over meanwhile.
    let renewed = lease["spec"]["renewTime"].clone();
    assert!(eventually(Duration::from_secs(20), || a.get_json(lease_path)["spec"]["renewTime"] != renewed));
    assert_eq!(lease_holder(&a).0, first, "no change of leader while it renews");

    // Kill the leader's server; the other one takes over within the lease duration.
    let (mut leader, survivor) = if first.contains(&format!("_{}_", a.port)) { (a, b) } else { (b, a) };
    assert!(first.contains(&format!("_{}_", leader.port)), "holder {first} names neither server");
    leader.stop(true);
    let killed_at = std::time::Instant::now();
    let mine = format!("_{}_", survivor.port);
    assert!(eventually(Duration::from_secs(45), || lease_holder(&survivor).0.contains(&mine)), "no takeover: {:?}", lease_holder(&survivor));
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(35), "replaced within the lease duration and a retry or two: {took:?}");
    assert_eq!(lease_holder(&survivor).1, transitions + 1, "a change of holder counts one transition");
    // The new leader acts.
    let out = survivor.kubectl(&["scale", "deploy/one", "--replicas=1"]);
    if !out.status.success() {
        let log = survivor.log();
        let _ = std::fs::write(format!("/var/tmp/survivor-{}.log", survivor.port), &log);
        let tail: Vec<&str> = log.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect();
        let again = survivor.kubectl(&["get", "--raw", "/api", "-v=8"]);
        let (code, body) = survivor.curl("GET", "/api", common::server::Auth::Admin, None, None);
        panic!(
            "scale on the survivor: {}\nits log:\n{}\nkubectl -v=8 get --raw /api:\n{}\ncurl /api: {code} {body}",
            String::from_utf8_lossy(&out.stderr),
            tail.join("\n"),
            String::from_utf8_lossy(&again.stderr)
        );
    }
    wait_pods(&survivor, "default", 1);
}

fn job_manifest(name: &str, ns: &str, spec: Value) -> String {
    let mut spec = spec;
    spec["template"] = json!({ "spec": { "restartPolicy": "Never", "containers": [{ "name": "c", "image": IMG, "command": ["sh", "-c", "echo done"] }] } });
    json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": name, "namespace": ns }, "spec": spec }).to_string()
}

#[test]
fn jobs_complete_fail_after_backoff_and_index_their_pods() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "j1"]);
    s.ok(&["create", "namespace", "j2"]);
    let _ok = SimulatedNode::start_as(&s, "j1", "Succeeded");
    let _bad = SimulatedNode::start_as(&s, "j2", "Failed");

    // kubectl create job: one pod, Complete.
    s.ok(&["create", "job", "once", "--image", IMG, "-n", "j1", "--", "sh", "-c", "echo done"]);
    let out = s.ok(&["wait", "--for=condition=complete", "job/once", "-n", "j1", "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let job = s.get_json("/apis/batch/v1/namespaces/j1/jobs/once");
    assert_eq!(job["status"]["succeeded"], 1);
    assert!(job["status"]["completionTime"].is_string() && job["status"]["startTime"].is_string());
    let uid = job["metadata"]["uid"].as_str().expect("uid").to_string();
    assert_eq!(job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid.as_str(), "selector generated from the uid");
    let ps: Vec<Value> = pods(&s, "j1").into_iter().filter(|p| p["metadata"]["labels"]["job-name"] == "once").collect();
    assert_eq!(ps.len(), 1, "{ps:?}");
    assert_eq!(controller_ref(&ps[0]).expect("owner")["uid"], uid.as_str());
    assert!(eventually(LONG, || pods(&s, "j1").iter().all(|p| p["metadata"]["finalizers"].as_array().is_none_or(|f| f.iter().all(|f| f != "batch.kubernetes.io/job-tracking")))), "tracking finalizers removed once counted");

    // completions 3, parallelism 2, Indexed: three indexes, each once.
    s.ok_stdin(&["apply", "-f", "-"], Some(&job_manifest("idx", "j1", json!({ "completions": 3, "parallelism": 2, "completionMode": "Indexed" }))));
    s.ok(&["wait", "--for=condition=complete", "job/idx", "-n", "j1", "--timeout=90s"]);
    let job = s.get_json("/apis/batch/v1/namespaces/j1/jobs/idx");
    assert_eq!((job["status"]["succeeded"].clone(), job["status"]["completedIndexes"].clone()), (json!(3), json!("0-2")));
    let mut idx: Vec<String> = pods(&s, "j1").into_iter().filter(|p| p["metadata"]["labels"]["job-name"] == "idx").map(|p| p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].as_str().unwrap_or("").to_string()).collect();
    idx.sort();
    assert_eq!(idx, ["0", "1", "2"], "one pod per index");

    // Every pod fails: backoffLimit 1 allows one retry, then Failed.
    s.ok_stdin(&["apply", "-f", "-"], Some(&job_manifest("doomed", "j2", json!({ "backoffLimit": 1 }))));
    s.ok(&["wait", "--for=condition=failed", "job/doomed", "-n", "j2", "--timeout=90s"]);
    assert!(eventually(LONG, || s.get_json("/apis/batch/v1/namespaces/j2/jobs/doomed")["status"]["failed"] == 2), "{}", s.get_json("/apis/batch/v1/namespaces/j2/jobs/doomed")["status"]);
    let job = s.get_json("/apis/batch/v1/namespaces/j2/jobs/doomed");
    let failed = job["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Failed").cloned()).expect("Failed condition");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(pods(&s, "j2").len(), 2, "no pod after the job failed");

    // ttlSecondsAfterFinished: the finished Job and its pod go by themselves.
    s.ok_stdin(&["apply", "-f", "-"], Some(&job_manifest("brief", "j1", json!({ "ttlSecondsAfterFinished": 2 }))));
    s.ok(&["wait", "--for=condition=complete", "job/brief", "-n", "j1", "--timeout=90s"]);
    assert!(eventually(LONG, || s.get_json("/apis/batch/v1/namespaces/j1/jobs/brief").is_null()), "job not deleted after its TTL");
    assert!(eventually(LONG, || pods(&s, "j1").iter().all(|p| p["metadata"]["labels"]["job-name"] != "brief")));

    // activeDeadlineSeconds: a job whose pod never finishes fails with DeadlineExceeded.
    s.ok(&["create", "namespace", "j3"]);
    s.ok_stdin(&["apply", "-f", "-"], Some(&job_manifest("slow", "j3", json!({ "activeDeadlineSeconds": 2 }))));
    s.ok(&["wait", "--for=condition=failed", "job/slow", "-n", "j3", "--timeout=90s"]);
    let job = s.get_json("/apis/batch/v1/namespaces/j3/jobs/slow");
    assert!(job["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Failed" && c["reason"] == "DeadlineExceeded")), "{}", job["status"]);
    assert!(eventually(LONG, || pods(&s, "j3").is_empty()), "the running pod is deleted at the deadline");

    // Deleting a Job takes its pods (their tracking finalizers are released).
    s.ok(&["delete", "job", "once", "idx", "-n", "j1"]);
    assert!(eventually(LONG, || pods(&s, "j1").is_empty()), "{:?}", pods(&s, "j1").iter().map(name).collect::<Vec<_>>());
}

/// The Job's pods that have not finished.
fn running_job_pods(s: &ApiServer, ns: &str, job: &str) -> Vec<Value> {
    pods(s, ns).into_iter().filter(|p| p["metadata"]["labels"]["job-name"] == job && p["metadata"]["deletionTimestamp"].is_null() && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))).collect()
}

/// Finish a pod as a kubelet reports it (`pods/status`): its phase, container `c` terminated
/// with `exit`, and extra pod conditions.
fn finish_pod(s: &ApiServer, ns: &str, pod: &str, phase: &str, exit: i32, conditions: Value) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let reason = if exit == 0 { "Completed" } else { "Error" };
    let mut conds = vec![json!({ "type": "Ready", "status": "False", "lastTransitionTime": now })];
    conds.extend(conditions.as_array().cloned().unwrap_or_default().into_iter().map(|mut c| {
        c["lastTransitionTime"] = json!(now);
        c
    }));
    let body = json!({ "status": { "phase": phase, "conditions": conds, "containerStatuses": [{
        "name": "c", "image": IMG, "imageID": "", "ready": false, "restartCount": 0,
        "state": { "terminated": { "exitCode": exit, "reason": reason, "startedAt": now, "finishedAt": now } } }] } });
    let (code, out) = s.curl("PATCH", &format!("/api/v1/namespaces/{ns}/pods/{pod}/status"), Auth::Admin, Some("application/merge-patch+json"), Some(body.to_string().as_bytes()));
    assert_eq!(code, 200, "{out}");
}

fn job_condition(s: &ApiServer, ns: &str, job: &str, t: &str) -> Value {
    let j = s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/{job}"));
    j["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == t).cloned()).unwrap_or(Value::Null)
}

#[test]
fn job_pod_failure_and_success_policies_decide_as_upstream() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "jp"]);
    let ns = "jp";
    // Validation as upstream's.
    let bad = job_manifest("bad", ns, json!({ "podFailurePolicy": { "rules": [
        { "action": "Explode", "onExitCodes": { "operator": "In", "values": [0] } },
        { "action": "Ignore" },
    ] }, "successPolicy": { "rules": [{ "succeededCount": 1 }] } }));
    let err = s.fails(&["apply", "-f", "-"], Some(&bad));
    for want in [
        r#"spec.podFailurePolicy.rules[0].action: Unsupported value: "Explode": supported values: "Count", "FailIndex", "FailJob", "Ignore""#,
        "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
        "spec.podFailurePolicy.rules[1]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
        "spec.successPolicy: Invalid value: ",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }

    // podFailurePolicy: a disruption is ignored, exit 1 counts, exit 42 of container c fails the Job.
    let policy = json!({ "completions": 3, "backoffLimit": 6, "podFailurePolicy": { "rules": [
        { "action": "FailJob", "onExitCodes": { "containerName": "c", "operator": "In", "values": [42] } },
        { "action": "Ignore", "onPodConditions": [{ "type": "DisruptionTarget" }] },
    ] } });
    s.ok_stdin(&["apply", "-f", "-"], Some(&job_manifest("fj", ns, policy)));
    let job = s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/fj"));
    assert_eq!(job["spec"]["podFailurePolicy"]["rules"][1]["onPodConditions"][0]["status"], "True", "status defaulted");
    let next_pod = |after: &[String]| -> String {
        let mut found = String::new();
        assert!(
            eventually(LONG, || {
                let ps = running_job_pods(&s, ns, "fj");
                found = ps.iter().map(name).find(|n| !after.contains(n)).unwrap_or_default();
                ps.len() == 1 && !found.is_empty()
            }),
            "no new pod of fj: {:?}",
            pods(&s, ns).iter().map(name).collect::<Vec<_>>()
        );
        found
    };
    let first = next_pod(&[]);
    finish_pod(&s, ns, &first, "Failed", 137, json!([{ "type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI" }]));
    let second = next_pod(std::slice::from_ref(&first));
    let status = s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/fj"))["status"].clone();
    assert!(status["failed"].as_i64().unwrap_or(0) == 0, "an ignored failure is not counted: {status}");
    finish_pod(&s, ns, &second, "Failed", 1, json!([]));
    assert!(eventually(LONG, || s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/fj"))["status"]["failed"] == 1), "exit 1 counts");
    let third = next_pod(&[first.clone(), second.clone()]);
    finish_pod(&s, ns, &third, "Failed", 42, json!([]));
    let out = s.ok(&["wait", "--for=condition=failed", "job/fj", "-n", ns, "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
    let message = format!("Container c for pod {ns}/{third} failed with exit code 42 matching FailJob rule at index 0");
    for t in ["FailureTarget", "Failed"] {
        let c = job_condition(&s, ns, "fj", t);
        assert_eq!((c["status"].as_str(), c["reason"].as_str(), c["message"].as_str()), (Some("True"), Some("PodFailurePolicy"), Some(message.as_str())), "{t}: {c}");
    }
    assert!(eventually(LONG, || s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/fj"))["status"]["failed"] == 2), "{}", s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/fj"))["status"]);
    let warned = || {
        let events: Value = serde_json::from_str(&s.ok(&["get", "events", "-n", ns, "--field-selector", "involvedObject.name=fj", "-o", "json"])).unwrap_or(Value::Null);
        events["items"].as_array().is_some_and(|es| es.iter().any(|e| e["type"] == "Warning" && e["reason"] == "PodFailurePolicy" && e["message"] == message.as_str()))
    };
    assert!(eventually(LONG, warned), "no PodFailurePolicy event");
    std::thread::sleep(Duration::from_secs(2));
    assert!(running_job_pods(&s, ns, "fj").is_empty(), "no pod after the Job failed");

    // successPolicy: indexes 1 and 2 succeeding complete the Job; the other pods are deleted.
    let success = json!({ "completions": 4, "parallelism": 4, "completionMode": "Indexed", "successPolicy": { "rules": [{ "succeededIndexes": "1-2" }] } });
    s.ok_stdin(&["apply", "-f", "-"], Some(&job_manifest("sp", ns, success)));
    let mut by_index = std::collections::BTreeMap::new();
    assert!(eventually(LONG, || {
        by_index = pods(&s, ns)
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["job-name"] == "sp")
            .map(|p| (p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].as_str().unwrap_or("").to_string(), name(&p)))
            .collect();
        by_index.len() == 4
    }));
    finish_pod(&s, ns, &by_index["1"], "Succeeded", 0, json!([]));
    std::thread::sleep(Duration::from_secs(2));
    assert!(job_condition(&s, ns, "sp", "Complete").is_null(), "one of the rule's indexes is not enough");
    finish_pod(&s, ns, &by_index["2"], "Succeeded", 0, json!([]));
    s.ok(&["wait", "--for=condition=complete", "job/sp", "-n", ns, "--timeout=90s"]);
    for t in ["SuccessCriteriaMet", "Complete"] {
        let c = job_condition(&s, ns, "sp", t);
        assert_eq!((c["status"].as_str(), c["reason"].as_str(), c["message"].as_str()), (Some("True"), Some("SuccessPolicy"), Some("Matched rules at index 0")), "{t}: {c}");
    }
    let st = s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/sp"))["status"].clone();
    assert_eq!((st["succeeded"].clone(), st["completedIndexes"].clone()), (json!(2), json!("1,2")), "two neighbours are a list, as upstream writes them: {st}");
    assert!(st["completionTime"].is_string(), "{st}");
    assert!(eventually(LONG, || running_job_pods(&s, ns, "sp").is_empty()), "indexes 0 and 3 are deleted");
}

/// The active pod of each index of Job `job`: index -> (name, its index-failure-count annotation).
fn active_by_index(s: &ApiServer, ns: &str, job: &str) -> std::collections::BTreeMap<String, (String, String)> {
    running_job_pods(s, ns, job)
        .into_iter()
        .map(|p| {
            let a = &p["metadata"]["annotations"];
            let count = a["batch.kubernetes.io/job-index-failure-count"].as_str().unwrap_or("-").to_string();
            (a["batch.kubernetes.io/job-completion-index"].as_str().unwrap_or("").to_string(), (name(&p), count))
        })
        .collect()
}

#[test]
fn job_backoff_limit_per_index_fails_indexes_as_upstream() {
    let s = server(Backend::Embedded);
    let ns = "jx";
    s.ok(&["create", "namespace", ns]);
    // Validation and defaults as upstream's.
    let err = s.fails(&["apply", "-f", "-"], Some(&job_manifest("bad1", ns, json!({ "backoffLimitPerIndex": 1 }))));
    assert!(err.contains("spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"), "{err}");
    let err = s.fails(&["apply", "-f", "-"], Some(&job_manifest("bad2", ns, json!({ "completions": 3, "completionMode": "Indexed", "maxFailedIndexes": 1 }))));
    assert!(err.contains("spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified"), "{err}");
    let err = s.fails(&["apply", "-f", "-"], Some(&job_manifest("bad3", ns, json!({ "completions": 3, "completionMode": "Indexed", "backoffLimitPerIndex": 1, "maxFailedIndexes": 4 }))));
    assert!(err.contains("spec.maxFailedIndexes: Invalid value: 4: must be less than or equal to completions"), "{err}");
    let err = s.fails(&["apply", "-f", "-"], Some(&job_manifest("bad4", ns, json!({ "parallelism": 2, "completionMode": "Indexed" }))));
    assert!(err.contains("spec.completions: Required value: when completion mode is Indexed"), "{err}");
    s.ok_stdin(&["apply", "-f", "-"], Some(&job_manifest("queue", ns, json!({ "parallelism": 2, "suspend": true }))));
    let q = s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/queue"));
    assert_eq!((q["spec"]["completions"].clone(), q["spec"]["parallelism"].clone(), q["spec"]["backoffLimit"].clone()), (Value::Null, json!(2), json!(6)), "a work-queue Job keeps no completions: {}", q["spec"]);
    assert_eq!(q["spec"]["podReplacementPolicy"], "TerminatingOrFailed");

    // completions 3, backoffLimitPerIndex 1: index 0 fails twice, index 1 hits a FailIndex rule
    // once, index 2 succeeds: the Job fails with FailedIndexes.
    let spec = json!({ "completions": 3, "parallelism": 3, "completionMode": "Indexed", "backoffLimitPerIndex": 1, "podFailurePolicy": { "rules": [
        { "action": "FailIndex", "onExitCodes": { "containerName": "c", "operator": "In", "values": [42] } },
    ] } });
    s.ok_stdin(&["apply", "-f", "-"], Some(&job_manifest("pi", ns, spec)));
    let job = s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/pi"));
    assert_eq!(job["spec"]["backoffLimit"], i32::MAX, "no global limit by default with a per-index one");
    let mut by = Default::default();
    assert!(eventually(LONG, || {
        by = active_by_index(&s, ns, "pi");
        by.len() == 3
    }), "{by:?}");
    assert!(by.values().all(|(_, c)| c == "0"), "first pods carry a failure count of 0: {by:?}");
    let first0 = by["0"].0.clone();
    finish_pod(&s, ns, &first0, "Failed", 1, json!([]));
    assert!(eventually(LONG, || {
        by = active_by_index(&s, ns, "pi");
        by.get("0").is_some_and(|(n, _)| *n != first0)
    }), "index 0 retried: {by:?}");
    assert_eq!(by["0"].1, "1", "the retry carries the index's failure: {by:?}");
    let st = s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/pi"))["status"].clone();
    assert_eq!(st["failedIndexes"], "", "{st}");
    finish_pod(&s, ns, &by["0"].0, "Failed", 1, json!([]));
    finish_pod(&s, ns, &by["1"].0, "Failed", 42, json!([]));
    assert!(eventually(LONG, || s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/pi"))["status"]["failedIndexes"] == "0,1"), "{}", s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/pi"))["status"]);
    std::thread::sleep(Duration::from_secs(2));
    by = active_by_index(&s, ns, "pi");
    assert_eq!(by.keys().collect::<Vec<_>>(), ["2"], "failed indexes get no new pod: {by:?}");
    assert!(job_condition(&s, ns, "pi", "Failed").is_null(), "not finished while index 2 runs");
    finish_pod(&s, ns, &by["2"].0, "Succeeded", 0, json!([]));
    s.ok(&["wait", "--for=condition=failed", "job/pi", "-n", ns, "--timeout=90s"]);
    for t in ["FailureTarget", "Failed"] {
        let c = job_condition(&s, ns, "pi", t);
        assert_eq!((c["reason"].as_str(), c["message"].as_str()), (Some("FailedIndexes"), Some("Job has failed indexes")), "{t}: {c}");
    }
    assert!(eventually(LONG, || {
        let st = s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/pi"))["status"].clone();
        (st["failed"].clone(), st["succeeded"].clone(), st["completedIndexes"].clone(), st["failedIndexes"].clone()) == (json!(3), json!(1), json!("2"), json!("0,1"))
    }), "{}", s.get_json(&format!("/apis/batch/v1/namespaces/{ns}/jobs/pi"))["status"]);

    // maxFailedIndexes 0: the first failed index ends the Job, and the other index's pod goes.
    let spec = json!({ "completions": 2, "parallelism": 2, "completionMode": "Indexed", "backoffLimitPerIndex": 0, "maxFailedIndexes": 0 });
    s.ok_stdin(&["apply", "-f", "-"], Some(&job_manifest("mx", ns, spec)));
    assert!(eventually(LONG, || {
        by = active_by_index(&s, ns, "mx");
        by.len() == 2
    }), "{by:?}");
    finish_pod(&s, ns, &by["0"].0, "Failed", 1, json!([]));
    s.ok(&["wait", "--for=condition=failed", "job/mx", "-n", ns, "--timeout=90s"]);
    let c = job_condition(&s, ns, "mx", "Failed");
    assert_eq!((c["reason"].as_str(), c["message"].as_str()), (Some("MaxFailedIndexesExceeded"), Some("Job has exceeded the specified maximal number of failed indexes")), "{c}");
    assert!(eventually(LONG, || running_job_pods(&s, ns, "mx").is_empty()), "index 1's pod is deleted");
}

#[test]
fn replication_controllers_keep_their_replicas_like_replicasets() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "rc1"]);
    let _node = SimulatedNode::start(&s, "rc1");
    // No selector: the API server defaults it (and the RC's labels) from the template.
    let manifest = format!(
        r#"{{"apiVersion":"v1","kind":"ReplicationController","metadata":{{"name":"web","namespace":"rc1"}},
        "spec":{{"replicas":3,"template":{{"metadata":{{"labels":{{"app":"web"}}}},"spec":{{"containers":[{{"name":"c","image":"{IMG}"}}]}}}}}}}}"#
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&manifest));
    let rc = s.get_json("/api/v1/namespaces/rc1/replicationcontrollers/web");
    assert_eq!((rc["spec"]["selector"].clone(), rc["metadata"]["labels"].clone()), (json!({"app": "web"}), json!({"app": "web"})), "{rc}");
    let ps = wait_pods(&s, "rc1", 3);
    for p in &ps {
        assert!(name(p).starts_with("web-") && name(p).len() == "web-".len() + 5, "{}", name(p));
        let o = controller_ref(p).expect("controller ref");
        assert_eq!((o["apiVersion"].as_str(), o["kind"].as_str(), o["uid"].clone()), (Some("v1"), Some("ReplicationController"), rc["metadata"]["uid"].clone()));
    }
    assert!(eventually(LONG, || {
        let st = s.get_json("/api/v1/namespaces/rc1/replicationcontrollers/web")["status"].clone();
        st["replicas"] == 3 && st["readyReplicas"] == 3 && st["availableReplicas"] == 3 && st["fullyLabeledReplicas"] == 3 && st["observedGeneration"] == 1
    }), "{}", s.get_json("/api/v1/namespaces/rc1/replicationcontrollers/web")["status"]);
    let out = s.ok(&["get", "rc", "web", "-n", "rc1"]);
    assert_eq!(out.lines().next().unwrap_or("").split_whitespace().collect::<Vec<_>>(), ["NAME", "DESIRED", "CURRENT", "READY", "AGE"], "{out}");
    assert_eq!(out.lines().nth(1).unwrap_or("").split_whitespace().take(4).collect::<Vec<_>>(), ["web", "3", "3", "3"], "{out}");
    assert!(eventually(LONG, || s.ok(&["get", "events", "-n", "rc1", "--field-selector", "involvedObject.kind=ReplicationController"]).contains("SuccessfulCreate")));
    // Scale through the scale subresource; a deleted pod is replaced.
    s.ok(&["scale", "rc", "web", "--replicas=1", "-n", "rc1"]);
    wait_pods(&s, "rc1", 1);
    let victim = name(&pods(&s, "rc1")[0]);
    s.ok(&["delete", "pod", &victim, "-n", "rc1", "--wait=false"]);
    assert!(eventually(LONG, || { let ps = wait_pods(&s, "rc1", 1); name(&ps[0]) != victim }));
    // A selector the template does not match is refused.
    let bad = r#"{"apiVersion":"v1","kind":"ReplicationController","metadata":{"name":"bad","namespace":"rc1"},
        "spec":{"selector":{"app":"a"},"template":{"metadata":{"labels":{"app":"b"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}}"#;
    let err = s.fails(&["create", "-f", "-"], Some(bad));
    assert!(err.contains("`selector` does not match template `labels`"), "{err}");
    // Deleting the RC takes its pods (garbage collection by ownerReferences).
    s.ok(&["delete", "rc", "web", "-n", "rc1"]);
    assert!(eventually(LONG, || pods(&s, "rc1").is_empty()));
}

fn cronjob_manifest(name: &str, ns: &str, spec: Value) -> String {
    let mut spec = spec;
    spec["jobTemplate"] = json!({ "spec": { "template": { "spec": { "restartPolicy": "OnFailure", "containers": [{ "name": "c", "image": IMG, "command": ["date"] }] } } } });
    json!({ "apiVersion": "batch/v1", "kind": "CronJob", "metadata": { "name": name, "namespace": ns }, "spec": spec }).to_string()
}

fn jobs_of(s: &ApiServer, ns: &str) -> Vec<Value> {
    s.items(&format!("/apis/batch/v1/namespaces/{ns}/jobs")).into_iter().filter(|j| j["metadata"]["deletionTimestamp"].is_null()).collect()
}

/// Make a CronJob's last run `minutes` ago (its status, as after a controller outage), so its
/// most recent missed time is due at once instead of at the next minute boundary.
fn backdate_last_schedule(s: &ApiServer, ns: &str, name: &str, minutes: i64) {
    let t = (chrono::Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = json!({ "status": { "lastScheduleTime": t } }).to_string();
    let (code, out) = s.curl("PATCH", &format!("/apis/batch/v1/namespaces/{ns}/cronjobs/{name}/status"), Auth::Admin, Some("application/merge-patch+json"), Some(body.as_bytes()));
    assert_eq!(code, 200, "{out}");
}

fn events_of(s: &ApiServer, ns: &str, name: &str) -> String {
    s.ok(&["get", "events", "-n", ns, "--field-selector", &format!("involvedObject.name={name}")])
}

#[test]
fn cronjobs_run_on_schedule_forbid_prune_suspend_and_bad_schedules_are_refused() {
    let s = server(Backend::Embedded);
    for ns in ["cj1", "cj2", "cj3"] {
        s.ok(&["create", "namespace", ns]);
    }
    let _done = SimulatedNode::start_as(&s, "cj1", "Succeeded");
    let _running = SimulatedNode::start(&s, "cj2");
    let _done3 = SimulatedNode::start_as(&s, "cj3", "Succeeded");

    // Refused with kube-apiserver's messages (422), nothing stored.
    let err = s.fails(&["create", "cronjob", "bad", "--image", IMG, "--schedule=61 * * * *", "-n", "cj1"], None);
    assert!(err.contains(r#"spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61"#), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&cronjob_manifest("bad", "cj1", json!({ "schedule": "0 9 * * *", "timeZone": "Mars/Olympus" }))));
    assert!(err.contains(r#"spec.timeZone: Invalid value: "Mars/Olympus": unknown time zone Mars/Olympus"#), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&cronjob_manifest("bad", "cj1", json!({ "schedule": "CRON_TZ=UTC * * * * *" }))));
    assert!(err.contains("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"), "{err}");
    let body = cronjob_manifest("bad", "cj1", json!({ "schedule": "@fortnightly" }));
    let (code, out) = s.curl("POST", "/apis/batch/v1/namespaces/cj1/cronjobs", Auth::Admin, Some("application/json"), Some(body.as_bytes()));
    assert_eq!(code, 422, "{out}");
    assert!(out.contains("unrecognized descriptor: @fortnightly"), "{out}");
    assert!(s.get_json("/apis/batch/v1/namespaces/cj1/cronjobs/bad").is_null());
    // A valid time zone and the macros are accepted; defaults as upstream's.
    s.ok_stdin(&["create", "-f", "-"], Some(&cronjob_manifest("paris", "cj1", json!({ "schedule": "@daily", "timeZone": "Europe/Paris" }))));
    let paris = s.get_json("/apis/batch/v1/namespaces/cj1/cronjobs/paris");
    assert_eq!((paris["spec"]["concurrencyPolicy"].clone(), paris["spec"]["suspend"].clone(), paris["spec"]["successfulJobsHistoryLimit"].clone(), paris["spec"]["failedJobsHistoryLimit"].clone()), (json!("Allow"), json!(false), json!(3), json!(1)));
    let row = s.ok(&["get", "cronjob", "paris", "-n", "cj1", "--no-headers"]);
    assert_eq!(row.split_whitespace().take(5).collect::<Vec<_>>(), ["paris", "@daily", "Europe/Paris", "False", "0"], "{row}");

    // Forbid: a run is made due at once (its last one backdated); its pod never finishes, so
    // the next minute's run is skipped.
    s.ok_stdin(&["create", "-f", "-"], Some(&cronjob_manifest("solo", "cj2", json!({ "schedule": "*/1 * * * *", "concurrencyPolicy": "Forbid" }))));
    backdate_last_schedule(&s, "cj2", "solo", 10);
    // Suspended: nothing runs although a time is due; resumed, the missed time runs at once.
    s.ok_stdin(&["create", "-f", "-"], Some(&cronjob_manifest("sleepy", "cj3", json!({ "schedule": "*/1 * * * *", "suspend": true }))));
    backdate_last_schedule(&s, "cj3", "sleepy", 10);

    // kubectl create cronjob: a Job at the next minute boundary, named after the scheduled minute.
    s.ok(&["create", "cronjob", "tick", "--image", IMG, "--schedule=*/1 * * * *", "-n", "cj1", "--", "date"]);
    let cj = s.get_json("/apis/batch/v1/namespaces/cj1/cronjobs/tick");
    assert!(eventually(LONG, || jobs_of(&s, "cj2").len() == 1), "Forbid cronjob's due run never started: {}", events_of(&s, "cj2", "solo"));
    let solo = s.get_json("/apis/batch/v1/namespaces/cj2/cronjobs/solo");
    assert_eq!(solo["status"]["active"].as_array().map(Vec::len), Some(1), "{}", solo["status"]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(jobs_of(&s, "cj3").is_empty(), "a suspended cronjob ran: {:?}", jobs_of(&s, "cj3"));
    s.ok(&["patch", "cronjob", "sleepy", "-n", "cj3", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    assert!(eventually(LONG, || jobs_of(&s, "cj3").iter().any(|j| name(j).starts_with("sleepy-"))), "resumed cronjob did not catch up: {}", events_of(&s, "cj3", "sleepy"));

    let long = Duration::from_secs(150);
    assert!(
        eventually(long, || {
            let st = s.get_json("/apis/batch/v1/namespaces/cj1/cronjobs/tick")["status"].clone();
            st["lastSuccessfulTime"].is_string() && st["active"].as_array().is_none_or(|a| a.is_empty())
        }),
        "tick never ran to completion: {} {}",
        s.get_json("/apis/batch/v1/namespaces/cj1/cronjobs/tick")["status"],
        events_of(&s, "cj1", "tick")
    );
    let st = s.get_json("/apis/batch/v1/namespaces/cj1/cronjobs/tick")["status"].clone();
    let last = chrono::DateTime::parse_from_rfc3339(st["lastScheduleTime"].as_str().expect("lastScheduleTime")).expect("time");
    assert_eq!(last.timestamp() % 60, 0, "scheduled on a minute boundary");
    let ticks: Vec<Value> = jobs_of(&s, "cj1").into_iter().filter(|j| name(j).starts_with("tick-")).collect();
    let job = ticks.iter().find(|j| name(j) == format!("tick-{}", last.timestamp() / 60)).unwrap_or_else(|| panic!("no job tick-<minutes>: {:?}", ticks.iter().map(name).collect::<Vec<_>>()));
    let owner = controller_ref(job).expect("controller ref");
    assert_eq!((owner["kind"].as_str(), owner["uid"].clone(), owner["blockOwnerDeletion"].clone()), (Some("CronJob"), cj["metadata"]["uid"].clone(), json!(true)));
    assert_eq!(job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"], st["lastScheduleTime"]);
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], json!(["date"]));
    assert!(events_of(&s, "cj1", "tick").contains("SuccessfulCreate"));

    // Forbid: the next boundary passes while the first Job runs — skipped, with an Event.
    assert!(eventually(long, || events_of(&s, "cj2", "solo").contains("JobAlreadyActive")), "{}", events_of(&s, "cj2", "solo"));
    assert_eq!(jobs_of(&s, "cj2").len(), 1, "Forbid started a second Job");

    // History limits: Jobs created from the CronJob (kubectl create job --from) are its own and
    // are pruned to successfulJobsHistoryLimit once finished.
    s.ok_stdin(&["create", "-f", "-"], Some(&cronjob_manifest("hist", "cj3", json!({ "schedule": "0 0 1 1 *", "successfulJobsHistoryLimit": 1 }))));
    for n in ["hist-a", "hist-b", "hist-c"] {
        let created: Value = serde_json::from_str(&s.ok(&["create", "job", n, "--from=cronjob/hist", "-n", "cj3", "-o", "json"])).expect("job json");
        assert_eq!(created["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual");
        assert_eq!(controller_ref(&created).expect("owner")["name"], "hist");
    }
    let hist = |s: &ApiServer| jobs_of(s, "cj3").into_iter().filter(|j| name(j).starts_with("hist-")).collect::<Vec<_>>();
    assert!(
        eventually(LONG, || { let h = hist(&s); h.len() == 1 && h[0]["status"]["succeeded"] == 1 }),
        "history not pruned to 1: {:?} {}",
        hist(&s).iter().map(name).collect::<Vec<_>>(),
        events_of(&s, "cj3", "hist")
    );
    assert!(events_of(&s, "cj3", "hist").contains("SuccessfulDelete"));
}

/// failedJobsHistoryLimit: of a CronJob's failed Jobs only the newest `limit` stay (the oldest by
/// startTime go, their pods with them); successfulJobsHistoryLimit 0 deletes none of them.
#[test]
fn cronjobs_keep_only_their_newest_failed_jobs() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "cj5"]);
    // Every pod of cj5 fails at once, as a container exiting 1 would.
    let _failing = SimulatedNode::start_as(&s, "cj5", "Failed");
    let mut cj: Value = serde_json::from_str(&cronjob_manifest("flaky", "cj5", json!({ "schedule": "0 0 1 1 *", "failedJobsHistoryLimit": 1, "successfulJobsHistoryLimit": 0 }))).expect("manifest");
    cj["spec"]["jobTemplate"]["spec"] = json!({ "backoffLimit": 0, "template": { "spec": { "restartPolicy": "Never", "containers": [{ "name": "c", "image": IMG, "command": ["sh", "-c", "exit 1"] }] } } });
    s.ok_stdin(&["create", "-f", "-"], Some(&cj.to_string()));
    let job = |s: &ApiServer, n: &str| s.get_json(&format!("/apis/batch/v1/namespaces/cj5/jobs/{n}"));
    let failed = |j: &Value| j["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Failed" && c["status"] == "True"));
    let flaky = |s: &ApiServer| {
        let mut v: Vec<String> = jobs_of(s, "cj5").iter().map(name).filter(|n| n.starts_with("flaky-")).collect();
        v.sort();
        v
    };
    for (i, n) in ["flaky-a", "flaky-b", "flaky-c"].into_iter().enumerate() {
        s.ok(&["create", "job", n, "--from=cronjob/flaky", "-n", "cj5"]);
        if i < 2 {
            // Each fails before the next starts (startTime has seconds: a later second).
            assert!(eventually(LONG, || failed(&job(&s, n))), "{n} did not fail: {}", job(&s, n)["status"]);
            std::thread::sleep(Duration::from_millis(1100));
        }
    }
    assert!(eventually(LONG, || failed(&job(&s, "flaky-c"))), "flaky-c did not fail: {}", job(&s, "flaky-c")["status"]);
    let last = job(&s, "flaky-c");
    let cond = last["status"]["conditions"].as_array().expect("conditions").iter().find(|c| c["type"] == "Failed").cloned().expect("Failed");
    assert_eq!(cond["reason"], "BackoffLimitExceeded", "{cond}");
    assert_eq!(last["status"]["failed"], 1, "{}", last["status"]);
    assert!(eventually(LONG, || flaky(&s) == ["flaky-c"]), "failed history not pruned to the newest: {:?} {}", flaky(&s), events_of(&s, "cj5", "flaky"));
    let events = events_of(&s, "cj5", "flaky");
    for n in ["flaky-a", "flaky-b"] {
        assert!(events.contains(&format!("Deleted job {n}")), "{events}");
    }
    // Their pods go with them (background deletion); flaky-c's stays.
    let owners = |s: &ApiServer| pods(s, "cj5").iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).filter_map(controller_ref).filter_map(|o| o["name"].as_str().map(str::to_string)).collect::<Vec<_>>();
    assert!(eventually(LONG, || owners(&s) == ["flaky-c"]), "pods left: {:?}", owners(&s));
    // It stays: nothing prunes the one the limit keeps.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(flaky(&s), ["flaky-c"]);
}

/// concurrencyPolicy Replace: the next run deletes the one still running and takes its place;
/// startingDeadlineSeconds: a time missed by more than the deadline is not run.
#[test]
fn cronjobs_replace_a_running_job_and_skip_times_past_their_starting_deadline() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "cj4"]);
    s.ok_stdin(&["create", "-f", "-"], Some(&cronjob_manifest("swap", "cj4", json!({ "schedule": "*/1 * * * *", "concurrencyPolicy": "Replace" }))));
    s.ok_stdin(&["create", "-f", "-"], Some(&cronjob_manifest("late", "cj4", json!({ "schedule": "*/1 * * * *", "startingDeadlineSeconds": 0 }))));
    backdate_last_schedule(&s, "cj4", "swap", 10);
    backdate_last_schedule(&s, "cj4", "late", 10);
    let swaps = |s: &ApiServer| jobs_of(s, "cj4").into_iter().filter(|j| name(j).starts_with("swap-")).map(|j| name(&j)).collect::<Vec<_>>();
    assert!(eventually(LONG, || swaps(&s).len() == 1), "{:?} {}", swaps(&s), events_of(&s, "cj4", "swap"));
    let first = swaps(&s)[0].clone();
    // No node runs its pod: at the next minute boundary the first Job is still active.
    let long = Duration::from_secs(150);
    assert!(eventually(long, || { let w = swaps(&s); w.len() == 1 && w[0] != first }), "{:?} {}", swaps(&s), events_of(&s, "cj4", "swap"));
    let events = events_of(&s, "cj4", "swap");
    assert!(events.contains(&format!("Deleted job {first}")), "{events}");
    let active = s.get_json("/apis/batch/v1/namespaces/cj4/cronjobs/swap")["status"]["active"].clone();
    assert_eq!(active.as_array().map(|a| a.iter().filter_map(|r| r["name"].as_str()).map(str::to_string).collect::<Vec<_>>()), Some(swaps(&s)), "{active}");
    // `late` never ran although a minute boundary passed: with a 0 s deadline no time is ever
    // within its window (upstream looks for missed times only after now - deadline).
    assert!(jobs_of(&s, "cj4").iter().all(|j| !name(j).starts_with("late-")), "{:?}", jobs_of(&s, "cj4").iter().map(name).collect::<Vec<_>>());
}

/// Report a pod's status as its node would: Running, an IP, Ready or not.
fn set_pod_status(s: &ApiServer, ns: &str, pod: &str, ip: &str, ready: bool) {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = json!({ "status": { "phase": "Running", "podIP": ip, "podIPs": [{ "ip": ip }], "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": now }] } }).to_string();
    let (code, out) = s.curl("PATCH", &format!("/api/v1/namespaces/{ns}/pods/{pod}/status"), Auth::Admin, Some("application/merge-patch+json"), Some(body.as_bytes()));
    assert_eq!(code, 200, "{out}");
}

fn endpoint_ips(ep: &Value, key: &str) -> Vec<String> {
    let mut v: Vec<String> = ep["subsets"].as_array().into_iter().flatten().flat_map(|s| s[key].as_array().cloned().unwrap_or_default()).filter_map(|a| a["ip"].as_str().map(str::to_string)).collect();
    v.sort();
    v
}

fn slices_of(s: &ApiServer, ns: &str, svc: &str) -> Vec<Value> {
    s.items(&format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices?labelSelector=kubernetes.io/service-name%3D{svc}"))
}

#[test]
fn endpoints_and_slices_follow_pod_readiness_scaling_and_named_ports() {
    let s = server(Backend::Embedded);
    s.ok(&["create", "namespace", "ep1"]);
    let deploy = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "namespace": "ep1" }, "spec": { "replicas": 3, "selector": { "matchLabels": { "app": "web" } },
        "template": { "metadata": { "labels": { "app": "web" } }, "spec": { "containers": [{ "name": "c", "image": IMG, "ports": [{ "name": "http", "containerPort": 8080 }] }] } } } });
    s.ok_stdin(&["create", "-f", "-"], Some(&deploy.to_string()));
    let svc = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "web", "namespace": "ep1", "labels": { "tier": "front" } }, "spec": { "selector": { "app": "web" }, "ports": [{ "port": 80, "targetPort": "http" }] } });
    s.ok_stdin(&["create", "-f", "-"], Some(&svc.to_string()));
    let mut ps: Vec<String> = wait_pods(&s, "ep1", 3).iter().map(name).collect();
    ps.sort();
    for (i, p) in ps.iter().enumerate() {
        set_pod_status(&s, "ep1", p, &format!("10.1.0.{}", i + 1), i != 0);
    }
    let ep = |s: &ApiServer| s.get_json("/api/v1/namespaces/ep1/endpoints/web");
    assert!(
        eventually(LONG, || { let e = ep(&s); endpoint_ips(&e, "addresses") == ["10.1.0.2", "10.1.0.3"] && endpoint_ips(&e, "notReadyAddresses") == ["10.1.0.1"] }),
        "{}",
        ep(&s)
    );
    let e = ep(&s);
    assert_eq!(e["subsets"][0]["ports"], json!([{ "port": 8080, "protocol": "TCP" }]), "the named targetPort resolved on each pod");
    assert_eq!(e["metadata"]["labels"]["tier"], "front");
    let addr = &e["subsets"][0]["addresses"][0];
    assert_eq!((addr["targetRef"]["kind"].as_str(), addr["targetRef"]["name"].as_str()), (Some("Pod"), Some(ps[1].as_str())));
    let row = s.ok(&["get", "endpoints", "web", "-n", "ep1", "--no-headers"]);
    assert_eq!(row.split_whitespace().nth(1), Some("10.1.0.2:8080,10.1.0.3:8080"), "{row}");

    let svc_uid = s.get_json("/api/v1/namespaces/ep1/services/web")["metadata"]["uid"].clone();
    assert!(eventually(LONG, || slices_of(&s, "ep1", "web").first().is_some_and(|sl| sl["endpoints"].as_array().map(Vec::len) == Some(3))), "{:?}", slices_of(&s, "ep1", "web"));
    let slices = slices_of(&s, "ep1", "web");
    assert_eq!(slices.len(), 1);
    let sl = &slices[0];
    assert!(name(sl).starts_with("web-"), "{}", name(sl));
    assert_eq!(sl["addressType"], "IPv4");
    assert_eq!(sl["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "endpointslice-controller.k8s.io");
    assert_eq!(sl["metadata"]["labels"]["tier"], "front");
    let owner = controller_ref(sl).expect("owner");
    assert_eq!((owner["kind"].as_str(), owner["uid"].clone()), (Some("Service"), svc_uid));
    assert_eq!(sl["ports"], json!([{ "name": "", "port": 8080, "protocol": "TCP" }]));
    let ready: Vec<bool> = sl["endpoints"].as_array().into_iter().flatten().map(|e| e["conditions"]["ready"] == true).collect();
    assert_eq!(ready.iter().filter(|r| **r).count(), 2, "{sl}");
    let row = s.ok(&["get", "endpointslices", "-n", "ep1", "--no-headers"]);
    assert_eq!(row.split_whitespace().skip(1).take(3).collect::<Vec<_>>(), ["IPv4", "8080", "10.1.0.1,10.1.0.2,10.1.0.3"], "{row}");

    // Ready now: an address.
    set_pod_status(&s, "ep1", &ps[0], "10.1.0.1", true);
    assert!(eventually(LONG, || endpoint_ips(&ep(&s), "addresses").len() == 3 && endpoint_ips(&ep(&s), "notReadyAddresses").is_empty()), "{}", ep(&s));

    // Scale up: new pods join once they have an IP; down: the gone ones leave.
    s.ok(&["scale", "deploy/web", "--replicas=5", "-n", "ep1"]);
    let all: Vec<String> = wait_pods(&s, "ep1", 5).iter().map(name).collect();
    for (i, p) in all.iter().filter(|p| !ps.contains(p)).enumerate() {
        set_pod_status(&s, "ep1", p, &format!("10.1.1.{}", i + 1), true);
    }
    assert!(eventually(LONG, || endpoint_ips(&ep(&s), "addresses").len() == 5), "{}", ep(&s));
    assert!(eventually(LONG, || slices_of(&s, "ep1", "web").iter().map(|sl| sl["endpoints"].as_array().map_or(0, Vec::len)).sum::<usize>() == 5));
    s.ok(&["scale", "deploy/web", "--replicas=1", "-n", "ep1"]);
    wait_pods(&s, "ep1", 1);
    assert!(eventually(LONG, || endpoint_ips(&ep(&s), "addresses").len() == 1), "{}", ep(&s));
    assert!(eventually(LONG, || slices_of(&s, "ep1", "web").iter().map(|sl| sl["endpoints"].as_array().map_or(0, Vec::len)).sum::<usize>() == 1));

    // publishNotReadyAddresses: a pod not ready is still an address.
    s.ok(&["patch", "service", "web", "-n", "ep1", "--type=merge", "-p", r#"{"spec":{"publishNotReadyAddresses":true}}"#]);
    let last = name(&wait_pods(&s, "ep1", 1)[0]);
    let ip = pods(&s, "ep1")[0]["status"]["podIP"].as_str().unwrap_or("10.1.9.9").to_string();
    set_pod_status(&s, "ep1", &last, &ip, false);
    std::thread::sleep(Duration::from_secs(2));
    assert!(eventually(LONG, || endpoint_ips(&ep(&s), "addresses") == [ip.clone()] && endpoint_ips(&ep(&s), "notReadyAddresses").is_empty()), "{}", ep(&s));

    // A Service without a selector: its Endpoints are the user's, left alone, and mirrored into
    // an EndpointSlice (upstream's EndpointSliceMirroring), through create, update and delete.
    s.ok_stdin(&["create", "-f", "-"], Some(&json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "ext", "namespace": "ep1" }, "spec": { "ports": [{ "port": 5432 }] } }).to_string()));
    s.ok_stdin(&["create", "-f", "-"], Some(&json!({ "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": "ext", "namespace": "ep1", "labels": { "tier": "db" } }, "subsets": [{ "addresses": [{ "ip": "192.0.2.10" }], "notReadyAddresses": [{ "ip": "192.0.2.11" }], "ports": [{ "port": 5432 }] }] }).to_string()));
    let ext = s.get_json("/api/v1/namespaces/ep1/endpoints/ext");
    assert_eq!(ext["subsets"][0]["ports"][0]["protocol"], "TCP", "the port's protocol defaults to TCP");
    let mirrored = |s: &ApiServer| -> Vec<(String, bool)> {
        let mut v: Vec<(String, bool)> = slices_of(s, "ep1", "ext").iter().flat_map(|sl| sl["endpoints"].as_array().cloned().unwrap_or_default()).map(|e| (e["addresses"][0].as_str().unwrap_or("").to_string(), e["conditions"]["ready"] == true)).collect();
        v.sort();
        v
    };
    assert!(eventually(LONG, || mirrored(&s) == [("192.0.2.10".to_string(), true), ("192.0.2.11".to_string(), false)]), "{:?}", slices_of(&s, "ep1", "ext"));
    let slices = slices_of(&s, "ep1", "ext");
    assert_eq!(slices.len(), 1, "{slices:?}");
    let slice = &slices[0];
    assert_eq!(slice["metadata"]["labels"], json!({ "tier": "db", "kubernetes.io/service-name": "ext", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io" }), "{slice}");
    assert_eq!((slice["addressType"].as_str(), &slice["ports"], slice["metadata"]["ownerReferences"][0]["kind"].as_str(), slice["metadata"]["ownerReferences"][0]["uid"].as_str()), (Some("IPv4"), &json!([{ "name": "", "port": 5432, "protocol": "TCP" }]), Some("Endpoints"), ext["metadata"]["uid"].as_str()), "{slice}");
    assert!(slice["metadata"]["name"].as_str().unwrap_or("").starts_with("ext-"), "{slice}");
    assert_eq!(endpoint_ips(&s.get_json("/api/v1/namespaces/ep1/endpoints/ext"), "addresses"), ["192.0.2.10"], "the user's Endpoints are left as they are");
    s.ok(&["patch", "endpoints", "ext", "-n", "ep1", "--type=json", "-p", r#"[{"op":"replace","path":"/subsets/0/addresses/0/ip","value":"192.0.2.20"}]"#]);
    assert!(eventually(LONG, || mirrored(&s) == [("192.0.2.11".to_string(), false), ("192.0.2.20".to_string(), true)]), "{:?}", slices_of(&s, "ep1", "ext"));
    assert_eq!(slices_of(&s, "ep1", "ext")[0]["metadata"]["name"], slice["metadata"]["name"], "the slice is updated in place");
    // Labelled not to be mirrored: the slice goes; unlabelled again, it comes back.
    s.ok(&["label", "endpoints", "ext", "-n", "ep1", "endpointslice.kubernetes.io/skip-mirror=true"]);
    assert!(eventually(LONG, || slices_of(&s, "ep1", "ext").is_empty()), "{:?}", slices_of(&s, "ep1", "ext"));
    s.ok(&["label", "endpoints", "ext", "-n", "ep1", "endpointslice.kubernetes.io/skip-mirror-"]);
    assert!(eventually(LONG, || mirrored(&s).len() == 2), "{:?}", slices_of(&s, "ep1", "ext"));
    s.ok(&["delete", "endpoints", "ext", "-n", "ep1"]);
    assert!(eventually(LONG, || slices_of(&s, "ep1", "ext").is_empty()), "{:?}", slices_of(&s, "ep1", "ext"));
    // An address may not be the node's or the server's own (loopback, link-local), as upstream
    // refuses them; nor may a slice's, or a Service's external IP.
    let err = s.fails(&["create", "-f", "-"], Some(&json!({ "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": "local", "namespace": "ep1" }, "subsets": [{ "addresses": [{ "ip": "127.0.0.1" }], "ports": [{ "port": 2379 }] }] }).to_string()));
    assert!(err.contains("subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"), "{err}");
    s.ok_stdin(&["create", "-f", "-"], Some(&json!({ "apiVersion": "v1", "kind": "Endpoints", "metadata": { "name": "remote", "namespace": "ep1" }, "subsets": [{ "addresses": [{ "ip": "192.0.2.10" }], "ports": [{ "port": 5432 }] }] }).to_string()));
    let err = s.fails(&["patch", "endpoints", "remote", "-n", "ep1", "--type=json", "-p", r#"[{"op":"replace","path":"/subsets/0/addresses/0/ip","value":"169.254.169.254"}]"#], None);
    assert!(err.contains("may not be in the link-local range (169.254.0.0/16, fe80::/10)"), "{err}");
    assert_eq!(endpoint_ips(&s.get_json("/api/v1/namespaces/ep1/endpoints/remote"), "addresses"), ["192.0.2.10"]);
    let err = s.fails(&["create", "-f", "-"], Some(&json!({ "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": { "name": "local", "namespace": "ep1" }, "addressType": "IPv4", "endpoints": [{ "addresses": ["127.0.0.1"] }], "ports": [{ "port": 2379 }] }).to_string()));
    assert!(err.contains("endpoints[0].addresses[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "local", "namespace": "ep1" }, "spec": { "ports": [{ "port": 80 }], "externalIPs": ["0.0.0.0"] } }).to_string()));
    assert!(err.contains("spec.externalIPs[0]: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)"), "{err}");

    // Deleting the Service takes its Endpoints and slices.
    s.ok(&["delete", "service", "web", "-n", "ep1"]);
    assert!(eventually(LONG, || ep(&s).is_null()), "endpoints left: {}", ep(&s));
    assert!(eventually(LONG, || slices_of(&s, "ep1", "web").is_empty()));
}

/// A foreground deletion through a circle of owners (cm1 owned by cm3, cm2 by cm1, cm3 by cm2,
/// every reference blocking) finishes: as upstream's collector, a dependent deleted for an owner
/// that waits, whose own dependent is already waiting too, first has its references made
/// non-blocking. Upstream's "Garbage collector should not be blocked by dependency circle".
#[test]
fn foreground_deletion_through_a_dependency_circle_finishes() {
    let s = server(Backend::Embedded);
    let ns = "default";
    let cm = |n: &str| format!("/api/v1/namespaces/{ns}/configmaps/{n}");
    for n in ["cm1", "cm2", "cm3"] {
        s.ok(&["create", "configmap", n, "-n", ns]);
    }
    let uid = |n: &str| s.get_json(&cm(n))["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    for (n, owner) in [("cm1", "cm3"), ("cm2", "cm1"), ("cm3", "cm2")] {
        let patch = json!({ "metadata": { "ownerReferences": [{ "apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid(owner), "controller": true, "blockOwnerDeletion": true }] } });
        let (code, out) = s.curl("PATCH", &cm(n), Auth::Admin, Some("application/merge-patch+json"), Some(patch.to_string().as_bytes()));
        assert_eq!(code, 200, "{out}");
    }
    let body = json!({ "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground", "preconditions": { "uid": uid("cm1") } });
    let (code, out) = s.curl("DELETE", &cm("cm1"), Auth::Admin, Some("application/json"), Some(body.to_string().as_bytes()));
    assert_eq!(code, 200, "{out}");
    assert!(
        eventually(LONG, || ["cm1", "cm2", "cm3"].iter().all(|n| s.get_json(&cm(n)).is_null())),
        "the circle is stuck: {:?}",
        ["cm1", "cm2", "cm3"].iter().map(|n| s.get_json(&cm(n))["metadata"].clone()).collect::<Vec<_>>()
    );
}

/// Dependents that also have a live owner survive the foreground deletion of their other owner:
/// they only lose the reference to it. Upstream's "Garbage collector should not delete
/// dependents that have both valid owner and owner that's waiting for dependents to be
/// deleted" (half of rc1's pods get rc2 as a second, non-controller owner by a strategic merge
/// patch; rc1 is deleted in the foreground).
#[test]
fn dependents_with_another_live_owner_survive_a_foreground_deletion() {
    let s = server(Backend::Embedded);
    let ns = "default";
    let rc = |name: &str, replicas: u32, app: &str| {
        json!({ "apiVersion": "v1", "kind": "ReplicationController", "metadata": { "name": name, "namespace": ns },
                "spec": { "replicas": replicas, "selector": { "app": app },
                          "template": { "metadata": { "labels": { "app": app } }, "spec": { "containers": [{ "name": "c", "image": IMG }] } } } })
        .to_string()
    };
    s.ok_stdin(&["create", "-f", "-"], Some(&rc("rc-to-be-deleted", 6, "deleted")));
    s.ok_stdin(&["create", "-f", "-"], Some(&rc("rc-to-stay", 0, "stay")));
    let rcs = |n: &str| format!("/api/v1/namespaces/{ns}/replicationcontrollers/{n}");
    let uid = |n: &str| s.get_json(&rcs(n))["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    assert!(eventually(LONG, || pods(&s, ns).len() == 6), "rc1 made no pods: {:?}", pods(&s, ns));
    let mut all: Vec<String> = pods(&s, ns).iter().map(name).collect();
    all.sort();
    let (shared, own) = all.split_at(3);
    let patch = json!({ "metadata": { "ownerReferences": [{ "apiVersion": "v1", "kind": "ReplicationController", "name": "rc-to-stay", "uid": uid("rc-to-stay") }] } });
    for p in shared {
        let (code, out) = s.curl("PATCH", &format!("/api/v1/namespaces/{ns}/pods/{p}"), Auth::Admin, Some("application/strategic-merge-patch+json"), Some(patch.to_string().as_bytes()));
        assert_eq!(code, 200, "{out}");
        let refs = serde_json::from_str::<Value>(&out).unwrap_or_default()["metadata"]["ownerReferences"].as_array().map(Vec::len);
        assert_eq!(refs, Some(2), "the patch merges by uid: {out}");
    }
    let body = json!({ "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground", "preconditions": { "uid": uid("rc-to-be-deleted") } });
    let (code, out) = s.curl("DELETE", &rcs("rc-to-be-deleted"), Auth::Admin, Some("application/json"), Some(body.to_string().as_bytes()));
    assert_eq!(code, 200, "{out}");
    assert!(eventually(LONG, || s.get_json(&rcs("rc-to-be-deleted")).is_null()), "rc1 is still there: {}", s.get_json(&rcs("rc-to-be-deleted")));
    // A moment for anything that would still act on the shared pods.
    std::thread::sleep(Duration::from_secs(5));
    let left = pods(&s, ns);
    let mut names: Vec<String> = left.iter().map(name).collect();
    names.sort();
    assert_eq!(names, shared, "only the pods rc2 also owns stay (rc1's own: {own:?}): {left:?}");
    for p in &left {
        assert!(p["metadata"]["deletionTimestamp"].is_null(), "{p}");
        let refs = p["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
        assert_eq!((refs.len(), refs[0]["name"].as_str()), (1, Some("rc-to-stay")), "{p}");
    }
}

/// The collector decides on an object's live ownerReferences, never on a cache that has not
/// seen the latest write: dependents that get a second, live owner while the collector is busy
/// deleting the dependents of their first owner (deleted in the foreground) survive, losing
/// only the reference to the first. What upstream's "Garbage collector should not delete
/// dependents that have both valid owner and owner that's waiting for dependents to be deleted"
/// met on a loaded node (its 27 patches land while the collector works through rc1's pods).
#[test]
fn dependents_given_a_live_owner_while_the_collector_works_survive() {
    let s = server(Backend::Embedded);
    let ns = "gcrace";
    s.ok(&["create", "namespace", ns]);
    let cm = |n: &str| format!("/api/v1/namespaces/{ns}/configmaps/{n}");
    s.ok(&["create", "configmap", "owner1", "-n", ns]);
    s.ok(&["create", "configmap", "owner2", "-n", ns]);
    let uid = |n: &str| s.get_json(&cm(n))["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let (uid1, uid2) = (uid("owner1"), uid("owner2"));
    const N: usize = 160;
    let deps: Vec<String> = (0..N).map(|i| format!("dep-{i:03}")).collect();
    let items: Vec<Value> = deps
        .iter()
        .map(|d| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": d, "namespace": ns,
            "ownerReferences": [{ "apiVersion": "v1", "kind": "ConfigMap", "name": "owner1", "uid": uid1, "controller": true, "blockOwnerDeletion": true }] } }))
        .collect();
    s.ok_stdin(&["create", "-f", "-"], Some(&json!({ "apiVersion": "v1", "kind": "List", "items": items }).to_string()));
    let body = json!({ "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground", "preconditions": { "uid": uid1 } });
    let (code, out) = s.curl("DELETE", &cm("owner1"), Auth::Admin, Some("application/json"), Some(body.to_string().as_bytes()));
    assert_eq!(code, 200, "{out}");
    // While the collector deletes owner1's dependents, every other one gets owner2 too (a
    // strategic merge patch adds the reference, as the upstream spec does).
    let patch = json!({ "metadata": { "ownerReferences": [{ "apiVersion": "v1", "kind": "ConfigMap", "name": "owner2", "uid": uid2 }] } }).to_string();
    let targets: Vec<&String> = deps.iter().step_by(2).collect();
    let patched: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = targets
            .chunks(targets.len().div_ceil(4))
            .map(|chunk| {
                let (s, patch) = (&s, &patch);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    for d in chunk {
                        let (code, out) = s.curl("PATCH", &cm(d), Auth::Admin, Some("application/strategic-merge-patch+json"), Some(patch.as_bytes()));
                        match code {
                            200 => done.push(d.to_string()),
                            // Collected before the patch came: fine.
                            404 => {}
                            _ => panic!("patching {d}: {code} {out}"),
                        }
                    }
                    done
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("patching thread")).collect()
    });
    assert!(!patched.is_empty(), "every dependent was gone before it could be patched: nothing was tested");
    assert!(eventually(LONG, || s.get_json(&cm("owner1")).is_null()), "owner1 is still there: {}", s.get_json(&cm("owner1")));
    let left: Vec<Value> = s.items(&format!("/api/v1/namespaces/{ns}/configmaps")).into_iter().filter(|c| name(c).starts_with("dep-")).collect();
    let mut names: Vec<String> = left.iter().map(name).collect();
    names.sort();
    let lost: Vec<&String> = patched.iter().filter(|p| !names.contains(p)).collect();
    assert!(lost.is_empty(), "{} of the {} dependents given a live second owner were deleted: {lost:?}", lost.len(), patched.len());
    for c in &left {
        assert!(c["metadata"]["deletionTimestamp"].is_null(), "{c}");
        assert!(patched.contains(&name(c)), "a dependent of owner1 alone survived: {c}");
        let refs = c["metadata"]["ownerReferences"].as_array().cloned().unwrap_or_default();
        assert!(eventually(LONG, || {
            let refs = s.get_json(&cm(&name(c)))["metadata"]["ownerReferences"].clone();
            refs.as_array().map(|r| r.len() == 1 && r[0]["uid"] == uid2.as_str()).unwrap_or(false)
        }), "still refers to owner1: {refs:?}");
    }
}

/// A delete that names no propagation policy takes the kind's default, as upstream's
/// `DefaultGarbageCollectionPolicy`: core/v1 ReplicationControllers and batch/v1 Jobs orphan
/// their pods (upstream's "Garbage collector should orphan pods created by rc if
/// deleteOptions.OrphanDependents is nil"), a ReplicaSet's pods go; Events never get a
/// garbage-collection finalizer, even when asked for the foreground.
#[test]
fn deletes_without_a_policy_follow_each_kinds_default() {
    let s = server(Backend::Embedded);
    let ns = "gcdefault";
    s.ok(&["create", "namespace", ns]);
    let template = |app: &str| json!({ "metadata": { "labels": { "app": app } }, "spec": { "containers": [{ "name": "c", "image": IMG }] } });
    let rc = json!({ "apiVersion": "v1", "kind": "ReplicationController", "metadata": { "name": "rc", "namespace": ns },
                     "spec": { "replicas": 2, "selector": { "app": "rc" }, "template": template("rc") } });
    let rs = json!({ "apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": { "name": "rs", "namespace": ns },
                     "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "rs" } }, "template": template("rs") } });
    let mut jt = template("job");
    jt["spec"]["restartPolicy"] = json!("Never");
    let job = json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "job", "namespace": ns }, "spec": { "parallelism": 2, "completions": 2, "template": jt } });
    for o in [&rc, &rs, &job] {
        s.ok_stdin(&["create", "-f", "-"], Some(&o.to_string()));
    }
    let of = |app: &str| pods(&s, ns).into_iter().filter(|p| p["metadata"]["labels"]["app"] == app).collect::<Vec<_>>();
    assert!(eventually(LONG, || ["rc", "rs", "job"].iter().all(|a| of(a).len() == 2)), "pods: {:?}", pods(&s, ns).iter().map(name).collect::<Vec<_>>());
    let paths = [
        ("rc", format!("/api/v1/namespaces/{ns}/replicationcontrollers/rc")),
        ("rs", format!("/apis/apps/v1/namespaces/{ns}/replicasets/rs")),
        ("job", format!("/apis/batch/v1/namespaces/{ns}/jobs/job")),
    ];
    for (_, path) in &paths {
        // No body at all, as a client's plain DELETE; the same as DeleteOptions with neither field.
        let (code, out) = s.curl("DELETE", path, Auth::Admin, None, None);
        assert_eq!(code, 200, "{out}");
        assert!(eventually(LONG, || s.get_json(path).is_null()), "{path} is still there: {}", s.get_json(path));
    }
    assert!(eventually(LONG, || of("rs").is_empty()), "the ReplicaSet's pods stay: {:?}", of("rs"));
    std::thread::sleep(Duration::from_secs(3));
    for app in ["rc", "job"] {
        let left = of(app);
        assert_eq!(left.len(), 2, "the {app}'s pods were not orphaned: {left:?}");
        for p in &left {
            assert!(p["metadata"]["deletionTimestamp"].is_null() && controller_ref(p).is_none(), "{p}");
        }
    }
    // Events: no finalizer, gone at once whatever the policy.
    let ev = json!({ "apiVersion": "v1", "kind": "Event", "metadata": { "name": "e1", "namespace": ns }, "involvedObject": { "kind": "Pod", "name": "x", "namespace": ns }, "reason": "R", "message": "m", "type": "Normal" });
    s.ok_stdin(&["create", "-f", "-"], Some(&ev.to_string()));
    let body = json!({ "kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground" }).to_string();
    let (code, out) = s.curl("DELETE", &format!("/api/v1/namespaces/{ns}/events/e1"), Auth::Admin, Some("application/json"), Some(body.as_bytes()));
    assert_eq!(code, 200, "{out}");
    assert!(s.get_json(&format!("/api/v1/namespaces/{ns}/events/e1")).is_null(), "the event waits for a finalizer");
}

/// The pod garbage collector, as kube-controller-manager's podgc: terminated pods above
/// `--terminated-pod-gc-threshold` (evicted first, then the oldest), pods of a node that was
/// deleted (after the 40 s quarantine: marked Failed with a DisruptionTarget condition, then
/// force-deleted) and a terminating pod that was never scheduled.
#[test]
fn pod_gc_collects_terminated_pods_over_the_threshold_orphans_and_unscheduled_terminating_pods() {
    let s = ApiServer::start_opts(Backend::Embedded, Options { controllers: true, extra: vec!["--terminated-pod-gc-threshold".into(), "2".into()], ..Options::default() });
    let stays = common::simnode::SimNode::start(&s, "sim-gc-stays");
    let goes = common::simnode::SimNode::start(&s, "sim-gc-goes");
    s.ok(&["create", "namespace", "pgc"]);
    let pod = |name: &str, node: Option<&str>, finalizer: bool| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "pgc"}, "spec": {"containers": [{"name": "c", "image": IMG}]}});
        match node {
            Some(n) => p["spec"]["nodeName"] = json!(n),
            None => p["spec"]["nodeSelector"] = json!({"strata.test/nowhere": "true"}),
        }
        if finalizer {
            p["metadata"]["finalizers"] = json!(["strata.test/hold"]);
        }
        s.ok_stdin(&["create", "-f", "-"], Some(&p.to_string()));
    };
    let exists = |name: &str| s.kubectl(&["get", "pod", "-n", "pgc", name]).status.success();
    let get = |name: &str| -> Value { serde_json::from_str(&s.ok(&["get", "pod", "-n", "pgc", name, "-o", "json"])).expect("pod json") };
    let set_status = |name: &str, status: Value| {
        s.ok(&["patch", "pod", "-n", "pgc", name, "--subresource=status", "--type=merge", "-p", &json!({"status": status}).to_string()]);
    };
    // Four terminated pods (the newest evicted) and a running one, on a node that stays.
    for n in ["t1", "t2", "t3", "t4", "live"] {
        pod(n, Some(&stays.name), false);
    }
    assert!(eventually(LONG, || get("live")["status"]["phase"] == "Running"), "{}", get("live"));
    for n in ["t1", "t2", "t3"] {
        set_status(n, json!({"phase": "Succeeded"}));
    }
    set_status("t4", json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}));
    // Threshold 2: the evicted one and the oldest go.
    assert!(eventually(LONG, || !exists("t4") && !exists("t1")), "t1 and t4 are still there: {}", s.ok(&["get", "pods", "-n", "pgc"]));
    for n in ["t2", "t3", "live"] {
        assert!(exists(n), "{n} was collected: {}", s.ok(&["get", "pods", "-n", "pgc"]));
    }
    assert_eq!(get("live")["status"]["phase"], "Running");
    // Out of the way: the next pods become terminated too and would count against the threshold.
    s.ok(&["delete", "pod", "-n", "pgc", "t2", "t3", "--grace-period=0", "--force"]);

    // A pod on a node that is deleted, and a terminating pod never scheduled (both held by a
    // finalizer, so what the collector did stays visible).
    pod("orphan", Some(&goes.name), true);
    pod("floating", None, true);
    assert!(eventually(LONG, || get("orphan")["status"]["phase"] == "Running"), "{}", get("orphan"));
    drop(goes);
    s.ok(&["delete", "node", "sim-gc-goes"]);
    let node_deleted = std::time::Instant::now();
    s.ok(&["delete", "pod", "-n", "pgc", "floating", "--wait=false"]);
    let floating = eventually(LONG, || get("floating")["status"]["phase"] == "Failed");
    assert!(floating, "the unscheduled terminating pod was not collected: {}", get("floating"));
    // Not before the quarantine (40 s), then within a few collector periods (20 s).
    let collected = eventually(Duration::from_secs(150), || get("orphan")["metadata"]["deletionTimestamp"].is_string());
    let orphan = get("orphan");
    assert!(collected, "the orphan was not collected: {orphan}");
    assert!(node_deleted.elapsed() >= Duration::from_secs(35), "collected before the quarantine: {:?}", node_deleted.elapsed());
    assert_eq!(orphan["status"]["phase"], "Failed", "{orphan}");
    let cond = orphan["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "DisruptionTarget").cloned()).unwrap_or(Value::Null);
    assert_eq!(cond["status"], "True", "{orphan}");
    assert_eq!(cond["reason"], "DeletionByPodGC", "{orphan}");
    assert_eq!(cond["message"], "PodGC: node no longer exists", "{orphan}");
    assert_eq!(orphan["metadata"]["deletionGracePeriodSeconds"], 0, "{orphan}");
    for n in ["orphan", "floating"] {
        s.ok(&["patch", "pod", "-n", "pgc", n, "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
        assert!(eventually(LONG, || !exists(n)), "{n} stays after its finalizer went");
    }
    assert!(exists("live"), "the running pod was collected");
}

/// A stock kube-controller-manager (k8s.io/kubernetes v1.32.0, built from the Go module proxy
/// by scripts/kube-peer.sh, cached) on strata's API server with strata's own controllers off,
/// running all its controllers (every informer they start lists and watches without error):
/// its Deployment and ReplicaSet controllers make a Deployment's ReplicaSet and pods, and its
/// garbage collector — whose graph is fed by metadata informers, `PartialObjectMetadata` lists
/// and watches of every deletable resource strata serves, all of which must sync before it acts
/// — deletes dependents in the background and in the foreground, and orphans them (patching
/// their ownerReferences through the metadata client).
#[test]
fn a_stock_kube_controller_manager_manages_workloads_through_strata() {
    let Some(bin) = common::stock_component("kube-controller-manager", "KUBE_CONTROLLER_MANAGER") else { return };
    let s = ApiServer::start(Backend::Embedded);
    let log_path = s.data_dir().join("kube-controller-manager.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let child = Command::new(&bin)
        .arg("--kubeconfig")
        .arg(s.kubeconfig())
        // Every controller it has, so that each informer it starts must sync against strata.
        .args(["--controllers=*", "--leader-elect=false", "--secure-port=0", "--v=2"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("kube-controller-manager");
    let _kcm = common::Killed(child);
    let kcm_log = || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        log.lines().filter(|l| l.starts_with('E') || l.starts_with('W') || l.contains("garbage")).take(30).collect::<Vec<_>>().join("\n")
    };
    let of = |app: &str| -> Vec<Value> { pods(&s, "default").into_iter().filter(|p| p["metadata"]["labels"]["app"] == app).collect() };
    let sets = |app: &str| -> Vec<Value> { replicasets(&s, "default").into_iter().filter(|r| r["metadata"]["labels"]["app"] == app).collect() };
    let made = |app: &str, n: usize| {
        s.ok(&["create", "deployment", app, &format!("--image={IMG}"), &format!("--replicas={n}")]);
        assert!(eventually(LONG, || of(app).len() == n), "{app}: {} pods\n{}", of(app).len(), kcm_log());
    };

    made("web", 3);
    let rs = sets("web");
    assert_eq!(rs.len(), 1, "{rs:?}");
    let owner = controller_ref(&rs[0]).unwrap_or_default();
    assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("Deployment"), Some("web")), "{owner}");
    for p in of("web") {
        let owner = controller_ref(&p).unwrap_or_default();
        assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("ReplicaSet"), Some(name(&rs[0]).as_str())), "{p}");
    }
    // Background: the Deployment goes at once, the collector removes the rest.
    s.ok(&["delete", "deployment", "web"]);
    assert!(eventually(LONG, || sets("web").is_empty() && of("web").is_empty()), "left: {:?} {:?}\n{}", sets("web"), of("web"), kcm_log());

    // Foreground: the Deployment stays (foregroundDeletion) until its dependents are gone.
    made("fg", 2);
    s.ok(&["delete", "deployment", "fg", "--cascade=foreground", "--wait=false"]);
    let gone = || s.get_json("/apis/apps/v1/namespaces/default/deployments/fg").is_null();
    assert!(eventually(LONG, || gone() && sets("fg").is_empty() && of("fg").is_empty()), "left: {:?} {:?}\n{}", sets("fg"), of("fg"), kcm_log());

    // Orphan: the ReplicaSet outlives the Deployment, then its pods outlive it, their
    // ownerReferences patched away.
    made("orph", 2);
    s.ok(&["delete", "deployment", "orph", "--cascade=orphan"]);
    assert!(eventually(LONG, || sets("orph").first().is_some_and(|r| r["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty))), "{:?}\n{}", sets("orph"), kcm_log());
    let rs = name(&sets("orph")[0]);
    s.ok(&["delete", "replicaset", &rs, "--cascade=orphan"]);
    assert!(
        eventually(LONG, || sets("orph").is_empty() && of("orph").iter().all(|p| p["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty))),
        "{:?} {:?}\n{}",
        sets("orph"),
        of("orph"),
        kcm_log()
    );
    assert_eq!(of("orph").len(), 2, "orphaned pods were deleted");
    // No informer of any of its controllers failed to list or watch a kind.
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("failed to list") || l.contains("Failed to watch")).collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
