use super::multi_row::MultiRow;
use super::{timestamp, PaceProjector, SqlProjection};
use licensd_domain::license::LicenseEvent;
use licensd_domain::AnyEvent;
use licensd_store::{RecordedEvent, SqlValue, Statement};
use std::collections::hash_map::{Entry, HashMap};

/// `rm_license_machines`: the machines bound to each license now, when each was bound and when it
/// last logged in (the in-memory license keeps only the HWIDs, so the dashboard's "first seen" and
/// "last seen" come from here). A login is a validation billed with its machine's HWID; the
/// binding counts as the first.
pub struct LicenseMachines;

/// Machines' last logins, one row each. (A machine released meanwhile has no row to update.)
static LAST_SEEN: MultiRow = MultiRow::new(
    "WITH seen (license_key, hwid, seen_at) AS (VALUES",
    3,
    ") UPDATE rm_license_machines SET last_seen_at = seen.seen_at FROM seen
       WHERE rm_license_machines.license_key = seen.license_key AND rm_license_machines.hwid = seen.hwid",
);

/// The license and machine of a login: a validation billed with its machine's HWID.
fn login<'e>(event: &'e RecordedEvent, decoded: &'e AnyEvent) -> Option<(&'e str, &'e str)> {
    let AnyEvent::License(LicenseEvent::ValidationBilled { hwid: Some(hwid), .. }) = decoded else { return None };
    let (_, key) = event.stream_id.split_once('-')?;
    Some((key, hwid.as_str()))
}

/// One pace of the machines: of each machine's logins only the last is written, all of them
/// in a few multi-row updates. Logins wait until another statement of the model comes (a
/// binding, a release, a reset) and go before it, so every write lands in log order: a machine
/// released and bound again after a login keeps the new binding's time.
#[derive(Default)]
struct MachinesPace {
    /// By license and machine: its place in `seen`.
    places: HashMap<(String, String), usize>,
    /// License, machine and time of the last login, in order of first login.
    seen: Vec<[String; 3]>,
}

impl MachinesPace {
    fn flush(&mut self) -> Vec<Statement> {
        self.places.clear();
        LAST_SEEN.statements(self.seen.drain(..).flatten().map(SqlValue::from).collect())
    }
}

impl PaceProjector for MachinesPace {
    fn statements(&mut self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        if let Some((key, hwid)) = login(event, decoded) {
            let at = timestamp(event.recorded_at);
            match self.places.entry((key.to_string(), hwid.to_string())) {
                Entry::Occupied(place) => self.seen[*place.get()][2] = at,
                Entry::Vacant(place) => {
                    place.insert(self.seen.len());
                    self.seen.push([key.to_string(), hwid.to_string(), at]);
                }
            }
            return Vec::new();
        }
        let statements = LicenseMachines.statements(event, decoded);
        if statements.is_empty() {
            return statements;
        }
        let mut ordered = self.flush();
        ordered.extend(statements);
        ordered
    }

    fn finish(&mut self) -> Vec<Statement> {
        self.flush()
    }
}

impl SqlProjection for LicenseMachines {
    fn name(&self) -> &'static str {
        "license_machines"
    }

    fn version(&self) -> i32 {
        // 3: releases, resets and deletions prune the machines' heartbeat rows (the replay on
        // upgrade prunes the rows earlier releases left behind).
        3
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_license_machines"]
    }

    fn statements(&self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        let AnyEvent::License(license_event) = decoded else { return vec![] };
        let Some((_, key)) = event.stream_id.split_once('-') else { return vec![] };
        let key = SqlValue::from(key);
        let at = SqlValue::from(timestamp(event.recorded_at));
        let statement = match license_event {
            LicenseEvent::HwidBound { hwid, .. } => Statement::new(
                "INSERT INTO rm_license_machines (license_key, hwid, bound_at, last_seen_at) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (license_key, hwid) DO NOTHING",
                [key, hwid.as_str().into(), at],
            ),
            // Validations written before the HWID was recorded move nothing; nor does one of a
            // machine released meanwhile (no row).
            LicenseEvent::ValidationBilled { hwid: Some(hwid), .. } => Statement::new(
                "UPDATE rm_license_machines SET last_seen_at = $3 WHERE license_key = $1 AND hwid = $2",
                [key, hwid.as_str().into(), at],
            ),
            // A machine that leaves takes its heartbeat row along (`machine_heartbeats` is no read
            // model, so nothing else would ever remove it). Only beats up to the event: a later
            // one belongs to a later binding, which a replay of this old event must keep.
            LicenseEvent::HwidReleased { hwid, .. } => {
                let hwid = SqlValue::from(hwid.as_str());
                return vec![
                    Statement::new(
                        "DELETE FROM rm_license_machines WHERE license_key = $1 AND hwid = $2",
                        [key.clone(), hwid.clone()],
                    ),
                    Statement::new(
                        "DELETE FROM machine_heartbeats WHERE license_key = $1 AND hwid = $2 AND last_seen_at <= $3",
                        [key, hwid, at],
                    ),
                ];
            }
            LicenseEvent::HwidReset { .. } | LicenseEvent::LicenseDeleted { .. } => {
                return vec![
                    Statement::new("DELETE FROM rm_license_machines WHERE license_key = $1", [key.clone()]),
                    Statement::new(
                        "DELETE FROM machine_heartbeats WHERE license_key = $1 AND last_seen_at <= $2",
                        [key, at],
                    ),
                ];
            }
            _ => return vec![],
        };
        vec![statement]
    }

    fn pace(&self, _state: &[Vec<Option<String>>]) -> Option<Box<dyn PaceProjector + '_>> {
        Some(Box::<MachinesPace>::default())
    }

    fn canonical_queries(&self) -> &'static [&'static str] {
        &["SELECT license_key || '|' || hwid || '|' || bound_at || '|' || COALESCE(last_seen_at, '') \
           FROM rm_license_machines ORDER BY license_key, hwid"]
    }
}
