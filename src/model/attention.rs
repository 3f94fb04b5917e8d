//! A layer's attention block: its K/V cache, the dense attention ops bound
//! to it (append the step's keys and values, attend), and DeltaLLM's ops
//! when DeltaLLM is on (delta keys into the compressed K cache, hybrid
//! attention). One type serves a layer's own pass and the second pass of a
//! layer a plan repeats (`crate::routing`), which attends through a cache
//! of its own.
//!
//! Per step the block runs `append → attend`, or with DeltaLLM
//! `append → delta keys → hybrid attention` (or `→ attend` where dense
//! attention is asked for and every full key is kept).

use super::delta::{DeltaOptions, LayerDelta};
use crate::error::Result;
use crate::gpu::{Dispatch, Gpu, GpuBuffer};
use crate::ops::attention::{Attention, KvCache};
use crate::ops::{OpCost, Step};

/// The activations attention reads and writes.
#[derive(Clone, Copy)]
pub(crate) struct AttentionBuffers<'a> {
    /// Post-RoPE queries `[rows][heads · head_dim]`.
    pub q: &'a GpuBuffer,
    /// The step's post-RoPE keys and values `[rows][kv_heads · head_dim]`.
    pub k: &'a GpuBuffer,
    pub v: &'a GpuBuffer,
    /// The attention output `[rows][heads · head_dim]`.
    pub out: &'a GpuBuffer,
}

/// The sizes an attention block is built for.
#[derive(Clone, Copy)]
pub(crate) struct AttentionShape {
    pub heads: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Rows of the largest step.
    pub rows: u32,
    /// KV-cache positions.
    pub max_context: u32,
}

pub(crate) struct AttentionBlock {
    pub cache: KvCache,
    attention: Attention,
    pub delta: Option<LayerDelta>,
    /// This step attends through `delta`'s hybrid attention.
    hybrid: bool,
}

impl AttentionBlock {
    /// A layer's block `label` (`layers.{i}`): the full K cache, or
    /// DeltaLLM's key ring when `delta` never attends densely (see
    /// [`DeltaOptions::key_ring`]), with the delta ops bound to it and
    /// building keys with Θ = `theta`.
    pub fn new(
        gpu: &Gpu,
        label: &str,
        shape: AttentionShape,
        buffers: AttentionBuffers,
        delta: Option<(&DeltaOptions, f32)>,
    ) -> Result<Self> {
        let (sink_rows, ring_rows) =
            delta.map_or((0, shape.max_context), |(d, _)| d.key_ring(shape.max_context, shape.rows));
        let cache = KvCache::with_key_ring(
            gpu,
            &format!("{label}.kv"),
            shape.kv_heads,
            shape.head_dim,
            shape.max_context,
            sink_rows,
            ring_rows,
        )?;
        Self::over(gpu, &format!("{label}.delta"), cache, shape.rows, shape.heads, buffers, delta)
    }

    /// The second pass of a repeated layer: a cache laid out like `first`'s,
    /// and ops of its own bound to it.
    pub fn repeat_of(
        gpu: &Gpu,
        label: &str,
        first: &AttentionBlock,
        rows: u32,
        heads: u32,
        buffers: AttentionBuffers,
        delta: Option<(&DeltaOptions, f32)>,
    ) -> Result<Self> {
        let cache = KvCache::like(gpu, &format!("{label}.kv.repeat"), &first.cache)?;
        let block = Self::over(gpu, &format!("{label}.delta.repeat"), cache, rows, heads, buffers, delta)?;
        gpu.take_error()?;
        Ok(block)
    }

    fn over(
        gpu: &Gpu,
        delta_label: &str,
        cache: KvCache,
        rows: u32,
        heads: u32,
        b: AttentionBuffers,
        delta: Option<(&DeltaOptions, f32)>,
    ) -> Result<Self> {
        let attention = Attention::new(gpu, &cache, b.q, b.k, b.v, b.out, rows, heads)?;
        let delta = match delta {
            Some((options, theta)) => {
                Some(LayerDelta::new(gpu, delta_label, &cache, b.q, b.k, b.out, rows, heads, options, theta)?)
            }
            None => None,
        };
        Ok(AttentionBlock { cache, attention, delta, hybrid: false })
    }

    /// Prepare `step`. With DeltaLLM, `hybrid` says whether this step wants
    /// hybrid attention (the stage allows it and Θ > 0); a key ring leaves
    /// only the hybrid path, and Θ = 0 with full keys is dense attention.
    pub fn set_step(&mut self, gpu: &Gpu, step: Step, hybrid: bool) -> Result<()> {
        self.attention.set_step(gpu, step.rows, step.pos0)?;
        if let Some(delta) = &mut self.delta {
            delta.set_step(gpu, step.rows, step.pos0)?;
        }
        self.hybrid = self.delta.is_some() && (!self.attention.can_attend() || hybrid);
        Ok(())
    }

    /// What `step` costs the block: its dispatches, and the K/V cache bytes
    /// attention reads, each once, at the context after the step
    /// (`pos0 + rows` positions of f32 keys and values). With DeltaLLM this
    /// is the same dense figure: an upper bound of what hybrid attention
    /// reads from its delta rows and key ring, whose sparsity a step does
    /// not know in advance.
    pub fn cost(&self, step: Step) -> OpCost {
        let mut list = Vec::new();
        self.dispatches(&mut list);
        let position_bytes = self.cache.v.size / self.cache.max_seq as u64;
        let context = (step.pos0 + step.rows).min(self.cache.max_seq) as u64;
        OpCost { dispatches: list.len() as u32, weight_bytes: 0, kv_bytes: 2 * position_bytes * context }
    }

    /// The step's dispatches: append, then (delta keys and) dense or hybrid attention.
    pub fn dispatches<'a>(&'a self, out: &mut Vec<&'a Dispatch>) {
        out.push(&self.attention.append);
        match &self.delta {
            Some(delta) => {
                out.push(&delta.keys.build);
                out.push(if self.hybrid { &delta.hybrid.attend } else { &self.attention.attend });
            }
            None => out.push(&self.attention.attend),
        }
    }
}
