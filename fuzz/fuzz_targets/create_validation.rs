//! What a create does to a decoded JSON body before storing it: the envelope check, metadata
//! rules (names, labels, annotations), per-kind defaulting and validation and the size limit,
//! for a served kind chosen by the first byte. Errors are fine; panics are not.
#![no_main]

use strata_apiserver::{object, resources, validate};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(mut obj) = serde_json::from_slice::<serde_json::Value>(rest) else { return };
    let r = &resources::RESOURCES[which as usize % resources::RESOURCES.len()];
    if object::prepare_create(r, &mut obj, Some("default")).is_err() {
        return;
    }
    if validate::validate(r, &mut obj).is_ok() {
        let _ = object::storable(&obj);
    }
});
