//! The user-facing engine: a model on a GPU with its tokenizer and chat
//! template, and the generation loop (prefill, then one decode step per
//! token, greedy on the GPU or sampled on the CPU).

use crate::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::loader::config::ModelConfig;
use crate::loader::gguf::{Gguf, MAX_STREAMED_HEADER};
use crate::loader::stream::{ByteSource, read_all};
use crate::model::{
    DeltaOptions, DeltaReport, LayerPlan, Model, ModelOptions, PlanSource, RoutingReport, SequenceReport,
};
use crate::sampler::{Sampler, SamplerConfig};
use crate::tokenizer::{GgufVocab, Tokenizer};
use crate::weights::{ModelWeights, StreamedFile, StreamedWeights, WeightSource};
use std::path::Path;

/// Everything read from a model's files, before the GPU is involved.
pub struct ModelFiles {
    pub weights: ModelWeights,
    pub tokenizer: Option<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
}

impl ModelFiles {
    /// Load a `.gguf` file or a Hugging Face folder (config.json,
    /// safetensors, tokenizer.json, tokenizer_config.json).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let weights = ModelWeights::from_hf_dir(path)?;
            let tokenizer_path = path.join("tokenizer.json");
            let tokenizer_json = if tokenizer_path.exists() {
                let bytes = std::fs::read(&tokenizer_path)
                    .map_err(|source| Error::Io { path: tokenizer_path.display().to_string(), source })?;
                Some((tokenizer_path.display().to_string(), bytes))
            } else {
                None
            };
            let config_path = path.join("tokenizer_config.json");
            let tokenizer_config =
                std::fs::read_to_string(&config_path).ok().map(|json| (config_path.display().to_string(), json));
            Self::from_hf_parts(weights, tokenizer_json, tokenizer_config, &path.display().to_string())
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            Self::from_gguf(&Gguf::open(path)?)
        } else {
            // ModelWeights::load gives the right message for the other cases.
            ModelWeights::load(path).map(|weights| ModelFiles { weights, tokenizer: None, chat_template: None })
        }
    }

    /// A GGUF's weights, tokenizer and chat template.
    fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let weights = ModelWeights::from_gguf(gguf)?;
        let (tokenizer, chat_template) = gguf_tokenizer(gguf)?;
        Ok(ModelFiles { weights, tokenizer, chat_template })
    }

    /// A Hugging Face model's weights with its optional `tokenizer.json`
    /// and `tokenizer_config.json` (each with the name it came from).
    fn from_hf_parts(
        weights: ModelWeights,
        tokenizer_json: Option<(String, Vec<u8>)>,
        tokenizer_config: Option<(String, String)>,
        source: &str,
    ) -> Result<Self> {
        let (tokenizer, chat_template) = hf_tokenizer(&weights.config, tokenizer_json, tokenizer_config, source)?;
        Ok(ModelFiles { weights, tokenizer, chat_template })
    }
}

/// A model's files opened for streaming: headers, config, tokenizer and
/// chat template read; the weights are read one part at a time while
/// [`Engine::new_streamed_async`] uploads them, so no weight file is ever
/// whole in memory.
pub struct StreamedFiles {
    pub weights: StreamedWeights,
    pub tokenizer: Option<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
}

