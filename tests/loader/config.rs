//! Model configuration from HF JSON and GGUF metadata, and its validation.

use deltallm::loader::{
    Activation, Architecture, GgmlType, Gguf, GgufArray, GgufBuilder, GgufValue, LoadError, ModelConfig, WeightScale,
};

use super::load_err;

/// microsoft/bitnet-b1.58-2B-4T config.json (docs/DESIGN.md §3).
const BITNET: &str = r#"{
  "architectures": ["BitNetForCausalLM"],
  "attention_bias": false,
  "bos_token_id": 128000,
  "eos_token_id": 128001,
  "hidden_act": "relu2",
  "hidden_size": 2560,
  "initializer_range": 0.02,
  "intermediate_size": 6912,
  "max_position_embeddings": 4096,
  "model_type": "bitnet",
  "num_attention_heads": 20,
  "num_hidden_layers": 30,
  "num_key_value_heads": 5,
  "rms_norm_eps": 1e-05,
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "vocab_size": 128256,
  "quantization_config": {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}
}"#;

/// meta-llama/Llama-3.2-1B-Instruct config.json (docs/DESIGN.md §4).
const LLAMA: &str = r#"{
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "rope_theta": 500000.0,
  "tie_word_embeddings": true,
  "vocab_size": 128256
}"#;

#[test]
fn bitnet_config() {
    let mut c = ModelConfig::from_hf_json(BITNET).unwrap();
    assert_eq!(c.architecture, Architecture::BitNet);
    assert_eq!(c.activation, Activation::Relu2);
    assert_eq!((c.hidden_size, c.intermediate_size, c.num_hidden_layers), (2560, 6912, 30));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (20, 5, 128));
    assert_eq!((c.q_dim(), c.kv_dim(), c.heads_per_kv_head()), (2560, 640, 4));
    assert_eq!((c.rms_norm_eps, c.rope_theta), (1e-5, 500000.0));
    assert_eq!(c.rope_scaling, None);
    assert!(c.tie_word_embeddings);
    assert_eq!((c.bos_token_id, c.stop_token_ids.as_slice()), (Some(128000), &[128001u32][..]));
    assert_eq!(c.weight_scale, Some(WeightScale::Divide));
    c.add_generation_config(r#"{"bos_token_id": 128000, "eos_token_id": [128001, 128009]}"#).unwrap();
    assert_eq!(c.stop_token_ids, [128001, 128009]);
}

#[test]
fn autobitlinear_scale_multiplies() {
    let json = BITNET.replace("\"bitlinear\"", "\"autobitlinear\"");
    assert_eq!(ModelConfig::from_hf_json(&json).unwrap().weight_scale, Some(WeightScale::Multiply));
}

#[test]
fn llama_config() {
    let c = ModelConfig::from_hf_json(LLAMA).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!(c.activation, Activation::Silu);
    assert_eq!((c.head_dim, c.kv_dim()), (64, 512));
    let s = c.rope_scaling.unwrap();
    assert_eq!((s.factor, s.low_freq_factor, s.high_freq_factor), (32.0, 1.0, 4.0));
    assert_eq!(s.original_max_position_embeddings, 8192);
    assert_eq!(c.stop_token_ids, [128001, 128008, 128009]);
    assert_eq!(c.weight_scale, None);
}

#[test]
fn hf_dir_reads_generation_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), LLAMA.replace("[128001, 128008, 128009]", "128001")).unwrap();
    std::fs::write(dir.path().join("generation_config.json"), r#"{"eos_token_id": [128001, 128008, 128009]}"#).unwrap();
    let c = ModelConfig::from_hf_dir(dir.path()).unwrap();
    assert_eq!(c.stop_token_ids, [128001, 128008, 128009]);
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let message = ModelConfig::from_hf_dir(dir.path()).unwrap_err().to_string();
    assert!(message.contains("config.json"), "{message}");
}

fn config_message(json: &str) -> String {
    match load_err(ModelConfig::from_hf_json(json)) {
        e @ (LoadError::Config { .. } | LoadError::Json { .. } | LoadError::Unsupported { .. }) => e.to_string(),
        other => panic!("unexpected error kind: {other}"),
    }
}

#[test]
fn malformed_and_inconsistent_configs() {
    assert!(config_message("{").contains("config.json"));
    assert!(config_message(&BITNET.replace("\"hidden_size\": 2560,", "")).contains("hidden_size"));
    let m = config_message(&BITNET.replace("\"hidden_size\": 2560", "\"hidden_size\": \"big\""));
    assert!(m.contains("invalid type") && m.contains("line"), "{m}");
    let m = config_message(&BITNET.replace("\"num_attention_heads\": 20", "\"num_attention_heads\": 21"));
    assert!(m.contains("num_attention_heads 21 does not divide hidden_size 2560"), "{m}");
    let m = config_message(&BITNET.replace("\"num_key_value_heads\": 5", "\"num_key_value_heads\": 3"));
    assert!(m.contains("num_key_value_heads 3"), "{m}");
    let m = config_message(&BITNET.replace("\"num_hidden_layers\": 30", "\"num_hidden_layers\": 0"));
    assert!(m.contains("num_hidden_layers is 0"), "{m}");
    let m = config_message(&BITNET.replace("\"eos_token_id\": 128001", "\"eos_token_id\": 999999"));
    assert!(m.contains("999999"), "{m}");
    let m = config_message(
        &BITNET.replace("\"model_type\": \"bitnet\"", "\"model_type\": \"gpt2\"").replace("BitNetForCausalLM", "GPT2"),
    );
    assert!(m.contains("gpt2"), "{m}");
    let m = config_message(&BITNET.replace("relu2", "gelu"));
    assert!(m.contains("gelu"), "{m}");
    let m = config_message(&LLAMA.replace("\"llama3\"", "\"yarn\""));
    assert!(m.contains("yarn"), "{m}");
    let m = config_message(&LLAMA.replace("\"low_freq_factor\": 1.0,", ""));
    assert!(m.contains("low_freq_factor"), "{m}");
    let m = config_message(&LLAMA.replace("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -1"));
    assert!(m.contains("rms_norm_eps"), "{m}");
}

