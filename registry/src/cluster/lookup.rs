//! What the cluster features ask of Tributary's image streams, and the shapes of the Kubernetes objects they touch:
//! which Tributary namespace a Kubernetes namespace is ([`NamespaceMap`]), which kinds carry a pod spec and where
//! ([`PodKind`]), and what one stream offers ([`StreamFacts`]: its lookup policy and each tag's pull spec by
//! digest). Read by [`super::admission`] and [`super::triggers`]; reads the stores only through
//! [`streams::StreamService`].

use std::collections::{BTreeMap, BTreeSet};

use names::{Digest, Namespace, RepositoryName, StreamName};
use streams::{StreamError, StreamService};

/// Kubernetes namespace → Tributary namespace: the same name unless a mapping says otherwise (`[cluster]
/// namespace-map`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceMap(pub BTreeMap<String, Namespace>);

impl NamespaceMap {
    /// The Tributary namespace of Kubernetes namespace `k8s`; `None` when the name is not a valid one.
    pub fn tributary(&self, k8s: &str) -> Option<Namespace> {
        self.0.get(k8s).cloned().or_else(|| k8s.parse().ok())
    }

    /// The Kubernetes namespaces that map to Tributary namespace `ns` (the same name, unless mapped away, and
    /// every name mapped to it).
    pub fn kubernetes(&self, ns: &Namespace) -> BTreeSet<String> {
        let mut out: BTreeSet<String> =
            self.0.iter().filter(|(_, to)| *to == ns).map(|(from, _)| from.clone()).collect();
        if !self.0.contains_key(ns.as_str()) {
            out.insert(ns.to_string());
        }
        out
    }

    /// Parses `k8s=tributary` pairs (the flag's and the variable's form).
    pub fn parse_pairs(pairs: &[String]) -> anyhow::Result<NamespaceMap> {
        let mut map = BTreeMap::new();
        for pair in pairs.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
            let (from, to) =
                pair.split_once('=').ok_or_else(|| anyhow::anyhow!("namespace mapping {pair:?}: not K8S=TRIBUTARY"))?;
            let to: Namespace = to.trim().parse().map_err(|e| anyhow::anyhow!("namespace mapping {pair:?}: {e}"))?;
            map.insert(from.trim().to_owned(), to);
        }
        Ok(NamespaceMap(map))
    }
}

/// The annotation that turns image lookup on for one resource (`oc set image-lookup deploy/NAME`).
pub const RESOLVE_NAMES_ANNOTATION: &str = "alpha.image.policy.openshift.io/resolve-names";

/// A kind whose objects hold a pod spec, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodKind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    /// The pod spec's field path (`spec` for a Pod).
    pub pod_spec: &'static str,
    /// Short names the CLI accepts (`deploy`, `sts`, …).
    pub aliases: &'static [&'static str],
}

/// Pods and the workloads with a pod template: what image lookup and triggers act on.
pub const POD_KINDS: &[PodKind] = &[
    PodKind { group: "", version: "v1", kind: "Pod", plural: "pods", pod_spec: "spec", aliases: &["pod", "po"] },
    PodKind {
        group: "",
        version: "v1",
        kind: "ReplicationController",
        plural: "replicationcontrollers",
        pod_spec: "spec.template.spec",
        aliases: &["replicationcontroller", "rc"],
    },
    PodKind {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        pod_spec: "spec.template.spec",
        aliases: &["deployment", "deploy"],
    },
    PodKind {
        group: "apps",
        version: "v1",
        kind: "StatefulSet",
        plural: "statefulsets",
        pod_spec: "spec.template.spec",
        aliases: &["statefulset", "sts"],
    },
    PodKind {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        pod_spec: "spec.template.spec",
        aliases: &["daemonset", "ds"],
    },
    PodKind {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        pod_spec: "spec.template.spec",
        aliases: &["replicaset", "rs"],
    },
    PodKind {
        group: "batch",
        version: "v1",
        kind: "Job",
        plural: "jobs",
        pod_spec: "spec.template.spec",
        aliases: &["job"],
    },
    PodKind {
        group: "batch",
        version: "v1",
        kind: "CronJob",
        plural: "cronjobs",
        pod_spec: "spec.jobTemplate.spec.template.spec",
        aliases: &["cronjob", "cj"],
    },
];

