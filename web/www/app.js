// The chat page: load a model (Hugging Face hub, local files or a URL on this server), then chat with it on the
// browser's WebGPU through the wasm build of the engine (pkg/deltallm_web.js, API in the repo's web/API.md).
//
// Element ids and state that the browser tests (web/tests/) rely on; keep them stable:
//   #status        one line saying what happens now, or what went wrong and what to do
//   #file-input    <input type=file multiple>: choosing files loads them at once
//   #repo, #repo-file, #load-button   hub repo id, optional file name (a .gguf), and the button that loads them
//   #prompt, #send, #stop, #raw       message box, Send, Stop, "raw prompt" (no chat template, no history)
//   #output        the text of the last reply (the id moves to the newest reply bubble)
//   #tokens        the last reply's token ids, as JSON text and in its data-tokens attribute
//   #stats         tok/s of prefill and decode, and the delta sparsity of the last reply
//   #threshold #window #window-scale #sinks #max-tokens #greedy #temperature #seed   generation controls
//   document.body.dataset.state   "idle" | "loading" | "ready" | "generating" | "error"
//   window.deltallm = { engine, lastResult, info, streamed }   for automation: lastResult is null while a reply
//                  runs, streamed holds the ids that onToken has delivered so far
//
// URL parameters (loading starts on open):
//   ?gguf=<url>                          one .gguf file
//   ?model=<url prefix>&files=a,b,c      these files under the prefix (files defaults to the safetensors set)
//   ?repo=<owner/name>[&file=<name>]     from the Hugging Face hub
//   ?hub=<url>                           another hub in place of https://huggingface.co, for tests and mirrors only:
//                                        files come from <url>/<owner/name>/resolve/main/<file> (web/serve.py plays
//                                        one at /hub/; it combines with ?repo= and with the form)

// The wasm module is imported in startEngine(), so a missing build or a browser without WebGPU still gets a message.
let wasm = null; // { default: init, webgpuInfo, Engine }

const CACHE_NAME = 'deltallm-models';
const HUB = hubBase(new URLSearchParams(location.search).get('hub'));
// The files of a safetensors model; the weights come as model.safetensors or as the shards of an index.
const SAFETENSORS_REQUIRED = ['config.json', 'tokenizer.json'];
const SAFETENSORS_OPTIONAL = ['tokenizer_config.json', 'generation_config.json'];
const MODEL_FILE_RE = /\.(gguf|safetensors)$|^(config|tokenizer|tokenizer_config|generation_config)\.json$/;

import { $, setStatus, adapterLabel } from './common.js';
const app = { engine: null, lastResult: null, info: null, streamed: [] };
window.deltallm = app;

let history = [];          // chat messages [{role, content}] sent with the chat template
let stopRequested = false;

// ---------------------------------------------------------------------------------------------------------------
// State and messages

function setState(state) {
  document.body.dataset.state = state;
  const busy = state === 'loading' || state === 'generating';
  $('send').disabled = busy || !app.engine;
  $('stop').disabled = state !== 'generating';
  $('clear-chat').disabled = state === 'generating';
  $('load-button').disabled = busy;
  $('file-input').disabled = busy;
}


function fail(text) {
  setStatus(text, 'error');
  setState('error');
}

// The engine's errors are already clear sentences; sort them so the reader knows which kind of problem it is.
function explainEngineError(error) {
  const message = String(error && error.message || error);
  if (/webgpu is not available|navigator\.gpu|no (gpu |webgpu )?adapter/i.test(message)) {
    return noWebGpuMessage(message);
  }
  if (/out of (gpu )?memory|outofmemory|allocation failed|maximum memory size/i.test(message)) {
    return `Out of memory: ${message}. Closing other tabs frees GPU memory too.`;
  }
  // The engine checks each buffer against the device's limits before making it ("... allows at most N bytes").
  if (/allows at most|lacks the feature|max[A-Za-z]*Size/i.test(message)) {
    return `This GPU's WebGPU limits are too small for the model: ${message}.`;
  }
  if (/device was lost/i.test(message)) {
    return `${message.replace(/restart the program/, 'reload the page')}. The browser may have reset the GPU ` +
      '(a driver crash, or a step that ran too long).';
  }
  if (error instanceof WebAssembly.RuntimeError) {
    // A Rust panic leaves the wasm instance unusable; only a fresh page gets a working engine again.
    return `the engine crashed (${message}); reload the page. The browser console has the details.`;
  }
  return message;
}

function noWebGpuMessage(detail) {
  return 'WebGPU is not available in this browser' + (detail ? ` (${detail})` : '') + '. Use a recent Chrome, ' +
    'Edge or Safari, or Firefox with WebGPU enabled; Chromium on Linux needs --enable-unsafe-webgpu.';
}

