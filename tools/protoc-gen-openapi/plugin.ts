/**
 * protoc-gen-openapi: writes one OpenAPI 3.1 document (`tidings.openapi.json`) describing the
 * Connect protocol's JSON form of every tidings.* service, plus the event catalog's payloads.
 *
 * Run by buf as a local plugin with `strategy: all`, so a single request holds every file.
 */
import {
  create,
  createFileRegistry,
  type DescEnum,
  type DescExtension,
  type DescField,
  type DescFile,
  type DescMessage,
  type DescMethod,
  type DescService,
  getOption,
  hasOption,
  ScalarType,
} from "@bufbuild/protobuf";
import {
  type CodeGeneratorRequest,
  type CodeGeneratorResponse,
  CodeGeneratorResponse_Feature,
  CodeGeneratorResponseSchema,
  FileDescriptorSetSchema,
  MethodOptions_IdempotencyLevel,
} from "@bufbuild/protobuf/wkt";
import { getComments, type Plugin } from "@bufbuild/protoplugin";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

export const outputFileName = "tidings.openapi.json";

/** Services of these packages are described; others (gRPC reflection) are not. */
const servicePackagePrefix = "tidings.";
/** Every message of files under this directory is a catalog message and gets a schema. */
const catalogDirectory = "tidings/events/";
/** `(tidings.v1.event_type)` and `(tidings.v1.field)`, looked up by name in the request. */
const eventTypeExtensionName = "tidings.v1.event_type";
const accessExtensionName = "tidings.v1.access";
const fieldRulesExtensionName = "tidings.v1.field";

/** Connect error codes, as they appear in the JSON error body. */
export const connectErrorCodes = [
  "canceled",
  "unknown",
  "invalid_argument",
  "deadline_exceeded",
  "not_found",
  "already_exists",
  "permission_denied",
  "resource_exhausted",
  "failed_precondition",
  "aborted",
  "out_of_range",
  "unimplemented",
  "internal",
  "unavailable",
  "data_loss",
  "unauthenticated",
];

export const openapiPlugin: Plugin = {
  name: "protoc-gen-openapi",
  version: "v1",
  run(request: CodeGeneratorRequest): CodeGeneratorResponse {
    // buf runs the plugin once per input of buf.gen.yaml. Only the input holding the tidings
    // protos produces the document; the others (google/rpc, gRPC reflection) produce nothing.
    if (!request.fileToGenerate.some((name) => name.startsWith("tidings/"))) {
      return create(CodeGeneratorResponseSchema, { supportedFeatures: BigInt(CodeGeneratorResponse_Feature.PROTO3_OPTIONAL) });
    }
    const content = JSON.stringify(buildDocument(request), null, 2) + "\n";
    return create(CodeGeneratorResponseSchema, {
      supportedFeatures: BigInt(CodeGeneratorResponse_Feature.PROTO3_OPTIONAL),
      file: [{ name: outputFileName, content }],
    });
  },
};

export function buildDocument(request: CodeGeneratorRequest): JsonObject {
  const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: request.protoFile }));
  const toGenerate = request.fileToGenerate.map((name) => {
    const file = registry.getFile(name);
    if (!file) throw new Error(`protoc-gen-openapi: ${name} is not in the request`);
    return file;
  });
  const ext = {
    eventType: registry.getExtension(eventTypeExtensionName),
    fieldRules: registry.getExtension(fieldRulesExtensionName),
  };
  const builder = new SchemaBuilder(ext.eventType, ext.fieldRules);
  const access = registry.getExtension(accessExtensionName);

  const services = toGenerate.filter((f) => f.proto.package.startsWith(servicePackagePrefix)).flatMap((f) => f.services);
  const paths: JsonObject = {};
  const tags: Json[] = [];
  for (const service of services) {
    tags.push({ name: service.typeName, description: comment(service) ?? service.name });
    for (const method of service.methods) {
      paths[`/${service.typeName}/${method.name}`] = pathItem(service, method, builder, scopeOf(method, access));
    }
  }
  // The catalog: every message (nested ones too) of the event files, in file order.
  for (const file of toGenerate.filter((f) => f.name.startsWith(catalogDirectory))) {
    for (const message of allMessages(file.messages)) builder.message(message);
    for (const e of allEnums(file)) builder.enum(e);
  }

  return {
    openapi: "3.1.0",
    info: {
      title: "Tidings",
      version: "v1",
      summary: "Schema-first event hub: the Connect protocol's JSON form of the Tidings API.",
      description:
        "Every unary method is a `POST` of JSON to `/<package>.<Service>/<Method>` (the Connect protocol). " +
        "Read-only methods also answer `GET` with the request in the `message` query parameter. " +
        "Messages use the proto3 JSON mapping: lowerCamelCase names (the .proto names are accepted too), " +
        "64-bit integers as strings, enums by name. Errors answer a non-2xx status with the Connect error body. " +
        "Server-streaming methods (Subscribe) need a Connect, gRPC or gRPC-Web client.",
      license: { name: "Proprietary", identifier: "LicenseRef-Tidings" },
    },
    servers: [{ url: "http://127.0.0.1:7233", description: "A local server with the default configuration" }],
    // Every method needs an API key unless the server runs open (--auth open, loopback only).
    security: [{ apiKey: [] }],
    tags,
    paths,
    components: {
      securitySchemes: {
        apiKey: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "tid_ and 40 letters and digits",
          description: "A Tidings API key. Each operation's `x-tidings-scope` names the scope it needs; admin keys may call everything.",
        },
      },
      schemas: { ...builder.schemas, "connect.Error": connectErrorSchema(), "connect.ErrorDetail": connectErrorDetailSchema() },
      responses: {
        ConnectError: {
          description: "A Connect error: the HTTP status follows from `code`.",
          content: { "application/json": { schema: { $ref: "#/components/schemas/connect.Error" } } },
        },
      },
    },
  };
}

