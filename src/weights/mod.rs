//! Host-side model weights, named as the Hugging Face checkpoints name them,
//! loaded from a safetensors folder or a GGUF file. Both the GPU model and
//! the CPU reference are built from a [`ModelWeights`].
//!
//! GGUF facts handled here: llama.cpp names tensors `blk.N.attn_q.weight`
//! etc., stores q/k projection rows permuted for its interleaved RoPE (we
//! undo it so one rotate_half kernel serves every source), stores Llama-3
//! RoPE scaling as `rope_freqs.weight` factors, and may omit `output.weight`
//! (tied embeddings).

pub mod source;
pub mod synthetic;

pub use source::{StreamedFile, StreamedWeights, WeightFormats, WeightSource};

use crate::error::{Error, Result};
use crate::format::blocks::{BLOCK, BlockFormat};
use crate::format::ternary::ScaleConvention;
use crate::loader::config::{Architecture, ModelConfig, WeightScale};
use crate::loader::gguf::{Gguf, GgufTensors};
use crate::loader::quants::GgmlType;
use crate::loader::safetensors::{Dtype, SafeTensors, TensorLookup};
use half::{bf16, f16};
use std::path::Path;

/// The values of a `[rows][cols]` matrix, in the format they will live in on the GPU.
#[derive(Clone, Debug)]
pub enum MatrixData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    /// Ternary values in {-1, 0, 1} and the per-tensor scale (BitNet b1.58).
    Ternary {
        values: Vec<i8>,
        scale: f32,
        convention: ScaleConvention,
    },
    /// GGUF Q4_0/Q4_1/Q8_0 blocks as the file stores them (row-major, whole
    /// blocks per row), run natively with llama.cpp's arithmetic
    /// ([`crate::cpu::quant`]).
    Quantized {
        format: BlockFormat,
        blocks: Vec<u8>,
    },
}

/// A row-major `[rows][cols]` matrix (a linear's `[out_features][in_features]`).
#[derive(Clone, Debug)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: MatrixData,
}

impl Matrix {
    /// The dense values as f32 (ternary values unscaled; blocks dequantized).
    /// An error only for blocks that do not hold `rows × cols` values, which
    /// the loaders rule out but a hand-built matrix may have.
    pub fn try_to_f32(&self) -> Result<Vec<f32>> {
        Ok(match &self.data {
            MatrixData::F32(v) => v.clone(),
            MatrixData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            MatrixData::Bf16(v) => v.iter().map(|x| x.to_f32()).collect(),
            MatrixData::Ternary { values, .. } => values.iter().map(|&x| x as f32).collect(),
            MatrixData::Quantized { format, blocks } => {
                crate::loader::quants::dequantize(format.ggml_type(), blocks, self.rows * self.cols)?
            }
        })
    }

    /// [`Matrix::try_to_f32`] for matrices a loader made (the CPU reference
    /// and tests); panics on blocks of the wrong size.
    pub fn to_f32(&self) -> Vec<f32> {
        self.try_to_f32().expect("quantized matrix blocks were checked at load")
    }

    pub fn is_ternary(&self) -> bool {
        matches!(self.data, MatrixData::Ternary { .. })
    }

    pub fn is_quantized(&self) -> bool {
        matches!(self.data, MatrixData::Quantized { .. })
    }

    fn permute_rows(&mut self, map: impl Fn(usize) -> usize) {
        /// `row_len`: elements of `v` per matrix row.
        fn apply<T: Copy>(v: &mut Vec<T>, rows: usize, row_len: usize, map: &dyn Fn(usize) -> usize) {
            let mut out = v.clone();
            for dst in 0..rows {
                let src = map(dst);
                out[dst * row_len..(dst + 1) * row_len].copy_from_slice(&v[src * row_len..(src + 1) * row_len]);
            }
            *v = out;
        }
        let (rows, cols) = (self.rows, self.cols);
        match &mut self.data {
            MatrixData::F32(v) => apply(v, rows, cols, &map),
            MatrixData::F16(v) => apply(v, rows, cols, &map),
            MatrixData::Bf16(v) => apply(v, rows, cols, &map),
            MatrixData::Ternary { values, .. } => apply(values, rows, cols, &map),
            MatrixData::Quantized { format, blocks } => apply(blocks, rows, format.row_bytes(cols), &map),
        }
    }
}

