//! Request handling: parse a request into a [`RequestInfo`] (resource, namespace, name,
//! subresource, verb), authorize it, and carry it out against the store with Kubernetes REST
//! semantics (resourceVersion, optimistic concurrency, finalizers, namespaces, watch, lists
//! with selectors and pagination, Table output, dryRun).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use strata_store::Store;

use crate::auth::User;
use crate::rbac::{self, Attributes, Authorizer};
use crate::fields::FieldValidation;
use crate::object::{self, name_of, with_rv};
use crate::resources::{self, Resource};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{self, ApiError, Cause};
use crate::output::{self, Transform};
use crate::{discovery, managed, patch, rv, table};


/// Most keys read from the store at once.
const STORE_PAGE: usize = 1000;

/// Items of a list decoded between two yields to the runtime; longer lists are encoded on the
/// blocking pool.
const LIST_SLICE: usize = 64;

/// Largest request body accepted (Kubernetes' limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Shared state of the API.
pub struct Api {
    pub store: Arc<dyn Store>,
    pub authz: Authorizer,
    pub authn: crate::auth::Authenticator,
    /// Every watch is served from it.
    pub cache: Arc<crate::watchcache::WatchCache>,
    /// Slots for long-running requests (watches); none free is 429.
    pub long_running: Arc<tokio::sync::Semaphore>,
    /// TLS to node agents (pod logs, exec, attach, port-forward); `None`: those answer 503.
    pub kubelet: Option<crate::proxy::KubeletClient>,
    /// The tolerations of not-ready and unreachable nodes every pod gets (DefaultTolerationSeconds).
    pub default_tolerations: crate::tolerations::Defaults,
    /// The ServiceAccount admission plugin is on (upstream's default; `--disable-admission-plugins`).
    pub service_account_admission: bool,
    /// The managedFields of recent creates, for objects created alike.
    pub created_fields: managed::CreatedFields,
    /// What the readiness checks wait for ([`crate::health`]).
    pub started: Arc<crate::health::Started>,
}

/// What a request knows of its connection.
#[derive(Clone, Default)]
pub struct Conn {
    /// Closes the connection (a watcher that fell behind is not read from any more).
    pub close: Option<Arc<tokio::sync::Notify>>,
    /// This request's protocol switch (exec, attach and port-forward upgrade the connection).
    pub upgrade: Option<Arc<std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>>>,
}

/// What a resource request addresses.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl RequestInfo {
    /// The attributes RBAC decides on. As upstream, a request on a namespace object is
    /// "in" that namespace (so a RoleBinding there can grant reading it).
    pub fn attributes(&self, verb: &str) -> Attributes {
        let name = self.name.as_deref().unwrap_or("");
        let ns = match (&self.namespace, self.resource.kind) {
            (Some(ns), _) if self.resource.namespaced => ns.as_str(),
            (_, "Namespace") => name,
            _ => "",
        };
        Attributes::resource(verb, self.resource.group, self.resource.plural, self.subresource.as_deref().unwrap_or(""), ns, name)
    }
}

/// Is `path` outside the resource tree (`/version`, `/healthz`, `/api`, `/apis/g/v`,
/// `/openapi/...`, `/metrics`, ...)? Those are authorized by nonResourceURLs, and may be asked
/// for anonymously.
pub fn is_non_resource(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    matches!(parse_path(path), Ok(None))
}

type Query = HashMap<String, String>;

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], object::to_json(v)).into_response()
}

fn parse_query(q: Option<&str>) -> Query {
    query_pairs(q).into_iter().collect()
}

/// The query's `key=value` pairs in order, repeated keys kept (`command=sh&command=-c`).
fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let mut m = Vec::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            let s = s.replace('+', " ");
            let mut out = Vec::new();
            let b = s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            String::from_utf8_lossy(&out).into_owned()
        };
        m.push((dec(k), dec(v)));
    }
    m
}

/// `%XX` escapes decoded (impersonated extra keys are percent-encoded in header names).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(x) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn truthy(q: &Query, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("true" | "1"))
}

/// Go's `unicode.IsPrint`, closely enough: no control characters, no spaces but ' '.
fn printable(c: char) -> bool {
    c == ' ' || !(c.is_control() || c.is_whitespace())
}

/// Longest field manager name (`FieldManagerMaxLength`).
const FIELD_MANAGER_MAX: usize = 128;

/// Who a write is recorded for in managedFields: the `fieldManager` parameter, validated as
/// `ValidateFieldManager` does (an `Invalid` error of the request's `options` kind), else the
/// User-Agent up to its first '/' (upstream's `managerOrUserAgent`: `kubectl scale` sends no
/// fieldManager, so its change is recorded for "kubectl").
fn field_manager(q: &Query, headers: &HeaderMap, options: &'static str) -> Result<String, ApiError> {
    let given = q.get("fieldManager").map(String::as_str).unwrap_or("");
    let invalid = |reason, message: String| ApiError::invalid_kind("meta.k8s.io", options, "", vec![Cause { reason, field: "fieldManager".into(), message }]);
    if given.len() > FIELD_MANAGER_MAX {
        return Err(invalid("FieldValueTooLong", format!("Too long: may not be more than {FIELD_MANAGER_MAX} bytes")));
    }
    if let Some((i, c)) = given.char_indices().find(|(_, c)| !printable(*c)) {
        return Err(invalid("FieldValueInvalid", format!("Invalid value: {}: invalid character U+{:04X} (at position {i})", json!(given), c as u32)));
    }
    if !given.is_empty() {
        return Ok(given.to_string());
    }
    let agent = headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut out = String::new();
    for c in agent.split('/').next().unwrap_or("").chars().filter(|c| printable(*c)) {
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX {
            break;
        }
        out.push(c);
    }
    Ok(out)
}

/// Parse `/api/v1/...` and `/apis/<g>/<v>/...` resource paths.
pub fn parse_path(path: &str) -> Result<Option<RequestInfo>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Ok(None),
    };
    if rest.is_empty() {
        return Ok(None);
    }
    let not_found = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let lookup = |plural: &str| resources::find(group, version, plural).ok_or_else(not_found);
    let info = |r, ns: Option<&str>, name: Option<&str>, sub: Option<&str>| RequestInfo {
        resource: r,
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    };
    Ok(Some(match rest {
        ["namespaces", ns, plural, tail @ ..] if resources::find(group, version, plural).is_some_and(|r| r.namespaced) => {
            let r = lookup(plural)?;
            match tail {
                [] => info(r, Some(ns), None, None),
                [name] => info(r, Some(ns), Some(name), None),
                [name, sub] => info(r, Some(ns), Some(name), Some(sub)),
                // A proxy subresource carries the path to proxy after it.
                [name, "proxy", ..] => info(r, Some(ns), Some(name), Some("proxy")),
                _ => return Err(not_found()),
            }
        }
        [plural] => info(lookup(plural)?, None, None, None),
        [plural, name] => info(lookup(plural)?, None, Some(name), None),
        [plural, name, sub] => info(lookup(plural)?, None, Some(name), Some(sub)),
        [plural, name, "proxy", ..] => info(lookup(plural)?, None, Some(name), Some("proxy")),
        _ => return Err(not_found()),
    }))
}

/// A request to proxy (`pods/proxy`, `services/proxy`) as it came.
struct Proxied<'a> {
    method: &'a Method,
    raw_path: &'a str,
    query: Option<&'a str>,
    headers: &'a HeaderMap,
    body: Bytes,
}

fn verb_of(method: &Method, info: &RequestInfo, q: &Query) -> Result<&'static str, ApiError> {
    Ok(match (method.as_str(), info.name.is_some()) {
        ("GET", true) => "get",
        ("GET", false) if truthy(q, "watch") => "watch",
        ("GET", false) => "list",
        ("POST", false) => "create",
        ("POST", true) if info.subresource.is_some() => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        // A proxied request goes with whatever method it has (upstream's verbs for them).
        ("HEAD", true) if info.subresource.as_deref() == Some("proxy") => "get",
        ("OPTIONS", true) if info.subresource.as_deref() == Some("proxy") => "options",
        (m, _) => return Err(ApiError::method_not_allowed(format!("the server does not allow this method ({m}) on the requested resource"))),
    })
}

/// What a request is, as audit and metrics name it: its Kubernetes verb (`get`, `list`,
/// `watch`, `create`, ...; for a non-resource path or a method the resource does not take, the
/// method in lower case) and, for a resource path, what it addresses.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (String, Option<RequestInfo>) {
    match parse_path(path.trim_end_matches('/')) {
        Ok(Some(info)) => {
            let verb = verb_of(method, &info, &parse_query(query)).map(str::to_string).unwrap_or_else(|_| method.as_str().to_ascii_lowercase());
            (verb, Some(info))
        }
        _ => (method.as_str().to_ascii_lowercase(), None),
    }
}

impl Api {
    /// Handle one authenticated request.
    #[allow(clippy::too_many_arguments)]
    pub async fn handle(self: &Arc<Self>, user: &User, method: Method, path: &str, query: Option<&str>, headers: &HeaderMap, body: Bytes, conn: &Conn) -> Response {
        let resp = match self.route(user, method, path, query, headers, body, conn).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
        if wants_yaml(accept) {
            return as_yaml(resp).await;
        }
        resp
    }

    #[allow(clippy::too_many_arguments)]
    async fn route(self: &Arc<Self>, user: &User, method: Method, path: &str, query: Option<&str>, headers: &HeaderMap, body: Bytes, conn: &Conn) -> Result<Response, ApiError> {
        let impersonated = self.impersonate(user, headers).await?;
        let user = impersonated.as_ref().unwrap_or(user);
        let accept = headers.get("accept").and_then(|v| v.to_str().ok()).unwrap_or("");
        let q = parse_query(query);
        let raw_path = path;
        let path = path.trim_end_matches('/');
        if let Some((review, ns)) = crate::reviews::parse(path) {
            let a = Attributes::resource("create", review.group(), review.plural(), "", ns.as_deref().unwrap_or(""), "");
            if method != Method::POST {
                self.authorize(user, &Attributes { verb: method.as_str().to_ascii_lowercase(), ..a }).await?;
                return Err(ApiError::method_not_allowed(format!("the server does not allow this method ({method}) on the requested resource")));
            }
            self.authorize(user, &a).await?;
            // A review has no metadata and no Table form: upstream's output negotiation
            // refuses a transform it cannot make before the request is carried out.
            output::negotiate_untransformed(accept)?;
            return self.review(user, review, ns.as_deref(), parse_body(headers, &body)?).await;
        }
        if let Some(name) = component_status_path(path) {
            return self.component_statuses(user, &method, name, &q, accept).await;
        }
        if is_non_resource(path) {
            // Non-resource paths are authorized by RBAC nonResourceURLs, with the HTTP method
            // (lower case) as the verb, as upstream.
            let verb = method.as_str().to_ascii_lowercase();
            let path_attr = if raw_path.is_empty() { "/" } else { raw_path };
            self.authorize(user, &Attributes::non_resource(&verb, path_attr)).await?;
        }
        if method == Method::GET {
            if let Some(r) = self.non_resource(path, query, accept, headers).await {
                return Ok(r);
            }
        }
        let Some(info) = parse_path(path)? else {
            return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
        };
        let verb = verb_of(&method, &info, &q)?;
        let mut attrs = info.attributes(verb);
        attrs.field_selector = q.get("fieldSelector").cloned().unwrap_or_default();
        self.authorize(user, &attrs).await?;
        // A WebSocket upgrade is a GET, but it starts a process (or a connection) in the pod as
        // the SPDY POST does: it needs `create` too (upstream's
        // AuthorizePodWebsocketUpgradeCreatePermission).
        if verb == "get" && info.resource.kind == "Pod" && matches!(info.subresource.as_deref(), Some("exec" | "attach" | "portforward")) {
            self.authorize(user, &info.attributes("create")).await?;
        }
        self.node_restriction(user, &info, verb, headers, &body).await?;
        if let Some(sub) = &info.subresource {
            if !info.resource.subresources.contains(&sub.as_str()) {
                return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
            }
            if sub == "finalize" && verb != "update" {
                // Upstream's finalize REST storage implements update only: its route has PUT
                // alone, and go-restful answers other methods with 405.
                return Err(ApiError::method_not_allowed("the server does not allow this method on the requested resource"));
            }
        }
        let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
        let options = match verb {
            "create" => Some("CreateOptions"),
            "update" => Some("UpdateOptions"),
            "patch" => Some("PatchOptions"),
            _ => None,
        };
        let manager = match options {
            Some(kind) => field_manager(&q, headers, kind)?,
            None => String::new(),
        };
        // What an object or list answered is turned into (`as=Table`, `as=PartialObjectMetadata`),
        // settled before the request is carried out, as upstream negotiates first. Streams
        // (logs, exec, proxies) are not objects and negotiate nothing.
        let transform = output::negotiate(accept);
        if info.subresource.as_deref() == Some("scale") {
            let transform = transform?;
            let resp = self.scale(user, &info, verb, headers, &body, dry_run, &manager).await?;
            return transformed(resp, info.resource, transform).await;
        }
        if info.subresource.as_deref() == Some("token") {
            if verb != "create" {
                return Err(ApiError::method_not_allowed(format!("the server does not allow this method ({method}) on the requested resource")));
            }
            let transform = transform?;
            let resp = self.token_request(&info, parse_body(headers, &body)?).await?;
            return transformed(resp, info.resource, transform).await;
        }
        if matches!(info.subresource.as_deref(), Some("log" | "exec" | "attach" | "portforward" | "console")) {
            if info.resource.builtin() == "Pod" && matches!(info.subresource.as_deref(), Some("exec" | "attach" | "portforward")) {
                self.admit_connect(user, &info, query).await?;
            }
            return self.node_subresource(&info, &method, query, headers, conn).await;
        }
        if info.subresource.as_deref() == Some("proxy") {
            let proxied = Proxied { method: &method, raw_path, query, headers, body };
            if info.resource.builtin() == "Service" {
                return self.service_proxy(&info, proxied).await;
            }
            return self.pod_proxy(&info, proxied).await;
        }
        let fv = crate::fields::FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
        if info.resource.custom && verb == "create" {
            if let Some(d) = crate::crd::definition(info.resource).filter(|d| d.terminating) {
                let _ = d;
                return Err(ApiError::method_not_allowed("create not allowed while custom resource definition is terminating"));
            }
        }
        let transform = transform?;
        let result = match self.verb(user, &info, verb, &q, headers, &body, dry_run, fv, &manager, transform, conn).await {
            // get, list and watch shape what they serve themselves.
            Ok(resp) if !matches!(verb, "get" | "list" | "watch") => transformed(resp, info.resource, transform).await,
            other => other,
        };
        if info.resource.builtin() == "CustomResourceDefinition" && !matches!(verb, "get" | "list" | "watch") && !dry_run {
            // This server's next request already sees the change (others' follow the watch).
            crate::crd::refresh(self.store.as_ref()).await;
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn verb(
        self: &Arc<Self>,
        user: &User,
        info: &RequestInfo,
        verb: &str,
        q: &Query,
        headers: &HeaderMap,
        body: &Bytes,
        dry_run: bool,
        fv: FieldValidation,
        manager: &str,
        transform: Transform,
        conn: &Conn,
    ) -> Result<Response, ApiError> {
        let info = info.clone();
        let q = q.clone();
        let manager = manager.to_string();
        match verb {
            "get" => self.get(&info, &q, transform).await,
            "list" => self.list(&info, &q, transform).await,
            "watch" => self.watch(&info, &q, transform, conn).await,
            "create" if info.subresource.as_deref() == Some("eviction") => {
                let mut obj = parse_body(headers, &body)?;
                let warnings = self.admit_other_object(user, &info, &mut obj, None, dry_run, &manager).await?;
                Ok(with_warnings(self.evict(&info, obj, dry_run).await?, &warnings))
            }
            "create" if info.subresource.as_deref() == Some("binding") => {
                let mut obj = parse_body(headers, &body)?;
                let warnings = self.admit_other_object(user, &info, &mut obj, None, dry_run, &manager).await?;
                Ok(with_warnings(self.bind(&info, obj, dry_run).await?, &warnings))
            }
            "create" => {
                let obj = parse_body(headers, &body)?;
                self.create(user, &info, obj, dry_run, (fv, &body_duplicates(headers, &body, fv)), &manager).await
            }
            "update" => {
                let obj = parse_body(headers, &body)?;
                self.update(user, &info, obj, dry_run, (fv, &body_duplicates(headers, &body, fv)), &manager).await
            }
            "patch" => self.patch(user, &info, &q, headers, body, dry_run, &manager).await,
            "delete" => {
                let mut opts = if body.is_empty() { json!({}) } else { parse_body(headers, body)? };
                // DeleteOptions may come as query parameters too.
                for k in ["propagationPolicy", "orphanDependents", "gracePeriodSeconds"] {
                    if opts.get(k).is_none_or(Value::is_null) {
                        if let Some(v) = q.get(k) {
                            opts[k] = match k {
                                "orphanDependents" => json!(v == "true"),
                                "gracePeriodSeconds" => json!(v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("gracePeriodSeconds: invalid value {v:?}")))?),
                                _ => json!(v),
                            };
                        }
                    }
                }
                let warnings = self.admit_delete(user, &info, &opts, dry_run).await?;
                Ok(with_warnings(self.delete(&info, &opts, dry_run).await?, &warnings))
            }
            "deletecollection" => self.delete_collection(user, &info, &q, dry_run).await,
            _ => Err(ApiError::method_not_allowed("unsupported verb")),
        }
    }

