//! How strata's components reach the API server.
//!
//! Everything above the API server (node agent, scheduler, controllers) talks to it the way
//! kubelet, kube-scheduler and kube-controller-manager do: over HTTPS, with its own client
//! certificate, through a [`kube::Client`]. This crate builds that client from a kubeconfig file
//! (`strata agent`, `strata scheduler --kubeconfig`) or from in-memory [`Credentials`] (the
//! components `strata server` runs in its own process, each with its own identity), so the two
//! paths are one code path above it.

pub mod console;
pub mod events;
pub mod join;

use std::path::Path;

use base64::Engine as _;

pub mod lean;
pub mod leader;
pub mod quantity;
pub mod ratelimit;
pub mod retry;
pub mod vm;

pub use kube;
pub use k8s_openapi;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig { path: String, source: kube::config::KubeconfigError },
    #[error("building the API client: {0}")]
    Client(#[from] kube::Error),
    #[error("kubeconfig {0}: no certificate-authority-data for its current context")]
    NoCa(String),
    #[error("invalid server address {0:?}: expected https://HOST:PORT")]
    Server(String),
}

/// Where the API server is and who we are: the cluster CA, and a client certificate and key,
/// all PEM.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// `https://HOST:PORT`.
    pub server: String,
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Credentials {
    /// The same credentials as a kubeconfig document (what `strata agent` writes to disk, 0600).
    pub fn to_kubeconfig_yaml(&self, user: &str) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: strata\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: strata\n  context:\n    cluster: strata\n    user: {user}\ncurrent-context: strata\n",
            self.server,
            b64(&self.ca_pem),
            b64(&self.cert_pem),
            b64(&self.key_pem),
        )
    }

    /// A client authenticating with these credentials. `user_agent` names the component
    /// (it becomes the field manager of its writes, as upstream's components).
    pub async fn client(&self, user_agent: &str) -> Result<kube::Client, Error> {
        let yaml = self.to_kubeconfig_yaml("component");
        from_yaml(&yaml, "<in-memory credentials>", None, user_agent).await
    }
}

/// A client of an API server in this process, over `service` (the server's in-process
/// transport, which knows who the component is): the same requests, user agent and 429
/// retries as over HTTPS, without the socket.
pub fn in_process<S, B>(service: S, user_agent: &str) -> kube::Client
where
    S: tower::Service<http::Request<kube::client::Body>, Response = http::Response<B>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: std::error::Error + Send + Sync + 'static,
    B: hyper::body::Body<Data = hyper::body::Bytes> + Send + 'static,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    use tower::ServiceExt as _;
    let agent = http::HeaderValue::from_str(&format!("{user_agent}/{}", env!("CARGO_PKG_VERSION"))).ok();
    let service = service
        .map_request(move |mut req: http::Request<kube::client::Body>| {
            if let Some(agent) = &agent {
                req.headers_mut().entry(http::header::USER_AGENT).or_insert_with(|| agent.clone());
            }
            req
        })
        .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>);
    let service = tower::Layer::layer(&retry::TooManyRequestsLayer, service);
    kube::Client::new(service, "default")
}

/// A client from a kubeconfig file (its current context).
pub async fn from_kubeconfig(path: &Path, user_agent: &str) -> Result<kube::Client, Error> {
    from_kubeconfig_at(path, None, user_agent).await
}

/// The same, reaching the API server at `server` (`https://HOST:PORT`) instead of the address
/// in the kubeconfig when one is given, as kubectl's `--server` and kube-controller-manager's
/// `--master` do: the kubeconfig still supplies the CA and the client's credentials.
pub async fn from_kubeconfig_at(path: &Path, server: Option<&str>, user_agent: &str) -> Result<kube::Client, Error> {
    let shown = path.display().to_string();
    let yaml = std::fs::read_to_string(path).map_err(|source| Error::Read { path: shown.clone(), source })?;
    from_yaml(&yaml, &shown, server, user_agent).await
}

/// The cluster CA (PEM) of a kubeconfig file's current context.
pub fn ca_of_kubeconfig(path: &Path) -> Result<String, Error> {
    let shown = path.display().to_string();
    let yaml = std::fs::read_to_string(path).map_err(|source| Error::Read { path: shown.clone(), source })?;
    let kc = kube::config::Kubeconfig::from_yaml(&yaml).map_err(|source| Error::Kubeconfig { path: shown.clone(), source })?;
    let missing = || Error::NoCa(shown.clone());
    let context = kc.current_context.as_deref().ok_or_else(missing)?;
    let cluster = kc.contexts.iter().find(|c| c.name == context).and_then(|c| c.context.as_ref()).map(|c| c.cluster.clone()).ok_or_else(missing)?;
    let data = kc.clusters.iter().find(|c| c.name == cluster).and_then(|c| c.cluster.as_ref()).and_then(|c| c.certificate_authority_data.clone()).ok_or_else(missing)?;
    let pem = base64::engine::general_purpose::STANDARD.decode(data.trim()).map_err(|_| missing())?;
    String::from_utf8(pem).map_err(|_| missing())
}

/// `https://HOST:PORT` (or `http://`; a path or query is refused: the client appends API
/// paths to it).
fn server_url(server: &str) -> Result<http::Uri, Error> {
    let bad = || Error::Server(server.to_string());
    let uri: http::Uri = server.parse().map_err(|_| bad())?;
    let path_ok = uri.path_and_query().is_none_or(|p| p.as_str() == "/" || p.as_str().is_empty());
    if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() || !path_ok {
        return Err(bad());
    }
    Ok(uri)
}

async fn from_yaml(yaml: &str, shown: &str, server: Option<&str>, user_agent: &str) -> Result<kube::Client, Error> {
    let kc = kube::config::Kubeconfig::from_yaml(yaml).map_err(|source| Error::Kubeconfig { path: shown.to_string(), source })?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig { path: shown.to_string(), source })?;
    if let Some(server) = server {
        config.cluster_url = server_url(server)?;
    }
    if let Ok(v) = http::HeaderValue::from_str(&format!("{user_agent}/{}", env!("CARGO_PKG_VERSION"))) {
        config.headers.push((http::header::USER_AGENT, v));
    }
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder.with_layer(&retry::TooManyRequestsLayer::default()).build())
}

/// Create `object` in `namespace` and drop the answer unread: what a controller that creates
/// many objects and waits for them through its informer needs (the ReplicaSet controller's
/// pods). [`kube::Api::create`] decodes the created object, a full decode per write that such
/// a caller throws away. Errors are [`kube::Api::create`]'s.
pub async fn create_unread<K>(client: &kube::Client, namespace: &str, object: &K) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()> + serde::Serialize,
{
    let body = serde_json::to_vec(object).map_err(kube::Error::SerdeError)?;
    let request = kube::core::Request::new(K::url_path(&(), Some(namespace)))
        .create(&kube::api::PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(request).await.map(drop)
}
