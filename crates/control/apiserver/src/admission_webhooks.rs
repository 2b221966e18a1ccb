//! Admission webhooks called (kube-apiserver's MutatingAdmissionWebhook and
//! ValidatingAdmissionWebhook plugins): every webhook of the stored
//! MutatingWebhookConfigurations and ValidatingWebhookConfigurations ([`crate::webhooks`] defaults
//! and validates them) whose rules, namespaceSelector, objectSelector and matchConditions select
//! a CREATE, UPDATE or DELETE request is sent an `admission.k8s.io` AdmissionReview (v1, or
//! v1beta1 when that is the first version the webhook lists) over HTTPS, and its answer decides:
//!
//! - mutating webhooks run one after the other, configurations in name order and webhooks as
//!   listed; each sees the object as the ones before it left it, and a JSONPatch it returns is
//!   applied. A webhook with `reinvocationPolicy: IfNeeded` is called once more when a later one
//!   changed the object after it ran. The caller defaults and validates a changed object again.
//! - validating webhooks run concurrently on the final object; the first denial (in order) wins.
//! - a denial is the webhook's Status (403 Forbidden when it gives no code) with upstream's
//!   message, `<resource> "<name>" is forbidden: admission webhook "<webhook>" denied the
//!   request: <message>`; warnings come back to the client.
//! - a webhook that cannot be called (refused, timed out after `timeoutSeconds`, a TLS failure, a
//!   response that is not a valid AdmissionReview for the request's uid) fails the request with
//!   500 `failed calling webhook "<webhook>": ...` under `failurePolicy: Fail`, and is skipped
//!   under `Ignore`.
//!
//! Where a webhook is: `clientConfig.url`, or `clientConfig.service`, which is resolved to one
//! of the service's ready endpoint addresses (the port named as the service port is), dialled
//! directly with `<name>.<namespace>.svc` as the TLS server name (kube-apiserver's
//! `--enable-aggregator-routing` resolution: strata has no cluster IP routing on the server's
//! host). The server's certificate is checked against `caBundle`, else the host's trust store;
//! connections are kept alive for the next call to the same address with the same trust.
//! Webhook configurations and admission policies are never sent to webhooks (upstream exempts
//! them, so a broken webhook can always be removed). Not supported: `matchPolicy: Equivalent`
//! matching a request through another version of its resource (each resource is served at
//! the versions its rules name), and the `authorizer` variable of matchConditions.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use strata_store::Store;

use crate::resources::Resource;
use crate::status::ApiError;
use crate::vap;

/// The most of a webhook's answer that is read.
const MAX_RESPONSE: usize = 16 << 20;
/// Where the host's trust store is, for webhooks without a caBundle.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Which of the two plugins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mutating,
    Validating,
}

impl Kind {
    fn plural(self) -> &'static str {
        match self {
            Kind::Mutating => "mutatingwebhookconfigurations",
            Kind::Validating => "validatingwebhookconfigurations",
        }
    }

    /// Where this kind's configurations are stored.
    pub fn key_prefix(self) -> &'static str {
        static PREFIXES: std::sync::OnceLock<[String; 2]> = std::sync::OnceLock::new();
        let [m, v] = PREFIXES.get_or_init(|| [Kind::Mutating, Kind::Validating].map(|k| crate::resources::find("admissionregistration.k8s.io", "v1", k.plural()).map(Resource::key_prefix).unwrap_or_default()));
        match self {
            Kind::Mutating => m,
            Kind::Validating => v,
        }
    }
}

/// A request's kinds that webhooks never see (upstream's `IsExemptAdmissionConfigurationResource`).
pub fn exempt(r: &Resource) -> bool {
    r.group == "admissionregistration.k8s.io"
        && matches!(
            r.kind,
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" | "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding" | "MutatingAdmissionPolicy" | "MutatingAdmissionPolicyBinding"
        )
}

/// The webhooks of `kind`, in the order they run: configurations by name, webhooks as listed.
async fn hooks(store: &dyn Store, kind: Kind) -> Result<Vec<Value>, ApiError> {
    let prefix = kind.key_prefix();
    if prefix.is_empty() {
        return Ok(Vec::new());
    }
    let page = store.list(prefix, None, 0).await?;
    let mut configs: Vec<Value> = page.items.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect();
    configs.sort_by(|a, b| crate::object::name_of(a).cmp(crate::object::name_of(b)));
    Ok(configs.into_iter().flat_map(|c| c["webhooks"].as_array().cloned().unwrap_or_default()).collect())
}

/// What a request adds to the plain one admission policies see.
pub struct Call<'a> {
    pub request: &'a vap::Request<'a>,
    /// The operation's options (CreateOptions, UpdateOptions, DeleteOptions) as sent.
    pub options: Value,
}

/// The labels the namespaceSelector is matched against: a Namespace's own (a request on a
/// namespace), the request's namespace's, or none needed (a cluster-scoped resource: every
/// namespaceSelector matches).
async fn namespace_labels(store: &dyn Store, req: &vap::Request<'_>, object: Option<&Value>) -> Result<Option<Value>, ApiError> {
    if req.resource.builtin() == "Namespace" {
        let obj = object.or(req.old);
        return Ok(Some(obj.map(|o| o["metadata"]["labels"].clone()).unwrap_or(Value::Null)));
    }
    if !req.resource.namespaced {
        return Ok(None);
    }
    Ok(Some(vap::namespace_of(store, req).await?["metadata"]["labels"].clone()))
}