function formatBytes(bytes) {
  if (bytes >= 1 << 30) return `${(bytes / (1 << 30)).toFixed(2)} GiB`;
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  return `${(bytes / 1024).toFixed(1)} KiB`;
}

// ---------------------------------------------------------------------------------------------------------------
// Progress list: one line per downloaded file and one for the engine's load stages

function progressLine(key) {
  let line = document.querySelector(`#progress li[data-key="${CSS.escape(key)}"]`);
  if (!line) {
    line = document.createElement('li');
    line.dataset.key = key;
    line.innerHTML = '<span class="name"></span> <progress max="1" value="0"></progress> <span class="text"></span>';
    line.querySelector('.name').textContent = key;
    $('progress').append(line);
  }
  return line;
}

function showProgress(key, done, total, text) {
  const line = progressLine(key);
  const bar = line.querySelector('progress');
  if (total > 0) {
    bar.max = total;
    bar.value = Math.min(done, total);
  } else {
    bar.removeAttribute('value'); // indeterminate: the server sent no length
  }
  line.querySelector('.text').textContent = text;
}

// ---------------------------------------------------------------------------------------------------------------
// Downloads, kept in the Cache API so a reload does not fetch the weights again

// The Cache API exists only in secure contexts (https or localhost); without it the page still works, uncached.
async function openCache() {
  try {
    return 'caches' in self ? await caches.open(CACHE_NAME) : null;
  } catch {
    return null;
  }
}

// What a failed download means. The hub says which kind of miss it was in X-Error-Code (its CORS headers expose
// it): it answers 401 RepoNotFound for a repo it does not have *or* one the visitor may not see, and this page
// downloads anonymously.
function httpError(response, url) {
  const base = `HTTP ${response.status} ${response.statusText} fetching ${url}`;
  switch (response.headers.get('x-error-code')) {
    case 'RepoNotFound':
      return `${base}: no such repo on the hub, or it is private or gated (this page downloads without logging ` +
        'in: pick a public repo, or download the files and open them as local files below)';
    case 'GatedRepo':
      return `${base}: the repo is gated (this page downloads without logging in: download the files after ` +
        'accepting its terms, and open them as local files below)';
    case 'EntryNotFound':
      return `${base}: the repo has no such file`;
    case 'RevisionNotFound':
      return `${base}: the repo has no such revision`;
    default:
      return base;
  }
}

// Fetch one file as a Blob, with per-file progress. `optional` files may be missing (404): then null.
// A Blob, not bytes: the browser keeps a large one on disk, and the engine reads it by range one tensor at a
// time, so neither the JS heap nor the wasm heap ever holds a whole model file.
async function fetchFile(url, name, { optional = false } = {}) {
  const cache = await openCache();
  const cached = cache && await cache.match(url);
  if (cached) {
    const blob = await cached.blob();
    showProgress(name, blob.size, blob.size, `${formatBytes(blob.size)} (from the cache)`);
    return blob;
  }
  let response;
  try {
    response = await fetch(url);
  } catch (error) {
    throw new Error(`could not fetch ${url}: ${error.message} (offline, or the server does not allow this page ` +
      'to read it)');
  }
  if (!response.ok) {
    if (optional && response.status === 404) return null;
    throw new Error(httpError(response, url));
  }
  if (cache) {
    // The body streams into the cache; the Blob then comes back from the cache, backed by its storage.
    try {
      await cache.put(url, withProgress(response, name));
      const stored = await cache.match(url);
      if (stored) return await stored.blob();
    } catch (error) {
      // A full quota must not stop the model from loading; the next visit just downloads again.
      console.warn(`not cached: ${url}: ${error.message}`);
      await cache.delete(url).catch(() => {});
    }
    // The body went into the failed put: fetch it once more, uncached.
    response = await fetch(url);
    if (!response.ok) throw new Error(httpError(response, url));
  }
  return withProgress(response, name).blob();
}

// The same response, its body reporting progress as it is read.
function withProgress(response, name) {
  const encoded = response.headers.get('content-encoding');
  const declared = Number(response.headers.get('content-length')) || 0;
  // A compressed body's length is not the length of the bytes we get.
  const total = encoded && encoded !== 'identity' ? 0 : declared;
  let received = 0;
  const counter = new TransformStream({
    transform(chunk, controller) {
      received += chunk.length;
      showProgress(name, received, total,
        total ? `${formatBytes(received)} / ${formatBytes(total)}` : formatBytes(received));
      controller.enqueue(chunk);
    },
    flush() {
      showProgress(name, received, received, `${formatBytes(received)} downloaded`);
    },
  });
  const headers = new Headers(response.headers);
  // The cached copy is stored decoded.
  headers.delete('content-encoding');
  headers.delete('content-length');
  return new Response(response.body.pipeThrough(counter), { status: response.status, headers });
}

