//! The flag groups several commands share, each mapped onto the library's
//! settings (`deltallm::settings`), where the defaults and rules live; and
//! the model loading that `run`, `chat` and `logits` share.

use clap::Args;
use deltallm::chat::Message;
use deltallm::engine::{Engine, ModelFiles};
use deltallm::gpu::{BackendChoice, GpuOptions};
use deltallm::model::DeltaStage;
use deltallm::sampler::SamplerConfig;
use deltallm::settings::{
    DEFAULT_TOP_K, DEFAULT_TOP_P, DeltaSettings, ModelSettings, RoutingSettings, SamplingSettings,
};
use std::path::{Path, PathBuf};

/// Flags every GPU command shares.
#[derive(Args, Clone, Debug)]
pub struct GpuArgs {
    /// Graphics API to use (auto honours WGPU_BACKEND).
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, global = true)]
    backend: BackendChoice,
    /// Use the first adapter whose name contains this text (case-insensitive).
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Request only the WebGPU baseline limits and no optional features, as a
    /// browser or phone would give.
    #[arg(long, global = true)]
    portable: bool,
}

impl GpuArgs {
    pub fn options(&self) -> GpuOptions {
        GpuOptions {
            backend: self.backend,
            adapter_filter: self.adapter.clone().or_else(|| std::env::var("DELTALLM_ADAPTER").ok()),
            portable: self.portable,
        }
    }
}

/// Where `models/fetch-smollm2.sh` puts SmolLM2-135M-Instruct.
const DEFAULT_MODEL: &str = "models/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Which model and how to size it.
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// A .gguf file, a folder with config.json + *.safetensors + tokenizer.json,
    /// or a Hugging Face repo id (e.g. microsoft/bitnet-b1.58-2B-4T). Default:
    /// the SmolLM2 package model that models/fetch-smollm2.sh puts in models/cache.
    #[arg(short, long, default_value = DEFAULT_MODEL)]
    model: String,
    /// KV-cache length in tokens (default: the model's maximum, at most 4096).
    #[arg(long, default_value_t = 0)]
    context: u32,
    /// Tokens per prefill step.
    #[arg(long, default_value_t = 64)]
    prefill_chunk: u32,
    #[command(flatten)]
    delta: DeltaArgs,
    #[command(flatten)]
    routing: RoutingArgs,
}

impl ModelArgs {
    pub fn settings(&self) -> ModelSettings {
        ModelSettings {
            context: self.context,
            prefill_chunk: self.prefill_chunk,
            delta: self.delta.settings(),
            routing: self.routing.settings(),
        }
    }

    /// Fail early when the default model has not been fetched.
    pub fn check_default(&self) -> anyhow::Result<()> {
        if self.model == DEFAULT_MODEL && !std::path::Path::new(DEFAULT_MODEL).exists() {
            anyhow::bail!(
                "the default model {DEFAULT_MODEL} is not there yet: run models/fetch-smollm2.sh (or pass -m MODEL)"
            );
        }
        Ok(())
    }

    /// The model's path: the local one given, or a Hugging Face download.
    pub fn resolve(&self) -> anyhow::Result<PathBuf> {
        Ok(deltallm::hub::resolve(&self.model)?)
    }

    /// The engine for `run`, `chat` and `logits`: checked, loaded and set up
    /// as the flags say.
    pub fn load_engine(&self, gpu: &GpuArgs, all_logits: bool) -> anyhow::Result<Engine> {
        self.check_default()?;
        // Bad DeltaLLM values and plans fail before the (slow) load.
        let settings = self.settings();
        settings.validate()?;
        let path = self.resolve()?;
        let start = std::time::Instant::now();
        let files = read_files(&path)?;
        let options = settings.model_options(files.weights.config.architecture, all_logits)?;
        let engine = Engine::open(&gpu.options(), files, options, &settings.routing)?;
        eprintln!(
            "{:?}, {} layers, on {} ({:?}) in {:.1} s",
            engine.model.config.architecture,
            engine.model.config.num_hidden_layers,
            engine.gpu.info.name,
            engine.gpu.info.backend,
            start.elapsed().as_secs_f64()
        );
        Ok(engine)
    }
}

/// Read a model's files, saying so on stderr (the caller ends the line
/// once the model is on the GPU).
pub fn read_files(path: &Path) -> anyhow::Result<ModelFiles> {
    eprint!("loading {} ... ", path.display());
    Ok(ModelFiles::load(path)?)
}

