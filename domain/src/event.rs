use crate::{account::AccountEvent, app::AppEvent, commerce::CommerceEvent, license::LicenseEvent, DomainError};
use serde::{de::DeserializeOwned, Serialize};

/// The kind of stream an event lives in; the prefix of its stream id (`license-<key>`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamCategory {
    Account,
    App,
    License,
    /// One inbound provider event (the commerce ledger).
    Commerce,
}

impl StreamCategory {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::App => "app",
            Self::License => "license",
            Self::Commerce => "commerce",
        }
    }

    pub fn stream_id(self, id: impl std::fmt::Display) -> String {
        format!("{}-{}", self.prefix(), id)
    }

    /// Splits `category-id` into its category and id; unknown categories give `None`.
    pub fn parse(stream_id: &str) -> Option<(Self, &str)> {
        let (prefix, id) = stream_id.split_once('-')?;
        let category =
            [Self::Account, Self::App, Self::License, Self::Commerce].into_iter().find(|c| c.prefix() == prefix)?;
        Some((category, id))
    }
}

/// An event enum of one stream type: serialised with `#[serde(tag = "type")]`.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    const CATEGORY: StreamCategory;

    /// The `type` tag under which the variant is stored.
    fn event_type(&self) -> &'static str;

    /// Version of the variant's payload schema; bumped when a variant changes shape.
    fn schema_version(&self) -> i32 {
        1
    }
}

/// The serialised form of an event, as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventData {
    pub event_type: &'static str,
    pub schema_version: i32,
    pub payload: serde_json::Value,
}

impl EventData {
    pub fn encode<E: DomainEvent>(event: &E) -> Self {
        Self {
            event_type: event.event_type(),
            schema_version: event.schema_version(),
            // Serialising a derive(Serialize) enum of plain data into a Value cannot fail.
            payload: serde_json::to_value(event).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Decodes a stored payload back into its event enum.
pub fn decode_event<E: DomainEvent>(
    event_type: &str,
    schema_version: i32,
    payload: &serde_json::Value,
) -> Result<E, DomainError> {
    E::deserialize(payload).map_err(|e| DomainError::UndecodableEvent {
        event_type: event_type.to_string(),
        schema_version,
        reason: e.to_string(),
    })
}

/// A consistency boundary: state is a left fold of its events, commands are decided against it.
pub trait Aggregate: Default {
    type Event: DomainEvent;
    type Command;

    fn evolve(self, event: &Self::Event) -> Self;

    fn decide(
        &self,
        command: Self::Command,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Self::Event>, DomainError>;

    fn fold<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        events.into_iter().fold(Self::default(), Self::evolve)
    }
}

/// An event of any stream type, for readers of the whole log (projections, audit tooling).
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    Account(AccountEvent),
    App(AppEvent),
    License(LicenseEvent),
    Commerce(CommerceEvent),
}

impl AnyEvent {
    /// Decodes by the stream's category; `Ok(None)` for categories this version does not know
    /// (streams added by later features are skipped by older readers, not fatal).
    pub fn decode(
        stream_id: &str,
        event_type: &str,
        schema_version: i32,
        payload: &serde_json::Value,
    ) -> Result<Option<Self>, DomainError> {
        let Some((category, _)) = StreamCategory::parse(stream_id) else { return Ok(None) };
        Ok(Some(match category {
            StreamCategory::Account => Self::Account(decode_event(event_type, schema_version, payload)?),
            StreamCategory::App => Self::App(decode_event(event_type, schema_version, payload)?),
            StreamCategory::License => Self::License(decode_event(event_type, schema_version, payload)?),
            StreamCategory::Commerce => Self::Commerce(decode_event(event_type, schema_version, payload)?),
        }))
    }
}
