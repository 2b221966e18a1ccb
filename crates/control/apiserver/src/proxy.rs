//! Pod streams (`pods/log`, `pods/exec`, `pods/attach`, `pods/portforward`, `pods/proxy`, and a
//! VM's `virtualmachines/console` through its launcher pod) proxied to the node
//! agent that runs the pod, as kube-apiserver proxies them to kubelet: the Node's InternalIP
//! (else ExternalIP) and `status.daemonEndpoints.kubeletEndpoint.port` (10250 when unset), TLS
//! that verifies the agent's serving certificate against the cluster CA and presents this
//! server's own client certificate (`kube-apiserver-kubelet-client`), kubelet's paths and
//! parameters. Logs stream back as the response body; exec, attach and port-forward are HTTP/1.1
//! upgrades (WebSocket or SPDY) whose two connections are spliced byte for byte once the agent
//! has switched protocols, so the agent speaks every protocol itself. A proxied HTTP request
//! (`pods/proxy`) goes to the agent's `/podProxy/...` with its method, end-to-end headers and
//! body, and whatever the pod answers comes back as it is.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::status::ApiError;

/// kubelet's port, used when a Node does not say where its agent listens.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// The identity this server presents to node agents.
pub const CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// How long reaching an agent may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers an upgrade carries to the agent.
const FORWARDED: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
    "user-agent",
];
/// Response headers of a switch of protocols carried back to the client.
const RETURNED: &[&str] = &["connection", "upgrade", "sec-websocket-accept", "sec-websocket-protocol", "x-stream-protocol-version"];

/// TLS to node agents.
#[derive(Clone)]
pub struct KubeletClient {
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for KubeletClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeletClient")
    }
}

impl KubeletClient {
    /// Agents' serving certificates are checked against `ca_pem`; this server presents
    /// `cert_pem`/`key_pem`.
    pub fn new(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let certs = rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes()).map_err(|e| e.to_string())?.ok_or("no private key")?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| e.to_string())?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)) })
    }

    async fn dial(&self, node: &str, addr: SocketAddr) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ApiError> {
        let unreachable = |e: String| ApiError::new(503, "ServiceUnavailable", format!("error dialing backend: node {node} at {addr}: {e}"));
        let connect = async {
            let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            self.tls.connect(name, tcp).await.map_err(|e| e.to_string())
        };
        tokio::time::timeout(DIAL_TIMEOUT, connect).await.map_err(|_| unreachable("timed out".into()))?.map_err(unreachable)
    }

    /// Send `req` to the agent of `node` at `addr`.
    async fn send(&self, node: &str, addr: SocketAddr, req: Request<Body>) -> Result<Response<hyper::body::Incoming>, ApiError> {
        let tls = self.dial(node, addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ApiError::new(503, "ServiceUnavailable", format!("error talking to the agent of node {node}: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "agent connection ended");
            }
        });
        sender.send_request(req).await.map_err(|e| ApiError::new(503, "ServiceUnavailable", format!("error talking to the agent of node {node}: {e}")))
    }

    /// A streamed GET (logs): the agent's body becomes the response's.
    pub async fn stream(&self, node: &str, addr: SocketAddr, path_and_query: &str) -> Result<Response<Body>, ApiError> {
        let req = Request::get(path_and_query).header("host", addr.to_string()).body(Body::empty()).map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = self.send(node, addr, req).await?;
        if !resp.status().is_success() {
            return Err(agent_error(resp).await);
        }
        let ct = resp.headers().get("content-type").cloned();
        let mut out = Response::new(Body::new(resp.into_body()));
        if let Some(ct) = ct {
            out.headers_mut().insert("content-type", ct);
        }
        Ok(out)
    }

    /// An upgrade (exec, attach, port-forward): forward it; when the agent switches protocols,
    /// answer the client the same and splice the two connections.
    pub async fn upgrade(
        &self,
        node: &str,
        addr: SocketAddr,
        method: &Method,
        path_and_query: &str,
        headers: &HeaderMap,
        client: hyper::upgrade::OnUpgrade,
    ) -> Result<Response<Body>, ApiError> {
        let mut b = Request::builder().method(method.clone()).uri(path_and_query).header("host", addr.to_string());
        for name in FORWARDED {
            for v in headers.get_all(*name) {
                b = b.header(*name, v.clone());
            }
        }
        let req = b.body(Body::empty()).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut resp = self.send(node, addr, req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(agent_error(resp).await);
        }
        let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for name in RETURNED {
            for v in resp.headers().get_all(*name) {
                out = out.header(*name, v.clone());
            }
        }
        let agent = hyper::upgrade::on(&mut resp);
        let node = node.to_string();
        tokio::spawn(async move {
            let (client, agent) = match tokio::try_join!(client, agent) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(%node, error = %e, "stream upgrade failed");
                    return;
                }
            };
            let (mut c, mut a) = (TokioIo::new(client), TokioIo::new(agent));
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut a).await {
                tracing::debug!(%node, error = %e, "stream ended");
            }
        });
        out.body(Body::empty()).map_err(|e| ApiError::internal(e.to_string()))
    }
}

