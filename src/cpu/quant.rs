//! GGUF block-quantized linears (Q4_0, Q4_1, Q8_0) computed as llama.cpp
//! computes them: the activations are rounded to int8 blocks first, and each
//! block contributes an exact integer dot product times two scales. These
//! define what `shaders/quantize_q8.wgsl` and `shaders/matmul_q.wgsl` must
//! compute.
//!
//! Activations, per 32-element block along K (ggml's Q8_0 / Q8_1):
//! ```text
//! amax = max |x|          d = amax / 127          id = amax != 0 ? 127 / amax : 0
//! q    = round_half_even(x · id)                  (f32 product, as i8)
//! d_x  = f16_round(d)                             s_x = f16_round(d · Σ q)   (Q8_1 only)
//! ```
//! Weights (ggml block structs, little-endian, `d` and `m` f16):
//! ```text
//! Q4_0  18 bytes: d, qs[16]      element j = (qs[j] & 15) − 8, element j+16 = (qs[j] >> 4) − 8
//! Q4_1  20 bytes: d, m, qs[16]   element j = qs[j] & 15,       element j+16 = qs[j] >> 4;  value d·q + m
//! Q8_0  34 bytes: d, qs[32] i8
//! ```
//! Output, per token and row (Q4_1 reads Q8_1 activations, the others Q8_0):
//! ```text
//! y = Σ_blocks (d_w · d_x) · Σ_i q_w[i] · q_x[i]   (+ m_w · s_x for Q4_1)
//! ```
//! The integer block sums are exact; the reference accumulates the rest in f64.

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

/// Activations quantized to Q8 blocks: `rows` tokens of `k` features.
#[derive(Clone, Debug, PartialEq)]
pub struct Q8Rows {
    pub k: usize,
    /// `[rows][k]`.
    pub q: Vec<i8>,
    /// `[rows][k/32]`: `d_x`, f16-rounded.
    pub d: Vec<f32>,
    /// `[rows][k/32]`: Q8_1's `s_x = f16_round(d · Σq)` (d before rounding).
    pub s: Vec<f32>,
    /// `[rows][k/32]`: `Σ q` of each block.
    pub sum: Vec<i32>,
}

/// Quantize `x` `[rows][k]` block by block, in f32 exactly as llama.cpp does.
pub fn quantize_q8(x: &[f32], k: usize) -> Result<Q8Rows> {
    if k == 0 || !k.is_multiple_of(BLOCK) || !x.len().is_multiple_of(k) {
        return Err(Error::shape(
            "quantize_q8",
            format!("x has {} elements; k = {k} must be a positive multiple of {BLOCK} dividing it", x.len()),
        ));
    }
    let blocks = x.len() / BLOCK;
    let mut out = Q8Rows {
        k,
        q: Vec::with_capacity(x.len()),
        d: Vec::with_capacity(blocks),
        s: Vec::with_capacity(blocks),
        sum: Vec::with_capacity(blocks),
    };
    for block in x.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        let mut sum = 0i32;
        for v in block {
            let q = (v * id).round_ties_even().clamp(-128.0, 127.0) as i8;
            sum += q as i32;
            out.q.push(q);
        }
        out.d.push(f16_round(d));
        out.s.push(f16_round(d * sum as f32));
        out.sum.push(sum);
    }
    Ok(out)
}

/// `y[t][row] = Σ_blocks (d_w · d_x) · Σ q_w · q_x (+ m_w · s_x)` for weight
/// blocks `[n][k]` and quantized activations: exact integer block sums, f64
/// elsewhere. Returns `[tokens][n]`.
pub fn matmul_q(format: BlockFormat, blocks: &[u8], n: usize, k: usize, x: &Q8Rows) -> Result<Vec<f32>> {
    check_blocks("matmul_q", format, blocks.len(), n, k)?;
    if x.k != k {
        return Err(Error::shape("matmul_q", format!("activations have {} features, the weight {k}", x.k)));
    }
    let blocks_per_row = k / BLOCK;
    let tokens = x.q.len() / k;
    let weight: Vec<([i32; BLOCK], f32, f32)> =
        blocks.chunks_exact(format.block_bytes()).map(|b| block_values(format, b)).collect();
    let mut y = Vec::with_capacity(tokens * n);
    for t in 0..tokens {
        for row in 0..n {
            let mut acc = 0.0f64;
            for b in 0..blocks_per_row {
                let (q_w, d_w, m_w) = &weight[row * blocks_per_row + b];
                let xb = t * blocks_per_row + b;
                let q_x = &x.q[xb * BLOCK..(xb + 1) * BLOCK];
                let dot: i32 = q_w.iter().zip(q_x).map(|(&w, &x)| w * x as i32).sum();
                acc += *d_w as f64 * x.d[xb] as f64 * dot as f64;
                if format.has_min() {
                    acc += *m_w as f64 * x.s[xb] as f64;
                }
            }
            y.push(acc as f32);
        }
    }
    Ok(y)
}

