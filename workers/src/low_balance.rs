//! The low-balance alert email. The in-memory model says where each balance stands; the
//! account aggregate decides whether that is a new crossing (`LowBalanceAlertRaised`, once per
//! fall under the threshold, `LowBalanceAlertRearmed` when the balance is back at or above it)
//! and records the email (`LowBalanceAlertMailed`). Those events are the durable state: a
//! restart neither forgets a due email nor sends a mailed one again. The one window left is a
//! crash between the SMTP server accepting the message and the `Mailed` event: that alert is
//! sent a second time (at least once, never lost).

use crate::commerce::mailer::{MailError, Mailer};
use licensd_commands::{Actor, CommandError, Commands};
use licensd_domain::account::{AccountCommand, AccountState, LowBalanceAlert};
use licensd_domain::{AccountId, StreamCategory};
use licensd_projections::{AccountView, HotModel};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
enum AlertError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Mail(#[from] MailError),
}

pub struct LowBalanceWorker {
    commands: Commands,
    hot: Arc<HotModel>,
    mailer: Mailer,
    poll: Duration,
    /// Per account, the (threshold, under it) the aggregate last agreed with: only a change is
    /// sent to the aggregate, so an idle account costs a comparison per poll.
    settled: HashMap<AccountId, (u64, bool)>,
}

impl LowBalanceWorker {
    pub fn new(commands: Commands, hot: Arc<HotModel>, mailer: Mailer, poll: Duration) -> Self {
        Self { commands, hot, mailer, poll, settled: HashMap::new() }
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            for (account_id, view) in self.hot.accounts() {
                if let Err(e) = self.reconcile(account_id, &view).await {
                    tracing::warn!(%account_id, error = %e, "low-balance alert not settled; retrying");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = stop.changed() => {}
            }
        }
    }

    async fn reconcile(&mut self, account_id: AccountId, view: &AccountView) -> Result<(), AlertError> {
        let Some(threshold) = view.low_balance_threshold else {
            self.settled.remove(&account_id);
            return Ok(());
        };
        let under = view.balance < i64::try_from(threshold).unwrap_or(i64::MAX);
        if self.settled.get(&account_id) == Some(&(threshold, under)) {
            return Ok(());
        }
        let observe = AccountCommand::ObserveBalance { balance: view.balance };
        self.commands.account_command(account_id, observe, &Actor::System).await?;
        let stream = StreamCategory::Account.stream_id(account_id);
        let (state, _) = self.commands.load::<AccountState>(&stream).await?;
        let raised = state.0.as_ref().is_some_and(|a| a.low_balance_alert == LowBalanceAlert::Raised);
        if raised {
            self.mail(account_id, &stream, view.balance, threshold).await?;
            self.commands.account_command(account_id, AccountCommand::RecordLowBalanceMail, &Actor::System).await?;
        }
        self.settled.insert(account_id, (threshold, under));
        Ok(())
    }

    async fn mail(&self, account_id: AccountId, stream: &str, balance: i64, threshold: u64) -> Result<(), AlertError> {
        let Some(email) = self.commands.pii().get(stream, "email").await? else {
            // An erased merchant: nobody to tell; the alert counts as handled.
            tracing::info!(%account_id, "low-balance alert not emailed: the account has no email");
            return Ok(());
        };
        let subject = "Your licensd credit balance is low";
        // Short lines: the message stays 7-bit plain text, readable as sent.
        let body = format!(
            "Your licensd credit balance is low.\n\n\
             Account: {account_id}\n\
             Balance: {balance} credits\n\
             Alert threshold: {threshold} credits\n\n\
             Validations that cannot be paid for are refused once the\n\
             balance runs out: add credits to keep your licenses working.\n\n\
             This alert is sent once each time the balance falls under\n\
             the threshold.\n"
        );
        Ok(self.mailer.send_text(&email, subject, body).await?)
    }
}
