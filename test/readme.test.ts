import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildDescriptorSet } from "../cli/build-descriptor-set.js";
import { defaultConfig, settings } from "../server/config/config.js";
import { newApiKey } from "../server/auth/api-key.js";
import { spawn } from "node:child_process";
import { connect, createServer } from "node:net";
import { startReceiver } from "./helpers/receiver.js";
import { callJson, eventually, startTestServer, type TestServer } from "./helpers/test-server.js";

const root = fileURLToPath(new URL("../", import.meta.url));
const run = promisify(execFile);

/** The fenced code blocks of one README section. */
function blocks(readme: string, heading: string, lang: string): string[] {
  const start = readme.indexOf(`## ${heading}`);
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))].map((m) => m[1]!);
}

/** The README's examples, run as written; only the address is the test server's. */
describe("README", () => {
  let t: TestServer;
  let readme: string;
  beforeAll(async () => {
    t = await startTestServer({ config: { ingestSecrets: { pm: "change-me" } } });
    readme = await readFile(join(root, "README.md"), "utf8");
  });
  afterAll(() => t.close());

  it("curl examples work", async () => {
    const commands = blocks(readme, "Use it with curl", "sh");
    expect(commands.length).toBeGreaterThanOrEqual(5);
    for (const command of commands) {
      const { stdout } = await run("bash", ["-c", command.replaceAll("http://localhost:7233", t.url)]);
      const body = JSON.parse(stdout);
      const expectedError = command.match(/^# (\{.*)$/m);
      if (expectedError) {
        const shown = JSON.parse(expectedError[1]!.replace(/, \.\.\.\}$/, "}"));
        expect(body).toMatchObject(shown);
      } else {
        expect(body.code, `${command}\n→ ${stdout}`).toBeUndefined();
      }
    }
    // The history example finds the event the first example published.
    const list = await run("bash", ["-c", commands[2]!.replaceAll("http://localhost:7233", t.url)]);
    expect(JSON.parse(list.stdout).events[0].data.memory_id).toBe("550e8400-e29b-41d4-a716-446655440000");
  });

  it("the TypeScript example works", async () => {
    const [example] = blocks(readme, "Use it from TypeScript", "ts");
    const file = join(root, `.tmp-readme-example-${process.pid}.ts`);
    await writeFile(file, example!.replaceAll("http://localhost:7233", t.url));
    try {
      const { stdout } = await run(process.execPath, ["--import", "tsx", file], { cwd: root, timeout: 30_000 });
      expect(stdout).toMatch(/^published [0-9a-f-]{36} at sequence \d+$/m);
      expect(stdout).toMatch(/^memory\.created \d+: memory m-1 \(tier hot\)$/m);
      expect(stdout).toMatch(/^handler saw m-1$/m);
    } finally {
      await rm(file, { force: true });
    }
  });

  it("webhook examples work: create, receive and verify, history, ingest", async () => {
    const rx = await startReceiver();
    const local = (cmd: string) => cmd.replaceAll("http://localhost:7233", t.url).replaceAll("https://hooks.example.com", rx.url.replace(/\/hook$/, ""));
    try {
      const [create, receiverTs] = [blocks(readme, "Webhooks", "sh")[0]!, blocks(readme, "Webhooks", "ts")[0]!];
      const created = JSON.parse((await run("bash", ["-c", local(create)])).stdout);
      expect(created.webhook.secret).toMatch(/^whsec_/);

      // The receiver example, as its own process, verifying with that secret.
      const port = await freePort();
      const file = join(root, `.tmp-readme-receiver-${process.pid}.ts`);
      await writeFile(file, receiverTs);
      const receiver = spawn(process.execPath, ["--import", "tsx", file], { cwd: root, env: { ...process.env, PORT: String(port), TIDINGS_WEBHOOK_SECRET: created.webhook.secret } });
      let output = "";
      receiver.stdout.on("data", (d) => (output += d));
      receiver.stderr.on("data", (d) => (output += d));
      try {
        const webhooks = t.webhooks();
        const { webhook: local } = await webhooks.createWebhook({ webhook: { url: `http://127.0.0.1:${port}/`, patterns: ["risk.alert"], secret: created.webhook.secret } });
        // The receiver process compiles with tsx first: wait until it listens (a fixed 500 ms was
        // too short on a loaded CI machine, and the first attempt's retry came after the deadline).
        await eventually(() => accepts(port), 20_000, "the README receiver to listen");
        const critical = await callJson(t.url, "Publish", { event: { type: "risk.alert", source: "pm/scanner", data: { alert_id: "r1", risk_type: "security", severity: "critical", title: "Leaked key" } } });
        await callJson(t.url, "Publish", { event: { type: "risk.alert", source: "pm/scanner", data: { alert_id: "r2", risk_type: "security", severity: "low", title: "Minor" } } });
        await eventually(() => (output.includes(`verified risk.alert ${critical.body.id}`) ? true : undefined), 15_000, "the README receiver to verify a delivery").catch(async (err: Error) => {
          // Say why: the deliveries to the receiver with their attempts, and what it printed.
          const { deliveries } = await webhooks.listDeliveries({ webhookId: local!.id });
          const attempts = await Promise.all(deliveries.map((d) => webhooks.getDelivery({ id: d.id })));
          throw new Error(`${err.message}; deliveries: ${JSON.stringify(attempts.map((a) => ({ status: a.delivery?.status, attempts: a.attempts.map((x) => [x.statusCode, x.error, x.responseExcerpt]) })))}; receiver output: ${output}`);
        });
        // The example endpoint got only the critical alert, with its custom header.
        const [got] = await rx.waitFor(1);
        expect(got!.json.data.alert_id).toBe("r1");
        expect(got!.headers.authorization).toBe("Bearer my-token");
      } finally {
        receiver.kill();
        await rm(file, { force: true });
      }

      for (const command of blocks(readme, "Webhooks", "sh").slice(1)) {
        const { stdout } = await run("bash", ["-c", local(command)]);
        const body = JSON.parse(stdout);
        expect(body.code, `${command}\n→ ${stdout}`).toBeUndefined();
        if (command.includes("/ingest/pm")) {
          const event = await callJson(t.url, "GetEvent", { id: body.id });
          expect(event.body.event).toMatchObject({ id: "pm-42", source: "ingest/pm", type: "file.changed" });
        }
      }
    } finally {
      await rx.close();
    }
  });

  it("command-line examples work", async () => {
    const [serve, ...commands] = blocks(readme, "Command line", "sh");
    // serve: as its own process on a free port and a scratch directory, stopped with SIGTERM.
    const port = await freePort();
    const dataDir = join(root, `.tmp-readme-serve-${process.pid}`);
    const server = spawn("bash", ["-c", serve!.trim().replace("--port 7233", `--port ${port}`).replace(".tidings/data", dataDir)], { cwd: root, detached: true });
    let log = "";
    server.stdout!.on("data", (d) => (log += d));
    // "close": every process holding the output pipe (the server too) has exited.
    const exited = new Promise((r) => server.once("close", r));
    try {
      await eventually(async () => (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)) || undefined, 20_000, "tidings serve to answer /healthz");
      process.kill(-server.pid!, "SIGTERM"); // the group: bash, npx and the server, as Ctrl-C would
      await exited;
      expect(log, log).toContain('"msg":"stopped"'); // the server shut down gracefully
    } finally {
      try {
        process.kill(-server.pid!, "SIGKILL");
      } catch {
        // already gone
      }
      await rm(dataDir, { recursive: true, force: true });
    }

    const outputs: string[] = [];
    try {
      for (const command of commands) {
        const { stdout } = await run("bash", ["-c", command.replaceAll("http://localhost:7233", t.url)], { cwd: root, timeout: 30_000 });
        outputs.push(stdout);
      }
      expect(outputs[0]).toMatch(/^published [0-9a-f-]{36} at sequence \d+$/m);
      expect(outputs[1]).toMatch(/published 2, failed 0/);
      expect(outputs[2]).toContain("memory.created");
      expect(outputs[3]).toContain("memory.created");
      const exported = (await readFile(join(root, "tidings-log.jsonl"), "utf8")).trim().split("\n").map((l) => JSON.parse(l));
      expect(exported.find((e) => e.event_id === "daily-1")).toMatchObject({ type: "report.ready", timestamp: 1642248000 });
    } finally {
      await rm(join(root, "events.jsonl"), { force: true });
      await rm(join(root, "tidings-log.jsonl"), { force: true });
    }
  });

  it("runtime event type examples work: push a directory, publish, register with curl", async () => {
    const [proto] = blocks(readme, "Event types at runtime", "proto");
    const [push, curl] = blocks(readme, "Event types at runtime", "sh");
    const work = await mkdtemp(join(tmpdir(), "tidings-readme-types-"));
    try {
      await mkdir(join(work, "protos/shop/v1"), { recursive: true });
      await writeFile(join(work, "protos/shop/v1/shop.proto"), proto!);
      // The commands run in a scratch directory, so `npx tidings` is this checkout's bin.
      const local = (command: string) => command.replaceAll("http://localhost:7233", t.url).replaceAll("npx tidings", `node ${join(root, "bin/tidings.js")}`);
      const pushed = await run("bash", ["-c", local(push!)], { cwd: work, timeout: 60_000 });
      expect(pushed.stdout).toMatch(/^shop\.order_placed\s+added\s+shop\.v1\.OrderPlaced$/m);
      expect(pushed.stdout).toMatch(/^published [0-9a-f-]{36} at sequence \d+$/m);
      // What `buf build -o shop.binpb` writes for that module.
      await writeFile(join(work, "shop.binpb"), await buildDescriptorSet(join(work, "protos")));
      const checked = JSON.parse((await run("bash", ["-c", local(curl!)], { cwd: work })).stdout);
      expect(checked).toMatchObject({ eventTypes: [{ name: "shop.order_placed", registered: true }] });
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });

  it("API key examples work, against a server that requires keys", async () => {
    const adminKey = newApiKey();
    const keyed = await startTestServer({ config: { auth: "keys", adminKey } });
    const env = { ...process.env, TIDINGS_TOKEN: adminKey };
    try {
      const [create, publish, refused, cli] = blocks(readme, "API keys", "sh");
      const local = (command: string) => command.replaceAll("http://localhost:7233", keyed.url);
      const created = JSON.parse((await run("bash", ["-c", local(create!)], { env })).stdout);
      expect(created.key).toMatch(/^tid_/);
      expect(created.apiKey).toMatchObject({ name: "alma publisher", publishRate: 100, grants: [{ scope: "SCOPE_PUBLISH", eventTypes: ["memory.*"] }] });
      expect(JSON.parse((await run("bash", ["-c", local(publish!)], { env })).stdout).sequence).toBeDefined();
      const shown = JSON.parse(refused!.match(/^# (\{.*)$/m)![1]!.replace(/, \.\.\.\}$/, "}"));
      expect(JSON.parse((await run("bash", ["-c", local(refused!)], { env })).stdout)).toMatchObject(shown);
      const { stdout } = await run("bash", ["-c", local(cli!)], { cwd: root, env, timeout: 30_000 });
      expect(stdout).toContain("alma-reader");
      expect(stdout).toContain("alma publisher");
    } finally {
      await keyed.close();
    }
  });

  it("the configuration table lists every setting with its default", () => {
    for (const s of settings) {
      const d: unknown = defaultConfig[s.key];
      const shown = d === undefined ? (s.key === "databaseUrl" ? "unset (PGlite)" : "unset")
        : Array.isArray(d) ? (d.length ? `\`${d.join(",")}\`` : "empty")
        : typeof d === "object" ? "empty"
        : d === "" ? "host-pid"
        : `\`${String(d)}\``;
      expect(readme).toContain(`| \`--${s.flag}\` | \`${s.env}\` | ${shown} | ${s.help} |`);
    }
  });
});

/** Whether something listens on the loopback port: true, or undefined (for eventually). */
function accepts(port: number): Promise<true | undefined> {
  return new Promise((resolve) => {
    const socket = connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(undefined));
  });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as { port: number };
  await new Promise((r) => server.close(r));
  return port;
}
