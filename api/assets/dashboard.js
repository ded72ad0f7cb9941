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
  if (!response.ok) throw new ApiFailure(data.message || ("HTTP " + response.status));
  return data;
}

/** Runs an action, showing its error (or success text) at the top of the view. */
async function act(action, success) {
  try {
    const result = await action();
    if (success) flash(success, "ok");
    return result;
  } catch (error) {
    flash(error.message, "error");
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

async function appView(appId) {
  const app = await api("GET", "/apps/" + appId);
  const licenses = h("div");
  const search = h("input", { type: "search", placeholder: "Key or label", id: "license-search", "aria-label": "Search licenses" });
  const loadLicenses = async () => {
    const page = await api("GET", "/licenses?appId=" + appId + "&limit=200&search=" + enc(search.value));
    licenses.replaceChildren(table(page.licenses, [
      ["Key", l => h("a", { href: "#/licenses/" + l.licenseKey, class: "mono" }, l.licenseKey)],
      ["Status", l => badge(l.status)],
      ["Expires", l => l.expiresAt ? when(l.expiresAt) : "never"],
      ["Machines", l => l.hwidList.length + " / " + l.maxHwidSlots],
      ["Label", l => l.label || ""],
    ], "No licenses match."));
  };
  search.addEventListener("input", () => loadLicenses());
  await loadLicenses();
  const generated = h("div");
  return [
    h("h1", {}, app.name, " ", badge(app.disabled ? "disabled" : "active")),
    card("Licenses", h("p", {}, search), licenses),
    card("App users", h("p", {}, "End-user accounts of this app (sign-in by login and password over live sessions). ",
      h("a", { href: "#/apps/" + appId + "/users", id: "open-app-users" }, "Open app users"))),
    card("Generate licenses", form([
      ["quantity", "Quantity", { value: "1", attrs: { type: "number", min: 1, max: 100, id: "gen-quantity" } }],
      ["days", "Valid for days (empty: lifetime)", { attrs: { type: "number", min: 1, id: "gen-days" } }],
      ["slots", "HWID slots", { value: "1", attrs: { type: "number", min: 1, max: 16, id: "gen-slots" } }],
      ["label", "Label", { attrs: { maxlength: 128, id: "gen-label" } }],
    ], "Generate", async (v) => {
      const body = { appId, quantity: Number(v.quantity), maxHwidSlots: Number(v.slots) };
      if (v.days) body.expiresAt = new Date(Date.now() + Number(v.days) * 86400000).toISOString();
      if (v.label) body.label = v.label;
      const result = await act(() => api("POST", "/licenses", body), "Licenses generated");
      generated.replaceChildren(h("ul", { id: "generated-keys" }, result.licenses.map(l => h("li", {}, h("a", { href: "#/licenses/" + l.licenseKey, class: "mono" }, l.licenseKey)))));
      await loadLicenses();
    }), generated),
    await portalPolicyCard(appId),
    await webhooksCard(app),
    await settingsCard(app),
    await securityCard(appId),
  ];
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

async function webhooksCard(app) {
  const { webhooks } = await api("GET", "/apps/" + app.appId + "/webhooks");
  const deliveries = h("div");
  const shown = h("div");
  const showDeliveries = async (hook) => {
    const list = await api("GET", "/apps/" + app.appId + "/webhooks/" + hook.webhookId + "/deliveries");
    deliveries.replaceChildren(h("h3", {}, "Deliveries to " + hook.url), table(list.deliveries, [
      ["Event", d => d.event], ["Status", d => badge(d.status)], ["Attempts", d => d.attempts],
      ["Last status", d => d.lastStatus || d.lastError || "—"], ["Created", d => when(d.createdAt)],
      ["", d => h("button", { class: "secondary", onclick: () => act(() => api("POST", "/apps/" + app.appId + "/webhooks/" + hook.webhookId + "/deliveries/" + d.deliveryId + "/redeliver"), "Queued again").then(() => showDeliveries(hook)) }, "Redeliver")],
    ], "No deliveries yet."));
  };
  return card("Webhooks", table(webhooks, [
    ["URL", w => h("code", {}, w.url)], ["Events", w => w.events.join(", ")],
    ["Last delivery", w => w.lastDeliveryStatus ? w.lastDeliveryStatus + " at " + when(w.lastDeliveryAt) : "—"],
    ["", w => h("span", {}, h("button", { class: "secondary", onclick: () => showDeliveries(w) }, "Deliveries"), " ",
      h("button", { class: "secondary", onclick: () => act(() => api("POST", "/apps/" + app.appId + "/webhooks/" + w.webhookId + "/test"), "Test ping sent") }, "Send test"), " ",
      h("button", { class: "danger", onclick: () => act(() => api("DELETE", "/apps/" + app.appId + "/webhooks/" + w.webhookId), "Deleted").then(route) }, "Delete"))],
  ], "No webhooks."), form([["url", "HTTPS URL", { attrs: { type: "url", required: true } }], ["events", "Events (comma-separated, empty: all)", {}]], "Add webhook", async (v) => {
    const body = { url: v.url };
    if (v.events.trim()) body.events = v.events.split(",").map(e => e.trim());
    const hook = await act(() => api("POST", "/apps/" + app.appId + "/webhooks", body), "Webhook added");
    shown.replaceChildren(secretBox("Signing secret", [["Secret", hook.secret]]));
  }), shown, deliveries);
}

async function settingsCard(app) {
  const s = app.settings;
  const shown = h("div");
  const settings = form([
    ["offlineActivation", "Self-serve offline activation", { attrs: { type: "checkbox" } }],
    ["hourlyBurnCap", "Hourly credit burn cap (empty: none)", { value: s.hourlyBurnCap ?? "", attrs: { type: "number", min: 0 } }],
    ["dailyBurnCap", "Daily credit burn cap (empty: none)", { value: s.dailyBurnCap ?? "", attrs: { type: "number", min: 0 } }],
  ], "Save settings", async (v) => {
    const cap = (x) => x === "" ? null : Number(x);
    await act(() => api("PUT", "/apps/" + app.appId + "/settings", { offlineActivation: v.offlineActivation, hourlyBurnCap: cap(v.hourlyBurnCap), dailyBurnCap: cap(v.dailyBurnCap) }), "Settings saved");
  });
  settings.elements.offlineActivation.checked = s.offlineActivation;
  return card("Settings and keys", settings, h("p", {},
    h("button", { class: "secondary", onclick: async () => {
      const r = await act(() => api("POST", "/apps/" + app.appId + "/secret"), "Secret rotated");
      shown.replaceChildren(secretBox("New app secret", [["App secret", r.appSecret]]));
    } }, "Rotate app secret"), " ",
    h("button", { class: "secondary", onclick: async () => {
      const r = await act(() => api("POST", "/apps/" + app.appId + "/signing-keys"), "Signing key rotated");
      shown.replaceChildren(h("p", {}, "Published keys: ", r.signingKeys.map(k => h("code", {}, k.publicKey + " "))));
    } }, "Rotate signing key"), " ",
    h("button", { class: app.disabled ? "" : "danger", onclick: () => act(() => api("PUT", "/apps/" + app.appId, { disabled: !app.disabled }), "Saved").then(route) }, app.disabled ? "Enable app" : "Disable app")),
  shown);
}

async function securityCard(appId) {
  const lists = await api("GET", "/apps/" + appId + "/security");
  const names = ["hwidBlacklist", "hwidWhitelist", "ipBlacklist", "ipWhitelist"];
  // Saving sends only what was changed here, one entry at a time, so entries added meanwhile
  // (a self-ban, another editor) are kept, and removing a self-ban entry lifts it.
  return card("Security lists (one entry per line)", form(names.map(n => [n, n, { textarea: true, value: (lists[n] || []).join("\n") }]), "Save lists", async (v) => {
    const edits = [];
    for (const n of names) {
      const before = new Set(lists[n] || []);
      const after = new Set(v[n].split("\n").map(x => x.trim()).filter(Boolean));
      const path = "/apps/" + appId + "/security/" + (n.endsWith("Blacklist") ? "blacklist" : "whitelist");
      const type = n.startsWith("hwid") ? "hwid" : "ip";
      for (const value of before) if (!after.has(value)) edits.push(["DELETE", path, { type, value }]);
      for (const value of after) if (!before.has(value)) edits.push(["POST", path, { type, value }]);
    }
    await act(async () => { for (const [method, path, body] of edits) await api(method, path, body); }, "Lists saved");
    route();
  }), h("p", {}, h("a", { href: "#/apps/" + appId + "/variables" }, "App variables")));
}

async function appVariablesView(appId) {
  const vars = await api("GET", "/apps/" + appId + "/variables");
  return card("App variables (JSON object)", form([["json", "Variables", { textarea: true, value: JSON.stringify(vars, null, 2) }]], "Save", async (v) => {
    await act(() => api("PUT", "/apps/" + appId + "/variables", JSON.parse(v.json)), "Variables saved");
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
    h("p", {}, h("a", { href: "#/apps/" + appId }, "← " + app.name)),
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
        h("button", { class: blacklisted ? "" : "danger", id: "toggle-blacklist", onclick: () => change({ status: blacklisted ? "active" : "blacklisted" }, blacklisted ? "User unblacklisted" : "User blacklisted") },
          blacklisted ? "Unblacklist" : "Blacklist"), " ",
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
      ["", l => h("button", { class: "secondary", onclick: () => change({ unlinkLicense: l.key }, "License unlinked") }, "Unlink")],
    ], "No license linked."))),
    card("Live sessions", h("div", { id: "user-sessions" }, table(mine, [
      ["Client ID", s => h("code", {}, s.clientId || "")], ["IP", s => s.ip], ["Connected", s => s.connected ? "yes" : "resumable"],
      ["Since", s => when(s.connectedAt)], ["Last activity", s => when(s.lastActivityAt)],
      ["", s => h("button", { class: "secondary", onclick: () => act(() => api("DELETE", "/apps/" + appId + "/sessions/" + s.sessionId), "Disconnected").then(route) }, "Disconnect")],
    ], "Not signed in anywhere right now."))),
  ];
}

// ---- One license ----

async function licenseView(key) {
  const l = await api("GET", "/licenses/" + enc(key));
  const { events } = await api("GET", "/licenses/" + enc(key) + "/events");
  const vars = await api("GET", "/licenses/" + enc(key) + "/variables");
  const change = (body, done) => act(() => api("PUT", "/licenses/" + enc(key), body), done).then(route);
  return [
    h("p", {}, h("a", { href: "#/apps/" + l.appId }, "← App")),
    card("License " + l.licenseKey,
      h("p", {}, badge(l.status), " · expires ", l.expiresAt ? when(l.expiresAt) : "never", " · machines ",
        h("span", { id: "license-machines" }, l.hwidList.length + " / " + l.maxHwidSlots), l.email ? " · ✉ " : "", l.email ? h("span", { id: "license-email" }, l.email) : ""),
      l.hwidList.length ? h("ul", {}, l.hwidList.map(x => h("li", { class: "mono" }, x))) : h("p", { class: "muted" }, "No machine bound."),
      h("p", {},
        h("button", { class: l.status === "active" ? "danger" : "", id: "toggle-status", onclick: () => change({ action: l.status === "active" ? "revoke" : "activate" }, "Saved") }, l.status === "active" ? "Revoke" : "Activate"), " ",
        h("button", { class: "secondary", id: "reset-hwid", onclick: () => change({ action: "reset-hwid" }, "Machines reset") }, "Reset HWIDs")),
      form([["date", "Extend to", { attrs: { type: "date", required: true } }]], "Extend", (v) => change({ action: "extend", expiresAt: new Date(v.date + "T23:59:59Z").toISOString() }, "Extended"))),
    card("Portal email", form([["email", "Customer email (empty: remove)", { value: l.email || "", attrs: { type: "email", id: "portal-email" } }]], "Save email", async (v) => {
      await act(() => api("PUT", "/licenses/" + enc(key) + "/email", { email: v.email || null }), "Email saved");
      await route();
    }, { id: "portal-email-form" })),
    card("Variables (JSON object)", form([["json", "Variables", { textarea: true, value: JSON.stringify(vars, null, 2) }]], "Save variables", async (v) => {
      await act(() => api("PUT", "/licenses/" + enc(key) + "/variables", JSON.parse(v.json)), "Variables saved");
    })),
    card("Event history", table(events.slice().reverse(), [
      ["#", e => e.version], ["Event", e => h("span", { class: "event-type" }, e.type)], ["When", e => when(e.at)], ["By", e => e.actor],
      ["Details", e => h("code", {}, JSON.stringify(e.data))],
    ])),
  ];
}

// ---- Commerce ----

async function commerceView(params) {
  const [{ connections }, { mappings }, { apps }] = await Promise.all([api("GET", "/commerce/connections"), api("GET", "/commerce/mappings"), api("GET", "/apps")]);
  const status = params.get("status") || "";
  const { events } = await api("GET", "/commerce/events?limit=200" + (status ? "&status=" + enc(status) : ""));
  const shown = h("div");
  const filter = h("select", { id: "event-status", "aria-label": "Filter by status", onchange: (e) => { location.hash = "#/commerce" + (e.target.value ? "?status=" + e.target.value : ""); } },
    ["", "pending", "processed", "skipped", "failed", "held"].map(s => h("option", { value: s, selected: s === status }, s || "any status")));
  return [
    card("Events", h("p", {}, filter, " ",
      h("button", { class: "secondary", id: "bulk-replay", onclick: () => act(() => api("POST", "/commerce/events/replay", status ? { status } : {}), null).then(r => { flash("Replayed " + r.replayed + " events", "ok"); }) }, "Replay all skipped, failed and held" + (status ? " (" + status + ")" : ""))),
      table(events, [
        ["Received", e => when(e.receivedAt)], ["Provider", e => e.provider], ["Type", e => e.type],
        ["Status", e => h("span", { class: "event-status" }, badge(e.status))],
        ["Reason", e => [e.reason, e.error].filter(Boolean).join(": ") + (e.retryCount ? " (retries " + e.retryCount + ")" : "")],
        ["Licenses", e => e.licenseKeys.map(k => h("a", { href: "#/licenses/" + k, class: "mono" }, k + " "))],
        ["", e => ["skipped", "failed", "held"].includes(e.status)
          ? h("button", { class: "replay", "data-event": e.eventId, onclick: () => act(() => api("POST", "/commerce/events/" + enc(e.eventId) + "/replay"), "Replay queued").then(() => setTimeout(route, 500)) }, "Replay") : ""],
      ], "No commerce events.")),
    card("Connections", table(connections, [
      ["Provider", c => c.provider], ["Webhook URL", c => h("code", {}, location.origin + "/billing/webhook/" + c.provider + "/" + c.connectionId)],
      ["API key", c => c.hasApiKey ? "stored" : "none"],
      ["", c => h("button", { class: "danger", onclick: () => act(() => api("DELETE", "/commerce/connections/" + c.provider), "Disconnected").then(route) }, "Disconnect")],
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
      ["", m => h("button", { class: "danger", onclick: () => act(() => api("DELETE", "/commerce/mappings/" + m.mappingId), "Deleted").then(route) }, "Delete")],
    ], "No mappings."), form([
      ["provider", "Provider", { options: ["stripe", "lemon"] }],
      ["priceId", "Price or variant ID", { attrs: { required: true } }],
      ["appId", "App", { options: apps.map(a => a.appId) }],
      ["kind", "Kind", { options: ["one_time", "subscription", "add_on", "revocation"] }],
      ["days", "Days (empty: lifetime)", { attrs: { type: "number", min: 1 } }],
      ["hwidSlots", "HWID slots", { value: "1", attrs: { type: "number", min: 1, max: 16 } }],
    ], "Add mapping", async (v) => {
      const body = { provider: v.provider, priceId: v.priceId, appId: v.appId, kind: v.kind, hwidSlots: Number(v.hwidSlots) };
      if (v.days) body.days = Number(v.days);
      await act(() => api("POST", "/commerce/mappings", body), "Mapping added");
      await route();
    })),
  ];
}

// ---- Credits, keys, audit ----

function usageChart(transactions) {
  const days = new Map();
  for (const t of transactions) {
    if (!t.at || t.delta >= 0) continue;
    const day = t.at.slice(0, 10);
    days.set(day, (days.get(day) || 0) - t.delta);
  }
  const entries = [...days.entries()].sort().slice(-30);
  if (!entries.length) return h("p", { class: "muted" }, "No usage yet.");
  const max = Math.max(...entries.map(([, n]) => n));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const width = Math.max(entries.length * 28, 200);
  svg.setAttribute("viewBox", "0 0 " + width + " 140");
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Credits used per day");
  entries.forEach(([day, n], i) => {
    const height = Math.max(1, Math.round((n / max) * 100));
    const bar = document.createElementNS(ns, "rect");
    bar.setAttribute("x", i * 28 + 4); bar.setAttribute("y", 110 - height); bar.setAttribute("width", 20); bar.setAttribute("height", height);
    const title = document.createElementNS(ns, "title"); title.textContent = day + ": " + n + " credits"; bar.append(title);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", i * 28 + 4); label.setAttribute("y", 125); label.textContent = day.slice(5);
    svg.append(bar, label);
  });
  return svg;
}

async function creditsView() {
  const [credits, { transactions }] = await Promise.all([api("GET", "/credits"), api("GET", "/credits/transactions?limit=200")]);
  const alertForm = form([["threshold", "Alert below (empty: off)", { value: credits.lowBalanceThreshold ?? "", attrs: { type: "number", min: 0 } }]], "Save alert", async (v) => {
    await act(() => api("PUT", "/credits/settings", { lowBalanceThreshold: v.threshold === "" ? null : Number(v.threshold) }), "Alert saved");
    await route();
  });
  return [
    h("div", { class: "grid" },
      card("Balance", h("div", { class: "stat", id: "balance" }, String(credits.balance)), credits.belowThreshold ? notice("Below your alert threshold", "error") : ""),
      card("Low-balance alert", alertForm)),
    card("Usage per day (credits)", usageChart(transactions)),
    card("Transactions", table(transactions, [
      ["When", t => when(t.at)], ["Change", t => t.delta], ["Kind", t => t.kind], ["Reason", t => t.reason || ""], ["License", t => t.licenseKey || ""],
    ], "No transactions.")),
  ];
}

async function apiKeysView() {
  const { apiKeys } = await api("GET", "/api-keys");
  const shown = h("div");
  return card("API keys", table(apiKeys, [
    ["Prefix", k => h("code", {}, k.prefix)], ["Scopes", k => k.scopes.join(", ")], ["Created", k => when(k.createdAt)],
    ["", k => h("button", { class: "danger", onclick: () => act(() => api("DELETE", "/api-keys/" + k.apiKeyId), "Revoked").then(route) }, "Revoke")],
  ]), form([["scopes", "Scopes (comma-separated, * for all)", { value: "*" }]], "Create key", async (v) => {
    const key = await act(() => api("POST", "/api-keys", { scopes: v.scopes.split(",").map(s => s.trim()).filter(Boolean) }), "Key created");
    shown.replaceChildren(secretBox("New API key", [["API key", key.apiKey]]));
  }), shown);
}

async function auditView() {
  const { entries } = await api("GET", "/audit-log?limit=200");
  return card("Audit log", table(entries, [["When", e => when(e.at)], ["Event", e => e.event], ["Stream", e => h("code", {}, e.stream)], ["By", e => e.actor]]));
}

// ---- Router ----

/** A success to tell once the next view is drawn (an action that moves to another view). */
let nextFlash = null;

const routes = [
  [/^#\/apps\/([^/?]+)\/variables$/, (m) => appVariablesView(m[1])],
  [/^#\/apps\/([^/?]+)\/users(\?.*)?$/, (m) => appUsersView(m[1], new URLSearchParams((m[2] || "").slice(1)))],
  [/^#\/apps\/([^/?]+)\/users\/([^/?]+)$/, (m) => appUserView(m[1], decodeURIComponent(m[2]))],
  [/^#\/apps\/([^/?]+)$/, (m) => appView(m[1])],
  [/^#\/licenses\/([^/?]+)$/, (m) => licenseView(decodeURIComponent(m[1]))],
  [/^#\/commerce(\?.*)?$/, (m) => commerceView(new URLSearchParams((m[1] || "").slice(1)))],
  [/^#\/credits$/, () => creditsView()],
  [/^#\/api-keys$/, () => apiKeysView()],
  [/^#\/audit$/, () => auditView()],
  [/^.*$/, () => appsView()],
];

async function route() {
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
      view.replaceChildren(...[content].flat());
      if (nextFlash) flash(nextFlash, "ok");
      nextFlash = null;
    } catch (error) {
      if (!(error instanceof ApiFailure)) console.error(error);
      view.replaceChildren(notice(error.message, "error"));
    } finally {
      view.removeAttribute("aria-busy");
      view.dataset.route = hash;
    }
    return;
  }
}

window.addEventListener("hashchange", route);
route();
