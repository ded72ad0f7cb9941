//! The self-service portal's rules: the per-app policy (limits and branding) and the reset
//! decision, which walks the license's own reset history so two concurrent resets cannot both
//! pass (the decision and the `PortalResetRecorded` event share one optimistic append).

use crate::web_address::is_web_address;
use crate::DomainError;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

pub const MAX_RESET_LIMIT: u32 = 100;
pub const MAX_WINDOW_DAYS: u32 = 3650;
pub const MAX_COOLDOWN_HOURS: u32 = 24 * 365;
pub const DEFAULT_DISPLAY_NAME: &str = "License portal";

/// What an app lets its end users do in the portal, and how the portal looks once they signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PortalPolicy {
    /// Most resets inside any sliding window of `reset_window_days`; 0 turns portal resets off.
    pub reset_limit: u32,
    pub reset_window_days: u32,
    /// Least time between two resets.
    pub cooldown_hours: u32,
    /// Shown to users who hit a limit; always stored with a scheme.
    pub support_url: Option<String>,
    pub support_email: Option<String>,
    pub display_name: Option<String>,
    /// `#RRGGBB`.
    pub accent_color: Option<String>,
}

impl Default for PortalPolicy {
    fn default() -> Self {
        Self {
            reset_limit: 3,
            reset_window_days: 30,
            cooldown_hours: 24,
            support_url: None,
            support_email: None,
            display_name: None,
            accent_color: None,
        }
    }
}

fn invalid(message: &str) -> DomainError {
    DomainError::InvalidPortalPolicy(message.to_string())
}

/// Trims optional text; empty becomes `None`.
fn cleaned(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl PortalPolicy {
    /// Checks bounds and formats; prefixes a scheme-less support URL with `https://`.
    pub fn validated(self) -> Result<Self, DomainError> {
        if self.reset_limit > MAX_RESET_LIMIT {
            return Err(invalid("resetLimit must be at most 100"));
        }
        if !(1..=MAX_WINDOW_DAYS).contains(&self.reset_window_days) {
            return Err(invalid("resetWindowDays must be between 1 and 3650"));
        }
        if self.cooldown_hours > MAX_COOLDOWN_HOURS {
            return Err(invalid("cooldownHours must be at most 8760"));
        }
        let support_url = cleaned(self.support_url).map(with_scheme).transpose()?;
        let support_email = cleaned(self.support_email);
        if support_email.as_deref().is_some_and(|e| e.len() > 254 || e.split('@').count() != 2 || e.contains(' ')) {
            return Err(invalid("supportEmail must be an email address"));
        }
        let display_name = cleaned(self.display_name);
        if display_name.as_deref().is_some_and(|n| n.chars().count() > 80) {
            return Err(invalid("displayName must be at most 80 characters"));
        }
        let accent_color = cleaned(self.accent_color).map(|c| c.to_ascii_uppercase());
        if accent_color
            .as_deref()
            .is_some_and(|c| c.len() != 7 || !c.starts_with('#') || !c[1..].chars().all(|h| h.is_ascii_hexdigit()))
        {
            return Err(invalid("accentColor must be a hex colour like #A78BFA"));
        }
        Ok(Self { support_url, support_email, display_name, accent_color, ..self })
    }

    pub fn display_name(&self) -> &str {
        self.display_name.as_deref().unwrap_or(DEFAULT_DISPLAY_NAME)
    }
}

fn with_scheme(url: String) -> Result<String, DomainError> {
    let url = if url.starts_with("https://") || url.starts_with("http://") { url } else { format!("https://{url}") };
    if url.len() > 500 || !is_web_address(&url) {
        return Err(invalid("supportUrl must be a web address"));
    }
    Ok(url)
}

/// Why a portal reset is not allowed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum ResetRefusal {
    /// The app allows no portal resets.
    Disabled,
    /// No machine is bound: there is nothing to reset.
    NothingBound,
    /// `limit` resets already happened inside the window; one slot frees at `next_allowed_at`.
    LimitReached { limit: u32, window_days: u32, next_allowed_at: DateTime<Utc> },
    /// The last reset was too recent.
    Cooldown { next_allowed_at: DateTime<Utc> },
}

impl ResetRefusal {
    /// A sentence for the end user.
    pub fn explanation(&self) -> String {
        let when = |at: &DateTime<Utc>| at.format("%Y-%m-%d %H:%M UTC").to_string();
        match self {
            Self::Disabled => "Device resets are not available for this license.".into(),
            Self::NothingBound => "No device is bound to this license yet, so there is nothing to reset.".into(),
            Self::LimitReached { limit, window_days, next_allowed_at } => format!(
                "You have used all {limit} device resets allowed in {window_days} days. \
                 The next one is possible after {}.",
                when(next_allowed_at)
            ),
            Self::Cooldown { next_allowed_at } => {
                format!("Resets need a pause between them. The next one is possible after {}.", when(next_allowed_at))
            }
        }
    }
}

