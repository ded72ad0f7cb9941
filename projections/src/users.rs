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
        keys.iter().filter_map(|key| self.license(key)).filter(|l| l.linked_user == Some(user_id)).collect()
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