/// A whole quantized linear: quantize `x` `[tokens][k]`, multiply by the
/// weight blocks `[n][k]`. Returns `[tokens][n]`.
pub fn linear_q(format: BlockFormat, blocks: &[u8], n: usize, k: usize, x: &[f32]) -> Result<Vec<f32>> {
    matmul_q(format, blocks, n, k, &quantize_q8(x, k)?)
}

/// Quantize f32 weights `[rows][k]` (k a multiple of 32) to file blocks with
/// round-to-nearest, in the manner of ggml's reference quantizers (not bit
/// for bit): for synthetic models in tests and benchmarks.
pub fn quantize_blocks(format: BlockFormat, w: &[f32]) -> Vec<u8> {
    assert!(w.len().is_multiple_of(BLOCK), "{} values are not whole blocks", w.len());
    let mut out = Vec::with_capacity(w.len() / BLOCK * format.block_bytes());
    for block in w.chunks_exact(BLOCK) {
        let (min, max) = block.iter().fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let extreme = if max.abs() > min.abs() { max } else { min };
        let (d, m) = match format {
            BlockFormat::Q4_0 => (extreme / -8.0, 0.0),
            BlockFormat::Q4_1 => ((max - min) / 15.0, min),
            BlockFormat::Q8_0 => (extreme.abs() / 127.0, 0.0),
        };
        let (d16, m16) = (f16::from_f32(d), f16::from_f32(m));
        let inverse = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(d16.to_le_bytes());
        let code = |v: f32, lo: f32, hi: f32| ((v - m) * inverse).round().clamp(lo, hi);
        match format {
            BlockFormat::Q8_0 => out.extend(block.iter().map(|&v| code(v, -127.0, 127.0) as i8 as u8)),
            BlockFormat::Q4_0 | BlockFormat::Q4_1 => {
                if format.has_min() {
                    out.extend(m16.to_le_bytes());
                }
                let offset = if format == BlockFormat::Q4_0 { 8.0 } else { 0.0 };
                let nibble = |v: f32| (code(v, -offset, 15.0 - offset) + offset) as u8;
                out.extend((0..16).map(|j| nibble(block[j]) | nibble(block[j + 16]) << 4));
            }
        }
    }
    out
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
    fn quantization_follows_llama_cpp_rounding() {
        // amax 127: id = 1, so the halves stay exact and round to even.
        let mut x = vec![0.0f32; 32];
        x[..6].copy_from_slice(&[127.0, 0.5, 1.5, -2.5, -0.5, 3.49]);
        let q = quantize_q8(&x, 32).unwrap();
        assert_eq!(&q.q[..6], &[127, 0, 2, -2, 0, 3]);
        assert_eq!(q.d[0], f16_round(1.0));
        assert_eq!(q.sum[0], 130);
        assert_eq!(q.s[0], f16_round(130.0));
        // An all-zero block has d = 0 and q = 0.
        let z = quantize_q8(&[0.0; 32], 32).unwrap();
        assert_eq!((z.d[0], z.s[0], z.sum[0]), (0.0, 0.0, 0));
        assert!(quantize_q8(&[0.0; 48], 48).is_err());
    }

    #[test]
    fn block_values_match_the_dequantizer() {
        let mut bytes = Vec::new();
        for (i, format) in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0].into_iter().enumerate() {
            bytes.clear();
            bytes.extend(f16::from_f32(0.75).to_le_bytes());
            if format.has_min() {
                bytes.extend(f16::from_f32(-1.5).to_le_bytes());
            }
            bytes.extend((0..format.block_bytes() - bytes.len()).map(|j| (j * 37 + i * 11) as u8));
            let expected = crate::loader::quants::dequantize(format.ggml_type(), &bytes, BLOCK).unwrap();
            let (q, d, m) = block_values(format, &bytes);
            let got: Vec<f32> = q.iter().map(|&v| d * v as f32 + m).collect();
            assert_eq!(got, expected, "{format:?}");
        }
    }

    #[test]
    fn quantized_blocks_dequantize_close_to_the_weights() {
        let w: Vec<f32> = (0..96).map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.3).collect();
        for format in [BlockFormat::Q4_0, BlockFormat::Q4_1, BlockFormat::Q8_0] {
            let blocks = quantize_blocks(format, &w);
            assert_eq!(blocks.len(), format.row_bytes(96));
            let back = crate::loader::quants::dequantize(format.ggml_type(), &blocks, 96).unwrap();
            let step = if format == BlockFormat::Q8_0 { 0.3 / 127.0 } else { 0.6 / 15.0 };
            assert!(w.iter().zip(&back).all(|(a, b)| (a - b).abs() <= step), "{format:?}: {back:?}");
        }
    }

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
