//! End users of apps (see [`licensd_domain::app_user`]): sign-up, password verifiers, the login
//! reservation, linking licenses, deletion.
//!
//! Personal data goes to the sealed vault under the user's stream id: `login` (as typed, trimmed),
//! `comment`, and `password` (the Argon2id verifier). Deleting a user erases all three; the
//! events keep only ids, levels, times and a keyed digest of the login.

use crate::{Actor, CommandError, Entropy, MasterKey};
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use licensd_domain::app_user::{AppUserCommand, AppUserId, AppUserState, LoginReservationEvent};
use licensd_domain::license::{LicenseCommand, LicenseState};
use licensd_domain::{decode_event, AccountId, AppId, DomainError, LicenseKey, StreamCategory};
use licensd_store::{EventStore, ExpectedVersion, StoreError};
use std::sync::OnceLock;

pub const LOGIN_FIELD: &str = "login";
pub const COMMENT_FIELD: &str = "comment";
const VERIFIER_FIELD: &str = "password";

/// Argon2id cost of end-user verifiers. The default (19 MiB, 2 passes, 1 lane: the OWASP
/// baseline) verifies in the time README "App users" states for this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordCost {
    pub memory_kib: u32,
    pub iterations: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2 }
    }
}

impl PasswordCost {
    fn hasher(&self) -> Result<Argon2<'static>, CommandError> {
        let params = Params::new(self.memory_kib, self.iterations, 1, None)
            .map_err(|e| CommandError::Invalid(format!("invalid Argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// An Argon2id PHC string (parameters and salt inside) for `password`. Length rules are the
    /// caller's (they are the protocol's statuses); this only hashes.
    pub fn hash(&self, password: &str) -> Result<String, CommandError> {
        let salt = SaltString::generate(&mut OsRng);
        self.hasher()?
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|e| CommandError::Crypto(format!("cannot hash the password: {e}")))
    }

    /// A verifier of a random password at this cost, made once: an unknown login is checked
    /// against it, so it costs what a wrong password costs.
    fn dummy(&self) -> &'static str {
        static DUMMY: OnceLock<(PasswordCost, String)> = OnceLock::new();
        let (cost, verifier) = DUMMY.get_or_init(|| {
            let mut bytes = [0u8; 16];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
            let random = hex::encode(bytes);
            (*self, self.hash(&random).unwrap_or_default())
        });
        // Another cost in one process (tests): still a verifier, if of other work.
        if cost != self {
            ""
        } else {
            verifier
        }
    }
}

/// Checks `password` against `verifier` (the parameters inside it decide the work; the
/// comparison of the final digests is constant-time inside `argon2`). `None` checks against a
/// dummy verifier of the same cost and returns false: unknown logins do the same work.
pub fn verify_user_password(cost: &PasswordCost, password: &str, verifier: Option<&str>) -> bool {
    let (verifier, real) = match verifier {
        Some(v) => (v, true),
        None => (cost.dummy(), false),
    };
    let matched = PasswordHash::new(verifier)
        .is_ok_and(|hash| Argon2::default().verify_password(password.as_bytes(), &hash).is_ok());
    matched && real
}

/// Keyed digest of an app and a normalized login: the reservation stream's name and the
/// sign-in lookup key. Equal logins of different apps give different digests.
pub fn login_digest(key: &MasterKey, app_id: AppId, normalized_login: &str) -> String {
    hex::encode(key.keyed_digest("app-user-login", &format!("{app_id}\n{normalized_login}")))
}

fn user_stream(user_id: AppUserId) -> String {
    StreamCategory::AppUser.stream_id(user_id)
}

/// A sign-up (over a live session) or a creation by the merchant.
#[derive(Debug, Clone)]
pub struct NewAppUser {
    pub app_id: AppId,
    pub account_id: AccountId,
    /// As typed, trimmed (kept in the vault, shown back to the merchant and the user).
    pub login: String,
    /// The normalized login (see `normalize_login`).
    pub normalized_login: String,
    pub password: String,
    pub comment: Option<String>,
    pub levels: Vec<String>,
    pub license_required: bool,
    /// A license to link at once, with the machine to bind it to.
    pub license: Option<(LicenseKey, Option<String>)>,
}

impl crate::Commands {
    /// Creates a user: reserves the login (202 when taken), writes the user with its sealed
    /// login, comment and verifier in one transaction, then links the license if one was given.
    /// A failed link deletes the user again (and frees the login), so a refused sign-up leaves
    /// nothing an attacker could use.
    pub async fn create_app_user(
        &self,
        new: NewAppUser,
        cost: &PasswordCost,
        actor: &Actor,
    ) -> Result<(AppUserId, Option<licensd_store::Position>), CommandError> {
        let verifier = hash_blocking(*cost, new.password.clone()).await?;
        let user_id = AppUserId(Entropy::next_step().uuid("app-user-id"));
        let digest = login_digest(self.master_key(), new.app_id, &new.normalized_login);
        self.reserve_login(&digest, user_id, actor).await?;
        let stream = user_stream(user_id);
        let mut pii =
            vec![self.pii().row(&stream, LOGIN_FIELD, &new.login), self.pii().row(&stream, VERIFIER_FIELD, &verifier)];
        if let Some(comment) = &new.comment {
            pii.push(self.pii().row(&stream, COMMENT_FIELD, comment));
        }
        let command = AppUserCommand::Create {
            user_id,
            app_id: new.app_id,
            account_id: new.account_id,
            login_digest: digest.clone(),
            license_required: new.license_required,
            levels: new.levels.clone(),
            comment: new.comment.is_some(),
        };
        let created =
            self.execute_with_pii::<AppUserState>(&stream, command, actor, Some(new.account_id), |_| Ok(()), pii).await;
        let mut position = match created {
            Ok(executed) => executed.position(),
            Err(e) => {
                self.release_login(&digest, user_id, actor).await;
                return Err(e);
            }
        };
        if let Some((key, hwid)) = new.license {
            match self.link_license_to_user(new.app_id, user_id, &key, hwid, actor).await {
                Ok(linked) => position = linked.or(position),
                Err(e) => {
                    if let Err(undo) = self.delete_app_user(new.account_id, user_id, &[], actor).await {
                        tracing::error!(%user_id, error = %undo, "cannot undo a sign-up whose license was refused");
                    }
                    return Err(e);
                }
            }
        }
        Ok((user_id, position))
    }

