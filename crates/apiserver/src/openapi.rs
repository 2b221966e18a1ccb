//! OpenAPI v3 documents: the `/openapi/v3` index and one document per group/version.
//!
//! kubectl reads them to learn that the server validates fields itself (a `fieldValidation`
//! query parameter on each kind's PATCH operation, tagged with
//! `x-kubernetes-group-version-kind`), and then sends `fieldValidation=Strict` instead of
//! validating on the client; `kubectl explain` walks the schemas. Field schemas come from the
//! k8s.io/api message table ([`crate::protobuf::schema`]); kinds outside it (Lease,
//! EndpointSlice, VirtualMachine) get an envelope that preserves unknown fields.

use serde_json::{json, Map, Value};

use crate::protobuf::{schema_of, C, K};
use crate::resources::{self, Resource};

/// The JSON schema of one field's value type.
fn field_type(k: K, prefix: &str, deps: &mut Vec<&'static str>) -> Value {
    match k {
        K::Str => json!({ "type": "string" }),
        K::Bool => json!({ "type": "boolean" }),
        K::I32 => json!({ "type": "integer", "format": "int32" }),
        K::I64 => json!({ "type": "integer", "format": "int64" }),
        K::Bytes => json!({ "type": "string", "format": "byte" }),
        K::Time | K::MicroTime => json!({ "type": "string", "format": "date-time" }),
        K::IntOrStr => json!({ "x-kubernetes-int-or-string": true }),
        K::Quantity => json!({ "x-kubernetes-int-or-string": true, "type": "string" }),
        K::Raw => json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
        K::Msg(m) | K::Inline(m) => {
            if !deps.contains(&m) {
                deps.push(m);
            }
            json!({ "allOf": [{ "$ref": format!("#/components/schemas/{prefix}{m}") }] })
        }
    }
}

/// Properties of message `msg` (inlined messages merged in), recording referenced messages.
fn properties(msg: &str, prefix: &str, deps: &mut Vec<&'static str>, props: &mut Map<String, Value>) {
    for f in schema_of(msg).unwrap_or(&[]) {
        if let K::Inline(inner) = f.2 {
            properties(inner, prefix, deps, props);
            continue;
        }
        let t = field_type(f.2, prefix, deps);
        let v = match f.3 {
            C::Rep => json!({ "type": "array", "items": t }),
            C::Map => json!({ "type": "object", "additionalProperties": t }),
            C::Keep | C::Omit => t,
        };
        props.insert(f.1.to_string(), v);
    }
}

/// Component schemas for `root` and every message it reaches, named `<prefix><Message>`.
fn components(root: &'static str, prefix: &str, out: &mut Map<String, Value>) {
    let mut todo = vec![root];
    while let Some(m) = todo.pop() {
        let name = format!("{prefix}{m}");
        if out.contains_key(&name) {
            continue;
        }
        let mut deps = Vec::new();
        let mut props = Map::new();
        properties(m, prefix, &mut deps, &mut props);
        out.insert(name, json!({ "type": "object", "properties": props }));
        todo.extend(deps);
    }
}

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
        if let Some((msg, _)) = crate::protobuf::schema::MESSAGES.iter().find(|(m, _)| *m == r.kind) {
            // The kind's own schema, with its GVK; the messages it reaches beside it.
            let prefix = format!("{}.", schema_name(r).rsplit_once('.').map_or("", |(p, _)| p));
            components(msg, &prefix, &mut schemas);
            if let Some(s) = schemas.get_mut(&schema_name(r)) {
                s["description"] = json!(format!("{} is a {} object of the {} API.", r.kind, r.kind, r.api_version()));
                s["properties"]["apiVersion"] = json!({ "type": "string", "description": "APIVersion defines the versioned schema of this representation of an object." });
                s["properties"]["kind"] = json!({ "type": "string", "description": "Kind is a string value representing the REST resource this object represents." });
                s["x-kubernetes-group-version-kind"] = gvk.clone();
            }
            continue;
        }
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
