//! The `deltallm` command line.

use clap::{Args, Parser, Subcommand};
use deltallm::bench::e2e::E2eOptions;
use deltallm::bench::{BenchOptions, Report};
use deltallm::chat::Message;
use deltallm::engine::{Engine, GenerateOptions, ModelFiles};
use deltallm::gpu::{self, BackendChoice, GpuOptions};
use deltallm::model::{DeltaOptions, DeltaStage, LayerPlan, ModelOptions, PlanSource, Routers};
use deltallm::sampler::SamplerConfig;
use std::io::Write;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "deltallm",
    version,
    about = "Small LLMs on any GPU wgpu reaches, with ternary BitNet kernels and DeltaLLM attention",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags every GPU command shares.
#[derive(Args, Clone, Debug)]
struct GpuArgs {
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
    fn options(&self) -> GpuOptions {
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
struct ModelArgs {
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

/// Dynamic layer routing (Dr.LLM): skip, run, or repeat each layer, from a
/// fixed plan or from per-layer routers that read the prompt.
#[derive(Args, Clone, Debug)]
struct RoutingArgs {
    /// One action per layer: 0 skip, 1 execute, 2 execute twice, e.g. 1,1,0,2,...
    #[arg(long, value_name = "PLAN", conflicts_with = "routers")]
    layer_plan: Option<String>,
    /// Router weights (safetensors, `model.routers.{i}.linear{1,2}.{weight,bias}`);
    /// they choose each prompt's plan, fixed for its decoding.
    #[arg(long, value_name = "FILE")]
    routers: Option<std::path::PathBuf>,
    /// Added to the routers' averaged logits as x·[+1 skip, 0 execute, −1 repeat]:
    /// x > 0 skips more layers, x < 0 repeats more [default: 0].
    #[arg(long, value_name = "X", allow_negative_numbers = true, requires = "routers")]
    route_bias: Option<f32>,
}

impl RoutingArgs {
    /// The parsed plan, checked before the (slow) model load.
    fn plan(&self) -> anyhow::Result<Option<LayerPlan>> {
        Ok(self.layer_plan.as_deref().map(LayerPlan::parse).transpose()?)
    }

    /// Set the plan or the routers on a loaded model.
    fn apply(&self, gpu: &deltallm::Gpu, model: &mut deltallm::model::Model) -> anyhow::Result<()> {
        if let Some(plan) = self.plan()? {
            model.set_layer_plan(gpu, plan)?;
        }
        if let Some(path) = &self.routers {
            let c = &model.config;
            let mut routers = Routers::load(path, c.num_hidden_layers, c.hidden_size)?;
            routers.bias = self.route_bias.unwrap_or(0.0);
            if !routers.bias.is_finite() {
                anyhow::bail!("--route-bias must be a finite number, got {}", routers.bias);
            }
            model.set_routers(Some(routers))?;
        }
        Ok(())
    }
}

/// DeltaLLM attention (DESIGN §2). Off unless one of these is given; then
/// unset ones take their defaults.
#[derive(Args, Clone, Debug)]
struct DeltaArgs {
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
    fn enabled(&self) -> bool {
        self.delta_threshold.is_some()
            || self.delta_target_sparsity.is_some()
            || self.window.is_some()
            || self.window_scale.is_some()
            || self.sinks.is_some()
            || self.delta_stage.is_some()
    }

    /// The options for a model of `architecture`, checked; `None` when off.
    fn options(&self, architecture: deltallm::loader::config::Architecture) -> anyhow::Result<Option<DeltaOptions>> {
        if !self.enabled() {
            return Ok(None);
        }
        let mut o = DeltaOptions::for_architecture(architecture);
        if let Some(t) = self.delta_threshold {
            o.threshold = t;
        }
        o.target_sparsity = self.delta_target_sparsity;
        if let Some(w) = self.window {
            o.window_min = w;
        }
        if let Some(s) = self.window_scale {
            o.window_scale = s;
        }
        if let Some(s) = self.sinks {
            o.sinks = s;
        }
        if let Some(s) = self.delta_stage {
            o.stage = s;
        }
        o.validate()?;
        Ok(Some(o))
    }
}

/// The input: text or token ids.
#[derive(Args, Clone, Debug)]
#[group(required = true, multiple = false)]
struct PromptArgs {
    /// Prompt text.
    #[arg(short, long)]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids (no BOS is added).
    #[arg(long, value_delimiter = ',')]
    tokens: Option<Vec<u32>>,
}

/// Sampling settings (greedy unless a temperature is given).
#[derive(Args, Clone, Debug)]
struct SamplingArgs {
    /// Always take the most likely token (the default).
    #[arg(long, conflicts_with = "temperature")]
    greedy: bool,
    /// Sampling temperature; 0 = greedy.
    #[arg(long)]
    temperature: Option<f32>,
    /// Sample only among the K most likely tokens (0 = all).
    #[arg(long, default_value_t = 40)]
    top_k: usize,
    /// Sample only among the smallest set of tokens whose probability reaches P.
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    /// Penalise tokens already in the prompt or output (1 = off).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Random seed; the same seed gives the same tokens.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: if self.greedy { 0.0 } else { self.temperature.unwrap_or(0.0) },
            top_k: self.top_k,
            top_p: self.top_p,
            repetition_penalty: self.repetition_penalty,
            seed: self.seed,
        }
    }
}

/// What `deltallm eval` scores and where its results go.
#[derive(Args, Clone, Debug)]
struct EvalArgs {
    /// ppl: perplexity of a text file; mc: WinoGrande JSON lines (sentence with one `_`, option1, option2, answer);
    /// squad2: the official SQuAD v2 JSON (greedy answers, exact match and F1).
    #[arg(long, value_enum)]
    task: EvalTask,
    /// The task's data file.
    #[arg(long, value_name = "FILE")]
    data: std::path::PathBuf,
    /// ppl: tokens per chunk; each chunk starts from an empty cache.
    #[arg(long, value_name = "N", default_value_t = 512)]
    ctx: usize,
    /// ppl: use only the first N tokens of the text.
    #[arg(long, value_name = "N")]
    limit_tokens: Option<usize>,
    /// Score only the first N items (ppl: chunks).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Write the report with per-item results to this JSON file (with --sweep, also the prefix of the CSV and SVG).
    #[arg(long, value_name = "FILE")]
    json: Option<std::path::PathBuf>,
    /// Run every combination of DeltaLLM settings, e.g. "delta-threshold=0,0.5,1,2"; repeat for more knobs
    /// (delta-threshold, delta-target-sparsity, window, window-scale, sinks).
    #[arg(long, value_name = "KNOB=V1,V2,...")]
    sweep: Vec<String>,
    /// With --sweep: write PREFIX.csv, PREFIX.json and PREFIX.svg [default: eval-TASK-sweep, or --json's stem].
    #[arg(long, value_name = "PREFIX")]
    out: Option<std::path::PathBuf>,
    /// squad2: what the model is told to answer when the context lacks the answer; such an answer is the
    /// empty (no-answer) prediction.
    #[arg(long, value_name = "TEXT", default_value = "unanswerable")]
    unanswerable: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum EvalTask {
    Ppl,
    Mc,
    Squad2,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it to stdout; prefill and
    /// decode speed go to stderr.
    Run {
        #[command(flatten)]
        gpu: GpuArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        prompt: PromptArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 128)]
        max_tokens: usize,
        /// Wrap the prompt in the model's chat template.
        #[arg(long)]
        chat: bool,
        /// Print one JSON object {"prompt_tokens", "tokens", "text"} instead of
        /// streaming (with DeltaLLM on, also "delta": its statistics; with a
        /// layer plan or routers, "routing": the plan used and layers saved).
        #[arg(long)]
        json: bool,
        /// Print DeltaLLM's sparsity table (per layer, prefill/decode/total) and
        /// the layer plan used (with the layers it saved) to stderr.
        #[arg(long)]
        stats: bool,
    },
    /// Chat interactively with the model's chat template.
    Chat {
        #[command(flatten)]
        gpu: GpuArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        sampling: SamplingArgs,
        /// Most tokens per reply.
        #[arg(long, default_value_t = 512)]
        max_tokens: usize,
        /// A system message to start the conversation with.
        #[arg(long)]
        system: Option<String>,
    },
    /// Print the logits of the last position (or the top K of every position) as JSON.
    Logits {
        #[command(flatten)]
        gpu: GpuArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        prompt: PromptArgs,
        /// Print JSON (the only output format; accepted for clarity).
        #[arg(long)]
        json: bool,
        /// With --all-positions: how many (id, logit) pairs per position.
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        /// One entry per input position with its top K, instead of the full last row.
        #[arg(long)]
        all_positions: bool,
    },
    /// Time the engine's kernels at BitNet-2B4T / Llama-1B shapes (and, with
    /// --e2e or -m, whole models); a table goes to stdout, progress to stderr.
    Bench {
        #[command(flatten)]
        gpu: GpuArgs,
        /// Tiny shapes and few runs (seconds on a CPU adapter).
        #[arg(long)]
        quick: bool,
        /// Also write every figure and the adapter's details to this JSON file.
        #[arg(long, value_name = "FILE")]
        json: Option<std::path::PathBuf>,
        /// Run only the rows whose name contains this text (case-insensitive).
        #[arg(long, value_name = "SUBSTR")]
        filter: Option<String>,
        #[command(flatten)]
        e2e: E2eArgs,
        /// Time with the wall clock even when the GPU offers timestamp queries.
        #[arg(long)]
        wall_clock: bool,
        /// Print side-by-side ratios of the rows two JSON files share, and run nothing.
        #[arg(long, num_args = 2, value_names = ["A.json", "B.json"], conflicts_with_all = ["quick", "json", "e2e", "model"])]
        compare: Option<Vec<std::path::PathBuf>>,
    },
    /// Score the model on a task (perplexity of a text, WinoGrande-style
    /// multiple choice) with the DeltaLLM settings given, or sweep them
    /// (--sweep): a table to stdout, progress to stderr, CSV/JSON/SVG files.
    Eval {
        #[command(flatten)]
        gpu: GpuArgs,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        eval: EvalArgs,
    },
    /// List GPU adapters with their backend, driver, limits and features,
    /// and show which one deltallm would use.
    Info {
        #[command(flatten)]
        gpu: GpuArgs,
        /// Print every limit, not just the ones the engine cares about.
        #[arg(long)]
        all_limits: bool,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,wgpu_hal::gles=off")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info { gpu, all_limits } => info(&gpu, all_limits),
        Command::Bench { gpu, quick, json, filter, e2e, wall_clock, compare } => match compare {
            Some(files) => compare_reports(&files[0], &files[1]),
            None => {
                let options = BenchOptions { quick, filter, wall_clock };
                e2e.options(quick).and_then(|e2e| bench(&gpu, &options, json.as_deref(), e2e))
            }
        },
        Command::Run { gpu, model, prompt, sampling, max_tokens, chat, json, stats } => {
            run(&gpu, &model, &prompt, &sampling, max_tokens, chat, json, stats)
        }
        Command::Chat { gpu, model, sampling, max_tokens, system } => chat(&gpu, &model, &sampling, max_tokens, system),
        Command::Eval { gpu, model, eval: args } => eval(&gpu, &model, &args),
        Command::Logits { gpu, model, prompt, json: _, top_k, all_positions } => {
            logits(&gpu, &model, &prompt, top_k, all_positions)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn info(args: &GpuArgs, all_limits: bool) -> anyhow::Result<()> {
    let options = args.options();
    let adapters = pollster::block_on(gpu::list_adapters(options.backend));
    if adapters.is_empty() {
        return Err(deltallm::Error::NoAdapter { filter: String::new() }.into());
    }
    let chosen = gpu::choose_adapter(&adapters, options.adapter_filter.as_deref());
    for (i, a) in adapters.iter().enumerate() {
        let mark = if Some(i) == chosen { "  <- deltallm uses this one" } else { "" };
        println!("[{i}] {}{mark}", a.info.name);
        println!("    backend:     {:?}", a.info.backend);
        println!("    device type: {:?}", a.info.device_type);
        println!("    vendor/device: {:#06x}/{:#06x}", a.info.vendor, a.info.device);
        println!("    driver:      {} {}", a.info.driver, a.info.driver_info);
        let features = [
            ("shader-f16", wgpu::Features::SHADER_F16),
            ("subgroups", wgpu::Features::SUBGROUP),
            ("timestamp-query", wgpu::Features::TIMESTAMP_QUERY),
        ];
        let names: Vec<String> = features
            .iter()
            .map(|(name, f)| format!("{name}={}", if a.features.contains(*f) { "yes" } else { "no" }))
            .collect();
        println!("    features:    {}", names.join(" "));
        let l = &a.limits;
        println!(
            "    limits:      storage binding {} MiB, buffer {} MiB, workgroup storage {} KiB, invocations {}, \
             storage buffers/stage {}, workgroups/dim {}, subgroup size {}..{}",
            l.max_storage_buffer_binding_size >> 20,
            l.max_buffer_size >> 20,
            l.max_compute_workgroup_storage_size >> 10,
            l.max_compute_invocations_per_workgroup,
            l.max_storage_buffers_per_shader_stage,
            l.max_compute_workgroups_per_dimension,
            a.info.subgroup_min_size,
            a.info.subgroup_max_size,
        );
        if all_limits {
            println!("    all limits:  {:#?}", a.limits);
        }
    }
    if options.portable {
        let b = wgpu::Limits::default();
        println!(
            "\nportable mode: the device is opened with the WebGPU baseline (storage binding {} MiB, workgroup storage {} KiB, {} invocations) and no optional features",
            b.max_storage_buffer_binding_size >> 20,
            b.max_compute_workgroup_storage_size >> 10,
            b.max_compute_invocations_per_workgroup
        );
    }
    match chosen {
        Some(_) => {
            // Open it for real: proves the device works with the limits we ask for.
            let gpu = deltallm::Gpu::new_blocking(&options)?;
            println!(
                "\nopened: {} ({:?}), portable={}, using shader-f16={} subgroups={} timestamps={}",
                gpu.info.name,
                gpu.info.backend,
                gpu.portable,
                gpu.caps.shader_f16,
                gpu.caps.subgroups,
                gpu.caps.timestamps
            );
            Ok(())
        }
        None => Err(deltallm::Error::NoAdapter {
            filter: format!(" matching '{}'", options.adapter_filter.unwrap_or_default()),
        }
        .into()),
    }
}

/// The end-to-end part of `deltallm bench`.
#[derive(Args, Clone, Debug)]
struct E2eArgs {
    /// Also time prefill and decode of random BitNet-2B4T- and Llama-1B-shaped models.
    #[arg(long)]
    e2e: bool,
    /// Time prefill and decode of this model (file, folder or Hugging Face id) instead of the random ones.
    #[arg(short, long, value_name = "MODEL")]
    model: Option<String>,
    /// Layers of each random model to run (default 2; 0 = all). Per-layer cost is what matters.
    #[arg(long, value_name = "N")]
    layers: Option<usize>,
    /// Prompt lengths of the end-to-end rows; decode is timed at each as context [default: 128,512,1024; --quick 8,16].
    #[arg(long, value_name = "N,N,...", value_delimiter = ',')]
    prefill_tokens: Option<Vec<usize>>,
    /// End-to-end rows with DeltaLLM attention too, Θ calibrated per layer to this delta sparsity (0 = dense only).
    #[arg(long, value_name = "P", default_value_t = 0.6)]
    delta_sparsity: f32,
}

impl E2eArgs {
    /// None when no end-to-end rows were asked for.
    fn options(&self, quick: bool) -> anyhow::Result<Option<E2eOptions>> {
        if !self.e2e && self.model.is_none() {
            return Ok(None);
        }
        if !(0.0..1.0).contains(&self.delta_sparsity) {
            anyhow::bail!("--delta-sparsity must be in [0, 1), got {}", self.delta_sparsity);
        }
        let mut o = E2eOptions::new(quick);
        if let Some(m) = &self.model {
            o.model = Some(deltallm::hub::resolve(m)?.to_string_lossy().into_owned());
        }
        if let Some(n) = self.layers {
            o.layers = (n > 0).then_some(n);
        }
        if let Some(lengths) = &self.prefill_tokens {
            if lengths.is_empty() || lengths.contains(&0) {
                anyhow::bail!("--prefill-tokens needs positive lengths, got {lengths:?}");
            }
            o.prefill_lengths = lengths.clone();
        }
        o.delta_sparsity = (self.delta_sparsity > 0.0).then_some(self.delta_sparsity);
        Ok(Some(o))
    }
}

fn bench(
    args: &GpuArgs,
    options: &BenchOptions,
    json: Option<&std::path::Path>,
    e2e_options: Option<E2eOptions>,
) -> anyhow::Result<()> {
    let gpu = deltallm::Gpu::new_blocking(&args.options())?;
    eprintln!("benchmarking on {} ({:?}), portable={}", gpu.info.name, gpu.info.backend, gpu.portable);
    let report = deltallm::bench::run(&gpu, options, e2e_options.as_ref(), &mut |line| eprintln!("  {line}"))?;
    println!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn compare_reports(a: &std::path::Path, b: &std::path::Path) -> anyhow::Result<()> {
    let read = |path: &std::path::Path| -> anyhow::Result<Report> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a `deltallm bench --json` file: {e}", path.display()))
    };
    let (a, b) = (read(a)?, read(b)?);
    print!("{}", deltallm::bench::comparison_table(&a, &b));
    Ok(())
}

fn load_engine(gpu: &GpuArgs, model: &ModelArgs, all_logits: bool) -> anyhow::Result<Engine> {
    if model.model == DEFAULT_MODEL && !std::path::Path::new(DEFAULT_MODEL).exists() {
        anyhow::bail!(
            "the default model {DEFAULT_MODEL} is not there yet: run models/fetch-smollm2.sh (or pass -m MODEL)"
        );
    }
    // Bad DeltaLLM values and plans fail before the (slow) load.
    model.delta.options(deltallm::loader::config::Architecture::Llama)?;
    model.routing.plan()?;
    let path = deltallm::hub::resolve(&model.model)?;
    let start = std::time::Instant::now();
    eprint!("loading {} ... ", path.display());
    let files = ModelFiles::load(&path)?;
    let gpu = deltallm::Gpu::new_blocking(&gpu.options())?;
    let options = ModelOptions {
        max_context: model.context,
        prefill_chunk: model.prefill_chunk,
        all_logits,
        delta: model.delta.options(files.weights.config.architecture)?,
        ..Default::default()
    };
    let mut engine = Engine::new(gpu, files, options)?;
    model.routing.apply(&engine.gpu, &mut engine.model)?;
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

fn prompt_tokens(engine: &Engine, prompt: &PromptArgs, chat: bool) -> anyhow::Result<Vec<u32>> {
    Ok(match (&prompt.tokens, &prompt.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) if chat => engine.encode_chat(&[Message::user(text.clone())])?,
        (None, Some(text)) => engine.encode(text)?,
        (None, None) => anyhow::bail!("give a prompt with -p TEXT or --tokens 1,2,3"),
    })
}

#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &GpuArgs,
    model: &ModelArgs,
    prompt: &PromptArgs,
    sampling: &SamplingArgs,
    max_tokens: usize,
    chat: bool,
    json: bool,
    stats: bool,
) -> anyhow::Result<()> {
    let mut engine = load_engine(gpu, model, false)?;
    let routed = engine.model.routing_report().source != PlanSource::Plain;
    if stats && engine.model.options.delta.is_none() && !routed {
        eprintln!(
            "note: --stats reports DeltaLLM's sparsity and the layer plan; DeltaLLM is off (pass --delta-threshold \
             or --delta-target-sparsity) and every layer runs once (pass --layer-plan or --routers)"
        );
    }
    let ids = prompt_tokens(&engine, prompt, chat)?;
    let mut options: GenerateOptions = engine.default_options(max_tokens);
    options.sampler = sampling.config();
    options.delta_stats = stats || json;
    let tokenizer = engine.tokenizer.clone();
    let mut stream = tokenizer.as_ref().map(|t| t.stream(true));
    let mut stdout = std::io::stdout();
    let generation = engine.generate(&ids, &options, |id| {
        if !json {
            match &mut stream {
                Some(s) => write!(stdout, "{}", s.push(id)?).ok(),
                None => write!(stdout, "{id} ").ok(),
            };
            stdout.flush().ok();
        }
        Ok(())
    })?;
    let text = match &tokenizer {
        Some(t) => t.decode_with(&generation.tokens, true)?,
        None => String::new(),
    };
    if json {
        let mut object = serde_json::json!({
            "prompt_tokens": generation.prompt_tokens,
            "tokens": generation.tokens,
            "text": text,
        });
        if let Some(delta) = &generation.delta {
            object["delta"] = serde_json::to_value(delta)?;
        }
        if routed && let Some(routing) = &generation.routing {
            object["routing"] = serde_json::to_value(routing)?;
        }
        println!("{object}");
    } else {
        if let Some(s) = &mut stream {
            write!(stdout, "{}", s.finish()?)?;
        }
        writeln!(stdout)?;
    }
    eprintln!(
        "prefill: {} tokens, {:.2} tok/s | decode: {} tokens, {:.2} tok/s",
        generation.prompt_tokens.len(),
        generation.prefill_tokens_per_second(),
        generation.tokens.len(),
        generation.decode_tokens_per_second()
    );
    if stats && let Some(delta) = &generation.delta {
        eprint!("{}", delta.table());
    }
    if stats
        && routed
        && let Some(routing) = &generation.routing
    {
        eprintln!("{}", routing.summary());
    }
    Ok(())
}

fn chat(
    gpu: &GpuArgs,
    model: &ModelArgs,
    sampling: &SamplingArgs,
    max_tokens: usize,
    system: Option<String>,
) -> anyhow::Result<()> {
    let mut engine = load_engine(gpu, model, false)?;
    let tokenizer = engine.tokenizer()?.clone();
    let mut messages: Vec<Message> = system.into_iter().map(Message::system).collect();
    let mut options = engine.default_options(max_tokens);
    options.sampler = sampling.config();
    eprintln!("type a message and press Enter; an empty line or Ctrl-D ends the chat");
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 || line.trim().is_empty() {
            return Ok(());
        }
        messages.push(Message::user(line.trim_end().to_string()));
        let ids = engine.encode_chat(&messages)?;
        let mut stream = tokenizer.stream(true);
        let mut stdout = std::io::stdout();
        let generation = engine.generate(&ids, &options, |id| {
            write!(stdout, "{}", stream.push(id)?).ok();
            stdout.flush().ok();
            Ok(())
        })?;
        writeln!(stdout, "{}", stream.finish()?)?;
        eprintln!("[{:.1} tok/s]", generation.decode_tokens_per_second());
        messages.push(Message::assistant(tokenizer.decode_with(&generation.tokens, true)?));
        options.sampler.seed = options.sampler.seed.wrapping_add(1);
    }
}

fn logits(
    gpu: &GpuArgs,
    model: &ModelArgs,
    prompt: &PromptArgs,
    top_k: usize,
    all_positions: bool,
) -> anyhow::Result<()> {
    let mut engine = load_engine(gpu, model, all_positions)?;
    let ids = prompt_tokens(&engine, prompt, false)?;
    let vocab = engine.model.config.vocab_size;
    if all_positions {
        let all = engine.model.forward_all(&engine.gpu, &ids)?;
        let positions: Vec<serde_json::Value> = all
            .chunks(vocab)
            .map(|row| {
                let top = deltallm::cpu::sampling::top_k(row, top_k.max(1));
                serde_json::json!({ "top": top.iter().map(|(id, v)| serde_json::json!([id, v])).collect::<Vec<_>>() })
            })
            .collect();
        println!("{}", serde_json::json!({ "tokens": ids, "positions": positions }));
    } else {
        engine.model.forward(&engine.gpu, &ids)?;
        let logits = engine.model.logits(&engine.gpu)?;
        println!("{}", serde_json::json!({ "tokens": ids, "logits": logits }));
    }
    Ok(())
}

/// The task's data, tokenized, and the longest sequence it runs.
enum EvalData {
    Ppl(Vec<u32>),
    Mc(Vec<deltallm::eval::mc::McItem>, Vec<[deltallm::eval::mc::EncodedOption; 2]>),
    /// Questions, their prompt tokens, and the ids that end an answer.
    Squad(Vec<deltallm::eval::squad::SquadItem>, Vec<Vec<u32>>, Vec<u32>),
}

fn eval(gpu_args: &GpuArgs, model_args: &ModelArgs, args: &EvalArgs) -> anyhow::Result<()> {
    use deltallm::eval::{GpuSource, LogitSource, TaskReport, mc, ppl, squad, sweep};
    if model_args.model == DEFAULT_MODEL && !std::path::Path::new(DEFAULT_MODEL).exists() {
        anyhow::bail!(
            "the default model {DEFAULT_MODEL} is not there yet: run models/fetch-smollm2.sh (or pass -m MODEL)"
        );
    }
    let axes: Vec<sweep::Axis> = args.sweep.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    model_args.delta.options(deltallm::loader::config::Architecture::Llama)?;
    model_args.routing.plan()?;
    let text = std::fs::read_to_string(&args.data)
        .map_err(|e| anyhow::anyhow!("reading --data {}: {e}", args.data.display()))?;

    let path = deltallm::hub::resolve(&model_args.model)?;
    eprint!("loading {} ... ", path.display());
    let files = ModelFiles::load(&path)?;
    let tokenizer = files.tokenizer.as_ref().ok_or_else(|| anyhow::anyhow!("the model has no tokenizer"))?;
    let ppl_options =
        ppl::PplOptions { ctx: args.ctx, limit_tokens: args.limit_tokens, limit: args.limit, progress: true };
    let (data, longest) = match args.task {
        EvalTask::Ppl => {
            let ids = tokenizer.encode(&text, true)?;
            let longest = ppl::chunks(&ids, &ppl_options)?.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
            (EvalData::Ppl(ids), longest)
        }
        EvalTask::Mc => {
            let mut items = mc::parse_jsonl(&text)?;
            items.truncate(args.limit.unwrap_or(usize::MAX));
            let encoded = mc::encode_items(tokenizer, &items)?;
            let longest = encoded.iter().flatten().map(|o| o.tokens.len()).max().unwrap_or(0);
            (EvalData::Mc(items, encoded), longest)
        }
        EvalTask::Squad2 => {
            let mut items = squad::parse(&text)?;
            items.truncate(args.limit.unwrap_or(usize::MAX));
            let template = files.chat_template.as_ref();
            let prompts = items
                .iter()
                .map(|item| squad::encode(tokenizer, template, item, &args.unanswerable))
                .collect::<Result<Vec<_>, _>>()?;
            // An answer ends at a stop token or at the first line break.
            let mut stop = tokenizer.stop_ids().to_vec();
            if let [newline] = tokenizer.encode("\n", false)?.as_slice() {
                stop.push(*newline);
            }
            let longest = prompts.iter().map(Vec::len).max().unwrap_or(0) + squad::MAX_ANSWER_TOKENS;
            (EvalData::Squad(items, prompts, stop), longest)
        }
    };
    let architecture = files.weights.config.architecture;
    let delta = match model_args.delta.options(architecture)? {
        Some(d) => Some(d),
        None if !axes.is_empty() => Some(DeltaOptions::for_architecture(architecture)),
        None => None,
    };
    let gpu = deltallm::Gpu::new_blocking(&gpu_args.options())?;
    let options = ModelOptions {
        max_context: (longest as u32).max(model_args.context),
        prefill_chunk: model_args.prefill_chunk,
        // squad2 decodes greedily: only the last row's argmax is needed.
        all_logits: args.task != EvalTask::Squad2,
        delta: delta.clone(),
        ..Default::default()
    };
    let mut model = deltallm::model::Model::load(&gpu, &files.weights, options)?;
    model_args.routing.apply(&gpu, &mut model)?;
    eprintln!("{:?} on {} ({:?})", architecture, gpu.info.name, gpu.info.backend);

    let task = |source: &mut dyn LogitSource| -> deltallm::Result<TaskReport> {
        match &data {
            EvalData::Ppl(ids) => ppl::perplexity(source, ids, &ppl_options),
            EvalData::Mc(items, encoded) => mc::evaluate(source, items, encoded, args.limit, true),
            EvalData::Squad(items, prompts, stop) => {
                squad::evaluate(source, tokenizer, items, prompts, &args.unanswerable, stop, args.limit, true)
            }
        }
    };
    let task_name = match args.task {
        EvalTask::Ppl => "ppl",
        EvalTask::Mc => "mc",
        EvalTask::Squad2 => "squad2",
    };
    if axes.is_empty() {
        let report = task(&mut GpuSource { gpu: &gpu, model: &mut model })?;
        println!(
            "{task_name} on {}: {} {:.4} ({} {} scored, {:.1} tok/s)",
            args.data.display(),
            report.metric_name,
            report.metric,
            report.scored,
            if task_name == "ppl" { "tokens" } else { "items" },
            report.tokens_per_second
        );
        if let Some(s) = &report.sparsity {
            let t = &s.phases.total;
            println!(
                "DeltaLLM: delta sparsity {:.1} %, MAC sparsity {:.1} % (prefill {:.1} %, decode {:.1} %), authors' {:.1} %, K bytes {:.1} % of dense f16",
                100.0 * t.delta_sparsity,
                100.0 * t.mac_sparsity,
                100.0 * s.phases.prefill.mac_sparsity,
                100.0 * s.phases.decode.mac_sparsity,
                100.0 * t.authors_sparsity,
                100.0 * s.k_cache_ratio
            );
        }
        if let Some(json_path) = &args.json {
            let object = serde_json::json!({
                "model": path.display().to_string(),
                "data": args.data.display().to_string(),
                "delta": delta.as_ref().map(|d| format!("{d:?}")),
                "thresholds": model.delta_thresholds(),
                "report": report,
            });
            write_file(json_path, &serde_json::to_string_pretty(&object)?)?;
        }
        return Ok(());
    }
    let base = delta.expect("a sweep turns DeltaLLM on");
    let rows = sweep::run(&gpu, &mut model, &base, &axes, &mut |s| task(s), &mut |line| eprintln!("{line}"))?;
    print!("{}", sweep::table(&rows));
    let prefix = match (&args.out, &args.json) {
        (Some(p), _) => p.clone(),
        (None, Some(j)) => j.with_extension(""),
        (None, None) => std::path::PathBuf::from(format!("eval-{task_name}-sweep")),
    };
    let with_ext = |ext: &str| std::path::PathBuf::from(format!("{}.{ext}", prefix.display()));
    let title = format!(
        "{} of {} on {}",
        rows[0].report.metric_name,
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        args.data.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    );
    write_file(&with_ext("csv"), &sweep::csv(&rows))?;
    let object = serde_json::json!({
        "model": path.display().to_string(),
        "data": args.data.display().to_string(),
        "base": format!("{base:?}"),
        "rows": rows,
    });
    write_file(args.json.as_ref().unwrap_or(&with_ext("json")), &serde_json::to_string_pretty(&object)?)?;
    write_file(&with_ext("svg"), &sweep::svg(&rows, &title))?;
    Ok(())
}

fn write_file(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
