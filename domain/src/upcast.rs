//! Schema evolution of stored events. A payload is stored with the schema version of its variant
//! at the time it was written and is never rewritten; reading it walks it through one
//! [`Upcaster`] step per version until it has today's shape, so every reader (aggregate folds,
//! projections, tools) decodes one shape only.
//!
//! To change a variant's shape: change the enum, then append to [`UPCASTERS`] a step from the
//! old version to the next, turning the old JSON into the new. The variant's
//! [`crate::DomainEvent::schema_version`] follows from the registry, so new events are stored
//! under the new version.
//!
//! A payload stored under a version newer than this build knows (a later licensd wrote it) is
//! decoded as it is; if its shape no longer fits, decoding fails and the reader reports it.

use crate::StreamCategory;
use serde_json::Value;

/// One step: a payload of `event_type` at `from_version` becomes one at `from_version + 1`.
#[derive(Debug, Clone, Copy)]
pub struct Upcaster {
    pub category: StreamCategory,
    pub event_type: &'static str,
    pub from_version: i32,
    /// Pure JSON to JSON; it must keep the `type` tag.
    pub step: fn(Value) -> Value,
}

/// Every shape change of a stored event since version 1. None yet: every variant is at v1.
pub static UPCASTERS: &[Upcaster] = &[];

/// The version new events of `event_type` are stored under: one past its last step.
pub fn current_version(registry: &[Upcaster], category: StreamCategory, event_type: &str) -> i32 {
    registry
        .iter()
        .filter(|u| u.category == category && u.event_type == event_type)
        .map(|u| u.from_version + 1)
        .max()
        .unwrap_or(1)
}

/// Whether a payload of `event_type` stored at `version` has a step to take (is not yet in
/// today's shape).
pub fn has_step(registry: &[Upcaster], category: StreamCategory, event_type: &str, version: i32) -> bool {
    registry.iter().any(|u| u.category == category && u.event_type == event_type && u.from_version == version)
}

/// The payload in today's shape (unchanged when no step applies), and the version it is at.
pub fn upcast<'a>(
    registry: &[Upcaster],
    category: StreamCategory,
    event_type: &str,
    mut version: i32,
    payload: &'a Value,
) -> (std::borrow::Cow<'a, Value>, i32) {
    let mut payload = std::borrow::Cow::Borrowed(payload);
    while let Some(upcaster) =
        registry.iter().find(|u| u.category == category && u.event_type == event_type && u.from_version == version)
    {
        payload = std::borrow::Cow::Owned((upcaster.step)(payload.into_owned()));
        version += 1;
    }
    (payload, version)
}