impl StreamedFiles {
    /// Open `files`: one `.gguf`, or `config.json` + `*.safetensors` (+
    /// `tokenizer.json`, `tokenizer_config.json`, `generation_config.json`),
    /// matched on the last component of their names; other files are
    /// ignored. Each is any [`ByteSource`]: a file, a browser `Blob`, or bytes
    /// in memory (`Vec<u8>`). Small files are read whole; of the weight files
    /// only the headers are read here.
    pub async fn open(files: Vec<StreamedFile>) -> Result<Self> {
        let files = files.into_iter().map(|f| (f.name, f.source)).collect();
        match FileSet::sort(files)? {
            FileSet::Gguf(name, source) => {
                let weights = StreamedWeights::gguf(StreamedFile { name, source }, MAX_STREAMED_HEADER).await?;
                let header = weights.gguf_header().expect("a GGUF source has a GGUF header");
                let (tokenizer, chat_template) = gguf_tokenizer(header)?;
                Ok(StreamedFiles { weights, tokenizer, chat_template })
            }
            FileSet::Hf { config, generation, shards, tokenizer, tokenizer_config } => {
                let whole = |name: &'static str, source: Box<dyn ByteSource>| async move {
                    read_all(source.as_ref(), name).await
                };
                let config = whole("config.json", config).await?;
                let generation = match generation {
                    Some(source) => Some(whole("generation_config.json", source).await?),
                    None => None,
                };
                let config = hf_config(&config, generation.as_deref())?;
                let shards = shards.into_iter().map(|(name, source)| StreamedFile { name, source }).collect();
                let weights = StreamedWeights::safetensors(config, shards).await?;
                let tokenizer = match tokenizer {
                    Some((name, source)) => Some((name.clone(), read_all(source.as_ref(), &name).await?)),
                    None => None,
                };
                let tokenizer_config = match tokenizer_config {
                    Some((name, source)) => Some((name.clone(), read_all(source.as_ref(), &name).await?)),
                    None => None,
                };
                let (tokenizer, chat_template) =
                    hf_tokenizer(weights.config(), tokenizer, tokenizer_config, "the model files")?;
                Ok(StreamedFiles { weights, tokenizer, chat_template })
            }
        }
    }
}

/// A set of model files sorted by their names' last path component.
enum FileSet<T> {
    Gguf(String, T),
    Hf {
        config: T,
        generation: Option<T>,
        shards: Vec<(String, T)>,
        tokenizer: Option<(String, T)>,
        tokenizer_config: Option<(String, T)>,
    },
}

impl<T> FileSet<T> {
    /// One `.gguf`, or `config.json` with `*.safetensors`; other files are ignored.
    fn sort(files: Vec<(String, T)>) -> Result<Self> {
        let base = |name: &str| name.rsplit(['/', '\\']).next().unwrap_or(name).to_string();
        let mut ggufs = Vec::new();
        let mut shards = Vec::new();
        let (mut config, mut generation, mut tokenizer, mut tokenizer_config) = (None, None, None, None);
        for (name, data) in files {
            let file = base(&name);
            let lower = file.to_lowercase();
            if lower.ends_with(".gguf") {
                ggufs.push((file, data));
            } else if lower.ends_with(".safetensors") {
                shards.push((file, data));
            } else if file == "config.json" {
                config = Some(data);
            } else if file == "generation_config.json" {
                generation = Some(data);
            } else if file == "tokenizer.json" {
                tokenizer = Some((file, data));
            } else if file == "tokenizer_config.json" {
                tokenizer_config = Some((file, data));
            }
        }
        if !ggufs.is_empty() {
            if ggufs.len() > 1 || !shards.is_empty() {
                return Err(Error::Invalid(format!(
                    "give one model: {} .gguf and {} .safetensors files were given",
                    ggufs.len(),
                    shards.len()
                )));
            }
            let (name, data) = ggufs.remove(0);
            return Ok(FileSet::Gguf(name, data));
        }
        let Some(config) = config else {
            return Err(Error::Invalid(
                "no model among the files: give one .gguf, or config.json with the *.safetensors files".into(),
            ));
        };
        if shards.is_empty() {
            return Err(Error::Invalid("config.json was given but no *.safetensors file".into()));
        }
        Ok(FileSet::Hf { config, generation, shards, tokenizer, tokenizer_config })
    }
}

fn utf8(name: &str, bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|_| Error::Invalid(format!("{name} is not UTF-8 text")))
}

/// `config.json` (+ `generation_config.json`) as a [`ModelConfig`].
fn hf_config(config: &[u8], generation: Option<&[u8]>) -> Result<ModelConfig> {
    let config = utf8("config.json", config.to_vec())?;
    let mut model_config = ModelConfig::from_hf_json(&config).map_err(|e| match e {
        Error::Load(inner) => Error::Load(inner.in_file("config.json")),
        other => other,
    })?;
    if let Some(json) = generation {
        model_config.add_generation_config(&utf8("generation_config.json", json.to_vec())?)?;
    }
    Ok(model_config)
}

