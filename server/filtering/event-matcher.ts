import type { EventFilter, FilterInput } from "./cel-filter.js";
import type { TypePattern } from "./type-pattern.js";

/** The three filters of a subscription, cheapest first. */
export interface EventMatcher {
  /**
   * The type patterns, for the reader to push into SQL as the types they select when it reads
   * (the catalog can grow while a subscription runs); undefined = every type.
   */
  patterns: readonly TypePattern[] | undefined;
  /** Attribute equality, also pushed into SQL. */
  attributes: Record<string, string>;
  matches(event: FilterInput): boolean;
}

/** Remembered pattern answers per type name; the catalog is small, this only guards against abuse. */
const maxRememberedTypes = 10_000;

export function createEventMatcher(
  patterns: readonly TypePattern[],
  attributes: Record<string, string>,
  filter: EventFilter | undefined,
): EventMatcher {
  const selected = new Map<string, boolean>();
  const typeMatches = (type: string): boolean => {
    let match = selected.get(type);
    if (match === undefined) {
      match = patterns.some((p) => p.matches(type));
      if (selected.size < maxRememberedTypes) selected.set(type, match);
    }
    return match;
  };
  const attributeEntries = Object.entries(attributes);
  return {
    patterns: patterns.length === 0 ? undefined : patterns,
    attributes,
    matches(event) {
      if (patterns.length > 0 && !typeMatches(event.type)) return false;
      for (const [k, v] of attributeEntries) if (event.attributes[k] !== v) return false;
      return filter ? filter(event) : true;
    },
  };
}
