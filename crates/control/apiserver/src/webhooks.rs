//! admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration and
//! MutatingWebhookConfiguration: defaulted and validated as kube-apiserver does, stored and
//! served; [`crate::admission_webhooks`] calls their webhooks.

use serde_json::{json, Value};

use crate::status::Cause;

/// Defaults (`SetDefaults_ValidatingWebhook`/`MutatingWebhook`) and validation of either kind.
pub fn validate(kind: &str, obj: &mut Value, causes: &mut Vec<Cause>) {
    let mutating = kind == "MutatingWebhookConfiguration";
    for hook in obj["webhooks"].as_array_mut().into_iter().flatten() {
        for (f, d) in [("failurePolicy", json!("Fail")), ("matchPolicy", json!("Equivalent")), ("namespaceSelector", json!({})), ("objectSelector", json!({})), ("timeoutSeconds", json!(10))] {
            if hook[f].is_null() {
                hook[f] = d;
            }
        }
        if mutating && hook["reinvocationPolicy"].is_null() {
            hook["reinvocationPolicy"] = json!("Never");
        }
        if hook["clientConfig"]["service"].is_object() && hook["clientConfig"]["service"]["port"].is_null() {
            hook["clientConfig"]["service"]["port"] = json!(443);
        }
        for rule in hook["rules"].as_array_mut().into_iter().flatten() {
            if rule["scope"].is_null() {
                rule["scope"] = json!("*");
            }
        }
    }
    let mut names: Vec<&str> = Vec::new();
    for (i, hook) in obj["webhooks"].as_array().into_iter().flatten().enumerate() {
        let at = format!("webhooks[{i}]");
        let name = hook["name"].as_str().unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(&format!("{at}.name"), ""));
        } else {
            for e in crate::object::dns_subdomain_errors(name) {
                causes.push(Cause::invalid(&format!("{at}.name"), &json!(name), &e));
            }
            if name.split('.').count() < 3 {
                causes.push(Cause::invalid(&format!("{at}.name"), &json!(name), "should be a domain with at least three segments separated by dots"));
            }
        }
        if names.contains(&name) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("{at}.name"), message: format!("Duplicate value: {}", json!(name)) });
        }
        names.push(name);
        for (j, rule) in hook["rules"].as_array().into_iter().flatten().enumerate() {
            validate_rule(rule, &format!("{at}.rules[{j}]"), causes);
        }
        if !matches!(hook["failurePolicy"].as_str(), Some("Fail" | "Ignore")) {
            causes.push(Cause::not_supported(&format!("{at}.failurePolicy"), &hook["failurePolicy"], &["Fail", "Ignore"]));
        }
        if !matches!(hook["matchPolicy"].as_str(), Some("Equivalent" | "Exact")) {
            causes.push(Cause::not_supported(&format!("{at}.matchPolicy"), &hook["matchPolicy"], &["Equivalent", "Exact"]));
        }
        match hook["sideEffects"].as_str() {
            None => causes.push(Cause::required(&format!("{at}.sideEffects"), "must specify one of None, NoneOnDryRun")),
            Some("None" | "NoneOnDryRun") => {}
            Some(other) => causes.push(Cause::not_supported(&format!("{at}.sideEffects"), &json!(other), &["None", "NoneOnDryRun"])),
        }
        let timeout = hook["timeoutSeconds"].as_i64().unwrap_or(10);
        if !(1..=30).contains(&timeout) {
            causes.push(Cause::invalid(&format!("{at}.timeoutSeconds"), &json!(timeout), "the timeout value must be between 1 and 30 seconds"));
        }
        let versions: Vec<&str> = hook["admissionReviewVersions"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        if versions.is_empty() {
            causes.push(Cause::required(&format!("{at}.admissionReviewVersions"), "must specify one of v1, v1beta1"));
        } else if !versions.iter().any(|v| matches!(*v, "v1" | "v1beta1")) {
            causes.push(Cause::invalid(&format!("{at}.admissionReviewVersions"), &hook["admissionReviewVersions"], "must include at least one of v1, v1beta1"));
        }
        let cc = &hook["clientConfig"];
        match (cc["url"].as_str(), cc["service"].is_object()) {
            (None, false) | (Some(_), true) => causes.push(Cause::required(&format!("{at}.clientConfig"), "exactly one of url or service is required")),
            (Some(url), false) => {
                if !url.starts_with("https://") {
                    causes.push(Cause::invalid(&format!("{at}.clientConfig.url"), &json!(url), "'https' is the only allowed URL scheme"));
                }
            }
            (None, true) => {
                for f in ["namespace", "name"] {
                    if cc["service"][f].as_str().unwrap_or("").is_empty() {
                        causes.push(Cause::required(&format!("{at}.clientConfig.service.{f}"), &format!("service {f} is required")));
                    }
                }
                let port = cc["service"]["port"].as_i64().unwrap_or(443);
                if !(1..=65535).contains(&port) {
                    causes.push(Cause::invalid(&format!("{at}.clientConfig.service.port"), &json!(port), "port is not valid: must be between 1 and 65535, inclusive"));
                }
            }
        }
        // matchConditions: named, unique, at most 64, each compiling (upstream's
        // `validateMatchConditions`).
        crate::vap::named_expressions(&hook["matchConditions"], &format!("{at}.matchConditions"), ("name", "expression", ""), causes);
        let conditions = hook["matchConditions"].as_array().map_or(0, Vec::len);
        if conditions > 64 {
            causes.push(Cause { reason: "FieldValueTooMany", field: format!("{at}.matchConditions"), message: format!("Too many: {conditions}: must have at most 64 items") });
        }
        for (j, c) in hook["matchConditions"].as_array().into_iter().flatten().enumerate() {
            crate::vap::compiles(&c["expression"], &format!("{at}.matchConditions[{j}].expression"), causes);
        }
        if mutating && !matches!(hook["reinvocationPolicy"].as_str(), Some("Never" | "IfNeeded")) {
            causes.push(Cause::not_supported(&format!("{at}.reinvocationPolicy"), &hook["reinvocationPolicy"], &["IfNeeded", "Never"]));
        }
    }
}

