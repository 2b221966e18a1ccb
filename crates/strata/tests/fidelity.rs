//! Kubernetes API fidelity (issue 12): request and response forms clients and tools use.

mod common;

use common::server::{ApiServer, Auth, Backend};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn json_of(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", &body[..body.len().min(500)]))
}

/// YAML request bodies are accepted wherever kube-apiserver accepts them: create and update
/// (`application/yaml`) and server-side apply (`application/apply-patch+yaml` written as real
/// YAML, not only JSON); YAML that does not parse is a 400 that says so and stores nothing;
/// `Accept: application/yaml` answers in YAML.
#[test]
fn yaml_bodies_and_responses() {
    let s = ApiServer::start(Backend::Embedded);
    let create = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  labels: {a: b}\ndata:\n  key: value # a comment\n  multi: |\n    line one\n    line two\n";
    let (code, body) = s.curl("POST", CMS, Auth::Admin, Some("application/yaml"), Some(create.as_bytes()));
    assert_eq!(code, 201, "{body}");
    let cm = json_of(&body);
    assert_eq!(cm["data"]["key"], "value");
    assert_eq!(cm["data"]["multi"], "line one\nline two\n");
    assert_eq!(cm["metadata"]["labels"]["a"], "b");

    let update = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  resourceVersion: \"{}\"\ndata:\n  key: changed\n",
        cm["metadata"]["resourceVersion"].as_str().expect("rv")
    );
    let (code, body) = s.curl("PUT", &format!("{CMS}/from-yaml"), Auth::Admin, Some("application/yaml; charset=utf-8"), Some(update.as_bytes()));
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_of(&body)["data"]["key"], "changed");

    // Server-side apply with a YAML document (as `kubectl apply --server-side` of a file would
    // be if sent verbatim, and as client libraries in other languages send it).
    let apply = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  owned: \"yes\"\n";
    let (code, body) = s.curl("PATCH", &format!("{CMS}/applied?fieldManager=yaml-test"), Auth::Admin, Some("application/apply-patch+yaml"), Some(apply.as_bytes()));
    assert_eq!(code, 201, "{body}");
    let applied = json_of(&body);
    assert_eq!(applied["data"]["owned"], "yes");
    assert_eq!(applied["metadata"]["managedFields"][0]["manager"], "yaml-test");

    // Broken YAML: 400 naming the problem; nothing stored.
    let (code, body) = s.curl("POST", CMS, Auth::Admin, Some("application/yaml"), Some(b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: broken\n"));
    assert_eq!(code, 400, "{body}");
    assert!(json_of(&body)["message"].as_str().unwrap_or("").contains("YAML"), "{body}");
    let (code, _) = s.curl("GET", &format!("{CMS}/broken"), Auth::Admin, None, None);
    assert_eq!(code, 404);
    // Several documents in one body are not one object.
    let (code, body) = s.curl("POST", CMS, Auth::Admin, Some("application/yaml"), Some(format!("{create}---\n{create}").as_bytes()));
    assert_eq!(code, 400, "{body}");

    // YAML responses.
    let out = std::process::Command::new("curl")
        .args(["-sS", "-H", "Accept: application/yaml", "--cacert"])
        .arg(s.data_dir().join("pki/ca.crt"))
        .arg("--cert")
        .arg(s.data_dir().join("pki/admin.crt"))
        .arg("--key")
        .arg(s.data_dir().join("pki/admin.key"))
        .arg(format!("{}{CMS}/from-yaml", s.url()))
        .arg("-D")
        .arg("-")
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, doc) = text.split_once("\r\n\r\n").expect("headers and body");
    assert!(head.to_ascii_lowercase().contains("content-type: application/yaml"), "{head}");
    let v: serde_json::Value = serde_yaml_ng::from_str(doc).unwrap_or_else(|e| panic!("not YAML ({e}): {doc}"));
    assert_eq!(v["data"]["key"], "changed");
    assert_eq!(v["kind"], "ConfigMap");
}

/// A Deployment whose pod template has these env names and ports (in its first container),
/// sidecar containers, volumes and toleration keys.
fn deployment(env: &[&str], ports: &[u16], sidecars: &[&str], volumes: &[&str], tolerations: &[&str]) -> String {
    let env: Vec<String> = env.iter().map(|n| format!("        - {{name: {n}, value: v}}\n")).collect();
    let ports: Vec<String> = ports.iter().map(|p| format!("        - {{containerPort: {p}}}\n")).collect();
    let sidecars: Vec<String> = sidecars.iter().map(|n| format!("      - {{name: {n}, image: busybox}}\n")).collect();
    let volumes: Vec<String> = volumes.iter().map(|n| format!("      - {{name: {n}, emptyDir: {{}}}}\n")).collect();
    let tolerations: Vec<String> = tolerations.iter().map(|k| format!("      - {{key: {k}, operator: Exists, effect: NoSchedule}}\n")).collect();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n        env:\n{}        ports:\n{}{}      volumes:\n{}      tolerations:\n{}",
        env.concat(),
        ports.concat(),
        sidecars.concat(),
        volumes.concat(),
        tolerations.concat(),
    )
}

