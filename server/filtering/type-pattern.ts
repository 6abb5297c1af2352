/**
 * Type patterns are dotted like type names. `*` matches exactly one segment; `**`, allowed only
 * as the last segment, matches one or more segments. "memory.*" matches "memory.created" but
 * not "memory.a.b"; "tidings.**" matches both "tidings.webhook.created" and "tidings.x";
 * "**" alone matches every type.
 */
export interface TypePattern {
  readonly source: string;
  matches(type: string): boolean;
}

const segmentPattern = /^[a-z0-9_]+$/;

export class TypePatternError extends Error {}

export function parseTypePattern(source: string): TypePattern {
  if (source === "") throw new TypePatternError("must not be empty");
  const segments = source.split(".");
  segments.forEach((segment, i) => {
    if (segment === "*") return;
    if (segment === "**") {
      if (i !== segments.length - 1) throw new TypePatternError(`"**" is only allowed as the last segment in "${source}"`);
      return;
    }
    if (!segmentPattern.test(segment)) {
      throw new TypePatternError(
        `segment "${segment}" of "${source}" must be lowercase [a-z0-9_], "*" (one segment) or a final "**" (one or more segments)`,
      );
    }
  });
  const { fixed, tail } = shapeOf(source);
  return {
    source,
    matches(type: string): boolean {
      const parts = type.split(".");
      if (tail ? parts.length <= fixed.length : parts.length !== fixed.length) return false;
      return fixed.every((seg, i) => seg === "*" || seg === parts[i]);
    },
  };
}

/**
 * Whether every type `inner` matches is matched by `outer` too: "memory.*" covers
 * "memory.created" and "memory.*", "memory.**" covers "memory.a.b", "**" covers everything,
 * and "memory.created" covers only itself. Used to check a request against an API key's grant.
 */
export function patternCovers(outer: TypePattern, inner: TypePattern): boolean {
  const o = shapeOf(outer.source);
  const i = shapeOf(inner.source);
  if (o.tail) {
    // outer matches lengths > its fixed part; inner must never be shorter than that.
    if (i.fixed.length < o.fixed.length + (i.tail ? 0 : 1)) return false;
  } else if (i.tail || i.fixed.length !== o.fixed.length) {
    return false;
  }
  return o.fixed.every((seg, k) => seg === "*" || seg === i.fixed[k]);
}

function shapeOf(source: string): { fixed: string[]; tail: boolean } {
  const segments = source.split(".");
  const tail = segments[segments.length - 1] === "**";
  return { fixed: tail ? segments.slice(0, -1) : segments, tail };
}
