//! Protected file delivery (issue 18's benchmark), against the real binary on SQLite, all in one
//! run on one machine:
//!
//! - **baseline**: a plain loopback TCP copy of the same file (a tiny server in this process
//!   reads the file and writes it to a socket; the client reads it);
//! - **stream**: a WebSocket session (tokio-tungstenite) downloads the file with packet 7 in
//!   stream mode (binary chunk frames of 64 KiB);
//! - **url**: the same in URL mode, `GET /files/dl/{token}` over HTTP (reqwest);
//! - **concurrent**: N clients (50 by default) download the whole file at once, in stream mode
//!   and then in URL mode; the server's resident memory (VmRSS of /proc, sampled every 20 ms)
//!   before and at its peak.
//!
//! Every client (the baseline's too) hashes what it receives with SHA-256 and the run fails
//! unless each digest is the file's: the client work is the same in every mode, so the ratios
//! compare the server's paths. MB is 10^6 bytes. The file is written to disk (random bytes in
//! 1 MiB pieces, never whole in memory) and uploaded through the Developer API as a stream.

use crate::deployment::{rss_of, Backend, Deployment};
use crate::fixture;
use crate::live::client;
use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Bytes the baseline's server and every client read at once.
const IO_BYTES: usize = 256 * 1024;
const NAME: &str = "bench.bin";

