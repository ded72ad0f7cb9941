//! Activity the dashboard shows that writes no event: when a bound machine last sent a heartbeat
//! (heartbeats are billed every tenth beat, and their bills name no machine) and how many live
//! sessions each node holds per app. Both are noted in memory on the hot path and written to the
//! database by one task per node every `LICENSD_PRESENCE_FLUSH_MS`, so the license page and the
//! overview see other nodes' activity (and this node's after a restart) without an event per beat.

use crate::AppState;
use chrono::{DateTime, SecondsFormat, Utc};
use dashmap::DashMap;
use licensd_domain::{AppId, LicenseKey};
use licensd_store::{SqlValue, Statement, Store, StoreError};
use std::time::Duration;

/// Keeps the later of two times when the same machine is written twice (two nodes, or a retry).
const UPSERT_SEEN: &str = "INSERT INTO machine_heartbeats (license_key, hwid, last_seen_at) VALUES ($1, $2, $3)
     ON CONFLICT (license_key, hwid) DO UPDATE SET last_seen_at =
        CASE WHEN machine_heartbeats.last_seen_at < excluded.last_seen_at
             THEN excluded.last_seen_at ELSE machine_heartbeats.last_seen_at END";

/// Machines' last heartbeats not written yet, and how often they (and the session counts) are.
pub struct Presence {
    seen: DashMap<(LicenseKey, String), DateTime<Utc>>,
    pub flush_every: Duration,
}

/// Read-model timestamps: RFC 3339 UTC with milliseconds, so text order is time order.
fn stored(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Presence {
    pub fn new(flush_every: Duration) -> Self {
        Self { seen: DashMap::new(), flush_every: flush_every.max(Duration::from_millis(1)) }
    }

    /// A successful heartbeat of `hwid` on `key` at `at`.
    pub fn note_heartbeat(&self, key: &LicenseKey, hwid: &str, at: DateTime<Utc>) {
        self.seen.entry((key.clone(), hwid.to_string())).and_modify(|t| *t = (*t).max(at)).or_insert(at);
    }

    /// This node's heartbeat of the machine not written yet, if any.
    pub fn pending(&self, key: &LicenseKey, hwid: &str) -> Option<DateTime<Utc>> {
        self.seen.get(&(key.clone(), hwid.to_string())).map(|t| *t)
    }

    /// Every noted heartbeat, left in place: a reader keeps seeing it until the database has it.
    fn snapshot(&self) -> Vec<((LicenseKey, String), DateTime<Utc>)> {
        self.seen.iter().map(|entry| (entry.key().clone(), *entry.value())).collect()
    }

    /// Drops the heartbeats the database now holds; a machine that beat again since its snapshot
    /// keeps its newer time for the next flush.
    fn forget_written(&self, written: &[((LicenseKey, String), DateTime<Utc>)]) {
        for (key, at) in written {
            self.seen.remove_if(key, |_, noted| noted <= at);
        }
    }

    /// Writes the noted heartbeats and this node's live session counts per app, in one
    /// transaction on the read models' side. Entries leave memory only once written (a failed
    /// flush leaves them for the next one; the license page never sees a machine's time go back).
    pub async fn flush(
        &self,
        store: &Store,
        node: &str,
        sessions: &[(AppId, usize)],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let taken = self.snapshot();
        let mut statements: Vec<Statement> = taken
            .iter()
            .map(|((key, hwid), at)| {
                Statement::new(UPSERT_SEEN, [SqlValue::from(key.as_str()), hwid.as_str().into(), stored(*at).into()])
            })
            .collect();
        statements.push(Statement::new("DELETE FROM live_session_counts WHERE node = $1", [node.into()]));
        statements.extend(sessions.iter().filter(|(_, n)| *n > 0).map(|(app, n)| {
            Statement::new(
                "INSERT INTO live_session_counts (node, app_id, sessions, updated_at) VALUES ($1, $2, $3, $4)",
                [node.into(), app.to_string().into(), (*n as i64).into(), stored(now).into()],
            )
        }));
        let written = store.execute_read_models(&statements).await;
        if written.is_ok() {
            self.forget_written(&taken);
        }
        written.map(drop)
    }

    /// Live sessions of `apps` held by the other nodes, as they last wrote them; a node that has
    /// not written for three flush intervals (stopped, or cut off) counts for none.
    pub async fn other_nodes_sessions(
        &self,
        store: &Store,
        node: &str,
        apps: &[AppId],
        now: DateTime<Utc>,
    ) -> Result<i64, StoreError> {
        if apps.is_empty() {
            return Ok(0);
        }
        let fresh = now - chrono::Duration::from_std(self.flush_every * 3).unwrap_or(chrono::Duration::seconds(180));
        let mut args: Vec<SqlValue> = vec![node.into(), stored(fresh).into()];
        let mut placeholders = Vec::with_capacity(apps.len());
        for app in apps {
            args.push(app.to_string().into());
            placeholders.push(format!("${}", args.len()));
        }
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(sessions), 0) AS TEXT) FROM live_session_counts
             WHERE node <> $1 AND updated_at > $2 AND app_id IN ({})",
            placeholders.join(", ")
        );
        let total = store.query_text(&sql, &args).await?;
        Ok(total.first().cloned().flatten().and_then(|n| n.parse().ok()).unwrap_or(0))
    }
}

