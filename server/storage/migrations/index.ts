import type { Kysely, Migration } from "kysely";
import { Migrator } from "kysely";
import { eventLogMigration } from "./0001-event-log.js";
import { webhooksMigration } from "./0002-webhooks.js";
import { registeredTypesMigration } from "./0003-registered-types.js";
import { deliveryClaimOrderMigration } from "./0004-delivery-claim-order.js";
import { deliveryRetentionMigration } from "./0005-delivery-retention.js";
import { apiKeysMigration } from "./0006-api-keys.js";
import { attemptsWithoutForeignKeyMigration } from "./0007-attempts-without-foreign-key.js";
import { eventListenersMigration } from "./0008-event-listeners.js";
import { successOnDeliveryRowMigration } from "./0009-success-on-delivery-row.js";
import { endpointsVersionMigration } from "./0010-endpoints-version.js";
import { timeBlocksMigration } from "./0011-time-blocks.js";
import { deliveriesWithoutWebhookForeignKeyMigration } from "./0012-deliveries-without-webhook-foreign-key.js";
import { timeBlocksEarliestMigration } from "./0013-time-blocks-earliest.js";
import { deliveryWindowsMigration } from "./0014-delivery-windows.js";

/** Every migration, by name; names sort in the order they run. Never edit a landed one. */
export const migrations: Record<string, Migration> = {
  "0001-event-log": eventLogMigration,
  "0002-webhooks": webhooksMigration,
  "0003-registered-types": registeredTypesMigration,
  "0004-delivery-claim-order": deliveryClaimOrderMigration,
  "0005-delivery-retention": deliveryRetentionMigration,
  "0006-api-keys": apiKeysMigration,
  "0007-attempts-without-foreign-key": attemptsWithoutForeignKeyMigration,
  "0008-event-listeners": eventListenersMigration,
  "0009-success-on-delivery-row": successOnDeliveryRowMigration,
  "0010-endpoints-version": endpointsVersionMigration,
  "0011-time-blocks": timeBlocksMigration,
  "0012-deliveries-without-webhook-foreign-key": deliveriesWithoutWebhookForeignKeyMigration,
  "0013-time-blocks-earliest": timeBlocksEarliestMigration,
  "0014-delivery-windows": deliveryWindowsMigration,
};

/** Brings the schema up to date. Kysely holds an advisory lock, so nodes starting together are safe. */
export async function migrateToLatest(db: Kysely<unknown>): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: "tidings_migrations",
    migrationLockTableName: "tidings_migrations_lock",
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error) throw error;
  return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}
