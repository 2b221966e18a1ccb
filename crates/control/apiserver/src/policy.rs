//! The bootstrap RBAC policy (upstream kube-apiserver's default ClusterRoles, Roles and
//! bindings: `cluster-admin`, `admin`/`edit`/`view`, `system:discovery`, `system:node`,
//! `system:kube-scheduler`, the controllers' roles, ...), reconciled into the store at every
//! start the way kube-apiserver's `rbac/bootstrap-roles` hook does: missing objects are
//! created; existing ones keep what users added (labels, annotations, rules, subjects) and
//! get what the default lacks; objects annotated `rbac.authorization.kubernetes.io/autoupdate:
//! "false"` are left alone.
//!
//! `bootstrap_policy.json` is generated from upstream's definitions by
//! `scripts/gen-bootstrap-policy.py` (`--check` verifies it is current).

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use strata_store::Store;

use crate::rbac::{self, PolicyRule};
use crate::resources;

static POLICY: &str = include_str!("bootstrap_policy.json");

const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the embedded bootstrap policy is not valid JSON: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("reconciling {key}: {source}")]
    Store {
        key: String,
        #[source]
        source: strata_store::Error,
    },
    #[error("RBAC kinds are not registered")]
    Unregistered,
}

/// The default objects, by kind list name (`clusterRoles`, ...).
fn defaults() -> Result<Value, PolicyError> {
    Ok(serde_json::from_str(POLICY)?)
}

/// Names of the default ClusterRoles (for tests and documentation).
pub fn cluster_role_names() -> Vec<String> {
    defaults()
        .ok()
        .and_then(|d| d["clusterRoles"].as_array().map(|a| a.iter().filter_map(|r| r["metadata"]["name"].as_str().map(str::to_string)).collect()))
        .unwrap_or_default()
}

/// The rules of a default ClusterRole (the Node authorizer's static rules are `system:node`'s).
pub fn cluster_role_rules(name: &str) -> Vec<PolicyRule> {
    defaults()
        .ok()
        .and_then(|d| d["clusterRoles"].as_array().and_then(|a| a.iter().find(|r| r["metadata"]["name"] == name).map(rbac::rules_of)))
        .unwrap_or_default()
}

