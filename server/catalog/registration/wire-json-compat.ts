import { type DescEnum, type DescField, type DescFile, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { Edition, FeatureSet_FieldPresence, FeatureSet_JsonFormat, type DescriptorProto_ReservedRange, type EnumDescriptorProto_EnumReservedRange } from "@bufbuild/protobuf/wkt";
import { fieldRules } from "../catalog.js";

/** One change that breaks readers or writers of existing data, named as `buf breaking` names it. */
export interface BreakingChange {
  /** The rule: buf's WIRE_JSON rule IDs, or TIDINGS_* for Tidings' own field rules. */
  rule: string;
  /** The element at fault, e.g. "shop.v1.OrderPlaced.total". */
  subject: string;
  description: string;
}

/**
 * The rules of `buf breaking`'s WIRE_JSON category, applied from the `before` files to the
 * `after` files by full name: a change that would make data written with one schema unreadable
 * (in binary or in JSON) with the other. RPC rules do not apply (event types have no
 * services). Messages and enums that disappear are not breaking by these rules; the caller
 * checks that no event type disappears. Tidings adds two rules for its field options, because
 * they decide what publishers may send: a field may not become required (TIDINGS_FIELD_NO_NEW_REQUIRED)
 * and allowed_values may not narrow (TIDINGS_FIELD_ALLOWED_VALUES_NO_NARROWING).
 */
export function wireJsonBreakingChanges(before: readonly DescFile[], after: readonly DescFile[]): BreakingChange[] {
  const changes: BreakingChange[] = [];
  const afterFiles = new Map(after.map((f) => [f.proto.name, f]));
  const afterTypes = typesByName(after);
  for (const file of before) {
    const next = afterFiles.get(file.proto.name);
    if (next && next.proto.package !== file.proto.package) {
      changes.push({ rule: "FILE_SAME_PACKAGE", subject: file.proto.name, description: `package changed from "${file.proto.package}" to "${next.proto.package}"` });
    }
  }
  for (const [name, type] of typesByName(before)) {
    const next = afterTypes.get(name);
    if (!next || next.kind !== type.kind) continue;
    if (type.kind === "message") compareMessage(type, next as DescMessage, changes);
    else compareEnum(type, next as DescEnum, changes);
  }
  return changes;
}

function typesByName(files: readonly DescFile[]): Map<string, DescMessage | DescEnum> {
  const types = new Map<string, DescMessage | DescEnum>();
  const add = (desc: DescFile | DescMessage) => {
    for (const t of nestedTypes(desc)) {
      if (t.kind === "message" || t.kind === "enum") types.set(t.typeName, t);
    }
  };
  for (const f of files) add(f);
  return types;
}

function compareMessage(before: DescMessage, after: DescMessage, out: BreakingChange[]): void {
  const push = (rule: string, subject: string, description: string) => out.push({ rule, subject, description });
  for (const range of before.proto.reservedRange) {
    if (!rangeCovered(range, after.proto.reservedRange)) push("RESERVED_MESSAGE_NO_DELETE", before.typeName, `reserved range ${rangeText(range, true)} was removed`);
  }
  for (const name of before.proto.reservedName) {
    if (!after.proto.reservedName.includes(name)) push("RESERVED_MESSAGE_NO_DELETE", before.typeName, `reserved name "${name}" was removed`);
  }
  if (jsonFormat(before) === FeatureSet_JsonFormat.ALLOW && jsonFormat(after) !== FeatureSet_JsonFormat.ALLOW) {
    push("MESSAGE_SAME_JSON_FORMAT", before.typeName, "no longer supports the JSON format");
  }
  const requiredBefore = before.fields.filter(isLegacyRequired).map((f) => f.number);
  const requiredAfter = after.fields.filter(isLegacyRequired).map((f) => f.number);
  if (requiredBefore.join() !== requiredAfter.join()) {
    push("MESSAGE_SAME_REQUIRED_FIELDS", before.typeName, `required fields changed from [${requiredBefore.join(", ")}] to [${requiredAfter.join(", ")}]`);
  }

  for (const field of before.fields) {
    const subject = `${before.typeName}.${field.name}`;
    const next = after.fields.find((f) => f.number === field.number);
    if (!next) {
      if (!numberReserved(field.number, after.proto.reservedRange)) {
        push("FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED", subject, `field ${field.number} was deleted without reserving its number`);
      }
      if (!after.proto.reservedName.includes(field.name)) {
        push("FIELD_NO_DELETE_UNLESS_NAME_RESERVED", subject, `field "${field.name}" was deleted without reserving its name (JSON uses it)`);
      }
      continue;
    }
    if (next.name !== field.name) {
      push("FIELD_SAME_NAME", subject, `field ${field.number} was renamed from "${field.name}" to "${next.name}" (JSON uses the name)`);
    } else if (next.jsonName !== field.jsonName) {
      push("FIELD_SAME_JSON_NAME", subject, `json_name changed from "${field.jsonName}" to "${next.jsonName}"`);
    }
    if (field.oneof?.name !== next.oneof?.name) {
      push("FIELD_SAME_ONEOF", subject, `moved from ${field.oneof ? `oneof ${field.oneof.name}` : "outside a oneof"} to ${next.oneof ? `oneof ${next.oneof.name}` : "outside a oneof"}`);
    }
    const cardinality = [cardinalityOf(field), cardinalityOf(next)];
    if (cardinality[0] !== cardinality[1]) {
      push("FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY", subject, `changed from ${cardinality[0]} to ${cardinality[1]}`);
    } else {
      const problem = typeChange(field, next);
      if (problem) push("FIELD_WIRE_JSON_COMPATIBLE_TYPE", subject, problem);
    }
    if ((field.proto.defaultValue ?? "") !== (next.proto.defaultValue ?? "")) {
      push("FIELD_SAME_DEFAULT", subject, `default changed from "${field.proto.defaultValue ?? ""}" to "${next.proto.defaultValue ?? ""}"`);
    }
    const rules = [fieldRules(field), fieldRules(next)] as const;
    if (!rules[0]?.required && rules[1]?.required) {
      push("TIDINGS_FIELD_NO_NEW_REQUIRED", subject, "became required: publishers that leave it out would be refused");
    }
    const allowedBefore = rules[0]?.allowedValues ?? [];
    const allowedAfter = rules[1]?.allowedValues ?? [];
    if (allowedAfter.length > 0) {
      const dropped = allowedBefore.length === 0 ? ["(any value)"] : allowedBefore.filter((v) => !allowedAfter.includes(v));
      if (dropped.length > 0) {
        push("TIDINGS_FIELD_ALLOWED_VALUES_NO_NARROWING", subject, `allowed_values no longer admit ${dropped.map((v) => (v === "(any value)" ? v : `"${v}"`)).join(", ")}: publishers sending them would be refused`);
      }
    }
  }
  for (const field of after.fields) {
    if (!before.fields.some((f) => f.number === field.number) && fieldRules(field)?.required) {
      push("TIDINGS_FIELD_NO_NEW_REQUIRED", `${after.typeName}.${field.name}`, "is a new required field: existing publishers do not send it and would be refused");
    }
  }
}

function compareEnum(before: DescEnum, after: DescEnum, out: BreakingChange[]): void {
  const push = (rule: string, subject: string, description: string) => out.push({ rule, subject, description });
  for (const range of before.proto.reservedRange) {
    if (!rangeCovered(range, after.proto.reservedRange, false)) push("RESERVED_ENUM_NO_DELETE", before.typeName, `reserved range ${rangeText(range, false)} was removed`);
  }
  for (const name of before.proto.reservedName) {
    if (!after.proto.reservedName.includes(name)) push("RESERVED_ENUM_NO_DELETE", before.typeName, `reserved name "${name}" was removed`);
  }
  if (jsonFormat(before) === FeatureSet_JsonFormat.ALLOW && jsonFormat(after) !== FeatureSet_JsonFormat.ALLOW) {
    push("ENUM_SAME_JSON_FORMAT", before.typeName, "no longer supports the JSON format");
  }
  for (const value of before.values) {
    const subject = `${before.typeName}.${value.name}`;
    const sameNumber = after.values.filter((v) => v.number === value.number);
    if (sameNumber.length === 0) {
      if (!numberReserved(value.number, after.proto.reservedRange, false)) {
        push("ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED", subject, `value ${value.number} was deleted without reserving its number`);
      }
    } else if (!sameNumber.some((v) => v.name === value.name)) {
      push("ENUM_VALUE_SAME_NAME", subject, `value ${value.number} was renamed from ${value.name} to ${sameNumber[0]!.name} (JSON uses the name)`);
    }
    if (!after.values.some((v) => v.name === value.name) && !after.proto.reservedName.includes(value.name)) {
      push("ENUM_VALUE_NO_DELETE_UNLESS_NAME_RESERVED", subject, `value ${value.name} was deleted without reserving its name (JSON uses it)`);
    }
  }
}

type Cardinality = "map" | "repeated" | "required" | "singular";

/** Explicit and implicit presence look the same on the wire and in JSON: both are "singular". */
function cardinalityOf(field: DescField): Cardinality {
  if (field.fieldKind === "map") return "map";
  if (field.fieldKind === "list") return "repeated";
  return isLegacyRequired(field) ? "required" : "singular";
}

function isLegacyRequired(field: DescField): boolean {
  return field.presence === FeatureSet_FieldPresence.LEGACY_REQUIRED;
}

/** Pairs that read each other's data in binary and in JSON (buf's FIELD_WIRE_JSON_COMPATIBLE_TYPE). */
const compatibleScalars: ReadonlyArray<readonly [ScalarType, ScalarType]> = [
  [ScalarType.INT32, ScalarType.UINT32],
  [ScalarType.INT64, ScalarType.UINT64],
  [ScalarType.FIXED32, ScalarType.SFIXED32],
  [ScalarType.FIXED64, ScalarType.SFIXED64],
];

type ValueType = { kind: "scalar"; scalar: ScalarType } | { kind: "enum"; desc: DescEnum } | { kind: "message"; desc: DescMessage; delimited: boolean };

function valueTypes(field: DescField): ValueType[] {
  switch (field.fieldKind) {
    case "scalar":
      return [{ kind: "scalar", scalar: field.scalar }];
    case "enum":
      return [{ kind: "enum", desc: field.enum }];
    case "message":
      return [{ kind: "message", desc: field.message, delimited: field.delimitedEncoding }];
    case "list":
      return [field.listKind === "scalar" ? { kind: "scalar", scalar: field.scalar } : field.listKind === "enum" ? { kind: "enum", desc: field.enum } : { kind: "message", desc: field.message, delimited: field.delimitedEncoding }];
    case "map":
      return [
        { kind: "scalar", scalar: field.mapKey },
        field.mapKind === "scalar" ? { kind: "scalar", scalar: field.scalar } : field.mapKind === "enum" ? { kind: "enum", desc: field.enum } : { kind: "message", desc: field.message, delimited: false },
      ];
  }
}

function typeChange(before: DescField, after: DescField): string | undefined {
  const b = valueTypes(before);
  const a = valueTypes(after);
  for (let i = 0; i < b.length; i++) {
    if (!typesCompatible(b[i]!, a[i]!)) {
      const what = before.fieldKind === "map" ? (i === 0 ? "map key type" : "map value type") : "type";
      return `${what} changed from ${typeText(b[i]!)} to ${typeText(a[i]!)}`;
    }
  }
  return undefined;
}

function typesCompatible(b: ValueType, a: ValueType): boolean {
  if (b.kind === "scalar" && a.kind === "scalar") {
    return b.scalar === a.scalar || compatibleScalars.some(([x, y]) => (x === b.scalar && y === a.scalar) || (y === b.scalar && x === a.scalar));
  }
  if (b.kind === "enum" && a.kind === "enum") {
    // buf: the same short name, and every value before is still there with its number.
    return b.desc.name === a.desc.name && b.desc.values.every((v) => a.desc.values.some((w) => w.name === v.name && w.number === v.number));
  }
  if (b.kind === "message" && a.kind === "message") return b.desc.typeName === a.desc.typeName && b.delimited === a.delimited;
  return false;
}

function typeText(t: ValueType): string {
  if (t.kind === "scalar") return ScalarType[t.scalar].toLowerCase();
  return t.desc.typeName;
}

/** Resolved JSON support: an explicit feature wins, else proto2 is best effort and the rest allow it. */
function jsonFormat(desc: DescMessage | DescEnum): FeatureSet_JsonFormat {
  let parent: DescMessage | DescEnum | DescFile | undefined = desc;
  while (parent) {
    const explicit = parent.proto.options?.features?.jsonFormat;
    if (explicit) return explicit;
    parent = parent.kind === "file" ? undefined : (parent.parent ?? parent.file);
  }
  return desc.file.edition === Edition.EDITION_PROTO2 ? FeatureSet_JsonFormat.LEGACY_BEST_EFFORT : FeatureSet_JsonFormat.ALLOW;
}

type Range = DescriptorProto_ReservedRange | EnumDescriptorProto_EnumReservedRange;

/** Message reserved ranges are end-exclusive; enum ones are end-inclusive. */
function numberReserved(n: number, ranges: readonly Range[], endExclusive = true): boolean {
  return ranges.some((r) => n >= r.start && (endExclusive ? n < r.end : n <= r.end));
}

function rangeCovered(range: Range, ranges: readonly Range[], endExclusive = true): boolean {
  const inclusive = (r: Range): [number, number] => [r.start, endExclusive ? r.end - 1 : r.end];
  const [start, last] = inclusive(range);
  let next = start;
  for (const [s, e] of ranges.map(inclusive).sort((x, y) => x[0] - y[0])) {
    if (s > next) break;
    next = Math.max(next, e + 1);
    if (next > last) return true;
  }
  return next > last;
}

function rangeText(range: Range, endExclusive: boolean): string {
  return `${range.start} to ${endExclusive ? range.end - 1 : range.end}`;
}
