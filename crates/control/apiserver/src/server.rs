//! The HTTPS listener: TLS (rustls) with optional client certificates, HTTP/1.1 and HTTP/2
//! (hyper), authentication, the body size limit, then [`Api::handle`]. The watch cache starts
//! with the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::response::IntoResponse;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use strata_store::Store;
use tokio::net::TcpListener;

use crate::api::{Api, Conn, MAX_BODY};
use crate::auth::{user_from_cert, Authenticator, Tokens, User};
use crate::rbac::Authorizer;
use crate::pki::Pki;
use crate::resources;
use crate::status::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("bootstrapping the store: {0}")]
    Bootstrap(String),
}

pub struct ServerConfig {
    pub listen: SocketAddr,
    pub pki: Pki,
    /// Optional token file (`token,user,uid,"groups"`).
    pub token_file: Option<PathBuf>,
    pub store: Arc<dyn Store>,
    /// Shortest lifetime a TokenRequest may ask for (upstream's 600 s; lowered only by tests).
    pub service_account_min_token_seconds: i64,
    /// The audit log, if any.
    pub audit: Option<Arc<crate::audit::Auditor>>,
    /// Sizes of the watch cache.
    pub watch_cache: crate::watchcache::Config,
    /// Most long-running requests (watches) served at once; more are 429.
    pub max_long_running: usize,
    /// Seats and queues of the priority lanes (see [`crate::flowcontrol`]).
    pub flow_limits: crate::flowcontrol::Limits,
    /// The tolerationSeconds of the default not-ready and unreachable tolerations of pods.
    pub default_tolerations: crate::tolerations::Defaults,
    /// Run the ServiceAccount admission plugin (see [`crate::serviceaccount`]).
    pub service_account_admission: bool,
    /// Where the built-in default StorageClass (`strata-local`) provisions its hostPath volumes.
    pub local_volumes: PathBuf,
}

/// kube-apiserver has no fixed cap on watches; this one bounds what watchers can take.
pub const DEFAULT_MAX_LONG_RUNNING: usize = 5000;

fn load_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let data = std::fs::read(path).map_err(|e| ServerError::Tls(format!("{}: {e}", path.display())))?;
    rustls_pemfile::certs(&mut data.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", path.display())))
}

fn tls_config(pki: &Pki) -> Result<rustls::ServerConfig, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs(&pki.ca_cert())? {
        roots.add(c).map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let serving = ServingCert::load(pki.clone())?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(serving));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The serving certificate, re-read when `apiserver.crt` is replaced (by `strata certs
/// rotate`): the file's identity (inode, mtime) is checked at most once a second, on a
/// handshake; a certificate that fails to load keeps the previous one in service.
#[derive(Debug)]
struct ServingCert {
    pki: Pki,
    current: std::sync::RwLock<(Option<(u64, std::time::SystemTime)>, std::time::Instant, Arc<rustls::sign::CertifiedKey>)>,
}

impl ServingCert {
    fn identity(pki: &Pki) -> Option<(u64, std::time::SystemTime)> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(pki.server_cert()).ok()?;
        Some((m.ino(), m.modified().ok()?))
    }

    fn read(pki: &Pki) -> Result<Arc<rustls::sign::CertifiedKey>, ServerError> {
        let key_pem = std::fs::read(pki.server_key()).map_err(|e| ServerError::Tls(format!("{}: {e}", pki.server_key().display())))?;
        let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| ServerError::Tls(e.to_string()))?
            .ok_or_else(|| ServerError::Tls("no private key in apiserver.key".into()))?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| ServerError::Tls(e.to_string()))?;
        let ck = rustls::sign::CertifiedKey::new(load_certs(&pki.server_cert())?, signer);
        ck.keys_match().map_err(|e| ServerError::Tls(format!("{}: {e}", pki.server_cert().display())))?;
        Ok(Arc::new(ck))
    }

    fn load(pki: Pki) -> Result<Self, ServerError> {
        let id = Self::identity(&pki);
        let ck = Self::read(&pki)?;
        Ok(Self { pki, current: std::sync::RwLock::new((id, std::time::Instant::now(), ck)) })
    }

    fn get(&self) -> Option<Arc<rustls::sign::CertifiedKey>> {
        {
            let cur = self.current.read().ok()?;
            if cur.1.elapsed() < std::time::Duration::from_secs(1) {
                return Some(cur.2.clone());
            }
        }
        let mut cur = self.current.write().ok()?;
        cur.1 = std::time::Instant::now();
        let id = Self::identity(&self.pki);
        if id != cur.0 {
            match Self::read(&self.pki) {
                Ok(ck) => {
                    tracing::info!(path = %self.pki.server_cert().display(), "serving certificate reloaded");
                    *cur = (id, std::time::Instant::now(), ck);
                }
                Err(e) => tracing::warn!(error = %e, "new serving certificate not usable (yet); keeping the current one"),
            }
        }
        Some(cur.2.clone())
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.get()
    }
}