// The files of a model under one URL prefix: a list of names, or the safetensors set (one file or shards).
async function fetchModelFiles(prefix, names) {
  const base = prefix.endsWith('/') ? prefix : prefix + '/';
  const get = async (name, optional) => {
    const blob = await fetchFile(base + name, name, { optional });
    return blob && { name, blob };
  };
  if (names && names.length) {
    const files = [];
    for (const name of names) files.push(await get(name, false));
    return files;
  }
  const files = [];
  for (const name of SAFETENSORS_REQUIRED) files.push(await get(name, false));
  for (const name of SAFETENSORS_OPTIONAL) {
    const file = await get(name, true);
    if (file) files.push(file);
  }
  const index = await get('model.safetensors.index.json', true);
  if (index) {
    const weightMap = JSON.parse(await index.blob.text()).weight_map || {};
    const shards = [...new Set(Object.values(weightMap))].sort();
    for (const shard of shards) files.push(await get(shard, false));
  } else {
    files.push(await get('model.safetensors', false));
  }
  return files;
}

// ?hub= may be relative to the page (e.g. "/hub"); without it, the real hub.
function hubBase(override) {
  return override ? new URL(override, location.href).href.replace(/\/+$/, '') : 'https://huggingface.co';
}

function hubPrefix(repo) {
  return `${HUB}/${repo.trim().replace(/^\/+|\/+$/g, '')}/resolve/main/`;
}

async function clearCache() {
  if ('caches' in self) await caches.delete(CACHE_NAME);
  $('cache-info').textContent = 'cache cleared';
}

// ---------------------------------------------------------------------------------------------------------------
// Loading a model

let adapterName = '';
let engineReady = null; // resolves once init() and the adapter check are done; null when there is no WebGPU

async function loadModel(source, getFiles) {
  if (!engineReady || !(await engineReady)) return;
  if (['loading', 'generating'].includes(document.body.dataset.state)) {
    // A drop can arrive while the engine works; freeing it then would pull the model from under it.
    setStatus(`Busy: wait for the current ${document.body.dataset.state} to finish, then load ${source}.`);
    return;
  }
  setState('loading');
  $('progress').replaceChildren();
  $('model-info').textContent = '';
  app.info = null;
  if (app.engine) {
    app.engine.free(); // the old model's GPU buffers go before the new one's are made
    app.engine = null;
  }
  try {
    setStatus(`Fetching ${source} …`);
    const files = await getFiles();
    const bytes = files.reduce((sum, file) => sum + file.blob.size, 0);
    setStatus(`Loading ${files.length} file(s), ${formatBytes(bytes)}, into the GPU …`);
    const engine = await wasm.Engine.load(files, (stage, done, total) => {
      showProgress(`load: ${stage}`, done, total, total ? `${done} / ${total}` : `${done}`);
    });
    app.engine = engine;
    app.info = engine.info();
    onModelLoaded(source);
  } catch (error) {
    console.error(error);
    fail(`Could not load ${source}: ${explainEngineError(error)}`);
  }
}

function onModelLoaded(source) {
  const info = app.info;
  $('model-info').textContent = `${info.arch}, ${info.layers} layers, hidden ${info.hidden}, ` +
    `${info.heads}/${info.kvHeads} heads, vocab ${info.vocab}, context ${info.context}` +
    (info.hasChatTemplate ? ', chat template' : ', no chat template');
  // Without a chat template the engine's fallback is a guess; raw text is the honest default then.
  $('raw').checked = !info.hasChatTemplate;
  history = [];
  setStatus(`Ready: ${source} on ${info.adapter || adapterName}.`);
  setState('ready');
}

function loadFromHub(repo, file) {
  if (!/^[\w.-]+\/[\w.-]+$/.test(repo.trim())) {
    fail(`"${repo}" is not a Hugging Face repo id (owner/name).`);
    return;
  }
  const prefix = hubPrefix(repo);
  return loadModel(repo + (file ? `/${file}` : ''), () => fetchModelFiles(prefix, file ? [file] : null));
}

