//! Blob content for the benchmark. A 4 MiB block of PRNG bytes is made once and repeated to the blob's size, and
//! the last [`TAIL`] bytes come from a per-push nonce, so every push stores a blob no registry has seen (no dedup
//! shortcut) while the SHA-256 of the long repeated prefix is computed once per size. Bodies are streamed as
//! reference-counted slices of the block: the client spends almost nothing making them and never holds a blob.

use std::collections::BTreeMap;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// Bytes at the end of a blob that differ from push to push.
pub const TAIL: u64 = 32;
/// Size of the repeated PRNG block.
const BLOCK: usize = 4 << 20;
/// Largest piece handed to the HTTP client at once.
const PIECE: u64 = 1 << 20;

/// splitmix64: fast, and good enough to defeat compression and dedup.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Pseudo-random bytes from `seed`.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&splitmix(&mut state).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Content of every size used in a run, sharing one block.
pub struct Contents {
    block: Bytes,
    prefixes: BTreeMap<u64, Sha256>,
}

impl Contents {
    /// Hashes the common prefix of every size in one pass over the largest.
    pub fn new(sizes: &[u64]) -> Contents {
        let block = Bytes::from(random_bytes(0x7472_6962_7574_6172, BLOCK));
        let mut wanted: Vec<u64> = sizes.iter().map(|s| s.saturating_sub(TAIL)).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let mut hasher = Sha256::new();
        let mut at = 0u64;
        let mut prefixes = BTreeMap::new();
        for end in wanted {
            for piece in pieces(&block, at, end) {
                hasher.update(&piece);
            }
            at = end;
            prefixes.insert(end + TAIL, hasher.clone());
        }
        Contents { block, prefixes }
    }

    /// A blob of `size` bytes (one of the sizes given to [`Contents::new`]) whose tail comes from `nonce`.
    pub fn blob(&self, size: u64, nonce: u64) -> Blob {
        let prefix = self.prefixes.get(&size).unwrap_or_else(|| panic!("size {size} was not prepared"));
        let tail = Bytes::from(random_bytes(nonce ^ 0x5eed, TAIL as usize));
        let mut hasher = prefix.clone();
        hasher.update(&tail);
        let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
        Blob { size, digest, block: self.block.clone(), tail }
    }
}

/// Slices of the repeated block covering `[start, end)` of the prefix.
fn pieces(block: &Bytes, start: u64, end: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
    let block = block.clone();
    let mut at = start;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let off = (at % BLOCK as u64) as usize;
        let len = (end - at).min(PIECE).min((BLOCK - off) as u64) as usize;
        at += len as u64;
        Some(block.slice(off..off + len))
    })
}

/// One blob: its digest, and its bytes on demand.
#[derive(Clone)]
pub struct Blob {
    pub size: u64,
    pub digest: String,
    block: Bytes,
    tail: Bytes,
}

impl Blob {
    /// Bytes `[start, end)` of the blob as a stream of pieces.
    pub fn range(&self, start: u64, end: u64) -> impl Iterator<Item = Bytes> + Send + 'static {
        let split = self.size - TAIL;
        let head = pieces(&self.block, start.min(split), end.min(split));
        let tail = (end > split).then(|| {
            let (a, b) = (start.max(split) - split, end - split);
            self.tail.slice(a as usize..b as usize)
        });
        head.chain(tail)
    }

    /// A request body of bytes `[start, end)`.
    pub fn body(&self, start: u64, end: u64) -> reqwest::Body {
        let stream = futures::stream::iter(self.range(start, end).map(Ok::<_, std::io::Error>));
        reqwest::Body::wrap_stream(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_bytes() {
        let sizes = [1 << 20, 5 << 20, 9 << 20];
        let contents = Contents::new(&sizes);
        for size in sizes {
            for nonce in [1, 2] {
                let blob = contents.blob(size, nonce);
                let all: Vec<u8> = blob.range(0, size).flat_map(|b| b.to_vec()).collect();
                assert_eq!(all.len() as u64, size);
                assert_eq!(blob.digest, format!("sha256:{}", hex::encode(Sha256::digest(&all))));
                // Any split gives the same bytes.
                let cut = size - 10;
                let mut parts: Vec<u8> = blob.range(0, cut).flat_map(|b| b.to_vec()).collect();
                parts.extend(blob.range(cut, size).flat_map(|b| b.to_vec()));
                assert_eq!(parts, all);
            }
        }
        assert_ne!(contents.blob(1 << 20, 1).digest, contents.blob(1 << 20, 2).digest);
    }
}