/** The scope a method's `(tidings.v1.access)` rule names, as the API key docs write it. */
function scopeOf(method: DescMethod, access: DescExtension | undefined): string {
  if (!access || !hasOption(method as never, access)) return "none: no key may call it";
  const rule = getOption(method as never, access) as unknown as { scope?: number; anyScope?: boolean };
  if (rule.anyScope) return "any";
  // The values of tidings.v1.Scope, in access.proto's numbering.
  return ["unspecified", "publish", "subscribe", "webhooks:read", "webhooks:write", "admin"][rule.scope ?? 0] ?? "admin";
}

function pathItem(service: DescService, method: DescMethod, builder: SchemaBuilder, scope: string): JsonObject {
  const input = builder.ref(method.input);
  const output = builder.ref(method.output);
  const description = comment(method);
  const base = {
    tags: [service.typeName],
    summary: `${service.name}.${method.name}`,
    ...(description ? { description } : {}),
    "x-tidings-scope": scope,
  };
  if (method.methodKind !== "unary") {
    return {
      post: {
        ...base,
        operationId: `${service.name}_${method.name}`,
        description:
          `${description ? description + "\n\n" : ""}This is a ${method.methodKind.replace("_", "-")} method. ` +
          "It cannot be called with plain JSON request/response: use a Connect client (Connect streaming protocol, " +
          "`application/connect+json` with enveloped messages), a gRPC client or a gRPC-Web client.",
        "x-connect-streaming": method.methodKind,
        requestBody: {
          description: "One enveloped request message (Connect streaming protocol).",
          content: { "application/connect+json": { schema: input } },
        },
        responses: {
          "200": {
            description: "A stream of enveloped response messages (Connect streaming protocol).",
            content: { "application/connect+json": { schema: output } },
          },
          default: { $ref: "#/components/responses/ConnectError" },
        },
      },
    };
  }
  const responses = {
    "200": { description: `${method.output.name}`, content: { "application/json": { schema: output } } },
    default: { $ref: "#/components/responses/ConnectError" },
  };
  const item: JsonObject = {
    post: {
      ...base,
      operationId: `${service.name}_${method.name}`,
      parameters: [connectVersionHeader()],
      requestBody: { required: true, content: { "application/json": { schema: input } } },
      responses,
    },
  };
  if (method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) {
    item.get = {
      ...base,
      operationId: `${service.name}_${method.name}_get`,
      parameters: [
        {
          name: "message",
          in: "query",
          required: true,
          description: `The ${method.input.name}, as JSON (URL-encoded).`,
          content: { "application/json": { schema: input } },
        },
        { name: "encoding", in: "query", required: true, description: "The message's encoding.", schema: { type: "string", enum: ["json"] } },
        { name: "connect", in: "query", required: false, description: "The Connect protocol version.", schema: { type: "string", enum: ["v1"] } },
      ],
      responses,
    };
  }
  return item;
}

function connectVersionHeader(): JsonObject {
  return {
    name: "Connect-Protocol-Version",
    in: "header",
    required: false,
    description: "The Connect protocol version; optional for this server.",
    schema: { type: "string", enum: ["1"] },
  };
}

function connectErrorSchema(): JsonObject {
  return {
    type: "object",
    description: "The Connect protocol's error body.",
    properties: {
      code: { type: "string", enum: connectErrorCodes, description: "The Connect error code." },
      message: { type: "string", description: "A developer-facing message; here it names the field at fault." },
      details: { type: "array", items: { $ref: "#/components/schemas/connect.ErrorDetail" } },
    },
    required: ["code"],
  };
}

