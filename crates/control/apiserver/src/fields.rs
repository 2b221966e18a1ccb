//! `fieldValidation` (Strict, Warn, Ignore) for fields a kind does not have.
//!
//! Built-in kinds are checked at every depth (`spec.template.spec.containers[0].imagee`) by their
//! messages in the generated table ([`crate::k8s_messages`], from upstream's definitions);
//! strata's own kinds by their schemas. As in Kubernetes, unknown fields are dropped unless the request
//! asked for `Strict`, which refuses it (400), and `Warn` returns a `Warning` header for each.

use serde_json::Value;

use crate::protobuf::{schema_of, C, F, K};
use crate::resources::Resource;
use crate::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!("fieldValidation must be one of Ignore, Warn or Strict, got {other:?}"))),
        }
    }
}

/// The JSON field `name` of message `msg`, looking through fields Go embeds (inlined).
fn field_of(msg: &str, name: &str) -> Option<F> {
    for f in schema_of(msg)? {
        match f.2 {
            K::Inline(inner) => {
                if let Some(found) = field_of(inner, name) {
                    return Some(found);
                }
            }
            _ if f.1 == name => return Some(*f),
            _ => {}
        }
    }
    None
}

/// Remove unknown fields of `v` (an instance of message `msg`, at `at`) at every depth; a
/// removed field's path is spelled out, no other. A value of a JSON type its field's Go type
/// cannot take is reported in `mistyped` (the first one the walk meets, as Go's decoder keeps
/// its first).
fn walk(msg: &str, v: &mut Value, at: Option<&At<'_>>, unknown: &mut Vec<String>, mistyped: &mut Option<String>) {
    let Some(map) = v.as_object_mut() else { return };
    let mut removed: Vec<String> = Vec::new();
    for (key, child) in map.iter_mut() {
        if at.is_none() && (key == "apiVersion" || key == "kind") {
            continue;
        }
        let Some(f) = field_of(msg, key) else {
            unknown.push(path_of(at, key));
            removed.push(key.clone());
            continue;
        };
        if mistyped.is_none() {
            *mistyped = mismatch(msg, &f, at, key, child);
        }
        let K::Msg(inner) = f.2 else { continue };
        let here = At { parent: at, step: Step::Key(key) };
        match (f.3, child) {
            (C::Rep, Value::Array(items)) => {
                for (i, item) in items.iter_mut().enumerate() {
                    walk(inner, item, Some(&At { parent: Some(&here), step: Step::Index(i) }), unknown, mistyped);
                }
            }
            (C::Map, Value::Object(entries)) => {
                for (k, item) in entries.iter_mut() {
                    walk(inner, item, Some(&At { parent: Some(&here), step: Step::Entry(k) }), unknown, mistyped);
                }
            }
            (C::Keep | C::Omit, child) => walk(inner, child, Some(&here), unknown, mistyped),
            _ => {}
        }
    }
    for key in removed {
        map.remove(&key);
    }
}

/// Remove (or, with Strict, refuse) fields `r`'s kind does not have; `duplicates` are the
/// paths of fields the request body had more than once ([`duplicate_fields`]), refused or
/// warned about with them as upstream's strict decoder does. Returns warnings.
pub fn check(r: &Resource, obj: &mut Value, mode: FieldValidation, duplicates: &[String]) -> Result<Vec<String>, ApiError> {
    let (unknown, mistyped) = strip_unknown_checked(r, obj);
    if let Some(e) = mistyped {
        // Upstream's decoder fails before any field validation (`transformDecodeError`).
        return Err(ApiError::bad_request(format!("{} in version {:?} cannot be handled as a {}: {e}", r.kind, r.version, r.kind)));
    }
    if unknown.is_empty() && duplicates.is_empty() {
        return Ok(vec![]);
    }
    let msgs: Vec<String> =
        unknown.iter().map(|f| format!("unknown field \"{f}\"")).chain(duplicates.iter().map(|f| format!("duplicate field \"{f}\""))).collect();
    match mode {
        FieldValidation::Strict => Err(ApiError::bad_request(format!("strict decoding error: {}", msgs.join(", ")))),
        FieldValidation::Warn => Ok(msgs),
        FieldValidation::Ignore => Ok(vec![]),
    }
}

