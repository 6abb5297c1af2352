import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

/** Tidings' option definitions, which every event .proto imports as "tidings/v1/options.proto". */
const optionsProto = fileURLToPath(new URL("../proto/tidings/v1/options.proto", import.meta.url));

export class DescriptorBuildError extends Error {}

/** The buf binary that ships with Tidings (the @bufbuild/buf package). */
export function bufBinary(): string {
  try {
    return createRequire(import.meta.url).resolve("@bufbuild/buf/bin/buf");
  } catch {
    throw new DescriptorBuildError("buf is not installed: run `npm install` in the Tidings checkout, or pass --descriptor-set with a set built elsewhere");
  }
}

/**
 * Builds the .proto files under `dir` into a FileDescriptorSet with buf. A directory with its
 * own buf.yaml is built as it is; otherwise it is built as a module beside Tidings'
 * options.proto, so `import "tidings/v1/options.proto";` resolves with no setup.
 */
export async function buildDescriptorSet(dir: string): Promise<Uint8Array> {
  const root = resolve(dir);
  const info = await stat(root).catch(() => undefined);
  if (!info?.isDirectory()) throw new DescriptorBuildError(`${dir} is not a directory`);
  const entries = await readdir(root, { recursive: true });
  if (!entries.some((e) => e.endsWith(".proto"))) throw new DescriptorBuildError(`${dir} holds no .proto files`);

  const work = await mkdtemp(join(tmpdir(), "tidings-types-"));
  try {
    const out = join(work, "set.binpb");
    if (await exists(join(root, "buf.yaml"))) {
      await runBuf(["build", root, "-o", out], root, dir);
    } else {
      await symlink(root, join(work, "protos"), "dir");
      const modules = ["  - path: protos"];
      if (!(await exists(join(root, "tidings/v1/options.proto")))) {
        await mkdir(join(work, "tidings/tidings/v1"), { recursive: true });
        await cp(optionsProto, join(work, "tidings/tidings/v1/options.proto"));
        modules.push("  - path: tidings");
      }
      await writeFile(join(work, "buf.yaml"), `version: v2\nmodules:\n${modules.join("\n")}\n`);
      await runBuf(["build", join(work, "protos"), "-o", out], work, dir, join(work, "protos/"));
    }
    return new Uint8Array(await readFile(out));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function runBuf(args: string[], cwd: string, dir: string, workPrefix?: string): Promise<void> {
  try {
    await promisify(execFile)(bufBinary(), args, { cwd, maxBuffer: 16 * 1024 * 1024 });
  } catch (err) {
    if (err instanceof DescriptorBuildError) throw err;
    const e = err as { stderr?: string; message: string };
    // Point buf's messages at the user's directory, not at the scratch workspace.
    let text = (e.stderr || e.message).trim();
    if (workPrefix) text = text.split(workPrefix).join(`${dir.replace(/\/$/, "")}/`);
    throw new DescriptorBuildError(`buf build failed:\n${text}`);
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}