/// Client-side `kubectl apply` removes list entries a manifest no longer has (env by name,
/// container ports by port, containers and volumes by name, tolerations as a whole list): the
/// published schemas carry upstream's patch merge keys and strategies, so kubectl computes delete
/// directives — for the oldest, default and newest installed kubectl, with no warning about the
/// schema.
#[test]
fn client_side_apply_removes_list_entries() {
    let s = ApiServer::start(Backend::Embedded);
    for v in ["1.27", "1.32", "1.33"] {
        let kubectl = common::server::kubectl_of(v);
        let ns = format!("apply-{}", v.replace('.', "-"));
        let out = s.kubectl(&["create", "namespace", &ns]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let first = deployment(&["A", "B"], &[80, 443], &["log", "proxy"], &["data", "cache"], &["gpu", "spot"]);
        let second = deployment(&["A"], &[80], &["log"], &["data"], &["gpu"]);
        for manifest in [first, second] {
            let out = s.kubectl_bin(&kubectl, &["apply", "-n", &ns, "-f", "-"], Some(&manifest));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "kubectl {v} apply: {stderr}");
            assert!(!stderr.contains("does not support strategic merge patch"), "kubectl {v}: {stderr}");
        }
        let out = s.kubectl(&["get", "deployment", "web", "-n", &ns, "-o", "json"]);
        let d = json_of(&String::from_utf8_lossy(&out.stdout));
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let names = |list: &serde_json::Value, key: &str| -> Vec<String> { list.as_array().expect("a list").iter().filter_map(|e| e[key].as_str().map(String::from)).collect() };
        let ports: Vec<i64> = c["ports"].as_array().expect("ports").iter().filter_map(|p| p["containerPort"].as_i64()).collect();
        assert_eq!((names(&c["env"], "name"), ports), (vec!["A".to_string()], vec![80]), "kubectl {v}");
        assert_eq!(names(&pod["containers"], "name"), ["web", "log"], "kubectl {v}");
        assert_eq!(names(&pod["volumes"], "name"), ["data"], "kubectl {v}");
        assert_eq!(names(&pod["tolerations"], "key"), ["gpu"], "kubectl {v}");
    }
}

/// `kubectl apply --prune -l` deletes the labelled objects a manifest no longer has, walking
/// kubectl's default allow-list of kinds (ConfigMap ... ReplicationController ... Ingress): every
/// kind on it must be served, or the command fails.
#[test]
fn apply_prune_with_the_default_allow_list_deletes_what_left_the_manifest() {
    let s = ApiServer::start(Backend::Embedded);
    let config_map = |name: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels: {{app: pruned}}\ndata: {{k: v}}\n");
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: front\n  labels: {app: pruned}\nspec:\n  ports: [{port: 80}]\n";
    for v in ["1.27", "1.32", "1.33"] {
        let kubectl = common::server::kubectl_of(v);
        let ns = format!("prune-{}", v.replace('.', "-"));
        assert!(s.kubectl(&["create", "namespace", &ns]).status.success());
        // An object with the label that never was in the manifest is pruned too (as upstream:
        // the label selects), one without it is not.
        let apply = |manifest: &str| {
            let out = s.kubectl_bin(&kubectl, &["apply", "-n", &ns, "--prune", "-l", "app=pruned", "-f", "-"], Some(manifest));
            let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
            assert!(out.status.success(), "kubectl {v} apply --prune: {stdout}{stderr}");
            stdout
        };
        apply(&format!("{}---\n{}---\n{service}", config_map("keep"), config_map("gone")));
        s.ok(&["create", "configmap", "unlabelled", "-n", &ns, "--from-literal=k=v"]);
        let out = apply(&config_map("keep"));
        assert!(out.contains("configmap/gone pruned") && out.contains("service/front pruned"), "kubectl {v}: {out}");
        let left = s.ok(&["get", "configmaps,services", "-n", &ns, "-o", "name"]);
        let mut left: Vec<&str> = left.lines().filter(|l| !l.contains("kube-root-ca.crt")).collect();
        left.sort();
        assert_eq!(left, ["configmap/keep", "configmap/unlabelled"], "kubectl {v}");
    }
}

