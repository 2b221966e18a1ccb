//! What upstream's sig-apps conformance specs (scripts/conformance.sh,
//! docs/conformance-sig-apps.md) showed missing in the workload controllers and the API server,
//! each reproduced here with the real kubectl or curl before it was fixed.

mod common;

use std::time::Duration;

use common::eventually;
use common::server::{ApiServer, Auth, Backend, Options};
use common::simnode::SimNode;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);

/// A server with its scheduler and controllers (no node agent: nodes are [`SimNode`]s).
fn cluster() -> ApiServer {
    ApiServer::start_opts(Backend::Embedded, Options { controllers: true, scheduler: true, ..Options::default() })
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// A server with its node agent (node `<prefix>-<pid>`), scheduler and controllers, and a real
/// registry holding busybox: the server, the registry (kept alive), the image, the node's name.
fn agent_cluster(prefix: &str) -> (ApiServer, strata_testkit::Registry, String, String) {
    let registry = strata_testkit::Registry::start();
    registry.push(&strata_testkit::busybox_image(), "busybox", "latest");
    let image = format!("{}/busybox:latest", registry.addr);
    // No VM acceleration probe; the shared disk may be fuller than the default unpack reserve.
    let env = vec![("STRATA_VM_ACCEL".to_string(), "tcg".to_string()), ("STRATA_UNPACK_RESERVE".to_string(), "512MiB".to_string())];
    let node = unique(prefix);
    let extra = vec!["--node-name".to_string(), node.clone()];
    let s = ApiServer::start_opts(Backend::Embedded, Options { agent: true, controllers: true, scheduler: true, extra, env, ..Options::default() });
    (s, registry, image, node)
}

/// A new namespace `<prefix>-<pid>` once its `default` ServiceAccount exists (pods need it).
fn namespace(s: &ApiServer, prefix: &str) -> String {
    let ns = unique(prefix);
    s.ok(&["create", "namespace", &ns]);
    assert!(eventually(LONG, || s.kubectl(&["get", "serviceaccount", "default", "-n", &ns]).status.success()), "no default ServiceAccount");
    ns
}

/// A write to a `status` subresource changes the metadata as upstream's status strategies let it
/// (`PrepareForUpdate` of each kind's status strategy): Jobs and CronJobs keep the annotations
/// and labels it carries (the Job and CronJob "API operations" specs patch
/// `{"metadata":{"annotations":...},"status":...}`), a Deployment's labels and a Pod's owner
/// references come from the stored object, VolumeAttachments and APIServices keep all their
/// stored metadata; the spec never changes and nor does the generation.
#[test]
fn status_writes_keep_the_metadata_upstream_status_strategies_keep() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "namespace", "st"]);
    let template = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}});
    let objects = [
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "st", "labels": {"app": "x"}}, "spec": {"template": template}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj", "namespace": "st", "labels": {"app": "x"}}, "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": template}}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "st", "labels": {"app": "x"}}, "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "st", "labels": {"app": "x"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": "va-st", "labels": {"app": "x"}}, "spec": {"attacher": "csi.example.com", "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}}}),
        json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": "v1.st.example.com", "labels": {"app": "x"}}, "spec": {"group": "st.example.com", "version": "v1", "groupPriorityMinimum": 100, "versionPriority": 10, "service": {"namespace": "st", "name": "api"}}}),
    ];
    for o in &objects {
        s.ok_stdin(&["create", "-f", "-"], Some(&o.to_string()));
    }
    let owner = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": "0b6a2f8e-0000-4000-8000-000000000001"}]);
    // (kind, name, namespace flag, status, kept: annotation, label, owner references)
    let cases: [(&str, &str, bool, Value, (bool, bool, bool)); 6] = [
        ("job", "j", true, json!({"active": 0}), (true, true, true)),
        ("cronjob", "cj", true, json!({"lastScheduleTime": "2026-01-01T00:00:00Z"}), (true, true, true)),
        ("deployment", "d", true, json!({"observedGeneration": 1}), (true, false, true)),
        ("pod", "p", true, json!({"phase": "Pending"}), (true, true, false)),
        ("volumeattachment", "va-st", false, json!({"attached": true}), (false, false, false)),
        ("apiservice", "v1.st.example.com", false, json!({"conditions": [{"type": "Available", "status": "False", "reason": "Test"}]}), (false, false, false)),
    ];
    for (kind, name, namespaced, status, (annotation, label, owners)) in cases {
        let ns: &[&str] = if namespaced { &["-n", "st"] } else { &[] };
        let get = |path: &str| s.ok(&[&["get", kind, name, "-o", &format!("jsonpath={path}")], ns].concat());
        let generation = get("{.metadata.generation}");
        // A merge patch of the status subresource (what the e2e specs send) ...
        let patch = json!({"metadata": {"annotations": {"patchedstatus": "true"}, "labels": {"patched": "yes"}, "ownerReferences": owner}, "status": status});
        s.ok(&[&["patch", kind, name, "--subresource=status", "--type=merge", "-p", &patch.to_string()], ns].concat());
        let want = |kept: bool, v: &str| if kept { v.to_string() } else { String::new() };
        assert_eq!(get("{.metadata.annotations.patchedstatus}"), want(annotation, "true"), "{kind}: the annotation of a status patch");
        assert_eq!(get("{.metadata.labels.patched}"), want(label, "yes"), "{kind}: the label of a status patch");
        assert_eq!(get("{.metadata.labels.app}"), "x", "{kind}: labels the patch did not name stay");
        assert_eq!(get("{.metadata.ownerReferences[0].name}"), want(owners, "owner"), "{kind}: owner references of a status patch");
        assert_eq!(get("{.metadata.generation}"), generation, "{kind}: a status write never moves the generation");
        // ... and a PUT of the status subresource (client-go's UpdateStatus).
        let mut obj: Value = serde_json::from_str(&s.ok(&[&["get", kind, name, "-o", "json"], ns].concat())).expect("json");
        obj["metadata"]["annotations"]["updatedstatus"] = json!("true");
        let self_path = api_path(&obj);
        let (code, body) = s.curl("PUT", &format!("{self_path}/status"), Auth::Admin, Some("application/json"), Some(obj.to_string().as_bytes()));
        assert_eq!(code, 200, "{kind}: {body}");
        assert_eq!(get("{.metadata.annotations.updatedstatus}"), want(annotation, "true"), "{kind}: the annotation of a status update");
    }
    // The spec of a status write is ignored.
    assert_eq!(s.ok(&["get", "job", "j", "-n", "st", "-o", "jsonpath={.spec.parallelism}"]), "1");
    s.ok(&["patch", "job", "j", "-n", "st", "--subresource=status", "--type=merge", "-p", r#"{"spec":{"parallelism":5}}"#]);
    assert_eq!(s.ok(&["get", "job", "j", "-n", "st", "-o", "jsonpath={.spec.parallelism}"]), "1");
}

/// The REST path of an object from its apiVersion, kind and metadata (plural = lowercased kind + "s").
fn api_path(obj: &Value) -> String {
    let version = obj["apiVersion"].as_str().unwrap_or("");
    let base = if version.contains('/') { format!("/apis/{version}") } else { format!("/api/{version}") };
    let ns = obj["metadata"]["namespace"].as_str().map(|n| format!("/namespaces/{n}")).unwrap_or_default();
    let plural = format!("{}s", obj["kind"].as_str().unwrap_or("").to_lowercase());
    format!("{base}{ns}/{plural}/{}", obj["metadata"]["name"].as_str().unwrap_or(""))
}

/// `.spec.replicas` of every ReplicaSet of a namespace, by the image of its template.
fn replicaset_sizes(s: &ApiServer, ns: &str) -> std::collections::BTreeMap<String, i64> {
    s.items(&format!("/apis/apps/v1/namespaces/{ns}/replicasets"))
        .iter()
        .map(|rs| (rs["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string(), rs["spec"]["replicas"].as_i64().unwrap_or(-1)))
        .collect()
}

fn wait_sizes(s: &ApiServer, ns: &str, want: &[(&str, i64)]) {
    let want: std::collections::BTreeMap<String, i64> = want.iter().map(|(i, n)| (i.to_string(), *n)).collect();
    let mut last = Default::default();
    let ok = eventually(LONG, || {
        last = replicaset_sizes(s, ns);
        last == want
    });
    assert!(ok, "ReplicaSet sizes {last:?}, want {want:?}");
}

/// The "proportional scaling" spec: a Deployment scaled in the middle of a rollout that cannot
/// progress spreads the new replicas over its ReplicaSets in proportion to their sizes (upstream's
/// `GetReplicaSetProportion`, from each ReplicaSet's max-replicas annotation). The new
/// ReplicaSet's revision update used to move its desired/max annotations to the new size before
/// the scaling read them, so it got nothing and the old one took all 20 (28 and 5).
#[test]
fn a_deployment_scaled_mid_rollout_grows_its_replicasets_in_proportion() {
    let s = cluster();
    let ns = unique("prop");
    s.ok(&["create", "namespace", &ns]);
    let _node = SimNode::start(&s, &format!("sim-{ns}"));
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 10, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "web:v1"}]}}}});
    s.ok_stdin(&["create", "-f", "-"], Some(&d.to_string()));
    let ok = eventually(LONG, || s.ok(&["get", "deploy", "web", "-n", &ns, "-o", "jsonpath={.status.availableReplicas}"]) == "10");
    assert!(ok, "the first rollout did not complete");
    // A template whose pods never become ready: the rollout stops at 8 old + 5 new.
    s.ok(&["set", "image", "deploy/web", "-n", &ns, "web=web:unpullable"]);
    wait_sizes(&s, &ns, &[("web:v1", 8), ("web:unpullable", 5)]);
    s.ok(&["scale", "deploy/web", "-n", &ns, "--replicas=30"]);
    // 8 + 20 * 8/13 = 20 (rounded) and 5 + 20 * 5/13 = 13, as upstream.
    wait_sizes(&s, &ns, &[("web:v1", 20), ("web:unpullable", 13)]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(replicaset_sizes(&s, &ns), [("web:unpullable".to_string(), 13), ("web:v1".to_string(), 20)].into_iter().collect(), "and they stay so");
    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}

