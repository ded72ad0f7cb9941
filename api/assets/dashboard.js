// The merchant dashboard: hash-routed views over the Developer API, authenticated by the
// session cookie plus this page's CSRF token.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
// The sign-in marks its redirect (so the server can tell a dropped cookie); the address bar
// need not keep the mark.
if (location.search.includes("signed-in")) history.replaceState(null, "", "/dashboard" + location.hash);
const view = document.getElementById("view");

class ApiFailure extends Error {}

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": CSRF };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch("/v1" + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin" });
  if (response.status === 401) { location.href = "/dashboard/login"; throw new ApiFailure("signed out"); }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiFailure(inWords(response.status, data.message));
  return data;
}

/** The API's message when it is a sentence for people; otherwise what the status means. Parser
 *  output (line/column, serde's type names) is never shown. */
function inWords(status, message) {
  const parserText = /line \d+ column \d+|deserializ|invalid type|unknown field|expected .* at|Failed to/i;
  if (message && !parserText.test(message)) return message.charAt(0).toUpperCase() + message.slice(1);
  if (status === 400 || status === 422) return "The server refused these values: check the fields and try again.";
  if (status === 403) return "This session may not do that (reload the page if it was open for long).";
  if (status === 404) return "It no longer exists: reload the page.";
  if (status === 409) return "It was changed meanwhile: reload the page and try again.";
  if (status === 413) return "Too large for this server's limit.";
  if (status === 429) return "Too many requests: wait a moment and try again.";
  return "The server could not do that right now (error " + status + "): try again shortly.";
}

/** JSON typed by a person: a clear error instead of the parser's. */
function parseJsonField(text, what) {
  try { return JSON.parse(text); } catch (_) { throw new ApiFailure(what + " must be a JSON object, like {\"name\": \"value\"}: check the quotes and commas."); }
}

/** Runs an action, showing its error (or success text) at the top of the view. */
async function act(action, success) {
  const near = formStatus;
  try {
    const result = await action();
    if (success) { flash(success, "ok"); say(near, success, "ok"); }
    return result;
  } catch (error) {
    flash(error.message, "error");
    say(near, error.message, "error");
    throw error;
  }
}

function flash(text, kind) {
  const old = document.getElementById("flash");
  if (old) old.remove();
  const el = notice(text, kind);
  el.id = "flash";
  view.prepend(el);
}

function card(title, ...content) {
  return h("section", { class: "card" }, h("h2", {}, title), ...content);
}

function secretBox(title, entries) {
  return h("div", { class: "secret", id: "shown-once" }, h("strong", {}, title + " (shown once; copy it now)"),
    entries.map(([name, value]) => h("div", {}, name + ": ", h("code", { "data-field": name }, value))));
}

const enc = encodeURIComponent;

// ---- Apps ----

async function appsView() {
  const { apps } = await api("GET", "/apps");
  const created = h("div");
  return [
    card("Apps", table(apps, [
      ["Name", a => h("a", { href: "#/apps/" + a.appId }, a.name)],
      ["App ID", a => h("code", {}, a.appId)],
      ["State", a => badge(a.disabled ? "disabled" : "active")],
      ["Created", a => when(a.createdAt)],
    ], "No apps yet: create one below.")),
    card("Create an app", form([["name", "Name", { id: "new-app-name", attrs: { required: true, maxlength: 100 } }]], "Create app", async ({ name }) => {
      const app = await act(() => api("POST", "/apps", { name }), "App created");
      created.replaceChildren(secretBox("Credentials for " + app.name, [["App ID", app.appId], ["App secret", app.appSecret], ["Public key", app.publicKey]]),
        h("p", {}, h("a", { href: "#/apps/" + app.appId, id: "open-new-app" }, "Open " + app.name)));
    }), created),
  ];
}

const TABS = [["licenses", "Licenses"], ["users", "Users"], ["files", "Files"], ["sessions", "Sessions"], ["webhooks", "Webhooks"], ["settings", "Settings"], ["security", "Security"]];

/** The app's identity, shown on every tab: App ID, public keys and key ids (secrets never). */
async function appHeader(app, current) {
  const keys = await api("GET", "/apps/" + app.appId + "/signing-keys").then(r => r.signingKeys || r.keys).catch(() => null);
  const listed = keys || app.publicKeys.map((k, i) => Object.assign({ state: i === 0 ? "signing" : "verifying" }, k));
  return [
    h("h1", {}, app.name, " ", badge(app.disabled ? "disabled" : "active")),
    h("dl", { class: "facts", id: "app-identity" },
      h("dt", {}, "App ID"), h("dd", {}, h("code", { id: "app-id" }, app.appId)),
      h("dt", {}, listed.length === 1 ? "Public key" : "Public keys"),
      h("dd", { id: "public-keys" }, listed.map(k => h("div", { class: "key" },
        h("span", { class: "muted" }, "key id "), h("code", {}, k.keyId), " ", badge(k.state || "verifying"), h("br"), h("code", { class: "pubkey" }, k.publicKey))))),
    h("nav", { class: "tabs", "aria-label": "App sections" }, TABS.map(([tab, title]) =>
      h("a", { href: "#/apps/" + app.appId + "/" + tab, id: "tab-" + tab, "aria-current": tab === current ? "page" : null }, title))),
  ];
}

async function appView(appId, tab, params) {
  const app = await api("GET", "/apps/" + appId);
  const body = {
    licenses: () => licensesTab(app, params),
    users: () => appUsersView(appId, params),
    files: () => filesTab(app),
    sessions: () => sessionsTab(app),
    webhooks: () => webhooksCard(app, params),
    settings: async () => [await settingsCard(app), await portalPolicyCard(appId)],
    security: () => securityCard(appId),
  }[tab];
  if (!body) throw new ApiFailure("There is no such section of an app.");
  return [...await appHeader(app, tab), h("div", { id: "tab-body" }, await body())];
}

/** Licenses, newest first, a page at a time through the API's cursor; filters and CSV export. */
async function licensesTab(app, params) {
  const appId = app.appId;
  const filters = {};
  for (const name of ["search", "email", "status", "order", "cursor", "limit"]) if (params.get(name)) filters[name] = params.get(name);
  const limit = filters.limit || "50";
  const query = new URLSearchParams(Object.assign({ appId, limit }, filters)).toString();
  const page = await api("GET", "/licenses?" + query);
  const link = (extra) => "#/apps/" + appId + "/licenses?" + new URLSearchParams(Object.assign({}, filters, { cursor: "" }, extra)).toString().replace(/(^|&)cursor=(?=&|$)/, "");
  const shownFilters = Object.assign({}, filters); delete shownFilters.cursor;
  const filterForm = form([
    ["search", "Key or label", { value: filters.search || "", attrs: { type: "search", id: "license-search" } }],
    ["email", "Buyer email (exact)", { value: filters.email || "", attrs: { type: "email", id: "license-filter-email", maxlength: 254 } }],
    ["status", "Status", { options: ["", "active", "expired", "revoked"], id: "license-status" }],
    ["order", "Order", { options: ["desc", "asc"], id: "license-order" }],
  ], "Filter", async (v) => {
    const next = {};
    for (const [k, value] of Object.entries(v)) if (value) next[k] = value;
    if (filters.limit) next.limit = filters.limit;
    location.hash = "#/apps/" + appId + "/licenses?" + new URLSearchParams(next).toString();
  }, { id: "license-filter", role: "search" });
  filterForm.elements.status.value = filters.status || "";
  filterForm.elements.order.value = filters.order || "desc";
  for (const option of filterForm.elements.status.options) if (!option.value) option.textContent = "any status";
  const csvParams = Object.assign({ appId }, shownFilters);
  delete csvParams.limit;
  const csv = "/v1/licenses.csv?" + new URLSearchParams(csvParams).toString();
  const generated = h("div");
  return [
    card("Licenses", filterForm,
      h("p", { class: "muted", id: "license-count" }, page.total !== undefined ? plural(page.total, "license") + " match" + (page.total === 1 ? "es" : "") : ""),
      h("div", { id: "licenses" }, table(page.licenses, [
        ["Key", l => h("a", { href: "#/licenses/" + l.licenseKey, class: "mono license-key" }, l.licenseKey)],
        ["Status", l => badge(l.status)],
        ["Expires", l => l.expiresAt ? when(l.expiresAt) : "never"],
        ["Machines", l => l.hwidList.length + " / " + l.maxHwidSlots],
        ["Label", l => l.label || ""],
        ["Created", l => when(l.createdAt)],
      ], "No licenses match.")),
      h("p", {},
        filters.cursor ? h("a", { href: link({}), id: "licenses-first", class: "button secondary" }, "First page") : "", " ",
        page.cursor ? h("a", { href: link({ cursor: page.cursor }), id: "licenses-next", class: "button" }, "Next page") : "", " ",
        h("a", { href: csv, id: "licenses-csv", download: "licenses.csv" }, "Export these licenses as CSV"))),
    card("Generate licenses", form([
      ["quantity", "Quantity", { value: "1", attrs: { type: "number", min: 1, max: 100, id: "gen-quantity" } }],
      ["days", "Valid for days (empty: lifetime)", { attrs: { type: "number", min: 1, id: "gen-days" } }],
      ["slots", "Machine slots", { value: "1", attrs: { type: "number", min: 1, max: 16, id: "gen-slots" } }],
      ["label", "Label", { attrs: { maxlength: 128, id: "gen-label" } }],
    ], "Generate", async (v) => {
      const body = { appId, quantity: Number(v.quantity), maxHwidSlots: Number(v.slots) };
      if (v.days) body.expiresAt = new Date(Date.now() + Number(v.days) * 86400000).toISOString();
      if (v.label) body.label = v.label;
      const result = await act(() => api("POST", "/licenses", body), plural(Number(v.quantity), "license") + " generated");
      generated.replaceChildren(h("ul", { id: "generated-keys" }, result.licenses.map(l => h("li", {}, h("a", { href: "#/licenses/" + l.licenseKey, class: "mono" }, l.licenseKey)))));
    }), generated),
  ];
}

