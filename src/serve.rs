//! `licensd serve`: rebuild the hot read model, start the workers, serve HTTP, shut down cleanly.

use crate::config::{Config, ServeConfig};
use crate::services::Services;
use anyhow::Context;
use licensd_api::{plain_listener, router, tls_config, ApiConfig, AppState, TlsListener};
use licensd_projections::{load_snapshot, run_snapshots, write_logged, HotRunner};
use licensd_workers::Workers;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub async fn run(config: &Config, serve: &ServeConfig) -> anyhow::Result<()> {
    // Every setting is checked before the database is opened, created or migrated.
    let commerce = serve.commerce()?;
    let portal = serve.portal()?;
    let leases = serve.cluster.leases(&config.data_dir)?;
    let trusted_proxies = serve.cluster.trusted_proxies()?;
    let kafka = serve.cluster.kafka.config(&leases.node, config.is_postgres())?;
    let tls = match (&serve.tls_cert, &serve.tls_key) {
        (Some(cert), Some(key)) => Some(tls_config(cert, key)?),
        _ => None,
    };
    // The port before the data folder: a port already taken stops the start before a data folder
    // or a master key is created. Connections arriving while the model loads wait in the backlog.
    let listener = tokio::net::TcpListener::bind(&serve.listen)
        .await
        .with_context(|| format!("cannot listen on {}", serve.listen))?;
    // Held until the server has stopped: rotate-master-key and restore refuse meanwhile.
    let _data_lock = crate::data_lock::hold_for_server(config)?;
    let blobs = serve.files.open(&config.data_dir)?;
    let services = Services::open(config).await?;
    // Before uploads are accepted: what uploads cut short by a crash left behind goes.
    blobs.sweep_temporaries().await.context("cannot clean the file store's temporary files")?;
    let snapshot_path = config.snapshot_path();
    let started = Instant::now();
    let restored = match &snapshot_path {
        Some(path) => {
            let fresh = {
                let serve = serve.clone();
                move || serve.hot_model()
            };
            load_snapshot(&services.store, path, fresh).await
        }
        None => None,
    };
    let from_snapshot = restored.is_some();
    let hot = match restored {
        Some(model) => model,
        None => {
            let mut model = serve.hot_model();
            if let Some(licenses) = licensd_projections::license_streams(&services.store).await? {
                model.reserve_licenses(licenses);
            }
            model
        }
    };
    let hot = Arc::new(hot);
    let loaded_millis = started.elapsed().as_millis() as u64;
    let hot_runner = HotRunner::new(services.store.clone(), hot.clone(), serve.cluster.hot_tail());
    let replayed = hot_runner.catch_up().await.context("cannot load the read model from the event log")?;
    tracing::info!(
        from_snapshot,
        snapshot_millis = loaded_millis,
        events = replayed,
        licenses = hot.license_count(),
        millis = started.elapsed().as_millis() as u64,
        "in-memory read model loaded (snapshot, then the log after it)"
    );
    let commits = services.commands.writer().subscribe_commits();
    let tails = (serve.cluster.hot_tail(), serve.sql_tail());
    let node = leases.node.clone();
    let workers =
        Workers::start(&services.commands, hot.clone(), commits, tails, serve.webhooks(), commerce, leases, kafka)?;
    spawn_email_backfill(services.commands.clone(), serve.email_backfill_batch as usize);
    let (snapshots_stop, snapshots_stopped) = watch::channel(false);
    let snapshots = snapshot_path.clone().map(|path| {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = std::fs::create_dir_all(folder) {
                tracing::warn!(path = %folder.display(), error = %e, "cannot create the snapshot folder");
            }
        }
        tokio::spawn(run_snapshots(hot.clone(), path, serve.snapshot_schedule(), snapshots_stopped))
    });

    // Handlers installed before the address is printed: a SIGTERM sent as soon as the server
    // says it listens still shuts it down cleanly (queue drained, snapshot written).
    let signalled = shutdown_signal();
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, "licensd listening");
    // One machine-readable line on stdout, so scripts and tests can find a port picked with :0.
    println!("{}", serde_json::json!({ "listening": addr.to_string(), "scheme": scheme }));
    let _ = std::io::stdout().flush();

    let mut api_config = ApiConfig {
        max_body_bytes: serve.max_body_bytes,
        auth: serve.auth(),
        webhook_allow_http_loopback: serve.webhook_allow_http_loopback,
        webhook_destinations: serve.webhook_destinations(),
        api_burst: serve.api_burst,
        api_per_second: serve.api_per_second,
        stripe_signature_tolerance_secs: serve.stripe_signature_tolerance_secs,
        dashboard: serve.dashboard(),
        portal,
        projection_stuck: std::time::Duration::from_secs(serve.projection_stuck_secs),
        body_read_timeout: Duration::from_millis(serve.body_read_timeout_ms.max(1)),
        live_model: serve.live_model(),
        live: serve.live.config(tls.is_some()),
        app_users: serve.app_users.config(),
        files: serve.files.config(blobs),
        access_log: serve.access_log,
        trusted_proxies,
        node,
        request_spans: crate::telemetry::configured(),
        ..ApiConfig::default()
    };
    api_config.read_your_writes_timeout = std::time::Duration::from_millis(serve.read_your_writes_timeout_ms);
    api_config.idempotency_ttl = std::time::Duration::from_secs(serve.idempotency_ttl_secs.max(1));
    api_config.export_max_rows = serve.export_max_rows;
    api_config.presence_flush = Duration::from_millis(serve.presence_flush_ms);
    api_config.idempotency_lease = std::time::Duration::from_secs(serve.idempotency_lease_secs);
    let snapshot_runner = hot_runner.clone();
    let state = AppState::new(services.commands.clone(), hot.clone(), hot_runner, api_config)?;
    if let Some(path) = snapshot_path.clone() {
        state.metrics.set_extra(Arc::new(move |out: &mut String| snapshot_age(&path, out)));
    }
    // Removals of deleted files' bytes that a process left pending (its own, or another node's).
    state.files.start_sweeps();
    let live = state.live.clone();
    let presence = licensd_api::presence::spawn_flusher(state.clone());
    let app = router(state);
    let (stopping, stop) = watch::channel(false);
    let closing = live.clone();
    tokio::spawn(async move {
        signalled.await;
        tracing::info!("shutdown requested; finishing in-flight requests");
        // Live sockets left the HTTP server's accounting when they upgraded: each is closed
        // with 1000 here, and the shutdown waits for them below.
        closing.shut_down();
        stopping.send_replace(true);
    });
    let mut graceful = stop.clone();
    let stopped = async move {
        let _ = graceful.wait_for(|s| *s).await;
    };
    let grace = Duration::from_secs(serve.shutdown_grace_secs);
    let mut deadline = stop;
    let limits = serve.connection_limits();
    let served = async {
        match tls {
            Some(tls) => licensd_api::serve(TlsListener::new(listener, tls)?, app, limits, stopped).await,
            None => licensd_api::serve(plain_listener(listener), app, limits, stopped).await,
        }
        live.drained().await;
        Ok::<_, std::io::Error>(())
    };
    tokio::select! {
        served = served => served.context("HTTP server failed")?,
        _ = async { let _ = deadline.wait_for(|s| *s).await; tokio::time::sleep(grace).await } => {
            tracing::warn!("grace period over; dropping remaining connections");
        }
    }
    presence.abort();
    snapshots_stop.send_replace(true);
    if let Some(task) = snapshots {
        let _ = task.await;
    }
    let mut services = services;
    services.close_writer().await;
    // Every acknowledged write is in the log: the model follows it to the end and is written,
    // without waiting for the SQL read models to finish their own catch-up.
    if let Some(path) = snapshot_path {
        match snapshot_runner.catch_up().await {
            Ok(_) => drop(write_logged(hot, path).await),
            Err(e) => tracing::warn!(error = %e, "the in-memory model cannot follow the log; no snapshot at shutdown"),
        }
    }
    services.shutdown(Some(workers)).await;
    tracing::info!("licensd stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT; the handlers are installed when this is called, not when
/// the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let signals = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
        async move {
            match signals {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                _ => std::future::pending().await,
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `licensd_snapshot_age_seconds`: seconds since the snapshot file was last written (absent
/// while there is none yet).
fn snapshot_age(path: &std::path::Path, out: &mut String) {
    use std::fmt::Write as _;
    let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else { return };
    let age = modified.elapsed().unwrap_or_default().as_secs();
    let _ = writeln!(
        out,
        "# HELP licensd_snapshot_age_seconds Seconds since the in-memory model's snapshot was last written.\n# TYPE licensd_snapshot_age_seconds gauge\nlicensd_snapshot_age_seconds {age}"
    );
}

/// Indexes the buyer emails an older release stored without their digest (see
/// `licensd_workers::email_index`), beside serving: every node may run it, none doubles an event.
fn spawn_email_backfill(commands: licensd_commands::Commands, batch: usize) {
    tokio::spawn(async move {
        match licensd_workers::email_index::backfill_buyer_emails(&commands, batch).await {
            Ok(done) if done.indexed > 0 => {
                tracing::info!(seen = done.seen, indexed = done.indexed, "buyer emails indexed for the email filter")
            }
            Ok(_) => {}
            // Resumable: the next start finds what is left.
            Err(e) => tracing::warn!(error = %e, "buyer email backfill stopped; the next start resumes it"),
        }
    });
}
