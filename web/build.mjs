// Builds the page: src/ -> dist/ (or the directory given with --out DIR).
// esbuild bundles src/main.js with marked, DOMPurify and eventsource-parser
// (as package-lock.json pins them) into one file, so the page loads nothing
// but its own three files from the server. The output is deterministic: the
// drift test (tests/node/web-dist.test.mjs) rebuilds it and compares it with
// the committed dist/.
import { build } from 'esbuild';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const at = process.argv.indexOf('--out');
const out = resolve(at > 0 ? process.argv[at + 1] : join(here, 'dist'));

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, 'assets'), { recursive: true });
await build({
  entryPoints: [join(here, 'src/main.js'), join(here, 'src/style.css')],
  outdir: join(out, 'assets'),
  bundle: true,
  minify: true,
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  legalComments: 'eof',
  logLevel: 'warning',
  absWorkingDir: here,
});
copyFileSync(join(here, 'src/index.html'), join(out, 'index.html'));
copyFileSync(join(here, 'src/favicon.svg'), join(out, 'assets/favicon.svg'));
