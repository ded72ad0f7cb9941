use crate::DomainError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
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

/// One of an app's four lists, as the Developer API names them (`blacklist`/`whitelist` × `hwid`/`ip`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ListName {
    HwidBlacklist,
    HwidWhitelist,
    IpBlacklist,
    IpWhitelist,
}

impl ListName {
    pub const ALL: [Self; 4] = [Self::HwidBlacklist, Self::HwidWhitelist, Self::IpBlacklist, Self::IpWhitelist];

    /// `("blacklist" | "whitelist", "hwid" | "ip")` from the API's path and body.
    pub fn from_api(list: &str, kind: &str) -> Option<Self> {
        match (list, kind) {
            ("blacklist", "hwid") => Some(Self::HwidBlacklist),
            ("whitelist", "hwid") => Some(Self::HwidWhitelist),
            ("blacklist", "ip") => Some(Self::IpBlacklist),
            ("whitelist", "ip") => Some(Self::IpWhitelist),
            _ => None,
        }
    }

    pub fn wire_name(self) -> &'static str {
        match self {
            Self::HwidBlacklist => "hwidBlacklist",
            Self::HwidWhitelist => "hwidWhitelist",
            Self::IpBlacklist => "ipBlacklist",
            Self::IpWhitelist => "ipWhitelist",
        }
    }

    fn holds_ips(self) -> bool {
        matches!(self, Self::IpBlacklist | Self::IpWhitelist)
    }

    /// A merchant's entry for this list, trimmed, or why it is refused.
    pub fn checked_entry(self, entry: &str) -> Result<String, DomainError> {
        let entry = entry.trim();
        let valid = if self.holds_ips() { check_ip(entry) } else { check_hwid(entry) };
        if valid {
            Ok(entry.to_string())
        } else {
            Err(DomainError::InvalidSecurityList(format!("{}: invalid entry '{entry}'", self.wire_name())))
        }
    }
}

/// The lists as the Developer API sets them: `None` leaves a list as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityListsUpdate {
    pub hwid_blacklist: Option<Vec<String>>,
    pub hwid_whitelist: Option<Vec<String>>,
    pub ip_blacklist: Option<Vec<String>>,
    pub ip_whitelist: Option<Vec<String>>,
}

impl SecurityListsUpdate {
    pub fn get(&self, list: ListName) -> Option<&Vec<String>> {
        match list {
            ListName::HwidBlacklist => self.hwid_blacklist.as_ref(),
            ListName::HwidWhitelist => self.hwid_whitelist.as_ref(),
            ListName::IpBlacklist => self.ip_blacklist.as_ref(),
            ListName::IpWhitelist => self.ip_whitelist.as_ref(),
        }
    }
}

/// One list in insertion order, with its entries compiled for lookup when they are applied:
/// a request checks a hash set (HWIDs) or one hash probe per prefix length in use (IPs), never
/// parses the entries again. Serialized as its entries and compiled again when read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<String>", into = "Vec<String>")]
pub struct List {
    entries: Vec<String>,
    members: HashSet<String>,
    /// `(is IPv6, prefix length)` → networks (masked, IPv4 in the high bits) → how many entries name it.
    networks: HashMap<(bool, u8), HashMap<u128, u32>>,
}

impl List {
    pub fn entries(&self) -> &[String] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, entry: &str) -> bool {
        self.members.contains(entry)
    }

    /// Adds an entry not yet listed (`false` when it already was).
    pub fn insert(&mut self, entry: String) -> bool {
        if self.members.contains(&entry) {
            return false;
        }
        if let Some((network, key)) = parse_network(&entry) {
            *self.networks.entry(key).or_default().entry(network).or_default() += 1;
        }
        self.members.insert(entry.clone());
        self.entries.push(entry);
        true
    }

    /// Removes a listed entry (`false` when it was not listed).
    pub fn remove(&mut self, entry: &str) -> bool {
        if !self.members.remove(entry) {
            return false;
        }
        if let Some((network, key)) = parse_network(entry) {
            if let Some(networks) = self.networks.get_mut(&key) {
                if let Some(count) = networks.get_mut(&network) {
                    *count -= 1;
                    if *count == 0 {
                        networks.remove(&network);
                    }
                }
                if networks.is_empty() {
                    self.networks.remove(&key);
                }
            }
        }
        self.entries.retain(|e| e != entry);
        true
    }

    fn from_entries(entries: &[String]) -> Self {
        let mut list = Self::default();
        for entry in entries {
            list.insert(entry.clone());
        }
        list
    }

    /// Whether the address, or a range holding it, is listed.
    pub fn matches_ip(&self, ip: IpAddr) -> bool {
        // An IPv4 client seen through an IPv6 socket (::ffff:a.b.c.d) matches IPv4 entries.
        let (v6, bits) = match ip {
            IpAddr::V4(v4) => (false, u128::from(u32::from(v4)) << 96),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => (false, u128::from(u32::from(v4)) << 96),
                None => (true, u128::from(v6)),
            },
        };
        self.networks
            .iter()
            .any(|(&(family, prefix), networks)| family == v6 && networks.contains_key(&(bits & mask(prefix))))
    }
}

