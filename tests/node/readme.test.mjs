// The README's frontend recipe is the code the other tests run: its code
// block must be recipe.mjs, byte for byte, or a reader copies untested code.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const here = new URL('.', import.meta.url);
const readme = readFileSync(new URL('../../README.md', here), 'utf8');
const recipe = readFileSync(new URL('recipe.mjs', here), 'utf8');

test('README "Frontend recipe" code block is tests/node/recipe.mjs verbatim', () => {
  const section = readme.split(/^### Frontend recipe/m)[1];
  assert.ok(section, 'README.md has no "### Frontend recipe" section');
  const block = /^```js\n([\s\S]*?)^```$/m.exec(section.split(/^## /m)[0]);
  assert.ok(block, 'the Frontend recipe section has no ```js code block');
  assert.equal(block[1], recipe);
});