/// Headers never carried through a proxy: hop-by-hop ones (RFC 9110 7.6.1), the client's
/// credentials for this server, and what the connection to the agent sets itself.
const NOT_PROXIED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "authorization",
];

fn proxied(name: &str) -> bool {
    !NOT_PROXIED.contains(&name) && !name.starts_with("impersonate-")
}

impl KubeletClient {
    /// A plain HTTP request through the agent (`pods/proxy`): sent with `method`, the
    /// end-to-end headers and `body`; the agent's answer (the pod's) is returned as it is,
    /// streamed.
    pub async fn forward(&self, node: &str, addr: SocketAddr, method: &Method, path_and_query: &str, headers: &HeaderMap, body: axum::body::Bytes) -> Result<Response<Body>, ApiError> {
        let mut b = Request::builder().method(method.clone()).uri(path_and_query).header("host", addr.to_string());
        for (name, v) in headers {
            if proxied(name.as_str()) {
                b = b.header(name, v.clone());
            }
        }
        let req = b.body(Body::from(body)).map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = self.send(node, addr, req).await?;
        let (parts, incoming) = resp.into_parts();
        let mut out = Response::new(Body::new(incoming));
        *out.status_mut() = parts.status;
        for (name, v) in &parts.headers {
            if proxied(name.as_str()) {
                out.headers_mut().append(name.clone(), v.clone());
            }
        }
        Ok(out)
    }
}

/// Upstream's `SplitSchemeNamePort`: `name`, `name:port` or `scheme:name:port` (scheme
/// `http`/`https` or empty); None for anything else.
pub fn split_scheme_name_port(id: &str) -> Option<(&str, &str, Option<&str>)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, None),
        [name, port] => ("", *name, Some(*port)),
        [scheme, name, port] if matches!(*scheme, "http" | "https") => (*scheme, *name, Some(*port)),
        _ => return None,
    };
    if name.is_empty() {
        return None;
    }
    Some((scheme, name, port.filter(|p| !p.is_empty())))
}

/// The agent refused: its status, and its message (plain text, as kubelet writes errors).
async fn agent_error(resp: Response<hyper::body::Incoming>) -> ApiError {
    use http_body_util::BodyExt;
    let code = resp.status().as_u16();
    let body = match tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        _ => Default::default(),
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(4096)]).trim().to_string();
    let reason = match code {
        400 => "BadRequest",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        501 => "NotImplemented",
        _ => "InternalError",
    };
    ApiError::new(code, reason, text)
}

/// Where the agent of `node` (a Node object) listens: its InternalIP (else ExternalIP) and the
/// kubelet endpoint port.
pub fn agent_address(node: &Value) -> Option<SocketAddr> {
    let addrs = node["status"]["addresses"].as_array()?;
    let ip = ["InternalIP", "ExternalIP"]
        .iter()
        .find_map(|t| addrs.iter().filter(|a| a["type"] == *t).find_map(|a| a["address"].as_str()?.parse::<IpAddr>().ok()))?;
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .filter(|p| *p > 0 && *p <= u64::from(u16::MAX))
        .map_or(DEFAULT_KUBELET_PORT, |p| p as u16);
    Some(SocketAddr::new(ip, port))
}

