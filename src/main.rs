//! `licensd`: the server and its operator commands, wired from the workspace crates.

mod backup;
mod cluster;
mod config;
mod data_lock;
mod files;
mod healthcheck;
mod kafka;
mod operator;
mod rotate;
mod serve;
mod services;
mod telemetry;

use clap::{Parser, Subcommand};
use config::{Config, ServeConfig};
use std::process::ExitCode;

// Many small, short-lived allocations across threads per request: mimalloc spends a fraction
// of the system allocator's time on them (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "licensd",
    version,
    about = "Self-hosted software-licensing server, wire-compatible with the AuthForge SDKs"
)]
struct Cli {
    #[command(flatten)]
    config: Config,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (migrates the database first).
    Serve(Box<ServeConfig>),
    /// Apply database migrations and exit.
    Migrate,
    /// Rebuild read models from the event log (all, or one by name); prints JSON.
    Rebuild {
        /// One read model (`hot`, or a SQL read model's name as `licensd projections` lists it).
        #[arg(long)]
        projection: Option<String>,
    },
    /// Show each read model's checkpoint and content hash; prints JSON.
    Projections,
    /// Merchant accounts.
    #[command(subcommand)]
    Account(operator::AccountCommand),
    /// Account credits.
    #[command(subcommand)]
    Credits(operator::CreditsCommand),
    /// Copy a SQLite deployment (both database files, and the master key file when it lives in
    /// the data folder) into a new folder while the server runs; prints JSON.
    Backup {
        /// The folder to create (it must not exist, or be empty).
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Put a backup in place in a fresh data folder, after checking its log against its
    /// manifest; prints JSON.
    Restore {
        /// The backup's folder, as `licensd backup --to` wrote it.
        #[arg(long)]
        from: std::path::PathBuf,
    },
    /// Ask the local server's /healthz: exit 0 when it answers 200, 1 otherwise (for container
    /// health checks; needs no shell).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Write a new master key to LICENSD_MASTER_KEY_FILE (default <data dir>/master.key) unless
    /// the file exists; prints JSON. Run once before the first start; keep the file.
    InitMasterKey,
    /// Make a new master key the one that seals and re-seal the PII vault and kept answers under
    /// it; the key file then holds the new key. Stop the server first. Resumable: a run cut short
    /// is finished by running it again. Prints JSON.
    RotateMasterKey(rotate::RotateArgs),
}

/// Transparent huge pages stay off for this process unless `LICENSD_TRANSPARENT_HUGE_PAGES=true`.
/// The allocator asks the kernel for huge pages on its arenas (`madvise`), and then a few live
/// bytes keep a whole 2 MiB page resident: with 50 URL-mode downloads at once the release server
/// grew by +70 MiB with them and +58 MiB without (BENCHMARKS.md, "Protected file delivery"). Set
/// before the runtime starts; the kernel checks the flag at every later fault.
#[cfg(target_os = "linux")]
fn transparent_huge_pages() {
    if std::env::var("LICENSD_TRANSPARENT_HUGE_PAGES").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return;
    }
    extern "C" {
        fn prctl(option: std::ffi::c_int, ...) -> std::ffi::c_int;
    }
    const PR_SET_THP_DISABLE: std::ffi::c_int = 41;
    let (on, unused): (std::ffi::c_ulong, std::ffi::c_ulong) = (1, 0);
    // SAFETY: PR_SET_THP_DISABLE reads its integer arguments only and touches none of our memory.
    let refused = unsafe { prctl(PR_SET_THP_DISABLE, on, unused, unused, unused) };
    if refused != 0 {
        eprintln!("licensd: transparent huge pages could not be turned off; memory figures may be higher");
    }
}

#[cfg(not(target_os = "linux"))]
fn transparent_huge_pages() {}

fn main() -> ExitCode {
    transparent_huge_pages();
    let cli = Cli::parse();
    let telemetry = match init_logging(&cli.config) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("licensd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("licensd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json_log = cli.config.log_format == "json";
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(serve_config) => serve::run(&cli.config, &serve_config).await,
            Command::Migrate => operator::migrate(&cli.config).await,
            Command::Rebuild { projection } => operator::rebuild(&cli.config, projection.as_deref()).await,
            Command::Projections => operator::projections(&cli.config).await,
            Command::Account(command) => operator::account(&cli.config, command).await,
            Command::Credits(command) => operator::credits(&cli.config, command).await,
            Command::Backup { to } => backup::backup(&cli.config, &to).await,
            Command::Restore { from } => backup::restore(&cli.config, &from).await,
            Command::Healthcheck(args) => healthcheck::run(&args).await,
            Command::InitMasterKey => operator::init_master_key(&cli.config),
            Command::RotateMasterKey(args) => rotate::run(&cli.config, &args).await,
        }
    });
    // Outside the runtime: the exporter sends what is still queued with a blocking client.
    drop(runtime);
    if let Some(telemetry) = telemetry {
        telemetry.shutdown();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Said once: as a JSON log record where logs are collected as JSON, else as one line.
        Err(e) if json_log => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("licensd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the log, and the trace exporter when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; a filter or
/// format it cannot use stops the start (a typo would otherwise silently log at another level
/// than asked).
fn init_logging(config: &Config) -> anyhow::Result<Option<telemetry::Telemetry>> {
    // EnvFilter reads a bare word as a target name, so a misspelt level ("debgu") would parse and
    // silence everything: a bare word must be a level; a target is written `target=level`.
    let unknown_word = config.log.split(',').map(str::trim).find(|directive| {
        !directive.is_empty()
            && !directive.contains(['=', '['])
            && directive.parse::<tracing::level_filters::LevelFilter>().is_err()
    });
    if let Some(word) = unknown_word {
        anyhow::bail!(
            "LICENSD_LOG '{}' is not a valid log filter: '{word}' is not a level (error, warn, info, debug, trace, \
             off); to name a module write 'module=level', e.g. 'info,licensd_api=debug'",
            config.log
        );
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log).map_err(|e| {
        anyhow::anyhow!(
            "LICENSD_LOG '{}' is not a valid log filter ({e}); use a level (error, warn, info, debug, trace) or \
             directives such as 'info,licensd_api=debug'",
            config.log
        )
    })?;
    use std::io::IsTerminal;
    use tracing_subscriber::layer::{Layer, SubscriberExt};
    use tracing_subscriber::util::SubscriberInitExt;
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let log = match config.log_format.as_str() {
        "json" => log.json().boxed(),
        "text" => log.boxed(),
        other => anyhow::bail!("LICENSD_LOG_FORMAT must be 'text' or 'json', not '{other}'"),
    };
    let (traces, telemetry) = telemetry::layer()?.unzip();
    // Each with its own filter: the request spans are exported whatever LICENSD_LOG says, and the
    // log never shows them.
    let requests = tracing_subscriber::filter::Targets::new().with_target("licensd::request", tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(traces.map(|layer| layer.with_filter(requests)))
        .with(log.with_filter(filter))
        .init();
    Ok(telemetry)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every option of every command says what it does, and every setting (an option with an
    /// environment variable) sits under a heading in `--help`.
    #[test]
    fn every_option_has_help_and_every_setting_a_heading() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} --{id}: no help"));
                }
                if arg.get_env().is_some() && arg.get_help_heading().is_none() {
                    missing.push(format!("{path} --{id}: no heading"));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "licensd", &mut missing);
        assert!(missing.is_empty(), "{missing:#?}");
        Cli::command().debug_assert();
    }
}
