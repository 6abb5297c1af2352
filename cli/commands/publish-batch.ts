import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { createInterface } from "node:readline";
import type { JsonObject, MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { PublishRequestSchema, TidingsClient } from "../../sdk/index.js";
import { current } from "../context.js";
import { CliError, describeError, isUnreachable, oneLine } from "../errors.js";
import { out } from "../output.js";
import { fsReason } from "../parse.js";
import { progressBar } from "../progress.js";

/** Entries per PublishBatch call. */
export const batchSize = 500;

/** Failed lines reported one by one on stderr; the summary counts the rest. */
const maxReported = 100;

type PublishInit = MessageInitShape<typeof PublishRequestSchema>;

interface Entry {
  line: number;
  request: PublishInit;
}

interface BatchDefaults {
  source: string;
  attributes: Record<string, string>;
  json: boolean;
}

/** Codes with which the server refused the request itself: finding the bad lines helps. */
const refusals = new Set([Code.InvalidArgument, Code.AlreadyExists, Code.ResourceExhausted, Code.FailedPrecondition, Code.OutOfRange]);

const lineFields = new Set(["type", "event_type", "data", "source", "subject", "attributes", "id", "event_id", "time", "timestamp", "idempotency_key", "idempotencyKey", "sequence"]);

/**
 * Publishes a JSON Lines file in PublishBatch calls of up to 500, in file order. A line that
 * is not valid, or that the server refuses, is reported with its number and counted as failed;
 * the other lines are still published. Exit code 1 if anything failed.
 */
export async function publishBatchFile(client: TidingsClient, path: string, defaults: BatchDefaults): Promise<void> {
  let total = 0;
  if (path !== "-") {
    try {
      const s = await stat(path);
      if (s.isDirectory()) throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
      if (process.stderr.isTTY && s.isFile()) total = await countLines(path);
    } catch (err) {
      throw new CliError(`cannot read ${path}: ${fsReason(err)}`);
    }
  }
  const started = performance.now();
  const stats = { published: 0, duplicates: 0, failed: 0, lines: 0 };
  const failedLines: number[] = [];
  const bar = progressBar("publishing |{bar}| {value}/{total} lines | {published} published, {failed} failed | {rate} events/s", total, { published: 0, failed: 0, rate: 0 });
  const fail = (line: number, message: string) => {
    stats.failed++;
    failedLines.push(line);
    if (stats.failed <= maxReported) bar.log(`tidings: line ${line}: ${message}`);
    else if (stats.failed === maxReported + 1) bar.log(`tidings: more lines failed; the summary lists them`);
  };
  const tick = () => {
    const seconds = (performance.now() - started) / 1000;
    bar.update(stats.published + stats.failed, { published: stats.published, failed: stats.failed, rate: seconds > 0 ? Math.round(stats.published / seconds) : 0 });
  };
  let stopped: { line: number; message: string } | undefined;
  const sender = new BatchSender(client, stats, fail);

  const input = path === "-" ? process.stdin : createReadStream(path, { encoding: "utf8" });
  const lines = createInterface({ input, crlfDelay: Infinity });
  let pending: Entry[] = [];
  const flush = async () => {
    const entries = pending;
    pending = [];
    try {
      await sender.send(entries);
    } catch (err) {
      if (!(err instanceof CannotContinue)) throw err;
      // The server is gone or refuses the key: stop, and say from where on nothing was published.
      stopped = { line: err.line, message: describeError(err.cause, current.server, current.tokenGiven).message };
    }
    tick();
  };
  try {
    for await (const raw of lines) {
      const lineNo = ++stats.lines;
      const text = (lineNo === 1 ? raw.replace(/^\uFEFF/, "") : raw).trim();
      if (text === "") continue;
      const parsed = parseLine(text, defaults);
      if ("error" in parsed) fail(lineNo, parsed.error);
      else pending.push({ line: lineNo, request: parsed.request });
      if (pending.length >= sender.size) await flush();
      if (stopped) break;
    }
    if (!stopped && pending.length > 0) await flush();
  } catch (err) {
    if ((err as { code?: string }).code && !(err instanceof ConnectError)) throw new CliError(`cannot read ${path}: ${fsReason(err)}`);
    throw err;
  } finally {
    lines.close();
    bar.stop();
  }

  failedLines.sort((a, b) => a - b);
  const seconds = (performance.now() - started) / 1000;
  const rate = seconds > 0 ? Math.round(stats.published / seconds) : 0;
  if (defaults.json) {
    out(JSON.stringify({ published: stats.published, duplicates: stats.duplicates, failed: stats.failed, failedLines, seconds: round(seconds), eventsPerSecond: rate, ...(stopped ? { notSentFromLine: stopped.line } : {}) }));
  } else {
    const shown = failedLines.slice(0, 20).join(", ") + (failedLines.length > 20 ? ` and ${failedLines.length - 20} more` : "");
    out(
      `published ${stats.published}, failed ${stats.failed}` +
        (stats.duplicates > 0 ? `, ${stats.duplicates} duplicates` : "") +
        ` in ${round(seconds)} s (${rate} events/s)` +
        (failedLines.length > 0 ? `; failed lines: ${shown}` : "") +
        (stopped ? `; not sent: line ${stopped.line} and after` : ""),
    );
  }
  if (stopped) throw new CliError(`${stopped.message}; lines from ${stopped.line} on were not published`);
  if (stats.failed > 0) process.exitCode = 1;
}

/** The server could not be reached; lines from `line` on were not published. */
/**
 * Nothing more can be published: the server cannot be reached, or it does not accept the key
 * (every later line would be refused the same way).
 */
class CannotContinue extends Error {
  constructor(
    override readonly cause: unknown,
    readonly line: number,
  ) {
    super("the batch cannot continue");
  }

  static when(err: unknown, line: number): CannotContinue | undefined {
    return isUnreachable(err) || ConnectError.from(err).code === Code.Unauthenticated ? new CannotContinue(err, line) : undefined;
  }
}

/** Sends entries as PublishBatch calls, narrowing a refused batch down to its bad lines. */
class BatchSender {
  size = batchSize;

  constructor(
    private readonly client: TidingsClient,
    private readonly stats: { published: number; duplicates: number },
    private readonly fail: (line: number, message: string) => void,
  ) {}

  async send(entries: Entry[]): Promise<void> {
    let remaining = entries;
    // Each round removes an entry, splits the batch or goes one by one, so this ends. A refusal
    // may name one bad entry at a time (a conflict names only the first): after a few rounds, the
    // rest goes one by one.
    for (let round = 1; remaining.length > 0; round++) {
      if (round > 3) {
        for (const e of remaining) await this.one(e);
        return;
      }
      let err: ConnectError;
      try {
        const res = await this.client.events.publishBatch({ entries: remaining.map((e) => e.request) });
        this.count(res.results);
        return;
      } catch (e) {
        const stop = CannotContinue.when(e, remaining[0]!.line);
        if (stop) throw stop;
        err = ConnectError.from(e);
      }
      if (!refusals.has(err.code)) {
        // Not a refusal (internal, unavailable, deadline): the batch may or may not be stored,
        // so it is not resent (that could publish it twice).
        const message = describeError(err, current.server, current.tokenGiven).message;
        for (const e of remaining) this.fail(e.line, message);
        return;
      }
      const bad = badEntries(err, remaining.length);
      if (bad === "too-large") {
        if (remaining.length === 1) return this.one(remaining[0]!);
        // The batch is larger than the server takes: halve it, and send smaller ones from now on.
        const half = Math.ceil(remaining.length / 2);
        this.size = Math.max(1, Math.min(this.size, half));
        await this.send(remaining.slice(0, half));
        await this.send(remaining.slice(half));
        return;
      }
      if (bad.size === 0) {
        for (const e of remaining) await this.one(e); // the refusal names no entry: find the bad ones one by one
        return;
      }
      for (const [i, message] of bad) this.fail(remaining[i]!.line, `${codeToString(err.code)}: ${message}`);
      remaining = remaining.filter((_, i) => !bad.has(i));
    }
  }

  async one(e: Entry): Promise<void> {
    try {
      const res = await this.client.events.publish(e.request);
      this.count([res]);
    } catch (err) {
      const stop = CannotContinue.when(err, e.line);
      if (stop) throw stop;
      this.fail(e.line, describeError(err, current.server, current.tokenGiven).message);
    }
  }

  count(results: ReadonlyArray<{ duplicate: boolean }>): void {
    this.stats.published += results.length;
    this.stats.duplicates += results.filter((r) => r.duplicate).length;
  }
}

/**
 * The entries a refusal names (`entries[3].event.type: …`) with their messages, or
 * "too-large" when the batch as a whole is over a limit.
 */
function badEntries(err: ConnectError, count: number): Map<number, string> | "too-large" {
  const violations = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  const bad = new Map<number, string>();
  for (const v of violations) {
    const m = /^entries\[(\d+)\]\.?(.*)$/.exec(v.field);
    if (!m) {
      if (err.code === Code.ResourceExhausted) return "too-large";
      return new Map(); // names no entry
    }
    const i = Number(m[1]);
    if (i >= count) return new Map();
    const text = `${m[2] || "entry"}: ${v.description}`;
    bad.set(i, bad.has(i) ? `${bad.get(i)}; ${text}` : text);
  }
  if (violations.length === 0 && err.code === Code.ResourceExhausted) return "too-large"; // e.g. the request body limit
  return bad;
}

/** One line of the file as a PublishRequest, or why it is not one. */
export function parseLine(text: string, defaults: Pick<BatchDefaults, "source" | "attributes">): { request: PublishInit } | { error: string } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return { error: `invalid JSON: ${oneLine((err as Error).message)}` };
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return { error: "must be a JSON object" };
  const o = value as Record<string, unknown>;
  const unknown = Object.keys(o).filter((k) => !lineFields.has(k));
  if (unknown.length > 0) return { error: `unknown field${unknown.length > 1 ? "s" : ""} ${unknown.map((k) => `"${k}"`).join(", ")} (a line takes type, data, source, subject, attributes, id, time, idempotency_key)` };
  let problem: string | undefined;
  const str = (...keys: string[]): string => {
    for (const k of keys) {
      const v = o[k];
      if (v === undefined || v === null) continue;
      if (typeof v === "string") return v;
      problem ??= `${k}: must be a string`;
      return "";
    }
    return "";
  };
  const type = str("type", "event_type");
  const id = str("id", "event_id");
  const source = str("source");
  const subject = str("subject");
  const key = str("idempotency_key", "idempotencyKey");
  if (problem) return { error: problem };
  if (!type) return { error: 'type: is required ("type" or "event_type")' };
  const data = o.data;
  if (typeof data !== "object" || data === null || Array.isArray(data)) return { error: "data: must be a JSON object (the event's payload)" };
  const attributes = o.attributes ?? {};
  if (typeof attributes !== "object" || attributes === null || Array.isArray(attributes) || Object.values(attributes).some((v) => typeof v !== "string")) {
    return { error: "attributes: must be an object of strings" };
  }
  const timeRaw = o.time ?? o.timestamp;
  let time: Date | undefined;
  if (typeof timeRaw === "number") time = new Date(timeRaw * 1000); // unix seconds, as the seeds write them
  else if (typeof timeRaw === "string") time = /^\d+(\.\d+)?$/.test(timeRaw) ? new Date(Number(timeRaw) * 1000) : new Date(timeRaw);
  else if (timeRaw !== undefined && timeRaw !== null) return { error: "time: must be an RFC 3339 string or unix seconds" };
  if (time && Number.isNaN(time.getTime())) return { error: `time: "${String(timeRaw)}" is not an RFC 3339 time or unix seconds` };
  return {
    request: {
      idempotencyKey: key,
      event: {
        type,
        id,
        source: source || defaults.source,
        subject,
        attributes: { ...defaults.attributes, ...(attributes as Record<string, string>) },
        time: time ? timestampFromDate(time) : undefined,
        payload: { case: "data", value: data as JsonObject },
      },
    },
  };
}

async function countLines(path: string): Promise<number> {
  let count = 0;
  let last = 10;
  for await (const chunk of createReadStream(path)) {
    const buf = chunk as Buffer;
    for (let i = buf.indexOf(10); i >= 0; i = buf.indexOf(10, i + 1)) count++;
    if (buf.length > 0) last = buf[buf.length - 1]!;
  }
  return last === 10 ? count : count + 1;
}

function round(seconds: number): number {
  return Math.round(seconds * 100) / 100;
}

