//! admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy and
//! ValidatingAdmissionPolicyBinding: defaulted and validated as kube-apiserver does
//! (`SetDefaults_ValidatingAdmissionPolicySpec`, `SetDefaults_MatchResources`, `SetDefaults_Rule`;
//! `ValidateValidatingAdmissionPolicy`, `ValidateValidatingAdmissionPolicyBinding`), stored,
//! served, and enforced on CREATE and UPDATE requests ([`admit`]): each binding's policy, when
//! its matchConstraints (and the binding's matchResources) select the request and its
//! matchConditions hold, has its variables and validations evaluated by the `cel` crate over
//! `object`, `oldObject`, `request`, `namespaceObject` and `variables`; a failed validation is
//! denied (Deny, with the validation's reason: 422 Invalid by default), warned (Warn) or
//! logged (Audit), and an expression that cannot be evaluated follows the policy's failurePolicy.
//! Not supported, each said where it matters: `paramKind`/`paramRef` (an error, so the
//! failurePolicy decides), DELETE and CONNECT requests (not evaluated: a warning when a policy's
//! rules name them), and `status.typeChecking` (never written). Expressions are compiled when a
//! policy is written (one that does not compile is refused) and run in the API
//! server's CEL environment ([`crate::celenv`]: its libraries and cost bound; an expression
//! calling a function it lacks, such as authz or quantity, is an evaluation error).

use std::collections::HashMap;

use serde_json::{json, Value};
use strata_store::Store;

use crate::resources::Resource;
use crate::status::{ApiError, Cause};

/// The warning a write of a policy that names DELETE or CONNECT gets.
pub fn warning(r: &Resource, obj: &Value) -> Option<String> {
    if r.builtin() != "ValidatingAdmissionPolicy" {
        return None;
    }
    let mc = &obj["spec"]["matchConstraints"];
    let names_unsupported = mc["resourceRules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|rule| rule["operations"].as_array().into_iter().flatten())
        .any(|op| matches!(op.as_str(), Some("DELETE" | "CONNECT" | "*")));
    let params = obj["spec"]["paramKind"].is_object();
    match (names_unsupported, params) {
        (false, false) => None,
        (true, false) => Some("this server evaluates ValidatingAdmissionPolicies on CREATE and UPDATE requests only: DELETE and CONNECT requests are admitted unchecked".to_string()),
        (_, true) => Some("this server does not support paramKind: every request this policy matches is an evaluation error, decided by its failurePolicy".to_string()),
    }
}

/// What the request is, as a policy sees it.
pub struct Request<'a> {
    pub resource: &'static Resource,
    pub subresource: Option<&'a str>,
    pub operation: &'a str,
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub object: Option<&'a Value>,
    pub old: Option<&'a Value>,
    pub user: &'a crate::auth::User,
    pub dry_run: bool,
}

