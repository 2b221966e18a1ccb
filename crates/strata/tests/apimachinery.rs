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

/// A namespace's `finalize` subresource (`PUT .../namespaces/NAME/finalize`, client-go's
/// `Namespaces().Finalize`) changes `spec.finalizers`, which a plain update may not; a status
/// write keeps the metadata it carries (upstream's namespace status strategy resets only the
/// spec). Upstream's Namespaces conformance specs "should apply a finalizer to a Namespace" and
/// "should apply changes to a namespace status".
#[test]
fn namespace_finalize_and_status_subresources() {
    use common::server::Auth;
    let s = ApiServer::start(Backend::Embedded);
    let ns = "fin-ns";
    s.ok(&["create", "namespace", ns]);
    let path = format!("/api/v1/namespaces/{ns}");
    let json = |v: &serde_json::Value| serde_json::to_vec(v).expect("json");
    let put = |p: &str, v: &serde_json::Value| {
        let (code, out) = s.curl("PUT", p, Auth::Admin, Some("application/json"), Some(&json(v)));
        (code, serde_json::from_str::<serde_json::Value>(&out).unwrap_or(serde_json::Value::Null))
    };
    let fake = "e2e.example.com/fakeFinalizer";

    let mut obj = s.get_json(&path);
    let mut finalizers = obj["spec"]["finalizers"].as_array().cloned().unwrap_or_default();
    finalizers.push(serde_json::json!(fake));
    obj["spec"]["finalizers"] = serde_json::json!(finalizers);
    let (code, out) = put(&format!("{path}/finalize"), &obj);
    assert_eq!(code, 200, "{out}");
    assert!(out["spec"]["finalizers"].as_array().is_some_and(|f| f.iter().any(|x| x == fake)), "{out}");
    assert!(s.get_json(&path)["spec"]["finalizers"].as_array().is_some_and(|f| f.iter().any(|x| x == fake)));

    // A plain update leaves spec.finalizers alone.
    let mut obj = s.get_json(&path);
    obj["spec"]["finalizers"] = serde_json::json!([]);
    obj["metadata"]["labels"] = serde_json::json!({ "updated": "yes" });
    let (code, out) = put(&path, &obj);
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["metadata"]["labels"]["updated"], "yes", "{out}");
    assert!(out["spec"]["finalizers"].as_array().is_some_and(|f| f.iter().any(|x| x == fake)), "an update changed spec.finalizers: {out}");

    // finalize never changes status; a patch of it is not allowed (only update, as upstream).
    let mut obj = s.get_json(&path);
    obj["spec"]["finalizers"] = serde_json::json!(obj["spec"]["finalizers"].as_array().unwrap_or(&vec![]).iter().filter(|x| *x != fake).collect::<Vec<_>>());
    obj["status"]["phase"] = serde_json::json!("Terminating");
    let (code, out) = put(&format!("{path}/finalize"), &obj);
    assert_eq!(code, 200, "{out}");
    assert!(out["spec"]["finalizers"].as_array().is_none_or(|f| f.iter().all(|x| x != fake)), "{out}");
    assert_eq!(out["status"]["phase"], "Active", "{out}");
    let (code, out) = s.curl("PATCH", &format!("{path}/finalize"), Auth::Admin, Some("application/merge-patch+json"), Some(b"{}"));
    assert_eq!(code, 405, "{out}");
    // Nor any other verb: upstream registers PUT alone on the route, and go-restful's 405
    // reaches the client as a MethodNotAllowed Status.
    for method in ["GET", "DELETE", "POST"] {
        let body = (method == "POST").then_some(&b"{}"[..]);
        let (code, out) = s.curl(method, &format!("{path}/finalize"), Auth::Admin, body.map(|_| "application/json"), body);
        let st: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!((code, st["reason"].as_str()), (405, Some("MethodNotAllowed")), "{method}: {out}");
        assert_eq!(st["message"], "the server does not allow this method on the requested resource", "{method}: {out}");
    }
    assert_eq!(s.get_json(&path)["metadata"]["name"], ns, "the namespace is still there");

    // Discovery lists it with the one verb.
    let list = s.get_json("/api/v1");
    let fin = list["resources"].as_array().and_then(|rs| rs.iter().find(|r| r["name"] == "namespaces/finalize")).cloned().unwrap_or_default();
    assert_eq!(fin["verbs"], serde_json::json!(["update"]), "{list}");

    // A status patch keeps the annotation it carries.
    let patch = format!(
        r#"{{"metadata":{{"annotations":{{"e2e-patched-ns-status":"{ns}"}}}},"status":{{"conditions":[{{"type":"StatusPatch","status":"True","reason":"E2E","message":"Patched by an e2e test"}}]}}}}"#
    );
    let (code, out) = s.curl("PATCH", &format!("{path}/status"), Auth::Admin, Some("application/merge-patch+json"), Some(patch.as_bytes()));
    assert_eq!(code, 200, "{out}");
    let out: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(out["metadata"]["annotations"]["e2e-patched-ns-status"], ns, "{out}");
    assert_eq!(out["status"]["conditions"][0]["reason"], "E2E", "{out}");
    assert_eq!(s.get_json(&path)["metadata"]["annotations"]["e2e-patched-ns-status"], ns);
    // ... but not a spec change.
    let (code, out) = s.curl("PATCH", &format!("{path}/status"), Auth::Admin, Some("application/merge-patch+json"), Some(br#"{"spec":{"finalizers":[]}}"#));
    assert_eq!(code, 200, "{out}");
    assert_eq!(s.get_json(&path)["spec"], obj["spec"]);
    s.ok(&["delete", "namespace", ns, "--wait=false"]);
}

/// Asking a review (which has no metadata and no Table form) for a Table is 406 NotAcceptable,
/// before anything is evaluated (upstream negotiates the output media type first); with JSON
/// among the accepted types it answers in JSON. Upstream's "should return a 406 for a backend
/// which does not implement metadata".
#[test]
fn a_review_asked_for_a_table_is_not_acceptable() {
    use common::server::Auth;
    let s = ApiServer::start(Backend::Embedded);
    let body = br#"{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"nonResourceAttributes":{"path":"/","verb":"get"}}}"#;
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let table = "Accept: application/json;as=Table;v=v1;g=meta.k8s.io";
    let (code, out) = s.curl_headers("POST", path, Auth::Admin, &["Content-Type: application/json", table], Some(body));
    assert_eq!(code, 406, "{out}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("status");
    assert_eq!((status["kind"].as_str(), status["reason"].as_str(), status["code"].as_i64()), (Some("Status"), Some("NotAcceptable"), Some(406)), "{out}");
    assert!(status["message"].as_str().is_some_and(|m| m.starts_with("only the following media types are accepted: application/json")), "{out}");
    let (code, out) = s.curl_headers("POST", path, Auth::Admin, &["Content-Type: application/json", &format!("{table}, application/json")], Some(body));
    assert_eq!(code, 201, "{out}");
    assert!(out.contains(r#""allowed":true"#), "{out}");
}

/// apiregistration.k8s.io/v1 APIServices are served (stored, with the status subresource; strata
/// proxies to no aggregated API server) and listed in plain and aggregated discovery, where
/// upstream's Discovery and AggregatedDiscovery conformance specs look for them.
#[test]
fn apiservices_are_served_and_discovered() {
    use common::server::Auth;
    let s = ApiServer::start(Backend::Embedded);
    let list = s.get_json("/apis/apiregistration.k8s.io/v1");
    assert_eq!(list["groupVersion"], "apiregistration.k8s.io/v1", "{list}");
    let names: Vec<&str> = list["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["apiservices", "apiservices/status"], "{list}");
    let groups = s.get_json("/apis");
    assert!(groups["groups"].as_array().is_some_and(|g| g.iter().any(|g| g["name"] == "apiregistration.k8s.io")), "{groups}");
    let (_, _, body) = s.get_with_headers("/apis", &["Accept: application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"]);
    let agg: serde_json::Value = serde_json::from_slice(&body).expect("aggregated discovery");
    let group = agg["items"].as_array().and_then(|g| g.iter().find(|g| g["metadata"]["name"] == "apiregistration.k8s.io")).cloned().unwrap_or_default();
    assert_eq!(group["versions"][0]["resources"][0]["resource"], "apiservices", "{agg}");

    let svc = r#"{"apiVersion":"apiregistration.k8s.io/v1","kind":"APIService","metadata":{"name":"v1beta1.metrics.example.com"},
        "spec":{"group":"metrics.example.com","version":"v1beta1","service":{"namespace":"kube-system","name":"metrics","port":443},
                "groupPriorityMinimum":100,"versionPriority":100,"insecureSkipTLSVerify":true}}"#;
    s.ok_stdin(&["create", "-f", "-"], Some(svc));
    let got = s.get_json("/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.example.com");
    assert_eq!(got["spec"]["service"]["port"], 443, "{got}");
    assert_eq!(got["spec"]["groupPriorityMinimum"], 100, "{got}");
    let (code, out) = s.curl("PATCH", "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.example.com/status", Auth::Admin,
        Some("application/merge-patch+json"), Some(br#"{"status":{"conditions":[{"type":"Available","status":"False","reason":"NotProxied","message":"m"}]}}"#));
    assert_eq!(code, 200, "{out}");
    s.ok(&["delete", "apiservice", "v1beta1.metrics.example.com"]);
}

/// A server-side apply body (YAML or JSON) that repeats a key is refused under
/// `fieldValidation=Strict` with the line sigs.k8s.io/yaml's strict decoder names, and only
/// warned about under `Warn` (upstream's FieldValidation spec "should detect duplicates in a CR
/// when preserving unknown fields" looks for `line 9: key "foo" already set in map`).
#[test]
fn server_side_apply_reports_repeated_keys() {
    use common::server::Auth;
    let s = ApiServer::start(Backend::Embedded);
    let body = "\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\ndata:\n  unknown: uk1\n  foo: foo1\n  foo: foo2\n  bar: b";
    let path = "/api/v1/namespaces/default/configmaps/dup?fieldManager=m";
    let (code, out) = s.curl("PATCH", &format!("{path}&fieldValidation=Strict"), Auth::Admin, Some("application/apply-patch+yaml"), Some(body.as_bytes()));
    assert_eq!(code, 400, "{out}");
    assert!(out.contains(r#"error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  line 9: key \"foo\" already set in map"#), "{out}");
    assert!(s.get_json("/api/v1/namespaces/default/configmaps/dup").is_null(), "a refused apply stored the object");
    let (code, out) = s.curl_headers("PATCH", &format!("{path}&fieldValidation=Warn"), Auth::Admin, &["Content-Type: application/apply-patch+yaml"], Some(body.as_bytes()));
    assert_eq!(code, 201, "{out}");
    assert_eq!(s.get_json("/api/v1/namespaces/default/configmaps/dup")["data"]["foo"], "foo2");
}

/// flowcontrol.apiserver.k8s.io/v1 FlowSchemas and PriorityLevelConfigurations are served
/// (stored, status subresource, watch, delete by label) as upstream's API Priority and Fairness
/// "should support ... API operations" specs exercise them; strata does not queue requests by
/// them.
#[test]
fn flowcontrol_objects_are_served() {
    use common::server::Auth;
    let s = ApiServer::start(Backend::Embedded);
    let list = s.get_json("/apis/flowcontrol.apiserver.k8s.io/v1");
    let names: Vec<&str> = list["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
    for want in ["flowschemas", "flowschemas/status", "prioritylevelconfigurations", "prioritylevelconfigurations/status"] {
        assert!(names.contains(&want), "{want} missing: {list}");
    }
    let pl = r#"{"apiVersion":"flowcontrol.apiserver.k8s.io/v1","kind":"PriorityLevelConfiguration","metadata":{"name":"e2e-pl","labels":{"e2e":"x"}},
        "spec":{"type":"Limited","limited":{"nominalConcurrencyShares":2,"limitResponse":{"type":"Reject"}}}}"#;
    let fs = r#"{"apiVersion":"flowcontrol.apiserver.k8s.io/v1","kind":"FlowSchema","metadata":{"name":"e2e-fs","labels":{"e2e":"x"}},
        "spec":{"matchingPrecedence":10000,"priorityLevelConfiguration":{"name":"e2e-pl"},"distinguisherMethod":{"type":"ByUser"},
                "rules":[{"subjects":[{"kind":"User","user":{"name":"nobody"}}],"nonResourceRules":[{"verbs":["*"],"nonResourceURLs":["*"]}]}]}}"#;
    s.ok_stdin(&["create", "-f", "-"], Some(pl));
    s.ok_stdin(&["create", "-f", "-"], Some(fs));
    let got = s.get_json("/apis/flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations/e2e-pl");
    assert_eq!(got["spec"]["limited"]["nominalConcurrencyShares"], 2, "{got}");
    let path = "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas/e2e-fs";
    let (code, out) = s.curl("PATCH", &format!("{path}/status"), Auth::Admin, Some("application/merge-patch+json"),
        Some(br#"{"status":{"conditions":[{"type":"PatchStatusFailed","status":"False","reason":"e2e"}]}}"#));
    assert_eq!(code, 200, "{out}");
    assert_eq!(s.get_json(path)["status"]["conditions"][0]["type"], "PatchStatusFailed");
    assert_eq!(s.get_json(&format!("{path}/status"))["kind"], "FlowSchema");
    let (code, out) = s.curl("DELETE", "/apis/flowcontrol.apiserver.k8s.io/v1/flowschemas?labelSelector=e2e%3Dx", Auth::Admin, None, None);
    assert_eq!(code, 200, "{out}");
    assert!(s.get_json(path).is_null(), "deletecollection left the FlowSchema");
}

/// client-go's metadata client and metadata informers (kube-controller-manager's garbage
/// collector and quota controller) ask for `PartialObjectMetadata`: a get, a watch's events
/// and a patch's answer carry only the object's metadata, a list is a
/// `PartialObjectMetadataList` with the list's resourceVersion, continue and
/// remainingItemCount; a transform asked of the wrong shape, or one no server makes, is 406.
#[test]
fn metadata_clients_get_partial_object_metadata() {
    use common::server::Auth;
    let s = ApiServer::start(Backend::Embedded);
    // The headers client-go's metadata client sends.
    let one = "Accept: application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";
    let list = "Accept: application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    s.ok(&["create", "namespace", "pom"]);
    for name in ["pom-a", "pom-b", "pom-c"] {
        s.ok(&["create", "configmap", name, "-n", "pom", "--from-literal=k=secret-ish"]);
    }
    s.ok(&["label", "configmap", "pom-a", "-n", "pom", "team=x"]);
    let call = |method: &str, path: &str, headers: &[&str], body: Option<&[u8]>| -> (u16, serde_json::Value) {
        let (code, out) = s.curl_headers(method, path, Auth::Admin, headers, body);
        (code, serde_json::from_str(&out).unwrap_or_else(|e| panic!("{method} {path}: {e}: {out}")))
    };
    let base = "/api/v1/namespaces/pom/configmaps";

    let full = s.get_json(&format!("{base}/pom-a"));
    let (code, p) = call("GET", &format!("{base}/pom-a"), &[one], None);
    assert_eq!(code, 200, "{p}");
    assert_eq!((p["kind"].as_str(), p["apiVersion"].as_str()), (Some("PartialObjectMetadata"), Some("meta.k8s.io/v1")), "{p}");
    assert_eq!(p["metadata"], full["metadata"], "the metadata is the object's, whole");
    assert!(p.get("data").is_none(), "{p}");
    let (_, p) = call("GET", &format!("{base}/pom-a"), &["Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1"], None);
    assert_eq!((p["kind"].as_str(), p["apiVersion"].as_str()), (Some("PartialObjectMetadata"), Some("meta.k8s.io/v1beta1")), "{p}");

    // Lists: paged (from the watch cache), filtered, and read at an exact revision.
    let (code, l) = call("GET", &format!("{base}?limit=2"), &[list], None);
    assert_eq!(code, 200, "{l}");
    assert_eq!((l["kind"].as_str(), l["apiVersion"].as_str()), (Some("PartialObjectMetadataList"), Some("meta.k8s.io/v1")), "{l}");
    let items = l["items"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = items.iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["pom-a", "pom-b"], "{l}");
    assert!(items.iter().all(|i| i["kind"] == "PartialObjectMetadata" && i["apiVersion"] == "meta.k8s.io/v1" && i.get("data").is_none()), "{l}");
    assert_eq!(l["metadata"]["remainingItemCount"], 1, "{l}");
    let rv = l["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
    let cont = l["metadata"]["continue"].as_str().unwrap_or_else(|| panic!("no continue: {l}")).to_string();
    let (_, rest) = call("GET", &format!("{base}?limit=2&continue={cont}"), &[list], None);
    assert_eq!(rest["items"][0]["metadata"]["name"], "pom-c", "{rest}");
    assert_eq!(rest["kind"], "PartialObjectMetadataList", "{rest}");
    let (_, sel) = call("GET", &format!("{base}?labelSelector=team%3Dx"), &[list], None);
    assert_eq!(sel["items"].as_array().map(Vec::len), Some(1), "{sel}");
    assert_eq!(sel["items"][0]["metadata"]["labels"]["team"], "x", "{sel}");
    let (code, exact) = call("GET", &format!("{base}?resourceVersion={rv}&resourceVersionMatch=Exact"), &["Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1"], None);
    assert_eq!(code, 200, "{exact}");
    assert_eq!((exact["apiVersion"].as_str(), exact["items"].as_array().map(Vec::len)), (Some("meta.k8s.io/v1beta1"), Some(3)), "{exact}");
    assert_eq!(exact["metadata"]["resourceVersion"], rv.as_str(), "{exact}");
    // A Table in the version asked.
    let (_, t) = call("GET", base, &["Accept: application/json;as=Table;v=v1beta1;g=meta.k8s.io"], None);
    assert_eq!((t["kind"].as_str(), t["apiVersion"].as_str()), (Some("Table"), Some("meta.k8s.io/v1beta1")), "{t}");

    // The wrong shape is 406 with upstream's message, the right one with JSON as the fallback
    // is not negotiated away.
    let refused = |code: u16, st: &serde_json::Value, message: &str| {
        assert_eq!((code, st["kind"].as_str(), st["reason"].as_str(), st["code"].as_i64()), (406, Some("Status"), Some("NotAcceptable"), Some(406)), "{st}");
        assert_eq!(st["message"], message, "{st}");
    };
    let (code, st) = call("GET", &format!("{base}/pom-a"), &[list], None);
    refused(code, &st, "you requested PartialObjectMetadataList, but the requested object is not a list (*core.ConfigMap)");
    let (code, st) = call("GET", &format!("{base}/nothing"), &[list], None);
    assert_eq!((code, st["reason"].as_str()), (404, Some("NotFound")), "the object is read before it is transformed: {st}");
    let (code, st) = call("GET", base, &[one], None);
    refused(code, &st, "you requested PartialObjectMetadata, but the requested object is a list (*core.ConfigMapList)");
    let (code, st) = call("GET", &format!("{base}/pom-a"), &["Accept: application/json;as=Secret;g=meta.k8s.io;v=v1"], None);
    refused(code, &st, "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf");
    let (code, st) = call("GET", &format!("{base}?watch=1"), &[list], None);
    refused(code, &st, "you requested PartialObjectMetadataList, but the requested object is not a list (*core.ConfigMap)");
    let (code, obj) = call("GET", &format!("{base}/pom-a"), &["Accept: application/json;as=Secret;g=meta.k8s.io;v=v1, application/json"], None);
    assert_eq!((code, obj["kind"].as_str()), (200, Some("ConfigMap")), "{obj}");
    // A write refused for its Accept header wrote nothing (negotiation comes first).
    let (code, st) = call("POST", base, &["Content-Type: application/json", "Accept: text/html"], Some(br#"{"metadata":{"name":"pom-x"}}"#));
    refused(code, &st, "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf");
    assert!(s.get_json(&format!("{base}/pom-x")).is_null(), "a refused create stored the object");

    // A patch (the garbage collector's) answers with the patched metadata.
    let (code, p) = call("PATCH", &format!("{base}/pom-b"), &["Content-Type: application/merge-patch+json", one], Some(br#"{"metadata":{"annotations":{"gc":"seen"}}}"#));
    assert_eq!(code, 200, "{p}");
    assert_eq!((p["kind"].as_str(), p["metadata"]["annotations"]["gc"].as_str()), (Some("PartialObjectMetadata"), Some("seen")), "{p}");
    assert_eq!(s.get_json(&format!("{base}/pom-b"))["data"]["k"], "secret-ish", "the patch changed only metadata");

    // A watch's events carry only metadata, deletions included.
    let (code, _) = s.curl("DELETE", &format!("{base}/pom-c"), Auth::Admin, None, None);
    assert_eq!(code, 200);
    let (code, out) = s.curl_headers("GET", &format!("{base}?watch=1&resourceVersion={rv}&timeoutSeconds=2"), Auth::Admin, &[one], None);
    let events: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    assert_eq!(code, 200, "{out}");
    let seen: Vec<(&str, &str)> = events.iter().map(|e| (e["type"].as_str().unwrap_or(""), e["object"]["metadata"]["name"].as_str().unwrap_or(""))).collect();
    assert_eq!(seen, [("MODIFIED", "pom-b"), ("DELETED", "pom-c")], "{out}");
    assert!(events.iter().all(|e| e["object"]["kind"] == "PartialObjectMetadata" && e["object"]["apiVersion"] == "meta.k8s.io/v1" && e["object"].get("data").is_none()), "{out}");
}

/// A value of a JSON type its field cannot take (`"replicas": "3"`) is refused with 400 as
/// kube-apiserver's decoder refuses it, and nothing is stored: stored, it broke every typed
/// client's list and watch of the kind (the Deployment controller's watch failed to decode it).
/// YAML 1.1 turns an unquoted `n` into `false`, which a string field refuses the same way.
#[test]
fn values_of_the_wrong_type_are_refused_and_not_stored() {
    use common::server::Auth;
    let s = ApiServer::start(Backend::Embedded);
    let body = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"bad"},"spec":{"replicas":"3","selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"x:1"}]}}}}"#;
    let (code, out) = s.curl("POST", "/apis/apps/v1/namespaces/default/deployments", Auth::Admin, Some("application/json"), Some(body));
    assert_eq!(code, 400, "{out}");
    let st: serde_json::Value = serde_json::from_str(&out).expect("status");
    assert_eq!(st["reason"], "BadRequest", "{out}");
    assert_eq!(st["message"], "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas of type int32", "{out}");
    assert!(s.get_json("/apis/apps/v1/namespaces/default/deployments/bad").is_null(), "a refused Deployment was stored");
    // kubectl with an unquoted `n` (YAML 1.1's false) where a path string belongs.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: yamlbool}\nspec:\n  containers: [{name: c, image: 'x:1'}]\n  volumes: [{name: d, downwardAPI: {items: [{path: n, fieldRef: {fieldPath: metadata.name}}]}}]\n";
    let out = s.kubectl_stdin(&["create", "-f", "-", "--validate=false"], Some(pod));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("json: cannot unmarshal bool into Go struct field DownwardAPIVolumeFile.spec.volumes.downwardAPI.items.path of type string"), "{err}");
    assert!(s.get_json("/api/v1/namespaces/default/pods/yamlbool").is_null());
    // A patch that would store the wrong type is refused too; the object is unchanged.
    s.ok(&["create", "deployment", "good", "--image=x:1"]);
    let (code, out) = s.curl("PATCH", "/apis/apps/v1/namespaces/default/deployments/good", Auth::Admin, Some("application/merge-patch+json"), Some(br#"{"spec":{"replicas":"5"}}"#));
    assert_eq!(code, 400, "{out}");
    assert_eq!(s.get_json("/apis/apps/v1/namespaces/default/deployments/good")["spec"]["replicas"], 1);
    // So is a server-side apply configuration.
    let cm = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"typed"},"data":{"n":1}}"#;
    let (code, out) = s.curl("PATCH", "/api/v1/namespaces/default/configmaps/typed?fieldManager=t", Auth::Admin, Some("application/apply-patch+yaml"), Some(cm));
    assert_eq!(code, 400, "{out}");
    assert!(out.contains("failed to create typed patch object (default/typed; /v1, Kind=ConfigMap): json: cannot unmarshal number into Go struct field ConfigMap.data of type string"), "{out}");
    assert!(s.get_json("/api/v1/namespaces/default/configmaps/typed").is_null());
}

/// kube-apiserver's ConfigMaps in kube-system: `extension-apiserver-authentication` holds the CA
/// client certificates are checked against (what aggregated API servers and webhook servers that
/// delegate authentication read), `kube-apiserver-legacy-service-account-token-tracking` the day
/// tracking began (kube-controller-manager's legacy token cleaner reads it).
#[test]
fn the_system_config_maps_are_published() {
    let s = ApiServer::start(Backend::Embedded);
    let auth = s.get_json("/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication");
    let ca = std::fs::read_to_string(s.data_dir().join("pki/ca.crt")).expect("the cluster CA");
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(auth["data"]["client-ca-file"], ca.as_str(), "{auth}");
    let tracking = s.get_json("/api/v1/namespaces/kube-system/configmaps/kube-apiserver-legacy-service-account-token-tracking");
    let since = tracking["data"]["since"].as_str().unwrap_or_default();
    assert!(chrono::NaiveDate::parse_from_str(since, "%Y-%m-%d").is_ok(), "{tracking}");
    // The bootstrap policy lets a delegating server read the first.
    let out = s.kubectl(&["auth", "can-i", "get", "configmaps/extension-apiserver-authentication", "-n", "kube-system", "--as=system:serviceaccount:default:webhook"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no", "only those bound to the reader Role may");
    let role = s.get_json("/apis/rbac.authorization.k8s.io/v1/namespaces/kube-system/roles/extension-apiserver-authentication-reader");
    assert_eq!(role["rules"][0]["resourceNames"][0], "extension-apiserver-authentication", "{role}");
}

/// An HTTPS admission webhook server on loopback (a self-signed certificate for 127.0.0.1), run
/// by the test: `/validate` denies ConfigMaps with a `forbidden` key and warns on every review,
/// `/mutate` labels what it is sent `mutated=<n>` (n counting its calls, so a reinvocation shows),
/// `/slow` answers after 3 s, `/protect` denies every DELETE. Every review it gets is kept.
struct WebhookServer {
    port: u16,
    ca_bundle: String,
    reviews: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    /// TLS connections accepted so far.
    connections: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

impl WebhookServer {
    fn start() -> WebhookServer {
        Self::start_on("127.0.0.1".parse().expect("ip"), &[])
    }

    /// Listening on `ip`, with a certificate for it and for `names`.
    fn start_on(ip: std::net::IpAddr, names: &[&str]) -> WebhookServer {
        use std::sync::{Arc, Mutex};
        use serde_json::json;
        let sans: Vec<String> = std::iter::once(ip.to_string()).chain(names.iter().map(|n| n.to_string())).collect();
        let (acceptor, pem) = common::tls::self_signed_acceptor(sans);
        let ca_bundle = {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.encode(pem)
        };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let listener = runtime.block_on(tokio::net::TcpListener::bind((ip, 0))).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let reviews: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
        let seen = reviews.clone();
        let connections: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let accepted = connections.clone();
        runtime.spawn(async move {
            let mutations = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            while let Ok((conn, _)) = listener.accept().await {
                let (acceptor, seen, mutations, accepted) = (acceptor.clone(), seen.clone(), mutations.clone(), accepted.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(conn).await else { return };
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, mutations) = (seen.clone(), mutations.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let path = req.uri().path().to_string();
                            let query = req.uri().query().unwrap_or("").to_string();
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                            seen.lock().expect("reviews").push((format!("{path}?{query}"), review.clone()));
                            let request = &review["request"];
                            let uid = request["uid"].clone();
                            let response = match path.as_str() {
                                "/validate" => {
                                    let forbidden = request["object"]["data"].get("forbidden").is_some();
                                    if forbidden {
                                        json!({"uid": uid, "allowed": false, "status": {"code": 403, "message": "the key \"forbidden\" is not allowed"}})
                                    } else {
                                        json!({"uid": uid, "allowed": true, "warnings": [format!("validated {} {}", request["operation"].as_str().unwrap_or(""), request["name"].as_str().unwrap_or(""))]})
                                    }
                                }
                                "/mutate" => {
                                    use base64::Engine;
                                    let n = mutations.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                                    let ops = if request["object"]["metadata"]["labels"].is_object() {
                                        json!([{"op": "add", "path": "/metadata/labels/mutated", "value": n.to_string()}])
                                    } else {
                                        json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": n.to_string()}}])
                                    };
                                    let patch = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
                                    json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch})
                                }
                                "/annotate" => {
                                    use base64::Engine;
                                    // Also a field ConfigMaps do not have: the server drops it.
                                    let ops = if request["object"]["metadata"]["annotations"].is_object() {
                                        json!([{"op": "add", "path": "/metadata/annotations/annotated", "value": "yes"}, {"op": "add", "path": "/bogus", "value": 1}])
                                    } else {
                                        json!([{"op": "add", "path": "/metadata/annotations", "value": {"annotated": "yes"}}, {"op": "add", "path": "/bogus", "value": 1}])
                                    };
                                    let patch = base64::engine::general_purpose::STANDARD.encode(ops.to_string());
                                    json!({"uid": uid, "allowed": true, "patchType": "JSONPatch", "patch": patch})
                                }
                                "/slow" => {
                                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                                    json!({"uid": uid, "allowed": true})
                                }
                                "/protect" if request["operation"] == "DELETE" => json!({"uid": uid, "allowed": false, "status": {"message": "protected"}}),
                                "/connect" if request["object"]["stdin"] == true => {
                                    let o = &request["object"];
                                    let what = format!("{} {} {} {}", request["kind"]["kind"].as_str().unwrap_or(""), o["kind"].as_str().unwrap_or(""), o["container"].as_str().unwrap_or(""), o["command"]);
                                    json!({"uid": uid, "allowed": false, "status": {"message": format!("no stdin: {what}")}})
                                }
                                "/connect" => json!({"uid": uid, "allowed": true}),
                                "/scale" if request["object"]["spec"]["replicas"].as_i64().unwrap_or(0) > 5 => {
                                    let what = format!("at most 5, asked {} ({} {})", request["object"]["spec"]["replicas"], request["kind"]["group"].as_str().unwrap_or(""), request["kind"]["kind"].as_str().unwrap_or(""));
                                    json!({"uid": uid, "allowed": false, "status": {"message": what}})
                                }
                                "/scale" => json!({"uid": uid, "allowed": true}),
                                "/deny-all" => {
                                    let what = format!("no {}/{} {}", request["kind"]["group"].as_str().unwrap_or(""), request["kind"]["kind"].as_str().unwrap_or(""), request["subResource"].as_str().unwrap_or(""));
                                    json!({"uid": uid, "allowed": false, "status": {"message": what}})
                                }
                                "/protect" => json!({"uid": uid, "allowed": true}),
                                _ => json!({"uid": "wrong", "allowed": true}),
                            };
                            let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
                            hyper::Response::builder().header("content-type", "application/json").body(http_body_util::Full::new(hyper::body::Bytes::from(out.to_string())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), svc).await;
                });
            }
        });
        WebhookServer { port, ca_bundle, reviews, connections, _runtime: runtime }
    }

    /// A webhook entry calling `path`, for `resources` and `operations`.
    fn hook(&self, name: &str, path: &str, resources: &str, operations: &str, extra: &str) -> String {
        format!(
            "- name: {name}\n  clientConfig: {{url: \"https://127.0.0.1:{}{path}\", caBundle: \"{}\"}}\n  rules: [{{operations: [{operations}], apiGroups: [\"\"], apiVersions: [v1], resources: [{resources}]}}]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n{extra}",
            self.port, self.ca_bundle
        )
    }

    fn reviews_to(&self, path: &str) -> Vec<serde_json::Value> {
        self.reviews.lock().expect("reviews").iter().filter(|(p, _)| p.starts_with(&format!("{path}?"))).map(|(_, r)| r.clone()).collect()
    }
}

/// Admission webhooks are called (they were stored and ignored before): a validating webhook's
/// denial is the request's 403 with upstream's message and its warnings reach kubectl; a
/// mutating webhook's JSONPatch is stored, on create, update, patch and server-side apply,
/// with the namespaceSelector and objectSelector narrowing what is sent; an IfNeeded webhook is
/// called again after a later one changed the object (what the kind does not have is dropped);
/// DELETEs are sent with the stored object;
/// a webhook that cannot be reached or answers late fails the request under failurePolicy Fail
/// and is skipped under Ignore; webhook configurations themselves are never sent.
#[test]
fn admission_webhooks_are_called() {
    let s = ApiServer::start(Backend::Embedded);
    let w = WebhookServer::start();
    // A configuration takes effect within moments (the server reads it from its watch cache):
    // kubectl `args` is tried until it fails, and its error returned.
    let refused = |args: &[&str], what: &str| {
        let mut err = String::new();
        assert!(
            common::eventually(Duration::from_secs(10), || {
                let out = s.kubectl(args);
                err = String::from_utf8_lossy(&out.stderr).to_string();
                !out.status.success()
            }),
            "{what}"
        );
        err
    };
    s.ok(&["create", "namespace", "hooked"]);
    s.ok(&["label", "namespace", "hooked", "webhooks=on"]);
    s.ok(&["create", "namespace", "plain"]);
    let validating = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: check}}\nwebhooks:\n{}",
        w.hook("validate.strata.test", "/validate", "configmaps", "CREATE, UPDATE", "  namespaceSelector: {matchLabels: {webhooks: \"on\"}}\n")
    );
    let out = s.kubectl_stdin(&["create", "-f", "-"], Some(&validating));
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("Warning"), "{out:?}");
    let err = refused(&["create", "configmap", "probe", "-n", "hooked", "--from-literal=forbidden=1"], "the validating webhook was never called");
    assert!(err.contains("admission webhook \"validate.strata.test\" denied the request: the key \"forbidden\" is not allowed"), "{err}");
    let (code, body) = s.curl("POST", "/api/v1/namespaces/hooked/configmaps", common::server::Auth::Admin, Some("application/json"), Some(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"raw"},"data":{"forbidden":"1"}}"#));
    let status: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!((code, status["reason"].as_str()), (403, Some("Forbidden")), "{body}");
    assert_eq!(status["message"], "configmaps \"raw\" is forbidden: admission webhook \"validate.strata.test\" denied the request: the key \"forbidden\" is not allowed", "{body}");
    assert!(s.get_json("/api/v1/namespaces/hooked/configmaps/raw").is_null(), "a denied object was stored");
    // Admitted: the webhook's warning reaches kubectl; the review is upstream's.
    let out = s.kubectl(&["create", "configmap", "fine", "-n", "hooked", "--from-literal=a=1"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Warning: validated CREATE fine"), "{out:?}");
    let review = w.reviews_to("/validate").into_iter().rev().find(|r| r["request"]["name"] == "fine").expect("the review of fine");
    let req = &review["request"];
    assert_eq!((review["apiVersion"].as_str(), review["kind"].as_str()), (Some("admission.k8s.io/v1"), Some("AdmissionReview")), "{review}");
    assert_eq!(req["kind"], serde_json::json!({"group": "", "version": "v1", "kind": "ConfigMap"}), "{review}");
    assert_eq!(req["resource"], serde_json::json!({"group": "", "version": "v1", "resource": "configmaps"}), "{review}");
    assert_eq!((req["namespace"].as_str(), req["operation"].as_str(), req["dryRun"].as_bool()), (Some("hooked"), Some("CREATE"), Some(false)), "{review}");
    assert_eq!(req["userInfo"]["username"], "admin", "{review}");
    assert_eq!(req["object"]["data"]["a"], "1", "{review}");
    assert_eq!(req["options"]["kind"], "CreateOptions", "{review}");
    assert!(!req["uid"].as_str().unwrap_or("").is_empty(), "{review}");
    let sent = w.reviews.lock().expect("reviews").iter().find(|(p, r)| p.starts_with("/validate?") && r["request"]["name"] == "fine").map(|(p, _)| p.clone()).unwrap_or_default();
    assert_eq!(sent, "/validate?timeout=10s");
    // Connections are kept alive: one request after another reuses one.
    let (before, reviewed) = (w.connections.load(std::sync::atomic::Ordering::SeqCst), w.reviews_to("/validate").len());
    for i in 0..8 {
        let (code, body) = s.curl("POST", "/api/v1/namespaces/hooked/configmaps", common::server::Auth::Admin, Some("application/json"), Some(format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"kept-{i}"}}}}"#).as_bytes()));
        assert_eq!(code, 201, "{body}");
    }
    let opened = w.connections.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(w.reviews_to("/validate").len(), reviewed + 8);
    assert!(opened <= 1, "8 reviews one after another opened {opened} connections");
    // Updates and dry runs go too; other namespaces (namespaceSelector) do not.
    let err = s.fails(&["patch", "configmap", "fine", "-n", "hooked", "--type=merge", "-p", r#"{"data":{"forbidden":"x"}}"#], None);
    assert!(err.contains("denied the request"), "{err}");
    let err = s.fails(&["create", "configmap", "dry", "-n", "hooked", "--from-literal=forbidden=1", "--dry-run=server"], None);
    assert!(err.contains("denied the request"), "{err}");
    assert!(w.reviews_to("/validate").iter().any(|r| r["request"]["dryRun"] == true && r["request"]["options"]["dryRun"][0] == "All"));
    s.ok(&["create", "configmap", "free", "-n", "plain", "--from-literal=forbidden=1"]);

    // clientConfig.service: the Service's port is found among its Endpoints' (by name) and a
    // ready address dialled, the certificate checked for <service>.<namespace>.svc. (The
    // address is this host's, as the API server advertises it.)
    let ep = s.get_json("/api/v1/namespaces/default/endpoints/kubernetes");
    let host_ip: std::net::IpAddr = ep["subsets"][0]["addresses"][0]["ip"].as_str().unwrap_or("").parse().unwrap_or_else(|_| panic!("no address: {ep}"));
    let behind = WebhookServer::start_on(host_ip, &["hooks.plain.svc"]);
    s.ok_stdin(&["create", "-f", "-"], Some(&format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: hooks, namespace: plain}}\nspec:\n  ports: [{{name: https, port: 443, targetPort: {0}}}]\n---\napiVersion: v1\nkind: Endpoints\nmetadata: {{name: hooks, namespace: plain}}\nsubsets:\n- addresses: [{{ip: \"{host_ip}\"}}]\n  ports: [{{name: https, port: {0}}}]\n",
        behind.port
    )));
    s.ok_stdin(&["create", "-f", "-"], Some(&format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: by-service}}\nwebhooks:\n- name: service.strata.test\n  clientConfig: {{service: {{namespace: plain, name: hooks, path: /validate}}, caBundle: \"{}\"}}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [secrets]}}]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n",
        behind.ca_bundle
    )));
    let err = refused(&["create", "secret", "generic", "nope", "-n", "plain", "--from-literal=forbidden=1"], "the webhook behind a Service was never called");
    assert!(err.contains("admission webhook \"service.strata.test\" denied the request"), "{err}");
    assert!(behind.reviews_to("/validate").iter().any(|r| r["request"]["name"] == "nope"), "the review did not reach the server behind the Service");
    s.ok(&["create", "secret", "generic", "yes", "-n", "plain", "--from-literal=a=1"]);
    s.ok(&["delete", "validatingwebhookconfiguration", "by-service"]);

    // Mutating webhooks: the patch is stored, on every kind of write; objectSelector narrows.
    let mutating = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: a-label}}\nwebhooks:\n{}",
        w.hook("mutate.strata.test", "/mutate", "configmaps", "CREATE, UPDATE", "  objectSelector: {matchExpressions: [{key: skip, operator: DoesNotExist}]}\n  reinvocationPolicy: IfNeeded\n")
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&mutating));
    let labels = |name: &str| s.get_json(&format!("/api/v1/namespaces/plain/configmaps/{name}"))["metadata"]["labels"].clone();
    assert!(
        common::eventually(Duration::from_secs(10), || {
            let _ = s.kubectl(&["delete", "configmap", "m1", "-n", "plain", "--ignore-not-found"]);
            s.ok(&["create", "configmap", "m1", "-n", "plain", "--from-literal=a=1"]);
            labels("m1")["mutated"].is_string()
        }),
        "the mutating webhook was never called"
    );
    s.ok(&["label", "configmap", "m1", "-n", "plain", "extra=1"]);
    let l = labels("m1");
    assert!(l["mutated"].is_string() && l["extra"] == "1", "{l}");
    s.ok_stdin(&["apply", "--server-side", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: applied, namespace: plain}\ndata: {a: \"1\"}\n"));
    assert!(labels("applied")["mutated"].is_string(), "{}", labels("applied"));
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped, namespace: plain, labels: {skip: \"yes\"}}\n"));
    assert!(labels("skipped")["mutated"].is_null(), "{}", labels("skipped"));
    // A mutation the validating webhook sees: it gets the mutated object.
    s.ok(&["create", "configmap", "both", "-n", "hooked", "--from-literal=a=1"]);
    let review = w.reviews_to("/validate").into_iter().rev().find(|r| r["request"]["name"] == "both").expect("the review of both");
    assert!(review["request"]["object"]["metadata"]["labels"]["mutated"].is_string(), "{review}");

    // Reinvocation: a later webhook (config "b-annotate") changes the object, so the IfNeeded
    // one ("a-label") is called a second time in the same request.
    let annotating = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {{name: b-annotate}}\nwebhooks:\n{}",
        w.hook("annotate.strata.test", "/annotate", "configmaps", "CREATE", "")
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&annotating));
    assert!(
        common::eventually(Duration::from_secs(10), || {
            let _ = s.kubectl(&["delete", "configmap", "twice", "-n", "plain", "--ignore-not-found"]);
            let before = w.reviews_to("/mutate").len();
            s.ok(&["create", "configmap", "twice", "-n", "plain", "--from-literal=a=1"]);
            let cm = s.get_json("/api/v1/namespaces/plain/configmaps/twice");
            cm["metadata"]["annotations"]["annotated"] == "yes" && cm.get("bogus").is_none() && w.reviews_to("/mutate").len() == before + 2
        }),
        "the IfNeeded webhook was not called again after the later one changed the object"
    );
    s.ok(&["delete", "mutatingwebhookconfiguration", "b-annotate"]);

    // DELETE: the stored object is the review's oldObject; a denial keeps the object.
    let protect = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: protect}}\nwebhooks:\n{}",
        w.hook("protect.strata.test", "/protect", "configmaps", "DELETE", "  objectSelector: {matchLabels: {protected: \"yes\"}}\n")
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&protect));
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: plain, labels: {protected: \"yes\"}}\n"));
    let err = refused(&["delete", "configmap", "kept", "-n", "plain"], "the DELETE webhook was never called");
    assert!(err.contains("configmaps \"kept\" is forbidden: admission webhook \"protect.strata.test\" denied the request: protected"), "{err}");
    assert!(!s.get_json("/api/v1/namespaces/plain/configmaps/kept").is_null(), "a denied delete deleted");
    // A deletecollection deletes each object as a DELETE of its own.
    let (code, body) = s.curl("DELETE", "/api/v1/namespaces/plain/configmaps?labelSelector=protected%3Dyes", common::server::Auth::Admin, None, None);
    assert!(code == 403 && body.contains("denied the request: protected"), "{code} {body}");
    assert!(!s.get_json("/api/v1/namespaces/plain/configmaps/kept").is_null(), "a denied deletecollection deleted");
    let review = w.reviews_to("/protect").into_iter().last().expect("a DELETE review");
    assert_eq!((review["request"]["operation"].as_str(), review["request"]["oldObject"]["metadata"]["name"].as_str()), (Some("DELETE"), Some("kept")), "{review}");
    assert!(review["request"]["object"].is_null(), "{review}");
    assert_eq!(review["request"]["options"]["kind"], "DeleteOptions", "{review}");
    s.ok(&["delete", "configmap", "free", "-n", "plain"]);
    s.ok(&["delete", "validatingwebhookconfiguration", "protect"]);

    // CONNECT: a pod's exec and attach are sent with their options object (before the pod's
    // node is looked for: this pod is never scheduled).
    let connect = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: connect}}\nwebhooks:\n{}",
        w.hook("connect.strata.test", "/connect", "pods/exec, pods/attach", "CONNECT", "")
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&connect));
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: Pod\nmetadata: {name: attached, namespace: plain}\nspec: {containers: [{name: c, image: busybox}]}\n"));
    let mut body = String::new();
    assert!(
        common::eventually(Duration::from_secs(10), || {
            let (code, b) = s.curl("POST", "/api/v1/namespaces/plain/pods/attached/attach?container=c&stdin=true&stdout=true", common::server::Auth::Admin, None, None);
            body = b;
            code == 403
        }),
        "the CONNECT webhook was never called: {body}"
    );
    assert!(body.contains("denied the request: no stdin: PodAttachOptions PodAttachOptions c null"), "{body}");
    let (code, body) = s.curl("POST", "/api/v1/namespaces/plain/pods/attached/exec?container=c&stdin=true&command=sh&command=-c&command=id", common::server::Auth::Admin, None, None);
    assert!(code == 403 && body.contains("no stdin: PodExecOptions PodExecOptions c [\\\"sh\\\",\\\"-c\\\",\\\"id\\\"]"), "{code} {body}");
    let err = s.fails(&["exec", "-i", "attached", "-n", "plain", "--", "true"], None);
    assert!(err.contains("admission webhook \"connect.strata.test\" denied the request: no stdin"), "{err}");
    // Allowed by the webhook, the request goes on (and finds no node).
    let (code, body) = s.curl("POST", "/api/v1/namespaces/plain/pods/attached/exec?container=c&stdout=true&command=id", common::server::Auth::Admin, None, None);
    assert!(code == 400 && body.contains("does not have a host assigned"), "{code} {body}");
    s.ok(&["delete", "validatingwebhookconfiguration", "connect"]);

    // A pod's binding and eviction are CREATEs of their own objects.
    let subresources = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: subresources}}\nwebhooks:\n{}",
        w.hook("subresources.strata.test", "/deny-all", "pods/binding, pods/eviction", "CREATE", "")
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&subresources));
    let binding = br#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"attached"},"target":{"kind":"Node","name":"n1"}}"#;
    let mut body = String::new();
    assert!(
        common::eventually(Duration::from_secs(10), || {
            let (code, b) = s.curl("POST", "/api/v1/namespaces/plain/pods/attached/binding", common::server::Auth::Admin, Some("application/json"), Some(binding));
            body = b;
            code == 403
        }),
        "the binding webhook was never called: {body}"
    );
    assert!(body.contains("denied the request: no /Binding binding"), "{body}");
    let eviction = br#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"attached","namespace":"plain"}}"#;
    let (code, body) = s.curl("POST", "/api/v1/namespaces/plain/pods/attached/eviction", common::server::Auth::Admin, Some("application/json"), Some(eviction));
    assert!(code == 403 && body.contains("denied the request: no policy/Eviction eviction"), "{code} {body}");
    assert!(s.get_json("/api/v1/namespaces/plain/pods/attached")["spec"]["nodeName"].is_null(), "a denied binding bound");
    s.ok(&["delete", "validatingwebhookconfiguration", "subresources"]);

    // The scale subresource: the webhook is sent the Scale (autoscaling/v1).
    let scale = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: scale}}\nwebhooks:\n{}",
        w.hook("scale.strata.test", "/scale", "replicationcontrollers/scale", "UPDATE", "")
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&scale));
    s.ok_stdin(&["create", "-f", "-"], Some("apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc, namespace: plain}\nspec:\n  replicas: 1\n  selector: {app: rc}\n  template:\n    metadata: {labels: {app: rc}}\n    spec: {containers: [{name: c, image: busybox}]}\n"));
    let err = refused(&["scale", "rc", "rc", "-n", "plain", "--replicas=9"], "the scale webhook was never called");
    assert!(err.contains("denied the request: at most 5, asked 9 (autoscaling Scale)"), "{err}");
    s.ok(&["scale", "rc", "rc", "-n", "plain", "--replicas=3"]);
    assert_eq!(s.get_json("/api/v1/namespaces/plain/replicationcontrollers/rc")["spec"]["replicas"], 3);
    s.ok(&["delete", "validatingwebhookconfiguration", "scale"]);

    // Failures: nothing listening, or too slow (timeoutSeconds 1): Fail refuses with 500, Ignore admits.
    let dead = common::free_port();
    let failing = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: failing}}\nwebhooks:\n- name: dead.strata.test\n  clientConfig: {{url: \"https://127.0.0.1:{dead}/x\", caBundle: \"{}\"}}\n  rules: [{{operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [secrets]}}]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n{}",
        w.ca_bundle,
        w.hook("slow.strata.test", "/slow", "serviceaccounts", "CREATE", "  timeoutSeconds: 1\n")
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&failing));
    let err = refused(&["create", "secret", "generic", "s1", "-n", "plain", "--from-literal=a=1"], "an unreachable webhook did not fail the request");
    assert!(err.contains(&format!("Internal error occurred: failed calling webhook \"dead.strata.test\": failed to call webhook: Post \"https://127.0.0.1:{dead}/x?timeout=10s\"")), "{err}");
    let started = std::time::Instant::now();
    let err = s.fails(&["create", "serviceaccount", "sa1", "-n", "plain"], None);
    assert!(err.contains("failed calling webhook \"slow.strata.test\"") && err.contains("context deadline exceeded"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "the 1 s timeout was not kept: {:?}", started.elapsed());
    s.ok(&["patch", "validatingwebhookconfiguration", "failing", "--type=json", "-p", r#"[{"op":"replace","path":"/webhooks/0/failurePolicy","value":"Ignore"},{"op":"replace","path":"/webhooks/1/failurePolicy","value":"Ignore"}]"#]);
    assert!(
        common::eventually(Duration::from_secs(10), || s.kubectl(&["create", "secret", "generic", "s2", "-n", "plain", "--from-literal=a=1"]).status.success()),
        "failurePolicy Ignore did not admit"
    );
    s.ok(&["create", "serviceaccount", "sa2", "-n", "plain"]);
    // Webhook configurations are never sent to webhooks: a configuration whose webhook would
    // refuse everything can still be changed and deleted.
    let all = format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: everything}}\nwebhooks:\n- name: all.strata.test\n  clientConfig: {{url: \"https://127.0.0.1:{dead}/x\", caBundle: \"{}\"}}\n  rules: [{{operations: [\"*\"], apiGroups: [\"*\"], apiVersions: [\"*\"], resources: [\"*\"]}}]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n",
        w.ca_bundle
    );
    s.ok_stdin(&["create", "-f", "-"], Some(&all));
    std::thread::sleep(Duration::from_secs(1));
    s.ok(&["label", "validatingwebhookconfiguration", "everything", "x=y"]);
    s.ok(&["delete", "validatingwebhookconfiguration", "everything", "failing", "check"]);
}
