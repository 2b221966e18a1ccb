//! Encryption of resources at rest, configured as kube-apiserver's is
//! (`--encryption-provider-config`, an `apiserver.config.k8s.io/v1` `EncryptionConfiguration`):
//!
//! ```yaml
//! apiVersion: apiserver.config.k8s.io/v1
//! kind: EncryptionConfiguration
//! resources:
//! - resources: [secrets]          # also configmaps, deployments.apps, *.apps, *. (core), *.*
//!   providers:
//!   - aesgcm: {keys: [{name: key2, secret: <base64 of 16, 24 or 32 bytes>}]}
//!   - aescbc: {keys: [{name: key1, secret: <base64 of 16, 24 or 32 bytes>}]}
//!   - secretbox: {keys: [{name: key0, secret: <base64 of 32 bytes>}]}
//!   - identity: {}
//! ```
//!
//! [`EncryptedStore`] is a [`Store`] decorator: values under the configured resources' keys are
//! written with the first provider's first key and read with whichever provider's prefix they
//! carry, so everything above it (the API, watch caches) sees plain values. Stored values have
//! upstream's form: `k8s:enc:<provider>:v1:<key name>:` then, for `aescbc`, a random IV and the
//! AES-CBC ciphertext (PKCS#7); for `aesgcm`, a random 12-byte nonce and the AES-GCM ciphertext
//! with the storage key as authenticated data (a value cannot be moved to another key); for
//! `secretbox`, a random 24-byte nonce and the XSalsa20-Poly1305 box. `identity` stores plain
//! values (and reads any value without an encryption prefix). Key rotation is upstream's: add
//! the new key first, restart, re-write every object (`kubectl get secrets -A -o json | kubectl
//! replace -f -`: a value read with any provider but the first is [`Store::stale`], so an
//! unchanged object is still written again), then drop the old key.

use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use base64::Engine;
use futures_util::StreamExt;
use rand::RngCore;
use serde::Deserialize;
use strata_store::{Compare, Error, Event, KeyValue, ListResult, Op, Result, Store, WatchStream};

