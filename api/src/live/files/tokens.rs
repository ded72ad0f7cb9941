//! Download URLs of URL mode (decision 1): `GET /files/dl/<token>`, the token 32 random bytes in
//! base64url, single-use, valid for the configured time (60 s), bound to the session and the
//! file version it was issued for. Redeeming removes the entry in one step, so two racing
//! requests for one token get it once.

use super::catalog::Served;
use crate::live::session::SessionId;
use base64::Engine;
use dashmap::DashMap;
use rand::RngCore;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a token lets its bearer download.
#[derive(Debug, Clone)]
pub struct Grant {
    pub session_id: SessionId,
    pub file: Served,
    /// Whose daily quota the bytes count against.
    pub identity: String,
    pub expires: Instant,
}

#[derive(Default)]
pub struct Tokens {
    grants: DashMap<String, Grant>,
    /// When expired grants were last dropped (at most once a second, not on every issue).
    swept: Mutex<Option<Instant>>,
}

impl Tokens {
    pub fn issue(&self, grant: Grant, now: Instant) -> String {
        self.sweep(now);
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        self.grants.insert(token.clone(), grant);
        token
    }

    /// The grant, once: `None` for an unknown, used or expired token.
    pub fn redeem(&self, token: &str, now: Instant) -> Option<Grant> {
        let (_, grant) = self.grants.remove(token)?;
        (grant.expires > now).then_some(grant)
    }

    /// Grants outstanding (unused, possibly expired until the next sweep).
    pub fn outstanding(&self) -> usize {
        self.grants.len()
    }

    fn sweep(&self, now: Instant) {
        let mut swept = self.swept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if swept.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        *swept = Some(now);
        drop(swept);
        self.grants.retain(|_, grant| grant.expires > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn grant(expires: Instant) -> Grant {
        Grant {
            session_id: uuid::Uuid::new_v4(),
            file: Served::for_tests("client.dll", 1, 10),
            identity: "L:key".into(),
            expires,
        }
    }

    /// 8 threads race to redeem each of 200 tokens: every token is redeemed exactly once.
    #[test]
    fn a_token_is_redeemed_once_under_racing_requests() {
        let tokens = Arc::new(Tokens::default());
        let now = Instant::now();
        let issued: Arc<Vec<String>> =
            Arc::new((0..200).map(|_| tokens.issue(grant(now + Duration::from_secs(60)), now)).collect());
        assert!(issued.iter().all(|t| t.len() == 43), "32 bytes in base64url");
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (tokens, issued, barrier) = (tokens.clone(), issued.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    issued.iter().filter(|t| tokens.redeem(t, Instant::now()).is_some()).count()
                })
            })
            .collect();
        let redeemed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(redeemed, 200);
        assert_eq!(tokens.outstanding(), 0);
    }

    #[test]
    fn an_expired_token_is_refused_and_swept() {
        let tokens = Tokens::default();
        let now = Instant::now();
        let token = tokens.issue(grant(now + Duration::from_secs(60)), now);
        assert!(tokens.redeem(&token, now + Duration::from_secs(61)).is_none());
        let _stale = tokens.issue(grant(now + Duration::from_secs(1)), now);
        tokens.issue(grant(now + Duration::from_secs(600)), now + Duration::from_secs(5));
        assert_eq!(tokens.outstanding(), 1, "the expired grant was dropped by the next issue's sweep");
    }
}
