// The README's frontend recipe (recipe.mjs: fetch + ReadableStream +
// eventsource-parser) against the real server and the mock upstream, as a
// React or Vue app runs it: stream: true answers reassembled from the deltas,
// heartbeats, error events, and a user pressing "stop" mid-answer.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { model, record, startBoth } from './harness.mjs';
import { streamChat } from './recipe.mjs';

// A silence of 300 ms between events spans several 60 ms heartbeats.
const HEARTBEAT_MS = 60;

/** Runs the recipe; returns the pieces it delivered and its error, if any. */
async function runRecipe(url, request, options = {}) {
  const out = { content: [], reasoning: [], error: null };
  try {
    await streamChat(url, request, {
      onContent: (d) => out.content.push(d),
      onReasoning: (d) => out.reasoning.push(d),
      ...options,
    });
  } catch (e) {
    out.error = e;
  }
  record(`recipe ${JSON.stringify(request)}: ${JSON.stringify({ ...out, error: out.error?.message })}`);
  return out;
}

/** Replaces the global fetch while fn runs with one that also keeps a copy
 * of every response body as text, so a test sees the bytes the recipe got. */
async function capturingBodies(fn) {
  const realFetch = globalThis.fetch;
  const bodies = [];
  const copies = [];
  globalThis.fetch = async (...args) => {
    const res = await realFetch(...args);
    if (!res.body) return res;
    const [mine, copy] = res.body.tee();
    copies.push(
      new Response(copy).text().then(
        (t) => bodies.push(t),
        () => {},
      ),
    );
    return new Response(mine, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
  try {
    await fn();
  } finally {
    globalThis.fetch = realFetch;
  }
  await Promise.all(copies);
  return bodies;
}

describe('frontend recipe, stream: true', () => {
  let both, url, mock;

  before(async () => {
    both = await startBoth({ serverEnv: { HEARTBEAT_MS } });
    url = both.server.chatUrl;
    mock = both.mock;
  });

  after(() => both?.kill());

  it('reassembles every content and reasoning_content delta into the mock answer', async () => {
    const m = model({ events: 23, reasoning: 7 });
    const expected = await mock.answer(m);
    const got = await runRecipe(url, { user_content: '你好', model: m });
    assert.equal(got.error, null);
    assert.equal(got.content.length, 23, 'one callback per content delta');
    assert.equal(got.reasoning.length, 7, 'one callback per reasoning delta');
    assert.equal(got.content.join(''), expected.content);
    assert.equal(got.reasoning.join(''), expected.reasoning_content);
  });

  it('ignores the `: ping` heartbeats of a silent stream', async () => {
    const m = model({ events: 3, reasoning: 1, delay: 300 });
    const expected = await mock.answer(m);
    let got;
    const [raw] = await capturingBodies(async () => {
      got = await runRecipe(url, { user_content: 'hi', model: m });
    });
    const pings = raw.match(/^: ping\n\n/gm) ?? [];
    assert.ok(pings.length >= 2, `heartbeats expected in the stream: ${raw}`);
    assert.equal(got.error, null);
    assert.equal(got.content.join(''), expected.content);
    assert.equal(got.reasoning.join(''), expected.reasoning_content);
  });

  it('rejects with the error event of an upstream that drops mid-stream', async () => {
    const full = await mock.answer(model({ events: 10, reasoning: 2 }));
    // role, 2 reasoning deltas, 2 content deltas, then the connection drops
    const m = model({ events: 10, reasoning: 2, fault: 'drop_mid', after: 5 });
    let got;
    const [raw] = await capturingBodies(async () => {
      got = await runRecipe(url, { user_content: 'hi', model: m });
    });
    const errorEvents = raw.match(/^data: \{"error":.*\n\n/gm) ?? [];
    assert.equal(errorEvents.length, 1, raw);
    assert.ok(got.error instanceof Error, 'the recipe must reject');
    assert.equal(got.error.message, JSON.parse(errorEvents[0].slice(6)).error);
    assert.ok(got.error.message.length > 0);
    assert.equal(got.reasoning.join(''), full.reasoning_content);
    assert.equal(got.content.join(''), full.content.slice(0, got.content.join('').length));
    assert.equal(got.content.length, 2);
  });

  it('rejects with the server message when the request itself is refused', async () => {
    const got = await runRecipe(url, { user_content: '' });
    assert.ok(got.error instanceof Error);
    assert.match(got.error.message, /user_content/);
    assert.deepEqual(got.content, []);
  });

  it('aborting mid-stream closes the upstream connection within a second', async () => {
    const before = await mock.stats();
    const controller = new AbortController();
    let pieces = 0;
    let abortedAt = 0;
    const got = await runRecipe(
      url,
      { user_content: 'hi', model: model({ events: 2000, reasoning: 0, delay: 20 }) },
      {
        signal: controller.signal,
        // the user presses "stop" after the third piece of the answer
        onContent: () => {
          if (++pieces === 3) {
            abortedAt = Date.now();
            controller.abort();
          }
        },
      },
    );
    assert.equal(got.error?.name, 'AbortError', String(got.error));
    assert.ok(abortedAt > 0);
    const st = await mock.waitStat(
      'connections_closed_by_client',
      (n) => n > before.connections_closed_by_client,
      3000,
    );
    const took = Date.now() - abortedAt;
    assert.ok(st.connections_closed_by_client > before.connections_closed_by_client, 'upstream never cancelled');
    assert.ok(took < 1000, `upstream closed ${took} ms after the abort`);
    const idle = await mock.waitStat('streams_active', (n) => n === 0, 2000);
    assert.equal(idle.streams_active, 0);
    // and the server goes on serving
    const next = await runRecipe(url, { user_content: 'hi', model: model({ events: 2 }) });
    assert.equal(next.error, null);
    assert.equal(next.content.length, 2);
  });

  it('server and mock stop cleanly: exit 0, no sanitizer report, no key in their logs', async () => {
    await both.stop();
  });
});
