//! The patch functions: a JSON document and a JSON patch (separated by a NUL byte), applied as
//! the first byte says (merge, JSON patch, strategic merge).
#![no_main]

use strata_apiserver::patch;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
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
            let _ = patch::strategic_merge_patch(&mut doc, &p);
        }
    }
});
