//! The wire shapes of the cluster-wide image policy objects, as OpenShift writes them: the `Image` object
//! `cluster` (`config.openshift.io/v1`), `ImageDigestMirrorSet` and `ImageTagMirrorSet` (`config.openshift.io/v1`)
//! and `ImageContentSourcePolicy` (`operator.openshift.io/v1alpha1`), with the checks an object must pass before
//! it is stored ([`validate`]). Pure data; [`super::store`] stores them, [`super::rules`] reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use streams::model::ObjectMeta;

pub const CONFIG_GROUP: &str = "config.openshift.io";
pub const CONFIG_VERSION: &str = "config.openshift.io/v1";
pub const OPERATOR_GROUP: &str = "operator.openshift.io";
pub const OPERATOR_VERSION: &str = "operator.openshift.io/v1alpha1";

/// The one valid name of the `Image` object.
pub const CLUSTER: &str = "cluster";

/// The kinds of policy object: each with its API group, version, plural and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `images.config.openshift.io`: only `cluster`.
    Image,
    ImageDigestMirrorSet,
    ImageTagMirrorSet,
    /// Deprecated; read as digest mirrors that always fall back to the source.
    ImageContentSourcePolicy,
}

impl Kind {
    pub const ALL: [Kind; 4] =
        [Kind::Image, Kind::ImageDigestMirrorSet, Kind::ImageTagMirrorSet, Kind::ImageContentSourcePolicy];

    /// The API's plural (the path segment and the storage key's).
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Image => "images",
            Kind::ImageDigestMirrorSet => "imagedigestmirrorsets",
            Kind::ImageTagMirrorSet => "imagetagmirrorsets",
            Kind::ImageContentSourcePolicy => "imagecontentsourcepolicies",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Kind::Image => "image",
            Kind::ImageDigestMirrorSet => "imagedigestmirrorset",
            Kind::ImageTagMirrorSet => "imagetagmirrorset",
            Kind::ImageContentSourcePolicy => "imagecontentsourcepolicy",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::Image => "Image",
            Kind::ImageDigestMirrorSet => "ImageDigestMirrorSet",
            Kind::ImageTagMirrorSet => "ImageTagMirrorSet",
            Kind::ImageContentSourcePolicy => "ImageContentSourcePolicy",
        }
    }

    pub fn short_names(self) -> &'static [&'static str] {
        match self {
            Kind::Image => &[],
            Kind::ImageDigestMirrorSet => &["idms"],
            Kind::ImageTagMirrorSet => &["itms"],
            Kind::ImageContentSourcePolicy => &["icsp"],
        }
    }

    pub fn group(self) -> &'static str {
        match self {
            Kind::ImageContentSourcePolicy => OPERATOR_GROUP,
            _ => CONFIG_GROUP,
        }
    }

    pub fn version(self) -> &'static str {
        match self {
            Kind::ImageContentSourcePolicy => "v1alpha1",
            _ => "v1",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ImageContentSourcePolicy => OPERATOR_VERSION,
            _ => CONFIG_VERSION,
        }
    }

    /// `imagedigestmirrorsets.config.openshift.io`, as errors name a resource.
    pub fn qualified(self) -> String {
        format!("{}.{}", self.resource(), self.group())
    }

    /// The kind served at `group`/`resource`, if any.
    pub fn of(group: &str, resource: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.group() == group && k.resource() == resource)
    }
}

/// One stored policy object: its metadata, its spec (typed by [`validate`], kept as sent so that fields this
/// server does not act on are kept too), and for the `Image` its status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub status: Value,
}

// ---------------------------------------------------------------------------------------------------------------
// The Image object

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_registries_for_import: Vec<RegistryLocation>,
    #[serde(default, rename = "additionalTrustedCA", skip_serializing_if = "Option::is_none")]
    pub additional_trusted_ca: Option<TrustedCa>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_registry_hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_sources: Option<RegistrySources>,
}

/// An entry of `allowedRegistriesForImport`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryLocation {
    /// `quay.io`, `*.example.com`, `registry.local:5000`.
    pub domain_name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// `additionalTrustedCA`. OpenShift names a config map in `openshift-config` whose keys are registry hosts
/// (`host..port` for `host:port`) and values PEM bundles; a standalone registry has no config maps, so the
/// bundles are given inline in `data`, keyed the same way. `name` is kept for compatibility and not read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedCa {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
}

