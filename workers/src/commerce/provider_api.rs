//! Reads from the providers' APIs with the merchant's key, for events that left line items out.
//! Base URLs are configurable (tests point them at a local server speaking the same format).

use licensd_domain::commerce::LineItem;
use serde_json::Value;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// Throttling, timeouts, upstream 5xx: worth one automatic retry.
    #[error("transient provider error: {0}")]
    Transient(String),
    #[error("provider error: {0}")]
    Permanent(String),
}

#[derive(Clone, Debug)]
pub struct ProviderApi {
    client: reqwest::Client,
    stripe_base: String,
    lemon_base: String,
}

impl ProviderApi {
    pub fn new(stripe_base: &str, lemon_base: &str) -> Result<Self, crate::outbound::ClientError> {
        let builder =
            reqwest::Client::builder().timeout(Duration::from_secs(15)).redirect(reqwest::redirect::Policy::none());
        let client = crate::outbound::client("commerce provider API", builder)?;
        let trim = |base: &str| base.trim_end_matches('/').to_string();
        Ok(Self { client, stripe_base: trim(stripe_base), lemon_base: trim(lemon_base) })
    }

    async fn get(&self, url: String, key: &str, accept: &str) -> Result<Value, ProviderError> {
        let response = self
            .client
            .get(&url)
            .bearer_auth(key)
            .header("Accept", accept)
            .send()
            .await
            .map_err(|e| ProviderError::Transient(e.without_url().to_string()))?;
        let status = response.status();
        if status.as_u16() == 429 || status.is_server_error() {
            return Err(ProviderError::Transient(format!("HTTP {}", status.as_u16())));
        }
        if !status.is_success() {
            return Err(ProviderError::Permanent(format!("HTTP {}", status.as_u16())));
        }
        response.json().await.map_err(|e| ProviderError::Permanent(format!("unreadable response: {e}")))
    }

    /// `GET /v1/checkout/sessions/{id}/line_items` (one page of up to 100 items).
    pub async fn stripe_line_items(&self, key: &str, session_id: &str) -> Result<Vec<LineItem>, ProviderError> {
        let url = format!("{}/v1/checkout/sessions/{session_id}/line_items?limit=100", self.stripe_base);
        let list = self.get(url, key, "application/json").await?;
        crate::commerce::normalize::stripe_line_items(&list)
            .ok_or_else(|| ProviderError::Permanent("line items response is not a list".into()))
    }

    /// `GET /v1/orders/{id}`: the order's first item, as the webhook would have carried it.
    pub async fn lemon_order_items(&self, key: &str, order_id: &str) -> Result<Vec<LineItem>, ProviderError> {
        let url = format!("{}/v1/orders/{order_id}", self.lemon_base);
        let order = self.get(url, key, "application/vnd.api+json").await?;
        let item = order.pointer("/data/attributes/first_order_item");
        let variant = item.and_then(|i| i.get("variant_id")).and_then(|v| v.as_u64().map(|n| n.to_string()));
        Ok(variant
            .map(|price_id| LineItem {
                price_id,
                product_id: item.and_then(|i| i.get("product_id")).map(|p| p.to_string()),
                quantity: item.and_then(|i| i.get("quantity")).and_then(Value::as_u64).unwrap_or(1).max(1) as u32,
            })
            .into_iter()
            .collect())
    }
}
