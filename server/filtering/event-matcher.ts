import type { EventFilter, FilterInput } from "./cel-filter.js";
import type { TypePattern } from "./type-pattern.js";

/** The three filters of a subscription, cheapest first. */
export interface EventMatcher {
  /** Types a pattern list selects, for pushing the type filter into SQL; undefined = all. */
  types: string[] | undefined;
  /** Attribute equality, also pushed into SQL. */
  attributes: Record<string, string>;
  matches(event: FilterInput): boolean;
}

export function createEventMatcher(
  patterns: readonly TypePattern[],
  knownTypes: readonly string[],
  attributes: Record<string, string>,
  filter: EventFilter | undefined,
): EventMatcher {
  const types = patterns.length === 0 ? undefined : knownTypes.filter((t) => patterns.some((p) => p.matches(t)));
  const typeSet = types ? new Set(types) : undefined;
  const attributeEntries = Object.entries(attributes);
  return {
    types,
    attributes,
    matches(event) {
      if (typeSet && !typeSet.has(event.type)) return false;
      for (const [k, v] of attributeEntries) if (event.attributes[k] !== v) return false;
      return filter ? filter(event) : true;
    },
  };
}
