//! What an app user's live session reports: the licenses that cover them now, the levels
//! (their own, then those of their valid licenses), and the identity fields of packets 3 and 16.

use crate::AppState;
use chrono::{DateTime, Utc};
use licensd_domain::app_user::AppUser;
use licensd_domain::license::{License, LicenseStatus};
use serde_json::{Map, Value};

/// The user's linked licenses as they count now.
pub struct Coverage {
    /// The user may be signed in: not `license_required`, or holding a valid license.
    pub valid: bool,
    pub levels: Vec<String>,
    /// Of the best valid license: `None` when one never expires or none is held.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A linked license counts for the session of `client_id` when it is valid and bound to that
/// machine, or to none (a reset license stays with the session until another machine takes it;
/// signing in binds it again).
pub fn coverage(state: &AppState, user: &AppUser, client_id: &str, now: DateTime<Utc>) -> Coverage {
    let valid: Vec<License> = state
        .hot
        .licenses_of_user(user.user_id)
        .into_iter()
        .filter(|l| is_valid(l, now) && (l.hwids.is_empty() || l.hwids.iter().any(|h| h == client_id)))
        .collect();
    let lifetime = valid.iter().any(|l| l.expires_at.is_none());
    let expires_at = if lifetime { None } else { valid.iter().filter_map(|l| l.expires_at).max() };
    let mut levels = user.levels.clone();
    for level in valid.iter().flat_map(|l| l.extras.levels.iter()) {
        if !levels.contains(level) {
            levels.push(level.clone());
        }
    }
    Coverage { valid: !user.license_required || !valid.is_empty(), levels, expires_at }
}

/// Active and not expired.
pub fn is_valid(license: &License, now: DateTime<Utc>) -> bool {
    license.status == LicenseStatus::Active && !license.is_expired(now)
}

/// `login`, `levels`, `comment`, `ip_address`, `time_left` (remaining seconds of the best
/// license, §14.6; left out when it never expires or none is held), `expires_at` beside it,
/// `license_required`.
pub fn identity(
    user: &AppUser,
    coverage: &Coverage,
    login: String,
    comment: Option<String>,
    ip: std::net::IpAddr,
    now: DateTime<Utc>,
) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("login".into(), Value::from(login));
    fields.insert("levels".into(), Value::from(coverage.levels.clone()));
    fields.insert("comment".into(), Value::from(comment.unwrap_or_default()));
    fields.insert("ip_address".into(), Value::from(ip.to_canonical().to_string()));
    if let Some(expires_at) = coverage.expires_at {
        let left = (expires_at - now).num_seconds();
        if left > 0 {
            fields.insert("time_left".into(), Value::from(left));
        }
        fields.insert("expires_at".into(), Value::from(expires_at.timestamp()));
    }
    fields.insert("license_required".into(), Value::from(user.license_required));
    fields
}
