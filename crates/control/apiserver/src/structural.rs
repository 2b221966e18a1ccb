//! Custom objects against their definition's structural schema (`openAPIV3Schema`), as
//! apiextensions-apiserver treats them: pruning of fields the schema does not declare (unless
//! `x-kubernetes-preserve-unknown-fields`), defaulting (`default`), and validation with
//! kube-openapi's checks and messages, every failing field reported (`spec.replicas: Invalid
//! value: "string": spec.replicas in body must be of type integer: "string"`).
//!
//! The root's `apiVersion`, `kind` and `metadata` are the API server's (metadata is pruned to
//! ObjectMeta's fields); an `x-kubernetes-embedded-resource` object keeps its own `apiVersion`,
//! `kind` and `metadata` the same way.

use serde_json::{Map, Value};

use crate::status::Cause;

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn preserves(s: &Value) -> bool {
    s["x-kubernetes-preserve-unknown-fields"] == true
}

/// Remove what `schema` does not declare from `v` (at `path`), recording the removed paths.
pub fn prune(schema: &Value, v: &mut Value, root: bool, path: &str, removed: &mut Vec<String>) {
    let embedded = root || schema["x-kubernetes-embedded-resource"] == true;
    match v {
        Value::Object(map) => {
            let props = schema["properties"].as_object();
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                let here = join(path, &k);
                if embedded && (k == "apiVersion" || k == "kind") {
                    continue;
                }
                if embedded && k == "metadata" {
                    if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                        // What pruning keeps of `metadata`: ObjectMeta's fields (the generated message table).
                        let extra: Vec<String> = meta.keys().filter(|f| crate::protobuf::declared("ObjectMeta", f).is_none()).cloned().collect();
                        for f in extra {
                            meta.remove(&f);
                            removed.push(format!("{here}.{f}"));
                        }
                    }
                    continue;
                }
                if let Some(p) = props.and_then(|p| p.get(&k)) {
                    if let Some(child) = map.get_mut(&k) {
                        prune(p, child, false, &here, removed);
                    }
                } else if let Some(a) = additional {
                    if let Some(child) = map.get_mut(&k) {
                        prune(a, child, false, &here, removed);
                    }
                } else if !preserves(schema) && schema["additionalProperties"] != true {
                    map.remove(&k);
                    removed.push(here);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|i| i.is_object()) {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, false, &format!("{path}[{i}]"), removed);
                }
            }
        }
        _ => {}
    }
}

