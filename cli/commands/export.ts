import { createWriteStream, type WriteStream } from "node:fs";
import { rename, rm } from "node:fs/promises";
import { once } from "node:events";
import type { JsonObject } from "@bufbuild/protobuf";
import { type Timestamp, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Command, Option } from "commander";
import { type Event, PayloadFormat } from "../../sdk/index.js";
import { clientFor } from "../context.js";
import { CliError } from "../errors.js";
import { jsonSequence, out } from "../output.js";
import { collectAttr, fsReason, parseFrom } from "../parse.js";
import { progressBar } from "../progress.js";

interface ExportOptions {
  format: "jsonl";
  from?: string;
  filter?: string;
  attr?: Record<string, string>;
  output?: string;
}

/** ListEvents' largest page. */
const pageSize = 1000;

export function registerExport(program: Command): void {
  program
    .command("export")
    .description("write the log as JSON Lines, one event a line, oldest first")
    .argument("[patterns...]", "type patterns: memory.created, 'memory.*', 'tidings.**' (default: every type)")
    .addOption(new Option("--format <format>", "the output format").choices(["jsonl"]).default("jsonl"))
    .option("--from <where>", "a sequence number (the first to export) or a time: RFC 3339, or 15m/2h/7d ago")
    .option("--filter <cel>", "a CEL filter, e.g. 'attributes.project == \"forms\"'")
    .option("--attr <key=value>", "only events with this attribute (repeatable)", collectAttr)
    .option("--output <file>", "write to this file (replaced only once the export is complete) instead of stdout")
    .addHelpText(
      "after",
      `
Each line is {"timestamp" (unix seconds), "event_id", "type", "source", "subject", "attributes",
"sequence", "data"}, the format of the seeds' JSON Lines logs; \`tidings publish --batch\` reads
it back. The export covers the events in the log when it starts.

Examples:
  $ tidings export --format jsonl > events.jsonl
  $ tidings export --format jsonl 'risk.*' --from 1200 --output risks.jsonl
  $ tidings export --format jsonl --from 7d --attr project=forms | gzip > forms-week.jsonl.gz`,
    )
    .action(async (patterns: string[], o: ExportOptions, command: Command) => {
      const from = o.from === undefined ? undefined : parseFrom(o.from, ["sequence", "time"]);
      const client = clientFor(command);
      const query = {
        patterns,
        attributes: o.attr ?? {},
        afterSequence: from?.kind === "sequence" && from.sequence > 0n ? from.sequence - 1n : 0n,
        startTime: from?.kind === "time" ? timestampFromDate(from.time) : undefined,
      };
      // The newest matching event now: the export stops there, a snapshot of the log as it was.
      const newest = await client.events.listEvents({ ...query, descending: true, pageSize: 1, payloadFormat: PayloadFormat.JSON });
      const head = newest.events[0]?.sequence ?? 0n;
      const base = query.afterSequence;

      const target = o.output === undefined ? undefined : `${o.output}.tmp-${process.pid}`;
      const sink: NodeJS.WritableStream | WriteStream = target ? createWriteStream(target) : process.stdout;
      const sinkFailed = target ? once(sink, "error").then(([err]) => Promise.reject(new CliError(`cannot write ${o.output}: ${fsReason(err)}`))) : new Promise<never>(() => {});
      sinkFailed.catch(() => {});
      const bar = progressBar("exporting |{bar}| {percentage}% | {events} events | sequence {sequence}", Number(head - base), { events: 0, sequence: 0 });
      let count = 0;
      try {
        let pageToken = "";
        let done = head === 0n;
        while (!done) {
          const page = await Promise.race([client.events.listEvents({ ...query, filter: o.filter ?? "", pageSize, pageToken, payloadFormat: PayloadFormat.JSON }), sinkFailed]);
          let chunk = "";
          for (const e of page.events) {
            if (e.sequence > head) {
              done = true;
              break;
            }
            chunk += JSON.stringify(exportLine(e)) + "\n";
            count++;
          }
          const last = page.events[page.events.length - 1];
          if (last) bar.update(Number((last.sequence > head ? head : last.sequence) - base), { events: count, sequence: String(last.sequence) });
          if (chunk && !sink.write(chunk)) await Promise.race([once(sink, "drain"), sinkFailed]);
          pageToken = page.nextPageToken;
          if (!pageToken) done = true;
        }
        if (target) {
          (sink as WriteStream).end();
          await Promise.race([once(sink, "finish"), sinkFailed]);
          try {
            await rename(target, o.output!);
          } catch (err) {
            throw new CliError(`cannot write ${o.output}: ${fsReason(err)}`);
          }
        }
      } catch (err) {
        if (target) {
          (sink as WriteStream).destroy();
          await rm(target, { force: true });
        }
        throw err;
      } finally {
        bar.stop();
      }
      if (o.output !== undefined) out(`exported ${count} events to ${o.output}`);
    });
}

/** One event in the seeds' JSON Lines format. */
function exportLine(e: Event) {
  return {
    timestamp: unixSeconds(e.time),
    event_id: e.id,
    type: e.type,
    source: e.source,
    subject: e.subject,
    attributes: e.attributes,
    sequence: jsonSequence(e.sequence),
    data: e.payload.case === "data" ? (e.payload.value as JsonObject) : null,
  };
}

/** Unix seconds, with the fraction down to the microsecond (what PostgreSQL keeps). */
function unixSeconds(t: Timestamp | undefined): number {
  if (!t) return 0;
  return Number(t.seconds) + Math.round(t.nanos / 1000) / 1e6;
}
