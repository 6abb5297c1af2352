/**
 * The planner's cost of reading one page at random, for the server's own sessions, against 1
 * for a page read in sequence. PostgreSQL's default of 4 is for spinning disks; 1.1 is the
 * usual value for SSDs and for data that stays cached, which the log's indexes and recent rows
 * do. With 4, a by-type read of a type of a few percent of the log is planned as a walk of the
 * primary key that throws away every row of another type (the planner takes the type's rows for
 * evenly spread and heap access through the type index for costly); with 1.1 it reads the type
 * index. On 10M seeded events, warm (the sixth issue's growth scenario): a catch-up page for
 * "gap.*" from the log's middle 3.4 -> 2.0 ms, ListEvents "gap.*" newest first 6.5 -> 0.43 ms,
 * one type of 5% of the log 2.5 -> 1.0 ms.
 */
export const randomPageCost = 1.1;

/**
 * The same as a startup parameter (libpq's `options`): every connection of the pool starts with
 * it, without a statement of its own. A database URL's own `options` parameter replaces it
 * (node-postgres lets the URL win), which is how an operator picks another value.
 */
export const plannerStartupOptions = `-c random_page_cost=${randomPageCost}`;