/// Fill in `default`s: a property missing (or null where not nullable) gets its schema's
/// default, then defaults apply inside what is there.
pub fn default(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                for (k, p) in props {
                    let missing = match map.get(k) {
                        None => true,
                        Some(Value::Null) => p["nullable"] != true,
                        Some(_) => false,
                    };
                    if missing {
                        if let Some(d) = p.get("default") {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(k) {
                        default(p, child);
                    }
                }
            }
            if let Some(a) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for child in map.values_mut() {
                    default(a, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items").filter(|i| i.is_object()) {
                for item in items.iter_mut() {
                    default(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() && n.as_f64().is_some_and(|f| f.fract() != 0.0) => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(v: &Value) -> bool {
    v.as_i64().is_some() || v.as_u64().is_some() || v.as_f64().is_some_and(|f| f.fract() == 0.0 && f.is_finite())
}

/// A value as Go's `%v` in upstream's messages prints it (in a `field.Invalid`, JSON-quoted).
fn shown(v: &Value) -> String {
    match v {
        Value::Object(_) | Value::Array(_) => format!("{:?}", type_name(v)),
        other => other.to_string(),
    }
}

fn type_invalid(path: &str, v: &Value, want: &str) -> Cause {
    let actual = type_name(v);
    Cause {
        reason: "FieldValueTypeInvalid",
        field: path.into(),
        message: format!("Invalid value: {actual:?}: {path} in body must be of type {want}: {actual:?}"),
    }
}

fn invalid(path: &str, v: &Value, why: String) -> Cause {
    Cause { reason: "FieldValueInvalid", field: path.into(), message: format!("Invalid value: {}: {path} in body {why}", shown(v)) }
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "uuid" => {
            let parts: Vec<&str> = s.split('-').collect();
            parts.len() == 5 && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(n, p)| p.len() == *n && p.chars().all(|c| c.is_ascii_hexdigit()))
        }
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let max = if ip.parse::<std::net::Ipv4Addr>().is_ok() { 32 } else if ip.parse::<std::net::Ipv6Addr>().is_ok() { 128 } else { return false };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        }),
        "hostname" => crate::object::is_dns_subdomain(&s.to_ascii_lowercase()),
        "email" => s.split_once('@').is_some_and(|(u, d)| !u.is_empty() && d.contains('.') && !s.contains(' ')),
        "duration" => strata_cron::duration::parse(s).is_ok(),
        _ => true,
    }
}

/// Validate `v` (at `path`) against `schema`, pushing one cause per failure.
pub fn validate(schema: &Value, v: &Value, path: &str, causes: &mut Vec<Cause>) {
    if v.is_null() {
        if schema["nullable"] == true {
            return;
        }
        if schema["x-kubernetes-int-or-string"] == true {
            causes.push(type_invalid(path, v, "integer,string"));
            return;
        }
        if let Some(t) = schema["type"].as_str() {
            causes.push(type_invalid(path, v, t));
        }
        return;
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(is_integer(v) || v.is_string()) {
            causes.push(type_invalid(path, v, "integer,string"));
            return;
        }
    } else if let Some(t) = schema["type"].as_str() {
        let ok = match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "integer" => is_integer(v),
            "number" => v.is_number(),
            _ => true,
        };
        if !ok {
            causes.push(type_invalid(path, v, t));
            return;
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(v) {
            let list: Vec<String> = values.iter().map(|x| x.as_str().map(|s| format!("{s:?}")).unwrap_or_else(|| x.to_string())).collect();
            causes.push(Cause { reason: "FieldValueNotSupported", field: path.into(), message: format!("Unsupported value: {}: supported values: {}", shown(v), list.join(", ")) });
        }
    }
    match v {
        Value::String(s) => {
            if let Some(f) = schema["format"].as_str() {
                if !format_ok(f, s) {
                    causes.push(type_invalid_format(path, s, f));
                }
            }
            if let Some(max) = schema["maxLength"].as_u64() {
                if s.chars().count() as u64 > max {
                    causes.push(Cause { reason: "FieldValueTooLong", field: path.into(), message: format!("Too long: may not be more than {max} bytes") });
                }
            }
            if let Some(min) = schema["minLength"].as_u64() {
                if (s.chars().count() as u64) < min {
                    causes.push(invalid(path, v, format!("should be at least {min} chars long")));
                }
            }
            if let Some(p) = schema["pattern"].as_str() {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => causes.push(invalid(path, v, format!("should match '{p}'"))),
                    Ok(_) => {}
                    Err(_) => causes.push(invalid(path, v, format!("should match '{p}' (the pattern does not compile)"))),
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(0.0);
            let shown_bound = |b: &Value| b.to_string();
            if let Some(max) = schema.get("maximum").filter(|m| m.is_number()) {
                let m = max.as_f64().unwrap_or(f64::MAX);
                if schema["exclusiveMaximum"] == true {
                    if x >= m {
                        causes.push(invalid(path, v, format!("should be less than {}", shown_bound(max))));
                    }
                } else if x > m {
                    causes.push(invalid(path, v, format!("should be less than or equal to {}", shown_bound(max))));
                }
            }
            if let Some(min) = schema.get("minimum").filter(|m| m.is_number()) {
                let m = min.as_f64().unwrap_or(f64::MIN);
                if schema["exclusiveMinimum"] == true {
                    if x <= m {
                        causes.push(invalid(path, v, format!("should be greater than {}", shown_bound(min))));
                    }
                } else if x < m {
                    causes.push(invalid(path, v, format!("should be greater than or equal to {}", shown_bound(min))));
                }
            }
            if let Some(m) = schema["multipleOf"].as_f64().filter(|m| *m > 0.0) {
                if (x / m).fract() != 0.0 {
                    causes.push(invalid(path, v, format!("should be a multiple of {}", schema["multipleOf"])));
                }
            }
            match schema["format"].as_str() {
                Some("int32") if is_integer(v) && !(i32::MIN as f64..=i32::MAX as f64).contains(&x) => causes.push(type_invalid(path, v, "int32")),
                Some("int64") if is_integer(v) && n.as_i64().is_none() && !n.is_f64() => causes.push(type_invalid(path, v, "int64")),
                _ => {}
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    causes.push(Cause { reason: "FieldValueTooMany", field: path.into(), message: format!("Too many: {}: must have at most {max} items", items.len()) });
                }
            }
            if let Some(min) = schema["minItems"].as_u64() {
                if (items.len() as u64) < min {
                    causes.push(invalid(path, v, format!("should have at least {min} items")));
                }
            }
            if schema["x-kubernetes-list-type"] == "set" || schema["uniqueItems"] == true {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        causes.push(Cause { reason: "FieldValueDuplicate", field: format!("{path}[{i}]"), message: format!("Duplicate value: {}", shown(item)) });
                    }
                }
            }
            if let Some(item_schema) = schema.get("items").filter(|i| i.is_object()) {
                for (i, item) in items.iter().enumerate() {
                    validate(item_schema, item, &format!("{path}[{i}]"), causes);
                }
            }
        }
        Value::Object(map) => object(schema, map, path, causes),
        _ => {}
    }
}

