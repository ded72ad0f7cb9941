//! Live sessions: the Blazeauth-compatible WebSocket protocol (../shared/spec/blazeauth/
//! websocket.md) on `GET /ws`, with the self-hosted balancer answer, the Developer API's session
//! listing and kick, and pushes from the event log (the hot model's listener).
//!
//! `envelope` parses and builds frames; `session` is one logical session (it outlives its socket
//! for the resume window); `connection` drives one socket; `packets` answer packets; `registry`
//! finds sessions by app, license (the seats) and resume id; `push` turns applied events into
//! panel events; `limits` and `store` are the traffic limits and the session values.

mod connection;
mod envelope;
pub mod files;
mod http;
mod limits;
mod metrics;
mod model;
mod packets;
mod push;
mod registry;
mod session;
mod store;
mod users;

pub use http::{balancer, kick_session, list_sessions, routes};
pub use metrics::LiveMetrics;
pub use push::Push;

use crate::AppState;
use chrono::{DateTime, Utc};
use envelope::Close;
use licensd_domain::license::{License, LicenseStatus};
use registry::Registry;
use session::{LiveSession, Out};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Every limit of the live protocol (`LICENSD_LIVE_*`, README "Configuration").
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Sockets open at once; beyond it an upgrade is refused with 503.
    pub max_sessions: usize,
    /// Initialize must succeed this soon after connecting (4202).
    pub init_timeout: Duration,
    /// How long a dropped session can be resumed.
    pub resume_window: Duration,
    /// Answers kept per session for resends after a resume.
    pub resume_answers: usize,
    /// Frames queued while disconnected; beyond it the resume state is dropped.
    pub resume_queue: usize,
    pub session_actions_per_minute: u32,
    pub ip_actions_per_minute: u32,
    pub ip_block: Duration,
    pub rate_backoff: Duration,
    pub ping_interval: Duration,
    /// No pong for this long is a network drop (the resume state is kept).
    pub pong_timeout: Duration,
    /// A write blocked this long (the client stopped reading) is a network drop; the frame it
    /// was writing stays queued for the resume.
    pub write_timeout: Duration,
    /// Larger frames (text or binary, whole or fragmented) are closed with 4302.
    pub max_frame_bytes: usize,
    /// Bytes a socket reads at once (its read buffer's starting size).
    pub read_buffer_bytes: usize,
    pub store_max_entries: usize,
    pub store_max_bytes: usize,
    /// `location` of the balancer answer.
    pub location: String,
    /// `endpoint` of the balancer answer; default `ws(s)://<Host>/ws` from the request.
    pub public_endpoint: Option<String>,
    /// The listener serves TLS (the balancer then answers `wss://`).
    pub tls: bool,
    /// File delivery (packets 7, 8, 9 and the download URLs).
    pub files: files::FileDeliveryConfig,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            init_timeout: Duration::from_secs(15),
            resume_window: Duration::from_secs(120),
            resume_answers: 1024,
            resume_queue: 256,
            session_actions_per_minute: 60,
            ip_actions_per_minute: 90,
            ip_block: Duration::from_secs(300),
            rate_backoff: Duration::from_secs(60),
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            max_frame_bytes: 32 * 1024,
            read_buffer_bytes: 1024,
            store_max_entries: 64,
            store_max_bytes: 16_384,
            location: "licensd".to_string(),
            public_endpoint: None,
            tls: false,
            files: files::FileDeliveryConfig::default(),
        }
    }
}

/// The live-session runtime: one per server.
pub struct Live {
    pub config: LiveConfig,
    registry: Registry,
    ip_limits: limits::IpLimits,
    pub metrics: LiveMetrics,
    /// Sockets open now.
    sockets: AtomicUsize,
    generation: AtomicU64,
    /// Set by [`Live::shut_down`]: every socket is closed with 1000 and no new one is accepted.
    shutting_down: AtomicBool,
    /// Woken when the last open socket ends (a shutdown waits for it).
    drained: Notify,
    /// File transfers: per-app slots, daily quotas, download URLs.
    pub files: files::Delivery,
}

impl Live {
    /// Sessions of `app` open now (the dashboard's overview).
    /// Live sessions per app with any, for the overview's sum over the nodes.
    pub(crate) fn session_counts(&self) -> Vec<(licensd_domain::AppId, usize)> {
        self.registry.apps().into_iter().map(|app| (app, self.sessions_of_app(app))).collect()
    }

    pub(crate) fn sessions_of_app(&self, app: licensd_domain::AppId) -> usize {
        self.registry.of_app(app).iter().filter(|s| !s.is_ended()).count()
    }

    pub fn new(config: LiveConfig) -> Self {
        Self {
            ip_limits: limits::IpLimits::new(config.ip_actions_per_minute, config.ip_block, config.rate_backoff),
            files: files::Delivery::new(config.files.clone()),
            config,
            registry: Registry::default(),
            metrics: LiveMetrics::default(),
            sockets: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            drained: Notify::new(),
        }
    }

