// A GPU with small WebGPU limits, played on SwiftShader (which offers 1 GiB bindings): an init script makes
// GPUAdapter.limits report less. The engine asks the adapter for its limits, requests exactly those for its
// device (wgpu 30's web backend maps adapter.limits() and passes them as requiredLimits; the browser then grants
// at least the WebGPU defaults) and sizes every buffer against the limits it requested. So what the page sees
// here is what it would see on a GPU with these limits: weights that do not fit one binding are split into
// chunks, and a model whose buffers cannot be split gets the page's "limits are too small" message.

import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, test } from 'node:test';
import {
  generate, launch, MOCK, nativeTokens, screenshot, SMOLLM2, TIMEOUT_MS, TINY_LLAMA_FILES, url, waitForState,
} from './support.mjs';

const PROMPT = 'The quick brown fox';
const TINY_PAGE = `index.html?model=/fixtures/tiny-llama/&files=${TINY_LLAMA_FILES.join(',')}`;
const SMOLLM2_PAGE = 'index.html?gguf=/models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf';
const KIB = 1024;
const MIB = 1024 * KIB;

// Runs in the page before its scripts: lower the adapter's limits, and record what the engine asks the device
// for and every buffer it makes (label, size), so a test can see the splitting and that no buffer breaks a limit.
function smallAdapter({ binding, buffer }) {
  const real = Object.getOwnPropertyDescriptor(GPUAdapter.prototype, 'limits').get;
  Object.defineProperty(GPUAdapter.prototype, 'limits', {
    configurable: true,
    get() {
      const limits = real.call(this);
      const copy = {};
      for (const key in limits) copy[key] = limits[key]; // the WebIDL attributes are enumerable getters
      if (binding) copy.maxStorageBufferBindingSize = Math.min(copy.maxStorageBufferBindingSize, binding);
      if (buffer) copy.maxBufferSize = Math.min(copy.maxBufferSize, buffer);
      return copy;
    },
  });
  const probe = { required: null, buffers: [] };
  window.limitsProbe = probe;
  const requestDevice = GPUAdapter.prototype.requestDevice;
  GPUAdapter.prototype.requestDevice = function (descriptor) {
    probe.required = { ...(descriptor && descriptor.requiredLimits) };
    return requestDevice.call(this, descriptor);
  };
  const createBuffer = GPUDevice.prototype.createBuffer;
  GPUDevice.prototype.createBuffer = function (descriptor) {
    probe.buffers.push({ label: descriptor.label || '', size: descriptor.size, usage: descriptor.usage });
    return createBuffer.call(this, descriptor);
  };
}

// A browser whose page sees an adapter with these limits (bytes; absent = the real one).
async function launchSmall(limits) {
  const browser = await launch();
  await browser.page.addInitScript(smallAdapter, limits);
  return browser;
}

async function probe(page) {
  return page.evaluate(() => window.limitsProbe);
}

// The engine requested the small limits for its device and made no buffer above them.
function assertWithinLimits(seen, { binding, buffer }) {
  assert.equal(seen.required.maxStorageBufferBindingSize, binding, 'the engine requests the adapter\'s binding limit');
  assert.equal(seen.required.maxBufferSize, buffer, 'the engine requests the adapter\'s buffer limit');
  const STORAGE = 0x80; // GPUBufferUsage.STORAGE
  for (const { label, size, usage } of seen.buffers) {
    assert.ok(size <= buffer, `buffer '${label}' (${size} bytes) over maxBufferSize ${buffer}`);
    if (usage & STORAGE) assert.ok(size <= binding, `storage buffer '${label}' (${size} bytes) over ${binding}`);
  }
}

function chunkLabels(seen) {
  return seen.buffers.map((b) => b.label).filter((label) => /\[chunk \d+\]/.test(label));
}

const skipMock = MOCK ? 'the mock engine knows no WebGPU limits' : false;

