//! The whole-log reader on SQLite (start-up, rebuilds): a connection of its own, on a blocking
//! thread, that steps the rows and copies the columns a reader of the log needs straight from
//! SQLite's row into a [`LogPage`]. Through sqlx every column of every row was copied into an
//! allocation of its own on SQLite's thread and freed on the reader's, and the payload and
//! metadata were checked as JSON before anyone parsed them: most of a rebuild's time (see
//! BENCHMARKS.md, "Hot-model rebuild: where the time goes").
//!
//! The unsafe code is confined to this module: a connection and a statement, each closed by
//! its `Drop`, used only on the thread that opened them.

use crate::{LogEvent, LogPage, Position, StoreError};
use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use libsqlite3_sys as ffi;
use std::ffi::{CStr, CString};
use std::path::Path;
use uuid::Uuid;

const SELECT_PAGE: &CStr = c"SELECT position, event_id, stream_id, version, event_type, schema_version, payload, \
                            recorded_at FROM events WHERE position > ?1 ORDER BY position LIMIT ?2";

/// How long a page's read waits for a lock (a WAL reader only waits during recovery).
const BUSY_TIMEOUT_MS: i32 = 10_000;

struct Connection(*mut ffi::sqlite3);

impl Connection {
    fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        use std::os::unix::ffi::OsStrExt;
        let name = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| StoreError::Config(format!("the log's file name has a NUL byte: {}", path.display())))?;
        let mut raw = std::ptr::null_mut();
        // SAFETY: `name` is a NUL-terminated string that outlives the call; `raw` receives a
        // handle (even on failure, when it must still be closed: `Drop` does that).
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                name.as_ptr(),
                &mut raw,
                ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_NOMUTEX,
                std::ptr::null(),
            )
        };
        let connection = Self(raw);
        if rc != ffi::SQLITE_OK {
            return Err(connection.error("open"));
        }
        // SAFETY: an open handle.
        unsafe { ffi::sqlite3_busy_timeout(connection.0, BUSY_TIMEOUT_MS) };
        Ok(connection)
    }

    fn error(&self, doing: &str) -> StoreError {
        if self.0.is_null() {
            return StoreError::Unavailable(format!("SQLite {doing}: out of memory"));
        }
        // SAFETY: an open handle; the message is NUL-terminated and copied before the next call.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(self.0)) };
        StoreError::Unavailable(format!("SQLite {doing}: {}", message.to_string_lossy()))
    }

    fn prepare(&self, sql: &CStr) -> Result<Statement<'_>, StoreError> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: an open handle, a NUL-terminated statement (length -1: up to the NUL).
        let rc = unsafe { ffi::sqlite3_prepare_v2(self.0, sql.as_ptr(), -1, &mut raw, std::ptr::null_mut()) };
        if rc != ffi::SQLITE_OK {
            return Err(self.error("prepare"));
        }
        Ok(Statement { raw, connection: self })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: the handle (or null, a no-op) is closed once; its statements were finalized
        // first (they borrow the connection).
        unsafe { ffi::sqlite3_close(self.0) };
    }
}

struct Statement<'c> {
    raw: *mut ffi::sqlite3_stmt,
    connection: &'c Connection,
}

