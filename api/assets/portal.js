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
  document.documentElement.style.removeProperty("--accent");
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
  if (branding.accentColor) document.documentElement.style.setProperty("--accent", branding.accentColor);
}

function homeContent(me, message) {
  const l = me.license;
  const reset = me.reset;
  const support = [];
  if (me.support.url) support.push(h("a", { href: me.support.url, rel: "noopener", id: "support-link" }, "Contact support"));
  if (me.support.email) support.push(h("a", { href: "mailto:" + me.support.email }, me.support.email));
  const button = h("button", { id: "reset-button", disabled: !reset.allowed, onclick: async () => {
    button.disabled = true;
    const answer = await call("POST", "/reset");
    if (answer.status === 401) return signInView("Your session ended. Sign in again.");
    if (answer.ok) return show(...homeContent(answer.data.me, ["Your devices were reset. Start your software on the new machine to bind it.", "ok"]));
    const me2 = (await call("GET", "/me")).data;
    show(...homeContent(me2, [answer.data.message, "error"]));
  } }, "Reset HWIDs");
  return [
    message ? notice(message[0], message[1]) : "",
    h("section", { class: "card" }, h("h2", {}, "Your license"),
      h("table", {}, h("tbody", {},
        h("tr", {}, h("th", { scope: "row" }, "Key"), h("td", { class: "mono", id: "masked-key" }, l.licenseKey)),
        h("tr", {}, h("th", { scope: "row" }, "Status"), h("td", {}, badge(l.expired ? "expired" : l.status))),
        h("tr", {}, h("th", { scope: "row" }, "Expires"), h("td", {}, l.expiresAt ? when(l.expiresAt) : "Never")),
        h("tr", {}, h("th", { scope: "row" }, "Email"), h("td", {}, l.email)),
        h("tr", {}, h("th", { scope: "row" }, "Devices"), h("td", { id: "devices" }, l.hwids.length + " bound, " + l.slotsLeft + " of " + l.maxHwidSlots + " slots free"))))),
    h("section", { class: "card" }, h("h2", {}, "Reset devices"),
      h("p", { class: "muted" }, "Frees every device slot so you can move to new machines. ",
        reset.limit + " resets per " + reset.windowDays + " days; used " + reset.used + "."),
      button,
      reset.allowed ? "" : h("p", { id: "reset-reason", class: "notice" }, reset.explanation, " ", ...support),
      h("p", {}, h("a", { href: "#", onclick: (e) => { e.preventDefault(); sessionStorage.removeItem(TOKEN); signInView(); } }, "Sign out"))),
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