/// Does `hook` select the request? An error is a matchCondition that could not be evaluated
/// under `failurePolicy: Fail`.
fn selects(hook: &Value, req: &vap::Request<'_>, object: Option<&Value>, ns_labels: Option<&Value>) -> Result<bool, ApiError> {
    if !hook["rules"].as_array().into_iter().flatten().any(|rule| vap::rule_matches(rule, req)) {
        return Ok(false);
    }
    if let Some(labels) = ns_labels {
        if !vap::selects(&hook["namespaceSelector"], labels) {
            return Ok(false);
        }
    }
    if !vap::object_selects(&hook["objectSelector"], object, req.old) {
        return Ok(false);
    }
    let conditions = hook["matchConditions"].as_array().map(Vec::as_slice).unwrap_or_default();
    if conditions.is_empty() {
        return Ok(true);
    }
    let vars = [
        ("object", crate::celenv::value(object.unwrap_or(&Value::Null))),
        ("oldObject", crate::celenv::value(req.old.unwrap_or(&Value::Null))),
        ("request", crate::celenv::value(&request_of(req, object, &Value::Null, ""))),
    ];
    let name = hook["name"].as_str().unwrap_or("");
    for c in conditions {
        let failed = match crate::celenv::run(c["expression"].as_str().unwrap_or(""), &vars) {
            Ok(cel::Value::Bool(true)) => continue,
            Ok(cel::Value::Bool(false)) => return Ok(false),
            Ok(other) => format!("matchCondition '{}' must evaluate to bool, got {other:?}", c["name"].as_str().unwrap_or("")),
            Err(e) => format!("matchCondition '{}' resulted in error: {e}", c["name"].as_str().unwrap_or("")),
        };
        if hook["failurePolicy"].as_str() == Some("Ignore") {
            tracing::warn!(webhook = name, error = %failed, "match condition failed, skipping the webhook (failurePolicy Ignore)");
            return Ok(false);
        }
        return Err(ApiError::forbidden(req.resource, req.name, &format!("failed to evaluate match conditions of webhook \"{name}\": {failed}")));
    }
    Ok(true)
}

/// The `request` of an AdmissionReview.
fn request_of(req: &vap::Request<'_>, object: Option<&Value>, options: &Value, uid: &str) -> Value {
    let r = req.resource;
    // Through a subresource whose object is another kind (a Scale, a CONNECT's PodExecOptions),
    // the kind is that object's, as upstream's.
    let own = json!({ "group": r.group, "version": r.version, "kind": r.kind });
    let kind = match object.filter(|_| req.subresource.is_some()).map(|o| (o["apiVersion"].as_str().unwrap_or(""), o["kind"].as_str().unwrap_or(""))) {
        Some((api_version, kind)) if !kind.is_empty() && kind != r.kind => {
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            json!({ "group": group, "version": version, "kind": kind })
        }
        _ => own,
    };
    let resource = json!({ "group": r.group, "version": r.version, "resource": r.plural });
    let mut user = json!({ "username": req.user.name, "groups": req.user.groups });
    if !req.user.uid.is_empty() {
        user["uid"] = json!(req.user.uid);
    }
    if !req.user.extra.is_empty() {
        user["extra"] = json!(req.user.extra);
    }
    let mut out = json!({
        "uid": uid,
        "kind": kind,
        "resource": resource,
        "requestKind": kind,
        "requestResource": resource,
        "name": req.name,
        "operation": req.operation,
        "userInfo": user,
        "object": object.cloned().unwrap_or(Value::Null),
        "oldObject": req.old.cloned().unwrap_or(Value::Null),
        "dryRun": req.dry_run,
        "options": options,
    });
    if let Some(ns) = req.namespace.filter(|_| r.namespaced || r.builtin() == "Namespace") {
        out["namespace"] = json!(ns);
    }
    if let Some(sub) = req.subresource {
        out["subResource"] = json!(sub);
        out["requestSubResource"] = json!(sub);
    }
    out
}

/// Why a webhook could not be called (upstream's `ErrCallingWebhook` reason).
#[derive(Debug)]
struct CallError(String);

/// The AdmissionReview version the webhook is sent: the first of its list this server speaks.
fn review_version(hook: &Value) -> Option<&'static str> {
    hook["admissionReviewVersions"].as_array().into_iter().flatten().filter_map(Value::as_str).find_map(|v| match v {
        "v1" => Some("v1"),
        "v1beta1" => Some("v1beta1"),
        _ => None,
    })
}

/// What a webhook answered, checked as upstream's `VerifyAdmissionResponse` does.
#[derive(Debug, Default)]
struct Answer {
    allowed: bool,
    /// The JSON patch's operations (mutating webhooks).
    patch: Option<Value>,
    result: Value,
    warnings: Vec<String>,
}

