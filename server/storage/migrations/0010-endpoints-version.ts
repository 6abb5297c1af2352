import { type Kysely, type Migration, sql } from "kysely";

/**
 * A version of the enabled endpoints, on the router's own row, bumped in the transaction of every
 * change to what routing or sending reads of them (by triggers, so no code path can forget it).
 *
 * Routing used to compare a fingerprint of the endpoints (an md5 over their rows) in its
 * statement. That is read in the statement's snapshot, which is enough for a routing pass but
 * not for routing in the append's own statement: an append may wait for the log head row after
 * its snapshot was taken, and an endpoint committed meanwhile would be missing from that
 * snapshot although the events commit after it. A version on the router's row is read from the
 * row's latest version when the row is locked (READ COMMITTED re-checks a locked row), and a
 * change under way holds that row, so a routing statement either sees the change or commits
 * before it.
 *
 * Lock order: a change to an endpoint's row takes the router's row after its own (a row trigger);
 * routing takes the router's row first and then, for its foreign keys, a KEY SHARE lock on the
 * endpoints' rows, which an UPDATE that changes no key does not conflict with. A DELETE does
 * conflict, so it bumps the version before it deletes (a statement trigger): router row first,
 * as routing does.
 */
export const endpointsVersionMigration: Migration = {
  async up(db: Kysely<unknown>) {
    await sql`ALTER TABLE tidings_webhook_router ADD COLUMN endpoints_version bigint NOT NULL DEFAULT 0`.execute(db);
    await sql`CREATE FUNCTION tidings_endpoints_changed() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        UPDATE tidings_webhook_router SET endpoints_version = endpoints_version + 1 WHERE id = 1;
        RETURN NULL;
      END $$`.execute(db);
    await sql`CREATE TRIGGER tidings_endpoint_created AFTER INSERT ON tidings_webhooks
      FOR EACH ROW WHEN (NEW.enabled) EXECUTE FUNCTION tidings_endpoints_changed()`.execute(db);
    // Every column routing or sending reads (DeliveryRouter's EndpointRow), and the health flag;
    // not the failure counts themselves, last_success_at or the rate limiter's bucket, which
    // change with every request.
    await sql`CREATE TRIGGER tidings_endpoint_updated AFTER UPDATE ON tidings_webhooks
      FOR EACH ROW WHEN ((OLD.enabled OR NEW.enabled) AND row(
        OLD.enabled, OLD.updated_at, OLD.patterns, OLD.attributes, OLD."filter", OLD.from_sequence, OLD.url, OLD.headers,
        OLD.secrets, OLD.retry_policy, OLD.timeout_ms, OLD.batch_max_events, OLD.batch_max_wait_ms, OLD.rate_limit, OLD.ordered,
        OLD.content_mode, OLD.max_consecutive_failures, OLD.max_failing_ms,
        OLD.consecutive_failures > 0 OR OLD.failing_since IS NOT NULL
      ) IS DISTINCT FROM row(
        NEW.enabled, NEW.updated_at, NEW.patterns, NEW.attributes, NEW."filter", NEW.from_sequence, NEW.url, NEW.headers,
        NEW.secrets, NEW.retry_policy, NEW.timeout_ms, NEW.batch_max_events, NEW.batch_max_wait_ms, NEW.rate_limit, NEW.ordered,
        NEW.content_mode, NEW.max_consecutive_failures, NEW.max_failing_ms,
        NEW.consecutive_failures > 0 OR NEW.failing_since IS NOT NULL
      )) EXECUTE FUNCTION tidings_endpoints_changed()`.execute(db);
    await sql`CREATE TRIGGER tidings_endpoints_deleting BEFORE DELETE ON tidings_webhooks
      FOR EACH STATEMENT EXECUTE FUNCTION tidings_endpoints_changed()`.execute(db);
  },
  async down(db: Kysely<unknown>) {
    await sql`DROP TRIGGER tidings_endpoints_deleting ON tidings_webhooks`.execute(db);
    await sql`DROP TRIGGER tidings_endpoint_updated ON tidings_webhooks`.execute(db);
    await sql`DROP TRIGGER tidings_endpoint_created ON tidings_webhooks`.execute(db);
    await sql`DROP FUNCTION tidings_endpoints_changed()`.execute(db);
    await sql`ALTER TABLE tidings_webhook_router DROP COLUMN endpoints_version`.execute(db);
  },
};
