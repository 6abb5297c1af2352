import { type DescField, type DescMessage, ScalarType, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { binaryPayloadPasses } from "../server/catalog/binary-payload-check.js";
import { fieldRules, loadCatalog } from "../server/catalog/catalog.js";
import { parseBinaryPayload } from "../server/catalog/payload-validation.js";
import { randomMessage, seededRandom } from "./helpers/random-message.js";

const texts = ["", "a", "hot", "warm", "ünïcödé ✓", "x".repeat(200)];

function randomScalar(rnd: () => number, scalar: ScalarType, field: DescField): unknown {
  const zero = rnd() < 0.25;
  switch (scalar) {
    case ScalarType.STRING: {
      const allowed = fieldRules(field)?.allowedValues ?? [];
      if (allowed.length > 0 && rnd() < 0.6) return allowed[Math.floor(rnd() * allowed.length)];
      return zero ? "" : texts[Math.floor(rnd() * texts.length)];
    }
    case ScalarType.BYTES:
      return zero ? new Uint8Array(0) : new Uint8Array([1, 2, 3]);
    case ScalarType.BOOL:
      return !zero;
    case ScalarType.INT64:
    case ScalarType.SINT64:
    case ScalarType.SFIXED64:
      return zero ? 0n : BigInt(Math.floor((rnd() - 0.5) * 2 ** 40));
    case ScalarType.UINT64:
    case ScalarType.FIXED64:
      return zero ? 0n : BigInt(Math.floor(rnd() * 2 ** 40));
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return zero ? 0 : rnd() * 100;
    case ScalarType.UINT32:
    case ScalarType.FIXED32:
      return zero ? 0 : Math.floor(rnd() * 2 ** 31);
    default:
      return zero ? 0 : Math.floor((rnd() - 0.5) * 2 ** 20);
  }
}

const messages = { scalar: randomScalar, maxDepth: 4, maxItems: 2, skip: 0.3 };

function damage(rnd: () => number, bytes: Uint8Array): Uint8Array {
  const b = Buffer.from(bytes);
  const at = Math.floor(rnd() * Math.max(1, b.length));
  switch (Math.floor(rnd() * 4)) {
    case 0:
      if (b.length > 0) b[at] = Math.floor(rnd() * 256);
      return new Uint8Array(b);
    case 1:
      return new Uint8Array(b.subarray(0, at));
    case 2:
      return new Uint8Array(Buffer.concat([b.subarray(0, at), Buffer.from([Math.floor(rnd() * 256), Math.floor(rnd() * 256)]), b.subarray(at)]));
    default:
      // A field again: merges, last values, a second oneof member.
      return new Uint8Array(Buffer.concat([b, b.subarray(at)]));
  }
}

describe("checking a binary payload without decoding it", async () => {
  const catalog = await loadCatalog();
  const types = catalog.list();

  it("agrees with decoding it, for random payloads of every event type", () => {
    const rnd = seededRandom(20261202);
    let passed = 0;
    let refused = 0;
    for (const entry of types) {
      for (let i = 0; i < 150; i++) {
        const bytes = toBinary(entry.message, randomMessage(rnd, entry.message, messages).message);
        const violations = parseBinaryPayload(entry.message, bytes, "p").violations;
        expect(binaryPayloadPasses(entry.message, bytes), `${entry.name} #${i}: ${JSON.stringify(violations)}`).toBe(violations.length === 0);
        if (violations.length === 0) passed++;
        else refused++;
      }
    }
    // Both outcomes are exercised, for the rules of the catalog's types.
    expect(passed).toBeGreaterThan(1_000);
    expect(refused).toBeGreaterThan(100);
  });

  it("never passes a damaged payload that decoding refuses", () => {
    const rnd = seededRandom(7);
    let passedDamaged = 0;
    for (const entry of types) {
      for (let i = 0; i < 200; i++) {
        const bytes = damage(rnd, toBinary(entry.message, randomMessage(rnd, entry.message, messages).message));
        if (!binaryPayloadPasses(entry.message, bytes)) continue;
        passedDamaged++;
        expect(parseBinaryPayload(entry.message, bytes, "p").violations, `${entry.name} ${Buffer.from(bytes).toString("hex")}`).toEqual([]);
      }
    }
    expect(passedDamaged).toBeGreaterThan(100);
  });

  it("leaves an unknown field, invalid UTF-8 and a missing required field to the decoder", () => {
    const file = catalog.get("file.changed") ?? types.find((t) => t.message.fields.some((f) => fieldRules(f)?.required))!;
    const good = toBinary(file.message, randomUntil(file.message, (bytes) => parseBinaryPayload(file.message, bytes, "p").violations.length === 0));
    expect(binaryPayloadPasses(file.message, good)).toBe(true);
    expect(binaryPayloadPasses(file.message, new Uint8Array([...good, 0xf8, 0x07, 0x01]))).toBe(false); // field 127
    expect(binaryPayloadPasses(file.message, new Uint8Array(0))).toBe(false); // required fields missing
    const text = file.message.fields.find((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING)!;
    expect(binaryPayloadPasses(file.message, new Uint8Array([...good, (text.number << 3) | 2, 2, 0xc3, 0x28]))).toBe(false);
  });

  it("leaves text starting with U+FEFF to the decoder, which drops that character", () => {
    // A required text field holding only U+FEFF decodes as empty: the rule is not met.
    const entry = types.find((t) => t.message.fields.some((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING && fieldRules(f)?.required))!;
    const field = entry.message.fields.find((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING && fieldRules(f)?.required)!;
    const good = toBinary(entry.message, randomUntil(entry.message, (bytes) => parseBinaryPayload(entry.message, bytes, "p").violations.length === 0));
    const bomOnly = new Uint8Array([...good, (field.number << 3) | 2, 3, 0xef, 0xbb, 0xbf]); // the last value wins
    expect(parseBinaryPayload(entry.message, bomOnly, "p").violations.map((v) => v.field)).toContain(`p.${field.name}`);
    expect(binaryPayloadPasses(entry.message, bomOnly)).toBe(false);
  });
});

function randomUntil(desc: DescMessage, ok: (bytes: Uint8Array) => boolean) {
  const rnd = seededRandom(1);
  for (let i = 0; i < 10_000; i++) {
    const m = randomMessage(rnd, desc, messages).message;
    if (ok(toBinary(desc, m))) return m;
  }
  throw new Error(`no valid ${desc.typeName} in 10,000 tries`);
}
