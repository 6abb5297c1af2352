import { defineConfig } from "vitest/config";

/** `npm run test:faults`: the proof-under-faults suite (test/faults), which CI runs after `npm test`. */
export default defineConfig({
  test: {
    include: ["test/faults/**/*.test.ts"],
    // Collects each scenario's outcome and prints the report at the end of the run.
    globalSetup: ["test/faults/report.ts"],
    testTimeout: 300_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers: 1,
  },
});
