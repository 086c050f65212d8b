// The daemon's HTTP side, as the console uses it: every request carries the control token
// as an Authorization header (never in a URL, never in a cookie).

const KEY = "voicews.console.token";

/** The daemon's root: the page is served at <root>/console/, so URLs stay right behind a
 * reverse proxy that mounts the daemon under a prefix. */
export const root = new URL("../", location.href);

export function token() {
  return sessionStorage.getItem(KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value);
  else sessionStorage.removeItem(KEY);
}

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(extra = {}) {
  return {Authorization: `Bearer ${token()}`, ...extra};
}

async function failure(response) {
  let reason = response.statusText || `HTTP ${response.status}`;
  try {
    const body = await response.json();
    if (body && body.error) reason = body.error;
  } catch (_) { /* not JSON */ }
  return new HttpError(response.status, reason);
}

/** A JSON request to the daemon; throws HttpError with the daemon's reason. */
export async function api(path, {method = "GET", body} = {}) {
  const init = {method, cache: "no-store", headers: headers()};
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(new URL(path, root), init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** Read a Server-Sent Events stream with fetch() (EventSource cannot send the header):
 * calls onRecord(record) for each `data:` line's JSON.  Resolves when the stream ends. */
export async function stream(path, onRecord, signal, onOpen = () => {}) {
  const response = await fetch(new URL(path, root), {
    cache: "no-store", signal, headers: headers({Accept: "text/event-stream"}),
  });
  if (!response.ok) throw await failure(response);
  onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const message = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of message.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        let record;
        try {
          record = JSON.parse(line.slice(6));
        } catch (_) {
          continue;
        }
        onRecord(record);
      }
    }
  }
}