/// Run every binding's policy on the request: Ok with the warnings of Warn bindings, or the
/// first denial.
pub async fn admit(store: &dyn Store, req: &Request<'_>) -> Result<Vec<String>, ApiError> {
    let (Some(pr), Some(br)) = (crate::resources::find("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies"), crate::resources::find("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings")) else {
        return Ok(Vec::new());
    };
    let bindings = list(store, br).await?;
    if bindings.is_empty() {
        return Ok(Vec::new());
    }
    let policies: HashMap<String, Value> = list(store, pr).await?.into_iter().map(|p| (crate::object::name_of(&p).to_string(), p)).collect();
    let labels = |o: Option<&Value>| o.map(|o| o["metadata"]["labels"].clone()).unwrap_or(Value::Null);
    let mut namespace_object: Option<Value> = None;
    let mut warnings = Vec::new();
    for b in &bindings {
        let Some(policy) = policies.get(b["spec"]["policyName"].as_str().unwrap_or("")) else { continue };
        let mut constraints = vec![&policy["spec"]["matchConstraints"]];
        if b["spec"]["matchResources"].is_object() {
            constraints.push(&b["spec"]["matchResources"]);
        }
        // A binding's matchResources without resourceRules narrows by its selectors only.
        if !rules_match(constraints[0], req, false) || constraints.get(1).is_some_and(|mc| !rules_match(mc, req, true)) {
            continue;
        }
        // Selectors: the object's labels (or the old object's), the namespace's labels.
        if !constraints.iter().all(|mc| object_selects(&mc["objectSelector"], req.object, req.old)) {
            continue;
        }
        if namespace_object.is_none() {
            namespace_object = Some(namespace_of(store, req).await?);
        }
        let ns_obj = namespace_object.clone().unwrap_or(Value::Null);
        let ns_labels = if req.resource.builtin() == "Namespace" { labels(req.object.or(req.old)) } else { ns_obj["metadata"]["labels"].clone() };
        if (req.resource.namespaced || req.resource.builtin() == "Namespace") && !constraints.iter().all(|mc| selects(&mc["namespaceSelector"], &ns_labels)) {
            continue;
        }
        match evaluate(policy, req, ns_obj) {
            Ok(None) => {}
            Ok(Some(failure)) => {
                let message = format!("ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}", crate::object::name_of(policy), crate::object::name_of(b), failure.message);
                let actions: Vec<&str> = b["spec"]["validationActions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                if actions.contains(&"Warn") {
                    warnings.push(format!("Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}", crate::object::name_of(policy), crate::object::name_of(b), failure.message));
                }
                if actions.contains(&"Audit") {
                    tracing::info!(policy = crate::object::name_of(policy), binding = crate::object::name_of(b), message = %failure.message, "validating admission policy failed (Audit)");
                }
                if actions.contains(&"Deny") {
                    return Err(denial(&failure.reason, message));
                }
            }
            Err(e) => {
                let message = format!("ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {e}", crate::object::name_of(policy), crate::object::name_of(b));
                if policy["spec"]["failurePolicy"].as_str() != Some("Ignore") {
                    return Err(denial("Invalid", message));
                }
                tracing::debug!(%message, "validating admission policy error ignored (failurePolicy Ignore)");
            }
        }
    }
    Ok(warnings)
}

/// An objectSelector: empty, or matching the labels of the object or of the old object (one
/// that is absent, as the old object of a CREATE, matches nothing: upstream's `matchObject`).
pub(crate) fn object_selects(selector: &Value, object: Option<&Value>, old: Option<&Value>) -> bool {
    let empty = selector["matchLabels"].as_object().is_none_or(|m| m.is_empty()) && selector["matchExpressions"].as_array().is_none_or(|e| e.is_empty());
    empty || [object, old].into_iter().flatten().any(|o| crate::validate::selector_matches(selector, &o["metadata"]["labels"]))
}

/// A metav1 LabelSelector as admission reads it: an empty one selects everything.
pub(crate) fn selects(selector: &Value, labels: &Value) -> bool {
    let empty = selector["matchLabels"].as_object().is_none_or(|m| m.is_empty()) && selector["matchExpressions"].as_array().is_none_or(|e| e.is_empty());
    empty || crate::validate::selector_matches(selector, labels)
}

fn denial(reason: &str, message: String) -> ApiError {
    match reason {
        "Unauthorized" => ApiError::new(401, "Unauthorized", message),
        "Forbidden" => ApiError::new(403, "Forbidden", message),
        "RequestEntityTooLarge" => ApiError::new(413, "RequestEntityTooLarge", message),
        _ => ApiError::new(422, "Invalid", message),
    }
}

async fn list(store: &dyn Store, r: &Resource) -> Result<Vec<Value>, ApiError> {
    let page = store.list(&r.key_prefix(), None, 0).await?;
    Ok(page.items.iter().filter_map(|kv| serde_json::from_slice(&kv.value).ok()).collect())
}

