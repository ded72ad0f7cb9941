use crate::DomainError;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

pub const MAX_LIST_ENTRIES: usize = 1000;
/// Longest HWID accepted from a client (SDK activation requests clip at 256).
pub const MAX_HWID_LEN: usize = 256;
/// Longest HWID accepted in a security list (the Developer API's documented limit).
const MAX_LISTED_HWID_LEN: usize = 128;

/// An app's block and allow lists. Blacklists win over whitelists; an empty whitelist allows all.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityLists {
    pub hwid_blacklist: Vec<String>,
    pub hwid_whitelist: Vec<String>,
    pub ip_blacklist: Vec<String>,
    pub ip_whitelist: Vec<String>,
}

impl SecurityLists {
    /// Validates every entry and removes duplicates (keeping first occurrences in order).
    pub fn validated(mut self) -> Result<Self, DomainError> {
        for (name, list, check) in [
            ("hwidBlacklist", &mut self.hwid_blacklist, check_hwid as fn(&str) -> bool),
            ("hwidWhitelist", &mut self.hwid_whitelist, check_hwid),
            ("ipBlacklist", &mut self.ip_blacklist, check_ip),
            ("ipWhitelist", &mut self.ip_whitelist, check_ip),
        ] {
            let mut seen = std::collections::HashSet::new();
            list.retain(|e| seen.insert(e.clone()));
            if list.len() > MAX_LIST_ENTRIES {
                return Err(DomainError::InvalidSecurityList(format!(
                    "{name} holds more than {MAX_LIST_ENTRIES} entries"
                )));
            }
            if let Some(bad) = list.iter().find(|e| !check(e)) {
                return Err(DomainError::InvalidSecurityList(format!("{name}: invalid entry '{bad}'")));
            }
        }
        Ok(self)
    }
}

impl SecurityLists {
    /// The documented order: IP blacklist, IP whitelist, HWID blacklist, HWID whitelist. A
    /// blacklist entry wins over a whitelist entry. `false` means the caller is blocked.
    pub fn allows(&self, ip: Option<IpAddr>, hwid: &str) -> bool {
        let ip_listed = |list: &[String]| ip.is_some_and(|ip| list.iter().any(|entry| ip_matches(entry, ip)));
        let hwid_listed = |list: &[String]| list.iter().any(|entry| entry == hwid);
        !(ip_listed(&self.ip_blacklist)
            || (!self.ip_whitelist.is_empty() && !ip_listed(&self.ip_whitelist))
            || hwid_listed(&self.hwid_blacklist)
            || (!self.hwid_whitelist.is_empty() && !hwid_listed(&self.hwid_whitelist)))
    }
}

/// Whether `ip` is the address, or lies in the CIDR range, an entry names.
fn ip_matches(entry: &str, ip: IpAddr) -> bool {
    let (addr, prefix) = entry.split_once('/').map_or((entry, None), |(a, p)| (a, p.parse::<u32>().ok()));
    let Ok(network) = addr.parse::<IpAddr>() else { return false };
    let (network, ip, width) = match (network, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)) << 96, u128::from(u32::from(i)) << 96, 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        (IpAddr::V6(n), IpAddr::V4(i)) | (IpAddr::V4(i), IpAddr::V6(n)) => {
            // An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) still matches IPv4 entries.
            return match (n.to_ipv4_mapped(), prefix) {
                (Some(mapped), None) => mapped == i,
                _ => false,
            };
        }
    };
    let prefix = prefix.unwrap_or(width).min(width);
    let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
    network & mask == ip & mask
}

fn check_hwid(hwid: &str) -> bool {
    !hwid.is_empty() && hwid.chars().count() <= MAX_LISTED_HWID_LEN
}

/// An IPv4/IPv6 address (7–45 characters) or a CIDR range of one.
fn check_ip(entry: &str) -> bool {
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    if !(7..=45).contains(&addr.len()) {
        return false;
    }
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    prefix.is_none_or(|p| p.parse::<u8>().is_ok_and(|p| p <= max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(ips: &[&str]) -> SecurityLists {
        SecurityLists { ip_blacklist: ips.iter().map(|s| s.to_string()).collect(), ..Default::default() }
    }

    #[test]
    fn addresses_and_ranges_are_accepted_and_deduplicated() {
        let l = lists(&["10.0.0.1", "10.0.0.1", "2001:db8::1", "192.168.0.0/16", "2001:db8::/32"]).validated().unwrap();
        assert_eq!(l.ip_blacklist.len(), 4);
    }

    #[test]
    fn malformed_entries_are_refused() {
        for bad in ["1.2.3", "999.1.1.1", "10.0.0.0/33", "::1", "hello world", "10.0.0.1/x"] {
            assert!(lists(&[bad]).validated().is_err(), "{bad}");
        }
        let hwid = SecurityLists { hwid_whitelist: vec!["h".repeat(129)], ..Default::default() };
        assert!(hwid.validated().is_err());
    }

    #[test]
    fn blacklists_win_and_whitelists_restrict() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let lists = SecurityLists {
            ip_blacklist: vec!["203.0.113.0/24".into()],
            ip_whitelist: vec!["203.0.113.7".into(), "198.51.100.0/24".into()],
            hwid_blacklist: vec!["bad".into()],
            hwid_whitelist: vec![],
        };
        assert!(!lists.allows(ip("203.0.113.7"), "good"), "the blacklist wins over the whitelist");
        assert!(lists.allows(ip("198.51.100.42"), "good"));
        assert!(!lists.allows(ip("192.0.2.1"), "good"), "not on the active IP whitelist");
        assert!(!lists.allows(ip("198.51.100.42"), "bad"));
        let hwid_only = SecurityLists { hwid_whitelist: vec!["beta".into()], ..Default::default() };
        assert!(hwid_only.allows(ip("192.0.2.1"), "beta"));
        assert!(!hwid_only.allows(ip("192.0.2.1"), "other"));
        assert!(SecurityLists::default().allows(None, "any"));
    }

    #[test]
    fn ipv6_ranges_and_mapped_ipv4_match() {
        let lists =
            SecurityLists { ip_blacklist: vec!["2001:db8::/32".into(), "192.0.2.5".into()], ..Default::default() };
        assert!(!lists.allows(Some("2001:db8:1::9".parse().unwrap()), "h"));
        assert!(lists.allows(Some("2001:db9::1".parse().unwrap()), "h"));
        assert!(!lists.allows(Some("::ffff:192.0.2.5".parse().unwrap()), "h"));
    }

    #[test]
    fn more_than_a_thousand_entries_are_refused() {
        let l = SecurityLists { hwid_blacklist: (0..1001).map(|i| format!("hw{i}")).collect(), ..Default::default() };
        assert!(l.validated().is_err());
    }
}
