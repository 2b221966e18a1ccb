//! The patch functions: a JSON document and a JSON patch (separated by a NUL byte), applied as
//! the first byte says (merge, JSON patch, strategic merge).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_apiserver::fuzzing::patch(data));
