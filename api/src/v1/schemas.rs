//! Component schemas of the OpenAPI document: the shapes the handlers emit and accept.

use licensd_domain::web_address::WEB_ADDRESS_PATTERN;
use serde_json::{json, Value};

fn string() -> Value {
    json!({ "type": "string" })
}

/// `GET /v1/overview`'s answer.
fn overview() -> Value {
    let count = || json!({ "type": "integer", "minimum": 0 });
    // Minor units (cents) per ISO 4217 currency, with the payments summed.
    let money = || {
        json!({ "type": "array", "items": { "type": "object", "additionalProperties": false,
        "required": ["currency", "amountMinor", "purchases"],
        "properties": { "currency": { "type": "string", "pattern": "^[A-Z]{3}$" }, "amountMinor": count(), "purchases": count() } } })
    };
    let day = json!({ "type": "object", "additionalProperties": false,
        "required": ["day", "validations", "heartbeats", "creditsBurned", "newLicenses", "commerceEvents", "revenue",
                     "purchasesOfUnknownAmount"],
        "properties": { "day": { "type": "string", "format": "date" }, "validations": count(), "heartbeats": count(),
                        "creditsBurned": count(), "newLicenses": count(), "commerceEvents": count(),
                        "revenue": money(), "purchasesOfUnknownAmount": count() } });
    let top = json!({ "type": "object", "additionalProperties": false,
        "required": ["licenseKey", "label", "validations", "heartbeats"],
        "properties": { "licenseKey": { "type": "string" }, "label": nullable("string"), "validations": count(), "heartbeats": count() } });
    json!({
        "type": "object", "additionalProperties": false,
        "required": ["appId", "days", "from", "to", "licenses", "activeMachines", "liveSessions", "credits", "revenue", "daily",
                     "topLicenses"],
        "properties": {
            "appId": nullable("string"), "days": { "type": "integer", "minimum": 1 },
            "from": { "type": "string", "format": "date" }, "to": { "type": "string", "format": "date" },
            "licenses": { "type": "object", "additionalProperties": false, "required": ["active", "expired", "revoked"],
                          "properties": { "active": count(), "expired": count(), "revoked": count() } },
            "activeMachines": count(), "liveSessions": count(),
            "credits": { "type": "object", "additionalProperties": false, "required": ["balance", "burnedInPeriod", "burnPerDay", "lastsDays"],
                         "properties": { "balance": { "type": "integer" }, "burnedInPeriod": count(), "burnPerDay": { "type": "number", "minimum": 0 },
                                         "lastsDays": { "type": "integer", "minimum": 0, "nullable": true } } },
            "revenue": { "type": "object", "additionalProperties": false, "required": ["byCurrency", "purchasesOfUnknownAmount"],
                         "properties": { "byCurrency": money(), "purchasesOfUnknownAmount": count() } },
            "daily": { "type": "array", "items": day },
            "topLicenses": { "type": "array", "items": top },
        },
    })
}

