//! DeltaLLM in the model (docs/DESIGN.md §2): the options a user sets, each layer's
//! delta ops, Θ calibrated from a target sparsity, and the statistics of
//! §2.4 counted from the delta rows the GPU built.
//!
//! Per layer and step the model runs `append → delta keys → hybrid
//! attention` (see [`crate::ops::delta`]) in place of the dense `append →
//! attend`. Two values are fixed when a sequence starts (the first forward
//! after a reset, whose tokens are the prompt):
//!
//! - the context-aware window `W = max(W_min, round(window_scale · L_prompt))`;
//! - with a target sparsity P, each layer's Θ: the prompt is first run with
//!   Θ = 0 (the dense model's keys, up to rounding), then Θ_l is the value at
//!   which the delta rule over layer l's prompt keys zeroes a fraction P of
//!   the delta elements. Layer l's real keys then differ slightly from the
//!   calibration keys, because the layers below it now approximate too.
//!
//! Statistics are counted on the CPU from the delta masks read back after
//! generation (one popcount per row), so they cost nothing during a step.

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer};
use crate::loader::config::Architecture;
use crate::ops::attention::KvCache;
use crate::ops::delta::{DeltaCache, DeltaKeys};
use crate::ops::hybrid::HybridAttention;
use serde::Serialize;

mod control;
mod stats;

pub use stats::*;

/// Where hybrid attention replaces dense attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeltaStage {
    /// Only the prompt's steps; decode steps attend densely (their keys still
    /// become delta rows, so the statistics and the reference stay whole).
    Prefill,
    /// Prompt and decode steps.
    #[default]
    Both,
}

/// DeltaLLM's knobs (docs/DESIGN.md §2). The defaults are starting points to
/// calibrate, not tuned values.
#[derive(Clone, Debug, PartialEq)]
pub struct DeltaOptions {
    /// Θ of the delta rule for every layer (0 = every key kept: dense
    /// attention up to rounding). Ignored when `target_sparsity` is set.
    pub threshold: f32,
    /// W_min: the smallest local window, in tokens (the query's own key counts).
    pub window_min: u32,
    /// The window grows with the prompt: `W = max(W_min, round(window_scale · L_prompt))`.
    pub window_scale: f32,
    /// Sink tokens at the start of the sequence, always scored exactly.
    pub sinks: u32,
    pub stage: DeltaStage,
    /// Calibrate Θ per layer so that this fraction of the prompt's delta
    /// elements is zero (in `[0, 1)`).
    pub target_sparsity: Option<f32>,
    /// Keep the full K cache beside the deltas even where the compressed
    /// one would do (for tests and [`crate::model::Model::layer_keys`]).
    pub keep_full_keys: bool,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        DeltaOptions {
            threshold: 0.5,
            window_min: 1,
            window_scale: 0.05,
            sinks: 0,
            stage: DeltaStage::Both,
            target_sparsity: None,
            keep_full_keys: false,
        }
    }
}

impl DeltaOptions {
    /// The defaults with a per-model Θ: 0.6 for BitNet (the authors' code
    /// used it on BitNet keys), 0.5 otherwise. Uncalibrated starting points.
    pub fn for_architecture(architecture: Architecture) -> Self {
        let threshold = match architecture {
            Architecture::BitNet => 0.6,
            Architecture::Llama => 0.5,
        };
        DeltaOptions { threshold, ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.threshold.is_finite() && self.threshold >= 0.0) {
            return Err(Error::Invalid(format!(
                "the delta threshold Θ must be a finite number ≥ 0 (0 = dense attention), got {}",
                self.threshold
            )));
        }
        if !(self.window_scale.is_finite() && self.window_scale >= 0.0) {
            return Err(Error::Invalid(format!(
                "the window scale must be a finite number ≥ 0 (a fraction of the prompt length), got {}",
                self.window_scale
            )));
        }
        if self.window_min == 0 {
            return Err(Error::Invalid(
                "the minimum window must be at least 1 (the query's own key is always scored exactly); \
                 use --window 1 or more"
                    .into(),
            ));
        }
        if let Some(p) = self.target_sparsity
            && !(0.0..1.0).contains(&p)
        {
            return Err(Error::Invalid(format!(
                "the target delta sparsity must be in [0, 1) (e.g. 0.6 for 60 % zeros), got {p}"
            )));
        }
        Ok(())
    }

    /// The context-aware window for a prompt of `prompt_len` tokens.
    pub fn window(&self, prompt_len: u32) -> u32 {
        let scaled = (self.window_scale as f64 * prompt_len as f64).round() as u32;
        self.window_min.max(scaled)
    }

