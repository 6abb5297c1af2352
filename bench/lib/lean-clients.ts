import http2 from "node:http2";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Pool } from "undici";
import { connectionWindowBytes } from "../../sdk/stream-window.js";

/**
 * Load generators that cost the bench process as little as possible, so that the server, not the
 * client, is what a scenario measures: requests are encoded once up front, and the calls go over
 * node:http2 (gRPC) and undici (Connect over HTTP/1.1) without a client framework. The SDK's
 * client spends most of a millisecond of CPU per call in Node; a Go or Rust client would not.
 */
export interface UnaryCaller {
  /** Sends one pre-encoded request on connection `worker % connections`; resolves with the response bytes. */
  call(worker: number, body: Uint8Array): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** gRPC unary calls: one HTTP/2 connection per client, length-prefixed messages, grpc-status in trailers. */
export function grpcCaller(baseUrl: string, path: string, connections: number, headers: Record<string, string> = {}): UnaryCaller {
  const sessions = Array.from({ length: connections }, () => http2.connect(baseUrl));
  for (const s of sessions) s.on("error", () => {});
  return {
    call(worker, body) {
      const frame = Buffer.allocUnsafe(5 + body.length);
      frame[0] = 0;
      frame.writeUInt32BE(body.length, 1);
      frame.set(body, 5);
      return new Promise((resolve, reject) => {
        const req = sessions[worker % sessions.length]!.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+proto", te: "trailers", ...headers });
        const chunks: Buffer[] = [];
        let status: string | undefined;
        let httpStatus = 0;
        req.on("response", (headers) => {
          httpStatus = Number(headers[":status"]);
          // A trailers-only answer (an error) carries grpc-status in the headers.
          if (headers["grpc-status"] !== undefined) status = String(headers["grpc-status"]);
        });
        req.on("trailers", (trailers) => (status = String(trailers["grpc-status"])));
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("error", reject);
        req.on("end", () => {
          if (httpStatus !== 200 || status !== "0") return reject(new Error(`gRPC call failed: HTTP ${httpStatus}, grpc-status ${status}`));
          const all = Buffer.concat(chunks);
          resolve(all.subarray(5, 5 + all.readUInt32BE(1)));
        });
        req.end(frame);
      });
    },
    async close() {
      await Promise.all(sessions.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}

/** Connect unary calls with binary bodies over HTTP/1.1: one keep-alive connection per client. */
export function connectCaller(baseUrl: string, path: string, connections: number, headers: Record<string, string> = {}): UnaryCaller {
  const pool = new Pool(baseUrl, { connections, pipelining: 1 });
  return {
    async call(_worker, body) {
      const res = await pool.request({ method: "POST", path, headers: { "content-type": "application/proto", "connect-protocol-version": "1", ...headers }, body });
      const bytes = new Uint8Array(await res.body.arrayBuffer());
      if (res.statusCode !== 200) throw new Error(`Connect call failed: HTTP ${res.statusCode}: ${Buffer.from(bytes).toString().slice(0, 200)}`);
      return bytes;
    },
    close: () => pool.close(),
  };
}

/**
 * An HTTP/2 connection for many server streams, with the receive window a gRPC client would
 * have: grpc-go grows its connection window to 16 MiB as the traffic needs. Node's default is
 * 64 KiB for the whole connection, which 100 Subscribe streams share: the server then waits on
 * flow control, and in the latency scenario p50 with 100 subscribers was 35-140 ms instead of
 * about 10 ms (single runs), with the server idle a third of the time.
 */
export function streamingSession(baseUrl: string): http2.ClientHttp2Session {
  const session = http2.connect(baseUrl);
  session.on("connect", () => session.setLocalWindowSize(connectionWindowBytes));
  return session;
}

/** A server stream opened by grpcServerStream. */
export interface ServerStream {
  /** Resolves when the stream ends (or fails: the error, not a rejection). */
  ended: Promise<Error | undefined>;
  cancel(): void;
}

/**
 * A gRPC server stream on `session`: `body` (an encoded request) is sent once, and every
 * message the server sends is handed to `onMessage` as it arrives, undecoded.
 */
export function grpcServerStream(session: http2.ClientHttp2Session, path: string, body: Uint8Array, onMessage: (message: Uint8Array) => void): ServerStream {
  const frame = Buffer.allocUnsafe(5 + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  const req = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+proto", te: "trailers" });
  let pending: Buffer = Buffer.alloc(0);
  req.on("data", (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 5) {
      const length = pending.readUInt32BE(1);
      if (pending.length < 5 + length) break;
      onMessage(pending.subarray(5, 5 + length));
      pending = pending.subarray(5 + length);
    }
  });
  let status: string | undefined;
  req.on("trailers", (t) => (status = String(t["grpc-status"])));
  const ended = new Promise<Error | undefined>((resolve) => {
    req.on("error", (err) => resolve(err));
    req.on("close", () => resolve(status === "0" || status === undefined ? undefined : new Error(`the stream ended with grpc-status ${status}`)));
  });
  req.end(frame);
  return { ended, cancel: () => req.close(http2.constants.NGHTTP2_CANCEL) };
}

/**
 * What a latency probe needs of a tidings.v1.SubscribeResponse, read straight off the wire: a
 * heartbeat, or an event with its attributes. Decoding the whole message (payload Struct,
 * timestamps) for 100 subscribers would make the bench process, not the server, the bottleneck.
 */
export function probeSubscribeResponse(bytes: Uint8Array): { heartbeat: true } | { heartbeat: false; attributes: Record<string, string> } | undefined {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [no, wireType] = r.tag();
    if (no === 2 && wireType === WireType.LengthDelimited) return (r.skip(wireType), { heartbeat: true });
    if (no !== 1 || wireType !== WireType.LengthDelimited) {
      r.skip(wireType);
      continue;
    }
    const event = new BinaryReader(r.bytes());
    const attributes: Record<string, string> = {};
    while (event.pos < event.len) {
      const [field, type] = event.tag();
      if (field !== 9 || type !== WireType.LengthDelimited) {
        event.skip(type);
        continue;
      }
      const entry = new BinaryReader(event.bytes());
      let key = "";
      let value = "";
      while (entry.pos < entry.len) {
        const [f, t] = entry.tag();
        if (f === 1) key = entry.string();
        else if (f === 2) value = entry.string();
        else entry.skip(t);
      }
      attributes[key] = value;
    }
    return { heartbeat: false, attributes };
  }
  return undefined;
}
