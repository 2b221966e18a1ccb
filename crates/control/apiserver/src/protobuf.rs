//! Kubernetes' protobuf wire format (`application/vnd.kubernetes.protobuf`) for request
//! bodies, decoded to the same JSON the JSON path would have received.
//!
//! kubectl's typed clients (`kubectl create namespace|configmap|secret|deployment|...`,
//! `kubectl run`, `kubectl scale`) send protobuf. A body is the 4 magic bytes `k8s\0` and a
//! `runtime.Unknown` {1: TypeMeta {1: apiVersion, 2: kind}, 2: raw (the object's own message),
//! 3: contentEncoding, 4: contentType}. The object is decoded with the message table
//! [`crate::k8s_messages::MESSAGES`], generated from upstream's `generated.proto` and Go types by
//! `scripts/gen-k8s-messages.py` (field numbers and JSON names as upstream's), from the kinds of
//! [`crate::k8s_messages::KINDS`]. The same table types field validation, the OpenAPI schemas,
//! strategic merge patch and field management.
//!
//! JSON follows what Kubernetes itself stores after decoding into its Go types: Go writes
//! every non-pointer field, so a zero value of a field marked [`C::Omit`] (a Go value field
//! with `omitempty`) is left out; pointer fields ([`C::Keep`], e.g. `replicas`) keep a zero that
//! was sent; absent fields stay absent; messages Go embeds (`ProbeHandler` in `Probe`,
//! `VolumeSource` in `Volume`) are flattened into their parent ([`K::Inline`]). Nothing is
//! dropped silently: an unknown kind or field number is refused with 415 naming the kind, and
//! malformed input with 400.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde_json::{Map, Value};

use crate::status::ApiError;

/// The media type kubectl's typed clients send.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";
/// Nesting limit (the schema's deepest path is far shallower).
const MAX_DEPTH: usize = 64;
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// What a field holds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum K {
    Str,
    Bool,
    I32,
    I64,
    /// `double` (wire type fixed64): a JSON number, whole values written as integers as Go does.
    F64,
    /// JSON: base64.
    Bytes,
    /// A message of the schema, by name.
    Msg(&'static str),
    /// A message Go marshals as whichever of its fields is set (apiextensions'
    /// `JSONSchemaPropsOrBool`, `...OrArray`, `...OrStringArray`): a non-empty list, else the
    /// `schema`, else the other scalar (see [`union`]).
    Union(&'static str),
    /// A message whose fields Go embeds in the parent's JSON (`ProbeHandler` in `Probe`,
    /// `VolumeSource` in `Volume`, `LocalObjectReference` in `ConfigMapKeySelector`, ...).
    Inline(&'static str),
    /// `meta/v1.Time` {seconds=1, nanos=2}: RFC 3339 to the second (Kubernetes drops nanos).
    Time,
    /// `meta/v1.MicroTime`: RFC 3339 with microseconds.
    MicroTime,
    /// `intstr.IntOrString` {type=1, intVal=2, strVal=3}: a JSON number or string.
    IntOrStr,
    /// `resource.Quantity` {string=1}: a JSON string.
    Quantity,
    /// `meta/v1.FieldsV1` / `runtime.RawExtension` {raw=1}: embedded JSON.
    Raw,
}

/// How a field appears in JSON.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum C {
    /// A Go value field with `omitempty`: Go always writes it, JSON leaves out its zero.
    Omit,
    /// A Go pointer or a field without `omitempty`: kept whenever sent, zero included.
    Keep,
    /// `repeated`: a JSON array.
    Rep,
    /// `map<string, K>` (entries {key=1, value=2}): a JSON object.
    Map,
}

/// One field: number, JSON name, kind, cardinality.
#[derive(Clone, Copy, Debug)]
pub struct F(pub u32, pub &'static str, pub K, pub C);

/// Why a body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("the protobuf body does not start with the Kubernetes magic bytes \"k8s\\x00\"")]
    NoMagic,
    #[error("the protobuf envelope has content encoding {0:?}; only unencoded objects are supported")]
    Encoding(String),
    #[error("decoding protobuf of kind {kind:?} (apiVersion {api_version:?}) is not supported; send it as application/json")]
    UnknownKind { api_version: String, kind: String },
    #[error("{kind}: field number {number} of message {message} is not known to this server; send the object as application/json")]
    UnknownField { kind: String, message: &'static str, number: u64 },
    #[error("{kind}: malformed protobuf in {message}: {why}")]
    Malformed { kind: String, message: &'static str, why: String },
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::NoMagic | DecodeError::Malformed { .. } => ApiError::bad_request(format!("the request body could not be decoded: {e}")),
            DecodeError::Encoding(_) | DecodeError::UnknownKind { .. } | DecodeError::UnknownField { .. } => {
                ApiError::new(415, "UnsupportedMediaType", format!("the body of the request could not be decoded as {CONTENT_TYPE}: {e}"))
            }
        }
    }
}

/// A decoding failure below the envelope (the kind is added by [`decode`]).
#[derive(Debug)]
enum Fault {
    UnknownField(&'static str, u64),
    Malformed(&'static str, String),
}

/// Decode a protobuf request body to the object's JSON, `apiVersion` and `kind` included.
pub fn decode(body: &[u8]) -> Result<Value, DecodeError> {
    let env = body.strip_prefix(MAGIC).ok_or(DecodeError::NoMagic)?;
    let (api_version, kind, raw, encoding) =
        envelope(env).map_err(|why| DecodeError::Malformed { kind: "(envelope)".into(), message: "runtime.Unknown", why })?;
    if !encoding.is_empty() {
        return Err(DecodeError::Encoding(encoding));
    }
    // `DeleteOptions` is accepted under any apiVersion (clients send their resource's).
    let name = match kind.as_str() {
        "DeleteOptions" => Some("DeleteOptions"),
        _ => crate::k8s_messages::KINDS.iter().find(|(v, k, _)| *v == api_version && *k == kind).map(|(_, _, m)| *m),
    };
    let Some(name) = name else {
        return Err(DecodeError::UnknownKind { api_version, kind });
    };
    let mut obj = message(name, raw, 0).map_err(|f| match f {
        Fault::UnknownField(message, number) => DecodeError::UnknownField { kind: kind.clone(), message, number },
        Fault::Malformed(message, why) => DecodeError::Malformed { kind: kind.clone(), message, why },
    })?;
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), Value::String(api_version));
        m.insert("kind".into(), Value::String(kind));
    }
    Ok(obj)
}