impl Statement<'_> {
    /// Runs the statement again from the start with these two integers bound.
    fn rebind(&mut self, first: i64, second: i64) -> Result<(), StoreError> {
        // SAFETY: a prepared statement, reset after its last page.
        let rc = unsafe {
            let rc = ffi::sqlite3_bind_int64(self.raw, 1, first);
            if rc == ffi::SQLITE_OK {
                ffi::sqlite3_bind_int64(self.raw, 2, second)
            } else {
                rc
            }
        };
        if rc != ffi::SQLITE_OK {
            return Err(self.connection.error("bind"));
        }
        Ok(())
    }

    /// Ends the statement's run (and so its read transaction) before the page is handed on.
    fn reset(&mut self) {
        // SAFETY: a prepared statement. An error here repeats the last step's, already returned.
        unsafe { ffi::sqlite3_reset(self.raw) };
    }

    /// Steps to the next row: `false` once there is none.
    fn step(&mut self) -> Result<bool, StoreError> {
        // SAFETY: a prepared statement, bound.
        match unsafe { ffi::sqlite3_step(self.raw) } {
            ffi::SQLITE_ROW => Ok(true),
            ffi::SQLITE_DONE => Ok(false),
            _ => Err(self.connection.error("read")),
        }
    }

    fn int(&self, column: i32) -> i64 {
        // SAFETY: a statement positioned on a row; SQLite converts any column type.
        unsafe { ffi::sqlite3_column_int64(self.raw, column) }
    }

    /// The column's text, borrowed from SQLite's row: valid until the next step or reset,
    /// which need `&mut self`, so the borrow checker keeps it from outliving the row.
    fn text(&self, column: i32, name: &str) -> Result<&str, StoreError> {
        // SAFETY: a statement positioned on a row. `column_text` first, then `column_bytes`
        // (the order SQLite documents); the pointer stays valid until the row changes.
        let bytes = unsafe {
            let text = ffi::sqlite3_column_text(self.raw, column);
            if text.is_null() {
                return Err(StoreError::Corrupt(format!("{name} is NULL")));
            }
            let len = ffi::sqlite3_column_bytes(self.raw, column);
            std::slice::from_raw_parts(text, usize::try_from(len).unwrap_or(0))
        };
        std::str::from_utf8(bytes).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
    }
}

impl Drop for Statement<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized once, before its connection closes.
        unsafe { ffi::sqlite3_finalize(self.raw) };
    }
}

/// `recorded_at` as sqlx writes it (RFC 3339), or SQLite's own `YYYY-MM-DD HH:MM:SS[.fff]` in UTC.
fn timestamp(text: &str) -> Result<DateTime<Utc>, StoreError> {
    if let Some(utc) = written_utc(text) {
        return Ok(utc);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%F %T%.f").map(|t| t.and_utc()))
        .map_err(|e| StoreError::Corrupt(format!("recorded_at {text:?}: {e}")))
}

/// The one layout the log's writer produces, `YYYY-MM-DDTHH:MM:SS[.f{1,9}]+00:00`, read by
/// hand: chrono's general RFC 3339 parser was 3 % of a replay's reader. `None` for anything
/// else (another offset, a leap second, a date that does not exist), which chrono then reads.
fn written_utc(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let digits = |from: usize, to: usize| -> Option<u32> {
        let field = b.get(from..to)?;
        field.iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':')) {
        return None;
    }
    let (nanos, end) = if at(19, b'.') {
        let count = b[20..].iter().take_while(|d| d.is_ascii_digit()).count();
        if !(1..=9).contains(&count) {
            return None;
        }
        (digits(20, 20 + count)? * 10u32.pow(9 - count as u32), 20 + count)
    } else {
        (0, 19)
    };
    if &b[end..] != b"+00:00" {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(digits(0, 4)?).ok()?, digits(5, 7)?, digits(8, 10)?)?;
    Some(date.and_hms_nano_opt(digits(11, 13)?, digits(14, 16)?, digits(17, 19)?, nanos)?.and_utc())
}

