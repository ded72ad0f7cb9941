//! Sign-in challenges: a 6-digit code per (license key, email) attempt, kept in the database
//! (table `portal_challenges`) so that the request for a code and the code's entry may land on
//! different nodes. Only a MAC of the code is stored; each guess is counted by one atomic update
//! before the code is compared (in constant time), so concurrent guesses on several nodes get no
//! more than `max_guesses` between them; a right code is spent by deleting the row, which only one
//! request can do. A challenge whose key and email did not match is stored all the same (so the
//! answer cannot tell) but can never be completed.

use crate::signed::{same, Signer};
use licensd_domain::LicenseKey;
use licensd_store::{SqlValue, Statement, Store, StoreError};
use rand::Rng;
use std::time::Duration;

const OPEN: &str = "INSERT INTO portal_challenges (challenge_id, license_key, code_tag, matched, guesses, expires_at)
     VALUES ($1, $2, $3, 0, 0, $4)";
/// Challenges past their expiry go as new ones are opened.
const SWEEP: &str = "DELETE FROM portal_challenges WHERE expires_at < $1";
const MATCHED: &str = "UPDATE portal_challenges SET matched = 1 WHERE challenge_id = $1";
/// Counts one guess, if guesses are left and the challenge has not expired.
const GUESS: &str = "UPDATE portal_challenges SET guesses = guesses + 1
     WHERE challenge_id = $1 AND guesses < $2 AND expires_at > $3
     RETURNING license_key, code_tag, CAST(matched AS TEXT), CAST(guesses AS TEXT)";
const SPEND: &str = "DELETE FROM portal_challenges WHERE challenge_id = $1 RETURNING challenge_id";

pub struct Challenges {
    store: Store,
    signer: Signer,
    ttl: Duration,
    max_guesses: u32,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Challenges {
    pub fn new(store: Store, key: [u8; 32], ttl: Duration, max_guesses: u32) -> Self {
        Self { store, signer: Signer::new(key), ttl, max_guesses: max_guesses.max(1) }
    }

    fn tag(&self, id: &str, code: &str) -> String {
        self.signer.tag(format!("{id}:{code}").as_bytes())
    }

    /// A new challenge for `key`; returns its id and the code to send if it turns out to match.
    pub async fn open(&self, key: &LicenseKey) -> Result<(String, String), StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
        let now = now_ms();
        let expires = now.saturating_add(self.ttl.as_millis().min(i64::MAX as u128) as i64);
        let open = [id.as_str().into(), key.to_string().into(), self.tag(&id, &code).into(), SqlValue::from(expires)];
        self.store.execute(&[Statement::new(SWEEP, [SqlValue::from(now)]), Statement::new(OPEN, open)]).await?;
        Ok((id, code))
    }

    /// Marks a challenge completable: its key and email matched and the code went out.
    pub async fn mark_matched(&self, id: &str) -> Result<(), StoreError> {
        self.store.execute(&[Statement::new(MATCHED, [id.into()])]).await.map(drop)
    }

    /// The license key when `code` is right; the challenge is spent on success and after too many
    /// guesses.
    pub async fn complete(&self, id: &str, code: &str) -> Result<Option<LicenseKey>, StoreError> {
        let guess = Statement::new(GUESS, [id.into(), i64::from(self.max_guesses).into(), now_ms().into()]);
        let Some(row) = self.store.execute_single(&guess).await?.into_iter().next() else { return Ok(None) };
        let mut cols = row.into_iter().map(Option::unwrap_or_default);
        let (key, tag, matched, guesses) = (cols.next(), cols.next(), cols.next(), cols.next());
        let right = tag.is_some_and(|tag| same(&self.tag(id, code.trim()), &tag)) && matched.as_deref() == Some("1");
        let spent = guesses.and_then(|g| g.parse::<u32>().ok()).is_none_or(|g| g >= self.max_guesses);
        if !(right || spent) {
            return Ok(None);
        }
        // Only the request whose delete removed the row may use a right code.
        let deleted = !self.store.execute_single(&Statement::new(SPEND, [id.into()])).await?.is_empty();
        Ok(key.filter(|_| right && deleted).and_then(|key| LicenseKey::parse(&key).ok()))
    }
}
