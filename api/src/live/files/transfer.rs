//! One stream-mode transfer (§8.2): reads the file version from `resume_at` in chunks, queues
//! each as a binary frame on the session's outbox, and ends with the final frame (status 1 and
//! both checksums) or a terminal text frame (304 stopped, 302 quota, 6 error).
//!
//! Cost per chunk (the profile in BENCHMARKS.md, "Protected file delivery"): the bytes are read
//! with one positioned read straight into the frame's buffer (room kept in front for the
//! metadata), so the only copy left in user space is the WebSocket library's into its write
//! buffer. A stream of the whole file is not hashed: its range checksum is the file's SHA-256,
//! recorded at upload and the very name the blob is stored under (content-addressed), so a
//! stored byte gone bad shows as a checksum mismatch at the client rather than being vouched for.
//! A resumed range is hashed as it is read.
//!
//! Flow control: every queued chunk holds one permit of the transfer's window (`window_chunks`
//! permits); the socket gives it back once the frame is written. A client that reads nothing
//! stalls the socket's write, so at most `window_chunks` chunks of this transfer wait in memory
//! and the transfer sleeps; the write timeout then drops the socket (resumable: the transfer
//! goes on after a resume, or stops when the session ends).

use super::catalog::{Served, Source};
use super::frame::{self, Meta};
use super::quota::{Charge, Meter};
use super::Stop;
use crate::live::envelope::PacketId;
use crate::live::session::{LiveSession, Out};
use crate::live::Live;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

pub const QUOTA_EXCEEDED: u16 = 302;
pub const STOPPED: u16 = 304;

/// What to stream.
#[derive(Debug, Clone)]
pub struct Plan {
    pub id: PacketId,
    pub file: Served,
    pub resume_at: u64,
    pub chunk_bytes: usize,
    pub window_chunks: usize,
}

/// How a transfer ended, with the bytes it queued for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Completed(u64),
    Stopped(u64),
    QuotaExceeded(u64),
    Failed(u64),
    /// The session is over: nothing more could be sent.
    SessionEnded(u64),
}

impl Ended {
    pub fn bytes(self) -> u64 {
        match self {
            Self::Completed(b)
            | Self::Stopped(b)
            | Self::QuotaExceeded(b)
            | Self::Failed(b)
            | Self::SessionEnded(b) => b,
        }
    }
}

