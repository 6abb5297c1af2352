/**
 * Planner settings of the server's own sessions (the pool's, and PGlite's one session).
 *
 * random_page_cost is the planner's cost of reading one page at random, against 1 for a page
 * read in sequence. PostgreSQL's default of 4 is for spinning disks; 1.1 is the usual value for
 * SSDs and for data that stays cached, which the log's indexes and recent rows do. With 4, a
 * by-type read of a type of a few percent of the log is planned as a walk of the primary key
 * that throws away every row of another type (the planner takes the type's rows for evenly
 * spread and heap access through the type index for costly); with 1.1 it reads the type index.
 * On 10M seeded events, warm (the sixth issue's growth scenario): a catch-up page for "gap.*"
 * from the log's middle 2.3 -> 0.4 ms, a ListEvents page of "gap.*" 0.48 -> 0.11 ms, one of a
 * type of 5% of the log 0.35 -> 0.07 ms (EXPLAIN ANALYZE).
 *
 * jit off: the server's statements are short, and PostgreSQL compiles a statement whose
 * estimated cost passes jit_above_cost (100,000) at every execution, which takes longer than
 * most of them run. The time summary's statement (TimeSummary.update, before every start_time
 * read) is estimated at 190,000 at 10M events, for a range it then finds empty: 16 ms of
 * compiling for 0.1 ms of work.
 */
export const plannerSettings = { random_page_cost: "1.1", jit: "off" } as const;

/**
 * The settings as a startup parameter (libpq's `options`): every connection of the pool starts
 * with them, without a statement of its own. A database URL's own `options` parameter replaces
 * them (node-postgres lets the URL win), which is how an operator picks other values.
 */
export const plannerStartupOptions = Object.entries(plannerSettings)
  .map(([name, value]) => `-c ${name}=${value}`)
  .join(" ");

/** The settings as statements, for a session opened without startup options (PGlite's). */
export const plannerSettingStatements = Object.entries(plannerSettings)
  .map(([name, value]) => `SET ${name} = ${value};`)
  .join(" ");
