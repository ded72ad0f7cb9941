//! The Developer API as one table: each operation's route and its OpenAPI description side by
//! side. The router and `/v1/openapi.json` are both built from it, so they cannot disagree.

use super::{
    account, app_settings, apps, commerce, files, ledgers, license_list, licenses, overview, signing_keys, users,
    webhooks, LiveModelLimits,
};
use crate::AppState;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use serde_json::{json, Map, Value};

/// A query parameter: its name, its kind (how `parameters` describes it), whether it is required.
type QueryParam = (&'static str, &'static str, bool);

const LICENSE_KEY: QueryParam = ("licenseKey", "string", false);

pub struct Operation {
    method: &'static str,
    path: &'static str,
    route: MethodRouter<AppState>,
    summary: &'static str,
    request: Option<Value>,
    status: u16,
    response: Value,
    /// In the order the document lists them.
    query: Vec<QueryParam>,
    /// The body is raw bytes streamed to the handler (a file upload): no JSON schema, and no
    /// `Idempotency-Key` (the idempotency guard would have to buffer the body).
    streamed: bool,
    /// Answers `text/csv` rather than JSON.
    csv: bool,
}

fn op(method: &'static str, path: &'static str, route: MethodRouter<AppState>, summary: &'static str) -> Operation {
    Operation {
        method,
        path,
        route,
        summary,
        request: None,
        status: 200,
        response: reference("Ok"),
        query: Vec::new(),
        streamed: false,
        csv: false,
    }
}

impl Operation {
    fn body(mut self, schema: Value) -> Self {
        self.request = Some(schema);
        self
    }

    fn returns(mut self, status: u16, schema: Value) -> Self {
        self.status = status;
        self.response = schema;
        self
    }

    /// A document read and replaced whole: the body and the answer are the same schema.
    fn exchanges(self, schema: &str) -> Self {
        self.body(reference(schema)).returns(200, reference(schema))
    }

    fn streamed(mut self) -> Self {
        self.streamed = true;
        self
    }

    fn csv(mut self) -> Self {
        self.csv = true;
        self.response = json!({ "type": "string" });
        self
    }

    fn query(mut self, query: &[QueryParam]) -> Self {
        self.query.extend_from_slice(query);
        self
    }

