//! Authentication (bearer tokens, client certificates) and authorization (RBAC with the
//! built-in semantics; the `system:masters` group is allowed everything, as in Kubernetes).

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use strata_store::Store;

use crate::api::RequestInfo;
use crate::resources;
use crate::status::ApiError;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    pub fn new(name: &str, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self { name: name.into(), groups }
    }
}

/// Static bearer tokens, from a CSV file like kube-apiserver's `--token-auth-file`:
/// `token,user,uid,"group1,group2"`.
#[derive(Clone, Debug, Default)]
pub struct Tokens(HashMap<String, User>);

impl Tokens {
    pub fn load(path: &Path) -> std::io::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut map = HashMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let mut fields = Vec::new();
            let mut cur = String::new();
            let mut quoted = false;
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields.push(std::mem::take(&mut cur)),
                    _ => cur.push(c),
                }
            }
            fields.push(cur);
            if fields.len() >= 2 && !fields[0].is_empty() {
                let groups: Vec<&str> = fields.get(3).map(|g| g.split(',').filter(|s| !s.is_empty()).collect()).unwrap_or_default();
                map.insert(fields[0].clone(), User::new(&fields[1], &groups));
            }
        }
        Self(map)
    }

    pub fn user(&self, token: &str) -> Option<User> {
        self.0.get(token).cloned()
    }
}

/// The user named by a verified client certificate: CN is the name, each O a group.
pub fn user_from_cert(der: &[u8]) -> Option<User> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups: Vec<String> = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    Some(User::new(&cn, &refs))
}

/// RBAC over Role/ClusterRole/RoleBinding/ClusterRoleBinding objects in the store.
#[derive(Clone, Debug, Default)]
pub struct Authorizer;

fn subject_matches(subject: &Value, user: &User) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str().unwrap_or("") {
        "User" => name == user.name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject["namespace"].as_str().unwrap_or("");
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn rule_allows(rule: &Value, verb: &str, info: &RequestInfo) -> bool {
    let has = |field: &str, want: &str| {
        rule[field].as_array().is_some_and(|a| a.iter().any(|v| v == "*" || v.as_str() == Some(want)))
    };
    let resource = match &info.subresource {
        Some(sub) => format!("{}/{sub}", info.resource.plural),
        None => info.resource.plural.to_string(),
    };
    let names_ok = match rule["resourceNames"].as_array() {
        Some(names) if !names.is_empty() => info.name.as_deref().is_some_and(|n| names.iter().any(|v| v.as_str() == Some(n))),
        _ => true,
    };
    has("verbs", verb) && has("apiGroups", info.resource.group) && has("resources", &resource) && names_ok
}

impl Authorizer {
    /// May `user` do `verb` on what `info` addresses?
    pub async fn allowed(&self, store: &dyn Store, user: &User, verb: &str, info: &RequestInfo) -> Result<bool, ApiError> {
        if user.groups.iter().any(|g| g == "system:masters") {
            return Ok(true);
        }
        let find = |plural| resources::find("rbac.authorization.k8s.io", "v1", plural).ok_or_else(|| ApiError::internal("rbac kinds missing"));
        let load = |v: &[u8]| serde_json::from_slice::<Value>(v).unwrap_or(Value::Null);
        // Cluster-wide grants.
        let crbs = store.list(&find("clusterrolebindings")?.key_prefix(), None, 0).await?;
        for b in crbs.items.iter().map(|kv| load(&kv.value)) {
            if b["subjects"].as_array().is_some_and(|s| s.iter().any(|s| subject_matches(s, user)))
                && self.role_allows(store, &b["roleRef"], None, verb, info).await?
            {
                return Ok(true);
            }
        }
        // Namespaced grants apply to requests within that namespace.
        if let (Some(ns), true) = (info.namespace.as_deref(), info.resource.namespaced) {
            let rbs = store.list(&find("rolebindings")?.list_prefix(Some(ns)), None, 0).await?;
            for b in rbs.items.iter().map(|kv| load(&kv.value)) {
                if b["subjects"].as_array().is_some_and(|s| s.iter().any(|s| subject_matches(s, user)))
                    && self.role_allows(store, &b["roleRef"], Some(ns), verb, info).await?
                {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    async fn role_allows(&self, store: &dyn Store, role_ref: &Value, ns: Option<&str>, verb: &str, info: &RequestInfo) -> Result<bool, ApiError> {
        let name = role_ref["name"].as_str().unwrap_or("");
        let key = match role_ref["kind"].as_str() {
            Some("ClusterRole") => resources::find("rbac.authorization.k8s.io", "v1", "clusterroles").map(|r| r.key(None, name)),
            Some("Role") => resources::find("rbac.authorization.k8s.io", "v1", "roles").map(|r| r.key(ns, name)),
            _ => None,
        };
        let Some(key) = key else { return Ok(false) };
        let Some(kv) = store.get(&key).await? else { return Ok(false) };
        let role: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        Ok(role["rules"].as_array().is_some_and(|rules| rules.iter().any(|r| rule_allows(r, verb, info))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_file() {
        let t = Tokens::parse("# comment\nabc,alice,1,\"dev,ops\"\nxyz,bob,2\n");
        let a = t.user("abc").expect("alice");
        assert_eq!(a.name, "alice");
        assert!(a.groups.contains(&"dev".to_string()) && a.groups.contains(&"ops".to_string()));
        assert_eq!(t.user("xyz").expect("bob").name, "bob");
        assert!(t.user("nope").is_none());
    }

    #[test]
    fn rules() {
        let cm = resources::find("", "v1", "configmaps").expect("cm");
        let info = RequestInfo { resource: cm, namespace: Some("a".into()), name: Some("x".into()), subresource: None };
        assert!(rule_allows(&json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}), "get", &info));
        assert!(!rule_allows(&json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}), "get", &info));
        assert!(!rule_allows(&json!({"apiGroups": ["apps"], "resources": ["*"], "verbs": ["*"]}), "get", &info));
        assert!(rule_allows(&json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}), "delete", &info));
        assert!(!rule_allows(&json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["y"]}), "get", &info));
        let u = User::new("system:serviceaccount:a:builder", &[]);
        assert!(subject_matches(&json!({"kind": "ServiceAccount", "name": "builder", "namespace": "a"}), &u));
        assert!(subject_matches(&json!({"kind": "Group", "name": "system:authenticated"}), &u));
    }
}
