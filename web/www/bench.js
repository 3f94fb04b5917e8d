// The benchmark page: runs the kernel suite of `deltallm bench` (the same Rust code, built to wasm) on this
// browser's WebGPU and shows the CLI's figures; the JSON (the CLI's --json schema) can be downloaded to compare
// browsers and GPUs.
//
// Element ids the browser tests rely on: #status, #adapter, #quick, #full, #progress, #progress-label,
// #bench-table (one row per kernel), #download; document.body.dataset.state = "idle" | "running" | "done" | "error";
// window.deltallmBench = { json } (the parsed result). `?run=quick` (or `?run=full`) starts a run on open.

import { $, setStatus, adapterLabel } from './common.js';
let wasm = null;
let adapterName = ''; // the engine's adapter name, or what GPUAdapterInfo tells when the browser hides it
window.deltallmBench = { json: null };


function setState(state) {
  document.body.dataset.state = state;
  const running = state === 'running';
  $('quick').disabled = running || !wasm;
  $('full').disabled = running || !wasm;
}

function fail(text) {
  setStatus(text, 'error');
  setState('error');
}

// The same rounding as the CLI's table: three significant digits for times.
const ms = (value) => (value >= 100 ? value.toFixed(0) : value.toPrecision(3));

// Columns of the kernel table: header, cell text, whether it is a number (right-aligned).
const COLUMNS = [
  ['kernel', (k) => k.name, false],
  ['shape', (k) => k.shape, false],
  ['median ms', (k) => ms(k.median_ms), true],
  ['p10–p90 ms', (k) => `${ms(k.p10_ms)}–${ms(k.p90_ms)}`, true],
  ['GB/s', (k) => k.gb_per_s.toFixed(1), true],
  ['GOP/s', (k) => k.gop_per_s.toFixed(1), true],
  ['% of copy', (k) => `${k.pct_of_copy.toFixed(0)}%`, true],
];

function table(id, columns, rows) {
  const element = document.createElement('table');
  element.id = id;
  const head = element.createTHead().insertRow();
  for (const [title, , numeric] of columns) {
    const cell = document.createElement('th');
    cell.textContent = title;
    if (numeric) cell.className = 'number';
    head.append(cell);
  }
  const body = element.createTBody();
  for (const row of rows) {
    const line = body.insertRow();
    for (const [, text, numeric] of columns) {
      const cell = line.insertCell();
      cell.textContent = text(row);
      if (numeric) cell.className = 'number';
    }
  }
  return element;
}

// Whole-model rows, if the suite ever has them: their fields are shown as they come.
function e2eTable(rows) {
  const keys = [...new Set(rows.flatMap((row) => Object.keys(row)))];
  const columns = keys.map((key) => [key, (row) => formatAny(row[key]), typeof rows[0][key] === 'number']);
  return table('bench-e2e', columns, rows);
}

function formatAny(value) {
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : value.toPrecision(4);
  if (value === null || value === undefined) return '';
  return typeof value === 'object' ? JSON.stringify(value) : String(value);
}


async function browserFacts() {
  const adapter = await navigator.gpu.requestAdapter();
  const info = (adapter && adapter.info) || {};
  return {
    userAgent: navigator.userAgent,
    adapterInfo: { vendor: info.vendor, architecture: info.architecture, device: info.device,
      description: info.description },
  };
}

function describeAdapter(adapter, timing) {
  const parts = [`Adapter: ${adapter.name || adapterName}`];
  if (adapter.backend) parts.push(adapter.backend);
  if (adapter.driver) parts.push(`${adapter.driver} ${adapter.driver_info || ''}`.trim());
  parts.push(`shader-f16 ${adapter.shader_f16 ? 'yes' : 'no'}`, `subgroups ${adapter.subgroups ? 'yes' : 'no'}`);
  if (timing) parts.push(`timing: ${timing}`);
  return parts.join(' · ');
}

function offerDownload(text, adapterName) {
  const link = $('download');
  if (link.href) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  const slug = adapterName.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'adapter';
  link.download = `deltallm-bench-${slug}.json`;
  link.textContent = `Download JSON (${link.download})`;
  link.hidden = false;
}

async function run(quick) {
  setState('running');
  $('results').replaceChildren();
  $('download').hidden = true;
  const bar = $('progress');
  bar.value = 0;
  setStatus(`Running the ${quick ? 'quick' : 'full'} kernel suite …`);
  const started = performance.now();
  try {
    const text = await wasm.runBench({ quick, filter: null }, (done, total, label) => {
      bar.max = Math.max(total, 1);
      bar.value = done;
      $('progress-label').textContent = `${done} / ${total} ${label || ''}`;
    });
    const json = JSON.parse(text);
    // Which browser ran it matters as much as the GPU when comparing; the CLI's fields stay as they are.
    json.browser = await browserFacts();
    window.deltallmBench.json = json;
    $('adapter').textContent = describeAdapter(json.adapter, json.timing);
    $('results').append(table('bench-table', COLUMNS, json.kernels));
    if (json.e2e && json.e2e.length) $('results').append(e2eTable(json.e2e));
    offerDownload(JSON.stringify(json, null, 2), json.adapter.name || adapterName);
    bar.value = bar.max;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setStatus(`Done: ${json.kernels.length} kernels in ${seconds} s.`);
    setState('done');
  } catch (error) {
    console.error(error);
    fail(`The benchmark failed: ${error.message || error}`);
  }
}

async function start() {
  $('quick').addEventListener('click', () => run(true));
  $('full').addEventListener('click', () => run(false));
  if (!navigator.gpu) {
    fail('WebGPU is not available in this browser (navigator.gpu is missing). Use a recent Chrome, Edge or ' +
      'Safari, or Firefox with WebGPU enabled; Chromium on Linux needs --enable-unsafe-webgpu.');
    return;
  }
  try {
    const module = await import('./pkg/deltallm_web.js');
    await module.default();
    const info = await module.webgpuInfo();
    wasm = module;
    adapterName = await adapterLabel(info.adapter);
    $('adapter').textContent = `Adapter: ${adapterName} · shader-f16 ${info.f16 ? 'yes' : 'no'} · subgroups ` +
      `${info.subgroups ? 'yes' : 'no'}`;
  } catch (error) {
    console.error(error);
    const message = String(error.message || error);
    // The engine's no-adapter text advises native drivers and flags; in a page only the fact matters.
    const detail = /no gpu adapter/i.test(message) ? 'the browser offers no WebGPU adapter' : message;
    fail(/webgpu|adapter/i.test(message) ? `WebGPU is not available in this browser (${detail}).`
      : `Could not start the engine: ${message}`);
    return;
  }
  setStatus('Choose Quick (seconds) or Full (minutes on a software adapter).');
  setState('idle');
  const mode = new URLSearchParams(location.search).get('run');
  if (mode === 'quick' || mode === 'full') run(mode === 'quick');
}

start();