/// The paths of the object keys a JSON document has more than once (`spec.replicas`,
/// `spec.template.spec.containers[0].image`), in the order their repeats appear; none when it is
/// not JSON. serde_json keeps the last value of a repeated key, as Go's decoder does.
pub fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    if serde::de::DeserializeSeed::deserialize(Walk { at: None, out: &mut out }, &mut de).is_err() {
        return Vec::new();
    }
    out
}

/// Where a walked value is: a step below its parent's place (None: the document). The path
/// is spelled out only for a repeated key; every request body is walked.
struct At<'p> {
    parent: Option<&'p At<'p>>,
    step: Step<'p>,
}

enum Step<'p> {
    /// A member of an object (`.key`).
    Key(&'p str),
    /// An item of a list (`[0]`).
    Index(usize),
    /// An entry of a map (`[key]`).
    Entry(&'p str),
}

fn path_of(at: Option<&At<'_>>, key: &str) -> String {
    let mut steps = Vec::new();
    let mut cur = at;
    while let Some(a) = cur {
        steps.push(&a.step);
        cur = a.parent;
    }
    let mut path = String::new();
    for step in steps.into_iter().rev() {
        match step {
            Step::Key(k) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Step::Index(i) => path.push_str(&format!("[{i}]")),
            Step::Entry(k) => {
                path.push('[');
                path.push_str(k);
                path.push(']');
            }
        }
    }
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
    path
}

/// A visitor that reads a JSON value only to note repeated keys below `at`.
struct Walk<'p, 'o> {
    at: Option<&'p At<'p>>,
    out: &'o mut Vec<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for Walk<'_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Walk<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Walk { at, out } = self;
        let mut i = 0;
        loop {
            let here = At { parent: at, step: Step::Index(i) };
            if seq.next_element_seed(Walk { at: Some(&here), out: &mut *out })?.is_none() {
                return Ok(());
            }
            i += 1;
        }
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Walk { at, out } = self;
        // Most objects have a few keys: a list is searched until it grows long.
        let mut seen: Vec<std::borrow::Cow<'de, str>> = Vec::new();
        let mut many: std::collections::HashSet<std::borrow::Cow<'de, str>> = std::collections::HashSet::new();
        while let Some(crate::rawjson::Key(key)) = map.next_key::<crate::rawjson::Key<'de>>()? {
            {
                let here = At { parent: at, step: Step::Key(&key) };
                map.next_value_seed(Walk { at: Some(&here), out: &mut *out })?;
            }
            let repeated = if many.is_empty() && seen.len() < 32 {
                seen.contains(&key)
            } else {
                many.extend(seen.drain(..));
                many.contains(&key)
            };
            if repeated {
                out.push(path_of(at, &key));
            } else if many.is_empty() {
                seen.push(key);
            } else {
                many.insert(key);
            }
        }
        Ok(())
    }
}

/// Remove the fields `r`'s kind does not have; returns their paths
/// (`spec.template.spec.containers[0].imagee`).
pub fn strip_unknown(r: &Resource, obj: &mut Value) -> Vec<String> {
    strip_unknown_checked(r, obj).0
}