/// Dynamic layer routing (Dr.LLM): skip, run, or repeat each layer, from a
/// fixed plan or from per-layer routers that read the prompt.
#[derive(Args, Clone, Debug)]
pub struct RoutingArgs {
    /// One action per layer: 0 skip, 1 execute, 2 execute twice, e.g. 1,1,0,2,...
    #[arg(long, value_name = "PLAN", conflicts_with = "routers")]
    layer_plan: Option<String>,
    /// Router weights (safetensors, `model.routers.{i}.linear{1,2}.{weight,bias}`);
    /// they choose each prompt's plan, fixed for its decoding.
    #[arg(long, value_name = "FILE")]
    routers: Option<PathBuf>,
    /// Added to the routers' averaged logits as x·[+1 skip, 0 execute, −1 repeat]:
    /// x > 0 skips more layers, x < 0 repeats more [default: 0].
    #[arg(long, value_name = "X", allow_negative_numbers = true, requires = "routers")]
    route_bias: Option<f32>,
}

impl RoutingArgs {
    fn settings(&self) -> RoutingSettings {
        RoutingSettings {
            layer_plan: self.layer_plan.clone(),
            routers: self.routers.clone(),
            route_bias: self.route_bias,
        }
    }
}

/// DeltaLLM attention (docs/DESIGN.md §2). Off unless one of these is given; then
/// unset ones take their defaults.
#[derive(Args, Clone, Debug)]
pub struct DeltaArgs {
    /// Θ of the delta-key rule (0 = dense attention, through the DeltaLLM
    /// kernels). Default when DeltaLLM is on: 0.6 for BitNet, 0.5 otherwise.
    #[arg(long, value_name = "THETA", allow_negative_numbers = true)]
    delta_threshold: Option<f32>,
    /// Calibrate Θ per layer on the prompt so this fraction of the key
    /// deltas is zero (in [0, 1); replaces --delta-threshold).
    #[arg(long, value_name = "P", allow_negative_numbers = true)]
    delta_target_sparsity: Option<f32>,
    /// Smallest local window of exact keys, in tokens (W_min) [default: 1].
    #[arg(long, value_name = "N")]
    window: Option<u32>,
    /// The window grows with the prompt: W = max(--window, round(S · prompt length)) [default: 0.05].
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    window_scale: Option<f32>,
    /// Sink tokens at the start, always scored exactly [default: 0].
    #[arg(long, value_name = "N")]
    sinks: Option<u32>,
    /// Use hybrid attention in the prompt only, or in decode steps too [default: both].
    #[arg(long, value_enum, value_name = "STAGE")]
    delta_stage: Option<DeltaStage>,
}

impl DeltaArgs {
    fn settings(&self) -> DeltaSettings {
        DeltaSettings {
            threshold: self.delta_threshold,
            target_sparsity: self.delta_target_sparsity,
            window: self.window,
            window_scale: self.window_scale,
            sinks: self.sinks,
            stage: self.delta_stage,
        }
    }
}

/// The input: text or token ids.
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false)]
pub struct PromptArgs {
    /// Prompt text.
    #[arg(short, long)]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids (no BOS is added).
    #[arg(long, value_delimiter = ',')]
    tokens: Option<Vec<u32>>,
}

impl PromptArgs {
    /// The prompt's token ids (`chat`: the text wrapped in the chat template).
    pub fn tokens(&self, engine: &Engine, chat: bool) -> anyhow::Result<Vec<u32>> {
        Ok(match (&self.tokens, &self.prompt) {
            (Some(ids), _) => ids.clone(),
            (None, Some(text)) if chat => engine.encode_chat(&[Message::user(text.clone())])?,
            (None, Some(text)) => engine.encode(text)?,
            (None, None) => anyhow::bail!("give a prompt with -p TEXT or --tokens 1,2,3"),
        })
    }
}

/// Sampling settings (greedy unless a temperature is given).
#[derive(Args, Clone, Debug)]
pub struct SamplingArgs {
    /// Always take the most likely token (the default).
    #[arg(long, conflicts_with = "temperature")]
    greedy: bool,
    /// Sampling temperature; 0 = greedy.
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample only among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = DEFAULT_TOP_K)]
    top_k: usize,
    /// Sample only among the smallest set of tokens whose probability reaches P.
    #[arg(long, default_value_t = DEFAULT_TOP_P)]
    top_p: f32,
    /// Penalise tokens already in the prompt or output (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Random seed; the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    pub fn config(&self) -> SamplerConfig {
        SamplingSettings {
            greedy: self.greedy.then_some(true),
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
        .sampler()
    }
}
