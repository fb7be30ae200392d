//! Image streams for any Kubernetes cluster, as OpenShift offers them: image lookup through a mutating admission
//! webhook ([`admission`], registered by [`webhook_config`]) and image-change triggers on objects annotated
//! `image.openshift.io/triggers` ([`triggers`], the pure schema and patch planning; [`controller`], the watcher
//! run on one replica at a time). [`jsonpath`] parses trigger field paths, [`lookup`] says how Kubernetes objects
//! and namespaces meet Tributary's streams, [`client`] connects with the `kube` crate.
//!
//! Called by the HTTP edge (the webhook route), the background work (the controller) and the CLI; reads streams
//! only through [`streams::StreamService`], never writes them.

pub mod admission;
pub mod client;
pub mod controller;
pub mod jsonpath;
pub mod lookup;
pub mod triggers;
pub mod webhook_config;
