//! Online backups of a SQLite deployment: consistent copies taken while the server writes.
//!
//! `VACUUM INTO` copies one database file as of one read transaction, without stopping writers.
//! The read models' file is copied before the log's: its checkpoints then never point past the
//! copied log, so the restored read models only have events to catch up on. The other order
//! could leave a checkpoint beyond the copied log's end, and events appended after a restore
//! at those positions would be skipped by the read models.

use crate::sqlite::read_models_file;
use crate::StoreError;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Row};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The log's file named by a `sqlite://` URL.
pub fn sqlite_log_file(url: &str) -> Result<PathBuf, StoreError> {
    let options =
        SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Config(format!("bad SQLite URL: {e}")))?;
    Ok(options.get_filename().to_path_buf())
}

/// The two files of a SQLite deployment: the log's and the read models' beside it.
pub fn sqlite_files(log_file: &Path) -> [PathBuf; 2] {
    [log_file.to_path_buf(), read_models_file(log_file)]
}

async fn open(file: &Path) -> Result<SqliteConnection, StoreError> {
    // An existing file only: a backup or a digest never creates a database.
    Ok(SqliteConnectOptions::new().filename(file).create_if_missing(false).connect().await?)
}

/// Copies the read models' file, then the log's, into `folder` (same names), each as one
/// consistent snapshot. `folder` must exist and must not hold the files yet.
pub async fn backup_sqlite(log_file: &Path, folder: &Path) -> Result<(), StoreError> {
    let [log, read_models] = sqlite_files(log_file);
    for source in [read_models, log] {
        let name = source.file_name().ok_or_else(|| StoreError::Config("the database path has no file name".into()))?;
        let target = folder.join(name);
        let mut connection = open(&source).await?;
        sqlx::query("VACUUM INTO $1").bind(target.display().to_string()).execute(&mut connection).await?;
        sqlx::Connection::close(connection).await?;
    }
    Ok(())
}

/// The log's events in order, each as one line of SQL literals (every column), fed to `line`;
/// returns the last position and the number of events. Both sides of a backup hash these lines,
/// so equal digests mean the same events in the same order.
pub async fn sqlite_event_lines(log_file: &Path, mut line: impl FnMut(&str)) -> Result<(i64, u64), StoreError> {
    let mut connection = open(log_file).await?;
    let (mut last, mut count, mut after) = (0i64, 0u64, 0i64);
    loop {
        let rows = sqlx::query(
            "SELECT position, quote(position) || '|' || quote(event_id) || '|' || quote(stream_id) || '|' || \
             quote(version) || '|' || quote(event_type) || '|' || quote(schema_version) || '|' || quote(payload) \
             || '|' || quote(metadata) || '|' || quote(recorded_at) FROM events WHERE position > $1 \
             ORDER BY position LIMIT 10000",
        )
        .bind(after)
        .fetch_all(&mut connection)
        .await?;
        let Some(tail) = rows.last() else { break };
        after = tail.try_get(0)?;
        for row in &rows {
            line(row.try_get::<&str, _>(1)?);
            count += 1;
        }
        last = after;
    }
    sqlx::Connection::close(connection).await?;
    Ok((last, count))
}
