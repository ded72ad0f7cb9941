//! The client's address: the socket's peer, or, when that peer is a trusted proxy
//! (`LICENSD_TRUSTED_PROXIES`), the rightmost address in `Forwarded` / `X-Forwarded-For` that is
//! not itself a trusted proxy. A peer outside the list never chooses its own address, whatever
//! headers it sends. Resolved once per request at the edge; rate limits, IP lists, the access log,
//! the portal and app-user softlocks all read the result.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use std::net::IpAddr;

/// Hops looked at from the right at most; a longer chain (all trusted so far) stops there.
const MAX_HOPS: usize = 32;

/// One CIDR block (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let network = network.to_canonical();
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("`{text}`: the prefix length must be a number from 0 to {width}"))?,
        };
        Ok(Self { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                same_prefix(u32::from(net).into(), u32::from(ip).into(), self.prefix, 32)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(u128::from(net), u128::from(ip), self.prefix, 128),
            _ => false,
        }
    }
}

fn same_prefix(a: u128, b: u128, prefix: u8, width: u32) -> bool {
    let shift = width - u32::from(prefix);
    shift >= width || (a >> shift) == (b >> shift)
}

/// The proxies whose forwarding headers are believed (empty: none, the default).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// A comma-separated list of CIDR blocks or addresses; empty for none.
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split(',').filter(|s| !s.trim().is_empty()).map(Cidr::parse).collect::<Result<_, _>>().map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client's address for a request from `peer` carrying `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_hops(headers);
        // From the right: each hop was added by the proxy to its right, which we trust so far.
        let mut client = peer;
        for hop in hops.iter().rev().take(MAX_HOPS) {
            match hop {
                Some(ip) => {
                    client = *ip;
                    if !self.trusts(*ip) {
                        return client;
                    }
                }
                // Unreadable (`unknown`, an obfuscated name, garbage): nothing left of it can be
                // believed; the last trusted hop is as near the client as we can tell.
                None => return client,
            }
        }
        client
    }
}

/// The hops of `Forwarded` (its `for=` parameters) when the request has that header, else of
/// `X-Forwarded-For`, left to right, every header line in order; `None` for one that is not an
/// address.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<_> = headers.get_all("forwarded").iter().collect();
    if !forwarded.is_empty() {
        return forwarded
            .iter()
            .flat_map(|value| value.to_str().unwrap_or("\u{0}").split(',').map(str::to_owned).collect::<Vec<_>>())
            .map(|element| {
                let pair = element.split(';').find_map(|pair| {
                    let (name, value) = pair.split_once('=')?;
                    name.trim().eq_ignore_ascii_case("for").then(|| value.trim().to_owned())
                });
                pair.and_then(|value| hop_address(value.trim_matches('"')))
            })
            .collect();
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| {
            value.to_str().unwrap_or("\u{0}").split(',').map(|hop| hop_address(hop.trim())).collect::<Vec<_>>()
        })
        .collect()
}

/// An address as proxies write one: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]`,
/// `[2001:db8::1]:5678`.
fn hop_address(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.parse::<u16>().is_ok());
        return port_ok.then(|| inside.parse::<std::net::Ipv6Addr>().ok().map(|ip| IpAddr::V6(ip).to_canonical()))?;
    }
    let (address, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

/// The client's address as resolved at the edge (absent only for in-process requests in tests).
#[derive(Debug, Clone, Copy)]
pub struct ResolvedClientIp(pub IpAddr);

/// The client's address of a request: resolved at the edge, else the socket's peer.
pub fn of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ResolvedClientIp>()
        .map(|r| r.0)
        .or_else(|| extensions.get::<ConnectInfo<crate::PeerAddr>>().map(|c| c.0 .0.ip()))
}

/// Resolves the client's address once, before anything else reads it.
pub async fn resolve(State(state): State<crate::AppState>, mut request: Request, next: Next) -> Response {
    if let Some(peer) = request.extensions().get::<ConnectInfo<crate::PeerAddr>>().map(|c| c.0 .0.ip()) {
        let client = state.config.trusted_proxies.client(peer, request.headers());
        request.extensions_mut().insert(ResolvedClientIp(client));
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::parse("10.0.0.0/8, fd00::/8,192.0.2.7").unwrap()
    }

    #[test]
    fn an_untrusted_peer_never_picks_its_address() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(proxies().client(ip("203.0.113.9"), &h), ip("203.0.113.9"));
        assert_eq!(TrustedProxies::default().client(ip("10.0.0.1"), &h), ip("10.0.0.1"), "no list: nobody is trusted");
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.1.1.1")]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("198.51.100.4"), "the spoofed leftmost hop is ignored");
        let h = headers(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "198.51.100.4:4711")]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("198.51.100.4"), "several lines, and a port");
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_reads_ipv6_with_ports() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", r#"for=7.7.7.7, For="[2001:db8::5]:8443";proto=https, for=192.0.2.7"#),
        ]);
        assert_eq!(proxies().client(ip("fd00::1"), &h), ip("2001:db8::5"));
    }

    #[test]
    fn unreadable_hops_stop_at_the_last_trusted_one() {
        for bad in ["unknown", "_hidden", "1.2.3", "[::1", "1.2.3.4:99999", "", "[::1]x", "::ffff:zz"] {
            let h = headers(&[("x-forwarded-for", &format!("5.5.5.5, {bad}, 10.2.2.2"))]);
            assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("10.2.2.2"), "{bad}");
        }
        let h = headers(&[("forwarded", "by=10.0.0.1")]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("10.0.0.1"), "no for= at all: the peer");
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.8.8.8")]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("10.9.9.9"), "all trusted: the leftmost");
    }

    #[test]
    fn long_chains_are_cut_and_mapped_addresses_are_canonical() {
        let chain = std::iter::repeat_n("10.3.3.3", 10_000).collect::<Vec<_>>().join(",");
        let h = headers(&[("x-forwarded-for", &format!("9.9.9.9,{chain}"))]);
        assert_eq!(proxies().client(ip("10.0.0.1"), &h), ip("10.3.3.3"), "only the last hops are looked at");
        let h = headers(&[("x-forwarded-for", "::ffff:198.51.100.8")]);
        assert_eq!(proxies().client(ip("::ffff:10.0.0.1"), &h), ip("198.51.100.8"));
    }

    #[test]
    fn lists_parse_strictly() {
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        for bad in ["10.0.0.0/33", "fd00::/129", "10.0.0.0/x", "example.com", "10.0.0.0/8,,nope"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains(ip("11.0.0.0")));
        assert!(!Cidr::parse("10.0.0.0/8").unwrap().contains(ip("fd00::1")));
    }
}
