//! YAML request bodies (`application/yaml`, server-side apply's `application/apply-patch+yaml`)
//! decoded to JSON with bounds, so that no body makes the server's memory grow beyond a small
//! multiple of the body itself:
//!
//! - **expansion**: aliases replay their anchor's events (serde_yaml_ng), so a small document can
//!   stand for a huge one (a billion laughs, or one anchored list aliased many times: quadratic).
//!   The value is built here, node by node, with a budget: every node costs [`NODE_COST`] plus its
//!   text, and the whole may cost at most [`EXPANSION`] times the body (at least [`FLOOR`]);
//!   beyond it the decoding stops with upstream's "excessive aliasing" (go-yaml bounds the ratio
//!   of aliased to decoded nodes the same way);
//! - **nesting**: serde_yaml_ng refuses more than 128 levels ("recursion limit exceeded");
//! - **size**: the body is at most 3 MiB before it gets here (413, `api.rs`);
//! - one document per body; mapping keys that are not strings (`1: x`) become strings, as
//!   sigs.k8s.io/yaml converts YAML to JSON.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The cost of one decoded node beyond its text.
pub const NODE_COST: usize = 16;
/// How many times the body's size the decoded document may cost.
pub const EXPANSION: usize = 8;
/// The smallest budget (a tiny body may still hold a few aliases).
pub const FLOOR: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    #[error("yaml: document contains excessive aliasing (it decodes to more than {EXPANSION} times its size)")]
    ExcessiveAliasing,
    #[error("{0}")]
    Syntax(String),
    #[error("the body must be one object")]
    NotAnObject,
}

/// Decode one YAML document that must be an object.
pub fn decode(body: &[u8]) -> Result<Value, YamlError> {
    decode_with(body, false)
}

/// The first mapping key a YAML (or JSON) body repeats, as sigs.k8s.io/yaml's strict decoder
/// reports it: `line 9: key "foo" already set in map` (the line of the repeated key). `None`
/// when no key repeats or the body does not decode (the plain decoding reports that).
pub fn duplicate_key(body: &[u8]) -> Option<String> {
    let budget = Budget { left: Cell::new((body.len() * EXPANSION).max(FLOOR)), exceeded: Cell::new(false), strict: true, repeated: Default::default() };
    let de = serde_yaml_ng::Deserializer::from_slice(body);
    let e = Node(&budget).deserialize(de).err()?;
    let key = budget.repeated.take()?;
    // The error's mark is where the mapping starts; the repeated key is the second line from
    // there that starts with the key at the first one's indentation (a flow mapping written on
    // one line has none: its line is the mapping's).
    let start = e.location().map(|l| l.line()).unwrap_or(1);
    let text = String::from_utf8_lossy(body);
    let indent_of_key = |line: &str| {
        let rest = line.trim_start();
        let after = rest.strip_prefix(key.as_str()).or_else(|| rest.strip_prefix(&format!("{key:?}")))?;
        after.trim_start().starts_with(':').then(|| line.len() - rest.len())
    };
    let mut first = None;
    let mut line = start;
    for (i, l) in text.lines().enumerate().skip(start.saturating_sub(1)) {
        match (indent_of_key(l), first) {
            (Some(ind), None) => first = Some(ind),
            (Some(ind), Some(f)) if ind == f => {
                line = i + 1;
                break;
            }
            _ => {}
        }
    }
    Some(format!("line {line}: key {key:?} already set in map"))
}

fn decode_with(body: &[u8], strict: bool) -> Result<Value, YamlError> {
    let budget = Budget { left: Cell::new((body.len() * EXPANSION).max(FLOOR)), exceeded: Cell::new(false), strict, repeated: Default::default() };
    let de = serde_yaml_ng::Deserializer::from_slice(body);
    let v = Node(&budget).deserialize(de).map_err(|e| if budget.exceeded.get() { YamlError::ExcessiveAliasing } else { YamlError::Syntax(e.to_string()) })?;
    if !v.is_object() {
        return Err(YamlError::NotAnObject);
    }
    Ok(v)
}

struct Budget {
    left: Cell<usize>,
    exceeded: Cell<bool>,
    /// Stop at a repeated mapping key (recorded in `repeated`).
    strict: bool,
    repeated: Cell<Option<String>>,
}

impl Budget {
    fn spend<E: serde::de::Error>(&self, text: usize) -> Result<(), E> {
        let cost = NODE_COST + text;
        match self.left.get().checked_sub(cost) {
            Some(rest) => {
                self.left.set(rest);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom("excessive aliasing"))
            }
        }
    }
}

/// A value, charged to the budget as it is built.
#[derive(Clone, Copy)]
struct Node<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.0.spend(0)?;
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom(format!("{v} cannot be represented in JSON")))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.0.spend(v.len())?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.0.spend(0)?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.0.spend(0)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.0.spend(0)?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(Key(self.0))? {
            if self.0.strict && out.contains_key(&k) {
                self.0.repeated.set(Some(k));
                return Err(A::Error::custom("repeated key"));
            }
            let v = map.next_value_seed(self)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(A::Error::custom("YAML tags are not supported"))
    }
}

/// A mapping key: a string, or a scalar written as one (decoded as a node, then named).
#[derive(Clone, Copy)]
struct Key<'a>(&'a Budget);

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        match Node(self.0).deserialize(d)? {
            Value::String(s) => Ok(s),
            Value::Null => Ok("null".into()),
            v @ (Value::Bool(_) | Value::Number(_)) => Ok(v.to_string()),
            _ => Err(D::Error::custom("a mapping key must be a string, number or boolean")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_decode_and_bombs_do_not() {
        let v = decode(b"a: &x {b: 1, 2: two}\nc: *x\nd: [1.5, true, null, \"s\"]\n").expect("decode");
        assert_eq!(v, serde_json::json!({"a": {"b": 1, "2": "two"}, "c": {"b": 1, "2": "two"}, "d": [1.5, true, null, "s"]}));
        let mut quad = String::from("big: &big [");
        quad.push_str(&vec!["1"; 2000].join(","));
        quad.push_str("]\nmore: [");
        quad.push_str(&vec!["*big"; 2000].join(","));
        quad.push_str("]\n");
        assert!(matches!(decode(quad.as_bytes()), Err(YamlError::ExcessiveAliasing)));
        let deep = format!("x: {}{}\n", "[".repeat(1000), "]".repeat(1000));
        assert!(matches!(decode(deep.as_bytes()), Err(YamlError::Syntax(m)) if m.contains("recursion limit exceeded")));
        assert!(matches!(decode(b"- 1\n"), Err(YamlError::NotAnObject)));
        assert!(matches!(decode(b"a: 1\n---\nb: 2\n"), Err(YamlError::Syntax(_))));
    }

    #[test]
    fn repeated_keys_are_found_with_their_line() {
        let body = b"\napiVersion: v1\nkind: X\nmetadata:\n  name: n\nspec:\n  unknown: uk1\n  foo: foo1\n  foo: foo2\n";
        assert_eq!(duplicate_key(body).as_deref(), Some(r#"line 9: key "foo" already set in map"#));
        assert_eq!(duplicate_key(b"a: 1\nb: {c: 1, d: 2}\n"), None);
        assert_eq!(duplicate_key(br#"{"a": 1, "a": 2}"#).as_deref(), Some(r#"line 1: key "a" already set in map"#));
        // The plain decoding keeps the last value, as the non-strict decoder does.
        assert_eq!(decode(body).expect("decode")["spec"]["foo"], "foo2");
    }
}
