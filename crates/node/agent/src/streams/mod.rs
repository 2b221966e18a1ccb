//! The stream server: the agent's HTTPS endpoint for logs, exec, attach and port-forward, as
//! kubelet serves them on port 10250 (`/containerLogs/{ns}/{pod}/{container}`,
//! `/exec/{ns}/{pod}[/{uid}]/{container}`, `/attach/...`, `/portForward/{ns}/{pod}[/{uid}]`).
//!
//! Only the API server may call it: TLS with a client certificate signed by the cluster CA
//! whose common name is in [`Config::allowed_users`] (the API server presents
//! `kube-apiserver-kubelet-client`); RBAC was checked by the API server, which splices the
//! client's upgraded connection through to here. Protocols (exactly what kubectl and client
//! libraries send, see `exec.rs` and `portforward.rs`): WebSocket `v5.channel.k8s.io` /
//! `v4.channel.k8s.io` / `channel.k8s.io` and SPDY/3.1 (`v4`..`v1`) for exec and attach;
//! SPDY/3.1 `portforward.k8s.io`, the same tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`)
//! and WebSocket `v4.channel.k8s.io` channels for port-forward.
//!
//! `/podProxy/{ns}/{pod}/[https:]{port}/{path}` is an HTTP(S) request to a port of the pod (the API server's
//! `pods/proxy`; kubelet has no such path: kube-apiserver dials pod IPs itself), sent over a
//! connection made in the pod's network as port-forward makes it (`proxy.rs`).
//!
//! `/vmConsole/{ns}/{pod}/{uid}` is the serial console of the VM a launcher pod runs (the API
//! server's `virtualmachines/console`): WebSocket `plain.strata.dev` (or no subprotocol), binary
//! messages of raw bytes both ways (`console.rs`).
//!
//! The containers are reached through [`PodStreams`] only (the node's pods over the driver
//! interface); this module knows HTTP, TLS and the wire protocols, nothing of runc, netns or QEMU.

mod console;
mod exec;
mod logs;
mod pods;
mod portforward;
mod proxy;
pub mod spdy;
pub mod ws;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub use logs::{format_line, LogRequest};
pub use pods::DriverPods;
pub use strata_driver::{AttachInput, LogStream, OutputChunk};

/// The user the API server presents (kubeadm's name for the same certificate).
pub const API_SERVER_USER: &str = "kube-apiserver-kubelet-client";
/// kubelet's port.
pub const DEFAULT_PORT: u16 = 10250;

/// How the stream server listens and whom it serves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address and port (port 0: any free port; see [`StreamServer::local_addr`]).
    pub listen: SocketAddr,
    /// Serving certificate (PEM, signed by the cluster CA, naming the node's addresses) and key.
    /// Empty: none yet (handshakes fail) until [`StreamServer::certificate`] is given one, as a
    /// joined agent's is once its certificate request is signed.
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// The CA that signs the API server's client certificate (the cluster CA).
    pub client_ca_pem: String,
    /// Common names of client certificates that may call (the API server's).
    pub allowed_users: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("stream server TLS: {0}")]
    Tls(String),
    #[error("stream server cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Why a pod stream cannot be served (before any upgrade: the HTTP status; after: the
/// session's error status).
#[derive(Debug, Clone, thiserror::Error)]
pub enum PodError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unsupported(String),
    /// The workload is not in a state that allows it (a VM that is not running).
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

