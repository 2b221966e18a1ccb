//! Object metadata rules shared by every kind: name validation, system fields set on create,
//! `generation`, and what a `PUT` may and may not change.

use serde_json::{json, Value};

use crate::resources::Resource;
use crate::status::{ApiError, Cause};

// Upstream's messages (k8s.io/apimachinery/pkg/util/validation): the length first, then the
// format, each a separate cause.

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
pub const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_KEY_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// Longest label value and label key name part.
const LABEL_MAX: usize = 63;
/// Most bytes of annotations (keys and values) on one object.
pub const ANNOTATIONS_MAX: usize = 256 * 1024;

fn max_len(n: usize) -> String {
    format!("must be no more than {n} characters")
}

fn label_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn subdomain_ok(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(label_ok)
}

/// `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`: a label key's name part, or a label value.
fn qualified_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// RFC 1123 subdomain (`IsDNS1123Subdomain`): what most kinds require of names.
pub fn dns_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len(253));
    }
    if !subdomain_ok(s) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

/// RFC 1123 label (`IsDNS1123Label`): namespaces.
pub fn dns_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len(63));
    }
    if !label_ok(s) {
        errs.push(if subdomain_ok(s) { "must not contain dots".to_string() } else { DNS1123_LABEL_MSG.to_string() });
    }
    errs
}

/// RFC 1035 label (`IsDNS1035Label`): services.
pub fn dns1035_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len(63));
    }
    if !(label_ok(s) && s.as_bytes()[0].is_ascii_lowercase()) {
        errs.push(DNS1035_LABEL_MSG.to_string());
    }
    errs
}

/// A path segment (`IsValidPathSegmentName`): RBAC objects, whose names carry ':'.
pub fn path_segment_errors(s: &str) -> Vec<String> {
    if s == "." || s == ".." {
        return vec![format!("may not be '{s}'")];
    }
    ["/", "%"].iter().filter(|c| s.contains(**c)).map(|c| format!("may not contain '{c}'")).collect()
}

pub fn is_dns_subdomain(s: &str) -> bool {
    dns_subdomain_errors(s).is_empty()
}

pub fn is_dns_label(s: &str) -> bool {
    dns_label_errors(s).is_empty()
}

/// A label key (`IsQualifiedName`): an optional DNS subdomain prefix and '/', then a name.
pub fn label_key_errors(key: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(dns_subdomain_errors(prefix).into_iter().map(|m| format!("prefix part {m}")));
            }
            *name
        }
        _ => {
            return vec![format!("a valid label key {LABEL_KEY_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')")];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > LABEL_MAX {
        errs.push(format!("name part {}", max_len(LABEL_MAX)));
    }
    if !qualified_ok(name) {
        errs.push(format!("name part {LABEL_KEY_NAME_MSG}"));
    }
    errs
}

/// A label value (`IsValidLabelValue`).
pub fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > LABEL_MAX {
        errs.push(max_len(LABEL_MAX));
    }
    if !(v.is_empty() || qualified_ok(v)) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

fn invalid_value(field: &str, value: &str, why: String) -> Cause {
    Cause { reason: "FieldValueInvalid", field: field.into(), message: format!("Invalid value: {}: {why}", json!(value)) }
}

fn name_cause(r: &Resource, name: &str) -> Vec<Cause> {
    let errs = match r.builtin() {
        "Namespace" => dns_label_errors(name),
        "Service" => dns1035_label_errors(name),
        "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding" => path_segment_errors(name),
        _ => dns_subdomain_errors(name),
    };
    errs.into_iter().map(|m| invalid_value("metadata.name", name, m)).collect()
}