/// Create what every cluster has: the four system namespaces.
pub async fn bootstrap(store: &dyn Store) -> Result<(), ServerError> {
    let ns = resources::find("", "v1", "namespaces").ok_or_else(|| ServerError::Bootstrap("namespaces not registered".into()))?;
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let key = ns.key(None, name);
        if store.get(&key).await.map_err(|e| ServerError::Bootstrap(e.to_string()))?.is_some() {
            continue;
        }
        let obj = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": name, "uid": crate::object::uuid(), "creationTimestamp": crate::object::now(),
                          "labels": { "kubernetes.io/metadata.name": name } },
            "spec": { "finalizers": ["kubernetes"] },
            "status": { "phase": "Active" }
        });
        match store.create(&key, serde_json::to_vec(&obj).unwrap_or_default()).await {
            Ok(_) | Err(strata_store::Error::AlreadyExists(_)) => {}
            Err(e) => return Err(ServerError::Bootstrap(e.to_string())),
        }
    }
    Ok(())
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    api: Arc<Api>,
    audit: Option<Arc<crate::audit::Auditor>>,
    flow: Arc<crate::flowcontrol::FlowControl>,
}

impl Server {
    pub async fn bind(cfg: ServerConfig) -> Result<Self, ServerError> {
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls_config(&cfg.pki)?));
        bootstrap(cfg.store.as_ref()).await?;
        crate::policy::reconcile(cfg.store.as_ref()).await.map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        crate::migrate::default_stored_templates(cfg.store.as_ref()).await.map_err(|e| ServerError::Bootstrap(format!("giving stored pod templates their defaults: {e}")))?;
        crate::priority::ensure_system_classes(cfg.store.as_ref()).await.map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        crate::runtimeclass::ensure_default_classes(cfg.store.as_ref()).await.map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        crate::storage::ensure_local_class(cfg.store.as_ref(), &cfg.local_volumes).await.map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        let tokens = match &cfg.token_file {
            Some(p) if p.exists() => Tokens::load(p).map_err(|e| ServerError::Tls(format!("{}: {e}", p.display())))?,
            _ => Tokens::default(),
        };
        let listener = TcpListener::bind(cfg.listen).await.map_err(|source| ServerError::Listen { addr: cfg.listen, source })?;
        let mut authz = Authorizer::default();
        authz.index.reload(cfg.store.as_ref()).await.map_err(|e| ServerError::Bootstrap(e.to_string()))?;
        tokio::spawn(authz.index.clone().follow(cfg.store.clone()));
        let mut signer = crate::satoken::Signer::load_or_create(&cfg.pki.service_account_key()).map_err(|e| ServerError::Tls(e.to_string()))?;
        signer.min_expiration = cfg.service_account_min_token_seconds;
        // Every store call the API makes is timed (etcd_request_duration_seconds).
        let store: Arc<dyn Store> = Arc::new(crate::metrics::MeteredStore(cfg.store.clone()));
        let graph = Arc::new(crate::node::Graph::default());
        let quotas = Arc::new(crate::quota::Tracker::default());
        let cache = crate::watchcache::WatchCache::start_observed(store.clone(), cfg.watch_cache, vec![graph.clone(), quotas.clone()]);
        tokio::spawn(crate::quota::run(store.clone(), quotas));
        authz.nodes = Some(Arc::new(crate::node::NodeAuthorizer { graph, cache: cache.clone(), store: store.clone() }));
        let authn = Authenticator { tokens, signer: Some(signer), bootstrap: Some(crate::bootstrap::Tokens { cache: cache.clone() }) };
        tokio::spawn(crate::bootstrap::clean_expired(store.clone()));
        tokio::spawn(crate::csr::run(store.clone(), authz.clone(), cfg.pki.clone()));
        // Custom kinds are served from the first request on.
        crate::crd::refresh(store.as_ref()).await;
        tokio::spawn(crate::crd::run(store.clone()));
        // The APIServices of the group versions served here (built-in and custom).
        let started = Arc::new(crate::health::Started::default());
        tokio::spawn(crate::apiservices::run(store.clone(), started.clone()));
        let long_running = Arc::new(tokio::sync::Semaphore::new(cfg.max_long_running));
        // Node agents serve pod streams only to this identity (kubeadm's name for it).
        let (cert, key, ca) = crate::pki::component_identity(&cfg.pki, crate::proxy::CLIENT_USER, &[], crate::pki::LEAF_LIFETIME)
            .map_err(|e| ServerError::Tls(format!("node agent client certificate: {e}")))?;
        let kubelet = Some(crate::proxy::KubeletClient::new(&ca, &cert, &key).map_err(|e| ServerError::Tls(format!("node agent client certificate: {e}")))?);
        Ok(Self { listener, tls, api: Arc::new(Api { store, authz, authn, cache, long_running, kubelet, default_tolerations: cfg.default_tolerations, service_account_admission: cfg.service_account_admission, created_fields: Default::default(), started }), audit: cfg.audit, flow: Arc::new(crate::flowcontrol::FlowControl::new(cfg.flow_limits)) })
    }

    /// Publish the cluster's CA and this server's URL in `kube-public/cluster-info`, where
    /// joining nodes read it (see [`crate::bootstrap`]).
    pub async fn publish_cluster_info(&self, server_url: &str, ca_pem: &[u8]) -> Result<(), ServerError> {
        crate::bootstrap::publish_cluster_info(self.api.store.as_ref(), server_url, ca_pem).await.map_err(|e| ServerError::Bootstrap(e.to_string()))
    }

    /// Publish `kube-system/extension-apiserver-authentication` (the client CA) and the legacy
    /// token tracking date, as kube-apiserver does (see [`crate::bootstrap`]).
    pub async fn publish_system_config_maps(&self, client_ca_pem: &[u8]) -> Result<(), ServerError> {
        crate::bootstrap::publish_system_config_maps(self.api.store.as_ref(), client_ca_pem).await.map_err(|e| ServerError::Bootstrap(e.to_string()))
    }

    /// Keep the `default/kubernetes` Service and its endpoints at `ip` and this server's port
    /// (see [`crate::kubernetes_service`]).
    pub fn publish_kubernetes_service(&self, ip: std::net::IpAddr, port: u16) {
        tokio::spawn(crate::kubernetes_service::run(self.api.store.clone(), ip, port));
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serve until the process ends.
    pub async fn run(self) {
        loop {
            let Ok((tcp, peer)) = self.listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let tls = self.tls.clone();
            let api = self.api.clone();
            let audit = self.audit.clone();
            let flow = self.flow.clone();
            tokio::spawn(async move {
                let stream = match tls.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                };
                let cert_user = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| user_from_cert(c.as_ref()));
                let close = Arc::new(tokio::sync::Notify::new());
                let conn = Conn { close: Some(close.clone()), upgrade: None };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let api = api.clone();
                    let cert_user = cert_user.clone();
                    let audit = audit.clone();
                    let conn = conn.clone();
                    let flow = flow.clone();
                    async move { Ok::<_, std::convert::Infallible>(serve_one(api, audit, &flow, peer, cert_user, conn, req).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                tokio::select! {
                    r = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc) => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended");
                        }
                    }
                    // A watcher on this connection stopped reading: drop the connection (and
                    // with it whatever is buffered for it); the client reconnects and re-lists.
                    () = close.notified() => tracing::info!(%peer, "closed the connection of a watcher that fell behind"),
                }
            });
        }
    }
}

