//! Schema evolution: an event written today (v1) is read after its variant changed shape (v2),
//! through an upcaster; types a reader does not know are skipped, bad payloads of known types
//! are errors.

use licensd_domain::account::AccountEvent;
use licensd_domain::upcast::{current_version, Upcaster};
use licensd_domain::{decode_event_with, AnyEvent, DomainEvent, EventData, StreamCategory};
use serde::{Deserialize, Serialize};
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Value};

/// A payload as the store hands it to readers: its JSON text.
fn raw(payload: &Value) -> Box<RawValue> {
    to_raw_value(payload).unwrap()
}

/// A test-only event as written by today's code: version 1 of `Topped`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Today {
    Topped { amount: u64 },
}

impl DomainEvent for Today {
    const CATEGORY: StreamCategory = StreamCategory::Account;
    fn event_type(&self) -> &'static str {
        "Topped"
    }
}

/// The same event after a v2 change: `amount` renamed to `credits`, a `reason` added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum Tomorrow {
    Topped { credits: u64, reason: String },
}

impl DomainEvent for Tomorrow {
    const CATEGORY: StreamCategory = StreamCategory::Account;
    fn event_type(&self) -> &'static str {
        "Topped"
    }
    fn schema_version(&self) -> i32 {
        current_version(REGISTRY, Self::CATEGORY, self.event_type())
    }
}

fn topped_v1_to_v2(mut payload: Value) -> Value {
    if let Some(fields) = payload.as_object_mut() {
        let amount = fields.remove("amount").unwrap_or(Value::Null);
        fields.insert("credits".into(), amount);
        fields.insert("reason".into(), json!("before reasons were recorded"));
    }
    payload
}

static REGISTRY: &[Upcaster] =
    &[Upcaster { category: StreamCategory::Account, event_type: "Topped", from_version: 1, step: topped_v1_to_v2 }];

#[test]
fn a_v1_event_written_today_is_read_after_a_v2_change() {
    let stored = EventData::encode(&Today::Topped { amount: 7 });
    assert_eq!(stored.schema_version, 1, "today's code writes v1");
    let read: Tomorrow =
        decode_event_with(REGISTRY, stored.event_type, stored.schema_version, &raw(&stored.payload)).unwrap();
    assert_eq!(read, Tomorrow::Topped { credits: 7, reason: "before reasons were recorded".into() });

    // Events written after the change are stored as v2 and read as they are.
    let new = EventData::encode(&Tomorrow::Topped { credits: 3, reason: "grant".into() });
    assert_eq!(new.schema_version, 2);
    let read: Tomorrow = decode_event_with(REGISTRY, new.event_type, new.schema_version, &raw(&new.payload)).unwrap();
    assert_eq!(read, Tomorrow::Topped { credits: 3, reason: "grant".into() });

    // Without the upcaster the old payload is not readable: the step is what makes it so.
    let failed = decode_event_with::<Tomorrow>(&[], stored.event_type, 1, &raw(&stored.payload));
    assert!(failed.is_err());
}

#[test]
fn real_events_are_stored_at_their_registered_version() {
    let event = AccountEvent::AccountSuspended { at: chrono::Utc::now() };
    assert_eq!(EventData::encode(&event).schema_version, 1, "no shape change registered yet");
}

#[test]
fn unknown_types_are_skipped_and_bad_payloads_of_known_types_are_errors() {
    let account = "account-0190d9f6-0000-7000-8000-000000000000";
    let future = json!({ "type": "AccountRenamed", "name": "n" });
    assert_eq!(AnyEvent::decode(account, "AccountRenamed", 1, &raw(&future)).unwrap(), None);
    assert_eq!(AnyEvent::decode("widget-1", "Anything", 1, &raw(&future)).unwrap(), None, "unknown category");

    let broken = json!({ "type": "CreditsGranted", "amount": "lots" });
    let error = AnyEvent::decode(account, "CreditsGranted", 1, &raw(&broken)).unwrap_err();
    assert!(error.to_string().contains("CreditsGranted v1"), "{error}");

    let good = EventData::encode(&AccountEvent::AccountSuspended { at: chrono::Utc::now() });
    assert!(AnyEvent::decode(account, good.event_type, 1, &raw(&good.payload)).unwrap().is_some());
}
