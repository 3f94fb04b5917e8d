//! The transformer on the GPU: weights uploaded once, every op (pipelines,
//! parameter buffers, bind groups) built at load, and a forward step that
//! records the whole network into one encoder with one submit.
//!
//! A token's path, per layer (DESIGN §3/§4; BitNet's extras in brackets):
//!
//! ```text
//! x = rmsnorm(h)                         attn_norm
//! q, k, v = linear(x)                    [x quantized to int8 once for all three]
//! rope(q, k); append k, v to the cache
//! a = attention(q, cache)                causal GQA, f32 softmax
//! [a = rmsnorm(a; attn_sub_norm)]
//! h += o_proj(a)
//! x = rmsnorm(h)                         ffn_norm
//! m = act(gate(x)) · up(x)               silu (Llama) or relu² (BitNet)
//! [m = rmsnorm(m; ffn_sub_norm)]
//! h += down(m)
//! ```
//! then `logits = rmsnorm(h) · lm_headᵀ` for the last token (or every token
//! when [`ModelOptions::all_logits`] is set).
//!
//! With [`ModelOptions::delta`], `attention` is DeltaLLM's: the keys also
//! become delta rows and hybrid attention replaces the dense one (see
//! [`delta`]).
//!
//! A [`LayerPlan`] (or per-layer [`Routers`] choosing one per prompt) skips
//! layers or runs them twice; a step runs the layers as the plan says (see
//! [`routing`]).

pub mod delta;
pub mod routing;
pub mod source;
pub mod synthetic;
pub mod weights;

pub use delta::{DeltaOptions, DeltaReport, DeltaStage};
pub use routing::{LayerAction, LayerPlan, PlanSource, Routers, RoutingReport};
pub use source::{StreamedFile, StreamedWeights, WeightFormats, WeightSource};
pub use weights::{LayerWeights, Matrix, MatrixData, ModelWeights};

use delta::{DeltaState, LayerDelta};
use routing::{AttentionBuffers, Routing, SecondPass};

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer};
use crate::loader::config::{Activation, ModelConfig};
use crate::ops::RmsNorm;
use crate::ops::attention::{Attention, KvCache};
use crate::ops::elementwise::{AddInPlace, GatedActivation, GatedMul};
use crate::ops::embedding::Embedding;
use crate::ops::matmul::{DenseWeight, Matmul};
use crate::ops::quant::{Q8Activations, QuantEmbedding, QuantMatmul, QuantWeight, QuantizeQ8};
use crate::ops::rope::{Rope, RopeTable};
use crate::ops::sampling::Argmax;
use crate::ops::ternary::{Int8Activations, QuantizeInt8, TernaryMatmul, TernaryWeight};

/// How the GPU model is sized.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// KV-cache length in tokens; 0 = the model's maximum, capped at 4096.
    pub max_context: u32,
    /// Tokens per prefill step (activation buffers are sized for this many).
    pub prefill_chunk: u32,
    /// Compute logits for every token of a step, not only the last.
    pub all_logits: bool,
    /// Split dense weights into chunks of at most this many rows, below what
    /// the binding limit requires (tests use it to exercise splitting on
    /// tiny models; `None` splits only as the device needs).
    pub weight_chunk_rows: Option<u32>,
    /// DeltaLLM attention (DESIGN §2); `None` = dense attention.
    pub delta: Option<DeltaOptions>,
    /// Run GGUF Q4_0/Q4_1/Q8_0 linears (and a tied Q8_0 lm_head) on their
    /// blocks with llama.cpp's int8 activation rounding; `false` dequantizes
    /// them to f32 at load and runs the dense matmul.
    pub native_quant: bool,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            max_context: 0,
            prefill_chunk: 64,
            all_logits: false,
            weight_chunk_rows: None,
            delta: None,
            native_quant: true,
        }
    }
}

/// A linear layer's weight on the GPU.
enum LinearWeight {
    Dense(DenseWeight),
    Ternary(TernaryWeight),
    /// GGUF Q4_0/Q4_1/Q8_0 blocks.
    Quant(QuantWeight),
}

impl LinearWeight {
    /// Upload `m`; GGUF blocks stay blocks when `native_quant`, else become f32.
    fn upload(gpu: &Gpu, label: &str, m: &Matrix, chunk_rows: Option<u32>, native_quant: bool) -> Result<Self> {
        let (rows, cols) = (m.rows as u32, m.cols as u32);
        Ok(match &m.data {
            MatrixData::F32(v) => {
                LinearWeight::Dense(DenseWeight::upload_f32_with_chunk_rows(gpu, label, v, rows, cols, chunk_rows)?)
            }
            MatrixData::F16(v) => {
                LinearWeight::Dense(DenseWeight::upload_f16_with_chunk_rows(gpu, label, v, rows, cols, chunk_rows)?)
            }
            MatrixData::Bf16(v) => {
                LinearWeight::Dense(DenseWeight::upload_bf16_with_chunk_rows(gpu, label, v, rows, cols, chunk_rows)?)
            }
            MatrixData::Ternary { values, scale, convention } => {
                LinearWeight::Ternary(TernaryWeight::from_ternary(gpu, label, values, rows, cols, *scale, *convention)?)
            }
            MatrixData::Quantized { format, blocks } if native_quant => LinearWeight::Quant(
                QuantWeight::upload_with_chunk_rows(gpu, label, *format, blocks, rows, cols, chunk_rows)?,
            ),
            MatrixData::Quantized { .. } => LinearWeight::Dense(DenseWeight::upload_f32_with_chunk_rows(
                gpu,
                label,
                &m.try_to_f32().map_err(|e| Error::Invalid(format!("weight '{label}': {e}")))?,
                rows,
                cols,
                chunk_rows,
            )?),
        })
    }
}

/// The embedding gather, from a dense table or from GGUF blocks (which a
/// tied lm_head then shares).
enum TokenEmbedding {
    Dense(Embedding),
    Blocks(QuantEmbedding),
}

impl TokenEmbedding {
    fn new(gpu: &Gpu, table: &LinearWeight, ids: &GpuBuffer, out: &GpuBuffer, max_tokens: u32) -> Result<Self> {
        Ok(match table {
            LinearWeight::Dense(t) => TokenEmbedding::Dense(Embedding::new(gpu, t, ids, out, max_tokens)?),
            LinearWeight::Quant(t) => TokenEmbedding::Blocks(QuantEmbedding::new(gpu, t, ids, out, max_tokens)?),
            LinearWeight::Ternary(_) => {
                return Err(Error::Invalid("embed_tokens must be a dense matrix or GGUF blocks, not ternary".into()));
            }
        })
    }

    fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        match self {
            TokenEmbedding::Dense(e) => e.set_rows(gpu, rows),
            TokenEmbedding::Blocks(e) => e.set_rows(gpu, rows),
        }
    }

    fn dispatches(&self) -> &[Dispatch] {
        match self {
            TokenEmbedding::Dense(e) => e.dispatches(),
            TokenEmbedding::Blocks(e) => e.dispatches(),
        }
    }
}

/// The int8 copy of one linear input, shared by every linear that reads it:
/// per-token (BitNet) or in blocks of 32 (GGUF Q4_0/Q4_1/Q8_0).
enum QuantizedInput {
    Int8(Int8Activations),
    Q8(Q8Activations),
}

/// The op that writes a [`QuantizedInput`] from its f32 input.
enum Quantize {
    Int8(QuantizeInt8),
    Q8(QuantizeQ8),
}

impl Quantize {
    fn new(gpu: &Gpu, x: &GpuBuffer, input: &QuantizedInput) -> Result<Self> {
        Ok(match input {
            QuantizedInput::Int8(a) => Quantize::Int8(QuantizeInt8::new(gpu, x, a)?),
            QuantizedInput::Q8(a) => Quantize::Q8(QuantizeQ8::new(gpu, x, a)?),
        })
    }

    fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        match self {
            Quantize::Int8(q) => q.set_rows(gpu, rows),
            Quantize::Q8(q) => q.set_rows(gpu, rows),
        }
    }

    fn dispatch(&self) -> &Dispatch {
        match self {
            Quantize::Int8(q) => &q.dispatch,
            Quantize::Q8(q) => &q.dispatch,
        }
    }
}

/// A linear layer's op: a dense matmul, or a ternary or block matmul reading
/// the int8 activations a [`Quantize`] op produced earlier in the step.
enum Linear {
    Dense(Matmul),
    Ternary(TernaryMatmul),
    Quant(QuantMatmul),
}

impl Linear {
    fn new(
        gpu: &Gpu,
        weight: &LinearWeight,
        x: &GpuBuffer,
        x8: Option<&QuantizedInput>,
        out: &GpuBuffer,
        max_rows: u32,
    ) -> Result<Self> {
        Ok(match (weight, x8) {
            (LinearWeight::Dense(w), _) => Linear::Dense(Matmul::new(gpu, w, x, out, max_rows)?),
            (LinearWeight::Ternary(w), Some(QuantizedInput::Int8(x8))) => {
                Linear::Ternary(TernaryMatmul::new(gpu, x8, w, out)?)
            }
            (LinearWeight::Ternary(_), _) => {
                return Err(Error::Invalid("a ternary linear needs per-token int8 activations".into()));
            }
            (LinearWeight::Quant(w), Some(QuantizedInput::Q8(x8))) => Linear::Quant(QuantMatmul::new(gpu, x8, w, out)?),
            (LinearWeight::Quant(w), _) => {
                return Err(Error::Invalid(format!(
                    "'{}' ({:?} blocks) needs Q8 block activations, but its input is not quantized that way (a model mixing ternary and GGUF block linears on one input is not supported; load with native_quant off)",
                    w.label, w.format
                )));
            }
        })
    }

    fn set_rows(&mut self, gpu: &Gpu, rows: u32) -> Result<()> {
        match self {
            Linear::Dense(m) => m.set_rows(gpu, rows),
            Linear::Ternary(m) => m.set_rows(gpu, rows),
            Linear::Quant(m) => m.set_rows(gpu, rows),
        }
    }

    fn dispatches(&self) -> Vec<&Dispatch> {
        match self {
            Linear::Dense(m) => m.dispatches().iter().collect(),
            Linear::Ternary(m) => vec![m.dispatch()],
            Linear::Quant(m) => m.dispatches().iter().collect(),
        }
    }
}

/// Activation buffers shared by all layers (they run one after another).
struct Activations {
    ids: GpuBuffer,        // u32 [rows]
    h: GpuBuffer,          // [rows][hidden], the residual stream
    x: GpuBuffer,          // [rows][hidden], normed input of a block
    delta: GpuBuffer,      // [rows][hidden], a block's output before the residual add
    q: GpuBuffer,          // [rows][q_dim]
    k: GpuBuffer,          // [rows][kv_dim]
    v: GpuBuffer,          // [rows][kv_dim]
    attn: GpuBuffer,       // [rows][q_dim]
    attn_sub: GpuBuffer,   // [rows][q_dim], BitNet's attn_sub_norm output
    gate: GpuBuffer,       // [rows][intermediate]
    up: GpuBuffer,         // [rows][intermediate]
    mlp: GpuBuffer,        // [rows][intermediate]
    mlp_sub: GpuBuffer,    // [rows][intermediate], BitNet's ffn_sub_norm output
    last: GpuBuffer,       // [1][hidden], the last token's residual
    final_x: GpuBuffer,    // [logit rows][hidden]
    logits: GpuBuffer,     // [logit rows][vocab]
    next_token: GpuBuffer, // u32 [1], argmax of the last logits row
    /// Int8 activations by linear input (x, o_proj's, down_proj's), for
    /// ternary models and native GGUF blocks.
    x8_hidden: Option<QuantizedInput>,
    x8_q: Option<QuantizedInput>,
    x8_mlp: Option<QuantizedInput>,
    /// The lm_head's input, when it runs on GGUF blocks.
    x8_final: Option<QuantizedInput>,
}

struct Layer {
    attn_norm: RmsNorm,
    quantize_attn_in: Option<Quantize>,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    rope: Rope,
    attention: Attention,
    /// DeltaLLM's ops; when present, `attention` only appends (and attends
    /// in decode steps of [`DeltaStage::Prefill`]).
    delta: Option<LayerDelta>,
    /// This step attends through `delta`'s hybrid attention.
    hybrid: bool,
    attn_sub_norm: Option<RmsNorm>,
    quantize_o_in: Option<Quantize>,
    o_proj: Linear,
    attn_residual: AddInPlace,
    ffn_norm: RmsNorm,
    quantize_ffn_in: Option<Quantize>,
    gate_proj: Linear,
    up_proj: Linear,
    gated: GatedMul,
    ffn_sub_norm: Option<RmsNorm>,
    quantize_down_in: Option<Quantize>,
    down_proj: Linear,
    ffn_residual: AddInPlace,
    cache: KvCache,
    /// The second pass's cache and attention, once a plan has repeated this layer.
    second_pass: Option<SecondPass>,
}

