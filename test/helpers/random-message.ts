import { create, type DescEnum, type DescField, type DescMessage, type Message, type ScalarType } from "@bufbuild/protobuf";
import { reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { WireType } from "@bufbuild/protobuf/wire";

/** A small seeded generator (mulberry32), so that a failure can be replayed from its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface RandomMessageOptions {
  /** A value for a scalar field, list item, map key or map value. */
  scalar(rnd: () => number, scalar: ScalarType, field: DescField): unknown;
  /** Deepest nesting of messages. */
  maxDepth: number;
  /** Most items in a list or map. */
  maxItems: number;
  /** Chance that a field is left unset. */
  skip: number;
  /** Chance that an open enum gets a number it does not name. */
  unknownEnum?: number;
  /** Chance that a message carries an unknown field. */
  unknownFields?: number;
}

/** A message of `desc` with fields set at random through protobuf-es's reflection, so in its local form. */
export function randomMessage(rnd: () => number, desc: DescMessage, options: RandomMessageOptions, depth = 0): ReflectMessage {
  const r = reflect(desc, create(desc));
  // The optional chances draw from rnd only when set, so that a caller without them gets the same messages for a seed.
  const enumValue = (e: DescEnum) => (options.unknownEnum && e.open && rnd() < options.unknownEnum ? 12345 : e.values[Math.floor(rnd() * e.values.length)]!.number);
  const nested = (d: DescMessage) => randomMessage(rnd, d, options, depth + 1);
  const deeper = depth < options.maxDepth;
  for (const field of desc.fields) {
    if (rnd() < options.skip) continue;
    if (field.oneof && r.oneofCase(field.oneof) !== undefined) continue;
    switch (field.fieldKind) {
      case "scalar":
        r.set(field, options.scalar(rnd, field.scalar, field) as never);
        break;
      case "enum":
        r.set(field, enumValue(field.enum) as never);
        break;
      case "message":
        if (deeper) r.set(field, nested(field.message) as never);
        break;
      case "list": {
        const list = r.get(field);
        const n = Math.floor(rnd() * (options.maxItems + 1));
        for (let i = 0; i < n; i++) {
          if (field.listKind === "scalar") list.add(options.scalar(rnd, field.scalar, field) as never);
          else if (field.listKind === "enum") list.add(enumValue(field.enum) as never);
          else if (deeper) list.add(nested(field.message) as never);
        }
        break;
      }
      case "map": {
        const map = r.get(field);
        const n = Math.floor(rnd() * (options.maxItems + 1));
        for (let i = 0; i < n; i++) {
          const key = options.scalar(rnd, field.mapKey, field);
          if (field.mapKind === "scalar") map.set(key as never, options.scalar(rnd, field.scalar, field) as never);
          else if (field.mapKind === "enum") map.set(key as never, enumValue(field.enum) as never);
          else if (deeper) map.set(key as never, nested(field.message) as never);
        }
        break;
      }
    }
  }
  // Unknown fields, which encoders write after the known ones.
  if (options.unknownFields && rnd() < options.unknownFields) (r.message as Message & { $unknown?: unknown[] }).$unknown = [{ no: 999, wireType: WireType.Varint, data: new Uint8Array([0x96, 0x01]) }];
  return r;
}
