//! Holding many sessions from child processes: each process may only have as many sockets as
//! its open-file limit allows, so the held-session run spreads its clients over several
//! `licensd-bench live-hold` processes. A child opens its share, prints one JSON line, holds the
//! sessions until its stdin closes, then closes them with 1000 and exits.

use super::client::{self, Opening, Tally};
use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One child's share: sessions `first..first + count` of the key file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Share {
    pub server: SocketAddr,
    pub ws_key: String,
    /// One license key per line; session `i` authorizes with line `i` as client `held-<i>`.
    pub keys: PathBuf,
    pub first: usize,
    pub count: usize,
    pub sources: usize,
    pub concurrency: usize,
}

/// What a child prints once its share is open.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Opened {
    pub held: usize,
    pub failed: usize,
    pub seconds: f64,
    pub first_error: Option<String>,
}

/// The child's side (`licensd-bench live-hold <share as JSON>`).
pub async fn child(share: Share) -> anyhow::Result<()> {
    let keys = std::fs::read_to_string(&share.keys)?;
    let keys: Arc<Vec<String>> = Arc::new(keys.lines().map(str::to_string).collect());
    anyhow::ensure!(keys.len() >= share.first + share.count, "the key file has {} keys", keys.len());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let tally = Arc::new(Tally::default());
    let next = Arc::new(AtomicUsize::new(share.first));
    let end = share.first + share.count;
    let held = Arc::new(Mutex::new(Vec::with_capacity(share.count)));
    let first_error = Arc::new(Mutex::new(None));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..share.concurrency.max(1) {
        let (share, keys, next, held, first_error) =
            (share.clone(), keys.clone(), next.clone(), held.clone(), first_error.clone());
        let (tally, stopped) = (tally.clone(), stopped.clone());
        workers.spawn(async move {
            let mut failed = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return failed;
                }
                let client_id = format!("held-{i:07}");
                let opening =
                    Opening { ws_key: &share.ws_key, client_id: &client_id, license: Some(&keys[i]), subscribe: true };
                match client::open(share.server, client::source(i, share.sources), opening).await {
                    Ok(stream) => {
                        let task = client::hold(stream, tally.clone(), started, stopped.clone());
                        held.lock().expect("held").push(task);
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.lock().expect("first error").get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        });
    }
    let mut failed = 0;
    while let Some(joined) = workers.join_next().await {
        failed += joined?;
    }
    let tasks = std::mem::take(&mut *held.lock().expect("held"));
    let opened = Opened {
        held: tasks.len(),
        failed,
        seconds: started.elapsed().as_secs_f64(),
        first_error: first_error.lock().expect("first error").clone(),
    };
    println!("{}", serde_json::to_string(&opened)?);
    std::io::stdout().flush()?;
    // Hold until the parent closes our stdin (or exits).
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    let _ = stop.send(true);
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

/// A running child, holding its share.
pub struct Holder {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Holder {
    /// Starts a child for `share` (it starts opening at once).
    pub fn start(share: &Share) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["live-hold", &serde_json::to_string(share)?])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start a live-hold child")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(BufReader::new);
        Ok(Self { child, stdin, stdout })
    }

    /// Waits until the child has opened its share; what it opened.
    pub fn opened(&mut self) -> anyhow::Result<Opened> {
        let mut line = String::new();
        self.stdout.as_mut().context("no stdout")?.read_line(&mut line)?;
        serde_json::from_str(&line).with_context(|| format!("live-hold printed {line:?} (see its stderr)"))
    }

    /// Closes the child's stdin: it closes its sessions and exits.
    pub fn release(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes one key per line.
pub fn write_keys(path: &Path, keys: &[String]) -> anyhow::Result<()> {
    std::fs::write(path, keys.join("\n") + "\n")?;
    Ok(())
}