/// Streams the plan's range; `meter` counts each chunk's bytes against the daily quota before
/// it is read (spent: the transfer ends with 302 before that chunk; the quota's database
/// unreachable: 6).
pub async fn pump(
    live: &Live,
    session: &LiveSession,
    plan: &Plan,
    source: &mut Source,
    stop: &mut watch::Receiver<Option<Stop>>,
    meter: &mut Meter,
) -> Ended {
    let size = plan.file.size;
    let window = Arc::new(Semaphore::new(plan.window_chunks.max(1)));
    // The whole file: its recorded SHA-256 is the range's (see the module's comment).
    let mut hasher = (plan.resume_at > 0).then(Sha256::new);
    let mut offset = plan.resume_at;
    let mut first = true;
    let sent = |offset: u64| offset - plan.resume_at;
    let terminal = |offset: u64, status: u16| {
        let meta = Meta { offset, status: Some(status), ..Meta::default() };
        live.deliver(session, Out::Text(frame::text(plan.id, &meta)));
    };
    loop {
        let permit = tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() {
                    // Nobody can stop it any more: the session dropped its entry.
                    return Ended::SessionEnded(sent(offset));
                }
                None
            }
            permit = window.clone().acquire_owned() => permit.ok(),
        };
        let stopped = *stop.borrow();
        match stopped {
            Some(Stop::Requested) => {
                terminal(offset, STOPPED);
                return Ended::Stopped(sent(offset));
            }
            Some(Stop::SessionEnded) => return Ended::SessionEnded(sent(offset)),
            None => {}
        }
        let Some(permit) = permit else { continue };
        if session.is_ended() {
            return Ended::SessionEnded(sent(offset));
        }
        // The chunks the window has room for now are read together: one blocking-pool round
        // trip and one wake of the socket for them all, not one per chunk (the profile).
        // (None when the quota refused the first: the transfer ends below with the refusal.)
        let (lengths, permits, refused) = batch(plan, &window, permit, offset, meter).await;
        let buffers = lengths.iter().map(|&length| frame::buffer(length)).collect();
        let buffers = match source.read_many(buffers, frame::HEADROOM).await {
            Ok(buffers) => buffers,
            Err(error) => {
                tracing::warn!(file = %plan.file.name, version = plan.file.version, offset, %error, "file read failed");
                terminal(offset, crate::live::packets::INTERNAL_ERROR);
                return Ended::Failed(sent(offset));
            }
        };
        for (buffer, permit) in buffers.into_iter().zip(permits) {
            let length = buffer.len() - frame::HEADROOM;
            if let Some(hasher) = &mut hasher {
                hasher.update(&buffer[frame::HEADROOM..]);
            }
            let last = offset + length as u64 == size;
            let range_checksum = last.then(|| match hasher.take() {
                Some(hasher) => hex::encode(hasher.finalize()),
                None => plan.file.sha256.clone(),
            });
            let meta = Meta {
                offset,
                chunk_size: length,
                file_size: first.then_some(size),
                checksums: range_checksum.as_deref().map(|range| (plan.file.sha256.as_str(), range)),
                status: None,
            };
            let out = if length == 0 {
                // Only an empty range (an empty file) ends without bytes: a text frame (§8.2).
                Out::Text(frame::text(plan.id, &meta))
            } else {
                Out::Binary(frame::finish(plan.id, &meta, buffer), Some(permit))
            };
            live.deliver(session, out);
            first = false;
            offset += length as u64;
            if last {
                return Ended::Completed(sent(offset));
            }
        }
        match refused {
            Some(QUOTA_EXCEEDED) => {
                terminal(offset, QUOTA_EXCEEDED);
                return Ended::QuotaExceeded(sent(offset));
            }
            Some(status) => {
                terminal(offset, status);
                return Ended::Failed(sent(offset));
            }
            None => {}
        }
    }
}

