//! The review APIs: create-only virtual resources answered from the authorizer and the
//! authenticator, never stored. `authorization.k8s.io/v1`: SelfSubjectAccessReview
//! (`kubectl auth can-i`), SelfSubjectRulesReview (`can-i --list`), SubjectAccessReview and
//! LocalSubjectAccessReview; `authentication.k8s.io/v1`: SelfSubjectReview (`kubectl auth
//! whoami`) and TokenReview.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::api::Api;
use crate::auth::User;
use crate::rbac::{self, Attributes};
use crate::status::{ApiError, Cause};

/// One review kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Review {
    SelfSubjectAccess,
    SelfSubjectRules,
    SubjectAccess,
    LocalSubjectAccess,
    SelfSubject,
    Token,
}

impl Review {
    pub fn group(self) -> &'static str {
        match self {
            Review::SelfSubject | Review::Token => "authentication.k8s.io",
            _ => "authorization.k8s.io",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Review::SelfSubjectAccess => "selfsubjectaccessreviews",
            Review::SelfSubjectRules => "selfsubjectrulesreviews",
            Review::SubjectAccess => "subjectaccessreviews",
            Review::LocalSubjectAccess => "localsubjectaccessreviews",
            Review::SelfSubject => "selfsubjectreviews",
            Review::Token => "tokenreviews",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Review::SelfSubjectAccess => "SelfSubjectAccessReview",
            Review::SelfSubjectRules => "SelfSubjectRulesReview",
            Review::SubjectAccess => "SubjectAccessReview",
            Review::LocalSubjectAccess => "LocalSubjectAccessReview",
            Review::SelfSubject => "SelfSubjectReview",
            Review::Token => "TokenReview",
        }
    }

    const ALL: [Review; 6] = [Review::SelfSubjectAccess, Review::SelfSubjectRules, Review::SubjectAccess, Review::LocalSubjectAccess, Review::SelfSubject, Review::Token];
}

/// The review a path addresses, with its namespace (LocalSubjectAccessReview only).
pub fn parse(path: &str) -> Option<(Review, Option<String>)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["apis", g, "v1", plural] => Review::ALL.into_iter().find(|r| r.group() == *g && r.plural() == *plural && *r != Review::LocalSubjectAccess).map(|r| (r, None)),
        ["apis", "authorization.k8s.io", "v1", "namespaces", ns, "localsubjectaccessreviews"] => Some((Review::LocalSubjectAccess, Some(ns.to_string()))),
        _ => None,
    }
}

fn invalid(kind: &str, field: &str, message: &str) -> ApiError {
    let c = Cause { reason: "FieldValueRequired", field: field.into(), message: message.into() };
    ApiError::invalid_kind("authorization.k8s.io", kind, "", vec![c])
}

/// The attributes a `SubjectAccessReviewSpec` asks about.
fn attributes_of(kind: &str, spec: &Value) -> Result<Attributes, ApiError> {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let ra = &spec["resourceAttributes"];
    let nra = &spec["nonResourceAttributes"];
    match (ra.is_object(), nra.is_object()) {
        (true, true) => Err(ApiError::invalid_kind("authorization.k8s.io", kind, "", vec![Cause {
            reason: "FieldValueInvalid",
            field: "spec.nonResourceAttributes".into(),
            message: format!("Invalid value: \"{}\": cannot be specified in combination with resourceAttributes", s(&nra["path"])),
        }])),
        (false, false) => Err(invalid(kind, "spec.resourceAttributes", "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified")),
        (true, false) => Ok(Attributes::resource(&s(&ra["verb"]), &s(&ra["group"]), &s(&ra["resource"]), &s(&ra["subresource"]), &s(&ra["namespace"]), &s(&ra["name"]))),
        (false, true) => Ok(Attributes::non_resource(&s(&nra["verb"]), &s(&nra["path"]))),
    }
}

fn respond(mut obj: Value, review: Review, status: Value) -> Response {
    obj["apiVersion"] = json!(format!("{}/v1", review.group()));
    obj["kind"] = json!(review.kind());
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    obj["status"] = status;
    (StatusCode::CREATED, [("content-type", "application/json")], obj.to_string()).into_response()
}