fn controller_uid(pod: &Value) -> Option<String> {
    pod["metadata"]["ownerReferences"].as_array()?.iter().find(|o| o["controller"] == true).and_then(|o| o["uid"].as_str()).map(str::to_string)
}

fn has_tracking(pod: &Value) -> bool {
    pod["metadata"]["finalizers"].as_array().is_some_and(|f| f.iter().any(|f| f == "batch.kubernetes.io/job-tracking"))
}

/// The Job spec "should adopt matching orphans and release non-matching pods": a pod whose owner
/// reference is removed is adopted again (with the tracking finalizer), one whose labels stop
/// matching is released (reference and finalizer removed) and replaced.
#[test]
fn a_job_adopts_orphans_and_releases_pods_that_stop_matching() {
    let s = cluster();
    let ns = unique("jobadopt");
    s.ok(&["create", "namespace", &ns]);
    let _node = SimNode::start(&s, &format!("sim-{ns}"));
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "adopt", "namespace": ns},
        "spec": {"parallelism": 2, "completions": 4, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000000"]}]}}}});
    s.ok_stdin(&["create", "-f", "-"], Some(&job.to_string()));
    let uid = s.ok(&["get", "job", "adopt", "-n", &ns, "-o", "jsonpath={.metadata.uid}"]);
    let pods_path = format!("/api/v1/namespaces/{ns}/pods");
    let owned = |s: &ApiServer| -> Vec<Value> { s.items(&pods_path).into_iter().filter(|p| controller_uid(p).as_deref() == Some(uid.as_str()) && p["metadata"]["deletionTimestamp"].is_null()).collect() };
    let mut pods = Vec::new();
    assert!(eventually(LONG, || { pods = owned(&s); pods.len() == 2 && pods.iter().all(|p| p["status"]["phase"] == "Running") }), "two running pods: {pods:?}");
    let pod = pods[0]["metadata"]["name"].as_str().unwrap_or("").to_string();
    let get = |s: &ApiServer| s.get_json(&format!("{pods_path}/{pod}"));

    // Orphaned: adopted again, with the tracking finalizer.
    s.ok(&["patch", "pod", &pod, "-n", &ns, "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/ownerReferences"},{"op":"remove","path":"/metadata/finalizers"}]"#]);
    let mut p = Value::Null;
    assert!(eventually(LONG, || { p = get(&s); controller_uid(&p).as_deref() == Some(uid.as_str()) && has_tracking(&p) }), "the orphan was not adopted: {p}");
    assert_eq!(owned(&s).len(), 2, "adopted, not replaced");

    // Labels that no longer match: released, finalizer and all, and replaced.
    s.ok(&["patch", "pod", &pod, "-n", &ns, "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/labels"}]"#]);
    assert!(eventually(LONG, || { p = get(&s); controller_uid(&p).is_none() && !has_tracking(&p) }), "the pod was not released: {p}");
    assert!(eventually(LONG, || owned(&s).len() == 2), "the released pod was not replaced");

    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}