function connectErrorDetailSchema(): JsonObject {
  return {
    type: "object",
    description: "An error detail, e.g. `google.rpc.BadRequest` with the field violations.",
    properties: {
      type: { type: "string", description: "The detail's fully-qualified message name, e.g. `google.rpc.BadRequest`." },
      value: { type: "string", contentEncoding: "base64", description: "The detail message in the protobuf binary format, base64-encoded." },
      debug: { description: "The detail in JSON, for debugging." },
    },
    required: ["type", "value"],
  };
}

/** Collects component schemas for messages and enums, following references. */
class SchemaBuilder {
  readonly schemas: JsonObject = {};

  constructor(
    private readonly eventTypeExt: DescExtension | undefined,
    private readonly fieldRulesExt: DescExtension | undefined,
  ) {}

  /** A schema for a field of this message type: a `$ref`, or inline for well-known types. */
  ref(message: DescMessage): JsonObject {
    const wkt = wellKnownSchemas[message.typeName];
    if (wkt) return wkt;
    this.message(message);
    return { $ref: `#/components/schemas/${message.typeName}` };
  }

  /**
   * The JSON property name of a field. Event payloads (the catalog) use the .proto names, as
   * Tidings serves them in Event.data and GetEventType's JSON Schema (lowerCamelCase is accepted
   * on input too); the API's own messages use the proto3 JSON names, as Connect does.
   */
  propertyName(field: DescField): string {
    return field.parent.file.name.startsWith(catalogDirectory) ? field.name : field.jsonName;
  }

  message(message: DescMessage): void {
    if (message.typeName in this.schemas || wellKnownSchemas[message.typeName]) return;
    this.schemas[message.typeName] = {}; // placeholder first: recursive messages terminate
    const properties: JsonObject = {};
    const required: string[] = [];
    for (const field of message.fields) {
      const rules = this.rules(field);
      let schema = this.field(field);
      if (rules && rules.allowedValues.length > 0) {
        schema = field.fieldKind === "list" ? { ...schema, items: { type: "string", enum: rules.allowedValues } } : { type: "string", enum: rules.allowedValues };
      }
      const notes: string[] = [];
      const doc = comment(field);
      if (doc) notes.push(doc);
      if (field.oneof) {
        notes.push(`Part of oneof \`${field.oneof.name}\`: at most one of ${field.oneof.fields.map((f) => `\`${this.propertyName(f)}\``).join(", ")} is set.`);
      }
      properties[this.propertyName(field)] = notes.length > 0 ? withDescription(schema, notes.join("\n\n")) : schema;
      if (rules?.required) required.push(this.propertyName(field));
    }
    const notes: string[] = [];
    const doc = comment(message);
    if (doc) notes.push(doc);
    for (const oneof of message.oneofs) {
      notes.push(`Oneof \`${oneof.name}\`: at most one of ${oneof.fields.map((f) => `\`${this.propertyName(f)}\``).join(", ")} is set.`);
    }
    const schema: JsonObject = { type: "object", title: message.name };
    if (notes.length > 0) schema.description = notes.join("\n\n");
    schema.properties = properties;
    if (required.length > 0) schema.required = required;
    if (message.oneofs.length > 0) {
      schema["x-oneofs"] = Object.fromEntries(message.oneofs.map((o) => [o.name, o.fields.map((f) => this.propertyName(f))]));
      // At most one member of each oneof: no two members present together.
      const pairs: Json[] = [];
      for (const oneof of message.oneofs) {
        const names = oneof.fields.map((f) => this.propertyName(f));
        for (let i = 0; i < names.length; i++) for (let j = i + 1; j < names.length; j++) pairs.push({ required: [names[i]!, names[j]!] });
      }
      if (pairs.length > 0) schema.not = { anyOf: pairs };
    }
    const eventType = this.eventType(message);
    if (eventType) {
      schema["x-tidings-event-type"] = eventType.name;
      if (eventType.description) schema["x-tidings-event-description"] = eventType.description;
    }
    this.schemas[message.typeName] = schema;
  }

  enum(e: DescEnum): JsonObject {
    if (!(e.typeName in this.schemas)) {
      const doc = comment(e);
      this.schemas[e.typeName] = {
        type: "string",
        title: e.name,
        ...(doc ? { description: doc } : {}),
        enum: e.values.map((v) => v.name),
      };
    }
    return { $ref: `#/components/schemas/${e.typeName}` };
  }

  private field(field: DescField): JsonObject {
    switch (field.fieldKind) {
      case "scalar":
        return scalarSchema(field.scalar);
      case "enum":
        return this.enumField(field.enum);
      case "message":
        return this.ref(field.message);
      case "list":
        return {
          type: "array",
          items: field.listKind === "scalar" ? scalarSchema(field.scalar) : field.listKind === "enum" ? this.enumField(field.enum) : this.ref(field.message),
        };
      case "map":
        return {
          type: "object",
          ...(field.mapKey === ScalarType.STRING ? {} : { propertyNames: { pattern: mapKeyPattern(field.mapKey) } }),
          additionalProperties: field.mapKind === "scalar" ? scalarSchema(field.scalar) : field.mapKind === "enum" ? this.enumField(field.enum) : this.ref(field.message),
        };
    }
  }

  private enumField(e: DescEnum): JsonObject {
    if (e.typeName === "google.protobuf.NullValue") return { type: "null" };
    return this.enum(e);
  }

  private rules(field: DescField): { required: boolean; allowedValues: string[] } | undefined {
    const ext = this.fieldRulesExt;
    if (!ext || !hasOption(field as never, ext)) return undefined;
    const value = getOption(field as never, ext) as unknown as { required?: boolean; allowedValues?: string[] };
    return { required: value.required ?? false, allowedValues: value.allowedValues ?? [] };
  }

  private eventType(message: DescMessage): { name: string; description: string } | undefined {
    const ext = this.eventTypeExt;
    if (!ext || !hasOption(message as never, ext)) return undefined;
    const value = getOption(message as never, ext) as unknown as { name?: string; description?: string };
    return value.name ? { name: value.name, description: value.description ?? "" } : undefined;
  }
}

