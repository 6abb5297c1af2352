import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { newApiKey } from "../server/auth/api-key.js";
import { startTestServer, type TestServer } from "./helpers/test-server.js";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../", import.meta.url));
/** Debian's interpreter: python3-grpcio and python3-grpc-tools install for it. */
const python = "/usr/bin/python3";

async function hasGrpcTools(): Promise<boolean> {
  try {
    await run(python, ["-c", "import grpc, grpc_tools"]);
    return true;
  } catch {
    if (process.env.CI) throw new Error("CI must install python3-grpc-tools and python3-grpcio (.ci/run does)");
    console.log("skipped: the Python client test needs Debian's python3-grpc-tools and python3-grpcio (apt-get install python3-grpc-tools python3-grpcio)");
    return false;
  }
}

describe.runIf(await hasGrpcTools())("a Python client generated from proto/", () => {
  const adminKey = newApiKey();
  let t: TestServer;
  let out: string;
  beforeAll(async () => {
    t = await startTestServer({ config: { auth: "keys", adminKey } });
    out = await mkdtemp(join(tmpdir(), "tidings-python-"));
    // Generate the client the way a Python user would, from the .proto files alone.
    await run(python, ["-m", "grpc_tools.protoc", `-I${join(root, "proto")}`, `--python_out=${out}`, `--grpc_python_out=${out}`,
      join(root, "proto/tidings/v1/event.proto"), join(root, "proto/tidings/v1/event_service.proto"), join(root, "proto/tidings/v1/access.proto")]);
    await mkdir(join(out, "tidings/v1"), { recursive: true });
    await writeFile(join(out, "tidings/__init__.py"), "");
    await writeFile(join(out, "tidings/v1/__init__.py"), "");
  });
  afterAll(async () => {
    await t.close();
    await rm(out, { recursive: true, force: true });
  });

  it("authenticates with an API key, publishes, streams and gets precise errors over gRPC", async () => {
    const { stdout } = await run(python, [join(root, "test/python/tidings_client.py"), new URL(t.url).host, adminKey], {
      env: { ...process.env, PYTHONPATH: out },
      timeout: 60_000,
    });
    const result = JSON.parse(stdout);
    expect(result.without_key).toBe("UNAUTHENTICATED");
    expect(result.memory_types).toContain("memory.created");
    expect(result.first_message).toBe("heartbeat");
    expect(result.received).toMatchObject({
      id: result.published.id,
      type: "memory.created",
      sequence: result.published.sequence,
      cursor: result.published.sequence,
      attributes: { agent: "python" },
      data: { memory_id: "py-1", tier: "hot" },
    });
    expect(result.error.code).toBe("INVALID_ARGUMENT");
    expect(result.error.details).toContain("event.type");
  });
});
