//! Whole models with GGUF Q4_0/Q4_1/Q8_0 linears run natively on their
//! blocks (`ModelOptions::native_quant`): against the CPU reference (which
//! rounds activations the same way), against the dequantize-to-f32 path,
//! and against llama.cpp's logits for the tiny Q8_0 fixture.

mod support;
use support::{TOKENS, gpu};
use support::{argmax, rel_l2};

use deltallm::cpu::quant::quantize_blocks;
use deltallm::format::blocks::BlockFormat;
use deltallm::loader::config::Architecture;
use deltallm::model::{Model, ModelOptions};
use deltallm::weights::{Matrix, MatrixData, ModelWeights, synthetic};
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;

fn to_blocks(m: &mut Matrix, format: BlockFormat) {
    let blocks = quantize_blocks(format, &m.to_f32());
    m.data = MatrixData::Quantized { format, blocks };
}

/// A tiny Llama (dimensions multiples of 32, as GGUF blocks need) whose
/// linears and tied embedding are `format` blocks.
fn tiny_quantized(format: BlockFormat, seed: u64) -> ModelWeights {
    let config = synthetic::config(Architecture::Llama, 96, 224, 2, 6, 2, 300);
    let mut w = synthetic::random_weights(&config, seed);
    for l in &mut w.layers {
        for m in l.linears_mut() {
            to_blocks(m, format);
        }
    }
    to_blocks(&mut w.embed_tokens, format);
    w
}

fn options(native_quant: bool) -> ModelOptions {
    ModelOptions { max_context: 32, prefill_chunk: 4, all_logits: true, native_quant, ..Default::default() }
}

#[test]
fn native_blocks_match_the_cpu_reference() {
    for (i, format) in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0].into_iter().enumerate() {
        let weights = tiny_quantized(format, 30 + i as u64);
        let expected = deltallm::cpu::model::forward_all(&weights, &TOKENS);
        // Chunks of 64 rows: the tied 300-row lm_head and the linears split too.
        for chunk_rows in [None, Some(64)] {
            let options = ModelOptions { weight_chunk_rows: chunk_rows, ..options(true) };
            let mut model = Model::load(gpu(), &weights, options).unwrap();
            let got = model.forward_all(gpu(), &TOKENS).unwrap();
            let err = rel_l2(&got, &expected);
            // Same block arithmetic; an activation may round the other way
            // after a last-bit difference upstream (norms, attention).
            assert!(err < 2e-3, "{format:?} chunks {chunk_rows:?}: logits relative L2 {err:e}");
            let vocab = weights.config.vocab_size;
            let agree = got.chunks(vocab).zip(expected.chunks(vocab)).filter(|(g, e)| argmax(g) == argmax(e)).count();
            assert!(agree + 1 >= TOKENS.len(), "{format:?}: top-1 agrees at {agree} of {} positions", TOKENS.len());
        }
    }
}

#[test]
fn dequantized_weights_give_the_dense_path() {
    let weights = tiny_quantized(BlockFormat::Q4_1, 45);
    let dense = weights.dequantized();
    assert!(!dense.layers[0].down_proj.is_quantized() && !dense.embed_tokens.is_quantized());
    let expected = deltallm::cpu::model::forward_all(&dense, &TOKENS);
    let got = Model::load(gpu(), &weights, options(false)).unwrap().forward_all(gpu(), &TOKENS).unwrap();
    let err = rel_l2(&got, &expected);
    assert!(err < 1e-4, "dequantized path vs f32 CPU reference: relative L2 {err:e}");
}

#[test]
fn native_blocks_decode_equals_prefill() {
    let weights = tiny_quantized(BlockFormat::Q4_1, 41);
    let options = ModelOptions { all_logits: false, prefill_chunk: 8, ..options(true) };
    let mut whole = Model::load(gpu(), &weights, options.clone()).unwrap();
    whole.forward(gpu(), &TOKENS).unwrap();
    let expected = whole.logits(gpu()).unwrap();
    let mut stepwise = Model::load(gpu(), &weights, options).unwrap();
    stepwise.forward(gpu(), &TOKENS[..6]).unwrap();
    for &t in &TOKENS[6..] {
        stepwise.forward(gpu(), &[t]).unwrap();
    }
    let err = rel_l2(&stepwise.logits(gpu()).unwrap(), &expected);
    assert!(err < 1e-5, "decode vs prefill relative L2 {err:e}");
}

#[test]
fn native_blocks_are_close_to_the_dequantized_path() {
    let weights = tiny_quantized(BlockFormat::Q4_0, 43);
    let native = Model::load(gpu(), &weights, options(true)).unwrap().forward_all(gpu(), &TOKENS).unwrap();
    let dense = Model::load(gpu(), &weights, options(false)).unwrap().forward_all(gpu(), &TOKENS).unwrap();
    let err = rel_l2(&native, &dense);
    // Only the int8 rounding of the activations differs.
    assert!(err > 0.0 && err < 5e-2, "native vs dequantized relative L2 {err:e}");
}

fn fixtures() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures"))
}

fn u32s(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn tiny_q8_0_fixture_against_llama_cpp() {
    let text = std::fs::read_to_string(fixtures().join("ref-tiny-llama.llamacpp.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let run = reference["runs"].as_array().unwrap().iter().find(|r| r["weights"] == "q8_0").unwrap();
    let weights = ModelWeights::load(fixtures().join(run["gguf"].as_str().unwrap())).unwrap();
    assert!(weights.layers[0].q_proj.is_quantized(), "Q8_0 linears stay blocks");
    let options = |native_quant| ModelOptions { max_context: 64, prefill_chunk: 32, native_quant, ..options(true) };
    let mut native = Model::load(gpu(), &weights, options(true)).unwrap();
    let mut dense = Model::load(gpu(), &weights, options(false)).unwrap();
    for p in run["prompts"].as_array().unwrap() {
        let ids = u32s(&p["ids"]);
        let expected: Vec<f32> = p["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().iter())
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let got_native = native.forward_all(gpu(), &ids).unwrap();
        let got_dense = dense.forward_all(gpu(), &ids).unwrap();
        let (err_native, err_dense) = (rel_l2(&got_native, &expected), rel_l2(&got_dense, &expected));
        let between = rel_l2(&got_native, &got_dense);
        eprintln!(
            "{}: relL2 vs llama.cpp: native {err_native:.3e}, dequantized {err_dense:.3e}; native vs dequantized {between:.3e}",
            p["name"].as_str().unwrap()
        );
        assert!(err_native < 1e-2, "native Q8_0 is {err_native:e} from llama.cpp");
        assert!(between < 6e-2, "native vs dequantized {between:e}");
    }
}

#[test]
fn blocks_of_the_wrong_size_are_an_error_on_both_paths() {
    // A hand-built matrix (its fields are public) whose blocks hold fewer values than rows × cols.
    let mut weights = tiny_quantized(BlockFormat::Q8_0, 40);
    if let MatrixData::Quantized { blocks, .. } = &mut weights.layers[1].v_proj.data {
        blocks.truncate(blocks.len() - 34);
    }
    for native_quant in [true, false] {
        let err = Model::load(gpu(), &weights, options(native_quant)).err().expect("short blocks must not load");
        let message = err.to_string();
        assert!(message.contains("layers.1.v_proj"), "native_quant {native_quant}: {message}");
    }
}
