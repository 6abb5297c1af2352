import { toJsonString } from "@bufbuild/protobuf";
import type { Command } from "commander";
import { PublishResponseSchema } from "../../sdk/index.js";
import { clientFor } from "../context.js";
import { UsageError } from "../errors.js";
import { out } from "../output.js";
import { collectAttr, payloadArg } from "../parse.js";
import { publishBatchFile } from "./publish-batch.js";

interface PublishOptions {
  batch?: string;
  source: string;
  subject?: string;
  attr?: Record<string, string>;
  idempotencyKey?: string;
  id?: string;
  time?: string;
  json?: boolean;
}

export function registerPublish(program: Command): void {
  program
    .command("publish")
    .description("publish one event, or a JSON Lines file of events with --batch")
    .argument("[type]", "the event type, e.g. memory.created (see `tidings types`)")
    .argument("[payload]", "the payload: a JSON object, @file.json, or @- for stdin")
    .option("--batch <file.jsonl>", 'publish every line of a JSON Lines file ("-" for stdin), 500 per PublishBatch call')
    .option("--source <source>", "the event's source", "tidings-cli")
    .option("--subject <subject>", "the event's subject")
    .option("--attr <key=value>", "an attribute (repeatable)", collectAttr)
    .option("--idempotency-key <key>", "makes a retry safe: the server returns the original event for a key it has seen")
    .option("--id <id>", "the event id (the server assigns one when absent)")
    .option("--time <time>", "when it happened, RFC 3339 (default: now)")
    .option("--json", "print the PublishResponse as JSON (with --batch: the summary)")
    .addHelpText(
      "after",
      `
Batch lines are {"type", "data", "source"?, "subject"?, "attributes"?, "id"?, "time"?, "idempotency_key"?};
the seeds' {"event_type", "event_id", "timestamp" (unix seconds), "data"} and the lines of
\`tidings export\` are accepted too. A bad line is reported with its number and counted as failed;
the other lines are still published. The exit code is 1 if any line failed.

Examples:
  $ tidings publish memory.created '{"memory_id": "m-1", "tier": "hot"}' --attr agent=helena
  $ tidings publish risk.alert @alert.json --source pm/scanner --subject /srv --idempotency-key scan-42
  $ echo '{"memory_id": "m-2"}' | tidings publish memory.created @-
  $ tidings publish --batch events.jsonl --source importer`,
    )
    .action(async (type: string | undefined, payload: string | undefined, o: PublishOptions, command: Command) => {
      if (o.batch !== undefined) {
        if (type !== undefined) throw new UsageError("publish --batch takes no <type> or <payload>: each line names its own");
        for (const flag of ["subject", "idempotencyKey", "id", "time"] as const) {
          if (o[flag] !== undefined) throw new UsageError(`--${flag === "idempotencyKey" ? "idempotency-key" : flag} cannot be used with --batch: put it on each line`);
        }
        await publishBatchFile(clientFor(command), o.batch, { source: o.source, attributes: o.attr ?? {}, json: Boolean(o.json) });
        return;
      }
      if (type === undefined || payload === undefined) throw new UsageError("publish needs <type> and <payload> (JSON, @file or @-), or --batch <file.jsonl>");
      const data = await payloadArg(payload, "argument 2");
      let time: Date | undefined;
      if (o.time !== undefined) {
        time = new Date(o.time);
        if (Number.isNaN(time.getTime())) throw new UsageError(`--time: "${o.time}" is not an RFC 3339 time`);
      }
      const client = clientFor(command);
      const res = await client.publishJson(type, data, {
        source: o.source,
        subject: o.subject,
        attributes: o.attr,
        idempotencyKey: o.idempotencyKey,
        id: o.id,
        time,
      });
      if (o.json) out(toJsonString(PublishResponseSchema, res));
      else out(`published ${res.id} at sequence ${res.sequence}${res.duplicate ? " (duplicate: the idempotency key was used before; this is the original event)" : ""}`);
    });
}
