//! Drives one socket of a session: reads packets in order and answers them, writes what the
//! session's outbox holds (responses, panel events, the close), pings, and enforces the
//! initialize deadline. A socket that drops without a close frame leaves the session resumable
//! for the resume window; a server close or a client close 1000 ends it.
//!
//! Every state has a deadline, so no socket is held forever by a client that went quiet:
//! before Initialize the init timeout (4202); once initialized the server's pings (no pong for
//! `pong_timeout`: a drop); a write blocked by a client that stopped reading, `write_timeout`
//! (a drop, the frame kept for the resume); a dropped session, the resume window.

use super::envelope::{self, Close};
use super::packets::{self, Ctx, Reply};
use super::session::{LiveSession, Out};
use super::Live;
use crate::AppState;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// How a socket's loop ended.
enum Exit {
    /// A newer socket resumed the session.
    TakenOver,
    /// The server closed (the close frame went out, or could not).
    ServerClosed,
    /// The client closed with 1000: the session is over.
    ClientClosed,
    /// Broken connection, a close other than 1000, or no pong: resumable.
    Dropped,
}

enum Flushed {
    Open,
    Closed,
    Broken,
}

pub async fn serve(state: AppState, live: Arc<Live>, mut socket: WebSocket, session: Arc<LiveSession>) {
    let connection = session.connection.fetch_add(1, Ordering::AcqRel) + 1;
    session.taken_over.notify_waiters();
    session.set_attached(true);
    live.sockets.fetch_add(1, Ordering::SeqCst);
    let mut exit = run(&state, &live, &mut socket, &session, connection).await;
    drop(socket);
    if live.sockets.fetch_sub(1, Ordering::SeqCst) == 1 {
        live.drained.notify_waiters();
    }
    // An older socket that notices its end only after a resume took over speaks for nothing.
    if matches!(exit, Exit::Dropped | Exit::ClientClosed) && session.connection.load(Ordering::Acquire) != connection {
        exit = Exit::TakenOver;
    }
    match exit {
        Exit::TakenOver => {}
        Exit::ServerClosed | Exit::ClientClosed => live.end(&session),
        // Nothing to restore before Initialize: a dropped uninitialized session is not kept
        // (connect-and-drop floods hold nothing for the resume window).
        // Nor is one whose frames already overflow what a resume may hold.
        Exit::Dropped
            if session.is_closing()
                || session.state().init.is_none()
                || session.queued() > live.config.resume_queue =>
        {
            live.end(&session)
        }
        Exit::Dropped => {
            session.set_attached(false);
            let window = live.config.resume_window;
            tokio::spawn(async move {
                tokio::time::sleep(window).await;
                if session.connection.load(Ordering::Acquire) == connection {
                    live.end(&session);
                }
            });
        }
    }
}

async fn run(
    state: &AppState,
    live: &Arc<Live>,
    socket: &mut WebSocket,
    session: &Arc<LiveSession>,
    connection: u64,
) -> Exit {
    let config = &live.config;
    let init_deadline = tokio::time::Instant::now() + config.init_timeout;
    let mut ping = tokio::time::interval(config.ping_interval);
    ping.tick().await;
    let mut last_pong = Instant::now();
    let ctx = Ctx { state, live, session };
    if live.is_shutting_down() {
        // Attached after the shutdown's sweep: closed here, whatever the session's state.
        let _ = send(live, socket, close_message(Close::Shutdown)).await;
        return Exit::ServerClosed;
    }
    loop {
        if session.connection.load(Ordering::Acquire) != connection {
            return Exit::TakenOver;
        }
        match flush(live, socket, session).await {
            Flushed::Open => {}
            Flushed::Closed => return Exit::ServerClosed,
            Flushed::Broken => return Exit::Dropped,
        }
        let initializing = session.state().init.is_none();
        tokio::select! {
            biased;
            _ = session.taken_over.notified() => {}
            _ = tokio::time::sleep_until(init_deadline), if initializing => {
                live.deliver(session, Out::Close(Close::InitTimeout));
            }
            _ = ping.tick() => {
                if last_pong.elapsed() > config.pong_timeout {
                    return Exit::Dropped;
                }
                if send(live, socket, Message::Ping(Default::default())).await.is_err() {
                    return Exit::Dropped;
                }
            }
            message = socket.recv() => match message {
                // The library refuses a frame or message over the limit before reading it all:
                // the documented close for an oversized frame (the socket cannot read on).
                Some(Err(e)) if is_oversized(&e) => live.deliver(session, Out::Close(Close::InvalidBody)),
                None | Some(Err(_)) => return Exit::Dropped,
                Some(Ok(Message::Text(text))) => {
                    if text.len() > config.max_frame_bytes {
                        live.deliver(session, Out::Close(Close::InvalidBody));
                    } else {
                        on_text(&ctx, text.as_str()).await;
                    }
                }
                Some(Ok(Message::Binary(_))) => live.deliver(session, Out::Close(Close::UnsupportedData)),
                Some(Ok(Message::Ping(_))) => {
                    // Answered by the library; it counts toward the rate limit (§14.18).
                    session.touch();
                    if let Some(close) = live.count_action(session) {
                        rate_closed(live, session, close);
                    }
                }
                Some(Ok(Message::Pong(_))) => last_pong = Instant::now(),
                Some(Ok(Message::Close(frame))) => {
                    return if frame.is_some_and(|f| f.code == 1000) { Exit::ClientClosed } else { Exit::Dropped };
                }
            },
            // After the socket's input: a file transfer wakes the loop for every chunk, and the
            // packets and pings that arrive meanwhile must still be read.
            _ = session.wake.notified() => {}
        }
    }
}

