//! Names, references, digests, upload ids and the OCI route parser: never a panic, and whatever parses prints
//! back to text that parses to the same value (no path traversal or separator survives a round trip).
#![no_main]

use libfuzzer_sys::fuzz_target;
use names::{Digest, Namespace, Reference, RepositoryName, TagName, UploadId};

fn round_trip<T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug>(s: &str) {
    if let Ok(v) = s.parse::<T>() {
        let text = v.to_string();
        assert!(!text.contains(".."), "{text:?} holds ..");
        assert!(!text.contains('\0') && !text.contains('\\'), "{text:?}");
        assert_eq!(text.parse::<T>().ok().as_ref(), Some(&v), "{text:?} parses back");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    round_trip::<RepositoryName>(s);
    round_trip::<Namespace>(s);
    round_trip::<TagName>(s);
    round_trip::<Digest>(s);
    round_trip::<UploadId>(s);
    round_trip::<Reference>(s);
    if let Ok(endpoint) = registry::http::endpoint::Endpoint::parse(s) {
        let _ = endpoint.kind();
    }
});
