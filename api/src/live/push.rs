//! Push from the log: the hot model tells [`Push`] about every applied event, and the affected
//! sessions get their panel event (subscribed ones only) and their state change (all of them),
//! event before close.
//!
//! The listener runs under the model's apply lock, which every write's read-your-writes waits
//! behind, so it does the least it can there: nothing at all while no session is live, nothing
//! for events no session cares about, and otherwise one small owned [`Job`] into an unbounded
//! queue. One task drains the queue in log order and does the registry lookups and the fan-out
//! (thousands of sessions for an app-wide event) off the lock. One consumer keeps the order of
//! events for every session; within a job a session's event is queued before its close.

use super::envelope::{event, Close};
use super::session::LiveSession;
use super::Live;
use chrono::{DateTime, Utc};
use licensd_domain::account::AccountEvent;
use licensd_domain::app::AppEvent;
use licensd_domain::app_user::{AppUserEvent, AppUserId};
use licensd_domain::license::LicenseEvent;
use licensd_domain::{AccountId, AnyEvent, AppId, LicenseKey};
use licensd_projections::{Applied, AppliedListener, HotModel};
use serde_json::{Map, Value};
use std::sync::Arc;
use tokio::sync::mpsc;

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

type Committed = Option<DateTime<Utc>>;

/// What a license event means for its sessions.
#[derive(Debug, Clone, PartialEq)]
enum LicenseChange {
    Revoked,
    Activated,
    HwidReset,
    Deleted,
    Extended(Option<DateTime<Utc>>),
}

/// What an app-user event means for the sessions signed in as the user.
#[derive(Debug, Clone, PartialEq)]
enum UserChange {
    Blacklisted,
    Unblacklisted,
    Deleted,
    PasswordChanged,
    LevelsSet(Vec<String>),
}

/// One applied event that concerns live sessions, owned so it can leave the apply lock.
#[derive(Debug, Clone, PartialEq)]
enum Job {
    License {
        key: LicenseKey,
        change: LicenseChange,
        committed: Committed,
    },
    AppPaused {
        app_id: AppId,
        committed: Committed,
    },
    AppVersion {
        app_id: AppId,
        version: String,
        committed: Committed,
    },
    User {
        user_id: AppUserId,
        change: UserChange,
        committed: Committed,
    },
    /// The merchant released one bound machine: the sessions it runs (by license, or signed in
    /// as the license's user) end.
    MachineReleased {
        key: LicenseKey,
        hwid: String,
        user: Option<AppUserId>,
        committed: Committed,
    },
}

/// The listener installed in the hot model.
pub struct Push {
    live: Arc<Live>,
    /// The dispatcher's queue; `None` outside a tokio runtime (jobs then run inline).
    queue: Option<mpsc::UnboundedSender<Job>>,
}

impl Push {
    /// A listener whose dispatcher task runs on the current runtime, when there is one.
    pub fn new(live: Arc<Live>) -> Self {
        let queue = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let (queue, jobs) = mpsc::unbounded_channel();
            runtime.spawn(dispatch(live.clone(), jobs));
            queue
        });
        Self { live, queue }
    }

    fn hand_off(&self, job: Job) {
        match &self.queue {
            Some(queue) => {
                if let Err(mpsc::error::SendError(job)) = queue.send(job) {
                    // The runtime is shutting down: nobody will write the frames anyway.
                    tracing::debug!(?job, "live push dropped: the dispatcher is gone");
                }
            }
            None => run(&self.live, job),
        }
    }
}

impl AppliedListener for Push {
    fn applied(&self, model: &HotModel, applied: &Applied<'_>) {
        // The common case on a server without live sessions: one atomic load.
        if self.live.registry.is_empty() {
            return;
        }
        let committed = Some(applied.recorded_at);
        match applied.event {
            AnyEvent::License(LicenseEvent::HwidReleased { hwid, .. }) => {
                let Ok(key) = LicenseKey::parse(applied.id) else { return };
                let user = model.with_license(&key, |license, _| license.extras.linked_user).flatten();
                self.hand_off(Job::MachineReleased { key, hwid: hwid.clone(), user, committed });
            }
            AnyEvent::License(e) => {
                let Some(change) = license_change(e) else { return };
                let Ok(key) = LicenseKey::parse(applied.id) else { return };
                self.hand_off(Job::License { key, change, committed });
            }
            AnyEvent::App(e) => {
                let Ok(app_id) = applied.id.parse::<AppId>() else { return };
                if let AppEvent::AppDisabled { .. } = e {
                    self.hand_off(Job::AppPaused { app_id, committed });
                } else if let Some(version) = super::model::version_change(e) {
                    self.hand_off(Job::AppVersion { app_id, version: version.to_string(), committed });
                }
            }
            AnyEvent::AppUser(e) => {
                let Some(change) = user_change(e) else { return };
                let Ok(user_id) = applied.id.parse::<AppUserId>() else { return };
                self.hand_off(Job::User { user_id, change, committed });
            }
            // A suspended account's apps authenticate nobody: their sessions end like a pause.
            AnyEvent::Account(AccountEvent::AccountSuspended { .. }) => {
                let Ok(account_id) = applied.id.parse::<AccountId>() else { return };
                for app in model.apps_of(account_id) {
                    self.hand_off(Job::AppPaused { app_id: app.app_id, committed });
                }
            }
            _ => {}
        }
    }
}

