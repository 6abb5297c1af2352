/**
 * The Tidings client for browsers (and any fetch runtime): Connect and gRPC-Web over fetch,
 * no Node built-ins. gRPC needs HTTP/2 trailers, which browsers cannot read; use "connect".
 */
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";
import { type ClientOptions, TidingsClient, type TransportFactory } from "./client.js";

export * from "./client.js";
export * from "./catalog.js";

const fetchTransports: TransportFactory = (kind, baseUrl, interceptors) => {
  if (kind === "grpc") throw new Error('the "grpc" transport needs HTTP/2 trailers, which browsers cannot read: use "connect" or "grpc-web"');
  return kind === "grpc-web"
    ? createGrpcWebTransport({ baseUrl, useBinaryFormat: true, interceptors })
    : createConnectTransport({ baseUrl, useBinaryFormat: true, interceptors });
};

/** A client over fetch: `createClient({ baseUrl: "https://events.example.com" })`. */
export function createClient(options: ClientOptions): TidingsClient {
  return new TidingsClient(options, fetchTransports);
}
