// Loading by Hugging Face repo id, without network: web/serve.py plays the hub at /hub/ (resolve URLs, the hub's
// 404/401 answers, LFS redirects) and counts the requests it gets at /hub-stats. The page is pointed at it with
// ?hub=, on another origin (localhost vs 127.0.0.1) as huggingface.co is, so CORS matters as it does for real.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertSameTokens, BASE_URL, generate, launch, MOCK, nativeTokens, screenshot, TIMEOUT_MS, TINY_LLAMA_FILES, url,
  waitForState,
} from './support.mjs';

const PROMPT = 'The quick brown fox';
const REPO = 'local/tiny-llama';

// The same server under the other loopback name: a different origin for the browser.
const server = new URL(BASE_URL);
server.hostname = server.hostname === 'localhost' ? '127.0.0.1' : 'localhost';
const HUB = new URL('hub', server).href;
const PAGE = `index.html?hub=${encodeURIComponent(HUB)}`;

function resolvePath(repo, file) {
  return `/hub/${repo}/resolve/main/${file}`;
}

async function hubStats() {
  const response = await fetch(new URL('/hub-stats', BASE_URL));
  assert.equal(response.status, 200, 'the server answers /hub-stats (web/serve.py)');
  return response.json();
}

// Requests per path since `before` (paths with no new request left out).
async function requestsSince(before) {
  const now = await hubStats();
  return Object.fromEntries(Object.entries(now)
    .map(([path, count]) => [path, count - (before[path] || 0)])
    .filter(([, count]) => count > 0));
}

async function openPage(page, relative = PAGE) {
  await page.goto(url(relative));
  await page.waitForFunction(() => !document.querySelector('#load-button').disabled &&
    /Choose a model/.test(document.querySelector('#status').textContent));
}

async function loadThroughForm(page, repo, file = '') {
  await page.fill('#repo', repo);
  await page.fill('#repo-file', file);
  await page.click('#load-button');
}

// The page's one-line message for a failed load, once it has settled in the error state.
async function errorMessage(page) {
  await page.waitForFunction(() => document.body.dataset.state === 'error');
  const status = await page.textContent('#status');
  assert.doesNotMatch(status, /\n\s+at |\.js:\d+:\d+/, 'a message, not a stack trace');
  return status;
}

describe('chat page, model by hub repo id (local hub)', { timeout: TIMEOUT_MS * 4 }, () => {
  let browser;
  let first;
  before(async () => {
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
  });

  test('a repo id typed into the form downloads with progress and generates the native tokens', async () => {
    const { page } = browser;
    const stats = await hubStats();
    await openPage(page);
    await loadThroughForm(page, REPO);
    await waitForState(page, 'ready');
    assert.match(await page.textContent('#status'), /Ready: local\/tiny-llama on /);

    // Each file once from the hub: the known names in the page's order, the index probe that finds none, and
    // the weights through the LFS redirect.
    const expected = Object.fromEntries(TINY_LLAMA_FILES.map((name) => [resolvePath(REPO, name), 1]));
    expected[resolvePath(REPO, 'model.safetensors.index.json')] = 1;
    expected[`/hub-lfs/${REPO}/model.safetensors`] = 1;
    assert.deepEqual(await requestsSince(stats), expected);

    // One progress line per downloaded file, full, with its size.
    for (const name of TINY_LLAMA_FILES) {
      const line = page.locator(`#progress li[data-key="${name}"]`);
      assert.match(await line.locator('.text').textContent(), /downloaded$/, `${name}: progress text`);
      const [value, max] = await line.locator('progress').evaluate((bar) => [bar.value, bar.max]);
      assert.ok(max > 1 && value === max, `${name}: a full progress bar (${value} / ${max})`);
    }
    assert.match(await page.textContent('#progress'), /load: upload/);

    first = await generate(page, { prompt: PROMPT, maxTokens: 16 });
    assert.equal(first.tokens.length, 16);
    assertSameTokens(first, nativeTokens(PROMPT, { maxTokens: 16 }), 'hub');
    await screenshot(page, 'hub.png');
  });

  test('after a reload the same repo loads from the Cache API: no file is requested again', async () => {
    const { page } = browser;
    const stats = await hubStats();
    await page.reload();
    await page.waitForFunction(() => /Choose a model/.test(document.querySelector('#status').textContent));
    await loadThroughForm(page, REPO);
    await waitForState(page, 'ready');
    // Only the probe for a sharded index, which is missing and so never cached, reaches the server.
    assert.deepEqual(await requestsSince(stats), { [resolvePath(REPO, 'model.safetensors.index.json')]: 1 });
    for (const name of TINY_LLAMA_FILES) {
      assert.match(await page.locator(`#progress li[data-key="${name}"] .text`).textContent(), /from the cache/);
    }
    const again = await generate(page, { prompt: PROMPT, maxTokens: 16 });
    if (!MOCK) assert.deepEqual(again.tokens, first.tokens, 'the cached weights give the same tokens');
    await screenshot(page, 'hub-cached.png');
  });

  test('a repo that does not exist: a message naming the repo and the hub\'s answer', async () => {
    const { page } = browser;
    await loadThroughForm(page, 'local/no-such-model');
    const status = await errorMessage(page);
    console.log(`status: ${status}`);
    // The hub answers 401 (not 404) for a repo it does not have, so as not to reveal private ones.
    assert.match(status, /^Could not load local\/no-such-model: HTTP 401 Unauthorized fetching /);
    assert.match(status, /: no such repo on the hub, or it is private or gated/, 'says what a 401 from the hub means');
    assert.ok(status.includes(`${HUB}/local/no-such-model/resolve/main/config.json`), 'names the URL');
    assert.equal(await page.isDisabled('#send'), true, 'no model, nothing to send');
    await screenshot(page, 'hub-no-repo.png');
  });

  test('a file the repo does not have: 404 and its URL', async () => {
    const { page } = browser;
    await loadThroughForm(page, REPO, 'model.gguf');
    const status = await errorMessage(page);
    assert.match(status, /^Could not load local\/tiny-llama\/model\.gguf: HTTP 404 Not Found fetching /);
    assert.match(status, /: the repo has no such file/);
    assert.ok(status.includes(`${HUB}/${REPO}/resolve/main/model.gguf`), 'names the URL');
  });

  test('?repo= in the URL loads from the ?hub= hub on open', async () => {
    const { page } = browser;
    await page.goto(url(`${PAGE}&repo=${encodeURIComponent(REPO)}`));
    await waitForState(page, 'ready');
    assert.equal(await page.inputValue('#repo'), REPO);
    assert.match(await page.textContent('#status'), /^Ready: local\/tiny-llama on /);
  });
});
