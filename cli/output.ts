import { type JsonObject, type JsonValue, type Message, toJson } from "@bufbuild/protobuf";
import { anyUnpack, timestampDate } from "@bufbuild/protobuf/wkt";
import type { Event } from "../gen/tidings/v1/event_pb.js";
import { catalogRegistry, type ReceivedEvent } from "../sdk/index.js";

/** True when `stream` should get ANSI colours: a TTY, unless NO_COLOR says no (FORCE_COLOR says yes). */
export function colorsFor(stream: NodeJS.WriteStream): boolean {
  if (process.env.NO_COLOR) return false;
  const force = process.env.FORCE_COLOR;
  if (force !== undefined && force !== "") return force !== "0" && force !== "false";
  return Boolean(stream.isTTY);
}

export interface Palette {
  dim(s: string): string;
  bold(s: string): string;
  type(s: string): string;
  id(s: string): string;
  warn(s: string): string;
}

const wrap = (open: number, close: number) => (s: string) => `\u001b[${open}m${s}\u001b[${close}m`;
const plain = (s: string) => s;

export function palette(enabled: boolean): Palette {
  if (!enabled) return { dim: plain, bold: plain, type: plain, id: plain, warn: plain };
  return { dim: wrap(2, 22), bold: wrap(1, 22), type: wrap(36, 39), id: wrap(33, 39), warn: wrap(31, 39) };
}

/** Writes one line to stdout. */
export function out(line: string): void {
  process.stdout.write(line + "\n");
}

/** Writes one line to stderr, prefixed with "tidings: ". */
export function note(line: string): void {
  process.stderr.write(`tidings: ${line}\n`);
}

/** An event as the CLI prints it with --json: the envelope, and the payload with .proto field names. */
export interface EventJson {
  id: string;
  type: string;
  source: string;
  subject: string;
  time: string;
  sequence: number | string;
  attributes: Record<string, string>;
  data: JsonValue;
}

/** A uint64 as a JSON number while it is exact, as a string beyond 2^53. */
export function jsonSequence(sequence: bigint): number | string {
  return sequence <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(sequence) : sequence.toString();
}

/** A payload message as JSON with the .proto field names (what the server serves as `data`). */
export function messageJson(data: Message | undefined): JsonValue {
  if (!data) return null;
  const schema = catalogRegistry.getMessage(data.$typeName);
  if (!schema) return null;
  return toJson(schema, data, { registry: catalogRegistry, useProtoFieldName: true });
}

/** A subscription's event (payload unpacked by the SDK) as --json prints it. */
export function receivedJson(e: ReceivedEvent): EventJson {
  return {
    id: e.id,
    type: e.type,
    source: e.source,
    subject: e.subject,
    time: e.time.toISOString(),
    sequence: jsonSequence(e.sequence),
    attributes: e.attributes,
    data: messageJson(e.data),
  };
}

/** A wire event (either payload format) as --json prints it. */
export function wireJson(e: Event): EventJson {
  return {
    id: e.id,
    type: e.type,
    source: e.source,
    subject: e.subject,
    time: (e.time ? timestampDate(e.time) : new Date(0)).toISOString(),
    sequence: jsonSequence(e.sequence),
    attributes: e.attributes,
    data: e.payload.case === "data" ? (e.payload.value as JsonObject) : e.payload.case === "protoData" ? messageJson(anyUnpack(e.payload.value, catalogRegistry)) : null,
  };
}

/** One human line per event: time, type, id, compact payload (and the sequence when asked). */
export function eventLine(e: EventJson, p: Palette, withSequence = false): string {
  const parts = [p.dim(e.time)];
  if (withSequence) parts.push(p.dim(`#${e.sequence}`));
  parts.push(p.type(e.type), p.id(e.id));
  const attrs = Object.entries(e.attributes);
  if (attrs.length > 0) parts.push(p.dim(attrs.map(([k, v]) => `${k}=${v}`).join(",")));
  parts.push(JSON.stringify(e.data));
  return parts.join("  ");
}

const ansi = /\u001b\[[0-9;]*m/g;
const visibleLength = (s: string) => s.replace(ansi, "").length;

/** Left-aligned columns, the last one free; cells may carry colours. */
export function table(rows: string[][], header?: string[], p: Palette = palette(false)): string[] {
  const all = header ? [header, ...rows] : rows;
  const widths: number[] = [];
  for (const row of all) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, visibleLength(cell))));
  const render = (row: string[]) =>
    row.map((cell, i) => (i === row.length - 1 ? cell : cell + " ".repeat(widths[i]! - visibleLength(cell)))).join("  ").trimEnd();
  const lines = rows.map(render);
  return header ? [p.bold(render(header)), ...lines] : lines;
}
