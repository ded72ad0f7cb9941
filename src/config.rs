//! Deployment settings, from the environment (`LICENSD_*`) or the matching flags.

use anyhow::Context;
use clap::Args;
use std::path::PathBuf;

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Folder for the embedded database and the generated master key.
    #[arg(help_heading = "Storage", long, env = "LICENSD_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// `sqlite://PATH` or `postgres://...`; default: `sqlite://<data dir>/licensd.db`.
    #[arg(help_heading = "Storage", long, env = "LICENSD_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// 32 bytes (64 hex characters or base64) sealing secrets at rest. Required with Postgres;
    /// with SQLite it is generated into the data folder on first run when unset.
    #[arg(help_heading = "Storage", long, env = "LICENSD_MASTER_KEY", global = true, hide_env_values = true)]
    pub master_key: Option<String>,

    /// A file holding the master key (as `LICENSD_MASTER_KEY` would), e.g. a mounted secret or
    /// one written by `licensd init-master-key`; used when `LICENSD_MASTER_KEY` is unset.
    #[arg(help_heading = "Storage", long, env = "LICENSD_MASTER_KEY_FILE", global = true)]
    pub master_key_file: Option<PathBuf>,

    /// Log filter (tracing's EnvFilter syntax).
    #[arg(help_heading = "Logging", long, env = "LICENSD_LOG", default_value = "info", global = true)]
    pub log: String,

    /// `text` or `json`.
    #[arg(help_heading = "Logging", long, env = "LICENSD_LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,

    /// Database connections (Postgres pool; SQLite readers).
    #[arg(help_heading = "Storage", long, env = "LICENSD_DB_MAX_CONNECTIONS", default_value_t = 8, global = true)]
    pub db_max_connections: u32,

    /// SQLite durability: `full` (survives power loss) or `normal` (survives a process crash).
    #[arg(help_heading = "Storage", long, env = "LICENSD_SQLITE_SYNCHRONOUS", default_value = "full", global = true)]
    pub sqlite_synchronous: String,

    /// Appends waiting for the writer beyond this are refused with 503.
    #[arg(help_heading = "Event log writer", long, env = "LICENSD_WRITE_QUEUE", default_value_t = 4096, global = true)]
    pub write_queue: usize,

    /// Most appends committed in one transaction.
    #[arg(help_heading = "Event log writer", long, env = "LICENSD_WRITE_BATCH", default_value_t = 256, global = true)]
    pub write_batch: usize,

    /// Most group-commit batches in flight at once: the next batch is sent while the last one's
    /// commit syncs (1 turns the pipeline off).
    #[arg(help_heading = "Event log writer", long, env = "LICENSD_WRITE_PIPELINE", default_value_t = 2, global = true)]
    pub write_pipeline: usize,

    /// Postgres: milliseconds spent finding out whether a commit whose connection broke took
    /// effect, before the append is answered "outcome unknown" (503).
    #[arg(
        help_heading = "Event log writer",
        long,
        env = "LICENSD_COMMIT_SETTLE_MS",
        default_value_t = 5000,
        global = true
    )]
    pub commit_settle_ms: u64,

    /// Postgres: milliseconds one of licensd's sessions may stay inside a transaction while
    /// licensd sends nothing before the server ends it (0 leaves the server's own setting).
    /// Every node reads the log only below the oldest transaction open anywhere in the cluster:
    /// a node frozen mid-transaction (a paused VM) holds back every node's reads, live pushes
    /// included, for at most this long.
    #[arg(
        help_heading = "Event log writer",
        long,
        env = "LICENSD_PG_IDLE_IN_TRANSACTION_MS",
        default_value_t = 10000,
        // Postgres takes at most a 32-bit count of milliseconds here.
        value_parser = clap::value_parser!(u64).range(0..=2_147_483_647),
        global = true
    )]
    pub pg_idle_in_transaction_ms: u64,

    /// Postgres: milliseconds an operator command that reads the log waits for the transactions
    /// running anywhere in the cluster when it starts to end: until then, events other processes
    /// (or the command itself) committed are not yet readable in order. Past it the command fails
    /// rather than print an incomplete answer.
    #[arg(
        help_heading = "Event log writer",
        long,
        env = "LICENSD_READ_SETTLE_MS",
        default_value_t = 10000,
        global = true
    )]
    pub read_settle_ms: u64,

    /// Streams whose folded state commands keep, so a command on a long stream (a license with
    /// many billing events) folds only the events since (0: fold from the first event every time).
    #[arg(help_heading = "Event log writer", long, env = "LICENSD_FOLDED_STREAMS", default_value_t = licensd_commands::DEFAULT_FOLDED_STREAMS, global = true)]
    pub folded_streams: u64,

    /// Snapshots of the in-memory model, so a start-up replays only the log written since.
    #[arg(help_heading = "Snapshots", long, env = "LICENSD_SNAPSHOTS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub snapshots: bool,

    /// Where the snapshot is kept; default `<data dir>/hot-model.snapshot` (with Postgres too:
    /// each node keeps its own, on a local disk).
    #[arg(help_heading = "Snapshots", long, env = "LICENSD_SNAPSHOT_PATH", global = true)]
    pub snapshot_path: Option<PathBuf>,
}