/// `runtime.Unknown`: (apiVersion, kind, raw, contentEncoding).
fn envelope(b: &[u8]) -> Result<(String, String, &[u8], String), String> {
    let (mut api_version, mut kind, mut raw, mut encoding) = (String::new(), String::new(), &b[..0], String::new());
    small(b, |n, w, r| {
        match (n, w) {
            (1, LEN) => small(r.bytes()?, |n, w, t| {
                match (n, w) {
                    (1, LEN) => api_version = utf8(t.bytes()?)?,
                    (2, LEN) => kind = utf8(t.bytes()?)?,
                    _ => return Err(format!("TypeMeta has unknown field {n} (wire type {w})")),
                }
                Ok(())
            })?,
            (2, LEN) => raw = r.bytes()?,
            (3, LEN) => encoding = utf8(r.bytes()?)?,
            (4, LEN) => {
                r.bytes()?;
            }
            _ => return Err(format!("unknown field {n} (wire type {w})")),
        }
        Ok(())
    })?;
    Ok((api_version, kind, raw, encoding))
}

/// The field `name` of message `msg` and the message that declares it, looking through the
/// messages Go embeds ([`K::Inline`]).
pub(crate) fn declared(msg: &'static str, name: &str) -> Option<(&'static str, F)> {
    for f in schema_of(msg)? {
        match f.2 {
            K::Inline(inner) => {
                if let Some(found) = declared(inner, name) {
                    return Some(found);
                }
            }
            _ if f.1 == name => return Some((msg, *f)),
            _ => {}
        }
    }
    None
}

/// A message of the table by name: its proto package and its fields.
fn table_entry(name: &str) -> Option<(&'static str, &'static [F])> {
    static INDEX: OnceLock<HashMap<&'static str, (&'static str, &'static [F])>> = OnceLock::new();
    INDEX.get_or_init(|| crate::k8s_messages::MESSAGES.iter().map(|(n, p, f)| (*n, (*p, *f))).collect()).get(name).copied()
}

pub(crate) fn schema_of(name: &str) -> Option<&'static [F]> {
    table_entry(name).map(|(_, f)| f)
}

/// The proto package of a message of the table (`io.k8s.api.apps.v1`); "" if it is not one.
pub(crate) fn package_of(name: &str) -> &'static str {
    table_entry(name).map_or("", |(p, _)| p)
}

/// The message of a served built-in kind (by its apiVersion and kind); `None` for custom kinds
/// and kinds outside the table.
pub fn message_of(r: &crate::resources::Resource) -> Option<&'static str> {
    if r.custom {
        return None;
    }
    let api_version = r.api_version();
    crate::k8s_messages::KINDS.iter().find(|(v, k, _)| *v == api_version && *k == r.kind).map(|(_, _, m)| *m)
}

/// The Go type of a message: its name without the `@group.version` that tells apart Go types
/// of the same name in different packages (the key of [`crate::k8s_meta`]).
pub fn go_type(msg: &str) -> &str {
    msg.split('@').next().unwrap_or(msg)
}

/// A protobuf wire reader over one message's bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// A field key: (field number, wire type).
    fn key(&mut self) -> Result<(u64, u8), String> {
        let k = self.varint()?;
        if k >> 3 == 0 {
            return Err("field number 0".into());
        }
        Ok((k >> 3, (k & 7) as u8))
    }

    /// A fixed64 payload (little-endian).
    fn fixed64(&mut self) -> Result<u64, String> {
        let end = self.pos.checked_add(8).filter(|e| *e <= self.buf.len()).ok_or("truncated fixed64")?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buf[self.pos..end]);
        self.pos = end;
        Ok(u64::from_le_bytes(b))
    }

    /// A length-delimited payload.
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("length runs past the end of the message")?;
        let b = &self.buf[self.pos..end];
        self.pos = end;
        Ok(b)
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "string is not valid UTF-8".to_string())
}

