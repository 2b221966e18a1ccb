//! Kinds that manifests and charts carry (issue 12 part 3), end to end: a real `strata server`
//! and real kubectl (1.27, 1.32, 1.33 where their output differs) — RuntimeClass with its
//! admission, LimitRange and ResourceQuota with theirs, and the other stored kinds.

mod common;

use common::server::{kubectl_of, ApiServer, Backend};

/// A pod named `name` with one container and `extra` lines appended under `spec:`.
fn pod(name: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: registry.k8s.io/pause:3.9}}]\n{extra}")
}

#[test]
fn runtime_classes_are_validated_printed_and_admit_pods() {
    let s = ApiServer::start(Backend::Embedded);
    let rc = "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: sandboxed}\nhandler: kata-qemu\noverhead:\n  podFixed: {cpu: 250m, memory: 120Mi}\nscheduling:\n  nodeSelector: {sandbox.example/runtime: kata}\n  tolerations: [{key: sandbox.example/runtime, operator: Exists, effect: NoSchedule}]\n";
    s.ok_stdin(&["create", "-f", "-"], Some(rc));
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: plain}\nhandler: runc\n"));
    // Table columns as upstream's printer, for old and new kubectl alike.
    for v in ["1.27", "1.32", "1.33"] {
        let out = s.kubectl_bin(&kubectl_of(v), &["get", "runtimeclasses"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{v}: {}", String::from_utf8_lossy(&out.stderr));
        let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(lines[0], ["NAME", "HANDLER", "AGE"], "{v}: {text}");
        assert_eq!(&lines[1][..2], ["plain", "runc"], "{v}: {text}");
        assert_eq!(&lines[2][..2], ["sandboxed", "kata-qemu"], "{v}: {text}");
    }
    // Discovery and explain.
    let res = s.ok(&["api-resources", "--api-group=node.k8s.io"]);
    assert!(res.contains("runtimeclasses") && res.contains("node.k8s.io/v1") && res.contains("RuntimeClass"), "{res}");
    let explain = s.ok(&["explain", "runtimeclass.scheduling"]);
    assert!(explain.contains("nodeSelector") && explain.contains("tolerations"), "{explain}");
    let explain = s.ok(&["explain", "runtimeclass.overhead.podFixed"]);
    assert!(explain.contains("podFixed"), "{explain}");
    // Validation as upstream's ValidateRuntimeClass, every failing field at once.
    let bad = "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: bad}\nhandler: Not_A_Label\noverhead:\n  podFixed: {cpu: \"-1\"}\nscheduling:\n  nodeSelector: {\"bad key!\": x}\n  tolerations: [{key: a, operator: Exists, value: v}]\n";
    let err = s.fails(&["create", "-f", "-"], Some(bad));
    assert!(err.contains("The RuntimeClass \"bad\" is invalid"), "{err}");
    assert!(err.contains("handler: Invalid value: \"Not_A_Label\": a lowercase RFC 1123 label must consist of"), "{err}");
    assert!(err.contains("overhead.podFixed[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"), "{err}");
    assert!(err.contains("scheduling.nodeSelector: Invalid value: \"bad key!\""), "{err}");
    assert!(err.contains("value must be empty when `operator` is 'Exists'"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata: {name: nohandler}\n"));
    assert!(err.contains("handler: Invalid value: \"\""), "{err}");
    assert_eq!(s.kubectl(&["get", "runtimeclass", "bad"]).status.code(), Some(1), "a refused class was stored");
    let err = s.fails(&["patch", "runtimeclass", "plain", "-p", r#"{"handler": "crun"}"#], None);
    assert!(err.contains("handler: Invalid value: \"crun\": field is immutable"), "{err}");
    s.ok(&["label", "runtimeclass", "plain", "tier=base"]);

    // RuntimeClass admission: an unknown class is refused.
    let err = s.fails(&["create", "-f", "-"], Some(&pod("ghost", "  runtimeClassName: nope\n")));
    assert!(err.contains("pods \"ghost\" is forbidden: pod rejected: RuntimeClass \"nope\" not found"), "{err}");
    // Overhead set from the class; nodeSelector and tolerations merged into the pod's own.
    let p = pod(
        "boxed",
        "  runtimeClassName: sandboxed\n  nodeSelector: {disk: ssd}\n  tolerations: [{key: dedicated, operator: Equal, value: batch, effect: NoSchedule}]\n",
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&p));
    let got = s.get_json("/api/v1/namespaces/default/pods/boxed");
    assert_eq!(got["spec"]["overhead"], serde_json::json!({"cpu": "250m", "memory": "120Mi"}), "{got}");
    assert_eq!(got["spec"]["nodeSelector"], serde_json::json!({"disk": "ssd", "sandbox.example/runtime": "kata"}), "{got}");
    let tolerations: Vec<&str> = got["spec"]["tolerations"].as_array().expect("tolerations").iter().filter_map(|t| t["key"].as_str()).collect();
    assert!(tolerations.contains(&"dedicated") && tolerations.contains(&"sandbox.example/runtime"), "{got}");
    // A class without overhead or scheduling changes nothing.
    s.ok_stdin(&["create", "-f", "-"], Some(&pod("runc-pod", "  runtimeClassName: plain\n")));
    let got = s.get_json("/api/v1/namespaces/default/pods/runc-pod");
    assert!(got["spec"]["overhead"].is_null() && got["spec"]["nodeSelector"].is_null(), "{got}");
    // Conflicts with the class are refused.
    let err = s.fails(&["create", "-f", "-"], Some(&pod("clash", "  runtimeClassName: sandboxed\n  nodeSelector: {sandbox.example/runtime: gvisor}\n")));
    assert!(err.contains("conflict: runtimeClass.scheduling.nodeSelector[sandbox.example/runtime] = kata; pod.spec.nodeSelector[sandbox.example/runtime] = gvisor"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&pod("fat", "  runtimeClassName: sandboxed\n  overhead: {cpu: '1'}\n")));
    assert!(err.contains("pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&pod("loose", "  overhead: {cpu: '1'}\n")));
    assert!(err.contains("pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"), "{err}");
    for name in ["ghost", "clash", "fat", "loose"] {
        assert_eq!(s.kubectl(&["get", "pod", name]).status.code(), Some(1), "refused pod {name} was stored");
    }
    // The same overhead stated by the pod is accepted.
    s.ok_stdin(&["create", "-f", "-"], Some(&pod("exact", "  runtimeClassName: sandboxed\n  overhead: {cpu: 250m, memory: 120Mi}\n")));
    s.ok(&["delete", "runtimeclass", "plain", "sandboxed"]);
}

/// `kubectl create -f -` of a manifest in namespace `ns`, returning stderr on failure.
fn create_in(s: &ApiServer, ns: &str, manifest: &str) -> Result<(), String> {
    let out = s.kubectl_stdin(&["create", "-n", ns, "-f", "-"], Some(manifest));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A pod with one container `c` of the given requests and limits (`{cpu: 100m}` flow maps).
fn sized_pod(name: &str, requests: &str, limits: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: c, image: registry.k8s.io/pause:3.9, resources: {{requests: {requests}, limits: {limits}}}}}]\n")
}

#[test]
fn limit_ranges_default_and_bound_containers_pods_and_claims() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "namespace", "lr"]);
    let lr = "apiVersion: v1\nkind: LimitRange\nmetadata: {name: bounds}\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 256Mi}\n    defaultRequest: {cpu: 100m}\n    max: {cpu: '1'}\n    min: {cpu: 50m}\n    maxLimitRequestRatio: {cpu: '10'}\n  - type: Pod\n    max: {memory: 1Gi}\n  - type: PersistentVolumeClaim\n    min: {storage: 1Gi}\n    max: {storage: 10Gi}\n";
    create_in(&s, "lr", lr).expect("limit range");
    // Upstream's defaulting of the Container item: defaultRequest falls back to default.
    let stored = s.get_json("/api/v1/namespaces/lr/limitranges/bounds");
    assert_eq!(stored["spec"]["limits"][0]["defaultRequest"], serde_json::json!({"cpu": "100m", "memory": "256Mi"}), "{stored}");
    let got = s.ok(&["get", "limits", "-n", "lr"]);
    let header: Vec<&str> = got.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header, ["NAME", "CREATED", "AT"], "{got}");
    for v in ["1.27", "1.33"] {
        let out = s.kubectl_bin(&kubectl_of(v), &["describe", "limits", "bounds", "-n", "lr"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{v}: {}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert!(rows.contains(&vec!["Container", "cpu", "50m", "1", "100m", "500m", "10"]), "{v}: {text}");
        assert!(rows.contains(&vec!["Container", "memory", "-", "-", "256Mi", "256Mi", "-"]), "{v}: {text}");
        assert!(rows.contains(&vec!["Pod", "memory", "-", "1Gi", "-", "-", "-"]), "{v}: {text}");
        assert!(rows.contains(&vec!["PersistentVolumeClaim", "storage", "1Gi", "10Gi", "-", "-", "-"]), "{v}: {text}");
    }

    // Defaults applied to a container that states nothing, and recorded in an annotation.
    create_in(&s, "lr", &pod("bare", "")).expect("bare pod");
    let p = s.get_json("/api/v1/namespaces/lr/pods/bare");
    let res = &p["spec"]["containers"][0]["resources"];
    assert_eq!(res["requests"], serde_json::json!({"cpu": "100m", "memory": "256Mi"}), "{p}");
    assert_eq!(res["limits"], serde_json::json!({"cpu": "500m", "memory": "256Mi"}), "{p}");
    assert_eq!(p["metadata"]["annotations"]["kubernetes.io/limit-ranger"], "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c", "{p}");
    // A limit without a request: the request is the limit (pod defaulting), not the default.
    create_in(&s, "lr", &sized_pod("limited", "{}", "{cpu: 800m}")).expect("limited pod");
    let p = s.get_json("/api/v1/namespaces/lr/pods/limited");
    assert_eq!(p["spec"]["containers"][0]["resources"]["requests"]["cpu"], "800m", "{p}");

    // Container min, max and ratio; the Pod's sum; every refusal names the bound.
    let err = create_in(&s, "lr", &sized_pod("big", "{cpu: 500m}", "{cpu: '2'}")).expect_err("over max");
    assert!(err.contains("pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"), "{err}");
    let err = create_in(&s, "lr", &sized_pod("tiny", "{cpu: 10m}", "{cpu: 50m}")).expect_err("under min");
    assert!(err.contains("minimum cpu usage per Container is 50m, but request is 10m"), "{err}");
    let err = create_in(&s, "lr", &sized_pod("skewed", "{cpu: 50m}", "{cpu: '1'}")).expect_err("ratio");
    assert!(err.contains("cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000"), "{err}");
    let two = "apiVersion: v1\nkind: Pod\nmetadata: {name: pair}\nspec:\n  containers:\n  - {name: a, image: registry.k8s.io/pause:3.9, resources: {limits: {memory: 768Mi}}}\n  - {name: b, image: registry.k8s.io/pause:3.9, resources: {limits: {memory: 768Mi}}}\n";
    let err = create_in(&s, "lr", two).expect_err("pod max");
    assert!(err.contains("maximum memory usage per Pod is 1Gi, but limit is 1536Mi"), "{err}");
    for name in ["big", "tiny", "skewed", "pair"] {
        assert_eq!(s.kubectl(&["get", "pod", "-n", "lr", name]).status.code(), Some(1), "refused pod {name} was stored");
    }
    let pvc = |name: &str, size: &str| format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n");
    let err = create_in(&s, "lr", &pvc("huge", "20Gi")).expect_err("pvc max");
    assert!(err.contains("persistentvolumeclaims \"huge\" is forbidden: maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"), "{err}");
    let err = create_in(&s, "lr", &pvc("small", "500Mi")).expect_err("pvc min");
    assert!(err.contains("minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"), "{err}");
    create_in(&s, "lr", &pvc("fits", "2Gi")).expect("pvc within bounds");

    // Validation of the LimitRange itself.
    let bad = "apiVersion: v1\nkind: LimitRange\nmetadata: {name: bad}\nspec:\n  limits:\n  - type: Container\n    min: {cpu: '2'}\n    max: {cpu: '1'}\n  - type: Pod\n    default: {cpu: '1'}\n  - type: Pod\n";
    let err = create_in(&s, "lr", bad).expect_err("invalid limit range");
    assert!(err.contains("spec.limits[0].min[cpu]: Invalid value: \"2\": min value 2 is greater than max value 1"), "{err}");
    assert!(err.contains("spec.limits[1].default: Forbidden: may not be specified when `type` is 'Pod'"), "{err}");
    assert!(err.contains("spec.limits[2].type: Duplicate value: \"Pod\""), "{err}");
    // Another namespace is not bound by it.
    create_in(&s, "default", &sized_pod("free", "{cpu: 10m}", "{cpu: '4'}")).expect("pod elsewhere");
}

#[test]
fn resource_quotas_track_usage_deny_beyond_hard_and_release_on_delete() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "namespace", "q"]);
    let compute = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: compute}\nspec:\n  hard: {pods: '2', requests.cpu: '1', requests.memory: 1Gi, limits.cpu: '2', limits.memory: 2Gi}\n";
    let objects = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: objects}\nspec:\n  hard: {configmaps: '2', secrets: '5', services: '1', persistentvolumeclaims: '2', requests.storage: 5Gi, count/deployments.apps: '1'}\n";
    create_in(&s, "q", compute).expect("compute quota");
    create_in(&s, "q", objects).expect("objects quota");
    let used = |quota: &str, res: &str| s.ok(&["get", "quota", quota, "-n", "q", "-o", &format!("jsonpath={{.status.used.{}}}", res.replace('.', "\\."))]);
    assert!(common::eventually(std::time::Duration::from_secs(30), || used("compute", "pods") == "0" && used("objects", "configmaps") == "0"), "status never computed");
    let q = s.get_json("/api/v1/namespaces/q/resourcequotas/compute");
    assert_eq!(q["status"]["hard"], q["spec"]["hard"], "{q}");
    for v in ["1.27", "1.32", "1.33"] {
        let out = s.kubectl_bin(&kubectl_of(v), &["get", "quota", "compute", "-n", "q"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{v}: {}", String::from_utf8_lossy(&out.stderr));
        let header: Vec<&str> = text.lines().next().unwrap_or("").split_whitespace().collect();
        assert_eq!(header, ["NAME", "AGE", "REQUEST", "LIMIT"], "{v}: {text}");
        assert!(text.contains("pods: 0/2, requests.cpu: 0/1, requests.memory: 0/1Gi") && text.contains("limits.cpu: 0/2, limits.memory: 0/2Gi"), "{v}: {text}");
    }

    // Compute quotas need every constrained resource stated.
    let err = create_in(&s, "q", &pod("bare", "")).expect_err("unsized pod");
    assert!(err.contains("pods \"bare\" is forbidden: failed quota: compute: must specify limits.cpu for: c; limits.memory for: c; requests.cpu for: c; requests.memory for: c"), "{err}");
    create_in(&s, "q", &sized_pod("p1", "{cpu: 600m, memory: 256Mi}", "{cpu: '1', memory: 512Mi}")).expect("p1");
    assert_eq!(used("compute", "requests.cpu"), "600m");
    assert_eq!(used("compute", "pods"), "1");
    let err = create_in(&s, "q", &sized_pod("p2", "{cpu: 600m, memory: 256Mi}", "{cpu: '1', memory: 512Mi}")).expect_err("over cpu");
    assert!(err.contains("pods \"p2\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"), "{err}");
    create_in(&s, "q", &sized_pod("p2", "{cpu: 300m, memory: 256Mi}", "{cpu: 500m, memory: 512Mi}")).expect("p2");
    let err = create_in(&s, "q", &sized_pod("p3", "{cpu: 10m, memory: 1Mi}", "{cpu: 10m, memory: 1Mi}")).expect_err("over pods");
    assert!(err.contains("exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"), "{err}");
    for v in ["1.27", "1.33"] {
        let out = s.kubectl_bin(&kubectl_of(v), &["describe", "quota", "compute", "-n", "q"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert!(rows.contains(&vec!["Name:", "compute"]) && rows.contains(&vec!["Resource", "Used", "Hard"]), "{v}: {text}");
        assert!(rows.contains(&vec!["pods", "2", "2"]) && rows.contains(&vec!["requests.cpu", "900m", "1"]), "{v}: {text}");
        assert!(rows.contains(&vec!["requests.memory", "512Mi", "1Gi"]) && rows.contains(&vec!["limits.memory", "1Gi", "2Gi"]), "{v}: {text}");
    }
    // A deleted pod's usage is released by the quota controller (recomputed from the store).
    s.ok(&["delete", "pod", "p1", "-n", "q", "--grace-period=0", "--force"]);
    assert!(common::eventually(std::time::Duration::from_secs(30), || used("compute", "requests.cpu") == "300m" && used("compute", "pods") == "1"), "{}", used("compute", "requests.cpu"));
    create_in(&s, "q", &sized_pod("p3", "{cpu: 10m, memory: 1Mi}", "{cpu: 10m, memory: 1Mi}")).expect("p3 after the release");

    // Object counts: legacy names and count/<resource>.<group>.
    for i in 0..2 {
        create_in(&s, "q", &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm{i}}}\n")).expect("configmap");
    }
    let err = create_in(&s, "q", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm2}\n").expect_err("third configmap");
    assert!(err.contains("configmaps \"cm2\" is forbidden: exceeded quota: objects, requested: configmaps=1, used: configmaps=2, limited: configmaps=2"), "{err}");
    let deploy = |name: &str| format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: registry.k8s.io/pause:3.9}}]}}\n");
    create_in(&s, "q", &deploy("d1")).expect("deployment");
    let err = create_in(&s, "q", &deploy("d2")).expect_err("second deployment");
    assert!(err.contains("exceeded quota: objects, requested: count/deployments.apps=1, used: count/deployments.apps=1, limited: count/deployments.apps=1"), "{err}");
    s.ok(&["create", "service", "clusterip", "one", "-n", "q", "--tcp=80:80"]);
    let err = s.fails(&["create", "service", "clusterip", "two", "-n", "q", "--tcp=80:80"], None);
    assert!(err.contains("exceeded quota: objects, requested: services=1, used: services=1, limited: services=1"), "{err}");
    let pvc = |name: &str, size: &str| format!("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: {size}}}}}\n");
    let err = create_in(&s, "q", &pvc("big", "10Gi")).expect_err("storage");
    assert!(err.contains("exceeded quota: objects, requested: requests.storage=10Gi, used: requests.storage=0, limited: requests.storage=5Gi"), "{err}");
    create_in(&s, "q", &pvc("small", "1Gi")).expect("claim");
    assert_eq!(used("objects", "requests.storage"), "1Gi");
    assert_eq!(used("objects", "persistentvolumeclaims"), "1");

    // Validation of the quota itself.
    let bad = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: bad}\nspec:\n  hard: {pods: '1.5', cpu: '-1', widgets: '3'}\n";
    let err = create_in(&s, "q", bad).expect_err("invalid quota");
    assert!(err.contains("spec.hard[pods]: Invalid value: \"1500m\": must be an integer"), "{err}");
    assert!(err.contains("spec.hard[cpu]: Invalid value: \"-1\": must be greater than or equal to 0"), "{err}");
    assert!(err.contains("spec.hard[widgets]: Invalid value: \"widgets\": must be a standard resource for quota"), "{err}");
    let bad = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: bad}\nspec:\n  hard: {requests.cpu: '1'}\n  scopes: [BestEffort, NotBestEffort]\n";
    let err = create_in(&s, "q", bad).expect_err("invalid scopes");
    assert!(err.contains("unsupported scope applied to resource") && err.contains("conflicting scopes"), "{err}");
}

