//! OpenAPI documents, v3 (`/openapi/v3`: an index and one document per group/version) and v2
//! (`/openapi/v2`: one document, served by [`crate::openapi_v2`]), both built here from the
//! same data: the served kinds ([`crate::resources`]) and the generated message table
//! ([`crate::k8s_messages`], which names each message's upstream package). The two differ only in how a schema refers to another
//! ([`Flavor`]) and in the shape of parameters and bodies.
//!
//! kubectl reads v3 to learn that the server validates fields itself (a `fieldValidation`
//! query parameter on each kind's PATCH operation, tagged with
//! `x-kubernetes-group-version-kind`), and then sends `fieldValidation=Strict` instead of
//! validating on the client; `kubectl explain` walks the schemas. For a kind the server does not
//! serve, kubectl validates on the client with the v2 document. Definitions carry upstream's
//! names (`io.k8s.api.apps.v1.Deployment`, `io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta`);
//! VirtualMachine has its own typed, described schema (`crate::vm`); a kind with neither gets an
//! envelope that preserves unknown fields. Fields carry upstream's patch and list metadata
//! ([`crate::k8s_meta`], generated from k8s.io/api): `x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`, `x-kubernetes-list-map-keys`,
//! `x-kubernetes-map-type` (and `atomic` on `+structType=atomic` types), so kubectl's
//! client-side apply computes strategic merge patches that delete the list entries a manifest
//! dropped, as against kube-apiserver.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::protobuf::{schema_of, C, K};
use crate::resources::{self, Resource};

/// The package of `ObjectMeta`, `ListMeta`, `Status`, ...
pub(crate) const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1";

/// Which document a schema is written for: they differ in how one schema refers to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// `{"$ref": "#/definitions/NAME"}`.
    V2,
    /// `{"allOf": [{"$ref": "#/components/schemas/NAME"}]}`, as upstream writes it (so that a
    /// description can sit beside the reference).
    V3,
}

impl Flavor {
    pub(crate) fn reference(self, name: &str) -> Value {
        match self {
            Flavor::V2 => json!({ "$ref": format!("#/definitions/{name}") }),
            Flavor::V3 => json!({ "allOf": [{ "$ref": format!("#/components/schemas/{name}") }] }),
        }
    }
}

/// The definition name of a message of the table (`io.k8s.api.core.v1.PodSpec`).
pub(crate) fn definition_name(msg: &str) -> Option<&'static str> {
    static NAMES: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    NAMES
        .get_or_init(|| {
            crate::k8s_messages::MESSAGES.iter().map(|(name, package, _)| (*name, format!("{package}.{}", crate::protobuf::go_type(name)))).collect()
        })
        .get(msg)
        .map(String::as_str)
}

/// The package of a served group/version: `io.k8s.api.<first label>.<version>` for
/// Kubernetes groups, the reversed group for others (`dev.strata.v1`, as for a CRD).
fn group_package(group: &str, version: &str) -> String {
    if group.is_empty() {
        return format!("io.k8s.api.core.{version}");
    }
    if group == crate::crd::GROUP {
        return format!("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.{version}");
    }
    if group == "apiregistration.k8s.io" {
        return format!("io.k8s.kube-aggregator.pkg.apis.apiregistration.{version}");
    }
    if group.contains('.') && !group.ends_with(".k8s.io") {
        let reversed: Vec<&str> = group.split('.').rev().collect();
        return format!("{}.{version}", reversed.join("."));
    }
    format!("io.k8s.api.{}.{version}", group.split('.').next().unwrap_or(group))
}

/// The definition name of a served kind.
pub(crate) fn kind_definition(r: &Resource) -> String {
    format!("{}.{}", group_package(r.group, r.version), r.kind)
}

fn list_definition(r: &Resource) -> String {
    format!("{}List", kind_definition(r))
}

pub(crate) fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

/// The JSON schema of one field's value type.
fn field_type(k: K, flavor: Flavor, deps: &mut Vec<&'static str>) -> Value {
    match (k, flavor) {
        (K::Str, _) => json!({ "type": "string" }),
        (K::Bool, _) => json!({ "type": "boolean" }),
        (K::I32, _) => json!({ "type": "integer", "format": "int32" }),
        (K::I64, _) => json!({ "type": "integer", "format": "int64" }),
        (K::F64, _) => json!({ "type": "number", "format": "double" }),
        // apiextensions' JSONSchemaPropsOr* (upstream publishes them without a type).
        (K::Union(_), Flavor::V3) => json!({ "x-kubernetes-preserve-unknown-fields": true }),
        (K::Union(_), Flavor::V2) => json!({}),
        (K::Bytes, _) => json!({ "type": "string", "format": "byte" }),
        (K::Time | K::MicroTime, _) => json!({ "type": "string", "format": "date-time" }),
        (K::IntOrStr, Flavor::V3) => json!({ "x-kubernetes-int-or-string": true }),
        (K::IntOrStr, Flavor::V2) => json!({ "type": "string", "format": "int-or-string" }),
        (K::Quantity, Flavor::V3) => json!({ "x-kubernetes-int-or-string": true, "type": "string" }),
        (K::Quantity, Flavor::V2) => json!({ "type": "string" }),
        (K::Raw, Flavor::V3) => json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true }),
        (K::Raw, Flavor::V2) => json!({ "type": "object" }),
        (K::Msg(m) | K::Inline(m), _) => {
            if !deps.contains(&m) {
                deps.push(m);
            }
            flavor.reference(definition_name(m).unwrap_or(m))
        }
    }
}

