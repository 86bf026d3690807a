// The API reference: /openapi.json rendered without any library (nothing from a CDN).
"use strict";

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (name === "text") node.textContent = value; else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function refName(schema) {
  if (!schema) return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.type === "array") return `${refName(schema.items)}[]`;
  return schema.type || "object";
}

function schemaTable(name, schema) {
  const props = Object.entries(schema.properties || {});
  return h("details", { class: "op", id: `schema-${name}` },
    h("summary", {}, h("span", { class: "path", text: name }), h("span", { class: "muted", text: schema.description || "" })),
    h("div", { class: "body" }, h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Field" }), h("th", { text: "Type" }), h("th", { text: "Description" }))),
      h("tbody", {}, props.map(([field, s]) => h("tr", {}, h("td", { text: field }),
        h("td", { text: refName(s) + (s.enum ? ` (${s.enum.join(", ")})` : "") }), h("td", { text: s.description || "" })))))));
}

function operation(path, method, op) {
  const params = op.parameters || [];
  const body = op.requestBody && op.requestBody.content && op.requestBody.content["application/json"];
  return h("details", { class: "op", "data-path": path },
    h("summary", {}, h("span", { class: `method ${method}`, text: method }), h("span", { class: "path", text: path }),
      h("span", { class: "muted", text: op.summary || "" })),
    h("div", { class: "body" },
      h("p", { text: op.description || "" }),
      params.length ? h("table", {}, h("thead", {}, h("tr", {}, ["Parameter", "In", "Type", "Required", "Description"].map((t) => h("th", { text: t })))),
        h("tbody", {}, params.map((p) => h("tr", {}, h("td", { text: p.name }), h("td", { text: p.in }),
          h("td", { text: refName(p.schema) }), h("td", { text: p.required ? "yes" : "" }), h("td", { text: p.description || "" }))))) : null,
      body ? h("p", {}, "Body: ", h("a", { href: `#schema-${refName(body.schema)}`, text: refName(body.schema) })) : null,
      h("p", {}, "Responses: ", Object.entries(op.responses || {}).map(([code, r]) => {
        const content = r.content && r.content["application/json"];
        return h("span", {}, ` ${code} `, content ? h("a", { href: `#schema-${refName(content.schema)}`, text: refName(content.schema) }) : r.description || "");
      }))));
}

async function main() {
  const root = document.getElementById("docs");
  const response = await fetch("/openapi.json");
  if (!response.ok) {
    const box = document.getElementById("error");
    box.textContent = `HTTP ${response.status}: ${await response.text()}`;
    box.hidden = false;
    return;
  }
  const doc = await response.json();
  const byTag = new Map();
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const [method, op] of Object.entries(item)) {
      if (!["get", "post", "put", "patch", "delete"].includes(method)) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op));
    }
  }
  const schemas = Object.entries((doc.components && doc.components.schemas) || {});
  root.replaceChildren(
    h("h1", { text: `${doc.info.title} ${doc.info.version}` }),
    h("p", { text: doc.info.description || "" }),
    ...[...byTag.entries()].map(([tag, ops]) => h("section", {}, h("h2", { class: "tag", text: tag }), ops)),
    h("h2", { class: "tag", text: "Schemas" }), schemas.map(([name, s]) => schemaTable(name, s)));
  document.getElementById("docs-filter").addEventListener("input", (event) => {
    const needle = event.target.value.toLowerCase();
    for (const op of document.querySelectorAll("details[data-path]")) {
      op.hidden = needle !== "" && !op.dataset.path.toLowerCase().includes(needle);
    }
  });
}

main();
