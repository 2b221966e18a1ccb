//! ResourceQuota (core/v1): validation, usage evaluation, upstream's ResourceQuota admission
//! plugin and the quota status controller, all over one evaluator ([`usage`], [`matches`]).
//!
//! **Admission** (creates): every quota of the namespace whose hard resources or scopes apply
//! to the new object must have a computed status; a pod lacking a request or limit a compute
//! quota constrains is refused (`failed quota: NAME: must specify ...`); the object's usage is
//! added to each such quota's `status.used` and checked against `status.hard` (`exceeded quota:
//! NAME, requested: ..., used: ..., limited: ...`). The charge is **atomic with the create**: one
//! store transaction writes the object and every charged quota, each compared with the revision
//! it was read at; a race with another create retries from a fresh read, so concurrent creates
//! never exceed a quota, and an object that is not created charges nothing.
//!
//! **Controller** ([`run`], in the API server process): `status.hard` is the spec's and
//! `status.used` is recomputed from the store — quotas and objects listed at one revision, the
//! result written with compare-and-swap — for every namespace with a quota when anything in it
//! changes (a watch cache [`Observer`](crate::watchcache::Observer) marks it), and every minute.
//! Deletions are released this way.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use strata_store::{Compare, Op, Store};

use crate::quantity::Quantity;
use crate::resources::Resource;
use crate::status::{ApiError, Cause};

const PREFIX: &str = "/registry/core/resourcequotas/";

/// Usage or hard limits by resource name.
pub type List = BTreeMap<String, Quantity>;

/// `standardQuotaResources` and the huge page names.
fn standard_quota_resource(name: &str) -> bool {
    matches!(
        name,
        "cpu" | "memory" | "ephemeral-storage" | "requests.cpu" | "requests.memory" | "requests.storage" | "requests.ephemeral-storage" | "limits.cpu" | "limits.memory"
            | "limits.ephemeral-storage" | "pods" | "resourcequotas" | "services" | "replicationcontrollers" | "secrets" | "persistentvolumeclaims" | "configmaps"
            | "services.nodeports" | "services.loadbalancers"
    ) || name.starts_with("hugepages-")
        || name.starts_with("requests.hugepages-")
}

