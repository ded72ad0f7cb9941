use crate::auth::{AuthConfig, AuthRuntime};
use crate::Metrics;
use licensd_commands::Commands;
use licensd_projections::{HotModel, HotRunner, ProjectionError};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requests with larger bodies are refused with 413 before they are parsed.
    pub max_body_bytes: usize,
    /// How long a write waits for the read models to show it before answering.
    pub read_your_writes_timeout: Duration,
    pub auth: AuthConfig,
    /// Accept `http://` webhook URLs to loopback hosts (development).
    pub webhook_allow_http_loopback: bool,
    /// Where webhooks (and the test ping) may be sent.
    pub webhook_destinations: licensd_workers::destinations::DestinationPolicy,
    /// Developer API requests per key: bursts of `api_burst`, `api_per_second` sustained.
    pub api_burst: u32,
    pub api_per_second: u32,
    /// Oldest accepted `Stripe-Signature` timestamp, in seconds either side of now.
    pub stripe_signature_tolerance_secs: i64,
    pub dashboard: crate::dashboard::DashboardConfig,
    pub portal: crate::portal::PortalConfig,
    /// How long the answer to a request with an `Idempotency-Key` is kept for replay.
    pub idempotency_ttl: Duration,
    /// How long a read model may keep failing before `/healthz` answers 503.
    pub projection_stuck: Duration,
    /// Time a client has to send a request's whole body.
    pub body_read_timeout: Duration,
    /// After how long an unanswered claim of this process may be taken over by a retry.
    pub idempotency_lease: Duration,
    /// Sizes of apps' and licenses' live-session fields (version, levels, seats).
    pub live_model: crate::v1::LiveModelLimits,
    pub live: crate::live::LiveConfig,
    /// End-user accounts' limits (`LICENSD_APP_USER_*`).
    pub app_users: crate::app_users::AppUsersConfig,
    /// Protected files: the blob store and the upload limit (`LICENSD_FILE_*`, `LICENSD_BLOB_*`).
    pub files: crate::files::FilesConfig,
    /// One `licensd::access` log record per request.
    pub access_log: bool,
    /// Peers whose `Forwarded` / `X-Forwarded-For` give the client's address.
    pub trusted_proxies: crate::client_ip::TrustedProxies,
    /// This node's name in the lease rows (shown by `/healthz`).
    pub node: String,
    /// One tracing span per request (for trace export; off, a request creates no span).
    pub request_spans: bool,
    /// Rows one CSV export answers at most (`LICENSD_EXPORT_MAX_ROWS`); more follow by cursor.
    pub export_max_rows: i64,
    /// How often machines' heartbeats and live session counts are written (`LICENSD_PRESENCE_FLUSH_MS`).
    pub presence_flush: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            read_your_writes_timeout: Duration::from_secs(5),
            auth: AuthConfig::default(),
            webhook_allow_http_loopback: false,
            webhook_destinations: Default::default(),
            api_burst: 100,
            api_per_second: 50,
            stripe_signature_tolerance_secs: 300,
            dashboard: Default::default(),
            portal: Default::default(),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            projection_stuck: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            trusted_proxies: Default::default(),
            node: "licensd".into(),
            export_max_rows: 10_000,
            presence_flush: Duration::from_secs(30),
            idempotency_lease: Duration::from_secs(30),
            live_model: Default::default(),
            live: Default::default(),
            app_users: Default::default(),
            files: Default::default(),
            access_log: true,
            request_spans: false,
        }
    }
}

/// What every handler and middleware reaches through [`AppState`].
pub struct SharedState {
    pub commands: Commands,
    pub hot: Arc<HotModel>,
    pub metrics: Arc<Metrics>,
    pub config: Arc<ApiConfig>,
    pub auth: Arc<AuthRuntime>,
    pub api_limiter: Arc<crate::limits::TokenBuckets>,
    /// Sends the `test.ping` of the webhook test endpoint.
    pub webhook_sender: licensd_workers::webhooks::WebhookSender,
    pub dashboard: Arc<crate::dashboard::DashboardAuth>,
    pub portal: Arc<crate::portal::Portal>,
    /// Live WebSocket sessions; installed as the hot model's listener.
    pub live: Arc<crate::live::Live>,
    /// Softlocks and sign-up quota of end-user accounts.
    pub app_users: Arc<crate::app_users::AppUsersRuntime>,
    /// Protected files: blob store, delivery counters, limits.
    pub files: Arc<crate::files::FilesRuntime>,
    /// Machines' heartbeats and live session counts on their way to the database.
    pub presence: Arc<crate::presence::Presence>,
    /// Catches the in-memory model up on demand, one caller at a time; with the time the last
    /// catch-up started, so callers that queued behind it can share its result.
    refresher: Arc<tokio::sync::Mutex<(HotRunner, Option<std::time::Instant>)>>,
}

