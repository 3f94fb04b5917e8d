// Without WebGPU both pages say so, instead of failing silently.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launch, screenshot, url } from './support.mjs';

let browser;
before(async () => {
  browser = await launch({ webgpu: false });
});
after(async () => {
  await browser?.close();
});

test('the chat page says WebGPU is not available', async () => {
  const { page } = browser;
  await page.goto(url('index.html'));
  await page.waitForFunction(() => document.body.dataset.state === 'error');
  assert.match(await page.textContent('#status'), /WebGPU is not available/);
  assert.equal(await page.isDisabled('#send'), true);
  await screenshot(page, 'no-webgpu.png');
});

test('the bench page says WebGPU is not available', async () => {
  const { page } = browser;
  await page.goto(url('bench.html?run=quick'));
  await page.waitForFunction(() => document.body.dataset.state === 'error');
  assert.match(await page.textContent('#status'), /WebGPU is not available/);
});
