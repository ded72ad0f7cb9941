//! The HTTP/1.1 server loop, with the limits `axum::serve` does not have: at most
//! `max_connections` connections at once, a deadline for a request's headers (slowloris), and
//! a deadline for a connection with no traffic at all. An idle or hostile socket therefore holds
//! a connection slot for a bounded time, and when every slot is taken the stalest connection is
//! asked to close (after its in-flight request, if any) so a new client is served at once.

use crate::PeerAddr;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use axum::Router;
use dashmap::DashMap;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections beyond `max_connections` being refused (429) at once; past it a new
    /// connection is closed unanswered.
    pub max_refusing: usize,
    /// Time a client has to send a request's headers, counted from when the server waits for
    /// them (so it also bounds the wait for the next request on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// A connection without a byte read or written for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_refusing: 4096,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// An open connection: when it last moved a byte, how many requests it is serving, and how to
/// ask it to close.
struct Conn {
    activity: Arc<AtomicU64>,
    busy: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

/// When each open connection last moved a byte, and how to ask it to close.
#[derive(Default)]
struct Open {
    next_id: AtomicU64,
    connections: DashMap<u64, Conn>,
}

impl Open {
    /// Asks the connection idle the longest to close, among those serving no request: closing
    /// a busy one frees no slot sooner (it finishes its request first) and only makes its
    /// client reconnect.
    fn evict_stalest_idle(&self) {
        let stalest = self
            .connections
            .iter()
            .filter(|c| c.value().busy.load(Ordering::Relaxed) == 0)
            .min_by_key(|c| c.value().activity.load(Ordering::Relaxed))
            .map(|c| c.value().close.clone());
        if let Some(close) = stalest {
            close.notify_one();
        }
    }
}

/// How long a connection arriving when every slot is taken waits for one (an idle connection
/// asked to make way closes within moments) before it is refused.
const SLOT_WAIT: Duration = Duration::from_millis(100);
/// The deadline for the request of a connection that is only refused (headers, then body).
const REFUSAL_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The most of a refused request's body read before answering.
const REFUSAL_BODY_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish their
/// requests (the caller bounds how long).
///
/// Connections are always accepted at once. Beyond `max_connections`, a new connection makes
/// the stalest idle one close and takes its slot; when none is idle (overload), it is answered
/// `429 rate_limited` with `Retry-After: 1` and closed, so a client learns within moments that
/// it must back off. Leaving it in the kernel's accept queue instead made clients wait, and once
/// that queue overflowed, retry their connection for seconds (timeouts and resets, not 429s).
/// At most `max_refusing` connections are being refused at once; beyond those, a connection is
/// closed unanswered.
pub async fn serve<L>(mut listener: L, app: Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()>)
where
    L: Listener<Addr = SocketAddr>,
    L::Io: Unpin + Send + 'static,
{
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let refusing = Arc::new(Semaphore::new(limits.max_refusing));
    let open = Arc::new(Open::default());
    let started = Instant::now();
    let (stopping, stop) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let connection = Connection { open: open.clone(), app: app.clone(), limits, started, stop: stop.clone() };
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            tokio::spawn(connection.serve(io, peer, slot));
            continue;
        }
        let Ok(refusal) = refusing.clone().try_acquire_owned() else {
            drop(io);
            continue;
        };
        // Only once its request arrived does an over-limit connection ask an idle one to make
        // way: a socket that never sends a request (idle, hostile) takes no slot from one that does.
        let (open, slots, app) = (open.clone(), slots.clone(), app.clone());
        tokio::spawn(over_limit(io, peer, refusal, open, slots, app));
    }
    stopping.send_replace(true);
    // Every slot back means every connection finished.
    let _ = slots.acquire_many(max as u32).await;
}

/// What serving one connection needs.
struct Connection {
    open: Arc<Open>,
    app: Router,
    limits: ConnectionLimits,
    started: Instant,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn serve<Io>(self, io: Io, peer: SocketAddr, slot: OwnedSemaphorePermit)
    where
        Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self { open, app, limits, started, mut stop } = self;
        let id = open.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(AtomicU64::new(started.elapsed().as_millis() as u64));
        let busy = Arc::new(AtomicUsize::new(0));
        let close = Arc::new(Notify::new());
        open.connections.insert(id, Conn { activity: activity.clone(), busy: busy.clone(), close: close.clone() });
        let io = TokioIo::new(Watched { inner: io, activity: activity.clone(), started });
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
            let serving = Busy::new(busy.clone());
            let response = tower::ServiceExt::oneshot(app.clone(), request.map(axum::body::Body::new));
            async move {
                let response = response.await;
                drop(serving);
                response
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
        // Upgraded (WebSocket) sockets leave this loop's slot and idle watch once upgraded: they
        // have their own liveness (pings) and their own cap (`LICENSD_LIVE_MAX_SESSIONS`).
        let connection = builder.serve_connection(io, service).with_upgrades();
        tokio::pin!(connection);
        let idle = idle_for(activity, started, limits.idle_timeout);
        tokio::pin!(idle);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                _ = &mut idle, if !closing => closing = true,
                _ = close.notified(), if !closing => closing = true,
                _ = stop.wait_for(|s| *s), if !closing => closing = true,
            }
            if closing {
                connection.as_mut().graceful_shutdown();
            }
        }
        open.connections.remove(&id);
        drop(slot);
    }
}

/// Counts a request in flight on its connection while alive.
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one request of a connection that arrived with every slot taken, then closes it: in a
/// slot freed by an idle connection asked to close, or, when none frees within `SLOT_WAIT`,
/// answered `429 rate_limited` (`Retry-After: 1`, in the shape of its endpoint).
async fn over_limit<Io>(
    io: Io,
    peer: SocketAddr,
    _refusal: OwnedSemaphorePermit,
    open: Arc<Open>,
    slots: Arc<Semaphore>,
    app: Router,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use axum::response::IntoResponse;
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let (open, slots, app) = (open.clone(), slots.clone(), app.clone());
        async move {
            open.evict_stalest_idle();
            if let Ok(Ok(_slot)) = tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await {
                request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
                return tower::ServiceExt::oneshot(app, request.map(axum::body::Body::new)).await;
            }
            let sdk = request.uri().path().starts_with("/auth/");
            // The (small) body is read first: closing a socket with unread bytes resets it, and
            // the client could lose the answer.
            let body = http_body_util::Limited::new(request.into_body(), REFUSAL_BODY_BYTES);
            let _ = tokio::time::timeout(REFUSAL_HEADER_TIMEOUT, http_body_util::BodyExt::collect(body)).await;
            let mut response = if sdk {
                crate::auth::AuthError::RateLimited.into_response()
            } else {
                crate::ApiError::RateLimited.into_response()
            };
            response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(REFUSAL_HEADER_TIMEOUT).keep_alive(false);
    let _ = builder.serve_connection(TokioIo::new(io), service).await;
}

/// Ends once the connection moved no byte for `limit`.
async fn idle_for(activity: Arc<AtomicU64>, started: Instant, limit: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let quiet = started.elapsed().saturating_sub(last);
        if quiet >= limit {
            return;
        }
        tokio::time::sleep(limit - quiet).await;
    }
}

/// A socket that records when it last moved a byte.
struct Watched<Io> {
    inner: Io,
    activity: Arc<AtomicU64>,
    started: Instant,
}

impl<Io> Watched<Io> {
    fn touch(&self) {
        self.activity.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Watched<Io> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Watched<Io> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
