//! `fieldValidation` (Strict, Warn, Ignore) for fields a kind does not have.
//!
//! Checked today: the top level of every kind and `metadata` (ObjectMeta), which have fixed
//! field sets; nested `spec`/`status` fields are not checked yet. As in Kubernetes, unknown
//! fields are dropped unless the request asked for `Strict`, which refuses it (400), and `Warn`
//! returns a `Warning` header for each.

use serde_json::Value;

use crate::resources::Resource;
use crate::status::ApiError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(v: Option<&str>) -> Result<Self, ApiError> {
        match v {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(ApiError::bad_request(format!("fieldValidation must be one of Ignore, Warn or Strict, got {other:?}"))),
        }
    }
}

const OBJECT_META: &[&str] = &[
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation", "creationTimestamp",
    "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations", "ownerReferences", "finalizers",
    "managedFields",
];

fn top_level(kind: &str) -> &'static [&'static str] {
    match kind {
        "ConfigMap" => &["data", "binaryData", "immutable"],
        "Secret" => &["data", "stringData", "type", "immutable"],
        "ServiceAccount" => &["secrets", "imagePullSecrets", "automountServiceAccountToken"],
        "Endpoints" => &["subsets"],
        "EndpointSlice" => &["addressType", "endpoints", "ports"],
        "Event" => &[
            "involvedObject", "reason", "message", "source", "firstTimestamp", "lastTimestamp", "count", "type", "eventTime",
            "series", "action", "related", "reportingComponent", "reportingInstance",
        ],
        "Role" => &["rules"],
        "ClusterRole" => &["rules", "aggregationRule"],
        "RoleBinding" | "ClusterRoleBinding" => &["subjects", "roleRef"],
        "Lease" => &["spec"],
        _ => &["spec", "status"],
    }
}

/// Remove (or, with Strict, refuse) fields `r`'s kind does not have. Returns warnings.
pub fn check(r: &Resource, obj: &mut Value, mode: FieldValidation) -> Result<Vec<String>, ApiError> {
    let mut unknown = Vec::new();
    if let Some(map) = obj.as_object_mut() {
        let allowed = top_level(r.kind);
        let extra: Vec<String> = map
            .keys()
            .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata") && !allowed.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in extra {
            map.remove(&k);
            unknown.push(k);
        }
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            let extra: Vec<String> = meta.keys().filter(|k| !OBJECT_META.contains(&k.as_str())).cloned().collect();
            for k in extra {
                meta.remove(&k);
                unknown.push(format!("metadata.{k}"));
            }
        }
    }
    if unknown.is_empty() {
        return Ok(vec![]);
    }
    let msgs: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    match mode {
        FieldValidation::Strict => Err(ApiError::bad_request(format!("strict decoding error: {}", msgs.join(", ")))),
        FieldValidation::Warn => Ok(msgs),
        FieldValidation::Ignore => Ok(vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use serde_json::json;

    #[test]
    fn strict_warn_ignore() {
        let cm = find("", "v1", "configmaps").expect("cm");
        let o = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "nmae": "y"}, "data": {}, "dtaa": {}});
        let e = check(cm, &mut o.clone(), FieldValidation::Strict).expect_err("strict");
        assert_eq!(e.code, 400);
        assert_eq!(e.message, "strict decoding error: unknown field \"dtaa\", unknown field \"metadata.nmae\"");
        let mut w = o.clone();
        assert_eq!(check(cm, &mut w, FieldValidation::Warn).expect("warn").len(), 2);
        assert!(w.get("dtaa").is_none() && w["metadata"].get("nmae").is_none(), "unknown fields are dropped");
        let mut i = o;
        assert!(check(cm, &mut i, FieldValidation::Ignore).expect("ignore").is_empty());
        let d = find("apps", "v1", "deployments").expect("d");
        assert!(check(d, &mut json!({"metadata": {}, "spec": {}, "status": {}}), FieldValidation::Strict).is_ok());
    }
}
