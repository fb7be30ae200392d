//! The `[prune]` table: whether the scheduled image pruner runs (off by default), how often, and its keep flags
//! (those of `adm prune images`; see `crate::gc::prune`). Read by [`super::Config::load`].

use std::time::Duration;

use serde::Deserialize;

use super::duration::FileDuration;

/// The default interval of the scheduled pruner (OpenShift's pruner CronJob runs daily).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// `[prune]` as it may appear in the TOML file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PruneSettings {
    /// Prune images in the background (on the replica holding the `prune` lease); default false.
    pub enabled: Option<bool>,
    /// Time between runs: seconds or a duration (default 24h).
    pub interval: Option<FileDuration>,
    /// Keep the newest N items of every tag's history (default 3).
    pub keep_tag_revisions: Option<usize>,
    /// Never prune anything younger than this (default 60m).
    pub keep_younger_than: Option<FileDuration>,
}

/// The effective scheduled-pruner settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneConfig {
    pub enabled: bool,
    pub interval: Duration,
    pub keep_tag_revisions: usize,
    pub keep_younger_than: Duration,
}

impl Default for PruneConfig {
    fn default() -> Self {
        PruneConfig {
            enabled: false,
            interval: DEFAULT_INTERVAL,
            keep_tag_revisions: crate::gc::prune::DEFAULT_KEEP_TAG_REVISIONS,
            keep_younger_than: crate::gc::prune::DEFAULT_KEEP_YOUNGER_THAN,
        }
    }
}

impl PruneSettings {
    /// The settings with defaults filled in; a zero interval is an error.
    pub fn resolve(self) -> anyhow::Result<PruneConfig> {
        let d = PruneConfig::default();
        let get = |name: &str, v: Option<FileDuration>, default: Duration| -> anyhow::Result<Duration> {
            v.map(|v| v.resolve().map_err(|e| anyhow::anyhow!("prune.{name}: {e}")))
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        let interval = get("interval", self.interval, d.interval)?;
        if interval.is_zero() {
            anyhow::bail!("prune.interval must be more than zero");
        }
        Ok(PruneConfig {
            enabled: self.enabled.unwrap_or(false),
            interval,
            keep_tag_revisions: self.keep_tag_revisions.unwrap_or(d.keep_tag_revisions),
            keep_younger_than: get("keep-younger-than", self.keep_younger_than, d.keep_younger_than)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_durations() {
        let c = PruneSettings::default().resolve().unwrap();
        assert_eq!(c, PruneConfig::default());
        assert!(!c.enabled);
        let s: PruneSettings =
            toml::from_str("enabled = true\ninterval = \"6h\"\nkeep-tag-revisions = 5\nkeep-younger-than = \"2h\"")
                .unwrap();
        let c = s.resolve().unwrap();
        assert_eq!(
            (c.enabled, c.interval.as_secs(), c.keep_tag_revisions, c.keep_younger_than.as_secs()),
            (true, 21600, 5, 7200)
        );
        assert!(toml::from_str::<PruneSettings>("interval = 0").unwrap().resolve().is_err());
        assert!(toml::from_str::<PruneSettings>("keep = 1").is_err());
    }
}
