//! Read models projected from the event log.
//!
//! - [`HotModel`]: the auth hot path's licenses, apps, balances and API keys, in memory
//!   (dashmap), rebuilt from the log at start-up and kept current by tailing it.
//! - [`SqlProjection`]s: listings, the credit ledger and the audit log, as SQL tables whose
//!   checkpoint moves in the same transaction as their rows.

mod error;
mod hot;
mod runner;
pub mod sql;
pub mod status;

pub use error::ProjectionError;
pub use hot::{
    AccountView, ApiKeyView, Applied, AppliedListener, CreditHold, CreditRefusal, DashboardLogin, HotModel, KeyDigest,
};
pub use runner::{rebuild_sql, sql_projection_hash, HotRunner, SqlRunner, TailConfig, HOT};
pub use sql::{all_sql_projections, CommerceLedger, SqlProjection};