/// The API served to a component in the server's own process (the controllers, the
/// scheduler) without a socket, TLS or HTTP framing: each request goes through the same flow
/// control, audit, authorization, admission and handlers as one over HTTPS, as `user` (the
/// identity the component's client certificate would carry), and its response body streams
/// back as it is produced (watches included). A `tower::Service`, so a `kube::Client` is built
/// over it as over a connection.
#[derive(Clone)]
pub struct Local {
    api: Arc<Api>,
    audit: Option<Arc<crate::audit::Auditor>>,
    flow: Arc<crate::flowcontrol::FlowControl>,
    user: User,
}

/// The peer address audit records give in-process requests.
const LOCAL_PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0));

impl Server {
    /// The API for an in-process component that is user `name` in `groups`.
    pub fn local(&self, name: &str, groups: &[&str]) -> Local {
        Local { api: self.api.clone(), audit: self.audit.clone(), flow: self.flow.clone(), user: User::new(name, groups) }
    }
}

impl<B> tower::Service<Request<B>> for Local
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::BoxFuture<'static, Result<Response<Body>, std::convert::Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Local { api, audit, flow, user } = self.clone();
        // Served on a task of its own, as a request over a socket is: the handler, and the
        // priority lane seat it holds, run to their end whether or not the caller keeps polling
        // the response. Run inside the caller's future, a request of a controller that stopped
        // polling one watcher's stream (busy with another's event) held its seat for good, and
        // with every read seat so held the controller's next read, and everyone's, waited for
        // ever. Dropping the response future before it is ready cancels the handler, as a
        // closed connection does.
        let task = tokio::spawn(async move { serve_as(api, audit, &flow, LOCAL_PEER, user, Conn::default(), req).await });
        let cancel = AbortOnDrop(task.abort_handle());
        Box::pin(async move {
            let resp = task.await.unwrap_or_else(|e| ApiError::internal(format!("serving an in-process request: {e}")).into_response());
            drop(cancel);
            Ok(resp)
        })
    }
}

