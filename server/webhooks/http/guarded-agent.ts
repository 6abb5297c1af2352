import dns from "node:dns";
import net from "node:net";
import { Agent, buildConnector, errors } from "undici";
import type { AddressPolicy } from "./address-policy.js";

/** A webhook endpoint resolved to an address the policy forbids; no connection was made. */
export class AddressRefusedError extends Error {
  readonly code = "ERR_TIDINGS_ADDRESS_REFUSED";
  readonly host: string;
  readonly address: string;

  constructor(host: string, address: string, reason: string) {
    super(`refused to connect to ${host}: ${reason}`);
    this.name = "AddressRefusedError";
    this.host = host;
    this.address = address;
  }
}

export interface GuardedAgentOptions {
  policy: AddressPolicy;
  /** Most sockets per origin; undici's default is unlimited. */
  connections?: number;
  /** Idle keep-alive sockets close after this; undici's default is 4 s. */
  keepAliveTimeoutMs?: number;
  /** Bounds the DNS lookup and, separately, the TCP/TLS handshake; 10 s by default. */
  connectTimeoutMs?: number;
  /** Injected in tests to answer for made-up hosts; `dns.lookup` otherwise. */
  lookup?: typeof dns.lookup;
}

const defaultConnectTimeoutMs = 10_000;

/**
 * An undici Agent that resolves each host itself, refuses the connection if any resolved
 * address is forbidden by the policy, and connects to the checked address rather than the
 * host name. Checking and connecting by name separately would resolve twice, and a hostile DNS
 * server could answer a public address to the check and 127.0.0.1 to the connect (rebinding).
 */
export function createGuardedAgent(options: GuardedAgentOptions): Agent {
  const timeoutMs = options.connectTimeoutMs ?? defaultConnectTimeoutMs;
  const resolve = (hostname: string) => resolveAllowed(hostname, options.policy, options.lookup ?? dns.lookup, timeoutMs);
  return new Agent({
    connect: guardConnector(buildConnector({ timeout: timeoutMs }), resolve),
    connections: options.connections,
    keepAliveTimeout: options.keepAliveTimeoutMs,
  });
}

function guardConnector(connect: buildConnector.connector, resolve: (hostname: string) => Promise<string[]>): buildConnector.connector {
  return (opts, callback) => {
    resolve(opts.hostname).then(
      (addresses) => {
        // The certificate and SNI are still those of the host name, not of the address.
        const servername = opts.servername || (net.isIP(opts.hostname) ? undefined : opts.hostname);
        connectToFirst(connect, { ...opts, servername }, addresses, callback);
      },
      (err: Error) => callback(err, null),
    );
  };
}

/** Every address is checked, not just the first: the socket may fall back to any of them. */
async function resolveAllowed(hostname: string, policy: AddressPolicy, lookup: typeof dns.lookup, timeoutMs: number): Promise<string[]> {
  const addresses = net.isIP(hostname) ? [hostname] : await lookupAll(lookup, hostname, timeoutMs);
  const refused = addresses.find((address) => !policy.isAllowed(address));
  if (refused !== undefined) throw new AddressRefusedError(hostname, refused, policy.describe(refused));
  return addresses;
}

/** undici's own connect timeout covers the lookup too, since net.connect resolves; so does this. */
function lookupAll(lookup: typeof dns.lookup, hostname: string, timeoutMs: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new errors.ConnectTimeoutError(`DNS lookup of ${hostname} timed out after ${timeoutMs} ms`)), timeoutMs);
    const settle = (err: Error | null, results: dns.LookupAddress[]) => {
      clearTimeout(timer);
      if (err) reject(err);
      else if (results.length === 0) reject(Object.assign(new Error(`${hostname} resolved to no address`), { code: "ENOTFOUND" }));
      else resolve(results.map((result) => result.address));
    };
    try {
      lookup(hostname, { all: true }, settle);
    } catch (err) {
      settle(err as Error, []);
    }
  });
}

/**
 * Tries the checked addresses in DNS order, moving on only when one is plainly unreachable
 * (an IPv6 answer on a host without IPv6, say). Those fail fast; a timeout does not move on,
 * so a connect takes at most one connect timeout.
 */
function connectToFirst(
  connect: buildConnector.connector,
  opts: buildConnector.Options,
  addresses: readonly string[],
  callback: buildConnector.Callback,
): void {
  const [address, ...rest] = addresses;
  connect({ ...opts, hostname: address ?? "" }, (...result) => {
    const [err] = result;
    if (err !== null && rest.length > 0 && isUnreachable(err)) connectToFirst(connect, opts, rest, callback);
    else callback(...result);
  });
}

const unreachableCodes = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EADDRNOTAVAIL", "EAFNOSUPPORT"]);

function isUnreachable(err: Error): boolean {
  return unreachableCodes.has((err as NodeJS.ErrnoException).code ?? "");
}