fn verify(review: &Value, version: &str, uid: &str, mutating: bool) -> Result<Answer, String> {
    let resp = &review["response"];
    if !resp.is_object() {
        return Err("webhook response was absent".into());
    }
    if version == "v1" {
        let got = resp["uid"].as_str().unwrap_or("");
        if got != uid {
            return Err(format!("expected response.uid={uid:?}, got {got:?}"));
        }
        let gvk = (review["apiVersion"].as_str().unwrap_or(""), review["kind"].as_str().unwrap_or(""));
        if gvk != ("admission.k8s.io/v1", "AdmissionReview") {
            return Err(format!("expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {}, Kind={}", gvk.0, gvk.1));
        }
    }
    let patch = resp["patch"].as_str().filter(|p| !p.is_empty());
    let patch_type = resp["patchType"].as_str();
    if !mutating {
        if patch.is_some() {
            return Err("validating webhook may not return response.patch".into());
        }
        if !resp["patchType"].is_null() {
            return Err("validating webhook may not return response.patchType".into());
        }
    } else if version == "v1" {
        match (patch, patch_type) {
            (Some(_), None) => return Err("webhook returned response.patch but not response.patchType".into()),
            (None, Some(_)) => return Err("webhook returned response.patchType but not response.patch".into()),
            (Some(_), Some(t)) if t != "JSONPatch" => return Err(format!("unsupported patch type {t:?}")),
            _ => {}
        }
    }
    let patch = match patch.filter(|_| mutating) {
        None => None,
        Some(b64) => {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("response.patch is not base64: {e}"))?;
            Some(serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("response.patch is not a JSON patch: {e}"))?)
        }
    };
    Ok(Answer {
        allowed: resp["allowed"].as_bool().unwrap_or(false),
        patch,
        result: resp["status"].clone(),
        warnings: resp["warnings"].as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect(),
    })
}

/// A denial as the client sees it (upstream's `ToStatusErr`).
fn denial(r: &Resource, name: &str, webhook: &str, result: &Value) -> ApiError {
    let code = result["code"].as_u64().filter(|c| *c > 0).unwrap_or(403) as u16;
    let denied_by = format!("admission webhook \"{webhook}\" denied the request");
    let message = match (result["message"].as_str().filter(|m| !m.is_empty()), result["reason"].as_str().filter(|m| !m.is_empty())) {
        (Some(m), _) => format!("{denied_by}: {m}"),
        (None, Some(reason)) => format!("{denied_by}: {reason}"),
        (None, None) => format!("{denied_by} without explanation"),
    };
    let name = if name.is_empty() { "Unknown" } else { name };
    let internal = code == 500;
    let message = if internal { format!("Internal error occurred: {message}") } else { format!("{} \"{name}\" is forbidden: {message}", r.group_resource()) };
    let reason = result["reason"].as_str().and_then(known_reason).unwrap_or(if internal { "InternalError" } else { "Forbidden" });
    let mut e = ApiError::new(code, reason, message.clone());
    e.details = Some(if !result["details"].is_null() {
        result["details"].clone()
    } else if internal {
        json!({ "causes": [{ "message": message }] })
    } else {
        let mut d = json!({ "name": name, "kind": r.plural });
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        d
    });
    e
}

/// metav1's StatusReasons, for a webhook's Status to keep its own.
fn known_reason(reason: &str) -> Option<&'static str> {
    const REASONS: &[&str] = &[
        "Unauthorized", "Forbidden", "NotFound", "AlreadyExists", "Conflict", "Gone", "Invalid", "ServerTimeout", "StoreReadError", "Timeout", "TooManyRequests", "BadRequest", "MethodNotAllowed",
        "NotAcceptable", "RequestEntityTooLarge", "UnsupportedMediaType", "InternalError", "Expired", "ServiceUnavailable",
    ];
    REASONS.iter().find(|r| **r == reason).copied()
}

/// The request's error for a webhook that could not be called (under `failurePolicy: Fail`).
fn calling_failed(webhook: &str, e: &CallError) -> ApiError {
    let mut err = ApiError::internal(format!("failed calling webhook \"{webhook}\": {}", e.0));
    err.details = Some(json!({ "causes": [{ "message": err.message.clone() }] }));
    err
}

/// Send one webhook its review and check the answer.
async fn invoke(store: &dyn Store, hook: &Value, call: &Call<'_>, object: Option<&Value>, mutating: bool) -> Result<Answer, CallError> {
    let version = review_version(hook).ok_or_else(|| CallError("could not create admission objects: webhook does not accept known AdmissionReview versions (v1, v1beta1)".into()))?;
    let uid = crate::object::uuid();
    let review = json!({
        "apiVersion": format!("admission.k8s.io/{version}"),
        "kind": "AdmissionReview",
        "request": request_of(call.request, object, &call.options, &uid),
    });
    let body = serde_json::to_vec(&review).map_err(|e| CallError(format!("could not create admission objects: {e}")))?;
    let timeout = hook["timeoutSeconds"].as_u64().unwrap_or(10).clamp(1, 30);
    // The timeout bounds the whole call: finding the address (a DNS lookup, a service's
    // endpoints) as well as the exchange.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let target = tokio::time::timeout_at(deadline, Target::of(store, hook))
        .await
        .map_err(|_| CallError("failed to call webhook: context deadline exceeded".into()))?
        .map_err(|e| CallError(format!("failed to call webhook: {e}")))?;
    let url = format!("{}?timeout={timeout}s", target.url());
    let answer = tokio::time::timeout_at(deadline, post(&target, hook, &format!("{}?timeout={timeout}s", target.path), body))
        .await
        .map_err(|_| CallError(format!("failed to call webhook: Post \"{url}\": context deadline exceeded")))?
        .map_err(|e| CallError(format!("failed to call webhook: Post \"{url}\": {e}")))?;
    verify(&answer, version, &uid, mutating).map_err(|e| CallError(format!("received invalid webhook response: {e}")))
}

