//! End users of an app who sign in with credentials (Blazeauth's "app users"): one stream per
//! user (`appuser-<uuid>`), and one login reservation stream per app and login
//! (`userlogin-<digest>`).
//!
//! No personal data is in these events. The login, the comment and the password verifier are
//! sealed in the deletable PII vault; the events name the user by id and its login by a keyed
//! digest (of the app and the normalized login) that reveals nothing without the master key.
//! Uniqueness of a login inside an app is decided by the log itself: the reservation stream is
//! appended expecting no stream (or one that ends in a release), so of concurrent sign-ups with
//! one login exactly one append wins.
//!
//! Which licenses a user holds is decided by the license aggregate (`LicenseLinkedToUser`): a
//! license names at most one user, and the check and the link are one decision on one stream.

use crate::{AccountId, Aggregate, AppId, DomainError, StreamCategory};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Characters of a login (websocket.md §7).
pub const MIN_LOGIN_CHARS: usize = 4;
pub const MAX_LOGIN_CHARS: usize = 320;
/// Characters of a user's comment (the spec leaves it open; as a blacklist comment).
pub const MAX_COMMENT_CHARS: usize = 256;

crate::ids::uuid_id!(
    /// An end user of one app.
    AppUserId
);

crate::typed_decode::event_enum! {
    category = StreamCategory::AppUser;
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum AppUserEvent {
        /// The user signed up (or the merchant created them). The login and comment are in the vault.
        AppUserCreated {
            user_id: AppUserId,
            app_id: AppId,
            account_id: AccountId,
            /// Keyed digest of the app and the normalized login: what sign-in looks the user up by.
            login_digest: String,
            /// Signing in needs a valid linked license (status 203 otherwise).
            license_required: bool,
            created_at: DateTime<Utc>,
        },
        /// A new verifier was sealed in the vault (by the merchant); live sessions of the user end.
        AppUserPasswordChanged {
            at: DateTime<Utc>,
        },
        /// The comment in the vault was set, replaced or removed.
        AppUserCommentChanged {
            at: DateTime<Utc>,
        },
        AppUserLevelsSet {
            levels: Vec<String>,
            at: DateTime<Utc>,
        },
        AppUserLicenseRequirementSet {
            license_required: bool,
            at: DateTime<Utc>,
        },
        /// Names the app (as deletion does), so a webhook delivery needs no lookup.
        AppUserBlacklisted {
            app_id: AppId,
            at: DateTime<Utc>,
        },
        AppUserUnblacklisted {
            at: DateTime<Utc>,
        },
        AppUserDeleted {
            app_id: AppId,
            at: DateTime<Utc>,
        },
    }
}

crate::typed_decode::event_enum! {
    category = StreamCategory::AppUserLogin;
    /// The login reservation stream of one app and login.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type")]
    pub enum LoginReservationEvent {
        /// The login now belongs to this user.
        AppUserLoginReserved { user_id: AppUserId, at: DateTime<Utc> },
        /// The user was deleted (or could not be created): the login is free again.
        AppUserLoginReleased { user_id: AppUserId, at: DateTime<Utc> },
    }
}

