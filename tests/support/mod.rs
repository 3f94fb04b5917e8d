//! Helpers shared by the whole-model test binaries: the GPU, tiny random
//! models, the SmolLM2 package model, and comparisons. Each binary uses a
//! part of them.
#![allow(dead_code)]

use deltallm::loader::config::Architecture;
use deltallm::loader::gguf::{GgufBuilder, GgufValue};
use deltallm::loader::quants::{GgmlType, I2_S_BLOCK, I2_S_TAIL};
use deltallm::model::Model;
use deltallm::routing::{LayerPlan, ROUTER_ACTIONS, ROUTER_HIDDEN, Router, Routers};
use deltallm::weights::{Matrix, MatrixData, ModelWeights, synthetic};
use deltallm::{Gpu, GpuOptions};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// One GPU per test binary (opening an adapter per test is slow on lavapipe).
pub fn gpu() -> &'static Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| Gpu::new_blocking(&GpuOptions::from_env()).expect("a GPU adapter"))
}

/// A tiny random model with odd-ish sizes: hidden 96 (not a multiple of 64),
/// GQA 6/2, head_dim 16, 2 layers, vocabulary 300.
pub fn tiny(arch: Architecture, seed: u64) -> ModelWeights {
    let config = synthetic::config(arch, 96, 200, 2, 6, 2, 300);
    synthetic::random_weights(&config, seed)
}

/// A token sequence for the tiny models (a repeat included).
pub const TOKENS: [u32; 11] = [1, 17, 250, 3, 99, 42, 42, 7, 123, 299, 0];

/// The SmolLM2 package model, when fetched (`models/fetch-smollm2.sh`; CI
/// does, and there a missing file is a failure, not a skip).
pub fn smollm2() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        Some(path)
    } else if std::env::var("CI").is_ok() {
        panic!("{} is missing: .ci/run must run models/fetch-smollm2.sh", path.display());
    } else {
        eprintln!("skipping: {} not fetched (run models/fetch-smollm2.sh)", path.display());
        None
    }
}

/// After a prompt and one decode step, `steps` more decode steps create no
/// pipelines: everything a step runs is built at load (or when the plan or
/// DeltaLLM options are set).
///
/// The count is per `Gpu`, and the other tests of a binary build models on
/// [`gpu()`] at the same time, so the check runs on a device of its own:
/// `load` builds the model on the device it is given.
pub fn assert_decoding_creates_no_pipelines(load: impl FnOnce(&Gpu) -> Model, steps: u32) {
    let gpu = Gpu::new_blocking(&GpuOptions::from_env()).expect("a GPU adapter");
    let mut model = load(&gpu);
    model.forward(&gpu, &TOKENS[..5]).unwrap();
    model.forward(&gpu, &[5]).unwrap();
    let before = gpu.pipelines_created();
    for t in 0..steps {
        model.forward(&gpu, &[t]).unwrap();
    }
    assert_eq!(gpu.pipelines_created(), before, "decode steps compiled pipelines");
}

