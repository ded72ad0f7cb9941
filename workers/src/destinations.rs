//! Where webhooks may be sent. A merchant-supplied URL must not turn licensd into a proxy into
//! its own network: loopback, private, link-local and similar addresses are refused unless the
//! deployment allows them. Checked for IP literals before sending and for every address a DNS
//! answer yields, so a hostname cannot smuggle a private address past the check.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// 127.0.0.0/8 and ::1 (development receivers on the same machine).
    pub allow_loopback: bool,
    /// Private, shared, link-local and unique-local ranges (receivers inside the network).
    pub allow_private: bool,
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || ip.is_link_local() || ip.is_broadcast() || a == 0 || (a == 100 && (64..128).contains(&b))
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
}

impl DestinationPolicy {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if ip.is_unspecified() || ip.is_multicast() {
            return false;
        }
        if ip.is_loopback() {
            return self.allow_loopback;
        }
        let internal = match ip {
            IpAddr::V4(v4) => internal_v4(v4),
            IpAddr::V6(v6) => internal_v6(v6),
        };
        !internal || self.allow_private
    }

    /// Refuses a URL whose host is a literal address the policy does not allow.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("invalid URL: {e}"))?;
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            _ => None,
        };
        match literal {
            Some(ip) if !self.allows(ip) => Err(format!("destination {ip} is not allowed")),
            _ => Ok(()),
        }
    }
}

/// A resolver that drops every address the policy refuses.
pub struct GuardedResolver(pub DestinationPolicy);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| policy.allows(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no allowed destination").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn internal_destinations_are_refused_by_default() {
        let strict = DestinationPolicy::default();
        for blocked in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
        ] {
            assert!(!strict.allows(ip(blocked)), "{blocked}");
        }
        for open in ["203.0.113.10", "2001:db8::1", "8.8.8.8"] {
            assert!(strict.allows(ip(open)), "{open}");
        }
        assert!(strict.check_url("https://169.254.169.254/latest/meta-data").is_err());
        assert!(strict.check_url("https://example.com/hook").is_ok(), "names are checked when resolved");
    }

    #[test]
    fn deployments_may_open_loopback_and_private_ranges() {
        let dev = DestinationPolicy { allow_loopback: true, allow_private: false };
        assert!(dev.allows(ip("127.0.0.1")) && !dev.allows(ip("10.0.0.1")));
        let internal = DestinationPolicy { allow_loopback: false, allow_private: true };
        assert!(internal.allows(ip("10.0.0.1")) && !internal.allows(ip("127.0.0.1")));
    }

    #[tokio::test]
    async fn names_resolving_to_refused_addresses_fail() {
        let resolver = GuardedResolver(DestinationPolicy::default());
        let name: Name = "localhost".parse().unwrap();
        assert!(resolver.resolve(name).await.is_err());
        let allowed = GuardedResolver(DestinationPolicy { allow_loopback: true, allow_private: false });
        assert!(allowed.resolve("localhost".parse().unwrap()).await.is_ok());
    }
}
