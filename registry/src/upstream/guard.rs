//! What outbound requests (import and pull-through) may reach: the address rules, checked where reqwest connects
//! (a [`reqwest::dns::Resolve`] that drops refused addresses, so DNS rebinding between a check and the connection
//! cannot slip through), on IP-literal URLs before a request is sent, and on every redirect (a
//! [`reqwest::redirect::Policy`] that also applies `allowedRegistriesForImport`). Only `upstream::http` builds
//! clients with these; nothing here sends a request.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The operator's outbound settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// Hosts (names or addresses, no port) exempt from the address rules: a registry an administrator means to
    /// reach on a link-local or (with `deny_private`) private address (`outbound-allow-hosts`).
    pub allow_hosts: Vec<String>,
    /// Also refuse loopback and private addresses (`outbound-deny-private`, off by default: a registry and its
    /// mirror on one host is a common setup).
    pub deny_private: bool,
    /// Longest wait for a TCP (and TLS) connection to an upstream.
    pub connect_timeout: Duration,
    /// Longest silence while reading an upstream's answer (between two reads), and the bound on a whole
    /// non-streamed answer (manifest, token, tag list, error body) is four times it.
    pub read_timeout: Duration,
}

pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Outbound {
    fn default() -> Self {
        Outbound {
            allow_hosts: Vec::new(),
            deny_private: false,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            read_timeout: DEFAULT_READ_TIMEOUT,
        }
    }
}

/// An outbound request refused by the rules; its text is what the user reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Why `ip` may not be reached, if it may not. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as IPv4.
pub fn refusal(ip: IpAddr, deny_private: bool) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => refusal_v4(v4, deny_private),
        IpAddr::V6(v6) => refusal_v6(v6, deny_private),
    }
}

fn refusal_v4(ip: Ipv4Addr, deny_private: bool) -> Option<&'static str> {
    if ip.is_link_local() {
        return Some("a link-local address (169.254.0.0/16, where cloud metadata services answer)");
    }
    if ip.octets()[0] == 0 {
        return Some("an unspecified address (0.0.0.0/8)");
    }
    if deny_private && ip.is_loopback() {
        return Some("a loopback address (127.0.0.0/8), refused with outbound-deny-private");
    }
    if deny_private && ip.is_private() {
        return Some("a private address (10/8, 172.16/12, 192.168/16), refused with outbound-deny-private");
    }
    None
}

fn refusal_v6(ip: Ipv6Addr, deny_private: bool) -> Option<&'static str> {
    let first = ip.segments()[0];
    if first & 0xffc0 == 0xfe80 {
        return Some("a link-local address (fe80::/10)");
    }
    if ip.is_unspecified() {
        return Some("an unspecified address (::)");
    }
    if deny_private && ip.is_loopback() {
        return Some("a loopback address (::1), refused with outbound-deny-private");
    }
    if deny_private && first & 0xfe00 == 0xfc00 {
        return Some("a unique local address (fc00::/7), refused with outbound-deny-private");
    }
    None
}

/// The address rules with the operator's exemptions, shared by the resolver, the redirect policy and the
/// pre-flight check of IP-literal URLs.
#[derive(Debug)]
pub struct Rules {
    allow_hosts: Vec<String>,
    deny_private: bool,
    /// `allowedRegistriesForImport` with the mirrors' hosts (empty: all), applied to redirect targets; set from
    /// the image policy in force before each fetch ([`Rules::set_allowed`]).
    allowed_registries: std::sync::RwLock<Vec<String>>,
}

impl Rules {
    pub fn new(outbound: &Outbound, allowed_registries: Vec<String>) -> Arc<Rules> {
        let allow_hosts = outbound.allow_hosts.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
        let allowed_registries = std::sync::RwLock::new(allowed_registries);
        Arc::new(Rules { allow_hosts, deny_private: outbound.deny_private, allowed_registries })
    }

    /// Replaces the registries redirects may lead to (empty: all).
    pub fn set_allowed(&self, allowed: Vec<String>) {
        *self.allowed_registries.write().unwrap_or_else(|e| e.into_inner()) = allowed;
    }

    fn exempt(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.allow_hosts.iter().any(|h| h.trim_start_matches('[').trim_end_matches(']') == host)
    }

    /// Whether `host` (`quay.io`, `localhost:5000`) is in `allowedRegistriesForImport`.
    pub fn registry_allowed(&self, host: &str) -> bool {
        let allowed = self.allowed_registries.read().unwrap_or_else(|e| e.into_inner());
        allowed.is_empty()
            || allowed.iter().any(|a| match a.strip_prefix("*.") {
                Some(domain) => host.ends_with(&format!(".{domain}")),
                None => a == host,
            })
    }

