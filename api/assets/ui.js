// Small DOM helpers shared by the dashboard and the portal (no framework, no build step).
"use strict";

/** Creates an element: h("a", {href: "#"}, "text", child, ...). Text is never parsed as HTML. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A table of rows; columns are [heading, row => cell]. */
function table(rows, columns, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty || "Nothing here yet.");
  return h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, columns.map(([title]) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows.map(row => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row))))))));
}

/** The status line of the form being submitted (see act() in dashboard.js). */
let formStatus = null;

/** A form whose fields are [name, label, attrs]; submit gets the values as an object. */
function form(fields, submitLabel, onSubmit, attrs) {
  const el = h("form", Object.assign({ class: "inline" }, attrs || {}),
    fields.map(([name, label, extra]) => {
      const input = extra && extra.options
        ? h("select", { name, id: extra.id }, extra.options.map(o => Array.isArray(o) ? h("option", { value: o[0] }, o[1]) : h("option", { value: o }, o)))
        : h(extra && extra.textarea ? "textarea" : "input", Object.assign({ name, id: extra && extra.id }, extra && extra.attrs));
      if (extra && extra.value !== undefined) input.value = extra.value;
      return h("label", {}, label, input);
    }),
    h("button", { type: "submit" }, submitLabel), statusLine());
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = {};
    for (const [name, , extra] of fields) {
      const input = el.elements[name];
      values[name] = extra && extra.attrs && extra.attrs.type === "checkbox" ? input.checked : input.value;
    }
    const button = el.querySelector("button[type=submit]");
    button.disabled = true;
    // act() tells the outcome here too, beside the button that asked for it.
    formStatus = el.querySelector(".status");
    say(formStatus, "");
    try { await onSubmit(values, el); } catch (error) { say(formStatus, error.message, "error"); } finally { button.disabled = false; }
  });
  return el;
}

function notice(text, kind) {
  return h("div", { class: "notice " + (kind || ""), role: kind === "error" ? "alert" : "status" }, text);
}

function badge(text) {
  return h("span", { class: "badge " + text }, text);
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

/** A status line beside an action: success and errors are announced to screen readers. */
function statusLine(id) {
  return h("span", { class: "status", id, role: "status", "aria-live": "polite" });
}

function say(line, text, kind) {
  if (!line) return;
  line.textContent = text;
  line.className = "status " + (kind || "");
}

/** A destructive action behind a confirmation that names its consequence. The button opens an
 *  inline dialog next to it (focus moves to it; Escape or Cancel closes it and changes nothing);
 *  the outcome is told on the status line beside the button. `run` returns the success text. */
function confirmAction({ id, label, consequence, confirmLabel, run }) {
  const status = statusLine(id + "-status");
  const box = h("div", { class: "confirm-box", id: id + "-confirm" });
  const close = () => { box.replaceChildren(); trigger.setAttribute("aria-expanded", "false"); trigger.focus(); };
  const open = () => {
    const text = typeof consequence === "function" ? consequence() : consequence;
    const yes = h("button", { class: "danger", id: id + "-yes", onclick: async () => {
      yes.disabled = true;
      try {
        const done = await run();
        box.replaceChildren();
        say(status, done || "Done", "ok");
      } catch (error) {
        box.replaceChildren();
        say(status, error.message, "error");
      }
    } }, confirmLabel || ("Yes, " + label.toLowerCase()));
    const dialog = h("div", { class: "notice error", role: "alertdialog", "aria-labelledby": id + "-question", "aria-describedby": id + "-consequence",
      onkeydown: (e) => { if (e.key === "Escape") close(); } },
      h("p", { id: id + "-question" }, h("strong", {}, label + "?")),
      h("p", { id: id + "-consequence", class: "consequence" }, text),
      yes, " ", h("button", { class: "secondary", id: id + "-cancel", onclick: close }, "Cancel"));
    box.replaceChildren(dialog);
    trigger.setAttribute("aria-expanded", "true");
    yes.focus();
  };
  const trigger = h("button", { class: "danger", id, type: "button", "aria-expanded": "false", "aria-controls": id + "-confirm", onclick: open }, label + "…");
  return h("span", { class: "action" }, trigger, " ", status, box);
}

/** A plain (not destructive) action button with its own status line. */
function actionButton({ id, label, run, secondary }) {
  const status = statusLine(id + "-status");
  const button = h("button", { class: secondary === false ? "" : "secondary", id, type: "button", onclick: async () => {
    button.disabled = true;
    try { say(status, (await run()) || "Done", "ok"); } catch (error) { say(status, error.message, "error"); } finally { button.disabled = false; }
  } }, label);
  return h("span", { class: "action" }, button, " ", status);
}

/** "1 device", "2 devices". */
function plural(n, one, many) {
  return n + " " + (n === 1 ? one : (many || one + "s"));
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? v : v.toFixed(1)) + " " + units[i];
}

/** WCAG contrast ratio of two "#rrggbb" colours (1 to 21). */
function contrast(a, b) {
  const luminance = (hex) => {
    const [r, g, bl] = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16) / 255)
      .map(c => c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4));
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
  return (x + 0.05) / (y + 0.05);
}
