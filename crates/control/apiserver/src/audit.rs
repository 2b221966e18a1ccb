//! The audit log, as kube-apiserver writes it: a `Policy` (`audit.k8s.io/v1`, from
//! `--audit-policy-file`) decides per request a level (None, Metadata, Request,
//! RequestResponse) by its first matching rule (users, userGroups, verbs, resources with group,
//! resources and resourceNames, namespaces, nonResourceURLs) and the stages left out
//! (`omitStages`, the policy's and the rule's); each logged stage is one JSON line, an
//! `audit.k8s.io/v1` `Event`, appended to `--audit-log-path` (`-` is standard output), which is
//! rotated by size (`--audit-log-maxsize` MiB, `--audit-log-maxbackup` old files kept, 0 = all).
//!
//! Stages: `RequestReceived` before the request is handled, `ResponseStarted` when a watch's
//! response begins, `ResponseComplete` when a response has been produced (for a watch: when its
//! stream ends). `requestObject` is logged from level Request on, `responseObject` at
//! RequestResponse (never for watches).
//!
//! Without a policy file the default policy applies: Secrets, ConfigMaps and TokenReviews (and
//! TokenRequests) at Metadata only (their contents are never logged), reads at Metadata, other
//! writes at Request; `RequestReceived` omitted.
//!
//! The log holds who did what: it is created 0600 (backups keep that mode).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::User;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not an audit Policy: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Level {
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Stage {
    RequestReceived,
    ResponseStarted,
    ResponseComplete,
    Panic,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    level: Level,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
}

/// An audit policy.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<Stage>,
}

/// What a policy is asked about.
pub struct Attributes<'a> {
    pub user: &'a User,
    pub verb: &'a str,
    /// `None` for a non-resource request.
    pub resource: Option<ResourceAttributes<'a>>,
    pub path: &'a str,
}

pub struct ResourceAttributes<'a> {
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl Policy {
    /// The default policy (see the module header).
    pub fn default_policy() -> Policy {
        let yaml = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - {group: "", resources: [secrets, configmaps, serviceaccounts/token]}
  - {group: authentication.k8s.io, resources: [tokenreviews]}
- level: Metadata
  verbs: [get, list, watch]
- level: Request
"#;
        match serde_yaml_ng::from_str(yaml) {
            Ok(p) => p,
            // Unreachable: the text above is fixed; fall back to everything at Metadata.
            Err(_) => Policy { api_version: String::new(), kind: String::new(), rules: vec![], omit_stages: vec![] },
        }
    }

    pub fn load(path: &Path) -> Result<Policy, AuditError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuditError::Io { path: path.to_path_buf(), source })?;
        let p: Policy = serde_yaml_ng::from_str(&text).map_err(|source| AuditError::Parse { path: path.to_path_buf(), source })?;
        if p.kind != "Policy" || !matches!(p.api_version.as_str(), "audit.k8s.io/v1") {
            return Err(AuditError::Invalid { path: path.to_path_buf(), why: format!("expected apiVersion audit.k8s.io/v1 and kind Policy, got {:?} {:?}", p.api_version, p.kind) });
        }
        Ok(p)
    }

    /// The level and the omitted stages for a request (upstream's policy checker).
    pub fn evaluate(&self, a: &Attributes<'_>) -> (Level, Vec<Stage>) {
        for r in &self.rules {
            if rule_matches(r, a) {
                let mut omit = self.omit_stages.clone();
                omit.extend(r.omit_stages.iter().copied());
                return (r.level, omit);
            }
        }
        (Level::None, self.omit_stages.clone())
    }
}

