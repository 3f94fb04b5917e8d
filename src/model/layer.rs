//! A transformer layer on the GPU as an ordered list of named ops, built by
//! an architecture's builder (`super::arch`) through [`LayerBuilder`], which
//! knows how to make each kind of op from the shared activation buffers
//! ([`Activations`], named by [`Act`]). The layer's attention is one slot in
//! that list, filled by the layer's [`AttentionBlock`] (or, for the second
//! pass of a repeated layer, by the block of its own cache).

use super::attention::{AttentionBlock, AttentionBuffers, AttentionShape};
use super::delta::DeltaOptions;
use super::linear::{LinearWeight, QuantizedInput, linear_op, quantize_op};
use crate::error::{Error, Result};
use crate::gpu::{Dispatch, Gpu, GpuBuffer};
use crate::loader::config::{Activation, ModelConfig};
use crate::ops::elementwise::{AddInPlace, GatedActivation, GatedMul};
use crate::ops::quant::Q8Activations;
use crate::ops::rope::{Rope, RopeTable};
use crate::ops::ternary::Int8Activations;
use crate::ops::{Op, OpCost, RmsNorm, Step};
use crate::routing::LayerAction;
use crate::weights::{Matrix, WeightFormats};

/// The activation buffers of a layer, shared by all layers (they run one
/// after another). `rows` is the largest step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Act {
    /// `[rows][hidden]`, the residual stream.
    H,
    /// `[rows][hidden]`, the normed input of a block.
    X,
    /// `[rows][hidden]`, a block's output before the residual add.
    Delta,
    /// `[rows][q_dim]`, `[rows][kv_dim]`, `[rows][kv_dim]`.
    Q,
    K,
    V,
    /// `[rows][q_dim]`, the attention output.
    Attn,
    /// `[rows][q_dim]`, the attention output normed again (BitNet's attn_sub_norm).
    AttnSub,
    /// `[rows][intermediate]` each.
    Gate,
    Up,
    Mlp,
    /// `[rows][intermediate]`, the MLP product normed again (BitNet's ffn_sub_norm).
    MlpSub,
}

/// Every activation buffer of a step.
pub(crate) struct Activations {
    pub ids: GpuBuffer, // u32 [rows]
    h: GpuBuffer,
    x: GpuBuffer,
    delta: GpuBuffer,
    q: GpuBuffer,
    k: GpuBuffer,
    v: GpuBuffer,
    attn: GpuBuffer,
    attn_sub: GpuBuffer,
    gate: GpuBuffer,
    up: GpuBuffer,
    mlp: GpuBuffer,
    mlp_sub: GpuBuffer,
    pub last: GpuBuffer,       // [1][hidden], the last token's residual
    pub final_x: GpuBuffer,    // [logit rows][hidden]
    pub logits: GpuBuffer,     // [logit rows][vocab]
    pub next_token: GpuBuffer, // u32 [1], argmax of the last logits row
    /// Int8 activations by linear input (x, o_proj's, down_proj's), for
    /// ternary models and native GGUF blocks.
    x8_hidden: Option<QuantizedInput>,
    x8_q: Option<QuantizedInput>,
    x8_mlp: Option<QuantizedInput>,
    /// The lm_head's input, when it runs on GGUF blocks.
    pub x8_final: Option<QuantizedInput>,
}

impl Activations {
    /// Buffers for steps of up to `rows` tokens and `logit_rows` logit rows;
    /// int8 copies for the inputs whose linears need them (`formats`).
    pub fn new(
        gpu: &Gpu,
        c: &ModelConfig,
        rows: u32,
        logit_rows: u32,
        formats: &WeightFormats,
        native_quant: bool,
    ) -> Result<Self> {
        let (hidden, q_dim, kv_dim, inter, vocab) = (
            c.hidden_size as u32,
            c.q_dim() as u32,
            c.kv_dim() as u32,
            c.intermediate_size as u32,
            c.vocab_size as u32,
        );
        let f32s = |label: &str, n: u32| gpu.storage(label, n as u64 * 4);
        let x8 = |label: &str, k: u32, blocks: bool| -> Result<Option<QuantizedInput>> {
            Ok(if formats.ternary {
                Some(QuantizedInput::Int8(Int8Activations::new(gpu, label, rows, k)?))
            } else if blocks {
                Some(QuantizedInput::Q8(Q8Activations::new(gpu, label, rows, k)?))
            } else {
                None
            })
        };
        Ok(Activations {
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
            // Q8 blocks for the lm_head's input when it runs natively on GGUF blocks.
            x8_final: match native_quant && formats.output_blocks {
                true => Some(QuantizedInput::Q8(Q8Activations::new(gpu, "x8_final", logit_rows, hidden)?)),
                false => None,
            },
        })
    }

