//! End-to-end tests of `strata server` with real clients: the preinstalled `kubectl`, curl,
//! and the Python `kubernetes` client (from PyPI).

mod common;

on_both_backends!(system_namespaces_and_discovery, pod_binding_assigns_a_node_once, apply_edit_patch_scale_delete_with_kubectl, watch_streams_added_modified_deleted, python_client_pagination_conflicts_watch, rbac_allows_and_denies, bad_input_gets_kubernetes_errors_and_stores_nothing, restart_keeps_everything_and_kill9_loses_no_acknowledged_write);

use std::io::BufRead;
use std::time::Duration;

use common::eventually;
use common::server::{ApiServer, Auth, Backend};

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox
        command: ["httpd", "-f"]
        env: [{name: A, value: "1"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {mode: fast}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {password: hunter2}
---
apiVersion: batch/v1
kind: Job
metadata: {name: once}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: once, image: busybox, command: ["true"]}]
"#;

fn system_namespaces_and_discovery(backend: Backend) {
    let s = ApiServer::start(backend);
    let ns = s.ok(&["get", "ns", "-o", "name"]);
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.contains(&format!("namespace/{want}")), "{ns}");
    }
    let resources = s.ok(&["api-resources"]);
    for want in ["deployments", "virtualmachines", "clusterrolebindings", "leases", "endpointslices"] {
        assert!(resources.contains(want), "{want} missing from api-resources:\n{resources}");
    }
    assert!(s.ok(&["version", "-o", "json"]).contains("v1.32.0"));
    let explain = s.ok(&["explain", "deployment.spec.template.spec.containers"]);
    assert!(explain.contains("KIND:       Deployment") && explain.contains("image\t<string>"), "{explain}");
    let (code, _) = s.curl("GET", "/healthz", Auth::Anonymous, None, None);
    assert_eq!(code, 200);
}

fn apply_edit_patch_scale_delete_with_kubectl(backend: Backend) {
    let s = ApiServer::start(backend);
    let out = s.ok_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT));
    for want in ["deployment.apps/web created", "service/web created", "configmap/settings created", "secret/creds created", "job.batch/once created"] {
        assert!(out.contains(want), "{out}");
    }
    // Re-apply with a change: a three-way strategic merge computed by kubectl.
    let changed = DEPLOYMENT.replace("replicas: 2", "replicas: 4").replace("value: \"1\"", "value: \"2\"");
    let out = s.ok_stdin(&["apply", "-f", "-"], Some(&changed));
    assert!(out.contains("deployment.apps/web configured") && out.contains("configmap/settings unchanged"), "{out}");
    assert_eq!(s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.generation} {.spec.template.spec.containers[0].env[0].value}"]), "4 2 2");

    s.ok(&["label", "cm", "settings", "tier=backend"]);
    s.ok(&["annotate", "cm", "settings", "owner=ops"]);
    s.ok(&["patch", "cm", "settings", "--type", "merge", "-p", r#"{"data":{"extra":"yes"}}"#]);
    s.ok(&["patch", "cm", "settings", "--type", "json", "-p", r#"[{"op":"replace","path":"/data/mode","value":"slow"}]"#]);
    s.ok(&["patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:1.36"}]}}}}"#]);
    assert_eq!(s.ok(&["get", "cm", "settings", "-o", "jsonpath={.metadata.labels.tier} {.metadata.annotations.owner} {.data.extra} {.data.mode}"]), "backend ops yes slow");
    assert_eq!(s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].command[0]}"]), "busybox:1.36 httpd");
    // The secret's stringData became base64 data.
    assert_eq!(s.ok(&["get", "secret", "creds", "-o", "jsonpath={.data.password}"]), "aHVudGVyMg==");

    s.ok(&["scale", "deploy", "web", "--replicas", "7"]);
    assert_eq!(s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "7");

    // kubectl edit with a non-interactive editor.
    let editor = s.data_dir().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/mode: slow/mode: edited/' \"$1\"\n").expect("editor");
    std::process::Command::new("chmod").arg("+x").arg(&editor).status().expect("chmod");
    let out = std::process::Command::new("kubectl")
        .args(["edit", "cm", "settings"])
        .env("KUBECONFIG", s.kubeconfig())
        .env("KUBE_EDITOR", &editor)
        .output()
        .expect("edit");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.mode}"]), "edited");

    let table = s.ok(&["get", "deploy,svc,cm,secrets,jobs", "-A", "-o", "wide"]);
    for want in ["deployment.apps/web", "service/web", "configmap/settings", "secret/creds", "job.batch/once"] {
        assert!(table.contains(want), "{table}");
    }
    let out = s.ok_stdin(&["delete", "-f", "-"], Some(DEPLOYMENT));
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    assert!(s.ok(&["get", "deploy,svc,cm,secrets,jobs", "-o", "name"]).trim().is_empty());
}