/// One transformer block.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    pub input_layernorm: Vec<f32>,          // [hidden]
    pub q_proj: Matrix,                     // [heads * head_dim][hidden]
    pub k_proj: Matrix,                     // [kv_heads * head_dim][hidden]
    pub v_proj: Matrix,                     // [kv_heads * head_dim][hidden]
    pub o_proj: Matrix,                     // [hidden][heads * head_dim]
    pub attn_sub_norm: Option<Vec<f32>>,    // [heads * head_dim], BitNet only
    pub post_attention_layernorm: Vec<f32>, // [hidden]
    pub gate_proj: Matrix,                  // [intermediate][hidden]
    pub up_proj: Matrix,                    // [intermediate][hidden]
    pub down_proj: Matrix,                  // [hidden][intermediate]
    pub ffn_sub_norm: Option<Vec<f32>>,     // [intermediate], BitNet only
}

impl LayerWeights {
    /// The layer's seven linear matrices (q, k, v, o, gate, up, down).
    pub fn linears_mut(&mut self) -> [&mut Matrix; 7] {
        [
            &mut self.q_proj,
            &mut self.k_proj,
            &mut self.v_proj,
            &mut self.o_proj,
            &mut self.gate_proj,
            &mut self.up_proj,
            &mut self.down_proj,
        ]
    }
}

/// A whole model on the host.
#[derive(Clone, Debug)]
pub struct ModelWeights {
    pub config: ModelConfig,
    pub embed_tokens: Matrix, // [vocab][hidden]
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>, // [hidden]
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<Matrix>, // [vocab][hidden]
    /// RoPE inverse frequencies, `head_dim / 2` of them, scaling applied.
    pub rope_inv_freq: Vec<f64>,
}

impl ModelWeights {
    /// The output projection (the embedding when tied).
    pub fn output(&self) -> &Matrix {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens)
    }

    /// A copy with every GGUF block matrix dequantized to f32: what the GPU
    /// runs with `ModelOptions::native_quant` off, for the CPU reference to
    /// compare against. (With int8 activation rounding a whole model
    /// amplifies last-bit differences to about the size of the rounding
    /// itself, so GPU and CPU agree closely only on the dequantized path.)
    pub fn dequantized(&self) -> ModelWeights {
        let mut w = self.clone();
        let matrices = w.layers.iter_mut().flat_map(LayerWeights::linears_mut);
        for m in matrices.chain([&mut w.embed_tokens]).chain(w.lm_head.as_mut()) {
            if m.is_quantized() {
                m.data = MatrixData::F32(m.to_f32());
            }
        }
        w
    }

    /// Load from a folder with `config.json` + safetensors, or a `.gguf` file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            Self::from_hf_dir(path)
        } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
            Self::from_gguf(&Gguf::open(path)?)
        } else if path.exists() {
            Err(Error::Invalid(format!(
                "{}: expected a model folder (config.json + *.safetensors) or a .gguf file",
                path.display()
            )))
        } else {
            Err(Error::Invalid(format!("{}: no such file or folder", path.display())))
        }
    }

    /// A Hugging Face folder: `config.json`, optional `generation_config.json`,
    /// `model.safetensors` or `model.safetensors.index.json` (sharded).
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_hf_dir(dir)?;
        let index = dir.join("model.safetensors.index.json");
        let tensors = if index.exists() {
            SafeTensors::open_index(&index)?
        } else {
            let single = dir.join("model.safetensors");
            if single.exists() {
                SafeTensors::open(&single)?
            } else {
                let mut files: Vec<_> = std::fs::read_dir(dir)
                    .map_err(|source| Error::Io { path: dir.display().to_string(), source })?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                    .collect();
                files.sort();
                if files.is_empty() {
                    return Err(Error::Invalid(format!("{}: no *.safetensors files", dir.display())));
                }
                SafeTensors::open_files(&files)?
            }
        };
        Self::from_safetensors(config, &tensors)
    }

    /// Build from safetensors with the Hugging Face tensor names.
    pub fn from_safetensors(config: ModelConfig, st: &SafeTensors) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let layers = (0..c.num_hidden_layers).map(|i| hf_layer(st, c, i)).collect::<Result<Vec<_>>>()?;
        let embed_tokens = hf_embed(st, c)?;
        let lm_head = hf_lm_head(st, c)?;
        Ok(ModelWeights { norm: hf_norm(st, c)?, rope_inv_freq: hf_rope(c), config, embed_tokens, layers, lm_head })
    }

    /// Build from a GGUF file (llama.cpp tensor names).
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let config = ModelConfig::from_gguf(g)?;
        config.validate()?;
        let c = &config;
        let layers = (0..c.num_hidden_layers).map(|i| gguf_layer(g, c, i)).collect::<Result<Vec<_>>>()?;
        let embed_tokens = gguf_embed(g, c)?;
        let lm_head = gguf_lm_head(g, c)?;
        let rope_inv_freq = gguf_rope(g, c)?;
        Ok(ModelWeights { norm: gguf_norm(g, c)?, config, embed_tokens, layers, lm_head, rope_inv_freq })
    }
}