    /// Runs a user command for the account that owns the user (`pii`: vault rows written with it).
    pub async fn app_user_command(
        &self,
        account_id: AccountId,
        user_id: AppUserId,
        command: AppUserCommand,
        pii: Vec<licensd_store::PiiRow>,
        actor: &Actor,
    ) -> Result<crate::Executed<licensd_domain::app_user::AppUserEvent>, CommandError> {
        let guard = |state: &AppUserState| match state {
            AppUserState::Live(user) if user.account_id != account_id => Err(CommandError::Forbidden("app user")),
            _ => Ok(()),
        };
        let stream = user_stream(user_id);
        self.execute_with_pii::<AppUserState>(&stream, command, actor, Some(account_id), guard, pii).await
    }

    /// The merchant sets a new password: the verifier is replaced in the transaction of the
    /// event that ends the user's live sessions.
    pub async fn set_app_user_password(
        &self,
        account_id: AccountId,
        user_id: AppUserId,
        password: &str,
        cost: &PasswordCost,
        actor: &Actor,
    ) -> Result<(), CommandError> {
        let verifier = hash_blocking(*cost, password.to_string()).await?;
        let pii = vec![self.pii().row(&user_stream(user_id), VERIFIER_FIELD, &verifier)];
        self.app_user_command(account_id, user_id, AppUserCommand::ChangePassword, pii, actor).await.map(drop)
    }

