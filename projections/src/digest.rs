//! The model's content digest: one SHA-256 over the whole model, equal for equal models whatever
//! order their entries were inserted in (a rebuild from zero is checked against live processing
//! and against a snapshot with it).
//!
//! Each map entry is encoded as the snapshot writes it (`(key, value)` with serde, as JSON):
//! that encoding carries every field a snapshot restores, and unlike `Debug` text it does not
//! depend on the iteration order of hash sets inside a value (a security list's members). Each
//! entry's encoding is hashed on its own; a section is its name, its entry count and its
//! entries' digests sorted, so the digest is order-independent and still collision-resistant
//! (two models with the same digest would need a SHA-256 collision). Hashing an entry is
//! independent of the others, so a large map is split over the cores.

use dashmap::DashMap;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::hash::Hash;
use std::sync::Arc;

/// Maps smaller than this are hashed on the calling thread: a thread costs more than they do.
const PARALLEL_FROM: usize = 1 << 14;

/// Appends an entry's encoding to the buffer.
type Encode<K, V> = fn(&K, &V, &mut Vec<u8>) -> serde_json::Result<()>;

/// SHA-256 of each entry's encoding, in no particular order.
fn entry_digests<K, V>(map: &DashMap<K, V>, encode: Encode<K, V>) -> serde_json::Result<Vec<[u8; 32]>>
where
    K: Eq + Hash + Sync + Send,
    V: Sync + Send,
{
    let hash_part = |part: usize, parts: usize| -> serde_json::Result<Vec<[u8; 32]>> {
        let mut digests = Vec::with_capacity(map.len() / parts + 1);
        let mut encoded = Vec::new();
        for entry in map.iter() {
            // Split by the key's hash, not by position in the iteration: a part never depends on
            // what another thread saw, so each entry is hashed exactly once even if the map changed.
            if parts > 1 && map.hash_usize(entry.key()) % parts != part {
                continue;
            }
            encoded.clear();
            encode(entry.key(), entry.value(), &mut encoded)?;
            digests.push(Sha256::digest(&encoded).into());
        }
        Ok(digests)
    };
    let parts =
        if map.len() < PARALLEL_FROM { 1 } else { std::thread::available_parallelism().map_or(1, |n| n.get()).min(8) };
    if parts == 1 {
        return hash_part(0, 1);
    }
    std::thread::scope(|scope| {
        let hash_part = &hash_part;
        let workers: Vec<_> = (1..parts).map(|part| scope.spawn(move || hash_part(part, parts))).collect();
        let mut digests = hash_part(0, parts)?;
        for worker in workers {
            digests.extend(worker.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))?);
        }
        Ok(digests)
    })
}

/// Builds the model's digest section by section.
pub(crate) struct ModelDigest(Sha256);

impl ModelDigest {
    pub(crate) fn new() -> Self {
        Self(Sha256::new())
    }

    /// Adds a map's entries, each encoded as the pair `(key, value)`.
    pub(crate) fn map<K, V>(&mut self, name: &str, map: &DashMap<K, V>) -> serde_json::Result<&mut Self>
    where
        K: Eq + Hash + Sync + Send + Serialize,
        V: Sync + Send + Serialize,
    {
        self.sorted(name, entry_digests(map, |k, v, out| serde_json::to_writer(out, &(k, v)))?)
    }

    /// Adds a map of shared values, each entry encoded as the pair `(key, value)` (the same
    /// bytes as an unshared value's, as in a snapshot).
    pub(crate) fn shared_map<K, V>(&mut self, name: &str, map: &DashMap<K, Arc<V>>) -> serde_json::Result<&mut Self>
    where
        K: Eq + Hash + Sync + Send + Serialize,
        V: Sync + Send + Serialize,
    {
        self.sorted(name, entry_digests(map, |k, v, out| serde_json::to_writer(out, &(k, &**v)))?)
    }

    fn sorted(&mut self, name: &str, mut digests: Vec<[u8; 32]>) -> serde_json::Result<&mut Self> {
        digests.sort_unstable();
        Ok(self.section(name, &digests))
    }

    /// Adds a section of fixed-size items, already in a canonical order.
    pub(crate) fn section<const N: usize>(&mut self, name: &str, items: &[[u8; N]]) -> &mut Self {
        // The name and the count make the sections' boundaries unambiguous (items are fixed-size).
        self.0.update((name.len() as u64).to_le_bytes());
        self.0.update(name.as_bytes());
        self.0.update((items.len() as u64).to_le_bytes());
        for item in items {
            self.0.update(item);
        }
        self
    }

    pub(crate) fn finish(&mut self) -> String {
        hex::encode(std::mem::take(&mut self.0).finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn encode(key: &u64, value: &u64, out: &mut Vec<u8>) -> serde_json::Result<()> {
        serde_json::to_writer(out, &(key, value))
    }

    fn digest_of(key: u64, value: u64) -> [u8; 32] {
        let mut encoded = Vec::new();
        encode(&key, &value, &mut encoded).unwrap();
        Sha256::digest(&encoded).into()
    }

    /// The split over threads while other threads insert and remove entries (the hot path
    /// records its own appends without the apply lock): every entry present for the whole
    /// digest is hashed exactly once, whatever moved around it, and nothing else comes out but
    /// entries that really were in the map at some time.
    #[test]
    fn entries_present_throughout_are_hashed_exactly_once_while_the_map_churns() {
        let stable = (PARALLEL_FROM as u64) * 2;
        let map: DashMap<u64, u64> = (0..stable).map(|k| (k, k * 7)).collect();
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            // Churn: keys above the stable range come and go, and the map grows and shrinks.
            for writer in 0..2u64 {
                let (map, done) = (&map, &done);
                scope.spawn(move || {
                    let mut round = 0u64;
                    while !done.load(Ordering::Relaxed) {
                        let base = stable + writer * 1_000_000 + (round % 4) * 50_000;
                        for k in base..base + 20_000 {
                            map.insert(k, k * 7);
                        }
                        for k in base..base + 20_000 {
                            map.remove(&k);
                        }
                        round += 1;
                    }
                });
            }
            // Every key a churning writer ever inserts: the only other entries a digest may see.
            let churn_keys = (0..2u64).flat_map(|w| (0..4u64).map(move |r| stable + w * 1_000_000 + r * 50_000));
            let ever_held: HashMap<[u8; 32], u64> = churn_keys
                .flat_map(|base| base..base + 20_000)
                .chain(0..stable)
                .map(|k| (digest_of(k, k * 7), k))
                .collect();
            // Stops the writers however this thread leaves the scope (a failed assertion too: the
            // scope waits for them before it passes the panic on).
            struct StopOnDrop<'a>(&'a AtomicBool);
            impl Drop for StopOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::Relaxed);
                }
            }
            let _stop = StopOnDrop(&done);
            for _ in 0..20 {
                let digests = entry_digests(&map, encode).unwrap();
                let mut seen: HashMap<[u8; 32], usize> = HashMap::with_capacity(digests.len());
                for d in &digests {
                    *seen.entry(*d).or_default() += 1;
                }
                for key in 0..stable {
                    assert_eq!(seen.get(&digest_of(key, key * 7)), Some(&1), "entry {key}");
                }
                for (d, n) in &seen {
                    assert_eq!(*n, 1, "entry {:?} hashed {n} times", ever_held.get(d));
                    assert!(ever_held.contains_key(d), "a digest of no entry the map ever held");
                }
            }
        });
    }
}
