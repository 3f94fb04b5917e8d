// The README's promise: the page chats with the SmolLM2 package model (GGUF Q4_1, ~98 MB) loaded from a local
// file. Skipped where models/fetch-smollm2.sh has not put it in models/cache.

import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { generate, launch, MOCK, nativeTokens, screenshot, SMOLLM2, TIMEOUT_MS, url, waitForState } from './support.mjs';

// The mock engine knows nothing of GGUF files: this test needs the real one.
const present = existsSync(SMOLLM2) && !MOCK;
let browser;
before(async () => {
  if (present) browser = await launch();
});
after(async () => {
  await browser?.close();
});

test('SmolLM2 from a local .gguf chats with the native engine\'s tokens', {
  skip: present ? false : MOCK ? 'the mock engine' : `no ${SMOLLM2} (models/fetch-smollm2.sh fetches it)`,
  timeout: TIMEOUT_MS * 2,
}, async () => {
  const { page } = browser;
  await page.goto(url('index.html'));
  await page.waitForFunction(() => /Choose a model/.test(document.querySelector('#status').textContent));
  await page.setInputFiles('#file-input', SMOLLM2);
  await waitForState(page, 'ready');
  const info = await page.evaluate(() => window.deltallm.info);
  assert.equal(info.hasChatTemplate, true);
  // The file is read by range, one tensor at a time, and uploaded layer by layer: the wasm heap never held it.
  const fileBytes = statSync(SMOLLM2).size;
  console.log(`SmolLM2: wasm memory ${info.wasmMemoryBytes} bytes after loading a ${fileBytes}-byte file`);
  assert.ok(info.wasmMemoryBytes > 0, 'engine.info() reports the wasm memory');
  assert.ok(info.wasmMemoryBytes < fileBytes,
    `the wasm memory (${info.wasmMemoryBytes} bytes) is not below the file's size (${fileBytes} bytes)`);
  assert.equal(await page.isChecked('#raw'), false, 'a model with a chat template chats through it');

  const question = 'What is the capital of France?';
  const reply = await generate(page, { prompt: question, raw: false, maxTokens: 8 });
  const native = nativeTokens(question, { maxTokens: 8, chat: true, model: SMOLLM2 });
  await screenshot(page, 'chat-smollm2.png');
  console.log(`SmolLM2: browser ${JSON.stringify(reply.tokens)} "${reply.text}"\n` +
    `         native  ${JSON.stringify(native.tokens)} "${native.text}"`);
  assert.deepEqual(reply.promptTokens, native.prompt_tokens, 'the same chat template and tokenizer');
  // SwiftShader and lavapipe round differently, and a 135M Q4_1 model has near-ties among its top logits, so a
  // late token may flip (measured: 7 of 8 equal). The tiny fixture's tests hold the exact equality.
  let same = 0;
  while (same < native.tokens.length && reply.tokens[same] === native.tokens[same]) same += 1;
  console.log(`SmolLM2: ${same} of ${native.tokens.length} leading tokens equal`);
  assert.ok(same >= 4, `only ${same} leading tokens equal the native engine's`);
});
