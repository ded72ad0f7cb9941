//! The `idempotency_keys` table: one row per (account, key), claimed before the request runs and
//! completed with its answer afterwards. Same SQL on both backends.
//!
//! A claim records the process run that made it. A claim left unanswered by a run that is gone
//! (it died between its commit and storing the answer), or older than the lease, is taken over
//! by a retry of the same request.

use licensd_commands::keyring::SealedColumn;
use licensd_commands::MasterKey;
use licensd_domain::{AccountId, Sealed};
use licensd_store::{SqlValue, Statement, Store, StoreError};
use std::sync::LazyLock;
use std::time::Duration;

/// This process run: claims made by any other run whose answer is missing are abandoned.
static RUN_ID: LazyLock<String> = LazyLock::new(|| uuid::Uuid::new_v4().to_string());

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A kept answer, replayed byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// What a claim found.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// The key was free: this request runs.
    Fresh,
    /// The same request's claim was abandoned unanswered: this request runs it again, at the
    /// time of that first claim (Unix ms).
    Resumed { claimed_at_ms: i64 },
    /// Another request holds the key: its hash, and its answer once it finished.
    Taken { request_hash: String, answer: Option<Answer> },
}

pub struct Records {
    store: Store,
    ttl: Duration,
    lease: Duration,
    /// Kept answers hold secrets shown once (app secrets, API and WebSocket keys): sealed at rest.
    key: MasterKey,
}

/// Binds a sealed answer to its account and key, so it cannot be replayed under another.
fn purpose(account: AccountId, key: &str) -> String {
    answer_purpose(&account.to_string(), key)
}

fn answer_purpose(account: &str, key: &str) -> String {
    format!("idempotent-answer:{account}:{key}")
}

/// Kept answers, for `licensd rotate-master-key` to re-seal (answers kept before sealing
/// existed are JSON and never start with `v`).
pub const SEALED_ANSWERS: SealedColumn = SealedColumn {
    name: "idempotency_keys",
    select: "SELECT account_id, idem_key, body FROM idempotency_keys \
             WHERE body LIKE 'v%' AND body NOT LIKE $1 ORDER BY account_id, idem_key LIMIT $2",
    update: "UPDATE idempotency_keys SET body = $1 WHERE account_id = $2 AND idem_key = $3 AND body = $4",
    purpose: answer_purpose,
};

impl Records {
    pub fn new(store: Store, key: MasterKey, ttl: Duration, lease: Duration) -> Self {
        Self { store, ttl, lease, key }
    }

    fn seal(&self, account: AccountId, key: &str, body: &str) -> String {
        self.key.seal(body.as_bytes(), &purpose(account, key)).0
    }

    /// A kept body in clear. Answers kept before they were sealed (JSON, never starting `v1.`
    /// or `v2.`) are read as they are.
    fn open(&self, account: AccountId, key: &str, stored: String) -> Result<String, StoreError> {
        if MasterKey::sealed_key_id(&stored).is_none() {
            return Ok(stored);
        }
        self.key
            .open_string(&Sealed(stored), &purpose(account, key))
            .map_err(|e| StoreError::Corrupt(format!("a kept idempotent answer: {e}")))
    }

    /// Takes `key` for a request with `request_hash`, or reports who holds it. The primary key
    /// makes two concurrent claims of one key end with exactly one `Fresh`.
    pub async fn claim(
        &self,
        account: AccountId,
        key: &str,
        request_hash: &str,
        now_ms: i64,
    ) -> Result<Claim, StoreError> {
        let expired_before = now_ms.saturating_sub(millis(self.ttl));
        // Expired answers are purged on the way (the index on created_at keeps this cheap), so
        // a key is free again once its answer is older than the TTL.
        self.store
            .execute(&[Statement::new("DELETE FROM idempotency_keys WHERE created_at < $1", [expired_before.into()])])
            .await?;
        let insert = Statement::new(
            "INSERT INTO idempotency_keys (account_id, idem_key, request_hash, created_at, run_id)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, idem_key) DO NOTHING",
            [account.to_string().into(), key.into(), request_hash.into(), now_ms.into(), RUN_ID.as_str().into()],
        );
        if self.store.execute(&[insert]).await? == 1 {
            return Ok(Claim::Fresh);
        }
        // One statement decides a takeover, so of two concurrent retries exactly one resumes.
        let stale_before = now_ms.saturating_sub(millis(self.lease));
        let take_over = Statement::new(
            "UPDATE idempotency_keys SET run_id = $1, leased_at = $2
             WHERE account_id = $3 AND idem_key = $4 AND request_hash = $5 AND status IS NULL
               AND (run_id IS NULL OR run_id <> $1 OR COALESCE(leased_at, created_at) < $6)",
            [
                RUN_ID.as_str().into(),
                now_ms.into(),
                account.to_string().into(),
                key.into(),
                request_hash.into(),
                stale_before.into(),
            ],
        );
        let resumed = self.store.execute(&[take_over]).await? == 1;
        let rows = self
            .store
            .query_rows(
                "SELECT request_hash, CAST(status AS TEXT), content_type, body, CAST(created_at AS TEXT)
                 FROM idempotency_keys WHERE account_id = $1 AND idem_key = $2",
                &[account.to_string().into(), key.into()],
            )
            .await?;
        let Some(mut row) = rows.into_iter().next() else {
            // Released between our insert and this read: report it as still in flight.
            return Ok(Claim::Taken { request_hash: request_hash.to_string(), answer: None });
        };
        row.resize(5, None);
        if resumed {
            let claimed_at_ms = row[4].as_deref().and_then(|at| at.parse().ok()).unwrap_or(now_ms);
            return Ok(Claim::Resumed { claimed_at_ms });
        }
        let status = row[1].as_deref().and_then(|s| s.parse::<u16>().ok());
        let answer = match status {
            Some(status) => {
                let body = self.open(account, key, row[3].take().unwrap_or_default())?;
                Some(Answer { status, content_type: row[2].take(), body })
            }
            None => None,
        };
        Ok(Claim::Taken { request_hash: row[0].take().unwrap_or_default(), answer })
    }

    /// Keeps the answer of the request that claimed `key`.
    pub async fn complete(&self, account: AccountId, key: &str, answer: &Answer) -> Result<(), StoreError> {
        let update = Statement::new(
            "UPDATE idempotency_keys SET status = $1, content_type = $2, body = $3
             WHERE account_id = $4 AND idem_key = $5",
            [
                i64::from(answer.status).into(),
                SqlValue::from(answer.content_type.clone()),
                self.seal(account, key, &answer.body).into(),
                account.to_string().into(),
                key.into(),
            ],
        );
        self.store.execute(&[update]).await.map(drop)
    }

    /// Frees `key` after a request whose outcome should not be replayed (a retry runs again).
    pub async fn release(&self, account: AccountId, key: &str) -> Result<(), StoreError> {
        let delete = Statement::new(
            "DELETE FROM idempotency_keys WHERE account_id = $1 AND idem_key = $2 AND status IS NULL",
            [account.to_string().into(), key.into()],
        );
        self.store.execute(&[delete]).await.map(drop)
    }
}
