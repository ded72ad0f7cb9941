//! A page of the log for readers that go through all of it (start-up, rebuilds): the text
//! columns of every row side by side in one buffer, so a page costs a few allocations rather
//! than several per event, and the payload is handed on as the stored text, unchecked, for the
//! reader to parse once into its typed event.

use crate::{Position, RecordedEvent};
use chrono::{DateTime, Utc};
use std::ops::Range;
use uuid::Uuid;

/// One event of a [`LogPage`], its text borrowed from the page. The metadata is not read: no
/// reader of the whole log needs it.
#[derive(Debug, Clone, Copy)]
pub struct LogEvent<'a> {
    pub position: Position,
    pub event_id: Uuid,
    pub stream_id: &'a str,
    pub version: u64,
    pub event_type: &'a str,
    pub schema_version: i32,
    /// The payload as stored (JSON text, not checked here).
    pub payload: &'a str,
    pub recorded_at: DateTime<Utc>,
}

impl RecordedEvent {
    /// This event as a [`LogEvent`] (borrowed; nothing is copied).
    pub fn as_log_event(&self) -> LogEvent<'_> {
        LogEvent {
            position: self.position,
            event_id: self.event_id,
            stream_id: &self.stream_id,
            version: self.version,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            payload: self.payload.get(),
            recorded_at: self.recorded_at,
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    position: Position,
    event_id: Uuid,
    version: u64,
    schema_version: i32,
    recorded_at: DateTime<Utc>,
    stream_id: Range<usize>,
    event_type: Range<usize>,
    payload: Range<usize>,
}

/// Consecutive events of the log, in log order.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    text: String,
    rows: Vec<Row>,
}

impl LogPage {
    pub(crate) fn with_capacity(rows: usize) -> Self {
        // About what a license's creation takes: most pages fill without growing the buffer.
        Self { text: String::with_capacity(rows * 320), rows: Vec::with_capacity(rows) }
    }

    pub(crate) fn push(&mut self, row: LogEvent<'_>) {
        let mut span = |s: &str| {
            let start = self.text.len();
            self.text.push_str(s);
            start..self.text.len()
        };
        let (stream_id, event_type, payload) = (span(row.stream_id), span(row.event_type), span(row.payload));
        self.rows.push(Row {
            position: row.position,
            event_id: row.event_id,
            version: row.version,
            schema_version: row.schema_version,
            recorded_at: row.recorded_at,
            stream_id,
            event_type,
            payload,
        });
    }

    /// Drops the rows at or past position `seq` (the page is in position order); tells whether
    /// it dropped any.
    pub(crate) fn keep_below(&mut self, seq: i64) -> bool {
        let keep = self.rows.partition_point(|row| row.position.seq < seq);
        let cut = keep < self.rows.len();
        self.rows.truncate(keep);
        cut
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn last_position(&self) -> Option<Position> {
        self.rows.last().map(|row| row.position)
    }

    pub fn events(&self) -> impl ExactSizeIterator<Item = LogEvent<'_>> + '_ {
        self.rows.iter().map(|row| LogEvent {
            position: row.position,
            event_id: row.event_id,
            stream_id: &self.text[row.stream_id.clone()],
            version: row.version,
            event_type: &self.text[row.event_type.clone()],
            schema_version: row.schema_version,
            payload: &self.text[row.payload.clone()],
            recorded_at: row.recorded_at,
        })
    }
}