/// `a` with every entry of `b` that `a` lacks (existing values win, as upstream's merge).
fn merge_map(expected: &Value, existing: &Value) -> Value {
    let mut out: Map<String, Value> = expected.as_object().cloned().unwrap_or_default();
    if let Some(e) = existing.as_object() {
        out.extend(e.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Value::Object(out)
}

/// The reconciled form of an existing role, or None if nothing needs to change.
fn reconcile_role(expected: &Value, existing: &Value) -> Option<Value> {
    let mut out = existing.clone();
    for field in ["labels", "annotations"] {
        let merged = merge_map(&expected["metadata"][field], &existing["metadata"][field]);
        if merged.as_object().is_some_and(|m| !m.is_empty()) {
            out["metadata"][field] = merged;
        }
    }
    let have = rbac::rules_of(existing);
    let missing: Vec<PolicyRule> = rbac::covers(&have, &rbac::rules_of(expected));
    if !missing.is_empty() {
        let mut rules = existing["rules"].as_array().cloned().unwrap_or_default();
        rules.extend(missing.iter().filter_map(|r| serde_json::to_value(r).ok()));
        out["rules"] = json!(rules);
    }
    if let Some(want) = expected["aggregationRule"]["clusterRoleSelectors"].as_array() {
        let mut selectors = existing["aggregationRule"]["clusterRoleSelectors"].as_array().cloned().unwrap_or_default();
        for s in want {
            if !selectors.contains(s) {
                selectors.push(s.clone());
            }
        }
        out["aggregationRule"] = json!({ "clusterRoleSelectors": selectors });
    }
    (out != *existing).then_some(out)
}

/// The reconciled form of an existing binding: Some((object, recreate)) when it must change
/// (`recreate`: the roleRef differs, which cannot be updated in place).
fn reconcile_binding(expected: &Value, existing: &Value) -> Option<(Value, bool)> {
    if expected["roleRef"] != existing["roleRef"] {
        let mut out = expected.clone();
        for field in ["labels", "annotations"] {
            out["metadata"][field] = merge_map(&expected["metadata"][field], &existing["metadata"][field]);
        }
        return Some((out, true));
    }
    let mut out = existing.clone();
    for field in ["labels", "annotations"] {
        let merged = merge_map(&expected["metadata"][field], &existing["metadata"][field]);
        if merged.as_object().is_some_and(|m| !m.is_empty()) {
            out["metadata"][field] = merged;
        }
    }
    let mut subjects = existing["subjects"].as_array().cloned().unwrap_or_default();
    for s in expected["subjects"].as_array().into_iter().flatten() {
        if !subjects.contains(s) {
            subjects.push(s.clone());
        }
    }
    if !subjects.is_empty() {
        out["subjects"] = json!(subjects);
    }
    (out != *existing).then_some((out, false))
}

/// `system:node` without the `system:nodes` group earlier strata versions added, if it has it.
fn drop_old_node_subject(kind: &str, name: &str, binding: &Value) -> Option<Value> {
    if kind != "ClusterRoleBinding" || name != "system:node" {
        return None;
    }
    let subjects = binding["subjects"].as_array()?;
    let kept: Vec<Value> = subjects.iter().filter(|s| !(s["kind"] == "Group" && s["name"] == "system:nodes")).cloned().collect();
    if kept.len() == subjects.len() {
        return None;
    }
    let mut out = binding.clone();
    out["subjects"] = json!(kept);
    Some(out)
}

fn new_object(mut obj: Value) -> Value {
    obj["metadata"]["uid"] = json!(crate::object::uuid());
    obj["metadata"]["creationTimestamp"] = json!(crate::object::now());
    obj
}

/// Reconcile the bootstrap policy into `store`. Lost races with another server or a user are
/// retried once from the new state, then left to the next start.
pub async fn reconcile(store: &dyn Store) -> Result<(), PolicyError> {
    let defaults = defaults()?;
    for (list, plural) in [("clusterRoles", "clusterroles"), ("roles", "roles"), ("clusterRoleBindings", "clusterrolebindings"), ("roleBindings", "rolebindings")] {
        let r = resources::find(rbac::GROUP, "v1", plural).ok_or(PolicyError::Unregistered)?;
        let err = |key: &str| {
            let key = key.to_string();
            move |source| PolicyError::Store { key, source }
        };
        let page = store.list(&r.key_prefix(), None, 0).await.map_err(err(&r.key_prefix()))?;
        let mut existing: HashMap<String, (Value, u64)> = HashMap::new();
        for kv in page.items {
            if let Ok(v) = serde_json::from_slice::<Value>(&kv.value) {
                existing.insert(kv.key, (v, kv.mod_revision));
            }
        }
        for expected in defaults[list].as_array().into_iter().flatten() {
            let name = expected["metadata"]["name"].as_str().unwrap_or("");
            let key = r.key(expected["metadata"]["namespace"].as_str(), name);
            let Some((current, rev)) = existing.get(&key) else {
                match store.create(&key, crate::object::for_storage(&new_object(expected.clone()))).await {
                    Ok(_) | Err(strata_store::Error::AlreadyExists(_)) => {}
                    Err(e) => return Err(err(&key)(e)),
                }
                continue;
            };
            if current["metadata"]["annotations"][AUTOUPDATE] == "false" {
                continue;
            }
            // Earlier strata bound `system:nodes` to `system:node` itself (before it had a Node
            // authorizer); that subject is taken away again, so nodes get only what the Node
            // authorizer gives them, as upstream.
            let migrated = drop_old_node_subject(r.kind, name, current);
            let current = migrated.as_ref().unwrap_or(current);
            let write = if r.kind.ends_with("Binding") {
                match reconcile_binding(expected, current).or(migrated.clone().map(|m| (m, false))) {
                    Some((obj, true)) => {
                        // A changed roleRef: delete and create again (as upstream).
                        match store.delete(&key, *rev).await {
                            Ok(_) => {}
                            Err(strata_store::Error::Conflict { .. } | strata_store::Error::NotFound(_)) => continue,
                            Err(e) => return Err(err(&key)(e)),
                        }
                        match store.create(&key, crate::object::for_storage(&new_object(obj))).await {
                            Ok(_) | Err(strata_store::Error::AlreadyExists(_)) => {}
                            Err(e) => return Err(err(&key)(e)),
                        }
                        continue;
                    }
                    Some((obj, false)) => Some(obj),
                    None => None,
                }
            } else {
                reconcile_role(expected, current)
            };
            if let Some(obj) = write {
                tracing::info!(%key, "reconciling bootstrap RBAC object");
                match store.update(&key, crate::object::for_storage(&obj), *rev).await {
                    Ok(_) | Err(strata_store::Error::Conflict { .. } | strata_store::Error::NotFound(_)) => {}
                    Err(e) => return Err(err(&key)(e)),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_upstreams() {
        let names = cluster_role_names();
        for want in ["cluster-admin", "admin", "edit", "view", "system:basic-user", "system:discovery", "system:public-info-viewer", "system:monitoring", "system:node", "system:kube-scheduler", "system:kube-controller-manager"] {
            assert!(names.iter().any(|n| n == want), "{want} missing");
        }
        let d = defaults().expect("policy");
        let binding = |name: &str| d["clusterRoleBindings"].as_array().and_then(|a| a.iter().find(|b| b["metadata"]["name"] == name).cloned()).expect(name);
        assert_eq!(binding("cluster-admin")["subjects"][0]["name"], "system:masters");
        // Nodes are the Node authorizer's: upstream's binding has no subjects.
        assert!(binding("system:node")["subjects"].as_array().is_none_or(|s| s.is_empty()));
        assert_eq!(binding("strata:node-autoapprove-bootstrap")["subjects"][0]["name"], "system:bootstrappers");
        let viewer = binding("system:public-info-viewer");
        let public: Vec<&str> = viewer["subjects"].as_array().expect("subjects").iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(public, ["system:authenticated", "system:unauthenticated"]);
    }

    #[test]
    fn reconciling_keeps_user_changes_and_adds_what_is_missing() {
        let expected = json!({"metadata": {"name": "r", "labels": {"a": "1"}, "annotations": {AUTOUPDATE: "true"}},
                              "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]});
        // The user added a label and a rule, and dropped "list".
        let existing = json!({"metadata": {"name": "r", "labels": {"mine": "x"}, "annotations": {AUTOUPDATE: "true"}},
                              "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
        let out = reconcile_role(&expected, &existing).expect("changes");
        assert_eq!(out["metadata"]["labels"], json!({"a": "1", "mine": "x"}));
        assert_eq!(out["rules"].as_array().map(Vec::len), Some(3));
        assert_eq!(out["rules"][2], json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}));
        assert!(reconcile_role(&expected, &out).is_none(), "reconciled twice changes nothing");
        let b = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "x"}, "subjects": [{"kind": "Group", "name": "g"}]});
        let mine = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "x"}, "subjects": [{"kind": "User", "name": "u"}]});
        let (out, recreate) = reconcile_binding(&b, &mine).expect("changes");
        assert!(!recreate);
        assert_eq!(out["subjects"].as_array().map(Vec::len), Some(2));
        let old_node = json!({"metadata": {"name": "system:node"}, "subjects": [{"kind": "Group", "name": "system:nodes"}, {"kind": "User", "name": "u"}]});
        assert_eq!(drop_old_node_subject("ClusterRoleBinding", "system:node", &old_node).expect("migrated")["subjects"], json!([{"kind": "User", "name": "u"}]));
        assert!(drop_old_node_subject("ClusterRoleBinding", "other", &old_node).is_none());
        let other = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "y"}});
        assert!(reconcile_binding(&b, &other).expect("changes").1);
    }
}
