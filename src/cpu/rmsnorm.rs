/// RMSNorm of each `dim`-long row of `x`: `x / sqrt(mean(x²) + eps) * weight`.
pub fn rmsnorm(x: &[f32], weight: &[f32], dim: usize, eps: f32) -> Vec<f32> {
    assert_eq!(weight.len(), dim);
    x.chunks_exact(dim)
        .flat_map(|row| {
            let mean_square = row.iter().map(|v| (*v as f64) * (*v as f64)).sum::<f64>() / dim as f64;
            let inv_rms = 1.0 / (mean_square + eps as f64).sqrt();
            row.iter().zip(weight).map(move |(v, w)| (*v as f64 * inv_rms * *w as f64) as f32)
        })
        .collect()
}
