//! Typed identity names: users, groups, service accounts, token ids and key ids, and the [`Subject`]s of role
//! bindings. Parsed once at the edge (HTTP body, CLI argument, JWT claim); every name admits only characters
//! that cannot break out of a metadata key segment (no `/`).

use std::fmt;
use std::str::FromStr;

use names::Namespace;
use serde::{Deserialize, Serialize};

/// Why an identity name was rejected. The message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {why}")]
pub struct InvalidName {
    pub kind: &'static str,
    pub value: String,
    pub why: &'static str,
}

fn check(kind: &'static str, s: &str, max: usize, extra: &[u8], why: &'static str) -> Result<(), InvalidName> {
    let err = || InvalidName { kind, value: s.to_owned(), why };
    let b = s.as_bytes();
    if b.is_empty() || b.len() > max {
        return Err(err());
    }
    let plain = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !b.iter().all(|c| plain(c) || extra.contains(c)) || !plain(&b[0]) || !plain(&b[b.len() - 1]) {
        return Err(err());
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $extra:expr, $why:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                check($kind, s, $max, $extra, $why)?;
                Ok($name(s.to_owned()))
            }
        }
        names::string_newtype!($name);
    };
}

name_type!(
    /// A user: lowercase letters, digits, `-`, `.`, `_` and `@`, starting and ending with a letter or digit.
    UserName,
    "user name",
    253,
    b"-._@",
    "use lowercase letters, digits, '-', '.', '_' and '@', starting and ending with a letter or digit"
);
name_type!(
    /// A group, e.g. `developers` or the virtual `system:authenticated`; like a user name, `:` allowed.
    GroupName,
    "group name",
    253,
    b"-._@:",
    "use lowercase letters, digits, '-', '.', '_', '@' and ':', starting and ending with a letter or digit"
);
name_type!(
    /// A service account's name within its namespace: a DNS label.
    ServiceAccountName,
    "service account name",
    63,
    b"-",
    "use lowercase letters, digits and '-', starting and ending with a letter or digit"
);
name_type!(
    /// An API token's public id (listed, used to revoke it; never the secret).
    TokenId,
    "token id",
    64,
    b"-",
    "use lowercase letters, digits and '-'"
);

impl UserName {
    /// The cluster administrator made at first start.
    pub fn admin() -> UserName {
        UserName("admin".to_owned())
    }
}

impl TokenId {
    /// The id of the bootstrap administrator token.
    pub fn bootstrap() -> TokenId {
        TokenId("admin-bootstrap".to_owned())
    }
    /// A fresh random id.
    pub fn random() -> TokenId {
        TokenId(hex::encode(crate::tokens::random_bytes::<8>()))
    }
}

impl ServiceAccountName {
    pub fn default_account() -> ServiceAccountName {
        ServiceAccountName("default".to_owned())
    }
    pub fn builder() -> ServiceAccountName {
        ServiceAccountName("builder".to_owned())
    }
}

/// The virtual groups every caller belongs to by kind.
impl GroupName {
    pub fn authenticated() -> GroupName {
        GroupName("system:authenticated".to_owned())
    }
    pub fn unauthenticated() -> GroupName {
        GroupName("system:unauthenticated".to_owned())
    }
    pub fn all_service_accounts() -> GroupName {
        GroupName("system:serviceaccounts".to_owned())
    }
    /// `system:serviceaccounts:<ns>`: every service account of `ns`.
    pub fn service_accounts_of(ns: &Namespace) -> GroupName {
        GroupName(format!("system:serviceaccounts:{ns}"))
    }
}

/// Who a role binding or a token is for. On the wire: `{"kind":"User","name":"alice"}`,
/// `{"kind":"ServiceAccount","namespace":"team","name":"builder"}`, `{"kind":"Group","name":"developers"}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Subject {
    User { name: UserName },
    ServiceAccount { namespace: Namespace, name: ServiceAccountName },
    Group { name: GroupName },
}

const SA_PREFIX: &str = "system:serviceaccount:";

impl Subject {
    /// Parses the SUBJECT of `policy add-role-to-user`: a user name, or `system:serviceaccount:<ns>:<name>`.
    pub fn user_or_service_account(s: &str) -> Result<Subject, InvalidName> {
        match s.strip_prefix(SA_PREFIX) {
            Some(rest) => {
                let bad = || InvalidName {
                    kind: "service account",
                    value: s.to_owned(),
                    why: "use system:serviceaccount:<ns>:<name>",
                };
                let (ns, name) = rest.split_once(':').ok_or_else(bad)?;
                Ok(Subject::ServiceAccount { namespace: ns.parse().map_err(|_| bad())?, name: name.parse()? })
            }
            None => Ok(Subject::User { name: s.parse()? }),
        }
    }

    /// The subject's name as Kubernetes writes it: `alice`, `system:serviceaccount:team:builder`, `developers`.
    pub fn name(&self) -> String {
        match self {
            Subject::User { name } => name.to_string(),
            Subject::ServiceAccount { namespace, name } => format!("{SA_PREFIX}{namespace}:{name}"),
            Subject::Group { name } => name.to_string(),
        }
    }

    /// `User`, `ServiceAccount` or `Group`.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::User { .. } => "User",
            Subject::ServiceAccount { .. } => "ServiceAccount",
            Subject::Group { .. } => "Group",
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind(), self.name())
    }
}

impl fmt::Debug for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_accept_and_reject() {
        for ok in ["alice", "a", "bob.smith@example.com", "ci_bot-1"] {
            assert!(ok.parse::<UserName>().is_ok(), "{ok}");
        }
        for bad in ["", "Alice", "-a", "a-", "a/b", "a:b", "a b", &"x".repeat(254)] {
            assert!(bad.parse::<UserName>().is_err(), "{bad}");
        }
        assert!("system:authenticated".parse::<GroupName>().is_ok());
        assert!("team/x".parse::<GroupName>().is_err());
        assert!("builder".parse::<ServiceAccountName>().is_ok());
        assert!("build.er".parse::<ServiceAccountName>().is_err());
        assert!("0123abcd".parse::<TokenId>().is_ok());
        assert!("../x".parse::<TokenId>().is_err());
        assert_eq!(TokenId::random().as_str().len(), 16);
    }

    #[test]
    fn subjects() {
        let sa = Subject::user_or_service_account("system:serviceaccount:project-a:default").unwrap();
        assert_eq!(
            sa,
            Subject::ServiceAccount { namespace: "project-a".parse().unwrap(), name: "default".parse().unwrap() }
        );
        assert_eq!(sa.name(), "system:serviceaccount:project-a:default");
        assert_eq!(Subject::user_or_service_account("alice").unwrap().kind(), "User");
        assert!(Subject::user_or_service_account("system:serviceaccount:a").is_err());
        assert!(Subject::user_or_service_account("system:serviceaccount:A:b").is_err());
        let json = serde_json::to_value(&sa).unwrap();
        assert_eq!(json, serde_json::json!({"kind":"ServiceAccount","namespace":"project-a","name":"default"}));
        let back: Subject = serde_json::from_value(json).unwrap();
        assert_eq!(back, sa);
        assert!(serde_json::from_value::<Subject>(serde_json::json!({"kind":"User","name":"Bad"})).is_err());
        assert_eq!(GroupName::service_accounts_of(&"a".parse().unwrap()).as_str(), "system:serviceaccounts:a");
    }
}
