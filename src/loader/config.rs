//! Model configuration: the Hugging Face `config.json` (+
//! `generation_config.json`) of Llama and BitNet b1.58 checkpoints, or the
//! `{arch}.*` metadata of a GGUF file, normalized into one [`ModelConfig`].
//!
//! Facts encoded here (docs/DESIGN.md §3, §4): BitNet uses relu² and its packed
//! `weight_scale` divides the integer product unless
//! `quantization_config.linear_class` is `"autobitlinear"`; Llama 3 uses
//! "llama3" RoPE scaling; stop tokens are the union of config and
//! generation-config EOS ids.

use std::path::Path;

use serde::Deserialize;

use super::error::LoadError;
use super::gguf::Gguf;
use crate::{Error, Result};

/// Model family; selects the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Llama,
    BitNet,
}

/// Feed-forward gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu(gate) · up` (Llama).
    Silu,
    /// `relu(gate)² · up` (BitNet b1.58).
    Relu2,
}

/// How a ternary weight's per-tensor scale enters `y = Σ x_q·w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightScale {
    /// `y / (s_x · weight_scale)`: BitNet's default BitLinear on the packed
    /// HF release.
    Divide,
    /// `y · weight_scale / s_x`: `autobitlinear` checkpoints, and GGUF
    /// ternary types (whose scales are the dequantization factor).
    Multiply,
}

/// Llama-3 style RoPE frequency scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Everything the forward pass needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    /// None for plain RoPE. From GGUF always None: llama.cpp stores Llama-3
    /// scaling as the precomputed tensor `rope_freqs.weight` instead.
    pub rope_scaling: Option<RopeScaling>,
    pub activation: Activation,
    /// Output projection shares the embedding matrix (no `lm_head`).
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    /// Generation stops on any of these (config + generation config EOS ids).
    pub stop_token_ids: Vec<u32>,
    /// BitNet only: how `weight_scale` applies.
    pub weight_scale: Option<WeightScale>,
}

/// `config.json` as written by transformers for Llama and BitNet.
#[derive(Debug, Clone, Deserialize)]
pub struct HfConfig {
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub rope_scaling: Option<HfRopeScaling>,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<TokenIds>,
    pub eos_token_id: Option<TokenIds>,
    pub hidden_act: Option<String>,
    pub quantization_config: Option<HfQuantizationConfig>,
}

fn default_eps() -> f64 {
    1e-6
}

fn default_rope_theta() -> f64 {
    10000.0
}

#[derive(Debug, Clone, Deserialize)]
pub struct HfRopeScaling {
    pub rope_type: Option<String>,
    /// Older configs spell `rope_type` as `type`.
    #[serde(rename = "type")]
    pub legacy_type: Option<String>,
    pub factor: Option<f64>,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HfQuantizationConfig {
    pub quant_method: Option<String>,
    pub linear_class: Option<String>,
    pub quantization_mode: Option<String>,
}

/// A token id or a list of them (HF allows both for bos/eos).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(id) => vec![*id],
            TokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `generation_config.json`; only the token ids matter here.
#[derive(Debug, Clone, Deserialize)]
pub struct HfGenerationConfig {
    pub bos_token_id: Option<TokenIds>,
    pub eos_token_id: Option<TokenIds>,
}

fn json_error(what: &str, err: serde_json::Error) -> Error {
    LoadError::Json { what: what.to_string(), message: err.to_string() }.into()
}

fn config_error(message: impl Into<String>) -> Error {
    LoadError::Config { message: message.into() }.into()
}

fn push_unique(ids: &mut Vec<u32>, new: impl IntoIterator<Item = u32>) {
    for id in new {
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
}

impl ModelConfig {
    /// Parse and validate an HF `config.json` text.
    pub fn from_hf_json(json: &str) -> Result<Self> {
        let hf: HfConfig = serde_json::from_str(json).map_err(|e| json_error("config.json", e))?;
        Self::from_hf(&hf)
    }

    /// Read `config.json` and, when present, `generation_config.json` from
    /// a model directory.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.display().to_string(), source })
        };
        let config_path = dir.join("config.json").display().to_string();
        let mut config = Self::from_hf_json(&read("config.json")?).map_err(|e| match e {
            Error::Load(inner) => Error::Load(inner.in_file(&config_path)),
            other => other,
        })?;
        if dir.join("generation_config.json").is_file() {
            config.add_generation_config(&read("generation_config.json")?)?;
        }
        Ok(config)
    }

