//! BitNet b1.58 from GGUF (Microsoft's I2_S ternary type): the tiny packed
//! BitNet fixture re-written as a GGUF with I2_S linears must run to the
//! same logits as the safetensors folder it came from (which is checked
//! against transformers in `fixtures.rs`).

mod support;
use support::{argmax, rel_l2};

use deltallm::loader::gguf::{GgufBuilder, GgufValue};
use deltallm::loader::quants::{GgmlType, I2_S_BLOCK, I2_S_TAIL};
use deltallm::model::{Matrix, MatrixData, Model, ModelOptions, ModelWeights};
use deltallm::{Gpu, GpuOptions};
use std::path::Path;

/// I2_S bytes (x86 layout, DESIGN §5): per 128 elements 32 bytes, byte j
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

fn to_gguf(w: &ModelWeights) -> Vec<u8> {
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

#[test]
fn i2_s_gguf_runs_like_the_packed_safetensors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures/tiny-bitnet");
    let hf = ModelWeights::load(&dir).unwrap();
    let gguf = deltallm::loader::gguf::Gguf::from_bytes(to_gguf(&hf)).unwrap();
    let from_gguf = ModelWeights::from_gguf(&gguf).unwrap();
    assert!(from_gguf.layers[0].q_proj.is_ternary(), "I2_S must stay ternary");

    let gpu = Gpu::new_blocking(&GpuOptions::from_env()).unwrap();
    let tokens = [379u32, 296, 220, 282, 307, 342, 325, 270, 64, 304];
    let options = ModelOptions { max_context: 32, prefill_chunk: 16, all_logits: true, ..Default::default() };
    let logits = |w: &ModelWeights| Model::load(&gpu, w, options.clone()).unwrap().forward_all(&gpu, &tokens).unwrap();
    let (a, b) = (logits(&hf), logits(&from_gguf));
    // acc / (s_x · s) against acc / s_x · (1/s): last-bit differences that
    // can flip an int8 activation rounding.
    let err = rel_l2(&b, &a);
    assert!(err < 1e-3, "GGUF vs safetensors logits relative L2 {err:e}");
    let vocab = hf.config.vocab_size;
    let agree = a.chunks(vocab).zip(b.chunks(vocab)).filter(|(x, y)| argmax(x) == argmax(y)).count();
    assert_eq!(agree, tokens.len());
}
