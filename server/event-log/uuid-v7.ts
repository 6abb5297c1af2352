import { randomFillSync } from "node:crypto";

const pool = Buffer.alloc(16 * 256);
let offset = pool.length;

/** The UUID's text is written here as ASCII and read out as one string. */
const text = Buffer.alloc(36);
/** Where each of the 16 bytes' two hex digits go in the text, around its four dashes. */
const textAt = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
/** Both hex digits of every byte value, as character codes. */
const hexHigh = new Uint8Array(256);
const hexLow = new Uint8Array(256);
for (let i = 0; i < 256; i++) {
  const digits = i.toString(16).padStart(2, "0");
  hexHigh[i] = digits.charCodeAt(0);
  hexLow[i] = digits.charCodeAt(1);
}
text.write("-", 8);
text.write("-", 13);
text.write("-", 18);
text.write("-", 23);

/**
 * A time-ordered UUID (RFC 9562 version 7): ids sort by creation and index well. Made for every
 * event and every delivery; written digit by digit into one reused buffer, it allocates only
 * its string (a copy, a hex string and five slices of it had been 4% of what a webhook backlog
 * allocated).
 */
export function uuidV7(now = Date.now()): string {
  if (offset + 16 > pool.length) {
    randomFillSync(pool);
    offset = 0;
  }
  const at = offset;
  offset += 16;
  let ms = now;
  for (let i = 5; i >= 0; i--) {
    pool[at + i] = ms % 256;
    ms = Math.floor(ms / 256);
  }
  pool[at + 6] = (pool[at + 6]! & 0x0f) | 0x70;
  pool[at + 8] = (pool[at + 8]! & 0x3f) | 0x80;
  for (let i = 0; i < 16; i++) {
    const byte = pool[at + i]!;
    text[textAt[i]!] = hexHigh[byte]!;
    text[textAt[i]! + 1] = hexLow[byte]!;
  }
  return text.toString("latin1", 0, 36);
}
