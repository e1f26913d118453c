// The chat page's client code (web/src/chat.js, think.js) in Node.js, for
// the cases a real server seldom produces on demand: a stream that ends
// without its last event, an HTML error page from a proxy, Retry-After as a
// date, and inline <think> tags cut at every possible place. (The page as a
// whole, against the real server, is page.test.mjs.)
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { ChatError, listModels, retryAfterSeconds, streamChat } from '../../web/src/chat.js';
import { createThinkSplitter } from '../../web/src/think.js';

/** Runs fn with a fetch that answers every request with `reply()`. */
async function withFetch(reply, fn) {
  const real = globalThis.fetch;
  const calls = [];
  globalThis.fetch = async (url, init) => {
    calls.push({ url, init });
    return reply();
  };
  try {
    return await fn(calls);
  } finally {
    globalThis.fetch = real;
  }
}

const sse = (...events) => new Response(events.map((e) => `data: ${JSON.stringify(e)}\n\n`).join(''), {
  headers: { 'Content-Type': 'text/event-stream' },
});
const delta = (d, finish = null) => ({ choices: [{ index: 0, delta: d, finish_reason: finish }] });

async function collect(reply) {
  const out = { content: '', reasoning: '', error: null };
  await withFetch(reply, async (calls) => {
    try {
      await streamChat(
        { user_content: 'q', messages: [{ role: 'user', content: 'a' }] },
        { token: 'tok', onContent: (t) => (out.content += t), onReasoning: (t) => (out.reasoning += t) },
      );
    } catch (e) {
      out.error = e;
    }
    out.calls = calls;
  });
  return out;
}

describe('chat.js', () => {
  it('sends the history, stream: true and the Bearer token; resolves on the final event', async () => {
    const got = await collect(() => sse(delta({ reasoning_content: 'hm' }), delta({ content: 'hi' }), delta({}, 'stop')));
    assert.equal(got.error, null);
    assert.deepEqual([got.reasoning, got.content], ['hm', 'hi']);
    const { url, init } = got.calls[0];
    assert.equal(url, 'api/chat');
    assert.equal(init.headers.Authorization, 'Bearer tok');
    assert.deepEqual(JSON.parse(init.body), {
      user_content: 'q',
      messages: [{ role: 'user', content: 'a' }],
      stream: true,
    });
  });

  it('a stream that ends without its final event is an error, the text kept', async () => {
    const got = await collect(() => sse(delta({ content: 'half' })));
    assert.ok(got.error instanceof ChatError);
    assert.equal(got.error.kind, 'cut');
    assert.match(got.error.message, /ended before it was complete/);
    assert.equal(got.content, 'half');
  });

  it("the server's error event is an error with its message", async () => {
    const got = await collect(() => sse(delta({ content: 'x' }), { error: 'upstream connection closed mid-reply' }));
    assert.equal(got.error.kind, 'cut');
    assert.match(got.error.message, /upstream connection closed mid-reply/);
  });

  it('errors before the stream: 400 message, 429 wait (seconds or a date), 5xx, an HTML page, 401', async () => {
    const json = (status, body, headers = {}) => () =>
      new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } });
    let got = await collect(json(400, { error: 'temperature must be a number from 0 to 2' }));
    assert.equal(got.error.kind, 'refused');
    assert.match(got.error.message, /\(400\): temperature must be a number from 0 to 2/);
    got = await collect(json(429, { error: 'rate limit' }, { 'Retry-After': '12' }));
    assert.equal(got.error.kind, 'rate');
    assert.equal(got.error.retryAfter, 12);
    assert.match(got.error.message, /Try again in 12 s/);
    const inAMinute = new Date(Date.now() + 60000).toUTCString();
    got = await collect(json(429, { error: { message: 'slow down' } }, { 'Retry-After': inAMinute }));
    assert.ok(got.error.retryAfter >= 58 && got.error.retryAfter <= 61, String(got.error.retryAfter));
    assert.match(got.error.message, /slow down/);
    got = await collect(() => new Response('<html>502 Bad Gateway</html>', { status: 502, statusText: 'Bad Gateway' }));
    assert.equal(got.error.kind, 'server');
    assert.match(got.error.message, /\(502\): Bad Gateway/);
    got = await collect(json(401, { error: 'an access token is required' }));
    assert.equal(got.error.kind, 'auth');
  });

  it('a server that cannot be reached is said so', async () => {
    const got = await collect(() => {
      throw new TypeError('fetch failed');
    });
    assert.equal(got.error.kind, 'network');
    assert.match(got.error.message, /Cannot reach the server/);
  });

  it('listModels reads the ids of /v1/models', async () => {
    const ids = await withFetch(
      () => new Response(JSON.stringify({ object: 'list', data: [{ id: 'a' }, { id: 'b' }, { nope: 1 }] })),
      () => listModels(''),
    );
    assert.deepEqual(ids, ['a', 'b']);
  });

  it('retryAfterSeconds', () => {
    assert.equal(retryAfterSeconds(null), null);
    assert.equal(retryAfterSeconds(' 3 '), 3);
    assert.equal(retryAfterSeconds('soon'), null);
  });
});

describe('think.js', () => {
  const text = 'pre<think>Let me think.</think>The answer<b> is <thin>42</think>';
  // The tags may come cut at any place: every split in two and in three.
  function run(pieces) {
    let reasoning = '';
    let content = '';
    const s = createThinkSplitter({ onReasoning: (t) => (reasoning += t), onContent: (t) => (content += t) });
    for (const p of pieces) s.push(p);
    s.end();
    return { reasoning, content };
  }
  const want = { reasoning: 'Let me think.', content: 'preThe answer<b> is <thin>42</think>' };

  it('splits the same wherever the pieces are cut', () => {
    for (let i = 0; i <= text.length; i++) {
      assert.deepEqual(run([text.slice(0, i), text.slice(i)]), want, `cut at ${i}`);
      for (let j = i; j <= text.length; j++) {
        assert.deepEqual(run([text.slice(0, i), text.slice(i, j), text.slice(j)]), want, `cut at ${i}, ${j}`);
      }
    }
    assert.deepEqual(run([...text]), want, 'one character a piece');
  });

  it('a text ending in what could start a tag gives it back at the end', () => {
    assert.deepEqual(run(['answer <thi']), { reasoning: '', content: 'answer <thi' });
    assert.deepEqual(run(['<think>still thinking</th']), { reasoning: 'still thinking</th', content: '' });
  });
});
