//! The client side of the live benchmark: real WebSocket sessions (tokio-tungstenite) opened
//! the way a Blazeauth SDK opens them (initialize, authorize by license, subscribe), from several
//! 127.0.0.x source addresses so the ports of one address are never the limit.

use anyhow::{bail, ensure};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

pub type Stream = WebSocketStream<TcpStream>;

/// Longest wait for one answer while opening a session (the server may be busy opening
/// thousands of others).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Small buffers: the library's defaults (128 KiB each) would make tens of thousands of client
/// sockets cost gigabytes on the machine the server is measured on.
fn config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
}

/// The source address of the `i`-th session: 127.0.0.2, 127.0.0.3, ... round robin.
pub fn source(i: usize, sources: usize) -> IpAddr {
    let k = 2 + i % sources.clamp(1, 250);
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, k as u8))
}

/// TCP from `source`, then the WebSocket upgrade of `GET /ws`.
pub async fn connect(server: SocketAddr, source: IpAddr) -> anyhow::Result<Stream> {
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(server).await?;
    tcp.set_nodelay(true)?;
    let url = format!("ws://{server}/ws");
    let (stream, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(config())).await?;
    Ok(stream)
}

/// Sends a packet and returns its answer (panel events that arrive meanwhile are skipped).
pub async fn call(stream: &mut Stream, packet: Value) -> anyhow::Result<Value> {
    stream.send(Message::Text(packet.to_string().into())).await?;
    loop {
        let Ok(next) = tokio::time::timeout(ANSWER_TIMEOUT, stream.next()).await else {
            bail!("no answer to {packet} within {ANSWER_TIMEOUT:?}");
        };
        match next {
            Some(Ok(Message::Text(text))) => {
                let answer: Value = serde_json::from_str(text.as_str())?;
                if answer.get("event_type").is_none() {
                    return Ok(answer);
                }
            }
            Some(Ok(Message::Close(frame))) => bail!("closed instead of answering {packet}: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("the socket ended before answering {packet}"),
        }
    }
}

fn expect_ok(answer: &Value, what: &str) -> anyhow::Result<()> {
    ensure!(answer["status"] == 1, "{what} answered {answer}");
    Ok(())
}

/// What one session does after connecting.
#[derive(Clone, Copy)]
pub struct Opening<'a> {
    pub ws_key: &'a str,
    pub client_id: &'a str,
    pub license: Option<&'a str>,
    pub subscribe: bool,
}

/// Connects, initializes, authorizes (with a license) and subscribes (when asked); every
/// answer must be status 1.
pub async fn open(server: SocketAddr, source: IpAddr, opening: Opening<'_>) -> anyhow::Result<Stream> {
    let mut stream = connect(server, source).await?;
    let init = json!({"type": 0, "id": 1, "websocket_api_key": opening.ws_key, "client_id": opening.client_id});
    expect_ok(&call(&mut stream, init).await?, "initialize")?;
    if let Some(license) = opening.license {
        expect_ok(&call(&mut stream, json!({"type": 2, "id": 2, "license": license})).await?, "authorize")?;
    }
    if opening.subscribe {
        expect_ok(&call(&mut stream, json!({"type": 17, "id": 3, "subscribed": true})).await?, "subscribe")?;
    }
    Ok(stream)
}

/// Closes with 1000 (the session ends on the server, no resume) and waits for the server's
/// close (or the end of the socket).
pub async fn close(stream: &mut Stream) {
    let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
    if stream.close(Some(frame)).await.is_err() {
        return;
    }
    let _ =
        tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = stream.next().await {} }).await;
}

/// The next panel event's type (answers and pings skipped); `None` on a close or an error.
pub async fn next_event(stream: &mut Stream) -> Option<u64> {
    while let Some(Ok(message)) = stream.next().await {
        if let Message::Text(text) = message {
            let frame: Value = serde_json::from_str(text.as_str()).ok()?;
            if let Some(kind) = frame["event_type"].as_u64() {
                return Some(kind);
            }
        }
    }
    None
}

/// What held sessions received, counted without a lock: the fan-out waits for the count and
/// reads the time of the last frame.
#[derive(Default)]
pub struct Tally {
    pub events: AtomicU64,
    pub closes: AtomicU64,
    /// Nanoseconds since the tally's base instant.
    pub last_event_ns: AtomicU64,
    pub last_close_ns: AtomicU64,
    /// Sockets that ended without a close frame.
    pub dropped: AtomicU64,
}

impl Tally {
    pub fn reset(&self) {
        for counter in [&self.events, &self.closes, &self.last_event_ns, &self.last_close_ns] {
            counter.store(0, Ordering::SeqCst);
        }
    }
}

/// Keeps `stream` open (answering pings, counting panel events and closes) until `stop`
/// turns true, then closes it with 1000.
pub fn hold(
    mut stream: Stream,
    tally: Arc<Tally>,
    base: Instant,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let since = |base: Instant| base.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        loop {
            tokio::select! {
                // The guard `wait_for` yields must not live across the close's await.
                _ = async { drop(stop.wait_for(|stop| *stop).await) } => {
                    close(&mut stream).await;
                    return;
                }
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) if text.as_str().contains("event_type") => {
                        // The time first, then the count: whoever sees the count sees the time.
                        tally.last_event_ns.fetch_max(since(base), Ordering::SeqCst);
                        tally.events.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(Ok(Message::Close(_))) => {
                        tally.last_close_ns.fetch_max(since(base), Ordering::SeqCst);
                        tally.closes.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        tally.dropped.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                },
            }
        }
    })
}