/// Properties of message `msg` (inlined messages merged in), recording referenced messages.
fn properties(msg: &str, flavor: Flavor, deps: &mut Vec<&'static str>, props: &mut Map<String, Value>) {
    for f in schema_of(msg).unwrap_or(&[]) {
        if let K::Inline(inner) = f.2 {
            properties(inner, flavor, deps, props);
            continue;
        }
        let t = field_type(f.2, flavor, deps);
        let mut v = match f.3 {
            C::Rep => json!({ "type": "array", "items": t }),
            C::Map => json!({ "type": "object", "additionalProperties": t }),
            C::Keep | C::Omit => t,
        };
        if let (Some(doc), Some(o)) = (crate::k8s_docs::doc(msg, f.1), v.as_object_mut()) {
            o.insert("description".into(), json!(doc));
        }
        if let (Some(meta), Some(o)) = (crate::k8s_meta::field(crate::protobuf::go_type(msg), f.1), v.as_object_mut()) {
            let mut ext = |k: &str, val: Value| {
                o.insert(k.to_string(), val);
            };
            if !meta.strategy.is_empty() {
                ext("x-kubernetes-patch-strategy", json!(meta.strategy));
            }
            if !meta.merge_key.is_empty() {
                ext("x-kubernetes-patch-merge-key", json!(meta.merge_key));
            }
            if f.3 == C::Rep && !meta.list_type.is_empty() {
                ext("x-kubernetes-list-type", json!(meta.list_type));
                if meta.list_type == "map" {
                    ext("x-kubernetes-list-map-keys", json!(meta.list_map_keys));
                }
            }
            if f.3 == C::Map && !meta.map_type.is_empty() {
                ext("x-kubernetes-map-type", json!(meta.map_type));
            }
        }
        props.insert(f.1.to_string(), v);
    }
}

/// Definitions of `root` and of every message it reaches.
pub(crate) fn message_definitions(root: &'static str, flavor: Flavor, out: &mut Map<String, Value>) {
    let mut todo = vec![root];
    while let Some(m) = todo.pop() {
        let Some(name) = definition_name(m) else { continue };
        if out.contains_key(name) {
            continue;
        }
        let mut deps = Vec::new();
        let mut props = Map::new();
        properties(m, flavor, &mut deps, &mut props);
        let mut def = json!({ "type": "object" });
        if !props.is_empty() {
            def["properties"] = Value::Object(props);
        }
        if let Some((_, required)) = crate::k8s_messages::REQUIRED.iter().find(|(r, _)| *r == m) {
            def["required"] = json!(required);
        }
        if let Some(doc) = crate::k8s_docs::doc(m, "") {
            def["description"] = json!(doc);
        }
        if crate::k8s_meta::ATOMIC_STRUCTS.contains(&crate::protobuf::go_type(m)) {
            def["x-kubernetes-map-type"] = json!("atomic");
        }
        out.insert(name.to_string(), def);
        todo.extend(deps);
    }
}

/// `apiVersion` and `kind`, described as upstream's TypeMeta describes them.
fn type_meta_properties(props: &mut Value) {
    for field in ["apiVersion", "kind"] {
        props[field] = json!({ "type": "string", "description": crate::k8s_docs::doc("TypeMeta", field).unwrap_or_default() });
    }
}

/// A kind's `metadata` property: a reference to ObjectMeta with upstream's description of it
/// (apiextensions' builder takes it from PartialObjectMetadata).
fn metadata_property(flavor: Flavor) -> Value {
    let mut v = flavor.reference(&format!("{META}.ObjectMeta"));
    v["description"] = json!(crate::k8s_docs::doc("PartialObjectMetadata", "metadata").unwrap_or_default());
    v
}

