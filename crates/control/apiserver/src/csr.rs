//! CertificateSigningRequests (certificates.k8s.io/v1): what the API does on create and update
//! (upstream's strategy and validation, the `approval` and `status` subresources), and the two
//! controllers that upstream's kube-controller-manager runs for node client certificates,
//! here in the API server process: the approver (csrapproving: a node client CSR is approved
//! when its requester may `create` `certificatesigningrequests/nodeclient`, or
//! `.../selfnodeclient` when a node renews its own) and the signer (csrsigning: an approved
//! CSR of a kube-apiserver client signer gets a certificate from the cluster CA).
//!
//! Node serving certificates (`kubernetes.io/kubelet-serving`, what a joined agent's stream
//! endpoint presents to the API server) are signed here too. Upstream leaves their approval to
//! the cluster admin or an add-on; strata approves one, as k3s signs its agents' serving
//! certificates, only when the requester is the node named in the subject (its own client
//! certificate, not a bootstrap token) and every name it asks for is one of that Node's own
//! addresses (or its name) and no other Node's.
//!
//! The controllers follow the CSRs with one list and a watch of their prefix and write through
//! the store with compare-and-swap, as the RBAC index does.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Value};
use strata_store::Store;

use crate::auth::User;
use crate::pki::Pki;
use crate::rbac::{Attributes, Authorizer};
use crate::status::Cause;

/// Kubelets' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Other clients of the API server.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
/// Kubelets' serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";
const NODE_PREFIX: &str = "/registry/core/nodes/";
const PREFIX: &str = "/registry/certificates.k8s.io/certificatesigningrequests/";
/// Longest certificate the signer issues (kube-controller-manager's `--cluster-signing-duration`).
pub const SIGNING_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

fn required(field: &str) -> Cause {
    Cause { reason: "FieldValueRequired", field: field.into(), message: "Required value".into() }
}

fn invalid(field: &str, value: &Value, why: &str) -> Cause {
    Cause { reason: "FieldValueInvalid", field: field.into(), message: format!("Invalid value: {value}: {why}") }
}

/// The PEM of `spec.request` (JSON carries it base64-encoded).
pub fn request_pem(obj: &Value) -> Option<String> {
    let b = base64::engine::general_purpose::STANDARD.decode(obj["spec"]["request"].as_str()?).ok()?;
    String::from_utf8(b).ok()
}

/// A parsed request, its signature checked.
#[derive(Debug, Default)]
struct Request {
    cn: String,
    orgs: Vec<String>,
    dns: Vec<String>,
    ips: Vec<std::net::IpAddr>,
    /// Alternative names other than DNS names and IP addresses (emails, URIs, ...).
    other_sans: bool,
}

impl Request {
    fn has_sans(&self) -> bool {
        self.other_sans || !self.dns.is_empty() || !self.ips.is_empty()
    }
}

/// The parsed request: (common name, organizations, has alternative names), signature checked.
fn parse_request(pem: &str) -> Result<(String, Vec<String>, bool), String> {
    parse(pem).map(|r| {
        let sans = r.has_sans();
        (r.cn, r.orgs, sans)
    })
}

fn parse(pem: &str) -> Result<Request, String> {
    let der = rustls_pemfile::csr(&mut pem.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    use x509_parser::prelude::FromDer;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    req.verify_signature().map_err(|e| format!("bad signature: {e}"))?;
    let subject = &req.certification_request_info.subject;
    let cn = subject.iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or("").to_string();
    let orgs = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    let mut out = Request { cn, orgs, ..Default::default() };
    for e in req.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = e {
            for n in &san.general_names {
                match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => out.dns.push(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b).map(std::net::IpAddr::from).or_else(|_| <[u8; 16]>::try_from(*b).map(std::net::IpAddr::from)) {
                        Ok(ip) => out.ips.push(ip),
                        Err(_) => out.other_sans = true,
                    },
                    _ => out.other_sans = true,
                }
            }
        }
    }
    Ok(out)
}

/// Is `obj` Approved / Denied / Failed (a condition of that type with status True)?
pub fn has_condition(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == kind && c["status"].as_str().is_none_or(|s| s == "True"))
}