fn type_invalid_format(path: &str, s: &str, format: &str) -> Cause {
    Cause {
        reason: "FieldValueTypeInvalid",
        field: path.into(),
        message: format!("Invalid value: {s:?}: {path} in body must be of type {format}: {s:?}"),
    }
}

fn object(schema: &Value, map: &Map<String, Value>, path: &str, causes: &mut Vec<Cause>) {
    if let Some(required) = schema["required"].as_array() {
        for r in required.iter().filter_map(Value::as_str) {
            if map.get(r).is_none_or(Value::is_null) && !(map.get(r).is_some() && schema["properties"][r]["nullable"] == true) {
                causes.push(Cause { reason: "FieldValueRequired", field: join(path, r), message: "Required value".into() });
            }
        }
    }
    if schema["x-kubernetes-embedded-resource"] == true {
        for k in ["apiVersion", "kind"] {
            if map.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(Cause { reason: "FieldValueRequired", field: join(path, k), message: "Required value: must not be empty".into() });
            }
        }
        if let Some(meta) = map.get("metadata") {
            let name = meta["name"].as_str().unwrap_or("");
            if !name.is_empty() {
                for m in crate::object::dns_subdomain_errors(name) {
                    causes.push(Cause { reason: "FieldValueInvalid", field: join(path, "metadata.name"), message: format!("Invalid value: {name:?}: {m}") });
                }
            }
        }
    }
    if let Some(max) = schema["maxProperties"].as_u64() {
        if map.len() as u64 > max {
            causes.push(Cause { reason: "FieldValueTooMany", field: path.into(), message: format!("Too many: {}: must have at most {max} items", map.len()) });
        }
    }
    if let Some(min) = schema["minProperties"].as_u64() {
        if (map.len() as u64) < min {
            causes.push(Cause { reason: "FieldValueInvalid", field: path.into(), message: format!("Invalid value: {}: {path} in body should have at least {min} properties", map.len()) });
        }
    }
    let props = schema["properties"].as_object();
    for (k, child) in map {
        if (path.is_empty() || schema["x-kubernetes-embedded-resource"] == true) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let here = join(path, k);
        if let Some(p) = props.and_then(|p| p.get(k)) {
            validate(p, child, &here, causes);
        } else if let Some(a) = schema.get("additionalProperties") {
            match a {
                Value::Object(_) => validate(a, child, &here, causes),
                Value::Bool(false) => causes.push(Cause { reason: "FieldValueForbidden", field: here.clone(), message: format!("Forbidden: {here} in body is a forbidden property") }),
                _ => {}
            }
        }
    }
}

/// Validate a whole custom object (`path` empty: causes name `spec.replicas`, ...).
pub fn validate_object(schema: &Value, obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    validate(schema, obj, "", &mut causes);
    // A type mismatch at the root is reported for the whole object.
    causes.iter_mut().for_each(|c| {
        if c.field.is_empty() {
            c.field = "<root>".into();
        }
    });
    causes
}

