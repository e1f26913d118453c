// The chat page (web/, served by zju-chat-server at /) in a real browser:
// Debian's Chromium driven by playwright-core (no browser download), against
// the real server and the mock upstream. A user asks, sees the answer and
// the reasoning stream in, asks again with the history, stops an answer,
// meets errors, hostile model output, an access token prompt, a phone-sized
// screen and the keyboard. Skipped when /usr/bin/chromium is missing
// (make test-deps installs it). Screenshots (page-*.png) go to
// $ZJU_PAGE_SHOTS, else $ZJU_E2E_LOG_DIR (which scripts/test.sh keeps when
// a test failed), else a temporary directory removed at exit.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { record, startBoth } from './harness.mjs';

const CHROMIUM = process.env.ZJU_CHROMIUM || '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : `no ${CHROMIUM} (make test-deps installs chromium)`;
const SHOTS = process.env.ZJU_PAGE_SHOTS || process.env.ZJU_E2E_LOG_DIR || mkdtempSync(join(tmpdir(), 'zju-page-'));
if (!process.env.ZJU_PAGE_SHOTS && !process.env.ZJU_E2E_LOG_DIR) process.on('exit', () => rmSync(SHOTS, { recursive: true, force: true }));
mkdirSync(SHOTS, { recursive: true });
const R1 = 'deepseek-r1-671b';
const V3 = 'deepseek-v3-671b';

let chromium;
if (!skip) ({ chromium } = await import('playwright-core'));

/** A fresh page (own storage) on the server, with a record of what went
 * wrong in it: console errors, CSP violations, dialogs, page errors. */
async function openPage(browser, url, { viewport = { width: 1000, height: 760 } } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const trouble = [];
  page.on('console', (m) => {
    if (m.type() === 'error') trouble.push(`console: ${m.text()}`);
  });
  page.on('pageerror', (e) => trouble.push(`pageerror: ${e.message}`));
  page.on('dialog', (d) => {
    trouble.push(`dialog: ${d.message()}`);
    d.dismiss().catch(() => {});
  });
  await page.goto(url);
  return { page, context, trouble };
}

async function chooseModel(page, id) {
  await page.waitForSelector(`#model option[value="${id}"]`, { state: 'attached' });
  await page.selectOption('#model', id);
}

/** Types a question and sends it with Enter, as a user does. */
async function ask(page, text) {
  await page.fill('#prompt', text);
  await page.press('#prompt', 'Enter');
}

/** The last assistant turn once it is no longer streaming. */
async function lastAnswer(page, timeout = 15000) {
  const turn = page.locator('section.assistant').last();
  await page.waitForFunction(
    () => {
      const t = [...document.querySelectorAll('section.assistant')].pop();
      return t && t.dataset.state;
    },
    null,
    { timeout },
  );
  return {
    state: await turn.getAttribute('data-state'),
    answer: await turn.locator('.answer').innerText(),
    answerHtml: await turn.locator('.answer').innerHTML(),
    reasoning: (await turn.locator('.reasoning').isVisible()) ? await turn.locator('.reasoning-text').innerText() : '',
    note: (await turn.locator('.note').isVisible()) ? await turn.locator('.note').innerText() : '',
  };
}

