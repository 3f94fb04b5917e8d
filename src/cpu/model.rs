//! The whole-model CPU reference: the forward pass of docs/DESIGN.md §3 (BitNet
//! b1.58) and §4 (Llama) over a full token sequence, written as plainly as
//! the math so the GPU model can be checked against it, layer by layer if
//! need be. Slow by design; tests use tiny models.
//!
//! [`forward_all_delta`] is the same pass with DeltaLLM's hybrid attention
//! (docs/DESIGN.md §2): per layer, the delta rule over the post-RoPE keys and k̂
//! substituted for keys outside the window and sinks.
//!
//! [`forward_all_planned`] and [`forward_all_routed`] apply a layer plan
//! (Dr.LLM routing, [`crate::routing`]): a skipped layer is the
//! identity, a repeated one runs twice, its second pass attending over the
//! keys and values of that second pass only.

use crate::cpu::{attention, delta, elementwise, matmul, quant, rmsnorm, rope, ternary};
use crate::loader::config::{Activation, ModelConfig};
use crate::routing::{LayerAction, LayerPlan, Routers};
use crate::weights::{LayerWeights, Matrix, MatrixData, ModelWeights};

/// `y = x · Wᵀ` for `tokens` rows of x: BitLinear for ternary weights
/// (per-token int8 activations), llama.cpp's Q8 block arithmetic for GGUF
/// blocks (as the GPU's native path), f32 matmul otherwise.
pub fn linear(w: &Matrix, x: &[f32], tokens: usize) -> Vec<f32> {
    match &w.data {
        MatrixData::Ternary { values, scale, convention } => {
            ternary::bitlinear(x, values, tokens, w.rows, w.cols, *scale, *convention)
        }
        MatrixData::Quantized { format, blocks } => {
            quant::linear_q(*format, blocks, w.rows, w.cols, x).expect("quantized matrix blocks were checked at load")
        }
        _ => matmul::matmul(&w.to_f32(), x, tokens, w.rows, w.cols),
    }
}

/// Logits `[tokens.len()][vocab]` for every position of `tokens`, from an empty cache.
pub fn forward_all(weights: &ModelWeights, tokens: &[u32]) -> Vec<f32> {
    forward_all_planned(weights, tokens, &LayerPlan::plain(weights.layers.len()))
}

/// [`forward_all`] with every layer skipped, executed or repeated as `plan` says.
pub fn forward_all_planned(weights: &ModelWeights, tokens: &[u32], plan: &LayerPlan) -> Vec<f32> {
    assert_eq!(plan.len(), weights.layers.len(), "one action per layer");
    forward_with_attention(weights, tokens, |layer, _| plan.actions[layer], dense_attention(weights, tokens.len()))
}

/// The plan `routers` choose for `tokens` (each layer's router reading the
/// residual stream just before that layer) and the logits with that plan.
pub fn forward_all_routed(weights: &ModelWeights, tokens: &[u32], routers: &Routers) -> (LayerPlan, Vec<f32>) {
    let mut actions = Vec::new();
    let t = tokens.len();
    let logits = forward_with_attention(
        weights,
        tokens,
        |layer, h| {
            let action = routers.decide(layer, h, t).expect("routers sized for the model");
            actions.push(action);
            action
        },
        dense_attention(weights, t),
    );
    (LayerPlan { actions }, logits)
}

fn dense_attention(weights: &ModelWeights, t: usize) -> impl FnMut(usize, &[f32], &[f32], &[f32]) -> Vec<f32> + '_ {
    let c = &weights.config;
    move |_, q, k, v| {
        attention::causal_attention(q, k, v, t, 0, c.num_attention_heads, c.num_key_value_heads, c.head_dim)
    }
}

/// DeltaLLM settings of [`forward_all_delta`], already resolved (no
/// calibration, no context-aware rule: the window is given).
#[derive(Clone, Debug)]
pub struct DeltaReference {
    /// Θ of each layer.
    pub thresholds: Vec<f32>,
    pub window: usize,
    pub sinks: usize,
    /// Positions from here on attend densely (DeltaLLM in prefill only: the
    /// prompt length); `usize::MAX` for hybrid attention everywhere. Their
    /// keys still go through the delta rule.
    pub dense_from: usize,
}