    /// Escalation prevention on writes of RBAC objects (upstream's policy-based role and
    /// binding storage). A Role or ClusterRole may be written only by someone who holds every
    /// permission it grants (in its namespace) or may `escalate` it; an `aggregationRule` needs
    /// full authority. A binding may be written only by someone who holds the referenced
    /// role's permissions in the binding's scope or may `bind` that role. `system:masters` is
    /// exempt; so are changes of nothing but garbage-collection fields.
    async fn check_rbac_write(&self, user: &User, info: &RequestInfo, new: &Value, old: Option<&Value>) -> Result<(), ApiError> {
        let r = info.resource;
        if r.group != rbac::GROUP || info.subresource.is_some() || user.groups.iter().any(|g| g == rbac::MASTERS) {
            return Ok(());
        }
        if old.is_some_and(|old| only_gc_fields_differ(old, new)) {
            return Ok(());
        }
        let ns = if r.namespaced { new["metadata"]["namespace"].as_str().or(info.namespace.as_deref()).unwrap_or("") } else { "" };
        let name = name_of(new);
        let store = self.store.as_ref();
        match r.kind {
            "Role" | "ClusterRole" => {
                let escalate = Attributes::resource("escalate", r.group, r.plural, "", ns, name);
                if self.authz.allowed(store, user, &escalate).await? {
                    return Ok(());
                }
                let held = self.authz.rules_for(store, user, ns).await?;
                let missing = rbac::covers(&held, &rbac::rules_of(new));
                if !missing.is_empty() {
                    return Err(ApiError::forbidden(r, name, &rbac::escalation_message(user, &missing)));
                }
                let aggregated = |v: &Value| !v["aggregationRule"].is_null();
                if r.kind == "ClusterRole" && (aggregated(new) || old.is_some_and(aggregated)) && !rbac::covers(&held, &rbac::full_authority()).is_empty() {
                    return Err(ApiError::forbidden(r, name, "must have cluster-admin privileges to use the aggregationRule"));
                }
                Ok(())
            }
            _ => {
                let role_ref = &new["roleRef"];
                let plural = match role_ref["kind"].as_str() {
                    Some("ClusterRole") => "clusterroles",
                    Some("Role") => "roles",
                    _ => return Ok(()), // validation (`validate::role_ref`) refuses it
                };
                let role_name = role_ref["name"].as_str().unwrap_or("");
                let group = role_ref["apiGroup"].as_str().unwrap_or(rbac::GROUP);
                if self.authz.allowed(store, user, &Attributes::resource("bind", group, plural, "", ns, role_name)).await? {
                    return Ok(());
                }
                let Some(rules) = self.authz.role_ref_rules(store, role_ref, ns).await? else {
                    let rr = resources::find(rbac::GROUP, "v1", plural).ok_or_else(|| ApiError::internal("rbac kinds missing"))?;
                    return Err(ApiError::not_found(rr, role_name));
                };
                let held = self.authz.rules_for(store, user, ns).await?;
                let missing = rbac::covers(&held, &rules);
                if missing.is_empty() {
                    return Ok(());
                }
                Err(ApiError::forbidden(r, name, &rbac::escalation_message(user, &missing)))
            }
        }
    }

