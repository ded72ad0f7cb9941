use licensd_domain::DomainError;
use licensd_store::StoreError;
use thiserror::Error;

/// Everything a command can fail with; the API maps each to a status code in one place.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The resource exists but belongs to another account.
    #[error("the {0} belongs to another account")]
    Forbidden(&'static str),
    #[error("the stream kept changing under the command; try again")]
    Contention,
    #[error("the writer is shutting down")]
    ShuttingDown,
    #[error("the write queue is full")]
    Overloaded,
    /// Input the command refuses, with the reason.
    #[error("{0}")]
    Invalid(String),
    #[error("secret could not be opened: {0}")]
    Crypto(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CommandError {
    /// Failures of our infrastructure rather than of the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::ShuttingDown | Self::Overloaded | Self::Contention)
            || matches!(self, Self::Store(e) if e.is_transient())
    }
}