describe('the chat page in Chromium', { skip }, () => {
  let both, browser, mock, url;

  before(async () => {
    both = await startBoth();
    mock = both.mock;
    url = both.server.url;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    both?.kill();
  });

  it('is served with a strict Content-Security-Policy and loads no other origin', async () => {
    const res = await fetch(`${url}/`);
    const csp = res.headers.get('content-security-policy');
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline/);
    const { page, context, trouble } = await openPage(browser, url);
    const origins = new Set();
    page.on('request', (r) => origins.add(new URL(r.url()).origin));
    await page.reload();
    await page.waitForSelector('body[data-models="loaded"]');
    assert.deepEqual([...origins], [url]);
    // the picker holds the server's list, after "server default"
    const options = await page.$$eval('#model option', (os) => os.map((o) => o.value));
    assert.equal(options[0], '');
    assert.ok(options.includes(R1) && options.includes(V3), options.join());
    assert.deepEqual(trouble, []);
    await context.close();
  });

  it('streams the answer and the reasoning apart, then carries the history to a second turn', async () => {
    await mock.config({ events: 10, reasoning: 5, delay: 80, text: 'mock' });
    const expected = await mock.answer(R1);
    const { page, context, trouble } = await openPage(browser, url);
    await chooseModel(page, R1);
    // What the reader sees while it streams: every change of the log, with
    // the lengths of the reasoning and the answer shown at that moment.
    await page.evaluate(() => {
      window.__seen = [];
      new MutationObserver(() => {
        const turn = document.querySelector('section.assistant');
        if (!turn) return;
        window.__seen.push({
          busy: turn.getAttribute('aria-busy') === 'true',
          stop: !document.getElementById('stop').hidden,
          reasoningShown: !turn.querySelector('.reasoning').hidden,
          reasoning: turn.querySelector('.reasoning-text').textContent.length,
          answer: turn.querySelector('.answer').textContent.length,
        });
      }).observe(document.getElementById('log'), { subtree: true, childList: true, characterData: true, attributes: true });
    });
    await ask(page, 'What is streaming?');
    const first = await lastAnswer(page);
    assert.equal(first.state, 'done', first.note);
    const seen = await page.evaluate(() => window.__seen);
    const streaming = seen.filter((x) => x.busy);
    const fullReasoning = expected.reasoning_content.length;
    assert.ok(
      streaming.some((x) => x.reasoningShown && x.reasoning > 0 && x.reasoning < fullReasoning && x.stop),
      `the reasoning block grew while it streamed, with Stop shown: ${JSON.stringify(seen)}`,
    );
    assert.ok(
      streaming.some((x) => x.answer > 0 && x.answer < expected.content.length),
      `the answer grew while it streamed: ${JSON.stringify(seen)}`,
    );
    assert.equal(first.reasoning, expected.reasoning_content);
    assert.equal(first.answer.trim(), expected.content);
    assert.ok(!first.answer.includes(expected.reasoning_content), 'reasoning kept out of the answer');
    assert.equal(await page.isVisible('#stop'), false);

    // the second answer is Markdown (a heading, a list, code)
    await mock.config({ delay: 0, events: 5, reasoning: 3, text: 'markdown' });
    await ask(page, 'And in Markdown?');
    const second = await lastAnswer(page);
    assert.equal(second.state, 'done', second.note);
    assert.match(second.answerHtml, /<h2>A short answer<\/h2>/);
    assert.match(second.answerHtml, /<li>two<\/li>/);
    const last = JSON.parse((await mock.control('GET', '/_mock/last')).body);
    assert.deepEqual(
      last.messages.map((m) => [m.role, m.content]),
      [
        ['user', 'What is streaming?'],
        ['assistant', expected.content],
        ['user', 'And in Markdown?'],
      ],
    );
    assert.match(last.model, /^deepseek-r1-671b/);
    assert.equal(last.stream, true);
    await page.screenshot({ path: join(SHOTS, 'page-conversation.png') });
    assert.deepEqual(trouble, []);
    await context.close();
  });

  it('shows inline <think> tags, cut across events, as reasoning', async () => {
    await mock.config({ events: 7, reasoning: 0, delay: 20, text: 'think' });
    const { page, context } = await openPage(browser, url);
    await chooseModel(page, V3);
    await ask(page, 'think inline');
    const got = await lastAnswer(page);
    assert.equal(got.state, 'done', got.note);
    assert.equal(got.reasoning, 'Let me think about it.');
    assert.equal(got.answer.trim(), 'The answer is 42.');
    assert.match(got.answerHtml, /<strong>42<\/strong>/);
    assert.doesNotMatch(got.answerHtml, /think/);
    await context.close();
  });

  it('stop aborts the request, and the server closes the upstream call', async () => {
    await mock.config({ events: 2000, reasoning: 0, delay: 30, text: 'mock' });
    const before = await mock.stats();
    const { page, context } = await openPage(browser, url);
    await chooseModel(page, V3);
    await ask(page, 'a long answer');
    await page.waitForFunction(() => document.querySelector('.answer')?.textContent.length > 5);
    const stoppedAt = Date.now();
    await page.click('#stop');
    const got = await lastAnswer(page);
    assert.equal(got.state, 'stopped');
    assert.match(got.note, /Stopped/);
    const st = await mock.waitStat(
      'connections_closed_by_client',
      (n) => n > before.connections_closed_by_client,
      3000,
    );
    assert.ok(st.connections_closed_by_client > before.connections_closed_by_client, 'upstream never closed');
    assert.ok(Date.now() - stoppedAt < 3000);
    assert.equal((await mock.waitStat('streams_active', (n) => n === 0, 2000)).streams_active, 0);
    // the page is usable again: the send button is back
    assert.equal(await page.isVisible('#send'), true);
    await context.close();
  });

  it('shows errors in words: 429 with its wait, a stream cut mid-answer, a 5xx', async () => {
    const { page, context } = await openPage(browser, url);
    await chooseModel(page, V3);

    await mock.config({ status: 429, retry_after: 7, delay: 0, text: 'mock' });
    await ask(page, 'rate limited');
    let got = await lastAnswer(page);
    assert.equal(got.state, 'error');
    assert.match(got.note, /429/);
    assert.match(got.note, /7 s/);
    // nothing was answered: the question is back in the box to retry
    assert.equal(await page.inputValue('#prompt'), 'rate limited');

    await mock.config({ status: 0, events: 10, reasoning: 0, fault: 'drop_mid', after: 3 });
    await ask(page, 'cut me off');
    got = await lastAnswer(page);
    assert.equal(got.state, 'error');
    assert.match(got.note, /broke off/);
    assert.ok(got.answer.length > 0, 'the part that came is kept');

    // a 400 shows the server's own message (a model name no UI offers)
    await mock.config({ fault: 'none', status: 0 });
    await page.evaluate(() => {
      const sel = document.getElementById('model');
      sel.add(new Option('bad', 'bad\u0000model'));
      sel.value = 'bad\u0000model';
    });
    await ask(page, 'a bad request');
    got = await lastAnswer(page);
    assert.equal(got.state, 'error');
    assert.match(got.note, /\(400\): model/);
    await chooseModel(page, V3);

    await mock.config({ fault: 'none', status: 503 });
    await ask(page, 'server down');
    got = await lastAnswer(page);
    assert.equal(got.state, 'error');
    assert.match(got.note, /\((5\d\d)\)/);
    await page.screenshot({ path: join(SHOTS, 'page-errors.png') });
    await context.close();
    await mock.reset();
  });

  it('renders hostile Markdown inert: nothing runs, the DOM holds no script', async () => {
    await mock.config({ events: 10, reasoning: 0, delay: 0, text: 'hostile' });
    const { page, context, trouble } = await openPage(browser, url);
    await chooseModel(page, V3);
    await ask(page, 'be evil');
    const got = await lastAnswer(page);
    assert.equal(got.state, 'done', got.note);
    await page.waitForTimeout(300); // onerror / onload / ontoggle would have fired by now
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    const dom = await page.$eval('.answer', (a) => ({
      scripts: a.querySelectorAll('script, iframe, form, object, embed').length,
      handlers: [...a.querySelectorAll('*')].flatMap((e) => [...e.attributes].map((x) => x.name)).filter((n) => n.startsWith('on')),
      hrefs: [...a.querySelectorAll('[href], [src], [action]')].map((e) => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action')),
      strong: a.querySelectorAll('strong').length,
      code: a.querySelector('pre code')?.textContent || '',
    }));
    assert.equal(dom.scripts, 0);
    assert.deepEqual(dom.handlers, []);
    assert.ok(!dom.hrefs.some((h) => /^\s*javascript:/i.test(h)), dom.hrefs.join(' '));
    assert.ok(dom.strong >= 1, 'Markdown is still rendered');
    assert.match(dom.code, /<script>alert\('shown, not run'\)<\/script>/, 'code shown as text');
    assert.deepEqual(trouble.filter((t) => t.startsWith('dialog') || t.startsWith('pageerror')), []);
    record(`page hostile answer: ${got.answerHtml}`);
    // The second wall: markup that got past the sanitizer still could not
    // run, the Content-Security-Policy allows no inline script or handler.
    const violations = [];
    await page.exposeFunction('__violation', (d) => violations.push(d));
    await page.evaluate(() => {
      document.addEventListener('securitypolicyviolation', (e) => window.__violation(e.violatedDirective));
      document.querySelector('.answer').insertAdjacentHTML('beforeend', '<img src="data:," onerror="window.__pwned=\'csp\'">');
      const s = document.createElement('script');
      s.textContent = "window.__pwned = 'inline'";
      document.body.append(s);
    });
    await page.waitForTimeout(300);
    assert.equal(await page.evaluate(() => window.__pwned), undefined, 'the CSP let inline script run');
    assert.ok(violations.length >= 1, 'the CSP reported the blocked script');
    await context.close();
    await mock.reset();
  });

  it('keyboard: Shift+Enter is a new line, Enter sends, focus is visible', async () => {
    await mock.config({ events: 3, reasoning: 0, delay: 0, text: 'mock' });
    const { page, context } = await openPage(browser, url);
    await page.waitForSelector('body[data-models="loaded"]');
    await page.focus('#prompt');
    await page.keyboard.type('line one');
    await page.keyboard.press('Shift+Enter');
    await page.keyboard.type('line two');
    assert.equal(await page.inputValue('#prompt'), 'line one\nline two');
    assert.equal(await page.locator('section.turn').count(), 0, 'Shift+Enter sent nothing');
    await page.keyboard.press('Enter');
    const got = await lastAnswer(page);
    assert.equal(got.state, 'done');
    assert.equal(await page.locator('section.user .text').innerText(), 'line one\nline two');
    assert.equal(await page.inputValue('#prompt'), '');
    // Tab from the box reaches the send button, which shows its focus
    await page.focus('#prompt');
    await page.keyboard.press('Tab');
    const focus = await page.evaluate(() => {
      const e = document.activeElement;
      const s = getComputedStyle(e);
      return { id: e.id, outline: s.outlineStyle, width: parseFloat(s.outlineWidth) };
    });
    assert.equal(focus.id, 'send');
    assert.notEqual(focus.outline, 'none');
    assert.ok(focus.width >= 2);
    await context.close();
  });

  it('fits a phone-sized screen', async () => {
    await mock.config({ events: 5, reasoning: 0, delay: 0, text: 'markdown' });
    const { page, context } = await openPage(browser, url, { viewport: { width: 360, height: 740 } });
    await chooseModel(page, V3);
    await ask(page, 'a Markdown answer on a phone');
    assert.equal((await lastAnswer(page)).state, 'done');
    const fit = await page.evaluate(() => {
      const inside = (id) => {
        const r = document.getElementById(id).getBoundingClientRect();
        return r.left >= 0 && r.right <= window.innerWidth && r.bottom <= window.innerHeight && r.width > 0;
      };
      return {
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        prompt: inside('prompt'),
        send: inside('send'),
        model: inside('model'),
      };
    });
    assert.equal(fit.overflow, 0, 'no sideways scrolling');
    assert.deepEqual([fit.prompt, fit.send, fit.model], [true, true, true]);
    await page.screenshot({ path: join(SHOTS, 'page-phone.png') });
    await context.close();
    await mock.reset();
  });

  it('server and mock stop cleanly: exit 0, no sanitizer report, no key in their logs', async () => {
    await both.stop();
  });
});

