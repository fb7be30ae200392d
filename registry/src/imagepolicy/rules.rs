//! The effective image policy ([`Policy`]): what the `Image` object `cluster` and the mirror sets mean for one
//! fetch from an external registry. Which registries may be imported from (`allowedRegistriesForImport`), which
//! may be contacted at all (`registrySources.allowedRegistries` / `blockedRegistries`), which insecurely, which CA
//! a host's certificate is checked with, and where an image is fetched from: its mirrors in order (digest mirrors
//! for a by-digest fetch, tag mirrors for a by-tag one; only the most specific matching source applies), then the
//! source unless `NeverContactSource`. Pure functions over the objects; `upstream` calls [`Policy::plan`] and the
//! checks, [`super::registries_conf`] renders the same rules for container tools.

use std::collections::BTreeMap;

use super::model::{
    ContentSourcePolicySpec, DigestMirrorSetSpec, ImageMirrors, ImageSpec, Kind, MirrorSourcePolicy, Object,
    RegistrySources, TagMirrorSetSpec,
};

/// Mirrors of one source, merged over every set that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRule {
    /// `host[:port]` or `host[:port]/repository`.
    pub source: String,
    /// Mirror locations in the order they are tried.
    pub mirrors: Vec<String>,
    /// Some set said `NeverContactSource`.
    pub never_contact_source: bool,
}

/// The image policy in force: the `Image` object's spec and the merged mirror rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub image: ImageSpec,
    pub digest_mirrors: Vec<MirrorRule>,
    pub tag_mirrors: Vec<MirrorRule>,
}

/// One place a fetch may go: `host[:port]/repository`, and whether it is a mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub repository: String,
    pub mirror: bool,
}

/// Where a fetch goes, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub endpoints: Vec<Endpoint>,
    /// The source was left out by `NeverContactSource`.
    pub source_skipped: bool,
}

/// Whether `entry` (a host, `*.domain`, or `host/repository`) covers `host`/`repository`.
pub fn scope_covers(entry: &str, host: &str, repository: &str) -> bool {
    let entry = entry.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match entry.split_once('/') {
        None => match entry.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => entry == host,
        },
        Some((h, path)) => h == host && (repository == path || repository.starts_with(&format!("{path}/"))),
    }
}

/// `host[:port]` split into the host and the port (IPv6 literals in brackets).
fn split_port(s: &str) -> (&str, Option<&str>) {
    match s.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') && (!h.contains(':') || h.ends_with(']')) => (h, Some(p)),
        _ => (s, None),
    }
}

impl Policy {
    /// The policy the stored objects make (`objects` in any order; mirror sets are merged sorted by kind and
    /// name, so every replica merges them alike).
    pub fn from_objects(objects: &[(Kind, Object)]) -> Policy {
        let mut sorted: Vec<&(Kind, Object)> = objects.iter().collect();
        sorted.sort_by(|a, b| (a.0, &a.1.metadata.name).cmp(&(b.0, &b.1.metadata.name)));
        let mut policy = Policy::default();
        let mut digest: Vec<ImageMirrors> = Vec::new();
        let mut tag: Vec<ImageMirrors> = Vec::new();
        for (kind, o) in sorted {
            let spec = o.spec.clone();
            match kind {
                Kind::Image => policy.image = serde_json::from_value(spec).unwrap_or_default(),
                Kind::ImageDigestMirrorSet => digest.extend(
                    serde_json::from_value::<DigestMirrorSetSpec>(spec).unwrap_or_default().image_digest_mirrors,
                ),
                Kind::ImageTagMirrorSet => {
                    tag.extend(serde_json::from_value::<TagMirrorSetSpec>(spec).unwrap_or_default().image_tag_mirrors)
                }
                Kind::ImageContentSourcePolicy => digest.extend(
                    serde_json::from_value::<ContentSourcePolicySpec>(spec)
                        .unwrap_or_default()
                        .repository_digest_mirrors,
                ),
            }
        }
        policy.digest_mirrors = merge(digest);
        policy.tag_mirrors = merge(tag);
        policy
    }

    fn sources(&self) -> RegistrySources {
        self.image.registry_sources.clone().unwrap_or_default()
    }

