import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

/** The repository's proto/ directory. */
const protoRoot = fileURLToPath(new URL("../../proto", import.meta.url));

/**
 * Objects as @grpc/proto-loader shapes them with the options below: field names as in the
 * .proto, 64-bit integers as strings, enums as their names, defaults filled in, and the name
 * of the set member of each oneof in a virtual field named after the oneof.
 */
export type GrpcObject = Record<string, any>;

export type UnaryMethod = (
  request: GrpcObject,
  metadata: grpc.Metadata,
  options: Partial<grpc.CallOptions>,
  callback: (err: grpc.ServiceError | null, response?: GrpcObject) => void,
) => grpc.ClientUnaryCall;

/** The EventService client of @grpc/grpc-js, built at run time from the .proto files. */
export interface EventServiceGrpcClient extends grpc.Client {
  Publish: UnaryMethod;
  PublishBatch: UnaryMethod;
  GetEvent: UnaryMethod;
  ListEvents: UnaryMethod;
  ListEventTypes: UnaryMethod;
  GetEventType: UnaryMethod;
  Subscribe(request: GrpcObject, metadata?: grpc.Metadata, options?: Partial<grpc.CallOptions>): grpc.ClientReadableStream<GrpcObject>;
}

/** A plain @grpc/grpc-js client for EventService over cleartext HTTP/2 at `host:port`. */
export function createGrpcJsClient(address: string): EventServiceGrpcClient {
  const definition = protoLoader.loadSync("tidings/v1/event_service.proto", {
    includeDirs: [protoRoot],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const loaded = grpc.loadPackageDefinition(definition) as any;
  const EventService = loaded.tidings.v1.EventService as grpc.ServiceClientConstructor;
  return new EventService(address, grpc.credentials.createInsecure()) as unknown as EventServiceGrpcClient;
}

/** Calls a unary method and resolves with the response, or rejects with the grpc-js ServiceError. */
export function unary(method: UnaryMethod, client: grpc.Client, request: GrpcObject, timeoutMs = 10_000): Promise<GrpcObject> {
  return new Promise((resolve, reject) => {
    method.call(client, request, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, response) => {
      if (err) reject(err);
      else resolve(response!);
    });
  });
}

/**
 * Buffers the messages of a server stream so a test can await them one at a time; also
 * records how the stream ended (grpc-js reports a cancelled call as an error event).
 */
export class StreamReader<T> {
  private readonly buffered: T[] = [];
  private waiter: (() => void) | undefined;
  /** The final status, once the stream has ended. */
  status: grpc.StatusObject | undefined;
  /** The error the call ended with, if any (a cancelled call ends with CANCELLED). */
  error: grpc.ServiceError | undefined;
  readonly ended: Promise<void>;

  constructor(readonly call: grpc.ClientReadableStream<T>) {
    call.on("data", (message: T) => {
      this.buffered.push(message);
      this.wake();
    });
    call.on("error", (err: grpc.ServiceError) => {
      this.error = err;
      this.wake();
    });
    this.ended = new Promise((resolve) => {
      call.on("status", (status: grpc.StatusObject) => {
        this.status = status;
        this.wake();
        resolve();
      });
    });
  }

  private wake() {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** The next message, waiting up to `timeoutMs` for it. */
  async next(timeoutMs = 10_000, what = "a stream message"): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const message = this.buffered.shift();
      if (message !== undefined) return message;
      if (this.error || this.status) throw new Error(`stream ended while waiting for ${what}: ${this.error?.message ?? this.status?.details}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
  }
}
