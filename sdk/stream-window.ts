import type http2 from "node:http2";
import { type createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

/** What createGrpcTransport takes as its sessionManager (the type is not exported by name). */
type SessionManager = NonNullable<Parameters<typeof createGrpcTransport>[0]["sessionManager"]>;

/**
 * The receive window of the SDK's HTTP/2 connections: 16 MiB, as far as grpc-go grows its own.
 * Node's default is 64 KiB for the whole connection, shared by every stream on it: a client
 * holding many subscriptions then makes the server wait on flow control. With 100 Subscribe
 * streams on one connection at 1,000 events/s, publish-to-subscriber p50 was 35-140 ms with
 * Node's window and about 10 ms with this one (docs/PERFORMANCE.md).
 */
export const connectionWindowBytes = 16 * 1024 * 1024;

/**
 * Connect's HTTP/2 session manager (connection reuse, keep-alive pings, reconnects), with every
 * connection it opens given the wider receive window.
 */
export class WideWindowSessions implements SessionManager {
  readonly #inner: Http2SessionManager;
  readonly #widened = new WeakSet<http2.Http2Session>();

  constructor(baseUrl: string) {
    this.#inner = new Http2SessionManager(baseUrl);
  }

  get authority(): string {
    return this.#inner.authority;
  }

  async request(method: string, path: string, headers: http2.OutgoingHttpHeaders, options: Omit<http2.ClientSessionRequestOptions, "signal">): Promise<http2.ClientHttp2Stream> {
    const stream = await this.#inner.request(method, path, headers, options);
    const session = stream.session;
    if (session && !this.#widened.has(session)) {
      this.#widened.add(session);
      session.setLocalWindowSize(connectionWindowBytes);
    }
    return stream;
  }

  notifyResponseByteRead(stream: http2.ClientHttp2Stream): void {
    this.#inner.notifyResponseByteRead(stream);
  }
}
