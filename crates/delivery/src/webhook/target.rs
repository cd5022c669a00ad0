//! Which addresses a webhook may reach (server-side request forgery).
//!
//! Unless `CRIER_WEBHOOK_ALLOW_PRIVATE` is true, an endpoint must be a globally routable
//! unicast address: nothing of the IANA IPv4 and IPv6 Special-Purpose Address Registries
//! that is not globally reachable (loopback, private, shared, link-local where cloud
//! metadata lives, benchmarking, documentation, reserved, multicast, broadcast), and for
//! IPv6 only global unicast (`2000::/3`) outside the IETF protocol and documentation
//! blocks. An IPv4 address embedded in IPv6 (IPv4-mapped `::ffff:0:0/96`, IPv4-translated
//! `::ffff:0:0:0/96`, IPv4-compatible `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is
//! judged as the IPv4 address it reaches; the local-use NAT64 prefix `64:ff9b:1::/48` is
//! refused whatever it embeds. A name's trailing dot is dropped before it is resolved, so
//! `localhost.` is `localhost`.
//!
//! The check runs twice: when the webhook is registered (a clear 400), and at every
//! connection, in the resolver the HTTP client uses, so that a name that later resolves
//! elsewhere (DNS rebinding) still reaches no forbidden address. Redirects are never followed
//! and proxy settings of the environment are ignored, so neither can lead elsewhere either.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

/// How long a registration waits for the endpoint's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

#[allow(clippy::too_many_arguments)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16, prefix: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// IPv4 blocks that are not globally reachable unicast (IANA IPv4 Special-Purpose Address
/// Registry, multicast and the reserved class E with the limited broadcast).
const V4_NOT_GLOBAL: [Ipv4Net; 15] = [
    v4(0, 0, 0, 0, 8),       // "this network"
    v4(10, 0, 0, 0, 8),      // private
    v4(100, 64, 0, 0, 10),   // shared address space (CGNAT)
    v4(127, 0, 0, 0, 8),     // loopback
    v4(169, 254, 0, 0, 16),  // link-local (cloud metadata)
    v4(172, 16, 0, 0, 12),   // private
    v4(192, 0, 0, 0, 24),    // IETF protocol assignments
    v4(192, 0, 2, 0, 24),    // documentation (TEST-NET-1)
    v4(192, 88, 99, 0, 24),  // deprecated 6to4 relay anycast
    v4(192, 168, 0, 0, 16),  // private
    v4(198, 18, 0, 0, 15),   // benchmarking
    v4(198, 51, 100, 0, 24), // documentation (TEST-NET-2)
    v4(203, 0, 113, 0, 24),  // documentation (TEST-NET-3)
    v4(224, 0, 0, 0, 4),     // multicast
    v4(240, 0, 0, 0, 4),     // reserved, and 255.255.255.255
];

/// IPv6 global unicast.
const V6_GLOBAL_UNICAST: Ipv6Net = v6(0x2000, 0, 0, 0, 0, 0, 0, 0, 3);

/// Blocks of global unicast that are not globally reachable.
const V6_NOT_GLOBAL: [Ipv6Net; 3] = [
    v6(0x2001, 0, 0, 0, 0, 0, 0, 0, 23), // IETF protocol assignments (Teredo, ORCHID, …)
    v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0, 32), // documentation
    v6(0x3fff, 0, 0, 0, 0, 0, 0, 0, 20), // documentation
];

/// The local-use NAT64 prefix (RFC 8215): reaches a network of its operator's choosing.
const V6_LOCAL_NAT64: Ipv6Net = v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0, 48);

/// The IPv4 address an IPv6 address reaches by transition mechanism, if any.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped ::ffff:a.b.c.d and IPv4-translated ::ffff:0:a.b.c.d.
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0xffff, 0, _, _] => Some(low),
        // IPv4-compatible ::a.b.c.d (deprecated), but :: and ::1 are IPv6's own.
        [0, 0, 0, 0, 0, 0, _, _] if !ip.is_loopback() && !ip.is_unspecified() => Some(low),
        // Well-known NAT64.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 6to4: the IPv4 address is bits 16 to 48.
        [0x2002, high, lower, ..] => Some(Ipv4Addr::new(
            (high >> 8) as u8,
            high as u8,
            (lower >> 8) as u8,
            lower as u8,
        )),
        _ => None,
    }
}

/// Whether `ip` is a globally routable unicast address, the only kind webhooks may reach.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !V4_NOT_GLOBAL.iter().any(|net| net.contains(&v4)),
        IpAddr::V6(v6) => {
            if V6_LOCAL_NAT64.contains(&v6) {
                return false;
            }
            if let Some(v4) = embedded_v4(v6) {
                return is_global(IpAddr::V4(v4));
            }
            V6_GLOBAL_UNICAST.contains(&v6) && !V6_NOT_GLOBAL.iter().any(|net| net.contains(&v6))
        }
    }
}