#[test]
fn quota_scopes_select_pods_and_concurrent_creates_never_exceed_the_quota() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "namespace", "scoped"]);
    let be = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: best-effort}\nspec:\n  hard: {pods: '1'}\n  scopes: [BestEffort]\n";
    let term = "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: terminating}\nspec:\n  hard: {pods: '1'}\n  scopes: [Terminating]\n";
    create_in(&s, "scoped", be).expect("best-effort quota");
    create_in(&s, "scoped", term).expect("terminating quota");
    let used = |quota: &str| s.ok(&["get", "quota", quota, "-n", "scoped", "-o", "jsonpath={.status.used.pods}"]);
    assert!(common::eventually(std::time::Duration::from_secs(30), || used("best-effort") == "0" && used("terminating") == "0"), "status never computed");
    let described = s.ok(&["describe", "quota", "best-effort", "-n", "scoped"]);
    assert!(described.contains("Scopes:") && described.contains("BestEffort") && described.contains("Matches all pods that do not have resource requirements set"), "{described}");
    create_in(&s, "scoped", &pod("be1", "")).expect("first best-effort pod");
    let err = create_in(&s, "scoped", &pod("be2", "")).expect_err("second best-effort pod");
    assert!(err.contains("exceeded quota: best-effort, requested: pods=1, used: pods=1, limited: pods=1"), "{err}");
    // A pod with requests is not best effort: that quota does not see it.
    create_in(&s, "scoped", &sized_pod("burstable", "{cpu: 10m}", "{}")).expect("burstable pod");
    create_in(&s, "scoped", &sized_pod("job-like", "{cpu: 10m}", "{}").replace("spec:\n", "spec:\n  activeDeadlineSeconds: 60\n")).expect("terminating pod");
    let err = create_in(&s, "scoped", &sized_pod("job-like2", "{cpu: 10m}", "{}").replace("spec:\n", "spec:\n  activeDeadlineSeconds: 60\n")).expect_err("second terminating pod");
    assert!(err.contains("exceeded quota: terminating"), "{err}");
    assert_eq!(used("best-effort"), "1");
    assert_eq!(used("terminating"), "1");

    // Concurrent creates: admission charges the quota with compare-and-swap, so exactly as many
    // as it allows get through, however they race.
    s.ok(&["create", "namespace", "race"]);
    create_in(&s, "race", "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: three}\nspec:\n  hard: {configmaps: '3'}\n").expect("quota");
    let counted = || s.ok(&["get", "quota", "three", "-n", "race", "-o", "jsonpath={.status.used.configmaps}"]);
    assert!(common::eventually(std::time::Duration::from_secs(30), || counted() == "0"), "status never computed");
    let results: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10).map(|i| scope.spawn({ let s = &s; move || create_in(s, "race", &format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: racer-{i}}}\n")).is_ok() })).collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 3, "{results:?}");
    assert_eq!(s.items("/api/v1/namespaces/race/configmaps").len(), 3);
    assert_eq!(counted(), "3");
}

/// The lines of a `kubectl get` output split into columns.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines().map(|l| l.split_whitespace().map(str::to_string).collect()).collect()
}

