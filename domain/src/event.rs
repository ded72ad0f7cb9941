use crate::{
    account::AccountEvent,
    app::AppEvent,
    app_user::{AppUserEvent, LoginReservationEvent},
    commerce::CommerceEvent,
    email_reservation::EmailReservationEvent,
    file::FileEvent,
    license::LicenseEvent,
    DomainError,
};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::value::RawValue;

/// The kind of stream an event lives in; the prefix of its stream id (`license-<key>`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamCategory {
    Account,
    App,
    License,
    /// One inbound provider event (the commerce ledger).
    Commerce,
    /// One merchant email, reserved for the account that holds it.
    EmailReservation,
    /// One end user of an app.
    AppUser,
    /// One login of one app, reserved for the end user that holds it.
    AppUserLogin,
    /// One protected file name of one app (`file-<appId>-<digest of the name>`).
    File,
}

impl StreamCategory {
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::App => "app",
            Self::License => "license",
            Self::Commerce => "commerce",
            Self::EmailReservation => "email",
            Self::AppUser => "appuser",
            Self::AppUserLogin => "userlogin",
            Self::File => "file",
        }
    }

    pub fn stream_id(self, id: impl std::fmt::Display) -> String {
        format!("{}-{}", self.prefix(), id)
    }

    /// Splits `category-id` into its category and id; unknown categories give `None`.
    pub fn parse(stream_id: &str) -> Option<(Self, &str)> {
        let (prefix, id) = stream_id.split_once('-')?;
        let category = [
            Self::Account,
            Self::App,
            Self::License,
            Self::Commerce,
            Self::EmailReservation,
            Self::AppUser,
            Self::AppUserLogin,
            Self::File,
        ]
        .into_iter()
        .find(|c| c.prefix() == prefix)?;
        Some((category, id))
    }
}

/// An event enum of one stream type: serialised with `#[serde(tag = "type")]`.
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + std::fmt::Debug {
    const CATEGORY: StreamCategory;

    /// The `type` tag under which the variant is stored.
    fn event_type(&self) -> &'static str;

    /// Version of the variant's payload schema: one past its last step in
    /// [`crate::upcast::UPCASTERS`], so registering a step bumps it.
    fn schema_version(&self) -> i32 {
        crate::upcast::current_version(crate::upcast::UPCASTERS, Self::CATEGORY, self.event_type())
    }

    /// Decodes a payload in today's shape whose variant the log's `event_type` column names.
    /// By default through the `type` tag in the payload; the enums declared with
    /// `event_enum!` go straight to the variant instead (see `typed_decode`), which reads the
    /// payload once where serde's tagged decode buffers it first.
    fn decode_typed(event_type: &str, payload: &str) -> serde_json::Result<Self> {
        let _ = event_type;
        serde_json::from_str(payload)
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

/// Decodes a stored payload back into its event enum, upcast to today's shape first.
pub fn decode_event<E: DomainEvent>(
    event_type: &str,
    schema_version: i32,
    payload: &RawValue,
) -> Result<E, DomainError> {
    decode_event_with(crate::upcast::UPCASTERS, event_type, schema_version, payload)
}

/// [`decode_event`] with a given upcaster registry (tests register test-only shape changes).
/// A payload already in today's shape (every event unless a step is registered for its type
/// and version) is decoded straight from its text; only an old-schema one becomes a JSON tree,
/// for the upcasters to rewrite.
pub fn decode_event_with<E: DomainEvent>(
    registry: &[crate::upcast::Upcaster],
    event_type: &str,
    schema_version: i32,
    payload: &RawValue,
) -> Result<E, DomainError> {
    decode_text_with(registry, event_type, schema_version, payload.get())
}

/// [`decode_event_with`] from the stored text itself, for a reader that borrows it from the
/// database's row (a `RawValue` would check the whole payload as JSON once more first).
fn decode_text_with<E: DomainEvent>(
    registry: &[crate::upcast::Upcaster],
    event_type: &str,
    schema_version: i32,
    payload: &str,
) -> Result<E, DomainError> {
    let undecodable = |e: serde_json::Error| DomainError::UndecodableEvent {
        event_type: event_type.to_string(),
        schema_version,
        reason: e.to_string(),
    };
    if !crate::upcast::has_step(registry, E::CATEGORY, event_type, schema_version) {
        return E::decode_typed(event_type, payload).map_err(undecodable);
    }
    let tree: serde_json::Value = serde_json::from_str(payload).map_err(undecodable)?;
    let (payload, _) = crate::upcast::upcast(registry, E::CATEGORY, event_type, schema_version, &tree);
    E::deserialize(&*payload).map_err(undecodable)
}

/// Whether `E` has no variant tagged `event_type` (one written by a later version of licensd).
/// Asked of serde itself, so no second list of variant names can fall out of step with the
/// enum: a tag it does not know fails as an unknown variant, a known one on its missing fields.
pub fn is_unknown_type<E: DomainEvent>(event_type: &str) -> bool {
    E::deserialize(serde_json::json!({ "type": event_type }))
        .is_err_and(|e| e.to_string().starts_with("unknown variant"))
}

/// Decodes for a reader of the whole log: `Ok(None)` for a type `E` does not know.
fn decode_known<E: DomainEvent>(
    event_type: &str,
    schema_version: i32,
    payload: &str,
) -> Result<Option<E>, DomainError> {
    match decode_text_with(crate::upcast::UPCASTERS, event_type, schema_version, payload) {
        Ok(event) => Ok(Some(event)),
        Err(_) if is_unknown_type::<E>(event_type) => Ok(None),
        Err(e) => Err(e),
    }
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
    EmailReservation(EmailReservationEvent),
    AppUser(AppUserEvent),
    AppUserLogin(LoginReservationEvent),
    File(FileEvent),
}

impl AnyEvent {
    /// Decodes by the stream's category, upcast to today's shape; `Ok(None)` for categories and
    /// event types this version does not know (streams and events added by later versions are
    /// skipped by older readers, not fatal). A payload of a known type that does not decode is
    /// an error: skipping it would silently lose a fact.
    pub fn decode(
        stream_id: &str,
        event_type: &str,
        schema_version: i32,
        payload: &RawValue,
    ) -> Result<Option<Self>, DomainError> {
        Self::decode_text(stream_id, event_type, schema_version, payload.get())
    }

    /// [`Self::decode`] from the stored payload text, borrowed (a rebuild reads it straight
    /// from the database's row and parses it once, here).
    pub fn decode_text(
        stream_id: &str,
        event_type: &str,
        schema_version: i32,
        payload: &str,
    ) -> Result<Option<Self>, DomainError> {
        let Some((category, _)) = StreamCategory::parse(stream_id) else { return Ok(None) };
        let (t, v, p) = (event_type, schema_version, payload);
        Ok(match category {
            StreamCategory::Account => decode_known(t, v, p)?.map(Self::Account),
            StreamCategory::App => decode_known(t, v, p)?.map(Self::App),
            StreamCategory::License => decode_known(t, v, p)?.map(Self::License),
            StreamCategory::Commerce => decode_known(t, v, p)?.map(Self::Commerce),
            StreamCategory::EmailReservation => decode_known(t, v, p)?.map(Self::EmailReservation),
            StreamCategory::AppUser => decode_known(t, v, p)?.map(Self::AppUser),
            StreamCategory::AppUserLogin => decode_known(t, v, p)?.map(Self::AppUserLogin),
            StreamCategory::File => decode_known(t, v, p)?.map(Self::File),
        })
    }
}
