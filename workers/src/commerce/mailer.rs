//! Buyer email over SMTP. Best-effort by design: the license already exists and `license.created`
//! has fired, so a failed send is logged (without the address) and never retried into duplicates.

use lettre::message::{header::ContentType, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("invalid SMTP configuration: {0}")]
    Config(String),
    #[error("invalid recipient address")]
    Recipient,
    #[error("the SMTP server refused or failed: {0}")]
    Send(String),
}

#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    portal_url: Option<String>,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").field("from", &self.from.email.to_string()).finish_non_exhaustive()
    }
}

/// What a buyer gets told after a purchase.
pub struct Delivery<'a> {
    pub to: &'a str,
    pub app_name: &'a str,
    pub keys: &'a [String],
    pub support_contact: Option<&'a str>,
}

impl Mailer {
    /// `url`: `smtp://[user:pass@]host:port` (add `?tls=required` for STARTTLS) or `smtps://...`.
    pub fn new(url: &str, from: &str, portal_url: Option<String>) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Config(e.to_string()))?
            .timeout(Some(std::time::Duration::from_secs(15)))
            .build();
        let from = from.parse().map_err(|_| MailError::Config("LICENSD_SMTP_FROM is not an address".into()))?;
        Ok(Self { transport, from, portal_url })
    }

    pub fn body(&self, delivery: &Delivery<'_>) -> String {
        let mut text = format!("Thank you for your purchase of {}.\n\n", delivery.app_name);
        text.push_str(if delivery.keys.len() == 1 { "Your license key:\n\n" } else { "Your license keys:\n\n" });
        for key in delivery.keys {
            text.push_str(&format!("    {key}\n"));
        }
        if let Some(portal) = &self.portal_url {
            text.push_str(&format!("\nManage your devices in the license portal: {portal}\n"));
        }
        if let Some(support) = delivery.support_contact {
            text.push_str(&format!("\nQuestions? Contact {support}\n"));
        }
        text
    }

    pub async fn send(&self, delivery: &Delivery<'_>) -> Result<(), MailError> {
        let subject = format!("Your {} license", delivery.app_name);
        self.send_text(delivery.to, &subject, self.body(delivery)).await
    }

    /// A plain-text message to one recipient.
    pub async fn send_text(&self, to: &str, subject: &str, body: String) -> Result<(), MailError> {
        let to: Mailbox = to.parse().map_err(|_| MailError::Recipient)?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| MailError::Config(e.to_string()))?;
        self.transport.send(message).await.map(drop).map_err(|e| MailError::Send(e.to_string()))
    }
}
