//! Where [`Model::load_from`](super::Model::load_from) gets its weights:
//! one part at a time, so a model is never whole in host memory.
//!
//! A [`WeightSource`] answers the config, the RoPE frequencies and the
//! [`WeightFormats`] up front (they size the GPU buffers), then decodes the
//! embedding, each layer, the final norm and the output head on demand.
//! The loader uploads each part and drops its host copy before asking for
//! the next. Two sources:
//!
//! - [`ModelWeights`], already decoded in memory (it lends its parts);
//! - [`StreamedWeights`], a GGUF or safetensors checkpoint read by byte
//!   range through [`ByteSource`]s: the headers at open, then each part's
//!   tensors (one read per tensor), decoded by the same functions a
//!   whole-file load uses. The formats come from the tensor headers (ggml
//!   types, dtypes), never from decoding data.

use std::borrow::Cow;
use std::collections::HashMap;

use super::{self as weights, GgufKind, LayerWeights, Matrix, ModelWeights};
use crate::error::{Error, Result};
use crate::loader::config::{Architecture, ModelConfig};
use crate::loader::gguf::{Gguf, ReadGgufTensors};
use crate::loader::safetensors::{ReadTensors, SafetensorsHeaders};
use crate::loader::stream::{ByteSource, LocalFuture, read_exact};

/// The facts about a model's weights that decide GPU buffers before any
/// weight is read: which linear inputs need an int8 copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WeightFormats {
    /// Some layer's q_proj or gate_proj is ternary (BitNet): every linear
    /// input is quantized per token to int8.
    pub ternary: bool,
    /// Some linear reading the normed hidden state (q, k, v, gate, up) is GGUF Q4_0/Q4_1/Q8_0 blocks.
    pub blocks_hidden: bool,
    /// Some o_proj (reading the attention output) is GGUF blocks.
    pub blocks_attention: bool,
    /// Some down_proj (reading the MLP activation) is GGUF blocks.
    pub blocks_mlp: bool,
    /// The output projection (lm_head, or the tied embedding) is GGUF blocks.
    pub output_blocks: bool,
}

impl WeightFormats {
    /// The formats of decoded weights.
    pub fn of(weights: &ModelWeights) -> Self {
        let any = |f: fn(&LayerWeights) -> bool| weights.layers.iter().any(f);
        WeightFormats {
            ternary: any(|l| l.q_proj.is_ternary() || l.gate_proj.is_ternary()),
            blocks_hidden: any(|l| {
                [&l.q_proj, &l.k_proj, &l.v_proj, &l.gate_proj, &l.up_proj].iter().any(|m| m.is_quantized())
            }),
            blocks_attention: any(|l| l.o_proj.is_quantized()),
            blocks_mlp: any(|l| l.down_proj.is_quantized()),
            output_blocks: weights.output().is_quantized(),
        }
    }
}

/// A model's weights, handed out one part at a time (see the module doc).
/// The futures are not `Send`: on wasm they wait on JS promises.
pub trait WeightSource {
    fn config(&self) -> &ModelConfig;

    /// RoPE inverse frequencies, `head_dim / 2` of them, scaling applied.
    fn rope_inv_freq(&self) -> &[f64];

    fn formats(&self) -> WeightFormats;

    /// Number of layers [`WeightSource::layer`] serves.
    fn layer_count(&self) -> usize {
        self.config().num_hidden_layers
    }

    /// `[vocab][hidden]`.
    fn embed_tokens(&self) -> LocalFuture<'_, Result<Cow<'_, Matrix>>>;

    fn layer(&self, i: usize) -> LocalFuture<'_, Result<Cow<'_, LayerWeights>>>;

    /// The final norm's weight, `[hidden]`.
    fn norm(&self) -> LocalFuture<'_, Result<Cow<'_, [f32]>>>;

