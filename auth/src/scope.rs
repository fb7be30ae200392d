//! Docker token scopes (`repository:ns/app:pull,push`, `registry:catalog:*`) and the `access` claims of the
//! JWTs that grant them. Scopes are parsed from the token endpoint's `scope` parameters and written into the
//! `WWW-Authenticate` challenge; access claims are checked on every request that carries a JWT.

use std::collections::BTreeSet;
use std::fmt;

use names::RepositoryName;
use serde::{Deserialize, Serialize};

/// What a client may do with a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// `pull`, `push`, `delete`; `*` is every action (see [`Scope::parse`]).
    fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One requested or granted scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Repository {
        name: RepositoryName,
        actions: BTreeSet<Action>,
    },
    /// `registry:catalog:*`: listing the repositories (which lists only what the caller may pull).
    Catalog,
}

const CATALOG: &str = "registry:catalog:*";

impl Scope {
    pub fn repository(name: RepositoryName, actions: impl IntoIterator<Item = Action>) -> Scope {
        Scope::Repository { name, actions: actions.into_iter().collect() }
    }

    /// Parses one scope. Unknown types, unknown actions and names that are not repositories of this registry
    /// are ignored (`None`), as the Docker token spec asks: they simply are not granted.
    pub fn parse(s: &str) -> Option<Scope> {
        if s == CATALOG {
            return Some(Scope::Catalog);
        }
        let rest = s.strip_prefix("repository:")?;
        let (name, actions) = rest.rsplit_once(':')?;
        let name = name.parse::<RepositoryName>().ok()?;
        let mut set = BTreeSet::new();
        for a in actions.split(',') {
            if a == "*" {
                set.extend(Action::ALL);
            } else if let Some(a) = Action::parse(a) {
                set.insert(a);
            }
        }
        Some(Scope::Repository { name, actions: set })
    }

    /// Parses the scopes of a token request: each `scope` parameter may hold several, space-separated.
    pub fn parse_all<'a>(params: impl IntoIterator<Item = &'a str>) -> Vec<Scope> {
        params.into_iter().flat_map(|p| p.split(' ')).filter(|s| !s.is_empty()).filter_map(Scope::parse).collect()
    }

    /// The claim form of the scope.
    pub fn to_access(&self) -> AccessEntry {
        match self {
            Scope::Repository { name, actions } => AccessEntry {
                kind: "repository".into(),
                name: name.to_string(),
                actions: actions.iter().map(|a| a.as_str().to_owned()).collect(),
            },
            Scope::Catalog => {
                AccessEntry { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] }
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repository { name, actions } => {
                let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
                write!(f, "repository:{name}:{}", actions.join(","))
            }
            Scope::Catalog => f.write_str(CATALOG),
        }
    }
}

/// One entry of a JWT's `access` claim, as the Docker token spec writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Whether `access` grants `action` on `repo`.
pub fn covers(access: &[AccessEntry], repo: &RepositoryName, action: Action) -> bool {
    let name = repo.to_string();
    access
        .iter()
        .any(|e| e.kind == "repository" && e.name == name && e.actions.iter().any(|a| a == action.as_str() || a == "*"))
}

/// Whether `access` grants listing the catalog.
pub fn covers_catalog(access: &[AccessEntry]) -> bool {
    access.iter().any(|e| e.kind == "registry" && e.name == "catalog" && e.actions.iter().any(|a| a == "*"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let table: [(&str, Option<Scope>); 8] = [
            ("repository:ns/app:pull", Some(Scope::repository(repo.clone(), [Action::Pull]))),
            ("repository:ns/app:pull,push", Some(Scope::repository(repo.clone(), [Action::Pull, Action::Push]))),
            ("repository:ns/app:*", Some(Scope::repository(repo.clone(), Action::ALL))),
            ("repository:ns/app:pull,frobnicate", Some(Scope::repository(repo.clone(), [Action::Pull]))),
            ("registry:catalog:*", Some(Scope::Catalog)),
            ("repository:app:pull", None),
            ("repository:a/b/c:pull", None),
            ("user:ns/app:pull", None),
        ];
        for (s, want) in table {
            assert_eq!(Scope::parse(s), want, "{s}");
        }
        let all = Scope::parse_all(["repository:ns/app:pull registry:catalog:*", "", "repository:ns/b:push"]);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].to_string(), "repository:ns/app:pull");
        assert_eq!(Scope::repository(repo, [Action::Push, Action::Pull]).to_string(), "repository:ns/app:pull,push");
    }

    #[test]
    fn coverage() {
        let repo: RepositoryName = "ns/app".parse().unwrap();
        let other: RepositoryName = "ns/other".parse().unwrap();
        let access = vec![Scope::repository(repo.clone(), [Action::Pull]).to_access()];
        assert!(covers(&access, &repo, Action::Pull));
        assert!(!covers(&access, &repo, Action::Push));
        assert!(!covers(&access, &other, Action::Pull));
        assert!(!covers_catalog(&access));
        assert!(covers_catalog(&[Scope::Catalog.to_access()]));
        let json = serde_json::to_value(&access[0]).unwrap();
        assert_eq!(json, serde_json::json!({"type":"repository","name":"ns/app","actions":["pull"]}));
    }
}
