//! Where a webhook may point: its URL's shape, and the addresses its host resolves to.
//!
//! A webhook makes this service send requests to an address a customer chose, so without a
//! guard a customer could make it reach what only it can reach: its own loopback, the private
//! network it runs in, a cloud's metadata service. Unless `webhooks.allow_private_targets` is
//! set, a target is refused when ANY address its host resolves to is loopback, private
//! (RFC 1918, ULA), link-local (the metadata services among them), CGNAT, multicast,
//! unspecified, broadcast or reserved, IPv4-mapped and NAT64 forms included. Deliveries resolve
//! the host themselves, check every address, and connect to the checked one only (no second
//! lookup a rebinding DNS server could answer differently).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use url::{Host, Url};

/// The longest webhook URL.
pub const MAX_URL_CHARS: usize = 2048;

/// Why a URL cannot be a webhook's, for the `url` field's error: a stable code and a message.
pub fn url_problem(text: &str) -> Option<(&'static str, String)> {
    if text.chars().count() > MAX_URL_CHARS {
        return Some((
            "too_long",
            format!("must be at most {MAX_URL_CHARS} characters"),
        ));
    }
    let invalid = |message: &str| Some(("invalid", message.to_owned()));
    let Ok(url) = Url::parse(text) else {
        return invalid("must be an absolute http:// or https:// URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return invalid("must be an absolute http:// or https:// URL");
    }
    if url.host().is_none() {
        return invalid("must name a host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return invalid("must not carry credentials (user:password@)");
    }
    if url.fragment().is_some() {
        return invalid("must not have a fragment (#...)");
    }
    None
}

/// Why this address may not be a webhook's target, or `None` when it is public.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        Some("a cloud metadata address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_private() {
        Some("a private address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared (CGNAT) address")
    } else if ip.is_unspecified() || a == 0 {
        Some("an unspecified address")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if a >= 240 {
        Some("a reserved address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let low = ip.octets();
        return forbidden_v4(Ipv4Addr::new(low[12], low[13], low[14], low[15]));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        Some("a cloud metadata address")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unspecified() {
        Some("an unspecified address")
    } else if segments[0] & 0xfe00 == 0xfc00 {
        Some("a private (unique local) address")
    } else if segments[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if segments[..6] == [0, 0, 0, 0, 0, 0] {
        // The deprecated IPv4-compatible form (::a.b.c.d).
        Some("a reserved address")
    } else {
        None
    }
}

/// Why a target could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// The host is or resolves to an address the guard refuses.
    Private { address: IpAddr, what: &'static str },
    /// The host did not resolve (in time, or at all).
    Unresolved(String),
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Private { address, what } => {
                write!(f, "the target resolves to {address}, {what}")
            }
            Self::Unresolved(e) => write!(f, "the target's host did not resolve: {e}"),
        }
    }
}

/// Where to connect for `url`: `Some((host, address))` when the host is a name, checked and to
/// be pinned; `None` when the host is an address literal (checked too) or when private targets
/// are allowed (then the client resolves it itself).
pub async fn check(
    url: &Url,
    allow_private: bool,
    timeout: Duration,
) -> Result<Option<(String, SocketAddr)>, TargetError> {
    if allow_private {
        return Ok(None);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    match url.host() {
        Some(Host::Ipv4(v4)) => refuse_if_forbidden(IpAddr::V4(v4)).map(|()| None),
        Some(Host::Ipv6(v6)) => refuse_if_forbidden(IpAddr::V6(v6)).map(|()| None),
        Some(Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            // RFC 6761: every name below `localhost` is loopback, whatever a resolver says
            // (`localhost` itself goes through the resolver, like any name).
            if name.ends_with(".localhost") {
                return Err(TargetError::Private {
                    address: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    what: "a loopback address",
                });
            }
            let found =
                tokio::time::timeout(timeout, tokio::net::lookup_host((name.as_str(), port)))
                    .await
                    .map_err(|_| TargetError::Unresolved(format!("no answer within {timeout:?}")))?
                    .map_err(|e| TargetError::Unresolved(e.to_string()))?;
            let addresses: Vec<SocketAddr> = found.collect();
            Ok(Some((name, every_one_public(&addresses)?)))
        }
        None => Err(TargetError::Unresolved("no host".into())),
    }
}

/// The address to connect to when EVERY one of `addresses` is public: a name with one private
/// address among public ones is refused, since a resolver may hand out any of them.
fn every_one_public(addresses: &[SocketAddr]) -> Result<SocketAddr, TargetError> {
    for address in addresses {
        refuse_if_forbidden(address.ip())?;
    }
    addresses
        .first()
        .copied()
        .ok_or_else(|| TargetError::Unresolved("no address".into()))
}

fn refuse_if_forbidden(address: IpAddr) -> Result<(), TargetError> {
    match forbidden(address) {
        Some(what) => Err(TargetError::Private { address, what }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "127.5.5.5",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            let Ok(ip) = bad.parse::<IpAddr>() else {
                panic!("{bad}")
            };
            assert!(forbidden(ip).is_some(), "{bad} should be refused");
        }
        for good in [
            "93.184.215.14",
            "8.8.8.8",
            "100.128.0.1",
            "172.32.0.1",
            "2606:2800:220:1:248:1893:25c8:1946",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let Ok(ip) = good.parse::<IpAddr>() else {
                panic!("{good}")
            };
            assert_eq!(forbidden(ip), None, "{good} should be allowed");
        }
        assert_eq!(
            forbidden(IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))),
            Some("a cloud metadata address")
        );
    }

    #[test]
    fn urls_are_checked_for_shape() {
        assert_eq!(url_problem("https://hooks.example.com/x?y=1"), None);
        assert_eq!(url_problem("http://93.184.215.14:8080/"), None);
        for bad in [
            "ftp://example.com/",
            "/relative",
            "https://user:pw@example.com/",
            "https://user@example.com/",
            "https://example.com/#frag",
            "mailto:x@example.com",
            "not a url",
        ] {
            assert_eq!(url_problem(bad).map(|p| p.0), Some("invalid"), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert_eq!(url_problem(&long).map(|p| p.0), Some("too_long"));
    }

    #[test]
    fn one_private_address_among_a_names_addresses_refuses_it() {
        let public = SocketAddr::from(([93, 184, 215, 14], 443));
        let private = SocketAddr::from(([10, 0, 0, 1], 443));
        assert_eq!(every_one_public(&[public]), Ok(public));
        for mixed in [[public, private], [private, public]] {
            assert!(matches!(
                every_one_public(&mixed),
                Err(TargetError::Private { .. })
            ));
        }
        assert!(matches!(
            every_one_public(&[]),
            Err(TargetError::Unresolved(_))
        ));
    }

    #[tokio::test]
    async fn literals_and_names_are_checked_before_any_connection() {
        let t = Duration::from_secs(5);
        for bad in [
            "http://127.0.0.1:9/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://localhost:8080/",
            "http://api.localhost/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            let Ok(url) = Url::parse(bad) else {
                panic!("{bad}")
            };
            assert!(
                matches!(
                    check(&url, false, t).await,
                    Err(TargetError::Private { .. })
                ),
                "{bad}"
            );
            assert_eq!(check(&url, true, t).await, Ok(None), "{bad}");
        }
        if let Ok(public) = Url::parse("https://93.184.215.14/") {
            assert_eq!(check(&public, false, t).await, Ok(None));
        }
    }
}
