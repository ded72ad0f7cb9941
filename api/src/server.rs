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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify, Semaphore};

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Connections served at once.
    pub max_connections: usize,
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
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// When each open connection last moved a byte, and how to ask it to close.
#[derive(Default)]
struct Open {
    next_id: AtomicU64,
    connections: DashMap<u64, (Arc<AtomicU64>, Arc<Notify>)>,
}

impl Open {
    /// Asks the connection idle the longest to close.
    fn evict_stalest(&self) {
        let stalest =
            self.connections.iter().min_by_key(|c| c.value().0.load(Ordering::Relaxed)).map(|c| c.value().1.clone());
        if let Some(close) = stalest {
            close.notify_one();
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then lets open connections finish their
/// requests (the caller bounds how long).
pub async fn serve<L>(mut listener: L, app: Router, limits: ConnectionLimits, shutdown: impl Future<Output = ()>)
where
    L: Listener<Addr = SocketAddr>,
    L::Io: Unpin,
{
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let open = Arc::new(Open::default());
    let started = Instant::now();
    let (stopping, stop) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                open.evict_stalest();
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    _ = &mut shutdown => break,
                }
            }
        };
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = &mut shutdown => break,
        };
        let id = open.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(AtomicU64::new(started.elapsed().as_millis() as u64));
        let close = Arc::new(Notify::new());
        open.connections.insert(id, (activity.clone(), close.clone()));
        let io = TokioIo::new(Watched { inner: io, activity: activity.clone(), started });
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(PeerAddr(peer)));
            tower::ServiceExt::oneshot(router.clone(), request.map(axum::body::Body::new))
        });
        let (open, mut stop) = (open.clone(), stop.clone());
        tokio::spawn(async move {
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
        });
    }
    stopping.send_replace(true);
    // Every slot back means every connection finished.
    let _ = slots.acquire_many(max as u32).await;
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