impl Config {
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("licensd.db").display()))
    }

    /// The snapshot file, if snapshots are on.
    pub fn snapshot_path(&self) -> Option<PathBuf> {
        self.snapshots.then(|| self.snapshot_path.clone().unwrap_or_else(|| self.data_dir.join("hot-model.snapshot")))
    }

    pub fn is_postgres(&self) -> bool {
        self.database_url().starts_with("postgres")
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the chosen one is printed).
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Largest accepted request body, in bytes.
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds in-flight requests get to finish after a shutdown signal.
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,

    /// Validations and heartbeats served at once; more are shed with 429 `rate_limited`.
    #[arg(help_heading = "SDK auth API", long, env = "LICENSD_AUTH_MAX_IN_FLIGHT", default_value_t = 256)]
    pub auth_max_in_flight: usize,

    /// How long the SQL read models gather commits before projecting them in one transaction.
    #[arg(help_heading = "Read models", long, env = "LICENSD_PROJECTION_PACE_MS", default_value_t = 100)]
    pub projection_pace_ms: u64,

    /// PEM certificate chain; with `LICENSD_TLS_KEY` the server speaks HTTPS only.
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// PEM private key for `LICENSD_TLS_CERT`.
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Developer API requests a key may burst.
    #[arg(help_heading = "Developer API", long, env = "LICENSD_API_BURST", default_value_t = 100)]
    pub api_burst: u32,

    /// Developer API requests per second a key may sustain.
    #[arg(help_heading = "Developer API", long, env = "LICENSD_API_PER_SECOND", default_value_t = 50)]
    pub api_per_second: u32,

    /// Delivery attempts per webhook event before it is marked failed.
    #[arg(help_heading = "Webhooks", long, env = "LICENSD_WEBHOOK_MAX_ATTEMPTS", default_value_t = 8)]
    pub webhook_max_attempts: u32,

    /// Wait after a failed webhook delivery, in milliseconds; doubles with each further failure.
    #[arg(help_heading = "Webhooks", long, env = "LICENSD_WEBHOOK_RETRY_BASE_MS", default_value_t = 5000)]
    pub webhook_retry_base_ms: u64,

    /// How long one webhook delivery may take before it counts as failed, in milliseconds.
    #[arg(help_heading = "Webhooks", long, env = "LICENSD_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,

    /// Webhook deliveries in flight at once, over all webhooks.
    #[arg(help_heading = "Webhooks", long, env = "LICENSD_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub webhook_concurrency: usize,
    /// Webhook deliveries in flight at once to any one webhook.
    #[arg(help_heading = "Webhooks", long, env = "LICENSD_WEBHOOK_PER_RECEIVER", default_value_t = 4)]
    pub webhook_per_receiver: usize,

    /// Allow webhooks to loopback receivers, over `http://` too (development only).
    #[arg(help_heading = "Webhooks", long, env = "LICENSD_WEBHOOK_ALLOW_HTTP_LOOPBACK", default_value_t = false)]
    pub webhook_allow_http_loopback: bool,

    /// Allow webhooks to private, shared and link-local addresses (receivers inside your network).
    #[arg(help_heading = "Webhooks", long, env = "LICENSD_WEBHOOK_ALLOW_PRIVATE", default_value_t = false)]
    pub webhook_allow_private: bool,

    /// `/auth/validate` (and offline activation) requests per minute per client IP.
    #[arg(help_heading = "SDK auth API", long, env = "LICENSD_VALIDATE_PER_IP", default_value_t = 30)]
    pub validate_per_ip: u32,

    /// `/auth/validate` requests per minute per license key.
    #[arg(help_heading = "SDK auth API", long, env = "LICENSD_VALIDATE_PER_KEY", default_value_t = 5)]
    pub validate_per_key: u32,

    /// `/auth/heartbeat` requests per minute per license key; 0 (the default) means no limit,
    /// as documented (heartbeats are not rate-limited at the application layer).
    #[arg(help_heading = "SDK auth API", long, env = "LICENSD_HEARTBEAT_PER_KEY", default_value_t = 0)]
    pub heartbeat_per_key: u32,

    /// `/auth/selfban` requests per minute per client IP.
    #[arg(help_heading = "SDK auth API", long, env = "LICENSD_SELFBAN_PER_IP", default_value_t = 10)]
    pub selfban_per_ip: u32,

    /// Pre-session `/auth/selfban` requests per minute per license key.
    #[arg(help_heading = "SDK auth API", long, env = "LICENSD_SELFBAN_PER_KEY", default_value_t = 3)]
    pub selfban_per_key: u32,

    /// Most entries `/auth/selfban` may add to one app's blacklists, apart from the merchant's
    /// own entries (so a leaked app secret cannot fill the merchant's lists).
    #[arg(help_heading = "SDK auth API", long, env = "LICENSD_SELFBAN_MAX_ENTRIES", default_value_t = 5_000)]
    pub selfban_max_entries: usize,

    /// SMTP server for buyer emails: `smtp://[user:pass@]host:port` (`?tls=required` for
    /// STARTTLS) or `smtps://...`. Unset: no buyer emails.
    #[arg(help_heading = "Email and portal", long, env = "LICENSD_SMTP_URL")]
    pub smtp_url: Option<String>,

    /// Sender of buyer emails.
    #[arg(
        help_heading = "Email and portal",
        long,
        env = "LICENSD_SMTP_FROM",
        default_value = "licensd <no-reply@localhost>"
    )]
    pub smtp_from: String,

    /// How often balances are compared with their low-balance alert thresholds; a merchant is
    /// emailed (through `LICENSD_SMTP_URL`) once each time the balance falls under the threshold.
    #[arg(help_heading = "Email and portal", long, env = "LICENSD_LOW_BALANCE_CHECK_MS", default_value_t = 1000)]
    pub low_balance_check_ms: u64,

    /// Self-service portal link put in buyer emails.
    #[arg(help_heading = "Email and portal", long, env = "LICENSD_PORTAL_URL")]
    pub portal_url: Option<String>,

    /// Stripe API base URL (line items the webhook left out are read from it).
    #[arg(help_heading = "Commerce", long, env = "LICENSD_STRIPE_API_BASE", default_value = "https://api.stripe.com")]
    pub stripe_api_base: String,

    /// Lemon Squeezy API base URL.
    #[arg(
        help_heading = "Commerce",
        long,
        env = "LICENSD_LEMON_API_BASE",
        default_value = "https://api.lemonsqueezy.com"
    )]
    pub lemon_api_base: String,

    /// Wait before the one automatic retry of a commerce event that failed transiently, in ms.
    #[arg(help_heading = "Commerce", long, env = "LICENSD_COMMERCE_RETRY_DELAY_MS", default_value_t = 60_000)]
    pub commerce_retry_delay_ms: u64,

    /// Accepted age of a `Stripe-Signature` timestamp, in seconds.
    #[arg(help_heading = "Commerce", long, env = "LICENSD_STRIPE_SIGNATURE_TOLERANCE_SECS", default_value_t = 300)]
    pub stripe_signature_tolerance_secs: i64,

    /// Mark the dashboard session cookie `Secure` (sent only over HTTPS, or to localhost). Turn
    /// off only to use the dashboard over plain HTTP on another host during development.
    #[arg(help_heading = "Dashboard", long, env = "LICENSD_COOKIE_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    pub cookie_secure: bool,

    /// Dashboard sign-ins checked per email before it is locked (counted before each check, in
    /// the database, so concurrent guesses and restarts do not get more).
    #[arg(help_heading = "Dashboard", long, env = "LICENSD_DASHBOARD_MAX_FAILURES", default_value_t = 5)]
    pub dashboard_max_failures: u32,

    /// The first dashboard lockout of an email, in seconds; each further one doubles it.
    #[arg(help_heading = "Dashboard", long, env = "LICENSD_DASHBOARD_LOCKOUT_SECS", default_value_t = 900)]
    pub dashboard_lockout_secs: u64,

    /// How long a failed dashboard sign-in counts towards a lock, in seconds.
    #[arg(help_heading = "Dashboard", long, env = "LICENSD_DASHBOARD_FAILURE_WINDOW_SECS", default_value_t = 900)]
    pub dashboard_failure_window_secs: u64,

    /// The longest dashboard lockout, in seconds (also the quiet time after which lockouts of an
    /// email start again from `LICENSD_DASHBOARD_LOCKOUT_SECS`).
    #[arg(help_heading = "Dashboard", long, env = "LICENSD_DASHBOARD_MAX_LOCKOUT_SECS", default_value_t = 86_400)]
    pub dashboard_max_lockout_secs: u64,

    /// Portal sign-in codes requested per client IP per 15 minutes.
    #[arg(help_heading = "Email and portal", long, env = "LICENSD_PORTAL_CHALLENGES_PER_IP", default_value_t = 10)]
    pub portal_challenges_per_ip: u32,

    /// Portal sign-in codes requested per license key per 15 minutes.
    #[arg(help_heading = "Email and portal", long, env = "LICENSD_PORTAL_CHALLENGES_PER_KEY", default_value_t = 5)]
    pub portal_challenges_per_key: u32,

    /// How long a Developer API write waits for the read models to show it, in ms. A write that
    /// committed answers 2xx either way; the wait only makes the caller's next read see it.
    #[arg(help_heading = "Developer API", long, env = "LICENSD_READ_YOUR_WRITES_TIMEOUT_MS", default_value_t = 5_000)]
    pub read_your_writes_timeout_ms: u64,

    /// How long the answer to a request with an `Idempotency-Key` is kept for replay, in seconds.
    #[arg(help_heading = "Developer API", long, env = "LICENSD_IDEMPOTENCY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_ttl_secs: u64,

    /// Rows one CSV export (`/v1/licenses.csv`, `/v1/credits/transactions.csv`) answers at most;
    /// the rest follow with the cursor in the `X-Next-Cursor` header.
    #[arg(help_heading = "Developer API", long, env = "LICENSD_EXPORT_MAX_ROWS", default_value_t = 10_000,
          value_parser = clap::value_parser!(i64).range(1..=1_000_000))]
    pub export_max_rows: i64,
    /// How often this node writes its machines' last heartbeats (shown as a machine's last seen
    /// on the license page) and its live session counts per app (summed over the nodes by
    /// `GET /v1/overview`), in milliseconds.
    #[arg(help_heading = "Developer API", long, env = "LICENSD_PRESENCE_FLUSH_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub presence_flush_ms: u64,
    /// Licenses' vault emails read per query by the start-up backfill of the email index.
    #[arg(help_heading = "Developer API", long, env = "LICENSD_EMAIL_BACKFILL_BATCH", default_value_t = 500,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub email_backfill_batch: u64,
    /// Seconds a read model may keep failing on the same event before `/healthz` answers 503.
    #[arg(help_heading = "Read models", long, env = "LICENSD_PROJECTION_STUCK_SECS", default_value_t = 60)]
    pub projection_stuck_secs: u64,
    /// Connections served at once; past it the connection idle the longest is closed first.
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Connections beyond LICENSD_MAX_CONNECTIONS being answered 429 at once; past it a new
    /// connection is closed unanswered.
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_MAX_REFUSING_CONNECTIONS", default_value_t = 4096)]
    pub max_refusing_connections: usize,

    /// Time a client has to send a request's headers (also the longest wait for the next
    /// request on a kept-alive connection), in milliseconds.
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_HEADER_READ_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_read_timeout_ms: u64,

    /// Time a client has to send a request's body, in milliseconds.
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_BODY_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_read_timeout_ms: u64,

    /// A connection that moves no byte for this long is closed, in milliseconds.
    #[arg(help_heading = "HTTP server", long, env = "LICENSD_IDLE_TIMEOUT_MS", default_value_t = 60_000)]
    pub idle_timeout_ms: u64,

    /// After how many seconds an unanswered `Idempotency-Key` claim of this process counts as
    /// abandoned, so a retry may take it over (a claim of an earlier process run is taken over at
    /// once). A takeover re-runs the request with the same derived randomness: it is safe even if
    /// the first run is alive after all, so this only bounds how long a retry answers 409.
    #[arg(help_heading = "Developer API", long, env = "LICENSD_IDEMPOTENCY_LEASE_SECS", default_value_t = 30)]
    pub idempotency_lease_secs: u64,

    /// A snapshot is written when this many seconds passed since the last and events were applied.
    #[arg(help_heading = "Snapshots", long, env = "LICENSD_SNAPSHOT_INTERVAL_SECS", default_value_t = 300)]
    pub snapshot_interval_secs: u64,

    /// A snapshot is written as soon as this many events were applied since the last.
    #[arg(help_heading = "Snapshots", long, env = "LICENSD_SNAPSHOT_EVERY_EVENTS", default_value_t = 1_000_000)]
    pub snapshot_every_events: u64,

    /// Most nonces remembered for replay protection; past it, validations and self-bans with a
    /// new nonce are refused (503 `nonce_capacity_reached`) until older ones leave the window.
    #[arg(help_heading = "SDK auth API", long, env = "LICENSD_NONCE_CAP", default_value_t = licensd_projections::DEFAULT_NONCE_CAP)]
    pub nonce_cap: usize,

    /// Most characters of an app's `version` (told to live sessions at initialize).
    #[arg(help_heading = "Developer API", long, env = "LICENSD_MAX_APP_VERSION_CHARS", default_value_t = 32)]
    pub max_app_version_chars: usize,

    /// Most `levels` one license may have (each is 1 to 16 characters).
    #[arg(help_heading = "Developer API", long, env = "LICENSD_MAX_LICENSE_LEVELS", default_value_t = 16)]
    pub max_license_levels: usize,

    /// Largest `maxSessions` (floating seats) a license may be given.
    #[arg(help_heading = "Developer API", long, env = "LICENSD_MAX_LICENSE_SESSIONS", default_value_t = 10_000)]
    pub max_license_sessions: u32,

    /// One structured access-log record per request (target `licensd::access`, level info):
    /// method, route template, status, duration, client IP; never a raw path, query or header.
    #[arg(help_heading = "Logging", long, env = "LICENSD_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,

    #[command(flatten)]
    pub live: LiveArgs,

    #[command(flatten)]
    pub app_users: AppUserArgs,

    #[command(flatten)]
    pub files: crate::files::FileArgs,

    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
}

