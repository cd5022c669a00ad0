//! Which addresses a webhook may reach (server-side request forgery).
//!
//! Unless `CRIER_WEBHOOK_ALLOW_PRIVATE` is true, an endpoint may not be a loopback, private,
//! link-local (cloud metadata lives there), shared (CGNAT), unspecified, broadcast,
//! multicast or unique-local address, nor an IPv4 address written as IPv6. The check runs
//! twice: when the webhook is registered (a clear 400), and at every connection, in the
//! resolver the HTTP client uses, so that a name that later resolves elsewhere (DNS
//! rebinding) still reaches no forbidden address. Redirects are never followed and proxy
//! settings of the environment are ignored, so neither can lead elsewhere either.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

/// How long a registration waits for the endpoint's name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether `ip` is an address that outsiders must not make the server reach.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_internal_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal_v4(v4);
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
                || is_embedded_v4(v6)
        }
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64.0.0/10
}

/// IPv4-compatible (`::a.b.c.d`) and NAT64 (`64:ff9b::/96`) forms reach IPv4 hosts; refused
/// whatever they embed, as no endpoint needs them.
fn is_embedded_v4(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    (s[..6] == [0, 0, 0, 0, 0, 0] && !ip.is_loopback() && !ip.is_unspecified())
        || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
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
                "{ip} is a loopback, private or link-local address, which webhooks may not \
                 reach (set CRIER_WEBHOOK_ALLOW_PRIVATE=true to allow it)"
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
            let host = name.as_str().to_owned();
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
        for public in ["93.184.215.14", "8.8.8.8", "100.128.0.1", "2606:4700::1111"] {
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
