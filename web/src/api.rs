//! The JS API (web/API.md): adapter facts, loading a model from Blobs or bytes,
//! streaming generation, and the kernel benchmark.

use crate::blob::BlobSource;
use crate::convert::{NO_WEBGPU, callback, describe, error, from_js, get, has_webgpu, to_js};
use deltallm::bench::{self, BenchOptions, Report};
use deltallm::chat::Message;
use deltallm::engine::{Engine as CoreEngine, GenerateOptions, StreamedFiles};
use deltallm::loader::ByteSource;
use deltallm::model::{DeltaOptions, ModelOptions};
use deltallm::settings::{DeltaSettings, GenerationSettings, SamplingSettings};
use deltallm::weights::{StreamedFile, WeightSource};
use deltallm::{Gpu, GpuOptions};
use js_sys::{Array, Function, Uint8Array};
use serde::Deserialize;
use serde_json::json;
use std::cell::RefCell;
use wasm_bindgen::prelude::*;
use web_sys::Blob;

/// Runs when the module is initialised: engine warnings and errors go to
/// the browser console.
#[wasm_bindgen(start)]
pub fn start() {
    if log::set_logger(&CONSOLE).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
}

struct Console;
static CONSOLE: Console = Console;

impl log::Log for Console {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        let text = JsValue::from_str(&format!("deltallm: {}", record.args()));
        match record.level() {
            log::Level::Error => web_sys::console::error_1(&text),
            log::Level::Warn => web_sys::console::warn_1(&text),
            _ => web_sys::console::log_1(&text),
        }
    }

    fn flush(&self) {}
}

/// Open the page's GPU the way the engine uses it. wgpu leaves the
/// adapter's name empty on the web; it is filled from the browser's
/// `adapter.info`.
async fn open_gpu() -> Result<Gpu, JsError> {
    if !has_webgpu() {
        return Err(error(NO_WEBGPU));
    }
    let mut gpu = Gpu::new(&GpuOptions::default()).await.map_err(error)?;
    if gpu.info.name.is_empty() {
        gpu.info.name = browser_adapter().await.name;
    }
    Ok(gpu)
}

/// The limits that decide which models fit, with WebGPU's names.
fn limits_json(l: &wgpu::Limits) -> serde_json::Value {
    json!({
        "maxStorageBufferBindingSize": l.max_storage_buffer_binding_size,
        "maxBufferSize": l.max_buffer_size,
        "maxUniformBufferBindingSize": l.max_uniform_buffer_binding_size,
        "maxStorageBuffersPerShaderStage": l.max_storage_buffers_per_shader_stage,
        "maxComputeWorkgroupStorageSize": l.max_compute_workgroup_storage_size,
        "maxComputeInvocationsPerWorkgroup": l.max_compute_invocations_per_workgroup,
        "maxComputeWorkgroupSizeX": l.max_compute_workgroup_size_x,
        "maxComputeWorkgroupsPerDimension": l.max_compute_workgroups_per_dimension,
        "maxBindGroups": l.max_bind_groups,
    })
}

/// What the browser itself says about its adapter, asked directly: wgpu
/// only maps the features it knows and gives no name on the web.
#[derive(Default)]
struct BrowserAdapter {
    /// `info.description`, else `info.vendor info.architecture`.
    name: String,
    /// `adapter.features`, e.g. "shader-f16", "subgroups".
    features: Vec<String>,
}

async fn browser_adapter() -> BrowserAdapter {
    let gpu = get(&get(&js_sys::global(), "navigator"), "gpu");
    let Some(request) = callback(&get(&gpu, "requestAdapter")) else { return BrowserAdapter::default() };
    let Ok(promise) = request.call0(&gpu).and_then(|p| p.dyn_into::<js_sys::Promise>()) else {
        return BrowserAdapter::default();
    };
    let adapter = match wasm_bindgen_futures::JsFuture::from(promise).await {
        Ok(adapter) if !adapter.is_null() && !adapter.is_undefined() => adapter,
        _ => return BrowserAdapter::default(),
    };
    let info = get(&adapter, "info");
    let text = |key: &str| get(&info, key).as_string().unwrap_or_default();
    let name = match text("description") {
        d if !d.is_empty() => d,
        _ => format!("{} {}", text("vendor"), text("architecture")).trim().to_string(),
    };
    let features = Array::from(&get(&adapter, "features")).iter().filter_map(|f| f.as_string()).collect();
    BrowserAdapter { name, features }
}