use crate::resources;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an EncryptionConfiguration: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Config {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
struct ResourceConfig {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<ProviderConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderConfig {
    aescbc: Option<KeysConfig>,
    aesgcm: Option<KeysConfig>,
    secretbox: Option<KeysConfig>,
    identity: Option<serde_json::Value>,
    kms: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct KeysConfig {
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

#[derive(Deserialize)]
struct KeyConfig {
    name: String,
    secret: String,
}

enum Cipher {
    Identity,
    AesCbc(Vec<u8>),
    AesGcm(Vec<u8>),
    SecretBox([u8; 32]),
}

/// One provider with one key, and the prefix its values carry.
struct Transformer {
    prefix: Vec<u8>,
    cipher: Cipher,
}

/// Every value that starts with this is encrypted by some provider.
const ENCRYPTED: &[u8] = b"k8s:enc:";

/// The transformers of one `resources` stanza, for the store keys of its resources.
struct Rule {
    key_prefixes: Vec<String>,
    /// In order: the first writes, all read.
    transformers: Vec<Transformer>,
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// The store key prefixes of `name` (`secrets`, `deployments.apps`, `*.apps`, `*.` for the core
/// group, `*.*`).
fn key_prefixes(name: &str) -> std::result::Result<Vec<String>, ConfigError> {
    let (plural, group) = name.split_once('.').unwrap_or((name, ""));
    let matches: Vec<String> = resources::RESOURCES
        .iter()
        .filter(|r| match (plural, group) {
            ("*", "*") => true,
            ("*", g) => r.group == g,
            (p, g) => r.plural == p && r.group == g,
        })
        .map(|r| r.key_prefix())
        .collect();
    if matches.is_empty() {
        return Err(invalid(format!("resources: {name:?} is not a resource this server serves")));
    }
    Ok(matches)
}

fn transformers(p: &ProviderConfig) -> std::result::Result<Vec<Transformer>, ConfigError> {
    let given = [p.aescbc.is_some(), p.aesgcm.is_some(), p.secretbox.is_some(), p.identity.is_some(), p.kms.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(invalid("providers: each entry must name exactly one provider (aescbc, aesgcm, secretbox or identity)"));
    }
    if p.kms.is_some() {
        return Err(invalid("providers: kms is not supported (use aescbc, aesgcm, secretbox or identity)"));
    }
    if p.identity.is_some() {
        return Ok(vec![Transformer { prefix: Vec::new(), cipher: Cipher::Identity }]);
    }
    let (kind, keys, sizes): (&str, &KeysConfig, &[usize]) = match (&p.aescbc, &p.aesgcm, &p.secretbox) {
        (Some(k), _, _) => ("aescbc", k, &[16, 24, 32]),
        (_, Some(k), _) => ("aesgcm", k, &[16, 24, 32]),
        (_, _, Some(k)) => ("secretbox", k, &[32]),
        _ => return Err(invalid("providers: no provider given")),
    };
    if keys.keys.is_empty() {
        return Err(invalid(format!("{kind}: keys: at least one key is required")));
    }
    let mut out = Vec::new();
    for (i, k) in keys.keys.iter().enumerate() {
        if k.name.is_empty() || k.name.contains(':') {
            return Err(invalid(format!("{kind}: keys[{i}].name: must be non-empty and without ':'")));
        }
        if keys.keys[..i].iter().any(|o| o.name == k.name) {
            return Err(invalid(format!("{kind}: keys[{i}].name: duplicate key name {:?}", k.name)));
        }
        let secret = base64::engine::general_purpose::STANDARD
            .decode(k.secret.trim())
            .map_err(|e| invalid(format!("{kind}: keys[{i}].secret: not base64: {e}")))?;
        if !sizes.contains(&secret.len()) {
            return Err(invalid(format!("{kind}: keys[{i}].secret: {} bytes, expected one of {sizes:?}", secret.len())));
        }
        let cipher = match kind {
            "aescbc" => Cipher::AesCbc(secret),
            "aesgcm" => Cipher::AesGcm(secret),
            _ => Cipher::SecretBox(secret.as_slice().try_into().map_err(|_| invalid("secretbox: a 32-byte key"))?),
        };
        out.push(Transformer { prefix: format!("k8s:enc:{kind}:v1:{}:", k.name).into_bytes(), cipher });
    }
    Ok(out)
}

fn crypto(key: &str, what: &str) -> Error {
    Error::Backend(format!("{what} {key}: the value cannot be decrypted with the configured keys"))
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

macro_rules! with_aes {
    ($key:expr, $t:ident => $body:expr, $err:expr) => {
        match $key.len() {
            16 => { type $t = aes::Aes128; $body }
            24 => { type $t = aes::Aes192; $body }
            32 => { type $t = aes::Aes256; $body }
            _ => Err($err),
        }
    };
}

impl Transformer {
    fn seal(&self, key: &str, plain: &[u8]) -> Result<Vec<u8>> {
        let fail = || Error::Backend(format!("encrypting {key}"));
        let mut out = self.prefix.clone();
        match &self.cipher {
            Cipher::Identity => out.extend_from_slice(plain),
            Cipher::AesCbc(k) => {
                use cbc::cipher::{BlockEncryptMut, KeyIvInit};
                let iv: [u8; 16] = random();
                let ct: Vec<u8> = with_aes!(k, A => cbc::Encryptor::<A>::new_from_slices(k, &iv).map(|c| c.encrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(plain)).map_err(|_| fail()), fail())?;
                out.extend_from_slice(&iv);
                out.extend_from_slice(&ct);
            }
            Cipher::AesGcm(k) => {
                let nonce: [u8; 12] = random();
                let payload = Payload { msg: plain, aad: key.as_bytes() };
                let ct: Vec<u8> = with_aes!(k, A => aes_gcm::AesGcm::<A, aes_gcm::aead::consts::U12>::new_from_slice(k).map_err(|_| fail()).and_then(|c| c.encrypt((&nonce).into(), payload).map_err(|_| fail())), fail())?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
            }
            Cipher::SecretBox(k) => {
                let nonce: [u8; 24] = random();
                let ct = crypto_secretbox::XSalsa20Poly1305::new(k.into()).encrypt((&nonce).into(), plain).map_err(|_| fail())?;
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
            }
        }
        Ok(out)
    }

    /// The plain value of `data` (without this transformer's prefix).
    fn open(&self, key: &str, data: &[u8]) -> Result<Vec<u8>> {
        let fail = || crypto(key, "decrypting");
        match &self.cipher {
            Cipher::Identity => Ok(data.to_vec()),
            Cipher::AesCbc(k) => {
                use cbc::cipher::{BlockDecryptMut, KeyIvInit};
                if data.len() < 32 || data.len() % 16 != 0 {
                    return Err(fail());
                }
                let (iv, ct) = data.split_at(16);
                with_aes!(k, A => cbc::Decryptor::<A>::new_from_slices(k, iv).map_err(|_| fail()).and_then(|c| c.decrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(ct).map_err(|_| fail())), fail())
            }
            Cipher::AesGcm(k) => {
                if data.len() < 12 + 16 {
                    return Err(fail());
                }
                let (nonce, ct) = data.split_at(12);
                let payload = Payload { msg: ct, aad: key.as_bytes() };
                with_aes!(k, A => aes_gcm::AesGcm::<A, aes_gcm::aead::consts::U12>::new_from_slice(k).map_err(|_| fail()).and_then(|c| c.decrypt(nonce.into(), payload).map_err(|_| fail())), fail())
            }
            Cipher::SecretBox(k) => {
                if data.len() < 24 + 16 {
                    return Err(fail());
                }
                let (nonce, ct) = data.split_at(24);
                crypto_secretbox::XSalsa20Poly1305::new(k.into()).decrypt(nonce.into(), ct).map_err(|_| fail())
            }
        }
    }
}

impl Rule {
    /// Decrypt `value`; `true` with it when a provider other than the first one read it.
    fn open(&self, key: &str, value: &[u8]) -> Result<(Vec<u8>, bool)> {
        for (i, t) in self.transformers.iter().enumerate() {
            let identity = matches!(t.cipher, Cipher::Identity);
            if identity && value.starts_with(ENCRYPTED) {
                continue;
            }
            if let Some(rest) = value.strip_prefix(t.prefix.as_slice()) {
                return t.open(key, rest).map(|plain| (plain, i != 0));
            }
        }
        Err(Error::Backend(format!("decrypting {key}: no configured provider matches the stored value's prefix")))
    }
}

/// A [`Store`] that encrypts the values of the configured resources (see the module header).
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    rules: Arc<Vec<Rule>>,
}

impl EncryptedStore {
    /// Wrap `inner` with the `EncryptionConfiguration` in `path`.
    pub fn from_file(inner: Arc<dyn Store>, path: &Path) -> std::result::Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: p.clone(), source })?;
        Self::from_config(inner, &text).map_err(|e| match e {
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("{p}: {m}")),
            ConfigError::Parse { source, .. } => ConfigError::Parse { path: p, source },
            other => other,
        })
    }

    /// Wrap `inner` with an `EncryptionConfiguration` given as YAML (or JSON).
    pub fn from_config(inner: Arc<dyn Store>, yaml: &str) -> std::result::Result<Self, ConfigError> {
        let cfg: Config = serde_yaml_ng::from_str(yaml).map_err(|source| ConfigError::Parse { path: String::new(), source })?;
        if cfg.api_version != "apiserver.config.k8s.io/v1" || cfg.kind != "EncryptionConfiguration" {
            return Err(invalid(format!(
                "expected apiVersion apiserver.config.k8s.io/v1 and kind EncryptionConfiguration, got {} {}",
                cfg.api_version, cfg.kind
            )));
        }
        let mut rules = Vec::new();
        for (i, rc) in cfg.resources.iter().enumerate() {
            if rc.resources.is_empty() || rc.providers.is_empty() {
                return Err(invalid(format!("resources[{i}]: both resources and providers are required")));
            }
            let mut key_prefixes = Vec::new();
            for name in &rc.resources {
                key_prefixes.extend(key_prefixes_of(name)?);
            }
            let mut ts = Vec::new();
            for p in &rc.providers {
                ts.extend(transformers(p)?);
            }
            rules.push(Rule { key_prefixes, transformers: ts });
        }
        Ok(Self { inner, rules: Arc::new(rules) })
    }
}

fn key_prefixes_of(name: &str) -> std::result::Result<Vec<String>, ConfigError> {
    key_prefixes(name.trim())
}

/// The first rule naming `key`'s resource.
fn rule_for<'a>(rules: &'a [Rule], key: &str) -> Option<&'a Rule> {
    rules.iter().find(|r| r.key_prefixes.iter().any(|p| key.starts_with(p.as_str())))
}