impl Api {
    /// Answer a review (`POST` only; the caller has been authorized to create it).
    pub(crate) async fn review(&self, user: &User, review: Review, namespace: Option<&str>, body: Value) -> Result<Response, ApiError> {
        let kind = review.kind();
        let spec = body["spec"].clone();
        match review {
            Review::SelfSubjectAccess => {
                let a = attributes_of(kind, &spec)?;
                let allowed = self.authz.allowed(self.store.as_ref(), user, &a).await?;
                Ok(respond(body, review, json!({ "allowed": allowed })))
            }
            Review::SubjectAccess | Review::LocalSubjectAccess => {
                let a = attributes_of(kind, &spec)?;
                if let Some(ns) = namespace {
                    if a.namespace() != ns {
                        return Err(ApiError::invalid_kind("authorization.k8s.io", kind, "", vec![Cause {
                            reason: "FieldValueInvalid",
                            field: "spec.resourceAttributes.namespace".into(),
                            message: format!("Invalid value: \"{}\": must match metadata.namespace", a.namespace()),
                        }]));
                    }
                }
                let name = spec["user"].as_str().unwrap_or("");
                let groups: Vec<String> = spec["groups"].as_array().into_iter().flatten().filter_map(|g| g.as_str().map(str::to_string)).collect();
                if name.is_empty() && groups.is_empty() {
                    return Err(invalid(kind, "spec.user", "Invalid value: \"\": at least one of user or group must be specified"));
                }
                // As upstream: the subject is exactly what the spec says (no implied groups).
                let subject = User { name: name.to_string(), groups, uid: spec["uid"].as_str().unwrap_or("").to_string(), extra: BTreeMap::new() };
                let allowed = self.authz.allowed(self.store.as_ref(), &subject, &a).await?;
                Ok(respond(body, review, json!({ "allowed": allowed })))
            }
            Review::SelfSubjectRules => {
                let ns = spec["namespace"].as_str().unwrap_or("");
                let mut rules = self.authz.rules_for(self.store.as_ref(), user, ns).await?;
                if user.groups.iter().any(|g| g == rbac::MASTERS) {
                    rules.extend(rbac::full_authority());
                }
                let resource: Vec<Value> = rules
                    .iter()
                    .filter(|r| !r.resources.is_empty())
                    .map(|r| json!({ "verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources, "resourceNames": r.resource_names }))
                    .collect();
                let non_resource: Vec<Value> = rules
                    .iter()
                    .filter(|r| !r.non_resource_urls.is_empty())
                    .map(|r| json!({ "verbs": r.verbs, "nonResourceURLs": r.non_resource_urls }))
                    .collect();
                Ok(respond(body, review, json!({ "resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false })))
            }
            Review::SelfSubject => Ok(respond(body, review, json!({ "userInfo": user.info() }))),
            Review::Token => {
                let token = spec["token"].as_str().unwrap_or("");
                let wanted: Vec<String> = spec["audiences"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect();
                let status = match self.authn.review(self.store.as_ref(), token, &wanted).await {
                    Ok((who, audiences)) => json!({ "authenticated": true, "user": who.info(), "audiences": audiences }),
                    Err(e) => json!({ "authenticated": false, "user": {}, "error": e }),
                };
                Ok(respond(body, review, status))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(parse("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"), Some((Review::SelfSubjectAccess, None)));
        assert_eq!(parse("/apis/authentication.k8s.io/v1/tokenreviews"), Some((Review::Token, None)));
        assert_eq!(parse("/apis/authorization.k8s.io/v1/namespaces/a/localsubjectaccessreviews"), Some((Review::LocalSubjectAccess, Some("a".into()))));
        assert_eq!(parse("/apis/authorization.k8s.io/v1/localsubjectaccessreviews"), None);
        assert_eq!(parse("/apis/authentication.k8s.io/v1/selfsubjectaccessreviews"), None);
    }
}