/// The chunks to read next from `offset`: the one `permit` is for, then one more for each permit
/// the window has free now, each charged to the quota before it is read. Returns their lengths
/// and permits, and the terminal status when the quota refused the chunk after the last one
/// (302 spent, 6 unreadable). An empty range (an empty file) is one chunk of 0 bytes.
async fn batch(
    plan: &Plan,
    window: &Arc<Semaphore>,
    permit: OwnedSemaphorePermit,
    offset: u64,
    meter: &mut Meter,
) -> (Vec<usize>, Vec<OwnedSemaphorePermit>, Option<u16>) {
    let chunk_bytes = plan.chunk_bytes.max(1);
    let (mut lengths, mut permits, mut at) = (Vec::new(), vec![permit], offset);
    loop {
        let length = usize::try_from(plan.file.size - at).map_or(chunk_bytes, |left| left.min(chunk_bytes));
        if length > 0 {
            let refused = match meter.charge(length as u64).await {
                Charge::Granted => None,
                Charge::Spent => Some(QUOTA_EXCEEDED),
                Charge::Failed => Some(crate::live::packets::INTERNAL_ERROR),
            };
            if refused.is_some() {
                permits.truncate(lengths.len());
                return (lengths, permits, refused);
            }
        }
        lengths.push(length);
        at += length as u64;
        if at == plan.file.size {
            return (lengths, permits, None);
        }
        match Arc::clone(window).try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => return (lengths, permits, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::LiveConfig;
    use std::net::IpAddr;

    fn plan(data: &[u8], resume_at: u64) -> Plan {
        let mut file = Served::for_tests("client.dll", 1, data.len() as u64);
        file.sha256 = hex::encode(Sha256::digest(data));
        Plan { id: PacketId { value: 7, quoted: false }, file, resume_at, chunk_bytes: 1000, window_chunks: 3 }
    }

    fn reader(data: &[u8], from: u64) -> Source {
        Source::Store(Box::new(std::io::Cursor::new(data[from as usize..].to_vec())))
    }

    /// Takes every frame queued now: the binary chunks' metadata and bytes, or a text frame's
    /// metadata.
    fn drain(session: &LiveSession) -> Vec<(serde_json::Value, Vec<u8>)> {
        session
            .take_frames()
            .into_iter()
            .map(|frame| match frame {
                Out::Binary(bytes, _permit) => {
                    let (meta, data) = frame::split(&bytes).expect("a chunk frame");
                    (meta, data.to_vec())
                }
                Out::Text(text) => (serde_json::from_str(&text).unwrap(), Vec::new()),
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    async fn until_queued(session: &LiveSession, count: usize) {
        while session.queued() < count {
            tokio::task::yield_now().await;
        }
    }

    /// Nobody writes the frames: the transfer queues exactly its window and waits. Writing them
    /// (dropping their permits) lets it go on; the bytes, the offsets and both checksums add up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_that_takes_nothing_holds_the_transfer_at_its_window() {
        let live = Arc::new(Live::new(LiveConfig::default()));
        let session = Arc::new(LiveSession::new(IpAddr::from([127, 0, 0, 1]), 60));
        let data: Vec<u8> = (0..10_500u32).map(|i| (i * 7 % 251) as u8).collect();
        let plan = plan(&data, 0);
        let (_stop_tx, mut stop) = watch::channel(None);
        let task = {
            let (live, session, plan, data) = (live.clone(), session.clone(), plan.clone(), data.clone());
            tokio::spawn(async move {
                let mut reader = reader(&data, 0);
                pump(&live, &session, &plan, &mut reader, &mut stop, &mut Meter::unlimited()).await
            })
        };
        until_queued(&session, 3).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(session.queued(), 3, "the window holds three chunks and no more");
        let mut frames = drain(&session);
        while !task.is_finished() || session.queued() > 0 {
            tokio::task::yield_now().await;
            frames.extend(drain(&session));
        }
        assert_eq!(task.await.unwrap(), Ended::Completed(10_500));
        assert_eq!(frames.len(), 11);
        assert_eq!(frames[0].0["file_size"], 10_500);
        assert!(frames[1..].iter().all(|(m, _)| m.get("file_size").is_none()));
        let mut joined = Vec::new();
        for (meta, bytes) in &frames {
            assert_eq!(meta["offset"], joined.len() as u64);
            assert_eq!(meta["chunk_size"], bytes.len());
            joined.extend_from_slice(bytes);
        }
        assert_eq!(joined, data);
        let last = &frames[10].0;
        assert_eq!(last["status"], 1);
        assert_eq!(last["file_checksum"], plan.file.sha256.as_str());
        assert_eq!(last["range_checksum"], plan.file.sha256.as_str(), "the range is the whole file");
        assert!(frames[..10].iter().all(|(m, _)| m.get("status").is_none()), "mid-stream frames carry no status");
    }

    /// A stop while the window is full ends with a terminal 304 text frame at the next offset;
    /// a resume from the bytes received finishes with the range's checksum.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stop_ends_with_304_and_a_resume_gets_the_rest() {
        let live = Arc::new(Live::new(LiveConfig::default()));
        let session = Arc::new(LiveSession::new(IpAddr::from([127, 0, 0, 1]), 60));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
        let (stop_tx, mut stop) = watch::channel(None);
        let task = {
            let (live, session, plan, data) = (live.clone(), session.clone(), plan(&data, 0), data.clone());
            tokio::spawn(async move {
                let mut reader = reader(&data, 0);
                pump(&live, &session, &plan, &mut reader, &mut stop, &mut Meter::unlimited()).await
            })
        };
        until_queued(&session, 3).await;
        stop_tx.send(Some(Stop::Requested)).unwrap();
        assert_eq!(task.await.unwrap(), Ended::Stopped(3_000));
        let frames = drain(&session);
        let (terminal, bytes) = frames.last().unwrap();
        assert_eq!(
            (terminal["status"].clone(), terminal["offset"].clone()),
            (serde_json::json!(304), serde_json::json!(3000))
        );
        assert!(bytes.is_empty());
        let received: Vec<u8> = frames.iter().flat_map(|(_, b)| b.clone()).collect();

        let (_stop_tx, mut stop) = watch::channel(None);
        let resumed = plan(&data, received.len() as u64);
        let mut rest = reader(&data, resumed.resume_at);
        let drainer = {
            let session = session.clone();
            tokio::spawn(async move {
                let mut frames = Vec::new();
                loop {
                    frames.extend(drain(&session));
                    if frames.last().is_some_and(|(m, _): &(serde_json::Value, Vec<u8>)| m.get("status").is_some()) {
                        return frames;
                    }
                    tokio::task::yield_now().await;
                }
            })
        };
        let ended = pump(&live, &session, &resumed, &mut rest, &mut stop, &mut Meter::unlimited()).await;
        assert_eq!(ended, Ended::Completed(7_000));
        let frames = drainer.await.unwrap();
        assert_eq!(frames[0].0["offset"], 3000);
        assert_eq!(frames[0].0["file_size"], 10_000);
        let tail: Vec<u8> = frames.iter().flat_map(|(_, b)| b.clone()).collect();
        let last = &frames.last().unwrap().0;
        assert_eq!(last["range_checksum"], hex::encode(Sha256::digest(&tail)));
        assert_eq!(last["file_checksum"], resumed.file.sha256.as_str());
        assert_eq!([received, tail].concat(), data);
    }

    /// A whole-file stream reports the version's recorded SHA-256 as its range checksum without
    /// hashing (here a stand-in digest proves it is the recorded one); a resumed range is hashed.
    #[tokio::test]
    async fn only_a_resumed_range_is_hashed() {
        let live = Arc::new(Live::new(LiveConfig::default()));
        let session = Arc::new(LiveSession::new(IpAddr::from([127, 0, 0, 1]), 60));
        let data = vec![5u8; 2_500];
        for (resume_at, expected) in [(0, "recorded".to_string()), (700, hex::encode(Sha256::digest(&data[700..])))] {
            let mut plan = plan(&data, resume_at);
            plan.window_chunks = 10;
            plan.file.sha256 = "recorded".into();
            let (_stop_tx, mut stop) = watch::channel(None);
            let mut source = reader(&data, resume_at);
            let ended = pump(&live, &session, &plan, &mut source, &mut stop, &mut Meter::unlimited()).await;
            assert_eq!(ended, Ended::Completed(2_500 - resume_at));
            let frames = drain(&session);
            let last = &frames.last().unwrap().0;
            assert_eq!(
                (last["range_checksum"].as_str(), last["file_checksum"].as_str()),
                (Some(&*expected), Some("recorded"))
            );
        }
    }

    /// The quota refuses the fourth chunk: three go out, then a terminal 302.
    #[tokio::test]
    async fn a_spent_quota_ends_with_302_mid_stream() {
        let live = Arc::new(Live::new(LiveConfig::default()));
        let session = Arc::new(LiveSession::new(IpAddr::from([127, 0, 0, 1]), 60));
        let data = vec![1u8; 5_000];
        let mut plan = plan(&data, 0);
        plan.window_chunks = 10;
        let (_stop_tx, mut stop) = watch::channel(None);
        let mut meter = Meter::fixed(3_500);
        let ended = pump(&live, &session, &plan, &mut reader(&data, 0), &mut stop, &mut meter).await;
        assert_eq!(ended, Ended::QuotaExceeded(3_000));
        let frames = drain(&session);
        assert_eq!(frames.len(), 4);
        assert_eq!(
            (frames[3].0["status"].clone(), frames[3].0["offset"].clone()),
            (serde_json::json!(302), serde_json::json!(3000))
        );
    }

    /// An empty file: one text frame with status 1, size 0 and the empty input's checksum.
    #[tokio::test]
    async fn an_empty_file_ends_with_one_text_frame() {
        let live = Arc::new(Live::new(LiveConfig::default()));
        let session = Arc::new(LiveSession::new(IpAddr::from([127, 0, 0, 1]), 60));
        let plan = plan(&[], 0);
        let (_stop_tx, mut stop) = watch::channel(None);
        let ended = pump(&live, &session, &plan, &mut reader(&[], 0), &mut stop, &mut Meter::unlimited()).await;
        assert_eq!(ended, Ended::Completed(0));
        let frames = drain(&session);
        assert_eq!(frames.len(), 1);
        let empty = hex::encode(Sha256::digest(b""));
        assert_eq!(frames[0].0["status"], 1);
        assert_eq!(frames[0].0["file_size"], 0);
        assert_eq!(frames[0].0["range_checksum"], empty.as_str());
    }
}
