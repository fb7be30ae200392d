//! The stored records of access control: namespaces, users, service accounts, API tokens, role bindings. Written
//! and read only through [`crate::AuthService`], under the keys of `storage_backends::keys`.

use chrono::{DateTime, Utc};
use names::Namespace;
use serde::{Deserialize, Serialize};

use crate::ids::{GroupName, ServiceAccountName, Subject, TokenId, UserName};
use crate::roles::Role;

/// A namespace (project). Pushes go only into namespaces that exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceRecord {
    pub name: Namespace,
    pub created: DateTime<Utc>,
    /// Who asked for it (made its `admin`); none for namespaces made without access control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<Subject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub name: UserName,
    #[serde(default)]
    pub groups: Vec<GroupName>,
    pub created: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    pub namespace: Namespace,
    pub name: ServiceAccountName,
    pub created: DateTime<Utc>,
}

/// An API token as listed: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: TokenId,
    /// A user or a service account.
    pub owner: Subject,
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl TokenInfo {
    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// An API token as stored: its info and the SHA-256 of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    #[serde(flatten)]
    pub info: TokenInfo,
    pub sha256: String,
}

/// The subjects bound to one role in one namespace (or, for cluster role bindings, everywhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    /// `None` for a cluster role binding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Namespace>,
    pub role: Role,
    pub subjects: Vec<Subject>,
}