    /// User impersonation (`Impersonate-User`, `-Group`, `-Uid`, `-Extra-<key>` headers, what
    /// `kubectl --as`/`--as-group` send), as upstream's filter: the caller must be allowed
    /// `impersonate` on each (users, groups and serviceaccounts in the core group; uids and
    /// userextras in authentication.k8s.io); the request then runs as that user.
    async fn impersonate(&self, user: &User, headers: &HeaderMap) -> Result<Option<User>, ApiError> {
        let values = |name: &str| -> Vec<String> { headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect() };
        let name = values("impersonate-user").into_iter().next();
        let groups = values("impersonate-group");
        let uid = values("impersonate-uid").into_iter().next();
        let mut extra: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
        for (k, v) in headers.iter() {
            if let (Some(key), Ok(v)) = (k.as_str().strip_prefix("impersonate-extra-"), v.to_str()) {
                let key = percent_decode(key);
                extra.entry(key).or_default().push(v.to_string());
            }
        }
        let Some(name) = name else {
            if !groups.is_empty() || uid.is_some() || !extra.is_empty() {
                return Err(ApiError::internal("requested impersonation of groups, uid or extra fields without impersonating a user"));
            }
            return Ok(None);
        };
        let check = |a: Attributes| async move {
            if self.authz.allowed(self.store.as_ref(), user, &a).await? {
                Ok(())
            } else {
                Err(ApiError::forbidden_by(user, &a))
            }
        };
        let mut out_groups = groups.clone();
        match name.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':')) {
            Some((ns, sa)) => {
                check(Attributes::resource("impersonate", "", "serviceaccounts", "", ns, sa)).await?;
                if groups.is_empty() {
                    out_groups = vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")];
                }
            }
            None => check(Attributes::resource("impersonate", "", "users", "", "", &name)).await?,
        }
        for g in &groups {
            check(Attributes::resource("impersonate", "", "groups", "", "", g)).await?;
        }
        if let Some(u) = &uid {
            check(Attributes::resource("impersonate", "authentication.k8s.io", "uids", "", "", u)).await?;
        }
        for (k, vs) in &extra {
            for v in vs {
                check(Attributes::resource("impersonate", "authentication.k8s.io", "userextras", k, "", v)).await?;
            }
        }
        let marker = if name == "system:anonymous" { "system:unauthenticated" } else { "system:authenticated" };
        if !out_groups.iter().any(|g| g == marker) {
            out_groups.push(marker.to_string());
        }
        Ok(Some(User { name, groups: out_groups, uid: uid.unwrap_or_default(), extra }))
    }

    /// Per-kind rules of an update (after [`object::prepare_update`]): a CertificateSigningRequest
    /// keeps its spec, and approving or signing one needs `approve` or `sign` on its signer
    /// (upstream's certificate approval and signing admission).
    async fn prepare_kind_update(&self, user: &User, info: &RequestInfo, new: &mut Value, old: &Value) -> Result<(), ApiError> {
        match info.resource.builtin() {
            "Pod" => {
                match info.subresource.as_deref() {
                    Some("ephemeralcontainers") => {
                        let causes = crate::ephemeral::prepare(new, old);
                        if !causes.is_empty() {
                            return Err(ApiError::invalid(info.resource, info.name.as_deref().unwrap_or(""), causes));
                        }
                    }
                    Some(_) => {}
                    None => crate::ephemeral::keep_on_update(new, old),
                }
                crate::priority::keep_pod_priority(new, old);
                if info.subresource.is_none() {
                    crate::tolerations::admit_pod(new, self.default_tolerations);
                }
            }
            "Namespace" if info.subresource.is_none() => {
                // spec.finalizers change only through `finalize` (upstream's namespace strategy).
                match old["spec"].get("finalizers") {
                    Some(f) => new["spec"]["finalizers"] = f.clone(),
                    None => {
                        if let Some(spec) = new["spec"].as_object_mut() {
                            spec.remove("finalizers");
                        }
                    }
                }
            }
            "PriorityClass" => {
                crate::priority::check_update(info.resource, new, old)?;
                crate::priority::admit_class(self.store.as_ref(), info.resource, new).await?;
            }
            "StorageClass" => crate::storage::check_update(info.resource, new, old)?,
            "Service" if info.subresource.is_none() => crate::clusterip::keep_on_update(new, old),
            _ => {}
        }
        if info.resource.builtin() != "CertificateSigningRequest" {
            return Ok(());
        }
        crate::csr::prepare_update(new, old, info.subresource.as_deref());
        let verb = match info.subresource.as_deref() {
            Some("approval") if new["status"]["conditions"] != old["status"]["conditions"] => "approve",
            Some("status") if new["status"]["certificate"] != old["status"]["certificate"] => "sign",
            _ => return Ok(()),
        };
        let signer = old["spec"]["signerName"].as_str().unwrap_or("");
        let domain = format!("{}/*", signer.split('/').next().unwrap_or(""));
        for name in [signer, domain.as_str()] {
            if self.authz.allowed(self.store.as_ref(), user, &Attributes::resource(verb, "certificates.k8s.io", "signers", "", "", name)).await? {
                return Ok(());
            }
        }
        let name = info.name.as_deref().unwrap_or("");
        Err(ApiError::forbidden(info.resource, name, &format!("user not permitted to {verb} requests with signerName {signer:?}")))
    }

    /// Admission of a new object beyond validation: a pod's ServiceAccount and token volume, its
    /// priority from its PriorityClass, a PriorityClass's global-default uniqueness (upstream's Priority admission plugin).
    /// Are there webhook configurations of `kind` (as the watch cache holds them now)? Keeps
    /// the requests of a cluster without webhooks from reading the configurations at all.
    fn has_webhooks(&self, kind: crate::admission_webhooks::Kind) -> bool {
        let prefix = kind.key_prefix();
        !prefix.is_empty() && self.cache.count(prefix) > 0
    }

    /// Admission after the built-in plugins, for a CREATE (`old` None) or UPDATE of `obj`:
    /// mutating webhooks (and then the kind's pruning, defaulting and validation again, when one
    /// changed the object; the server's own metadata fields are kept), then ValidatingAdmissionPolicies
    /// and validating webhooks on the result. Returns their warnings.
    #[allow(clippy::too_many_arguments)]
    async fn admit_external(&self, reads: &dyn Store, user: &User, info: &RequestInfo, obj: &mut Value, old: Option<&Value>, dry_run: bool, manager: &str) -> Result<Vec<String>, ApiError> {
        use crate::admission_webhooks::{self as webhooks, Call, Kind};
        let r = info.resource;
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        let options = webhooks::options(operation, dry_run, Some(manager), None);
        let mut warnings = Vec::new();
        if self.has_webhooks(Kind::Mutating) {
            let name = name_of(obj).to_string();
            let req = crate::vap::Request { resource: r, subresource: info.subresource.as_deref(), operation, namespace: info.namespace.as_deref(), name: &name, object: None, old, user, dry_run };
            let before = obj["metadata"].clone();
            let (changed, w) = webhooks::mutate(reads, &Call { request: &req, options: options.clone() }, obj).await?;
            warnings.extend(w);
            if changed {
                if obj["metadata"]["namespace"] != before["namespace"] {
                    return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
                }
                for f in ["uid", "creationTimestamp", "resourceVersion", "generation", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"] {
                    match (before.get(f), obj["metadata"].as_object_mut()) {
                        (Some(v), Some(m)) => {
                            m.insert(f.to_string(), v.clone());
                        }
                        (None, Some(m)) => {
                            m.remove(f);
                        }
                        _ => {}
                    }
                }
                // Decoded again as upstream decodes a patched object: fields the kind (or a
                // custom kind's schema) does not have are dropped, a mistyped one is an error.
                if let (_, Some(e)) = crate::fields::strip_unknown_checked(r, obj) {
                    return Err(ApiError::internal(e));
                }
                crate::validate::validate(r, obj)?;
                match old {
                    Some(old) => crate::validate::validate_update(r, obj, old)?,
                    None => crate::validate::validate_create(r, obj)?,
                }
            }
        }
        let name = name_of(obj).to_string();
        let req = crate::vap::Request { resource: r, subresource: info.subresource.as_deref(), operation, namespace: info.namespace.as_deref(), name: &name, object: Some(obj), old, user, dry_run };
        warnings.extend(crate::vap::admit(reads, &req).await?);
        if self.has_webhooks(Kind::Validating) {
            warnings.extend(webhooks::validate(reads, &Call { request: &req, options }).await?);
        }
        Ok(warnings)
    }

    /// Admission of a write through a subresource whose object is not the resource's own kind:
    /// the UPDATE of a Scale (`old` the current one), the CREATE of a Binding or an Eviction
    /// (`old` None). Mutating webhooks, then ValidatingAdmissionPolicies and validating
    /// webhooks, on `obj`. Policies are looked for only when the watch cache holds a binding of
    /// one (a pod's binding is the scheduler's hot path).
    #[allow(clippy::too_many_arguments)]
    async fn admit_other_object(&self, user: &User, info: &RequestInfo, obj: &mut Value, old: Option<&Value>, dry_run: bool, manager: &str) -> Result<Vec<String>, ApiError> {
        use crate::admission_webhooks::{self as webhooks, Call, Kind};
        let name = info.name.clone().unwrap_or_default();
        let operation = if old.is_some() { "UPDATE" } else { "CREATE" };
        let options = webhooks::options(operation, dry_run, Some(manager), None);
        let mut req = crate::vap::Request { resource: info.resource, subresource: info.subresource.as_deref(), operation, namespace: info.namespace.as_deref(), name: &name, object: None, old, user, dry_run };
        let mut warnings = Vec::new();
        if self.has_webhooks(Kind::Mutating) {
            warnings.extend(webhooks::mutate(self.store.as_ref(), &Call { request: &req, options: options.clone() }, obj).await?.1);
        }
        req.object = Some(obj);
        let policies = resources::find("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings").is_some_and(|b| self.cache.count(&b.key_prefix()) > 0);
        if policies {
            warnings.extend(crate::vap::admit(self.store.as_ref(), &req).await?);
        }
        if self.has_webhooks(Kind::Validating) {
            warnings.extend(webhooks::validate(self.store.as_ref(), &Call { request: &req, options }).await?);
        }
        Ok(warnings)
    }

    /// Admission webhooks on a DELETE (its `oldObject` the stored object): Ok(their warnings).
    async fn admit_delete(&self, user: &User, info: &RequestInfo, opts: &Value, dry_run: bool) -> Result<Vec<String>, ApiError> {
        use crate::admission_webhooks::{self as webhooks, Call, Kind};
        let (mutating, validating) = (self.has_webhooks(Kind::Mutating), self.has_webhooks(Kind::Validating));
        if !mutating && !validating {
            return Ok(Vec::new());
        }
        let (old, _) = self.load(info).await?;
        let name = info.name.clone().unwrap_or_default();
        let req = crate::vap::Request { resource: info.resource, subresource: info.subresource.as_deref(), operation: "DELETE", namespace: info.namespace.as_deref(), name: &name, object: None, old: Some(&old), user, dry_run };
        let call = Call { request: &req, options: webhooks::options("DELETE", dry_run, None, Some(opts)) };
        let mut warnings = Vec::new();
        if mutating {
            warnings.extend(webhooks::mutate_delete(self.store.as_ref(), &call).await?);
        }
        if validating {
            warnings.extend(webhooks::validate(self.store.as_ref(), &call).await?);
        }
        Ok(warnings)
    }

    /// Admission webhooks on a CONNECT (a pod's exec, attach or port-forward): the request's
    /// options object (PodExecOptions, PodAttachOptions, PodPortForwardOptions) read from its
    /// query, as upstream's connect handler builds it. A mutating webhook's patch of it has no
    /// effect on the stream.
    async fn admit_connect(&self, user: &User, info: &RequestInfo, query: Option<&str>) -> Result<(), ApiError> {
        use crate::admission_webhooks::{self as webhooks, Call, Kind};
        let (mutating, validating) = (self.has_webhooks(Kind::Mutating), self.has_webhooks(Kind::Validating));
        if !mutating && !validating {
            return Ok(());
        }
        let sub = info.subresource.as_deref().unwrap_or("");
        let mut object = connect_options(sub, &query_pairs(query));
        let name = info.name.clone().unwrap_or_default();
        let mut req = crate::vap::Request { resource: info.resource, subresource: Some(sub), operation: "CONNECT", namespace: info.namespace.as_deref(), name: &name, object: None, old: None, user, dry_run: false };
        if mutating {
            webhooks::mutate(self.store.as_ref(), &Call { request: &req, options: Value::Null }, &mut object).await?;
        }
        if validating {
            req.object = Some(&object);
            webhooks::validate(self.store.as_ref(), &Call { request: &req, options: Value::Null }).await?;
        }
        Ok(())
    }

    async fn admit_create(&self, reads: &dyn Store, r: &'static Resource, obj: &mut Value) -> Result<(), ApiError> {
        match r.builtin() {
            "Pod" => {
                let mut causes = Vec::new();
                crate::ephemeral::check_create(obj, &mut causes);
                if !causes.is_empty() {
                    return Err(ApiError::invalid(r, name_of(obj), causes));
                }
                crate::limitrange::admit(reads, r, obj).await?;
                if self.service_account_admission {
                    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("default").to_string();
                    crate::serviceaccount::admit_pod(reads, r, &ns, obj).await?;
                }
                crate::tolerations::admit_pod(obj, self.default_tolerations);
                crate::runtimeclass::admit_pod(reads, r, obj).await?;
                crate::priority::admit_pod(reads, r, obj).await?;
                // The pod strategy's PrepareForCreate: the QoS class is known from the spec.
                obj["status"]["qosClass"] = serde_json::json!(crate::qos::class(obj));
                Ok(())
            }
            "PriorityClass" => crate::priority::admit_class(self.store.as_ref(), r, obj).await,
            "Service" => crate::clusterip::allocate(self.store.as_ref(), r, obj).await,
            "PersistentVolumeClaim" => {
                crate::limitrange::admit(reads, r, obj).await?;
                crate::storage::admit_pvc(self.store.as_ref(), obj).await
            }
            "ResourceQuota" => {
                crate::quota::prepare_create(obj);
                Ok(())
            }
            "Ingress" => crate::networking::admit_ingress(self.store.as_ref(), obj).await,
            _ => Ok(()),
        }
    }

    /// NodeRestriction admission: a node's writes must be about itself or pods bound to it
    /// (see [`crate::node`]).
    async fn node_restriction(&self, user: &User, info: &RequestInfo, verb: &str, headers: &HeaderMap, body: &Bytes) -> Result<(), ApiError> {
        let (Some(node), Some(nodes)) = (crate::node::identity(user), &self.authz.nodes) else { return Ok(()) };
        if info.resource.plural == "serviceaccounts" && info.subresource.as_deref() == Some("token") && verb == "create" {
            return self.node_token_restriction(node, info, &parse_body(headers, body)?).await;
        }
        if !matches!(verb, "create" | "update" | "patch" | "delete") || !matches!(info.resource.plural, "nodes" | "pods" | "leases") {
            return Ok(());
        }
        let obj = if verb == "create" && info.subresource.is_none() { Some(parse_body(headers, body)?) } else { None };
        let name = info.name.as_deref().unwrap_or("");
        let sub = info.subresource.as_deref().unwrap_or("");
        let Err(why) = nodes.admit(node, verb, info.resource.plural, sub, info.namespace.as_deref().unwrap_or(""), name, obj.as_ref()).await else { return Ok(()) };
        // A write to a pod that is gone is NotFound, as upstream's NodeRestriction answers (it
        // reads the pod first): a kubelet's final delete of a pod someone removed meanwhile is
        // done, not forbidden.
        if info.resource.plural == "pods" && !name.is_empty() && verb != "create" {
            self.load(info).await?;
        }
        Err(ApiError::forbidden(info.resource, if name.is_empty() { object::name_of(obj.as_ref().unwrap_or(&Value::Null)) } else { name }, &why))
    }

    /// NodeRestriction of a node's TokenRequest (upstream's `admitServiceAccount`): only tokens
    /// bound to a pod (by uid) that is bound to the node.
    async fn node_token_restriction(&self, node: &str, info: &RequestInfo, req: &Value) -> Result<(), ApiError> {
        let name = info.name.as_deref().unwrap_or("");
        let deny = |why: String| Err(ApiError::forbidden(info.resource, name, &why));
        let r = &req["spec"]["boundObjectRef"];
        if !r.is_object() {
            return deny("node requested token not bound to a pod".into());
        }
        let kind = r["kind"].as_str().unwrap_or("");
        if kind != "Pod" {
            return deny(format!("node requested token bound to a {kind}"));
        }
        let uid = r["uid"].as_str().unwrap_or("");
        if uid.is_empty() {
            return deny("node requested token with a pod binding without a uid".into());
        }
        let pods = resources::find("", "v1", "pods").ok_or_else(|| ApiError::internal("core kinds missing"))?;
        let target = RequestInfo { resource: pods, namespace: info.namespace.clone(), name: Some(r["name"].as_str().unwrap_or("").to_string()), subresource: None };
        let (pod, _) = self.load(&target).await?;
        if pod["metadata"]["uid"].as_str() != Some(uid) {
            return deny(format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"));
        }
        if pod["spec"]["nodeName"].as_str() != Some(node) {
            return deny("node requested token bound to a pod scheduled on a different node".into());
        }
        Ok(())
    }

    /// Allow the request or fail with upstream's Forbidden.
    async fn authorize(&self, user: &User, a: &Attributes) -> Result<(), ApiError> {
        if self.authz.allowed(self.store.as_ref(), user, a).await? {
            return Ok(());
        }
        Err(ApiError::forbidden_by(user, a))
    }

    async fn non_resource(&self, path: &str, query: Option<&str>, accept: &str, headers: &HeaderMap) -> Option<Response> {
        let ok = |v: Value| Some(json_response(StatusCode::OK, &v));
        match path {
            "/version" => ok(discovery::version()),
            "/metrics" => Some((StatusCode::OK, [("content-type", "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render(&self.cache)).into_response()),
            "/api" | "/apis" => {
                let core = path == "/api";
                match discovery::wants_aggregated(accept) {
                    Some(v) => {
                        let ct = if v == "v2" { discovery::AGGREGATED_V2 } else { discovery::AGGREGATED_V2BETA1 };
                        Some((StatusCode::OK, [("content-type", ct)], discovery::aggregated(core, v).to_string()).into_response())
                    }
                    None if core => ok(discovery::api_versions()),
                    None => ok(discovery::api_group_list()),
                }
            }
            "/api/v1" => discovery::resource_list("", "v1").and_then(ok),
            "/openapi/v2" => Some(crate::openapi_v2::serve(headers)),
            "/openapi/v3" => ok(crate::openapi::index()),
            p if p.starts_with("/openapi/v3/") => crate::openapi::document(&p["/openapi/v3/".len()..]).and_then(ok),
            p if ["/healthz", "/livez", "/readyz"].iter().any(|h| p == *h || p.strip_prefix(h).is_some_and(|rest| rest.starts_with('/'))) => {
                crate::health::serve(p, &query_pairs(query), self.store.as_ref(), &self.started).await
            }
            _ => {
                let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
                match segs.as_slice() {
                    ["apis", g] => discovery::api_group(g).and_then(ok),
                    ["apis", g, v] => discovery::resource_list(g, v).and_then(ok),
                    _ => None,
                }
            }
        }
    }

    pub(crate) async fn load(&self, info: &RequestInfo) -> Result<(Value, u64), ApiError> {
        let name = info.name.as_deref().unwrap_or("");
        let key = info.resource.key(info.namespace.as_deref(), name);
        match self.store.get(&key).await? {
            Some(kv) => {
                let mut v: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(format!("decoding {key}: {e}")))?;
                crate::convert::served_form(info.resource, &mut v);
                Ok((v, kv.mod_revision))
            }
            None => Err(ApiError::not_found(info.resource, name)),
        }
    }

    /// ComponentStatuses (`componentstatus.rs`): read only, computed on each read, with
    /// upstream's deprecation warning.
    async fn component_statuses(&self, user: &User, method: &Method, name: Option<&str>, q: &Query, accept: &str) -> Result<Response, ApiError> {
        let r = &crate::resources::COMPONENT_STATUSES;
        let watch = q.get("watch").is_some_and(|v| v == "true" || v == "1");
        let verb = match (method.as_str(), name) {
            ("GET", Some(_)) => "get",
            ("GET", None) if watch => "watch",
            ("GET", None) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", None) => "deletecollection",
            ("DELETE", Some(_)) => "delete",
            (other, _) => return Err(ApiError::method_not_allowed(format!("the server does not allow this method ({other}) on the requested resource"))),
        };
        self.authorize(user, &Attributes::resource(verb, "", r.plural, "", "", name.unwrap_or(""))).await?;
        if !matches!(verb, "get" | "list") {
            return Err(ApiError::method_not_allowed(format!("the server does not allow this method ({method}) on the requested resource")));
        }
        let transform = output::negotiate(accept)?;
        let now = chrono::Utc::now();
        let store = self.store.as_ref();
        let body = match name {
            Some(n) => {
                let obj = crate::componentstatus::status(store, n, now).await.ok_or_else(|| ApiError::not_found(r, n))?;
                object_as(r, transform, obj)?
            }
            None => {
                let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")).map_err(ApiError::bad_request)?;
                let fields = FieldSelector::parse_for(r, q.get("fieldSelector").map(String::as_str).unwrap_or("")).map_err(ApiError::bad_request)?;
                let items = crate::componentstatus::statuses(store, now).await.into_iter().filter(|o| labels.matches(o) && fields.matches(o)).collect();
                list_as(r, transform, items, json!({}))?
            }
        };
        Ok(with_warnings(json_response(StatusCode::OK, &body), &[crate::componentstatus::DEPRECATION.to_string()]))
    }

    async fn get(&self, info: &RequestInfo, q: &Query, transform: Transform) -> Result<Response, ApiError> {
        if let rv::Read::NotOlderThan(wanted) = rv::get_read(q.get("resourceVersion").map(String::as_str))? {
            if wanted > 0 {
                // The store's revision first: the read that follows is at least as new.
                rv::not_older_than(wanted, self.store.revision().await?)?;
            }
        }
        let (obj, rev) = self.load(info).await?;
        let obj = with_rv(obj, rev);
        Ok(json_response(StatusCode::OK, &object_as(info.resource, transform, obj)?))
    }

    async fn list(&self, info: &RequestInfo, q: &Query, transform: Transform) -> Result<Response, ApiError> {
        let r = info.resource;
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")).map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse_for(r, &crate::convert::field_selector(r, q.get("fieldSelector").map(String::as_str).unwrap_or(""))).map_err(ApiError::bad_request)?;
        let prefix = r.list_prefix(info.namespace.as_deref());
        let opts = rv::ListOptions::parse(|k| q.get(k).cloned(), &prefix)?;
        // Upstream refuses the transform after the list; a list it would serve is not built
        // only to be refused (a bad query is still its error first).
        if let Transform::Partial(_) = transform {
            return Err(output::list_as_object(r));
        }
        if let Some(served) = self.list_from_cache(r, &opts, &prefix, &labels, &fields, transform).await? {
            return Ok(served);
        }
        let limit = opts.limit;
        let mut start_after = opts.start_after.clone();
        // The revision the response reports; every store page after the first is read at it.
        let mut list_rev: Option<u64> = None;
        let mut items = Vec::new();
        let mut next: Option<String> = None;
        // Objects after the last page item, reported only when every stored object is listed
        // (with a selector the store's count would include objects that do not match: upstream
        // reports nothing then either).
        let mut remaining: Option<u64> = None;
        loop {
            // Read the store in bounded pages even for unlimited lists (etcd caps message sizes).
            let want = if limit == 0 { STORE_PAGE } else { (limit - items.len()).clamp(1, STORE_PAGE) };
            let page = match opts.read_at(list_rev) {
                None => self.store.list(&prefix, start_after.as_deref(), want).await,
                Some(rev) => self.store.list_at(&prefix, rev, start_after.as_deref(), want).await,
            }
            .map_err(|e| opts.read_error(e))?;
            if list_rev.is_none() {
                list_rev = Some(opts.snapshot(page.revision)?);
            }
            let last_key = page.items.last().map(|kv| kv.key.clone());
            let page_remaining = page.remaining;
            for (i, kv) in page.items.into_iter().enumerate() {
                // A long list gives the runtime's workers back now and then (a Lease renewal
                // waits behind at most one slice of it).
                if i % LIST_SLICE == LIST_SLICE - 1 {
                    tokio::task::yield_now().await;
                }
                let mut v: Value = serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(format!("decoding {}: {e}", kv.key)))?;
                // Selectors match the stored form, as the watch cache's do (a converted kind's field
                // selector is translated to it, `convert::field_selector`).
                if labels.matches(&v) && fields.matches(&v) {
                    crate::convert::served_form(r, &mut v);
                    items.push(with_rv(v, kv.mod_revision));
                }
            }
            if !page.more {
                break;
            }
            start_after = last_key;
            if limit > 0 && items.len() >= limit {
                next = start_after.clone();
                if labels.is_empty() && fields.is_empty() {
                    remaining = Some(page_remaining);
                }
                break;
            }
        }
        let rev = list_rev.unwrap_or(0);
        let meta = list_meta(&prefix, rev, next.as_deref(), remaining);
        let many = items.len() > LIST_SLICE;
        let list = list_as(r, transform, items, meta)?;
        if many {
            // Encoding a long list is one long computation: on the blocking pool, so that it
            // does not hold a runtime worker (and every request queued behind it).
            let body = tokio::task::spawn_blocking(move || list.to_string()).await.map_err(|e| ApiError::internal(format!("encoding the list: {e}")))?;
            return Ok((StatusCode::OK, [("content-type", "application/json")], body).into_response());
        }
        Ok(json_response(StatusCode::OK, &list))
    }

    /// A list served from the watch cache, as kube-apiserver serves consistent lists from its
    /// cacher: the objects' cached JSON written as it is, not read from the store, decoded and
    /// encoded again (30,000 pods listed in pages of 500 took 4.5 s of the server's CPU through
    /// the store). `None` for what the cache does not hold as served — Tables, custom and
    /// converted kinds — and for states it cannot rebuild (a revision older than its ring, or
    /// not reached in time): the store serves those. A revision the store has compacted is
    /// gone here too.
    async fn list_from_cache(&self, r: &'static Resource, opts: &rv::ListOptions, prefix: &str, labels: &LabelSelector, fields: &FieldSelector, transform: Transform) -> Result<Option<Response>, ApiError> {
        use crate::watchcache::ListRead;
        let partial = match transform {
            Transform::None => None,
            Transform::PartialList(v) => Some(v),
            Transform::Table(_) | Transform::Partial(_) => return Ok(None),
        };
        if r.custom || crate::convert::converted(r) {
            return Ok(None);
        }
        let read = match opts.read {
            rv::Read::Latest => ListRead::Latest,
            rv::Read::NotOlderThan(n) => {
                // Ahead of the store: its 504, at once.
                if n > 0 && n > self.store.revision().await? {
                    return Ok(None);
                }
                ListRead::NotOlderThan(n)
            }
            rv::Read::Exact(n) => {
                self.store.readable(n).await.map_err(|e| opts.read_error(e))?;
                ListRead::Exact(n)
            }
        };
        let Some(page) = self.cache.list(prefix, read, opts.start_after.as_deref(), opts.limit, labels, fields).await else {
            return Ok(None);
        };
        let unfiltered = labels.is_empty() && fields.is_empty();
        let meta = list_meta(prefix, page.revision, page.next.as_deref(), unfiltered.then_some(page.remaining));
        // The bytes `json!({...}).to_string()` would give (keys in order), items spliced in.
        let size: usize = page.items.iter().map(|o| o.json.len() + 1).sum();
        let mut body = Vec::with_capacity(size + 256);
        let (api_version, list_kind) = match partial {
            None => (r.api_version(), format!("{}List", r.kind)),
            Some(v) => (v.api_version().to_string(), "PartialObjectMetadataList".to_string()),
        };
        body.extend_from_slice(b"{\"apiVersion\":");
        body.extend_from_slice(&object::to_json(&json!(api_version)));
        body.extend_from_slice(b",\"items\":[");
        for (i, o) in page.items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            match partial {
                None => body.extend_from_slice(&o.json),
                Some(v) => body.extend_from_slice(&output::partial_json(&o.json, v).ok_or_else(|| ApiError::internal("a cached object is not a JSON object"))?),
            }
        }
        body.extend_from_slice(b"],\"kind\":");
        body.extend_from_slice(&object::to_json(&json!(list_kind)));
        body.extend_from_slice(b",\"metadata\":");
        body.extend_from_slice(&object::to_json(&meta));
        body.push(b'}');
        Ok(Some((StatusCode::OK, [("content-type", "application/json")], body).into_response()))
    }

    /// A watch stream, served from the watch cache; each event's object transformed as asked
    /// (a one-row Table for `kubectl get -w`, a `PartialObjectMetadata` for a metadata informer).
    async fn watch(&self, info: &RequestInfo, q: &Query, transform: Transform, conn: &Conn) -> Result<Response, ApiError> {
        use crate::watchcache::{Start, WatchRequest};
        let r = info.resource;
        if let Transform::PartialList(_) = transform {
            // Upstream fails at the first event and ends the stream; an answer up front says why.
            return Err(output::object_as_list(r));
        }
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")).map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse_for(r, &crate::convert::field_selector(r, q.get("fieldSelector").map(String::as_str).unwrap_or(""))).map_err(ApiError::bad_request)?;
        let wq = rv::watch_query(|k| q.get(k).cloned())?;
        let start = match (wq.send_initial_events, wq.resource_version) {
            (None | Some(true), None) => Start::Latest,
            (None | Some(true), Some(0)) => Start::Any,
            (None, Some(n)) => Start::After(n),
            (Some(true), Some(n)) => Start::NotOlderThan(n),
            // No initial state asked for: the changes after the latest revision.
            (Some(false), None | Some(0)) => Start::After(self.store.revision().await?),
            (Some(false), Some(n)) => Start::After(n),
        };
        let permit = self.long_running.clone().try_acquire_owned().map_err(|_| ApiError::too_many_requests())?;
        let req = WatchRequest {
            prefix: r.list_prefix(info.namespace.as_deref()),
            start,
            labels,
            fields,
            kind: r.kind,
            api_version: r.api_version(),
            custom: (r.custom || crate::convert::converted(r)).then_some(r),
            transform,
            bookmarks: truthy(q, "allowWatchBookmarks"),
            initial_events_end: wq.send_initial_events == Some(true),
            timeout: q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).map(Duration::from_secs),
            permit: Some(permit),
            close_connection: conn.close.clone(),
        };
        let stream = match self.cache.watch(req).await {
            Ok(stream) => futures_util::StreamExt::boxed(stream),
            // As kube-apiserver's cacher: past authorization and a valid resourceVersion, a
            // revision gone is a watch whose one event is the 410 Status, not an error
            // response. Clients relist on that event (client-go's reflector, kube-rs's
            // watcher, which retries an HTTP 410 to the same revision forever).
            Err(e) if e.code == 410 => {
                let line = format!("{}\n", json!({ "type": "ERROR", "object": e.to_status() }));
                futures_util::StreamExt::boxed(futures_util::stream::once(async move { Ok(Bytes::from(line)) }))
            }
            Err(e) => return Err(e),
        };
        let counted = crate::metrics::watcher(r);
        let body = Body::from_stream(futures_util::StreamExt::map(stream, move |chunk| {
            let _ = &counted;
            chunk
        }));
        Ok(Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(body)
            .unwrap_or_else(|_| ApiError::internal("building watch response").into_response()))
    }

    async fn namespace_usable(&self, reads: &dyn Store, ns: &str) -> Result<(), ApiError> {
        let nsr = resources::find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("namespaces not registered"))?;
        match reads.get(&nsr.key(None, ns)).await? {
            None => Err(ApiError::not_found(nsr, ns)),
            Some(kv) => {
                let v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                if v["status"]["phase"] == "Terminating" {
                    return Err(ApiError::new(403, "Forbidden", format!("unable to create new content in namespace {ns} because it is being terminated")));
                }
                Ok(())
            }
        }
    }

    async fn create(&self, user: &User, info: &RequestInfo, mut obj: Value, dry_run: bool, (fv, dups): (FieldValidation, &[String]), manager: &str) -> Result<Response, ApiError> {
        let r = info.resource;
        if info.subresource.is_some() {
            return Err(ApiError::method_not_allowed(format!("create of {} subresources is not supported yet", r.plural)));
        }
        let mut warnings = crate::fields::check(r, &mut obj, fv, dups)?;
        warnings.extend(crate::vap::warning(r, &obj));
        object::prepare_create(r, &mut obj, info.namespace.as_deref())?;
        if r.builtin() == "CertificateSigningRequest" {
            crate::csr::prepare_create(user, &mut obj);
        }
        crate::validate::validate(r, &mut obj)?;
        crate::validate::validate_create(r, &obj)?;
        // The fields the request sets (defaults included) are its manager's; what mutating
        // admission adds after (a ServiceAccount's token volume, default tolerations) is not
        // (upstream's create handler runs the field manager before mutating admission).
        self.created_fields.record_create(r, &mut obj, manager, &object::now());
        // Admission reads what it needs from the watch cache once it is current (as upstream's
        // plugins read their informers).
        let reads = self.cache.reads().await;
        self.admit_create(&reads, r, &mut obj).await?;
        warnings.extend(self.admit_external(&reads, user, info, &mut obj, None, dry_run, manager).await?);
        self.check_rbac_write(user, info, &obj, None).await?;
        let (name, key) = self.new_object_key(&reads, r, &obj).await?;
        if dry_run {
            crate::quota::admit(&reads, r, &obj).await?;
            if self.store.get(&key).await?.is_some() {
                return Err(ApiError::already_exists(r, &name));
            }
            return Ok(json_response(StatusCode::CREATED, &obj));
        }
        let (rev, stored) = self.store_new(&reads, r, &key, &name, &obj).await?;
        // The stored bytes are the answer, stamped, when they are the object as served.
        let response = match stored.and_then(|bytes| crate::watchcache::stamped(&bytes, rev)) {
            Some(json) => (StatusCode::CREATED, [("content-type", "application/json")], axum::body::Bytes::from(json)).into_response(),
            None => json_response(StatusCode::CREATED, &with_rv(obj, rev)),
        };
        Ok(with_warnings(response, &warnings))
    }

    /// Write a new object, charged to the namespace's resource quotas in the same transaction
    /// (ResourceQuota admission, see [`crate::quota`]); a race with another charge re-evaluates.
    /// The first evaluation reads the quotas through `reads` (the watch cache when current);
    /// one that raced with another charge reads them from the store.
    /// Returns the revision, and the stored bytes when they are the object as served less its
    /// resourceVersion ([`object::storable_form`]).
    async fn store_new(&self, reads: &dyn Store, r: &'static Resource, key: &str, name: &str, obj: &Value) -> Result<(u64, Option<Vec<u8>>), ApiError> {
        let (value, as_served) = object::storable_form(obj)?;
        for attempt in 0..100 {
            let quotas: &dyn Store = if attempt == 0 { reads } else { self.store.as_ref() };
            let charge = crate::quota::admit(quotas, r, obj).await?;
            let result = if charge.writes.is_empty() {
                self.store.create(key, value.clone()).await
            } else {
                let (compares, ops) = charge.txn(key, value.clone());
                match self.store.txn(compares, ops).await {
                    Err(strata_store::Error::TxnFailed) if self.store.get(key).await?.is_some() => Err(strata_store::Error::AlreadyExists(key.to_string())),
                    Err(strata_store::Error::TxnFailed) => continue,
                    other => other,
                }
            };
            return match result {
                Ok(rev) => Ok((rev, as_served.then_some(value))),
                Err(strata_store::Error::AlreadyExists(_)) => Err(ApiError::already_exists(r, name)),
                Err(e) => Err(e.into()),
            };
        }
        Err(ApiError::internal("resource quota evaluation timed out"))
    }

    async fn update(&self, user: &User, info: &RequestInfo, mut obj: Value, dry_run: bool, (fv, dups): (FieldValidation, &[String]), manager: &str) -> Result<Response, ApiError> {
        let r = info.resource;
        let name = info.name.clone().unwrap_or_default();
        let status_only = matches!(info.subresource.as_deref(), Some("status" | "approval"));
        // A namespace's `finalize` changes spec.finalizers (and metadata), never status.
        let finalize = info.subresource.as_deref() == Some("finalize") && r.builtin() == "Namespace";
        let ephemeral = info.subresource.as_deref() == Some("ephemeralcontainers");
        if info.subresource.is_some() && !status_only && !finalize && !ephemeral {
            return Err(ApiError::method_not_allowed(format!("update of {}/{} is not supported yet", r.plural, info.subresource.as_deref().unwrap_or(""))));
        }
        if name_of(&obj) != name {
            return Err(ApiError::bad_request(format!("the name of the object ({}) does not match the name on the URL ({name})", name_of(&obj))));
        }
        let (old, rev) = self.load(info).await?;
        // The body's uid is a precondition (upstream's `defaultUpdatedObjectInfo.Preconditions`):
        // an update meant for an object since deleted and created again fails.
        if let Some(want) = obj["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
            let stored = old["metadata"]["uid"].as_str().unwrap_or("");
            if want != stored {
                return Err(ApiError::uid_precondition(r, &name, want, stored));
            }
        }
        let expected = match obj["metadata"]["resourceVersion"].as_str() {
            Some(rv) if !rv.is_empty() => rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?,
            _ => rev,
        };
        if expected != rev {
            return Err(ApiError::conflict(r, &name));
        }
        let mut warnings = crate::fields::check(r, &mut obj, fv, dups)?;
        warnings.extend(crate::vap::warning(r, &obj));
        object::prepare_update(r, &mut obj, &old, status_only)?;
        self.prepare_kind_update(user, info, &mut obj, &old).await?;
        crate::validate::validate(r, &mut obj)?;
        crate::validate::validate_update(r, &obj, &old)?;
        warnings.extend(self.admit_external(self.store.as_ref(), user, info, &mut obj, Some(&old), dry_run, manager).await?);
        managed::record_update(r, info.subresource.as_deref(), Some(&old), &mut obj, manager, &object::now());
        self.check_rbac_write(user, info, &obj, Some(&old)).await?;
        Ok(with_warnings(self.write_update(info, obj, &old, expected, dry_run).await?, &warnings))
    }

    /// Store an updated object; an object being deleted whose last finalizer went away is
    /// deleted now — unless a graceful deletion is still under way (a pod whose node has not
    /// confirmed it with grace 0: upstream's `DefaultShouldDeleteDuringUpdate`).
    async fn write_update(&self, info: &RequestInfo, obj: Value, old: &Value, expected: u64, dry_run: bool) -> Result<Response, ApiError> {
        let (obj, rev) = self.write_update_object(info, obj, old, expected, dry_run).await?;
        Ok(json_response(StatusCode::OK, &match rev {
            Some(rev) => with_rv(obj, rev),
            None => obj,
        }))
    }

    /// [`Api::write_update`] without the response: the object as written and its revision
    /// (`None`: a dry run).
    async fn write_update_object(&self, info: &RequestInfo, mut obj: Value, old: &Value, expected: u64, dry_run: bool) -> Result<(Value, Option<u64>), ApiError> {
        let r = info.resource;
        managed::keep_times_if_unchanged(old, &mut obj);
        let name = name_of(&obj).to_string();
        let key = r.key(info.namespace.as_deref(), &name);
        let quota_update = info.subresource.is_none() && obj["metadata"]["deletionTimestamp"].is_null();
        if dry_run {
            if quota_update {
                crate::quota::admit_update(self.store.as_ref(), r, &obj, old).await?;
            }
            return Ok((obj, None));
        }
        if quota_update {
            // An update that raises quota usage (a Service's node ports or load balancer, a
            // claim's size) is charged in the same transaction as the write.
            let mut attempts = 0;
            loop {
                attempts += 1;
                if attempts > 100 {
                    return Err(ApiError::internal("resource quota evaluation timed out"));
                }
                let charge = crate::quota::admit_update(self.store.as_ref(), r, &obj, old).await?;
                if charge.writes.is_empty() {
                    break;
                }
                let (compares, ops) = charge.txn_update(&key, object::storable(&obj)?, expected);
                match self.store.txn(compares, ops).await {
                    Ok(rev) => return Ok((obj, Some(rev))),
                    Err(strata_store::Error::TxnFailed) => match self.store.get(&key).await? {
                        None => return Err(ApiError::not_found(r, &name)),
                        Some(kv) if kv.mod_revision != expected => return Err(ApiError::conflict(r, &name)),
                        Some(_) => continue,
                    },
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let finalized = obj["metadata"]["deletionTimestamp"].is_string()
            && obj["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty())
            && old["metadata"]["deletionGracePeriodSeconds"].as_i64().is_none_or(|g| g == 0);
        if finalized {
            return match self.store.delete(&key, expected).await {
                Ok(kv) => Ok((obj, Some(kv.mod_revision))),
                Err(strata_store::Error::Conflict { .. }) => Err(ApiError::conflict(r, &name)),
                Err(strata_store::Error::NotFound(_)) => Err(ApiError::not_found(r, &name)),
                Err(e) => Err(e.into()),
            };
        }
        if object::same_for_storage(&obj, old) && !self.store.stale(&key).await? {
            // No change: no new revision, as in Kubernetes (unless the stored form is stale:
            // re-writing is how encryption keys are rotated).
            return Ok((obj, Some(expected)));
        }
        match self.store.update(&key, object::storable(&obj)?, expected).await {
            Ok(rev) => Ok((obj, Some(rev))),
            Err(strata_store::Error::Conflict { .. }) => Err(ApiError::conflict(r, &name)),
            Err(strata_store::Error::NotFound(_)) => Err(ApiError::not_found(r, &name)),
            Err(e) => Err(e.into()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn patch(&self, user: &User, info: &RequestInfo, q: &Query, headers: &HeaderMap, body: &Bytes, dry_run: bool, manager: &str) -> Result<Response, ApiError> {
        let r = info.resource;
        let name = info.name.clone().unwrap_or_default();
        let status_only = matches!(info.subresource.as_deref(), Some("status" | "approval"));
        let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
        if ct == "application/apply-patch+yaml" {
            return self.apply(user, info, q, body, dry_run, manager).await;
        }
        if q.contains_key("force") {
            let c = Cause { reason: "FieldValueForbidden", field: "force".into(), message: "Forbidden: may not be specified for non-apply patch".into() };
            return Err(ApiError::invalid_kind("meta.k8s.io", "PatchOptions", "", vec![c]));
        }
        let fv = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
        let p: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        // Retry on conflicts: a patch applies to whatever is current.
        for _ in 0..5 {
            let (old, rev) = self.load(info).await?;
            let mut new = with_rv(old.clone(), rev);
            match ct.as_str() {
                "application/merge-patch+json" => patch::merge_patch(&mut new, &p),
                "application/json-patch+json" => patch::json_patch(&mut new, &p).map_err(|e| ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}")))?,
                "application/strategic-merge-patch+json" if r.custom => return Err(ApiError::new(415, "UnsupportedMediaType", crate::crd::PATCH_TYPES_MESSAGE)),
                "application/strategic-merge-patch+json" => patch::strategic_merge_patch(&mut new, &p, crate::protobuf::message_of(r)).map_err(|e| ApiError::bad_request(e.to_string()))?,
                other => return Err(ApiError::unsupported_media_type(other)),
            }
            let expected = match new["metadata"]["resourceVersion"].as_str() {
                Some(rv) if rv != rev.to_string() => return Err(ApiError::conflict(r, &name)),
                _ => rev,
            };
            let mut warnings = crate::fields::check(r, &mut new, fv, &[])?;
            object::prepare_update(r, &mut new, &old, status_only)?;
            self.prepare_kind_update(user, info, &mut new, &old).await?;
            crate::validate::validate(r, &mut new)?;
            crate::validate::validate_update(r, &new, &old)?;
            warnings.extend(self.admit_external(self.store.as_ref(), user, info, &mut new, Some(&old), dry_run, manager).await?);
            managed::record_update(r, info.subresource.as_deref(), Some(&old), &mut new, manager, &object::now());
            self.check_rbac_write(user, info, &new, Some(&old)).await?;
            match self.write_update(info, new, &old, expected, dry_run).await {
                Err(e) if e.reason == "Conflict" => continue,
                other => return other.map(|resp| with_warnings(resp, &warnings)),
            }
        }
        Err(ApiError::conflict(r, &name))
    }

    /// Server-side apply (`PATCH` with `application/apply-patch+yaml`): merge the applied
    /// configuration into the object as `manager` (see [`managed`]), creating the object if it
    /// does not exist. The body is YAML (kubectl, client-go and the Python client send it as
    /// JSON, which is YAML too and read as such first).
    async fn apply(&self, user: &User, info: &RequestInfo, q: &Query, body: &Bytes, dry_run: bool, manager: &str) -> Result<Response, ApiError> {
        let r = info.resource;
        let name = info.name.clone().unwrap_or_default();
        let status_only = info.subresource.as_deref() == Some("status");
        if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
            // This field is defaulted to "kubectl" by kubectl, but controllers must set it.
            let c = Cause { reason: "FieldValueRequired", field: "fieldManager".into(), message: "Required value: is required for apply patch".into() };
            return Err(ApiError::invalid_kind("meta.k8s.io", "PatchOptions", "", vec![c]));
        }
        let force = truthy(q, "force");
        let mut config: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => decode_yaml(body)?,
        };
        if !config.is_object() {
            return Err(ApiError::bad_request("error decoding YAML: the applied configuration must be an object"));
        }
        // A key the body repeats: refused under Strict, a warning under Warn (upstream decodes
        // the applied configuration again with sigs.k8s.io/yaml's strict decoder).
        let mut warnings = Vec::new();
        let fv = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))?;
        if fv != FieldValidation::Ignore {
            if let Some(dup) = crate::yaml::duplicate_key(body) {
                let msg = format!("error converting YAML to JSON: yaml: unmarshal errors:\n  {dup}");
                if fv == FieldValidation::Strict {
                    return Err(ApiError::bad_request(format!("error strict decoding YAML: {msg}")));
                }
                warnings.push(msg);
            }
        }
        let expected = r.api_version();
        let version = config["apiVersion"].as_str().unwrap_or("").to_string();
        if version != expected {
            return Err(ApiError::bad_request(format!("Incorrect version specified in apply patch. Specified patch version: {version}, expected: {expected}")));
        }
        object::check_envelope(r, &mut config)?;
        if !config["metadata"]["managedFields"].is_null() {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        // A resourceVersion in the configuration is a precondition, not a field.
        let precondition = config["metadata"].as_object_mut().and_then(|m| m.remove("resourceVersion")).and_then(|v| v.as_str().map(str::to_string)).filter(|v| !v.is_empty());
        match config["metadata"]["name"].as_str() {
            Some(n) if n != name => {
                return Err(ApiError::bad_request(format!("the name of the object ({n}) does not match the name on the URL ({name})")));
            }
            Some(_) => {}
            None => config["metadata"]["name"] = json!(name),
        }
        if let (Some(sent), Some(ns)) = (config["metadata"]["namespace"].as_str(), info.namespace.as_deref()) {
            if sent != ns {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
        }
        let group_version = if r.group.is_empty() { format!("/{expected}") } else { expected.clone() };
        let object = format!("{}/{name}; {group_version}, Kind={}", info.namespace.as_deref().unwrap_or(""), r.kind);
        // Unknown fields cannot be typed, whatever fieldValidation asks (as upstream).
        let (unknown, mistyped) = crate::fields::strip_unknown_checked(r, &mut config.clone());
        if let Some(field) = unknown.first() {
            return Err(ApiError::bad_request(format!("failed to create typed patch object ({object}): .{field}: field not declared in schema")));
        }
        if let Some(e) = mistyped {
            return Err(ApiError::bad_request(format!("failed to create typed patch object ({object}): {e}")));
        }
        for _ in 0..5 {
            let live = match self.load(info).await {
                Ok(found) => Some(found),
                Err(e) if e.code == 404 && info.subresource.is_none() => None,
                Err(e) => return Err(e),
            };
            if let (Some((_, rev)), Some(want)) = (&live, &precondition) {
                if *want != rev.to_string() {
                    return Err(ApiError::conflict(r, &name));
                }
            }
            let now = object::now();
            let mut new = managed::apply(r, info.subresource.as_deref(), live.as_ref().map(|(v, _)| v), &config, manager, force, &now)
                .map_err(|e| ApiError::from_apply(e, &object))?;
            self.check_rbac_write(user, info, &new, live.as_ref().map(|(v, _)| v)).await?;
            let Some((old, rev)) = live else {
                let mut warnings = warnings.clone();
                return match self.create_applied(user, info, new, dry_run, manager, &mut warnings).await {
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    other => other.map(|resp| with_warnings(resp, &warnings)),
                };
            };
            object::prepare_update(r, &mut new, &old, status_only)?;
            if r.builtin() == "Pod" {
                crate::priority::keep_pod_priority(&mut new, &old);
                if info.subresource.is_none() {
                    crate::tolerations::admit_pod(&mut new, self.default_tolerations);
                }
            }
            crate::priority::check_update(r, &new, &old)?;
            crate::storage::check_update(r, &new, &old)?;
            crate::validate::validate(r, &mut new)?;
            crate::validate::validate_update(r, &new, &old)?;
            let mut warnings = warnings.clone();
            warnings.extend(self.admit_external(self.store.as_ref(), user, info, &mut new, Some(&old), dry_run, manager).await?);
            match self.write_update(info, new, &old, rev, dry_run).await {
                Err(e) if e.reason == "Conflict" => continue,
                other => return other.map(|resp| with_warnings(resp, &warnings)),
            }
        }
        Err(ApiError::conflict(r, &name))
    }

    /// The name and store key of an object about to be created, once its namespace is known to
    /// accept new objects.
    async fn new_object_key(&self, reads: &dyn Store, r: &'static Resource, obj: &Value) -> Result<(String, String), ApiError> {
        let name = name_of(obj).to_string();
        let ns = obj["metadata"]["namespace"].as_str();
        if r.namespaced {
            self.namespace_usable(reads, ns.unwrap_or("default")).await?;
        }
        let key = r.key(ns, &name);
        Ok((name, key))
    }

    /// Store an object a server-side apply creates (201).
    async fn create_applied(&self, user: &User, info: &RequestInfo, mut obj: Value, dry_run: bool, manager: &str, warnings: &mut Vec<String>) -> Result<Response, ApiError> {
        let r = info.resource;
        object::prepare_create(r, &mut obj, info.namespace.as_deref())?;
        crate::validate::validate(r, &mut obj)?;
        crate::validate::validate_create(r, &obj)?;
        let reads = self.cache.reads().await;
        self.admit_create(&reads, r, &mut obj).await?;
        warnings.extend(self.admit_external(&reads, user, info, &mut obj, None, dry_run, manager).await?);
        let (name, key) = self.new_object_key(&reads, r, &obj).await?;
        if dry_run {
            crate::quota::admit(&reads, r, &obj).await?;
            return Ok(json_response(StatusCode::CREATED, &obj));
        }
        let (rev, _) = self.store_new(&reads, r, &key, &name, &obj).await?;
        Ok(json_response(StatusCode::CREATED, &with_rv(obj, rev)))
    }

    /// `pods/binding`: assign a pod to a node (what a scheduler does). A pod is bound once, and
    /// not while it is being deleted. As upstream's binding storage, the pod's PodScheduled
    /// condition becomes True, and a concurrent write to the pod (its status) is retried over,
    /// not reported. The pod is changed in place and written (no copy of it: this is the
    /// scheduler's hot path); nothing else of it changes, so there is no field manager entry
    /// to record, as upstream's binding writes none.
    async fn bind(&self, info: &RequestInfo, binding: Value, dry_run: bool) -> Result<Response, ApiError> {
        let r = info.resource;
        let name = info.name.clone().unwrap_or_default();
        let node = binding["target"]["name"].as_str().unwrap_or("").to_string();
        if node.is_empty() {
            let c = crate::status::Cause { reason: "FieldValueRequired", field: "target.name".into(), message: "Required value".into() };
            return Err(ApiError::invalid(r, &name, vec![c]));
        }
        let refused = |why: String| ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on pods/binding \"{name}\": {why}"));
        let key = r.key(info.namespace.as_deref(), &name);
        let uid = binding["metadata"]["uid"].as_str().filter(|u| !u.is_empty());
        let mut attempt = 0;
        loop {
            attempt += 1;
            // The first try takes the pod from the watch cache, as upstream's cacher hands its
            // cached object to the update (no read of the store per binding); the cache may be
            // behind the store, so anything but a stored binding is decided again on the
            // store's own copy (the write is conditional on the revision read either way).
            let cached = if attempt == 1 && !dry_run { self.cache.stored(&key) } else { None };
            let from_cache = cached.is_some();
            let (value, mod_revision) = match cached {
                Some(found) => found,
                None => {
                    let kv = self.store.get(&key).await?.ok_or_else(|| ApiError::not_found(r, &name))?;
                    (kv.value, kv.mod_revision)
                }
            };
            let now = object::now();
            // The stored pod changed in place; one the raw path does not take, decoded.
            let outcome = match crate::binding::assign(&value, &node, uid, &now) {
                Some(o) => Ok(o),
                None => serde_json::from_slice(&value)
                    .map_err(|e| ApiError::internal(format!("decoding {key}: {e}")))
                    .and_then(|pod: Value| crate::binding::assign_value(pod, &node, uid, &now)),
            };
            let outcome = match outcome {
                Ok(o) => o,
                Err(_) if from_cache => continue,
                Err(e) => return Err(e),
            };
            let bytes = match outcome {
                crate::binding::Outcome::Bound(bytes) => bytes,
                _ if from_cache => continue,
                crate::binding::Outcome::Assigned(current) => return Err(refused(format!("pod {name} is already assigned to node \"{current}\""))),
                crate::binding::Outcome::Deleting => return Err(refused(format!("pod {name} is being deleted, cannot be assigned to a host"))),
                crate::binding::Outcome::OtherUid => return Err(ApiError::conflict(r, &name)),
            };
            if dry_run {
                return Ok(json_response(StatusCode::CREATED, &status::success(None)));
            }
            match self.store.update(&key, bytes, mod_revision).await {
                Ok(_) => return Ok(json_response(StatusCode::CREATED, &status::success(None))),
                Err(strata_store::Error::Conflict { .. }) if attempt < 5 => continue,
                Err(strata_store::Error::NotFound(_)) if from_cache => continue,
                Err(strata_store::Error::Conflict { .. }) => return Err(ApiError::conflict(r, &name)),
                Err(strata_store::Error::NotFound(_)) => return Err(ApiError::not_found(r, &name)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// `serviceaccounts/token` (TokenRequest): a JWT for the ServiceAccount, for the asked
    /// audiences (this API server's by default), living `expirationSeconds` (3600 by default,
    /// at least 600), optionally bound to a Pod or Secret of the namespace (the token dies with
    /// it). Checked as upstream's token REST storage checks it.
    async fn token_request(&self, info: &RequestInfo, req: Value) -> Result<Response, ApiError> {
        use crate::satoken::{claims, BoundObject};
        let signer = self.authn.signer.as_ref().ok_or_else(|| ApiError::internal("no service account signing key"))?;
        let (sa, _) = self.load(info).await?;
        let ns = info.namespace.clone().unwrap_or_default();
        let name = info.name.clone().unwrap_or_default();
        let spec = &req["spec"];
        let expiration = spec["expirationSeconds"].as_i64().unwrap_or(3600);
        let invalid = |message: String| {
            let c = Cause { reason: "FieldValueInvalid", field: "spec.expirationSeconds".into(), message };
            ApiError::invalid_kind("authentication.k8s.io", "TokenRequest", &name, vec![c])
        };
        if expiration < signer.min_expiration {
            let min = if signer.min_expiration == 600 { "10 minutes".to_string() } else { format!("{} seconds", signer.min_expiration) };
            return Err(invalid(format!("Invalid value: {expiration}: may not specify a duration less than {min}")));
        }
        if expiration > 1 << 32 {
            return Err(invalid(format!("Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds")));
        }
        let audiences: Vec<String> = match spec["audiences"].as_array() {
            Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => vec![crate::auth::API_AUDIENCE.to_string()],
        };
        let mut out_spec = json!({ "audiences": audiences, "expirationSeconds": expiration, "boundObjectRef": null });
        let bound = match spec["boundObjectRef"].as_object() {
            None => None,
            Some(r) => {
                let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
                let api_version = r.get("apiVersion").and_then(Value::as_str).unwrap_or("");
                let obj_name = r.get("name").and_then(Value::as_str).unwrap_or("");
                let (claim, plural) = match (api_version, kind) {
                    ("v1", "Pod") => ("pod", "pods"),
                    ("v1", "Secret") => ("secret", "secrets"),
                    _ => return Err(ApiError::bad_request(format!("cannot bind token to object of type {kind} (apiVersion {api_version:?})"))),
                };
                let res = resources::find("", "v1", plural).ok_or_else(|| ApiError::internal("core kinds missing"))?;
                let target = RequestInfo { resource: res, namespace: Some(ns.clone()), name: Some(obj_name.to_string()), subresource: None };
                let (obj, _) = self.load(&target).await?;
                if kind == "Pod" {
                    let runs_as = obj["spec"]["serviceAccountName"].as_str().filter(|s| !s.is_empty()).unwrap_or("default");
                    if runs_as != name {
                        return Err(ApiError::bad_request(format!("cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name.")));
                    }
                }
                let uid = obj["metadata"]["uid"].as_str().unwrap_or("").to_string();
                if let Some(want) = r.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
                    if want != uid {
                        return Err(ApiError::new(409, "Conflict", format!("Operation cannot be fulfilled on {kind} {obj_name:?}: the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated")));
                    }
                }
                out_spec["boundObjectRef"] = json!({ "kind": kind, "apiVersion": api_version, "name": obj_name, "uid": uid });
                Some(BoundObject { kind: claim, name: obj_name.to_string(), uid })
            }
        };
        let sa_uid = sa["metadata"]["uid"].as_str().unwrap_or("");
        let c = claims(&ns, &name, sa_uid, &audiences, expiration, bound.as_ref());
        let token = signer.sign(&c).map_err(|e| ApiError::internal(e.to_string()))?;
        let expires = c["exp"].as_i64().and_then(|t| chrono::DateTime::from_timestamp(t, 0)).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        let out = json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": { "name": name, "namespace": ns, "creationTimestamp": null },
            "spec": out_spec,
            "status": { "token": token, "expirationTimestamp": expires },
        });
        Ok(json_response(StatusCode::CREATED, &out))
    }

    /// `pods/log`, `pods/exec`, `pods/attach`, `pods/portforward` and
    /// `virtualmachines/console` stream from the node agent that runs the workload. The request
    /// is checked as Kubernetes checks it (the workload exists, the container is one of the
    /// pod's); a workload on no node fails with Kubernetes' "does not have a host assigned"; a
    /// pod's stream is then proxied to its node's agent (`proxy.rs`): a Node that does not exist
    /// is 404, one with no address or an agent that cannot be reached 503. A VM's console is its
    /// running launcher pod's (`vm_launcher`), at the agent's `/vmConsole/{ns}/{pod}/{uid}`.
    async fn node_subresource(&self, info: &RequestInfo, method: &Method, query: Option<&str>, headers: &HeaderMap, conn: &Conn) -> Result<Response, ApiError> {
        let q = parse_query(query);
        let (obj, _) = self.load(info).await?;
        let name = info.name.as_deref().unwrap_or("");
        let sub = info.subresource.as_deref().unwrap_or("");
        if info.resource.kind == "VirtualMachine" {
            let ns = info.namespace.as_deref().unwrap_or("default");
            let (pod, uid, node) = self.vm_launcher(ns, name, &obj, sub == "log").await?;
            let addr = self.agent_of(&node).await?;
            let kubelet = self.kubelet.as_ref().ok_or_else(|| ApiError::new(503, "ServiceUnavailable", "this API server has no client certificate for node agents"))?;
            if sub == "log" {
                // The launcher's log: the VM's captured serial console.
                let mut kq: Vec<(String, String)> = Vec::new();
                for (k, v) in &query_pairs(query) {
                    match k.as_str() {
                        "follow" | "timestamps" if truthy(&q, k) => kq.push((k.clone(), "true".into())),
                        "sinceSeconds" | "sinceTime" | "tailLines" | "limitBytes" => kq.push((k.clone(), v.clone())),
                        _ => {}
                    }
                }
                let path = format!("/containerLogs/{ns}/{pod}/{}?{}", crate::vm::LAUNCHER_CONTAINER, crate::proxy::encode_query(&kq));
                return kubelet.stream(&node, addr, &path).await;
            }
            let upgrade = conn.upgrade.as_ref().and_then(|u| u.lock().ok().and_then(|mut u| u.take()));
            let Some(upgrade) = upgrade else {
                return Err(ApiError::bad_request("Upgrade request required: the console is a WebSocket (GET with Upgrade: websocket)"));
            };
            let path = format!("/vmConsole/{ns}/{pod}/{uid}");
            return kubelet.upgrade(&node, addr, method, &path, headers, upgrade).await;
        }
        let mut container = String::new();
        if info.resource.kind == "Pod" && sub != "portforward" {
            let containers: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
                .iter()
                .flat_map(|k| obj["spec"][*k].as_array().into_iter().flatten())
                .filter_map(|c| c["name"].as_str())
                .collect();
            match q.get("container").filter(|c| !c.is_empty()) {
                Some(c) if !containers.contains(&c.as_str()) => {
                    return Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}")));
                }
                None if obj["spec"]["containers"].as_array().map_or(0, Vec::len) != 1 => {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        containers.join(" ")
                    )));
                }
                Some(c) => container = c.clone(),
                None => container = obj["spec"]["containers"][0]["name"].as_str().unwrap_or("").to_string(),
            }
        }
        let node = [&obj["spec"]["nodeName"], &obj["status"]["nodeName"]].into_iter().find_map(|n| n.as_str().filter(|n| !n.is_empty()));
        let Some(node) = node else {
            return Err(ApiError::bad_request(format!("{} {name} does not have a host assigned", info.resource.singular)));
        };
        let unavailable = |why: String| ApiError::new(503, "ServiceUnavailable", why);
        if info.resource.kind != "Pod" {
            return Err(unavailable(format!("no node agent serves {}/{sub} on node {node} yet", info.resource.plural)));
        }
        let addr = self.agent_of(node).await?;
        let kubelet = self.kubelet.as_ref().ok_or_else(|| unavailable("this API server has no client certificate for node agents".into()))?;
        let ns = info.namespace.as_deref().unwrap_or("default");
        let pairs = query_pairs(query);
        let mut kq: Vec<(String, String)> = Vec::new();
        match sub {
            "log" => {
                for (k, v) in &pairs {
                    match k.as_str() {
                        "follow" | "previous" | "timestamps" if truthy(&q, k) => kq.push((k.clone(), "true".into())),
                        "sinceSeconds" | "sinceTime" | "tailLines" | "limitBytes" => kq.push((k.clone(), v.clone())),
                        _ => {}
                    }
                }
                let path = format!("/containerLogs/{ns}/{name}/{container}?{}", crate::proxy::encode_query(&kq));
                // Over WebSocket (upstream wraps the log stream in binary or base64 messages):
                // the agent answers the upgrade and sends the messages.
                let websocket = headers.get("upgrade").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
                if let Some(upgrade) = conn.upgrade.as_ref().and_then(|u| u.lock().ok().and_then(|mut u| u.take())).filter(|_| websocket) {
                    return kubelet.upgrade(node, addr, method, &path, headers, upgrade).await;
                }
                return kubelet.stream(node, addr, &path).await;
            }
            "exec" | "attach" => {
                for (k, v) in &pairs {
                    match k.as_str() {
                        "command" if sub == "exec" => kq.push(("command".into(), v.clone())),
                        "stdin" if truthy(&q, k) => kq.push(("input".into(), "1".into())),
                        "stdout" if truthy(&q, k) => kq.push(("output".into(), "1".into())),
                        "stderr" if truthy(&q, k) => kq.push(("error".into(), "1".into())),
                        "tty" if truthy(&q, k) => kq.push(("tty".into(), "1".into())),
                        _ => {}
                    }
                }
            }
            _ => {
                for (k, v) in &pairs {
                    if k == "ports" {
                        kq.push(("port".into(), v.clone()));
                    }
                }
            }
        }
        let path = match sub {
            "portforward" => format!("/portForward/{ns}/{name}"),
            _ => format!("/{sub}/{ns}/{name}/{container}"),
        };
        let path = if kq.is_empty() { path } else { format!("{path}?{}", crate::proxy::encode_query(&kq)) };
        let upgrade = conn.upgrade.as_ref().and_then(|u| u.lock().ok().and_then(|mut u| u.take()));
        let Some(upgrade) = upgrade else {
            return Err(ApiError::bad_request("Upgrade request required"));
        };
        kubelet.upgrade(node, addr, method, &path, headers, upgrade).await
    }

    /// `pods/proxy`: an HTTP request to a port of the pod (`pods/NAME[:PORT]/proxy/PATH`),
    /// carried by the agent of the pod's node (its `/podProxy/{ns}/{pod}/{port}/PATH`), which
    /// connects in the pod's network as for port-forward. kube-apiserver dials the pod IP itself;
    /// through the agent, a pod is reached wherever its network is. The name is upstream's
    /// `[scheme:]name[:port]` (`http` or `https`); without a port, the first port a container
    /// declares, else 80. RBAC was checked on `pods/proxy` with the method's verb.
    async fn pod_proxy(&self, info: &RequestInfo, req: Proxied<'_>) -> Result<Response, ApiError> {
        let id = info.name.as_deref().unwrap_or("");
        if info.resource.kind != "Pod" {
            return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
        }
        let (scheme, name, port) = crate::proxy::split_scheme_name_port(id).ok_or_else(|| ApiError::bad_request(format!("invalid pod proxy name {id:?}")))?;
        let target = RequestInfo { resource: info.resource, namespace: info.namespace.clone(), name: Some(name.to_string()), subresource: None };
        let (pod, _) = self.load(&target).await?;
        let port: u16 = match port {
            Some(p) => p.parse().ok().filter(|p| *p > 0).ok_or_else(|| ApiError::bad_request(format!("invalid port in pod proxy name {id:?}")))?,
            None => pod["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|c| c["ports"].as_array()?.first()?["containerPort"].as_u64())
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(80),
        };
        self.proxy_to_pod(info, &pod, (scheme == "https", port), req).await
    }

    /// `services/proxy` (`services/[scheme:]NAME[:PORT]/proxy/PATH`): to one ready endpoint of
    /// the Service, picked as upstream's `ResourceLocation` picks it — the port by name (a number
    /// is first turned into the name of the Service port with that number; none: the unnamed
    /// port), a random subset with that port and ready addresses, a random address in it that
    /// is a pod with that IP — then carried as [`Self::pod_proxy`] to the endpoint's port.
    /// No endpoint: 503 ServiceUnavailable, upstream's message. RBAC was checked on
    /// `services/proxy`.
    async fn service_proxy(&self, info: &RequestInfo, req: Proxied<'_>) -> Result<Response, ApiError> {
        let id = info.name.as_deref().unwrap_or("");
        let (scheme, name, port) = crate::proxy::split_scheme_name_port(id).ok_or_else(|| ApiError::bad_request(format!("invalid service request {id:?}")))?;
        let unavailable = |m: String| ApiError::new(503, "ServiceUnavailable", m);
        let mut port_name = port.unwrap_or("").to_string();
        let at = |resource| RequestInfo { resource, namespace: info.namespace.clone(), name: Some(name.to_string()), subresource: None };
        if let Ok(number) = port_name.parse::<i64>() {
            let (svc, _) = self.load(&at(info.resource)).await?;
            let declared = svc["spec"]["ports"].as_array().into_iter().flatten().find(|p| p["port"].as_i64() == Some(number));
            port_name = declared.map(|p| p["name"].as_str().unwrap_or("").to_string()).ok_or_else(|| unavailable(format!("no service port {number} found for service {name:?}")))?;
        }
        let endpoints_kind = resources::find("", "v1", "endpoints").ok_or_else(|| ApiError::internal("endpoints not registered"))?;
        let endpoints = match self.load(&at(endpoints_kind)).await {
            Ok((e, _)) => e,
            Err(e) if e.code == 404 => Value::Null,
            Err(e) => return Err(e),
        };
        let subsets: Vec<&Value> = endpoints["subsets"].as_array().into_iter().flatten().collect();
        if subsets.is_empty() {
            return Err(unavailable(format!("no endpoints available for service {name:?}")));
        }
        let pods_kind = resources::find("", "v1", "pods").ok_or_else(|| ApiError::internal("pods not registered"))?;
        let start = rand::random::<usize>();
        for i in 0..subsets.len() {
            let subset = subsets[(start + i) % subsets.len()];
            let addresses: Vec<&Value> = subset["addresses"].as_array().into_iter().flatten().collect();
            let Some(endpoint_port) = subset["ports"].as_array().into_iter().flatten().find(|p| p["name"].as_str().unwrap_or("") == port_name) else { continue };
            let Some(target_port) = endpoint_port["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else { continue };
            let first = rand::random::<usize>();
            for j in 0..addresses.len() {
                let a = addresses[(first + j) % addresses.len()];
                // Only addresses that are pods with that IP (upstream's isValidAddress).
                let target = &a["targetRef"];
                if target["kind"] != "Pod" {
                    continue;
                }
                let pod_at = RequestInfo { resource: pods_kind, namespace: target["namespace"].as_str().map(str::to_string).or_else(|| info.namespace.clone()), name: target["name"].as_str().map(str::to_string), subresource: None };
                let Ok((pod, _)) = self.load(&pod_at).await else { continue };
                let ip = a["ip"].as_str().unwrap_or("");
                let has_ip = pod["status"]["podIP"].as_str() == Some(ip) || pod["status"]["podIPs"].as_array().into_iter().flatten().any(|p| p["ip"].as_str() == Some(ip));
                if !has_ip {
                    continue;
                }
                return self.proxy_to_pod(info, &pod, (scheme == "https", target_port), req).await;
            }
        }
        Err(unavailable(format!("no endpoints available for service {id:?}")))
    }

    /// Carry a proxied request to `port` of `pod` (over TLS with `tls`, any certificate
    /// accepted, as upstream's proxy transport) through its node's agent: what follows `/proxy`
    /// in the request's path (trailing slash included), its query, method, headers and body.
    async fn proxy_to_pod(&self, info: &RequestInfo, pod: &Value, (tls, port): (bool, u16), req: Proxied<'_>) -> Result<Response, ApiError> {
        let (ns, name) = (pod["metadata"]["namespace"].as_str().unwrap_or("default"), pod["metadata"]["name"].as_str().unwrap_or(""));
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
        }
        let marker = format!("/{}/proxy", info.name.as_deref().unwrap_or(""));
        // The request's path up to its `/proxy` (the prefix the pod's links go under), and after.
        let split = req.raw_path.find(&marker).map_or(req.raw_path.len(), |i| i + marker.len());
        let (prefix, tail) = req.raw_path.split_at(split);
        if tail.is_empty() && matches!(*req.method, Method::GET | Method::HEAD) {
            // The proxy's root without its slash: upstream's proxy handler redirects there (so
            // that the pod's relative links resolve under the proxy path).
            let query = req.query.filter(|q| !q.is_empty()).map(|q| format!("?{q}")).unwrap_or_default();
            return Ok((StatusCode::MOVED_PERMANENTLY, [(axum::http::header::LOCATION, format!("{}/{query}", req.raw_path))]).into_response());
        }
        let tail = if tail.is_empty() { "/" } else { tail };
        let mut path = format!("/podProxy/{ns}/{name}/{}{port}{tail}", if tls { "https:" } else { "" });
        if let Some(q) = req.query.filter(|q| !q.is_empty()) {
            path = format!("{path}?{q}");
        }
        let addr = self.agent_of(node).await?;
        let kubelet = self.kubelet.as_ref().ok_or_else(|| ApiError::new(503, "ServiceUnavailable", "this API server has no client certificate for node agents"))?;
        let resp = kubelet.forward(node, addr, req.method, &path, req.headers, req.body).await?;
        // The pod's links and redirects are made to point under the proxy path, as upstream's
        // proxy transport rewrites them.
        let ip = pod["status"]["podIP"].as_str().unwrap_or("");
        let pod_host = if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
        Ok(crate::proxy::rewrite_links(resp, &crate::proxy::LinkRewrite { prefix: prefix.to_string(), pod_host }).await)
    }

    /// Where the agent of Node `node` listens: 404 for a Node that does not exist, 503 for one
    /// without an address.
    async fn agent_of(&self, node: &str) -> Result<std::net::SocketAddr, ApiError> {
        let nodes = resources::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("nodes not registered"))?;
        let node_info = RequestInfo { resource: nodes, namespace: None, name: Some(node.to_string()), subresource: None };
        let (node_obj, _) = self.load(&node_info).await?;
        crate::proxy::agent_address(&node_obj)
            .ok_or_else(|| ApiError::new(503, "ServiceUnavailable", format!("node {node} has no InternalIP or ExternalIP address to reach its agent at")))
    }

    /// The running launcher pod of VirtualMachine `ns/name` (`vm`): its name, uid and node. A
    /// VM that is not running (Halted, no launcher, a launcher that is not Running or is being
    /// deleted) is 409 Conflict with why, as KubeVirt answers a console request for a VMI that
    /// is not running. For the log (`log`), a launcher on a node that has not finished will do
    /// (the VM and its log go when its boot ends).
    async fn vm_launcher(&self, ns: &str, name: &str, vm: &Value, log: bool) -> Result<(String, String, String), ApiError> {
        let not_running = |why: String| ApiError::new(409, "Conflict", format!("VirtualMachine {name} is not running: {why}"));
        let strategy = vm["spec"]["runStrategy"].as_str().unwrap_or("Always");
        let printable = vm["status"]["printableStatus"].as_str().unwrap_or("Stopped");
        if strategy == "Halted" {
            return Err(not_running(format!("its runStrategy is Halted (status {printable})")));
        }
        let Some(pod_name) = vm["status"]["launcherPod"].as_str().filter(|p| !p.is_empty()) else {
            return Err(not_running(format!("it has no launcher pod yet (status {printable})")));
        };
        let pods = resources::find("", "v1", "pods").ok_or_else(|| ApiError::internal("pods not registered"))?;
        let pod_info = RequestInfo { resource: pods, namespace: Some(ns.to_string()), name: Some(pod_name.to_string()), subresource: None };
        let pod = match self.load(&pod_info).await {
            Ok((p, _)) => p,
            Err(e) if e.code == 404 => return Err(not_running(format!("its launcher pod {pod_name} is gone (status {printable})"))),
            Err(e) => return Err(e),
        };
        let owned = pod["metadata"]["ownerReferences"].as_array().into_iter().flatten().any(|o| o["controller"] == true && o["uid"] == vm["metadata"]["uid"]);
        if !owned {
            return Err(not_running(format!("pod {pod_name} is not its launcher (status {printable})")));
        }
        if pod["metadata"]["deletionTimestamp"].is_string() && !log {
            return Err(not_running(format!("its launcher pod {pod_name} is being deleted (the VM is powering off)")));
        }
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        if phase != "Running" && !(log && phase == "Pending") {
            let waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str().map(|r| format!(", {r}")).unwrap_or_default();
            return Err(not_running(format!("its launcher pod {pod_name} is {phase}{waiting} (status {printable})")));
        }
        let node = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| not_running(format!("its launcher pod {pod_name} is not scheduled")))?;
        let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
        Ok((pod_name.to_string(), uid.to_string(), node.to_string()))
    }

    /// The `scale` subresource (`autoscaling/v1 Scale`) of Deployments, ReplicaSets and
    /// StatefulSets: read, replace or patch `spec.replicas`.
    #[allow(clippy::too_many_arguments)]
    async fn scale(&self, user: &User, info: &RequestInfo, verb: &str, headers: &HeaderMap, body: &Bytes, dry_run: bool, manager: &str) -> Result<Response, ApiError> {
        let r = info.resource;
        let name = info.name.clone().unwrap_or_default();
        // A write without a resourceVersion (a patch, or an update that leaves it out, as the
        // scale conformance specs do) is tried again from a fresh read when another write came
        // between (upstream's GuaranteedUpdate): only a stale resourceVersion the client sent
        // is a 409.
        for _ in 0..16 {
            let (obj, rev) = self.load(info).await?;
            let current = scale_of(r, &obj, rev);
            let mut wanted = match verb {
                "get" => return Ok(json_response(StatusCode::OK, &current)),
                "update" => parse_body(headers, body)?,
                "patch" => {
                    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").split(';').next().unwrap_or("").trim().to_string();
                    let p: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                    let mut s = current.clone();
                    match ct.as_str() {
                        "application/merge-patch+json" | "application/strategic-merge-patch+json" => patch::merge_patch(&mut s, &p),
                        "application/json-patch+json" => patch::json_patch(&mut s, &p).map_err(ApiError::bad_request)?,
                        other => return Err(ApiError::unsupported_media_type(other)),
                    }
                    s
                }
                _ => return Err(ApiError::method_not_allowed(format!("{verb} is not supported on {}/scale", r.plural))),
            };
            let conditional = wanted["metadata"]["resourceVersion"].as_str().is_some_and(|v| !v.is_empty());
            if let Some(rv) = wanted["metadata"]["resourceVersion"].as_str().filter(|v| !v.is_empty()) {
                if rv != rev.to_string() {
                    return Err(ApiError::conflict(r, &name));
                }
            }
            // Admission sees the Scale (autoscaling/v1), as upstream's scale subresource sends it.
            let warnings = self.admit_other_object(user, info, &mut wanted, Some(&current), dry_run, manager).await?;
            let Some(replicas) = wanted["spec"]["replicas"].as_i64().filter(|n| *n >= 0) else {
                let c = crate::status::Cause { reason: "FieldValueInvalid", field: "spec.replicas".into(), message: format!("Invalid value: {}: must be greater than or equal to 0", wanted["spec"]["replicas"]) };
                return Err(ApiError::invalid(r, &name, vec![c]));
            };
            let mut new = obj.clone();
            match crate::crd::scale_paths(r) {
                Some((spec_path, _, _)) => {
                    crate::crd::set_path(&mut new, &spec_path, json!(replicas));
                    // The custom object with its new replicas must still fit its schema and
                    // its validation rules.
                    crate::validate::validate(r, &mut new)?;
                    crate::validate::validate_update(r, &new, &obj)?;
                }
                None => new["spec"]["replicas"] = json!(replicas),
            }
            object::prepare_update(r, &mut new, &obj, false)?;
            // Recorded on the parent as an update through the scale subresource (upstream's
            // ScaleHandler maps the Scale's spec.replicas to the parent's).
            managed::record_update(r, Some("scale"), Some(&obj), &mut new, manager, &object::now());
            match self.write_update(info, new, &obj, rev, dry_run).await {
                Err(e) if e.reason == "Conflict" && (verb == "patch" || !conditional) => continue,
                Err(e) => return Err(e),
                Ok(_) => {
                    let (obj, rev) = self.load(info).await?;
                    return Ok(with_warnings(json_response(StatusCode::OK, &scale_of(r, &obj, rev)), &warnings));
                }
            }
        }
        Err(ApiError::conflict(r, &name))
    }

    /// A delete, tried again from a fresh read when a concurrent write changed the object
    /// between the read and the write (upstream's `GuaranteedUpdate` and etcd3 conditional
    /// delete do the same): only the request's own preconditions make it a 409. A CRD's
    /// controller writing its status, or a collector its finalizers, no longer fails a plain
    /// delete.
    pub(crate) async fn delete(&self, info: &RequestInfo, opts: &Value, dry_run: bool) -> Result<Response, ApiError> {
        const ATTEMPTS: usize = 16;
        for _ in 1..ATTEMPTS {
            if let Some(done) = self.delete_attempt(info, opts, dry_run).await? {
                return Ok(done);
            }
        }
        match self.delete_attempt(info, opts, dry_run).await? {
            Some(done) => Ok(done),
            None => Err(ApiError::conflict(info.resource, info.name.as_deref().unwrap_or(""))),
        }
    }

    /// One read and one conditional write of [`Api::delete`]; `None` when the write lost a race.
    async fn delete_attempt(&self, info: &RequestInfo, opts: &Value, dry_run: bool) -> Result<Option<Response>, ApiError> {
        let r = info.resource;
        let name = info.name.clone().unwrap_or_default();
        let (mut obj, rev) = self.load(info).await?;
        if let Some(want) = opts["preconditions"]["resourceVersion"].as_str() {
            if want != rev.to_string() {
                return Err(ApiError::conflict(r, &name));
            }
        }
        if let Some(want) = opts["preconditions"]["uid"].as_str() {
            let stored = obj["metadata"]["uid"].as_str().unwrap_or("");
            if stored != want {
                return Err(ApiError::uid_precondition(r, &name, want, stored));
            }
        }
        let key = r.key(info.namespace.as_deref(), &name);
        if let Some(grace) = graceful_pod_delete(r, &obj, opts) {
            return self.delete_gracefully(&key, obj, rev, grace, dry_run).await;
        }
        let is_ns = r.builtin() == "Namespace";
        if r.builtin() == "CustomResourceDefinition" && obj["metadata"]["deletionTimestamp"].is_null() {
            // Its objects go first (the controller in `crate::crd`), then the definition.
            crate::crd::begin_deletion(&mut obj);
        }
        // Garbage collection's finalizers for the propagation policy (the namespace's own
        // cleanup is done here, not by the collector).
        let gc_changed = !is_ns && gc_finalizers(r, &mut obj, opts)?;
        let has_finalizers = obj["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if has_finalizers || is_ns {
            // A graceful deletion under way becomes immediate (the node's confirmation, grace 0,
            // or a forced delete): the last finalizer's removal then deletes the object.
            let shorten = obj["metadata"]["deletionGracePeriodSeconds"].as_i64().is_some_and(|g| g > 0);
            if obj["metadata"]["deletionTimestamp"].is_null() || gc_changed || shorten {
                if obj["metadata"]["deletionTimestamp"].is_null() || shorten {
                    obj["metadata"]["deletionTimestamp"] = json!(object::now());
                    obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                }
                if is_ns {
                    obj["status"]["phase"] = json!("Terminating");
                }
                if dry_run {
                    return Ok(Some(json_response(StatusCode::OK, &obj)));
                }
                let new_rev = match self.store.update(&key, object::storable(&obj)?, rev).await {
                    Ok(n) => n,
                    Err(strata_store::Error::Conflict { .. }) => return Ok(None),
                    Err(e) => return Err(e.into()),
                };
                if is_ns {
                    let store = self.store.clone();
                    tokio::spawn(async move { finalize_namespace(store, name).await });
                }
                return Ok(Some(json_response(StatusCode::OK, &with_rv(obj, new_rev))));
            }
            return Ok(Some(json_response(StatusCode::OK, &with_rv(obj, rev))));
        }
        if dry_run {
            return Ok(Some(json_response(StatusCode::OK, &with_rv(obj, rev))));
        }
        match self.store.delete(&key, rev).await {
            Ok(_) => {
                let uid = obj["metadata"]["uid"].clone();
                let mut d = json!({ "name": name, "kind": r.plural, "uid": uid });
                if !r.group.is_empty() {
                    d["group"] = json!(r.group);
                }
                Ok(Some(json_response(StatusCode::OK, &status::success(Some(d)))))
            }
            Err(strata_store::Error::Conflict { .. }) => Ok(None),
            Err(strata_store::Error::NotFound(_)) => Err(ApiError::not_found(r, &name)),
            Err(e) => Err(e.into()),
        }
    }

    /// Mark a pod deleted with `grace` seconds to go (kube-apiserver's graceful deletion): its
    /// node's agent stops it and then deletes it with grace 0. A grace period only ever
    /// shortens: a later delete with a longer one changes nothing.
    /// `None` when the write lost a race (see [`Api::delete`]).
    async fn delete_gracefully(&self, key: &str, mut obj: Value, rev: u64, grace: i64, dry_run: bool) -> Result<Option<Response>, ApiError> {
        let current = obj["metadata"]["deletionGracePeriodSeconds"].as_i64();
        if obj["metadata"]["deletionTimestamp"].is_string() && current.is_some_and(|c| c <= grace) {
            return Ok(Some(json_response(StatusCode::OK, &with_rv(obj, rev))));
        }
        let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
        obj["metadata"]["deletionTimestamp"] = json!(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        if dry_run {
            return Ok(Some(json_response(StatusCode::OK, &obj)));
        }
        match self.store.update(key, object::storable(&obj)?, rev).await {
            Ok(new_rev) => Ok(Some(json_response(StatusCode::OK, &with_rv(obj, new_rev)))),
            Err(strata_store::Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Each selected object is deleted as a DELETE of its own (admission webhooks included: the
    /// first refusal ends the collection's deletion with that error, as upstream's does).
    async fn delete_collection(&self, user: &User, info: &RequestInfo, q: &Query, dry_run: bool) -> Result<Response, ApiError> {
        let r = info.resource;
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or("")).map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse_for(r, &crate::convert::field_selector(r, q.get("fieldSelector").map(String::as_str).unwrap_or(""))).map_err(ApiError::bad_request)?;
        let page = self.store.list(&r.list_prefix(info.namespace.as_deref()), None, 0).await?;
        let mut items = Vec::new();
        for kv in page.items {
            let v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            if !(labels.matches(&v) && fields.matches(&v)) {
                continue;
            }
            if !dry_run {
                let one = RequestInfo { resource: r, namespace: v["metadata"]["namespace"].as_str().map(str::to_string), name: Some(name_of(&v).to_string()), subresource: None };
                match self.admit_delete(user, &one, &json!({}), false).await {
                    Err(e) if e.code != 404 => return Err(e),
                    _ => {}
                }
                let _ = self.delete(&one, &json!({}), false).await;
            }
            items.push(with_rv(v, kv.mod_revision));
        }
        let list = json!({ "kind": format!("{}List", r.kind), "apiVersion": r.api_version(), "metadata": { "resourceVersion": page.revision.to_string() }, "items": items });
        Ok(json_response(StatusCode::OK, &list))
    }
}

/// The options object of a pod's CONNECT request, from its query (what upstream decodes into
/// PodExecOptions, PodAttachOptions or PodPortForwardOptions).
fn connect_options(sub: &str, pairs: &[(String, String)]) -> Value {
    let kind = match sub {
        "exec" => "PodExecOptions",
        "attach" => "PodAttachOptions",
        _ => "PodPortForwardOptions",
    };
    let mut o = json!({ "kind": kind, "apiVersion": "v1" });
    for (k, v) in pairs {
        match (sub, k.as_str()) {
            ("exec" | "attach", "stdin" | "stdout" | "stderr" | "tty") => o[k.as_str()] = json!(matches!(v.as_str(), "true" | "1")),
            ("exec" | "attach", "container") => o["container"] = json!(v),
            ("exec", "command") => match o["command"].as_array_mut() {
                Some(c) => c.push(json!(v)),
                None => o["command"] = json!([v]),
            },
            ("portforward", "ports") => {
                let port = v.parse::<i64>().map(|p| json!(p)).unwrap_or_else(|_| json!(v));
                match o["ports"].as_array_mut() {
                    Some(p) => p.push(port),
                    None => o["ports"] = json!([port]),
                }
            }
            _ => {}
        }
    }
    o
}

/// The grace period of deleting `obj` when that is graceful (kube-apiserver's pod strategy,
/// `CheckGracefulDelete`): a pod bound to a node that has not finished, with the request's
/// `gracePeriodSeconds`, else its `terminationGracePeriodSeconds`, else 30 (a negative one
/// counts as 1). `None`: delete at once (grace 0, an unbound or finished pod, other kinds).
fn graceful_pod_delete(r: &Resource, obj: &Value, opts: &Value) -> Option<i64> {
    if r.kind != "Pod" || !r.group.is_empty() {
        return None;
    }
    let bound = obj["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    let finished = matches!(obj["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
    if !bound || finished {
        return None;
    }
    let grace = opts["gracePeriodSeconds"].as_i64().or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64()).unwrap_or(30);
    match grace {
        0 => None,
        g if g < 0 => Some(1),
        g => Some(g),
    }
}

/// Apply a delete's propagation policy (`propagationPolicy`, or the legacy `orphanDependents`)
/// to the object's finalizers as upstream's `deletionFinalizersForGarbageCollection` does:
/// `Orphan` adds `orphan`, `Foreground` adds `foregroundDeletion`, `Background` removes both.
/// Without either option a GC finalizer the object already has decides, else the kind's
/// default (`DefaultGarbageCollectionPolicy`): `Orphan` for core/v1 ReplicationControllers and
/// batch/v1 Jobs (kept for backward compatibility upstream), `Background` for every other kind;
/// Events have none (`Unsupported`: no finalizer whatever the options). Returns whether the
/// finalizers changed.
fn gc_finalizers(r: &Resource, obj: &mut Value, opts: &Value) -> Result<bool, ApiError> {
    const ORPHAN: &str = "orphan";
    const FOREGROUND: &str = "foregroundDeletion";
    if r.builtin() == "Event" {
        return Ok(false);
    }
    let has_gc_finalizer = obj["metadata"]["finalizers"].as_array().is_some_and(|f| f.iter().any(|x| x == ORPHAN || x == FOREGROUND));
    let orphan_by_default = matches!((r.group, r.version, r.builtin()), ("", "v1", "ReplicationController") | ("batch", "v1", "Job"));
    let policy = match (opts["propagationPolicy"].as_str(), opts["orphanDependents"].as_bool()) {
        (Some(_), Some(_)) => {
            let c = Cause { reason: "FieldValueInvalid", field: "propagationPolicy".into(), message: "Invalid value: \"null\": orphanDependents and deletionPropagation cannot be both set".into() };
            return Err(ApiError::invalid_kind("meta.k8s.io", "DeleteOptions", "", vec![c]));
        }
        (Some(p @ ("Orphan" | "Foreground" | "Background")), None) => Some(p),
        (Some(p), None) => {
            let c = Cause { reason: "FieldValueNotSupported", field: "propagationPolicy".into(), message: format!("Unsupported value: {:?}: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"", p) };
            return Err(ApiError::invalid_kind("meta.k8s.io", "DeleteOptions", "", vec![c]));
        }
        (None, Some(true)) => Some("Orphan"),
        (None, Some(false)) => Some("Background"),
        (None, None) if orphan_by_default && !has_gc_finalizer => Some("Orphan"),
        (None, None) => None,
    };
    let Some(policy) = policy else { return Ok(false) };
    let before = obj["metadata"]["finalizers"].clone();
    let mut f: Vec<String> = before.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default();
    let (add, remove): (Option<&str>, &[&str]) = match policy {
        "Orphan" => (Some(ORPHAN), &[FOREGROUND]),
        "Foreground" => (Some(FOREGROUND), &[ORPHAN]),
        _ => (None, &[ORPHAN, FOREGROUND]),
    };
    f.retain(|x| !remove.contains(&x.as_str()));
    if let Some(a) = add {
        if !f.iter().any(|x| x == a) {
            f.push(a.to_string());
        }
    }
    let after = if f.is_empty() && before.is_null() { Value::Null } else { json!(f) };
    if after == before {
        return Ok(false);
    }
    if f.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        obj["metadata"]["finalizers"] = after;
    }
    Ok(true)
}

/// Do two versions of an object differ in nothing but the fields garbage collection changes
/// (upstream's `IsOnlyMutatingGCFields`: owner references and finalizers; bookkeeping that
/// the server itself writes is ignored too)?
/// The pod's PodScheduled condition becomes True (upstream's `UpdatePodCondition`: the
/// transition time moves only when the status changes; reason and message are cleared).
/// A list's metadata: its revision and, when keys follow the page, the continue token from the
/// last key and the count of the keys after it (`remaining`, given only for unfiltered lists).
/// One object as the negotiated transform serves it.
fn object_as(r: &Resource, transform: Transform, mut obj: Value) -> Result<Value, ApiError> {
    Ok(match transform {
        Transform::None => obj,
        Transform::Table(v) => {
            let rv = obj["metadata"]["resourceVersion"].clone();
            output::table_in(table::for_resource(r, &[obj], json!({ "resourceVersion": rv })), v)
        }
        Transform::Partial(v) => output::partial(obj.get_mut("metadata").map(Value::take).unwrap_or_else(|| json!({})), v),
        Transform::PartialList(_) => return Err(output::object_as_list(r)),
    })
}

/// A list of `r` as the negotiated transform serves it.
fn list_as(r: &Resource, transform: Transform, items: Vec<Value>, meta: Value) -> Result<Value, ApiError> {
    Ok(match transform {
        Transform::None => {
            let list_kind = crate::crd::definition(r).map(|d| d.list_kind.clone()).unwrap_or_else(|| format!("{}List", r.kind));
            json!({ "kind": list_kind, "apiVersion": r.api_version(), "metadata": meta, "items": items })
        }
        Transform::Table(v) => output::table_in(table::for_resource(r, &items, meta), v),
        Transform::PartialList(v) => output::partial_list(items, meta, v),
        Transform::Partial(_) => return Err(output::list_as_object(r)),
    })
}

/// A written object's (or deleted collection's) answer as the negotiated transform serves it.
/// A Status (a deletion that finished, a refused eviction) is not transformed, as upstream's
/// `transformObject` leaves it alone.
async fn transformed(resp: Response, r: &Resource, transform: Transform) -> Result<Response, ApiError> {
    if transform == Transform::None {
        return Ok(resp);
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| ApiError::internal(format!("reading the answer: {e}")))?;
    let v = match serde_json::from_slice::<Value>(&bytes) {
        Ok(v) if v.is_object() && v["kind"] != "Status" => v,
        _ => return Ok(Response::from_parts(parts, Body::from(bytes))),
    };
    let out = match v {
        Value::Object(mut m) if m.get("items").is_some_and(Value::is_array) && m.get("kind").and_then(Value::as_str).is_some_and(|k| k.ends_with("List")) => {
            let items = match m.remove("items") {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            };
            list_as(r, transform, items, m.remove("metadata").unwrap_or_else(|| json!({})))?
        }
        v => object_as(r, transform, v)?,
    };
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
    Ok(Response::from_parts(parts, Body::from(object::to_json(&out))))
}

/// `Some(name)` of a path to the ComponentStatuses (`Some(None)`: the collection).
fn component_status_path(path: &str) -> Option<Option<&str>> {
    let rest = path.strip_prefix("/api/v1/componentstatuses")?;
    match rest.strip_prefix('/') {
        None if rest.is_empty() => Some(None),
        Some(name) if !name.is_empty() && !name.contains('/') => Some(Some(name)),
        _ => None,
    }
}

fn list_meta(prefix: &str, rev: u64, next: Option<&str>, remaining: Option<u64>) -> Value {
    let mut meta = json!({ "resourceVersion": rev.to_string() });
    if let Some(k) = next {
        meta["continue"] = json!(rv::encode_continue(prefix, k, rev));
        if let Some(n) = remaining {
            meta["remainingItemCount"] = json!(n);
        }
    }
    meta
}

fn only_gc_fields_differ(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            for k in ["ownerReferences", "finalizers", "managedFields", "resourceVersion", "generation"] {
                m.remove(k);
            }
        }
        v
    };
    strip(old) == strip(new)
}

/// The `autoscaling/v1 Scale` of an object: a custom kind's from its definition's
/// `specReplicasPath`, `statusReplicasPath` and `labelSelectorPath` (missing replicas are 0, as
/// upstream), a built-in kind's from `spec.replicas` and its selector.
fn scale_of(r: &Resource, obj: &Value, rev: u64) -> Value {
    let Some((spec_path, status_path, selector_path)) = crate::crd::scale_paths(r) else { return to_scale(obj, rev) };
    let at = |p: &[String]| {
        let mut v = obj;
        for f in p {
            v = &v[f.as_str()];
        }
        v
    };
    let selector = selector_path.as_deref().map(at).and_then(Value::as_str).unwrap_or("");
    scale_json(obj, rev, at(&spec_path).as_i64().unwrap_or(0), at(&status_path).as_i64().unwrap_or(0), selector)
}

fn to_scale(obj: &Value, rev: u64) -> Value {
    // A ReplicationController's selector is the map itself.
    let labels = if obj["kind"] == "ReplicationController" { &obj["spec"]["selector"] } else { &obj["spec"]["selector"]["matchLabels"] };
    let selector = labels
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    scale_json(obj, rev, obj["spec"]["replicas"].as_i64().unwrap_or(1), obj["status"]["replicas"].as_i64().unwrap_or(0), &selector)
}

/// The `autoscaling/v1 Scale` of `obj` at revision `rev`.
fn scale_json(obj: &Value, rev: u64, replicas: i64, status_replicas: i64, selector: &str) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"], "uid": obj["metadata"]["uid"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"], "resourceVersion": rev.to_string(),
        },
        "spec": { "replicas": replicas },
        "status": { "replicas": status_replicas, "selector": selector },
    })
}

