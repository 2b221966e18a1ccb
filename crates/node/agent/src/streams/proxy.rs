//! `/podProxy/{ns}/{pod}/[https:]{port}/{path}`: one HTTP/1.1 request to a port of the pod (over
//! TLS with `https:`), for the API server's `pods/proxy` and `services/proxy`. The connection is made in the pod's network as port-forward makes it;
//! the request goes with its method, end-to-end headers and body, and the pod's answer comes back
//! streamed, whatever its status.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::{blocking, full, pod_error, Body, PodStreams};

/// Hop-by-hop headers (RFC 9110 7.6.1) and those this connection sets itself.
const NOT_PROXIED: &[&str] = &["connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "host"];

/// Where in the pod a request goes.
pub(super) struct Target {
    pub port: u16,
    /// HTTPS: any certificate is accepted, as kube-apiserver's proxy transport to pods
    /// (`InsecureSkipVerify`): a pod's certificate is for its service name, or self-signed.
    pub tls: bool,
    /// Path and query.
    pub path: String,
}

pub(super) async fn serve(pods: Arc<dyn PodStreams>, ns: String, pod: String, target: Target, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let port = target.port;
    {
        let (pods, ns, pod) = (pods.clone(), ns.clone(), pod.clone());
        if let Err(e) = blocking(move || pods.check_pod(&ns, &pod)).await {
            return pod_error(&e);
        }
    }
    let tcp = match super::portforward::connect(&pods, &ns, &pod, port).await {
        Ok(t) => t,
        Err(e) => return full(StatusCode::SERVICE_UNAVAILABLE, format!("error trying to reach pod {ns}/{pod} on port {port}: {e}")),
    };
    if !target.tls {
        return exchange(tcp, &ns, &pod, port, target.path, req).await;
    }
    let config = match crate::pods::http_probe::insecure_tls() {
        Ok(c) => c,
        Err(e) => return full(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    match tokio_rustls::TlsConnector::from(config).connect(name, tcp).await {
        Ok(tls) => exchange(tls, &ns, &pod, port, target.path, req).await,
        Err(e) => full(StatusCode::BAD_GATEWAY, format!("error talking to pod {ns}/{pod} on port {port}: TLS: {e}")),
    }
}

/// One request over `io` (plain or TLS), the pod's answer streamed back.
async fn exchange<I>(io: I, ns: &str, pod: &str, port: u16, target: String, req: Request<hyper::body::Incoming>) -> Response<Body>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(c) => c,
        Err(e) => return full(StatusCode::BAD_GATEWAY, format!("error talking to pod {ns}/{pod} on port {port}: {e}")),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "pod proxy connection ended");
        }
    });
    let (parts, body) = req.into_parts();
    let mut b = Request::builder().method(parts.method).uri(target).header(http::header::HOST, format!("{pod}:{port}"));
    for (name, v) in &parts.headers {
        if !NOT_PROXIED.contains(&name.as_str()) {
            b = b.header(name, v.clone());
        }
    }
    let out = match b.body(body) {
        Ok(r) => r,
        Err(e) => return full(StatusCode::BAD_REQUEST, e.to_string()),
    };
    match sender.send_request(out).await {
        Ok(resp) => {
            let (parts, incoming) = resp.into_parts();
            let mut r = Response::new(incoming.map_err(std::io::Error::other).boxed());
            *r.status_mut() = parts.status;
            for (name, v) in &parts.headers {
                if !NOT_PROXIED.contains(&name.as_str()) {
                    r.headers_mut().append(name.clone(), v.clone());
                }
            }
            r
        }
        Err(e) => full(StatusCode::BAD_GATEWAY, format!("error talking to pod {ns}/{pod} on port {port}: {e}")),
    }
}