/// `ValidateLabels` and `ValidateAnnotations` of `metadata`: label keys and values, and the
/// annotations' total size.
pub fn metadata_causes(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            causes.extend(label_key_errors(k).into_iter().map(|m| invalid_value("metadata.labels", k, m)));
            match v.as_str() {
                Some(v) => causes.extend(label_value_errors(v).into_iter().map(|m| invalid_value("metadata.labels", v, m))),
                None => causes.push(Cause { reason: "FieldValueInvalid", field: format!("metadata.labels[{k}]"), message: "Invalid value: must be a string".into() }),
            }
        }
    }
    if let Some(annotations) = obj["metadata"]["annotations"].as_object() {
        let mut total = 0;
        for (k, v) in annotations {
            causes.extend(label_key_errors(&k.to_ascii_lowercase()).into_iter().map(|m| invalid_value("metadata.annotations", k, m)));
            total += k.len() + v.as_str().map_or(0, str::len);
        }
        if total > ANNOTATIONS_MAX {
            causes.push(Cause { reason: "FieldValueTooLong", field: "metadata.annotations".into(), message: format!("Too long: may not be more than {ANNOTATIONS_MAX} bytes") });
        }
    }
    causes
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
    // The same text as `format("%Y-%m-%dT%H:%M:%SZ")`, without parsing a format string per call.
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
    let causes = name_cause(r, &name);
    if !causes.is_empty() {
        return Err(ApiError::invalid(r, &name, causes));
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
    if obj.get("spec").is_some() || r.custom {
        obj["metadata"]["generation"] = json!(1);
    }
    Ok(())
}

/// What a write to a kind's `status` subresource (or a CSR's `approval`) keeps of the request's
/// metadata, as the `PrepareForUpdate` of upstream's status strategies (k8s.io/kubernetes
/// `pkg/registry/<group>/<kind>/strategy.go`, apiextensions-apiserver's `customresource`,
/// kube-aggregator's `apiservice`): each puts the stored spec back; the metadata is the
/// request's (labels, annotations, finalizers, ownerReferences may change) but for the fields a
/// strategy resets.
#[derive(Debug, PartialEq)]
enum StatusMetadata {
    /// The request's metadata, but these fields come from the stored object.
    Request { stored: &'static [&'static str] },
    /// The stored metadata whole (managedFields and resourceVersion aside): custom resources
    /// and the flowcontrol kinds copy the old object and set only its status.
    Stored,
}

/// `metav1.ResetObjectMetaForStatus` (generation and deletionTimestamp are reset for every
/// update anyway).
const RESET_FOR_STATUS: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

