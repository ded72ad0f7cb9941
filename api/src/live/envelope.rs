//! The frames of the live protocol (websocket.md §2): parsing a client packet, echoing its id,
//! building responses and panel events, and the close codes with their verbatim reasons.

use serde_json::{Map, Value};

/// The id every panel event carries; reserved, so a client packet may not use it.
pub const EVENT_ID: u64 = u64::MAX;

/// Highest packet type the protocol defines (17, set_panel_events_subscription).
pub const MAX_PACKET_TYPE: u64 = 17;

/// A packet id as the client sent it: a JSON integer or a decimal string, echoed in that form
/// (§14.3); de-duplication compares the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketId {
    pub value: u64,
    pub quoted: bool,
}

impl PacketId {
    pub fn to_json(self) -> Value {
        if self.quoted {
            Value::String(self.value.to_string())
        } else {
            Value::from(self.value)
        }
    }
}

/// One client packet: its id, type and the other fields of the flat object.
#[derive(Debug)]
pub struct Packet {
    pub id: PacketId,
    pub kind: u64,
    pub body: Map<String, Value>,
}

/// Why and how the server closes a socket (websocket.md §5; reasons verbatim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The server shuts down (SIGTERM/SIGINT): 1000 with an empty reason.
    Shutdown,
    FromPanel,
    AppPaused,
    NotInitialized,
    RateLimitHit,
    /// During a backoff or an IP block: the seconds left.
    RateLimited(u64),
    InitTimeout,
    SessionBlacklisted,
    ClientIdBlacklisted,
    InitFailed,
    MissingTypeOrId,
    UnknownType,
    InvalidBody,
    UnsupportedData,
    ResumeNotFound,
}

impl Close {
    pub fn code(self) -> u16 {
        match self {
            Self::Shutdown => 1000,
            Self::FromPanel => 4100,
            Self::AppPaused => 4101,
            Self::NotInitialized => 4200,
            Self::RateLimitHit | Self::RateLimited(_) => 4201,
            Self::InitTimeout => 4202,
            Self::SessionBlacklisted => 4203,
            Self::ClientIdBlacklisted => 4204,
            Self::InitFailed => 4205,
            Self::MissingTypeOrId => 4300,
            Self::UnknownType => 4301,
            Self::InvalidBody => 4302,
            Self::UnsupportedData => 4304,
            Self::ResumeNotFound => 4401,
        }
    }

    pub fn reason(self) -> String {
        let fixed = match self {
            Self::Shutdown => "",
            Self::FromPanel => "disconnected from panel",
            Self::AppPaused => "application paused",
            Self::NotInitialized => "connection is not initialized",
            Self::RateLimitHit => "rate limit hit",
            Self::RateLimited(seconds) => return format!("rate limited, {seconds} seconds left"),
            Self::InitTimeout => "session wasn't initialized in 15 seconds after connection",
            Self::SessionBlacklisted => "session was blacklisted",
            Self::ClientIdBlacklisted => "external ID is blacklisted",
            Self::InitFailed => "failed to initialize session",
            Self::MissingTypeOrId => "packet does not contain mandatory 'type' and/or 'id' fields",
            Self::UnknownType => "invalid handler type specified",
            Self::InvalidBody => "invalid request body",
            Self::UnsupportedData => "received unsupported data",
            Self::ResumeNotFound => "resume ID was not found or it is expired",
        };
        fixed.to_string()
    }
}

/// Parses one text frame: a flat JSON object with an integer `type` and a `id` (integer
/// 0..2^64−2 or a decimal string of one). Unparseable, or `type`/`id` missing or malformed →
/// 4300; a type the protocol does not define → 4301.
pub fn parse(text: &str) -> Result<Packet, Close> {
    // serde_json refuses nesting deeper than 128 levels itself: hostile depth is a parse error.
    let Ok(Value::Object(mut body)) = serde_json::from_str::<Value>(text) else {
        return Err(Close::MissingTypeOrId);
    };
    let id = body.remove("id").as_ref().and_then(packet_id).ok_or(Close::MissingTypeOrId)?;
    let kind = body.remove("type").as_ref().and_then(Value::as_u64).ok_or(Close::MissingTypeOrId)?;
    if kind > MAX_PACKET_TYPE {
        return Err(Close::UnknownType);
    }
    Ok(Packet { id, kind, body })
}

fn packet_id(value: &Value) -> Option<PacketId> {
    let (value, quoted) = match value {
        Value::Number(n) => (n.as_u64()?, false),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => (s.parse().ok()?, true),
        _ => return None,
    };
    (value != EVENT_ID).then_some(PacketId { value, quoted })
}

/// A response: `{"id":<as sent>, ...fields, "status":<n>}`; never a `type`.
pub fn response(id: PacketId, status: u16, fields: Map<String, Value>) -> String {
    let mut object = Map::with_capacity(fields.len() + 2);
    object.insert("id".into(), id.to_json());
    object.extend(fields);
    object.insert("status".into(), Value::from(status));
    Value::Object(object).to_string()
}

/// A panel event: `{"id":2^64−1,"event_type":n,"content":{...}}`, `content` left out when empty.
pub fn event(event_type: u16, content: Map<String, Value>) -> String {
    let mut object = Map::with_capacity(3);
    object.insert("id".into(), Value::from(EVENT_ID));
    object.insert("event_type".into(), Value::from(event_type));
    if !content.is_empty() {
        object.insert("content".into(), Value::Object(content));
    }
    Value::Object(object).to_string()
}

/// The packet's `name` field when it is a string; a missing or mistyped field is 4302.
pub fn string_field<'a>(body: &'a Map<String, Value>, name: &str) -> Result<&'a str, Close> {
    body.get(name).and_then(Value::as_str).ok_or(Close::InvalidBody)
}

/// An optional string field: absent or null is `None`; any other type is 4302.
pub fn optional_string<'a>(body: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, Close> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Close::InvalidBody),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_types_and_their_refusals() {
        let packet = parse(r#"{"type":0,"id":7,"extra":true}"#).unwrap();
        assert_eq!((packet.kind, packet.id, packet.body.len()), (0, PacketId { value: 7, quoted: false }, 1));
        let quoted = parse(r#"{"type":5,"id":"18446744073709551614"}"#).unwrap();
        assert_eq!(quoted.id.to_json(), Value::String("18446744073709551614".into()));
        for bad in [
            r#"{"type":0}"#,
            r#"{"id":1}"#,
            r#"{"type":"0","id":1}"#,
            r#"{"type":0,"id":-1}"#,
            r#"{"type":0,"id":1.5}"#,
            r#"{"type":0,"id":18446744073709551615}"#,
            r#"{"type":0,"id":"18446744073709551615"}"#,
            r#"{"type":0,"id":"12a"}"#,
            "[1,2]",
            "not json",
        ] {
            assert_eq!(parse(bad).unwrap_err(), Close::MissingTypeOrId, "{bad}");
        }
        assert_eq!(parse(r#"{"type":18,"id":1}"#).unwrap_err(), Close::UnknownType);
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(parse(&deep).unwrap_err(), Close::MissingTypeOrId);
    }

    #[test]
    fn responses_and_events_have_the_documented_shape() {
        let id = PacketId { value: 3, quoted: false };
        let text = response(id, 1, Map::new());
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), serde_json::json!({"id":3,"status":1}));
        let text = event(201, Map::new());
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            serde_json::json!({"id":18446744073709551615u64,"event_type":201})
        );
        assert_eq!(Close::RateLimited(12).reason(), "rate limited, 12 seconds left");
    }
}
