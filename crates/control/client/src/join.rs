//! Joining a cluster with a bootstrap token (what kubeadm's discovery and kubelet's TLS
//! bootstrap do, with k3s's token format).
//!
//! A join token is `K10<sha256 hex of the cluster CA certificate (DER)>::<id>.<secret>`. The
//! joining side reads the CA from `kube-public/cluster-info` without trusting the TLS
//! connection (it has nothing to trust yet), and checks its hash against the token *before*
//! it sends the token's secret anywhere; from then on it talks to the server over TLS verified
//! by that CA. It makes its key locally, sends a CertificateSigningRequest for
//! `system:node:NAME` in `system:nodes` (signer `kubernetes.io/kube-apiserver-client-kubelet`),
//! and waits for the cluster to approve and sign it. The key never leaves the node.

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use rand::Rng;
use sha2::Digest;

use crate::Credentials;

/// The signer of kubelet serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
/// The signer of kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("invalid join token: expected K10<sha256 of the cluster CA>::<id>.<secret> (id 6 and secret 16 characters of [a-z0-9])")]
    BadToken,
    #[error("invalid CA certificate: {0}")]
    BadCa(String),
    #[error("reading the cluster CA from {server}: {why}")]
    Discovery { server: String, why: String },
    #[error("the server's CA (sha256 {found}) is not the one the token pins (sha256 {pinned}): refusing to send the token to it")]
    CaMismatch { found: String, pinned: String },
    #[error("the server refused the token: {0}")]
    Refused(String),
    #[error("certificate request {name}: {why}")]
    Csr { name: String, why: String },
    #[error("no certificate for request {0} after {1:?} (is it approved?)")]
    Timeout(String, Duration),
    #[error("making the node's key: {0}")]
    Key(#[from] rcgen::Error),
    #[error(transparent)]
    Client(#[from] crate::Error),
}

/// A parsed join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// Lower-case hex of the CA certificate's SHA-256.
    pub ca_hash: String,
    pub id: String,
    pub secret: String,
}

fn token_chars(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

impl JoinToken {
    /// A fresh random token pinning `ca_pem`.
    pub fn generate(ca_pem: &str) -> Result<Self, JoinError> {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::thread_rng();
        let mut pick = |n: usize| (0..n).map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char).collect::<String>();
        Ok(Self { ca_hash: ca_hash(ca_pem)?, id: pick(6), secret: pick(16) })
    }

    pub fn parse(s: &str) -> Result<Self, JoinError> {
        let rest = s.trim().strip_prefix("K10").ok_or(JoinError::BadToken)?;
        let (hash, cred) = rest.split_once("::").ok_or(JoinError::BadToken)?;
        let (id, secret) = cred.split_once('.').ok_or(JoinError::BadToken)?;
        let hex_ok = hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b.to_ascii_lowercase()));
        if !hex_ok || !token_chars(id, 6) || !token_chars(secret, 16) {
            return Err(JoinError::BadToken);
        }
        Ok(Self { ca_hash: hash.to_ascii_lowercase(), id: id.into(), secret: secret.into() })
    }

    /// The bearer token the API server knows (`<id>.<secret>`).
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "K10{}::{}.{}", self.ca_hash, self.id, self.secret)
    }
}

/// SHA-256 (lower-case hex) of the first certificate in `ca_pem`, in DER.
pub fn ca_hash(ca_pem: &str) -> Result<String, JoinError> {
    let der = rustls_pemfile::certs(&mut ca_pem.as_bytes())
        .next()
        .ok_or_else(|| JoinError::BadCa("no certificate in the PEM".into()))?
        .map_err(|e| JoinError::BadCa(e.to_string()))?;
    Ok(hex::encode(sha2::Sha256::digest(der.as_ref())))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// Read the cluster CA from `server`'s `kube-public/cluster-info`, anonymously and without
/// verifying TLS (the caller pins it by hash).
pub async fn discover_ca(server: &str) -> Result<String, JoinError> {
    let err = |why: String| JoinError::Discovery { server: server.to_string(), why };
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: anonymous\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: anonymous\ncurrent-context: c\n"
    );
    let client = crate::from_yaml(&yaml, "<discovery>", None, "strata-agent").await?;
    let cm: ConfigMap = Api::namespaced(client, "kube-public").get("cluster-info").await.map_err(|e| err(e.to_string()))?;
    let kubeconfig = cm.data.as_ref().and_then(|d| d.get("kubeconfig")).ok_or_else(|| err("cluster-info has no kubeconfig".into()))?;
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| err(e.to_string()))?;
    let data = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .ok_or_else(|| err("cluster-info names no CA".into()))?;
    let pem = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|e| err(format!("CA data: {e}")))?;
    String::from_utf8(pem).map_err(|e| err(format!("CA data: {e}")))
}

