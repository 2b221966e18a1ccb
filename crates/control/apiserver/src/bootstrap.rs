//! Bootstrap tokens, as upstream's: Secrets `kube-system/bootstrap-token-<id>` of type
//! `bootstrap.kubernetes.io/token` (what `strata token create` writes), the authenticator that
//! accepts `<id>.<secret>` as `system:bootstrap:<id>` in `system:bootstrappers` (plus the
//! token's `auth-extra-groups`), the cleaner that deletes expired token Secrets (upstream's
//! tokencleaner) and the `kube-public/cluster-info` ConfigMap that hands the cluster's CA to
//! anyone who asks (upstream's bootstrapsigner publishes it; a joining node trusts it only if
//! its hash matches the pin in its token).
//!
//! Token Secrets are read from the watch cache (no store read per request); a token the cache
//! does not know yet (created a moment ago) is looked up again once the cache has caught up
//! with the store.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use strata_store::Store;

use crate::auth::User;
use crate::watchcache::WatchCache;

/// Where token Secrets live.
pub const NAMESPACE: &str = "kube-system";
/// Their names: this and the token id.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// Their type.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Every bootstrap token's group.
pub const GROUP: &str = "system:bootstrappers";
/// The extra group of the tokens `strata token create` makes (kubeadm's is
/// `system:bootstrappers:kubeadm:default-node-token`).
pub const DEFAULT_EXTRA_GROUP: &str = "system:bootstrappers:strata:default-node-token";
/// The cluster-info ConfigMap's path: the one resource anonymous callers may ask for.
pub const CLUSTER_INFO_PATH: &str = "/api/v1/namespaces/kube-public/configmaps/cluster-info";
/// How often expired tokens are looked for.
const CLEAN_EVERY: Duration = Duration::from_secs(2);
/// How long an unknown token waits for the cache to reach the store's revision.
const SYNC_WAIT: Duration = Duration::from_secs(2);

/// Split `<id>.<secret>` (id: 6 of `[a-z0-9]`, secret: 16), or None when `token` does not have
/// a bootstrap token's shape.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// The store key of token `id`'s Secret.
pub fn secret_key(id: &str) -> String {
    format!("/registry/core/secrets/{NAMESPACE}/{SECRET_PREFIX}{id}")
}

fn data(secret: &Value, key: &str) -> Option<String> {
    let b = base64::engine::general_purpose::STANDARD.decode(secret["data"][key].as_str()?).ok()?;
    String::from_utf8(b).ok()
}

/// Compare without an early exit (the secret is compared against a guess).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Is the token Secret past its `expiration` (RFC 3339)? One without is not; one with an
/// unreadable date is (as upstream, which refuses it).
pub fn expired(secret: &Value, now: chrono::DateTime<chrono::Utc>) -> bool {
    match data(secret, "expiration") {
        None => false,
        Some(s) => chrono::DateTime::parse_from_rfc3339(&s).map_or(true, |t| t <= now),
    }
}

/// The user of a bootstrap token Secret presented with `id` and `secret`, or why not.
pub fn user_of(obj: &Value, id: &str, secret: &str, now: chrono::DateTime<chrono::Utc>) -> Result<User, String> {
    if obj["type"] != SECRET_TYPE || obj["metadata"]["name"].as_str() != Some(&format!("{SECRET_PREFIX}{id}")) {
        return Err("invalid bootstrap token".into());
    }
    if !obj["metadata"]["deletionTimestamp"].is_null() {
        return Err(format!("bootstrap token {id} is being deleted"));
    }
    if data(obj, "token-id").as_deref() != Some(id) || !same(data(obj, "token-secret").unwrap_or_default().as_bytes(), secret.as_bytes()) {
        return Err("invalid bootstrap token".into());
    }
    if data(obj, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return Err(format!("bootstrap token {id} is not usable for authentication"));
    }
    if expired(obj, now) {
        return Err(format!("bootstrap token {id} has expired"));
    }
    let mut groups = vec![GROUP.to_string()];
    for g in data(obj, "auth-extra-groups").unwrap_or_default().split(',').map(str::trim).filter(|g| !g.is_empty()) {
        // As upstream: only groups under system:bootstrappers: may be granted by a token.
        if !g.starts_with("system:bootstrappers:") {
            return Err(format!("bootstrap token {id} has an invalid extra group {g:?}"));
        }
        if !groups.iter().any(|have| have == g) {
            groups.push(g.to_string());
        }
    }
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    Ok(User::new(&format!("system:bootstrap:{id}"), &refs))
}