// ---- Files (issue 18) ----

const filePath = (appId, name) => "/apps/" + appId + "/files" + (name === undefined ? "" : "/" + enc(name));

function policyInWords(policy) {
  if (!policy || policy.kind === "anyAuthorized") return "any authorized session";
  if (policy.kind === "public") return "public (any initialized session)";
  return "sessions with level " + policy.levels.join(" or ");
}

/** Sends a file as the raw body of a streamed PUT, reporting progress as it goes. */
function uploadFile(appId, name, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", "/v1" + filePath(appId, name));
    xhr.setRequestHeader("X-CSRF-Token", CSRF);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onload = () => {
      let data = {};
      try { data = JSON.parse(xhr.responseText); } catch (_) { /* not JSON: told by status */ }
      if (xhr.status === 401) { location.href = "/dashboard/login"; return; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data);
      else reject(new ApiFailure(inWords(xhr.status, data.message)));
    };
    xhr.onerror = () => reject(new ApiFailure("The upload was interrupted (connection lost or the server closed it): try again."));
    xhr.send(file);
  });
}

function policyEditor(app, f) {
  const kind = h("select", { name: "kind", id: "policy-kind-" + f.name.replace(/\W/g, "_"), "aria-label": "Who may download " + f.name },
    [["anyAuthorized", "Any authorized session"], ["levels", "Sessions with one of these levels"], ["public", "Public (any initialized session)"]]
      .map(([value, text]) => h("option", { value, selected: f.policy && f.policy.kind === value }, text)));
  const levels = h("input", { name: "levels", "aria-label": "Levels for " + f.name + " (comma-separated)", placeholder: "pro, beta", value: f.policy && f.policy.levels ? f.policy.levels.join(", ") : "" });
  const show = () => { levels.hidden = kind.value !== "levels"; };
  kind.addEventListener("change", show);
  show();
  const status = statusLine();
  const save = h("button", { class: "secondary", type: "submit" }, "Save policy");
  const el = h("form", { class: "inline policy-form", "data-file": f.name }, kind, levels, save, status);
  el.addEventListener("submit", async (e) => {
    e.preventDefault();
    const policy = { kind: kind.value };
    if (kind.value === "levels") policy.levels = levels.value.split(",").map(x => x.trim()).filter(Boolean);
    save.disabled = true;
    try {
      await api("PATCH", filePath(app.appId, f.name), { policy });
      say(status, "Saved: " + policyInWords(policy), "ok");
    } catch (error) { say(status, error.message, "error"); } finally { save.disabled = false; }
  });
  return el;
}

async function fileVersions(app, name, into) {
  const f = await api("GET", filePath(app.appId, name));
  into.replaceChildren(h("h3", {}, "Versions of " + name), table(f.versions.slice().reverse(), [
    ["Version", v => v.version], ["Size", v => bytes(v.size)], ["SHA-256", v => h("code", {}, v.sha256)], ["Uploaded", v => when(v.uploadedAt)],
  ]));
}

async function filesTab(app) {
  const versions = h("div", { id: "file-versions" });
  const list = h("div", { id: "files" });
  // Drawn again after an upload, so the upload's progress and outcome stay in view.
  const drawFiles = async () => {
    const { files } = await api("GET", filePath(app.appId));
    list.replaceChildren(table(files, [
      ["Name", f => h("button", { class: "link file-name", type: "button", onclick: () => fileVersions(app, f.name, versions) }, f.name)],
      ["Version", f => f.version], ["Size", f => bytes(f.size)],
      ["SHA-256", f => h("code", { class: "sha" }, f.sha256)],
      ["Who may download", f => policyEditor(app, f)],
      ["Transfers", f => String(f.transferCount)], ["Bytes served", f => bytes(f.bytesServed)],
      ["Last transfer", f => f.lastTransferredAt ? when(f.lastTransferredAt) : "never"],
      ["", f => confirmAction({ id: "delete-file-" + f.name.replace(/\W/g, "_"), label: "Delete " + f.name,
        consequence: "Every version of " + f.name + " (the current one is version " + f.version + ", " + bytes(f.size) + ") is deleted with its counters; live sessions asking for it get \"not found\". This cannot be undone.",
        run: async () => { await api("DELETE", filePath(app.appId, f.name)); nextFlash = f.name + " deleted"; await route(); return f.name + " deleted"; } })],
    ], "No files yet: upload one below."));
  };
  await drawFiles();
  const progress = h("progress", { id: "upload-progress", max: 100, value: 0, "aria-label": "Upload progress", "data-events": "0" });
  const progressText = h("span", { id: "upload-progress-text" });
  const uploadForm = h("form", { class: "inline", id: "upload-form" },
    h("label", {}, "File name (4–16 letters, digits, space . _ -)", h("input", { name: "name", id: "upload-name", required: true, minlength: 4, maxlength: 16 })),
    h("label", {}, "Content", h("input", { name: "file", id: "upload-file", type: "file", required: true })),
    h("button", { type: "submit" }, "Upload"));
  const uploadStatus = statusLine("upload-status");
  uploadForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = uploadForm.elements.name.value;
    const file = uploadForm.elements.file.files[0];
    if (!file) return say(uploadStatus, "Choose a file to upload.", "error");
    const button = uploadForm.querySelector("button");
    button.disabled = true;
    progress.value = 0;
    progress.dataset.events = "0";
    say(uploadStatus, "Uploading " + name + "…");
    try {
      const made = await uploadFile(app.appId, name, file, (loaded, total) => {
        progress.value = Math.round((loaded / total) * 100);
        progress.dataset.events = String(Number(progress.dataset.events) + 1);
        progressText.textContent = bytes(loaded) + " of " + bytes(total);
      });
      progress.value = 100;
      await drawFiles();
      say(uploadStatus, "Uploaded " + name + " version " + made.version + " (" + bytes(made.size) + ")", "ok");
    } catch (error) {
      say(uploadStatus, error.message, "error");
    } finally { button.disabled = false; }
  });
  return [
    card("Protected files", h("p", { class: "muted" }, "Delivered to live sessions by name (packets 7–9); each upload is a new version."), list, versions),
    card("Upload a file", uploadForm, h("p", {}, progress, " ", progressText), h("p", {}, uploadStatus)),
  ];
}

// ---- Live sessions ----

