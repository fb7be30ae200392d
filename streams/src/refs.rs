//! Names of image stream objects as users write them, parsed once at the edge: `<stream>:<tag>`
//! ([`IsTagName`], an ImageStreamTag), `<stream>@<id>` ([`IsImageName`], an ImageStreamImage, `<id>` a digest or
//! a unique prefix of its hex as in `ruby@3a335d7`), and the `from` of a spec tag ([`TagSource`]). Pure; used by
//! the service, the HTTP edge and the CLI.

use std::fmt;
use std::str::FromStr;

use names::{Digest, Namespace, RepositoryName, StreamName, TagName};

use crate::model::ObjectReference;

/// `from.kind` values of a spec tag.
pub const KIND_DOCKER_IMAGE: &str = "DockerImage";
pub const KIND_IMAGE_STREAM_TAG: &str = "ImageStreamTag";
pub const KIND_IMAGE_STREAM_IMAGE: &str = "ImageStreamImage";

/// Why a name was rejected; the message is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RefError(pub String);

/// `<stream>:<tag>`
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IsTagName {
    pub stream: StreamName,
    pub tag: TagName,
}

impl FromStr for IsTagName {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let (stream, tag) =
            s.split_once(':').ok_or_else(|| RefError(format!("{s:?}: an image stream tag is named <stream>:<tag>")))?;
        Ok(IsTagName {
            stream: stream.parse().map_err(|e| RefError(format!("{e}")))?,
            tag: tag.parse().map_err(|e| RefError(format!("{e}")))?,
        })
    }
}

impl fmt::Display for IsTagName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.stream, self.tag)
    }
}

/// An image id as users write it: a full digest, or a prefix of a digest's hex (optionally with `sha256:`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageId {
    algorithm: Option<String>,
    hex_prefix: String,
}

impl ImageId {
    /// Whether `digest` is (or starts with) this id.
    pub fn matches(&self, digest: &Digest) -> bool {
        self.algorithm.as_deref().is_none_or(|a| a == digest.algorithm().as_str())
            && digest.hex().starts_with(&self.hex_prefix)
    }
}

impl FromStr for ImageId {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let (algorithm, hex) = match s.split_once(':') {
            Some((a, h)) => (Some(a.to_owned()), h),
            None => (None, s),
        };
        let ok = !hex.is_empty()
            && hex.len() <= 128
            && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok || algorithm.as_deref().is_some_and(|a| a.is_empty()) {
            return Err(RefError(format!("{s:?} is not an image id (a digest or a prefix of its hex)")));
        }
        Ok(ImageId { algorithm, hex_prefix: hex.to_owned() })
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.algorithm {
            Some(a) => write!(f, "{a}:{}", self.hex_prefix),
            None => f.write_str(&self.hex_prefix),
        }
    }
}

/// `<stream>@<id>`
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IsImageName {
    pub stream: StreamName,
    pub id: ImageId,
}

impl FromStr for IsImageName {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let (stream, id) = s
            .split_once('@')
            .ok_or_else(|| RefError(format!("{s:?}: an image stream image is named <stream>@<id>")))?;
        Ok(IsImageName { stream: stream.parse().map_err(|e| RefError(format!("{e}")))?, id: id.parse()? })
    }
}

impl fmt::Display for IsImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.stream, self.id)
    }
}

/// Where a spec tag takes its image from (`spec.tags[].from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagSource {
    /// An image in another registry, by pull spec.
    DockerImage(String),
    /// Another tag: of this stream (tracking when `stream` is this one or absent), or of another stream.
    Tag { namespace: Option<Namespace>, stream: Option<StreamName>, tag: TagName },
    /// One image of a stream.
    Image { namespace: Option<Namespace>, stream: StreamName, id: ImageId },
}

