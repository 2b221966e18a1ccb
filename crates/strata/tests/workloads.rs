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
use common::server::{ApiServer, Auth, Backend, Options};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(90);

fn get_json(s: &ApiServer, path: &str) -> Value {
    let (code, body) = s.curl("GET", path, Auth::Admin, None, None);
    assert!(code == 200 || code == 404, "GET {path}: {code} {body}");
    if code == 404 {
        return Value::Null;
    }
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

fn items(s: &ApiServer, path: &str) -> Vec<Value> {
    get_json(s, path)["items"].as_array().cloned().unwrap_or_default()
}

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
    let got = get_json(&s, "/apis/apps/v1/namespaces/cr1/controllerrevisions/web-2");
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
    assert_eq!(get_json(&s, "/apis/apps/v1/namespaces/cr1/controllerrevisions/web-1")["revision"], 3);
    s.ok(&["delete", "controllerrevision", "web-1", "web-2", "-n", "cr1"]);
    assert!(items(&s, "/apis/apps/v1/namespaces/cr1/controllerrevisions").is_empty());
}
