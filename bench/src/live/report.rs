//! The "Live sessions" section of BENCHMARKS.md, every figure next to its target.

use super::{LiveResults, ServerPushes, TARGET_BYTES_PER_SESSION, TARGET_FANOUT_P99_MS, TARGET_REVOCATION_P99_MS};
use crate::stats::human_micros;
use std::fmt::Write;

pub const HEADING: &str = "## Live sessions (WebSocket, SQLite)";
/// The section the suite writes after the live one.
const BEFORE: &str = "## Where time goes";

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

pub(crate) fn server_p99(s: &ServerPushes) -> String {
    match s.p99_at_most_ms {
        Some(ms) => format!("≤ {ms} ms ({} frames)", s.count),
        None if s.count == 0 => "no frames".to_string(),
        None => format!("> 1000 ms ({} frames)", s.count),
    }
}

pub fn section(live: &LiveResults) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "{HEADING}\n");
    let _ = writeln!(
        md,
        "The release binary on SQLite; clients are real WebSocket sessions (tokio-tungstenite) from \
         127.0.0.x source addresses, on the same two cores as the server. \"Sent\" is when the client \
         sends the Developer API request that commits the event: the commit is later, so client \
         figures are upper bounds. \"Server\" is licensd's own histogram \
         (`licensd_live_push_latency_ms`: event commit → frame written), read from `/metrics` before \
         and after the phase. Open-file limit: server {} (hard {}), client {} (hard {}).\n",
        live.limits.server_soft, live.limits.server_hard, live.limits.client_soft, live.limits.client_hard
    );
    let _ = writeln!(md, "| measure | figure | target |");
    let _ = writeln!(md, "|---|---|---|");
    if let Some(h) = &live.held {
        let _ = writeln!(
            md,
            "| sessions held (initialized, authorized by license, subscribed) | {} of {} asked ({} failed), opened in \
             {:.1} s by {} client process(es) over {} source addresses; server counts {} authorized | {} |",
            h.sessions,
            h.requested,
            h.failed,
            h.open_seconds,
            h.client_processes,
            h.source_addresses,
            h.server_authorized,
            if h.sessions >= super::ISSUE_SESSIONS {
                "50000 met".to_string()
            } else {
                "50000 **not reached** (open-file limit, below)".to_string()
            }
        );
        let _ = writeln!(
            md,
            "| resident memory per session (server VmRSS {:.1} → {:.1} MiB, ÷ sessions) | {:.0} B ({:.2} KiB) | ≤ 8 KiB {} |",
            h.rss_before as f64 / 1048576.0,
            h.rss_after as f64 / 1048576.0,
            h.bytes_per_session,
            h.bytes_per_session / 1024.0,
            verdict(h.bytes_per_session <= TARGET_BYTES_PER_SESSION && h.failed == 0)
        );
        let _ = writeln!(
            md,
            "| server CPU while they idle ({:.0} s, user + system) | {:.2} % of one core | — |",
            h.idle_seconds, h.idle_cpu_percent
        );
    }
    if let Some(r) = &live.revocation {
        let _ = writeln!(
            md,
            "| one license revoked → its session's event 201 ({} times, {} other sessions held): sent → received \
             p50 / p99 / max | {} / {} / {} | p99 ≤ 10 ms {} |",
            r.repetitions,
            r.held_meanwhile,
            human_micros(r.client.p50),
            human_micros(r.client.p99),
            human_micros(r.client.max),
            verdict((r.client.p99 as f64) <= TARGET_REVOCATION_P99_MS * 1000.0)
        );
        let _ = writeln!(
            md,
            "| ... server: commit → frame written, p99 | {} | ≤ 10 ms {} |",
            server_p99(&r.server),
            verdict(r.server.p99_at_most_ms.is_some_and(|ms| ms as f64 <= TARGET_REVOCATION_P99_MS))
        );
        let _ = writeln!(
            md,
            "| ... for comparison: sent → the Developer API's answer, p50 / p99 | {} / {} | — |",
            human_micros(r.api_answer.p50),
            human_micros(r.api_answer.p99)
        );
    }
    if let Some(f) = &live.fanout {
        let _ = writeln!(
            md,
            "| app version changed → event 102 at all {} subscribed sessions ({} times): sent → last frame received, \
             p50 / p99 / max | {} / {} / {} | p99 ≤ 250 ms {} |",
            f.sessions,
            f.repetitions,
            human_micros(f.version_last_frame.p50),
            human_micros(f.version_last_frame.p99),
            human_micros(f.version_last_frame.max),
            verdict((f.version_last_frame.p99 as f64) <= TARGET_FANOUT_P99_MS * 1000.0)
        );
        let _ = writeln!(
            md,
            "| app disabled (once) → event 101 then close 4101 at all {} sessions: sent → last event / last close | \
             {} / {} ({} events, {} closes) | ≤ 250 ms {} |",
            f.sessions,
            human_micros(f.disable_last_event),
            human_micros(f.disable_last_close),
            f.disable_events,
            f.disable_closes,
            verdict(
                (f.disable_last_close as f64) <= TARGET_FANOUT_P99_MS * 1000.0
                    && f.disable_closes as usize == f.sessions
            )
        );
        let _ = writeln!(
            md,
            "| ... server: commit → frame written, p99 over all fan-out frames | {} | — |",
            server_p99(&f.server)
        );
    }
    if let Some(t) = &live.throughput {
        let _ = writeln!(
            md,
            "| initialize + authorize, closed loop of {} clients ({:.0} s; each connects, initializes, authorizes, \
             closes) | {:.0} sessions/s, connect → authorized p50 / p99 {} / {}, {} failures | — |",
            t.concurrency,
            t.seconds,
            t.sessions_per_second,
            human_micros(t.session_latency.p50),
            human_micros(t.session_latency.p99),
            t.failures
        );
        let _ = writeln!(
            md,
            "| ... as a ratio to `/auth/validate` of the same run ({:.0} req/s, same licenses and machines) | {:.2}× | — |",
            t.validate_per_second, t.ratio
        );
    }
    md.push('\n');
    for note in &live.notes {
        let _ = writeln!(md, "- {note}");
    }
    if let Some(why) = live.throughput.as_ref().and_then(|t| t.first_failure.as_ref()) {
        let _ = writeln!(md, "- first session failure in the throughput run: {why}");
    }
    if let Some(why) = live.held.as_ref().and_then(|h| h.first_error.as_ref()) {
        let _ = writeln!(md, "- first failure while opening the held sessions: {why}");
    }
    let _ = writeln!(
        md,
        "- The fan-out repeats the app-version change (event 102, no close) for its percentiles and \
         disables the app once at the end (event 101 then close 4101 ends every session); its sessions \
         are initialized and subscribed, not authorized (an app-wide event does not depend on a license).\n\
         - Memory per session includes everything a session adds to the process: the socket's buffers \
         in user space, the session and registry records, the client id bound to the license's slot, \
         and allocator slack. Kernel socket buffers are not in VmRSS.\n\
         - Run alone: `cargo run --release -p licensd-bench -- live` (`--sessions N`, `--fanout N`, \
         `--write BENCHMARKS.md` to replace this section).\n"
    );
    md
}

/// Replaces (or appends) the live section of an existing BENCHMARKS.md.
pub fn replace_section(markdown: &str, section: &str) -> String {
    // Before the profile and the how-to, like the suite writes it.
    crate::report::replace_section(markdown, HEADING, section, Some(BEFORE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_in_place() {
        let md = format!("# B\n\n## A\n\na\n\n{HEADING}\n\nold\n\n## C\n\nc\n");
        let new = format!("{HEADING}\n\nnew\n\n");
        assert_eq!(replace_section(&md, &new), format!("# B\n\n## A\n\na\n\n{HEADING}\n\nnew\n\n## C\n\nc\n"));
        assert_eq!(replace_section("# B\n", &new), format!("# B\n\n{new}"));
    }
}
