//! End to end: prefill and decode through [`Model`], timed with the wall
//! clock around `forward` + reading the chosen token back (what a user
//! waits for), on random models with the real shapes or on a real model.
//!
//! A random BitNet-2B4T is 2 G ternary values and a Llama-1B 1 G weights
//! before upload; on a CPU adapter a 128-token prefill through all layers
//! takes minutes. So synthetic models run `layers` of their layers (the
//! per-layer cost is the same), and the row names say how many. Embeddings
//! (and Llama's linears) are bf16, as the real checkpoints ship them.
//!
//! Each prompt length of [`E2eOptions::prefill_lengths`] is timed, then
//! decode steps at that context. With [`E2eOptions::delta_sparsity`] the
//! same runs are repeated with DeltaLLM attention, Θ calibrated per layer
//! on the first prompt for that delta sparsity and then held fixed (so the
//! timed prefills do not include calibration); the rows carry the delta
//! sparsity measured on the run.
//!
//! A model with more layers than [`E2eOptions::skip_layers`] + 1 is timed a
//! second time with a layer plan (Dr.LLM routing) that skips that many
//! layers: the ones just before the last, which layer-pruning studies find
//! the most redundant. The speed-up is what a router choosing such a plan
//! buys; the quality cost depends on the model and prompt.

use super::timer::percentile;
use super::{BenchOptions, E2eRow};
use crate::error::Result;
use crate::gpu::Gpu;
use crate::model::{DeltaOptions, LayerAction, LayerPlan, Model, ModelOptions};
use crate::weights::synthetic;
use crate::weights::{Matrix, MatrixData, ModelWeights};
use half::bf16;
use web_time::Instant;

/// Which models to run and how long.
#[derive(Clone, Debug)]
pub struct E2eOptions {
    /// A model file or folder (anything `ModelFiles::load` reads); when
    /// absent, the synthetic BitNet-2B4T- and Llama-1B-shaped models run.
    pub model: Option<String>,
    /// Layers of each synthetic model to run (None: all of them).
    pub layers: Option<usize>,
    /// Prompt lengths to time; decode is timed at each of them as context.
    pub prefill_lengths: Vec<usize>,
    pub decode_steps: usize,
    /// Timed prefills (each after a reset).
    pub prefill_reps: usize,
    /// Also time with a layer plan skipping this many layers (0 = not),
    /// at the first prompt length.
    pub skip_layers: usize,
    /// Also time with DeltaLLM attention calibrated to this delta sparsity
    /// (None = dense only).
    pub delta_sparsity: Option<f32>,
}

impl E2eOptions {
    pub fn new(quick: bool) -> E2eOptions {
        if quick {
            E2eOptions {
                model: None,
                layers: Some(1),
                prefill_lengths: vec![8, 16],
                decode_steps: 3,
                prefill_reps: 1,
                skip_layers: 4,
                delta_sparsity: Some(0.6),
            }
        } else {
            E2eOptions {
                model: None,
                layers: Some(2),
                prefill_lengths: vec![128, 512, 1024],
                decode_steps: 8,
                prefill_reps: 2,
                skip_layers: 4,
                delta_sparsity: Some(0.6),
            }
        }
    }
}

fn to_bf16(m: &mut Matrix) {
    if let MatrixData::F32(values) = &m.data {
        m.data = MatrixData::Bf16(values.iter().map(|v| bf16::from_f32(*v)).collect());
    }
}

/// A random model of `config`'s shape cut to `layers` layers, with bf16
/// embeddings and dense linears.
fn synthetic_weights(mut config: crate::loader::config::ModelConfig, layers: Option<usize>) -> ModelWeights {
    if let Some(layers) = layers {
        config.num_hidden_layers = layers.clamp(1, config.num_hidden_layers);
    }
    let mut weights = synthetic::random_weights(&config, 1);
    to_bf16(&mut weights.embed_tokens);
    for layer in &mut weights.layers {
        for m in layer.linears_mut() {
            to_bf16(m);
        }
    }
    weights
}

