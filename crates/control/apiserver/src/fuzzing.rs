//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run with `cargo +nightly fuzz`),
//! kept here so that the same code also runs in the ordinary test suite on stable Rust
//! (`tests/fuzz_smoke.rs`: seeds and 20,000 mutations of them per target).
//! Each takes bytes a client controls; errors are fine, a panic or a hang is a bug.

use crate::selector::{FieldSelector, LabelSelector};
use crate::{object, patch, resources, validate};

/// kubectl's `application/vnd.kubernetes.protobuf` request bodies.
pub fn protobuf_decode(data: &[u8]) {
    let _ = crate::protobuf::decode(data);
}

/// A JSON document and a JSON patch separated by a NUL byte, applied as the first byte says
/// (merge, JSON patch, strategic merge).
pub fn patch(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else { return };
    let Some(split) = rest.iter().position(|b| *b == 0) else { return };
    let (Ok(mut doc), Ok(p)) = (serde_json::from_slice::<serde_json::Value>(&rest[..split]), serde_json::from_slice::<serde_json::Value>(&rest[split + 1..])) else {
        return;
    };
    match kind % 3 {
        0 => patch::merge_patch(&mut doc, &p),
        1 => {
            let _ = patch::json_patch(&mut doc, &p);
        }
        _ => {
            let _ = patch::strategic_merge_patch(&mut doc, &p, Some("Pod"));
        }
    }
}

/// `labelSelector` / `fieldSelector` parsing, and matching what parses against an object.
pub fn selectors(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let obj = serde_json::json!({"metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web", "tier": "front", "v": "1"}},
        "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
    if let Ok(l) = LabelSelector::parse(s) {
        let _ = l.matches(&obj);
    }
    for kind in ["Pod", "Secret", "Event", "Namespace"] {
        if let Ok(f) = FieldSelector::parse(s, kind) {
            let _ = f.matches(&obj);
        }
    }
}

/// A decoded JSON body through the create path (envelope, metadata rules, per-kind defaulting
/// and validation, the stored-size limit) for the served kind the first byte picks.
pub fn create_validation(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(mut obj) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
    let r = &resources::RESOURCES[which as usize % resources::RESOURCES.len()];
    if object::prepare_create(r, &mut obj, Some("default")).is_err() {
        return;
    }
    if validate::validate(r, &mut obj).is_ok() {
        let _ = object::storable(&obj);
    }
}