/// `key=value` pairs of a query, percent-encoded for kubelet's URL.
pub fn encode_query(pairs: &[(String, String)]) -> String {
    fn enc(s: &str) -> String {
        let mut o = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                o.push(b as char);
            } else {
                o.push_str(&format!("%{b:02X}"));
            }
        }
        o
    }
    pairs.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn where_the_agent_is() {
        let n = json!({ "status": { "addresses": [{ "type": "Hostname", "address": "n1" }, { "type": "InternalIP", "address": "10.0.0.5" }],
                                    "daemonEndpoints": { "kubeletEndpoint": { "Port": 12345 } } } });
        assert_eq!(agent_address(&n), Some("10.0.0.5:12345".parse().expect("addr")));
        let n = json!({ "status": { "addresses": [{ "type": "ExternalIP", "address": "192.0.2.1" }] } });
        assert_eq!(agent_address(&n), Some("192.0.2.1:10250".parse().expect("addr")));
        assert_eq!(agent_address(&json!({ "status": { "addresses": [{ "type": "Hostname", "address": "n1" }] } })), None);
        assert_eq!(encode_query(&[("command".into(), "sh -c".into()), ("command".into(), "exit 3".into())]), "command=sh%20-c&command=exit%203");
    }

    #[test]
    fn proxy_names_as_upstream_splits_them() {
        assert_eq!(split_scheme_name_port("web"), Some(("", "web", None)));
        assert_eq!(split_scheme_name_port("web:8080"), Some(("", "web", Some("8080"))));
        assert_eq!(split_scheme_name_port("web:"), Some(("", "web", None)));
        assert_eq!(split_scheme_name_port("https:web:443"), Some(("https", "web", Some("443"))));
        assert_eq!(split_scheme_name_port("ftp:web:21"), None);
        assert_eq!(split_scheme_name_port(":80"), None);
        assert_eq!(split_scheme_name_port("a:b:c:d"), None);
        assert!(proxied("accept") && !proxied("authorization") && !proxied("impersonate-user") && !proxied("connection"));
    }
}

/// Where a proxied pod's links are made to point (upstream's proxy `Transport`): the proxy path
/// (`/api/v1/namespaces/NS/pods/NAME/proxy`) and the pod's own `host:port`.
pub struct LinkRewrite {
    pub prefix: String,
    pub pod_host: String,
}

/// Upstream's `atomsToAttrs`: the attributes of each element that hold URLs.
const URL_ATTRS: &[(&str, &[&str])] = &[
    ("a", &["href"]),
    ("applet", &["codebase"]),
    ("area", &["href"]),
    ("audio", &["src"]),
    ("base", &["href"]),
    ("blockquote", &["cite"]),
    ("body", &["background"]),
    ("button", &["formaction"]),
    ("command", &["icon"]),
    ("del", &["cite"]),
    ("embed", &["src"]),
    ("form", &["action"]),
    ("frame", &["longdesc", "src"]),
    ("head", &["profile"]),
    ("html", &["manifest"]),
    ("iframe", &["longdesc", "src"]),
    ("img", &["longdesc", "src", "usemap"]),
    ("input", &["src", "usemap", "formaction"]),
    ("ins", &["cite"]),
    ("link", &["href"]),
    ("object", &["classid", "codebase", "data", "usemap"]),
    ("q", &["cite"]),
    ("script", &["src"]),
    ("source", &["src"]),
    ("video", &["poster", "src"]),
    // Not upstream's, but harmless: the same for `track`.
    ("track", &["src"]),
];

/// The most of an HTML page rewritten; a larger one passes as it is.
pub const MAX_REWRITTEN: usize = 16 << 20;

