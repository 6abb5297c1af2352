import { describe, expect, it } from "vitest";
import { signingSecrets, type SigningSecrets } from "../server/webhooks/signing-secrets.js";

/** Which secrets sign a delivery, as the time passes a rotation's grace period on one endpoint. */
describe("signingSecrets", () => {
  const at = (iso: string) => Date.parse(iso);

  it("signs with the previous secret until its grace period ends, then with the current one alone", () => {
    const endpoint: { secrets: { secret: string; expires_at: string | null }[]; signing?: SigningSecrets } = {
      secrets: [{ secret: "whsec_current", expires_at: null }, { secret: "whsec_previous", expires_at: "2026-12-06T12:00:00.000Z" }],
    };
    expect(signingSecrets(endpoint, at("2026-12-06T11:59:59.000Z"))).toEqual(["whsec_current", "whsec_previous"]);
    // Worked out once, kept until the expiry...
    expect(endpoint.signing?.until).toBe(at("2026-12-06T12:00:00.000Z"));
    expect(signingSecrets(endpoint, at("2026-12-06T11:59:59.999Z"))).toEqual(["whsec_current", "whsec_previous"]);
    // ...and not a millisecond past it.
    expect(signingSecrets(endpoint, at("2026-12-06T12:00:00.000Z"))).toEqual(["whsec_current"]);
    expect(endpoint.signing?.until).toBe(Number.POSITIVE_INFINITY);
    expect(signingSecrets(endpoint, at("2030-01-01T00:00:00.000Z"))).toEqual(["whsec_current"]);
  });

  it("leaves out secrets already expired, and an unreadable expiry, from the start", () => {
    const endpoint = { secrets: [{ secret: "a", expires_at: "2026-01-01T00:00:00Z" }, { secret: "b", expires_at: null }, { secret: "c", expires_at: "not a time" }] };
    expect(signingSecrets(endpoint, at("2026-12-06T00:00:00Z"))).toEqual(["b"]);
  });

  it("keeps the earliest expiry of several that are still to come", () => {
    const endpoint = { secrets: [{ secret: "a", expires_at: "2026-12-08T00:00:00Z" }, { secret: "b", expires_at: "2026-12-07T00:00:00Z" }, { secret: "c", expires_at: null }] } as { secrets: { secret: string; expires_at: string | null }[]; signing?: SigningSecrets };
    expect(signingSecrets(endpoint, at("2026-12-06T00:00:00Z"))).toEqual(["a", "b", "c"]);
    expect(signingSecrets(endpoint, at("2026-12-07T00:00:00Z"))).toEqual(["a", "c"]);
    expect(signingSecrets(endpoint, at("2026-12-08T00:00:00Z"))).toEqual(["c"]);
  });
});
