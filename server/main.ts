import { ConfigError, loadConfig } from "./config/config.js";
import { createJsonLogger } from "./logging/logger.js";
import { startServer } from "./app.js";
import { serveUntilSignal } from "./serve-until-signal.js";

/** `npm start`: serve until SIGTERM or SIGINT, then shut down gracefully. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.argv.slice(2), process.env);
  } catch (err) {
    if (err instanceof ConfigError || (err as { code?: string }).code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`tidings: ${(err as Error).message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const logger = createJsonLogger(config.logLevel);
  const server = await startServer(config, { logger });
  await serveUntilSignal(server, logger).then(
    () => process.exit(0),
    () => process.exit(1),
  );
}

main().catch((err) => {
  process.stderr.write(`tidings: failed to start: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
