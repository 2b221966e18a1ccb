//! The cluster's certificates: a CA, the API server's serving certificate and the admin's
//! client certificate (CN=admin, O=system:masters), plus the admin kubeconfig that embeds them.
//! Everything lives in `<data dir>/pki` (0700; keys 0600, see [`crate::files`]).
//!
//! Lifetimes: the CA 10 years, leaf certificates 1 year from issue, each backdated by
//! [`BACKDATE`] so that a client whose clock is slightly behind accepts them. As k3s does, a
//! leaf certificate within [`RENEW_BEFORE`] (90 days) of expiry is re-issued at start from the
//! existing CA, and so is the serving certificate when its names no longer cover the listen
//! addresses, the host name and `--tls-san`; [`rotate`] re-issues both on demand. The CA is
//! never replaced, so certificates issued earlier stay valid until they expire (Kubernetes
//! has no revocation of client certificates).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// The CA's lifetime.
pub const CA_LIFETIME: Duration = Duration::days(3650);
/// Serving and client certificates' lifetime.
pub const LEAF_LIFETIME: Duration = Duration::days(365);
/// Leaf certificates this close to expiry are renewed at start.
pub const RENEW_BEFORE: Duration = Duration::days(90);
/// How far in the past certificates start (clock skew between server and clients).
pub const BACKDATE: Duration = Duration::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a usable certificate: {why}")]
    BadCertificate { path: PathBuf, why: String },
    #[error("{0}: no CA here (start `strata server` once to create the cluster's certificates)")]
    NoCa(PathBuf),
    #[error("{0}: no server address in the kubeconfig")]
    NoServer(PathBuf),
    #[error("invalid certificate request: {0}")]
    BadRequest(String),
}

/// PEM files of the cluster.
#[derive(Clone, Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("apiserver.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("apiserver.key")
    }
    pub fn admin_cert(&self) -> PathBuf {
        self.dir.join("admin.crt")
    }
    pub fn admin_key(&self) -> PathBuf {
        self.dir.join("admin.key")
    }
    /// The key that signs ServiceAccount tokens (made by [`crate::satoken::Signer`]).
    pub fn service_account_key(&self) -> PathBuf {
        self.dir.join("sa.key")
    }
}

/// How certificates are issued: the leaf lifetime (shortened only by tests) and the names the
/// serving certificate must carry besides the built-in ones.
#[derive(Clone, Debug)]
pub struct Issue {
    pub leaf_lifetime: Duration,
    /// Host names and addresses: the listen addresses, the host name, `--tls-san`.
    pub names: Vec<String>,
}

impl Default for Issue {
    fn default() -> Self {
        Self { leaf_lifetime: LEAF_LIFETIME, names: Vec::new() }
    }
}

/// What [`ensure`] or [`rotate`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Renewed {
    pub ca_created: bool,
    pub server: bool,
    pub admin: bool,
}

fn write(path: &Path, data: &str, secret: bool) -> Result<(), PkiError> {
    Ok(crate::files::write_atomic(path, data.as_bytes(), secret)?)
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io { path: path.to_path_buf(), source })
}

fn validity(p: &mut CertificateParams, lifetime: Duration) {
    let now = OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    p.not_after = now + lifetime;
}

/// The CA's parameters: the same at creation and whenever it signs again, so that leaves
/// issued later name the same issuer and key identifier.
fn ca_params() -> CertificateParams {
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "strata-ca");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    ca
}

/// The CA as a signer.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn load(pki: &Pki) -> Result<Ca, PkiError> {
        let key_pem = read(&pki.ca_key())?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::BadCertificate { path: pki.ca_key(), why: e.to_string() })?;
        // Re-creating the CA's certificate from its parameters and key gives a signer with
        // the same subject and key identifier as the CA certificate on disk.
        let cert = ca_params().self_signed(&key)?;
        Ok(Ca { cert, key })
    }
}

