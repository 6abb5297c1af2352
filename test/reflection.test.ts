import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { decode, reflectionClient } from "./helpers/reflection-client.js";
import { startTestServer, type TestServer } from "./helpers/test-server.js";

describe("gRPC server reflection", () => {
  let t: TestServer;
  beforeAll(async () => {
    t = await startTestServer();
  });
  afterAll(() => t.close());

  for (const version of ["v1", "v1alpha"] as const) {
    it(`answers grpc.reflection.${version}`, async () => {
      const r = reflectionClient(new URL(t.url).host, version);
      try {
        const services = await r.ask({ list_services: "*" });
        expect(services.list_services_response.service.map((s: { name: string }) => s.name)).toEqual(
          expect.arrayContaining(["tidings.v1.EventService", "tidings.v1.WebhookService", "tidings.v1.AdminService", `grpc.reflection.${version}.ServerReflection`]),
        );

        const eventService = decode(await r.ask({ file_containing_symbol: "tidings.v1.EventService" }));
        expect(eventService.map((f) => f.name)).toEqual(expect.arrayContaining(["tidings/v1/event_service.proto", "tidings/v1/event.proto", "google/protobuf/timestamp.proto"]));
        // Dependencies come first, the requested file last.
        expect(eventService.at(-1)!.name).toBe("tidings/v1/event_service.proto");

        // Already-sent dependencies are not sent again on this stream.
        const memory = decode(await r.ask({ file_containing_symbol: "tidings.events.memory.v1.MemoryCreated" }));
        expect(memory.map((f) => f.name)).toContain("tidings/events/memory/v1/memory.proto");
        expect(memory.map((f) => f.name)).not.toContain("google/protobuf/timestamp.proto");

        const byName = decode(await r.ask({ file_by_filename: "tidings/v1/webhook_service.proto" }));
        expect(byName.at(-1)!.service[0]!.name).toBe("WebhookService");

        const method = decode(await r.ask({ file_containing_symbol: "tidings.v1.WebhookService.CreateWebhook" }));
        expect(method.at(-1)!.name).toBe("tidings/v1/webhook_service.proto");

        const ext = decode(await r.ask({ file_containing_extension: { containing_type: "google.protobuf.MessageOptions", extension_number: 51000 } }));
        expect(ext.at(-1)!.name).toBe("tidings/v1/options.proto");
        const numbers = await r.ask({ all_extension_numbers_of_type: "google.protobuf.FieldOptions" });
        expect(numbers.all_extension_numbers_response.extension_number).toContain(51000);

        const missing = await r.ask({ file_containing_symbol: "no.such.Thing" });
        expect(missing.error_response.error_code).toBe(5);
      } finally {
        r.close();
      }
    });
  }

  it("gives a client everything it needs to call the API with no .proto files", async () => {
    const r = reflectionClient(new URL(t.url).host, "v1");
    let files: FileDescriptorProto[];
    try {
      files = decode(await r.ask({ file_containing_symbol: "tidings.v1.EventService" }));
    } finally {
      r.close();
    }
    const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: files }));
    const service = registry.getService("tidings.v1.EventService")!;
    expect(service.methods.map((m) => m.name)).toContain("ListEventTypes");
    const client = createClient(service, createGrpcTransport({ baseUrl: t.url })) as any;
    const res = await client.listEventTypes({ patterns: ["risk.*"] });
    expect(res.eventTypes.map((e: { name: string }) => e.name)).toEqual(["risk.alert"]);
  });
});
