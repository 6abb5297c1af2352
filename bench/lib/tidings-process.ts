import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { within } from "./limits.js";

const root = fileURLToPath(new URL("../../", import.meta.url));

export interface TidingsProcess {
  url: string;
  pid: number;
  /** Resident set size of the server process, in MB (from /proc). */
  rssMb(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * A Tidings server in its own process, as it runs in production (`npm start`), so the load
 * generator never shares its event loop. Extra flags override the bench defaults. It runs
 * without API keys (--auth open, loopback), like the peers, which have no authentication.
 */
export async function startTidings(
  databaseUrl: string,
  flags: string[] = [],
  options: { nodeFlags?: string[]; onOutput?: (text: string) => void; /** Another checkout's server (A/B, bench/webhook-cpu.ts). */ root?: string } = {},
): Promise<TidingsProcess> {
  // BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=prof" profiles every server the bench starts.
  const nodeFlags = options.nodeFlags ?? (process.env.BENCH_NODE_FLAGS?.split(" ").filter(Boolean) ?? []);
  const child = spawn(
    process.execPath,
    [...nodeFlags, "--import", "tsx", "server/main.ts", "--port", "0", "--database-url", databaseUrl, "--webhook-allow-list", "loopback", "--log-level", "info", "--auth", "open", ...flags],
    { cwd: options.root ?? root, stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NODE_ENV: "production" } },
  );
  let output = "";
  const url = await within(30_000, "the Tidings server to start", new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const m = /"msg":"tidings listening".*?"url":"([^"]+)"/.exec(output);
      if (m) {
        child.stdout!.off("data", onData);
        resolve(m[1]!);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    child.once("exit", (code) => reject(new Error(`the Tidings server exited with ${code}: ${output.slice(-2000)}`)));
  }));
  // Keep draining the pipes so the server never blocks on a full stdout. BENCH_SERVER_OUT=<file>
  // keeps what every server prints (its logs; with BENCH_NODE_FLAGS=--trace-gc, its GC pauses).
  if (options.onOutput) {
    // Everything it prints from here on, to the caller (bench/gc-probe.ts reads its GC trace).
    child.stdout!.on("data", (d: Buffer) => options.onOutput!(d.toString()));
    child.stderr!.on("data", (d: Buffer) => options.onOutput!(d.toString()));
  } else if (process.env.BENCH_SERVER_OUT) {
    const out = createWriteStream(process.env.BENCH_SERVER_OUT, { flags: "a" });
    child.stdout!.pipe(out);
    child.stderr!.pipe(out);
  } else {
    child.stdout!.resume();
    child.stderr!.resume();
  }
  return {
    url,
    pid: child.pid!,
    rssMb: () => rssMbOf(child.pid!),
    stop: () => stopChild(child),
  };
}

export async function rssMbOf(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN);
  return kb / 1024;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}
