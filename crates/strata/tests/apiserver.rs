//! End-to-end tests of `strata server` with real clients: the preinstalled `kubectl`, curl,
//! and the Python `kubernetes` client (from PyPI).

mod common;

on_both_backends!(
    system_namespaces_and_discovery,
    pod_binding_assigns_a_node_once,
    apply_edit_patch_scale_delete_with_kubectl,
    watch_streams_added_modified_deleted,
    python_client_pagination_conflicts_watch,
    rbac_allows_and_denies,
    bad_input_gets_kubernetes_errors_and_stores_nothing,
    restart_keeps_everything_and_kill9_loses_no_acknowledged_write,
    openapi_v2_serves_kubectl_and_python,
    resource_version_semantics_of_get_and_list,
    paginated_lists_are_snapshots_or_expire,
    strategic_patches_merge_finalizers,
    server_side_apply_merges_prunes_and_conflicts,
    server_side_apply_options_and_update_managers,
);

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
    // Upstream's required fields are published (kubectl marks them).
    let explain = s.ok(&["explain", "deployment.spec"]);
    assert!(explain.lines().any(|l| l.trim_start().starts_with("selector\t") && l.contains("-required-")), "{explain}");
    let explain = s.ok(&["explain", "--output=plaintext-openapiv2", "deployment.spec"]);
    assert!(explain.lines().any(|l| l.trim_start().starts_with("template\t") && l.contains("-required-")), "{explain}");
    // The review kinds are described too (create-only kinds, in v3 and v2).
    for output in ["plaintext", "plaintext-openapiv2"] {
        let explain = s.ok(&["explain", &format!("--output={output}"), "selfsubjectaccessreview.spec.resourceAttributes"]);
        let kind = explain.lines().any(|l| l.starts_with("KIND:") && l.ends_with(" SelfSubjectAccessReview"));
        assert!(kind && explain.contains("verb\t<string>"), "{explain}");
    }
    let (code, _) = s.curl("GET", "/healthz", Auth::Anonymous, None, None);
    assert_eq!(code, 200);
    // The health checks, one by one as kube-apiserver lists them.
    let ready = s.ok(&["get", "--raw", "/readyz?verbose"]);
    assert_eq!(ready.lines().last(), Some("readyz check passed"), "{ready}");
    for check in ["[+]ping ok", "[+]etcd ok", "[+]etcd-readiness ok", "[+]autoregister-completion ok"] {
        assert!(ready.lines().any(|l| l == check), "{check}: {ready}");
    }
    assert_eq!(s.ok(&["get", "--raw", "/livez/etcd"]), "ok");
    let live = s.ok(&["get", "--raw", "/livez?verbose&exclude=etcd"]);
    assert!(live.contains("[+]etcd excluded: ok\n") && live.ends_with("livez check passed\n"), "{live}");
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
    let left = s.ok(&["get", "deploy,svc,cm,secrets,jobs", "-o", "name"]);
    assert!(made_by_the_test(&left).is_empty(), "{left}");
}

