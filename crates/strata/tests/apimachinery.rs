//! What upstream's conformance suite (scripts/conformance.sh, docs/conformance.md) showed missing
//! in the API server, each reproduced here with the real kubectl or curl before it was fixed.

mod common;

use std::time::Duration;

use common::server::{ApiServer, Backend};

/// kube-apiserver keeps the `default/kubernetes` Service (first address of the service range,
/// port 443 to the secure port) and its Endpoints and EndpointSlice (the advertised address), and
/// puts them back when deleted. The e2e framework reads the Service before any test, and
/// in-cluster clients find the API server through it.
#[test]
fn the_kubernetes_service_points_at_the_api_server() {
    let s = ApiServer::start(Backend::Embedded);
    let svc_path = "/api/v1/namespaces/default/services/kubernetes";
    let mut svc = serde_json::Value::Null;
    assert!(
        common::eventually(Duration::from_secs(30), || {
            svc = s.get_json(svc_path);
            !svc.is_null()
        }),
        "no default/kubernetes Service"
    );
    assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1", "{svc}");
    assert_eq!(svc["spec"]["clusterIPs"], serde_json::json!(["10.96.0.1"]), "{svc}");
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert_eq!(svc["metadata"]["labels"]["component"], "apiserver");
    assert_eq!(svc["metadata"]["labels"]["provider"], "kubernetes");
    let port = &svc["spec"]["ports"][0];
    assert_eq!((port["name"].as_str(), port["port"].as_i64(), port["protocol"].as_str()), (Some("https"), Some(443), Some("TCP")), "{svc}");
    assert_eq!(port["targetPort"].as_i64(), Some(i64::from(s.port)), "{svc}");

    let ep = s.get_json("/api/v1/namespaces/default/endpoints/kubernetes");
    let ip: std::net::IpAddr = ep["subsets"][0]["addresses"][0]["ip"].as_str().unwrap_or("").parse().unwrap_or_else(|_| panic!("no address: {ep}"));
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ep}");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"].as_i64(), Some(i64::from(s.port)), "{ep}");
    assert_eq!(ep["subsets"][0]["ports"][0]["name"], "https", "{ep}");

    let slice = s.get_json("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes");
    assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "kubernetes", "{slice}");
    assert_eq!(slice["addressType"], "IPv4", "{slice}");
    assert_eq!(slice["endpoints"][0]["addresses"][0], ip.to_string(), "{slice}");
    assert_eq!(slice["ports"][0]["port"].as_i64(), Some(i64::from(s.port)), "{slice}");

    // `kubectl get svc` shows it as upstream's does.
    let out = s.ok(&["get", "svc", "kubernetes", "-n", "default", "--no-headers"]);
    assert!(out.contains("ClusterIP") && out.contains("10.96.0.1") && out.contains("443/TCP"), "{out}");

    // Deleted, it comes back (upstream reconciles every 10 s).
    s.ok(&["delete", "svc", "kubernetes", "-n", "default"]);
    s.ok(&["delete", "endpoints", "kubernetes", "-n", "default"]);
    assert!(
        common::eventually(Duration::from_secs(60), || !s.get_json(svc_path).is_null()
            && !s.get_json("/api/v1/namespaces/default/endpoints/kubernetes").is_null()),
        "default/kubernetes was not recreated"
    );
}

/// `fieldValidation=Strict` refuses duplicate fields as well as unknown ones, in one message as
/// upstream's strict decoder words it (upstream's FieldValidation conformance spec checks the
/// exact text).
#[test]
fn strict_field_validation_reports_duplicate_fields() {
    let s = ApiServer::start(Backend::Embedded);
    let body = br#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "my-dep", "labels": {"app": "nginx"}},
        "spec": {"unknownField": "foo", "replicas": 2, "replicas": 3, "selector": {"matchLabels": {"app": "nginx"}},
                 "template": {"metadata": {"labels": {"app": "nginx"}}, "spec": {"containers": [{"name": "nginx", "image": "nginx:latest", "image": "nginx:1"}]}}}}"#;
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let (code, out) = s.curl("POST", &format!("{path}?fieldValidation=Strict&fieldManager=m"), common::server::Auth::Admin, Some("application/json"), Some(body));
    assert_eq!(code, 400, "{out}");
    assert!(
        out.contains(r#"strict decoding error: unknown field \"spec.unknownField\", duplicate field \"spec.replicas\", duplicate field \"spec.template.spec.containers[0].image\""#),
        "{out}"
    );
    assert!(s.get_json(&format!("{path}/my-dep")).is_null(), "a refused create stored the object");
    // Without Strict the last value wins, as in upstream's decoder.
    let (code, out) = s.curl("POST", path, common::server::Auth::Admin, Some("application/json"), Some(body));
    assert_eq!(code, 201, "{out}");
    assert_eq!(s.get_json(&format!("{path}/my-dep"))["spec"]["replicas"], 3);
}
