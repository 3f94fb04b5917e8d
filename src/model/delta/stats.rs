//! DeltaLLM's statistics as reported (docs/DESIGN.md §2.4): delta sparsity,
//! MAC sparsity (exact cells at d MACs, delta rows at their non-zeros) and
//! the authors' formula, per KV head, per layer, for prefill, decode and the
//! total, and the K-cache bytes; counted on the CPU from the delta masks
//! read back after generation.

use super::{DeltaOptions, DeltaStage, DeltaState};
use crate::ops::attention::KvCache;
use crate::ops::delta::DeltaCache;
use serde::Serialize;

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

/// docs/DESIGN.md §2.4's figures for one head, layer or the model, in one phase.
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

/// DeltaLLM statistics of the current sequence (docs/DESIGN.md §2.4).
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
    options: &DeltaOptions,
    state: &DeltaState,
    positions: u32,
    k_cache: KCacheBytes,
) -> LayerStats {
    let (window, sinks, prompt_len) = (state.window, options.sinks, state.prompt_len.min(positions));
    let hybrid_decode = options.stage == DeltaStage::Both;
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
pub(crate) fn report(
    options: &DeltaOptions,
    state: &DeltaState,
    positions: u32,
    layers: Vec<LayerStats>,
) -> DeltaReport {
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
        sinks: options.sinks,
        stage: options.stage,
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
    use crate::model::delta::tests::walk;

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