/// Join `server` as node `node_name` with `token`: the node's credentials (CA, certificate and
/// key, all PEM). Nothing is sent with the token's secret unless the server's CA matches it.
pub async fn bootstrap(server: &str, token: &JoinToken, node_name: &str, wait: Duration) -> Result<Credentials, JoinError> {
    let ca_pem = discover_ca(server).await?;
    let found = ca_hash(&ca_pem)?;
    if found != token.ca_hash {
        return Err(JoinError::CaMismatch { found, pinned: token.ca_hash.clone() });
    }
    // From here on the connection is verified by the pinned CA.
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: bootstrap\n  user:\n    token: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: bootstrap\ncurrent-context: c\n",
        b64(&ca_pem),
        token.bearer()
    );
    let client = crate::from_yaml(&yaml, "<bootstrap>", None, "strata-agent").await?;
    let user = format!("system:node:{node_name}");
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, user.as_str());
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    let request = params.serialize_request(&key)?.pem()?;
    let cert_pem = request_certificate(&client, "node-csr", request, KUBELET_CLIENT_SIGNER, &["digital signature", "client auth"], wait).await?;
    Ok(Credentials { server: server.to_string(), ca_pem, cert_pem, key_pem: key.serialize_pem() })
}

/// A serving certificate for node `node_name` naming `names` (its addresses and host name),
/// from the cluster's `kubernetes.io/kubelet-serving` signer, as kubelet's server TLS bootstrap
/// gets one: (certificate PEM, key PEM). `client` is the node's own (its client certificate):
/// the API server approves only a node's request for its own Node's addresses, so the Node
/// must be registered first.
pub async fn serving_certificate(client: &kube::Client, node_name: &str, names: &[String], wait: Duration) -> Result<(String, String), JoinError> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node_name}"));
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    for n in names {
        match n.parse::<std::net::IpAddr>() {
            Ok(ip) => params.subject_alt_names.push(rcgen::SanType::IpAddress(ip)),
            Err(_) => params.subject_alt_names.push(rcgen::SanType::DnsName(n.clone().try_into()?)),
        }
    }
    let request = params.serialize_request(&key)?.pem()?;
    let cert = request_certificate(client, "csr", request, KUBELET_SERVING_SIGNER, &["digital signature", "key encipherment", "server auth"], wait).await?;
    Ok((cert, key.serialize_pem()))
}

/// Send a CertificateSigningRequest (named `<prefix>-<random>`) and wait until it is issued,
/// denied or failed, or `wait` has passed.
async fn request_certificate(client: &kube::Client, prefix: &str, request: String, signer: &str, usages: &[&str], wait: Duration) -> Result<String, JoinError> {
    let suffix: String = {
        let mut rng = rand::thread_rng();
        (0..5).map(|_| (b'a' + rng.gen_range(0..26u8)) as char).collect()
    };
    let name = format!("{prefix}-{suffix}");
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta { name: Some(name.clone()), ..Default::default() },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        status: None,
    };
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    match api.create(&PostParams::default(), &csr).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 401 || e.code == 403 => return Err(JoinError::Refused(e.message)),
        Err(e) => return Err(JoinError::Csr { name, why: e.to_string() }),
    }
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let got = api.get(&name).await.map_err(|e| JoinError::Csr { name: name.clone(), why: e.to_string() })?;
        if let Some(st) = &got.status {
            for c in st.conditions.iter().flatten() {
                if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                    let why = format!("{}: {} {}", c.type_, c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default());
                    return Err(JoinError::Csr { name, why: why.trim().to_string() });
                }
            }
            if let Some(cert) = &st.certificate {
                return String::from_utf8(cert.0.clone()).map_err(|e| JoinError::Csr { name: name.clone(), why: e.to_string() });
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(JoinError::Timeout(name, wait));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_ones_are_refused() {
        let t = JoinToken { ca_hash: "a".repeat(64), id: "abcdef".into(), secret: "0123456789abcdef".into() };
        let s = t.to_string();
        assert_eq!(s, format!("K10{}::abcdef.0123456789abcdef", "a".repeat(64)));
        assert_eq!(JoinToken::parse(&s).expect("parses"), t);
        assert_eq!(t.bearer(), "abcdef.0123456789abcdef");
        for bad in ["", "abcdef.0123456789abcdef", &format!("K10{}::abcdef", "a".repeat(64)), &format!("K10{}::abcdef.0123", "a".repeat(64)), &format!("K10{}::abcdef.0123456789abcdef", "z".repeat(64)), "K10abc::abcdef.0123456789abcdef"] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }
}
