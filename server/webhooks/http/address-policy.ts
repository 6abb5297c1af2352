import net from "node:net";

/**
 * Decides which IP addresses webhook deliveries may connect to. Endpoint URLs come from users,
 * so without this a webhook could reach the server's own loopback services, the private network
 * or the cloud metadata endpoint (SSRF). Everything that is not public unicast is refused unless
 * the operator allow-lists it.
 */
export interface AddressPolicy {
  isAllowed(ip: string): boolean;
  /** Why `ip` is refused or allowed, for error messages: "127.0.0.1 is a loopback address". */
  describe(ip: string): string;
}

const loopback = ["127.0.0.0/8", "::1/128"];
const privateNetworks = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"];
const linkLocal = ["169.254.0.0/16", "fe80::/10"];

/** Allow-list keywords, so operators need not spell out the ranges. */
const keywords: Readonly<Record<string, readonly string[]>> = {
  loopback,
  private: [...loopback, ...privateNetworks, ...linkLocal],
};

/**
 * Blocked ranges with the reason given for them. Order matters only for the message: the first
 * match names the reason, so the specific ranges (metadata, broadcast) come before their parents.
 */
const blockedRanges: readonly { reason: string; cidrs: readonly string[] }[] = [
  { reason: "a cloud metadata address", cidrs: ["169.254.169.254/32", "fd00:ec2::254/128"] },
  { reason: "a loopback address", cidrs: loopback },
  { reason: "an unspecified address", cidrs: ["0.0.0.0/8", "::/128"] },
  { reason: "a private address", cidrs: privateNetworks },
  { reason: "a link-local address", cidrs: [...linkLocal, "fec0::/10" /* deprecated site-local */] },
  { reason: "a carrier-grade NAT address", cidrs: ["100.64.0.0/10"] },
  { reason: "the broadcast address", cidrs: ["255.255.255.255/32"] },
  { reason: "a multicast address", cidrs: ["224.0.0.0/4", "ff00::/8"] },
  { reason: "a benchmarking address", cidrs: ["198.18.0.0/15", "2001:2::/48"] },
  {
    reason: "a documentation address",
    cidrs: ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"],
  },
  {
    reason: "a reserved address",
    cidrs: [
      "240.0.0.0/4",
      "192.0.0.0/24", // IETF protocol assignments
      "192.88.99.0/24", // deprecated 6to4 relay anycast
      "::/96", // deprecated IPv4-compatible IPv6
      "64:ff9b:1::/48", // local-use NAT64: translates into the operator's own network
      "100::/64", // discard-only
      "2001::/23", // IETF protocol assignments, including Teredo
    ],
  },
];

const blockedLists = blockedRanges.map(({ reason, cidrs }) => ({ reason, list: blockListOf(cidrs) }));

/**
 * `allowList` entries are CIDRs ("10.0.0.0/8"), single addresses, or the keywords `loopback` and
 * `private` (private, loopback and link-local ranges). Throws on an invalid entry, naming it.
 */
export function createAddressPolicy(allowList: readonly string[]): AddressPolicy {
  const allowed = new net.BlockList();
  for (const entry of allowList) addAllowListEntry(allowed, entry);
  // An allow-listed IPv4 address is also allowed in its IPv6 forms (::ffff:10.0.0.5).
  const isAllowListed = ({ ip, embeddedIPv4 }: Address) =>
    allowed.check(ip, familyOf(ip)) || (embeddedIPv4 !== undefined && allowed.check(embeddedIPv4, "ipv4"));

  return {
    isAllowed(ip) {
      const address = parseAddress(ip);
      return address !== undefined && (isAllowListed(address) || blockedReason(address) === undefined);
    },
    describe(ip) {
      const address = parseAddress(ip);
      if (address === undefined) return `${JSON.stringify(ip)} is not an IP address`;
      if (isAllowListed(address)) return `${ip} is on the allow-list`;
      return `${ip} ${blockedReason(address) ?? "is a public address"}`;
    },
  };
}

