//! Who may do what: identities, API tokens, roles and namespace bindings, and the authorization decision
//! (verb + resource + namespace/name). The registry asks this crate before every operation; this crate never
//! calls the registry. Today it holds the decision vocabulary and the open policy used until the access-control
//! issue lands (every request allowed); tokens, roles and JWTs arrive with that issue.

use names::RepositoryName;

/// The verbs of OpenShift's authorization model that the registry checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Update,
    Create,
    Delete,
}

/// The resources the registry checks verbs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `imagestreams/layers`: pulling (get) and pushing (update) content of a stream.
    ImageStreamLayers,
    /// `imagestreams`: creating and deleting streams, reading and editing them through the API.
    ImageStreams,
}

/// One authorization question about a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub verb: Verb,
    pub resource: Resource,
    pub repository: &'a RepositoryName,
}

/// Answers authorization questions.
pub trait Authorizer: Send + Sync + 'static {
    fn allowed(&self, request: &Request<'_>) -> bool;
}

/// Allows everything: the policy of a registry started without access control.
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl Authorizer for AllowAll {
    fn allowed(&self, _request: &Request<'_>) -> bool {
        true
    }
}
