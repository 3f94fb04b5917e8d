//! DeltaLLM (docs/DESIGN.md §2): delta keys and context-aware hybrid attention,
//! the reference the GPU kernels of `shaders/delta_keys.wgsl` and
//! `shaders/attention_hybrid.wgsl` must match.
//!
//! Delta rule (§2.1), per KV head and element `i`, on post-RoPE keys:
//!
//! ```text
//! k̂_0 = Δk_0 = f16(k_0)                          # first row dense
//! t ≥ 1:  d = k_t[i] − k̂_{t−1}[i];  fire = |d| > Θ
//!         Δk_t[i] = fire ? f16(d) : 0;    k̂_t[i] = k̂_{t−1}[i] + Δk_t[i]
//! ```
//!
//! The GPU stores deltas as f16 ([`stored_delta`]: clamped to ±65504, then
//! rounded to nearest), and the reference moves by exactly the stored
//! delta, so Σ Δk = k̂ holds in the stored numbers and the error never
//! accumulates: |k_t[i] − k̂_t[i]| ≤ Θ where the element did not fire, and
//! ≤ |d − f16(d)| ≤ 2⁻¹¹·|d| (plus an f32 rounding of k̂) where it did. The
//! score error outside the window is therefore at most
//! (Θ + 2⁻¹¹·max|d|)·‖q‖₁: docs/DESIGN.md's Θ·‖q‖₁ plus the f16 term. With Θ = 0
//! this is not exact attention; the model runs dense attention then.
//!
//! Hybrid attention (§2.2): query `i` scores key `j ≤ i` exactly inside the
//! sinks and the local window, against the reference k̂ elsewhere:
//!
//! ```text
//! exact(i,j) = j < sinks || i − j < window
//! s(i,j)     = (exact(i,j) ? q_i·k_j : q_i·k̂_j) / √head_dim
//! ```
//!
//! then causal softmax and dense V. Scores and softmax are in f64 here.

/// The delta rule over `rows` keys `[rows][kv_heads · head_dim]`.
///
/// `reference_in` is k̂ `[kv_heads · head_dim]` left by the previous step of
/// the same sequence (decode continues from it); `None` starts a sequence,
/// whose first row is dense. Returns `(deltas, k_hat, reference_out)`: the
/// delta rows and k̂ rows, both `[rows][kv_heads · head_dim]`, and the last
/// k̂ row to carry into the next step.
pub fn delta_keys(
    k: &[f32],
    rows: usize,
    kv_heads: usize,
    head_dim: usize,
    theta: f32,
    reference_in: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let width = kv_heads * head_dim;
    assert_eq!(k.len(), rows * width, "k must be [rows][kv_heads · head_dim]");
    let mut reference = match reference_in {
        Some(r) => {
            assert_eq!(r.len(), width, "reference must be [kv_heads · head_dim]");
            r.to_vec()
        }
        None => vec![0.0; width],
    };
    let mut deltas = vec![0.0f32; rows * width];
    let mut k_hat = vec![0.0f32; rows * width];
    for t in 0..rows {
        let dense_row = t == 0 && reference_in.is_none();
        for i in 0..width {
            let key = k[t * width + i];
            let d = key - reference[i];
            if dense_row || d.abs() > theta {
                let stored = stored_delta(d);
                deltas[t * width + i] = stored;
                reference[i] += stored;
            }
            k_hat[t * width + i] = reference[i];
        }
    }
    (deltas, k_hat, reference)
}

/// A delta as the GPU stores it: clamped to the finite f16 range and
/// rounded to the nearest f16 (ties to even), back in f32.
pub fn stored_delta(d: f32) -> f32 {
    half::f16::from_f32(d.clamp(-65504.0, 65504.0)).to_f32()
}

/// Whether query position `i` scores key `j` against the full key.
pub fn is_exact(i: usize, j: usize, window: usize, sinks: usize) -> bool {
    j < sinks || i - j < window
}

/// Hybrid attention of `rows` queries at positions `pos0..pos0 + rows`.
///
/// - `q`: `[rows][heads · head_dim]`
/// - `k`, `k_hat`, `v`: the whole sequence so far, `[pos0 + rows][kv_heads · head_dim]`
/// - returns `[rows][heads · head_dim]`
#[allow(clippy::too_many_arguments)]
pub fn hybrid_attention(
    q: &[f32],
    k: &[f32],
    k_hat: &[f32],
    v: &[f32],
    rows: usize,
    pos0: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    window: usize,
    sinks: usize,
) -> Vec<f32> {
    assert_eq!(k.len(), v.len());
    assert_eq!(k_hat.len(), k.len());
    crate::cpu::attention::causal_attention_with_keys(q, v, rows, pos0, heads, kv_heads, head_dim, |position, j| {
        if is_exact(position, j, window, sinks) { k } else { k_hat }
    })
}

