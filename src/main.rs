//! `licensd`: the server and its operator commands, wired from the workspace crates.

mod config;
mod files;
mod operator;
mod serve;
mod services;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("licensd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(serve_config) => serve::run(&cli.config, &serve_config).await,
            Command::Migrate => operator::migrate(&cli.config).await,
            Command::Rebuild { projection } => operator::rebuild(&cli.config, projection.as_deref()).await,
            Command::Projections => operator::projections(&cli.config).await,
            Command::Account(command) => operator::account(&cli.config, command).await,
            Command::Credits(command) => operator::credits(&cli.config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("licensd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
