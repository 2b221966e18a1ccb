//! RBAC as Kubernetes evaluates it: request attributes, rule matching (`*`, subresources,
//! resourceNames, nonResourceURLs), rule coverage for escalation prevention (upstream's
//! `validation.Covers`, `BreakdownRule`, `CompactRules` and `CompactString`), and an in-memory
//! index of every Role, ClusterRole and binding, kept current by a watch on the store (so that
//! authorizing a request reads no store key).
//!
//! The index also runs the ClusterRole aggregation loop (upstream's
//! clusterrole-aggregation-controller): a ClusterRole with an `aggregationRule` gets the union
//! of the rules of every ClusterRole its selectors match.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use strata_store::{EventKind, Store};

use crate::auth::User;

/// The group of the RBAC kinds, and their storage prefix.
pub const GROUP: &str = "rbac.authorization.k8s.io";
const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// The group every request of `system:masters` is allowed in (upstream's privileged group).
pub const MASTERS: &str = "system:masters";

/// One `PolicyRule`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default, deserialize_with = "nullable")]
    pub verbs: Vec<String>,
    #[serde(default, deserialize_with = "nullable", rename = "apiGroups", skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, deserialize_with = "nullable", skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(default, deserialize_with = "nullable", rename = "nonResourceURLs", skip_serializing_if = "Vec::is_empty")]
    pub non_resource_urls: Vec<String>,
}

fn nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

/// The rules of a role object (`rules: null` is none).
pub fn rules_of(obj: &Value) -> Vec<PolicyRule> {
    obj["rules"].as_array().map(|a| a.iter().filter_map(|r| serde_json::from_value(r.clone()).ok()).collect()).unwrap_or_default()
}

/// What a request asks to do (upstream's `authorizer.Attributes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub kind: Target,
    /// The request's `fieldSelector` (list and watch), which the Node authorizer reads.
    pub field_selector: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Resource { group: String, resource: String, subresource: String, namespace: String, name: String },
    NonResource { path: String },
}

impl Attributes {
    pub fn resource(verb: &str, group: &str, resource: &str, subresource: &str, namespace: &str, name: &str) -> Self {
        Self {
            verb: verb.into(),
            kind: Target::Resource {
                group: group.into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: namespace.into(),
                name: name.into(),
            },
            field_selector: String::new(),
        }
    }

    pub fn non_resource(verb: &str, path: &str) -> Self {
        Self { verb: verb.into(), kind: Target::NonResource { path: path.into() }, field_selector: String::new() }
    }

    pub fn namespace(&self) -> &str {
        match &self.kind {
            Target::Resource { namespace, .. } => namespace,
            Target::NonResource { .. } => "",
        }
    }

    /// Upstream's forbidden message (`responsewriters.forbiddenMessage`) wrapped as
    /// `apierrors.NewForbidden` wraps it.
    pub fn forbidden_message(&self, user: &str) -> String {
        match &self.kind {
            Target::NonResource { path } => format!("forbidden: User {} cannot {} path {}", q(user), self.verb, q(path)),
            Target::Resource { group, resource, subresource, namespace, name } => {
                let combined = if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
                let scope = if namespace.is_empty() { "at the cluster scope".to_string() } else { format!("in the namespace {}", q(namespace)) };
                let inner = format!("User {} cannot {} resource {} in API group {} {scope}", q(user), self.verb, q(&combined), q(group));
                let gr = if group.is_empty() { resource.clone() } else { format!("{resource}.{group}") };
                if name.is_empty() {
                    format!("{gr} is forbidden: {inner}")
                } else {
                    format!("{gr} {} is forbidden: {inner}", q(name))
                }
            }
        }
    }
}

/// Go's `%q` of a string, closely enough (JSON escaping).
pub fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn q_list(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| q(s)).collect::<Vec<_>>().join(" "))
}

fn has(set: &[String], want: &str) -> bool {
    set.iter().any(|s| s == want)
}

