//! BitNet b1.58 (docs/DESIGN.md §3): Llama's layer with ternary linears on
//! per-token int8 activations, an extra RMSNorm before o_proj and before
//! down_proj, and relu² instead of silu.
//!
//! ```text
//! x = RMSNorm(h)                       input_layernorm
//! q, k, v = BitLinear(x) ; RoPE(q, k)  (x quantized to int8 once for all three)
//! a = RMSNorm(attention(q, k, v))      attn_sub_norm
//! h += BitLinear_o(a)
//! x = RMSNorm(h)                       post_attention_layernorm
//! m = RMSNorm(relu(gate(x))² · up(x))  ffn_sub_norm
//! h += BitLinear_down(m)
//! ```

use super::missing;
use crate::error::Result;
use crate::model::layer::{Act, LayerBuilder};
use crate::weights::LayerWeights;

pub(super) fn layer(b: &mut LayerBuilder, w: &LayerWeights) -> Result<()> {
    let attn_sub_norm = w.attn_sub_norm.as_deref().ok_or_else(|| missing("attn_sub_norm"))?;
    let ffn_sub_norm = w.ffn_sub_norm.as_deref().ok_or_else(|| missing("ffn_sub_norm"))?;

    b.rms_norm("input_layernorm", Act::H, &w.input_layernorm, Act::X)?;
    b.linears(Act::X, &[("q_proj", &w.q_proj, Act::Q), ("k_proj", &w.k_proj, Act::K), ("v_proj", &w.v_proj, Act::V)])?;
    b.rope()?;
    b.attention()?;
    b.rms_norm("attn_sub_norm", Act::Attn, attn_sub_norm, Act::AttnSub)?;
    b.linears(Act::AttnSub, &[("o_proj", &w.o_proj, Act::Delta)])?;
    b.residual("attn_residual")?;

    b.rms_norm("post_attention_layernorm", Act::H, &w.post_attention_layernorm, Act::X)?;
    b.linears(Act::X, &[("gate_proj", &w.gate_proj, Act::Gate), ("up_proj", &w.up_proj, Act::Up)])?;
    b.gated("act_mul")?;
    b.rms_norm("ffn_sub_norm", Act::Mlp, ffn_sub_norm, Act::MlpSub)?;
    b.linears(Act::MlpSub, &[("down_proj", &w.down_proj, Act::Delta)])?;
    b.residual("ffn_residual")
}
