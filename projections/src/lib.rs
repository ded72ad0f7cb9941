//! Read models projected from the event log.
//!
//! - [`HotModel`]: the auth hot path's licenses, apps, balances and API keys, in memory
//!   (dashmap), rebuilt from the log at start-up and kept current by tailing it.
//! - [`SqlProjection`]s: listings, the credit ledger and the audit log, as SQL tables whose
//!   checkpoint moves in the same transaction as their rows.
//! - Snapshots of the [`HotModel`] (`snapshot.rs`), so a start-up replays only the log's tail.

mod digest;
mod error;
mod file_counters;
mod files;
mod hot;
mod nonces;
mod runner;
mod snapshot;
pub mod sql;
pub mod status;
mod users;

pub use error::ProjectionError;
pub use file_counters::{FileCounters, FileCounts};
pub use hot::{
    license_streams, AccountView, ApiKeyView, Applied, AppliedListener, Chained, CreditHold, CreditRefusal,
    DashboardLogin, HotModel, KeyDigest, LastApplied, DEFAULT_NONCE_WINDOW,
};
pub use nonces::{Nonces, DEFAULT_NONCE_CAP};
pub use runner::{rebuild_sql, sql_projection_hash, HotRunner, SqlRunner, TailConfig, HOT};
pub use snapshot::{
    load_snapshot, run_snapshots, write_logged, write_snapshot, SnapshotRejected, SnapshotSchedule, Written,
    SNAPSHOT_CODE,
};
pub use sql::{all_sql_projections, CommerceLedger, PaceProjector, SqlProjection};
