//! `licensd-bench`: `suite` runs everything and writes BENCHMARKS.md; `load` points the load
//! generator at a running server; `floor` serves the floor endpoint.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use licensd_bench::deployment::Backend;
use licensd_bench::load::{self, LoadSpec, Mode, Target, Workload};
use licensd_bench::protocol::{AppCredentials, Call};
use licensd_bench::startup::StartupSize;
use licensd_bench::suite::{self, SuiteOptions};
use licensd_bench::{fixture, report};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

// The same allocator as licensd, so the floor is measured on equal terms.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "licensd-bench", about = "Benchmarks for licensd")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build licensd, run the floor and every scenario on SQLite and Postgres, write BENCHMARKS.md.
    Suite(SuiteArgs),
    /// Load a running licensd: makes an app and licenses with the API key, then sends load.
    Load(LoadArgs),
    /// Time start-up with and without a snapshot of the in-memory model (prints JSON).
    Startup {
        /// Use this licensd binary instead of building target/release/licensd.
        #[arg(long)]
        licensd: Option<PathBuf>,
        /// The size, 1M licenses and 10M events (default: 100k and 1M).
        #[arg(long)]
        full: bool,
        /// Other sizes: licenses and events in the log.
        #[arg(long)]
        licenses: Option<usize>,
        #[arg(long)]
        events: Option<usize>,
    },
    /// Live sessions alone (prints JSON; `--write BENCHMARKS.md` updates its section).
    Live(LiveArgs),
    /// Internal: holds a share of the live benchmark's sessions (one client process).
    #[command(hide = true)]
    LiveHold { share: String },
    /// App users alone: Argon2 verify time, sign-ins/s, validation p99 beside a wrong-password
    /// flood (prints JSON; `--write BENCHMARKS.md` updates its section).
    Users(UsersArgs),
    /// Protected file delivery alone: a loopback TCP copy as the baseline, stream mode, URL mode,
    /// and many clients at once with the server's memory (prints JSON; `--write BENCHMARKS.md`
    /// updates its section and the `files` key of BENCHMARKS.json beside it).
    Files(FilesArgs),
    /// Several nodes on one Postgres database with Kafka: validate throughput of 1, 2 and 3
    /// nodes, revocation on node A → push on node C through Kafka and through the Postgres
    /// fallback (prints JSON; `--write BENCHMARKS.md` updates its section and the `nodes` key of
    /// BENCHMARKS.json beside it).
    Nodes(NodesArgs),
    /// Only the suite's overload-and-recovery run on SQLite (prints JSON).
    Overload(SuiteArgs),
    /// Raw appends through licensd's writer next to a plain multi-row INSERT loop (prints JSON).
    Append {
        /// The database (fresh): `sqlite://path` or `postgres://...`.
        #[arg(long)]
        database: String,
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 256)]
        batch: usize,
    },
    /// Time `licensd rebuild --projection hot` on a seeded SQLite log (prints JSON).
    Rebuild {
        /// Use this licensd binary instead of building target/release/licensd.
        #[arg(long)]
        licensd: Option<PathBuf>,
        /// Keep the log here (seeded only if the folder holds none yet); default: a temporary folder.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value_t = 1_000_000)]
        licenses: usize,
        /// Billing events per license after its creation.
        #[arg(long, default_value_t = 0)]
        bills: usize,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Serve the floor endpoint (prints {"listening": addr}).
    Floor {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The durable floor: append one event per request to this database first.
        #[arg(long)]
        durable: Option<String>,
    },
    /// The floor and the durable floor alone, in alternating rounds (prints JSON): what a change
    /// to the write path does to the durable floor's ratio, without the suite.
    DurableFloor {
        /// Postgres instead of SQLite (`synchronous=full`).
        #[arg(long)]
        postgres: bool,
        #[arg(long, env = "LICENSD_BENCH_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        postgres_url: String,
        #[arg(long, default_value_t = 2)]
        rounds: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[command(flatten)]
        window: Window,
    },
}