/// The bootstrap-token authenticator over the watch cache.
pub struct Tokens {
    pub cache: Arc<WatchCache>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bootstrap::Tokens")
    }
}

impl Tokens {
    /// None when `token` is not shaped as a bootstrap token (other authenticators may know it);
    /// otherwise its user or why it is refused.
    pub async fn authenticate(&self, token: &str) -> Option<Result<User, String>> {
        let (id, secret) = parse(token)?;
        let key = secret_key(id);
        let found = match self.cache.get(&key) {
            Some(b) => Some(b),
            None => {
                self.cache.sync(SYNC_WAIT).await;
                self.cache.get(&key)
            }
        };
        let Some(bytes) = found else {
            return Some(Err(format!("bootstrap token {id} not found")));
        };
        let obj: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Some(user_of(&obj, id, secret, chrono::Utc::now()))
    }
}

/// Delete expired token Secrets for ever (upstream's tokencleaner).
pub async fn clean_expired(store: Arc<dyn Store>) {
    let prefix = format!("/registry/core/secrets/{NAMESPACE}/{SECRET_PREFIX}");
    loop {
        match store.list(&prefix, None, 0).await {
            Ok(page) => {
                let now = chrono::Utc::now();
                for kv in page.items {
                    let Ok(obj) = serde_json::from_slice::<Value>(&kv.value) else { continue };
                    if obj["type"] == SECRET_TYPE && expired(&obj, now) {
                        match store.delete(&kv.key, kv.mod_revision).await {
                            Ok(_) => tracing::info!(key = %kv.key, "deleted an expired bootstrap token"),
                            Err(e) => tracing::debug!(key = %kv.key, error = %e, "deleting an expired bootstrap token"),
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing bootstrap tokens"),
        }
        tokio::time::sleep(CLEAN_EVERY).await;
    }
}

/// The `kube-public/cluster-info` ConfigMap's kubeconfig: the server and its CA, no user.
pub fn cluster_info_kubeconfig(server_url: &str, ca_pem: &[u8]) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!("apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    certificate-authority-data: {ca}\n    server: {server_url}\ncontexts: null\ncurrent-context: \"\"\npreferences: {{}}\nusers: null\n")
}

/// Create or bring up to date `kube-public/cluster-info` (readable anonymously: see the
/// bootstrap policy's `strata:bootstrap-signer-clusterinfo` Role).
pub async fn publish_cluster_info(store: &dyn Store, server_url: &str, ca_pem: &[u8]) -> Result<(), strata_store::Error> {
    publish_config_map(store, "kube-public", "cluster-info", "kubeconfig", &cluster_info_kubeconfig(server_url, ca_pem), true).await
}

/// The ConfigMaps kube-apiserver keeps in `kube-system` for others to read:
/// `extension-apiserver-authentication` with the CA its client certificates are checked
/// against (`client-ca-file`; aggregated API servers and webhook servers that delegate
/// authentication read it, through the bootstrap policy's
/// `extension-apiserver-authentication-reader` Role), brought up to date at every start, and
/// `kube-apiserver-legacy-service-account-token-tracking` with the day tracking began
/// (`since`, `2006-01-02`), made once: kube-controller-manager's legacy token cleaner reads it.
pub async fn publish_system_config_maps(store: &dyn Store, client_ca_pem: &[u8]) -> Result<(), strata_store::Error> {
    let ca = String::from_utf8_lossy(client_ca_pem);
    publish_config_map(store, "kube-system", "extension-apiserver-authentication", "client-ca-file", &ca, true).await?;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    publish_config_map(store, "kube-system", "kube-apiserver-legacy-service-account-token-tracking", "since", &today, false).await
}

/// Create ConfigMap `ns/name` with `data[key] = value`; an existing one gets the value only with
/// `overwrite` (the rest of it is kept).
async fn publish_config_map(store: &dyn Store, ns: &str, name: &str, key: &str, value: &str, overwrite: bool) -> Result<(), strata_store::Error> {
    let path = format!("/registry/core/configmaps/{ns}/{name}");
    for _ in 0..5 {
        match store.get(&path).await? {
            Some(kv) => {
                let mut obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                if !overwrite || obj["data"][key] == value {
                    return Ok(());
                }
                obj["data"][key] = json!(value);
                match store.update(&path, crate::object::for_storage(&obj), kv.mod_revision).await {
                    Ok(_) => return Ok(()),
                    Err(strata_store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(e),
                }
            }
            None => {
                let obj = json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": { "name": name, "namespace": ns, "uid": crate::object::uuid(), "creationTimestamp": crate::object::now() },
                    "data": { key: value },
                });
                match store.create(&path, crate::object::for_storage(&obj)).await {
                    Ok(_) => return Ok(()),
                    Err(strata_store::Error::AlreadyExists(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(id: &str, secret: &str, extra: &[(&str, &str)]) -> Value {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut data = serde_json::Map::new();
        data.insert("token-id".into(), json!(b(id)));
        data.insert("token-secret".into(), json!(b(secret)));
        data.insert("usage-bootstrap-authentication".into(), json!(b("true")));
        for (k, v) in extra {
            data.insert(k.to_string(), json!(b(v)));
        }
        json!({"type": SECRET_TYPE, "metadata": {"name": format!("{SECRET_PREFIX}{id}"), "namespace": NAMESPACE}, "data": data})
    }

    #[test]
    fn token_shape() {
        assert_eq!(parse("abcdef.0123456789abcdef"), Some(("abcdef", "0123456789abcdef")));
        for bad in ["abcdef", "abcde.0123456789abcdef", "ABCDEF.0123456789abcdef", "abcdef.0123456789abcde", "a.b.c", "abcdef.0123456789abcdeF"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn users_of_tokens() {
        let now = chrono::Utc::now();
        let s = secret("abcdef", "0123456789abcdef", &[("auth-extra-groups", DEFAULT_EXTRA_GROUP), ("expiration", "2999-01-01T00:00:00Z")]);
        let u = user_of(&s, "abcdef", "0123456789abcdef", now).expect("valid");
        assert_eq!(u.name, "system:bootstrap:abcdef");
        assert_eq!(u.groups, [GROUP, DEFAULT_EXTRA_GROUP, "system:authenticated"]);
        assert!(user_of(&s, "abcdef", "0123456789abcdeX", now).is_err(), "wrong secret");
        let old = secret("abcdef", "0123456789abcdef", &[("expiration", "2001-01-01T00:00:00Z")]);
        assert!(user_of(&old, "abcdef", "0123456789abcdef", now).unwrap_err().contains("expired"));
        let bad_group = secret("abcdef", "0123456789abcdef", &[("auth-extra-groups", "system:masters")]);
        assert!(user_of(&bad_group, "abcdef", "0123456789abcdef", now).is_err(), "a token cannot grant system:masters");
        let mut no_auth = secret("abcdef", "0123456789abcdef", &[]);
        no_auth["data"]["usage-bootstrap-authentication"] = json!(base64::engine::general_purpose::STANDARD.encode("false"));
        assert!(user_of(&no_auth, "abcdef", "0123456789abcdef", now).is_err());
        let mut wrong_type = s.clone();
        wrong_type["type"] = json!("Opaque");
        assert!(user_of(&wrong_type, "abcdef", "0123456789abcdef", now).is_err());
    }
}