/// Limits of apps' end-user accounts (sign-up and sign-in over live sessions).
#[derive(Debug, Clone, Args)]
pub struct AppUserArgs {
    /// Shortest app-user password, in characters (status 207).
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_PASSWORD_MIN_CHARS", default_value_t = 6)]
    pub app_user_password_min_chars: usize,
    /// Longest app-user password, in characters (status 208).
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_PASSWORD_MAX_CHARS", default_value_t = 128)]
    pub app_user_password_max_chars: usize,
    /// Argon2id memory (KiB) of new app-user password verifiers.
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_ARGON2_MEMORY_KIB", default_value_t = 19 * 1024)]
    pub app_user_argon2_memory_kib: u32,
    /// Argon2id passes of new app-user password verifiers.
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_ARGON2_ITERATIONS", default_value_t = 2)]
    pub app_user_argon2_iterations: u32,
    /// Sign-ups without a license per client IP and app per window (status 5 with retry_after).
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_SIGNUPS_PER_IP", default_value_t = 3)]
    pub app_user_signups_per_ip: u32,
    /// The window of LICENSD_APP_USER_SIGNUPS_PER_IP, in seconds.
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_SIGNUP_WINDOW_SECS", default_value_t = 86_400)]
    pub app_user_signup_window_secs: u64,
    /// Sign-in failures per login before the softlock engages (status 5).
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_LOCKOUT_FAILURES", default_value_t = 5)]
    pub app_user_lockout_failures: u32,
    /// Sign-in failures per client IP before the softlock engages (status 5).
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_IP_LOCKOUT_FAILURES", default_value_t = 30)]
    pub app_user_ip_lockout_failures: u32,
    /// Seconds app-user sign-in failures are remembered.
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_LOCKOUT_WINDOW_SECS", default_value_t = 900)]
    pub app_user_lockout_window_secs: u64,
    /// The first app-user lock's length, in seconds; each further one doubles it.
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_LOCKOUT_BASE_SECS", default_value_t = 60)]
    pub app_user_lockout_base_secs: u64,
    /// The longest app-user lock, in seconds.
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_LOCKOUT_MAX_SECS", default_value_t = 3600)]
    pub app_user_lockout_max_secs: u64,
    /// Most users one app may have (status 603 beyond); unset: no limit.
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_MAX_PER_APP")]
    pub app_user_max_per_app: Option<usize>,
    /// Password verifications running at once (more wait their turn); default: the CPU count.
    #[arg(help_heading = "App users", long, env = "LICENSD_APP_USER_MAX_CONCURRENT_VERIFIES")]
    pub app_user_max_concurrent_verifies: Option<usize>,
}