pub(crate) async fn namespace_of(store: &dyn Store, req: &Request<'_>) -> Result<Value, ApiError> {
    let Some(ns) = req.namespace.filter(|_| req.resource.namespaced) else { return Ok(Value::Null) };
    let Some(r) = crate::resources::find("", "v1", "namespaces") else { return Ok(Value::Null) };
    Ok(match store.get(&r.key(None, ns)).await? {
        Some(kv) => serde_json::from_slice(&kv.value).unwrap_or(Value::Null),
        None => Value::Null,
    })
}

/// Does a MatchResources select the request by its rules (resourceRules, not excluded)? A
/// binding's without resourceRules takes everything its policy matches (`unset_matches_all`).
fn rules_match(mc: &Value, req: &Request<'_>, unset_matches_all: bool) -> bool {
    let hit = |list: &str| mc[list].as_array().into_iter().flatten().any(|rule| rule_matches(rule, req));
    let unset = mc["resourceRules"].as_array().is_none_or(Vec::is_empty);
    ((unset && unset_matches_all) || hit("resourceRules")) && !hit("excludeResourceRules")
}

pub(crate) fn rule_matches(rule: &Value, req: &Request<'_>) -> bool {
    let has = |f: &str, v: &str| rule[f].as_array().into_iter().flatten().filter_map(Value::as_str).any(|x| x == "*" || x == v);
    let r = req.resource;
    if !has("operations", req.operation) || !has("apiGroups", r.group) || !has("apiVersions", r.version) {
        return false;
    }
    let resource_ok = rule["resources"].as_array().into_iter().flatten().filter_map(Value::as_str).any(|x| {
        let (res, sub) = x.split_once('/').unwrap_or((x, ""));
        let res_ok = res == "*" || res == r.plural;
        let sub_ok = match req.subresource {
            None => sub.is_empty(),
            Some(s) => sub == "*" || sub == s,
        };
        res_ok && sub_ok
    });
    let scope_ok = match rule["scope"].as_str().unwrap_or("*") {
        "Cluster" => !r.namespaced,
        "Namespaced" => r.namespaced,
        _ => true,
    };
    let names: Vec<&str> = rule["resourceNames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    resource_ok && scope_ok && (names.is_empty() || names.contains(&req.name))
}

struct Failure {
    message: String,
    reason: String,
}

/// Evaluate one policy: Ok(None) when it holds (or its matchConditions exclude the request),
/// Ok(Some) for the first failed validation, Err for an expression that cannot be evaluated.
fn evaluate(policy: &Value, req: &Request<'_>, namespace_object: Value) -> Result<Option<Failure>, String> {
    let spec = &policy["spec"];
    if spec["paramKind"].is_object() {
        return Err("paramKind is not supported by this server".to_string());
    }
    let r = req.resource;
    let request = json!({
        "operation": req.operation,
        "name": req.name,
        "namespace": req.namespace.unwrap_or(""),
        "kind": { "group": r.group, "version": r.version, "kind": r.kind },
        "resource": { "group": r.group, "version": r.version, "resource": r.plural },
        "subResource": req.subresource.unwrap_or(""),
        "userInfo": { "username": req.user.name, "uid": req.user.uid, "groups": req.user.groups },
        "dryRun": req.dry_run,
    });
    let mut vars: Vec<(&str, cel::Value)> = vec![
        ("object", crate::celenv::value(req.object.unwrap_or(&Value::Null))),
        ("oldObject", crate::celenv::value(req.old.unwrap_or(&Value::Null))),
        ("request", crate::celenv::value(&request)),
        ("namespaceObject", crate::celenv::value(&namespace_object)),
        ("params", cel::Value::Null),
        ("variables", cel::Value::from(HashMap::<String, cel::Value>::new())),
    ];
    let run = |vars: &[(&str, cel::Value)], expr: &str| crate::celenv::run(expr, vars);
    for c in spec["matchConditions"].as_array().into_iter().flatten() {
        match run(&vars, c["expression"].as_str().unwrap_or(""))? {
            cel::Value::Bool(true) => {}
            cel::Value::Bool(false) => return Ok(None),
            other => return Err(format!("matchCondition '{}' must evaluate to bool, got {other:?}", c["name"].as_str().unwrap_or(""))),
        }
    }
    // Variables in order, each seeing the ones before it; one that fails is left out (an
    // expression using it then fails).
    let mut variables: HashMap<String, cel::Value> = HashMap::new();
    for v in spec["variables"].as_array().into_iter().flatten() {
        if let Ok(value) = run(&vars, v["expression"].as_str().unwrap_or("")) {
            variables.insert(v["name"].as_str().unwrap_or("").to_string(), value);
            if let Some(slot) = vars.iter_mut().find(|(n, _)| *n == "variables") {
                slot.1 = cel::Value::from(variables.clone());
            }
        }
    }
    for v in spec["validations"].as_array().into_iter().flatten() {
        let expr = v["expression"].as_str().unwrap_or("");
        match run(&vars, expr).map_err(|e| format!("expression '{expr}' resulted in error: {e}"))? {
            cel::Value::Bool(true) => continue,
            cel::Value::Bool(false) => {}
            other => return Err(format!("expression '{expr}' must evaluate to bool, got {other:?}")),
        }
        let from_expression = v["messageExpression"].as_str().and_then(|m| match run(&vars, m) {
            Ok(cel::Value::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
            _ => None,
        });
        let message = from_expression.or_else(|| v["message"].as_str().map(str::to_string)).unwrap_or_else(|| format!("failed expression: {expr}"));
        return Ok(Some(Failure { message, reason: v["reason"].as_str().unwrap_or("Invalid").to_string() }));
    }
    Ok(None)
}

/// Defaults and validation of a ValidatingAdmissionPolicy.
pub fn validate_policy(obj: &mut Value, causes: &mut Vec<Cause>) {
    let spec = &mut obj["spec"];
    if spec.is_null() {
        *spec = json!({});
    }
    if spec["failurePolicy"].is_null() {
        spec["failurePolicy"] = json!("Fail");
    }
    if spec["matchConstraints"].is_object() {
        default_match_resources(&mut spec["matchConstraints"]);
    }
    let spec = &obj["spec"];
    if !matches!(spec["failurePolicy"].as_str(), Some("Fail" | "Ignore")) {
        causes.push(Cause::not_supported("spec.failurePolicy", &spec["failurePolicy"], &["Fail", "Ignore"]));
    }
    if let Some(pk) = spec["paramKind"].as_object() {
        for f in ["apiVersion", "kind"] {
            if pk.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                causes.push(Cause::required(&format!("spec.paramKind.{f}"), ""));
            }
        }
    }
    match spec["matchConstraints"].as_object() {
        None => causes.push(Cause::required("spec.matchConstraints", "")),
        Some(_) => {
            validate_match_resources(&spec["matchConstraints"], "spec.matchConstraints", causes);
            // At least one resource rule: it gives the expressions their types.
            if spec["matchConstraints"]["resourceRules"].as_array().is_none_or(Vec::is_empty) {
                causes.push(Cause::required("spec.matchConstraints.resourceRules", ""));
            }
        }
    }
    named_expressions(&spec["matchConditions"], "spec.matchConditions", ("name", "expression", ""), causes);
    for (i, c) in spec["matchConditions"].as_array().into_iter().flatten().enumerate() {
        compiles(&c["expression"], &format!("spec.matchConditions[{i}].expression"), causes);
    }
    named_expressions(&spec["variables"], "spec.variables", ("name", "expression", ""), causes);
    for (i, v) in spec["variables"].as_array().into_iter().flatten().enumerate() {
        compiles(&v["expression"], &format!("spec.variables[{i}].expression"), causes);
    }
    let validations = spec["validations"].as_array().map_or(0, Vec::len);
    let audits = spec["auditAnnotations"].as_array().map_or(0, Vec::len);
    if validations == 0 && audits == 0 {
        causes.push(Cause::required("spec.validations", "validations or auditAnnotations must contain at least one item"));
        causes.push(Cause::required("spec.auditAnnotations", "validations or auditAnnotations must contain at least one item"));
    }
    for (i, v) in spec["validations"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.validations[{i}]");
        if v["expression"].as_str().is_none_or(|e| e.trim().is_empty()) {
            causes.push(Cause::required(&format!("{at}.expression"), "expression is not specified"));
        }
        compiles(&v["expression"], &format!("{at}.expression"), causes);
        compiles(&v["messageExpression"], &format!("{at}.messageExpression"), causes);
        if let Some(reason) = v["reason"].as_str() {
            if !matches!(reason, "Unauthorized" | "Forbidden" | "Invalid" | "RequestEntityTooLarge") {
                causes.push(Cause::not_supported(&format!("{at}.reason"), &json!(reason), &["Forbidden", "Invalid", "RequestEntityTooLarge", "Unauthorized"]));
            }
        }
        if let Some(m) = v["message"].as_str() {
            if m.trim().is_empty() {
                causes.push(Cause::required(&format!("{at}.message"), "message must be non-empty if specified"));
            } else if m.contains('\n') {
                causes.push(Cause::invalid(&format!("{at}.message"), &json!(m), "message must not contain line breaks"));
            }
        }
    }
    named_expressions(&spec["auditAnnotations"], "spec.auditAnnotations", ("key", "valueExpression", "expression is not specified"), causes);
    for (i, a) in spec["auditAnnotations"].as_array().into_iter().flatten().enumerate() {
        compiles(&a["valueExpression"], &format!("spec.auditAnnotations[{i}].valueExpression"), causes);
    }
}

/// The variables a policy's expressions may read.
const VARIABLES: &[&str] = &["object", "oldObject", "request", "params", "namespaceObject", "authorizer", "variables"];

/// Refuse an expression that does not compile, with upstream's message. One reading
/// `authorizer` is left to fail when evaluated (Kubernetes' authorizer library is not built in:
/// the failurePolicy decides then).
pub(crate) fn compiles(expr: &Value, field: &str, causes: &mut Vec<Cause>) {
    let Some(source) = expr.as_str().filter(|e| !e.trim().is_empty()) else { return };
    if source.contains("authorizer") {
        return;
    }
    if let Err(e) = crate::celenv::compile(source, VARIABLES) {
        causes.push(Cause::invalid(field, &json!(source), &format!("compilation failed: {e}")));
    }
}

/// Defaults and validation of a ValidatingAdmissionPolicyBinding.
pub fn validate_binding(obj: &mut Value, causes: &mut Vec<Cause>) {
    if obj["spec"].is_null() {
        obj["spec"] = json!({});
    }
    if obj["spec"]["matchResources"].is_object() {
        default_match_resources(&mut obj["spec"]["matchResources"]);
    }
    let spec = &obj["spec"];
    match spec["policyName"].as_str().unwrap_or("") {
        "" => causes.push(Cause::required("spec.policyName", "")),
        name => {
            for e in crate::object::dns_subdomain_errors(name) {
                causes.push(Cause::invalid("spec.policyName", &json!(name), &e));
            }
        }
    }
    if let Some(pr) = spec["paramRef"].as_object() {
        let name = pr.get("name").and_then(Value::as_str).unwrap_or("");
        let selector = pr.get("selector").is_some_and(|s| !s.is_null());
        if !name.is_empty() {
            for bad in [".", ".."] {
                if name == bad {
                    causes.push(Cause::invalid("spec.paramRef.name", &json!(name), &format!("may not be '{bad}'")));
                }
            }
            if name.contains('/') || name.contains('%') {
                causes.push(Cause::invalid("spec.paramRef.name", &json!(name), "may not contain '/' or '%'"));
            }
            if selector {
                causes.push(forbidden("spec.paramRef.name", "name and selector are mutually exclusive"));
                causes.push(forbidden("spec.paramRef.selector", "name and selector are mutually exclusive"));
            }
        } else if !selector {
            causes.push(Cause::required("spec.paramRef", "one of name or selector must be specified"));
        }
        match pr.get("parameterNotFoundAction").and_then(Value::as_str).unwrap_or("") {
            "" => causes.push(Cause::required("spec.paramRef.parameterNotFoundAction", "")),
            "Deny" | "Allow" => {}
            other => causes.push(Cause::not_supported("spec.paramRef.parameterNotFoundAction", &json!(other), &["Deny", "Allow"])),
        }
    }
    if spec["matchResources"].is_object() {
        validate_match_resources(&spec["matchResources"], "spec.matchResources", causes);
    }
    let actions: Vec<&Value> = spec["validationActions"].as_array().into_iter().flatten().collect();
    let mut seen: Vec<&str> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        let s = a.as_str().unwrap_or("");
        if !matches!(s, "Deny" | "Warn" | "Audit") {
            causes.push(Cause::not_supported(&format!("spec.validationActions[{i}]"), a, &["Audit", "Deny", "Warn"]));
        }
        if seen.contains(&s) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("spec.validationActions[{i}]"), message: format!("Duplicate value: {a}") });
        }
        seen.push(s);
    }
    if seen.contains(&"Deny") && seen.contains(&"Warn") {
        causes.push(Cause::invalid(
            "spec.validationActions",
            &spec["validationActions"],
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    if seen.is_empty() {
        causes.push(Cause::required("spec.validationActions", "at least one validation action is required"));
    }
}

fn forbidden(field: &str, why: &str) -> Cause {
    Cause::forbidden(field, why)
}

fn default_match_resources(mr: &mut Value) {
    for (f, d) in [("matchPolicy", json!("Equivalent")), ("namespaceSelector", json!({})), ("objectSelector", json!({}))] {
        if mr[f].is_null() {
            mr[f] = d;
        }
    }
    for list in ["resourceRules", "excludeResourceRules"] {
        for rule in mr[list].as_array_mut().into_iter().flatten() {
            if rule["scope"].is_null() {
                rule["scope"] = json!("*");
            }
        }
    }
}

fn validate_match_resources(mr: &Value, at: &str, causes: &mut Vec<Cause>) {
    if !matches!(mr["matchPolicy"].as_str(), Some("Equivalent" | "Exact")) {
        causes.push(Cause::not_supported(&format!("{at}.matchPolicy"), &mr["matchPolicy"], &["Equivalent", "Exact"]));
    }
    for f in ["namespaceSelector", "objectSelector"] {
        for (i, e) in mr[f]["matchExpressions"].as_array().into_iter().flatten().enumerate() {
            let op = e["operator"].as_str().unwrap_or("");
            let values = e["values"].as_array().map_or(0, Vec::len);
            let eat = format!("{at}.{f}.matchExpressions[{i}]");
            match op {
                "In" | "NotIn" if values == 0 => causes.push(Cause::required(&format!("{eat}.values"), "must be specified when `operator` is 'In' or 'NotIn'")),
                "Exists" | "DoesNotExist" if values > 0 => causes.push(forbidden(&format!("{eat}.values"), "may not be specified when `operator` is 'Exists' or 'DoesNotExist'")),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                _ => causes.push(Cause::invalid(&format!("{eat}.operator"), &json!(op), "not a valid selector operator")),
            }
        }
    }
    for list in ["resourceRules", "excludeResourceRules"] {
        for (i, rule) in mr[list].as_array().into_iter().flatten().enumerate() {
            crate::webhooks::validate_rule(rule, &format!("{at}.{list}[{i}]"), causes);
        }
    }
}

/// matchConditions, variables and auditAnnotations: each with a unique, non-empty name (or key)
/// and an expression; `(key field, expression field, detail of a missing expression)`.
pub(crate) fn named_expressions(list: &Value, at: &str, (key, expr, detail): (&str, &str, &str), causes: &mut Vec<Cause>) {
    let mut names: Vec<&str> = Vec::new();
    for (i, item) in list.as_array().into_iter().flatten().enumerate() {
        let name = item[key].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&format!("{at}[{i}].{key}"), ""));
        } else if names.contains(&name) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("{at}[{i}].{key}"), message: format!("Duplicate value: {}", json!(name)) });
        }
        names.push(name);
        if item[expr].as_str().is_none_or(|e| e.trim().is_empty()) {
            causes.push(Cause::required(&format!("{at}[{i}].{expr}"), detail));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(c: Vec<Cause>) -> Vec<String> {
        c.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn policies_are_defaulted_and_validated() {
        let mut obj = json!({"spec": {"validations": [{"expression": "object.spec.replicas <= 100"}],
            "matchConstraints": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]}}});
        let mut c = Vec::new();
        validate_policy(&mut obj, &mut c);
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(obj["spec"]["failurePolicy"], "Fail");
        let mc = &obj["spec"]["matchConstraints"];
        assert_eq!((mc["matchPolicy"].as_str(), &mc["namespaceSelector"], &mc["objectSelector"]), (Some("Equivalent"), &json!({}), &json!({})));
        assert_eq!(mc["resourceRules"][0]["scope"], "*");

        // Expressions are compiled when the policy is written (upstream's compile errors).
        let mut uncompilable = json!({"spec": {"matchConstraints": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]},
            "matchConditions": [{"name": "m", "expression": "object.metadata.name.nope()"}], "variables": [{"name": "v", "expression": "variables.x + undeclared"}],
            "validations": [{"expression": "object.spec.replicas <=", "messageExpression": "'ok ' + string(variables.v)"}, {"expression": "true", "messageExpression": "bad("}],
            "auditAnnotations": [{"key": "k", "valueExpression": "authorizer.group('apps').resource('deployments').check('create').allowed() ? 'y' : 'n'"}]}});
        let mut c = Vec::new();
        validate_policy(&mut uncompilable, &mut c);
        let got = messages(c);
        assert_eq!(got.len(), 4, "{got:#?}");
        assert!(got[0].starts_with("spec.matchConditions[0].expression: Invalid value: \"object.metadata.name.nope()\": compilation failed: ERROR: <input>:1:26: undeclared reference to 'nope' (in container '')"), "{}", got[0]);
        assert!(got[1].starts_with("spec.variables[0].expression: Invalid value: \"variables.x + undeclared\": compilation failed: ERROR: <input>:1:15: undeclared reference to 'undeclared'"), "{}", got[1]);
        assert!(got[2].starts_with("spec.validations[0].expression: Invalid value: \"object.spec.replicas <=\": compilation failed: ERROR: <input>:1:"), "{}", got[2]);
        assert!(got[3].starts_with("spec.validations[1].messageExpression: Invalid value: \"bad(\": compilation failed: ERROR: <input>:1:"), "{}", got[3]);

        let mut bad = json!({"spec": {"failurePolicy": "Maybe", "matchConstraints": {}, "validations": [], "variables": [{"name": "a", "expression": "1"}, {"name": "a", "expression": ""}]}});
        let mut c = Vec::new();
        validate_policy(&mut bad, &mut c);
        assert_eq!(
            messages(c),
            [
                "spec.failurePolicy: Unsupported value: \"Maybe\": supported values: \"Fail\", \"Ignore\"",
                "spec.matchConstraints.resourceRules: Required value",
                "spec.variables[1].name: Duplicate value: \"a\"",
                "spec.variables[1].expression: Required value",
                "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
                "spec.auditAnnotations: Required value: validations or auditAnnotations must contain at least one item",
            ]
        );
    }

    fn deployment(replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "ns1"}, "spec": {"replicas": replicas}})
    }

    fn eval(policy: Value, obj: &Value) -> Result<Option<String>, String> {
        let r = crate::resources::find("apps", "v1", "deployments").expect("deployments");
        let user = crate::auth::User { name: "alice".into(), groups: Vec::new(), uid: String::new(), extra: Default::default() };
        let req = Request { resource: r, subresource: None, operation: "CREATE", namespace: Some("ns1"), name: "d", object: Some(obj), old: None, user: &user, dry_run: false };
        evaluate(&json!({"spec": policy}), &req, json!({"metadata": {"name": "ns1"}})).map(|f| f.map(|f| format!("{}: {}", f.reason, f.message)))
    }

    #[test]
    fn policies_evaluate_variables_messages_and_errors() {
        let upstream = json!({"variables": [{"name": "replicas", "expression": "object.spec.replicas"}, {"name": "oddReplicas", "expression": "variables.replicas % 2 == 1"}],
            "validations": [{"expression": "variables.replicas > 1"}, {"expression": "variables.oddReplicas"}]});
        assert_eq!(eval(upstream.clone(), &deployment(3)), Ok(None));
        assert_eq!(eval(upstream.clone(), &deployment(1)), Ok(Some("Invalid: failed expression: variables.replicas > 1".into())));
        assert_eq!(eval(upstream, &deployment(2)), Ok(Some("Invalid: failed expression: variables.oddReplicas".into())));
        // A messageExpression that fails (string + int) falls back to the message; one that works wins.
        let p = json!({"validations": [{"expression": "object.spec.replicas > 1", "messageExpression": "'wants replicas > 1, got ' + object.spec.replicas", "message": "too few"},
            {"expression": "namespaceObject.metadata.name == 'other'", "messageExpression": "'in ' + namespaceObject.metadata.name + ' by ' + request.userInfo.username", "reason": "Forbidden"}]});
        assert_eq!(eval(p.clone(), &deployment(1)), Ok(Some("Invalid: too few".into())));
        assert_eq!(eval(p, &deployment(2)), Ok(Some("Forbidden: in ns1 by alice".into())));
        // matchConditions exclude; an unknown field is an evaluation error; has() and strings work.
        let p = json!({"matchConditions": [{"name": "big", "expression": "object.spec.replicas > 10"}], "validations": [{"expression": "false"}]});
        assert_eq!(eval(p, &deployment(3)), Ok(None));
        assert!(eval(json!({"validations": [{"expression": "object.spec.missing > 1"}]}), &deployment(3)).is_err_and(|e| e.contains("object.spec.missing > 1")));
        let p = json!({"validations": [{"expression": "!has(object.spec.paused) && object.metadata.name.startsWith('d') && size(object.metadata.name) == 1"}]});
        assert_eq!(eval(p, &deployment(3)), Ok(None));
        assert!(eval(json!({"paramKind": {"apiVersion": "v1", "kind": "ConfigMap"}, "validations": [{"expression": "true"}]}), &deployment(3)).is_err());
    }

    #[test]
    fn audit_annotations_need_unique_keys_and_expressions() {
        let mut obj = json!({"spec": {"matchConstraints": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]},
            "auditAnnotations": [{"key": "a", "valueExpression": "'x'"}, {"key": "a", "valueExpression": " "}]}});
        let mut c = Vec::new();
        validate_policy(&mut obj, &mut c);
        assert_eq!(messages(c), ["spec.auditAnnotations[1].key: Duplicate value: \"a\"", "spec.auditAnnotations[1].valueExpression: Required value: expression is not specified"]);
    }

    #[test]
    fn bindings_are_validated() {
        let mut ok = json!({"spec": {"policyName": "replicalimit-policy.example.com", "validationActions": ["Deny"], "matchResources": {}}});
        let mut c = Vec::new();
        validate_binding(&mut ok, &mut c);
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(ok["spec"]["matchResources"]["matchPolicy"], "Equivalent");
        let mut bad = json!({"spec": {"validationActions": ["Deny", "Warn", "Deny"], "paramRef": {"name": "p", "selector": {}}}});
        let mut c = Vec::new();
        validate_binding(&mut bad, &mut c);
        assert_eq!(
            messages(c),
            [
                "spec.policyName: Required value",
                "spec.paramRef.name: Forbidden: name and selector are mutually exclusive",
                "spec.paramRef.selector: Forbidden: name and selector are mutually exclusive",
                "spec.paramRef.parameterNotFoundAction: Required value",
                "spec.validationActions[2]: Duplicate value: \"Deny\"",
                "spec.validationActions: Invalid value: [\"Deny\",\"Warn\",\"Deny\"]: must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
            ]
        );
    }
}
