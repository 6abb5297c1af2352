import { describe, expect, it } from "vitest";
import { create, createRegistry } from "@bufbuild/protobuf";
import { file_tidings_events_memory_v1_memory, MemoryCreatedSchema } from "../gen/tidings/events/memory/v1/memory_pb.js";
import { compileFilter, defaultFilterLimits, FilterError } from "../server/filtering/cel-filter.js";
import { parseTypePattern, patternCovers, TypePatternError } from "../server/filtering/type-pattern.js";

describe("type patterns", () => {
  const cases: Array<[string, string, boolean]> = [
    ["memory.created", "memory.created", true],
    ["memory.created", "memory.updated", false],
    ["memory.*", "memory.created", true],
    ["memory.*", "memory.a.b", false],
    ["memory.*", "memory", false],
    ["*.created", "memory.created", true],
    ["tidings.**", "tidings.webhook.created", true],
    ["tidings.**", "tidings.x", true],
    ["tidings.**", "tidings", false],
    ["**", "file.changed", true],
    ["*.*.created", "tidings.webhook.created", true],
  ];
  it.each(cases)("%s matches %s: %s", (pattern, type, expected) => {
    expect(parseTypePattern(pattern).matches(type)).toBe(expected);
  });
  it.each(["", "memory.", ".memory", "**.created", "a.**.b", "Memory.*", "mem*", "a b"])("refuses %j", (pattern) => {
    expect(() => parseTypePattern(pattern)).toThrow(TypePatternError);
  });

  // An API key's grant (outer) covers a requested pattern (inner) when every type the request
  // can match, the grant matches too.
  const covers: Array<[string, string, boolean]> = [
    ["memory.*", "memory.created", true],
    ["memory.*", "memory.*", true],
    ["memory.*", "*.created", false],
    ["memory.*", "memory.**", false],
    ["memory.created", "memory.*", false],
    ["memory.**", "memory.a.b", true],
    ["memory.**", "memory.*", true],
    ["memory.**", "memory.**", true],
    ["memory.**", "memory", false],
    ["memory.*.**", "memory.**", false],
    ["memory.*.**", "memory.a.**", true],
    ["**", "**", true],
    ["**", "anything.at.all", true],
    ["*", "**", false],
    ["*.created", "memory.created", true],
    ["*.created", "*.*", false],
  ];
  it.each(covers)("%s covers %s: %s", (outer, inner, expected) => {
    expect(patternCovers(parseTypePattern(outer), parseTypePattern(inner))).toBe(expected);
    // Checked against matching: a covered pattern's examples are matched by the grant.
    if (expected) for (const type of examplesOf(inner)) expect(parseTypePattern(outer).matches(type)).toBe(true);
  });
});

/** A few type names a pattern matches: each wildcard filled in with sample segments. */
function examplesOf(pattern: string): string[] {
  return ["x", "y_1"].flatMap((fill) => [pattern.replaceAll("**", `${fill}.z`).replaceAll("*", fill), pattern.replaceAll("**", fill).replaceAll("*", fill)]);
}

describe("CEL filters", () => {
  const registry = createRegistry(file_tidings_events_memory_v1_memory);
  const event = (tier: string, agent?: string) => ({
    id: "e1",
    source: "alma",
    type: "memory.created",
    subject: "",
    time: new Date("2026-01-28T12:00:00Z"),
    sequence: 7n,
    attributes: agent ? { agent } : ({} as Record<string, string>),
    data: () => create(MemoryCreatedSchema, { memoryId: "m", tier, ltpStrength: 0.8, tags: ["a", "b"] }),
  });

  const tagged = (n: number) => ({
    ...event("hot"),
    data: () => create(MemoryCreatedSchema, { memoryId: "m", tags: Array.from({ length: n }, (_, i) => `t${i}`) }),
  });

  it("counts comprehension steps: an evaluation that needs more than max_steps does not match", () => {
    const limits = (maxSteps: number) => ({ ...defaultFilterLimits, maxSteps });
    const last = 'data.tags.exists(t, t == "t99")'; // 100 steps to find the last tag
    expect(compileFilter(last, registry, limits(100))(tagged(100))).toBe(true);
    expect(compileFilter(last, registry, limits(99))(tagged(100))).toBe(false);
    // all() that would be true, cut short, is not a match either.
    expect(compileFilter('data.tags.all(t, t != "")', registry, limits(99))(tagged(100))).toBe(false);
    expect(compileFilter('data.tags.all(t, t != "")', registry, limits(100))(tagged(100))).toBe(true);
    // The budget is per evaluation: the same compiled filter matches again on a small event.
    const f = compileFilter('data.tags.all(t, t != "")', registry, limits(50));
    expect(f(tagged(100))).toBe(false);
    expect(f(tagged(10))).toBe(true);
  });

  it("stops a quadratic filter early: nested comprehensions over a 3,000-element list (9M steps unbounded)", () => {
    const f = compileFilter('data.tags.all(a, data.tags.all(b, a != "" || b != ""))', registry);
    const started = performance.now();
    expect(f(tagged(3000))).toBe(false);
    // Unbounded this took 2.8 s on this machine; the default budget is 1,000 steps. The bound
    // here is loose on purpose (a busy machine), and still far below the unbounded time.
    expect(performance.now() - started).toBeLessThan(1000);
    // A quadratic filter on a small list stays within the budget and matches as written.
    expect(f(tagged(20))).toBe(true); // 20 + 20 × 20 steps
  });

  it("reads envelope, attributes and typed payload fields", () => {
    const f = compileFilter('data.tier == "hot" && attributes.agent == "helena" && sequence > 5u && data.tags.exists(t, t == "b") && data.ltp_strength > 0.5', registry);
    expect(f(event("hot", "helena"))).toBe(true);
    expect(f(event("cold", "helena"))).toBe(false);
  });

  it("treats runtime errors and non-boolean results as no match", () => {
    expect(compileFilter('attributes.agent == "helena"', registry)(event("hot"))).toBe(false); // missing key
    expect(compileFilter('"not a bool"', registry)(event("hot"))).toBe(false);
    expect(compileFilter('has(attributes.agent)', registry)(event("hot"))).toBe(false);
  });

  it("does not decode the payload when the filter does not read it", () => {
    const f = compileFilter('type.startsWith("memory.")', registry);
    expect(f({ ...event("hot"), data: () => { throw new Error("decoded"); } })).toBe(true);
  });

  it.each(["data.tier ==", "(((", 'tier == "hot"', "x.all(y, z)", "a".repeat(5000)])("refuses %j", (expr) => {
    expect(() => compileFilter(expr, registry)).toThrow(FilterError);
  });

  it("allows comprehension variables", () => {
    expect(compileFilter("data.tags.all(t, t.size() == 1)", registry)(event("hot"))).toBe(true);
  });
});
