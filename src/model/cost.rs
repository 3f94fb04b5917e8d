//! What a step costs on the GPU, summed from its ops ([`crate::ops::Op::cost`]):
//! the compute dispatches [`Model::step`] records and the bytes it must
//! read. On a CPU adapter the wall clock says little about a GPU, but these
//! two do: dispatches are the fixed cost per step (launch and barrier
//! each), bytes the bandwidth cost of a memory-bound decode.

use super::Model;
use crate::ops::{OpCost, Step};

/// The cost of one step for the current layer plan and options.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepCost {
    /// Compute dispatches: embedding, each layer's ops per its
    /// [`super::LayerAction`], head, argmax (one per weight chunk).
    pub dispatches: u32,
    /// Weight bytes read, each once, as the GPU buffers hold them; an
    /// embedding gather reads only its rows. Activations are left out.
    pub weight_bytes: u64,
    /// Of `weight_bytes`, the output head's (final norm and lm_head).
    pub head_weight_bytes: u64,
    /// K/V cache bytes attention reads (dense f32 keys and values at the
    /// step's context, also under DeltaLLM; see `AttentionBlock::cost`).
    pub kv_bytes: u64,
}

impl StepCost {
    /// Every byte the step reads (weights and K/V cache).
    pub fn bytes(&self) -> u64 {
        self.weight_bytes + self.kv_bytes
    }
}

impl Model {
    /// The cost of a step of `rows` tokens at positions `pos0 ..`, as
    /// [`Model::step`] would record it now. `rows` is at most
    /// [`super::ModelOptions::prefill_chunk`] (longer prompts run as several steps).
    pub fn step_cost(&self, rows: u32, pos0: u32) -> StepCost {
        let step = Step { rows, pos0 };
        let mut body = self.embedding.cost(step);
        for (layer, &action) in self.layers.iter().zip(&self.routing.plan.actions) {
            body += layer.cost(action, step);
        }
        let logit_rows = if self.options.all_logits { rows } else { 1 };
        let head: OpCost = self.head.iter().map(|op| op.cost(Step { rows: logit_rows, pos0 })).sum();
        StepCost {
            dispatches: body.dispatches + head.dispatches + self.argmax.dispatches().len() as u32,
            weight_bytes: body.weight_bytes + head.weight_bytes,
            head_weight_bytes: head.weight_bytes,
            kv_bytes: body.kv_bytes + head.kv_bytes,
        }
    }

    /// One decode step: one token after `context` cached ones.
    pub fn decode_cost(&self, context: u32) -> StepCost {
        self.step_cost(1, context)
    }

    /// A prefill step of `rows` tokens from an empty cache.
    pub fn prefill_cost(&self, rows: u32) -> StepCost {
        self.step_cost(rows, 0)
    }

    /// The compute dispatches the last [`Model::step`] recorded (0 before
    /// the first), for checking [`Model::step_cost`] against.
    pub fn last_step_dispatches(&self) -> u32 {
        self.last_step_dispatches
    }
}
