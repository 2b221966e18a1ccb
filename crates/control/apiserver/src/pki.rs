//! The cluster's certificates, made at first start: a CA, the API server's serving
//! certificate, and the admin's client certificate (CN=admin, O=system:masters); plus the
//! admin kubeconfig that embeds them. Everything lives in `<data dir>/pki` (keys mode 0600).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("generating certificates: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
}

fn write(path: &Path, data: &str, secret: bool) -> Result<(), PkiError> {
    let err = |source| PkiError::Io { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(err)?;
    if secret {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}

fn validity(p: &mut CertificateParams, years: i32) {
    let now = chrono::Utc::now();
    let y = now.format("%Y").to_string().parse::<i32>().unwrap_or(2026);
    p.not_before = rcgen::date_time_ymd(y - 1, 1, 1);
    p.not_after = rcgen::date_time_ymd(y + years, 1, 1);
}

/// Create the PKI in `dir` unless it exists. `sans` are extra names/addresses for the serving
/// certificate (localhost, 127.0.0.1, ::1 and the host name are always included).
pub fn ensure(dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
    let pki = Pki { dir: dir.to_path_buf() };
    if pki.ca_cert().exists() && pki.server_cert().exists() && pki.admin_cert().exists() {
        return Ok(pki);
    }
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io { path: dir.to_path_buf(), source })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, "strata-ca");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut ca, 10);
    let ca_cert = ca.self_signed(&ca_key)?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into(), "kubernetes".into(), "kubernetes.default".into(), "kubernetes.default.svc".into()];
    if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    names.extend(sans.iter().cloned());
    let mut server = CertificateParams::default();
    server.distinguished_name = DistinguishedName::new();
    server.distinguished_name.push(DnType::CommonName, "strata-apiserver");
    for n in &names {
        match n.parse::<IpAddr>() {
            Ok(ip) => server.subject_alt_names.push(SanType::IpAddress(ip)),
            Err(_) => server.subject_alt_names.push(SanType::DnsName(n.clone().try_into()?)),
        }
    }
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    validity(&mut server, 1);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key)?;

    let (admin_cert, admin_key) = client_cert("admin", &["system:masters"], &ca_cert, &ca_key)?;

    write(&dir.join("ca.key"), &ca_key.serialize_pem(), true)?;
    write(&pki.server_key(), &server_key.serialize_pem(), true)?;
    write(&pki.server_cert(), &server_cert.pem(), false)?;
    write(&pki.admin_key(), &admin_key, true)?;
    write(&pki.admin_cert(), &admin_cert, false)?;
    // The CA certificate last: its presence marks a complete PKI.
    write(&pki.ca_cert(), &ca_cert.pem(), false)?;
    Ok(pki)
}

/// A client certificate for `user` in `groups`, signed by the CA. Returns (cert PEM, key PEM).
pub fn client_cert(user: &str, groups: &[&str], ca_cert: &rcgen::Certificate, ca_key: &KeyPair) -> Result<(String, String), PkiError> {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, user);
    for g in groups {
        p.distinguished_name.push(DnType::OrganizationName, *g);
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut p, 1);
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, ca_cert, ca_key)?;
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
