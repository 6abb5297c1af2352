import http from "node:http";
import type dns from "node:dns";
import net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { request, type Agent } from "undici";
import { createAddressPolicy, type AddressPolicy } from "../server/webhooks/http/address-policy.js";
import { AddressRefusedError, createGuardedAgent } from "../server/webhooks/http/guarded-agent.js";

describe("the webhook address policy", () => {
  const strict = createAddressPolicy([]);

  it.each([
    ["127.0.0.1", "a loopback address"],
    ["127.255.0.9", "a loopback address"],
    ["::1", "a loopback address"],
    ["0.0.0.0", "an unspecified address"],
    ["0.1.2.3", "an unspecified address"],
    ["::", "an unspecified address"],
    ["10.1.2.3", "a private address"],
    ["172.16.0.1", "a private address"],
    ["172.31.255.255", "a private address"],
    ["192.168.1.1", "a private address"],
    ["fc00::1", "a private address"],
    ["fd12:3456::1", "a private address"],
    ["169.254.1.1", "a link-local address"],
    ["fe80::1", "a link-local address"],
    ["fe80::1%eth0", "a link-local address"],
    ["169.254.169.254", "a cloud metadata address"],
    ["fd00:ec2::254", "a cloud metadata address"],
    ["100.64.0.1", "a carrier-grade NAT address"],
    ["100.127.255.254", "a carrier-grade NAT address"],
    ["224.0.0.1", "a multicast address"],
    ["239.255.255.250", "a multicast address"],
    ["ff02::1", "a multicast address"],
    ["255.255.255.255", "the broadcast address"],
    ["240.0.0.1", "a reserved address"],
    ["198.18.0.1", "a benchmarking address"],
    ["198.19.255.1", "a benchmarking address"],
    ["192.0.2.1", "a documentation address"],
    ["2001:db8::1", "a documentation address"],
  ])("refuses %s as %s", (ip, reason) => {
    expect(strict.isAllowed(ip)).toBe(false);
    expect(strict.describe(ip)).toBe(`${ip} is ${reason}`);
  });

  it.each([
    ["::ffff:127.0.0.1", "127.0.0.1, a loopback address"],
    ["::ffff:7f00:1", "127.0.0.1, a loopback address"], // how the WHATWG URL parser writes it
    ["::ffff:169.254.169.254", "169.254.169.254, a cloud metadata address"],
    ["::ffff:10.0.0.1", "10.0.0.1, a private address"],
    ["64:ff9b::a9fe:a9fe", "169.254.169.254, a cloud metadata address"],
    ["64:ff9b::127.0.0.1", "127.0.0.1, a loopback address"],
    ["2002:7f00:1::", "127.0.0.1, a loopback address"], // 6to4
  ])("looks inside %s at the IPv4 address it stands for", (ip, embedded) => {
    expect(strict.isAllowed(ip)).toBe(false);
    expect(strict.describe(ip)).toBe(`${ip} embeds ${embedded}`);
  });

  it.each(["8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])(
    "allows the public address %s",
    (ip) => {
      expect(strict.isAllowed(ip)).toBe(true);
      expect(strict.describe(ip)).toBe(`${ip} is a public address`);
    },
  );

  it("refuses what is not an IP address, failing closed", () => {
    for (const input of ["", "localhost", "127.1", "1.2.3.04", "::ffff:1.2.3"]) expect(strict.isAllowed(input)).toBe(false);
    expect(strict.describe("localhost")).toBe('"localhost" is not an IP address');
  });

  it("allows allow-listed addresses by CIDR, single address and keyword", () => {
    const byCidr = createAddressPolicy(["10.20.0.0/16", "fd00::/8"]);
    expect(byCidr.isAllowed("10.20.3.4")).toBe(true);
    expect(byCidr.isAllowed("::ffff:10.20.3.4")).toBe(true);
    expect(byCidr.isAllowed("fd00::5")).toBe(true);
    expect(byCidr.isAllowed("10.21.0.1")).toBe(false);
    expect(byCidr.describe("10.20.3.4")).toBe("10.20.3.4 is on the allow-list");

    const single = createAddressPolicy(["192.168.1.10", "::1/128"]);
    expect(single.isAllowed("192.168.1.10")).toBe(true);
    expect(single.isAllowed("192.168.1.11")).toBe(false);
    expect(single.isAllowed("::1")).toBe(true);

    const loopback = createAddressPolicy(["loopback"]);
    expect(["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"].map((ip) => loopback.isAllowed(ip))).toEqual([true, true, true, true]);
    expect(["10.0.0.1", "169.254.169.254", "0.0.0.0"].map((ip) => loopback.isAllowed(ip))).toEqual([false, false, false]);

    const lan = createAddressPolicy(["private"]);
    expect(["127.0.0.1", "10.0.0.1", "172.20.0.1", "192.168.0.1", "fd00::1", "fe80::1", "169.254.1.1"].every((ip) => lan.isAllowed(ip))).toBe(true);
    expect(["100.64.0.1", "224.0.0.1", "0.0.0.0"].some((ip) => lan.isAllowed(ip))).toBe(false);
  });

  it.each(["10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/8/8", "10.0.0.0/x", "10.0.0", "localhost", "fe80::1%eth0", "everything", ""])(
    "rejects the allow-list entry %j, naming it",
    (entry) => {
      expect(() => createAddressPolicy(["loopback", entry])).toThrow(`allow-list entry ${JSON.stringify(entry)}`);
    },
  );
});

describe("the guarded webhook agent", () => {
  let server: http.Server;
  let port: number;
  let requests = 0;
  const agents: Agent[] = [];

  beforeAll(async () => {
    server = http.createServer((req, res) => {
      requests++;
      res.end(req.socket.localAddress);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    port = (server.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    await Promise.all(agents.map((agent) => agent.close()));
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  /** Every agent short on time, so a broken guard fails the test instead of hanging it. */
  function agentWith(policy: AddressPolicy, lookup?: typeof dns.lookup): Agent {
    const agent = createGuardedAgent({ policy, lookup, connectTimeoutMs: 2_000, connections: 2 });
    agents.push(agent);
    return agent;
  }

  function get(url: string, dispatcher: Agent, reset = false) {
    return request(url, { dispatcher, reset, headersTimeout: 5_000, bodyTimeout: 5_000 });
  }

  /** A resolver for made-up hosts that answers from a script, one answer per call. */
  function scriptedLookup(host: string, answers: readonly (readonly string[])[]) {
    const calls: string[] = [];
    const lookup = (hostname: string, options: dns.LookupAllOptions, callback: (err: Error | null, addresses: dns.LookupAddress[]) => void) => {
      calls.push(hostname);
      const answer = answers[Math.min(calls.length, answers.length) - 1] ?? [];
      setImmediate(() => {
        if (hostname !== host || options.all !== true) callback(Object.assign(new Error(`unexpected lookup of ${hostname}`), { code: "ENOTFOUND" }), []);
        else callback(null, answer.map((address) => ({ address, family: net.isIP(address) })));
      });
    };
    return { lookup: lookup as unknown as typeof dns.lookup, calls };
  }

  async function expectRefused(promise: Promise<unknown>, host: string, address: string, reason: string) {
    const err = await promise.then(
      () => expect.fail("the request went through"),
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AddressRefusedError);
    expect(err).toMatchObject({ code: "ERR_TIDINGS_ADDRESS_REFUSED", host, address, message: `refused to connect to ${host}: ${address} is ${reason}` });
  }

  it("refuses a loopback endpoint, and the server never hears of it", { timeout: 10_000 }, async () => {
    const before = requests;
    const agent = agentWith(createAddressPolicy([]));
    await expectRefused(get(`http://127.0.0.1:${port}/`, agent), "127.0.0.1", "127.0.0.1", "a loopback address");
    await expectRefused(get(`http://localhost:${port}/`, agent), "localhost", "127.0.0.1", "a loopback address");
    await expectRefused(get(`http://[::1]:${port}/`, agent), "::1", "::1", "a loopback address");
    await expect(get(`http://[::ffff:127.0.0.1]:${port}/`, agent)).rejects.toMatchObject({ code: "ERR_TIDINGS_ADDRESS_REFUSED" });
    expect(requests).toBe(before);
  });

  it("delivers to loopback once the operator allow-lists it", { timeout: 10_000 }, async () => {
    const agent = agentWith(createAddressPolicy(["loopback"]));
    for (const host of ["127.0.0.1", "localhost"]) {
      const res = await get(`http://${host}:${port}/`, agent);
      expect(res.statusCode).toBe(200);
      expect(await res.body.text()).toBe("127.0.0.1");
    }
  });

  it("refuses a host name that resolves to a loopback address", { timeout: 10_000 }, async () => {
    const before = requests;
    const { lookup, calls } = scriptedLookup("rebind.test", [["127.0.0.1"]]);
    await expectRefused(get(`http://rebind.test:${port}/`, agentWith(createAddressPolicy([]), lookup)), "rebind.test", "127.0.0.1", "a loopback address");
    expect(calls).toEqual(["rebind.test"]);
    expect(requests).toBe(before);
  });

  it("refuses a host name when any of its addresses is forbidden, whatever the order", { timeout: 10_000 }, async () => {
    const before = requests;
    for (const answer of [["93.184.216.34", "127.0.0.1"], ["127.0.0.1", "93.184.216.34"], ["2606:2800:220:1::1", "169.254.169.254"]]) {
      const { lookup } = scriptedLookup("rebind.test", [answer]);
      const forbidden = answer.find((ip) => ip === "127.0.0.1" || ip === "169.254.169.254") ?? "";
      const reason = forbidden === "127.0.0.1" ? "a loopback address" : "a cloud metadata address";
      await expectRefused(get(`http://rebind.test:${port}/`, agentWith(createAddressPolicy([]), lookup)), "rebind.test", forbidden, reason);
    }
    expect(requests).toBe(before);
  });

  it("connects to the address it checked, so a DNS answer that changes afterwards cannot redirect it", { timeout: 10_000 }, async () => {
    // 127.0.0.1 stands in for the approved public address (no test connects outside this
    // machine); the rebinding answer, 127.0.0.2, is a loopback address the policy forbids.
    const { lookup, calls } = scriptedLookup("rebind.test", [["127.0.0.1"], ["127.0.0.2"]]);
    const agent = agentWith(createAddressPolicy(["127.0.0.1/32"]), lookup);

    const first = await get(`http://rebind.test:${port}/`, agent, true);
    expect(first.statusCode).toBe(200); // "rebind.test" exists for no resolver but ours: the socket went to the checked IP
    expect(await first.body.text()).toBe("127.0.0.1");
    expect(calls).toHaveLength(1); // nobody resolved the name again to connect

    const before = requests;
    await expectRefused(get(`http://rebind.test:${port}/`, agent), "rebind.test", "127.0.0.2", "a loopback address");
    expect(calls).toHaveLength(2);
    expect(requests).toBe(before);
  });

  it("moves on to the next checked address when one is unreachable", { timeout: 10_000 }, async () => {
    // Nothing listens on 127.0.0.2 at this port, so that connect is refused at once.
    const { lookup } = scriptedLookup("dual.test", [["127.0.0.2", "127.0.0.1"]]);
    const res = await get(`http://dual.test:${port}/`, agentWith(createAddressPolicy(["loopback"]), lookup));
    expect(res.statusCode).toBe(200);
    expect(await res.body.text()).toBe("127.0.0.1");
  });

  it("gives up on a DNS lookup that never answers", { timeout: 10_000 }, async () => {
    const silent = (() => undefined) as unknown as typeof dns.lookup;
    const agent = createGuardedAgent({ policy: createAddressPolicy([]), lookup: silent, connectTimeoutMs: 200 });
    agents.push(agent);
    const started = Date.now();
    await expect(get("http://silent.test/", agent)).rejects.toMatchObject({ code: "UND_ERR_CONNECT_TIMEOUT" });
    expect(Date.now() - started).toBeLessThan(2_000);
  });
});
