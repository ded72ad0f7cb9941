//! What each read model is doing, for `/healthz` and `/metrics`: how far it got, how many events
//! it skipped as unknown, and the error that has been stopping it, since when.
//!
//! Process-wide (like the store's hot-path read counter): runners are made in several places
//! (serve, workers, on-demand catch-ups) and all of them report on the same projection.

use crate::ProjectionError;
use licensd_store::Position;
use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

/// A read model as last reported.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectionStatus {
    pub name: &'static str,
    /// The last log position it applied.
    pub position: Position,
    /// Events of types or streams it does not know, skipped since start.
    pub skipped: u64,
    /// When it last had read everything in the log (`None`: not yet since start).
    pub caught_up_at: Option<Instant>,
    /// The error of its last step, if that step failed, and when its run of failures began.
    pub failing: Option<Failure>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub since: Instant,
    /// Safe to show: the position and decoding error of an event, never database error text.
    pub message: String,
}

static STATUSES: LazyLock<Mutex<BTreeMap<&'static str, ProjectionStatus>>> = LazyLock::new(Default::default);

fn update(name: &'static str, change: impl FnOnce(&mut ProjectionStatus)) {
    let mut statuses = STATUSES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let status = statuses.entry(name).or_insert_with(|| ProjectionStatus {
        name,
        position: Position::START,
        skipped: 0,
        caught_up_at: None,
        failing: None,
    });
    change(status);
}

/// Every projection that has reported, by name.
pub fn statuses() -> Vec<ProjectionStatus> {
    STATUSES.lock().unwrap_or_else(std::sync::PoisonError::into_inner).values().cloned().collect()
}

/// A step of `name` succeeded at `position`; `caught_up` when it found the end of the log.
pub(crate) fn stepped(name: &'static str, position: Position, caught_up: bool) {
    update(name, |s| {
        s.position = s.position.max(position);
        s.failing = None;
        if caught_up {
            s.caught_up_at = Some(Instant::now());
        }
    });
}

pub(crate) fn failed(name: &'static str, error: &ProjectionError) {
    let message = match error {
        ProjectionError::Decode { .. } => error.to_string(),
        // Database error text stays in the log.
        ProjectionError::Store(_) => "the event log could not be read".to_string(),
        other => other.to_string(),
    };
    update(name, |s| {
        let since = s.failing.as_ref().map_or_else(Instant::now, |f| f.since);
        s.failing = Some(Failure { since, message });
    });
}

pub(crate) fn skipped(name: &'static str, count: u64) {
    if count > 0 {
        update(name, |s| s.skipped += count);
    }
}
