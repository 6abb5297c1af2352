import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { PayloadFormat } from "../../sdk/index.js";
import { clientFor } from "../context.js";
import { colorsFor, eventLine, out, palette, wireJson } from "../output.js";
import { collectAttr, intOption, parseFrom } from "../parse.js";

interface ListOptions {
  filter?: string;
  attr?: Record<string, string>;
  from?: string;
  limit: number;
  descending?: boolean;
  json?: boolean;
}

/** ListEvents returns at most this many per page. */
const maxPageSize = 1000;

export function registerEvents(program: Command, onSubcommand: (c: Command) => void): void {
  const events = program
    .command("events")
    .description("read the history: list events, get one by id")
    .hook("preSubcommand", (_parent, sub) => onSubcommand(sub))
    .addHelpText(
      "after",
      `
Examples:
  $ tidings events list 'memory.*' --attr agent=helena --descending --limit 10
  $ tidings events get 0192f5c3-7d1e-7cc0-9a53-2b1c6f0e4a11 --json`,
    );

  events
    .command("list")
    .description("list events, oldest first (newest first with --descending)")
    .argument("[patterns...]", "type patterns: memory.created, 'memory.*', 'tidings.**' (default: every type)")
    .option("--filter <cel>", "a CEL filter, e.g. 'data.tier == \"hot\"'")
    .option("--attr <key=value>", "only events with this attribute (repeatable)", collectAttr)
    .option("--from <where>", "a sequence number (the first to list) or a time: RFC 3339, or 15m/2h/7d ago")
    .option("--limit <n>", "at most n events (0: no limit)", intOption("--limit"), 100)
    .option("--descending", "newest first")
    .option("--json", "one JSON object per line: {id, type, source, subject, time, sequence, attributes, data}")
    .addHelpText(
      "after",
      `
Examples:
  $ tidings events list
  $ tidings events list 'risk.*' --filter 'data.severity == "critical"' --descending --limit 5
  $ tidings events list --from 2h --json | jq -r .id`,
    )
    .action(async (patterns: string[], o: ListOptions, command: Command) => {
      const from = o.from === undefined ? undefined : parseFrom(o.from, ["sequence", "time"]);
      const client = clientFor(command);
      const p = palette(colorsFor(process.stdout));
      let shown = 0;
      let pageToken = "";
      do {
        const pageSize = o.limit === 0 ? maxPageSize : Math.min(maxPageSize, o.limit - shown);
        const page = await client.events.listEvents({
          patterns,
          attributes: o.attr ?? {},
          filter: o.filter ?? "",
          afterSequence: from?.kind === "sequence" && from.sequence > 0n ? from.sequence - 1n : 0n,
          startTime: from?.kind === "time" ? timestampFromDate(from.time) : undefined,
          descending: Boolean(o.descending),
          pageSize,
          pageToken,
          payloadFormat: PayloadFormat.JSON,
        });
        for (const e of page.events) {
          if (o.limit !== 0 && shown >= o.limit) break;
          const json = wireJson(e);
          out(o.json ? JSON.stringify(json) : eventLine(json, p, true));
          shown++;
        }
        pageToken = page.nextPageToken;
      } while (pageToken && (o.limit === 0 || shown < o.limit));
    });

  events
    .command("get")
    .description("show one event")
    .argument("<id>", "the event id")
    .option("--json", "the event as one JSON object")
    .addHelpText(
      "after",
      `
Examples:
  $ tidings events get 0192f5c3-7d1e-7cc0-9a53-2b1c6f0e4a11
  $ tidings events get alma-evt-42 --json | jq .data`,
    )
    .action(async (id: string, o: { json?: boolean }, command: Command) => {
      const client = clientFor(command);
      const res = await client.events.getEvent({ id, payloadFormat: PayloadFormat.JSON });
      const e = wireJson(res.event!);
      if (o.json) return out(JSON.stringify(e));
      const p = palette(colorsFor(process.stdout));
      const rows: Array<[string, string]> = [
        ["id", p.id(e.id)],
        ["type", p.type(e.type)],
        ["source", e.source],
        ["subject", e.subject],
        ["time", e.time],
        ["sequence", String(e.sequence)],
        ["attributes", Object.entries(e.attributes).map(([k, v]) => `${k}=${v}`).join(", ")],
      ];
      for (const [k, v] of rows) out(`${p.dim(k.padEnd(11))}${v}`);
      out(p.dim("data"));
      out(JSON.stringify(e.data, null, 2));
    });
}
