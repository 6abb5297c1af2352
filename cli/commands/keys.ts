import { create, type MessageInitShape, toJsonString } from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { newApiKey } from "../../server/auth/api-key.js";
import { scopeByName, scopeNames, typedScopes } from "../../server/auth/principal.js";
import { type ApiKey, ApiKeySchema, CreateApiKeyResponseSchema, type Grant, GrantSchema, RevokeApiKeyResponseSchema } from "../../gen/tidings/v1/admin_service_pb.js";
import { adminClientFor, unaryCall } from "../context.js";
import { UsageError } from "../errors.js";
import { colorsFor, out, type Palette, palette, table } from "../output.js";
import { intOption } from "../parse.js";

/** ListApiKeys returns at most this many per page. */
const maxPageSize = 1000;

type GrantInit = MessageInitShape<typeof GrantSchema>;

interface CreateOptions {
  name: string;
  scope?: GrantInit[];
  publishRate?: number;
  publishBurst?: number;
  maxSubscriptions?: number;
  json?: boolean;
}

/**
 * Commander collector for a repeatable `--scope name[=pattern,pattern…]`. The same scope given
 * twice is one grant: its patterns add up, and a scope given without patterns covers every type.
 */
export function collectScope(value: string, previous: GrantInit[] = []): GrantInit[] {
  const eq = value.indexOf("=");
  const name = (eq < 0 ? value : value.slice(0, eq)).trim().toLowerCase();
  const scope = scopeByName.get(name);
  if (scope === undefined) {
    throw new UsageError(`--scope: unknown scope "${eq < 0 ? value : value.slice(0, eq)}"; expected ${[...scopeByName.keys()].join(", ")} (publish and subscribe may add type patterns: publish=memory.*,risk.**)`);
  }
  let patterns: string[] = [];
  if (eq >= 0) {
    if (!typedScopes.has(scope)) throw new UsageError(`--scope ${value}: only publish and subscribe take event type patterns; give ${name} alone`);
    patterns = value.slice(eq + 1).split(",").map((p) => p.trim());
    if (patterns.some((p) => p === "")) throw new UsageError(`--scope ${value}: expected comma-separated type patterns after "=", e.g. ${name}=memory.*,risk.**`);
  }
  const before = previous.find((g) => g.scope === scope);
  if (!before) return [...previous, { scope, eventTypes: patterns }];
  // An empty list means every type: it absorbs any patterns.
  const merged = before.eventTypes!.length === 0 || patterns.length === 0 ? [] : [...new Set([...before.eventTypes!, ...patterns])];
  return previous.map((g) => (g === before ? { scope, eventTypes: merged } : g));
}

/** A grant as the CLI shows it: "publish(memory.*,risk.**)", "webhooks:read". */
export function grantText(g: Grant): string {
  const name = scopeNames.get(g.scope) ?? `scope_${g.scope}`;
  return g.eventTypes.length > 0 ? `${name}(${g.eventTypes.join(",")})` : name;
}

/** A key's limits, "-" where the server's default applies. */
function limitsText(k: ApiKey): string {
  const n = (v: number | undefined, unit = "") => (v === undefined ? undefined : v === 0 ? "unlimited" : `${v}${unit}`);
  const parts = [
    ["rate", n(k.publishRate, "/s")],
    ["burst", n(k.publishBurst)],
    ["subscriptions", n(k.maxSubscriptions)],
  ].filter(([, v]) => v !== undefined);
  return parts.length === 0 ? "defaults" : parts.map(([label, v]) => `${label}=${v}`).join(" ");
}

/** An RFC 3339 time to the second. */
function timeText(t: Timestamp | undefined): string {
  return t ? timestampDate(t).toISOString().replace(/\.\d{3}Z$/, "Z") : "-";
}

/** The record of one key as "label  value" lines. */
function keyDetails(k: ApiKey, p: Palette): string[] {
  const rows: Array<[string, string]> = [
    ["id", p.id(k.id)],
    ["name", k.name],
    ["prefix", k.prefix],
    ["grants", k.grants.map(grantText).join(" ")],
    ["limits", limitsText(k)],
    ["created", timeText(k.createTime)],
  ];
  if (k.revokeTime) rows.push(["revoked", timeText(k.revokeTime)]);
  return rows.map(([label, value]) => `${p.dim(label.padEnd(9))}${value}`);
}

