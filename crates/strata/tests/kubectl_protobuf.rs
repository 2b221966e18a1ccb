//! End-to-end tests of protobuf request bodies (`application/vnd.kubernetes.protobuf`): the
//! real `kubectl` imperative commands whose typed clients send protobuf (`kubectl create
//! namespace|configmap|secret|deployment|service|job|cronjob|serviceaccount|role|...`), plus
//! the JSON-sending neighbours they are used with (`kubectl run`, `expose`, `scale`), against a
//! real `strata server`; and hand-built protobuf bodies over curl for update and refusals.
//!
//! Decoding happens before the store is touched, so these run on the embedded backend only.

mod common;

use common::server::{ApiServer, Auth, Backend};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// `kubectl get ARGS -o jsonpath=PATH`.
fn jsonpath(s: &ApiServer, args: &[&str], path: &str) -> String {
    let p = format!("jsonpath={path}");
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", &p]);
    s.ok(&a)
}

/// `kubectl get ARGS -o json`, parsed.
fn get_json(s: &ApiServer, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&s.ok(&a)).expect("kubectl -o json")
}

#[test]
fn kubectl_create_sends_protobuf_and_strata_decodes_it() {
    let s = ApiServer::start(Backend::Embedded);
    // Guard: this kubectl really sends protobuf (otherwise the rest proves nothing).
    let out = s.kubectl(&["create", "namespace", "pb", "-v=8"]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("Content-Type: {PROTOBUF}")), "kubectl did not send protobuf:\n{log}");
    assert_eq!(jsonpath(&s, &["ns", "pb"], "{.metadata.name} {.status.phase}"), "pb Active");

    s.ok(&["create", "configmap", "cfg", "-n", "pb", "--from-literal=a=1", "--from-literal=b=two"]);
    assert_eq!(jsonpath(&s, &["cm", "cfg", "-n", "pb"], "{.data.a} {.data.b} {.metadata.namespace}"), "1 two pb");

    s.ok(&["create", "secret", "generic", "sec", "-n", "pb", "--from-literal=password=hunter2"]);
    assert_eq!(jsonpath(&s, &["secret", "sec", "-n", "pb"], "{.type} {.data.password}"), "Opaque aHVudGVyMg==");

    s.ok(&["create", "serviceaccount", "bot", "-n", "pb"]);
    assert_eq!(jsonpath(&s, &["sa", "bot", "-n", "pb"], "{.kind} {.metadata.name}"), "ServiceAccount bot");

    s.ok(&["create", "service", "clusterip", "web", "-n", "pb", "--tcp=80:8080"]);
    let svc = get_json(&s, &["svc", "web", "-n", "pb"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["spec"]["selector"]["app"], "web");
    assert_eq!(svc["spec"]["ports"], serde_json::json!([{ "name": "80-8080", "port": 80, "protocol": "TCP", "targetPort": 8080 }]));

    s.ok(&["run", "pod1", "-n", "pb", "--image=busybox", "--labels=a=b", "--env=X=1", "--", "sleep", "10"]);
    let pod = get_json(&s, &["pod", "pod1", "-n", "pb"]);
    assert_eq!(pod["metadata"]["labels"]["a"], "b");
    let c = &pod["spec"]["containers"][0];
    assert_eq!((c["image"].as_str(), c["env"][0]["name"].as_str(), c["env"][0]["value"].as_str()), (Some("busybox"), Some("X"), Some("1")));
    assert_eq!(c["args"], serde_json::json!(["sleep", "10"]));
}

