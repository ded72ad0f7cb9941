//! Issuing a signed session (validate) or refreshing one (heartbeat).

use super::envelope::{signed, SessionPayload};
use super::token::{hwid_digest, Claims};
use super::AuthError;
use crate::AppState;
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use licensd_domain::app::App;
use licensd_domain::license::License;
use serde_json::Value;

fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub struct Session<'a> {
    pub app: &'a App,
    pub license: &'a License,
    pub hwid: &'a str,
    pub nonce: &'a str,
    /// Clamped session lifetime in seconds.
    pub ttl: i64,
    pub now: DateTime<Utc>,
}

impl Session<'_> {
    pub fn issue(&self, state: &AppState) -> Result<Json<Value>, AuthError> {
        let expires = self.now.timestamp() + self.ttl;
        let claims = Claims {
            exp: expires,
            expires_in: expires,
            app: self.app.app_id.to_string(),
            lic: self.license.key.to_string(),
            hw: hwid_digest(self.hwid),
            ttl: self.ttl,
            iat: self.now.timestamp(),
        };
        let session_expires_at = DateTime::from_timestamp(expires, 0).map(iso).unwrap_or_default();
        let payload = SessionPayload {
            session_token: state.auth.tokens.mint(&claims),
            expires_in: expires,
            nonce: self.nonce,
            timestamp: iso(self.now),
            request_id: uuid::Uuid::now_v7().to_string(),
            session_expires_at,
            license_expires_at: self.license.expires_at.map(iso),
            max_hwid_slots: self.license.max_hwid_slots,
            hwid_count: self.license.hwids.len(),
            license_label: self.license.label.as_deref(),
            app_variables: self.app.variables.as_map(),
            license_variables: self.license.variables.as_map(),
        };
        let (signer, key_id) = state.auth.keyring.signer(self.app)?;
        Ok(signed(&payload, &signer, &key_id))
    }
}