    /// The server is shutting down: every session gets close 1000 ("normal server shutdown",
    /// websocket.md section 5) after the frames already queued for it, and upgrades are refused.
    /// Sessions are in memory only, so none of them could be resumed after the exit anyway.
    pub fn shut_down(&self) {
        // The flag first: a socket attaching after the sweep sees it and closes itself.
        self.shutting_down.store(true, Ordering::SeqCst);
        for session in self.registry.all() {
            self.deliver(&session, Out::Close(Close::Shutdown));
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Resolves once no socket is open (the caller bounds the wait: the shutdown grace).
    pub async fn drained(&self) {
        loop {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            drained.as_mut().enable();
            if self.sockets.load(Ordering::SeqCst) == 0 {
                return;
            }
            drained.await;
        }
    }

    /// Logical sessions held (attached, or waiting for a resume).
    pub fn sessions(&self) -> usize {
        self.registry.len()
    }

    /// Live sessions signed in as the app user (Developer API, the user's detail).
    pub fn sessions_of_user(&self, user_id: licensd_domain::app_user::AppUserId) -> usize {
        self.registry.on_user(user_id).len()
    }

    pub fn authorized_sessions(&self) -> usize {
        self.registry.authorized()
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Queues a frame for the session. A session that cannot take it (its queue full while
    /// disconnected, or a close while no socket can send it) ends.
    fn deliver(&self, session: &LiveSession, frame: Out) {
        let closing = matches!(frame, Out::Close(_));
        let Some(waiting) = session.send(frame) else { return };
        if !session.is_attached() && (closing || waiting > self.config.resume_queue) {
            self.end(session);
        }
    }

    /// A panel event, to a subscribed session only.
    fn push_event(&self, session: &LiveSession, text: &str, committed: Option<DateTime<Utc>>) {
        if session.state().subscribed {
            self.deliver(session, Out::Event(text.to_string(), committed));
        }
    }

    /// A panel event (to a subscribed session) and then a close, queued together so the socket
    /// wakes once and writes both in one flush (event before close, as the spec orders them).
    fn push_event_then_close(&self, session: &LiveSession, text: &str, committed: Option<DateTime<Utc>>, close: Close) {
        let event = session.state().subscribed.then(|| Out::Event(text.to_string(), committed));
        if session.send_all(event.into_iter().chain([Out::Close(close)])).is_some() && !session.is_attached() {
            self.end(session);
        }
    }

    /// Ends a session for good: frees its seat and forgets it (no resume).
    fn end(&self, session: &LiveSession) {
        if session.end() {
            files::stop_all(session);
            self.registry.remove(session);
        }
    }

    /// Drops the session's authorization (logout, revocation); `false` when it had none.
    fn clear_authorization(&self, session: &LiveSession) -> bool {
        let (init, auth, account) = {
            let mut state = session.state();
            (state.init.clone(), state.auth.take(), state.account.take())
        };
        session.timers.notify_waiters();
        match (init, auth, account) {
            (Some(init), Some(auth), _) => {
                self.registry.release_seat(session.id, init.app_id, &auth.key);
                true
            }
            (Some(init), None, Some(account)) => {
                self.registry.release_user_seat(session.id, init.app_id, account.user_id);
                true
            }
            _ => false,
        }
    }

    /// The license the session is authorized with, as it is now: `None` when not authorized, or
    /// when the license was deleted or revoked since (§14.10: checked on every call).
    fn authorized_license(&self, state: &AppState, session: &LiveSession) -> Option<License> {
        let key = session.state().auth.as_ref()?.key.clone();
        state.hot.license(&key).filter(|l| l.status == LicenseStatus::Active)
    }

    /// Authorized by a license that is still valid, or as an app user who still may sign in
    /// (protected operations).
    fn is_authorized(&self, state: &AppState, session: &LiveSession) -> bool {
        let now = state.commands.now();
        self.authorized_license(state, session).is_some_and(|l| !l.is_expired(now))
            || self.authorized_user(state, session).is_some_and(|u| {
                let client_id = session.state().init.as_ref().map(|i| i.client_id.clone()).unwrap_or_default();
                users::coverage(state, &u, &client_id, now).valid
            })
    }

    /// The app user the session is authorized as, as they are now: `None` when not authorized
    /// by credentials, or when the user was deleted or blacklisted since.
    fn authorized_user(&self, state: &AppState, session: &LiveSession) -> Option<licensd_domain::app_user::AppUser> {
        let user_id = session.state().account.as_ref()?.user_id;
        state.hot.app_user(user_id).filter(|u| u.status == licensd_domain::app_user::AppUserStatus::Active)
    }

    /// Pushes event 2 when the authorization `generation` reaches `expires_at` (one sleeping
    /// task per authorized expiring session, not a poll; a newer generation disarms it).
    fn arm_expiry(self: &Arc<Self>, session: &Arc<LiveSession>, generation: u64, expires_at: Option<DateTime<Utc>>) {
        let Some(expires_at) = expires_at else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (live, session) = (self.clone(), session.clone());
        runtime.spawn(async move {
            let wait = (expires_at - Utc::now()).to_std().unwrap_or_default();
            let expired = tokio::time::sleep(wait);
            tokio::pin!(expired);
            loop {
                let reset = session.timers.notified();
                tokio::pin!(reset);
                reset.as_mut().enable();
                let current = session.state().generation() == Some(generation);
                if !current || session.is_ended() {
                    return;
                }
                tokio::select! {
                    _ = &mut expired => break,
                    _ = &mut reset => {}
                }
            }
            let current = session.state().generation() == Some(generation);
            if current && !session.is_ended() {
                live.push_event(&session, &envelope::event(push::SUBSCRIPTION_EXPIRED, Default::default()), None);
            }
        });
    }

    /// Counts one client action (a packet or a ping) against the session's and the IP's budget;
    /// the close to send after the current packet's answer when either is spent.
    fn count_action(&self, session: &LiveSession) -> Option<Close> {
        let now = std::time::Instant::now();
        let within_session = session.state().bucket.take(self.config.session_actions_per_minute, now);
        let within_ip = self.ip_limits.count(session.ip, now);
        (!within_session || !within_ip).then_some(Close::RateLimitHit)
    }
}