#[derive(Debug, Clone)]
pub struct FilesOptions {
    pub licensd: PathBuf,
    /// Size of the file, bytes.
    pub size: u64,
    /// Clients of the concurrent run (0 skips it).
    pub clients: usize,
    /// The concurrent run's modes, in order: `false` stream, `true` URL.
    pub url_modes: Vec<bool>,
    /// Folder the file is written to (default: the system's temporary folder).
    pub scratch: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub seconds: f64,
    pub mb_per_s: f64,
    /// Received bytes hashed to the file's SHA-256.
    pub verified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Concurrent {
    /// `stream` or `url`.
    pub mode: String,
    pub clients: usize,
    pub seconds: f64,
    /// All clients together.
    pub mb_per_s: f64,
    pub verified: usize,
    pub rss_before_bytes: u64,
    pub rss_peak_bytes: u64,
    pub rss_increase_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilesResults {
    pub size_bytes: u64,
    pub sha256: String,
    pub upload: Throughput,
    pub baseline: Throughput,
    pub stream: Throughput,
    pub url: Throughput,
    /// stream ÷ baseline (target ≥ 0.6).
    pub stream_ratio: f64,
    /// url ÷ baseline (target ≥ 0.8).
    pub url_ratio: f64,
    pub concurrent: Vec<Concurrent>,
    /// `uptime` before the run (other work on the machine skews every figure).
    pub load_before: String,
    pub cpus: usize,
}

fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

/// Writes `size` random bytes to `path` in 1 MiB pieces; returns their SHA-256.
fn write_file(path: &Path, size: u64) -> anyhow::Result<String> {
    use std::io::Write;
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut piece = vec![0u8; 1 << 20];
    let mut state: u64 = rand::random::<u64>() | 1;
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left).map_or(piece.len(), |left| left.min(piece.len()));
        for word in piece[..n].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        hasher.update(&piece[..n]);
        file.write_all(&piece[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    file.get_ref().sync_all()?;
    Ok(hex::encode(hasher.finalize()))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map(|l| l.trim().to_string()).unwrap_or_default()
}

pub async fn run(options: &FilesOptions) -> anyhow::Result<FilesResults> {
    let scratch = options.scratch.clone().unwrap_or_else(std::env::temp_dir);
    let path = scratch.join(format!("licensd-bench-{}-files.bin", std::process::id()));
    eprintln!("== files: writing {} bytes to {}", options.size, path.display());
    let (size, file) = (options.size, path.clone());
    let sha256 = tokio::task::spawn_blocking(move || write_file(&file, size)).await??;
    let outcome = on_file(options, &path, &sha256).await;
    let _ = std::fs::remove_file(&path);
    outcome
}

async fn on_file(options: &FilesOptions, path: &Path, sha256: &str) -> anyhow::Result<FilesResults> {
    let load_before = load_average();
    let deployment = Deployment::create(Backend::Sqlite, &options.licensd, "", "files")?;
    let mut env = crate::live::limits_lifted();
    let clients = options.clients.max(1);
    env.extend([
        ("LICENSD_FILE_MAX_BYTES", options.size.max(1).to_string()),
        ("LICENSD_FILE_DAILY_BYTES_PER_IDENTITY", "0".to_string()),
        ("LICENSD_FILE_MAX_TRANSFERS_PER_APP", (clients + 4).to_string()),
        ("LICENSD_LIVE_WRITE_TIMEOUT_SECS", "600".to_string()),
        ("LICENSD_BODY_READ_TIMEOUT_MS", "600000".to_string()),
    ]);
    let server = deployment.start(&env)?;
    let outcome = on_server(&deployment, &server.base_url, server.pid(), options, path, sha256).await;
    server.stop();
    let mut results = outcome?;
    results.load_before = load_before;
    Ok(results)
}

/// What the clients need to reach the file.
struct Setup {
    base_url: String,
    addr: SocketAddr,
    api_key: String,
    app_id: String,
    ws_key: String,
    licenses: Vec<String>,
    size: u64,
    sha256: String,
}

async fn on_server(
    deployment: &Deployment,
    base_url: &str,
    pid: u32,
    options: &FilesOptions,
    path: &Path,
    sha256: &str,
) -> anyhow::Result<FilesResults> {
    let merchant = fixture::merchant(deployment, base_url, 1_000_000_000).await?;
    let http = reqwest::Client::new();
    let app_id = merchant.app.app_id.clone();
    let answer = http
        .post(format!("{base_url}/v1/apps/{app_id}/websocket-key"))
        .bearer_auth(&merchant.api_key)
        .json(&json!({}))
        .send()
        .await?;
    let answer: Value = answer.json().await?;
    let ws_key = answer["websocketApiKey"].as_str().context("no websocketApiKey")?.to_string();
    let clients = options.clients.max(1);
    let licenses = fixture::licenses(base_url, &merchant, clients + 2, 2, 4).await?;
    let setup = Setup {
        base_url: base_url.to_string(),
        addr: base_url.trim_start_matches("http://").parse()?,
        api_key: merchant.api_key.clone(),
        app_id,
        ws_key,
        licenses,
        size: options.size,
        sha256: sha256.to_string(),
    };

    eprintln!("== files: upload");
    let upload = upload(&setup, path).await?;
    eprintln!("   {:.0} MB/s", upload.mb_per_s);
    eprintln!("== files: baseline (loopback TCP copy)");
    let baseline = baseline(path, &setup).await?;
    eprintln!("   {:.0} MB/s", baseline.mb_per_s);
    eprintln!("== files: stream mode (packet 7 over WebSocket)");
    set_url_mode(&setup, false).await?;
    let stream = verify(&setup, timed(setup.size, stream_download(&setup, 0)).await?, "stream")?;
    eprintln!("   {:.0} MB/s", stream.mb_per_s);
    eprintln!("== files: URL mode (GET /files/dl/{{token}})");
    set_url_mode(&setup, true).await?;
    let url = verify(&setup, timed(setup.size, url_download(&setup, 0)).await?, "url")?;
    eprintln!("   {:.0} MB/s", url.mb_per_s);

    let mut concurrent = Vec::new();
    if options.clients > 0 {
        for &url_mode in &options.url_modes {
            set_url_mode(&setup, url_mode).await?;
            let mode = if url_mode { "url" } else { "stream" };
            eprintln!("== files: {} clients at once, {mode} mode", options.clients);
            let run = at_once(&setup, pid, options.clients, url_mode).await?;
            eprintln!(
                "   RSS {} → {} MiB (+{} MiB), {:.0} MB/s together",
                run.rss_before_bytes >> 20,
                run.rss_peak_bytes >> 20,
                run.rss_increase_bytes >> 20,
                run.mb_per_s
            );
            concurrent.push(Concurrent { mode: mode.to_string(), ..run });
        }
    }
    Ok(FilesResults {
        size_bytes: setup.size,
        sha256: setup.sha256.clone(),
        stream_ratio: stream.mb_per_s / baseline.mb_per_s,
        url_ratio: url.mb_per_s / baseline.mb_per_s,
        upload,
        baseline,
        stream,
        url,
        concurrent,
        load_before: String::new(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// Runs one download (which returns the digest of what it received) and times it.
async fn timed(
    size: u64,
    download: impl std::future::Future<Output = anyhow::Result<String>>,
) -> anyhow::Result<(Throughput, String)> {
    let started = Instant::now();
    let digest = download.await?;
    let elapsed = started.elapsed();
    Ok((Throughput { seconds: elapsed.as_secs_f64(), mb_per_s: mb_per_s(size, elapsed), verified: false }, digest))
}

async fn upload(setup: &Setup, path: &Path) -> anyhow::Result<Throughput> {
    let url = format!("{}/v1/apps/{}/files/{NAME}", setup.base_url, setup.app_id);
    let (api_key, path, size) = (setup.api_key.clone(), path.to_path_buf(), setup.size);
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || -> anyhow::Result<Value> {
        let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(3600)).build()?;
        let body = reqwest::blocking::Body::sized(std::fs::File::open(path)?, size);
        let response = client.put(url).bearer_auth(api_key).body(body).send()?;
        let status = response.status();
        let answer: Value = response.json().unwrap_or(Value::Null);
        ensure!(status.as_u16() == 201, "the upload answered {status}: {answer}");
        Ok(answer)
    })
    .await??;
    let elapsed = started.elapsed();
    let verified = answer["sha256"] == setup.sha256.as_str() && answer["size"] == setup.size;
    ensure!(verified, "the server stored other bytes: {answer}");
    Ok(Throughput { seconds: elapsed.as_secs_f64(), mb_per_s: mb_per_s(setup.size, elapsed), verified })
}

async fn set_url_mode(setup: &Setup, on: bool) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .put(format!("{}/v1/apps/{}/settings", setup.base_url, setup.app_id))
        .bearer_auth(&setup.api_key)
        .json(&json!({ "fileDownloadUrl": on }))
        .send()
        .await?;
    ensure!(response.status().is_success(), "settings answered {}", response.status());
    Ok(())
}

fn verify(setup: &Setup, (mut throughput, digest): (Throughput, String), what: &str) -> anyhow::Result<Throughput> {
    ensure!(digest == setup.sha256, "{what}: the bytes received hash to {digest}, not {}", setup.sha256);
    throughput.verified = true;
    Ok(throughput)
}

/// The baseline: a thread of this process serves the file on a loopback socket with blocking
/// reads of 256 KiB written as they come, another thread reads and hashes it (plain blocking
/// I/O, no runtime in between). The file is read through once before, untimed, so the page
/// cache holds it as it holds the server's copy.
async fn baseline(path: &Path, setup: &Setup) -> anyhow::Result<Throughput> {
    use std::io::{Read, Write};
    let path = path.to_path_buf();
    let size = setup.size;
    let measured = tokio::task::spawn_blocking(move || -> anyhow::Result<(Throughput, String)> {
        std::io::copy(&mut std::fs::File::open(&path)?, &mut std::io::sink())?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let server = std::thread::spawn(move || -> anyhow::Result<()> {
            let (mut socket, _) = listener.accept()?;
            let mut file = std::fs::File::open(path)?;
            let mut buffer = vec![0u8; IO_BYTES];
            loop {
                let n = file.read(&mut buffer)?;
                if n == 0 {
                    return Ok(());
                }
                socket.write_all(&buffer[..n])?;
            }
        });
        let started = Instant::now();
        let mut socket = std::net::TcpStream::connect(addr)?;
        let (mut hasher, mut buffer, mut received) = (Sha256::new(), vec![0u8; IO_BYTES], 0u64);
        loop {
            let n = socket.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            received += n as u64;
        }
        let elapsed = started.elapsed();
        server.join().map_err(|_| anyhow::anyhow!("the baseline server panicked"))??;
        ensure!(received == size, "the baseline received {received} bytes");
        let throughput =
            Throughput { seconds: elapsed.as_secs_f64(), mb_per_s: mb_per_s(size, elapsed), verified: false };
        Ok((throughput, hex::encode(hasher.finalize())))
    })
    .await??;
    verify(setup, measured, "baseline")
}

/// Connects with the library's default buffers (the live benchmark's are small on purpose, for
/// tens of thousands of idle sessions; a download wants large reads).
async fn session(setup: &Setup, n: usize) -> anyhow::Result<client::Stream> {
    let tcp = tokio::net::TcpStream::connect(setup.addr).await?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{}/ws", setup.addr);
    let (mut stream, _) = tokio_tungstenite::client_async(url, tcp).await?;
    let client_id = format!("bench-files-{n}");
    let init = json!({"type": 0, "id": 1, "websocket_api_key": setup.ws_key, "client_id": client_id});
    let answer = client::call(&mut stream, init).await?;
    ensure!(answer["status"] == 1, "initialize answered {answer}");
    let license = setup.licenses.get(n).context("not enough licenses")?;
    let answer = client::call(&mut stream, json!({"type": 2, "id": 2, "license": license})).await?;
    ensure!(answer["status"] == 1, "authorize answered {answer}");
    Ok(stream)
}

/// Stream mode: packet 7, then chunk frames (`u32 BE JSON length | JSON | bytes`) to the one
/// with `status`; returns the digest of the bytes.
async fn stream_download(setup: &Setup, n: usize) -> anyhow::Result<String> {
    let mut stream = session(setup, n).await?;
    futures::SinkExt::send(
        &mut stream,
        Message::Text(json!({"type": 7, "id": 7, "filename": NAME}).to_string().into()),
    )
    .await?;
    let (mut hasher, mut received) = (Sha256::new(), 0u64);
    loop {
        let message = match tokio::time::timeout(Duration::from_secs(120), stream.next()).await {
            Ok(Some(message)) => message?,
            Ok(None) => bail!("the socket ended after {received} bytes"),
            Err(_) => bail!("no frame for 120 s after {received} bytes"),
        };
        let meta: Value = match &message {
            Message::Binary(frame) => {
                ensure!(frame.len() >= 4, "a short frame");
                let length = u32::from_be_bytes(frame[..4].try_into()?) as usize;
                ensure!(frame.len() >= 4 + length, "a frame shorter than its metadata");
                let meta: Value = serde_json::from_slice(&frame[4..4 + length])?;
                ensure!(meta["offset"] == received, "a chunk at {} after {received} bytes", meta["offset"]);
                let bytes = &frame[4 + length..];
                hasher.update(bytes);
                received += bytes.len() as u64;
                meta
            }
            Message::Text(text) => serde_json::from_str(text.as_str())?,
            _ => continue,
        };
        if meta.get("event_type").is_some() {
            continue;
        }
        if let Some(status) = meta.get("status") {
            ensure!(*status == 1, "the stream ended with {meta}");
            ensure!(received == setup.size, "the stream ended after {received} bytes");
            let digest = hex::encode(hasher.finalize());
            ensure!(meta["range_checksum"] == digest.as_str(), "range_checksum {} ≠ {digest}", meta["range_checksum"]);
            client::close(&mut stream).await;
            return Ok(digest);
        }
    }
}

/// URL mode: packet 7 answers the URL, a plain GET downloads it.
async fn url_download(setup: &Setup, n: usize) -> anyhow::Result<String> {
    let mut stream = session(setup, n).await?;
    let answer = client::call(&mut stream, json!({"type": 7, "id": 7, "filename": NAME})).await?;
    ensure!(answer["status"] == 1, "packet 7 answered {answer}");
    let url = answer["presigned_url"].as_str().context("no presigned_url")?.to_string();
    let mut response = reqwest::Client::new().get(url).send().await?;
    ensure!(response.status().as_u16() == 200, "the download answered {}", response.status());
    let (mut hasher, mut received) = (Sha256::new(), 0u64);
    while let Some(chunk) = response.chunk().await? {
        hasher.update(&chunk);
        received += chunk.len() as u64;
    }
    ensure!(received == setup.size, "the download ended after {received} bytes");
    client::close(&mut stream).await;
    Ok(hex::encode(hasher.finalize()))
}

/// `clients` downloads at once (each its own session and license), with the server's RSS
/// sampled every 20 ms from before the first starts to after the last ends.
async fn at_once(setup: &Setup, pid: u32, clients: usize, url_mode: bool) -> anyhow::Result<Concurrent> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_of(pid);
    let (done, peak) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(rss_before)));
    let sampler = {
        let (done, peak) = (done.clone(), peak.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_of(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let downloads = futures::future::join_all((0..clients).map(|n| async move {
        if url_mode {
            url_download(setup, n + 1).await
        } else {
            stream_download(setup, n + 1).await
        }
    }))
    .await;
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let mut verified = 0;
    for outcome in downloads {
        let digest = outcome?;
        ensure!(digest == setup.sha256, "a concurrent download hashed to {digest}");
        verified += 1;
    }
    let rss_peak = peak.load(Ordering::Relaxed);
    Ok(Concurrent {
        mode: String::new(),
        clients,
        seconds: elapsed.as_secs_f64(),
        mb_per_s: mb_per_s(setup.size * clients as u64, elapsed),
        verified,
        rss_before_bytes: rss_before,
        rss_peak_bytes: rss_peak,
        rss_increase_bytes: rss_peak.saturating_sub(rss_before),
    })
}

pub mod report {
    //! The "Protected file delivery" section of BENCHMARKS.md, and the `files` key of
    //! BENCHMARKS.json.

    use super::FilesResults;
    use std::fmt::Write;

    pub const HEADING: &str = "## Protected file delivery (stream and URL mode; SQLite)";

    pub fn section(r: &FilesResults) -> String {
        let mut md = String::new();
        let mib = |b: u64| b as f64 / 1048576.0;
        let _ = writeln!(md, "{HEADING}\n");
        let _ = writeln!(
            md,
            "`licensd-bench files --size {} --clients {}`: the release binary on SQLite, a {:.0} MiB file of \
             random bytes, clients in the bench process on the same {} cores (load average before the run: \
             {}). Every client hashes what it receives (SHA-256) and the run fails unless it is the file's; \
             the baseline's client does the same, so the ratios compare the server's paths. MB = 10^6 bytes.\n",
            r.size_bytes,
            r.concurrent.first().map_or(0, |c| c.clients),
            mib(r.size_bytes),
            r.cpus,
            r.load_before
        );
        let _ = writeln!(md, "| measure | MB/s | ratio to the baseline | target |");
        let _ = writeln!(md, "|---|---|---|---|");
        let _ = writeln!(md, "| upload (`PUT`, streamed to the blob store) | {:.0} | | |", r.upload.mb_per_s);
        let _ = writeln!(
            md,
            "| baseline: loopback TCP copy of the file (256 KiB reads) | {:.0} | 1 | |",
            r.baseline.mb_per_s
        );
        let _ = writeln!(
            md,
            "| stream mode (packet 7, 64 KiB binary frames over WebSocket) | {:.0} | **{:.2}** | ≥ 0.6 {} |",
            r.stream.mb_per_s,
            r.stream_ratio,
            if r.stream_ratio >= 0.6 { "(met)" } else { "(missed)" }
        );
        let _ = writeln!(
            md,
            "| URL mode (`GET /files/dl/{{token}}`) | {:.0} | **{:.2}** | ≥ 0.8 {} |",
            r.url.mb_per_s,
            r.url_ratio,
            if r.url_ratio >= 0.8 { "(met)" } else { "(missed)" }
        );
        md.push('\n');
        if !r.concurrent.is_empty() {
            let _ = writeln!(
                md,
                "| clients at once | mode | server RSS before → peak | increase (target + 64 MiB) | MB/s together |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|");
            for c in &r.concurrent {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} → {:.0} MiB | **+{:.1} MiB** {} | {:.0} |",
                    c.clients,
                    c.mode,
                    mib(c.rss_before_bytes),
                    mib(c.rss_peak_bytes),
                    mib(c.rss_increase_bytes),
                    if c.rss_increase_bytes <= 64 << 20 { "(met)" } else { "(missed)" },
                    c.mb_per_s
                );
            }
            md.push('\n');
        }
        md
    }

    /// Replaces the section in `markdown` (or appends it).
    pub fn replace_section(markdown: &str, section: &str) -> String {
        crate::report::replace_section(markdown, HEADING, section, None)
    }

    /// `json` (BENCHMARKS.json's text) with its `files` key set to the results.
    pub fn with_json(json: &str, r: &FilesResults) -> anyhow::Result<String> {
        crate::report::with_json_key(json, "files", r)
    }
}
