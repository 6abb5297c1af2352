import { create, type DescFile, type DescMessage, type DescService, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ConnectRouter } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";

/** Where every symbol and file the server speaks is found. */
interface ReflectionIndex {
  byFilename: Map<string, DescFile>;
  bySymbol: Map<string, DescFile>;
  /** "<extended type>:<field number>" → file declaring the extension. */
  byExtension: Map<string, DescFile>;
  extensionNumbers: Map<string, number[]>;
  services: string[];
}

/** The two versions share their shape; only the package differs. */
type Version = typeof v1 | typeof v1alpha;

/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha), so grpcurl, Postman, Insomnia and
 * grpcui find the services and every message, the event catalog included, with no .proto files.
 * Each stream sends a file's dependencies along with it, once.
 */
export function addReflection(router: ConnectRouter, services: readonly DescService[], extraFiles: () => readonly DescFile[]): void {
  const reflectionServices = [v1.ServerReflection, v1alpha.ServerReflection];
  // Rebuilt when the file list changes (types registered at runtime); the same array means no change.
  let indexed: { files: readonly DescFile[]; index: ReflectionIndex } | undefined;
  const currentIndex = () => {
    const files = extraFiles();
    if (indexed?.files !== files) indexed = { files, index: buildIndex([...services, ...reflectionServices], files) };
    return indexed.index;
  };
  for (const version of [v1, v1alpha] as Version[]) {
    router.service(version.ServerReflection as typeof v1.ServerReflection, {
      async *serverReflectionInfo(requests) {
        const sent = new Set<string>();
        for await (const request of requests) {
          yield answer(version, currentIndex(), request as v1.ServerReflectionRequest, sent) as v1.ServerReflectionResponse;
        }
      },
    });
  }
}

function answer(version: Version, index: ReflectionIndex, request: v1.ServerReflectionRequest, sent: Set<string>) {
  const response = (messageResponse: MessageInitShape<typeof v1.ServerReflectionResponseSchema>["messageResponse"]) =>
    create(version.ServerReflectionResponseSchema as typeof v1.ServerReflectionResponseSchema, { validHost: request.host, originalRequest: request, messageResponse });
  const files = (file: DescFile | undefined, what: string) =>
    file
      ? response({ case: "fileDescriptorResponse", value: { fileDescriptorProto: withDependencies(file, sent) } })
      : response({ case: "errorResponse", value: { errorCode: 5, errorMessage: `${what} not found` } });
  const r = request.messageRequest;
  switch (r.case) {
    case "listServices":
      return response({ case: "listServicesResponse", value: { service: index.services.map((name) => ({ name })) } });
    case "fileByFilename":
      return files(index.byFilename.get(r.value), `file "${r.value}"`);
    case "fileContainingSymbol":
      return files(index.bySymbol.get(r.value.replace(/^\./, "")), `symbol "${r.value}"`);
    case "fileContainingExtension":
      return files(index.byExtension.get(`${r.value.containingType}:${r.value.extensionNumber}`), `extension ${r.value.extensionNumber} of "${r.value.containingType}"`);
    case "allExtensionNumbersOfType": {
      const numbers = index.extensionNumbers.get(r.value);
      if (!numbers && !index.bySymbol.has(r.value)) return response({ case: "errorResponse", value: { errorCode: 5, errorMessage: `type "${r.value}" not found` } });
      return response({ case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: numbers ?? [] } });
    }
    default:
      return response({ case: "errorResponse", value: { errorCode: 3, errorMessage: "the request names no question" } });
  }
}

/** The file and each dependency this stream has not sent yet, dependencies first. */
function withDependencies(file: DescFile, sent: Set<string>): Uint8Array[] {
  const out: Uint8Array[] = [];
  const visit = (f: DescFile) => {
    if (sent.has(f.name)) return;
    sent.add(f.name);
    f.dependencies.forEach(visit);
    out.push(toBinary(FileDescriptorProtoSchema, f.proto));
  };
  visit(file);
  // The requested file always comes back, even if an earlier answer carried it.
  if (out.length === 0) out.push(toBinary(FileDescriptorProtoSchema, file.proto));
  return out;
}

function buildIndex(services: readonly DescService[], extraFiles: readonly DescFile[]): ReflectionIndex {
  const index: ReflectionIndex = { byFilename: new Map(), bySymbol: new Map(), byExtension: new Map(), extensionNumbers: new Map(), services: services.map((s) => s.typeName) };
  const addFile = (file: DescFile) => {
    // DescFile.name drops the ".proto"; clients ask by the real file name.
    if (index.byFilename.has(file.proto.name)) return;
    index.byFilename.set(file.proto.name, file);
    file.dependencies.forEach(addFile);
    const addMessage = (m: DescMessage) => {
      index.bySymbol.set(m.typeName, file);
      m.nestedMessages.forEach(addMessage);
      m.nestedEnums.forEach((e) => index.bySymbol.set(e.typeName, file));
      m.nestedExtensions.forEach((x) => addExtension(x.extendee.typeName, x.number));
    };
    const addExtension = (extendee: string, number: number) => {
      index.byExtension.set(`${extendee}:${number}`, file);
      index.extensionNumbers.set(extendee, [...(index.extensionNumbers.get(extendee) ?? []), number]);
    };
    file.messages.forEach(addMessage);
    file.enums.forEach((e) => index.bySymbol.set(e.typeName, file));
    file.extensions.forEach((x) => addExtension(x.extendee.typeName, x.number));
    for (const s of file.services) {
      index.bySymbol.set(s.typeName, file);
      s.methods.forEach((m) => index.bySymbol.set(`${s.typeName}.${m.name}`, file));
    }
  };
  services.forEach((s) => addFile(s.file));
  extraFiles.forEach(addFile);
  return index;
}