impl AppUserArgs {
    pub fn config(&self) -> licensd_api::app_users::AppUsersConfig {
        use licensd_commands::lockout::LockoutPolicy;
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        let policy = |max_failures: u32| LockoutPolicy {
            max_failures: max_failures.max(1),
            window: secs(self.app_user_lockout_window_secs),
            base: secs(self.app_user_lockout_base_secs),
            max: secs(self.app_user_lockout_max_secs.max(self.app_user_lockout_base_secs)),
        };
        let min = self.app_user_password_min_chars.max(1);
        licensd_api::app_users::AppUsersConfig {
            password_chars: min..=self.app_user_password_max_chars.max(min),
            password_cost: licensd_commands::app_users::PasswordCost {
                memory_kib: self.app_user_argon2_memory_kib.max(8),
                iterations: self.app_user_argon2_iterations.max(1),
            },
            signups_per_ip: self.app_user_signups_per_ip,
            signup_window: secs(self.app_user_signup_window_secs),
            user_lockout: policy(self.app_user_lockout_failures),
            ip_lockout: policy(self.app_user_ip_lockout_failures),
            max_users_per_app: self.app_user_max_per_app,
            max_concurrent_verifies: self
                .app_user_max_concurrent_verifies
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
                .max(1),
        }
    }
}

