//! Errors as Kubernetes `metav1.Status` objects: the one place error classes become HTTP
//! codes and `reason`s, with the messages kubectl and client libraries show.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::resources::Resource;

/// An API error, rendered as a `Status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// The Status's `metadata` (a `continue` token for an expired one).
    pub metadata: Option<Value>,
}

/// One field problem of an `Invalid` error.
#[derive(Debug, Clone)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

/// The field errors of upstream's `field.ErrorList`, with its messages.
impl Cause {
    /// `field.Invalid`: `Invalid value: VALUE: why`.
    pub fn invalid(field: &str, value: &serde_json::Value, why: &str) -> Cause {
        Cause { reason: "FieldValueInvalid", field: field.into(), message: format!("Invalid value: {value}: {why}") }
    }

    /// `field.Required`: `Required value` and the detail, if any.
    pub fn required(field: &str, detail: &str) -> Cause {
        let message = if detail.is_empty() { "Required value".to_string() } else { format!("Required value: {detail}") };
        Cause { reason: "FieldValueRequired", field: field.into(), message }
    }

    /// `field.Forbidden`: `Forbidden: why`.
    pub fn forbidden(field: &str, why: &str) -> Cause {
        Cause { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {why}") }
    }

    /// `field.Duplicate`: `Duplicate value: VALUE`.
    pub fn duplicate(field: &str, value: &serde_json::Value) -> Cause {
        Cause { reason: "FieldValueDuplicate", field: field.into(), message: format!("Duplicate value: {value}") }
    }

    /// `field.NotSupported`: the value and the supported ones, quoted.
    pub fn not_supported(field: &str, value: &serde_json::Value, supported: &[&str]) -> Cause {
        let list = supported.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
        Cause { reason: "FieldValueNotSupported", field: field.into(), message: format!("Unsupported value: {value}: supported values: {list}") }
    }
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self { code, reason, message: message.into(), details: None, metadata: None }
    }

    fn with_details(mut self, r: &Resource, name: &str) -> Self {
        let mut d = json!({ "name": name, "kind": r.plural });
        if !r.group.is_empty() {
            d["group"] = json!(r.group);
        }
        self.details = Some(d);
        self
    }

    pub fn not_found(r: &Resource, name: &str) -> Self {
        Self::new(404, "NotFound", format!("{} \"{name}\" not found", r.group_resource())).with_details(r, name)
    }

    pub fn already_exists(r: &Resource, name: &str) -> Self {
        Self::new(409, "AlreadyExists", format!("{} \"{name}\" already exists", r.group_resource())).with_details(r, name)
    }

