// A stand-in for the wasm build (pkg/deltallm_web.js) with the same JS API, for working on the page's logic
// without a wasm build: the tests can route pkg/deltallm_web.js here (DELTALLM_WEB_MOCK=1). Its "model" emits
// token ids derived from the prompt's characters; nothing here is a real engine.

export default async function init() {}

export async function webgpuInfo() {
  if (!navigator.gpu) throw new Error('WebGPU is not available in this browser (navigator.gpu is missing)');
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error('WebGPU is not available: no adapter');
  return {
    adapter: 'mock on ' + (adapter.info?.vendor || 'a WebGPU adapter'),
    backend: 'BrowserWebGpu',
    f16: adapter.features.has('shader-f16'),
    subgroups: adapter.features.has('subgroups'),
    limits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
    },
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Engine {
  static async load(files, onProgress) {
    const config = files.find((file) => file.name === 'config.json');
    if (!config && !files.some((file) => file.name.endsWith('.gguf'))) {
      throw new Error('no config.json and no .gguf among the files');
    }
    const text = config && (config.blob ? await config.blob.text() : new TextDecoder().decode(config.bytes));
    const parsed = text ? JSON.parse(text) : {};
    const layers = parsed.num_hidden_layers || 1;
    for (let layer = 1; layer <= layers; layer += 1) {
      onProgress('upload', layer, layers);
      await sleep(5);
    }
    return new Engine(parsed, files);
  }

  constructor(config, files) {
    this.config = config;
    this.hasChatTemplate = files.some((file) => file.name === 'tokenizer_config.json');
  }

  info() {
    const c = this.config;
    return {
      arch: 'Llama (mock)', layers: c.num_hidden_layers || 1, hidden: c.hidden_size || 0,
      heads: c.num_attention_heads || 0, kvHeads: c.num_key_value_heads || 0, vocab: c.vocab_size || 0,
      context: c.max_position_embeddings || 0, hasTokenizer: true, hasChatTemplate: this.hasChatTemplate,
      adapter: 'mock',
    };
  }

  async generate(request, onToken) {
    const prompt = request.prompt ?? request.messages.map((m) => `${m.role}: ${m.content}`).join('\n');
    const promptTokens = [...prompt].map((ch) => ch.codePointAt(0) % 384);
    const tokens = [];
    let text = '';
    for (let i = 0; i < (request.maxTokens ?? 64); i += 1) {
      const id = (promptTokens[i % promptTokens.length] * 7 + i + Math.round((request.deltaThreshold || 0) * 10))
        % 384;
      const piece = String.fromCharCode(97 + (id % 26));
      tokens.push(id);
      text += piece;
      onToken(piece, id);
      await sleep(2);
    }
    const delta = request.deltaThreshold
      ? { deltaSparsity: 0.3, macSparsity: 0.25, threshold: request.deltaThreshold, window: request.window }
      : null;
    return { tokens, promptTokens, text, prefillTokS: 100, decodeTokS: 50, delta };
  }

  reset() {}
  free() {}
}

export async function runBench(options, onProgress) {
  const kernels = [];
  for (let i = 0; i < 4; i += 1) {
    onProgress(i + 1, 4, `kernel ${i}`);
    await sleep(5);
    kernels.push({ name: `mock kernel ${i}`, shape: 'M=1 K=64 N=64', timing: 'wall', reps: 5, median_ms: 0.5 + i,
      p10_ms: 0.4 + i, p90_ms: 0.6 + i, wall_median_ms: 0.6, bytes: 1024, ops: 2048, gb_per_s: 1.5, gop_per_s: 2.5,
      pct_of_copy: 50 });
  }
  return JSON.stringify({ schema: 1, quick: options.quick, timing: 'wall',
    adapter: { name: 'Mock Adapter', backend: 'BrowserWebGpu', shader_f16: false, subgroups: true }, kernels, e2e: [] });
}

export function benchTable(json) {
  return JSON.parse(json).kernels.map((k) => `| ${k.name} | ${k.median_ms} |`).join('\n');
}