/// Limits of live WebSocket sessions (`/ws`); the defaults are the protocol's documented ones.
#[derive(Debug, Clone, Args)]
pub struct LiveArgs {
    /// WebSocket sockets open at once (they leave LICENSD_MAX_CONNECTIONS once upgraded);
    /// beyond it an upgrade is refused with 503.
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_MAX_SESSIONS", default_value_t = 10_000)]
    pub live_max_sessions: usize,
    /// Seconds a new socket has to initialize successfully (close 4202).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_INIT_TIMEOUT_SECS", default_value_t = 15)]
    pub live_init_timeout_secs: u64,
    /// Seconds a dropped session stays resumable (its seat stays taken meanwhile).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_RESUME_WINDOW_SECS", default_value_t = 120)]
    pub live_resume_window_secs: u64,
    /// Answers kept per session for resent packet ids.
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_RESUME_ANSWERS", default_value_t = 1024)]
    pub live_resume_answers: usize,
    /// Frames queued while a session is disconnected; beyond it its resume state is dropped.
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_RESUME_QUEUE", default_value_t = 256)]
    pub live_resume_queue: usize,
    /// Client actions (packets and pings) per session per minute (close 4201 beyond).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_SESSION_ACTIONS_PER_MINUTE", default_value_t = 60)]
    pub live_session_actions_per_minute: u32,
    /// Client actions per IP per minute; crossing it blocks the IP.
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_IP_ACTIONS_PER_MINUTE", default_value_t = 90)]
    pub live_ip_actions_per_minute: u32,
    /// Seconds an IP over its limit is blocked (HTTP 429 on upgrade, 4201 on initialize).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_IP_BLOCK_SECS", default_value_t = 300)]
    pub live_ip_block_secs: u64,
    /// Seconds a client (IP + client_id) closed for its rate must wait to initialize again.
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_RATE_BACKOFF_SECS", default_value_t = 60)]
    pub live_rate_backoff_secs: u64,
    /// Seconds between the server's pings.
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_PING_INTERVAL_SECS", default_value_t = 30)]
    pub live_ping_interval_secs: u64,
    /// Seconds without a pong after which the socket counts as dropped (resumable).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_PONG_TIMEOUT_SECS", default_value_t = 60)]
    pub live_pong_timeout_secs: u64,
    /// Seconds a write to a socket may stay blocked (a client that stops reading) before the
    /// socket counts as dropped (resumable; the frame is sent again after the resume).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_WRITE_TIMEOUT_SECS", default_value_t = 60)]
    pub live_write_timeout_secs: u64,
    /// Largest text frame, in bytes (close 4302 beyond).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_MAX_FRAME_BYTES", default_value_t = 32 * 1024)]
    pub live_max_frame_bytes: usize,
    /// Bytes each socket reads at once; its read buffer starts this large (it grows for a larger
    /// frame, up to the frame limit). Small, because an idle session should cost kilobytes.
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_READ_BUFFER_BYTES", default_value_t = 1024)]
    pub live_read_buffer_bytes: usize,
    /// Session store entries per live session (status 702 beyond).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_STORE_MAX_ENTRIES", default_value_t = 64)]
    pub live_store_max_entries: usize,
    /// Session store bytes of values per live session (status 701 beyond).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_STORE_MAX_BYTES", default_value_t = 16_384)]
    pub live_store_max_bytes: usize,
    /// `location` in the balancer answer (`GET /v1/websocket/server`).
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_LOCATION", default_value = "licensd")]
    pub live_location: String,
    /// `endpoint` in the balancer answer; default `ws(s)://<Host header>/ws`.
    #[arg(help_heading = "Live sessions", long, env = "LICENSD_LIVE_PUBLIC_ENDPOINT")]
    pub live_public_endpoint: Option<String>,
    /// File streams: chunk frames one transfer may have queued and unwritten (64 KiB each).
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_WINDOW_CHUNKS", default_value_t = 4)]
    pub file_window_chunks: usize,
    /// File transfers (streams and URL downloads) running at once per session.
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_MAX_TRANSFERS_PER_SESSION", default_value_t = 2)]
    pub file_max_transfers_per_session: usize,
    /// File transfers running at once across all sessions of one app.
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_MAX_TRANSFERS_PER_APP", default_value_t = 64)]
    pub file_max_transfers_per_app: usize,
    /// Bytes of files one identity may receive per UTC day (status 302); 0: no quota.
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_DAILY_BYTES_PER_IDENTITY", default_value_t = 20 * 1024 * 1024 * 1024)]
    pub file_daily_bytes_per_identity: u64,
    /// Bytes of that quota one transfer reserves at once (one database write per reservation,
    /// never per chunk; what it does not send is given back when it ends, and a crash loses at
    /// most this much of the day's quota per running transfer).
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_QUOTA_LEASE_BYTES", default_value_t = licensd_api::live::files::DEFAULT_QUOTA_LEASE_BYTES)]
    pub file_quota_lease_bytes: u64,
    /// Seconds a file download URL stays valid (single use).
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_URL_TTL_SECS", default_value_t = 60)]
    pub file_url_ttl_secs: u64,
    /// Base of file download URLs (e.g. `https://licensd.example.com`); default
    /// `http(s)://<Host of the WebSocket upgrade>`.
    #[arg(help_heading = "Protected files", long, env = "LICENSD_FILE_PUBLIC_BASE_URL")]
    pub file_public_base_url: Option<String>,
}

