//! A domain event as the log stores it: its type, schema version and payload from the event,
//! with the id and metadata the writer gives it.

use licensd_domain::{DomainEvent, EventData};
use licensd_store::NewEvent;

pub fn new_event(event: &impl DomainEvent, event_id: uuid::Uuid, metadata: serde_json::Value) -> NewEvent {
    let data = EventData::encode(event);
    NewEvent {
        event_id,
        event_type: data.event_type.to_string(),
        schema_version: data.schema_version,
        payload: data.payload,
        metadata,
    }
}
