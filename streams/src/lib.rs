//! The image stream domain: OpenShift's `image.openshift.io/v1` shapes ([`model`]), the names users write
//! ([`refs`]), the reading of OCI/Docker manifests and image configs into Image metadata ([`manifest`]), the tag
//! rules (history stack, permanent and tracking tags, references, generations: [`rules`]), and
//! [`StreamService`], which records ImageStreamMappings, serves the API's objects ([`objects`], with JSON patches
//! in [`patch`]) and watches ([`watch`]) over the metadata store, and the domain half of importing external images
//! ([`import`]). Every stream write is committed within the store's transaction limits however many tags it
//! moves (`plan`). A stream's tag history is the only tag table of the registry. No HTTP here; the `registry`
//! crate calls this, this calls `storage-backends`.

pub mod actor;
pub mod import;
pub mod manifest;
pub mod model;
pub mod objects;
pub mod pages;
pub mod patch;
mod plan;
pub mod refs;
pub mod rules;
mod service;
pub mod watch;

pub use service::{MappingOutcome, ObjectKind, StreamError, StreamService};
