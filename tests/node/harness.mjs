// Starts the real zju-chat-server and zju-mock-upstream on loopback for the
// Node.js client tests, the way tests/e2e/serverctl.py does: binaries of
// $ZJU_BUILD_DIR (default build-asan), a free port, a fresh environment with
// only our variables, /healthz before the first test. Logs and everything a
// client received go to $ZJU_E2E_LOG_DIR when scripts/test.sh sets it, so
// the run's final key scan covers these tests too. Every wait is bounded.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, appendFileSync, closeSync, constants, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUILD_DIR = resolve(ROOT, process.env.ZJU_BUILD_DIR || 'build-asan');
export const SERVER_BIN = join(BUILD_DIR, 'zju-chat-server');
export const MOCK_BIN = join(BUILD_DIR, 'zju-mock-upstream');

// Long enough for the server (16+), distinctive enough for a grep to find
// any leak; scripts/test.sh exports one per run.
export const KEY = process.env.ZJU_TEST_KEY || `sk-node-test-SECRET-${randomBytes(6).toString('hex')}`;
export const DEFAULT_MODEL = 'deepseek-r1-671b';

// Without ZJU_E2E_LOG_DIR, a temporary directory removed at exit (failures
// already quote the relevant log tail).
const LOG_DIR = process.env.ZJU_E2E_LOG_DIR || mkdtempSync(join(tmpdir(), 'zju-node-'));
mkdirSync(LOG_DIR, { recursive: true });
if (!process.env.ZJU_E2E_LOG_DIR) process.on('exit', () => rmSync(LOG_DIR, { recursive: true, force: true }));
const RESPONSES = join(LOG_DIR, 'responses-node.bin');
const SANITIZER_MARKS = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];

const sanitizerEnv = {
  ASAN_OPTIONS: process.env.ASAN_OPTIONS || 'detect_leaks=1:abort_on_error=1:strict_string_checks=1',
  UBSAN_OPTIONS: process.env.UBSAN_OPTIONS || 'print_stacktrace=1:halt_on_error=1',
};

/** Appends what a client received to the run's response record. */
export function record(text) {
  appendFileSync(RESPONSES, `${text}\n`);
}

/** A model name carrying mock directives: model({ events: 3, fault: 'drop_mid' }). */
export function model(directives = {}, name = DEFAULT_MODEL) {
  const parts = Object.entries(directives).map(([k, v]) => `${k}=${v}`);
  return parts.length ? `${name}#${parts.join(',')}` : name;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls pred() until truthy or timeoutMs; returns the last value. */
export async function waitUntil(pred, timeoutMs, stepMs = 20) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await pred();
    if (v || Date.now() >= deadline) return v;
    await sleep(stepMs);
  }
}

/** A port nobody listens on right now (bind to 0, read it, close). */
export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

let counter = 0;

function requireBinaries() {
  for (const bin of [SERVER_BIN, MOCK_BIN]) {
    try {
      accessSync(bin, constants.X_OK);
    } catch {
      throw new Error(`missing ${bin}: run make asan (or set ZJU_BUILD_DIR)`);
    }
  }
}

/** A child process with its stderr and stdout in log files. */
class Child {
  constructor(kind, cmd, args, env, cwd) {
    this.name = `${kind}-node-${process.pid}-${++counter}`;
    this.errPath = join(LOG_DIR, `${this.name}.err`);
    this.outPath = join(LOG_DIR, `${this.name}.out`);
    const err = openSync(this.errPath, 'w');
    // The mock prints its address on stdout, so that one is a pipe.
    const out = kind === 'mock' ? 'pipe' : openSync(this.outPath, 'w');
    this.proc = spawn(cmd, args, { env, cwd, stdio: ['ignore', out, err] });
    this.proc.once('error', (e) => appendFileSync(this.errPath, `spawn ${cmd}: ${e.message}\n`));
    closeSync(err);
    if (out !== 'pipe') closeSync(out);
    this.exited = new Promise((ok) => this.proc.once('exit', (code, signal) => ok({ code, signal })));
    this.stopped = false;
  }

  log() {
    let text = '';
    for (const p of [this.errPath, this.outPath]) {
      try {
        text += readFileSync(p, 'utf8');
      } catch {
        // the mock has no stdout file
      }
    }
    return text;
  }

  /** SIGTERM, a bounded wait, then: exit 0, no sanitizer report, no key. */
  async stop(timeoutMs = 15000) {
    if (this.stopped) return;
    this.stopped = true;
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGTERM');
    let timer;
    const res = await Promise.race([this.exited, new Promise((ok) => (timer = setTimeout(ok, timeoutMs, null)))]);
    clearTimeout(timer);
    if (res === null) {
      this.proc.kill('SIGKILL');
      throw new Error(`${this.name} did not exit within ${timeoutMs} ms of SIGTERM`);
    }
    const text = this.log();
    for (const mark of SANITIZER_MARKS) {
      const i = text.indexOf(mark);
      if (i >= 0) throw new Error(`sanitizer report in ${this.name}: ${text.slice(Math.max(0, i - 200), i + 3000)}`);
    }
    if (text.includes(KEY)) throw new Error(`API key in the log of ${this.name}`);
    if (res.code !== 0) throw new Error(`${this.name} exited with ${res.code ?? res.signal}: ${text.slice(-3000)}`);
  }