    /// `[vocab][hidden]`; `None` when tied to the embedding.
    fn lm_head(&self) -> LocalFuture<'_, Result<Option<Cow<'_, Matrix>>>>;
}

/// Decoded weights lend their parts.
impl WeightSource for ModelWeights {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn rope_inv_freq(&self) -> &[f64] {
        &self.rope_inv_freq
    }

    fn formats(&self) -> WeightFormats {
        WeightFormats::of(self)
    }

    fn layer_count(&self) -> usize {
        self.layers.len()
    }

    fn embed_tokens(&self) -> LocalFuture<'_, Result<Cow<'_, Matrix>>> {
        Box::pin(async move { Ok(Cow::Borrowed(&self.embed_tokens)) })
    }

    fn layer(&self, i: usize) -> LocalFuture<'_, Result<Cow<'_, LayerWeights>>> {
        let layer = self.layers.get(i).map(Cow::Borrowed).ok_or_else(|| Error::Invalid(format!("no layer {i}")));
        Box::pin(async move { layer })
    }

    fn norm(&self) -> LocalFuture<'_, Result<Cow<'_, [f32]>>> {
        Box::pin(async move { Ok(Cow::Borrowed(self.norm.as_slice())) })
    }

    fn lm_head(&self) -> LocalFuture<'_, Result<Option<Cow<'_, Matrix>>>> {
        Box::pin(async move { Ok(self.lm_head.as_ref().map(Cow::Borrowed)) })
    }
}

/// One file of a streamed checkpoint: its name (for errors) and its bytes.
pub struct StreamedFile {
    pub name: String,
    pub source: Box<dyn ByteSource>,
}

/// A checkpoint read by byte range: headers parsed, tensors read per part.
pub struct StreamedWeights {
    config: ModelConfig,
    rope_inv_freq: Vec<f64>,
    formats: WeightFormats,
    format: Streamed,
}

enum Streamed {
    Gguf { header: Gguf, file: StreamedFile },
    Safetensors { headers: SafetensorsHeaders, shards: Vec<StreamedFile> },
}

impl StreamedWeights {
    /// A GGUF: its header is read (metadata and tensor table, at most
    /// `max_header` bytes; [`crate::loader::gguf::MAX_STREAMED_HEADER`]), the
    /// config taken from its metadata, `rope_freqs.weight` read.
    pub async fn gguf(file: StreamedFile, max_header: u64) -> Result<Self> {
        let header = Gguf::read_header(&file.name, file.source.as_ref(), max_header).await?;
        let config = ModelConfig::from_gguf(&header)?;
        config.validate()?;
        let names: Vec<&str> =
            header.has_tensor(weights::GGUF_ROPE_FREQS).then_some(weights::GGUF_ROPE_FREQS).into_iter().collect();
        let rope = ReadGgufTensors { header: &header, bytes: read_gguf(&header, &file, &names).await? };
        let rope_inv_freq = weights::gguf_rope(&rope, &config)?;
        let formats = gguf_formats(&header, &config);
        Ok(StreamedWeights { config, rope_inv_freq, formats, format: Streamed::Gguf { header, file } })
    }

    /// A safetensors checkpoint (one file or its shards) with its parsed `config.json`.
    pub async fn safetensors(config: ModelConfig, shards: Vec<StreamedFile>) -> Result<Self> {
        config.validate()?;
        let sources: Vec<(String, &dyn ByteSource)> =
            shards.iter().map(|s| (s.name.clone(), s.source.as_ref())).collect();
        let headers = SafetensorsHeaders::read(&sources).await?;
        drop(sources);
        // Every Hugging Face BitNet linear becomes ternary (packed or
        // ternarized master weights); other models run dense.
        let formats = WeightFormats { ternary: config.architecture == Architecture::BitNet, ..Default::default() };
        let rope_inv_freq = weights::hf_rope(&config);
        Ok(StreamedWeights { config, rope_inv_freq, formats, format: Streamed::Safetensors { headers, shards } })
    }