fn open_kv(rules: &[Rule], mut kv: KeyValue) -> Result<KeyValue> {
    if let Some(rule) = rule_for(rules, &kv.key) {
        kv.value = rule.open(&kv.key, &kv.value)?.0;
    }
    Ok(kv)
}

impl EncryptedStore {
    fn seal(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>> {
        match rule_for(&self.rules, key).and_then(|r| r.transformers.first()) {
            Some(t) => t.seal(key, &value),
            None => Ok(value),
        }
    }

    fn open_list(&self, mut page: ListResult) -> Result<ListResult> {
        page.items = page.items.into_iter().map(|kv| open_kv(&self.rules, kv)).collect::<Result<_>>()?;
        Ok(page)
    }
}

#[async_trait::async_trait]
impl Store for EncryptedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await?.map(|kv| open_kv(&self.rules, kv)).transpose()
    }

    async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        self.open_list(self.inner.list(prefix, start_after, limit).await?)
    }

    async fn list_at(&self, prefix: &str, revision: u64, start_after: Option<&str>, limit: usize) -> Result<ListResult> {
        self.open_list(self.inner.list_at(prefix, revision, start_after, limit).await?)
    }

    async fn readable(&self, revision: u64) -> Result<()> {
        self.inner.readable(revision).await
    }

    async fn count(&self, prefix: &str) -> Result<u64> {
        self.inner.count(prefix).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<u64> {
        self.inner.create(key, self.seal(key, value)?).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: u64) -> Result<u64> {
        self.inner.update(key, self.seal(key, value)?, expected).await
    }

    async fn delete(&self, key: &str, expected: u64) -> Result<KeyValue> {
        open_kv(&self.rules, self.inner.delete(key, expected).await?)
    }

    async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> Result<u64> {
        let ops = ops
            .into_iter()
            .map(|op| match op {
                Op::Put(k, v) => self.seal(&k, v).map(|v| Op::Put(k, v)),
                other => Ok(other),
            })
            .collect::<Result<Vec<_>>>()?;
        self.inner.txn(compares, ops).await
    }

    async fn watch(&self, prefix: &str, after: u64) -> Result<WatchStream> {
        let rules = self.rules.clone();
        let stream = self.inner.watch(prefix, after).await?;
        Ok(stream
            .map(move |ev| {
                let ev = ev?;
                Ok(Event { kind: ev.kind, kv: open_kv(&rules, ev.kv)?, prev: ev.prev.map(|p| open_kv(&rules, p)).transpose()? })
            })
            .boxed())
    }

    async fn revision(&self) -> Result<u64> {
        self.inner.revision().await
    }

    async fn compact(&self, revision: u64) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn stale(&self, key: &str) -> Result<bool> {
        let Some(rule) = rule_for(&self.rules, key) else { return self.inner.stale(key).await };
        match self.inner.get(key).await? {
            Some(kv) => Ok(rule.open(key, &kv.value)?.1),
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(n: usize, fill: u8) -> String {
        base64::engine::general_purpose::STANDARD.encode(vec![fill; n])
    }

    fn config(providers: &str) -> String {
        format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}")
    }

    fn store(inner: &Arc<dyn Store>, providers: &str) -> EncryptedStore {
        EncryptedStore::from_config(inner.clone(), &config(providers)).expect("config")
    }

    #[tokio::test]
    async fn every_provider_round_trips_with_upstream_prefixes_and_rotation_is_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn Store> = Arc::new(strata_store::embedded::Embedded::open(&dir.path().join("s.redb")).expect("store"));
        let key = "/registry/core/secrets/default/s";
        for (provider, n) in [("aescbc", 32), ("aescbc", 16), ("aesgcm", 24), ("aesgcm", 32), ("secretbox", 32)] {
            let yaml = config(&format!("  - {provider}:\n      keys:\n      - name: k1\n        secret: {}\n  - identity: {{}}\n", b64(n, 1)));
            let s = EncryptedStore::from_config(inner.clone(), &yaml).expect("config");
            let _ = inner.delete(key, 0).await;
            s.create(key, b"top secret".to_vec()).await.expect("create");
            let raw = inner.get(key).await.expect("get").expect("raw").value;
            assert!(raw.starts_with(format!("k8s:enc:{provider}:v1:k1:").as_bytes()), "{provider}");
            assert!(!raw.windows(10).any(|w| w == b"top secret"), "{provider} stored plain text");
            assert_eq!(s.get(key).await.expect("get").expect("kv").value, b"top secret");
            assert!(!s.stale(key).await.expect("stale"));
        }
        // Not a configured resource: plain.
        let s = store(&inner, &format!("  - aesgcm:\n      keys:\n      - name: k1\n        secret: {}\n", b64(32, 1)));
        s.create("/registry/core/configmaps/default/c", b"plain".to_vec()).await.expect("create");
        assert_eq!(inner.get("/registry/core/configmaps/default/c").await.expect("get").expect("kv").value, b"plain");
        inner.delete(key, 0).await.expect("delete");
        s.create(key, b"top secret".to_vec()).await.expect("create");
        // A new first key: old values read, are stale, and are rewritten with the new key.
        let rotated = store(&inner, &format!("  - aesgcm:\n      keys:\n      - name: k2\n        secret: {}\n      - name: k1\n        secret: {}\n", b64(32, 2), b64(32, 1)));
        drop(s);
        let v = rotated.get(key).await.expect("get").expect("kv");
        assert_eq!(v.value, b"top secret");
        assert!(rotated.stale(key).await.expect("stale"));
        rotated.update(key, v.value, 0).await.expect("rewrite");
        assert!(!rotated.stale(key).await.expect("stale"));
        // A value moved to another key fails authentication (aesgcm binds the key).
        let raw = inner.get(key).await.expect("get").expect("raw").value;
        inner.create("/registry/core/secrets/default/moved", raw).await.expect("create");
        assert!(rotated.get("/registry/core/secrets/default/moved").await.is_err());
    }

    #[test]
    fn bad_configurations_are_refused_with_the_reason() {
        let inner = || -> Arc<dyn Store> {
            let dir = tempfile::tempdir().expect("tempdir");
            Arc::new(strata_store::embedded::Embedded::open(&dir.path().join("s.redb")).expect("store"))
        };
        let err = |yaml: &str| EncryptedStore::from_config(inner(), yaml).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(&config(&format!("  - aescbc:\n      keys:\n      - name: k\n        secret: {}\n", b64(10, 1)))).contains("10 bytes"));
        assert!(err(&config("  - kms: {name: x}\n")).contains("kms is not supported"));
        assert!(err(&config("  - identity: {}\n    aescbc: {keys: []}\n")).contains("exactly one provider"));
        assert!(err("apiVersion: v1\nkind: EncryptionConfiguration\nresources: []\n").contains("apiserver.config.k8s.io/v1"));
        assert!(err(&config("  - identity: {}\n").replace("[secrets]", "[sekrets]")).contains("not a resource"));
    }
}
