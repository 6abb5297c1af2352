import { clone, type DescFile, fromBinary, isFieldSet, toBinary } from "@bufbuild/protobuf";
import {
  type DescriptorProto,
  type EnumDescriptorProto,
  FieldDescriptorProto_Label,
  FieldDescriptorProto_Type,
  FieldDescriptorProtoSchema,
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import type { FieldViolation } from "../payload-validation.js";

/** The request field a descriptor set arrives in; violations are reported under it. */
export const setField = "descriptor_set";

/** One file of a submitted set, as stored: no source info, no build-tool extras. */
export interface SubmittedFile {
  /** Its index in the submitted set, for error paths. */
  index: number;
  proto: FileDescriptorProto;
  /** The normalized FileDescriptorProto in binary: what is stored, and compared to tell "unchanged". */
  bytes: Uint8Array;
}

/** Something is wrong with the set itself: INVALID_ARGUMENT. */
export class DescriptorSetError extends Error {
  constructor(readonly violations: FieldViolation[]) {
    super(violations.map((v) => `${v.field}: ${v.description}`).join("; "));
  }
}

/** The set declares a name that is already taken (built in, or registered by another message): ALREADY_EXISTS. */
export class NameConflictError extends Error {
  constructor(readonly violations: FieldViolation[]) {
    super(violations.map((v) => `${v.field}: ${v.description}`).join("; "));
  }
}

/** Where built-in files are looked up: the server's own copies always win. */
export interface BuiltInFiles {
  builtInFile(name: string): DescFile | undefined;
  builtInType(typeName: string): unknown;
}

/**
 * Decodes a serialized FileDescriptorSet and checks what protobuf-es would otherwise trip over
 * or accept silently: file names, identifiers, field numbers, labels and types, duplicate names.
 * Files the server has built in are dropped (its own copies are used) after checking that the
 * submitted copy declares nothing the server's lacks. Every problem found is reported, each at
 * `descriptor_set.file[i]` with the file and symbol named in the description.
 */
export function readDescriptorSet(bytes: Uint8Array, builtIns: BuiltInFiles): SubmittedFile[] {
  if (bytes.length === 0) throw new DescriptorSetError([{ field: setField, description: "is required: a serialized google.protobuf.FileDescriptorSet (e.g. from `buf build -o set.binpb`)" }]);
  let files: FileDescriptorProto[];
  try {
    files = fromBinary(FileDescriptorSetSchema, bytes).file;
  } catch (err) {
    throw new DescriptorSetError([{ field: setField, description: `is not a serialized google.protobuf.FileDescriptorSet: ${(err as Error).message}` }]);
  }
  if (files.length === 0) throw new DescriptorSetError([{ field: setField, description: "holds no files (is it a FileDescriptorSet?)" }]);

  const violations: FieldViolation[] = [];
  const conflicts: FieldViolation[] = [];
  const submitted: SubmittedFile[] = [];
  const seenNames = new Map<string, number>();
  const declaredAt = new Map<string, string>();
  files.forEach((file, index) => {
    const at = `${setField}.file[${index}]`;
    const problems: string[] = [];
    const report = (description: string) => problems.push(description);
    if (!/^[^/\\][^\\]*\.proto$/.test(file.name) || file.name.split("/").some((seg) => seg === ".." || seg === "." || seg === "")) {
      report(`file name "${file.name}" must be a relative path ending in .proto`);
    } else if (seenNames.has(file.name)) {
      report(`file ${file.name} appears twice in the set (also at file[${seenNames.get(file.name)}])`);
    }
    seenNames.set(file.name, index);

    const builtIn = builtIns.builtInFile(file.name);
    if (builtIn) {
      for (const problem of differencesFromBuiltIn(file, builtIn)) report(problem);
    } else {
      checkFile(file, report);
      for (const typeName of declaredNames(file)) {
        const other = declaredAt.get(typeName);
        if (other !== undefined) report(`${typeName} is declared in both ${other} and ${file.name}`);
        else if (builtIns.builtInType(typeName)) {
          conflicts.push({ field: at, description: `${file.name}: ${typeName} is already declared by a file built into the server; use another package` });
        }
        declaredAt.set(typeName, file.name);
      }
    }
    for (const problem of problems) violations.push({ field: at, description: `${file.name || "(unnamed file)"}: ${problem}` });
    if (!builtIn && problems.length === 0) submitted.push({ index, proto: normalized(file), bytes: new Uint8Array() });
  });
  if (violations.length > 0) throw new DescriptorSetError(violations);
  if (conflicts.length > 0) throw new NameConflictError(conflicts);
  for (const f of submitted) f.bytes = toBinary(FileDescriptorProtoSchema, f.proto);
  return submitted;
}

/** A stored file back from its bytes. */
export function storedFile(bytes: Uint8Array): FileDescriptorProto {
  return fromBinary(FileDescriptorProtoSchema, bytes);
}

/** Source info is for editors, and build tools add their own fields (buf's image extension): neither is schema. */
function normalized(file: FileDescriptorProto): FileDescriptorProto {
  const copy = clone(FileDescriptorProtoSchema, file);
  copy.sourceCodeInfo = undefined;
  copy.$unknown = undefined;
  return copy;
}

const identifier = /^[A-Za-z_][A-Za-z0-9_]*$/;
const dottedIdentifier = /^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$/;
const maxFieldNumber = 536_870_911;
const typesWithName = new Set([FieldDescriptorProto_Type.MESSAGE, FieldDescriptorProto_Type.ENUM, FieldDescriptorProto_Type.GROUP]);

function checkFile(file: FileDescriptorProto, report: (problem: string) => void): void {
  if (!["", "proto2", "proto3", "editions"].includes(file.syntax)) report(`unknown syntax "${file.syntax}"`);
  if (file.package !== "" && !dottedIdentifier.test(file.package)) report(`package "${file.package}" is not a dotted identifier`);
  const deps = new Set<string>();
  for (const dep of file.dependency) {
    if (deps.has(dep)) report(`imports ${dep} twice`);
    if (dep === file.name) report("imports itself");
    deps.add(dep);
  }
  const prefix = file.package ? `${file.package}.` : "";
  for (const message of file.messageType) checkMessage(message, prefix, file.syntax, report);
  for (const e of file.enumType) checkEnum(e, prefix, file.syntax, report);
}

function checkMessage(message: DescriptorProto, prefix: string, syntax: string, report: (problem: string) => void): void {
  const name = prefix + message.name;
  if (!identifier.test(message.name)) report(`message name "${message.name}" (in ${prefix || "the root"}) is not an identifier`);
  const numbers = new Map<number, string>();
  const names = new Set<string>();
  for (const field of message.field) {
    const at = `field ${name}.${field.name}`;
    if (!identifier.test(field.name)) report(`${at}: the name is not an identifier`);
    if (names.has(field.name)) report(`${at}: the name is used twice`);
    names.add(field.name);
    if (!Number.isInteger(field.number) || field.number < 1 || field.number > maxFieldNumber) {
      report(`${at}: number ${field.number} is outside 1 to ${maxFieldNumber}`);
    } else if (field.number >= 19_000 && field.number <= 19_999) {
      report(`${at}: number ${field.number} is reserved for the protobuf implementation (19000 to 19999)`);
    }
    const other = numbers.get(field.number);
    if (other !== undefined) report(`${at}: number ${field.number} is also used by ${other}`);
    numbers.set(field.number, field.name);
    if (!isFieldSet(field, FieldDescriptorProtoSchema.field.type) || !(field.type in FieldDescriptorProto_Type)) report(`${at}: has no valid type`);
    else if (typesWithName.has(field.type) && !field.typeName.startsWith(".")) {
      report(`${at}: type_name "${field.typeName}" must be fully qualified (".package.Message"), as compilers write it`);
    }
    if (isFieldSet(field, FieldDescriptorProtoSchema.field.label) && !(field.label in FieldDescriptorProto_Label)) report(`${at}: has no valid label`);
    if (isFieldSet(field, FieldDescriptorProtoSchema.field.oneofIndex) && (field.oneofIndex < 0 || field.oneofIndex >= message.oneofDecl.length)) {
      report(`${at}: oneof_index ${field.oneofIndex} names no oneof of ${name}`);
    }
  }
  for (const nested of message.nestedType) checkMessage(nested, `${name}.`, syntax, report);
  for (const e of message.enumType) checkEnum(e, `${name}.`, syntax, report);
}

function checkEnum(e: EnumDescriptorProto, prefix: string, syntax: string, report: (problem: string) => void): void {
  const name = prefix + e.name;
  if (!identifier.test(e.name)) report(`enum name "${e.name}" (in ${prefix || "the root"}) is not an identifier`);
  if (e.value.length === 0) report(`enum ${name} has no values`);
  else if (syntax === "proto3" && e.value[0]!.number !== 0) report(`enum ${name}: the first value must be 0 in proto3`);
  for (const v of e.value) if (!identifier.test(v.name)) report(`enum ${name}: value name "${v.name}" is not an identifier`);
}

/** Full names of every message and enum a file declares, nested ones included. */
export function declaredNames(file: FileDescriptorProto): string[] {
  const names: string[] = [];
  const walk = (messages: readonly DescriptorProto[], enums: readonly EnumDescriptorProto[], prefix: string) => {
    for (const e of enums) names.push(prefix + e.name);
    for (const m of messages) {
      names.push(prefix + m.name);
      walk(m.nestedType, m.enumType, `${prefix}${m.name}.`);
    }
  };
  walk(file.messageType, file.enumType, file.package ? `${file.package}.` : "");
  return names;
}

/**
 * A submitted copy of a built-in file may be older than the server's, but it must not declare
 * anything the server's copy lacks or declares differently: that would be a silent replacement.
 */
function differencesFromBuiltIn(file: FileDescriptorProto, builtIn: DescFile): string[] {
  const problems: string[] = [];
  const serverMessages = new Map<string, DescriptorProto>();
  const walk = (messages: readonly DescriptorProto[], prefix: string, into: Map<string, DescriptorProto>) => {
    for (const m of messages) {
      into.set(prefix + m.name, m);
      walk(m.nestedType, `${prefix}${m.name}.`, into);
    }
  };
  const prefix = builtIn.proto.package ? `${builtIn.proto.package}.` : "";
  walk(builtIn.proto.messageType, prefix, serverMessages);
  const submitted = new Map<string, DescriptorProto>();
  walk(file.messageType, file.package ? `${file.package}.` : "", submitted);
  for (const [name, message] of submitted) {
    const server = serverMessages.get(name);
    if (!server) {
      problems.push(`is built into the server, and the server's copy has no message ${name}; built-in files cannot be changed by registration`);
      continue;
    }
    for (const field of message.field) {
      const match = server.field.find((f) => f.number === field.number);
      if (!match || match.name !== field.name || match.type !== field.type || match.typeName !== field.typeName) {
        problems.push(`is built into the server, and its field ${name}.${field.name} (${field.number}) differs from the server's copy; built-in files cannot be changed by registration`);
      }
    }
  }
  return problems;
}
