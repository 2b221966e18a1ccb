//! `GET /openapi/v2`: the whole API in one Swagger 2.0 document, as JSON or as gnostic protobuf
//! ([`crate::gnostic`]), chosen by `Accept` as kube-apiserver does, with an `ETag`.
//!
//! kubectl downloads it (as protobuf) to validate, on the client, kinds whose OpenAPI v3 does not
//! declare server-side field validation, which includes kinds the server does not serve at all:
//! without it, `kubectl apply` of such a kind fails with "failed to download openapi" instead of
//! "no matches for kind". The definitions and paths come from [`crate::openapi`], like v3's.

use std::sync::{Arc, Mutex, OnceLock};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use serde_json::{json, Map, Value};

use crate::openapi::{self, Flavor, Operation};
use crate::resources::Resource;
use crate::status::ApiError;

/// The media type client-go asks for (deprecated upstream: `@` is not valid in a media type, and
/// Go's `mime` package refuses it in a `Content-Type`).
pub const PROTOBUF_ASKED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The media type of the answer, whichever spelling was asked for (as kube-openapi does).
pub const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The v2 form of one operation.
fn operation(o: &Operation) -> Value {
    let mut params: Vec<Value> =
        o.params.iter().map(|(name, ty)| json!({ "name": name, "in": "query", "type": ty, "uniqueItems": true })).collect();
    if let Some(body) = &o.body {
        params.insert(0, json!({ "name": "body", "in": "body", "required": o.method != "delete", "schema": Flavor::V2.reference(body) }));
    }
    let consumes = match o.method {
        "patch" if o.strategic => json!(["application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json"]),
        // Custom kinds (upstream's CRD handler): kubectl's client-side apply sends a merge patch.
        "patch" => json!(["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]),
        _ => json!(["*/*"]),
    };
    let produces = match o.action {
        "list" => json!(["application/json", "application/json;stream=watch"]),
        _ => json!(["application/json"]),
    };
    json!({
        "operationId": o.id,
        "tags": [o.tag],
        "schemes": ["https"],
        "consumes": consumes,
        "produces": produces,
        "parameters": params,
        "responses": {
            "200": { "description": "OK", "schema": Flavor::V2.reference(&o.response) },
            "401": { "description": "Unauthorized" },
        },
        "x-kubernetes-action": o.action,
        "x-kubernetes-group-version-kind": o.gvk,
    })
}

/// The document.
pub fn document() -> Value {
    let rs: Vec<&Resource> = openapi::published();
    let mut paths = Map::new();
    for r in &rs {
        for p in openapi::resource_paths(r) {
            let mut item = Map::new();
            for o in &p.ops {
                item.insert(o.method.to_string(), operation(o));
            }
            let params: Vec<Value> = p
                .path_params
                .iter()
                .map(|n| json!({ "name": n, "in": "path", "required": true, "type": "string", "uniqueItems": true }))
                .collect();
            if !params.is_empty() {
                item.insert("parameters".into(), json!(params));
            }
            paths.insert(p.path, Value::Object(item));
        }
    }
    json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": crate::discovery::KUBE_VERSION },
        "paths": paths,
        "definitions": openapi::definitions(&rs, Flavor::V2),
        "securityDefinitions": { "BearerToken": { "type": "apiKey", "name": "authorization", "in": "header",
                                                  "description": "Bearer Token authentication" } },
        "security": [{ "BearerToken": [] }],
    })
}

/// Both encodings, made once per set of served kinds (the custom kinds' [`crate::crd::generation`]).
struct Encoded {
    json: Vec<u8>,
    protobuf: Result<Vec<u8>, String>,
    etag: String,
}

