import { readFile } from "node:fs/promises";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Command } from "commander";
import { BadRequestSchema, PreconditionFailureSchema } from "../../gen/google/rpc/error_details_pb.js";
import { buildDescriptorSet, DescriptorBuildError } from "../build-descriptor-set.js";
import { clientFor } from "../context.js";
import { CliError, UsageError } from "../errors.js";
import { colorsFor, out, palette, table } from "../output.js";

interface PushOptions {
  descriptorSet?: string;
  dryRun?: boolean;
  json?: boolean;
}

export function registerTypes(program: Command, onSubcommand: (c: Command) => void): void {
  const types = program
    .command("types")
    .description("the event catalog: every type, or one type's required fields and JSON Schema")
    .argument("[type]", "a type name (memory.created) for its details, or a pattern ('memory.*') to list")
    .option("--json", "print JSON: the list of types, or {name, messageType, description, requiredFields, jsonSchema}")
    .addHelpText(
      "after",
      `
Examples:
  $ tidings types
  $ tidings types 'risk.*'
  $ tidings types risk.alert
  $ tidings types risk.alert --json | jq .jsonSchema
  $ tidings types push ./protos`,
    )
    .hook("preSubcommand", (_parent, sub) => onSubcommand(sub))
    .action(async (type: string | undefined, o: { json?: boolean }, command: Command) => {
      const client = clientFor(command);
      const p = palette(colorsFor(process.stdout));
      if (type === undefined || type.includes("*")) {
        const res = await client.events.listEventTypes({ patterns: type === undefined ? [] : [type] });
        const list = res.eventTypes.map((t) => ({ name: t.name, messageType: t.messageType, description: t.description, requiredFields: t.requiredFields, registered: t.registered }));
        if (o.json) return out(JSON.stringify(list, null, 2));
        for (const line of table(list.map((t) => [p.type(t.name), t.registered ? "registered" : "built-in", t.description]), ["TYPE", "ORIGIN", "DESCRIPTION"], p)) out(line);
        return;
      }
      const res = await client.events.getEventType({ name: type });
      const t = res.eventType!;
      const details = { name: t.name, messageType: t.messageType, description: t.description, requiredFields: t.requiredFields, registered: t.registered, jsonSchema: res.jsonSchema ?? {} };
      if (o.json) return out(JSON.stringify(details, null, 2));
      out(`${p.bold(p.type(t.name))}  ${t.description}`);
      out(`${p.dim("message")}          ${t.messageType}${t.registered ? p.dim("  (registered)") : ""}`);
      out(`${p.dim("required fields")}  ${t.requiredFields.length > 0 ? t.requiredFields.join(", ") : "(none)"}`);
      out(p.dim("JSON Schema"));
      out(JSON.stringify(details.jsonSchema, null, 2));
    });
  registerPush(types);
}

/**
 * `tidings types push <dir>`: builds the .proto files with buf and registers their event types.
 * A refusal lists every problem (one per line, with the rule for breaking changes) before the
 * usual one-line error.
 */
function registerPush(types: Command): void {
  types
    .command("push")
    .description("register the event types of a directory of .proto files (built with buf), or of a built descriptor set")
    .argument("[dir]", "a directory of .proto files; `import \"tidings/v1/options.proto\";` resolves with no setup")
    .option("--descriptor-set <file>", "register a set built elsewhere (buf build -o, protoc --descriptor_set_out --include_imports)")
    .option("--dry-run", "check the set and show what would change, without registering")
    .option("--json", "print the server's answer as JSON")
    .addHelpText(
      "after",
      `
Messages carrying the (tidings.v1.event_type) option become event types. A change that would
break existing publishers or subscribers of a type (buf breaking's WIRE_JSON rules, plus
Tidings' required and allowed_values rules) is refused, and every break is listed.

Examples:
  $ tidings types push ./protos
  $ tidings types push ./protos --dry-run
  $ buf build ./protos -o set.binpb && tidings types push --descriptor-set set.binpb`,
    )
    .action(async (dir: string | undefined, _o: PushOptions, command: Command) => {
      // --json is also an option of `types`, which commander hands to the parent: read both.
      const o = command.optsWithGlobals<PushOptions>();
      if ((dir === undefined) === (o.descriptorSet === undefined)) throw new UsageError("give a directory of .proto files or --descriptor-set <file>, not both");
      let set: Uint8Array;
      try {
        set = o.descriptorSet !== undefined ? new Uint8Array(await readFile(o.descriptorSet)) : await buildDescriptorSet(dir!);
      } catch (err) {
        if (err instanceof DescriptorBuildError) {
          const [first, ...rest] = err.message.split("\n");
          for (const line of rest) process.stderr.write(`  ${line}\n`);
          throw new CliError(first!.replace(/:$/, rest.length > 0 ? " (above)" : ""));
        }
        throw err;
      }
      const client = clientFor(command);
      const p = palette(colorsFor(process.stdout));
      let res;
      try {
        res = await client.events.registerEventTypes({ descriptorSet: set, validateOnly: o.dryRun ?? false });
      } catch (err) {
        throw explainRefusal(err);
      }
      if (o.json) {
        return out(JSON.stringify({ eventTypes: res.eventTypes.map((t) => t.name), added: res.added, changed: res.changed, catalogRevision: res.catalogRevision.toString(), dryRun: o.dryRun ?? false }, null, 2));
      }
      const verb = o.dryRun ? "would be" : "";
      for (const t of res.eventTypes) {
        const state = res.added.includes(t.name) ? p.type(`${verb} added`.trim()) : res.changed.includes(t.name) ? `${verb} changed`.trim() : p.dim("unchanged");
        out(`${p.type(t.name)}  ${state}  ${p.dim(t.messageType)}`);
      }
      const changes = res.added.length + res.changed.length;
      out(o.dryRun
        ? `dry run: ${changes === 0 ? "nothing would change" : `${res.added.length} added, ${res.changed.length} changed`}; nothing was registered`
        : changes === 0 ? `nothing changed (catalog revision ${res.catalogRevision})` : `registered: ${res.added.length} added, ${res.changed.length} changed (catalog revision ${res.catalogRevision})`);
    });
}

/** Writes every violation of a refusal to stderr, one per line, and returns the error to report. */
function explainRefusal(err: unknown): unknown {
  if (!(err instanceof ConnectError)) return err;
  const breaks = err.findDetails(PreconditionFailureSchema).flatMap((d) => d.violations);
  const fields = err.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations);
  if (breaks.length === 0 && fields.length === 0) return err;
  for (const b of breaks) process.stderr.write(`  ${b.type}  ${b.subject}: ${b.description}\n`);
  for (const f of fields) process.stderr.write(`  ${f.field}: ${f.description}\n`);
  const what = err.code === Code.FailedPrecondition ? "the change would break existing publishers or subscribers" : "the server refused the descriptor set";
  return new CliError(`${what}: ${breaks.length + fields.length} problem${breaks.length + fields.length === 1 ? "" : "s"} (above)`);
}
