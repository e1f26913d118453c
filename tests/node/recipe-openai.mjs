// zju-chat-server through its OpenAI-compatible API with the official
// `openai` package. `make test` runs this very code: tests/node/recipe-openai.mjs.
import OpenAI from 'openai';

// serverUrl: where the page reaches zju-chat-server, e.g. 'http://localhost:5001'.
export function gatewayClient(serverUrl) {
  return new OpenAI({
    baseURL: `${serverUrl}/v1`,
    // The server holds the real key and never sends this one upstream; the
    // SDK only wants a non-empty string, hence no secret in the page.
    apiKey: 'not-needed',
    dangerouslyAllowBrowser: true,
    // The server already retries the upstream's 429 and 5xx within its budget.
    maxRetries: 0,
  });
}

// The answer as it is generated: onReasoning and onContent get each piece.
// Rejects with an OpenAI.APIError (e.status, e.message) when the request is
// refused or the upstream fails mid-stream. `signal` aborting stops the
// upstream too: before the answer starts the call rejects with an
// OpenAI.APIUserAbortError, once it streams the loop just ends.
export async function streamAnswer(openai, request, { onContent, onReasoning, signal } = {}) {
  const stream = await openai.chat.completions.create({ ...request, stream: true }, { signal });
  for await (const chunk of stream) {
    const delta = chunk.choices[0]?.delta ?? {};
    if (delta.reasoning_content) onReasoning?.(delta.reasoning_content);
    if (delta.content) onContent?.(delta.content);
  }
}
