//! What a create does to a decoded JSON body before storing it: the envelope check, metadata
//! rules (names, labels, annotations), per-kind defaulting and validation and the size limit,
//! for a served kind chosen by the first byte. Errors are fine; panics are not.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_apiserver::fuzzing::create_validation(data));
