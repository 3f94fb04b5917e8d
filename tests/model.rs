//! Whole-model tests on tiny random models: the GPU forward pass against the
//! CPU reference (`cpu::model`), prefill-then-decode against one prefill,
//! and bad input.

mod support;
use support::{TOKENS, gpu, tiny};
use support::{argmax, assert_decoding_creates_no_pipelines, rel_l2};

use deltallm::loader::config::Architecture;
use deltallm::model::{Model, ModelOptions};

fn gpu_matches_cpu(arch: Architecture, tolerance: f64) {
    let weights = tiny(arch, 7);
    let expected = deltallm::cpu::model::forward_all(&weights, &TOKENS);
    // Chunk of 4 so the 11 tokens take three prefill steps (GEMM and GEMV paths).
    let options = ModelOptions { max_context: 32, prefill_chunk: 4, all_logits: true, ..Default::default() };
    let mut model = Model::load(gpu(), &weights, options).unwrap();
    let got = model.forward_all(gpu(), &TOKENS).unwrap();
    let err = rel_l2(&got, &expected);
    assert!(err < tolerance, "{arch:?}: logits relative L2 {err:e} > {tolerance:e}");
    let vocab = weights.config.vocab_size;
    for (pos, (g, e)) in got.chunks(vocab).zip(expected.chunks(vocab)).enumerate() {
        assert_eq!(argmax(g), argmax(e), "{arch:?}: top-1 differs at position {pos}");
    }
}

#[test]
fn tiny_llama_logits_match_the_cpu_reference() {
    gpu_matches_cpu(Architecture::Llama, 1e-4);
}

#[test]
fn tiny_bitnet_logits_match_the_cpu_reference() {
    // Int8 activation rounding can flip on float-order differences, so the
    // tolerance is looser than Llama's.
    gpu_matches_cpu(Architecture::BitNet, 2e-3);
}

#[test]
fn prefill_then_decode_equals_one_prefill() {
    for arch in [Architecture::Llama, Architecture::BitNet] {
        let weights = tiny(arch, 11);
        let options = ModelOptions { max_context: 32, prefill_chunk: 8, all_logits: false, ..Default::default() };
        let mut whole = Model::load(gpu(), &weights, options.clone()).unwrap();
        whole.forward(gpu(), &TOKENS).unwrap();
        let expected = whole.logits(gpu()).unwrap();

        let mut stepwise = Model::load(gpu(), &weights, options).unwrap();
        stepwise.forward(gpu(), &TOKENS[..6]).unwrap();
        for &t in &TOKENS[6..] {
            stepwise.forward(gpu(), &[t]).unwrap();
        }
        assert_eq!(stepwise.position(), TOKENS.len() as u32);
        let got = stepwise.logits(gpu()).unwrap();
        let err = rel_l2(&got, &expected);
        assert!(err < 1e-5, "{arch:?}: decode vs prefill relative L2 {err:e}");
    }
}

#[test]
fn decode_steps_create_no_pipelines() {
    let weights = tiny(Architecture::BitNet, 3);
    let options = ModelOptions { max_context: 32, ..Default::default() };
    assert_decoding_creates_no_pipelines(|gpu| Model::load(gpu, &weights, options).unwrap(), 4);
}

#[test]
fn bad_input_is_a_clear_error() {
    let weights = tiny(Architecture::Llama, 5);
    let mut model = Model::load(gpu(), &weights, ModelOptions { max_context: 8, ..Default::default() }).unwrap();
    let err = model.forward(gpu(), &[1; 9]).unwrap_err().to_string();
    assert!(err.contains("context"), "{err}");
    let err = model.forward(gpu(), &[300]).unwrap_err().to_string();
    assert!(err.contains("vocabulary"), "{err}");
    assert!(model.forward(gpu(), &[]).is_err());
    assert!(model.logits(gpu()).is_err(), "no logits before a forward");
}

#[test]
fn gpu_argmax_equals_the_argmax_of_the_logits() {
    let weights = tiny(Architecture::Llama, 13);
    let mut model = Model::load(gpu(), &weights, ModelOptions { max_context: 32, ..Default::default() }).unwrap();
    for t in [&TOKENS[..3], &TOKENS[3..4], &TOKENS[4..9]] {
        model.forward(gpu(), t).unwrap();
        let logits = model.logits(gpu()).unwrap();
        assert_eq!(model.argmax(gpu()).unwrap() as usize, argmax(&logits));
    }
}

#[test]
fn weights_split_into_many_chunks_give_the_same_logits() {
    // 300-token vocabulary in chunks of 64 rows (5 chunks, the last partial)
    // for the embedding, the tied lm_head and every dense linear: the path a
    // 128256-token table takes under the 128 MiB binding limit.
    let weights = tiny(Architecture::Llama, 17);
    let expected = deltallm::cpu::model::forward_all(&weights, &TOKENS);
    let options = ModelOptions {
        max_context: 32,
        prefill_chunk: 4,
        all_logits: true,
        weight_chunk_rows: Some(64),
        ..Default::default()
    };
    let mut model = Model::load(gpu(), &weights, options).unwrap();
    let got = model.forward_all(gpu(), &TOKENS).unwrap();
    let err = rel_l2(&got, &expected);
    assert!(err < 1e-4, "split weights: logits relative L2 {err:e}");
}
