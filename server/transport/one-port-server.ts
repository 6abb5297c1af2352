import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

/** The HTTP/2 connection preface; no HTTP/1.x request starts with its first four bytes. */
const preface = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
const sniffBytes = 4;

export interface OnePortServer {
  listen(port: number, host: string): Promise<number>;
  /** Stops accepting, lets in-flight requests finish for up to `graceMs`, then drops connections. */
  close(graceMs: number): Promise<void>;
}

/**
 * One cleartext port for HTTP/1.1 and HTTP/2 (h2c with prior knowledge, as gRPC clients use).
 * Node's `allowHTTP1` needs TLS, so a small front server reads the first bytes of each
 * connection and hands the socket to an http or an http2 server running the same handler.
 */
export interface OnePortServerOptions {
  /**
   * Offered every HTTP/2 stream first, with its headers: true when it answers the stream itself,
   * false (having touched nothing) to let `handler` have it as a request and a response.
   */
  takeStream?: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;
}

export function createOnePortServer(handler: Handler, options: OnePortServerOptions = {}): OnePortServer {
  // Requests in progress per HTTP/1.1 socket: sockets handed over with emit("connection") are
  // unknown to h1.closeIdleConnections(), so shutdown closes the idle ones itself.
  const busy = new Map<net.Socket, number>();
  let closing = false;
  const h1 = http.createServer((req, res) => {
    const socket = req.socket;
    busy.set(socket, (busy.get(socket) ?? 0) + 1);
    res.once("close", () => {
      const left = (busy.get(socket) ?? 1) - 1;
      busy.set(socket, left);
      if (left === 0 && closing) socket.end();
    });
    failPendingWriteOnClose(res);
    handler(req, res);
  });
  const h2 = http2.createServer({}, handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
  if (options.takeStream) offerStreamsFirst(h2, options.takeStream);
  const sessions = new Set<http2.ServerHttp2Session>();
  const sockets = new Set<net.Socket>();
  const http2Sockets = new WeakSet<net.Socket>();
  const isHttp2Socket = (socket: net.Socket) => http2Sockets.has(socket);
  h2.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });

  const front = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => {
      sockets.delete(socket);
      busy.delete(socket);
    });
    socket.on("error", () => socket.destroy());
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      if (head.length < sniffBytes && preface.subarray(0, head.length).equals(head)) return; // need more
      socket.off("data", onData);
      socket.pause();
      socket.unshift(head);
      const isHttp2 = head.length >= sniffBytes && head.subarray(0, sniffBytes).equals(preface.subarray(0, sniffBytes));
      if (isHttp2) http2Sockets.add(socket);
      (isHttp2 ? h2 : h1).emit("connection", socket);
      // http2 reads the unshifted preface from the buffer itself on its next tick; resuming
      // here would flush it as a 'data' event nobody listens to, and the session would fail.
      if (!isHttp2) socket.resume();
    };
    socket.on("data", onData);
  });

  return {
    listen(port, host) {
      return new Promise((resolve, reject) => {
        front.once("error", reject);
        front.listen(port, host, () => {
          front.off("error", reject);
          resolve((front.address() as net.AddressInfo).port);
        });
      });
    },
    async close(graceMs) {
      const closed = new Promise<void>((resolve) => front.close(() => resolve()));
      closing = true;
      for (const s of sessions) s.close(); // GOAWAY: finish open streams, accept no new ones
      // Idle keep-alive HTTP/1.1 sockets close now; busy ones after their last response.
      for (const socket of sockets) if ((busy.get(socket) ?? 0) === 0 && !isHttp2Socket(socket)) socket.end();
      const grace = setTimeout(() => {
        h1.closeAllConnections();
        for (const s of sessions) s.destroy();
        for (const s of sockets) s.destroy();
      }, graceMs);
      await closed;
      clearTimeout(grace);
    },
  };
}

/**
 * Puts `takeStream` before Node's HTTP/2 compatibility layer. That layer is the server's own
 * 'stream' listener, which http2.createServer adds along with a 'request' handler: it is taken
 * off and called for every stream that takeStream leaves, as it would have been.
 */
function offerStreamsFirst(h2: http2.Http2Server, takeStream: NonNullable<OnePortServerOptions["takeStream"]>): void {
  const compat = h2.listeners("stream") as Array<(...args: unknown[]) => void>;
  // Not the one listener this expects (another Node version's layout): leave the layer alone.
  if (compat.length !== 1) return;
  const toCompat = compat[0]!;
  h2.removeListener("stream", toCompat);
  h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
    if (!takeStream(stream, headers)) toCompat.call(h2, stream, headers, ...rest);
  });
}

/**
 * When an HTTP/1.1 client disconnects while a write waits for 'drain', the ServerResponse
 * emits 'close' but neither 'drain' nor 'error'. Connect's writer listens only for those two,
 * so a streaming handler would wait forever and its subscription would leak. Fail the pending
 * write instead; with no writer listening there is nothing to wake.
 */
function failPendingWriteOnClose(res: http.ServerResponse): void {
  res.once("close", () => {
    if (!res.writableFinished && res.listenerCount("error") > 0) {
      res.emit("error", Object.assign(new Error("the client closed the connection"), { code: "ECONNRESET" }));
    }
  });
}
