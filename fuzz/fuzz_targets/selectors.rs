//! Label and field selector parsing (the `labelSelector` and `fieldSelector` parameters), and
//! matching what parses against an object.
#![no_main]

use strata_apiserver::selector::{FieldSelector, LabelSelector};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
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
});