/// The tokenizer and chat template from a GGUF's metadata.
fn gguf_tokenizer(gguf: &Gguf) -> Result<(Option<Tokenizer>, Option<ChatTemplate>)> {
    let tokenizer = tokenizer_from_gguf(gguf)?;
    let chat_template = match (gguf.opt_str("tokenizer.chat_template")?, &tokenizer) {
        (Some(source), Some(tok)) => {
            let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
            let eos = tok.stop_ids().first().copied();
            Some(ChatTemplate::from_gguf(source, &name(tok.bos_id()), &name(eos))?)
        }
        _ => None,
    };
    Ok((tokenizer, chat_template))
}

/// A Hugging Face model's tokenizer and chat template from its optional
/// `tokenizer.json` and `tokenizer_config.json` (each with its name).
fn hf_tokenizer<T: AsRef<[u8]>>(
    config: &ModelConfig,
    tokenizer_json: Option<(String, Vec<u8>)>,
    tokenizer_config: Option<(String, T)>,
    source: &str,
) -> Result<(Option<Tokenizer>, Option<ChatTemplate>)> {
    let tokenizer = match tokenizer_json {
        Some((name, bytes)) => Some(
            Tokenizer::from_bytes(&bytes)
                .map_err(|e| match e {
                    Error::Tokenizer(message) => Error::Tokenizer(format!("{name}: {message}")),
                    other => other,
                })?
                .with_special_ids(config.bos_token_id, config.stop_token_ids.clone()),
        ),
        None => {
            log::warn!("{source}: no tokenizer.json; only --tokens input will work");
            None
        }
    };
    let chat_template = match tokenizer_config {
        Some((name, json)) => match std::str::from_utf8(json.as_ref())
            .map_err(|_| Error::Invalid(format!("{name} is not UTF-8 text")))
            .and_then(ChatTemplate::from_tokenizer_config)
        {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!("{name}: {e}; using a built-in chat template");
                None
            }
        },
        None => None,
    };
    Ok((tokenizer, chat_template))
}

/// The tokenizer described by a GGUF's `tokenizer.ggml.*` keys, if any.
pub fn tokenizer_from_gguf(g: &Gguf) -> Result<Option<Tokenizer>> {
    let Some(model) = g.opt_str("tokenizer.ggml.model")? else {
        return Ok(None);
    };
    let u32_key = |key: &str| -> Result<Option<u32>> { Ok(g.opt_u64(key)?.map(|v| v as u32)) };
    let vocab = GgufVocab {
        model: model.to_string(),
        pre: g.opt_str("tokenizer.ggml.pre")?.map(str::to_string),
        tokens: g.get_str_array("tokenizer.ggml.tokens")?.to_vec(),
        merges: if g.contains_key("tokenizer.ggml.merges") {
            g.get_str_array("tokenizer.ggml.merges")?.to_vec()
        } else {
            Vec::new()
        },
        token_types: if g.contains_key("tokenizer.ggml.token_type") {
            Some(g.get_i64_array("tokenizer.ggml.token_type")?.into_iter().map(|v| v as i32).collect())
        } else {
            None
        },
        bos_id: u32_key("tokenizer.ggml.bos_token_id")?,
        eos_id: u32_key("tokenizer.ggml.eos_token_id")?,
        add_bos: if g.contains_key("tokenizer.ggml.add_bos_token") {
            Some(g.get_bool("tokenizer.ggml.add_bos_token")?)
        } else {
            None
        },
    };
    Ok(Some(Tokenizer::from_gguf_parts(vocab)?))
}

/// How a generation runs.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampler: SamplerConfig,
    /// Tokens that end the generation (the model's stop ids by default).
    pub stop_tokens: Vec<u32>,
    /// New DeltaLLM knobs for this and later generations (the model must
    /// have been loaded with [`ModelOptions::delta`]); `None` keeps them.
    pub delta: Option<DeltaOptions>,
    /// Count DeltaLLM's statistics after the generation (reads the delta
    /// masks back) into [`Generation::delta`].
    pub delta_stats: bool,
    /// A new layer plan (skip / execute / repeat per layer) for this and
    /// later generations, replacing any routers; `None` keeps the model's
    /// (see [`Model::set_layer_plan`], [`Model::set_routers`]).
    pub layer_plan: Option<LayerPlan>,
}

