//! What a response is turned into before it is written: the `as=` transforms of the Accept
//! header, negotiated as kube-apiserver's `negotiation.NegotiateOutputMediaType` does.
//!
//! `kubectl get` asks for a `Table` (`as=Table;g=meta.k8s.io;v=v1`); client-go's metadata client
//! and metadata informers — kube-controller-manager's garbage collector and quota controller —
//! ask for `PartialObjectMetadata` of one object (a get, a watch's events, a patch's answer) and
//! `PartialObjectMetadataList` of a list, with JSON as the fallback. The clauses are tried in
//! the order of their `q` (wildcards after explicit types, as goautoneg sorts them); the first
//! one this server can answer wins. A transform asked of the wrong shape (a list as one
//! object's metadata) is 406 NotAcceptable, with upstream's message, as is a header none of
//! whose clauses can be answered.
//!
//! Responses are always JSON: a protobuf clause is answered in JSON (clients decode by the
//! response's Content-Type), so it is acceptable wherever JSON is.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::status::ApiError;

/// The media types responses are serialized to, as upstream's negotiation lists them.
pub const SERIALIZED: [&str; 3] = ["application/json", "application/yaml", crate::protobuf::CONTENT_TYPE];

/// The `meta.k8s.io` version a transform is asked in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaVersion {
    V1,
    V1beta1,
}

impl MetaVersion {
    pub fn api_version(self) -> &'static str {
        match self {
            MetaVersion::V1 => "meta.k8s.io/v1",
            MetaVersion::V1beta1 => "meta.k8s.io/v1beta1",
        }
    }
}

/// What the response is to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// The object or list as it is.
    None,
    Table(MetaVersion),
    /// One object's metadata (`PartialObjectMetadata`).
    Partial(MetaVersion),
    /// A list's items' metadata (`PartialObjectMetadataList`).
    PartialList(MetaVersion),
}

/// The transform an Accept header asks for, or 406 when none of its clauses can be answered.
/// An empty header takes the object as it is.
pub fn negotiate(accept: &str) -> Result<Transform, ApiError> {
    negotiate_among(accept, |_| true)
}

/// Negotiation for an endpoint that serves its objects only as they are (a review has no
/// metadata and no Table form): clauses asking for a transform are passed over.
pub fn negotiate_untransformed(accept: &str) -> Result<(), ApiError> {
    negotiate_among(accept, |t| t == Transform::None).map(drop)
}

fn negotiate_among(accept: &str, served: impl Fn(Transform) -> bool) -> Result<Transform, ApiError> {
    if accept.trim().is_empty() {
        return Ok(Transform::None);
    }
    let mut clauses: Vec<Clause> = accept.split(',').filter_map(Clause::parse).collect();
    // goautoneg's order: an insertion sort (stable for equal clauses) by q, then explicit types
    // before wildcards.
    for i in 1..clauses.len() {
        let mut j = i;
        while j > 0 && clauses[j].before(&clauses[j - 1]) {
            clauses.swap(j, j - 1);
            j -= 1;
        }
    }
    clauses.iter().filter(|c| c.q > 0.0).filter_map(Clause::transform).find(|t| served(*t)).ok_or_else(not_acceptable)
}

/// 406 for a header none of whose clauses can be answered.
fn not_acceptable() -> ApiError {
    ApiError::new(406, "NotAcceptable", format!("only the following media types are accepted: {}", SERIALIZED.join(", ")))
}

/// One clause of an Accept header: `type/subtype;param=value;...`.
struct Clause<'a> {
    ty: &'a str,
    subtype: &'a str,
    q: f32,
    params: Vec<(&'a str, &'a str)>,
}

impl<'a> Clause<'a> {
    fn parse(part: &'a str) -> Option<Self> {
        let mut pieces = part.split(';').map(str::trim);
        let (ty, subtype) = pieces.next()?.split_once('/')?;
        let mut clause = Clause { ty: ty.trim(), subtype: subtype.trim(), q: 1.0, params: Vec::new() };
        for p in pieces {
            let Some((k, v)) = p.split_once('=') else { continue };
            let (k, v) = (k.trim(), v.trim().trim_matches('"'));
            if k == "q" {
                clause.q = v.parse().unwrap_or(0.0);
            } else {
                clause.params.push((k, v));
            }
        }
        Some(clause)
    }

    /// goautoneg's `accept_slice.Less`.
    fn before(&self, other: &Clause) -> bool {
        self.q > other.q || (self.ty != "*" && other.ty == "*") || (self.subtype != "*" && other.subtype == "*")
    }

