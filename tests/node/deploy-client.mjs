// The official `openai` package against a deployment behind nginx over TLS:
// run by tests/e2e/test_deploy_two_instances.py, which starts the deployment
// (redis-server, two instances, nginx with docs/deploy/nginx-two-instances.conf,
// the mock) and checks what this prints. Node trusts the test's self-signed
// certificate through NODE_EXTRA_CA_CERTS, as a machine with the site's CA
// would. The client is the README's recipe (recipe-openai.mjs), given the
// access token as its key (withOptions), as a page of a deployment with
// tokens does.
//
//   node deploy-client.mjs SITE_URL TOKEN LIMITED_TOKEN SLOW_MODEL
//   node deploy-client.mjs SITE_URL TOKEN down     (every instance down: nginx's 502)
//
// Prints one JSON object: what each call returned or raised.
import OpenAI from 'openai';

import { gatewayClient, streamAnswer } from './recipe-openai.mjs';

const [siteUrl, token, limitedToken, slowModel] = process.argv.slice(2);
const hi = [{ role: 'user', content: 'hi' }];
const out = {};

function failure(e) {
  return {
    name: e?.constructor?.name,
    isApiError: e instanceof OpenAI.APIError,
    status: e?.status ?? null,
    message: String(e?.message),
    code: e?.code ?? null,
    retryAfter: e?.headers?.get?.('retry-after') ?? null,
  };
}

async function attempt(name, fn) {
  try {
    out[name] = { ok: await fn() };
  } catch (e) {
    out[name] = { error: failure(e) };
  }
}

const openai = gatewayClient(siteUrl).withOptions({ apiKey: token, timeout: 20000 });

if (limitedToken === 'down') {
  await attempt('completion', async () => (await openai.chat.completions.create({ messages: hi })).object);
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

await attempt('models', async () => (await openai.models.list()).data.map((m) => m.id));

await attempt('completion', async () => {
  const c = await openai.chat.completions.create({ messages: hi });
  return { object: c.object, content: c.choices[0].message.content, usage: c.usage };
});

// The README's streamAnswer, each piece timed: the first must come long
// before the last is produced (nginx passes events as they come).
await attempt('stream', async () => {
  const t0 = Date.now();
  const pieces = [];
  await streamAnswer(openai, { model: slowModel, messages: hi }, {
    onContent: (d) => pieces.push([Date.now() - t0, d]),
  });
  return { pieces };
});

await attempt('wrongToken', async () => {
  await openai.withOptions({ apiKey: 'tok-nobody-has-this-one-0123456789' }).models.list();
  return 'answered';
});

// The limited token (rpm=1): one answer, then the limit as a RateLimitError.
const limited = openai.withOptions({ apiKey: limitedToken });
await attempt('limitedFirst', async () => (await limited.chat.completions.create({ messages: hi })).object);
await attempt('limitedSecond', async () => (await limited.chat.completions.create({ messages: hi })).object);

process.stdout.write(`${JSON.stringify(out)}\n`);
