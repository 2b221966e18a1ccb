//! A TLS connector that speaks HTTP/2 to a test API server as its admin (the client
//! certificate in `<data dir>/pki`); shared by the tests and the benches that drive many
//! streams by hand (`#[path]` from `benches/`).

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

pub fn admin_tls(pki: &Path) -> tokio_rustls::TlsConnector {
    let read = |n: &str| std::fs::read(pki.join(n)).expect("pki file");
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut read("ca.crt").as_slice()) {
        roots.add(c.expect("ca")).expect("add ca");
    }
    let certs: Vec<_> = rustls_pemfile::certs(&mut read("admin.crt").as_slice()).map(|c| c.expect("cert")).collect();
    let key = rustls_pemfile::private_key(&mut read("admin.key").as_slice()).expect("key").expect("key present");
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client auth");
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// A TLS acceptor with a new self-signed certificate for `names` (DNS names, or IP addresses
/// as IP SANs), and the certificate as PEM (what a client trusts).
pub fn self_signed_acceptor(names: Vec<String>) -> (tokio_rustls::TlsAcceptor, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(names).expect("params").self_signed(&key).expect("self-signed");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server config");
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), cert.pem())
}
