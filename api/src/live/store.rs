//! The per-session value store (packets 12–14, websocket.md §14.12): a volatile cache of at most
//! `max_entries` keys and `max_bytes` bytes of values, with per-entry TTLs. It survives a resume
//! and is dropped with the session.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The longest (and the default) time-to-live of a value: 72 hours.
pub const MAX_TTL: Duration = Duration::from_secs(72 * 60 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreRefusal {
    /// 701: the values would exceed the byte budget.
    OutOfMemory,
    /// 702: a new key would exceed the entry budget.
    OutOfEntries,
}

#[derive(Debug, Default)]
pub struct ValueStore {
    entries: HashMap<String, (String, Instant)>,
    bytes: usize,
}

impl ValueStore {
    /// Sets `key`; `ttl_secs` ≤ 0 means the 72-hour default, larger values are clamped to it. An
    /// overwrite frees the old value's bytes and takes no new entry.
    pub fn set(
        &mut self,
        key: &str,
        value: &str,
        ttl_secs: i64,
        limits: (usize, usize),
        now: Instant,
    ) -> Result<(), StoreRefusal> {
        let (max_entries, max_bytes) = limits;
        self.purge(now);
        let old = self.entries.get(key).map_or(0, |(v, _)| v.len());
        if old == 0 && !self.entries.contains_key(key) && self.entries.len() >= max_entries {
            return Err(StoreRefusal::OutOfEntries);
        }
        if self.bytes - old + value.len() > max_bytes {
            return Err(StoreRefusal::OutOfMemory);
        }
        let ttl = u64::try_from(ttl_secs).ok().filter(|&s| s > 0).map_or(MAX_TTL, Duration::from_secs).min(MAX_TTL);
        self.bytes = self.bytes - old + value.len();
        self.entries.insert(key.to_string(), (value.to_string(), now + ttl));
        Ok(())
    }

    /// The value, unless missing or expired; reading does not extend the TTL.
    pub fn get(&self, key: &str, now: Instant) -> Option<&str> {
        self.entries.get(key).filter(|(_, expires)| *expires > now).map(|(v, _)| v.as_str())
    }

    /// Removes `key`; `false` when it was missing or expired.
    pub fn delete(&mut self, key: &str, now: Instant) -> bool {
        self.purge(now);
        match self.entries.remove(key) {
            Some((value, _)) => {
                self.bytes -= value.len();
                true
            }
            None => false,
        }
    }

    fn purge(&mut self, now: Instant) {
        let bytes = &mut self.bytes;
        self.entries.retain(|_, (value, expires)| {
            let keep = *expires > now;
            if !keep {
                *bytes -= value.len();
            }
            keep
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: (usize, usize) = (2, 10);

    #[test]
    fn entries_bytes_overwrites_and_expiry() {
        let now = Instant::now();
        let mut store = ValueStore::default();
        store.set("a", "12345", 0, LIMITS, now).unwrap();
        store.set("a", "1234567890", 0, LIMITS, now).unwrap();
        assert_eq!(store.set("b", "x", 0, LIMITS, now), Err(StoreRefusal::OutOfMemory));
        store.set("a", "1", 0, LIMITS, now).unwrap();
        store.set("b", "2", 1, LIMITS, now).unwrap();
        assert_eq!(store.set("c", "3", 0, LIMITS, now), Err(StoreRefusal::OutOfEntries));
        let later = now + Duration::from_secs(2);
        assert_eq!(store.get("b", later), None, "expired");
        store.set("c", "3", 0, LIMITS, later).unwrap();
        assert_eq!(store.get("c", later), Some("3"));
        assert!(store.delete("a", later));
        assert!(!store.delete("a", later));
        assert_eq!(store.bytes, 1);
    }
}