/// `kubectl get` prints kube-apiserver's printer columns (generated from its printers.go), the wide
/// ones with `-o wide`, and the default convertor's for the kinds whose storage uses it.
#[test]
fn kubectl_get_prints_upstreams_columns() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: lock}\nspec: {holderIdentity: me_1, leaseDurationSeconds: 15}\n"));
    let got = rows(&s.ok(&["get", "lease", "lock"]));
    assert_eq!((got[0].clone(), got[1][..2].to_vec()), (vec!["NAME".to_string(), "HOLDER".into(), "AGE".into()], vec!["lock".to_string(), "me_1".into()]));
    s.ok(&["create", "deployment", "web", "--image=registry.k8s.io/pause:3.9", "--replicas=0"]);
    let got = rows(&s.ok(&["get", "deploy", "web", "-o", "wide"]));
    assert_eq!(got[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]);
    assert_eq!(got[1][5..], ["pause", "registry.k8s.io/pause:3.9", "app=web"]);
    s.ok(&["create", "rolebinding", "rb", "--clusterrole=view", "--user=ann", "--serviceaccount=default:sa"]);
    let got = rows(&s.ok(&["get", "rolebinding", "rb", "-o", "wide"]));
    assert_eq!(got[0], ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]);
    assert_eq!((got[1][1].as_str(), &got[1][3..]), ("ClusterRole/view", &["ann".to_string(), "default/sa".into()][..]));
    // Seen first 30 days and last 90 seconds ago.
    let ago = |secs: i64| (chrono::Utc::now() - chrono::Duration::seconds(secs)).format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let event = format!("apiVersion: v1\nkind: Event\nmetadata: {{name: e1}}\ninvolvedObject: {{kind: Pod, name: p, namespace: default}}\nreason: Pulled\nmessage: done\ntype: Normal\ncount: 3\nfirstTimestamp: \"{}\"\nlastTimestamp: \"{}\"\n", ago(30 * 86400), ago(90));
    s.ok_stdin(&["create", "-f", "-"], Some(&event));
    assert_eq!(rows(&s.ok(&["get", "events"]))[0], ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]);
    let wide = rows(&s.ok(&["get", "events", "-o", "wide"]));
    assert!(["90s", "91s", "92s"].contains(&wide[1][0].as_str()), "{wide:?}");
    assert_eq!(wide[1][1..], ["Normal", "Pulled", "pod/p", "done", "30d", "3", "e1"], "{wide:?}");
    assert_eq!(rows(&s.ok(&["get", "clusterroles", "view"]))[0], ["NAME", "CREATED", "AT"]);
}

