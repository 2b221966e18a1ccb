//! httpGet probes and hooks as kubelet's `pkg/probe/http` does them: a GET over HTTP/1.1 (hyper's
//! client, one connection per request, no proxy) or HTTPS (TLS without verifying the
//! certificate), the `httpHeaders` (a `Host` header replaces the request's host; `User-Agent`
//! `kube-probe/1.32` and `Accept: */*` unless given), success for 200-399; redirects followed
//! while they stay on the same host (at most 10), and a redirect elsewhere is not followed but
//! ends the probe with a warning (kubelet's `ProbeWarning`), which counts as success.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use url::Url;

/// kubelet reads at most this much of a probe's response body.
const MAX_BODY: usize = 10 * 1024;
/// Go's http.Client stops after this many redirects.
const MAX_REDIRECTS: usize = 10;
const USER_AGENT: &str = "kube-probe/1.32";

/// The probe's URL, as kubelet's `formatURL`: `path` (which may carry a query) on
/// `scheme://addr`.
pub fn target(scheme: &str, addr: SocketAddr, path: &str) -> Result<Url, String> {
    let base = Url::parse(&format!("{scheme}://{addr}/")).map_err(|e| format!("invalid probe address {addr}: {e}"))?;
    let path = if path.starts_with('/') { path.to_string() } else { format!("/{path}") };
    base.join(&path).map_err(|e| format!("invalid probe path {path:?}: {e}"))
}

/// One response: status, `Location`, and the start of the body.
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

/// Run an httpGet probe against `url` with `headers`, within `timeout` in all (redirects
/// included, as Go's client timeout): `Ok(None)` on success, `Ok(Some(warning))` when a
/// redirect to another host ended it, `Err(why)` with kubelet's wording otherwise.
pub async fn probe(url: Url, headers: &[(String, String)], timeout: Duration) -> Result<Option<String>, String> {
    let first = url.to_string();
    match tokio::time::timeout(timeout, follow(url, headers)).await {
        Ok(r) => r,
        Err(_) => Err(format!("Get \"{first}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)")),
    }
}

async fn follow(mut url: Url, headers: &[(String, String)]) -> Result<Option<String>, String> {
    let first_host = url.host_str().map(str::to_string);
    // A given Host header holds, except for a redirect to an absolute URL (Go's client).
    let given_host = headers.iter().rev().find(|(n, _)| n.eq_ignore_ascii_case("host")).map(|(_, v)| v.clone());
    let mut host_header = given_host.clone();
    let mut hops = 0;
    loop {
        let a = get(&url, host_header.as_deref(), headers).await.map_err(|e| format!("Get \"{url}\": {e}"))?;
        if (300..400).contains(&a.status) {
            if let Some(loc) = a.location.as_deref().filter(|_| matches!(a.status, 301 | 302 | 303 | 307 | 308)) {
                let next = url.join(loc).map_err(|e| format!("Get \"{url}\": failed to parse Location header {loc:?}: {e}"))?;
                if next.host_str().map(str::to_string) == first_host {
                    hops += 1;
                    if hops >= MAX_REDIRECTS {
                        return Err(format!("Get \"{next}\": stopped after {MAX_REDIRECTS} redirects"));
                    }
                    host_header = if Url::parse(loc).is_ok() { None } else { given_host.clone() };
                    url = next;
                    continue;
                }
            }
            tracing::debug!(%url, status = a.status, "probe terminated redirects");
            return Ok(Some(format!("Probe terminated redirects, Response body: {}", a.body)));
        }
        if (200..300).contains(&a.status) {
            return Ok(None);
        }
        return Err(format!("HTTP probe failed with statuscode: {}", a.status));
    }
}

/// One GET of `url` on a new connection.
async fn get(url: &Url, host_header: Option<&str>, headers: &[(String, String)]) -> Result<Answer, String> {
    let host = url.host_str().ok_or("the URL has no host")?;
    let ip: std::net::IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| format!("dial tcp: lookup {host}: probes go to IP addresses only"))?;
    let addr = SocketAddr::new(ip, url.port_or_known_default().ok_or("the URL has no port")?);
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let mut target = url.path().to_string();
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut req = hyper::Request::get(target);
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", host),
        None => host.to_string(),
    };
    req = req.header(hyper::header::HOST, host_header.unwrap_or(&authority));
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !given("user-agent") {
        req = req.header(hyper::header::USER_AGENT, USER_AGENT);
    }
    if !given("accept") {
        req = req.header(hyper::header::ACCEPT, "*/*");
    }
    for (n, v) in headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("host")) {
        req = req.header(n.as_str(), v.as_str());
    }
    req = req.header(hyper::header::CONNECTION, "close");
    let req = req.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| format!("invalid probe request: {e}"))?;
    match url.scheme() {
        "https" => {
            let name = rustls::pki_types::ServerName::from(ip);
            let tls = tokio_rustls::TlsConnector::from(insecure_tls()?).connect(name, tcp).await.map_err(|e| format!("tls: {e}"))?;
            exchange(TokioIo::new(tls), req).await
        }
        _ => exchange(TokioIo::new(tcp), req).await,
    }
}

async fn exchange<T>(io: T, req: hyper::Request<http_body_util::Empty<bytes::Bytes>>) -> Result<Answer, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            conn.abort();
            return Err(e);
        }
    };
    let status = resp.status().as_u16();
    let location = resp.headers().get(hyper::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut body = resp.into_body();
    let mut read = Vec::new();
    // The body up to MAX_BODY (kubelet truncates the rest without failing).
    while read.len() < MAX_BODY {
        match body.frame().await {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    read.extend_from_slice(&d);
                }
            }
            Some(Err(e)) => {
                conn.abort();
                return Err(e.to_string());
            }
            None => break,
        }
    }
    read.truncate(MAX_BODY);
    conn.abort();
    Ok(Answer { status, location, body: String::from_utf8_lossy(&read).into_owned() })
}

/// The client config of HTTPS probes: any certificate is accepted, as kubelet's
/// `InsecureSkipVerify` (the pod's certificate is usually for its service name, or self-signed);
/// the handshake's signatures are still checked against the certificate's key.
pub fn insecure_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS configuration: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_as_kubelet_formats_them() {
        let a: SocketAddr = "10.1.2.3:8443".parse().expect("addr");
        assert_eq!(target("https", a, "/healthz").expect("url").as_str(), "https://10.1.2.3:8443/healthz");
        assert_eq!(target("http", a, "").expect("url").as_str(), "http://10.1.2.3:8443/");
        assert_eq!(target("http", a, "ready?full=1").expect("url").as_str(), "http://10.1.2.3:8443/ready?full=1");
        let v6: SocketAddr = "[fd00::5]:80".parse().expect("addr");
        assert_eq!(target("http", v6, "/x").expect("url").as_str(), "http://[fd00::5]/x");
    }
}
