//! Authentication: bearer tokens (a static token file, service account tokens, bootstrap tokens) and client
//! certificates. Authorization is [`crate::rbac`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::Value;
use strata_store::Store;

/// The audience of tokens meant for this API server (kube-apiserver's usual
/// `--api-audiences`, the service account issuer).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
    pub uid: String,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// The user as authentication.k8s.io's `UserInfo` (reviews, audit events).
    pub fn info(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "username": self.name, "groups": self.groups });
        if !self.uid.is_empty() {
            v["uid"] = serde_json::json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }

    pub fn new(name: &str, groups: &[&str]) -> Self {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        Self { name: name.into(), groups, uid: String::new(), extra: BTreeMap::new() }
    }

    /// The caller who presented no credentials (`system:anonymous`, in
    /// `system:unauthenticated` only).
    pub fn anonymous() -> Self {
        Self { name: "system:anonymous".into(), groups: vec!["system:unauthenticated".into()], uid: String::new(), extra: BTreeMap::new() }
    }
}

/// Everything that turns a bearer token into a user: the static token file and
/// ServiceAccount tokens (JWTs of [`crate::satoken`]).
#[derive(Debug, Default)]
pub struct Authenticator {
    pub tokens: Tokens,
    pub signer: Option<crate::satoken::Signer>,
    /// Bootstrap tokens (`<id>.<secret>`, [`crate::bootstrap`]).
    pub bootstrap: Option<crate::bootstrap::Tokens>,
}

impl Authenticator {
    /// The user a bearer token names and the audiences (of `wanted`, else this API server's)
    /// it is good for; `Err` says why it is not valid.
    pub async fn review(&self, store: &dyn Store, token: &str, wanted: &[String]) -> Result<(User, Vec<String>), String> {
        let audiences = if wanted.is_empty() { vec![API_AUDIENCE.to_string()] } else { wanted.to_vec() };
        // Static tokens are good for any audience (as upstream's token file).
        if let Some(u) = self.tokens.user(token) {
            return Ok((u, audiences));
        }
        if let Some(b) = &self.bootstrap {
            if let Some(r) = b.authenticate(token).await {
                return r.map(|u| (u, audiences)).map_err(|e| format!("invalid bearer token, {e}"));
            }
        }
        match &self.signer {
            Some(signer) if token.matches('.').count() == 2 => self.service_account(signer, store, token, &audiences).await,
            _ => Err("invalid bearer token".into()),
        }
    }

    /// A ServiceAccount token: signed by this server, for one of `audiences`, not expired, and
    /// its ServiceAccount and bound object (Pod or Secret) still there with the same uids.
    async fn service_account(&self, signer: &crate::satoken::Signer, store: &dyn Store, token: &str, audiences: &[String]) -> Result<(User, Vec<String>), String> {
        let claims = signer.verify(token).map_err(|e| format!("invalid bearer token, {e}"))?;
        let aud: Vec<&str> = claims["aud"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let good: Vec<String> = audiences.iter().filter(|a| aud.contains(&a.as_str())).cloned().collect();
        if good.is_empty() {
            return Err(format!("token audiences {aud:?} is invalid for the target audiences {audiences:?}"));
        }
        let k = &claims["kubernetes.io"];
        let ns = k["namespace"].as_str().unwrap_or("");
        let sa = &k["serviceaccount"];
        let (name, uid) = (sa["name"].as_str().unwrap_or(""), sa["uid"].as_str().unwrap_or(""));
        let mut extra = BTreeMap::new();
        extra.insert("authentication.kubernetes.io/credential-id".to_string(), vec![format!("JTI={}", claims["jti"].as_str().unwrap_or(""))]);
        for (kind, plural, live) in [("serviceaccount", "serviceaccounts", sa), ("pod", "pods", &k["pod"]), ("secret", "secrets", &k["secret"])] {
            if !live.is_object() {
                continue;
            }
            let obj_name = live["name"].as_str().unwrap_or("");
            let want_uid = live["uid"].as_str().unwrap_or("");
            let r = crate::resources::find("", "v1", plural).ok_or("kinds missing")?;
            let found = store.get(&r.key(Some(ns), obj_name)).await.map_err(|e| e.to_string())?;
            let obj: Value = found.and_then(|kv| serde_json::from_slice(&kv.value).ok()).unwrap_or(Value::Null);
            if obj["metadata"]["uid"].as_str() != Some(want_uid) || !obj["metadata"]["deletionTimestamp"].is_null() {
                return Err(format!("invalid bearer token, {kind} {ns}/{obj_name} (uid {want_uid}) is no longer there"));
            }
            if kind == "pod" {
                extra.insert("authentication.kubernetes.io/pod-name".to_string(), vec![obj_name.to_string()]);
                extra.insert("authentication.kubernetes.io/pod-uid".to_string(), vec![want_uid.to_string()]);
            }
        }
        let user = User {
            name: format!("system:serviceaccount:{ns}:{name}"),
            groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}"), "system:authenticated".into()],
            uid: uid.to_string(),
            extra,
        };
        Ok((user, good))
    }

    /// The user of a bearer token presented to this API server, if it is valid.
    pub async fn authenticate(&self, store: &dyn Store, token: &str) -> Option<User> {
        self.review(store, token, &[]).await.ok().map(|(u, _)| u)
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
                let mut user = User::new(&fields[1], &groups);
                user.uid = fields.get(2).cloned().unwrap_or_default();
                map.insert(fields[0].clone(), user);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file() {
        let t = Tokens::parse("# comment\nabc,alice,1,\"dev,ops\"\nxyz,bob,2\n");
        let a = t.user("abc").expect("alice");
        assert_eq!(a.name, "alice");
        assert!(a.groups.contains(&"dev".to_string()) && a.groups.contains(&"ops".to_string()));
        assert_eq!(t.user("xyz").expect("bob").name, "bob");
        assert!(t.user("nope").is_none());
    }
}
