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
use crate::format::blocks::{BLOCK, BlockFormat, block_values, check_blocks, f16_round};
use half::f16;

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
}
