//! `Range` and `Content-Range` headers: never a panic; a range served lies inside the blob and is not empty; a
//! chunk range never ends before it starts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use registry::http::ranges::{blob_range, chunk_range};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().unwrap()) >> (data[0] % 64);
    let Ok(text) = std::str::from_utf8(&data[8..]) else { return };
    if let Some(r) = blob_range(text, size) {
        assert!(r.start < r.end && r.end <= size, "{text:?} of {size}: {r:?}");
    }
    if let Some((start, end)) = chunk_range(text) {
        assert!(start <= end, "{text:?}");
    }
});
