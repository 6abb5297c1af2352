/** The path of a request's URL, without its query string: what every route matches on. */
export function requestPath(req: { url?: string }): string {
  const url = req.url ?? "";
  const q = url.indexOf("?");
  return q < 0 ? url : url.slice(0, q);
}
