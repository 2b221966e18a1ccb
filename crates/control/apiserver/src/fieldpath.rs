//! Field sets: the paths of an object's fields that one manager owns, and their `FieldsV1`
//! encoding in `metadata.managedFields` (structured-merge-diff's `fieldpath` package).
//!
//! A path is a list of [`Pe`]s: a field name (`f:spec`), the key of an item of an associative
//! list (`k:{"name":"web"}`), the value of an item of a set (`v:"example.com/a"`) or an index
//! (`i:0`, never produced here, only read). A [`Set`] is a tree: the paths that are members,
//! and the children under which deeper members live. In `FieldsV1` a member with children
//! carries `".": {}`. Elements sort as upstream sorts them (names, then keys, then values, then
//! indexes; values numbers first, then strings, booleans, lists, maps, null), so an encoded set
//! reads like the ones a Kubernetes API server writes.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

/// One step of a path.
#[derive(Clone, Debug)]
pub enum Pe {
    /// A field of a struct or a key of a map.
    Field(String),
    /// The item of an associative list with these key fields (sorted by name).
    Key(Vec<(String, Value)>),
    /// The item of a set with this value.
    Value(Value),
    /// The item at this index (read from `FieldsV1` only).
    Index(usize),
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Number(_) => 0,
        Value::String(_) => 1,
        Value::Bool(_) => 2,
        Value::Array(_) => 3,
        Value::Object(_) => 4,
        Value::Null => 5,
    }
}

/// structured-merge-diff's total order of values: numbers (compared numerically) first, then
/// strings, booleans, lists, maps and null.
pub fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x.as_f64().unwrap_or(0.0).partial_cmp(&y.as_f64().unwrap_or(0.0)).unwrap_or(Ordering::Equal),
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (l, r) in x.iter().zip(y) {
                match cmp_values(l, r) {
                    Ordering::Equal => {}
                    other => return other,
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((lk, lv), (rk, rv)) in x.iter().zip(y) {
                match lk.cmp(rk).then_with(|| cmp_values(lv, rv)) {
                    Ordering::Equal => {}
                    other => return other,
                }
            }
            x.len().cmp(&y.len())
        }
        _ => rank(a).cmp(&rank(b)),
    }
}

fn cmp_keys(a: &[(String, Value)], b: &[(String, Value)]) -> Ordering {
    for ((ln, lv), (rn, rv)) in a.iter().zip(b) {
        match ln.cmp(rn).then_with(|| cmp_values(lv, rv)) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    a.len().cmp(&b.len())
}

impl Ord for Pe {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Pe::Field(a), Pe::Field(b)) => a.cmp(b),
            (Pe::Key(a), Pe::Key(b)) => cmp_keys(a, b),
            (Pe::Value(a), Pe::Value(b)) => cmp_values(a, b),
            (Pe::Index(a), Pe::Index(b)) => a.cmp(b),
            _ => self.kind().cmp(&other.kind()),
        }
    }
}

impl PartialOrd for Pe {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pe {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pe {}

/// Go's `%v` of a value in a path (strings quoted).
fn value_string(v: &Value) -> String {
    match v {
        Value::Array(items) => format!("[{}]", items.iter().map(value_string).collect::<Vec<_>>().join(",")),
        Value::Object(m) => m.iter().map(|(k, v)| format!("{k}={}", value_string(v))).collect(),
        other => other.to_string(),
    }
}

impl Pe {
    fn kind(&self) -> u8 {
        match self {
            Pe::Field(_) => 0,
            Pe::Key(_) => 1,
            Pe::Value(_) => 2,
            Pe::Index(_) => 3,
        }
    }

