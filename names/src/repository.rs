//! Repository names (`<namespace>/<stream>`, exactly two components, as in OpenShift), tags, references and
//! upload ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Digest, NameError};

/// A namespace (project): a DNS label, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);
crate::string_newtype!(Namespace);

impl FromStr for Namespace {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| NameError::Repository(s.to_owned(), why);
        if s.is_empty() || s.len() > 63 {
            return Err(err("namespace must be 1 to 63 characters"));
        }
        let b = s.as_bytes();
        let ok_char = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
        if !b.iter().all(ok_char) || b[0] == b'-' || b[b.len() - 1] == b'-' {
            return Err(err("namespace must be lowercase letters, digits and '-', not starting or ending with '-'"));
        }
        Ok(Namespace(s.to_owned()))
    }
}

/// An image stream's name: one OCI path component, `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, at most 128 characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);
crate::string_newtype!(StreamName);

impl FromStr for StreamName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 128 || !is_path_component(s) {
            return Err(NameError::Repository(
                s.to_owned(),
                "stream name must be lowercase letters and digits separated by '.', '_', '__' or '-'",
            ));
        }
        Ok(StreamName(s.to_owned()))
    }
}

/// The OCI path-component grammar: alphanumeric runs joined by one separator (`.`, `_`, `__`, or `-`+).
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// A repository `<namespace>/<stream>`: the registry's name for an image stream.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepositoryName {
    namespace: Namespace,
    stream: StreamName,
}

impl RepositoryName {
    pub fn new(namespace: Namespace, stream: StreamName) -> Self {
        RepositoryName { namespace, stream }
    }
    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }
}

impl fmt::Display for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.stream)
    }
}

impl fmt::Debug for RepositoryName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl FromStr for RepositoryName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(ns), Some(stream), None) => Ok(RepositoryName { namespace: ns.parse()?, stream: stream.parse()? }),
            _ => Err(NameError::Repository(
                s.to_owned(),
                "repository names have exactly two components: <namespace>/<stream>",
            )),
        }
    }
}

impl TryFrom<String> for RepositoryName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RepositoryName> for String {
    fn from(n: RepositoryName) -> String {
        n.to_string()
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TagName(String);
crate::string_newtype!(TagName);

impl FromStr for TagName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first_ok = b.first().is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
        let rest_ok = b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !first_ok || !rest_ok || b.len() > 128 {
            return Err(NameError::Tag(s.to_owned()));
        }
        Ok(TagName(s.to_owned()))
    }
}

/// A manifest reference on the wire: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    Tag(TagName),
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(s.parse()?))
        } else {
            Ok(Reference::Tag(s.parse()?))
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// The id of a blob upload session (a UUID).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    pub fn random() -> Self {
        UploadId(uuid::Uuid::new_v4())
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

impl fmt::Debug for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for UploadId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s).map(UploadId).map_err(|_| NameError::UploadId(s.to_owned()))
    }
}

impl TryFrom<String> for UploadId {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<UploadId> for String {
    fn from(u: UploadId) -> String {
        u.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `names` fuzz target: the OCI tag grammar admits `..` inside a tag (a tag only names a metadata
    /// key), while names, which become storage paths, never hold it.
    #[test]
    fn dots_may_sit_in_tags_but_never_in_names() {
        assert!("eda..".parse::<TagName>().is_ok());
        for bad in ["ns/a..b", "../a", "ns/..", "a/b/../c"] {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad}");
        }
        assert!("..".parse::<Namespace>().is_err());
    }

    #[test]
    fn repository_names() {
        for ok in ["ns/app", "my-proj/app.v2", "a/b__c", "a1/x-y--z", "ns/a_b"] {
            assert_eq!(ok.parse::<RepositoryName>().unwrap().to_string(), ok, "{ok}");
        }
        for bad in
            ["app", "a/b/c", "NS/app", "ns/App", "-ns/app", "ns-/app", "ns/", "/app", "ns/a..b", "ns/a___b", "ns/.a"]
        {
            assert!(bad.parse::<RepositoryName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_and_references() {
        assert!("v1.0_rc-1".parse::<TagName>().is_ok());
        assert!("_x".parse::<TagName>().is_ok());
        assert!(".x".parse::<TagName>().is_err());
        assert!("a".repeat(129).parse::<TagName>().is_err());
        assert!(matches!("latest".parse::<Reference>(), Ok(Reference::Tag(_))));
        assert!(matches!(
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse::<Reference>(),
            Ok(Reference::Digest(_))
        ));
        assert!("sha256:nothex".parse::<Reference>().is_err());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<RepositoryName>("\"a/b/c\"").is_err());
        let r: RepositoryName = serde_json::from_str("\"ns/app\"").unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"ns/app\"");
    }
}
