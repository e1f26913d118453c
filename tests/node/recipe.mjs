// zju-chat-server from a browser frontend (React, Vue, ...): fetch and a
// ReadableStream, with eventsource-parser for the SSE framing. `make test`
// runs this very code: tests/node/recipe.mjs.
import { createParser } from 'eventsource-parser';

// `token`: the server's access token when it wants one (ACCESS_TOKENS_FILE);
// it is the frontend's own credential, never the upstream's API key.
async function post(url, request, signal, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(url, { method: 'POST', headers, body: JSON.stringify(request), signal });
}

// Errors are {"error": "..."}; a proxy in front may answer HTML instead.
async function errorOf(res) {
  const body = await res.json().catch(() => ({}));
  return new Error(body.error || `HTTP ${res.status}`);
}

// The whole answer: { choices: [{ message: { content, reasoning_content } }], usage, ... }
export async function askChat(url, request, { signal, token } = {}) {
  const res = await post(url, { ...request, stream: false }, signal, token);
  if (!res.ok) throw await errorOf(res);
  return res.json();
}

// The answer as it is generated: onReasoning and onContent get each piece.
// Rejects with the server's message when the request fails, or when the
// upstream fails after the stream started (one {"error": "..."} event), and
// with an AbortError when `signal` aborts (which also stops the upstream).
export async function streamChat(url, request, { onContent, onReasoning, signal, token } = {}) {
  const res = await post(url, { ...request, stream: true }, signal, token);
  if (!res.ok) throw await errorOf(res);
  let failure = null;
  // `: ping` comments keep the connection open while a reasoning model
  // thinks; they are not events, so onEvent never sees them.
  const parser = createParser({
    onEvent(event) {
      const data = JSON.parse(event.data);
      if (data.error) {
        failure = new Error(data.error);
        return;
      }
      const delta = data.choices?.[0]?.delta ?? {};
      if (delta.reasoning_content) onReasoning?.(delta.reasoning_content);
      if (delta.content) onContent?.(delta.content);
    },
  });
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parser.feed(value);
  }
  if (failure) throw failure;
}
