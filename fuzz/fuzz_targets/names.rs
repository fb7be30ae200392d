//! Names, references, digests, upload ids and the OCI route parser: never a panic, and whatever parses prints
//! back to text that parses to the same value. Repository names, namespaces, digests and upload ids (which name
//! storage paths) never hold `..`, a NUL or a backslash; tags may hold `..` (the OCI tag grammar allows it, and a
//! tag only ever names a metadata key).
#![no_main]

use libfuzzer_sys::fuzz_target;
use names::{Digest, Namespace, Reference, RepositoryName, TagName, UploadId};

fn round_trip<T: std::str::FromStr + std::fmt::Display + PartialEq + std::fmt::Debug>(s: &str, path_safe: bool) {
    if let Ok(v) = s.parse::<T>() {
        let text = v.to_string();
        assert!(!path_safe || !text.contains(".."), "{text:?} holds ..");
        assert!(!text.contains('\0') && !text.contains('\\'), "{text:?}");
        assert_eq!(text.parse::<T>().ok().as_ref(), Some(&v), "{text:?} parses back");
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    round_trip::<RepositoryName>(s, true);
    round_trip::<Namespace>(s, true);
    round_trip::<TagName>(s, false);
    round_trip::<Digest>(s, true);
    round_trip::<UploadId>(s, true);
    round_trip::<Reference>(s, false);
    if let Ok(endpoint) = registry::http::endpoint::Endpoint::parse(s) {
        let _ = endpoint.route();
    }
});
