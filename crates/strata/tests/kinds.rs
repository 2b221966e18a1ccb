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