/// [`strip_unknown`], and the first value of a JSON type its field cannot take, as Go's
/// `encoding/json` words it (`json: cannot unmarshal string into Go struct field
/// DeploymentSpec.spec.replicas of type int32`).
pub fn strip_unknown_checked(r: &Resource, obj: &mut Value) -> (Vec<String>, Option<String>) {
    let mut unknown = Vec::new();
    let mut mistyped = None;
    if r.custom {
        // Custom kinds are pruned by their definitions' structural schemas.
        return (crate::crd::prune(r, obj), None);
    }
    if let Some(msg) = crate::protobuf::message_of(r) {
        walk(msg, obj, None, &mut unknown, &mut mistyped);
    } else if let Some(map) = obj.as_object_mut() {
        // A kind outside the message table (strata's own): `spec` and `status` at the top, its
        // metadata an ObjectMeta.
        let extra: Vec<String> = map.keys().filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "spec" | "status")).cloned().collect();
        for k in extra {
            map.remove(&k);
            unknown.push(k);
        }
        if let Some(meta) = map.get_mut("metadata") {
            walk("ObjectMeta", meta, Some(&At { parent: None, step: Step::Key("metadata") }), &mut unknown, &mut mistyped);
        }
        if r.group == "strata.dev" && r.kind == "VirtualMachine" {
            crate::vm::strip_unknown(obj, &mut unknown);
        }
    }
    (unknown, mistyped)
}

/// Whether `child`, the value of field `f` of message `msg` (at `at`, named `key`), has a JSON
/// type the field's Go type cannot take; if so, Go's `UnmarshalTypeError` for it. `null` is
/// always taken (the zero value). A list's or map's first wrong element is reported with the
/// element's type, as Go reports it.
fn mismatch(msg: &str, f: &F, at: Option<&At<'_>>, key: &str, child: &Value) -> Option<String> {
    let found = match (f.3, child) {
        (_, Value::Null) => return None,
        (C::Rep, Value::Array(items)) => items.iter().find_map(|v| wrong(f.2, v)).map(|found| (found, go_type(f.2))),
        (C::Map, Value::Object(entries)) => entries.values().find_map(|v| wrong(f.2, v)).map(|found| (found, go_type(f.2))),
        (C::Rep, other) => Some((described(other).to_string(), format!("[]{}", go_type(f.2)))),
        (C::Map, other) => Some((described(other).to_string(), format!("map[string]{}", go_type(f.2)))),
        (C::Keep | C::Omit, v) => wrong(f.2, v).map(|found| (found, go_type(f.2))),
    };
    let (found, ty) = found?;
    // Go names the innermost struct and the JSON field path from the top, without indices or
    // map keys.
    let mut path = Vec::new();
    let mut cur = at;
    while let Some(a) = cur {
        if let Step::Key(k) = a.step {
            path.push(k);
        }
        cur = a.parent;
    }
    path.reverse();
    path.push(key);
    Some(format!("json: cannot unmarshal {found} into Go struct field {msg}.{} of type {ty}", path.join(".")))
}

/// How Go's decoder describes a JSON value it cannot store (`string`, `number 1.5`, ...), or
/// `None` when a value of kind `k` takes it.
fn wrong(k: K, v: &Value) -> Option<String> {
    let fits = match k {
        K::Str | K::Bytes | K::Time | K::MicroTime => v.is_string(),
        K::Bool => v.is_boolean(),
        K::I32 => v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        K::I64 => v.is_i64(),
        K::F64 => v.is_number(),
        K::Msg(_) | K::Inline(_) => v.is_object(),
        K::Union(_) => v.is_object() || v.is_boolean() || v.is_array(),
        K::IntOrStr => v.is_string() || v.as_i64().is_some_and(|n| i32::try_from(n).is_ok()),
        K::Quantity => v.is_string() || v.is_number(),
        K::Raw => true,
    };
    if fits || v.is_null() {
        return None;
    }
    Some(match v {
        // An integer field given a fraction or an out-of-range number: Go quotes the number.
        Value::Number(n) if matches!(k, K::I32 | K::I64 | K::IntOrStr) => format!("number {n}"),
        other => described(other).to_string(),
    })
}