fn nullable(kind: &str) -> Value {
    json!({ "type": kind, "nullable": true })
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

/// An IPv4 or IPv6 address of 7 to 45 characters, as the security lists accept (a CIDR range
/// such as `203.0.113.0/24` is accepted too).
fn ip_address() -> Value {
    json!({ "type": "string", "minLength": 7, "maxLength": 45, "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }] })
}

/// A machine id, as the security lists accept.
fn hwid() -> Value {
    json!({ "type": "string", "minLength": 1, "maxLength": 128 })
}

/// An email address as the server reads one: one `@`, no spaces, a dot inside the domain.
fn email() -> Value {
    json!({ "type": "string", "maxLength": 254, "pattern": "^[^@\\s]+@[^@\\s.][^@\\s]*\\.[^@\\s]*[^@\\s.]$" })
}

/// Variables: at most 50 scalar values under keys of 1 to 64 characters.
fn variables() -> Value {
    json!({
        "type": "object", "maxProperties": licensd_domain::MAX_VARIABLES,
        "propertyNames": { "minLength": 1, "maxLength": licensd_domain::MAX_VARIABLE_KEY_LEN },
        "additionalProperties": { "oneOf": [{ "type": "string" }, { "type": "number" }, { "type": "boolean" }] },
    })
}

pub fn all() -> Value {
    let license = json!({
        "type": "object",
        "required": ["licenseKey", "appId", "status", "expiresAt", "maxHwidSlots", "hwidList", "levels", "maxSessions", "createdAt"],
        "properties": {
            "licenseKey": string(), "appId": string(),
            "status": { "type": "string", "enum": ["active", "revoked"] },
            "expiresAt": nullable("string"), "maxHwidSlots": { "type": "integer" }, "hwidList": strings(),
            "hwid": nullable("string"), "label": nullable("string"), "levels": strings(),
            "maxSessions": nullable("integer"), "createdAt": string(),
            "machines": { "type": "array",
                "description": "GET /v1/licenses/{key} only: the bound machines, each with when it was bound and when it last validated",
                "items": { "type": "object", "required": ["hwid", "boundAt", "lastSeenAt"],
                           "properties": { "hwid": string(), "boundAt": nullable("string"), "lastSeenAt": nullable("string") } } },
        },
    });
    let settings = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "offlineActivation": { "type": "boolean" },
            "hourlyBurnCap": { "type": "integer", "minimum": 0, "nullable": true },
            "dailyBurnCap": { "type": "integer", "minimum": 0, "nullable": true },
            "commerceEmailsDisabled": { "type": "boolean" },
            "supportContact": { "type": "string", "maxLength": 200, "nullable": true },
            "liveSessionQuota": { "type": "integer", "minimum": 1, "maximum": u32::MAX, "nullable": true },
            "userSignupClosed": { "type": "boolean" },
            "userLicenseRequired": { "type": "boolean" },
            "fileDownloadUrl": { "type": "boolean" },
        },
    });
    let portal_policy = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "resetLimit": { "type": "integer", "minimum": 0, "maximum": 100 },
            "resetWindowDays": { "type": "integer", "minimum": 1, "maximum": 3650 },
            "cooldownHours": { "type": "integer", "minimum": 0, "maximum": 8760 },
            "supportUrl": { "type": "string", "maxLength": 500, "pattern": WEB_ADDRESS_PATTERN, "nullable": true },
            "supportEmail": { "type": "string", "maxLength": 254, "format": "email", "nullable": true },
            "displayName": { "type": "string", "maxLength": 80, "nullable": true },
            "accentColor": { "type": "string", "pattern": "^#[0-9A-Fa-f]{6}$", "nullable": true },
            "emailBuyers": { "type": "boolean" },
        },
    });
    let history_event = json!({
        "type": "object",
        "required": ["version", "type", "name", "at", "actor", "actorName", "summary"],
        "properties": {
            "version": { "type": "integer" }, "type": string(), "name": string(), "at": string(), "actor": string(),
            "actorName": string(), "summary": string(),
            "data": { "type": "object", "description": "the event as recorded; only with ?detail=full" },
        },
    });
    let app = json!({
        "type": "object",
        "required": ["appId", "name", "disabled", "publicKeys", "settings", "version", "hasWebsocketApiKey", "createdAt"],
        "properties": {
            "appId": string(), "name": string(), "disabled": { "type": "boolean" },
            "version": string(), "hasWebsocketApiKey": { "type": "boolean" },
            "publicKeys": { "type": "array", "items": {
                "type": "object", "required": ["keyId", "publicKey"],
                "properties": { "keyId": string(), "publicKey": string() } } },
            "settings": settings, "createdAt": string(),
        },
    });
    let webhook_events =
        json!({ "type": "array", "items": { "type": "string", "enum": licensd_domain::app::WEBHOOK_EVENTS } });
    let webhook = json!({
        "type": "object",
        "required": ["webhookId", "appId", "url", "events", "enabled", "createdAt"],
        "properties": {
            "webhookId": string(), "appId": string(), "url": string(), "events": webhook_events,
            "enabled": { "type": "boolean" }, "createdAt": string(),
            "lastDeliveryAt": nullable("string"), "lastDeliveryStatus": nullable("integer"),
        },
    });
    // Self-ban comments by entry: read-only (a PUT may send back what a GET showed; ignored).
    let by_entry = json!({ "type": "object", "additionalProperties": string() });
    let comments = json!({
        "type": "object", "required": ["hwid", "ip"], "properties": { "hwid": by_entry, "ip": by_entry },
    });
    let lists = json!({
        "hwidBlacklist": strings(), "hwidWhitelist": strings(), "ipBlacklist": strings(), "ipWhitelist": strings(),
        "blacklistComments": comments,
    });
    let hwids = json!({ "type": "array", "items": hwid() });
    let ips = json!({ "type": "array", "items": ip_address() });
    let list_updates = json!({
        "hwidBlacklist": hwids, "hwidWhitelist": hwids, "ipBlacklist": ips, "ipWhitelist": ips,
        "blacklistComments": { "type": "object", "readOnly": true },
    });
    let credits = json!({
        "type": "object", "required": ["balance", "lowBalanceThreshold", "belowThreshold"],
        "properties": { "balance": { "type": "integer" }, "lowBalanceThreshold": nullable("integer"), "belowThreshold": { "type": "boolean" } },
    });
    let transactions = json!({ "type": "object", "required": ["transactions", "cursor"], "properties": { "cursor": nullable("string"), "transactions": { "type": "array", "items": {
            "type": "object", "required": ["delta", "kind", "at"],
            "properties": { "delta": { "type": "integer" }, "kind": string(), "reason": nullable("string"), "licenseKey": nullable("string"), "at": string() } } } } });
    let actor_kind =
        json!({ "type": "string", "enum": ["operator", "api_key", "dashboard", "portal", "client", "system"] });
    let audit_log = json!({ "type": "object", "required": ["entries", "cursor"], "properties": { "cursor": nullable("string"), "entries": { "type": "array", "items": {
            "type": "object", "required": ["stream", "event", "actor", "actorKind", "at"],
            "properties": { "stream": string(), "event": string(), "actor": string(), "actorKind": actor_kind, "at": string() } } } } });
    let deliveries = json!({ "type": "object", "required": ["deliveries", "cursor", "total"], "properties": {
            "cursor": nullable("string"), "total": { "type": "integer", "minimum": 0 }, "deliveries": { "type": "array", "items": {
            "type": "object", "required": ["deliveryId", "event", "status", "attempts", "createdAt"],
            "properties": {
                "deliveryId": string(), "event": string(), "status": { "type": "string", "enum": ["pending", "delivered", "failed"] },
                "attempts": { "type": "integer" }, "createdAt": string(), "lastAttemptAt": nullable("string"),
                "lastStatus": nullable("integer"), "lastError": nullable("string"), "nextAttemptAt": nullable("string"),
            } } } } });
    let live_session = json!({
        "type": "object",
        "required": ["sessionId", "ip", "connected", "connectedAt", "lastActivityAt"],
        "properties": {
            "sessionId": { "type": "string" },
            "clientId": { "type": ["string", "null"] },
            "license": { "type": ["string", "null"] },
            "userId": { "type": ["string", "null"], "description": "the app user signed in on the session (packet 3)" },
            "ip": { "type": "string" },
            "connected": { "type": "boolean" },
            "connectedAt": { "type": "string", "format": "date-time" },
            "lastActivityAt": { "type": "string", "format": "date-time" }
        }
    });
    let mut schemas = json!({
        "Ok": { "type": "object", "required": ["ok"], "properties": { "ok": { "type": "boolean" } } },
        "Error": { "type": "object", "required": ["error", "message"], "properties": { "error": string(), "message": string() } },
        "App": app,
        "AppList": { "type": "object", "required": ["apps"], "properties": { "apps": { "type": "array", "items": { "$ref": "#/components/schemas/App" } } } },
        "AppCreated": {
            "type": "object",
            "required": ["appId", "name", "appSecret", "publicKey", "keyId", "websocketApiKey", "createdAt"],
            "properties": { "appId": string(), "name": string(), "appSecret": string(), "publicKey": string(), "keyId": string(),
                            "websocketApiKey": { "$ref": "#/components/schemas/WebsocketApiKey" }, "createdAt": string() },
        },
        "SigningKeys": { "type": "object", "required": ["signingKeys"], "properties": { "signingKeys": { "type": "array", "items": {
            "type": "object", "required": ["keyId", "publicKey", "state", "active", "createdAt"],
            "properties": { "keyId": string(), "publicKey": string(),
                            "state": { "type": "string", "enum": ["signing", "verifying", "retired"] },
                            "active": { "type": "boolean", "description": "true for the signing key" },
                            "createdAt": nullable("string") } } } } },
        "Settings": settings,
        "PortalPolicy": portal_policy,
        "HistoryEvent": history_event,
        "Variables": variables(),
        "SecurityLists": { "type": "object", "required": ["hwidBlacklist", "hwidWhitelist", "ipBlacklist", "ipWhitelist"], "properties": lists },
        "SecurityListsUpdate": { "type": "object", "additionalProperties": false, "properties": list_updates },
        "ListEntry": { "oneOf": [
            { "type": "object", "additionalProperties": false, "required": ["type", "value"],
              "properties": { "type": { "type": "string", "enum": ["hwid"] }, "value": hwid() } },
            { "type": "object", "additionalProperties": false, "required": ["type", "value"],
              "properties": { "type": { "type": "string", "enum": ["ip"] }, "value": ip_address() } },
        ] },
        "WebhookCreate": {
            "type": "object", "additionalProperties": false, "required": ["url", "events"],
            "properties": { "url": string(), "events": webhook_events, "enabled": { "type": "boolean" } },
        },
        "WebhookUpdate": {
            "type": "object", "additionalProperties": false,
            "properties": { "url": string(), "events": webhook_events, "enabled": { "type": "boolean" } },
        },
        "Webhook": webhook,
        "WebhookCreated": { "allOf": [{ "$ref": "#/components/schemas/Webhook" }, { "type": "object", "required": ["secret"], "properties": { "secret": string() } }] },
        "WebhookList": { "type": "object", "required": ["webhooks"], "properties": { "webhooks": { "type": "array", "items": { "$ref": "#/components/schemas/Webhook" } } } },
        "WebhookTest": { "type": "object", "required": ["ok", "status"], "properties": { "ok": { "type": "boolean" }, "status": nullable("integer"), "error": string() } },
        "Deliveries": deliveries,
        "Overview": overview(),
        "License": license,
        "LicensePage": { "type": "object", "required": ["licenses", "cursor", "total"], "properties": {
            "licenses": { "type": "array", "items": { "$ref": "#/components/schemas/License" } }, "cursor": nullable("string"),
            "total": { "type": "integer", "minimum": 0 } } },
        "MintFile": {
          "type": "object",
          "properties": { "hwid": nullable("string"), "activationRequest": nullable("string"), "anyMachine": { "type": "boolean" } },
          "oneOf": [
            { "type": "object", "required": ["hwid"], "properties": { "hwid": { "type": "string", "minLength": 1, "maxLength": 256 } } },
            { "type": "object", "required": ["activationRequest"], "properties": { "activationRequest": { "type": "string", "minLength": 1 } } },
            { "type": "object", "required": ["anyMachine"], "properties": { "anyMachine": { "type": "boolean", "enum": [true] } } },
        ] },
        "ApiKeyCreated": {
            "type": "object", "required": ["apiKeyId", "apiKey", "prefix", "scopes"],
            "properties": { "apiKeyId": string(), "apiKey": string(), "prefix": string(), "scopes": strings() },
        },
        "ApiKeyList": { "type": "object", "required": ["apiKeys"], "properties": { "apiKeys": { "type": "array", "items": {
            "type": "object", "required": ["apiKeyId", "prefix", "scopes", "createdAt"],
            "properties": { "apiKeyId": string(), "prefix": string(), "scopes": strings(), "createdAt": string() } } } } },
        "Credits": credits,
        "Transactions": transactions,
        "AuditLog": audit_log,
    });
    // Added apart: one more entry in the `json!` above outgrows its macro's recursion limit.
    schemas["LiveSession"] = live_session;
    schemas["AppUser"] = json!({
        "type": "object",
        "required": ["userId", "appId", "login", "comment", "levels", "status", "licenseRequired", "licenses", "createdAt"],
        "properties": {
            "userId": string(), "appId": string(), "login": nullable("string"), "comment": nullable("string"),
            "levels": strings(), "status": { "type": "string", "enum": ["active", "blacklisted"] },
            "licenseRequired": { "type": "boolean" }, "licenses": strings(), "createdAt": string(),
            "liveSessions": { "type": "integer", "minimum": 0 },
        },
    });
    files(&mut schemas);
    schemas
}

