// The collector's API as the dashboard uses it: every call carries the user's token, and
// every failure becomes an ApiError that says what the collector said.
//
// The token lives in sessionStorage: it is gone when the tab closes, it is sent only to
// this origin (same-origin fetch, no cookies, so no cross-site request can use it), and
// the Content-Security-Policy keeps any script but ours from reading it.

const TOKEN_KEY = 'vedetta.token';
const BASE = '/api/v1';

export class ApiError extends Error {
  constructor(status, message, request) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.request = request;
  }
}

export const token = () => sessionStorage.getItem(TOKEN_KEY);
export const setToken = (value) => sessionStorage.setItem(TOKEN_KEY, value);
export const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

let unauthorized = () => {};
/** What to do when the collector no longer accepts the token (revoked, say). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

function url(path, query) {
  const target = new URL(BASE + path, location.origin);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') target.searchParams.set(key, value);
  }
  return target;
}

function headers(extra) {
  return { Authorization: `Bearer ${token()}`, ...extra };
}

async function failure(response, what) {
  const text = await response.text().catch(() => '');
  let message = response.statusText || 'request failed';
  try {
    const body = JSON.parse(text);
    if (body && typeof body.error === 'string') message = body.error;
  } catch {
    if (text) message = text.slice(0, 300);
  }
  if (response.status === 401) unauthorized(message);
  return new ApiError(response.status, message, what);
}

async function send(method, path, { query, body, signal, accept = 'application/json' } = {}) {
  const target = url(path, query);
  const what = `${method} ${target.pathname}`;
  let response;
  try {
    response = await fetch(target, {
      method,
      signal,
      cache: 'no-store',
      credentials: 'omit',
      headers: headers({
        Accept: accept,
        ...(body === undefined ? {} : { 'Content-Type': 'application/json' }),
      }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, `the collector cannot be reached (${error.message})`, what);
  }
  if (!response.ok) throw await failure(response, what);
  return response;
}

/** GET a JSON answer. */
export async function get(path, query, signal) {
  const response = await send('GET', path, { query, signal });
  return response.json();
}

/** POST a JSON body; the JSON answer. */
export async function post(path, body, signal) {
  const response = await send('POST', path, { body, signal });
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export async function remove(path, signal) {
  await send('DELETE', path, { signal });
}

/**
 * Downloads an export (it needs the token, so a plain link cannot do it): fetches it,
 * then saves it under the name the collector gives or `fallback`.
 */
export async function download(path, query, fallback) {
  const response = await send('GET', path, { query, accept: '*/*' });
  const disposition = response.headers.get('Content-Disposition') || '';
  const named = /filename="?([^";]+)"?/.exec(disposition);
  const blob = await response.blob();
  const href = URL.createObjectURL(blob);
  const anchor = document.createElement('a');
  anchor.href = href;
  anchor.download = named ? named[1] : fallback;
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60_000);
}

/**
 * Follows the server-sent events of `/stream` (EventSource cannot send a token, so this
 * reads the stream with fetch) and calls `onEvent(name, data)` for each; `onState(up)`
 * says whether the stream is open. Reconnects with backoff until `signal` aborts.
 */
export async function follow(path, { signal, onEvent, onState }) {
  let pause = 1000;
  while (!signal.aborted) {
    try {
      const response = await send('GET', path, { signal, accept: 'text/event-stream' });
      onState(true);
      pause = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          if (!data.length) continue;
          try {
            onEvent(name, JSON.parse(data.join('\n')));
          } catch {
            // A malformed event is skipped, not fatal.
          }
        }
      }
    } catch (error) {
      if (signal.aborted) break;
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        onState(false);
        return;
      }
    }
    onState(false);
    await new Promise((resolve) => setTimeout(resolve, pause));
    pause = Math.min(pause * 2, 30_000);
  }
}
