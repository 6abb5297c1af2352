import { celEnv, celFunc, CelScalar, celUint, isCelError, mapType, parse, plan, type CelInput } from "@bufbuild/cel";
import { create } from "@bufbuild/protobuf";
import type { Message, Registry } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Expr, ExprSchema } from "@bufbuild/cel-spec/cel/expr/syntax_pb.js";
import type { ServerConfig } from "../config/config.js";
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
 * What a filter may cost. A filter runs on every event of a stream or an endpoint. Its size is
 * checked once, when it is compiled. CEL has no loops but comprehensions (all, exists, map,
 * filter) over the event's lists and maps, and two nested over the same list are quadratic in
 * it (measured: 2.8 s for one 20 KB event), so each evaluation also has a budget of loop steps.
 */
export interface FilterLimits {
  /** Most characters. */
  maxLength: number;
  /** Most nodes in the parsed expression. */
  maxNodes: number;
  /** Most comprehensions nested in one another. */
  maxComprehensionDepth: number;
  /** Most comprehension steps in one evaluation; an event that needs more does not match. */
  maxSteps: number;
}

export const defaultFilterLimits: FilterLimits = { maxLength: 4096, maxNodes: 256, maxComprehensionDepth: 2, maxSteps: 1_000 };

/**
 * A backstop to the step budget: one step may itself take long (`x in list` is linear in the
 * list), so an evaluation also stops once it has run this long. Time is checked from the 64th
 * step on, at every step: a first evaluation runs cold code (measured: over 10 ms for two
 * steps), and a small filter must not miss an event for that. It is wall-clock time, so a GC
 * pause or a busy machine counts too: at 50 ms, CI on a slow 2-vCPU machine saw a 420-step
 * evaluation (well under a millisecond of work) cut short, and its event not match. 250 ms
 * still bounds a quadratic filter far below its unbounded cost (2.8 s measured).
 */
const evaluationTimeLimitMs = 250;
const stepsBeforeTimeChecks = 64;

/** The function put into every comprehension's loop condition to count its steps. */
const stepFunction = "tidings_step";

/** The limits the server is configured with. */
export function filterLimitsOf(c: Pick<ServerConfig, "maxFilterLength" | "maxFilterTerms" | "maxFilterNesting" | "maxFilterSteps">): FilterLimits {
  return { maxLength: c.maxFilterLength, maxNodes: c.maxFilterTerms, maxComprehensionDepth: c.maxFilterNesting, maxSteps: c.maxFilterSteps };
}

/** For filters that were checked when they were saved: a limit lowered since must not break them. */
export function savedFilterLimits(current: FilterLimits): FilterLimits {
  // The step budget is not a property of the text but of each evaluation: it always applies.
  return { maxLength: Number.POSITIVE_INFINITY, maxNodes: Number.POSITIVE_INFINITY, maxComprehensionDepth: Number.POSITIVE_INFINITY, maxSteps: current.maxSteps };
}

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
  // Evaluation is synchronous, so one budget per compiled filter, reset before each run, is enough.
  const budget = { steps: 0, startedAt: 0, exhausted: false };
  const step = celFunc(stepFunction, [CelScalar.BOOL], CelScalar.BOOL, (going) => {
    if (!going || budget.exhausted) return false;
    budget.steps++;
    if (budget.steps > limits.maxSteps || (budget.steps >= stepsBeforeTimeChecks && performance.now() - budget.startedAt > evaluationTimeLimitMs)) {
      budget.exhausted = true;
      return false;
    }
    return true;
  });
  const readsData = identifiers(parsed.expr).has("data");
  countComprehensionSteps(parsed.expr);
  const env = celEnv({ registry, variables, funcs: [step] });
  const program = plan(env as never, parsed) as (ctx: Record<string, CelInput>) => unknown;
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
      budget.steps = 0;
      budget.exhausted = false;
      budget.startedAt = performance.now();
      const result = program(bindings);
      // Out of budget, a comprehension stopped early and its result means nothing.
      return !budget.exhausted && !isCelError(result) && result === true;
    } catch {
      return false; // e.g. a payload that no longer decodes: no match, and the stream goes on
    }
  };
}

/**
 * Wraps the loop condition of every comprehension in `tidings_step(condition)`, which counts
 * the step and stops the loop once the evaluation is out of budget. Runs after the size checks
 * and identifiers() (which walk the expression as the user wrote it).
 */
function countComprehensionSteps(root: Expr | undefined): void {
  let nextId = maxIdOf(root) + 1n;
  const visit = (expr: Expr | undefined): void => {
    if (!expr) return;
    const k = expr.exprKind;
    if (k.case === "comprehensionExpr") {
      const c = k.value;
      [c.iterRange, c.accuInit, c.loopCondition, c.loopStep, c.result].forEach(visit);
      c.loopCondition = create(ExprSchema, { id: nextId++, exprKind: { case: "callExpr", value: { function: stepFunction, args: c.loopCondition ? [c.loopCondition] : [] } } });
      return;
    }
    for (const child of childrenOf(expr)) visit(child);
  };
  visit(root);
}

function maxIdOf(expr: Expr | undefined): bigint {
  if (!expr) return 0n;
  let max = expr.id;
  for (const child of childrenOf(expr)) {
    const m = maxIdOf(child);
    if (m > max) max = m;
  }
  return max;
}

/** Nodes of an expression, and how deeply its comprehensions nest. */
function sizeOf(expr: Expr | undefined): { nodes: number; depth: number } {
  if (!expr) return { nodes: 0, depth: 0 };
  let nodes = 1;
  let depth = 0;
  for (const child of childrenOf(expr)) {
    const s = sizeOf(child);
    nodes += s.nodes;
    depth = Math.max(depth, s.depth);
  }
  return { nodes, depth: depth + (expr.exprKind.case === "comprehensionExpr" ? 1 : 0) };
}

/** The direct subexpressions of an expression. */
function childrenOf(expr: Expr): Array<Expr | undefined> {
  const k = expr.exprKind;
  switch (k.case) {
    case "selectExpr":
      return [k.value.operand];
    case "callExpr":
      return [k.value.target, ...k.value.args];
    case "listExpr":
      return [...k.value.elements];
    case "structExpr":
      return k.value.entries.flatMap((e) => [e.keyKind.case === "mapKey" ? e.keyKind.value : undefined, e.value]);
    case "comprehensionExpr":
      return [k.value.iterRange, k.value.accuInit, k.value.loopCondition, k.value.loopStep, k.value.result];
    default:
      return [];
  }
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
