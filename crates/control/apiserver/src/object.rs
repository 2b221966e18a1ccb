//! Object metadata rules shared by every kind: name validation, system fields set on create,
//! `generation`, and what a `PUT` may and may not change.

use serde_json::{json, Value};

use crate::resources::Resource;
use crate::status::{ApiError, Cause};

/// RFC 1123 subdomain: what most kinds require of names.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// RFC 1123 label: namespaces, services.
pub fn is_dns_label(s: &str) -> bool {
    is_dns_subdomain(s) && s.len() <= 63 && !s.contains('.')
}

fn name_cause(r: &Resource, name: &str) -> Option<Cause> {
    let label = matches!(r.kind, "Namespace" | "Service");
    let ok = if label { is_dns_label(name) } else { is_dns_subdomain(name) };
    if ok {
        return None;
    }
    let msg = if label {
        format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
    } else {
        format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")
    };
    Some(Cause { reason: "FieldValueInvalid", field: "metadata.name".into(), message: msg })
}

pub fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// A random RFC 4122 version 4 UUID.
pub fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = |r: std::ops::Range<usize>| b[r].iter().map(|x| format!("{x:02x}")).collect::<String>();
    let v = (b[6] & 0x0f) | 0x40;
    let var = (b[8] & 0x3f) | 0x80;
    format!("{}-{}-{:02x}{}-{:02x}{}-{}", h(0..4), h(4..6), v, h(7..8), var, h(9..10), h(10..16))
}

pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Check the envelope of a request body: an object whose apiVersion/kind (when given) match
/// the endpoint, with metadata that is an object. Fills in apiVersion and kind.
pub fn check_envelope(r: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    };
    let api_version = r.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({api_version})"
            )))
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(r.kind));
        }
        Some(k) if k == r.kind => {}
        Some(k) => return Err(ApiError::bad_request(format!("the kind in the data ({k}) does not match the expected kind ({})", r.kind))),
    }
    match map.get("metadata") {
        None | Some(Value::Null) => {
            map.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(_)) => {}
        Some(_) => return Err(ApiError::bad_request("metadata must be an object")),
    }
    Ok(())
}

/// Prepare a new object: name (or generateName), namespace, system fields.
pub fn prepare_create(r: &Resource, obj: &mut Value, namespace: Option<&str>) -> Result<(), ApiError> {
    check_envelope(r, obj)?;
    let meta = &mut obj["metadata"];
    if meta["name"].as_str().unwrap_or("").is_empty() {
        match meta["generateName"].as_str() {
            Some(prefix) if !prefix.is_empty() => {
                let suffix: String = (0..5)
                    .map(|_| {
                        let chars = b"bcdfghjklmnpqrstvwxz2456789";
                        chars[rand::random::<usize>() % chars.len()] as char
                    })
                    .collect();
                meta["name"] = json!(format!("{prefix}{suffix}"));
            }
            _ => {
                let causes = vec![Cause { reason: "FieldValueRequired", field: "metadata.name".into(), message: "Required value: name or generateName is required".into() }];
                return Err(ApiError::invalid(r, "", causes));
            }
        }
    }
    let name = meta["name"].as_str().unwrap_or("").to_string();
    if let Some(c) = name_cause(r, &name) {
        return Err(ApiError::invalid(r, &name, vec![c]));
    }
    if r.namespaced {
        let ns = namespace.unwrap_or("default");
        match meta["namespace"].as_str() {
            None | Some("") => meta["namespace"] = json!(ns),
            Some(n) if n == ns => {}
            Some(_) => {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"))
            }
        }
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    // managedFields stay: field management (`crate::managed`) decides what to keep of them.
    for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        if let Some(m) = meta.as_object_mut() {
            m.remove(field);
        }
    }
    meta["uid"] = json!(uuid());
    meta["creationTimestamp"] = json!(now());
    if obj.get("spec").is_some() {
        obj["metadata"]["generation"] = json!(1);
    }
    Ok(())
}

/// Carry over what a client may not change on update (uid, creation time, deletion state,
/// and generation, which moves only when `spec` changes).
pub fn prepare_update(r: &Resource, new: &mut Value, old: &Value, status_only: bool) -> Result<(), ApiError> {
    check_envelope(r, new)?;
    let name = name_of(old).to_string();
    if name_of(new) != name {
        let c = Cause { reason: "FieldValueInvalid", field: "metadata.name".into(), message: format!("Invalid value: \"{}\": field is immutable", name_of(new)) };
        return Err(ApiError::invalid(r, &name, vec![c]));
    }
    if status_only {
        // A status update changes only status; everything else comes from the stored object,
        // but for the resourceVersion and the managedFields a server-side apply worked out.
        let status = new.get("status").cloned();
        let rv = new["metadata"]["resourceVersion"].clone();
        let managed = new["metadata"].get("managedFields").cloned();
        *new = old.clone();
        if let (Some(m), Some(meta)) = (managed, new.get_mut("metadata").and_then(Value::as_object_mut)) {
            meta.insert("managedFields".into(), m);
        }
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        new["metadata"]["resourceVersion"] = rv;
        return Ok(());
    }
    if r.subresources.contains(&"status") {
        // The main resource does not change status.
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    for field in ["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "namespace"] {
        match old["metadata"].get(field) {
            Some(v) => new["metadata"][field] = v.clone(),
            None => {
                if let Some(m) = new["metadata"].as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    if let Some(gen) = old["metadata"]["generation"].as_i64() {
        let bump = old.get("spec") != new.get("spec");
        new["metadata"]["generation"] = json!(if bump { gen + 1 } else { gen });
    }
    Ok(())
}

/// Set `metadata.resourceVersion` from the store's revision.
pub fn with_rv(mut obj: Value, rev: u64) -> Value {
    if obj.get("metadata").is_some() {
        obj["metadata"]["resourceVersion"] = json!(rev.to_string());
    }
    obj
}

/// Strip fields never stored (resourceVersion lives in the store's revision).
pub fn for_storage(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("Bad_Name"));
        assert!(!is_dns_subdomain("-a"));
        assert!(is_dns_label("abc-1"));
        assert!(!is_dns_label("a.b"));
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }

    #[test]
    fn create_sets_system_fields_and_rejects_bad_names() {
        let cm = find("", "v1", "configmaps").expect("cm");
        let mut o = json!({"metadata": {"name": "x", "resourceVersion": "5"}, "data": {}});
        prepare_create(cm, &mut o, Some("default")).expect("ok");
        assert_eq!(o["kind"], "ConfigMap");
        assert_eq!(o["metadata"]["namespace"], "default");
        assert!(o["metadata"].get("resourceVersion").is_none());
        assert!(o["metadata"]["uid"].is_string());
        let mut bad = json!({"metadata": {"name": "Bad_Name"}});
        let e = prepare_create(cm, &mut bad, Some("default")).expect_err("invalid");
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert!(e.message.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"));
        let mut wrong = json!({"kind": "Secret", "metadata": {"name": "x"}});
        assert_eq!(prepare_create(cm, &mut wrong, None).expect_err("kind").code, 400);
        let mut gen = json!({"metadata": {"generateName": "web-"}});
        prepare_create(cm, &mut gen, None).expect("generateName");
        assert!(name_of(&gen).starts_with("web-") && name_of(&gen).len() == 9);
    }
}
