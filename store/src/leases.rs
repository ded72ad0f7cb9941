//! Leases: which node of several on one Postgres database runs a single-owner role (the SQL read
//! models' reader, the webhook dispatcher, the commerce process manager).
//!
//! Lease rows with an expiry rather than session advisory locks: an advisory lock lives as long
//! as one connection, so it needs a connection set aside and kept alive, and a lock whose
//! connection a proxy or a network drop keeps half-open stays held; a row's expiry bounds the
//! handover however the owner died, and survives a pool's reconnects. Expiries are taken from the
//! database's clock, never a node's. SQLite is one node: the process always holds every role.
//!
//! What this node holds is process-wide (like the hot-path read counter): the keeper in the
//! workers sets it, `/healthz` and `/metrics` read it.

use crate::{SqlValue, Statement, Store, StoreError};
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

/// Takes the role, or renews it, when it is free, expired or already ours; the row returned says
/// we hold it. One statement, so two nodes racing for an expired row cannot both win.
macro_rules! hold_sql {
    ($now:literal) => {
        concat!(
            "INSERT INTO leases (role, holder, expires_at, term) VALUES ($1, $2, ",
            $now,
            " + $3, 1)
             ON CONFLICT (role) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,
                 term = leases.term + CASE WHEN leases.holder = excluded.holder THEN 0 ELSE 1 END
             WHERE leases.holder = excluded.holder OR leases.expires_at < ",
            $now,
            " RETURNING CAST(term AS TEXT)"
        )
    };
}

const HOLD_POSTGRES: &str = hold_sql!("CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)");
const RELEASE: &str = "DELETE FROM leases WHERE holder = $1";

impl Store {
    /// Takes or renews `role` for `holder` for `ttl_ms` from now (the database's now); true when
    /// `holder` holds it afterwards. SQLite: always true (one node).
    pub async fn hold_lease(&self, role: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        if self.backend() != "postgres" {
            return Ok(true);
        }
        let statement = Statement::new(HOLD_POSTGRES, [role.into(), holder.into(), SqlValue::from(ttl_ms)]);
        Ok(!self.execute_single(&statement).await?.is_empty())
    }

    /// Gives up every role `holder` holds (a clean shutdown), so a survivor takes them over on
    /// its next attempt instead of after the expiry.
    pub async fn release_leases(&self, holder: &str) -> Result<(), StoreError> {
        if self.backend() != "postgres" {
            return Ok(());
        }
        self.execute(&[Statement::new(RELEASE, [holder.into()])]).await.map(drop)
    }

    /// Every role's holder and milliseconds until its lease expires (negative: expired), by role.
    pub async fn lease_holders(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        if self.backend() != "postgres" {
            return Ok(Vec::new());
        }
        let sql = "SELECT role, holder,
                CAST(expires_at - CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS TEXT)
             FROM leases ORDER BY role";
        let rows = self.query_rows(sql, &[]).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let mut cols = row.into_iter().map(Option::unwrap_or_default);
                Some((cols.next()?, cols.next()?, cols.next()?.parse().ok()?))
            })
            .collect())
    }
}

static HELD: LazyLock<Mutex<BTreeMap<&'static str, bool>>> = LazyLock::new(Default::default);

/// Records whether this process holds `role` now.
pub fn set_lease_held(role: &'static str, held: bool) {
    HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(role, held);
}

/// Every role this process has tried to hold, and whether it holds it now.
pub fn leases_held() -> Vec<(&'static str, bool)> {
    HELD.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().map(|(r, h)| (*r, *h)).collect()
}
