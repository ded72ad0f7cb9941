//! Sign-in lockout kept in the database (modelled on kanidm's softlock), so neither a restart nor a
//! burst of concurrent guesses resets or outruns it.
//!
//! Every attempt is counted by ONE atomic upsert *before* the password is verified: concurrent
//! requests each get a distinct count, and those beyond the limit are refused without paying for
//! (or learning from) a verification. The attempt that reaches the limit engages the lock at once,
//! for `base * 2^k` (k: earlier lockouts of the subject, capped at `max`); it may still verify, and
//! a success clears everything. Failures older than `window` are forgotten, and the escalation
//! level once the subject has been quiet for `max`.

use crate::CommandError;
use chrono::{DateTime, Utc};
use licensd_store::{Statement, Store};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct LockoutPolicy {
    /// Attempts checked per round; the one that reaches it locks the subject.
    pub max_failures: u32,
    /// How long failures are remembered when no lock follows.
    pub window: Duration,
    /// The first lock's length; each further lock doubles it.
    pub base: Duration,
    /// The longest lock, and the quiet time after which escalation starts over.
    pub max: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            base: Duration::from_secs(15 * 60),
            max: Duration::from_secs(24 * 3600),
        }
    }
}

impl LockoutPolicy {
    /// The length of the lock after `lockouts` earlier ones.
    pub fn lock_length(&self, lockouts: u32) -> Duration {
        self.base.saturating_mul(1u32 << lockouts.min(20)).min(self.max)
    }
}

/// What to do with one sign-in attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Check the password (the attempt is already counted as a failure until `succeeded`).
    Verify,
    /// Refuse without checking.
    Locked { until: DateTime<Utc> },
}

#[derive(Clone, Debug)]
pub struct Lockout {
    store: Store,
    policy: LockoutPolicy,
    attempts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    sql: &'static LockoutSql,
}

/// The statements of one lockout table (dashboard sign-ins, app-user sign-ins).
#[derive(Debug)]
struct LockoutSql {
    count: &'static str,
    lock: &'static str,
    clear: &'static str,
    prune: &'static str,
    forgive: &'static str,
}

static DASHBOARD: LockoutSql = LockoutSql { count: COUNT, lock: LOCK, clear: CLEAR, prune: PRUNE, forgive: FORGIVE };

/// The same statements on `app_user_lockouts` (same shape; end users' subjects kept apart).
static APP_USERS: std::sync::LazyLock<LockoutSql> = std::sync::LazyLock::new(|| {
    let on_table = |sql: &str| -> &'static str {
        // Built once per process: the four statements live as long as the program.
        Box::leak(sql.replace("dashboard_lockouts", "app_user_lockouts").into_boxed_str())
    };
    LockoutSql {
        count: on_table(COUNT),
        lock: on_table(LOCK),
        clear: on_table(CLEAR),
        prune: on_table(PRUNE),
        forgive: on_table(FORGIVE),
    }
});

/// Every this many attempts, rows that would start over anyway are deleted, so guesses at many
/// made-up emails cannot grow the table without bound.
const PRUNE_EVERY: u64 = 256;

/// Counts the attempt; a running lock leaves the row as it is, an expired lock or a stale round
/// starts a new round, and a long quiet period drops the escalation level.
/// $1 subject, $2 now (ms), $3 window (ms), $4 quiet period (ms).
const COUNT: &str = "INSERT INTO dashboard_lockouts (subject, failures, lockouts, locked_until, last_attempt)
     VALUES ($1, 1, 0, 0, $2)
     ON CONFLICT (subject) DO UPDATE SET
       failures = CASE
         WHEN dashboard_lockouts.locked_until > $2 THEN dashboard_lockouts.failures
         WHEN dashboard_lockouts.locked_until > 0 OR dashboard_lockouts.last_attempt + $3 <= $2 THEN 1
         ELSE dashboard_lockouts.failures + 1 END,
       lockouts = CASE
         WHEN dashboard_lockouts.locked_until + $4 <= $2 AND dashboard_lockouts.last_attempt + $4 <= $2 THEN 0
         ELSE dashboard_lockouts.lockouts END,
       locked_until = CASE
         WHEN dashboard_lockouts.locked_until > $2 THEN dashboard_lockouts.locked_until ELSE 0 END,
       last_attempt = CASE
         WHEN dashboard_lockouts.locked_until > $2 THEN dashboard_lockouts.last_attempt ELSE $2 END
     RETURNING CAST(failures AS TEXT), CAST(lockouts AS TEXT), CAST(locked_until AS TEXT)";

/// Engages the lock once per round: only the first request past the limit moves it.
/// $1 subject, $2 locked until (ms), $3 now (ms).
const LOCK: &str = "UPDATE dashboard_lockouts SET locked_until = $2, lockouts = lockouts + 1
     WHERE subject = $1 AND locked_until <= $3";