/// Facts about the page's WebGPU adapter:
/// `{adapter, backend, f16, subgroups, timestamps, features, engine, limits}`.
/// `f16`/`subgroups`/`timestamps` are what the browser offers; `engine`
/// says which of them the engine uses (it runs without any).
#[wasm_bindgen(js_name = webgpuInfo)]
pub async fn webgpu_info() -> Result<JsValue, JsError> {
    let gpu = open_gpu().await?;
    let features = browser_adapter().await.features;
    let has = |name: &str| features.iter().any(|f| f == name);
    let info = json!({
        "adapter": gpu.info.name,
        "vendor": gpu.info.vendor,
        "driver": gpu.info.driver,
        "backend": format!("{:?}", gpu.info.backend),
        "f16": has("shader-f16"),
        "subgroups": has("subgroups"),
        "timestamps": has("timestamp-query"),
        "features": features,
        "engine": {
            "f16": gpu.caps.shader_f16,
            "subgroups": gpu.caps.subgroups,
            "timestamps": gpu.caps.timestamps,
        },
        "limits": limits_json(&gpu.limits),
    });
    to_js(&info)
}

/// Call `on_progress(stage, done, total)` if given; a throwing callback is
/// logged, not fatal.
fn report(on_progress: &Option<Function>, stage: &str, done: usize, total: usize) {
    if let Some(f) = on_progress {
        let args = (JsValue::from_str(stage), JsValue::from_f64(done as f64), JsValue::from_f64(total as f64));
        if let Err(e) = f.call3(&JsValue::NULL, &args.0, &args.1, &args.2) {
            log::warn!("onProgress threw: {}", describe(&e));
        }
    }
}

/// `[{name, blob}]` (read by range while loading) or `[{name, bytes}]`
/// (copied into the wasm heap, one file at a time).
fn read_files(files: &JsValue, on_progress: &Option<Function>) -> Result<Vec<StreamedFile>, JsError> {
    if !Array::is_array(files) {
        return Err(error("Engine.load expects an array of {name, blob: Blob} or {name, bytes: Uint8Array}"));
    }
    let files = Array::from(files);
    let total = files.length() as usize;
    let mut out = Vec::with_capacity(total);
    for (i, file) in files.iter().enumerate() {
        let name = get(&file, "name").as_string().ok_or_else(|| {
            error(format!("file {i} has no name (expected {{name, blob: Blob}} or {{name, bytes: Uint8Array}})"))
        })?;
        let blob = get(&file, "blob");
        let bytes = get(&file, "bytes");
        let source: Box<dyn ByteSource> = if let Some(blob) = blob.dyn_ref::<Blob>() {
            Box::new(BlobSource::new(blob.clone()))
        } else if let Some(array) = bytes.dyn_ref::<Uint8Array>() {
            Box::new(array.to_vec())
        } else if bytes.is_instance_of::<js_sys::ArrayBuffer>() {
            Box::new(Uint8Array::new(&bytes).to_vec())
        } else {
            return Err(error(format!("{name}: give blob (a Blob or File) or bytes (a Uint8Array or ArrayBuffer)")));
        };
        out.push(StreamedFile { name, source });
        report(on_progress, "read", i + 1, total);
    }
    Ok(out)
}

/// The wasm module's memory in bytes. Wasm memory only grows, so this is
/// the most the module has held since it started.
fn wasm_memory_bytes() -> f64 {
    wasm_bindgen::memory()
        .dyn_into::<js_sys::WebAssembly::Memory>()
        .map(|m| m.buffer().unchecked_into::<js_sys::ArrayBuffer>().byte_length() as f64)
        .unwrap_or(0.0)
}

/// A model on the page's GPU with its tokenizer and chat template.
#[wasm_bindgen]
pub struct Engine {
    /// Taken out while a generation runs, so a second call gets a clear
    /// "busy" error instead of aliasing the first.
    inner: RefCell<Option<CoreEngine>>,
}

const BUSY: &str = "the engine is busy with another generate(); await it first";

/// `generate`'s request object (web/API.md).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct Request {
    prompt: Option<String>,
    messages: Option<Vec<ChatMessage>>,
    max_tokens: Option<usize>,
    greedy: Option<bool>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    repetition_penalty: Option<f32>,
    seed: Option<u64>,
    delta_threshold: Option<f32>,
    window: Option<u32>,
    window_scale: Option<f32>,
    sinks: Option<u32>,
}