/// Where a webhook's request goes.
struct Target {
    /// What is dialled.
    addr: std::net::SocketAddr,
    /// The TLS server name (the URL's host, or `<service>.<namespace>.svc`).
    server_name: String,
    /// The `host:port` shown in messages and sent as `Host`.
    authority: String,
    /// Path and query (without the timeout).
    path: String,
}

impl Target {
    fn url(&self) -> String {
        format!("https://{}{}", self.authority, self.path)
    }

    async fn of(store: &dyn Store, hook: &Value) -> Result<Target, String> {
        let cc = &hook["clientConfig"];
        if let Some(url) = cc["url"].as_str() {
            let u = url::Url::parse(url).map_err(|e| format!("invalid webhook URL {url:?}: {e}"))?;
            let host = u.host_str().ok_or_else(|| format!("webhook URL {url:?} has no host"))?.trim_matches(|c| c == '[' || c == ']').to_string();
            let port = u.port().unwrap_or(443);
            let mut path = u.path().to_string();
            if let Some(q) = u.query() {
                path = format!("{path}?{q}");
            }
            let authority = match u.port() {
                Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
                None => u.host_str().unwrap_or("").to_string(),
            };
            let addr = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => std::net::SocketAddr::new(ip, port),
                Err(_) => tokio::net::lookup_host((host.as_str(), port)).await.map_err(|e| format!("dial tcp: lookup {host}: {e}"))?.next().ok_or_else(|| format!("dial tcp: lookup {host}: no such host"))?,
            };
            return Ok(Target { addr, server_name: host, authority, path: if path.is_empty() { "/".into() } else { path } });
        }
        let svc = &cc["service"];
        let (ns, name) = (svc["namespace"].as_str().unwrap_or(""), svc["name"].as_str().unwrap_or(""));
        let port = svc["port"].as_i64().unwrap_or(443);
        let path = svc["path"].as_str().filter(|p| !p.is_empty()).unwrap_or("/").to_string();
        let addr = service_endpoint(store, ns, name, port).await?;
        let server_name = format!("{name}.{ns}.svc");
        Ok(Target { addr, authority: format!("{server_name}:{port}"), server_name, path })
    }
}

/// One ready endpoint of Service `ns/name`'s port `port`.
async fn service_endpoint(store: &dyn Store, ns: &str, name: &str, port: i64) -> Result<std::net::SocketAddr, String> {
    let get = |plural: &'static str| async move {
        let Some(r) = crate::resources::find("", "v1", plural) else { return Ok(None) };
        match store.get(&r.key(Some(ns), name)).await {
            Ok(Some(kv)) => Ok(serde_json::from_slice::<Value>(&kv.value).ok()),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    };
    let svc = get("services").await?.ok_or_else(|| format!("service \"{name}\" not found"))?;
    let svc_port = svc["spec"]["ports"].as_array().into_iter().flatten().find(|p| p["port"].as_i64() == Some(port)).ok_or_else(|| format!("service \"{name}\" has no port {port}"))?;
    let port_name = svc_port["name"].as_str().unwrap_or("");
    let endpoints = get("endpoints").await?.unwrap_or(Value::Null);
    pick_endpoint(&endpoints, port_name).ok_or_else(|| format!("no endpoints available for service \"{name}\""))
}

/// A ready address of `endpoints` with the port named `port_name`, picked at random.
fn pick_endpoint(endpoints: &Value, port_name: &str) -> Option<std::net::SocketAddr> {
    let mut found = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let Some(port) = subset["ports"].as_array().into_iter().flatten().find(|p| p["name"].as_str().unwrap_or("") == port_name).and_then(|p| p["port"].as_u64()).and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for a in subset["addresses"].as_array().into_iter().flatten() {
            if let Some(ip) = a["ip"].as_str().and_then(|ip| ip.parse::<std::net::IpAddr>().ok()) {
                found.push(std::net::SocketAddr::new(ip, port));
            }
        }
    }
    (!found.is_empty()).then(|| found[rand::random::<usize>() % found.len()])
}

