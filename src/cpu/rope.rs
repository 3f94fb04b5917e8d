//! Rotary position embedding (RoPE) with the `rotate_half` pairing used by
//! Hugging Face Llama and BitNet: in a head vector of size `head_dim`,
//! element `i` turns with element `i + head_dim/2` by the angle
//! `pos · inv_freq[i]`:
//!
//! ```text
//! v'[i]        = v[i]        · cos − v[i + half] · sin
//! v'[i + half] = v[i + half] · cos + v[i]        · sin
//! ```
//!
//! The frequencies and the cos/sin table live in `crate::format::rope`
//! (computed in f64 once, at load, and uploaded); this is the reference of
//! the rotation `shaders/rope.wgsl` applies with them.

/// Rotate, in place, `rows` rows of `heads` head vectors of size `head_dim`;
/// row `m` is the token at position `pos0 + m`. `table` is
/// [`crate::format::rope::rope_table`]'s.
pub fn apply_rope(x: &mut [f32], rows: usize, heads: usize, head_dim: usize, pos0: usize, table: &[f32]) {
    let half = head_dim / 2;
    assert_eq!(x.len(), rows * heads * head_dim);
    for (m, row) in x.chunks_exact_mut(heads * head_dim).enumerate() {
        let angles = &table[(pos0 + m) * half * 2..][..half * 2];
        for head in row.chunks_exact_mut(head_dim) {
            for i in 0..half {
                let (cos, sin) = (angles[2 * i] as f64, angles[2 * i + 1] as f64);
                let (a, b) = (head[i] as f64, head[i + half] as f64);
                head[i] = (a * cos - b * sin) as f32;
                head[i + half] = (b * cos + a * sin) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::rope::{rope_inv_freq, rope_table};

    #[test]
    fn position_zero_is_the_identity() {
        let table = rope_table(&rope_inv_freq(8, 10000.0, None), 1);
        let original: Vec<f32> = (0..16).map(|i| i as f32 * 0.37 - 2.0).collect();
        let mut x = original.clone();
        apply_rope(&mut x, 1, 2, 8, 0, &table);
        assert_eq!(x, original);
    }

    #[test]
    fn rotation_pairs_i_with_i_plus_half() {
        // One pair only: v = (1, 0 | 0, 0) at angle a gives (cos a, 0 | sin a, 0).
        let inv_freq = rope_inv_freq(4, 10000.0, None);
        let table = rope_table(&inv_freq, 4);
        let mut x = vec![1.0f32, 0.0, 0.0, 0.0];
        apply_rope(&mut x, 1, 1, 4, 3, &table);
        let angle = 3.0 * inv_freq[0];
        let expected = [angle.cos() as f32, 0.0, angle.sin() as f32, 0.0];
        for (a, b) in x.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{x:?} vs {expected:?}");
        }
    }

    #[test]
    fn scores_depend_only_on_relative_position() {
        let head_dim = 16;
        let table = rope_table(&rope_inv_freq(head_dim, 500000.0, None), 64);
        let q: Vec<f32> = (0..head_dim).map(|i| (i as f32 * 0.7).sin()).collect();
        let k: Vec<f32> = (0..head_dim).map(|i| (i as f32 * 1.3).cos()).collect();
        let score = |query_pos: usize, key_pos: usize| {
            let (mut a, mut b) = (q.clone(), k.clone());
            apply_rope(&mut a, 1, 1, head_dim, query_pos, &table);
            apply_rope(&mut b, 1, 1, head_dim, key_pos, &table);
            a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>()
        };
        let base = score(7, 3);
        for shift in [1, 10, 50] {
            assert!((score(7 + shift, 3 + shift) - base).abs() < 1e-5, "shift {shift}");
        }
    }
}
