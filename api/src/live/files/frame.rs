//! The stream-mode frames (decision 2), in this one place because real-client compatibility is
//! unverified: a binary chunk frame is `u32 big-endian JSON length | UTF-8 JSON metadata | raw
//! bytes`; the metadata is `{"id","offset","chunk_size"}`, plus `file_size` on the first frame
//! and `status`, `file_checksum`, `range_checksum` on the last. A stream's end without bytes, and
//! every interruption, is a text frame of metadata alone.

use crate::live::envelope::PacketId;
use serde_json::{Map, Value};

/// Bytes of file data per chunk frame.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// What the metadata of one frame says.
#[derive(Debug, Default)]
pub struct Meta<'a> {
    pub offset: u64,
    pub chunk_size: usize,
    /// The first frame of a stream.
    pub file_size: Option<u64>,
    /// The last frame (status 1): the whole file's and the streamed range's SHA-256.
    pub checksums: Option<(&'a str, &'a str)>,
    /// A terminal status other than 1 (304, 302, 6).
    pub status: Option<u16>,
}

fn metadata(id: PacketId, meta: &Meta<'_>) -> Vec<u8> {
    let mut object = Map::with_capacity(7);
    object.insert("id".into(), id.to_json());
    object.insert("offset".into(), Value::from(meta.offset));
    object.insert("chunk_size".into(), Value::from(meta.chunk_size));
    if let Some(size) = meta.file_size {
        object.insert("file_size".into(), Value::from(size));
    }
    if let Some((file, range)) = meta.checksums {
        object.insert("status".into(), Value::from(1));
        object.insert("file_checksum".into(), Value::from(file));
        object.insert("range_checksum".into(), Value::from(range));
    } else if let Some(status) = meta.status {
        object.insert("status".into(), Value::from(status));
    }
    serde_json::to_vec(&Value::Object(object)).unwrap_or_default()
}

/// Room kept in front of a chunk's bytes for the length and the metadata, so the frame is
/// finished around the bytes where they were read instead of copied into a new buffer: the
/// largest metadata (a quoted 20-digit id, three 20-digit numbers, two SHA-256 in hex) is under
/// 300 bytes.
pub const HEADROOM: usize = 512;

/// A buffer for one chunk of `length` bytes: read them into `[HEADROOM..]`, then [`finish`].
pub fn buffer(length: usize) -> Vec<u8> {
    vec![0u8; HEADROOM + length]
}

/// The binary frame of the bytes in `buffer[HEADROOM..]` (see [`buffer`]): the length and the
/// metadata are written just before them and the frame starts there (no copy of the bytes).
pub fn finish(id: PacketId, meta: &Meta<'_>, mut buffer: Vec<u8>) -> axum::body::Bytes {
    let json = metadata(id, meta);
    let Some(start) = HEADROOM.checked_sub(4 + json.len()) else {
        // Metadata larger than the room (none is): built the copying way.
        return chunk(id, meta, &buffer[HEADROOM..]).into();
    };
    buffer[start..start + 4].copy_from_slice(&(json.len() as u32).to_be_bytes());
    buffer[start + 4..HEADROOM].copy_from_slice(&json);
    axum::body::Bytes::from(buffer).slice(start..)
}

/// One binary frame carrying `bytes`.
pub fn chunk(id: PacketId, meta: &Meta<'_>, bytes: &[u8]) -> Vec<u8> {
    let json = metadata(id, meta);
    let mut frame = Vec::with_capacity(4 + json.len() + bytes.len());
    // The metadata is a few hundred bytes at most, far below u32::MAX.
    frame.extend_from_slice(&(json.len() as u32).to_be_bytes());
    frame.extend_from_slice(&json);
    frame.extend_from_slice(bytes);
    frame
}

/// A text frame of metadata alone (an end without bytes, or an interruption).
pub fn text(id: PacketId, meta: &Meta<'_>) -> String {
    String::from_utf8(metadata(id, meta)).unwrap_or_default()
}

/// Splits a chunk frame into its metadata and bytes (the tests' and the benchmark's reader).
pub fn split(frame: &[u8]) -> Option<(Value, &[u8])> {
    let length = u32::from_be_bytes(frame.get(..4)?.try_into().ok()?) as usize;
    let json = frame.get(4..4 + length)?;
    Some((serde_json::from_slice(json).ok()?, &frame[4 + length..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_chunk_frame_is_length_json_then_bytes() {
        let id = PacketId { value: 9, quoted: false };
        let first = chunk(id, &Meta { offset: 0, chunk_size: 3, file_size: Some(10), ..Meta::default() }, b"abc");
        assert_eq!(&first[..4], &(first.len() as u32 - 4 - 3).to_be_bytes());
        let (meta, bytes) = split(&first).unwrap();
        assert_eq!(meta, json!({"id": 9, "offset": 0, "chunk_size": 3, "file_size": 10}));
        assert_eq!(bytes, b"abc");

        let last =
            chunk(id, &Meta { offset: 7, chunk_size: 3, checksums: Some(("f", "r")), ..Meta::default() }, b"xyz");
        let (meta, bytes) = split(&last).unwrap();
        assert_eq!(
            meta,
            json!({"id": 9, "offset": 7, "chunk_size": 3, "status": 1, "file_checksum": "f", "range_checksum": "r"})
        );
        assert_eq!(bytes, b"xyz");

        let quoted = PacketId { value: 5, quoted: true };
        let stopped: Value =
            serde_json::from_str(&text(quoted, &Meta { offset: 4, status: Some(304), ..Meta::default() })).unwrap();
        assert_eq!(stopped, json!({"id": "5", "offset": 4, "chunk_size": 0, "status": 304}));
        assert!(split(&[0, 0, 0, 9, b'{']).is_none(), "a length past the end is refused");

        // Finished in place: the same frame as the copying way, for the longest metadata too.
        let longest = PacketId { value: u64::MAX, quoted: true };
        let digest = "f".repeat(64);
        let meta = Meta {
            offset: u64::MAX,
            chunk_size: 3,
            file_size: Some(u64::MAX),
            checksums: Some((&digest, &digest)),
            status: None,
        };
        let mut read = buffer(3);
        read[HEADROOM..].copy_from_slice(b"xyz");
        assert_eq!(&finish(longest, &meta, read)[..], &chunk(longest, &meta, b"xyz")[..]);
    }
}