impl Layer {
    fn set_step(&mut self, gpu: &Gpu, rows: u32, pos0: u32, hybrid: bool) -> Result<()> {
        self.attn_norm.set_rows(gpu, rows)?;
        for q in
            [&mut self.quantize_attn_in, &mut self.quantize_o_in, &mut self.quantize_ffn_in, &mut self.quantize_down_in]
                .into_iter()
                .flatten()
        {
            q.set_rows(gpu, rows)?;
        }
        for l in [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ] {
            l.set_rows(gpu, rows)?;
        }
        self.rope.set_step(gpu, rows, pos0)?;
        self.attention.set_step(gpu, rows, pos0)?;
        if let Some(second) = &mut self.second_pass {
            second.attention.set_step(gpu, rows, pos0)?;
        }
        for delta in self.deltas_mut() {
            delta.set_step(gpu, rows, pos0)?;
        }
        // Θ = 0 is dense attention where the full keys are kept; a key ring
        // leaves only the hybrid path.
        let can_attend = self.attention.can_attend();
        self.hybrid = match &self.delta {
            Some(d) => !can_attend || (hybrid && d.theta > 0.0),
            None => false,
        };
        if let Some(n) = &mut self.attn_sub_norm {
            n.set_rows(gpu, rows)?;
        }
        self.attn_residual.set_rows(gpu, rows)?;
        self.ffn_norm.set_rows(gpu, rows)?;
        self.gated.set_rows(gpu, rows)?;
        if let Some(n) = &mut self.ffn_sub_norm {
            n.set_rows(gpu, rows)?;
        }
        self.ffn_residual.set_rows(gpu, rows)
    }

    /// DeltaLLM's ops of both passes.
    fn deltas_mut(&mut self) -> impl Iterator<Item = &mut LayerDelta> {
        self.delta.iter_mut().chain(self.second_pass.iter_mut().filter_map(|s| s.delta.as_mut()))
    }

    /// The layer's dispatches in execution order for `action` of a plan:
    /// none for a skip, the block twice for a repeat (the second time
    /// attending through its own cache).
    fn dispatches(&self, action: LayerAction) -> Vec<&Dispatch> {
        match (action, &self.second_pass) {
            (LayerAction::Skip, _) => Vec::new(),
            (LayerAction::Execute, _) => self.pass_dispatches(None),
            (LayerAction::Repeat, Some(second)) => {
                let mut d = self.pass_dispatches(None);
                d.extend(self.pass_dispatches(Some(second)));
                d
            }
            // set_layer_plan and routing allocate the slot before a repeat runs.
            (LayerAction::Repeat, None) => unreachable!("a repeated layer without its second cache"),
        }
    }

    /// One pass of the block, attending through `second`'s cache or the layer's own.
    fn pass_dispatches<'a>(&'a self, second: Option<&'a SecondPass>) -> Vec<&'a Dispatch> {
        let mut d: Vec<&Dispatch> = vec![&self.attn_norm.dispatch];
        d.extend(self.quantize_attn_in.as_ref().map(Quantize::dispatch));
        d.extend(self.q_proj.dispatches());
        d.extend(self.k_proj.dispatches());
        d.extend(self.v_proj.dispatches());
        d.push(&self.rope.dispatch);
        d.extend(match second {
            Some(s) => s.attention_dispatches(self.hybrid),
            None => routing::attention_dispatches(&self.attention, self.delta.as_ref(), self.hybrid),
        });
        d.extend(self.attn_sub_norm.as_ref().map(|n| &n.dispatch));
        d.extend(self.quantize_o_in.as_ref().map(Quantize::dispatch));
        d.extend(self.o_proj.dispatches());
        d.push(&self.attn_residual.dispatch);
        d.push(&self.ffn_norm.dispatch);
        d.extend(self.quantize_ffn_in.as_ref().map(Quantize::dispatch));
        d.extend(self.gate_proj.dispatches());
        d.extend(self.up_proj.dispatches());
        d.push(&self.gated.dispatch);
        d.extend(self.ffn_sub_norm.as_ref().map(|n| &n.dispatch));
        d.extend(self.quantize_down_in.as_ref().map(Quantize::dispatch));
        d.extend(self.down_proj.dispatches());
        d.push(&self.ffn_residual.dispatch);
        d
    }
}

/// A layer's K/V cache and attention ops: the full K cache, or DeltaLLM's
/// key ring when `delta` never attends densely (see
/// [`DeltaOptions::key_ring`]), with the delta ops bound to it.
fn attention_ops(
    gpu: &Gpu,
    i: usize,
    c: &ModelConfig,
    act: &Activations,
    rows: u32,
    max_context: u32,
    delta: Option<&DeltaOptions>,
) -> Result<(KvCache, Attention, Option<LayerDelta>)> {
    let (sink_rows, ring_rows) = delta.map_or((0, max_context), |d| d.key_ring(max_context, rows));
    let (heads, kv_heads, head_dim) = (c.num_attention_heads as u32, c.num_key_value_heads as u32, c.head_dim as u32);
    let label = format!("layers.{i}.kv");
    let cache = KvCache::with_key_ring(gpu, &label, kv_heads, head_dim, max_context, sink_rows, ring_rows)?;
    let attention = Attention::new(gpu, &cache, &act.q, &act.k, &act.v, &act.attn, rows, heads)?;
    let delta = match delta {
        Some(d) => {
            Some(LayerDelta::new(gpu, &format!("layers.{i}.delta"), &cache, &act.q, &act.k, &act.attn, rows, heads, d)?)
        }
        None => None,
    };
    Ok((cache, attention, delta))
}

/// A model ready to run on one GPU.
pub struct Model {
    pub config: ModelConfig,
    pub options: ModelOptions,
    /// KV-cache length in tokens.
    pub max_context: u32,
    act: Activations,
    embedding: TokenEmbedding,
    layers: Vec<Layer>,
    final_norm: RmsNorm,
    quantize_final_in: Option<Quantize>,
    lm_head: Linear,
    /// Greedy pick on the GPU, so greedy decoding reads back 4 bytes, not the logits.
    argmax: Argmax,
    _rope_table: RopeTable,
    _final_norm_weight: GpuBuffer,
    /// Tokens already in the KV cache.
    position: u32,
    /// Rows of `logits` the last step wrote.
    logit_rows: u32,
    delta: Option<DeltaState>,
    /// The layer plan of the sequence, and the routers choosing it.
    routing: Routing,
}

