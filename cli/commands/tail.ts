import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { PayloadFormat, StartPosition, type SubscribeRequest, SubscribeRequestSchema, type TidingsClient } from "../../sdk/index.js";
import { clientFor, current } from "../context.js";
import { CliError } from "../errors.js";
import { colorsFor, type EventJson, eventLine, note, out, palette, receivedJson, wireJson } from "../output.js";
import { collectAttr, type From, intOption, parseFrom } from "../parse.js";

interface TailOptions {
  filter?: string;
  attr?: Record<string, string>;
  from: string;
  json?: boolean;
  count?: number;
  ready?: boolean;
}

/** How long the first answer of the server may take before the tail gives up. */
const subscribeTimeoutMs = 30_000;

export function registerTail(program: Command): void {
  program
    .command("tail")
    .description("stream events live (resumes by itself after a server restart or a network error)")
    .argument("[patterns...]", "type patterns: memory.created, 'memory.*', 'tidings.**' (default: every type)")
    .option("--filter <cel>", "a CEL filter, e.g. 'data.tier == \"hot\" && attributes.agent == \"helena\"'")
    .option("--attr <key=value>", "only events with this attribute (repeatable)", collectAttr)
    .option("--from <where>", "latest, earliest, a sequence number (the first to show), a time (RFC 3339) or 15m/2h/7d ago", "latest")
    .option("--json", "one JSON object per line: {id, type, source, subject, time, sequence, attributes, data}")
    .option("--count <n>", "exit after n events", intOption("--count", 1))
    .option("--ready", 'print "tidings: subscribed …" on stderr once the subscription is in place')
    .addHelpText(
      "after",
      `
Each line shows the time, the type, the id, the attributes and the payload. Colours are used on
a terminal unless NO_COLOR is set. Ctrl-C stops.

Examples:
  $ tidings tail
  $ tidings tail 'memory.*' --attr agent=helena
  $ tidings tail risk.alert --filter 'data.severity == "critical"' --json | jq .data.title
  $ tidings tail --from earliest --count 100 --json > first-100.jsonl
  $ tidings tail 'debate.**' --from 1h`,
    )
    .action(async (patterns: string[], o: TailOptions, command: Command) => {
      const from = parseFrom(o.from);
      const client = clientFor(command);
      await tail(client, { patterns, filter: o.filter ?? "", attributes: o.attr ?? {}, from, json: Boolean(o.json), count: o.count, ready: Boolean(o.ready) });
    });
}

interface TailRun {
  patterns: string[];
  filter: string;
  attributes: Record<string, string>;
  from: From;
  json: boolean;
  count?: number;
  ready: boolean;
}

async function tail(client: TidingsClient, r: TailRun): Promise<void> {
  const stop = new AbortController();
  let interrupted = false;
  const onSignal = () => {
    if (interrupted) process.exit(130); // a second Ctrl-C: do not wait
    interrupted = true;
    stop.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const p = palette(colorsFor(process.stdout));
  let seen = 0;
  const print = (json: EventJson) => {
    out(r.json ? JSON.stringify(json) : eventLine(json, p));
    seen++;
  };
  try {
    // The SDK's subscribe hides the stream's first heartbeat. Read it here to learn that the
    // subscription is in place (and to fail fast on a bad filter or a server that is down), then
    // let the SDK carry on after that cursor: nothing is missed in between.
    const first = await firstCursor(client, r, stop.signal);
    if (!first) return; // interrupted
    if (first.event) print(first.event);
    if (r.ready) note(`subscribed after sequence ${first.cursor}`);
    if (r.count !== undefined && seen >= r.count) return;
    for await (const e of client.subscribe({ patterns: r.patterns, filter: r.filter, attributes: r.attributes, from: first.cursor, signal: stop.signal })) {
      print(receivedJson(e));
      if (r.count !== undefined && seen >= r.count) break;
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    stop.abort();
  }
}

/**
 * Opens the subscription as asked, with the raw client, and returns the cursor of its first
 * message (the server sends a heartbeat first) and the event, should that message be one.
 */
async function firstCursor(client: TidingsClient, r: TailRun, signal: AbortSignal): Promise<{ cursor: bigint; event?: EventJson } | undefined> {
  const done = new AbortController();
  const timedOut = new CliError(`the server at ${current.server} did not answer the subscription within ${subscribeTimeoutMs / 1000} s`);
  const timer = setTimeout(() => done.abort(), subscribeTimeoutMs);
  try {
    for await (const res of client.events.subscribe(subscribeRequest(r), { signal: AbortSignal.any([signal, done.signal]) })) {
      return { cursor: res.cursor, event: res.message.case === "event" ? wireJson(res.message.value) : undefined };
    }
    if (signal.aborted) return undefined;
    throw new CliError(`the server at ${current.server} ended the subscription before it started`);
  } catch (err) {
    if (signal.aborted) return undefined;
    if (done.signal.aborted) throw timedOut;
    throw err;
  } finally {
    clearTimeout(timer);
    done.abort(); // ends the stream: the SDK opens its own
  }
}

function subscribeRequest(r: TailRun): SubscribeRequest {
  const start: SubscribeRequest["start"] =
    r.from.kind === "sequence" ? { case: "afterSequence", value: r.from.sequence > 0n ? r.from.sequence - 1n : 0n }
    : r.from.kind === "time" ? { case: "startTime", value: timestampFromDate(r.from.time) }
    : { case: "position", value: r.from.kind === "earliest" ? StartPosition.EARLIEST : StartPosition.LATEST };
  return create(SubscribeRequestSchema, { patterns: r.patterns, filter: r.filter, attributes: r.attributes, start, payloadFormat: PayloadFormat.PROTO });
}
