import type { Command } from "commander";
import { ConfigError, loadConfig, type ServerConfig, settings } from "../../server/config/config.js";
import { CliError, oneLine, UsageError } from "../errors.js";

const camel = (flag: string) => flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());

const placeholders: Record<string, string> = { string: "value", int: "n", list: "a,b", map: "k=v,…" };

/**
 * `tidings serve`: the server in this process, configured exactly like `npm start` (every flag
 * and environment variable of the configuration table), until SIGTERM or SIGINT.
 */
export function registerServe(program: Command): void {
  const serve = program
    .command("serve")
    .description("run the Tidings server in this process (flags override environment variables, which override the defaults)");
  for (const s of settings) {
    const placeholder = s.flag === "database-url" ? "url" : s.flag === "data-dir" ? "dir" : s.flag === "log-level" ? "level" : placeholders[s.kind]!;
    serve.option(`--${s.flag} <${placeholder}>`, `${s.help} (env ${s.env})`);
  }
  serve
    .addHelpText(
      "after",
      `
With no configuration the server keeps its events in an embedded PGlite in .tidings/data;
--database-url (or DATABASE_URL) selects PostgreSQL. Logs are JSON lines on stdout.
SIGTERM or SIGINT stops it gracefully: streams end so clients resume elsewhere, in-flight
publishes finish, the database closes.

Examples:
  $ tidings serve
  $ tidings serve --port 8080 --host 0.0.0.0 --data-dir /var/lib/tidings
  $ DATABASE_URL=postgres://tidings@db/tidings tidings serve --log-level warn`,
    )
    .action(async (o: Record<string, string | undefined>) => {
      // Hand the flags to the server's own parser: one table of settings, one set of rules.
      const argv = settings.flatMap((s) => (o[camel(s.flag)] === undefined ? [] : [`--${s.flag}`, o[camel(s.flag)]!]));
      let config: ServerConfig;
      try {
        config = loadConfig(argv, process.env);
      } catch (err) {
        if (err instanceof ConfigError) throw new UsageError(err.message);
        throw err;
      }
      await runServer(config);
    });
}

/** Starts the server and resolves once it has shut down after SIGTERM/SIGINT. */
async function runServer(config: ServerConfig): Promise<void> {
  // Loaded here, not at the top: the other commands need none of the server's modules.
  const { createJsonLogger } = await import("../../server/logging/logger.js");
  const { startServer } = await import("../../server/app.js");
  // Before listening: once the server answers, a SIGTERM must find the handlers in place.
  const { serveUntilSignal } = await import("../../server/serve-until-signal.js");
  const logger = createJsonLogger(config.logLevel);
  let server;
  try {
    server = await startServer(config, { logger });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === "EADDRINUSE") throw new CliError(`cannot listen on ${config.host}:${config.port}: the address is already in use`);
    if (e.code === "EACCES") throw new CliError(`cannot listen on ${config.host}:${config.port}: permission denied`);
    if (e.code === "EADDRNOTAVAIL") throw new CliError(`cannot listen on ${config.host}:${config.port}: the address is not available here`);
    throw new CliError(`failed to start: ${oneLine(e.message ?? String(err))}`);
  }
  await serveUntilSignal(server, logger).catch((err: unknown) => {
    throw new CliError(`shutdown failed: ${oneLine((err as Error).message ?? String(err))}`);
  });
}