/// Deleting a pod bound to a node is graceful, as kube-apiserver's pod strategy makes it: the
/// object stays with `deletionTimestamp` (now + the grace period) and
/// `deletionGracePeriodSeconds` (the request's, else the pod's `terminationGracePeriodSeconds`)
/// until the node's agent deletes it with grace 0; a shorter grace period shortens it, a longer
/// one does not; an unbound pod, or one that has finished, goes at once. (The node here is
/// simulated: no agent runs, the test acts as one.)
#[test]
fn deleting_a_bound_pod_is_graceful_until_its_node_confirms() {
    let s = ApiServer::start(Backend::Embedded);
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str, node: Option<&str>| {
        let mut p = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 45, "containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = serde_json::json!(n);
        }
        let (code, body) = s.curl("POST", pods, Auth::Admin, Some("application/json"), Some(p.to_string().as_bytes()));
        assert_eq!(code, 201, "{body}");
    };
    let get = |name: &str| s.curl("GET", &format!("{pods}/{name}"), Auth::Admin, None, None);
    let delete = |name: &str, query: &str| s.curl("DELETE", &format!("{pods}/{name}{query}"), Auth::Admin, None, None);

    pod("bound", Some("simulated-node-1"));
    let (code, body) = delete("bound", "");
    assert_eq!(code, 200, "{body}");
    let (code, body) = get("bound");
    assert_eq!(code, 200, "a bound pod stays until its node confirms: {body}");
    let p = json_of(&body);
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 45, "{body}");
    let ts = chrono::DateTime::parse_from_rfc3339(p["metadata"]["deletionTimestamp"].as_str().expect("deletionTimestamp")).expect("RFC 3339");
    let left = ts.signed_duration_since(chrono::Utc::now()).num_seconds();
    assert!((30..=46).contains(&left), "deletionTimestamp is now + the grace period: {left} s left");
    // A longer grace period changes nothing; a shorter one shortens it.
    delete("bound", "?gracePeriodSeconds=100");
    assert_eq!(json_of(&get("bound").1)["metadata"]["deletionGracePeriodSeconds"], 45);
    delete("bound", "?gracePeriodSeconds=5");
    assert_eq!(json_of(&get("bound").1)["metadata"]["deletionGracePeriodSeconds"], 5);
    // The node's agent confirms with grace 0: gone.
    let (code, body) = delete("bound", "?gracePeriodSeconds=0");
    assert_eq!(code, 200, "{body}");
    assert_eq!(get("bound").0, 404);

    // Unbound, and finished, pods go at once.
    pod("unbound", None);
    delete("unbound", "");
    assert_eq!(get("unbound").0, 404);
    pod("done", Some("simulated-node-1"));
    let status = serde_json::json!({"status": {"phase": "Succeeded"}});
    let (code, body) = s.curl("PATCH", &format!("{pods}/done/status"), Auth::Admin, Some("application/merge-patch+json"), Some(status.to_string().as_bytes()));
    assert_eq!(code, 200, "{body}");
    delete("done", "");
    assert_eq!(get("done").0, 404);
}

