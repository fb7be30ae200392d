//! `containers-registries.conf(5)` (version 2) from the image policy, as OpenShift's machine config operator
//! writes it on nodes: one `[[registry]]` per mirrored source (digest mirrors `pull-from-mirror = "digest-only"`,
//! tag mirrors `"tag-only"`, `blocked = true` for `NeverContactSource`), blocked and insecure registries from
//! `registrySources`, and `unqualified-search-registries`. Serialised with the `toml` crate. Called by
//! `tributary adm registries-conf` (through the API's objects) and by tests.

use std::collections::BTreeMap;

use serde::Serialize;

use super::rules::Policy;

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unqualified_search_registries: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    registry: Vec<Registry>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Registry {
    prefix: String,
    location: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    insecure: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    blocked: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    mirror: Vec<Mirror>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
struct Mirror {
    location: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    insecure: bool,
    pull_from_mirror: &'static str,
}

/// Whether `scope` (`host` or `host/repository`) is insecure by the policy.
fn insecure(policy: &Policy, scope: &str) -> bool {
    let (host, repository) = scope.split_once('/').unwrap_or((scope, ""));
    policy.insecure(host, repository)
}

/// The registries.conf text for `policy`.
pub fn render(policy: &Policy) -> String {
    let sources = policy.image.registry_sources.clone().unwrap_or_default();
    let mut by_location: BTreeMap<String, Registry> = BTreeMap::new();
    fn entry<'a>(map: &'a mut BTreeMap<String, Registry>, policy: &Policy, location: &str) -> &'a mut Registry {
        map.entry(location.to_owned()).or_insert_with(|| Registry {
            prefix: String::new(),
            location: location.to_owned(),
            insecure: insecure(policy, location),
            ..Registry::default()
        })
    }
    for (rules, pull) in [(&policy.digest_mirrors, "digest-only"), (&policy.tag_mirrors, "tag-only")] {
        for rule in rules {
            let r = entry(&mut by_location, policy, &rule.source);
            r.blocked |= rule.never_contact_source;
            for m in &rule.mirrors {
                r.mirror.push(Mirror { location: m.clone(), insecure: insecure(policy, m), pull_from_mirror: pull });
            }
        }
    }
    for b in &sources.blocked_registries {
        entry(&mut by_location, policy, b).blocked = true;
    }
    for i in &sources.insecure_registries {
        entry(&mut by_location, policy, i).insecure = true;
    }
    let file = File {
        unqualified_search_registries: sources.container_runtime_search_registries.clone(),
        registry: by_location.into_values().collect(),
    };
    let body = toml::to_string_pretty(&file).unwrap_or_default();
    format!(
        "# Written by tributary adm registries-conf from the image policy; see containers-registries.conf(5).\n{body}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imagepolicy::model::{Kind, Object};
    use serde_json::json;

    #[test]
    fn renders_mirrors_blocks_and_insecure() {
        let o = |kind, name: &str, spec| {
            let mut o = Object { spec, ..Object::default() };
            o.metadata.name = name.into();
            (kind, o)
        };
        let policy = Policy::from_objects(&[
            o(
                Kind::Image,
                "cluster",
                json!({"registrySources": {"blockedRegistries": ["bad.io"],
                "insecureRegistries": ["m1.io"], "containerRuntimeSearchRegistries": ["quay.io"]}}),
            ),
            o(
                Kind::ImageDigestMirrorSet,
                "d",
                json!({"imageDigestMirrors": [{"source": "src.io/app",
                "mirrors": ["m1.io/app", "m2.io/app"], "mirrorSourcePolicy": "NeverContactSource"}]}),
            ),
            o(
                Kind::ImageTagMirrorSet,
                "t",
                json!({"imageTagMirrors": [{"source": "src.io/app", "mirrors": ["m3.io/app"]}]}),
            ),
        ]);
        let text = render(&policy);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["unqualified-search-registries"][0].as_str(), Some("quay.io"));
        let regs = v["registry"].as_array().unwrap();
        let src = regs.iter().find(|r| r["location"].as_str() == Some("src.io/app")).unwrap();
        assert_eq!(src["blocked"].as_bool(), Some(true));
        let mirrors: Vec<(&str, &str)> = src["mirror"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (m["location"].as_str().unwrap(), m["pull-from-mirror"].as_str().unwrap()))
            .collect();
        assert_eq!(mirrors, [("m1.io/app", "digest-only"), ("m2.io/app", "digest-only"), ("m3.io/app", "tag-only")]);
        assert_eq!(src["mirror"][0]["insecure"].as_bool(), Some(true));
        let bad = regs.iter().find(|r| r["location"].as_str() == Some("bad.io")).unwrap();
        assert_eq!(bad["blocked"].as_bool(), Some(true));
    }
}