impl TagSource {
    /// Parses a spec tag's `from`.
    pub fn parse(from: &ObjectReference) -> Result<TagSource, RefError> {
        let namespace = match from.namespace.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => Some(n.parse::<Namespace>().map_err(|e| RefError(e.to_string()))?),
            None => None,
        };
        match from.kind.as_str() {
            KIND_DOCKER_IMAGE => {
                let name = from.name.trim();
                if name.is_empty() || name.contains(char::is_whitespace) {
                    return Err(RefError(format!("{:?} is not a pull spec", from.name)));
                }
                // Docker's reference grammar, as the importer will read it.
                if let Err(e) = name.parse::<oci_spec::distribution::Reference>() {
                    return Err(RefError(format!("{name:?} is not a pull spec: {e}")));
                }
                Ok(TagSource::DockerImage(name.to_owned()))
            }
            KIND_IMAGE_STREAM_TAG => match from.name.split_once(':') {
                Some(_) => {
                    let n: IsTagName = from.name.parse()?;
                    Ok(TagSource::Tag { namespace, stream: Some(n.stream), tag: n.tag })
                }
                None => Ok(TagSource::Tag {
                    namespace,
                    stream: None,
                    tag: from.name.parse().map_err(|e| RefError(format!("{e}")))?,
                }),
            },
            KIND_IMAGE_STREAM_IMAGE => {
                let n: IsImageName = from.name.parse()?;
                Ok(TagSource::Image { namespace, stream: n.stream, id: n.id })
            }
            other => Err(RefError(format!(
                "from.kind {other:?} is not one of {KIND_DOCKER_IMAGE}, {KIND_IMAGE_STREAM_TAG}, {KIND_IMAGE_STREAM_IMAGE}"
            ))),
        }
    }

    /// The `from` object reference for this source.
    pub fn to_reference(&self) -> ObjectReference {
        match self {
            TagSource::DockerImage(name) => {
                ObjectReference { kind: KIND_DOCKER_IMAGE.into(), name: name.clone(), namespace: None }
            }
            TagSource::Tag { namespace, stream, tag } => ObjectReference {
                kind: KIND_IMAGE_STREAM_TAG.into(),
                name: match stream {
                    Some(s) => format!("{s}:{tag}"),
                    None => tag.to_string(),
                },
                namespace: namespace.as_ref().map(|n| n.to_string()),
            },
            TagSource::Image { namespace, stream, id } => ObjectReference {
                kind: KIND_IMAGE_STREAM_IMAGE.into(),
                name: format!("{stream}@{id}"),
                namespace: namespace.as_ref().map(|n| n.to_string()),
            },
        }
    }

    /// The stream this source names, seen from the stream `here` (`None` for external images).
    pub fn repository(&self, here: &RepositoryName) -> Option<RepositoryName> {
        let (namespace, stream) = match self {
            TagSource::DockerImage(_) => return None,
            TagSource::Tag { namespace, stream, .. } => (namespace, stream.as_ref().unwrap_or(here.stream())),
            TagSource::Image { namespace, stream, .. } => (namespace, stream),
        };
        Some(RepositoryName::new(namespace.clone().unwrap_or_else(|| here.namespace().clone()), stream.clone()))
    }

    /// The tag of this stream that a tag with this source tracks: an `ImageStreamTag` of the same stream.
    pub fn tracked_tag(&self, here: &RepositoryName) -> Option<&TagName> {
        match self {
            TagSource::Tag { tag, .. } if self.repository(here).as_ref() == Some(here) => Some(tag),
            _ => None,
        }
    }

    /// The digest an external pull spec pins (`repo@sha256:…`), if any.
    pub fn pinned_digest(pull_spec: &str) -> Option<Digest> {
        pull_spec.rsplit_once('@').and_then(|(_, d)| d.parse().ok())
    }
}

