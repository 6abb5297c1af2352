import { celEnv, CelScalar, celUint, isCelError, mapType, parse, plan, type CelInput } from "@bufbuild/cel";
import type { Message, Registry } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Expr } from "@bufbuild/cel-spec/cel/expr/syntax_pb.js";

/** What a filter sees of an event. `data` is decoded only when the expression reads it. */
export interface FilterInput {
  id: string;
  source: string;
  type: string;
  subject: string;
  time: Date;
  sequence: bigint;
  attributes: Record<string, string>;
  data(): Message;
}

export type EventFilter = (event: FilterInput) => boolean;

export class FilterError extends Error {}

const variables = {
  id: CelScalar.STRING,
  source: CelScalar.STRING,
  type: CelScalar.STRING,
  subject: CelScalar.STRING,
  time: CelScalar.DYN,
  sequence: CelScalar.UINT,
  attributes: mapType(CelScalar.STRING, CelScalar.STRING),
  data: CelScalar.DYN,
} as const;

/** Most characters a filter expression may have. */
export const maxFilterLength = 4096;

/**
 * Compiles a CEL expression over the event. A runtime error (say, a missing attribute key or a
 * payload field of another type) or a non-boolean result counts as "no match": one odd event
 * never breaks a stream.
 */
export function compileFilter(expression: string, registry: Registry): EventFilter {
  if (expression.length > maxFilterLength) throw new FilterError(`is longer than ${maxFilterLength} characters`);
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(expression);
  } catch (err) {
    throw new FilterError(`is not valid CEL: ${(err as Error).message}`);
  }
  const unknown = [...identifiers(parsed.expr)].filter((name) => !(name in variables));
  if (unknown.length > 0) {
    throw new FilterError(`refers to unknown variable "${unknown[0]}"; the variables are ${Object.keys(variables).join(", ")}`);
  }
  const env = celEnv({ registry, variables });
  const program = plan(env as never, parsed) as (ctx: Record<string, CelInput>) => unknown;
  const readsData = identifiers(parsed.expr).has("data");
  return (event) => {
    const bindings: Record<string, CelInput> = {
      id: event.id,
      source: event.source,
      type: event.type,
      subject: event.subject,
      time: timestampFromDate(event.time),
      sequence: celUint(event.sequence),
      attributes: new Map(Object.entries(event.attributes)),
    };
    try {
      if (readsData) bindings.data = event.data();
      const result = program(bindings);
      return !isCelError(result) && result === true;
    } catch {
      return false; // e.g. a payload that no longer decodes: no match, and the stream goes on
    }
  };
}

/** The free identifiers of an expression (variables, not fields selected from them). */
function identifiers(expr: Expr | undefined, into = new Set<string>()): Set<string> {
  if (!expr) return into;
  const k = expr.exprKind;
  switch (k.case) {
    case "identExpr":
      into.add(k.value.name);
      break;
    case "selectExpr":
      identifiers(k.value.operand, into);
      break;
    case "callExpr":
      identifiers(k.value.target, into);
      k.value.args.forEach((a) => identifiers(a, into));
      break;
    case "listExpr":
      k.value.elements.forEach((e) => identifiers(e, into));
      break;
    case "structExpr":
      k.value.entries.forEach((e) => {
        if (e.keyKind.case === "mapKey") identifiers(e.keyKind.value, into);
        identifiers(e.value, into);
      });
      break;
    case "comprehensionExpr": {
      // Comprehension variables (e.g. `x` in `list.all(x, x > 1)`) are bound locally.
      const c = k.value;
      identifiers(c.iterRange, into);
      const inner = new Set<string>();
      [c.accuInit, c.loopCondition, c.loopStep, c.result].forEach((e) => identifiers(e, inner));
      inner.delete(c.iterVar);
      inner.delete(c.iterVar2);
      inner.delete(c.accuVar);
      inner.forEach((n) => into.add(n));
      break;
    }
  }
  return into;
}
