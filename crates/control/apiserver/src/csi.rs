//! storage.k8s.io/v1 CSIDriver, CSINode, CSIStorageCapacity and VolumeAttachment as kube-apiserver defaults and
//! validates them (stored and served; strata's own volumes do not go through CSI, so nothing
//! acts on them yet).

use serde_json::{json, Value};

use crate::status::Cause;

/// A CSI driver name (`ValidateCSIDriverName`): a DNS subdomain of at most 63 characters.
fn driver_name(name: &str, at: &str, causes: &mut Vec<Cause>) {
    if name.is_empty() {
        causes.push(Cause::required(at, ""));
        return;
    }
    if name.len() > 63 {
        causes.push(Cause { reason: "FieldValueTooLong", field: at.into(), message: "Too long: may not be more than 63 bytes".to_string() });
    }
    for e in crate::object::dns_subdomain_errors(name) {
        causes.push(Cause::invalid(at, &json!(name), &e));
    }
}

/// `SetDefaults_CSIDriver` and `ValidateCSIDriver`.
pub fn validate_driver(obj: &mut Value, causes: &mut Vec<Cause>) {
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    for (f, d) in [
        ("attachRequired", json!(true)),
        ("podInfoOnMount", json!(false)),
        ("storageCapacity", json!(false)),
        ("fsGroupPolicy", json!("ReadWriteOnceWithFSType")),
        ("requiresRepublish", json!(false)),
        ("seLinuxMount", json!(false)),
        ("volumeLifecycleModes", json!(["Persistent"])),
    ] {
        if spec[f].is_null() {
            spec[f] = d;
        }
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if name.len() > 63 {
        causes.push(Cause { reason: "FieldValueTooLong", field: "metadata.name".into(), message: "Too long: may not be more than 63 bytes".into() });
    }
    let spec = &obj["spec"];
    for (i, m) in spec["volumeLifecycleModes"].as_array().into_iter().flatten().enumerate() {
        if !matches!(m.as_str(), Some("Persistent" | "Ephemeral")) {
            causes.push(Cause::not_supported(&format!("spec.volumeLifecycleModes[{i}]"), m, &["Ephemeral", "Persistent"]));
        }
    }
    if !matches!(spec["fsGroupPolicy"].as_str(), Some("File" | "None" | "ReadWriteOnceWithFSType")) {
        causes.push(Cause::not_supported("spec.fsGroupPolicy", &spec["fsGroupPolicy"], &["File", "None", "ReadWriteOnceWithFSType"]));
    }
    let mut audiences: Vec<&str> = Vec::new();
    for (i, t) in spec["tokenRequests"].as_array().into_iter().flatten().enumerate() {
        let a = t["audience"].as_str().unwrap_or("");
        if audiences.contains(&a) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("spec.tokenRequests[{i}].audience"), message: format!("Duplicate value: {}", json!(a)) });
        }
        audiences.push(a);
        if let Some(secs) = t["expirationSeconds"].as_i64() {
            if secs < 600 {
                causes.push(Cause::invalid(&format!("spec.tokenRequests[{i}].expirationSeconds"), &json!(secs), "may not specify a duration less than 10 minutes"));
            }
            if secs > 1 << 32 {
                causes.push(Cause::invalid(&format!("spec.tokenRequests[{i}].expirationSeconds"), &json!(secs), "may not specify a duration larger than 2^32 seconds"));
            }
        }
    }
}

/// `ValidateCSIDriverUpdate`: attachRequired never changes (upstream names the path
/// `spec.attachedRequired`).
pub fn validate_driver_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    if new["spec"]["attachRequired"] != old["spec"]["attachRequired"] {
        causes.push(Cause::invalid("spec.attachedRequired", &new["spec"]["attachRequired"], "field is immutable"));
    }
}

