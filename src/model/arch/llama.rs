//! Llama (Llama 3.x, SmolLM2 and other Llama-architecture checkpoints;
//! docs/DESIGN.md §4): pre-norm attention and a gated MLP.
//!
//! ```text
//! x = RMSNorm(h)                       input_layernorm
//! q, k, v = x · W_{q,k,v}ᵀ ; RoPE(q, k)
//! h += o_proj(attention(q, k, v))
//! x = RMSNorm(h)                       post_attention_layernorm
//! h += down_proj(silu(gate_proj(x)) · up_proj(x))
//! ```

use crate::error::Result;
use crate::model::layer::{Act, LayerBuilder};
use crate::weights::LayerWeights;

pub(super) fn layer(b: &mut LayerBuilder, w: &LayerWeights) -> Result<()> {
    b.rms_norm("input_layernorm", Act::H, &w.input_layernorm, Act::X)?;
    b.linears(Act::X, &[("q_proj", &w.q_proj, Act::Q), ("k_proj", &w.k_proj, Act::K), ("v_proj", &w.v_proj, Act::V)])?;
    b.rope()?;
    b.attention()?;
    b.linears(Act::Attn, &[("o_proj", &w.o_proj, Act::Delta)])?;
    b.residual("attn_residual")?;

    b.rms_norm("post_attention_layernorm", Act::H, &w.post_attention_layernorm, Act::X)?;
    b.linears(Act::X, &[("gate_proj", &w.gate_proj, Act::Gate), ("up_proj", &w.up_proj, Act::Up)])?;
    b.gated("act_mul")?;
    b.linears(Act::Mlp, &[("down_proj", &w.down_proj, Act::Delta)])?;
    b.residual("ffn_residual")
}
