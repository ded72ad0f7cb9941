//! Where webhooks may be sent. A merchant-supplied URL must not turn licensd into a proxy into
//! its own network: loopback, private, link-local, reserved and similar addresses are refused
//! unless the deployment allows them. Checked for IP literals before sending and for every
//! address a DNS answer yields, so a hostname cannot smuggle a private address past the check.
//!
//! IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:0:0/96`, IPv4-compatible
//! `::/96`, NAT64 `64:ff9b::/96` and 6to4 `2002::/16`) reach that IPv4 host through a translator
//! or a tunnel, so they are judged by the IPv4 address they embed.

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    /// 127.0.0.0/8 and ::1 (development receivers on the same machine).
    pub allow_loopback: bool,
    /// Private, shared, link-local and unique-local ranges (receivers inside the network).
    pub allow_private: bool,
}

/// Ranges no public receiver lives in, refused whatever the policy: "this network", IETF
/// protocol assignments, benchmarking, reserved (with broadcast) and multicast.
fn reserved_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    a == 0 || (a, b, c) == (192, 0, 0) || (a, b, c) == (192, 88, 99) || (a == 198 && (b & 0xfe) == 18) || a >= 224
}

/// Ranges inside an organisation's own network (opened by `allow_private`).
fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || ip.is_link_local() || (a == 100 && (b & 0xc0) == 64)
}

/// Unique-local `fc00::/7`, link-local `fe80::/10` and the deprecated site-local `fec0::/10`.
fn internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 || (first & 0xffc0) == 0xfec0
}

/// Unspecified, multicast, discard-only `100::/64` and the local-use NAT64 prefix `64:ff9b:1::/48`
/// (whose translation is site-specific, so what it reaches cannot be judged here).
fn reserved_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified() || ip.is_multicast() || s[..4] == [0x100, 0, 0, 0] || s[..3] == [0x64, 0xff9b, 1]
}

/// The IPv4 address an IPv6 address reaches through mapping, translation or tunnelling.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-mapped; and IPv4-compatible, except `::` and `::1`, which are IPv6's own.
        [0, 0, 0, 0, 0, 0xffff, ..] => Some(low),
        [0, 0, 0, 0, 0, 0, ..] if !ip.is_unspecified() && !ip.is_loopback() => Some(low),
        // NAT64 well-known prefix.
        [0x64, 0xff9b, 0, 0, 0, 0, ..] => Some(low),
        // 6to4: the IPv4 address of the tunnel's far end follows the prefix.
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

impl DestinationPolicy {
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let reserved = match ip {
            IpAddr::V4(v4) => reserved_v4(v4),
            IpAddr::V6(v6) => reserved_v6(v6),
        };
        if reserved {
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

    /// Every IPv6 form that carries an IPv4 address, each with an internal and a public one,
    /// and the reserved IPv4 ranges: refused whatever the policy opens.
    #[test]
    fn embedded_and_reserved_forms_are_judged_like_what_they_reach() {
        let strict = DestinationPolicy::default();
        let open = DestinationPolicy { allow_loopback: true, allow_private: true };
        for internal in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::10.0.0.1",
            "::a9fe:a9fe",
            "64:ff9b::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a00:1::",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:101::",
            "fec0::1",
            "100.64.0.1",
            "100.127.255.254",
            "64:ff9b::100.64.0.1",
        ] {
            assert!(!strict.allows(ip(internal)), "{internal}");
            assert!(strict.check_url(&format!("https://[{internal}]/hook")).is_err(), "{internal} in a URL");
        }
        for reserved in [
            "192.0.0.1",
            "192.0.0.170",
            "192.88.99.1",
            "198.18.0.1",
            "198.19.255.254",
            "240.0.0.1",
            "255.255.255.255",
            "224.0.0.251",
            "239.255.255.250",
            "0.1.2.3",
            "::",
            "ff02::1",
            "100::1",
            "64:ff9b:1::a00:1",
            "64:ff9b::240.0.0.1",
            "::ffff:224.0.0.1",
            "2002:c612:1::1",
        ] {
            assert!(!open.allows(ip(reserved)), "{reserved} even when private ranges are open");
        }
        for public in ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1", "198.20.0.1", "100.128.0.1"] {
            assert!(strict.allows(ip(public)), "{public}");
        }
        assert!(open.allows(ip("64:ff9b::10.0.0.1")) && open.allows(ip("::ffff:127.0.0.1")));
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
