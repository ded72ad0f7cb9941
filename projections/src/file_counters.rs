//! Delivery counters per protected file (`transfer_count`, `last_transferred_at`, bytes
//! served): a small table the delivery side updates once per transfer through
//! [`FileCounters::record_transfer`], not an event per chunk (websocket.md decision 1).

use chrono::{DateTime, TimeZone, Utc};
use licensd_domain::AppId;
use licensd_store::{SqlValue, Statement, Store, StoreError};
use std::collections::HashMap;

/// $1 app, $2 name, $3 bytes, $4 at (ms), $5 version.
const COMPLETED: &str = "INSERT INTO file_transfers
     (app_id, name, transfer_count, bytes_served, last_transferred_at, last_version)
     VALUES ($1, $2, 1, $3, $4, $5)
     ON CONFLICT (app_id, name) DO UPDATE SET
         transfer_count = file_transfers.transfer_count + 1,
         bytes_served = file_transfers.bytes_served + $3,
         last_transferred_at = $4,
         last_version = $5";

/// $1 app, $2 name, $3 bytes.
const INTERRUPTED: &str = "INSERT INTO file_transfers
     (app_id, name, transfer_count, bytes_served, last_transferred_at, last_version)
     VALUES ($1, $2, 0, $3, NULL, NULL)
     ON CONFLICT (app_id, name) DO UPDATE SET bytes_served = file_transfers.bytes_served + $3";

const SELECT: &str = "SELECT name, CAST(transfer_count AS TEXT), CAST(bytes_served AS TEXT),
     CAST(last_transferred_at AS TEXT) FROM file_transfers WHERE app_id = $1";

const FORGET: &str = "DELETE FROM file_transfers WHERE app_id = $1 AND name = $2";

/// The counters of one file (zeros for a file never transferred).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCounts {
    /// Completed transfers (a resumed transfer that completes counts once, when it completes).
    pub transfer_count: u64,
    /// Bytes sent, completed or not.
    pub bytes_served: u64,
    pub last_transferred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct FileCounters {
    store: Store,
}

fn int(value: u64) -> SqlValue {
    SqlValue::from(i64::try_from(value).unwrap_or(i64::MAX))
}

impl FileCounters {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Records one transfer of `version` of the file: `bytes` sent, and whether it reached the
    /// end (`completed`: the count goes up and `last_transferred_at` becomes `at`). Call once
    /// per transfer, when it ends (a stop, a drop or the last byte), never per chunk.
    pub async fn record_transfer(
        &self,
        app_id: AppId,
        name: &str,
        version: u32,
        bytes: u64,
        completed: bool,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (app, name) = (SqlValue::from(app_id.to_string()), SqlValue::from(name));
        let statement = if completed {
            Statement::new(COMPLETED, [app, name, int(bytes), at.timestamp_millis().into(), i64::from(version).into()])
        } else {
            Statement::new(INTERRUPTED, [app, name, int(bytes)])
        };
        self.store.execute(&[statement]).await.map(drop)
    }

    /// The counters of every file of the app that was ever transferred, by name.
    pub async fn of_app(&self, app_id: AppId) -> Result<HashMap<String, FileCounts>, StoreError> {
        let rows = self.store.query_rows(SELECT, &[app_id.to_string().into()]).await?;
        let number = |cell: &Option<String>| cell.as_deref().and_then(|t| t.parse::<i64>().ok());
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let name = row.first()?.clone()?;
                let counts = FileCounts {
                    transfer_count: number(row.get(1)?).unwrap_or(0).max(0) as u64,
                    bytes_served: number(row.get(2)?).unwrap_or(0).max(0) as u64,
                    last_transferred_at: number(row.get(3)?).and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
                };
                Some((name, counts))
            })
            .collect())
    }

    /// The counters of one file.
    pub async fn of_file(&self, app_id: AppId, name: &str) -> Result<FileCounts, StoreError> {
        Ok(self.of_app(app_id).await?.remove(name).unwrap_or_default())
    }

    /// Drops the counters of a deleted file (a new file of the name starts from zero).
    pub async fn forget(&self, app_id: AppId, name: &str) -> Result<(), StoreError> {
        self.store.execute(&[Statement::new(FORGET, [app_id.to_string().into(), name.into()])]).await.map(drop)
    }
}
