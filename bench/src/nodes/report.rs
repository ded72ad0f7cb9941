//! The "Several nodes" section of BENCHMARKS.md, and the `nodes` key of BENCHMARKS.json.

use super::{NodesResults, Pushes};
use crate::stats::human_micros;
use std::fmt::Write;

pub const HEADING: &str = "## Several nodes (Postgres + Kafka)";
/// The section the suite writes after this one.
const BEFORE: &str = "## Where time goes";

fn percent(part: f64, whole: f64) -> String {
    if whole > 0.0 {
        format!("{:.0} %", 100.0 * part / whole)
    } else {
        "—".to_string()
    }
}

pub fn section(r: &NodesResults) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{HEADING}\n");
    let _ = writeln!(
        md,
        "`licensd-bench nodes`: up to {} release-binary nodes on one fresh Postgres database, Kafka as the \
         event bus (a tansu broker on its SQLite engine, topic of {} partitions made with the admin API), \
         {} settings: {}. **Every node, Postgres, the broker and the load generator share the same {} cores**: \
         the throughput rows show what each added node costs, not how the design scales over machines \
         (that is the written model in the README's \"Several nodes\"). The load is `/auth/validate` \
         (each answer billed: one durable append) in one closed loop of {} clients over {} logged-in \
         machines, client i on node i mod N (as a connection-level balancer spreads them), {:.0} s \
         measured; every answer is checked as the SDKs do.\n",
        r.nodes,
        r.partitions,
        if r.settings.is_empty() { "default" } else { "non-default" },
        r.settings.iter().map(|(k, v)| format!("`{k}={v}`")).collect::<Vec<_>>().join(", "),
        r.cpus,
        r.concurrency,
        r.machines,
        r.seconds
    );
    let floor = r.floors.map_or(0.0, |f| f.floor);
    let durable = r.floors.map_or(0.0, |f| f.durable_floor);
    let _ = writeln!(
        md,
        "| nodes | validations/s (all nodes) | ÷ 1 node | ÷ floor | ÷ durable floor | per node: clients, validations/s, p50 / p99, events/s applied from Kafka | relay published events/s | checked, failed |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    if let Some(f) = r.floors {
        let _ = writeln!(md, "| floor (no storage) | {:.0} | | 1 | | | | |", f.floor);
        let _ = writeln!(
            md,
            "| durable floor (floor + one Postgres append per answer) | {:.0} | | {} | 1 | | | |",
            f.durable_floor,
            percent(f.durable_floor, f.floor)
        );
    }
    for s in &r.steps {
        let per_node = s
            .per_node
            .iter()
            .map(|n| {
                format!(
                    "{}: {}, {:.0}, {} / {}, {:.0}",
                    n.node,
                    n.clients,
                    n.throughput,
                    human_micros(n.latency.p50),
                    human_micros(n.latency.p99),
                    n.applied_from_kafka_per_second
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            md,
            "| {} | {:.0} | **{:.2}×** | {} | {} | {per_node} | {:.0} | {}, {} |",
            s.nodes,
            s.throughput,
            s.ratio_to_one,
            percent(s.throughput, floor),
            percent(s.throughput, durable),
            s.published_per_second,
            s.verified,
            s.sent - s.verified
        );
    }
    md.push('\n');
    let session_node = ["A", "B", "C"][r.nodes.clamp(1, 3) - 1];
    let _ = writeln!(
        md,
        "Revocation on node A (Developer API `PUT /v1/licenses/{{key}}` revoke) → event 201 at a subscribed \
         WebSocket session on node {session_node} (one session per license; each revocation waits for its \
         push before the next). Client side, from the moment the request is sent, so the figures include \
         the commit; \"server\" is node {session_node}'s own histogram (`licensd_live_push_latency_ms`: \
         event commit → frame written).\n"
    );
    let _ = writeln!(
        md,
        "| path | revocations | sent → event 201 p50 / p99 / max | sent → API answered p50 / p99 / max | server p99 | \
         events node {session_node} applied from Kafka |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|");
    for (label, pushes) in [("through Kafka", &r.kafka), ("broker stopped: Postgres fallback", &r.fallback)] {
        if let Some(p) = pushes {
            let _ = writeln!(md, "{}", revocation_row(label, p));
        }
    }
    md.push('\n');
    if let Some(p) = &r.probe {
        md.push_str(&probe_section(p));
    }
    md
}

fn probe_section(p: &super::idle::ProbeCost) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "The Kafka probe's cost: the {} nodes idle (Kafka up, no load) for {:.0} s with `LICENSD_KAFKA_PROBE_MS` \
         at its default and then, the nodes restarted, ten times slower; transactions committed in their \
         database (`pg_stat_database.xact_commit`, which every read counts) and the CPU of its Postgres \
         backends. The difference is the probe's (each probe of a node that follows Kafka also reads the \
         relay's checkpoint and the oldest event after it).\n",
        p.nodes, p.default.seconds
    );
    let _ = writeln!(md, "| probe every | transactions/s | Postgres backends' CPU | nodes' CPU (all) |");
    let _ = writeln!(md, "|---|---|---|---|");
    for idle in [&p.default, &p.slow] {
        let _ = writeln!(
            md,
            "| {} ms | {:.1} | {:.2} % | {:.2} % |",
            idle.probe_ms, idle.transactions_per_second, idle.postgres_cpu_percent, idle.nodes_cpu_percent
        );
    }
    let _ = writeln!(
        md,
        "\nPer probe of one node: **{:.2} transactions**, **{:.0} µs** of Postgres CPU (% of one core: 100 % = one core busy).\n",
        p.transactions_per_probe, p.postgres_cpu_us_per_probe
    );
    md
}

fn revocation_row(label: &str, p: &Pushes) -> String {
    let r = &p.revocation;
    let triple = |q: &crate::stats::Percentiles| {
        format!("{} / {} / {}", human_micros(q.p50), human_micros(q.p99), human_micros(q.max))
    };
    let server = crate::live::report::server_p99(&r.server);
    format!(
        "| {label} (`logSource: {}`) | {} | **{}** | {} | {server} | {:.0} |",
        p.log_source,
        r.repetitions,
        triple(&r.client),
        triple(&r.api_answer),
        p.applied_from_kafka
    )
}

/// Replaces (or adds) the section in an existing BENCHMARKS.md.
pub fn replace_section(markdown: &str, section: &str) -> String {
    crate::report::replace_section(markdown, HEADING, section, Some(BEFORE))
}

/// `json` (BENCHMARKS.json's text) with its `nodes` key set to the results.
pub fn with_json(json: &str, r: &NodesResults) -> anyhow::Result<String> {
    crate::report::with_json_key(json, "nodes", r)
}
