import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import SwaggerParser from "@apidevtools/swagger-parser";
import openapiTS, { astToString } from "openapi-typescript";
import ts from "typescript";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import type { DescMessage } from "@bufbuild/protobuf";
import { EventService } from "../gen/tidings/v1/event_service_pb.js";
import { WebhookService } from "../gen/tidings/v1/webhook_service_pb.js";
import { AdminService } from "../gen/tidings/v1/admin_service_pb.js";
import { loadCatalog } from "../server/catalog/catalog.js";
import { startTestServer, type TestServer } from "./helpers/test-server.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));

describe("OpenAPI document", () => {
  let t: TestServer;
  let doc: any;
  beforeAll(async () => {
    t = await startTestServer();
    const res = await fetch(`${t.url}/openapi.json`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    doc = await res.json();
  });
  afterAll(() => t.close());

  it("is a valid OpenAPI 3.1 document", async () => {
    expect(doc.openapi).toBe("3.1.0");
    // validate() dereferences in place: give it a copy.
    await expect(SwaggerParser.validate(structuredClone(doc))).resolves.toBeDefined();
  });

  it("lists every unary method as POST, and read-only ones as GET too", () => {
    for (const service of [EventService, WebhookService, AdminService]) {
      for (const method of service.methods) {
        const item = doc.paths[`/${service.typeName}/${method.name}`];
        expect(item, `${service.typeName}/${method.name}`).toBeDefined();
        if (method.methodKind !== "unary") {
          expect(item.post["x-connect-streaming"]).toBe(method.methodKind);
          expect(item.post.description).toMatch(/Connect.*gRPC/s);
          continue;
        }
        expect(item.post.requestBody.content["application/json"].schema.$ref).toBe(`#/components/schemas/${method.input.typeName}`);
        expect(item.post.responses["200"].content["application/json"].schema.$ref).toBe(`#/components/schemas/${method.output.typeName}`);
        expect(item.post.responses.default.$ref).toBe("#/components/responses/ConnectError");
        if (method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) {
          const params = Object.fromEntries(item.get.parameters.map((p: any) => [p.name, p]));
          expect(params.message.required).toBe(true);
          expect(params.encoding).toMatchObject({ required: true, schema: { enum: ["json"] } });
          expect(params.connect.schema.enum).toEqual(["v1"]);
        } else {
          expect(item.get).toBeUndefined();
        }
      }
    }
    expect(doc.paths["/tidings.v1.EventService/GetEventType"].get).toBeDefined();
    expect(doc.paths["/tidings.v1.EventService/Publish"].post.description).toContain("Publish");
    expect(doc.components.schemas["connect.Error"].properties.code.enum).toContain("invalid_argument");
  });

  it("declares bearer API keys, and the scope each operation needs", () => {
    expect(doc.components.securitySchemes.apiKey).toMatchObject({ type: "http", scheme: "bearer" });
    expect(doc.security).toEqual([{ apiKey: [] }]);
    const scopes = Object.fromEntries(Object.entries(doc.paths).map(([path, item]: [string, any]) => [path, item.post["x-tidings-scope"]]));
    expect(scopes).toMatchObject({
      "/tidings.v1.EventService/Publish": "publish",
      "/tidings.v1.EventService/ListEvents": "subscribe",
      "/tidings.v1.EventService/ListEventTypes": "any",
      "/tidings.v1.WebhookService/ListWebhooks": "webhooks:read",
      "/tidings.v1.WebhookService/CreateWebhook": "webhooks:write",
      "/tidings.v1.AdminService/CreateApiKey": "admin",
    });
    expect(Object.values(scopes).every((s) => ["publish", "subscribe", "webhooks:read", "webhooks:write", "admin", "any"].includes(s as string))).toBe(true);
  });

  it("has a schema for every catalog message, with its event type and required fields", async () => {
    const catalog = await loadCatalog();
    expect(catalog.list().length).toBeGreaterThan(10);
    for (const entry of catalog.list()) {
      const schema = doc.components.schemas[entry.message.typeName];
      expect(schema, entry.message.typeName).toBeDefined();
      expect(schema["x-tidings-event-type"]).toBe(entry.name);
      // Each required path (dotted when nested) is in its message's `required`, by its .proto
      // name: payloads are served with the .proto names.
      for (const path of entry.requiredFields) {
        const { message, name } = resolve(entry.message, path);
        expect(doc.components.schemas[message.typeName].required, `${entry.name}: ${path}`).toContain(name);
      }
    }
    const memoryCreated = doc.components.schemas["tidings.events.memory.v1.MemoryCreated"];
    expect(memoryCreated.required).toEqual(["memory_id"]);
    expect(memoryCreated.properties.ltp_strength.type).toBe("number");
    // The API's own messages keep the proto3 JSON names, as Connect serves them.
    expect(doc.components.schemas["tidings.v1.PublishRequest"].properties.idempotencyKey).toBeDefined();
    expect(doc.components.schemas["tidings.v1.Event"].properties.sequence).toMatchObject({ type: "string", pattern: "^[0-9]+$" });
    expect(doc.components.schemas["tidings.v1.Event"].properties.time).toMatchObject({ type: "string", format: "date-time" });
  });

  it("generates a client (openapi-typescript + openapi-fetch) that publishes and reads back", async () => {
    const dir = join(repoRoot, `.tmp-openapi-${process.pid}`);
    await mkdir(dir, { recursive: true });
    try {
      await writeFile(join(dir, "schema.d.ts"), astToString(await openapiTS(structuredClone(doc))));
      await writeFile(join(dir, "client.ts"), clientSource);
      // The generated types accept the calls the client makes (a mismatch fails to compile).
      const program = ts.createProgram([join(dir, "client.ts")], {
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        target: ts.ScriptTarget.ES2023,
        module: ts.ModuleKind.NodeNext,
        moduleResolution: ts.ModuleResolutionKind.NodeNext,
        types: ["node"],
      });
      const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
      expect(diagnostics).toEqual([]);

      const client = (await import(pathToFileURL(join(dir, "client.ts")).href)) as { publishAndReadBack(baseUrl: string, memoryId: string): Promise<any> };
      const result = await client.publishAndReadBack(t.url, "openapi-1");
      expect(result.published.id).toBeTruthy();
      expect(result.got.event).toMatchObject({ id: result.published.id, type: "memory.created", data: { memory_id: "openapi-1" }, sequence: result.published.sequence });
      expect(result.listed.events.map((e: any) => e.id)).toContain(result.published.id);
      expect(result.error).toMatchObject({ code: "not_found" });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("serves an HTML reference at /docs", async () => {
    const res = await fetch(`${t.url}/docs`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/html/);
    const html = await res.text();
    expect(html).toContain("<!doctype html>");
    expect(html).toContain("/tidings.v1.EventService/Publish");
    expect(html).toContain('href="#schema-tidings.events.memory.v1.MemoryCreated"');
    expect(html).toContain('id="schema-tidings.events.memory.v1.MemoryCreated"');
    expect(html).toContain("memory.created");
    // Self-contained: nothing is loaded from elsewhere.
    expect(html).not.toMatch(/<script|<link|src=/i);
  });
});

/** The message that declares the last field of a dotted .proto-name path, and that field's name. */
function resolve(root: DescMessage, path: string): { message: DescMessage; name: string } {
  const names = path.split(".");
  let message = root;
  for (let i = 0; ; i++) {
    const field = message.fields.find((f) => f.name === names[i]);
    if (!field) throw new Error(`${root.typeName}: no field ${path}`);
    if (i === names.length - 1) return { message, name: field.name };
    if (field.fieldKind !== "message" && !(field.fieldKind === "list" && field.listKind === "message")) throw new Error(`${path}: not a message`);
    message = field.message!;
  }
}

const clientSource = `import createClient from "openapi-fetch";
import type { paths } from "./schema.js";

export async function publishAndReadBack(baseUrl: string, memoryId: string) {
  const client = createClient<paths>({ baseUrl });
  const published = await client.POST("/tidings.v1.EventService/Publish", {
    body: { event: { type: "memory.created", source: "openapi/test", data: { memory_id: memoryId } }, idempotencyKey: "openapi-" + memoryId },
  });
  if (!published.data) throw new Error("publish failed: " + JSON.stringify(published.error));
  const id: string | undefined = published.data.id;
  const got = await client.POST("/tidings.v1.EventService/GetEvent", { body: { id } });
  const listed = await client.GET("/tidings.v1.EventService/ListEvents", {
    params: { query: { message: JSON.stringify({ patterns: ["memory.*"], descending: true, pageSize: 5 }), encoding: "json", connect: "v1" } },
  });
  const missing = await client.POST("/tidings.v1.EventService/GetEvent", { body: { id: "no-such-event" } });
  const code: string | undefined = missing.error?.code;
  return { published: published.data, got: got.data, listed: listed.data, error: missing.error ? { code } : undefined };
}
`;