/// Protected files (`v1/files.rs`): a file, its versions, its access policy.
fn files(schemas: &mut Value) {
    let version = json!({
        "type": "object", "required": ["version", "size", "sha256", "uploadedAt"],
        "properties": {
            "version": { "type": "integer", "minimum": 1 }, "size": { "type": "integer", "minimum": 0 },
            "sha256": { "type": "string", "pattern": "^[0-9a-f]{64}$" }, "uploadedAt": string(),
        },
    });
    let mut file = json!({
        "type": "object",
        "required": ["name", "appId", "version", "size", "sha256", "uploadedAt", "policy", "transferCount", "bytesServed", "lastTransferredAt"],
        "properties": {
            "name": string(), "appId": string(), "version": { "type": "integer", "minimum": 1 },
            "size": { "type": "integer", "minimum": 0 }, "sha256": { "type": "string", "pattern": "^[0-9a-f]{64}$" },
            "uploadedAt": string(), "policy": { "$ref": "#/components/schemas/FilePolicy" },
            "transferCount": { "type": "integer", "minimum": 0 }, "bytesServed": { "type": "integer", "minimum": 0 },
            "lastTransferredAt": nullable("string"),
        },
    });
    schemas["FileSummary"] = file.clone();
    file["required"].as_array_mut().into_iter().for_each(|r| r.push(json!("versions")));
    file["properties"]["versions"] = json!({ "type": "array", "items": version });
    schemas["File"] = file;
    schemas["FileList"] = json!({
        "type": "object", "required": ["files"],
        "properties": { "files": { "type": "array", "items": { "$ref": "#/components/schemas/FileSummary" } } },
    });
}

