import { performance } from "node:perf_hooks";
import { type Dispatcher, request } from "undici";
import type { OutgoingRequest } from "./delivery-request.js";
import { parseRetryAfter } from "./retry-policy.js";

/** What one HTTP attempt came to. */
export interface AttemptOutcome {
  startedAt: Date;
  durationMs: number;
  /** 0 when no answer came. */
  statusCode: number;
  responseExcerpt: string;
  error: string;
  retryAfterMs: number | undefined;
}

/** Most response bytes read; the rest is discarded (a receiver must not make us buffer). */
const excerptBytes = 1024;

/** POSTs a delivery with a hard timeout, reads at most `excerptBytes` of the answer. */
export async function sendRequest(agent: Dispatcher, url: string, req: OutgoingRequest, timeoutMs: number): Promise<AttemptOutcome> {
  const startedAt = new Date();
  const start = performance.now();
  const done = (o: Omit<AttemptOutcome, "startedAt" | "durationMs">): AttemptOutcome => ({
    startedAt,
    durationMs: Math.round(performance.now() - start),
    ...o,
  });
  try {
    const res = await request(url, {
      method: "POST",
      headers: req.headers,
      body: req.body,
      dispatcher: agent,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    });
    const excerpt = await readCapped(res.body, excerptBytes);
    const retryAfter = res.headers["retry-after"];
    return done({
      statusCode: res.statusCode,
      responseExcerpt: excerpt,
      error: res.statusCode >= 200 && res.statusCode < 300 ? "" : `HTTP ${res.statusCode}`,
      retryAfterMs: parseRetryAfter(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter),
    });
  } catch (err) {
    return done({ statusCode: 0, responseExcerpt: "", error: describeError(err, timeoutMs), retryAfterMs: undefined });
  }
}

async function readCapped(body: AsyncIterable<Buffer> & { destroy(): unknown }, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= limit) break; // leaving the loop destroys the rest of the body
    }
  } catch {
    // A body cut short still leaves what we read.
  }
  return Buffer.concat(chunks).subarray(0, limit).toString("utf8");
}

function describeError(err: unknown, timeoutMs: number): string {
  const e = err as { name?: string; code?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e?.name === "TimeoutError" || e?.code === "UND_ERR_HEADERS_TIMEOUT" || e?.code === "UND_ERR_BODY_TIMEOUT") {
    return `timed out after ${timeoutMs} ms`;
  }
  const code = e?.code ?? e?.cause?.code;
  const message = e?.message ?? String(err);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}
