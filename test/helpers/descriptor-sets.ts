import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { buildDescriptorSet } from "../../cli/build-descriptor-set.js";

/**
 * Writes .proto files to a scratch directory and builds them with the real buf, the way
 * `tidings types push <dir>` does: `tidings/v1/options.proto` resolves with no setup.
 */
export async function buildSet(files: Record<string, string>): Promise<Uint8Array> {
  const dir = await writeProtos(files);
  try {
    return await buildDescriptorSet(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** The .proto files in a new scratch directory; the caller removes it. */
export async function writeProtos(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "tidings-protos-"));
  for (const [name, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, name)), { recursive: true });
    await writeFile(join(dir, name), text);
  }
  return dir;
}

/**
 * A shop's events, version 1, with a nested message, an enum, a map and a repeated field, so
 * the compatibility rules have something to bite on. `body` replaces the OrderPlaced fields.
 */
export function shopProto(body = shopV1Fields, extra = ""): Record<string, string> {
  return {
    "shop/v1/shop.proto": `syntax = "proto3";
package shop.v1;

import "google/protobuf/timestamp.proto";
import "tidings/v1/options.proto";

enum Channel {
  CHANNEL_UNSPECIFIED = 0;
  CHANNEL_WEB = 1;
  CHANNEL_STORE = 2;
}

message Line {
  string sku = 1;
  int32 quantity = 2;
}

message OrderPlaced {
  option (tidings.v1.event_type) = { name: "shop.order_placed", description: "A customer placed an order." };
${body}
}

message OrderShipped {
  option (tidings.v1.event_type) = { name: "shop.order_shipped", description: "An order left the warehouse." };
  string order_id = 1 [(tidings.v1.field).required = true];
  google.protobuf.Timestamp shipped_at = 2;
}
${extra}`,
  };
}

export const shopV1Fields = `  string order_id = 1 [(tidings.v1.field).required = true];
  int64 total_cents = 2;
  Channel channel = 3;
  repeated Line lines = 4;
  map<string, string> tags = 5;
  string tier = 6 [(tidings.v1.field).allowed_values = "gold", (tidings.v1.field).allowed_values = "silver"];`;
