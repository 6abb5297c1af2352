/** Protobuf varints, for the hand-written encoders (struct-, event- and publish-response-encoding). */

/** The size of a varint of at most 32 bits. */
export function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5;
}

/** Writes a varint of at most 32 bits at `offset`; returns the end. */
export function writeVarint(n: number, out: Buffer, offset: number): number {
  while (n >= 0x80) {
    out[offset++] = (n & 0x7f) | 0x80;
    n >>>= 7;
  }
  out[offset++] = n;
  return offset;
}

/** The size of a varint of up to 64 bits (a negative int64 as its two's complement, from BigInt.asUintN). */
export function uint64Size(n: bigint): number {
  if (n < 0x80000000n) return varintSize(Number(n));
  let size = 1;
  while (n >= 0x80n) {
    n >>= 7n;
    size++;
  }
  return size;
}

export function writeUint64(n: bigint, out: Buffer, at: number): number {
  if (n < 0x80000000n) return writeVarint(Number(n), out, at);
  while (n >= 0x80n) {
    out[at++] = Number(n & 0x7fn) | 0x80;
    n >>= 7n;
  }
  out[at++] = Number(n);
  return at;
}
