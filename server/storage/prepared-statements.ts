import { createHash } from "node:crypto";
import type pg from "pg";

/**
 * Marks a statement to be sent as a named prepared statement on PostgreSQL: written first in
 * its SQL (`sql\`${preparedMarker} WITH …\``, a comment to the server). A plain parameterised
 * query is parsed and planned again on every execution; for the statements that run for every
 * publish, routing pass and delivery, PostgreSQL's log showed parse and bind taking as long as
 * executing them. Only statements whose text never varies may carry it: each distinct text
 * becomes one prepared statement per connection, kept until the connection closes. And only
 * statements whose plan cannot go stale: PostgreSQL keeps a prepared statement's generic plan
 * until the table's statistics change, which without autovacuum is never, so a statement that
 * looks rows up in a growing table (recording webhook successes) is better planned each time.
 */
export const preparedMarker = "/* tidings:prepared */";

/**
 * Makes a pool client send marked statements by name (named after a hash of their text, so one
 * name never stands for two texts): pg parses a name once per connection and only binds it
 * after. Kysely calls `client.query(text, values)`; everything unmarked passes through as it is.
 */
export function sendMarkedStatementsPrepared(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  const names = new Map<string, string>();
  const nameOf = (text: string): string => {
    let name = names.get(text);
    if (name === undefined) {
      name = `tidings_${createHash("sha256").update(text).digest("hex").slice(0, 24)}`;
      names.set(text, name);
    }
    return name;
  };
  const patched = (config: unknown, values?: unknown, callback?: unknown): unknown => {
    if (typeof config === "string" && config.startsWith(preparedMarker)) {
      return query({ name: nameOf(config), text: config, values }, callback);
    }
    return query(config, values, callback);
  };
  client.query = patched as typeof client.query;
}