fn status_metadata(r: &Resource) -> StatusMetadata {
    match (r.group, r.builtin()) {
        // customresource/status_strategy.go; strata's VirtualMachine stands for KubeVirt's
        // custom kind, so it follows the same strategy.
        (_, "") | ("strata.dev", _) => StatusMetadata::Stored,
        // flowschema and prioritylevelconfiguration: `newObj.ObjectMeta = oldObj.ObjectMeta`.
        ("flowcontrol.apiserver.k8s.io", _) => StatusMetadata::Stored,
        // deployment: `newDeployment.Labels = oldDeployment.Labels`.
        ("apps", "Deployment") => StatusMetadata::Request { stored: &["labels"] },
        // pod: owner references are the garbage collector's, never the kubelet's.
        ("", "Pod") => StatusMetadata::Request { stored: &["ownerReferences"] },
        // apiservice: labels, annotations, finalizers and owner references of the old object.
        ("apiregistration.k8s.io", "APIService") => StatusMetadata::Request { stored: RESET_FOR_STATUS },
        // The strategies calling ResetObjectMetaForStatus (volumeattachment,
        // validatingadmissionpolicy, servicecidr, resourceclaim, storageversion,
        // storageversionmigration).
        ("storage.k8s.io", "VolumeAttachment")
        | ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy")
        | ("networking.k8s.io", "ServiceCIDR")
        | ("resource.k8s.io", "ResourceClaim")
        | ("internal.apiserver.k8s.io", "StorageVersion")
        | ("storagemigration.k8s.io", "StorageVersionMigration") => StatusMetadata::Request { stored: RESET_FOR_STATUS },
        // Everything else resets only the spec: Job, CronJob, ReplicaSet, StatefulSet,
        // DaemonSet, ReplicationController, Namespace, Node, Service, ResourceQuota, PV, PVC,
        // HPA, PDB, Ingress, CSR; and CustomResourceDefinition, whose strategy calls
        // ResetObjectMetaForStatus with the new object as the old one (a no-op).
        _ => StatusMetadata::Request { stored: &[] },
    }
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
    // A uid given must be the stored one (an update without one keeps it: `rest.BeforeUpdate`).
    if let Some(uid) = new["metadata"]["uid"].as_str().filter(|u| !u.is_empty()) {
        if Some(uid) != old["metadata"]["uid"].as_str() {
            let c = Cause { reason: "FieldValueInvalid", field: "metadata.uid".into(), message: format!("Invalid value: \"{uid}\": field is immutable") };
            return Err(ApiError::invalid(r, &name, vec![c]));
        }
    }
    if status_only {
        // A status write keeps the stored object but its status; its metadata is the request's,
        // less what the kind's status strategy puts back (system fields below, as every update).
        let status = new.get("status").cloned();
        let rv = new["metadata"]["resourceVersion"].clone();
        let managed = new["metadata"].get("managedFields").cloned();
        let mut meta = new.get("metadata").cloned().unwrap_or_else(|| json!({}));
        match status_metadata(r) {
            StatusMetadata::Stored => meta = old.get("metadata").cloned().unwrap_or_else(|| json!({})),
            StatusMetadata::Request { stored } => {
                for field in stored {
                    match old["metadata"].get(*field) {
                        Some(v) => meta[*field] = v.clone(),
                        None => {
                            if let Some(m) = meta.as_object_mut() {
                                m.remove(*field);
                            }
                        }
                    }
                }
            }
        }
        *new = old.clone();
        new["metadata"] = meta;
        if let Some(m) = new["metadata"].as_object_mut() {
            match managed {
                Some(v) => m.insert("managedFields".into(), v),
                None => m.remove("managedFields"),
            };
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
    } else if r.subresources.contains(&"status") {
        // The main resource does not change status (nor does a namespace's `finalize`).
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    // What no update changes (upstream's `rest.BeforeUpdate`); a status write's generation
    // stays, its spec being the stored one.
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
        // A custom kind without the status subresource moves its generation with any change
        // but metadata (upstream's CR strategy).
        let bump = if r.custom && !r.subresources.contains(&"status") {
            fn without_meta(v: &Value) -> Option<Vec<(&String, &Value)>> {
                v.as_object().map(|m| m.iter().filter(|(k, _)| k.as_str() != "metadata").collect())
            }
            without_meta(old) != without_meta(new)
        } else {
            old.get("spec") != new.get("spec")
        };
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

/// `v` as JSON bytes (written straight into a buffer: `to_string` goes through `fmt`).
pub fn to_json(v: &Value) -> axum::body::Bytes {
    // Serializing a `Value` into memory cannot fail (its map keys are strings).
    axum::body::Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Largest stored object: etcd's default request limit (`--max-request-bytes`, 1.5 MiB),
/// applied to both stores so that a cluster can move from one to the other.
pub const MAX_STORED: usize = 3 * 512 * 1024;

/// Metadata fields never stored.
const UNSTORED: [&str; 2] = ["resourceVersion", "selfLink"];

/// Strip fields never stored (resourceVersion lives in the store's revision).
pub fn for_storage(obj: &Value) -> Vec<u8> {
    if let Value::Object(top) = obj {
        if top.contains_key("metadata") {
            // Serialized as it is, leaving those fields out on the way: no copy of the object.
            return serde_json::to_vec(&Stored(top)).unwrap_or_default();
        }
    }
    // No metadata (never a stored kind's object): as before, `o["metadata"]` adds a null one.
    let mut o = obj.clone();
    if let Some(m) = o["metadata"].as_object_mut() {
        m.remove("resourceVersion");
        m.remove("selfLink");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

/// An object serialized without its [`UNSTORED`] metadata fields.
struct Stored<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match v {
                Value::Object(meta) if k == "metadata" => map.serialize_entry(k, &Kept(meta))?,
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// A metadata map without its [`UNSTORED`] fields.
struct Kept<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for Kept<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().filter(|(k, _)| !UNSTORED.contains(&k.as_str())))
    }
}

/// Whether `a` and `b` would be stored as the same bytes ([`for_storage`] of each), decided
/// without copying or serializing either (a write that changes nothing stores nothing).
pub fn same_for_storage(a: &Value, b: &Value) -> bool {
    eq_but_meta(a, b, &UNSTORED)
}

/// `a == b` but for the top-level fields named in `skip` (when both are objects), without copies.
pub fn eq_without(a: &Value, b: &Value, skip: &[&str]) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => {
            fn kept<'a>(m: &'a serde_json::Map<String, Value>, skip: &'a [&str]) -> impl Iterator<Item = (&'a String, &'a Value)> {
                m.iter().filter(move |(k, _)| !skip.contains(&k.as_str()))
            }
            kept(x, skip).eq(kept(y, skip))
        }
        _ => a == b,
    }
}

/// `a == b` but for the `metadata` fields named in `skip`, without copies.
pub fn eq_but_meta(a: &Value, b: &Value, skip: &[&str]) -> bool {
    match (a.as_object(), b.as_object()) {
        (Some(x), Some(y)) => {
            x.len() == y.len()
                && x.iter().zip(y.iter()).all(|((ka, va), (kb, vb))| ka == kb && if ka == "metadata" { eq_without(va, vb, skip) } else { va == vb })
        }
        _ => a == b,
    }
}

/// [`for_storage`] for a client's write: at most [`MAX_STORED`] bytes (413 otherwise:
/// kube-apiserver passes etcd's "request is too large" on as a 500,
/// kubernetes/kubernetes#112152; strata says what it is).
pub fn storable(obj: &Value) -> Result<Vec<u8>, ApiError> {
    storable_form(obj).map(|(bytes, _)| bytes)
}

/// [`storable`], and whether the bytes are the object as served less its `resourceVersion`
/// (not converted to a storage version, no `selfLink`): then the stored bytes with the
/// revision stamped in ([`crate::watchcache::stamped`]) are its response, not encoded again.
pub fn storable_form(obj: &Value) -> Result<(Vec<u8>, bool), ApiError> {
    let plain = obj["metadata"].as_object().is_some_and(|m| !m.contains_key("selfLink"));
    let mut obj = std::borrow::Cow::Borrowed(obj);
    if obj["apiVersion"].as_str().is_some_and(|v| v.contains('.')) {
        // A custom object is stored at its definition's storage version.
        crate::crd::storage_form(obj.to_mut());
    }
    // A built-in kind served at several versions is stored at one (HorizontalPodAutoscaler at
    // autoscaling/v2, events.k8s.io Events as core Events).
    if matches!(obj["apiVersion"].as_str(), Some("autoscaling/v1" | "events.k8s.io/v1")) {
        crate::convert::storage_form(obj.to_mut());
    }
    let bytes = for_storage(&obj);
    if bytes.len() > MAX_STORED {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: the object is {} bytes when stored, limit is {MAX_STORED}", bytes.len()),
        ));
    }
    let as_served = plain && matches!(obj, std::borrow::Cow::Borrowed(_));
    Ok((bytes, as_served))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn a_stored_object_stamped_is_the_object_served() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "labels": {"app.kubernetes.io/name": "a\"b"}, "annotations": {"z": "{}"}, "uid": "u", "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]}, "spec": {"containers": [{"name": "c", "args": ["x,}"]}]}, "status": {}});
        let (bytes, as_served) = storable_form(&pod).expect("storable");
        assert!(as_served);
        let stamped = crate::watchcache::stamped(&bytes, 17).expect("stamped");
        assert_eq!(stamped, to_json(&with_rv(pod.clone(), 17)).to_vec());
        // Converted to a storage version, or with a selfLink: not the object served.
        let mut linked = pod.clone();
        linked["metadata"]["selfLink"] = json!("/api/v1/namespaces/default/pods/p");
        assert!(!storable_form(&linked).expect("storable").1);
        let hpa = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"}, "spec": {"maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment", "name": "d"}, "targetCPUUtilizationPercentage": 50}});
        assert!(!storable_form(&hpa).expect("storable").1);
    }

    #[test]
    fn same_for_storage_agrees_with_the_stored_bytes() {
        let base = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "b"}}, "spec": {"nodeName": ""}});
        let cases = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "9", "labels": {"a": "b"}}, "spec": {"nodeName": ""}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "selfLink": "/x", "labels": {"a": "b"}}, "spec": {"nodeName": ""}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "c"}}, "spec": {"nodeName": ""}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "b"}}, "spec": {"nodeName": "n1"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "b"}}, "spec": {"nodeName": ""}, "status": {}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7", "labels": {"a": "b"}, "uid": "u"}, "spec": {"nodeName": ""}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": ""}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": null, "spec": {"nodeName": ""}}),
        ];
        for c in &cases {
            assert_eq!(same_for_storage(&base, c), for_storage(&base) == for_storage(c), "{c}");
            assert_eq!(same_for_storage(c, &base), for_storage(c) == for_storage(&base), "{c}");
        }
        assert!(same_for_storage(&base, &cases[0]) && same_for_storage(&base, &cases[1]));
        assert!(!same_for_storage(&base, &cases[2]) && !same_for_storage(&base, &cases[3]));
        assert!(eq_without(&json!({"time": "1", "manager": "m"}), &json!({"time": "2", "manager": "m"}), &["time"]));
        assert!(!eq_without(&json!({"time": "1", "manager": "m"}), &json!({"manager": "n"}), &["time"]));
    }

    #[test]
    fn stored_bytes_are_the_object_without_resource_version_and_self_link() {
        // What for_storage wrote before it stopped copying the object: the copy, those two
        // metadata fields removed, serialized.
        fn by_copy(obj: &Value) -> Vec<u8> {
            let mut o = obj.clone();
            if let Some(m) = o["metadata"].as_object_mut() {
                m.remove("resourceVersion");
                m.remove("selfLink");
            }
            serde_json::to_vec(&o).expect("json")
        }
        let cases = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "resourceVersion": "7", "selfLink": "/x", "labels": {"a": "b"}, "uid": "u"}, "spec": {"nodeName": "", "containers": [{"name": "c", "image": "i\"\u{e9}"}]}, "status": {}}),
            json!({"kind": "ConfigMap", "metadata": {"resourceVersion": "1"}}),
            json!({"kind": "ConfigMap", "metadata": {}, "data": {"resourceVersion": "kept", "selfLink": "kept"}}),
            json!({"kind": "ConfigMap", "metadata": null}),
            json!({"kind": "ConfigMap", "metadata": "odd"}),
            json!({"kind": "ConfigMap"}),
            json!({}),
            json!(null),
        ];
        for c in &cases {
            assert_eq!(String::from_utf8(for_storage(c)).expect("utf8"), String::from_utf8(by_copy(c)).expect("utf8"), "{c}");
        }
        assert!(!String::from_utf8(for_storage(&cases[0])).expect("utf8").contains("resourceVersion"));
    }

    #[test]
    fn names() {
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("Bad_Name"));
        assert!(!is_dns_subdomain("-a"));
        assert!(is_dns_label("abc-1"));
        assert!(!is_dns_label("a.b"));
        let t = now();
        let parsed = chrono::DateTime::parse_from_rfc3339(&t).expect("rfc3339");
        assert_eq!(t, parsed.format("%Y-%m-%dT%H:%M:%SZ").to_string());
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
