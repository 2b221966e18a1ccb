//! networking.k8s.io/v1 Ingress, IngressClass and NetworkPolicy as kube-apiserver defaults and
//! validates them (stored and served; strata runs no ingress controller and does not enforce
//! network policies), and upstream's DefaultIngressClass admission plugin: an Ingress created
//! without a class gets the newest IngressClass annotated
//! `ingressclass.kubernetes.io/is-default-class: "true"`.

use serde_json::{json, Value};
use strata_store::Store;

use crate::status::{ApiError, Cause};

const DEFAULT_CLASS: &str = "ingressclass.kubernetes.io/is-default-class";
const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// `IsWildcardDNS1123Subdomain`: `*.` followed by a DNS subdomain.
fn wildcard_errors(host: &str) -> Vec<String> {
    match host.strip_prefix("*.") {
        Some(rest) if crate::object::is_dns_subdomain(rest) && host.len() <= 253 => Vec::new(),
        _ => vec!["a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into()],
    }
}

fn validate_backend(b: &Value, at: &str, causes: &mut Vec<Cause>) {
    let (svc, res) = (&b["service"], &b["resource"]);
    match (svc.is_object(), res.is_object()) {
        (true, true) => causes.push(Cause::invalid(at, &json!(""), "cannot set both resource and service backends")),
        (false, false) => causes.push(Cause::invalid(at, &json!(""), "resource or service backend is required")),
        (true, false) => {
            let name = svc["name"].as_str().unwrap_or("");
            if name.is_empty() {
                causes.push(Cause::required(&format!("{at}.service.name"), ""));
            } else {
                for e in crate::object::dns1035_label_errors(name) {
                    causes.push(Cause::invalid(&format!("{at}.service.name"), &json!(name), &e));
                }
            }
            let port = &svc["port"];
            let (pname, pnum) = (port["name"].as_str().unwrap_or(""), port["number"].as_i64().unwrap_or(0));
            if !pname.is_empty() && pnum != 0 {
                causes.push(Cause::invalid(at, &json!(""), "cannot set both port name & port number"));
            } else if !pname.is_empty() {
                for e in crate::object::dns1035_label_errors(pname).into_iter().take(1) {
                    causes.push(Cause::invalid(&format!("{at}.service.port.name"), &json!(pname), &e));
                }
            } else if pnum != 0 {
                if !(1..=65535).contains(&pnum) {
                    causes.push(Cause::invalid(&format!("{at}.service.port.number"), &json!(pnum), "must be between 1 and 65535, inclusive"));
                }
            } else {
                causes.push(Cause::required(at, "port name or number is required"));
            }
        }
        (false, true) => {
            for f in ["kind", "name"] {
                if res[f].as_str().unwrap_or("").is_empty() {
                    causes.push(Cause::required(&format!("{at}.resource.{f}"), ""));
                }
            }
        }
    }
}

/// `ValidateIngressCreate`/`ValidateIngressSpec`.
pub fn validate_ingress(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let rules = spec["rules"].as_array().cloned().unwrap_or_default();
    if spec["defaultBackend"].is_null() && rules.is_empty() {
        // Go prints the nil slice with %#v.
        causes.push(Cause {
            reason: "FieldValueInvalid",
            field: "spec".into(),
            message: "Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified".into(),
        });
    }
    if !spec["defaultBackend"].is_null() {
        validate_backend(&spec["defaultBackend"], "spec.defaultBackend", causes);
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let host = rule["host"].as_str().unwrap_or("");
        if !host.is_empty() {
            if is_ip(host) {
                causes.push(Cause::invalid(&format!("{at}.host"), &json!(host), "must be a DNS name, not an IP address"));
            }
            let errs = if host.contains('*') { wildcard_errors(host) } else { crate::object::dns_subdomain_errors(host) };
            for e in errs {
                causes.push(Cause::invalid(&format!("{at}.host"), &json!(host), &e));
            }
        }
        if rule["http"].is_null() {
            continue;
        }
        let paths = rule["http"]["paths"].as_array().cloned().unwrap_or_default();
        if paths.is_empty() {
            causes.push(Cause::required(&format!("{at}.http.paths"), ""));
        }
        for (j, p) in paths.iter().enumerate() {
            let pat = format!("{at}.http.paths[{j}]");
            let path = p["path"].as_str().unwrap_or("");
            match p["pathType"].as_str() {
                None => {
                    causes.push(Cause::required(&format!("{pat}.pathType"), "pathType must be specified"));
                    continue;
                }
                Some("Exact" | "Prefix") => {
                    if !path.starts_with('/') {
                        causes.push(Cause::invalid(&format!("{pat}.path"), &json!(path), "must be an absolute path"));
                    }
                    for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                        if path.contains(seq) {
                            causes.push(Cause::invalid(&format!("{pat}.path"), &json!(path), &format!("must not contain '{seq}'")));
                        }
                    }
                    for suffix in ["/..", "/."] {
                        if path.ends_with(suffix) {
                            causes.push(Cause::invalid(&format!("{pat}.path"), &json!(path), &format!("cannot end with '{suffix}'")));
                        }
                    }
                }
                Some("ImplementationSpecific") => {
                    if !path.is_empty() && !path.starts_with('/') {
                        causes.push(Cause::invalid(&format!("{pat}.path"), &json!(path), "must be an absolute path"));
                    }
                }
                Some(other) => causes.push(Cause::not_supported(&format!("{pat}.pathType"), &json!(other), &["Exact", "ImplementationSpecific", "Prefix"])),
            }
            validate_backend(&p["backend"], &format!("{pat}.backend"), causes);
        }
    }
    for (i, tls) in spec["tls"].as_array().into_iter().flatten().enumerate() {
        for (j, h) in tls["hosts"].as_array().into_iter().flatten().enumerate() {
            let host = h.as_str().unwrap_or("");
            let errs = if host.contains('*') { wildcard_errors(host) } else { crate::object::dns_subdomain_errors(host) };
            for e in errs {
                causes.push(Cause::invalid(&format!("spec.tls[{i}].hosts[{j}]"), &json!(host), &e));
            }
        }
    }
    if let Some(class) = spec["ingressClassName"].as_str() {
        for e in crate::object::dns_subdomain_errors(class) {
            causes.push(Cause::invalid("spec.ingressClassName", &json!(class), &e));
        }
        if let Some(a) = obj["metadata"]["annotations"][CLASS_ANNOTATION].as_str() {
            if a != class {
                causes.push(Cause::invalid(&format!("metadata.annotations.{CLASS_ANNOTATION}"), &json!(a), "must match `ingressClassName` when both are specified"));
            }
        }
    }
}

