//! Elementwise steps of a transformer block: the gated FFN activations and
//! the residual add. Computed in f64 and rounded once.

/// BitNet's FFN gate: `relu(gate)² · up`. Values pass f16's range, which is
/// why activations stay f32.
pub fn relu2_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len());
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let r = (g as f64).max(0.0);
            (r * r * u as f64) as f32
        })
        .collect()
}

/// Llama's FFN gate (SwiGLU): `silu(gate) · up`, `silu(g) = g / (1 + e^−g)`.
pub fn silu_mul(gate: &[f32], up: &[f32]) -> Vec<f32> {
    assert_eq!(gate.len(), up.len());
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| {
            let g = g as f64;
            (g / (1.0 + (-g).exp()) * u as f64) as f32
        })
        .collect()
}

/// The residual connection: `h += x`.
pub fn add_inplace(h: &mut [f32], x: &[f32]) {
    assert_eq!(h.len(), x.len());
    for (a, b) in h.iter_mut().zip(x) {
        *a += *b;
    }
}