function sessionsTable(app, sessions, empty) {
  return table(sessions, [
    ["Client ID", s => h("code", {}, s.clientId || "")], ["License", s => s.license ? h("a", { href: "#/licenses/" + s.license, class: "mono" }, s.license) : "—"],
    ["IP", s => s.ip], ["Connected", s => s.connected ? "yes" : "resumable"],
    ["Since", s => when(s.connectedAt)], ["Last activity", s => when(s.lastActivityAt)],
    ["", s => confirmAction({ id: "kick-" + s.sessionId, label: "Disconnect",
      consequence: "This session ends now (event 1, then close 4100); the client must sign in again.",
      run: async () => { await api("DELETE", "/apps/" + app.appId + "/sessions/" + s.sessionId); return "Disconnected"; } })],
  ], empty);
}

async function sessionsTab(app) {
  const { sessions } = await api("GET", "/apps/" + app.appId + "/sessions");
  return card("Live sessions", h("div", { id: "sessions" }, sessionsTable(app, sessions, "No live session right now.")));
}

async function portalPolicyCard(appId) {
  const p = await api("GET", "/apps/" + appId + "/portal");
  const swatch = h("span", { class: "swatch", id: "accent-swatch" });
  const paint = (color) => { swatch.style.background = /^#[0-9a-fA-F]{6}$/.test(color) ? color : "transparent"; };
  paint(p.accentColor || "");
  const policyForm = form([
    ["resetLimit", "HWID reset limit", { value: String(p.resetLimit), attrs: { type: "number", min: 0, max: 100, id: "policy-limit" } }],
    ["resetWindowDays", "Window (days)", { value: String(p.resetWindowDays), attrs: { type: "number", min: 1, max: 3650, id: "policy-window" } }],
    ["cooldownHours", "Cooldown (hours)", { value: String(p.cooldownHours), attrs: { type: "number", min: 0, max: 8760, id: "policy-cooldown" } }],
    ["supportUrl", "Support URL", { value: p.supportUrl || "", attrs: { id: "policy-support-url" } }],
    ["supportEmail", "Support email", { value: p.supportEmail || "", attrs: { type: "email", id: "policy-support-email" } }],
    ["displayName", "Display name", { value: p.displayName || "", attrs: { maxlength: 80, id: "policy-display-name" } }],
    ["accentColor", "Accent colour", { value: p.accentColor || "", attrs: { placeholder: "#A78BFA", id: "policy-accent" } }],
    ["emailBuyers", "Email license key to buyer", { attrs: { type: "checkbox", id: "policy-email-buyers" } }],
  ], "Save policy", async (v) => {
    const body = {
      resetLimit: Number(v.resetLimit), resetWindowDays: Number(v.resetWindowDays), cooldownHours: Number(v.cooldownHours),
      supportUrl: v.supportUrl || null, supportEmail: v.supportEmail || null, displayName: v.displayName || null,
      accentColor: v.accentColor || null, emailBuyers: v.emailBuyers,
    };
    const saved = await act(() => api("PUT", "/apps/" + appId + "/portal", body), "Portal policy saved");
    policyForm.elements.supportUrl.value = saved.supportUrl || "";
  }, { id: "portal-policy" });
  policyForm.elements.emailBuyers.checked = p.emailBuyers;
  policyForm.elements.accentColor.addEventListener("input", (e) => paint(e.target.value));
  policyForm.elements.accentColor.parentElement.append(swatch);
  return card("Self-service portal policy", policyForm,
    h("p", { class: "muted" }, "End users sign in at ", h("a", { href: "/portal" }, "/portal"), " with their license key and email."));
}

/** One webhook's delivery log, newest first, a page at a time through the API's cursor (the
 *  webhook, cursor and page size live in the hash, like the license list's). */
async function deliveriesOf(app, hook, filters, base) {
  const path = "/apps/" + app.appId + "/webhooks/" + hook.webhookId + "/deliveries";
  const query = Object.assign({ limit: "50" }, filters);
  delete query.deliveries;
  const page = await api("GET", path + "?" + new URLSearchParams(query).toString());
  return h("div", { id: "deliveries" }, h("h3", {}, "Deliveries to " + hook.url),
    h("p", { class: "muted", id: "deliveries-count" }, plural(page.total, "delivery", "deliveries")),
    table(page.deliveries, [
      ["Event", d => h("span", { class: "delivery", "data-delivery": d.deliveryId }, d.event)], ["Status", d => badge(d.status)], ["Attempts", d => d.attempts],
      ["Last status", d => d.lastStatus || d.lastError || "—"], ["Created", d => when(d.createdAt)],
      ["", d => h("button", { class: "secondary", onclick: () => act(() => api("POST", path + "/" + d.deliveryId + "/redeliver"), "Queued again").then(route) }, "Redeliver")],
    ], "No deliveries yet."),
    pager(base, filters, page.cursor, "deliveries"));
}

async function webhooksCard(app, params) {
  const { webhooks } = await api("GET", "/apps/" + app.appId + "/webhooks");
  const base = "#/apps/" + app.appId + "/webhooks";
  const filters = paramsObject(params, ["deliveries", "cursor", "limit"]);
  const hook = webhooks.find(w => w.webhookId === filters.deliveries);
  const deliveries = hook ? await deliveriesOf(app, hook, filters, base) : "";
  const shown = h("div");
  return card("Webhooks", table(webhooks, [
    ["URL", w => h("code", {}, w.url)], ["Events", w => w.events.join(", ")],
    ["Last delivery", w => w.lastDeliveryStatus ? w.lastDeliveryStatus + " at " + when(w.lastDeliveryAt) : "—"],
    ["", w => h("span", {}, h("a", { href: base + "?deliveries=" + enc(w.webhookId), id: "deliveries-" + w.webhookId, class: "button secondary" }, "Deliveries"), " ",
      h("button", { class: "secondary", onclick: () => act(() => api("POST", "/apps/" + app.appId + "/webhooks/" + w.webhookId + "/test"), "Test ping sent") }, "Send test"), " ",
      confirmAction({ id: "delete-webhook-" + w.webhookId, label: "Delete webhook",
        consequence: "Events stop being sent to " + w.url + "; its delivery log is no longer shown. This cannot be undone.",
        run: async () => { await api("DELETE", "/apps/" + app.appId + "/webhooks/" + w.webhookId); nextFlash = "Webhook deleted"; await route(); return "Deleted"; } }))],
  ], "No webhooks."), form([["url", "HTTPS URL", { attrs: { type: "url", required: true } }], ["events", "Events (comma-separated, empty: all)", {}]], "Add webhook", async (v) => {
    const body = { url: v.url };
    if (v.events.trim()) body.events = v.events.split(",").map(e => e.trim());
    const hook = await act(() => api("POST", "/apps/" + app.appId + "/webhooks", body), "Webhook added");
    shown.replaceChildren(secretBox("Signing secret", [["Secret", hook.secret]]));
  }), shown, deliveries);
}

/** Signing keys in two steps, where the API lists them: add a key (it does not sign yet, so
 *  clients can ship it), make it sign, retire the old one. */
function signingKeysCard(app, keys) {
  const path = "/apps/" + app.appId + "/signing-keys";
  const redraw = (text) => { nextFlash = text; return route().then(() => text); };
  return card("Signing keys", h("p", { class: "muted" }, "Licenses are signed by one key; clients verify with the public keys they ship. Add a key, ship its public key in your app, then make it sign and retire the old one."),
    h("div", { id: "signing-keys" }, table(keys, [
      ["Key id", k => h("code", {}, k.keyId)], ["Public key", k => h("code", {}, k.publicKey)],
      ["State", k => badge(k.state === "verifying" ? "not signing yet" : k.state)], ["Added", k => k.createdAt ? when(k.createdAt) : "—"],
      ["", k => k.state !== "verifying" ? "" : h("span", {},
        confirmAction({ id: "promote-" + k.keyId, label: "Make it sign",
          consequence: "From now on licenses are signed with key " + k.keyId + ". Clients that do not ship its public key yet reject the new signatures.",
          run: () => api("POST", path + "/" + enc(k.keyId) + "/promote").then(() => redraw("Key " + k.keyId + " signs now")) }), " ",
        confirmAction({ id: "retire-" + k.keyId, label: "Retire",
          consequence: "Key " + k.keyId + " is withdrawn: signatures made with it no longer verify against this app's published keys. This cannot be undone.",
          run: () => api("DELETE", path + "/" + enc(k.keyId)).then(() => redraw("Key " + k.keyId + " retired")) }))],
    ])),
    actionButton({ id: "add-signing-key", label: "Add a new key", run: () => api("POST", path).then(() => redraw("Key added: it does not sign until you make it")) }));
}

async function settingsCard(app) {
  // Older servers have no key list: the one-step rotation is offered instead.
  const keys = await api("GET", "/apps/" + app.appId + "/signing-keys").then(r => r.signingKeys).catch(() => null);
  const s = app.settings;
  const shown = h("div", { id: "rotated" });
  const settings = form([
    ["offlineActivation", "Self-serve offline activation", { attrs: { type: "checkbox" } }],
    ["hourlyBurnCap", "Hourly credit burn cap (empty: none)", { value: s.hourlyBurnCap ?? "", attrs: { type: "number", min: 0 } }],
    ["dailyBurnCap", "Daily credit burn cap (empty: none)", { value: s.dailyBurnCap ?? "", attrs: { type: "number", min: 0 } }],
  ], "Save settings", async (v) => {
    const cap = (x) => x === "" ? null : Number(x);
    await act(() => api("PUT", "/apps/" + app.appId + "/settings", { offlineActivation: v.offlineActivation, hourlyBurnCap: cap(v.hourlyBurnCap), dailyBurnCap: cap(v.dailyBurnCap) }), "Settings saved");
  });
  settings.elements.offlineActivation.checked = s.offlineActivation;
  return card("Settings and keys", settings,
    h("div", { class: "actions" },
      confirmAction({ id: "rotate-secret", label: "Rotate app secret",
        consequence: "A new app secret is made and the current one stops working at once: every client built with it fails until it ships the new one.",
        run: async () => {
          const r = await api("POST", "/apps/" + app.appId + "/secret");
          shown.replaceChildren(secretBox("New app secret", [["App secret", r.appSecret]]));
          return "Secret rotated: copy the new one below";
        } }),
      keys ? "" : confirmAction({ id: "rotate-signing-key", label: "Rotate signing key",
        consequence: "A new key signs from now on. Clients that only hold the current public key reject the new signatures until they ship the new key (see the key list above).",
        run: async () => {
          const r = await api("POST", "/apps/" + app.appId + "/signing-keys");
          shown.replaceChildren(h("p", {}, "Published keys: ", (r.signingKeys || r.publicKeys || []).map(k => h("code", {}, k.publicKey + " "))));
          return "Signing key rotated";
        } }),
      app.disabled
        ? actionButton({ id: "toggle-app", label: "Enable app", secondary: false, run: async () => { await api("PUT", "/apps/" + app.appId, { disabled: false }); nextFlash = "App enabled"; await route(); return "App enabled"; } })
        : confirmAction({ id: "toggle-app", label: "Disable app",
          consequence: "Every license of " + app.name + " stops validating and every live session is disconnected until you enable the app again.",
          run: async () => { await api("PUT", "/apps/" + app.appId, { disabled: true }); nextFlash = "App disabled"; await route(); return "App disabled"; } })),
    shown, h("p", {}, h("a", { href: "#/apps/" + app.appId + "/variables" }, "App variables")),
    keys ? signingKeysCard(app, keys) : "");
}

/** The four lists, with what each does in words. */
const SECURITY_LISTS = [
  ["hwidBlacklist", "blacklist", "hwid", "Blocked machines", "These hardware IDs are refused."],
  ["hwidWhitelist", "whitelist", "hwid", "Allowed machines only", "When this list has entries, only these hardware IDs are accepted."],
  ["ipBlacklist", "blacklist", "ip", "Blocked IP addresses", "These addresses or ranges (like 203.0.113.0/24) are refused."],
  ["ipWhitelist", "whitelist", "ip", "Allowed IP addresses only", "When this list has entries, only these addresses or ranges are accepted."],
];

/** What removing one entry does, in words: a blocked entry is let in again; an allowed entry is
 *  shut out, and removing the last one opens the check to everyone (an empty allow list allows all). */
function removalConsequence(list, type, value, count) {
  const what = type === "hwid" ? "machine" : "address";
  const everyone = type === "hwid" ? "every machine" : "every address";
  if (list === "blacklist") return "Clients from " + value + " are accepted again at their next request.";
  return count === 1
    ? "This is the last entry: the list becomes empty, so " + everyone + " is accepted again."
    : "Clients from " + value + " are refused at their next request, unless another allowed " + what + " covers them.";
}

/** The security lists, one entry per row: each row removes itself, a row at the end adds. */
async function securityCard(appId) {
  const lists = await api("GET", "/apps/" + appId + "/security");
  return card("Security lists", SECURITY_LISTS.map(([field, list, type, title, explain]) => {
    const path = "/apps/" + appId + "/security/" + list;
    const entries = lists[field] || [];
    const add = form([["value", type === "hwid" ? "Hardware ID" : "IP address or range", { attrs: { required: true, id: "add-" + field } }]], "Add", async (v) => {
      await act(() => api("POST", path, { type, value: v.value.trim() }), "Added");
      nextFlash = "Added to " + title.toLowerCase();
      await route();
    }, { id: "add-" + field + "-form" });
    return h("section", { class: "list", id: "list-" + field },
      h("h3", {}, title), h("p", { class: "muted" }, explain),
      entries.length ? h("ul", { class: "entries" }, entries.map(value => h("li", {}, h("code", {}, value), " ",
        confirmAction({ id: "remove-" + field + "-" + value.replace(/\W/g, "_"), label: "Remove " + value,
          consequence: removalConsequence(list, type, value, entries.length),
          run: async () => {
            await api("DELETE", path, { type, value });
            nextFlash = "Removed " + value;
            await route();
            return "Removed " + value;
          } })))) : h("p", { class: "muted" }, "No entries."),
      add);
  }));
}

async function appVariablesView(appId) {
  const vars = await api("GET", "/apps/" + appId + "/variables");
  return card("App variables (JSON object)", form([["json", "Variables", { textarea: true, value: JSON.stringify(vars, null, 2) }]], "Save", async (v) => {
    await act(() => api("PUT", "/apps/" + appId + "/variables", parseJsonField(v.json, "Variables")), "Variables saved");
  }));
}

// ---- App users ----

const userPath = (appId, userId) => "/apps/" + appId + "/users" + (userId ? "/" + enc(userId) : "");

/** An app's users: oldest first, a page at a time (the API's cursor), or the one user whose
 *  login is exactly the search (logins are sealed, so there is no partial match). */
async function appUsersView(appId, params) {
  const app = await api("GET", "/apps/" + appId);
  const search = params.get("search") || "";
  const cursor = params.get("cursor") || "";
  const limit = params.get("limit") || "20";
  const query = "?limit=" + enc(limit) + (cursor ? "&cursor=" + enc(cursor) : "") + (search ? "&search=" + enc(search) : "");
  const page = await api("GET", userPath(appId) + query);
  const link = (extra) => "#/apps/" + appId + "/users?" + new URLSearchParams(Object.assign({ limit }, extra)).toString();
  const searchForm = form([["search", "Login (exact)", { value: search, attrs: { type: "search", id: "user-search" } }]], "Search", async (v) => {
    location.hash = link(v.search.trim() ? { search: v.search.trim() } : {});
  }, { id: "user-search-form", role: "search" });
  return [
    card("App users of " + app.name, searchForm,
      h("div", { id: "users" }, table(page.users, [
        ["Login", u => h("a", { href: "#/apps/" + appId + "/users/" + u.userId, class: "user-login" }, u.login ?? "(erased)")],
        ["Status", u => badge(u.status)],
        ["Levels", u => u.levels.join(", ")],
        ["Licenses", u => String(u.licenses.length)],
        ["License required", u => u.licenseRequired ? "yes" : "no"],
        ["Created", u => when(u.createdAt)],
      ], search ? "No user has that login." : "No users yet.")),
      h("p", {},
        cursor || search ? h("a", { href: link({}), id: "users-first", class: "button secondary" }, "First page") : "", " ",
        page.cursor ? h("a", { href: link({ cursor: page.cursor }), id: "users-next", class: "button" }, "Next page") : "")),
  ];
}

/** One user: identity, linked licenses, live sessions, and the merchant's actions. */
async function appUserView(appId, userId) {
  const [u, { sessions }] = await Promise.all([api("GET", userPath(appId, userId)), api("GET", "/apps/" + appId + "/sessions")]);
  const mine = sessions.filter(s => s.userId === userId);
  const name = u.login ?? "(erased)";
  // The view is drawn again from the API's answer, then the success is told on top of it.
  const change = (body, done) => act(() => api("PATCH", userPath(appId, userId), body)).then(route).then(() => flash(done, "ok"));
  const confirmBox = h("div", { id: "delete-confirm" });
  const askDelete = () => {
    const licenses = u.licenses.length;
    confirmBox.replaceChildren(h("div", { class: "notice error", role: "alert" },
      h("p", { id: "delete-consequence" }, "Delete " + name + "? Their " + mine.length + " live session" + (mine.length === 1 ? "" : "s") +
        " end" + (mine.length === 1 ? "s" : "") + " (event 303), their " + licenses + " linked license" + (licenses === 1 ? " is" : "s are") +
        " unlinked (the licenses stay), and their login, comment and password are erased. This cannot be undone."),
      h("button", { class: "danger", id: "delete-confirmed", onclick: async () => {
        await act(() => api("DELETE", userPath(appId, userId)));
        nextFlash = "User deleted";
        location.hash = "#/apps/" + appId + "/users";
      } }, "Yes, delete " + name), " ",
      h("button", { class: "secondary", id: "delete-cancel", onclick: () => confirmBox.replaceChildren() }, "Cancel")));
  };
  const blacklisted = u.status === "blacklisted";
  return [
    h("p", {}, h("a", { href: "#/apps/" + appId + "/users" }, "← App users")),
    card("App user " + name,
      h("dl", { class: "facts" },
        h("dt", {}, "Login"), h("dd", { id: "user-login" }, name),
        h("dt", {}, "Status"), h("dd", { id: "user-status" }, badge(u.status)),
        h("dt", {}, "Levels"), h("dd", { id: "user-levels" }, u.levels.join(", ") || "none"),
        h("dt", {}, "Comment"), h("dd", { id: "user-comment" }, u.comment || "—"),
        h("dt", {}, "License required"), h("dd", {}, u.licenseRequired ? "yes" : "no"),
        h("dt", {}, "Created"), h("dd", {}, when(u.createdAt))),
      h("p", {},
        blacklisted
          ? h("button", { id: "toggle-blacklist", onclick: () => change({ status: "active" }, "User unblacklisted") }, "Unblacklist")
          : confirmAction({ id: "toggle-blacklist", label: "Blacklist",
            consequence: "Their " + plural(mine.length, "live session") + " get event 301 and are signed out; they cannot sign in until unblacklisted.",
            run: async () => { await api("PATCH", userPath(appId, userId), { status: "blacklisted" }); nextFlash = "User blacklisted"; await route(); return "User blacklisted"; } }),
        " ",
        h("button", { class: "danger", id: "delete-user", onclick: askDelete }, "Delete user…")),
      confirmBox),
    card("Reset password", h("p", { class: "muted" }, "The user's live sessions are signed out (event 304); only the new password works afterwards."),
      form([["password", "New password (6–128 characters)", { attrs: { type: "password", required: true, minlength: 6, maxlength: 128, autocomplete: "new-password", id: "new-user-password" } }]],
        "Set password", async (v, el) => {
          await act(() => api("PATCH", userPath(appId, userId), { password: v.password }), "Password reset");
          el.reset();
        }, { id: "reset-password-form" })),
    card("Linked licenses", h("div", { id: "user-licenses" }, table(u.licenses.map(key => ({ key })), [
      ["Key", l => h("a", { href: "#/licenses/" + l.key, class: "mono" }, l.key)],
      ["", l => confirmAction({ id: "unlink-" + l.key, label: "Unlink",
        consequence: "The license no longer belongs to this user: their sessions lose its identity, and its key works on its own again.",
        run: async () => { await api("PATCH", userPath(appId, userId), { unlinkLicense: l.key }); nextFlash = "License unlinked"; await route(); return "License unlinked"; } })],
    ], "No license linked."))),
    card("Live sessions", h("div", { id: "user-sessions" }, table(mine, [
      ["Client ID", s => h("code", {}, s.clientId || "")], ["IP", s => s.ip], ["Connected", s => s.connected ? "yes" : "resumable"],
      ["Since", s => when(s.connectedAt)], ["Last activity", s => when(s.lastActivityAt)],
      ["", s => confirmAction({ id: "kick-" + s.sessionId, label: "Disconnect",
        consequence: "This session ends now (event 1, then close 4100); the client must sign in again.",
        run: async () => { await api("DELETE", "/apps/" + appId + "/sessions/" + s.sessionId); nextFlash = "Disconnected"; await route(); return "Disconnected"; } })],
    ], "Not signed in anywhere right now."))),
  ];
}

// ---- One license ----

/** "PortalResetRecorded" → "Portal reset recorded", when the API gives no human name. */
function eventName(e) {
  if (e.name) return e.name;
  const words = e.type.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/** Who did it, in words: the API's own wording when it has one, else the actor's kind. */
function actorName(e) {
  if (e.actorName) return e.actorName;
  const kind = e.actorKind || String(e.actor || "").split(":")[0];
  return { api_key: "API key", dashboard: "Dashboard", client: "Client", portal: "Portal", operator: "Operator", system: "licensd", stripe: "Stripe", lemon: "Lemon Squeezy" }[kind] || kind || "unknown";
}

/** The raw payload of one history entry (nonces and ids included), fetched when expanded. */
let rawHistory = null;
function rawEvent(key, e) {
  const code = h("code", {}, "…");
  const details = h("details", {}, h("summary", {}, "Raw"), code);
  details.addEventListener("toggle", async () => {
    if (!details.open || code.dataset.loaded) return;
    try {
      if (!rawHistory || rawHistory.key !== key) rawHistory = { key, events: api("GET", "/licenses/" + enc(key) + "/events?detail=full").then(r => r.events) };
      const full = (await rawHistory.events).find(x => x.version === e.version);
      code.textContent = JSON.stringify(full ? full.data : null);
      code.dataset.loaded = "1";
    } catch (error) { code.textContent = error.message; }
  });
  return details;
}

/** A moment of a machine's life, with the exact time kept for tools (and tests). */
function seenAt(iso, cls) {
  return iso ? h("time", { datetime: iso, class: cls }, when(iso)) : "—";
}

function machinesOf(l) {
  if (Array.isArray(l.machines)) return l.machines;
  return l.hwidList.map(hwid => ({ hwid }));
}

/** One license; its history newest first, a page at a time through the API's cursor (kept in
 *  the hash with the page size, like the lists'). */
async function licenseView(key, params) {
  rawHistory = null;
  const l = await api("GET", "/licenses/" + enc(key));
  const filters = paramsObject(params, ["cursor", "limit"]);
  const [history, vars, live] = await Promise.all([
    api("GET", "/licenses/" + enc(key) + "/events?" + new URLSearchParams(Object.assign({ limit: "50", order: "desc" }, filters)).toString()),
    api("GET", "/licenses/" + enc(key) + "/variables"),
    api("GET", "/apps/" + l.appId + "/sessions").catch(() => ({ sessions: [] })),
  ]);
  const app = { appId: l.appId };
  const change = (body, done) => api("PUT", "/licenses/" + enc(key), body).then(async () => { nextFlash = done; await route(); return done; });
  const machines = machinesOf(l);
  const minted = h("div", { id: "offline-file" });
  const active = l.status === "active";
  return [
    h("p", {}, h("a", { href: "#/apps/" + l.appId }, "← App")),
    card("License " + l.licenseKey,
      h("p", {}, badge(l.status), " · expires ", l.expiresAt ? when(l.expiresAt) : "never", " · machines ",
        h("span", { id: "license-machines" }, machines.length + " / " + l.maxHwidSlots), l.email ? " · email " : "", l.email ? h("span", { id: "license-email" }, l.email) : ""),
      h("div", { class: "actions" },
        active
          ? confirmAction({ id: "toggle-status", label: "Revoke", consequence: "The license stops validating at once and its live sessions are disconnected. You can activate it again later.", run: () => change({ action: "revoke" }, "Revoked") })
          : actionButton({ id: "toggle-status", label: "Activate", secondary: false, run: () => change({ action: "activate" }, "Activated") }),
        confirmAction({ id: "reset-hwid", label: "Reset machines", consequence: "All " + plural(machines.length, "bound machine") + " are released; the next machines to validate take the slots.", run: () => change({ action: "reset-hwid" }, "Machines reset") }),
        confirmAction({ id: "delete-license", label: "Delete license", consequence: "The key stops working everywhere and disappears from lists. This cannot be undone.",
          run: async () => { await api("DELETE", "/licenses/" + enc(key)); nextFlash = "License deleted"; location.hash = "#/apps/" + l.appId; return "Deleted"; } })),
      form([["date", "Extend to", { attrs: { type: "date", required: true } }]], "Extend", (v) => act(() => change({ action: "extend", expiresAt: new Date(v.date + "T23:59:59Z").toISOString() }, "Extended")))),
    card("Bound machines", h("div", { id: "machines" }, table(machines, [
      ["Machine (HWID)", m => h("code", {}, m.hwid)],
      ["First seen (bound)", m => seenAt(m.boundAt, "bound-at")],
      ["Last seen", m => seenAt(m.lastSeenAt, "last-seen")],
      // Releasing one machine needs the API's machine list (it is absent from older servers).
      ["", m => !Array.isArray(l.machines) ? "" : confirmAction({ id: "release-" + m.hwid.replace(/\W/g, "_"), label: "Release", consequence: "This machine loses its slot and its live sessions end; it must validate again (and find a free slot) to use the license.",
        run: async () => { await api("DELETE", "/licenses/" + enc(key) + "/machines/" + enc(m.hwid)); nextFlash = "Machine released"; await route(); return "Released"; } })],
    ], "No machine bound."))),
    card("Live sessions", h("div", { id: "license-sessions" }, sessionsTable(app, live.sessions.filter(s => s.license === key), "No live session uses this license."))),
    card("Levels", form([["levels", "Levels (comma-separated)", { value: (l.levels || []).join(", "), attrs: { id: "license-levels" } }]], "Save levels", async (v) => {
      await act(() => api("PUT", "/licenses/" + enc(key), { levels: v.levels.split(",").map(x => x.trim()).filter(Boolean) }), "Levels saved");
    }, { id: "levels-form" })),
    card("Portal email", form([["email", "Customer email (empty: remove)", { value: l.email || "", attrs: { type: "email", id: "portal-email" } }]], "Save email", async (v) => {
      await act(() => api("PUT", "/licenses/" + enc(key) + "/email", { email: v.email || null }), "Email saved");
      await route();
    }, { id: "portal-email-form" })),
    card("Offline license file", h("p", { class: "muted" }, "A signed file for a machine without internet access."),
      form([["hwid", "Machine HWID (empty: any machine)", { attrs: { maxlength: 256, id: "offline-hwid" } }]], "Mint file", async (v) => {
        const body = v.hwid.trim() ? { hwid: v.hwid.trim() } : { anyMachine: true };
        const r = await act(() => api("POST", "/licenses/" + enc(key) + "/offline-files", body), "File minted");
        const blob = new Blob([typeof r.file === "string" ? r.file : JSON.stringify(r.file, null, 2)], { type: "application/json" });
        minted.replaceChildren(h("a", { href: URL.createObjectURL(blob), download: r.fileName, id: "offline-download" }, "Download " + r.fileName));
      }, { id: "offline-form" }), minted),
    card("Variables (JSON object)", form([["json", "Variables", { textarea: true, value: JSON.stringify(vars, null, 2) }]], "Save variables", async (v) => {
      await act(() => api("PUT", "/licenses/" + enc(key) + "/variables", parseJsonField(v.json, "Variables")), "Variables saved");
    })),
    card("History", h("div", { id: "history" }, table(history.events, [
      ["When", e => when(e.at)], ["What", e => h("span", { class: "event-type", title: e.type, "data-version": e.version }, eventName(e))], ["By", e => actorName(e)],
      ["Details", e => e.summary || ""],
      ["", e => rawEvent(key, e)],
    ]), pager("#/licenses/" + enc(key), filters, history.cursor, "history"))),
  ];
}

// ---- Commerce ----

async function commerceView(params) {
  const [{ connections }, { mappings }, { apps }] = await Promise.all([api("GET", "/commerce/connections"), api("GET", "/commerce/mappings"), api("GET", "/apps")]);
  const filters = paramsObject(params, ["status", "cursor", "limit"]);
  const status = filters.status || "";
  const page = await api("GET", "/commerce/events?" + new URLSearchParams(Object.assign({ limit: "50" }, filters)).toString());
  const shown = h("div");
  const filter = h("select", { id: "event-status", "aria-label": "Filter by status", onchange: (e) => { location.hash = "#/commerce" + (e.target.value ? "?status=" + e.target.value : ""); } },
    ["", "pending", "processed", "skipped", "failed", "held"].map(s => h("option", { value: s, selected: s === status }, s || "any status")));
  return [
    card("Events", h("p", {}, filter, " ",
      h("button", { class: "secondary", id: "bulk-replay", onclick: () => act(() => api("POST", "/commerce/events/replay", status ? { status } : {}), null).then(r => { flash("Replayed " + r.replayed + " events", "ok"); }) }, "Replay all skipped, failed and held" + (status ? " (" + status + ")" : ""))),
      h("p", { class: "muted", id: "commerce-count" }, plural(page.total, "event")),
      table(page.events, [
        ["Received", e => h("span", { class: "commerce-event", "data-event": e.eventId }, when(e.receivedAt))], ["Provider", e => e.provider], ["Type", e => e.type],
        ["Status", e => h("span", { class: "event-status" }, badge(e.status))],
        ["Reason", e => [e.reason, e.error].filter(Boolean).join(": ") + (e.retryCount ? " (retries " + e.retryCount + ")" : "")],
        ["Licenses", e => e.licenseKeys.map(k => h("a", { href: "#/licenses/" + k, class: "mono" }, k + " "))],
        ["", e => ["skipped", "failed", "held"].includes(e.status)
          ? h("button", { class: "replay", "data-event": e.eventId, onclick: () => act(() => api("POST", "/commerce/events/" + enc(e.eventId) + "/replay"), "Replay queued").then(() => setTimeout(route, 500)) }, "Replay") : ""],
      ], "No commerce events."),
      pager("#/commerce", filters, page.cursor, "commerce-events")),
    card("Connections", table(connections, [
      ["Provider", c => c.provider], ["Webhook URL", c => h("code", {}, location.origin + "/billing/webhook/" + c.provider + "/" + c.connectionId)],
      ["API key", c => c.hasApiKey ? "stored" : "none"],
      ["", c => confirmAction({ id: "disconnect-" + c.provider, label: "Disconnect " + c.provider,
        consequence: "Its stored signing secret and API key are removed; purchases sent to this webhook URL are refused until you connect again.",
        run: async () => { await api("DELETE", "/commerce/connections/" + c.provider); nextFlash = "Disconnected"; await route(); return "Disconnected"; } })],
    ], "No provider connected."), form([
      ["provider", "Provider", { options: ["stripe", "lemon"] }],
      ["signingSecret", "Webhook signing secret", { attrs: { type: "password", required: true } }],
      ["apiKey", "API key (optional)", { attrs: { type: "password" } }],
    ], "Connect", async (v) => {
      const body = { signingSecret: v.signingSecret };
      if (v.apiKey) body.apiKey = v.apiKey;
      await act(() => api("PUT", "/commerce/connections/" + v.provider, body), "Connected");
      await route();
    }), shown),
    card("Product mappings", table(mappings, [
      ["Provider", m => m.provider], ["Price / variant", m => h("code", {}, m.priceId)], ["App", m => (apps.find(a => a.appId === m.appId) || {}).name || m.appId],
      ["Kind", m => m.kind], ["Days", m => m.days ?? "lifetime"], ["Slots", m => m.hwidSlots],
      ["", m => confirmAction({ id: "delete-mapping-" + m.mappingId, label: "Delete mapping",
        consequence: "Purchases of " + m.priceId + " no longer make licenses (they are skipped and can be replayed after a new mapping).",
        run: async () => { await api("DELETE", "/commerce/mappings/" + m.mappingId); nextFlash = "Mapping deleted"; await route(); return "Deleted"; } })],
    ], "No mappings."), form([
      ["provider", "Provider", { options: [["stripe", "Stripe"], ["lemon", "Lemon Squeezy"]] }],
      ["priceId", "Price or variant ID", { attrs: { required: true } }],
      ["productId", "Product ID (optional)", {}],
      ["appId", "App", { options: apps.map(a => [a.appId, a.name]) }],
      ["kind", "Kind", { options: [["one_time", "One-time purchase"], ["subscription", "Subscription"], ["add_on", "Add-on"], ["revocation", "Revocation"]] }],
      ["days", "Days (empty: lifetime)", { attrs: { type: "number", min: 1 } }],
      ["hwidSlots", "Machine slots", { value: "1", attrs: { type: "number", min: 1, max: 16 } }],
      ["label", "License label (optional)", { attrs: { maxlength: 128 } }],
      ["respectQuantity", "One license per unit bought", { attrs: { type: "checkbox" } }],
      ["variables", "License variables (JSON object, optional)", { textarea: true }],
    ], "Add mapping", async (v) => {
      const body = { provider: v.provider, priceId: v.priceId, appId: v.appId, kind: v.kind, hwidSlots: Number(v.hwidSlots), respectQuantity: v.respectQuantity };
      if (v.days) body.days = Number(v.days);
      if (v.productId) body.productId = v.productId;
      if (v.label) body.label = v.label;
      if (v.variables.trim()) body.variables = parseJsonField(v.variables, "License variables");
      await act(() => api("POST", "/commerce/mappings", body), "Mapping added");
      await route();
    })),
  ];
}

// ---- Credits, keys, audit ----

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = String(text);
  return el;
}

/** A bar chart of [label, value] points in inline SVG: a y axis with 0 and the maximum, the
 *  value above each bar, dates below. Narrow screens get the last 14 points, so the text stays
 *  readable at 390 px. */
function barChart(points, { title, id, unit }) {
  const shown = window.innerWidth < 640 ? points.slice(-14) : points;
  if (!shown.length || shown.every(([, v]) => !v)) return h("p", { class: "muted", id }, "Nothing yet for " + title.toLowerCase() + ".");
  const slot = 26, left = 40, top = 18, plot = 110, bottom = 28;
  const width = left + shown.length * slot + 4;
  const max = Math.max(...shown.map(([, v]) => v), 1);
  const chart = svg("svg", { viewBox: "0 0 " + width + " " + (top + plot + bottom), class: "chart", role: "img", id, "aria-label": title + ": " + shown.map(([d, v]) => d + " " + v).join(", ") });
  chart.append(svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plot }), svg("line", { class: "axis", x1: left, y1: top + plot, x2: width, y2: top + plot }),
    svg("text", { x: left - 4, y: top + plot, "text-anchor": "end" }, 0), svg("text", { x: left - 4, y: top + 4, "text-anchor": "end" }, max));
  const every = Math.ceil(shown.length / 10);
  shown.forEach(([day, value], i) => {
    const height = Math.round((value / max) * plot);
    const x = left + i * slot + 3;
    const bar = svg("rect", { x, y: top + plot - height, width: slot - 6, height: Math.max(height, value ? 1 : 0), "data-day": day, "data-value": value });
    bar.append(svg("title", {}, day + ": " + value + (unit ? " " + unit : "")));
    chart.append(bar);
    if (value) chart.append(svg("text", { class: "value", x: x + (slot - 6) / 2, y: top + plot - height - 3, "text-anchor": "middle" }, value));
    if (i % every === 0) chart.append(svg("text", { x: x + (slot - 6) / 2, y: top + plot + 14, "text-anchor": "middle" }, day.slice(5)));
  });
  return h("figure", { class: "chart" }, chart);
}

