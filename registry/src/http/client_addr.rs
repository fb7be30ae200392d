//! The client address of a request: the one function ([`client_addr`]) the request log, the audit log and the rate
//! limiter all use. It is the TCP peer, unless the peer is a configured trusted proxy ([`TrustedProxies`], from
//! `[limits] trusted-proxies`): then the `Forwarded: for=` (or, without it, `X-Forwarded-For`) chain is walked from
//! the right, past every trusted hop, to the first address no trusted proxy vouches for. A header from any other
//! peer is ignored, so a client cannot choose its own address. Computed once per request and kept in its
//! extensions. The request log writes it with the peer's port; the audit log and the rate limit use the address.

use std::net::{IpAddr, SocketAddr};

use actix_web::http::header::HeaderMap;
use actix_web::{web, HttpMessage, HttpRequest};

/// The proxies allowed to name the client; registered as app data by [`super::serve_with`].
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<ipnet::IpNet>);

/// A request's client: its address, and its TCP port when the client is the peer itself (a proxy names no port
/// worth believing). Displayed as `ip:port` or `ip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.port {
            Some(port) => SocketAddr::new(self.ip, port).fmt(f),
            None => self.ip.fmt(f),
        }
    }
}

/// [`client_addr`]'s answer, kept in the request's extensions.
#[derive(Debug, Clone, Copy)]
struct Resolved(Option<ClientAddr>);

impl TrustedProxies {
    pub fn new(nets: Vec<ipnet::IpNet>) -> TrustedProxies {
        TrustedProxies(nets)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client behind `peer`, as the forwarding headers tell when `peer` is trusted.
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = canonical(peer);
        if self.0.is_empty() || !self.trusts(client) {
            return client;
        }
        for hop in forwarded_chain(headers).iter().rev() {
            if !self.trusts(client) {
                break;
            }
            match parse_node(hop) {
                Some(ip) => client = canonical(ip),
                // `unknown`, an obfuscated name or garbage: the last trusted hop is as far as we can tell.
                None => break,
            }
        }
        client
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket reports) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        IpAddr::V4(_) => ip,
    }
}

/// The addresses the proxies reported, leftmost (the original client) first: the `for=` of every `Forwarded`
/// element, or, when no `Forwarded` header is present, the entries of `X-Forwarded-For`.
fn forwarded_chain(headers: &HeaderMap) -> Vec<String> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(str::to_owned).collect()
    };
    let forwarded = values("forwarded");
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then(|| v.trim().to_owned())
                })
            })
            .collect();
    }
    values("x-forwarded-for")
}

/// One node: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `"[2001:db8::1]:4711"` (quotes optional).
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = node.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    let inner = node.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok()
}

/// The client address of `req` (see the module documentation); `None` only when actix knows no peer (a test
/// request without a socket).
pub fn client_addr(req: &HttpRequest) -> Option<ClientAddr> {
    if let Some(known) = req.extensions().get::<Resolved>() {
        return known.0;
    }
    let resolved = req.peer_addr().map(|peer| {
        let peer_ip = canonical(peer.ip());
        let ip = match req.app_data::<web::Data<TrustedProxies>>() {
            Some(proxies) => proxies.resolve(peer_ip, req.headers()),
            None => peer_ip,
        };
        ClientAddr { ip, port: (ip == peer_ip).then_some(peer.port()) }
    });
    req.extensions_mut().insert(Resolved(resolved));
    resolved
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_trusted_peers_name_the_client() {
        let proxies = TrustedProxies::new(vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let table: &[(&str, Headers, &str)] = &[
            // An untrusted peer's headers are ignored.
            ("203.0.113.9", &[("x-forwarded-for", "1.2.3.4")], "203.0.113.9"),
            ("203.0.113.9", &[("forwarded", "for=1.2.3.4")], "203.0.113.9"),
            // A trusted peer names the client; trusted hops on the right are skipped, a spoofed left part is not
            // believed past the first untrusted hop.
            ("10.0.0.1", &[("x-forwarded-for", "1.2.3.4")], "1.2.3.4"),
            ("10.0.0.1", &[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2")], "1.2.3.4"),
            ("10.0.0.1", &[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "1.2.3.4")], "1.2.3.4"),
            ("::ffff:10.0.0.1", &[("x-forwarded-for", "1.2.3.4:5555")], "1.2.3.4"),
            // Forwarded wins over X-Forwarded-For; ports, quotes and brackets.
            (
                "10.0.0.1",
                &[("forwarded", "for=\"[2001:db9::7]:4711\";proto=https"), ("x-forwarded-for", "9.9.9.9")],
                "2001:db9::7",
            ),
            ("10.0.0.1", &[("forwarded", "for=5.6.7.8, for=10.0.0.3;by=10.0.0.1")], "5.6.7.8"),
            // Nothing forwarded, or nothing usable: the last trusted hop.
            ("10.0.0.1", &[], "10.0.0.1"),
            ("10.0.0.1", &[("forwarded", "for=unknown")], "10.0.0.1"),
            ("10.0.0.1", &[("x-forwarded-for", "garbage, 10.0.0.5")], "10.0.0.5"),
        ];
        for (peer, hs, want) in table {
            assert_eq!(proxies.resolve(ip(peer), &headers(hs)), ip(want), "{peer} {hs:?}");
        }
        assert_eq!(
            TrustedProxies::default().resolve(ip("10.0.0.1"), &headers(&[("x-forwarded-for", "1.2.3.4")])),
            ip("10.0.0.1")
        );
        assert_eq!(ClientAddr { ip: ip("10.0.0.1"), port: Some(80) }.to_string(), "10.0.0.1:80");
        assert_eq!(ClientAddr { ip: ip("2001:db8::1"), port: Some(80) }.to_string(), "[2001:db8::1]:80");
        assert_eq!(ClientAddr { ip: ip("10.0.0.1"), port: None }.to_string(), "10.0.0.1");
    }
}
