import http from "node:http";
import { once } from "node:events";
import type { Client } from "@connectrpc/connect";
import type { EventService, SubscribeRequest, SubscribeResponse } from "../../sdk/index.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { SubscribeRequestSchema } from "../../gen/tidings/v1/event_service_pb.js";
import { eventually } from "./test-server.js";

/** A subscription read in the background into arrays, for tests. */
export interface Collector {
  events: Array<NonNullable<Extract<SubscribeResponse["message"], { case: "event" }>["value"]>>;
  heartbeats: bigint[];
  cursor: bigint;
  error: unknown;
  ended: boolean;
  /** Resolves when at least `n` events arrived. */
  waitFor(n: number, timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

export async function collect(client: Client<typeof EventService>, req: MessageInitShape<typeof SubscribeRequestSchema>): Promise<Collector> {
  const abort = new AbortController();
  const c: Collector = {
    events: [],
    heartbeats: [],
    cursor: 0n,
    error: undefined,
    ended: false,
    waitFor: (n, timeoutMs = 15_000) =>
      eventually(() => {
        if (c.events.length >= n) return true;
        if (c.error) throw c.error;
        return undefined;
      }, timeoutMs, `${n} events (have ${c.events.length})`).then(() => undefined),
    async close() {
      abort.abort();
      await done;
    },
  };
  let ready!: () => void;
  const subscribed = new Promise<void>((r) => (ready = r));
  const done = (async () => {
    try {
      for await (const res of client.subscribe(req as SubscribeRequest, { signal: abort.signal })) {
        c.cursor = res.cursor;
        if (res.message.case === "event") c.events.push(res.message.value);
        else if (res.message.case === "heartbeat") {
          c.heartbeats.push(res.cursor);
          ready();
        }
      }
    } catch (err) {
      if (!abort.signal.aborted) c.error = err;
    } finally {
      c.ended = true;
      ready();
    }
  })();
  await subscribed; // the server's first heartbeat: the subscription is in place
  if (c.error) throw c.error;
  return c;
}

/**
 * A Subscribe stream over plain HTTP/1.1 with the Connect streaming protocol (what a curl user
 * does), read lazily: while nobody calls next(), Node stops reading the socket once its buffer
 * is full, so the server feels real backpressure.
 */
export async function openConnectJsonStream(baseUrl: string, request: object) {
  const body = Buffer.from(JSON.stringify(request));
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), body]);
  frame.writeUInt32BE(body.length, 1);
  const req = http.request(`${baseUrl}/tidings.v1.EventService/Subscribe`, { method: "POST", headers: { "content-type": "application/connect+json" } });
  req.end(frame);
  const [res] = (await once(req, "response")) as [http.IncomingMessage];
  const chunks = res[Symbol.asyncIterator]();
  let buffered = Buffer.alloc(0);
  return {
    status: res.statusCode,
    /** The next message (an event or a heartbeat, as Connect JSON). */
    async next(): Promise<any> {
      for (;;) {
        if (buffered.length >= 5 && buffered.length >= 5 + buffered.readUInt32BE(1)) {
          const length = buffered.readUInt32BE(1);
          const message = JSON.parse(buffered.subarray(5, 5 + length).toString());
          buffered = buffered.subarray(5 + length);
          return message;
        }
        const { value, done } = await chunks.next();
        if (done) throw new Error("the stream ended");
        buffered = Buffer.concat([buffered, value as Buffer]);
      }
    },
    close() {
      req.destroy();
    },
  };
}