/** Cursor paging links for a list view whose filters live in the hash. */
function pager(base, filters, cursor, id) {
  const rest = Object.assign({}, filters);
  delete rest.cursor;
  const link = (extra) => base + "?" + new URLSearchParams(Object.assign({}, rest, extra)).toString();
  return h("p", {},
    filters.cursor ? h("a", { href: link({}), id: id + "-first", class: "button secondary" }, "First page") : "", " ",
    cursor ? h("a", { href: link({ cursor }), id: id + "-next", class: "button" }, "Next page") : "");
}

function paramsObject(params, names) {
  const out = {};
  for (const name of names) if (params.get(name)) out[name] = params.get(name);
  return out;
}

async function creditsView(params) {
  const filters = paramsObject(params, ["kind", "order", "cursor", "limit"]);
  const query = new URLSearchParams(Object.assign({ limit: "50" }, filters)).toString();
  const [credits, page] = await Promise.all([api("GET", "/credits"), api("GET", "/credits/transactions?" + query)]);
  const alertForm = form([["threshold", "Alert below (empty: off)", { value: credits.lowBalanceThreshold ?? "", attrs: { type: "number", min: 0 } }]], "Save alert", async (v) => {
    await act(() => api("PUT", "/credits/settings", { lowBalanceThreshold: v.threshold === "" ? null : Number(v.threshold) }), "Alert saved");
    await route();
  });
  const filterForm = form([["kind", "Kind (exact, e.g. validation)", { value: filters.kind || "", attrs: { id: "transaction-kind" } }]], "Filter", async (v) => {
    location.hash = "#/credits" + (v.kind.trim() ? "?kind=" + enc(v.kind.trim()) : "");
  }, { role: "search" });
  const csvFilters = Object.assign({}, filters); delete csvFilters.cursor; delete csvFilters.limit;
  return [
    h("div", { class: "grid" },
      card("Balance", h("div", { class: "stat", id: "balance" }, String(credits.balance)), credits.belowThreshold ? notice("Below your alert threshold", "error") : ""),
      card("Low-balance alert", alertForm)),
    card("Transactions", filterForm,
      page.total !== undefined ? h("p", { class: "muted" }, plural(page.total, "transaction")) : "",
      table(page.transactions, [
        ["When", t => when(t.at)], ["Change", t => t.delta], ["Kind", t => t.kind], ["Reason", t => t.reason || ""], ["License", t => t.licenseKey || ""],
      ], "No transactions."),
      pager("#/credits", filters, page.cursor, "transactions"),
      h("p", {}, h("a", { href: "/v1/credits/transactions.csv?" + new URLSearchParams(csvFilters).toString(), download: "transactions.csv" }, "Export transactions as CSV")),
      h("p", { class: "muted" }, "Credits used per day: see the ", h("a", { href: "#/overview" }, "overview"), ".")),
  ];
}