    /// Sets (`Some`) or removes the user's comment.
    pub async fn set_app_user_comment(
        &self,
        account_id: AccountId,
        user_id: AppUserId,
        comment: Option<&str>,
        actor: &Actor,
    ) -> Result<(), CommandError> {
        let stream = user_stream(user_id);
        let pii = comment.map(|c| vec![self.pii().row(&stream, COMMENT_FIELD, c)]).unwrap_or_default();
        self.app_user_command(account_id, user_id, AppUserCommand::ChangeComment, pii, actor).await?;
        if comment.is_none() {
            self.pii().remove(&stream, COMMENT_FIELD).await?;
        }
        Ok(())
    }

    /// Deletes a user: the deletion event, then the licenses it held are unlinked, the login is
    /// freed and the vault rows (login, comment, verifier) are erased.
    pub async fn delete_app_user(
        &self,
        account_id: AccountId,
        user_id: AppUserId,
        linked: &[LicenseKey],
        actor: &Actor,
    ) -> Result<(), CommandError> {
        let stream = user_stream(user_id);
        let (state, _) = self.load::<AppUserState>(&stream).await?;
        let AppUserState::Live(user) = state else { return Err(DomainError::NotFound("app user").into()) };
        if user.account_id != account_id {
            return Err(CommandError::Forbidden("app user"));
        }
        self.app_user_command(account_id, user_id, AppUserCommand::Delete, Vec::new(), actor).await?;
        for key in linked {
            let stream = StreamCategory::License.stream_id(key);
            let unlink = LicenseCommand::UnlinkUser { user_id };
            let done = self.execute::<LicenseState>(&stream, unlink, actor, Some(account_id), |_| Ok(())).await;
            if let Err(e) = done.map(drop).or_else(ignore_gone) {
                tracing::warn!(%user_id, error = %e, "cannot unlink a license of a deleted user");
            }
        }
        self.release_login(&user.login_digest, user_id, actor).await;
        self.pii().erase(&stream).await?;
        Ok(())
    }

    /// Links `key` (of `app_id`) to the user, binding `hwid`; the license aggregate refuses a
    /// license linked to someone else (so two concurrent links of one license: one wins).
    pub async fn link_license_to_user(
        &self,
        app_id: AppId,
        user_id: AppUserId,
        key: &LicenseKey,
        hwid: Option<String>,
        actor: &Actor,
    ) -> Result<Option<licensd_store::Position>, CommandError> {
        let stream = StreamCategory::License.stream_id(key);
        let command = LicenseCommand::LinkUser { user_id, app_id, hwid };
        let missing = |state: &LicenseState| match state {
            LicenseState::Live(_) => Ok(()),
            _ => Err(CommandError::Domain(DomainError::NotFound("license"))),
        };
        Ok(self.execute::<LicenseState>(&stream, command, actor, None, missing).await?.position())
    }

    /// `user_id` signed in from `hwid`: the license aggregate checks that `key` is still theirs
    /// and binds the machine to a slot as an authorization by license does (a valid license whose
    /// slots hold other machines refuses with `HwidSlotsFull`). Not billed, as linking is not.
    pub async fn authenticate_user_license(
        &self,
        user_id: AppUserId,
        key: &LicenseKey,
        hwid: String,
        actor: &Actor,
    ) -> Result<Option<licensd_store::Position>, CommandError> {
        let stream = StreamCategory::License.stream_id(key);
        let command = LicenseCommand::AuthenticateUser { user_id, hwid };
        Ok(self.execute::<LicenseState>(&stream, command, actor, None, |_| Ok(())).await?.position())
    }

    /// Ends the link between `key` and the user (nothing if they are not linked).
    pub async fn unlink_license_from_user(
        &self,
        account_id: AccountId,
        user_id: AppUserId,
        key: &LicenseKey,
        actor: &Actor,
    ) -> Result<bool, CommandError> {
        let command = LicenseCommand::UnlinkUser { user_id };
        let executed = self.license_command(account_id, key, command, actor).await?;
        Ok(!executed.events.is_empty())
    }

