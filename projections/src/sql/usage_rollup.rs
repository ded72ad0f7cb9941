use super::multi_row::MultiRow;
use super::{PaceProjector, SqlProjection};
use licensd_domain::commerce::{CommerceAction, CommerceEvent};
use licensd_domain::license::LicenseEvent;
use licensd_domain::AnyEvent;
use licensd_store::{RecordedEvent, SqlValue, Statement};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

/// `rm_usage_daily` and `rm_usage_license_daily`: validations, heartbeats, credits burned, new
/// licenses and commerce fulfilments per app (and per license) and UTC day, counted from every
/// event rather than from a page of the ledger; `rm_usage_revenue`: what fulfilled purchases and
/// renewals were paid, per app, day and currency. Increments are exact: the runner writes a
/// pace's rows and its checkpoint in one transaction, so no event is counted twice.
pub struct UsageRollup;

/// What one license event (or a pace's events of one license and day) adds to its day.
#[derive(Default, Clone, Copy)]
struct Counts {
    validations: i64,
    heartbeats: i64,
    credits_burned: i64,
    new_licenses: i64,
    commerce_events: i64,
}

impl Counts {
    /// The sum of two additions. Every count is a `u32` of one event, so a pace would need
    /// billions of events to overflow.
    fn plus(self, other: Counts) -> Counts {
        Counts {
            validations: self.validations + other.validations,
            heartbeats: self.heartbeats + other.heartbeats,
            credits_burned: self.credits_burned + other.credits_burned,
            new_licenses: self.new_licenses + other.new_licenses,
            commerce_events: self.commerce_events + other.commerce_events,
        }
    }
}

fn counts(event: &LicenseEvent) -> Option<Counts> {
    let counts = match event {
        LicenseEvent::ValidationBilled { credits, .. } => {
            Counts { validations: 1, credits_burned: i64::from(*credits), ..Counts::default() }
        }
        LicenseEvent::HeartbeatBilled { heartbeats, credits, .. } => {
            Counts { heartbeats: i64::from(*heartbeats), credits_burned: i64::from(*credits), ..Counts::default() }
        }
        LicenseEvent::OfflineActivated { credits, .. } | LicenseEvent::OfflineFileMinted { credits, .. } => {
            Counts { credits_burned: i64::from(*credits), ..Counts::default() }
        }
        LicenseEvent::LicenseCreated { .. } => Counts { new_licenses: 1, ..Counts::default() },
        LicenseEvent::CommerceLinked { .. } => Counts { commerce_events: 1, ..Counts::default() },
        _ => return None,
    };
    Some(counts)
}

/// Adds `counts` to the license's app and day (the app is looked up in `rm_usage_licenses`).
const ADD_TO_APP_DAY: &str =
    "INSERT INTO rm_usage_daily (app_id, day, account_id, validations, heartbeats, credits_burned, new_licenses,
            commerce_events)
     SELECT app_id, $2, account_id, $3, $4, $5, $6, $7 FROM rm_usage_licenses WHERE license_key = $1
     ON CONFLICT (app_id, day) DO UPDATE SET
        validations = rm_usage_daily.validations + excluded.validations,
        heartbeats = rm_usage_daily.heartbeats + excluded.heartbeats,
        credits_burned = rm_usage_daily.credits_burned + excluded.credits_burned,
        new_licenses = rm_usage_daily.new_licenses + excluded.new_licenses,
        commerce_events = rm_usage_daily.commerce_events + excluded.commerce_events";

const ADD_TO_LICENSE_DAY: &str =
    "INSERT INTO rm_usage_license_daily (license_key, day, app_id, account_id, validations, heartbeats)
     SELECT license_key, $2, app_id, account_id, $3, $4 FROM rm_usage_licenses WHERE license_key = $1
     ON CONFLICT (license_key, day) DO UPDATE SET
        validations = rm_usage_license_daily.validations + excluded.validations,
        heartbeats = rm_usage_license_daily.heartbeats + excluded.heartbeats";