fn has_all(set: &[String], want: &[String]) -> bool {
    want.iter().all(|w| has(set, w))
}

/// Does `rule` allow the request (upstream's `RuleAllows`)?
pub fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    let verb = has(&rule.verbs, "*") || has(&rule.verbs, &a.verb);
    match &a.kind {
        Target::Resource { group, resource, subresource, name, .. } => {
            let combined = if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
            let group_ok = has(&rule.api_groups, "*") || has(&rule.api_groups, group);
            let resource_ok = rule.resources.iter().any(|r| {
                r == "*"
                    || *r == combined
                    || (!subresource.is_empty() && r.len() == subresource.len() + 2 && r.starts_with("*/") && r.ends_with(subresource.as_str()))
            });
            let name_ok = rule.resource_names.is_empty() || has(&rule.resource_names, name);
            verb && group_ok && resource_ok && name_ok
        }
        Target::NonResource { path } => verb && rule.non_resource_urls.iter().any(|u| non_resource_url_covers(u, path)),
    }
}

fn non_resource_url_covers(owner: &str, path: &str) -> bool {
    owner == "*" || owner == path || (owner.ends_with('*') && path.starts_with(owner.trim_end_matches('*')))
}

/// Split a rule into one rule per verb x group x resource (x name), and per verb x URL
/// (upstream's `BreakdownRule`).
pub fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for g in &rule.api_groups {
        for r in &rule.resources {
            for v in &rule.verbs {
                let one = |names: Vec<String>| PolicyRule { verbs: vec![v.clone()], api_groups: vec![g.clone()], resources: vec![r.clone()], resource_names: names, non_resource_urls: vec![] };
                if rule.resource_names.is_empty() {
                    out.push(one(vec![]));
                } else {
                    out.extend(rule.resource_names.iter().map(|n| one(vec![n.clone()])));
                }
            }
        }
    }
    for u in &rule.non_resource_urls {
        for v in &rule.verbs {
            out.push(PolicyRule { verbs: vec![v.clone()], non_resource_urls: vec![u.clone()], ..Default::default() });
        }
    }
    out
}

fn resource_covers_all(set: &[String], covers: &[String]) -> bool {
    if has(set, "*") || has_all(set, covers) {
        return true;
    }
    covers.iter().all(|path| {
        has(set, path) || path.split_once('/').is_some_and(|(_, sub)| has(set, &format!("*/{sub}")))
    })
}

fn rule_covers(owner: &PolicyRule, sub: &PolicyRule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let resources = resource_covers_all(&owner.resources, &sub.resources);
    let urls = sub.non_resource_urls.iter().all(|p| owner.non_resource_urls.iter().any(|o| non_resource_url_covers_owner(o, p)));
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// Coverage of URLs (upstream's `nonResourceURLCovers`: a bare `*` is a prefix wildcard too).
fn non_resource_url_covers_owner(owner: &str, sub: &str) -> bool {
    owner == sub || (owner.ends_with('*') && sub.starts_with(owner.trim_end_matches('*')))
}

/// Do `owner` rules cover every permission of `servant`? Returns the uncovered atomic rules.
pub fn covers(owner: &[PolicyRule], servant: &[PolicyRule]) -> Vec<PolicyRule> {
    servant.iter().flat_map(breakdown).filter(|sub| !owner.iter().any(|o| rule_covers(o, sub))).collect()
}

/// Merge simple rules (one group, one resource, at most one name) that differ only in verbs
/// (upstream's `CompactRules`).
pub fn compact(rules: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    let mut simple: Vec<PolicyRule> = Vec::new();
    for r in rules {
        let is_simple = r.resource_names.len() <= 1 && r.non_resource_urls.is_empty() && r.api_groups.len() == 1 && r.resources.len() == 1;
        if !is_simple {
            out.push(r.clone());
            continue;
        }
        match simple.iter_mut().find(|s| s.api_groups == r.api_groups && s.resources == r.resources && s.resource_names == r.resource_names) {
            Some(s) => s.verbs.extend(r.verbs.iter().cloned()),
            None => simple.push(r.clone()),
        }
    }
    out.extend(simple);
    out
}

/// A rule as upstream's `CompactString` prints it.
pub fn compact_string(r: &PolicyRule) -> String {
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:{}", q_list(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:{}", q_list(&r.resources)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:{}", q_list(&r.non_resource_urls)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:{}", q_list(&r.resource_names)));
    }
    if !r.verbs.is_empty() {
        parts.push(format!("Verbs:{}", q_list(&r.verbs)));
    }
    format!("{{{}}}", parts.join(", "))
}

