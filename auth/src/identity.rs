//! Who is calling: the [`Identity`] behind a request, the groups it belongs to (real and virtual), and whether a
//! binding's [`Subject`] names it.

use names::Namespace;
use serde::Serialize;

use crate::ids::{GroupName, ServiceAccountName, Subject, UserName};

/// The authenticated (or not) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials: the subject `system:anonymous`, in the group `system:unauthenticated`.
    Anonymous,
    User {
        name: UserName,
        groups: Vec<GroupName>,
    },
    ServiceAccount {
        namespace: Namespace,
        name: ServiceAccountName,
    },
}

/// The JWT `sub` of anonymous tokens.
pub const ANONYMOUS: &str = "system:anonymous";

impl Identity {
    /// Every group the identity is in, the virtual ones included.
    pub fn groups(&self) -> Vec<GroupName> {
        match self {
            Identity::Anonymous => vec![GroupName::unauthenticated()],
            Identity::User { groups, .. } => {
                let mut all = vec![GroupName::authenticated()];
                all.extend(groups.iter().cloned());
                all
            }
            Identity::ServiceAccount { namespace, .. } => vec![
                GroupName::authenticated(),
                GroupName::all_service_accounts(),
                GroupName::service_accounts_of(namespace),
            ],
        }
    }

    /// Whether a binding to `subject` applies to this identity.
    pub fn matches(&self, subject: &Subject) -> bool {
        match (self, subject) {
            (Identity::User { name, .. }, Subject::User { name: n }) => name == n,
            (Identity::ServiceAccount { namespace, name }, Subject::ServiceAccount { namespace: ns, name: n }) => {
                namespace == ns && name == n
            }
            (_, Subject::Group { name }) => self.groups().contains(name),
            _ => false,
        }
    }

    /// The identity as a subject (users and service accounts; anonymous is none).
    pub fn subject(&self) -> Option<Subject> {
        match self {
            Identity::Anonymous => None,
            Identity::User { name, .. } => Some(Subject::User { name: name.clone() }),
            Identity::ServiceAccount { namespace, name } => {
                Some(Subject::ServiceAccount { namespace: namespace.clone(), name: name.clone() })
            }
        }
    }

    /// The name as `whoami` prints it and as JWTs carry it in `sub`.
    pub fn name(&self) -> String {
        match self.subject() {
            Some(s) => s.name(),
            None => ANONYMOUS.to_owned(),
        }
    }

    pub fn is_anonymous(&self) -> bool {
        matches!(self, Identity::Anonymous)
    }

    /// What `whoami` answers.
    pub fn describe(&self) -> WhoAmI {
        WhoAmI {
            kind: match self {
                Identity::Anonymous => "Anonymous",
                Identity::User { .. } => "User",
                Identity::ServiceAccount { .. } => "ServiceAccount",
            },
            name: self.name(),
            groups: self.groups().into_iter().map(String::from).collect(),
        }
    }
}

/// The answer of `whoami`.
#[derive(Debug, Clone, Serialize)]
pub struct WhoAmI {
    pub kind: &'static str,
    pub name: String,
    pub groups: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_matching() {
        let ns: Namespace = "team".parse().unwrap();
        let sa = Identity::ServiceAccount { namespace: ns.clone(), name: "builder".parse().unwrap() };
        assert!(sa.matches(&Subject::Group { name: GroupName::service_accounts_of(&ns) }));
        assert!(!sa.matches(&Subject::Group { name: GroupName::service_accounts_of(&"other".parse().unwrap()) }));
        assert!(sa.matches(&Subject::ServiceAccount { namespace: ns.clone(), name: "builder".parse().unwrap() }));
        assert!(!sa.matches(&Subject::ServiceAccount { namespace: ns, name: "default".parse().unwrap() }));
        assert!(sa.matches(&Subject::Group { name: GroupName::authenticated() }));
        assert!(!sa.matches(&Subject::Group { name: GroupName::unauthenticated() }));
        let alice = Identity::User { name: "alice".parse().unwrap(), groups: vec!["devs".parse().unwrap()] };
        assert!(alice.matches(&Subject::Group { name: "devs".parse().unwrap() }));
        assert!(alice.matches(&Subject::User { name: "alice".parse().unwrap() }));
        assert!(!alice.matches(&Subject::User { name: "bob".parse().unwrap() }));
        assert!(Identity::Anonymous.matches(&Subject::Group { name: GroupName::unauthenticated() }));
        assert!(!Identity::Anonymous.matches(&Subject::Group { name: GroupName::authenticated() }));
        assert_eq!(sa.name(), "system:serviceaccount:team:builder");
        assert_eq!(Identity::Anonymous.name(), "system:anonymous");
    }
}