function withDescription(schema: JsonObject, description: string): JsonObject {
  // A `$ref` may have siblings in OpenAPI 3.1 (JSON Schema 2020-12).
  return { ...schema, description };
}

function mapKeyPattern(key: ScalarType): string {
  switch (key) {
    case ScalarType.BOOL:
      return "^(true|false)$";
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return "^[0-9]+$";
    default:
      return "^-?[0-9]+$";
  }
}

function scalarSchema(type: ScalarType): JsonObject {
  switch (type) {
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.BYTES:
      return { type: "string", contentEncoding: "base64" };
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return { type: "number" };
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return { type: "string", format: "int64", pattern: "^-?[0-9]+$" };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return { type: "string", format: "uint64", pattern: "^[0-9]+$" };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", format: "uint32", minimum: 0, maximum: 4294967295 };
    default:
      return { type: "integer", format: "int32", minimum: -2147483648, maximum: 2147483647 };
  }
}

const wellKnownSchemas: Record<string, JsonObject> = {
  "google.protobuf.Timestamp": { type: "string", format: "date-time" },
  "google.protobuf.Duration": { type: "string", pattern: "^-?[0-9]+(\\.[0-9]{1,9})?s$", description: "A duration in seconds with an `s` suffix, e.g. `1.5s`." },
  "google.protobuf.Struct": { type: "object", additionalProperties: true },
  "google.protobuf.Value": {},
  "google.protobuf.ListValue": { type: "array", items: {} },
  "google.protobuf.Empty": { type: "object" },
  "google.protobuf.FieldMask": { type: "string", description: "Comma-separated field paths in lowerCamelCase." },
  "google.protobuf.Any": {
    type: "object",
    properties: { "@type": { type: "string", description: "The type URL, e.g. `type.googleapis.com/<message full name>`." } },
    required: ["@type"],
    additionalProperties: true,
  },
  "google.protobuf.StringValue": { type: "string" },
  "google.protobuf.BoolValue": { type: "boolean" },
  "google.protobuf.DoubleValue": { type: "number" },
  "google.protobuf.FloatValue": { type: "number" },
  "google.protobuf.Int32Value": { type: "integer", format: "int32" },
  "google.protobuf.UInt32Value": { type: "integer", format: "uint32", minimum: 0 },
  "google.protobuf.Int64Value": { type: "string", format: "int64", pattern: "^-?[0-9]+$" },
  "google.protobuf.UInt64Value": { type: "string", format: "uint64", pattern: "^[0-9]+$" },
  "google.protobuf.BytesValue": { type: "string", contentEncoding: "base64" },
};

/** The leading comment of an element (trailing when there is none), trimmed, or undefined. */
function comment(desc: DescMessage | DescField | DescEnum | DescService | DescMethod): string | undefined {
  const c = getComments(desc);
  const text = (c.leading ?? c.trailing ?? "")
    .split("\n")
    .map((line) => line.replace(/^ /, "").trimEnd())
    .join("\n")
    .trim();
  return text || undefined;
}

function* allMessages(messages: readonly DescMessage[]): Iterable<DescMessage> {
  for (const m of messages) {
    if (m.proto.options?.mapEntry) continue;
    yield m;
    yield* allMessages(m.nestedMessages);
  }
}

function* allEnums(file: DescFile): Iterable<DescEnum> {
  yield* file.enums;
  for (const m of allMessages(file.messages)) yield* m.nestedEnums;
}