impl LinkRewrite {
    /// Upstream's `rewriteURL`: a URL with an absolute path on the pod's own host (or no host)
    /// is put under the proxy path; relative ones and other hosts' are left alone.
    pub fn url(&self, target: &str) -> String {
        let (rest, host) = match target.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                (&rest[end..], Some(&rest[..end]))
            }
            Some(_) => return target.to_string(),
            None if target.starts_with("//") => return target.to_string(),
            None => (target, None),
        };
        if host.is_some_and(|h| h != self.pod_host) || !rest.starts_with('/') {
            return target.to_string();
        }
        if rest.starts_with(&format!("{}/", self.prefix)) || rest == self.prefix {
            return rest.to_string();
        }
        format!("{}{rest}", self.prefix)
    }

    /// `html` with the URL attributes of its elements rewritten ([`Self::url`]); comments and
    /// the text of `script` and `style` are left as they are.
    pub fn html(&self, html: &str) -> String {
        let b = html.as_bytes();
        let mut out = String::with_capacity(html.len() + 256);
        let mut copied = 0;
        let mut i = 0;
        while let Some(off) = html[i..].find('<') {
            let start = i + off;
            if html[start..].starts_with("<!--") {
                i = html[start..].find("-->").map_or(b.len(), |e| start + e + 3);
                continue;
            }
            let name_start = start + 1;
            let name_end = name_start + html[name_start..].find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(html.len() - name_start);
            if name_end == name_start {
                i = name_start;
                continue;
            }
            let tag = html[name_start..name_end].to_ascii_lowercase();
            let attrs = URL_ATTRS.iter().find(|(t, _)| *t == tag).map_or(&[][..], |(_, a)| *a);
            // Attributes, up to the tag's end.
            let mut j = name_end;
            loop {
                while j < b.len() && (b[j].is_ascii_whitespace() || b[j] == b'/') {
                    j += 1;
                }
                if j >= b.len() || b[j] == b'>' {
                    break;
                }
                let an = j;
                while j < b.len() && !b[j].is_ascii_whitespace() && !matches!(b[j], b'=' | b'>' | b'/') {
                    j += 1;
                }
                let attr = html[an..j].to_ascii_lowercase();
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                if j >= b.len() || b[j] != b'=' {
                    continue;
                }
                j += 1;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let (vs, ve) = match b.get(j) {
                    Some(q @ (b'"' | b'\'')) => {
                        let e = html[j + 1..].find(*q as char).map_or(b.len(), |e| j + 1 + e);
                        let r = (j + 1, e);
                        j = (e + 1).min(b.len());
                        r
                    }
                    _ => {
                        let s = j;
                        while j < b.len() && !b[j].is_ascii_whitespace() && b[j] != b'>' {
                            j += 1;
                        }
                        (s, j)
                    }
                };
                if attrs.contains(&attr.as_str()) {
                    let new = self.url(&html[vs..ve]);
                    if new != html[vs..ve] {
                        out.push_str(&html[copied..vs]);
                        out.push_str(&new);
                        copied = ve;
                    }
                }
            }
            i = (j + 1).min(b.len());
            // The text of script and style is not markup.
            if tag == "script" || tag == "style" {
                let close = format!("</{tag}");
                i = html[i..].to_ascii_lowercase().find(&close).map_or(b.len(), |e| i + e);
            }
        }
        out.push_str(&html[copied..]);
        out
    }
}