    /// The `FieldsV1` key of this element.
    pub fn encode(&self) -> String {
        match self {
            Pe::Field(name) => format!("f:{name}"),
            Pe::Key(fields) => {
                let m: Map<String, Value> = fields.iter().cloned().collect();
                format!("k:{}", Value::Object(m))
            }
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    /// Parse a `FieldsV1` key; `None` for an element type this server does not know (skipped,
    /// as upstream skips them).
    pub fn decode(s: &str) -> Result<Option<Pe>, FieldsError> {
        let bad = |why: String| FieldsError::Element { element: s.to_string(), why };
        let (kind, rest) = match s.split_at_checked(2) {
            Some((kind, rest)) if kind.ends_with(':') => (kind, rest),
            _ => return Err(bad("missing colon".into())),
        };
        Ok(Some(match kind {
            "f:" => Pe::Field(rest.to_string()),
            "v:" => Pe::Value(serde_json::from_str(rest).map_err(|e| bad(e.to_string()))?),
            "k:" => {
                let m: Map<String, Value> = serde_json::from_str(rest).map_err(|e| bad(e.to_string()))?;
                Pe::Key(m.into_iter().collect())
            }
            "i:" => Pe::Index(rest.parse().map_err(|e: std::num::ParseIntError| bad(e.to_string()))?),
            _ => return Ok(None),
        }))
    }
}

impl std::fmt::Display for Pe {
    /// structured-merge-diff's `PathElement.String`: `.spec`, `[name="web"]`, `[="a"]`, `[0]`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pe::Field(name) => write!(f, ".{name}"),
            Pe::Key(fields) => {
                let parts: Vec<String> = fields.iter().map(|(n, v)| format!("{n}={}", value_string(v))).collect();
                write!(f, "[{}]", parts.join(","))
            }
            Pe::Value(v) => write!(f, "[={}]", value_string(v)),
            Pe::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A path as conflicts print it: `.spec.template.spec.containers[name="web"].image`.
pub fn path_string(path: &[Pe]) -> String {
    path.iter().map(ToString::to_string).collect()
}

/// Why a `FieldsV1` value could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FieldsError {
    #[error("FieldsV1 must be a JSON object, got {0}")]
    NotAnObject(String),
    #[error("parsing {element:?} as a path element: {why}")]
    Element { element: String, why: String },
}

/// A set of paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set {
    members: BTreeSet<Pe>,
    /// Never holds an empty set.
    children: BTreeMap<Pe, Set>,
}

impl Set {
    pub fn new() -> Set {
        Set::default()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.children.is_empty()
    }

    pub fn insert(&mut self, path: &[Pe]) {
        match path {
            [] => {}
            [last] => {
                self.members.insert(last.clone());
            }
            [first, rest @ ..] => match self.children.get_mut(first) {
                Some(child) => child.insert(rest),
                None => self.children.entry(first.clone()).or_default().insert(rest),
            },
        }
    }

    /// Add every path of `other` (the union, without copying either side).
    pub fn merge(&mut self, other: Set) {
        if self.is_empty() {
            *self = other;
            return;
        }
        self.members.extend(other.members);
        for (pe, c) in other.children {
            match self.children.get_mut(&pe) {
                Some(mine) => mine.merge(c),
                None => {
                    self.children.insert(pe, c);
                }
            }
        }
    }

    /// Remove the field `name` and everything below it.
    pub fn remove_field(&mut self, name: &str) {
        let pe = Pe::Field(name.to_string());
        self.members.remove(&pe);
        self.children.remove(&pe);
    }

    pub fn has(&self, path: &[Pe]) -> bool {
        match path {
            [] => false,
            [last] => self.members.contains(last),
            [first, rest @ ..] => self.children.get(first).is_some_and(|c| c.has(rest)),
        }
    }

    /// Whether the path of one element is a member.
    pub fn is_member(&self, pe: &Pe) -> bool {
        self.members.contains(pe)
    }

    /// The members below `pe`, if any.
    pub fn child(&self, pe: &Pe) -> Option<&Set> {
        self.children.get(pe)
    }

    pub fn members(&self) -> impl Iterator<Item = &Pe> {
        self.members.iter()
    }

    pub fn children(&self) -> impl Iterator<Item = (&Pe, &Set)> {
        self.children.iter()
    }

    /// Make `pe` a member (with its children, if any, kept).
    pub fn insert_member(&mut self, pe: Pe) {
        self.members.insert(pe);
    }

    /// Set the children under `pe` (dropped when empty).
    pub fn set_child(&mut self, pe: Pe, child: Set) {
        if child.is_empty() {
            self.children.remove(&pe);
        } else {
            self.children.insert(pe, child);
        }
    }