    /// `allowedRegistriesForImport` (empty: every registry): `Err` names why `host` is not in it.
    pub fn check_import(&self, host: &str) -> Result<(), String> {
        let list = &self.image.allowed_registries_for_import;
        if list.is_empty() || list.iter().any(|l| import_entry_covers(&l.domain_name, host)) {
            return Ok(());
        }
        Err(format!(
            "registry {host} is not in allowedRegistriesForImport of image.config.openshift.io/cluster ({})",
            list.iter().map(|l| l.domain_name.as_str()).collect::<Vec<_>>().join(", ")
        ))
    }

    /// `registrySources`: `Err` names the rule that forbids contacting `host`/`repository`.
    pub fn check_contact(&self, host: &str, repository: &str) -> Result<(), String> {
        let s = self.sources();
        if let Some(b) = s.blocked_registries.iter().find(|b| scope_covers(b, host, repository)) {
            return Err(format!(
                "{host}/{repository} is blocked by registrySources.blockedRegistries entry {b:?} of \
                 image.config.openshift.io/cluster"
            ));
        }
        if !s.allowed_registries.is_empty() && !s.allowed_registries.iter().any(|a| scope_covers(a, host, repository)) {
            return Err(format!(
                "{host}/{repository} is not in registrySources.allowedRegistries of image.config.openshift.io/cluster"
            ));
        }
        Ok(())
    }

    /// Whether `host`/`repository` may be reached over plain http or unverified TLS
    /// (`registrySources.insecureRegistries`, or an `insecure` entry of `allowedRegistriesForImport`).
    pub fn insecure(&self, host: &str, repository: &str) -> bool {
        self.sources().insecure_registries.iter().any(|e| scope_covers(e, host, repository))
            || self
                .image
                .allowed_registries_for_import
                .iter()
                .any(|l| l.insecure && import_entry_covers(&l.domain_name, host))
    }

    /// The PEM bundle `additionalTrustedCA` gives for `host`, if any.
    pub fn trusted_ca(&self, host: &str) -> Option<&str> {
        let ca = self.image.additional_trusted_ca.as_ref()?;
        let host = host.to_ascii_lowercase();
        ca.data.iter().find(|(k, _)| super::model::TrustedCa::host_of_key(k) == host).map(|(_, v)| v.as_str())
    }

    /// The hosts of every mirror (redirects from them are followed as from their sources).
    pub fn mirror_hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .digest_mirrors
            .iter()
            .chain(&self.tag_mirrors)
            .flat_map(|r| r.mirrors.iter().map(|m| m.split('/').next().unwrap_or(m).to_owned()))
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Where a fetch of `host`/`repository` goes: by digest through the digest mirrors, by tag through the tag
    /// mirrors of the most specific matching source, then the source unless it says `NeverContactSource`.
    pub fn plan(&self, host: &str, repository: &str, by_digest: bool) -> Plan {
        let rules = if by_digest { &self.digest_mirrors } else { &self.tag_mirrors };
        let full = format!("{host}/{repository}");
        let best = rules.iter().filter(|r| scope_covers(&r.source, host, repository)).max_by_key(|r| r.source.len());
        let mut endpoints = Vec::new();
        let mut source_skipped = false;
        if let Some(rule) = best {
            let rest = &full[rule.source.len().min(full.len())..];
            for m in &rule.mirrors {
                endpoints.push(Endpoint { repository: format!("{m}{rest}"), mirror: true });
            }
            source_skipped = rule.never_contact_source;
        }
        if !source_skipped {
            endpoints.push(Endpoint { repository: full, mirror: false });
        }
        Plan { endpoints, source_skipped }
    }
}

/// An `allowedRegistriesForImport` entry against a registry host: the host (or `*.domain`) and the port must
/// match; an entry without a port matches only a host without one.
fn import_entry_covers(entry: &str, host: &str) -> bool {
    let (eh, ep) = split_port(entry);
    let (hh, hp) = split_port(host);
    let (eh, hh) = (eh.to_ascii_lowercase(), hh.to_ascii_lowercase());
    let host_ok = match eh.strip_prefix("*.") {
        Some(domain) => hh.ends_with(&format!(".{domain}")),
        None => eh == hh,
    };
    host_ok && ep == hp
}