// The parts of a model, decoded from the tensors of one checkpoint format.
// A whole-file load calls them on the whole file; a streamed load
// (`super::source`) on the few tensors it has read for that part.

/// The tensor-name prefix of a Hugging Face layer.
pub(crate) fn hf_layer_prefix(i: usize) -> String {
    format!("model.layers.{i}.")
}

pub(crate) const HF_EMBED: &str = "model.embed_tokens.weight";
pub(crate) const HF_NORM: &str = "model.norm.weight";
pub(crate) const HF_LM_HEAD: &str = "lm_head.weight";

/// Layer `i` of a safetensors checkpoint.
pub(crate) fn hf_layer<T: TensorLookup + ?Sized>(st: &T, c: &ModelConfig, i: usize) -> Result<LayerWeights> {
    let (hidden, inter, q_dim, kv_dim) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim());
    let vector = |name: &str, len: usize| st.f32_with_shape(name, &[len]);
    let linear = |name: &str, rows: usize, cols: usize| hf_linear(st, c, name, rows, cols);
    let bitnet = c.architecture == Architecture::BitNet;
    let p = hf_layer_prefix(i);
    Ok(LayerWeights {
        input_layernorm: vector(&format!("{p}input_layernorm.weight"), hidden)?,
        q_proj: linear(&format!("{p}self_attn.q_proj.weight"), q_dim, hidden)?,
        k_proj: linear(&format!("{p}self_attn.k_proj.weight"), kv_dim, hidden)?,
        v_proj: linear(&format!("{p}self_attn.v_proj.weight"), kv_dim, hidden)?,
        o_proj: linear(&format!("{p}self_attn.o_proj.weight"), hidden, q_dim)?,
        attn_sub_norm: if bitnet { Some(vector(&format!("{p}self_attn.attn_sub_norm.weight"), q_dim)?) } else { None },
        post_attention_layernorm: vector(&format!("{p}post_attention_layernorm.weight"), hidden)?,
        gate_proj: linear(&format!("{p}mlp.gate_proj.weight"), inter, hidden)?,
        up_proj: linear(&format!("{p}mlp.up_proj.weight"), inter, hidden)?,
        down_proj: linear(&format!("{p}mlp.down_proj.weight"), hidden, inter)?,
        ffn_sub_norm: if bitnet { Some(vector(&format!("{p}mlp.ffn_sub_norm.weight"), inter)?) } else { None },
    })
}

pub(crate) fn hf_embed<T: TensorLookup + ?Sized>(st: &T, c: &ModelConfig) -> Result<Matrix> {
    hf_dense(st, HF_EMBED, c.vocab_size, c.hidden_size)
}

/// Whether the checkpoint has its own output projection (else it is tied to the embedding).
pub(crate) fn hf_has_lm_head(contains: bool, c: &ModelConfig) -> bool {
    contains && !c.tie_word_embeddings
}

pub(crate) fn hf_lm_head<T: TensorLookup + ?Sized>(st: &T, c: &ModelConfig) -> Result<Option<Matrix>> {
    match hf_has_lm_head(st.contains(HF_LM_HEAD), c) {
        true => Ok(Some(hf_dense(st, HF_LM_HEAD, c.vocab_size, c.hidden_size)?)),
        false => Ok(None),
    }
}