/// [`ADD_TO_APP_DAY`] for many licenses and days at once, summed per app and day in the
/// statement (one row may not be updated twice by one statement). The app's day takes the
/// smallest account id among the licenses that create it: the same as the first license's, since
/// an app's licenses all belong to the app's account.
static ADD_TO_APP_DAYS: MultiRow = MultiRow::new(
    "WITH counted (license_key, day, validations, heartbeats, credits_burned, new_licenses, commerce_events)
     AS (VALUES",
    7,
    ") INSERT INTO rm_usage_daily (app_id, day, account_id, validations, heartbeats, credits_burned, new_licenses,
            commerce_events)
     SELECT l.app_id, c.day, MIN(l.account_id), SUM(c.validations), SUM(c.heartbeats), SUM(c.credits_burned),
            SUM(c.new_licenses), SUM(c.commerce_events)
     FROM counted c JOIN rm_usage_licenses l ON l.license_key = c.license_key
     WHERE true GROUP BY l.app_id, c.day
     ON CONFLICT (app_id, day) DO UPDATE SET
        validations = rm_usage_daily.validations + excluded.validations,
        heartbeats = rm_usage_daily.heartbeats + excluded.heartbeats,
        credits_burned = rm_usage_daily.credits_burned + excluded.credits_burned,
        new_licenses = rm_usage_daily.new_licenses + excluded.new_licenses,
        commerce_events = rm_usage_daily.commerce_events + excluded.commerce_events",
);

/// [`ADD_TO_LICENSE_DAY`] for many licenses and days at once (each license and day once).
static ADD_TO_LICENSE_DAYS: MultiRow = MultiRow::new(
    "WITH counted (license_key, day, validations, heartbeats) AS (VALUES",
    4,
    ") INSERT INTO rm_usage_license_daily (license_key, day, app_id, account_id, validations, heartbeats)
     SELECT l.license_key, c.day, l.app_id, l.account_id, c.validations, c.heartbeats
     FROM counted c JOIN rm_usage_licenses l ON l.license_key = c.license_key WHERE true
     ON CONFLICT (license_key, day) DO UPDATE SET
        validations = rm_usage_license_daily.validations + excluded.validations,
        heartbeats = rm_usage_license_daily.heartbeats + excluded.heartbeats",
);

/// A payment received (its amount unknown when the payload or an older event had none),
/// waiting for its fulfilment to say which app it paid for.
const RECORD_PAYMENT: &str = "INSERT INTO rm_usage_payments (stream_id, account_id, currency, amount_minor, counted)
     VALUES ($1, $2, $3, $4, 0) ON CONFLICT (stream_id) DO NOTHING";

/// Adds a fulfilled payment to the day and currency of the app of its first license (`''`: of
/// unknown amount), once: a replayed entry fulfilled again is not paid again.
const ADD_REVENUE: &str = "INSERT INTO rm_usage_revenue (app_id, day, account_id, currency, amount_minor, purchases)
     SELECT l.app_id, $2, p.account_id, COALESCE(p.currency, ''), COALESCE(p.amount_minor, 0), 1
     FROM rm_usage_payments p JOIN rm_usage_licenses l ON l.license_key = $3
     WHERE p.stream_id = $1 AND p.counted = 0
     ON CONFLICT (app_id, day, currency) DO UPDATE SET
        amount_minor = rm_usage_revenue.amount_minor + excluded.amount_minor,
        purchases = rm_usage_revenue.purchases + excluded.purchases";

fn revenue(event: &RecordedEvent, commerce: &CommerceEvent) -> Vec<Statement> {
    let stream = SqlValue::from(event.stream_id.as_str());
    match commerce {
        CommerceEvent::CommerceEventReceived { account_id, normalized, .. }
            if matches!(normalized.action, CommerceAction::Purchase | CommerceAction::Renewal) =>
        {
            let amount = normalized.amount.as_ref();
            vec![Statement::new(
                RECORD_PAYMENT,
                [
                    stream,
                    account_id.to_string().into(),
                    amount.map(|a| a.currency.clone()).into(),
                    SqlValue::Int(amount.map(|a| a.minor)),
                ],
            )]
        }
        CommerceEvent::CommerceEventProcessed { licenses, .. } => {
            let Some(first) = licenses.first() else { return vec![] };
            let day = event.recorded_at.format("%Y-%m-%d").to_string();
            vec![
                Statement::new(ADD_REVENUE, [stream.clone(), day.into(), first.as_str().into()]),
                Statement::new("UPDATE rm_usage_payments SET counted = 1 WHERE stream_id = $1", [stream]),
            ]
        }
        _ => vec![],
    }
}

