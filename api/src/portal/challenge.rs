//! Sign-in challenges: a 6-digit code per (license key, email) attempt, kept in memory with a
//! short TTL, single-use, a few guesses at most. A challenge whose key and email did not match
//! is stored all the same (so the answer cannot tell) but can never be completed.

use crate::signed::{same, Signer};
use licensd_domain::LicenseKey;
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug)]
struct Challenge {
    key: LicenseKey,
    /// MAC of the code; the code itself only goes into the email.
    code_tag: String,
    /// Set once the key and email were found to match (and the code was sent).
    matched: bool,
    guesses: u32,
}

pub struct Challenges {
    entries: moka::sync::Cache<String, Arc<Mutex<Challenge>>>,
    signer: Signer,
    max_guesses: u32,
}

impl Challenges {
    pub fn new(key: [u8; 32], ttl: Duration, max_guesses: u32) -> Self {
        Self {
            entries: moka::sync::Cache::builder().max_capacity(1_000_000).time_to_live(ttl).build(),
            signer: Signer::new(key),
            max_guesses: max_guesses.max(1),
        }
    }

    fn tag(&self, id: &str, code: &str) -> String {
        self.signer.tag(format!("{id}:{code}").as_bytes())
    }

    /// A new challenge for `key`; returns its id and the code to send if it turns out to match.
    pub fn open(&self, key: LicenseKey) -> (String, String) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
        let challenge = Challenge { key, code_tag: self.tag(&id, &code), matched: false, guesses: 0 };
        self.entries.insert(id.clone(), Arc::new(Mutex::new(challenge)));
        (id, code)
    }

    /// Marks a challenge completable: its key and email matched and the code went out.
    pub fn mark_matched(&self, id: &str) {
        if let Some(entry) = self.entries.get(id) {
            if let Ok(mut challenge) = entry.lock() {
                challenge.matched = true;
            }
        }
    }

    /// The license key when `code` is right; the challenge is spent on success and after too many
    /// guesses.
    pub fn complete(&self, id: &str, code: &str) -> Option<LicenseKey> {
        let entry = self.entries.get(id)?;
        let mut challenge = entry.lock().ok()?;
        challenge.guesses += 1;
        let right = same(&self.tag(id, code.trim()), &challenge.code_tag) && challenge.matched;
        if right || challenge.guesses >= self.max_guesses {
            self.entries.invalidate(id);
        }
        right.then(|| challenge.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> LicenseKey {
        LicenseKey::parse("AAAA-BBBB-CCCC-DDDD").unwrap()
    }

    #[test]
    fn a_matched_challenge_completes_once() {
        let challenges = Challenges::new([1; 32], Duration::from_secs(60), 5);
        let (id, code) = challenges.open(key());
        challenges.mark_matched(&id);
        assert_eq!(challenges.complete(&id, &code), Some(key()));
        assert_eq!(challenges.complete(&id, &code), None, "single use");
    }

    #[test]
    fn unmatched_challenges_never_complete_and_guesses_are_bounded() {
        let challenges = Challenges::new([1; 32], Duration::from_secs(60), 3);
        let (id, code) = challenges.open(key());
        assert_eq!(challenges.complete(&id, &code), None, "key and email did not match");
        let (id, code) = challenges.open(key());
        challenges.mark_matched(&id);
        let wrong = if code == "000000" { "000001" } else { "000000" };
        assert_eq!(challenges.complete(&id, wrong), None);
        assert_eq!(challenges.complete(&id, wrong), None);
        assert_eq!(challenges.complete(&id, wrong), None);
        assert_eq!(challenges.complete(&id, &code), None, "spent after three wrong guesses");
    }
}
