//! BENCHMARKS.md: the machine, the command, and every figure next to its target.

use crate::load::Report;
use crate::stats::human_micros;
use crate::suite::{Degradation, Results, Scale, SuiteOptions};
use std::fmt::Write;

/// A target met or not, as a table cell.
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn markdown(results: &Results, options: &SuiteOptions, machine: &str, command: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(md, "Written by `{command}` (see \"How to run\" below); do not edit by hand.\n");
    let _ = writeln!(md, "## Machine\n\n{machine}\n");
    let _ = writeln!(
        md,
        "Every figure is a ratio to the **floor** measured minutes earlier in the same run: a server \
         built into the benchmark with the same HTTP stack that parses the same request and \
         Ed25519-signs a payload of the same shape, with no storage and no checks. The machine is \
         shared and noisy, so absolute numbers move between runs; ratios move much less. The load \
         generator runs on the same cores as the server (a closed loop of {} clients over {} licenses \
         × {} machines, {} s warm-up, {} s measured), and checks every answer as the SDKs do \
         (signature, echoed nonce, session token, `expiresIn`) after the timed window; an answer \
         that fails a check is a failure, not throughput. Storage is durable: SQLite with \
         `synchronous=full`, Postgres with its defaults (`fsync` on).\n",
        options.concurrency,
        options.licenses,
        options.machines_per_license,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64()
    );
    endpoints(&mut md, results);
    if let Some(d) = &results.degradation {
        degradation(&mut md, d);
    }
    if let Some(s) = &results.scale {
        scale(&mut md, s);
    }
    if !results.skipped.is_empty() {
        let _ = writeln!(md, "## Skipped\n");
        for skipped in &results.skipped {
            let _ = writeln!(md, "- {skipped}");
        }
        md.push('\n');
    }
    md
}

fn endpoints(md: &mut String, results: &Results) {
    let _ = writeln!(md, "## Auth endpoints\n");
    let _ = writeln!(
        md,
        "| backend | endpoint | floor req/s | licensd req/s | throughput ratio (target) | floor p99 | licensd p99 | \
         p99 ratio (target) | licensd p50 / p999 | answers checked, failed |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for row in &results.endpoints {
        let (floor, real) = (&row.floor, &row.licensd);
        let (min_ratio, max_p99) = if real.call == "heartbeat" { (0.85, 2.0) } else { (0.60, 4.0) };
        let ratio = real.throughput / floor.throughput.max(1e-9);
        let p99 = real.latency_verified.p99 as f64 / floor.latency_verified.p99.max(1) as f64;
        let clean = real.failed_checks == 0 && floor.failed_checks == 0 && real.verified == real.sent;
        let _ = writeln!(
            md,
            "| {} | `/auth/{}`{} | {:.0} | {:.0} | {:.0} % (≥ {:.0} %) {} | {} | {} | {:.2}× (≤ {max_p99}×) {} | {} / {} | {}, {} |",
            row.backend,
            real.call,
            if real.call == "validate" { " (bills each)" } else { " (bills every 10th)" },
            floor.throughput,
            real.throughput,
            ratio * 100.0,
            min_ratio * 100.0,
            verdict(ratio >= min_ratio && clean),
            human_micros(floor.latency_verified.p99),
            human_micros(real.latency_verified.p99),
            p99,
            verdict(p99 <= max_p99 && clean),
            human_micros(real.latency_verified.p50),
            human_micros(real.latency_verified.p999),
            real.sent + floor.sent,
            real.sent - real.verified + floor.sent - floor.verified,
        );
    }
    md.push('\n');
    for row in &results.endpoints {
        if let Some(why) = row.licensd.first_failure.as_ref().or(row.floor.first_failure.as_ref()) {
            let _ = writeln!(md, "- {} `/auth/{}`: first failure: {why}", row.backend, row.licensd.call);
        }
    }
}

fn outcomes(report: &Report) -> String {
    report.outcomes.iter().map(|(label, n)| format!("{label}: {n}")).collect::<Vec<_>>().join(", ")
}

fn degradation(md: &mut String, d: &Degradation) {
    let _ = writeln!(md, "## Overload and recovery (SQLite, `/auth/validate`, open loop)\n");
    let _ = writeln!(
        md,
        "Sustainable rate: the closed-loop validate throughput above, {:.0} req/s. Latency counts from \
         the moment a request was due, so queueing in the server or the generator is included.\n",
        d.sustainable
    );
    let _ = writeln!(md, "| phase | offered | answered ok | refused | ok p50 / p99 | refusal p50 / p99 | outcomes |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for (name, r, factor) in [("overload", &d.overload, 2.0), ("recovery", &d.recovery, 0.5)] {
        let _ = writeln!(
            md,
            "| {name} | {:.0} req/s ({factor}×) | {:.0} req/s | {} | {} / {} | {} / {} | {}{} |",
            d.sustainable * factor,
            r.throughput,
            r.sent - r.verified,
            human_micros(r.latency_verified.p50),
            human_micros(r.latency_verified.p99),
            human_micros(r.latency_refused.p50),
            human_micros(r.latency_refused.p99),
            outcomes(r),
            if r.not_sent > 0 { format!(", not sent (generator cap): {}", r.not_sent) } else { String::new() },
        );
    }
    let recovered = d.recovery.verified as f64 / d.recovery.sent.max(1) as f64;
    let _ = writeln!(
        md,
        "\nResident memory: {} before, {} at the peak of the overload, {} after recovery. Recovery: {:.2} % \
         of the requests sent after the first second at half the rate were answered ok {}.\n",
        mib(d.rss_before),
        mib(d.rss_peak),
        mib(d.rss_after),
        recovered * 100.0,
        verdict(recovered >= 0.99)
    );
}

fn scale(md: &mut String, s: &Scale) {
    let _ = writeln!(md, "## {} licenses (SQLite)\n", s.licenses);
    let per_license = s.heap["bytesPerLicense"].as_f64().unwrap_or(0.0);
    let with_machine = s.heap["bytesPerLicenseWithOneMachine"].as_f64().unwrap_or(0.0);
    let rss_per = s.rss_loaded.saturating_sub(s.rss_empty) as f64 / s.licenses.max(1) as f64;
    let _ = writeln!(md, "| measure | figure | target |");
    let _ = writeln!(md, "|---|---|---|");
    let _ = writeln!(
        md,
        "| seeding through `POST /v1/licenses` (100 per call, 8 at a time) | {:.1} s ({:.0} licenses/s) | — |",
        s.seed_seconds,
        s.licenses as f64 / s.seed_seconds.max(1e-9)
    );
    let _ = writeln!(
        md,
        "| hot-model rebuild (`licensd rebuild --projection hot`, {} events) | {:.0} events/s | ≥ 200000 {} |",
        s.events,
        s.rebuild_events_per_second,
        verdict(s.rebuild_events_per_second >= 200_000.0)
    );
    let _ = writeln!(
        md,
        "| start-up to listening (`licensd serve`) | {:.2} s | ≤ 15 s {} |",
        s.startup_seconds,
        verdict(s.startup_seconds <= 15.0)
    );
    let _ = writeln!(md, "| hot-model heap per license, as created (counting allocator) | {per_license:.0} B | — |");
    let _ = writeln!(
        md,
        "| hot-model heap per license with one machine bound | {with_machine:.0} B | ≤ 400 B {} |",
        verdict(with_machine <= 400.0)
    );
    let _ = writeln!(
        md,
        "| resident memory: empty server → loaded server | {} → {} ({rss_per:.0} B per license, allocator slack included) | — |\n",
        mib(s.rss_empty),
        mib(s.rss_loaded)
    );
}
