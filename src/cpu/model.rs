//! The whole-model CPU reference: the forward pass of DESIGN §3 (BitNet
//! b1.58) and §4 (Llama) over a full token sequence, written as plainly as
//! the math so the GPU model can be checked against it, layer by layer if
//! need be. Slow by design; tests use tiny models.

use crate::cpu::{attention, elementwise, matmul, quant, rmsnorm, rope, ternary};
use crate::loader::config::{Activation, ModelConfig};
use crate::model::weights::{Matrix, MatrixData, ModelWeights};

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
    let c: &ModelConfig = &weights.config;
    let t = tokens.len();
    let (hidden, hd, eps) = (c.hidden_size, c.head_dim, c.rms_norm_eps);
    let table = rope::rope_table(&weights.rope_inv_freq, t.max(1));
    let embed = weights.embed_tokens.to_f32();
    let mut h: Vec<f32> =
        tokens.iter().flat_map(|&id| embed[id as usize * hidden..(id as usize + 1) * hidden].to_vec()).collect();

    for layer in &weights.layers {
        // Attention block.
        let x = rmsnorm(&h, &layer.input_layernorm, hidden, eps);
        let mut q = linear(&layer.q_proj, &x, t);
        let mut k = linear(&layer.k_proj, &x, t);
        let v = linear(&layer.v_proj, &x, t);
        rope::apply_rope(&mut q, t, c.num_attention_heads, hd, 0, &table);
        rope::apply_rope(&mut k, t, c.num_key_value_heads, hd, 0, &table);
        let mut a = attention::causal_attention(&q, &k, &v, t, 0, c.num_attention_heads, c.num_key_value_heads, hd);
        if let Some(w) = &layer.attn_sub_norm {
            a = rmsnorm(&a, w, c.q_dim(), eps);
        }
        elementwise::add_inplace(&mut h, &linear(&layer.o_proj, &a, t));

        // Feed-forward block.
        let x = rmsnorm(&h, &layer.post_attention_layernorm, hidden, eps);
        let gate = linear(&layer.gate_proj, &x, t);
        let up = linear(&layer.up_proj, &x, t);
        let mut m = match c.activation {
            Activation::Relu2 => elementwise::relu2_mul(&gate, &up),
            Activation::Silu => elementwise::silu_mul(&gate, &up),
        };
        if let Some(w) = &layer.ffn_sub_norm {
            m = rmsnorm(&m, w, c.intermediate_size, eps);
        }
        elementwise::add_inplace(&mut h, &linear(&layer.down_proj, &m, t));
    }

    let x = rmsnorm(&h, &weights.norm, hidden, eps);
    // The output projection is never ternary (DESIGN §3); GGUF blocks run as llama.cpp runs them.
    let out = weights.output();
    if out.is_quantized() { linear(out, &x, t) } else { matmul::matmul(&out.to_f32(), &x, t, out.rows, out.cols) }
}
