import type http from "node:http";
import type http2 from "node:http2";
import type { DescMethod, JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouterOptions, type ContextValues, createConnectRouter, type ConnectRouter } from "@connectrpc/connect";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { checkJsonMessage, type FieldViolation } from "../catalog/payload-validation.js";
import type { Logger } from "../logging/logger.js";
import { fieldError } from "../rpc/errors.js";
import { readRawBody, RequestBodyTooLargeError } from "../../sdk/webhooks/verify.js";
import { type BinaryFastPath, type BinaryFastPathOptions, createBinaryFastPath, type ServiceRegistration } from "./binary-fast-path.js";
import { writeConnectError } from "./connect-error-response.js";
import { type AccessGate, callerOf } from "../auth/access-gate.js";
import { accessRuleOf } from "../auth/access-rules.js";
import type { RequestHead } from "./request-head.js";
import { requestPath } from "./request-path.js";

type NodeRequest = http.IncomingMessage | http2.Http2ServerRequest;
type NodeResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface ConnectHandlerOptions extends ConnectRouterOptions {
  /** The services; their plain binary calls take the fast path (binary-fast-path.ts). */
  services: readonly ServiceRegistration[];
  /** Anything else to add to the router (reflection). */
  routes?(router: ConnectRouter): void;
  contextValues?: (req: RequestHead) => ContextValues;
  /** Largest JSON body read for the pre-check; the same as readMaxBytes. */
  maxJsonBodyBytes: number;
  /** Required top-level fields per method name, to say what an empty body lacks. */
  requiredFields: Record<string, readonly string[]>;
  /**
   * The API key check, run before the JSON pre-check below (which answers before Connect's
   * interceptors would): a caller without a valid key learns that, not what its body lacks.
   */
  gate?: AccessGate;
  /** Quicker decoders for some request types (binary-fast-path.ts). */
  requestDecoders?: BinaryFastPathOptions["requestDecoders"];
  /** Quicker encoders for some response types (binary-fast-path.ts). */
  responseEncoders?: BinaryFastPathOptions["responseEncoders"];
  logger: Logger;
}

/**
 * connectNodeAdapter, plus two things. Plain calls in protobuf binary take a fast path that
 * skips Connect's generic pipeline (binary-fast-path.ts). And a Connect unary request with a JSON body is read and
 * checked against the method's input message first. protobuf-es names the field for a wrong
 * scalar but not for a bad Timestamp, Duration, FieldMask or enum name; this check reports every
 * problem with its field path (google.rpc.BadRequest), and an empty body with the fields the
 * method needs. A body that passes goes to Connect already parsed, so it is read once.
 *
 * `takeStream` is the fast path's answer to a raw HTTP/2 stream (BinaryFastPath.takeStream), for
 * createOnePortServer to offer each stream to first.
 */
export function createConnectHandler(options: ConnectHandlerOptions): ((req: NodeRequest, res: NodeResponse) => Promise<void>) & Pick<BinaryFastPath, "takeStream"> {
  const router = createConnectRouter(options);
  for (const { service, impl } of options.services) router.service(service, impl);
  options.routes?.(router);
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const fastPath = createBinaryFastPath({
    services: options.services,
    interceptors: options.interceptors ?? [],
    readMaxBytes: options.readMaxBytes ?? 0xffffffff,
    writeMaxBytes: options.writeMaxBytes ?? 0xffffffff,
    contextValues: options.contextValues,
    requestDecoders: options.requestDecoders,
    responseEncoders: options.responseEncoders,
  });

  const handle = async (req: NodeRequest, res: NodeResponse): Promise<void> => {
    const path = requestPath(req);
    if (fastPath.take(path, req, res)) return;
    const handler = handlers.get(path);
    if (!handler) {
      res.writeHead(404);
      res.end();
      return;
    }
    let parsed: JsonValue | undefined;
    if (req.method === "POST" && handler.method.methodKind === "unary" && /^application\/json\b/.test(req.headers["content-type"] ?? "")) {
      if (options.gate) {
        try {
          await options.gate.check(req.headers.authorization, accessRuleOf(handler.method), callerOf(req, `${handler.service.typeName}/${handler.method.name}`));
        } catch (err) {
          writeConnectError(res, ConnectError.from(err));
          return;
        }
      }
      const checked = await readAndCheckJson(req as http.IncomingMessage, handler.method, options);
      if ("error" in checked) {
        writeConnectError(res, checked.error);
        return;
      }
      parsed = checked.json;
    }
    const uReq = universalRequestFromNodeRequest(req as http.IncomingMessage, res as http.ServerResponse, parsed, options.contextValues?.(req));
    try {
      await universalResponseToNodeResponse(await handler(uReq), res as http.ServerResponse);
    } catch (reason) {
      if (ConnectError.from(reason).code !== Code.Aborted) options.logger.warn("writing a response failed", { method: handler.method.name, err: reason });
    }
  };
  return Object.assign(handle, { takeStream: fastPath.takeStream });
}

async function readAndCheckJson(req: http.IncomingMessage, method: DescMethod, o: ConnectHandlerOptions): Promise<{ json: JsonValue } | { error: ConnectError }> {
  let body: Buffer;
  try {
    body = await readRawBody(req, { limitBytes: o.maxJsonBodyBytes });
  } catch (err) {
    if (err instanceof RequestBodyTooLargeError) return { error: new ConnectError(`the request body is larger than ${err.limitBytes} bytes`, Code.ResourceExhausted) };
    throw err;
  }
  if (body.length === 0) {
    const required = o.requiredFields[method.name] ?? [];
    const needs = required.length > 0 ? `; ${method.name} requires ${required.map((f) => `"${f}"`).join(", ")}` : "; send {} for a request with every field at its default";
    return { error: new ConnectError(`the request body is empty: expected a JSON ${method.input.typeName} object${needs}`, Code.InvalidArgument) };
  }
  let json: JsonValue;
  try {
    json = JSON.parse(body.toString("utf8")) as JsonValue;
  } catch (err) {
    return { error: new ConnectError(`cannot decode message ${method.input.typeName} from JSON: ${(err as Error).message}`, Code.InvalidArgument) };
  }
  const violations: FieldViolation[] = [];
  checkJsonMessage(method.input, json, "", violations);
  if (violations.length > 0) return { error: fieldError(Code.InvalidArgument, violations) };
  return { json };
}
