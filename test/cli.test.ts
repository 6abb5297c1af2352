import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JsonObject } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PayloadFormat } from "../sdk/index.js";
import { createTestStorage } from "./helpers/database.js";
import { shopProto, shopV1Fields, writeProtos } from "./helpers/descriptor-sets.js";
import { eventually, startTestServer, type TestServer } from "./helpers/test-server.js";
import { cli, cliEnv, expectOneLineError, start } from "./helpers/cli-process.js";


async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Every event of the log that carries the attributes, oldest first. */
async function eventsWith(t: TestServer, attributes: Record<string, string>) {
  const all = [];
  let pageToken = "";
  do {
    const page = await t.client().listEvents({ attributes, pageSize: 1000, pageToken, payloadFormat: PayloadFormat.JSON });
    all.push(...page.events);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return all;
}

const parseLines = (text: string) => text.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>);

describe("the tidings CLI", () => {
  let t: TestServer;
  let dir: string;
  beforeAll(async () => {
    t = await startTestServer();
    dir = await mkdtemp(join(tmpdir(), "tidings-cli-"));
  });
  afterAll(async () => {
    await t?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("publishes one event with attributes and prints its id and sequence", async () => {
    const run = await cli(["publish", "memory.created", '{"memory_id":"m1"}', "--attr", "agent=helena", "--server", t.url]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toBe("");
    const m = /^published (\S+) at sequence (\d+)$/.exec(run.stdout.trim());
    expect(m, run.stdout).not.toBeNull();
    const got = await t.client().getEvent({ id: m![1]!, payloadFormat: PayloadFormat.JSON });
    expect(got.event).toMatchObject({ type: "memory.created", source: "tidings-cli", attributes: { agent: "helena" }, sequence: BigInt(m![2]!) });
    expect(got.event!.payload).toEqual({ case: "data", value: { memory_id: "m1" } });

    // --json prints the PublishResponse; TIDINGS_SERVER replaces --server.
    const json = await cli(["publish", "memory.created", '{"memory_id":"m1b"}', "--json", "--subject", "s-1", "--idempotency-key", "k-1"], { env: { TIDINGS_SERVER: t.url } });
    expect(json.code, json.stderr).toBe(0);
    const res = JSON.parse(json.stdout);
    expect(res).toMatchObject({ id: expect.any(String), sequence: expect.stringMatching(/^\d+$/) });
    const again = await cli(["publish", "memory.created", '{"memory_id":"m1b"}', "--json", "--subject", "s-1", "--idempotency-key", "k-1", "--server", t.url]);
    expect(JSON.parse(again.stdout)).toMatchObject({ id: res.id, sequence: res.sequence, duplicate: true });
  });

  it("publishes a payload read from @file and from @- (stdin)", async () => {
    const file = join(dir, "payload.json");
    await writeFile(file, JSON.stringify({ file_path: "/srv/notes.txt", change_type: "modified", size: 1234 }));
    const run = await cli(["publish", "file.changed", `@${file}`, "--source", "pm/watcher", "--subject", "/srv/notes.txt", "--server", t.url]);
    expect(run.code, run.stderr).toBe(0);
    const id = /^published (\S+) at sequence \d+$/.exec(run.stdout.trim())![1]!;
    const got = await t.client().getEvent({ id, payloadFormat: PayloadFormat.JSON });
    expect(got.event).toMatchObject({ type: "file.changed", source: "pm/watcher", subject: "/srv/notes.txt" });
    expect(got.event!.payload.value).toEqual({ file_path: "/srv/notes.txt", change_type: "modified", size: "1234" }); // int64: a JSON string

    const piped = await cli(["publish", "memory.created", "@-", "--server", t.url], { input: '{"memory_id": "from-stdin"}' });
    expect(piped.code, piped.stderr).toBe(0);
    const pipedId = /^published (\S+)/.exec(piped.stdout)![1]!;
    expect((await t.client().getEvent({ id: pipedId, payloadFormat: PayloadFormat.JSON })).event!.payload.value).toEqual({ memory_id: "from-stdin" });
  });

  it("publishes a JSON Lines batch, reporting the bad lines by number and publishing the rest", async () => {
    const run = `b${Date.now()}`;
    const lines: string[] = [];
    for (let n = 1; n <= 1200; n++) {
      if (n === 5) lines.push('{"type": "memory.created", "data": {"memory_id": ');
      else if (n === 777) lines.push(JSON.stringify({ type: "no.such.type", data: {} }));
      else if (n % 3 === 0) lines.push(JSON.stringify({ event_type: "file.changed", event_id: `${run}-${n}`, timestamp: 1642248000 + n, data: { file_path: `/f/${n}`, change_type: "created" } }));
      else lines.push(JSON.stringify({ type: "memory.created", data: { memory_id: `${run}-${n}` }, source: "alma/batch", attributes: { n: String(n) } }));
    }
    const file = join(dir, "batch.jsonl");
    await writeFile(file, lines.join("\n") + "\n");

    const res = await cli(["publish", "--batch", file, "--attr", `run=${run}`, "--server", t.url], { timeoutMs: 55_000 });
    expect(res.code, res.stderr).toBe(1);
    expect(res.stdout).toMatch(/^published 1198, failed 2 in [\d.]+ s \(\d+ events\/s\); failed lines: 5, 777$/m);
    expect(res.stderr).toMatch(/^tidings: line 5: invalid JSON: /m);
    expect(res.stderr).toMatch(/^tidings: line 777: invalid_argument: event\.type: unknown event type "no\.such\.type"/m);
    expect(res.stderr).not.toMatch(/\n\s+at /);

    const stored = await eventsWith(t, { run });
    expect(stored).toHaveLength(1198);
    // In file order, with the seed format's id and time kept.
    const expected = lines.map((_, i) => i + 1).filter((n) => n !== 5 && n !== 777);
    expect(stored.map((e) => (e.type === "file.changed" ? Number(e.id.split("-")[1]) : Number(e.attributes.n)))).toEqual(expected);
    const seedLine = stored.find((e) => e.id === `${run}-3`)!;
    expect(Number(seedLine.time!.seconds)).toBe(1642248003);
    expect(seedLine.source).toBe("tidings-cli");
  });

  it("tails live events as JSON lines and exits after --count", async () => {
    const tail = start(["tail", "memory.*", "--json", "--count", "3", "--from", "latest", "--ready", "--server", t.url]);
    await tail.waitFor(() => (tail.stderr().includes("subscribed") ? true : undefined), "the tail to subscribe");
    const client = t.client();
    const published = [];
    for (const id of ["t1", "t2", "t3"]) {
      published.push(await client.publish({ event: { type: "memory.created", source: "alma/tail", attributes: { agent: "helena" }, payload: { case: "data", value: { memory_id: id, tier: "hot" } } } }));
    }
    await client.publish({ event: { type: "file.changed", source: "pm", payload: { case: "data", value: { file_path: "/x", change_type: "created" } } } });
    const run = await tail.exited;
    expect(run.code, run.stderr).toBe(0);
    const events = parseLines(run.stdout);
    expect(events).toHaveLength(3);
    expect(events.map((e) => e.id)).toEqual(published.map((p) => p.id));
    expect(events[0]).toEqual({
      id: published[0]!.id,
      type: "memory.created",
      source: "alma/tail",
      subject: "",
      time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      sequence: Number(published[0]!.sequence),
      attributes: { agent: "helena" },
      data: { memory_id: "t1", tier: "hot" },
    });
  });

  it("tails history with --from earliest, and prints human lines without --json", async () => {
    const tag = `h${Date.now()}`;
    const ids = [];
    for (let i = 0; i < 4; i++) {
      ids.push((await t.client().publish({ event: { type: "memory.created", source: "alma/history", attributes: { tag }, payload: { case: "data", value: { memory_id: `${tag}-${i}` } } } })).id);
    }
    const json = await cli(["tail", "--from", "earliest", "--attr", `tag=${tag}`, "--count", "4", "--json", "--server", t.url]);
    expect(json.code, json.stderr).toBe(0);
    expect(parseLines(json.stdout).map((e) => e.id)).toEqual(ids);

    const human = await cli(["tail", "memory.created", "--from", "earliest", "--filter", `attributes.tag == "${tag}"`, "--count", "2", "--server", t.url]);
    expect(human.code, human.stderr).toBe(0);
    const lines = human.stdout.trim().split("\n");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^\\d{4}-\\S+Z  memory\\.created  ${ids[0]}  tag=${tag}  \\{"memory_id":"${tag}-0"\\}$`));
    expect(human.stdout).not.toContain("\u001b["); // no colours off a terminal
  });

  it("lists and gets events, and shows the catalog", async () => {
    const tag = `l${Date.now()}`;
    const ids = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await t.client().publish({ event: { type: i % 2 ? "file.changed" : "memory.created", source: "alma/list", attributes: { tag }, payload: { case: "data", value: i % 2 ? { file_path: `/l/${i}`, change_type: "created" } : { memory_id: `${tag}-${i}` } } } })).id);
    }
    const list = await cli(["events", "list", "--attr", `tag=${tag}`, "--json", "--server", t.url]);
    expect(list.code, list.stderr).toBe(0);
    expect(parseLines(list.stdout).map((e) => e.id)).toEqual(ids);

    const newest = await cli(["events", "list", "memory.*", "--attr", `tag=${tag}`, "--descending", "--limit", "2", "--json", "--server", t.url]);
    expect(parseLines(newest.stdout).map((e) => e.id)).toEqual([ids[4], ids[2]]);

    const filtered = await cli(["events", "list", "--filter", `attributes.tag == "${tag}" && data.memory_id == "${tag}-2"`, "--server", t.url]);
    expect(filtered.code, filtered.stderr).toBe(0);
    expect(filtered.stdout.trim().split("\n")).toHaveLength(1);
    expect(filtered.stdout).toContain(ids[2]);

    const get = await cli(["events", "get", ids[1]!, "--json", "--server", t.url]);
    expect(JSON.parse(get.stdout)).toMatchObject({ id: ids[1], type: "file.changed", source: "alma/list", attributes: { tag }, data: { file_path: "/l/1", change_type: "created" } });
    const human = await cli(["events", "get", ids[0]!, "--server", t.url]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(new RegExp(`^id\\s+${ids[0]}$`, "m"));
    expect(human.stdout).toMatch(/^type\s+memory\.created$/m);
    expect(human.stdout).toContain(`"memory_id": "${tag}-0"`);

    const missing = await cli(["events", "get", "no-such-id", "--server", t.url]);
    expectOneLineError(missing, 1, /not_found: id: no event with id "no-such-id"/);

    const types = await cli(["types", "--server", t.url]);
    expect(types.code, types.stderr).toBe(0);
    expect(types.stdout).toMatch(/^TYPE\s+ORIGIN\s+DESCRIPTION$/m);
    expect(types.stdout).toMatch(/^memory\.created\s+built-in\s+\S.*$/m);
    expect(types.stdout).toMatch(/^risk\.alert\s+\S.*$/m);

    const one = await cli(["types", "risk.alert", "--server", t.url]);
    expect(one.code, one.stderr).toBe(0);
    expect(one.stdout).toMatch(/^required fields\s+alert_id, risk_type, severity, title$/m);
    const schema = JSON.parse(one.stdout.slice(one.stdout.indexOf("JSON Schema\n") + "JSON Schema\n".length));
    expect(schema).toMatchObject({ type: "object", required: ["alert_id", "risk_type", "severity", "title"] });
    expect(one.stdout).toContain('\n  "type": "object",\n'); // pretty-printed

    const unknown = await cli(["types", "no.such", "--server", t.url]);
    expectOneLineError(unknown, 1, /not_found: name: unknown event type "no\.such"/);
  });

  it("pushes a directory of .proto files: dry run, registration, a breaking change refused with every break listed", async () => {
    const v1 = await writeProtos(shopProto());
    const v2 = await writeProtos(shopProto(shopV1Fields.replace("int64 total_cents = 2;", "string total_cents = 2;").concat("\n  string currency = 7 [(tidings.v1.field).required = true];")));
    const broken = await writeProtos({ "bad/v1/bad.proto": 'syntax = "proto3";\npackage bad.v1;\nimport "nowhere/missing.proto";\n' });
    try {
      const dry = await cli(["types", "push", v1, "--dry-run", "--server", t.url]);
      expect(dry.code, dry.stderr).toBe(0);
      expect(dry.stdout).toMatch(/^shop\.order_placed\s+would be added\s+shop\.v1\.OrderPlaced$/m);
      expect(dry.stdout).toMatch(/^dry run: 2 added, 0 changed; nothing was registered$/m);
      expect((await cli(["types", "shop.order_placed", "--server", t.url])).code).toBe(1);

      const pushed = await cli(["types", "push", v1, "--server", t.url]);
      expect(pushed.code, pushed.stderr).toBe(0);
      expect(pushed.stdout).toMatch(/^shop\.order_shipped\s+added\s+shop\.v1\.OrderShipped$/m);
      expect(pushed.stdout).toMatch(/^registered: 2 added, 0 changed \(catalog revision \d+\)$/m);
      const listed = await cli(["types", "shop.*", "--server", t.url]);
      expect(listed.stdout).toMatch(/^shop\.order_placed\s+registered\s+A customer placed an order\.$/m);
      const published = await cli(["publish", "shop.order_placed", '{"order_id": "o-1", "total_cents": 990}', "--server", t.url]);
      expect(published.code, published.stderr).toBe(0);

      const again = await cli(["types", "push", v1, "--json", "--server", t.url]);
      expect(JSON.parse(again.stdout)).toMatchObject({ added: [], changed: [], dryRun: false });

      const refused = await cli(["types", "push", v2, "--server", t.url]);
      expect(refused.code).toBe(1);
      const lines = refused.stderr.trimEnd().split("\n");
      expect(lines.at(-1)).toBe("tidings: the change would break existing publishers or subscribers: 2 problems (above)");
      expect(lines).toContainEqual(expect.stringMatching(/^ {2}FIELD_WIRE_JSON_COMPATIBLE_TYPE {2}shop\.v1\.OrderPlaced\.total_cents: type changed from int64 to string$/));
      expect(lines).toContainEqual(expect.stringMatching(/^ {2}TIDINGS_FIELD_NO_NEW_REQUIRED {2}shop\.v1\.OrderPlaced\.currency: /));

      const unbuildable = await cli(["types", "push", broken, "--server", t.url]);
      expect(unbuildable.code).toBe(1);
      expect(unbuildable.stderr).toContain(`${broken}/bad/v1/bad.proto`);
      expect(unbuildable.stderr.trim().split("\n").at(-1)).toBe("tidings: buf build failed (above)");

      expectOneLineError(await cli(["types", "push", "--server", t.url]), 2, /give a directory of \.proto files or --descriptor-set <file>, not both/);
      expectOneLineError(await cli(["types", "push", join(v1, "nope"), "--server", t.url]), 1, /is not a directory/);
    } finally {
      for (const dir of [v1, v2, broken]) await rm(dir, { recursive: true, force: true });
    }
  });

  it("fails with exit codes and one-line messages, never a stack trace", async () => {
    const [down, tailDown, badJson, notObject, unknownType, unknownCommand, unknownOption, missingArgs, badFrom, badServer, missingFile] = await Promise.all([
      cli(["publish", "memory.created", '{"memory_id":"x"}', "--server", "http://127.0.0.1:1"]),
      cli(["tail", "--server", "http://127.0.0.1:1"]),
      cli(["publish", "memory.created", '{"memory_id": ', "--server", t.url]),
      cli(["publish", "memory.created", "[1, 2]", "--server", t.url]),
      cli(["publish", "x", '{"a": 1}', "--server", t.url]),
      cli(["bogus"]),
      cli(["publish", "--bogus", "--server", t.url]),
      cli(["publish", "memory.created", "--server", t.url]),
      cli(["tail", "--from", "yesterday-ish", "--server", t.url]),
      cli(["events", "list", "--server", "not a url"]),
      cli(["publish", "memory.created", `@${join(dir, "missing.json")}`, "--server", t.url]),
    ]);
    expectOneLineError(down, 1, /^tidings: cannot reach the server at http:\/\/127\.0\.0\.1:1 \(connection refused\)$/);
    expectOneLineError(tailDown, 1, /^tidings: cannot reach the server at http:\/\/127\.0\.0\.1:1 \(connection refused\)$/);
    expectOneLineError(badJson, 2, /^tidings: invalid JSON in argument 2: /);
    expectOneLineError(notObject, 2, /argument 2 must be a JSON object/);
    expectOneLineError(unknownType, 1, /^tidings: invalid_argument: event\.type: unknown event type "x"; ListEventTypes lists the catalog$/);
    expectOneLineError(unknownCommand, 2, /unknown command 'bogus'/);
    expectOneLineError(unknownOption, 2, /unknown option '--bogus'/);
    expectOneLineError(missingArgs, 2, /publish needs <type> and <payload>/);
    expectOneLineError(badFrom, 2, /--from: expected/);
    expectOneLineError(badServer, 2, /--server: "not a url" is not a URL/);
    expectOneLineError(missingFile, 1, /cannot read .*missing\.json: no such file or directory/);
    for (const r of [down, badJson, unknownType, unknownCommand]) expect(r.stdout).toBe("");

    const help = await cli(["publish", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("Examples:");
    expect(help.stdout).toContain("--server <url>");
  });
});

describe("tidings export", () => {
  let t: TestServer;
  let empty: TestServer;
  let dir: string;
  beforeAll(async () => {
    [t, empty] = await Promise.all([startTestServer(), startTestServer()]);
    dir = await mkdtemp(join(tmpdir(), "tidings-cli-export-"));
  });
  afterAll(async () => {
    await Promise.all([t?.close(), empty?.close()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("writes the log as JSON Lines in the seeds' format, to stdout or --output", async () => {
    const client = t.client();
    const published: Array<{ id: string; sequence: bigint; type: string; data: JsonObject; time: Date }> = [];
    for (let i = 0; i < 1234; i += 100) {
      const entries: Array<{ event: { type: string; source: string; subject: string; attributes: Record<string, string>; payload: { case: "data"; value: JsonObject } } }> = [];
      for (let j = i; j < Math.min(i + 100, 1234); j++) {
        const data: JsonObject = j % 4 === 0 ? { file_path: `/e/${j}`, change_type: "deleted" } : { memory_id: `e-${j}`, tier: "warm" };
        entries.push({ event: { type: j % 4 === 0 ? "file.changed" : "memory.created", source: "alma/export", subject: `s-${j}`, attributes: { j: String(j) }, payload: { case: "data" as const, value: data } } });
      }
      const res = await client.publishBatch({ entries });
      res.results.forEach((r, k) => published.push({ id: r.id, sequence: r.sequence, type: entries[k]!.event.type, data: entries[k]!.event.payload.value, time: new Date(Number(r.time!.seconds) * 1000 + r.time!.nanos / 1e6) }));
    }

    const run = await cli(["export", "--format", "jsonl", "--server", t.url]);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toBe("");
    const lines = parseLines(run.stdout);
    expect(lines).toHaveLength(1234);
    expect(lines.map((l) => l.event_id)).toEqual(published.map((p) => p.id));
    expect(lines.map((l) => l.data)).toEqual(published.map((p) => p.data));
    expect(Object.keys(lines[0]!)).toEqual(["timestamp", "event_id", "type", "source", "subject", "attributes", "sequence", "data"]);
    expect(lines[1]).toMatchObject({ type: "memory.created", source: "alma/export", subject: "s-1", attributes: { j: "1" }, sequence: Number(published[1]!.sequence) });
    expect(lines[0]!.timestamp).toBeCloseTo(published[0]!.time.getTime() / 1000, 3);

    const file = join(dir, "out.jsonl");
    const toFile = await cli(["export", "--format", "jsonl", "--output", file, "--server", t.url]);
    expect(toFile.code, toFile.stderr).toBe(0);
    expect(toFile.stdout.trim()).toBe(`exported 1234 events to ${file}`);
    expect(await readFile(file, "utf8")).toBe(run.stdout);

    // Patterns and --from (the first sequence to export) narrow it.
    const from = published[1000]!.sequence;
    const some = await cli(["export", "--format", "jsonl", "file.*", "--from", String(from), "--server", t.url]);
    const expected = published.filter((p) => p.type === "file.changed" && p.sequence >= from).map((p) => p.id);
    expect(parseLines(some.stdout).map((l) => l.event_id)).toEqual(expected);

    // What export writes, publish --batch reads back: into an empty log, the same events again.
    const back = await cli(["publish", "--batch", file, "--server", empty.url], { timeoutMs: 55_000 });
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toMatch(/^published 1234, failed 0 in /);
    const again = await cli(["export", "--format", "jsonl", "--server", empty.url]);
    expect(again.stdout).toBe(run.stdout);
  });
});

describe("tail across a server restart", () => {
  it("prints every event exactly once, in order, resuming after the restart", async () => {
    const port = await freePort();
    const t = await startTestServer({ config: { port } });
    try {
      const tail = start(["tail", "--json", "--count", "4", "--ready", "--server", t.url], { timeoutMs: 55_000 });
      await tail.waitFor(() => (tail.stderr().includes("subscribed") ? true : undefined), "the tail to subscribe");
      const publish = async (id: string) =>
        (await t.client().publish({ event: { type: "memory.created", source: "alma/restart", payload: { case: "data", value: { memory_id: id } } } })).id;
      const ids = [await publish("r1"), await publish("r2")];
      await tail.waitFor(() => (tail.lines().length === 2 ? true : undefined), "the first two events");

      await t.stop();
      await t.restart();
      expect(t.url).toBe(`http://127.0.0.1:${port}`);
      ids.push(await publish("r3"), await publish("r4"));

      const run = await tail.exited;
      expect(run.code, run.stderr).toBe(0);
      const events = parseLines(run.stdout);
      expect(events.map((e) => e.id)).toEqual(ids);
      expect(events.map((e) => e.data.memory_id)).toEqual(["r1", "r2", "r3", "r4"]);
      const sequences = events.map((e) => e.sequence as number);
      expect([...sequences].sort((a, b) => a - b)).toEqual(sequences);
    } finally {
      await t.close();
    }
  });
});

describe("tidings serve", () => {
  it("serves /healthz and publishes, and stops with exit code 0 on SIGTERM", async () => {
    const storage = await createTestStorage();
    const port = await freePort();
    const env = cliEnv();
    delete env.DATABASE_URL; // the flags below choose the storage
    const args = ["serve", "--port", String(port), ...(storage.databaseUrl ? ["--database-url", storage.databaseUrl] : ["--data-dir", join(storage.dataDir, "data")]), "--poll-interval-ms", "200", "--auth", "keys"];
    const server = start(args, { cleanEnv: env, timeoutMs: 55_000 });
    try {
      const url = `http://127.0.0.1:${port}`;
      await server.waitFor(() => (server.lines().some((l) => l.includes('"tidings listening"')) ? true : undefined), "the server to listen", 30_000);
      expect(server.lines().every((l) => JSON.parse(l))).toBe(true); // logs are JSON lines

      const health = await fetch(`${url}/healthz`, { headers: { connection: "close" } }); // an idle keep-alive connection would hold up the shutdown
      expect(health.status).toBe(200);
      expect(await health.json()).toEqual({ status: "ok" });

      // The first start on an empty database made an admin key and logged it once.
      const keyLines = server.lines().map((l) => JSON.parse(l) as { adminKey?: string }).filter((l) => l.adminKey);
      expect(keyLines).toHaveLength(1);
      const token = keyLines[0]!.adminKey!;
      const refused = await cli(["publish", "memory.created", '{"memory_id": "served"}', "--server", url]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain("unauthenticated");
      const pub = await cli(["publish", "memory.created", '{"memory_id": "served"}', "--server", url, "--token", token]);
      expect(pub.code, pub.stderr).toBe(0);
      const id = /^published (\S+)/.exec(pub.stdout)![1]!;
      const got = await cli(["events", "get", id, "--json", "--server", url, "--token", token]);
      expect(JSON.parse(got.stdout)).toMatchObject({ id, data: { memory_id: "served" } });

      const run = await server.kill("SIGTERM");
      expect(run.code, run.stderr).toBe(0);
      expect(server.lines().some((l) => l.includes('"stopped"'))).toBe(true);

      // A port in use is one clear line, exit code 1; a bad flag value is a usage error.
      const blocker = createServer();
      await new Promise<void>((resolve) => blocker.listen(port, "127.0.0.1", resolve));
      try {
        const busy = await cli(["serve", "--port", String(port), "--data-dir", join(storage.dataDir, "busy")], { cleanEnv: env });
        expect(busy.code, busy.stderr).toBe(1);
        expect(busy.stderr.trim().split("\n").filter((l) => l.startsWith("tidings:"))).toEqual([`tidings: cannot listen on 127.0.0.1:${port}: the address is already in use`]);
      } finally {
        await new Promise((resolve) => blocker.close(resolve));
      }
      const badLevel = await cli(["serve", "--log-level", "loud"], { cleanEnv: env });
      expectOneLineError(badLevel, 2, /--log-level \/ TIDINGS_LOG_LEVEL: expected one of debug, info, warn, error, got "loud"/);
    } finally {
      await server.kill("SIGKILL");
      await storage.drop();
    }
  });
});