    fn param(&self, name: &str) -> Option<&'a str> {
        self.params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// What this clause asks for, if this server can answer it.
    fn transform(&self) -> Option<Transform> {
        // The serializer the clause picks (a wildcard picks JSON, the first one).
        let (ty, subtype) = match (self.ty, self.subtype) {
            ("*", "*") | ("application", "*") => ("application", "json"),
            ("application", s @ ("json" | "yaml" | "vnd.kubernetes.protobuf")) => ("application", s),
            _ => return None,
        };
        let Some(kind) = self.param("as") else {
            return Some(Transform::None);
        };
        let version = match (self.param("g"), self.param("v")) {
            (Some("meta.k8s.io"), Some("v1")) => MetaVersion::V1,
            (Some("meta.k8s.io"), Some("v1beta1")) => MetaVersion::V1beta1,
            _ => return None,
        };
        match kind {
            // Upstream prints Tables in JSON and YAML only.
            "Table" if ty == "application" && matches!(subtype, "json" | "yaml") => Some(Transform::Table(version)),
            "PartialObjectMetadata" => Some(Transform::Partial(version)),
            "PartialObjectMetadataList" => Some(Transform::PartialList(version)),
            _ => None,
        }
    }
}

/// The Go type upstream's message names for an object (or list) of `r`, as `%T` prints the
/// internal type its REST storage returns (`*core.ConfigMap`, `*apps.DeploymentList`,
/// `*unstructured.Unstructured` for a custom resource).
fn go_type(r: &Resource, list: bool) -> String {
    let suffix = if list { "List" } else { "" };
    if r.custom {
        return format!("*unstructured.Unstructured{suffix}");
    }
    let package = match r.group {
        // events.k8s.io Events are stored as the core group's.
        "" | "events.k8s.io" => "core",
        "internal.apiserver.k8s.io" => "apiserverinternal",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("*{package}.{}{suffix}", r.kind)
}

/// 406 for `PartialObjectMetadata` asked of a list.
pub fn list_as_object(r: &Resource) -> ApiError {
    ApiError::new(406, "NotAcceptable", format!("you requested PartialObjectMetadata, but the requested object is a list ({})", go_type(r, true)))
}

/// 406 for `PartialObjectMetadataList` asked of one object.
pub fn object_as_list(r: &Resource) -> ApiError {
    ApiError::new(406, "NotAcceptable", format!("you requested PartialObjectMetadataList, but the requested object is not a list ({})", go_type(r, false)))
}

/// An object's metadata as a `PartialObjectMetadata`.
pub fn partial(metadata: Value, v: MetaVersion) -> Value {
    json!({ "apiVersion": v.api_version(), "kind": "PartialObjectMetadata", "metadata": metadata })
}

/// [`partial`] of an object's JSON, the metadata copied as it is written (a watch's events and
/// the watch cache's lists are transformed without decoding whole objects). `None` if the bytes
/// are not a JSON object.
pub fn partial_json(object: &[u8], v: MetaVersion) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        metadata: Option<&'a RawValue>,
    }
    // (A derived struct would take an array's first element as `metadata`.)
    if object.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let head: Head = serde_json::from_slice(object).ok()?;
    let metadata = head.metadata.map_or("{}", RawValue::get);
    let mut out = Vec::with_capacity(metadata.len() + 64);
    out.extend_from_slice(b"{\"apiVersion\":\"");
    out.extend_from_slice(v.api_version().as_bytes());
    out.extend_from_slice(b"\",\"kind\":\"PartialObjectMetadata\",\"metadata\":");
    out.extend_from_slice(metadata.as_bytes());
    out.push(b'}');
    Some(out)
}

/// A list's items as a `PartialObjectMetadataList` (the list's metadata kept: resourceVersion,
/// continue, remainingItemCount).
pub fn partial_list(items: Vec<Value>, list_meta: Value, v: MetaVersion) -> Value {
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            let m = o.get_mut("metadata").map(Value::take).unwrap_or_else(|| json!({}));
            partial(m, v)
        })
        .collect();
    json!({ "apiVersion": v.api_version(), "kind": "PartialObjectMetadataList", "metadata": list_meta, "items": items })
}

