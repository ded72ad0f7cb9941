//! Aggregates this process folded lately, each with the stream version it shows, so loading a
//! stream folds only the events appended since (a license with a million billing events is not
//! folded from its first event on every command). A cached fold is a prefix of an append-only
//! stream, never a stale copy: every load still reads the stream's newer events first, and the
//! append is checked against the version read, as without the cache.

use std::any::Any;
use std::sync::Arc;

/// Streams kept by default.
pub const DEFAULT_FOLDED_STREAMS: u64 = 4096;

pub(crate) struct Folded {
    cache: Option<moka::sync::Cache<String, Arc<dyn Any + Send + Sync>>>,
}

impl Folded {
    /// Keeps up to `capacity` streams (0: none, every load folds from the first event).
    pub(crate) fn new(capacity: u64) -> Self {
        Self { cache: (capacity > 0).then(|| moka::sync::Cache::new(capacity)) }
    }

    /// The state of `stream_id` folded up to the version returned, if kept.
    pub(crate) fn get<A: Clone + Send + Sync + 'static>(&self, stream_id: &str) -> Option<(A, u64)> {
        let entry = self.cache.as_ref()?.get(stream_id)?;
        entry.downcast_ref::<(A, u64)>().cloned()
    }

    pub(crate) fn put<A: Send + Sync + 'static>(&self, stream_id: &str, state: A, version: u64) {
        if let Some(cache) = &self.cache {
            cache.insert(stream_id.to_string(), Arc::new((state, version)));
        }
    }
}
