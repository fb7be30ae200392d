//! Typed names that cross crate boundaries: `Digest`, `Namespace`, `StreamName`, `RepositoryName`, `TagName`,
//! `Reference` and `UploadId`. Every crate may use these; values are parsed once at the edge (HTTP, CLI, store)
//! and carried typed everywhere else. This crate depends on nothing of Tributary.

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