#[test]
fn kubectl_create_workloads_expose_and_scale() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "deployment", "web", "--image=busybox", "--replicas=3", "--port=80"]);
    let d = get_json(&s, &["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    assert_eq!(d["spec"]["template"]["metadata"]["labels"]["app"], "web");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!((c["name"].as_str(), c["image"].as_str(), c["ports"][0]["containerPort"].as_i64()), (Some("busybox"), Some("busybox"), Some(80)));
    // Go value fields left at their zero are not invented as "" / false / 0.
    assert!(d["metadata"].get("generateName").is_none() && c.get("stdin").is_none() && c.get("workingDir").is_none(), "{d}");

    s.ok(&["expose", "deployment", "web", "--port=8080", "--target-port=80", "--name=web-exp"]);
    assert_eq!(jsonpath(&s, &["svc", "web-exp"], "{.spec.ports[0].port} {.spec.ports[0].targetPort} {.spec.selector.app}"), "8080 80 web");

    s.ok(&["scale", "deployment", "web", "--replicas=5"]);
    assert_eq!(jsonpath(&s, &["deploy", "web"], "{.spec.replicas}"), "5");
    // What client-go's scale client PUTs: an autoscaling/v1 Scale, here to 0 replicas. (kubectl
    // 1.32 itself PATCHes JSON for `scale`.)
    let scale = envelope("autoscaling/v1", "Scale", &[ld(1, &[st(1, "web"), st(3, "default")].concat()), ld(2, &vi(1, 0))]);
    let (code, body) = s.curl("PUT", "/apis/apps/v1/namespaces/default/deployments/web/scale", Auth::Admin, Some(PROTOBUF), Some(&scale));
    assert_eq!(code, 200, "{body}");
    assert_eq!(jsonpath(&s, &["deploy", "web"], "{.spec.replicas}"), "0");

    s.ok(&["create", "job", "once", "--image=busybox", "--", "echo", "hi"]);
    assert_eq!(
        jsonpath(&s, &["job", "once"], "{.spec.template.spec.restartPolicy} {.spec.template.spec.containers[0].command}"),
        r#"Never ["echo","hi"]"#
    );

    s.ok(&["create", "cronjob", "tick", "--image=busybox", "--schedule=*/5 * * * *", "--", "date"]);
    assert_eq!(
        jsonpath(&s, &["cronjob", "tick"], "{.spec.schedule} {.spec.jobTemplate.spec.template.spec.restartPolicy} {.spec.jobTemplate.spec.template.spec.containers[0].command[0]}"),
        "*/5 * * * * OnFailure date"
    );
    // A Job from the CronJob's template carries an ownerReference and an annotation.
    s.ok(&["create", "job", "manual", "--from=cronjob/tick"]);
    assert_eq!(
        jsonpath(&s, &["job", "manual"], "{.metadata.ownerReferences[0].kind} {.metadata.ownerReferences[0].controller} {.metadata.annotations.cronjob\\.kubernetes\\.io/instantiate}"),
        "CronJob true manual"
    );
}

#[test]
fn kubectl_create_rbac() {
    let s = ApiServer::start(Backend::Embedded);
    s.ok(&["create", "role", "reader", "--verb=get,list", "--resource=pods,configmaps"]);
    assert_eq!(jsonpath(&s, &["role", "reader"], "{.rules[0].verbs} {.rules[0].resources}"), r#"["get","list"] ["pods","configmaps"]"#);
    s.ok(&["create", "rolebinding", "rb", "--role=reader", "--user=alice"]);
    assert_eq!(jsonpath(&s, &["rolebinding", "rb"], "{.roleRef.kind}/{.roleRef.name} {.subjects[0].kind}/{.subjects[0].name}"), "Role/reader User/alice");
    s.ok(&["create", "clusterrole", "node-reader", "--verb=get,watch", "--resource=nodes"]);
    assert_eq!(jsonpath(&s, &["clusterrole", "node-reader"], "{.rules[0].verbs} {.rules[0].resources}"), r#"["get","watch"] ["nodes"]"#);
    s.ok(&["create", "clusterrolebinding", "crb", "--clusterrole=node-reader", "--group=devs"]);
    assert_eq!(
        jsonpath(&s, &["clusterrolebinding", "crb"], "{.roleRef.kind}/{.roleRef.name} {.subjects[0].kind}/{.subjects[0].name} {.subjects[0].apiGroup}"),
        "ClusterRole/node-reader Group/devs rbac.authorization.k8s.io"
    );
}

// A minimal protobuf encoder for hand-built bodies.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn ld(n: u64, b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint((n << 3) | 2, &mut out);
    varint(b.len() as u64, &mut out);
    out.extend_from_slice(b);
    out
}

fn vi(n: u64, v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(n << 3, &mut out);
    varint(v, &mut out);
    out
}

fn st(n: u64, v: &str) -> Vec<u8> {
    ld(n, v.as_bytes())
}

fn envelope(api_version: &str, kind: &str, raw: &[Vec<u8>]) -> Vec<u8> {
    let mut b = b"k8s\0".to_vec();
    b.extend(ld(1, &[st(1, api_version), st(2, kind)].concat()));
    b.extend(ld(2, &raw.concat()));
    b
}

#[test]
fn protobuf_update_and_refusals_over_curl() {
    let s = ApiServer::start(Backend::Embedded);
    // ConfigMap {metadata: {name}, binaryData: {bin: 00 ff}, data: {k: v}}
    let cm = |meta: Vec<u8>, v: &str| envelope("v1", "ConfigMap", &[ld(1, &meta), ld(3, &[st(1, "bin"), ld(2, &[0, 255])].concat()), ld(2, &[st(1, "k"), st(2, v)].concat())]);
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, Some(PROTOBUF), Some(&cm(st(1, "raw"), "v1")));
    assert_eq!(code, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).expect("json");
    let rv = created["metadata"]["resourceVersion"].as_str().expect("rv").to_string();
    assert_eq!(jsonpath(&s, &["cm", "raw"], "{.binaryData.bin} {.data.k}"), "AP8= v1");

    // PUT (update) with protobuf, with and without a stale resourceVersion.
    let meta = [st(1, "raw"), st(6, &rv)].concat();
    let (code, body) = s.curl("PUT", "/api/v1/namespaces/default/configmaps/raw", Auth::Admin, Some(PROTOBUF), Some(&cm(meta.clone(), "v2")));
    assert_eq!(code, 200, "{body}");
    assert_eq!(jsonpath(&s, &["cm", "raw"], "{.data.k}"), "v2");
    let (code, _) = s.curl("PUT", "/api/v1/namespaces/default/configmaps/raw", Auth::Admin, Some(PROTOBUF), Some(&cm(meta, "v3")));
    assert_eq!(code, 409);

    // An unknown field is refused (415, naming the kind), never dropped.
    let bad = envelope("v1", "ConfigMap", &[ld(1, &st(1, "bad")), vi(77, 1)]);
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, Some(PROTOBUF), Some(&bad));
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("UnsupportedMediaType") && body.contains("ConfigMap") && body.contains("77"), "{body}");
    // An unknown kind too; malformed bytes are a 400.
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, Some(PROTOBUF), Some(&envelope("v1", "Gadget", &[])));
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("Gadget"), "{body}");
    let (code, _) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, Some(PROTOBUF), Some(b"k8s\0\x0a\x7f"));
    assert_eq!(code, 400);
    // The envelope's kind must match the endpoint, as with JSON.
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/configmaps", Auth::Admin, Some(PROTOBUF), Some(&envelope("v1", "Secret", &[ld(1, &st(1, "s"))])));
    assert_eq!(code, 400, "{body}");
    assert!(s.ok(&["get", "cm", "-o", "name"]).lines().all(|l| l == "configmap/raw" || l == "configmap/kube-root-ca.crt"));
}