pub(crate) fn hf_norm<T: TensorLookup + ?Sized>(st: &T, c: &ModelConfig) -> Result<Vec<f32>> {
    st.f32_with_shape(HF_NORM, &[c.hidden_size])
}

pub(crate) fn hf_rope(c: &ModelConfig) -> Vec<f64> {
    crate::format::rope::rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling.map(rope_scaling))
}

/// The tensor-name prefix of a llama.cpp layer.
pub(crate) fn gguf_layer_prefix(i: usize) -> String {
    format!("blk.{i}.")
}

pub(crate) const GGUF_EMBED: &str = "token_embd.weight";
pub(crate) const GGUF_NORM: &str = "output_norm.weight";
pub(crate) const GGUF_OUTPUT: &str = "output.weight";
pub(crate) const GGUF_ROPE_FREQS: &str = "rope_freqs.weight";

/// A GGUF vector checked against its expected length.
fn gguf_vector<T: GgufTensors + ?Sized>(g: &T, name: &str, len: usize) -> Result<Vec<f32>> {
    expect_gguf_shape(g, name, &[len])?;
    g.tensor_f32(name)
}

/// Layer `i` of a GGUF (q/k rows un-permuted for Llama).
pub(crate) fn gguf_layer<T: GgufTensors + ?Sized>(g: &T, c: &ModelConfig, i: usize) -> Result<LayerWeights> {
    let (hidden, inter, q_dim, kv_dim, hd) = (c.hidden_size, c.intermediate_size, c.q_dim(), c.kv_dim(), c.head_dim);
    let vector = |name: &str, len: usize| gguf_vector(g, name, len);
    let linear = |name: &str, rows: usize, cols: usize| gguf_matrix(g, name, rows, cols);
    let bitnet = c.architecture == Architecture::BitNet;
    let p = gguf_layer_prefix(i);
    let mut q_proj = linear(&format!("{p}attn_q.weight"), q_dim, hidden)?;
    let mut k_proj = linear(&format!("{p}attn_k.weight"), kv_dim, hidden)?;
    if c.architecture == Architecture::Llama {
        unpermute_gguf_qk(&mut q_proj, c.num_attention_heads, hd);
        unpermute_gguf_qk(&mut k_proj, c.num_key_value_heads, hd);
    }
    Ok(LayerWeights {
        input_layernorm: vector(&format!("{p}attn_norm.weight"), hidden)?,
        q_proj,
        k_proj,
        v_proj: linear(&format!("{p}attn_v.weight"), kv_dim, hidden)?,
        o_proj: linear(&format!("{p}attn_output.weight"), hidden, q_dim)?,
        attn_sub_norm: if bitnet { Some(vector(&format!("{p}attn_sub_norm.weight"), q_dim)?) } else { None },
        post_attention_layernorm: vector(&format!("{p}ffn_norm.weight"), hidden)?,
        gate_proj: linear(&format!("{p}ffn_gate.weight"), inter, hidden)?,
        up_proj: linear(&format!("{p}ffn_up.weight"), inter, hidden)?,
        down_proj: linear(&format!("{p}ffn_down.weight"), hidden, inter)?,
        ffn_sub_norm: if bitnet { Some(vector(&format!("{p}ffn_sub_norm.weight"), inter)?) } else { None },
    })
}

pub(crate) fn gguf_embed<T: GgufTensors + ?Sized>(g: &T, c: &ModelConfig) -> Result<Matrix> {
    gguf_dense(g, GGUF_EMBED, c.vocab_size, c.hidden_size)
}

pub(crate) fn gguf_lm_head<T: GgufTensors + ?Sized>(g: &T, c: &ModelConfig) -> Result<Option<Matrix>> {
    match g.has_tensor(GGUF_OUTPUT) {
        true => Ok(Some(gguf_dense(g, GGUF_OUTPUT, c.vocab_size, c.hidden_size)?)),
        false => Ok(None),
    }
}

pub(crate) fn gguf_norm<T: GgufTensors + ?Sized>(g: &T, c: &ModelConfig) -> Result<Vec<f32>> {
    gguf_vector(g, GGUF_NORM, c.hidden_size)
}

