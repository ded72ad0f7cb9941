//! One logical live session (websocket.md §1): CONNECTED → INITIALIZED → AUTHORIZED, surviving
//! its socket for the resume window. What it holds is behind a plain mutex that is never held
//! across an await, so the push listener can change it at once; frames for the client go through
//! its outbox, which the socket currently attached drains (or which waits for a resume).

use super::envelope::Close;
use super::limits::SessionBucket;
use super::store::ValueStore;
use chrono::{DateTime, Utc};
use licensd_domain::{AppId, LicenseKey};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;
use tokio::sync::Notify;

pub type SessionId = uuid::Uuid;

/// What a successful Initialize established.
#[derive(Debug, Clone)]
pub struct Initialized {
    pub app_id: AppId,
    pub client_id: String,
}

/// What a successful authorize-by-license established. `generation` tells the expiry timer
/// whether the authorization it was armed for is still the current one.
#[derive(Debug, Clone)]
pub struct Authorized {
    pub key: LicenseKey,
    pub generation: u64,
}

/// What a successful authorize-by-credentials established (an app user's session).
#[derive(Debug, Clone)]
pub struct AccountAuthorized {
    pub user_id: licensd_domain::app_user::AppUserId,
    pub generation: u64,
}

#[derive(Debug)]
pub struct SessionState {
    pub init: Option<Initialized>,
    /// Authorized by license (packet 2).
    pub auth: Option<Authorized>,
    /// Authorized by credentials (packet 3); never together with `auth`.
    pub account: Option<AccountAuthorized>,
    pub subscribed: bool,
    pub values: ValueStore,
    /// Consecutive Initialize attempts whose app could not be resolved (status 2 or 600).
    pub failed_inits: u8,
    pub bucket: SessionBucket,
}

impl SessionState {
    pub fn is_authorized_any(&self) -> bool {
        self.auth.is_some() || self.account.is_some()
    }

    /// The generation of the current authorization, of either kind (expiry timers compare it).
    pub fn generation(&self) -> Option<u64> {
        self.auth.as_ref().map(|a| a.generation).or(self.account.as_ref().map(|a| a.generation))
    }
}

/// A frame waiting for the socket.
#[derive(Debug)]
pub enum Out {
    Text(String),
    /// A panel event, with the commit time of the event that caused it (push latency).
    Event(String, Option<DateTime<Utc>>),
    /// A file chunk frame (stream mode); its permit holds a place in the transfer's window
    /// until the frame is written (or dropped), which is what bounds a slow reader.
    Binary(axum::body::Bytes, Option<tokio::sync::OwnedSemaphorePermit>),
    Close(Close),
}

/// The `(id → response)` answers kept for resends (§14.14), oldest first out.
#[derive(Debug, Default)]
pub struct Answers {
    order: VecDeque<u64>,
    by_id: HashMap<u64, String>,
    in_progress: HashSet<u64>,
}

impl Answers {
    pub fn get(&self, id: u64) -> Option<&String> {
        self.by_id.get(&id)
    }

    pub fn in_progress(&self, id: u64) -> bool {
        self.in_progress.contains(&id)
    }

    pub fn start(&mut self, id: u64) {
        self.in_progress.insert(id);
    }