/// On create: the requester's identity goes into the spec, and there is no status yet.
pub fn prepare_create(user: &User, obj: &mut Value) {
    obj["spec"]["username"] = json!(user.name);
    if user.uid.is_empty() {
        if let Some(spec) = obj["spec"].as_object_mut() {
            spec.remove("uid");
        }
    } else {
        obj["spec"]["uid"] = json!(user.uid);
    }
    obj["spec"]["groups"] = json!(user.groups);
    if let Some(spec) = obj["spec"].as_object_mut() {
        spec.remove("extra");
    }
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
}

/// On update: the spec never changes; the main resource keeps the status, `approval` changes
/// only the conditions, `status` everything in status.
pub fn prepare_update(new: &mut Value, old: &Value, subresource: Option<&str>) {
    new["spec"] = old["spec"].clone();
    if subresource == Some("approval") {
        match old["status"].get("certificate") {
            Some(c) => new["status"]["certificate"] = c.clone(),
            None => {
                if let Some(st) = new["status"].as_object_mut() {
                    st.remove("certificate");
                }
            }
        }
    }
}

/// Validation (upstream's `ValidateCertificateSigningRequest`, the parts clients meet).
pub fn validate(obj: &mut Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    match request_pem(obj) {
        None if spec["request"].is_null() => causes.push(required("spec.request")),
        None => causes.push(invalid("spec.request", &json!("<bytes>"), "not valid base64 PEM")),
        Some(pem) => {
            if let Err(e) = parse_request(&pem) {
                causes.push(invalid("spec.request", &json!("<bytes>"), &e));
            }
        }
    }
    let signer = spec["signerName"].as_str().unwrap_or("");
    if signer.is_empty() {
        causes.push(required("spec.signerName"));
    } else if !signer.contains('/') || signer.split('/').count() != 2 || signer.starts_with('/') || signer.ends_with('/') {
        causes.push(invalid("spec.signerName", &spec["signerName"], "must be a fully qualified domain and path of the form 'example.com/signer-name'"));
    }
    match spec["usages"].as_array() {
        None => causes.push(required("spec.usages")),
        Some(u) if u.is_empty() => causes.push(required("spec.usages")),
        Some(_) => {}
    }
    if let Some(e) = spec["expirationSeconds"].as_i64() {
        if e < 600 {
            causes.push(invalid("spec.expirationSeconds", &spec["expirationSeconds"], "may not specify a duration less than 600 seconds (10 minutes)"));
        }
    }
    let conditions = obj["status"]["conditions"].as_array().cloned().unwrap_or_default();
    for (i, c) in conditions.iter().enumerate() {
        if c["type"].as_str().unwrap_or("").is_empty() {
            causes.push(required(&format!("status.conditions[{i}].type")));
        }
        for kind in ["Approved", "Denied", "Failed"] {
            if c["type"] == kind && conditions.iter().filter(|o| o["type"] == kind).count() > 1 {
                causes.push(Cause { reason: "FieldValueDuplicate", field: format!("status.conditions[{i}].type"), message: format!("Duplicate value: \"{kind}\"") });
            }
        }
    }
    if has_condition(obj, "Approved") && has_condition(obj, "Denied") {
        causes.push(invalid("status.conditions", &json!("Approved"), "Approved and Denied conditions are mutually exclusive"));
    }
}

/// Does a request with this subject and these usages have the shape of a kubelet client
/// certificate (upstream's `ValidateKubeletClientCSR`)? Err says what is wrong.
pub fn check_kubelet_client(cn: &str, orgs: &[String], sans: bool, usages: &[String]) -> Result<(), String> {
    if orgs != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if !cn.starts_with("system:node:") || cn.len() == "system:node:".len() {
        return Err("subject common name does not begin with system:node:".into());
    }
    if sans {
        return Err("alternative names are not allowed".into());
    }
    let allowed = ["digital signature", "key encipherment", "client auth"];
    if let Some(u) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Err(format!("usage {u:?} is not allowed"));
    }
    if !usages.iter().any(|u| u == "client auth") || !usages.iter().any(|u| u == "digital signature") {
        return Err("usages must include \"client auth\" and \"digital signature\"".into());
    }
    Ok(())
}

