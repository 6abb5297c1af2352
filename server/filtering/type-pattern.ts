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
  const tail = segments[segments.length - 1] === "**";
  const fixed = tail ? segments.slice(0, -1) : segments;
  return {
    source,
    matches(type: string): boolean {
      const parts = type.split(".");
      if (tail ? parts.length <= fixed.length : parts.length !== fixed.length) return false;
      return fixed.every((seg, i) => seg === "*" || seg === parts[i]);
    },
  };
}