/// Decode one schema message.
fn message(name: &'static str, buf: &[u8], depth: usize) -> Result<Value, Fault> {
    let bad = |why: String| Fault::Malformed(name, why);
    if depth > MAX_DEPTH {
        return Err(bad("nested too deeply".into()));
    }
    let fields = schema_of(name).ok_or_else(|| bad(format!("no schema for message {name}")))?;
    let mut out = Map::new();
    let mut r = Reader::new(buf);
    while !r.done() {
        let (number, wire) = r.key().map_err(bad)?;
        let f = fields.iter().find(|f| u64::from(f.0) == number).ok_or(Fault::UnknownField(name, number))?;
        let F(_, json, k, c) = *f;
        match c {
            C::Rep => {
                let mut items = Vec::new();
                if wire == LEN && matches!(k, K::Bool | K::I32 | K::I64) {
                    // Packed scalars.
                    let mut p = Reader::new(r.bytes().map_err(bad)?);
                    while !p.done() {
                        items.push(scalar(k, p.varint().map_err(bad)?));
                    }
                } else {
                    items.push(value(name, k, wire, &mut r, depth)?);
                }
                if let Value::Array(a) = out.entry(json).or_insert_with(|| Value::Array(Vec::new())) {
                    a.extend(items);
                }
            }
            C::Map => {
                if wire != LEN {
                    return Err(bad(format!("map field {json} has wire type {wire}")));
                }
                let mut e = Reader::new(r.bytes().map_err(bad)?);
                let (mut key, mut val) = (String::new(), None);
                while !e.done() {
                    match e.key().map_err(bad)? {
                        (1, LEN) => key = utf8(e.bytes().map_err(bad)?).map_err(bad)?,
                        (2, w) => val = Some(value(name, k, w, &mut e, depth)?),
                        (n, w) => return Err(bad(format!("map entry of {json} has field {n} (wire type {w})"))),
                    }
                }
                let val = val.unwrap_or_else(|| zero_of(k));
                if let Value::Object(m) = out.entry(json).or_insert_with(|| Value::Object(Map::new())) {
                    m.insert(key, val);
                }
            }
            C::Omit | C::Keep => match value(name, k, wire, &mut r, depth)? {
                Value::Object(inner) if matches!(k, K::Inline(_)) => out.extend(inner),
                v => {
                    out.insert(json.to_string(), v);
                }
            },
        }
    }
    for f in fields.iter().filter(|f| f.3 == C::Omit) {
        if out.get(f.1).is_some_and(is_zero) {
            out.remove(f.1);
        }
    }
    Ok(Value::Object(out))
}

/// Go's zero values as JSON (what `omitempty` leaves out).
fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s.is_empty(),
        Value::Array(_) | Value::Object(_) => false,
    }
}

fn scalar(k: K, v: u64) -> Value {
    match k {
        K::Bool => Value::Bool(v != 0),
        // int32 is sign-extended to 64 bits on the wire; keep the low 32.
        K::I32 => Value::from(v as i64 as i32),
        _ => Value::from(v as i64),
    }
}

/// One value of kind `k` (in message `name`) read from `r`.
fn value(name: &'static str, k: K, wire: u8, r: &mut Reader<'_>, depth: usize) -> Result<Value, Fault> {
    let bad = |why: String| Fault::Malformed(name, why);
    let want = match k {
        K::Bool | K::I32 | K::I64 => VARINT,
        K::F64 => FIXED64,
        _ => LEN,
    };
    if wire != want {
        return Err(bad(format!("a {k:?} field has wire type {wire}")));
    }
    Ok(match k {
        K::Bool | K::I32 | K::I64 => scalar(k, r.varint().map_err(bad)?),
        K::Str => Value::String(utf8(r.bytes().map_err(bad)?).map_err(bad)?),
        K::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(r.bytes().map_err(bad)?)),
        K::F64 => double(f64::from_bits(r.fixed64().map_err(bad)?)).map_err(bad)?,
        K::Msg(m) | K::Inline(m) => message(m, r.bytes().map_err(bad)?, depth + 1)?,
        K::Union(m) => union(m, message(m, r.bytes().map_err(bad)?, depth + 1)?),
        K::Time | K::MicroTime => time(r.bytes().map_err(bad)?, k == K::MicroTime).map_err(|w| Fault::Malformed("Time", w))?,
        K::IntOrStr => int_or_string(r.bytes().map_err(bad)?).map_err(|w| Fault::Malformed("IntOrString", w))?,
        K::Quantity => one_field(r.bytes().map_err(bad)?).and_then(utf8).map(Value::String).map_err(|w| Fault::Malformed("Quantity", w))?,
        K::Raw => match one_field(r.bytes().map_err(bad)?) {
            Ok([]) => Value::Null,
            Ok(raw) => serde_json::from_slice(raw).map_err(|e| Fault::Malformed("RawExtension", format!("embedded object is not JSON: {e}")))?,
            Err(w) => return Err(Fault::Malformed("RawExtension", w)),
        },
    })
}

/// A map entry's value when the entry has none: the kind's zero.
fn zero_of(k: K) -> Value {
    match k {
        K::Str | K::Bytes | K::Quantity => Value::String(String::new()),
        K::Msg(_) | K::Inline(_) => Value::Object(Map::new()),
        K::Bool | K::Union(_) => Value::Bool(false),
        K::I32 | K::I64 | K::IntOrStr | K::F64 => Value::from(0),
        K::Time | K::MicroTime | K::Raw => Value::Null,
    }
}

/// A `double` as Go's encoding/json writes it: a whole number without a fraction. NaN and the
/// infinities have no JSON form (Go refuses to marshal them).
fn double(v: f64) -> Result<Value, String> {
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        return Ok(Value::from(v as i64));
    }
    serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| format!("{v} is not a JSON number"))
}