// ---- Overview ----

/** The account (or one app) at a glance, from the API's daily roll-up: licenses by status,
 *  machines and live sessions now, and per day over the period: billed credits (with how long
 *  the balance lasts at that rate), validations, heartbeats, new licenses, commerce events; the
 *  busiest licenses. */
async function overviewView(params) {
  const days = Math.min(Math.max(Number(params.get("days")) || 14, 1), 366);
  const appId = params.get("appId") || "";
  const [{ apps }, o] = await Promise.all([api("GET", "/apps"), api("GET", "/overview?days=" + days + (appId ? "&appId=" + enc(appId) : ""))]);
  const link = (extra) => "#/overview?" + new URLSearchParams(Object.assign(appId ? { appId } : {}, { days: String(days) }, extra)).toString();
  const scope = form([["appId", "Show", { options: [["", "All apps"], ...apps.map(a => [a.appId, a.name])], id: "overview-app" }]], "Show", async (v) => {
    location.hash = "#/overview?" + new URLSearchParams(Object.assign(v.appId ? { appId: v.appId } : {}, { days: String(days) })).toString();
  }, { id: "overview-scope" });
  scope.elements.appId.value = appId;
  const series = (field) => o.daily.map(d => [d.day, d[field]]);
  const c = o.credits;
  const lasts = c.lastsDays === null || c.lastsDays === undefined ? "No credits used in this period."
    : "Lasts about " + plural(c.lastsDays, "day") + " at this rate (" + (Math.round(c.burnPerDay * 10) / 10) + " a day).";
  return [
    h("h1", {}, "Overview"),
    h("div", { class: "actions" }, scope, h("p", { id: "overview-period" }, "Period: ", [7, 14, 30, 90].flatMap(n => [h("a", { href: link({ days: String(n) }), "aria-current": days === n ? "page" : null }, n + " days"), " "]))),
    h("div", { class: "grid" },
      card("Credits", h("div", { class: "stat", id: "overview-balance" }, String(c.balance)), h("p", { id: "balance-lasts" }, lasts),
        h("p", { class: "muted" }, plural(c.burnedInPeriod, "credit") + " used in " + plural(o.days, "day") + " (the whole account).")),
      card("Licenses", h("dl", { class: "facts", id: "overview-licenses" },
        h("dt", {}, "Active"), h("dd", {}, String(o.licenses.active)),
        h("dt", {}, "Expired"), h("dd", {}, String(o.licenses.expired)),
        h("dt", {}, "Revoked"), h("dd", {}, String(o.licenses.revoked)),
        h("dt", {}, "Machines in use"), h("dd", {}, String(o.activeMachines)),
        h("dt", {}, "Live sessions now"), h("dd", {}, String(o.liveSessions))))),
    card("Credits used per day", barChart(series("creditsBurned"), { title: "Credits used per day", id: "chart-credits", unit: "credits" })),
    card("Validations per day", barChart(series("validations"), { title: "Validations per day", id: "chart-validations", unit: "validations" })),
    card("Heartbeats per day", barChart(series("heartbeats"), { title: "Heartbeats per day", id: "chart-heartbeats", unit: "heartbeats" })),
    card("New licenses per day", barChart(series("newLicenses"), { title: "New licenses per day", id: "chart-new-licenses", unit: "licenses" })),
    card("Purchases and renewals per day", barChart(series("commerceEvents"), { title: "Purchases and renewals per day", id: "chart-commerce", unit: "events" })),
    ...revenueCards(o),
    card("Busiest licenses", h("div", { id: "top-licenses" }, table(o.topLicenses, [
      ["License", t => h("a", { href: "#/licenses/" + t.licenseKey, class: "mono" }, t.licenseKey)], ["Label", t => t.label || ""],
      ["Validations", t => t.validations], ["Heartbeats", t => t.heartbeats],
    ], "No license was used in this period."))),
  ];
}