/// Upstream's `ConfirmNoEscalation` message for the rules `user` lacks.
pub fn escalation_message(user: &User, missing: &[PolicyRule]) -> String {
    let mut lines: Vec<String> = compact(missing).iter().map(compact_string).collect();
    lines.sort();
    lines.dedup();
    format!(
        "user {} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        q(&user.name),
        q_list(&user.groups),
        lines.join("\n")
    )
}

/// Everything: what an `aggregationRule` may gather (upstream's `fullAuthority`).
pub fn full_authority() -> Vec<PolicyRule> {
    vec![
        PolicyRule { verbs: vec!["*".into()], api_groups: vec!["*".into()], resources: vec!["*".into()], ..Default::default() },
        PolicyRule { verbs: vec!["*".into()], non_resource_urls: vec!["*".into()], ..Default::default() },
    ]
}

/// Does a `metav1.LabelSelector` (matchLabels, matchExpressions) select `labels`? An empty
/// selector selects everything (as an aggregationRule's does upstream; the workload check in
/// [`crate::validate::selector_matches`] selects nothing with one).
pub fn selector_matches(sel: &Value, labels: &Value) -> bool {
    let empty = sel["matchLabels"].as_object().is_none_or(|m| m.is_empty()) && sel["matchExpressions"].as_array().is_none_or(|e| e.is_empty());
    empty || crate::validate::selector_matches(sel, labels)
}

/// Whom one subject of a binding names, compiled once per change of the binding.
#[derive(Debug)]
enum Subject {
    User(String),
    Group(String),
    /// A ServiceAccount, as its user name (`system:serviceaccount:NS:NAME`).
    ServiceAccount(String),
}

impl Subject {
    /// A binding's `subject`; a ServiceAccount subject without a namespace is in the binding's
    /// (`binding_ns`, "" for a ClusterRoleBinding: then it names no one), as upstream. None for
    /// a subject that names no one.
    fn of(subject: &Value, binding_ns: &str) -> Option<Subject> {
        let name = subject["name"].as_str().unwrap_or("");
        match subject["kind"].as_str().unwrap_or("") {
            "User" => Some(Subject::User(name.to_string())),
            "Group" => Some(Subject::Group(name.to_string())),
            "ServiceAccount" => {
                let ns = subject["namespace"].as_str().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
                (!ns.is_empty()).then(|| Subject::ServiceAccount(format!("system:serviceaccount:{ns}:{name}")))
            }
            _ => None,
        }
    }

    fn names(&self, user: &User) -> bool {
        match self {
            Subject::User(name) | Subject::ServiceAccount(name) => *name == user.name,
            Subject::Group(name) => user.groups.iter().any(|g| g == name),
        }
    }
}

/// A RoleBinding or ClusterRoleBinding as authorization reads it (compiled when it changes,
/// so that authorizing a request neither indexes JSON nor formats a name).
#[derive(Debug)]
struct Binding {
    subjects: Vec<Subject>,
    /// The store key of the role its `roleRef` names (None: a roleRef that can name none).
    role: Option<String>,
}