describe('small WebGPU limits', { timeout: TIMEOUT_MS * 4, skip: skipMock }, () => {
  test('tiny fixture under a 40 KiB binding: its embedding is split and the tokens stay the native ones',
    { timeout: TIMEOUT_MS }, async () => {
      // 40 KiB holds the largest activation (64 tokens x 160 x f32) but not the 384 x 64 bf16 embedding (48 KiB),
      // which the tied lm_head reads too: both kernels then walk two chunks.
      const limits = { binding: 40 * KIB, buffer: 40 * KIB };
      const browser = await launchSmall(limits);
      try {
        const { page } = browser;
        await page.goto(url(TINY_PAGE));
        await waitForState(page, 'ready');
        assert.match(await page.textContent('#adapter'), /max storage binding 40\.0 KiB · max buffer 40\.0 KiB/);
        const seen = await probe(page);
        assertWithinLimits(seen, limits);
        assert.deepEqual(chunkLabels(seen), ['embed_tokens[chunk 0]', 'embed_tokens[chunk 1]']);

        const dense = await generate(page, { prompt: PROMPT, maxTokens: 16 });
        const native = nativeTokens(PROMPT, { maxTokens: 16 });
        console.log(`40 KiB: browser ${JSON.stringify(dense.tokens)}\n        native  ${JSON.stringify(native.tokens)}`);
        assert.deepEqual(dense.tokens, native.tokens);
        const delta = await generate(page, { prompt: PROMPT, maxTokens: 16, threshold: 0.5 });
        assert.deepEqual(delta.tokens, nativeTokens(PROMPT, { maxTokens: 16, threshold: 0.5 }).tokens, 'Θ 0.5');
        await screenshot(page, 'limits-split.png');
      } finally {
        await browser.close();
      }
    });

  test('SmolLM2 under a 16 MiB binding: the Q8_0 embedding/lm_head in chunks, the same tokens as unsplit', {
    timeout: TIMEOUT_MS * 2,
    skip: existsSync(SMOLLM2) ? false : `no ${SMOLLM2} (models/fetch-smollm2.sh fetches it)`,
  }, async () => {
    const question = 'What is the capital of France?';
    const run = async (limits) => {
      const browser = limits ? await launchSmall(limits) : await launch();
      try {
        const { page } = browser;
        await page.goto(url(SMOLLM2_PAGE));
        await waitForState(page, 'ready');
        const reply = await generate(page, { prompt: question, raw: false, maxTokens: 8 });
        if (limits) await screenshot(page, 'limits-smollm2.png');
        return { reply, seen: limits && await probe(page) };
      } finally {
        await browser.close();
      }
    };
    const limits = { binding: 16 * MIB, buffer: 16 * MIB };
    const split = await run(limits);
    assertWithinLimits(split.seen, limits);
    // 49152 x 576 Q8_0 quants are 27 MiB: two chunks of rows (and their scales).
    assert.deepEqual(chunkLabels(split.seen).filter((label) => label.endsWith('.qs')),
      ['embed_tokens[chunk 0].qs', 'embed_tokens[chunk 1].qs']);
    const whole = await run(null);
    console.log(`SmolLM2 16 MiB: ${JSON.stringify(split.reply.tokens)} "${split.reply.text}"\n` +
      `        1 GiB:  ${JSON.stringify(whole.reply.tokens)} "${whole.reply.text}"`);
    // Each output row is computed the same way whichever chunk holds it, so on the same GPU the split model
    // gives exactly the unsplit one's tokens (the native engine differs by rounding; smollm2.test.mjs has that).
    assert.deepEqual(split.reply.tokens, whole.reply.tokens);
    const native = nativeTokens(question, { maxTokens: 8, chat: true, model: SMOLLM2 });
    assert.deepEqual(split.reply.promptTokens, native.prompt_tokens);
    assert.equal(split.reply.tokens[0], native.tokens[0], 'the first token as the native engine\'s');
  });

  // The engine checks each buffer against the limits before making it; the page sorts that error as "limits too
  // small" and keeps the engine's text, which names the buffer, its size and the limit.
  for (const { what, limits, limitText } of [
    {
      what: 'a 16 KiB storage binding',
      limits: { binding: 16 * KIB },
      limitText: 'per storage binding \\(maxStorageBufferBindingSize\\)',
    },
    { what: 'a 16 KiB maxBufferSize', limits: { buffer: 16 * KIB }, limitText: 'per buffer \\(maxBufferSize\\)' },
  ]) {
    test(`${what} is too small for the tiny model: the page says so, naming the limit`, async () => {
      const browser = await launchSmall(limits);
      try {
        const { page } = browser;
        await page.goto(url(TINY_PAGE));
        await page.waitForFunction(() => ['error', 'ready'].includes(document.body.dataset.state));
        const status = await page.textContent('#status');
        console.log(`status: ${status}`);
        assert.equal(await page.evaluate(() => document.body.dataset.state), 'error');
        assert.match(status, new RegExp('^Could not load /fixtures/tiny-llama/: This GPU\'s WebGPU limits are too ' +
          `small for the model: buffer '[\\w.\\[\\] ]+' needs \\d+ bytes but this device allows at most 16384 bytes ` +
          `${limitText}; use a smaller model or context`));
        assert.doesNotMatch(status, /\n\s+at |\.js:\d+:\d+|RuntimeError|unreachable/, 'a message, not a crash');
        assert.equal(await page.isDisabled('#send'), true);
        await screenshot(page, `limits-too-small-${limits.binding ? 'binding' : 'buffer'}.png`);
      } finally {
        await browser.close();
      }
    });
  }
});

