//! Pull secrets: a namespace's `kubernetes.io/dockerconfigjson` secrets, holding credentials for external
//! registries, and [`Registry::pull_credentials`], the one lookup import and pull-through use to find the
//! credentials for a registry host, the source's and its mirrors' (every pull secret of the namespace is tried, as
//! OpenShift's importer does).
//! Served by `http::secrets`; the secret's content is never logged.

use base64::Engine;
use chrono::{DateTime, Utc};
use names::Namespace;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage_backends::meta::encode;
use storage_backends::{keys, Expect, MetadataStoreExt, Txn};

use super::{Registry, RegistryError};
use std::collections::HashMap;

use crate::upstream::Credentials;

/// The type of a secret holding a `~/.docker/config.json`.
pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
/// The older type holding only the `auths` map (`~/.dockercfg`).
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// A secret's name: a DNS-1123 subdomain (lower case letters, digits, `-` and `.`, at most 253 characters).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);
names::string_newtype!(SecretName);

impl std::str::FromStr for SecretName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_subdomain("secret", s)?;
        Ok(SecretName(s.to_owned()))
    }
}

/// Whether `s` may name a Kubernetes object of `what` kind: a DNS-1123 subdomain (lower case letters, digits, `-`
/// and `.`, at most 253 characters, alphanumeric at both ends). Also for LimitRange names.
pub(crate) fn check_subdomain(what: &str, s: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let edges_ok =
        s.starts_with(|c: char| c.is_ascii_alphanumeric()) && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if s.is_empty() || s.len() > 253 || !s.chars().all(ok_char) || !edges_ok {
        return Err(format!(
            "{what} name {s:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character"
        ));
    }
    Ok(())
}

/// A stored pull secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullSecret {
    pub name: SecretName,
    pub namespace: Namespace,
    pub uid: String,
    pub created: DateTime<Utc>,
    /// [`DOCKER_CONFIG_JSON`] or [`DOCKER_CFG`].
    pub kind: String,
    /// The secret's one data item (`.dockerconfigjson` or `.dockercfg`), as given.
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secrets \"{0}\" not found")]
    NotFound(String),
    #[error("secrets \"{0}\" already exists")]
    AlreadyExists(String),
    #[error("Secret \"{name}\" is invalid: {message}")]
    Invalid { name: String, message: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
}

impl From<storage_backends::StoreError> for SecretError {
    fn from(e: storage_backends::StoreError) -> Self {
        SecretError::Registry(e.into())
    }
}

impl PullSecret {
    /// The secret in Kubernetes' shape (`v1` `Secret`, data base64-encoded).
    pub fn to_kube(&self, resource_version: u64) -> Value {
        let item = if self.kind == DOCKER_CFG { ".dockercfg" } else { ".dockerconfigjson" };
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {
                "name": self.name, "namespace": self.namespace, "uid": self.uid,
                "resourceVersion": resource_version.to_string(), "creationTimestamp": self.created,
            },
            "type": self.kind,
            "data": {item: base64::engine::general_purpose::STANDARD.encode(&self.content)},
        })
    }

    /// Reads a Kubernetes `Secret` as sent by a client (`data` base64, or `stringData` plain).
    pub fn from_kube(ns: &Namespace, doc: &Value) -> Result<PullSecret, SecretError> {
        let raw_name = doc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
        let invalid = |message: String| SecretError::Invalid { name: raw_name.to_owned(), message };
        let name: SecretName = raw_name.parse().map_err(invalid)?;
        if let Some(other) = doc.pointer("/metadata/namespace").and_then(Value::as_str) {
            if other != ns.as_str() {
                return Err(invalid(format!("metadata.namespace: {other} does not match the request's {ns}")));
            }
        }
        let kind = doc.get("type").and_then(Value::as_str).unwrap_or(DOCKER_CONFIG_JSON).to_owned();
        let item = match kind.as_str() {
            DOCKER_CONFIG_JSON => ".dockerconfigjson",
            DOCKER_CFG => ".dockercfg",
            other => {
                return Err(invalid(format!(
                    "type: only {DOCKER_CONFIG_JSON} and {DOCKER_CFG} secrets are kept here, not {other:?}"
                )))
            }
        };
        let content = if let Some(plain) = doc.pointer(&format!("/stringData/{}", item)).and_then(Value::as_str) {
            plain.to_owned()
        } else {
            let encoded = doc
                .get("data")
                .and_then(|d| d.get(item))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("data[{item}]: required")))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|e| invalid(format!("data[{item}]: not base64: {e}")))?;
            String::from_utf8(bytes).map_err(|_| invalid(format!("data[{item}]: not UTF-8")))?
        };
        let secret = PullSecret {
            name,
            namespace: ns.clone(),
            uid: uuid::Uuid::new_v4().to_string(),
            created: Utc::now(),
            kind,
            content,
        };
        secret.auths().map_err(|m| invalid(format!("data[{item}]: {m}")))?;
        Ok(secret)
    }

    /// The registry → credentials map the secret holds.
    fn auths(&self) -> Result<Vec<(String, Credentials)>, String> {
        let doc: Value = serde_json::from_str(&self.content).map_err(|e| format!("not JSON: {e}"))?;
        let auths = if self.kind == DOCKER_CFG { Some(&doc) } else { doc.get("auths") };
        let auths = auths.and_then(Value::as_object).ok_or("no \"auths\" object")?;
        let mut out = Vec::new();
        for (server, entry) in auths {
            let (mut username, mut password) = (
                entry.get("username").and_then(Value::as_str).unwrap_or("").to_owned(),
                entry.get("password").and_then(Value::as_str).unwrap_or("").to_owned(),
            );
            if let Some(auth) = entry.get("auth").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth)
                    .map_err(|e| format!("auths[{server}].auth: not base64: {e}"))?;
                let decoded = String::from_utf8(decoded).map_err(|_| format!("auths[{server}].auth: not UTF-8"))?;
                let (u, p) = decoded.split_once(':').ok_or(format!("auths[{server}].auth: not user:password"))?;
                (username, password) = (u.to_owned(), p.to_owned());
            }
            let credentials = if username.is_empty() && password.is_empty() {
                Credentials::Anonymous
            } else {
                Credentials::Basic { username, password }
            };
            out.push((registry_host(server), credentials));
        }
        Ok(out)
    }
}