/// `ValidateCSINode`.
pub fn validate_node(obj: &Value, causes: &mut Vec<Cause>) {
    let mut names: Vec<&str> = Vec::new();
    for (i, d) in obj["spec"]["drivers"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.drivers[{i}]");
        let name = d["name"].as_str().unwrap_or("");
        driver_name(name, &format!("{at}.name"), causes);
        if names.contains(&name) {
            causes.push(Cause { reason: "FieldValueDuplicate", field: format!("{at}.name"), message: format!("Duplicate value: {}", json!(name)) });
        }
        names.push(name);
        let id = d["nodeID"].as_str().unwrap_or("");
        if id.is_empty() {
            causes.push(Cause::required(&format!("{at}.nodeID"), ""));
        } else if id.len() > 192 {
            causes.push(Cause::invalid(&format!("{at}.nodeID"), &json!(id), "must be 192 characters or less"));
        }
        for (j, k) in d["topologyKeys"].as_array().into_iter().flatten().enumerate() {
            let k = k.as_str().unwrap_or("");
            if k.is_empty() {
                causes.push(Cause::required(&format!("{at}.topologyKeys[{j}]"), ""));
            }
            for e in crate::object::label_key_errors(k) {
                causes.push(Cause::invalid(&format!("{at}.topologyKeys[{j}]"), &json!(k), &e));
            }
        }
        if let Some(n) = d["allocatable"]["count"].as_i64() {
            if n < 0 {
                causes.push(Cause::invalid(&format!("{at}.allocatable.count"), &json!(n), "must be greater than or equal to 0"));
            }
        }
    }
}

/// `ValidateVolumeAttachment`.
pub fn validate_attachment(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    driver_name(spec["attacher"].as_str().unwrap_or(""), "spec.attacher", causes);
    if spec["nodeName"].as_str().unwrap_or("").is_empty() {
        causes.push(Cause::required("spec.nodeName", ""));
    }
    let (pv, inline) = (&spec["source"]["persistentVolumeName"], &spec["source"]["inlineVolumeSpec"]);
    if pv.is_null() == inline.is_null() {
        causes.push(Cause::required("spec.source", "must specify exactly one of inlineVolumeSpec and persistentVolumeName"));
    } else if pv.as_str() == Some("") {
        causes.push(Cause::required("spec.source.persistentVolumeName", "must specify non empty persistentVolumeName"));
    }
}

/// `ValidateCSIStorageCapacity`: a storage class name (a DNS subdomain), capacities of zero or
/// more. Stored and served for schedulers (kube-scheduler's VolumeBinding plugin lists them);
/// strata's own volumes publish none.
pub fn validate_capacity(obj: &Value, causes: &mut Vec<Cause>) {
    let class = &obj["storageClassName"];
    let name = class.as_str().unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::invalid("storageClassName", &json!(name), crate::object::DNS1123_SUBDOMAIN_MSG));
    }
    for e in if name.is_empty() { Vec::new() } else { crate::object::dns_subdomain_errors(name) } {
        causes.push(Cause::invalid("storageClassName", class, &e));
    }
    for f in ["capacity", "maximumVolumeSize"] {
        let v = &obj[f];
        if v.is_null() {
            continue;
        }
        match crate::quantity::Quantity::of(v) {
            None => causes.push(Cause::invalid(f, v, crate::quantity::SYNTAX)),
            Some(q) if q.value() < 0 => causes.push(Cause::invalid(f, v, "must be greater than or equal to 0")),
            Some(_) => {}
        }
    }
}

/// A CSIStorageCapacity's topology and class never change (`ValidateCSIStorageCapacityUpdate`).
pub fn validate_capacity_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    for f in ["nodeTopology", "storageClassName"] {
        if new[f] != old[f] {
            causes.push(Cause::invalid(f, &new[f], "field is immutable"));
        }
    }
}

/// A VolumeAttachment's spec never changes.
pub fn validate_attachment_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    if new["spec"] != old["spec"] {
        causes.push(Cause::invalid("spec", &new["spec"], "field is immutable"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drivers_nodes_and_attachments_as_upstream() {
        let mut d = json!({"metadata": {"name": "csi.example.com"}});
        let mut c = Vec::new();
        validate_driver(&mut d, &mut c);
        assert!(c.is_empty());
        assert_eq!(d["spec"]["attachRequired"], true);
        assert_eq!(d["spec"]["volumeLifecycleModes"], json!(["Persistent"]));
        let mut c = Vec::new();
        validate_attachment(&json!({"spec": {"attacher": "csi.example.com", "nodeName": "n", "source": {}}}), &mut c);
        assert_eq!(c[0].message, "Required value: must specify exactly one of inlineVolumeSpec and persistentVolumeName");
        let mut c = Vec::new();
        validate_node(&json!({"spec": {"drivers": [{"name": "a.b", "nodeID": "x"}, {"name": "a.b", "nodeID": ""}]}}), &mut c);
        let msgs: Vec<String> = c.into_iter().map(|c| format!("{}: {}", c.field, c.message)).collect();
        assert_eq!(msgs, ["spec.drivers[1].name: Duplicate value: \"a.b\"", "spec.drivers[1].nodeID: Required value"]);
    }
}