const CLEAR: &str = "DELETE FROM dashboard_lockouts WHERE subject = $1";

/// Takes back one counted attempt of a round (a lock already engaged stays). $1 subject.
const FORGIVE: &str = "UPDATE dashboard_lockouts SET failures = failures - 1 WHERE subject = $1 AND failures > 0";

/// Rows quiet for the whole quiet period and not locked: their next attempt would start from
/// nothing anyway. $1 now (ms), $2 quiet period (ms).
const PRUNE: &str = "DELETE FROM dashboard_lockouts
     WHERE last_attempt + $2 <= $1 AND locked_until + $2 <= $1";

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4)
}

fn number(row: &[Option<String>], index: usize) -> i64 {
    row.get(index).cloned().flatten().and_then(|text| text.parse().ok()).unwrap_or(0)
}

fn instant(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Lockout {
    pub fn new(store: Store, policy: LockoutPolicy) -> Self {
        Self { store, policy, attempts: Default::default(), sql: &DASHBOARD }
    }

    /// A lockout of app users' sign-ins (its own table, so merchant and end-user subjects and
    /// their pruning never mix).
    pub fn for_app_users(store: Store, policy: LockoutPolicy) -> Self {
        Self { store, policy, attempts: Default::default(), sql: &APP_USERS }
    }

    pub fn policy(&self) -> &LockoutPolicy {
        &self.policy
    }

    /// Counts an attempt on `subject` (a keyed digest, never an address) and says whether to
    /// verify it.
    pub async fn attempt(&self, subject: &str, now: DateTime<Utc>) -> Result<Attempt, CommandError> {
        if self.attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.prune(now).await?;
        }
        let now_ms = now.timestamp_millis();
        let count = Statement::new(
            self.sql.count,
            [subject.into(), now_ms.into(), millis(self.policy.window).into(), millis(self.policy.max).into()],
        );
        let rows = self.store.execute_single(&count).await?;
        let row = rows.first().map(Vec::as_slice).unwrap_or_default();
        let (failures, lockouts, locked_until) = (number(row, 0), number(row, 1), number(row, 2));
        if locked_until > now_ms {
            return Ok(Attempt::Locked { until: instant(locked_until) });
        }
        let limit = i64::from(self.policy.max_failures.max(1));
        if failures < limit {
            return Ok(Attempt::Verify);
        }
        let until = now_ms.saturating_add(millis(self.policy.lock_length(u32::try_from(lockouts).unwrap_or(u32::MAX))));
        let lock = Statement::new(self.sql.lock, [subject.into(), until.into(), now_ms.into()]);
        self.store.execute(&[lock]).await?;
        if failures == limit {
            Ok(Attempt::Verify) // the last guess of the round is still checked
        } else {
            Ok(Attempt::Locked { until: instant(until) })
        }
    }

    /// Deletes the rows of subjects quiet for the quiet period (and the failure window); returns
    /// how many.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<u64, CommandError> {
        // Never before the failures themselves are forgotten, whatever the settings.
        let quiet = self.policy.max.max(self.policy.window);
        let prune = Statement::new(self.sql.prune, [now.timestamp_millis().into(), millis(quiet).into()]);
        Ok(self.store.execute(&[prune]).await?)
    }

    /// A correct password on a subject shared by several accounts (a client IP): the attempt
    /// counted for it is taken back, the others' failures stay, so many people signing in
    /// correctly behind one address never lock it, while guesses still do.
    pub async fn forgive_one(&self, subject: &str) -> Result<(), CommandError> {
        self.store.execute(&[Statement::new(self.sql.forgive, [subject.into()])]).await?;
        Ok(())
    }

    /// A correct password: forget the subject's failures and lockouts.
    pub async fn succeeded(&self, subject: &str) -> Result<(), CommandError> {
        self.store.execute(&[Statement::new(self.sql.clear, [subject.into()])]).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use licensd_store::testing::on_both_backends;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 2,
            window: Duration::from_secs(600),
            base: Duration::from_secs(10),
            max: Duration::from_secs(35),
        }
    }

    async fn rounds_escalate_and_a_success_resets(store: Store) {
        let lockout = Lockout::new(store, policy());
        let attempt = |s: i64| lockout.attempt("subject", at(s));
        assert_eq!(attempt(0).await.unwrap(), Attempt::Verify);
        assert_eq!(attempt(1).await.unwrap(), Attempt::Verify, "the attempt reaching the limit is checked");
        assert_eq!(attempt(2).await.unwrap(), Attempt::Locked { until: at(11) }, "and locks for base");
        assert_eq!(attempt(10).await.unwrap(), Attempt::Locked { until: at(11) });
        assert_eq!(lockout.attempt("other", at(10)).await.unwrap(), Attempt::Verify, "per subject");
        assert_eq!(attempt(11).await.unwrap(), Attempt::Verify, "a new round once the lock ends");
        assert_eq!(attempt(12).await.unwrap(), Attempt::Verify);
        assert_eq!(attempt(13).await.unwrap(), Attempt::Locked { until: at(32) }, "twice as long");
        assert_eq!(attempt(32).await.unwrap(), Attempt::Verify);
        assert_eq!(attempt(33).await.unwrap(), Attempt::Verify);
        assert_eq!(attempt(34).await.unwrap(), Attempt::Locked { until: at(68) }, "capped at max (35 s)");
        lockout.succeeded("subject").await.unwrap();
        assert_eq!(attempt(35).await.unwrap(), Attempt::Verify, "a success clears the lock");
        assert_eq!(attempt(36).await.unwrap(), Attempt::Verify);
        assert_eq!(attempt(37).await.unwrap(), Attempt::Locked { until: at(46) }, "and the escalation");
    }

    async fn old_failures_and_long_quiet_are_forgotten(store: Store) {
        let lockout = Lockout::new(store, policy());
        let attempt = |s: i64| lockout.attempt("subject", at(s));
        assert_eq!(attempt(0).await.unwrap(), Attempt::Verify);
        assert_eq!(attempt(600).await.unwrap(), Attempt::Verify, "a failure older than the window is forgotten");
        assert_eq!(attempt(601).await.unwrap(), Attempt::Verify);
        assert_eq!(attempt(602).await.unwrap(), Attempt::Locked { until: at(611) });
        // Quiet for longer than `max` after the lock: the next lock is the base length again.
        assert_eq!(attempt(700).await.unwrap(), Attempt::Verify);
        assert_eq!(attempt(701).await.unwrap(), Attempt::Verify);
        assert_eq!(attempt(702).await.unwrap(), Attempt::Locked { until: at(711) });
    }

    async fn quiet_rows_are_pruned(store: Store) {
        let lockout = Lockout::new(store, LockoutPolicy { window: Duration::from_secs(20), ..policy() });
        lockout.attempt("quiet", at(0)).await.unwrap();
        lockout.attempt("recent", at(30)).await.unwrap();
        assert_eq!(lockout.prune(at(34)).await.unwrap(), 0, "nothing quiet for 35 s yet");
        assert_eq!(lockout.prune(at(35)).await.unwrap(), 1, "only the row quiet for 35 s");
        assert_eq!(lockout.attempt("recent", at(36)).await.unwrap(), Attempt::Verify);
        assert_eq!(lockout.attempt("recent", at(37)).await.unwrap(), Attempt::Locked { until: at(46) }, "kept");
    }

    async fn a_burst_gets_at_most_the_limit_checked(store: Store) {
        let lockout = Lockout::new(store, LockoutPolicy { max_failures: 5, ..policy() });
        let attempts = (0..40).map(|_| {
            let lockout = lockout.clone();
            tokio::spawn(async move { lockout.attempt("burst", at(0)).await.unwrap() })
        });
        let mut verified = 0;
        for attempt in attempts.collect::<Vec<_>>() {
            verified += usize::from(attempt.await.unwrap() == Attempt::Verify);
        }
        assert_eq!(verified, 5);
    }

    async fn a_forgiven_attempt_does_not_count(store: Store) {
        let lockout = Lockout::new(store, policy());
        assert_eq!(lockout.attempt("ip", at(0)).await.unwrap(), Attempt::Verify);
        lockout.forgive_one("ip").await.unwrap();
        assert_eq!(lockout.attempt("ip", at(1)).await.unwrap(), Attempt::Verify, "the first failure of two");
        assert_eq!(lockout.attempt("ip", at(2)).await.unwrap(), Attempt::Verify, "the second: checked, and locks");
        lockout.forgive_one("ip").await.unwrap();
        assert_eq!(lockout.attempt("ip", at(3)).await.unwrap(), Attempt::Locked { until: at(12) }, "a lock stays");
        lockout.forgive_one("nobody").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lockout_takes_back_a_forgiven_attempt() {
        on_both_backends(a_forgiven_attempt_does_not_count).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lockout_rounds_escalate_and_a_success_resets() {
        on_both_backends(rounds_escalate_and_a_success_resets).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lockout_forgets_old_failures_and_long_quiet() {
        on_both_backends(old_failures_and_long_quiet_are_forgotten).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lockout_prunes_quiet_rows() {
        on_both_backends(quiet_rows_are_pruned).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn lockout_lets_a_burst_check_at_most_the_limit() {
        on_both_backends(a_burst_gets_at_most_the_limit_checked).await;
    }
}