/// An update's `metadata.uid` is a precondition and a delete's `preconditions.uid` too: a
/// manifest saved from an object that was since deleted and created again does not overwrite
/// the new one (409, upstream's message); a patch cannot change the uid (422 immutable); an
/// update without a uid keeps the stored one.
#[test]
fn a_stale_uid_is_a_failed_precondition_not_an_overwrite() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {v: one}\n"));
    let saved = s.ok(&["get", "configmap", "cfg", "-o", "json"]);
    let old_uid = json_of(&saved)["metadata"]["uid"].as_str().expect("uid").to_string();
    s.ok(&["delete", "configmap", "cfg"]);
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {v: two}\n"));
    let new_uid = json_of(&s.ok(&["get", "configmap", "cfg", "-o", "json"]))["metadata"]["uid"].as_str().expect("uid").to_string();
    assert_ne!(old_uid, new_uid);

    // `kubectl replace` of the saved manifest (it carries the old uid and resourceVersion).
    let err = s.fails(&["replace", "-f", "-"], Some(&saved));
    assert!(err.contains(&format!("Precondition failed: UID in precondition: {old_uid}, UID in object meta: {new_uid}")), "{err}");
    // The same as a PUT without a resourceVersion (an unconditional update): still refused.
    let mut body = json_of(&saved);
    body["metadata"].as_object_mut().expect("metadata").remove("resourceVersion");
    body["data"]["v"] = "three".into();
    let (code, out) = s.curl("PUT", &format!("{CMS}/cfg"), Auth::Admin, Some("application/json"), Some(body.to_string().as_bytes()));
    assert_eq!(code, 409, "{out}");
    assert_eq!(json_of(&out)["reason"], "Conflict", "{out}");
    assert_eq!(json_of(&s.ok(&["get", "configmap", "cfg", "-o", "json"]))["data"]["v"], "two", "nothing was overwritten");
    // Without a uid the update applies and the uid stays.
    body["metadata"].as_object_mut().expect("metadata").remove("uid");
    let (code, out) = s.curl("PUT", &format!("{CMS}/cfg"), Auth::Admin, Some("application/json"), Some(body.to_string().as_bytes()));
    assert_eq!(code, 200, "{out}");
    assert_eq!(json_of(&out)["metadata"]["uid"], new_uid.as_str());

    // A patch may not change the uid.
    let err = s.fails(&["patch", "configmap", "cfg", "--type=merge", "-p", r#"{"metadata":{"uid":"0c4d5b3e-0000-4000-8000-000000000000"}}"#], None);
    assert!(err.contains("metadata.uid: Invalid value: \"0c4d5b3e-0000-4000-8000-000000000000\": field is immutable"), "{err}");

    // A delete whose uid precondition is stale is refused; the right uid deletes.
    let opts = |uid: &str| format!(r#"{{"kind":"DeleteOptions","apiVersion":"v1","preconditions":{{"uid":"{uid}"}}}}"#);
    let (code, out) = s.curl("DELETE", &format!("{CMS}/cfg"), Auth::Admin, Some("application/json"), Some(opts(&old_uid).as_bytes()));
    assert_eq!(code, 409, "{out}");
    assert!(json_of(&out)["message"].as_str().is_some_and(|m| m.contains(&format!("UID in precondition: {old_uid}, UID in object meta: {new_uid}"))), "{out}");
    let (code, out) = s.curl("DELETE", &format!("{CMS}/cfg"), Auth::Admin, Some("application/json"), Some(opts(&new_uid).as_bytes()));
    assert_eq!(code, 200, "{out}");
}

/// A pod's `status.qosClass` is set when it is created (kube-apiserver's pod strategy), not only
/// once a node runs it: upstream's conformance "Pods Set QOS Class" reads it from the create.
#[test]
fn a_created_pod_has_its_qos_class_at_once() {
    let s = ApiServer::start(Backend::Embedded);
    let pod = |name: &str, resources: &str| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: a\n    image: busybox\n    resources: {resources}\n");
    for (name, resources, class) in [
        ("guaranteed", "{limits: {cpu: 100m, memory: 100Mi}}", "Guaranteed"),
        ("burstable", "{requests: {cpu: 50m}, limits: {cpu: 100m, memory: 100Mi}}", "Burstable"),
        ("besteffort", "{}", "BestEffort"),
    ] {
        let created = json_of(&s.ok_stdin(&["create", "-o", "json", "-f", "-"], Some(&pod(name, resources))));
        assert_eq!(created["status"]["qosClass"], class, "{name}: {created}");
    }
}

/// A create's managedFields hold what its request set (defaults included), not what mutating
/// admission added after: upstream's create handler runs the field manager before admission,
/// so a pod's default tolerations and priority (and its ServiceAccount token volume, where that
/// admission is on) belong to no manager.
#[test]
fn a_creates_managed_fields_leave_out_what_admission_added() {
    let s = ApiServer::start(Backend::Embedded);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: mf, labels: {app: mf}}\nspec:\n  containers:\n  - name: a\n    image: busybox\n";
    s.ok_stdin(&["create", "-f", "-"], Some(pod));
    let got = json_of(&s.ok(&["get", "pod", "mf", "-o", "json", "--show-managed-fields"]));
    assert!(got["spec"]["tolerations"].as_array().is_some_and(|t| !t.is_empty()), "admission added the default tolerations: {got}");
    assert_eq!(got["spec"]["priority"], 0, "admission set the priority: {got}");
    let managed = got["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    assert_eq!(managed.len(), 1, "{managed:?}");
    let spec = &managed[0]["fieldsV1"]["f:spec"];
    for mine in ["f:containers", "f:dnsPolicy", "f:restartPolicy"] {
        assert!(spec.get(mine).is_some(), "{mine}: what the request set (and its defaults) is its manager's: {spec}");
    }
    assert!(managed[0]["fieldsV1"]["f:metadata"]["f:labels"].get("f:app").is_some(), "{managed:?}");
    for admitted in ["f:tolerations", "f:priority", "f:volumes"] {
        assert!(spec.get(admitted).is_none(), "{admitted}: what admission added is nobody's: {spec}");
    }
}
