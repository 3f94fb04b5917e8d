//! Dense matmul `y = x · Wᵀ` and the 16-bit weight decodings, as the GPU
//! kernels of [`crate::ops::matmul`] must compute them.

use half::{bf16, f16};

/// `y[t][n] = Σ_k w[n][k] · x[t][k]` with `w` `[rows][cols]`, `x`
/// `[tokens][cols]`, `y` `[tokens][rows]`; accumulated in f64.
pub fn matmul(w: &[f32], x: &[f32], tokens: usize, rows: usize, cols: usize) -> Vec<f32> {
    assert_eq!(w.len(), rows * cols, "weight is not rows x cols");
    assert_eq!(x.len(), tokens * cols, "x is not tokens x cols");
    let mut y = Vec::with_capacity(tokens * rows);
    for x_row in x.chunks_exact(cols) {
        for w_row in w.chunks_exact(cols) {
            let dot: f64 = w_row.iter().zip(x_row).map(|(a, b)| *a as f64 * *b as f64).sum();
            y.push(dot as f32);
        }
    }
    y
}

/// IEEE f16 values widened to f32 (exact).
pub fn f16_to_f32(values: &[f16]) -> Vec<f32> {
    values.iter().map(|v| v.to_f32()).collect()
}

/// bfloat16 values widened to f32 (exact).
pub fn bf16_to_f32(values: &[bf16]) -> Vec<f32> {
    values.iter().map(|v| v.to_f32()).collect()
}