/// The definitions of a served kind, its list and everything they reach.
fn kind_definitions(r: &Resource, flavor: Flavor, out: &mut Map<String, Value>) {
    let name = kind_definition(r);
    let description = format!("{} is a {} object of the {} API.", r.kind, r.kind, r.api_version());
    let custom_schema = crate::crd::definition(r).and_then(|d| d.version(r.version).map(|v| v.schema.clone())).filter(Value::is_object);
    if let Some(schema) = custom_schema {
        // A custom kind: its definition's schema, with the envelope every object has.
        if flavor == Flavor::V2 && schema["x-kubernetes-preserve-unknown-fields"] == json!(true) {
            // Upstream publishes nothing more in v2: kubectl would refuse the unknown fields.
            let s = json!({ "type": "object", "x-kubernetes-group-version-kind": [gvk(r.group, r.version, r.kind)] });
            out.insert(name.clone(), s);
            list_and_scale_definitions(r, flavor, &name, out);
            return;
        }
        let mut s = match flavor {
            Flavor::V3 => schema,
            Flavor::V2 => v2_schema(&schema),
        };
        // The schema's own description or none (upstream adds none: `kubectl explain` then
        // shows <empty>).
        s["type"] = json!("object");
        if !s["properties"].is_object() {
            s["properties"] = json!({});
        }
        type_meta_properties(&mut s["properties"]);
        s["properties"]["metadata"] = metadata_property(flavor);
        s["x-kubernetes-group-version-kind"] = json!([gvk(r.group, r.version, r.kind)]);
        message_definitions("ObjectMeta", flavor, out);
        out.insert(name.clone(), s);
    } else {
        builtin_kind_definitions(r, flavor, &name, &description, out);
    }
    if r.verbs() != ["create"] {
        list_and_scale_definitions(r, flavor, &name, out);
    }
}

/// A custom kind's schema as kube-apiserver publishes it in Swagger 2.0 (apiextensions'
/// `ToStructuralOpenAPIV2`, its builder's embedded-resource properties, then `PruneDefaults`):
/// the structural schema's fields, without the `allOf`/`anyOf`/`oneOf`/`not` junctors, defaults
/// and `nullable`; a nullable node loses its type and structure (and leaves its parent's
/// `required`), a node preserving unknown fields its structure and an `object` type, an array
/// without items its type. `x-kubernetes-validations` are left out.
fn v2_schema(s: &Value) -> Value {
    const KEPT: &[&str] = &[
        "description", "type", "title", "format", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum", "maxLength", "minLength",
        "pattern", "maxItems", "minItems", "uniqueItems", "multipleOf", "enum", "maxProperties", "minProperties", "required",
    ];
    let Some(m) = s.as_object() else { return s.clone() };
    let truthy = |v: Option<&Value>| v.and_then(Value::as_bool).unwrap_or(false);
    let nullable = truthy(m.get("nullable"));
    let preserve = truthy(m.get("x-kubernetes-preserve-unknown-fields"));
    let mut out = Map::new();
    for (k, v) in m {
        let v = match k.as_str() {
            "items" | "properties" if nullable || preserve => continue,
            "items" if v.is_object() => v2_schema(v),
            "additionalProperties" if v.is_object() => v2_schema(v),
            "additionalProperties" => v.clone(),
            "properties" => Value::Object(v.as_object().map(|p| p.iter().map(|(n, x)| (n.clone(), v2_schema(x))).collect()).unwrap_or_default()),
            "type" if nullable => continue,
            x if KEPT.contains(&x) => v.clone(),
            x if x.starts_with("x-kubernetes-") && x != "x-kubernetes-validations" => v.clone(),
            _ => continue,
        };
        out.insert(k.clone(), v);
    }
    let ty = out.get("type").and_then(Value::as_str).unwrap_or("");
    if (ty == "array" && !out.contains_key("items")) || (ty == "object" && preserve) {
        out.remove("type");
    }
    // Nullable properties are not required (a null is no value in Swagger 2.0).
    let nullable_props: Vec<&String> = m.get("properties").and_then(Value::as_object).map(|p| p.iter().filter(|(_, x)| truthy(x.get("nullable"))).map(|(n, _)| n).collect()).unwrap_or_default();
    let nullable_values = truthy(m.get("additionalProperties").and_then(|a| a.get("nullable")));
    if let Some(Value::Array(req)) = out.get_mut("required") {
        req.retain(|r| !nullable_values && !nullable_props.iter().any(|n| r.as_str() == Some(n.as_str())));
        if req.is_empty() {
            out.remove("required");
        }
    }
    if truthy(m.get("x-kubernetes-embedded-resource")) && !preserve {
        // An embedded object is an object with its own apiVersion, kind and metadata.
        let mut props = out.remove("properties").and_then(|p| p.as_object().cloned()).unwrap_or_default();
        props.insert("apiVersion".into(), json!({ "type": "string", "description": "apiVersion defines the versioned schema of this representation of an object." }));
        props.insert("kind".into(), json!({ "type": "string", "description": "kind is a string value representing the type of this object." }));
        props.insert("metadata".into(), Flavor::V2.reference(&format!("{META}.ObjectMeta")));
        out.insert("properties".into(), Value::Object(props));
        let mut req = out.remove("required").and_then(|r| r.as_array().cloned()).unwrap_or_default();
        for f in ["kind", "apiVersion"] {
            if !req.iter().any(|r| r == f) {
                req.push(json!(f));
            }
        }
        out.insert("required".into(), Value::Array(req));
    }
    Value::Object(out)
}

