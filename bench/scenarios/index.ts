import type { Scenario } from "../lib/scenario.js";
import { deliveryLatencyScenario } from "./delivery-latency.js";
import { growthScenario } from "./growth.js";
import { memoryScenario } from "./memory.js";
import { publishThroughputScenario } from "./publish-throughput.js";
import { webhooksScenario } from "./webhooks.js";

/** Every scenario, in the order the issue lists them. */
export const scenarios: Scenario[] = [publishThroughputScenario, deliveryLatencyScenario, webhooksScenario, growthScenario, memoryScenario];