/// The schemas of licenses' and apps' live-session fields, sized by the deployment's limits.
pub fn live_fields(limits: &crate::v1::LiveModelLimits) -> Value {
    let no_control = super::spec::NO_CONTROL_CHARACTERS;
    let levels = json!({ "type": "array", "maxItems": limits.max_license_levels, "items": {
        "type": "string", "minLength": 1, "maxLength": licensd_domain::license::MAX_LEVEL_CHARS, "pattern": no_control } });
    let seats = json!({ "type": "integer", "minimum": 1, "maximum": limits.max_license_sessions, "nullable": true });
    let access = json!({ "type": "string", "enum": ["auth_required", "auth_not_required"] });
    let mut policy_levels = levels.clone();
    policy_levels["minItems"] = json!(1);
    let kind = |name: &str| json!({ "type": "string", "enum": [name] });
    json!({
        // A protected file's access policy (`v1/files.rs`): exactly the fields of its kind.
        "FilePolicy": { "oneOf": [
            { "type": "object", "required": ["kind"], "additionalProperties": false,
              "properties": { "kind": kind("anyAuthorized") } },
            { "type": "object", "required": ["kind"], "additionalProperties": false,
              "properties": { "kind": kind("public") } },
            { "type": "object", "required": ["kind", "levels"], "additionalProperties": false,
              "properties": { "kind": kind("levels"), "levels": policy_levels } },
        ] },
        "LicenseCreate": {
            "type": "object", "required": ["appId"],
            "properties": {
                "appId": { "type": "string", "format": "uuid" }, "quantity": { "type": "integer", "minimum": 1, "maximum": 100 },
                "expiresAt": { "type": "string", "format": "date-time", "nullable": true }, "maxHwidSlots": { "type": "integer", "minimum": 1, "maximum": 16 },
                "label": { "type": "string", "maxLength": 128 }, "levels": levels, "maxSessions": seats,
                "email": email(),
            },
        },
        "LicenseAction": { "oneOf": [
            { "type": "object", "required": ["action"],
              "properties": { "action": { "type": "string", "enum": ["revoke", "activate", "reset-hwid"] } } },
            { "type": "object", "required": ["action", "expiresAt"],
              "properties": { "action": { "type": "string", "enum": ["extend"] }, "expiresAt": { "type": "string", "format": "date-time" } } },
            // Without an action: the live-session fields, set together (`maxSessions: null` removes the limit).
            { "type": "object", "additionalProperties": false, "minProperties": 1,
              "properties": { "levels": levels, "maxSessions": seats } },
        ] },
        "VariableAccess": {
            "type": "object", "maxProperties": licensd_domain::MAX_VARIABLES, "additionalProperties": access,
            "propertyNames": { "minLength": 1, "maxLength": licensd_domain::MAX_VARIABLE_KEY_LEN },
        },
        "WebsocketApiKey": { "type": "string", "minLength": 21, "maxLength": 21, "pattern": "^BA[0-9A-Z]{19}$" },
    })
}

