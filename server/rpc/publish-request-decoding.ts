import { isUtf8 } from "node:buffer";
import { type DescMessage, fromBinary, type JsonObject, type JsonValue, type Message } from "@bufbuild/protobuf";
import type { Any, Timestamp } from "@bufbuild/protobuf/wkt";
import type { Event } from "../../gen/tidings/v1/event_pb.js";
import { type PublishBatchRequest, PublishBatchRequestSchema, type PublishRequest, PublishRequestSchema } from "../../gen/tidings/v1/event_service_pb.js";
import { startsWithBom } from "../catalog/protobuf-text.js";
import { foundFreeOfNul } from "./nul-refusal.js";

/**
 * Decoders for the two publish requests, written out for their few fields instead of
 * protobuf-es's reflective fromBinary. In a profile of PublishBatch (100 events a request,
 * 8 clients) decoding the request was about a sixth of the server's CPU: per field, a field
 * lookup, a reflective set, and a zero message built for every nested message.
 *
 * The result is the message fromBinary returns, field for field. Anything these decoders do not
 * expect (an unknown or repeated-message field, another wire type, a group, invalid UTF-8, a
 * malformed varint, a "__proto__" map key) makes them hand the whole request to fromBinary,
 * so that every edge case keeps fromBinary's exact behaviour, and its error. A field added to
 * the protos is unknown here, so such requests take the slow path until the decoder learns
 * it; a test fails until then.
 */
export const publishRequestDecoders: ReadonlyMap<DescMessage, (bytes: Uint8Array) => Message> = new Map<DescMessage, (bytes: Uint8Array) => Message>([
  [PublishRequestSchema, (bytes) => tryDecodePublishRequest(bytes) ?? fromBinary(PublishRequestSchema, bytes)],
  [PublishBatchRequestSchema, (bytes) => tryDecodePublishBatchRequest(bytes) ?? fromBinary(PublishBatchRequestSchema, bytes)],
]);

/** The request, or undefined when it has something this decoder leaves to fromBinary. */
export function tryDecodePublishRequest(bytes: Uint8Array): PublishRequest | undefined {
  return attempt(bytes, (r) => readPublishRequest(r, bytes.length, 1));
}

export function tryDecodePublishBatchRequest(bytes: Uint8Array): PublishBatchRequest | undefined {
  return attempt(bytes, readPublishBatchRequest);
}

/** Field numbers each decoder reads, per message type: a test checks them against the schemas. */
export const decodedFields: Readonly<Record<string, readonly number[]>> = {
  "tidings.v1.PublishBatchRequest": [1],
  "tidings.v1.PublishRequest": [1, 2],
  "tidings.v1.Event": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
  "google.protobuf.Timestamp": [1, 2],
  "google.protobuf.Any": [1, 2],
};

/** Thrown inside a decoder for input it leaves to fromBinary (one object: no stack trace to capture). */
const unexpected = new Error("left to fromBinary");

function attempt<T extends object>(bytes: Uint8Array, read: (r: Reader) => T): T | undefined {
  try {
    const r = new Reader(bytes);
    const message = read(r);
    // Every text field the NUL check visits went through Reader.string(): it need not look again.
    if (!r.sawNul) foundFreeOfNul.add(message);
    return message;
  } catch {
    // Something unexpected, or a Struct fromBinary refused: fromBinary of the whole request
    // then throws its own error for it, word for word.
    return undefined;
  }
}

const WIRE_VARINT = 0;
const WIRE_LEN = 2;

class Reader {
  pos = 0;
  /** A string held U+0000 (a 0 byte: UTF-8 uses it for nothing else). */
  sawNul = false;
  readonly buf: Buffer;

  constructor(bytes: Uint8Array) {
    this.buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  /** A varint of at most 32 significant bits (tags, lengths), as an unsigned number. */
  uint32(): number {
    const buf = this.buf;
    let result = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (this.pos >= buf.length) throw unexpected;
      const b = buf[this.pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) {
        if (result > 0xffffffff) throw unexpected;
        return result;
      }
    }
    throw unexpected;
  }