/// Reads the log after `after` in pages of `batch` events on the calling (blocking) thread and
/// hands each to `page_read`, until the end of the log or until `page_read` returns `false`.
/// Ends early at the first position `visible_below` (asked after each page is read) says may not
/// be synced yet: the caller's tail reads the rest once it is.
pub(crate) fn scan(
    log_file: &Path,
    after: Position,
    batch: usize,
    visible_below: impl Fn() -> i64,
    mut page_read: impl FnMut(LogPage) -> bool,
) -> Result<(), StoreError> {
    let connection = Connection::open_read_only(log_file)?;
    let mut statement = connection.prepare(SELECT_PAGE)?;
    let batch = batch.max(1);
    let mut position = after;
    loop {
        statement.rebind(position.seq, i64::try_from(batch).unwrap_or(i64::MAX))?;
        let mut page = LogPage::with_capacity(batch);
        while statement.step()? {
            let event_id = statement.text(1, "event_id")?;
            page.push(LogEvent {
                position: Position { tx: 0, seq: statement.int(0) },
                event_id: Uuid::try_parse(event_id)
                    .map_err(|e| StoreError::Corrupt(format!("event_id {event_id:?}: {e}")))?,
                stream_id: statement.text(2, "stream_id")?,
                version: statement.int(3) as u64,
                event_type: statement.text(4, "event_type")?,
                schema_version: statement.int(5) as i32,
                payload: statement.text(6, "payload")?,
                recorded_at: timestamp(statement.text(7, "recorded_at")?)?,
            });
        }
        statement.reset();
        let cut = page.keep_below(visible_below());
        let Some(last) = page.last_position() else { return Ok(()) };
        position = last;
        if !page_read(page) || cut {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::timestamp;

    #[test]
    fn reads_timestamps_in_the_formats_sqlite_rows_hold() {
        let written = "2026-12-07T02:40:01.123456789+00:00";
        assert_eq!(timestamp(written).unwrap().to_rfc3339(), written);
        let sqlite_own = timestamp("2026-12-07 02:40:01.5").unwrap();
        assert_eq!(sqlite_own.to_rfc3339(), "2026-12-07T02:40:01.500+00:00");
        assert!(timestamp("yesterday").is_err());
    }

    /// The hand-written reader of the writer's layout gives what chrono gives, and leaves
    /// everything else to chrono.
    #[test]
    fn the_writers_layout_reads_as_chrono_reads_it() {
        let chrono = |text: &str| chrono::DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&chrono::Utc);
        let mut written: Vec<String> = [
            "2026-12-07T02:40:01.123456789+00:00",
            "2026-12-07T02:40:01.1+00:00",
            "2026-12-07T02:40:01.120+00:00",
            "2026-12-07T02:40:01.000001+00:00",
            "2026-12-07T02:40:01+00:00",
            "2024-02-29T23:59:59.999999999+00:00",
            "0001-01-01T00:00:00+00:00",
        ]
        .map(String::from)
        .to_vec();
        // What the writer produces for times across the years, at each precision chrono picks.
        for n in 0..2000i64 {
            let t = chrono::DateTime::from_timestamp(
                n * 7_919_993 + 1_600_000_000,
                (n * 982_451_653 % 1_000_000_000) as u32,
            );
            let t = t.unwrap();
            written.push(t.to_rfc3339());
            written.push(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false));
            written.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, false));
        }
        for text in &written {
            assert_eq!(super::written_utc(text), Some(chrono(text)), "{text}");
            assert_eq!(timestamp(text).unwrap(), chrono(text), "{text}");
        }
        // Left to chrono: other offsets, `Z`, a leap second, too many digits, impossible dates.
        for text in [
            "2026-12-07T02:40:01.5+01:00",
            "2026-12-07T02:40:01.5Z",
            "2016-12-31T23:59:60.5+00:00",
            "2026-12-07T02:40:01.1234567891+00:00",
            "2026-02-30T02:40:01+00:00",
            "2026-12-07T24:40:01+00:00",
            "2026-12-07T02:40:01.+00:00",
            "2026-12-07T02:40:01.5+00:00 ",
            "+2026-12-07T02:40:01+00:00",
            "2026-12-07",
            "",
        ] {
            assert_eq!(super::written_utc(text), None, "{text}");
            assert_eq!(
                timestamp(text).ok(),
                chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.with_timezone(&chrono::Utc)),
                "{text}"
            );
        }
    }
}
