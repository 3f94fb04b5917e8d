// The benchmark page runs the quick kernel suite on SwiftShader's WebGPU and fills its table.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launch, screenshot, TIMEOUT_MS, url } from './support.mjs';

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('bench.html?run=quick fills the result table', { timeout: TIMEOUT_MS * 2 }, async () => {
  const { page } = browser;
  await page.goto(url('bench.html?run=quick'));
  const state = await (await page.waitForFunction(
    () => ['done', 'error'].includes(document.body.dataset.state) && document.body.dataset.state,
    null, { timeout: TIMEOUT_MS * 2 })).jsonValue();
  assert.equal(state, 'done', await page.textContent('#status'));

  const medians = await page.$$eval('#bench-table tbody tr', (rows) => rows.map((row) => row.cells[2].textContent));
  console.log(`${medians.length} kernels, median ms: ${medians.join(' ')}`);
  assert.ok(medians.length >= 3, 'at least 3 kernels');
  for (const median of medians) assert.ok(Number.isFinite(Number(median)) && Number(median) > 0, median);

  const json = await page.evaluate(() => window.deltallmBench.json);
  assert.equal(json.kernels.length, medians.length);
  assert.equal(json.adapter.backend, 'BrowserWebGpu', 'the engine ran on the browser\'s WebGPU');
  assert.match(json.browser.userAgent, /Chrom/, 'the JSON names the browser');
  assert.match(await page.getAttribute('#download', 'download'), /^deltallm-bench-[a-z0-9-]+\.json$/);
  assert.match(await page.getAttribute('#download', 'href'), /^blob:/);
  await screenshot(page, 'bench.png');
});
