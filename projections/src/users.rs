//! The hot model's app users: each user by id, the sign-in index (keyed login digest → user)
//! and which licenses each user holds (from the licenses' own link events, so it follows the
//! license aggregate's decision). Sign-in reads only from here and the vault.

use crate::hot::HotModel;
use dashmap::DashMap;
use licensd_domain::app_user::{AppUser, AppUserEvent, AppUserId, AppUserState};
use licensd_domain::license::{License, LicenseEvent};
use licensd_domain::{Aggregate, AppId, LicenseKey};

#[derive(Debug, Default)]
pub struct Users {
    pub(crate) by_id: DashMap<AppUserId, AppUser>,
    pub(crate) by_login: DashMap<String, AppUserId>,
    pub(crate) licenses: DashMap<AppUserId, Vec<LicenseKey>>,
}

impl Users {
    pub(crate) fn apply_user(&self, id: &str, event: &AppUserEvent) {
        let Ok(user_id) = id.parse::<AppUserId>() else { return };
        let current = self.by_id.get(&user_id).map(|u| AppUserState::Live(u.clone())).unwrap_or_default();
        match current.evolve(event) {
            AppUserState::Live(user) => {
                if matches!(event, AppUserEvent::AppUserCreated { .. }) {
                    self.by_login.insert(user.login_digest.clone(), user_id);
                }
                self.by_id.insert(user_id, user);
            }
            AppUserState::Deleted | AppUserState::Missing => {
                if let Some((_, user)) = self.by_id.remove(&user_id) {
                    self.by_login.remove_if(&user.login_digest, |_, holder| *holder == user_id);
                }
                self.licenses.remove(&user_id);
            }
        }
    }

    /// Follows a license event; `holder` is the user the license was linked to before it.
    pub(crate) fn apply_license(&self, key: &LicenseKey, holder: Option<AppUserId>, event: &LicenseEvent) {
        match event {
            LicenseEvent::LicenseLinkedToUser { user_id, .. } => {
                let mut keys = self.licenses.entry(*user_id).or_default();
                if !keys.contains(key) {
                    keys.push(key.clone());
                }
            }
            LicenseEvent::LicenseUnlinkedFromUser { user_id, .. } => self.unlink(*user_id, key),
            LicenseEvent::LicenseDeleted { .. } => {
                if let Some(user_id) = holder {
                    self.unlink(user_id, key);
                }
            }
            _ => {}
        }
    }

    fn unlink(&self, user_id: AppUserId, key: &LicenseKey) {
        if let Some(mut keys) = self.licenses.get_mut(&user_id) {
            keys.retain(|k| k != key);
        }
        self.licenses.remove_if(&user_id, |_, keys| keys.is_empty());
    }
}

impl HotModel {
    pub fn app_user(&self, user_id: AppUserId) -> Option<AppUser> {
        self.users.by_id.get(&user_id).map(|u| u.clone())
    }

    /// The user holding the login whose keyed digest is `login_digest` (the digest names the app).
    pub fn app_user_by_login(&self, login_digest: &str) -> Option<AppUser> {
        let user_id = *self.users.by_login.get(login_digest)?;
        self.app_user(user_id)
    }

    /// The licenses linked to the user that still exist, in link order.
    pub fn licenses_of_user(&self, user_id: AppUserId) -> Vec<License> {
        let keys = self.users.licenses.get(&user_id).map(|k| k.clone()).unwrap_or_default();
        keys.iter().filter_map(|key| self.license(key)).filter(|l| l.extras.linked_user == Some(user_id)).collect()
    }

    /// Every user of the app, oldest first (ties by id), for listings.
    pub fn app_users_of(&self, app_id: AppId) -> Vec<AppUser> {
        let mut users: Vec<AppUser> =
            self.users.by_id.iter().filter(|u| u.app_id == app_id).map(|u| u.value().clone()).collect();
        users.sort_by_key(|u| (u.created_at, u.user_id));
        users
    }

    pub fn app_user_count(&self) -> usize {
        self.users.by_id.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hot::tests::recorded;
    use chrono::Utc;
    use licensd_domain::{AccountId, StreamCategory};

    /// Users, their login index and their licenses follow the log, survive a snapshot (equal
    /// digests) and go with a deletion.
    #[test]
    fn users_follow_the_log_and_survive_a_snapshot() {
        let model = HotModel::default();
        let (app_id, account_id, user_id, now) = (AppId::new(), AccountId::new(), AppUserId::new(), Utc::now());
        let user_stream = StreamCategory::AppUser.stream_id(user_id);
        let key = LicenseKey::from_random([3; 16]);
        let license_stream = StreamCategory::License.stream_id(&key);
        let created = AppUserEvent::AppUserCreated {
            user_id,
            app_id,
            account_id,
            login_digest: "digest".into(),
            license_required: true,
            created_at: now,
        };
        model.apply(&recorded(1, user_stream.clone(), 1, &created)).unwrap();
        let license = LicenseEvent::LicenseCreated {
            key: key.clone(),
            app_id,
            account_id,
            expires_at: None,
            max_hwid_slots: 1,
            label: None,
            created_at: now,
        };
        model.apply(&recorded(2, license_stream.clone(), 1, &license)).unwrap();
        model
            .apply(&recorded(3, license_stream.clone(), 2, &LicenseEvent::LicenseLinkedToUser { user_id, at: now }))
            .unwrap();
        assert_eq!(model.app_user_by_login("digest").map(|u| u.user_id), Some(user_id));
        assert_eq!(model.licenses_of_user(user_id).len(), 1);

        let (bytes, _) = model.snapshot_bytes().unwrap();
        let mut restored = HotModel::default();
        restored.restore_snapshot(&bytes).unwrap();
        assert_eq!(restored.digest().unwrap(), model.digest().unwrap());
        assert_eq!(restored.licenses_of_user(user_id).len(), 1, "the link index is in the snapshot");

        let deleted = AppUserEvent::AppUserDeleted { app_id, at: now };
        for m in [&model, &restored] {
            m.apply(&recorded(4, user_stream.clone(), 2, &deleted)).unwrap();
            assert!(m.app_user_by_login("digest").is_none() && m.app_user(user_id).is_none());
        }
        assert_eq!(restored.digest().unwrap(), model.digest().unwrap());
    }
}