/// Delete everything in a terminating namespace, then the namespace itself.
async fn finalize_namespace(store: Arc<dyn Store>, ns: String) {
    // A store error (etcd busy or briefly away) must not leave the namespace Terminating for
    // good: the pass is repeated, with a growing pause, until it gets through.
    let mut pause = Duration::from_millis(100);
    for _ in 0..20 {
        let mut failed = false;
        for r in resources::served().into_iter().filter(|r| r.namespaced) {
            let page = match store.list(&r.list_prefix(Some(&ns)), None, 0).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(namespace = %ns, resource = r.plural, error = %e, "namespace cleanup: list");
                    failed = true;
                    continue;
                }
            };
            for kv in page.items {
                match store.delete(&kv.key, 0).await {
                    Ok(_) | Err(strata_store::Error::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(key = %kv.key, error = %e, "namespace cleanup");
                        failed = true;
                    }
                }
            }
        }
        if !failed {
            if let Some(nsr) = resources::find("", "v1", "namespaces") {
                match store.delete(&nsr.key(None, &ns), 0).await {
                    Ok(_) | Err(strata_store::Error::NotFound(_)) => return,
                    Err(e) => tracing::warn!(namespace = %ns, error = %e, "namespace cleanup: the namespace"),
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
    tracing::error!(namespace = %ns, "namespace cleanup gave up; the namespace stays Terminating");
}

/// Add a `Warning` header (RFC 7234 code 299, as Kubernetes sends) per message.
fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let v = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(h) = axum::http::HeaderValue::from_str(&v) {
            resp.headers_mut().append("warning", h);
        }
    }
    resp
}

