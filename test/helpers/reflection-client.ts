import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";

const protoRoot = fileURLToPath(new URL("../../node_modules/@grpc/reflection/build/proto", import.meta.url));

/** A reflection client as grpcurl would use it: one bidi stream, one question at a time. */
export function reflectionClient(address: string, version: "v1" | "v1alpha", headers: Record<string, string> = {}) {
  const def = protoLoader.loadSync(`grpc/reflection/${version}/reflection.proto`, { includeDirs: [protoRoot], keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as any;
  const Service = pkg.grpc.reflection[version].ServerReflection;
  const client = new Service(address, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  for (const [k, v] of Object.entries(headers)) metadata.set(k, v);
  const call = client.ServerReflectionInfo(metadata);
  const pending: Array<{ resolve: (r: any) => void; reject: (err: unknown) => void }> = [];
  let failed: unknown;
  call.on("data", (r: any) => pending.shift()?.resolve(r));
  // A failed stream (e.g. UNAUTHENTICATED) fails every question asked on it.
  call.on("error", (err: unknown) => {
    failed = err;
    for (const p of pending.splice(0)) p.reject(err);
  });
  return {
    ask(request: object): Promise<any> {
      if (failed) return Promise.reject(failed);
      return new Promise((resolve, reject) => {
        pending.push({ resolve, reject });
        call.write(request);
      });
    },
    close() {
      call.end();
      client.close();
    },
  };
}

/** The files of a file_descriptor_response; anything else fails with the response shown. */
export function decode(r: any): FileDescriptorProto[] {
  if (!r.file_descriptor_response) throw new Error(`expected files, got ${JSON.stringify(r).slice(0, 400)}`);
  return r.file_descriptor_response.file_descriptor_proto.map((b: Buffer) => fromBinary(FileDescriptorProtoSchema, b));
}


/** The names of the files a v1 reflection answer carries for a symbol (grpcurl's `describe`). */
export async function fileContainingSymbol(baseUrl: string, symbol: string): Promise<string[]> {
  const r = reflectionClient(new URL(baseUrl).host, "v1");
  try {
    return decode(await r.ask({ file_containing_symbol: symbol })).map((f) => f.name);
  } finally {
    r.close();
  }
}