/// Does a request have the shape of a kubelet serving certificate (upstream's
/// `ValidateKubeletServingCSR`)? Err says what is wrong.
fn check_kubelet_serving(r: &Request, usages: &[String]) -> Result<(), String> {
    if r.orgs != ["system:nodes"] {
        return Err("subject organization is not system:nodes".into());
    }
    if !r.cn.starts_with("system:node:") || r.cn.len() == "system:node:".len() {
        return Err("subject common name does not begin with system:node:".into());
    }
    if r.other_sans {
        return Err("only DNS names and IP addresses are allowed as alternative names".into());
    }
    if r.dns.is_empty() && r.ips.is_empty() {
        return Err("at least one DNS name or IP address is required".into());
    }
    let allowed = ["digital signature", "key encipherment", "server auth"];
    if let Some(u) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
        return Err(format!("usage {u:?} is not allowed"));
    }
    if !usages.iter().any(|u| u == "server auth") {
        return Err("usages must include \"server auth\"".into());
    }
    Ok(())
}

/// The names a Node may have in its serving certificate: its name and its addresses.
fn node_names(node: &Value) -> (Vec<String>, Vec<std::net::IpAddr>) {
    let mut dns = vec![node["metadata"]["name"].as_str().unwrap_or("").to_string()];
    let mut ips = Vec::new();
    for a in node["status"]["addresses"].as_array().into_iter().flatten() {
        let addr = a["address"].as_str().unwrap_or("");
        match a["type"].as_str().unwrap_or("") {
            "InternalIP" | "ExternalIP" => ips.extend(addr.parse::<std::net::IpAddr>().ok()),
            "Hostname" | "InternalDNS" | "ExternalDNS" => dns.push(addr.to_string()),
            _ => {}
        }
    }
    (dns, ips)
}

/// May `requester` have a serving certificate for `r`? Only the node itself, only for its own
/// name and addresses, none of which another Node has.
async fn serving_approvable(store: &dyn Store, requester: &User, r: &Request) -> Result<(), String> {
    if requester.name != r.cn || !requester.groups.iter().any(|g| g == "system:nodes") {
        return Err(format!("requested by {:?}, not by the node {:?} itself", requester.name, r.cn));
    }
    let name = &r.cn["system:node:".len()..];
    let node = match store.get(&format!("{NODE_PREFIX}{name}")).await {
        Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value).map_err(|e| e.to_string())?,
        Ok(None) => return Err(format!("node {name:?} is not registered")),
        Err(e) => return Err(e.to_string()),
    };
    let (dns, ips) = node_names(&node);
    if let Some(d) = r.dns.iter().find(|d| !dns.contains(d)) {
        return Err(format!("{d:?} is not a name of node {name:?}"));
    }
    if let Some(ip) = r.ips.iter().find(|ip| !ips.contains(ip)) {
        return Err(format!("{ip} is not an address of node {name:?}"));
    }
    let others = store.list(NODE_PREFIX, None, 0).await.map_err(|e| e.to_string())?;
    for kv in &others.items {
        let Ok(other) = serde_json::from_slice::<Value>(&kv.value) else { continue };
        if other["metadata"]["name"].as_str() == Some(name) {
            continue;
        }
        let (_, their) = node_names(&other);
        if let Some(ip) = r.ips.iter().find(|ip| their.contains(ip)) {
            return Err(format!("{ip} is also an address of node {:?}", other["metadata"]["name"].as_str().unwrap_or("")));
        }
    }
    Ok(())
}

fn usages(obj: &Value) -> Vec<String> {
    obj["spec"]["usages"].as_array().into_iter().flatten().filter_map(|u| u.as_str().map(str::to_string)).collect()
}

fn condition(kind: &str, reason: &str, message: &str) -> Value {
    let now = crate::object::now();
    json!({ "type": kind, "status": "True", "reason": reason, "message": message, "lastUpdateTime": now, "lastTransitionTime": now })
}