export function registerKeys(program: Command, onSubcommand: (c: Command) => void): void {
  const keys = program
    .command("keys")
    .description("manage API keys: create, list, revoke (needs an admin key: --token or TIDINGS_TOKEN), generate")
    .hook("preSubcommand", (_parent, sub) => onSubcommand(sub))
    .addHelpText(
      "after",
      `
Scopes: publish, subscribe, webhooks:read, webhooks:write, admin. publish and subscribe may
be limited to event type patterns: --scope publish=memory.*,risk.**

Examples:
  $ tidings keys create --name "billing publisher" --scope publish=billing.* --token "$ADMIN_KEY"
  $ tidings keys list --all
  $ tidings keys revoke key_0192f5c3-7d1e-7cc0-9a53-2b1c6f0e4a11
  $ TIDINGS_ADMIN_KEY=$(tidings keys generate) tidings serve --database-url postgres://…`,
    );

  keys
    .command("generate")
    .description("print a new random key, without a server: the admin key for --admin-key / TIDINGS_ADMIN_KEY")
    .action(() => {
      out(newApiKey());
    });

  keys
    .command("create")
    .description("create an API key; the key is shown once, in the answer")
    .requiredOption("--name <name>", 'what the key is for, e.g. "billing publisher"')
    .option("--scope <scope[=patterns]>", "a scope the key gets (repeatable): publish, subscribe, webhooks:read, webhooks:write, admin; publish and subscribe may be limited to type patterns: publish=memory.*,risk.**", collectScope)
    .option("--publish-rate <n>", "events per second the key may publish, per node (0: no limit; default: the server's)", intOption("--publish-rate"))
    .option("--publish-burst <n>", "events the key may publish at once (0: no limit; default: the server's)", intOption("--publish-burst"))
    .option("--max-subscriptions <n>", "Subscribe streams the key may hold open, per node (0: no limit; default: the server's)", intOption("--max-subscriptions"))
    .option("--json", "print the CreateApiKeyResponse as JSON: {apiKey, key}")
    .addHelpText(
      "after",
      `
Examples:
  $ tidings keys create --name "memory agent" --scope publish=memory.* --scope subscribe=memory.*,risk.**
  $ tidings keys create --name dashboard --scope subscribe --scope webhooks:read --max-subscriptions 4
  $ tidings keys create --name ops --scope admin --json | jq -r .key`,
    )
    .action(async (o: CreateOptions, command: Command) => {
      if (!o.scope || o.scope.length === 0) throw new UsageError("keys create needs at least one --scope: publish, subscribe, webhooks:read, webhooks:write or admin");
      const client = adminClientFor(command);
      const res = await client.createApiKey({
        name: o.name,
        grants: o.scope.map((g) => create(GrantSchema, g)),
        publishRate: o.publishRate,
        publishBurst: o.publishBurst,
        maxSubscriptions: o.maxSubscriptions,
      }, unaryCall);
      if (o.json) return out(toJsonString(CreateApiKeyResponseSchema, res));
      const p = palette(colorsFor(process.stdout));
      out(`${p.dim("key".padEnd(9))}${p.bold(res.key)}`);
      out(p.warn(`${" ".repeat(9)}shown only this once: store it now (the server keeps only its hash)`));
      for (const line of keyDetails(res.apiKey!, p)) out(line);
    });

  keys
    .command("list")
    .description("list the API keys, oldest first (never the keys themselves, only their prefixes)")
    .option("--all", "revoked keys too")
    .option("--json", "one JSON object per line: {id, name, prefix, grants, publishRate, ..., createTime, revokeTime}")
    .addHelpText(
      "after",
      `
Examples:
  $ tidings keys list
  $ tidings keys list --all --json | jq -r 'select(.revokeTime == null) | .id'`,
    )
    .action(async (o: { all?: boolean; json?: boolean }, command: Command) => {
      const client = adminClientFor(command);
      const p = palette(colorsFor(process.stdout));
      const rows: string[][] = [];
      let pageToken = "";
      do {
        const page = await client.listApiKeys({ pageSize: maxPageSize, pageToken, showRevoked: Boolean(o.all) }, unaryCall);
        for (const k of page.apiKeys) {
          if (o.json) out(toJsonString(ApiKeySchema, k));
          else rows.push([p.id(k.id), k.name, k.prefix, k.grants.map(grantText).join(" "), limitsText(k), timeText(k.createTime), k.revokeTime ? p.warn(timeText(k.revokeTime)) : "-"]);
        }
        pageToken = page.nextPageToken;
      } while (pageToken);
      if (o.json) return;
      if (rows.length === 0) return out(p.dim(o.all ? "no API keys" : "no API keys (--all lists the revoked ones too)"));
      for (const line of table(rows, ["ID", "NAME", "PREFIX", "GRANTS", "LIMITS", "CREATED", "REVOKED"], p)) out(line);
    });

  keys
    .command("revoke")
    .description("revoke an API key, on every node; this cannot be undone")
    .argument("<id>", "the key's id (key_…), as `tidings keys list` shows it")
    .option("--json", "print the RevokeApiKeyResponse as JSON")
    .addHelpText(
      "after",
      `
Examples:
  $ tidings keys revoke key_0192f5c3-7d1e-7cc0-9a53-2b1c6f0e4a11`,
    )
    .action(async (id: string, o: { json?: boolean }, command: Command) => {
      const client = adminClientFor(command);
      const res = await client.revokeApiKey({ id }, unaryCall);
      if (o.json) return out(toJsonString(RevokeApiKeyResponseSchema, res));
      const k = res.apiKey!;
      out(`revoked ${k.id} "${k.name}" (${k.prefix}…, ${k.grants.map(grantText).join(" ")}) at ${timeText(k.revokeTime)}`);
    });
}