impl LoginReservationEvent {
    /// The user holding the login when the stream ends with this event.
    pub fn holder(&self) -> Option<AppUserId> {
        match self {
            Self::AppUserLoginReserved { user_id, .. } => Some(*user_id),
            Self::AppUserLoginReleased { .. } => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppUserStatus {
    Active,
    Blacklisted,
}

/// A user as the rules (and the in-memory model) see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppUser {
    pub user_id: AppUserId,
    pub app_id: AppId,
    pub account_id: AccountId,
    pub login_digest: String,
    pub status: AppUserStatus,
    pub levels: Vec<String>,
    pub license_required: bool,
    /// Bumped by each password change: a session signed in before it is no longer valid.
    pub password_generation: u32,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum AppUserState {
    #[default]
    Missing,
    Live(AppUser),
    Deleted,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppUserCommand {
    Create {
        user_id: AppUserId,
        app_id: AppId,
        account_id: AccountId,
        login_digest: String,
        license_required: bool,
        levels: Vec<String>,
        /// A comment was sealed with the creation (records `AppUserCommentChanged`).
        comment: bool,
    },
    ChangePassword,
    /// The comment in the vault changed (the caller seals it in the same append).
    ChangeComment,
    SetLevels(Vec<String>),
    SetLicenseRequired(bool),
    Blacklist,
    Unblacklist,
    Delete,
}

impl Aggregate for AppUserState {
    type Event = AppUserEvent;
    type Command = AppUserCommand;

    fn evolve(self, event: &AppUserEvent) -> Self {
        use AppUserEvent as E;
        let mut user = match (self, event) {
            (_, E::AppUserCreated { user_id, app_id, account_id, login_digest, license_required, created_at }) => {
                return Self::Live(AppUser {
                    user_id: *user_id,
                    app_id: *app_id,
                    account_id: *account_id,
                    login_digest: login_digest.clone(),
                    status: AppUserStatus::Active,
                    levels: Vec::new(),
                    license_required: *license_required,
                    password_generation: 0,
                    created_at: *created_at,
                })
            }
            (_, E::AppUserDeleted { .. }) => return Self::Deleted,
            (Self::Live(user), _) => user,
            (other, _) => return other,
        };
        match event {
            E::AppUserPasswordChanged { .. } => user.password_generation += 1,
            E::AppUserLevelsSet { levels, .. } => user.levels = levels.clone(),
            E::AppUserLicenseRequirementSet { license_required, .. } => user.license_required = *license_required,
            E::AppUserBlacklisted { .. } => user.status = AppUserStatus::Blacklisted,
            E::AppUserUnblacklisted { .. } => user.status = AppUserStatus::Active,
            E::AppUserCreated { .. } | E::AppUserDeleted { .. } | E::AppUserCommentChanged { .. } => {}
        }
        Self::Live(user)
    }

    fn decide(&self, command: AppUserCommand, now: DateTime<Utc>) -> Result<Vec<AppUserEvent>, DomainError> {
        use AppUserCommand as C;
        use AppUserEvent as E;
        let at = now;
        if let C::Create { user_id, app_id, account_id, login_digest, license_required, levels, comment } = command {
            if *self != Self::Missing {
                return Err(DomainError::AlreadyExists("app user"));
            }
            let levels = crate::license::check_levels(levels)?;
            let mut events =
                vec![E::AppUserCreated { user_id, app_id, account_id, login_digest, license_required, created_at: at }];
            if !levels.is_empty() {
                events.push(E::AppUserLevelsSet { levels, at });
            }
            if comment {
                events.push(E::AppUserCommentChanged { at });
            }
            return Ok(events);
        }
        let user = match self {
            Self::Live(user) => user,
            Self::Missing | Self::Deleted => return Err(DomainError::NotFound("app user")),
        };
        Ok(match command {
            C::Create { .. } => return Err(DomainError::AlreadyExists("app user")),
            C::ChangePassword => vec![E::AppUserPasswordChanged { at }],
            C::ChangeComment => vec![E::AppUserCommentChanged { at }],
            C::SetLevels(levels) => {
                let levels = crate::license::check_levels(levels)?;
                if levels == user.levels {
                    vec![]
                } else {
                    vec![E::AppUserLevelsSet { levels, at }]
                }
            }
            C::SetLicenseRequired(required) if required == user.license_required => vec![],
            C::SetLicenseRequired(license_required) => vec![E::AppUserLicenseRequirementSet { license_required, at }],
            C::Blacklist if user.status == AppUserStatus::Blacklisted => vec![],
            C::Blacklist => vec![E::AppUserBlacklisted { app_id: user.app_id, at }],
            C::Unblacklist if user.status == AppUserStatus::Active => vec![],
            C::Unblacklist => vec![E::AppUserUnblacklisted { at }],
            C::Delete => vec![E::AppUserDeleted { app_id: user.app_id, at }],
        })
    }
}

/// Why a login was refused (each has its own Blazeauth status: 205, 206, 209).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginProblem {
    TooShort,
    TooLong,
    NotAnEmail,
    /// Control characters (and U+0000, which Postgres cannot store) are never part of a login.
    ControlCharacters,
}

/// Checks a login and returns it normalized for uniqueness and lookups: surrounding whitespace
/// removed, lower case (so `Ann` and `ann` are one login). Lengths count characters of the
/// trimmed login; `email` requires the `local@domain.tld` shape (`credentials_type` 1).
pub fn normalize_login(login: &str, email: bool) -> Result<String, LoginProblem> {
    let trimmed = login.trim();
    let chars = trimmed.chars().count();
    if chars < MIN_LOGIN_CHARS {
        return Err(LoginProblem::TooShort);
    }
    if chars > MAX_LOGIN_CHARS {
        return Err(LoginProblem::TooLong);
    }
    if trimmed.chars().any(char::is_control) {
        return Err(LoginProblem::ControlCharacters);
    }
    let normalized = trimmed.to_lowercase();
    if email && !looks_like_email(&normalized) {
        return Err(LoginProblem::NotAnEmail);
    }
    Ok(normalized)
}

fn looks_like_email(login: &str) -> bool {
    let Some((local, domain)) = login.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !login.chars().any(char::is_whitespace)
}

/// A comment of acceptable length (blank is none).
pub fn check_comment(comment: &str) -> Result<Option<&str>, DomainError> {
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(DomainError::InvalidComment(MAX_COMMENT_CHARS));
    }
    if comment.chars().any(char::is_control) {
        return Err(DomainError::InvalidComment(MAX_COMMENT_CHARS));
    }
    Ok(Some(comment).filter(|c| !c.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap()
    }

    fn create() -> AppUserCommand {
        AppUserCommand::Create {
            user_id: AppUserId(uuid::Uuid::nil()),
            app_id: AppId(uuid::Uuid::nil()),
            account_id: AccountId(uuid::Uuid::nil()),
            login_digest: "d".into(),
            license_required: false,
            levels: vec!["pro".into(), "pro".into()],
            comment: true,
        }
    }

    fn given_when(history: &[AppUserEvent], command: AppUserCommand) -> Result<Vec<AppUserEvent>, DomainError> {
        AppUserState::fold(history).decide(command, now())
    }

    #[test]
    fn create_records_the_user_once_without_personal_data() {
        let events = given_when(&[], create()).unwrap();
        assert!(matches!(
            &events[..],
            [
                AppUserEvent::AppUserCreated { .. },
                AppUserEvent::AppUserLevelsSet { .. },
                AppUserEvent::AppUserCommentChanged { .. }
            ]
        ));
        let AppUserState::Live(user) = AppUserState::fold(&events) else { panic!("live") };
        assert_eq!(user.levels, ["pro"]);
        assert_eq!(given_when(&events, create()), Err(DomainError::AlreadyExists("app user")));
    }

    #[test]
    fn blacklist_and_levels_record_only_changes_and_deleted_users_refuse_everything() {
        let mut history = given_when(&[], create()).unwrap();
        history.extend(given_when(&history, AppUserCommand::Blacklist).unwrap());
        assert_eq!(given_when(&history, AppUserCommand::Blacklist), Ok(vec![]));
        assert_eq!(given_when(&history, AppUserCommand::SetLevels(vec!["pro".into()])), Ok(vec![]));
        assert!(given_when(&history, AppUserCommand::SetLevels(vec!["".into()])).is_err());
        history.extend(given_when(&history, AppUserCommand::ChangePassword).unwrap());
        let AppUserState::Live(user) = AppUserState::fold(&history) else { panic!("live") };
        assert_eq!((user.status, user.password_generation), (AppUserStatus::Blacklisted, 1));
        history.extend(given_when(&history, AppUserCommand::Delete).unwrap());
        assert_eq!(given_when(&history, AppUserCommand::Unblacklist), Err(DomainError::NotFound("app user")));
    }

    #[test]
    fn logins_are_trimmed_lower_cased_and_limited() {
        assert_eq!(normalize_login("  Ann.B ", false), Ok("ann.b".into()));
        assert_eq!(normalize_login("abc", false), Err(LoginProblem::TooShort));
        assert_eq!(normalize_login(&"é".repeat(320), false).map(|l| l.chars().count()), Ok(320));
        assert_eq!(normalize_login(&"a".repeat(321), false), Err(LoginProblem::TooLong));
        assert_eq!(normalize_login("ab\u{0}cd", false), Err(LoginProblem::ControlCharacters));
        assert_eq!(normalize_login("not-an-email", true), Err(LoginProblem::NotAnEmail));
        assert_eq!(normalize_login("a@b..c", true), Err(LoginProblem::NotAnEmail));
        assert_eq!(normalize_login("Ann@Example.com", true), Ok("ann@example.com".into()));
    }
}