    /// Normalize a parsed HF config.
    pub fn from_hf(hf: &HfConfig) -> Result<Self> {
        let model_type = hf.model_type.as_deref().unwrap_or("");
        let is_arch = |name: &str| hf.architectures.iter().any(|a| a == name);
        let architecture = if model_type == "bitnet" || is_arch("BitNetForCausalLM") {
            Architecture::BitNet
        } else if model_type == "llama" || is_arch("LlamaForCausalLM") {
            Architecture::Llama
        } else {
            return Err(LoadError::Unsupported {
                message: format!(
                    "model_type '{model_type}' (architectures {:?}); supported: llama, bitnet",
                    hf.architectures
                ),
            }
            .into());
        };
        let activation = match hf.hidden_act.as_deref() {
            None if architecture == Architecture::BitNet => Activation::Relu2,
            None | Some("silu") | Some("swish") => Activation::Silu,
            Some("relu2") => Activation::Relu2,
            Some(other) => {
                return Err(LoadError::Unsupported {
                    message: format!("hidden_act '{other}' (supported: silu, relu2)"),
                }
                .into());
            }
        };
        let rope_scaling = match &hf.rope_scaling {
            None => None,
            Some(s) => {
                let kind = s.rope_type.as_deref().or(s.legacy_type.as_deref());
                match kind {
                    Some("default") | None if s.factor.is_none() => None,
                    Some("llama3") => {
                        let need = |v: Option<f64>, field: &str| {
                            v.ok_or_else(|| config_error(format!("rope_scaling llama3 lacks '{field}'")))
                        };
                        Some(RopeScaling {
                            factor: need(s.factor, "factor")?,
                            low_freq_factor: need(s.low_freq_factor, "low_freq_factor")?,
                            high_freq_factor: need(s.high_freq_factor, "high_freq_factor")?,
                            original_max_position_embeddings: s.original_max_position_embeddings.ok_or_else(|| {
                                config_error("rope_scaling llama3 lacks 'original_max_position_embeddings'")
                            })?,
                        })
                    }
                    other => {
                        return Err(LoadError::Unsupported {
                            message: format!("rope_scaling type {other:?} (supported: llama3, or none)"),
                        }
                        .into());
                    }
                }
            }
        };
        let weight_scale = match architecture {
            Architecture::Llama => None,
            Architecture::BitNet => {
                let class = hf.quantization_config.as_ref().and_then(|q| q.linear_class.as_deref());
                Some(match class {
                    Some("autobitlinear") => WeightScale::Multiply,
                    _ => WeightScale::Divide,
                })
            }
        };
        let heads = hf.num_attention_heads;
        let head_dim = match hf.head_dim {
            Some(d) => d,
            None => {
                if heads == 0 || !hf.hidden_size.is_multiple_of(heads) {
                    return Err(config_error(format!(
                        "num_attention_heads {heads} does not divide hidden_size {}",
                        hf.hidden_size
                    )));
                }
                hf.hidden_size / heads
            }
        };
        let config = ModelConfig {
            architecture,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: hf.num_key_value_heads.unwrap_or(heads),
            head_dim,
            vocab_size: hf.vocab_size,
            max_position_embeddings: hf.max_position_embeddings,
            rms_norm_eps: hf.rms_norm_eps as f32,
            rope_theta: hf.rope_theta,
            rope_scaling,
            activation,
            tie_word_embeddings: hf.tie_word_embeddings,
            bos_token_id: hf.bos_token_id.as_ref().and_then(|b| b.to_vec().first().copied()),
            stop_token_ids: hf.eos_token_id.as_ref().map(TokenIds::to_vec).unwrap_or_default(),
            weight_scale,
        };
        config.validate()?;
        Ok(config)
    }

    /// Merge a `generation_config.json`: its EOS ids join the stop tokens.
    pub fn add_generation_config(&mut self, json: &str) -> Result<()> {
        let generation: HfGenerationConfig =
            serde_json::from_str(json).map_err(|e| json_error("generation_config.json", e))?;
        if let Some(eos) = &generation.eos_token_id {
            push_unique(&mut self.stop_token_ids, eos.to_vec());
        }
        if self.bos_token_id.is_none() {
            self.bos_token_id = generation.bos_token_id.as_ref().and_then(|b| b.to_vec().first().copied());
        }
        self.check_token_ids()
    }