/// RoPE inverse frequencies, with llama.cpp's `rope_freqs.weight` factors when present.
pub(crate) fn gguf_rope<T: GgufTensors + ?Sized>(g: &T, c: &ModelConfig) -> Result<Vec<f64>> {
    let hd = c.head_dim;
    let mut rope_inv_freq = crate::format::rope::rope_inv_freq(hd, c.rope_theta, c.rope_scaling.map(rope_scaling));
    if g.has_tensor(GGUF_ROPE_FREQS) {
        // llama.cpp divides the base frequencies by these factors.
        let factors = gguf_vector(g, GGUF_ROPE_FREQS, hd / 2)?;
        for (f, factor) in rope_inv_freq.iter_mut().zip(factors) {
            *f /= factor as f64;
        }
    }
    Ok(rope_inv_freq)
}

/// What a GGUF tensor becomes, decided from its header alone (so a
/// streamed load knows the GPU layouts before reading any weight).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum GgufKind {
    /// A ternary type (runs ternary when its blocks share one scale).
    Ternary,
    /// Q4_0/Q4_1/Q8_0 blocks kept as blocks.
    Blocks(BlockFormat),
    /// F32/F16/BF16 kept, other types dequantized to f32.
    Dense,
}

/// The kind of a tensor read with [`gguf_dense`].
pub(crate) fn gguf_dense_kind(info: &crate::loader::GgufTensorInfo) -> GgufKind {
    let cols = info.dims.first().copied().unwrap_or(0) as usize;
    match BlockFormat::from_ggml(info.ggml_type).filter(|_| cols.is_multiple_of(BLOCK)) {
        Some(format) => GgufKind::Blocks(format),
        None => GgufKind::Dense,
    }
}

/// The kind of a linear read with [`gguf_matrix`].
pub(crate) fn gguf_linear_kind(info: &crate::loader::GgufTensorInfo) -> GgufKind {
    if info.ggml_type.is_ternary() { GgufKind::Ternary } else { gguf_dense_kind(info) }
}

pub(crate) fn rope_scaling(s: crate::loader::config::RopeScaling) -> crate::format::rope::Llama3RopeScaling {
    crate::format::rope::Llama3RopeScaling {
        factor: s.factor,
        low_freq_factor: s.low_freq_factor,
        high_freq_factor: s.high_freq_factor,
        original_max_position: s.original_max_position_embeddings as f64,
    }
}

fn convention(scale: Option<WeightScale>) -> ScaleConvention {
    match scale {
        Some(WeightScale::Multiply) => ScaleConvention::Multiply,
        _ => ScaleConvention::Divide,
    }
}

/// A dense safetensors matrix kept in its stored precision.
fn hf_dense<T: TensorLookup + ?Sized>(st: &T, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    let t = st.tensor(name)?;
    t.expect_shape(&[rows, cols])?;
    let data = match t.dtype() {
        Dtype::F16 => {
            MatrixData::F16(bytemuck::pod_collect_to_vec::<u8, u16>(t.data()).into_iter().map(f16::from_bits).collect())
        }
        Dtype::BF16 => MatrixData::Bf16(
            bytemuck::pod_collect_to_vec::<u8, u16>(t.data()).into_iter().map(bf16::from_bits).collect(),
        ),
        _ => MatrixData::F32(t.to_f32()?),
    };
    Ok(Matrix { rows, cols, data })
}