/// What `tributary tag SRC DST` reads SRC as, the way `oc tag` does: a pull spec with a registry host
/// (`docker.io/python:3.6`, `localhost:5000/x`) is a `DockerImage`; `[ns/]stream@id` an `ImageStreamImage`;
/// `[ns/]stream[:tag]` an `ImageStreamTag` (tag `latest` when left out).
pub fn parse_cli_source(text: &str, force_docker: bool) -> Result<TagSource, RefError> {
    let first = text.split('/').next().unwrap_or_default();
    let has_registry = text.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if force_docker || has_registry {
        return TagSource::parse(&ObjectReference {
            kind: KIND_DOCKER_IMAGE.into(),
            name: text.into(),
            namespace: None,
        });
    }
    let (namespace, rest) = match text.split_once('/') {
        Some((ns, rest)) => (Some(ns.parse::<Namespace>().map_err(|e| RefError(e.to_string()))?), rest),
        None => (None, text),
    };
    if rest.contains('/') {
        return Err(RefError(format!("{text:?}: expected [namespace/]stream:tag, stream@id or a pull spec")));
    }
    if let Some((stream, id)) = rest.split_once('@') {
        let n: IsImageName = format!("{stream}@{id}").parse()?;
        return Ok(TagSource::Image { namespace, stream: n.stream, id: n.id });
    }
    let (stream, tag) = rest.split_once(':').unwrap_or((rest, "latest"));
    Ok(TagSource::Tag {
        namespace,
        stream: Some(stream.parse().map_err(|e| RefError(format!("{e}")))?),
        tag: tag.parse().map_err(|e| RefError(format!("{e}")))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse() {
        let t: IsTagName = "ruby:2.0".parse().unwrap();
        assert_eq!((t.stream.as_str(), t.tag.as_str()), ("ruby", "2.0"));
        assert_eq!(t.to_string(), "ruby:2.0");
        assert!("ruby".parse::<IsTagName>().is_err());
        assert!("Ruby:x".parse::<IsTagName>().is_err());
        let d = Digest::sha256_of(b"x");
        let i: IsImageName = format!("ruby@{}", &d.hex()[..7]).parse().unwrap();
        assert!(i.id.matches(&d));
        assert!(!i.id.matches(&Digest::sha256_of(b"y")));
        let full: IsImageName = format!("ruby@{d}").parse().unwrap();
        assert!(full.id.matches(&d));
        assert!("ruby@xyz".parse::<IsImageName>().is_err());
        assert!("ruby@".parse::<IsImageName>().is_err());
        assert!("ruby@sha512:".parse::<IsImageName>().is_err());
    }

    #[test]
    fn sources() {
        let here: RepositoryName = "ns/ruby".parse().unwrap();
        let r = |kind: &str, name: &str, ns: Option<&str>| ObjectReference {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(str::to_owned),
        };
        let alias = TagSource::parse(&r("ImageStreamTag", "ruby:2.0", None)).unwrap();
        assert_eq!(alias.tracked_tag(&here).map(|t| t.as_str()), Some("2.0"));
        let bare = TagSource::parse(&r("ImageStreamTag", "2.0", None)).unwrap();
        assert_eq!(bare.tracked_tag(&here).map(|t| t.as_str()), Some("2.0"));
        let same_ns = TagSource::parse(&r("ImageStreamTag", "ruby:2.0", Some("ns"))).unwrap();
        assert!(same_ns.tracked_tag(&here).is_some());
        let other = TagSource::parse(&r("ImageStreamTag", "python:3", None)).unwrap();
        assert_eq!(other.tracked_tag(&here), None);
        assert_eq!(other.repository(&here).unwrap().to_string(), "ns/python");
        let other_ns = TagSource::parse(&r("ImageStreamTag", "ruby:2.0", Some("lib"))).unwrap();
        assert_eq!(other_ns.tracked_tag(&here), None);
        assert!(TagSource::parse(&r("ImageStreamImage", "ruby@3a335d7", None)).is_ok());
        assert!(TagSource::parse(&r("DockerImage", "", None)).is_err());
        for bad in ["::::", "Upper/Case:1", "a/b:c:d", "a//b", "a/b@sha256:zz"] {
            assert!(TagSource::parse(&r("DockerImage", bad, None)).is_err(), "{bad}");
        }
        let by_digest = format!("localhost:5000/a/b@sha256:{}", "0".repeat(64));
        for good in ["python", "python:3.6", "docker.io/library/python:3.6", &by_digest] {
            assert!(TagSource::parse(&r("DockerImage", good, None)).is_ok(), "{good}");
        }
        assert!(TagSource::parse(&r("Pod", "x", None)).is_err());
        for (kind, name) in
            [("ImageStreamTag", "ruby:2.0"), ("ImageStreamImage", "ruby@3a335d7"), ("DockerImage", "a/b:c")]
        {
            let s = TagSource::parse(&r(kind, name, None)).unwrap();
            assert_eq!(s.to_reference(), r(kind, name, None));
        }
        let d = Digest::sha256_of(b"x");
        assert_eq!(TagSource::pinned_digest(&format!("quay.io/a/b@{d}")), Some(d));
        assert_eq!(TagSource::pinned_digest("quay.io/a/b:1"), None);
    }

    #[test]
    fn cli_sources_like_oc() {
        assert!(matches!(parse_cli_source("docker.io/python:3.6.0", false), Ok(TagSource::DockerImage(_))));
        assert!(matches!(parse_cli_source("localhost:5000/a/b", false), Ok(TagSource::DockerImage(_))));
        assert!(matches!(parse_cli_source("python:3.6", true), Ok(TagSource::DockerImage(_))));
        assert!(matches!(
            parse_cli_source("python:3.6", false),
            Ok(TagSource::Tag { namespace: None, stream: Some(_), .. })
        ));
        match parse_cli_source("lib/python", false).unwrap() {
            TagSource::Tag { namespace, tag, .. } => {
                assert_eq!(namespace.unwrap().as_str(), "lib");
                assert_eq!(tag.as_str(), "latest");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse_cli_source("python@3a335d7", false), Ok(TagSource::Image { .. })));
        assert!(parse_cli_source("a/b/c", false).is_err());
    }
}