fn rule_matches(r: &Rule, a: &Attributes<'_>) -> bool {
    if !r.users.is_empty() && !r.users.iter().any(|u| *u == a.user.name) {
        return false;
    }
    if !r.user_groups.is_empty() && !r.user_groups.iter().any(|g| a.user.groups.contains(g)) {
        return false;
    }
    if !r.verbs.is_empty() && !r.verbs.iter().any(|v| v == a.verb) {
        return false;
    }
    match &a.resource {
        Some(res) => {
            if !r.non_resource_urls.is_empty() {
                return false;
            }
            if r.namespaces.is_empty() && r.resources.is_empty() {
                return true;
            }
            if !r.namespaces.is_empty() && !r.namespaces.iter().any(|n| n == res.namespace) {
                return false;
            }
            if r.resources.is_empty() {
                return true;
            }
            let combined = if res.subresource.is_empty() { res.resource.to_string() } else { format!("{}/{}", res.resource, res.subresource) };
            r.resources.iter().filter(|gr| gr.group == res.group).any(|gr| {
                if gr.resources.is_empty() {
                    return true;
                }
                if !gr.resource_names.is_empty() && !gr.resource_names.iter().any(|n| n == res.name) {
                    return false;
                }
                gr.resources.iter().any(|want| {
                    *want == combined
                        || want == "*"
                        || (!res.subresource.is_empty() && want.strip_prefix("*/") == Some(res.subresource))
                        || want.strip_suffix("/*") == Some(res.resource)
                })
            })
        }
        None => {
            if !r.resources.is_empty() || !r.namespaces.is_empty() {
                return false;
            }
            if r.non_resource_urls.is_empty() {
                return true;
            }
            r.non_resource_urls.iter().any(|u| match u.strip_suffix('*') {
                Some(prefix) => a.path.starts_with(prefix),
                None => u == a.path,
            })
        }
    }
}

/// Where events go: a file rotated by size, or standard output.
struct Sink {
    path: Option<PathBuf>,
    file: Option<std::fs::File>,
    size: u64,
    max_size: u64,
    max_backups: usize,
}

fn open_log(path: &Path) -> std::io::Result<(std::fs::File, u64)> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

impl Sink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            let mut out = std::io::stdout().lock();
            return out.write_all(line);
        };
        if self.max_size > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate(&path)?;
        }
        if self.file.is_none() {
            let (f, size) = open_log(&path)?;
            self.file = Some(f);
            self.size = size;
        }
        if let Some(f) = self.file.as_mut() {
            f.write_all(line)?;
            self.size += line.len() as u64;
        }
        Ok(())
    }

    /// Move the log aside as `<name>-<UTC time>.<ext>` (as kube-apiserver's lumberjack names
    /// backups) and drop the oldest backups beyond `max_backups`.
    fn rotate(&mut self, path: &Path) -> std::io::Result<()> {
        self.file = None;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%S%.3f");
        let backup = path.with_file_name(format!("{stem}-{stamp}{ext}"));
        std::fs::rename(path, &backup)?;
        self.size = 0;
        if self.max_backups > 0 {
            let dir = path.parent().unwrap_or(Path::new("."));
            let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                    name.starts_with(&format!("{stem}-")) && name.ends_with(&ext) && *p != *path
                })
                .collect();
            backups.sort();
            let excess = backups.len().saturating_sub(self.max_backups);
            for old in &backups[..excess] {
                std::fs::remove_file(old)?;
            }
        }
        Ok(())
    }
}

/// The audit backend of a server.
pub struct Auditor {
    policy: Policy,
    sink: Mutex<Sink>,
}

/// How `strata server` was asked to audit.
#[derive(Clone, Debug, Default)]
pub struct AuditConfig {
    /// `-` for standard output.
    pub log_path: PathBuf,
    /// `None`: the default policy.
    pub policy_file: Option<PathBuf>,
    /// MiB; 0 never rotates.
    pub max_size_mb: u64,
    /// Old files kept; 0 keeps all.
    pub max_backups: usize,
}

