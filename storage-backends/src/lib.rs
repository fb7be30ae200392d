//! Storage for Tributary: content-addressed blobs over `object_store` ([`blobs`]) and the metadata store
//! ([`meta`]: a compare-and-swap key-value trait with an embedded redb implementation). Knows nothing about
//! HTTP, streams or auth; `streams`, `auth` and `registry` call it, it calls no Tributary crate but `names`.

pub mod blobs;
pub mod keys;
pub mod meta;
pub mod paths;
pub mod staging;

pub use blobs::BlobError;
pub use blobs::{BlobBackend, BlobStore, ByteStream};
pub use meta::{Expect, KvEvent, MetadataStore, MetadataStoreExt, RedbStore, StoreError, Txn, Versioned};
pub use staging::UploadLock;
