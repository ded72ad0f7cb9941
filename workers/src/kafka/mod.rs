//! Kafka as the event bus between several nodes (issue 19): one node's relay publishes the log
//! to a topic, and every node's follower feeds its in-memory model from it, falling back to the
//! Postgres log when the broker cannot be reached.

pub mod chain;
pub mod follower;
pub mod relay;
pub mod topic;
pub mod wire;

use rdkafka::ClientConfig;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

/// Everything the relay and the follower need; built from `LICENSD_KAFKA_*`.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    pub topic: String,
    /// This node's consumer group: each node reads every partition, so each has its own.
    pub group: String,
    /// librdkafka options passed through as given (TLS, SASL, timeouts).
    pub options: Vec<(String, String)>,
    /// How long an out-of-order message waits for its predecessor before the gap is read from
    /// the log.
    pub gap: Duration,
    /// How often the log is read while the broker is unreachable.
    pub fallback_poll: Duration,
    /// How often the broker is asked whether it is reachable (and how long it may take).
    pub probe: Duration,
    /// Most messages held waiting for their predecessor.
    pub buffer: usize,
    /// Most events the relay publishes before moving its checkpoint.
    pub relay_batch: usize,
    /// Longest wait of the relay between two reads of the log when nothing new was seen.
    pub relay_poll: Duration,
    /// Longest wait of the relay between two attempts after failures (the wait doubles from
    /// `relay_poll`, at least 500 ms).
    pub relay_backoff_max: Duration,
    /// How old the oldest unpublished event may grow before followers take the relay as
    /// stalled and read the log instead.
    pub relay_stall: Duration,
    /// Partitions of the topic when a node creates it (`topic.rs`).
    pub partitions: i32,
    /// Replicas of each partition when a node creates the topic; -1 leaves it to the broker.
    pub replication: i32,
}

/// The options' values stay out (a SASL password is one of them).
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("options", &self.options.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KafkaConfig {
    /// librdkafka's settings: the brokers and `ours`, then the pass-through options, which may
    /// override them.
    fn client(&self, ours: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in ours {
            config.set(*key, *value);
        }
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }
}

/// Where this node's in-memory model takes other nodes' events from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// No Kafka configured: the Postgres (or SQLite) log, polled.
    Postgres = 0,
    Kafka = 1,
    /// Kafka configured but unreachable (or not yet assigned its partitions): the log, polled.
    PostgresFallback = 2,
}

impl LogSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Kafka => "kafka",
            Self::PostgresFallback => "postgres-fallback",
        }
    }
}

/// Process-wide, as there is one follower and one relay per process (like the worker counters).
static SOURCE: AtomicU8 = AtomicU8::new(LogSource::Postgres as u8);
static APPLIED: AtomicU64 = AtomicU64::new(0);
static GAP_READS: AtomicU64 = AtomicU64::new(0);
static REJECTED: AtomicU64 = AtomicU64::new(0);
static PUBLISHED: AtomicU64 = AtomicU64::new(0);
/// Milliseconds from the commit of the relay's last acknowledged event to its acknowledgement.
static RELAY_LAG_MS: AtomicU64 = AtomicU64::new(0);
/// 1 while this node's relay fails to publish (from its first failed attempt to its next
/// success).
static RELAY_FAILING: AtomicU64 = AtomicU64::new(0);
/// Producers the relay dropped after a failure to build a new one.
static RELAY_RESTARTS: AtomicU64 = AtomicU64::new(0);

/// The source this node follows now (`/healthz`).
pub fn source() -> LogSource {
    match SOURCE.load(Ordering::Relaxed) {
        1 => LogSource::Kafka,
        2 => LogSource::PostgresFallback,
        _ => LogSource::Postgres,
    }
}

fn set_source(source: LogSource) {
    let was = SOURCE.swap(source as u8, Ordering::Relaxed);
    if was != source as u8 {
        tracing::info!(source = source.name(), "the in-memory model now follows {}", source.name());
    }
}

fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The Prometheus text of the Kafka bus (nothing when it is not configured).
pub fn render(out: &mut String) {
    let current = source();
    if current == LogSource::Postgres {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP licensd_log_source 1 for the source this node's in-memory model follows other nodes' events from.\n# TYPE licensd_log_source gauge"
    );
    for s in [LogSource::Kafka, LogSource::PostgresFallback] {
        let _ = writeln!(out, "licensd_log_source{{source=\"{}\"}} {}", s.name(), u64::from(s == current));
    }
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let counters = [
        ("licensd_kafka_events_applied_total", "Events this node applied from Kafka messages.", &APPLIED),
        (
            "licensd_kafka_gap_reads_total",
            "Times a gap in the relayed chain was read from the Postgres log.",
            &GAP_READS,
        ),
        (
            "licensd_kafka_messages_rejected_total",
            "Messages on the topic that were not relay messages this version reads.",
            &REJECTED,
        ),
        (
            "licensd_kafka_relay_published_total",
            "Events this node's relay published and the broker acknowledged.",
            &PUBLISHED,
        ),
        (
            "licensd_kafka_relay_producer_restarts_total",
            "Producers this node's relay replaced after a failed delivery or a fatal producer error.",
            &RELAY_RESTARTS,
        ),
    ];
    for (name, help, counter) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", load(counter));
    }
    let _ = writeln!(
        out,
        "# HELP licensd_kafka_relay_lag_seconds Time from the commit of the relay's last published event to the broker's acknowledgement (0 on nodes not running the relay).\n# TYPE licensd_kafka_relay_lag_seconds gauge\nlicensd_kafka_relay_lag_seconds {:.3}",
        load(&RELAY_LAG_MS) as f64 / 1000.0
    );
    let _ = writeln!(
        out,
        "# HELP licensd_kafka_relay_failing 1 while this node's relay cannot publish (it retries with a new producer; the lag above is then its last success's).\n# TYPE licensd_kafka_relay_failing gauge\nlicensd_kafka_relay_failing {}",
        load(&RELAY_FAILING)
    );
}