/// Every name the serving certificate must carry: the built-in ones and `issue.names`.
pub fn server_names(issue: &Issue) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for n in &issue.names {
        let n = n.trim().to_string();
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// The host's name (`/proc/sys/kernel/hostname`), if it has one.
pub fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").or_else(|_| std::fs::read_to_string("/etc/hostname")).ok()?;
    let h = h.trim().to_string();
    (!h.is_empty() && h != "(none)").then_some(h)
}

fn issue_server(pki: &Pki, ca: &Ca, issue: &Issue) -> Result<(), PkiError> {
    let mut server = CertificateParams::default();
    server.distinguished_name = DistinguishedName::new();
    server.distinguished_name.push(DnType::CommonName, "strata-apiserver");
    for n in server_names(issue) {
        match n.parse::<IpAddr>() {
            Ok(ip) => server.subject_alt_names.push(SanType::IpAddress(ip)),
            Err(_) => server.subject_alt_names.push(SanType::DnsName(n.clone().try_into()?)),
        }
    }
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    validity(&mut server, issue.leaf_lifetime);
    let key = KeyPair::generate()?;
    let cert = server.signed_by(&key, &ca.cert, &ca.key)?;
    // The key first: a reader that sees the new certificate finds its key.
    write(&pki.server_key(), &key.serialize_pem(), true)?;
    write(&pki.server_cert(), &cert.pem(), false)
}

fn issue_admin(pki: &Pki, ca: &Ca, issue: &Issue) -> Result<(), PkiError> {
    let (cert, key) = client_cert_for(issue.leaf_lifetime, "admin", &["system:masters"], &ca.cert, &ca.key)?;
    write(&pki.admin_key(), &key, true)?;
    write(&pki.admin_cert(), &cert, false)
}

/// What a certificate on disk says about itself.
struct Existing {
    not_after: OffsetDateTime,
    names: Vec<String>,
}

fn inspect(path: &Path) -> Result<Existing, PkiError> {
    let bad = |why: String| PkiError::BadCertificate { path: path.to_path_buf(), why };
    let pem = read(path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&pem.contents).map_err(|e| bad(e.to_string()))?;
    let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).map_err(|e| bad(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => names.push(d.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => names.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default()).to_string()),
                    16 => names.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default()).to_string()),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    Ok(Existing { not_after, names })
}

/// Does `names` (from a certificate) cover `want`? Addresses compare as addresses.
fn covers(names: &[String], want: &str) -> bool {
    match want.parse::<IpAddr>() {
        Ok(ip) => names.iter().any(|n| n.parse::<IpAddr>().ok() == Some(ip)),
        Err(_) => names.iter().any(|n| n.eq_ignore_ascii_case(want)),
    }
}

fn expiring(c: &Existing) -> bool {
    c.not_after - OffsetDateTime::now_utc() < RENEW_BEFORE
}

/// Make the PKI in `dir` usable for `issue`: create it if absent; otherwise re-issue a leaf
/// certificate that is missing, unreadable, within [`RENEW_BEFORE`] of expiry, or (the
/// serving one) does not name everything the server answers to.
pub fn ensure(dir: &Path, issue: &Issue) -> Result<(Pki, Renewed), PkiError> {
    let pki = Pki { dir: dir.to_path_buf() };
    crate::files::private_dir(dir)?;
    for key in [pki.ca_key(), pki.server_key(), pki.admin_key()] {
        crate::files::tighten(&key, 0o600)?;
    }
    let mut renewed = Renewed::default();
    if !(pki.ca_cert().exists() && pki.ca_key().exists()) {
        let key = KeyPair::generate()?;
        let mut params = ca_params();
        validity(&mut params, CA_LIFETIME);
        let cert = params.self_signed(&key)?;
        write(&pki.ca_key(), &key.serialize_pem(), true)?;
        write(&pki.ca_cert(), &cert.pem(), false)?;
        renewed.ca_created = true;
    }
    let ca = Ca::load(&pki)?;
    let server_ok = !renewed.ca_created
        && pki.server_key().exists()
        && inspect(&pki.server_cert()).is_ok_and(|c| !expiring(&c) && server_names(issue).iter().all(|n| covers(&c.names, n)));
    if !server_ok {
        issue_server(&pki, &ca, issue)?;
        renewed.server = true;
    }
    let admin_ok = !renewed.ca_created && pki.admin_key().exists() && inspect(&pki.admin_cert()).is_ok_and(|c| !expiring(&c));
    if !admin_ok {
        issue_admin(&pki, &ca, issue)?;
        renewed.admin = true;
    }
    Ok((pki, renewed))
}