impl Request {
    /// The sampling and DeltaLLM knobs; the absent ones take the defaults
    /// the CLI's flags have (`deltallm::settings`).
    fn settings(&self) -> GenerationSettings {
        let defaults = SamplingSettings::default();
        GenerationSettings {
            sampling: SamplingSettings {
                greedy: self.greedy,
                temperature: self.temperature,
                top_k: self.top_k.unwrap_or(defaults.top_k),
                top_p: self.top_p.unwrap_or(defaults.top_p),
                repetition_penalty: self.repetition_penalty.unwrap_or(defaults.repetition_penalty),
                seed: self.seed.unwrap_or(defaults.seed),
            },
            delta: DeltaSettings {
                threshold: self.delta_threshold,
                window: self.window,
                window_scale: self.window_scale,
                sinks: self.sinks,
                ..Default::default()
            },
        }
    }
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: String,
}

/// `runBench`'s options.
#[derive(Deserialize, Default)]
#[serde(default)]
struct BenchRequest {
    quick: bool,
    filter: Option<String>,
}

#[wasm_bindgen]
impl Engine {
    /// Read the headers, config and tokenizer, open the GPU, then read and
    /// upload the weights one layer at a time, reporting
    /// `onProgress(stage, done, total)` with stages "read" (per file),
    /// "parse", "device" and "upload" (per layer).
    pub async fn load(files: JsValue, on_progress: JsValue) -> Result<Engine, JsError> {
        let on_progress = callback(&on_progress);
        let files = read_files(&files, &on_progress)?;
        report(&on_progress, "parse", 0, 1);
        let model_files = StreamedFiles::open(files).await.map_err(error)?;
        report(&on_progress, "parse", 1, 1);
        report(&on_progress, "device", 0, 1);
        let gpu = open_gpu().await?;
        report(&on_progress, "device", 1, 1);
        // DeltaLLM's caches are allocated at load, so generate() can switch it
        // on; Θ = 0 keeps the full K cache that dense attention reads.
        let architecture = model_files.weights.config().architecture;
        let delta = DeltaOptions { threshold: 0.0, ..DeltaOptions::for_architecture(architecture) };
        let options = ModelOptions { delta: Some(delta), ..Default::default() };
        let mut upload = |done: usize, total: usize| report(&on_progress, "upload", done, total);
        let mut engine = CoreEngine::new_streamed_async(gpu, model_files, options, &mut upload).await.map_err(error)?;
        engine.model.use_dense_attention(&engine.gpu).map_err(error)?;
        Ok(Engine { inner: RefCell::new(Some(engine)) })
    }

    /// `{arch, layers, hidden, heads, kvHeads, vocab, context, hasTokenizer,
    /// hasChatTemplate, adapter, wasmMemoryBytes}`.
    pub fn info(&self) -> Result<JsValue, JsError> {
        let inner = self.inner.borrow();
        let engine = inner.as_ref().ok_or_else(|| error(BUSY))?;
        let c = &engine.model.config;
        to_js(&json!({
            "arch": format!("{:?}", c.architecture),
            "layers": c.num_hidden_layers,
            "hidden": c.hidden_size,
            "heads": c.num_attention_heads,
            "kvHeads": c.num_key_value_heads,
            "vocab": c.vocab_size,
            "context": engine.model.max_context,
            "hasTokenizer": engine.tokenizer.is_some(),
            "hasChatTemplate": engine.chat_template.is_some(),
            "adapter": engine.gpu.info.name,
            "wasmMemoryBytes": wasm_memory_bytes(),
        }))
    }

    /// Generate for `request`, calling `onToken(text, id)` for each token as
    /// soon as it exists. Resolves to `{tokens, promptTokens, text,
    /// prefillTokS, decodeTokS, delta}`.
    pub async fn generate(&self, request: JsValue, on_token: JsValue) -> Result<JsValue, JsError> {
        let request: Request = from_js(&request, "the generate request")?;
        let on_token = callback(&on_token);
        let mut engine = self.inner.borrow_mut().take().ok_or_else(|| error(BUSY))?;
        let result = generate(&mut engine, request, on_token).await;
        *self.inner.borrow_mut() = Some(engine);
        result
    }

    /// Clear the KV cache.
    pub fn reset(&self) -> Result<(), JsError> {
        let mut inner = self.inner.borrow_mut();
        inner.as_mut().ok_or_else(|| error(BUSY))?.model.reset();
        Ok(())
    }
}

