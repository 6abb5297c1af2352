import { type Timestamp, timestampDate, timestampMs } from "@bufbuild/protobuf/wkt";
import { invalidArgument } from "./errors.js";

/**
 * google.protobuf.Timestamp's documented range is 0001-01-01T00:00:00Z to
 * 9999-12-31T23:59:59.999999999Z, nanos from 0 to 999,999,999. The JSON form cannot say
 * anything else, but the binary form can carry any int64 of seconds: beyond JavaScript's dates
 * such a time became an Invalid Date, which PostgreSQL refused, so a Publish failed as
 * `internal`, and with it every other publish committed in the same group; and a year past
 * 9999 was stored, after which every read that returned it as JSON failed. Times are kept to
 * the millisecond (a JavaScript Date), rounded to the nearest: the range ends where rounding
 * would carry into the year 10000.
 */
const minSeconds = -62_135_596_800n;
const maxSeconds = 253_402_300_799n;
const maxMs = 253_402_300_799_999;

export const timestampRange = "must be a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z (nanos from 0 to 999,999,999)";

/** Whether a Timestamp is a time Tidings can store and give back in every encoding. */
export function isValidTimestamp(ts: Timestamp): boolean {
  return ts.seconds >= minSeconds && ts.seconds <= maxSeconds && ts.nanos >= 0 && ts.nanos <= 999_999_999 && timestampMs(ts) <= maxMs;
}

/** The Timestamp as a Date, or invalid_argument naming `field` if it is out of range. */
export function dateOf(ts: Timestamp, field: string): Date {
  if (!isValidTimestamp(ts)) throw invalidArgument(field, timestampRange);
  return timestampDate(ts);
}