/// The Job spec "should delete a job": a Job deleted in the background leaves no pod behind. Its
/// pods' tracking finalizers are released once the Job is gone; the controller used to read the
/// gone Job as the watching identity, which may list and watch Jobs but not get them, and so kept
/// them forever.
#[test]
fn a_job_deleted_in_the_background_leaves_no_pod() {
    let s = cluster();
    let ns = unique("jobdelete");
    s.ok(&["create", "namespace", &ns]);
    let _node = SimNode::start(&s, &format!("sim-{ns}"));
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "foo", "namespace": ns},
        "spec": {"parallelism": 2, "completions": 4, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1000000"]}]}}}});
    s.ok_stdin(&["create", "-f", "-"], Some(&job.to_string()));
    let pods_path = format!("/api/v1/namespaces/{ns}/pods");
    assert!(eventually(LONG, || s.items(&pods_path).iter().filter(|p| p["status"]["phase"] == "Running").count() == 2), "two running pods");
    s.ok(&["delete", "job", "foo", "-n", &ns, "--cascade=background", "--wait=false"]);
    let mut left = Vec::new();
    let gone = eventually(LONG, || {
        left = s.items(&pods_path).into_iter().map(|p| (p["metadata"]["name"].clone(), p["metadata"]["finalizers"].clone())).collect();
        left.is_empty()
    });
    assert!(gone, "pods of the deleted Job left: {left:?}");
    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}

