import type { RunningServer } from "./app.js";
import type { Logger } from "./logging/logger.js";

/**
 * Waits for SIGTERM or SIGINT, then shuts the server down gracefully (stop accepting, end
 * streams so clients resume elsewhere, finish in-flight work, close the pool). Resolves once
 * it has stopped; rejects if shutting down failed. `npm start` and `tidings serve` both use it.
 */
export function serveUntilSignal(server: RunningServer, logger: Logger): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      logger.info("signal received", { signal });
      server.close().then(resolve, (err: unknown) => {
        logger.error("shutdown failed", { err });
        reject(err);
      });
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));
  });
}
