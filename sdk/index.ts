/**
 * The Tidings TypeScript client: the generated EventService on the transport of your choice.
 * It depends only on @connectrpc/connect(-node) and @bufbuild/protobuf, not on the server.
 */
import { type Client, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { create, type DescMessage, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import { AnySchema, type Any } from "@bufbuild/protobuf/wkt";
import { EventService } from "../gen/tidings/v1/event_service_pb.js";
import { event_type } from "../gen/tidings/v1/options_pb.js";
import { getOption } from "@bufbuild/protobuf";

export { EventService };
export * from "../gen/tidings/v1/event_pb.js";
export * from "../gen/tidings/v1/event_service_pb.js";

export type TransportKind = "connect" | "grpc" | "grpc-web";

export interface ClientOptions {
  /** e.g. http://localhost:7233 */
  baseUrl: string;
  /** Wire protocol; Connect by default. All three are served on the same port. */
  transport?: TransportKind;
}

/** A client for EventService. Payloads travel in protobuf binary, so no type registry is needed. */
export function createTidingsClient(options: ClientOptions): Client<typeof EventService> {
  const { baseUrl } = options;
  const transport =
    options.transport === "grpc"
      ? createGrpcTransport({ baseUrl })
      : options.transport === "grpc-web"
        ? createGrpcWebTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true })
        : createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
  return createClient(EventService, transport);
}

/** The event type a catalog message declares, e.g. "memory.created" for MemoryCreatedSchema. */
export function eventTypeOf(schema: DescMessage): string {
  const name = getOption(schema, event_type).name;
  if (!name) throw new Error(`${schema.typeName} is not an event type of the catalog`);
  return name;
}

/** Packs a catalog message for `Event.proto_data`. */
export function packPayload<Desc extends DescMessage>(schema: Desc, init: MessageInitShape<Desc>): Any {
  const message = create(schema, init) as MessageShape<Desc>;
  return create(AnySchema, { typeUrl: `type.googleapis.com/${schema.typeName}`, value: toBinary(schema, message) });
}