/// The StatefulSet spec "Should recreate evicted statefulset": a stateful pod the node refuses
/// (its host port is another pod's: kubelet's NodePorts admission, the pod Failed) is deleted and
/// made again by the controller until it runs. The agent used to admit it (and fail to map the
/// port), so the pod never failed and was never re-created.
#[test]
fn a_stateful_pod_the_node_refuses_is_recreated_until_it_runs() {
    let (s, _registry, image, node) = agent_cluster("apps-node");
    let ns = namespace(&s, "ssevict");
    let port = common::free_port();
    let container = |name: &str| json!({"name": name, "image": image, "command": ["sleep", "1000000"], "ports": [{"name": "conflict", "containerPort": port, "hostPort": port}]});
    let holder = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder", "namespace": ns}, "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [container("holder")]}});
    s.ok_stdin(&["create", "-f", "-"], Some(&holder.to_string()));
    let phase = |name: &str| s.ok(&["get", "pod", name, "-n", &ns, "-o", "jsonpath={.status.phase}", "--ignore-not-found"]);
    assert!(eventually(LONG, || phase("holder") == "Running"), "the holder pod did not run");
    let set = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "ss", "namespace": ns},
        "spec": {"replicas": 1, "serviceName": "test", "selector": {"matchLabels": {"app": "ss"}},
            "template": {"metadata": {"labels": {"app": "ss"}}, "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [container("web")]}}}});
    s.ok_stdin(&["create", "-f", "-"], Some(&set.to_string()));
    // Refused by the node, deleted and made again: several uids, one of them seen Failed.
    let mut uids = std::collections::BTreeSet::new();
    let mut refused = String::new();
    let recreated = eventually(LONG, || {
        let out = s.ok(&["get", "pod", "ss-0", "-n", &ns, "-o", "jsonpath={.metadata.uid} {.status.phase} {.status.reason}", "--ignore-not-found"]);
        let mut f = out.split_whitespace();
        if let Some(uid) = f.next() {
            uids.insert(uid.to_string());
        }
        if f.next() == Some("Failed") {
            refused = f.next().unwrap_or("").to_string();
        }
        uids.len() >= 2 && !refused.is_empty()
    });
    assert!(recreated, "ss-0 was not refused and made again: uids {uids:?}, refused {refused:?}");
    assert_eq!(refused, "NodePorts");
    // Once the port is free, the next one runs.
    s.ok(&["delete", "pod", "holder", "-n", &ns, "--grace-period=0", "--force"]);
    assert!(eventually(LONG, || phase("ss-0") == "Running"), "ss-0 never ran: {}", s.ok(&["get", "pod", "ss-0", "-n", &ns, "-o", "yaml"]));
    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}

/// `pods/proxy` (the ReplicaSet and ReplicationController specs "should serve a basic image on
/// each replica" read each pod's answer through it): `kubectl get --raw
/// /api/v1/namespaces/N/pods/P[:PORT]/proxy/PATH` reaches the pod's port through its node's
/// agent (no port: the first declared container port), POST bodies and queries go through, and
/// RBAC decides on `pods/proxy` (reading the pod is not enough).
#[test]
fn pods_proxy_reaches_a_port_of_the_pod_through_its_node() {
    let (s, _registry, image, node) = agent_cluster("proxy-node");
    let ns = namespace(&s, "podproxy");
    // busybox httpd on 8080 serving a file and a CGI script that echoes its query and body.
    let script = "mkdir -p /w/cgi-bin && echo hello-from-the-pod > /w/index.html && echo '<a href=\"/rewriteme\">test</a><img src=/i.png>' > /w/page.html && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho \"query=$QUERY_STRING\"\\necho \"method=$REQUEST_METHOD\"\\ncat\\n' > /w/cgi-bin/echo && chmod +x /w/cgi-bin/echo && exec httpd -f -p 8080 -h /w";
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": ns},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "web", "image": image, "command": ["sh", "-c", script], "ports": [{"containerPort": 8080}]}]}});
    s.ok_stdin(&["create", "-f", "-"], Some(&pod.to_string()));
    assert!(eventually(LONG, || s.ok(&["get", "pod", "web", "-n", &ns, "-o", "jsonpath={.status.phase}"]) == "Running"), "the pod did not run");
    let base = format!("/api/v1/namespaces/{ns}/pods");
    let mut got = String::new();
    let served = eventually(LONG, || {
        let out = s.kubectl(&["get", "--raw", &format!("{base}/web:8080/proxy/index.html")]);
        got = format!("{}{}", common::text(&out.stdout), common::text(&out.stderr));
        out.status.success()
    });
    assert!(served, "no answer through pods/proxy: {got}");
    assert_eq!(got.trim(), "hello-from-the-pod");
    // No port: the first declared one; the path's trailing slash is the pod's.
    assert_eq!(s.ok(&["get", "--raw", &format!("{base}/web/proxy/")]).trim(), "hello-from-the-pod");
    // A query and a POST body reach the pod; its answer comes back as it is.
    let (code, body) = s.curl("POST", &format!("{base}/web:8080/proxy/cgi-bin/echo?a=1&b=two"), Auth::Admin, Some("text/plain"), Some(b"the-body"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("query=a=1&b=two") && body.contains("method=POST") && body.contains("the-body"), "{body}");
    // An HTML page's links point under the proxy path, as upstream's proxy transport rewrites
    // them (index.html above has no links: it came back as it was).
    let page = s.ok(&["get", "--raw", &format!("{base}/web:8080/proxy/page.html")]);
    assert_eq!(page.trim(), format!("<a href=\"{base}/web:8080/proxy/rewriteme\">test</a><img src={base}/web:8080/proxy/i.png>"));
    // The proxy's root without its slash redirects there (upstream's handler does).
    let (code, _) = s.curl("GET", &format!("{base}/web:8080/proxy?x=1"), Auth::Admin, None, None);
    assert_eq!(code, 301);
    // OPTIONS goes through too, as upstream's proxy takes any method.
    let (code, body) = s.curl("OPTIONS", &format!("{base}/web:8080/proxy/cgi-bin/echo"), Auth::Admin, None, None);
    assert!(code == 200 && body.contains("method=OPTIONS"), "{code} {body}");
    let (code, body) = s.curl("GET", &format!("{base}/web:8080/proxy/missing"), Auth::Admin, None, None);
    assert_eq!(code, 404, "the pod's own 404: {body}");
    // A port nothing listens on, a pod that does not exist.
    let (code, body) = s.curl("GET", &format!("{base}/web:9/proxy/"), Auth::Admin, None, None);
    assert_eq!(code, 503, "{body}");
    let (code, _) = s.curl("GET", &format!("{base}/nope/proxy/"), Auth::Admin, None, None);
    assert_eq!(code, 404);
    // RBAC: `get pods` is not `get pods/proxy`.
    s.ok(&["create", "role", "reader", "-n", &ns, "--verb=get", "--resource=pods"]);
    s.ok(&["create", "rolebinding", "reader", "-n", &ns, "--role=reader", "--user=alice"]);
    let denied = s.kubectl(&["get", "--raw", &format!("{base}/web:8080/proxy/index.html"), "--as=alice"]);
    assert!(!denied.status.success() && common::text(&denied.stderr).contains("Forbidden"), "{}", common::text(&denied.stderr));
    s.ok(&["create", "role", "proxier", "-n", &ns, "--verb=get", "--resource=pods/proxy"]);
    s.ok(&["create", "rolebinding", "proxier", "-n", &ns, "--role=proxier", "--user=alice"]);
    assert!(eventually(LONG, || s.kubectl(&["get", "--raw", &format!("{base}/web:8080/proxy/index.html"), "--as=alice"]).status.success()), "alice may proxy now");
    // Discovery lists the subresource.
    assert!(s.ok(&["get", "--raw", "/api/v1"]).contains("\"pods/proxy\""));
    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}

/// Upstream's pod failure back-off: a failed pod's replacement is created 10 s after the failure,
/// 20 s after a second one (doubling, capped), and at once again after a success. strata made the
/// replacement at once.
#[test]
fn a_job_waits_before_replacing_failed_pods_and_a_success_resets_the_wait() {
    let s = cluster();
    let ns = unique("jobbackoff");
    s.ok(&["create", "namespace", &ns]);
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "flaky", "namespace": ns},
        "spec": {"parallelism": 1, "completions": 3, "backoffLimit": 6, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}});
    s.ok_stdin(&["create", "-f", "-"], Some(&job.to_string()));
    let pods_path = format!("/api/v1/namespaces/{ns}/pods");
    // The one pod not finished yet (the Job runs one at a time).
    let running = |s: &ApiServer| -> Option<String> {
        s.items(&pods_path).into_iter().find(|p| !matches!(p["status"]["phase"].as_str(), Some("Failed" | "Succeeded"))).and_then(|p| p["metadata"]["name"].as_str().map(str::to_string))
    };
    // Finish it as a kubelet would report it, and return how long its replacement took to appear.
    let finish = |pod: &str, phase: &str, code: i32| -> (Duration, String) {
        // The back-off counts from finishedAt, which is whole seconds: time the replacement from
        // that instant, not from the end of a patch that can be slow under load.
        let finished = chrono::Timelike::with_nanosecond(&chrono::Utc::now(), 0).unwrap_or_else(chrono::Utc::now);
        let now = finished.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let status = json!({"status": {"phase": phase, "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "startedAt": now, "finishedAt": now, "reason": if code == 0 { "Completed" } else { "Error" }}}}]}});
        s.ok(&["patch", "pod", pod, "-n", &ns, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
        let mut next = None;
        assert!(eventually(Duration::from_secs(90), || { next = running(&s).filter(|n| n != pod); next.is_some() }), "no replacement for {pod}");
        ((chrono::Utc::now() - finished).to_std().unwrap_or_default(), next.unwrap_or_default())
    };
    let mut pod = None;
    assert!(eventually(LONG, || { pod = running(&s); pod.is_some() }), "no first pod");
    let (first, pod) = finish(&pod.unwrap_or_default(), "Failed", 1);
    assert!(first >= Duration::from_secs(8) && first < Duration::from_secs(40), "a replacement after one failure took {first:?}, want about 10 s");
    let (second, pod) = finish(&pod, "Failed", 1);
    assert!(second >= Duration::from_secs(18) && second < Duration::from_secs(60), "after two failures {second:?}, want about 20 s");
    let (after_success, _) = finish(&pod, "Succeeded", 0);
    assert!(after_success < Duration::from_secs(8), "a success resets the back-off: {after_success:?}");
    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}

/// A pod deleted gracefully stays until its node confirms with grace 0, whatever else is written
/// to it (upstream's `DefaultShouldDeleteDuringUpdate`): neither its terminal status nor the
/// removal of its last finalizer (the Job controller's tracking one) deletes it early — the
/// status write before the final delete (the node's terminal phase) used to. Once confirmed, the
/// removal of its last finalizer deletes it.
#[test]
fn a_gracefully_deleted_pod_waits_for_its_node_then_for_its_finalizers() {
    let s = ApiServer::start(Backend::Embedded);
    let pod = |name: &str| format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  finalizers: [strata.test/hold]\nspec:\n  nodeName: nowhere\n  containers:\n  - name: c\n    image: busybox\n");
    let get = |name: &str| -> Value { serde_json::from_slice(&s.kubectl(&["get", "pod", name, "-o", "json"]).stdout).unwrap_or(Value::Null) };
    let unhold = |name: &str| s.ok(&["patch", "pod", name, "--type=json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#]);
    for name in ["confirmed", "unconfirmed"] {
        s.ok_stdin(&["apply", "-f", "-"], Some(&pod(name)));
        s.ok(&["delete", "pod", name, "--wait=false"]);
        assert_eq!(get(name)["metadata"]["deletionGracePeriodSeconds"], 30, "{name}: a bound pod is deleted gracefully");
        s.ok(&["patch", "pod", name, "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Failed"}}"#]);
    }
    // The node's confirmation (grace 0) while a finalizer holds the pod: it stays, with grace 0.
    s.ok(&["delete", "pod", "confirmed", "--grace-period=0", "--force", "--wait=false"]);
    let confirmed = get("confirmed");
    assert_eq!((confirmed["metadata"]["deletionGracePeriodSeconds"].clone(), confirmed["status"]["phase"].clone()), (json!(0), json!("Failed")), "{confirmed:#}");
    unhold("confirmed");
    unhold("unconfirmed");
    let unconfirmed = get("unconfirmed");
    assert_eq!(unconfirmed["metadata"]["deletionGracePeriodSeconds"], 30, "deleted before its node confirmed: {unconfirmed:#}");
    assert!(get("confirmed").is_null(), "the confirmed pod stayed after its last finalizer went");
    s.ok(&["delete", "pod", "unconfirmed", "--grace-period=0", "--force", "--wait=false"]);
    assert!(get("unconfirmed").is_null(), "the pod stayed after its node confirmed");
}

/// The ControllerRevision conformance spec: a revision someone creates for a DaemonSet with the
/// current revision's data (another name, revision + 1) stays until the DaemonSet's next sync, so
/// the first one can still be deleted — upstream's DaemonSet controller is not woken by the
/// creation of a revision it owns. At the next sync (here a label on the DaemonSet) equal
/// revisions are deduplicated, the newest kept. Used to: the first revision deleted at once.
#[test]
fn a_revision_created_for_a_daemonset_stays_until_the_daemonset_syncs() {
    let s = cluster();
    let ns = namespace(&s, "crdup");
    s.ok_stdin(
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: ds\n  namespace: {ns}\nspec:\n  selector: {{matchLabels: {{app: crdup}}}}\n  template:\n    metadata: {{labels: {{app: crdup}}}}\n    spec:\n      containers:\n      - {{name: c, image: busybox, command: [sleep, \"3600\"]}}\n"
        )),
    );
    let revisions = || -> Vec<Value> {
        let out = s.kubectl(&["get", "controllerrevisions", "-n", &ns, "-l", "app=crdup", "-o", "json"]);
        serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v["items"].as_array().cloned()).unwrap_or_default()
    };
    let mut first = Value::Null;
    assert!(
        eventually(LONG, || {
            first = revisions().into_iter().next().unwrap_or(Value::Null);
            !first.is_null()
        }),
        "the DaemonSet has no revision"
    );
    // Settled first: its status written for its generation, and the sync its own status write
    // brings done. A sync before the second revision exists is fine; one after it would rightly
    // merge the two (a race the test used to lose now and then).
    let mut ds = Value::Null;
    assert!(
        eventually(LONG, || {
            ds = serde_json::from_str(&s.ok(&["get", "ds", "ds", "-n", &ns, "-o", "json"])).unwrap_or(Value::Null);
            ds["status"]["observedGeneration"] == ds["metadata"]["generation"]
        }),
        "the DaemonSet did not settle: {}",
        ds["status"]
    );
    std::thread::sleep(Duration::from_secs(2));
    let second = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {
            "name": "ds-second", "namespace": ns, "labels": {"app": "crdup", "controller-revision-hash": "second"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "ds", "uid": ds["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}],
        },
        "data": first["data"], "revision": first["revision"].as_i64().unwrap_or(0) + 1,
    });
    s.ok_stdin(&["create", "-f", "-"], Some(&second.to_string()));
    // Nothing wakes the DaemonSet: both stay (the spec lists them, then deletes the first).
    std::thread::sleep(Duration::from_secs(5));
    let names: Vec<Value> = revisions().iter().map(|r| r["metadata"]["name"].clone()).collect();
    assert_eq!(names.len(), 2, "both revisions stay until the DaemonSet syncs: {names:?}");
    s.ok(&["label", "ds", "ds", "-n", &ns, "synced=yes"]);
    let mut left = Vec::new();
    assert!(
        eventually(LONG, || {
            left = revisions().iter().map(|r| (r["metadata"]["name"].clone(), r["revision"].clone())).collect();
            left.len() == 1
        }),
        "equal revisions not deduplicated at the next sync: {left:?}"
    );
    assert_eq!(left[0], (json!("ds-second"), second["revision"].clone()), "the newest equal revision is kept");
    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}

/// The ReplicaSet scale conformance spec ("Failed to put scale subresource: ... the object has
/// been modified"): a PUT of `/scale` without a resourceVersion is unconditional, so a status write
/// (the controller's) between the server's read and write is retried, not answered 409, as
/// upstream's GuaranteedUpdate does. Driven by the Python client, with status writes racing.
#[test]
fn an_unconditional_scale_update_is_retried_when_the_status_changes_meanwhile() {
    let s = ApiServer::start(Backend::Embedded);
    let ns = unique("scaleput");
    s.ok(&["create", "namespace", &ns]);
    assert_eq!(s.python("scale_unconditional.py", &[&ns]).trim(), "ok");
    // A PUT with a stale resourceVersion still conflicts.
    let scale = s.get_json(&format!("/apis/apps/v1/namespaces/{ns}/replicasets/scaled/scale"));
    s.ok(&["patch", "rs", "scaled", "-n", &ns, "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":9}}"#]);
    let mut stale = scale.clone();
    stale["spec"]["replicas"] = json!(5);
    let (code, body) = s.curl("PUT", &format!("/apis/apps/v1/namespaces/{ns}/replicasets/scaled/scale"), Auth::Admin, Some("application/json"), Some(stale.to_string().as_bytes()));
    assert_eq!(code, 409, "{body}");
}

/// `services/proxy` (kubectl get --raw /api/v1/namespaces/N/services/NAME[:PORT]/proxy/PATH, which
/// sig-network's and kubectl's specs read): reaches a ready endpoint pod of the Service, picked
/// at random among the ready ones as upstream's ResourceLocation picks — never a pod that is not
/// ready; the port by number (turned into the Service port's name), by name, or none for the
/// unnamed port; no such port or no ready endpoint is 503 with upstream's message; RBAC decides on
/// `services/proxy`; discovery lists it. Used to be a 404.
#[test]
fn services_proxy_reaches_a_ready_endpoint_pod() {
    let (s, _registry, image, node) = agent_cluster("svcproxy-node");
    let ns = namespace(&s, "svcproxy");
    // busybox httpd on 8080 answering its pod's name; `unready` never passes its readiness probe.
    for (pod, ready) in [("web-a", true), ("web-b", true), ("unready", false)] {
        let script = format!("mkdir -p /w && echo {pod} > /w/index.html && exec httpd -f -p 8080 -h /w");
        let probe = if ready { json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1}) } else { json!({"exec": {"command": ["false"]}, "periodSeconds": 1}) };
        let p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns, "labels": {"app": "web"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1, "containers": [{"name": "web", "image": image, "command": ["sh", "-c", script], "ports": [{"containerPort": 8080}], "readinessProbe": probe}]}});
        s.ok_stdin(&["create", "-f", "-"], Some(&p.to_string()));
    }
    let svc = |name: &str, port_name: Option<&str>| {
        let mut port = json!({"port": 80, "targetPort": 8080});
        if let Some(n) = port_name {
            port["name"] = json!(n);
        }
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns}, "spec": {"selector": {"app": "web"}, "ports": [port]}})
    };
    s.ok_stdin(&["create", "-f", "-"], Some(&svc("named", Some("http")).to_string()));
    s.ok_stdin(&["create", "-f", "-"], Some(&svc("plain", None).to_string()));
    let base = format!("/api/v1/namespaces/{ns}/services");
    let ready = || s.ok(&["get", "endpoints", "named", "-n", &ns, "-o", "jsonpath={.subsets[*].addresses[*].targetRef.name}"]);
    assert!(eventually(LONG, || ready().split_whitespace().count() == 2), "endpoints of the two ready pods: {:?}", ready());
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..24 {
        let path = match i % 4 {
            0 => format!("{base}/named:80/proxy/index.html"),
            1 => format!("{base}/named:http/proxy/index.html"),
            2 => format!("{base}/http:named:80/proxy/"),
            _ => format!("{base}/plain/proxy/index.html"),
        };
        let out = s.kubectl(&["get", "--raw", &path]);
        assert!(out.status.success(), "{path}: {}", common::text(&out.stderr));
        *seen.entry(common::text(&out.stdout).trim().to_string()).or_insert(0) += 1;
    }
    let answered: Vec<&String> = seen.keys().collect();
    assert_eq!(answered, ["web-a", "web-b"], "answers from the ready pods only, both picked: {seen:?}");
    // No such port; no ready endpoint.
    let (code, body) = s.curl("GET", &format!("{base}/named:81/proxy/"), Auth::Admin, None, None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no service port 81 found for service \\\"named\\\""), "{body}");
    s.ok_stdin(&["create", "-f", "-"], Some(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty", "namespace": ns}, "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 80}]}}).to_string()));
    let (code, body) = s.curl("GET", &format!("{base}/empty/proxy/"), Auth::Admin, None, None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no endpoints available for service"), "{body}");
    // RBAC: reading the Service is not proxying to it.
    s.ok(&["create", "role", "reader", "-n", &ns, "--verb=get", "--resource=services"]);
    s.ok(&["create", "rolebinding", "reader", "-n", &ns, "--role=reader", "--user=bob"]);
    let denied = s.kubectl(&["get", "--raw", &format!("{base}/named/proxy/"), "--as=bob"]);
    assert!(!denied.status.success() && common::text(&denied.stderr).contains("Forbidden"), "{}", common::text(&denied.stderr));
    let discovery = s.ok(&["get", "--raw", "/api/v1"]);
    assert!(discovery.contains("\"services/proxy\"") && discovery.contains("ServiceProxyOptions"), "discovery lacks services/proxy");
    s.ok(&["delete", "namespace", &ns, "--wait=false"]);
}