/// Relative L2 error ‖a − b‖ / ‖b‖ (a non-finite value in `a` gives infinity).
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let (mut d, mut n) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        if !x.is_finite() {
            return f64::INFINITY;
        }
        d += (*x as f64 - *y as f64).powi(2);
        n += (*y as f64).powi(2);
    }
    (d / n.max(1e-30)).sqrt()
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// I2_S bytes (x86 layout, docs/DESIGN.md §5): per 128 elements 32 bytes, byte j
/// holding elements j, j+32, j+64, j+96 from the high bits down, code =
/// value + 1; then the f32 scale, padded to n/4 + 32 bytes.
fn pack_i2_s(values: &[i8], scale: f32) -> Vec<u8> {
    let mut out = vec![0u8; values.len() / 4];
    for (block, chunk) in values.chunks(I2_S_BLOCK).enumerate() {
        for (i, &v) in chunk.iter().enumerate() {
            out[block * 32 + i % 32] |= ((v + 1) as u8) << (6 - 2 * (i / 32));
        }
    }
    out.extend_from_slice(&scale.to_le_bytes());
    out.resize(values.len() / 4 + I2_S_TAIL, 0);
    out
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn ternary(m: &Matrix) -> Vec<u8> {
    match &m.data {
        // GGUF ternary scales multiply; the packed release's weight_scale divides.
        MatrixData::Ternary { values, scale, .. } => pack_i2_s(values, 1.0 / scale),
        _ => panic!("expected a ternary matrix"),
    }
}

/// A BitNet model (ternary linears) written as Microsoft's BitNet GGUF: I2_S
/// linears, f32 norms and embedding.
pub fn bitnet_i2_s_gguf(w: &ModelWeights) -> Vec<u8> {
    let c = &w.config;
    let arch = "bitnet-b1.58";
    let key = |k: &str| format!("{arch}.{k}");
    let mut b = GgufBuilder::new()
        .metadata("general.architecture", GgufValue::String(arch.into()))
        .metadata(&key("embedding_length"), GgufValue::U32(c.hidden_size as u32))
        .metadata(&key("feed_forward_length"), GgufValue::U32(c.intermediate_size as u32))
        .metadata(&key("block_count"), GgufValue::U32(c.num_hidden_layers as u32))
        .metadata(&key("attention.head_count"), GgufValue::U32(c.num_attention_heads as u32))
        .metadata(&key("attention.head_count_kv"), GgufValue::U32(c.num_key_value_heads as u32))
        .metadata(&key("context_length"), GgufValue::U32(c.max_position_embeddings as u32))
        .metadata(&key("attention.layer_norm_rms_epsilon"), GgufValue::F32(c.rms_norm_eps))
        .metadata(&key("rope.freq_base"), GgufValue::F32(c.rope_theta as f32))
        .metadata(&key("vocab_size"), GgufValue::U32(c.vocab_size as u32));
    let (h, inter) = (c.hidden_size as u64, c.intermediate_size as u64);
    let (q, kv) = (c.q_dim() as u64, c.kv_dim() as u64);
    b = b.tensor("token_embd.weight", &[h, c.vocab_size as u64], GgmlType::F32, f32_bytes(&w.embed_tokens.to_f32()));
    b = b.tensor("output_norm.weight", &[h], GgmlType::F32, f32_bytes(&w.norm));
    for (i, l) in w.layers.iter().enumerate() {
        let p = |n: &str| format!("blk.{i}.{n}.weight");
        b = b
            .tensor(&p("attn_norm"), &[h], GgmlType::F32, f32_bytes(&l.input_layernorm))
            .tensor(&p("attn_q"), &[h, q], GgmlType::I2_S, ternary(&l.q_proj))
            .tensor(&p("attn_k"), &[h, kv], GgmlType::I2_S, ternary(&l.k_proj))
            .tensor(&p("attn_v"), &[h, kv], GgmlType::I2_S, ternary(&l.v_proj))
            .tensor(&p("attn_output"), &[q, h], GgmlType::I2_S, ternary(&l.o_proj))
            .tensor(&p("attn_sub_norm"), &[q], GgmlType::F32, f32_bytes(l.attn_sub_norm.as_ref().unwrap()))
            .tensor(&p("ffn_norm"), &[h], GgmlType::F32, f32_bytes(&l.post_attention_layernorm))
            .tensor(&p("ffn_gate"), &[h, inter], GgmlType::I2_S, ternary(&l.gate_proj))
            .tensor(&p("ffn_up"), &[h, inter], GgmlType::I2_S, ternary(&l.up_proj))
            .tensor(&p("ffn_down"), &[inter, h], GgmlType::I2_S, ternary(&l.down_proj))
            .tensor(&p("ffn_sub_norm"), &[inter], GgmlType::F32, f32_bytes(l.ffn_sub_norm.as_ref().unwrap()));
    }
    b.build()
}

/// Routers whose output ignores the input: logit 10 on `plan`'s action.
pub fn forcing_routers(plan: &LayerPlan, hidden: usize) -> Routers {
    let layers = plan
        .actions
        .iter()
        .map(|&a| {
            let mut linear2_bias = vec![0.0; ROUTER_ACTIONS];
            linear2_bias[a.code() as usize] = 10.0;
            Router {
                linear1_weight: vec![0.0; ROUTER_HIDDEN * hidden],
                linear1_bias: vec![0.0; ROUTER_HIDDEN],
                linear2_weight: vec![0.0; ROUTER_ACTIONS * ROUTER_HIDDEN],
                linear2_bias,
            }
        })
        .collect();
    Routers { hidden, layers, bias: 0.0 }
}