/// Writes what the outbox holds, in order; stops after a close frame. A batch that ends with a
/// close goes out in one flush (see [`write_closing`]). Otherwise each frame is one write, and a
/// frame whose write fails or stalls past `write_timeout` goes back to the head of the queue
/// with those behind it: the session stays resumable and the next socket sends them whole.
///
/// One pass writes only the frames queued when it began: a running file transfer refills the
/// queue as fast as it drains, and the loop must still get to reading packets and pings (frames
/// queued meanwhile left a wake-up behind, so the loop comes back at once).
async fn flush(live: &Live, socket: &mut WebSocket, session: &LiveSession) -> Flushed {
    let mut frames = session.take_frames();
    if frames.iter().any(|frame| matches!(frame, Out::Close(_))) {
        write_closing(live, socket, frames).await;
        return Flushed::Closed;
    }
    while let Some(frame) = frames.pop_front() {
        let message = match &frame {
            Out::Text(text) | Out::Event(text, _) => Message::Text(text.as_str().into()),
            Out::Binary(bytes, _window) => Message::Binary(bytes.clone()),
            // A batch holding a close went to `write_closing` above.
            Out::Close(_) => continue,
        };
        if send(live, socket, message).await.is_err() {
            frames.push_front(frame);
            session.requeue_all(frames.into_iter());
            return Flushed::Broken;
        }
        if let Out::Event(_, committed) = frame {
            live.metrics.pushed(committed);
        }
    }
    Flushed::Open
}

/// The frames queued before a close, and the close, written with one flush: one write to the
/// socket instead of one per frame (disabling an app ends thousands of sessions at once, and the
/// writes and their wake-ups were most of that cost). The session ends whatever the write does,
/// so nothing is put back; frames after the close (none are queued once it is) are dropped.
async fn write_closing(live: &Live, socket: &mut WebSocket, frames: VecDeque<Out>) {
    let mut events = Vec::new();
    let written = tokio::time::timeout(live.config.write_timeout, async {
        for frame in frames {
            match frame {
                Out::Text(text) => socket.feed(Message::Text(text.into())).await?,
                Out::Binary(bytes, _window) => socket.feed(Message::Binary(bytes)).await?,
                Out::Event(text, committed) => {
                    socket.feed(Message::Text(text.into())).await?;
                    events.push(committed);
                }
                // Sending the close flushes what was fed before it.
                Out::Close(close) => return socket.send(close_message(close)).await,
            }
        }
        Ok::<_, axum::Error>(())
    })
    .await;
    if matches!(written, Ok(Ok(()))) {
        for committed in events {
            live.metrics.pushed(committed);
        }
    }
}

/// One write, bounded by `write_timeout` (a client that stops reading must not hold the
/// socket's task forever: pings and the pong deadline only run between writes).
async fn send(live: &Live, socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(live.config.write_timeout, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(()),
    }
}

fn close_message(close: Close) -> Message {
    Message::Close(Some(CloseFrame { code: close.code(), reason: close.reason().into() }))
}

/// Whether the library refused a frame or message for its size (`max_frame_size` and
/// `max_message_size` are both the frame limit, see `http::upgrade`).
fn is_oversized(error: &axum::Error) -> bool {
    let inner: &(dyn std::error::Error + 'static) = error;
    let mut source = Some(inner);
    while let Some(e) = source {
        if matches!(e.downcast_ref::<tungstenite::Error>(), Some(tungstenite::Error::Capacity(_))) {
            return true;
        }
        source = e.source();
    }
    false
}

/// One text frame: rate-count it, parse it, answer it (from the resend cache when the id was
/// answered before), then close if the budget is spent.
async fn on_text(ctx: &Ctx<'_>, text: &str) {
    let (live, session) = (ctx.live, ctx.session);
    session.touch();
    let over_budget = live.count_action(session);
    match envelope::parse(text) {
        Err(close) => live.deliver(session, Out::Close(close)),
        Ok(packet) => {
            let id = packet.id.value;
            {
                let mut answers = session.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(answer) = answers.get(id) {
                    live.deliver(session, Out::Text(answer.clone()));
                    return finish(live, session, over_budget);
                }
                if answers.in_progress(id) {
                    return finish(live, session, over_budget);
                }
                answers.start(id);
            }
            // Boxed: the handlers' futures (authorize awaits the writer) are far larger than the
            // loop's idle state, and every idle session's task would otherwise reserve room
            // for them.
            let (answer, close, delivered) = match Box::pin(packets::handle(ctx, packet)).await {
                Reply::Answer(answer) => (Some(answer), None, false),
                Reply::AnswerThenClose(answer, close) => (Some(answer), Some(close), false),
                Reply::Close(close) => (None, Some(close), false),
                Reply::Delivered(answer) => (answer, None, true),
            };
            session.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).finish(
                id,
                answer.clone(),
                live.config.resume_answers,
            );
            if let Some(answer) = answer.filter(|_| !delivered) {
                live.deliver(session, Out::Text(answer));
            }
            if let Some(close) = close {
                live.deliver(session, Out::Close(close));
            }
        }
    }
    finish(live, session, over_budget);
}

fn finish(live: &Live, session: &LiveSession, over_budget: Option<Close>) {
    if let Some(close) = over_budget {
        rate_closed(live, session, close);
    }
}

/// Closes a session that spent its budget and starts its client's backoff.
fn rate_closed(live: &Live, session: &LiveSession, close: Close) {
    if let Some(client_id) = session.state().init.as_ref().map(|i| i.client_id.clone()) {
        live.ip_limits.start_backoff(session.ip, &client_id, Instant::now());
    }
    live.deliver(session, Out::Close(close));
}