impl LiveArgs {
    pub fn config(&self, tls: bool) -> licensd_api::live::LiveConfig {
        let secs = |s: u64| std::time::Duration::from_secs(s.max(1));
        licensd_api::live::LiveConfig {
            max_sessions: self.live_max_sessions.max(1),
            init_timeout: secs(self.live_init_timeout_secs),
            resume_window: secs(self.live_resume_window_secs),
            resume_answers: self.live_resume_answers,
            resume_queue: self.live_resume_queue,
            session_actions_per_minute: self.live_session_actions_per_minute.max(1),
            ip_actions_per_minute: self.live_ip_actions_per_minute.max(1),
            ip_block: secs(self.live_ip_block_secs),
            rate_backoff: secs(self.live_rate_backoff_secs),
            ping_interval: secs(self.live_ping_interval_secs),
            pong_timeout: secs(self.live_pong_timeout_secs),
            write_timeout: secs(self.live_write_timeout_secs),
            max_frame_bytes: self.live_max_frame_bytes.max(64),
            read_buffer_bytes: self.live_read_buffer_bytes.clamp(64, 1 << 20),
            store_max_entries: self.live_store_max_entries,
            store_max_bytes: self.live_store_max_bytes,
            location: self.live_location.clone(),
            public_endpoint: self.live_public_endpoint.clone(),
            tls,
            files: licensd_api::live::files::FileDeliveryConfig {
                chunk_bytes: licensd_api::live::files::frame::CHUNK_BYTES,
                window_chunks: self.file_window_chunks.max(1),
                max_per_session: self.file_max_transfers_per_session.max(1),
                max_per_app: self.file_max_transfers_per_app.max(1),
                daily_bytes_per_identity: self.file_daily_bytes_per_identity,
                quota_lease_bytes: self.file_quota_lease_bytes.max(1),
                url_ttl: secs(self.file_url_ttl_secs),
                public_base_url: self.file_public_base_url.clone(),
            },
        }
    }
}