/// Re-issue the serving and admin certificates now (new keys, same CA), keeping every name the
/// serving certificate had, and rewrite `kubeconfig` (if it exists) with the new admin
/// certificate. A running server presents the new serving certificate from its next TLS
/// handshake on (see `server.rs`).
pub fn rotate(dir: &Path, issue: &Issue, kubeconfig: &Path) -> Result<Pki, PkiError> {
    let pki = Pki { dir: dir.to_path_buf() };
    if !(pki.ca_cert().exists() && pki.ca_key().exists()) {
        return Err(PkiError::NoCa(dir.to_path_buf()));
    }
    let ca = Ca::load(&pki)?;
    let mut issue = issue.clone();
    if let Ok(old) = inspect(&pki.server_cert()) {
        for n in old.names {
            if !covers(&issue.names, &n) {
                issue.names.push(n);
            }
        }
    }
    issue_server(&pki, &ca, &issue)?;
    issue_admin(&pki, &ca, &issue)?;
    if kubeconfig.exists() {
        let text = read(kubeconfig)?;
        let server = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .map(|s| s.trim().to_string())
            .ok_or_else(|| PkiError::NoServer(kubeconfig.to_path_buf()))?;
        write_kubeconfig(&pki, kubeconfig, &server)?;
    }
    Ok(pki)
}

/// A client certificate for `user` in `groups`, signed by the CA, valid for [`LEAF_LIFETIME`].
/// Returns (cert PEM, key PEM).
pub fn client_cert(user: &str, groups: &[&str], ca_cert: &rcgen::Certificate, ca_key: &KeyPair) -> Result<(String, String), PkiError> {
    client_cert_for(LEAF_LIFETIME, user, groups, ca_cert, ca_key)
}

fn client_cert_for(lifetime: Duration, user: &str, groups: &[&str], ca_cert: &rcgen::Certificate, ca_key: &KeyPair) -> Result<(String, String), PkiError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, user);
    for g in groups {
        p.distinguished_name.push(DnType::OrganizationName, *g);
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut p, lifetime);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, ca_cert, ca_key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A fresh client certificate (and key) for a component `strata server` runs in its own
/// process with its own identity (the node agent as `system:node:NAME` in `system:nodes`, the
/// scheduler as `system:kube-scheduler`, ...), signed by the cluster CA, kept in memory only.
/// Returns (cert PEM, key PEM, CA PEM).
pub fn component_identity(pki: &Pki, user: &str, groups: &[&str], lifetime: Duration) -> Result<(String, String, String), PkiError> {
    let ca = Ca::load(pki)?;
    let (cert, key) = client_cert_for(lifetime, user, groups, &ca.cert, &ca.key)?;
    Ok((cert, key, read(&pki.ca_cert())?))
}

