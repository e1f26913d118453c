// The README's frontend recipes are the code the other tests run: its code
// blocks must be recipe.mjs (fetch) and recipe-openai.mjs (the `openai`
// package), byte for byte, in that order, or a reader copies untested code.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const here = new URL('.', import.meta.url);
const readme = readFileSync(new URL('../../README.md', here), 'utf8');

function recipeBlocks() {
  const section = readme.split(/^### Frontend recipe/m)[1];
  assert.ok(section, 'README.md has no "### Frontend recipe" section');
  return [...section.split(/^#{1,3} /m)[0].matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1]);
}

const recipes = ['recipe.mjs', 'recipe-openai.mjs'];

recipes.forEach((file, i) => {
  test(`README "Frontend recipe" code block ${i + 1} is tests/node/${file} verbatim`, () => {
    const blocks = recipeBlocks();
    assert.equal(blocks.length, recipes.length, 'one ```js block per recipe file');
    assert.equal(blocks[i], readFileSync(new URL(file, here), 'utf8'));
  });
});