impl ServeConfig {
    pub fn mailer(&self) -> anyhow::Result<Option<licensd_workers::commerce::mailer::Mailer>> {
        let url = self.smtp_url.as_deref();
        url.map(|url| licensd_workers::commerce::mailer::Mailer::new(url, &self.smtp_from, self.portal_url.clone()))
            .transpose()
            .context("LICENSD_SMTP_URL or LICENSD_SMTP_FROM is invalid")
    }

    pub fn live_model(&self) -> licensd_api::LiveModelLimits {
        licensd_api::LiveModelLimits {
            max_app_version_chars: self.max_app_version_chars,
            max_license_levels: self.max_license_levels,
            max_license_sessions: self.max_license_sessions.max(1),
        }
    }

    pub fn dashboard(&self) -> licensd_api::dashboard::DashboardConfig {
        licensd_api::dashboard::DashboardConfig {
            secure_cookie: self.cookie_secure,
            max_failures: self.dashboard_max_failures.max(1),
            lockout: std::time::Duration::from_secs(self.dashboard_lockout_secs.max(1)),
            failure_window: std::time::Duration::from_secs(self.dashboard_failure_window_secs.max(1)),
            max_lockout: std::time::Duration::from_secs(self.dashboard_max_lockout_secs.max(1)),
            ..Default::default()
        }
    }