    pub fn conflict(r: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                r.group_resource()
            ),
        )
        .with_details(r, name)
    }

    /// A request whose UID precondition (DeleteOptions' `preconditions.uid`, or the
    /// `metadata.uid` of an update's body) is not the stored object's: 409, upstream's message.
    pub fn uid_precondition(r: &Resource, name: &str, wanted: &str, stored: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {wanted}, UID in object meta: {stored}", r.group_resource()),
        )
        .with_details(r, name)
    }

    pub fn invalid(r: &Resource, name: &str, causes: Vec<Cause>) -> Self {
        Self::invalid_kind(r.group, r.kind, name, causes)
    }

    /// `Invalid` for any group and kind (`ListOptions.meta.k8s.io`, ...). Values echoed in the
    /// name and the causes are bounded ([`bounded`]): a 3 MB invalid object gets a small error.
    pub fn invalid_kind(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let name = &bounded(name, MAX_ECHOED_NAME);
        let causes: Vec<Cause> = causes.into_iter().take(MAX_CAUSES).map(|c| Cause { message: bounded(&c.message, MAX_CAUSE), ..c }).collect();
        let summary: Vec<String> = causes.iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        let qualified = if group.is_empty() { kind.to_string() } else { format!("{kind}.{group}") };
        let message = if summary.len() == 1 {
            format!("{qualified} \"{name}\" is invalid: {}", summary[0])
        } else {
            format!("{qualified} \"{name}\" is invalid: [{}]", summary.join(", "))
        };
        let mut e = Self::new(422, "Invalid", message);
        let mut d = json!({ "name": name, "kind": kind, "causes": causes.iter().map(|c| json!({
            "reason": c.reason, "message": c.message, "field": c.field })).collect::<Vec<_>>() });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        e.details = Some(d);
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// A request RBAC denies (upstream's `ForbiddenStatusError`).
    pub fn forbidden_by(user: &crate::auth::User, a: &crate::rbac::Attributes) -> Self {
        let mut e = Self::new(403, "Forbidden", a.forbidden_message(&user.name));
        if let crate::rbac::Target::Resource { group, resource, name, .. } = &a.kind {
            let mut d = json!({ "kind": resource, "group": group });
            if !name.is_empty() {
                d["name"] = json!(name);
            }
            e.details = Some(d);
        }
        e
    }

    /// `apierrors.NewForbidden(resource, name, err)`.
    pub fn forbidden(r: &Resource, name: &str, err: &str) -> Self {
        let message = if name.is_empty() {
            format!("{} is forbidden: {err}", r.group_resource())
        } else {
            format!("{} \"{name}\" is forbidden: {err}", r.group_resource())
        };
        Self::new(403, "Forbidden", message).with_details(r, name)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message)
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/apply-patch+yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct:?})"))
    }

    /// A server-side apply that would change fields other managers own: 409 with one
    /// `FieldManagerConflict` cause per field (upstream's `NewApplyConflict`, which names no
    /// object in its details).
    pub fn apply_conflict(message: String, conflicts: &[crate::managed::Conflict]) -> Self {
        let mut e = Self::new(409, "Conflict", message);
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|c| json!({ "reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.field }))
            .collect();
        e.details = Some(json!({ "causes": causes }));
        e
    }

    /// A failed server-side apply of `object` (`namespace/name; apps/v1, Kind=Deployment`).
    pub fn from_apply(e: crate::managed::ApplyError, object: &str) -> Self {
        use crate::managed::ApplyError;
        match e {
            ApplyError::Conflicts(ref c) => Self::apply_conflict(e.to_string(), c),
            // Upstream answers these with a 500 (kubernetes/kubernetes#139253); they are the
            // client's mistakes.
            ApplyError::Invalid(why) => Self::bad_request(format!("failed to create typed patch object ({object}): {why}")),
            ApplyError::Decode(_) => Self::internal(e.to_string()),
        }
    }

    pub fn too_large() -> Self {
        Self::new(413, "RequestEntityTooLarge", "Request entity too large: limit is 3145728")
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Gone", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", format!("Internal error occurred: {}", message.into()))
    }

    /// 429 for a request beyond a concurrency limit, to be retried after a second.
    pub fn too_many_requests() -> Self {
        let mut e = Self::new(429, "TooManyRequests", "Too many requests, please try again later.");
        e.details = Some(json!({ "retryAfterSeconds": 1 }));
        e
    }

    /// 504, as kube-apiserver's `NewTimeoutError` (retry at once: empty details).
    pub fn timeout(message: &str) -> Self {
        let mut e = Self::new(504, "Timeout", format!("Timeout: {message}"));
        e.details = Some(json!({}));
        e
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "ServiceUnavailable", message)
    }

    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": self.metadata.clone().unwrap_or_else(|| json!({})),
            "status": "Failure",
            "message": bounded(&self.message, MAX_MESSAGE),
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (code, [("content-type", "application/json")], self.to_status().to_string()).into_response();
        // As upstream's ErrorNegotiated: a Status that says when to retry says it in the header too.
        if let Some(secs) = self.details.as_ref().and_then(|d| d["retryAfterSeconds"].as_u64()).filter(|s| *s > 0) {
            resp.headers_mut().insert("retry-after", axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

impl From<strata_store::Error> for ApiError {
    fn from(e: strata_store::Error) -> Self {
        match e {
            strata_store::Error::Compacted { requested, compacted } => Self::expired(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            strata_store::Error::FutureRevision { requested, current } => crate::rv::too_large(requested, current),
            strata_store::Error::Unavailable(m) => Self::unavailable(m),
            other => Self::internal(other.to_string()),
        }
    }
}

/// Longest object name repeated in an `Invalid` error (names are at most 253 characters).
const MAX_ECHOED_NAME: usize = 512;
/// Longest cause message (upstream's longest, a label format message with its value, is
/// about 400 bytes).
const MAX_CAUSE: usize = 2048;
/// Most causes reported (an object with 100,000 bad labels gets the first hundred).
const MAX_CAUSES: usize = 100;
/// Longest `Status` message.
const MAX_MESSAGE: usize = 16 * 1024;

/// `s`, or for a longer one its first and last bytes (at most `max` in all, cut at character
/// boundaries) around a note of what was left out: the explanation at the end of a message
/// that echoes a huge value survives.
pub fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut head = max * 3 / 4;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - max / 4;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{}...({} bytes omitted)...{}", &s[..head], tail - head, &s[tail..])
}

/// A success `Status` (returned by deletes of collections and some subresources).
pub fn success(details: Option<Value>) -> Value {
    let mut v = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" });
    if let Some(d) = details {
        v["details"] = d;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_keeps_both_ends() {
        assert_eq!(bounded("short", 10), "short");
        let long = format!("Invalid value: \"{}\": must be base64", "é".repeat(5000));
        let b = bounded(&long, 200);
        assert!(b.len() < 260 && b.starts_with("Invalid value: \"é") && b.ends_with("\": must be base64"), "{b}");
    }
}
