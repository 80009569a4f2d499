//! The client's address behind reverse proxies: `Forwarded` / `X-Forwarded-For` are believed only
//! when the connection comes from a proxy listed in `limits.trusted_proxies`, and then the client
//! is the nearest address in the chain that is not a trusted proxy (a client cannot push its own
//! entry past the proxies, which append what they saw).

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

use actix_web::http::header::{self, HeaderMap};
use ipnet::IpNet;

/// The peers whose forwarded headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Parses `limits.trusted_proxies`: CIDR blocks (`10.0.0.0/8`, `fd00::/8`) or single
    /// addresses. On error, the entry at fault.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let nets = entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is not an address or a CIDR block"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    /// Every peer is trusted: the old `tracking.trust_forwarded_for = true`.
    pub fn everyone() -> Self {
        Self {
            nets: vec![
                IpNet::V4(ipnet::Ipv4Net::default()),
                IpNet::V6(ipnet::Ipv6Net::default()),
            ],
        }
    }

    /// `limits.trusted_proxies`, widened to every peer when `trust_forwarded_for` is set.
    pub fn from_settings<S: AsRef<str>>(
        entries: &[S],
        trust_forwarded_for: bool,
    ) -> Result<Self, String> {
        if trust_forwarded_for {
            Ok(Self::everyone())
        } else {
            Self::parse(entries)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the peer itself, unless the peer is a trusted proxy and the
    /// request says whom it forwards for. No allocation; a request without forwarded headers
    /// (or from an untrusted peer) costs one comparison per listed block at most.
    pub fn client_ip(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer.map(canonical);
        if self.nets.is_empty() || !peer.is_some_and(|p| self.trusts(p)) {
            return peer;
        }
        // Proxies append: the last entry is the nearest hop. Walk back to the first address
        // that is not one of ours.
        let mut walk = Walk::default();
        for value in headers
            .get_all(header::FORWARDED)
            .rev()
            .filter_map(|v| v.to_str().ok())
        {
            for element in value.rsplit(',') {
                if let Some(ip) = element
                    .split(';')
                    .filter_map(|pair| pair.trim().split_once('='))
                    .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                    .and_then(|(_, v)| parse_address(v.trim().trim_matches('"')))
                {
                    walk.step(self, ip);
                }
            }
        }
        // `Forwarded` when it names anyone (a proxy may send it empty), else `X-Forwarded-For`.
        if walk.farthest.is_none() {
            for value in headers
                .get_all("x-forwarded-for")
                .rev()
                .filter_map(|v| v.to_str().ok())
            {
                for element in value.rsplit(',') {
                    if let Some(ip) = parse_address(element) {
                        walk.step(self, ip);
                    }
                }
            }
        }
        walk.client.or(walk.farthest).or(peer)
    }
}

/// A walk along a forwarding chain from the nearest hop outwards.
#[derive(Default)]
struct Walk {
    /// The first address that is not a trusted proxy.
    client: Option<IpAddr>,
    /// The last address seen before `client` was found.
    farthest: Option<IpAddr>,
}

impl Walk {
    fn step(&mut self, proxies: &TrustedProxies, ip: IpAddr) {
        if self.client.is_none() {
            let ip = canonical(ip);
            self.farthest = Some(ip);
            if !proxies.trusts(ip) {
                self.client = Some(ip);
            }
        }
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// A client address as a text: an IP, `IP:port`, or `[IPv6]:port`.
pub fn parse_address(raw: &str) -> Option<IpAddr> {
    let raw = raw.trim();
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            raw.strip_prefix('[')
                .and_then(|r| r.split_once(']'))
                .and_then(|(ip, _)| ip.parse().ok())
        })
}

/// The block one subscriber usually holds: the address itself for IPv4, its /64 for IPv6 (a
/// client given a /64 can use any of its 2^64 addresses).
pub fn subscriber_block(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(segments.into())
        }
        v4 => v4,
    }
}

/// An address as IPv6's 16 bytes (IPv4 mapped), for a hasher to take in one write.
pub fn octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The key a per-address limit counts a subscriber under: a salted hash of its block
/// ([`subscriber_block`]), its 16 bytes in one write (hashing an `IpAddr` as a value is several
/// small writes, each paying SipHash's overhead).
pub fn block_key(salt: &impl BuildHasher, ip: IpAddr) -> u64 {
    let mut hasher = salt.build_hasher();
    hasher.write(&octets(subscriber_block(ip)));
    hasher.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_peers() {
        let proxies = TrustedProxies::parse(&["10.0.0.0/8", "fd00::/8", "192.0.2.1"]).unwrap();
        let spoofed = headers(&[("x-forwarded-for", "203.0.113.9")]);
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(
            proxies.client_ip(Some(ip("198.51.100.1")), &spoofed),
            Some(ip("198.51.100.1"))
        );
        assert_eq!(
            proxies.client_ip(Some(ip("10.1.2.3")), &spoofed),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            proxies.client_ip(Some(ip("::ffff:192.0.2.1")), &spoofed),
            Some(ip("203.0.113.9"))
        );
        // A client prepending a forged entry gets the address the proxy saw.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.0.0.5")]);
        assert_eq!(
            proxies.client_ip(Some(ip("10.1.2.3")), &chain),
            Some(ip("203.0.113.9"))
        );
        let forwarded = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8::7]:4711\";proto=https",
        )]);
        assert_eq!(
            proxies.client_ip(Some(ip("fd00::1")), &forwarded),
            Some(ip("2001:db8::7"))
        );
        // No header: the proxy itself.
        assert_eq!(
            proxies.client_ip(Some(ip("10.1.2.3")), &HeaderMap::new()),
            Some(ip("10.1.2.3"))
        );
        // Nobody trusted: the peer.
        assert_eq!(
            TrustedProxies::default().client_ip(Some(ip("10.1.2.3")), &spoofed),
            Some(ip("10.1.2.3"))
        );
        // Everyone trusted (trust_forwarded_for): the farthest entry when all are trusted.
        assert_eq!(
            TrustedProxies::everyone().client_ip(Some(ip("10.1.2.3")), &chain),
            Some(ip("1.1.1.1"))
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let err = TrustedProxies::parse(&["10.0.0.0/8", "ten"]).unwrap_err();
        assert!(err.contains("\"ten\""), "{err}");
        assert!(TrustedProxies::parse(&["10.0.0.0/33"]).is_err());
    }

    #[test]
    fn forwarded_addresses_parse_with_or_without_a_port() {
        for (raw, want) in [
            ("192.0.2.7", "192.0.2.7"),
            ("192.0.2.7:4711", "192.0.2.7"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 2001:db8::1 ", "2001:db8::1"),
        ] {
            assert_eq!(parse_address(raw), Some(want.parse().unwrap()), "{raw}");
        }
        assert_eq!(parse_address("unknown"), None);
    }

    #[test]
    fn a_subscriber_keeps_one_key_across_its_block_and_its_address_forms() {
        let salt = std::hash::RandomState::new();
        let key = |ip: &str| block_key(&salt, ip.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
        assert_ne!(
            key("192.0.2.7"),
            block_key(&std::hash::RandomState::new(), "192.0.2.7".parse().unwrap()),
            "another salt, another key"
        );
    }
}
