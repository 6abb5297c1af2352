import type { Command } from "commander";
import { createClient, type TidingsClient } from "../sdk/index.js";

/** Deadline of each unary call: long enough for a 500-event batch on a busy server. */
const unaryTimeoutMs = 60_000;

export interface GlobalOptions {
  server: string;
  token?: string;
}

/** The options every command shares (--server, --token), wherever they were given. */
export function globalsOf(command: Command): GlobalOptions {
  const o = command.optsWithGlobals<{ server: string; token?: string }>();
  return { server: o.server, token: o.token || undefined };
}

/** Where the current command talks to, for error messages. */
export const current = { server: "http://127.0.0.1:7233" };

export function clientFor(command: Command): TidingsClient {
  const g = globalsOf(command);
  current.server = g.server;
  return createClient({ baseUrl: g.server, token: g.token, timeoutMs: unaryTimeoutMs, source: "tidings-cli" });
}