/// `SetDefaults_IngressClass` and `ValidateIngressClass`.
pub fn validate_ingress_class(obj: &mut Value, causes: &mut Vec<Cause>) {
    if obj["spec"]["parameters"].is_object() && obj["spec"]["parameters"]["scope"].is_null() {
        obj["spec"]["parameters"]["scope"] = json!("Cluster");
    }
    let controller = obj["spec"]["controller"].as_str().unwrap_or("");
    if controller.len() > 250 {
        causes.push(Cause { reason: "FieldValueTooLong", field: "spec.controller".into(), message: "Too long: may not be more than 250 bytes".into() });
    }
    if controller.is_empty() {
        causes.push(Cause::required("spec.controller", ""));
    } else {
        let ok = controller.split_once('/').is_some_and(|(domain, path)| crate::object::is_dns_subdomain(domain) && !path.is_empty());
        if !ok {
            causes.push(Cause::invalid("spec.controller", &json!(controller), "must be a domain-prefixed path (such as \"acme.io/foo\")"));
        }
    }
    let p = &obj["spec"]["parameters"];
    if p.is_object() {
        for f in ["kind", "name"] {
            if p[f].as_str().unwrap_or("").is_empty() {
                causes.push(Cause::required(&format!("spec.parameters.{f}"), &format!("{f} is required")));
            }
        }
        match p["scope"].as_str().unwrap_or("") {
            "Cluster" => {
                if !p["namespace"].is_null() {
                    causes.push(Cause { reason: "FieldValueForbidden", field: "spec.parameters.namespace".into(), message: "Forbidden: `parameters.scope` is set to 'Cluster'".into() });
                }
            }
            "Namespace" => {
                if p["namespace"].as_str().unwrap_or("").is_empty() {
                    causes.push(Cause::required("spec.parameters.namespace", "`parameters.scope` is set to 'Namespace'"));
                }
            }
            other => causes.push(Cause::not_supported("spec.parameters.scope", &json!(other), &["Cluster", "Namespace"])),
        }
    }
}

