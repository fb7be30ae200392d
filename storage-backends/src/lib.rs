//! Storage for Tributary: content-addressed blobs over `object_store` ([`blobs`]: local filesystem, memory, S3;
//! local files streamed out by [`fileread`]),
//! upload sessions over one staging seam ([`uploads`], purged when idle by [`purge`], with local staging files in [`staging`] and multipart
//! uploads in [`multipart`], both gathering bytes in [`mapped`] buffers), and the metadata store ([`meta`]: a compare-and-swap key-value trait with embedded
//! redb, etcd and in-memory implementations, and leases). Knows nothing about HTTP, streams or auth; `streams`,
//! `auth` and `registry` call it, it calls no Tributary crate but `names`. [`suite`] is the blob-and-upload suite
//! every blob backend runs (`meta::suite` the metadata one); [`content`] lists and deletes stored content for the garbage collector; [`testing`] starts real servers (etcd, an S3 service).

pub mod backend;
pub mod blobs;
pub mod content;
mod fileread;
pub mod keys;
mod mapped;
pub mod meta;
pub mod multipart;
pub mod paths;
pub mod purge;
pub mod staging;
pub mod suite;
pub mod testing;
pub mod uploads;

pub use blobs::BlobError;
pub use blobs::{BlobBackend, BlobStore, ByteStream, S3Config};
pub use meta::{
    EtcdConfig, EtcdStore, Expect, KvEvent, Leadership, MemoryStore, MetadataStore, MetadataStoreExt, RedbStore,
    StoreError, Txn, Versioned,
};
pub use purge::PurgeReport;
pub use uploads::{ChunkStart, FinishError, UploadSession};
