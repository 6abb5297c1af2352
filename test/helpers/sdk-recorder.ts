import http from "node:http";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { createServer as createNetServer } from "node:net";

/** One request a recorder saw. */
export interface RecordedRequest {
  path: string;
  headers: Record<string, string | string[] | undefined>;
}

export interface Recorder {
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * A stand-in server that records each request's headers and then either refuses it at once
 * (`unauthenticated`, in the shape of the protocol) or never answers (`hang`). `http2: true`
 * serves cleartext HTTP/2 (what the gRPC transport speaks); otherwise HTTP/1.1.
 */
export async function startRecorder(options: { http2: boolean; mode: "refuse" | "hang" }): Promise<Recorder> {
  const requests: RecordedRequest[] = [];
  if (options.http2) {
    const server = http2.createServer();
    const sessions = new Set<http2.ServerHttp2Session>();
    server.on("session", (s) => {
      sessions.add(s);
      s.on("close", () => sessions.delete(s));
      s.on("error", () => undefined);
    });
    server.on("stream", (stream, headers) => {
      stream.on("error", () => undefined);
      requests.push({ path: String(headers[":path"]), headers: { ...headers } });
      if (options.mode === "hang") return;
      // Trailers-only gRPC response: status 16 (unauthenticated).
      stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "16", "grpc-message": "recorded" }, { endStream: true });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      requests,
      close: () =>
        new Promise<void>((resolve) => {
          for (const s of sessions) s.destroy();
          server.close(() => resolve());
        }),
    };
  }
  const server = http.createServer((req, res) => {
    requests.push({ path: req.url ?? "", headers: { ...req.headers } });
    req.resume();
    if (options.mode === "hang") return;
    res.writeHead(401, { "content-type": "application/json" });
    res.end(JSON.stringify({ code: "unauthenticated", message: "recorded" }));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A port that was free a moment ago: listen on port 0, note the port, close. */
export async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((resolve, reject) => {
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = s.address() as AddressInfo;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
