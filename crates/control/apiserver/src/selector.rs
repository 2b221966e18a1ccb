//! Label and field selectors, with the grammar of `kubectl -l` and `--field-selector`.

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector(Vec<Req>);

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() || !out.is_empty() {
        out.push(cur);
    }
    out
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s) {
            let p = part.trim();
            if p.is_empty() {
                return Err(format!("invalid label selector {s:?}: empty requirement"));
            }
            let bad = || format!("unable to parse requirement: {p:?}");
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(bad)?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
            };
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(k.trim().to_string())
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some(i) = p.find(" notin ") {
                Req::NotIn(p[..i].trim().into(), set(&p[i + 7..])?)
            } else if let Some(i) = p.find(" in ") {
                Req::In(p[..i].trim().into(), set(&p[i + 4..])?)
            } else {
                Req::Exists(p.to_string())
            };
            let key = match &req {
                Req::Eq(k, _) | Req::NotEq(k, _) | Req::In(k, _) | Req::NotIn(k, _) | Req::Exists(k) | Req::NotExists(k) => k,
            };
            if !valid_key(key) {
                return Err(bad());
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Does an object (its `metadata.labels`) match?
    pub fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A field selector over the fields Kubernetes supports for the built-in kinds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Fields every kind supports, plus per-kind ones.
fn supported(kind: &str, field: &str) -> bool {
    matches!(field, "metadata.name" | "metadata.namespace")
        || matches!((kind, field), ("Pod", "spec.nodeName" | "status.phase" | "spec.restartPolicy" | "spec.schedulerName" | "spec.serviceAccountName" | "status.podIP"))
        || matches!((kind, field), ("Event", "involvedObject.name" | "involvedObject.kind" | "involvedObject.namespace" | "involvedObject.uid" | "reason" | "type"))
        || matches!((kind, field), ("Secret", "type") | ("Namespace", "status.phase") | ("Node", "spec.unschedulable"))
}

/// Every field path a field selector may name, for any kind.
const SELECTABLE: &[&str] = &[
    "spec.nodeName", "status.phase", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "status.podIP",
    "involvedObject.name", "involvedObject.kind", "involvedObject.namespace", "involvedObject.uid", "reason", "type",
    "spec.unschedulable",
];

/// The fields of built-in kinds a field selector may name (what [`attributes`] copies besides
/// the name, namespace and labels).
pub fn selectable_fields() -> impl Iterator<Item = &'static str> {
    SELECTABLE.iter().copied()
}

/// The selectable fields that are booleans: upstream's field sets hold Go values, so one left out
/// of an object is `false`, not "".
const BOOLEAN: &[&str] = &["spec.unschedulable"];

/// What selectors read of an object: its name, namespace and labels and the fields a field
/// selector may name, copied out of the object (the watch cache keeps this per object instead
/// of the whole parsed object). Both selectors match it as they match the whole object.
pub fn attributes(obj: &Value) -> Value {
    let meta = &obj["metadata"];
    let mut out = serde_json::json!({ "metadata": { "name": meta["name"], "namespace": meta["namespace"], "labels": meta["labels"] } });
    // A custom object's kind's selectableFields.
    let custom = if obj["apiVersion"].as_str().is_some_and(|v| v.contains('.')) { crate::crd::selectable_paths(obj) } else { Vec::new() };
    for path in SELECTABLE.iter().copied().chain(custom.iter().map(String::as_str)) {
        let mut v = obj;
        for part in path.split('.') {
            v = &v[part];
        }
        if v.is_null() {
            continue;
        }
        let mut at = &mut out;
        let parts: Vec<&str> = path.split('.').collect();
        for part in &parts[..parts.len() - 1] {
            at = &mut at[*part];
        }
        at[parts[parts.len() - 1]] = v.clone();
    }
    out
}

impl FieldSelector {
    pub fn parse(s: &str, kind: &str) -> Result<Self, String> {
        Self::parse_with(s, |field| if supported(kind, field) { Ok(()) } else { Err(format!("field label not supported: {field}")) })
    }

