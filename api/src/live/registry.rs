//! Every live session of this server, by id, by app (initialized ones), by license (authorized
//! ones: the seats) and by resume id. Seats are decided under one lock, so the per-license
//! `maxSessions` and the per-app live session quota hold under any concurrency (50 sessions
//! racing for 5 seats get exactly 5).

use super::session::{LiveSession, SessionId};
use base64::Engine;
use dashmap::DashMap;
use licensd_domain::app_user::AppUserId;
use licensd_domain::{AppId, LicenseKey};
use rand::RngCore;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Seats {
    by_license: HashMap<LicenseKey, HashSet<SessionId>>,
    /// Sessions authorized by credentials, by app user (pushes of the 300-range events).
    by_user: HashMap<AppUserId, HashSet<SessionId>>,
    by_app: HashMap<AppId, HashSet<SessionId>>,
    total: usize,
}

/// Why a seat was refused: both are status 602 on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatRefusal {
    LicenseFull,
    AppQuotaFull,
}

#[derive(Default)]
pub struct Registry {
    sessions: DashMap<SessionId, Arc<LiveSession>>,
    by_app: DashMap<AppId, HashSet<SessionId>>,
    seats: Mutex<Seats>,
    resume: DashMap<String, SessionId>,
    /// `sessions.len()` without visiting the map's shards: the push listener reads it under the
    /// model's apply lock for every event.
    count: AtomicUsize,
}

