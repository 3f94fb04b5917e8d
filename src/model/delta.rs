//! DeltaLLM in the model (DESIGN §2): the options a user sets, each layer's
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
use crate::ops::delta::{DeltaCache, DeltaKeys, HybridAttention};
use serde::Serialize;

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

/// DeltaLLM's knobs (DESIGN §2). The defaults are starting points to
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
    /// Θ the keys are built with now.
    pub theta: f32,
}

impl LayerDelta {
    /// Ops for up to `rows` tokens per step, reading the step's post-RoPE
    /// keys `k` and queries `q`, writing the attention output to `out`.
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
    ) -> Result<Self> {
        let cache = DeltaCache::new(gpu, label, kv.kv_heads, kv.head_dim, kv.max_seq)?;
        let keys = DeltaKeys::new(gpu, &cache, k, rows, options.threshold)?;
        let hybrid = HybridAttention::new(gpu, kv, &cache, q, out, rows, heads, options.window_min, options.sinks)?;
        Ok(LayerDelta { cache, keys, hybrid, theta: options.threshold })
    }

    /// The next step's rows and position, after making room for its delta
    /// rows (see [`DeltaCache::reserve`]).
    pub fn set_step(&mut self, gpu: &Gpu, rows: u32, pos0: u32) -> Result<()> {
        self.cache.reserve(gpu, rows, pos0)?;
        self.keys.set_step(gpu, &self.cache, rows, pos0)?;
        self.hybrid.set_step(gpu, &self.cache, rows, pos0)
    }

    pub fn set_theta(&mut self, gpu: &Gpu, theta: f32) -> Result<()> {
        self.keys.set_theta(gpu, theta)?;
        self.theta = theta;
        Ok(())
    }
}

/// The model's DeltaLLM state between steps.
pub(crate) struct DeltaState {
    pub options: DeltaOptions,
    /// Θ of each layer (all `options.threshold` unless calibrated).
    pub thresholds: Vec<f32>,
    /// Tokens of the prompt of the current sequence (0 before it starts).
    pub prompt_len: u32,
    /// The window fixed from the prompt.
    pub window: u32,
}

impl DeltaState {
    pub fn new(options: DeltaOptions, layers: usize) -> Self {
        let thresholds = vec![options.threshold; layers];
        let window = options.window_min;
        DeltaState { options, thresholds, prompt_len: 0, window }
    }

    /// Whether a step starting at `pos0` uses hybrid attention.
    pub fn hybrid_at(&self, pos0: u32) -> bool {
        self.options.stage == DeltaStage::Both || pos0 < self.prompt_len
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

/// Counts behind one sparsity figure; they add across heads, layers and phases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeltaCounts {
    /// Zero elements of the delta rows (rows 1..; row 0 is dense by definition).
    pub delta_zeros: u64,
    /// Elements of those delta rows.
    pub delta_elements: u64,
    /// MACs of QKᵀ actually done (per KV head; each of its query heads does the same).
    pub macs_done: u64,
    /// MACs of dense causal QKᵀ for the same queries.
    pub macs_dense: u64,
}

impl DeltaCounts {
    pub fn add(&mut self, other: &DeltaCounts) {
        self.delta_zeros += other.delta_zeros;
        self.delta_elements += other.delta_elements;
        self.macs_done += other.macs_done;
        self.macs_dense += other.macs_dense;
    }
}

/// DESIGN §2.4's figures for one head, layer or the model, in one phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sparsity {
    /// zeros(ΔK) / numel(ΔK).
    pub delta_sparsity: f64,
    /// 1 − MACs done / dense causal MACs.
    pub mac_sparsity: f64,
    /// The authors' figure: delta_sparsity · (1 − W / L), L the sequence length.
    pub authors_sparsity: f64,
    #[serde(flatten)]
    pub counts: DeltaCounts,
}

impl Sparsity {
    /// Figures from counts over a sequence of `length` positions with window `window`.
    pub fn new(counts: DeltaCounts, window: u32, length: u32) -> Self {
        let ratio = |part: u64, whole: u64| if whole == 0 { 0.0 } else { part as f64 / whole as f64 };
        let delta_sparsity = ratio(counts.delta_zeros, counts.delta_elements);
        let mac_sparsity = if counts.macs_dense == 0 { 0.0 } else { 1.0 - ratio(counts.macs_done, counts.macs_dense) };
        let authors_sparsity =
            if length == 0 { 0.0 } else { delta_sparsity * (1.0 - window.min(length) as f64 / length as f64) };
        Sparsity { delta_sparsity, mac_sparsity, authors_sparsity, counts }
    }
}

