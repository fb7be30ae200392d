//! The authorization vocabulary: verbs, resources, and the built-in roles with their rules, one row per role.
//! Pure data; [`crate::AuthService`] combines it with the stored bindings.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The verbs of OpenShift's authorization model that Tributary checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Delete,
}

/// The resources verbs apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `imagestreams`: the stream objects (create, read and edit through the API, delete).
    ImageStreams,
    /// `imagestreams/layers`: the content of a stream; pull is `get`, push is `update`.
    ImageStreamLayers,
    /// `images`: cluster-scoped Image objects.
    Images,
    /// `namespaces` (projects).
    Namespaces,
    /// `users` (cluster-scoped).
    Users,
    /// `serviceaccounts` of a namespace, and minting their tokens (`update`).
    ServiceAccounts,
    /// `rolebindings` of a namespace.
    RoleBindings,
    /// `secrets` of a namespace (pull secrets for external registries): `edit` and `admin`, not `view`.
    Secrets,
    /// `limitranges` of a namespace (the image size limit): every namespaced role that reads the namespace may
    /// read them; no namespaced role writes them (as in OpenShift, where quotas are the cluster admin's), only
    /// `cluster-admin`.
    LimitRanges,
    /// `metrics` (cluster-scoped): reading the Prometheus exposition at `/metrics` is `get`. No namespaced role
    /// grants it; `cluster-admin` does.
    Metrics,
    /// The cluster-wide image policy (`images.config.openshift.io` `cluster`, the mirror sets). No namespaced role
    /// grants it; `cluster-admin` does.
    ImageConfig,
}

/// A built-in role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Role {
    ImagePuller,
    ImagePusher,
    ImageBuilder,
    View,
    Edit,
    Admin,
    ClusterAdmin,
}

use Resource::*;
use Verb::*;

const READ: &[Verb] = &[Get, List, Watch];
const ALL: &[Verb] = &[Get, List, Watch, Create, Update, Delete];
const CONTENT_RW: &[Verb] = &[Get, Update, Delete];

/// One rule: the verbs a role grants on a resource.
type Rule = (Resource, &'static [Verb]);

impl Role {
    pub const ALL: [Role; 7] = [
        Role::ImagePuller,
        Role::ImagePusher,
        Role::ImageBuilder,
        Role::View,
        Role::Edit,
        Role::Admin,
        Role::ClusterAdmin,
    ];

    /// The name of each role and what it grants. `cluster-admin` grants every verb on every resource.
    pub fn row(self) -> (&'static str, &'static [Rule]) {
        match self {
            Role::ImagePuller => ("system:image-puller", &[(ImageStreamLayers, &[Get])]),
            Role::ImagePusher => ("system:image-pusher", &[(ImageStreamLayers, &[Get, Update])]),
            Role::ImageBuilder => {
                ("system:image-builder", &[(ImageStreamLayers, &[Get, Update]), (ImageStreams, &[Create])])
            }
            Role::View => (
                "view",
                &[
                    (ImageStreams, READ),
                    (ImageStreamLayers, &[Get]),
                    (ServiceAccounts, READ),
                    (LimitRanges, READ),
                    (Namespaces, &[Get]),
                ],
            ),
            Role::Edit => (
                "edit",
                &[
                    (ImageStreams, ALL),
                    (ImageStreamLayers, CONTENT_RW),
                    (ServiceAccounts, READ),
                    (Secrets, ALL),
                    (LimitRanges, READ),
                    (Namespaces, &[Get]),
                ],
            ),
            Role::Admin => (
                "admin",
                &[
                    (ImageStreams, ALL),
                    (ImageStreamLayers, CONTENT_RW),
                    (ServiceAccounts, ALL),
                    (RoleBindings, ALL),
                    (Secrets, ALL),
                    (LimitRanges, READ),
                    (Namespaces, &[Get]),
                ],
            ),
            Role::ClusterAdmin => ("cluster-admin", &[]),
        }
    }

    pub fn name(self) -> &'static str {
        self.row().0
    }

    /// Whether the role grants `verb` on `resource`.
    pub fn allows(self, verb: Verb, resource: Resource) -> bool {
        self == Role::ClusterAdmin || self.row().1.iter().any(|(r, verbs)| *r == resource && verbs.contains(&verb))
    }
}

/// An unknown role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: use one of system:image-puller, system:image-pusher, system:image-builder, view, edit, admin, cluster-admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.name() == s).ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

impl TryFrom<String> for Role {
    type Error = UnknownRole;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Role> for String {
    fn from(r: Role) -> String {
        r.name().to_owned()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.name().parse::<Role>(), Ok(r));
        }
        assert!("system:image-admin".parse::<Role>().is_err());
    }

    #[test]
    fn rules() {
        let pull = (Get, ImageStreamLayers);
        let push = (Update, ImageStreamLayers);
        let create = (Create, ImageStreams);
        let table = [
            (Role::ImagePuller, [true, false, false]),
            (Role::ImagePusher, [true, true, false]),
            (Role::ImageBuilder, [true, true, true]),
            (Role::View, [true, false, false]),
            (Role::Edit, [true, true, true]),
            (Role::Admin, [true, true, true]),
            (Role::ClusterAdmin, [true, true, true]),
        ];
        for (role, want) in table {
            let got = [pull, push, create].map(|(v, r)| role.allows(v, r));
            assert_eq!(got, want, "{role}");
        }
        assert!(!Role::ImagePusher.allows(Delete, ImageStreamLayers));
        assert!(Role::Edit.allows(Delete, ImageStreamLayers));
        assert!(!Role::Edit.allows(Create, RoleBindings));
        assert!(Role::Admin.allows(Create, RoleBindings));
        assert!(!Role::Admin.allows(Create, Users));
        assert!(Role::Edit.allows(Create, Secrets) && !Role::View.allows(Get, Secrets));
        assert!(Role::ClusterAdmin.allows(Create, Users));
        for verb in [Create, Update, Delete] {
            assert!(Role::ALL.iter().filter(|r| r.allows(verb, LimitRanges)).eq([&Role::ClusterAdmin]), "{verb:?}");
        }
        assert!(Role::View.allows(List, LimitRanges) && Role::Admin.allows(Get, LimitRanges));
        assert!(Role::ClusterAdmin.allows(Get, Metrics));
        assert!(Role::ALL.iter().filter(|r| r.allows(Get, Metrics)).eq([&Role::ClusterAdmin]), "only cluster-admin");
        for verb in [Get, List, Watch, Update] {
            assert!(Role::ALL.iter().filter(|r| r.allows(verb, ImageConfig)).eq([&Role::ClusterAdmin]), "{verb:?}");
        }
    }
}
