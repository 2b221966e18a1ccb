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