fn watch_streams_added_modified_deleted(backend: Backend) {
    let s = ApiServer::start(backend);
    let mut w = std::process::Command::new("kubectl")
        .args(["get", "cm", "-w", "--output-watch-events"])
        .env("KUBECONFIG", s.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("watch");
    let stdout = w.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(800));
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: watched}\ndata: {a: '1'}\n"));
    s.ok(&["patch", "cm", "watched", "--type", "merge", "-p", r#"{"data":{"a":"2"}}"#]);
    s.ok(&["delete", "cm", "watched"]);
    let mut events = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while events.len() < 3 && std::time::Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first() != Some(&"EVENT") {
                events.push(f[..2.min(f.len())].join(" "));
            }
        }
    }
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(events, ["ADDED watched", "MODIFIED watched", "DELETED watched"]);
}

fn python_client_pagination_conflicts_watch(backend: Backend) {
    let s = ApiServer::start(backend);
    assert_eq!(s.python("pagination_conflict.py", &[]).trim(), "ok");
    // kubectl pages too (--chunk-size) and sees everything.
    let s2 = s.ok(&["get", "ns", "--chunk-size", "1", "-o", "name"]);
    assert_eq!(s2.lines().count(), 4, "{s2}");
}

fn rbac_allows_and_denies(backend: Backend) {
    let dir = tempfile::tempdir().expect("tmp");
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "alice-token,alice,1001,\"dev\"\n").expect("tokens");
    let s = ApiServer::start_with(backend, &["--token-file", tokens.to_str().expect("path")]);
    s.ok_stdin(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"));
    s.ok_stdin(&["apply", "-f", "-"], Some(r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-reader, namespace: team}
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-reads, namespace: team}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
roleRef: {kind: Role, name: cm-reader, apiGroup: rbac.authorization.k8s.io}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: visible, namespace: team}
"#));
    let alice = Auth::Token("alice-token");
    let (code, body) = s.curl("GET", "/api/v1/namespaces/team/configmaps", alice, None, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("visible"));
    let (code, body) = s.curl("GET", "/api/v1/namespaces/default/configmaps", alice, None, None);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("\"reason\":\"Forbidden\"") && body.contains("User \\\"alice\\\" cannot list resource \\\"configmaps\\\""), "{body}");
    let (code, _) = s.curl("POST", "/api/v1/namespaces/team/configmaps", alice, Some("application/json"), Some(br#"{"metadata":{"name":"nope"}}"#));
    assert_eq!(code, 403, "alice may not create");
    let (code, body) = s.curl("GET", "/api/v1/namespaces/team/configmaps", Auth::Anonymous, None, None);
    assert_eq!(code, 401, "{body}");
    let (code, _) = s.curl("GET", "/api/v1/namespaces/team/configmaps", Auth::Token("wrong"), None, None);
    assert_eq!(code, 401);
    assert!(!s.ok(&["get", "cm", "-n", "team", "-o", "name"]).contains("nope"));
}

fn bad_input_gets_kubernetes_errors_and_stores_nothing(backend: Backend) {
    let s = ApiServer::start(backend);
    let post = |path: &str, ct: &str, body: &[u8]| s.curl("POST", path, Auth::Admin, Some(ct), Some(body));
    let cms = "/api/v1/namespaces/default/configmaps";
    let (code, body) = post(cms, "application/json", b"{not json");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"kind\":\"Status\"") && body.contains("BadRequest"));
    let (code, body) = post(cms, "application/json", br#"{"metadata":{"name":"Bad_Name"}}"#);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("metadata.name: Invalid value: \\\"Bad_Name\\\""), "{body}");
    let (code, _) = post("/api/v1/namespaces/default/widgets", "application/json", b"{}");
    assert_eq!(code, 404);
    let (code, body) = post(cms, "text/plain", br#"{"metadata":{"name":"plain"}}"#);
    assert_eq!(code, 415, "{body}");
    let big = format!(r#"{{"metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#, "a".repeat(10 * 1024 * 1024));
    let (code, body) = post(cms, "application/json", big.as_bytes());
    assert_eq!(code, 413, "{body}");
    let (code, body) = post("/apis/apps/v1/namespaces/default/deployments", "application/json", br#"{"metadata":{"name":"nosel"},"spec":{"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#);
    assert_eq!(code, 422);
    assert!(body.contains("Deployment.apps \\\"nosel\\\" is invalid") && body.contains("spec.selector: Required value"), "{body}");
    let (code, _) = post(cms, "application/json", br#"{"kind":"Secret","metadata":{"name":"x"}}"#);
    assert_eq!(code, 400);
    let (code, body) = post("/api/v1/namespaces/missing/configmaps", "application/json", br#"{"metadata":{"name":"x"}}"#);
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("namespaces \\\"missing\\\" not found"));
    // Unknown fields: kubectl asks for Strict validation and gets the server's error.
    let typo = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: typo, lables: {a: b}}\ndtaa: {a: b}\n";
    let err = s.fails(&["apply", "-f", "-"], Some(typo));
    assert!(err.contains("strict decoding error: unknown field \"dtaa\", unknown field \"metadata.lables\""), "{err}");
    let out = s.kubectl_stdin(&["apply", "--validate=warn", "-f", "-"], Some(typo));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Warning: unknown field \"dtaa\""));
    s.ok(&["delete", "cm", "typo"]);
    // An unknown kind is refused (kubectl cannot map it; the message is kubectl's own).
    s.fails(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n"));
    assert!(s.ok(&["get", "cm", "-o", "name"]).trim().is_empty(), "nothing was stored");
    // Duplicate create: AlreadyExists.
    post(cms, "application/json", br#"{"metadata":{"name":"once"}}"#);
    let (code, body) = post(cms, "application/json", br#"{"metadata":{"name":"once"}}"#);
    assert_eq!(code, 409);
    assert!(body.contains("AlreadyExists"));
}

fn restart_keeps_everything_and_kill9_loses_no_acknowledged_write(backend: Backend) {
    let mut s = ApiServer::start(backend);
    s.ok_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT));
    s.restart(false);
    let names = s.ok(&["get", "deploy,svc,cm,secret,job", "-o", "name"]);
    assert_eq!(names.lines().count(), 5, "{names}");

    // A burst of creates from 8 client threads; kill -9 the server in the middle.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/burst.py");
    let mut burst = std::process::Command::new("python3")
        .arg(script)
        .arg("8")
        .env("KUBECONFIG", s.kubeconfig())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("burst");
    let out = burst.stdout.take().expect("stdout");
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let a2 = acked.clone();
    let reader = std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            a2.lock().expect("lock").push(l);
        }
    });
    assert!(eventually(Duration::from_secs(30), || acked.lock().expect("lock").len() >= 300), "burst made progress");
    s.stop(true);
    let _ = burst.wait();
    let _ = reader.join();
    let acked = acked.lock().expect("lock").clone();
    s.restart(false);
    let stored = s.ok(&["get", "cm", "-o", "name"]);
    let missing: Vec<&String> = acked.iter().filter(|n| !stored.contains(&format!("configmap/{n}\n"))).collect();
    assert!(missing.is_empty(), "{} acknowledged creates lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
}

fn pod_binding_assigns_a_node_once(backend: Backend) {
    let s = ApiServer::start(backend);
    s.ok_stdin(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox}]\n"));
    assert_eq!(s.ok(&["get", "pod", "p", "-o", "jsonpath={.status.phase}|{.spec.nodeName}"]), "Pending|");
    let bind = |node: &str| {
        let body = format!(r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"p"}},"target":{{"kind":"Node","name":"{node}"}}}}"#);
        s.curl("POST", "/api/v1/namespaces/default/pods/p/binding", Auth::Admin, Some("application/json"), Some(body.as_bytes()))
    };
    let (code, body) = bind("node-a");
    assert_eq!(code, 201, "{body}");
    assert_eq!(s.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]), "node-a");
    let (code, body) = bind("node-b");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already assigned to node"), "{body}");
    // Defaults were applied on create.
    assert_eq!(s.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.restartPolicy}{.spec.containers[0].imagePullPolicy}"]), "AlwaysAlways");
}
