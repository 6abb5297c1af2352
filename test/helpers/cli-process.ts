import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";

const root = fileURLToPath(new URL("../../", import.meta.url));

/** The environment of every CLI run: no server or colours inherited from the developer's shell. */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.TIDINGS_SERVER;
  delete env.TIDINGS_TOKEN;
  delete env.FORCE_COLOR;
  return { ...env, NO_COLOR: "1", ...extra };
}

export interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A CLI process with its output so far, for commands that keep running (tail, serve). */
export interface Running {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  lines(): string[];
  exited: Promise<Run>;
  waitFor<T>(check: () => T | undefined, what: string, timeoutMs?: number): Promise<T>;
  kill(signal?: NodeJS.Signals): Promise<Run>;
}

/** Starts `node bin/tidings.js …` the way a user runs it; it is killed after `timeoutMs` at the latest. */
export function start(args: string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number; cleanEnv?: NodeJS.ProcessEnv } = {}): Running {
  const child = spawn(process.execPath, ["bin/tidings.js", ...args], {
    cwd: root,
    env: options.cleanEnv ?? cliEnv(options.env),
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d) => (stdout += d));
  child.stderr!.on("data", (d) => (stderr += d));
  child.stdin!.end(options.input ?? "");
  const killer = setTimeout(() => child.kill("SIGKILL"), options.timeoutMs ?? 45_000);
  const exited = new Promise<Run>((resolve) =>
    child.on("close", (code, signal) => {
      clearTimeout(killer);
      resolve({ code, signal, stdout, stderr });
    }),
  );
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    lines: () => stdout.split("\n").filter(Boolean),
    exited,
    async waitFor(check, what, timeoutMs = 20_000) {
      let done = false;
      void exited.then(() => (done = true));
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const value = check();
        if (value !== undefined) return value;
        if (done) throw new Error(`the CLI exited while waiting for ${what}: ${stderr}`);
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stdout: ${stdout.slice(-500)}; stderr: ${stderr.slice(-500)}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    },
    kill(signal = "SIGTERM") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Runs the CLI to completion. */
export function cli(args: string[], options: { env?: Record<string, string>; input?: string; timeoutMs?: number; cleanEnv?: NodeJS.ProcessEnv } = {}): Promise<Run> {
  return start(args, options).exited;
}

/** Asserts that a failure was reported as one line, with no stack trace. */
export function expectOneLineError(run: Run, code: number, pattern: RegExp): void {
  expect(run.code, `stderr: ${run.stderr}`).toBe(code);
  const lines = run.stderr.trim().split("\n");
  expect(lines, run.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^tidings: /);
  expect(lines[0]).toMatch(pattern);
  expect(run.stderr).not.toMatch(/\n\s+at /);
}