    /// A selector on resource `r`'s fields: a custom kind's are `metadata.name`,
    /// `metadata.namespace` and its version's `selectableFields` (the error names them).
    pub fn parse_for(r: &crate::resources::Resource, s: &str) -> Result<Self, String> {
        if !r.custom {
            return Self::parse(s, r.builtin());
        }
        let extra = crate::crd::selectable_fields(r);
        Self::parse_with(s, |field| {
            if matches!(field, "metadata.name" | "metadata.namespace") || extra.iter().any(|f| f == field) {
                return Ok(());
            }
            let allowed: Vec<&str> = ["metadata.name", "metadata.namespace"].into_iter().chain(extra.iter().map(String::as_str)).collect();
            Err(format!("field label not supported: {field} (the selectable fields of {}.{} {} are: {})", r.plural, r.group, r.version, allowed.join(", ")))
        })
    }

    fn parse_with(s: &str, allowed: impl Fn(&str) -> Result<(), String>) -> Result<Self, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, eq, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid selector: '{part}'; can't understand '{part}'"));
            };
            let field = field.trim();
            allowed(field)?;
            out.push((field.to_string(), eq, value.trim().to_string()));
        }
        Ok(Self(out))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, eq, want)| {
            let mut v = obj;
            for part in field.split('.') {
                v = &v[part];
            }
            let have = match v {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Null if BOOLEAN.contains(&field.as_str()) => "false".to_string(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(sel: &str, labels: Value, want: bool) {
        let s = LabelSelector::parse(sel).expect(sel);
        assert_eq!(s.matches(&json!({"metadata": {"labels": labels}})), want, "{sel}");
    }

    #[test]
    fn label_selectors() {
        check("app=web", json!({"app": "web"}), true);
        check("app==web,tier!=db", json!({"app": "web", "tier": "fe"}), true);
        check("app in (web, api)", json!({"app": "api"}), true);
        check("app notin (web,api)", json!({"app": "api"}), false);
        check("app notin (web)", json!({}), true);
        check("app,!legacy", json!({"app": "x"}), true);
        check("!app", json!({"app": "x"}), false);
        check("app=web", json!({}), false);
        for bad in ["app in web", "a b c", ",", "x=y,,z"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", "Pod").expect("ok").matches(&pod));
        assert!(!FieldSelector::parse("metadata.name=q", "Pod").expect("ok").matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName=", "Pod").expect("ok").matches(&json!({"spec": {}})));
        assert!(FieldSelector::parse("spec.foo=1", "Pod").expect_err("unsupported").contains("not supported"));
        assert!(FieldSelector::parse("spec.nodeName=x", "ConfigMap").is_err());
    }

    /// A boolean field left out of an object is Go's false, as upstream's field sets have it:
    /// the e2e framework finds its nodes with `spec.unschedulable=false`, and a Node without
    /// `spec.unschedulable` must match.
    #[test]
    fn absent_boolean_fields_select_as_false() {
        let node = json!({"metadata": {"name": "n1"}, "spec": {}});
        let sel = |s: &str| FieldSelector::parse(s, "Node").expect("ok");
        assert!(sel("spec.unschedulable=false").matches(&node));
        assert!(sel("spec.unschedulable==false").matches(&attributes(&node)));
        assert!(!sel("spec.unschedulable=true").matches(&node));
        assert!(sel("spec.unschedulable!=true").matches(&node));
        assert!(!sel("spec.unschedulable!=false").matches(&node));
        let cordoned = json!({"metadata": {"name": "n2"}, "spec": {"unschedulable": true}});
        assert!(sel("spec.unschedulable=true").matches(&cordoned));
        assert!(!sel("spec.unschedulable=false").matches(&attributes(&cordoned)));
    }

    #[test]
    fn attributes_match_as_the_object_does() {
        let pod = json!({"metadata": {"name": "p", "namespace": "n", "labels": {"app": "web"}, "annotations": {"a": "b"}},
                         "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}, "status": {"phase": "Running"}});
        let a = attributes(&pod);
        assert!(a["spec"]["containers"].is_null() && a["metadata"]["annotations"].is_null(), "{a}");
        for sel in ["spec.nodeName=n1", "spec.nodeName!=n1", "status.phase=Running,metadata.name=p", "metadata.namespace=m", "spec.nodeName="] {
            let f = FieldSelector::parse(sel, "Pod").expect(sel);
            assert_eq!(f.matches(&a), f.matches(&pod), "{sel}");
        }
        for sel in ["app=web", "app!=web", "!app", "tier"] {
            let l = LabelSelector::parse(sel).expect(sel);
            assert_eq!(l.matches(&a), l.matches(&pod), "{sel}");
        }
    }
}