impl Binding {
    fn of(b: &Value, ns: &str) -> Binding {
        let subjects = b["subjects"].as_array().map(|s| s.iter().filter_map(|s| Subject::of(s, ns)).collect()).unwrap_or_default();
        Binding { subjects, role: role_key(&b["roleRef"], ns) }
    }
}

/// The store key of the role `role_ref` names in a binding of namespace `ns` ("" for a
/// ClusterRoleBinding, which cannot name a Role).
fn role_key(role_ref: &Value, ns: &str) -> Option<String> {
    let name = role_ref["name"].as_str().unwrap_or("");
    match role_ref["kind"].as_str() {
        Some("ClusterRole") => Some(format!("{PREFIX}clusterroles/{name}")),
        Some("Role") if !ns.is_empty() => Some(format!("{PREFIX}roles/{ns}/{name}")),
        _ => None,
    }
}

/// The RBAC objects at one revision.
#[derive(Debug, Default)]
struct Snapshot {
    /// The store revision this state is current at (at least).
    revision: u64,
    /// Every object under the RBAC prefix by store key, with its mod revision.
    objects: BTreeMap<String, (Value, u64)>,
    /// The parsed rules of every Role and ClusterRole, by store key (parsed once per change,
    /// not per request).
    rules: HashMap<String, Arc<Vec<PolicyRule>>>,
    /// Every RoleBinding and ClusterRoleBinding, compiled, by store key.
    bindings: BTreeMap<String, Arc<Binding>>,
}

impl Snapshot {
    #[cfg(test)]
    fn get(&self, plural: &str, ns: Option<&str>, name: &str) -> Option<&Value> {
        let key = match ns {
            Some(ns) => format!("{PREFIX}{plural}/{ns}/{name}"),
            None => format!("{PREFIX}{plural}/{name}"),
        };
        self.objects.get(&key).map(|(v, _)| v)
    }