/// Live sessions alone: held sessions (memory, idle CPU), single revocations, fan-out, and
/// initialize + authorize throughput next to `/auth/validate` (SQLite, release binary).
#[derive(clap::Args)]
struct LiveArgs {
    /// Use this licensd binary instead of building target/release/licensd.
    #[arg(long)]
    licensd: Option<PathBuf>,
    /// Sessions to hold (default: as many as the open-file limits allow, at most 50000).
    #[arg(long)]
    sessions: Option<usize>,
    /// Subscribed sessions of the fan-out (0 skips it).
    #[arg(long, default_value_t = 10_000)]
    fanout: usize,
    /// Timed app-version changes over the fan-out sessions (then one disable).
    #[arg(long, default_value_t = 20)]
    fanout_repeats: usize,
    /// Timed single revocations (0 skips them).
    #[arg(long, default_value_t = 200)]
    revocations: usize,
    /// 127.0.0.x source addresses the clients spread over.
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// Closed-loop clients of the throughput comparison (0 skips it).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
    /// Replace the live section of this BENCHMARKS.md (the JSON goes to stdout).
    #[arg(long)]
    write: Option<PathBuf>,
}

/// The measured window of a closed-loop run, after its warm-up: the same two flags on every
/// command that runs one.
#[derive(clap::Args)]
struct Window {
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

impl Window {
    fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_secs)
    }

    fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.seconds)
    }
}

#[derive(clap::Args)]
struct UsersArgs {
    /// Use this licensd binary instead of building target/release/licensd.
    #[arg(long)]
    licensd: Option<PathBuf>,
    #[arg(long, default_value_t = 30)]
    argon2_runs: usize,
    /// Sessions of the sign-in loop.
    #[arg(long, default_value_t = 8)]
    sign_in_concurrency: usize,
    /// Closed-loop clients of `/auth/validate`.
    #[arg(long, default_value_t = 16)]
    validate_concurrency: usize,
    /// Sessions guessing one user's password.
    #[arg(long, default_value_t = 8)]
    flood_sessions: usize,
    #[command(flatten)]
    window: Window,
    /// Replace the app-users section of this BENCHMARKS.md (the JSON goes to stdout).
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(clap::Args)]
struct FilesArgs {
    /// Use this licensd binary instead of building target/release/licensd.
    #[arg(long)]
    licensd: Option<PathBuf>,
    /// Size of the file in bytes (default 1 GiB).
    #[arg(long, default_value_t = 1 << 30)]
    size: u64,
    /// Clients downloading at once, in stream mode and then URL mode (0 skips that run).
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Modes of the many-clients run: `stream`, `url` or both (to profile one alone).
    #[arg(long, value_delimiter = ',', default_value = "stream,url")]
    modes: Vec<String>,
    /// Folder the file is written to (default: the system's temporary folder).
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Replace the file-delivery section of this BENCHMARKS.md, and set `files` in the
    /// BENCHMARKS.json beside it (the JSON goes to stdout).
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(clap::Args)]
struct NodesArgs {
    /// Use this licensd binary instead of building target/release/licensd.
    #[arg(long)]
    licensd: Option<PathBuf>,
    /// The Kafka-protocol broker's binary (tansu; `bash .ci/tansu` builds it and prints its path).
    #[arg(long, env = "LICENSD_TEST_KAFKA_BROKER_BIN")]
    broker: PathBuf,
    #[arg(long, env = "LICENSD_BENCH_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Up to this many nodes (1 to 3); the throughput is measured with 1, 2, ... of them.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Partitions of the topic the benchmark creates.
    #[arg(long, default_value_t = 3)]
    partitions: i32,
    #[arg(long, default_value_t = 1000)]
    licenses: usize,
    /// Closed-loop clients, the same count whatever the number of nodes.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[command(flatten)]
    window: Window,
    /// Timed revocations through Kafka, and as many through the Postgres fallback (0 skips them).
    #[arg(long, default_value_t = 200)]
    revocations: usize,
    /// Idle window of the probe's cost, measured twice: probe at its default and ten times
    /// slower (0 skips it).
    #[arg(long, default_value_t = 15.0)]
    idle_secs: f64,
    /// Replace the several-nodes section of this BENCHMARKS.md, and set `nodes` in the
    /// BENCHMARKS.json beside it (the JSON goes to stdout).
    #[arg(long)]
    write: Option<PathBuf>,
}