/// A linear weight: BitNet's packed release (uint8 `[out/4][in]` + `weight_scale`),
/// BitNet master weights (ternarized with absmean at load), or dense.
fn hf_linear<T: TensorLookup + ?Sized>(
    st: &T,
    c: &ModelConfig,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<Matrix> {
    if c.architecture != Architecture::BitNet {
        return hf_dense(st, name, rows, cols);
    }
    let t = st.tensor(name)?;
    if t.dtype() == Dtype::U8 {
        t.expect_shape(&[rows / 4, cols])?;
        let values = crate::format::ternary::unpack_hf_packed(t.as_u8()?, rows, cols)?;
        let scale_name = name.replace(".weight", ".weight_scale");
        let scale = st.tensor(&scale_name)?.to_f32()?;
        let scale = *scale.first().filter(|s| s.is_finite() && **s != 0.0).ok_or_else(|| {
            Error::Invalid(format!("{scale_name}: expected one finite non-zero scale, got {scale:?}"))
        })?;
        Ok(Matrix { rows, cols, data: MatrixData::Ternary { values, scale, convention: convention(c.weight_scale) } })
    } else {
        // Master weights: ternarize with absmean as BitNet b1.58 training does.
        let dense = hf_dense(st, name, rows, cols)?.to_f32();
        let (values, scale) = ternarize_absmean(&dense);
        Ok(Matrix { rows, cols, data: MatrixData::Ternary { values, scale, convention: ScaleConvention::Multiply } })
    }
}

/// `scale = mean|W|`, `W_t = clamp(round(W / scale), -1, 1)`; `W ≈ W_t · scale`.
pub fn ternarize_absmean(w: &[f32]) -> (Vec<i8>, f32) {
    let mean = (w.iter().map(|x| x.abs() as f64).sum::<f64>() / w.len().max(1) as f64).max(1e-5) as f32;
    let values = w.iter().map(|x| (x / mean).round().clamp(-1.0, 1.0) as i8).collect();
    (values, mean)
}

/// A dense GGUF tensor: F32/F16/BF16 kept, Q4_0/Q4_1/Q8_0 kept as blocks,
/// other quantized types dequantized to f32.
fn gguf_dense<T: GgufTensors + ?Sized>(g: &T, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    let info = expect_gguf_shape(g, name, &[rows, cols])?;
    if let GgufKind::Blocks(format) = gguf_dense_kind(info) {
        let blocks = g.tensor_bytes(name)?.to_vec();
        crate::format::blocks::check_blocks("gguf tensor", format, blocks.len(), rows, cols)?;
        return Ok(Matrix { rows, cols, data: MatrixData::Quantized { format, blocks } });
    }
    let data = match info.ggml_type {
        GgmlType::F16 => MatrixData::F16(
            bytemuck::pod_collect_to_vec::<u8, u16>(g.tensor_bytes(name)?).into_iter().map(f16::from_bits).collect(),
        ),
        GgmlType::BF16 => MatrixData::Bf16(
            bytemuck::pod_collect_to_vec::<u8, u16>(g.tensor_bytes(name)?).into_iter().map(bf16::from_bits).collect(),
        ),
        _ => MatrixData::F32(g.tensor_f32(name)?),
    };
    Ok(Matrix { rows, cols, data })
}

/// A GGUF linear: ternary types stay ternary when they have one scale, else dense.
fn gguf_matrix<T: GgufTensors + ?Sized>(g: &T, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
    let info = g.tensor_info(name)?;
    if gguf_linear_kind(info) == GgufKind::Ternary {
        expect_gguf_shape(g, name, &[rows, cols])?;
        let t = g.tensor_ternary(name)?;
        let first = t.scales.first().copied().unwrap_or(0.0);
        if first != 0.0 && t.scales.iter().all(|&s| s == first) {
            return Ok(Matrix {
                rows,
                cols,
                data: MatrixData::Ternary { values: t.values, scale: first, convention: ScaleConvention::Multiply },
            });
        }
        log::warn!("{name}: ternary blocks with different scales; running it as a dense f32 matrix");
    }
    gguf_dense(g, name, rows, cols)
}

/// Undo llama.cpp's q/k row permutation: GGUF row `h*hd + 2i + j` holds HF
/// row `h*hd + j*hd/2 + i`, so HF's rotate_half pairing applies again.
fn unpermute_gguf_qk(m: &mut Matrix, heads: usize, head_dim: usize) {
    let half = head_dim / 2;
    debug_assert_eq!(m.rows, heads * head_dim);
    m.permute_rows(|hf_row| {
        let (h, r) = (hf_row / head_dim, hf_row % head_dim);
        let (j, i) = (r / half, r % half);
        h * head_dim + 2 * i + j
    });
}

/// The tensor's info after checking its (outermost-first) shape.
fn expect_gguf_shape<'a, T: GgufTensors + ?Sized>(
    g: &'a T,
    name: &str,
    shape: &[usize],
) -> Result<&'a crate::loader::GgufTensorInfo> {
    let info = g.tensor_info(name)?;
    if info.shape() != shape {
        return Err(Error::Invalid(format!(
            "{}: tensor '{name}' has shape {:?}, expected {shape:?} for this model's config",
            g.source(),
            info.shape()
        )));
    }
    Ok(info)
}
