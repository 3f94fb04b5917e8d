//! Linear layers on the GPU: a weight is uploaded in the format the
//! checkpoint gave it ([`LinearWeight`]), and the format alone decides
//! which op multiplies by it ([`linear_op`]): a dense f32/f16/bf16 matmul
//! reading the f32 activations, or a ternary (BitNet) or GGUF-block matmul
//! reading the int8 copy of its input that one quantize op wrote before it
//! ([`QuantizedInput`], [`quantize_op`]). The embedding gather and a tied
//! lm_head read the same uploaded table ([`embedding_op`]).

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer};
use crate::ops::Op;
use crate::ops::embedding::Embedding;
use crate::ops::matmul::{DenseWeight, Matmul};
use crate::ops::quant::{Q8Activations, QuantEmbedding, QuantMatmul, QuantWeight, QuantizeQ8};
use crate::ops::ternary::{Int8Activations, QuantizeInt8, TernaryMatmul, TernaryWeight};
use crate::weights::{Matrix, MatrixData};

/// A linear layer's weight on the GPU.
pub(crate) enum LinearWeight {
    Dense(DenseWeight),
    Ternary(TernaryWeight),
    /// GGUF Q4_0/Q4_1/Q8_0 blocks.
    Quant(QuantWeight),
}

impl LinearWeight {
    /// Upload `m`; GGUF blocks stay blocks when `native_quant`, else become f32.
    pub fn upload(gpu: &Gpu, label: &str, m: &Matrix, chunk_rows: Option<u32>, native_quant: bool) -> Result<Self> {
        let (rows, cols) = (m.rows as u32, m.cols as u32);
        Ok(match &m.data {
            MatrixData::F32(v) => {
                LinearWeight::Dense(DenseWeight::upload_f32_with_chunk_rows(gpu, label, v, rows, cols, chunk_rows)?)
            }
            MatrixData::F16(v) => {
                LinearWeight::Dense(DenseWeight::upload_f16_with_chunk_rows(gpu, label, v, rows, cols, chunk_rows)?)
            }
            MatrixData::Bf16(v) => {
                LinearWeight::Dense(DenseWeight::upload_bf16_with_chunk_rows(gpu, label, v, rows, cols, chunk_rows)?)
            }
            MatrixData::Ternary { values, scale, convention } => {
                LinearWeight::Ternary(TernaryWeight::from_ternary(gpu, label, values, rows, cols, *scale, *convention)?)
            }
            MatrixData::Quantized { format, blocks } if native_quant => LinearWeight::Quant(
                QuantWeight::upload_with_chunk_rows(gpu, label, *format, blocks, rows, cols, chunk_rows)?,
            ),
            MatrixData::Quantized { .. } => LinearWeight::Dense(DenseWeight::upload_f32_with_chunk_rows(
                gpu,
                label,
                &m.try_to_f32().map_err(|e| Error::Invalid(format!("weight '{label}': {e}")))?,
                rows,
                cols,
                chunk_rows,
            )?),
        })
    }
}

/// The int8 copy of one linear input, shared by every linear that reads it:
/// per-token (BitNet) or in blocks of 32 (GGUF Q4_0/Q4_1/Q8_0).
pub(crate) enum QuantizedInput {
    Int8(Int8Activations),
    Q8(Q8Activations),
}

/// The op that writes `input` from its f32 source `x`.
pub(crate) fn quantize_op(gpu: &Gpu, x: &GpuBuffer, input: &QuantizedInput) -> Result<Box<dyn Op>> {
    Ok(match input {
        QuantizedInput::Int8(a) => Box::new(QuantizeInt8::new(gpu, x, a)?),
        QuantizedInput::Q8(a) => Box::new(QuantizeQ8::new(gpu, x, a)?),
    })
}

/// The op of a linear layer `out = x · weightᵀ`, chosen by the weight's
/// format: dense weights read `x`, ternary and block weights read the int8
/// copy `x8` of it.
pub(crate) fn linear_op(
    gpu: &Gpu,
    weight: &LinearWeight,
    x: &GpuBuffer,
    x8: Option<&QuantizedInput>,
    out: &GpuBuffer,
    max_rows: u32,
) -> Result<Box<dyn Op>> {
    Ok(match (weight, x8) {
        (LinearWeight::Dense(w), _) => Box::new(Matmul::new(gpu, w, x, out, max_rows)?),
        (LinearWeight::Ternary(w), Some(QuantizedInput::Int8(x8))) => Box::new(TernaryMatmul::new(gpu, x8, w, out)?),
        (LinearWeight::Ternary(_), _) => {
            return Err(Error::Invalid("a ternary linear needs per-token int8 activations".into()));
        }
        (LinearWeight::Quant(w), Some(QuantizedInput::Q8(x8))) => Box::new(QuantMatmul::new(gpu, x8, w, out)?),
        (LinearWeight::Quant(w), _) => {
            return Err(Error::Invalid(format!(
                "'{}' ({:?} blocks) needs Q8 block activations, but its input is not quantized that way (a model mixing ternary and GGUF block linears on one input is not supported; load with native_quant off)",
                w.label, w.format
            )));
        }
    })
}

/// The embedding gather from `table` (dense, or GGUF blocks that a tied
/// lm_head then shares), ids → `out` rows.
pub(crate) fn embedding_op(
    gpu: &Gpu,
    table: &LinearWeight,
    ids: &GpuBuffer,
    out: &GpuBuffer,
    max_tokens: u32,
) -> Result<Box<dyn Op>> {
    Ok(match table {
        LinearWeight::Dense(t) => Box::new(Embedding::new(gpu, t, ids, out, max_tokens)?),
        LinearWeight::Quant(t) => Box::new(QuantEmbedding::new(gpu, t, ids, out, max_tokens)?),
        LinearWeight::Ternary(_) => {
            return Err(Error::Invalid("embed_tokens must be a dense matrix or GGUF blocks, not ternary".into()));
        }
    })
}