    fn of_kind<'a>(&'a self, plural: &str) -> impl Iterator<Item = (&'a String, &'a Value, u64)> + 'a {
        let prefix = format!("{PREFIX}{plural}/");
        self.objects.range(prefix.clone()..).take_while(move |(k, _)| k.starts_with(&prefix)).map(|(k, (v, rev))| (k, v, *rev))
    }

    /// The rules a roleRef names, or None when the role does not exist.
    fn role_ref_rules(&self, role_ref: &Value, ns: &str) -> Option<Arc<Vec<PolicyRule>>> {
        self.rules.get(&role_key(role_ref, ns)?).cloned()
    }

    /// Record `key`'s object (None: deleted), with its parsed rules if it is a role.
    fn set(&mut self, key: String, value: Option<(Value, u64)>) {
        let rest = key.strip_prefix(PREFIX).unwrap_or("");
        let is_role = rest.starts_with("roles/") || rest.starts_with("clusterroles/");
        // A RoleBinding's namespace is the key's segment after the kind.
        let binding_ns = match rest.split('/').collect::<Vec<_>>().as_slice() {
            ["rolebindings", ns, _] => Some(*ns),
            ["clusterrolebindings", _] => Some(""),
            _ => None,
        }
        .map(str::to_string);
        match value {
            Some((v, rev)) => {
                if is_role {
                    self.rules.insert(key.clone(), Arc::new(rules_of(&v)));
                }
                if let Some(ns) = binding_ns {
                    self.bindings.insert(key.clone(), Arc::new(Binding::of(&v, &ns)));
                }
                self.objects.insert(key, (v, rev));
            }
            None => {
                self.rules.remove(&key);
                self.bindings.remove(&key);
                self.objects.remove(&key);
            }
        }
    }

    /// The bindings that apply to `user` in `ns` ("" = cluster-wide only).
    fn bindings_for<'a>(&'a self, user: &'a User, ns: &'a str) -> impl Iterator<Item = &'a Binding> + 'a {
        let in_range = |prefix: String| self.bindings.range(prefix.clone()..).take_while(move |(k, _)| k.starts_with(&prefix)).map(|(_, b)| b.as_ref());
        let cluster = in_range(format!("{PREFIX}clusterrolebindings/"));
        let local = (!ns.is_empty()).then(|| in_range(format!("{PREFIX}rolebindings/{ns}/"))).into_iter().flatten();
        cluster.chain(local).filter(move |b| b.subjects.iter().any(|s| s.names(user)))
    }

    /// The rules a binding grants (none when its role does not exist).
    fn granted(&self, b: &Binding) -> Option<&Arc<Vec<PolicyRule>>> {
        self.rules.get(b.role.as_ref()?)
    }

    fn allows(&self, user: &User, a: &Attributes) -> bool {
        self.bindings_for(user, a.namespace()).any(|b| self.granted(b).is_some_and(|rules| rules.iter().any(|r| rule_allows(r, a))))
    }

    fn rules_for(&self, user: &User, ns: &str) -> Vec<PolicyRule> {
        self.bindings_for(user, ns).flat_map(|b| self.granted(b).map(|r| r.to_vec()).unwrap_or_default()).collect()
    }

    fn apply(&mut self, kind: EventKind, key: String, value: &[u8], rev: u64) {
        if rev <= self.revision {
            return;
        }
        self.revision = rev;
        match kind {
            EventKind::Delete => self.set(key, None),
            EventKind::Put => {
                if let Ok(v) = serde_json::from_slice::<Value>(value) {
                    self.set(key, Some((v, rev)));
                }
            }
        }
    }

    /// The writes the aggregation loop owes: (key, new object, expected revision) for each
    /// ClusterRole with an aggregationRule whose rules are not the union of the rules of the
    /// ClusterRoles it selects (sorted by name, duplicates dropped, as upstream).
    fn aggregation_updates(&self) -> Vec<(String, Value, u64)> {
        let mut out = Vec::new();
        for (key, role, rev) in self.of_kind("clusterroles") {
            let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() else { continue };
            let mut rules: Vec<Value> = Vec::new();
            for (other_key, other, _) in self.of_kind("clusterroles") {
                if other_key == key {
                    continue;
                }
                let labels = &other["metadata"]["labels"];
                if !selectors.iter().any(|s| selector_matches(s, labels)) {
                    continue;
                }
                for r in other["rules"].as_array().into_iter().flatten() {
                    if !rules.contains(r) {
                        rules.push(r.clone());
                    }
                }
            }
            let current = role["rules"].as_array().cloned().unwrap_or_default();
            if current != rules {
                let mut new = role.clone();
                new["rules"] = json!(rules);
                out.push((key.clone(), new, rev));
            }
        }
        out
    }
}

/// The live RBAC state, shared by every request.
#[derive(Default)]
pub struct Index {
    snap: RwLock<Arc<Snapshot>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("revision", &self.current().revision).finish()
    }
}

impl Index {
    fn current(&self) -> Arc<Snapshot> {
        match self.snap.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let mut guard = match self.snap.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut next = Snapshot { revision: guard.revision, objects: guard.objects.clone(), rules: guard.rules.clone(), bindings: guard.bindings.clone() };
        f(&mut next);
        *guard = Arc::new(next);
    }

