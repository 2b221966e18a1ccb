//! A JSON object's members as borrowed raw JSON: change a few of them and write the object
//! again without decoding the rest into `serde_json::Value` trees (the hot paths: the watch
//! cache stamping `resourceVersion`, `pods/binding`).
//!
//! Members are kept in a `BTreeMap`, so the object is written with its keys sorted, as a
//! `Value` (no `preserve_order`) writes them: an object strata stored comes out byte for byte
//! as decoding it into a `Value`, changing the same members and encoding it would.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserializer, Visitor};
use serde_json::value::RawValue;

/// A member's name, borrowed from the input unless it has escapes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key<'a>(pub Cow<'a, str>);

impl Key<'static> {
    pub const fn of(name: &'static str) -> Self {
        Key(Cow::Borrowed(name))
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

impl serde::Serialize for Key<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An object's members, each still raw JSON borrowed from the input. A repeated member keeps
/// its last value, as decoding into a `Value` does.
pub type Members<'a> = BTreeMap<Key<'a>, Cow<'a, RawValue>>;

/// The members of a JSON object; `None` if it is not one.
pub fn members(json: &str) -> Option<Members<'_>> {
    let raw: BTreeMap<Key, &RawValue> = serde_json::from_str(json).ok()?;
    Some(raw.into_iter().map(|(k, v)| (k, Cow::Borrowed(v))).collect())
}

/// The members of the JSON object in `json` (bytes); `None` if it is not one (or not UTF-8).
pub fn members_of_slice(json: &[u8]) -> Option<Members<'_>> {
    members(std::str::from_utf8(json).ok()?)
}

/// One member's value, raw.
pub fn get<'m>(m: &'m Members<'_>, name: &'static str) -> Option<&'m RawValue> {
    m.get(&Key::of(name)).map(|v| v.as_ref())
}

/// Set a member to `value` (serialized; `None` only if it cannot be).
pub fn set<T: serde::Serialize + ?Sized>(m: &mut Members<'_>, name: &'static str, value: &T) -> Option<()> {
    m.insert(Key::of(name), Cow::Owned(serde_json::value::to_raw_value(value).ok()?));
    Some(())
}

/// The object written out again.
pub fn to_raw(m: &Members<'_>) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(m).ok()
}

/// The object written out again, as bytes.
pub fn to_vec(m: &Members<'_>) -> Option<Vec<u8>> {
    serde_json::to_vec(m).ok()
}
