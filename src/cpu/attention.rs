//! Dense causal attention with grouped-query heads (GQA): the reference the
//! GPU kernel and, later, DeltaLLM's hybrid attention (Θ = 0) must match.
//!
//! Query head `h` reads KV head `h / (heads / kv_heads)`. The query at
//! position `p` sees keys `0..=p`:
//!
//! ```text
//! out_h(p) = Σ_j softmax_j(q_h(p) · k_j / √head_dim) · v_j
//! ```
//!
//! Scores and softmax are in f64 here, so the reference is the exact answer
//! the f32 GPU kernel approximates.

/// Attention of `rows` queries at positions `pos0..pos0 + rows`.
///
/// - `q`: `[rows][heads · head_dim]`
/// - `k`, `v`: the whole key/value sequence so far, `[pos0 + rows][kv_heads · head_dim]`
/// - returns `[rows][heads · head_dim]`
#[allow(clippy::too_many_arguments)]
pub fn causal_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    rows: usize,
    pos0: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    assert_eq!(k.len(), v.len());
    causal_attention_with_keys(q, v, rows, pos0, heads, kv_heads, head_dim, |_, _| k)
}

/// [`causal_attention`] where the query at `position` scores key `j`
/// against `keys(position, j)` (a `[pos0 + rows][kv_heads · head_dim]`
/// sequence): DeltaLLM's hybrid attention picks the full keys or k̂ per cell.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_with_keys<'a>(
    q: &[f32],
    v: &[f32],
    rows: usize,
    pos0: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    keys: impl Fn(usize, usize) -> &'a [f32],
) -> Vec<f32> {
    assert!(kv_heads > 0 && heads.is_multiple_of(kv_heads), "heads must be a multiple of kv_heads");
    let (q_width, kv_width) = (heads * head_dim, kv_heads * head_dim);
    assert_eq!(q.len(), rows * q_width);
    assert_eq!(v.len(), (pos0 + rows) * kv_width);
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut out = vec![0.0f32; rows * q_width];
    for m in 0..rows {
        let position = pos0 + m;
        for h in 0..heads {
            let query = &q[m * q_width + h * head_dim..][..head_dim];
            let kv_offset = (h / group) * head_dim;
            let scores: Vec<f64> = (0..=position)
                .map(|j| {
                    let key = &keys(position, j)[j * kv_width + kv_offset..][..head_dim];
                    query.iter().zip(key).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            let output = &mut out[m * q_width + h * head_dim..][..head_dim];
            for (d, o) in output.iter_mut().enumerate() {
                let value: f64 =
                    weights.iter().enumerate().map(|(j, w)| w * v[j * kv_width + kv_offset + d] as f64).sum();
                *o = (value / total) as f32;
            }
        }
    }
    out
}
