//! Backfill of the buyer-email index (the keyed digest the license listing's `email` filter
//! matches) for licenses whose address reached the vault before events carried the digest: a
//! purchase fulfilled, or an email set, by an older release.
//!
//! Run once at start-up on every node. It walks the vault's license emails in key order, a
//! bounded batch at a time, skips those the read model already shows indexed, and appends one
//! `BuyerEmailSet` with the digest through the license's aggregate, which decides it only while
//! the log holds neither a digest nor a removal. So a rerun (after a crash: the walk is
//! resumable because it only ever finds what is left), a second node doing the same, or a
//! merchant's change meanwhile, never records the digest twice or over a newer address.

use licensd_commands::{Actor, CommandError, Commands};
use licensd_domain::license::{LicenseCommand, LicenseState};
use licensd_domain::{LicenseKey, StreamCategory};
use licensd_store::SqlValue;

/// How the walk went: emails looked at, and digests appended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backfilled {
    pub seen: usize,
    pub indexed: usize,
}

/// Indexes every license email of the vault that has no digest yet, `batch` vault rows a query.
pub async fn backfill_buyer_emails(commands: &Commands, batch: usize) -> Result<Backfilled, CommandError> {
    let store = commands.store();
    let prefix = StreamCategory::License.stream_id("");
    let mut after = String::new();
    let mut done = Backfilled::default();
    loop {
        // `subject > after` over the primary key: each batch is one index range, whatever the size.
        let subjects: Vec<String> = store
            .query_text(
                "SELECT subject FROM pii WHERE field = 'email' AND subject > $1 AND subject LIKE $2
                 ORDER BY subject LIMIT $3",
                &[after.clone().into(), format!("{prefix}%").into(), (batch as i64).into()],
            )
            .await?
            .into_iter()
            .flatten()
            .collect();
        let Some(last) = subjects.last() else { return Ok(done) };
        after = last.clone();
        done.seen += subjects.len();
        for subject in unindexed(commands, &prefix, &subjects).await? {
            if index_one(commands, &subject).await? {
                done.indexed += 1;
            }
        }
        if subjects.len() < batch {
            return Ok(done);
        }
    }
}

/// The subjects whose license the read model does not show with a digest (a lagging read model
/// only costs a no-op command).
async fn unindexed(commands: &Commands, prefix: &str, subjects: &[String]) -> Result<Vec<String>, CommandError> {
    let keys: Vec<SqlValue> = subjects.iter().map(|s| s[prefix.len()..].to_string().into()).collect();
    let placeholders: Vec<String> = (1..=keys.len()).map(|n| format!("${n}")).collect();
    let sql = format!(
        "SELECT license_key FROM rm_licenses WHERE email_digest IS NOT NULL AND license_key IN ({})",
        placeholders.join(", ")
    );
    let indexed: Vec<String> = commands.store().query_text(&sql, &keys).await?.into_iter().flatten().collect();
    Ok(subjects.iter().filter(|s| !indexed.iter().any(|k| k.as_str() == &s[prefix.len()..])).cloned().collect())
}

/// Appends the digest of one license's vault email if its log still lacks one; whether it did.
async fn index_one(commands: &Commands, subject: &str) -> Result<bool, CommandError> {
    let Some(key) = StreamCategory::parse(subject).and_then(|(_, key)| LicenseKey::parse(key).ok()) else {
        return Ok(false);
    };
    let (LicenseState::Live(license), _) = commands.load::<LicenseState>(subject).await? else { return Ok(false) };
    // Removed meanwhile, or an address no digest can be made of: nothing to index.
    let Some(email) = commands.pii().get(subject, "email").await? else { return Ok(false) };
    let Some(email_digest) = licensd_commands::buyer_email_digest(commands.master_key(), &email) else {
        return Ok(false);
    };
    let command = LicenseCommand::IndexBuyerEmail { email_digest };
    let executed =
        commands.license_command_with_pii(license.account_id, &key, command, &Actor::System, Vec::new()).await?;
    Ok(!executed.events.is_empty())
}
