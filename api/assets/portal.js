// The end-user portal: license key + email -> emailed code -> license home with HWID reset.
// Branding (display name, accent colour) is applied only after sign-in.
"use strict";

const root = document.getElementById("portal");
const TOKEN = "licensd-portal-token";

async function call(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch("/portal" + path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = await response.json().catch(() => ({}));
  return { ok: response.ok, status: response.status, data };
}

function show(...children) {
  root.replaceChildren(...children);
}

function signInView(message) {
  for (const name of ["--accent", "--on-accent", "--accent-ink"]) document.documentElement.style.removeProperty(name);
  document.getElementById("portal-title").textContent = "License portal";
  show(h("section", { class: "card" }, h("h2", {}, "Sign in"),
    h("p", { class: "muted" }, "Enter your license key and the email you bought it with. We will email you a sign-in code."),
    message ? notice(message, "error") : "",
    form([
      ["licenseKey", "License key", { attrs: { required: true, id: "license-key", autocomplete: "off", spellcheck: "false" } }],
      ["email", "Email", { attrs: { type: "email", required: true, id: "email", autocomplete: "email" } }],
    ], "Send code", async (v) => {
      const answer = await call("POST", "/challenges", v);
      if (!answer.ok) return signInView(answer.data.message || "Please try again later.");
      codeView(answer.data.challengeId, answer.data.message);
    }, { id: "challenge-form" })));
}

function codeView(challengeId, message, error) {
  show(h("section", { class: "card" }, h("h2", {}, "Enter your code"),
    notice(message),
    error ? notice(error, "error") : "",
    form([["code", "6-digit code", { attrs: { required: true, inputmode: "numeric", pattern: "[0-9]{6}", maxlength: 6, id: "code", autocomplete: "one-time-code" } }]], "Sign in", async (v) => {
      const answer = await call("POST", "/sessions", { challengeId, code: v.code });
      if (!answer.ok) return codeView(challengeId, message, answer.data.message);
      sessionStorage.setItem(TOKEN, answer.data.token);
      await homeView();
    }, { id: "code-form" }),
    h("p", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); signInView(); } }, "Start over"))));
}

function brand(branding) {
  document.getElementById("portal-title").textContent = branding.displayName;
  document.title = branding.displayName;
  if (branding.accentColor) {
    // The merchant's colour stays readable whatever it is: text on it is white or ink, whichever
    // contrasts more, and where it would be text on white a light colour gives way to ink.
    const style = document.documentElement.style;
    style.setProperty("--accent", branding.accentColor);
    const onWhite = contrast(branding.accentColor, "#ffffff");
    style.setProperty("--on-accent", onWhite >= contrast(branding.accentColor, "#1c1c28") ? "#ffffff" : "#1c1c28");
    style.setProperty("--accent-ink", onWhite >= 4.5 ? branding.accentColor : "#1c1c28");
  }
}

/** Support contacts, each on its own line with a label saying what it is. */
function supportList(support, prefix) {
  const rows = [];
  if (support.url) rows.push(h("li", {}, "Support page: ", h("a", { href: support.url, rel: "noopener", id: prefix + "-link" }, support.url.replace(/^https?:\/\//, ""))));
  if (support.email) rows.push(h("li", {}, "Support email: ", h("a", { href: "mailto:" + support.email, id: prefix + "-email" }, support.email)));
  return rows.length ? h("ul", { class: "support", id: prefix }, rows) : "";
}

function homeContent(me, message) {
  const l = me.license;
  const reset = me.reset;
  const button = h("button", { id: "reset-button", disabled: !reset.allowed, onclick: async () => {
    button.disabled = true;
    const answer = await call("POST", "/reset");
    if (answer.status === 401) return signInView("Your session ended. Sign in again.");
    if (answer.ok) return show(...homeContent(answer.data.me, ["Your devices were reset. Start your software on the new machine to bind it.", "ok"]));
    const me2 = (await call("GET", "/me")).data;
    show(...homeContent(me2, [answer.data.message, "error"]));
  } }, "Reset devices");
  const limitReached = reset.refusal && reset.refusal.reason === "limit_reached";
  return [
    message ? notice(message[0], message[1]) : "",
    h("section", { class: "card" }, h("h2", {}, "Your license"),
      h("table", {}, h("tbody", {},
        h("tr", {}, h("th", { scope: "row" }, "Key"), h("td", { class: "mono", id: "masked-key" }, l.licenseKey)),
        h("tr", {}, h("th", { scope: "row" }, "Status"), h("td", {}, badge(l.expired ? "expired" : l.status))),
        h("tr", {}, h("th", { scope: "row" }, "Expires"), h("td", {}, l.expiresAt ? when(l.expiresAt) : "Never")),
        h("tr", {}, h("th", { scope: "row" }, "Email"), h("td", {}, l.email)),
        h("tr", {}, h("th", { scope: "row" }, "Devices"), h("td", { id: "devices" },
          l.hwids.length + " bound device" + (l.hwids.length === 1 ? "" : "s") + ", " + l.slotsLeft + " of " + plural(l.maxHwidSlots, "slot") + " free"))))),
    h("section", { class: "card" }, h("h2", {}, "Bound devices"),
      l.hwids.length ? h("ul", { id: "bound-devices", class: "entries" }, l.hwids.map(x => h("li", { class: "mono" }, x)))
        : h("p", { class: "muted", id: "bound-devices" }, "No device is bound yet: the first machine that starts your software takes a slot.")),
    h("section", { class: "card" }, h("h2", {}, "Reset devices"),
      h("p", { class: "muted" }, "Frees every device slot so you can move to new machines. ",
        "You may reset " + (reset.limit === 1 ? "once" : reset.limit + " times") + " in " + plural(reset.windowDays, "day") + "; " +
        (reset.used === 0 ? "none used yet." : reset.used + " used.") +
        (reset.cooldownHours ? " Resets need " + plural(reset.cooldownHours, "hour") + " between them." : "")),
      button,
      reset.allowed ? "" : h("div", { id: "reset-reason", class: "notice", role: "status" }, h("p", {}, reset.explanation),
        limitReached ? h("p", {}, "The limit protects your license from being shared. If you need another reset now, contact support:") : "",
        supportList(me.support, "reset-support")),
      h("p", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); sessionStorage.removeItem(TOKEN); signInView(); } }, "Sign out"))),
    me.support.url || me.support.email ? h("section", { class: "card" }, h("h2", {}, "Help"), supportList(me.support, "support")) : "",
  ];
}

async function homeView() {
  const answer = await call("GET", "/me");
  if (!answer.ok) {
    sessionStorage.removeItem(TOKEN);
    return signInView(answer.status === 401 ? null : answer.data.message);
  }
  brand(answer.data.branding);
  show(...homeContent(answer.data));
}

if (sessionStorage.getItem(TOKEN)) homeView(); else signInView();