/// SmolLM2-135M-like metadata; `overrides` replace or add keys.
fn llama_gguf(overrides: &[(&str, GgufValue)]) -> Gguf {
    let tokens: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    let mut keys: Vec<(&str, GgufValue)> = vec![
        ("general.architecture", GgufValue::String("llama".into())),
        ("llama.embedding_length", GgufValue::U32(576)),
        ("llama.feed_forward_length", GgufValue::U32(1536)),
        ("llama.block_count", GgufValue::U32(30)),
        ("llama.attention.head_count", GgufValue::U32(9)),
        ("llama.attention.head_count_kv", GgufValue::U32(3)),
        ("llama.rope.freq_base", GgufValue::F32(100000.0)),
        ("llama.attention.layer_norm_rms_epsilon", GgufValue::F32(1e-5)),
        ("llama.context_length", GgufValue::U32(8192)),
        ("tokenizer.ggml.tokens", GgufValue::Array(GgufArray::String(tokens))),
        ("tokenizer.ggml.bos_token_id", GgufValue::U32(1)),
        ("tokenizer.ggml.eos_token_id", GgufValue::U32(2)),
    ];
    for (k, v) in overrides {
        match keys.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v.clone(),
            None => keys.push((k, v.clone())),
        }
    }
    let mut b = GgufBuilder::new();
    for (k, v) in keys {
        b = b.metadata(k, v);
    }
    Gguf::from_bytes(b.tensor("token_embd.weight", &[32, 1], GgmlType::F32, vec![0; 128]).build()).unwrap()
}

#[test]
fn gguf_llama_metadata() {
    let c = ModelConfig::from_gguf(&llama_gguf(&[])).unwrap();
    assert_eq!(c.architecture, Architecture::Llama);
    assert_eq!((c.hidden_size, c.intermediate_size, c.num_hidden_layers), (576, 1536, 30));
    assert_eq!((c.num_attention_heads, c.num_key_value_heads, c.head_dim), (9, 3, 64));
    assert_eq!((c.vocab_size, c.max_position_embeddings), (300, 8192));
    assert_eq!((c.rope_theta, c.rms_norm_eps), (100000.0, 1e-5));
    assert!(c.tie_word_embeddings, "no output.weight tensor means tied embeddings");
    assert_eq!((c.bos_token_id, c.stop_token_ids.as_slice()), (Some(1), &[2u32][..]));
    let c = ModelConfig::from_gguf(&llama_gguf(&[("tokenizer.ggml.eot_token_id", GgufValue::U32(5))])).unwrap();
    assert_eq!(c.stop_token_ids, [2, 5]);
}

#[test]
fn gguf_bad_metadata() {
    let g = llama_gguf(&[("llama.attention.head_count_kv", GgufValue::U32(4))]);
    let message = ModelConfig::from_gguf(&g).unwrap_err().to_string();
    assert!(message.contains("num_key_value_heads 4 does not divide num_attention_heads 9"), "{message}");
    let g = llama_gguf(&[("llama.embedding_length", GgufValue::U32(577))]);
    assert!(ModelConfig::from_gguf(&g).unwrap_err().to_string().contains("does not divide"));
    let g = llama_gguf(&[("llama.block_count", GgufValue::U64(u64::MAX))]);
    assert!(ModelConfig::from_gguf(&g).is_err());
    let bad = GgufBuilder::new()
        .metadata("general.architecture", GgufValue::String("llama".into()))
        .metadata("llama.embedding_length", GgufValue::String("576".into()))
        .build();
    let g = Gguf::from_bytes(bad).unwrap();
    let message = ModelConfig::from_gguf(&g).unwrap_err().to_string();
    assert!(message.contains("llama.embedding_length") && message.contains("string"), "{message}");
    let g = Gguf::from_bytes(
        GgufBuilder::new().metadata("general.architecture", GgufValue::String("llama".into())).build(),
    )
    .unwrap();
    assert!(ModelConfig::from_gguf(&g).unwrap_err().to_string().contains("llama.embedding_length"));
    let g = Gguf::from_bytes(
        GgufBuilder::new().metadata("general.architecture", GgufValue::String("mamba".into())).build(),
    )
    .unwrap();
    assert!(ModelConfig::from_gguf(&g).unwrap_err().to_string().contains("mamba"));
}