/// What one event means to the roll-up.
enum Usage<'e> {
    Revenue(Vec<Statement>),
    /// Counts for a license's day; `registers` maps the license to its app first (its creation).
    Counted {
        key: &'e str,
        day: String,
        registers: Option<Statement>,
        counts: Counts,
    },
    Nothing,
}

fn usage<'e>(event: &'e RecordedEvent, decoded: &AnyEvent) -> Usage<'e> {
    if let AnyEvent::Commerce(commerce) = decoded {
        return Usage::Revenue(revenue(event, commerce));
    }
    let AnyEvent::License(license_event) = decoded else { return Usage::Nothing };
    let Some(counts) = counts(license_event) else { return Usage::Nothing };
    let Some((_, key)) = event.stream_id.split_once('-') else { return Usage::Nothing };
    let day = event.recorded_at.format("%Y-%m-%d").to_string();
    let registers = match license_event {
        LicenseEvent::LicenseCreated { app_id, account_id, .. } => Some(Statement::new(
            "INSERT INTO rm_usage_licenses (license_key, app_id, account_id) VALUES ($1, $2, $3)
             ON CONFLICT (license_key) DO UPDATE SET app_id = excluded.app_id, account_id = excluded.account_id",
            [key.into(), app_id.to_string().into(), account_id.to_string().into()],
        )),
        _ => None,
    };
    Usage::Counted { key, day, registers, counts }
}

/// Adds `counts` to the license's app and day, and to the license's own day when it validated
/// or beat.
fn add_to_days(key: &str, day: String, counts: Counts) -> Vec<Statement> {
    let mut statements = Vec::with_capacity(2);
    statements.push(Statement::new(
        ADD_TO_APP_DAY,
        [
            SqlValue::from(key),
            day.clone().into(),
            counts.validations.into(),
            counts.heartbeats.into(),
            counts.credits_burned.into(),
            counts.new_licenses.into(),
            counts.commerce_events.into(),
        ],
    ));
    if counts.validations > 0 || counts.heartbeats > 0 {
        statements.push(Statement::new(
            ADD_TO_LICENSE_DAY,
            [SqlValue::from(key), day.into(), counts.validations.into(), counts.heartbeats.into()],
        ));
    }
    statements
}

/// One pace of the roll-up: a license's counts of one day are summed over the pace, and all of
/// them are added with a few multi-row statements per table, not one per event (a busy log is
/// mostly billed validations, each adding to the same two rows). The sums are exactly what the
/// statements one by one would have added. They are written at the end of the pace, and before
/// the creation of a license that has counts waiting (a license created again may move to
/// another app, and its counts until then belong to the old one): a bulk creation of new
/// licenses costs one statement per license, not two.
#[derive(Default)]
struct RollupPace {
    /// By license and day: its place in `pending`.
    places: HashMap<(String, String), usize>,
    pending: Vec<(String, String, Counts)>,
    /// The licenses in `pending`.
    waiting: HashSet<String>,
}

impl RollupPace {
    fn flush(&mut self) -> Vec<Statement> {
        self.places.clear();
        self.waiting.clear();
        let mut days = Vec::with_capacity(self.pending.len() * 7);
        let mut license_days = Vec::with_capacity(self.pending.len() * 4);
        for (key, day, counts) in self.pending.drain(..) {
            if counts.validations > 0 || counts.heartbeats > 0 {
                license_days.extend([
                    SqlValue::from(key.as_str()),
                    day.as_str().into(),
                    counts.validations.into(),
                    counts.heartbeats.into(),
                ]);
            }
            days.extend([
                SqlValue::from(key),
                day.into(),
                counts.validations.into(),
                counts.heartbeats.into(),
                counts.credits_burned.into(),
                counts.new_licenses.into(),
                counts.commerce_events.into(),
            ]);
        }
        let mut statements = ADD_TO_APP_DAYS.statements(days);
        statements.extend(ADD_TO_LICENSE_DAYS.statements(license_days));
        statements
    }
}

