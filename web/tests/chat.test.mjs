// The chat page on real WebGPU (SwiftShader): the tiny fixture model loaded from this server and from local files
// must generate exactly the native engine's greedy tokens, dense and with DeltaLLM on.

import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  assertSameTokens, generate, launch, nativeTokens, screenshot, TIMEOUT_MS, TINY_LLAMA, TINY_LLAMA_FILES, url,
  waitForState,
} from './support.mjs';

const PROMPT = 'The quick brown fox';
const MODEL_URL = `index.html?model=/fixtures/tiny-llama/&files=${TINY_LLAMA_FILES.join(',')}`;

describe('chat page, model from the URL', { timeout: TIMEOUT_MS * 3 }, () => {
  let browser;
  before(async () => {
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
  });

  test('greedy tokens equal the native engine (dense, then Θ = 0.5)', async () => {
    const { page } = browser;
    await page.goto(url(MODEL_URL));
    await waitForState(page, 'ready');

    const dense = await generate(page, { prompt: PROMPT, maxTokens: 16 });
    assert.equal(dense.tokens.length, 16);
    assert.equal(dense.delta, null, 'Θ = 0 is dense attention');
    assertSameTokens(dense, nativeTokens(PROMPT, { maxTokens: 16 }), 'dense');
    assert.deepEqual(JSON.parse(await page.getAttribute('#tokens', 'data-tokens')), dense.tokens);
    assert.equal(await page.textContent('#output'), dense.text);
    assert.match(await page.textContent('#stats'), /decode [\d.]+ tok\/s/);

    const delta = await generate(page, { prompt: PROMPT, maxTokens: 16, threshold: 0.5 });
    assert.ok(delta.delta, 'Θ > 0 reports delta statistics');
    assert.ok(delta.delta.deltaSparsity > 0 && delta.delta.deltaSparsity < 1, 'a delta sparsity in (0, 1)');
    assertSameTokens(delta, nativeTokens(PROMPT, { maxTokens: 16, threshold: 0.5 }), 'Θ 0.5');
    assert.match(await page.textContent('#stats'), /delta sparsity [\d.]+ %/);
    await screenshot(page, 'chat-url.png');
  });

  test('chat template: the same tokens as the native --chat', async () => {
    const { page } = browser;
    await page.click('#clear-chat');
    const chat = await generate(page, { prompt: 'Hello there', raw: false, maxTokens: 8 });
    assertSameTokens(chat, nativeTokens('Hello there', { maxTokens: 8, chat: true }), 'chat');
    await screenshot(page, 'chat-template.png');
  });

  test('Stop ends a long reply early and the model stays usable', async () => {
    const { page } = browser;
    await page.setChecked('#raw', true);
    await page.fill('#max-tokens', '200');
    await page.fill('#threshold', '0');
    await page.fill('#prompt', PROMPT);
    await page.click('#send');
    // The first 16 greedy tokens hold no end-of-text, so the reply is still running when Stop is pressed.
    await page.waitForFunction(() => window.deltallm.streamed.length >= 2);
    await page.click('#stop');
    await waitForState(page, 'ready');
    assert.match(await page.textContent('#status'), /Stopped after \d+ tokens/);
    const streamed = await page.evaluate(() => window.deltallm.streamed.length);
    assert.ok(streamed < 200, `stopped after ${streamed} tokens`);

    const again = await generate(page, { prompt: PROMPT, maxTokens: 4 });
    assert.equal(again.tokens.length, 4);
  });

  test('a reload takes the model from the cache, and "clear cache" empties it', async () => {
    const { page } = browser;
    const fetched = [];
    const onRequest = (request) => {
      if (new URL(request.url()).pathname.startsWith('/fixtures/')) fetched.push(request.url());
    };
    page.on('request', onRequest);
    await page.reload();
    await waitForState(page, 'ready');
    page.off('request', onRequest);
    assert.deepEqual(fetched, [], 'no model file is downloaded again');
    assert.match(await page.textContent('#progress'), /from the cache/);

    await page.click('#clear-cache');
    await page.waitForFunction(async () => !(await caches.keys()).includes('deltallm-models'));
  });

  test('a missing file is reported with its HTTP status and URL', async () => {
    const { page } = browser;
    await page.goto(url('index.html?model=/fixtures/no-such-model/&files=config.json'));
    await page.waitForFunction(() => document.body.dataset.state === 'error');
    const status = await page.textContent('#status');
    assert.match(status, /HTTP 404/);
    assert.match(status, /\/fixtures\/no-such-model\/config\.json/);
  });
});

describe('chat page, model from local files', { timeout: TIMEOUT_MS * 2 }, () => {
  let browser;
  before(async () => {
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
  });

  test('files chosen in the file input load and generate the native tokens', async () => {
    const { page } = browser;
    await page.goto(url('index.html'));
    await page.waitForFunction(() => !document.querySelector('#file-input').disabled &&
      /Choose a model/.test(document.querySelector('#status').textContent));
    await page.setInputFiles('#file-input', TINY_LLAMA_FILES.map((name) => path.join(TINY_LLAMA, name)));
    await waitForState(page, 'ready');
    const result = await generate(page, { prompt: PROMPT, maxTokens: 16 });
    assertSameTokens(result, nativeTokens(PROMPT, { maxTokens: 16 }), 'local files');
    await screenshot(page, 'chat-local-files.png');
  });

  test('files dropped on the page load too', async () => {
    const { page } = browser;
    // A drop event carrying the fixture's files, as the browser makes it when files are dragged in.
    await page.evaluate(async (names) => {
      window.deltallm.info = null; // set again when the dropped model has loaded
      const transfer = new DataTransfer();
      for (const name of names) {
        const bytes = await (await fetch(`/fixtures/tiny-llama/${name}`)).arrayBuffer();
        transfer.items.add(new File([bytes], name));
      }
      document.querySelector('#drop-zone').dispatchEvent(
        new DragEvent('drop', { dataTransfer: transfer, bubbles: true, cancelable: true }));
    }, TINY_LLAMA_FILES);
    await page.waitForFunction(() => window.deltallm.info !== null || document.body.dataset.state === 'error');
    await waitForState(page, 'ready');
    const result = await generate(page, { prompt: PROMPT, maxTokens: 16 });
    assertSameTokens(result, nativeTokens(PROMPT, { maxTokens: 16 }), 'dropped files');
  });
});