/// A proxied answer with its links rewritten ([`LinkRewrite`]): the `Location` of any answer,
/// and the body of an HTML one (plain or gzip, at most [`MAX_REWRITTEN`]; gzip is sent back
/// decoded). Anything else passes as it is.
pub async fn rewrite_links(resp: Response<Body>, rw: &LinkRewrite) -> Response<Body> {
    use http_body_util::BodyExt;
    let (mut parts, body) = resp.into_parts();
    if let Some(loc) = parts.headers.get(axum::http::header::LOCATION).and_then(|v| v.to_str().ok()) {
        if let Ok(v) = axum::http::HeaderValue::from_str(&rw.url(loc)) {
            parts.headers.insert(axum::http::header::LOCATION, v);
        }
    }
    let html = parts.headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("text/html"));
    let encoding = parts.headers.get(axum::http::header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("").trim().to_ascii_lowercase();
    let small = parts.headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()).is_none_or(|n| n <= MAX_REWRITTEN);
    if !html || !small || !matches!(encoding.as_str(), "" | "identity" | "gzip") {
        return Response::from_parts(parts, body);
    }
    let bytes = match http_body_util::Limited::new(body, MAX_REWRITTEN).collect().await {
        Ok(b) => b.to_bytes(),
        // Too long (without a length) or cut: what was read is lost, so the answer is an error.
        Err(e) => return axum::response::IntoResponse::into_response(ApiError::new(502, "BadGateway", format!("error reading the pod's answer: {e}"))),
    };
    let text = if encoding == "gzip" {
        use std::io::Read;
        let mut s = String::new();
        match flate2::read::GzDecoder::new(&bytes[..]).take(MAX_REWRITTEN as u64).read_to_string(&mut s) {
            Ok(_) => Some(s),
            Err(_) => None,
        }
    } else {
        String::from_utf8(bytes.to_vec()).ok()
    };
    let Some(text) = text else {
        // Not UTF-8 (or not gzip after all): as it came.
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_ENCODING);
    Response::from_parts(parts, Body::from(rw.html(&text)))
}

#[cfg(test)]
mod link_tests {
    use super::*;

    fn rw() -> LinkRewrite {
        LinkRewrite { prefix: "/api/v1/namespaces/ns/pods/web:8080/proxy".into(), pod_host: "10.0.0.5:8080".into() }
    }

    #[test]
    fn urls_are_rewritten_as_upstreams_transport_rewrites_them() {
        let r = rw();
        assert_eq!(r.url("/rewriteme"), "/api/v1/namespaces/ns/pods/web:8080/proxy/rewriteme");
        assert_eq!(r.url("/a/b/?x=1#f"), "/api/v1/namespaces/ns/pods/web:8080/proxy/a/b/?x=1#f");
        assert_eq!(r.url("http://10.0.0.5:8080/x"), "/api/v1/namespaces/ns/pods/web:8080/proxy/x");
        assert_eq!(r.url("http://example.com/x"), "http://example.com/x", "another host");
        assert_eq!(r.url("relative/path"), "relative/path");
        assert_eq!(r.url("//cdn.example.com/x.js"), "//cdn.example.com/x.js");
        assert_eq!(r.url("mailto:a@b"), "mailto:a@b");
        assert_eq!(r.url("/api/v1/namespaces/ns/pods/web:8080/proxy/x"), "/api/v1/namespaces/ns/pods/web:8080/proxy/x", "already under the prefix");
    }

    #[test]
    fn html_attributes_holding_urls_are_rewritten_and_nothing_else() {
        let r = rw();
        let page = "<html><body background=/bg.png><a href=\"/rewriteme\">test</a> <A HREF='/x'>X</A>\n<img alt=\"/keep\" src=/i.png>\n<!-- <a href=\"/comment\"> -->\n<script>var s = '<a href=\"/in-script\">';</script><link rel=stylesheet href=\"/s.css\"/><p title=\"/keep\">/text</p></body></html>";
        let want = "<html><body background=/api/v1/namespaces/ns/pods/web:8080/proxy/bg.png><a href=\"/api/v1/namespaces/ns/pods/web:8080/proxy/rewriteme\">test</a> <A HREF='/api/v1/namespaces/ns/pods/web:8080/proxy/x'>X</A>\n<img alt=\"/keep\" src=/api/v1/namespaces/ns/pods/web:8080/proxy/i.png>\n<!-- <a href=\"/comment\"> -->\n<script>var s = '<a href=\"/in-script\">';</script><link rel=stylesheet href=\"/api/v1/namespaces/ns/pods/web:8080/proxy/s.css\"/><p title=\"/keep\">/text</p></body></html>";
        assert_eq!(r.html(page), want);
        // Broken markup ends without a panic.
        for broken in ["<a href=\"/x", "<a href=", "<", "<a", "<!-- x", "<script>never closed"] {
            let _ = r.html(broken);
        }
    }
}
