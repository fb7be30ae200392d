//! Manifest and index parsing (`streams::manifest::parse`) with every media type a client may declare: never a
//! panic; what parses names only valid digests and sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;

const TYPES: [Option<&str>; 6] = [
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/json"),
];

fuzz_target!(|data: &[u8]| {
    let content_type = TYPES[data.first().copied().unwrap_or(0) as usize % TYPES.len()];
    if let Ok(parsed) = streams::manifest::parse(data, content_type) {
        for d in parsed.blobs().into_iter().chain(parsed.children()) {
            let text = d.digest.to_string();
            assert_eq!(text.parse::<names::Digest>().as_ref(), Ok(&d.digest), "a parsed digest prints back");
        }
    }
});