/// The typed clients of kubectl 1.32 and 1.33 (protobuf) and 1.27 (JSON) create or update a kind
/// of every API group whose messages the generated table holds and that kubectl can write: core,
/// apps, batch, autoscaling, rbac, policy, scheduling, certificates (approval), authentication
/// (TokenRequest) and authorization (SelfSubjectAccessReview). Each request body is checked to be
/// of that encoding, and each stored object to hold what was sent.
#[test]
fn kubectl_typed_clients_of_every_group_and_version() {
    let s = ApiServer::start(Backend::Embedded);
    let dir = tempfile::tempdir().expect("tmp");
    for v in ["1.27", "1.32", "1.33"] {
        let k = common::server::kubectl_of(v);
        let ns = format!("pb-{}", v.replace('.', "-"));
        let run = |args: &[&str]| -> String {
            let mut a = vec!["-v=8"];
            a.extend_from_slice(args);
            let out = s.kubectl_bin(&k, &a, None);
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "kubectl {v} {args:?}: {log}");
            // kubectl 1.27's typed clients send JSON (the same table types it: field validation).
            assert_eq!(log.contains(&format!("Content-Type: {PROTOBUF}")), v != "1.27", "kubectl {v} {args:?}:\n{log}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        run(&["create", "namespace", &ns]);
        run(&["create", "quota", "q", "-n", &ns, "--hard=pods=10,cpu=2"]);
        assert_eq!(jsonpath(&s, &["quota", "q", "-n", &ns], "{.spec.hard.pods} {.spec.hard.cpu}"), "10 2", "kubectl {v}");
        run(&["create", "deployment", "web", "-n", &ns, "--image=busybox", "--replicas=2", "--port=80"]);
        assert_eq!(
            jsonpath(&s, &["deploy", "web", "-n", &ns], "{.spec.replicas} {.spec.template.spec.containers[0].ports[0].containerPort}"),
            "2 80",
            "kubectl {v}"
        );
        run(&["create", "job", "once", "-n", &ns, "--image=busybox", "--", "true"]);
        assert_eq!(jsonpath(&s, &["job", "once", "-n", &ns], "{.spec.template.spec.containers[0].command}"), r#"["true"]"#, "kubectl {v}");
        run(&["autoscale", "deployment", "web", "-n", &ns, "--min=1", "--max=4", "--cpu-percent=60"]);
        assert_eq!(jsonpath(&s, &["hpa", "web", "-n", &ns], "{.spec.minReplicas} {.spec.maxReplicas}"), "1 4", "kubectl {v}");
        run(&["create", "role", "reader", "-n", &ns, "--verb=get,list", "--resource=pods"]);
        assert_eq!(jsonpath(&s, &["role", "reader", "-n", &ns], "{.rules[0].verbs}"), r#"["get","list"]"#, "kubectl {v}");
        run(&["create", "poddisruptionbudget", "pdb", "-n", &ns, "--selector=app=web", "--min-available=1"]);
        assert_eq!(jsonpath(&s, &["pdb", "pdb", "-n", &ns], "{.spec.minAvailable} {.spec.selector.matchLabels.app}"), "1 web", "kubectl {v}");
        let pc = format!("pc-{ns}");
        run(&["create", "priorityclass", &pc, "--value=1000", "--description=made by kubectl", "--preemption-policy=Never"]);
        assert_eq!(jsonpath(&s, &["priorityclass", &pc], "{.value} {.description} {.preemptionPolicy}"), "1000 made by kubectl Never", "kubectl {v}");
        run(&["create", "serviceaccount", "bot", "-n", &ns]);
        let token = run(&["create", "token", "bot", "-n", &ns, "--duration=10m"]);
        assert_eq!(token.trim().split('.').count(), 3, "kubectl {v}: not a JWT: {token}");
        assert_eq!(run(&["auth", "can-i", "create", "pods", "-n", &ns]).trim(), "yes", "kubectl {v}");
        // certificates.k8s.io: the CSR is created from YAML (JSON); the approval is a protobuf PUT.
        use base64::Engine;
        let req = base64::engine::general_purpose::STANDARD.encode(common::openssl_csr(dir.path(), &ns, &ns, &[]).1);
        let csr = format!(
            "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata:\n  name: {ns}\nspec:\n  request: {req}\n  signerName: example.com/pb\n  usages: [\"client auth\"]\n"
        );
        s.ok_stdin(&["create", "-f", "-"], Some(&csr));
        run(&["certificate", "approve", &ns]);
        assert_eq!(jsonpath(&s, &["csr", &ns], "{.status.conditions[0].type}"), "Approved", "kubectl {v}");
    }
    // What client-go v0.33+ sends with every Pod: PodStatus.observedGeneration (field 17, new in
    // v1.33) = 0, written because it is not a pointer; refusing it would refuse those clients.
    let pod = envelope(
        "v1",
        "Pod",
        &[ld(1, &st(1, "newer-client")), ld(2, &ld(2, &[st(1, "c"), st(2, "busybox")].concat())), ld(3, &[st(1, "Pending"), vi(17, 0)].concat())],
    );
    let (code, body) = s.curl("POST", "/api/v1/namespaces/default/pods", Auth::Admin, Some(PROTOBUF), Some(&pod));
    assert_eq!(code, 201, "{body}");
    assert_eq!(jsonpath(&s, &["pod", "newer-client"], "{.spec.containers[0].image}"), "busybox");
}
