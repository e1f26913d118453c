// web/dist is committed (so building the server needs no Node.js) and must be
// exactly what web/src and web/package-lock.json build: this rebuilds it
// into a temporary directory with web/build.mjs and the pinned packages of
// web/node_modules (make test-deps runs npm ci there) and compares every
// file. A failure means: run `make web` and commit web/dist.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';

const WEB = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'web');

function files(dir) {
  const out = [];
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.push(relative(dir, p));
    }
  };
  walk(dir);
  return out.sort();
}

describe('web/dist', () => {
  it('is what web/src and the lock file build (make web)', () => {
    assert.ok(
      existsSync(join(WEB, 'node_modules', '.package-lock.json')),
      'web/node_modules missing: make test-deps runs npm ci in web/',
    );
    const out = mkdtempSync(join(tmpdir(), 'zju-web-dist-'));
    try {
      execFileSync(process.execPath, [join(WEB, 'build.mjs'), '--out', out], { timeout: 60000, stdio: 'pipe' });
      const want = files(join(WEB, 'dist'));
      assert.deepEqual(files(out), want, 'the same files');
      for (const f of want) {
        assert.ok(readFileSync(join(out, f)).equals(readFileSync(join(WEB, 'dist', f))), `web/dist/${f} differs from a fresh build: run make web`);
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