    /// Replace the state with a full list of the RBAC prefix; returns its revision.
    pub async fn reload(&self, store: &dyn Store) -> Result<u64, strata_store::Error> {
        let page = store.list(PREFIX, None, 0).await?;
        let rev = page.revision;
        let mut fresh = Snapshot { revision: rev, ..Default::default() };
        for kv in page.items {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                fresh.set(kv.key, Some((v, kv.mod_revision)));
            }
        }
        self.update(|s| {
            if rev >= s.revision {
                *s = fresh;
            }
        });
        Ok(rev)
    }

    /// Follow the store for ever: list, then watch from the list's revision; relist when the
    /// watch ends or fails. After each batch of changes, run the aggregation loop.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>) {
        loop {
            let rev = match self.reload(store.as_ref()).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "listing RBAC objects");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            self.aggregate(store.as_ref()).await;
            let mut stream = match store.watch(PREFIX, rev).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "watching RBAC objects");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(ev) = stream.next().await {
                match ev {
                    Ok(ev) => {
                        self.update(|s| s.apply(ev.kind, ev.kv.key, &ev.kv.value, ev.kv.mod_revision));
                        self.aggregate(store.as_ref()).await;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "RBAC watch ended; relisting");
                        break;
                    }
                }
            }
            // A watch that keeps ending at once must not spin.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Bring aggregated ClusterRoles up to date (a lost race is retried on the next event).
    pub async fn aggregate(&self, store: &dyn Store) {
        for (key, obj, rev) in self.current().aggregation_updates() {
            let bytes = crate::object::for_storage(&obj);
            match store.update(&key, bytes, rev).await {
                Ok(_) | Err(strata_store::Error::Conflict { .. }) | Err(strata_store::Error::NotFound(_)) => {}
                Err(e) => tracing::warn!(%key, error = %e, "aggregating ClusterRole"),
            }
        }
    }

    /// Make sure the state is at least as new as the store now is.
    async fn refresh(&self, store: &dyn Store) -> Result<(), strata_store::Error> {
        let now = store.revision().await?;
        if self.current().revision < now {
            self.reload(store).await?;
        }
        Ok(())
    }
}

/// The authorizer: `system:masters` may do everything; nodes what the Node authorizer
/// ([`crate::node`]) allows; everyone (nodes included) what RBAC grants.
#[derive(Clone, Debug, Default)]
pub struct Authorizer {
    pub index: Arc<Index>,
    /// The Node authorizer, asked first for node identities (as upstream's `Node,RBAC`).
    pub nodes: Option<Arc<crate::node::NodeAuthorizer>>,
}