describe('the chat page with access tokens', { skip }, () => {
  const TOKEN = 'page-test-token-0123456789abcdef';
  let both, browser, url;

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'zju-page-tokens-'));
    const file = join(dir, 'tokens');
    writeFileSync(file, `${TOKEN} name=page\n`);
    both = await startBoth({ serverEnv: { ACCESS_TOKENS_FILE: file } });
    url = both.server.url;
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    both?.kill();
  });

  it('asks for a token on 401, keeps it in the browser and sends it as a Bearer token', async () => {
    const { page, context } = await openPage(browser, url);
    await page.waitForSelector('#token-form:not([hidden])');
    await page.fill('#token', 'wrong-token-but-long-enough');
    await page.press('#token', 'Enter');
    await page.waitForSelector('#token-form:not([hidden])');
    assert.match(await page.innerText('#token-why'), /refused/);
    await page.fill('#token', TOKEN);
    await page.click('#token-form button[type=submit]');
    await page.waitForSelector('body[data-models="loaded"]');
    assert.equal(await page.isHidden('#token-form'), true);
    assert.equal(await page.evaluate(() => localStorage.getItem('zju-chat.token')), TOKEN);
    await ask(page, 'with a token');
    const got = await lastAnswer(page);
    assert.equal(got.state, 'done', got.note);
    // a reload remembers it: no prompt
    await page.reload();
    await page.waitForSelector('body[data-models="loaded"]');
    assert.equal(await page.isHidden('#token-form'), true);
    await context.close();
  });

  it('server and mock stop cleanly', async () => {
    await both.stop();
  });
});