impl PodKind {
    /// The kind of a group and kind (`apps`, `Deployment`).
    pub fn of(group: &str, kind: &str) -> Option<&'static PodKind> {
        POD_KINDS.iter().find(|k| k.group == group && k.kind == kind)
    }

    /// The kind a CLI word names: `deploy`, `deployments`, `deployment.apps`, …
    pub fn named(word: &str) -> Option<&'static PodKind> {
        let word = word.to_ascii_lowercase();
        let word = word.split('.').next().unwrap_or_default();
        POD_KINDS.iter().find(|k| k.plural == word || k.aliases.contains(&word))
    }

    /// The JSON Pointer of the pod spec (`/spec/template/spec`).
    pub fn pod_spec_pointer(&self) -> String {
        self.pod_spec.split('.').map(|f| format!("/{f}")).collect()
    }

    /// The JSON Pointer of the pod template's metadata, for kinds with a template.
    pub fn template_metadata_pointer(&self) -> Option<String> {
        let spec = self.pod_spec_pointer();
        spec.strip_suffix("/spec").filter(|_| self.kind != "Pod").map(|t| format!("{t}/metadata"))
    }

    /// The `apiVersion` of the kind (`apps/v1`, `v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// What one stream offers the cluster features.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamFacts {
    /// `spec.lookupPolicy.local`.
    pub lookup_local: bool,
    /// Each tag that points at an image now, with its pull spec by digest (`<public-host>/<ns>/<name>@sha256:…`).
    pub tags: BTreeMap<String, String>,
    /// Every image in the stream's tag histories, with its pull spec.
    pub images: BTreeMap<Digest, String>,
}

impl StreamFacts {
    /// Reads stream `repo`; `None` when it does not exist.
    pub async fn read(streams: &StreamService, repo: &RepositoryName) -> Result<Option<StreamFacts>, StreamError> {
        let Some(stream) = streams.get_stream(repo).await? else { return Ok(None) };
        let mut facts = StreamFacts { lookup_local: stream.spec.lookup_policy.local, ..StreamFacts::default() };
        for history in &stream.status.tags {
            for (i, item) in history.items.iter().enumerate() {
                let Some(digest) = &item.image else { continue };
                let spec = streams.image_reference(repo, digest);
                if i == 0 {
                    facts.tags.insert(history.tag.clone(), spec.clone());
                }
                facts.images.insert(digest.clone(), spec);
            }
        }
        Ok(Some(facts))
    }
}

/// `<ns>/<name>` of a stream, when both are valid names.
pub fn repository(ns: &Namespace, stream: &str) -> Option<RepositoryName> {
    let stream: StreamName = stream.parse().ok()?;
    format!("{ns}/{stream}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_map_by_name_unless_configured() {
        let map = NamespaceMap::parse_pairs(&["prod=team-a".into(), " staging = team-a ".into()]).unwrap();
        assert_eq!(map.tributary("prod").unwrap().as_str(), "team-a");
        assert_eq!(map.tributary("other").unwrap().as_str(), "other");
        assert_eq!(map.tributary("Not_Valid"), None);
        let team: Namespace = "team-a".parse().unwrap();
        assert_eq!(map.kubernetes(&team), ["prod", "staging", "team-a"].map(String::from).into());
        let prod: Namespace = "prod".parse().unwrap();
        assert!(map.kubernetes(&prod).is_empty(), "prod is mapped away");
        assert!(NamespaceMap::parse_pairs(&["nopair".into()]).is_err());
    }

    #[test]
    fn kinds_and_their_pod_specs() {
        let d = PodKind::named("deploy").unwrap();
        assert_eq!((d.kind, d.api_version().as_str()), ("Deployment", "apps/v1"));
        assert_eq!(d.pod_spec_pointer(), "/spec/template/spec");
        assert_eq!(d.template_metadata_pointer().as_deref(), Some("/spec/template/metadata"));
        let cj = PodKind::named("cronjobs.batch").unwrap();
        assert_eq!(cj.template_metadata_pointer().as_deref(), Some("/spec/jobTemplate/spec/template/metadata"));
        let pod = PodKind::of("", "Pod").unwrap();
        assert_eq!((pod.pod_spec_pointer().as_str(), pod.template_metadata_pointer()), ("/spec", None));
        assert!(PodKind::named("service").is_none());
    }
}
