import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";

/** An expected failure: one line on stderr, no stack trace. Exit code 1 (runtime) or 2 (usage). */
export class CliError extends Error {
  constructor(message: string, readonly exitCode: 1 | 2 = 1) {
    super(message);
  }
}

/** A mistake in how the command was called: exit code 2. */
export class UsageError extends CliError {
  constructor(message: string) {
    super(message, 2);
  }
}

const socketReasons: Record<string, string> = {
  ECONNREFUSED: "connection refused",
  ECONNRESET: "connection reset",
  ENOTFOUND: "host not found",
  EAI_AGAIN: "host name lookup failed",
  ETIMEDOUT: "connection timed out",
  EHOSTUNREACH: "host unreachable",
  ENETUNREACH: "network unreachable",
  EPIPE: "connection closed",
  ECONNABORTED: "connection aborted",
  UND_ERR_SOCKET: "connection closed",
  ERR_HTTP2_GOAWAY_SESSION: "connection closed",
  ERR_HTTP2_STREAM_CANCEL: "connection closed",
};

/** The socket-level reason behind an error (its cause chain or its message), if there is one. */
function socketReason(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && socketReasons[code]) return socketReasons[code];
    const message = (e as { message?: unknown }).message;
    if (typeof message === "string") {
      const m = /\b(ECONNREFUSED|ECONNRESET|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|ECONNABORTED)\b/.exec(message);
      if (m) return socketReasons[m[1]!];
    }
  }
  return undefined;
}

/** True when the error means the server could not be reached at all (worth retrying later). */
export function isUnreachable(err: unknown): boolean {
  return socketReason(err) !== undefined;
}

/**
 * The one line (without the "tidings: " prefix) that describes a failure, and the exit code.
 * `tokenGiven` (whether the call carried an API key) sharpens the hint of an authentication refusal.
 */
export function describeError(err: unknown, server: string, tokenGiven?: boolean): { message: string; exitCode: number } {
  if (err instanceof CliError) return { message: err.message, exitCode: err.exitCode };
  const reason = socketReason(err);
  if (reason) return { message: `cannot reach the server at ${server} (${reason})`, exitCode: 1 };
  if (err instanceof ConnectError) return { message: describeConnectError(err, server, tokenGiven), exitCode: 1 };
  const e = err as { code?: unknown; message?: unknown; path?: unknown };
  if (typeof e?.code === "string" && typeof e.message === "string" && /^E[A-Z]+$/.test(e.code)) {
    return { message: oneLine(e.message), exitCode: 1 }; // a file system error: "ENOENT: no such file or directory, open 'x'"
  }
  return { message: `unexpected error: ${oneLine(String((err as Error)?.message ?? err))} (set TIDINGS_DEBUG=1 for the stack trace)`, exitCode: 1 };
}

/** `code_name: raw message`, the way the server said it; a few codes get a hint. */
export function describeConnectError(err: ConnectError, server: string, tokenGiven?: boolean): string {
  const raw = oneLine(err.rawMessage);
  switch (err.code) {
    case Code.Unavailable:
      // Raised by the transport when no HTTP answer came; the server's own `unavailable` has its message.
      if (!raw || /^(fetch failed|socket hang up|other side closed)/i.test(raw)) return `cannot reach the server at ${server} (${raw || "unavailable"})`;
      return `unavailable: ${raw}`;
    case Code.DeadlineExceeded:
      return `the server at ${server} did not answer in time (deadline_exceeded)`;
    case Code.Unimplemented:
      if (/^HTTP \d+/.test(raw)) return `unimplemented: ${raw} (is ${server} a Tidings server?)`;
      break;
    case Code.Canceled:
      return "canceled";
    // The server says what is wrong with the key; the hint says where the CLI took it from.
    case Code.Unauthenticated:
      return `unauthenticated: ${raw} (${tokenGiven === false ? "pass a key with --token <key> or set TIDINGS_TOKEN" : "check the key given with --token or TIDINGS_TOKEN"})`;
    case Code.PermissionDenied:
      return `permission_denied: ${raw} (${tokenGiven === false ? "pass a key with --token <key> or set TIDINGS_TOKEN" : "use a key that allows it, with --token or TIDINGS_TOKEN"})`;
  }
  return `${codeToString(err.code)}: ${raw}`;
}

export function oneLine(text: string): string {
  return text.replace(/\s*\n\s*/g, " ").trim();
}