    /// Whether the model may attend densely, which needs every full key:
    /// Θ = 0 (dense attention), DeltaLLM in prefill only (dense decode), or
    /// when asked to.
    pub fn needs_full_keys(&self) -> bool {
        self.keep_full_keys
            || self.stage == DeltaStage::Prefill
            || (self.threshold == 0.0 && self.target_sparsity.is_none())
    }

    /// `(sink_rows, ring_rows)` of the K cache for `max_seq` positions and
    /// steps of up to `max_rows` rows: the sinks, and a ring holding the
    /// largest window any prompt can fix plus a step's rows; the full
    /// cache `(0, max_seq)` when dense attention may run.
    pub fn key_ring(&self, max_seq: u32, max_rows: u32) -> (u32, u32) {
        if self.needs_full_keys() {
            return (0, max_seq);
        }
        let sink_rows = self.sinks.min(max_seq);
        let ring_rows = (self.window(max_seq) as u64 + max_rows as u64 - 1).min((max_seq - sink_rows) as u64);
        (sink_rows, ring_rows as u32)
    }
}

/// One layer's DeltaLLM ops and their delta rows.
pub(crate) struct LayerDelta {
    pub cache: DeltaCache,
    pub keys: DeltaKeys,
    pub hybrid: HybridAttention,
}

impl LayerDelta {
    /// Ops for up to `rows` tokens per step, reading the step's post-RoPE
    /// keys `k` and queries `q`, writing the attention output to `out`;
    /// the keys are built with Θ = `theta` until [`LayerDelta::set_theta`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        gpu: &Gpu,
        label: &str,
        kv: &KvCache,
        q: &GpuBuffer,
        k: &GpuBuffer,
        out: &GpuBuffer,
        rows: u32,
        heads: u32,
        options: &DeltaOptions,
        theta: f32,
    ) -> Result<Self> {
        let cache = DeltaCache::new(gpu, label, kv.kv_heads, kv.head_dim, kv.max_seq)?;
        let keys = DeltaKeys::new(gpu, &cache, k, rows, theta)?;
        let hybrid = HybridAttention::new(gpu, kv, &cache, q, out, rows, heads, options.window_min, options.sinks)?;
        Ok(LayerDelta { cache, keys, hybrid })
    }

    /// The next step's rows and position, after making room for its delta
    /// rows (see [`DeltaCache::reserve`]).
    pub fn set_step(&mut self, gpu: &Gpu, rows: u32, pos0: u32) -> Result<()> {
        self.cache.reserve(gpu, rows, pos0)?;
        self.keys.set_step(gpu, &self.cache, rows, pos0)?;
        self.hybrid.set_step(gpu, &self.cache, rows, pos0)
    }

    /// Build the keys with Θ = `theta` from the next step on (the value
    /// itself is owned by [`DeltaState::thresholds`]).
    pub fn set_theta(&mut self, gpu: &Gpu, theta: f32) -> Result<()> {
        self.keys.set_theta(gpu, theta)
    }
}

/// The model's DeltaLLM state between steps; the options themselves are
/// the model's (`ModelOptions::delta`).
pub(crate) struct DeltaState {
    /// Θ of each layer: the one copy the model steps by (the GPU's parameter
    /// buffers are written from it). All `options.threshold` unless calibrated.
    pub thresholds: Vec<f32>,
    /// Tokens of the prompt of the current sequence (0 before it starts).
    pub prompt_len: u32,
    /// The window fixed from the prompt.
    pub window: u32,
}

impl DeltaState {
    pub fn new(options: &DeltaOptions, layers: usize) -> Self {
        DeltaState { thresholds: vec![options.threshold; layers], prompt_len: 0, window: options.window_min }
    }

    /// Whether a step starting at `pos0` uses hybrid attention.
    pub fn hybrid_at(&self, options: &DeltaOptions, pos0: u32) -> bool {
        options.stage == DeltaStage::Both || pos0 < self.prompt_len
    }
}

/// Keys `[rows][kv_heads · head_dim]` of positions `0..rows` from a KV
/// cache's `k` read back as `[kv_heads][max_seq][head_dim]`.
pub(crate) fn keys_from_cache(k: &[f32], rows: usize, kv_heads: usize, head_dim: usize, max_seq: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * kv_heads * head_dim);
    for t in 0..rows {
        for g in 0..kv_heads {
            out.extend_from_slice(&k[(g * max_seq + t) * head_dim..][..head_dim]);
        }
    }
    out
}