fn license_change(e: &LicenseEvent) -> Option<LicenseChange> {
    Some(match e {
        LicenseEvent::LicenseRevoked { .. } => LicenseChange::Revoked,
        LicenseEvent::LicenseActivated { .. } => LicenseChange::Activated,
        LicenseEvent::HwidReset { .. } => LicenseChange::HwidReset,
        LicenseEvent::LicenseDeleted { .. } => LicenseChange::Deleted,
        LicenseEvent::LicenseExtended { expires_at, .. } => LicenseChange::Extended(*expires_at),
        _ => return None,
    })
}

fn user_change(e: &AppUserEvent) -> Option<UserChange> {
    Some(match e {
        AppUserEvent::AppUserBlacklisted { .. } => UserChange::Blacklisted,
        AppUserEvent::AppUserUnblacklisted { .. } => UserChange::Unblacklisted,
        AppUserEvent::AppUserDeleted { .. } => UserChange::Deleted,
        AppUserEvent::AppUserPasswordChanged { .. } => UserChange::PasswordChanged,
        AppUserEvent::AppUserLevelsSet { levels, .. } => UserChange::LevelsSet(levels.clone()),
        _ => return None,
    })
}

/// The dispatcher: jobs in log order, one at a time.
async fn dispatch(live: Arc<Live>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = jobs.recv().await {
        run(&live, job);
    }
}

fn run(live: &Arc<Live>, job: Job) {
    match job {
        Job::License { key, change, committed } => license_event(live, &key, &change, committed),
        Job::AppPaused { app_id, committed } => pause(live, app_id, committed),
        Job::User { user_id, change, committed } => user_event(live, user_id, &change, committed),
        Job::MachineReleased { key, hwid, user, committed } => machine_released(live, &key, &hwid, user, committed),
        Job::AppVersion { app_id, version, committed } => {
            let content = Map::from_iter([("version".to_string(), Value::from(version))]);
            let text = event(APP_VERSION_CHANGED, content);
            for session in live.registry.of_app(app_id) {
                live.push_event(&session, &text, committed);
            }
        }
    }
}

fn license_event(live: &Arc<Live>, key: &LicenseKey, change: &LicenseChange, committed: Committed) {
    let plain = |code: u16| event(code, Map::new());
    for session in &live.registry.on_license(key) {
        match change {
            LicenseChange::Revoked => {
                live.push_event(session, &plain(LICENSE_BLACKLISTED), committed);
                live.clear_authorization(session);
            }
            LicenseChange::Activated => live.push_event(session, &plain(LICENSE_UNBLACKLISTED), committed),
            LicenseChange::HwidReset => live.push_event(session, &plain(LICENSE_CLIENT_ID_RESET), committed),
            LicenseChange::Deleted => live.push_event(session, &plain(LICENSE_DELETED), committed),
            LicenseChange::Extended(expires_at) => rearm(live, session, *expires_at),
        }
    }
}

/// A released machine's sessions: event 200 (its client binding was reset), then event 1 and
/// close 4100 (the panel disconnected it). Other machines' sessions on the license go on.
fn machine_released(live: &Live, key: &LicenseKey, hwid: &str, user: Option<AppUserId>, committed: Committed) {
    let by_user = user.map(|user| live.registry.on_user(user)).unwrap_or_default();
    let on_machine = |session: &Arc<LiveSession>| session.state().init.as_ref().is_some_and(|i| i.client_id == hwid);
    for session in live.registry.on_license(key).into_iter().chain(by_user).filter(on_machine) {
        live.push_event(&session, &event(LICENSE_CLIENT_ID_RESET, Map::new()), committed);
        live.push_event_then_close(&session, &event(DISCONNECT, Map::new()), committed, Close::FromPanel);
    }
}

/// The 300-range events (§14.11) to the sessions signed in as the user; blacklisting,
/// deletion and a password change clear their authorization, after the event.
fn user_event(live: &Live, user_id: AppUserId, change: &UserChange, committed: Committed) {
    let (code, content, clear) = match change {
        UserChange::Blacklisted => (USER_BLACKLISTED, Map::new(), true),
        UserChange::Unblacklisted => (USER_UNBLACKLISTED, Map::new(), false),
        UserChange::Deleted => (USER_DELETED, Map::new(), true),
        UserChange::PasswordChanged => (USER_PASSWORD_CHANGED, Map::new(), true),
        UserChange::LevelsSet(levels) => {
            // The SDK reads content as string → string: the array travels as JSON text.
            let levels = Value::from(Value::from(levels.clone()).to_string());
            (USER_LEVELS_CHANGED, Map::from_iter([("levels".to_string(), levels)]), false)
        }
    };
    let text = event(code, content);
    for session in live.registry.on_user(user_id) {
        live.push_event(&session, &text, committed);
        if clear {
            live.clear_authorization(&session);
        }
    }
}