    /// Read the `{arch}.*` and `tokenizer.ggml.*` keys of a GGUF file.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let arch = gguf.get_str("general.architecture")?;
        let architecture = match arch {
            "llama" => Architecture::Llama,
            a if a.starts_with("bitnet") => Architecture::BitNet,
            other => {
                return Err(LoadError::Unsupported {
                    message: format!("GGUF architecture '{other}' (supported: llama, bitnet*)"),
                }
                .into());
            }
        };
        let key = |suffix: &str| format!("{arch}.{suffix}");
        let usize_key = |suffix: &str| -> Result<usize> {
            let v = gguf.get_u64(&key(suffix))?;
            usize::try_from(v).map_err(|_| config_error(format!("{} = {v} is too large", key(suffix))))
        };
        let opt_usize_key = |suffix: &str| -> Result<Option<usize>> {
            match gguf.contains_key(&key(suffix)) {
                true => usize_key(suffix).map(Some),
                false => Ok(None),
            }
        };
        let hidden_size = usize_key("embedding_length")?;
        let heads = usize_key("attention.head_count")?;
        let head_dim = match opt_usize_key("attention.key_length")? {
            Some(d) => d,
            None => {
                if heads == 0 || !hidden_size.is_multiple_of(heads) {
                    return Err(config_error(format!(
                        "{} = {heads} does not divide {} = {hidden_size}",
                        key("attention.head_count"),
                        key("embedding_length")
                    )));
                }
                hidden_size / heads
            }
        };
        let vocab_size = match opt_usize_key("vocab_size")? {
            Some(v) => v,
            None => gguf.get_array("tokenizer.ggml.tokens")?.len(),
        };
        let token = |name: &str| -> Result<Option<u32>> {
            let k = format!("tokenizer.ggml.{name}");
            match gguf.contains_key(&k) {
                true => gguf.get_u32(&k).map(Some),
                false => Ok(None),
            }
        };
        let mut stop_token_ids = Vec::new();
        for name in ["eos_token_id", "eot_token_id", "eom_token_id"] {
            push_unique(&mut stop_token_ids, token(name)?);
        }
        let config = ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: usize_key("feed_forward_length")?,
            num_hidden_layers: usize_key("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: opt_usize_key("attention.head_count_kv")?.unwrap_or(heads),
            head_dim,
            vocab_size,
            max_position_embeddings: usize_key("context_length")?,
            rms_norm_eps: gguf.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: gguf.opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0) as f64,
            rope_scaling: None,
            activation: match architecture {
                Architecture::Llama => Activation::Silu,
                Architecture::BitNet => Activation::Relu2,
            },
            tie_word_embeddings: !gguf.has_tensor("output.weight"),
            bos_token_id: token("bos_token_id")?,
            stop_token_ids,
            weight_scale: match architecture {
                Architecture::Llama => None,
                Architecture::BitNet => Some(WeightScale::Multiply),
            },
        };
        config.validate().map_err(|e| match e {
            Error::Load(inner) => Error::Load(inner.in_file(gguf.source())),
            other => other,
        })?;
        Ok(config)
    }

    /// Query width: `num_attention_heads · head_dim`.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Key/value width: `num_key_value_heads · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }

    /// Query heads sharing one KV head (GQA group size).
    pub fn heads_per_kv_head(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads.max(1)
    }

    /// Check that the dimensions are usable; called by every constructor.
    pub fn validate(&self) -> Result<()> {
        // Far above any model this engine targets; beyond them a corrupt
        // file would make the model code allocate absurd buffers.
        let dims = [
            ("hidden_size", self.hidden_size, 1 << 16),
            ("intermediate_size", self.intermediate_size, 1 << 18),
            ("num_hidden_layers", self.num_hidden_layers, 1 << 10),
            ("num_attention_heads", self.num_attention_heads, 1 << 10),
            ("num_key_value_heads", self.num_key_value_heads, 1 << 10),
            ("head_dim", self.head_dim, 1 << 12),
            ("vocab_size", self.vocab_size, 1 << 22),
            ("max_position_embeddings", self.max_position_embeddings, 1 << 24),
        ];
        for (name, value, limit) in dims {
            if value == 0 {
                return Err(config_error(format!("{name} is 0")));
            }
            if value > limit {
                return Err(config_error(format!("{name} = {value} is larger than the supported maximum {limit}")));
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(config_error(format!(
                "num_key_value_heads {} does not divide num_attention_heads {}",
                self.num_key_value_heads, self.num_attention_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(config_error(format!("head_dim {} is odd; RoPE rotates pairs of dimensions", self.head_dim)));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(config_error(format!("rms_norm_eps {} must be a positive number", self.rms_norm_eps)));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return Err(config_error(format!("rope_theta {} must be a positive number", self.rope_theta)));
        }
        if let Some(s) = &self.rope_scaling {
            let ok = s.factor.is_finite()
                && s.factor > 0.0
                && s.low_freq_factor > 0.0
                && s.high_freq_factor > s.low_freq_factor
                && s.original_max_position_embeddings > 0;
            if !ok {
                return Err(config_error(format!(
                    "rope_scaling {s:?}: need factor > 0, 0 < low_freq_factor < high_freq_factor, original_max_position_embeddings > 0"
                )));
            }
        }
        self.check_token_ids()
    }

    fn check_token_ids(&self) -> Result<()> {
        let vocab = self.vocab_size as u64;
        for &id in self.bos_token_id.iter().chain(&self.stop_token_ids) {
            if id as u64 >= vocab {
                return Err(config_error(format!("token id {id} (bos/eos) is outside the vocabulary of {vocab}")));
            }
        }
        Ok(())
    }
}
