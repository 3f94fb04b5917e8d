//! GGUF block formats (Q4_0, Q4_1, Q8_0) as they are stored: the ggml
//! block structs in a file, and the GPU layout that `shaders/matmul_q.wgsl`
//! and `shaders/embedding_q.wgsl` read. The arithmetic on them (llama.cpp's
//! int8 activation rounding and block dot products) is the CPU reference in
//! `crate::cpu::quant`.
//!
//! Weights (ggml block structs, little-endian, `d` and `m` f16):
//! ```text
//! Q4_0  18 bytes: d, qs[16]      element j = (qs[j] & 15) − 8, element j+16 = (qs[j] >> 4) − 8
//! Q4_1  20 bytes: d, m, qs[16]   element j = qs[j] & 15,       element j+16 = qs[j] >> 4;  value d·q + m
//! Q8_0  34 bytes: d, qs[32] i8
//! ```

use crate::error::{Error, Result};
use crate::loader::quants::GgmlType;
use half::f16;

/// Elements per block, for every format here.
pub const BLOCK: usize = 32;

/// The GGUF block formats the engine multiplies without dequantizing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum BlockFormat {
    Q4_0,
    Q4_1,
    Q8_0,
}

impl BlockFormat {
    /// The native format of a ggml type, if it has one.
    pub fn from_ggml(ty: GgmlType) -> Option<Self> {
        match ty {
            GgmlType::Q4_0 => Some(BlockFormat::Q4_0),
            GgmlType::Q4_1 => Some(BlockFormat::Q4_1),
            GgmlType::Q8_0 => Some(BlockFormat::Q8_0),
            _ => None,
        }
    }

    pub fn ggml_type(self) -> GgmlType {
        match self {
            BlockFormat::Q4_0 => GgmlType::Q4_0,
            BlockFormat::Q4_1 => GgmlType::Q4_1,
            BlockFormat::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// Bytes of one block in the file.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q8_0 => 34,
        }
    }

    /// Where `qs` starts inside a block.
    fn qs_offset(self) -> usize {
        match self {
            BlockFormat::Q4_0 | BlockFormat::Q8_0 => 2,
            BlockFormat::Q4_1 => 4,
        }
    }

    /// u32 words of `qs` per block (16 bytes of nibbles, or 32 int8).
    pub fn words_per_block(self) -> usize {
        match self {
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => 4,
            BlockFormat::Q8_0 => 8,
        }
    }

    /// Bytes of one row of `cols` elements.
    pub fn row_bytes(self, cols: usize) -> usize {
        cols / BLOCK * self.block_bytes()
    }

    /// Whether the activations need Q8_1's `s` (the weight has an offset `m`).
    pub fn has_min(self) -> bool {
        self == BlockFormat::Q4_1
    }
}

/// Round to the nearest binary16 value (ties to even), as ggml's
/// `GGML_FP32_TO_FP16` does, and widen back (exactly).
pub fn f16_round(x: f32) -> f32 {
    f16::from_f32(x).to_f32()
}

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([bytes[at], bytes[at + 1]])).to_f32()
}

/// Check that a `[rows][cols]` matrix of `format` blocks has `len` bytes and `cols` is whole blocks.
pub fn check_blocks(op: &'static str, format: BlockFormat, len: usize, rows: usize, cols: usize) -> Result<()> {
    if rows == 0 || cols == 0 || !cols.is_multiple_of(BLOCK) {
        return Err(Error::shape(
            op,
            format!("{format:?} matrix is {rows}×{cols}; both must be positive and cols a multiple of {BLOCK}"),
        ));
    }
    let need = rows * format.row_bytes(cols);
    if len != need {
        return Err(Error::shape(op, format!("{format:?} {rows}×{cols} needs {need} bytes of blocks, got {len}")));
    }
    Ok(())
}