    pub fn get(&self, a: Act) -> &GpuBuffer {
        match a {
            Act::H => &self.h,
            Act::X => &self.x,
            Act::Delta => &self.delta,
            Act::Q => &self.q,
            Act::K => &self.k,
            Act::V => &self.v,
            Act::Attn => &self.attn,
            Act::AttnSub => &self.attn_sub,
            Act::Gate => &self.gate,
            Act::Up => &self.up,
            Act::Mlp => &self.mlp,
            Act::MlpSub => &self.mlp_sub,
        }
    }

    /// The int8 copy of `a` that the linears reading it use, if they need one.
    fn quantized(&self, a: Act) -> Option<&QuantizedInput> {
        match a {
            Act::X => self.x8_hidden.as_ref(),
            Act::Attn | Act::AttnSub => self.x8_q.as_ref(),
            Act::Mlp | Act::MlpSub => self.x8_mlp.as_ref(),
            _ => None,
        }
    }

    /// The buffers attention reads and writes.
    pub fn attention(&self) -> AttentionBuffers<'_> {
        AttentionBuffers { q: &self.q, k: &self.k, v: &self.v, out: &self.attn }
    }
}

enum Slot {
    Op(Box<dyn Op>),
    /// Where the pass's attention block runs.
    Attention,
}

/// One entry of a layer's op list.
struct LayerOp {
    /// The checkpoint's name for it where it has one (`q_proj`, `input_layernorm`).
    name: String,
    slot: Slot,
}

pub(crate) struct Layer {
    ops: Vec<LayerOp>,
    pub attention: AttentionBlock,
    /// The second pass's block, once a plan has repeated this layer.
    pub repeat: Option<AttentionBlock>,
}

impl Layer {
    /// Prepare `step` (parameter writes only); `hybrid`: whether DeltaLLM's
    /// hybrid attention may run in this step.
    pub fn set_step(&mut self, gpu: &Gpu, step: Step, hybrid: bool) -> Result<()> {
        for op in &mut self.ops {
            if let Slot::Op(op) = &mut op.slot {
                op.set_step(gpu, step)?;
            }
        }
        for block in self.blocks_mut() {
            block.set_step(gpu, step, hybrid)?;
        }
        Ok(())
    }

    /// The attention blocks of both passes.
    pub fn blocks_mut(&mut self) -> impl Iterator<Item = &mut AttentionBlock> {
        std::iter::once(&mut self.attention).chain(self.repeat.as_mut())
    }

    /// The layer's dispatches for `action` of a plan: none for a skip, the
    /// block twice for a repeat (the second time attending through its own
    /// cache).
    pub fn dispatches<'a>(&'a self, action: LayerAction, out: &mut Vec<&'a Dispatch>) {
        match action {
            LayerAction::Skip => {}
            LayerAction::Execute => self.pass(&self.attention, out),
            LayerAction::Repeat => {
                self.pass(&self.attention, out);
                // Model::set_layer_plan and routing build the block before a repeat runs.
                let second = self.repeat.as_ref().expect("a repeated layer has its second attention block");
                self.pass(second, out);
            }
        }
    }

    /// What `step` costs the layer under `action`, pass by pass as
    /// [`Layer::dispatches`] records them (a repeat reads its weights twice).
    pub fn cost(&self, action: LayerAction, step: Step) -> OpCost {
        let pass = |attention: &AttentionBlock| -> OpCost {
            self.ops
                .iter()
                .map(|op| match &op.slot {
                    Slot::Op(o) => o.cost(step),
                    Slot::Attention => attention.cost(step),
                })
                .sum()
        };
        match action {
            LayerAction::Skip => OpCost::default(),
            LayerAction::Execute => pass(&self.attention),
            LayerAction::Repeat => {
                let second = self.repeat.as_ref().expect("a repeated layer has its second attention block");
                let mut cost = pass(&self.attention);
                cost += pass(second);
                cost
            }
        }
    }

    fn pass<'a>(&'a self, attention: &'a AttentionBlock, out: &mut Vec<&'a Dispatch>) {
        for op in &self.ops {
            match &op.slot {
                Slot::Op(o) => o.dispatches(out),
                Slot::Attention => attention.dispatches(out),
            }
        }
    }

    /// The names of the layer's ops in forward order (`attention` for the block).
    pub fn op_names(&self) -> Vec<&str> {
        self.ops.iter().map(|op| op.name.as_str()).collect()
    }
}

/// Builds one layer's ops in the order an architecture lists them.
pub(crate) struct LayerBuilder<'a> {
    pub gpu: &'a Gpu,
    pub config: &'a ModelConfig,
    act: &'a Activations,
    rope_table: &'a RopeTable,
    /// `layers.{i}`
    label: String,
    rows: u32,
    max_context: u32,
    chunk_rows: Option<u32>,
    native_quant: bool,
    delta: Option<(&'a DeltaOptions, f32)>,
    ops: Vec<LayerOp>,
    attention: Option<AttentionBlock>,
}

