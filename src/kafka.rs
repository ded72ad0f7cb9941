//! Settings of Kafka as the event bus between several nodes (`LICENSD_KAFKA_*`).

use clap::Args;
use licensd_workers::kafka::KafkaConfig;
use std::time::Duration;

/// The prefix of environment variables passed to librdkafka as options: the rest of the name,
/// lower-cased with `_` read as `.`, is the option (`LICENSD_KAFKA_OPTION_SECURITY_PROTOCOL`
/// sets `security.protocol`).
pub const OPTION_PREFIX: &str = "LICENSD_KAFKA_OPTION_";

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Comma-separated Kafka brokers (host:port): every node then feeds its in-memory model from
    /// the topic the relay publishes the log to. Unset: no Kafka. Postgres only.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,

    /// The topic the relay publishes the log to (create it beforehand if the brokers do not
    /// create topics).
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_TOPIC", default_value = "licensd-events")]
    pub kafka_topic: String,

    /// Prefix of the consumer groups: each node consumes in a group of its own,
    /// `<prefix>-<LICENSD_NODE_ID>`, as each needs every partition.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_GROUP", default_value = "licensd")]
    pub kafka_group: String,

    /// How long an out-of-order message waits for the event before it, in milliseconds, before
    /// the gap is read from the Postgres log.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_GAP_MS", default_value_t = 500)]
    pub kafka_gap_ms: u64,

    /// How often the Postgres log is read while Kafka is unreachable, in milliseconds.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_FALLBACK_POLL_MS", default_value_t = 250)]
    pub kafka_fallback_poll_ms: u64,

    /// How often the broker is asked whether it answers, in milliseconds (also the answer's
    /// deadline): a node falls back to the Postgres log within about this.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_PROBE_MS", default_value_t = 1000)]
    pub kafka_probe_ms: u64,

    /// Most out-of-order messages held waiting for the event before them.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_BUFFER", default_value_t = 10_000)]
    pub kafka_buffer: usize,

    /// Most events the relay publishes before it moves its checkpoint.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_RELAY_BATCH", default_value_t = 1000)]
    pub kafka_relay_batch: usize,

    /// Longest wait of the relay between two reads of the log, in milliseconds (its own node's
    /// commits wake it at once).
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_RELAY_POLL_MS", default_value_t = 50)]
    pub kafka_relay_poll_ms: u64,

    /// Longest wait of the relay between two attempts after failures, in milliseconds (the wait
    /// doubles from the relay poll, at least 500 ms; each attempt uses a new producer).
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_RELAY_BACKOFF_MAX_MS", default_value_t = 5000)]
    pub kafka_relay_backoff_max_ms: u64,

    /// How long an event may wait for the relay, in milliseconds, before the other nodes take the
    /// relay as stalled (dead with its lease not yet expired, or cut off from the broker) and read
    /// the Postgres log until it publishes again. Below the lease TTL + renew, so that a dead
    /// relay's followers do not wait for its successor.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_RELAY_STALL_MS", default_value_t = 3000)]
    pub kafka_relay_stall_ms: u64,

    /// Partitions of the topic when it is missing and a node creates it (more partitions let
    /// the broker spread the load; each node still reads every one).
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_PARTITIONS", default_value_t = 6)]
    pub kafka_partitions: i32,

    /// Replicas of each partition when a node creates the topic; -1 takes the broker's
    /// `default.replication.factor`.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_KAFKA_REPLICATION", default_value_t = -1, allow_negative_numbers = true)]
    pub kafka_replication: i32,
}

