import type { Client } from "@connectrpc/connect";
import type { Command } from "commander";
import { type AdminService, createAdminClient, createClient, type TidingsClient } from "../sdk/index.js";

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

/** Where the current command talks to, and whether it sent an API key, for error messages. */
export const current: { server: string; tokenGiven: boolean | undefined } = { server: "http://127.0.0.1:7233", tokenGiven: undefined };

export function clientFor(command: Command): TidingsClient {
  const g = use(command);
  return createClient({ baseUrl: g.server, token: g.token, timeoutMs: unaryTimeoutMs, source: "tidings-cli" });
}

/** The generated AdminService client, with the API key of --token / TIDINGS_TOKEN; pass {@link unaryCall} to each call. */
export function adminClientFor(command: Command): Client<typeof AdminService> {
  const g = use(command);
  return createAdminClient({ baseUrl: g.server, token: g.token });
}

/** Call options of the raw clients' unary calls: the CLI's deadline. */
export const unaryCall = { timeoutMs: unaryTimeoutMs } as const;

function use(command: Command): GlobalOptions {
  const g = globalsOf(command);
  current.server = g.server;
  current.tokenGiven = g.token !== undefined;
  return g;
}
