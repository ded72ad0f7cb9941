//! The one way licensd builds an outbound HTTP client.
//!
//! Proxy environment variables (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`) are ignored: a proxy
//! would resolve and connect on our behalf, past the destination guard, and would see webhook
//! signatures and provider keys. A client that cannot be built stops the start-up instead of
//! falling back to a default client, which would have neither the guard nor the timeouts.

#[derive(Debug, thiserror::Error)]
#[error("cannot build the outbound HTTP client ({purpose}): {reason}")]
pub struct ClientError {
    purpose: &'static str,
    reason: String,
}

/// `builder` (timeouts, redirects, resolver set by the caller) without any proxy.
pub fn client(purpose: &'static str, builder: reqwest::ClientBuilder) -> Result<reqwest::Client, ClientError> {
    builder.no_proxy().build().map_err(|e| ClientError { purpose, reason: e.to_string() })
}