    /// The parsed header of a streamed GGUF (its metadata holds the tokenizer).
    pub fn gguf_header(&self) -> Option<&Gguf> {
        match &self.format {
            Streamed::Gguf { header, .. } => Some(header),
            Streamed::Safetensors { .. } => None,
        }
    }

    /// The bytes of the largest part a load reads at once (a layer, the
    /// embedding or the output head): what a streamed load holds at most,
    /// besides the decoded copy.
    pub fn largest_part_bytes(&self) -> u64 {
        let mut parts: Vec<Vec<String>> = (0..self.config.num_hidden_layers).map(|i| self.layer_names(i)).collect();
        parts.extend([self.embed_names(), self.lm_head_names(), self.norm_names()]);
        parts.iter().map(|names| names.iter().map(|n| self.tensor_bytes(n)).sum::<u64>()).max().unwrap_or(0)
    }

    fn tensor_bytes(&self, name: &str) -> u64 {
        match &self.format {
            Streamed::Gguf { header, .. } => header.tensor_range(name).map_or(0, |(a, b)| b - a),
            Streamed::Safetensors { headers, .. } => headers.tensor_range(name).map_or(0, |(_, a, b)| b - a),
        }
    }

    /// The tensors of layer `i` (every tensor under its name prefix).
    fn layer_names(&self, i: usize) -> Vec<String> {
        let (prefix, names): (String, Vec<&str>) = match &self.format {
            Streamed::Gguf { header, .. } => {
                (weights::gguf_layer_prefix(i), header.tensors().iter().map(|t| t.name.as_str()).collect())
            }
            Streamed::Safetensors { headers, .. } => (weights::hf_layer_prefix(i), headers.names()),
        };
        names.into_iter().filter(|n| n.starts_with(&prefix)).map(str::to_string).collect()
    }

    fn embed_names(&self) -> Vec<String> {
        vec![self.pick(weights::GGUF_EMBED, weights::HF_EMBED).to_string()]
    }

    fn norm_names(&self) -> Vec<String> {
        vec![self.pick(weights::GGUF_NORM, weights::HF_NORM).to_string()]
    }

    fn lm_head_names(&self) -> Vec<String> {
        let present = match &self.format {
            Streamed::Gguf { header, .. } => header.has_tensor(weights::GGUF_OUTPUT),
            Streamed::Safetensors { headers, .. } => {
                weights::hf_has_lm_head(headers.contains(weights::HF_LM_HEAD), &self.config)
            }
        };
        match present {
            true => vec![self.pick(weights::GGUF_OUTPUT, weights::HF_LM_HEAD).to_string()],
            false => Vec::new(),
        }
    }

    fn pick<'a>(&self, gguf: &'a str, hf: &'a str) -> &'a str {
        match self.format {
            Streamed::Gguf { .. } => gguf,
            Streamed::Safetensors { .. } => hf,
        }
    }

    /// Read `names` and decode them with the GGUF or safetensors decoder.
    async fn decode<T>(
        &self,
        names: &[String],
        gguf: impl FnOnce(&ReadGgufTensors, &ModelConfig) -> Result<T>,
        hf: impl FnOnce(&ReadTensors, &ModelConfig) -> Result<T>,
    ) -> Result<T> {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        match &self.format {
            Streamed::Gguf { header, file } => {
                let read = ReadGgufTensors { header, bytes: read_gguf(header, file, &names).await? };
                gguf(&read, &self.config)
            }
            Streamed::Safetensors { headers, shards } => {
                let mut bytes = HashMap::with_capacity(names.len());
                for name in names {
                    let (shard, start, end) = headers.tensor_range(name)?;
                    let file = &shards[shard];
                    let what = format!("tensor '{name}'");
                    bytes.insert(
                        name.to_string(),
                        read_exact(file.source.as_ref(), &file.name, &what, start, end - start).await?,
                    );
                }
                hf(&ReadTensors { headers, bytes }, &self.config)
            }
        }
    }
}

