//! The transformer on the GPU: weights uploaded once, every op (pipelines,
//! parameter buffers, bind groups) built at load, and a forward step that
//! records the whole network into one encoder with one submit.
//!
//! A step is `embedding → layers → last row → final norm → lm_head → argmax`.
//! Each layer is an ordered list of ops that its architecture's builder
//! lists in forward order (`arch/llama.rs`, `arch/bitnet.rs`, through
//! [`layer::LayerBuilder`]); every op has the one interface
//! [`crate::ops::Op`]. The logits are for the last token (or every token
//! when [`ModelOptions::all_logits`] is set).
//!
//! A sequence runs in named phases ([`sequence`]): with routers, the prompt
//! first runs layer by layer to choose the [`LayerPlan`]; with a DeltaLLM
//! target sparsity, a Θ = 0 prefill calibrates Θ per layer ([`delta`]);
//! then prefill and decode. [`Model::sequence_report`] tells which ran.
//!
//! Where the rest lives: `load.rs` builds the model from a
//! [`WeightSource`]; `attention.rs` is a layer's KV cache with its dense and
//! DeltaLLM attention ops; `linear.rs` chooses a linear's op from its
//! weight format; `cost.rs` sums what a step costs (dispatches, bytes
//! read) from its ops; `delta/` holds DeltaLLM's options, Θ control and
//! statistics.

mod arch;
mod attention;
mod cost;
pub mod delta;
mod layer;
mod linear;
mod load;
pub mod sequence;

pub use crate::routing::{LayerAction, LayerPlan, PlanSource, Routers, RoutingReport};
pub use cost::StepCost;
pub use delta::{DeltaOptions, DeltaReport, DeltaStage};
pub use sequence::{Phase, PhaseRun, SequenceReport};

use delta::DeltaState;
use layer::{Activations, Layer};

use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu};
use crate::loader::config::ModelConfig;
use crate::ops::rope::RopeTable;
use crate::ops::sampling::Argmax;
use crate::ops::{Op, Step};
use crate::routing::Routing;
use crate::weights::ModelWeights;

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
    /// DeltaLLM attention (docs/DESIGN.md §2); `None` = dense attention.
    /// After load this is the model's one copy of the options (Θ per layer
    /// is [`Model::delta_thresholds`]).
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

/// A model ready to run on one GPU.
pub struct Model {
    pub config: ModelConfig,
    pub options: ModelOptions,
    /// KV-cache length in tokens.
    pub max_context: u32,
    act: Activations,
    embedding: Box<dyn Op>,
    layers: Vec<Layer>,
    /// Final norm, (its int8 quantize,) lm_head, over the logit rows.
    head: Vec<Box<dyn Op>>,
    /// Greedy pick on the GPU, so greedy decoding reads back 4 bytes, not the logits.
    argmax: Argmax,
    _rope_table: RopeTable,
    /// Tokens already in the KV cache.
    position: u32,
    /// Rows of `logits` the last step wrote.
    logit_rows: u32,
    delta: Option<DeltaState>,
    /// The layer plan of the sequence, and the routers choosing it.
    routing: Routing,
    /// The phases the current sequence ran.
    sequence: SequenceReport,
    /// Compute dispatches the last step recorded.
    last_step_dispatches: u32,
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

    /// Tokens in the KV cache.
    pub fn position(&self) -> u32 {
        self.position
    }

    /// The names of layer `layer`'s ops in forward order, as its
    /// architecture lists them (`attention` is the attention block).
    pub fn layer_ops(&self, layer: usize) -> Option<Vec<&str>> {
        self.layers.get(layer).map(Layer::op_names)
    }

    /// Whether layer `layer`'s step starting at `pos0` may use hybrid
    /// attention: DeltaLLM is on, its stage covers the step, and Θ > 0.
    fn hybrid_at(&self, layer: usize, pos0: u32) -> bool {
        match (&self.delta, &self.options.delta) {
            (Some(state), Some(options)) => state.hybrid_at(options, pos0) && state.thresholds[layer] > 0.0,
            _ => false,
        }
    }

    /// Prepare layer `i` for `step`.
    fn set_layer_step(&mut self, gpu: &Gpu, i: usize, step: Step) -> Result<()> {
        let hybrid = self.hybrid_at(i, step.pos0);
        self.layers[i].set_step(gpu, step, hybrid)
    }

    /// One forward step of `tokens` after the cached ones: one encoder, one submit.
    fn step(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<()> {
        let step = Step { rows: tokens.len() as u32, pos0: self.position };
        gpu.write(&self.act.ids, 0, bytemuck::cast_slice(tokens));
        self.embedding.set_step(gpu, step)?;
        for i in 0..self.layers.len() {
            self.set_layer_step(gpu, i, step)?;
        }
        let logit_rows = if self.options.all_logits { step.rows } else { 1 };
        for op in &mut self.head {
            op.set_step(gpu, Step { rows: logit_rows, pos0: step.pos0 })?;
        }
        let vocab = self.config.vocab_size as u32;
        self.argmax.set_range(gpu, (logit_rows - 1) * vocab, vocab)?;

        let mut encoder = gpu.encoder("forward");
        let mut body: Vec<&Dispatch> = Vec::new();
        self.embedding.dispatches(&mut body);
        for (layer, &action) in self.layers.iter().zip(&self.routing.plan.actions) {
            layer.dispatches(action, &mut body);
        }
        gpu.record(&mut encoder, "layers", &body);
        if !self.options.all_logits {
            let row_bytes = self.config.hidden_size as u64 * 4;
            encoder.copy_buffer_to_buffer(
                &self.act.get(layer::Act::H).buffer,
                (step.rows as u64 - 1) * row_bytes,
                &self.act.last.buffer,
                0,
                row_bytes,
            );
        }
        let mut head: Vec<&Dispatch> = Vec::new();
        for op in &self.head {
            op.dispatches(&mut head);
        }
        head.extend(self.argmax.dispatches());
        gpu.record(&mut encoder, "lm_head", &head);
        gpu.submit(encoder)?;
        self.last_step_dispatches = (body.len() + head.len()) as u32;
        self.position += step.rows;
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

    /// Blocking form of [`Model::forward_async`].
    pub fn forward(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<()> {
        pollster::block_on(self.forward_async(gpu, tokens))
    }

    /// Blocking form of [`Model::forward_all_async`].
    pub fn forward_all(&mut self, gpu: &Gpu, tokens: &[u32]) -> Result<Vec<f32>> {
        pollster::block_on(self.forward_all_async(gpu, tokens))
    }
}