  /** A varint of up to 64 bits, as a bigint of its 64 bits (unsigned). */
  uint64(): bigint {
    const buf = this.buf;
    const start = this.pos;
    let small = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= buf.length) throw unexpected;
      const b = buf[this.pos++]!;
      if (i < 7) small += (b & 0x7f) * 2 ** (7 * i);
      if (b < 0x80) {
        if (i < 7) return BigInt(small);
        let big = 0n;
        for (let k = this.pos - 1; k >= start; k--) big = (big << 7n) | BigInt(buf[k]! & 0x7f);
        return BigInt.asUintN(64, big);
      }
    }
    throw unexpected;
  }

  /** The end of a length-delimited field's bytes. */
  end(): number {
    const length = this.uint32();
    const end = this.pos + length;
    if (end > this.buf.length) throw unexpected;
    return end;
  }

  string(): string {
    const end = this.end();
    const start = this.pos;
    this.pos = end;
    // ASCII, the common case, needs no check; anything else must be valid UTF-8, as fromBinary
    // requires. The same pass notes a NUL (see foundFreeOfNul).
    let ascii = true;
    for (let i = start; i < end; i++) {
      const b = this.buf[i]!;
      if (b === 0) this.sawNul = true;
      else if (b >= 0x80) ascii = false;
    }
    if (!ascii && (!isUtf8(this.buf.subarray(start, end)) || startsWithBom(this.buf, start, end))) throw unexpected;
    return this.buf.toString("utf8", start, end);
  }

  bytes(): Uint8Array {
    const end = this.end();
    const out = this.buf.subarray(this.pos, end);
    this.pos = end;
    // fromBinary returns a view of the request as well; a plain Uint8Array, not a Buffer.
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }

  /** The next tag's field number, requiring `wireType`. */
  field(end: number, wireTypes: (fieldNo: number) => number): number {
    const tag = this.uint32();
    const fieldNo = tag >>> 3;
    if ((tag & 7) !== wireTypes(fieldNo) || this.pos > end) throw unexpected;
    return fieldNo;
  }
}

const lengthDelimited = () => WIRE_LEN;

function readPublishBatchRequest(r: Reader): PublishBatchRequest {
  const entries: PublishRequest[] = [];
  const end = r.buf.length;
  while (r.pos < end) {
    if (r.field(end, lengthDelimited) !== 1) throw unexpected;
    entries.push(readPublishRequest(r, r.end(), 2));
  }
  return { $typeName: "tidings.v1.PublishBatchRequest", entries };
}

/** `depth`: how deep fromBinary would be in this message (1 at the top), for its recursion limit. */
function readPublishRequest(r: Reader, end: number, depth: number): PublishRequest {
  let event: Event | undefined;
  let idempotencyKey = "";
  while (r.pos < end) {
    switch (r.field(end, lengthDelimited)) {
      case 1:
        if (event !== undefined) throw unexpected; // a repeated message field merges: fromBinary's job
        event = readEvent(r, r.end(), depth + 1);
        break;
      case 2:
        idempotencyKey = r.string();
        break;
      default:
        throw unexpected;
    }
  }
  if (r.pos !== end) throw unexpected;
  const out: PublishRequest = { $typeName: "tidings.v1.PublishRequest", idempotencyKey };
  if (event !== undefined) out.event = event;
  return out;
}

const eventWireType = (fieldNo: number) => (fieldNo === 10 ? WIRE_VARINT : WIRE_LEN);

function readEvent(r: Reader, end: number, depth: number): Event {
  const event: Event = {
    $typeName: "tidings.v1.Event",
    id: "",
    source: "",
    type: "",
    subject: "",
    datacontenttype: "",
    payload: { case: undefined },
    attributes: {},
    sequence: 0n,
  };
  while (r.pos < end) {
    switch (r.field(end, eventWireType)) {
      case 1:
        event.id = r.string();
        break;
      case 2:
        event.source = r.string();
        break;
      case 3:
        event.type = r.string();
        break;
      case 4:
        event.subject = r.string();
        break;
      case 5:
        if (event.time !== undefined) throw unexpected;
        event.time = readTimestamp(r, r.end());
        break;
      case 6:
        event.datacontenttype = r.string();
        break;
      case 7: {
        // One member of the oneof, once: anything else is merging or replacing, fromBinary's job.
        if (event.payload.case !== undefined) throw unexpected;
        // Text in a JSON payload is not the NUL check's business (see foundFreeOfNul).
        const sawNul = r.sawNul;
        event.payload = { case: "data", value: readStruct(r, r.end(), depth + 1) };
        r.sawNul = sawNul;
        break;
      }
      case 8:
        if (event.payload.case !== undefined) throw unexpected;
        event.payload = { case: "protoData", value: readAny(r, r.end()) };
        break;
      case 9:
        readAttribute(r, r.end(), event.attributes);
        break;
      case 10:
        event.sequence = r.uint64();
        break;
      default:
        throw unexpected;
    }
  }
  if (r.pos !== end) throw unexpected;
  return event;
}

