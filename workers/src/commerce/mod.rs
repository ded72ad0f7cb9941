//! Commerce fulfilment: provider signatures, payload normalization, the process manager that
//! turns ledger entries into licenses, provider API reads and buyer email.

pub mod mailer;
pub mod normalize;
pub mod processor;
pub mod provider_api;
pub mod signature;

pub use processor::{connection_key_purpose, connection_secret_purpose, CommerceConfig, CommerceWorker};
