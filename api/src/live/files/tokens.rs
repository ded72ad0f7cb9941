//! Download URLs of URL mode (decision 1): `GET /files/dl/<token>`, the token 32 random bytes in
//! base64url, single-use, valid for the configured time (60 s), bound to the session and the
//! file version it was issued for.
//!
//! Outstanding tokens are rows in the database (`file_download_tokens`, both backends), so a
//! token issued before a restart, or by another node sharing the database, can be redeemed once
//! and only once: redeeming deletes the row and reads it in one statement (one round trip), so
//! two racing requests, on any nodes, get it once. Only the token's SHA-256 is stored.

use super::catalog::{Policy, Served};
use crate::live::session::SessionId;
use base64::Engine;
use chrono::{DateTime, Utc};
use licensd_domain::AppId;
use licensd_store::{SqlValue, Statement, Store, StoreError};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicI64, Ordering};

const ISSUE: &str = "INSERT INTO file_download_tokens
     (token_digest, node, session_id, app_id, name, version, size, sha256, storage_key, identity, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Spends the token whether or not it is still valid (the caller checks `expires_at`).
const REDEEM: &str = "DELETE FROM file_download_tokens WHERE token_digest = $1
     RETURNING node, session_id, app_id, name, CAST(version AS TEXT), CAST(size AS TEXT), sha256, storage_key,
               identity, CAST(expires_at AS TEXT)";

const FORGET_EXPIRED: &str = "DELETE FROM file_download_tokens WHERE expires_at < $1";

/// What a token lets its bearer download.
#[derive(Debug, Clone)]
pub struct Grant {
    pub session_id: SessionId,
    pub file: Served,
    /// Whose daily quota the bytes count against.
    pub identity: String,
    pub expires: DateTime<Utc>,
}

/// A redeemed grant, with whether this process issued it (only then can it see the session).
#[derive(Debug, Clone)]
pub struct Redeemed {
    pub grant: Grant,
    pub issued_here: bool,
}

#[derive(Debug)]
pub struct Tokens {
    store: Store,
    /// This process, in the rows it issues: sessions live in the process that holds them.
    node: String,
    /// When expired rows were last dropped (Unix ms; at most once a minute, not on every issue).
    swept: AtomicI64,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn int(value: u64) -> SqlValue {
    SqlValue::from(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Tokens {
    pub fn new(store: Store) -> Self {
        Self { store, node: uuid::Uuid::new_v4().to_string(), swept: AtomicI64::new(i64::MIN) }
    }

    /// A new token for `grant`, stored before it is returned.
    pub async fn issue(&self, grant: Grant, now: DateTime<Utc>) -> Result<String, StoreError> {
        self.sweep(now.timestamp_millis()).await;
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let file = &grant.file;
        let row = Statement::new(
            ISSUE,
            [
                digest(&token).into(),
                self.node.clone().into(),
                grant.session_id.to_string().into(),
                file.app_id.to_string().into(),
                file.name.clone().into(),
                i64::from(file.version).into(),
                int(file.size),
                file.sha256.clone().into(),
                file.storage_key.clone().into(),
                grant.identity.clone().into(),
                grant.expires.timestamp_millis().into(),
            ],
        );
        self.store.execute_single(&row).await?;
        Ok(token)
    }

    /// The grant, once: `None` for an unknown, used or expired token (redeeming spends it).
    /// One SQL statement.
    pub async fn redeem(&self, token: &str, now: DateTime<Utc>) -> Result<Option<Redeemed>, StoreError> {
        if token.len() > 64 {
            return Ok(None);
        }
        let rows = self.store.execute_single(&Statement::new(REDEEM, [digest(token).into()])).await?;
        let Some(row) = rows.into_iter().next() else { return Ok(None) };
        let Some(redeemed) = self.parse(row) else {
            tracing::warn!("a stored download token could not be read");
            return Ok(None);
        };
        Ok((redeemed.grant.expires > now).then_some(redeemed))
    }

    fn parse(&self, row: Vec<Option<String>>) -> Option<Redeemed> {
        let mut cells = row.into_iter();
        let mut next = || cells.next().flatten();
        let node = next()?;
        let session_id = next()?.parse().ok()?;
        let app_id = AppId(next()?.parse().ok()?);
        let name = next()?;
        let version = next()?.parse().ok()?;
        let size = next()?.parse().ok()?;
        let (sha256, storage_key, identity) = (next()?, next()?, next()?);
        let expires = DateTime::from_timestamp_millis(next()?.parse().ok()?)?;
        // Delivery never reads a grant's policy: it was checked when the token was issued.
        let file = Served { app_id, name, version, size, sha256, storage_key, policy: Policy::default() };
        Some(Redeemed { grant: Grant { session_id, file, identity, expires }, issued_here: node == self.node })
    }

    /// Drops expired rows, at most once a minute per process.
    async fn sweep(&self, now_ms: i64) {
        let last = self.swept.load(Ordering::Acquire);
        if now_ms.saturating_sub(last) < 60_000
            || self.swept.compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            return;
        }
        if let Err(error) = self.store.execute_single(&Statement::new(FORGET_EXPIRED, [now_ms.into()])).await {
            tracing::warn!(%error, "expired download tokens not dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licensd_store::testing::on_both_backends;
    use std::sync::Arc;
    use std::time::Duration;

    fn grant(expires: DateTime<Utc>) -> Grant {
        Grant {
            session_id: uuid::Uuid::new_v4(),
            file: Served::for_tests("client.dll", 1, 10),
            identity: "license:key".into(),
            expires,
        }
    }

    /// Two processes (two `Tokens` on one database) race to redeem each of 50 tokens: every
    /// token is redeemed exactly once, and only the issuing process sees it as its own.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_is_redeemed_once_across_processes() {
        on_both_backends(|store| async move {
            let nodes = [Arc::new(Tokens::new(store.clone())), Arc::new(Tokens::new(store.clone()))];
            let expires = Utc::now() + Duration::from_secs(60);
            let mut issued = Vec::new();
            for _ in 0..50 {
                issued.push(nodes[0].issue(grant(expires), Utc::now()).await.unwrap());
            }
            assert!(issued.iter().all(|t| t.len() == 43), "32 bytes in base64url");
            let issued = Arc::new(issued);
            let racers: Vec<_> = (0..4)
                .map(|i| {
                    let (tokens, issued) = (nodes[i % 2].clone(), issued.clone());
                    tokio::spawn(async move {
                        let mut won = (0, 0);
                        for token in issued.iter() {
                            if let Some(redeemed) = tokens.redeem(token, Utc::now()).await.unwrap() {
                                assert_eq!(redeemed.grant.file.name, "client.dll");
                                if redeemed.issued_here {
                                    won.0 += 1;
                                } else {
                                    won.1 += 1;
                                }
                            }
                        }
                        (i % 2, won)
                    })
                })
                .collect();
            let mut total = 0;
            for racer in racers {
                let (node, (own, foreign)) = racer.await.unwrap();
                assert_eq!(if node == 0 { foreign } else { own }, 0, "only the issuer sees its own tokens as its own");
                total += own + foreign;
            }
            assert_eq!(total, 50);
            assert!(nodes[1].redeem(&issued[0], Utc::now()).await.unwrap().is_none(), "used");
        })
        .await;
    }

    #[tokio::test]
    async fn an_expired_or_unknown_token_is_refused() {
        on_both_backends(|store| async move {
            let tokens = Tokens::new(store);
            let now = Utc::now();
            let token = tokens.issue(grant(now + Duration::from_secs(60)), now).await.unwrap();
            assert!(tokens.redeem(&token, now + Duration::from_secs(61)).await.unwrap().is_none());
            let fresh = tokens.issue(grant(now + Duration::from_secs(60)), now).await.unwrap();
            assert!(tokens.redeem(&token, now).await.unwrap().is_none(), "an expired redemption spent it");
            assert!(tokens.redeem("nonsense", now).await.unwrap().is_none());
            assert!(tokens.redeem(&"x".repeat(5000), now).await.unwrap().is_none());
            assert!(tokens.redeem(&fresh, now).await.unwrap().is_some());
        })
        .await;
    }
}
