import { execFile } from "node:child_process";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { defaultConfig, settings } from "../server/config/config.js";
import { startTestServer, type TestServer } from "./helpers/test-server.js";

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
    t = await startTestServer();
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
      expect(stdout).toMatch(/^memory\.created \d+ resume after \d+$/m);
    } finally {
      await rm(file, { force: true });
    }
  });

  it("the configuration table lists every setting with its default", () => {
    for (const s of settings) {
      const d = defaultConfig[s.key];
      const row = `| \`--${s.flag}\` | \`${s.env}\` | ${d === undefined ? "unset (PGlite)" : `\`${d}\``} | ${s.help} |`;
      expect(readme).toContain(row);
    }
  });
});
