//! ServiceAccount tokens: the JWTs the `serviceaccounts/token` subresource (TokenRequest)
//! issues and the authenticator accepts, in kube-apiserver's format: ES256 (ECDSA P-256)
//! signatures by a key of the server's (`<pki>/sa.key`, PKCS#8, 0600, made at first start),
//! `iss`, `sub` = `system:serviceaccount:NS:NAME`, `aud`, `exp`/`iat`/`nbf`, `jti` and the
//! private `kubernetes.io` claim naming the ServiceAccount and the bound object (with uids).
//!
//! This module checks signatures, issuer and times; whether the ServiceAccount and the bound
//! object still exist (with the same uid) is checked against the store by the API.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

/// The issuer (and default audience) of strata's tokens, kube-apiserver's usual one.
pub const ISSUER: &str = crate::auth::API_AUDIENCE;

/// Shortest lifetime a TokenRequest may ask for (upstream: 10 minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: not a PKCS#8 ECDSA P-256 key")]
    Key(PathBuf),
    #[error("signing failed")]
    Sign,
    #[error("malformed token")]
    Malformed,
    #[error("invalid signature")]
    Signature,
    #[error("token issued by {0:?}")]
    Issuer(String),
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
}

/// The server's signing key.
pub struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    /// The shortest lifetime a TokenRequest may ask for (upstream's 600 s unless a test
    /// lowers it).
    pub min_expiration: i64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("kid", &self.kid).finish()
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Signer {
    /// Load `path`, or make a new key there (created 0600 in one step, renamed into place).
    pub fn load_or_create(path: &Path) -> Result<Self, TokenError> {
        let io = |source| TokenError::Io { path: path.to_path_buf(), source };
        let rng = SystemRandom::new();
        if !path.exists() {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|_| TokenError::Key(path.to_path_buf()))?;
            let pem = format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", wrap64(&base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())));
            let tmp = path.with_extension("tmp");
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
            f.write_all(pem.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| TokenError::Key(path.to_path_buf()))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng).map_err(|_| TokenError::Key(path.to_path_buf()))?;
        let kid = B64.encode(ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref()).as_ref());
        Ok(Self { key, kid, min_expiration: MIN_EXPIRATION_SECONDS })
    }

    /// A signed JWT of `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String, TokenError> {
        let header = json!({ "alg": "ES256", "kid": self.kid });
        let input = format!("{}.{}", B64.encode(header.to_string()), B64.encode(claims.to_string()));
        let sig = self.key.sign(&SystemRandom::new(), input.as_bytes()).map_err(|_| TokenError::Sign)?;
        Ok(format!("{input}.{}", B64.encode(sig.as_ref())))
    }

    /// The claims of a token this server signed, once signature, issuer and times hold.
    pub fn verify(&self, token: &str) -> Result<Value, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(TokenError::Malformed);
        };
        let header: Value = B64.decode(h).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(TokenError::Malformed)?;
        if header["alg"] != "ES256" {
            return Err(TokenError::Signature);
        }
        let sig = B64.decode(s).map_err(|_| TokenError::Malformed)?;
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Value = B64.decode(c).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or(TokenError::Malformed)?;
        let iss = claims["iss"].as_str().unwrap_or("");
        if iss != ISSUER {
            return Err(TokenError::Issuer(iss.to_string()));
        }
        let t = now();
        if claims["exp"].as_i64().is_none_or(|exp| t >= exp) {
            return Err(TokenError::Expired);
        }
        if claims["nbf"].as_i64().is_some_and(|nbf| t < nbf) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

fn wrap64(s: &str) -> String {
    s.as_bytes().chunks(64).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join("\n")
}

/// What a token is bound to, besides its ServiceAccount.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundObject {
    /// `pod` or `secret` (the claim's key).
    pub kind: &'static str,
    pub name: String,
    pub uid: String,
}

/// The claims of a new token: `expiration` seconds from now.
pub fn claims(namespace: &str, sa_name: &str, sa_uid: &str, audiences: &[String], expiration: i64, bound: Option<&BoundObject>) -> Value {
    let t = now();
    let mut private = json!({ "namespace": namespace, "serviceaccount": { "name": sa_name, "uid": sa_uid } });
    if let Some(b) = bound {
        private[b.kind] = json!({ "name": b.name, "uid": b.uid });
    }
    json!({
        "aud": audiences,
        "exp": t + expiration,
        "iat": t,
        "nbf": t,
        "iss": ISSUER,
        "jti": crate::object::uuid(),
        "sub": format!("system:serviceaccount:{namespace}:{sa_name}"),
        "kubernetes.io": private,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn sign_verify_and_refuse() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("sa.key");
        let s = Signer::load_or_create(&path).expect("key");
        assert_eq!(std::fs::metadata(&path).expect("key file").permissions().mode() & 0o777, 0o600);
        let c = claims("ns", "builder", "u-1", &[ISSUER.to_string()], 600, None);
        let t = s.sign(&c).expect("sign");
        assert_eq!(s.verify(&t).expect("valid")["sub"], "system:serviceaccount:ns:builder");
        // The same key after a restart; another key does not accept it.
        assert!(Signer::load_or_create(&path).expect("reload").verify(&t).is_ok());
        let other = Signer::load_or_create(&dir.path().join("other.key")).expect("key");
        assert!(matches!(other.verify(&t), Err(TokenError::Signature)));
        // Tampered claims, expired and foreign tokens.
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[1] = B64.encode(json!({"sub": "system:serviceaccount:kube-system:admin"}).to_string());
        assert!(matches!(s.verify(&parts.join(".")), Err(TokenError::Signature)));
        let old = claims("ns", "builder", "u-1", &[], -1, None);
        assert!(matches!(s.verify(&s.sign(&old).expect("sign")), Err(TokenError::Expired)));
        let mut foreign = c.clone();
        foreign["iss"] = json!("https://elsewhere");
        assert!(matches!(s.verify(&s.sign(&foreign).expect("sign")), Err(TokenError::Issuer(_))));
        assert!(matches!(s.verify("abc"), Err(TokenError::Malformed)));
    }
}
