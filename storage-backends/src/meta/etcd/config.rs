//! [`EtcdConfig`]: how a registry reaches etcd (`[metadata.etcd]`, `TRIBUTARY_ETCD_*`), and the client options
//! made from it. Read by the registry's configuration; used by [`super::EtcdStore::connect`].

use std::path::PathBuf;

use serde::Deserialize;

/// How to reach etcd (`[metadata.etcd]` in the configuration file).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct EtcdConfig {
    /// `http://host:2379` or `https://…`, one per member.
    pub endpoints: Vec<String>,
    /// Every key lives under it (several registries may share one etcd).
    #[serde(default = "default_prefix")]
    pub prefix: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// PEM file of the CA that signed etcd's certificate (for `https://` endpoints).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Seconds a lease ([`MetadataStore::elect`]) outlives its holder's last keep-alive.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
}

fn default_prefix() -> String {
    "/tributary/".to_owned()
}

fn default_lease_ttl() -> u64 {
    5
}

impl EtcdConfig {
    /// The defaults for these endpoints.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: default_prefix(),
            username: None,
            password: None,
            ca_file: None,
            lease_ttl_secs: default_lease_ttl(),
        }
    }
}
