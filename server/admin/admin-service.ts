import type { ServiceImpl } from "@connectrpc/connect";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Kysely, sql } from "kysely";
import type { AdminService } from "../../gen/tidings/v1/admin_service_pb.js";
import type { StreamStats } from "../rpc/event-service.js";
import { type Database, deliveryStatus } from "../storage/schema.js";
import type { LogTail } from "../streaming/log-tail.js";
import { countDeliveries } from "../webhooks/delivery-counts.js";
import { type ApiKeyDeps, apiKeyMethods } from "./api-keys.js";

/** This node's counters since it started, kept by the code that does the work. */
export interface NodeCounters {
  eventsPublished: number;
  publishErrors: number;
  deliveriesSucceeded: number;
  deliveryFailures: number;
  deliveriesDeadLettered: number;
}

export const emptyCounters = (): NodeCounters => ({ eventsPublished: 0, publishErrors: 0, deliveriesSucceeded: 0, deliveryFailures: 0, deliveriesDeadLettered: 0 });

export interface AdminServiceDeps {
  db: Kysely<Database>;
  nodeId: string;
  startedAt: Date;
  counters: Readonly<NodeCounters>;
  streams: StreamStats;
  tail: Pick<LogTail, "position">;
  keys: ApiKeyDeps;
}

/** tidings.v1.AdminService: what a node and the shared database are doing, and the API keys. */
export function createAdminService(deps: AdminServiceDeps): ServiceImpl<typeof AdminService> {
  return {
    ...apiKeyMethods(deps.keys),
    async getStats() {
      const [deliveries, head] = await Promise.all([
        countDeliveries(deps.db, [deliveryStatus.pending, deliveryStatus.dead]),
        sql<{ last_sequence: string }>`SELECT last_sequence FROM tidings_log_head WHERE id = 1`.execute(deps.db),
      ]);
      const count = (status: number) => BigInt(deliveries.get(status) ?? 0);
      const headSequence = BigInt(head.rows[0]?.last_sequence ?? 0);
      const c = deps.counters;
      return {
        nodeId: deps.nodeId,
        startTime: timestampFromDate(deps.startedAt),
        eventsPublished: BigInt(c.eventsPublished),
        publishErrors: BigInt(c.publishErrors),
        deliveriesSucceeded: BigInt(c.deliveriesSucceeded),
        deliveryFailures: BigInt(c.deliveryFailures),
        deliveriesDeadLettered: BigInt(c.deliveriesDeadLettered),
        queueSize: count(deliveryStatus.pending),
        deadLetters: count(deliveryStatus.dead),
        headSequence,
        activeSubscriptions: deps.streams.active,
        subscriptions: [...deps.streams.open.values()].map((s) => {
          const cursor = s.cursor();
          // Lag against this node's view of the log (its tail), which is where the stream reads from.
          const tip = deps.tail.position > headSequence ? deps.tail.position : headSequence;
          return {
            id: s.id,
            patterns: [...s.patterns],
            attributes: { ...s.attributes },
            filter: s.filter,
            openTime: timestampFromDate(s.openedAt),
            cursor,
            lag: tip > cursor ? tip - cursor : 0n,
            eventsSent: BigInt(s.sent),
            fallbacks: BigInt(s.fallbacks),
          };
        }),
      };
    },
  };
}
