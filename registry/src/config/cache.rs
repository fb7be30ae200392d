//! The `[cache]` table: the pull-through cache's size cap (off by default), its low-water mark and how often it is
//! checked (see `crate::gc::evict`). Read by [`super::Config::load`].

use std::time::Duration;

use serde::Deserialize;

use super::duration::FileDuration;

/// The default interval between checks of the cache's size.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// The default low-water mark, in percent of the cap.
pub const DEFAULT_LOW_WATER_PERCENT: u64 = 80;

/// `[cache]` as it may appear in the TOML file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CacheSettings {
    /// The cap on the bytes of blobs that are only pulled through, in MiB; absent: no cap (nothing is evicted).
    pub max_size_mb: Option<u64>,
    /// Eviction goes on until the cache is at most this percentage of the cap (default 80).
    pub low_water_percent: Option<u64>,
    /// Time between checks: seconds or a duration (default 1m).
    pub interval: Option<FileDuration>,
}

/// The effective cache settings; `None` when no cap is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub max_bytes: u64,
    pub low_water_bytes: u64,
    pub interval: Duration,
}

impl CacheSettings {
    /// The settings with defaults filled in; a zero interval or a low-water mark over 100% is an error.
    pub fn resolve(self) -> anyhow::Result<Option<CacheConfig>> {
        let Some(mb) = self.max_size_mb else {
            if self.low_water_percent.is_some() || self.interval.is_some() {
                anyhow::bail!("cache: low-water-percent and interval need max-size-mb");
            }
            return Ok(None);
        };
        let percent = self.low_water_percent.unwrap_or(DEFAULT_LOW_WATER_PERCENT);
        if percent > 100 {
            anyhow::bail!("cache.low-water-percent must be at most 100, not {percent}");
        }
        let interval = match self.interval {
            Some(v) => v.resolve().map_err(|e| anyhow::anyhow!("cache.interval: {e}"))?,
            None => DEFAULT_INTERVAL,
        };
        if interval.is_zero() {
            anyhow::bail!("cache.interval must be more than zero");
        }
        let max_bytes = mb.saturating_mul(1 << 20);
        Ok(Some(CacheConfig { max_bytes, low_water_bytes: max_bytes / 100 * percent, interval }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_resolved() {
        assert_eq!(CacheSettings::default().resolve().unwrap(), None);
        let s: CacheSettings = toml::from_str("max-size-mb = 100\nlow-water-percent = 50\ninterval = \"5m\"").unwrap();
        let c = s.resolve().unwrap().unwrap();
        assert_eq!((c.max_bytes, c.low_water_bytes, c.interval.as_secs()), (100 << 20, 50 << 20, 300));
        let s: CacheSettings = toml::from_str("max-size-mb = 10").unwrap();
        assert_eq!(s.resolve().unwrap().unwrap().low_water_bytes, (10 << 20) / 100 * 80);
        for bad in
            ["low-water-percent = 50", "max-size-mb = 1\nlow-water-percent = 101", "max-size-mb = 1\ninterval = 0"]
        {
            let s: CacheSettings = toml::from_str(bad).unwrap();
            assert!(s.resolve().is_err(), "{bad}");
        }
        assert!(toml::from_str::<CacheSettings>("max-size = 1").is_err());
    }
}