    pub fn union(&self, other: &Set) -> Set {
        if other.is_empty() {
            return self.clone();
        }
        if self.is_empty() {
            return other.clone();
        }
        let mut out = self.clone();
        out.members.extend(other.members.iter().cloned());
        for (pe, c) in &other.children {
            let merged = match out.children.get(pe) {
                Some(mine) => mine.union(c),
                None => c.clone(),
            };
            out.children.insert(pe.clone(), merged);
        }
        out
    }

    /// The paths of `self` that are not paths of `other` (children of paths of `other` stay).
    pub fn difference(&self, other: &Set) -> Set {
        let mut out = Set { members: self.members.difference(&other.members).cloned().collect(), children: BTreeMap::new() };
        for (pe, c) in &self.children {
            let rest = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            out.set_child(pe.clone(), rest);
        }
        out
    }

    /// [`Set::difference`] in place: the paths of `other` leave `self`.
    pub fn remove_paths(&mut self, other: &Set) {
        for m in &other.members {
            self.members.remove(m);
        }
        for (pe, o) in &other.children {
            if let Some(c) = self.children.get_mut(pe) {
                c.remove_paths(o);
                if c.is_empty() {
                    self.children.remove(pe);
                }
            }
        }
    }

    pub fn intersection(&self, other: &Set) -> Set {
        let mut out = Set { members: self.members.intersection(&other.members).cloned().collect(), children: BTreeMap::new() };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                out.set_child(pe.clone(), c.intersection(o));
            }
        }
        out
    }

    /// Without the field `name` and everything below it (upstream's `RecursiveDifference`
    /// with one top-level path).
    pub fn without_field(&self, name: &str) -> Set {
        let pe = Pe::Field(name.to_string());
        let mut out = self.clone();
        out.members.remove(&pe);
        out.children.remove(&pe);
        out
    }

    /// Only the field `name` and what is below it.
    pub fn only_field(&self, name: &str) -> Set {
        let pe = Pe::Field(name.to_string());
        let mut out = Set::new();
        if self.members.contains(&pe) {
            out.members.insert(pe.clone());
        }
        if let Some(c) = self.children.get(&pe) {
            out.children.insert(pe, c.clone());
        }
        out
    }

    /// Every member path, members of a level before its children (upstream's `Iterate`).
    pub fn paths(&self) -> Vec<Vec<Pe>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
        for m in &self.members {
            let mut p = prefix.clone();
            p.push(m.clone());
            out.push(p);
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    /// The `FieldsV1` form: `{"f:spec":{"f:replicas":{}}}`, with `".": {}` for a member that
    /// also has children.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        for pe in &self.members {
            if !self.children.contains_key(pe) {
                m.insert(pe.encode(), Value::Object(Map::new()));
            }
        }
        for (pe, c) in &self.children {
            let mut inner = match c.to_fields_v1() {
                Value::Object(inner) => inner,
                _ => Map::new(),
            };
            if self.members.contains(pe) {
                inner.insert(".".into(), Value::Object(Map::new()));
            }
            m.insert(pe.encode(), Value::Object(inner));
        }
        Value::Object(m)
    }

