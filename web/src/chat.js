// The server's /api/chat and /v1/models as the page uses them: fetch, the
// body read as a stream, eventsource-parser for the SSE framing (the
// browser's EventSource cannot POST). The URLs are relative, like those of
// the page's own files, so the page does not assume it sits at the root.
// Failures become ChatError with a sentence for the user; an abort stays an
// AbortError.
import { createParser } from 'eventsource-parser';

export class ChatError extends Error {
  /** kind: 'auth' (401: ask for a token), 'refused' (400 and other 4xx),
   * 'rate' (429), 'server' (5xx), 'network', 'cut' (the stream broke). */
  constructor(kind, message, { status = 0, retryAfter = null } = {}) {
    super(message);
    this.name = 'ChatError';
    this.kind = kind;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function headers(token, json) {
  const h = {};
  if (json) h['Content-Type'] = 'application/json';
  if (token) h.Authorization = `Bearer ${token}`;
  return h;
}

/** The error message of a failed answer: {"error": "..."} (/api/chat) or
 * {"error": {"message": ...}} (/v1); a proxy in front may send HTML. */
async function messageOf(res) {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    const e = body.error;
    if (typeof e === 'string') return e;
    if (e && typeof e.message === 'string') return e.message;
  } catch {
    // not JSON
  }
  return res.statusText || `HTTP ${res.status}`;
}

/** Seconds to wait from a Retry-After header (seconds or an HTTP date). */
export function retryAfterSeconds(value) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - Date.now()) / 1000));
}

async function failure(res) {
  const message = await messageOf(res);
  const status = res.status;
  if (status === 401) return new ChatError('auth', `An access token is needed: ${message}`, { status });
  if (status === 429) {
    const wait = retryAfterSeconds(res.headers.get('Retry-After'));
    const when = wait === null ? 'Try again later.' : `Try again in ${wait} s.`;
    return new ChatError('rate', `Too many requests (429): ${message}. ${when}`, { status, retryAfter: wait });
  }
  if (status >= 500) return new ChatError('server', `The server failed (${status}): ${message}`, { status });
  return new ChatError('refused', `The server refused the request (${status}): ${message}`, { status });
}

async function send(url, init) {
  try {
    return await fetch(url, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ChatError('network', `Cannot reach the server: ${e.message}`);
  }
}

/** The model ids of GET /v1/models. */
export async function listModels(token, signal) {
  const res = await send('v1/models', { headers: headers(token, false), signal });
  if (!res.ok) throw await failure(res);
  const body = await res.json();
  return (body.data || []).map((m) => m.id).filter((id) => typeof id === 'string');
}

/**
 * POST /api/chat with stream: true. onReasoning and onContent get each
 * piece as it arrives. Resolves when the answer is complete (its last event
 * carries a finish_reason); rejects with a ChatError when it fails, also
 * after it started (the server's error event, or a stream that ends early),
 * and with an AbortError when signal aborts (the server then cancels the
 * upstream call).
 */
export async function streamChat(request, { token, signal, onReasoning, onContent }) {
  const res = await send('api/chat', {
    method: 'POST',
    headers: headers(token, true),
    body: JSON.stringify({ ...request, stream: true }),
    signal,
  });
  if (!res.ok) throw await failure(res);
  let error = null;
  let finished = false;
  const parser = createParser({
    onEvent(event) {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch {
        return; // not ours to show
      }
      if (data.error) {
        const text = typeof data.error === 'string' ? data.error : data.error.message;
        error = new ChatError('cut', `The answer broke off: ${text}`);
        return;
      }
      const choice = data.choices?.[0];
      const delta = choice?.delta ?? {};
      if (delta.reasoning_content) onReasoning(delta.reasoning_content);
      if (delta.content) onContent(delta.content);
      if (choice?.finish_reason) finished = true;
    },
  });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.feed(value);
    }
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ChatError('cut', `The connection broke off: ${e.message}`);
  }
  if (error) throw error;
  if (!finished) throw new ChatError('cut', 'The answer ended before it was complete.');
}
