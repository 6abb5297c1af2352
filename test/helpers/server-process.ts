import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../../", import.meta.url));

export interface ServerProcess {
  url: string;
  process: ChildProcess;
  /** Every JSON log line the process wrote to stdout. */
  logs: Array<Record<string, unknown>>;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Runs `server/main.ts` as its own OS process, the way `npm start` does, and waits until it listens. */
export async function spawnServer(args: string[], env: Record<string, string>): Promise<ServerProcess> {
  // Open unless the test says otherwise: these suites test processes, not keys (see test/auth.test.ts).
  const auth = args.includes("--auth") ? [] : ["--auth", "open"];
  const child = spawn(process.execPath, ["--import", "tsx", "server/main.ts", "--port", "0", ...auth, ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: Array<Record<string, unknown>> = [];
  let stderr = "";
  child.stderr!.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    let buffered = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        const record = JSON.parse(line) as Record<string, unknown>; // every line must be JSON
        logs.push(record);
        if (record.msg === "tidings listening") resolve(record.url as string);
      }
    });
    exited.then((code) => reject(new Error(`server exited with ${code} before listening: ${stderr}`)));
    setTimeout(() => reject(new Error(`server did not start in 20 s: ${stderr}`)), 20_000).unref();
  });
  return {
    url,
    process: child,
    logs,
    exited,
    kill(signal = "SIGTERM") {
      if (child.exitCode === null) child.kill(signal);
      return exited;
    },
  };
}