function readTimestamp(r: Reader, end: number): Timestamp {
  let seconds = 0n;
  let nanos = 0;
  while (r.pos < end) {
    switch (r.field(end, () => WIRE_VARINT)) {
      case 1:
        seconds = BigInt.asIntN(64, r.uint64());
        break;
      case 2:
        nanos = Number(BigInt.asIntN(32, r.uint64()));
        break;
      default:
        throw unexpected;
    }
  }
  if (r.pos !== end) throw unexpected;
  return { $typeName: "google.protobuf.Timestamp", seconds, nanos };
}

function readAny(r: Reader, end: number): Any {
  let typeUrl = "";
  let value: Uint8Array = new Uint8Array(0);
  while (r.pos < end) {
    switch (r.field(end, lengthDelimited)) {
      case 1:
        typeUrl = r.string();
        break;
      case 2:
        value = r.bytes();
        break;
      default:
        throw unexpected;
    }
  }
  if (r.pos !== end) throw unexpected;
  return { $typeName: "google.protobuf.Any", typeUrl, value };
}

function readAttribute(r: Reader, end: number, into: Record<string, string>): void {
  let key = "";
  let value = "";
  while (r.pos < end) {
    switch (r.field(end, lengthDelimited)) {
      case 1:
        key = r.string();
        break;
      case 2:
        value = r.string();
        break;
      default:
        throw unexpected;
    }
  }
  if (r.pos !== end || key === "__proto__") throw unexpected;
  into[key] = value;
}

/**
 * Nesting (Structs, Values and ListValues, counted from the request) past which a payload is
 * left to fromBinary, whose recursion limit (100) then applies exactly.
 */
const handNestingLimit = 60;

/**
 * A google.protobuf.Struct, read straight into the JsonObject a Struct field holds in
 * protobuf-es (its wktStructToLocal, assignment for assignment): fromBinary built a Struct, a
 * Value per member and a map of them first, about half of decoding a small JSON publish. A Value
 * with more than one member, an empty one, a missing map value, a key given twice, an unknown
 * field or a "__proto__" key is left to fromBinary (merging and defaults are its business).
 */
function readStruct(r: Reader, end: number, nesting: number): JsonObject {
  if (nesting > handNestingLimit) throw unexpected;
  const json: JsonObject = {};
  while (r.pos < end) {
    if (r.field(end, lengthDelimited) !== 1) throw unexpected;
    const entryEnd = r.end();
    let key = "";
    let value: JsonValue | undefined;
    while (r.pos < entryEnd) {
      switch (r.field(entryEnd, lengthDelimited)) {
        case 1:
          key = r.string();
          break;
        case 2:
          if (value !== undefined) throw unexpected;
          value = readValue(r, r.end(), nesting + 1);
          break;
        default:
          throw unexpected;
      }
    }
    if (r.pos !== entryEnd || value === undefined || key === "__proto__" || Object.hasOwn(json, key)) throw unexpected;
    json[key] = value;
  }
  if (r.pos !== end) throw unexpected;
  return json;
}

// google.protobuf.Value's members: null_value (an enum), number_value (a double), string_value,
// bool_value, struct_value, list_value.
const WIRE_FIXED64 = 1;
const valueWireType = (fieldNo: number) => (fieldNo === 1 || fieldNo === 4 ? WIRE_VARINT : fieldNo === 2 ? WIRE_FIXED64 : WIRE_LEN);

function readValue(r: Reader, end: number, nesting: number): JsonValue {
  if (nesting > handNestingLimit) throw unexpected;
  let value: JsonValue | undefined;
  while (r.pos < end) {
    if (value !== undefined) throw unexpected;
    switch (r.field(end, valueWireType)) {
      case 1:
        r.uint32(); // any enum number: protobuf-es renders null_value as null whatever it holds
        value = null;
        break;
      case 2:
        if (r.pos + 8 > end) throw unexpected;
        value = r.buf.readDoubleLE(r.pos);
        r.pos += 8;
        break;
      case 3:
        value = r.string();
        break;
      case 4:
        value = r.uint64() !== 0n;
        break;
      case 5:
        value = readStruct(r, r.end(), nesting + 1);
        break;
      case 6:
        value = readList(r, r.end(), nesting + 1);
        break;
      default:
        throw unexpected;
    }
  }
  if (r.pos !== end || value === undefined) throw unexpected;
  return value;
}

function readList(r: Reader, end: number, nesting: number): JsonValue[] {
  if (nesting > handNestingLimit) throw unexpected;
  const list: JsonValue[] = [];
  while (r.pos < end) {
    if (r.field(end, lengthDelimited) !== 1) throw unexpected;
    list.push(readValue(r, r.end(), nesting + 1));
  }
  if (r.pos !== end) throw unexpected;
  return list;
}
