//! Label selectors (`metav1.LabelSelector`) and node selector terms (`NodeSelectorTerm`,
//! with `Gt`/`Lt` and `matchFields` on `metadata.name`), matched as apimachinery does.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, TopologySelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

pub type Labels = BTreeMap<String, String>;

static EMPTY: std::sync::OnceLock<Labels> = std::sync::OnceLock::new();

pub fn empty() -> &'static Labels {
    EMPTY.get_or_init(Labels::new)
}

/// A parsed `LabelSelector`. `None` of [`Selector::parse`] (a nil selector) matches nothing; an
/// empty one matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selector {
    reqs: Vec<Req>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Req {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    /// An operator this server does not know: matches nothing (as a selector that fails to
    /// convert in upstream).
    Never,
}

impl Selector {
    pub fn parse(s: &LabelSelector) -> Selector {
        let mut reqs = Vec::new();
        for (k, v) in s.match_labels.iter().flatten() {
            reqs.push(Req::In(k.clone(), vec![v.clone()]));
        }
        for e in s.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            reqs.push(match e.operator.as_str() {
                "In" => Req::In(e.key.clone(), values),
                "NotIn" => Req::NotIn(e.key.clone(), values),
                "Exists" => Req::Exists(e.key.clone()),
                "DoesNotExist" => Req::DoesNotExist(e.key.clone()),
                _ => Req::Never,
            });
        }
        Selector { reqs }
    }

    /// A selector that matches nothing (a nil `LabelSelector` in a term).
    pub fn nothing() -> Selector {
        Selector { reqs: vec![Req::Never] }
    }

    /// `key in (v)` for each pair (a selector from a Service's or a Deployment's `matchLabels`).
    pub fn from_map(m: &Labels) -> Selector {
        Selector { reqs: m.iter().map(|(k, v)| Req::In(k.clone(), vec![v.clone()])).collect() }
    }

    /// Also require `key in (value)` (matchLabelKeys, merged selectors).
    pub fn add_equals(&mut self, key: &str, value: &str) {
        self.reqs.push(Req::In(key.to_string(), vec![value.to_string()]));
    }

    /// Add every requirement of `other`.
    pub fn extend(&mut self, other: &Selector) {
        self.reqs.extend(other.reqs.iter().cloned());
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// An equality requirement every matching label set meets (`key in (values)`), to look
    /// candidates up by label instead of scanning; `None` when there is none.
    pub fn narrowing(&self) -> Option<(&str, &[String])> {
        self.reqs.iter().find_map(|r| match r {
            Req::In(k, vs) => Some((k.as_str(), vs.as_slice())),
            _ => None,
        })
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.reqs.iter().all(|r| match r {
            Req::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Req::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Req::Exists(k) => labels.contains_key(k),
            Req::DoesNotExist(k) => !labels.contains_key(k),
            Req::Never => false,
        })
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), [limit]) = (value, values) else { return false };
            let (Ok(v), Ok(limit)) = (v.parse::<i64>(), limit.parse::<i64>()) else { return false };
            if r.operator == "Gt" {
                v > limit
            } else {
                v < limit
            }
        }
        _ => false,
    }
}

/// One term: all its expressions and fields hold. An empty term matches nothing (upstream).
pub fn term_matches(t: &NodeSelectorTerm, node_name: &str, labels: &Labels) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let name = node_name.to_string();
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)))
}

/// A `NodeSelector`: any of its terms.
pub fn node_selector_matches(s: &NodeSelector, node_name: &str, labels: &Labels) -> bool {
    s.node_selector_terms.iter().any(|t| term_matches(t, node_name, labels))
}

/// A StorageClass's `allowedTopologies`: no term allows every node; otherwise any term whose
/// every `key In values` holds (a term without expressions, or with an expression without
/// values, allows nothing), as upstream's `MatchTopologySelectorTerms`.
pub fn topology_allows(terms: &[TopologySelectorTerm], labels: &Labels) -> bool {
    terms.is_empty()
        || terms.iter().any(|t| {
            let exprs = t.match_label_expressions.as_deref().unwrap_or_default();
            !exprs.is_empty() && exprs.iter().all(|e| !e.values.is_empty() && labels.get(&e.key).is_some_and(|v| e.values.contains(v)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn allowed_topologies_as_upstream() {
        use k8s_openapi::api::core::v1::TopologySelectorLabelRequirement;
        let term = |exprs: Vec<(&str, Vec<&str>)>| TopologySelectorTerm {
            match_label_expressions: Some(exprs.into_iter().map(|(k, vs)| TopologySelectorLabelRequirement { key: k.into(), values: vs.into_iter().map(String::from).collect() }).collect()),
        };
        let n = labels(&[("zone", "a"), ("disk", "ssd")]);
        assert!(topology_allows(&[], &n), "no terms: everywhere");
        assert!(topology_allows(&[term(vec![("zone", vec!["b"])]), term(vec![("zone", vec!["a", "c"]), ("disk", vec!["ssd"])])], &n), "any term");
        assert!(!topology_allows(&[term(vec![("zone", vec!["a"]), ("disk", vec!["hdd"])])], &n), "every expression of a term");
        assert!(!topology_allows(&[term(vec![("rack", vec!["1"])])], &n), "a missing label");
        assert!(!topology_allows(&[term(vec![])], &n), "an empty term allows nothing");
        assert!(!topology_allows(&[term(vec![("zone", vec![])])], &n), "an expression without values allows nothing");
    }

    #[test]
    fn label_selectors() {
        let s = Selector::parse(&LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement { key: "tier".into(), operator: "NotIn".into(), values: Some(vec!["db".into()]) }]),
        });
        assert!(s.matches(&labels(&[("app", "web")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "db")])));
        assert!(!s.matches(&labels(&[])));
        assert!(Selector::parse(&LabelSelector::default()).matches(&labels(&[])));
    }

    #[test]
    fn node_selector_terms() {
        let req = |k: &str, op: &str, v: &[&str]| NodeSelectorRequirement { key: k.into(), operator: op.into(), values: Some(v.iter().map(|s| s.to_string()).collect()) };
        let t = NodeSelectorTerm { match_expressions: Some(vec![req("cores", "Gt", &["4"]), req("zone", "In", &["a", "b"])]), match_fields: None };
        assert!(term_matches(&t, "n", &labels(&[("cores", "8"), ("zone", "a")])));
        assert!(!term_matches(&t, "n", &labels(&[("cores", "4"), ("zone", "a")])));
        let f = NodeSelectorTerm { match_expressions: None, match_fields: Some(vec![req("metadata.name", "In", &["n1"])]) };
        assert!(term_matches(&f, "n1", &labels(&[])));
        assert!(!term_matches(&f, "n2", &labels(&[])));
        assert!(!term_matches(&NodeSelectorTerm::default(), "n1", &labels(&[])));
    }
}