    /// The user's sealed verifier (none once erased).
    pub async fn app_user_verifier(&self, user_id: AppUserId) -> Result<Option<String>, CommandError> {
        self.pii().get(&user_stream(user_id), VERIFIER_FIELD).await
    }

    /// A vault field of the user (`LOGIN_FIELD`, `COMMENT_FIELD`).
    pub async fn app_user_field(&self, user_id: AppUserId, field: &str) -> Result<Option<String>, CommandError> {
        self.pii().get(&user_stream(user_id), field).await
    }

    async fn reserve_login(&self, digest: &str, user_id: AppUserId, actor: &Actor) -> Result<(), CommandError> {
        let taken = || CommandError::Domain(DomainError::AlreadyExists("app user"));
        let stream = StreamCategory::AppUserLogin.stream_id(digest);
        let expected = match last_reservation(&self.store().read_stream(&stream, 1).await?)? {
            None => ExpectedVersion::NoStream,
            Some((last, version)) if last.holder().is_none() => ExpectedVersion::Exact(version),
            Some(_) => return Err(taken()),
        };
        let reserved = LoginReservationEvent::AppUserLoginReserved { user_id, at: self.now() };
        match self.append(&stream, expected, &[reserved], actor, None).await {
            Err(CommandError::Store(StoreError::WrongExpectedVersion { .. })) => Err(taken()),
            other => other.map(drop),
        }
    }

    async fn release_login(&self, digest: &str, user_id: AppUserId, actor: &Actor) {
        let stream = StreamCategory::AppUserLogin.stream_id(digest);
        let released = async {
            match last_reservation(&self.store().read_stream(&stream, 1).await?)? {
                Some((last, version)) if last.holder() == Some(user_id) => {
                    let released = LoginReservationEvent::AppUserLoginReleased { user_id, at: self.now() };
                    self.append(&stream, ExpectedVersion::Exact(version), &[released], actor, None).await.map(drop)
                }
                _ => Ok(()),
            }
        };
        if let Err(e) = released.await {
            tracing::error!(%user_id, error = %e, "cannot release the login of an app user");
        }
    }
}

fn ignore_gone(e: CommandError) -> Result<(), CommandError> {
    match e {
        CommandError::Domain(DomainError::NotFound(_) | DomainError::LicenseDeleted) => Ok(()),
        other => Err(other),
    }
}

fn last_reservation(
    recorded: &[licensd_store::RecordedEvent],
) -> Result<Option<(LoginReservationEvent, u64)>, CommandError> {
    let Some(last) = recorded.last() else { return Ok(None) };
    let event = decode_event::<LoginReservationEvent>(&last.event_type, last.schema_version, &last.payload)?;
    Ok(Some((event, last.version)))
}

async fn hash_blocking(cost: PasswordCost, password: String) -> Result<String, CommandError> {
    tokio::task::spawn_blocking(move || cost.hash(&password)).await.map_err(|e| CommandError::Crypto(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_logins_never_verify_and_verifiers_are_argon2id() {
        let cost = PasswordCost { memory_kib: 1024, iterations: 1 };
        let verifier = cost.hash("hunter22").unwrap();
        assert!(verifier.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(verify_user_password(&cost, "hunter22", Some(&verifier)));
        assert!(!verify_user_password(&cost, "hunter23", Some(&verifier)));
        assert!(!verify_user_password(&cost, "hunter22", None));
        assert!(!verify_user_password(&cost, "hunter22", Some("garbage")));
    }

    #[test]
    fn digests_are_per_app_and_keyed() {
        let key = MasterKey::parse(&"11".repeat(32)).unwrap();
        let other = MasterKey::parse(&"22".repeat(32)).unwrap();
        let (a, b) = (AppId::new(), AppId::new());
        assert_eq!(login_digest(&key, a, "ann"), login_digest(&key, a, "ann"));
        assert_ne!(login_digest(&key, a, "ann"), login_digest(&key, b, "ann"));
        assert_ne!(login_digest(&key, a, "ann"), login_digest(&other, a, "ann"));
    }
}
