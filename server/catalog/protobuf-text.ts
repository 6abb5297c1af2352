/**
 * Whether the UTF-8 text in buf[start, end) starts with U+FEFF (EF BB BF). protobuf-es decodes
 * strings with a TextDecoder that drops a leading one, so fromBinary's string differs from the
 * bytes: the hand-written decoders leave such text to fromBinary.
 */
export function startsWithBom(buf: Uint8Array, start: number, end: number): boolean {
  return end - start >= 3 && buf[start] === 0xef && buf[start + 1] === 0xbb && buf[start + 2] === 0xbf;
}