    /// Read a `FieldsV1` value (upstream's `FromJSON`).
    pub fn from_fields_v1(v: &Value) -> Result<Set, FieldsError> {
        let Value::Object(m) = v else {
            return Err(FieldsError::NotAnObject(v.to_string()));
        };
        let mut set = Set::new();
        for (k, child) in m {
            if k == "." {
                continue;
            }
            let Some(pe) = Pe::decode(k)? else { continue };
            let Value::Object(inner) = child else {
                return Err(FieldsError::NotAnObject(child.to_string()));
            };
            let grandchildren = Set::from_fields_v1(child)?;
            // An empty object, or one with ".", makes the path a member.
            if inner.is_empty() || inner.contains_key(".") || grandchildren.is_empty() {
                set.members.insert(pe.clone());
            }
            set.set_child(pe, grandchildren);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(name: &str) -> Pe {
        Pe::Field(name.into())
    }

    #[test]
    fn merging_is_the_union() {
        let sets = [
            json!({}),
            json!({"f:a": {}, "f:spec": {"f:x": {}, "f:list": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}}}}}),
            json!({"f:spec": {"f:y": {}, "f:list": {"k:{\"name\":\"c\"}": {"f:env": {}}, "k:{\"name\":\"d\"}": {".": {}}}}, "f:status": {"f:phase": {}}}),
            json!({"f:spec": {".": {}, "f:x": {"f:deeper": {}}}}),
        ];
        for a in &sets {
            for b in &sets {
                let (a, b) = (Set::from_fields_v1(a).expect("a"), Set::from_fields_v1(b).expect("b"));
                let mut merged = a.clone();
                merged.merge(b.clone());
                assert_eq!(merged, a.union(&b));
                assert_eq!(merged, b.union(&a));
                let mut without = merged.clone();
                without.remove_field("spec");
                assert_eq!(without, merged.without_field("spec"));
            }
        }
    }

    #[test]
    fn fields_v1_round_trips_the_kubernetes_encoding() {
        // What a Kubernetes API server stores for `kubectl apply --server-side` of a Deployment.
        let v1 = json!({
            "f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                        ".": {}, "f:image": {}, "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        });
        let set = Set::from_fields_v1(&v1).expect("decode");
        let web = Pe::Key(vec![("name".into(), json!("web"))]);
        let containers = [f("spec"), f("template"), f("spec"), f("containers")];
        let item: Vec<Pe> = containers.iter().cloned().chain([web.clone()]).collect();
        assert!(set.has(&item), "the item is a member (\".\")");
        assert!(set.has(&[f("spec"), f("replicas")]));
        assert!(!set.has(&[f("spec")]), "intermediate fields are not members");
        let port = Pe::Key(vec![("containerPort".into(), json!(80)), ("protocol".into(), json!("TCP"))]);
        let port_path: Vec<Pe> = item.iter().cloned().chain([f("ports"), port, f("containerPort")]).collect();
        assert!(set.has(&port_path));
        assert_eq!(set.to_fields_v1(), v1);
        assert_eq!(path_string(&port_path), ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"].containerPort");
        // Sets of primitives and member order: fields, then keys, then values.
        let mut s = Set::new();
        s.insert(&[f("metadata"), f("finalizers"), Pe::Value(json!("b"))]);
        s.insert(&[f("metadata"), f("finalizers"), Pe::Value(json!("a"))]);
        assert_eq!(s.to_fields_v1().to_string(), r#"{"f:metadata":{"f:finalizers":{"v:\"a\"":{},"v:\"b\"":{}}}}"#);
        assert_eq!(path_string(&[f("metadata"), f("finalizers"), Pe::Value(json!("a"))]), ".metadata.finalizers[=\"a\"]");
        // Errors and unknown element types.
        assert!(Set::from_fields_v1(&json!({"x": {}})).is_err());
        assert!(Set::from_fields_v1(&json!({"k:{bad": {}})).is_err());
        assert!(Set::from_fields_v1(&json!([])).is_err());
        assert_eq!(Set::from_fields_v1(&json!({"z:future": {}, "f:a": {}})).expect("skip").paths(), vec![vec![f("a")]]);
    }

    #[test]
    fn set_algebra() {
        let mut a = Set::new();
        a.insert(&[f("spec"), f("replicas")]);
        a.insert(&[f("spec"), f("paused")]);
        a.insert(&[f("metadata"), f("labels"), f("app")]);
        let mut b = Set::new();
        b.insert(&[f("spec"), f("replicas")]);
        b.insert(&[f("status")]);
        assert_eq!(a.intersection(&b).paths(), vec![vec![f("spec"), f("replicas")]]);
        let d = a.difference(&b);
        assert!(!d.has(&[f("spec"), f("replicas")]) && d.has(&[f("spec"), f("paused")]));
        let u = a.union(&b);
        assert_eq!(u.paths().len(), 4);
        assert_eq!(u.without_field("spec").paths().len(), 2);
        assert_eq!(u.only_field("status").paths(), vec![vec![f("status")]]);
        // Emptied children disappear: the difference with itself is empty.
        assert!(a.difference(&a).is_empty());
        assert_eq!(a.difference(&a), Set::new());
        // Numbers compare numerically inside keys and values.
        assert!(Pe::Value(json!(9)) < Pe::Value(json!(10)) && Pe::Value(json!(10)) < Pe::Value(json!("1")));
    }
}
