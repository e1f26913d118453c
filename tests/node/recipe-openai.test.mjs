// The README's `openai` package recipe (recipe-openai.mjs) against the real
// server and the mock upstream, exactly as a page runs it: the answer
// reassembled from the deltas, a refused request and a mid-stream failure
// as OpenAI.APIError, and the stop button (abort) ending the upstream call.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import OpenAI from 'openai';

import { DEFAULT_MODEL, KEY, model, record, startBoth } from './harness.mjs';
import { gatewayClient, streamAnswer } from './recipe-openai.mjs';

const hi = [{ role: 'user', content: 'hi' }];

/** Runs the recipe; returns the pieces it delivered and its error, if any. */
async function runRecipe(openai, request, options = {}) {
  const out = { content: [], reasoning: [], error: null };
  try {
    await streamAnswer(openai, request, {
      onContent: (d) => out.content.push(d),
      onReasoning: (d) => out.reasoning.push(d),
      ...options,
    });
  } catch (e) {
    out.error = e;
  }
  record(`recipe-openai ${JSON.stringify(request)}: ${JSON.stringify({ ...out, error: out.error?.message })}`);
  return out;
}

describe('README recipe with the openai package, against /v1', () => {
  let both, mock, openai;

  before(async () => {
    both = await startBoth();
    mock = both.mock;
    openai = gatewayClient(both.server.url);
  });

  after(() => both?.kill());

  it('reassembles every content and reasoning_content delta into the mock answer', async () => {
    const m = model({ events: 23, reasoning: 7 });
    const expected = await mock.answer(m);
    const got = await runRecipe(openai, { model: m, messages: [{ role: 'user', content: '你好' }] });
    assert.equal(got.error, null);
    assert.equal(got.content.length, 23, 'one callback per content delta');
    assert.equal(got.reasoning.length, 7, 'one callback per reasoning delta');
    assert.equal(got.content.join(''), expected.content);
    assert.equal(got.reasoning.join(''), expected.reasoning_content);
  });

  it('no model named: the server default answers', async () => {
    const got = await runRecipe(openai, { messages: hi });
    assert.equal(got.error, null);
    assert.ok(got.content.length > 0);
    const last = await mock.control('GET', '/_mock/last');
    assert.equal(JSON.parse(last.body).model, DEFAULT_MODEL);
  });

  it('a refused request rejects with the status and the message', async () => {
    const got = await runRecipe(openai, { model: model(), messages: [] });
    assert.ok(got.error instanceof OpenAI.BadRequestError, String(got.error));
    assert.equal(got.error.status, 400);
    assert.match(got.error.message, /messages/);
    const upstream = await runRecipe(openai, { model: model({ status: 429, retry_after: 30 }), messages: hi });
    assert.ok(upstream.error instanceof OpenAI.RateLimitError, String(upstream.error));
    assert.ok(!upstream.error.message.includes(KEY));
  });

  it('an upstream that drops mid-stream: the pieces so far, then an APIError', async () => {
    const got = await runRecipe(openai, { model: model({ events: 10, reasoning: 0, fault: 'drop_mid', after: 3 }), messages: hi });
    assert.equal(got.content.length, 2);
    assert.ok(got.error instanceof OpenAI.APIError, String(got.error));
    assert.ok(got.error.message.length > 0 && !got.error.message.includes(KEY));
  });

  it('the stop button (abort mid-stream) resolves and closes the upstream connection within a second', async () => {
    const before = await mock.stats();
    const controller = new AbortController();
    let pieces = 0;
    let abortedAt = 0;
    const got = await runRecipe(
      openai,
      { model: model({ events: 2000, reasoning: 0, delay: 20 }), messages: hi },
      {
        signal: controller.signal,
        onContent: () => {
          if (++pieces === 3) {
            abortedAt = Date.now();
            controller.abort();
          }
        },
      },
    );
    assert.equal(got.error, null, 'the SDK ends the loop quietly on an abort');
    assert.equal(pieces, 3);
    const st = await mock.waitStat('connections_closed_by_client', (n) => n > before.connections_closed_by_client, 3000);
    const took = Date.now() - abortedAt;
    assert.ok(st.connections_closed_by_client > before.connections_closed_by_client, 'upstream never cancelled');
    assert.ok(took < 1000, `upstream closed ${took} ms after the abort`);
    assert.equal((await mock.waitStat('streams_active', (n) => n === 0, 2000)).streams_active, 0);
  });

  it('server and mock stop cleanly: exit 0, no sanitizer report, no key in their logs', async () => {
    await both.stop();
  });
});