    /// The paging parameters every listing shares; `limit` is of kind `limit_kind` (an export
    /// allows more rows than a page).
    fn page(self, limit_kind: &'static str) -> Self {
        self.query(&[("limit", limit_kind, false), ("cursor", "string", false), ("order", "order", false)])
    }
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

/// An object that refuses fields it does not list (the handler's `deny_unknown_fields`).
fn closed(mut schema: Value) -> Value {
    schema["additionalProperties"] = Value::Bool(false);
    schema
}

fn nullable(mut schema: Value) -> Value {
    schema["nullable"] = Value::Bool(true);
    schema
}

fn array(items: Value) -> Value {
    json!({ "type": "array", "items": items })
}

const GET: MethodFilter = MethodFilter::GET;
const POST: MethodFilter = MethodFilter::POST;
const PUT: MethodFilter = MethodFilter::PUT;
const DELETE: MethodFilter = MethodFilter::DELETE;
const PATCH: MethodFilter = MethodFilter::PATCH;

/// Every Developer API operation.
pub fn operations(limits: &LiveModelLimits) -> Vec<Operation> {
    const EVENT_FILTER: &[QueryParam] =
        &[("provider", "string", false), ("type", "string", false), ("status", "string", false), LICENSE_KEY];
    const LICENSE_SEARCH: &[QueryParam] = &[("appId", "string", true), ("search", "short-string", false)];
    const LICENSE_FILTER: &[QueryParam] = &[
        ("sort", "license-sort", false),
        ("status", "license-status", false),
        ("label", "short-string", false),
        ("email", "email", false),
        ("expiresAfter", "date-time", false),
        ("expiresBefore", "date-time", false),
    ];
    const TRANSACTION_FILTER: &[QueryParam] = &[("kind", "short-string", false), LICENSE_KEY];
    const AUDIT_FILTER: &[QueryParam] = &[
        ("actorKind", "actor-kinds", false),
        ("excludeActorKind", "actor-kinds", false),
        ("action", "short-string", false),
    ];
    const OVERVIEW: &[QueryParam] = &[("appId", "string", false), ("days", "days", false)];
    const USER_LIST: &[QueryParam] =
        &[("search", "string", false), ("limit", "integer", false), ("cursor", "string", false)];
    let string = json!({ "type": "string" });
    let user_login = json!({ "type": "string", "minLength": 4, "maxLength": 320, "pattern": NO_CONTROL_CHARACTERS });
    let user_password = json!({ "type": "string", "minLength": 6, "maxLength": 128 });
    let user_comment = json!({ "type": "string", "maxLength": 256, "pattern": NO_CONTROL_CHARACTERS });
    let levels = json!({ "type": "array", "maxItems": limits.max_license_levels,
        "items": { "type": "string", "minLength": 1, "maxLength": 16, "pattern": NO_CONTROL_CHARACTERS } });
    let app_name = json!({ "type": "string", "minLength": 1, "maxLength": 100, "pattern": "\\S" });
    let known_scopes: Vec<&str> = std::iter::once("*").chain(crate::extract::SCOPES).collect();
    let scopes = json!({ "type": "array", "minItems": 1, "items": { "type": "string", "enum": known_scopes } });
    // Trimmed by the server; no control character at all (not even a tab).
    let version =
        json!({ "type": "string", "maxLength": limits.max_app_version_chars, "pattern": NO_CONTROL_CHARACTERS });
    vec![
        op("post", "/apps", on(POST, apps::create), "Create an app (its secret is shown once)")
            .body(object(json!({ "name": app_name.clone() }), &["name"]))
            .returns(201, reference("AppCreated")),
        op("get", "/apps", on(GET, apps::list), "List your apps").returns(200, reference("AppList")),
        op("get", "/apps/{app_id}", on(GET, apps::get), "Get an app").returns(200, reference("App")),
        op("put", "/apps/{app_id}", on(PUT, apps::update), "Rename, disable or enable an app, or set its version")
            .body(json!({ "type": "object", "properties": { "name": nullable(app_name.clone()), "disabled": { "type": "boolean" }, "version": version }, "additionalProperties": false }))
            .returns(200, reference("App")),
        op("post", "/apps/{app_id}/websocket-key", on(POST, apps::rotate_websocket_key), "Rotate the WebSocket API key (shown once; the old one stops working)")
            .returns(200, object(json!({ "appId": string, "websocketApiKey": reference("WebsocketApiKey") }), &["appId", "websocketApiKey"])),
        op("post", "/apps/{app_id}/secret", on(POST, app_settings::rotate_secret), "Rotate the app secret (shown once)")
            .returns(200, object(json!({ "appId": string, "appSecret": string }), &["appId", "appSecret"])),
        op("get", "/apps/{app_id}/signing-keys", on(GET, signing_keys::list), "List the signing keys: which one signs, which only verify, which are retired")
            .returns(200, reference("SigningKeys")),
        op("post", "/apps/{app_id}/signing-keys", on(POST, signing_keys::add), "Add a signing key that does not sign yet (step one of a rotation)")
            .returns(201, reference("SigningKeys")),
        op("post", "/apps/{app_id}/signing-keys/{key_id}/promote", on(POST, signing_keys::promote), "Make a key the signer (step two; the previous signer still verifies)")
            .returns(200, reference("SigningKeys")),
        op("delete", "/apps/{app_id}/signing-keys/{key_id}", on(DELETE, signing_keys::retire), "Retire a key that does not sign")
            .returns(200, reference("SigningKeys")),
        op("get", "/apps/{app_id}/users", on(GET, users::list), "List the app's end users (search: the exact login)")
            .query(USER_LIST)
            .returns(200, object(json!({ "users": array(reference("AppUser")), "cursor": nullable(string.clone()) }), &["users", "cursor"])),
        op("post", "/apps/{app_id}/users", on(POST, users::create), "Create an end user")
            .body(closed(object(json!({
                "login": user_login.clone(),
                "password": user_password.clone(),
                "comment": nullable(user_comment.clone()),
                "levels": levels.clone(),
                "licenseRequired": { "type": "boolean" },
                "emailLogin": { "type": "boolean" },
            }), &["login", "password"])))
            .returns(201, reference("AppUser")),
        op("get", "/apps/{app_id}/users/{user_id}", on(GET, users::get), "Get an end user, with their licenses and live sessions")
            .returns(200, reference("AppUser")),
        op("patch", "/apps/{app_id}/users/{user_id}", on(PATCH, users::update), "Change an end user: levels, comment, blacklist, password, license requirement, unlink a license")
            .body(closed(json!({ "type": "object", "properties": {
                "levels": levels.clone(),
                "comment": nullable(user_comment.clone()),
                "status": { "type": "string", "enum": ["active", "blacklisted"] },
                "password": user_password.clone(),
                "licenseRequired": { "type": "boolean" },
                "unlinkLicense": { "type": "string", "pattern": "^[A-Za-z0-9]{4}-[A-Za-z0-9]{4}-[A-Za-z0-9]{4}-[A-Za-z0-9]{4}$" },
            }})))
            .returns(200, reference("AppUser")),
        op("delete", "/apps/{app_id}/users/{user_id}", on(DELETE, users::delete), "Delete an end user (their login, comment and password are erased)")
            .returns(200, reference("Ok")),
        op("put", "/apps/{app_id}/files/{name}", on(PUT, files::upload), "Upload a new version of a protected file (the body is the content, streamed; up to LICENSD_FILE_MAX_BYTES)")
            .streamed()
            .returns(201, reference("File")),
        op("get", "/apps/{app_id}/files", on(GET, files::list), "List the app's protected files")
            .returns(200, reference("FileList")),
        op("get", "/apps/{app_id}/files/{name}", on(GET, files::get), "Get a protected file: metadata, versions, delivery counters")
            .returns(200, reference("File")),
        op("patch", "/apps/{app_id}/files/{name}", on(PATCH, files::update), "Set a protected file's access policy")
            .body(closed(object(json!({ "policy": reference("FilePolicy") }), &["policy"])))
            .returns(200, reference("File")),
        op("delete", "/apps/{app_id}/files/{name}", on(DELETE, files::delete), "Delete a protected file and every version")
            .returns(200, reference("Ok")),
        op("get", "/apps/{app_id}/sessions", on(GET, crate::live::list_sessions), "List the app's live WebSocket sessions")
            .returns(200, object(json!({ "sessions": { "type": "array", "items": reference("LiveSession") } }), &["sessions"])),
        op("delete", "/apps/{app_id}/sessions/{session_id}", on(DELETE, crate::live::kick_session), "Disconnect one live session (event 1, then close 4100)"),
        op("get", "/apps/{app_id}/settings", on(GET, app_settings::get_settings), "Get app settings").returns(200, reference("Settings")),
        op("put", "/apps/{app_id}/settings", on(PUT, app_settings::put_settings), "Change app settings (omitted fields stay)")
            .exchanges("Settings"),
        op("get", "/apps/{app_id}/portal", on(GET, app_settings::get_portal), "Get the self-service portal policy")
            .returns(200, reference("PortalPolicy")),
        op("put", "/apps/{app_id}/portal", on(PUT, app_settings::put_portal), "Change the portal policy (omitted fields stay)")
            .exchanges("PortalPolicy"),
        op("get", "/apps/{app_id}/variables", on(GET, app_settings::get_variables), "Get app variables").returns(200, reference("Variables")),
        op("put", "/apps/{app_id}/variables", on(PUT, app_settings::put_variables), "Replace app variables")
            .exchanges("Variables"),
        op("get", "/apps/{app_id}/variable-access", on(GET, app_settings::get_variable_access), "Who may read each app variable over a live session")
            .returns(200, reference("VariableAccess")),
        op("put", "/apps/{app_id}/variable-access", on(PUT, app_settings::put_variable_access), "Replace the variables' access strategies (names left out: auth_required)")
            .exchanges("VariableAccess"),
        op("get", "/apps/{app_id}/security", on(GET, app_settings::get_security), "Get security lists").returns(200, reference("SecurityLists")),
        op("put", "/apps/{app_id}/security", on(PUT, app_settings::put_security), "Replace the security lists given")
            .body(reference("SecurityListsUpdate"))
            .returns(200, reference("SecurityLists")),
        op("post", "/apps/{app_id}/security/{list}", on(POST, app_settings::add_entry), "Add a blacklist or whitelist entry")
            .body(reference("ListEntry")),
        op("delete", "/apps/{app_id}/security/{list}", on(DELETE, app_settings::remove_entry), "Remove a blacklist or whitelist entry")
            .body(reference("ListEntry")),
        op("delete", "/apps/{app_id}/security/{list}/{entry_type}/{value}", on(DELETE, app_settings::remove_entry_named), "Remove one entry named in the path (type hwid or ip; percent-encode a range's '/')"),
        op("post", "/apps/{app_id}/webhooks", on(POST, webhooks::create), "Create a webhook (its secret is shown once)")
            .body(reference("WebhookCreate"))
            .returns(201, reference("WebhookCreated")),
        op("get", "/apps/{app_id}/webhooks", on(GET, webhooks::list), "List webhooks").returns(200, reference("WebhookList")),
        op("put", "/apps/{app_id}/webhooks/{webhook_id}", on(PUT, webhooks::update), "Update a webhook")
            .body(reference("WebhookUpdate")),
        op("delete", "/apps/{app_id}/webhooks/{webhook_id}", on(DELETE, webhooks::delete), "Delete a webhook"),
        op("post", "/apps/{app_id}/webhooks/{webhook_id}/test", on(POST, webhooks::test), "Send a signed test.ping")
            .returns(200, reference("WebhookTest")),
        op("get", "/apps/{app_id}/webhooks/{webhook_id}/deliveries", on(GET, webhooks::deliveries), "A webhook's delivery log, newest first by default")
            .page("integer")
            .query(&[("status", "delivery-status", false)])
            .returns(200, reference("Deliveries")),
        op("post", "/apps/{app_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", on(POST, webhooks::redeliver), "Queue a delivery again"),
        op("post", "/licenses", on(POST, licenses::create), "Create 1 to 100 licenses")
            .body(reference("LicenseCreate"))
            .returns(201, object(json!({ "licenses": array(reference("License")) }), &["licenses"])),
        op("get", "/licenses", on(GET, license_list::list), "List an app's licenses, newest first by default (search: key or label; email: the buyer's exact address)")
            .query(LICENSE_SEARCH)
            .page("integer")
            .query(LICENSE_FILTER)
            .returns(200, reference("LicensePage")),
        op("get", "/licenses.csv", on(GET, license_list::export), "Export an app's licenses as CSV (the listing's filters)")
            .query(LICENSE_SEARCH)
            .page("export-limit")
            .query(LICENSE_FILTER)
            .csv(),
        op("get", "/licenses/{key}", on(GET, licenses::get), "Get a license").returns(200, reference("License")),
        op("get", "/licenses/{key}/events", on(GET, licenses::history), "The license's event history, oldest first by default, in words (detail=full adds the raw data); paged (with a cursor in the answer) when limit or cursor is given")
            .query(&[("detail", "detail", false)])
            .page("integer")
            .returns(200, object(json!({ "events": array(reference("HistoryEvent")), "cursor": nullable(string.clone()) }), &["events"])),
        op("put", "/licenses/{key}", on(PUT, licenses::update), "Revoke, activate, extend or reset HWIDs; or set levels and maxSessions")
            .body(reference("LicenseAction"))
            .returns(200, object(json!({ "ok": { "type": "boolean" }, "license": reference("License") }), &["ok", "license"])),
        op("delete", "/licenses/{key}", on(DELETE, licenses::delete), "Delete a license"),
        op("delete", "/licenses/{key}/machines/{hwid}", on(DELETE, licenses::release_machine), "Release one bound machine (its slot is free again)")
            .returns(200, object(json!({ "ok": { "type": "boolean" }, "license": reference("License") }), &["ok", "license"])),
        op("get", "/licenses/{key}/variables", on(GET, licenses::get_variables), "Get license variables").returns(200, reference("Variables")),
        op("put", "/licenses/{key}/variables", on(PUT, licenses::put_variables), "Replace license variables")
            .exchanges("Variables"),
        op("put", "/licenses/{key}/email", on(PUT, licenses::put_email), "Set or remove the buyer's email")
            .body(closed(object(json!({ "email": { "type": "string", "maxLength": 254, "nullable": true, "pattern": EMAIL_OR_EMPTY } }), &[])))
            .returns(200, object(json!({ "ok": { "type": "boolean" }, "email": nullable(string.clone()) }), &["ok"])),
        op("post", "/licenses/{key}/offline-files", on(POST, licenses::mint_offline_file), "Mint an offline license file")
            .body(reference("MintFile"))
            .returns(201, object(json!({ "file": string, "fileName": string, "jti": string }), &["file", "fileName", "jti"])),
        op("post", "/api-keys", on(POST, account::create_key), "Create an API key (shown once)")
            .body(closed(object(json!({ "scopes": scopes }), &["scopes"])))
            .returns(201, reference("ApiKeyCreated")),
        op("get", "/api-keys", on(GET, account::list_keys), "List API keys").returns(200, reference("ApiKeyList")),
        op("delete", "/api-keys/{key_id}", on(DELETE, account::revoke_key), "Revoke an API key"),
        op("get", "/credits", on(GET, account::credits), "Credit balance and low-balance alert state")
            .returns(200, reference("Credits")),
        op("put", "/credits/settings", on(PUT, account::put_credit_settings), "Set the low-balance alert threshold")
            .body(json!({ "type": "object", "additionalProperties": false,
                          "properties": { "lowBalanceThreshold": { "type": "integer", "minimum": 0, "maximum": u64::MAX, "nullable": true } } }))
            .returns(200, reference("Credits")),
        op("get", "/credits/transactions", on(GET, ledgers::transactions), "Credit movements, newest first by default")
            .page("integer")
            .query(TRANSACTION_FILTER)
            .returns(200, reference("Transactions")),
        op("get", "/credits/transactions.csv", on(GET, ledgers::transactions_export), "Export credit movements as CSV")
            .page("export-limit")
            .query(TRANSACTION_FILTER)
            .csv(),
        op("get", "/overview", on(GET, overview::overview), "Overview of an app (or, without appId, the account): licenses by status, machines, live sessions, daily usage, credits outlook, top licenses")
            .query(OVERVIEW)
            .returns(200, reference("Overview")),
        op("get", "/audit-log", on(GET, ledgers::audit_log), "Who changed what, newest first by default")
            .page("integer")
            .query(AUDIT_FILTER)
            .returns(200, reference("AuditLog")),
        op("put", "/commerce/connections/{provider}", on(PUT, commerce::put_connection), "Connect Stripe or Lemon Squeezy (re-keying keeps the webhook URL)")
            .body(reference("ConnectionUpdate"))
            .returns(200, reference("Connection")),
        op("get", "/commerce/connections", on(GET, commerce::list_connections), "List provider connections")
            .returns(200, object(json!({ "connections": array(reference("Connection")) }), &["connections"])),
        op("delete", "/commerce/connections/{provider}", on(DELETE, commerce::delete_connection), "Disconnect a provider"),
        op("post", "/commerce/mappings", on(POST, commerce::create_mapping), "Map a price or variant to an app's license template")
            .body(reference("MappingCreate"))
            .returns(201, reference("Mapping")),
        op("get", "/commerce/mappings", on(GET, commerce::list_mappings), "List product mappings")
            .returns(200, object(json!({ "mappings": array(reference("Mapping")) }), &["mappings"])),
        op("put", "/commerce/mappings/{mapping_id}", on(PUT, commerce::update_mapping), "Replace a product mapping")
            .body(reference("MappingUpdate"))
            .returns(200, reference("Mapping")),
        op("delete", "/commerce/mappings/{mapping_id}", on(DELETE, commerce::delete_mapping), "Delete a product mapping"),
        op("get", "/commerce/events", on(GET, commerce::list_events), "The commerce event ledger, newest first by default")
            .query(EVENT_FILTER)
            .page("integer")
            .returns(200, object(json!({ "events": array(reference("CommerceEvent")), "cursor": nullable(string.clone()),
                "total": { "type": "integer", "minimum": 0 } }), &["events", "cursor", "total"])),
        op("get", "/commerce/events/{event_id}", on(GET, commerce::get_event), "One ledger entry with its reason and retry metadata")
            .returns(200, reference("CommerceEvent")),
        op("post", "/commerce/events/{event_id}/replay", on(POST, commerce::replay_event), "Replay a skipped, failed or held entry")
            .returns(202, object(json!({ "ok": { "type": "boolean" }, "eventId": string, "status": string }), &["ok"])),
        op("post", "/commerce/events/replay", on(POST, commerce::replay_matching), "Replay every skipped, failed or held entry matching a filter")
            .body(reference("EventFilter"))
            .returns(200, object(json!({ "ok": { "type": "boolean" }, "replayed": { "type": "integer" } }), &["ok", "replayed"])),
        op("post", "/apps/{app_id}/customers/forget", on(POST, commerce::forget_customer), "Erase a buyer's personal data (GDPR)")
            .body(reference("Forget"))
            .returns(200, reference("Forgotten")),
    ]
}

/// The router of `operations`, each wrapped by `wrap` (the idempotency middleware).
pub fn router(
    operations: &[Operation],
    wrap: impl Fn(MethodRouter<AppState>) -> MethodRouter<AppState>,
) -> Router<AppState> {
    operations.iter().fold(Router::new(), |router, op| {
        let route = if op.streamed { op.route.clone() } else { wrap(op.route.clone()) };
        router.route(op.path, route)
    })
}

fn parameters(op: &Operation, export_max_rows: i64) -> Vec<Value> {
    let in_path = op.path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'));
    let path = in_path.map(|name| {
        let schema = match name {
            "list" => json!({ "type": "string", "enum": ["blacklist", "whitelist"] }),
            "entry_type" => json!({ "type": "string", "enum": ["hwid", "ip"] }),
            "provider" => json!({ "type": "string", "enum": ["stripe", "lemon"] }),
            _ => json!({ "type": "string", "pattern": NO_CONTROL_CHARACTERS }),
        };
        json!({ "name": name, "in": "path", "required": true, "schema": schema })
    });
    let query = op.query.iter().map(|(name, kind, required)| {
        let schema = match (*name, *kind) {
            (_, "order") => json!({ "type": "string", "enum": ["desc", "asc"] }),
            (_, "license-sort") => json!({ "type": "string", "enum": ["created", "expires", "key"] }),
            (_, "license-status") => json!({ "type": "string", "enum": ["active", "expired", "revoked"] }),
            (_, "delivery-status") => json!({ "type": "string", "enum": ["pending", "delivered", "failed"] }),
            (_, "date-time") => json!({ "type": "string", "format": "date-time" }),
            (_, "email") => json!({ "type": "string", "maxLength": 254, "pattern": EMAIL_OR_EMPTY }),
            (_, "short-string") => json!({ "type": "string", "maxLength": 100, "pattern": NO_CONTROL_CHARACTERS }),
            (_, "detail") => json!({ "type": "string", "enum": ["summary", "full"] }),
            (_, "days") => json!({ "type": "integer", "minimum": 1, "maximum": overview::MAX_DAYS }),
            (_, "export-limit") => json!({ "type": "integer", "minimum": 1, "maximum": export_max_rows }),
            (_, "actor-kinds") => json!({ "type": "string",
                "pattern": "^(operator|api_key|dashboard|portal|client|system)(,(operator|api_key|dashboard|portal|client|system))*$" }),
            ("limit", _) => json!({ "type": "integer", "minimum": 1, "maximum": 200 }),
            ("provider", _) => json!({ "type": "string", "enum": ["stripe", "lemon"] }),
            ("status", _) => json!({ "type": "string", "enum": ["pending", "processed", "skipped", "failed", "held"] }),
            (_, "string") => json!({ "type": "string", "pattern": NO_CONTROL_CHARACTERS }),
            _ => json!({ "type": kind }),
        };
        json!({ "name": name, "in": "query", "required": required, "schema": schema })
    });
    // Every write honours an Idempotency-Key (see `super::idempotency`).
    let idempotency = (op.method != "get" && !op.streamed).then(|| {
        json!({
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Retry-safe writes: the first answer to a key is replayed for 24 h; another request under the key is a 409.",
            "schema": { "type": "string", "minLength": 1, "maxLength": super::idempotency::MAX_KEY_CHARS, "pattern": "^[!-~]+$" },
        })
    });
    path.chain(query).chain(idempotency).collect()
}

/// A replaced mapping stays with its app: `appId` may be left out (if given it must be the same).
fn mapping_update(schemas: &Value) -> Option<Value> {
    let mut update = schemas.get("MappingCreate")?.clone();
    update.get_mut("required")?.as_array_mut()?.retain(|field| field != "appId");
    Some(update)
}

/// A buyer email, or "" (like `null`) to remove it.
const EMAIL_OR_EMPTY: &str = "^$|^[^@\\s]+@[^@\\s.][^@\\s]*\\.[^@\\s]*[^@\\s.]$";
/// Path and query strings hold no control character (`crate::control_chars`, identifiers).
pub(crate) const NO_CONTROL_CHARACTERS: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";
/// Strings in bodies may hold tab, LF and CR, no other control character (free text).
const FREE_TEXT: &str = "^[^\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f]*$";

/// States the edge's control-character rule on every free-form string of a body schema, so the
/// document says what the server refuses. A string with a pattern of its own gets the rule as a
/// second pattern (`allOf`); enums and formats cannot hold control characters anyway.
fn forbid_control_characters(schema: &mut Value) {
    match schema {
        Value::Object(fields) => {
            let free_form = fields.get("type") == Some(&json!("string"))
                && !fields.contains_key("enum")
                && !fields.contains_key("format");
            if free_form {
                if fields.contains_key("pattern") {
                    fields.entry("allOf").or_insert_with(|| json!([{ "pattern": FREE_TEXT }]));
                } else {
                    fields.insert("pattern".into(), json!(FREE_TEXT));
                }
            }
            fields.values_mut().for_each(forbid_control_characters);
        }
        Value::Array(items) => items.iter_mut().for_each(forbid_control_characters),
        _ => {}
    }
}

/// The OpenAPI 3.0 document of `operations`.
pub fn document(operations: &[Operation], limits: &LiveModelLimits, export_max_rows: i64) -> Value {
    let mut paths = Map::new();
    for op in operations {
        let media_type = if op.csv { "text/csv" } else { "application/json" };
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{} {}", op.method, op.path),
            "parameters": parameters(op, export_max_rows),
            "security": [{ "apiKey": [] }],
            "responses": {
                op.status.to_string(): { "description": "Success", "content": {
                    media_type: { "schema": op.response } } },
                "default": { "description": "Error", "content": { "application/json": { "schema": reference("Error") } } },
            },
        });
        if op.streamed {
            operation["requestBody"] = json!({ "required": true, "content": {
                "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } });
        }
        if let Some(schema) = &op.request {
            let mut schema = schema.clone();
            forbid_control_characters(&mut schema);
            operation["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": schema } } });
        }
        let item = paths.entry(format!("/v1{}", op.path)).or_insert_with(|| json!({}));
        item[op.method] = operation;
    }
    let mut schemas = super::schemas::all();
    if let Value::Object(live) = super::schemas::live_fields(limits) {
        schemas.as_object_mut().into_iter().for_each(|all| all.extend(live.clone()));
    }
    if let (Some(all), Value::Object(commerce)) = (schemas.as_object_mut(), super::schemas::commerce()) {
        all.extend(commerce);
    }
    if let Some(update) = mapping_update(&schemas) {
        schemas["MappingUpdate"] = update;
    }
    forbid_control_characters(&mut schemas);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "licensd Developer API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": { "apiKey": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas,
        },
    })
}