/// Prefill (the prompt's positions), decode (the later ones) and both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Phases {
    pub prefill: Sparsity,
    pub decode: Sparsity,
    pub total: Sparsity,
}

impl Phases {
    fn new(prefill: DeltaCounts, decode: DeltaCounts, window: u32, prompt_len: u32, length: u32) -> Self {
        let mut total = prefill;
        total.add(&decode);
        Phases {
            prefill: Sparsity::new(prefill, window, prompt_len),
            decode: Sparsity::new(decode, window, length),
            total: Sparsity::new(total, window, length),
        }
    }
}

/// K-cache bytes of a layer (or the model) for the positions held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KCacheBytes {
    /// A dense f16 K cache: positions · kv_heads · head_dim · 2.
    pub dense_f16: u64,
    /// Bytes the K side holds for these positions: per delta row its mask
    /// and start (4 · (head_dim/32 + 1)), the f16 values in use, the f32
    /// full keys kept (sinks and ring, or every position with full keys)
    /// and the f32 reference k̂.
    pub compressed_f16: u64,
    /// Bytes of every K-side buffer (full or ring keys, delta rows sized
    /// for the context, the values area as grown, reference, used counts).
    pub allocated: u64,
    /// Whether the full K cache is kept (dense attention may run: Θ = 0,
    /// DeltaLLM in prefill only, or asked for).
    pub full_keys: bool,
}