fn encoded() -> Arc<Encoded> {
    static ENCODED: OnceLock<Mutex<(u64, Option<Arc<Encoded>>)>> = OnceLock::new();
    let cell = ENCODED.get_or_init(|| Mutex::new((0, None)));
    let generation = crate::crd::generation();
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let (g, Some(enc)) = &*guard {
        if *g == generation {
            return enc.clone();
        }
    }
    let enc = Arc::new({
        let doc = document();
        let json = doc.to_string().into_bytes();
        let protobuf = crate::gnostic::convert(&doc).map(|d| d.encode_to_vec()).map_err(|e| e.to_string());
        if let Err(e) = &protobuf {
            tracing::error!(error = %e, "the OpenAPI v2 document has no protobuf form");
        }
        // Any value that changes with the content will do; clients only compare it.
        let etag = format!("\"{:016x}\"", fnv1a(&json));
        Encoded { json, protobuf, etag }
    });
    *guard = (generation, Some(enc.clone()));
    enc
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, x| (h ^ u64::from(*x)).wrapping_mul(0x0100_0000_01b3))
}

/// Which representation `accept` prefers: `Some(true)` protobuf, `Some(false)` JSON, `None`
/// neither (406). Clauses are taken by quality, then in order.
fn negotiate(accept: &str) -> Option<bool> {
    let accept = if accept.trim().is_empty() { "*/*" } else { accept };
    let mut clauses: Vec<(f32, &str)> = accept
        .split(',')
        .map(|c| {
            let mut parts = c.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            let q = parts.filter_map(|p| p.strip_prefix("q=")).find_map(|q| q.parse::<f32>().ok()).unwrap_or(1.0);
            (q, media)
        })
        .filter(|(q, _)| *q > 0.0)
        .collect();
    clauses.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, media) in clauses {
        let (ty, sub) = media.split_once('/').unwrap_or((media, ""));
        let matches = |t: &str, s: &str| (ty == t || ty == "*") && (sub == s || sub == "*");
        if matches("application", "json") {
            return Some(false);
        }
        for pb in [PROTOBUF_ASKED, PROTOBUF] {
            let (t, s) = pb.split_once('/').unwrap_or((pb, ""));
            if matches(t, s) {
                return Some(true);
            }
        }
    }
    None
}