    pub fn portal(&self) -> anyhow::Result<licensd_api::portal::PortalConfig> {
        Ok(licensd_api::portal::PortalConfig {
            challenges_per_ip: self.portal_challenges_per_ip,
            challenges_per_key: self.portal_challenges_per_key,
            mailer: self.mailer()?,
            ..Default::default()
        })
    }

    pub fn commerce(&self) -> anyhow::Result<licensd_workers::commerce::CommerceConfig> {
        let mailer = self.mailer()?;
        Ok(licensd_workers::commerce::CommerceConfig {
            stripe_api_base: self.stripe_api_base.clone(),
            lemon_api_base: self.lemon_api_base.clone(),
            retry_delay: std::time::Duration::from_millis(self.commerce_retry_delay_ms),
            mailer,
            low_balance_poll: std::time::Duration::from_millis(self.low_balance_check_ms.max(10)),
            ..Default::default()
        })
    }

    pub fn snapshot_schedule(&self) -> licensd_projections::SnapshotSchedule {
        licensd_projections::SnapshotSchedule {
            interval: std::time::Duration::from_secs(self.snapshot_interval_secs.max(1)),
            every_events: self.snapshot_every_events.max(1),
        }
    }

    /// An empty in-memory model with the configured limits.
    pub fn hot_model(&self) -> licensd_projections::HotModel {
        licensd_projections::HotModel::with_nonce_limits(licensd_projections::DEFAULT_NONCE_WINDOW, self.nonce_cap)
    }

    /// How the SQL read models follow the log (the in-memory model follows every commit).
    pub fn sql_tail(&self) -> licensd_projections::TailConfig {
        let pace = std::time::Duration::from_millis(self.projection_pace_ms);
        licensd_projections::TailConfig { pace, ..Default::default() }
    }

    pub fn webhooks(&self) -> licensd_workers::webhooks::WebhookConfig {
        licensd_workers::webhooks::WebhookConfig {
            max_attempts: self.webhook_max_attempts.max(1),
            retry_base: std::time::Duration::from_millis(self.webhook_retry_base_ms),
            timeout: std::time::Duration::from_millis(self.webhook_timeout_ms.max(1)),
            concurrency: self.webhook_concurrency.max(1),
            per_webhook: self.webhook_per_receiver.max(1),
            destinations: self.webhook_destinations(),
            ..Default::default()
        }
    }

    pub fn webhook_destinations(&self) -> licensd_workers::destinations::DestinationPolicy {
        licensd_workers::destinations::DestinationPolicy {
            allow_loopback: self.webhook_allow_http_loopback,
            allow_private: self.webhook_allow_private,
        }
    }

    pub fn connection_limits(&self) -> licensd_api::ConnectionLimits {
        licensd_api::ConnectionLimits {
            max_connections: self.max_connections.max(1),
            max_refusing: self.max_refusing_connections,
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms.max(1)),
            idle_timeout: std::time::Duration::from_millis(self.idle_timeout_ms.max(1)),
        }
    }

    pub fn auth(&self) -> licensd_api::AuthConfig {
        licensd_api::AuthConfig {
            validate_per_ip: self.validate_per_ip,
            validate_per_key: self.validate_per_key,
            heartbeat_per_key: self.heartbeat_per_key,
            selfban_per_ip: self.selfban_per_ip,
            selfban_per_key: self.selfban_per_key,
            selfban_max_entries: self.selfban_max_entries,
            max_in_flight: self.auth_max_in_flight,
            ..licensd_api::AuthConfig::default()
        }
    }
}