/// The bytes of `names` in a streamed GGUF, one read per tensor.
async fn read_gguf(header: &Gguf, file: &StreamedFile, names: &[&str]) -> Result<HashMap<String, Vec<u8>>> {
    let mut bytes = HashMap::with_capacity(names.len());
    for &name in names {
        let (start, end) = header.tensor_range(name)?;
        let what = format!("tensor '{name}'");
        bytes.insert(name.to_string(), read_exact(file.source.as_ref(), &file.name, &what, start, end - start).await?);
    }
    Ok(bytes)
}

/// [`WeightFormats`] of a GGUF from its tensor headers, decided as the
/// decoding decides ([`weights::gguf_linear_kind`]). A ternary tensor whose
/// blocks have different scales is decoded dense; it then runs dense on
/// int8 activations that are made but unused.
fn gguf_formats(header: &Gguf, c: &ModelConfig) -> WeightFormats {
    let kind = |name: &str| header.tensor_info(name).map(weights::gguf_linear_kind).unwrap_or(GgufKind::Dense);
    let blocks = |name: &str| matches!(kind(name), GgufKind::Blocks(_));
    let mut f = WeightFormats::default();
    for i in 0..c.num_hidden_layers {
        let p = weights::gguf_layer_prefix(i);
        let name = |n: &str| format!("{p}{n}.weight");
        f.ternary |= [name("attn_q"), name("ffn_gate")].iter().any(|n| kind(n) == GgufKind::Ternary);
        f.blocks_hidden |= ["attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up"].iter().any(|n| blocks(&name(n)));
        f.blocks_attention |= blocks(&name("attn_output"));
        f.blocks_mlp |= blocks(&name("ffn_down"));
    }
    // The output is read as a dense tensor: ternary types are not kept ternary there.
    let output = if header.has_tensor(weights::GGUF_OUTPUT) { weights::GGUF_OUTPUT } else { weights::GGUF_EMBED };
    f.output_blocks =
        header.tensor_info(output).is_ok_and(|t| matches!(weights::gguf_dense_kind(t), GgufKind::Blocks(_)));
    f
}

impl WeightSource for StreamedWeights {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn rope_inv_freq(&self) -> &[f64] {
        &self.rope_inv_freq
    }

    fn formats(&self) -> WeightFormats {
        self.formats
    }

    fn embed_tokens(&self) -> LocalFuture<'_, Result<Cow<'_, Matrix>>> {
        Box::pin(async move {
            let names = self.embed_names();
            self.decode(&names, |g, c| weights::gguf_embed(g, c), |h, c| weights::hf_embed(h, c)).await.map(Cow::Owned)
        })
    }

    fn layer(&self, i: usize) -> LocalFuture<'_, Result<Cow<'_, LayerWeights>>> {
        Box::pin(async move {
            let names = self.layer_names(i);
            self.decode(&names, |g, c| weights::gguf_layer(g, c, i), |h, c| weights::hf_layer(h, c, i))
                .await
                .map(Cow::Owned)
        })
    }

    fn norm(&self) -> LocalFuture<'_, Result<Cow<'_, [f32]>>> {
        Box::pin(async move {
            let names = self.norm_names();
            self.decode(&names, |g, c| weights::gguf_norm(g, c), |h, c| weights::hf_norm(h, c)).await.map(Cow::Owned)
        })
    }

    fn lm_head(&self) -> LocalFuture<'_, Result<Option<Cow<'_, Matrix>>>> {
        Box::pin(async move {
            let names = self.lm_head_names();
            if names.is_empty() {
                return Ok(None);
            }
            let head =
                self.decode(&names, |g, c| weights::gguf_lm_head(g, c), |h, c| weights::hf_lm_head(h, c)).await?;
            Ok(head.map(Cow::Owned))
        })
    }
}