/// The TLS configuration for a webhook's trust (its caBundle, else the host's trust store), built
/// once per distinct trust and kept (bounded).
fn tls(hook: &Value) -> Result<Arc<rustls::ClientConfig>, String> {
    use base64::Engine;
    let ca_bundle = hook["clientConfig"]["caBundle"].as_str().unwrap_or("");
    if let Some(cfg) = CLIENTS.tls.lock().unwrap_or_else(|e| e.into_inner()).get(ca_bundle) {
        return Ok(cfg.clone());
    }
    let pem = match Some(ca_bundle).filter(|b| !b.is_empty()) {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("invalid caBundle: {e}"))?,
        None => std::fs::read(SYSTEM_ROOTS).unwrap_or_default(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut pem.as_slice()) {
        let c = c.map_err(|e| format!("invalid caBundle: {e}"))?;
        let _ = roots.add(c);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().map_err(|e| e.to_string())?.with_root_certificates(roots).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    let mut cache = CLIENTS.tls.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= MAX_TRUSTS {
        cache.clear();
    }
    cache.insert(ca_bundle.to_string(), cfg.clone());
    Ok(cfg)
}

/// Connections to webhooks kept alive between calls, as upstream's webhook client keeps them
/// (a TLS handshake per admitted request otherwise), and the TLS configurations they were
/// made with. One for the process: what a connection may be reused for is told by its
/// [`ConnKey`], which includes the trust it was verified with.
struct Clients {
    tls: std::sync::Mutex<std::collections::HashMap<String, Arc<rustls::ClientConfig>>>,
    idle: std::sync::Mutex<std::collections::HashMap<ConnKey, Vec<(tokio::time::Instant, Sender)>>>,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<axum::body::Bytes>>;

static CLIENTS: std::sync::LazyLock<Clients> = std::sync::LazyLock::new(|| Clients { tls: Default::default(), idle: Default::default() });

/// Distinct trusts whose TLS configurations are kept.
const MAX_TRUSTS: usize = 64;
/// Idle connections kept per webhook address.
const MAX_IDLE_PER_KEY: usize = 16;
/// How long an idle connection is kept (Go's http.Transport default).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What a kept connection may be reused for: the same address, server name and trust.
#[derive(Clone, PartialEq, Eq, Hash)]
struct ConnKey {
    addr: std::net::SocketAddr,
    server_name: String,
    ca_bundle: String,
}

impl Clients {
    /// A kept connection for `key` that is still open, if any.
    fn take(&self, key: &ConnKey) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        let now = tokio::time::Instant::now();
        let found = loop {
            match list.pop() {
                Some((since, sender)) if now.duration_since(since) < IDLE_TIMEOUT && !sender.is_closed() => break Some(sender),
                Some(_) => continue,
                None => break None,
            }
        };
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keep `sender` for the next call to `key`.
    fn put(&self, key: ConnKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Connections idle too long go, everywhere (the addresses of webhooks behind services
        // come and go).
        idle.retain(|_, list| {
            list.retain(|(since, s)| now.duration_since(*since) < IDLE_TIMEOUT && !s.is_closed());
            !list.is_empty()
        });
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_KEY {
            list.push((now, sender));
        }
    }
}

/// A new connection to `target`.
async fn connect(target: &Target, tls: Arc<rustls::ClientConfig>) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect(target.addr).await.map_err(|e| format!("dial tcp {}: {e}", target.addr))?;
    let _ = tcp.set_nodelay(true);
    let name = match target.server_name.parse::<std::net::IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Err(_) => rustls::pki_types::ServerName::try_from(target.server_name.clone()).map_err(|e| format!("invalid server name {:?}: {e}", target.server_name))?,
    };
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| format!("tls: failed to verify certificate or handshake: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "webhook connection ended");
        }
    });
    Ok(sender)
}

/// POST the review on a kept connection or a new one; the answer's JSON. A kept connection the
/// webhook closed before answering (it may close idle ones at any time) is given up and the
/// review sent once more on a new one, as Go's transport retries a request on a connection the
/// server closed.
async fn post(target: &Target, hook: &Value, path: &str, body: Vec<u8>) -> Result<Value, String> {
    let tls = tls(hook)?;
    let key = ConnKey { addr: target.addr, server_name: target.server_name.clone(), ca_bundle: hook["clientConfig"]["caBundle"].as_str().unwrap_or("").to_string() };
    let body = axum::body::Bytes::from(body);
    let request = || {
        Request::post(path)
            .header("host", &target.authority)
            .header("content-type", "application/json")
            .header("accept", "application/json, */*")
            .body(Full::new(body.clone()))
            .map_err(|e| e.to_string())
    };
    let mut kept = CLIENTS.take(&key);
    let (sender, resp) = loop {
        let reused = kept.is_some();
        let mut sender = match kept.take() {
            Some(s) => s,
            None => connect(target, tls.clone()).await?,
        };
        let sent = match sender.ready().await {
            Ok(()) => sender.send_request(request()?).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(resp) => break (sender, resp),
            Err(e) if reused => tracing::debug!(error = %e, webhook = %target.url(), "a kept webhook connection failed; trying a new one"),
            Err(e) => return Err(e.to_string()),
        }
    };
    let status = resp.status();
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE);
    let bytes = limited.collect().await.map_err(|e| format!("reading the response: {e}"))?.to_bytes();
    // The whole answer was read: the connection can carry the next review (whether it still
    // can is asked when it is taken again).
    CLIENTS.put(key, sender);
    if status != StatusCode::OK && !status.is_success() {
        let text = String::from_utf8_lossy(&bytes);
        let shown = if text.trim().is_empty() { String::new() } else { format!(" ({:?})", text.chars().take(200).collect::<String>()) };
        return Err(format!("the server responded with the status code {}{shown}", status.as_u16()));
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("the response is not JSON: {e}"))
}