/// A Table built for `meta.k8s.io/v1` in the version asked (its rows' objects too).
pub fn table_in(mut table: Value, v: MetaVersion) -> Value {
    if v != MetaVersion::V1 {
        table["apiVersion"] = json!(v.api_version());
        for row in table["rows"].as_array_mut().into_iter().flatten() {
            if let Some(o) = row.get_mut("object").filter(|o| o["kind"] == "PartialObjectMetadata") {
                o["apiVersion"] = json!(v.api_version());
            }
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA_CLIENT: &str = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

    #[test]
    fn clients_headers_negotiate_as_upstream() {
        assert_eq!(negotiate(METADATA_CLIENT).ok(), Some(Transform::Partial(MetaVersion::V1)));
        assert_eq!(negotiate("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1beta1").ok(), Some(Transform::PartialList(MetaVersion::V1beta1)));
        // kubectl get.
        assert_eq!(negotiate("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json").ok(), Some(Transform::Table(MetaVersion::V1)));
        assert_eq!(negotiate("application/json").ok(), Some(Transform::None));
        assert_eq!(negotiate("").ok(), Some(Transform::None));
        assert_eq!(negotiate("application/json, */*").ok(), Some(Transform::None));
        // A Table is never protobuf; the JSON clause after it answers.
        assert_eq!(negotiate("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json").ok(), Some(Transform::None));
        // A transform without its group and version is not one this server makes.
        assert_eq!(negotiate("application/json;as=Table, application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1").ok(), Some(Transform::Partial(MetaVersion::V1)));
        // q orders the clauses; q=0 refuses one; wildcards come after explicit types.
        assert_eq!(negotiate("application/json;q=0.5, application/json;as=Table;v=v1;g=meta.k8s.io").ok(), Some(Transform::Table(MetaVersion::V1)));
        assert_eq!(negotiate("*/*;as=Table;g=meta.k8s.io;v=v1, application/json").ok(), Some(Transform::None));
        assert!(negotiate_untransformed("application/json;as=Table;v=v1;g=meta.k8s.io, application/json").is_ok());
        assert_eq!(negotiate_untransformed("application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io").map_err(|e| e.code), Err(406));
        for refused in ["text/html", "application/json;as=Pod;g=;v=v1", "application/json;as=Table;g=meta.k8s.io;v=v2", "application/json;q=0", "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1alpha1"] {
            let e = negotiate(refused).expect_err(refused);
            assert_eq!((e.code, e.message.as_str()), (406, "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"), "{refused}");
        }
    }

    #[test]
    fn partial_forms_keep_metadata_and_nothing_else() {
        let obj = br#"{"apiVersion":"v1","data":{"k":"v"},"kind":"ConfigMap","metadata":{"labels":{"a":"b"},"name":"c","resourceVersion":"7"}}"#;
        let p: Value = serde_json::from_slice(&partial_json(obj, MetaVersion::V1beta1).expect("object")).expect("json");
        assert_eq!(p, json!({ "apiVersion": "meta.k8s.io/v1beta1", "kind": "PartialObjectMetadata", "metadata": { "labels": { "a": "b" }, "name": "c", "resourceVersion": "7" } }));
        let v: Value = serde_json::from_slice(obj).expect("json");
        assert_eq!(partial(v["metadata"].clone(), MetaVersion::V1beta1), p);
        assert!(partial_json(b"[1]", MetaVersion::V1).is_none());
        let list = partial_list(vec![v], json!({ "resourceVersion": "9", "continue": "x", "remainingItemCount": 2 }), MetaVersion::V1);
        assert_eq!(list["kind"], "PartialObjectMetadataList");
        assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(list["metadata"], json!({ "resourceVersion": "9", "continue": "x", "remainingItemCount": 2 }));
        assert_eq!(list["items"][0], partial(json!({ "labels": { "a": "b" }, "name": "c", "resourceVersion": "7" }), MetaVersion::V1));
    }

    #[test]
    fn upstream_names_the_internal_go_type() {
        let find = |g, v, p| crate::resources::find(g, v, p).expect("registered");
        assert_eq!(list_as_object(find("", "v1", "configmaps")).message, "you requested PartialObjectMetadata, but the requested object is a list (*core.ConfigMapList)");
        assert_eq!(object_as_list(find("apps", "v1", "deployments")).message, "you requested PartialObjectMetadataList, but the requested object is not a list (*apps.Deployment)");
        assert_eq!(go_type(find("rbac.authorization.k8s.io", "v1", "roles"), false), "*rbac.Role");
        assert_eq!(go_type(find("events.k8s.io", "v1", "events"), true), "*core.EventList");
    }
}
