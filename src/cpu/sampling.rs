//! Argmax and top-k over logits: the references for `shaders/argmax.wgsl`
//! and `shaders/topk.wgsl`, also used by the CPU [`crate::sampler`].
//!
//! The order is the one the GPU kernels use: larger value first, equal values
//! by lower id, NaN never chosen. Values compare with [`f32::total_cmp`],
//! which for numbers is the plain float order except that -0.0 ranks just
//! below +0.0 and denormals compare exactly (the GPU gets the same order from
//! integer keys, immune to fast-math and flushed denormals).

use std::cmp::Ordering;

/// The id the GPU kernels write where there is no answer (every value NaN,
/// or fewer than k numbers for top-k).
pub const NONE: u32 = u32::MAX;

/// The order of (id, value) picks: best first.
pub fn pick_order(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Index of the largest value (lowest index among equals), or `None` if
/// `logits` is empty or all NaN.
pub fn argmax(logits: &[f32]) -> Option<u32> {
    best_of(logits.iter().enumerate().map(|(i, &v)| (i as u32, v))).map(|(i, _)| i)
}

/// The best (id, value) pair by [`pick_order`], NaN values skipped.
pub fn best_of(pairs: impl IntoIterator<Item = (u32, f32)>) -> Option<(u32, f32)> {
    pairs.into_iter().filter(|(_, v)| !v.is_nan()).min_by(pick_order)
}

/// The `k` largest (id, value) pairs, best first (see [`pick_order`]).
/// Returns fewer than `k` when fewer than `k` values are numbers; the GPU
/// pads those slots with `(NONE, -inf)`.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    top_k_of(logits.iter().enumerate().map(|(i, &v)| (i as u32, v)), k)
}

/// [`top_k`] over arbitrary (id, value) pairs (ids assumed distinct).
pub fn top_k_of(pairs: impl IntoIterator<Item = (u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    let mut numbers: Vec<(u32, f32)> = pairs.into_iter().filter(|(_, v)| !v.is_nan()).collect();
    if k == 0 {
        return Vec::new();
    }
    // Partition first so a 128k vocabulary does not need a full sort.
    if numbers.len() > k {
        numbers.select_nth_unstable_by(k - 1, pick_order);
        numbers.truncate(k);
    }
    numbers.sort_unstable_by(pick_order);
    numbers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_lower_index_and_skips_nan() {
        assert_eq!(argmax(&[]), None);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), None);
        assert_eq!(argmax(&[1.0, 3.0, f32::NAN, 3.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN, f32::NEG_INFINITY]), Some(1));
        assert_eq!(argmax(&[-0.0, 0.0]), Some(1));
    }

    #[test]
    fn top_k_sorts_ties_by_id_and_stops_at_numbers() {
        let logits = [2.0, f32::NAN, 5.0, 2.0, -1.0, 5.0];
        assert_eq!(top_k(&logits, 3), vec![(2, 5.0), (5, 5.0), (0, 2.0)]);
        assert_eq!(top_k(&logits, 10).len(), 5);
        assert_eq!(top_k(&logits, 0), vec![]);
    }
}
