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
