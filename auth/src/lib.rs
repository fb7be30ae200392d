//! Who may do what in Tributary: identities ([`Identity`]: users, service accounts, groups, anonymous), API tokens
//! ([`tokens`], stored only as SHA-256 hashes), roles and namespace bindings ([`roles`], [`model`]), the
//! authorization decision (verb + resource + namespace), registry JWTs ([`jwt`]) and Docker token scopes
//! ([`scope`]). [`AuthService`] is the one entry point; the registry's HTTP edge asks it before every operation.
//! The records every request reads are cached (`cache`), kept true by the metadata store's change feed.
//! This crate calls only `storage-backends` (keys in `storage_backends::keys`) and never the registry.

mod admin;
mod cache;
mod callers;
pub mod identity;
pub mod ids;
pub mod jwt;
pub mod model;
pub mod roles;
pub mod scope;
mod service;
pub mod tokens;

pub use identity::{Identity, WhoAmI};
pub use ids::{GroupName, InvalidName, ServiceAccountName, Subject, TokenId, UserName};
pub use model::{NamespaceRecord, RoleBinding, ServiceAccount, TokenInfo, User};
pub use roles::{Resource, Role, Verb};
pub use scope::{Action, Scope};
pub use service::{
    AuthError, AuthMode, AuthService, Bootstrap, Caller, Credentials, IssuedToken, Need, Verdict, Via,
    ADMIN_TOKEN_FILE, DEFAULT_SERVICE,
};

#[cfg(test)]
mod tests;