/// What a generation produced, with timings.
#[derive(Clone, Debug, Default)]
pub struct Generation {
    pub prompt_tokens: Vec<u32>,
    pub tokens: Vec<u32>,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
    /// The generation ended on a stop token (not on max_tokens).
    pub stopped: bool,
    /// DeltaLLM statistics, when asked for and the model uses DeltaLLM.
    pub delta: Option<DeltaReport>,
    /// The layer plan the generation ran with (chosen by the routers when
    /// the model has them) and the layers it saved.
    pub routing: Option<RoutingReport>,
    /// The phases the sequence ran (routing, calibration, prefill, decode),
    /// so the prompt's extra passes are visible.
    pub sequence: SequenceReport,
}

impl Generation {
    pub fn prefill_tokens_per_second(&self) -> f64 {
        self.prompt_tokens.len() as f64 / self.prefill_seconds.max(1e-9)
    }

    /// Decode speed over the tokens after the first (the first comes from the prefill).
    pub fn decode_tokens_per_second(&self) -> f64 {
        self.tokens.len().saturating_sub(1) as f64 / self.decode_seconds.max(1e-9)
    }
}

/// A model on a GPU with its tokenizer and chat template.
pub struct Engine {
    pub gpu: Gpu,
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub chat_template: Option<ChatTemplate>,
}

fn now() -> web_time::Instant {
    web_time::Instant::now()
}

