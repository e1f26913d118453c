// The official `openai` package against the server's OpenAI-compatible API
// (POST /v1/chat/completions) and the mock upstream, as a browser app or a
// Node.js backend uses it: the SDK talks to the server as if it were the
// upstream, with a dummy key; the server puts its own key on the upstream
// call; answers and stream chunks come through unchanged; each failure
// arrives as the error class SDK users catch (never an APIConnectionError,
// which would mean the SDK could not read the server's answer); a failure
// after the stream started is thrown from the iterator as an APIError; an
// abort on the client ends the upstream call at once (checked at the mock).
// GET /v1/models has its own file (models.test.mjs).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import OpenAI from 'openai';

import { KEY, freePort, model, record, sleep, startBoth, startServer } from './harness.mjs';

// The key a browser app holds: anything; it must never reach the upstream.
const BROWSER_KEY = 'sk-browser-dummy-not-the-upstream-key';
const CANCEL_LIMIT_MS = 1000;

/** A fetch that keeps a copy of every response body as text (recorded for
 * the run's key scan), so a test sees the bytes the SDK parsed. */
function capturingFetch() {
  const bodies = [];
  const copies = [];
  const fetchFn = async (...args) => {
    const res = await fetch(...args);
    if (!res.body) return res;
    const [mine, copy] = res.body.tee();
    copies.push(
      new Response(copy).text().then(
        (t) => {
          bodies.push(t);
          record(`openai sdk ${res.status}: ${t}`);
        },
        () => {},
      ),
    );
    return new Response(mine, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  return { fetchFn, bodies: async () => (await Promise.all(copies), bodies) };
}

function client(serverUrl, options = {}) {
  // maxRetries 0: the server has its own retry budget; the SDK's retries
  // (429, 5xx, and its own timeouts) would hide which status came back.
  return new OpenAI({ apiKey: BROWSER_KEY, baseURL: `${serverUrl}/v1`, maxRetries: 0, timeout: 15000, ...options });
}

/** A second server for one test (other env: a wrong key, a dead upstream,
 * short timeouts); stopped, and its logs checked, when fn is done. */
async function withServer(upstream, env, fn) {
  const server = await startServer(upstream, env);
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}

const hi = [{ role: 'user', content: 'hi' }];

/** Iterates a stream; returns the content pieces and what it threw. */
async function drain(stream) {
  const out = { content: [], reasoning: [], chunks: 0, error: null };
  try {
    for await (const chunk of stream) {
      out.chunks++;
      const delta = chunk.choices[0]?.delta ?? {};
      if (delta.content) out.content.push(delta.content);
      if (delta.reasoning_content) out.reasoning.push(delta.reasoning_content);
    }
  } catch (e) {
    out.error = e;
  }
  return out;
}

/** The error an SDK call raised: the expected class and status, the server's
 * OpenAI-shaped error object, a message, never the key. */
async function rejectsWith(promise, ErrorClass, status, code) {
  let caught;
  await assert.rejects(promise, (e) => {
    caught = e;
    return true;
  });
  const e = caught;
  record(`openai sdk error ${e?.constructor?.name} ${e?.status}: ${e?.message}`);
  assert.ok(!(e instanceof OpenAI.APIConnectionError), `the SDK could not read the answer: ${e}`);
  assert.ok(e instanceof ErrorClass, `${e?.constructor?.name} ${e?.status}: ${e?.message}`);
  assert.equal(e.status, status);
  assert.equal(typeof e.error?.message, 'string', JSON.stringify(e.error));
  assert.ok(e.error.message.length > 0);
  assert.equal(typeof e.error.type, 'string');
  assert.ok('param' in e.error && 'code' in e.error, JSON.stringify(e.error));
  if (code !== undefined) assert.equal(e.code, code);
  assert.ok(!e.message.includes(KEY) && !JSON.stringify(e.error).includes(KEY));
  return e;
}

describe('openai package against /v1/chat/completions of the server', () => {
  let both, mock, openai;

  before(async () => {
    both = await startBoth();
    mock = both.mock;
    openai = client(both.server.url);
  });

  after(() => both?.kill());

  const create = (api, m, extra = {}, options = {}) =>
    api.chat.completions.create({ model: m, messages: hi, ...extra }, options);

  /** The mock's own error body for a model (directives included), asked
   * directly with the key: what the server must pass on. */
  async function upstreamError(m) {
    const res = await fetch(`${mock.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: m, messages: hi }),
      signal: AbortSignal.timeout(5000),
    });
    return { status: res.status, body: await res.json() };
  }

  // ------------------------------------------------------------ answers

  it('chat.completions.create, non-stream: text, reasoning, usage', async () => {
    const m = model({ events: 9, reasoning: 3 });
    const expected = await mock.answer(m);
    const r = await openai.chat.completions.create({
      model: m,
      messages: [
        { role: 'system', content: 'You are a helpful assistant.' },
        { role: 'user', content: '你好' },
      ],
    });
    record(JSON.stringify(r));
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.content, expected.content);
    assert.equal(r.choices[0].message.reasoning_content, expected.reasoning_content);
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.usage.completion_tokens, 12);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
  });

  it('the upstream gets the server key, never the browser key', async () => {
    await openai.chat.completions.create({ model: model({ events: 1 }), messages: hi });
    const last = await mock.control('GET', '/_mock/last');
    assert.equal(last.headers.authorization, `Bearer ${KEY}`);
    assert.ok(!JSON.stringify(last).includes(BROWSER_KEY));
  });

  it('chat.completions.create, stream: every text and reasoning delta, [DONE] ends the iteration', async () => {
    const m = model({ events: 23, reasoning: 7 });
    const expected = await mock.answer(m);
    const { fetchFn, bodies } = capturingFetch();
    const stream = await create(client(both.server.url, { fetch: fetchFn }), m, { stream: true });
    const got = await drain(stream);
    assert.equal(got.error, null);
    assert.equal(got.content.length, 23, 'one chunk per content delta');
    assert.equal(got.reasoning.length, 7, 'one chunk per reasoning delta');
    assert.equal(got.content.join(''), expected.content);
    assert.equal(got.reasoning.join(''), expected.reasoning_content);
    const [raw] = await bodies();
    assert.ok(raw.endsWith('data: [DONE]\n\n'), raw.slice(-200));
  });

  it('stream_options.include_usage: the usage chunk (no choices) ends the stream', async () => {
    const m = model({ events: 23, reasoning: 7 });
    const stream = await create(openai, m, { stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    record(JSON.stringify(chunks));
    const last = chunks.at(-1);
    assert.deepEqual(last.choices, [], 'OpenAI puts the usage in a last chunk without choices');
    assert.equal(last.usage.completion_tokens, 30);
    assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
    assert.equal(chunks.at(-2).choices[0].finish_reason, 'stop');
    assert.ok(chunks.slice(0, -1).every((c) => c.usage === null), 'the other chunks carry "usage": null');
  });

  // ------------------------------------------------------------ errors

  for (const stream of [false, true]) {
    const mode = stream ? 'stream' : 'non-stream';

    it(`400 from the server's own checks -> BadRequestError, no upstream call (${mode})`, async () => {
      const before = (await mock.stats()).chat_requests;
      const e = await rejectsWith(
        openai.chat.completions.create({ model: model(), messages: [], stream }),
        OpenAI.BadRequestError,
        400,
        'invalid_request',
      );
      assert.match(e.error.message, /messages/);
      assert.equal(e.type, 'invalid_request_error');
      assert.equal((await mock.stats()).chat_requests, before);
    });

    it(`400 from the upstream -> BadRequestError with the upstream's error object (${mode})`, async () => {
      const m = model({ status: 400 });
      const up = await upstreamError(m);
      assert.equal(up.status, 400);
      const e = await rejectsWith(create(openai, m, { stream }), OpenAI.BadRequestError, 400);
      assert.deepEqual(e.error, up.body.error);
    });

    it(`404 unknown model (the upstream's) -> NotFoundError with its code and param (${mode})`, async () => {
      const up = await upstreamError('no-such-model');
      assert.equal(up.status, 404);
      const e = await rejectsWith(create(openai, 'no-such-model', { stream }), OpenAI.NotFoundError, 404, 'model_not_found');
      assert.equal(e.param, 'model');
      assert.deepEqual(e.error, up.body.error);
    });

    it(`422 -> UnprocessableEntityError (${mode})`, async () => {
      const m = model({ status: 422 });
      const e = await rejectsWith(create(openai, m, { stream }), OpenAI.UnprocessableEntityError, 422);
      assert.deepEqual(e.error, (await upstreamError(m)).body.error);
    });

    it(`429 -> RateLimitError with the upstream's Retry-After (${mode})`, async () => {
      // 30 s does not fit the server's retry budget: answered at once.
      const e = await rejectsWith(
        create(openai, model({ status: 429, retry_after: 30 }), { stream }),
        OpenAI.RateLimitError,
        429,
      );
      assert.equal(e.headers.get('retry-after'), '30');
      assert.equal(e.type, 'rate_limit_error');
    });

    it(`upstream 401/403 (the server's key) -> 502 InternalServerError upstream_auth_failed, not the SDK's AuthenticationError (${mode})`, async () => {
      for (const status of [401, 403]) {
        const e = await rejectsWith(
          create(openai, model({ status, echo_key: 1 }), { stream }),
          OpenAI.InternalServerError,
          502,
          'upstream_auth_failed',
        );
        assert.ok(!(e instanceof OpenAI.AuthenticationError) && !(e instanceof OpenAI.PermissionDeniedError));
      }
    });

    it(`a wrong ZJU_API_KEY on the server -> 502 upstream_auth_failed (${mode})`, async () => {
      await withServer(mock.baseUrl, { ZJU_API_KEY: 'sk-wrong-server-key-0123456789' }, async (server) => {
        await rejectsWith(create(client(server.url), model(), { stream }), OpenAI.InternalServerError, 502, 'upstream_auth_failed');
      });
    });

    it(`upstream 5xx -> 502 InternalServerError upstream_error (${mode})`, async () => {
      // (The server retries a 5xx within its budget; the mock answers 500 each time.)
      await rejectsWith(create(openai, model({ status: 500 }), { stream }), OpenAI.InternalServerError, 502, 'upstream_error');
    });

    it(`upstream unreachable -> 503 InternalServerError (${mode})`, async () => {
      const dead = await freePort(); // nobody listens there
      await withServer(`http://127.0.0.1:${dead}/v1`, { ZJU_RETRY_BUDGET_MS: 0 }, async (server) => {
        await rejectsWith(create(client(server.url), model(), { stream }), OpenAI.InternalServerError, 503, 'upstream_unreachable');
      });
    });
  }

  it('upstream silent -> 504 InternalServerError (non-stream, stream); silent mid-stream -> APIError from the iterator', async () => {
    await withServer(mock.baseUrl, { ZJU_FIRST_BYTE_TIMEOUT_MS: 700, ZJU_IDLE_TIMEOUT_MS: 700 }, async (server) => {
      const api = client(server.url);
      for (const stream of [false, true]) {
        await rejectsWith(create(api, model({ think: 5000 }), { stream }), OpenAI.InternalServerError, 504, 'upstream_timeout');
      }
      const got = await drain(await create(api, model({ events: 5, reasoning: 0, fault: 'hang_mid', after: 3 }), { stream: true }));
      assert.equal(got.content.length, 2); // role chunk, 2 pieces, then silence
      assert.ok(got.error instanceof OpenAI.APIError, String(got.error));
      assert.equal(got.error.status, undefined, 'the status line was 200: the error came as an event');
      assert.equal(got.error.code, 'upstream_timeout');
    });
  });

  // ------------------------------------------------------------ mid-stream failure

  it('a stream the upstream drops: the pieces so far, then the iterator throws APIError with the error event', async () => {
    const m = model({ events: 10, reasoning: 2, fault: 'drop_mid', after: 5 });
    const full = await mock.answer(model({ events: 10, reasoning: 2 }));
    const { fetchFn, bodies } = capturingFetch();
    const stream = await create(client(both.server.url, { fetch: fetchFn }), m, { stream: true });
    const got = await drain(stream);
    // role, 2 reasoning deltas, 2 content deltas, then the connection drops
    assert.equal(got.reasoning.join(''), full.reasoning_content);
    assert.equal(got.content.length, 2);
    assert.equal(got.content.join(''), full.content.slice(0, got.content.join('').length));
    const e = got.error;
    // The SDK raises a data: {"error": ...} event as a plain APIError: no
    // status (the response was a 200), the event's object as e.error.
    assert.ok(e instanceof OpenAI.APIError, String(e));
    assert.ok(!(e instanceof OpenAI.APIConnectionError), String(e));
    assert.equal(e.constructor, OpenAI.APIError);
    assert.equal(e.status, undefined);
    assert.equal(e.code, 'upstream_unreachable');
    assert.equal(e.message, e.error.message);
    assert.ok(e.message.length > 0 && !e.message.includes(KEY));
    const [raw] = await bodies();
    const events = raw.match(/^data: .*$/gm);
    assert.equal(events.filter((d) => d.startsWith('data: {"error"')).length, 1, raw);
    assert.deepEqual(JSON.parse(events.at(-1).slice(6)).error, e.error, 'the error event is the last');
    assert.ok(!raw.includes('[DONE]'), 'no [DONE] after an error');
  });

  // ------------------------------------------------------------ aborts

  /** The mock's clock right before the client gives up. */
  async function mockNow() {
    return (await mock.stats()).now_ms;
  }

  /** The upstream connection was closed by the server within a second of
   * abortAt (the mock's clock, read before the abort, so an upper bound),
   * and no upstream stream is left running. */
  async function upstreamClosedWithin(before, abortAt) {
    const st = await mock.waitStat('connections_closed_by_client', (n) => n > before.connections_closed_by_client, 3000);
    assert.ok(st.connections_closed_by_client > before.connections_closed_by_client, 'upstream never cancelled');
    const took = st.last_close_ms - abortAt;
    assert.ok(took < CANCEL_LIMIT_MS, `upstream closed ${took} ms after the abort`);
    const idle = await mock.waitStat('streams_active', (n) => n === 0, 2000);
    assert.equal(idle.streams_active, 0);
    return took;
  }

  for (const stream of [false, true]) {
    const mode = stream ? 'stream' : 'non-stream';

    it(`AbortController before the first byte: APIUserAbortError, upstream closed within a second (${mode})`, async () => {
      const before = await mock.stats();
      const controller = new AbortController();
      // The upstream thinks for 20 s before its response headers.
      const pending = create(openai, model({ think: 20000 }), { stream }, { signal: controller.signal });
      pending.catch(() => {}); // asserted below
      await mock.waitStat('chat_requests', (n) => n > before.chat_requests, 3000);
      await sleep(200);
      const abortAt = await mockNow();
      controller.abort();
      await assert.rejects(pending, OpenAI.APIUserAbortError);
      await upstreamClosedWithin(before, abortAt);
    });
  }

  it('AbortController mid-stream: the iteration ends quietly, upstream closed within a second', async () => {
    const before = await mock.stats();
    const controller = new AbortController();
    const stream = await create(openai, model({ events: 2000, reasoning: 0, delay: 20 }), { stream: true }, { signal: controller.signal });
    let pieces = 0;
    let abortAt = 0;
    // The SDK's stream iterator ends quietly on an abort (it returns on an
    // AbortError instead of throwing), as a "stop" button wants.
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content && ++pieces === 3) {
        abortAt = await mockNow();
        controller.abort();
      }
    }
    assert.equal(pieces, 3, 'no piece after the abort');
    await upstreamClosedWithin(before, abortAt);
  });

  it('break out of the for await loop: the SDK aborts, upstream closed within a second', async () => {
    const before = await mock.stats();
    const stream = await create(openai, model({ events: 2000, reasoning: 0, delay: 20 }), { stream: true });
    let pieces = 0;
    let abortAt = 0;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content && ++pieces === 3) {
        abortAt = await mockNow();
        break;
      }
    }
    await upstreamClosedWithin(before, abortAt);
    // and the server goes on serving
    const r = await create(openai, model({ events: 2 }));
    assert.equal(r.choices[0].finish_reason, 'stop');
  });

  it('server and mock stop cleanly: exit 0, no sanitizer report, no key in their logs', async () => {
    await both.stop();
  });
});