/// The commerce operations' schemas (kept apart: one `json!` of everything outgrows its macro).
pub fn commerce() -> Value {
    json!({
        "ConnectionUpdate": {
            "type": "object", "additionalProperties": false, "required": ["signingSecret"],
            "properties": { "signingSecret": { "type": "string", "minLength": 1, "maxLength": 512 }, "apiKey": nullable("string") },
        },
        "Connection": {
            "type": "object", "required": ["connectionId", "provider", "webhookPath", "hasApiKey"],
            "properties": { "connectionId": string(), "provider": { "type": "string", "enum": ["stripe", "lemon"] },
                            "webhookPath": string(), "hasApiKey": { "type": "boolean" } },
        },
        "MappingCreate": {
            "type": "object", "additionalProperties": false, "required": ["appId", "provider", "priceId", "kind"],
            // Subscriptions and add-ons extend by a number of days, so they need it.
            "anyOf": [
                { "properties": { "kind": { "enum": ["one_time", "revocation"] } } },
                { "required": ["days"], "properties": { "days": { "type": "integer" } } },
            ],
            "properties": {
                "appId": { "type": "string", "format": "uuid" }, "provider": { "type": "string", "enum": ["stripe", "lemon"] },
                "priceId": { "type": "string", "minLength": 1, "maxLength": 128 }, "productId": nullable("string"),
                "kind": { "type": "string", "enum": ["one_time", "subscription", "add_on", "revocation"] },
                "days": { "type": "integer", "minimum": 1, "maximum": 36500, "nullable": true },
                "hwidSlots": { "type": "integer", "minimum": 1, "maximum": 16 },
                "label": { "type": "string", "maxLength": 128, "nullable": true },
                "variables": { "$ref": "#/components/schemas/Variables" }, "respectQuantity": { "type": "boolean" },
            },
        },
        "Mapping": {
            "type": "object", "required": ["mappingId", "appId", "provider", "priceId", "kind", "hwidSlots", "respectQuantity"],
            "properties": {
                "mappingId": string(), "appId": string(), "provider": string(), "priceId": string(),
                "productId": nullable("string"), "kind": string(), "days": nullable("integer"),
                "hwidSlots": { "type": "integer" }, "label": nullable("string"), "variables": { "type": "object" },
                "respectQuantity": { "type": "boolean" },
            },
        },
        "CommerceEvent": {
            "type": "object", "required": ["eventId", "provider", "type", "status", "attempts", "retryCount", "licenseKeys", "redacted", "receivedAt"],
            "properties": {
                "eventId": string(), "externalEventId": nullable("string"), "provider": string(), "type": string(),
                "status": { "type": "string", "enum": ["pending", "processed", "skipped", "failed", "held"] },
                "reason": nullable("string"), "error": nullable("string"), "attempts": { "type": "integer" },
                "retryCount": { "type": "integer" }, "retryAt": nullable("string"), "licenseKeys": strings(),
                "redacted": { "type": "boolean" }, "receivedAt": string(), "updatedAt": nullable("string"),
            },
        },
        "EventFilter": {
            "type": "object", "additionalProperties": false,
            "properties": {
                "provider": { "type": "string", "enum": ["stripe", "lemon"] }, "type": string(),
                "status": { "type": "string", "enum": ["pending", "processed", "skipped", "failed", "held"] }, "licenseKey": string(),
            },
        },
        "Forget": {
            "type": "object", "additionalProperties": false,
            "properties": { "customerEmail": nullable("string"), "providerCustomerId": nullable("string"), "userLogin": nullable("string"), "reason": nullable("string") },
            "anyOf": [
                { "required": ["customerEmail"], "properties": { "customerEmail": email() } },
                { "required": ["providerCustomerId"], "properties": { "providerCustomerId": { "type": "string", "minLength": 1 } } },
                { "required": ["userLogin"], "properties": { "userLogin": { "type": "string", "minLength": 1, "pattern": "\\S" } } },
            ],
        },
        "Forgotten": {
            "type": "object", "required": ["ok", "licensesRedacted", "ledgerRowsScanned", "ledgerRowsRedacted"],
            "properties": { "ok": { "type": "boolean" }, "licensesRedacted": { "type": "integer" },
                            "ledgerRowsScanned": { "type": "integer" }, "ledgerRowsRedacted": { "type": "integer" },
                            "usersErased": { "type": "integer" } },
        },
    })
}
