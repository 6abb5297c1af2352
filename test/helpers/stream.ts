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