impl Engine {
    /// Blocking form of [`Engine::new_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(gpu: Gpu, files: ModelFiles, options: ModelOptions) -> Result<Self> {
        pollster::block_on(Self::new_async(gpu, files, options, &mut |_, _| {}))
    }

    /// Upload the weights of `files` to `gpu` (they are dropped afterwards),
    /// calling `progress(done, total)` per uploaded layer.
    pub async fn new_async(
        gpu: Gpu,
        files: ModelFiles,
        options: ModelOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let ModelFiles { weights, tokenizer, chat_template } = files;
        let model = Model::load_async(&gpu, &weights, options, progress).await?;
        Ok(Engine { gpu, model, tokenizer, chat_template })
    }

    /// Open the GPU that `gpu` describes, upload `files` with `options`,
    /// then set the layer plan or routers that `routing` asks for.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(
        gpu: &crate::gpu::GpuOptions,
        files: ModelFiles,
        options: ModelOptions,
        routing: &crate::settings::RoutingSettings,
    ) -> Result<Self> {
        let gpu = Gpu::new_blocking(gpu)?;
        let mut engine = Engine::new(gpu, files, options)?;
        routing.apply(&engine.gpu, &mut engine.model)?;
        Ok(engine)
    }

    /// Blocking form of [`Engine::new_streamed_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new_streamed(gpu: Gpu, files: StreamedFiles, options: ModelOptions) -> Result<Self> {
        pollster::block_on(Self::new_streamed_async(gpu, files, options, &mut |_, _| {}))
    }

    /// Read the weights of `files` part by part and upload each before
    /// reading the next, calling `progress(done, total)` per uploaded layer.
    pub async fn new_streamed_async(
        gpu: Gpu,
        files: StreamedFiles,
        options: ModelOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let StreamedFiles { weights, tokenizer, chat_template } = files;
        let model = Model::load_from(&gpu, &weights, options, progress).await?;
        Ok(Engine { gpu, model, tokenizer, chat_template })
    }

    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer
            .as_ref()
            .ok_or_else(|| Error::Invalid("this model has no tokenizer; pass token ids with --tokens".into()))
    }

    /// Token ids of `text` (with BOS when the tokenizer adds one).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer()?.encode(text, true)
    }

    /// The prompt text for a chat, from the model's template or a built-in one.
    pub fn chat_prompt(&self, messages: &[Message]) -> Result<String> {
        let template = match &self.chat_template {
            Some(t) => t.clone(),
            None => match self.model.config.architecture {
                crate::loader::config::Architecture::BitNet => ChatTemplate::bitnet(),
                crate::loader::config::Architecture::Llama => ChatTemplate::llama3(),
            },
        };
        template.render(messages, true)
    }

    /// Token ids of a chat prompt. The template writes BOS itself, so none is added.
    pub fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let text = self.chat_prompt(messages)?;
        self.tokenizer()?.encode(&text, false)
    }

    /// Default options: greedy, the model's stop tokens.
    pub fn default_options(&self, max_tokens: usize) -> GenerateOptions {
        let mut stop_tokens = self.model.config.stop_token_ids.clone();
        if let Some(t) = &self.tokenizer {
            stop_tokens.extend(t.stop_ids());
        }
        stop_tokens.sort_unstable();
        stop_tokens.dedup();
        GenerateOptions {
            max_tokens,
            sampler: SamplerConfig::default(),
            stop_tokens,
            delta: None,
            delta_stats: false,
            layer_plan: None,
        }
    }

    /// Generate after `prompt` from an empty cache, calling `on_token` with
    /// each new id as soon as it is known (return an error to stop early).
    /// Blocking form of [`Engine::generate_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn generate(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<Generation> {
        pollster::block_on(self.generate_async(prompt, options, on_token))
    }

    /// Generate after `prompt` from an empty cache, calling `on_token` with
    /// each new id as soon as it is known (return an error to stop early).
    /// Async: every read-back awaits the GPU, so the browser's event loop
    /// keeps running (and can paint the token `on_token` just received).
    pub async fn generate_async(
        &mut self,
        prompt: &[u32],
        options: &GenerateOptions,
        mut on_token: impl FnMut(u32) -> Result<()>,
    ) -> Result<Generation> {
        if prompt.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        let needed = prompt.len() + options.max_tokens.saturating_sub(1);
        if needed > self.model.max_context as usize {
            return Err(Error::Invalid(format!(
                "the prompt ({} tokens) plus {} new tokens needs {needed} positions but the context holds {}; \
                 shorten the prompt or ask for fewer tokens (--max-tokens; maxTokens on the web page)",
                prompt.len(),
                options.max_tokens,
                self.model.max_context
            )));
        }
        let mut sampler = Sampler::new(options.sampler.clone());
        let greedy = options.sampler.temperature <= 0.0 && options.sampler.repetition_penalty == 1.0;
        let mut generation = Generation { prompt_tokens: prompt.to_vec(), ..Default::default() };
        let mut history: Vec<u32> = prompt.to_vec();
        if let Some(delta) = &options.delta
            && self.model.options.delta.as_ref() != Some(delta)
        {
            self.model.set_delta_options(&self.gpu, delta.clone())?;
        }
        if let Some(plan) = &options.layer_plan
            && (self.model.layer_plan() != plan || self.model.routing_report().source == PlanSource::Routers)
        {
            self.model.set_layer_plan(&self.gpu, plan.clone())?;
        }
        self.model.reset();

        let start = now();
        self.model.forward_async(&self.gpu, prompt).await?;
        let mut next = self.pick(&mut sampler, greedy, &history).await?;
        generation.prefill_seconds = start.elapsed().as_secs_f64();
        generation.routing = Some(self.model.routing_report());

        let start = now();
        while generation.tokens.len() < options.max_tokens {
            generation.tokens.push(next);
            history.push(next);
            on_token(next)?;
            if options.stop_tokens.contains(&next) {
                generation.stopped = true;
                break;
            }
            if generation.tokens.len() == options.max_tokens {
                break;
            }
            self.model.forward_async(&self.gpu, &[next]).await?;
            next = self.pick(&mut sampler, greedy, &history).await?;
        }
        generation.decode_seconds = start.elapsed().as_secs_f64();
        generation.sequence = self.model.sequence_report().clone();
        if options.delta_stats {
            // The last token was picked but never run: the stats cover the positions in the cache.
            generation.delta = self.model.delta_stats_async(&self.gpu).await?;
        }
        Ok(generation)
    }

    async fn pick(&self, sampler: &mut Sampler, greedy: bool, history: &[u32]) -> Result<u32> {
        if greedy {
            self.model.argmax_async(&self.gpu).await
        } else {
            let logits = self.model.logits_async(&self.gpu).await?;
            let id = sampler.sample(&logits, history);
            if id == crate::ops::sampling::NONE {
                return Err(Error::Invalid("every logit is NaN; the model produced garbage".into()));
            }
            Ok(id)
        }
    }
}
