//! Label and field selector parsing (the `labelSelector` and `fieldSelector` parameters), and
//! matching what parses against an object.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_apiserver::fuzzing::selectors(data));