impl Registry {
    fn seats(&self) -> std::sync::MutexGuard<'_, Seats> {
        self.seats.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn insert(&self, session: Arc<LiveSession>) {
        if self.sessions.insert(session.id, session).is_none() {
            self.count.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn get(&self, id: SessionId) -> Option<Arc<LiveSession>> {
        self.sessions.get(&id).map(|s| s.clone())
    }

    /// Every session held (a shutdown closes them all).
    pub fn all(&self) -> Vec<Arc<LiveSession>> {
        self.sessions.iter().map(|entry| entry.value().clone()).collect()
    }

    /// Logical sessions held (attached or waiting for a resume).
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions holding a seat (authorized by license).
    pub fn authorized(&self) -> usize {
        self.seats().total
    }

    pub fn initialized(&self, session: &LiveSession, app_id: AppId) {
        self.by_app.entry(app_id).or_default().insert(session.id);
    }

    /// The apps with initialized sessions.
    pub fn apps(&self) -> Vec<AppId> {
        self.by_app.iter().filter(|entry| !entry.value().is_empty()).map(|entry| *entry.key()).collect()
    }

    /// The initialized sessions of an app.
    pub fn of_app(&self, app_id: AppId) -> Vec<Arc<LiveSession>> {
        let ids: Vec<SessionId> = self.by_app.get(&app_id).map(|s| s.iter().copied().collect()).unwrap_or_default();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// Initialized sessions of the app with a socket attached (packet 10).
    pub fn online(&self, app_id: AppId) -> usize {
        self.of_app(app_id).iter().filter(|s| s.is_attached()).count()
    }

    /// Sessions authorized with `key`.
    pub fn on_license(&self, key: &LicenseKey) -> Vec<Arc<LiveSession>> {
        let ids: Vec<SessionId> =
            self.seats().by_license.get(key).map(|s| s.iter().copied().collect()).unwrap_or_default();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// Authorized sessions of the app (status 602 at initialize).
    pub fn authorized_on_app(&self, app_id: AppId) -> usize {
        self.seats().by_app.get(&app_id).map_or(0, HashSet::len)
    }

    /// Takes a seat on `key` for `session`, unless the license's `max_sessions` or the app's
    /// quota is reached. Decided under the one seats lock.
    pub fn take_seat(
        &self,
        session: SessionId,
        app_id: AppId,
        key: &LicenseKey,
        max_sessions: Option<u32>,
        app_quota: Option<u32>,
    ) -> Result<(), SeatRefusal> {
        let mut seats = self.seats();
        let on_license = seats.by_license.get(key).map_or(0, HashSet::len);
        if max_sessions.is_some_and(|max| on_license >= max as usize) {
            return Err(SeatRefusal::LicenseFull);
        }
        let on_app = seats.by_app.get(&app_id).map_or(0, HashSet::len);
        if app_quota.is_some_and(|quota| on_app >= quota as usize) {
            return Err(SeatRefusal::AppQuotaFull);
        }
        let newly = seats.by_license.entry(key.clone()).or_default().insert(session);
        seats.by_app.entry(app_id).or_default().insert(session);
        seats.total += usize::from(newly);
        Ok(())
    }

    pub fn release_seat(&self, session: SessionId, app_id: AppId, key: &LicenseKey) {
        let mut seats = self.seats();
        let released = seats.by_license.get_mut(key).is_some_and(|s| s.remove(&session));
        if seats.by_license.get(key).is_some_and(HashSet::is_empty) {
            seats.by_license.remove(key);
        }
        if let Some(sessions) = seats.by_app.get_mut(&app_id) {
            sessions.remove(&session);
            if sessions.is_empty() {
                seats.by_app.remove(&app_id);
            }
        }
        seats.total -= usize::from(released);
    }

    /// Takes a seat for a session authorized as `user_id`, unless the app's quota is reached
    /// (602); decided under the seats lock like a license's seat.
    pub fn take_user_seat(
        &self,
        session: SessionId,
        app_id: AppId,
        user_id: AppUserId,
        app_quota: Option<u32>,
    ) -> Result<(), SeatRefusal> {
        let mut seats = self.seats();
        let on_app = seats.by_app.get(&app_id).map_or(0, HashSet::len);
        if app_quota.is_some_and(|quota| on_app >= quota as usize) {
            return Err(SeatRefusal::AppQuotaFull);
        }
        let newly = seats.by_user.entry(user_id).or_default().insert(session);
        seats.by_app.entry(app_id).or_default().insert(session);
        seats.total += usize::from(newly);
        Ok(())
    }

    pub fn release_user_seat(&self, session: SessionId, app_id: AppId, user_id: AppUserId) {
        let mut seats = self.seats();
        let released = seats.by_user.get_mut(&user_id).is_some_and(|s| s.remove(&session));
        if seats.by_user.get(&user_id).is_some_and(HashSet::is_empty) {
            seats.by_user.remove(&user_id);
        }
        if let Some(sessions) = seats.by_app.get_mut(&app_id) {
            sessions.remove(&session);
            if sessions.is_empty() {
                seats.by_app.remove(&app_id);
            }
        }
        seats.total -= usize::from(released);
    }

    /// Sessions authorized as `user_id`.
    pub fn on_user(&self, user_id: AppUserId) -> Vec<Arc<LiveSession>> {
        let ids: Vec<SessionId> =
            self.seats().by_user.get(&user_id).map(|s| s.iter().copied().collect()).unwrap_or_default();
        ids.into_iter().filter_map(|id| self.get(id)).collect()
    }

    /// A fresh resume id for `session`, replacing its previous one.
    pub fn rotate_resume_id(&self, session: &LiveSession) -> String {
        let id = random_resume_id();
        let mut current = session.resume_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.resume.remove(current.as_str());
        self.resume.insert(id.clone(), session.id);
        *current = id.clone();
        id
    }

    /// The session a resume id names, if it is still resumable.
    pub fn by_resume_id(&self, resume_id: &str) -> Option<Arc<LiveSession>> {
        let id = *self.resume.get(resume_id)?;
        self.get(id).filter(|s| !s.is_ended() && !s.is_closing())
    }

    /// Forgets an ended session: its seat, its app entry, its resume id.
    pub fn remove(&self, session: &LiveSession) {
        let (init, auth, account) = {
            let mut state = session.state();
            (state.init.clone(), state.auth.take(), state.account.take())
        };
        if let (Some(init), Some(auth)) = (&init, auth) {
            self.release_seat(session.id, init.app_id, &auth.key);
        }
        if let (Some(init), Some(account)) = (&init, account) {
            self.release_user_seat(session.id, init.app_id, account.user_id);
        }
        if let Some(init) = init {
            if let Some(mut sessions) = self.by_app.get_mut(&init.app_id) {
                sessions.remove(&session.id);
            }
            self.by_app.remove_if(&init.app_id, |_, s| s.is_empty());
        }
        let resume_id = session.resume_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        self.resume.remove(&resume_id);
        if self.sessions.remove(&session.id).is_some() {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// 32 random bytes, base64url (§14.13).
pub fn random_resume_id() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_respect_the_license_and_the_app_quota() {
        let registry = Registry::default();
        let app = AppId(uuid::Uuid::new_v4());
        let key = LicenseKey::parse("A3K9-BFWX-7NP2-QHDT").unwrap();
        let (a, b, c) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        registry.take_seat(a, app, &key, Some(2), None).unwrap();
        registry.take_seat(b, app, &key, Some(2), None).unwrap();
        assert_eq!(registry.take_seat(c, app, &key, Some(2), None), Err(SeatRefusal::LicenseFull));
        assert_eq!(registry.take_seat(c, app, &key, None, Some(2)), Err(SeatRefusal::AppQuotaFull));
        registry.release_seat(a, app, &key);
        registry.take_seat(c, app, &key, Some(2), Some(2)).unwrap();
        assert_eq!((registry.authorized(), registry.authorized_on_app(app)), (2, 2));
    }
}
