/**
 * A self-contained HTML reference page built from the OpenAPI document: no scripts, no CDN,
 * so it works offline. Endpoints are grouped by service; schema names link to a schemas section.
 */

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

const httpMethods = ["get", "post", "put", "patch", "delete"] as const;

export function buildDocsPage(doc: JsonObject): string {
  const info = asObject(doc.info);
  const title = str(info.title) || "API";
  const paths = asObject(doc.paths);
  const schemas = asObject(asObject(doc.components).schemas);

  // Endpoints by tag (one tag per service), in document order.
  const groups = new Map<string, { method: string; path: string; op: JsonObject }[]>();
  for (const tag of asArray(doc.tags)) groups.set(str(asObject(tag).name), []);
  for (const [path, item] of Object.entries(paths)) {
    for (const method of httpMethods) {
      const op = asObject(asObject(item)[method]);
      if (Object.keys(op).length === 0) continue;
      const tag = str(asArray(op.tags)[0]) || "default";
      if (!groups.has(tag)) groups.set(tag, []);
      groups.get(tag)!.push({ method, path, op });
    }
  }
  const tagDescriptions = new Map(asArray(doc.tags).map((t) => [str(asObject(t).name), str(asObject(t).description)]));

  const out: string[] = [];
  out.push(
    "<!doctype html>",
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>${esc(title)} API reference</title>`,
    `<style>${css}</style>`,
    "</head><body>",
    `<header><h1>${esc(title)} API reference</h1><p>OpenAPI ${esc(str(doc.openapi))}, version ${esc(str(info.version))}. `,
    'The machine-readable document is at <a href="/openapi.json">/openapi.json</a>.</p>',
    `<p>${text(str(info.description))}</p></header>`,
    "<nav><h2>Contents</h2><ul>",
  );
  for (const tag of groups.keys()) out.push(`<li><a href="#${anchor("service", tag)}">${esc(tag)}</a></li>`);
  const eventTypes = Object.entries(schemas)
    .map(([name, value]) => ({ name, eventType: str(asObject(value)["x-tidings-event-type"]) }))
    .filter((e) => e.eventType)
    .sort((a, b) => a.eventType.localeCompare(b.eventType));
  if (eventTypes.length > 0) out.push('<li><a href="#event-catalog">Event catalog</a></li>');
  out.push('<li><a href="#schemas">Schemas</a></li></ul></nav><main>');

  for (const [tag, ops] of groups) {
    out.push(`<section class="service" id="${anchor("service", tag)}"><h2>${esc(tag)}</h2>`);
    const description = tagDescriptions.get(tag);
    if (description) out.push(`<p>${text(description)}</p>`);
    for (const { method, path, op } of ops) {
      out.push(`<article class="endpoint" id="${anchor("op", str(op.operationId) || `${method} ${path}`)}">`);
      out.push(`<h3><span class="method ${method}">${method.toUpperCase()}</span> <code>${esc(path)}</code></h3>`);
      if (op.description) out.push(`<p>${text(str(op.description))}</p>`);
      if (op["x-connect-streaming"]) out.push(`<p class="note">Streaming (${esc(str(op["x-connect-streaming"]))}): needs a Connect, gRPC or gRPC-Web client.</p>`);
      const request = requestSchema(op);
      if (request) out.push(`<p><strong>Request:</strong> ${schemaLink(request)}${method === "get" ? " (as JSON in the <code>message</code> query parameter, with <code>encoding=json</code>)" : ""}</p>`);
      const response = responseSchema(op);
      if (response) out.push(`<p><strong>Response:</strong> ${schemaLink(response)}</p>`);
      out.push(`<p><strong>Errors:</strong> ${schemaLink("#/components/schemas/connect.Error")}</p>`);
      out.push("</article>");
    }
    out.push("</section>");
  }

  if (eventTypes.length > 0) {
    out.push('<section id="event-catalog"><h2>Event catalog</h2>');
    out.push("<p>The payload (<code>data</code>) of each event type. Its JSON may use the .proto field names or the lowerCamelCase names shown.</p>");
    out.push("<table><thead><tr><th>Event type</th><th>Payload schema</th></tr></thead><tbody>");
    for (const e of eventTypes) out.push(`<tr><td><code>${esc(e.eventType)}</code></td><td>${schemaLink(e.name)}</td></tr>`);
    out.push("</tbody></table></section>");
  }

  out.push('<section id="schemas"><h2>Schemas</h2>');
  for (const [name, value] of Object.entries(schemas)) out.push(schemaSection(name, asObject(value)));
  out.push("</section></main></body></html>");
  return out.join("\n") + "\n";
}

function requestSchema(op: JsonObject): string | undefined {
  const content = asObject(asObject(op.requestBody).content);
  const body = Object.values(content).map((c) => str(asObject(asObject(c).schema).$ref)).find(Boolean);
  if (body) return body;
  for (const p of asArray(op.parameters)) {
    const param = asObject(p);
    if (param.name !== "message") continue;
    const ref = Object.values(asObject(param.content)).map((c) => str(asObject(asObject(c).schema).$ref)).find(Boolean);
    if (ref) return ref;
  }
  return undefined;
}

function responseSchema(op: JsonObject): string | undefined {
  const ok = asObject(asObject(op.responses)["200"]);
  return Object.values(asObject(ok.content)).map((c) => str(asObject(asObject(c).schema).$ref)).find(Boolean);
}

function schemaSection(name: string, schema: JsonObject): string {
  const out = [`<article class="schema" id="${anchor("schema", name)}"><h3>${esc(name)}</h3>`];
  if (schema["x-tidings-event-type"]) out.push(`<p class="note">Payload of event type <code>${esc(str(schema["x-tidings-event-type"]))}</code></p>`);
  if (schema.description) out.push(`<p>${text(str(schema.description))}</p>`);
  if (Array.isArray(schema.enum)) {
    out.push(`<p>One of: ${schema.enum.map((v) => `<code>${esc(String(v))}</code>`).join(", ")}</p>`);
  }
  const properties = asObject(schema.properties);
  if (Object.keys(properties).length > 0) {
    const required = new Set(asArray(schema.required).map(str));
    out.push("<table><thead><tr><th>Field</th><th>Type</th><th>Description</th></tr></thead><tbody>");
    for (const [prop, value] of Object.entries(properties)) {
      const p = asObject(value);
      out.push(
        `<tr><td><code>${esc(prop)}</code>${required.has(prop) ? ' <span class="req">required</span>' : ""}</td>` +
          `<td>${typeOf(p)}</td><td>${text(str(p.description))}</td></tr>`,
      );
    }
    out.push("</tbody></table>");
  }
  out.push("</article>");
  return out.join("\n");
}

/** A short HTML rendering of a property's type, with schema references linked. */
function typeOf(schema: JsonObject): string {
  if (typeof schema.$ref === "string") return schemaLink(schema.$ref);
  if (Array.isArray(schema.enum)) return `enum (${schema.enum.map((v) => `<code>${esc(String(v))}</code>`).join(" | ")})`;
  const type = Array.isArray(schema.type) ? schema.type.map(str).join(" | ") : str(schema.type);
  if (type === "array") return `array of ${typeOf(asObject(schema.items))}`;
  if (type === "object" && schema.additionalProperties && typeof schema.additionalProperties === "object") {
    return `map of ${typeOf(asObject(schema.additionalProperties))}`;
  }
  if (!type) return "any";
  return esc(type) + (schema.format ? ` <small>(${esc(str(schema.format))})</small>` : "");
}

function schemaLink(ref: string): string {
  const name = ref.replace(/^#\/components\/schemas\//, "");
  return `<a href="#${anchor("schema", name)}"><code>${esc(name)}</code></a>`;
}

function anchor(kind: string, name: string): string {
  return `${kind}-${name.replace(/[^A-Za-z0-9._-]/g, "-")}`;
}

/** Escaped text with `code` spans and paragraphs kept. */
function text(s: string): string {
  return esc(s)
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\n\n+/g, "<br><br>");
}

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function asObject(v: Json | undefined): JsonObject {
  return v !== null && typeof v === "object" && !Array.isArray(v) ? v : {};
}

function asArray(v: Json | undefined): Json[] {
  return Array.isArray(v) ? v : [];
}

function str(v: Json | undefined): string {
  return typeof v === "string" ? v : "";
}

const css = `
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#fafbfc}
header,main,nav{max-width:1000px;margin:0 auto;padding:0 24px}
header{padding-top:16px}
h2{border-bottom:1px solid #d8dde6;padding-bottom:4px;margin-top:40px}
article{background:#fff;border:1px solid #e1e5ec;border-radius:6px;padding:4px 16px;margin:12px 0}
code{font:13px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f0f2f5;padding:1px 4px;border-radius:3px}
.method{display:inline-block;min-width:52px;text-align:center;color:#fff;border-radius:4px;font-size:13px;padding:2px 6px}
.method.post{background:#1f7a4d}.method.get{background:#1f5f9e}
.note{color:#6b4e00;background:#fff6db;padding:4px 8px;border-radius:4px}
.req{color:#a8321c;font-size:12px}
table{border-collapse:collapse;width:100%;margin:8px 0 12px}
th,td{border-top:1px solid #e8ebf0;padding:4px 8px;text-align:left;vertical-align:top}
th{font-weight:600;background:#f5f7fa}
a{color:#1f5f9e}
`;