/// Sign a certificate request (PEM `CERTIFICATE REQUEST`, its signature checked) with the
/// cluster CA: the request's subject and public key, the given key usages (CertificateSigningRequest
/// `spec.usages` names), no alternative names, valid for `lifetime` (backdated as every leaf).
/// Returns the certificate PEM.
pub fn sign_request(pki: &Pki, request_pem: &str, usages: &[String], lifetime: Duration) -> Result<String, PkiError> {
    let req = rcgen::CertificateSigningRequestParams::from_pem(request_pem).map_err(|e| PkiError::BadRequest(e.to_string()))?;
    let mut p = CertificateParams::default();
    p.distinguished_name = req.params.distinguished_name.clone();
    // The names asked for (the signers check them before this: none for client certificates,
    // the node's own for kubelet serving certificates).
    p.subject_alt_names = req.params.subject_alt_names.clone();
    for u in usages {
        match u.as_str() {
            "digital signature" => p.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => p.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            "client auth" => p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth),
            "server auth" => p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth),
            other => return Err(PkiError::BadRequest(format!("usage {other:?} is not supported"))),
        }
    }
    validity(&mut p, lifetime);
    let ca = Ca::load(pki)?;
    let signed = rcgen::CertificateSigningRequestParams { params: p, public_key: req.public_key }.signed_by(&ca.cert, &ca.key)?;
    Ok(signed.pem())
}

/// A fresh serving certificate (and key) signed by the cluster CA for `names` (DNS names or IP
/// addresses), kept in memory: the node agent's stream server, which the API server reaches by
/// the node's address and verifies against the CA. Returns (cert PEM, key PEM).
pub fn serving_identity(pki: &Pki, common_name: &str, names: &[String], lifetime: Duration) -> Result<(String, String), PkiError> {
    let ca = Ca::load(pki)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    for n in names {
        match n.parse::<IpAddr>() {
            Ok(ip) => p.subject_alt_names.push(SanType::IpAddress(ip)),
            Err(_) => p.subject_alt_names.push(SanType::DnsName(n.clone().try_into()?)),
        }
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    validity(&mut p, lifetime);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca.cert, &ca.key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Write the admin kubeconfig for `server_url` (e.g. `https://127.0.0.1:6443`).
pub fn write_kubeconfig(pki: &Pki, path: &Path, server_url: &str) -> Result<(), PkiError> {
    let read = |p: PathBuf| std::fs::read(&p).map_err(|source| PkiError::Io { path: p, source });
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(b);
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: strata\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: strata\n  context:\n    cluster: strata\n    user: admin\n    namespace: default\ncurrent-context: strata\n",
        b64(read(pki.ca_cert())?),
        b64(read(pki.admin_cert())?),
        b64(read(pki.admin_key())?),
    );
    write(path, &config, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_decisions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        let short = Issue { leaf_lifetime: Duration::days(30), names: vec!["a.test".into()] };
        let (pki, r) = ensure(&pki_dir, &short).expect("create");
        assert_eq!(r, Renewed { ca_created: true, server: true, admin: true });
        // 30 days left: both leaves renewed, the CA kept.
        let ca = std::fs::read(pki.ca_cert()).expect("ca");
        let (_, r) = ensure(&pki_dir, &Issue { leaf_lifetime: LEAF_LIFETIME, names: vec!["a.test".into()] }).expect("renew");
        assert_eq!(r, Renewed { ca_created: false, server: true, admin: true });
        assert_eq!(std::fs::read(pki.ca_cert()).expect("ca"), ca);
        // A year left, same names: nothing.
        let (_, r) = ensure(&pki_dir, &Issue { leaf_lifetime: LEAF_LIFETIME, names: vec!["a.test".into()] }).expect("keep");
        assert_eq!(r, Renewed::default());
        // A new name: the serving certificate only.
        let (_, r) = ensure(&pki_dir, &Issue { leaf_lifetime: LEAF_LIFETIME, names: vec!["a.test".into(), "10.1.1.1".into()] }).expect("san");
        assert_eq!(r, Renewed { ca_created: false, server: true, admin: false });
        let c = inspect(&pki.server_cert()).expect("inspect");
        assert!(covers(&c.names, "10.1.1.1") && covers(&c.names, "a.test") && covers(&c.names, "::1"));
        // Rotation keeps the names.
        rotate(&pki_dir, &Issue::default(), &dir.path().join("kubeconfig")).expect("rotate");
        assert!(covers(&inspect(&pki.server_cert()).expect("inspect").names, "10.1.1.1"));
    }
}