/// The registry host a `.dockerconfigjson` key names: `https://index.docker.io/v1/` → `docker.io`.
pub fn registry_host(server: &str) -> String {
    let s = server.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_owned(),
        _ => host,
    }
}

impl Registry {
    /// Stores a new pull secret.
    pub async fn create_secret(&self, secret: PullSecret) -> Result<u64, SecretError> {
        let key = keys::secret(&secret.namespace, secret.name.as_str());
        let txn = Txn::new().expect(key.clone(), Expect::Absent).put(key, encode(&secret));
        match self.meta.commit(txn).await {
            Ok(rev) => Ok(rev),
            Err(storage_backends::StoreError::Conflict { .. }) => Err(SecretError::AlreadyExists(secret.name.into())),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn get_secret(&self, ns: &Namespace, name: &str) -> Result<(PullSecret, u64), SecretError> {
        self.meta
            .get_json::<PullSecret>(&keys::secret(ns, name))
            .await?
            .ok_or_else(|| SecretError::NotFound(name.into()))
    }

    pub async fn list_secrets(&self, ns: &Namespace) -> Result<Vec<(PullSecret, u64)>, SecretError> {
        Ok(self.meta.list_all_json::<PullSecret>(&keys::secrets_in(ns)).await?)
    }

    pub async fn delete_secret(&self, ns: &Namespace, name: &str) -> Result<(), SecretError> {
        let key = keys::secret(ns, name);
        let (_, version) = self.get_secret(ns, name).await?;
        self.meta.commit(Txn::new().expect(key.clone(), Expect::Version(version)).delete(key)).await?;
        Ok(())
    }

    /// Every registry host `ns`'s pull secrets name, with its credentials (secrets in name order; the first that
    /// names a host wins): for the source of an import and for its mirrors on other hosts.
    pub async fn pull_credentials(&self, ns: &Namespace) -> Result<HashMap<String, Credentials>, RegistryError> {
        let secrets = self.list_secrets(ns).await.map_err(|e| match e {
            SecretError::Registry(r) => r,
            other => RegistryError::Internal(other.to_string()),
        })?;
        let mut out = HashMap::new();
        for (secret, _) in secrets {
            let Ok(auths) = secret.auths() else { continue };
            for (host, c) in auths {
                out.entry(host).or_insert(c);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(content: &str) -> Value {
        let b64 = base64::engine::general_purpose::STANDARD.encode(content);
        serde_json::json!({"metadata": {"name": "upstream"}, "type": DOCKER_CONFIG_JSON, "data": {".dockerconfigjson": b64}})
    }

    #[test]
    fn secrets_parse_and_match_hosts() {
        let ns: Namespace = "team".parse().unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("bob:s3cret");
        let content = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"localhost:5000":{{"username":"u","password":"p"}}}}}}"#
        );
        let s = PullSecret::from_kube(&ns, &secret(&content)).unwrap();
        let auths = s.auths().unwrap();
        assert!(auths
            .contains(&("docker.io".into(), Credentials::Basic { username: "bob".into(), password: "s3cret".into() })));
        assert!(auths
            .contains(&("localhost:5000".into(), Credentials::Basic { username: "u".into(), password: "p".into() })));
        let kube = s.to_kube(7);
        assert_eq!(PullSecret::from_kube(&ns, &kube).unwrap().content, content, "round trip");
        for bad in ["not json", r#"{"auth":{}}"#, r#"{"auths":{"x":{"auth":"!!"}}}"#] {
            assert!(matches!(PullSecret::from_kube(&ns, &secret(bad)), Err(SecretError::Invalid { .. })), "{bad}");
        }
        let mut wrong = secret(&content);
        wrong["metadata"]["name"] = "Bad_Name".into();
        assert!(PullSecret::from_kube(&ns, &wrong).is_err());
        wrong = secret(&content);
        wrong["type"] = "Opaque".into();
        assert!(PullSecret::from_kube(&ns, &wrong).is_err());
    }

    #[test]
    fn hosts_normalise() {
        assert_eq!(registry_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(registry_host("http://Localhost:5000"), "localhost:5000");
        assert_eq!(registry_host("quay.io"), "quay.io");
    }
}
