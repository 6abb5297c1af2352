import type http from "node:http";
import type http2 from "node:http2";
import { create, toBinary, toJson } from "@bufbuild/protobuf";
import type { ConnectError } from "@connectrpc/connect";
import { codeToHttpStatus } from "@connectrpc/connect/protocol-connect";
import { codeName } from "../rpc/errors.js";

/**
 * A Connect unary error response, as Connect writes it (its HTTP status table, the JSON body),
 * for answers given before Connect's own handler runs: the JSON pre-check and plain HTTP routes.
 * Each detail also carries `debug`, its JSON form, for curl users.
 */
export function writeConnectError(res: http.ServerResponse | http2.Http2ServerResponse, err: ConnectError, headers: Record<string, string> = {}): void {
  const details = err.details.map((d) => ("desc" in d
    ? { type: d.desc.typeName, value: Buffer.from(toBinary(d.desc, create(d.desc, d.value))).toString("base64").replace(/=+$/, ""), debug: toJson(d.desc, create(d.desc, d.value)) }
    : { type: d.type, value: Buffer.from(d.value).toString("base64").replace(/=+$/, "") }));
  res.writeHead(codeToHttpStatus(err.code), { "content-type": "application/json", ...headers });
  res.end(JSON.stringify({ code: codeName(err.code), message: err.rawMessage, ...(details.length > 0 ? { details } : {}) }));
}
