/**
 * What the server's garbage collector does under a steady publish load: npm run bench:gc.
 *
 * One Tidings server (its own scratch database, run with V8's --trace-gc-nvp) takes unary gRPC
 * Publish calls at a fixed rate while subscribers read them; then the young-generation
 * collections (scavenges) of the steady state are summarised: how much each promoted to the old
 * generation (what outlived two of them), how long each paused the server, and how many full
 * collections there were. A call's objects should die young: promotion that grows with the rate
 * means something keeps calls alive, and every scavenge pays to copy it (see
 * docs/PERFORMANCE.md, twenty-third round, for how this found the fast path's getters).
 *
 *   npm run bench:gc [-- --rate 1000 --seconds 10 --subscribers 1]
 *
 * BENCH_NODE_FLAGS adds server flags (e.g. "--max-semi-space-size=64" to compare).
 */
import { parseArgs } from "node:util";
import { create, toBinary } from "@bufbuild/protobuf";
import { PublishRequestSchema, SubscribeRequestSchema } from "../gen/tidings/v1/event_service_pb.js";
import { createScratchDatabase } from "./lib/database.js";
import { grpcCaller, grpcServerStream, streamingSession } from "./lib/lean-clients.js";
import { median } from "./lib/stats.js";
import { startTidings } from "./lib/tidings-process.js";

const { values } = parseArgs({ options: { rate: { type: "string" }, seconds: { type: "string" }, subscribers: { type: "string" } } });
const rate = Number(values.rate ?? 1000);
const seconds = Number(values.seconds ?? 10);
const subscribers = Number(values.subscribers ?? 1);
for (const [name, value, max] of [["rate", rate, 20_000], ["seconds", seconds, 600], ["subscribers", subscribers, 1000]] as const) {
  if (!Number.isInteger(value) || value < (name === "subscribers" ? 0 : 1) || value > max) throw new Error(`--${name} must be an integer up to ${max}`);
}

/** One line of --trace-gc-nvp: the collection's kind and its numeric fields. */
interface GcLine {
  kind: string;
  fields: Map<string, number>;
}

function parseGcLines(text: string): GcLine[] {
  const out: GcLine[] = [];
  for (const line of text.split("\n")) {
    const kind = / gc=(\w+) /.exec(line)?.[1];
    if (!kind) continue;
    const fields = new Map<string, number>();
    for (const m of line.matchAll(/\b([\w.]+)=(-?[0-9.]+)\b/g)) fields.set(m[1]!, Number(m[2]));
    out.push({ kind, fields });
  }
  return out;
}

const log = (msg: string) => process.stdout.write(`${msg}\n`);
let trace = "";
let gcBeforeLoad = 0;
let gcAfterLoad = 0;
const db = await createScratchDatabase("gcprobe");
try {
  const extraFlags = process.env.BENCH_NODE_FLAGS?.split(" ").filter(Boolean) ?? [];
  const server = await startTidings(db.url, [], { nodeFlags: ["--trace-gc-nvp", ...extraFlags], onOutput: (text) => (trace += text) });
  log(`server ${server.url}: ${rate} gRPC publishes a second for ${seconds} s, ${subscribers} subscriber(s)`);
  const publisher = grpcCaller(server.url, "/tidings.v1.EventService/Publish", 1);
  const session = streamingSession(server.url);
  session.on("error", () => {});
  let received = 0;
  const subscribeRequest = toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { patterns: ["memory.created"] }));
  const streams = Array.from({ length: subscribers }, () => grpcServerStream(session, "/tidings.v1.EventService/Subscribe", subscribeRequest, () => received++));
  let failed = 0;
  try {
    // A second of the same load first, unmeasured: start-up's own collections are not the steady state.
    const warm = Math.min(rate, 2000);
    const total = warm + rate * seconds;
    const inFlight = new Set<Promise<unknown>>();
    const start = performance.now();
    let sent = 0;
    let lastReport = start;
    while (sent < total) {
      const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000));
      while (sent < due) {
        if (sent === warm) gcBeforeLoad = parseGcLines(trace).length;
        const n = sent++;
        const body = toBinary(PublishRequestSchema, create(PublishRequestSchema, {
          event: { type: "memory.created", source: "gc-probe", attributes: { n: String(n) }, payload: { case: "data", value: { memory_id: `m-${n}`, tier: "hot" } } },
        }));
        const call: Promise<unknown> = publisher.call(0, body).catch(() => failed++).finally(() => inFlight.delete(call));
        inFlight.add(call);
        if (inFlight.size > rate) throw new Error(`more than ${rate} publishes waiting: the server fell behind`);
      }
      if (performance.now() - lastReport > 2000) {
        lastReport = performance.now();
        log(`  ${sent} published, ${received} delivered`);
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    await Promise.allSettled([...inFlight]);
    // Only the collections under load: not those of stopping the server.
    gcAfterLoad = parseGcLines(trace).length;
  } finally {
    for (const s of streams) s.cancel();
    await new Promise<void>((r) => session.close(() => r()));
    await publisher.close();
    await server.stop();
  }
  if (failed > 0) throw new Error(`${failed} publishes failed`);
} finally {
  await db.drop();
}

const measured = parseGcLines(trace).slice(gcBeforeLoad, gcAfterLoad);
const scavenges = measured.filter((l) => l.kind === "s");
const full = measured.filter((l) => l.kind === "mc");
if (scavenges.length < 3) throw new Error(`only ${scavenges.length} scavenges while measuring: run longer (--seconds) or faster (--rate)`);
const kb = (l: GcLine, f: string) => (l.fields.get(f) ?? Number.NaN) / 1024;
const promoted = scavenges.map((l) => kb(l, "promoted"));
const allocated = scavenges.map((l) => kb(l, "allocated"));
const pauses = scavenges.map((l) => l.fields.get("pause") ?? Number.NaN);
// Publishes per scavenge, from the measured stretch: what each scavenge promoted, per event.
const perEvent = (median(promoted) * 1024) / ((rate * seconds) / scavenges.length);
log("");
log(`| scavenges | promoted KB each (median, range) | allocated KB each (median) | pause ms (median, max) | full collections (pause ms) |`);
log(`| --------- | -------------------------------- | -------------------------- | ---------------------- | --------------------------- |`);
log(`| ${scavenges.length} | ${median(promoted).toFixed(0)} (${Math.min(...promoted).toFixed(0)}–${Math.max(...promoted).toFixed(0)}) | ${median(allocated).toFixed(0)} | ${median(pauses).toFixed(1)}, ${Math.max(...pauses).toFixed(1)} | ${full.length} (${full.map((l) => (l.fields.get("pause") ?? 0).toFixed(1)).join(", ") || "none"}) |`);
log("");
log(`about ${perEvent.toFixed(0)} bytes promoted per published event`);
