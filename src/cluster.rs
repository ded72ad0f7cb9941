//! Settings for several nodes on one Postgres database: this node's name, the leases of the
//! single-owner roles, how often the log is polled for other nodes' commits, and the proxies
//! whose forwarding headers give the client's address.

use clap::Args;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// This node's name in the lease rows and `/healthz`; default: host name and data folder, so a
    /// node restarted in place takes its own leases back at once. Give every node its own.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_NODE_ID")]
    pub node_id: Option<String>,

    /// How long a single-owner role's lease (SQL read models, webhook dispatcher, commerce) lasts
    /// once taken or renewed, in milliseconds: a dead node's roles move to a survivor within this
    /// plus `LICENSD_LEASE_RENEW_MS`. Postgres only (SQLite is one node).
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_LEASE_TTL_MS", default_value_t = 6000)]
    pub lease_ttl_ms: u64,

    /// How often leases are renewed and free ones tried for, in milliseconds; less than
    /// `LICENSD_LEASE_TTL_MS` (a third of it leaves two renewals' worth of slack).
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_LEASE_RENEW_MS", default_value_t = 2000)]
    pub lease_renew_ms: u64,

    /// Longest wait between two reads of the log by the in-memory model when nothing new was
    /// seen, in milliseconds: bounds how late this node sees (and pushes to its live sessions)
    /// an event another node committed. Its own commits wake it at once.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_LOG_POLL_MS", default_value_t = 250)]
    pub log_poll_ms: u64,

    /// Comma-separated CIDR blocks or addresses of the proxies (load balancers) in front: a
    /// request whose socket peer is one of them has its client address taken from `Forwarded`
    /// or `X-Forwarded-For` (the rightmost hop that is not a trusted proxy). Empty: the socket's
    /// peer is always the client.
    #[arg(help_heading = "Several nodes", long, env = "LICENSD_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: String,

    #[command(flatten)]
    pub kafka: crate::kafka::KafkaArgs,
}

impl ClusterArgs {
    pub fn leases(&self, data_dir: &Path) -> anyhow::Result<licensd_workers::ownership::LeaseConfig> {
        if self.lease_renew_ms == 0 || self.lease_renew_ms >= self.lease_ttl_ms {
            anyhow::bail!(
                "LICENSD_LEASE_RENEW_MS ({}) must be above 0 and below LICENSD_LEASE_TTL_MS ({})",
                self.lease_renew_ms,
                self.lease_ttl_ms
            );
        }
        let node = match &self.node_id {
            Some(node) if !node.trim().is_empty() && node.len() <= 200 && !node.chars().any(char::is_control) => {
                node.trim().to_string()
            }
            Some(_) => anyhow::bail!("LICENSD_NODE_ID must be 1 to 200 characters without control characters"),
            None => default_node(data_dir),
        };
        Ok(licensd_workers::ownership::LeaseConfig {
            node,
            ttl: Duration::from_millis(self.lease_ttl_ms),
            renew: Duration::from_millis(self.lease_renew_ms),
        })
    }

    /// The in-memory model's tail: polls at most `LICENSD_LOG_POLL_MS` apart. With Kafka, other
    /// nodes' events come through the topic: the tail then follows this node's own commits and
    /// polls only every `LICENSD_LOG_POLL_MS`, never at the quick pace it otherwise takes after
    /// progress.
    pub fn hot_tail(&self) -> licensd_projections::TailConfig {
        let defaults = licensd_projections::TailConfig::default();
        let max_idle = Duration::from_millis(self.log_poll_ms.max(1));
        let min_idle = if self.kafka.kafka_brokers.is_some() { max_idle } else { defaults.min_idle.min(max_idle) };
        licensd_projections::TailConfig { max_idle, min_idle, ..defaults }
    }

    pub fn trusted_proxies(&self) -> anyhow::Result<licensd_api::client_ip::TrustedProxies> {
        licensd_api::client_ip::TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("LICENSD_TRUSTED_PROXIES: {e}"))
    }
}

fn default_node(data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{host}:{}", dir.display())
}