#[derive(clap::Args)]
struct SuiteArgs {
    /// Use this licensd binary instead of building target/release/licensd.
    #[arg(long)]
    licensd: Option<PathBuf>,
    #[arg(long, env = "LICENSD_BENCH_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    #[arg(long, default_value_t = 1000)]
    licenses: usize,
    #[arg(long, default_value_t = 2)]
    machines: usize,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Clients of the second closed loop (0 skips it).
    #[arg(long, default_value_t = 256)]
    wide_concurrency: usize,
    /// Seconds of each open-loop sweep step (0 skips the sweeps).
    #[arg(long, default_value_t = 5.0)]
    sweep_step_secs: f64,
    #[command(flatten)]
    window: Window,
    /// Licenses for the rebuild, start-up and memory run (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    scale_licenses: usize,
    /// Events of the raw-append run on each backend (0 skips it).
    #[arg(long, default_value_t = 300_000)]
    append_events: usize,
    /// Run only on SQLite.
    #[arg(long)]
    sqlite_only: bool,
    /// Leave out the live-session part (`licensd-bench live` runs it alone).
    #[arg(long)]
    skip_live: bool,
    /// Leave out the app-users part (`licensd-bench users` runs it alone).
    #[arg(long)]
    skip_users: bool,
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum CallArg {
    Validate,
    Heartbeat,
    /// 10 % validate, heartbeat otherwise.
    Mix,
}

#[derive(clap::Args)]
struct LoadArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// A Developer API key of an account with credits.
    #[arg(long, env = "LICENSD_BENCH_API_KEY")]
    api_key: String,
    #[arg(long, value_enum, default_value = "validate")]
    call: CallArg,
    /// Requests per second (open loop); without it, a closed loop of `concurrency` clients.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 100)]
    licenses: usize,
    #[arg(long, default_value_t = 2)]
    machines: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        match cli.command {
            Cmd::Floor { listen, durable } => {
                let listener = tokio::net::TcpListener::bind(&listen).await?;
                println!("{}", serde_json::json!({ "listening": listener.local_addr()?.to_string() }));
                std::io::stdout().flush()?;
                licensd_bench::floor::serve(listener, durable.as_deref()).await
            }
            Cmd::Load(args) => run_load(args).await,
            Cmd::DurableFloor { postgres, postgres_url, rounds, concurrency, window } => {
                let options = licensd_bench::durable::DurableOptions {
                    backend: if postgres { Backend::Postgres } else { Backend::Sqlite },
                    postgres_url,
                    rounds,
                    concurrency,
                    warmup: window.warmup(),
                    duration: window.duration(),
                };
                let rounds = licensd_bench::durable::run(&options).await?;
                println!("{}", serde_json::to_string_pretty(&rounds)?);
                Ok(())
            }
            Cmd::Append { database, events, batch } => {
                let backend = if database.starts_with("sqlite:") { "SQLite" } else { "Postgres" };
                let figures = licensd_bench::append::run(&database, backend, events, batch).await?;
                println!("{}", serde_json::to_string_pretty(&figures)?);
                Ok(())
            }
            Cmd::Suite(args) => run_suite(args).await,
            Cmd::Live(args) => run_live(args).await,
            Cmd::Users(args) => run_users(args).await,
            Cmd::Files(args) => run_files(args).await,
            Cmd::Nodes(args) => run_nodes(args).await,
            Cmd::LiveHold { share } => licensd_bench::live::hold::child(serde_json::from_str(&share)?).await,
            Cmd::Overload(args) => {
                let options = suite_options(args)?;
                let figures = suite::overload(&options).await?;
                println!("{}", serde_json::to_string_pretty(&figures)?);
                Ok(())
            }
            Cmd::Rebuild { licensd, data_dir, licenses, bills, runs } => {
                let licensd = match licensd {
                    Some(path) => path,
                    None => build_licensd()?,
                };
                let temporary = data_dir.is_none();
                let data_dir = data_dir.unwrap_or_else(|| {
                    std::env::temp_dir().join(format!("licensd-bench-{}-rebuild", std::process::id()))
                });
                let spec = licensd_bench::rebuild::RebuildSpec {
                    licensd,
                    data_dir: data_dir.clone(),
                    licenses,
                    bills_per_license: bills,
                    runs,
                };
                let figures = licensd_bench::rebuild::run(&spec).await;
                if temporary {
                    let _ = std::fs::remove_dir_all(&data_dir);
                }
                println!("{}", serde_json::to_string_pretty(&figures?)?);
                Ok(())
            }
            Cmd::Startup { licensd, full, licenses, events } => {
                let licensd = match licensd {
                    Some(path) => path,
                    None => build_licensd()?,
                };
                let size = if full { StartupSize::FULL } else { StartupSize::SMALL };
                let size = StartupSize {
                    licenses: licenses.unwrap_or(size.licenses).max(1),
                    events: events.unwrap_or(size.events),
                };
                let figures = licensd_bench::startup::run(&licensd, size).await?;
                println!("{}", serde_json::to_string_pretty(&figures)?);
                Ok(())
            }
        }
    })
}

