//! BitNet b1.58 linear layers on the CPU: the ternary weight packings
//! (Hugging Face release and our GPU layout), per-token int8 activation
//! quantization, and the integer matrix product with its scales
//! (docs/DESIGN.md §3). These define what `shaders/quantize_int8.wgsl` and
//! `shaders/matmul_ternary.wgsl` must compute; the integer parts are exact,
//! so the GPU must match them bit for bit.
//!
//! BitLinear, per token (row of `x`):
//! ```text
//! s_x = 127 / max(|x|).clamp(min 1e-5)
//! x_q = round_half_even(x · s_x).clamp(−128, 127)
//! y   = (Σ_k x_q · w) / (s_x · weight_scale)      ScaleConvention::Divide
//! y   = (Σ_k x_q · w) / s_x · weight_scale        ScaleConvention::Multiply
//! ```

use crate::format::ternary::ScaleConvention;

/// Per-token absmax int8 quantization of `x` `[m][k]` (docs/DESIGN.md §3), in f32
/// arithmetic exactly as the GPU does it. Returns `x_q` `[m][k]` and the
/// scales `s_x` `[m]`.
pub fn quantize_int8(x: &[f32], k: usize) -> (Vec<i8>, Vec<f32>) {
    assert!(k > 0 && x.len() % k == 0, "x has {} elements, not a multiple of k = {k}", x.len());
    let mut x_q = Vec::with_capacity(x.len());
    let mut scales = Vec::with_capacity(x.len() / k);
    for row in x.chunks_exact(k) {
        let max_abs = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = 127.0f32 / max_abs.max(1e-5);
        scales.push(scale);
        x_q.extend(row.iter().map(|v| (v * scale).round_ties_even().clamp(-128.0, 127.0) as i8));
    }
    (x_q, scales)
}

/// `acc[t][row] = Σ_k x_q[t][k] · w[row][k]` in i32: x_q `[m][k]`, w `[n][k]`.
pub fn matmul_ternary_i32(x_q: &[i8], w: &[i8], m: usize, n: usize, k: usize) -> Vec<i32> {
    assert_eq!(x_q.len(), m * k, "x_q must be [m][k]");
    assert_eq!(w.len(), n * k, "w must be [n][k]");
    let mut acc = Vec::with_capacity(m * n);
    for x_row in x_q.chunks_exact(k) {
        for w_row in w.chunks_exact(k) {
            acc.push(x_row.iter().zip(w_row).map(|(&x, &w)| x as i32 * w as i32).sum());
        }
    }
    acc
}

/// The float output from the integer accumulators `acc` `[m][n]` and the
/// activation scales `[m]`, in f32 as the GPU computes it.
pub fn scale_output(
    acc: &[i32],
    x_scales: &[f32],
    n: usize,
    weight_scale: f32,
    convention: ScaleConvention,
) -> Vec<f32> {
    assert_eq!(acc.len(), x_scales.len() * n, "acc must be [m][n]");
    acc.chunks_exact(n)
        .zip(x_scales)
        .flat_map(|(row, &s)| {
            row.iter().map(move |&a| match convention {
                ScaleConvention::Divide => a as f32 / (s * weight_scale),
                ScaleConvention::Multiply => a as f32 / s * weight_scale,
            })
        })
        .collect()
}

/// A whole BitLinear: quantize `x` `[m][k]`, multiply by ternary `w` `[n][k]`,
/// scale. Returns `y` `[m][n]`.
pub fn bitlinear(
    x: &[f32],
    w: &[i8],
    m: usize,
    n: usize,
    k: usize,
    weight_scale: f32,
    convention: ScaleConvention,
) -> Vec<f32> {
    let (x_q, scales) = quantize_int8(x, k);
    let acc = matmul_ternary_i32(&x_q, w, m, n, k);
    scale_output(&acc, &scales, n, weight_scale, convention)
}
