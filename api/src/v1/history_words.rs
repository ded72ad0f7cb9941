//! A license's history in words for people: each event's name, who did it, and a one-line
//! summary that leaves out nonces, token ids and internal ids (`?detail=full` adds the raw data).

use crate::AppState;
use licensd_domain::AccountId;
use serde_json::Value;

/// The event's name as the dashboard shows it.
pub(crate) fn event_name(event_type: &str) -> &str {
    match event_type {
        "LicenseCreated" => "License created",
        "LicenseRevoked" => "License revoked",
        "LicenseActivated" => "License re-activated",
        "LicenseExtended" => "Expiry changed",
        "HwidBound" => "Machine bound",
        "HwidReset" => "Machines reset",
        "HwidReleased" => "Machine released",
        "PortalResetRecorded" => "Reset from the customer portal",
        "LicenseDeleted" => "License deleted",
        "VariablesSet" => "Variables replaced",
        "ValidationBilled" => "Validated",
        "HeartbeatBilled" => "Heartbeats billed",
        "OfflineActivated" => "Activated offline",
        "OfflineFileMinted" => "Offline file issued",
        "CommerceLinked" => "Linked to a purchase",
        "CommerceUnlinked" => "Purchase link erased",
        "BuyerEmailSet" => "Buyer email set",
        "BuyerEmailRemoved" => "Buyer email removed",
        "LicenseLevelsSet" => "Levels set",
        "LicenseMaxSessionsSet" => "Session limit set",
        "LicenseLinkedToUser" => "Linked to an app user",
        "LicenseUnlinkedFromUser" => "Unlinked from an app user",
        other => other,
    }
}

/// Who did it, in words: the API key by its visible prefix, the dashboard, a client, the portal,
/// the command line, or licensd itself (a purchase names its provider instead).
pub(crate) fn actor_name(state: &AppState, account: AccountId, actor: &str, data: &Value) -> String {
    if let Some(provider) = data.get("provider").and_then(Value::as_str) {
        return provider_name(provider).to_string();
    }
    match actor.split_once(':') {
        Some(("api_key", id)) => {
            let prefix =
                state.hot.api_keys_of(account).into_iter().find(|k| k.key_id.to_string() == id).map(|k| k.prefix);
            match prefix {
                Some(prefix) => format!("API key {prefix}…"),
                None => "A revoked API key".into(),
            }
        }
        Some(("dashboard", _)) => "Dashboard".into(),
        _ => match actor {
            "client" => "Client (SDK)".into(),
            "portal" => "Customer portal".into(),
            "operator" => "Operator (command line)".into(),
            "system" => "licensd".into(),
            other => other.into(),
        },
    }
}

fn provider_name(provider: &str) -> &str {
    match provider {
        "stripe" => "Stripe",
        "lemon" => "Lemon Squeezy",
        other => other,
    }
}

fn plural(n: u64, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// One line about the event from the fields people care about; never nonces or token ids.
pub(crate) fn summary(event_type: &str, data: &Value) -> String {
    let text = |field: &str| data.get(field).and_then(Value::as_str).unwrap_or_default().to_string();
    let number = |field: &str| data.get(field).and_then(Value::as_u64).unwrap_or(0);
    match event_type {
        "LicenseCreated" => {
            let slots = plural(number("max_hwid_slots"), "machine");
            match data.get("expires_at").and_then(Value::as_str) {
                Some(at) => format!("Up to {slots}, expires {at}"),
                None => format!("Up to {slots}, no expiry"),
            }
        }
        "LicenseExtended" => match data.get("expires_at").and_then(Value::as_str) {
            Some(at) => format!("Expires {at}"),
            None => "No expiry".into(),
        },
        "HwidBound" | "HwidReleased" => format!("Machine {}", text("hwid")),
        "OfflineActivated" => format!("Machine {}, {}", text("hwid"), plural(number("credits"), "credit")),
        "OfflineFileMinted" => match data.get("hwid").and_then(Value::as_str) {
            Some(hwid) => format!("For machine {hwid}, {}", plural(number("credits"), "credit")),
            None => format!("For any machine, {}", plural(number("credits"), "credit")),
        },
        "ValidationBilled" => plural(number("credits"), "credit"),
        "HeartbeatBilled" => {
            format!("{}, {}", plural(number("heartbeats"), "heartbeat"), plural(number("credits"), "credit"))
        }
        "VariablesSet" => {
            plural(data.get("variables").and_then(Value::as_object).map_or(0, |v| v.len() as u64), "variable")
        }
        "LicenseLevelsSet" => {
            let levels: Vec<&str> =
                data.get("levels").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
            if levels.is_empty() {
                "No levels".into()
            } else {
                format!("Levels: {}", levels.join(", "))
            }
        }
        "LicenseMaxSessionsSet" => match data.get("max_sessions").and_then(Value::as_u64) {
            Some(n) => format!("At most {}", plural(n, "live session")),
            None => "No session limit".into(),
        },
        "CommerceLinked" => format!("{} purchase", provider_name(&text("provider"))),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn summaries_leave_out_nonces_and_token_ids() {
        let billed = json!({ "account_id": "a", "credits": 1, "nonce": "0123456789abcdef", "at": "t" });
        assert_eq!(summary("ValidationBilled", &billed), "1 credit");
        let minted = json!({ "hwid": null, "jti": "secret-jti", "credits": 2 });
        assert_eq!(summary("OfflineFileMinted", &minted), "For any machine, 2 credits");
        assert_eq!(event_name("HwidBound"), "Machine bound");
        assert_eq!(event_name("SomethingNew"), "SomethingNew");
    }
}
