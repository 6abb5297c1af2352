import { createFileRegistry, type DescFile } from "@bufbuild/protobuf";
import { type DescriptorProto, FieldDescriptorProto_Type, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import { declaredNames } from "./descriptor-set.js";

/** A file to build, and where a problem with it is reported. */
export interface FileToBuild {
  proto: FileDescriptorProto;
  /** The request field path of the file, or a description of where it came from. */
  at: string;
}

export interface BuildProblem {
  at: string;
  file: string;
  description: string;
}

/**
 * Builds descriptors for `files`, dependencies first, resolving imports among them or, failing
 * that, with `external` (the server's built-in files). Every import must resolve and every
 * type a field names must be declared in the file or in what it imports, checked here so the
 * error names the field instead of failing deep inside protobuf-es. A file that cannot be built
 * is reported, and so are the files that import it; the others are built.
 */
export function buildFiles(files: readonly FileToBuild[], external: (name: string) => DescFile | undefined): { built: Map<string, DescFile>; problems: BuildProblem[] } {
  const byName = new Map(files.map((f) => [f.proto.name, f]));
  const built = new Map<string, DescFile>();
  const problems: BuildProblem[] = [];
  const failed = new Set<string>();
  const visiting = new Set<string>();
  const resolve = (name: string) => built.get(name) ?? external(name);

  const visit = (file: FileToBuild, chain: readonly string[]): boolean => {
    const name = file.proto.name;
    if (built.has(name)) return true;
    if (failed.has(name)) return false;
    if (visiting.has(name)) {
      problems.push({ at: file.at, file: name, description: `import cycle: ${[...chain, name].join(" → ")}` });
      failed.add(name);
      return false;
    }
    visiting.add(name);
    let depsOk = true;
    for (const dep of file.proto.dependency) {
      const inSet = byName.get(dep);
      if (inSet) {
        if (!visit(inSet, [...chain, name])) {
          problems.push({ at: file.at, file: name, description: `imports ${dep}, which cannot be built` });
          depsOk = false;
        }
      }
      else if (!external(dep)) {
        problems.push({ at: file.at, file: name, description: `imports ${dep}, which is not in the set, not built into the server and not registered before` });
        depsOk = false;
      }
    }
    visiting.delete(name);
    if (!depsOk) {
      failed.add(name);
      return false;
    }
    const unresolved = unresolvedTypeNames(file.proto, resolve);
    if (unresolved.length > 0) {
      for (const u of unresolved) problems.push({ at: file.at, file: name, description: u });
      failed.add(name);
      return false;
    }
    try {
      const registry = createFileRegistry(file.proto, resolve);
      built.set(name, registry.getFile(name)!);
      return true;
    } catch (err) {
      problems.push({ at: file.at, file: name, description: (err as Error).message });
      failed.add(name);
      return false;
    }
  };

  for (const file of files) visit(file, []);
  return { built, problems };
}

/** Fields naming a message or enum that neither the file nor anything it imports declares. */
function unresolvedTypeNames(file: FileDescriptorProto, resolve: (name: string) => DescFile | undefined): string[] {
  const visible = new Set(declaredNames(file));
  const seen = new Set<string>();
  const addFile = (f: DescFile) => {
    if (seen.has(f.proto.name)) return;
    seen.add(f.proto.name);
    for (const name of declaredNames(f.proto)) visible.add(name);
    for (const dep of f.dependencies) addFile(dep);
  };
  for (const dep of file.dependency) {
    const f = resolve(dep);
    if (f) addFile(f);
  }
  const problems: string[] = [];
  const walk = (messages: readonly DescriptorProto[], prefix: string) => {
    for (const m of messages) {
      for (const field of [...m.field, ...m.extension]) {
        const typed = field.type === FieldDescriptorProto_Type.MESSAGE || field.type === FieldDescriptorProto_Type.ENUM || field.type === FieldDescriptorProto_Type.GROUP;
        if (typed && !visible.has(field.typeName.slice(1))) {
          problems.push(`field ${prefix}${m.name}.${field.name} has type ${field.typeName.slice(1)}, which is not declared in ${file.name} or in the files it imports`);
        }
      }
      walk(m.nestedType, `${prefix}${m.name}.`);
    }
  };
  walk(file.messageType, file.package ? `${file.package}.` : "");
  return problems;
}
