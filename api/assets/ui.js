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

/** A form whose fields are [name, label, attrs]; submit gets the values as an object. */
function form(fields, submitLabel, onSubmit, attrs) {
  const el = h("form", Object.assign({ class: "inline" }, attrs || {}),
    fields.map(([name, label, extra]) => {
      const input = extra && extra.options
        ? h("select", { name, id: extra.id }, extra.options.map(o => h("option", { value: o }, o)))
        : h(extra && extra.textarea ? "textarea" : "input", Object.assign({ name, id: extra && extra.id }, extra && extra.attrs));
      if (extra && extra.value !== undefined) input.value = extra.value;
      return h("label", {}, label, input);
    }),
    h("button", { type: "submit" }, submitLabel));
  el.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = {};
    for (const [name, , extra] of fields) {
      const input = el.elements[name];
      values[name] = extra && extra.attrs && extra.attrs.type === "checkbox" ? input.checked : input.value;
    }
    const button = el.querySelector("button[type=submit]");
    button.disabled = true;
    try { await onSubmit(values, el); } finally { button.disabled = false; }
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