impl PodError {
    fn status(&self) -> StatusCode {
        match self {
            PodError::NotFound(_) => StatusCode::NOT_FOUND,
            PodError::BadRequest(_) => StatusCode::BAD_REQUEST,
            PodError::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
            PodError::Conflict(_) => StatusCode::CONFLICT,
            PodError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A container a request names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    /// The pod's uid when the path carries one (kubelet's `/exec/{ns}/{pod}/{uid}/{container}`).
    pub uid: Option<String>,
    pub container: String,
}

/// A process to stream: an exec'd command, or a container's main process (attach).
pub struct Process {
    /// It has a terminal (its output is one stream; resizes apply).
    pub tty: bool,
    /// Its input and terminal; `None` when the caller asked for no stdin.
    pub input: Option<Box<dyn AttachInput>>,
    /// Its output, in order, until it exits (exec) or the attach ends.
    pub output: Box<dyn Iterator<Item = std::io::Result<OutputChunk>> + Send>,
    /// Called once the output has ended: the exit code of an exec'd command. `None` for attach.
    pub wait: Option<Box<dyn FnOnce() -> Result<i32, PodError> + Send>>,
}

/// The node's side of the streams: what this server asks of the pods it runs. All calls block
/// (they are run on blocking threads).
pub trait PodStreams: Send + Sync + 'static {
    /// Write the container's log as kubelet formats it (`timestamps`: each line starts with its
    /// RFC 3339 time and a space) to `out` until it returns false (the client is gone) or, with
    /// `follow`, until the container's attempt ends. While following with nothing new, call
    /// `out(&[])` about every second so that a client that left is noticed.
    fn logs(&self, target: &Target, req: &LogRequest, out: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), PodError>;
    /// Start `command` in the container.
    fn exec(&self, target: &Target, command: &[String], stdin: bool, tty: bool) -> Result<Process, PodError>;
    /// Attach to the container's main process.
    fn attach(&self, target: &Target, stdin: bool, tty: bool) -> Result<Process, PodError>;
    /// Is there such a pod on this node (`NotFound` otherwise)?
    fn check_pod(&self, namespace: &str, pod: &str) -> Result<(), PodError>;
    /// A TCP connection to `port` in the pod's network namespace.
    fn port_forward(&self, namespace: &str, pod: &str, port: u16) -> Result<std::net::TcpStream, PodError>;
    /// The serial console (raw bytes both ways) of the VM that launcher pod `namespace/pod`
    /// (uid `uid`) runs on this node.
    fn vm_console(&self, namespace: &str, pod: &str, uid: &str) -> Result<std::os::unix::net::UnixStream, PodError> {
        let _ = (namespace, pod, uid);
        Err(PodError::Unsupported("this node runs no virtual machines".into()))
    }
}

type Body = BoxBody<Bytes, std::io::Error>;

pub(crate) fn full(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(text.into())).map_err(|never: Infallible| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn pod_error(e: &PodError) -> Response<Body> {
    full(e.status(), e.to_string())
}

/// A bound stream server, ready to [`StreamServer::run`].
pub struct StreamServer {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    allowed: Arc<Vec<String>>,
    pods: Arc<dyn PodStreams>,
    serving: ServingCert,
}

fn certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, Error> {
    rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| Error::Tls(e.to_string()))
}

/// The serving certificate the stream server presents; replaceable while it runs (a joined
/// node's arrives after it starts; renewals).
#[derive(Clone, Debug, Default)]
pub struct ServingCert(Arc<std::sync::RwLock<Option<Arc<rustls::sign::CertifiedKey>>>>);

impl ServingCert {
    /// Present this certificate (PEM chain) and key from the next handshake on.
    pub fn set(&self, cert_pem: &str, key_pem: &str) -> Result<(), Error> {
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| Error::Tls(format!("serving key: {e}")))?
            .ok_or_else(|| Error::Tls("no private key in the serving key".into()))?;
        let key = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| Error::Tls(format!("serving key: {e}")))?;
        let chain = certs(cert_pem)?;
        if chain.is_empty() {
            return Err(Error::Tls("no certificate in the serving certificate".into()));
        }
        let mut slot = self.0.write().map_err(|_| Error::Tls("serving certificate lock poisoned".into()))?;
        *slot = Some(Arc::new(rustls::sign::CertifiedKey::new(chain, key)));
        Ok(())
    }

    /// Is there a certificate to present?
    pub fn is_set(&self) -> bool {
        self.0.read().map(|s| s.is_some()).unwrap_or(false)
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.0.read().ok().and_then(|s| s.clone())
    }
}

fn tls_config(cfg: &Config, serving: &ServingCert) -> Result<rustls::ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&cfg.client_ca_pem)? {
        roots.add(c).map_err(|e| Error::Tls(format!("client CA: {e}")))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Tls(format!("client CA: {e}")))?;
    if !cfg.serving_cert_pem.is_empty() {
        serving.set(&cfg.serving_cert_pem, &cfg.serving_key_pem)?;
    }
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(serving.clone()));
    // Upgrades (SPDY, WebSocket) are HTTP/1.1.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Bind the stream server (the port is taken now; a taken port is an error here).
pub async fn bind(cfg: Config, pods: Arc<dyn PodStreams>) -> Result<StreamServer, Error> {
    let serving = ServingCert::default();
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&cfg, &serving)?));
    let listener = TcpListener::bind(cfg.listen).await.map_err(|source| Error::Listen { addr: cfg.listen, source })?;
    Ok(StreamServer { listener, tls, allowed: Arc::new(cfg.allowed_users), pods, serving })
}

