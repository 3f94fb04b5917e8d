//! The output head's format on the GPU ([`HeadFormat`]): as the checkpoint
//! stores it, or a dense (f32/f16/bf16) head quantized at load to Q8_0
//! blocks (per 32 weights one f16 scale and 32 int8, 8.5 bits a weight).
//!
//! Why: a decode step of a model with a large vocabulary reads the whole
//! head, `vocab × hidden` weights, for one token; BitNet-2B4T's tied bf16
//! embedding is 2560 × 128256 × 2 B = 657 MB, most of a step. As Q8_0 it is
//! 349 MB and runs through the same ops as a GGUF Q8_0 head: the final
//! normed hidden state is rounded to Q8 blocks (`QuantizeQ8`) and multiplied
//! with exact int8 block dot products (`QuantMatmul`). A tied table becomes
//! one Q8_0 copy that the embedding gather reads too (`QuantEmbedding`), so
//! the embedding values move by at most half a quantization step as well.
//!
//! A head already in GGUF blocks is left as it is, and a hidden size that is
//! not whole blocks of 32 keeps the stored head (with a log line).

use super::linear::LinearWeight;
use crate::cpu::quant::quantize_blocks;
use crate::error::Result;
use crate::format::blocks::{BLOCK, BlockFormat};
use crate::gpu::Gpu;
use crate::ops::quant::QuantWeight;
use crate::weights::{Matrix, MatrixData, WeightFormats};
use serde::Serialize;

/// How the output head (the lm_head, or the embedding it is tied to) is
/// stored on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadFormat {
    /// As the checkpoint stores it (bf16, f16, f32, or GGUF blocks).
    #[default]
    Stored,
    /// A dense head quantized to Q8_0 blocks at load: half the bytes of
    /// bf16 per decode step, logits within Q8_0's rounding of the stored ones.
    #[value(name = "q8_0")]
    Q8_0,
}

/// Rows quantized at a time, so the f32 copy of a row range stays small
/// (4096 rows of 2560 are 40 MB) however large the table.
const QUANTIZE_ROWS: usize = 4096;

/// Whether the head of a model with `formats` and `hidden` features runs on
/// Q8_0 blocks made at load: asked for, dense in the checkpoint, and whole
/// blocks per row. Decided from the formats alone, before any weight is
/// read, since it sizes the activations (`Activations::x8_final`).
pub(crate) fn quantizes_at_load(format: HeadFormat, formats: &WeightFormats, hidden: usize) -> bool {
    if format != HeadFormat::Q8_0 || !formats.output_dense {
        return false;
    }
    if !hidden.is_multiple_of(BLOCK) {
        log::warn!(
            "--lm-head q8_0: hidden size {hidden} is not a multiple of {BLOCK}; the output head stays as stored"
        );
        return false;
    }
    true
}

/// Q8_0 blocks of a dense `[rows][cols]` matrix (cols whole blocks), made
/// [`QUANTIZE_ROWS`] rows at a time; `None` when `m` is not dense. A NaN
/// weight becomes 0; an infinite one makes its block's scale infinite.
pub(crate) fn q8_0_blocks(m: &Matrix) -> Option<Vec<u8>> {
    let rows_f32 = |first: usize, count: usize| -> Option<Vec<f32>> {
        let range = first * m.cols..(first + count) * m.cols;
        Some(match &m.data {
            MatrixData::F32(v) => v[range].to_vec(),
            MatrixData::F16(v) => v[range].iter().map(|x| x.to_f32()).collect(),
            MatrixData::Bf16(v) => v[range].iter().map(|x| x.to_f32()).collect(),
            MatrixData::Ternary { .. } | MatrixData::Quantized { .. } => return None,
        })
    };
    if m.cols == 0 || !m.cols.is_multiple_of(BLOCK) {
        return None;
    }
    let mut blocks = Vec::with_capacity(m.rows * BlockFormat::Q8_0.row_bytes(m.cols));
    for first in (0..m.rows).step_by(QUANTIZE_ROWS) {
        let count = QUANTIZE_ROWS.min(m.rows - first);
        blocks.extend(quantize_blocks(BlockFormat::Q8_0, &rows_f32(first, count)?));
    }
    Some(blocks)
}

/// Upload the head (or the tied embedding) `m` as Q8_0 blocks; a matrix
/// that is not dense is uploaded as it is.
pub(crate) fn upload_q8_0(
    gpu: &Gpu,
    label: &str,
    m: &Matrix,
    chunk_rows: Option<u32>,
    native_quant: bool,
) -> Result<LinearWeight> {
    match q8_0_blocks(m) {
        Some(blocks) => Ok(LinearWeight::Quant(QuantWeight::upload_with_chunk_rows(
            gpu,
            label,
            BlockFormat::Q8_0,
            &blocks,
            m.rows as u32,
            m.cols as u32,
            chunk_rows,
        )?)),
        None => {
            log::warn!("'{label}' is not a dense matrix; it is uploaded as stored, not as Q8_0");
            LinearWeight::upload(gpu, label, m, chunk_rows, native_quant)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::{bf16, f16};

    #[test]
    fn blocks_made_in_row_ranges_equal_the_whole_matrix_quantized() {
        let (rows, cols) = (QUANTIZE_ROWS + 3, 64);
        let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1009) as f32 / 504.0 - 1.0) * 0.1).collect();
        let whole = quantize_blocks(BlockFormat::Q8_0, &values);
        let f32s = Matrix { rows, cols, data: MatrixData::F32(values.clone()) };
        assert_eq!(q8_0_blocks(&f32s).unwrap(), whole);
        // bf16 and f16 are widened exactly before quantizing.
        let b: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
        let widened: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
        let bf16s = Matrix { rows, cols, data: MatrixData::Bf16(b) };
        assert_eq!(q8_0_blocks(&bf16s).unwrap(), quantize_blocks(BlockFormat::Q8_0, &widened));
        let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let widened: Vec<f32> = h.iter().map(|v| v.to_f32()).collect();
        let f16s = Matrix { rows, cols, data: MatrixData::F16(h) };
        assert_eq!(q8_0_blocks(&f16s).unwrap(), quantize_blocks(BlockFormat::Q8_0, &widened));
    }

    #[test]
    fn only_dense_whole_block_matrices_are_quantized() {
        let odd = Matrix { rows: 2, cols: 48, data: MatrixData::F32(vec![0.5; 96]) };
        assert!(q8_0_blocks(&odd).is_none());
        let blocks = quantize_blocks(BlockFormat::Q8_0, &[0.5; 64]);
        let quantized = Matrix { rows: 2, cols: 32, data: MatrixData::Quantized { format: BlockFormat::Q8_0, blocks } };
        assert!(q8_0_blocks(&quantized).is_none());
        let formats = WeightFormats { output_dense: true, ..Default::default() };
        assert!(quantizes_at_load(HeadFormat::Q8_0, &formats, 64));
        assert!(!quantizes_at_load(HeadFormat::Q8_0, &formats, 80));
        assert!(!quantizes_at_load(HeadFormat::Stored, &formats, 64));
        assert!(!quantizes_at_load(HeadFormat::Q8_0, &WeightFormats::default(), 64));
    }

    #[test]
    fn non_finite_weights_do_not_panic() {
        let mut values = vec![0.25f32; 64];
        values[3] = f32::NAN;
        values[40] = f32::INFINITY;
        let m = Matrix { rows: 1, cols: 64, data: MatrixData::F32(values) };
        assert_eq!(q8_0_blocks(&m).unwrap().len(), 2 * 34);
    }
}