/// The controller of a class never changes.
pub fn validate_ingress_class_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    if new["spec"]["controller"] != old["spec"]["controller"] {
        causes.push(Cause::invalid("spec.controller", &new["spec"]["controller"], "field is immutable"));
    }
}

/// `SetDefaults_NetworkPolicy` and `ValidateNetworkPolicy`.
pub fn validate_network_policy(obj: &mut Value, causes: &mut Vec<Cause>) {
    let spec = &mut obj["spec"];
    if spec["policyTypes"].as_array().is_none_or(Vec::is_empty) {
        let mut types = vec![json!("Ingress")];
        if spec["egress"].as_array().is_some_and(|e| !e.is_empty()) {
            types.push(json!("Egress"));
        }
        spec["policyTypes"] = Value::Array(types);
    }
    for dir in ["ingress", "egress"] {
        for rule in spec[dir].as_array_mut().into_iter().flatten() {
            for port in rule["ports"].as_array_mut().into_iter().flatten() {
                if port["protocol"].is_null() {
                    port["protocol"] = json!("TCP");
                }
            }
        }
    }
    let spec = &obj["spec"];
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in spec[dir].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.{dir}[{i}]");
            for (j, port) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                let pat = format!("{at}.ports[{j}]");
                let proto = port["protocol"].as_str().unwrap_or("");
                if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                    causes.push(Cause::not_supported(&format!("{pat}.protocol"), &json!(proto), &["TCP", "UDP", "SCTP"]));
                }
                match &port["port"] {
                    Value::Number(n) => {
                        let p = n.as_i64().unwrap_or(0);
                        if !(1..=65535).contains(&p) {
                            causes.push(Cause::invalid(&format!("{pat}.port"), &json!(p), "must be between 1 and 65535, inclusive"));
                        }
                        if let Some(end) = port["endPort"].as_i64() {
                            if end < p {
                                causes.push(Cause::invalid(&format!("{pat}.endPort"), &json!(p), "must be greater than or equal to `port`"));
                            }
                        }
                    }
                    Value::String(name) => {
                        if name.is_empty() || name.len() > 15 || !name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') || !name.chars().any(|c| c.is_ascii_lowercase()) {
                            causes.push(Cause::invalid(&format!("{pat}.port"), &json!(name), "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"));
                        }
                        if !port["endPort"].is_null() {
                            causes.push(Cause::invalid(&format!("{pat}.endPort"), &port["endPort"], "may not be specified when `port` is non-numeric"));
                        }
                    }
                    _ => {
                        if !port["endPort"].is_null() {
                            causes.push(Cause::invalid(&format!("{pat}.endPort"), &port["endPort"], "may not be specified when `port` is not specified"));
                        }
                    }
                }
            }
            for (j, peer) in rule[peers].as_array().into_iter().flatten().enumerate() {
                let pat = format!("{at}.{peers}[{j}]");
                let selectors = !peer["podSelector"].is_null() || !peer["namespaceSelector"].is_null();
                let ip = &peer["ipBlock"];
                if !selectors && ip.is_null() {
                    causes.push(Cause::required(&pat, "must specify a peer"));
                } else if selectors && !ip.is_null() {
                    causes.push(Cause { reason: "FieldValueForbidden", field: pat.clone(), message: "Forbidden: may not specify both ipBlock and another peer".into() });
                }
                if !ip.is_null() {
                    validate_ip_block(ip, &format!("{pat}.ipBlock"), causes);
                }
            }
        }
    }
    let types: Vec<Value> = spec["policyTypes"].as_array().cloned().unwrap_or_default();
    if types.len() > 2 {
        causes.push(Cause::invalid("spec.policyTypes", &Value::Array(types.clone()), "may not specify more than two policyTypes"));
    }
    for (i, t) in types.iter().enumerate() {
        if !matches!(t.as_str(), Some("Ingress" | "Egress")) {
            causes.push(Cause::not_supported(&format!("spec.policyTypes[{i}]"), t, &["Ingress", "Egress"]));
        }
    }
}

/// A CIDR as (address bits, prefix length, is IPv4).
fn cidr(s: &str) -> Option<(u128, u32, bool)> {
    let (ip, len) = s.split_once('/')?;
    let len: u32 = len.parse().ok()?;
    match ip.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) if len <= 32 => Some((u128::from(u32::from(a)), len, true)),
        std::net::IpAddr::V6(a) if len <= 128 => Some((u128::from(a), len, false)),
        _ => None,
    }
}

