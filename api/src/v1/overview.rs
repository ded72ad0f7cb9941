//! `GET /v1/overview?appId=&days=`: the dashboard's overview of one app, or of the whole account
//! without `appId`, from the daily roll-up read model (`usage_rollup`), the license listing model,
//! this node's live-session registry and the other nodes' session counts (see `presence`).

use super::app_settings::owned_app;
use crate::extract::{ApiQuery, Caller};
use crate::{ApiError, AppState};
use axum::extract::State;
use axum::Json;
use chrono::{Duration, SecondsFormat};
use licensd_domain::LicenseKey;
use licensd_store::SqlValue;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The longest window, in days: a year, leap day included.
pub(crate) const MAX_DAYS: i64 = 366;
const DEFAULT_DAYS: i64 = 30;
const TOP_LICENSES: i64 = 10;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverviewQuery {
    app_id: Option<String>,
    days: Option<String>,
}

fn days(text: Option<&str>) -> Result<i64, ApiError> {
    match text.map(str::parse::<i64>) {
        None => Ok(DEFAULT_DAYS),
        Some(Ok(n)) if (1..=MAX_DAYS).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::BadRequest(format!("days must be between 1 and {MAX_DAYS}"))),
    }
}

fn number(cell: Option<&Option<String>>) -> i64 {
    // Postgres sums BIGINT as NUMERIC: "12" either way once cast to text.
    cell.and_then(|c| c.as_deref()).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// `GET /v1/overview`.
pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<OverviewQuery>,
) -> Result<Json<Value>, ApiError> {
    let days = days(query.days.as_deref())?;
    let apps = match query.app_id.as_deref() {
        Some(app_id) => vec![owned_app(&state, &caller, app_id)?],
        None => state.hot.apps_of(caller.account_id),
    };
    // Every table below has both columns: the scope is one app or the caller's account.
    let (column, scope) = match query.app_id.as_deref() {
        Some(_) => ("app_id", apps[0].app_id.to_string()),
        None => ("account_id", caller.account_id.to_string()),
    };
    let now = state.commands.now();
    let today = now.date_naive();
    let first_day = today - Duration::days(days - 1);
    let from = SqlValue::from(first_day.format("%Y-%m-%d").to_string());
    state.refresh_sql(Arc::new(licensd_projections::sql::Licenses)).await?;
    state.refresh_sql(Arc::new(licensd_projections::sql::UsageRollup)).await?;
    let store = state.commands.store();

    let live_now = "CASE WHEN status = 'active' AND (expires_at IS NULL OR expires_at > $2)";
    let counts = store
        .query_rows(
            &format!(
                "SELECT CAST(SUM({live_now} THEN 1 ELSE 0 END) AS TEXT),
                        CAST(SUM(CASE WHEN status = 'active' AND expires_at <= $2 THEN 1 ELSE 0 END) AS TEXT),
                        CAST(SUM(CASE WHEN status = 'revoked' THEN 1 ELSE 0 END) AS TEXT),
                        CAST(SUM({live_now} THEN hwid_count ELSE 0 END) AS TEXT)
                 FROM rm_licenses WHERE {column} = $1"
            ),
            &[scope.clone().into(), now.to_rfc3339_opts(SecondsFormat::Millis, true).into()],
        )
        .await?;
    let counts = counts.first().cloned().unwrap_or_default();

    let rows = store
        .query_rows(
            &format!(
                "SELECT day, CAST(SUM(validations) AS TEXT), CAST(SUM(heartbeats) AS TEXT),
                        CAST(SUM(credits_burned) AS TEXT), CAST(SUM(new_licenses) AS TEXT),
                        CAST(SUM(commerce_events) AS TEXT)
                 FROM rm_usage_daily WHERE {column} = $1 AND day >= $2 GROUP BY day"
            ),
            &[scope.clone().into(), from.clone()],
        )
        .await?;
    let by_day: HashMap<String, Vec<Option<String>>> =
        rows.into_iter().filter_map(|r| Some((r.first()?.clone()?, r))).collect();
    let revenue = Revenue::read(store, column, &scope, &from).await?;
    let daily: Vec<Value> = (0..days)
        .map(|offset| {
            let day = (first_day + Duration::days(offset)).format("%Y-%m-%d").to_string();
            let row = by_day.get(&day);
            let cell = |i: usize| number(row.and_then(|r| r.get(i)));
            let (paid, unknown) = revenue.of_day(&day);
            json!({
                "day": day, "validations": cell(1), "heartbeats": cell(2), "creditsBurned": cell(3),
                "newLicenses": cell(4), "commerceEvents": cell(5),
                "revenue": paid, "purchasesOfUnknownAmount": unknown,
            })
        })
        .collect();

    // The balance is the account's, so its projection uses the whole account's burn rate.
    let burned = store
        .query_text(
            "SELECT CAST(SUM(credits_burned) AS TEXT) FROM rm_usage_daily WHERE account_id = $1 AND day >= $2",
            &[caller.account_id.to_string().into(), from.clone()],
        )
        .await?;
    let burned = number(burned.first());
    let balance = state.hot.account(caller.account_id).map_or(0, |a| a.balance);
    let per_day = burned as f64 / days as f64;
    let lasts_days = (burned > 0).then(|| (balance.max(0) as f64 / per_day).floor() as i64);

    let top = store
        .query_rows(
            &format!(
                "SELECT license_key, CAST(SUM(validations) AS TEXT), CAST(SUM(heartbeats) AS TEXT)
                 FROM rm_usage_license_daily WHERE {column} = $1 AND day >= $2
                 GROUP BY license_key ORDER BY SUM(validations) + SUM(heartbeats) DESC, license_key LIMIT $3"
            ),
            &[scope.into(), from, TOP_LICENSES.into()],
        )
        .await?;
    let top: Vec<Value> = top
        .iter()
        .map(|r| {
            let key = r.first().cloned().flatten().unwrap_or_default();
            let label = LicenseKey::parse(&key).ok().and_then(|k| state.hot.license(&k)).and_then(|l| l.label);
            json!({ "licenseKey": key, "label": label, "validations": number(r.get(1)), "heartbeats": number(r.get(2)) })
        })
        .collect();

    // This node's sessions as they are now, the other nodes' as they last wrote them.
    let here: usize = apps.iter().map(|app| state.live.sessions_of_app(app.app_id)).sum();
    let app_ids: Vec<_> = apps.iter().map(|app| app.app_id).collect();
    let elsewhere = state.presence.other_nodes_sessions(store, &state.config.node, &app_ids, now).await?;
    let live_sessions = here as i64 + elsewhere;
    Ok(Json(json!({
        "appId": query.app_id.as_ref().map(|_| apps[0].app_id.to_string()),
        "days": days,
        "from": first_day.format("%Y-%m-%d").to_string(),
        "to": today.format("%Y-%m-%d").to_string(),
        "licenses": { "active": number(counts.first()), "expired": number(counts.get(1)), "revoked": number(counts.get(2)) },
        "activeMachines": number(counts.get(3)),
        "liveSessions": live_sessions,
        "credits": { "balance": balance, "burnedInPeriod": burned, "burnPerDay": per_day, "lastsDays": lasts_days },
        "revenue": revenue.totals(),
        "daily": daily,
        "topLicenses": top,
    })))
}

