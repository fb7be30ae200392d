//! A `kube` client for the cluster Tributary serves: from a kubeconfig file when one is named, else inferred
//! (in-cluster service account credentials, then `$KUBECONFIG`, then `~/.kube/config`). Used by the trigger
//! controller and the `set triggers` / `set image-lookup deploy/NAME` verbs.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Connects (lazily: the first request reaches the API server) with `kubeconfig` or the inferred credentials.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    // Two rustls providers are linked in (ring, and aws-lc-rs through object_store): name the process's one, as
    // the upstream client does.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {}: {e}", path.display()))?
        }
        None => Config::infer().await.map_err(|e| anyhow::anyhow!("no cluster credentials: {e}"))?,
    };
    Client::try_from(config).map_err(|e| anyhow::anyhow!("Kubernetes client: {e}"))
}

/// The namespace a verb acts in when `-n` is not given: the kubeconfig context's, else `default`.
pub async fn default_namespace(kubeconfig: Option<&Path>) -> String {
    let config = match kubeconfig {
        Some(path) => match Kubeconfig::read_from(path) {
            Ok(kc) => Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.ok(),
            Err(_) => None,
        },
        None => Config::infer().await.ok(),
    };
    config.map(|c| c.default_namespace).unwrap_or_else(|| "default".into())
}
