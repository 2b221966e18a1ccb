//! OpenAPI v3 documents: the `/openapi/v3` index and one document per group/version.
//!
//! kubectl reads them to learn that the server validates fields itself (a `fieldValidation`
//! query parameter on each kind's PATCH operation, tagged with
//! `x-kubernetes-group-version-kind`), and then sends `fieldValidation=Strict` instead of
//! validating on the client. The schemas are envelopes for now (type, apiVersion/kind/metadata
//! and the kind's GVK); full field schemas for `kubectl explain` are still to come.

use serde_json::{json, Map, Value};

use crate::resources::{self, Resource};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn schema_name(r: &Resource) -> String {
    let g = if r.group.is_empty() { "core".to_string() } else { r.group.split('.').next().unwrap_or(r.group).to_string() };
    format!("io.k8s.api.{g}.{}.{}", r.version, r.kind)
}

/// `/openapi/v3`: where each group/version's document is.
pub fn index() -> Value {
    let mut paths = Map::new();
    let mut seen = Vec::new();
    for r in resources::RESOURCES {
        let p = gv_path(r.group, r.version);
        if !seen.contains(&p) {
            paths.insert(p.clone(), json!({ "serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash()) }));
            seen.push(p);
        }
    }
    json!({ "paths": paths })
}

fn hash() -> &'static str {
    // Documents change only with the binary.
    concat!("strata-", env!("CARGO_PKG_VERSION"))
}

fn param(name: &str, ty: &str) -> Value {
    json!({ "name": name, "in": "query", "schema": { "type": ty, "uniqueItems": true } })
}

/// The document for `api/v1`, `apis/apps/v1`, ... (`None` if unknown).
pub fn document(path: &str) -> Option<Value> {
    let path = path.trim_matches('/');
    let rs: Vec<&Resource> = resources::RESOURCES.iter().filter(|r| gv_path(r.group, r.version) == path).collect();
    if rs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for r in rs {
        let gvk = json!([{ "group": r.group, "version": r.version, "kind": r.kind }]);
        let reference = json!({ "$ref": format!("#/components/schemas/{}", schema_name(r)) });
        let body = json!({ "content": { "application/json": { "schema": reference } } });
        let write_params = vec![param("dryRun", "string"), param("fieldManager", "string"), param("fieldValidation", "string")];
        let op = |action: &str, params: &Vec<Value>, with_body: bool| {
            let mut o = json!({
                "operationId": format!("{action}{}", r.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk[0].clone(),
                "parameters": params,
                "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": reference } } } },
            });
            if with_body {
                o["requestBody"] = body.clone();
            }
            o
        };
        let base = format!("/{path}");
        let collection = if r.namespaced { format!("{base}/namespaces/{{namespace}}/{}", r.plural) } else { format!("{base}/{}", r.plural) };
        paths.insert(
            collection.clone(),
            json!({ "get": op("list", &vec![param("labelSelector", "string"), param("fieldSelector", "string"), param("limit", "integer"), param("continue", "string"), param("watch", "boolean")], false),
                    "post": op("post", &write_params, true) }),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({ "get": op("get", &vec![], false), "put": op("put", &write_params, true),
                    "patch": op("patch", &[write_params.clone(), vec![param("force", "boolean")]].concat(), true),
                    "delete": op("delete", &vec![param("dryRun", "string"), param("gracePeriodSeconds", "integer"), param("propagationPolicy", "string")], false) }),
        );
        schemas.insert(
            schema_name(r),
            json!({
                "description": format!("{} is a {} object of the {} API.", r.kind, r.kind, r.api_version()),
                "type": "object",
                "properties": {
                    "apiVersion": { "type": "string", "description": "APIVersion defines the versioned schema of this representation of an object." },
                    "kind": { "type": "string", "description": "Kind is a string value representing the REST resource this object represents." },
                    "metadata": { "type": "object", "description": "Standard object's metadata.", "x-kubernetes-preserve-unknown-fields": true },
                    "spec": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                    "status": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                },
                "x-kubernetes-preserve-unknown-fields": true,
                "x-kubernetes-group-version-kind": gvk,
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": crate::discovery::KUBE_VERSION },
        "paths": paths,
        "components": { "schemas": schemas },
    }))
}