/// What the controllers do with one CSR: Some(new object) when it must change.
async fn reconcile(obj: &Value, store: &dyn Store, authz: &Authorizer, pki: &Pki) -> Option<Value> {
    let signer = obj["spec"]["signerName"].as_str().unwrap_or("");
    if has_condition(obj, "Denied") || has_condition(obj, "Failed") || obj["status"]["certificate"].is_string() {
        return None;
    }
    let pem = request_pem(obj)?;
    if !has_condition(obj, "Approved") {
        // The approver: node client and serving certificates only.
        let spec = &obj["spec"];
        let groups: Vec<String> = spec["groups"].as_array().into_iter().flatten().filter_map(|g| g.as_str().map(str::to_string)).collect();
        let requester = User {
            name: spec["username"].as_str().unwrap_or("").to_string(),
            groups,
            uid: spec["uid"].as_str().unwrap_or("").to_string(),
            extra: Default::default(),
        };
        if signer == KUBELET_SERVING_SIGNER {
            let r = parse(&pem).ok()?;
            check_kubelet_serving(&r, &usages(obj)).ok()?;
            if let Err(why) = serving_approvable(store, &requester, &r).await {
                tracing::info!(csr = obj["metadata"]["name"].as_str().unwrap_or(""), %why, "not approving a serving certificate request");
                return None;
            }
            let mut out = obj.clone();
            let mut conditions = out["status"]["conditions"].as_array().cloned().unwrap_or_default();
            conditions.push(condition("Approved", "AutoApproved", "Auto approving the node's serving certificate for its own name and addresses."));
            out["status"]["conditions"] = json!(conditions);
            return Some(out);
        }
        if signer != KUBELET_CLIENT_SIGNER {
            return None;
        }
        let (cn, orgs, sans) = parse_request(&pem).ok()?;
        check_kubelet_client(&cn, &orgs, sans, &usages(obj)).ok()?;
        let may = |sub: &'static str| Attributes::resource("create", "certificates.k8s.io", "certificatesigningrequests", sub, "", "");
        let mut allowed = false;
        if requester.name == cn {
            allowed = authz.allowed(store, &requester, &may("selfnodeclient")).await.unwrap_or(false);
        }
        if !allowed {
            allowed = authz.allowed(store, &requester, &may("nodeclient")).await.unwrap_or(false);
        }
        if !allowed {
            return None;
        }
        let mut out = obj.clone();
        let mut conditions = out["status"]["conditions"].as_array().cloned().unwrap_or_default();
        conditions.push(condition("Approved", "AutoApproved", "Auto approving kubelet client certificate after SubjectAccessReview."));
        out["status"]["conditions"] = json!(conditions);
        return Some(out);
    }
    // The signer: the API server's client signers and the kubelet serving signer.
    if signer != KUBELET_CLIENT_SIGNER && signer != CLIENT_SIGNER && signer != KUBELET_SERVING_SIGNER {
        return None;
    }
    let usages = usages(obj);
    let shape = match signer {
        KUBELET_CLIENT_SIGNER => parse_request(&pem).and_then(|(cn, orgs, sans)| check_kubelet_client(&cn, &orgs, sans, &usages)),
        KUBELET_SERVING_SIGNER => parse(&pem).and_then(|r| check_kubelet_serving(&r, &usages)),
        _ => Ok(()),
    };
    let lifetime = match obj["spec"]["expirationSeconds"].as_i64() {
        Some(s) if s > 0 => Duration::from_secs(s as u64).min(SIGNING_DURATION),
        _ => SIGNING_DURATION,
    };
    let mut out = obj.clone();
    let signed = shape.and_then(|()| crate::pki::sign_request(pki, &pem, &usages, time::Duration::seconds(lifetime.as_secs() as i64)).map_err(|e| e.to_string()));
    match signed {
        Ok(cert) => out["status"]["certificate"] = json!(base64::engine::general_purpose::STANDARD.encode(cert)),
        Err(e) => {
            let mut conditions = out["status"]["conditions"].as_array().cloned().unwrap_or_default();
            conditions.push(condition("Failed", "SignerValidationFailure", &e));
            out["status"]["conditions"] = json!(conditions);
        }
    }
    Some(out)
}