/** Revenue per day, one chart per currency paid in the period (amounts in the currency's main
 *  unit), and how many fulfilled purchases had no amount (counted apart, never as 0). */
function revenueCards(o) {
  const digits = (currency) => {
    try { return new Intl.NumberFormat("en", { style: "currency", currency }).resolvedOptions().maximumFractionDigits; } catch { return 2; }
  };
  const charts = o.revenue.byCurrency.map(({ currency }) => {
    const scale = 10 ** digits(currency);
    const points = o.daily.map(d => [d.day, ((d.revenue.find(r => r.currency === currency) || {}).amountMinor || 0) / scale]);
    const title = "Revenue per day (" + currency + ")";
    return card(title, barChart(points, { title, id: "chart-revenue-" + currency.toLowerCase(), unit: currency }));
  });
  const unknown = o.revenue.purchasesOfUnknownAmount;
  const note = unknown ? h("p", { class: "muted", id: "revenue-unknown" }, plural(unknown, "purchase") + " in this period with no amount recorded (not counted as 0).") : "";
  if (!charts.length) return [card("Revenue per day", h("p", { class: "muted", id: "chart-revenue" }, "No paid purchase fulfilled in this period."), note)];
  if (note) charts.push(card("Revenue of unknown amount", note));
  return charts;
}

