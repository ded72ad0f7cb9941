//! Test data made the way a merchant makes it: an account and credits through the operator
//! commands, an app and its licenses through the Developer API of the running server.

use crate::deployment::Deployment;
use crate::protocol::{AppCredentials, Machine};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Most licenses one `POST /v1/licenses` creates (the documented limit).
const PER_REQUEST: usize = 100;

pub struct Merchant {
    pub api_key: String,
    pub app: AppCredentials,
}

/// An account holding `credits` and one app on the server at `base_url`.
pub async fn merchant(deployment: &Deployment, base_url: &str, credits: u64) -> anyhow::Result<Merchant> {
    let account = deployment.cli(&["account", "create", "--email", "bench@example.com"])?;
    let api_key = account["apiKey"].as_str().context("no apiKey")?.to_string();
    let account_id = account["accountId"].as_str().context("no accountId")?;
    deployment.cli(&["credits", "grant", "--account", account_id, "--amount", &credits.to_string()])?;
    let client = reqwest::Client::new();
    // With Kafka, the account (committed by the operator command) reaches a node through the
    // relay, not at once: wait until the node knows its API key.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.get(format!("{base_url}/v1/apps")).bearer_auth(&api_key).send().await?.status() == 401 {
        if std::time::Instant::now() > deadline {
            bail!("{base_url} did not learn of the account made by the operator command within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let app = api(&client, base_url, &api_key, "/v1/apps", json!({ "name": "Benchmark app" })).await?;
    let text = |field: &str| app[field].as_str().map(str::to_string).context("app field missing");
    let app = AppCredentials::new(&text("appId")?, &text("appSecret")?, &text("publicKey")?)?;
    Ok(Merchant { api_key, app })
}

/// Creates `count` licenses with `slots` machine slots each, `concurrency` requests at a time;
/// returns their keys.
pub async fn licenses(
    base_url: &str,
    merchant: &Merchant,
    count: usize,
    slots: u8,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(usize::MAX).build()?;
    let remaining = Arc::new(AtomicUsize::new(count));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, remaining) = (client.clone(), remaining.clone());
        let (base_url, api_key, app_id) = (base_url.to_string(), merchant.api_key.clone(), merchant.app.app_id.clone());
        workers.spawn(async move {
            let mut keys = Vec::new();
            loop {
                let take = remaining
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| Some(left.saturating_sub(PER_REQUEST)))
                    .unwrap_or(0)
                    .min(PER_REQUEST);
                if take == 0 {
                    return Ok::<_, anyhow::Error>(keys);
                }
                let body = json!({ "appId": app_id, "quantity": take, "maxHwidSlots": slots });
                let created = api(&client, &base_url, &api_key, "/v1/licenses", body).await?;
                let listed = created["licenses"].as_array().context("no licenses in the answer")?;
                keys.extend(listed.iter().filter_map(|l| l["licenseKey"].as_str().map(str::to_string)));
            }
        });
    }
    let mut keys = Vec::with_capacity(count);
    while let Some(joined) = workers.join_next().await {
        keys.extend(joined??);
    }
    if keys.len() != count {
        bail!("asked for {count} licenses, got {}", keys.len());
    }
    Ok(keys)
}

/// `per_license` machines on each license.
pub fn machines(keys: &[String], per_license: usize) -> Vec<Machine> {
    keys.iter().flat_map(|key| (0..per_license).map(move |_| Machine::new(key))).collect()
}

async fn api(
    client: &reqwest::Client,
    base_url: &str,
    api_key: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let answer = client.post(format!("{base_url}{path}")).bearer_auth(api_key).json(&body).send().await?;
    let status = answer.status();
    let body: Value = answer.json().await?;
    if !status.is_success() {
        bail!("POST {path} answered {status}: {body}");
    }
    Ok(body)
}