/// A decoded [`K::Union`] message as Go's `MarshalJSON` of apiextensions' unions writes it: its
/// list field when non-empty (`jSONSchemas`, `property`), else `schema`, else its other scalar
/// (a bool: false when absent), else `null`.
fn union(msg: &str, decoded: Value) -> Value {
    let Value::Object(mut m) = decoded else { return decoded };
    if let Some(list) = m.values().find(|v| v.as_array().is_some_and(|a| !a.is_empty())) {
        return list.clone();
    }
    if let Some(schema) = m.remove("schema") {
        return schema;
    }
    match schema_of(msg).unwrap_or(&[]).iter().find(|f| f.2 == K::Bool) {
        Some(f) => m.remove(f.1).unwrap_or(Value::Bool(false)),
        None => Value::Null,
    }
}

/// The payload of field 1 of a one-field message (`Quantity`, `RawExtension`, `FieldsV1`).
fn one_field(b: &[u8]) -> Result<&[u8], String> {
    let mut out = &b[..0];
    small(b, |n, w, r| match (n, w) {
        (1, LEN) => {
            out = r.bytes()?;
            Ok(())
        }
        _ => Err(format!("unknown field {n} (wire type {w})")),
    })?;
    Ok(out)
}

/// Walk a small fixed message, handing each field to `each`.
fn small<'a>(b: &'a [u8], mut each: impl FnMut(u64, u8, &mut Reader<'a>) -> Result<(), String>) -> Result<(), String> {
    let mut r = Reader::new(b);
    while !r.done() {
        let (n, w) = r.key()?;
        each(n, w, &mut r)?;
    }
    Ok(())
}

/// `Timestamp` {seconds=1, nanos=2}; empty is Go's zero time, JSON `null`.
fn time(b: &[u8], micro: bool) -> Result<Value, String> {
    if b.is_empty() {
        return Ok(Value::Null);
    }
    let (mut secs, mut nanos) = (0i64, 0u32);
    small(b, |n, w, r| {
        match (n, w) {
            (1, VARINT) => secs = r.varint()? as i64,
            (2, VARINT) => nanos = (r.varint()? as i64 as i32).clamp(0, 999_999_999) as u32,
            _ => return Err(format!("unknown field {n} (wire type {w})")),
        }
        Ok(())
    })?;
    let t = chrono::DateTime::from_timestamp(secs, if micro { nanos } else { 0 }).ok_or_else(|| format!("time {secs}s is out of range"))?;
    Ok(Value::String(if micro { t.format("%Y-%m-%dT%H:%M:%S%.6fZ") } else { t.format("%Y-%m-%dT%H:%M:%SZ") }.to_string()))
}

