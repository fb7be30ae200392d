//! The `[gc]` table: whether the background garbage collector runs, how often, and the grace period before
//! unreferenced content goes (see `crate::gc`). Read by [`super::Config::load`].

use std::time::Duration;

use serde::Deserialize;

use super::duration::FileDuration;

/// `[gc]` as it may appear in the TOML file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GcSettings {
    /// Run sweeps in the background (on the replica holding the `gc` lease); default true.
    pub enabled: Option<bool>,
    /// Time between sweeps: seconds or a duration (default 1h).
    pub interval: Option<FileDuration>,
    /// How long content must have been unreferenced before a sweep deletes it (default 1h).
    pub grace: Option<FileDuration>,
}

/// The effective garbage-collection settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcConfig {
    pub enabled: bool,
    pub interval: Duration,
    pub grace: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { enabled: true, interval: crate::gc::DEFAULT_INTERVAL, grace: crate::gc::DEFAULT_GRACE }
    }
}

impl GcSettings {
    /// The settings with defaults filled in; a zero interval is an error.
    pub fn resolve(self) -> anyhow::Result<GcConfig> {
        let d = GcConfig::default();
        let get = |name: &str, v: Option<FileDuration>, default: Duration| -> anyhow::Result<Duration> {
            v.map(|v| v.resolve().map_err(|e| anyhow::anyhow!("gc.{name}: {e}")))
                .transpose()
                .map(|v| v.unwrap_or(default))
        };
        let interval = get("interval", self.interval, d.interval)?;
        if interval.is_zero() {
            anyhow::bail!("gc.interval must be more than zero");
        }
        Ok(GcConfig { enabled: self.enabled.unwrap_or(true), interval, grace: get("grace", self.grace, d.grace)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_durations() {
        assert_eq!(GcSettings::default().resolve().unwrap(), GcConfig::default());
        let s: GcSettings = toml::from_str("enabled = false\ninterval = \"10m\"\ngrace = 30").unwrap();
        let c = s.resolve().unwrap();
        assert_eq!((c.enabled, c.interval.as_secs(), c.grace.as_secs()), (false, 600, 30));
        let zero: GcSettings = toml::from_str("interval = 0").unwrap();
        assert!(zero.resolve().is_err());
        assert!(toml::from_str::<GcSettings>("every = 1").is_err());
    }
}