impl Authorizer {
    /// May `user` do what `a` says? A denial is re-checked against the store's current
    /// state, so a binding written a moment ago is always seen.
    pub async fn allowed(&self, store: &dyn Store, user: &User, a: &Attributes) -> Result<bool, strata_store::Error> {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Ok(true);
        }
        if let Some(nodes) = &self.nodes {
            if nodes.allows(user, a).await {
                return Ok(true);
            }
        }
        if self.index.current().allows(user, a) {
            return Ok(true);
        }
        self.index.refresh(store).await?;
        Ok(self.index.current().allows(user, a))
    }

    /// Every rule that applies to `user` in `ns` (cluster-wide ones only for "").
    pub async fn rules_for(&self, store: &dyn Store, user: &User, ns: &str) -> Result<Vec<PolicyRule>, strata_store::Error> {
        self.index.refresh(store).await?;
        Ok(self.index.current().rules_for(user, ns))
    }

    /// The rules a binding's roleRef grants in `ns` (None: no such role).
    pub async fn role_ref_rules(&self, store: &dyn Store, role_ref: &Value, ns: &str) -> Result<Option<Vec<PolicyRule>>, strata_store::Error> {
        self.index.refresh(store).await?;
        Ok(self.index.current().role_ref_rules(role_ref, ns).map(|r| r.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> PolicyRule {
        serde_json::from_value(v).expect("rule")
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes::resource(verb, group, resource, sub, "a", name)
    }

    #[test]
    fn rules_allow() {
        let check = |r: Value, a: &Attributes, want: bool| assert_eq!(rule_allows(&rule(r.clone()), a), want, "{r} {a:?}");
        let get_cm = res("get", "", "configmaps", "", "x");
        check(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}), &get_cm, true);
        check(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}), &get_cm, false);
        check(json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}), &get_cm, false);
        check(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}), &get_cm, true);
        check(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["y"]}), &get_cm, false);
        check(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["x"]}), &get_cm, true);
        let scale = res("get", "apps", "deployments", "scale", "web");
        check(json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}), &scale, false);
        check(json!({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get"]}), &scale, true);
        check(json!({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]}), &scale, true);
        check(json!({"apiGroups": ["apps"], "resources": ["*/status"], "verbs": ["get"]}), &scale, false);
        let version = Attributes::non_resource("get", "/version");
        check(json!({"nonResourceURLs": ["/version", "/version/"], "verbs": ["get"]}), &version, true);
        check(json!({"nonResourceURLs": ["/api/*"], "verbs": ["get"]}), &version, false);
        check(json!({"nonResourceURLs": ["*"], "verbs": ["*"]}), &version, true);
        check(json!({"nonResourceURLs": ["/ver*"], "verbs": ["get"]}), &version, true);
        check(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}), &version, false);
        check(json!({"nonResourceURLs": ["*"], "verbs": ["*"]}), &get_cm, false);
    }

    #[test]
    fn coverage_is_upstreams() {
        let owner = vec![
            rule(json!({"apiGroups": [""], "resources": ["configmaps", "pods/*"], "verbs": ["get", "list"]})),
            rule(json!({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["*"]})),
            rule(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["mine"]})),
            rule(json!({"nonResourceURLs": ["/healthz/*"], "verbs": ["get"]})),
        ];
        let check = |servant: Value, want_missing: usize| {
            let missing = covers(&owner, &[rule(servant.clone())]);
            assert_eq!(missing.len(), want_missing, "{servant}: {missing:?}");
        };
        check(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}), 0);
        check(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "delete"]}), 1);
        check(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}), 1);
        check(json!({"apiGroups": ["*"], "resources": ["configmaps"], "verbs": ["get"]}), 1);
        check(json!({"apiGroups": ["apps"], "resources": ["deployments/scale", "statefulsets/scale"], "verbs": ["update"]}), 0);
        check(json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["update"]}), 1);
        // resourceNames: a named grant covers only those names; an unnamed ask is not covered.
        check(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["mine"]}), 0);
        check(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["mine", "yours"]}), 1);
        check(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}), 1);
        check(json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["any"]}), 0);
        check(json!({"nonResourceURLs": ["/healthz/etcd"], "verbs": ["get"]}), 0);
        check(json!({"nonResourceURLs": ["/healthz"], "verbs": ["get"]}), 1);
        check(json!({"nonResourceURLs": ["*"], "verbs": ["get"]}), 1);
        check(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}), 1);
        assert!(covers(&full_authority(), &owner).is_empty());
    }

    #[test]
    fn escalation_message_is_upstreams() {
        let user = User::new("alice", &["dev"]);
        let missing = covers(&[], &[rule(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]})), rule(json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}))]);
        assert_eq!(
            escalation_message(&user, &missing),
            "user \"alice\" (groups=[\"dev\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\" \"list\"]}\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}"
        );
    }

    #[test]
    fn forbidden_messages() {
        let a = Attributes::resource("list", "", "configmaps", "", "default", "");
        assert_eq!(a.forbidden_message("alice"), "configmaps is forbidden: User \"alice\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\"");
        let a = Attributes::resource("get", "apps", "deployments", "scale", "", "web");
        assert_eq!(a.forbidden_message("bob"), "deployments.apps \"web\" is forbidden: User \"bob\" cannot get resource \"deployments/scale\" in API group \"apps\" at the cluster scope");
        assert_eq!(Attributes::non_resource("get", "/api").forbidden_message("system:anonymous"), "forbidden: User \"system:anonymous\" cannot get path \"/api\"");
    }

    #[test]
    fn the_index_follows_changes() {
        let mut s = Snapshot::default();
        let put = |s: &mut Snapshot, key: &str, v: Value, rev: u64| s.apply(EventKind::Put, format!("{PREFIX}{key}"), &serde_json::to_vec(&v).expect("json"), rev);
        let alice = User::new("alice", &[]);
        let get_cm = res("get", "", "configmaps", "", "x");
        put(&mut s, "roles/a/r", json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}), 1);
        assert!(!s.allows(&alice, &get_cm), "no binding yet");
        put(&mut s, "rolebindings/a/b", json!({"subjects": [{"kind": "User", "name": "alice"}], "roleRef": {"kind": "Role", "name": "r"}}), 2);
        assert!(s.allows(&alice, &get_cm));
        assert!(!s.allows(&alice, &Attributes::resource("get", "", "configmaps", "", "b", "x")), "another namespace");
        put(&mut s, "roles/a/r", json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]}), 3);
        assert!(!s.allows(&alice, &get_cm), "the role's new rules apply");
        s.apply(EventKind::Delete, format!("{PREFIX}roles/a/r"), b"", 4);
        assert!(s.rules_for(&alice, "a").is_empty());
    }

    #[test]
    fn selectors_and_aggregation() {
        let labels = json!({"rbac.authorization.k8s.io/aggregate-to-view": "true", "tier": "x"});
        assert!(selector_matches(&json!({"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}), &labels));
        assert!(!selector_matches(&json!({"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}), &labels));
        assert!(selector_matches(&json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["x", "y"]}]}), &labels));
        assert!(!selector_matches(&json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}), &labels));
        assert!(selector_matches(&json!({}), &labels), "an empty selector selects everything");
        let mut s = Snapshot::default();
        let put = |s: &mut Snapshot, name: &str, v: Value, rev: u64| s.apply(EventKind::Put, format!("{PREFIX}clusterroles/{name}"), &serde_json::to_vec(&v).expect("json"), rev);
        put(&mut s, "view", json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}, "rules": null}), 1);
        put(&mut s, "b", json!({"metadata": {"name": "b", "labels": {"agg": "view"}}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}), 2);
        put(&mut s, "a", json!({"metadata": {"name": "a", "labels": {"agg": "view"}}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}]}), 3);
        put(&mut s, "c", json!({"metadata": {"name": "c"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}), 4);
        let updates = s.aggregation_updates();
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].2, 1);
        assert_eq!(updates[0].1["rules"], json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]}]));
        // An old event does not undo a newer state.
        put(&mut s, "c", json!({"metadata": {"name": "c"}}), 2);
        assert_eq!(rules_of(s.get("clusterroles", None, "c").expect("c")).len(), 1);
    }

    #[test]
    fn service_account_subjects_default_to_the_bindings_namespace() {
        let mut s = Snapshot::default();
        let put = |s: &mut Snapshot, key: &str, v: Value, rev: u64| s.apply(EventKind::Put, format!("{PREFIX}{key}"), &serde_json::to_vec(&v).expect("json"), rev);
        put(&mut s, "roles/a/r", json!({"rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]}), 1);
        put(&mut s, "rolebindings/a/b", json!({"subjects": [{"kind": "ServiceAccount", "name": "builder"}], "roleRef": {"kind": "Role", "name": "r"}}), 2);
        let sa = User::new("system:serviceaccount:a:builder", &["system:serviceaccounts", "system:serviceaccounts:a"]);
        assert!(s.allows(&sa, &res("get", "", "configmaps", "", "x")), "a namespace-less ServiceAccount subject is the binding's namespace's");
        let other = User::new("system:serviceaccount:b:builder", &[]);
        assert!(!s.allows(&other, &res("get", "", "configmaps", "", "x")));
        // A ClusterRoleBinding has no namespace to default to: such a subject matches no one.
        put(&mut s, "clusterroles/c", json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}), 3);
        put(&mut s, "clusterrolebindings/cb", json!({"subjects": [{"kind": "ServiceAccount", "name": "builder"}], "roleRef": {"kind": "ClusterRole", "name": "c"}}), 4);
        assert!(!s.allows(&User::new("system:serviceaccount::builder", &[]), &res("get", "", "secrets", "", "x")));
    }
}