async function apiKeysView() {
  const { apiKeys } = await api("GET", "/api-keys");
  const shown = h("div");
  return card("API keys", table(apiKeys, [
    ["Prefix", k => h("code", {}, k.prefix)], ["Scopes", k => k.scopes.join(", ")], ["Created", k => when(k.createdAt)],
    ["", k => confirmAction({ id: "revoke-key-" + k.apiKeyId, label: "Revoke key",
      consequence: "Every program using the key starting " + k.prefix + " is refused from now on. This cannot be undone.",
      run: async () => { await api("DELETE", "/api-keys/" + k.apiKeyId); nextFlash = "Key revoked"; await route(); return "Revoked"; } })],
  ]), form([["scopes", "Scopes (comma-separated, * for all)", { value: "*" }]], "Create key", async (v) => {
    const key = await act(() => api("POST", "/api-keys", { scopes: v.scopes.split(",").map(s => s.trim()).filter(Boolean) }), "Key created");
    shown.replaceChildren(secretBox("New API key", [["API key", key.apiKey]]));
  }), shown);
}

/** The audit log, newest first, a page at a time; client machine bindings are left out unless
 *  asked for, so the merchant's own actions are not buried under them. */
async function auditView(params) {
  const filters = paramsObject(params, ["actorKind", "action", "cursor", "clients"]);
  const query = { limit: "50" };
  if (filters.actorKind) query.actorKind = filters.actorKind;
  else if (!filters.clients) query.excludeActorKind = "client";
  if (filters.action) query.action = filters.action;
  if (filters.cursor) query.cursor = filters.cursor;
  const page = await api("GET", "/audit-log?" + new URLSearchParams(query).toString());
  const filterForm = form([
    ["actorKind", "Done by", { options: [["", "anyone but clients"], ["dashboard", "Dashboard"], ["api_key", "API keys"], ["operator", "Operator"], ["portal", "Portal"], ["client", "Clients"], ["system", "licensd"]], id: "audit-actor" }],
    ["action", "Event (exact, e.g. LicenseRevoked)", { value: filters.action || "", attrs: { id: "audit-action" } }],
  ], "Filter", async (v) => {
    const next = {};
    if (v.actorKind) next.actorKind = v.actorKind;
    if (v.action.trim()) next.action = v.action.trim();
    location.hash = "#/audit?" + new URLSearchParams(next).toString();
  }, { role: "search", id: "audit-filter" });
  filterForm.elements.actorKind.value = filters.actorKind || "";
  return card("Audit log", filterForm,
    page.total !== undefined ? h("p", { class: "muted" }, plural(page.total, "entry", "entries")) : "",
    table(page.entries, [["When", e => when(e.at)], ["Event", e => eventName({ type: e.event, name: e.name })], ["By", e => actorName(e)], ["Stream", e => h("code", {}, e.stream)]], "No entries match."),
    pager("#/audit", filters, page.cursor, "audit"));
}