/// Whether `ip` is an address that outsiders must not make the server reach.
pub fn is_internal(ip: IpAddr) -> bool {
    !is_global(ip)
}

/// A host name as resolved: without the trailing dot of a fully qualified name.
fn resolvable(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

/// Where webhooks may go.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetPolicy {
    /// `CRIER_WEBHOOK_ALLOW_PRIVATE`: internal addresses allowed too.
    pub allow_private: bool,
}

impl TargetPolicy {
    /// Refuses an internal address, saying why.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow_private || !is_internal(ip) {
            Ok(())
        } else {
            Err(format!(
                "{ip} is not a globally routable unicast address (loopback, private, \
                 link-local, reserved or another special-purpose block), which webhooks may \
                 not reach (set CRIER_WEBHOOK_ALLOW_PRIVATE=true to allow it)"
            ))
        }
    }

    /// Checks the host of an endpoint being registered: an address literal, or a name, that
    /// must not resolve to a refused address. A name that does not resolve now is accepted:
    /// DNS may be failing too during an incident, its deliveries are retried, and
    /// [`GuardedResolver`] checks every address again when it connects.
    pub async fn check_endpoint(&self, url: &url::Url) -> Result<(), String> {
        let port = url.port_or_known_default().unwrap_or(443);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_address(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_address(IpAddr::V6(ip)),
            Some(url::Host::Domain(name)) => {
                let name = resolvable(name);
                let lookup =
                    tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)));
                let Ok(Ok(resolved)) = lookup.await else {
                    return Ok(());
                };
                for address in resolved {
                    self.check_address(address.ip())
                        .map_err(|why| format!("{name} resolves to {why}"))?;
                }
                Ok(())
            }
            None => Err("the URL names no host".into()),
        }
    }

    /// Checks the host of an endpoint about to be called when it is an address literal (a
    /// name is checked by [`GuardedResolver`] as it is resolved).
    pub fn check_literal(&self, url: &url::Url) -> Result<(), String> {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check_address(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_address(IpAddr::V6(ip)),
            _ => Ok(()),
        }
    }
}

/// The HTTP client's resolver: the system's, keeping only the addresses the policy
/// allows.
pub struct GuardedResolver {
    pub policy: TargetPolicy,
}

type Resolved = Result<reqwest::dns::Addrs, Box<dyn std::error::Error + Send + Sync>>;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let lookup: Pin<Box<dyn Future<Output = Resolved> + Send>> = Box::pin(async move {
            let host = resolvable(name.as_str()).to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.check_address(a.ip()).is_ok())
                .collect();
            if allowed.is_empty() {
                let why = match found.first() {
                    Some(first) => policy.check_address(first.ip()).err().unwrap_or_default(),
                    None => "no address".into(),
                };
                return Err(format!("{host} resolves to {why}").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        });
        lookup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_and_public_ones_allowed() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            // Found by an attack on a running server: each was accepted once.
            "::ffff:0:127.0.0.1",
            "64:ff9b:1::7f00:1",
            "2002:7f00:1::",
            "fec0::1",
            "100::1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            // And the rest of the registries.
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "2001:db8::1",
            "2001::1",
            "2001:2::1",
            "3fff::1",
            "5f00::1",
            "ff02::1",
            "2002:a00:1::",
            "64:ff9b:1::808:808",
        ] {
            let ip: IpAddr = internal.parse().unwrap();
            assert!(is_internal(ip), "{internal} allowed");
            assert!(TargetPolicy::default().check_address(ip).is_err());
            assert!(TargetPolicy {
                allow_private: true
            }
            .check_address(ip)
            .is_ok());
        }
        for public in [
            "93.184.215.14",
            "8.8.8.8",
            "100.128.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "192.31.196.1",
        ] {
            assert!(!is_internal(public.parse().unwrap()), "{public} refused");
        }
    }

    #[tokio::test]
    async fn a_registration_is_refused_for_loopback_names_and_literals() {
        let policy = TargetPolicy::default();
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]:9/hook",
            "http://localhost:9/hook",
            "http://localhost.:9/hook",
            "http://[::ffff:0:127.0.0.1]:9/hook",
            "http://2130706433:9/hook",
        ] {
            let url = url::Url::parse(url).unwrap();
            assert!(policy.check_endpoint(&url).await.is_err(), "{url} allowed");
        }
        let allowed = TargetPolicy {
            allow_private: true,
        };
        let url = url::Url::parse("http://localhost:9/hook").unwrap();
        assert_eq!(allowed.check_endpoint(&url).await, Ok(()));
        // `.invalid` never resolves (RFC 6761): accepted, to be checked when called.
        let unresolvable = url::Url::parse("https://hooks.crier.invalid/hook").unwrap();
        assert_eq!(policy.check_endpoint(&unresolvable).await, Ok(()));
    }
}