/// The license's expiry moved: the timer armed for the old one is disarmed and a new one armed.
fn rearm(live: &Arc<Live>, session: &Arc<LiveSession>, expires_at: Option<DateTime<Utc>>) {
    let generation = live.next_generation();
    match session.state().auth.as_mut() {
        Some(auth) => auth.generation = generation,
        None => return,
    }
    session.timers.notify_waiters();
    live.arm_expiry(session, generation, expires_at);
}

/// Event 101 to subscribed sessions, then close 4101 for every session of the app.
fn pause(live: &Live, app_id: AppId, committed: Committed) {
    let text = event(APP_PAUSED, Map::new());
    for session in live.registry.of_app(app_id) {
        live.push_event_then_close(&session, &text, committed, Close::AppPaused);
    }
}

/// The merchant disconnects one session (Developer API): event 1, then close 4100.
pub fn kick(live: &Live, session: &LiveSession) {
    live.push_event_then_close(session, &event(DISCONNECT, Map::new()), None, Close::FromPanel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::session::{Initialized, Out};
    use crate::live::LiveConfig;
    use licensd_store::Position;

    fn applied_app_event(model: &HotModel, push: &Push, app_id: AppId, e: AppEvent) {
        let (stream_id, id, event) = (format!("app-{app_id}"), app_id.to_string(), AnyEvent::App(e));
        let applied = Applied {
            position: Position::START,
            stream_id: &stream_id,
            id: &id,
            event: &event,
            recorded_at: Utc::now(),
        };
        push.applied(model, &applied);
    }

    /// A subscribed, initialized session of `app_id`, with a socket attached.
    fn subscribed(live: &Live, app_id: AppId) -> Arc<LiveSession> {
        let session = Arc::new(LiveSession::new("127.0.0.1".parse().unwrap(), 60));
        live.registry.insert(session.clone());
        {
            let mut state = session.state();
            state.init = Some(Initialized { app_id, client_id: "client-1".into() });
            state.subscribed = true;
        }
        live.registry.initialized(&session, app_id);
        session.set_attached(true);
        session
    }

    fn describe(frame: Out) -> Value {
        match frame {
            Out::Text(text) | Out::Event(text, _) => serde_json::from_str(&text).unwrap(),
            Out::Binary(..) => Value::from("binary"),
            Out::Close(close) => Value::from(format!("close {}", close.code())),
        }
    }

    #[test]
    fn the_listener_queues_nothing_without_sessions_or_for_events_no_session_cares_about() {
        let live = Arc::new(Live::new(LiveConfig::default()));
        let (queue, mut jobs) = mpsc::unbounded_channel();
        let push = Push { live: live.clone(), queue: Some(queue) };
        let model = HotModel::default();
        let app_id = AppId(uuid::Uuid::new_v4());
        applied_app_event(&model, &push, app_id, AppEvent::AppDisabled { at: Utc::now() });
        assert!(jobs.try_recv().is_err(), "no live session: nothing handed on");

        subscribed(&live, app_id);
        applied_app_event(&model, &push, app_id, AppEvent::AppEnabled { at: Utc::now() });
        assert!(jobs.try_recv().is_err(), "an event no session is told about");
        applied_app_event(&model, &push, app_id, AppEvent::AppDisabled { at: Utc::now() });
        assert!(matches!(jobs.try_recv(), Ok(Job::AppPaused { app_id: a, .. }) if a == app_id));
    }

    #[tokio::test]
    async fn the_dispatcher_keeps_log_order_and_puts_the_event_before_the_close() {
        let live = Arc::new(Live::new(LiveConfig::default()));
        let push = Push::new(live.clone());
        assert!(push.queue.is_some(), "inside a runtime the work leaves the apply lock");
        let model = HotModel::default();
        let app_id = AppId(uuid::Uuid::new_v4());
        let sessions: Vec<_> = (0..50).map(|_| subscribed(&live, app_id)).collect();
        for version in ["1.0", "1.1", "1.2"] {
            applied_app_event(
                &model,
                &push,
                app_id,
                AppEvent::AppVersionChanged { version: version.into(), at: Utc::now() },
            );
        }
        applied_app_event(&model, &push, app_id, AppEvent::AppDisabled { at: Utc::now() });
        let id = u64::MAX;
        let expected = [
            serde_json::json!({"id": id, "event_type": 102, "content": {"version": "1.0"}}),
            serde_json::json!({"id": id, "event_type": 102, "content": {"version": "1.1"}}),
            serde_json::json!({"id": id, "event_type": 102, "content": {"version": "1.2"}}),
            serde_json::json!({"id": id, "event_type": 101}),
            Value::from("close 4101"),
        ];
        for session in &sessions {
            let mut frames = Vec::new();
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
            while frames.len() < expected.len() && tokio::time::Instant::now() < deadline {
                let batch = session.take_frames();
                if batch.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                frames.extend(batch.into_iter().map(describe));
            }
            assert_eq!(frames, expected);
        }
    }
}