impl KCacheBytes {
    fn add(&mut self, other: &KCacheBytes) {
        self.dense_f16 += other.dense_f16;
        self.compressed_f16 += other.compressed_f16;
        self.allocated += other.allocated;
        self.full_keys |= other.full_keys;
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadStats {
    pub kv_head: usize,
    #[serde(flatten)]
    pub phases: Phases,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LayerStats {
    pub layer: usize,
    pub threshold: f32,
    #[serde(flatten)]
    pub phases: Phases,
    pub k_cache: KCacheBytes,
    pub heads: Vec<HeadStats>,
}

/// DeltaLLM statistics of the current sequence (DESIGN §2.4).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DeltaReport {
    pub window: u32,
    pub sinks: u32,
    pub stage: DeltaStage,
    pub prompt_tokens: u32,
    pub tokens: u32,
    #[serde(flatten)]
    pub phases: Phases,
    pub k_cache: KCacheBytes,
    pub layers: Vec<LayerStats>,
}

/// Counts of one KV head over positions `0..nnz.len()`, given the non-zeros
/// of each delta row: (prefill, decode), the prompt being `0..prompt_len`.
///
/// MACs per query i: `head_dim` per exact key (sinks ∪ window) plus the
/// non-zeros of delta rows `0..=i − W` when key `i − W` is approximated
/// (not a sink): the prefix its score q·k̂ needs, the same count as
/// [`crate::cpu::delta::delta_stats`]. Decode queries that attend densely
/// (`hybrid_decode` false) count the dense MACs.
pub fn head_counts(
    nnz: &[u32],
    head_dim: u32,
    window: u32,
    sinks: u32,
    prompt_len: u32,
    hybrid_decode: bool,
) -> (DeltaCounts, DeltaCounts) {
    let (head_dim, window, sinks) = (head_dim as u64, window as i64, sinks as i64);
    let mut prefix = Vec::with_capacity(nnz.len() + 1);
    prefix.push(0u64);
    for &n in nnz {
        prefix.push(prefix.last().unwrap() + n as u64);
    }
    let (mut prefill, mut decode) = (DeltaCounts::default(), DeltaCounts::default());
    for (i, &n) in nnz.iter().enumerate() {
        let in_prompt = (i as u64) < prompt_len as u64;
        let counts = if in_prompt { &mut prefill } else { &mut decode };
        if i > 0 {
            counts.delta_zeros += head_dim - n as u64;
            counts.delta_elements += head_dim;
        }
        let keys = i as i64 + 1;
        counts.macs_dense += keys as u64 * head_dim;
        if !in_prompt && !hybrid_decode {
            counts.macs_done += keys as u64 * head_dim;
            continue;
        }
        let in_sinks = sinks.min(keys);
        let in_window = window.min(keys);
        let in_both = (sinks.min(keys) - (keys - window).max(0)).max(0);
        counts.macs_done += (in_sinks + in_window - in_both) as u64 * head_dim;
        let last_approximated = i as i64 - window;
        if last_approximated >= sinks {
            counts.macs_done += prefix[last_approximated as usize + 1];
        }
    }
    (prefill, decode)
}

/// Non-zeros of each delta row, `[kv_heads][positions]`, from a
/// [`DeltaCache`]'s rows read back as `[kv_heads][max_seq][mask_words + 1]`.
pub(crate) fn row_nnz(rows: &[u32], kv_heads: usize, max_seq: usize, mask_words: usize, positions: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(kv_heads * positions);
    for g in 0..kv_heads {
        for t in 0..positions {
            let row = &rows[(g * max_seq + t) * (mask_words + 1)..][..mask_words];
            out.push(row.iter().map(|w| w.count_ones()).sum());
        }
    }
    out
}

/// One layer's statistics from its rows' non-zeros `[kv_heads][positions]`
/// and its K-cache bytes.
#[allow(clippy::too_many_arguments)]
pub(crate) fn layer_stats(
    layer: usize,
    threshold: f32,
    nnz: &[u32],
    kv_heads: usize,
    head_dim: u32,
    state: &DeltaState,
    positions: u32,
    k_cache: KCacheBytes,
) -> LayerStats {
    let (window, sinks, prompt_len) = (state.window, state.options.sinks, state.prompt_len.min(positions));
    let hybrid_decode = state.options.stage == DeltaStage::Both;
    let (mut prefill, mut decode) = (DeltaCounts::default(), DeltaCounts::default());
    let mut heads = Vec::with_capacity(kv_heads);
    for (g, rows) in nnz.chunks(positions.max(1) as usize).take(kv_heads).enumerate() {
        let (p, d) = head_counts(rows, head_dim, window, sinks, prompt_len, hybrid_decode);
        prefill.add(&p);
        decode.add(&d);
        heads.push(HeadStats { kv_head: g, phases: Phases::new(p, d, window, prompt_len, positions) });
    }
    LayerStats { layer, threshold, phases: Phases::new(prefill, decode, window, prompt_len, positions), k_cache, heads }
}

/// K-cache bytes of one layer holding `positions`, given the value words
/// its KV heads use together.
pub(crate) fn k_cache_bytes(kv: &KvCache, deltas: &DeltaCache, positions: u32, used_words: u64) -> KCacheBytes {
    let (kv_heads, head_dim, positions) = (kv.kv_heads as u64, kv.head_dim as u64, positions as u64);
    let full_key_rows = positions.min(kv.key_rows() as u64);
    KCacheBytes {
        dense_f16: positions * kv_heads * head_dim * 2,
        compressed_f16: positions * kv_heads * deltas.row_words() as u64 * 4
            + used_words * 4
            + full_key_rows * kv_heads * head_dim * 4
            + deltas.reference.size,
        allocated: kv.k.size + deltas.allocated_bytes(),
        full_keys: kv.full_keys(),
    }
}

/// The whole model's report from its layers' statistics.
pub(crate) fn report(state: &DeltaState, positions: u32, layers: Vec<LayerStats>) -> DeltaReport {
    let (mut prefill, mut decode, mut k_cache) =
        (DeltaCounts::default(), DeltaCounts::default(), KCacheBytes::default());
    for l in &layers {
        prefill.add(&l.phases.prefill.counts);
        decode.add(&l.phases.decode.counts);
        k_cache.add(&l.k_cache);
    }
    let prompt_len = state.prompt_len.min(positions);
    DeltaReport {
        window: state.window,
        sinks: state.options.sinks,
        stage: state.options.stage,
        prompt_tokens: prompt_len,
        tokens: positions,
        phases: Phases::new(prefill, decode, state.window, prompt_len, positions),
        k_cache,
        layers,
    }
}

impl DeltaReport {
    /// A compact table: one line per layer (total over its KV heads), then
    /// the model's prefill, decode and total.
    pub fn table(&self) -> String {
        let mut s = format!(
            "DeltaLLM: window {} (sinks {}), stage {:?}, {} prompt + {} decode positions\n",
            self.window,
            self.sinks,
            self.stage,
            self.prompt_tokens,
            self.tokens - self.prompt_tokens
        );
        s += "layer      Θ  delta%  MAC%  authors%  | prefill delta% MAC% | decode delta% MAC% | K bytes vs f16\n";
        let pct = |x: f64| 100.0 * x;
        for l in &self.layers {
            let p = &l.phases;
            s += &format!(
                "{:>5} {:>6.3}  {:>6.1} {:>5.1}  {:>8.1}  |        {:>6.1} {:>4.1} |       {:>6.1} {:>4.1} | {:>5.1}%\n",
                l.layer,
                l.threshold,
                pct(p.total.delta_sparsity),
                pct(p.total.mac_sparsity),
                pct(p.total.authors_sparsity),
                pct(p.prefill.delta_sparsity),
                pct(p.prefill.mac_sparsity),
                pct(p.decode.delta_sparsity),
                pct(p.decode.mac_sparsity),
                pct(l.k_cache.compressed_f16 as f64 / l.k_cache.dense_f16.max(1) as f64),
            );
        }
        let p = &self.phases;
        for (name, x) in [("prefill", &p.prefill), ("decode", &p.decode), ("total", &p.total)] {
            s += &format!(
                "{name:>7}: delta sparsity {:.1} %, MAC sparsity {:.1} % (authors' formula {:.1} %)\n",
                pct(x.delta_sparsity),
                pct(x.mac_sparsity),
                pct(x.authors_sparsity)
            );
        }
        let kept = if self.k_cache.full_keys {
            "full f32 keys kept beside the deltas (dense attention may run)"
        } else {
            "f16 delta rows, full keys for sinks and window ring only"
        };
        s += &format!(
            "K cache: {} bytes in use vs {} dense f16 ({:.1} %), {} allocated; {kept}\n",
            self.k_cache.compressed_f16,
            self.k_cache.dense_f16,
            pct(self.k_cache.compressed_f16 as f64 / self.k_cache.dense_f16.max(1) as f64),
            self.k_cache.allocated
        );
        s
    }
}

#[cfg(test)]
mod tests {
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
    fn walk(rows: usize, width: usize, seed: u64) -> Vec<f32> {
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

    #[test]
    fn counts_equal_the_cpu_statistics() {
        let (rows, kv_heads, head_dim) = (37, 3, 8);
        let keys = walk(rows, kv_heads * head_dim, 5);
        let (deltas, _, _) = crate::cpu::delta::delta_keys(&keys, rows, kv_heads, head_dim, 0.15, None);
        for (window, sinks) in [(1, 0), (4, 2), (0, 3), (40, 0), (5, 9)] {
            let expected = crate::cpu::delta::delta_stats(&deltas, rows, kv_heads, head_dim, window, sinks);
            let mut total = DeltaCounts::default();
            for g in 0..kv_heads {
                let nnz: Vec<u32> = (0..rows)
                    .map(|t| {
                        deltas[t * kv_heads * head_dim + g * head_dim..][..head_dim]
                            .iter()
                            .filter(|x| **x != 0.0)
                            .count() as u32
                    })
                    .collect();
                // Split anywhere: prefill + decode add up to the whole.
                let (p, d) = head_counts(&nnz, head_dim as u32, window as u32, sinks as u32, 20, true);
                total.add(&p);
                total.add(&d);
            }
            let got = Sparsity::new(total, window as u32, rows as u32);
            assert_eq!(got.delta_sparsity, expected.delta_sparsity, "W {window} S {sinks}");
            assert!((got.mac_sparsity - expected.mac_sparsity).abs() < 1e-12, "W {window} S {sinks}");
            assert!((got.authors_sparsity - expected.authors_sparsity).abs() < 1e-12, "W {window} S {sinks}");
        }
    }

    #[test]
    fn dense_decode_counts_every_mac() {
        let nnz = [4, 1, 0, 2, 1, 3];
        let (_, decode) = head_counts(&nnz, 4, 1, 0, 3, false);
        assert_eq!(decode.macs_done, decode.macs_dense);
        assert_eq!(decode.delta_elements, 12);
        assert_eq!(decode.delta_zeros, 12 - 6);
    }
}