/// Sparsity as reported (docs/DESIGN.md §2.4) for one sequence of delta rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DeltaStats {
    /// zeros(ΔK) / numel(ΔK) over rows 1.. (row 0 is dense by definition).
    pub delta_sparsity: f64,
    /// 1 − MACs done for QKᵀ / MACs of dense causal QKᵀ, per query head.
    pub mac_sparsity: f64,
    /// The authors' figure: delta_sparsity · (1 − window / length).
    pub authors_sparsity: f64,
}

/// Statistics of delta rows `[rows][kv_heads · head_dim]` (a whole sequence
/// from position 0) under hybrid attention with `window` and `sinks`.
///
/// MACs done per (query i, KV head): `head_dim` for each exact key, plus
/// nnz(Δk_m) for every delta row of the prefix the non-exact keys need
/// (m ≤ i − window when key i − window is not a sink); the dense count is
/// `head_dim` for every causal key.
pub fn delta_stats(
    deltas: &[f32],
    rows: usize,
    kv_heads: usize,
    head_dim: usize,
    window: usize,
    sinks: usize,
) -> DeltaStats {
    let width = kv_heads * head_dim;
    assert_eq!(deltas.len(), rows * width);
    let row_nnz =
        |t: usize, g: usize| deltas[t * width + g * head_dim..][..head_dim].iter().filter(|x| **x != 0.0).count();
    let later_rows = rows.saturating_sub(1) * width;
    let zeros = deltas[width.min(deltas.len())..].iter().filter(|x| **x == 0.0).count();
    let delta_sparsity = if later_rows == 0 { 0.0 } else { zeros as f64 / later_rows as f64 };

    let (mut done, mut dense) = (0u64, 0u64);
    for g in 0..kv_heads {
        // prefix[m] = Σ_{t<m} nnz(Δk_t): the MACs of the prefix up to row m − 1.
        let mut prefix = vec![0u64; rows + 1];
        for t in 0..rows {
            prefix[t + 1] = prefix[t] + row_nnz(t, g) as u64;
        }
        for i in 0..rows {
            let exact = (0..=i).filter(|&j| is_exact(i, j, window, sinks)).count() as u64;
            done += exact * head_dim as u64;
            // The last non-exact key decides how far the delta prefix reaches.
            if let Some(last) = (0..=i).rev().find(|&j| !is_exact(i, j, window, sinks)) {
                done += prefix[last + 1];
            }
            dense += (i as u64 + 1) * head_dim as u64;
        }
    }
    let mac_sparsity = if dense == 0 { 0.0 } else { 1.0 - done as f64 / dense as f64 };
    let authors_sparsity =
        if rows == 0 { 0.0 } else { delta_sparsity * (1.0 - (window.min(rows) as f64) / rows as f64) };
    DeltaStats { delta_sparsity, mac_sparsity, authors_sparsity }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Smooth key trajectories: k_t = k_{t−1} + small noise (a cheap LCG, no
    /// dependency on rand in the library).
    fn smooth_keys(rows: usize, width: usize, step: f32, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let mut k = vec![0.0f32; rows * width];
        for x in &mut k[..width] {
            *x = 2.0 * next();
        }
        for t in 1..rows {
            for i in 0..width {
                k[t * width + i] = k[(t - 1) * width + i] + step * next();
            }
        }
        k
    }

    #[test]
    fn prefix_sum_of_deltas_is_k_hat_and_error_is_bounded() {
        let (rows, kv_heads, head_dim) = (40, 2, 8);
        let width = kv_heads * head_dim;
        let k = smooth_keys(rows, width, 0.1, 1);
        for theta in [0.0, 0.05, 0.3] {
            let (deltas, k_hat, reference) = delta_keys(&k, rows, kv_heads, head_dim, theta, None);
            let mut sum = vec![0.0f32; width];
            for t in 0..rows {
                for i in 0..width {
                    sum[i] += deltas[t * width + i];
                    // Each element's sum telescopes to k̂ (the same f32 additions).
                    assert_eq!(sum[i], k_hat[t * width + i], "Θ {theta} row {t}");
                    // Θ, or the f16 rounding of the last stored delta (|d| < 4 here).
                    let bound = theta.max(4.0 * F16_HALF_ULP) + 1e-6;
                    assert!((k[t * width + i] - k_hat[t * width + i]).abs() <= bound, "Θ {theta} row {t}");
                }
            }
            assert_eq!(reference, k_hat[(rows - 1) * width..]);
        }
    }

    /// Relative rounding of f16 (half an ulp at 1).
    const F16_HALF_ULP: f32 = 1.0 / 2048.0;

    #[test]
    fn theta_zero_keeps_every_key_up_to_f16_rounding() {
        let k = smooth_keys(10, 6, 0.1, 2);
        let (_, k_hat, _) = delta_keys(&k, 10, 2, 3, 0.0, None);
        for (a, b) in k.iter().zip(&k_hat) {
            assert!((a - b).abs() <= 4.0 * F16_HALF_ULP, "{a} vs {b}");
        }
    }

    #[test]
    fn stored_deltas_are_f16() {
        assert_eq!(stored_delta(1.0 + 1.0 / 4096.0), 1.0, "ties to even");
        assert_eq!(stored_delta(1e6), 65504.0, "clamped");
        assert_eq!(stored_delta(-0.25), -0.25);
    }

    #[test]
    fn decode_continues_from_the_reference() {
        let (rows, kv_heads, head_dim, theta) = (12, 1, 5, 0.05);
        let width = kv_heads * head_dim;
        let k = smooth_keys(rows, width, 0.1, 3);
        let whole = delta_keys(&k, rows, kv_heads, head_dim, theta, None);
        let (mut deltas, mut k_hat, mut reference) = delta_keys(&k[..7 * width], 7, kv_heads, head_dim, theta, None);
        for t in 7..rows {
            let step = delta_keys(&k[t * width..][..width], 1, kv_heads, head_dim, theta, Some(&reference));
            deltas.extend(step.0);
            k_hat.extend(step.1);
            reference = step.2;
        }
        assert_eq!((deltas, k_hat, reference), whole);
    }

    #[test]
    fn outside_window_scores_are_within_theta_times_q_l1() {
        let (rows, head_dim, theta) = (30, 16, 0.2);
        let k = smooth_keys(rows, head_dim, 0.3, 4);
        let q = smooth_keys(1, head_dim, 0.0, 5);
        let (deltas, k_hat, _) = delta_keys(&k, rows, 1, head_dim, theta, None);
        let q_l1: f32 = q.iter().map(|x| x.abs()).sum();
        // (Θ + 2⁻¹¹·max|Δk|)·‖q‖₁: the f16 rounding of the stored deltas.
        let largest = deltas.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let bound = (theta + F16_HALF_ULP * largest) * q_l1;
        for j in 0..rows {
            let exact: f32 = q.iter().zip(&k[j * head_dim..][..head_dim]).map(|(a, b)| a * b).sum();
            let approx: f32 = q.iter().zip(&k_hat[j * head_dim..][..head_dim]).map(|(a, b)| a * b).sum();
            assert!((exact - approx).abs() <= bound + 1e-5, "key {j}");
        }
    }

    #[test]
    fn hybrid_is_dense_attention_when_exact_everywhere_and_close_at_theta_zero() {
        let (rows, heads, kv_heads, head_dim) = (9, 4, 2, 8);
        let k = smooth_keys(rows, kv_heads * head_dim, 0.5, 6);
        let v = smooth_keys(rows, kv_heads * head_dim, 0.5, 7);
        let q = smooth_keys(rows, heads * head_dim, 0.5, 8);
        let (_, k_hat, _) = delta_keys(&k, rows, kv_heads, head_dim, 0.0, None);
        let dense = crate::cpu::attention::causal_attention(&q, &k, &v, rows, 0, heads, kv_heads, head_dim);
        let everywhere = hybrid_attention(&q, &k, &k_hat, &v, rows, 0, heads, kv_heads, head_dim, rows, 0);
        assert_eq!(everywhere, dense);
        // Θ = 0 outside a window of 2: k̂ is k up to the f16 rounding of the deltas.
        let hybrid = hybrid_attention(&q, &k, &k_hat, &v, rows, 0, heads, kv_heads, head_dim, 2, 1);
        for (a, b) in hybrid.iter().zip(&dense) {
            assert!((a - b).abs() < 1e-2, "{a} vs {b}");
        }
    }

    #[test]
    fn stats_count_zeros_and_macs() {
        // One KV head, head_dim 2, 3 rows: row 1 has one non-zero, row 2 none.
        let deltas = [1.0, 2.0, 0.5, 0.0, 0.0, 0.0];
        let stats = delta_stats(&deltas, 3, 1, 2, 1, 0);
        assert_eq!(stats.delta_sparsity, 3.0 / 4.0);
        // Query 0: exact key 0 (2 MACs). Query 1: exact key 1 (2) + prefix of
        // row 0 (2). Query 2: exact key 2 (2) + prefix rows 0..=1 (2 + 1).
        // Dense: 2 · (1 + 2 + 3) = 12.
        assert!((stats.mac_sparsity - (1.0 - 11.0 / 12.0)).abs() < 1e-12);
        // A window covering everything does every MAC.
        assert_eq!(delta_stats(&deltas, 3, 1, 2, 3, 0).mac_sparsity, 0.0);
    }
}
