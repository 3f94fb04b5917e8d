//! BitNet b1.58 from GGUF (Microsoft's I2_S ternary type): the tiny packed
//! BitNet fixture re-written as a GGUF with I2_S linears must run to the
//! same logits as the safetensors folder it came from (which is checked
//! against transformers in `fixtures.rs`).

mod support;
use support::{argmax, bitnet_i2_s_gguf as to_gguf, rel_l2};

use deltallm::model::{Model, ModelOptions};
use deltallm::weights::ModelWeights;
use deltallm::{Gpu, GpuOptions};
use std::path::Path;

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
