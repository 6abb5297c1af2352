import { readFile } from "node:fs/promises";
import type http from "node:http";
import type http2 from "node:http2";
import { buildDocsPage } from "./docs-page.js";
import { requestPath } from "../transport/request-path.js";

/** Where `buf generate` writes the OpenAPI document (tools/protoc-gen-openapi). */
export const openapiDocumentPath = new URL("../../gen/openapi/tidings.openapi.json", import.meta.url);

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

/**
 * Reads the generated document once and returns a handler for `GET /openapi.json` and
 * `GET /docs` (an HTML reference built from it). The handler answers true when it served the
 * request, false to let the next handler have it.
 */
export async function openapiHandler(documentPath: URL | string = openapiDocumentPath): Promise<(req: Request, res: Response) => boolean> {
  const json = await readFile(documentPath, "utf8");
  const docs = buildDocsPage(JSON.parse(json));
  const pages: Record<string, { type: string; body: string }> = {
    "/openapi.json": { type: "application/json", body: json },
    "/docs": { type: "text/html; charset=utf-8", body: docs },
  };
  return (req, res) => {
    // The method first: every call (a POST) passes here on its way to Connect.
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    const page = pages[requestPath(req)];
    if (!page) return false;
    res.writeHead(200, { "content-type": page.type, "content-length": Buffer.byteLength(page.body), "cache-control": "no-cache" });
    if (req.method === "HEAD") res.end();
    else res.end(page.body);
    return true;
  };
}