/// The fields a JSON request body repeats (see [`crate::fields::duplicate_fields`]); not looked
/// for when the request ignores field problems or the body is not JSON.
fn body_duplicates(headers: &HeaderMap, body: &Bytes, fv: FieldValidation) -> Vec<String> {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let base = ct.split(';').next().unwrap_or("").trim();
    if fv == FieldValidation::Ignore || !matches!(base, "application/json" | "" | "*/*") {
        return Vec::new();
    }
    crate::fields::duplicate_fields(body)
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let ct = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    let base = ct.split(';').next().unwrap_or("").trim();
    if base == crate::protobuf::CONTENT_TYPE {
        return Ok(crate::protobuf::decode(body)?);
    }
    if base == "application/yaml" {
        return decode_yaml(body);
    }
    if !matches!(base, "application/json" | "" | "*/*") {
        return Err(ApiError::unsupported_media_type(ct));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("the request body could not be decoded as JSON: {e}")))
}

/// One YAML document as an object (JSON is YAML too), decoded within [`crate::yaml`]'s bounds.
/// Several documents, excessive aliasing, nesting beyond the limit or YAML that does not parse
/// is a 400 that says why, as kube-apiserver's YAML serializer answers.
fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    crate::yaml::decode(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// Does the client ask for YAML before JSON (`Accept: application/yaml`, as `curl` users and
/// some tools send)? The first listed media type decides, as upstream's negotiation does for
/// equal weights.
fn wants_yaml(accept: &str) -> bool {
    accept.split(',').next().and_then(|t| t.split(';').next()).is_some_and(|t| t.trim() == "application/yaml")
}

/// A complete JSON response re-encoded as YAML. Streams (watches, logs) are left alone: their
/// length is not known up front.
async fn as_yaml(resp: Response) -> Response {
    use hyper::body::Body as _;
    let is_json = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with("application/json"));
    if !is_json || resp.body().size_hint().exact().is_none() {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "reading the response").into_response();
    };
    let yaml = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| serde_yaml_ng::to_string(&v).ok());
    match yaml {
        Some(text) => {
            parts.headers.insert("content-type", axum::http::HeaderValue::from_static("application/yaml"));
            parts.headers.remove("content-length");
            Response::from_parts(parts, axum::body::Body::from(text))
        }
        None => Response::from_parts(parts, axum::body::Body::from(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let i = parse_path("/api/v1/namespaces/default/configmaps/x").expect("ok").expect("res");
        assert_eq!((i.resource.plural, i.namespace.as_deref(), i.name.as_deref()), ("configmaps", Some("default"), Some("x")));
        let i = parse_path("/api/v1/namespaces/kube-system").expect("ok").expect("res");
        assert_eq!((i.resource.plural, i.name.as_deref()), ("namespaces", Some("kube-system")));
        let i = parse_path("/api/v1/namespaces/x/status").expect("ok").expect("res");
        assert_eq!((i.resource.plural, i.name.as_deref(), i.subresource.as_deref()), ("namespaces", Some("x"), Some("status")));
        let i = parse_path("/apis/apps/v1/namespaces/d/deployments/web/scale").expect("ok").expect("res");
        assert_eq!(i.subresource.as_deref(), Some("scale"));
        let i = parse_path("/apis/apps/v1/deployments").expect("ok").expect("res");
        assert!(i.namespace.is_none() && i.name.is_none());
        assert!(parse_path("/api/v1/nothings").is_err());
        assert!(parse_path("/version").expect("ok").is_none());
        assert_eq!(parse_query(Some("labelSelector=app%3Dweb&watch=1"))["labelSelector"], "app=web");
    }

    use strata_store::{Compare, KeyValue, ListResult, Op, WatchStream};

    /// A real store in which another writer rewrites `key` just before each of this server's
    /// next `races` conditional writes of it: the window between a delete's read and its write,
    /// made certain.
    struct Racing {
        inner: Arc<dyn Store>,
        key: String,
        races: std::sync::atomic::AtomicUsize,
    }

    impl Racing {
        async fn interfere(&self, key: &str) {
            use std::sync::atomic::Ordering;
            if key == self.key && self.races.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                let kv = self.inner.get(key).await.expect("get").expect("the raced object");
                let mut v: Value = serde_json::from_slice(&kv.value).expect("json");
                let n = v["metadata"]["labels"]["writes"].as_str().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) + 1;
                v["metadata"]["labels"]["writes"] = json!(n.to_string());
                self.inner.update(key, serde_json::to_vec(&v).expect("json"), kv.mod_revision).await.expect("the other writer");
            }
        }
    }

    #[async_trait::async_trait]
    impl Store for Racing {
        async fn get(&self, key: &str) -> strata_store::Result<Option<KeyValue>> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> strata_store::Result<ListResult> {
            self.inner.list(prefix, start_after, limit).await
        }
        async fn list_at(&self, prefix: &str, revision: u64, start_after: Option<&str>, limit: usize) -> strata_store::Result<ListResult> {
            self.inner.list_at(prefix, revision, start_after, limit).await
        }
        async fn count(&self, prefix: &str) -> strata_store::Result<u64> {
            self.inner.count(prefix).await
        }
        async fn create(&self, key: &str, value: Vec<u8>) -> strata_store::Result<u64> {
            self.inner.create(key, value).await
        }
        async fn update(&self, key: &str, value: Vec<u8>, expected: u64) -> strata_store::Result<u64> {
            self.interfere(key).await;
            self.inner.update(key, value, expected).await
        }
        async fn delete(&self, key: &str, expected: u64) -> strata_store::Result<KeyValue> {
            self.interfere(key).await;
            self.inner.delete(key, expected).await
        }
        async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> strata_store::Result<u64> {
            self.inner.txn(compares, ops).await
        }
        async fn watch(&self, prefix: &str, after: u64) -> strata_store::Result<WatchStream> {
            self.inner.watch(prefix, after).await
        }
        async fn revision(&self) -> strata_store::Result<u64> {
            self.inner.revision().await
        }
        async fn compact(&self, revision: u64) -> strata_store::Result<()> {
            self.inner.compact(revision).await
        }
        async fn stale(&self, key: &str) -> strata_store::Result<bool> {
            self.inner.stale(key).await
        }
    }

    /// A real store that counts its reads and whose watch drops every event while `deaf`: a
    /// watch cache over it is left behind the store, as a slow watch leaves one.
    #[derive(Default)]
    struct Lagging {
        inner: Option<Arc<dyn Store>>,
        gets: std::sync::atomic::AtomicUsize,
        deaf: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Lagging {
        fn inner(&self) -> &dyn Store {
            self.inner.as_deref().expect("a store")
        }
    }

    #[async_trait::async_trait]
    impl Store for Lagging {
        async fn get(&self, key: &str) -> strata_store::Result<Option<KeyValue>> {
            self.gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner().get(key).await
        }
        async fn list(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> strata_store::Result<ListResult> {
            self.inner().list(prefix, start_after, limit).await
        }
        async fn list_at(&self, prefix: &str, revision: u64, start_after: Option<&str>, limit: usize) -> strata_store::Result<ListResult> {
            self.inner().list_at(prefix, revision, start_after, limit).await
        }
        async fn count(&self, prefix: &str) -> strata_store::Result<u64> {
            self.inner().count(prefix).await
        }
        async fn create(&self, key: &str, value: Vec<u8>) -> strata_store::Result<u64> {
            self.inner().create(key, value).await
        }
        async fn update(&self, key: &str, value: Vec<u8>, expected: u64) -> strata_store::Result<u64> {
            self.inner().update(key, value, expected).await
        }
        async fn delete(&self, key: &str, expected: u64) -> strata_store::Result<KeyValue> {
            self.inner().delete(key, expected).await
        }
        async fn txn(&self, compares: Vec<Compare>, ops: Vec<Op>) -> strata_store::Result<u64> {
            self.inner().txn(compares, ops).await
        }
        async fn watch(&self, prefix: &str, after: u64) -> strata_store::Result<WatchStream> {
            use futures_util::StreamExt;
            let deaf = self.deaf.clone();
            let events = self.inner().watch(prefix, after).await?;
            Ok(events.filter(move |_| std::future::ready(!deaf.load(std::sync::atomic::Ordering::SeqCst))).boxed())
        }
        async fn revision(&self) -> strata_store::Result<u64> {
            self.inner().revision().await
        }
        async fn compact(&self, revision: u64) -> strata_store::Result<()> {
            self.inner().compact(revision).await
        }
        async fn stale(&self, key: &str) -> strata_store::Result<bool> {
            self.inner().stale(key).await
        }
    }

    fn api_over(store: Arc<dyn Store>) -> Api {
        Api {
            cache: crate::watchcache::WatchCache::start(store.clone(), crate::watchcache::Config::default()),
            store,
            authz: Authorizer::default(),
            authn: crate::auth::Authenticator { tokens: Default::default(), signer: None, bootstrap: None },
            long_running: Arc::new(tokio::sync::Semaphore::new(1)),
            kubelet: None,
            default_tolerations: Default::default(),
            service_account_admission: false,
            created_fields: Default::default(),
            started: Default::default(),
        }
    }

    /// A delete without preconditions whose object another writer changes between the delete's
    /// read and its write goes through, as upstream's (the CRD controller's status write made
    /// conformance's CRD deletes fail with 409); a stale precondition is still a 409.
    #[tokio::test]
    async fn deletes_are_retried_when_a_concurrent_write_wins_the_race() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn Store> = Arc::new(strata_store::embedded::Embedded::open(&dir.path().join("s.redb")).expect("store"));
        let cms = crate::resources::find("", "v1", "configmaps").expect("configmaps");
        let info = |name: &str| RequestInfo { resource: cms, namespace: Some("default".into()), name: Some(name.into()), subresource: None };
        let racing = |key: &str, races: usize| Arc::new(Racing { inner: inner.clone(), key: key.into(), races: races.into() });
        let put = |name: &str, finalizers: Value| {
            let key = cms.key(Some("default"), name);
            let obj = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name, "namespace": "default", "uid": name, "finalizers": finalizers } });
            let inner = inner.clone();
            async move { inner.create(&key, serde_json::to_vec(&obj).expect("json")).await.expect("create") }
        };

        // Plain delete: the write that follows the race removes the object.
        put("plain", json!([])).await;
        let api = api_over(racing(&cms.key(Some("default"), "plain"), 2));
        let resp = api.delete(&info("plain"), &json!({}), false).await.expect("the delete goes through");
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(inner.get(&cms.key(Some("default"), "plain")).await.expect("get").is_none(), "deleted");

        // With a finalizer the delete is an update (deletionTimestamp) and keeps the other write.
        put("held", json!(["example.com/hold"])).await;
        let api = api_over(racing(&cms.key(Some("default"), "held"), 3));
        let resp = api.delete(&info("held"), &json!({}), false).await.expect("the delete goes through");
        assert_eq!(resp.status(), StatusCode::OK);
        let kv = inner.get(&cms.key(Some("default"), "held")).await.expect("get").expect("held by its finalizer");
        let v: Value = serde_json::from_slice(&kv.value).expect("json");
        assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
        assert_eq!(v["metadata"]["labels"]["writes"], "3", "the other writer's changes are kept: {v}");

        // A precondition the object no longer meets is the client's conflict: no retry.
        put("pre", json!([])).await;
        let rev = inner.get(&cms.key(Some("default"), "pre")).await.expect("get").expect("kv").mod_revision;
        let api = api_over(racing(&cms.key(Some("default"), "pre"), 1));
        let opts = json!({ "preconditions": { "resourceVersion": rev.to_string() } });
        let e = api.delete(&info("pre"), &opts, false).await.expect_err("the object changed after the client read it");
        assert_eq!((e.code, e.reason), (409, "Conflict"));
        assert!(inner.get(&cms.key(Some("default"), "pre")).await.expect("get").is_some(), "not deleted");

        // A writer that always wins makes a bounded number of attempts, then a 409.
        put("busy", json!([])).await;
        let api = api_over(racing(&cms.key(Some("default"), "busy"), usize::MAX));
        let e = api.delete(&info("busy"), &json!({}), false).await.expect_err("never wins");
        assert_eq!(e.code, 409);
    }

    /// A binding takes the pod from the watch cache (no read of the store); when the cache is
    /// behind, whatever it would refuse is decided again on the store's copy, and a write
    /// based on it fails its revision check and is made again from the store.
    #[tokio::test]
    async fn bindings_read_the_cached_pod_and_the_store_when_the_cache_is_behind() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().expect("tempdir");
        let inner: Arc<dyn Store> = Arc::new(strata_store::embedded::Embedded::open(&dir.path().join("s.redb")).expect("store"));
        let store = Arc::new(Lagging { inner: Some(inner.clone()), ..Default::default() });
        let api = api_over(store.clone());
        let pods = crate::resources::find("", "v1", "pods").expect("pods");
        let key = |name: &str| pods.key(Some("default"), name);
        let info = |name: &str| RequestInfo { resource: pods, namespace: Some("default".into()), name: Some(name.into()), subresource: Some("binding".into()) };
        let pod = |name: &str, uid: &str, node: Option<&str>| {
            let mut spec = json!({ "containers": [{ "image": "i", "name": "c" }] });
            if let Some(n) = node {
                spec["nodeName"] = json!(n);
            }
            serde_json::to_vec(&json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "namespace": "default", "uid": uid }, "spec": spec })).expect("json")
        };
        let binding = |name: &str, uid: &str, node: &str| json!({ "metadata": { "name": name, "uid": uid }, "target": { "kind": "Node", "name": node } });
        let stored = |name: &str| {
            let (inner, key) = (inner.clone(), key(name));
            async move {
                let kv = inner.get(&key).await.expect("get").expect("stored");
                serde_json::from_slice::<Value>(&kv.value).expect("json")
            }
        };
        for name in ["fresh", "recreated", "bound", "gone"] {
            inner.create(&key(name), pod(name, "u1", None)).await.expect("create");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ["fresh", "recreated", "bound", "gone"].iter().any(|n| api.cache.stored(&key(n)).is_none()) {
            assert!(std::time::Instant::now() < deadline, "the cache never held the pods");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // The cache is current: the binding is written without reading the store.
        let gets = store.gets.load(Ordering::SeqCst);
        let resp = api.bind(&info("fresh"), binding("fresh", "u1", "n1"), false).await.expect("bound");
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(store.gets.load(Ordering::SeqCst), gets, "no read of the store");
        let v = stored("fresh").await;
        assert_eq!((v["spec"]["nodeName"].as_str(), v["metadata"]["uid"].as_str()), (Some("n1"), Some("u1")), "{v}");
        assert_eq!(v["status"]["conditions"][0]["type"], "PodScheduled", "{v}");
        assert!(v["metadata"]["resourceVersion"].is_null(), "the stored form has none: {v}");

        // From now on the cache hears nothing.
        store.deaf.store(true, Ordering::SeqCst);
        // Deleted and made again with another uid: the cache's copy has the old uid.
        let rev = inner.get(&key("recreated")).await.expect("get").expect("kv").mod_revision;
        inner.delete(&key("recreated"), rev).await.expect("delete");
        inner.create(&key("recreated"), pod("recreated", "u2", None)).await.expect("create");
        api.bind(&info("recreated"), binding("recreated", "u2", "n2"), false).await.expect("bound to the pod the store holds");
        let v = stored("recreated").await;
        assert_eq!((v["spec"]["nodeName"].as_str(), v["metadata"]["uid"].as_str()), (Some("n2"), Some("u2")), "{v}");
        // Bound meanwhile: the cache's copy is unbound, the store's refuses.
        let rev = inner.get(&key("bound")).await.expect("get").expect("kv").mod_revision;
        inner.update(&key("bound"), pod("bound", "u1", Some("x")), rev).await.expect("update");
        let e = api.bind(&info("bound"), binding("bound", "u1", "n3"), false).await.expect_err("assigned already");
        assert_eq!(e.code, 409);
        assert!(e.message.contains("already assigned to node \"x\""), "{}", e.message);
        assert_eq!(stored("bound").await["spec"]["nodeName"], "x");
        // Deleted meanwhile: not found, nothing written.
        let rev = inner.get(&key("gone")).await.expect("get").expect("kv").mod_revision;
        inner.delete(&key("gone"), rev).await.expect("delete");
        let e = api.bind(&info("gone"), binding("gone", "u1", "n4"), false).await.expect_err("gone");
        assert_eq!(e.code, 404);
        assert!(inner.get(&key("gone")).await.expect("get").is_none(), "nothing written");
    }
}
