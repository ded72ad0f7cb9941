//! Where a command's randomness (and time) comes from: the OS and the clock, or — for a request
//! sent with an `Idempotency-Key` — a keyed hash of (account, key, request hash) and the time the
//! key was first claimed. In the keyed case every event id, generated id, license key, secret,
//! sealing nonce and timestamp of the command is derived, so re-running the command after a
//! crash yields byte-identical events under the same event ids, and the store recognises them
//! as already appended instead of minting new ones.
//!
//! The entropy is the context of one request: the Idempotency-Key middleware runs the handler
//! inside [`Entropy::scope`], and the command handlers take it from [`Entropy::current`]
//! (OS randomness when nothing is in scope). Work fanned out to other tasks carries a
//! [`fork`](Entropy::fork) of it, so what each task draws does not depend on scheduling.

use crate::MasterKey;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use licensd_domain::AccountId;
use rand::RngCore;
use sha2::Sha256;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use uuid::Uuid;

tokio::task_local! {
    static CURRENT: Entropy;
}

/// The label of the server secret the keyed seeds are made with (never the master key itself).
const SEED_KEY_LABEL: &str = "idempotency-entropy";

/// `None` (the default) is OS randomness, and costs nothing on unkeyed requests.
#[derive(Clone, Default)]
pub struct Entropy(Option<Keyed>);

#[derive(Clone)]
struct Keyed {
    seed: [u8; 32],
    /// When the request was first received: the time every run of it decides at.
    at: DateTime<Utc>,
    /// Steps taken so far with [`Entropy::next_step`]: a handler's sequential draws are numbered.
    steps: Arc<AtomicU64>,
}

/// The seed predicts the request's secrets: it never reaches a log.
impl std::fmt::Debug for Entropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_keyed() { "Entropy(keyed)" } else { "Entropy(os)" })
    }
}

/// HMAC-SHA256 over length-prefixed parts, so no two part lists hash alike.
fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl Entropy {
    /// OS randomness: what every command without an `Idempotency-Key` uses.
    pub fn os() -> Self {
        Self::default()
    }

    /// The entropy of one keyed request. The seed is secret (keyed by the master key), so
    /// nobody can predict a license key or secret from the key and body they send.
    pub fn keyed(
        master: &MasterKey,
        account: AccountId,
        idempotency_key: &str,
        request_hash: &str,
        at: DateTime<Utc>,
    ) -> Self {
        let secret = master.derive(SEED_KEY_LABEL);
        let account = account.to_string();
        let seed = mac(&secret, &[account.as_bytes(), idempotency_key.as_bytes(), request_hash.as_bytes()]);
        Self(Some(Keyed { seed, at, steps: Arc::default() }))
    }

    fn seeded(&self, seed: [u8; 32]) -> Self {
        Self(self.0.as_ref().map(|keyed| Keyed { seed, at: keyed.at, steps: Arc::default() }))
    }

    /// The time a keyed request decides at (`None`: the clock's).
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.0.as_ref().map(|keyed| keyed.at)
    }

    /// The entropy of the running request, or OS randomness outside one.
    pub fn current() -> Self {
        CURRENT.try_with(Clone::clone).unwrap_or_default()
    }

    /// Runs `work` with `self` as the current entropy.
    pub async fn scope<F: Future>(self, work: F) -> F::Output {
        CURRENT.scope(self, work).await
    }

    /// Derived from a keyed request (so a re-run repeats every draw).
    pub fn is_keyed(&self) -> bool {
        self.0.is_some()
    }

    /// An independent child for a named part of the work (e.g. the n-th license of a batch).
    pub fn fork(&self, label: &str) -> Self {
        match &self.0 {
            None => Self::os(),
            Some(keyed) => self.seeded(mac(&keyed.seed, &[b"fork", label.as_bytes()])),
        }
    }

    /// The child for the next step of the current request: steps are numbered in the order a
    /// handler takes them, which is the same on a re-run of the same request.
    pub fn next_step() -> Self {
        match CURRENT.try_with(|current| current.0.clone()).ok().flatten() {
            None => Self::os(),
            Some(keyed) => {
                let step = keyed.steps.fetch_add(1, Ordering::Relaxed);
                Self(Some(keyed)).fork(&format!("step:{step}"))
            }
        }
    }

    /// `N` bytes for `label`: HMAC in counter mode when keyed.
    pub fn bytes<const N: usize>(&self, label: &str) -> [u8; N] {
        let mut bytes = [0u8; N];
        match &self.0 {
            None => rand::rngs::OsRng.fill_bytes(&mut bytes),
            Some(keyed) => {
                for (block, chunk) in (0u64..).zip(bytes.chunks_mut(32)) {
                    let out = mac(&keyed.seed, &[b"bytes", label.as_bytes(), &block.to_be_bytes()]);
                    chunk.copy_from_slice(&out[..chunk.len()]);
                }
            }
        }
        bytes
    }

    /// A random (version 4) UUID for `label`.
    pub fn uuid(&self, label: &str) -> Uuid {
        uuid::Builder::from_random_bytes(self.bytes(label)).into_uuid()
    }

    /// The id of the `n`-th event an append writes: time-ordered from the OS, derived when keyed.
    pub fn event_id(&self, n: usize) -> Uuid {
        match self.0 {
            None => Uuid::now_v7(),
            Some(_) => self.uuid(&format!("event:{n}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(key: &str) -> Entropy {
        let master = MasterKey::parse(&"11".repeat(32)).unwrap();
        Entropy::keyed(&master, AccountId(Uuid::nil()), key, "hash", DateTime::UNIX_EPOCH)
    }

    #[test]
    fn keyed_draws_repeat_and_differ_by_key_label_and_fork() {
        assert_eq!(keyed("k").bytes::<40>("a"), keyed("k").bytes::<40>("a"));
        assert_ne!(keyed("k").bytes::<16>("a"), keyed("k2").bytes::<16>("a"));
        assert_ne!(keyed("k").bytes::<16>("a"), keyed("k").bytes::<16>("b"));
        assert_ne!(keyed("k").fork("1").uuid("a"), keyed("k").fork("2").uuid("a"));
        assert_eq!(keyed("k").event_id(3), keyed("k").event_id(3));
        assert_eq!(keyed("k").fork("1").time(), Some(DateTime::UNIX_EPOCH));
        assert_eq!(Entropy::os().time(), None);
        assert_ne!(Entropy::os().bytes::<16>("a"), Entropy::os().bytes::<16>("a"));
    }

    #[tokio::test]
    async fn steps_are_numbered_within_a_scope_and_os_outside() {
        let draws = || async { (Entropy::next_step().uuid("x"), Entropy::next_step().uuid("x")) };
        let (a1, a2) = keyed("k").scope(draws()).await;
        let (b1, b2) = keyed("k").scope(draws()).await;
        assert_eq!((a1, a2), (b1, b2), "a re-run draws the same values");
        assert_ne!(a1, a2, "two steps draw different values");
        assert!(!Entropy::current().is_keyed());
        assert_eq!(format!("{:?}", keyed("k")), "Entropy(keyed)", "the seed is never printed");
    }
}