impl From<Vec<String>> for List {
    fn from(entries: Vec<String>) -> Self {
        Self::from_entries(&entries)
    }
}

impl From<List> for Vec<String> {
    fn from(list: List) -> Self {
        list.entries
    }
}

fn mask(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix.min(128)))
    }
}

/// The network an IP entry names, as `(masked bits, (is IPv6, prefix))`; `None` for non-IP entries.
fn parse_network(entry: &str) -> Option<(u128, (bool, u8))> {
    let (addr, prefix) = entry.split_once('/').map_or((entry, None), |(a, p)| (a, Some(p)));
    // An IPv4-mapped address (::ffff:a.b.c.d, how a dual-stack socket reports IPv4 clients)
    // names the IPv4 address, as a client's is read in `matches_ip`.
    let addr = match (addr.parse::<IpAddr>().ok()?, prefix) {
        (IpAddr::V6(v6), None) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        (ip, _) => ip,
    };
    let (v6, bits, width) = match addr {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4)) << 96, 32u8),
        IpAddr::V6(v6) => (true, u128::from(v6), 128u8),
    };
    let prefix = match prefix {
        Some(p) => p.parse::<u8>().ok()?.min(width),
        None => width,
    };
    // IPv4 prefixes count from the top of the 128 bits, where the address sits.
    Some((bits & mask(prefix), (v6, prefix)))
}

/// An app's lists as enforced: the merchant's four lists, and the entries self-bans added
/// (kept apart so they have their own cap and a merchant's whole-list edit cannot undo them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessLists {
    pub hwid_blacklist: List,
    pub hwid_whitelist: List,
    pub ip_blacklist: List,
    pub ip_whitelist: List,
    pub self_banned_hwids: List,
    pub self_banned_ips: List,
    /// The comments self-bans came with, by entry (snapshots written before have none).
    #[serde(default)]
    pub self_ban_comments: SelfBanComments,
}

/// A self-ban's comment for each entry it added, per blacklist.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfBanComments {
    pub hwid: BTreeMap<String, String>,
    pub ip: BTreeMap<String, String>,
}

impl AccessLists {
    pub fn from_lists(lists: &SecurityLists) -> Self {
        Self {
            hwid_blacklist: List::from_entries(&lists.hwid_blacklist),
            hwid_whitelist: List::from_entries(&lists.hwid_whitelist),
            ip_blacklist: List::from_entries(&lists.ip_blacklist),
            ip_whitelist: List::from_entries(&lists.ip_whitelist),
            ..Self::default()
        }
    }

    /// Replaces the merchant's lists; self-ban entries stay.
    pub fn replace_merchant_lists(&mut self, lists: &SecurityLists) {
        let self_banned_hwids = std::mem::take(&mut self.self_banned_hwids);
        let self_banned_ips = std::mem::take(&mut self.self_banned_ips);
        let self_ban_comments = std::mem::take(&mut self.self_ban_comments);
        *self = Self { self_banned_hwids, self_banned_ips, self_ban_comments, ..Self::from_lists(lists) };
    }

    pub fn list(&self, name: ListName) -> &List {
        match name {
            ListName::HwidBlacklist => &self.hwid_blacklist,
            ListName::HwidWhitelist => &self.hwid_whitelist,
            ListName::IpBlacklist => &self.ip_blacklist,
            ListName::IpWhitelist => &self.ip_whitelist,
        }
    }