/// [`forward_all`] with hybrid attention: each layer's keys become delta
/// rows under its Θ, and queries score k̂ outside the window and sinks.
pub fn forward_all_delta(weights: &ModelWeights, tokens: &[u32], settings: &DeltaReference) -> Vec<f32> {
    let c = &weights.config;
    assert_eq!(settings.thresholds.len(), weights.layers.len(), "one threshold per layer");
    let (heads, kv_heads, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let t = tokens.len();
    forward_with_attention(
        weights,
        tokens,
        |_, _| LayerAction::Execute,
        |layer, q, k, v| {
            let (_, k_hat, _) = delta::delta_keys(k, t, kv_heads, hd, settings.thresholds[layer], None);
            let hybrid_rows = settings.dense_from.min(t);
            let mut out = delta::hybrid_attention(
                &q[..hybrid_rows * c.q_dim()],
                &k[..hybrid_rows * c.kv_dim()],
                &k_hat[..hybrid_rows * c.kv_dim()],
                &v[..hybrid_rows * c.kv_dim()],
                hybrid_rows,
                0,
                heads,
                kv_heads,
                hd,
                settings.window,
                settings.sinks,
            );
            if hybrid_rows < t {
                let rows = t - hybrid_rows;
                let q_rest = &q[hybrid_rows * c.q_dim()..];
                out.extend(attention::causal_attention(q_rest, k, v, rows, hybrid_rows, heads, kv_heads, hd));
            }
            out
        },
    )
}

/// The forward pass with `choose(layer, h)` picking each layer's action
/// from the residual stream `h` `[tokens][hidden]` before it, and
/// `attend(layer, q, k, v)` (post-RoPE q, k; all `[tokens][…]`) computing
/// a pass's attention output `[tokens][q_dim]` from that pass's keys.
fn forward_with_attention(
    weights: &ModelWeights,
    tokens: &[u32],
    mut choose: impl FnMut(usize, &[f32]) -> LayerAction,
    mut attend: impl FnMut(usize, &[f32], &[f32], &[f32]) -> Vec<f32>,
) -> Vec<f32> {
    let c: &ModelConfig = &weights.config;
    let t = tokens.len();
    let (hidden, eps) = (c.hidden_size, c.rms_norm_eps);
    let table = crate::format::rope::rope_table(&weights.rope_inv_freq, t.max(1));
    let embed = weights.embed_tokens.to_f32();
    let mut h: Vec<f32> =
        tokens.iter().flat_map(|&id| embed[id as usize * hidden..(id as usize + 1) * hidden].to_vec()).collect();

    for (index, layer) in weights.layers.iter().enumerate() {
        for _ in 0..choose(index, &h).passes() {
            block(c, layer, &table, &mut h, t, |q, k, v| attend(index, q, k, v));
        }
    }

    let x = rmsnorm(&h, &weights.norm, hidden, eps);
    // The output projection is never ternary (docs/DESIGN.md §3); GGUF blocks run as llama.cpp runs them.
    let out = weights.output();
    if out.is_quantized() { linear(out, &x, t) } else { matmul::matmul(&out.to_f32(), &x, t, out.rows, out.cols) }
}

/// One transformer block over `t` tokens, updating the residual stream `h` in place.
fn block(
    c: &ModelConfig,
    layer: &LayerWeights,
    table: &[f32],
    h: &mut [f32],
    t: usize,
    attend: impl FnOnce(&[f32], &[f32], &[f32]) -> Vec<f32>,
) {
    let (hidden, hd, eps) = (c.hidden_size, c.head_dim, c.rms_norm_eps);
    // Attention block.
    let x = rmsnorm(h, &layer.input_layernorm, hidden, eps);
    let mut q = linear(&layer.q_proj, &x, t);
    let mut k = linear(&layer.k_proj, &x, t);
    let v = linear(&layer.v_proj, &x, t);
    rope::apply_rope(&mut q, t, c.num_attention_heads, hd, 0, table);
    rope::apply_rope(&mut k, t, c.num_key_value_heads, hd, 0, table);
    let mut a = attend(&q, &k, &v);
    if let Some(w) = &layer.attn_sub_norm {
        a = rmsnorm(&a, w, c.q_dim(), eps);
    }
    elementwise::add_inplace(h, &linear(&layer.o_proj, &a, t));

    // Feed-forward block.
    let x = rmsnorm(h, &layer.post_attention_layernorm, hidden, eps);
    let gate = linear(&layer.gate_proj, &x, t);
    let up = linear(&layer.up_proj, &x, t);
    let mut m = match c.activation {
        Activation::Relu2 => elementwise::relu2_mul(&gate, &up),
        Activation::Silu => elementwise::silu_mul(&gate, &up),
    };
    if let Some(w) = &layer.ffn_sub_norm {
        m = rmsnorm(&m, w, c.intermediate_size, eps);
    }
    elementwise::add_inplace(h, &linear(&layer.down_proj, &m, t));
}