function loadLocalFiles(fileList) {
  const chosen = [...fileList].filter((file) => MODEL_FILE_RE.test(file.name));
  if (chosen.length === 0) {
    fail('None of these files is a model file: choose one .gguf, or config.json + *.safetensors + tokenizer.json.');
    return;
  }
  const label = chosen.length === 1 ? chosen[0].name : `${chosen.length} local files`;
  // A File is a Blob: the engine reads it by range while it loads, never whole.
  return loadModel(label, async () => chosen.map((file) => {
    showProgress(file.name, file.size, file.size, formatBytes(file.size));
    return { name: file.name, blob: file };
  }));
}

// ---------------------------------------------------------------------------------------------------------------
// Chat

function numberField(id) {
  const value = Number($(id).value);
  return Number.isFinite(value) ? value : 0;
}

function buildRequest(text, raw) {
  const request = { maxTokens: Math.max(1, Math.round(numberField('max-tokens'))) };
  if (raw) {
    request.prompt = text;
  } else {
    request.messages = history.slice();
  }
  if ($('greedy').checked) {
    request.greedy = true;
  } else {
    request.greedy = false;
    request.temperature = numberField('temperature');
    request.seed = Math.round(numberField('seed'));
  }
  // Θ = 0 means dense attention: leave DeltaLLM off entirely, as the CLI does without --delta-threshold.
  const threshold = numberField('threshold');
  if (threshold > 0) {
    request.deltaThreshold = threshold;
    request.window = Math.max(1, Math.round(numberField('window')));
    request.windowScale = numberField('window-scale');
    request.sinks = Math.max(0, Math.round(numberField('sinks')));
  }
  return request;
}

function addBubble(role, text) {
  const bubble = document.createElement('div');
  bubble.className = `message ${role}`;
  const body = document.createElement('span');
  body.className = 'text';
  body.textContent = text;
  bubble.append(body);
  $('messages').append(bubble);
  $('messages').scrollTop = $('messages').scrollHeight;
  return body;
}

// Signals Stop to the engine: thrown from onToken, which makes generate() reject with it.
class StopGeneration extends Error {
  constructor() {
    super('stopped by the user');
  }
}

async function send() {
  const text = $('prompt').value;
  if (!app.engine || !text.trim()) return;
  const raw = $('raw').checked;
  if (!raw) history.push({ role: 'user', content: text });
  addBubble('user', text);
  $('prompt').value = '';

  const previous = $('output');
  if (previous) previous.removeAttribute('id');
  const output = addBubble('assistant', '');
  output.id = 'output';

  const request = buildRequest(text, raw);
  app.lastResult = null;
  stopRequested = false;
  setState('generating');
  setStatus('Generating …');
  const started = performance.now();
  let firstTokenAt = 0;
  let count = 0;
  const ids = [];
  app.streamed = ids;
  try {
    // Each generate() starts from an empty KV cache, so the whole conversation is sent every time.
    const result = await app.engine.generate(request, (piece, id) => {
      if (stopRequested) throw new StopGeneration();
      const now = performance.now();
      if (count === 0) firstTokenAt = now;
      count += 1;
      ids.push(id);
      output.textContent += piece;
      $('messages').scrollTop = $('messages').scrollHeight;
      // Live speed: the first token ends the prefill; later ones are decode steps.
      const decodeRate = count > 1 ? (count - 1) / ((now - firstTokenAt) / 1000) : 0;
      $('stats').textContent = `${count} tokens · first after ${(firstTokenAt - started).toFixed(0)} ms` +
        (count > 1 ? ` · decode ${decodeRate.toFixed(1)} tok/s` : '');
    });
    app.lastResult = result;
    output.textContent = result.text; // the engine's full decode is exact where pieces split a character
    if (!raw) history.push({ role: 'assistant', content: result.text });
    showResult(result);
    setStatus('Ready.');
    setState('ready');
  } catch (error) {
    if (error instanceof StopGeneration || stopRequested) {
      if (!raw) history.push({ role: 'assistant', content: output.textContent });
      showTokens(ids);
      setStatus(`Stopped after ${count} tokens.`);
      setState('ready');
    } else {
      console.error(error);
      fail(`Generation failed: ${explainEngineError(error)}`);
    }
  }
}

function showTokens(ids) {
  const json = JSON.stringify(ids);
  $('tokens').textContent = json;
  $('tokens').dataset.tokens = json;
}

function showResult(result) {
  showTokens(result.tokens);
  const parts = [
    `prompt ${result.promptTokens.length} tokens, prefill ${result.prefillTokS.toFixed(1)} tok/s`,
    `${result.tokens.length} generated, decode ${result.decodeTokS.toFixed(1)} tok/s`,
  ];
  const delta = result.delta;
  if (delta) {
    parts.push(`delta sparsity ${(100 * delta.deltaSparsity).toFixed(1)} %, ` +
      `MAC sparsity ${(100 * delta.macSparsity).toFixed(1)} % (Θ ${delta.threshold}, window ${delta.window})`);
  } else {
    parts.push('dense attention (Θ = 0)');
  }
  $('stats').textContent = parts.join(' · ');
}

