import type { Command } from "commander";
import type { StartAt, TidingsClient } from "../../sdk/index.js";
import { clientFor, current } from "../context.js";
import { CliError } from "../errors.js";
import { colorsFor, eventLine, note, out, palette, receivedJson } from "../output.js";
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
  let subscribed = false;
  let timedOut = false;
  const timer = setTimeout(() => {
    if (subscribed) return;
    timedOut = true;
    stop.abort();
  }, subscribeTimeoutMs);
  try {
    // failFast: an unreachable server or a refused request is one clear line at once; once
    // subscribed, the SDK reconnects and resumes by itself.
    for await (const e of client.subscribe({
      patterns: r.patterns,
      filter: r.filter,
      attributes: r.attributes,
      from: sdkStart(r.from),
      signal: stop.signal,
      failFast: true,
      onSubscribed: (cursor) => {
        if (subscribed) return;
        subscribed = true;
        if (r.ready) note(`subscribed after sequence ${cursor}`);
      },
    })) {
      out(r.json ? JSON.stringify(receivedJson(e)) : eventLine(receivedJson(e), p));
      if (r.count !== undefined && ++seen >= r.count) break;
    }
    if (timedOut) throw new CliError(`the server at ${current.server} did not answer the subscription within ${subscribeTimeoutMs / 1000} s`);
  } finally {
    clearTimeout(timer);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    stop.abort();
  }
}

/** `--from SEQ` shows SEQ itself: the SDK resumes after a cursor, so start just before it. */
function sdkStart(from: From): StartAt {
  switch (from.kind) {
    case "sequence":
      return from.sequence > 0n ? from.sequence - 1n : 0n;
    case "time":
      return from.time;
    default:
      return from.kind;
  }
}
