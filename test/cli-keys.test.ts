import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newApiKey } from "../server/auth/api-key.js";
import { loadConfig } from "../server/config/config.js";
import { startTestServer, type TestServer } from "./helpers/test-server.js";
import { cli, expectOneLineError } from "./helpers/cli-process.js";

/** The value of a "label  value" line of `keys create`. */
function field(stdout: string, label: string): string {
  const m = new RegExp(`^${label} +(.*)$`, "m").exec(stdout);
  expect(m, `no "${label}" line in: ${stdout}`).not.toBeNull();
  return m![1]!.trim();
}

describe("tidings keys", () => {
  const adminKey = newApiKey();
  let t: TestServer;
  /** Global options of a call as the admin. */
  let asAdmin: string[];
  beforeAll(async () => {
    t = await startTestServer({ config: { auth: "keys", adminKey } });
    asAdmin = ["--server", t.url, "--token", adminKey];
  });
  afterAll(async () => {
    await t?.close();
  });

  /** Creates a key with `tidings keys create --json` and returns the key and its id. */
  async function createKey(name: string, ...scopes: string[]): Promise<{ key: string; id: string }> {
    const run = await cli(["keys", "create", "--name", name, ...scopes.flatMap((s) => ["--scope", s]), "--json", ...asAdmin]);
    expect(run.code, run.stderr).toBe(0);
    const res = JSON.parse(run.stdout) as { key: string; apiKey: { id: string } };
    return { key: res.key, id: res.apiKey.id };
  }

  it("creates a key that works, shows it once, and lists it by prefix only", async () => {
    const run = await cli(["keys", "create", "--name", "memory agent", "--scope", "publish=memory.*,risk.**", "--scope", "subscribe", "--publish-rate", "50", ...asAdmin]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toBe("");
    const key = field(run.stdout, "key");
    expect(key).toMatch(/^tid_[A-Za-z0-9]{40}$/);
    expect(run.stdout).toMatch(/shown only this once/);
    const id = field(run.stdout, "id");
    expect(id).toMatch(/^key_/);
    expect(field(run.stdout, "name")).toBe("memory agent");
    expect(field(run.stdout, "prefix")).toBe(key.slice(0, 12));
    expect(field(run.stdout, "grants")).toBe("publish(memory.*,risk.**) subscribe");
    expect(field(run.stdout, "limits")).toBe("rate=50/s");

    // The key works for what it was given.
    const published = await cli(["publish", "memory.created", '{"memory_id": "m-1"}', "--server", t.url, "--token", key]);
    expect(published.code, published.stderr).toBe(0);
    expect(published.stdout).toMatch(/^published \S+ at sequence \d+$/m);
    const listed = await cli(["events", "list", "memory.*", "--json", "--server", t.url], { env: { TIDINGS_TOKEN: key } });
    expect(listed.code, listed.stderr).toBe(0);
    expect(listed.stdout).toContain('"memory_id":"m-1"');

    // The table shows the key by its prefix, never the key itself.
    const table = await cli(["keys", "list", ...asAdmin]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout.split("\n")[0]).toMatch(/^ID +NAME +PREFIX +GRANTS +LIMITS +CREATED +REVOKED$/);
    const row = table.stdout.split("\n").find((l) => l.startsWith(id));
    expect(row, table.stdout).toBeDefined();
    expect(row).toContain(key.slice(0, 12));
    expect(row).toContain("memory agent");
    expect(row).toContain("publish(memory.*,risk.**) subscribe");
    expect(table.stdout).not.toContain(key);

    // --json: one ApiKey per line, the key nowhere.
    const json = await cli(["keys", "list", "--json", ...asAdmin]);
    expect(json.code, json.stderr).toBe(0);
    expect(json.stdout).not.toContain(key);
    const records = json.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);
    expect(records.find((r) => r.id === id)).toMatchObject({
      name: "memory agent",
      prefix: key.slice(0, 12),
      grants: [{ scope: "SCOPE_PUBLISH", eventTypes: ["memory.*", "risk.**"] }, { scope: "SCOPE_SUBSCRIBE" }],
      publishRate: 50,
    });

    // create --json prints the CreateApiKeyResponse.
    const created = await cli(["keys", "create", "--name", "ops", "--scope", "admin", "--scope", "webhooks:read", "--max-subscriptions", "0", "--json", ...asAdmin]);
    expect(created.code, created.stderr).toBe(0);
    const res = JSON.parse(created.stdout);
    expect(res.key).toMatch(/^tid_[A-Za-z0-9]{40}$/);
    expect(res.apiKey).toMatchObject({ name: "ops", prefix: res.key.slice(0, 12), grants: [{ scope: "SCOPE_ADMIN" }, { scope: "SCOPE_WEBHOOKS_READ" }], maxSubscriptions: 0 });
  });

  it("refuses a key without the admin scope, and a call without a key, with a hint about the token", async () => {
    const publisher = await createKey("publisher only", "publish");
    const [denied, anonymous, fromEnv] = await Promise.all([
      cli(["keys", "list", "--server", t.url, "--token", publisher.key]),
      cli(["keys", "list", "--server", t.url]),
      cli(["keys", "list", "--server", t.url], { env: { TIDINGS_TOKEN: adminKey } }),
    ]);
    expectOneLineError(denied, 1, /^tidings: permission_denied: .*--token or TIDINGS_TOKEN/);
    expectOneLineError(anonymous, 1, /^tidings: unauthenticated: .*--token <key> or set TIDINGS_TOKEN/);
    expect(denied.stdout).toBe("");
    expect(anonymous.stdout).toBe("");
    expect(fromEnv.code, fromEnv.stderr).toBe(0);
    expect(fromEnv.stdout).toContain(publisher.id);
  });

  it("revokes a key: it stops working, and only --all lists it", async () => {
    const { key, id } = await createKey("short-lived", "publish=memory.*");
    const before = await cli(["publish", "memory.created", '{"memory_id": "m-2"}', "--server", t.url, "--token", key]);
    expect(before.code, before.stderr).toBe(0);

    const revoked = await cli(["keys", "revoke", id, ...asAdmin]);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toMatch(new RegExp(`^revoked ${id} "short-lived" \\(${key.slice(0, 12)}…, publish\\(memory\\.\\*\\)\\) at \\d{4}-\\d{2}-\\d{2}T`));

    const after = await cli(["publish", "memory.created", '{"memory_id": "m-3"}', "--server", t.url, "--token", key]);
    expectOneLineError(after, 1, /^tidings: unauthenticated: .*--token or TIDINGS_TOKEN/);
    // A batch stops at the first refusal of the key instead of failing every line.
    const file = join(await mkdtemp(join(tmpdir(), "tidings-keys-")), "events.jsonl");
    await writeFile(file, Array.from({ length: 300 }, (_, i) => JSON.stringify({ type: "memory.created", data: { memory_id: `m-batch-${i}` } })).join("\n"));
    const batch = await cli(["publish", "--batch", file, "--server", t.url, "--token", key]);
    expect(batch.code).toBe(1);
    expect(batch.stdout).toMatch(/^published 0, failed 0 .*; not sent: line 1 and after/m);
    expect(batch.stderr.trim().split("\n")).toHaveLength(1);
    expect(batch.stderr).toMatch(/unauthenticated.*lines from 1 on were not published/);

    const [active, all] = await Promise.all([cli(["keys", "list", ...asAdmin]), cli(["keys", "list", "--all", ...asAdmin])]);
    expect(active.code, active.stderr).toBe(0);
    expect(active.stdout).not.toContain(id);
    expect(all.code, all.stderr).toBe(0);
    const row = all.stdout.split("\n").find((l) => l.startsWith(id));
    expect(row, all.stdout).toMatch(/ \d{4}-\d{2}-\d{2}T\S+Z$/); // the REVOKED column
  });

  it("generates a key offline, in the format --admin-key takes", async () => {
    const [a, b] = await Promise.all([cli(["keys", "generate"]), cli(["keys", "generate"])]);
    expect(a.stdout.trim()).toMatch(/^tid_[A-Za-z0-9]{40}$/);
    expect(b.stdout.trim()).not.toBe(a.stdout.trim());
    expect(() => loadConfig(["--admin-key", a.stdout.trim()], {})).not.toThrow();
  });

  it("rejects bad --scope values as usage errors, before calling the server", async () => {
    const [bogus, patternOnAdmin, emptyPatterns, noScope] = await Promise.all([
      cli(["keys", "create", "--name", "x", "--scope", "bogus", ...asAdmin]),
      cli(["keys", "create", "--name", "x", "--scope", "admin=x.*", ...asAdmin]),
      cli(["keys", "create", "--name", "x", "--scope", "publish=", ...asAdmin]),
      cli(["keys", "create", "--name", "x", ...asAdmin]),
    ]);
    expectOneLineError(bogus, 2, /--scope: unknown scope "bogus"; expected publish, subscribe, webhooks:read, webhooks:write, admin/);
    expectOneLineError(patternOnAdmin, 2, /--scope admin=x\.\*: only publish and subscribe take event type patterns/);
    expectOneLineError(emptyPatterns, 2, /--scope publish=: expected comma-separated type patterns/);
    expectOneLineError(noScope, 2, /keys create needs at least one --scope/);
    // Nothing was created.
    const json = await cli(["keys", "list", "--json", ...asAdmin]);
    expect(json.stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l).name)).not.toContain("x");
  });
});
