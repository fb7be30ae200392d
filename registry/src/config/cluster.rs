//! The `[cluster]` table: what Tributary does for a Kubernetes cluster (see `crate::cluster`): serve the image
//! lookup admission webhook, run the image-change trigger controller, with which kubeconfig, and how Kubernetes
//! namespaces map to Tributary's. Read by [`super::Config::load`].

use std::path::PathBuf;

use serde::Deserialize;

use crate::cluster::lookup::NamespaceMap;

/// `[cluster]` as any layer may give it; every field optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClusterSettings {
    /// Serve the image lookup admission webhook at /admission/image-lookup (needs --tls-cert: the API server calls
    /// webhooks over https only) [default: false].
    #[arg(long = "admission", value_name = "BOOL", env = "TRIBUTARY_ADMISSION", num_args = 0..=1,
        default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Cluster")]
    pub admission: Option<bool>,
    /// Run the image-change trigger controller (objects annotated image.openshift.io/triggers) on the replica
    /// holding the lease `triggers` [default: false].
    #[arg(long = "image-triggers", value_name = "BOOL", env = "TRIBUTARY_IMAGE_TRIGGERS", num_args = 0..=1,
        default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new(), help_heading = "Cluster")]
    pub triggers: Option<bool>,
    /// The kubeconfig of the cluster whose objects the triggers update [default: in-cluster credentials, else
    /// $KUBECONFIG, else ~/.kube/config].
    #[arg(long = "kubeconfig", value_name = "FILE", env = "TRIBUTARY_KUBECONFIG", help_heading = "Cluster")]
    pub kubeconfig: Option<PathBuf>,
    /// A Kubernetes namespace whose streams live in another Tributary namespace: K8S=TRIBUTARY (repeatable;
    /// comma-separated in the environment) [default: the same name].
    #[arg(
        long = "namespace-map",
        value_name = "K8S=TRIBUTARY",
        env = "TRIBUTARY_NAMESPACE_MAP",
        value_delimiter = ',',
        help_heading = "Cluster"
    )]
    pub namespace_map: Option<Vec<String>>,
}

/// The effective `[cluster]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    pub admission: bool,
    pub triggers: bool,
    pub kubeconfig: Option<PathBuf>,
    pub namespaces: NamespaceMap,
}

impl ClusterConfig {
    /// Merges the layers (`over` wins field by field) and checks the mapping.
    pub fn resolve(over: ClusterSettings, file: ClusterSettings) -> anyhow::Result<ClusterConfig> {
        let pairs = over.namespace_map.or(file.namespace_map).unwrap_or_default();
        Ok(ClusterConfig {
            admission: over.admission.or(file.admission).unwrap_or(false),
            triggers: over.triggers.or(file.triggers).unwrap_or(false),
            kubeconfig: over.kubeconfig.or(file.kubeconfig),
            namespaces: NamespaceMap::parse_pairs(&pairs).map_err(|e| anyhow::anyhow!("cluster.{e}"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_flags() {
        let file: ClusterSettings =
            toml::from_str("admission = true\nkubeconfig = \"/k\"\nnamespace-map = [\"prod=team\"]").unwrap();
        let over = ClusterSettings { triggers: Some(true), ..Default::default() };
        let c = ClusterConfig::resolve(over, file).unwrap();
        assert!(c.admission && c.triggers);
        assert_eq!(c.kubeconfig, Some("/k".into()));
        assert_eq!(c.namespaces.tributary("prod").unwrap().as_str(), "team");
        assert_eq!(ClusterConfig::resolve(Default::default(), Default::default()).unwrap(), ClusterConfig::default());
        let bad = ClusterSettings { namespace_map: Some(vec!["x=Not Valid".into()]), ..Default::default() };
        assert!(ClusterConfig::resolve(bad, Default::default()).is_err());
    }
}
