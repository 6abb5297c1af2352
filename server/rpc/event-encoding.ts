import type { JsonObject } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { StoredEvent } from "../event-log/stored-event.js";
import { encodedStructSize, writeStruct } from "./struct-encoding.js";
import { uint64Size, varintSize, writeUint64, writeVarint } from "./varint.js";

/**
 * A stored event as tidings.v1.Event in protobuf binary, written straight from its fields. Every
 * subscriber stream in binary carries each event once per node in this form; protobuf-es wrote
 * it through reflection (a field, a map entry, a string at a time), which was the largest single
 * item of a subscriber's CPU at 1,000 events/s (about 5% of the server's, on top of the Struct
 * that struct-encoding.ts already writes by hand). Fields are written in field-number order and
 * proto3 defaults are left out, as protobuf-es does: decoded, it is the same message as
 * toBinary(EventSchema, toApiEvent(...)) (test/event-encoding.test.ts compares the bytes).
 */
export type EventPayload = { kind: "proto"; typeUrl: string; value: Uint8Array } | { kind: "json"; data: JsonObject };

// Wire tags of tidings.v1.Event: (field number << 3) | wire type (2: length-delimited, 0: varint).
const idTag = (1 << 3) | 2;
const sourceTag = (2 << 3) | 2;
const typeTag = (3 << 3) | 2;
const subjectTag = (4 << 3) | 2;
const timeTag = (5 << 3) | 2;
const contentTypeTag = (6 << 3) | 2;
const dataTag = (7 << 3) | 2;
const protoDataTag = (8 << 3) | 2;
const attributesTag = (9 << 3) | 2;
const sequenceTag = (10 << 3) | 0;
// google.protobuf.Timestamp, google.protobuf.Any and a map<string, string> entry.
const secondsTag = (1 << 3) | 0;
const nanosTag = (2 << 3) | 0;
const typeUrlTag = (1 << 3) | 2;
const anyValueTag = (2 << 3) | 2;
const entryKeyTag = (1 << 3) | 2;
const entryValueTag = (2 << 3) | 2;

const jsonContentType = "application/json";
const protoContentType = "application/protobuf";

/** A length-delimited field's size: its tag, its length, its body. */
const delimited = (body: number) => 1 + varintSize(body) + body;
/** A string field's size, or 0 for the empty string (a proto3 default, not written). */
const stringField = (bytes: number) => (bytes === 0 ? 0 : delimited(bytes));

/**
 * The event as field 1 of a SubscribeResponse carries it: its length as a varint, then the
 * encoded Event. `out` holds nothing else.
 */
export function encodeEventWithLength(stored: StoredEvent, payload: EventPayload): Buffer {
  const strings = [stored.id, stored.source, stored.type, stored.subject];
  const stringBytes = strings.map((s) => Buffer.byteLength(s, "utf8"));
  const contentType = payload.kind === "json" ? jsonContentType : protoContentType;
  const { seconds, nanos } = timestampFromDate(stored.time);
  const secondsValue = BigInt.asUintN(64, seconds);
  const nanosValue = BigInt.asUintN(64, BigInt(nanos)); // int32: a negative one is sign-extended to 64 bits
  const timeBytes = (seconds === 0n ? 0 : 1 + uint64Size(secondsValue)) + (nanos === 0 ? 0 : 1 + uint64Size(nanosValue));

  let payloadBytes: number;
  const structSizes: number[] = [];
  let typeUrlBytes = 0;
  if (payload.kind === "json") {
    payloadBytes = encodedStructSize(payload.data, structSizes);
  } else {
    typeUrlBytes = Buffer.byteLength(payload.typeUrl, "utf8");
    payloadBytes = stringField(typeUrlBytes) + (payload.value.byteLength === 0 ? 0 : delimited(payload.value.byteLength));
  }

  const attributeKeys = Object.keys(stored.attributes);
  const entrySizes: number[] = [];
  let attributesBytes = 0;
  for (const key of attributeKeys) {
    const k = Buffer.byteLength(key, "utf8");
    const v = Buffer.byteLength(stored.attributes[key]!, "utf8");
    // protobuf-es writes a map entry's key and value even when empty.
    const entry = delimited(k) + delimited(v);
    entrySizes.push(k, v, entry);
    attributesBytes += delimited(entry);
  }
  const sequence = BigInt.asUintN(64, stored.sequence);

  let size = 0;
  for (const n of stringBytes) size += stringField(n);
  size += delimited(timeBytes) + delimited(contentType.length) + delimited(payloadBytes) + attributesBytes;
  if (sequence !== 0n) size += 1 + uint64Size(sequence);

  const out = Buffer.allocUnsafe(varintSize(size) + size);
  let at = writeVarint(size, out, 0);
  const tags = [idTag, sourceTag, typeTag, subjectTag];
  for (let i = 0; i < strings.length; i++) at = writeString(tags[i]!, strings[i]!, stringBytes[i]!, out, at);
  out[at++] = timeTag;
  at = writeVarint(timeBytes, out, at);
  if (seconds !== 0n) {
    out[at++] = secondsTag;
    at = writeUint64(secondsValue, out, at);
  }
  if (nanos !== 0) {
    out[at++] = nanosTag;
    at = writeUint64(nanosValue, out, at);
  }
  at = writeString(contentTypeTag, contentType, contentType.length, out, at);
  if (payload.kind === "json") {
    out[at++] = dataTag;
    at = writeVarint(payloadBytes, out, at);
    at = writeStruct(payload.data, structSizes, out, at);
  } else {
    out[at++] = protoDataTag;
    at = writeVarint(payloadBytes, out, at);
    at = writeString(typeUrlTag, payload.typeUrl, typeUrlBytes, out, at);
    if (payload.value.byteLength > 0) {
      out[at++] = anyValueTag;
      at = writeVarint(payload.value.byteLength, out, at);
      out.set(payload.value, at);
      at += payload.value.byteLength;
    }
  }
  for (let i = 0; i < attributeKeys.length; i++) {
    const key = attributeKeys[i]!;
    const [k, v, entry] = [entrySizes[3 * i]!, entrySizes[3 * i + 1]!, entrySizes[3 * i + 2]!];
    out[at++] = attributesTag;
    at = writeVarint(entry, out, at);
    out[at++] = entryKeyTag;
    at = writeVarint(k, out, at);
    at += out.write(key, at, k, "utf8");
    out[at++] = entryValueTag;
    at = writeVarint(v, out, at);
    at += out.write(stored.attributes[key]!, at, v, "utf8");
  }
  if (sequence !== 0n) {
    out[at++] = sequenceTag;
    at = writeUint64(sequence, out, at);
  }
  if (at !== out.length) throw new Error(`event encoding wrote ${at} bytes of ${out.length}`);
  return out;
}

/** A string field, unless empty (a proto3 default). */
function writeString(tag: number, value: string, bytes: number, out: Buffer, at: number): number {
  if (bytes === 0) return at;
  out[at++] = tag;
  at = writeVarint(bytes, out, at);
  return at + out.write(value, at, bytes, "utf8");
}
