// The README's fetch recipe against a server that wants access tokens
// (ACCESS_TOKENS_FILE): without its `token` option the page gets the 401's
// message, with it the answer, streamed or whole.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { model, record, startBoth } from './harness.mjs';
import { askChat, streamChat } from './recipe.mjs';

const TOKEN = 'recipe-token-0123456789abcdef0123';

describe('frontend recipe with an access token', () => {
  let both, url;

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'zju-recipe-token-'));
    const file = join(dir, 'tokens');
    writeFileSync(file, `${TOKEN} name=recipe\n`, { mode: 0o600 });
    both = await startBoth({ serverEnv: { ACCESS_TOKENS_FILE: file } });
    url = both.server.chatUrl;
  });
  after(() => both?.kill());

  it('without the token the recipe rejects with the server\'s 401 message', async () => {
    await assert.rejects(askChat(url, { user_content: 'hi' }), (e) => {
      record(`recipe without token: ${e.message}`);
      assert.match(e.message, /token/i);
      assert.doesNotMatch(e.message, new RegExp(TOKEN));
      return true;
    });
  });

  it('with the token: the whole answer and the streamed one', async () => {
    const whole = await askChat(url, { user_content: 'hi', model: model({ events: 3 }) }, { token: TOKEN });
    assert.ok(whole.choices[0].message.content.length > 0);
    const pieces = [];
    await streamChat(url, { user_content: 'hi', model: model({ events: 3 }) }, {
      token: TOKEN,
      onContent: (d) => pieces.push(d),
    });
    record(`recipe with token, streamed: ${JSON.stringify(pieces)}`);
    assert.equal(pieces.length, 3);
  });

  it('stops cleanly', async () => {
    await both.stop();
  });
});
