import http2 from "node:http2";
import { Pool } from "undici";

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
export function grpcCaller(baseUrl: string, path: string, connections: number): UnaryCaller {
  const sessions = Array.from({ length: connections }, () => http2.connect(baseUrl));
  for (const s of sessions) s.on("error", () => {});
  return {
    call(worker, body) {
      const frame = Buffer.allocUnsafe(5 + body.length);
      frame[0] = 0;
      frame.writeUInt32BE(body.length, 1);
      frame.set(body, 5);
      return new Promise((resolve, reject) => {
        const req = sessions[worker % sessions.length]!.request({ ":method": "POST", ":path": path, "content-type": "application/grpc+proto", te: "trailers" });
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
export function connectCaller(baseUrl: string, path: string, connections: number): UnaryCaller {
  const pool = new Pool(baseUrl, { connections, pipelining: 1 });
  return {
    async call(_worker, body) {
      const res = await pool.request({ method: "POST", path, headers: { "content-type": "application/proto", "connect-protocol-version": "1" }, body });
      const bytes = new Uint8Array(await res.body.arrayBuffer());
      if (res.statusCode !== 200) throw new Error(`Connect call failed: HTTP ${res.statusCode}: ${Buffer.from(bytes).toString().slice(0, 200)}`);
      return bytes;
    },
    close: () => pool.close(),
  };
}
