//! admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy and
//! ValidatingAdmissionPolicyBinding: defaulted and validated as kube-apiserver does
//! (`SetDefaults_ValidatingAdmissionPolicySpec`, `SetDefaults_MatchResources`, `SetDefaults_Rule`;
//! `ValidateValidatingAdmissionPolicy`, `ValidateValidatingAdmissionPolicyBinding`), stored and
//! served. **The policies are not enforced**: strata has no CEL evaluator, so expressions are
//! neither compiled at create nor evaluated at admission, and `status.typeChecking` is never
//! written; every create or update of either kind answers with a warning that says so.

use serde_json::{json, Value};

use crate::status::Cause;

/// The warning a write of a policy or a binding gets.
pub fn warning(r: &crate::resources::Resource) -> Option<String> {
    matches!(r.builtin(), "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding")
        .then(|| format!("{} is stored but not enforced: this server has no CEL evaluator and runs only its built-in admission plugins", r.kind))
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
    named_expressions(&spec["matchConditions"], "spec.matchConditions", "name", causes);
    named_expressions(&spec["variables"], "spec.variables", "name", causes);
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
    let mut keys: Vec<&str> = Vec::new();
    for (i, a) in spec["auditAnnotations"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.auditAnnotations[{i}]");
        let key = a["key"].as_str().unwrap_or("");
        if key.is_empty() {
            causes.push(Cause::required(&format!("{at}.key"), ""));
        } else if keys.contains(&key) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("{at}.key"), message: format!("Duplicate value: {}", json!(key)) });
        }
        keys.push(key);
        if a["valueExpression"].as_str().is_none_or(|e| e.trim().is_empty()) {
            causes.push(Cause::required(&format!("{at}.valueExpression"), "expression is not specified"));
        }
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
    Cause { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {why}") }
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

/// matchConditions and variables: each with a unique, non-empty name and an expression.
fn named_expressions(list: &Value, at: &str, key: &str, causes: &mut Vec<Cause>) {
    let mut names: Vec<&str> = Vec::new();
    for (i, item) in list.as_array().into_iter().flatten().enumerate() {
        let name = item[key].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&format!("{at}[{i}].{key}"), ""));
        } else if names.contains(&name) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("{at}[{i}].{key}"), message: format!("Duplicate value: {}", json!(name)) });
        }
        names.push(name);
        if item["expression"].as_str().is_none_or(|e| e.trim().is_empty()) {
            causes.push(Cause::required(&format!("{at}[{i}].expression"), ""));
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
