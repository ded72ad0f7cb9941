use licensd_domain::DomainError;
use licensd_store::StoreError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at {position} cannot be projected: {source}")]
    Decode { position: licensd_store::Position, source: DomainError },
    #[error("unknown projection '{0}'")]
    UnknownProjection(String),
    #[error("timed out waiting for the read model to reach {0}")]
    Timeout(licensd_store::Position),
    #[error("the log reader stopped: {0}")]
    Task(String),
}