/// Merges mirror entries by source, keeping each source's first appearance and its mirrors' first appearance.
fn merge(entries: Vec<ImageMirrors>) -> Vec<MirrorRule> {
    let mut out: Vec<MirrorRule> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for e in entries {
        let i = *index.entry(e.source.clone()).or_insert_with(|| {
            out.push(MirrorRule { source: e.source.clone(), mirrors: Vec::new(), never_contact_source: false });
            out.len() - 1
        });
        let rule = &mut out[i];
        for m in e.mirrors {
            if !rule.mirrors.contains(&m) {
                rule.mirrors.push(m);
            }
        }
        rule.never_contact_source |= e.mirror_source_policy == Some(MirrorSourcePolicy::NeverContactSource);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: Kind, name: &str, spec: serde_json::Value) -> (Kind, Object) {
        let mut o = Object { spec, ..Object::default() };
        o.metadata.name = name.into();
        (kind, o)
    }

    #[test]
    fn most_specific_source_wins_and_sets_merge() {
        let p = Policy::from_objects(&[
            obj(
                Kind::ImageDigestMirrorSet,
                "b",
                json!({"imageDigestMirrors": [
                {"source": "src.io", "mirrors": ["m2.io/src", "m1.io/all"]}]}),
            ),
            obj(
                Kind::ImageDigestMirrorSet,
                "a",
                json!({"imageDigestMirrors": [
                {"source": "src.io", "mirrors": ["m1.io/all"]},
                {"source": "src.io/team/app", "mirrors": ["m3.io/app"], "mirrorSourcePolicy": "NeverContactSource"}]}),
            ),
            obj(
                Kind::ImageContentSourcePolicy,
                "c",
                json!({"repositoryDigestMirrors": [
                {"source": "src.io", "mirrors": ["m4.io/icsp"]}]}),
            ),
            obj(
                Kind::ImageTagMirrorSet,
                "t",
                json!({"imageTagMirrors": [{"source": "src.io/team", "mirrors": ["t.io/x"]}]}),
            ),
        ]);
        let repos = |plan: Plan| plan.endpoints.into_iter().map(|e| e.repository).collect::<Vec<_>>();
        // Sets merge sorted by kind then name: a's m1 first, then b's m2, then the ICSP's.
        assert_eq!(
            repos(p.plan("src.io", "team/other", true)),
            ["m1.io/all/team/other", "m2.io/src/team/other", "m4.io/icsp/team/other", "src.io/team/other"]
        );
        let app = p.plan("src.io", "team/app", true);
        assert!(app.source_skipped);
        assert_eq!(repos(app), ["m3.io/app"], "the repository rule wins over the registry one, and never the source");
        assert_eq!(repos(p.plan("src.io", "team/app", false)), ["t.io/x/app", "src.io/team/app"]);
        assert_eq!(repos(p.plan("src.io", "teamx/app", false)), ["src.io/teamx/app"], "not a path prefix");
        assert_eq!(repos(p.plan("other.io", "a", true)), ["other.io/a"]);
    }

    #[test]
    fn sources_and_import_lists() {
        let p = Policy::from_objects(&[obj(
            Kind::Image,
            "cluster",
            json!({
            "allowedRegistriesForImport": [{"domainName": "*.example.com"}, {"domainName": "reg:5000", "insecure": true}],
            "registrySources": {"blockedRegistries": ["bad.io", "ok.io/private"], "insecureRegistries": ["plain.io/x"]},
            "additionalTrustedCA": {"data": {"reg..5000": "PEM"}}}),
        )]);
        assert!(p.check_import("a.example.com").is_ok() && p.check_import("reg:5000").is_ok());
        assert!(p.check_import("reg").is_err() && p.check_import("example.com").is_err());
        assert!(p.check_import("a.example.com:5000").is_err(), "the port must match");
        assert!(p.check_contact("bad.io", "x").unwrap_err().contains("\"bad.io\""));
        assert!(p.check_contact("ok.io", "private/app").is_err() && p.check_contact("ok.io", "public").is_ok());
        assert!(p.insecure("plain.io", "x/y") && !p.insecure("plain.io", "y") && p.insecure("reg:5000", "a"));
        assert_eq!(p.trusted_ca("REG:5000"), Some("PEM"));
        let allow = Policy::from_objects(&[obj(
            Kind::Image,
            "cluster",
            json!({
            "registrySources": {"allowedRegistries": ["good.io", "*.corp.io"]}}),
        )]);
        assert!(allow.check_contact("good.io", "a").is_ok() && allow.check_contact("x.corp.io", "a").is_ok());
        assert!(allow.check_contact("evil.io", "a").unwrap_err().contains("allowedRegistries"));
    }
}