/// Fulfilled purchases' and renewals' payments in the window, from the roll-up: per day and
/// currency, with the purchases whose amount is unknown (currency `''`) kept apart.
struct Revenue {
    /// (day, currency, minor units, purchases)
    rows: Vec<(String, String, i64, i64)>,
}

impl Revenue {
    async fn read(store: &licensd_store::Store, column: &str, scope: &str, from: &SqlValue) -> Result<Self, ApiError> {
        let rows = store
            .query_rows(
                &format!(
                    "SELECT day, currency, CAST(SUM(amount_minor) AS TEXT), CAST(SUM(purchases) AS TEXT)
                     FROM rm_usage_revenue WHERE {column} = $1 AND day >= $2 GROUP BY day, currency
                     ORDER BY day, currency"
                ),
                &[scope.into(), from.clone()],
            )
            .await?;
        let rows = rows
            .iter()
            .map(|r| {
                let text = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
                (text(0), text(1), number(r.get(2)), number(r.get(3)))
            })
            .collect();
        Ok(Self { rows })
    }

    /// One currency's sum as the API shows it: minor units, and how many payments made it.
    fn entry(currency: &str, minor: i64, purchases: i64) -> Value {
        json!({ "currency": currency, "amountMinor": minor, "purchases": purchases })
    }

    /// A day's revenue per currency, and its purchases of unknown amount.
    fn of_day(&self, day: &str) -> (Vec<Value>, i64) {
        let rows = self.rows.iter().filter(|(d, ..)| d == day);
        let unknown = rows.clone().filter(|(_, c, ..)| c.is_empty()).map(|r| r.3).sum();
        let paid = rows.filter(|(_, c, ..)| !c.is_empty()).map(|(_, c, m, p)| Self::entry(c, *m, *p)).collect();
        (paid, unknown)
    }

    /// The window's revenue per currency, and its purchases of unknown amount.
    fn totals(&self) -> Value {
        let mut sums: std::collections::BTreeMap<&str, (i64, i64)> = Default::default();
        for (_, currency, minor, purchases) in &self.rows {
            let sum = sums.entry(currency.as_str()).or_default();
            sum.0 += minor;
            sum.1 += purchases;
        }
        let unknown = sums.remove("").map_or(0, |(_, purchases)| purchases);
        let paid: Vec<Value> = sums.iter().map(|(c, (m, p))| Self::entry(c, *m, *p)).collect();
        json!({ "byCurrency": paid, "purchasesOfUnknownAmount": unknown })
    }
}
