import { execFile } from "node:child_process";
import { cp, mkdtemp, readFile, readdir, rm, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { loadCatalog } from "../server/catalog/catalog.js";
import { jsonSchemaFor } from "../server/catalog/json-schema.js";

const root = fileURLToPath(new URL("../", import.meta.url));
const run = promisify(execFile);

describe("the event catalog comes from the descriptors", () => {
  const scratch: string[] = [];
  afterAll(async () => {
    for (const dir of scratch) await rm(dir, { recursive: true, force: true });
  });

  it("holds exactly the event types the .proto files declare", async () => {
    const declared: string[] = [];
    for (const entry of await readdir(join(root, "proto/tidings/events"), { recursive: true, withFileTypes: true })) {
      if (!entry.name.endsWith(".proto")) continue;
      const text = await readFile(join(entry.parentPath, entry.name), "utf8");
      for (const m of text.matchAll(/\(tidings\.v1\.event_type\)\s*=\s*\{\s*name:\s*"([^"]+)"/g)) declared.push(m[1]!);
    }
    const catalog = await loadCatalog();
    expect(catalog.list().map((e) => e.name)).toEqual([...declared].sort());
    expect(declared.length).toBeGreaterThanOrEqual(30);
  });

  it("adds a type from a new .proto after `buf generate`, with no other code", async () => {
    // A scratch copy of the workspace inside the repo, so generated code resolves node_modules.
    const dir = await mkdtemp(join(root, ".tmp-catalog-"));
    scratch.push(dir);
    await cp(join(root, "proto"), join(dir, "proto"), { recursive: true });
    await mkdir(join(dir, "proto/tidings/events/deploy/v1"), { recursive: true });
    await writeFile(join(dir, "proto/tidings/events/deploy/v1/deploy.proto"), `syntax = "proto3";

package tidings.events.deploy.v1;

import "tidings/v1/options.proto";

// DeploymentFinished is published when a deployment ends.
message DeploymentFinished {
  option (tidings.v1.event_type) = {name: "deployment.finished", description: "A deployment ended."};
  // The service deployed.
  string service = 1 [(tidings.v1.field) = {required: true}];
  // How it ended.
  string status = 2 [(tidings.v1.field) = {allowed_values: ["success", "failure"]}];
}
`);
    await writeFile(join(dir, "buf.yaml"), "version: v2\nmodules:\n  - path: proto\n");
    await writeFile(join(dir, "buf.gen.yaml"), `version: v2
inputs:
  - directory: proto
plugins:
  - local: ${join(root, "node_modules/.bin/protoc-gen-es")}
    out: gen
    include_imports: true
    opt: [target=ts, import_extension=js]
`);
    await run(join(root, "node_modules/.bin/buf"), ["generate"], { cwd: dir });
    const catalog = await loadCatalog(join(dir, "gen/tidings/events"));
    const entry = catalog.get("deployment.finished");
    expect(entry?.message.typeName).toBe("tidings.events.deploy.v1.DeploymentFinished");
    expect(entry?.requiredFields).toEqual(["service"]);
    expect(jsonSchemaFor(entry!.message, entry!.description)).toMatchObject({
      required: ["service"],
      properties: { service: { type: "string" }, status: { type: "string", enum: ["success", "failure"] } },
      additionalProperties: false,
    });
    expect(catalog.get("memory.created")).toBeDefined();
  });
});