/// `IntOrString` {type=1 (0 int, 1 string), intVal=2, strVal=3}.
fn int_or_string(b: &[u8]) -> Result<Value, String> {
    let (mut ty, mut int, mut s) = (0u64, 0i32, String::new());
    small(b, |n, w, r| {
        match (n, w) {
            (1, VARINT) => ty = r.varint()?,
            (2, VARINT) => int = r.varint()? as i64 as i32,
            (3, LEN) => s = utf8(r.bytes()?)?,
            _ => return Err(format!("unknown field {n} (wire type {w})")),
        }
        Ok(())
    })?;
    match ty {
        0 => Ok(Value::from(int)),
        1 => Ok(Value::String(s)),
        t => Err(format!("unknown type {t}")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    // Request bodies captured from kubectl v1.32 (`kubectl create ... `), as hex.
    const DEPLOYMENT: &str = concat!(
        "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412bc010a1f0a0377656212001a0022002a00320038",
        "0042005a0a0a036170701203776562128a010803120c0a0a0a0361707012037765621a700a1c0a0012001a0022002a00",
        "3200380042005a0a0a036170701203776562125012320a0762757379626f78120762757379626f782a00320a0a001000",
        "185022002a0042006a007200800100880100900100a201001a00320042004a0052005800600068008201008a01009a01",
        "00c2010022020a00280038001a0c0800100018002000280038001a002200",
    );
    const SERVICE: &str = concat!(
        "6b3873000a0d0a02763112075365727669636512690a1f0a0377656212001a0022002a003200380042005a0a0a036170",
        "70120377656212420a1b0a0738302d38303830120354435018502207080010903f1a002800120a0a0361707012037765",
        "621a002209436c757374657249503a00420052005a00600068001a020a001a002200",
    );
    const SECRET: &str = concat!(
        "6b3873000a0c0a0276311206536563726574122c0a130a0373656312001a0022002a0032003800420012130a08706173",
        "73776f7264120768756e746572321a001a002200",
    );
    const CRONJOB: &str = concat!(
        "6b3873000a130a0862617463682f7631120743726f6e4a6f6212a8010a120a02636a12001a0022002a00320038004200",
        "128f010a0b2a2f35202a202a202a202a1a002a7e0a120a02636a12001a0022002a00320038004200126832660a100a00",
        "12001a0022002a003200380042001252122b0a02636a120762757379626f781a046563686f1a0268692a0042006a0072",
        "00800100880100900100a201001a094f6e4661696c757265320042004a0052005800600068008201008a01009a0100c2",
        "01001a001a002200",
    );
    const CLUSTER_ROLE_BINDING: &str = concat!(
        "6b3873000a320a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f76311212436c7573746572526f6c",
        "6542696e64696e6712740a130a0363726212001a0022002a00320038004200122a0a0547726f75701219726261632e61",
        "7574686f72697a6174696f6e2e6b38732e696f1a046465767322001a310a19726261632e617574686f72697a6174696f",
        "6e2e6b38732e696f120b436c7573746572526f6c651a07637265616465721a002200",
    );
    const QUOTA: &str = concat!(
        "6b3873000a130a027631120d5265736f7572636551756f746112310a110a017112001a0022002a00320038004200121a",
        "0a0a0a0363707512030a01320a0c0a04706f647312040a0231301a001a002200",
    );
    const NAMESPACE: &str = concat!(
        "6b3873000a0f0a02763112094e616d657370616365121d0a150a056361706e7312001a0022002a003200380042001200",
        "1a020a001a002200",
    );
    const ROLE: &str = concat!(
        "6b3873000a240a1c726261632e617574686f72697a6174696f6e2e6b38732e696f2f76311204526f6c6512390a160a06",
        "72656164657212001a0022002a00320038004200121f0a036765740a046c69737412001a04706f64731a0a636f6e6669",
        "676d6170731a002200",
    );

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
    }

    // A tiny protobuf encoder for hand-built bodies.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn vi(n: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(n << 3, &mut out);
        varint(v, &mut out);
        out
    }
    fn ld(n: u64, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint((n << 3) | 2, &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }
    fn s(n: u64, v: &str) -> Vec<u8> {
        ld(n, v.as_bytes())
    }
    fn msg(n: u64, parts: &[Vec<u8>]) -> Vec<u8> {
        ld(n, &parts.concat())
    }
    fn entry(n: u64, k: &str, v: &[u8]) -> Vec<u8> {
        msg(n, &[s(1, k), ld(2, v)])
    }
    fn body(api_version: &str, kind: &str, raw: &[Vec<u8>]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend(msg(1, &[s(1, api_version), s(2, kind)]));
        b.extend(ld(2, &raw.concat()));
        b
    }

    #[test]
    fn schema_is_closed_and_consistent() {
        for (name, _, fields) in crate::k8s_messages::MESSAGES {
            for (i, f) in fields.iter().enumerate() {
                if let K::Msg(m) | K::Inline(m) | K::Union(m) = f.2 {
                    assert!(schema_of(m).is_some(), "{name}.{} refers to unknown message {m}", f.1);
                }
                assert!(fields[i + 1..].iter().all(|g| g.0 != f.0 && g.1 != f.1), "{name}: duplicate field {} {}", f.0, f.1);
            }
        }
        for (_, _, m) in crate::k8s_messages::KINDS {
            assert!(schema_of(m).is_some(), "{m} has no message");
        }
        let names: std::collections::HashSet<&str> = crate::k8s_messages::MESSAGES.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(names.len(), crate::k8s_messages::MESSAGES.len(), "message names are unique");
        // Every built-in kind but strata's own has its message, found by its apiVersion.
        for r in crate::resources::RESOURCES {
            let outside = r.group == "strata.dev";
            assert_eq!(message_of(r).is_some(), !outside, "{} {}", r.api_version(), r.kind);
        }
        let events = crate::resources::find("events.k8s.io", "v1", "events").expect("events.k8s.io");
        assert_eq!(message_of(events), Some("Event@events.k8s.io.v1"));
    }

    #[test]
    fn kubectl_create_namespace() {
        let v = decode(&unhex(NAMESPACE)).expect("decode");
        assert_eq!(v, json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "capns" }, "spec": {}, "status": {} }));
    }

    #[test]
    fn kubectl_create_deployment() {
        let v = decode(&unhex(DEPLOYMENT)).expect("decode");
        assert_eq!((v["apiVersion"].as_str(), v["kind"].as_str()), (Some("apps/v1"), Some("Deployment")));
        assert_eq!(v["metadata"], json!({ "name": "web", "labels": { "app": "web" } }));
        assert_eq!(v["spec"]["replicas"], 3);
        assert_eq!(v["spec"]["selector"], json!({ "matchLabels": { "app": "web" } }));
        assert_eq!(v["spec"]["strategy"], json!({}));
        let tpl = &v["spec"]["template"];
        assert_eq!(tpl["metadata"], json!({ "labels": { "app": "web" } }));
        assert_eq!(tpl["spec"]["containers"], json!([{ "name": "busybox", "image": "busybox", "ports": [{ "containerPort": 80 }], "resources": {} }]));
        assert_eq!(v["status"], json!({}));
    }

    #[test]
    fn kubectl_create_service_secret_quota() {
        let v = decode(&unhex(SERVICE)).expect("service");
        assert_eq!(v["spec"]["ports"], json!([{ "name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080 }]));
        assert_eq!((v["spec"]["type"].as_str(), v["spec"]["selector"]["app"].as_str()), (Some("ClusterIP"), Some("web")));
        let v = decode(&unhex(SECRET)).expect("secret");
        assert_eq!(v["data"], json!({ "password": "aHVudGVyMg==" }));
        let v = decode(&unhex(QUOTA)).expect("quota");
        assert_eq!(v["spec"]["hard"], json!({ "cpu": "2", "pods": "10" }));
    }

    #[test]
    fn kubectl_create_cronjob_and_rbac() {
        let v = decode(&unhex(CRONJOB)).expect("cronjob");
        assert_eq!(v["spec"]["schedule"], "*/5 * * * *");
        let pod = &v["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "OnFailure");
        assert_eq!(pod["containers"][0]["command"], json!(["echo", "hi"]));
        let v = decode(&unhex(ROLE)).expect("role");
        assert_eq!(v["rules"], json!([{ "verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods", "configmaps"] }]));
        let v = decode(&unhex(CLUSTER_ROLE_BINDING)).expect("crb");
        assert_eq!(
            v,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": { "name": "crb" },
                "subjects": [{ "kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "devs" }],
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "creader" },
            })
        );
    }

    #[test]
    fn hand_built_kinds_of_fields() {
        let meta = msg(1, &[
            s(1, "p"),
            s(2, ""),
            msg(8, &[vi(1, 1_700_000_000), vi(2, 5)]),
            entry(12, "note", b"x"),
            s(14, "f1"),
            s(14, "f2"),
            msg(13, &[s(5, "apps/v1"), s(1, "ReplicaSet"), s(3, "rs"), s(4, "u1"), vi(6, 1)]),
        ]);
        // Probe embeds ProbeHandler (field 1) in its JSON.
        let probe = msg(10, &[msg(1, &[msg(2, &[msg(2, &[vi(1, 1), s(3, "http")])])]), vi(2, 0)]);
        let container = msg(2, &[s(1, "c"), msg(8, &[entry(1, "cpu", &s(1, "500m")), entry(2, "memory", &s(1, "64Mi"))]), vi(16, 0), probe]);
        // Volume embeds VolumeSource (field 2), ConfigMapVolumeSource its LocalObjectReference.
        let volume = msg(1, &[s(1, "v"), msg(2, &[msg(19, &[msg(1, &[s(1, "cm")]), vi(3, 420)])])]);
        let spec = msg(2, &[container, vi(4, 0), s(6, ""), volume]);
        let raw = [meta, spec];
        let v = decode(&body("v1", "Pod", &raw)).expect("pod");
        assert_eq!(
            v["metadata"],
            json!({
                "name": "p", "creationTimestamp": "2023-11-14T22:13:20Z", "annotations": { "note": "x" }, "finalizers": ["f1", "f2"],
                "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true }],
            })
        );
        let c = &v["spec"]["containers"][0];
        assert_eq!(c["resources"], json!({ "limits": { "cpu": "500m" }, "requests": { "memory": "64Mi" } }));
        assert_eq!(c["livenessProbe"], json!({ "httpGet": { "port": "http" } }));
        assert!(c.get("stdin").is_none(), "Go value bool false is omitted: {c}");
        // terminationGracePeriodSeconds is a Go pointer: a sent 0 is kept.
        assert_eq!(v["spec"]["terminationGracePeriodSeconds"], 0);
        assert!(v["spec"].get("dnsPolicy").is_none());
        assert_eq!(v["spec"]["volumes"], json!([{ "name": "v", "configMap": { "name": "cm", "defaultMode": 420 } }]));

        // Bytes maps are base64; a present zero of a pointer field is kept; negative int32.
        let v = decode(&body("v1", "ConfigMap", &[msg(1, &[s(1, "c")]), entry(3, "bin", &[0, 255]), vi(4, 0)])).expect("cm");
        assert_eq!(v["binaryData"], json!({ "bin": "AP8=" }));
        assert_eq!(v["immutable"], false);
        let v = decode(&body("apps/v1", "Deployment", &[msg(2, &[vi(1, 0), vi(9, u64::MAX)])])).expect("deploy");
        assert_eq!((v["spec"]["replicas"].as_i64(), v["spec"]["progressDeadlineSeconds"].as_i64()), (Some(0), Some(-1)));
        // Packed and unpacked repeated int32 both decode.
        let req = |values: Vec<u8>| {
            let rule = msg(1, &[s(1, "FailJob"), msg(2, &[s(2, "In"), values])]);
            body("batch/v1", "Job", &[msg(2, &[msg(11, &[rule])])])
        };
        let packed = decode(&req(ld(3, &[1, 2]))).expect("packed");
        let unpacked = decode(&req([vi(3, 1), vi(3, 2)].concat())).expect("unpacked");
        assert_eq!(packed["spec"]["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"], json!([1, 2]));
        assert_eq!(packed, unpacked);
        // Scale (kubectl scale's PUT) and DeleteOptions under a resource's apiVersion.
        let v = decode(&body("autoscaling/v1", "Scale", &[msg(1, &[s(1, "web"), s(6, "12")]), msg(2, &[vi(1, 5)])])).expect("scale");
        assert_eq!((v["spec"]["replicas"].as_i64(), v["metadata"]["resourceVersion"].as_str()), (Some(5), Some("12")));
        let v = decode(&body("autoscaling/v1", "Scale", &[msg(1, &[s(1, "web")]), msg(2, &[vi(1, 0)])])).expect("scale to 0");
        assert_eq!(v["spec"]["replicas"], 0);
        let v = decode(&body("apps/v1", "DeleteOptions", &[s(4, "Foreground"), msg(2, &[s(1, "u")])])).expect("delete options");
        assert_eq!(v["preconditions"], json!({ "uid": "u" }));
    }

    #[test]
    fn leases_and_endpoint_slices_decode() {
        // What client-go's leader election sends: a Lease with a MicroTime renewTime.
        let spec = msg(2, &[s(1, "me"), vi(2, 15), msg(4, &[vi(1, 1_700_000_000), vi(2, 123_456_000)])]);
        let v = decode(&body("coordination.k8s.io/v1", "Lease", &[msg(1, &[s(1, "sched"), s(3, "kube-system")]), spec])).expect("lease");
        assert_eq!(v["spec"], json!({ "holderIdentity": "me", "leaseDurationSeconds": 15, "renewTime": "2023-11-14T22:13:20.123456Z" }));
        let endpoint = msg(2, &[s(1, "10.0.0.1"), msg(2, &[vi(1, 1)])]);
        let v = decode(&body("discovery.k8s.io/v1", "EndpointSlice", &[msg(1, &[s(1, "web-abc")]), s(4, "IPv4"), endpoint, msg(3, &[vi(3, 80)])])).expect("slice");
        assert_eq!((v["addressType"].as_str(), v["endpoints"][0]["conditions"]["ready"].as_bool(), v["ports"][0]["port"].as_i64()), (Some("IPv4"), Some(true), Some(80)));
    }

    #[test]
    fn excluded_fields_are_refused() {
        // scripts/gen-k8s-messages.py's EXCLUDED: a CSR's spec.extra (field 6) is the server's to
        // set; TokenRequestSpec.attestations (5) and JobSpec.scheduling (17) are not served.
        for (api_version, kind, raw) in [
            ("certificates.k8s.io/v1", "CertificateSigningRequest", msg(2, &[entry(6, "k", &s(1, "v"))])),
            ("authentication.k8s.io/v1", "TokenRequest", msg(2, &[msg(5, &[])])),
            ("batch/v1", "Job", msg(2, &[msg(17, &[])])),
        ] {
            let e = decode(&body(api_version, kind, &[raw])).expect_err("excluded field");
            assert!(matches!(e, DecodeError::UnknownField { .. }), "{kind}: {e}");
        }
        let csr = crate::resources::find("certificates.k8s.io", "v1", "certificatesigningrequests").expect("csr");
        let mut o = json!({"spec": {"request": "", "signerName": "x", "extra": {"k": ["v"]}}});
        let e = crate::fields::check(csr, &mut o, crate::fields::FieldValidation::Strict, &[]).expect_err("strict");
        assert!(e.message.contains("unknown field \"spec.extra\""), "{}", e.message);
    }

    #[test]
    fn refuses_what_it_cannot_decode_faithfully() {
        let err = |b: Vec<u8>| ApiError::from(decode(&b).expect_err("must fail"));
        let e = err(body("v1", "Namespace", &[msg(1, &[s(1, "x"), vi(99, 1)])]));
        assert_eq!((e.code, e.reason), (415, "UnsupportedMediaType"));
        assert!(e.message.contains("Namespace") && e.message.contains("99") && e.message.contains("ObjectMeta"), "{}", e.message);
        let e = err(body("resource.k8s.io/v1beta1", "ResourceClaim", &[]));
        assert_eq!(e.code, 415);
        assert!(e.message.contains("ResourceClaim"), "{}", e.message);
        let e = err(body("v2", "Namespace", &[]));
        assert_eq!(e.code, 415);
        let mut gz = body("v1", "Namespace", &[]);
        gz.extend(s(3, "gzip"));
        assert_eq!(err(gz).code, 415);
        assert_eq!(err(b"{\"kind\":\"Namespace\"}".to_vec()).code, 400);
        // Truncated: the declared length runs past the end.
        let mut cut = body("v1", "ConfigMap", &[msg(1, &[s(1, "c")])]);
        cut.pop();
        assert_eq!(err(cut).code, 400);
        // Wrong wire type, invalid UTF-8, an over-long varint.
        assert_eq!(err(body("v1", "ConfigMap", &[vi(1, 3)])).code, 400);
        assert_eq!(err(body("v1", "ConfigMap", &[msg(1, &[ld(1, &[0xff])])])).code, 400);
        assert_eq!(err(body("v1", "ConfigMap", &[vec![0x08; 1], vec![0xff; 11]])).code, 400);
    }

    // A CustomResourceDefinition as client-go's apiextensions clientset sends it (the e2e suite's
    // CRD tests): encoded by k8s.io/apimachinery v0.32.0's protobuf serializer from a Go
    // `apiextensionsv1.CustomResourceDefinition` (doubles, JSON defaults and enums, the
    // JSONSchemaPropsOr* unions, int-or-string, preserve-unknown-fields, subresources, printer
    // columns), with CRD_JSON the same object through Go's encoding/json (nulls left out: absent
    // fields stay absent here).
    const CRD: &str = concat!(
        "6b3873000a330a17617069657874656e73696f6e732e6b38732e696f2f76311218437573746f6d5265736f75726365446566",
        "696e6974696f6e12c1080a300a16776964676574732e70622e6578616d706c652e636f6d12001a0022002a00320038004200",
        "5a080a036532651201781280080a0e70622e6578616d706c652e636f6d1a290a077769646765747312067769646765741a02",
        "776722065769646765742a0a5769646765744c697374220a4e616d657370616365643ab4070a0276311001180122d4060ad1",
        "060a001200220941207769646765742e2a066f626a65637432003a00500060007a00900100ea01bb050a047370656312b205",
        "0a00120022002a066f626a65637432003a00500060007a00900100ba010473697a65ea01300a05657874726112270a001200",
        "22002a066f626a65637432003a00500060007a00900100a80200b00201b80200c00200ea01590a066c6162656c73124f0a00",
        "120022002a066f626a65637432003a00500060007a00900100f20128080112240a00120022002a06737472696e6732003a00",
        "500060007a00900100a80200b80200c00200a80200b80200c00200ea01750a04706f7274126d0a00120022002a0032003a00",
        "500060007a00900100da01250a00120022002a07696e746567657232003a00500060007a00900100a80200b80200c00200da",
        "01240a00120022002a06737472696e6732003a00500060007a00900100a80200b80200c00200a80200b80200c00201ea0149",
        "0a05726174696f12400a00120022002a066e756d62657232003a00490000000000000040500159000000000000e03f60007a",
        "009001009901000000000000d03fa80200b80200c00200ea014d0a087265706c6963617312410a00120022002a07696e7465",
        "6765723205696e7433323a0042030a0131490000000000002440500059000000000000000060007a00900100a80200b80200",
        "c00200ea014e0a0473697a6512460a00120022002a06737472696e6732003a0050006000680a7a085e5b612d7a5d2b249001",
        "00a201090a0722736d616c6c22a201090a07226c6172676522a80200b80200c00200ea015a0a047461677312520a00120022",
        "002a05617272617932003a00500060007a00900100c201260a240a00120022002a06737472696e6732003a00500060007a00",
        "900100a80200b80200c00200a80200b80200c00200d20203736574ea01330a0874656d706c61746512270a00120022002a06",
        "6f626a65637432003a00500060007a00900100a80201b00201b80201c00200a80200b80200c00200ea01620a067374617475",
        "7312580a00120022002a066f626a65637432003a00500060007a00900100ea01310a087265706c6963617312250a00120022",
        "002a07696e746567657232003a00500060007a00900100a80200b80200c00200a80200b80200c00200a80200b80200c00200",
        "2a260a0012220a0e2e737065632e7265706c6963617312102e7374617475732e7265706c6963617332290a085265706c6963",
        "61731207696e74656765721a0022002800320e2e737065632e7265706c69636173380050001a0a12080a00120022002a001a",
        "002200",
    );
    const CRD_JSON: &str = r#"{"kind":"CustomResourceDefinition","apiVersion":"apiextensions.k8s.io/v1","metadata":{"name":"widgets.pb.example.com","labels":{"e2e":"x"}},"spec":{"group":"pb.example.com","names":{"plural":"widgets","singular":"widget","shortNames":["wg"],"kind":"Widget","listKind":"WidgetList"},"scope":"Namespaced","versions":[{"name":"v1","served":true,"storage":true,"schema":{"openAPIV3Schema":{"description":"A widget.","type":"object","properties":{"spec":{"type":"object","required":["size"],"properties":{"extra":{"type":"object","x-kubernetes-preserve-unknown-fields":true},"labels":{"type":"object","additionalProperties":{"type":"string"}},"port":{"anyOf":[{"type":"integer"},{"type":"string"}],"x-kubernetes-int-or-string":true},"ratio":{"type":"number","maximum":2,"exclusiveMaximum":true,"minimum":0.5,"multipleOf":0.25},"replicas":{"type":"integer","format":"int32","default":1,"maximum":10,"minimum":0},"size":{"type":"string","maxLength":10,"pattern":"^[a-z]+$","enum":["small","large"]},"tags":{"type":"array","items":{"type":"string"},"x-kubernetes-list-type":"set"},"template":{"type":"object","nullable":true,"x-kubernetes-preserve-unknown-fields":true,"x-kubernetes-embedded-resource":true}}},"status":{"type":"object","properties":{"replicas":{"type":"integer"}}}}}},"subresources":{"status":{},"scale":{"specReplicasPath":".spec.replicas","statusReplicasPath":".status.replicas"}},"additionalPrinterColumns":[{"name":"Replicas","type":"integer","jsonPath":".spec.replicas"}]}]},"status":{"acceptedNames":{"plural":"","kind":""}}}"#;

    #[test]
    fn client_go_custom_resource_definition() {
        let v = decode(&unhex(CRD)).expect("decode");
        let want: Value = serde_json::from_str(CRD_JSON).expect("CRD_JSON");
        assert_eq!(v, want);
        // A union holding a bool, an array of schemas, a string array; a double with a fraction.
        let props = |extra: Vec<u8>| msg(4, &[msg(1, &[s(5, "object"), extra])]);
        let crd = |extra: Vec<u8>| body("apiextensions.k8s.io/v1", "CustomResourceDefinition", &[msg(2, &[msg(7, &[s(1, "v1"), props(extra)])])]);
        let schema = |extra: Vec<u8>| decode(&crd(extra)).expect("crd")["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
        assert_eq!(schema(msg(30, &[vi(1, 0)]))["additionalProperties"], json!(false));
        assert_eq!(schema(msg(30, &[]))["additionalProperties"], json!(false));
        assert_eq!(schema(msg(24, &[msg(2, &[s(5, "string")]), msg(2, &[s(5, "integer")])]))["items"], json!([{ "type": "string" }, { "type": "integer" }]));
        assert_eq!(schema(entry(32, "a", &[s(2, "b"), s(2, "c")].concat()))["dependencies"], json!({ "a": ["b", "c"] }));
        let mut max = vec![9 << 3 | 1];
        max.extend(1.5f64.to_le_bytes());
        assert_eq!(schema(max)["maximum"], json!(1.5));
    }
}
