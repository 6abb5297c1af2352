import type { Command } from "commander";
import { clientFor } from "../context.js";
import { colorsFor, out, palette, table } from "../output.js";

export function registerTypes(program: Command): void {
  program
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
  $ tidings types risk.alert --json | jq .jsonSchema`,
    )
    .action(async (type: string | undefined, o: { json?: boolean }, command: Command) => {
      const client = clientFor(command);
      const p = palette(colorsFor(process.stdout));
      if (type === undefined || type.includes("*")) {
        const res = await client.events.listEventTypes({ patterns: type === undefined ? [] : [type] });
        const types = res.eventTypes.map((t) => ({ name: t.name, messageType: t.messageType, description: t.description, requiredFields: t.requiredFields }));
        if (o.json) return out(JSON.stringify(types, null, 2));
        for (const line of table(types.map((t) => [p.type(t.name), t.description]), ["TYPE", "DESCRIPTION"], p)) out(line);
        return;
      }
      const res = await client.events.getEventType({ name: type });
      const t = res.eventType!;
      const details = { name: t.name, messageType: t.messageType, description: t.description, requiredFields: t.requiredFields, jsonSchema: res.jsonSchema ?? {} };
      if (o.json) return out(JSON.stringify(details, null, 2));
      out(`${p.bold(p.type(t.name))}  ${t.description}`);
      out(`${p.dim("message")}          ${t.messageType}`);
      out(`${p.dim("required fields")}  ${t.requiredFields.length > 0 ? t.requiredFields.join(", ") : "(none)"}`);
      out(p.dim("JSON Schema"));
      out(JSON.stringify(details.jsonSchema, null, 2));
    });
}
