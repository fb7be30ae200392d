//! The access-control step of `tributary serve`: makes the signing key, the cluster administrator and its token,
//! and prints a generated token once (on stdout, before the `listening` line).

use auth::Bootstrap;
use registry::config::Config;
use registry::service::Registry;

pub async fn bootstrap(registry: &Registry, config: &Config) -> anyhow::Result<()> {
    let token = config.admin_token.as_ref().map(|s| s.expose());
    let save_in = config.storage.uses_data_dir().then_some(config.data_dir.as_path());
    match registry.auth.bootstrap(token, save_in).await? {
        Bootstrap::Generated { token, path: Some(path) } => {
            println!("generated the cluster administrator token (user admin), saved in {}:", path.display());
            println!("{token}");
        }
        Bootstrap::Generated { token, path: None } => {
            println!("generated the cluster administrator token (user admin); it is shown only now:");
            println!("{token}");
        }
        Bootstrap::Disabled => tracing::warn!("access control is off (auth = none): everyone may do everything"),
        Bootstrap::Configured | Bootstrap::Existing => {}
    }
    // The image policy object `cluster`, first seeded from allowedRegistriesForImport of the configuration.
    if let Some(store) = registry.policy.store() {
        store.seed().await?;
    }
    Ok(())
}
