//! kubectl's `application/vnd.kubernetes.protobuf` request bodies: any bytes decode to an
//! object or a typed error, never a panic or a hang.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| strata_apiserver::fuzzing::protobuf_decode(data));