impl PaceProjector for RollupPace {
    fn statements(&mut self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        match usage(event, decoded) {
            Usage::Revenue(statements) => statements,
            Usage::Counted { key, day, registers, counts } => {
                let mut statements = Vec::new();
                if let Some(register) = registers {
                    if self.waiting.contains(key) {
                        statements = self.flush();
                    }
                    statements.push(register);
                }
                match self.places.entry((key.to_string(), day)) {
                    Entry::Occupied(place) => {
                        let place = *place.get();
                        self.pending[place].2 = self.pending[place].2.plus(counts);
                    }
                    Entry::Vacant(place) => {
                        let day = place.key().1.clone();
                        place.insert(self.pending.len());
                        self.pending.push((key.to_string(), day, counts));
                        self.waiting.insert(key.to_string());
                    }
                }
                statements
            }
            Usage::Nothing => vec![],
        }
    }

    fn finish(&mut self) -> Vec<Statement> {
        self.flush()
    }
}

impl SqlProjection for UsageRollup {
    fn name(&self) -> &'static str {
        "usage_rollup"
    }

    fn version(&self) -> i32 {
        // 2: revenue per currency (`rm_usage_payments`, `rm_usage_revenue`).
        2
    }

    fn tables(&self) -> &'static [&'static str] {
        &["rm_usage_licenses", "rm_usage_daily", "rm_usage_license_daily", "rm_usage_payments", "rm_usage_revenue"]
    }

    fn statements(&self, event: &RecordedEvent, decoded: &AnyEvent) -> Vec<Statement> {
        match usage(event, decoded) {
            Usage::Revenue(statements) => statements,
            Usage::Counted { key, day, registers, counts } => {
                let mut statements = Vec::with_capacity(3);
                statements.extend(registers);
                statements.extend(add_to_days(key, day, counts));
                statements
            }
            Usage::Nothing => vec![],
        }
    }

    fn pace(&self, _state: &[Vec<Option<String>>]) -> Option<Box<dyn PaceProjector + '_>> {
        Some(Box::<RollupPace>::default())
    }

    fn canonical_queries(&self) -> &'static [&'static str] {
        &[
            "SELECT license_key || '|' || app_id || '|' || account_id FROM rm_usage_licenses ORDER BY license_key",
            "SELECT app_id || '|' || day || '|' || account_id || '|' || CAST(validations AS TEXT) || '|' ||
                CAST(heartbeats AS TEXT) || '|' || CAST(credits_burned AS TEXT) || '|' ||
                CAST(new_licenses AS TEXT) || '|' || CAST(commerce_events AS TEXT)
             FROM rm_usage_daily ORDER BY app_id, day",
            "SELECT license_key || '|' || day || '|' || app_id || '|' || account_id || '|' ||
                CAST(validations AS TEXT) || '|' || CAST(heartbeats AS TEXT)
             FROM rm_usage_license_daily ORDER BY license_key, day",
            "SELECT stream_id || '|' || account_id || '|' || COALESCE(currency, '~') || '|' ||
                COALESCE(CAST(amount_minor AS TEXT), '~') || '|' || CAST(counted AS TEXT)
             FROM rm_usage_payments ORDER BY stream_id",
            "SELECT app_id || '|' || day || '|' || currency || '|' || account_id || '|' ||
                CAST(amount_minor AS TEXT) || '|' || CAST(purchases AS TEXT)
             FROM rm_usage_revenue ORDER BY app_id, day, currency",
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_usage_events_count() {
        let at = chrono::Utc::now();
        assert!(counts(&LicenseEvent::LicenseRevoked { at }).is_none());
        let hb = counts(&LicenseEvent::HeartbeatBilled {
            account_id: licensd_domain::AccountId::new(),
            heartbeats: 10,
            credits: 1,
            at,
        })
        .unwrap();
        assert_eq!((hb.heartbeats, hb.credits_burned, hb.validations), (10, 1, 0));
    }
}
