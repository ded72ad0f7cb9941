//! Nonces of successful validations, remembered for the replay window in fixed-size keys and
//! under a cap.
//!
//! A nonce is kept as the first 16 bytes of SHA-256 over its app and text (collisions are out
//! of reach: 2^64 nonces for an even chance), in the generation of the time it was used. A
//! generation is an eighth of the window; whole generations are dropped once all their nonces
//! are older than the window, so nothing is stored per nonce but its key, and a nonce is
//! remembered for at least the window (at most an eighth longer).
//!
//! Once `cap` nonces are remembered, [`Nonces::full`] turns true and the hot path refuses new
//! validations that carry a nonce (503 `nonce_capacity_reached`) instead of forgetting nonces
//! early: evicting would silently reopen the replay window. Nonces read from the log are always
//! remembered (another node committed them), so the count may pass the cap by what the tail adds.

use licensd_domain::AppId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The fixed-size key of one remembered nonce.
pub type NonceKey = [u8; 16];

/// Keys are already uniform digests: their first eight bytes are the hash.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}

type KeySet = HashSet<NonceKey, BuildHasherDefault<DigestHasher>>;

/// Lock stripes: concurrent validations rarely wait for each other.
const SHARDS: usize = 16;
/// Generations per window.
const GENERATIONS: i64 = 8;

/// The default cap (36 bytes a nonce as the heap tool counts them: some 360 MB).
pub const DEFAULT_NONCE_CAP: usize = 10_000_000;

pub struct Nonces {
    /// Per stripe: generation number → keys used in it.
    shards: Box<[Mutex<BTreeMap<i64, KeySet>>]>,
    window_secs: i64,
    generation_secs: i64,
    cap: usize,
    count: AtomicUsize,
    /// Whether the last check found the cap reached (logged when it changes).
    was_full: AtomicBool,
}

/// The remembered nonces as a snapshot holds them: per generation, the keys in hex, concatenated.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NonceGenerations(pub Vec<(i64, String)>);