/// The server's state, one pointer wide. axum clones the state for every request several times
/// over (each `from_fn_with_state` layer's service, the handler's, the `State` extractor), and a
/// struct of a dozen `Arc`s cost a dozen atomic increments and decrements per clone, on counters
/// both cores touch: 6.5 % of licensd's CPU under a heartbeat load, in axum's `clone_box`.
#[derive(Clone)]
pub struct AppState(Arc<SharedState>);

impl std::ops::Deref for AppState {
    type Target = SharedState;

    fn deref(&self) -> &SharedState {
        &self.0
    }
}

/// The longest a lookup miss waits for other processes' commits to become readable.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

impl AppState {
    pub fn new(
        commands: Commands,
        hot: Arc<HotModel>,
        runner: HotRunner,
        config: ApiConfig,
    ) -> Result<Self, licensd_workers::outbound::ClientError> {
        // Live sessions find their app by the keyed digest of its WebSocket API key; only the
        // command side holds the key it is computed with. (Already installed: the same key.)
        hot.set_websocket_key_digest(Arc::new(commands.websocket_key_digester()));
        let live = Arc::new(crate::live::Live::new(config.live.clone()));
        if !hot.set_listener(Arc::new(crate::live::Push::new(live.clone()))) {
            tracing::warn!("the hot model already has a listener: live sessions get no pushes");
        }
        Ok(Self(Arc::new(SharedState {
            presence: Arc::new(crate::presence::Presence::new(config.presence_flush)),
            live,
            app_users: Arc::new(crate::app_users::AppUsersRuntime::new(&commands, config.app_users.clone())),
            files: Arc::new(crate::files::FilesRuntime::new(
                commands.store().clone(),
                hot.clone(),
                config.files.clone(),
                &config.live.files,
            )),
            auth: Arc::new(AuthRuntime::new(&commands, config.auth.clone())),
            webhook_sender: licensd_workers::webhooks::WebhookSender::new(
                Duration::from_secs(10),
                config.webhook_destinations,
            )?,
            dashboard: Arc::new(crate::dashboard::DashboardAuth::new(
                commands.master_key(),
                commands.store().clone(),
                config.dashboard.clone(),
            )),
            portal: Arc::new(crate::portal::Portal::new(
                commands.store().clone(),
                commands.master_key(),
                config.portal.clone(),
            )),
            api_limiter: Arc::new(crate::limits::TokenBuckets::new(config.api_burst, config.api_per_second)),
            commands,
            hot,
            metrics: Arc::new(Metrics::default()),
            config: Arc::new(config),
            refresher: Arc::new(tokio::sync::Mutex::new((runner, None))),
        })))
    }

    /// Brings one SQL read model up to the log's end before it is queried (read-your-writes for
    /// listings); safe next to the background tail, whose checkpoint moves compare-and-set.
    pub async fn refresh_sql(
        &self,
        projection: Arc<dyn licensd_projections::SqlProjection>,
    ) -> Result<(), ProjectionError> {
        let store = self.commands.store().clone();
        // On Postgres the catch-up reads only below the oldest transaction still running: without
        // this wait, a write answered a moment ago could be missing while any other one is open.
        store.settle(SETTLE_TIMEOUT).await?;
        licensd_projections::SqlRunner::new(store, projection, Default::default()).catch_up().await.map(drop)
    }

    /// Looks something up in the in-memory model, catching it up once on a miss (the thing may
    /// have been written a moment ago by another process); `None` when it is still missing.
    pub async fn lookup<T>(&self, find: impl Fn(&HotModel) -> Option<T>) -> Result<Option<T>, ProjectionError> {
        if let Some(found) = find(&self.hot) {
            return Ok(Some(found));
        }
        self.refresh().await?;
        Ok(find(&self.hot))
    }

    /// Reads the log up to now into the in-memory model. Used when a lookup misses: the missing
    /// thing may have been written a moment ago by another process (an operator command, another
    /// node) that the background tail has not polled yet.
    ///
    /// One catch-up runs at a time, and a caller skips its own when one started after it asked: that
    /// one already read everything committed before the caller's miss. A flood of bogus keys thus
    /// costs one cheap indexed read at a time, never a queue of them, and a genuine new key is
    /// always found (no time-based throttle that could turn a fresh key away).
    pub async fn refresh(&self) -> Result<(), ProjectionError> {
        let asked = std::time::Instant::now();
        let mut refresher = self.refresher.lock().await;
        let (runner, last_started) = &mut *refresher;
        if last_started.is_some_and(|started| started >= asked) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        // On Postgres, what another process committed just now can sit above the readers'
        // visibility horizon for a moment; without this wait a fresh key could be turned away.
        self.commands.store().settle(SETTLE_TIMEOUT).await?;
        runner.catch_up().await?;
        *last_started = Some(started);
        Ok(())
    }
}
