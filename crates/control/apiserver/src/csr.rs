//! CertificateSigningRequests (certificates.k8s.io/v1): what the API does on create and update
//! (upstream's strategy and validation, the `approval` and `status` subresources), and the two
//! controllers that upstream's kube-controller-manager runs for node client certificates,
//! here in the API server process: the approver (csrapproving: a node client CSR is approved
//! when its requester may `create` `certificatesigningrequests/nodeclient`, or
//! `.../selfnodeclient` when a node renews its own) and the signer (csrsigning: an approved
//! CSR of a kube-apiserver client signer gets a certificate from the cluster CA).
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

/// The parsed request: (common name, organizations, has alternative names), signature checked.
fn parse_request(pem: &str) -> Result<(String, Vec<String>, bool), String> {
    let der = rustls_pemfile::csr(&mut pem.as_bytes())
        .map_err(|e| e.to_string())?
        .ok_or("PEM block type must be CERTIFICATE REQUEST")?;
    use x509_parser::prelude::FromDer;
    let (_, req) = x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref()).map_err(|e| e.to_string())?;
    req.verify_signature().map_err(|e| format!("bad signature: {e}"))?;
    let subject = &req.certification_request_info.subject;
    let cn = subject.iter_common_name().next().and_then(|c| c.as_str().ok()).unwrap_or("").to_string();
    let orgs = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    let sans = req.requested_extensions().into_iter().flatten().any(|e| matches!(e, x509_parser::extensions::ParsedExtension::SubjectAlternativeName(_)));
    Ok((cn, orgs, sans))
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
        // The approver: node client certificates only.
        if signer != KUBELET_CLIENT_SIGNER {
            return None;
        }
        let (cn, orgs, sans) = parse_request(&pem).ok()?;
        check_kubelet_client(&cn, &orgs, sans, &usages(obj)).ok()?;
        let spec = &obj["spec"];
        let groups: Vec<String> = spec["groups"].as_array().into_iter().flatten().filter_map(|g| g.as_str().map(str::to_string)).collect();
        let requester = User {
            name: spec["username"].as_str().unwrap_or("").to_string(),
            groups,
            uid: spec["uid"].as_str().unwrap_or("").to_string(),
            extra: Default::default(),
        };
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
    // The signer: the API server's client signers.
    if signer != KUBELET_CLIENT_SIGNER && signer != CLIENT_SIGNER {
        return None;
    }
    let usages = usages(obj);
    let shape = match signer {
        KUBELET_CLIENT_SIGNER => parse_request(&pem).and_then(|(cn, orgs, sans)| check_kubelet_client(&cn, &orgs, sans, &usages)),
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
    fn conditions_are_validated() {
        let mut o = json!({"spec": {}, "status": {"conditions": [{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}]}});
        let mut causes = Vec::new();
        validate(&mut o, &mut causes);
        assert!(causes.iter().any(|c| c.message.contains("mutually exclusive")), "{causes:?}");
        assert!(causes.iter().any(|c| c.field == "spec.request"));
        assert!(causes.iter().any(|c| c.field == "spec.signerName"));
    }
}
