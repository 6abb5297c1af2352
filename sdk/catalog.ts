import { createRegistry, type DescMessage, type Registry } from "@bufbuild/protobuf";
import { file_tidings_events_activity_v1_activity } from "../gen/tidings/events/activity/v1/activity_pb.js";
import { file_tidings_events_consolidation_v1_consolidation } from "../gen/tidings/events/consolidation/v1/consolidation_pb.js";
import { file_tidings_events_contradiction_v1_contradiction } from "../gen/tidings/events/contradiction/v1/contradiction_pb.js";
import { file_tidings_events_debate_v1_debate } from "../gen/tidings/events/debate/v1/debate_pb.js";
import { file_tidings_events_dream_v1_dream } from "../gen/tidings/events/dream/v1/dream_pb.js";
import { file_tidings_events_file_v1_file } from "../gen/tidings/events/file/v1/file_pb.js";
import { file_tidings_events_gap_v1_gap } from "../gen/tidings/events/gap/v1/gap_pb.js";
import { file_tidings_events_memory_v1_memory } from "../gen/tidings/events/memory/v1/memory_pb.js";
import { file_tidings_events_report_v1_report } from "../gen/tidings/events/report/v1/report_pb.js";
import { file_tidings_events_risk_v1_risk } from "../gen/tidings/events/risk/v1/risk_pb.js";
import { file_tidings_events_security_v1_security } from "../gen/tidings/events/security/v1/security_pb.js";
import { file_tidings_events_synapse_v1_synapse } from "../gen/tidings/events/synapse/v1/synapse_pb.js";
import { file_tidings_events_system_v1_system } from "../gen/tidings/events/system/v1/system_pb.js";

/**
 * The catalog's messages, for unpacking received payloads. A browser bundle cannot scan gen/
 * the way the server does, so the files are listed here; a test checks that this list covers
 * every type the server knows.
 */
export const catalogRegistry: Registry = createRegistry(
  file_tidings_events_activity_v1_activity,
  file_tidings_events_consolidation_v1_consolidation,
  file_tidings_events_contradiction_v1_contradiction,
  file_tidings_events_debate_v1_debate,
  file_tidings_events_dream_v1_dream,
  file_tidings_events_file_v1_file,
  file_tidings_events_gap_v1_gap,
  file_tidings_events_memory_v1_memory,
  file_tidings_events_report_v1_report,
  file_tidings_events_risk_v1_risk,
  file_tidings_events_security_v1_security,
  file_tidings_events_synapse_v1_synapse,
  file_tidings_events_system_v1_system,
);

/** Message types the SDK can unpack. */
export function knownMessages(): DescMessage[] {
  return [...catalogRegistry].filter((t): t is DescMessage => t.kind === "message");
}