    /// Refuses a URL whose host is an address the rules refuse (names are checked when they are resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let ip = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(Host::Domain(_)) => return Ok(()),
            None => return Err(Refused(format!("{url} has no host"))),
        };
        match refusal(ip, self.deny_private) {
            Some(why) if !self.exempt(&ip.to_string()) => Err(Refused(format!(
                "refusing to reach {ip}: {why}; an administrator may allow this host with outbound-allow-hosts"
            ))),
            _ => Ok(()),
        }
    }

    /// Checks a redirect target: the address rules, `allowedRegistriesForImport`, and no https → http downgrade.
    pub fn check_redirect(&self, from: Option<&Url>, to: &Url) -> Result<(), Refused> {
        let host = match (to.host_str(), to.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => return Err(Refused(format!("redirect to {to}, which has no host"))),
        };
        let bare = to.host_str().unwrap_or_default();
        if !self.registry_allowed(&host) && !self.registry_allowed(bare) {
            return Err(Refused(format!(
                "an upstream redirected to {host}, which is not in allowedRegistriesForImport"
            )));
        }
        if from.is_some_and(|f| f.scheme() == "https") && to.scheme() != "https" {
            return Err(Refused(format!("an upstream redirected from https to {}", to.scheme())));
        }
        self.check_url(to).map_err(|Refused(m)| Refused(format!("an upstream redirect: {m}")))
    }

    /// The redirect policy: at most 10 hops, each checked by [`Rules::check_redirect`].
    pub fn redirect_policy(self: &Arc<Self>) -> reqwest::redirect::Policy {
        let rules = self.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 10 {
                return attempt.error(Refused("an upstream redirected more than 10 times".into()));
            }
            match rules.check_redirect(attempt.previous().last(), attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(refused) => attempt.error(refused),
            }
        })
    }
}

/// Resolves names with the system resolver and keeps only the addresses the rules allow (all of them for an
/// exempt host); a name left with none fails with the reason.
pub struct GuardedResolver(pub Arc<Rules>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if rules.exempt(&host) {
                return Ok(Box::new(found.into_iter()) as Addrs);
            }
            let mut refused = None;
            let kept: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match refusal(a.ip(), rules.deny_private) {
                    Some(why) => {
                        refused = Some((a.ip(), why));
                        false
                    }
                    None => true,
                })
                .collect();
            match (kept.is_empty(), refused) {
                (true, Some((ip, why))) => Err(Box::new(Refused(format!(
                    "refusing to reach {host} at {ip}: {why}; an administrator may allow this host with \
                     outbound-allow-hosts"
                ))) as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(kept.into_iter()) as Addrs),
            }
        })
    }
}

/// The [`Refused`] somewhere in an error's chain, if the rules caused it.
pub fn refused_in(e: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r.clone());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_rules() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for always in [
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "fe80::1",
            "febf::1",
            "::",
            "::ffff:169.254.169.254",
        ] {
            assert!(refusal(ip(always), false).is_some(), "{always}");
        }
        for strict in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "::1",
            "fc00::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(refusal(ip(strict), false).is_none(), "{strict} is allowed by default");
            assert!(refusal(ip(strict), true).is_some(), "{strict} is refused when strict");
        }
        for public in ["1.1.1.1", "172.32.0.1", "192.169.0.1", "2001:db8::1", "fec0::1", "::ffff:8.8.8.8"] {
            assert!(refusal(ip(public), true).is_none(), "{public}");
        }
    }

    #[test]
    fn urls_and_redirects() {
        let url = |s: &str| s.parse::<Url>().unwrap();
        let outbound = Outbound { allow_hosts: vec!["169.254.10.10".into()], ..Outbound::default() };
        let rules = Rules::new(&outbound, vec![]);
        assert!(rules.check_url(&url("http://169.254.169.254/latest")).is_err());
        assert!(rules.check_url(&url("http://[::ffff:169.254.169.254]/")).is_err());
        assert!(rules.check_url(&url("http://169.254.10.10:5000/v2/")).is_ok(), "allowed by the operator");
        assert!(rules.check_url(&url("http://127.0.0.1:5000/v2/")).is_ok());
        let strict = Rules::new(&Outbound { deny_private: true, ..Outbound::default() }, vec!["quay.io".into()]);
        assert!(strict.check_url(&url("http://127.0.0.1:5000/v2/")).is_err());
        assert!(strict.check_redirect(None, &url("https://quay.io/v2/x")).is_ok());
        assert!(strict.check_redirect(None, &url("https://evil.io/v2/x")).is_err());
        let from = url("https://quay.io/v2/");
        assert!(strict.check_redirect(Some(&from), &url("http://quay.io/v2/x")).is_err(), "downgrade");
    }
}