/// Resources counted in whole units (`IsIntegerResourceName`).
fn integer_resource(name: &str) -> bool {
    matches!(name, "pods" | "resourcequotas" | "services" | "replicationcontrollers" | "secrets" | "configmaps" | "persistentvolumeclaims" | "services.nodeports" | "services.loadbalancers")
        || (name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests."))
}

const SCOPES: &[&str] = &["Terminating", "NotTerminating", "BestEffort", "NotBestEffort", "PriorityClass", "CrossNamespacePodAffinity"];

/// May a quota with this scope constrain this resource (`IsResourceQuotaScopeValidForResource`)?
fn scope_valid_for(scope: &str, name: &str) -> bool {
    let compute = matches!(name, "pods" | "cpu" | "memory" | "limits.cpu" | "limits.memory" | "requests.cpu" | "requests.memory");
    match scope {
        "BestEffort" => name == "pods",
        "Terminating" | "NotTerminating" | "NotBestEffort" | "PriorityClass" | "CrossNamespacePodAffinity" => compute,
        _ => true,
    }
}

/// Validation as upstream's `ValidateResourceQuota`.
pub fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let hard = obj["spec"]["hard"].as_object().cloned().unwrap_or_default();
    for (k, v) in &hard {
        let field = format!("spec.hard[{k}]");
        crate::runtimeclass::resource_name(&field, k, standard_quota_resource, "must be a standard resource for quota", causes);
        match Quantity::of(v) {
            None => causes.push(Cause::invalid(&field, v, crate::quantity::SYNTAX)),
            Some(q) => {
                if q.milli < 0 {
                    causes.push(Cause::invalid(&field, &json!(q.to_string()), "must be greater than or equal to 0"));
                }
                if integer_resource(k) && q.milli % 1000 != 0 {
                    causes.push(Cause::invalid(&field, &json!(q.to_string()), "must be an integer"));
                }
            }
        }
    }
    let scopes: Vec<&str> = obj["spec"]["scopes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let scopes_json = obj["spec"]["scopes"].clone();
    for s in &scopes {
        if !SCOPES.contains(s) {
            causes.push(Cause::invalid("spec.scopes", &scopes_json, "unsupported scope"));
        }
        for k in hard.keys() {
            if standard_quota_resource(k) && !scope_valid_for(s, k) {
                causes.push(Cause::invalid("spec.scopes", &scopes_json, "unsupported scope applied to resource"));
            }
        }
    }
    for (a, b) in [("BestEffort", "NotBestEffort"), ("Terminating", "NotTerminating")] {
        if scopes.contains(&a) && scopes.contains(&b) {
            causes.push(Cause::invalid("spec.scopes", &scopes_json, "conflicting scopes"));
        }
    }
    for (i, e) in obj["spec"]["scopeSelector"]["matchExpressions"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.scopeSelector.matchExpressions[{i}]");
        let scope = e["scopeName"].as_str().unwrap_or("");
        if !SCOPES.contains(&scope) {
            causes.push(Cause::invalid(&format!("{at}.scopeName"), &e["scopeName"], "unsupported scope"));
        }
        let values = e["values"].as_array().map_or(0, Vec::len);
        match e["operator"].as_str().unwrap_or("") {
            "In" | "NotIn" if values == 0 => causes.push(Cause::invalid(&format!("{at}.values"), &e["values"], "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector")),
            "Exists" | "DoesNotExist" if values > 0 => causes.push(Cause::invalid(&format!("{at}.values"), &e["values"], "must be no value when `operator` is 'Exist' and 'DoesNotExist' for scope selector")),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::invalid(&format!("{at}.operator"), &json!(other), "not a valid selector operator")),
        }
    }
}

/// The object-count resource name of a kind (`count/pods`, `count/deployments.apps`).
fn count_name(r: &Resource) -> String {
    if r.group.is_empty() {
        format!("count/{}", r.plural)
    } else {
        format!("count/{}.{}", r.plural, r.group)
    }
}

/// Does this hard resource name constrain objects of kind `r` (the evaluators'
/// `MatchingResources`)?
fn constrains(r: &Resource, name: &str) -> bool {
    if name == count_name(r) {
        return true;
    }
    match (r.group, r.builtin()) {
        ("", "Pod") => {
            matches!(name, "pods" | "cpu" | "memory" | "ephemeral-storage" | "requests.cpu" | "requests.memory" | "requests.ephemeral-storage" | "limits.cpu" | "limits.memory" | "limits.ephemeral-storage")
                || name.starts_with("hugepages-")
                || name.starts_with("requests.hugepages-")
                || (name.starts_with("requests.") && name.contains('/') && !name.contains("kubernetes.io/"))
        }
        ("", "Service") => matches!(name, "services" | "services.loadbalancers" | "services.nodeports"),
        ("", "PersistentVolumeClaim") => {
            matches!(name, "persistentvolumeclaims" | "requests.storage")
                || name.ends_with(".storageclass.storage.k8s.io/requests.storage")
                || name.ends_with(".storageclass.storage.k8s.io/persistentvolumeclaims")
        }
        ("", "Secret") => name == "secrets",
        ("", "ConfigMap") => name == "configmaps",
        ("", "ReplicationController") => name == "replicationcontrollers",
        ("", "ResourceQuota") => name == "resourcequotas",
        _ => false,
    }
}

fn one() -> Quantity {
    Quantity { milli: 1000, format: crate::quantity::Format::DecimalSI }
}

