import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { BadRequestSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { FieldViolation } from "../catalog/payload-validation.js";
import { isPollable, type PollableIterator } from "../concurrency/pollable-iterator.js";
import { AppendQueueClosedError } from "../event-log/append-queue.js";
import type { Logger } from "../logging/logger.js";

/**
 * An error naming the fields at fault: the message lists them (for curl users) and a
 * google.rpc.BadRequest detail carries them (for typed clients in any language).
 */
export function fieldError(code: Code, violations: readonly FieldViolation[]): ConnectError {
  const shown = violations.slice(0, 10).map((v) => `${v.field}: ${v.description}`);
  if (violations.length > shown.length) shown.push(`and ${violations.length - shown.length} more`);
  return new ConnectError(shown.join("; "), code, undefined, [
    { desc: BadRequestSchema, value: create(BadRequestSchema, { fieldViolations: violations.map((v) => ({ field: v.field, description: v.description })) }) },
  ]);
}

export function invalidArgument(field: string, description: string): ConnectError {
  return fieldError(Code.InvalidArgument, [{ field, description }]);
}

/** SQLSTATE classes and socket errors that mean "the database is unreachable right now". */
function isTransientDatabaseError(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === "string" ? e.code : "";
  if (/^(08|53|57P)/.test(code) || code === "40001" || code === "40P01") return true;
  if (["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "ENOTFOUND"].includes(code)) return true;
  const message = typeof e?.message === "string" ? e.message : "";
  // "not currently accepting connections": the database refuses new sessions (ALLOW_CONNECTIONS false, SQLSTATE 55000).
  // "not queryable": pg's answer on a client whose connection already died, e.g. to the ROLLBACK
  // of a transaction that lost its connection mid-way.
  return /Connection terminated|connection.*(closed|ended)|timeout exceeded when trying to connect|not currently accepting connections|connection error and is not queryable/i.test(message);
}

/** A Connect code as it is written on the wire: "invalid_argument", "resource_exhausted", … */
export function codeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i) => (i === 0 ? c.toLowerCase() : `_${c.toLowerCase()}`));
}

/** The Connect code an error will be answered with (see toConnectError), without logging it. */
export function connectCodeOf(err: unknown): Code {
  if (err instanceof ConnectError) return err.code;
  if (err instanceof AppendQueueClosedError || isTransientDatabaseError(err)) return Code.Unavailable;
  return Code.Internal;
}

/**
 * Errors are mapped at the edge: ours pass through, an unreachable database or a shutdown
 * becomes `unavailable` (retryable), and anything else is a bug: `internal`, with the cause
 * logged and not shown to the client.
 */
export function toConnectError(err: unknown, logger: Logger, procedure: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof AppendQueueClosedError) return new ConnectError(err.message, Code.Unavailable);
  if (isTransientDatabaseError(err)) {
    logger.warn("database unavailable", { procedure, err });
    return new ConnectError("the database is unavailable; retry", Code.Unavailable);
  }
  logger.error("internal error", { procedure, err });
  return new ConnectError("internal error", Code.Internal);
}

/** Maps errors of unary calls and of streams (thrown while iterating) through toConnectError. */
export function errorMappingInterceptor(logger: Logger): Interceptor {
  return (next) => async (req) => {
    const procedure = req.method.name;
    let res;
    try {
      res = await next(req);
    } catch (err) {
      throw toConnectError(err, logger, procedure);
    }
    if (!res.stream) return res;
    return { ...res, message: mapIterationErrors(res.message, (err) => toConnectError(err, logger, procedure)) };
  };
}

/**
 * The same messages, with an error thrown while iterating mapped. A plain iterator rather than
 * an async generator: a stream's every message passes through it, and a generator's yield*
 * costs promises and a resumption per message.
 */
function mapIterationErrors<T>(messages: AsyncIterable<T>, map: (err: unknown) => unknown): AsyncIterable<T> {
  return {
    [Symbol.asyncIterator]() {
      const it = messages[Symbol.asyncIterator]();
      const rethrow = (err: unknown): never => {
        throw map(err);
      };
      const mapped: AsyncIterator<T> = {
        next: () => it.next().catch(rethrow),
        return: (value?: unknown) => (it.return ? it.return(value).catch(rethrow) : Promise.resolve({ done: true as const, value: value as T })),
        throw: (err?: unknown) => (it.throw ? it.throw(err).catch(rethrow) : Promise.reject(err)),
      };
      if (!isPollable(it)) return mapped;
      // A consumer that polls (see PollableIterator) keeps doing so through here.
      const pollable: PollableIterator<T> = {
        ...mapped,
        poll: () => {
          try {
            return it.poll();
          } catch (err) {
            return rethrow(err);
          }
        },
        // Passed on as it is: fill() does not reject, the poll() after it throws (see PollableIterator).
        fill: () => it.fill(),
      };
      return pollable;
    },
  };
}
