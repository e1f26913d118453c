// GET /v1/models and GET /v1/models/{id} with the official `openai` package,
// as a browser app or a chat UI lists the models it offers: the SDK talks to
// the server as if it were the upstream, with a dummy key. The list is the
// upstream's (the mock's) while it has one, the configured MODELS when it
// fails or when the server has no key; a missing id is the SDK's
// NotFoundError; ids with '/' and ':' reach their model (the SDK sends '/'
// as %2F).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';

import OpenAI from 'openai';

import { KEY, record, startBoth, startServer } from './harness.mjs';

const MOCK_IDS = [
  'deepseek-r1-671b',
  'deepseek-v3-671b',
  'deepseek-r1-distill-qwen',
  'qwen2.5-instruct',
  'QwQ-32B',
  'llava-onevision-qwen2-7b-ov',
  'bge-m3',
  'bge-reranker-v2-m3',
];
const CONFIGURED = 'org/tuned:v1.5,plain-model';
const CONFIGURED_IDS = ['org/tuned:v1.5', 'plain-model'];

function client(serverUrl) {
  // maxRetries 0: a failure must show as what the server answered.
  return new OpenAI({ apiKey: 'sk-browser-dummy', baseURL: `${serverUrl}/v1`, maxRetries: 0, timeout: 15000 });
}

async function listIds(openai) {
  const ids = [];
  for await (const m of openai.models.list()) {
    record(JSON.stringify(m));
    assert.equal(m.object, 'model');
    assert.equal(typeof m.created, 'number');
    assert.equal(typeof m.owned_by, 'string');
    ids.push(m.id);
  }
  return ids;
}

/** A second server for one test; stopped, and its logs checked, after fn. */
async function withServer(upstream, env, fn) {
  const server = await startServer(upstream, env);
  try {
    await fn(server);
  } finally {
    await server.stop();
  }
}

describe('openai package: models.list and models.retrieve', () => {
  let both, mock, openai;

  before(async () => {
    both = await startBoth({ serverEnv: { MODELS: CONFIGURED } });
    mock = both.mock;
    openai = client(both.server.url);
  });

  after(() => both?.kill());

  it('models.list() gives the upstream list, fetched once for many calls', async () => {
    await mock.reset();
    const before = (await mock.stats()).models_requests;
    assert.deepEqual(await listIds(openai), MOCK_IDS);
    assert.deepEqual(await listIds(openai), MOCK_IDS);
    const page = await openai.models.list();
    assert.deepEqual(
      page.data.map((m) => m.id),
      MOCK_IDS,
    );
    assert.equal((await mock.stats()).models_requests - before, 1);
  });

  it('models.retrieve(id) gives the model object', async () => {
    const m = await openai.models.retrieve('deepseek-v3-671b');
    record(JSON.stringify(m));
    assert.equal(m.id, 'deepseek-v3-671b');
    assert.equal(m.object, 'model');
    assert.equal(typeof m.created, 'number');
    assert.equal(m.owned_by, 'zju');
  });

  it('models.retrieve of a missing id rejects with NotFoundError', async () => {
    await assert.rejects(openai.models.retrieve('no-such-model'), (e) => {
      assert.ok(e instanceof OpenAI.NotFoundError, `${e?.constructor?.name}: ${e?.message}`);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      assert.match(e.message, /no-such-model/);
      assert.ok(!e.message.includes(KEY));
      return true;
    });
  });

  it('an upstream whose list fails gives the configured list', async () => {
    await mock.config({ models: '500' });
    try {
      await withServer(mock.baseUrl, { MODELS: CONFIGURED, ZJU_RETRY_BUDGET_MS: '0' }, async (server) => {
        const other = client(server.url);
        assert.deepEqual(await listIds(other), CONFIGURED_IDS);
        assert.equal((await other.models.retrieve('plain-model')).id, 'plain-model');
        await assert.rejects(other.models.retrieve('deepseek-v3-671b'), OpenAI.NotFoundError);
      });
    } finally {
      await mock.reset();
    }
  });

  it("without a key: the configured list, ids with '/' and ':' retrieved", async () => {
    await withServer(mock.baseUrl, { MODELS: CONFIGURED, ZJU_API_KEY: '' }, async (server) => {
      const other = client(server.url);
      const before = (await mock.stats()).models_requests;
      assert.deepEqual(await listIds(other), CONFIGURED_IDS);
      const m = await other.models.retrieve('org/tuned:v1.5');
      assert.equal(m.id, 'org/tuned:v1.5');
      assert.equal(m.object, 'model');
      assert.equal((await mock.stats()).models_requests, before);
    });
  });

  it('server and mock stop cleanly: exit 0, no sanitizer report, no key in their logs', async () => {
    await both.stop();
  });
});