/// Aborts a task when dropped (a no-op once it has finished).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Who is calling: `Ok(None)` when no credential was presented, `Err(())` when a presented one
/// is invalid (401 on every path, `/version` included, as Kubernetes answers).
async fn authenticate(api: &Api, cert_user: Option<User>, headers: &axum::http::HeaderMap) -> Result<Option<User>, ()> {
    if let Some(auth) = headers.get("authorization") {
        let auth = auth.to_str().map_err(|_| ())?;
        let (scheme, token) = auth.split_once(' ').unwrap_or((auth, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            // A presented token decides alone: a bad one is not rescued by a certificate.
            return api.authn.authenticate(api.store.as_ref(), token.trim()).await.map(Some).ok_or(());
        }
        // Other schemes (Basic, ...) are no credential strata knows, as upstream.
    }
    Ok(cert_user)
}

/// Read a request body of at most [`MAX_BODY`] bytes. A larger one is read on (and dropped)
/// up to a hard cap so that the client receives the 413 instead of a reset connection.
async fn read_body(body: Body) -> Option<axum::body::Bytes> {
    use futures_util::StreamExt;
    const DRAIN_CAP: usize = 64 * 1024 * 1024;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return None };
        total += chunk.len();
        if total <= MAX_BODY {
            buf.extend_from_slice(&chunk);
        } else if total > DRAIN_CAP {
            return None;
        }
    }
    (total <= MAX_BODY).then(|| buf.into())
}