    pub fn list_mut(&mut self, name: ListName) -> &mut List {
        match name {
            ListName::HwidBlacklist => &mut self.hwid_blacklist,
            ListName::HwidWhitelist => &mut self.hwid_whitelist,
            ListName::IpBlacklist => &mut self.ip_blacklist,
            ListName::IpWhitelist => &mut self.ip_whitelist,
        }
    }

    /// The self-ban entries of the blacklist `name` (whitelists have none).
    pub fn self_banned(&self, name: ListName) -> Option<&List> {
        match name {
            ListName::HwidBlacklist => Some(&self.self_banned_hwids),
            ListName::IpBlacklist => Some(&self.self_banned_ips),
            ListName::HwidWhitelist | ListName::IpWhitelist => None,
        }
    }

    /// How many entries self-bans hold, both blacklists together.
    pub fn self_ban_count(&self) -> usize {
        self.self_banned_hwids.len() + self.self_banned_ips.len()
    }

    /// What the Developer API shows: each blacklist with the self-ban entries after the merchant's.
    pub fn effective(&self) -> SecurityLists {
        let joined = |own: &List, banned: &List| {
            let mut all = own.entries().to_vec();
            all.extend(banned.entries().iter().filter(|e| !own.contains(e)).cloned());
            all
        };
        SecurityLists {
            hwid_blacklist: joined(&self.hwid_blacklist, &self.self_banned_hwids),
            hwid_whitelist: self.hwid_whitelist.entries().to_vec(),
            ip_blacklist: joined(&self.ip_blacklist, &self.self_banned_ips),
            ip_whitelist: self.ip_whitelist.entries().to_vec(),
        }
    }

    /// The documented order: IP blacklist, IP whitelist, HWID blacklist, HWID whitelist. A
    /// blacklist entry wins over a whitelist entry. `false` means the caller is blocked.
    pub fn allows(&self, ip: Option<IpAddr>, hwid: &str) -> bool {
        let ip_listed = |list: &List| ip.is_some_and(|ip| list.matches_ip(ip));
        !(ip_listed(&self.ip_blacklist)
            || ip_listed(&self.self_banned_ips)
            || (!self.ip_whitelist.is_empty() && !ip_listed(&self.ip_whitelist))
            || self.hwid_blacklist.contains(hwid)
            || self.self_banned_hwids.contains(hwid)
            || (!self.hwid_whitelist.is_empty() && !self.hwid_whitelist.contains(hwid)))
    }
}

impl SecurityLists {
    /// Compiles the lists and checks a caller against them (tests and one-off checks; the
    /// request path keeps [`AccessLists`] compiled in the app).
    pub fn allows(&self, ip: Option<IpAddr>, hwid: &str) -> bool {
        AccessLists::from_lists(self).allows(ip, hwid)
    }
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
        let mapped = SecurityLists { ip_blacklist: vec!["::ffff:192.0.2.9".into()], ..Default::default() };
        assert!(!mapped.allows(Some("192.0.2.9".parse().unwrap()), "h"), "a mapped entry names the IPv4 address");
        assert!(!mapped.allows(Some("::ffff:192.0.2.9".parse().unwrap()), "h"));
        let range = SecurityLists { ip_blacklist: vec!["192.0.2.0/24".into()], ..Default::default() };
        assert!(!range.allows(Some("::ffff:192.0.2.77".parse().unwrap()), "h"), "IPv4 ranges hold mapped clients");
    }

    #[test]
    fn a_range_named_by_two_entries_stays_matched_until_both_are_removed() {
        let mut list = List::default();
        assert!(list.insert("10.0.0.1/24".into()) && list.insert("10.0.0.0/24".into()));
        assert!(!list.insert("10.0.0.0/24".into()), "an entry is listed once");
        let ip = "10.0.0.77".parse().unwrap();
        assert!(list.remove("10.0.0.1/24") && list.matches_ip(ip), "the other entry still names the range");
        assert!(list.remove("10.0.0.0/24") && !list.matches_ip(ip));
        assert!(!list.remove("10.0.0.0/24") && list.is_empty());
    }

    #[test]
    fn more_than_a_thousand_entries_are_refused() {
        let l = SecurityLists { hwid_blacklist: (0..1001).map(|i| format!("hw{i}")).collect(), ..Default::default() };
        assert!(l.validated().is_err());
    }
}