impl Nonces {
    pub fn new(window: Duration, cap: usize) -> Self {
        let window_secs = i64::try_from(window.as_secs()).unwrap_or(i64::MAX / 2).max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            window_secs,
            generation_secs: (window_secs / GENERATIONS).max(1),
            cap,
            count: AtomicUsize::new(0),
            was_full: AtomicBool::new(false),
        }
    }

    pub fn key(app_id: AppId, nonce: &str) -> NonceKey {
        let digest = Sha256::new().chain_update(app_id.to_string()).chain_update(b":").chain_update(nonce).finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        key
    }

    fn shard(&self, key: &NonceKey) -> std::sync::MutexGuard<'_, BTreeMap<i64, KeySet>> {
        self.shards[usize::from(key[15]) % SHARDS].lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a generation still holds nonces that matter at `now`.
    fn live(&self, generation: i64, now: i64) -> bool {
        (generation + 1) * self.generation_secs + self.window_secs > now
    }

    pub fn contains(&self, app_id: AppId, nonce: &str) -> bool {
        let key = Self::key(app_id, nonce);
        let now = chrono::Utc::now().timestamp();
        self.shard(&key).iter().any(|(generation, keys)| self.live(*generation, now) && keys.contains(&key))
    }

    /// Remembers a nonce used at `at`; one already out of the window is not kept. Returns
    /// whether it was new: of concurrent insertions of one nonce, exactly one returns `true`,
    /// whatever times they carry (the hot path records a nonce at "now", the log's tail again
    /// at the event's time, possibly in another generation).
    pub fn insert(&self, app_id: AppId, nonce: &str, at: chrono::DateTime<chrono::Utc>) -> bool {
        let key = Self::key(app_id, nonce);
        self.insert_key(key, at.timestamp().div_euclid(self.generation_secs))
    }

    fn insert_key(&self, key: NonceKey, generation: i64) -> bool {
        let now = chrono::Utc::now().timestamp();
        if !self.live(generation, now) {
            return false;
        }
        let mut shard = self.shard(&key);
        let mut expired = 0;
        while let Some(entry) = shard.first_entry() {
            if self.live(*entry.key(), now) {
                break;
            }
            expired += entry.remove().len();
        }
        // Kept once: a key already in another live generation is neither added nor counted again.
        // Keeping the earlier generation is safe: all remaining generations are live, and the
        // window is counted from the nonce's first use.
        let added = !shard.values().any(|keys| keys.contains(&key)) && shard.entry(generation).or_default().insert(key);
        drop(shard);
        if added {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        if expired > 0 {
            self.count.fetch_sub(expired, Ordering::Relaxed);
        }
        added
    }

    /// Drops every generation out of the window (insertions do it per stripe as they go).
    pub fn expire(&self) {
        let now = chrono::Utc::now().timestamp();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let before: usize = shard.values().map(HashSet::len).sum();
            shard.retain(|generation, _| self.live(*generation, now));
            let after: usize = shard.values().map(HashSet::len).sum();
            self.count.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Whether the cap is reached, after dropping what has expired; logs each change.
    pub fn full(&self) -> bool {
        let mut full = self.len() >= self.cap;
        if full {
            self.expire();
            full = self.len() >= self.cap;
        }
        if self.was_full.swap(full, Ordering::Relaxed) != full {
            if full {
                tracing::warn!(
                    cap = self.cap,
                    "nonce cap reached (LICENSD_NONCE_CAP): validations with a nonce are refused (503 \
                     nonce_capacity_reached) until older nonces leave the replay window"
                );
            } else {
                tracing::info!(cap = self.cap, "nonces below the cap again; validations accepted");
            }
        }
        full
    }

    /// The keys still in the window, sorted (for the model's digest).
    pub fn live_keys(&self) -> Vec<NonceKey> {
        let now = chrono::Utc::now().timestamp();
        let mut keys = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (_, generation) in shard.iter().filter(|(generation, _)| self.live(**generation, now)) {
                keys.extend(generation.iter().copied());
            }
        }
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    pub fn to_generations(&self) -> NonceGenerations {
        let mut merged: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (generation, keys) in shard.iter() {
                let bytes = merged.entry(*generation).or_default();
                for key in keys {
                    bytes.extend_from_slice(key);
                }
            }
        }
        NonceGenerations(merged.into_iter().map(|(g, bytes)| (g, hex::encode(bytes))).collect())
    }

    /// Adds the nonces of a snapshot; `false` if its text is not keys in hex.
    pub fn extend_from(&self, generations: &NonceGenerations) -> bool {
        for (generation, text) in &generations.0 {
            let Ok(bytes) = hex::decode(text) else { return false };
            if bytes.len() % 16 != 0 {
                return false;
            }
            for chunk in bytes.chunks_exact(16) {
                let mut key = [0u8; 16];
                key.copy_from_slice(chunk);
                let _ = self.insert_key(key, *generation);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_remembered_for_the_window_and_the_cap_is_reported() {
        let nonces = Nonces::new(Duration::from_secs(3600), 3);
        let app = AppId::new();
        let now = chrono::Utc::now();
        nonces.insert(app, "a", now);
        nonces.insert(app, "a", now);
        assert!(nonces.contains(app, "a"));
        assert!(!nonces.contains(AppId::new(), "a"), "per app");
        assert!(!nonces.contains(app, "b"));
        nonces.insert(app, "old", now - chrono::Duration::hours(2));
        assert!(!nonces.contains(app, "old"), "out of the window: not kept");
        assert_eq!(nonces.len(), 1);
        assert!(!nonces.full());
        nonces.insert(app, "b", now);
        nonces.insert(app, "c", now - chrono::Duration::minutes(59));
        assert!(nonces.full(), "three remembered, cap three");
        assert!(nonces.contains(app, "c"), "nothing is evicted to make room");

        let copy = Nonces::new(Duration::from_secs(3600), 10);
        assert!(copy.extend_from(&nonces.to_generations()));
        for nonce in ["a", "b", "c"] {
            assert!(copy.contains(app, nonce));
        }
        assert_eq!(copy.len(), 3);
        assert!(!copy.extend_from(&NonceGenerations(vec![(0, "zz".into())])));
    }

    /// Threads insert one nonce at times in different generations while others insert their own
    /// and a third kind expires and reads: exactly one insertion of the shared nonce admits it,
    /// and the count matches the keys held.
    #[test]
    fn concurrent_insertions_of_one_nonce_admit_exactly_one_and_the_count_stays_exact() {
        for round in 0..20 {
            let nonces = Nonces::new(Duration::from_secs(3600), DEFAULT_NONCE_CAP);
            let app = AppId::new();
            let now = chrono::Utc::now();
            let admitted = AtomicUsize::new(0);
            let stop = AtomicBool::new(false);
            std::thread::scope(|scope| {
                let readers: Vec<_> = (0..2)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut seen_once = false;
                            while !stop.load(Ordering::Relaxed) {
                                let seen = nonces.contains(app, "shared");
                                assert!(seen || !seen_once, "a remembered nonce was forgotten");
                                seen_once |= seen;
                                nonces.expire();
                            }
                        })
                    })
                    .collect();
                let writers: Vec<_> = (0..8i64)
                    .map(|thread| {
                        let (nonces, admitted) = (&nonces, &admitted);
                        scope.spawn(move || {
                            for n in 0..200 {
                                nonces.insert(app, &format!("own-{thread}-{n}"), now);
                            }
                            // Minutes apart: each thread's time falls in another generation.
                            let at = now - chrono::Duration::minutes(7 * thread);
                            if nonces.insert(app, "shared", at) {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                    })
                    .collect();
                for writer in writers {
                    writer.join().unwrap();
                }
                stop.store(true, Ordering::Relaxed);
                for reader in readers {
                    reader.join().unwrap();
                }
            });
            assert_eq!(admitted.into_inner(), 1, "round {round}: one nonce, one admission");
            assert!(nonces.contains(app, "shared"));
            assert_eq!(nonces.len(), 8 * 200 + 1, "round {round}: counted once each");
            assert_eq!(nonces.live_keys().len(), nonces.len());
        }
    }
}
