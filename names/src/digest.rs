//! Content digests (`sha256:<64 hex>`, `sha512:<128 hex>`) and a streaming hasher for either algorithm.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256, Sha512};

use crate::NameError;

/// A digest algorithm the registry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }
    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A verified-format content digest. Only lowercase hex of the algorithm's exact length is accepted.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The hex part, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }
    /// Digest of a byte slice (used for manifests and small bodies).
    pub fn of(algorithm: Algorithm, bytes: &[u8]) -> Digest {
        let mut h = DigestHasher::new(algorithm);
        h.update(bytes);
        h.finish()
    }
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| NameError::Digest(s.to_owned(), why);
        let (alg, hex) = s.split_once(':').ok_or_else(|| err("missing ':'"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(err("unsupported algorithm (sha256 and sha512 are supported)")),
        };
        if hex.len() != algorithm.hex_len() {
            return Err(err("wrong length for the algorithm"));
        }
        if !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(err("encoded part must be lowercase hex"));
        }
        Ok(Digest { algorithm, hex: hex.to_owned() })
    }
}

impl TryFrom<String> for Digest {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// Incremental hasher for one algorithm. Its state can be saved and restored so a chunked upload can continue
/// on another process or replica without re-reading the bytes already received.
#[derive(Clone)]
pub enum DigestHasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl DigestHasher {
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => DigestHasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => DigestHasher::Sha512(Sha512::new()),
        }
    }
    pub fn algorithm(&self) -> Algorithm {
        match self {
            DigestHasher::Sha256(_) => Algorithm::Sha256,
            DigestHasher::Sha512(_) => Algorithm::Sha512,
        }
    }
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            DigestHasher::Sha256(h) => h.update(bytes),
            DigestHasher::Sha512(h) => h.update(bytes),
        }
    }
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            DigestHasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            DigestHasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        Digest { algorithm, hex }
    }
    /// Opaque saved state (algorithm tag byte + the hash core's serialized state).
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            DigestHasher::Sha256(h) => {
                out.push(1);
                out.extend_from_slice(&h.serialize());
            }
            DigestHasher::Sha512(h) => {
                out.push(2);
                out.extend_from_slice(&h.serialize());
            }
        }
        out
    }
    /// Restores a state written by [`DigestHasher::save`]; `None` when the bytes are not a saved state.
    pub fn restore(bytes: &[u8]) -> Option<Self> {
        let (tag, rest) = bytes.split_first()?;
        match tag {
            1 => Some(DigestHasher::Sha256(Sha256::deserialize(rest.try_into().ok()?).ok()?)),
            2 => Some(DigestHasher::Sha512(Sha512::deserialize(rest.try_into().ok()?).ok()?)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let ok = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(ok.parse::<Digest>().unwrap().to_string(), ok);
        for bad in [
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:abc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_empty_input() {
        assert_eq!(
            Digest::sha256_of(b"").to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(Digest::of(Algorithm::Sha512, b"").to_string().starts_with("sha512:cf83e1357eefb8bd"));
    }

    #[test]
    fn saved_state_continues() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut h = DigestHasher::new(alg);
            h.update(b"hello ");
            let saved = h.save();
            let mut r = DigestHasher::restore(&saved).unwrap();
            r.update(b"world");
            assert_eq!(r.finish(), Digest::of(alg, b"hello world"));
        }
        assert!(DigestHasher::restore(b"\x01abc").is_none());
    }
}