// ---- Router ----

/** A success to tell once the next view is drawn (an action that moves to another view). */
let nextFlash = null;

const routes = [
  [/^#\/apps\/([^/?]+)\/variables$/, (m) => appVariablesView(m[1])],
  [/^#\/apps\/([^/?]+)\/users\/([^/?]+)$/, (m) => appUserView(m[1], decodeURIComponent(m[2]))],
  [/^#\/apps\/([^/?]+)(?:\/([a-z]+))?(\?.*)?$/, (m) => appView(m[1], m[2] || "licenses", new URLSearchParams((m[3] || "").slice(1)))],
  [/^#\/licenses\/([^/?]+)(\?.*)?$/, (m) => licenseView(decodeURIComponent(m[1]), new URLSearchParams((m[2] || "").slice(1)))],
  [/^#\/commerce(\?.*)?$/, (m) => commerceView(new URLSearchParams((m[1] || "").slice(1)))],
  [/^#\/credits(\?.*)?$/, (m) => creditsView(new URLSearchParams((m[1] || "").slice(1)))],
  [/^#\/api-keys$/, () => apiKeysView()],
  [/^#\/overview(\?.*)?$/, (m) => overviewView(new URLSearchParams((m[1] || "").slice(1)))],
  [/^#\/audit(\?.*)?$/, (m) => auditView(new URLSearchParams((m[1] || "").slice(1)))],
  [/^.*$/, () => appsView()],
];

/** Counts route() calls: a view that finishes loading after a newer one began is dropped, so
 *  quick clicks never leave an older page on screen. */
let routeGeneration = 0;

async function route() {
  const generation = ++routeGeneration;
  const hash = location.hash || "#/apps";
  for (const link of document.querySelectorAll("header nav a")) {
    if (hash.startsWith(link.getAttribute("href"))) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, render] of routes) {
    const match = hash.match(pattern);
    if (!match) continue;
    view.setAttribute("aria-busy", "true");
    try {
      const content = await render(match);
      if (generation !== routeGeneration) return;
      view.replaceChildren(...[content].flat());
      if (nextFlash) flash(nextFlash, "ok");
      nextFlash = null;
    } catch (error) {
      if (generation !== routeGeneration) return;
      if (!(error instanceof ApiFailure)) console.error(error);
      view.replaceChildren(notice(error.message, "error"));
    } finally {
      if (generation === routeGeneration) {
        view.removeAttribute("aria-busy");
        view.dataset.route = hash;
      }
    }
    return;
  }
}

window.addEventListener("hashchange", route);
route();