async fn serve_one(
    api: Arc<Api>,
    audit: Option<Arc<crate::audit::Auditor>>,
    flow: &crate::flowcontrol::FlowControl,
    peer: SocketAddr,
    cert_user: Option<User>,
    conn: Conn,
    req: Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = req.uri().path();
    // Anonymous requests are let through to non-resource paths and the cluster-info ConfigMap
    // only, where RBAC decides (system:public-info-viewer grants /version and the health
    // checks, strata:bootstrap-signer-clusterinfo the ConfigMap to joining nodes).
    let public = crate::api::is_non_resource(path) || path == crate::bootstrap::CLUSTER_INFO_PATH;
    let user = match authenticate(&api, cert_user, req.headers()).await {
        Ok(Some(u)) => u,
        Ok(None) if public => User::anonymous(),
        Ok(None) | Err(()) => return ApiError::unauthorized().into_response(),
    };
    serve_as(api, audit, flow, peer, user, conn, req).await
}

/// Serve one request of an authenticated `user`. A request that is not long-running gets an
/// answer within the request timeout (the server's, or the client's shorter `?timeout=`): past
/// it, the client is answered 504 and the request's work is dropped where it is waiting (as a
/// client that hangs up drops it), so it holds no seat beyond its time.
async fn serve_as<B>(api: Arc<Api>, audit: Option<Arc<crate::audit::Auditor>>, flow: &crate::flowcontrol::FlowControl, peer: SocketAddr, user: User, conn: Conn, req: Request<B>) -> Response<Body>
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let started = std::time::Instant::now();
    let path = req.uri().path().to_string();
    let class = crate::flowcontrol::classify(req.method(), &path, req.uri().query(), &user);
    let (mut parts, body) = req.into_parts();
    let resp = serve_parts(api, audit, flow, peer, &user, conn, class, &path, &mut parts, body, started).await;
    crate::metrics::record_request(&parts.method, &path, parts.uri.query(), &parts.headers, resp.status().as_u16(), started.elapsed());
    tracing::debug!(method = %parts.method, %path, user = %user.name, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    if resp.status() == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!(method = %parts.method, %path, "internal error");
    }
    resp
}

#[allow(clippy::too_many_arguments)]
async fn serve_parts<B>(
    api: Arc<Api>,
    audit: Option<Arc<crate::audit::Auditor>>,
    flow: &crate::flowcontrol::FlowControl,
    peer: SocketAddr,
    user: &User,
    conn: Conn,
    class: crate::flowcontrol::Class,
    path: &str,
    parts: &mut axum::http::request::Parts,
    body: B,
    started: std::time::Instant,
) -> Response<Body>
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use crate::flowcontrol::Class;
    let deadline = match class {
        Class::LongRunning => None,
        Class::Exempt | Class::Seated(_) => match request_timeout(parts.uri.query(), flow.request_timeout()) {
            Ok(t) => Some(tokio::time::Instant::from_std(started) + t),
            Err(e) => return e.into_response(),
        },
    };
    // A seat in the request's lane before its body is read (long-running requests take none).
    let _seat = match class {
        Class::LongRunning | Class::Exempt => None,
        Class::Seated(lane) => match within(deadline, flow.acquire(lane)).await {
            Err(timeout) => return timeout.into_response(),
            Ok(Ok(seat)) => Some(seat),
            Ok(Err(e)) => {
                tracing::debug!(method = %parts.method, %path, user = %user.name, reason = %e, "request refused a seat");
                return ApiError::too_many_requests().into_response();
            }
        },
    };
    // exec, attach and port-forward switch protocols: the handler takes the upgrade.
    let conn = Conn { upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>().map(|u| Arc::new(std::sync::Mutex::new(Some(u)))), ..conn };
    let bytes = match within(deadline, read_body(Body::new(body))).await {
        Err(timeout) => return timeout.into_response(),
        Ok(Some(b)) => b,
        Ok(None) => return ApiError::too_large().into_response(),
    };
    let audited = audit.and_then(|a| a.begin(user, parts, peer, &bytes));
    let resp = within(deadline, api.handle(user, parts.method.clone(), path, parts.uri.query(), &parts.headers, bytes, &conn)).await.unwrap_or_else(IntoResponse::into_response);
    match audited {
        Some(pending) => pending.finish(resp).await,
        None => resp,
    }
}

