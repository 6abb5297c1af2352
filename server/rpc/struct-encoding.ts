import type { JsonObject, JsonValue } from "@bufbuild/protobuf";
import { varintSize, writeVarint } from "./varint.js";

/**
 * google.protobuf.Struct in protobuf binary, written straight from a JSON object. protobuf-es
 * writes a Struct through reflection, one map entry and one Value message at a time; for a
 * subscriber that takes payloads as JSON, that was the largest part of encoding each event
 * (a profile at 1,000 events/s). The output decodes to the same Struct; map entries come in the
 * object's key order, as protobuf-es writes them.
 *
 * Two passes over the value: the first measures every Struct, ListValue and Value (their
 * lengths prefix them), the second writes. Sizes are kept in pre-order, the order the writer
 * visits them in.
 */

/** Writes the Struct measured by encodedStructSize (with the same `sizes`) at `offset`; returns the end. */
export function writeStruct(json: JsonObject, sizes: readonly number[], out: Buffer, offset: number): number {
  const cursor = { at: 0 };
  return writeStructBody(json, sizes, cursor, out, offset);
}

// Wire tags: (field number << 3) | wire type.
const tagLen = (field: number) => (field << 3) | 2;
const structFieldsTag = tagLen(1); // Struct.fields (map entry)
const entryKeyTag = tagLen(1);
const entryValueTag = tagLen(2);
const nullTag = (1 << 3) | 0; // Value.null_value (enum, varint)
const numberTag = (2 << 3) | 1; // Value.number_value (double, 64-bit)
const stringTag = tagLen(3);
const boolTag = (4 << 3) | 0;
const structTag = tagLen(5);
const listTag = tagLen(6);
const listValuesTag = tagLen(1); // ListValue.values

/** A length-delimited field's size: its tag, its length, its body. */
const delimited = (body: number) => 1 + varintSize(body) + body;

/** The Struct's encoded size; `sizes` receives the sizes writeStruct needs (see the top of this file). */
export function encodedStructSize(json: JsonObject, sizes: number[]): number {
  const at = sizes.length;
  sizes.push(0);
  let size = 0;
  for (const key of Object.keys(json)) {
    if (key === "__proto__") continue; // see writeStructBody
    const keyBytes = Buffer.byteLength(key, "utf8");
    const entry = delimited(keyBytes) + delimited(valueSize(json[key]!, sizes));
    size += delimited(entry);
  }
  sizes[at] = size;
  return size;
}

function listSize(list: readonly JsonValue[], sizes: number[]): number {
  const at = sizes.length;
  sizes.push(0);
  let size = 0;
  for (const v of list) size += delimited(valueSize(v, sizes));
  sizes[at] = size;
  return size;
}

/** A Value message's size. */
function valueSize(v: JsonValue, sizes: number[]): number {
  const at = sizes.length;
  sizes.push(0);
  let size: number;
  if (v === null) size = 2;
  else if (typeof v === "number") size = 9;
  else if (typeof v === "boolean") size = 2;
  else if (typeof v === "string") size = delimited(Buffer.byteLength(v, "utf8"));
  else if (Array.isArray(v)) size = delimited(listSize(v, sizes));
  else size = delimited(encodedStructSize(v as JsonObject, sizes));
  sizes[at] = size;
  return size;
}

function writeStructBody(json: JsonObject, sizes: readonly number[], cursor: { at: number }, out: Buffer, offset: number): number {
  cursor.at++; // this Struct's own size was written by whoever framed it
  for (const key of Object.keys(json)) {
    // protobuf-es drops an own "__proto__" key (it assigns each entry to a plain object, where
    // that name sets the prototype), and toJson never makes one; left out here too, so both
    // encoders agree on every object.
    if (key === "__proto__") continue;
    const keyBytes = Buffer.byteLength(key, "utf8");
    const value = json[key]!;
    const valueBytes = sizes[cursor.at]!;
    out[offset++] = structFieldsTag;
    offset = writeVarint(delimited(keyBytes) + delimited(valueBytes), out, offset);
    out[offset++] = entryKeyTag;
    offset = writeVarint(keyBytes, out, offset);
    offset += out.write(key, offset, keyBytes, "utf8");
    out[offset++] = entryValueTag;
    offset = writeVarint(valueBytes, out, offset);
    offset = writeValue(value, sizes, cursor, out, offset);
  }
  return offset;
}

function writeValue(v: JsonValue, sizes: readonly number[], cursor: { at: number }, out: Buffer, offset: number): number {
  cursor.at++; // the Value's size, written by the caller
  if (v === null) {
    out[offset++] = nullTag;
    out[offset++] = 0;
  } else if (typeof v === "number") {
    out[offset++] = numberTag;
    offset = out.writeDoubleLE(v, offset);
  } else if (typeof v === "boolean") {
    out[offset++] = boolTag;
    out[offset++] = v ? 1 : 0;
  } else if (typeof v === "string") {
    const bytes = Buffer.byteLength(v, "utf8");
    out[offset++] = stringTag;
    offset = writeVarint(bytes, out, offset);
    offset += out.write(v, offset, bytes, "utf8");
  } else if (Array.isArray(v)) {
    out[offset++] = listTag;
    offset = writeVarint(sizes[cursor.at]!, out, offset);
    cursor.at++;
    for (const item of v) {
      out[offset++] = listValuesTag;
      offset = writeVarint(sizes[cursor.at]!, out, offset);
      offset = writeValue(item, sizes, cursor, out, offset);
    }
  } else {
    out[offset++] = structTag;
    offset = writeVarint(sizes[cursor.at]!, out, offset);
    offset = writeStructBody(v as JsonObject, sizes, cursor, out, offset);
  }
  return offset;
}