/// Fraction of the delta elements of rows 1.. that the delta rule zeroes
/// at threshold `theta`, over keys `[rows][width]` (the rule runs per
/// element, so KV heads need not be told apart).
fn delta_sparsity_at(keys: &[f32], rows: usize, width: usize, theta: f32) -> f64 {
    if rows < 2 {
        return 0.0;
    }
    let mut reference: Vec<f32> = keys[..width].iter().map(|&k| crate::cpu::delta::stored_delta(k)).collect();
    let mut zeros = 0u64;
    for row in keys[width..].chunks(width) {
        for (r, &key) in reference.iter_mut().zip(row) {
            // The same f32 compare and f16 step as the kernel.
            let d = key - *r;
            if d.abs() > theta {
                *r += crate::cpu::delta::stored_delta(d);
            } else {
                zeros += 1;
            }
        }
    }
    zeros as f64 / ((rows - 1) * width) as f64
}

/// A Θ at which the delta rule over `keys` `[rows][width]` reaches
/// `target` delta sparsity: bisection finds the smallest such Θ, which sits
/// on some element's |k − k̂| (a last-bit difference in the keys would flip
/// it), so the middle of the range of Θ giving the same sparsity is
/// returned. Not a plain quantile of |k_t − k_{t−1}|: the reference lags
/// behind the keys, so the rule sees larger differences than consecutive
/// keys show.
pub fn calibrate_threshold(keys: &[f32], rows: usize, width: usize, target: f32) -> f32 {
    if rows < 2 || target <= 0.0 {
        return 0.0;
    }
    let largest = keys.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    // |k − k̂| ≤ 2 max|k|, so this Θ zeroes everything.
    let (mut low, mut high) = (0.0f32, 2.0 * largest + f32::MIN_POSITIVE);
    for _ in 0..40 {
        let mid = 0.5 * (low + high);
        if delta_sparsity_at(keys, rows, width, mid) >= target as f64 {
            high = mid;
        } else {
            low = mid;
        }
    }
    let reached = delta_sparsity_at(keys, rows, width, high);
    let (mut same, mut more) = (high, 2.0 * largest + f32::MIN_POSITIVE);
    for _ in 0..40 {
        let mid = 0.5 * (same + more);
        if delta_sparsity_at(keys, rows, width, mid) == reached {
            same = mid;
        } else {
            more = mid;
        }
    }
    0.5 * (high + same)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn window_follows_the_prompt() {
        let o = DeltaOptions { window_min: 4, window_scale: 0.05, ..Default::default() };
        assert_eq!(o.window(10), 4);
        assert_eq!(o.window(200), 10);
        assert_eq!(o.window(1000), 50);
    }

    #[test]
    fn bad_options_are_errors() {
        for o in [
            DeltaOptions { threshold: -0.1, ..Default::default() },
            DeltaOptions { threshold: f32::NAN, ..Default::default() },
            DeltaOptions { target_sparsity: Some(1.0), ..Default::default() },
            DeltaOptions { target_sparsity: Some(-0.2), ..Default::default() },
            DeltaOptions { window_scale: -1.0, ..Default::default() },
        ] {
            assert!(o.validate().is_err(), "{o:?}");
        }
        assert!(DeltaOptions::default().validate().is_ok());
    }

    /// Random-walk keys (a cheap LCG).
    pub(crate) fn walk(rows: usize, width: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let mut k: Vec<f32> = (0..width).map(|_| next()).collect();
        for t in 1..rows {
            for i in 0..width {
                let x = k[(t - 1) * width + i] + 0.2 * next();
                k.push(x);
            }
        }
        k
    }

    #[test]
    fn calibration_reaches_the_target() {
        let (rows, kv_heads, head_dim) = (50, 2, 8);
        let keys = walk(rows, kv_heads * head_dim, 3);
        for target in [0.3f32, 0.6, 0.9] {
            let theta = calibrate_threshold(&keys, rows, kv_heads * head_dim, target);
            let (deltas, _, _) = crate::cpu::delta::delta_keys(&keys, rows, kv_heads, head_dim, theta, None);
            let got = crate::cpu::delta::delta_stats(&deltas, rows, kv_heads, head_dim, 1, 0).delta_sparsity;
            // One element is 1/784 of the rows 1..: the bisection lands within a few.
            assert!(got >= target as f64 && got < target as f64 + 0.02, "target {target}: Θ {theta} gives {got}");
        }
    }
}
