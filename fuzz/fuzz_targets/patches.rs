//! JSON merge patches (RFC 7386) and strategic merge patches as `kubectl apply`/`patch` send them: never a panic,
//! and a merge patch applied twice gives what it gave once (RFC 7386 patches are idempotent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some((target, patch)) = text.split_once('\n') else { return };
    let (Ok(target), Ok(patch)) = (serde_json::from_str::<Value>(target), serde_json::from_str::<Value>(patch)) else {
        return;
    };
    let mut once = target.clone();
    streams::patch::merge_patch(&mut once, &patch);
    let mut twice = once.clone();
    streams::patch::merge_patch(&mut twice, &patch);
    assert_eq!(once, twice, "a merge patch is idempotent");
    let mut strategic = target;
    streams::patch::strategic_merge(&mut strategic, &patch);
});
