//! The byte-range headers of the OCI API, parsed from their text: a blob GET's `Range: bytes=…` and an upload
//! chunk's `Content-Range: <start>-<end>`. Pure functions without HTTP types; called by the OCI handlers
//! (`http::oci`), which turn a refusal into the spec's error, and by the fuzz targets.

use std::ops::Range;

/// The bytes of a blob of `size` bytes that `Range: <header>` asks for, or `None` when the header is malformed or
/// not satisfiable (416). One range only (`bytes=a-b`, `bytes=a-`, `bytes=-n`); an end past the blob is cut to it.
pub fn blob_range(header: &str, size: u64) -> Option<Range<u64>> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (false, false) => {
            let (s, e) = (a.parse::<u64>().ok()?, b.parse::<u64>().ok()?);
            if s > e {
                return None;
            }
            s..e.saturating_add(1).min(size)
        }
        (false, true) => a.parse::<u64>().ok()?..size,
        (true, false) => {
            let n = b.parse::<u64>().ok()?;
            if n == 0 {
                return None;
            }
            size.saturating_sub(n)..size
        }
        (true, true) => return None,
    };
    (range.start < size).then_some(range)
}

/// The first and last byte offsets (inclusive) of `Content-Range: <value>` (`<start>-<end>`, also with a `bytes `
/// prefix and a `/<total>` suffix as some clients send), or `None` when malformed or `end < start`.
pub fn chunk_range(value: &str) -> Option<(u64, u64)> {
    let s = value.trim();
    let s = s.strip_prefix("bytes ").unwrap_or(s);
    let s = s.split('/').next().unwrap_or(s);
    let (a, b) = s.split_once('-')?;
    let (start, end) = (a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?);
    (end >= start).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ranges() {
        assert_eq!(blob_range("bytes=0-9", 100), Some(0..10));
        assert_eq!(blob_range("bytes=90-", 100), Some(90..100));
        assert_eq!(blob_range("bytes=-10", 100), Some(90..100));
        assert_eq!(blob_range("bytes=-1000", 100), Some(0..100));
        assert_eq!(blob_range("bytes=95-200", 100), Some(95..100));
        assert_eq!(blob_range("bytes=0-18446744073709551615", 100), Some(0..100));
        for bad in ["bytes=100-", "bytes=5-1", "bytes=a-b", "items=0-1", "bytes=0-1,3-4", "bytes=-0", "bytes=-", ""] {
            assert_eq!(blob_range(bad, 100), None, "{bad}");
        }
        assert_eq!(blob_range("bytes=0-0", 0), None, "nothing to serve of an empty blob");
    }

    #[test]
    fn chunk_ranges() {
        assert_eq!(chunk_range("0-99"), Some((0, 99)));
        assert_eq!(chunk_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(chunk_range(" 5 - 5 "), Some((5, 5)));
        for bad in ["", "-", "5-4", "a-b", "0-", "-9", "1-2-3"] {
            assert_eq!(chunk_range(bad), None, "{bad}");
        }
    }
}
