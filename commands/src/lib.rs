//! Command side: turns requests into events. Loads a stream, folds it, lets the domain decide,
//! and appends with the version it read (optimistic concurrency, retried on conflict) through a
//! group-commit writer. Also owns the master key that seals secrets and personal data at rest.

mod account_email;
pub mod app_users;
pub mod commerce;
mod crypto;
mod entropy;
mod error;
mod files;
mod folded;
mod handlers;
pub mod histogram;
pub mod keyring;
pub mod lockout;
mod metadata;
mod new_event;
pub mod offline;
pub mod password;
mod pii;
mod reseal;
pub mod signup_quota;
mod websocket_key;
mod writer;

pub use crypto::{MasterKey, MasterKeySource};
pub use entropy::Entropy;
pub use error::CommandError;
pub use folded::DEFAULT_FOLDED_STREAMS;
pub use handlers::{
    api_key_hash, normalize_email, AccountCreated, AppCreated, Commands, Executed, NewLicense, API_KEY_PREFIX,
};
pub use metadata::Actor;
pub use new_event::new_event;
pub use pii::{buyer_email_digest, PiiVault};
pub use reseal::Resealed;
pub use writer::{Writer, WriterConfig, WriterHandle, WriterStats};