fn builtin_kind_definitions(r: &Resource, flavor: Flavor, name: &str, description: &str, out: &mut Map<String, Value>) {
    let name = name.to_string();
    match crate::protobuf::message_of(r) {
        Some(msg) => {
            message_definitions(msg, flavor, out);
            if let Some(s) = out.get_mut(&name) {
                // Upstream's description of the kind (k8s_docs), else a generic one.
                if s["description"].is_null() {
                    s["description"] = json!(description);
                }
                type_meta_properties(&mut s["properties"]);
                s["x-kubernetes-group-version-kind"] = json!([gvk(r.group, r.version, r.kind)]);
            }
        }
        None if r.group == "strata.dev" && r.kind == "VirtualMachine" => {
            crate::vm::definitions(flavor, out);
            if let Some(s) = out.get_mut(&name) {
                type_meta_properties(&mut s["properties"]);
                s["x-kubernetes-group-version-kind"] = json!([gvk(r.group, r.version, r.kind)]);
            }
        }
        None => {
            let open = |description: &str| match flavor {
                Flavor::V3 => json!({ "type": "object", "description": description, "x-kubernetes-preserve-unknown-fields": true }),
                Flavor::V2 => json!({ "type": "object", "description": description }),
            };
            let mut s = json!({
                "description": description,
                "type": "object",
                "properties": {
                    "metadata": open("Standard object's metadata."),
                    "spec": open(""),
                    "status": open(""),
                },
                "x-kubernetes-group-version-kind": [gvk(r.group, r.version, r.kind)],
            });
            type_meta_properties(&mut s["properties"]);
            if flavor == Flavor::V3 {
                s["x-kubernetes-preserve-unknown-fields"] = json!(true);
            }
            out.insert(name.clone(), s);
        }
    }
}

/// The list kind of a served kind, and `Scale` if it has the subresource.
fn list_and_scale_definitions(r: &Resource, flavor: Flavor, name: &str, out: &mut Map<String, Value>) {
    let mut list = json!({
        "description": format!("{}List is a list of {}.", r.kind, r.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": { "type": "array", "items": flavor.reference(&name) },
            "metadata": flavor.reference(&format!("{META}.ListMeta")),
        },
        "x-kubernetes-group-version-kind": [gvk(r.group, r.version, &format!("{}List", r.kind))],
    });
    type_meta_properties(&mut list["properties"]);
    out.insert(list_definition(r), list);
    if r.subresources.contains(&"scale") {
        message_definitions("Scale", flavor, out);
        if let Some(s) = out.get_mut("io.k8s.api.autoscaling.v1.Scale") {
            type_meta_properties(&mut s["properties"]);
            s["x-kubernetes-group-version-kind"] = json!([gvk("autoscaling", "v1", "Scale")]);
        }
    }
}

/// `ListMeta`, `Status`, `WatchEvent`, `Patch`, `DeleteOptions` and what they reach: the
/// envelopes of responses and request bodies (meta/v1 messages of the generated table).
fn meta_definitions(flavor: Flavor, out: &mut Map<String, Value>) {
    for m in ["ListMeta", "Status", "WatchEvent", "Patch", "DeleteOptions"] {
        message_definitions(m, flavor, out);
    }
    if let Some(status) = out.get_mut(&format!("{META}.Status")) {
        type_meta_properties(&mut status["properties"]);
        status["x-kubernetes-group-version-kind"] = json!([gvk("", "v1", "Status")]);
    }
}

/// A query parameter: name and JSON type.
type Param = (&'static str, &'static str);

const WRITE_PARAMS: &[Param] = &[("dryRun", "string"), ("fieldManager", "string"), ("fieldValidation", "string")];
const PATCH_PARAMS: &[Param] = &[("dryRun", "string"), ("fieldManager", "string"), ("fieldValidation", "string"), ("force", "boolean")];
const LIST_PARAMS: &[Param] = &[
    ("allowWatchBookmarks", "boolean"),
    ("continue", "string"),
    ("fieldSelector", "string"),
    ("labelSelector", "string"),
    ("limit", "integer"),
    ("resourceVersion", "string"),
    ("resourceVersionMatch", "string"),
    ("timeoutSeconds", "integer"),
    ("watch", "boolean"),
];
const GET_PARAMS: &[Param] = &[("resourceVersion", "string")];
const DELETE_PARAMS: &[Param] = &[("dryRun", "string"), ("gracePeriodSeconds", "integer"), ("propagationPolicy", "string")];
const DELETE_COLLECTION_PARAMS: &[Param] = &[("dryRun", "string"), ("fieldSelector", "string"), ("labelSelector", "string")];