// Runs in the page before its scripts: the error scope the engine closes right after creating the buffer `label`
// answers with an out-of-memory error, as a GPU that ran out of memory there would. (The browser answers error
// scopes later, on its event loop; the engine must still turn the answer into its out-of-memory error.)
function outOfMemoryAt(label) {
  let last = '';
  const createBuffer = GPUDevice.prototype.createBuffer;
  GPUDevice.prototype.createBuffer = function (descriptor) {
    last = (descriptor && descriptor.label) || '';
    return createBuffer.call(this, descriptor);
  };
  const popErrorScope = GPUDevice.prototype.popErrorScope;
  GPUDevice.prototype.popErrorScope = function () {
    const answer = popErrorScope.call(this);
    if (last !== label) return answer;
    last = '';
    return answer.then(() => new GPUOutOfMemoryError(`no memory left for '${label}'`));
  };
}

describe('GPU out of memory', { timeout: TIMEOUT_MS * 2, skip: skipMock }, () => {
  test('an allocation the GPU refuses while loading gives the page\'s out-of-memory advice, naming the layer',
    { timeout: TIMEOUT_MS }, async () => {
      const browser = await launch();
      try {
        const { page } = browser;
        await page.addInitScript(outOfMemoryAt, 'layers.1.v_proj');
        await page.goto(url(TINY_PAGE));
        await page.waitForFunction(() => ['error', 'ready'].includes(document.body.dataset.state));
        const status = await page.textContent('#status');
        console.log(`status: ${status}`);
        assert.equal(await page.evaluate(() => document.body.dataset.state), 'error');
        assert.match(status, /^Could not load \/fixtures\/tiny-llama\/: Out of memory: GPU out of memory in /);
        // (wgpu 30's web backend keeps no text of the browser's error object: the engine's context is what says
        // where it happened.)
        assert.match(status, /in the upload of layer 1, creating buffer 'layers\.1\.v_proj'/, 'names the layer and buffer');
        assert.doesNotMatch(status, /\n\s+at |\.js:\d+:\d+|RuntimeError|unreachable/, 'a message, not a crash');
        assert.equal(await page.isDisabled('#send'), true);
        await screenshot(page, 'out-of-memory.png');
      } finally {
        await browser.close();
      }
    });
});
