import http from "node:http";
import type { AddressInfo } from "node:net";
import { readRawBody } from "../../sdk/webhooks/verify.js";
import { eventually } from "./test-server.js";

/** One request a receiver got. */
export interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** Parsed JSON body (undefined if not JSON). */
  json: any;
  /** Date.now() when it arrived. */
  at: number;
}

/** How to answer: a status, headers, a body, after a delay; or never (hang); or by resetting the connection; or with bytes that are not HTTP. */
export interface Answer {
  status?: number;
  headers?: Record<string, string>;
  body?: string;
  delayMs?: number;
  hang?: boolean;
  reset?: boolean;
  garbage?: boolean;
}

export type Responder = (req: Received, index: number) => Answer;

/** A real HTTP receiver on loopback that records every request and answers as told. */
export interface Receiver {
  url: string;
  requests: Received[];
  respond(responder: Responder): void;
  waitFor(count: number, timeoutMs?: number): Promise<Received[]>;
  close(): Promise<void>;
}

export async function startReceiver(responder: Responder = () => ({ status: 200 })): Promise<Receiver> {
  const requests: Received[] = [];
  let answer = responder;
  const hanging = new Set<http.ServerResponse>();
  const server = http.createServer(async (req, res) => {
    const body = (await readRawBody(req)).toString("utf8");
    let json: unknown;
    try {
      json = JSON.parse(body);
    } catch {
      json = undefined;
    }
    const received: Received = { path: req.url ?? "", headers: req.headers, body, json, at: Date.now() };
    requests.push(received);
    const a = answer(received, requests.length - 1);
    if (a.hang) {
      hanging.add(res);
      return;
    }
    if (a.reset) {
      req.socket.resetAndDestroy();
      return;
    }
    if (a.garbage) {
      req.socket.end("HTTP/1.1 2OO 0K\r\nContent-Length: banana\r\n\r\n\u0000\u00ff{not http");
      return;
    }
    if (a.delayMs) await new Promise((r) => setTimeout(r, a.delayMs));
    res.writeHead(a.status ?? 200, a.headers);
    res.end(a.body ?? "ok");
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    requests,
    respond: (r) => (answer = r),
    waitFor: (count, timeoutMs = 15_000) =>
      eventually(() => (requests.length >= count ? requests : undefined), timeoutMs, `${count} webhook requests (got ${requests.length})`),
    async close() {
      for (const res of hanging) res.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}