/// Answer `GET /openapi/v2`.
pub fn serve(headers: &HeaderMap) -> Response {
    let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(protobuf) = negotiate(accept) else {
        return ApiError::new(406, "NotAcceptable", format!("only application/json and {PROTOBUF_ASKED} are available (Accept: {accept:?})")).into_response();
    };
    let enc = encoded();
    let (ct, body) = if protobuf {
        match &enc.protobuf {
            Ok(b) => (PROTOBUF, b.clone()),
            Err(e) => return ApiError::internal(e.clone()).into_response(),
        }
    } else {
        ("application/json", enc.json.clone())
    };
    let fresh = headers.get("if-none-match").and_then(|v| v.to_str().ok()).is_some_and(|v| v.split(',').any(|t| t.trim() == enc.etag));
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { (StatusCode::OK, body).into_response() };
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(ct));
    h.insert("vary", HeaderValue::from_static("Accept"));
    if let Ok(v) = HeaderValue::from_str(&enc.etag) {
        h.insert("etag", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::tests::refs_resolve;

    #[test]
    fn document_is_closed_and_describes_every_kind() {
        let doc = document();
        let defs = doc["definitions"].as_object().expect("definitions");
        refs_resolve(&doc, "#/definitions/", defs);
        let d = &defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d["x-kubernetes-group-version-kind"], json!([{ "group": "apps", "version": "v1", "kind": "Deployment" }]));
        assert_eq!(d["properties"]["spec"]["$ref"], "#/definitions/io.k8s.api.apps.v1.DeploymentSpec");
        assert_eq!(defs["io.k8s.api.core.v1.Container"]["properties"]["image"]["type"], "string");
        assert!(defs.contains_key("io.k8s.api.core.v1.ConfigMapList") && defs.contains_key("io.k8s.apimachinery.pkg.apis.meta.v1.Status"));
        for r in crate::resources::RESOURCES {
            let gvk = json!({ "group": r.group, "version": r.version, "kind": r.kind });
            let patched = doc["paths"].as_object().expect("paths").values().any(|p| {
                p["patch"]["x-kubernetes-group-version-kind"] == gvk
                    && p["patch"]["parameters"].as_array().is_some_and(|ps| ps.iter().any(|x| x["name"] == "fieldValidation" && x["in"] == "query"))
            });
            assert!(patched, "no PATCH operation with fieldValidation for {}", r.kind);
            assert_eq!(defs[&openapi::kind_definition(r)]["x-kubernetes-group-version-kind"][0]["kind"], r.kind);
        }
    }

    /// The review kinds (SubjectAccessReview, TokenReview, ...) are described with their one
    /// operation, `post` on the collection, as upstream publishes them.
    #[test]
    fn review_kinds_are_published_with_their_create_operation() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        for (path, id, def) in [
            ("/apis/authorization.k8s.io/v1/subjectaccessreviews", "createAuthorizationV1SubjectAccessReview", "io.k8s.api.authorization.v1.SubjectAccessReview"),
            ("/apis/authorization.k8s.io/v1/namespaces/{namespace}/localsubjectaccessreviews", "createAuthorizationV1NamespacedLocalSubjectAccessReview", "io.k8s.api.authorization.v1.LocalSubjectAccessReview"),
            ("/apis/authentication.k8s.io/v1/tokenreviews", "createAuthenticationV1TokenReview", "io.k8s.api.authentication.v1.TokenReview"),
        ] {
            let item = paths.get(path).unwrap_or_else(|| panic!("no path {path}"));
            assert_eq!(item["post"]["operationId"], id);
            assert!(item.get("get").is_none() && item.get("delete").is_none(), "{path}: {item}");
            assert_eq!(item["post"]["parameters"].as_array().map(|p| p.iter().any(|x| x["name"] == "body" && x["schema"]["$ref"] == format!("#/definitions/{def}"))), Some(true), "{item}");
            let d = &doc["definitions"][def];
            assert!(d["properties"]["spec"]["$ref"].is_string() && d["x-kubernetes-group-version-kind"].is_array(), "{def}: {d}");
            assert!(doc["definitions"].get(format!("{def}List")).is_none(), "a review kind has no list");
        }
        assert!(!paths.contains_key("/apis/authorization.k8s.io/v1/subjectaccessreviews/{name}"));
    }

    #[test]
    fn protobuf_form_carries_the_same_document() {
        let enc = encoded();
        let bytes = enc.protobuf.as_ref().expect("the document converts");
        let d = crate::gnostic::Document::decode(bytes.as_slice()).expect("decode");
        let defs = d.definitions.expect("definitions").additional_properties;
        assert_eq!(defs.len(), document()["definitions"].as_object().map(Map::len).unwrap_or(0));
        let dep = defs.iter().find(|n| n.name == "io.k8s.api.apps.v1.Deployment").and_then(|n| n.value.as_ref()).expect("deployment");
        let ext = dep.vendor_extension.iter().find(|e| e.name == "x-kubernetes-group-version-kind").and_then(|e| e.value.as_ref()).expect("gvk");
        let gvk: Value = serde_json::from_str(&ext.yaml).expect("yaml");
        assert_eq!(gvk[0]["kind"], "Deployment");
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(negotiate(PROTOBUF_ASKED), Some(true));
        assert_eq!(negotiate("application/json"), Some(false));
        assert_eq!(negotiate(""), Some(false));
        assert_eq!(negotiate("*/*"), Some(false));
        assert_eq!(negotiate(&format!("application/json;q=0.5, {PROTOBUF_ASKED}")), Some(true));
        assert_eq!(negotiate(PROTOBUF), Some(true));
        assert_eq!(negotiate("text/html"), None);
        assert_eq!(negotiate("application/json;q=0"), None);
    }
}