/// Mutating admission webhooks on `object` (CREATE or UPDATE; on DELETE `object` is None and a
/// patch is an error): Ok(whether any changed it, their warnings), or the request's error.
pub async fn mutate(store: &dyn Store, call: &Call<'_>, object: &mut Value) -> Result<(bool, Vec<String>), ApiError> {
    let req = call.request;
    if exempt(req.resource) {
        return Ok((false, Vec::new()));
    }
    let hooks = hooks(store, Kind::Mutating).await?;
    if hooks.is_empty() {
        return Ok((false, Vec::new()));
    }
    let ns_labels = namespace_labels(store, req, Some(object)).await?;
    let mut warnings = Vec::new();
    let mut changed = false;
    // Reinvocation: the IfNeeded webhooks called so far, and which of them ran before the
    // latest change (those are called again after the first round).
    let mut reinvoke: Vec<usize> = Vec::new();
    let mut called_if_needed: Vec<usize> = Vec::new();
    for round in 0..2 {
        for (i, hook) in hooks.iter().enumerate() {
            if round == 1 && !reinvoke.contains(&i) {
                continue;
            }
            if !selects(hook, req, Some(object), ns_labels.as_ref())? {
                continue;
            }
            let name = hook["name"].as_str().unwrap_or("");
            let answer = match invoke(store, hook, call, Some(object), true).await {
                Ok(a) => a,
                Err(e) if hook["failurePolicy"].as_str() == Some("Ignore") => {
                    tracing::warn!(webhook = name, error = %e.0, "failed calling webhook, failing open");
                    continue;
                }
                Err(e) => return Err(calling_failed(name, &e)),
            };
            warnings.extend(answer.warnings);
            if !answer.allowed {
                return Err(denial(req.resource, req.name, name, &answer.result));
            }
            let mut this_changed = false;
            if let Some(ops) = answer.patch.filter(|p| p.as_array().is_some_and(|a| !a.is_empty())) {
                let before = object.clone();
                crate::patch::json_patch(object, &ops).map_err(ApiError::internal)?;
                this_changed = *object != before;
            }
            if round == 0 {
                if this_changed {
                    // Every IfNeeded webhook called before this one saw an older object.
                    reinvoke = called_if_needed.clone();
                }
                if hook["reinvocationPolicy"].as_str() == Some("IfNeeded") {
                    called_if_needed.push(i);
                }
            }
            changed |= this_changed;
        }
        if reinvoke.is_empty() {
            break;
        }
    }
    Ok((changed, warnings))
}

/// A DELETE's object is the stored one; a mutating webhook's patch of it is refused.
pub async fn mutate_delete(store: &dyn Store, call: &Call<'_>) -> Result<Vec<String>, ApiError> {
    let req = call.request;
    if exempt(req.resource) {
        return Ok(Vec::new());
    }
    let hooks = hooks(store, Kind::Mutating).await?;
    let ns_labels = if hooks.is_empty() { None } else { namespace_labels(store, req, None).await? };
    let mut warnings = Vec::new();
    for hook in &hooks {
        if !selects(hook, req, None, ns_labels.as_ref())? {
            continue;
        }
        let name = hook["name"].as_str().unwrap_or("");
        match invoke(store, hook, call, None, true).await {
            Ok(a) => {
                warnings.extend(a.warnings);
                if !a.allowed {
                    return Err(denial(req.resource, req.name, name, &a.result));
                }
                if a.patch.as_ref().and_then(Value::as_array).is_some_and(|p| !p.is_empty()) {
                    return Err(ApiError::internal(format!("admission webhook \"{name}\" attempted to modify the object, which is not supported for this operation")));
                }
            }
            Err(e) if hook["failurePolicy"].as_str() == Some("Ignore") => tracing::warn!(webhook = name, error = %e.0, "failed calling webhook, failing open"),
            Err(e) => return Err(calling_failed(name, &e)),
        }
    }
    Ok(warnings)
}

