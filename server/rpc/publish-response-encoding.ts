import { type DescMessage, type Message, toBinary } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { type PublishBatchResponse, PublishBatchResponseSchema, type PublishResponse, PublishResponseSchema } from "../../gen/tidings/v1/event_service_pb.js";
import { uint64Size, varintSize, writeUint64, writeVarint } from "./varint.js";

/**
 * Encoders for the two publish responses, written out for their four fields instead of
 * protobuf-es's reflective toBinary, which was about a tenth of the server's CPU in
 * PublishBatch (100 results a response). They write the very bytes toBinary writes: fields in
 * number order, zero values left out, 64-bit numbers as toBinary writes them. A message with
 * unknown fields, or a field added to the protos, goes to toBinary (a test fails until the
 * encoder learns the field).
 */
export const publishResponseEncoders: ReadonlyMap<DescMessage, (message: Message) => Uint8Array> = new Map<DescMessage, (message: Message) => Uint8Array>([
  [PublishResponseSchema, (m) => encodePublishResponse(m as PublishResponse) ?? toBinary(PublishResponseSchema, m as PublishResponse)],
  [PublishBatchResponseSchema, (m) => encodePublishBatchResponse(m as PublishBatchResponse) ?? toBinary(PublishBatchResponseSchema, m as PublishBatchResponse)],
]);

/** Field numbers each encoder writes, per message type: a test checks them against the schemas. */
export const encodedFields: Readonly<Record<string, readonly number[]>> = {
  "tidings.v1.PublishBatchResponse": [1],
  "tidings.v1.PublishResponse": [1, 2, 3, 4],
  "google.protobuf.Timestamp": [1, 2],
};

/** The bytes toBinary would write, or undefined for a message this encoder leaves to it. */
export function encodePublishResponse(r: PublishResponse): Uint8Array | undefined {
  if (!plain(r)) return undefined;
  const size = responseSize(r);
  const out = Buffer.allocUnsafe(size);
  if (writeResponse(r, out, 0) !== size) throw new Error("PublishResponse encoding: size mismatch");
  return out;
}

export function encodePublishBatchResponse(b: PublishBatchResponse): Uint8Array | undefined {
  const results = b.results ?? [];
  if (!plain(b) || !results.every(plain)) return undefined;
  const sizes = results.map(responseSize);
  let size = 0;
  for (const s of sizes) size += 1 + varintSize(s) + s;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < results.length; i++) {
    out[at++] = 0x0a; // results = 1, length-delimited
    at = writeVarint(sizes[i]!, out, at);
    at = writeResponse(results[i]!, out, at);
  }
  if (at !== size) throw new Error("PublishBatchResponse encoding: size mismatch");
  return out;
}

/** No unknown fields to carry along (messages made with create() have none). */
function plain(m: { $unknown?: unknown[] }): boolean {
  return m.$unknown === undefined || m.$unknown.length === 0;
}

function responseSize(r: PublishResponse): number {
  let size = 0;
  const idBytes = r.id ? Buffer.byteLength(r.id, "utf8") : 0;
  if (idBytes > 0) size += 1 + varintSize(idBytes) + idBytes;
  if (r.sequence) size += 1 + uint64Size(BigInt.asUintN(64, r.sequence));
  if (r.time !== undefined) {
    const t = timestampSize(r.time);
    size += 1 + varintSize(t) + t;
  }
  if (r.duplicate) size += 2;
  return size;
}

function writeResponse(r: PublishResponse, out: Buffer, at: number): number {
  if (r.id) {
    out[at++] = 0x0a; // id = 1
    const length = Buffer.byteLength(r.id, "utf8");
    at = writeVarint(length, out, at);
    at += out.write(r.id, at, length, "utf8");
  }
  if (r.sequence) {
    out[at++] = 0x10; // sequence = 2, varint
    at = writeUint64(BigInt.asUintN(64, r.sequence), out, at);
  }
  if (r.time !== undefined) {
    out[at++] = 0x1a; // time = 3
    at = writeVarint(timestampSize(r.time), out, at);
    if (r.time.seconds) {
      out[at++] = 0x08; // seconds = 1, int64: negative numbers as their 64-bit two's complement
      at = writeUint64(BigInt.asUintN(64, r.time.seconds), out, at);
    }
    if (r.time.nanos) {
      out[at++] = 0x10; // nanos = 2, int32: negative numbers sign-extended to 64 bits
      at = r.time.nanos > 0 ? writeVarint(r.time.nanos, out, at) : writeUint64(BigInt.asUintN(64, BigInt(r.time.nanos)), out, at);
    }
  }
  if (r.duplicate) {
    out[at++] = 0x20; // duplicate = 4, varint
    out[at++] = 1;
  }
  return at;
}

function timestampSize(t: Timestamp): number {
  let size = 0;
  if (t.seconds) size += 1 + uint64Size(BigInt.asUintN(64, t.seconds));
  if (t.nanos) size += 1 + (t.nanos > 0 ? varintSize(t.nanos) : 10);
  return size;
}