/// The common name of a client certificate.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

impl StreamServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The certificate it presents (set it to replace it).
    pub fn certificate(&self) -> ServingCert {
        self.serving.clone()
    }

    /// Serve until the task is dropped.
    pub async fn run(self) {
        loop {
            let Ok((tcp, peer)) = self.listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let tls = self.tls.clone();
            let allowed = self.allowed.clone();
            let pods = self.pods.clone();
            tokio::spawn(async move {
                let stream = match tls.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "stream server: TLS handshake failed");
                        return;
                    }
                };
                let user = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| common_name(c.as_ref()));
                let authorized = user.as_ref().is_some_and(|u| allowed.iter().any(|a| a == u));
                let user = Arc::new(user.unwrap_or_default());
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let pods = pods.clone();
                    let user = user.clone();
                    async move {
                        if !authorized {
                            tracing::info!(%peer, user = %user, path = req.uri().path(), "stream server: refused a caller that is not the API server");
                            return Ok::<_, Infallible>(full(
                                StatusCode::FORBIDDEN,
                                format!("Forbidden (user={user}, verb={}, resource=nodes, subresource=proxy)", req.method().as_str().to_lowercase()),
                            ));
                        }
                        Ok(route(pods, req).await)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).with_upgrades();
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "stream server: connection ended");
                }
            });
        }
    }
}

/// Query parameters, repeated keys kept in order.
pub(crate) fn query(req: &Request<hyper::body::Incoming>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// A boolean parameter: kubelet's `input=1`, or `true` as clients write it.
pub(crate) fn flag(q: &[(String, String)], name: &str) -> bool {
    q.iter().any(|(k, v)| k == name && matches!(v.as_str(), "1" | "true" | "True"))
}

async fn route(pods: Arc<dyn PodStreams>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let target = |ns: &str, pod: &str, uid: Option<&str>, container: &str| Target {
        namespace: ns.to_string(),
        pod: pod.to_string(),
        uid: uid.map(str::to_string),
        container: container.to_string(),
    };
    match parts.as_slice() {
        ["healthz"] => full(StatusCode::OK, "ok"),
        ["containerLogs", ns, pod, container] if req.method() == http::Method::GET => {
            logs::serve(pods, target(ns, pod, None, container), req).await
        }
        [verb @ ("exec" | "attach"), ns, pod, container] => exec::serve(pods, verb == &"attach", target(ns, pod, None, container), req).await,
        [verb @ ("exec" | "attach"), ns, pod, uid, container] => {
            exec::serve(pods, verb == &"attach", target(ns, pod, Some(uid), container), req).await
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] => portforward::serve(pods, ns.to_string(), pod.to_string(), req).await,
        ["podProxy", ns, pod, port, ..] => {
            // The rest of the path (trailing slash kept) and the query go to the pod as they came.
            let prefix = format!("/podProxy/{ns}/{pod}/{port}");
            let rest = path.get(prefix.len()..).unwrap_or("");
            let rest = if rest.is_empty() { "/" } else { rest };
            let target = match req.uri().query() {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_string(),
            };
            // `https:PORT`: the pod speaks TLS there.
            let (tls, number) = match port.split_once(':') {
                Some(("https", n)) => (true, n),
                Some(("http", n)) => (false, n),
                Some(_) => return full(StatusCode::BAD_REQUEST, format!("invalid port {port:?}")),
                None => (false, *port),
            };
            match number.parse::<u16>() {
                Ok(number) if number > 0 => proxy::serve(pods, ns.to_string(), pod.to_string(), proxy::Target { port: number, tls, path: target }, req).await,
                _ => full(StatusCode::BAD_REQUEST, format!("invalid port {port:?}")),
            }
        }
        ["vmConsole", ns, pod, uid] if req.method() == http::Method::GET => {
            console::serve(pods, ns.to_string(), pod.to_string(), uid.to_string(), req).await
        }
        _ => full(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// Run a blocking backend call.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, PodError> + Send + 'static) -> Result<T, PodError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| PodError::Internal(format!("stream worker: {e}")))?
}

/// A `101 Switching Protocols` response with no body.
pub(crate) fn switching(b: http::response::Builder) -> Response<Body> {
    b.body(http_body_util::Empty::new().map_err(|never: Infallible| match never {}).boxed())
        .unwrap_or_else(|e| full(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}
