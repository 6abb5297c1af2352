import { celEnv, CelScalar, celUint, isCelError, mapType, parse, plan, type CelInput } from "@bufbuild/cel";
import type { Message, Registry } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { Expr } from "@bufbuild/cel-spec/cel/expr/syntax_pb.js";
import { nulRefused } from "../storage/schema.js";

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

/**
 * What a filter may cost. A filter runs on every event of a stream or an endpoint, so its size
 * bounds the work per event: CEL has no loops but comprehensions (all, exists, map, filter)
 * over the event's lists and maps, and those are bounded by their nesting.
 */
export interface FilterLimits {
  /** Most characters. */
  maxLength: number;
  /** Most nodes in the parsed expression. */
  maxNodes: number;
  /** Most comprehensions nested in one another. */
  maxComprehensionDepth: number;
}

export const defaultFilterLimits: FilterLimits = { maxLength: 4096, maxNodes: 256, maxComprehensionDepth: 2 };

/** For filters that were checked when they were saved: a limit lowered since must not break them. */
export const savedFilterLimits: FilterLimits = { maxLength: Number.POSITIVE_INFINITY, maxNodes: Number.POSITIVE_INFINITY, maxComprehensionDepth: Number.POSITIVE_INFINITY };

/**
 * Compiles a CEL expression over the event. A runtime error (say, a missing attribute key or a
 * payload field of another type) or a non-boolean result counts as "no match": one odd event
 * never breaks a stream.
 */
export function compileFilter(expression: string, registry: Registry, limits: FilterLimits = defaultFilterLimits): EventFilter {
  if (expression.length > limits.maxLength) throw new FilterError(`is longer than ${limits.maxLength} characters`);
  // A webhook's filter is stored as text, which PostgreSQL cannot hold with U+0000 in it.
  if (expression.includes("\0")) throw new FilterError(nulRefused);
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse(expression);
  } catch (err) {
    throw new FilterError(`is not valid CEL: ${(err as Error).message}`);
  }
  const size = sizeOf(parsed.expr);
  if (size.nodes > limits.maxNodes) throw new FilterError(`has ${size.nodes} terms, more than the limit of ${limits.maxNodes}`);
  if (size.depth > limits.maxComprehensionDepth) {
    throw new FilterError(`nests ${size.depth} comprehensions (all, exists, map, filter), more than the limit of ${limits.maxComprehensionDepth}`);
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

/** Nodes of an expression, and how deeply its comprehensions nest. */
function sizeOf(expr: Expr | undefined): { nodes: number; depth: number } {
  if (!expr) return { nodes: 0, depth: 0 };
  const k = expr.exprKind;
  const children: Array<Expr | undefined> = [];
  switch (k.case) {
    case "selectExpr":
      children.push(k.value.operand);
      break;
    case "callExpr":
      children.push(k.value.target, ...k.value.args);
      break;
    case "listExpr":
      children.push(...k.value.elements);
      break;
    case "structExpr":
      for (const e of k.value.entries) children.push(e.keyKind.case === "mapKey" ? e.keyKind.value : undefined, e.value);
      break;
    case "comprehensionExpr":
      children.push(k.value.iterRange, k.value.accuInit, k.value.loopCondition, k.value.loopStep, k.value.result);
      break;
  }
  let nodes = 1;
  let depth = 0;
  for (const child of children) {
    const s = sizeOf(child);
    nodes += s.nodes;
    depth = Math.max(depth, s.depth);
  }
  return { nodes, depth: depth + (k.case === "comprehensionExpr" ? 1 : 0) };
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