impl TrustedCa {
    /// The host a `data` key names (`host..port` is `host:port`, as in OpenShift's config maps).
    pub fn host_of_key(key: &str) -> String {
        key.replace("..", ":").to_ascii_lowercase()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySources {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub insecure_registries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_registries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_registries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_runtime_search_registries: Vec<String>,
}

// ---------------------------------------------------------------------------------------------------------------
// Mirror sets

/// `mirrorSourcePolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MirrorSourcePolicy {
    #[default]
    AllowContactingSource,
    NeverContactSource,
}

/// One entry of `imageDigestMirrors` / `imageTagMirrors` (and, without the policy, of an ICSP's
/// `repositoryDigestMirrors`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMirrors {
    /// A registry (`quay.io`) or a repository in it (`quay.io/ns` / `quay.io/ns/app`).
    pub source: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_source_policy: Option<MirrorSourcePolicy>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DigestMirrorSetSpec {
    #[serde(default)]
    pub image_digest_mirrors: Vec<ImageMirrors>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagMirrorSetSpec {
    #[serde(default)]
    pub image_tag_mirrors: Vec<ImageMirrors>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentSourcePolicySpec {
    #[serde(default)]
    pub repository_digest_mirrors: Vec<ImageMirrors>,
}

// ---------------------------------------------------------------------------------------------------------------
// Validation

/// A Kubernetes object name (DNS subdomain): lowercase alphanumerics, `-` and `.`, at most 253 characters,
/// starting and ending alphanumeric.
pub fn valid_name(name: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && name.starts_with(alnum)
        && name.ends_with(alnum)
}

/// Whether `s` is a registry host with an optional port (`quay.io`, `localhost:5000`, `[::1]:5000`), or with
/// `wildcard` a `*.domain` pattern too.
fn valid_host(s: &str, wildcard: bool) -> bool {
    let s = if wildcard { s.strip_prefix("*.").unwrap_or(s) } else { s };
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if h.ends_with(']') || !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    };
    let host_ok = !host.is_empty()
        && host.chars().all(|c| c.is_ascii_alphanumeric() || "-.[]:".contains(c))
        && !host.starts_with(['-', '.'])
        && !host.ends_with(['-', '.']);
    host_ok && port.is_none_or(|p| !p.is_empty() && p.parse::<u16>().is_ok())
}

/// Whether `s` is a registry scope: a host (with a port) or `host/path` (lowercase repository path components);
/// with `wildcard`, a `*.domain` host is allowed too (not followed by a path).
pub fn valid_scope(s: &str, wildcard: bool) -> bool {
    let (host, path) = match s.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    if host.starts_with("*.") && path.is_some() {
        return false;
    }
    let path_ok = path.is_none_or(|p| {
        p.split('/').all(|c| {
            !c.is_empty() && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        })
    });
    valid_host(host, wildcard) && path_ok
}

/// Checks a sent object of `kind` and returns its spec in canonical form (as the typed spec serialises, with
/// the fields this server does not know dropped); the message names the field at fault.
pub fn validate(kind: Kind, name: &str, spec: &Value) -> Result<Value, String> {
    if !valid_name(name) {
        return Err(format!("metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain is required"));
    }
    let spec = if spec.is_null() { Value::Object(Default::default()) } else { spec.clone() };
    let typed = |e: serde_json::Error| format!("spec: Invalid value: {e}");
    match kind {
        Kind::Image => {
            if name != CLUSTER {
                return Err(format!("metadata.name: Invalid value: {name:?}: the only valid name is \"cluster\""));
            }
            let s: ImageSpec = serde_json::from_value(spec).map_err(typed)?;
            validate_image(&s)?;
            Ok(serde_json::to_value(&s).unwrap_or_default())
        }
        Kind::ImageDigestMirrorSet => {
            let s: DigestMirrorSetSpec = serde_json::from_value(spec).map_err(typed)?;
            validate_mirrors("spec.imageDigestMirrors", &s.image_digest_mirrors, true)?;
            Ok(serde_json::to_value(&s).unwrap_or_default())
        }
        Kind::ImageTagMirrorSet => {
            let s: TagMirrorSetSpec = serde_json::from_value(spec).map_err(typed)?;
            validate_mirrors("spec.imageTagMirrors", &s.image_tag_mirrors, true)?;
            Ok(serde_json::to_value(&s).unwrap_or_default())
        }
        Kind::ImageContentSourcePolicy => {
            let s: ContentSourcePolicySpec = serde_json::from_value(spec).map_err(typed)?;
            validate_mirrors("spec.repositoryDigestMirrors", &s.repository_digest_mirrors, false)?;
            Ok(serde_json::to_value(&s).unwrap_or_default())
        }
    }
}

fn validate_image(s: &ImageSpec) -> Result<(), String> {
    for (i, l) in s.allowed_registries_for_import.iter().enumerate() {
        if !valid_host(&l.domain_name, true) {
            return Err(format!(
                "spec.allowedRegistriesForImport[{i}].domainName: Invalid value: {:?}: a registry host with an \
                 optional port and an optional leading \"*.\" is required",
                l.domain_name
            ));
        }
    }
    for (i, h) in s.external_registry_hostnames.iter().enumerate() {
        if !valid_host(h, false) {
            return Err(format!("spec.externalRegistryHostnames[{i}]: Invalid value: {h:?}: not a host[:port]"));
        }
    }
    if let Some(ca) = &s.additional_trusted_ca {
        for (key, pem) in &ca.data {
            if !valid_host(&TrustedCa::host_of_key(key), false) {
                return Err(format!("spec.additionalTrustedCA.data[{key}]: Invalid value: not a registry host"));
            }
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).unwrap_or_default();
            if certs.is_empty() {
                return Err(format!(
                    "spec.additionalTrustedCA.data[{key}]: Invalid value: no PEM certificate could be read"
                ));
            }
        }
    }
    if let Some(rs) = &s.registry_sources {
        if !rs.allowed_registries.is_empty() && !rs.blocked_registries.is_empty() {
            return Err("spec.registrySources: Invalid value: only one of allowedRegistries and blockedRegistries \
                        may be set"
                .into());
        }
        for (field, list) in [
            ("allowedRegistries", &rs.allowed_registries),
            ("blockedRegistries", &rs.blocked_registries),
            ("insecureRegistries", &rs.insecure_registries),
            ("containerRuntimeSearchRegistries", &rs.container_runtime_search_registries),
        ] {
            for (i, entry) in list.iter().enumerate() {
                if !valid_scope(entry, true) {
                    return Err(format!(
                        "spec.registrySources.{field}[{i}]: Invalid value: {entry:?}: a registry host (with an \
                         optional port) or host/repository is required"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn validate_mirrors(field: &str, list: &[ImageMirrors], policy: bool) -> Result<(), String> {
    for (i, m) in list.iter().enumerate() {
        if !valid_scope(&m.source, false) {
            return Err(format!(
                "{field}[{i}].source: Invalid value: {:?}: a registry host or host/repository is required",
                m.source
            ));
        }
        for (j, mirror) in m.mirrors.iter().enumerate() {
            if !valid_scope(mirror, false) {
                return Err(format!(
                    "{field}[{i}].mirrors[{j}]: Invalid value: {mirror:?}: a registry host or host/repository is \
                     required"
                ));
            }
        }
        if !policy && m.mirror_source_policy.is_some() {
            return Err(format!("{field}[{i}].mirrorSourcePolicy: Forbidden: not a field of this kind"));
        }
        if m.mirror_source_policy == Some(MirrorSourcePolicy::NeverContactSource) && m.mirrors.is_empty() {
            return Err(format!("{field}[{i}].mirrors: Required value: NeverContactSource needs at least one mirror"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_scopes() {
        assert!(valid_name("cluster") && valid_name("a.b-c") && !valid_name("A") && !valid_name("-a"));
        for ok in ["quay.io", "localhost:5000", "quay.io/ns", "quay.io/ns/app", "127.0.0.1:5000/a/b", "reg"] {
            assert!(valid_scope(ok, false), "{ok}");
        }
        for bad in ["", "quay.io/", "quay.io//x", "Quay.io/App", "quay.io:x", "*.quay.io/x", "http://quay.io"] {
            assert!(!valid_scope(bad, true), "{bad}");
        }
        assert!(valid_scope("*.example.com", true) && !valid_scope("*.example.com", false));
    }

    #[test]
    fn both_source_lists_refused() {
        let spec = json!({"registrySources": {"allowedRegistries": ["a.io"], "blockedRegistries": ["b.io"]}});
        let e = validate(Kind::Image, CLUSTER, &spec).unwrap_err();
        assert!(e.contains("only one of allowedRegistries and blockedRegistries"), "{e}");
        assert!(validate(Kind::Image, "other", &json!({})).unwrap_err().contains("only valid name"));
        let never = json!({"imageDigestMirrors": [{"source": "a.io/x", "mirrorSourcePolicy": "NeverContactSource"}]});
        assert!(validate(Kind::ImageDigestMirrorSet, "m", &never).is_err());
        let icsp = json!({"repositoryDigestMirrors": [{"source": "a.io", "mirrors": ["m.io"],
                                                        "mirrorSourcePolicy": "NeverContactSource"}]});
        assert!(validate(Kind::ImageContentSourcePolicy, "m", &icsp).is_err());
        let bad_policy =
            json!({"imageTagMirrors": [{"source": "a.io", "mirrors": ["m.io"], "mirrorSourcePolicy": "x"}]});
        assert!(validate(Kind::ImageTagMirrorSet, "m", &bad_policy).is_err());
        let ca = json!({"additionalTrustedCA": {"data": {"reg..5000": "not pem"}}});
        assert!(validate(Kind::Image, CLUSTER, &ca).unwrap_err().contains("PEM"));
    }
}