/// Validating admission webhooks, concurrently: Ok(their warnings), or the first (in order)
/// denial or failure.
pub async fn validate(store: &dyn Store, call: &Call<'_>) -> Result<Vec<String>, ApiError> {
    let req = call.request;
    if exempt(req.resource) {
        return Ok(Vec::new());
    }
    let hooks = hooks(store, Kind::Validating).await?;
    if hooks.is_empty() {
        return Ok(Vec::new());
    }
    let ns_labels = namespace_labels(store, req, req.object).await?;
    let mut selected = Vec::new();
    for hook in &hooks {
        if selects(hook, req, req.object, ns_labels.as_ref())? {
            selected.push(hook);
        }
    }
    let answers = futures_util::future::join_all(selected.iter().map(|hook| invoke(store, hook, call, req.object, false))).await;
    let mut warnings = Vec::new();
    let mut first_error = None;
    for (hook, answer) in selected.iter().zip(answers) {
        let name = hook["name"].as_str().unwrap_or("");
        match answer {
            Ok(a) => {
                warnings.extend(a.warnings);
                if !a.allowed {
                    first_error.get_or_insert_with(|| denial(req.resource, req.name, name, &a.result));
                }
            }
            Err(e) if hook["failurePolicy"].as_str() == Some("Ignore") => tracing::warn!(webhook = name, error = %e.0, "failed calling webhook, failing open"),
            Err(e) => {
                first_error.get_or_insert_with(|| calling_failed(name, &e));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(warnings),
    }
}

/// The options object of an operation, as the AdmissionReview carries it.
pub fn options(operation: &str, dry_run: bool, manager: Option<&str>, delete: Option<&Value>) -> Value {
    let kind = match operation {
        "CREATE" => "CreateOptions",
        "UPDATE" => "UpdateOptions",
        _ => "DeleteOptions",
    };
    let mut o = delete.filter(|d| d.is_object()).cloned().unwrap_or_else(|| json!({}));
    o["apiVersion"] = json!("meta.k8s.io/v1");
    o["kind"] = json!(kind);
    if dry_run {
        o["dryRun"] = json!(["All"]);
    }
    if let Some(m) = manager.filter(|m| !m.is_empty() && kind != "DeleteOptions") {
        o["fieldManager"] = json!(m);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods() -> &'static Resource {
        crate::resources::find("", "v1", "pods").expect("pods")
    }

    fn user() -> crate::auth::User {
        crate::auth::User { name: "alice".into(), groups: vec!["system:authenticated".into()], uid: String::new(), extra: Default::default() }
    }

    #[test]
    fn a_webhook_selects_by_rules_selectors_and_match_conditions() {
        let u = user();
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let req = vap::Request { resource: pods(), subresource: None, operation: "CREATE", namespace: Some("default"), name: "p", object: Some(&pod), old: None, user: &u, dry_run: false };
        let hook = |extra: Value| {
            let mut h = json!({"name": "a.b.c", "failurePolicy": "Fail", "namespaceSelector": {}, "objectSelector": {},
                "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "*"}]});
            for (k, v) in extra.as_object().into_iter().flatten() {
                h[k] = v.clone();
            }
            h
        };
        let ns = json!({"team": "a"});
        assert!(selects(&hook(json!({})), &req, Some(&pod), Some(&ns)).unwrap());
        assert!(!selects(&hook(json!({"rules": [{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]})), &req, Some(&pod), Some(&ns)).unwrap());
        assert!(!selects(&hook(json!({"rules": [{"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/status"]}]})), &req, Some(&pod), Some(&ns)).unwrap());
        assert!(!selects(&hook(json!({"namespaceSelector": {"matchLabels": {"team": "b"}}})), &req, Some(&pod), Some(&ns)).unwrap());
        assert!(selects(&hook(json!({"namespaceSelector": {"matchLabels": {"team": "a"}}})), &req, Some(&pod), Some(&ns)).unwrap());
        assert!(!selects(&hook(json!({"objectSelector": {"matchLabels": {"app": "db"}}})), &req, Some(&pod), Some(&ns)).unwrap());
        assert!(selects(&hook(json!({"objectSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}})), &req, Some(&pod), Some(&ns)).unwrap());
        // A CREATE has no old object: it does not match a selector that absent labels would.
        let skipped = json!({"metadata": {"name": "p", "labels": {"skip": "1"}}});
        let skip = hook(json!({"objectSelector": {"matchExpressions": [{"key": "skip", "operator": "DoesNotExist"}]}}));
        assert!(!selects(&skip, &req, Some(&skipped), Some(&ns)).unwrap());
        assert!(selects(&skip, &req, Some(&pod), Some(&ns)).unwrap());
        let cond = |e: &str| hook(json!({"matchConditions": [{"name": "c", "expression": e}]}));
        assert!(selects(&cond("object.metadata.name == 'p' && request.operation == 'CREATE'"), &req, Some(&pod), Some(&ns)).unwrap());
        assert!(!selects(&cond("request.userInfo.username == 'bob'"), &req, Some(&pod), Some(&ns)).unwrap());
        let err = selects(&cond("object.nope.deeper == 1"), &req, Some(&pod), Some(&ns)).expect_err("an evaluation error fails closed");
        assert_eq!(err.code, 403, "{}", err.message);
        let mut ignore = cond("object.nope.deeper == 1");
        ignore["failurePolicy"] = json!("Ignore");
        assert!(!selects(&ignore, &req, Some(&pod), Some(&ns)).unwrap(), "an evaluation error under Ignore skips the webhook");
    }

    #[test]
    fn answers_are_checked_as_upstream_checks_them() {
        use base64::Engine;
        let ok = |resp: Value| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp});
        let a = verify(&ok(json!({"uid": "u1", "allowed": true, "warnings": ["careful"]})), "v1", "u1", false).unwrap();
        assert!(a.allowed && a.warnings == ["careful"]);
        assert_eq!(verify(&ok(json!({"uid": "u2", "allowed": true})), "v1", "u1", false).unwrap_err(), "expected response.uid=\"u1\", got \"u2\"");
        assert_eq!(verify(&json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}), "v1", "u1", false).unwrap_err(), "webhook response was absent");
        let patch = base64::engine::general_purpose::STANDARD.encode(br#"[{"op":"add","path":"/metadata/labels/x","value":"y"}]"#);
        assert_eq!(verify(&ok(json!({"uid": "u1", "allowed": true, "patch": patch})), "v1", "u1", false).unwrap_err(), "validating webhook may not return response.patch");
        assert_eq!(verify(&ok(json!({"uid": "u1", "allowed": true, "patch": patch})), "v1", "u1", true).unwrap_err(), "webhook returned response.patch but not response.patchType");
        let a = verify(&ok(json!({"uid": "u1", "allowed": true, "patch": patch, "patchType": "JSONPatch"})), "v1", "u1", true).unwrap();
        assert_eq!(a.patch.unwrap()[0]["path"], "/metadata/labels/x");
        // v1beta1: no uid or patchType checks; a patch is a JSON patch.
        let a = verify(&json!({"response": {"allowed": true, "patch": patch}}), "v1beta1", "u1", true).unwrap();
        assert!(a.patch.is_some());
    }

    #[test]
    fn denials_read_as_upstreams() {
        let e = denial(pods(), "p", "deny.example.com", &json!({"message": "no pods today"}));
        assert_eq!((e.code, e.reason, e.message.as_str()), (403, "Forbidden", "pods \"p\" is forbidden: admission webhook \"deny.example.com\" denied the request: no pods today"));
        let e = denial(pods(), "", "deny.example.com", &json!({"code": 422, "reason": "Invalid"}));
        assert_eq!((e.code, e.reason, e.message.as_str()), (422, "Invalid", "pods \"Unknown\" is forbidden: admission webhook \"deny.example.com\" denied the request: Invalid"));
        let e = denial(pods(), "p", "deny.example.com", &Value::Null);
        assert_eq!(e.message, "pods \"p\" is forbidden: admission webhook \"deny.example.com\" denied the request without explanation");
        let e = denial(pods(), "p", "deny.example.com", &json!({"code": 500, "message": "boom"}));
        assert_eq!((e.code, e.reason, e.message.as_str()), (500, "InternalError", "Internal error occurred: admission webhook \"deny.example.com\" denied the request: boom"));
    }

    #[test]
    fn a_service_resolves_to_a_ready_endpoint_of_its_port() {
        let ep = json!({"subsets": [
            {"addresses": [{"ip": "10.0.0.5"}], "notReadyAddresses": [{"ip": "10.0.0.6"}], "ports": [{"name": "https", "port": 8443}, {"name": "metrics", "port": 9090}]}
        ]});
        assert_eq!(pick_endpoint(&ep, "https"), Some("10.0.0.5:8443".parse().unwrap()));
        assert_eq!(pick_endpoint(&ep, "other"), None);
        assert_eq!(pick_endpoint(&Value::Null, ""), None);
    }

    /// A TLS server on loopback answering each POST with `{"n": <request number>}`; after
    /// `close_after` requests on one connection it closes it without saying so first. The
    /// number of connections it accepted, and the caBundle trusting it.
    async fn answering_server(close_after: usize) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicUsize>, String) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use base64::Engine;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().self_signed(&key).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (accepted, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let counted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, requests) = (acceptor.clone(), requests.clone());
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    // A plain HTTP/1.1 exchange by hand, so the close is abrupt (no
                    // `Connection: close`).
                    for _ in 0..close_after {
                        let mut got = Vec::new();
                        let mut buf = [0u8; 4096];
                        loop {
                            let Ok(n) = tls.read(&mut buf).await else { return };
                            if n == 0 {
                                return;
                            }
                            got.extend_from_slice(&buf[..n]);
                            let text = String::from_utf8_lossy(&got).to_string();
                            if let Some(end) = text.find("\r\n\r\n") {
                                let length = text[..end].lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))).unwrap_or(0);
                                if got.len() >= end + 4 + length {
                                    break;
                                }
                            }
                        }
                        let body = format!("{{\"n\":{}}}", requests.fetch_add(1, Ordering::SeqCst) + 1);
                        let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        if tls.write_all(answer.as_bytes()).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                    }
                    let _ = tls.shutdown().await;
                });
            }
        });
        (addr, accepted, base64::engine::general_purpose::STANDARD.encode(cert.pem()))
    }

    fn target(addr: std::net::SocketAddr) -> Target {
        Target { addr, server_name: "127.0.0.1".into(), authority: addr.to_string(), path: "/".into() }
    }

    #[tokio::test]
    async fn connections_are_kept_alive_and_one_the_webhook_closed_is_replaced() {
        use std::sync::atomic::Ordering;
        let (addr, accepted, ca) = answering_server(usize::MAX).await;
        let hook = json!({"clientConfig": {"caBundle": ca}});
        for n in 1..=5 {
            assert_eq!(post(&target(addr), &hook, "/", b"{}".to_vec()).await.unwrap(), json!({"n": n}));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "five calls one after another should share one connection");

        // A webhook that closes each connection after one answer: every call still succeeds,
        // on a new connection each (a kept one found closed, or failing as it is used, is
        // replaced).
        let (addr, accepted, ca) = answering_server(1).await;
        let hook = json!({"clientConfig": {"caBundle": ca}});
        for n in 1..=4 {
            assert_eq!(post(&target(addr), &hook, "/", b"{}".to_vec()).await.unwrap(), json!({"n": n}));
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);

        // Another trust is another connection: one verified with one caBundle is not reused
        // for a webhook that names another.
        let (addr, accepted, ca) = answering_server(usize::MAX).await;
        post(&target(addr), &json!({"clientConfig": {"caBundle": ca}}), "/", b"{}".to_vec()).await.unwrap();
        let (_, _, other_ca) = answering_server(usize::MAX).await;
        let err = post(&target(addr), &json!({"clientConfig": {"caBundle": other_ca}}), "/", b"{}".to_vec()).await.unwrap_err();
        assert!(err.contains("failed to verify certificate"), "{err}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}