    pub fn finish(&mut self, id: u64, answer: Option<String>, keep: usize) {
        self.in_progress.remove(&id);
        let Some(answer) = answer else { return };
        if self.by_id.insert(id, answer).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > keep {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }
}

pub struct LiveSession {
    pub id: SessionId,
    pub ip: IpAddr,
    pub connected_at: DateTime<Utc>,
    last_activity_ms: AtomicI64,
    state: Mutex<SessionState>,
    pub answers: Mutex<Answers>,
    queue: Mutex<VecDeque<Out>>,
    /// Wakes the attached socket when a frame is queued.
    pub wake: Notify,
    /// A socket is attached (else frames wait for a resume).
    attached: AtomicBool,
    /// Bumped for each socket that attaches; a socket whose number is no longer current was
    /// taken over and leaves silently.
    pub connection: AtomicU64,
    /// Tells the attached socket it was taken over.
    pub taken_over: Notify,
    /// Once set, the session is over: nothing more is queued and it cannot be resumed.
    ended: AtomicBool,
    /// A close is queued: the socket sends it and the session ends.
    closing: AtomicBool,
    pub resume_id: Mutex<String>,
    /// Wakes expiry timers when the authorization changes or the session ends, so a timer never
    /// outlives what it was armed for.
    pub timers: Notify,
    /// The session's file transfers and the version it streamed per file name.
    pub files: Mutex<super::files::SessionFiles>,
}

impl LiveSession {
    pub fn new(ip: IpAddr, per_minute: u32) -> Self {
        let now = Utc::now();
        Self {
            id: uuid::Uuid::new_v4(),
            ip,
            connected_at: now,
            last_activity_ms: AtomicI64::new(now.timestamp_millis()),
            state: Mutex::new(SessionState {
                init: None,
                auth: None,
                account: None,
                subscribed: false,
                values: ValueStore::default(),
                failed_inits: 0,
                bucket: SessionBucket::new(per_minute, Instant::now()),
            }),
            answers: Mutex::new(Answers::default()),
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            attached: AtomicBool::new(false),
            connection: AtomicU64::new(0),
            taken_over: Notify::new(),
            ended: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            resume_id: Mutex::new(String::new()),
            timers: Notify::new(),
            files: Mutex::new(super::files::SessionFiles::default()),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn touch(&self) {
        self.last_activity_ms.store(Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    pub fn last_activity(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.last_activity_ms.load(Ordering::Relaxed)).unwrap_or(self.connected_at)
    }

    pub fn is_attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    pub fn set_attached(&self, attached: bool) {
        self.attached.store(attached, Ordering::Release);
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks the session over; `true` for the one caller that ended it.
    pub fn end(&self) -> bool {
        let first = !self.ended.swap(true, Ordering::AcqRel);
        self.timers.notify_waiters();
        first
    }

    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Queues a frame for the client. Returns how many frames wait, or `None` when the session
    /// is ending and takes no more.
    pub fn send(&self, frame: Out) -> Option<usize> {
        if self.is_ended() || self.is_closing() {
            return None;
        }
        if matches!(frame, Out::Close(_)) {
            self.closing.store(true, Ordering::Release);
        }
        let waiting = {
            let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            queue.push_back(frame);
            queue.len()
        };
        self.wake.notify_one();
        Some(waiting)
    }

    /// Queues frames that belong together (a panel event and the close that follows it) at
    /// once: the socket wakes once, finds them all, and writes them in one flush. Nothing is
    /// queued once the session is ending; a close among them must be the last.
    pub fn send_all(&self, frames: impl IntoIterator<Item = Out>) -> Option<usize> {
        if self.is_ended() || self.is_closing() {
            return None;
        }
        let waiting = {
            let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for frame in frames {
                if matches!(frame, Out::Close(_)) {
                    self.closing.store(true, Ordering::Release);
                }
                queue.push_back(frame);
            }
            queue.len()
        };
        self.wake.notify_one();
        Some(waiting)
    }

    /// Every frame waiting, oldest first (the socket writes them as one batch).
    pub fn take_frames(&self) -> VecDeque<Out> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Puts back the frames a socket could not finish writing (its connection broke or stalled)
    /// first in line, in their order, for the next socket: the protocol has no acknowledgement,
    /// so the frame a write failed on is the first the server knows the client did not get whole.
    pub fn requeue_all(&self, frames: impl DoubleEndedIterator<Item = Out>) {
        let mut queue = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for frame in frames.rev() {
            queue.push_front(frame);
        }
    }

    /// Frames waiting for a socket.
    pub fn queued(&self) -> usize {
        self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn text(frame: Out) -> String {
        match frame {
            Out::Text(text) | Out::Event(text, _) => text,
            Out::Binary(..) => panic!("unexpected binary frame"),
            Out::Close(close) => panic!("unexpected close {close:?}"),
        }
    }

    /// The socket side takes batches and puts every third one back (its write failed) while
    /// other threads keep queueing: the batch put back comes out first again, and every frame
    /// comes out once, in the order each sender queued them.
    #[test]
    fn requeued_frames_go_first_and_none_is_lost_or_doubled_under_concurrent_sends() {
        const SENDERS: usize = 4;
        const EACH: usize = 500;
        let session = Arc::new(LiveSession::new(IpAddr::from([127, 0, 0, 1]), 60));
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let session = session.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        session.send(Out::Text(format!("{s}:{i}")));
                    }
                })
            })
            .collect();
        let mut written = Vec::new();
        let mut attempts = 0usize;
        while written.len() < SENDERS * EACH {
            let batch: Vec<String> = session.take_frames().into_iter().map(text).collect();
            if batch.is_empty() {
                std::thread::yield_now();
                continue;
            }
            attempts += 1;
            if attempts % 3 == 0 {
                session.requeue_all(batch.iter().map(|t| Out::Text(t.clone())).collect::<Vec<_>>().into_iter());
                let again: Vec<String> = session.take_frames().into_iter().map(text).collect();
                assert_eq!(again[..batch.len()], batch[..], "the frames put back come out first, in order");
                written.extend(again);
            } else {
                written.extend(batch);
            }
        }
        for sender in senders {
            sender.join().unwrap();
        }
        assert!(session.take_frames().is_empty());
        for s in 0..SENDERS {
            let mine: Vec<&String> = written.iter().filter(|t| t.starts_with(&format!("{s}:"))).collect();
            let expected: Vec<String> = (0..EACH).map(|i| format!("{s}:{i}")).collect();
            assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "sender {s}");
        }
    }

    /// Frames queued together are taken together: a socket draining the queue while events and
    /// closes are queued never takes an event without the close queued with it, so it writes
    /// them in one flush. Afterwards the session takes nothing more.
    #[test]
    fn an_event_and_its_close_are_taken_together_under_a_concurrent_drain() {
        const SESSIONS: usize = 2000;
        let sessions: Arc<Vec<LiveSession>> =
            Arc::new((0..SESSIONS).map(|_| LiveSession::new(IpAddr::from([127, 0, 0, 1]), 60)).collect());
        let queueing = {
            let sessions = sessions.clone();
            std::thread::spawn(move || {
                for session in sessions.iter() {
                    let frames = [Out::Event("101".into(), None), Out::Close(Close::AppPaused)];
                    assert!(session.send_all(frames).is_some());
                }
            })
        };
        let mut taken = vec![Vec::new(); SESSIONS];
        while taken.iter().any(|frames: &Vec<String>| frames.len() < 2) {
            for (session, frames) in sessions.iter().zip(&mut taken) {
                let batch: Vec<String> = session
                    .take_frames()
                    .into_iter()
                    .map(|frame| match frame {
                        Out::Close(close) => format!("close {}", close.code()),
                        other => text(other),
                    })
                    .collect();
                assert!(batch.is_empty() || batch.len() == 2, "a batch split in two: {batch:?}");
                frames.extend(batch);
            }
        }
        queueing.join().unwrap();
        for (session, frames) in sessions.iter().zip(&taken) {
            assert_eq!(frames, &["101".to_string(), "close 4101".to_string()]);
            assert!(session.send(Out::Text("late".into())).is_none(), "nothing is queued after a close");
        }
    }
}