impl KafkaArgs {
    /// The bus's settings, `None` without brokers; `node` names this node's consumer group.
    /// Refused with SQLite (one node) and for malformed options.
    pub fn config(&self, node: &str, postgres: bool) -> anyhow::Result<Option<KafkaConfig>> {
        let options = options(std::env::vars())?;
        let Some(brokers) = self.kafka_brokers.as_deref().map(str::trim).filter(|b| !b.is_empty()) else {
            if !options.is_empty() {
                anyhow::bail!("{OPTION_PREFIX}* is set but LICENSD_KAFKA_BROKERS is not");
            }
            return Ok(None);
        };
        if !postgres {
            anyhow::bail!(
                "LICENSD_KAFKA_BROKERS needs Postgres (LICENSD_DATABASE_URL=postgres://...): a SQLite database \
                 serves one node, which has no use for an event bus; unset LICENSD_KAFKA_BROKERS"
            );
        }
        let checked = |name: &str, text: &str| -> anyhow::Result<String> {
            let text = text.trim();
            if text.is_empty() || text.len() > 249 || text.chars().any(char::is_control) {
                anyhow::bail!("{name} must be 1 to 249 characters without control characters");
            }
            Ok(text.to_string())
        };
        let topic = checked("LICENSD_KAFKA_TOPIC", &self.kafka_topic)?;
        if !topic.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
            anyhow::bail!("LICENSD_KAFKA_TOPIC may hold only ASCII letters, digits, '.', '_' and '-'");
        }
        let group = checked("LICENSD_KAFKA_GROUP", &format!("{}-{node}", self.kafka_group.trim()))?;
        let positive = |name: &str, value: u64| -> anyhow::Result<Duration> {
            if value == 0 {
                anyhow::bail!("{name} must be above 0");
            }
            Ok(Duration::from_millis(value))
        };
        if self.kafka_buffer == 0 || self.kafka_relay_batch == 0 {
            anyhow::bail!("LICENSD_KAFKA_BUFFER and LICENSD_KAFKA_RELAY_BATCH must be above 0");
        }
        if self.kafka_partitions < 1 {
            anyhow::bail!("LICENSD_KAFKA_PARTITIONS must be above 0");
        }
        if self.kafka_replication == 0 || self.kafka_replication < -1 {
            anyhow::bail!("LICENSD_KAFKA_REPLICATION must be above 0, or -1 for the broker's default");
        }
        Ok(Some(KafkaConfig {
            brokers: brokers.to_string(),
            topic,
            group,
            options,
            gap: positive("LICENSD_KAFKA_GAP_MS", self.kafka_gap_ms)?,
            fallback_poll: positive("LICENSD_KAFKA_FALLBACK_POLL_MS", self.kafka_fallback_poll_ms)?,
            probe: positive("LICENSD_KAFKA_PROBE_MS", self.kafka_probe_ms)?,
            buffer: self.kafka_buffer,
            relay_batch: self.kafka_relay_batch,
            relay_poll: positive("LICENSD_KAFKA_RELAY_POLL_MS", self.kafka_relay_poll_ms)?,
            relay_backoff_max: positive("LICENSD_KAFKA_RELAY_BACKOFF_MAX_MS", self.kafka_relay_backoff_max_ms)?,
            relay_stall: positive("LICENSD_KAFKA_RELAY_STALL_MS", self.kafka_relay_stall_ms)?,
            partitions: self.kafka_partitions,
            replication: self.kafka_replication,
        }))
    }
}

/// The librdkafka options among `vars` (see [`OPTION_PREFIX`]), sorted by name.
fn options(vars: impl Iterator<Item = (String, String)>) -> anyhow::Result<Vec<(String, String)>> {
    let mut options = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix(OPTION_PREFIX) else { continue };
        let key = rest.to_ascii_lowercase().replace('_', ".");
        if key.is_empty()
            || !key.split('.').all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric()))
        {
            anyhow::bail!("{name} does not name a librdkafka option (e.g. {OPTION_PREFIX}SECURITY_PROTOCOL)");
        }
        options.push((key, value));
    }
    options.sort();
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kafka: KafkaArgs,
    }

    fn config(args: &[&str]) -> anyhow::Result<Option<KafkaConfig>> {
        let cli = Cli::try_parse_from(["licensd", "--kafka-brokers", "127.0.0.1:9092"].iter().chain(args))?;
        cli.kafka.config("node-a", true)
    }

    #[test]
    fn the_topic_settings_default_to_six_partitions_and_the_brokers_replication_and_bad_ones_are_refused() {
        let defaults = config(&[]).unwrap().unwrap();
        assert_eq!((defaults.partitions, defaults.replication), (6, -1));
        assert_eq!(defaults.relay_stall, Duration::from_millis(3000));
        let set = config(&["--kafka-partitions", "2", "--kafka-replication", "3"]).unwrap().unwrap();
        assert_eq!((set.partitions, set.replication), (2, 3));
        for bad in [
            &["--kafka-partitions", "0"][..],
            &["--kafka-partitions", "-1"],
            &["--kafka-replication", "0"],
            &["--kafka-replication", "-2"],
            &["--kafka-relay-stall-ms", "0"],
        ] {
            assert!(config(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn options_come_from_their_prefix_and_malformed_names_are_refused() {
        let vars = [
            ("LICENSD_KAFKA_OPTION_SECURITY_PROTOCOL", "SASL_SSL"),
            ("LICENSD_KAFKA_OPTION_SASL_MECHANISMS", "SCRAM-SHA-512"),
            ("LICENSD_KAFKA_TOPIC", "t"),
            ("PATH", "/bin"),
        ];
        let found = options(vars.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap();
        let expected = [("sasl.mechanisms", "SCRAM-SHA-512"), ("security.protocol", "SASL_SSL")];
        assert_eq!(found, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        for bad in ["LICENSD_KAFKA_OPTION_", "LICENSD_KAFKA_OPTION_SSL__CA", "LICENSD_KAFKA_OPTION_A-B"] {
            assert!(options([(bad.to_string(), "x".to_string())].into_iter()).is_err(), "{bad}");
        }
    }
}