fn described(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The Go type of a field's element, as `reflect.Type.String()` prints it.
fn go_type(k: K) -> String {
    match k {
        K::Str => "string".into(),
        K::Bool => "bool".into(),
        K::I32 => "int32".into(),
        K::I64 => "int64".into(),
        K::F64 => "float64".into(),
        K::Bytes => "[]uint8".into(),
        K::Msg(m) | K::Union(m) | K::Inline(m) => format!("{}.{m}", crate::protobuf::package_of(m).rsplit('.').next().unwrap_or("v1")),
        K::Time => "v1.Time".into(),
        K::MicroTime => "v1.MicroTime".into(),
        K::IntOrStr => "intstr.IntOrString".into(),
        K::Quantity => "resource.Quantity".into(),
        K::Raw => "runtime.RawExtension".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    /// A value of a JSON type its field cannot take is refused as Go's decoder refuses it (400
    /// before any validation), at any depth, in lists and maps too; `null` and the types a
    /// field's Go type takes (IntOrString, Quantity as number or string) pass.
    #[test]
    fn values_of_the_wrong_json_type_are_refused_as_go_decodes_them() {
        let d = find("apps", "v1", "deployments").expect("deployments");
        let deploy = |spec: serde_json::Value| json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": {"a": "b"}}, "spec": spec});
        let refused = |spec: serde_json::Value| check(d, &mut deploy(spec), FieldValidation::Ignore, &[]).expect_err("mistyped").message;
        let prefix = "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal";
        assert_eq!(refused(json!({"replicas": "3"})), format!("{prefix} string into Go struct field DeploymentSpec.spec.replicas of type int32"));
        assert_eq!(refused(json!({"replicas": 1.5})), format!("{prefix} number 1.5 into Go struct field DeploymentSpec.spec.replicas of type int32"));
        assert_eq!(refused(json!({"replicas": 4294967296u64})), format!("{prefix} number 4294967296 into Go struct field DeploymentSpec.spec.replicas of type int32"));
        assert_eq!(refused(json!({"paused": "yes"})), format!("{prefix} string into Go struct field DeploymentSpec.spec.paused of type bool"));
        let containers = |c: serde_json::Value| json!({"template": {"spec": {"containers": [c]}}});
        assert_eq!(
            refused(containers(json!({"name": "c", "image": "x", "ports": [{"containerPort": "80"}]}))),
            format!("{prefix} string into Go struct field ContainerPort.spec.template.spec.containers.ports.containerPort of type int32")
        );
        assert_eq!(refused(containers(json!({"name": "c", "args": ["a", 1]}))), format!("{prefix} number into Go struct field Container.spec.template.spec.containers.args of type string"));
        assert_eq!(refused(json!({"template": {"spec": {"containers": {"name": "c"}}}})), format!("{prefix} object into Go struct field PodSpec.spec.template.spec.containers of type []v1.Container"));
        assert_eq!(refused(json!({"selector": "app=web"})), format!("{prefix} string into Go struct field DeploymentSpec.spec.selector of type v1.LabelSelector"));
        let mut labels = deploy(json!({}));
        labels["metadata"]["labels"]["n"] = json!(1);
        assert_eq!(check(d, &mut labels, FieldValidation::Ignore, &[]).expect_err("label").message, format!("{prefix} number into Go struct field ObjectMeta.metadata.labels of type string"));
        // What Go takes.
        let mut ok = deploy(json!({"replicas": null, "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
            "template": {"spec": {"containers": [{"name": "c", "image": "x", "resources": {"limits": {"cpu": 1, "memory": "1Gi"}}}]}}}));
        check(d, &mut ok, FieldValidation::Strict, &[]).expect("well typed");
    }

    #[test]
    fn duplicate_fields_are_found_with_their_paths() {
        let body = br#"{"a": 1, "b": {"c": [{"d": 1, "d": 2}, {"e": {"f": 1, "f": 1}}], "c": 0}, "a": 2, "s": "x\"y", "g": {"h": 1}}"#;
        assert_eq!(duplicate_fields(body), ["b.c[0].d", "b.c[1].e.f", "b.c", "a"]);
        assert!(duplicate_fields(br#"{"a": {"a": 1}, "b": [{"a": 1}, {"a": 2}]}"#).is_empty());
        assert!(duplicate_fields(b"not json").is_empty());
        // A long map (its keys looked up in a hash set), a key repeated before and after the
        // switch, and an escaped key.
        let mut long: Vec<String> = (0..40).map(|i| format!("\"k{i}\": {i}")).collect();
        long.push("\"k3\": 0".into());
        long.insert(5, "\"k1\": 0".into());
        long.push("\"\\u006b0\": 0".into());
        let body = format!("{{\"data\": {{{}}}}}", long.join(", "));
        assert_eq!(duplicate_fields(body.as_bytes()), ["data.k1", "data.k3", "data.k0"]);
    }

    #[test]
    fn leases_and_endpoint_slices_are_checked_at_every_depth() {
        let lease = find("coordination.k8s.io", "v1", "leases").expect("leases");
        let good = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 40, "renewTime": "2026-11-30T10:00:00.000000Z"}});
        assert!(check(lease, &mut good.clone(), FieldValidation::Strict, &[]).is_ok());
        let mut bad = good;
        bad["spec"]["holderIdentityy"] = json!("x");
        bad["status"] = json!({});
        let e = check(lease, &mut bad, FieldValidation::Strict, &[]).expect_err("unknown lease fields");
        assert_eq!(e.message, "strict decoding error: unknown field \"spec.holderIdentityy\", unknown field \"status\"");
        let slices = find("discovery.k8s.io", "v1", "endpointslices").expect("endpointslices");
        let mut bad = json!({"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true, "readyy": true}}], "ports": [{"port": 80, "portt": 1}]});
        let e = check(slices, &mut bad, FieldValidation::Strict, &[]).expect_err("unknown slice fields");
        assert_eq!(e.message, "strict decoding error: unknown field \"endpoints[0].conditions.readyy\", unknown field \"ports[0].portt\"");
        // A map of messages: its entries are spelled `[key]`.
        let crds = find("apiextensions.k8s.io", "v1", "customresourcedefinitions").expect("crds");
        let mut bad = json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {"type": "object", "properties": {"size": {"type": "integer", "typo": 1}}}}}]}});
        let e = check(crds, &mut bad, FieldValidation::Strict, &[]).expect_err("unknown schema field");
        assert_eq!(e.message, "strict decoding error: unknown field \"spec.versions[0].schema.openAPIV3Schema.properties[size].typo\"");
    }

    #[test]
    fn strict_warn_ignore() {
        let cm = find("", "v1", "configmaps").expect("cm");
        let o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "nmae": "y"}, "data": {}, "dtaa": {}});
        let e = check(cm, &mut o.clone(), FieldValidation::Strict, &[]).expect_err("strict");
        assert_eq!(e.code, 400);
        assert_eq!(e.message, "strict decoding error: unknown field \"dtaa\", unknown field \"metadata.nmae\"");
        let mut w = o.clone();
        assert_eq!(check(cm, &mut w, FieldValidation::Warn, &[]).expect("warn").len(), 2);
        assert!(w.get("dtaa").is_none() && w["metadata"].get("nmae").is_none(), "unknown fields are dropped");
        let mut i = o;
        assert!(check(cm, &mut i, FieldValidation::Ignore, &[]).expect("ignore").is_empty());
        let d = find("apps", "v1", "deployments").expect("d");
        assert!(check(d, &mut json!({"metadata": {}, "spec": {}, "status": {}}), FieldValidation::Strict, &[]).is_ok());
        // Nested fields, through lists, maps and inlined messages.
        let good = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "w", "labels": {"a": "b"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i", "livenessProbe": {"httpGet": {"path": "/", "port": 80}},
            "resources": {"limits": {"cpu": "1"}}}], "volumes": [{"name": "v", "emptyDir": {}}]}}}});
        assert!(check(d, &mut good.clone(), FieldValidation::Strict, &[]).is_ok());
        let mut bad = good.clone();
        bad["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("x");
        bad["spec"]["template"]["spec"]["volumes"][0]["emptyDirr"] = json!({});
        let e = check(d, &mut bad, FieldValidation::Strict, &[]).expect_err("nested");
        assert_eq!(e.message, "strict decoding error: unknown field \"spec.template.spec.containers[0].imagee\", unknown field \"spec.template.spec.volumes[0].emptyDirr\"");
    }
}