impl Auditor {
    pub fn new(cfg: &AuditConfig) -> Result<Arc<Auditor>, AuditError> {
        let policy = match &cfg.policy_file {
            Some(p) => Policy::load(p)?,
            None => Policy::default_policy(),
        };
        let path = (cfg.log_path.as_os_str() != "-").then(|| cfg.log_path.clone());
        let mut sink = Sink { path: path.clone(), file: None, size: 0, max_size: cfg.max_size_mb * 1024 * 1024, max_backups: cfg.max_backups };
        if let Some(p) = &path {
            let (f, size) = open_log(p).map_err(|source| AuditError::Io { path: p.clone(), source })?;
            crate::files::tighten(p, 0o600).map_err(|e| AuditError::Io { path: p.clone(), source: e.source })?;
            sink.file = Some(f);
            sink.size = size;
        }
        Ok(Arc::new(Auditor { policy, sink: Mutex::new(sink) }))
    }

    fn emit(&self, event: &Value) {
        let mut line = event.to_string().into_bytes();
        line.push(b'\n');
        let result = match self.sink.lock() {
            Ok(mut s) => s.write(&line),
            Err(_) => Err(std::io::Error::other("audit log lock poisoned")),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "writing the audit log");
        }
    }

    /// Start auditing one authenticated request whose body has been read: decides the level,
    /// logs `RequestReceived`, and returns what [`Pending::finish`] completes (`None` at level
    /// None).
    pub fn begin(self: &Arc<Self>, user: &User, parts: &Parts, peer: SocketAddr, body: &Bytes) -> Option<Pending> {
        let path = parts.uri.path();
        let (verb, info) = crate::api::classify(&parts.method, path, parts.uri.query());
        // The request's object (JSON or kubectl's protobuf), for a create's name and for level
        // Request and above.
        let object = || -> Option<Value> {
            if body.is_empty() {
                return None;
            }
            let ct = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            if ct.starts_with(crate::protobuf::CONTENT_TYPE) {
                crate::protobuf::decode(body).ok()
            } else {
                serde_json::from_slice(body).ok()
            }
        };
        let mut decoded: Option<Option<Value>> = None;
        let mut name = info.as_ref().and_then(|i| i.name.clone()).unwrap_or_default();
        if name.is_empty() && verb == "create" && info.is_some() {
            let o = object();
            name = o.as_ref().and_then(|o| o["metadata"]["name"].as_str()).unwrap_or("").to_string();
            decoded = Some(o);
        }
        let attrs = Attributes {
            user,
            verb: &verb,
            resource: info.as_ref().map(|i| ResourceAttributes {
                group: i.resource.group,
                resource: i.resource.plural,
                subresource: i.subresource.as_deref().unwrap_or(""),
                namespace: i.namespace.as_deref().unwrap_or(""),
                name: &name,
            }),
            path,
        };
        let (level, omit) = self.policy.evaluate(&attrs);
        if level == Level::None {
            return None;
        }
        let mut event = json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": format!("{level:?}"),
            "auditID": crate::object::uuid(),
            "requestURI": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or(path),
            "verb": verb,
            "user": user.info(),
            "sourceIPs": [peer.ip().to_string()],
            "requestReceivedTimestamp": timestamp(),
        });
        if let Some(imp) = impersonated_user(&parts.headers) {
            event["impersonatedUser"] = imp;
        }
        if let Some(ua) = parts.headers.get("user-agent").and_then(|v| v.to_str().ok()) {
            event["userAgent"] = json!(ua);
        }
        if let Some(i) = &info {
            let mut r = json!({ "resource": i.resource.plural, "apiVersion": i.resource.version });
            if !i.resource.group.is_empty() {
                r["apiGroup"] = json!(i.resource.group);
            }
            if let Some(ns) = &i.namespace {
                r["namespace"] = json!(ns);
            }
            if !name.is_empty() {
                r["name"] = json!(name);
            }
            if let Some(sub) = &i.subresource {
                r["subresource"] = json!(sub);
            }
            event["objectRef"] = r;
        }
        if level >= Level::Request {
            if let Some(o) = decoded.unwrap_or_else(object) {
                event["requestObject"] = o;
            }
        }
        let pending = Pending { auditor: self.clone(), event, level, omit, watch: verb == "watch" };
        pending.log(Stage::RequestReceived, None);
        Some(pending)
    }
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Whom a request asks to act as (the `Impersonate-*` headers), as the event's
/// `impersonatedUser`; `user` stays the authenticated requester. Whether the impersonation was
/// allowed shows in the response status.
fn impersonated_user(headers: &axum::http::HeaderMap) -> Option<Value> {
    let values = |name: &str| -> Vec<String> { headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect() };
    let name = headers.get("impersonate-user").and_then(|v| v.to_str().ok())?;
    let mut v = json!({ "username": name });
    let groups = values("impersonate-group");
    if !groups.is_empty() {
        v["groups"] = json!(groups);
    }
    if let Some(uid) = headers.get("impersonate-uid").and_then(|v| v.to_str().ok()) {
        v["uid"] = json!(uid);
    }
    Some(v)
}

