//! RoPE frequencies and the cos/sin table, computed in f64 once, at load,
//! and uploaded: the GPU kernel only reads the table, because GPU `sin`/`cos`
//! lose precision on the large angles of late positions. The rotation itself
//! is `shaders/rope.wgsl`, with its CPU reference in `crate::cpu::rope`.

use std::f64::consts::PI;

/// Llama 3's frequency rescaling (`rope_scaling.rope_type = "llama3"` in
/// config.json): long wavelengths are stretched by `factor`, short ones are
/// kept, and the band between is blended smoothly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings`.
    pub original_max_position: f64,
}

impl Llama3RopeScaling {
    /// The values in Llama-3.2-1B's config.json.
    pub const LLAMA_3_2: Llama3RopeScaling =
        Llama3RopeScaling { factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8192.0 };

    /// Rescale one inverse frequency.
    pub fn apply(&self, inv_freq: f64) -> f64 {
        let wavelength = 2.0 * PI / inv_freq;
        let short_wavelength = self.original_max_position / self.high_freq_factor;
        let long_wavelength = self.original_max_position / self.low_freq_factor;
        if wavelength < short_wavelength {
            inv_freq
        } else if wavelength > long_wavelength {
            inv_freq / self.factor
        } else {
            let smooth = (self.original_max_position / wavelength - self.low_freq_factor)
                / (self.high_freq_factor - self.low_freq_factor);
            (1.0 - smooth) * inv_freq / self.factor + smooth * inv_freq
        }
    }
}

/// `inv_freq[i] = theta^(−2i/head_dim)` for `i < head_dim/2`, rescaled when
/// `scaling` is given.
pub fn rope_inv_freq(head_dim: usize, theta: f64, scaling: Option<Llama3RopeScaling>) -> Vec<f64> {
    (0..head_dim / 2)
        .map(|i| {
            let inv_freq = theta.powf(-((2 * i) as f64) / head_dim as f64);
            match scaling {
                Some(s) => s.apply(inv_freq),
                None => inv_freq,
            }
        })
        .collect()
}

/// The cos/sin table the GPU kernel reads: f32 `[max_positions][half][2]`,
/// holding `(cos, sin)` of `pos · inv_freq[i]` (computed in f64).
pub fn rope_table(inv_freq: &[f64], max_positions: usize) -> Vec<f32> {
    let mut table = Vec::with_capacity(max_positions * inv_freq.len() * 2);
    for pos in 0..max_positions {
        for &freq in inv_freq {
            let angle = pos as f64 * freq;
            table.push(angle.cos() as f32);
            table.push(angle.sin() as f32);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unscaled_frequencies_follow_theta() {
        let inv_freq = rope_inv_freq(128, 500000.0, None);
        assert_eq!(inv_freq.len(), 64);
        assert_eq!(inv_freq[0], 1.0);
        for (i, f) in inv_freq.iter().enumerate() {
            let expected = 1.0 / 500000f64.powf(i as f64 / 64.0);
            assert!((f - expected).abs() <= 1e-15 * expected, "inv_freq[{i}] = {f}, want {expected}");
        }
    }

    #[test]
    fn llama3_scaling_keeps_high_stretches_low_and_blends_between() {
        // Llama 3.2: head_dim 64, theta 500000. Wavelength 2π·500000^(i/32)
        // is under 8192/4 for i ≤ 14 and over 8192 for i ≥ 18.
        let plain = rope_inv_freq(64, 500000.0, None);
        let scaled = rope_inv_freq(64, 500000.0, Some(Llama3RopeScaling::LLAMA_3_2));
        for i in 0..32 {
            let (p, s) = (plain[i], scaled[i]);
            match i {
                0..=14 => assert_eq!(s, p, "i = {i} should be kept"),
                18.. => assert!((s - p / 32.0).abs() <= 1e-15 * p, "i = {i} should be divided by 32"),
                _ => assert!(s > p / 32.0 && s < p, "i = {i} should be blended: {s} vs {p}"),
            }
        }
        // The blend weight at i = 15 (by hand): 8192 / wavelength − 1, over 3.
        let wavelength = 2.0 * PI / plain[15];
        let smooth = (8192.0 / wavelength - 1.0) / 3.0;
        let expected = (1.0 - smooth) * plain[15] / 32.0 + smooth * plain[15];
        assert!((scaled[15] - expected).abs() <= 1e-15 * expected);
    }
}