/// The lines of `kubectl get -o name` output without the objects the cluster makes itself in
/// every `default` namespace (the `kubernetes` Service, the `kube-root-ca.crt` ConfigMap).
fn made_by_the_test(names: &str) -> Vec<&str> {
    names.lines().filter(|l| !matches!(l.trim(), "" | "service/kubernetes" | "configmap/kube-root-ca.crt")).collect()
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
    let err = s.fails(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n"));
    assert!(err.contains("no matches for kind \"Gizmo\" in version \"v1\""), "{err}");
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
    assert_eq!(made_by_the_test(&names).len(), 5, "{names}");

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
    // Logs and exec of a pod on no node fail as Kubernetes' do.
    for args in [&["logs", "p"][..], &["exec", "p", "--", "true"], &["logs", "p", "-c", "c"]] {
        let err = s.fails(args, None);
        assert!(err.contains("(BadRequest): pod p does not have a host assigned"), "{args:?}: {err}");
    }
    let err = s.fails(&["logs", "p", "-c", "nope"], None);
    assert!(err.contains("container nope is not valid for pod p"), "{err}");
    let bind = |node: &str| {
        let body = format!(r#"{{"apiVersion":"v1","kind":"Binding","metadata":{{"name":"p"}},"target":{{"kind":"Node","name":"{node}"}}}}"#);
        s.curl("POST", "/api/v1/namespaces/default/pods/p/binding", Auth::Admin, Some("application/json"), Some(body.as_bytes()))
    };
    let (code, body) = bind("node-a");
    assert_eq!(code, 201, "{body}");
    assert_eq!(s.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.nodeName}"]), "node-a");
    // As upstream's binding storage: the pod is now PodScheduled=True.
    assert_eq!(s.ok(&["get", "pod", "p", "-o", r#"jsonpath={.status.conditions[?(@.type=="PodScheduled")].status}"#]), "True");
    // On a node: its agent serves them (tests/streams.rs); a node that is not registered is
    // a 404 for the Node, as kube-apiserver answers.
    let err = s.fails(&["logs", "p"], None);
    assert!(err.contains(r#"nodes "node-a" not found"#), "{err}");
    let (code, body) = s.curl("GET", "/api/v1/namespaces/default/pods/p/log", Auth::Admin, None, None);
    assert_eq!(code, 404, "{body}");
    assert_eq!(json_of(&body)["reason"], "NotFound", "{body}");
    let (code, _) = s.curl("GET", "/api/v1/namespaces/default/pods/nope/log", Auth::Admin, None, None);
    assert_eq!(code, 404);
    let (code, body) = bind("node-b");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("already assigned to node"), "{body}");
    // Defaults were applied on create.
    assert_eq!(s.ok(&["get", "pod", "p", "-o", "jsonpath={.spec.restartPolicy}{.spec.containers[0].imagePullPolicy}"]), "AlwaysAlways");
    // A pod being deleted (held by a finalizer) is not bound, as upstream's binding refuses it.
    s.ok_stdin(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Pod\nmetadata: {name: q, finalizers: [example.com/hold]}\nspec:\n  containers: [{name: c, image: busybox}]\n"));
    s.ok(&["delete", "pod", "q", "--wait=false"]);
    let body = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"q"},"target":{"kind":"Node","name":"node-a"}}"#;
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/pods/q/binding", Auth::Admin, Some("application/json"), Some(body.as_bytes()));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("pod q is being deleted, cannot be assigned to a host"), "{body}");
    assert_eq!(s.ok(&["get", "pod", "q", "-o", "jsonpath={.spec.nodeName}"]), "");
    s.ok(&["patch", "pod", "q", "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
}

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn openapi_v2_serves_kubectl_and_python(backend: Backend) {
    let s = ApiServer::start(backend);
    // kubectl asks for the protobuf form; for a kind found in no OpenAPI document it validates
    // on the client with v2 (and lists CRDs), then fails to map the kind, with its own message.
    let gizmo = "apiVersion: v1\nkind: Gizmo\nmetadata: {name: g}\n";
    let err = s.fails(&["apply", "--validate=strict", "-f", "-"], Some(gizmo));
    assert!(err.contains("no matches for kind \"Gizmo\" in version \"v1\"") && !err.contains("openapi"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n"));
    assert!(err.contains("no matches for kind \"Widget\" in version \"example.com/v1\""), "{err}");
    // A `v1 List` is validated on the client against v2 (before v2 existed: "failed to
    // download openapi"), with upstream's message and definition names.
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: web}\n  spec:\n    selector: {matchLabels: {app: web}}\n    template:\n      metadata: {labels: {app: web}}\n      spec:\n        containers: [{name: web, image: busybox, ports: [{containerPort: 80}], resources: {limits: {cpu: 1}}}]\n- apiVersion: coordination.k8s.io/v1\n  kind: Lease\n  metadata: {name: l}\n  spec: {holderIdentity: me}\n";
    let err = s.fails(&["apply", "-f", "-"], Some(&list.replace("image: busybox", "imagee: busybox")));
    assert!(err.contains("ValidationError(Deployment.spec.template.spec.containers[0]): unknown field \"imagee\" in io.k8s.api.core.v1.Container"), "{err}");
    let out = s.ok_stdin(&["apply", "-f", "-"], Some(list));
    assert!(out.contains("deployment.apps/web created") && out.contains("lease.coordination.k8s.io/l created"), "{out}");
    // `explain` reads the v2 protobuf (definitions, references and the GVK extension).
    let explain = s.ok(&["explain", "--output=plaintext-openapiv2", "deployment.spec.template.spec.containers"]);
    assert!(explain.contains("KIND:     Deployment") && explain.contains("VERSION:  apps/v1") && explain.contains("image\t<string>"), "{explain}");
    let explain = s.ok(&["explain", "--output=plaintext-openapiv2", "cronjob.spec.jobTemplate.spec.template.spec.volumes.configMap"]);
    assert!(explain.contains("KIND:     CronJob") && explain.contains("defaultMode\t<integer>") && explain.contains("name\t<string>"), "{explain}");
    // The JSON form, read with the Python client.
    assert_eq!(s.python("openapi_v2.py", &[]).trim(), "ok");
    // Content negotiation and caching as kube-openapi does them.
    let (code, head, pb) = s.get_with_headers("/openapi/v2", &["Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf"]);
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("content-type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf"), "{head}");
    assert_eq!(&pb[..5], b"\x0a\x032.0", "field 1 of gnostic's Document is swagger = \"2.0\"");
    let etag = head.lines().find_map(|l| l.strip_prefix("etag: ")).expect("etag").trim().to_string();
    let (code, _, body) = s.get_with_headers("/openapi/v2", &["Accept: application/json", &format!("If-None-Match: {etag}")]);
    assert_eq!((code, body.len()), (304, 0));
    let (code, head, _) = s.get_with_headers("/openapi/v2", &["Accept: text/html"]);
    assert_eq!(code, 406, "{head}");
    let (code, _) = s.curl("GET", "/openapi/v2", Auth::Anonymous, None, None);
    assert_eq!(code, 403, "the document is for authenticated users (system:discovery), not anonymous ones");
}

fn resource_version_semantics_of_get_and_list(backend: Backend) {
    let mut s = ApiServer::start(backend);
    s.ok(&["create", "namespace", "rv"]);
    s.ok(&["create", "configmap", "a", "-n", "rv"]);
    let get = |path: &str| get_json(&s, path);
    let cms = "/api/v1/namespaces/rv/configmaps";
    let (_, a) = get(&format!("{cms}/a"));
    let rv_a: u64 = a["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("rv of a");
    s.ok(&["create", "configmap", "b", "-n", "rv"]);
    let (code, list) = get(cms);
    assert_eq!(code, 200);
    let now: u64 = list["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("list rv");
    assert!(now > rv_a);

    // get: "" and "0" read the latest; N is "not older than N"; a future N is 504.
    for q in ["", "?resourceVersion=", "?resourceVersion=0", &format!("?resourceVersion={rv_a}"), &format!("?resourceVersion={now}")] {
        let (code, obj) = get(&format!("{cms}/a{q}"));
        assert_eq!((code, obj["metadata"]["name"].as_str()), (200, Some("a")), "get{q}");
    }
    let (code, st) = get(&format!("{cms}/a?resourceVersion={}", now + 1000));
    assert_eq!((code, st["reason"].as_str()), (504, Some("Timeout")), "{st}");
    assert_eq!(st["message"], format!("Timeout: Too large resource version: {}, current: {now}", now + 1000));
    assert_eq!(st["details"]["causes"][0]["reason"], "ResourceVersionTooLarge");
    let (code, st) = get(&format!("{cms}/a?resourceVersion=abc"));
    assert_eq!(code, 400, "{st}");
    assert_eq!(st["message"], "invalid resource version: resourceVersion: Invalid value: \"abc\": strconv.ParseUint: parsing \"abc\": invalid syntax");

    // list: most recent, any, not older than, exact.
    let names = |l: &serde_json::Value| l["items"].as_array().map(|i| i.iter().map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>()).unwrap_or_default();
    for q in ["?resourceVersion=0", &format!("?resourceVersion={rv_a}"), &format!("?resourceVersion={rv_a}&resourceVersionMatch=NotOlderThan"), &format!("?resourceVersion={now}&resourceVersionMatch=Exact"), &format!("?resourceVersion={now}&limit=5")] {
        let (code, l) = get(&format!("{cms}{q}"));
        assert_eq!(code, 200, "list{q}: {l}");
        assert_eq!((names(&l), l["metadata"]["resourceVersion"].as_str()), (vec!["a".to_string(), "b".to_string()], Some(now.to_string().as_str())), "list{q}");
    }
    // Exact at an older revision (the legacy form too: a resourceVersion with a limit): the
    // state then, read from the store's history, though b was written since.
    for q in [format!("?resourceVersion={rv_a}&resourceVersionMatch=Exact"), format!("?resourceVersion={rv_a}&limit=1")] {
        let (code, l) = get(&format!("{cms}{q}"));
        assert_eq!(code, 200, "list{q}: {l}");
        assert_eq!((names(&l), l["metadata"]["resourceVersion"].as_str()), (vec!["a".to_string()], Some(rv_a.to_string().as_str())), "list{q}");
        assert_eq!(l["items"][0], a, "list{q}: a as it was");
        assert!(l["metadata"]["continue"].is_null(), "list{q}: nothing more at {rv_a}: {l}");
    }
    let (code, l) = get(&format!("{cms}?resourceVersion={}&resourceVersionMatch=Exact", rv_a - 1));
    assert_eq!((code, names(&l)), (200, Vec::<String>::new()), "before a was created: {l}");
    let (code, st) = get(&format!("{cms}?resourceVersion={}&resourceVersionMatch=NotOlderThan", now + 5));
    assert_eq!((code, st["reason"].as_str()), (504, Some("Timeout")), "{st}");

    // Invalid combinations: ValidateListOptions' 422s and the storage layer's 400s.
    let invalid = |q: &str, field_error: &str| {
        let (code, st) = get(&format!("{cms}?{q}"));
        assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")), "{q}: {st}");
        assert_eq!(st["message"], format!("ListOptions.meta.k8s.io \"\" is invalid: {field_error}"), "{q}");
        assert_eq!((st["details"]["kind"].as_str(), st["details"]["group"].as_str()), (Some("ListOptions"), Some("meta.k8s.io")));
    };
    invalid("resourceVersionMatch=NotOlderThan", "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided");
    invalid("resourceVersion=0&resourceVersionMatch=Exact", "resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"");
    invalid("resourceVersion=5&resourceVersionMatch=Latest", "resourceVersionMatch: Unsupported value: \"Latest\": supported values: \"Exact\", \"NotOlderThan\", \"\"");
    let (_, page) = get(&format!("{cms}?limit=1"));
    let token = page["metadata"]["continue"].as_str().expect("a continue token").to_string();
    invalid(&format!("continue={token}&resourceVersion={now}&resourceVersionMatch=Exact"), "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when continue is provided");
    let (code, st) = get(&format!("{cms}?continue={token}&resourceVersion={now}"));
    assert_eq!((code, st["message"].as_str()), (400, Some("specifying resource version is not allowed when using continue")));
    let (code, st) = get(&format!("{cms}?continue=bm90LWEtdG9rZW4"));
    assert_eq!(code, 400, "{st}");
    assert!(st["message"].as_str().is_some_and(|m| m.starts_with("invalid continue token: continue key is not valid")), "{st}");
    let (code, st) = get(&format!("{cms}?resourceVersion=-1"));
    assert_eq!(code, 400, "{st}");

    // Once the history is gone (etcd: a real compaction; embedded: more writes than its history
    // keeps), watches and exact lists from before are 410 Expired.
    s.ok(&["create", "configmap", "c", "-n", "rv"]);
    let (_, l) = get(cms);
    let latest: u64 = l["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("rv");
    match backend {
        Backend::Etcd => s.compact_etcd(latest),
        Backend::Embedded => s.outlive_embedded_history(),
    }
    let get = |path: &str| get_json(&s, path);
    // A watch from a revision gone is a watch (200) whose one event is an ERROR carrying the
    // 410 Status, as kube-apiserver's cacher answers (`newErrWatcher`): clients relist on that
    // event; kube-rs's watcher retries an HTTP 410 to the same revision forever.
    let (code, ev) = get(&format!("{cms}?watch=1&resourceVersion={rv_a}"));
    assert_eq!((code, ev["type"].as_str()), (200, Some("ERROR")), "{ev}");
    let st = &ev["object"];
    assert_eq!((st["kind"].as_str(), st["code"].as_i64(), st["reason"].as_str()), (Some("Status"), Some(410), Some("Expired")), "{st}");
    assert!(st["message"].as_str().is_some_and(|m| m.starts_with(&format!("too old resource version: {rv_a} ("))), "{st}");
    tokio::runtime::Runtime::new().expect("runtime").block_on(async {
        use futures_util::StreamExt;
        use strata_client::kube::Api;
        let client = strata_client::from_kubeconfig(&s.kubeconfig(), "expired-test").await.expect("client");
        let api: Api<strata_client::k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, "rv");
        let wp = strata_client::kube::api::WatchParams::default();
        let mut events = api.watch(&wp, &rv_a.to_string()).await.expect("the watch starts").boxed();
        match events.next().await {
            Some(Ok(strata_client::kube::api::WatchEvent::Error(e))) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
            other => panic!("not a 410 ERROR event: {other:?}"),
        }
        assert!(events.next().await.is_none(), "the stream ends after the error");
    });
    for q in [format!("?resourceVersion={rv_a}&resourceVersionMatch=Exact"), format!("?resourceVersion={latest}&limit=1")] {
        let (code, st) = get(&format!("{cms}{q}"));
        if backend == Backend::Etcd && q.contains(&latest.to_string()) {
            assert_eq!((code, names(&st).len()), (200, 1), "the compaction revision itself is still readable: {st}");
            continue;
        }
        assert_eq!((code, st["reason"].as_str(), st["message"].as_str()), (410, Some("Expired"), Some("The resourceVersion for the provided list is too old.")), "list{q}");
    }
    let (_, l) = get(cms);
    let now = l["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    let (code, l) = get(&format!("{cms}?resourceVersion={now}&resourceVersionMatch=Exact"));
    assert_eq!((code, names(&l)), (200, vec!["a".to_string(), "b".into(), "c".into()]), "{l}");
}

fn paginated_lists_are_snapshots_or_expire(backend: Backend) {
    let mut s = ApiServer::start(backend);
    s.ok(&["create", "namespace", "pages"]);
    for i in 0..7 {
        s.ok(&["create", "configmap", &format!("p{i}"), "-n", "pages", "--from-literal=v=1"]);
    }
    let get = |path: &str| get_json(&s, path);
    let cms = "/api/v1/namespaces/pages/configmaps";
    let names = |l: &serde_json::Value| l["items"].as_array().map(|i| i.iter().map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>()).unwrap_or_default();
    let items = |l: &serde_json::Value| l["items"].as_array().cloned().unwrap_or_default();
    // The state the pages must show, whole objects.
    let (_, full) = get(cms);
    let (code, first) = get(&format!("{cms}?limit=3"));
    assert_eq!((code, names(&first)), (200, vec!["p0".to_string(), "p1".into(), "p2".into()]));
    let rev = first["metadata"]["resourceVersion"].clone();
    assert_eq!(rev, full["metadata"]["resourceVersion"], "nothing was written in between");
    // The token is Kubernetes' own format: base64 of {"v","rv","start"}.
    let t1 = first["metadata"]["continue"].as_str().expect("token").to_string();
    // remainingItemCount: the objects after the page, in the page's state (upstream's etcd
    // count less the page).
    assert_eq!(first["metadata"]["remainingItemCount"], 4, "{first}");
    // With a selector the count would be a guess: upstream leaves it out.
    let (_, selected) = get(&format!("{cms}?limit=3&labelSelector=!nope"));
    assert_eq!((names(&selected).len(), selected["metadata"]["continue"].is_string()), (3, true), "{selected}");
    assert!(selected["metadata"].get("remainingItemCount").is_none(), "{selected}");

    // Writes between pages, all over the list: before the next page (p2a), in it (p4), in the
    // one after it (p6) and past the end (p7).
    s.ok(&["create", "configmap", "p2a", "-n", "pages"]);
    s.ok(&["patch", "configmap", "p4", "-n", "pages", "--type", "merge", "-p", r#"{"data":{"v":"2"}}"#]);
    s.ok(&["delete", "configmap", "p6", "-n", "pages"]);
    s.ok(&["create", "configmap", "p7", "-n", "pages"]);
    let (code, second) = get(&format!("{cms}?limit=3&continue={t1}"));
    assert_eq!((code, names(&second)), (200, vec!["p3".to_string(), "p4".into(), "p5".into()]), "{second}");
    assert_eq!(second["metadata"]["resourceVersion"], rev, "every page reports the first page's revision");
    assert_eq!(second["metadata"]["remainingItemCount"], 1, "counted in the snapshot (p2a and p7 came later, p6 is still there): {second}");
    let t2 = second["metadata"]["continue"].as_str().expect("token").to_string();
    let (code, third) = get(&format!("{cms}?limit=3&continue={t2}"));
    assert_eq!((code, names(&third)), (200, vec!["p6".to_string()]), "{third}");
    assert!(third["metadata"]["continue"].is_null(), "{third}");
    assert!(third["metadata"].get("remainingItemCount").is_none(), "the last page has none: {third}");
    // Together, exactly the state at the first page's revision: p4 unchanged, p6 still there,
    // neither p2a nor p7.
    let pages: Vec<serde_json::Value> = [&first, &second, &third].into_iter().flat_map(items).collect();
    assert_eq!(pages, items(&full));
    // An exact list at that revision says the same; the latest state has moved on.
    let (code, exact) = get(&format!("{cms}?resourceVersion={}&resourceVersionMatch=Exact", rev.as_str().expect("rv")));
    assert_eq!((code, items(&exact)), (200, items(&full)));
    let (_, now) = get(cms);
    assert_eq!(names(&now), ["p0", "p1", "p2", "p2a", "p3", "p4", "p5", "p7"]);
    // kubectl pages through the latest state and sees every object once.
    let listed = s.ok(&["get", "cm", "-n", "pages", "--chunk-size", "2", "-o", "name"]);
    assert_eq!(listed.lines().count(), 8, "{listed}");

    // Once the first page's revision is gone, its tokens expire: 410 Expired...
    let latest: u64 = now["metadata"]["resourceVersion"].as_str().and_then(|v| v.parse().ok()).expect("rv");
    match backend {
        Backend::Etcd => s.compact_etcd(latest),
        Backend::Embedded => s.outlive_embedded_history(),
    }
    let get = |path: &str| get_json(&s, path);
    let (code, st) = get(&format!("{cms}?limit=3&continue={t2}"));
    assert_eq!((code, st["reason"].as_str()), (410, Some("Expired")), "{st}");
    assert!(st["message"].as_str().is_some_and(|m| m.starts_with("The provided continue parameter is too old to display a consistent list result.")), "{st}");
    // ... with a token that continues at the latest revision, if the client wants that.
    let t3 = st["metadata"]["continue"].as_str().expect("inconsistent continue token").to_string();
    let (code, rest) = get(&format!("{cms}?limit=3&continue={t3}"));
    assert_eq!((code, names(&rest)), (200, vec!["p7".to_string()]));
    assert_ne!(rest["metadata"]["resourceVersion"], rev);
    // The first token is stale too; the Python client sees the 410 as an ApiException.
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "from kubernetes import client, config\nfrom kubernetes.client.rest import ApiException\nconfig.load_kube_config()\n\
             try:\n    client.CoreV1Api().list_namespaced_config_map('pages', limit=3, _continue='{t1}')\n    print('accepted')\n\
             except ApiException as e:\n    print(e.status, e.reason)\n"
        ))
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "410 Gone", "{}", String::from_utf8_lossy(&out.stderr));
}

/// metadata.finalizers is a set under strategic merge patch (`patchStrategy:"merge"`): kubectl
/// adds to it and removes from it with directives, and `apply` (which learns the strategy from
/// the OpenAPI schema) removes only what left the manifest.
fn strategic_patches_merge_finalizers(backend: Backend) {
    let s = ApiServer::start(backend);
    let finalizers = || s.ok(&["get", "cm", "fin", "-o", "jsonpath={.metadata.finalizers}"]);
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: fin, finalizers: [example.com/a]}\ndata: {k: v}\n"));
    s.ok(&["patch", "cm", "fin", "--type", "strategic", "-p", r#"{"metadata":{"finalizers":["example.com/b"]}}"#]);
    assert_eq!(finalizers(), r#"["example.com/b","example.com/a"]"#, "added, the existing one kept (after it, as upstream orders them)");
    s.ok(&["patch", "cm", "fin", "--type", "strategic", "-p", r#"{"metadata":{"finalizers":["example.com/a"]}}"#]);
    assert_eq!(finalizers(), r#"["example.com/b","example.com/a"]"#, "adding one already there changes nothing");
    s.ok(&["patch", "cm", "fin", "--type", "strategic", "-p", r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["example.com/b"]}}"#]);
    assert_eq!(finalizers(), r#"["example.com/a"]"#);
    // A merge patch still replaces the list.
    s.ok(&["patch", "cm", "fin", "--type", "merge", "-p", r#"{"metadata":{"finalizers":["example.com/c"]}}"#]);
    assert_eq!(finalizers(), r#"["example.com/c"]"#);

    // Client-side apply: a three-way patch with $setElementOrder and $deleteFromPrimitiveList.
    let manifest = |list: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: applied, finalizers: [{list}]}}\n");
    let applied = || s.ok(&["get", "cm", "applied", "-o", "jsonpath={.metadata.finalizers}"]);
    s.ok_stdin(&["apply", "-f", "-"], Some(&manifest("example.com/a, example.com/b")));
    // Someone else's finalizer, added outside the manifest.
    s.ok(&["patch", "cm", "applied", "--type", "strategic", "-p", r#"{"metadata":{"finalizers":["example.com/other"]}}"#]);
    s.ok_stdin(&["apply", "-f", "-"], Some(&manifest("example.com/a")));
    assert_eq!(applied(), r#"["example.com/other","example.com/a"]"#, "b left the manifest and the object; the other stays");
}

/// A GET as the admin: (HTTP status, JSON body).
fn get_json(s: &ApiServer, path: &str) -> (u16, serde_json::Value) {
    let (code, body) = s.curl("GET", path, Auth::Admin, None, None);
    (code, json_of(&body))
}

/// The server compacts the store's history periodically (as kube-apiserver compacts etcd; the
/// embedded store too, which otherwise bounds its history only by size), always keeping at
/// least one interval: a list at a revision from before the last-but-one tick expires (410), a
/// recent one still works. Upstream's [Slow] chunking conformance spec waits for this.
#[test]
fn etcd_history_is_compacted_periodically() {
    history_is_compacted_periodically(Backend::Etcd);
}

#[test]
fn embedded_history_is_compacted_periodically() {
    history_is_compacted_periodically(Backend::Embedded);
}

fn history_is_compacted_periodically(backend: Backend) {
    let s = ApiServer::start_with(backend, &["--etcd-compaction-interval", "1"]);
    s.ok(&["create", "configmap", "old"]);
    let (_, list) = get_json(&s, "/api/v1/namespaces/default/configmaps");
    let old_rv = list["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    let exact = |rv: &str| get_json(&s, &format!("/api/v1/namespaces/default/configmaps?resourceVersion={rv}&resourceVersionMatch=Exact")).0;
    assert_eq!(exact(&old_rv), 200, "a fresh revision is readable");
    // Writes after it; within a few intervals the compactor has passed it.
    for i in 0..3 {
        s.ok(&["create", "configmap", &format!("new{i}")]);
    }
    assert!(eventually(Duration::from_secs(15), || exact(&old_rv) == 410), "the old revision was compacted away");
    // The latest revision is still readable (history of at least one interval is kept).
    let (_, list) = get_json(&s, "/api/v1/namespaces/default/configmaps");
    let now_rv = list["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    assert_eq!(exact(&now_rv), 200);
    assert_eq!(list["items"].as_array().map(Vec::len), Some(4));
}

/// A Deployment for server-side apply; `extras` adds a `tier` label and an env var `B`.
fn ssa_deployment(replicas: u32, image: &str, extras: bool) -> String {
    let (label, env) = if extras { (", tier: db", "        - {name: B, value: \"2\"}\n") } else { ("", "") };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  labels: {{app: web{label}}}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n        ports: [{{containerPort: 80}}]\n        env:\n        - {{name: A, value: \"1\"}}\n{env}"
    )
}

/// (manager, operation, subresource) of each managedFields entry of the object at `path`,
/// sorted (the server orders entries by time, to the second).
fn managers(s: &ApiServer, path: &str) -> Vec<(String, String, String)> {
    let (code, obj) = get_json(s, path);
    assert_eq!(code, 200, "{obj}");
    let text = |e: &serde_json::Value, k: &str| e[k].as_str().unwrap_or("").to_string();
    let mut out: Vec<_> = obj["metadata"]["managedFields"].as_array().map(|a| a.iter().map(|e| (text(e, "manager"), text(e, "operation"), text(e, "subresource"))).collect()).unwrap_or_default();
    out.sort();
    out
}

/// The fieldsV1 of `manager`'s entry (operation `op`) of the object at `path`.
fn fields_v1(s: &ApiServer, path: &str, manager: &str, op: &str) -> serde_json::Value {
    let (_, obj) = get_json(s, path);
    obj["metadata"]["managedFields"].as_array().and_then(|a| a.iter().find(|e| e["manager"] == manager && e["operation"] == op)).map(|e| e["fieldsV1"].clone()).unwrap_or_default()
}

fn own(list: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    list.iter().map(|(m, o, s)| (m.to_string(), o.to_string(), s.to_string())).collect()
}

/// `kubectl apply --server-side`: creation with kubectl's Apply entry, re-applies that change
/// and prune what left the manifest, `kubectl scale` taking spec.replicas over (a conflict until
/// `--force-conflicts`), and a second applier sharing the object.
fn server_side_apply_merges_prunes_and_conflicts(backend: Backend) {
    let s = ApiServer::start(backend);
    let web = "/apis/apps/v1/namespaces/default/deployments/web";
    let out = s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(&ssa_deployment(2, "busybox", true)));
    assert!(out.contains("deployment.apps/web serverside-applied"), "{out}");
    assert_eq!(managers(&s, web), own(&[("kubectl", "Apply", "")]));
    let (_, obj) = get_json(&s, web);
    let entry = &obj["metadata"]["managedFields"][0];
    assert_eq!((entry["apiVersion"].as_str(), entry["fieldsType"].as_str()), (Some("apps/v1"), Some("FieldsV1")), "{entry}");
    assert!(entry["time"].is_string(), "{entry}");
    let f = &entry["fieldsV1"];
    assert_eq!(f["f:spec"]["f:replicas"], serde_json::json!({}), "{f}");
    assert_eq!(f["f:spec"]["f:selector"], serde_json::json!({}), "LabelSelector is atomic: {f}");
    let c = &f["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"];
    assert_eq!(c["."], serde_json::json!({}), "{f}");
    assert_eq!(c["f:ports"]["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"]["f:containerPort"], serde_json::json!({}), "{f}");
    assert!(c["f:env"]["k:{\"name\":\"B\"}"].is_object(), "{f}");
    assert!(f["f:spec"].get("f:revisionHistoryLimit").is_none(), "defaults belong to nobody: {f}");
    // Defaulting still happens.
    assert_eq!(s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.revisionHistoryLimit} {.spec.template.spec.containers[0].ports[0].protocol}"]), "10 TCP");

    // The same manifest again changes nothing, not even the resourceVersion.
    let rv = |s: &ApiServer| get_json(s, web).1["metadata"]["resourceVersion"].clone();
    let before = rv(&s);
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(&ssa_deployment(2, "busybox", true)));
    assert_eq!(rv(&s), before);
    // Also with what `kubectl create --dry-run=client -o yaml` writes, which the server puts back
    // (a second later, so that a new managedFields time would show).
    std::thread::sleep(Duration::from_millis(1100));
    let with_null = ssa_deployment(2, "busybox", true).replace("  name: web\n", "  name: web\n  creationTimestamp: null\n");
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(&with_null));
    assert_eq!(rv(&s), before);
    // An edit is applied; what left the manifest (env B, the tier label) leaves the object.
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(&ssa_deployment(2, "busybox:1.36", false)));
    assert_eq!(
        s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env} {.metadata.labels} {.metadata.generation}"]),
        r#"busybox:1.36 [{"name":"A","value":"1"}] {"app":"web"} 2"#
    );

    // kubectl scale sends no fieldManager: the change is "kubectl"'s, through the scale subresource.
    s.ok(&["scale", "deploy", "web", "--replicas", "5"]);
    assert_eq!(managers(&s, web), own(&[("kubectl", "Apply", ""), ("kubectl", "Update", "scale")]));
    assert_eq!(fields_v1(&s, web, "kubectl", "Update"), serde_json::json!({"f:spec": {"f:replicas": {}}}));
    assert!(fields_v1(&s, web, "kubectl", "Apply")["f:spec"].get("f:replicas").is_none(), "scale took replicas from the applier");
    let err = s.fails(&["apply", "--server-side", "-f", "-"], Some(&ssa_deployment(3, "busybox:1.36", false)));
    assert!(err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl" with subresource "scale" using apps/v1: .spec.replicas"#), "{err}");
    assert!(err.contains("--force-conflicts"), "kubectl's advice follows: {err}");
    assert_eq!(s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "5");
    // The Status a client sees: 409 Conflict with one FieldManagerConflict cause per field.
    let body = serde_json::to_vec(&serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 4}})).expect("json");
    let (code, st) = s.curl("PATCH", &format!("{web}?fieldManager=robot"), Auth::Admin, Some("application/apply-patch+yaml"), Some(&body));
    let st = json_of(&st);
    assert_eq!((code, st["reason"].as_str()), (409, Some("Conflict")), "{st}");
    assert_eq!(
        st["details"]["causes"],
        serde_json::json!([{"reason": "FieldManagerConflict", "message": "conflict with \"kubectl\" with subresource \"scale\" using apps/v1", "field": ".spec.replicas"}])
    );
    // A resourceVersion in the configuration is a precondition.
    let stale = serde_json::to_vec(&serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "resourceVersion": "1"}, "spec": {"paused": true}})).expect("json");
    let (code, st) = s.curl("PATCH", &format!("{web}?fieldManager=robot"), Auth::Admin, Some("application/apply-patch+yaml"), Some(&stale));
    assert_eq!((code, json_of(&st)["message"].as_str().is_some_and(|m| m.contains("the object has been modified"))), (409, true), "{st}");
    // Forced: the applier takes replicas back, and the scale entry, now empty, goes.
    let out = s.ok_stdin(&["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(&ssa_deployment(3, "busybox:1.36", false)));
    assert!(out.contains("serverside-applied"), "{out}");
    assert_eq!(s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "3");
    assert_eq!(managers(&s, web), own(&[("kubectl", "Apply", "")]));
    assert_eq!(fields_v1(&s, web, "kubectl", "Apply")["f:spec"]["f:replicas"], serde_json::json!({}));

    // A second applier: its own annotation, and the same replicas (shared, so no conflict).
    let other = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations: {team: blue}\nspec:\n  replicas: 3\n";
    s.ok_stdin(&["apply", "--server-side", "--field-manager", "other", "-f", "-"], Some(other));
    assert_eq!(managers(&s, web), own(&[("kubectl", "Apply", ""), ("other", "Apply", "")]));
    assert_eq!(fields_v1(&s, web, "other", "Apply"), serde_json::json!({"f:metadata": {"f:annotations": {"f:team": {}}}, "f:spec": {"f:replicas": {}}}));
    // kubectl's manifest never had the annotation: re-applying it leaves the other's field be.
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(&ssa_deployment(3, "busybox:1.36", false)));
    assert_eq!(s.ok(&["get", "deploy", "web", "-o", "jsonpath={.metadata.annotations.team}"]), "blue");
    // Both own replicas now: a third manager changing it conflicts with both.
    let err = s.fails(&["apply", "--server-side", "--field-manager", "third", "-f", "-"], Some(&other.replace("replicas: 3", "replicas: 6")));
    assert!(err.contains("Apply failed with 2 conflicts: conflicts with \"kubectl\":\n- .spec.replicas\nconflicts with \"other\":\n- .spec.replicas"), "{err}");
    // kubectl dropping replicas from its manifest keeps the field: "other" still applies it.
    let without_replicas = ssa_deployment(3, "busybox:1.36", false).replace("  replicas: 3\n", "");
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(&without_replicas));
    assert_eq!(s.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "3");
    assert!(fields_v1(&s, web, "kubectl", "Apply")["f:spec"].get("f:replicas").is_none());
}

/// PatchOptions checks and refusals of apply requests, and the "Update" entries every other
/// write records (kubectl's field managers, the User-Agent when there is none), a client
/// resetting managedFields, and kubectl moving a client-side applied object to server-side apply.
fn server_side_apply_options_and_update_managers(backend: Backend) {
    let s = ApiServer::start(backend);
    let cms = "/api/v1/namespaces/default/configmaps";
    let apply = |path: &str, body: &[u8]| s.curl("PATCH", path, Auth::Admin, Some("application/apply-patch+yaml"), Some(body));
    let cm = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":"v"}}"#;
    // fieldManager is required: Kubernetes' 422 for PatchOptions.
    let (code, st) = apply(&format!("{cms}/x"), cm);
    let st = json_of(&st);
    assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")), "{st}");
    assert_eq!(st["message"], "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch");
    let (code, st) = s.curl("PATCH", &format!("{cms}/x?force=true"), Auth::Admin, Some("application/merge-patch+json"), Some(b"{}"));
    assert_eq!(code, 422, "force is for apply patches only: {st}");
    // Refusals: YAML that does not parse, managedFields in the configuration, unknown fields, a
    // configuration of another version.
    for (body, want) in [
        (&b"apiVersion: v1\nkind: [ConfigMap\n"[..], "error decoding YAML: "),
        (br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","managedFields":[]}}"#, "metadata.managedFields must be nil"),
        (br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"dtaa":{}}"#, "failed to create typed patch object (default/x; /v1, Kind=ConfigMap): .dtaa: field not declared in schema"),
        (br#"{"apiVersion":"v2","kind":"ConfigMap","metadata":{"name":"x"}}"#, "Incorrect version specified in apply patch. Specified patch version: v2, expected: v1"),
    ] {
        let (code, st) = apply(&format!("{cms}/x?fieldManager=m"), body);
        assert_eq!(code, 400, "{st}");
        assert!(json_of(&st)["message"].as_str().is_some_and(|m| m.starts_with(want)), "{st}");
    }
    assert!(s.ok(&["get", "cm", "-o", "name"]).trim().is_empty(), "nothing was stored");
    // Applying a missing object creates it (201); a subresource of a missing object is 404.
    let (code, body) = apply(&format!("{cms}/x?fieldManager=m"), cm);
    assert_eq!(code, 201, "{body}");
    assert_eq!(managers(&s, &format!("{cms}/x")), own(&[("m", "Apply", "")]));
    let (code, _) = apply("/api/v1/namespaces/default/pods/p/status?fieldManager=m", br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#);
    assert_eq!(code, 404);
    // Through the status subresource an applier owns status fields only, recorded as such.
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox}]\n"));
    let status = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {nodeName: ignored}\nstatus:\n  phase: Running\n  conditions: [{type: Ready, status: 'True'}]\n";
    s.ok_stdin(&["apply", "--server-side", "--subresource=status", "--field-manager=agent", "-f", "-"], Some(status));
    let pod = "/api/v1/namespaces/default/pods/p";
    assert_eq!(s.ok(&["get", "pod", "p", "-o", "jsonpath={.status.phase} {.status.conditions[0].type} {.spec.nodeName}"]), "Running Ready ");
    assert_eq!(managers(&s, pod), own(&[("agent", "Apply", "status"), ("kubectl", "Apply", "")]));
    assert_eq!(fields_v1(&s, pod, "agent", "Apply"), serde_json::json!({"f:status": {"f:phase": {}, "f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:status": {}, "f:type": {}}}}}));

    // Updates: kubectl names its managers; a client that does not is named by its User-Agent.
    s.ok(&["create", "configmap", "made", "--from-literal=a=1"]);
    s.ok(&["label", "configmap", "made", "tier=db"]);
    let made = format!("{cms}/made");
    assert_eq!(managers(&s, &made), own(&[("kubectl-create", "Update", ""), ("kubectl-label", "Update", "")]));
    assert_eq!(fields_v1(&s, &made, "kubectl-label", "Update"), serde_json::json!({"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}}));
    let (code, _) = s.curl("POST", cms, Auth::Admin, Some("application/json"), Some(br#"{"metadata":{"name":"raw"},"data":{"a":"1"}}"#));
    assert_eq!(code, 201);
    assert_eq!(managers(&s, &format!("{cms}/raw")), own(&[("curl", "Update", "")]));
    // An apply that changes what an updater set conflicts with it.
    let err = s.fails(&["apply", "--server-side", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: made}\ndata: {a: '2'}\n"));
    assert!(err.contains(r#"Apply failed with 1 conflict: conflict with "kubectl-create" using v1: .data.a"#), "{err}");
    // A client resets managedFields with [{}].
    s.ok(&["patch", "configmap", "made", "--type", "json", "-p", r#"[{"op":"replace","path":"/metadata/managedFields","value":[{}]}]"#]);
    assert!(managers(&s, &made).is_empty());
    // Client-side apply, then server-side: kubectl migrates the client-side apply manager, and
    // the fields last-applied describes are taken over without conflicts.
    let csa = |v: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: moved}}\ndata: {{a: '{v}', b: '2'}}\n");
    s.ok_stdin(&["apply", "-f", "-"], Some(&csa("1")));
    let moved = format!("{cms}/moved");
    assert_eq!(managers(&s, &moved), own(&[("kubectl-client-side-apply", "Update", "")]));
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(&csa("9")));
    assert_eq!(s.ok(&["get", "cm", "moved", "-o", "jsonpath={.data.a}"]), "9");
    let now = managers(&s, &moved);
    assert!(now.contains(&("kubectl".into(), "Apply".into(), String::new())) && !now.iter().any(|m| m.0 == "kubectl-client-side-apply"), "{now:?}");
    assert_eq!(fields_v1(&s, &moved, "kubectl", "Apply"), serde_json::json!({"f:data": {"f:a": {}, "f:b": {}}}));
}

/// `kubectl explain` shows upstream v1.32.0's descriptions of built-in kinds and their fields
/// (scripts/gen-k8s-docs.py), in OpenAPI v3 and v2, for old and new kubectl; a message whose Go
/// name another package also has (autoscaling/v2's HorizontalPodAutoscalerSpec) gets its own.
#[test]
fn explain_describes_built_in_kinds_as_upstream() {
    let s = ApiServer::start(Backend::Embedded);
    for v in ["1.27", "1.32", "1.33"] {
        let bin = common::server::kubectl_of(v);
        for output in ["plaintext", "plaintext-openapiv2"] {
            let explain = |args: &[&str]| {
                let mut a = vec!["explain", "--output", output];
                a.extend_from_slice(args);
                let out = s.kubectl_bin(&bin, &a, None);
                assert!(out.status.success(), "kubectl {v} {a:?}: {}", String::from_utf8_lossy(&out.stderr));
                // kubectl wraps long lines: compare words.
                String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ")
            };
            if v == "1.27" && output == "plaintext" {
                continue; // kubectl 1.27 has no --output plaintext (v3 explain came in 1.27 behind a flag)
            }
            let pod = explain(&["pod.spec.restartPolicy"]);
            assert!(pod.contains("Restart policy for all containers within the pod. One of Always, OnFailure, Never."), "kubectl {v} {output}: {pod}");
            let deploy = explain(&["deployment"]);
            assert!(deploy.contains("Deployment enables declarative updates for Pods and ReplicaSets."), "kubectl {v} {output}: {deploy}");
            let hpa = explain(&["horizontalpodautoscaler.spec", "--api-version=autoscaling/v2"]);
            assert!(hpa.contains("maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."), "kubectl {v} {output}: {hpa}");
            let hpa1 = explain(&["horizontalpodautoscaler.spec", "--api-version=autoscaling/v1"]);
            assert!(hpa1.contains("maxReplicas is the upper limit for the number of pods that can be set by the autoscaler; cannot be smaller than MinReplicas."), "kubectl {v} {output}: {hpa1}");
        }
    }
}

/// `kubectl get componentstatuses` (deprecated upstream, still served): the scheduler and the
/// controller manager are healthy while someone holds and renews their Lease, the store while it
/// answers; read only, with upstream's deprecation warning, its Table and its errors.
#[test]
fn component_statuses_tell_the_control_planes_health() {
    // The harness's server runs neither a scheduler nor controllers.
    let s = ApiServer::start(Backend::Embedded);
    let out = s.kubectl(&["get", "componentstatuses"]);
    assert!(out.status.success(), "{out:?}");
    let (table, warning) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
    assert!(warning.contains("Warning: v1 ComponentStatus is deprecated in v1.19+"), "{warning}");
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["NAME", "STATUS", "MESSAGE", "ERROR"], "{table}");
    assert_eq!(rows[1][..2], ["controller-manager", "Unhealthy"], "{table}");
    assert!(table.contains("no controller manager has held the kube-system/kube-controller-manager Lease"), "{table}");
    assert_eq!(rows[2], ["etcd-0", "Healthy", "ok"], "{table}");
    assert_eq!(rows[3][..2], ["scheduler", "Unhealthy"], "{table}");
    // A scheduler elsewhere takes the Lease: healthy while it renews.
    let renew = |when: &str| {
        format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: kube-scheduler, namespace: kube-system}}\nspec: {{holderIdentity: elsewhere_1, leaseDurationSeconds: 15, renewTime: \"{when}\"}}\n")
    };
    let fresh = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    s.ok_stdin(&["apply", "-f", "-"], Some(&renew(&fresh)));
    let one = s.get_json("/api/v1/componentstatuses/scheduler");
    assert_eq!(one["conditions"], serde_json::json!([{ "type": "Healthy", "status": "True", "message": "ok" }]), "{one}");
    let stale = (chrono::Utc::now() - chrono::Duration::seconds(60)).format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    s.ok_stdin(&["apply", "-f", "-"], Some(&renew(&stale)));
    let one = s.get_json("/api/v1/componentstatuses/scheduler");
    assert_eq!(one["conditions"][0]["status"], "False", "{one}");
    assert!(one["conditions"][0]["error"].as_str().unwrap_or("").starts_with("elsewhere_1 last renewed the kube-system/kube-scheduler Lease 6"), "{one}");
    // Read only; an unknown component is not found.
    let err = s.fails(&["delete", "componentstatus", "scheduler"], None);
    assert!(err.contains("MethodNotAllowed"), "{err}");
    let err = s.fails(&["get", "cs", "nope"], None);
    assert!(err.contains("componentstatuses \"nope\" not found"), "{err}");
    let (code, _) = s.curl("GET", "/api/v1/componentstatuses?watch=true", Auth::Admin, None, None);
    assert_eq!(code, 405);
    // Discovery lists it as upstream does: read only, short name cs, never stored.
    let v1 = s.get_json("/api/v1");
    let cs = v1["resources"].as_array().into_iter().flatten().find(|r| r["name"] == "componentstatuses").cloned().unwrap_or_default();
    assert_eq!(cs, serde_json::json!({ "name": "componentstatuses", "singularName": "componentstatus", "namespaced": false, "kind": "ComponentStatus", "verbs": ["get", "list"], "shortNames": ["cs"] }));
}