/// An audited request in progress.
pub struct Pending {
    auditor: Arc<Auditor>,
    event: Value,
    level: Level,
    omit: Vec<Stage>,
    watch: bool,
}

impl Pending {
    fn log(&self, stage: Stage, extra: Option<&dyn Fn(&mut Value)>) {
        if self.omit.contains(&stage) {
            return;
        }
        let mut e = self.event.clone();
        e["stage"] = json!(stage.name());
        e["stageTimestamp"] = json!(timestamp());
        if let Some(f) = extra {
            f(&mut e);
        }
        self.auditor.emit(&e);
    }

    /// Log the response: `ResponseComplete` (with the response object at RequestResponse); for
    /// a watch `ResponseStarted` now and `ResponseComplete` when its stream ends. Returns the
    /// response to send, with its `Audit-Id` header.
    pub async fn finish(mut self, resp: Response<Body>) -> Response<Body> {
        let (mut parts, body) = resp.into_parts();
        if let Ok(id) = axum::http::HeaderValue::from_str(self.event["auditID"].as_str().unwrap_or("")) {
            parts.headers.insert("audit-id", id);
        }
        let code = parts.status.as_u16();
        let status_of = |body: Option<&Value>| -> Value {
            let mut s = json!({ "metadata": {}, "code": code });
            if let Some(b) = body.filter(|b| b["kind"] == "Status") {
                for k in ["status", "message", "reason"] {
                    if !b[k].is_null() {
                        s[k] = b[k].clone();
                    }
                }
            }
            s
        };
        if self.watch && code < 300 {
            self.event["responseStatus"] = status_of(None);
            self.log(Stage::ResponseStarted, None);
            let guard = CompleteOnDrop(Some(self));
            use futures_util::StreamExt;
            let stream = body.into_data_stream().map(move |chunk| {
                let _ = &guard;
                chunk
            });
            return Response::from_parts(parts, Body::from_stream(stream));
        }
        // Error bodies and (bounded, already built) responses are in memory: read them whole.
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
        let object: Option<Value> = serde_json::from_slice(&bytes).ok();
        let status = status_of(object.as_ref());
        let level = self.level;
        let set = move |e: &mut Value| {
            e["responseStatus"] = status.clone();
            if level >= Level::RequestResponse {
                if let Some(o) = &object {
                    e["responseObject"] = o.clone();
                }
            }
        };
        self.log(Stage::ResponseComplete, Some(&set));
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// Logs a watch's `ResponseComplete` when its stream is dropped (ended or disconnected).
struct CompleteOnDrop(Option<Pending>);

impl Drop for CompleteOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.log(Stage::ResponseComplete, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        serde_yaml_ng::from_str(yaml).expect("policy")
    }

    fn check(p: &Policy, user: &User, verb: &str, res: Option<(&str, &str, &str, &str, &str)>, path: &str) -> Level {
        let resource = res.map(|(group, resource, subresource, namespace, name)| ResourceAttributes { group, resource, subresource, namespace, name });
        p.evaluate(&Attributes { user, verb, resource, path }).0
    }

    #[test]
    fn first_matching_rule_decides() {
        let p = policy(
            r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: [system:kube-proxy]
- level: RequestResponse
  resources: [{group: "", resources: ["pods/log", "*/status"]}]
- level: Request
  resources: [{group: apps, resources: [deployments], resourceNames: [web]}]
  namespaces: [prod]
- level: Metadata
  nonResourceURLs: ["/healthz*", /version]
- level: Metadata
  userGroups: [devs]
  omitStages: [ResponseStarted]
"#,
        );
        let admin = User::new("admin", &["system:masters"]);
        let dev = User::new("ann", &["devs"]);
        let proxy = User::new("system:kube-proxy", &[]);
        assert_eq!(check(&p, &proxy, "get", Some(("", "pods", "", "default", "x")), ""), Level::None);
        assert_eq!(check(&p, &admin, "get", Some(("", "pods", "log", "default", "x")), ""), Level::RequestResponse);
        assert_eq!(check(&p, &admin, "update", Some(("apps", "deployments", "status", "prod", "web")), ""), Level::None);
        assert_eq!(check(&p, &admin, "update", Some(("", "pods", "status", "prod", "web")), ""), Level::RequestResponse);
        assert_eq!(check(&p, &admin, "update", Some(("apps", "deployments", "", "prod", "web")), ""), Level::Request);
        assert_eq!(check(&p, &admin, "update", Some(("apps", "deployments", "", "prod", "api")), ""), Level::None);
        assert_eq!(check(&p, &admin, "update", Some(("apps", "deployments", "", "dev", "web")), ""), Level::None);
        assert_eq!(check(&p, &admin, "get", None, "/healthz/ready"), Level::Metadata);
        assert_eq!(check(&p, &admin, "get", None, "/version"), Level::Metadata);
        assert_eq!(check(&p, &admin, "get", None, "/metrics"), Level::None);
        let (level, omit) = p.evaluate(&Attributes { user: &dev, verb: "list", resource: Some(ResourceAttributes { group: "", resource: "secrets", subresource: "", namespace: "d", name: "" }), path: "" });
        assert_eq!((level, omit), (Level::Metadata, vec![Stage::RequestReceived, Stage::ResponseStarted]));
    }

    #[test]
    fn the_default_policy_keeps_secrets_at_metadata() {
        let p = Policy::default_policy();
        let u = User::new("admin", &["system:masters"]);
        for r in ["secrets", "configmaps"] {
            assert_eq!(check(&p, &u, "create", Some(("", r, "", "default", "x")), ""), Level::Metadata);
        }
        assert_eq!(check(&p, &u, "create", Some(("authentication.k8s.io", "tokenreviews", "", "", "")), ""), Level::Metadata);
        assert_eq!(check(&p, &u, "create", Some(("", "serviceaccounts", "token", "default", "sa")), ""), Level::Metadata);
        assert_eq!(check(&p, &u, "create", Some(("apps", "deployments", "", "default", "x")), ""), Level::Request);
        assert_eq!(check(&p, &u, "list", Some(("apps", "deployments", "", "default", "")), ""), Level::Metadata);
    }

    #[test]
    fn the_log_rotates_by_size_and_keeps_max_backups() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.log");
        let mut sink = Sink { path: Some(path.clone()), file: None, size: 0, max_size: 100, max_backups: 2 };
        for _ in 0..10 {
            sink.write(&[b'x'; 60]).expect("write");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let files: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(files.len(), 3, "{files:?}");
        use std::os::unix::fs::PermissionsExt;
        for f in files {
            assert_eq!(std::fs::metadata(dir.path().join(&f)).expect("meta").permissions().mode() & 0o777, 0o600, "{f}");
        }
    }
}
