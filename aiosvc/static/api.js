// The daemon's REST API from the page: same origin, the login cookie, the error envelope.

/** An answer in the error envelope (or no answer at all: status 0). */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

let unauthorized = () => {};

/** Say what to do when an answer is 401 (the login expired or was revoked). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

/** Call the API; resolve to the decoded answer (null for 204), or throw an ApiError. */
export async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, "unreachable", "The daemon cannot be reached.");
  }
  if (response.status === 204) return null;
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    answer = null;
  }
  if (!response.ok) {
    const error = (answer && answer.error) || {};
    const failure = new ApiError(
      response.status,
      error.code || "error",
      error.message || `${response.status} ${response.statusText}`,
      error.details,
    );
    if (response.status === 401 && !path.endsWith("/login")) unauthorized(failure);
    throw failure;
  }
  return answer;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body);

/** Every item of a list, following `next` cursors (at most `pages` pages). */
export async function getAll(path, pages = 20) {
  const items = [];
  const joiner = path.includes("?") ? "&" : "?";
  let url = `${path}${joiner}limit=500`;
  for (let page = 0; page < pages; page += 1) {
    const answer = await get(url);
    items.push(...answer.data);
    if (!answer.next || answer.data.length === 0) break;
    url = `${path}${joiner}limit=500&after=${encodeURIComponent(answer.next)}`;
  }
  return items;
}

/** The sign-in state: `{authenticated, expires_at}`. A daemon without browser login (older
 * than 1.1) is asked for its health instead: 200 means no key is needed. */
export async function loginState() {
  try {
    return (await get("/api/v1/login")).data;
  } catch (error) {
    if (error.status === 401) return { authenticated: false, expires_at: null };
    if (error.status !== 404 && error.status !== 405) throw error;
  }
  try {
    await get("/api/v1/health");
    return { authenticated: true, expires_at: null };
  } catch (error) {
    if (error.status === 401) return { authenticated: false, expires_at: null };
    throw error;
  }
}