/// Tiny configs with the same structure, for `--quick`.
fn quick_configs() -> Vec<(String, crate::loader::config::ModelConfig)> {
    use crate::loader::config::Architecture;
    vec![
        ("bitnet-tiny".into(), synthetic::config(Architecture::BitNet, 256, 688, 2, 4, 1, 4000)),
        ("llama-tiny".into(), synthetic::config(Architecture::Llama, 192, 512, 2, 3, 1, 4000)),
    ]
}

fn row(name: String, model: &str, layers: usize, tokens: usize, samples_ms: &[f64]) -> E2eRow {
    let median_ms = percentile(samples_ms, 50.0);
    E2eRow {
        name,
        model: model.to_string(),
        layers,
        tokens,
        median_ms,
        p10_ms: percentile(samples_ms, 10.0),
        p90_ms: percentile(samples_ms, 90.0),
        tokens_per_s: tokens as f64 / (median_ms / 1e3),
        delta_sparsity: None,
        ..Default::default()
    }
}

/// Time prefill and decode of one model, dense and (when asked) with
/// DeltaLLM attention.
async fn time_model(
    gpu: &Gpu,
    label: &str,
    weights: &ModelWeights,
    total_layers: usize,
    options: &E2eOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<E2eRow>> {
    let c = &weights.config;
    let layers = c.num_hidden_layers;
    let longest = options.prefill_lengths.iter().copied().max().unwrap_or(1).max(1);
    // A model with a short context gets shorter prompts rather than an error.
    let wanted = longest + options.decode_steps + 1;
    let context = wanted.next_power_of_two().min(c.max_position_embeddings.max(2));
    let fit = |n: usize| n.min(context - 1 - options.decode_steps.min(context - 2)).max(1);
    let mut lengths: Vec<usize> = options.prefill_lengths.iter().map(|&n| fit(n)).collect();
    lengths.dedup();
    let vocab = c.vocab_size as u32;
    let prompt: Vec<u32> = (0..fit(longest) as u32).map(|i| (i * 7919 + 13) % vocab).collect();
    let depth = if layers == total_layers { String::new() } else { format!(" ({layers}/{total_layers} layers)") };

    let mut rows = Vec::new();
    let dense =
        ModelOptions { max_context: context as u32, prefill_chunk: 64, all_logits: false, ..Default::default() };
    let mut model = load(gpu, label, weights, dense.clone(), progress).await?;
    for &n in &lengths {
        rows.extend(time_steps(gpu, &mut model, label, &depth, &prompt[..n], options, progress).await?);
    }
    let skip = options.skip_layers;
    if skip > 0 && layers > skip + 1 {
        let mut plan = LayerPlan::plain(layers);
        plan.actions[layers - 1 - skip..layers - 1].fill(LayerAction::Skip);
        model.set_layer_plan(gpu, plan.clone())?;
        progress(&format!("{label}: layer plan skipping {skip} layers: {plan}"));
        let depth = format!("{depth} (plan skips {skip} layers)");
        rows.extend(time_steps(gpu, &mut model, label, &depth, &prompt[..lengths[0]], options, progress).await?);
    }
    drop(model);

    if let Some(target) = options.delta_sparsity {
        let delta = DeltaOptions { target_sparsity: Some(target), ..DeltaOptions::for_architecture(c.architecture) };
        let mut model = load(gpu, label, weights, ModelOptions { delta: Some(delta), ..dense }, progress).await?;
        // Calibrate on the longest prompt, then hold Θ fixed for the timed runs.
        model.reset();
        model.forward_async(gpu, &prompt).await?;
        let thresholds = model.delta_thresholds().unwrap_or_default().to_vec();
        model.set_delta_thresholds(gpu, &thresholds)?;
        progress(&format!("{label}: DeltaLLM Θ per layer for {:.0} % delta sparsity: {thresholds:?}", 100.0 * target));
        let depth = format!("{depth} delta");
        for &n in &lengths {
            let mut timed = time_steps(gpu, &mut model, label, &depth, &prompt[..n], options, progress).await?;
            let measured = model.delta_stats_async(gpu).await?.map(|r| r.phases.total.delta_sparsity);
            for r in &mut timed {
                r.delta_sparsity = measured;
            }
            rows.extend(timed);
        }
    }
    Ok(rows)
}

async fn load(
    gpu: &Gpu,
    label: &str,
    weights: &ModelWeights,
    options: ModelOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Model> {
    let started = Instant::now();
    let mut model = Model::load_async(gpu, weights, options, &mut |_, _| {}).await?;
    gpu.wait_async().await?;
    progress(&format!("{label}: loaded in {:.1} s", started.elapsed().as_secs_f64()));
    // Warm-up: builds nothing new (pipelines exist after load) but touches every buffer once.
    model.forward_async(gpu, &[0]).await?;
    model.argmax_async(gpu).await?;
    model.reset();
    Ok(model)
}

/// Time prefill of `prompt` and decode after it; the row names start with `label`.
async fn time_steps(
    gpu: &Gpu,
    model: &mut Model,
    label: &str,
    depth: &str,
    prompt: &[u32],
    options: &E2eOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<E2eRow>> {
    let layers = model.config.num_hidden_layers;
    let mut prefill_ms = Vec::new();
    for _ in 0..options.prefill_reps.max(1) {
        model.reset();
        let start = Instant::now();
        model.forward_async(gpu, prompt).await?;
        model.argmax_async(gpu).await?;
        prefill_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let mut decode_ms = Vec::new();
    let mut token = model.argmax_async(gpu).await?;
    for _ in 0..options.decode_steps {
        let start = Instant::now();
        model.forward_async(gpu, &[token]).await?;
        token = model.argmax_async(gpu).await?;
        decode_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let n = prompt.len();
    let mut prefill = row(format!("{label} prefill {n}{depth}"), label, layers, n, &prefill_ms);
    let mut decode = row(format!("{label} decode at {n}{depth}"), label, layers, 1, &decode_ms);
    // What the steps cost the GPU: a prefill step holds up to prefill_chunk
    // tokens; decode is costed at the median step's context.
    prefill.dispatches = model.prefill_cost((n as u32).min(model.options.prefill_chunk)).dispatches;
    let cost = model.decode_cost((n + options.decode_steps / 2) as u32);
    decode.dispatches = cost.dispatches;
    decode.bytes_per_token = Some(cost.bytes());
    decode.head_bytes_per_token = Some(cost.head_weight_bytes);
    decode.gb_per_s = Some(cost.bytes() as f64 / (decode.median_ms / 1e3) / 1e9);
    for r in [&prefill, &decode] {
        progress(&format!(
            "{:<60} median {:>10.1} ms  {:.2} tok/s  {} dispatches/step",
            r.name, r.median_ms, r.tokens_per_s, r.dispatches
        ));
    }
    Ok(vec![prefill, decode])
}

/// Run the end-to-end part.
pub async fn run(
    gpu: &Gpu,
    bench: &BenchOptions,
    options: &E2eOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<E2eRow>> {
    let mut rows = Vec::new();
    if let Some(path) = &options.model {
        let name = std::path::Path::new(path).file_name().map(|n| n.to_string_lossy().to_string());
        let label = name.unwrap_or_else(|| path.clone());
        if !bench.selects(&label) {
            return Ok(rows);
        }
        progress(&format!("{label}: reading weights"));
        let files = crate::engine::ModelFiles::load(path)?;
        let layers = files.weights.config.num_hidden_layers;
        rows.extend(time_model(gpu, &label, &files.weights, layers, options, progress).await?);
        return Ok(rows);
    }
    let configs = if bench.quick {
        quick_configs()
    } else {
        vec![
            ("bitnet-2b4t-shaped".to_string(), synthetic::bitnet_2b4t_config()),
            ("llama-1b-shaped".to_string(), synthetic::llama_1b_config()),
        ]
    };
    for (label, config) in configs {
        if !bench.selects(&label) {
            continue;
        }
        let total_layers = config.num_hidden_layers;
        progress(&format!("{label}: generating random weights"));
        let weights = synthetic_weights(config, options.layers);
        rows.extend(time_model(gpu, &label, &weights, total_layers, options, progress).await?);
    }
    Ok(rows)
}
