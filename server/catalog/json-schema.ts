import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import type { JsonObject } from "@bufbuild/protobuf";
import { fieldRules } from "./catalog.js";

/**
 * A JSON Schema (2020-12) for a message in the proto3 JSON mapping with the .proto field names,
 * the form `Event.data` takes. Nested messages go to `$defs`.
 */
export function jsonSchemaFor(message: DescMessage, description: string): JsonObject {
  const defs: Record<string, JsonObject> = {};
  const root = messageSchema(message, defs);
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    $id: `urn:tidings:schema:${message.typeName}`,
    title: message.name,
    description,
    ...root,
    ...(Object.keys(defs).length > 0 ? { $defs: defs } : {}),
  };
}

function messageSchema(message: DescMessage, defs: Record<string, JsonObject>): JsonObject {
  const properties: Record<string, JsonObject> = {};
  const required: string[] = [];
  for (const field of message.fields) {
    const rules = fieldRules(field);
    let schema = fieldSchema(field, defs);
    if (rules && rules.allowedValues.length > 0) {
      schema = field.fieldKind === "list"
        ? { ...schema, items: { type: "string", enum: rules.allowedValues } }
        : { type: "string", enum: rules.allowedValues };
    }
    properties[field.name] = schema;
    if (rules?.required) required.push(field.name);
  }
  return {
    type: "object",
    properties,
    ...(required.length > 0 ? { required } : {}),
    additionalProperties: false,
  };
}

function fieldSchema(field: DescField, defs: Record<string, JsonObject>): JsonObject {
  switch (field.fieldKind) {
    case "scalar":
      return scalarSchema(field.scalar);
    case "enum":
      return { type: "string", enum: field.enum.values.map((v) => v.name) };
    case "message":
      return messageRef(field.message, defs);
    case "list":
      return {
        type: "array",
        items: field.listKind === "scalar" ? scalarSchema(field.scalar) : field.listKind === "enum"
          ? { type: "string", enum: field.enum.values.map((v) => v.name) }
          : messageRef(field.message, defs),
      };
    case "map":
      return {
        type: "object",
        additionalProperties: field.mapKind === "scalar" ? scalarSchema(field.scalar) : field.mapKind === "enum"
          ? { type: "string", enum: field.enum.values.map((v) => v.name) }
          : messageRef(field.message, defs),
      };
  }
}

function messageRef(message: DescMessage, defs: Record<string, JsonObject>): JsonObject {
  const wkt = wellKnownSchemas[message.typeName];
  if (wkt) return wkt;
  if (!(message.typeName in defs)) {
    defs[message.typeName] = {}; // placeholder first: recursive messages terminate
    defs[message.typeName] = messageSchema(message, defs);
  }
  return { $ref: `#/$defs/${message.typeName}` };
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
      return { type: ["integer", "string"], pattern: "^-?[0-9]+$" };
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return { type: ["integer", "string"], pattern: "^[0-9]+$", minimum: 0 };
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return { type: "integer", minimum: 0, maximum: 4294967295 };
    default:
      return { type: "integer", minimum: -2147483648, maximum: 2147483647 };
  }
}

const wellKnownSchemas: Record<string, JsonObject> = {
  "google.protobuf.Timestamp": { type: "string", format: "date-time" },
  "google.protobuf.Duration": { type: "string", pattern: "^-?[0-9]+(\\.[0-9]+)?s$" },
  "google.protobuf.Struct": { type: "object" },
  "google.protobuf.Value": {},
  "google.protobuf.ListValue": { type: "array" },
  "google.protobuf.Empty": { type: "object", additionalProperties: false },
  "google.protobuf.FieldMask": { type: "string" },
  "google.protobuf.Any": { type: "object", properties: { "@type": { type: "string" } }, required: ["@type"] },
  "google.protobuf.StringValue": { type: "string" },
  "google.protobuf.BoolValue": { type: "boolean" },
  "google.protobuf.DoubleValue": { type: "number" },
  "google.protobuf.FloatValue": { type: "number" },
  "google.protobuf.Int32Value": { type: "integer" },
  "google.protobuf.UInt32Value": { type: "integer", minimum: 0 },
  "google.protobuf.Int64Value": { type: ["integer", "string"] },
  "google.protobuf.UInt64Value": { type: ["integer", "string"] },
  "google.protobuf.BytesValue": { type: "string", contentEncoding: "base64" },
};
