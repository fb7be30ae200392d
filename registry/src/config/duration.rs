//! Durations as users write them: `30s`, `15m`, `12h`, `7d`, `2w`, and sums like `1h30m` (and, for settings
//! given in seconds, a bare number: [`seconds_or_duration`]). Used by the configuration and the CLI's flags.

pub fn parse(s: &str) -> Result<chrono::Duration, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 30m, 12h, 7d or 1h30m");
    let mut total = chrono::Duration::zero();
    let mut digits = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: i64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let part = match c {
            's' => chrono::Duration::try_seconds(n),
            'm' => chrono::Duration::try_minutes(n),
            'h' => chrono::Duration::try_hours(n),
            'd' => chrono::Duration::try_days(n),
            'w' => chrono::Duration::try_weeks(n),
            _ => None,
        };
        total = total.checked_add(&part.ok_or_else(bad)?).ok_or_else(bad)?;
    }
    if !digits.is_empty() || total <= chrono::Duration::zero() {
        return Err(bad());
    }
    Ok(total)
}

/// A setting in seconds (`3600`) or as a duration (`1h`).
pub fn seconds_or_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return t.parse().map(std::time::Duration::from_secs).map_err(|e| format!("invalid duration {s:?}: {e}"));
    }
    parse(t)?.to_std().map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// A duration in the TOML file: seconds (a number) or a duration string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(untagged)]
pub enum FileDuration {
    Seconds(u64),
    Text(String),
}

impl FileDuration {
    pub fn resolve(&self) -> Result<std::time::Duration, String> {
        match self {
            FileDuration::Seconds(n) => Ok(std::time::Duration::from_secs(*n)),
            FileDuration::Text(t) => seconds_or_duration(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        assert_eq!(parse("30s"), Ok(chrono::Duration::seconds(30)));
        assert_eq!(parse("1h30m"), Ok(chrono::Duration::minutes(90)));
        assert_eq!(parse("7d"), Ok(chrono::Duration::days(7)));
        for bad in ["", "10", "h", "5x", "0s", "-5m"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds_or_duration("90"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(seconds_or_duration("24h"), Ok(std::time::Duration::from_secs(86_400)));
        assert!(seconds_or_duration("soon").is_err());
    }
}