/// The object's unknown fields removed and defaults applied; returns the removed paths.
pub fn prune_and_default(schema: &Value, obj: &mut Value) -> Vec<String> {
    let mut removed = Vec::new();
    if schema.is_object() {
        prune(schema, obj, true, "", &mut removed);
        default(schema, obj);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({ "type": "object", "properties": {
            "spec": { "type": "object", "required": ["image"], "properties": {
                "replicas": { "type": "integer", "format": "int32", "minimum": 0, "maximum": 100, "default": 3 },
                "image": { "type": "string", "pattern": "^[a-z0-9./:-]+$" },
                "mode": { "type": "string", "enum": ["standalone", "cluster"], "default": "cluster" },
                "port": { "x-kubernetes-int-or-string": true },
                "resources": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
                "config": { "type": "object", "additionalProperties": { "type": "string" } },
                "storage": { "type": "object", "nullable": true, "properties": { "size": { "type": "string" }, "class": { "type": "string", "maxLength": 5 } } },
                "nodes": { "type": "array", "maxItems": 2, "items": { "type": "object", "required": ["name"], "properties": {
                    "name": { "type": "string", "minLength": 1 }, "weight": { "type": "number", "minimum": 0, "exclusiveMinimum": true } } } },
                "template": { "type": "object", "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true },
                "when": { "type": "string", "format": "date-time" },
            } },
        } })
    }

    #[test]
    fn prunes_defaults_and_validates_every_field() {
        let mut o = json!({ "apiVersion": "x.io/v1", "kind": "K", "metadata": { "name": "a", "bogus": 1 }, "extra": true,
            "spec": { "image": "redis", "unknown": 1, "resources": { "anything": { "goes": 1 } }, "config": { "a": "b" },
                      "storage": null, "template": { "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p", "x": 1 }, "spec": { "k": 1 } },
                      "nodes": [{ "name": "n", "drop": 1 }] } });
        let removed = prune_and_default(&schema(), &mut o);
        assert_eq!(removed, ["extra", "metadata.bogus", "spec.nodes[0].drop", "spec.template.metadata.x", "spec.unknown"]);
        assert_eq!(o["spec"]["replicas"], 3);
        assert_eq!(o["spec"]["mode"], "cluster");
        assert_eq!(o["spec"]["resources"]["anything"]["goes"], 1);
        assert_eq!(o["spec"]["template"]["spec"]["k"], 1);
        assert!(o["spec"]["storage"].is_null() && o["spec"].get("storage").is_some(), "nullable null stays");
        assert!(validate_object(&schema(), &o).is_empty(), "{:?}", validate_object(&schema(), &o));

        let bad = json!({ "apiVersion": "x.io/v1", "kind": "K", "metadata": { "name": "a" }, "spec": {
            "replicas": "three", "mode": "other", "port": true, "config": { "a": 1 }, "storage": { "class": "toolong" },
            "nodes": [{ "weight": 0 }, { "name": "" }, { "name": "c" }], "template": { "kind": "Pod" }, "when": "yesterday" } });
        let msgs: Vec<String> = validate_object(&schema(), &bad).iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "spec.image: Required value",
                "spec.config.a: Invalid value: \"integer\": spec.config.a in body must be of type string: \"integer\"",
                "spec.mode: Unsupported value: \"other\": supported values: \"standalone\", \"cluster\"",
                "spec.nodes: Too many: 3: must have at most 2 items",
                "spec.nodes[0].name: Required value",
                "spec.nodes[0].weight: Invalid value: 0: spec.nodes[0].weight in body should be greater than 0",
                "spec.nodes[1].name: Invalid value: \"\": spec.nodes[1].name in body should be at least 1 chars long",
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                "spec.storage.class: Too long: may not be more than 5 bytes",
                "spec.template.apiVersion: Required value: must not be empty",
                "spec.when: Invalid value: \"yesterday\": spec.when in body must be of type date-time: \"yesterday\"",
            ]
        );
        // Formats: int32 range, byte (base64), date, and numbers of any size for float/double.
        let formats = json!({ "type": "object", "properties": {
            "small": { "type": "integer", "format": "int32" }, "raw": { "type": "string", "format": "byte" },
            "day": { "type": "string", "format": "date" }, "ratio": { "type": "number", "format": "double" },
            "set": { "type": "array", "x-kubernetes-list-type": "set", "items": { "type": "string" } } } });
        let msgs: Vec<String> = validate_object(&formats, &json!({ "small": 3_000_000_000u64, "raw": "not base64!", "day": "2026-13-01", "ratio": 1e300, "set": ["a", "b", "a"] }))
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "day: Invalid value: \"2026-13-01\": day in body must be of type date: \"2026-13-01\"",
                "raw: Invalid value: \"not base64!\": raw in body must be of type byte: \"not base64!\"",
                "set[2]: Duplicate value: \"a\"",
                "small: Invalid value: \"integer\": small in body must be of type int32: \"integer\"",
            ]
        );
        assert!(validate_object(&formats, &json!({ "small": -5, "raw": "aGk=", "day": "2026-11-29", "ratio": 0.5, "set": ["a"] })).is_empty());

        let mut big = json!({ "spec": { "image": "BAD IMAGE", "replicas": 101 } });
        default(&schema(), &mut big);
        let msgs: Vec<String> = validate_object(&schema(), &big).iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "spec.image: Invalid value: \"BAD IMAGE\": spec.image in body should match '^[a-z0-9./:-]+$'",
                "spec.replicas: Invalid value: 101: spec.replicas in body should be less than or equal to 100",
            ]
        );
    }
}