async fn reconcile_key(store: &dyn Store, authz: &Authorizer, pki: &Pki, key: &str, value: &[u8], rev: u64) {
    let Ok(obj) = serde_json::from_slice::<Value>(value) else { return };
    if let Some(new) = reconcile(&obj, store, authz, pki).await {
        match store.update(key, crate::object::for_storage(&new), rev).await {
            Ok(_) => tracing::info!(%key, "certificate signing request approved or signed"),
            // Changed meanwhile: its next event brings it back.
            Err(strata_store::Error::Conflict { .. } | strata_store::Error::NotFound(_)) => {}
            Err(e) => tracing::warn!(%key, error = %e, "updating a certificate signing request"),
        }
    }
}

/// Run the approver and signer for ever.
pub async fn run(store: Arc<dyn Store>, authz: Authorizer, pki: Pki) {
    loop {
        let page = match store.list(PREFIX, None, 0).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "listing certificate signing requests");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for kv in &page.items {
            reconcile_key(store.as_ref(), &authz, &pki, &kv.key, &kv.value, kv.mod_revision).await;
        }
        let mut stream = match store.watch(PREFIX, page.revision).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "watching certificate signing requests");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) if ev.kind == strata_store::EventKind::Put => {
                    reconcile_key(store.as_ref(), &authz, &pki, &ev.kv.key, &ev.kv.value, ev.kv.mod_revision).await;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "certificate signing request watch ended; relisting");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_client_shape() {
        let u = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let nodes = u(&["system:nodes"]);
        assert!(check_kubelet_client("system:node:a", &nodes, false, &u(&["digital signature", "client auth"])).is_ok());
        assert!(check_kubelet_client("system:node:a", &nodes, false, &u(&["digital signature", "key encipherment", "client auth"])).is_ok());
        assert!(check_kubelet_client("system:node:a", &u(&["system:masters"]), false, &u(&["digital signature", "client auth"])).is_err());
        assert!(check_kubelet_client("admin", &nodes, false, &u(&["digital signature", "client auth"])).is_err());
        assert!(check_kubelet_client("system:node:", &nodes, false, &u(&["digital signature", "client auth"])).is_err());
        assert!(check_kubelet_client("system:node:a", &nodes, true, &u(&["digital signature", "client auth"])).is_err());
        assert!(check_kubelet_client("system:node:a", &nodes, false, &u(&["digital signature", "server auth", "client auth"])).is_err());
    }

    #[test]
    fn kubelet_serving_shape() {
        let u = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = Request { cn: "system:node:a".into(), orgs: u(&["system:nodes"]), ips: vec!["10.0.0.2".parse().expect("ip")], ..Default::default() };
        let serving = u(&["digital signature", "key encipherment", "server auth"]);
        assert!(check_kubelet_serving(&ok, &serving).is_ok());
        assert!(check_kubelet_serving(&ok, &u(&["digital signature", "client auth"])).is_err());
        assert!(check_kubelet_serving(&ok, &u(&["digital signature"])).is_err());
        assert!(check_kubelet_serving(&Request { ips: vec![], ..Request { cn: ok.cn.clone(), orgs: ok.orgs.clone(), ..Default::default() } }, &serving).is_err());
        assert!(check_kubelet_serving(&Request { other_sans: true, cn: ok.cn.clone(), orgs: ok.orgs.clone(), ips: ok.ips.clone(), ..Default::default() }, &serving).is_err());
        assert!(check_kubelet_serving(&Request { cn: "admin".into(), orgs: ok.orgs.clone(), ips: ok.ips.clone(), ..Default::default() }, &serving).is_err());
        assert!(check_kubelet_serving(&Request { cn: ok.cn.clone(), orgs: u(&["system:masters"]), ips: ok.ips.clone(), ..Default::default() }, &serving).is_err());
    }

    #[test]
    fn conditions_are_validated() {
        let mut o = json!({"spec": {}, "status": {"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]}});
        let mut causes = Vec::new();
        validate(&mut o, &mut causes);
        assert!(causes.iter().any(|c| c.message.contains("mutually exclusive")), "{causes:?}");
        assert!(causes.iter().any(|c| c.field == "spec.request"));
        assert!(causes.iter().any(|c| c.field == "spec.signerName"));
    }
}