/// A `RuleWithOperations` (webhooks) or `NamedRuleWithOperations` (admission policies) at `at`.
pub fn validate_rule(rule: &Value, at: &str, causes: &mut Vec<Cause>) {
    let ops: Vec<&str> = rule["operations"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if ops.is_empty() {
        causes.push(Cause::required(&format!("{at}.operations"), ""));
    }
    for (k, op) in ops.iter().enumerate() {
        if !matches!(*op, "*" | "CREATE" | "UPDATE" | "DELETE" | "CONNECT") {
            causes.push(Cause::not_supported(&format!("{at}.operations[{k}]"), &json!(op), &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]));
        }
    }
    for f in ["apiGroups", "apiVersions", "resources"] {
        if rule[f].as_array().is_none_or(Vec::is_empty) {
            causes.push(Cause::required(&format!("{at}.{f}"), ""));
        }
    }
    if !matches!(rule["scope"].as_str(), Some("*" | "Cluster" | "Namespaced")) {
        causes.push(Cause::not_supported(&format!("{at}.scope"), &rule["scope"], &["*", "Cluster", "Namespaced"]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_are_defaulted_and_validated() {
        let mut obj = json!({"webhooks": [{"name": "check.example.com", "clientConfig": {"service": {"namespace": "ns", "name": "svc"}}, "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}], "sideEffects": "None", "admissionReviewVersions": ["v1"]}]});
        let mut c = Vec::new();
        validate("MutatingWebhookConfiguration", &mut obj, &mut c);
        assert!(c.is_empty(), "{c:?}");
        let hook = &obj["webhooks"][0];
        assert_eq!((hook["failurePolicy"].as_str(), hook["timeoutSeconds"].as_i64(), hook["reinvocationPolicy"].as_str()), (Some("Fail"), Some(10), Some("Never")));
        assert_eq!(hook["clientConfig"]["service"]["port"], 443);
        assert_eq!(hook["rules"][0]["scope"], "*");
        let mut bad = json!({"webhooks": [{"name": "short.name", "clientConfig": {}, "admissionReviewVersions": ["v2"]}]});
        let mut c = Vec::new();
        validate("ValidatingWebhookConfiguration", &mut bad, &mut c);
        let msgs: Vec<String> = c.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "webhooks[0].name: Invalid value: \"short.name\": should be a domain with at least three segments separated by dots",
                "webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun",
                "webhooks[0].admissionReviewVersions: Invalid value: [\"v2\"]: must include at least one of v1, v1beta1",
                "webhooks[0].clientConfig: Required value: exactly one of url or service is required",
            ]
        );
    }
}
