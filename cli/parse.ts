import { readFile } from "node:fs/promises";
import type { JsonObject } from "@bufbuild/protobuf";
import { CliError, oneLine, UsageError } from "./errors.js";

/** Reads a whole file, or stdin for "-"; a missing file is a one-line error. */
export async function readInput(path: string): Promise<string> {
  try {
    if (path === "-") {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks).toString("utf8");
    }
    return await readFile(path, "utf8");
  } catch (err) {
    throw new CliError(`cannot read ${path}: ${fsReason(err)}`);
  }
}

export function fsReason(err: unknown): string {
  const e = err as { code?: string; message?: string };
  switch (e.code) {
    case "ENOENT":
      return "no such file or directory";
    case "EACCES":
      return "permission denied";
    case "EISDIR":
      return "is a directory";
    default:
      return oneLine(e.message ?? String(err));
  }
}

/**
 * A JSON object payload given inline, as `@path`, or as `@-` (stdin). `what` names it in
 * errors: "argument 2".
 */
export async function payloadArg(arg: string, what: string): Promise<JsonObject> {
  let text = arg;
  let origin = what;
  if (arg.startsWith("@")) {
    const path = arg.slice(1);
    if (!path) throw new UsageError(`${what}: "@" must be followed by a file name (or "-" for stdin)`);
    text = await readInput(path);
    origin = path === "-" ? "stdin" : path;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`invalid JSON in ${origin}: ${oneLine((err as Error).message)}`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UsageError(`${origin} must be a JSON object (the event's payload), got ${Array.isArray(value) ? "an array" : JSON.stringify(value)}`);
  }
  return value as JsonObject;
}

/** Commander collector for a repeatable `--attr key=value`. */
export function collectAttr(value: string, previous: Record<string, string> = {}): Record<string, string> {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new UsageError(`--attr: expected key=value, got "${value}"`);
  return { ...previous, [value.slice(0, eq)]: value.slice(eq + 1) };
}

/** A non-negative integer option. */
export function intOption(name: string, min = 0) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min) throw new UsageError(`${name}: expected an integer of at least ${min}, got "${value}"`);
    return n;
  };
}

/** Where to start reading: an end of the log, a sequence (inclusive), or a time. */
export type From = { kind: "earliest" } | { kind: "latest" } | { kind: "sequence"; sequence: bigint } | { kind: "time"; time: Date };

const durationUnits: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/**
 * `earliest`, `latest`, a sequence number (the first one to read), an RFC 3339 time
 * (2026-01-28T12:00:00Z), or a duration ago (90s, 15m, 2h, 7d).
 */
export function parseFrom(value: string, allowed: ReadonlyArray<From["kind"]> = ["earliest", "latest", "sequence", "time"]): From {
  const v = value.trim();
  let from: From | undefined;
  if (v === "earliest" || v === "latest") from = { kind: v };
  else if (/^\d+$/.test(v)) from = { kind: "sequence", sequence: BigInt(v) };
  else {
    const ago = /^(\d+)([smhd])$/.exec(v);
    const time = ago ? new Date(Date.now() - Number(ago[1]) * durationUnits[ago[2]!]!) : /^\d{4}-\d{2}-\d{2}/.test(v) ? new Date(v) : undefined;
    if (time && !Number.isNaN(time.getTime())) from = { kind: "time", time };
  }
  const names: Record<From["kind"], string> = { earliest: "earliest", latest: "latest", sequence: "a sequence number", time: "a time (2026-01-28T12:00:00Z, or 15m/2h/7d ago)" };
  if (!from || !allowed.includes(from.kind)) throw new UsageError(`--from: expected ${allowed.map((k) => names[k]).join(", ")}; got "${value}"`);
  return from;
}

/** A --server URL, checked. */
export function serverUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new UsageError(`--server: "${value}" is not a URL (e.g. http://127.0.0.1:7233)`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new UsageError(`--server: "${value}" must be an http:// or https:// URL`);
  return value.replace(/\/+$/, "");
}