async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let app: serde_json::Value = client
        .post(format!("{}/v1/apps", args.url))
        .bearer_auth(&args.api_key)
        .json(&serde_json::json!({ "name": "load generator" }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let text = |f: &str| app[f].as_str().map(str::to_string).context("app field missing");
    let merchant = fixture::Merchant {
        api_key: args.api_key.clone(),
        app: AppCredentials::new(&text("appId")?, &text("appSecret")?, &text("publicKey")?)?,
    };
    let slots = u8::try_from(args.machines)?;
    let keys = fixture::licenses(&args.url, &merchant, args.licenses, slots, 4).await?;
    let target = Target {
        base_url: args.url.clone(),
        app: merchant.app,
        machines: Arc::new(fixture::machines(&keys, args.machines)),
    };
    let target = Target { machines: Arc::new(load::log_in_all(&target, 16).await?), ..target };
    let mode = match args.rate {
        Some(rate) => Mode::Open { rate, max_outstanding: 8192 },
        None => Mode::Closed { concurrency: args.concurrency },
    };
    let workload = match args.call {
        CallArg::Validate => Workload::Only(Call::Validate),
        CallArg::Heartbeat => Workload::Only(Call::Heartbeat),
        CallArg::Mix => Workload::Mix { validate_percent: 10 },
    };
    let spec = LoadSpec {
        workload,
        mode,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(args.seconds),
        timeout: Duration::from_secs(10),
    };
    let report = load::run(&target, spec).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn run_live(args: LiveArgs) -> anyhow::Result<()> {
    let licensd = match args.licensd {
        Some(path) => path,
        None => build_licensd()?,
    };
    let options = licensd_bench::live::LiveOptions {
        licensd,
        sessions: args.sessions,
        fanout: args.fanout,
        fanout_repeats: args.fanout_repeats,
        revocations: args.revocations,
        sources: args.sources,
        concurrency: args.concurrency,
        duration: Duration::from_secs_f64(args.seconds),
        idle: Duration::from_secs_f64(args.idle_secs),
        ..Default::default()
    };
    let results = licensd_bench::live::run(&options).await?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    if let Some(path) = args.write {
        // Only the markdown: the suite's JSON is rewritten whole by the suite (re-serializing it
        // here would reorder every key of the other parts).
        let section = licensd_bench::live::report::section(&results);
        let markdown = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, licensd_bench::live::report::replace_section(&markdown, &section))?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}

async fn run_users(args: UsersArgs) -> anyhow::Result<()> {
    let licensd = match args.licensd {
        Some(path) => path,
        None => build_licensd()?,
    };
    let options = licensd_bench::users::UsersOptions {
        licensd,
        argon2_runs: args.argon2_runs,
        sign_in_concurrency: args.sign_in_concurrency,
        validate_concurrency: args.validate_concurrency,
        flood_sessions: args.flood_sessions,
        warmup: args.window.warmup(),
        duration: args.window.duration(),
    };
    let results = licensd_bench::users::run(&options).await?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    if let Some(path) = args.write {
        let section = licensd_bench::users::report::section(&results);
        let markdown = std::fs::read_to_string(&path).unwrap_or_default();
        std::fs::write(&path, licensd_bench::users::report::replace_section(&markdown, &section))?;
        eprintln!("updated {}", path.display());
    }
    Ok(())
}

async fn run_files(args: FilesArgs) -> anyhow::Result<()> {
    let licensd = match args.licensd {
        Some(path) => path,
        None => build_licensd()?,
    };
    let url_modes = args.modes.iter().map(|mode| mode == "url").collect();
    let options = licensd_bench::files::FilesOptions {
        licensd,
        size: args.size,
        clients: args.clients,
        url_modes,
        scratch: args.scratch,
    };
    let results = licensd_bench::files::run(&options).await?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    if let Some(path) = args.write {
        use licensd_bench::files::report;
        let section = report::section(&results);
        write_report(&path, |md| report::replace_section(md, &section), |json| report::with_json(json, &results))?;
    }
    Ok(())
}

async fn run_nodes(args: NodesArgs) -> anyhow::Result<()> {
    let licensd = match args.licensd {
        Some(path) => path,
        None => build_licensd()?,
    };
    let options = licensd_bench::nodes::NodesOptions {
        licensd,
        broker: args.broker,
        postgres_url: args.postgres_url,
        nodes: args.nodes,
        partitions: args.partitions,
        licenses: args.licenses,
        concurrency: args.concurrency,
        warmup: args.window.warmup(),
        duration: args.window.duration(),
        revocations: args.revocations,
        idle: Duration::from_secs_f64(args.idle_secs),
        floors: true,
    };
    let results = licensd_bench::nodes::run(&options).await?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    if let Some(path) = args.write {
        use licensd_bench::nodes::report;
        let section = report::section(&results);
        write_report(&path, |md| report::replace_section(md, &section), |json| report::with_json(json, &results))?;
    }
    Ok(())
}

/// Rewrites the BENCHMARKS.md at `path` with `markdown` and the BENCHMARKS.json beside it
/// with `json` (each given the file's current text, empty when there is none).
fn write_report(
    path: &std::path::Path,
    markdown: impl FnOnce(&str) -> String,
    json: impl FnOnce(&str) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, markdown(&text))?;
    let json_path = path.with_extension("json");
    let text = std::fs::read_to_string(&json_path).unwrap_or_default();
    std::fs::write(&json_path, json(&text)?)?;
    eprintln!("updated {} and {}", path.display(), json_path.display());
    Ok(())
}

fn suite_options(args: SuiteArgs) -> anyhow::Result<SuiteOptions> {
    let licensd = match args.licensd {
        Some(path) => path,
        None => build_licensd()?,
    };
    Ok(SuiteOptions {
        licensd,
        postgres_url: args.postgres_url,
        licenses: args.licenses,
        machines_per_license: args.machines,
        concurrency: args.concurrency,
        wide_concurrency: args.wide_concurrency,
        sweep_step: Duration::from_secs_f64(args.sweep_step_secs),
        warmup: args.window.warmup(),
        duration: args.window.duration(),
        scale_licenses: args.scale_licenses,
        append_events: args.append_events,
        backends: if args.sqlite_only { vec![Backend::Sqlite] } else { vec![Backend::Sqlite, Backend::Postgres] },
        live: !args.skip_live,
        users: !args.skip_users,
    })
}

async fn run_suite(args: SuiteArgs) -> anyhow::Result<()> {
    let output = args.output.clone();
    let options = suite_options(args)?;
    let results = suite::run(&options).await?;
    let command = "cargo run --release -p licensd-bench -- suite";
    let markdown = report::markdown(&results, &options, &machine_description(), command);
    let previous = std::fs::read_to_string(&output).unwrap_or_default();
    std::fs::write(&output, report::with_kept_sections(&markdown, &previous))?;
    let json_path = output.with_extension("json");
    let previous = std::fs::read_to_string(&json_path).unwrap_or_default();
    std::fs::write(&json_path, report::with_kept_json(&serde_json::to_value(&results)?, &previous)?)?;
    eprintln!("wrote {} and {}", output.display(), json_path.display());
    Ok(())
}

/// `cargo build --release` of licensd and of `licensd-bench-heap` (the suite's heap count, which
/// links the domain code, so a stale one would measure old code) in this workspace; returns
/// licensd's path.
fn build_licensd() -> anyhow::Result<PathBuf> {
    eprintln!("== building licensd and licensd-bench-heap (release)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--workspace", "--bin", "licensd", "--bin", "licensd-bench-heap"])
        .status()?;
    anyhow::ensure!(status.success(), "cargo build failed");
    let exe = std::env::current_exe()?;
    Ok(exe.with_file_name("licensd"))
}

fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map_or("unknown", |m| m.trim_start_matches([' ', '\t', ':']));
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let output = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "- CPU: {model}, {cores} cores available\n- Memory: {:.1} GiB\n- Kernel: {}\n- Postgres: {}\n- Date: {}\n- Commit: {}",
        memory_kb as f64 / (1024.0 * 1024.0),
        output("uname", &["-sr"]),
        output("psql", &["--version"]),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        output("git", &["rev-parse", "--short", "HEAD"]),
    )
}