function clearChat() {
  history = [];
  $('messages').replaceChildren();
  $('stats').textContent = '';
  showTokens([]);
  // While a reply runs the engine is busy (and clears its cache before the next one anyway).
  if (app.engine && document.body.dataset.state !== 'generating') app.engine.reset();
}

// ---------------------------------------------------------------------------------------------------------------
// Start-up

function wireEvents() {
  $('hub-form').addEventListener('submit', (event) => {
    event.preventDefault();
    loadFromHub($('repo').value, $('repo-file').value.trim());
  });
  $('file-input').addEventListener('change', () => {
    if ($('file-input').files.length) loadLocalFiles($('file-input').files);
  });
  const zone = $('drop-zone');
  // Dropping anywhere on the page would otherwise navigate away to the file.
  for (const type of ['dragenter', 'dragover']) {
    document.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add('dragging');
    });
  }
  document.addEventListener('dragleave', (event) => {
    if (!event.relatedTarget) zone.classList.remove('dragging');
  });
  document.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('dragging');
    if (event.dataTransfer.files.length) loadLocalFiles(event.dataTransfer.files);
  });
  $('clear-cache').addEventListener('click', clearCache);
  $('chat-form').addEventListener('submit', (event) => {
    event.preventDefault();
    send();
  });
  $('prompt').addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && (event.ctrlKey || event.metaKey) && !$('send').disabled) send();
  });
  $('stop').addEventListener('click', () => {
    stopRequested = true;
    setStatus('Stopping …');
  });
  $('clear-chat').addEventListener('click', clearChat);
}

// Init the wasm module and check the adapter once; returns false (with the message shown) when there is no WebGPU.
async function startEngine() {
  if (!navigator.gpu) {
    fail(noWebGpuMessage('navigator.gpu is missing'));
    return false;
  }
  try {
    wasm = await import('./pkg/deltallm_web.js');
  } catch (error) {
    console.error(error);
    fail(`The wasm build is missing or broken (pkg/deltallm_web.js: ${error.message}); run web/build.sh.`);
    return false;
  }
  try {
    await wasm.default();
  } catch (error) {
    console.error(error);
    fail(`Could not start the wasm engine: ${error.message || error}`);
    return false;
  }
  try {
    // Throws when the browser has WebGPU but no adapter for it (blocklisted GPU, WebGPU switched off).
    const info = await wasm.webgpuInfo();
    const limits = info.limits || {};
    adapterName = await adapterLabel(info.adapter);
    $('adapter').textContent = `Adapter: ${adapterName} · shader-f16 ${info.f16 ? 'yes' : 'no'} · subgroups ` +
      `${info.subgroups ? 'yes' : 'no'} · max storage binding ` +
      `${formatBytes(limits.maxStorageBufferBindingSize || 0)} · max buffer ${formatBytes(limits.maxBufferSize || 0)}`;
    return true;
  } catch (error) {
    console.error(error);
    const message = String(error && error.message || error);
    // The engine's no-adapter text advises native drivers and flags; in a page only the fact matters.
    fail(noWebGpuMessage(/no gpu adapter/i.test(message) ? 'the browser offers no WebGPU adapter' : message));
    return false;
  }
}


// Returns whether the URL named a model (its loading has then started).
function loadFromUrlParameters() {
  const params = new URLSearchParams(location.search);
  if (params.get('gguf')) {
    const url = new URL(params.get('gguf'), location.href);
    const name = url.pathname.split('/').pop() || 'model.gguf';
    loadModel(name, () => fetchModelFiles(new URL('.', url).href, [name]));
    return true;
  }
  if (params.get('model')) {
    const prefix = new URL(params.get('model'), location.href).href;
    const names = (params.get('files') || '').split(',').map((name) => name.trim()).filter(Boolean);
    loadModel(params.get('model'), () => fetchModelFiles(prefix, names));
    return true;
  }
  if (params.get('repo')) {
    $('repo').value = params.get('repo');
    $('repo-file').value = params.get('file') || '';
    loadFromHub(params.get('repo'), params.get('file') || '');
    return true;
  }
  return false;
}

wireEvents();
setState('idle');
engineReady = startEngine();
engineReady.then((ok) => {
  if (!ok) return;
  if (!loadFromUrlParameters()) setStatus('Choose a model: a Hugging Face repo, or local files.');
});
