//! The relay's message: one event of the log as JSON, with its position and its predecessor's
//! (see `chain.rs`). The key is the stream id, so one stream's events share a partition.

use super::chain::Link;
use chrono::{DateTime, Utc};
use licensd_store::{Position, RecordedEvent};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// The format's version, so a later one can be told apart.
const FORMAT: u32 = 1;

#[derive(Serialize)]
struct Outgoing<'a> {
    format: u32,
    position: Position,
    prev: Position,
    event_id: Uuid,
    stream_id: &'a str,
    version: u64,
    event_type: &'a str,
    schema_version: i32,
    payload: &'a RawValue,
    metadata: &'a RawValue,
    recorded_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Incoming {
    format: u32,
    position: Position,
    prev: Position,
    event_id: Uuid,
    stream_id: String,
    version: u64,
    event_type: String,
    schema_version: i32,
    payload: Box<RawValue>,
    metadata: Box<RawValue>,
    recorded_at: DateTime<Utc>,
}

/// `event` as a message following `prev`.
pub fn encode(event: &RecordedEvent, prev: Position) -> Vec<u8> {
    let message = Outgoing {
        format: FORMAT,
        position: event.position,
        prev,
        event_id: event.event_id,
        stream_id: &event.stream_id,
        version: event.version,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        payload: &event.payload,
        metadata: &event.metadata,
        recorded_at: event.recorded_at,
    };
    // Serialising borrowed JSON text and plain fields cannot fail.
    serde_json::to_vec(&message).unwrap_or_default()
}

/// Why a message on the topic was not taken (it is counted and left to the log to fill).
#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    #[error("not a relay message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("message format {0} is not one this version reads")]
    Format(u32),
}

/// A message back into the event it carries.
pub fn decode(bytes: &[u8]) -> Result<Link<RecordedEvent>, Rejected> {
    let m: Incoming = serde_json::from_slice(bytes)?;
    if m.format != FORMAT {
        return Err(Rejected::Format(m.format));
    }
    let event = RecordedEvent {
        position: m.position,
        event_id: m.event_id,
        stream_id: m.stream_id,
        version: m.version,
        event_type: m.event_type,
        schema_version: m.schema_version,
        payload: m.payload,
        metadata: m.metadata,
        recorded_at: m.recorded_at,
    };
    Ok(Link { position: m.position, prev: m.prev, event })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_survives_the_trip_and_garbage_is_rejected() {
        let event = RecordedEvent {
            position: Position { tx: 900, seq: 12 },
            event_id: Uuid::now_v7(),
            stream_id: "license-ABC\u{0}\"x".into(),
            version: 3,
            event_type: "LicenseRevoked".into(),
            schema_version: 1,
            payload: licensd_store::raw_json(&serde_json::json!({"reason": "fraud \u{1F600}"})),
            metadata: licensd_store::raw_json(&serde_json::json!({"actor": "api"})),
            recorded_at: Utc::now(),
        };
        let prev = Position { tx: 899, seq: 11 };
        let link = decode(&encode(&event, prev)).unwrap();
        assert_eq!((link.position, link.prev), (event.position, prev));
        assert_eq!(link.event, event);
        for garbage in [&b""[..], b"{}", b"\xff\xfe", b"[1,2]", b"{\"format\":1}"] {
            assert!(matches!(decode(garbage), Err(Rejected::Malformed(_))), "{garbage:?}");
        }
        let future = String::from_utf8(encode(&event, prev)).unwrap().replace("\"format\":1", "\"format\":2");
        assert!(matches!(decode(future.as_bytes()), Err(Rejected::Format(2))));
    }
}