/// One operation of a path, independent of the document's version.
pub(crate) struct Operation {
    /// `get`, `put`, `post`, `patch` or `delete`.
    pub method: &'static str,
    /// `x-kubernetes-action`: `list`, `post`, `get`, `put`, `patch`, `delete`, `deletecollection`.
    pub action: &'static str,
    pub id: String,
    pub params: &'static [Param],
    /// The definition of the request body, if any.
    pub body: Option<String>,
    /// The definition of the 200 response.
    pub response: String,
    pub gvk: Value,
    pub tag: String,
    /// Takes strategic merge patches (built-in kinds; kubectl's client-side apply picks its
    /// patch type by this).
    pub strategic: bool,
}

/// A path and its operations.
pub(crate) struct PathSpec {
    pub path: String,
    /// `namespace`, `name`.
    pub path_params: Vec<&'static str>,
    pub ops: Vec<Operation>,
}

fn camel(group: &str) -> String {
    if group.is_empty() {
        return "core".into();
    }
    let trimmed = group.strip_suffix(".k8s.io").unwrap_or(group);
    let mut out = String::new();
    for (i, part) in trimmed.split('.').enumerate() {
        let mut cs = part.chars();
        if let Some(first) = cs.next() {
            out.push(if i == 0 { first } else { first.to_ascii_uppercase() });
            out.extend(cs);
        }
    }
    out
}

fn upper_first(s: &str) -> String {
    let mut cs = s.chars();
    cs.next().map(|c| c.to_ascii_uppercase().to_string() + cs.as_str()).unwrap_or_default()
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The paths of one served resource (collection, object, `status` and `scale`), with
/// upstream's operation ids (`listAppsV1NamespacedDeployment`, ...).
pub(crate) fn resource_paths(r: &Resource) -> Vec<PathSpec> {
    let base = format!("/{}", gv_path(r.group, r.version));
    let gv = format!("{}{}", upper_first(&camel(r.group)), upper_first(r.version));
    let tag = format!("{}_{}", camel(r.group), r.version);
    let kind_gvk = gvk(r.group, r.version, r.kind);
    let scoped = if r.namespaced { "Namespaced" } else { "" };
    let kind_def = kind_definition(r);
    let op = |method, action, id: String, params, body: Option<String>, response: String, g: &Value| Operation {
        method,
        action,
        id,
        params,
        body,
        response,
        gvk: g.clone(),
        tag: tag.clone(),
        strategic: !r.custom,
    };
    let status = format!("{META}.Status");
    let (collection, mut scope_params) =
        if r.namespaced { (format!("{base}/namespaces/{{namespace}}/{}", r.plural), vec!["namespace"]) } else { (format!("{base}/{}", r.plural), vec![]) };
    let mut out = Vec::new();
    if r.verbs() == ["create"] {
        // A review kind: created (and answered), never stored, so only `post` on the collection.
        let ops = vec![op("post", "post", format!("create{gv}{scoped}{}", r.kind), WRITE_PARAMS, Some(kind_def.clone()), kind_def, &kind_gvk)];
        out.push(PathSpec { path: collection, path_params: scope_params, ops });
        return out;
    }
    if r.verbs() == ["get", "list"] {
        // Computed on each read (ComponentStatus): listed and read, nothing else.
        let list = op("get", "list", format!("list{gv}{scoped}{}", r.kind), LIST_PARAMS, None, list_definition(r), &kind_gvk);
        out.push(PathSpec { path: collection.clone(), path_params: scope_params.clone(), ops: vec![list] });
        scope_params.push("name");
        let read = op("get", "get", format!("read{gv}{scoped}{}", r.kind), GET_PARAMS, None, kind_def, &kind_gvk);
        out.push(PathSpec { path: format!("{collection}/{{name}}"), path_params: scope_params, ops: vec![read] });
        return out;
    }
    let mut ops = vec![
        op("get", "list", format!("list{gv}{scoped}{}", r.kind), LIST_PARAMS, None, list_definition(r), &kind_gvk),
        op("post", "post", format!("create{gv}{scoped}{}", r.kind), WRITE_PARAMS, Some(kind_def.clone()), kind_def.clone(), &kind_gvk),
    ];
    if r.verbs().contains(&"deletecollection") {
        ops.push(op("delete", "deletecollection", format!("delete{gv}Collection{scoped}{}", r.kind), DELETE_COLLECTION_PARAMS, None, status.clone(), &kind_gvk));
    }
    out.push(PathSpec { path: collection.clone(), path_params: scope_params.clone(), ops });
    if r.namespaced {
        out.push(PathSpec {
            path: format!("{base}/{}", r.plural),
            path_params: vec![],
            ops: vec![op("get", "list", format!("list{gv}{}ForAllNamespaces", r.kind), LIST_PARAMS, None, list_definition(r), &kind_gvk)],
        });
    }
    scope_params.push("name");
    let object = format!("{collection}/{{name}}");
    let patch = Some(format!("{META}.Patch"));
    out.push(PathSpec {
        path: object.clone(),
        path_params: scope_params.clone(),
        ops: vec![
            op("get", "get", format!("read{gv}{scoped}{}", r.kind), GET_PARAMS, None, kind_def.clone(), &kind_gvk),
            op("put", "put", format!("replace{gv}{scoped}{}", r.kind), WRITE_PARAMS, Some(kind_def.clone()), kind_def.clone(), &kind_gvk),
            op("patch", "patch", format!("patch{gv}{scoped}{}", r.kind), PATCH_PARAMS, patch.clone(), kind_def.clone(), &kind_gvk),
            op("delete", "delete", format!("delete{gv}{scoped}{}", r.kind), DELETE_PARAMS, Some(format!("{META}.DeleteOptions")), status, &kind_gvk),
        ],
    });
    for sub in r.subresources {
        let (suffix, def, g) = match *sub {
            "status" => ("Status", kind_def.clone(), kind_gvk.clone()),
            "scale" => ("Scale", "io.k8s.api.autoscaling.v1.Scale".to_string(), gvk("autoscaling", "v1", "Scale")),
            _ => continue,
        };
        out.push(PathSpec {
            path: format!("{object}/{sub}"),
            path_params: scope_params.clone(),
            ops: vec![
                op("get", "get", format!("read{gv}{scoped}{}{suffix}", r.kind), &[], None, def.clone(), &g),
                op("put", "put", format!("replace{gv}{scoped}{}{suffix}", r.kind), WRITE_PARAMS, Some(def.clone()), def.clone(), &g),
                op("patch", "patch", format!("patch{gv}{scoped}{}{suffix}", r.kind), PATCH_PARAMS, patch.clone(), def.clone(), &g),
            ],
        });
    }
    out
}

/// Definitions of every served kind, their lists and the API's envelopes.
pub(crate) fn definitions(rs: &[&Resource], flavor: Flavor) -> Map<String, Value> {
    let mut out = Map::new();
    for r in rs {
        kind_definitions(r, flavor, &mut out);
    }
    meta_definitions(flavor, &mut out);
    out
}

/// The kinds the documents describe: every served kind and the review kinds.
pub(crate) fn published() -> Vec<&'static Resource> {
    resources::discoverable().collect()
}