/// `fut`, or a 504 when `deadline` passes first.
async fn within<T>(deadline: Option<tokio::time::Instant>, fut: impl std::future::Future<Output = T>) -> Result<T, ApiError> {
    match deadline {
        None => Ok(fut.await),
        Some(at) => tokio::time::timeout_at(at, fut).await.map_err(|_| ApiError::timeout("request did not complete within the allotted timeout")),
    }
}

/// How long a request may take: the server's limit, or the client's `?timeout=` (Go's duration
/// syntax) when it is positive and shorter, as kube-apiserver's request deadline.
fn request_timeout(query: Option<&str>, limit: std::time::Duration) -> Result<std::time::Duration, ApiError> {
    let asked = query.into_iter().flat_map(|q| url::form_urlencoded::parse(q.as_bytes())).find(|(k, _)| k == "timeout").map(|(_, v)| v);
    let Some(asked) = asked.filter(|v| !v.is_empty()) else { return Ok(limit) };
    let nanos = strata_cron::duration::parse(&asked).map_err(|e| ApiError::bad_request(format!("invalid timeout specified in the request URL - {e}")))?;
    Ok(match u64::try_from(nanos) {
        Ok(n) if n > 0 && std::time::Duration::from_nanos(n) < limit => std::time::Duration::from_nanos(n),
        _ => limit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::ServiceExt as _;

    async fn server(dir: &std::path::Path) -> Server {
        server_with(dir, crate::flowcontrol::Limits::default()).await
    }

    async fn server_with(dir: &std::path::Path, flow_limits: crate::flowcontrol::Limits) -> Server {
        let (pki, _) = crate::pki::ensure(&dir.join("pki"), &crate::pki::Issue::default()).expect("pki");
        let store: Arc<dyn Store> = Arc::new(strata_store::embedded::Embedded::open(&dir.join("db")).expect("store"));
        Server::bind(ServerConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            pki,
            token_file: None,
            store,
            service_account_min_token_seconds: 600,
            audit: None,
            watch_cache: crate::watchcache::Config::default(),
            max_long_running: DEFAULT_MAX_LONG_RUNNING,
            flow_limits,
            default_tolerations: crate::tolerations::Defaults::default(),
            service_account_admission: true,
            local_volumes: dir.join("volumes"),
        })
        .await
        .expect("bind")
    }

    /// An in-process request runs to its end on its own, as one over a socket does, even when
    /// its caller stops polling it: its seat comes back. (Served inside the caller's future, a
    /// controller busy with one watcher's event left another watcher's list holding a read seat;
    /// with every read seat so held, its own next read, and everyone's, waited for ever: the
    /// survivor of a leader change answered kubectl 429 for minutes.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_in_process_request_its_caller_stopped_polling_gives_its_seat_back() {
        use std::future::Future as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = crate::flowcontrol::Limits { readonly: 1, mutating: 1, queued: 10, wait: Duration::from_secs(3), ..Default::default() };
        let s = server_with(dir.path(), limits).await;
        let admin = s.local("admin", &["system:masters"]);
        let get = |path: &str| Request::builder().method("GET").uri(path).body(Body::empty()).expect("request");
        // Polled once (it takes the one read seat), then left alone, not dropped.
        let mut stalled = admin.clone().oneshot(get("/api/v1/namespaces/default/configmaps"));
        let waker = futures_util::task::noop_waker();
        let _ = std::pin::Pin::new(&mut stalled).poll(&mut std::task::Context::from_waker(&waker));
        let (code, _) = tokio::time::timeout(Duration::from_secs(10), call(&admin, "GET", "/api/v1/namespaces", "")).await.expect("the second read was not starved");
        assert_eq!(code, 200);
        drop(stalled);
    }

    /// A request that is not answered within the request timeout (the server's, or the
    /// client's shorter `?timeout=`) is answered 504 as kube-apiserver does, and leaves the seat
    /// queue; a `timeout` that is not a duration is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_past_its_timeout_is_answered_504() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = crate::flowcontrol::Limits { readonly: 1, mutating: 1, queued: 10, wait: Duration::from_secs(30), request_timeout: Duration::from_secs(2) };
        let s = server_with(dir.path(), limits).await;
        let admin = s.local("admin", &["system:masters"]);
        let (code, body) = call(&admin, "GET", "/api/v1/namespaces?timeout=abc", "").await;
        assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")), "{body}");
        assert_eq!(body["message"], r#"invalid timeout specified in the request URL - time: invalid duration "abc""#);
        // The one read seat is taken: reads wait for it (for up to 30 s), past their time.
        let held = s.flow.acquire(crate::flowcontrol::Lane::WorkloadReadOnly).await.expect("a free seat");
        for (query, least, most) in [("", 2000, 6000), ("?timeout=300ms", 300, 1500), ("?timeout=1h", 2000, 6000), ("?timeout=0", 2000, 6000)] {
            let started = std::time::Instant::now();
            let (code, body) = call(&admin, "GET", &format!("/api/v1/namespaces{query}"), "").await;
            let ms = started.elapsed().as_millis();
            assert_eq!((code, body["reason"].as_str()), (504, Some("Timeout")), "{query}: {body}");
            assert_eq!(body["message"], "Timeout: request did not complete within the allotted timeout", "{query}");
            assert!((least..most).contains(&ms), "{query}: answered after {ms} ms");
        }
        // The timed-out requests left the queue: with the seat back, the next read is served.
        drop(held);
        let (code, body) = tokio::time::timeout(Duration::from_secs(5), call(&admin, "GET", "/api/v1/namespaces?timeout=10s", "")).await.expect("served");
        assert_eq!((code, body["kind"].as_str()), (200, Some("NamespaceList")), "{body}");
    }

    async fn call(local: &Local, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        let req = Request::builder().method(method).uri(path).header("content-type", "application/json").body(Body::from(body.to_string())).expect("request");
        let resp = local.clone().oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// The in-process transport is no way around authorization or admission: a request is the
    /// component's user's, checked and admitted as one over HTTPS.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_process_requests_are_authorized_and_admitted_as_their_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = server(dir.path()).await;
        let cm = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"data":{"k":"v"}}"#;
        // A user with no role: forbidden, with upstream's message.
        let (code, body) = call(&s.local("alice", &[]), "POST", "/api/v1/namespaces/default/configmaps", cm).await;
        assert_eq!(code, 403, "{body}");
        assert!(body["message"].as_str().unwrap_or("").contains(r#"User "alice" cannot create resource "configmaps""#), "{body}");
        let (code, _) = call(&s.local("alice", &[]), "GET", "/api/v1/namespaces/default/configmaps/c", "").await;
        assert_eq!(code, 403);
        // The scheduler may read pods but not write ConfigMaps.
        let (code, body) = call(&s.local("system:kube-scheduler", &[]), "GET", "/api/v1/pods", "").await;
        assert_eq!((code, body["kind"].as_str()), (200, Some("PodList")), "{body}");
        let (code, _) = call(&s.local("system:kube-scheduler", &[]), "POST", "/api/v1/namespaces/default/configmaps", cm).await;
        assert_eq!(code, 403);
        // An administrator's create goes through validation and is stored.
        let admin = s.local("root", &["system:masters"]);
        let (code, body) = call(&admin, "POST", "/api/v1/namespaces/default/configmaps", r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#).await;
        assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")), "{body}");
        let (code, body) = call(&admin, "POST", "/api/v1/namespaces/default/configmaps", cm).await;
        assert_eq!(code, 201, "{body}");
        let (code, body) = call(&admin, "GET", "/api/v1/namespaces/default/configmaps/c", "").await;
        assert_eq!((code, body["data"]["k"].as_str()), (200, Some("v")), "{body}");
        assert_eq!(body["metadata"]["managedFields"][0]["manager"], "unknown", "no user agent: the manager is \"unknown\"");
    }
}
