//! The image stream domain: OpenShift's `ImageStream`, `Image` and tag history types ([`model`]), the reading of
//! OCI/Docker manifests and image configs into Image metadata ([`manifest`]), and [`StreamService`], which records
//! ImageStreamMappings and answers tag questions over the metadata store. A stream's tag history is the only tag
//! table of the registry. No HTTP here; the `registry` crate calls this, this calls `storage-backends`.

pub mod manifest;
pub mod model;
mod service;

pub use service::{StreamError, StreamService};
