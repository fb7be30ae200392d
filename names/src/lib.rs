//! Typed names that cross crate boundaries: `Digest`, `Namespace`, `StreamName`, `RepositoryName`, `TagName`,
//! `Reference` and `UploadId`. Every crate may use these; values are parsed once at the edge (HTTP, CLI, store)
//! and carried typed everywhere else. This crate depends on nothing of Tributary.

/// Implements the conveniences of a validated string newtype `struct $name(String)` whose `FromStr` does the
/// validation: `as_str`, `AsRef<str>`, `Display`, `Debug`, `TryFrom<String>` (through `FromStr`) and
/// `From<$name> for String`. Exported so other crates' typed names (e.g. `auth`'s user names) share it.
#[macro_export]
macro_rules! string_newtype {
    ($name:ident) => {
        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl ::std::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
        impl ::std::convert::AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl ::std::convert::TryFrom<String> for $name {
            type Error = <$name as ::std::str::FromStr>::Err;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
        impl ::std::convert::From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }
    };
}

mod digest;
mod repository;

pub use digest::{Algorithm, Digest, DigestHasher};
pub use repository::{Namespace, Reference, RepositoryName, StreamName, TagName, UploadId};

/// Why a name, reference or digest was rejected. The message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("invalid digest {0:?}: {1}")]
    Digest(String, &'static str),
    #[error("invalid repository name {0:?}: {1}")]
    Repository(String, &'static str),
    #[error("invalid tag {0:?}: must match [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    #[error("invalid upload id {0:?}")]
    UploadId(String),
}