#[test]
fn pod_templates_ingresses_ingress_classes_and_network_policies() {
    let s = ApiServer::start(Backend::Embedded);
    // PodTemplate: a pod template, defaulted and validated as one.
    let tmpl = "apiVersion: v1\nkind: PodTemplate\nmetadata: {name: tmpl}\ntemplate:\n  metadata: {labels: {app: web}}\n  spec: {containers: [{name: c, image: registry.k8s.io/pause:3.9}]}\n";
    s.ok_stdin(&["create", "-f", "-"], Some(tmpl));
    let got = rows(&s.ok(&["get", "podtemplates"]));
    assert_eq!(got[0], ["NAME", "CONTAINERS", "IMAGES", "POD", "LABELS"]);
    assert_eq!(got[1], ["tmpl", "c", "registry.k8s.io/pause:3.9", "app=web"]);
    assert_eq!(s.get_json("/api/v1/namespaces/default/podtemplates/tmpl")["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: v1\nkind: PodTemplate\nmetadata: {name: empty}\ntemplate: {spec: {}}\n"));
    assert!(err.contains("template.spec.containers: Required value"), "{err}");

    // IngressClass, the default one given to an Ingress that names none (DefaultIngressClass).
    let class = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: nginx\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec:\n  controller: k8s.io/ingress-nginx\n  parameters: {apiGroup: k8s.example.com, kind: IngressParameters, name: external-lb}\n";
    s.ok_stdin(&["create", "-f", "-"], Some(class));
    let got = rows(&s.ok(&["get", "ingressclasses"]));
    assert_eq!(got[0], ["NAME", "CONTROLLER", "PARAMETERS", "AGE"]);
    assert_eq!(&got[1][..3], ["nginx", "k8s.io/ingress-nginx", "IngressParameters.k8s.example.com/external-lb"]);
    assert_eq!(s.get_json("/apis/networking.k8s.io/v1/ingressclasses/nginx")["spec"]["parameters"]["scope"], "Cluster");
    let err = s.fails(&["patch", "ingressclass", "nginx", "-p", r#"{"spec":{"controller":"example.com/other"}}"#], None);
    assert!(err.contains("spec.controller: Invalid value: \"example.com/other\": field is immutable"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: bad}\nspec: {controller: nginx}\n"));
    assert!(err.contains("spec.controller: Invalid value: \"nginx\": must be a domain-prefixed path (such as \"acme.io/foo\")"), "{err}");

    // Ingress: created by kubectl's generator (protobuf body), listed with upstream's columns.
    s.ok(&["create", "ingress", "web", "--rule=a.example.com/=web:80", "--rule=b.example.com/api*=api:8080"]);
    let ing = s.get_json("/apis/networking.k8s.io/v1/namespaces/default/ingresses/web");
    assert_eq!(ing["spec"]["ingressClassName"], "nginx", "{ing}");
    assert_eq!(ing["spec"]["rules"][1]["http"]["paths"][0]["pathType"], "Prefix", "{ing}");
    assert_eq!(ing["spec"]["rules"][1]["http"]["paths"][0]["backend"]["service"]["port"]["number"], 8080, "{ing}");
    for v in ["1.27", "1.33"] {
        let out = s.kubectl_bin(&kubectl_of(v), &["get", "ingress"], None);
        let got = rows(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(got[0], ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"], "{v}");
        assert_eq!(&got[1][..4], ["web", "nginx", "a.example.com,b.example.com", "80"], "{v}");
    }
    let bad = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: bad}\nspec:\n  rules:\n  - host: 10.0.0.1\n    http:\n      paths:\n      - path: /\n        backend: {service: {name: web, port: {number: 80}}}\n      - path: relative\n        pathType: Exact\n        backend: {service: {name: web, port: {name: http, number: 80}}}\n";
    let err = s.fails(&["create", "-f", "-"], Some(bad));
    assert!(err.contains("spec.rules[0].host: Invalid value: \"10.0.0.1\": must be a DNS name, not an IP address"), "{err}");
    assert!(err.contains("spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"), "{err}");
    assert!(err.contains("spec.rules[0].http.paths[1].path: Invalid value: \"relative\": must be an absolute path"), "{err}");
    assert!(err.contains("spec.rules[0].http.paths[1].backend: Invalid value: \"\": cannot set both port name & port number"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: empty}\nspec: {}\n"));
    assert!(err.contains("either `defaultBackend` or `rules` must be specified"), "{err}");
    let explain = s.ok(&["explain", "ingress.spec.rules.http.paths"]);
    assert!(explain.contains("pathType") && explain.contains("backend"), "{explain}");

    // NetworkPolicy: policyTypes and port protocols defaulted; stored, not enforced.
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web-only}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from: [{podSelector: {matchLabels: {role: frontend}}}]\n    ports: [{port: 80}]\n  egress:\n  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]\n";
    s.ok_stdin(&["create", "-f", "-"], Some(np));
    let got = s.get_json("/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/web-only");
    assert_eq!(got["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]), "{got}");
    assert_eq!(got["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP", "{got}");
    let got = rows(&s.ok(&["get", "netpol"]));
    assert_eq!(got[0], ["NAME", "POD-SELECTOR", "AGE"]);
    assert_eq!(&got[1][..2], ["web-only", "app=web"]);
    let bad = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: bad}\nspec:\n  podSelector: {}\n  ingress:\n  - from: [{ipBlock: {cidr: 10.0.0.0/8, except: [192.168.0.0/16]}, podSelector: {}}]\n";
    let err = s.fails(&["create", "-f", "-"], Some(bad));
    assert!(err.contains("spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer"), "{err}");
    assert!(err.contains("spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"192.168.0.0/16\": must be a strict subset of `cidr`"), "{err}");
    // Client-side apply removes a dropped rule (the published schema carries upstream's list types).
    let applied = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: applied}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress]\n  ingress:\n  - ports: [{port: 80}, {port: 443}]\n";
    s.ok_stdin(&["apply", "-f", "-"], Some(applied));
    s.ok_stdin(&["apply", "-f", "-"], Some(&applied.replace(", {port: 443}", "")));
    let got = s.get_json("/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/applied");
    assert_eq!(got["spec"]["ingress"][0]["ports"].as_array().map(Vec::len), Some(1), "{got}");
}

#[test]
fn horizontal_pod_autoscalers_are_one_object_served_at_v1_and_v2() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "deployment", "web", "--image=registry.k8s.io/pause:3.9"]);
    s.ok(&["autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=60"]);
    let v1 = s.get_json("/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web");
    let v2 = s.get_json("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web");
    assert_eq!((v1["apiVersion"].as_str(), v1["spec"]["targetCPUUtilizationPercentage"].as_i64()), (Some("autoscaling/v1"), Some(60)), "{v1}");
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 60, "{v2}");
    assert_eq!(v1["metadata"]["resourceVersion"], v2["metadata"]["resourceVersion"]);
    for v in ["1.27", "1.32", "1.33"] {
        let out = s.kubectl_bin(&kubectl_of(v), &["get", "hpa"], None);
        let got = rows(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(got[0], ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"], "{v}");
        assert_eq!(&got[1][..7], ["web", "Deployment/web", "cpu:", "<unknown>/60%", "2", "5", "0"], "{v}");
    }
    // Written at v2 with a metric v1 cannot express: v1 carries it in upstream's annotation,
    // and a v1 round trip (kubectl replace of the v1 object) keeps it.
    let mem = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: mem}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  maxReplicas: 3\n  metrics:\n  - type: Resource\n    resource: {name: memory, target: {type: AverageValue, averageValue: 100Mi}}\n";
    s.ok_stdin(&["create", "-f", "-"], Some(mem));
    let v1 = s.get_json("/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/mem");
    let note = v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"].as_str().unwrap_or("").to_string();
    assert!(note.contains("\"targetAverageValue\":\"100Mi\"") && v1["spec"]["targetCPUUtilizationPercentage"].is_null(), "{v1}");
    let mut edited = v1.clone();
    edited["spec"]["maxReplicas"] = serde_json::json!(4);
    s.ok_stdin(&["replace", "-f", "-"], Some(&edited.to_string()));
    let v2 = s.get_json("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/mem");
    assert_eq!(v2["spec"]["maxReplicas"], 4, "{v2}");
    assert_eq!(v2["spec"]["metrics"], serde_json::json!([{"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}}]), "{v2}");
    assert!(v2["metadata"]["annotations"].is_null(), "{v2}");
    // Created at v1: the default minimum, the CPU target as a v2 metric.
    let old = "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata: {name: old}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  maxReplicas: 2\n  targetCPUUtilizationPercentage: 70\n";
    s.ok_stdin(&["create", "-f", "-"], Some(old));
    let v2 = s.get_json("/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/old");
    assert_eq!((v2["spec"]["minReplicas"].as_i64(), v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"].as_i64()), (Some(1), Some(70)), "{v2}");
    // Both versions list the same objects; a watch at v1 sees v1 objects.
    assert_eq!(s.items("/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers").len(), 3);
    let (code, body) = s.curl("GET", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers?watch=1&timeoutSeconds=1", common::server::Auth::Admin, None, None);
    assert_eq!(code, 200);
    assert_eq!(body.lines().filter(|l| l.contains("\"apiVersion\":\"autoscaling/v1\"")).count(), 3, "{body}");
    let err = s.fails(&["create", "-f", "-"], Some(&old.replace("name: old", "name: inverted").replace("maxReplicas: 2", "maxReplicas: 2\n  minReplicas: 3")));
    assert!(err.contains("spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some(&mem.replace("name: mem", "name: nokind").replace("kind: Deployment, ", "")));
    assert!(err.contains("spec.scaleTargetRef.kind: Required value"), "{err}");
    let res = s.ok(&["api-resources", "--api-group=autoscaling"]);
    assert!(res.contains("autoscaling/v2"), "{res}");
    let explain = s.ok(&["explain", "hpa.spec.metrics.resource.target", "--api-version=autoscaling/v2"]);
    assert!(explain.contains("averageUtilization"), "{explain}");
}

#[test]
fn csi_objects_webhook_configurations_and_events_v1() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: csi.example.com}\nspec: {podInfoOnMount: true}\n"));
    let got = rows(&s.ok(&["get", "csidrivers"]));
    assert_eq!(got[0], ["NAME", "ATTACHREQUIRED", "PODINFOONMOUNT", "STORAGECAPACITY", "TOKENREQUESTS", "REQUIRESREPUBLISH", "MODES", "AGE"]);
    assert_eq!(&got[1][..7], ["csi.example.com", "true", "true", "false", "<unset>", "false", "Persistent"]);
    let err = s.fails(&["patch", "csidriver", "csi.example.com", "-p", r#"{"spec":{"attachRequired":false}}"#], None);
    assert!(err.contains("field is immutable"), "{err}");
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: storage.k8s.io/v1\nkind: CSINode\nmetadata: {name: node-a}\nspec:\n  drivers: [{name: csi.example.com, nodeID: node-a, topologyKeys: [topology.kubernetes.io/zone]}]\n"));
    let got = rows(&s.ok(&["get", "csinodes"]));
    assert_eq!((got[0][..2].to_vec(), got[1][..2].to_vec()), (vec!["NAME".to_string(), "DRIVERS".into()], vec!["node-a".to_string(), "1".into()]));
    // CSIStorageCapacity (namespaced): what kube-scheduler's VolumeBinding plugin lists.
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: storage.k8s.io/v1\nkind: CSIStorageCapacity\nmetadata: {name: cap-a, namespace: default}\nstorageClassName: fast\ncapacity: 10Gi\nnodeTopology: {matchLabels: {topology.kubernetes.io/zone: a}}\n"));
    let got = rows(&s.ok(&["get", "csistoragecapacities"]));
    // Its storage converts with the default convertor (as Roles), not the printer printers.go has.
    assert_eq!((got[0].clone(), got[1][0].clone()), (vec!["NAME".to_string(), "CREATED".into(), "AT".into()], "cap-a".to_string()));
    assert!(got[1][1].ends_with('Z'), "{got:?}");
    s.ok(&["patch", "csistoragecapacity", "cap-a", "--type=merge", "-p", r#"{"capacity":"20Gi"}"#]);
    let err = s.fails(&["patch", "csistoragecapacity", "cap-a", "--type=merge", "-p", r#"{"storageClassName":"slow"}"#], None);
    assert!(err.contains("storageClassName: Invalid value: \"slow\": field is immutable"), "{err}");
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: storage.k8s.io/v1\nkind: CSIStorageCapacity\nmetadata: {name: cap-b, namespace: default}\nstorageClassName: Not_A_Class\ncapacity: \"-1\"\n"));
    assert!(err.contains("storageClassName: Invalid value: \"Not_A_Class\": a lowercase RFC 1123 subdomain") && err.contains("capacity: Invalid value: \"-1\": must be greater than or equal to 0"), "{err}");
    let va = "apiVersion: storage.k8s.io/v1\nkind: VolumeAttachment\nmetadata: {name: va-1}\nspec: {attacher: csi.example.com, nodeName: node-a, source: {persistentVolumeName: pv-1}}\n";
    s.ok_stdin(&["create", "-f", "-"], Some(va));
    let got = rows(&s.ok(&["get", "volumeattachments"]));
    assert_eq!(got[0], ["NAME", "ATTACHER", "PV", "NODE", "ATTACHED", "AGE"]);
    assert_eq!(&got[1][..5], ["va-1", "csi.example.com", "pv-1", "node-a", "false"]);
    let err = s.fails(&["create", "-f", "-"], Some(&va.replace("va-1", "va-2").replace("{persistentVolumeName: pv-1}", "{}")));
    assert!(err.contains("spec.source: Required value: must specify exactly one of inlineVolumeSpec and persistentVolumeName"), "{err}");

    // Webhook configurations are stored with upstream's defaults and validation
    // (tests/apimachinery.rs `admission_webhooks_are_called` calls them).
    let hook = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: deny-pods}\nwebhooks:\n- name: deny.pods.example.com\n  clientConfig: {url: \"https://127.0.0.1:1/deny\"}\n  rules: [{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods]}]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n";
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(hook));
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !warned.contains("Warning"), "{warned}");
    let got = s.get_json("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/deny-pods");
    let h = &got["webhooks"][0];
    assert_eq!((h["failurePolicy"].as_str(), h["matchPolicy"].as_str(), h["timeoutSeconds"].as_i64(), h["rules"][0]["scope"].as_str()), (Some("Fail"), Some("Equivalent"), Some(10), Some("*")), "{got}");
    let got = rows(&s.ok(&["get", "validatingwebhookconfigurations"]));
    assert_eq!((&got[0][..2], &got[1][..2]), (&["NAME".to_string(), "WEBHOOKS".into()][..], &["deny-pods".to_string(), "1".into()][..]));
    s.ok_stdin(&["create", "-f", "-"], Some(&hook.replace("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")));
    assert_eq!(s.get_json("/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/deny-pods")["webhooks"][0]["reinvocationPolicy"], "Never");
    let err = s.fails(&["create", "-f", "-"], Some(&hook.replace("deny-pods", "bad").replace("  sideEffects: None\n", "").replace("deny.pods.example.com", "deny")));
    assert!(err.contains("webhooks[0].name: Invalid value: \"deny\": should be a domain with at least three segments separated by dots"), "{err}");
    assert!(err.contains("webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"), "{err}");
    // Called: a pod its rule matches is refused while the webhook cannot answer
    // (failurePolicy Fail), and admitted once the configurations are gone.
    let mut err = String::new();
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || {
            let out = s.kubectl_stdin(&["create", "-f", "-"], Some(&pod("unhooked", "")));
            err = String::from_utf8_lossy(&out.stderr).to_string();
            !out.status.success()
        }),
        "a pod was admitted past a webhook that cannot answer"
    );
    assert!(err.contains("failed calling webhook \"deny.pods.example.com\""), "{err}");
    s.ok(&["delete", "validatingwebhookconfiguration,mutatingwebhookconfiguration", "deny-pods"]);
    assert!(common::eventually(std::time::Duration::from_secs(10), || s.kubectl_stdin(&["create", "-f", "-"], Some(&pod("unhooked", ""))).status.success()), "the pod was refused after the webhooks were deleted");

    // events.k8s.io/v1 is a view of core Events: written in one, read in the other.
    let core = "apiVersion: v1\nkind: Event\nmetadata: {name: started.1}\ninvolvedObject: {kind: Pod, name: unhooked, namespace: default}\nreason: Started\nmessage: container started\ntype: Normal\nsource: {component: kubelet}\ncount: 2\nfirstTimestamp: \"2026-01-01T00:00:00Z\"\nlastTimestamp: \"2026-01-01T00:01:00Z\"\n";
    s.ok_stdin(&["create", "-f", "-"], Some(core));
    let view = s.get_json("/apis/events.k8s.io/v1/namespaces/default/events/started.1");
    assert_eq!((view["regarding"]["name"].as_str(), view["note"].as_str(), view["deprecatedCount"].as_i64()), (Some("unhooked"), Some("container started"), Some(2)), "{view}");
    let modern = "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: pulled.1}\neventTime: \"2026-01-01T00:02:00.000000Z\"\nreportingController: example.com/puller\nreportingInstance: puller-1\naction: Pull\nreason: Pulled\nnote: image pulled\ntype: Normal\nregarding: {kind: Pod, name: unhooked, namespace: default}\n";
    s.ok_stdin(&["create", "-f", "-"], Some(modern));
    let back = s.get_json("/api/v1/namespaces/default/events/pulled.1");
    assert_eq!((back["involvedObject"]["name"].as_str(), back["message"].as_str(), back["reportingComponent"].as_str()), (Some("unhooked"), Some("image pulled"), Some("example.com/puller")), "{back}");
    assert_eq!(s.items("/apis/events.k8s.io/v1/namespaces/default/events").len(), 2);
    // Field selectors name the events.k8s.io fields (upstream's field label conversion).
    let picked = s.items("/apis/events.k8s.io/v1/namespaces/default/events?fieldSelector=regarding.name=unhooked,reason=Pulled");
    assert_eq!(picked.iter().map(|e| e["note"].as_str().unwrap_or("")).collect::<Vec<_>>(), ["image pulled"], "{picked:?}");
    let (code, body) = s.curl("GET", "/apis/events.k8s.io/v1/namespaces/default/events?watch=1&timeoutSeconds=1&fieldSelector=regarding.kind=Pod,type=Normal", common::server::Auth::Admin, None, None);
    assert_eq!((code, body.lines().filter(|l| l.contains("\"regarding\"")).count()), (200, 2), "{body}");
    let err = s.fails(&["create", "-f", "-"], Some(&modern.replace("pulled.1", "bad.1").replace("reportingController: example.com/puller\n", "").replace("type: Normal", "type: Odd")));
    assert!(err.contains("reportingController: Required value") && err.contains("type: Invalid value: \"\": has invalid value: Odd"), "{err}");
    for v in ["1.32", "1.33"] {
        let out = s.kubectl_bin(&kubectl_of(v), &["events", "-n", "default"], None);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{v}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("container started") && text.contains("image pulled") && text.contains("Pod/unhooked"), "{v}: {text}");
    }
    let res = s.ok(&["api-resources", "--api-group=events.k8s.io"]);
    assert!(res.contains("events.k8s.io/v1"), "{res}");
}

/// The peak resident memory of a process (VmHWM), in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

#[test]
fn yaml_bodies_are_accepted_everywhere_and_bounded() {
    use common::server::Auth;
    let s = ApiServer::start(Backend::Embedded);
    let yaml = Some("application/yaml");
    // Create, update, subresources, server-side apply and delete options, all as YAML.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: y, namespace: default}\ndata: {a: \"1\"}\n";
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, yaml, Some(cm.as_bytes()));
    assert_eq!(code, 201, "{body}");
    let (code, body) = s.curl("PUT", "/api/v1/namespaces/default/configmaps/y", Auth::Admin, yaml, Some(cm.replace("\"1\"", "\"2\"").as_bytes()));
    assert_eq!(code, 200, "{body}");
    let apply = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: y}\ndata: {b: \"3\"}\n";
    let (code, body) = s.curl("PATCH", "/api/v1/namespaces/default/configmaps/y?fieldManager=yaml-test&force=true", Auth::Admin, Some("application/apply-patch+yaml"), Some(apply.as_bytes()));
    assert_eq!(code, 200, "{body}");
    assert_eq!(s.get_json("/api/v1/namespaces/default/configmaps/y")["data"], serde_json::json!({"a": "2", "b": "3"}));
    // Anchors and aliases within reason are YAML like any other, and non-string keys become
    // strings as sigs.k8s.io/yaml converts them.
    let anchored = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: anchored\n  labels: &l {app: web, 1: one}\n  annotations: *l\n";
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, yaml, Some(anchored.as_bytes()));
    assert_eq!(code, 201, "{body}");
    let got = s.get_json("/api/v1/namespaces/default/configmaps/anchored");
    assert_eq!(got["metadata"]["annotations"], serde_json::json!({"app": "web", "1": "one"}), "{got}");
    let (code, body) = s.curl("POST", "/api/v1/namespaces", Auth::Admin, yaml, Some(b"apiVersion: v1\nkind: Namespace\nmetadata: {name: yaml-ns}\n"));
    assert_eq!(code, 201, "{body}");
    let (code, body) = s.curl("DELETE", "/api/v1/namespaces/default/configmaps/y", Auth::Admin, yaml, Some(b"apiVersion: v1\nkind: DeleteOptions\ngracePeriodSeconds: 0\n"));
    assert_eq!(code, 200, "{body}");

    let pid = s.pid().expect("server pid");
    let before = peak_kib(pid);
    // A billion laughs: nine levels of nine aliases.
    let mut bomb = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: laughs}\nx0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let p = i - 1;
        bomb.push_str(&format!("x{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, yaml, Some(bomb.as_bytes()));
    assert_eq!(code, 400, "{body}");
    // Quadratic expansion: one anchored list of 3,000 items aliased 3,000 times (40 KB that
    // would decode to 9 million values).
    let mut quad = String::from("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: quad}\nitems: &big [");
    quad.push_str(&vec!["1"; 3000].join(","));
    quad.push_str("]\nmore: [");
    quad.push_str(&vec!["*big"; 3000].join(","));
    quad.push_str("]\n");
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, yaml, Some(quad.as_bytes()));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("excessive aliasing"), "{body}");
    // The same through server-side apply.
    let (code, body) = s.curl("PATCH", "/api/v1/namespaces/default/configmaps/quad?fieldManager=yaml-test", Auth::Admin, Some("application/apply-patch+yaml"), Some(quad.as_bytes()));
    assert_eq!(code, 400, "{body}");
    // Nesting beyond the limit.
    let deep = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\nx: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, yaml, Some(deep.as_bytes()));
    assert_eq!(code, 400, "{body}");
    let deep_json = format!("{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"deep\"}},\"x\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, Some("application/json"), Some(deep_json.as_bytes()));
    assert_eq!(code, 400, "{body}");
    // Several documents in one body.
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, yaml, Some(format!("{cm}---\n{cm}").as_bytes()));
    assert_eq!(code, 400, "{body}");
    let grown = peak_kib(pid).saturating_sub(before);
    assert!(grown < 64 * 1024, "the server's peak memory grew by {grown} KiB decoding refused bodies");
    assert_eq!(s.kubectl(&["get", "configmap", "quad"]).status.code(), Some(1));
    // And the server still serves.
    assert_eq!(s.get_json("/api/v1/namespaces/default/configmaps/anchored")["metadata"]["name"], "anchored");
}

#[test]
fn quota_charges_are_conflict_safe_on_etcd_too() {
    // The same race as above on the etcd store: the charge and the create are one etcd
    // transaction compared on the quota's revision.
    let s = ApiServer::start(Backend::Etcd);
    s.ok(&["create", "namespace", "race"]);
    s.ok(&["create", "quota", "two", "-n", "race", "--hard=pods=2,secrets=4"]);
    let counted = |r: &str| s.ok(&["get", "quota", "two", "-n", "race", "-o", &format!("jsonpath={{.status.used.{r}}}")]);
    assert!(common::eventually(std::time::Duration::from_secs(30), || counted("pods") == "0" && counted("secrets") == "0"), "status never computed");
    let results: Vec<bool> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|i| scope.spawn({ let s = &s; move || create_in(s, "race", &pod(&format!("racer-{i}"), "")).is_ok() })).collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 2, "{results:?}");
    assert_eq!(s.items("/api/v1/namespaces/race/pods").len(), 2);
    assert_eq!(counted("pods"), "2");
    // A create that fails for another reason (the name is taken) charges nothing.
    s.ok(&["create", "secret", "generic", "taken", "-n", "race"]);
    assert_eq!(counted("secrets"), "1");
    let err = s.fails(&["create", "secret", "generic", "taken", "-n", "race"], None);
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(counted("secrets"), "1");
    // Deleting releases, through the controller.
    s.ok(&["delete", "secret", "taken", "-n", "race"]);
    assert!(common::eventually(std::time::Duration::from_secs(30), || counted("secrets") == "0"), "{}", counted("secrets"));
}