/// The generation itself; `engine` is out of its cell meanwhile.
async fn generate(engine: &mut CoreEngine, request: Request, on_token: Option<Function>) -> Result<JsValue, JsError> {
    let tokenizer = engine.tokenizer.as_ref().ok_or_else(|| error("this model has no tokenizer"))?;
    let prompt = match (&request.messages, &request.prompt) {
        (Some(messages), _) => {
            let messages: Vec<Message> =
                messages.iter().map(|m| Message { role: m.role.clone(), content: m.content.clone() }).collect();
            engine.encode_chat(&messages).map_err(error)?
        }
        (None, Some(text)) => tokenizer.encode(text, true).map_err(error)?,
        (None, None) => return Err(error("the request needs a prompt or messages")),
    };
    let (sampler, delta_options) = request.settings().resolve(engine.model.config.architecture).map_err(error)?;
    let mut options: GenerateOptions = engine.default_options(request.max_tokens.unwrap_or(64));
    options.sampler = sampler;
    match &delta_options {
        Some(d) => engine.model.set_delta_options(&engine.gpu, d.clone()).map_err(error)?,
        None => engine.model.use_dense_attention(&engine.gpu).map_err(error)?,
    }
    options.delta_stats = delta_options.is_some();

    // The tokenizer streams text while the engine generates: take it out
    // for the duration (generate_async needs the engine mutably).
    let tokenizer = engine.tokenizer.take().ok_or_else(|| error("this model has no tokenizer"))?;
    let generation = {
        let mut stream = tokenizer.stream(true);
        let mut on_id = |id: u32| -> deltallm::Result<()> {
            let piece = stream.push(id)?;
            if let Some(f) = &on_token {
                f.call2(&JsValue::NULL, &JsValue::from_str(&piece), &JsValue::from_f64(id as f64))
                    .map_err(|e| deltallm::Error::Invalid(format!("onToken threw: {}", describe(&e))))?;
            }
            Ok(())
        };
        engine.generate_async(&prompt, &options, &mut on_id).await
    };
    let text = generation.as_ref().ok().map(|g| tokenizer.decode_with(&g.tokens, true));
    engine.tokenizer = Some(tokenizer);
    let generation = generation.map_err(error)?;
    let text = text.unwrap_or_else(|| Ok(String::new())).map_err(error)?;

    let delta = generation.delta.as_ref().map(|report| {
        let thresholds = engine.model.delta_thresholds().unwrap_or(&[]);
        let threshold = thresholds.first().copied().or(delta_options.as_ref().map(|d| d.threshold)).unwrap_or(0.0);
        json!({
            "deltaSparsity": report.phases.total.delta_sparsity,
            "macSparsity": report.phases.total.mac_sparsity,
            "threshold": threshold,
            "window": report.window,
            "sinks": report.sinks,
        })
    });
    to_js(&json!({
        "tokens": generation.tokens,
        "promptTokens": generation.prompt_tokens,
        "text": text,
        "prefillTokS": generation.prefill_tokens_per_second(),
        "decodeTokS": generation.decode_tokens_per_second(),
        "stopped": generation.stopped,
        "delta": delta,
    }))
}

/// The kernel suite of `deltallm bench` on the page's GPU; resolves to the
/// report as JSON text in the CLI's `--json` schema.
/// `onProgress(done, total, label)` follows each timed kernel.
#[wasm_bindgen(js_name = runBench)]
pub async fn run_bench(options: JsValue, on_progress: JsValue) -> Result<String, JsError> {
    let request: BenchRequest = from_js(&options, "the runBench options")?;
    let on_progress = callback(&on_progress);
    let gpu = open_gpu().await?;
    let options = BenchOptions { quick: request.quick, filter: request.filter, wall_clock: false };
    let total = bench::kernels::count(&gpu, &options).await.map_err(error)?;
    let mut done = 0;
    let mut progress = |line: &str| {
        done += 1;
        if let Some(f) = &on_progress {
            let args =
                (JsValue::from_f64(done as f64), JsValue::from_f64(total as f64), JsValue::from_str(line.trim()));
            if let Err(e) = f.call3(&JsValue::NULL, &args.0, &args.1, &args.2) {
                log::warn!("onProgress threw: {}", describe(&e));
            }
        }
    };
    let report = bench::run_async(&gpu, &options, None, &mut progress).await.map_err(error)?;
    serde_json::to_string_pretty(&report).map_err(error)
}

/// The markdown table `deltallm bench` prints, from a report's JSON.
#[wasm_bindgen(js_name = benchTable)]
pub fn bench_table(json: &str) -> Result<String, JsError> {
    let report: Report = serde_json::from_str(json).map_err(|e| error(format!("not a benchmark report: {e}")))?;
    Ok(report.table())
}