  kill() {
    this.stopped = true;
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/** zju-mock-upstream on an ephemeral port, requiring KEY like the real API. */
export async function startMock(...args) {
  requireBinaries();
  const env = { PATH: process.env.PATH || '/usr/bin:/bin', LANG: 'C.UTF-8', ...sanitizerEnv };
  const child = new Child('mock', MOCK_BIN, ['--port', '0', '--key', KEY, ...args], env, LOG_DIR);
  const line = await new Promise((ok) => {
    let buf = '';
    const done = () => {
      clearTimeout(timer);
      ok(buf);
    };
    const timer = setTimeout(done, 10000);
    child.proc.stdout.setEncoding('utf8');
    child.proc.stdout.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) done();
    });
    child.proc.once('exit', done);
  });
  const m = /^listening on (http:\/\/127\.0\.0\.1:(\d+))/.exec(line);
  if (!m) {
    child.kill();
    throw new Error(`mock did not start: ${JSON.stringify(line)} ${child.log().slice(-2000)}`);
  }
  child.proc.stdout.resume(); // keep draining: the mock must never block on a full pipe
  return new Mock(child, m[1]);
}

class Mock {
  constructor(child, root) {
    this.child = child;
    this.root = root;
    this.baseUrl = `${root}/v1`;
  }

  async control(method, path, payload) {
    const res = await fetch(this.root + path, {
      method,
      headers: { 'Content-Type': 'application/json' },
      body: payload === undefined ? undefined : JSON.stringify(payload),
      signal: AbortSignal.timeout(5000),
    });
    const body = await res.json();
    if (res.status !== 200) throw new Error(`mock ${method} ${path}: ${res.status} ${JSON.stringify(body)}`);
    return body;
  }

  stats() {
    return this.control('GET', '/_mock/stats');
  }

  config(directives) {
    return this.control('POST', '/_mock/config', directives);
  }

  reset() {
    return this.config({ reset: true });
  }

  /** Polls the stats until pred(stats[name]); returns the last stats. */
  async waitStat(name, pred, timeoutMs = 3000) {
    let last;
    await waitUntil(async () => pred((last = await this.stats())[name]), timeoutMs);
    return last;
  }

  /** The mock's own non-stream answer to a model (directives included),
   * asked directly with the key: what the server must relay. */
  async answer(modelName) {
    const res = await fetch(`${this.baseUrl}/chat/completions`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: modelName, messages: [{ role: 'user', content: 'hi' }] }),
      signal: AbortSignal.timeout(5000),
    });
    if (res.status !== 200) throw new Error(`mock answered ${res.status}`);
    return (await res.json()).choices[0].message;
  }

  stop() {
    return this.child.stop();
  }

  kill() {
    this.child.kill();
  }
}

/** zju-chat-server (one worker) on a free port, upstream = the mock. */
export async function startServer(upstream, extraEnv = {}) {
  const port = await freePort();
  const env = {
    PATH: process.env.PATH || '/usr/bin:/bin',
    LANG: 'C.UTF-8',
    ...sanitizerEnv,
    ZJU_API_KEY: KEY,
    ZJU_BASE_URL: upstream,
    ...extraEnv,
  };
  // A fresh working directory, so no stray .env is read.
  const cwd = mkdtempSync(join(LOG_DIR, 'cwd-node-'));
  const child = new Child('server', SERVER_BIN, ['-b', `127.0.0.1:${port}`, '-w', '1'], env, cwd);
  const url = `http://127.0.0.1:${port}`;
  const ready = await waitUntil(
    async () => {
      if (child.proc.exitCode !== null || child.proc.signalCode !== null) return 'exited';
      try {
        const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        return res.status === 200;
      } catch {
        return false;
      }
    },
    15000,
    50,
  );
  if (ready !== true) {
    child.kill();
    throw new Error(`server not ready (${ready}): ${child.log().slice(-3000)}`);
  }
  return { url, chatUrl: `${url}/api/chat`, port, stop: () => child.stop(), kill: () => child.kill() };
}

/** Mock and server for one test file: call in before(). stop() is the
 * file's last test (an after() hook that throws is not counted as a failed
 * test by node --test): both exit 0 with clean logs. kill() is for after(),
 * so nothing is left running when a test failed first. */
export async function startBoth({ mockArgs = [], serverEnv = {} } = {}) {
  const mock = await startMock(...mockArgs);
  let server;
  try {
    server = await startServer(mock.baseUrl, serverEnv);
  } catch (e) {
    mock.kill();
    throw e;
  }
  return {
    mock,
    server,
    async stop() {
      try {
        await server.stop();
      } finally {
        await mock.stop();
      }
    },
    kill() {
      server.kill();
      mock.kill();
    },
  };
}
