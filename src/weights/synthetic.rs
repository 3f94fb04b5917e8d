//! Random models with real shapes, generated without a download: for the
//! tests (tiny shapes) and the benchmark (BitNet-2B4T- and Llama-1B-shaped).

use super::{LayerWeights, Matrix, MatrixData, ModelWeights};
use crate::format::ternary::ScaleConvention;
use crate::loader::config::{Activation, Architecture, ModelConfig, RopeScaling, WeightScale};

/// A small deterministic generator (splitmix64), the same on every platform.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn signed_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// A config of the given architecture and dimensions, with the real
/// models' constants (eps, theta) and no stop tokens.
pub fn config(
    architecture: Architecture,
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
) -> ModelConfig {
    ModelConfig {
        architecture,
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim: hidden / heads,
        vocab_size: vocab,
        max_position_embeddings: 4096,
        rms_norm_eps: 1e-5,
        rope_theta: 500_000.0,
        rope_scaling: None,
        activation: match architecture {
            Architecture::BitNet => Activation::Relu2,
            Architecture::Llama => Activation::Silu,
        },
        tie_word_embeddings: true,
        bos_token_id: None,
        stop_token_ids: Vec::new(),
        weight_scale: match architecture {
            Architecture::BitNet => Some(WeightScale::Divide),
            Architecture::Llama => None,
        },
    }
}

/// BitNet-b1.58-2B-4T's shape (docs/DESIGN.md §3).
pub fn bitnet_2b4t_config() -> ModelConfig {
    config(Architecture::BitNet, 2560, 6912, 30, 20, 5, 128_256)
}

/// Llama-3.2-1B's shape (docs/DESIGN.md §4).
pub fn llama_1b_config() -> ModelConfig {
    let mut c = config(Architecture::Llama, 2048, 8192, 16, 32, 8, 128_256);
    c.rope_scaling = Some(RopeScaling {
        factor: 32.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    });
    c
}

/// Random weights for `config`: ternary linears (with a random scale) for
/// BitNet, f32 for Llama; norms near 1; embeddings with unit-ish rows so
/// logits are far from flat.
pub fn random_weights(config: &ModelConfig, seed: u64) -> ModelWeights {
    let mut rng = SplitMix(seed ^ 0x5eed);
    let c = config;
    let (hidden, inter, q_dim, kv_dim) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    let mut dense = |rows: usize, cols: usize, scale: f32| Matrix {
        rows,
        cols,
        data: MatrixData::F32((0..rows * cols).map(|_| rng.signed_unit() * scale).collect()),
    };
    let embed_tokens = dense(c.vocab_size, hidden, 1.0);
    let mut rng = SplitMix(seed.wrapping_mul(31) ^ 0xabc);
    let mut linear = |rows: usize, cols: usize| -> Matrix {
        let scale = 1.0 / (cols as f32).sqrt();
        match c.architecture {
            Architecture::BitNet => Matrix {
                rows,
                cols,
                data: MatrixData::Ternary {
                    values: (0..rows * cols).map(|_| (rng.next_u64() % 3) as i8 - 1).collect(),
                    // The packed release divides by weight_scale; ~1/scale keeps activations O(1).
                    scale: 1.0 / (scale * (1.0 + 0.5 * rng.signed_unit())),
                    convention: ScaleConvention::Divide,
                },
            },
            Architecture::Llama => Matrix {
                rows,
                cols,
                data: MatrixData::F32((0..rows * cols).map(|_| rng.signed_unit() * scale * 1.7).collect()),
            },
        }
    };
    let mut norm_rng = SplitMix(seed ^ 0x4e4f524d);
    let mut norm = |n: usize| -> Vec<f32> { (0..n).map(|_| 1.0 + 0.2 * norm_rng.signed_unit()).collect() };
    let bitnet = c.architecture == Architecture::BitNet;
    let layers = (0..c.num_hidden_layers)
        .map(|_| LayerWeights {
            input_layernorm: norm(hidden),
            q_proj: linear(q_dim, hidden),
            k_proj: linear(kv_dim, hidden),
            v_proj: linear(kv_dim, hidden),
            o_proj: linear(hidden, q_dim),
            attn_sub_norm: bitnet.then(|| norm(q_dim)),
            post_attention_layernorm: norm(hidden),
            gate_proj: linear(inter, hidden),
            up_proj: linear(inter, hidden),
            down_proj: linear(hidden, inter),
            ffn_sub_norm: bitnet.then(|| norm(inter)),
        })
        .collect();
    let rope_inv_freq =
        crate::format::rope::rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling.map(super::rope_scaling));
    ModelWeights { config: c.clone(), embed_tokens, layers, norm: norm(hidden), lm_head: None, rope_inv_freq }
}