/// Does a pod count for compute resources (`QuotaV1Pod`): not finished, and not past the end
/// of its deletion grace period.
fn pod_counts(pod: &Value) -> bool {
    if matches!(pod["status"]["phase"].as_str(), Some("Succeeded" | "Failed")) {
        return false;
    }
    if let Some(ts) = pod["metadata"]["deletionTimestamp"].as_str() {
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
            let grace = pod["metadata"]["deletionGracePeriodSeconds"].as_i64().unwrap_or(0);
            if chrono::Utc::now() > t.with_timezone(&chrono::Utc) + chrono::Duration::seconds(grace) {
                return false;
            }
        }
    }
    true
}

fn is_best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|l| {
        pod["spec"][*l].as_array().into_iter().flatten().all(|c| {
            ["requests", "limits"].iter().all(|f| c["resources"][*f].as_object().is_none_or(|m| !m.keys().any(|k| k == "cpu" || k == "memory")))
        })
    })
}

/// What an object uses (the evaluators' `Usage`).
pub fn usage(r: &Resource, obj: &Value) -> List {
    let mut u = List::new();
    u.insert(count_name(r), one());
    if !r.group.is_empty() {
        return u;
    }
    match r.builtin() {
        "Pod" => {
            if !pod_counts(obj) {
                return u;
            }
            u.insert("pods".into(), one());
            let req = crate::limitrange::pod_total(obj, "requests", true);
            let lim = crate::limitrange::pod_total(obj, "limits", true);
            for res in ["cpu", "memory", "ephemeral-storage"] {
                if let Some(q) = req.get(res) {
                    u.insert(res.into(), *q);
                    u.insert(format!("requests.{res}"), *q);
                }
                if let Some(q) = lim.get(res) {
                    u.insert(format!("limits.{res}"), *q);
                }
            }
            for (k, q) in &req {
                if k.starts_with("hugepages-") {
                    u.insert(k.clone(), *q);
                    u.insert(format!("requests.{k}"), *q);
                } else if k.contains('/') && !k.contains("kubernetes.io/") {
                    u.insert(format!("requests.{k}"), *q);
                }
            }
        }
        "Service" => {
            u.insert("services".into(), one());
            let ty = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            if ty == "LoadBalancer" {
                u.insert("services.loadbalancers".into(), one());
            }
            if matches!(ty, "NodePort" | "LoadBalancer") {
                let ports = obj["spec"]["ports"].as_array().map_or(0, Vec::len) as i128;
                u.insert("services.nodeports".into(), Quantity { milli: ports * 1000, format: crate::quantity::Format::DecimalSI });
            }
        }
        "PersistentVolumeClaim" => {
            u.insert("persistentvolumeclaims".into(), one());
            let class = obj["spec"]["storageClassName"].as_str().unwrap_or("");
            if !class.is_empty() {
                u.insert(format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"), one());
            }
            if let Some(q) = Quantity::of(&obj["spec"]["resources"]["requests"]["storage"]) {
                u.insert("requests.storage".into(), q);
                if !class.is_empty() {
                    u.insert(format!("{class}.storageclass.storage.k8s.io/requests.storage"), q);
                }
            }
        }
        "Secret" => {
            u.insert("secrets".into(), one());
        }
        "ConfigMap" => {
            u.insert("configmaps".into(), one());
        }
        "ReplicationController" => {
            u.insert("replicationcontrollers".into(), one());
        }
        "ResourceQuota" => {
            u.insert("resourcequotas".into(), one());
        }
        _ => {}
    }
    u
}

/// The quota's scope selectors: `scopes` (as Exists) and `scopeSelector.matchExpressions`.
fn selectors(quota: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = quota["spec"]["scopes"].as_array().into_iter().flatten().map(|s| json!({"scopeName": s, "operator": "Exists"})).collect();
    out.extend(quota["spec"]["scopeSelector"]["matchExpressions"].as_array().cloned().unwrap_or_default());
    out
}

/// Does one scope selector match an object (`podMatchesScopeFunc`; other kinds match none)?
fn scope_matches(r: &Resource, sel: &Value, obj: &Value) -> bool {
    if !(r.group.is_empty() && r.builtin() == "Pod") {
        return false;
    }
    let terminating = obj["spec"]["activeDeadlineSeconds"].as_i64().is_some_and(|s| s >= 0);
    match sel["scopeName"].as_str().unwrap_or("") {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => is_best_effort(obj),
        "NotBestEffort" => !is_best_effort(obj),
        "PriorityClass" => {
            let class = obj["spec"]["priorityClassName"].as_str().unwrap_or("");
            let values: Vec<&str> = sel["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            match sel["operator"].as_str().unwrap_or("") {
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                "In" => values.contains(&class),
                "NotIn" => !values.contains(&class),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => {
            let terms = |kind: &str| -> Vec<Value> {
                let a = &obj["spec"]["affinity"][kind];
                let mut t: Vec<Value> = a["requiredDuringSchedulingIgnoredDuringExecution"].as_array().cloned().unwrap_or_default();
                t.extend(a["preferredDuringSchedulingIgnoredDuringExecution"].as_array().into_iter().flatten().map(|w| w["podAffinityTerm"].clone()));
                t
            };
            ["podAffinity", "podAntiAffinity"].iter().any(|k| terms(k).iter().any(|t| t["namespaceSelector"].is_object() || t["namespaces"].as_array().is_some_and(|n| !n.is_empty())))
        }
        _ => false,
    }
}

/// Does a quota apply to an object: one of its hard resources constrains the kind and every
/// scope selector matches (`generic.Matches`).
pub fn matches(r: &Resource, quota: &Value, obj: &Value) -> bool {
    let hard = &quota["status"]["hard"];
    let hard = if hard.is_object() { hard } else { &quota["spec"]["hard"] };
    hard.as_object().is_some_and(|h| h.keys().any(|k| constrains(r, k))) && selectors(quota).iter().all(|s| scope_matches(r, s, obj))
}

fn list_of(v: &Value) -> List {
    v.as_object().into_iter().flatten().filter_map(|(k, q)| Quantity::of(q).map(|q| (k.clone(), q))).collect()
}

fn pretty(l: &List) -> String {
    l.iter().map(|(k, q)| format!("{k}={q}")).collect::<Vec<_>>().join(",")
}

/// `must specify ...` of a pod missing what a compute quota constrains (`Constraints`).
fn pod_constraints(required: &[&str], pod: &Value) -> Option<String> {
    let checked: Vec<&str> = required.iter().copied().filter(|n| matches!(*n, "cpu" | "memory" | "requests.cpu" | "requests.memory" | "limits.cpu" | "limits.memory")).collect();
    if checked.is_empty() {
        return None;
    }
    let mut missing: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for list in ["containers", "initContainers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            let has = |f: &str, res: &str| c["resources"][f].get(res).is_some();
            for n in &checked {
                let present = match *n {
                    "cpu" | "requests.cpu" => has("requests", "cpu"),
                    "memory" | "requests.memory" => has("requests", "memory"),
                    "limits.cpu" => has("limits", "cpu"),
                    _ => has("limits", "memory"),
                };
                if !present {
                    missing.entry(n).or_default().insert(c["name"].as_str().unwrap_or("").to_string());
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    let parts: Vec<String> = missing.iter().map(|(r, cs)| format!("{r} for: {}", cs.iter().cloned().collect::<Vec<_>>().join(","))).collect();
    Some(format!("must specify {}", parts.join("; ")))
}

/// What admission decided for a create: the quota writes to make with it (key, new value,
/// revision read at).
#[derive(Debug, Default)]
pub struct Charge {
    pub writes: Vec<(String, Vec<u8>, u64)>,
}

impl Charge {
    /// The transaction that creates `key` with `value` and applies the charge.
    pub fn txn(&self, key: &str, value: Vec<u8>) -> (Vec<Compare>, Vec<Op>) {
        let mut compares = vec![Compare::ModRevision(key.to_string(), 0)];
        let mut ops = vec![Op::Put(key.to_string(), value)];
        for (k, v, rev) in &self.writes {
            compares.push(Compare::ModRevision(k.clone(), *rev));
            ops.push(Op::Put(k.clone(), v.clone()));
        }
        (compares, ops)
    }
}

impl Charge {
    /// The transaction that updates `key` (read at `expected`) to `value` and applies the charge.
    pub fn txn_update(&self, key: &str, value: Vec<u8>, expected: u64) -> (Vec<Compare>, Vec<Op>) {
        let (mut compares, ops) = self.txn(key, value);
        compares[0] = Compare::ModRevision(key.to_string(), expected);
        (compares, ops)
    }
}

/// ResourceQuota admission of an updated Service or PersistentVolumeClaim (the kinds whose
/// usage an update can raise, as upstream's evaluators handle updates): what the update adds
/// (node ports, load balancers, storage) is charged; nothing is given back here (the controller
/// recomputes).
pub async fn admit_update(store: &dyn Store, r: &Resource, new: &Value, old: &Value) -> Result<Charge, ApiError> {
    if !(r.group.is_empty() && matches!(r.builtin(), "Service" | "PersistentVolumeClaim")) {
        return Ok(Charge::default());
    }
    let before = usage(r, old);
    let delta: List = usage(r, new)
        .into_iter()
        .map(|(k, v)| {
            let prev = before.get(&k).map_or(0, |q| q.milli);
            (k, Quantity { milli: (v.milli - prev).max(0), format: v.format })
        })
        .filter(|(_, q)| q.milli != 0)
        .collect();
    if delta.is_empty() {
        return Ok(Charge::default());
    }
    charge(store, r, new, delta, false).await
}

/// ResourceQuota admission of a created object: the charge to make with it, or the denial.
pub async fn admit(store: &dyn Store, r: &Resource, obj: &Value) -> Result<Charge, ApiError> {
    let delta: List = usage(r, obj).into_iter().filter(|(_, q)| q.milli != 0).collect();
    charge(store, r, obj, delta, true).await
}

/// Check `delta` of `obj` against every quota that applies and return the writes that charge it.
async fn charge(store: &dyn Store, r: &Resource, obj: &Value, delta: List, create: bool) -> Result<Charge, ApiError> {
    let mut charge = Charge::default();
    if !r.namespaced {
        return Ok(charge);
    }
    let namespace = obj["metadata"]["namespace"].as_str().unwrap_or("");
    let page = store.list(&format!("{PREFIX}{namespace}/"), None, 0).await?;
    if page.items.is_empty() {
        return Ok(charge);
    }
    let name = crate::object::name_of(obj);
    let forbidden = |why: String| ApiError::forbidden(r, name, &why);
    let mut quotas: Vec<(String, Value, u64)> = page.items.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok().map(|v| (kv.key.clone(), v, kv.mod_revision))).collect();
    quotas.sort_by(|a, b| crate::object::name_of(&a.1).cmp(crate::object::name_of(&b.1)));
    let mut interesting = Vec::new();
    for (key, q, rev) in quotas {
        if !matches(r, &q, obj) {
            continue;
        }
        let qname = crate::object::name_of(&q).to_string();
        let hard = list_of(&q["status"]["hard"]);
        let restricted: Vec<&str> = hard.keys().map(String::as_str).filter(|k| constrains(r, k)).collect();
        if create && r.group.is_empty() && r.builtin() == "Pod" {
            if let Some(why) = pod_constraints(&restricted, obj) {
                return Err(forbidden(format!("failed quota: {qname}: {why}")));
            }
        }
        let used = &q["status"]["used"];
        if !q["status"]["hard"].is_object() || restricted.iter().any(|k| used.get(*k).is_none()) {
            let names = if restricted.is_empty() { q["spec"]["hard"].as_object().map(|h| h.keys().filter(|k| constrains(r, k)).cloned().collect::<Vec<_>>().join(",")).unwrap_or_default() } else { restricted.join(",") };
            return Err(forbidden(format!("status unknown for quota: {qname}, resources: {names}")));
        }
        interesting.push((key, q, rev, hard));
    }
    if delta.is_empty() {
        return Ok(charge);
    }
    for (key, mut q, rev, hard) in interesting {
        let used = list_of(&q["status"]["used"]);
        let requested: List = delta.iter().filter(|(k, _)| hard.contains_key(*k)).map(|(k, v)| (k.clone(), *v)).collect();
        if requested.is_empty() {
            continue;
        }
        let mut new_used = used.clone();
        let mut exceeded = Vec::new();
        for (k, v) in &requested {
            let sum = used.get(k).copied().unwrap_or(Quantity::ZERO) + *v;
            if hard.get(k).is_some_and(|h| sum.milli > h.milli) {
                exceeded.push(k.clone());
            }
            new_used.insert(k.clone(), sum);
        }
        if !exceeded.is_empty() {
            let mask = |l: &List| -> List { l.iter().filter(|(k, _)| exceeded.contains(k)).map(|(k, v)| (k.clone(), *v)).collect() };
            let mut failed_used = mask(&used);
            for k in &exceeded {
                failed_used.entry(k.clone()).or_insert(Quantity::ZERO);
            }
            return Err(forbidden(format!(
                "exceeded quota: {}, requested: {}, used: {}, limited: {}",
                crate::object::name_of(&q),
                pretty(&mask(&requested)),
                pretty(&failed_used),
                pretty(&mask(&hard))
            )));
        }
        for (k, v) in new_used {
            q["status"]["used"][k.as_str()] = json!(v.to_string());
        }
        charge.writes.push((key, crate::object::for_storage(&q), rev));
    }
    Ok(charge)
}

/// Clear a new quota's status: only the controller and admission write it.
pub fn prepare_create(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
}

/// The namespaces with quotas and those whose usage may have changed; filled by the watch
/// cache (an [`Observer`](crate::watchcache::Observer) of everything), drained by [`run`].
#[derive(Default)]
pub struct Tracker {
    state: Mutex<TrackerState>,
    wake: tokio::sync::Notify,
}

#[derive(Default)]
struct TrackerState {
    /// namespace -> names of its quotas.
    quotas: HashMap<String, HashSet<String>>,
    dirty: HashSet<String>,
}

/// (namespace, name) of a namespaced key `/registry/<group>/<plural>/<ns>/<name>`.
fn namespaced_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("/registry/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [_, _, ns, name] => Some((ns, name)),
        _ => None,
    }
}

impl crate::watchcache::Observer for Tracker {
    fn prefix(&self) -> &str {
        "/registry/"
    }

    fn reset(&self, objects: &mut dyn Iterator<Item = (&str, &[u8])>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.quotas.clear();
        for (key, _) in objects {
            if let Some(rest) = key.strip_prefix(PREFIX) {
                if let Some((ns, name)) = rest.split_once('/') {
                    st.quotas.entry(ns.to_string()).or_default().insert(name.to_string());
                }
            }
        }
        let all: Vec<String> = st.quotas.keys().cloned().collect();
        st.dirty.extend(all);
        drop(st);
        self.wake.notify_one();
    }

    fn changed(&self, key: &str, value: Option<&crate::watchcache::Object>) {
        let Some((ns, name)) = namespaced_key(key) else { return };
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if key.starts_with(PREFIX) {
            match value {
                Some(_) => {
                    st.quotas.entry(ns.to_string()).or_default().insert(name.to_string());
                }
                None => {
                    if let Some(set) = st.quotas.get_mut(ns) {
                        set.remove(name);
                        if set.is_empty() {
                            st.quotas.remove(ns);
                        }
                    }
                }
            }
        }
        if st.quotas.contains_key(ns) && st.dirty.insert(ns.to_string()) {
            drop(st);
            self.wake.notify_one();
        }
    }
}

impl Tracker {
    fn take(&self) -> Vec<String> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.dirty.drain().collect()
    }

    fn mark_all(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<String> = st.quotas.keys().cloned().collect();
        st.dirty.extend(all);
    }

    fn mark(&self, ns: &str) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).dirty.insert(ns.to_string());
        self.wake.notify_one();
    }
}

/// The kind a hard resource name counts, if any: (group, plural).
fn counted_kind(name: &str) -> Option<(String, String)> {
    let legacy = match name {
        "pods" | "cpu" | "memory" | "ephemeral-storage" => Some("pods"),
        n if n.starts_with("requests.") || n.starts_with("limits.") || n.starts_with("hugepages-") => {
            if n == "requests.storage" {
                Some("persistentvolumeclaims")
            } else {
                Some("pods")
            }
        }
        "services" | "services.loadbalancers" | "services.nodeports" => Some("services"),
        "persistentvolumeclaims" => Some("persistentvolumeclaims"),
        "secrets" | "configmaps" | "replicationcontrollers" | "resourcequotas" => Some(name),
        n if n.contains(".storageclass.storage.k8s.io/") => Some("persistentvolumeclaims"),
        _ => None,
    };
    if let Some(p) = legacy {
        return Some((String::new(), p.to_string()));
    }
    let rest = name.strip_prefix("count/")?;
    Some(match rest.split_once('.') {
        Some((plural, group)) => (group.to_string(), plural.to_string()),
        None => (String::new(), rest.to_string()),
    })
}

/// Recompute the status of every quota of a namespace from one snapshot of the store.
async fn sync_namespace(store: &dyn Store, ns: &str) -> Result<(), strata_store::Error> {
    let rev = store.revision().await?;
    let quotas = store.list_at(&format!("{PREFIX}{ns}/"), rev, None, 0).await?;
    let quotas: Vec<(String, Value, u64)> = quotas.items.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok().map(|v| (kv.key.clone(), v, kv.mod_revision))).collect();
    if quotas.is_empty() {
        return Ok(());
    }
    // The objects of every kind some quota counts, listed at the same revision.
    let mut kinds: Vec<&'static Resource> = Vec::new();
    for (_, q, _) in &quotas {
        for name in q["spec"]["hard"].as_object().into_iter().flatten().map(|(k, _)| k) {
            let Some((group, plural)) = counted_kind(name) else { continue };
            if let Some(r) = crate::resources::served().into_iter().find(|r| r.group == group && r.plural == plural && r.namespaced) {
                if !kinds.iter().any(|k| k.group == r.group && k.plural == r.plural) {
                    kinds.push(r);
                }
            }
        }
    }
    let mut objects: Vec<(&'static Resource, Vec<Value>)> = Vec::new();
    for r in kinds {
        let page = store.list_at(&r.list_prefix(Some(ns)), rev, None, 0).await?;
        objects.push((r, page.items.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect()));
    }
    for (key, mut q, mod_rev) in quotas {
        let hard = q["spec"]["hard"].clone();
        let hard_list = list_of(&hard);
        let mut used: List = hard_list.keys().filter(|k| counted_kind(k).is_some()).map(|k| (k.clone(), Quantity::ZERO)).collect();
        for (r, objs) in &objects {
            for o in objs.iter().filter(|o| selectors(&q).iter().all(|s| scope_matches(r, s, o))) {
                for (k, v) in usage(r, o) {
                    if let Some(u) = used.get_mut(&k) {
                        *u = *u + v;
                    }
                }
            }
        }
        // Zero is written in the hard limit's format (`0` either way, as upstream).
        let used_json: serde_json::Map<String, Value> = used.iter().map(|(k, v)| (k.clone(), json!(v.to_string()))).collect();
        let status = json!({"hard": hard, "used": used_json});
        if q["status"] == status {
            continue;
        }
        q["status"] = status;
        match store.update(&key, crate::object::for_storage(&q), mod_rev).await {
            Ok(_) => {}
            Err(strata_store::Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The quota status controller: recompute the namespaces the tracker marks (a conflicting
/// write marks its namespace again), and all of them every minute.
pub async fn run(store: Arc<dyn Store>, tracker: Arc<Tracker>) {
    let mut resync = tokio::time::interval(Duration::from_secs(60));
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tracker.wake.notified() => {}
            _ = resync.tick() => tracker.mark_all(),
        }
        // Let a burst of changes coalesce.
        tokio::time::sleep(Duration::from_millis(50)).await;
        for ns in tracker.take() {
            if let Err(e) = sync_namespace(store.as_ref(), &ns).await {
                tracing::debug!(namespace = %ns, error = %e, "resource quota status: retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                tracker.mark(&ns);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Resource {
        crate::resources::find("", "v1", "pods").expect("pods")
    }

    #[test]
    fn pod_usage_and_scopes_as_upstream() {
        let pod = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}}], "overhead": {"cpu": "50m"}}});
        let u = usage(pods(), &pod);
        let show: Vec<String> = u.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(show, ["count/pods=1", "cpu=300m", "limits.cpu=1050m", "memory=64Mi", "pods=1", "requests.cpu=300m", "requests.memory=64Mi"]);
        let done = json!({"spec": pod["spec"].clone(), "status": {"phase": "Succeeded"}});
        assert_eq!(usage(pods(), &done).keys().collect::<Vec<_>>(), ["count/pods"]);
        let be = json!({"spec": {"containers": [{"name": "c"}]}});
        let quota = json!({"spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}});
        assert!(matches(pods(), &quota, &be) && !matches(pods(), &quota, &pod));
        let cm = crate::resources::find("", "v1", "configmaps").expect("cm");
        assert!(!matches(cm, &json!({"spec": {"hard": {"configmaps": "1"}, "scopes": ["BestEffort"]}}), &json!({})));
        assert!(matches(cm, &json!({"spec": {"hard": {"count/configmaps": "1"}}}), &json!({})));
        let by_class = json!({"spec": {"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}});
        assert!(matches(pods(), &by_class, &json!({"spec": {"priorityClassName": "high"}})));
        assert!(!matches(pods(), &by_class, &json!({"spec": {"priorityClassName": "low"}})));
        assert_eq!(
            pod_constraints(&["pods", "requests.cpu", "limits.memory"], &json!({"spec": {"containers": [{"name": "b"}, {"name": "a", "resources": {"limits": {"memory": "1Mi"}}}]}})).as_deref(),
            Some("must specify limits.memory for: b; requests.cpu for: a,b")
        );
    }

    #[test]
    fn quotas_are_validated_as_upstream() {
        let check = |o: Value| {
            let mut c = Vec::new();
            validate(&o, &mut c);
            c.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect::<Vec<_>>()
        };
        assert!(check(json!({"spec": {"hard": {"pods": "10", "requests.cpu": "1500m", "count/deployments.apps": "2"}}})).is_empty());
        assert_eq!(check(json!({"spec": {"hard": {"pods": "1.5"}}})), ["spec.hard[pods]: Invalid value: \"1500m\": must be an integer"]);
        assert_eq!(check(json!({"spec": {"hard": {"requests.cpu": "1"}, "scopes": ["BestEffort"]}})), ["spec.scopes: Invalid value: [\"BestEffort\"]: unsupported scope applied to resource"]);
        assert_eq!(counted_kind("count/deployments.apps"), Some(("apps".into(), "deployments".into())));
        assert_eq!(counted_kind("requests.storage"), Some((String::new(), "persistentvolumeclaims".into())));
    }
}
