//! Push from the log: the hot model tells [`Live`] about every applied event, and the affected
//! sessions get their panel event (subscribed ones only) and their state change (all of them),
//! event before close. Runs under the model's apply lock, so it only queues frames and flips
//! session state; sockets write them.

use super::envelope::{event, Close};
use super::session::{LiveSession, Out};
use super::Live;
use licensd_domain::account::AccountEvent;
use licensd_domain::app::AppEvent;
use licensd_domain::app_user::{AppUserEvent, AppUserId};
use licensd_domain::license::LicenseEvent;
use licensd_domain::{AccountId, AnyEvent, AppId, LicenseKey};
use licensd_projections::{Applied, AppliedListener, HotModel};
use serde_json::{Map, Value};
use std::sync::Arc;

pub const DISCONNECT: u16 = 1;
pub const SUBSCRIPTION_EXPIRED: u16 = 2;
const APP_PAUSED: u16 = 101;
const APP_VERSION_CHANGED: u16 = 102;
const LICENSE_CLIENT_ID_RESET: u16 = 200;
const LICENSE_BLACKLISTED: u16 = 201;
const LICENSE_UNBLACKLISTED: u16 = 202;
const LICENSE_DELETED: u16 = 204;
const USER_BLACKLISTED: u16 = 301;
const USER_UNBLACKLISTED: u16 = 302;
const USER_DELETED: u16 = 303;
const USER_PASSWORD_CHANGED: u16 = 304;
const USER_LEVELS_CHANGED: u16 = 305;

/// The listener installed in the hot model (it needs the `Arc` to arm expiry timers).
pub struct Push(pub Arc<Live>);

impl AppliedListener for Push {
    fn applied(&self, model: &HotModel, applied: &Applied<'_>) {
        let committed = Some(applied.recorded_at);
        match applied.event {
            AnyEvent::License(e) => {
                let Ok(key) = LicenseKey::parse(applied.id) else { return };
                self.license_event(&key, e, committed);
            }
            AnyEvent::App(e) => {
                let Ok(app_id) = applied.id.parse::<AppId>() else { return };
                self.app_event(app_id, e, committed);
            }
            AnyEvent::AppUser(e) => {
                let Ok(user_id) = applied.id.parse::<AppUserId>() else { return };
                self.user_event(user_id, e, committed);
            }
            // A suspended account's apps authenticate nobody: their sessions end like a pause.
            AnyEvent::Account(AccountEvent::AccountSuspended { .. }) => {
                let Ok(account_id) = applied.id.parse::<AccountId>() else { return };
                for app in model.apps_of(account_id) {
                    self.pause(app.app_id, committed);
                }
            }
            _ => {}
        }
    }
}

impl Push {
    fn license_event(&self, key: &LicenseKey, e: &LicenseEvent, committed: Option<chrono::DateTime<chrono::Utc>>) {
        let live = &self.0;
        let sessions = live.registry.on_license(key);
        if sessions.is_empty() {
            return;
        }
        let plain = |code: u16| event(code, Map::new());
        for session in &sessions {
            match e {
                LicenseEvent::LicenseRevoked { .. } => {
                    live.push_event(session, &plain(LICENSE_BLACKLISTED), committed);
                    live.clear_authorization(session);
                }
                LicenseEvent::LicenseActivated { .. } => {
                    live.push_event(session, &plain(LICENSE_UNBLACKLISTED), committed)
                }
                LicenseEvent::HwidReset { .. } => live.push_event(session, &plain(LICENSE_CLIENT_ID_RESET), committed),
                LicenseEvent::LicenseDeleted { .. } => live.push_event(session, &plain(LICENSE_DELETED), committed),
                LicenseEvent::LicenseExtended { expires_at, .. } => self.rearm(session, *expires_at),
                _ => {}
            }
        }
    }

    /// The 300-range events (§14.11) to the sessions signed in as the user; blacklisting,
    /// deletion and a password change clear their authorization, after the event.
    fn user_event(&self, user_id: AppUserId, e: &AppUserEvent, committed: Option<chrono::DateTime<chrono::Utc>>) {
        let live = &self.0;
        for session in live.registry.on_user(user_id) {
            let (code, content, clear) = match e {
                AppUserEvent::AppUserBlacklisted { .. } => (USER_BLACKLISTED, Map::new(), true),
                AppUserEvent::AppUserUnblacklisted { .. } => (USER_UNBLACKLISTED, Map::new(), false),
                AppUserEvent::AppUserDeleted { .. } => (USER_DELETED, Map::new(), true),
                AppUserEvent::AppUserPasswordChanged { .. } => (USER_PASSWORD_CHANGED, Map::new(), true),
                AppUserEvent::AppUserLevelsSet { levels, .. } => {
                    // The SDK reads content as string → string: the array travels as JSON text.
                    let levels = Value::from(Value::from(levels.clone()).to_string());
                    (USER_LEVELS_CHANGED, Map::from_iter([("levels".to_string(), levels)]), false)
                }
                _ => continue,
            };
            live.push_event(&session, &event(code, content), committed);
            if clear {
                live.clear_authorization(&session);
            }
        }
    }

    /// The license's expiry moved: the timer armed for the old one is disarmed and a new one armed.
    fn rearm(&self, session: &Arc<LiveSession>, expires_at: Option<chrono::DateTime<chrono::Utc>>) {
        let generation = self.0.next_generation();
        match session.state().auth.as_mut() {
            Some(auth) => auth.generation = generation,
            None => return,
        }
        session.timers.notify_waiters();
        self.0.arm_expiry(session, generation, expires_at);
    }

    /// Event 101 to subscribed sessions, then close 4101 for every session of the app.
    fn pause(&self, app_id: AppId, committed: Option<chrono::DateTime<chrono::Utc>>) {
        let live = &self.0;
        for session in live.registry.of_app(app_id) {
            live.push_event(&session, &event(APP_PAUSED, Map::new()), committed);
            live.deliver(&session, Out::Close(Close::AppPaused));
        }
    }

    fn app_event(&self, app_id: AppId, e: &AppEvent, committed: Option<chrono::DateTime<chrono::Utc>>) {
        let live = &self.0;
        match e {
            AppEvent::AppDisabled { .. } => self.pause(app_id, committed),
            _ => {
                if let Some(version) = super::model::version_change(e) {
                    let content = Map::from_iter([("version".to_string(), Value::from(version))]);
                    for session in live.registry.of_app(app_id) {
                        live.push_event(&session, &event(APP_VERSION_CHANGED, content.clone()), committed);
                    }
                }
            }
        }
    }
}

/// The merchant disconnects one session (Developer API): event 1, then close 4100.
pub fn kick(live: &Live, session: &LiveSession) {
    live.push_event(session, &event(DISCONNECT, Map::new()), None);
    live.deliver(session, Out::Close(Close::FromPanel));
}