/// One weight block: its 32 integer values (the `−8` of Q4_0 applied), `d` and `m` (0 unless Q4_1).
pub fn block_values(format: BlockFormat, block: &[u8]) -> ([i32; BLOCK], f32, f32) {
    let qs = &block[format.qs_offset()..format.block_bytes()];
    let mut q = [0i32; BLOCK];
    match format {
        BlockFormat::Q8_0 => {
            for (v, &byte) in q.iter_mut().zip(qs) {
                *v = byte as i8 as i32;
            }
        }
        BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
            let offset = if format == BlockFormat::Q4_0 { 8 } else { 0 };
            for j in 0..16 {
                q[j] = (qs[j] & 15) as i32 - offset;
                q[j + 16] = (qs[j] >> 4) as i32 - offset;
            }
        }
    }
    let m = if format.has_min() { f16_at(block, 2) } else { 0.0 };
    (q, f16_at(block, 0), m)
}

/// Weight blocks in the GPU layout of `shaders/matmul_q.wgsl`.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuBlocks {
    /// u32 `[k/32 · words_per_block][rows]`: word `j` of block `b` of row `r`
    /// (bytes `4j .. 4j+3` of its `qs`, little-endian) at `(b · words_per_block + j) · rows + r`,
    /// so neighbouring invocations (rows) read neighbouring words.
    pub qs: Vec<u32>,
    /// f32 `[k/32][rows]` of `d`, or `[k/32][rows][2]` of `(d, m)` for Q4_1.
    pub scales: Vec<f32>,
}

/// Re-lay rows `[rows][k]` of file blocks for the GPU. Converting `d` and `m` to f32 is exact.
pub fn pack_gpu(format: BlockFormat, blocks: &[u8], rows: usize, k: usize) -> Result<GpuBlocks> {
    check_blocks("pack_gpu", format, blocks.len(), rows, k)?;
    let (blocks_per_row, words) = (k / BLOCK, format.words_per_block());
    let scales_per_block = if format.has_min() { 2 } else { 1 };
    let mut qs = vec![0u32; blocks_per_row * words * rows];
    let mut scales = vec![0f32; blocks_per_row * rows * scales_per_block];
    for (index, block) in blocks.chunks_exact(format.block_bytes()).enumerate() {
        let (row, b) = (index / blocks_per_row, index % blocks_per_row);
        let q = &block[format.qs_offset()..];
        for j in 0..words {
            qs[(b * words + j) * rows + row] = u32::from_le_bytes([q[4 * j], q[4 * j + 1], q[4 * j + 2], q[4 * j + 3]]);
        }
        let at = (b * rows + row) * scales_per_block;
        scales[at] = f16_at(block, 0);
        if format.has_min() {
            scales[at + 1] = f16_at(block, 2);
        }
    }
    Ok(GpuBlocks { qs, scales })
}

/// Pack int8 rows `[rows][k]` four per u32 (element `4i + b` in byte `b` of word `i`),
/// the activation layout of `shaders/quantize_q8.wgsl`.
pub fn pack_q8_rows(q: &[i8]) -> Vec<u32> {
    q.chunks(4).map(|c| c.iter().enumerate().fold(0u32, |w, (b, &v)| w | (v as u8 as u32) << (8 * b))).collect()
}

/// The inverse of [`pack_q8_rows`].
pub fn unpack_q8_rows(words: &[u32]) -> Vec<i8> {
    words.iter().flat_map(|w| w.to_le_bytes().map(|b| b as i8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_layout_interleaves_rows() {
        let format = BlockFormat::Q4_1;
        // Two rows of two blocks; byte values tell block and position apart.
        let blocks: Vec<u8> = (0..4u8)
            .flat_map(|block| {
                let mut b = vec![0u8; 20];
                b[..2].copy_from_slice(&f16::from_f32(block as f32).to_le_bytes());
                b[2..4].copy_from_slice(&f16::from_f32(-(block as f32)).to_le_bytes());
                for (j, v) in b[4..].iter_mut().enumerate() {
                    *v = block * 16 + j as u8;
                }
                b
            })
            .collect();
        let g = pack_gpu(format, &blocks, 2, 64).unwrap();
        // Row 1, block 0 is file block 2; its word 1 holds qs bytes 4..8.
        assert_eq!(g.qs[2 + 1], u32::from_le_bytes([36, 37, 38, 39]));
        // Block 1 of row 0 (file block 1): (d, m) at [1][0].
        assert_eq!(&g.scales[4..6], &[1.0, -1.0]);
        assert!(pack_gpu(format, &blocks, 2, 48).is_err());
    }
}
