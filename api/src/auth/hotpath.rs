//! Deciding against the in-memory license and making the outcome durable and visible.
//!
//! Decisions about one license are serialised in-process by a striped lock, so 50 machines racing
//! for its last slot see each other's bindings. The append expects the stream version the
//! in-memory model holds; if another process wrote meanwhile, the model is caught up from the log
//! and the decision is taken again. A committed append is recorded in the model at once (the
//! license entry moves forward by stream version, its bills are counted once), so the answer never
//! waits for the tail. Credits are held from the decision to that record, so concurrent requests
//! for different licenses of one account cannot overdraw it while the tail lags.

use super::AuthError;
use crate::AppState;
use licensd_commands::{Actor, CommandError};
use licensd_domain::license::{License, LicenseEvent, LicenseState};
use licensd_domain::{Aggregate, LicenseKey, StreamCategory};
use licensd_store::{ExpectedVersion, StoreError};
use std::hash::BuildHasher;
use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 1024;
const CONFLICT_RETRIES: usize = 3;

pub struct LicenseLocks {
    stripes: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl LicenseLocks {
    pub fn new() -> Self {
        Self { stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(), hasher: Default::default() }
    }

    pub async fn lock(&self, key: &LicenseKey) -> MutexGuard<'_, ()> {
        self.stripes[self.hasher.hash_one(key) as usize % STRIPES].lock().await
    }
}

/// With the license's lock held: decides, appends at the version the model holds, and records
/// the outcome in the model. Returns the license as it is afterwards.
///
/// `decide` sees the license borrowed under the model's lock of its entry (it must not write to
/// the model's licenses); the license is copied once, for the answer.
pub async fn commit(
    state: &AppState,
    key: &LicenseKey,
    decide: impl Fn(&License) -> Result<Vec<LicenseEvent>, AuthError>,
) -> Result<License, AuthError> {
    let stream = StreamCategory::License.stream_id(key);
    for _ in 0..CONFLICT_RETRIES {
        let decided = state
            .hot
            .with_license(key, |license, version| decide(license).map(|events| (license.clone(), version, events)))
            .ok_or(AuthError::InvalidKey)?;
        let (license, version, events) = decided?;
        if events.is_empty() {
            return Ok(license);
        }
        // The decision checked the balance; holding what it bills makes that check stand
        // against every other request until this one is recorded or fails.
        let hold = state.hot.hold_bills(&license, &events, state.commands.now()).map_err(super::refused_credits)?;
        let account_id = license.account_id;
        let appended = state
            .commands
            .append(&stream, ExpectedVersion::Exact(version), &events, &Actor::Client, Some(account_id))
            .await;
        match appended {
            Ok(result) => {
                // The append is durable; the model records its outcome and bills now instead of
                // waiting for the tail to read them back (which then skips them).
                let after = events.iter().fold(LicenseState::Live(license), LicenseState::evolve);
                let LicenseState::Live(after) = after else { return Err(AuthError::InvalidKey) };
                state.hot.record_append(after.clone(), result.version, &events, hold);
                return Ok(after);
            }
            Err(CommandError::Store(StoreError::WrongExpectedVersion { .. })) => {
                state.refresh().await.map_err(|_| AuthError::SystemError)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AuthError::SystemError)
}