/// `Ok` when a reset may happen at `now` given the earlier portal resets (any order).
pub fn evaluate_reset(
    policy: &PortalPolicy,
    history: &[DateTime<Utc>],
    bound_machines: usize,
    now: DateTime<Utc>,
) -> Result<(), ResetRefusal> {
    if policy.reset_limit == 0 {
        return Err(ResetRefusal::Disabled);
    }
    if bound_machines == 0 {
        return Err(ResetRefusal::NothingBound);
    }
    let window = Duration::days(i64::from(policy.reset_window_days));
    let mut recent: Vec<DateTime<Utc>> = history.iter().copied().filter(|at| *at > now - window).collect();
    recent.sort();
    if recent.len() >= policy.reset_limit as usize {
        // The window slides: a slot frees when the oldest reset that still counts leaves it.
        let oldest_counted = recent[recent.len() - policy.reset_limit as usize];
        return Err(ResetRefusal::LimitReached {
            limit: policy.reset_limit,
            window_days: policy.reset_window_days,
            next_allowed_at: oldest_counted + window,
        });
    }
    let cooldown = Duration::hours(i64::from(policy.cooldown_hours));
    if let Some(last) = recent.last().filter(|last| **last + cooldown > now) {
        return Err(ResetRefusal::Cooldown { next_allowed_at: *last + cooldown });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hours: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap() + Duration::hours(hours)
    }

    fn policy(limit: u32, window_days: u32, cooldown_hours: u32) -> PortalPolicy {
        PortalPolicy { reset_limit: limit, reset_window_days: window_days, cooldown_hours, ..Default::default() }
    }

    #[test]
    fn limit_counts_only_resets_inside_the_sliding_window() {
        let p = policy(2, 1, 0);
        assert_eq!(evaluate_reset(&p, &[at(0)], 1, at(1)), Ok(()));
        let refused = evaluate_reset(&p, &[at(0), at(2)], 1, at(3));
        assert_eq!(refused, Err(ResetRefusal::LimitReached { limit: 2, window_days: 1, next_allowed_at: at(24) }));
        // The first reset left the window: one slot is free again.
        assert_eq!(evaluate_reset(&p, &[at(0), at(2)], 1, at(25)), Ok(()));
    }

    #[test]
    fn cooldown_follows_the_latest_reset() {
        let p = policy(5, 30, 24);
        assert_eq!(
            evaluate_reset(&p, &[at(10), at(0)], 1, at(20)),
            Err(ResetRefusal::Cooldown { next_allowed_at: at(34) })
        );
        assert_eq!(evaluate_reset(&p, &[at(10), at(0)], 1, at(34)), Ok(()));
    }

    #[test]
    fn disabled_and_nothing_bound_are_refused() {
        assert_eq!(evaluate_reset(&policy(0, 30, 0), &[], 1, at(0)), Err(ResetRefusal::Disabled));
        assert_eq!(evaluate_reset(&policy(3, 30, 0), &[], 0, at(0)), Err(ResetRefusal::NothingBound));
    }

    #[test]
    fn validation_prefixes_the_scheme_and_checks_formats() {
        let p = PortalPolicy {
            support_url: Some(" help.example.com/tickets ".into()),
            accent_color: Some("#a78bfa".into()),
            display_name: Some("  ".into()),
            ..Default::default()
        }
        .validated()
        .unwrap();
        assert_eq!(p.support_url.as_deref(), Some("https://help.example.com/tickets"));
        assert_eq!(p.accent_color.as_deref(), Some("#A78BFA"));
        assert_eq!(p.display_name(), DEFAULT_DISPLAY_NAME);
        for bad in [
            PortalPolicy { accent_color: Some("red".into()), ..Default::default() },
            PortalPolicy { reset_window_days: 0, ..Default::default() },
            PortalPolicy { support_email: Some("not an address".into()), ..Default::default() },
            PortalPolicy { support_url: Some("https://".into()), ..Default::default() },
            PortalPolicy { support_url: Some("https://[".into()), ..Default::default() },
            PortalPolicy { support_url: Some("help.example.com/a b".into()), ..Default::default() },
        ] {
            assert!(bad.validated().is_err());
        }
    }
}