/// `/openapi/v3`: where each group/version's document is.
pub fn index() -> Value {
    let mut paths = Map::new();
    for r in published() {
        let p = gv_path(r.group, r.version);
        paths.entry(p.clone()).or_insert_with(|| json!({ "serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash()) }));
    }
    json!({ "paths": paths })
}

/// A version of the documents: they change with the binary and with the custom kinds served
/// (kubectl caches each document by it).
pub(crate) fn hash() -> String {
    format!("strata-{}-{}", env!("CARGO_PKG_VERSION"), crate::crd::generation())
}

/// The v3 form of one operation.
fn v3_operation(o: &Operation) -> Value {
    let params: Vec<Value> = o.params.iter().map(|(name, ty)| json!({ "name": name, "in": "query", "schema": { "type": ty, "uniqueItems": true } })).collect();
    let content = |def: &str| json!({ "application/json": { "schema": Flavor::V3.reference(def) } });
    let mut v = json!({
        "operationId": o.id,
        "tags": [o.tag],
        "x-kubernetes-action": o.action,
        "x-kubernetes-group-version-kind": o.gvk,
        "parameters": params,
        "responses": { "200": { "description": "OK", "content": content(&o.response) } },
    });
    if let Some(body) = &o.body {
        v["requestBody"] = json!({ "content": content(body) });
    }
    v
}

/// The document for `api/v1`, `apis/apps/v1`, ... (`None` if unknown).
pub fn document(path: &str) -> Option<Value> {
    let path = path.trim_matches('/');
    let rs: Vec<&Resource> = published().into_iter().filter(|r| gv_path(r.group, r.version) == path).collect();
    if rs.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for r in &rs {
        for p in resource_paths(r) {
            let mut item = Map::new();
            for o in &p.ops {
                item.insert(o.method.to_string(), v3_operation(o));
            }
            let params: Vec<Value> = p.path_params.iter().map(|n| json!({ "name": n, "in": "path", "required": true, "schema": { "type": "string", "uniqueItems": true } })).collect();
            if !params.is_empty() {
                item.insert("parameters".into(), json!(params));
            }
            paths.insert(p.path, Value::Object(item));
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": crate::discovery::KUBE_VERSION },
        "paths": paths,
        "components": { "schemas": definitions(&rs, Flavor::V3) },
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every `$ref` in `v` names a definition of `defs`.
    pub(crate) fn refs_resolve(v: &Value, prefix: &str, defs: &Map<String, Value>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    let name = r.strip_prefix(prefix).unwrap_or_else(|| panic!("{r} does not start with {prefix}"));
                    assert!(defs.contains_key(name), "dangling reference {r}");
                }
                m.values().for_each(|x| refs_resolve(x, prefix, defs));
            }
            Value::Array(a) => a.iter().for_each(|x| refs_resolve(x, prefix, defs)),
            _ => {}
        }
    }

    #[test]
    fn definitions_have_upstream_names() {
        assert_eq!(definition_name("ObjectMeta"), Some("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"));
        assert_eq!(definition_name("PodSpec"), Some("io.k8s.api.core.v1.PodSpec"));
        assert_eq!(definition_name("DeploymentSpec"), Some("io.k8s.api.apps.v1.DeploymentSpec"));
        assert_eq!(definition_name("CronJobSpec"), Some("io.k8s.api.batch.v1.CronJobSpec"));
        assert_eq!(definition_name("PolicyRule"), Some("io.k8s.api.rbac.v1.PolicyRule"));
        assert_eq!(definition_name("ScaleSpec"), Some("io.k8s.api.autoscaling.v1.ScaleSpec"));
        assert_eq!(definition_name("SubjectAccessReviewStatus"), Some("io.k8s.api.authorization.v1.SubjectAccessReviewStatus"));
        assert_eq!(definition_name("UserInfo"), Some("io.k8s.api.authentication.v1.UserInfo"));
        assert_eq!(definition_name("Event@events.k8s.io.v1"), Some("io.k8s.api.events.v1.Event"));
        for r in resources::RESOURCES {
            if let Some(n) = crate::protobuf::message_of(r).and_then(definition_name) {
                assert_eq!(n, kind_definition(r), "{} is named two ways", r.kind);
            }
        }
        let vm = resources::RESOURCES.iter().find(|r| r.kind == "VirtualMachine").expect("vm");
        assert_eq!(kind_definition(vm), "dev.strata.v1.VirtualMachine");
        assert_eq!(camel("rbac.authorization.k8s.io"), "rbacAuthorization");
        assert_eq!(camel("strata.dev"), "strataDev");
    }

    /// Every definition published under `io.k8s.` (v2, every v3 document, every message of the
    /// table) whose Go type upstream v1.32 publishes has upstream's name: the package is the Go
    /// package of that type (a type added after v1.32, or of a package v1.32 does not publish,
    /// cannot be checked).
    #[test]
    fn every_published_definition_is_named_as_upstream() {
        let upstream: std::collections::HashSet<&str> = crate::k8s_messages::UPSTREAM_DEFINITIONS.iter().copied().collect();
        let types: std::collections::HashSet<&str> = upstream.iter().filter_map(|d| d.rsplit('.').next()).collect();
        let packages: std::collections::HashSet<&str> = upstream.iter().filter_map(|d| d.rsplit_once('.')).map(|(p, _)| p).collect();
        let mut published = Vec::new();
        for p in index()["paths"].as_object().expect("paths").keys() {
            let doc = document(p).unwrap_or_else(|| panic!("no document for {p}"));
            published.extend(doc["components"]["schemas"].as_object().expect("schemas").keys().cloned());
        }
        published.extend(crate::openapi_v2::document()["definitions"].as_object().expect("definitions").keys().cloned());
        // And every message of the table, as it would be published.
        published.extend(crate::k8s_messages::MESSAGES.iter().filter_map(|(m, _, _)| definition_name(m)).map(String::from));
        assert!(published.iter().any(|d| d == "io.k8s.api.authorization.v1.SubjectAccessReviewStatus"), "the reviews are in the table");
        let mut wrong: Vec<&String> =
            published.iter().filter(|d| d.starts_with("io.k8s.") && d.rsplit_once('.').is_some_and(|(p, t)| types.contains(t) && packages.contains(p)) && !upstream.contains(d.as_str())).collect();
        wrong.sort();
        wrong.dedup();
        assert!(wrong.is_empty(), "definitions named unlike upstream: {wrong:?}");
    }

    #[test]
    fn review_kinds_have_v3_documents() {
        assert!(index()["paths"]["apis/authentication.k8s.io/v1"].is_object(), "{}", index());
        let doc = document("apis/authorization.k8s.io/v1").expect("authorization.k8s.io/v1");
        let post = &doc["paths"]["/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"]["post"];
        assert_eq!(post["operationId"], "createAuthorizationV1SelfSubjectAccessReview");
        assert_eq!(post["requestBody"]["content"]["application/json"]["schema"]["allOf"][0]["$ref"], "#/components/schemas/io.k8s.api.authorization.v1.SelfSubjectAccessReview", "{post}");
        let schemas = &doc["components"]["schemas"];
        assert!(schemas["io.k8s.api.authorization.v1.SelfSubjectAccessReviewSpec"]["properties"]["resourceAttributes"].is_object());
    }

    #[test]
    fn v3_documents_are_closed_and_tagged() {
        for p in index()["paths"].as_object().expect("paths").keys() {
            let doc = document(p).unwrap_or_else(|| panic!("no document for {p}"));
            let defs = doc["components"]["schemas"].as_object().expect("schemas");
            refs_resolve(&doc, "#/components/schemas/", defs);
            for (name, d) in defs {
                for r in d["required"].as_array().into_iter().flatten() {
                    assert!(d["properties"].get(r.as_str().unwrap_or_default()).is_some(), "{name} requires {r}, which it does not have");
                }
            }
        }
        let apps = document("apis/apps/v1").expect("apps");
        let d = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        let patch = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"], json!({"group": "apps", "version": "v1", "kind": "Deployment"}));
        assert!(patch["parameters"].as_array().expect("params").iter().any(|p| p["name"] == "fieldValidation"));
        assert_eq!(apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["get"]["x-kubernetes-group-version-kind"]["kind"], "Scale");
        assert!(document("apis/apps/v9").is_none());
    }

    #[test]
    fn definitions_carry_upstreams_required_fields() {
        let apps = document("apis/apps/v1").expect("apps");
        let defs = &apps["components"]["schemas"];
        assert_eq!(defs["io.k8s.api.apps.v1.DeploymentSpec"]["required"], json!(["selector", "template"]));
        assert_eq!(defs["io.k8s.api.core.v1.Container"]["required"], json!(["name"]));
        assert_eq!(defs[format!("{META}.OwnerReference")]["required"], json!(["apiVersion", "kind", "name", "uid"]));
        assert!(defs["io.k8s.api.apps.v1.Deployment"].get("required").is_none(), "upstream requires nothing of a Deployment itself");
        let v2 = crate::openapi_v2::document();
        assert_eq!(v2["definitions"]["io.k8s.api.rbac.v1.RoleBinding"]["required"], json!(["roleRef"]));
    }

    #[test]
    fn fields_carry_upstreams_patch_and_list_metadata() {
        // Every field the generated metadata names exists in the message table, so none of it
        // is silently left out of the schemas (fields of kinds strata does not serve aside).
        let missing: Vec<String> = crate::k8s_meta::FIELDS
            .iter()
            .filter(|(m, _, _)| schema_of(m).is_some())
            .filter(|(m, f, _)| crate::protobuf::declared(m, f).is_none())
            .map(|(m, f, _)| format!("{m}.{f}"))
            .collect();
        assert!(missing.len() < 20, "fields with patch metadata missing from the message table: {missing:?}");
        let core = document("api/v1").expect("core");
        let container = &core["components"]["schemas"]["io.k8s.api.core.v1.Container"]["properties"];
        assert_eq!(container["env"]["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(container["env"]["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(container["ports"]["x-kubernetes-list-map-keys"], json!(["containerPort", "protocol"]));
        assert_eq!(container["ports"]["x-kubernetes-patch-merge-key"], "containerPort");
        assert_eq!(container["args"]["x-kubernetes-list-type"], "atomic");
        let apps = document("apis/apps/v1").expect("apps");
        let spec = &apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"];
        assert_eq!(spec["strategy"]["x-kubernetes-patch-strategy"], "retainKeys");
        let selector = &apps["components"]["schemas"][format!("{META}.LabelSelector")];
        assert_eq!(selector["x-kubernetes-map-type"], "atomic");
        let core = document("api/v1").expect("core");
        let defs = &core["components"]["schemas"];
        for (def, field) in [(format!("{META}.ObjectMeta"), "finalizers"), ("io.k8s.api.core.v1.NodeSpec".to_string(), "podCIDRs")] {
            let f = &defs[&def]["properties"][field];
            assert_eq!((f["x-kubernetes-patch-strategy"].as_str(), f["x-kubernetes-list-type"].as_str()), (Some("merge"), Some("set")), "{def}.{field}: {f}");
            assert_eq!(f["items"]["type"], "string");
        }
        let ns = &defs["io.k8s.api.core.v1.NamespaceSpec"]["properties"]["finalizers"];
        assert!(ns.is_object() && ns.get("x-kubernetes-patch-strategy").is_none(), "a namespace's spec.finalizers is atomic: {ns}");
    }
}
