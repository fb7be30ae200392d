//! Storage for Tributary: content-addressed blobs over `object_store` ([`blobs`]) and the metadata store
//! ([`meta`]: a compare-and-swap key-value trait with embedded redb, etcd and in-memory implementations). Knows nothing about
//! HTTP, streams or auth; `streams`, `auth` and `registry` call it, it calls no Tributary crate but `names`.

pub mod blobs;
pub mod keys;
pub mod meta;
pub mod paths;
pub mod staging;
pub mod testing;

pub use blobs::BlobError;
pub use blobs::{BlobBackend, BlobStore, ByteStream};
pub use meta::{
    EtcdConfig, EtcdStore, Expect, KvEvent, Leadership, MemoryStore, MetadataStore, MetadataStoreExt, RedbStore,
    StoreError, Txn, Versioned,
};
pub use staging::UploadLock;