impl Model {
    /// Upload `weights` and build every op.
    /// Blocking form of [`Model::load_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(gpu: &Gpu, weights: &ModelWeights, options: ModelOptions) -> Result<Model> {
        pollster::block_on(Self::load_async(gpu, weights, options, &mut |_, _| {}))
    }

    /// Upload `weights` and build every op, calling `progress(done, total)`
    /// after the embedding, each layer and the head ([`Model::load_from`]
    /// with the weights as the source).
    pub async fn load_async(
        gpu: &Gpu,
        weights: &ModelWeights,
        options: ModelOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        Self::load_from(gpu, weights, options, progress).await
    }

    /// Build every op and upload the weights of `source` one part at a
    /// time (embedding, each layer, norm, head), dropping each part's host
    /// copy before asking for the next, and calling `progress(done, total)`
    /// after the embedding, each layer and the head. Between layers it lets
    /// the GPU settle (in a browser: the queue drains and the page can paint),
    /// so an out-of-memory error names the layer it happened in.
    pub async fn load_from(
        gpu: &Gpu,
        source: &dyn WeightSource,
        options: ModelOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let c = source.config().clone();
        c.validate()?;
        if let Some(d) = &options.delta {
            d.validate()?;
        }
        let max_context = match options.max_context {
            0 => (c.max_position_embeddings as u32).min(4096),
            n => n,
        };
        // A step never holds more tokens than the context.
        let mut options = options;
        // DeltaLLM's key build walks a step's rows in one loop of bounded length.
        let step_cap = if options.delta.is_some() { crate::ops::delta::MAX_STEP_ROWS } else { u32::MAX };
        options.prefill_chunk = options.prefill_chunk.clamp(1, max_context.min(step_cap));
        let rows = options.prefill_chunk;
        let (hidden, q_dim, kv_dim, inter, vocab) = (
            c.hidden_size as u32,
            c.q_dim() as u32,
            c.kv_dim() as u32,
            c.intermediate_size as u32,
            c.vocab_size as u32,
        );
        let logit_rows = if options.all_logits { rows } else { 1 };
        let f32s = |label: &str, n: u32| gpu.storage(label, n as u64 * 4);
        let formats = source.formats();
        let ternary = formats.ternary;
        let native_quant = options.native_quant;
        let x8 = |label: &str, k: u32, blocks: bool| -> Result<Option<QuantizedInput>> {
            Ok(if ternary {
                Some(QuantizedInput::Int8(Int8Activations::new(gpu, label, rows, k)?))
            } else if blocks {
                Some(QuantizedInput::Q8(Q8Activations::new(gpu, label, rows, k)?))
            } else {
                None
            })
        };
        // Q8 blocks for an input when a linear reading it runs natively on GGUF blocks.
        let output_blocks = native_quant && formats.output_blocks;
        let act = Activations {
            ids: gpu.storage("ids", rows as u64 * 4)?,
            h: f32s("h", rows * hidden)?,
            x: f32s("x", rows * hidden)?,
            delta: f32s("delta", rows * hidden)?,
            q: f32s("q", rows * q_dim)?,
            k: f32s("k", rows * kv_dim)?,
            v: f32s("v", rows * kv_dim)?,
            attn: f32s("attn", rows * q_dim)?,
            attn_sub: f32s("attn_sub", rows * q_dim)?,
            gate: f32s("gate", rows * inter)?,
            up: f32s("up", rows * inter)?,
            mlp: f32s("mlp", rows * inter)?,
            mlp_sub: f32s("mlp_sub", rows * inter)?,
            last: f32s("last", hidden)?,
            final_x: f32s("final_x", logit_rows * hidden)?,
            logits: f32s("logits", logit_rows * vocab)?,
            next_token: gpu.storage("next_token", 4)?,
            x8_hidden: x8("x8_hidden", hidden, native_quant && formats.blocks_hidden)?,
            x8_q: x8("x8_q", q_dim, native_quant && formats.blocks_attention)?,
            x8_mlp: x8("x8_mlp", inter, native_quant && formats.blocks_mlp)?,
            x8_final: match output_blocks {
                true => Some(QuantizedInput::Q8(Q8Activations::new(gpu, "x8_final", logit_rows, hidden)?)),
                false => None,
            },
        };

        let rope_table = RopeTable::from_inv_freq(gpu, c.head_dim as u32, source.rope_inv_freq(), max_context)?;
        let embed_matrix = source.embed_tokens().await?;
        let embed = LinearWeight::upload(gpu, "embed_tokens", &embed_matrix, options.weight_chunk_rows, native_quant)?;
        drop(embed_matrix);
        let embedding = TokenEmbedding::new(gpu, &embed, &act.ids, &act.h, rows)?;
        let layer_count = source.layer_count();
        let upload_steps = layer_count + 2;
        gpu.settle("the upload of the embedding").await?;
        progress(1, upload_steps);
        let eps = c.rms_norm_eps;
        let vector = |label: &str, v: &[f32]| gpu.storage_from(label, v);
        let quantize = |x: &GpuBuffer, x8: &Option<QuantizedInput>| -> Result<Option<Quantize>> {
            x8.as_ref().map(|a| Quantize::new(gpu, x, a)).transpose()
        };

        let mut layers = Vec::with_capacity(layer_count);
        for i in 0..layer_count {
            // This layer's host copy lives until the end of the iteration only.
            let w = source.layer(i).await?;
            log::debug!("uploading layer {i}");
            let lin = |name: &str, m: &Matrix| {
                LinearWeight::upload(gpu, &format!("layers.{i}.{name}"), m, options.weight_chunk_rows, native_quant)
            };
            let (wq, wk, wv, wo) = (
                lin("q_proj", &w.q_proj)?,
                lin("k_proj", &w.k_proj)?,
                lin("v_proj", &w.v_proj)?,
                lin("o_proj", &w.o_proj)?,
            );
            let (wg, wu, wd) =
                (lin("gate_proj", &w.gate_proj)?, lin("up_proj", &w.up_proj)?, lin("down_proj", &w.down_proj)?);
            let (cache, attention, delta) = attention_ops(gpu, i, &c, &act, rows, max_context, options.delta.as_ref())?;
            let attn_sub_norm = match &w.attn_sub_norm {
                Some(v) => {
                    Some(RmsNorm::new(gpu, &act.attn, &vector("attn_sub_norm", v)?, &act.attn_sub, rows, q_dim, eps)?)
                }
                None => None,
            };
            let o_in = if attn_sub_norm.is_some() { &act.attn_sub } else { &act.attn };
            let ffn_sub_norm = match &w.ffn_sub_norm {
                Some(v) => {
                    Some(RmsNorm::new(gpu, &act.mlp, &vector("ffn_sub_norm", v)?, &act.mlp_sub, rows, inter, eps)?)
                }
                None => None,
            };
            let down_in = if ffn_sub_norm.is_some() { &act.mlp_sub } else { &act.mlp };
            let activation = match c.activation {
                Activation::Silu => GatedActivation::Silu,
                Activation::Relu2 => GatedActivation::Relu2,
            };
            layers.push(Layer {
                attn_norm: RmsNorm::new(
                    gpu,
                    &act.h,
                    &vector("input_layernorm", &w.input_layernorm)?,
                    &act.x,
                    rows,
                    hidden,
                    eps,
                )?,
                quantize_attn_in: quantize(&act.x, &act.x8_hidden)?,
                q_proj: Linear::new(gpu, &wq, &act.x, act.x8_hidden.as_ref(), &act.q, rows)?,
                k_proj: Linear::new(gpu, &wk, &act.x, act.x8_hidden.as_ref(), &act.k, rows)?,
                v_proj: Linear::new(gpu, &wv, &act.x, act.x8_hidden.as_ref(), &act.v, rows)?,
                rope: Rope::new(
                    gpu,
                    &rope_table,
                    &act.q,
                    &act.k,
                    rows,
                    c.num_attention_heads as u32,
                    c.num_key_value_heads as u32,
                )?,
                attention,
                delta,
                hybrid: false,
                attn_sub_norm,
                quantize_o_in: quantize(o_in, &act.x8_q)?,
                o_proj: Linear::new(gpu, &wo, o_in, act.x8_q.as_ref(), &act.delta, rows)?,
                attn_residual: AddInPlace::new(gpu, &act.h, &act.delta, rows, hidden)?,
                ffn_norm: RmsNorm::new(
                    gpu,
                    &act.h,
                    &vector("post_attention_layernorm", &w.post_attention_layernorm)?,
                    &act.x,
                    rows,
                    hidden,
                    eps,
                )?,
                quantize_ffn_in: quantize(&act.x, &act.x8_hidden)?,
                gate_proj: Linear::new(gpu, &wg, &act.x, act.x8_hidden.as_ref(), &act.gate, rows)?,
                up_proj: Linear::new(gpu, &wu, &act.x, act.x8_hidden.as_ref(), &act.up, rows)?,
                gated: GatedMul::new(gpu, activation, &act.gate, &act.up, &act.mlp, rows, inter)?,
                ffn_sub_norm,
                quantize_down_in: quantize(down_in, &act.x8_mlp)?,
                down_proj: Linear::new(gpu, &wd, down_in, act.x8_mlp.as_ref(), &act.delta, rows)?,
                ffn_residual: AddInPlace::new(gpu, &act.h, &act.delta, rows, hidden)?,
                cache,
                second_pass: None,
            });
            gpu.settle(&format!("the upload of layer {i}")).await?;
            progress(i + 2, upload_steps);
        }

        let final_norm_weight = vector("norm", &source.norm().await?)?;
        let final_in = if options.all_logits { &act.h } else { &act.last };
        let final_norm = RmsNorm::new(gpu, final_in, &final_norm_weight, &act.final_x, logit_rows, hidden, eps)?;
        let lm_head_weight = match source.lm_head().await? {
            Some(m) => LinearWeight::upload(gpu, "lm_head", &m, options.weight_chunk_rows, native_quant)?,
            None => embed,
        };
        let quantize_final_in = quantize(&act.final_x, &act.x8_final)?;
        let lm_head = Linear::new(gpu, &lm_head_weight, &act.final_x, act.x8_final.as_ref(), &act.logits, logit_rows)?;
        let argmax = Argmax::new(gpu, &act.logits, &act.next_token, vocab)?;
        gpu.settle("the upload of the output head").await?;
        progress(upload_steps, upload_steps);
        let delta = options.delta.clone().map(|d| DeltaState::new(d, layers.len()));
        let routing = Routing::plain(layers.len());
        Ok(Model {
            routing,
            delta,
            config: c,
            options,
            max_context,
            act,
            embedding,
            layers,
            final_norm,
            quantize_final_in,
            lm_head,
            argmax,
            _rope_table: rope_table,
            _final_norm_weight: final_norm_weight,
            position: 0,
            logit_rows: 0,
        })
    }

    /// Tokens in the KV cache.
    pub fn position(&self) -> u32 {
        self.position
    }

    /// Forget the sequence (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.position = 0;
        self.logit_rows = 0;
        if let Some(d) = &mut self.delta {
            // The next forward is a new prompt: it fixes the window (and Θ) again.
            d.prompt_len = 0;
            d.window = d.options.window_min;
        }
    }

    /// Run `tokens` through the model after the tokens already cached, in
    /// steps of at most `prefill_chunk` tokens. Afterwards [`Model::logits`]
    /// holds the last step's logits.
    ///
    /// The first forward of a sequence (at position 0) is its prompt:
    /// DeltaLLM fixes its window (and calibrates Θ) from it.
    pub async fn forward_async(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<()> {
        self.check_tokens(tokens)?;
        if self.position == 0 {
            self.start_sequence(gpu, tokens).await?;
        }
        for chunk in tokens.chunks(self.options.prefill_chunk.max(1) as usize) {
            self.step(gpu, chunk)?;
        }
        Ok(())
    }

    /// Blocking form of [`Model::forward_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn forward(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<()> {
        pollster::block_on(self.forward_async(gpu, tokens))
    }

    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(Error::Invalid("forward needs at least one token".into()));
        }
        let end = self.position as u64 + tokens.len() as u64;
        if end > self.max_context as u64 {
            return Err(Error::Invalid(format!(
                "the sequence would be {end} tokens but the context holds {}; shorten the prompt, ask for fewer \
                 tokens, or load the model with a longer context (--context)",
                self.max_context
            )));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::Invalid(format!(
                "token id {bad} is outside the vocabulary of {} tokens",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// DeltaLLM's per-sequence setup before the prompt's first step: the
    /// context-aware window, and Θ per layer when a target sparsity is set
    /// (by running the prompt once with Θ = 0 and reading its keys back).
    ///
    /// With routers, the plan is chosen here too, before Θ is calibrated
    /// (under Θ = 0 when it will be) so that Θ fits the routed layers.
    async fn start_sequence(&mut self, gpu: &Gpu, prompt: &[u32]) -> Result<()> {
        let Some(state) = &mut self.delta else { return self.route_prompt(gpu, prompt).await };
        state.prompt_len = prompt.len() as u32;
        state.window = state.options.window(state.prompt_len);
        let (window, sinks, target) = (state.window, state.options.sinks, state.options.target_sparsity);
        for layer in &mut self.layers {
            for d in layer.deltas_mut() {
                d.hybrid.set_window(gpu, window, sinks)?;
            }
        }
        if target.is_some() {
            for layer in &mut self.layers {
                for d in layer.deltas_mut() {
                    d.set_theta(gpu, 0.0)?;
                }
            }
        }
        self.route_prompt(gpu, prompt).await?;
        let Some(target) = target else { return Ok(()) };
        for chunk in prompt.chunks(self.options.prefill_chunk.max(1) as usize) {
            self.step(gpu, chunk)?;
        }
        let mut thresholds = Vec::with_capacity(self.layers.len());
        for layer in &mut self.layers {
            let kv = &layer.cache;
            let width = (kv.kv_heads * kv.head_dim) as usize;
            let k = if kv.full_keys() {
                delta::keys_from_cache(
                    &gpu.read_async::<f32>(&kv.k).await?,
                    prompt.len(),
                    kv.kv_heads as usize,
                    kv.head_dim as usize,
                    kv.max_seq as usize,
                )
            } else {
                // Only deltas are kept: k̂ at Θ = 0 is k up to f16 rounding.
                let deltas = layer.delta.as_ref().expect("a key ring comes with DeltaLLM");
                let mut k = deltas.cache.read_deltas_async(gpu, prompt.len() as u32).await?;
                for t in 1..prompt.len() {
                    let (done, row) = k.split_at_mut(t * width);
                    for (x, previous) in row[..width].iter_mut().zip(&done[(t - 1) * width..]) {
                        *x += previous;
                    }
                }
                k
            };
            let theta = delta::calibrate_threshold(&k, prompt.len(), width, target);
            for d in layer.deltas_mut() {
                d.set_theta(gpu, theta)?;
            }
            thresholds.push(theta);
        }
        log::info!("DeltaLLM Θ per layer for {:.0} % delta sparsity: {thresholds:?}", 100.0 * target);
        if let Some(state) = &mut self.delta {
            state.thresholds = thresholds;
        }
        self.position = 0;
        self.logit_rows = 0;
        Ok(())
    }

    /// Change DeltaLLM's knobs of a model loaded with [`ModelOptions::delta`]
    /// (the delta caches are allocated at load); starts a new sequence.
    pub fn set_delta_options(&mut self, gpu: &Gpu, options: DeltaOptions) -> Result<()> {
        options.validate()?;
        if self.layers.iter().any(|l| l.delta.is_none()) {
            return Err(Error::Invalid(
                "this model was loaded without DeltaLLM attention; load it with ModelOptions::delta set".into(),
            ));
        }
        let rows = self.options.prefill_chunk;
        let layout = options.key_ring(self.max_context, rows);
        if self.layers.first().is_some_and(|l| (l.cache.sink_rows, l.cache.ring_rows) != layout) {
            // The K cache keeps other rows now: rebuild every layer's attention.
            self.options.delta = Some(options.clone());
            for i in 0..self.layers.len() {
                let (cache, attention, delta) =
                    attention_ops(gpu, i, &self.config, &self.act, rows, self.max_context, Some(&options))?;
                let layer = &mut self.layers[i];
                (layer.cache, layer.attention, layer.delta, layer.second_pass) = (cache, attention, delta, None);
            }
            let repeated: Vec<usize> =
                (0..self.layers.len()).filter(|&i| self.routing.plan.actions[i] == LayerAction::Repeat).collect();
            for i in repeated {
                self.ensure_second_pass(gpu, i)?;
            }
        }
        for layer in &mut self.layers {
            for d in layer.deltas_mut() {
                d.set_theta(gpu, options.threshold)?;
            }
        }
        self.delta = Some(DeltaState::new(options.clone(), self.layers.len()));
        self.options.delta = Some(options);
        self.reset();
        Ok(())
    }

    /// Fix Θ per layer (e.g. the ones a calibrated prompt chose, from
    /// [`Model::delta_thresholds`]) so later sequences skip calibration;
    /// starts a new sequence.
    pub fn set_delta_thresholds(&mut self, gpu: &Gpu, thresholds: &[f32]) -> Result<()> {
        let Some(state) = &mut self.delta else {
            return Err(Error::Invalid("this model was loaded without DeltaLLM attention".into()));
        };
        if thresholds.len() != self.layers.len() || thresholds.iter().any(|t| !t.is_finite() || *t < 0.0) {
            return Err(Error::Invalid(format!(
                "need {} finite, non-negative thresholds (one per layer), got {thresholds:?}",
                self.layers.len()
            )));
        }
        for (layer, &theta) in self.layers.iter_mut().zip(thresholds) {
            for d in layer.deltas_mut() {
                d.set_theta(gpu, theta)?;
            }
        }
        state.options.target_sparsity = None;
        state.thresholds = thresholds.to_vec();
        if let Some(options) = &mut self.options.delta {
            options.target_sparsity = None;
        }
        self.reset();
        Ok(())
    }

    /// Attend densely from now on, keeping the DeltaLLM caches of a model
    /// loaded with [`ModelOptions::delta`] ([`Model::set_delta_options`]
    /// switches it back on); starts a new sequence. A model that kept only
    /// a ring of full keys gets its full K cache back first.
    pub fn use_dense_attention(&mut self, gpu: &Gpu) -> Result<()> {
        if let Some(options) = self.options.delta.clone() {
            // Θ = 0 keeps every full key and attends with the dense kernel.
            let dense = DeltaOptions { threshold: 0.0, target_sparsity: None, ..options };
            self.set_delta_options(gpu, dense)?;
        }
        self.delta = None;
        self.options.delta = None;
        self.reset();
        Ok(())
    }

    /// Post-RoPE keys of layer `layer` for the positions so far,
    /// `[position][kv_heads · head_dim]` (read back from its KV cache; for
    /// tests and statistics).
    pub async fn layer_keys_async(&self, gpu: &Gpu, layer: usize) -> Result<Vec<f32>> {
        let kv = &self.layers.get(layer).ok_or_else(|| Error::Invalid(format!("no layer {layer}")))?.cache;
        if !kv.full_keys() {
            return Err(Error::Invalid(
                "this model keeps keys outside the window only as compressed deltas; load it with \
                 DeltaOptions::keep_full_keys to read every key back"
                    .into(),
            ));
        }
        Ok(delta::keys_from_cache(
            &gpu.read_async::<f32>(&kv.k).await?,
            self.position as usize,
            kv.kv_heads as usize,
            kv.head_dim as usize,
            kv.max_seq as usize,
        ))
    }

    /// Blocking form of [`Model::layer_keys_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn layer_keys(&self, gpu: &Gpu, layer: usize) -> Result<Vec<f32>> {
        pollster::block_on(self.layer_keys_async(gpu, layer))
    }

    /// Θ of each layer for the current sequence (`None` without DeltaLLM).
    pub fn delta_thresholds(&self) -> Option<&[f32]> {
        self.delta.as_ref().map(|d| d.thresholds.as_slice())
    }

    /// The window fixed from the current prompt (`None` without DeltaLLM).
    pub fn delta_window(&self) -> Option<u32> {
        self.delta.as_ref().map(|d| d.window)
    }

    /// DeltaLLM statistics of the sequence so far (DESIGN §2.4), counted on
    /// the CPU from the delta masks read back; `None` without DeltaLLM.
    pub async fn delta_stats_async(&self, gpu: &Gpu) -> Result<Option<DeltaReport>> {
        let Some(state) = &self.delta else { return Ok(None) };
        let positions = self.position;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            // A skipped layer built no delta rows this sequence; a repeated
            // layer counts its first pass only.
            if self.routing.plan.actions[i] == LayerAction::Skip {
                continue;
            }
            let Some(d) = &layer.delta else { continue };
            let cache = &d.cache;
            let nnz = delta::row_nnz(
                &gpu.read_async::<u32>(&cache.rows).await?,
                cache.kv_heads as usize,
                cache.max_seq as usize,
                cache.mask_words() as usize,
                positions as usize,
            );
            let used: u64 = cache.read_used_async(gpu).await?.iter().map(|&w| w as u64).sum();
            let k_cache = delta::k_cache_bytes(&layer.cache, cache, positions, used);
            layers.push(delta::layer_stats(
                i,
                state.thresholds[i],
                &nnz,
                cache.kv_heads as usize,
                cache.head_dim,
                state,
                positions,
                k_cache,
            ));
        }
        Ok(Some(delta::report(state, positions, layers)))
    }

    /// Blocking form of [`Model::delta_stats_async`] for native code.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn delta_stats(&self, gpu: &Gpu) -> Result<Option<DeltaReport>> {
        pollster::block_on(self.delta_stats_async(gpu))
    }

    /// Run every sequence from now on with `plan` (one action per layer;
    /// replaces any routers). Allocates the second-pass caches of repeated
    /// layers that have none yet, and starts a new sequence.
    pub fn set_layer_plan(&mut self, gpu: &Gpu, plan: LayerPlan) -> Result<()> {
        plan.check_layers(self.layers.len())?;
        for (i, &action) in plan.actions.iter().enumerate() {
            if action == LayerAction::Repeat {
                self.ensure_second_pass(gpu, i)?;
            }
        }
        self.routing.source = if plan.is_plain() { PlanSource::Plain } else { PlanSource::Fixed };
        self.routing.plan = plan;
        self.routing.routers = None;
        self.reset();
        Ok(())
    }

    /// Let `routers` choose each prompt's plan (`None`: back to the plain
    /// model); starts a new sequence.
    pub fn set_routers(&mut self, routers: Option<Routers>) -> Result<()> {
        if let Some(r) = &routers {
            if r.layers.len() != self.layers.len() || r.hidden != self.config.hidden_size {
                return Err(Error::Invalid(format!(
                    "the routers are for {} layers of width {}, the model has {} layers of width {}",
                    r.layers.len(),
                    r.hidden,
                    self.layers.len(),
                    self.config.hidden_size
                )));
            }
            self.routing.source = PlanSource::Routers;
        } else {
            self.routing.source = PlanSource::Plain;
        }
        self.routing.plan = LayerPlan::plain(self.layers.len());
        self.routing.routers = routers;
        self.reset();
        Ok(())
    }

    /// The plan of the current sequence (chosen by the routers once its prompt ran).
    pub fn layer_plan(&self) -> &LayerPlan {
        &self.routing.plan
    }

    /// The plan of the current sequence, where it came from and the layers it saves.
    pub fn routing_report(&self) -> RoutingReport {
        self.routing.report()
    }

    fn ensure_second_pass(&mut self, gpu: &Gpu, layer: usize) -> Result<()> {
        if self.layers[layer].second_pass.is_some() {
            return Ok(());
        }
        let act = &self.act;
        let buffers = AttentionBuffers { q: &act.q, k: &act.k, v: &act.v, out: &act.attn };
        let heads = self.config.num_attention_heads as u32;
        let delta = self.options.delta.as_ref();
        let second =
            SecondPass::new(gpu, layer, &self.layers[layer].cache, buffers, self.options.prefill_chunk, heads, delta)?;
        self.layers[layer].second_pass = Some(second);
        Ok(())
    }

    /// Choose the plan of this prompt with the routers (nothing without
    /// them): run the prompt one layer at a time, keeping its residual
    /// stream on the CPU, and let each layer's router read it before the
    /// layer runs. The caches this fills are overwritten by the prefill
    /// that follows (see [`routing`] for why the prompt runs twice).
    async fn route_prompt(&mut self, gpu: &Gpu, prompt: &[u32]) -> Result<()> {
        let Some(routers) = self.routing.routers.take() else { return Ok(()) };
        let result = self.route_prompt_with(gpu, prompt, &routers).await;
        self.routing.routers = Some(routers);
        self.routing.plan = LayerPlan { actions: result? };
        self.position = 0;
        self.logit_rows = 0;
        Ok(())
    }

    async fn route_prompt_with(&mut self, gpu: &Gpu, prompt: &[u32], routers: &Routers) -> Result<Vec<LayerAction>> {
        let hidden = self.config.hidden_size;
        let chunk = self.options.prefill_chunk.max(1) as usize;
        async fn read_rows(gpu: &Gpu, buffer: &GpuBuffer, rows: usize, hidden: usize) -> Result<Vec<f32>> {
            let mut v: Vec<f32> = gpu.read_async(buffer).await?;
            v.truncate(rows * hidden);
            Ok(v)
        }
        let mut h = Vec::with_capacity(prompt.len() * hidden);
        for ids in prompt.chunks(chunk) {
            gpu.write(&self.act.ids, 0, bytemuck::cast_slice(ids));
            self.embedding.set_rows(gpu, ids.len() as u32)?;
            let mut encoder = gpu.encoder("route embedding");
            let dispatches: Vec<&Dispatch> = self.embedding.dispatches().iter().collect();
            gpu.record(&mut encoder, "embedding", &dispatches);
            gpu.submit(encoder)?;
            h.extend(read_rows(gpu, &self.act.h, ids.len(), hidden).await?);
        }
        let mut actions = Vec::with_capacity(self.layers.len());
        for i in 0..self.layers.len() {
            let action = routers.decide(i, &h, prompt.len())?;
            actions.push(action);
            if action == LayerAction::Repeat {
                self.ensure_second_pass(gpu, i)?;
            }
            if action == LayerAction::Skip {
                continue;
            }
            for (c, ids) in prompt.chunks(chunk).enumerate() {
                let (pos0, rows) = (c * chunk, ids.len());
                let range = pos0 * hidden..(pos0 + rows) * hidden;
                gpu.write(&self.act.h, 0, bytemuck::cast_slice(&h[range.clone()]));
                let hybrid = self.delta.as_ref().is_some_and(|d| d.hybrid_at(pos0 as u32));
                let layer = &mut self.layers[i];
                layer.set_step(gpu, rows as u32, pos0 as u32, hybrid)?;
                let mut encoder = gpu.encoder("route layer");
                gpu.record(&mut encoder, "layer", &layer.dispatches(action));
                gpu.submit(encoder)?;
                h[range].copy_from_slice(&read_rows(gpu, &self.act.h, rows, hidden).await?);
            }
        }
        log::info!("routers chose the layer plan {}", LayerPlan { actions: actions.clone() });
        Ok(actions)
    }

    fn step(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<()> {
        let rows = tokens.len() as u32;
        let pos0 = self.position;
        gpu.write(&self.act.ids, 0, bytemuck::cast_slice(tokens));
        self.embedding.set_rows(gpu, rows)?;
        let hybrid = self.delta.as_ref().is_some_and(|d| d.hybrid_at(pos0));
        for layer in &mut self.layers {
            layer.set_step(gpu, rows, pos0, hybrid)?;
        }
        let logit_rows = if self.options.all_logits { rows } else { 1 };
        self.final_norm.set_rows(gpu, logit_rows)?;
        if let Some(q) = &mut self.quantize_final_in {
            q.set_rows(gpu, logit_rows)?;
        }
        self.lm_head.set_rows(gpu, logit_rows)?;
        let vocab = self.config.vocab_size as u32;
        self.argmax.set_range(gpu, (logit_rows - 1) * vocab, vocab)?;

        let mut encoder = gpu.encoder("forward");
        let mut body: Vec<&Dispatch> = self.embedding.dispatches().iter().collect();
        for (layer, &action) in self.layers.iter().zip(&self.routing.plan.actions) {
            body.extend(layer.dispatches(action));
        }
        gpu.record(&mut encoder, "layers", &body);
        if !self.options.all_logits {
            let row_bytes = self.config.hidden_size as u64 * 4;
            encoder.copy_buffer_to_buffer(
                &self.act.h.buffer,
                (rows as u64 - 1) * row_bytes,
                &self.act.last.buffer,
                0,
                row_bytes,
            );
        }
        let mut head: Vec<&Dispatch> = vec![&self.final_norm.dispatch];
        head.extend(self.quantize_final_in.as_ref().map(Quantize::dispatch));
        head.extend(self.lm_head.dispatches());
        head.extend(self.argmax.dispatches());
        gpu.record(&mut encoder, "lm_head", &head);
        gpu.submit(encoder)?;
        self.position += rows;
        self.logit_rows = logit_rows;
        Ok(())
    }

    /// Logits of the last token of the last step.
    pub async fn logits_async(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let mut all = self.step_logits_async(gpu).await?;
        let vocab = self.config.vocab_size;
        Ok(all.split_off(all.len() - vocab))
    }

    /// The highest-logit token of the last position (ties to the lower id),
    /// computed on the GPU during the step.
    pub async fn argmax_async(&self, gpu: &Gpu) -> Result<u32> {
        if self.logit_rows == 0 {
            return Err(Error::Invalid("no logits yet: run forward first".into()));
        }
        Ok(gpu.read_async::<u32>(&self.act.next_token).await?[0])
    }

    /// Logits of every row the last step computed (`[rows][vocab]`; one row
    /// unless `all_logits`).
    pub async fn step_logits_async(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        if self.logit_rows == 0 {
            return Err(Error::Invalid("no logits yet: run forward first".into()));
        }
        let mut v: Vec<f32> = gpu.read_async(&self.act.logits).await?;
        v.truncate(self.logit_rows as usize * self.config.vocab_size);
        Ok(v)
    }

    /// Logits for every position of `tokens` from an empty cache
    /// (teacher forcing); needs `all_logits`.
    pub async fn forward_all_async(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<Vec<f32>> {
        if !self.options.all_logits {
            return Err(Error::Invalid("forward_all needs a model loaded with all_logits".into()));
        }
        self.reset();
        self.check_tokens(tokens)?;
        self.start_sequence(gpu, tokens).await?;
        let mut out = Vec::with_capacity(tokens.len() * self.config.vocab_size);
        for chunk in tokens.chunks(self.options.prefill_chunk.max(1) as usize) {
            self.step(gpu, chunk)?;
            out.extend(self.step_logits_async(gpu).await?);
        }
        Ok(out)
    }
}

/// Blocking forms of the read-back methods, for native code (one
/// implementation each: the async one).
#[cfg(not(target_arch = "wasm32"))]
impl Model {
    /// Blocking form of [`Model::logits_async`].
    pub fn logits(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.logits_async(gpu))
    }

    /// Blocking form of [`Model::argmax_async`].
    pub fn argmax(&self, gpu: &Gpu) -> Result<u32> {
        pollster::block_on(self.argmax_async(gpu))
    }

    /// Blocking form of [`Model::step_logits_async`].
    pub fn step_logits(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        pollster::block_on(self.step_logits_async(gpu))
    }

    /// Blocking form of [`Model::forward_all_async`].
    pub fn forward_all(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<Vec<f32>> {
        pollster::block_on(self.forward_all_async(gpu, tokens))
    }
}