interface Address {
  ip: string;
  /** The IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4): the one really reached. */
  embeddedIPv4?: string;
}

/** "is a loopback address", "embeds 127.0.0.1, a loopback address", or undefined if public. */
function blockedReason({ ip, embeddedIPv4 }: Address): string | undefined {
  if (embeddedIPv4 !== undefined) {
    const reason = rangeReason(embeddedIPv4);
    if (reason !== undefined) return `embeds ${embeddedIPv4}, ${reason}`;
  }
  const reason = rangeReason(ip);
  return reason === undefined ? undefined : `is ${reason}`;
}

function rangeReason(ip: string): string | undefined {
  const family = familyOf(ip);
  return blockedLists.find(({ list }) => list.check(ip, family))?.reason;
}

/** Undefined for anything that is not an IP address, so the policy fails closed. */
function parseAddress(input: string): Address | undefined {
  const ip = input.split("%")[0] ?? ""; // a zone ("fe80::1%eth0") does not change the range
  const version = net.isIP(ip);
  if (version === 0) return undefined;
  return version === 4 ? { ip } : { ip, embeddedIPv4: embeddedIPv4Of(ipv6Groups(ip)) };
}

function embeddedIPv4Of(g: readonly number[]): string | undefined {
  const zero = (from: number, to: number) => g.slice(from, to).every((x) => x === 0);
  const last32 = () => ipv4Of(g[6] ?? 0, g[7] ?? 0);
  if (zero(0, 5) && g[5] === 0xffff) return last32(); // ::ffff:a.b.c.d, IPv4-mapped
  if (zero(0, 4) && g[4] === 0xffff && g[5] === 0) return last32(); // ::ffff:0:a.b.c.d, IPv4-translated
  if (g[0] === 0x64 && g[1] === 0xff9b && zero(2, 6)) return last32(); // 64:ff9b::a.b.c.d, NAT64
  if (g[0] === 0x2002) return ipv4Of(g[1] ?? 0, g[2] ?? 0); // 2002:AABB:CCDD::, 6to4
  return undefined;
}

/** The eight 16-bit groups of a valid IPv6 address, "::" and a dotted IPv4 tail expanded. */
function ipv6Groups(ip: string): number[] {
  const hex = ip.replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)$/, (_, a, b, c, d) => `${((+a << 8) | +b).toString(16)}:${((+c << 8) | +d).toString(16)}`);
  const [head = "", tail] = hex.split("::");
  const groups = (part: string) => (part === "" ? [] : part.split(":").map((g) => parseInt(g, 16)));
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  return [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
}

function ipv4Of(high: number, low: number): string {
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join(".");
}

function familyOf(ip: string): net.IPVersion {
  return net.isIPv4(ip) ? "ipv4" : "ipv6";
}

function blockListOf(cidrs: readonly string[]): net.BlockList {
  const list = new net.BlockList();
  for (const cidr of cidrs) addAllowListEntry(list, cidr);
  return list;
}

function addAllowListEntry(list: net.BlockList, rawEntry: string): void {
  const entry = rawEntry.trim();
  const keyword = keywords[entry.toLowerCase()];
  if (keyword !== undefined) {
    for (const cidr of keyword) addAllowListEntry(list, cidr);
    return;
  }
  const [ip = "", prefix, ...rest] = entry.split("/");
  if (net.isIP(ip) === 0 || ip.includes("%") || rest.length > 0) throw invalidEntry(rawEntry);
  const family = familyOf(ip);
  if (prefix === undefined) {
    list.addAddress(ip, family);
    return;
  }
  const maxPrefix = family === "ipv4" ? 32 : 128;
  if (!/^\d{1,3}$/.test(prefix) || Number(prefix) > maxPrefix) throw invalidEntry(rawEntry);
  list.addSubnet(ip, Number(prefix), family);
}

function invalidEntry(entry: string): Error {
  return new Error(
    `invalid webhook address allow-list entry ${JSON.stringify(entry)}: expected an IP address, a CIDR such as "10.0.0.0/8", or "loopback" or "private"`,
  );
}