#[test]
fn quota_charges_updates_that_raise_usage() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "namespace", "upd"]);
    create_in(&s, "upd", "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: limits}\nspec:\n  hard: {services.nodeports: '1', services.loadbalancers: '0', requests.storage: 5Gi}\n").expect("quota");
    let used = |r: &str| s.ok(&["get", "quota", "limits", "-n", "upd", "-o", &format!("jsonpath={{.status.used.{}}}", r.replace('.', "\\."))]);
    assert!(common::eventually(std::time::Duration::from_secs(30), || used("requests.storage") == "0"), "status never computed");
    // A Service turned NodePort asks for node ports; LoadBalancer for a load balancer.
    s.ok(&["create", "service", "clusterip", "web", "-n", "upd", "--tcp=80:80", "--tcp=443:443"]);
    let err = s.fails(&["patch", "service", "web", "-n", "upd", "-p", r#"{"spec":{"type":"NodePort"}}"#], None);
    assert!(err.contains("services \"web\" is forbidden: exceeded quota: limits, requested: services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"), "{err}");
    let err = s.fails(&["patch", "service", "web", "-n", "upd", "-p", r#"{"spec":{"type":"LoadBalancer"}}"#], None);
    assert!(err.contains("services.loadbalancers=1"), "{err}");
    assert_eq!(s.ok(&["get", "service", "web", "-n", "upd", "-o", "jsonpath={.spec.type}"]), "ClusterIP");
    // A claim grown beyond the storage quota is refused; within it, charged at once.
    let pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n";
    create_in(&s, "upd", pvc).expect("claim");
    assert_eq!(used("requests.storage"), "1Gi");
    let err = s.fails(&["patch", "pvc", "data", "-n", "upd", "-p", r#"{"spec":{"resources":{"requests":{"storage":"10Gi"}}}}"#], None);
    assert!(err.contains("exceeded quota: limits, requested: requests.storage=9Gi, used: requests.storage=1Gi, limited: requests.storage=5Gi"), "{err}");
    s.ok(&["patch", "pvc", "data", "-n", "upd", "-p", r#"{"spec":{"resources":{"requests":{"storage":"4Gi"}}}}"#]);
    assert_eq!(used("requests.storage"), "4Gi");
}

/// ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding (admissionregistration.k8s.io/v1)
/// served like every kind: upstream's defaults and validation, the policy's status subresource,
/// generation, Table columns, discovery, OpenAPI and deletecollection — what upstream's
/// "should support ValidatingAdmissionPolicy(Binding) API operations" specs do.
#[test]
fn validating_admission_policies_and_bindings_are_served() {
    let s = ApiServer::start(Backend::Embedded);
    let base = "/apis/admissionregistration.k8s.io/v1";
    let policy = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: replicalimit-policy.example.com, labels: {e2e: vap}}\nspec:\n  validations: [{expression: \"object.spec.replicas <= 100\"}]\n  matchConstraints:\n    resourceRules: [{operations: [CREATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}]\n";
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(policy));
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !warned.contains("Warning"), "{warned}");
    let got = s.get_json(&format!("{base}/validatingadmissionpolicies/replicalimit-policy.example.com"));
    let mc = &got["spec"]["matchConstraints"];
    assert_eq!(
        (got["spec"]["failurePolicy"].as_str(), mc["matchPolicy"].as_str(), mc["namespaceSelector"].clone(), mc["resourceRules"][0]["scope"].as_str(), got["metadata"]["generation"].as_i64()),
        (Some("Fail"), Some("Equivalent"), serde_json::json!({}), Some("*"), Some(1)),
        "{got}"
    );
    for v in ["1.27", "1.32", "1.33"] {
        let out = s.kubectl_bin(&kubectl_of(v), &["get", "validatingadmissionpolicies"], None);
        assert!(out.status.success(), "{v}: {}", String::from_utf8_lossy(&out.stderr));
        let got = rows(&String::from_utf8_lossy(&out.stdout));
        assert_eq!((&got[0][..], &got[1][..3]), (&["NAME".to_string(), "VALIDATIONS".into(), "PARAMKIND".into(), "AGE".into()][..], &["replicalimit-policy.example.com".to_string(), "1".into(), "<unset>".into()][..]), "{v}");
    }
    // status: written through the subresource only, kept by spec writes; spec moves generation.
    s.ok(&["patch", "validatingadmissionpolicy", "replicalimit-policy.example.com", "--subresource=status", "--type=merge", "-p",
        r#"{"status":{"conditions":[{"type":"PatchStatusFailed","status":"False","reason":"e2e","message":"set by a test","lastTransitionTime":"2024-01-01T00:00:00Z"}]}}"#]);
    s.ok(&["patch", "validatingadmissionpolicy", "replicalimit-policy.example.com", "--type=merge", "-p", r#"{"spec":{"failurePolicy":"Ignore"},"status":{"conditions":[]}}"#]);
    let got = s.get_json(&format!("{base}/validatingadmissionpolicies/replicalimit-policy.example.com"));
    assert_eq!((got["status"]["conditions"][0]["type"].as_str(), got["spec"]["failurePolicy"].as_str(), got["metadata"]["generation"].as_i64()), (Some("PatchStatusFailed"), Some("Ignore"), Some(2)), "{got}");
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: bad.example.com}\nspec: {failurePolicy: Maybe}\n"));
    for want in [
        "spec.failurePolicy: Unsupported value: \"Maybe\": supported values: \"Fail\", \"Ignore\"",
        "spec.matchConstraints: Required value",
        "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }

    let binding = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {name: replicalimit-binding.example.com, labels: {e2e: vap}}\nspec: {policyName: replicalimit-policy.example.com, validationActions: [Deny], paramRef: {name: limits, namespace: default, parameterNotFoundAction: Deny}}\n";
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(binding));
    assert!(out.status.success(), "{out:?}");
    let got = rows(&s.ok(&["get", "validatingadmissionpolicybindings"]));
    assert_eq!((&got[0][..], &got[1][..3]), (&["NAME".to_string(), "POLICYNAME".into(), "PARAMREF".into(), "AGE".into()][..], &["replicalimit-binding.example.com".to_string(), "replicalimit-policy.example.com".into(), "default/limits".into()][..]));
    s.ok(&["patch", "validatingadmissionpolicybinding", "replicalimit-binding.example.com", "--type=merge", "-p", r#"{"spec":{"validationActions":["Warn","Audit"]}}"#]);
    let err = s.fails(&["create", "-f", "-"], Some("apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {name: bad.example.com}\nspec: {validationActions: [Deny, Warn]}\n"));
    assert!(err.contains("spec.policyName: Required value") && err.contains("must not contain both Deny and Warn"), "{err}");

    // Discovery (with the status subresource) and OpenAPI know both kinds.
    let res = s.ok(&["api-resources", "--api-group=admissionregistration.k8s.io", "-o", "name"]);
    assert!(res.contains("validatingadmissionpolicies.admissionregistration.k8s.io") && res.contains("validatingadmissionpolicybindings.admissionregistration.k8s.io"), "{res}");
    let disc = s.get_json(base);
    let names: Vec<&str> = disc["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"validatingadmissionpolicies/status"), "{names:?}");
    let openapi = s.get_json(&format!("/openapi/v3{base}"));
    for k in ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"] {
        assert!(openapi["components"]["schemas"][format!("io.k8s.api.admissionregistration.v1.{k}")].is_object(), "{k} not in the OpenAPI document");
    }
    // deletecollection by label takes both.
    for plural in ["validatingadmissionpolicies", "validatingadmissionpolicybindings"] {
        let (code, out) = s.curl("DELETE", &format!("{base}/{plural}?labelSelector=e2e%3Dvap"), common::server::Auth::Admin, None, None);
        assert_eq!(code, 200, "{out}");
        assert!(s.items(&format!("{base}/{plural}")).is_empty(), "{plural} left");
    }
}

/// ValidatingAdmissionPolicies are enforced on creates and updates (CEL by the `cel` crate), as
/// upstream's "should validate against a Deployment" and "should allow expressions to refer
/// variables" specs use them: matchConstraints with a namespaceSelector, variables,
/// messageExpression (falling back to message when it fails), namespaceObject; Deny is a 422,
/// Warn a warning kubectl prints, an evaluation error follows failurePolicy.
#[test]
fn validating_admission_policies_are_enforced() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "namespace", "guarded"]);
    s.ok(&["label", "namespace", "guarded", "vap-test=true"]);
    s.ok(&["create", "namespace", "free"]);
    let policy = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {name: replicas.example.com}\nspec:\n  matchConstraints:\n    namespaceSelector: {matchLabels: {vap-test: \"true\"}}\n    resourceRules: [{operations: [CREATE, UPDATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}]\n  variables:\n  - {name: replicas, expression: object.spec.replicas}\n  - {name: oddReplicas, expression: \"variables.replicas % 2 == 1\"}\n  validations:\n  - {expression: \"variables.replicas > 1\", messageExpression: \"'wants replicas > 1, got ' + object.spec.replicas\", message: wants more than one replica}\n  - {expression: variables.oddReplicas, messageExpression: \"'odd replicas only in ' + namespaceObject.metadata.name\"}\n";
    s.ok_stdin(&["create", "-f", "-"], Some(policy));
    let binding = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {name: replicas-binding.example.com}\nspec: {policyName: replicas.example.com, validationActions: [Deny], matchResources: {namespaceSelector: {matchLabels: {vap-test: \"true\"}}}}\n";
    s.ok_stdin(&["create", "-f", "-"], Some(binding));
    let deploy = |name: &str, ns: &str, replicas: u32| {
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec: {{containers: [{{name: c, image: registry.k8s.io/pause:3.9}}]}}\n")
    };
    let err = s.fails(&["create", "-f", "-"], Some(&deploy("one", "guarded", 1)));
    assert!(err.contains("ValidatingAdmissionPolicy 'replicas.example.com' with binding 'replicas-binding.example.com' denied request: wants more than one replica"), "{err}");
    let (code, out) = s.curl("POST", "/apis/apps/v1/namespaces/guarded/deployments", common::server::Auth::Admin, Some("application/yaml"), Some(deploy("one", "guarded", 1).as_bytes()));
    let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!((code, status["reason"].as_str()), (422, Some("Invalid")), "{out}");
    let err = s.fails(&["create", "-f", "-"], Some(&deploy("two", "guarded", 2)));
    assert!(err.contains("denied request: odd replicas only in guarded"), "{err}");
    s.ok_stdin(&["create", "-f", "-"], Some(&deploy("three", "guarded", 3)));
    // Not selected: another namespace, another kind.
    s.ok_stdin(&["create", "-f", "-"], Some(&deploy("one", "free", 1)));
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: rs, namespace: guarded}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: rs}}\n  template:\n    metadata: {labels: {app: rs}}\n    spec: {containers: [{name: c, image: registry.k8s.io/pause:3.9}]}\n"));
    // Updates too.
    let err = s.fails(&["patch", "deployment", "three", "-n", "guarded", "--type=merge", "-p", r#"{"spec":{"replicas":4}}"#], None);
    assert!(err.contains("odd replicas only in guarded"), "{err}");
    // And server-side apply, creating and updating (it was not evaluated there before).
    let err = s.fails(&["apply", "--server-side", "-f", "-"], Some(&deploy("applied", "guarded", 2)));
    assert!(err.contains("odd replicas only in guarded"), "{err}");
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some(&deploy("applied", "guarded", 3)));
    let err = s.fails(&["apply", "--server-side", "-f", "-"], Some(&deploy("applied", "guarded", 4)));
    assert!(err.contains("odd replicas only in guarded"), "{err}");
    // Warn instead of Deny: admitted, with kubectl's "Warning:" line.
    s.ok(&["patch", "validatingadmissionpolicybinding", "replicas-binding.example.com", "--type=merge", "-p", r#"{"spec":{"validationActions":["Warn"]}}"#]);
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(&deploy("warned", "guarded", 1)));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'replicas.example.com' with binding 'replicas-binding.example.com': wants more than one replica"), "{stderr}");
    // An expression that cannot be evaluated: failurePolicy Fail denies, Ignore admits.
    s.ok(&["patch", "validatingadmissionpolicybinding", "replicas-binding.example.com", "--type=merge", "-p", r#"{"spec":{"validationActions":["Deny"]}}"#]);
    s.ok(&["patch", "validatingadmissionpolicy", "replicas.example.com", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/validations","value":[{"expression":"object.spec.noSuchField > 1"}]}]"#]);
    let err = s.fails(&["create", "-f", "-"], Some(&deploy("five", "guarded", 5)));
    assert!(err.contains("expression 'object.spec.noSuchField > 1' resulted in error"), "{err}");
    s.ok(&["patch", "validatingadmissionpolicy", "replicas.example.com", "--type=merge", "-p", r#"{"spec":{"failurePolicy":"Ignore"}}"#]);
    s.ok_stdin(&["create", "-f", "-"], Some(&deploy("five", "guarded", 5)));
    // A policy naming DELETE says it is not evaluated there.
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(&policy.replace("replicas.example.com", "deletes.example.com").replace("[CREATE, UPDATE]", "[DELETE]")));
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("DELETE and CONNECT requests are admitted unchecked"), "{out:?}");
}
