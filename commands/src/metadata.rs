use licensd_domain::{AccountId, ApiKeyId};
use serde_json::{json, Value};

/// Who caused a change; recorded in every event's metadata for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The `licensd` command line, run by whoever operates the deployment.
    Operator,
    ApiKey(ApiKeyId),
    /// A merchant signed in to the dashboard.
    Dashboard(AccountId),
    /// An end user signed in to the self-service portal.
    PortalUser,
    /// An SDK client calling the public auth endpoints.
    Client,
    /// licensd itself (workers, process managers).
    System,
}

impl Actor {
    pub fn label(&self) -> String {
        match self {
            Self::Operator => "operator".into(),
            Self::ApiKey(id) => format!("api_key:{id}"),
            Self::Dashboard(account) => format!("dashboard:{account}"),
            Self::PortalUser => "portal".into(),
            Self::Client => "client".into(),
            Self::System => "system".into(),
        }
    }

    /// Event metadata: the actor and the tenant the change belongs to.
    pub fn metadata(&self, account_id: Option<AccountId>) -> Value {
        json!({ "actor": self.label(), "account_id": account_id.map(|a| a.to_string()) })
    }
}
