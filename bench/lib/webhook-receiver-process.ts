import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { within } from "./limits.js";

/** Messages to the receiver child (webhook-receiver-child.ts). */
export type ReceiverRequest =
  | { op: "reset"; id: number; token: string }
  | { op: "wait"; id: number; count: number }
  | { op: "status"; id: number }
  | { op: "latencies"; id: number }
  | { op: "stop"; id: number };

/** Messages from it. Times are process.hrtime.bigint() values, as decimal strings. */
export type ReceiverReply =
  | { op: "ready"; id: 0; urls: string[] }
  | { op: "ok"; id: number }
  | { op: "reached" | "status"; id: number; unique: number; total: number; duplicates: number; strays: number; firstNs: string; lastNs: string }
  | { op: "latencies"; id: number; ms: number[] };

export interface ReceiverStatus {
  /** Distinct deliveries (endpoint × memory_id) of the current token. */
  unique: number;
  /** Requests of the current token, duplicates included. */
  total: number;
  duplicates: number;
  /** Requests without the current token (left over from an earlier case). */
  strays: number;
  /** hrtime (ns, CLOCK_MONOTONIC) of the first and of the last distinct delivery; 0n for none. */
  firstNs: bigint;
  lastNs: bigint;
}

/** A webhook receiver in its own process: one loopback port per endpoint, 200 at once. */
export interface WebhookReceiverProcess {
  pid: number;
  /** One URL per port, `http://127.0.0.1:<port>/hook`. */
  urls: string[];
  /** Starts a measurement: memory ids must start with `token` to count. */
  reset(token: string): Promise<void>;
  /** Resolves once `count` distinct deliveries arrived; rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs: number): Promise<ReceiverStatus>;
  status(): Promise<ReceiverStatus>;
  /** Arrival − sent_ns of every distinct delivery so far, in ms. */
  latencies(): Promise<number[]>;
  stop(): Promise<void>;
}

const childScript = fileURLToPath(new URL("./webhook-receiver-child.ts", import.meta.url));

export async function startWebhookReceiver(ports: number): Promise<WebhookReceiverProcess> {
  const child: ChildProcess = fork(childScript, [], {
    execArgv: ["--import", "tsx"],
    env: { ...process.env, BENCH_RECEIVER_PORTS: String(ports) },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  let nextId = 1;
  const pending = new Map<number, (reply: ReceiverReply) => void>();
  let exited = false;
  const ready = new Promise<string[]>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the webhook receiver exited with ${code} before it was ready`)));
    child.on("message", (reply: ReceiverReply) => {
      if (reply.op === "ready") resolve(reply.urls);
      else pending.get(reply.id)?.(reply);
    });
  });
  child.once("exit", () => {
    exited = true;
    for (const resolve of pending.values()) resolve({ op: "ok", id: -1 });
  });
  let urls: string[];
  try {
    urls = await within(20_000, "the webhook receiver to start", ready);
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }

  function ask(request: ReceiverRequest): Promise<ReceiverReply> {
    if (exited) return Promise.reject(new Error("the webhook receiver has exited"));
    return new Promise((resolve) => {
      pending.set(request.id, (reply) => {
        pending.delete(request.id);
        resolve(reply);
      });
      child.send(request);
    });
  }
  const toStatus = (r: ReceiverReply): ReceiverStatus => {
    if (r.op !== "reached" && r.op !== "status") throw new Error(`the webhook receiver answered ${r.op}`);
    return { unique: r.unique, total: r.total, duplicates: r.duplicates, strays: r.strays, firstNs: BigInt(r.firstNs), lastNs: BigInt(r.lastNs) };
  };

  return {
    pid: child.pid!,
    urls,
    async reset(token) {
      await within(10_000, "the webhook receiver to reset", ask({ op: "reset", id: nextId++, token }));
    },
    async waitFor(count, timeoutMs) {
      const id = nextId++;
      try {
        return toStatus(await within(timeoutMs, `${count} webhook deliveries`, ask({ op: "wait", id, count })));
      } finally {
        pending.delete(id);
      }
    },
    async status() {
      return toStatus(await within(10_000, "the webhook receiver's status", ask({ op: "status", id: nextId++ })));
    },
    async latencies() {
      const r = await within(10_000, "the webhook receiver's latencies", ask({ op: "latencies", id: nextId++ }));
      if (r.op !== "latencies") throw new Error(`the webhook receiver answered ${r.op}`);
      return r.ms;
    },
    async stop() {
      if (exited) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.send({ op: "stop", id: nextId++ } satisfies ReceiverRequest);
      const timer = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await gone;
      clearTimeout(timer);
    },
  };
}