impl<'a> LayerBuilder<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &'a Gpu,
        config: &'a ModelConfig,
        act: &'a Activations,
        rope_table: &'a RopeTable,
        layer: usize,
        rows: u32,
        max_context: u32,
        chunk_rows: Option<u32>,
        native_quant: bool,
        delta: Option<(&'a DeltaOptions, f32)>,
    ) -> Self {
        LayerBuilder {
            gpu,
            config,
            act,
            rope_table,
            label: format!("layers.{layer}"),
            rows,
            max_context,
            chunk_rows,
            native_quant,
            delta,
            ops: Vec::new(),
            attention: None,
        }
    }

    fn push(&mut self, name: &str, op: Box<dyn Op>) {
        self.ops.push(LayerOp { name: name.to_string(), slot: Slot::Op(op) });
    }

    fn width(&self, a: Act) -> u32 {
        let c = self.config;
        (match a {
            Act::H | Act::X | Act::Delta => c.hidden_size,
            Act::Q | Act::Attn | Act::AttnSub => c.q_dim(),
            Act::K | Act::V => c.kv_dim(),
            Act::Gate | Act::Up | Act::Mlp | Act::MlpSub => c.intermediate_size,
        }) as u32
    }

    /// `out = RMSNorm(input) · weight`.
    pub fn rms_norm(&mut self, name: &str, input: Act, weight: &[f32], out: Act) -> Result<()> {
        let w = self.gpu.storage_from(name, weight)?;
        let (x, y) = (self.act.get(input), self.act.get(out));
        let op = RmsNorm::new(self.gpu, x, &w, y, self.rows, self.width(input), self.config.rms_norm_eps)?;
        self.push(name, Box::new(op));
        Ok(())
    }

    /// Linears reading one `input`: `out = input · weightᵀ` for each
    /// `(name, weight, out)`. When their formats read int8 activations, the
    /// input is quantized once, before the first of them.
    pub fn linears(&mut self, input: Act, linears: &[(&str, &Matrix, Act)]) -> Result<()> {
        let x8 = self.act.quantized(input);
        if let Some(x8) = x8 {
            let name = format!("quantize {}", linears.first().map_or("", |l| l.0));
            self.push(&name, quantize_op(self.gpu, self.act.get(input), x8)?);
        }
        for &(name, matrix, out) in linears {
            let label = format!("{}.{name}", self.label);
            let weight = LinearWeight::upload(self.gpu, &label, matrix, self.chunk_rows, self.native_quant)?;
            let op = linear_op(self.gpu, &weight, self.act.get(input), x8, self.act.get(out), self.rows)?;
            self.push(name, op);
        }
        Ok(())
    }

    /// Rotary position embedding of the step's queries and keys, in place.
    pub fn rope(&mut self) -> Result<()> {
        let c = self.config;
        let (heads, kv_heads) = (c.num_attention_heads as u32, c.num_key_value_heads as u32);
        let op = Rope::new(
            self.gpu,
            self.rope_table,
            self.act.get(Act::Q),
            self.act.get(Act::K),
            self.rows,
            heads,
            kv_heads,
        )?;
        self.push("rope", Box::new(op));
        Ok(())
    }

    /// Causal GQA attention of `Q` against the cache after appending `K`, `V`
    /// (DeltaLLM's when it is on), into `Attn`.
    pub fn attention(&mut self) -> Result<()> {
        if self.attention.is_some() {
            return Err(Error::Invalid(format!("{}: a layer has one attention block", self.label)));
        }
        let c = self.config;
        let shape = AttentionShape {
            heads: c.num_attention_heads as u32,
            kv_heads: c.num_key_value_heads as u32,
            head_dim: c.head_dim as u32,
            rows: self.rows,
            max_context: self.max_context,
        };
        self.attention = Some(AttentionBlock::new(self.gpu, &self.label, shape, self.act.attention(), self.delta)?);
        self.ops.push(LayerOp { name: "attention".into(), slot: Slot::Attention });
        Ok(())
    }

    /// `Mlp = act(Gate) · Up`, with the model's activation.
    pub fn gated(&mut self, name: &str) -> Result<()> {
        let activation = match self.config.activation {
            Activation::Silu => GatedActivation::Silu,
            Activation::Relu2 => GatedActivation::Relu2,
        };
        let (gate, up, mlp) = (self.act.get(Act::Gate), self.act.get(Act::Up), self.act.get(Act::Mlp));
        let op = GatedMul::new(self.gpu, activation, gate, up, mlp, self.rows, self.width(Act::Mlp))?;
        self.push(name, Box::new(op));
        Ok(())
    }

    /// `H += Delta`.
    pub fn residual(&mut self, name: &str) -> Result<()> {
        let (h, delta) = (self.act.get(Act::H), self.act.get(Act::Delta));
        let op = AddInPlace::new(self.gpu, h, delta, self.rows, self.width(Act::H))?;
        self.push(name, Box::new(op));
        Ok(())
    }

    pub fn finish(self) -> Result<Layer> {
        let attention = self
            .attention
            .ok_or_else(|| Error::Invalid(format!("{}: the architecture built no attention block", self.label)))?;
        Ok(Layer { ops: self.ops, attention, repeat: None })
    }
}