fn validate_ip_block(ip: &Value, at: &str, causes: &mut Vec<Cause>) {
    let c = ip["cidr"].as_str().unwrap_or("");
    if c.is_empty() {
        causes.push(Cause::required(&format!("{at}.cidr"), ""));
        return;
    }
    let Some((net, len, v4)) = cidr(c) else {
        causes.push(Cause::invalid(&format!("{at}.cidr"), &json!(c), "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"));
        return;
    };
    let bits = if v4 { 32 } else { 128 };
    let mask = |l: u32| if l == 0 { 0 } else { (!0u128 >> (128 - bits)) & !((1u128 << (bits - l)) - 1) };
    for (i, e) in ip["except"].as_array().into_iter().flatten().enumerate() {
        let es = e.as_str().unwrap_or("");
        match cidr(es) {
            Some((enet, elen, ev4)) if ev4 == v4 && elen > len && (enet & mask(len)) == (net & mask(len)) => {}
            Some(_) => causes.push(Cause::invalid(&format!("{at}.except[{i}]"), &json!(es), "must be a strict subset of `cidr`")),
            None => causes.push(Cause::invalid(&format!("{at}.except[{i}]"), &json!(es), "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)")),
        }
    }
}

/// DefaultIngressClass admission: a created Ingress without a class (field or annotation) gets
/// the default class, the newest if several are marked.
pub async fn admit_ingress(store: &dyn Store, obj: &mut Value) -> Result<(), ApiError> {
    if !obj["spec"]["ingressClassName"].is_null() || !obj["metadata"]["annotations"][CLASS_ANNOTATION].is_null() {
        return Ok(());
    }
    let Some(r) = crate::resources::find("networking.k8s.io", "v1", "ingressclasses") else { return Ok(()) };
    let page = store.list(&r.key_prefix(), None, 0).await?;
    let mut defaults: Vec<Value> = page
        .items
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .filter(|c| c["metadata"]["annotations"][DEFAULT_CLASS] == "true")
        .collect();
    defaults.sort_by(|a, b| a["metadata"]["creationTimestamp"].as_str().cmp(&b["metadata"]["creationTimestamp"].as_str()));
    if let Some(newest) = defaults.last() {
        obj["spec"]["ingressClassName"] = newest["metadata"]["name"].clone();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ingress(spec: Value) -> Vec<String> {
        let mut c = Vec::new();
        validate_ingress(&json!({"metadata": {"name": "i"}, "spec": spec}), &mut c);
        c.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect()
    }

    #[test]
    fn ingresses_are_validated_as_upstream() {
        let ok = json!({"rules": [{"host": "a.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]});
        assert!(ingress(ok).is_empty());
        assert_eq!(ingress(json!({})), ["spec: Invalid value: []networking.IngressRule(nil): either `defaultBackend` or `rules` must be specified"]);
        let bad = json!({"rules": [{"host": "1.2.3.4", "http": {"paths": [{"path": "x", "pathType": "Exact", "backend": {"service": {"name": "web"}}}, {"path": "/"}]}}]});
        assert_eq!(
            ingress(bad),
            [
                "spec.rules[0].host: Invalid value: \"1.2.3.4\": must be a DNS name, not an IP address",
                "spec.rules[0].http.paths[0].path: Invalid value: \"x\": must be an absolute path",
                "spec.rules[0].http.paths[0].backend: Required value: port name or number is required",
                "spec.rules[0].http.paths[1].pathType: Required value: pathType must be specified",
            ]
        );
    }

    #[test]
    fn network_policies_are_defaulted_and_validated() {
        let mut np = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}], "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16", "11.0.0.0/16"]}, "podSelector": {}}]}]}});
        let mut c = Vec::new();
        validate_network_policy(&mut np, &mut c);
        assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let msgs: Vec<String> = c.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(
            msgs,
            [
                "spec.ingress[0].from[0]: Forbidden: may not specify both ipBlock and another peer",
                "spec.ingress[0].from[0].ipBlock.except[1]: Invalid value: \"11.0.0.0/16\": must be a strict subset of `cidr`",
            ]
        );
    }
}
