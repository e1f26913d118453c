// stream: false with fetch, as a browser page on another origin calls it:
// the recipe's askChat gets the upstream's JSON answer; refused requests are
// {"error": "..."} with the CORS headers the browser needs to let the page
// read them (without those, the page sees only an opaque network error).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import { model, record, startBoth } from './harness.mjs';
import { askChat } from './recipe.mjs';

const ORIGIN = 'http://app.example:3000';

describe('fetch, stream: false, from another origin', () => {
  let both, url, mock;

  before(async () => {
    both = await startBoth({ serverEnv: { CORS_ORIGINS: ORIGIN } });
    url = both.server.chatUrl;
    mock = both.mock;
  });

  after(() => both?.kill());

  /** A POST the way a page's fetch sends it (the browser adds Origin). */
  async function post(body, contentType = 'application/json') {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'Content-Type': contentType, Origin: ORIGIN },
      body,
    });
    const text = await res.text();
    record(`${res.status} ${JSON.stringify([...res.headers])}\n${text}`);
    return { res, text };
  }

  function assertJsonError({ res, text }, status) {
    assert.equal(res.status, status, text);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/i);
    assert.equal(res.headers.get('access-control-allow-origin'), ORIGIN);
    const body = JSON.parse(text);
    assert.equal(typeof body.error, 'string', text);
    assert.ok(body.error.length > 0, text);
    return body.error;
  }

  it('askChat returns the upstream answer: content, reasoning_content, usage', async () => {
    const m = model({ events: 9, reasoning: 3 });
    const expected = await mock.answer(m);
    const answer = await askChat(url, { user_content: '用一句话介绍浙江大学', model: m });
    record(JSON.stringify(answer));
    assert.equal(answer.object, 'chat.completion');
    assert.deepEqual(answer.choices[0].message, expected);
    assert.equal(answer.choices[0].finish_reason, 'stop');
    assert.equal(answer.usage.completion_tokens, 12);
  });

  it('the answer carries the CORS header for the page', async () => {
    const r = await post(JSON.stringify({ user_content: 'hi', model: model({ events: 2 }) }));
    assert.equal(r.res.status, 200, r.text);
    assert.equal(r.res.headers.get('access-control-allow-origin'), ORIGIN);
    assert.equal(JSON.parse(r.text).choices[0].message.content, (await mock.answer(model({ events: 2 }))).content);
  });

  it('the preflight of a JSON POST allows it', async () => {
    const res = await fetch(url, {
      method: 'OPTIONS',
      headers: {
        Origin: ORIGIN,
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'content-type',
      },
    });
    await res.arrayBuffer();
    assert.ok(res.status >= 200 && res.status < 300, `preflight answered ${res.status}`);
    assert.equal(res.headers.get('access-control-allow-origin'), ORIGIN);
    assert.match(res.headers.get('access-control-allow-methods') ?? '', /\bPOST\b/);
    assert.match(res.headers.get('access-control-allow-headers') ?? '', /content-type/i);
  });

  for (const [name, body] of [
    ['invalid JSON', '{"user_content": '],
    ['not an object', '["hi"]'],
    ['user_content missing', '{}'],
    ['user_content empty', '{"user_content": ""}'],
    ['user_content not a string', '{"user_content": 42}'],
    ['model not a string', '{"user_content": "hi", "model": 7}'],
    ['stream not a boolean', '{"user_content": "hi", "stream": "yes"}'],
  ]) {
    it(`400 {"error"} with CORS: ${name}`, async () => {
      assertJsonError(await post(body), 400);
    });
  }

  for (const ctype of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x']) {
    it(`415 {"error"} with CORS: Content-Type ${ctype}`, async () => {
      assertJsonError(await post('{"user_content": "hi"}', ctype), 415);
    });
  }

  it('askChat rejects with the server message', async () => {
    await assert.rejects(askChat(url, { user_content: '' }), (e) => {
      assert.ok(e instanceof Error);
      assert.match(e.message, /user_content/);
      return true;
    });
  });

  it('the upstream never saw the refused requests', async () => {
    const before = (await mock.stats()).chat_requests;
    await post('{"user_content": ""}');
    await post('{"user_content": "hi"}', 'text/plain');
    assert.equal((await mock.stats()).chat_requests, before);
  });

  it('server and mock stop cleanly: exit 0, no sanitizer report, no key in their logs', async () => {
    await both.stop();
  });
});