/// Flushes every `flush_every` until the process ends (a final flush is not needed: a lost
/// interval of heartbeat times is shown again by the next beat).
pub fn spawn_flusher(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(state.presence.flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let sessions = state.live.session_counts();
            let store = state.commands.store();
            let now = state.commands.now();
            if let Err(e) = state.presence.flush(store, &state.config.node, &sessions, now).await {
                tracing::warn!(error = %e, "cannot write machines' heartbeats and live session counts; retrying");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_keeps_its_latest_heartbeat_until_written() {
        let presence = Presence::new(Duration::from_secs(1));
        let key = LicenseKey::from_random([7; 16]);
        let early = Utc::now();
        let late = early + chrono::Duration::seconds(5);
        presence.note_heartbeat(&key, "pc-1", late);
        presence.note_heartbeat(&key, "pc-1", early);
        assert_eq!(presence.pending(&key, "pc-1"), Some(late));
        assert_eq!(presence.pending(&key, "pc-2"), None);
        let taken = presence.snapshot();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1, late);
        assert_eq!(presence.pending(&key, "pc-1"), Some(late), "still there until written");
        presence.forget_written(&taken);
        assert_eq!(presence.pending(&key, "pc-1"), None);
    }

    #[test]
    fn a_beat_noted_during_a_flush_outlives_it() {
        let presence = Presence::new(Duration::from_secs(1));
        let key = LicenseKey::from_random([8; 16]);
        let first = Utc::now();
        presence.note_heartbeat(&key, "pc-1", first);
        let written = presence.snapshot();
        let again = first + chrono::Duration::seconds(1);
        presence.note_heartbeat(&key, "pc-1", again);
        presence.forget_written(&written);
        assert_eq!(presence.pending(&key, "pc-1"), Some(again));
    }

    #[test]
    fn concurrent_heartbeats_lose_no_machine() {
        let presence = std::sync::Arc::new(Presence::new(Duration::from_secs(1)));
        let key = LicenseKey::from_random([9; 16]);
        let at = Utc::now();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (presence, key) = (presence.clone(), key.clone());
                std::thread::spawn(move || {
                    let mut taken = Vec::new();
                    for i in 0..500 {
                        presence.note_heartbeat(&key, &format!("pc-{t}-{i}"), at);
                        if i % 50 == 0 {
                            let written = presence.snapshot();
                            presence.forget_written(&written);
                            taken.extend(written);
                        }
                    }
                    taken
                })
            })
            .collect();
        let mut machines: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
        machines.extend(presence.snapshot());
        let mut hwids: Vec<String> = machines.into_iter().map(|((_, hwid), _)| hwid).collect();
        hwids.sort();
        hwids.dedup();
        assert_eq!(hwids.len(), 8 * 500, "every machine noted is taken, none lost");
    }
}
