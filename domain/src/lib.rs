//! Pure domain model of licensd: aggregates as `decide`/`evolve` functions over typed events.
//!
//! Nothing here performs I/O or reads the clock; time and randomness are passed in, so every rule
//! can be tested as given-events / when-command / then-events.

pub mod account;
pub mod app;
pub mod app_user;
mod clock;
pub mod commerce;
pub mod email_reservation;
mod error;
mod event;
pub mod file;
mod ids;
pub mod license;
pub mod portal;
mod security;
mod typed_decode;
pub mod upcast;
mod variables;
pub mod web_address;

pub use clock::{Clock, FixedClock, SystemClock};
pub use error::DomainError;
pub use event::{
    decode_event, decode_event_with, is_unknown_type, Aggregate, AnyEvent, DomainEvent, EventData, StreamCategory,
};
pub use ids::{AccountId, ApiKeyId, AppId, LicenseKey, Sealed, LICENSE_KEY_ALPHABET};
pub use security::{AccessLists, ListName, SecurityLists, SecurityListsUpdate, MAX_HWID_LEN, MAX_LIST_ENTRIES};
pub use variables::{
    VariableAccess, VariableAccessMap, Variables, MAX_VARIABLES, MAX_VARIABLES_BYTES, MAX_VARIABLE_KEY_LEN,
};
